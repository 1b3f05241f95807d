//! Asking the kernel to read a directory's files before the workers reach
//! them.
//!
//! Without hints every file read on a cold disk waits for its own I/O: the
//! thread sleeps, the device interrupts, the thread wakes. On the 2-CPU
//! test machine that round trip cost as much CPU in the kernel as all of
//! zstd's compression (docs/benchmarks.md, "Reading ahead"). Hinting
//! (`posix_fadvise(WILLNEED)`) the next files of a directory in batches
//! keeps dozens of reads in flight, so the data is there when `read` asks.
//! Only files the backup will read are hinted: an unchanged file costs no
//! I/O.

use std::fs::File;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::fcntl::{OFlag, PosixFadviseAdvice};
use nix::sys::stat::Mode;

/// Files hinted ahead of the one being read, at most.
const WINDOW_FILES: usize = 64;
/// Bytes hinted ahead of the one being read, at most: bounds the page
/// cache a directory of big files claims before it is read.
const WINDOW_BYTES: u64 = 32 << 20;
/// Bytes hinted per file: a big file is read sequentially, and the kernel's
/// own read-ahead follows from there.
const FILE_BYTES: u64 = 4 << 20;

/// A file not hinted yet.
const NOT_HINTED: u8 = 0;
/// A file a thread is hinting now (its descriptor open).
const HINTING: u8 = 1;
/// A file hinted.
const HINTED: u8 = 2;

/// The files of one directory that will be read, in the order of its
/// entries, and which of them have been hinted.
pub(super) struct ReadAhead<'d> {
    dir: &'d File,
    /// Entry index, name and size of each file to read.
    files: Vec<(usize, Vec<u8>, u64)>,
    hinted: Vec<AtomicU8>,
}

impl<'d> ReadAhead<'d> {
    /// `wanted` gives, per entry of `dir`, the name and size of a file that
    /// will be read, or `None`. Hints the first window at once.
    pub(super) fn new(
        dir: &'d File,
        wanted: impl Iterator<Item = Option<(Vec<u8>, u64)>>,
    ) -> ReadAhead<'d> {
        let files: Vec<_> = wanted
            .enumerate()
            .filter_map(|(i, w)| w.map(|(name, size)| (i, name, size)))
            .filter(|(_, _, size)| *size > 0)
            .collect();
        let hinted = files.iter().map(|_| AtomicU8::new(NOT_HINTED)).collect();
        let r = ReadAhead { dir, files, hinted };
        // The first window goes out now, while the workers may still be
        // busy in subdirectories listed before the first file.
        if let Some(&(first, _, _)) = r.files.first() {
            r.reach(first);
        }
        r
    }

    /// Called before entry `entry` is processed: if it is a file to read
    /// and fewer than half a window of the files from it on are hinted,
    /// hints up to a window more. Entries are shared out among threads in
    /// runs (rayon splits ranges), so each thread keeps a window ahead of
    /// its own position; a flag per file keeps a file from being hinted
    /// twice. A directory entry hints nothing: its thread goes down into it
    /// and comes back much later.
    ///
    /// Returns once no other thread is hinting `entry`: a hint opens and
    /// closes the file, and closing any descriptor of a file drops every
    /// POSIX lock the process holds on it, so a SQLite capture starting
    /// meanwhile lost its locks.
    pub(super) fn reach(&self, entry: usize) {
        let Ok(start) = self.files.binary_search_by_key(&entry, |(i, _, _)| *i) else {
            return;
        };
        self.hint_from(start);
        while self.hinted[start].load(Ordering::Acquire) == HINTING {
            std::thread::yield_now();
        }
    }

    fn hint_from(&self, start: usize) {
        let end = (start + WINDOW_FILES).min(self.files.len());
        let ready = (start..end)
            .take_while(|&k| self.hinted[k].load(Ordering::Relaxed) != NOT_HINTED)
            .count();
        if ready >= WINDOW_FILES / 2 || start + ready == end {
            return;
        }
        let mut bytes = 0;
        for k in start + ready..end {
            if bytes >= WINDOW_BYTES {
                break;
            }
            let claimed = self.hinted[k].compare_exchange(
                NOT_HINTED,
                HINTING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            if claimed.is_err() {
                continue;
            }
            let (_, name, size) = &self.files[k];
            let len = (*size).min(FILE_BYTES);
            bytes += len;
            hint(self.dir, name, len);
            self.hinted[k].store(HINTED, Ordering::Release);
        }
    }
}

