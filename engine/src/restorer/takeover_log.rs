//! The record, kept in the target while a restore runs, of the existing
//! directories it has taken over (see [`super::entry::make_dir`]). A
//! restore given back its directories at its end, or when stopped by a
//! signal it can catch; one killed outright (`kill -9`, a crash) left them
//! owned by root and closed to their group, and the next restore took that
//! for how they were. The next restore into the same target gives back
//! what this record names first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use super::entry::TakenOver;

/// The record's name in the target.
pub(super) const NAME: &str = ".cairn-restore-taken-over";

/// This restore's record (see the module documentation).
pub(super) struct TakeoverLog {
    target: PathBuf,
    file: Mutex<File>,
    /// The record's inode, so that only this record is removed at the end
    /// (a snapshot may hold a file of that name, restored over it).
    ino: u64,
}

impl TakeoverLog {
    /// Starts the record in `target` (already taken over, if it was, by
    /// this restore; its own entry `taken` is the first line).
    pub(super) fn start(target: &Path, taken: Option<&TakenOver>) -> std::io::Result<TakeoverLog> {
        let path = target.join(NAME);
        // One left by a restore that could not trust or read it is gone by now.
        let _ = std::fs::remove_file(&path);
        // Never through a symlink, never into a file someone else made.
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        let ino = file.metadata()?.ino();
        let log = TakeoverLog {
            target: target.to_path_buf(),
            file: Mutex::new(file),
            ino,
        };
        if let Some(t) = taken {
            log.record(target, t)?;
        }
        Ok(log)
    }

    /// Records `path` as taken over from `t`, before it is: a line written
    /// in one call, which a process killed does not leave half-written.
    /// A path outside the target's names (reached through a directory's
    /// descriptor) is not recorded.
    pub(super) fn record(&self, path: &Path, t: &TakenOver) -> std::io::Result<()> {
        let Ok(rel) = path.strip_prefix(&self.target) else {
            return Ok(());
        };
        let name = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            hex::encode(rel.as_os_str().as_bytes())
        };
        let line = format!(
            "{name} {} {} {:o} {} {:o}\n",
            t.uid, t.gid, t.mode, t.left_uid, t.left_mode
        );
        self.file
            .lock()
            .expect("takeover log")
            .write_all(line.as_bytes())
    }

    /// Removes the record: everything it names has been given back or set.
    pub(super) fn finish(&self) {
        let path = self.target.join(NAME);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Gives back what the record an earlier restore left in `target` names,
/// the deepest first; returns the directories given back, and each that
/// could not be, with why. A directory changed since it was taken over
/// (by its owner, or set from the snapshot) is left as it is. The record is
/// trusted only if nobody but the user restoring could have written it:
/// the target and the record are the user's, and no one else may write
/// into the target.
pub(super) fn give_back_left(target: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, std::io::Error)>) {
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    let Some(entries) = read_trusted(target) else {
        return (done, failed);
    };
    for (rel, t) in entries.into_iter().rev() {
        let path = target.join(&rel);
        match give_back_one(target, &rel, &t) {
            Ok(true) => done.push(path),
            Ok(false) => {}
            Err(e) => failed.push((path, e)),
        }
    }
    (done, failed)
}

