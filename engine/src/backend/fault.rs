//! A fault-injecting backend decorator, for tests only.
//!
//! Wraps another backend and, according to a small spec, makes the Nth
//! write (locks and audit records are not counted) fail, fail with ENOSPC from the Nth on, store a truncated object
//! while reporting success (a lying disk), stall, or flip a bit in what is
//! read. The spec is a comma-separated list:
//!
//! ```text
//! fail-write=N        the Nth write fails with EIO (nothing stored)
//! missing-write=N     the Nth write answers "not found" (nothing stored), as
//!                     S3 answers completing a multipart upload it dropped
//! enospc-write=N      every write from the Nth on fails with ENOSPC
//! truncate-write=N    the Nth write stores only the first half, and reports
//!                     success (given more than once: each of those writes)
//! truncate-from=N     every write from the Nth on does the same
//! stall-write=N:MS    the Nth write sleeps MS milliseconds first
//! stall-refresh=MS    every lock written after a command's first (the
//!                     refreshes) sleeps MS milliseconds first
//! flip-write=KIND     every write of objects of KIND stores one bit flipped,
//!                     and reports success (a lying disk that keeps the size)
//! flip-read=KIND      every read of objects of KIND (pack, index, snapshot, key, config) has one bit flipped
//! flip-read-once=KIND only the first read of an object of KIND has it (a
//!                     transient fault: memory, the wire)
//! slow-read=KIND:MS   every read of objects of KIND sleeps MS milliseconds first (a slow disk or link)
//! slow-read-mark=PATH the first of those reads creates the file PATH before it
//!                     sleeps, so that a test knows the command got that far
//! fail-audit=N        the Nth audit record written fails with EIO
//! stall-delete=N:MS   the Nth deletion (locks and audit records not
//!                     counted) sleeps MS milliseconds first
//! stall-mark=PATH     a stalled write or deletion creates the file PATH
//!                     before it sleeps, so that a test knows it is there
//! fail-delete=KIND    every deletion of an object of KIND fails with EIO (a
//!                     command stopped between its writes and its deletions)
//! hide-list=KIND      listings of KIND leave out every second object (a
//!                     store whose listing lags or lies)
//! vanish-read=KIND    every read of KIND answers "not found" while its size
//!                     is still reported (deleted between look-up and read)
//! fail-read-once=KIND the first read of an object of KIND fails with EIO (a
//!                     timeout, a 5xx); may be given for several kinds
//! lost-answer=KIND    every write of an object of KIND is stored, then
//!                     fails with EIO (an S3 answer lost on the way)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Backend, FileKind};
use crate::error::{Error, Result};

/// Environment variable the CLI reads to wrap its backend (tests only).
pub const FAULTS_ENV: &str = "CAIRN_TEST_FAULTS";

#[derive(Debug, Default, Clone)]
struct Spec {
    fail_write: Option<u64>,
    missing_write: Option<u64>,
    enospc_from: Option<u64>,
    truncate_write: Vec<u64>,
    truncate_from: Option<u64>,
    stall_write: Option<(u64, u64)>,
    stall_delete: Option<(u64, u64)>,
    flip_read: Option<FileKind>,
    flip_write: Option<FileKind>,
    flip_read_once: Option<FileKind>,
    slow_read: Option<(FileKind, u64)>,
    slow_read_mark: Option<std::path::PathBuf>,
    stall_mark: Option<std::path::PathBuf>,
    fail_audit: Option<u64>,
    fail_delete: Option<FileKind>,
    hide_list: Option<FileKind>,
    vanish_read: Option<FileKind>,
    fail_read_once: Vec<FileKind>,
    stall_refresh: Option<u64>,
    lost_answer: Option<FileKind>,
}

/// Injects faults into another backend.
pub struct FaultBackend {
    inner: Box<dyn Backend>,
    spec: Spec,
    writes: AtomicU64,
    deletes: AtomicU64,
    audit_writes: AtomicU64,
    lock_writes: AtomicU64,
    flipped_once: std::sync::atomic::AtomicBool,
    /// The kinds of `fail-read-once` whose first read failed.
    failed_once: std::sync::Mutex<Vec<FileKind>>,
}

