//! Reading the sources' metadata into the kernel's caches while the
//! repository is opened.
//!
//! A backup cannot start its walk before the repository is open: comparing
//! entries with the parent snapshot needs the key, and deriving it
//! (Argon2id) keeps the CPUs busy for 0.1-0.2 s while the disk waits. A
//! cold walk's cost is mostly the kernel reading directory blocks and
//! inodes (`getdents64`, `fstatat`), work that does not need the key: a
//! [`Warmup`] does it in that wait, on one thread at the lowest priority
//! (it mostly waits for the disk; a second thread measured no faster), and
//! stops when the repository is open, so it never competes with the backup.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

/// What the thread and its owner share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Directories listed so far.
    listed: AtomicUsize,
}

/// A background thread warming the caches with the metadata below some
/// paths; it stops when this is dropped (or when everything was read).
pub struct Warmup {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Warmup {
    /// Starts warming below `paths` (directories; other paths are skipped).
    /// Never crosses into another filesystem (a network mount may be slow,
    /// and may be excluded), never follows a symbolic link, and opens no
    /// directory it cannot open without moving its access time.
    pub fn start(paths: &[PathBuf]) -> Warmup {
        let dirs: Vec<(PathBuf, u64)> = paths
            .iter()
            .filter_map(|p| {
                let m = std::fs::symlink_metadata(p).ok()?;
                m.is_dir()
                    .then(|| (p.clone(), std::os::unix::fs::MetadataExt::dev(&m)))
            })
            .collect();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        // Only a small stack: the walk keeps its directories on the heap.
        // No thread at all without a directory (a stream or database backup).
        let thread = (!dirs.is_empty())
            .then(|| {
                std::thread::Builder::new()
                    .name("cairn-warmup".into())
                    .stack_size(64 << 10)
                    .spawn(move || warm(&s, dirs))
                    .ok()
            })
            .flatten();
        Warmup { shared, thread }
    }
}

impl Drop for Warmup {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads every directory below `dirs`, depth-first, until told to stop.
fn warm(s: &Shared, mut dirs: Vec<(PathBuf, u64)>) {
    // The lowest priority: Argon2id fills its lanes on every CPU, and on a
    // warm cache this thread's stats only take CPU from it (a warm unchanged
    // re-backup of the Linux tree: median 0.40 s against 0.47 s).
    #[cfg(target_os = "linux")]
    // SAFETY: changes only this thread's nice value (per thread on Linux).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
    }
    while let Some((path, dev)) = dirs.pop() {
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        read_dir(s, &path, dev, &mut dirs);
    }
}

/// Lists `path` and stats its entries, pushing its subdirectories on
/// device `dev` onto `dirs`. Errors only end this directory's warm-up: the
/// backup meets and reports them itself.
fn read_dir(s: &Shared, path: &Path, dev: u64, dirs: &mut Vec<(PathBuf, u64)>) {
    let flags = OFlag::O_RDONLY
        | OFlag::O_DIRECTORY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NOATIME;
    let Ok(dir) = nix::fcntl::open(path, flags, Mode::empty()).map(File::from) else {
        return;
    };
    let Ok(fd) = dir.try_clone() else { return };
    let Ok(mut listing) = nix::dir::Dir::from_fd(fd.into()) else {
        return;
    };
    s.listed.fetch_add(1, Ordering::Relaxed);
    // Entries are stat'ed as they are listed, in the filesystem's order:
    // what is read stays cached until the walk comes, whatever the order,
    // and no list of names is held.
    for entry in listing.iter() {
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(entry) = entry else { continue };
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let Ok(st) = nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let is_dir = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
        if is_dir && st.st_dev == dev {
            dirs.push((path.join(name), dev));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_everything_below_and_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            let d = dir.path().join(format!("d{i}/e/f"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("x"), b"x").unwrap();
        }
        let mut w = Warmup::start(&[dir.path().to_path_buf(), dir.path().join("d0/e/f/x")]);
        // The thread ends on its own once every directory was read.
        w.thread.take().unwrap().join().unwrap();
        // The top, 20 `dN`, their `e` and `f`: the file given is skipped.
        assert_eq!(w.shared.listed.load(Ordering::Relaxed), 61);
        // Dropped while working: returns promptly, whatever is left.
        drop(Warmup::start(&[dir.path().to_path_buf()]));
        // Nothing to read: no thread.
        assert!(
            Warmup::start(&[dir.path().join("d0/e/f/x")])
                .thread
                .is_none()
        );
    }
}
