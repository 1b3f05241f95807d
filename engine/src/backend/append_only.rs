//! A backend guard for append-only sessions: every deletion except of lock
//! objects, and of index files, snapshots and key files this session itself created, is
//! refused, whatever layer above asks for it; so is every write over an
//! existing object with other bytes.
//!
//! The operations that delete check [`crate::Repository::ensure_may_delete`]
//! before they write anything, so they fail cleanly; this guard is the
//! backstop that keeps a forgotten check from deleting data.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{Backend, FileKind};
use crate::error::{Error, Result};

/// Wraps a backend and refuses deletions of anything but locks, and
/// overwrites of anything but locks with different bytes.
pub struct AppendOnlyBackend {
    inner: Arc<dyn Backend>,
    why: String,
    /// Objects this session created. It may write them again (a store that
    /// kept one short gets it again from [`super::VerifiedWrites`]), and
    /// take back its index files, snapshots and key files: a backup that finds its
    /// lock lost right after writing one must be able to (a prune may have
    /// deleted the packs they name). Neither touches anything that was
    /// there before the session.
    created: Mutex<HashSet<(FileKind, String)>>,
}

impl AppendOnlyBackend {
    /// Guards `inner`; `why` says what makes the session append-only.
    pub fn new(inner: Arc<dyn Backend>, why: String) -> AppendOnlyBackend {
        AppendOnlyBackend {
            inner,
            why,
            created: Mutex::new(HashSet::new()),
        }
    }
}

impl AppendOnlyBackend {
    /// Does `write` unless the object is there already, and remembers an
    /// index file or snapshot it created (one this session may take back).
    ///
    /// Objects are named by their content (dictionaries by a random ID),
    /// so a name that exists holds these bytes or was damaged or forged:
    /// writing it again adds nothing, and writing other bytes over it would
    /// destroy what was there as surely as a delete.
    fn noting_new(
        &self,
        kind: FileKind,
        name: &str,
        same_as: &dyn Fn(&[u8]) -> Result<bool>,
        write: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        if matches!(kind, FileKind::Lock | FileKind::Config) {
            return write();
        }
        let key = (kind, name.to_string());
        let ours = self.created.lock().expect("created").contains(&key);
        if !ours && self.inner.exists(kind, name)? {
            let there = self.inner.read(kind, name)?;
            if same_as(&there)? {
                return Ok(());
            }
            return Err(Error::AppendOnly(format!(
                "{}: writing over {}/{name} (with other bytes) is not allowed",
                self.why,
                kind.dir()
            )));
        }
        write()?;
        self.created.lock().expect("created").insert(key);
        Ok(())
    }
}

/// Whether `file`'s first `len` bytes are `there`.
fn file_holds(file: &std::fs::File, len: u64, there: &[u8]) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    if there.len() as u64 != len {
        return Ok(false);
    }
    let mut buf = vec![0u8; there.len()];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| Error::io("read", "the spooled object to store", e))?;
    Ok(buf == there)
}

