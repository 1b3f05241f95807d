//! How the database file will be read, told to the kernel.
//!
//! A lookup reads a page or two at random places in a file of gigabytes
//! (2 GiB at 10 M blobs), and the kernel's read-ahead, meant for files read
//! in order, read more around them: a first backup into a 10 M-blob
//! repository read 110 MB more from disk than with the file marked random,
//! and took 0.14 s longer (medians of five, docs/benchmarks.md). The file is
//! marked random while open; a pass over whole tables (a merge, a filter
//! rebuild, emptying the tables) turns read-ahead back on while it runs:
//! without it, a merge into `blobs` at 10 M rows took 10.3 s instead of 2.8 s.

use std::fs::File;
use std::sync::Mutex;

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};

/// The access advice of the database's open file.
pub(super) struct Advice {
    /// A duplicate of the descriptor redb reads through: advice is kept
    /// by the open file, which both share. `None` in memory.
    file: Option<File>,
    /// Passes over whole tables running now.
    passes: Mutex<u32>,
}

impl Advice {
    /// Marks `file` (a duplicate of the database's descriptor) random.
    pub(super) fn random(file: File) -> Advice {
        let a = Advice {
            file: Some(file),
            passes: Mutex::new(0),
        };
        a.set(PosixFadviseAdvice::POSIX_FADV_RANDOM);
        a
    }

    /// No file to advise (a database in memory).
    pub(super) fn none() -> Advice {
        Advice {
            file: None,
            passes: Mutex::new(0),
        }
    }

    /// Read-ahead on until the returned guard is dropped, for a pass over
    /// whole tables. Passes may overlap; the last to end marks the file
    /// random again.
    pub(super) fn whole_tables(&self) -> WholeTables<'_> {
        let mut n = self.passes.lock().unwrap_or_else(|e| e.into_inner());
        if *n == 0 {
            self.set(PosixFadviseAdvice::POSIX_FADV_NORMAL);
        }
        *n += 1;
        WholeTables(self)
    }

    /// Advice is a hint: a file system that refuses it reads as before.
    fn set(&self, advice: PosixFadviseAdvice) {
        if let Some(f) = &self.file {
            let _ = posix_fadvise(f, 0, 0, advice);
        }
    }
}

/// A pass over whole tables; see [`Advice::whole_tables`].
pub(super) struct WholeTables<'a>(&'a Advice);

impl Drop for WholeTables<'_> {
    fn drop(&mut self) {
        let mut n = self.0.passes.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            self.0.set(PosixFadviseAdvice::POSIX_FADV_RANDOM);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    pub(in crate::localindex) const PAGE: u64 = 4096;

    /// A temporary directory on a disk: page-cache behaviour needs one.
    /// Where the temporary directory is in memory (tmpfs), the crate's own
    /// directory is on one.
    pub(in crate::localindex) fn on_disk() -> tempfile::TempDir {
        let in_memory = |p: &std::path::Path| {
            nix::sys::statfs::statfs(p)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        };
        if in_memory(&std::env::temp_dir()) {
            tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        }
    }

    /// Drops `file`'s pages from the page cache.
    pub(in crate::localindex) fn uncache(file: &File) {
        file.sync_all().unwrap();
        posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
    }

    /// Which of the first `pages` pages of `file` are in the page cache.
    pub(in crate::localindex) fn cached(file: &File, pages: u64) -> Vec<bool> {
        let mut resident = vec![0u8; pages as usize];
        // SAFETY: a read-only shared mapping of a file the test owns,
        // unmapped before return; mincore writes one byte per page.
        unsafe {
            use std::os::fd::AsRawFd;
            let len = (pages * PAGE) as usize;
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0);
            libc::munmap(map, len);
        }
        resident.iter().map(|b| b & 1 == 1).collect()
    }

    /// Reads pages `0..n` one at a time, as from a cold cache, and counts
    /// the pages of the file then cached.
    fn read_in_order(file: &File, n: u64, pages: u64) -> usize {
        uncache(file);
        assert!(
            cached(file, pages).iter().all(|c| !c),
            "the test file stays cached: it needs a temporary directory on a disk, not in \
             memory (tmpfs)"
        );
        let mut buf = vec![0u8; PAGE as usize];
        for p in 0..n {
            file.read_exact_at(&mut buf, p * PAGE).unwrap();
        }
        cached(file, pages).iter().filter(|c| **c).count()
    }

    /// Marked random, a file read page by page gets exactly those pages
    /// (no read-ahead); during a pass over whole tables it gets read-ahead,
    /// and after the last pass ends it is random again.
    #[test]
    fn a_random_file_is_read_without_read_ahead_but_during_passes() {
        let dir = on_disk();
        let pages = 1024;
        let path = dir.path().join("db");
        std::fs::write(&path, vec![7u8; (pages * PAGE) as usize]).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let advice = Advice::random(file.try_clone().unwrap());
        assert_eq!(read_in_order(&file, 8, pages), 8);
        {
            let _outer = advice.whole_tables();
            {
                let _inner = advice.whole_tables();
                assert!(read_in_order(&file, 8, pages) > 8);
            }
            assert!(read_in_order(&file, 8, pages) > 8, "a pass still runs");
        }
        assert_eq!(read_in_order(&file, 8, pages), 8);
        // What the kernel does without the advice: read-ahead.
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_NORMAL).unwrap();
        assert!(read_in_order(&file, 8, pages) > 8);
    }
}
