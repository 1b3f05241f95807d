//! Checks every write against the size the store reports afterwards.
//!
//! A store that accepts a write but keeps fewer bytes (a disk or network
//! filesystem that loses the end of a file without an error, an
//! S3-compatible server that stores part of an upload) would otherwise go
//! unnoticed until the next `check`, by which time the data is gone from
//! memory and the source may have changed. Here it is caught while the data
//! is still at hand: written again once, and if the store still keeps the
//! wrong size the object is removed (where deleting is allowed) and the
//! write fails, so nothing ever names it.

use std::sync::Arc;

use super::{Backend, FileKind};
use crate::error::{Error, Result};

/// Wraps a store so that each write is followed by a size check.
pub struct VerifiedWrites {
    inner: Arc<dyn Backend>,
}

impl VerifiedWrites {
    /// Checks writes to `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> VerifiedWrites {
        VerifiedWrites { inner }
    }
}

impl Backend for VerifiedWrites {
    crate::backend::forward_to_inner!(
        location,
        create,
        exists,
        list,
        read,
        read_range,
        delete,
        stale_temporaries,
        is_remote,
        local_root,
        spool,
        pin,
        cached_copy,
        evict,
        retain_cached_packs,
        prefetch,
        stored_size
    );

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.checked(kind, name, data.len() as u64, &|| {
            self.inner.write(kind, name, data)
        })
    }

    fn write_file(&self, kind: FileKind, name: &str, file: &std::fs::File, len: u64) -> Result<()> {
        self.checked(kind, name, len, &|| {
            self.inner.write_file(kind, name, file, len)
        })
    }

    /// The config has no second copy: one kept short makes the repository
    /// unopenable. Written again once; if still wrong, the one it replaced
    /// is put back.
    fn replace_config(&self, data: &[u8]) -> Result<()> {
        let old = self.inner.read(FileKind::Config, "config")?;
        let kept = |want: usize| -> Result<Option<u64>> {
            let got = self.inner.stored_size(FileKind::Config, "config")?;
            Ok(got.filter(|&n| n != want as u64))
        };
        let mut wrong = None;
        for _ in 0..2 {
            self.inner.replace_config(data)?;
            wrong = kept(data.len())?;
            if wrong.is_none() {
                return Ok(());
            }
        }
        let restored = self.inner.replace_config(&old).is_ok() && kept(old.len())?.is_none();
        Err(Error::Backend(format!(
            "{}: the config was written with {} bytes but the store kept {}, twice; {}",
            self.inner.location(),
            data.len(),
            wrong.map_or_else(|| "nothing".to_string(), |n| format!("{n} bytes")),
            if restored {
                "the one before is back in place, unchanged (is the disk full or failing?)"
            } else {
                "putting the one before back failed too: the repository opens again once \
                 `config` is put back from a copy of its files (docs/recovery.md, section 7)"
            }
        )))
    }
}

impl VerifiedWrites {
    /// Does `write`, an object of `expected` bytes, and checks the size
    /// kept; again once if it is wrong.
    fn checked(
        &self,
        kind: FileKind,
        name: &str,
        expected: u64,
        write: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let mut got = None;
        for attempt in 0..2 {
            if attempt > 0 {
                // Objects are written once, so the bad copy goes before the
                // retry (where deleting is refused, append-only, the write
                // replaces it).
                let _ = self.inner.delete(kind, name);
            }
            write()?;
            got = self.inner.stored_size(kind, name)?;
            if got == Some(expected) {
                return Ok(());
            }
            // A lock gone right after its write was removed by another
            // process (`unlock --remove-all`, or a locker that judged it
            // stale): writing it again would bring back a lock its holder
            // must find lost, and let it commit.
            if got.is_none() && kind == FileKind::Lock {
                return Ok(());
            }
        }
        let _ = self.inner.delete(kind, name);
        Err(Error::Backend(format!(
            "{}: {}/{name} was written with {expected} bytes but the store kept {}, twice; \
             nothing refers to it (is the disk full or failing?)",
            self.inner.location(),
            kind.dir(),
            got.map_or_else(|| "nothing".to_string(), |n| format!("{n} bytes")),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{LocalBackend, WriteHook};

    /// A store where another process deletes each object of `kind` as soon
    /// as it is written.
    fn vanishing(kind: FileKind) -> (tempfile::TempDir, VerifiedWrites) {
        let dir = tempfile::tempdir().unwrap();
        let inner = LocalBackend::new(dir.path().join("repo"));
        inner.create().unwrap();
        let store = WriteHook {
            inner,
            write: move |inner: &LocalBackend, k: FileKind, name: &str, data: &[u8]| {
                inner.write(k, name, data)?;
                if k == kind {
                    inner.delete(k, name)?;
                }
                Ok(())
            },
        };
        (dir, VerifiedWrites::new(Arc::new(store)))
    }

    #[test]
    fn a_lock_removed_by_another_process_right_after_its_write_stays_removed() {
        let (_dir, b) = vanishing(FileKind::Lock);
        b.write(FileKind::Lock, "ab", b"lock").unwrap();
        assert!(
            !b.exists(FileKind::Lock, "ab").unwrap(),
            "lock brought back"
        );
    }

    #[test]
    fn other_objects_the_store_does_not_keep_fail_their_write() {
        let (_dir, b) = vanishing(FileKind::Index);
        let e = b.write(FileKind::Index, "ab", b"index").unwrap_err();
        assert!(e.to_string().contains("kept nothing, twice"), "{e}");
    }

    #[test]
    fn a_spooled_pack_the_store_does_not_keep_fails_its_write() {
        use std::io::Write;
        let (_dir, b) = vanishing(FileKind::Pack);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"a whole pack").unwrap();
        let e = b
            .write_file(FileKind::Pack, &"ab".repeat(32), &file, 12)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("written with 12 bytes but the store kept nothing, twice"),
            "{e}"
        );
    }
}