impl Backend for AppendOnlyBackend {
    crate::backend::forward_to_inner!(
        location,
        create,
        exists,
        list,
        read,
        read_range,
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
        self.noting_new(kind, name, &|there| Ok(there == data), &|| {
            self.inner.write(kind, name, data)
        })
    }
    fn write_file(&self, kind: FileKind, name: &str, file: &std::fs::File, len: u64) -> Result<()> {
        self.noting_new(kind, name, &|there| file_holds(file, len, there), &|| {
            self.inner.write_file(kind, name, file, len)
        })
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        // Locks are released after every command; refusing that would leave
        // every append-only session's lock behind.
        if kind == FileKind::Lock {
            return self.inner.delete(kind, name);
        }
        // A key file too: `key add` takes back its own when another run
        // added one for the same password meanwhile (refused, both keys
        // stayed and both runs said they failed).
        if matches!(kind, FileKind::Index | FileKind::Snapshot | FileKind::Key)
            && self
                .created
                .lock()
                .expect("created")
                .remove(&(kind, name.to_string()))
        {
            return self.inner.delete(kind, name);
        }
        Err(Error::AppendOnly(format!(
            "{}: deleting {}/{name} is not allowed",
            self.why,
            kind.dir()
        )))
    }
    fn stale_temporaries(&self, age: std::time::Duration, remove: bool) -> Result<usize> {
        if remove {
            return Err(Error::AppendOnly(format!(
                "{}: removing temporary files is not allowed",
                self.why
            )));
        }
        self.inner.stale_temporaries(age, false)
    }
    fn replace_config(&self, data: &[u8]) -> Result<()> {
        // Decided by `Repository::set_append_only` (which refuses to switch
        // the mode off with an append-only key) and `raise_format_version`
        // (which refuses in append-only mode) before it gets here.
        self.inner.replace_config(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    #[test]
    fn a_session_may_take_back_only_what_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalBackend::new(dir.path().join("repo")));
        local.create().unwrap();
        // A repository: directories missing in it are made.
        local.write(FileKind::Config, "config", b"c").unwrap();
        local.write(FileKind::Index, "before", b"old").unwrap();
        let b = AppendOnlyBackend::new(local.clone(), "append-only key".into());
        // Written again with the same name (the same content): still not ours.
        b.write(FileKind::Index, "before", b"old").unwrap();
        b.write(FileKind::Index, "mine", b"new").unwrap();
        b.write(FileKind::Pack, "pack", b"data").unwrap();
        for (kind, name) in [(FileKind::Index, "before"), (FileKind::Pack, "pack")] {
            let e = b.delete(kind, name).unwrap_err();
            assert!(matches!(e, Error::AppendOnly(_)), "{e}");
            assert!(local.exists(kind, name).unwrap());
        }
        b.delete(FileKind::Index, "mine").unwrap();
        assert!(!local.exists(FileKind::Index, "mine").unwrap());
        local.write(FileKind::Key, "theirs", b"k").unwrap();
        b.write(FileKind::Key, "added", b"k2").unwrap();
        assert!(matches!(
            b.delete(FileKind::Key, "theirs"),
            Err(Error::AppendOnly(_))
        ));
        b.delete(FileKind::Key, "added").unwrap();
        assert!(!local.exists(FileKind::Key, "added").unwrap());
        assert!(local.exists(FileKind::Key, "theirs").unwrap());
    }

    #[test]
    fn other_bytes_are_never_written_over_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalBackend::new(dir.path().join("repo")));
        local.create().unwrap();
        // A repository: directories missing in it are made.
        local.write(FileKind::Config, "config", b"c").unwrap();
        let b = AppendOnlyBackend::new(local.clone(), "append-only key".into());
        for kind in [
            FileKind::Pack,
            FileKind::Index,
            FileKind::Snapshot,
            FileKind::Key,
        ] {
            local.write(kind, "x", b"kept").unwrap();
            let e = b.write(kind, "x", b"other").unwrap_err();
            assert!(matches!(e, Error::AppendOnly(_)), "{e}");
            assert!(e.to_string().contains("writing over"), "{e}");
            let mut spool = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut spool, b"KEPT").unwrap();
            let e = b.write_file(kind, "x", &spool, 4).unwrap_err();
            assert!(matches!(e, Error::AppendOnly(_)), "{e}");
            assert_eq!(local.read(kind, "x").unwrap(), b"kept");
            // The same bytes again: nothing to refuse, nothing written.
            b.write(kind, "x", b"kept").unwrap();
            let mut same = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut same, b"kept").unwrap();
            b.write_file(kind, "x", &same, 4).unwrap();
            assert_eq!(local.read(kind, "x").unwrap(), b"kept");
        }
        // What this session wrote it may write again (a store kept it short).
        b.write(FileKind::Pack, "new", b"mine").unwrap();
        b.write(FileKind::Pack, "new", b"mine again").unwrap();
        assert_eq!(local.read(FileKind::Pack, "new").unwrap(), b"mine again");
        // Locks are rewritten by their owners.
        local.write(FileKind::Lock, "l", b"old").unwrap();
        b.write(FileKind::Lock, "l", b"new").unwrap();
        assert_eq!(local.read(FileKind::Lock, "l").unwrap(), b"new");
    }
}
