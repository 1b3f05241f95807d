//! Operations running on this machine, published for monitors such as
//! `cairn serve`.
//!
//! A long command (backup, restore, check, prune, copy, watch) keeps a small
//! JSON file, `activity/<pid>.json` in the repository's local cache
//! directory, and rewrites it at most once a second as it progresses; the
//! file is removed when the command ends. A monitor lists the files and
//! drops (and deletes) those whose process is gone, so a command killed with
//! -9 does not show as running. Only this machine's operations are seen this
//! way; the repository's locks name the others (see [`crate::lock`]).
//! Publishing never fails a command: if the file cannot be written, the
//! command runs unobserved.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::host::{ProcessSpace, process_start};
use crate::id::Id;
use crate::repository::Repository;

/// How often a progressing command rewrites its file, at most.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// What a running command publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivityRecord {
    /// The command (`backup`, `restore`, ...).
    pub command: String,
    /// What it is doing now (`backup`, `restore`, `reading packs`, ...).
    pub phase: String,
    /// Its process ID.
    pub pid: u32,
    /// Its host.
    pub hostname: String,
    /// Its user.
    pub username: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// When this record was written.
    pub updated: DateTime<Utc>,
    /// Bytes read (backup), written (restore) or verified (check) so far.
    pub bytes_done: u64,
    /// Bytes it expects to handle in all, when known (a restore of a whole
    /// snapshot knows its size; a backup does not).
    pub bytes_total: Option<u64>,
    /// The snapshot it works on (restore, check of one) or last wrote
    /// (backup, watch), when there is one.
    pub snapshot: Option<String>,
    /// The process's start time in clock ticks since boot, with
    /// `boot_id` and `pid_namespace`: tells it from a later process that
    /// reuses its ID.
    #[serde(default)]
    pub process_start: u64,
    /// See [`ProcessSpace::boot_id`].
    #[serde(default)]
    pub boot_id: String,
    /// See [`ProcessSpace::pid_namespace`].
    #[serde(default)]
    pub pid_namespace: String,
}

impl ActivityRecord {
    /// Whether the process that wrote this record still runs. A record from
    /// another boot or PID namespace cannot be placed; it counts as running
    /// while it is fresher than the lock staleness age.
    fn running(&self) -> bool {
        let here = ProcessSpace::current();
        if self.boot_id == here.boot_id && self.pid_namespace == here.pid_namespace {
            return process_start(self.pid) == Some(self.process_start);
        }
        Utc::now()
            .signed_duration_since(self.updated)
            .to_std()
            .map(|age| age < crate::lock::stale_after())
            .unwrap_or(true)
    }
}

struct Published {
    path: PathBuf,
    record: Mutex<ActivityRecord>,
    bytes: AtomicU64,
    last_write: Mutex<Instant>,
}

/// A running command's published activity; the file goes when this is
/// dropped.
pub struct Activity {
    published: Option<Published>,
}

fn dir_of(cache_dir: &Path) -> PathBuf {
    cache_dir.join("activity")
}

impl Activity {
    /// Publishes that `command` runs against `repo`, in phase `command`.
    /// Without a cache directory (`--no-cache`) nothing is published.
    pub fn start(repo: &Repository, command: &str) -> Activity {
        Activity::start_on(repo, command, None, None)
    }

    /// [`Activity::start`] for a command that works on `snapshot` and
    /// expects `bytes_total` bytes, both in its very first record.
    pub fn start_on(
        repo: &Repository,
        command: &str,
        snapshot: Option<&Id>,
        bytes_total: Option<u64>,
    ) -> Activity {
        let Some(cache) = repo.cache_dir() else {
            return Activity::none();
        };
        let pid = std::process::id();
        let space = ProcessSpace::current();
        let now = Utc::now();
        let record = ActivityRecord {
            command: command.to_string(),
            phase: command.to_string(),
            pid,
            hostname: crate::host::hostname(),
            username: crate::host::username(),
            started: now,
            updated: now,
            bytes_done: 0,
            bytes_total,
            snapshot: snapshot.map(Id::to_hex),
            process_start: process_start(pid).unwrap_or_default(),
            boot_id: space.boot_id,
            pid_namespace: space.pid_namespace,
        };
        let dir = dir_of(cache);
        if std::fs::create_dir_all(&dir).is_err() {
            return Activity::none();
        }
        let activity = Activity {
            published: Some(Published {
                path: dir.join(format!("{pid}.json")),
                record: Mutex::new(record),
                bytes: AtomicU64::new(0),
                last_write: Mutex::new(Instant::now()),
            }),
        };
        activity.write();
        activity
    }