/// The entries of the record in `target`, if there is one to trust.
fn read_trusted(target: &Path) -> Option<Vec<(PathBuf, TakenOver)>> {
    let euid = nix::unistd::geteuid().as_raw();
    let dir = std::fs::symlink_metadata(target).ok()?;
    let open_to_others = dir.mode() & 0o022 != 0 && dir.mode() & libc::S_ISVTX == 0;
    if !dir.is_dir() || dir.uid() != euid || open_to_others {
        return None;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(target.join(NAME))
        .ok()?;
    let m = f.metadata().ok()?;
    if !m.is_file() || m.uid() != euid || m.nlink() != 1 || m.len() > 64 << 20 {
        return None;
    }
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    // A line cut short cannot be: each was written whole. One that does
    // not parse names nothing to give back.
    Some(text.lines().filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<(PathBuf, TakenOver)> {
    let f: Vec<&str> = line.split(' ').collect();
    let [name, uid, gid, mode, left_uid, left_mode] = f.as_slice() else {
        return None;
    };
    let rel = if *name == "." {
        PathBuf::new()
    } else {
        PathBuf::from(std::ffi::OsStr::from_bytes(&hex::decode(name).ok()?))
    };
    // Only names below the target, down through plain components.
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let t = TakenOver {
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        mode: u32::from_str_radix(mode, 8).ok()? & 0o7777,
        left_uid: left_uid.parse().ok()?,
        left_mode: u32::from_str_radix(left_mode, 8).ok()? & 0o7777,
    };
    Some((rel, t))
}

/// Gives `target/rel` back as `t` says, if it is still as the restore left
/// it. Reached component by component without following a symlink: a
/// directory given back before may have had an entry swapped for one by
/// its owner since, to point this at a directory elsewhere.
fn give_back_one(target: &Path, rel: &Path, t: &TakenOver) -> std::io::Result<bool> {
    use rustix::fs::{Mode, OFlags, fchmod, fchown, fstat, openat};
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd: OwnedFd = openat(
        rustix::fs::CWD,
        target,
        flags | OFlags::RDONLY,
        Mode::empty(),
    )?;
    for c in rel.components() {
        fd = openat(
            fd.as_fd(),
            c.as_os_str(),
            flags | OFlags::RDONLY,
            Mode::empty(),
        )?;
    }
    let st = fstat(&fd)?;
    if st.st_uid != t.left_uid || st.st_mode & 0o7777 != t.left_mode {
        return Ok(false);
    }
    fchown(
        &fd,
        Some(rustix::fs::Uid::from_raw(t.uid)),
        Some(rustix::fs::Gid::from_raw(t.gid)),
    )?;
    // Mode after owner: a chown may clear set-ID bits.
    fchmod(&fd, Mode::from_raw_mode(t.mode))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restorer::entry::make_dir;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// A group-writable directory at `p`, someone else's when run as root.
    fn shared_dir(p: &Path) {
        fs::create_dir_all(p).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o775)).unwrap();
        if super::super::is_root() {
            std::os::unix::fs::lchown(p, Some(1234), Some(5678)).unwrap();
        }
    }

    /// Takes `p` over as a restore into `t` does, and is killed: the
    /// record is left, nothing given back.
    fn take_over_and_die(t: &Path, p: &Path) {
        let log = TakeoverLog::start(t, None).unwrap();
        let made = make_dir(p, &|x| log.record(p, x).unwrap()).unwrap();
        assert!(made.taken().is_some(), "not taken over");
        assert_eq!(mode_of(p), 0o755);
    }

    #[test]
    fn what_a_killed_restore_took_over_is_given_back_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::create_dir(&t).unwrap();
        let b = t.join("a").join("b\u{e9}");
        shared_dir(&b);
        take_over_and_die(&t, &b);
        let (done, failed) = give_back_left(&t);
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(done, vec![b.clone()]);
        let m = fs::symlink_metadata(&b).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o775);
        if super::super::is_root() {
            assert_eq!((m.uid(), m.gid()), (1234, 5678));
        }

        // Changed since (here by hand): left as it is.
        take_over_and_die(&t, &b);
        fs::set_permissions(&b, fs::Permissions::from_mode(0o700)).unwrap();
        let (done, failed) = give_back_left(&t);
        assert!(done.is_empty() && failed.is_empty(), "{done:?} {failed:?}");
        assert_eq!(mode_of(&b), 0o700);
    }

    #[test]
    fn a_record_is_not_followed_through_a_symlink_nor_trusted_from_others() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::create_dir(&t).unwrap();
        let b = t.join("a").join("b");
        shared_dir(&b);
        take_over_and_die(&t, &b);
        // `a` swapped for a link to a directory whose `b` is as the
        // restore left the real one.
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir_all(elsewhere.join("b")).unwrap();
        fs::set_permissions(elsewhere.join("b"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(t.join("a"), dir.path().join("a-was")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, t.join("a")).unwrap();
        let (done, failed) = give_back_left(&t);
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(mode_of(&elsewhere.join("b")), 0o755, "followed the link");

        // A target others may write into: its record could be anyone's.
        fs::remove_file(t.join("a")).unwrap();
        fs::rename(dir.path().join("a-was"), t.join("a")).unwrap();
        fs::set_permissions(&t, fs::Permissions::from_mode(0o777)).unwrap();
        let (done, failed) = give_back_left(&t);
        assert!(done.is_empty() && failed.is_empty(), "{done:?} {failed:?}");
        assert_eq!(mode_of(&b), 0o755);
    }

    #[test]
    fn lines_that_do_not_parse_or_leave_the_target_name_nothing() {
        assert!(parse_line("2e2e 0 0 755 0 755").is_none(), "..");
        assert!(parse_line("2f657463 0 0 755 0 755").is_none(), "/etc");
        assert!(parse_line("61 0 0 755 0").is_none(), "cut short");
        assert!(parse_line("zz 0 0 755 0 755").is_none());
        let (rel, t) = parse_line("612f62 1 2 2775 0 2755").unwrap();
        assert_eq!(rel, Path::new("a/b"));
        assert_eq!(
            (t.uid, t.gid, t.mode, t.left_uid, t.left_mode),
            (1, 2, 0o2775, 0, 0o2755)
        );
        assert_eq!(parse_line(". 1 2 775 0 755").unwrap().0, PathBuf::new());
    }
}
