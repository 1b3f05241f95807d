//! Repository locks: shared for writers that only add, exclusive for
//! operations that remove or rewrite.
//!
//! A lock is an encrypted object under `locks/`. A holder refreshes it (a new
//! object, then the old one deleted) every few minutes; a lock not refreshed
//! for [`STALE_AFTER`] or whose process is gone from this host is stale and
//! ignored, so a crashed process never blocks the repository for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::crypto::MasterKey;
use crate::envelope::{ObjectKind, open_msgpack, seal_msgpack};
use crate::error::{Error, Result};
use crate::id::Id;

/// A lock older than this without refresh is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// The payload of a `locks/<id>` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockRecord {
    /// When it was written or last refreshed.
    pub time: DateTime<Utc>,
    /// Exclusive (prune, repair, key removal) or shared (backup).
    pub exclusive: bool,
    /// Host of the holder.
    pub hostname: String,
    /// User of the holder.
    pub username: String,
    /// Process ID of the holder.
    pub pid: u32,
}

impl LockRecord {
    fn is_stale(&self) -> bool {
        let age = Utc::now().signed_duration_since(self.time);
        if age.to_std().map(|a| a > STALE_AFTER).unwrap_or(false) {
            return true;
        }
        self.hostname == crate::host::hostname()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    fn describe(&self) -> String {
        format!(
            "{} lock held by PID {} on {} (user {}) since {}",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.pid,
            self.hostname,
            self.username,
            self.time.to_rfc3339()
        )
    }
}

/// A held lock; released on drop.
pub struct LockGuard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    current: Arc<std::sync::Mutex<String>>,
    backend: Arc<dyn Backend>,
}

fn write_record(backend: &dyn Backend, key: &MasterKey, exclusive: bool) -> Result<String> {
    let rec = LockRecord {
        time: Utc::now(),
        exclusive,
        hostname: crate::host::hostname(),
        username: crate::host::username(),
        pid: std::process::id(),
    };
    let data = seal_msgpack(key, ObjectKind::Lock, &rec);
    let name = Id::of_object(&data).to_hex();
    backend.write(FileKind::Lock, &name, &data)?;
    Ok(name)
}

fn conflicts(
    backend: &dyn Backend,
    key: &MasterKey,
    exclusive: bool,
    own: Option<&str>,
) -> Result<Option<String>> {
    for l in backend.list(FileKind::Lock)? {
        if Some(l.name.as_str()) == own {
            continue;
        }
        let rec: LockRecord = match backend.read(FileKind::Lock, &l.name) {
            Ok(d) => match open_msgpack(key, ObjectKind::Lock, &d, "lock") {
                Ok(r) => r,
                Err(_) => continue, // damaged or foreign lock: never blocks
            },
            Err(Error::Missing(_)) => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        if rec.is_stale() {
            continue;
        }
        if exclusive || rec.exclusive {
            return Ok(Some(rec.describe()));
        }
    }
    Ok(None)
}

/// Takes a lock, failing with [`Error::Locked`] if a live conflicting one exists.
pub fn acquire(backend: Arc<dyn Backend>, key: &MasterKey, exclusive: bool) -> Result<LockGuard> {
    if let Some(who) = conflicts(&*backend, key, exclusive, None)? {
        return Err(Error::Locked(who));
    }
    let name = write_record(&*backend, key, exclusive)?;
    // Two processes may have passed the first check at once: look again now
    // that ours is visible, and back off if there is a conflict.
    if let Some(who) = conflicts(&*backend, key, exclusive, Some(&name))? {
        let _ = backend.delete(FileKind::Lock, &name);
        return Err(Error::Locked(who));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let current = Arc::new(std::sync::Mutex::new(name));
    let thread = {
        let (stop, current, backend, key) =
            (stop.clone(), current.clone(), backend.clone(), key.clone());
        std::thread::spawn(move || {
            let mut waited = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                waited += Duration::from_millis(200);
                if waited >= REFRESH_EVERY {
                    waited = Duration::ZERO;
                    if let Ok(new) = write_record(&*backend, &key, exclusive) {
                        let old = std::mem::replace(&mut *current.lock().expect("lock name"), new);
                        let _ = backend.delete(FileKind::Lock, &old);
                    }
                }
            }
        })
    };
    Ok(LockGuard {
        stop,
        thread: Some(thread),
        current,
        backend,
    })
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let name = self.current.lock().map(|n| n.clone()).unwrap_or_default();
        let _ = self.backend.delete(FileKind::Lock, &name);
    }
}
