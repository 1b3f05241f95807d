//! The record of the existing directories a restore has taken over (see
//! [`super::entry::make_dir`]), kept while it runs. A restore gives them
//! back at its end, or when stopped by a signal it can catch; one killed
//! outright (`kill -9`, a crash) left them owned by root and closed to
//! their group, and the next restore took that for how they were. The next
//! restore into the same target gives back what the record names first.
//!
//! The record lives in the user's cache directory, never in the target: a
//! file there could come from a snapshot, or from whoever may write into
//! the target. It is named after the target's device and inode numbers,
//! holds each directory's too (a directory moved or swapped since is not
//! the one taken over), and is locked while its restore runs (a second
//! restore into the same target leaves the first one's directories alone).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use super::entry::TakenOver;

/// The first line's first words; then the target's name (hex) and birth
/// time: a record of another directory that had the target's numbers
/// (deleted since, its inode number given to the target) names nothing.
const HEADER: &str = "cairn-restore-takeover 2";

/// The line saying a restore made the target (see [`TakeoverLog::made_target`]).
const TARGET_MADE: &str = "target-made\n";

/// What a restore that could not keep a record says (once, on its target).
pub(super) const UNRECORDED: &str = "if this restore is killed, the directories it takes over stay \
     as it left them (root's, or closed to their group) until set by hand";

/// This restore's record (see the module documentation).
pub(super) struct TakeoverLog {
    path: PathBuf,
    target: PathBuf,
    /// Locked (`flock`) until the record goes.
    file: Mutex<File>,
    /// The record's first line.
    header: String,
    /// What an earlier restore left and this one could not give back.
    kept: Vec<(PathBuf, TakenOver)>,
    /// Whether a restore of a directory's contents made the target (see
    /// [`TakeoverLog::target_made`]).
    target_made: bool,
    /// The directories an earlier restore made and left with something in
    /// them, private, before their metadata (see [`TakeoverLog::made_before`]).
    made_before: Vec<(PathBuf, Made)>,
}

/// What [`TakeoverLog::start`] found.
pub(super) enum Start {
    /// The record, and what an earlier restore had left taken over: given
    /// back, or not (with why); and how many empty directories it had made
    /// were removed.
    Started(
        TakeoverLog,
        Vec<PathBuf>,
        Vec<(PathBuf, std::io::Error)>,
        usize,
    ),
    /// Another restore into this target is running; it keeps its record.
    Busy,
}

