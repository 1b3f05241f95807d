//! One open file of the local index, and what finding damage in it does.
//!
//! Damage removes the file, so that the next command rebuilds it from the
//! repository. A long-running process (watch, serve, mount) is that next
//! command itself: it opens the file at the same path again on its next call
//! ([`super::LocalIndex`] swaps handles) instead of failing on the damaged
//! one until restarted. Only the file that was opened is removed: another
//! process that met the same damage later removed the file the first had
//! rebuilt meanwhile, every time.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::Database;

use super::advice::Advice;
use super::{DAMAGED_OBJECT, FilterCache, without_panicking};
use crate::error::{Error, Result};

/// An open database, with what this process keeps beside it.
pub(super) struct Handle {
    pub(super) db: Database,
    /// Read-ahead off but for passes over whole tables.
    pub(super) advice: Advice,
    /// This file's filter in memory (another file's would rule out its rows).
    pub(super) filter: FilterCache,
    /// Where it was opened (`None`: in memory).
    pub(super) path: Option<Arc<Path>>,
    /// Device and inode of the file opened.
    file: Option<(u64, u64)>,
    /// Damage was found in it: the next call opens `path` again.
    condemned: AtomicBool,
    /// Which of the index's handles this is, the first 0: clear counts
    /// read from one file mean nothing in another.
    pub(super) incarnation: u64,
    /// [`super::LocalIndex::warm`] was called for it.
    pub(super) warmed: AtomicBool,
}

impl Handle {
    /// A handle on `db`, opened from the file with device and inode
    /// `file` at `path` (both `None` in memory).
    pub(super) fn new(
        db: Database,
        advice: Advice,
        path: Option<Arc<Path>>,
        file: Option<(u64, u64)>,
        incarnation: u64,
    ) -> Handle {
        Handle {
            db,
            advice,
            filter: FilterCache::default(),
            path,
            file,
            condemned: AtomicBool::new(false),
            incarnation,
            warmed: AtomicBool::new(false),
        }
    }

    /// Whether damage was found in it.
    pub(super) fn condemned(&self) -> bool {
        self.condemned.load(Ordering::SeqCst)
    }

    /// Marks it damaged, and removes its file if `path` still names that
    /// file (not one another process rebuilt since).
    pub(super) fn condemn(&self) {
        self.condemned.store(true, Ordering::SeqCst);
        if let Some(p) = self.path.as_deref()
            && let (Some((dev, ino)), Ok(m)) = (self.file, std::fs::metadata(p))
            && (m.dev(), m.ino()) == (dev, ino)
        {
            let _ = std::fs::remove_file(p);
        }
    }

    /// A clear count read from this file, as callers compare it: with the
    /// incarnation above it, so a count from a file replaced since never
    /// matches.
    pub(super) fn clear_token(&self, clears: u64) -> u64 {
        (self.incarnation << 40) | clears
    }
}

/// Runs `f` on the database of `h`. redb trusts its pages and panics on
/// some damage to them (a zeroed page made every backup and restore end in
/// a panic, exit 101, for good): such a panic condemns the handle (its
/// file is removed, and the next call opens a new one), and is reported as
/// an error that says so.
pub(super) fn shielded<T>(h: &Handle, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match without_panicking(f) {
        // Damage found without a panic (a row naming a pack number there
        // is not, a meta value that is not a number; redb's own
        // "corrupted"): the same, or every command failed on it for good.
        Some(Err(Error::Corrupt { object, reason }))
            if object == DAMAGED_OBJECT
                && let Some(p) = h.path.as_deref() =>
        {
            h.condemn();
            Err(Error::corrupt(
                format!("local cache {}", p.display()),
                format!(
                    "{reason}: it was removed, and the next command rebuilds it from the \
                     repository (nothing in the repository is affected): run this one again"
                ),
            ))
        }
        Some(r) => r,
        None => {
            h.condemn();
            let object = match h.path.as_deref() {
                Some(p) => format!("local cache {}", p.display()),
                None => "local index in memory".into(),
            };
            Err(Error::corrupt(
                object,
                "the database library failed on it; it was removed, and the next command \
                 rebuilds it from the repository (nothing in the repository is affected): \
                 run this one again",
            ))
        }
    }
}
