//! Filesystems mounted or unmounted at or above a source.
//!
//! inotify sees neither: the watches of a filesystem unmounted go with it
//! without an event notify passes on, and a filesystem mounted over a
//! watched directory hides that directory's watches. A source on a disk
//! unmounted and mounted again (a USB disk, a network share that came back)
//! was not watched until the periodic rescan, an hour by default. The mount
//! table tells: `/proc/self/mountinfo` is pollable (POLLPRI on each change),
//! and the mount a path lies on has an ID of its own for each mount
//! (statx, Linux 5.8 on).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{AtFlags, CWD, StatxFlags, statx};

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
    /// Starts watching `paths`; `changed` is called, on the watch's own
    /// thread, with the paths whose mount changed since the start or the
    /// last call. `None` where the mount table cannot be watched (no
    /// /proc): changes then wait for the periodic rescan, as before.
    pub(super) fn start(
        paths: Vec<PathBuf>,
        changed: impl Fn(Vec<PathBuf>) + Send + 'static,
    ) -> Option<MountWatch> {
        let table = std::fs::File::open("/proc/self/mountinfo").ok()?;
        let stop = Arc::new(AtomicBool::new(false));
        let ending = stop.clone();
        let mut seen: Vec<Option<u64>> = paths.iter().map(|p| mount_of(p)).collect();
        let thread = std::thread::Builder::new()
            .name("cairn-watch-mounts".into())
            .spawn(move || {
                while !ending.load(Ordering::Relaxed) {
                    let mut fds = [PollFd::new(&table, PollFlags::PRI)];
                    let table_changed = match poll(&mut fds, Some(&STOP_CHECK)) {
                        Ok(_) => fds[0].revents().intersects(PollFlags::PRI | PollFlags::ERR),
                        Err(rustix::io::Errno::INTR) => false,
                        Err(_) => return,
                    };
                    if !table_changed {
                        continue;
                    }
                    let now: Vec<Option<u64>> = paths.iter().map(|p| mount_of(p)).collect();
                    let moved: Vec<PathBuf> = paths
                        .iter()
                        .zip(seen.iter().zip(&now))
                        .filter(|(_, (was, is))| was != is)
                        .map(|(p, _)| p.clone())
                        .collect();
                    seen = now;
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

/// The ID of the mount `p` lies on, or the nearest directory above it that
/// is there; `None` if none can be asked (a kernel before 5.8).
fn mount_of(p: &Path) -> Option<u64> {
    p.ancestors().find_map(|a| {
        let st = statx(CWD, a, AtFlags::NO_AUTOMOUNT, StatxFlags::MNT_ID).ok()?;
        (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id)
    })
}