impl TakeoverLog {
    /// Takes the record for `target` in `dir` (`<cache>/restores`), first
    /// giving back what a restore killed before left taken over there.
    pub(super) fn start(dir: &Path, target: &Path) -> std::io::Result<Start> {
        trusted_dir(dir)?;
        let t = std::fs::symlink_metadata(target)?;
        let path = dir.join(format!("{:x}-{:x}", t.dev(), t.ino()));
        let file = loop {
            // Never through a symlink; the directory is the user's alone.
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)?;
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(Start::Busy),
                Err(e) => return Err(e.into()),
            }
            // The restore before may have removed it after this opened it.
            let now = std::fs::symlink_metadata(&path);
            let m = f.metadata()?;
            if now.is_ok_and(|n| (n.dev(), n.ino()) == (m.dev(), m.ino())) {
                break f;
            }
        };
        let euid = nix::unistd::geteuid().as_raw();
        let m = file.metadata()?;
        if !m.is_file() || m.uid() != euid || m.nlink() != 1 {
            return Err(std::io::Error::other(format!(
                "{} is not this user's own file",
                path.display()
            )));
        }
        let header = format!(
            "{HEADER} {} {}",
            hex::encode(target.as_os_str().as_bytes()),
            born_field(super::entry::born(&t))
        );
        let mut log = TakeoverLog {
            path,
            target: target.to_path_buf(),
            file: Mutex::new(file),
            header,
            kept: Vec::new(),
            target_made: false,
            made_before: Vec::new(),
        };
        let left = log.read()?;
        let (done, failed, removed) = give_back_all(target, (t.dev(), t.ino()), &left);
        // Kept in the record: this restore may be killed too.
        log.made_before = left
            .iter()
            .filter_map(|e| match e {
                Entry::Made(rel, made) => Some((rel.clone(), *made)),
                _ => None,
            })
            .filter(|(rel, made)| {
                std::fs::symlink_metadata(target.join(rel))
                    .is_ok_and(|m| super::entry::is_dir_known(&m, *made) && as_left(&m))
            })
            .collect();
        // Only while it is as a restore leaves what it makes: one its user
        // has changed since is theirs.
        log.target_made &= as_left(&t);
        // What could not be given back stays recorded, for the next run.
        log.kept = left
            .into_iter()
            .filter_map(|e| match e {
                Entry::Taken(rel, t) => Some((rel, t)),
                Entry::Made(..) | Entry::Making(..) => None,
            })
            .filter(|(rel, _)| failed.iter().any(|(p, _)| *p == target.join(rel)))
            .collect();
        log.rewrite(&[])?;
        Ok(Start::Started(log, done, failed, removed))
    }

    /// The entries of the record that are not settled (a `settled` line
    /// undoes the lines of its directory before it, a `made` line the
    /// `making` line of its name), in order, if it is this target's.
    fn read(&mut self) -> std::io::Result<Vec<Entry>> {
        let f = self.file.get_mut().expect("takeover log");
        let mut text = String::new();
        f.rewind()?;
        f.read_to_string(&mut text)?;
        let mut lines = text.lines();
        if !lines.next().is_some_and(|h| same_target(h, &self.header)) {
            // New, cut short before its first line, or another directory's.
            return Ok(Vec::new());
        }
        // A `settled` line undoes what came before it for its directory:
        // looked up by device and inode, as records run to many lines.
        let mut taken: Vec<Option<Entry>> = Vec::new();
        let mut at: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
        let mut making: HashMap<PathBuf, usize> = HashMap::new();
        for line in lines {
            let e = match parse_line(line) {
                Some(Line::TargetMade) => {
                    self.target_made = true;
                    continue;
                }
                Some(Line::Taken(rel, t)) => Entry::Taken(rel, t),
                Some(Line::Made(rel, id)) => {
                    if let Some(n) = making.remove(&rel) {
                        taken[n] = None;
                    }
                    Entry::Made(rel, id)
                }
                Some(Line::Making(rel, since)) => {
                    making.insert(rel.clone(), taken.len());
                    taken.push(Some(Entry::Making(rel, since)));
                    continue;
                }
                Some(Line::Settled(d, i)) => {
                    for n in at.remove(&(d, i)).unwrap_or_default() {
                        taken[n] = None;
                    }
                    continue;
                }
                None => continue,
            };
            if let Some(id) = e.id() {
                at.entry(id).or_default().push(taken.len());
            }
            taken.push(Some(e));
        }
        let taken: Vec<Entry> = taken.into_iter().flatten().collect();
        Ok(taken)
    }

    /// Starts the record afresh: its first line, what was kept, and `more`.
    fn rewrite(&mut self, more: &[(PathBuf, TakenOver)]) -> std::io::Result<()> {
        let mut text = format!("{}\n", self.header);
        if self.target_made {
            text.push_str(TARGET_MADE);
        }
        for (rel, made) in &self.made_before {
            text.push_str(&made_line(rel, *made));
        }
        for (rel, t) in self.kept.iter().chain(more) {
            text.push_str(&taken_line(rel, t));
        }
        let f = self.file.get_mut().expect("takeover log");
        f.set_len(0)?;
        f.rewind()?;
        f.write_all(text.as_bytes())
    }

    /// The device and inode numbers of the directories a restore killed
    /// before had made and not yet given their metadata (they are private
    /// and root's): the next restore finishes them as its own, also with
    /// `--overwrite never`, which leaves the user's directories as they are.
    pub(super) fn made_before(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.made_before.iter().map(|(_, (d, i, _))| (*d, *i))
    }

    /// Whether an earlier restore into this target, killed, had made it to
    /// restore a directory's contents into (see [`TakeoverLog::made_target`]).
    pub(super) fn target_made(&self) -> bool {
        self.target_made
    }

    /// Records that this restore made the target to restore a directory's
    /// contents into, so that the directory's metadata goes onto it at
    /// the end: a restore killed left the target private and root's, and
    /// the next one, finding it there, took it for a directory of the
    /// user's and left it so. Kept until a restore finishes.
    pub(super) fn made_target(&mut self) -> std::io::Result<()> {
        self.target_made = true;
        self.append(TARGET_MADE)
    }

    /// Records `path` as taken over from `t`, before it is: a line written
    /// in one call, which a process killed does not leave half-written. A
    /// path not below the target's name (one reached through a
    /// directory's descriptor) is not recorded.
    pub(super) fn record(&self, path: &Path, t: &TakenOver) -> std::io::Result<()> {
        let Ok(rel) = path.strip_prefix(&self.target) else {
            return Ok(());
        };
        self.append(&taken_line(rel, t))
    }

    /// Records that the directory `id` (device, inode) gets the snapshot's
    /// metadata, before it does: it is not to be given back then, even
    /// where that metadata is what the take-over left (root's, mode 0755),
    /// nor removed if this restore made it.
    pub(super) fn settle(&self, id: (u64, u64)) -> std::io::Result<()> {
        self.append(&format!("settled {} {}\n", id.0, id.1))
    }

    /// Records that this restore is about to make the directory `path`:
    /// one killed before its `made` line leaves a directory the record
    /// does not know by its numbers; the next restore removes it if it is
    /// there, empty, private and not older than this line.
    pub(super) fn making(&self, path: &Path) -> std::io::Result<()> {
        let Ok(rel) = path.strip_prefix(&self.target) else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.append(&format!(
            "making {} {}\n",
            hex::encode(rel.as_os_str().as_bytes()),
            born_field(Some((
                i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
                now.subsec_nanos()
            )))
        ))
    }

    /// Records that this restore made the directory `path` (`m`, right
    /// after): a restore killed leaves it private and perhaps empty, made
    /// on the way to entries not restored yet; the next one removes it if
    /// it is still so.
    pub(super) fn made(&self, path: &Path, m: &std::fs::Metadata) -> std::io::Result<()> {
        let Ok(rel) = path.strip_prefix(&self.target) else {
            return Ok(());
        };
        self.append(&made_line(rel, (m.dev(), m.ino(), super::entry::born(m))))
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        let mut f = self.file.lock().expect("takeover log");
        f.seek(std::io::SeekFrom::End(0))?;
        f.write_all(line.as_bytes())
    }

    /// Ends the record: removed, or, if some directories could not be
    /// given back (`left` by this restore, or kept from an earlier one),
    /// left naming those for the next restore.
    pub(super) fn finish(mut self, left: &[(PathBuf, TakenOver)]) -> std::io::Result<()> {
        // The target and the directories made before have their metadata
        // now, or are removed.
        self.target_made = false;
        self.made_before.clear();
        if left.is_empty() && self.kept.is_empty() {
            // Still locked: no other restore has it open as its own.
            return std::fs::remove_file(&self.path);
        }
        let rel: Vec<(PathBuf, TakenOver)> = left
            .iter()
            .filter_map(|(p, t)| Some((p.strip_prefix(&self.target).ok()?.to_path_buf(), *t)))
            .collect();
        self.rewrite(&rel)
    }
}

