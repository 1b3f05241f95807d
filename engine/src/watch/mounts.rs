//! Filesystems mounted or unmounted at, above or below a source.
//!
//! inotify sees neither: the watches of a filesystem unmounted go with it
//! without an event notify passes on, and a filesystem mounted over a
//! watched directory hides that directory's watches. A source on a disk
//! unmounted and mounted again (a USB disk, a network share that came back)
//! was not watched until the periodic rescan, an hour by default; one
//! mounted below a source (which a backup crosses into, unless
//! `--one-file-system`) was neither watched nor snapshotted, and one
//! unmounted there stayed in the snapshots. The mount
//! table tells: `/proc/self/mountinfo` is pollable (POLLPRI on each change),
//! and each mount in it has an ID of its own.
//!
//! The table is read, not the sources asked: a path walked to a source
//! mounts an automounted share on the way (keeping it from ever expiring),
//! and hangs on a dead network mount. An automounted share that expires
//! (its mount point is autofs again) is no change: it is mounted again as
//! it was when next used, and that mount is one.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// The table watched.
const TABLE: &str = "/proc/self/mountinfo";

/// How often the thread looks whether it must end (it waits in poll).
const STOP_CHECK: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 250_000_000,
};

/// A thread watching which mount each of some paths lies on; ends when
/// dropped.
pub(super) struct MountWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MountWatch {
    /// Starts watching `paths` (absolute); `changed` is called, on the
    /// watch's own thread, with the paths whose mount changed since the
    /// start or the last call, or, with `below`, below which a filesystem
    /// was mounted or unmounted. `None` where the mount table cannot be
    /// watched (no /proc): changes then wait for the periodic rescan.
    pub(super) fn start(
        paths: Vec<PathBuf>,
        below: bool,
        changed: impl Fn(Vec<PathBuf>) + Send + 'static,
    ) -> Option<MountWatch> {
        // Opened before the table is read: a change after the read is
        // then a POLLPRI, never missed.
        let file = std::fs::File::open(TABLE).ok()?;
        // Mount points are spelled as the kernel resolves them.
        let paths: Vec<PathBuf> = paths
            .into_iter()
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .collect();
        let table = read_table()?;
        let mut seen = covering(&table, &paths);
        let mut seen_below = each_below(&table, &paths, below);
        let stop = Arc::new(AtomicBool::new(false));
        let ending = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-watch-mounts".into())
            .spawn(move || {
                while !ending.load(Ordering::Relaxed) {
                    let mut fds = [PollFd::new(&file, PollFlags::PRI)];
                    let table_changed = match poll(&mut fds, Some(&STOP_CHECK)) {
                        Ok(_) => fds[0].revents().intersects(PollFlags::PRI | PollFlags::ERR),
                        Err(rustix::io::Errno::INTR) => false,
                        Err(_) => return,
                    };
                    let Some(table) = table_changed.then(read_table).flatten() else {
                        continue;
                    };
                    let now = covering(&table, &paths);
                    let now_below = each_below(&table, &paths, below);
                    let mut moved = Vec::new();
                    for (i, (p, is)) in paths.iter().zip(now).enumerate() {
                        let was = &mut seen[i];
                        let mut change = match is {
                            // An automount expired: no change (see above).
                            Some(m) if m.autofs => false,
                            is if is.map(|m| m.id) != was.map(|m| m.id) => {
                                *was = is;
                                true
                            }
                            _ => false,
                        };
                        change |= changed_below(&seen_below[i], &now_below[i]);
                        if change {
                            moved.push(p.clone());
                        }
                    }
                    seen_below = now_below;
                    if !moved.is_empty() {
                        changed(moved);
                    }
                }
            })
            .ok()?;
        Some(MountWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for MountWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One mount of the table.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mount {
    id: u64,
    /// An automount point not mounted now.
    autofs: bool,
}

/// The mount points of the table, in its order (a later mount at the same
/// point is on top).
fn read_table() -> Option<Vec<(PathBuf, Mount)>> {
    let text = std::fs::read(TABLE).ok()?;
    Some(text.split(|b| *b == b'\n').filter_map(parse_line).collect())
}

/// `ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [FIELDS...] - TYPE ...`
fn parse_line(line: &[u8]) -> Option<(PathBuf, Mount)> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let id = std::str::from_utf8(fields.first()?).ok()?.parse().ok()?;
    let point = crate::fsmeta::unescape_mount_point(fields.get(4)?);
    let dash = fields.iter().position(|f| *f == b"-")?;
    let autofs = *fields.get(dash + 1)? == b"autofs";
    Some((
        PathBuf::from(OsStr::from_bytes(&point)),
        Mount { id, autofs },
    ))
}

/// For each of `paths`, the mount it lies on: the deepest mount point at
/// or above it, the last mounted there if several.
fn covering(table: &[(PathBuf, Mount)], paths: &[PathBuf]) -> Vec<Option<Mount>> {
    let mut top: HashMap<&Path, Mount> = HashMap::new();
    for (point, m) in table {
        top.insert(point, *m);
    }
    paths
        .iter()
        .map(|p| p.ancestors().find_map(|a| top.get(a).copied()))
        .collect()
}

/// [`mounted_below`] each of `paths`, or nothing if not `below`.
fn each_below(
    table: &[(PathBuf, Mount)],
    paths: &[PathBuf],
    below: bool,
) -> Vec<HashMap<PathBuf, Mount>> {
    paths
        .iter()
        .map(|p| {
            if below {
                mounted_below(table, p)
            } else {
                HashMap::new()
            }
        })
        .collect()
}

/// The mounts on top at each mount point strictly below `path`.
fn mounted_below(table: &[(PathBuf, Mount)], path: &Path) -> HashMap<PathBuf, Mount> {
    table
        .iter()
        .filter(|(point, _)| point != path && point.starts_with(path))
        .map(|(point, m)| (point.clone(), *m))
        .collect()
}

/// Whether a filesystem was mounted, replaced or unmounted between the
/// mounts below a path `was` and `now` ([`mounted_below`]). An automount
/// that expired (autofs on top again) is no change, as above a source.
fn changed_below(was: &HashMap<PathBuf, Mount>, now: &HashMap<PathBuf, Mount>) -> bool {
    let came = now
        .iter()
        .any(|(point, m)| !m.autofs && was.get(point).is_none_or(|w| w.id != m.id));
    let went = was
        .iter()
        .any(|(point, w)| !w.autofs && !now.contains_key(point));
    came || went
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_the_table_give_their_mount_point_and_type() {
        let (p, m) = parse_line(
            b"36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw",
        )
        .unwrap();
        assert_eq!(p, Path::new("/mnt/my disk"));
        assert_eq!(
            m,
            Mount {
                id: 36,
                autofs: false
            }
        );
        let (_, m) =
            parse_line(b"40 1 0:50 / /net rw,relatime shared:9 - autofs systemd-1 rw").unwrap();
        assert!(m.autofs);
        let table = vec![
            (
                PathBuf::from("/"),
                Mount {
                    id: 1,
                    autofs: false,
                },
            ),
            (
                PathBuf::from("/mnt"),
                Mount {
                    id: 2,
                    autofs: false,
                },
            ),
            (
                PathBuf::from("/mnt"),
                Mount {
                    id: 3,
                    autofs: false,
                },
            ),
        ];
        let got = covering(&table, &[PathBuf::from("/mnt/a/b"), PathBuf::from("/srv")]);
        assert_eq!(got[0].unwrap().id, 3);
        assert_eq!(got[1].unwrap().id, 1);
    }

    #[test]
    fn mounts_coming_and_going_below_a_path_are_changes_and_expiries_are_not() {
        let m = |id, autofs| Mount { id, autofs };
        let at = |point: &str, mount| (PathBuf::from(point), mount);
        let home = Path::new("/home");
        let before = vec![at("/", m(1, false)), at("/home/u/net", m(5, true))];
        let was = mounted_below(&before, home);
        assert_eq!(was.len(), 1);
        assert!(mounted_below(&before, Path::new("/home/u/net")).is_empty());
        // A USB disk mounted below: a change.
        let mut with_disk = before.clone();
        with_disk.push(at("/home/u/disk", m(7, false)));
        let now = mounted_below(&with_disk, home);
        assert!(changed_below(&was, &now));
        // Unmounted again: a change.
        assert!(changed_below(&now, &was));
        // The automount mounted on use: a change; expired again: none.
        let mut used = before.clone();
        used.push(at("/home/u/net", m(9, false)));
        let mounted = mounted_below(&used, home);
        assert!(changed_below(&was, &mounted));
        assert!(!changed_below(&mounted, &was));
        // Nothing moved: none.
        assert!(!changed_below(&was, &mounted_below(&before, home)));
        // Elsewhere: none.
        let mut elsewhere = before.clone();
        elsewhere.push(at("/srv/disk", m(8, false)));
        assert!(!changed_below(&was, &mounted_below(&elsewhere, home)));
    }
}