    /// An activity that publishes nothing.
    pub fn none() -> Activity {
        Activity { published: None }
    }

    /// Sets the current phase (published at once).
    pub fn phase(&self, phase: &str) {
        if let Some(p) = &self.published {
            p.record.lock().expect("activity").phase = phase.to_string();
            self.write();
        }
    }

    /// Names the snapshot worked on or just written (published at once).
    pub fn snapshot(&self, id: &Id) {
        if let Some(p) = &self.published {
            p.record.lock().expect("activity").snapshot = Some(id.to_hex());
            self.write();
        }
    }

    /// Counts `n` bytes done; the file is rewritten if the last write was
    /// [`WRITE_EVERY`] ago. Cheap enough to call per chunk.
    pub fn add_bytes(&self, n: u64) {
        let Some(p) = &self.published else { return };
        p.bytes.fetch_add(n, Ordering::Relaxed);
        // One thread writes; the others go on counting.
        let due = match p.last_write.try_lock() {
            Ok(last) => last.elapsed() >= WRITE_EVERY,
            Err(_) => false,
        };
        if due {
            self.write();
        }
    }

    fn write(&self) {
        let Some(p) = &self.published else { return };
        let Ok(mut last) = p.last_write.lock() else {
            return;
        };
        let json = {
            let mut r = p.record.lock().expect("activity");
            r.bytes_done = p.bytes.load(Ordering::Relaxed);
            r.updated = Utc::now();
            serde_json::to_vec(&*r).expect("an activity record serialises")
        };
        // Written aside and renamed, so a reader never sees half a record.
        let tmp = p.path.with_extension("json.tmp");
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &p.path);
        }
        *last = Instant::now();
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        if let Some(p) = &self.published {
            let _ = std::fs::remove_file(&p.path);
        }
    }
}

/// The operations running on this machine against `repo`, oldest first.
/// Records of processes that are gone are deleted.
pub fn running(repo: &Repository) -> Vec<ActivityRecord> {
    let Some(cache) = repo.cache_dir() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir_of(cache)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let Some(rec) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ActivityRecord>(&b).ok())
        else {
            continue;
        };
        if rec.running() {
            out.push(rec);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    out.sort_by_key(|r| r.started);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, start: u64) -> ActivityRecord {
        let space = ProcessSpace::current();
        ActivityRecord {
            command: "backup".into(),
            phase: "backup".into(),
            pid,
            hostname: String::new(),
            username: String::new(),
            started: Utc::now(),
            updated: Utc::now(),
            bytes_done: 0,
            bytes_total: None,
            snapshot: None,
            process_start: start,
            boot_id: space.boot_id,
            pid_namespace: space.pid_namespace,
        }
    }

    #[test]
    fn a_record_is_live_only_while_its_very_process_runs() {
        let me = std::process::id();
        let start = process_start(me).expect("this process has a start time");
        assert!(record(me, start).running());
        // The same ID taken by a later process is not this record's.
        assert!(!record(me, start + 1).running());
        // No such process (PIDs stay below 2^22 on Linux).
        assert!(!record(u32::MAX - 1, start).running());
        // Another PID namespace: only the age counts.
        let mut other = record(u32::MAX - 1, start);
        other.pid_namespace = "pid:[elsewhere]".into();
        assert!(other.running());
        other.updated = Utc::now() - chrono::Duration::days(1);
        assert!(!other.running());
    }
}