/// Makes sure `dir` (and its parent, the cache directory) is a directory
/// of this user's that no one else may write into, creating `dir` if it is
/// missing: whoever else could would decide what the record says.
fn trusted_dir(dir: &Path) -> std::io::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let m = std::fs::symlink_metadata(d)?;
        if !m.is_dir() || m.uid() != euid || m.mode() & 0o022 != 0 {
            return Err(std::io::Error::other(format!(
                "{} is not a directory of this user's that only it may write into",
                d.display()
            )));
        }
    }
    Ok(())
}

fn taken_line(rel: &Path, t: &TakenOver) -> String {
    let name = if rel.as_os_str().is_empty() {
        ".".to_string()
    } else {
        hex::encode(rel.as_os_str().as_bytes())
    };
    format!(
        "taken {name} {} {} {} {} {} {:o} {} {:o}\n",
        t.dev,
        t.ino,
        born_field(t.born),
        t.uid,
        t.gid,
        t.mode,
        t.left_uid,
        t.left_mode
    )
}

fn made_line(rel: &Path, (dev, ino, born): Made) -> String {
    format!(
        "made {} {dev} {ino} {}\n",
        hex::encode(rel.as_os_str().as_bytes()),
        born_field(born)
    )
}

fn born_field(b: Option<(i64, u32)>) -> String {
    b.map_or("-".into(), |(s, n)| format!("{s}.{n:09}"))
}

