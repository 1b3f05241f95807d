//! Operations running on this machine, published for monitors such as
//! `cairn serve`.
//!
//! A long command (backup, restore, check, prune, copy, watch) keeps a small
//! JSON file, `activity/<pid>-<random>.json` in the repository's local cache
//! directory, and rewrites it at most once a second as it progresses, and
//! every [`HEARTBEAT`] while it makes none; the file is removed when the
//! command ends. A monitor lists the files and drops those whose process is
//! gone, so a command killed with -9 does not show as running; each command
//! that publishes one drops them too, so they do not pile up. Only this
//! machine's operations are seen this way; the repository's locks name the
//! others (see [`crate::lock`]). Publishing never fails a command: if the
//! file cannot be written, the command runs unobserved.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::host::{ProcessSpace, process_start};
use crate::id::Id;
use crate::repository::Repository;

/// How often a progressing command rewrites its file, at most.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// How often a command rewrites its file while it makes no progress, so a
/// reader that cannot see its process can still tell it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// A record whose process cannot be looked at (another boot or PID
/// namespace) counts as running while it is younger than this.
const UNPLACED_FRESH: Duration = Duration::from_secs(3 * 60);

/// Records older than this whose process cannot be looked at are deleted.
const UNPLACED_FORGOTTEN: Duration = Duration::from_secs(24 * 3600);

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
    /// See [`ProcessSpace::machine_id`].
    #[serde(default)]
    pub machine_id: String,
}

/// What a reader can tell about a record's process.
#[derive(Debug, PartialEq, Eq)]
enum Liveness {
    /// It runs.
    Running,
    /// It is certainly gone: the record can be deleted.
    Gone,
    /// It cannot be looked at and has not written for a while: not shown,
    /// not deleted (it may be a busy command in another container).
    Unknown,
}

impl ActivityRecord {
    /// Whether the process that wrote this record still runs, as seen from
    /// a process in `here` (the same rules as for locks, [`crate::lock`]).
    fn liveness(&self, here: &ProcessSpace) -> Liveness {
        if !here.boot_id.is_empty()
            && self.boot_id == here.boot_id
            && self.pid_namespace == here.pid_namespace
        {
            // A zombie has a start time still, but runs no more.
            return if process_start(self.pid) == Some(self.process_start)
                && crate::host::running(self.pid)
            {
                Liveness::Running
            } else {
                Liveness::Gone
            };
        }
        // This machine booted since the record was written, unless it was
        // written after this boot began (a heartbeat and a minute of clock
        // allowed): then a clone with the same IDs (a VM or image copied
        // with its machine ID, sharing the cache) writes it, and the age
        // decides, as for locks.
        if !self.boot_id.is_empty()
            && self.boot_id != here.boot_id
            && !self.machine_id.is_empty()
            && self.machine_id == here.machine_id
        {
            let margin = chrono::TimeDelta::from_std(HEARTBEAT + Duration::from_secs(60))
                .expect("a short duration");
            let before_boot = here
                .booted
                .and_then(|b| b.checked_sub_signed(margin))
                .is_some_and(|since| self.updated <= since);
            if before_boot {
                return Liveness::Gone;
            }
        }
        let age = Utc::now()
            .signed_duration_since(self.updated)
            .to_std()
            .unwrap_or_default();
        if age < UNPLACED_FRESH {
            Liveness::Running
        } else if age < UNPLACED_FORGOTTEN {
            Liveness::Unknown
        } else {
            Liveness::Gone
        }
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
    published: Option<Arc<Published>>,
    heartbeat: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
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
            machine_id: space.machine_id,
        };
        let dir = dir_of(cache);
        if crate::backend::create_private_dir(&dir).is_err() {
            return Activity::none();
        }
        // The records of commands killed since would pile up where no
        // monitor runs to clear them.
        sweep(&dir, &ProcessSpace::current());
        // PIDs repeat across containers that share a cache directory.
        let mut tag = [0u8; 4];
        let _ = getrandom::fill(&mut tag);
        let published = Arc::new(Published {
            path: dir.join(format!("{pid}-{}.json", hex::encode(tag))),
            record: Mutex::new(record),
            bytes: AtomicU64::new(0),
            last_write: Mutex::new(Instant::now()),
        });
        published.write();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (p, stop) = (published.clone(), stop.clone());
            std::thread::Builder::new()
                .name("cairn-activity".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(HEARTBEAT);
                        let idle = p.last_write.lock().map(|l| l.elapsed() >= HEARTBEAT);
                        if !stop.load(Ordering::Relaxed) && idle.unwrap_or(false) {
                            p.write();
                        }
                    }
                })
                .ok()
        };
        Activity {
            published: Some(published),
            heartbeat: thread.map(|t| (stop, t)),
        }
    }

    /// An activity that publishes nothing.
    pub fn none() -> Activity {
        Activity {
            published: None,
            heartbeat: None,
        }
    }

    /// Sets the current phase (published at once).
    pub fn phase(&self, phase: &str) {
        if let Some(p) = &self.published {
            p.record.lock().expect("activity").phase = phase.to_string();
            p.write();
        }
    }

    /// Names the snapshot worked on or just written (published at once).
    pub fn snapshot(&self, id: &Id) {
        if let Some(p) = &self.published {
            p.record.lock().expect("activity").snapshot = Some(id.to_hex());
            p.write();
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
            p.write();
        }
    }
}

