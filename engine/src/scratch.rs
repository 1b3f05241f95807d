//! Scratch files and directories that a killed process does not leave
//! behind for good.
//!
//! A SQLite capture's copy (in a directory of its own) and the scratch restore of `verify-restore` and
//! `restore-db` are as big as what they hold, and `kill -9` (or the OOM
//! killer) skips the cleanup that removes them: a scheduled backup killed
//! now and then filled `$TMPDIR`. Each is named after the process that made
//! it (`<prefix><place>-<PID>-<random>`, where the place is a hash of the
//! kernel's boot ID and the PID namespace), and the next one made in the
//! same place with the same prefix first removes those whose process is
//! gone. A name from another machine, boot or PID namespace (a scratch
//! directory on NFS, a container sharing `/tmp`: the host's PID namespace
//! has the same number everywhere) is never judged, and where the place
//! cannot be told nothing is.

use std::io;
use std::path::Path;

/// A new private temporary directory in `dir` (removed with what it holds
/// when dropped), after removing those of `prefix` that processes no
/// longer running left.
pub fn dir(dir: &Path, prefix: &str) -> io::Result<Dir> {
    sweep(dir, prefix);
    use std::os::unix::fs::PermissionsExt;
    // Private from its creation (tempfile made it 0755): what is copied
    // or restored into it is nobody else's to read, and nobody else may
    // put a file in it (a SQLite copy's -wal, opened by name).
    let made = tempfile::Builder::new()
        .prefix(&owned_prefix(prefix))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)?;
    Ok(Dir(Some(made)))
}

/// A scratch directory, removed with what it holds when dropped, even
/// where what was restored into it made directories read-only (a restore
/// of a snapshot holding a 0555 directory could not be removed by a user
/// other than root, and each test left a full copy behind).
pub struct Dir(Option<tempfile::TempDir>);

impl Dir {
    /// Where it is.
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("not removed yet").path()
    }

    /// Removes it now, telling why if it cannot be (an immutable file).
    pub fn remove(mut self) -> io::Result<()> {
        match self.0.take() {
            Some(d) => remove_tree(&d.keep()),
            None => Ok(()),
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = remove_tree(&d.keep());
        }
    }
}

/// Removes `path` and what it holds; where that is refused, first gives
/// this user write and search rights on every directory below it.
fn remove_tree(path: &Path) -> io::Result<()> {
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    open_up(path);
    std::fs::remove_dir_all(path)
}

/// Gives the owner rwx on `dir` and every directory below it (symbolic
/// links are not followed); errors are left to the removal to report.
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&e.path());
        }
    }
}

/// Where this process's PIDs mean something: 16 hex digits of a hash of
/// the boot ID (random per boot of each machine) and the PID namespace;
/// `None` where either cannot be read.
fn place() -> Option<String> {
    let space = crate::host::ProcessSpace::current();
    if space.boot_id.is_empty() || space.pid_namespace.is_empty() {
        return None;
    }
    let mut h = blake3::Hasher::new();
    h.update(space.boot_id.as_bytes());
    h.update(b"\0");
    h.update(space.pid_namespace.as_bytes());
    Some(h.finalize().to_hex()[..16].to_string())
}

fn owned_prefix(prefix: &str) -> String {
    let place = place().unwrap_or_else(|| "unknown".into());
    format!("{prefix}{place}-{}-", std::process::id())
}

/// Removes what `prefix` names in `dir` that a process of this place (boot
/// and PID namespace), no longer running, made. Errors are ignored: what cannot be
/// removed (another user's, in a shared `/tmp`) stays, and the new scratch
/// file is made all the same.
fn sweep(dir: &Path, prefix: &str) {
    let Some(here) = place() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let mut parts = rest.splitn(3, '-');
        let (Some(made_at), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if made_at != here || pid == std::process::id() || crate::host::running(pid) {
            continue;
        }
        // Only this user's own, and never through a link: in a shared
        // /tmp anyone may make such a name, and swap what is below it for
        // a link while root opened it up to remove it (root then chmod-ed
        // where the link led, /etc say).
        use std::os::unix::fs::MetadataExt;
        let euid = nix::unistd::geteuid().as_raw();
        if !e
            .metadata()
            .is_ok_and(|m| m.uid() == euid && !m.is_symlink())
        {
            continue;
        }
        let path = e.path();
        let _ = match e.file_type() {
            Ok(t) if t.is_dir() => remove_tree(&path),
            _ => std::fs::remove_file(&path),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_gone_process_left_is_removed_and_the_rest_kept() {
        let d = tempfile::tempdir().unwrap();
        let here = place().expect("Linux tells its boot ID and PID namespace");
        // A PID no process has: the kernel hands out at most 2^22.
        let gone = format!("cairn-x-{here}-{}-abc", i32::MAX);
        let gone_journal = format!("{gone}-journal");
        let gone_dir = format!("cairn-x-{here}-{}-def", i32::MAX);
        let live = format!("cairn-x-{here}-1-ghi");
        // Another machine, boot or namespace: its PIDs are not ours.
        let other_ns = format!("cairn-x-0123456789abcdef-{}-jkl", i32::MAX);
        let other_prefix = format!("cairn-y-{here}-{}-mno", i32::MAX);
        let unnamed = "cairn-x-abcdef".to_string();
        for f in [
            &gone,
            &gone_journal,
            &live,
            &other_ns,
            &other_prefix,
            &unnamed,
        ] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(d.path().join(&gone_dir)).unwrap();
        std::fs::write(d.path().join(&gone_dir).join("inside"), b"x").unwrap();
        // Another user's, and a link: left alone (a link to a directory
        // made root chmod it 0700 while it opened the tree up).
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test makes another user's files: run it as root (tests/run-all.sh)"
        );
        let theirs = format!("cairn-x-{here}-{}-pqr", i32::MAX);
        std::fs::create_dir(d.path().join(&theirs)).unwrap();
        std::os::unix::fs::chown(d.path().join(&theirs), Some(65534), Some(65534)).unwrap();
        let victim = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(victim.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = format!("cairn-x-{here}-{}-stu", i32::MAX);
        std::os::unix::fs::symlink(victim.path(), d.path().join(&link)).unwrap();
        let new = dir(d.path(), "cairn-x-").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![
            live,
            other_ns,
            other_prefix,
            unnamed,
            theirs,
            link,
            new.path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert!(
            want.iter()
                .any(|n| n.starts_with(&owned_prefix("cairn-x-")))
        );
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(victim.path()).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        // And the new one is private.
        assert_eq!(new.path().metadata().unwrap().mode() & 0o7777, 0o700);
    }
}
