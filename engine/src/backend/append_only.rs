//! A backend guard for append-only sessions: every deletion except of lock
//! objects, and of index files and snapshots this session itself created, is
//! refused, whatever layer above asks for it.
//!
//! The operations that delete check [`crate::Repository::ensure_may_delete`]
//! before they write anything, so they fail cleanly; this guard is the
//! backstop that keeps a forgotten check from deleting data.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{Backend, FileKind};
use crate::error::{Error, Result};

/// Wraps a backend and refuses deletions of anything but locks.
pub struct AppendOnlyBackend {
    inner: Arc<dyn Backend>,
    why: String,
    /// Index files and snapshots this session created: a backup that finds
    /// its lock lost right after writing one must be able to take it back
    /// (a prune may have deleted the packs it names). Deleting them removes
    /// nothing that was there before the session.
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
    /// Does `write` and remembers an index file or snapshot it created
    /// (one this session may take back).
    fn noting_new(&self, kind: FileKind, name: &str, write: &dyn Fn() -> Result<()>) -> Result<()> {
        let take_back = matches!(kind, FileKind::Index | FileKind::Snapshot);
        // Names are content hashes: an object that was already there is
        // not this session's to delete.
        let new = take_back && !self.inner.exists(kind, name)?;
        write()?;
        if new {
            let mut created = self.created.lock().expect("created");
            created.insert((kind, name.to_string()));
        }
        Ok(())
    }
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
        evict,
        retain_cached_packs,
        prefetch,
        stored_size
    );
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.noting_new(kind, name, &|| self.inner.write(kind, name, data))
    }
    fn write_file(&self, kind: FileKind, name: &str, file: &std::fs::File, len: u64) -> Result<()> {
        self.noting_new(kind, name, &|| self.inner.write_file(kind, name, file, len))
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        // Locks are released after every command; refusing that would leave
        // every append-only session's lock behind.
        if kind == FileKind::Lock {
            return self.inner.delete(kind, name);
        }
        if self
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
    }
}
