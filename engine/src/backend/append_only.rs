//! A backend guard for append-only sessions: every deletion except of lock
//! objects is refused, whatever layer above asks for it.
//!
//! The operations that delete check [`crate::Repository::ensure_may_delete`]
//! before they write anything, so they fail cleanly; this guard is the
//! backstop that keeps a forgotten check from deleting data.

use std::sync::Arc;

use super::{Backend, FileKind, Listed};
use crate::error::{Error, Result};

/// Wraps a backend and refuses deletions of anything but locks.
pub struct AppendOnlyBackend {
    inner: Arc<dyn Backend>,
    why: String,
}

impl AppendOnlyBackend {
    /// Guards `inner`; `why` says what makes the session append-only.
    pub fn new(inner: Arc<dyn Backend>, why: String) -> AppendOnlyBackend {
        AppendOnlyBackend { inner, why }
    }
}

impl Backend for AppendOnlyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        self.inner.exists(kind, name)
    }
    fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        self.inner.list(kind)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, offset, len)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(kind, name, data)
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        // Locks are released after every command; refusing that would leave
        // every append-only session's lock behind.
        if kind == FileKind::Lock {
            return self.inner.delete(kind, name);
        }
        Err(Error::AppendOnly(format!(
            "{}: deleting {}/{name} is not allowed",
            self.why,
            kind.dir()
        )))
    }
    fn remove_stale_temporaries(&self, _age: std::time::Duration) -> Result<usize> {
        Err(Error::AppendOnly(format!(
            "{}: removing temporary files is not allowed",
            self.why
        )))
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn pin(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.pin(kind, name)
    }
    fn evict(&self, kind: FileKind, name: &str) -> bool {
        self.inner.evict(kind, name)
    }
    fn prefetch(&self, kind: FileKind, name: &str) {
        self.inner.prefetch(kind, name)
    }
    fn replace_config(&self, data: &[u8]) -> Result<()> {
        // Switching the mode is decided by `Repository::set_append_only`,
        // which refuses append-only keys before it gets here.
        self.inner.replace_config(data)
    }
}