fn kind_named(s: &str) -> Option<FileKind> {
    Some(match s {
        "pack" => FileKind::Pack,
        "index" => FileKind::Index,
        "snapshot" => FileKind::Snapshot,
        "key" => FileKind::Key,
        "config" => FileKind::Config,
        "lock" => FileKind::Lock,
        "dict" => FileKind::Dict,
        "audit" => FileKind::Audit,
        _ => return None,
    })
}

impl FaultBackend {
    /// Wraps `inner` with the faults described by `spec`.
    pub fn new(inner: Box<dyn Backend>, spec: &str) -> Result<FaultBackend> {
        let bad = |item: &str| Error::InvalidInput(format!("invalid fault spec item {item:?}"));
        let mut s = Spec::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| bad(item))?;
            let n = |v: &str| v.parse::<u64>().map_err(|_| bad(item));
            match k {
                "fail-write" => s.fail_write = Some(n(v)?),
                "missing-write" => s.missing_write = Some(n(v)?),
                "enospc-write" => s.enospc_from = Some(n(v)?),
                "truncate-write" => s.truncate_write.push(n(v)?),
                "truncate-from" => s.truncate_from = Some(n(v)?),
                "stall-write" => {
                    let (a, b) = v.split_once(':').ok_or_else(|| bad(item))?;
                    s.stall_write = Some((n(a)?, n(b)?));
                }
                "stall-delete" => {
                    let (a, b) = v.split_once(':').ok_or_else(|| bad(item))?;
                    s.stall_delete = Some((n(a)?, n(b)?));
                }
                "fail-audit" => s.fail_audit = Some(n(v)?),
                "stall-refresh" => s.stall_refresh = Some(n(v)?),
                "fail-delete" => s.fail_delete = Some(kind_named(v).ok_or_else(|| bad(item))?),
                "hide-list" => s.hide_list = Some(kind_named(v).ok_or_else(|| bad(item))?),
                "vanish-read" => s.vanish_read = Some(kind_named(v).ok_or_else(|| bad(item))?),
                "lost-answer" => s.lost_answer = Some(kind_named(v).ok_or_else(|| bad(item))?),
                "flip-write" => s.flip_write = Some(kind_named(v).ok_or_else(|| bad(item))?),
                "flip-read" => s.flip_read = Some(kind_named(v).ok_or_else(|| bad(item))?),
                "flip-read-once" => {
                    s.flip_read_once = Some(kind_named(v).ok_or_else(|| bad(item))?)
                }
                "fail-read-once" => s
                    .fail_read_once
                    .push(kind_named(v).ok_or_else(|| bad(item))?),
                "slow-read-mark" => s.slow_read_mark = Some(v.into()),
                "stall-mark" => s.stall_mark = Some(v.into()),
                "slow-read" => {
                    let (k, ms) = v.split_once(':').ok_or_else(|| bad(item))?;
                    s.slow_read = Some((kind_named(k).ok_or_else(|| bad(item))?, n(ms)?));
                }
                _ => return Err(bad(item)),
            }
        }
        Ok(FaultBackend {
            inner,
            spec: s,
            writes: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            audit_writes: AtomicU64::new(0),
            lock_writes: AtomicU64::new(0),
            flipped_once: std::sync::atomic::AtomicBool::new(false),
            failed_once: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Sleeps `ms` milliseconds, having created the stall mark if asked.
    fn stall(&self, ms: u64) {
        if let Some(mark) = &self.spec.stall_mark {
            let _ = std::fs::write(mark, b"");
        }
        std::thread::sleep(Duration::from_millis(ms));
    }

    fn before_read(&self, kind: FileKind, name: &str) -> Result<()> {
        if self.spec.vanish_read == Some(kind) {
            return Err(Error::Missing(format!("{} {name}", kind.dir())));
        }
        if self.spec.fail_read_once.contains(&kind) {
            let mut failed = self.failed_once.lock().expect("failed once");
            if !failed.contains(&kind) {
                failed.push(kind);
                return Err(Error::io(
                    "read",
                    name,
                    std::io::Error::other("injected I/O error"),
                ));
            }
        }
        if let Some((k, ms)) = self.spec.slow_read
            && k == kind
        {
            if let Some(mark) = &self.spec.slow_read_mark
                && !mark.exists()
            {
                let _ = std::fs::write(mark, b"");
            }
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(())
    }

    /// Counts a write that matters and stalls or fails it as the spec
    /// says; its number otherwise.
    fn counted_write(&self, name: &str) -> Result<u64> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, ms)) = self.spec.stall_write
            && n == at
        {
            self.stall(ms);
        }
        if self.spec.fail_write == Some(n) {
            return Err(Error::io(
                "write",
                name,
                std::io::Error::other("injected I/O error"),
            ));
        }
        if self.spec.missing_write == Some(n) {
            return Err(Error::Missing(format!(
                "{name} (injected: upload not found)"
            )));
        }
        if self.spec.enospc_from.is_some_and(|from| n >= from) {
            return Err(Error::io(
                "write",
                name,
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        Ok(n)
    }

    /// Whether the `n`th counted write keeps only half its bytes.
    fn truncates(&self, n: u64) -> bool {
        self.spec.truncate_write.contains(&n) || self.spec.truncate_from.is_some_and(|f| n >= f)
    }

    fn flip(&self, kind: FileKind, mut data: Vec<u8>) -> Vec<u8> {
        let once = self.spec.flip_read_once == Some(kind)
            && !data.is_empty()
            && !self.flipped_once.swap(true, Ordering::SeqCst);
        if once || self.spec.flip_read == Some(kind) && !data.is_empty() {
            let i = data.len() / 2;
            data[i] ^= 0x01;
        }
        data
    }
}

impl Backend for FaultBackend {
    crate::backend::forward_to_inner!(
        location,
        create,
        exists,
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
    fn list(&self, kind: FileKind) -> Result<Vec<crate::backend::Listed>> {
        let mut listed = self.inner.list(kind)?;
        if self.spec.hide_list == Some(kind) {
            let mut i = 0;
            listed.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        Ok(listed)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        // What a crash between a command's writes and its deletions leaves.
        if self.spec.fail_delete == Some(kind) {
            return Err(Error::io(
                "delete",
                name,
                std::io::Error::other("injected I/O error"),
            ));
        }
        if !matches!(kind, FileKind::Lock | FileKind::Audit) {
            let n = self.deletes.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some((at, ms)) = self.spec.stall_delete
                && at == n
            {
                self.stall(ms);
            }
        }
        self.inner.delete(kind, name)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.before_read(kind, name)?;
        Ok(self.flip(kind, self.inner.read(kind, name)?))
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.before_read(kind, name)?;
        Ok(self.flip(kind, self.inner.read_range(kind, name, offset, len)?))
    }
    /// A replaced config is a write like any other, truncated too: the
    /// rename is atomic, but a lying disk can still keep it short.
    fn replace_config(&self, data: &[u8]) -> Result<()> {
        let n = self.counted_write("config")?;
        if self.truncates(n) {
            return self.inner.replace_config(&data[..data.len() / 2]);
        }
        self.inner.replace_config(data)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        if self.spec.lost_answer == Some(kind) {
            self.inner.write(kind, name, data)?;
            return Err(Error::io(
                "write",
                name,
                std::io::Error::other("injected I/O error after the write"),
            ));
        }
        // Locks and audit records are bookkeeping, not data: count only the
        // writes that matter (so `fail-write=1` hits a backup's first pack).
        if kind == FileKind::Audit {
            let n = self.audit_writes.fetch_add(1, Ordering::SeqCst) + 1;
            if self.spec.fail_audit == Some(n) {
                return Err(Error::io(
                    "write",
                    name,
                    std::io::Error::other("injected I/O error"),
                ));
            }
        }
        if kind == FileKind::Lock
            && self.lock_writes.fetch_add(1, Ordering::SeqCst) > 0
            && let Some(ms) = self.spec.stall_refresh
        {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if matches!(kind, FileKind::Lock | FileKind::Audit) {
            return self.inner.write(kind, name, data);
        }
        let n = self.counted_write(name)?;
        if self.truncates(n) {
            return self.inner.write(kind, name, &data[..data.len() / 2]);
        }
        if self.spec.flip_write == Some(kind) && !data.is_empty() {
            let mut flipped = data.to_vec();
            flipped[data.len() / 2] ^= 0x01;
            return self.inner.write(kind, name, &flipped);
        }
        self.inner.write(kind, name, data)
    }
}