fn parse_born(f: &str) -> Option<Option<(i64, u32)>> {
    if f == "-" {
        return Some(None);
    }
    let (s, n) = f.split_once('.')?;
    Some(Some((s.parse().ok()?, n.parse().ok()?)))
}

enum Line {
    TargetMade,
    Taken(PathBuf, TakenOver),
    Made(PathBuf, Made),
    Making(PathBuf, (i64, u32)),
    Settled(u64, u64),
}

/// A directory a restore made.
type Made = super::entry::DirId;

/// What a restore killed left: a directory taken over, one it made, or
/// one it was making (since the time given).
enum Entry {
    Taken(PathBuf, TakenOver),
    Made(PathBuf, Made),
    Making(PathBuf, (i64, u32)),
}

impl Entry {
    /// The directory's device and inode numbers, where known.
    fn id(&self) -> Option<(u64, u64)> {
        match self {
            Entry::Taken(_, t) => Some((t.dev, t.ino)),
            Entry::Made(_, (d, i, _)) => Some((*d, *i)),
            Entry::Making(..) => None,
        }
    }
}

/// Whether the record's first line `found` is of the target whose first
/// line is `ours`: the same birth time, where the filesystem keeps one (a
/// target renamed since is the same directory), else the same name too.
fn same_target(found: &str, ours: &str) -> bool {
    let split = |l: &str| {
        l.rsplit_once(' ')
            .map(|(a, b)| (a.to_string(), b.to_string()))
    };
    let (Some((f_head, f_born)), Some((o_head, o_born))) = (split(found), split(ours)) else {
        return false;
    };
    let base = |h: &str| h.rsplit_once(' ').map(|(a, _)| a.to_string());
    f_born == o_born && base(&f_head) == base(&o_head) && (o_born != "-" || f_head == o_head)
}

/// A name below the target from the record: only plain components.
fn rel_path(name: &str) -> Option<PathBuf> {
    let rel = if name == "." {
        PathBuf::new()
    } else {
        PathBuf::from(std::ffi::OsStr::from_bytes(&hex::decode(name).ok()?))
    };
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(rel)
}

fn parse_line(line: &str) -> Option<Line> {
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        ["target-made"] => Some(Line::TargetMade),
        ["settled", dev, ino] => Some(Line::Settled(dev.parse().ok()?, ino.parse().ok()?)),
        ["making", name, since] => {
            let rel = rel_path(name).filter(|r| !r.as_os_str().is_empty())?;
            Some(Line::Making(rel, parse_born(since)??))
        }
        ["made", name, dev, ino, born] => {
            let rel = rel_path(name).filter(|r| !r.as_os_str().is_empty())?;
            Some(Line::Made(
                rel,
                (dev.parse().ok()?, ino.parse().ok()?, parse_born(born)?),
            ))
        }
        [
            "taken",
            name,
            dev,
            ino,
            born,
            uid,
            gid,
            mode,
            left_uid,
            left_mode,
        ] => {
            let rel = rel_path(name)?;
            let t = TakenOver {
                dev: dev.parse().ok()?,
                ino: ino.parse().ok()?,
                born: parse_born(born)?,
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                mode: u32::from_str_radix(mode, 8).ok()? & 0o7777,
                left_uid: left_uid.parse().ok()?,
                left_mode: u32::from_str_radix(left_mode, 8).ok()? & 0o7777,
            };
            Some(Line::Taken(rel, t))
        }
        _ => None,
    }
}

