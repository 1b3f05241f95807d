//! Scratch files and directories that a killed process does not leave
//! behind for good.
//!
//! A SQLite capture's copy and the scratch restore of `verify-restore` and
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

/// A new temporary file in `dir` (removed when dropped), after removing the
/// files and directories of `prefix` that processes no longer running left.
pub fn file(dir: &Path, prefix: &str) -> io::Result<tempfile::NamedTempFile> {
    sweep(dir, prefix);
    tempfile::Builder::new()
        .prefix(&owned_prefix(prefix))
        .tempfile_in(dir)
}

/// A new private temporary directory in `dir` (removed with what it holds
/// when dropped), after removing those of `prefix` that processes no
/// longer running left.
pub fn dir(dir: &Path, prefix: &str) -> io::Result<tempfile::TempDir> {
    sweep(dir, prefix);
    tempfile::Builder::new()
        .prefix(&owned_prefix(prefix))
        .tempdir_in(dir)
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
        let path = e.path();
        let _ = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
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
        let new = file(d.path(), "cairn-x-").unwrap();
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
    }
}