/// Asks the kernel to start reading the first `len` bytes of `name`.
/// Failures are ignored: the hint only saves time, and the read that
/// follows reports any real error. Hints do not move the access time.
fn hint(dir: &File, name: &[u8], len: u64) {
    // Non-blocking: never wait here for a lease holder.
    let flags = OFlag::O_RDONLY
        | OFlag::O_NONBLOCK
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    if let Ok(fd) = nix::fcntl::openat(dir, name, flags, Mode::empty()) {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let _ = nix::fcntl::posix_fadvise(&fd, 0, len, PosixFadviseAdvice::POSIX_FADV_WILLNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, usize)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, size) in files {
            std::fs::write(d.path().join(name), vec![7u8; *size]).unwrap();
        }
        d
    }

    fn hinted(r: &ReadAhead) -> Vec<bool> {
        r.hinted
            .iter()
            .map(|h| h.load(Ordering::Relaxed) == HINTED)
            .collect()
    }

    #[test]
    fn hints_a_window_ahead_in_batches_and_skips_entries_not_read() {
        let names: Vec<String> = (0..200).map(|i| format!("f{i:03}")).collect();
        let spec: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 10)).collect();
        let d = dir_with(&spec);
        let dirf = File::open(d.path()).unwrap();
        // Every third entry is not read (a directory, an unchanged file).
        let r = ReadAhead::new(
            &dirf,
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (i % 3 != 0).then(|| (n.as_bytes().to_vec(), 10))),
        );
        assert_eq!(r.files.len(), 133);
        // The first window went out on creation.
        let h = hinted(&r);
        assert_eq!(h.iter().filter(|&&b| b).count(), WINDOW_FILES);
        assert!(h[..WINDOW_FILES].iter().all(|&b| b));
        // Entries that are not read hint nothing, and neither does a file
        // with more than half a window hinted ahead of it.
        r.reach(0);
        r.reach(1);
        assert_eq!(hinted(&r).iter().filter(|&&b| b).count(), WINDOW_FILES);
        // Still more than half a window ahead: nothing new.
        r.reach(41);
        assert_eq!(hinted(&r).iter().filter(|&&b| b).count(), WINDOW_FILES);
        // Past half of it: the window is topped up from where hints stop.
        r.reach(61);
        let h = hinted(&r);
        let start = r.files.partition_point(|(i, _, _)| *i < 61);
        assert_eq!(h.iter().filter(|&&b| b).count(), start + WINDOW_FILES);
        assert!(h[..start + WINDOW_FILES].iter().all(|&b| b));
        // A second thread elsewhere in the directory keeps its own window.
        r.reach(181);
        let start = r.files.partition_point(|(i, _, _)| *i < 181);
        assert!(hinted(&r)[start..].iter().all(|&b| b));
    }

    #[test]
    fn bytes_ahead_are_bounded_and_empty_or_vanished_files_are_fine() {
        let d = dir_with(&[("empty", 0), ("small", 100)]);
        let dirf = File::open(d.path()).unwrap();
        // Big files that do not exist (vanished after stat): each counts
        // FILE_BYTES against the window, and the failed open is ignored.
        let mut wanted = vec![Some((b"empty".to_vec(), 0)), Some((b"small".to_vec(), 100))];
        wanted.extend((0..20).map(|i| Some((format!("big{i}").into_bytes(), 1 << 30))));
        let r = ReadAhead::new(&dirf, wanted.into_iter());
        // A length of 0 would mean "to the end": empty files are left out.
        assert_eq!(r.files.len(), 21);
        let per_window = (WINDOW_BYTES / FILE_BYTES) as usize;
        // The small file, then big ones until the byte budget is spent.
        let h = hinted(&r);
        assert_eq!(h.iter().filter(|&&b| b).count(), 1 + per_window);
        assert!(h[..1 + per_window].iter().all(|&b| b));
        assert_eq!(
            std::fs::read(d.path().join("small")).unwrap(),
            vec![7u8; 100]
        );
    }
}