/// Gives back what `left` names below `target` (whose device and inode
/// numbers are `id`), and removes the empty directories it made, the
/// latest first; returns the directories given back, each that could not
/// be (with why), and how many were removed.
fn give_back_all(
    target: &Path,
    id: (u64, u64),
    left: &[Entry],
) -> (Vec<PathBuf>, Vec<(PathBuf, std::io::Error)>, usize) {
    use rustix::fs::{Mode, fstat, openat};
    let (mut done, mut failed, mut removed) = (Vec::new(), Vec::new(), 0);
    if left.is_empty() {
        return (done, failed, removed);
    }
    // Opened once: every name below is reached from this descriptor.
    let root = match openat(rustix::fs::CWD, target, dir_flags(), Mode::empty()) {
        Ok(fd) if fstat(&fd).is_ok_and(|s| (s.st_dev, s.st_ino) == id) => fd,
        Ok(_) => return (done, failed, removed), // another directory there now
        Err(e) => {
            failed.push((target.to_path_buf(), e.into()));
            return (done, failed, removed);
        }
    };
    for e in left.iter().rev() {
        match e {
            Entry::Taken(rel, t) => match give_back_one(&root, rel, t) {
                Ok(true) => done.push(target.join(rel)),
                Ok(false) => {}
                Err(e) => failed.push((target.join(rel), e)),
            },
            // Only what is still empty and as it was made goes: anything
            // else is left to the restore.
            Entry::Made(rel, made) => {
                if remove_made(&root, rel, |m| super::entry::is_dir_known(m, *made))
                    .is_ok_and(|r| r)
                {
                    removed += 1;
                }
            }
            Entry::Making(rel, since) => {
                if remove_made(&root, rel, |m| made_since(m, *since)).is_ok_and(|r| r) {
                    removed += 1;
                }
            }
        }
    }
    (done, failed, removed)
}

/// Whether `m` is as a restore leaves a directory it makes until its
/// metadata comes: private (mode 0700, with the setgid bit a setgid
/// parent gives it) and this user's.
fn as_left(m: &std::fs::Metadata) -> bool {
    m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o5777 == 0o700
}

/// Whether `m` was made at or after `since` (less a second: a filesystem
/// stamps times from a coarser clock): by its birth time, or where none is
/// kept, its change time, which is as late or later.
fn made_since(m: &std::fs::Metadata, since: (i64, u32)) -> bool {
    let at = super::entry::born(m).unwrap_or((m.ctime(), m.ctime_nsec() as u32));
    at >= (since.0 - 1, since.1)
}