impl Published {
    fn write(&self) {
        let Ok(mut last) = self.last_write.lock() else {
            return;
        };
        let json = {
            let mut r = self.record.lock().expect("activity");
            r.bytes_done = self.bytes.load(Ordering::Relaxed);
            r.updated = Utc::now();
            serde_json::to_vec(&*r).expect("an activity record serialises")
        };
        crate::cachedir::write_aside(&self.path, &json);
        *last = Instant::now();
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.heartbeat.take() {
            stop.store(true, Ordering::Relaxed);
            thread.thread().unpark();
            let _ = thread.join();
        }
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
    sweep(&dir_of(cache), &ProcessSpace::current())
}

/// The records in `dir` of processes still running, after deleting those
/// of processes that are gone.
fn sweep(dir: &Path, here: &ProcessSpace) -> Vec<ActivityRecord> {
    let Ok(entries) = std::fs::read_dir(dir) else {
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
        match rec.liveness(here) {
            Liveness::Running => out.push(rec),
            Liveness::Unknown => {}
            Liveness::Gone => {
                let _ = std::fs::remove_file(&path);
            }
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
            machine_id: space.machine_id,
        }
    }

    #[test]
    fn a_record_is_live_only_while_its_very_process_runs() {
        let here = ProcessSpace::current();
        let me = std::process::id();
        let start = process_start(me).expect("this process has a start time");
        assert_eq!(record(me, start).liveness(&here), Liveness::Running);
        // The same ID taken by a later process is not this record's.
        assert_eq!(record(me, start + 1).liveness(&here), Liveness::Gone);
        // No such process (PIDs stay below 2^22 on Linux).
        assert_eq!(record(u32::MAX - 1, start).liveness(&here), Liveness::Gone);
        // Another PID namespace: the age decides, and an old record is
        // hidden before it is deleted.
        let mut other = record(u32::MAX - 1, start);
        other.pid_namespace = "pid:[elsewhere]".into();
        assert_eq!(other.liveness(&here), Liveness::Running);
        other.updated = Utc::now() - chrono::Duration::minutes(10);
        assert_eq!(other.liveness(&here), Liveness::Unknown);
        other.updated = Utc::now() - chrono::Duration::days(2);
        assert_eq!(other.liveness(&here), Liveness::Gone);
        // This machine, an earlier boot: gone, written before this boot.
        let mut rebooted = record(me, start);
        rebooted.boot_id = "an-earlier-boot".into();
        rebooted.machine_id = "m".into();
        let this_machine = ProcessSpace {
            machine_id: "m".into(),
            booted: Some(Utc::now() - chrono::Duration::minutes(10)),
            ..here.clone()
        };
        rebooted.updated = Utc::now() - chrono::Duration::minutes(13);
        assert_eq!(rebooted.liveness(&this_machine), Liveness::Gone);
        // Written since this boot began: a clone with the same IDs writes
        // it (its records were deleted under its running commands).
        rebooted.updated = Utc::now();
        assert_eq!(rebooted.liveness(&this_machine), Liveness::Running);
        // Another machine sharing the cache: the age decides.
        rebooted.machine_id = "other".into();
        assert_eq!(rebooted.liveness(&this_machine), Liveness::Running);
    }
}
