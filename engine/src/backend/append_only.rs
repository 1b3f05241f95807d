//! A backend guard for append-only sessions: every deletion except of lock
//! objects is refused, whatever layer above asks for it.
//!
//! The operations that delete check [`crate::Repository::ensure_may_delete`]
//! before they write anything, so they fail cleanly; this guard is the
//! backstop that keeps a forgotten check from deleting data.

use std::sync::Arc;

use super::{Backend, FileKind};
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
    crate::backend::forward_to_inner!(
        location,
        create,
        exists,
        list,
        read,
        read_range,
        write,
        is_remote,
        pin,
        evict,
        prefetch,
        stored_size
    );
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
    fn replace_config(&self, data: &[u8]) -> Result<()> {
        // Switching the mode is decided by `Repository::set_append_only`,
        // which refuses append-only keys before it gets here.
        self.inner.replace_config(data)
    }
}