/// Removes the directory `rel` below `root` if it is the one made (`is`
/// tells), still the user's, private (mode 0700) and empty.
fn remove_made(
    root: &OwnedFd,
    rel: &Path,
    is: impl Fn(&std::fs::Metadata) -> bool,
) -> std::io::Result<bool> {
    use rustix::fs::{AtFlags, unlinkat};
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(false);
    };
    let fd = open_below(root, parent)?;
    let m = File::from(open_below(&fd, Path::new(name))?).metadata()?;
    if !is(&m) || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o7777 != 0o700 {
        return Ok(false);
    }
    match unlinkat(fd.as_fd(), name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(true),
        // Not empty: what it holds was restored.
        Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Gives `rel` below `root` back as `t` says, if it is the directory taken
/// over and still as the restore left it. Reached component by component
/// without following a symlink: an entry may have been swapped for one
/// by its owner since, to point this at a directory elsewhere.
fn give_back_one(root: &OwnedFd, rel: &Path, t: &TakenOver) -> std::io::Result<bool> {
    match open_below(root, rel) {
        Ok(fd) => super::entry::give_back_open(&File::from(fd), t),
        // Removed, or something else at its name now (its owner's doing
        // since): not the directory taken over, nothing to give back.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The directory `rel` below `root`, reached component by component
/// without following a symlink (`root` itself for an empty `rel`).
fn open_below(root: &OwnedFd, rel: &Path) -> std::io::Result<OwnedFd> {
    let mut fd = root.try_clone()?;
    for c in rel.components() {
        fd = rustix::fs::openat(
            fd.as_fd(),
            c.as_os_str(),
            dir_flags(),
            rustix::fs::Mode::empty(),
        )?;
    }
    Ok(fd)
}

/// How the directories of a record are opened: as directories, never
/// through a symlink.
fn dir_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY
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

    fn start(dir: &Path, t: &Path) -> (TakeoverLog, Vec<PathBuf>, usize) {
        match TakeoverLog::start(dir, t).unwrap() {
            Start::Started(log, done, failed, _) => (log, done, failed.len()),
            Start::Busy => panic!("busy"),
        }
    }

    /// Takes `p` over as a restore into `t` does, and is killed: the
    /// record is left, nothing given back.
    fn take_over_and_die(dir: &Path, t: &Path, p: &Path) {
        let (log, _, _) = start(dir, t);
        let made = make_dir(p, &|| {}, &|x| log.record(p, x).unwrap()).unwrap();
        assert!(made.taken().is_some(), "not taken over");
        assert_eq!(mode_of(p), 0o755);
    }

    #[test]
    fn what_a_killed_restore_took_over_is_given_back_by_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache/restores");
        let t = tmp.path().join("t");
        fs::create_dir(&t).unwrap();
        let b = t.join("a").join("b\u{e9}");
        shared_dir(&b);
        take_over_and_die(&dir, &t, &b);
        let (log, done, failed) = start(&dir, &t);
        assert_eq!((done, failed), (vec![b.clone()], 0));
        let m = fs::symlink_metadata(&b).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o775);
        if super::super::is_root() {
            assert_eq!((m.uid(), m.gid()), (1234, 5678));
        }
        // While one restore runs, another leaves its record alone.
        assert!(matches!(TakeoverLog::start(&dir, &t).unwrap(), Start::Busy));
        log.finish(&[]).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "record left");

        // Changed since (here by hand): left as it is.
        take_over_and_die(&dir, &t, &b);
        fs::set_permissions(&b, fs::Permissions::from_mode(0o700)).unwrap();
        let (_, done, failed) = start(&dir, &t);
        assert_eq!((done.len(), failed), (0, 0));
        assert_eq!(mode_of(&b), 0o700);
    }

    #[test]
    fn a_directory_removed_replaced_or_regrouped_since_is_left_without_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("restores");
        let t = tmp.path().join("t");
        let (b, c, d) = (t.join("a/b"), t.join("c"), t.join("d"));
        for p in [&b, &c, &d] {
            shared_dir(p);
        }
        // One restore takes the three over and is killed.
        let (log, _, _) = start(&dir, &t);
        for p in [&b, &c, &d] {
            assert!(make_dir(p, &|| {}, &|x| log.record(p, x).unwrap()).is_ok());
        }
        drop(log);
        // Its owner removed `a` (and `b` in it), put a symlink at `c`.
        fs::remove_dir_all(t.join("a")).unwrap();
        fs::remove_dir(&c).unwrap();
        std::os::unix::fs::symlink(&d, &c).unwrap();
        // `d` given the group of another restore's snapshot since.
        let regrouped = super::super::is_root();
        if regrouped {
            std::os::unix::fs::lchown(&d, None, Some(0)).unwrap();
        }
        let (log, done, failed) = start(&dir, &t);
        assert_eq!(failed, 0, "an error for what is not there");
        if regrouped {
            assert!(done.is_empty(), "{done:?}");
            assert_eq!(fs::symlink_metadata(&d).unwrap().gid(), 0);
            assert_eq!(mode_of(&d), 0o755);
        }
        // Nothing of it is kept for the run after.
        log.finish(&[]).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "record left");
    }

    #[test]
    fn a_directory_settled_or_swapped_since_is_not_given_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("restores");
        let t = tmp.path().join("t");
        let b = t.join("b");
        shared_dir(&b);
        // Set from the snapshot (to what the take-over left, even).
        let (log, _, _) = start(&dir, &t);
        let made = make_dir(&b, &|| {}, &|x| log.record(&b, x).unwrap()).unwrap();
        let taken = made.taken().unwrap();
        log.settle((taken.dev, taken.ino)).unwrap();
        drop(log);
        let (log, done, _) = start(&dir, &t);
        assert!(done.is_empty(), "{done:?}");
        drop(log);

        // `b` moved away and another directory left as the take-over
        // leaves one put in its place.
        let c = t.join("c");
        shared_dir(&c);
        take_over_and_die(&dir, &t, &c);
        fs::rename(&c, t.join("c-was")).unwrap();
        fs::create_dir(&c).unwrap();
        fs::set_permissions(&c, fs::Permissions::from_mode(0o755)).unwrap();
        let (log, done, failed) = start(&dir, &t);
        assert_eq!((done.len(), failed), (0, 0));
        assert_eq!(mode_of(&c), 0o755);
        drop(log);

        // The same inode number, born again (a directory deleted, another
        // made that got its number): not the one taken over.
        let d = t.join("d");
        shared_dir(&d);
        let f = File::open(&d).unwrap();
        let made = make_dir(&d, &|| {}, &|_| ()).unwrap();
        let mut was = made.taken().unwrap();
        let (s, n) = was.born.expect("this filesystem keeps birth times");
        was.born = Some((s - 1, n));
        assert!(!super::super::entry::give_back_open(&f, &was).unwrap());
        assert_eq!(mode_of(&d), 0o755);
    }

    #[test]
    fn empty_directories_a_killed_restore_made_are_removed_by_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("restores");
        let t = tmp.path().join("t");
        fs::create_dir(&t).unwrap();
        let (log, _, _) = start(&dir, &t);
        let made = |rel: &str| {
            let p = t.join(rel);
            assert!(matches!(
                make_dir(&p, &|| {}, &|_| ()).unwrap(),
                super::super::entry::Made::Created
            ));
            log.made(&p, &fs::symlink_metadata(&p).unwrap()).unwrap();
            p
        };
        let (a, b, full, set) = (made("a"), made("a/b"), made("full"), made("set"));
        fs::write(full.join("f"), b"restored").unwrap();
        let m = fs::symlink_metadata(&set).unwrap();
        log.settle((m.dev(), m.ino())).unwrap();
        drop(log);
        match TakeoverLog::start(&dir, &t).unwrap() {
            Start::Started(_, _, _, removed) => assert_eq!(removed, 2),
            Start::Busy => panic!("busy"),
        }
        assert!(!a.exists() && !b.exists(), "empty ones left");
        assert!(full.join("f").exists(), "one with a file removed");
        assert!(set.exists(), "one given the snapshot's metadata removed");
    }

    #[test]
    fn a_directory_a_restore_was_killed_making_is_removed_if_empty_and_new() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("restores");
        let t = tmp.path().join("t");
        fs::create_dir(&t).unwrap();
        let (log, _, _) = start(&dir, &t);
        // Killed between the mkdir and its `made` line, for each of these.
        let making = |rel: &str| {
            let p = t.join(rel);
            make_dir(&p, &|| log.making(&p).unwrap(), &|_| ()).unwrap();
            p
        };
        let (a, b, full) = (making("a"), making("a/b"), making("full"));
        fs::write(full.join("f"), b"restored").unwrap();
        // Made, recorded and given the snapshot's metadata (its own mode
        // 0700, empty): the restore's, not to be removed.
        let set = making("set");
        let m = fs::symlink_metadata(&set).unwrap();
        log.made(&set, &m).unwrap();
        log.settle((m.dev(), m.ino())).unwrap();
        // A line for a name whose directory is older than the line (there
        // before, made by someone else): not the restore's.
        let old = t.join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o700)).unwrap();
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        log.append(&format!(
            "making {} {later}.000000000\n",
            hex::encode("old")
        ))
        .unwrap();
        // And a line for a name never made.
        log.making(&t.join("never")).unwrap();
        drop(log);
        match TakeoverLog::start(&dir, &t).unwrap() {
            Start::Started(log, done, failed, removed) => {
                assert_eq!((done.len(), failed.len(), removed), (0, 0, 2));
                log.finish(&[]).unwrap();
            }
            Start::Busy => panic!("busy"),
        }
        assert!(!a.exists() && !b.exists(), "empty ones left");
        assert!(full.join("f").exists(), "one with a file removed");
        assert!(set.exists(), "one given the snapshot's metadata removed");
        assert!(old.exists(), "one older than the line removed");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "record left");
    }

    #[test]
    fn a_record_of_another_directory_with_the_targets_numbers_names_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("restores");
        let t = tmp.path().join("t");
        let b = t.join("b");
        shared_dir(&b);
        take_over_and_die(&dir, &t, &b);
        // The record as it would be of a directory born at another time
        // (deleted since, its inode number given to the target).
        let rec = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let text = fs::read_to_string(&rec).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        let (head, _) = first.rsplit_once(' ').unwrap();
        fs::write(&rec, format!("{head} 1.000000000\n{rest}")).unwrap();
        let (_, done, failed) = start(&dir, &t);
        assert_eq!((done.len(), failed), (0, 0));
        assert_eq!(mode_of(&b), 0o755);
    }

    #[test]
    fn a_record_is_not_followed_through_a_symlink_nor_kept_where_others_may_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("restores");
        let t = tmp.path().join("t");
        let b = t.join("a").join("b");
        shared_dir(&b);
        take_over_and_die(&dir, &t, &b);
        // `a` swapped for a link to a directory whose `b` is as the
        // restore left the real one.
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(elsewhere.join("b")).unwrap();
        fs::set_permissions(elsewhere.join("b"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(t.join("a"), tmp.path().join("a-was")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, t.join("a")).unwrap();
        // Not followed, and no error: what is at the name now is not the
        // directory taken over (its owner's doing, as a move is).
        let (_, done, failed) = start(&dir, &t);
        assert_eq!((done.len(), failed), (0, 0));
        assert_eq!(mode_of(&elsewhere.join("b")), 0o755, "followed the link");

        // A record directory others may write into is refused.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(TakeoverLog::start(&dir, &t).is_err());
    }

    #[test]
    fn a_target_renamed_since_keeps_its_record_where_its_birth_time_tells() {
        let h = |name: &str, born: &str| format!("{HEADER} {} {born}", hex::encode(name));
        assert!(same_target(
            &h("/a", "5.000000001"),
            &h("/b", "5.000000001")
        ));
        assert!(!same_target(
            &h("/a", "5.000000001"),
            &h("/a", "6.000000001")
        ));
        assert!(same_target(&h("/a", "-"), &h("/a", "-")));
        assert!(!same_target(&h("/a", "-"), &h("/b", "-")));
        assert!(!same_target("cairn-restore-takeover 1 x", &h("/a", "-")));
    }

    #[test]
    fn lines_that_do_not_parse_or_leave_the_target_name_nothing() {
        let taken = |l: &str| match parse_line(l) {
            Some(Line::Taken(rel, t)) => Some((rel, t)),
            _ => None,
        };
        assert!(taken("taken 2e2e 1 2 - 0 0 755 0 755").is_none(), "..");
        assert!(
            taken("taken 2f657463 1 2 - 0 0 755 0 755").is_none(),
            "/etc"
        );
        assert!(taken("taken 61 1 2 - 0 0 755 0").is_none(), "cut short");
        assert!(taken("taken zz 1 2 - 0 0 755 0 755").is_none());
        assert!(taken("taken 61 1 2 x 0 0 755 0 755").is_none());
        let (rel, t) = taken("taken 612f62 7 8 5.000000009 1 2 2775 0 2755").unwrap();
        assert_eq!(rel, Path::new("a/b"));
        assert_eq!(
            (
                t.dev,
                t.ino,
                t.born,
                t.uid,
                t.gid,
                t.mode,
                t.left_uid,
                t.left_mode
            ),
            (7, 8, Some((5, 9)), 1, 2, 0o2775, 0, 0o2755)
        );
        let line = taken_line(&rel, &t);
        assert_eq!(taken(line.trim_end()).unwrap().1.born, Some((5, 9)));
        assert_eq!(
            taken("taken . 1 2 - 1 2 775 0 755").unwrap().0,
            PathBuf::new()
        );
        assert!(matches!(
            parse_line("settled 7 8"),
            Some(Line::Settled(7, 8))
        ));
    }
}
