//! Repository locks: shared for writers that only add, exclusive for
//! operations that remove or rewrite.
//!
//! A lock is an encrypted object under `locks/`. Its holder refreshes it (a
//! new object, then the old one deleted) every [`stale_after`]/6; a lock not
//! refreshed for [`stale_after`], or whose process is gone from this host, is
//! stale and ignored, so a crashed process never blocks the repository.
//!
//! A stalled process must not outlive its lock silently: an exclusive
//! locker deletes the stale locks it overrides, and a holder checks with
//! [`LockGuard::check`] before it commits anything that relies on the lock
//! (a backup, before writing its snapshot). If its lock was deleted, or it
//! went without refresh for long enough that another process could have
//! judged it stale, the check fails and nothing is committed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::crypto::MasterKey;
use crate::envelope::{ObjectKind, open_msgpack, seal_msgpack};
use crate::error::{Error, Result};
use crate::id::Id;

/// Environment variable overriding [`stale_after`] in seconds (for tests).
pub const STALE_ENV: &str = "CAIRN_TEST_LOCK_STALE_SECS";

/// How long a lock stays valid without refresh (30 minutes unless
/// overridden by [`STALE_ENV`]).
pub fn stale_after() -> Duration {
    std::env::var(STALE_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30 * 60))
}

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
        if age.to_std().map(|a| a > stale_after()).unwrap_or(false) {
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

struct State {
    current: Mutex<String>,
    last_refresh: Mutex<Instant>,
    lost: AtomicBool,
    stop: AtomicBool,
}

/// A held lock; released on drop.
pub struct LockGuard {
    state: Arc<State>,
    thread: Option<std::thread::JoinHandle<()>>,
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

/// Lists other locks: the first live one that conflicts, and the stale ones.
fn survey(
    backend: &dyn Backend,
    key: &MasterKey,
    exclusive: bool,
    own: Option<&str>,
) -> Result<(Option<String>, Vec<String>)> {
    // A lock that vanishes between listing and reading was either released
    // or refreshed under a new name that the listing missed: list again.
    for _ in 0..20 {
        if let Some(found) = survey_once(backend, key, exclusive, own)? {
            return Ok(found);
        }
    }
    Err(Error::Locked(
        "locks keep changing while being read; try again".into(),
    ))
}

/// One pass over the locks; `None` if one vanished while it was read.
#[allow(clippy::type_complexity)]
fn survey_once(
    backend: &dyn Backend,
    key: &MasterKey,
    exclusive: bool,
    own: Option<&str>,
) -> Result<Option<(Option<String>, Vec<String>)>> {
    let mut stale = Vec::new();
    for l in backend.list(FileKind::Lock)? {
        if Some(l.name.as_str()) == own {
            continue;
        }
        let rec: LockRecord = match backend.read(FileKind::Lock, &l.name) {
            Ok(d) => match open_msgpack(key, ObjectKind::Lock, &d, "lock") {
                Ok(r) => r,
                Err(_) => continue, // damaged or foreign lock: never blocks
            },
            Err(Error::Missing(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if rec.is_stale() {
            stale.push(l.name);
        } else if exclusive || rec.exclusive {
            return Ok(Some((Some(rec.describe()), stale)));
        }
    }
    Ok(Some((None, stale)))
}

/// Takes a lock, failing with [`Error::Locked`] if a live conflicting one
/// exists. An exclusive locker removes the stale locks it overrides, so
/// their holders find out if they wake up.
pub fn acquire(backend: Arc<dyn Backend>, key: &MasterKey, exclusive: bool) -> Result<LockGuard> {
    if let (Some(who), _) = survey(&*backend, key, exclusive, None)? {
        return Err(Error::Locked(who));
    }
    let name = write_record(&*backend, key, exclusive)?;
    // Two processes may have passed the first check at once: look again now
    // that ours is visible, and back off if there is a conflict.
    let (conflict, stale) = survey(&*backend, key, exclusive, Some(&name))?;
    if let Some(who) = conflict {
        let _ = backend.delete(FileKind::Lock, &name);
        return Err(Error::Locked(who));
    }
    if exclusive {
        for s in stale {
            backend.delete(FileKind::Lock, &s)?;
        }
    }
    let state = Arc::new(State {
        current: Mutex::new(name),
        last_refresh: Mutex::new(Instant::now()),
        lost: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let refresh_every = stale_after() / 6;
    let thread = {
        let (state, backend, key) = (state.clone(), backend.clone(), key.clone());
        std::thread::spawn(move || {
            while !state.stop.load(Ordering::Relaxed) {
                // Parked rather than asleep: dropping the guard unparks the
                // thread, so a command does not wait up to a tick at its end.
                std::thread::park_timeout(Duration::from_millis(100));
                if state.last_refresh.lock().expect("refresh time").elapsed() < refresh_every {
                    continue;
                }
                // After a stall long enough for another process to judge the
                // lock stale, refreshing could race its deletion: give it up.
                if state.last_refresh.lock().expect("refresh time").elapsed() > stale_after() / 2 {
                    state.lost.store(true, Ordering::SeqCst);
                    return;
                }
                let old = state.current.lock().expect("lock name").clone();
                // Our lock deleted by someone who judged it stale: we lost it.
                if !backend.exists(FileKind::Lock, &old).unwrap_or(false) {
                    state.lost.store(true, Ordering::SeqCst);
                    return;
                }
                if let Ok(new) = write_record(&*backend, &key, exclusive) {
                    *state.current.lock().expect("lock name") = new;
                    *state.last_refresh.lock().expect("refresh time") = Instant::now();
                    let _ = backend.delete(FileKind::Lock, &old);
                }
            }
        })
    };
    Ok(LockGuard {
        state,
        thread: Some(thread),
        backend,
    })
}

impl LockGuard {
    /// Confirms the lock is still held and could not have been judged stale
    /// by another process. Call right before committing work that relies on it.
    pub fn check(&self) -> Result<()> {
        let lost = |why: &str| {
            Err(Error::Locked(format!(
                "lock lost: {why}; nothing was committed"
            )))
        };
        if self.state.lost.load(Ordering::SeqCst) {
            return lost("another process removed it as stale");
        }
        // Half the stale age: a margin for clock differences between hosts.
        if self
            .state
            .last_refresh
            .lock()
            .expect("refresh time")
            .elapsed()
            > stale_after() / 2
        {
            return lost("it was not refreshed in time (was the process stopped?)");
        }
        let name = self.state.current.lock().expect("lock name").clone();
        if !self.backend.exists(FileKind::Lock, &name)? {
            return lost("another process removed it as stale");
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let name = self
            .state
            .current
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default();
        let _ = self.backend.delete(FileKind::Lock, &name);
    }
}
