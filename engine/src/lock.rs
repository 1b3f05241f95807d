//! Repository locks: shared for writers that only add, exclusive for
//! operations that remove or rewrite.
//!
//! A lock is an encrypted object under `locks/`. Its holder refreshes it (a
//! new object, then the old one deleted) every [`stale_after`]/6; a lock not
//! refreshed for [`stale_after`], or whose process is certainly gone (same
//! boot and PID namespace, no such process; or its machine rebooted since),
//! is stale and ignored, so a crashed process never blocks the repository.
//!
//! A lock's age is read on two clocks and it is stale only if both say so:
//! the time its holder wrote into it, and the storage's own modification
//! time against that of the lock the reader has just written. The second
//! needs no agreement between hosts' clocks, so a reader whose clock runs
//! ahead cannot judge a live lock stale.
//!
//! A stalled process must not outlive its lock silently: a locker deletes
//! the stale locks it overrides (an exclusive locker every stale lock, a
//! shared one stale exclusive locks and those of processes of this machine
//! that are gone), and a holder checks with
//! [`LockGuard::check`] before it commits anything that relies on the lock
//! (a backup, before writing its snapshot) and with [`LockGuard::check_fresh`]
//! before each deletion. If its lock was deleted, or it went without refresh
//! for long enough that another process could have judged it stale (counted
//! on clocks that also run while the machine is suspended), the check fails
//! and nothing more is committed or deleted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::crypto::MasterKey;
use crate::envelope::{ObjectKind, open_msgpack, seal_msgpack};
use crate::error::{Error, Result};
use crate::host::ProcessSpace;
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::Snapshot;

/// Environment variable overriding [`stale_after`] in seconds (for tests).
pub const STALE_ENV: &str = "CAIRN_TEST_LOCK_STALE_SECS";

/// How long a lock stays valid without refresh (30 minutes unless
/// overridden by [`STALE_ENV`]).
pub fn stale_after() -> Duration {
    crate::units::seconds_from_env(STALE_ENV, Duration::from_secs(30 * 60))
}

/// How old an unfinished write (a temporary file, a multipart upload) must
/// be to be taken for abandoned by a process holding the exclusive lock.
/// No process holding a lock writes then; one whose lock went stale may
/// still, until it notices within half [`stale_after`]: twice that (an
/// hour by default) spares its writes.
pub fn abandoned_after() -> Duration {
    stale_after() * 2
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
    /// The holder's boot of its system (see [`ProcessSpace`]); empty in
    /// locks of cairn before 2026-11-30, and where unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    /// The holder's PID namespace: `pid` means something only inside it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pid_namespace: String,
    /// The holder's machine ID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    /// The command the holder runs (`backup`, `prune`, ...); empty if
    /// unknown or written before 2026-11-30.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
    /// When the holder first took the lock (`time` moves with every
    /// refresh); absent in older locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
}

impl LockRecord {
    /// Whether the lock no longer protects anything. `stored_age` is how
    /// long before the reader's own newest lock object the storage wrote
    /// this one (`None` where the storage does not say): a lock must look
    /// old by the time written in it and by that, so no host's clock alone
    /// decides.
    fn is_stale(&self, stored_age: Option<Duration>) -> bool {
        self.is_old(stored_age) || self.holder_gone_here(stored_age)
    }

    /// Whether the lock went unrefreshed for [`stale_after`], by its record
    /// and by the storage (see [`LockRecord::is_stale`]). A record dated
    /// ahead of this clock (the holder's clock was fast) says nothing of
    /// its age: the storage's age decides, where it tells one. Taken for
    /// new, a dead holder's lock held everyone off for the skew and the
    /// stale age, and `unlock` removed nothing.
    fn is_old(&self, stored_age: Option<Duration>) -> bool {
        let age = Utc::now().signed_duration_since(self.time);
        let by_record = match age.to_std() {
            Ok(a) => a > stale_after(),
            Err(_) => stored_age.is_some(),
        };
        by_record && stored_age.is_none_or(|a| a > stale_after())
    }

    /// [`LockRecord::holder_gone`], seen from this process.
    fn holder_gone_here(&self, stored_age: Option<Duration>) -> bool {
        self.holder_gone(
            &crate::host::hostname(),
            &ProcessSpace::current(),
            crate::host::running,
            stored_age,
        )
    }

    /// Whether the holder is certainly not running, as seen from a process
    /// on host `hostname` in `here`, where `running(pid)` says whether a
    /// process ID is in use. A host name alone does not say that: two
    /// containers, or a container and its host, can share one and still
    /// number their processes apart, and a live lock judged gone lets an
    /// exclusive locker delete data under its holder. `stored_age` is as
    /// for [`LockRecord::is_stale`].
    fn holder_gone(
        &self,
        hostname: &str,
        here: &ProcessSpace,
        running: impl Fn(u32) -> bool,
        stored_age: Option<Duration>,
    ) -> bool {
        if self.hostname != hostname {
            return false;
        }
        if self.boot_id.is_empty() || here.boot_id.is_empty() {
            // Written by an older cairn (or where the boot is unknown):
            // the host name is all there is to go by.
            return !running(self.pid);
        }
        if self.boot_id != here.boot_id {
            // The same machine booted since: nothing of that boot runs. But
            // a lock refreshed after this boot began was refreshed by
            // another machine with the same IDs (a cloned VM or image). A
            // live one is refreshed only every sixth of the stale age: its
            // record may be that much older than the last refresh could
            // be, and a minute more for the clocks. Counted from the boot
            // on, a clone's running backup was judged gone in the first
            // minutes after this machine booted, its lock deleted.
            let margin = chrono::TimeDelta::from_std(stale_after() / 6)
                .ok()
                .and_then(|i| i.checked_add(&chrono::TimeDelta::minutes(1)));
            let refreshed_since = here.booted.is_some_and(|b| {
                margin
                    .and_then(|m| b.checked_sub_signed(m))
                    .is_none_or(|since| self.time > since)
            });
            // The record's time is the holder's clock: a clone whose clock
            // is behind would look refreshed before this boot. Where the
            // storage tells when it wrote the lock, that must say so too.
            let up = here
                .booted
                .and_then(|b| Utc::now().signed_duration_since(b).to_std().ok());
            let stored_before_boot =
                stored_age.is_none_or(|a| match (up, margin.and_then(|m| m.to_std().ok())) {
                    (Some(up), Some(m)) => a > up + m,
                    _ => a > stale_after(),
                });
            return !self.machine_id.is_empty()
                && self.machine_id == here.machine_id
                && !refreshed_since
                && stored_before_boot;
        }
        self.pid_namespace == here.pid_namespace && !running(self.pid)
    }

    fn describe(&self) -> String {
        self.describe_from(&ProcessSpace::current())
    }

    /// [`Self::describe`] as seen from a process in `here`.
    fn describe_from(&self, here: &ProcessSpace) -> String {
        // Its PID means nothing here: say how long the lock then stands.
        let this_host = self.hostname == crate::host::hostname() && !self.boot_id.is_empty();
        let elsewhere =
            this_host && self.boot_id == here.boot_id && self.pid_namespace != here.pid_namespace;
        // A power cut or crash: the lock was refreshed shortly before, and
        // is judged gone from this boot only once it is older than a
        // clone of this machine (same IDs) would let it get.
        let earlier_boot = this_host
            && !here.boot_id.is_empty()
            && self.boot_id != here.boot_id
            && !self.machine_id.is_empty()
            && self.machine_id == here.machine_id;
        let stands = |why: &str| {
            format!(
                ", {why}: the lock stands until it goes {} without a refresh (at {}), or until \
                 `cairn unlock --remove-all` removes it once no cairn process uses the repository",
                crate::units::format_duration(stale_after()),
                chrono::TimeDelta::from_std(stale_after())
                    .ok()
                    .and_then(|d| self.time.checked_add_signed(d))
                    .map_or_else(|| "?".into(), |t| t.to_rfc3339())
            )
        };
        format!(
            "{} lock held by PID {} on {} (user {}) since {}{}",
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.pid,
            self.hostname,
            self.username,
            self.started.unwrap_or(self.time).to_rfc3339(),
            if elsewhere {
                stands(
                    "in another PID namespace (a container, or the host of this one): \
                     whether it still runs cannot be told from here",
                )
            } else if earlier_boot {
                stands(
                    "from before this machine last started (a crash or power cut left it; \
                     or from a clone of this machine, which cannot be told apart yet)",
                )
            } else {
                String::new()
            }
        )
    }
}

/// A moment as three clocks see it. `Instant` (`CLOCK_MONOTONIC`) stops
/// while the machine is suspended, `CLOCK_BOOTTIME` does not, and the wall
/// clock is also set forward after a virtual machine was paused by its
/// host. Time elapsed is the largest of the three: a holder that slept
/// through any of these must assume others saw its lock go stale.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    mono: Instant,
    boot: Option<Duration>,
    wall: SystemTime,
}

impl Stamp {
    fn now() -> Stamp {
        Stamp {
            mono: Instant::now(),
            boot: boottime(),
            wall: SystemTime::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        let mut e = self.mono.elapsed();
        if let (Some(then), Some(now)) = (self.boot, boottime()) {
            e = e.max(now.saturating_sub(then));
        }
        // A wall clock set back says nothing; one set forward may mean a
        // pause the other clocks did not see.
        if let Ok(w) = self.wall.elapsed() {
            e = e.max(w);
        }
        e
    }
}

fn boottime() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .ok()
        .map(Duration::from)
}

struct State {
    current: Mutex<String>,
    last_refresh: Mutex<Stamp>,
    lost: AtomicBool,
    /// Why `lost` was set (one of [`REMOVED`], [`STALLED`], [`UNANSWERED`]).
    lost_why: Mutex<&'static str>,
    stop: AtomicBool,
    /// Records of ours that may be in storage but are not the lock: a
    /// refresh's whose write or confirmation failed. Deleted when possible,
    /// or one would block others until it went stale.
    leftovers: Mutex<Vec<String>>,
    /// The last refresh failed because the storage did not answer.
    unanswered: AtomicBool,
}

/// A held lock; released on drop.
pub struct LockGuard {
    state: Arc<State>,
    thread: Option<std::thread::JoinHandle<()>>,
    backend: Arc<dyn Backend>,
}

fn write_record(
    backend: &dyn Backend,
    key: &MasterKey,
    exclusive: bool,
    started: DateTime<Utc>,
) -> Result<String> {
    let (name, data) = seal_record(key, exclusive, started);
    if let Err(e) = backend.write(FileKind::Lock, &name, &data) {
        // The write may have landed all the same (an S3 answer lost on the
        // way, a directory fsync that failed after the rename): a lock
        // nobody holds would keep others' prunes off until it went stale.
        let _ = backend.delete(FileKind::Lock, &name);
        return Err(e);
    }
    Ok(name)
}

/// A lock record of this process, sealed, and its object name.
fn seal_record(key: &MasterKey, exclusive: bool, started: DateTime<Utc>) -> (String, Vec<u8>) {
    let space = ProcessSpace::current();
    let rec = LockRecord {
        time: Utc::now(),
        command: crate::audit::command().to_string(),
        started: Some(started),
        exclusive,
        hostname: crate::host::hostname(),
        username: crate::host::username(),
        pid: std::process::id(),
        boot_id: space.boot_id,
        pid_namespace: space.pid_namespace,
        machine_id: space.machine_id,
    };
    let data = seal_msgpack(key, ObjectKind::Lock, &rec);
    (Id::of_object(&data).to_hex(), data)
}

/// A stale lock found by [`survey`].
struct StaleLock {
    /// Its object name.
    name: String,
    /// Whether it is exclusive (or unknown: it does not open).
    exclusive: bool,
    /// Whether its holder is certainly gone (a process of this machine
    /// that no longer runs), not just silent for long.
    gone: bool,
}

/// Lists other locks: the first live one that conflicts, and the stale ones.
fn survey(
    backend: &dyn Backend,
    key: &MasterKey,
    exclusive: bool,
    own: Option<&str>,
) -> Result<(Option<String>, Vec<StaleLock>)> {
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
) -> Result<Option<(Option<String>, Vec<StaleLock>)>> {
    let mut stale = Vec::new();
    let listed = backend.list(FileKind::Lock)?;
    let storage_now = own.and_then(|o| storage_now(&listed, o));
    for l in listed {
        if Some(l.name.as_str()) == own {
            continue;
        }
        let rec: LockRecord = match read_lock(backend, &l) {
            Ok(d) => match open_msgpack(key, ObjectKind::Lock, &d, "lock") {
                Ok(r) => r,
                // It may be a live holder's lock, damaged: taking it for
                // none let a prune delete what a running backup had stored.
                // Its kind and holder are unknown, so it conflicts with
                // every lock until the storage says it went unrefreshed for
                // `S` (a live holder replaces it sooner). Judged in the
                // second pass only, which knows the storage's clock.
                Err(_) => match stored_age(storage_now, l.modified) {
                    Some(age) if age > stale_after() => {
                        stale.push(StaleLock {
                            name: l.name,
                            exclusive: true,
                            gone: false,
                        });
                        continue;
                    }
                    _ if own.is_none() => continue,
                    _ => return Ok(Some((Some(unreadable_lock(&l.name)), stale))),
                },
            },
            Err(Error::Missing(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Dated ahead of this clock: only the storage's age tells, which
        // the second pass knows (the first refused on it for good).
        if own.is_none() && rec.time > Utc::now() {
            continue;
        }
        // As `is_stale`, with whether the holder is gone kept.
        let age = stored_age(storage_now, l.modified);
        let gone = rec.holder_gone_here(age);
        if gone || rec.is_old(age) {
            stale.push(StaleLock {
                name: l.name,
                exclusive: rec.exclusive,
                gone,
            });
        } else if exclusive || rec.exclusive {
            return Ok(Some((Some(rec.describe()), stale)));
        }
    }
    Ok(Some((None, stale)))
}

/// Who holds a lock that does not open: nobody knows.
/// What a lock that does not decrypt or decode (`locks/<name>`) does to
/// other commands, and how it goes away.
pub fn unreadable_lock(name: &str) -> String {
    format!(
        "a lock that cannot be read (locks/{name}: damaged, or written with another \
         repository's key); it counts as held until it is {} old, or until \
         `cairn unlock --remove-all` (with a key that may delete) removes it once no cairn \
         process uses the repository",
        crate::units::format_duration(stale_after())
    )
}

/// A lock record is a few hundred bytes; one larger than this is not read.
const MAX_LOCK_SIZE: u64 = 64 << 10;

/// The bytes of the listed lock `l`; none for one larger than
/// [`MAX_LOCK_SIZE`], which then reads as a lock that does not open.
/// Anyone who may write a lock (an append-only key too) could otherwise
/// make every command read a file of any size into memory.
fn read_lock(backend: &dyn Backend, l: &crate::backend::Listed) -> Result<Vec<u8>> {
    if l.size > MAX_LOCK_SIZE {
        return Ok(Vec::new());
    }
    backend.read(FileKind::Lock, &l.name)
}

/// The storage's clock now, near enough: when it wrote our own lock `own`
/// (in `listed`, the listing just taken).
fn storage_now(listed: &[crate::backend::Listed], own: &str) -> Option<SystemTime> {
    listed.iter().find(|l| l.name == own)?.modified
}

/// How long before `now` the storage wrote an object it says it wrote at
/// `then` (both by the storage's clock); `None` if either is unknown.
fn stored_age(now: Option<SystemTime>, then: Option<SystemTime>) -> Option<Duration> {
    Some(now?.duration_since(then?).unwrap_or_default())
}

/// Deletes the repository's stale locks, or every lock with `all`, and
/// describes each one deleted. `all` is for a holder known to be gone whose
/// lock is not stale yet (it ran on another machine, or in a container);
/// a holder that is in fact running finds its lock lost and commits nothing.
/// An append-only repository or key may only delete stale locks, as every
/// exclusive command does: deleting live ones would let it stop others'
/// work.
pub fn remove_locks(repo: &Repository, all: bool) -> Result<Vec<String>> {
    if all {
        repo.ensure_may_delete("unlock --remove-all")?;
    }
    remove_locks_in(&**repo.backend(), repo.key(), all)
}

fn remove_locks_in(backend: &dyn Backend, key: &MasterKey, all: bool) -> Result<Vec<String>> {
    // The storage's clock, as when taking a lock: a probe lock's time of
    // writing, so that a host whose clock runs ahead does not judge live
    // locks stale. It is a shared lock, so it blocks nobody meanwhile.
    let probe = write_record(backend, key, false, Utc::now())?;
    let listed = backend.list(FileKind::Lock);
    let _ = backend.delete(FileKind::Lock, &probe);
    let listed = listed?;
    let storage_now = storage_now(&listed, &probe);
    let mut removed = Vec::new();
    for l in listed {
        if l.name == probe {
            continue;
        }
        let age = stored_age(storage_now, l.modified);
        let what = match read_lock(backend, &l) {
            Ok(d) => match open_msgpack::<LockRecord>(key, ObjectKind::Lock, &d, "lock") {
                Ok(rec) if all || rec.is_stale(age) => rec.describe(),
                Ok(_) => continue,
                // Stale as the locker judges it: old by the storage's clock.
                Err(_) if all || age.is_some_and(|a| a > stale_after()) => {
                    format!("unreadable lock {}", l.name)
                }
                Err(_) => continue,
            },
            Err(Error::Missing(_)) => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        match backend.delete(FileKind::Lock, &l.name) {
            Ok(()) | Err(Error::Missing(_)) => removed.push(what),
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// A lock as a monitor sees it.
#[derive(Debug, Clone, Serialize)]
pub struct LockInfo {
    /// The lock object's name under `locks/`.
    pub name: String,
    /// Its record.
    #[serde(flatten)]
    pub record: LockRecord,
    /// Whether readers ignore it (see [`stale_after`]); `cairn unlock`
    /// removes such locks.
    pub stale: bool,
}

/// The locks of a repository as [`list_locks`] finds them.
#[derive(Debug, Clone, Default)]
pub struct LockListing {
    /// The locks that decrypt and decode.
    pub locks: Vec<LockInfo>,
    /// Those that do not: each blocks every other command until stale
    /// (see [`acquire`]), so a monitor must show them.
    pub unreadable: Vec<UnreadableLock>,
}

/// A lock object that does not decrypt or decode.
#[derive(Debug, Clone, Serialize)]
pub struct UnreadableLock {
    /// Its name under `locks/`.
    pub name: String,
    /// Whether the storage wrote it more than [`stale_after`] ago (by this
    /// machine's clock; lockers judge by the storage's own): no command
    /// waits for it any more, and `cairn unlock` removes it.
    pub stale: bool,
}

/// Every lock of the repository (locks that vanish while they are listed
/// are left out).
pub fn list_locks(backend: &dyn Backend, key: &MasterKey) -> Result<LockListing> {
    let mut out = LockListing::default();
    for l in backend.list(FileKind::Lock)? {
        let rec = match read_lock(backend, &l) {
            Ok(d) => match open_msgpack::<LockRecord>(key, ObjectKind::Lock, &d, "lock") {
                Ok(r) => r,
                Err(_) => {
                    let age = l
                        .modified
                        .and_then(|m| SystemTime::now().duration_since(m).ok());
                    out.unreadable.push(UnreadableLock {
                        name: l.name,
                        stale: age.is_some_and(|a| a > stale_after()),
                    });
                    continue;
                }
            },
            Err(Error::Missing(_)) => continue,
            Err(e) => return Err(e),
        };
        out.locks.push(LockInfo {
            name: l.name,
            stale: rec.is_stale(None),
            record: rec,
        });
    }
    Ok(out)
}

/// Told who holds the lock a wait is for.
pub type OnWait = Arc<dyn Fn(&str) + Send + Sync>;

/// How long [`acquire_waiting`] waits for locks held by others.
#[derive(Clone, Default)]
pub struct LockWait {
    /// The longest wait; zero fails at once.
    pub up_to: Duration,
    /// Told, once, who holds the lock when a wait begins.
    pub on_wait: Option<OnWait>,
    /// Set (by a signal) to give up waiting with [`Error::Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for LockWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockWait")
            .field("up_to", &self.up_to)
            .finish_non_exhaustive()
    }
}

/// The longest pause between two attempts of [`acquire_waiting`].
const WAIT_PAUSE_MAX: Duration = Duration::from_secs(30);

/// [`acquire`], tried again while others hold conflicting locks, for up to
/// `wait.up_to`: a backup that a timer starts while a prune runs waits for
/// it instead of failing. Pauses grow from about a second to 30 s, each
/// drawn at random between half and all of its length, so that waiters
/// do not keep meeting each other.
pub fn acquire_waiting(
    backend: Arc<dyn Backend>,
    key: &MasterKey,
    exclusive: bool,
    wait: &LockWait,
) -> Result<LockGuard> {
    let started = Instant::now();
    let mut pause = Duration::from_secs(1);
    let mut told = false;
    loop {
        let who = match acquire(backend.clone(), key, exclusive) {
            Err(Error::Locked(who)) => who,
            r => return r,
        };
        let left = wait.up_to.saturating_sub(started.elapsed());
        if left.is_zero() {
            if wait.up_to.is_zero() {
                return Err(Error::Locked(who));
            }
            return Err(Error::Locked(format!(
                "{who} (waited {})",
                crate::units::format_duration(started.elapsed())
            )));
        }
        if !told {
            told = true;
            if let Some(tell) = &wait.on_wait {
                tell(&who);
            }
        }
        let mut random = [0u8; 2];
        let _ = getrandom::fill(&mut random);
        let share = 0.5 + f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX) / 2.0;
        let until = Instant::now() + pause.mul_f64(share).min(left);
        // In short naps, so that a signal ends the wait at once.
        while let Some(nap) = until.checked_duration_since(Instant::now()) {
            if wait.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                return Err(Error::Interrupted);
            }
            std::thread::sleep(nap.min(Duration::from_millis(100)));
            if nap.is_zero() {
                break;
            }
        }
        pause = (pause * 2).min(WAIT_PAUSE_MAX);
    }
}

/// Takes a lock, failing with [`Error::Locked`] if a live conflicting one
/// exists. A locker removes the stale locks it overrides (an exclusive one
/// every stale lock, a shared one stale exclusive locks, and the locks of
/// processes of this machine that are gone), so their holders
/// find out if they wake up: a prune that stalled past its lock's age must
/// not go on to delete what a backup that ignored its lock relies on.
pub fn acquire(backend: Arc<dyn Backend>, key: &MasterKey, exclusive: bool) -> Result<LockGuard> {
    if let (Some(who), _) = survey(&*backend, key, exclusive, None)? {
        return Err(Error::Locked(who));
    }
    let started = Utc::now();
    // The lock's freshness counts from before its record is written, as
    // a refresh's does: others judge it by the record's time, and the
    // steps below (a survey of many locks on a slow store, a suspend) may
    // take long.
    let stamp = Stamp::now();
    let name = write_record(&*backend, key, exclusive, started)?;
    // Two processes may have passed the first check at once: look again now
    // that ours is visible, and back off if there is a conflict.
    let surveyed = survey(&*backend, key, exclusive, Some(&name));
    let stale = match surveyed {
        Ok((None, stale)) => stale,
        Ok((Some(who), _)) => {
            let _ = backend.delete(FileKind::Lock, &name);
            return Err(Error::Locked(who));
        }
        Err(e) => {
            let _ = backend.delete(FileKind::Lock, &name);
            return Err(e);
        }
    };
    for s in &stale {
        if exclusive {
            if let Err(e) = backend.delete(FileKind::Lock, &s.name) {
                let _ = backend.delete(FileKind::Lock, &name);
                return Err(e);
            }
        } else if s.exclusive || s.gone {
            // Best effort: the holder's own checks (its clocks, the storage's
            // age) are what stop it; this only makes it find out sooner. A
            // shared lock whose holder is gone (a backup killed on this
            // machine) blocks nobody, but is read by every command until
            // an exclusive one or `unlock` removes it: they piled up.
            let _ = backend.delete(FileKind::Lock, &s.name);
        }
    }
    let state = Arc::new(State {
        current: Mutex::new(name),
        last_refresh: Mutex::new(stamp),
        lost: AtomicBool::new(false),
        lost_why: Mutex::new(REMOVED),
        stop: AtomicBool::new(false),
        leftovers: Mutex::new(Vec::new()),
        unanswered: AtomicBool::new(false),
    });
    let refresh_every = stale_after() / 6;
    let thread = {
        let (state, backend, key) = (state.clone(), backend.clone(), key.clone());
        std::thread::Builder::new().spawn(move || {
            // After a refresh the storage did not answer, the next waits
            // (1 s, doubling to 30 s) rather than come every tick.
            let (mut retry_at, mut pause) = (None, Duration::from_secs(1));
            while !state.stop.load(Ordering::Relaxed) {
                // Parked rather than asleep: dropping the guard unparks the
                // thread, so a command does not wait up to a tick at its end.
                std::thread::park_timeout(Duration::from_millis(100));
                if state.last_refresh.lock().expect("refresh time").elapsed() < refresh_every
                    || retry_at.is_some_and(|at| Instant::now() < at)
                {
                    continue;
                }
                // After a stall long enough for another process to judge the
                // lock stale, refreshing could race its deletion: give it up.
                if state.last_refresh.lock().expect("refresh time").elapsed() > stale_after() / 2 {
                    let why = if state.unanswered.load(Ordering::SeqCst) {
                        UNANSWERED
                    } else {
                        STALLED
                    };
                    *state.lost_why.lock().expect("lost reason") = why;
                    state.lost.store(true, Ordering::SeqCst);
                    return;
                }
                match refresh(&state, &*backend, &key, exclusive, started) {
                    Refresh::Lost => return,
                    Refresh::Done => (retry_at, pause) = (None, Duration::from_secs(1)),
                    Refresh::Unanswered => {
                        retry_at = Some(Instant::now() + pause);
                        pause = (pause * 2).min(Duration::from_secs(30));
                    }
                }
            }
        })
    };
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            // Without its refresh the lock would go stale under the command.
            let name = state.current.lock().expect("lock name").clone();
            let _ = backend.delete(FileKind::Lock, &name);
            return Err(Error::io("start", "the lock's refresh thread", e));
        }
    };
    HELD.lock()
        .expect("held locks")
        .push((state.clone(), backend.clone()));
    Ok(LockGuard {
        state,
        thread: Some(thread),
        backend,
    })
}

/// A lock this process holds: its [`LockGuard`]'s state and storage.
type Held = (Arc<State>, Arc<dyn Backend>);

/// The locks this process holds, for [`release_held`].
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// Removes every lock this process holds from its storage, for a process
/// about to exit on a signal without unwinding to the guards' drops: its
/// lock would block commands on other hosts until stale (30 minutes).
/// What the command was writing is left as a kill leaves it.
pub fn release_held() {
    let held = HELD.lock().map(|h| h.clone()).unwrap_or_default();
    for (state, backend) in held {
        // No refresh writes a new record after this.
        state.stop.store(true, Ordering::Relaxed);
        delete_records(&state, &*backend);
    }
}

/// Deletes the lock's record and any leftovers of its refreshes. A record
/// that cannot be deleted (the storage gone away) is said on standard
/// error, as nothing can be returned from where locks are released: left
/// without a word, it blocked other hosts' exclusive commands for half an
/// hour, and nothing told why.
fn delete_records(state: &State, backend: &dyn Backend) {
    let current = || state.current.lock().map(|n| n.clone()).unwrap_or_default();
    // A refresh under way (for [`release_held`], which does not wait for
    // it) may swap in a new record meanwhile: that one goes too.
    let mut name = current();
    loop {
        if let Err(e) = backend.delete(FileKind::Lock, &name) {
            eprintln!(
                "cairn: warning: this command's lock locks/{name} could not be removed ({}): \
                 until it is {} old, exclusive commands (prune, forget) of other hosts take \
                 it for held; `cairn unlock` removes it once the storage answers",
                crate::error::printable(&e.to_string()),
                crate::units::format_duration(stale_after())
            );
        }
        let now = current();
        if now == name {
            break;
        }
        name = now;
    }
    if let Ok(leftovers) = state.leftovers.lock() {
        for n in leftovers.iter() {
            let _ = backend.delete(FileKind::Lock, n);
        }
    }
}

/// What a [`refresh`] came to.
#[derive(Debug, PartialEq)]
enum Refresh {
    /// A fresh record replaced the old one.
    Done,
    /// Another process removed the lock: it is lost (and marked so).
    Lost,
    /// The storage did not answer: to be tried again.
    Unanswered,
}

/// Replaces the lock's record with a fresh one, unless another process
/// removed it meanwhile.
fn refresh(
    state: &State,
    backend: &dyn Backend,
    key: &MasterKey,
    exclusive: bool,
    started: DateTime<Utc>,
) -> Refresh {
    // Ours that a failed refresh may have left: best effort, each time.
    state
        .leftovers
        .lock()
        .expect("leftovers")
        .retain(|n| backend.delete(FileKind::Lock, n).is_err());
    // Stamped before the old lock is seen to exist: a write that stalls (a
    // suspend, a hung mount) must count as time without refresh, or the
    // lock could come back from a stall during which another process
    // deleted it as stale.
    let seen = Stamp::now();
    let old = state.current.lock().expect("lock name").clone();
    let unanswered = || {
        state.unanswered.store(true, Ordering::SeqCst);
        Refresh::Unanswered
    };
    // Our lock deleted by someone who judged it stale: we lost it. The
    // storage not answering says nothing: tried again later, until the
    // lock goes unrefreshed for too long.
    match backend.exists(FileKind::Lock, &old) {
        Ok(true) => {}
        Ok(false) => {
            state.lost.store(true, Ordering::SeqCst);
            return Refresh::Lost;
        }
        Err(_) => return unanswered(),
    }
    let (new, data) = seal_record(key, exclusive, started);
    if backend.write(FileKind::Lock, &new, &data).is_err() {
        // It may have landed all the same (an answer lost on the way).
        state.leftovers.lock().expect("leftovers").push(new);
        return unanswered();
    }
    // Removed between the look and the write (the process stopped there,
    // say): the new record would bring the lock back. (An unlock that
    // listed before the write and deletes after this look still misses
    // the new record: that window needs two processes' steps to interleave
    // just so, where this one needed only a pause.)
    let still = backend.exists(FileKind::Lock, &old);
    if !matches!(still, Ok(true)) {
        if backend.delete(FileKind::Lock, &new).is_err() {
            state.leftovers.lock().expect("leftovers").push(new);
        }
        if still.is_err() {
            return unanswered();
        }
        state.lost.store(true, Ordering::SeqCst);
        return Refresh::Lost;
    }
    *state.current.lock().expect("lock name") = new;
    *state.last_refresh.lock().expect("refresh time") = seen;
    state.unanswered.store(false, Ordering::SeqCst);
    // Left, the old record would hold other hosts off for half an hour
    // after this command ends: tried again with the leftovers.
    if backend.delete(FileKind::Lock, &old).is_err() {
        state.leftovers.lock().expect("leftovers").push(old);
    }
    Refresh::Done
}

const REMOVED: &str = "another process removed it (as stale, or by `cairn unlock --remove-all`)";
const STALLED: &str = "it was not refreshed in time (was the process stopped or suspended?)";
const UNANSWERED: &str = "the storage did not answer its refreshes in time";

/// How the error of a lock that was held and lost begins.
const LOST: &str = "lock lost: ";

fn lost(why: &str) -> Result<()> {
    Err(Error::Locked(format!(
        "{LOST}{why}; stopped before changing anything more"
    )))
}

/// Whether `e` says a lock this process held was lost (not that another
/// process holds one); also when the message was wrapped in another.
pub fn is_lost(e: &Error) -> bool {
    matches!(e, Error::Locked(m) if m.contains(LOST))
}

impl LockGuard {
    /// Confirms the lock is still held and could not have been judged stale
    /// by another process. Call right before committing work that relies on it.
    pub fn check(&self) -> Result<()> {
        self.check_fresh()?;
        let name = self.state.current.lock().expect("lock name").clone();
        if !self.backend.exists(FileKind::Lock, &name)? {
            // The refresh may have replaced it meanwhile: look for the new one.
            let now = self.state.current.lock().expect("lock name").clone();
            if now == name || !self.backend.exists(FileKind::Lock, &now)? {
                return lost(REMOVED);
            }
        }
        Ok(())
    }

    /// [`LockGuard::check`] without asking the storage: fails if the refresh
    /// thread found the lock removed or the lock went unrefreshed for half
    /// its stale age (suspend included). Cheap enough to call before each
    /// of many deletions.
    pub fn check_fresh(&self) -> Result<()> {
        if self.state.lost.load(Ordering::SeqCst) {
            return lost(&self.state.lost_why.lock().expect("lost reason"));
        }
        // Half the stale age: a margin for the refresh's own delays.
        if self
            .state
            .last_refresh
            .lock()
            .expect("refresh time")
            .elapsed()
            > stale_after() / 2
        {
            return lost(STALLED);
        }
        Ok(())
    }
}

/// Writes snapshot `snap`, last, after every pack and index file it needs,
/// and only while `lock` is provably held (a prune cannot have removed
/// data it refers to); returns its ID. The lock is checked again after the
/// write: a process stalled between its check and the write (suspended,
/// say) may have had its lock judged stale and that data pruned meanwhile.
/// The snapshot is then taken back (where deletion is allowed) and the
/// command fails, so the user runs it again rather than keep a broken one.
pub fn write_snapshot(lock: &LockGuard, repo: &Repository, snap: &Snapshot) -> Result<Id> {
    lock.check()?;
    let id = repo.save_snapshot(snap)?;
    confirm_written(lock, repo, &id)?;
    Ok(id)
}

/// The check of [`write_snapshot`] after snapshot `id` was written.
fn confirm_written(lock: &LockGuard, repo: &Repository, id: &Id) -> Result<()> {
    match lock.check() {
        Err(Error::Locked(why)) => match repo.backend().delete(FileKind::Snapshot, &id.to_hex()) {
            Ok(()) => Err(Error::Locked(format!(
                "{why}; snapshot {} taken back",
                id.short()
            ))),
            Err(e) => Err(Error::Locked(format!(
                "{why}; snapshot {} was written and could not be taken back ({e}): \
                 run `cairn check`, and forget it if it names missing data",
                id.short()
            ))),
        },
        // The check itself failed (the storage did not answer): the
        // snapshot is most likely fine and stays.
        r => r,
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Ok(mut held) = HELD.lock() {
            held.retain(|(s, _)| !Arc::ptr_eq(s, &self.state));
        }
        delete_records(&self.state, &*self.backend);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(boot: &str, ns: &str, machine: &str) -> ProcessSpace {
        ProcessSpace {
            boot_id: boot.into(),
            pid_namespace: ns.into(),
            machine_id: machine.into(),
            booted: Some(Utc::now() - chrono::TimeDelta::hours(1)),
        }
    }

    fn record(host: &str, pid: u32, s: &ProcessSpace) -> LockRecord {
        LockRecord {
            time: Utc::now(),
            exclusive: false,
            hostname: host.into(),
            username: String::new(),
            pid,
            boot_id: s.boot_id.clone(),
            pid_namespace: s.pid_namespace.clone(),
            machine_id: s.machine_id.clone(),
            command: String::new(),
            started: None,
        }
    }

    #[test]
    fn a_lock_from_another_pid_namespace_says_how_long_it_stands() {
        let mut here = ProcessSpace::current();
        let host = crate::host::hostname();
        assert!(!record(&host, 42, &here).describe().contains("namespace"));
        here.pid_namespace = "pid:[elsewhere]".into();
        let said = record(&host, 42, &here).describe();
        assert!(
            said.contains("in another PID namespace") && said.contains("--remove-all"),
            "{said}"
        );
    }

    #[test]
    fn a_lock_from_an_earlier_boot_of_this_machine_says_how_long_it_stands() {
        let mut here = ProcessSpace::current();
        if here.boot_id.is_empty() || here.machine_id.is_empty() {
            here.boot_id = "boot-now".into();
            here.machine_id = "machine-a".into();
        }
        let mut rec = record(&crate::host::hostname(), 42, &here);
        rec.boot_id = "boot-before".into();
        let said = rec.describe_from(&here);
        assert!(
            said.contains("from before this machine last started") && said.contains("--remove-all"),
            "{said}"
        );
        rec.machine_id = "machine-b".into();
        assert!(!rec.describe_from(&here).contains("last started"));
    }

    #[test]
    fn a_holder_is_judged_gone_only_where_its_process_id_means_something() {
        let here = space("boot-1", "pid:[1]", "machine-a");
        let none_running = |_| false;
        let all_running = |_| true;
        // Same host, boot and namespace: the process table decides.
        let same = record("h", 42, &here);
        assert!(same.holder_gone("h", &here, none_running, None));
        assert!(!same.holder_gone("h", &here, all_running, None));
        // Another host: only the lock's age can make it stale.
        assert!(!same.holder_gone("other", &here, none_running, None));
        // A container sharing the host name and kernel, in its own PID
        // namespace: its PID 42 is not ours.
        let container = record("h", 42, &space("boot-1", "pid:[2]", "machine-a"));
        assert!(!container.holder_gone("h", &here, none_running, None));
        // This machine, before its last boot: gone whatever runs now.
        let mut rebooted = record("h", 42, &space("boot-0", "pid:[1]", "machine-a"));
        rebooted.time = Utc::now() - chrono::TimeDelta::hours(2);
        assert!(rebooted.holder_gone("h", &here, all_running, None));
        // The same IDs, but refreshed since this boot began: a clone of
        // this machine runs it.
        let clone = record("h", 42, &space("boot-0", "pid:[1]", "machine-a"));
        assert!(!clone.holder_gone("h", &here, none_running, None));
        // Or last refreshed shortly before this boot began: a clone's lock
        // is refreshed only every few minutes.
        let just_booted = ProcessSpace {
            booted: Some(Utc::now() - chrono::TimeDelta::minutes(1)),
            ..space("boot-1", "pid:[1]", "machine-a")
        };
        let mut clone = record("h", 42, &space("boot-0", "pid:[1]", "machine-a"));
        clone.time = Utc::now() - chrono::TimeDelta::minutes(5);
        assert!(!clone.holder_gone("h", &just_booted, none_running, None));
        clone.time = Utc::now() - chrono::TimeDelta::hours(2);
        assert!(clone.holder_gone("h", &just_booted, none_running, None));
        // Its record dated so by a clock behind: the storage wrote it
        // since, so it is live.
        let since = |secs| Some(Duration::from_secs(secs));
        assert!(!clone.holder_gone("h", &just_booted, none_running, since(30)));
        assert!(clone.holder_gone("h", &just_booted, none_running, since(7200)));
        // Another machine that happens to share the host name.
        let twin = record("h", 42, &space("boot-9", "pid:[1]", "machine-b"));
        assert!(!twin.holder_gone("h", &here, none_running, None));
        let unknown_machine = record("h", 42, &space("boot-9", "pid:[1]", ""));
        assert!(!unknown_machine.holder_gone("h", &here, none_running, None));
        // A lock of an older cairn carries no boot: the host name decides,
        // as it did.
        let old = record("h", 42, &ProcessSpace::default());
        assert!(old.holder_gone("h", &here, none_running, None));
        assert!(!old.holder_gone("h", &here, all_running, None));
    }

    #[test]
    fn a_lock_dated_ahead_is_as_old_as_the_storage_says() {
        let mut rec = record("elsewhere", 42, &ProcessSpace::default());
        rec.time = Utc::now() + chrono::TimeDelta::hours(2);
        let stale = stale_after().as_secs();
        assert!(rec.is_old(Some(Duration::from_secs(stale + 60))));
        assert!(!rec.is_old(Some(Duration::from_secs(60))));
        // Nothing but the record's time to go by: not old.
        assert!(!rec.is_old(None));
    }

    fn local() -> (tempfile::TempDir, Arc<dyn Backend>, MasterKey) {
        let dir = tempfile::tempdir().unwrap();
        let b = crate::backend::LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        (dir, Arc::new(b), MasterKey::generate())
    }

    /// Writes a lock of another host whose record says it was refreshed
    /// `record_age` ago, with the storage's mtime `stored_age` ago.
    fn foreign_lock(
        b: &dyn Backend,
        dir: &std::path::Path,
        key: &MasterKey,
        exclusive: bool,
        (record_age, stored_age): (Duration, Duration),
    ) -> String {
        let mut rec = record("elsewhere", 1, &ProcessSpace::default());
        rec.exclusive = exclusive;
        rec.time = Utc::now() - chrono::Duration::from_std(record_age).unwrap();
        let data = seal_msgpack(key, ObjectKind::Lock, &rec);
        let name = Id::of_object(&data).to_hex();
        b.write(FileKind::Lock, &name, &data).unwrap();
        stored_ago(dir, &name, stored_age);
        name
    }

    /// Sets a lock's mtime as if the storage wrote it `age` ago.
    fn stored_ago(dir: &std::path::Path, name: &str, age: Duration) {
        let path = dir.join("repo/locks").join(name);
        let when = filetime::FileTime::from_system_time(SystemTime::now() - age);
        filetime::set_file_mtime(path, when).unwrap();
    }

    #[test]
    fn a_lock_is_stale_only_when_its_record_and_the_storage_both_say_so() {
        let (dir, b, key) = local();
        let hour = Duration::from_secs(3600);
        // The holder's clock is an hour behind ours (or ours an hour ahead),
        // but the storage wrote its lock a moment ago: it is live.
        let skewed = foreign_lock(&*b, dir.path(), &key, true, (hour, Duration::ZERO));
        let err = acquire(b.clone(), &key, false).err().expect("refused");
        assert!(matches!(err, Error::Locked(_)), "{err}");
        assert!(b.exists(FileKind::Lock, &skewed).unwrap(), "live lock kept");
        // Old on both clocks: stale. A shared locker deletes a stale
        // exclusive lock, so a holder that wakes up finds it gone.
        b.delete(FileKind::Lock, &skewed).unwrap();
        let stale = foreign_lock(&*b, dir.path(), &key, true, (hour, hour));
        let guard = acquire(b.clone(), &key, false).expect("stale lock ignored");
        assert!(
            !b.exists(FileKind::Lock, &stale).unwrap(),
            "stale lock deleted"
        );
        drop(guard);
        // A stale shared lock does not conflict with a shared locker, which
        // leaves it for an exclusive one or `unlock`.
        let shared = foreign_lock(&*b, dir.path(), &key, false, (hour, hour));
        drop(acquire(b.clone(), &key, false).unwrap());
        assert!(b.exists(FileKind::Lock, &shared).unwrap());
    }

    /// Writes bytes that do not open as a lock, with the storage's mtime
    /// `stored_age` ago.
    fn damaged_lock(b: &dyn Backend, dir: &std::path::Path, stored_age: Duration) -> String {
        let name = Id::of_object(b"not a lock").to_hex();
        b.write(FileKind::Lock, &name, b"not a lock").unwrap();
        stored_ago(dir, &name, stored_age);
        name
    }

    #[test]
    fn a_lock_that_does_not_open_counts_as_held_until_the_storage_says_it_is_old() {
        let (dir, b, key) = local();
        let hour = Duration::from_secs(3600);
        // It may be a running backup's lock, damaged: a prune must not
        // take it for none, and neither may a backup (it may be a prune's).
        let fresh = damaged_lock(&*b, dir.path(), Duration::ZERO);
        for exclusive in [true, false] {
            let err = acquire(b.clone(), &key, exclusive).err().expect("refused");
            assert!(
                matches!(&err, Error::Locked(w) if w.contains("cannot be read")),
                "{err}"
            );
        }
        // The refused lockers took their own locks back.
        assert_eq!(b.list(FileKind::Lock).unwrap().len(), 1);
        assert!(remove_locks_in(&*b, &key, false).unwrap().is_empty());
        assert!(b.exists(FileKind::Lock, &fresh).unwrap());
        // Unrefreshed for longer than a live holder allows: stale, and
        // removed by the next locker.
        b.delete(FileKind::Lock, &fresh).unwrap();
        let old = damaged_lock(&*b, dir.path(), hour);
        drop(acquire(b.clone(), &key, false).expect("stale damaged lock ignored"));
        assert!(!b.exists(FileKind::Lock, &old).unwrap());
        // `unlock` removes an old one too, `--remove-all` a fresh one.
        let old = damaged_lock(&*b, dir.path(), hour);
        assert_eq!(remove_locks_in(&*b, &key, false).unwrap().len(), 1);
        assert!(!b.exists(FileKind::Lock, &old).unwrap());
        damaged_lock(&*b, dir.path(), Duration::ZERO);
        assert_eq!(remove_locks_in(&*b, &key, true).unwrap().len(), 1);
        assert!(b.list(FileKind::Lock).unwrap().is_empty());
    }

    #[test]
    fn a_dead_lock_dated_ahead_gives_way_once_the_storage_says_it_is_old() {
        let (dir, b, key) = local();
        let mut rec = record("elsewhere", 1, &ProcessSpace::default());
        rec.exclusive = true;
        rec.time = Utc::now() + chrono::TimeDelta::hours(2);
        let data = seal_msgpack(&key, ObjectKind::Lock, &rec);
        let name = Id::of_object(&data).to_hex();
        b.write(FileKind::Lock, &name, &data).unwrap();
        // Written a moment ago by the storage's clock: live.
        let err = acquire(b.clone(), &key, false).err().expect("refused");
        assert!(matches!(err, Error::Locked(_)), "{err}");
        // Unrefreshed for an hour by it: stale, whatever its record says.
        stored_ago(dir.path(), &name, Duration::from_secs(3600));
        drop(acquire(b.clone(), &key, true).expect("a dead lock dated ahead gives way"));
        assert!(!b.exists(FileKind::Lock, &name).unwrap());
    }

    #[test]
    fn unlock_goes_by_the_storage_clock_too() {
        let (dir, b, key) = local();
        let hour = Duration::from_secs(3600);
        // Our clock an hour ahead of the holder's, which the storage saw
        // write its lock a moment ago: live, and kept.
        let live = foreign_lock(&*b, dir.path(), &key, true, (hour, Duration::ZERO));
        let stale = foreign_lock(&*b, dir.path(), &key, false, (hour, hour));
        let removed = remove_locks_in(&*b, &key, false).unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(b.exists(FileKind::Lock, &live).unwrap());
        assert!(!b.exists(FileKind::Lock, &stale).unwrap());
        // The probe lock is gone too.
        assert_eq!(b.list(FileKind::Lock).unwrap().len(), 1);
    }

    #[test]
    fn a_process_that_exists_is_running_even_where_it_may_not_be_signalled() {
        assert!(crate::host::running(std::process::id()));
        // PID 1 exists in every PID namespace; a user may not signal it.
        assert!(crate::host::running(1));
        assert!(!crate::host::running(i32::MAX as u32));
    }

    #[test]
    fn time_elapsed_counts_the_clocks_that_run_through_a_suspend() {
        let hour = Duration::from_secs(3600);
        let now = Stamp::now();
        assert!(now.elapsed() < hour);
        // As if the machine slept an hour: the monotonic clock did not see
        // it, the boot-time clock (or the wall clock) did.
        let nap = Duration::from_secs(20);
        let boot = now.boot.expect("CLOCK_BOOTTIME");
        let slept_boot = Stamp {
            boot: Some(boot.saturating_sub(nap)),
            ..now
        };
        assert!(boot < nap || slept_boot.elapsed() >= nap);
        let slept_wall = Stamp {
            wall: now.wall - hour,
            ..now
        };
        assert!(slept_wall.elapsed() >= hour);
        // A wall clock set back shortens nothing.
        let set_back = Stamp {
            wall: now.wall + hour,
            ..now
        };
        assert!(set_back.elapsed() < hour);
    }

    #[test]
    fn a_holder_that_slept_past_half_the_stale_age_fails_its_checks() {
        let (_dir, b, key) = local();
        let guard = acquire(b.clone(), &key, true).unwrap();
        guard.check().unwrap();
        let slept = Stamp {
            wall: SystemTime::now() - stale_after(),
            ..Stamp::now()
        };
        *guard.state.last_refresh.lock().unwrap() = slept;
        for r in [guard.check_fresh(), guard.check()] {
            let e = r.expect_err("lost");
            assert!(e.to_string().contains("not refreshed in time"), "{e}");
        }
    }

    #[test]
    fn a_lock_removed_while_its_refresh_is_under_way_stays_lost() {
        let (dir, b, key) = local();
        let guard = acquire(b.clone(), &key, false).unwrap();
        // `cairn unlock --remove-all` runs just before each lock is written.
        let unlocking = crate::backend::WriteHook {
            inner: crate::backend::LocalBackend::new(dir.path().join("repo")),
            write: |inner: &crate::backend::LocalBackend, kind, name: &str, data: &[u8]| {
                if kind == FileKind::Lock {
                    for l in inner.list(FileKind::Lock)? {
                        inner.delete(FileKind::Lock, &l.name)?;
                    }
                }
                inner.write(kind, name, data)
            },
        };
        assert_eq!(
            refresh(&guard.state, &unlocking, &key, false, Utc::now()),
            Refresh::Lost
        );
        assert!(
            b.list(FileKind::Lock).unwrap().is_empty(),
            "lock brought back"
        );
        let e = guard.check().expect_err("lost");
        assert!(e.to_string().contains("another process removed it"), "{e}");
        // Undisturbed, a refresh replaces the record.
        let guard = acquire(b.clone(), &key, false).unwrap();
        let before = guard.state.current.lock().unwrap().clone();
        assert_eq!(
            refresh(&guard.state, &*b, &key, false, Utc::now()),
            Refresh::Done
        );
        let listed = b.list(FileKind::Lock).unwrap();
        assert_eq!(listed.len(), 1);
        assert_ne!(listed[0].name, before);
        guard.check().unwrap();
    }

    /// A store that takes `delay` to list locks from its `slow_from`th
    /// listing on.
    struct SlowListing {
        inner: crate::backend::LocalBackend,
        listings: std::sync::atomic::AtomicUsize,
        slow_from: usize,
        delay: Duration,
    }

    impl Backend for SlowListing {
        crate::backend::forward_to_inner!(
            location,
            create,
            read,
            read_range,
            write,
            delete,
            stored_size
        );

        fn list(&self, kind: FileKind) -> Result<Vec<crate::backend::Listed>> {
            if kind == FileKind::Lock
                && self.listings.fetch_add(1, Ordering::SeqCst) >= self.slow_from
            {
                std::thread::sleep(self.delay);
            }
            self.inner.list(kind)
        }
    }

    #[test]
    fn a_new_lock_counts_its_age_from_before_its_record_was_written() {
        // The look taken after the record is written: counted from its
        // end, the holder took its lock for fresh that much longer than
        // the others, who go by the record's time, took it for held.
        let (dir, _, key) = local();
        let delay = Duration::from_millis(400);
        let slow = Arc::new(SlowListing {
            inner: crate::backend::LocalBackend::new(dir.path().join("repo")),
            listings: Default::default(),
            slow_from: 1,
            delay,
        });
        let before = SystemTime::now();
        let guard = acquire(slow, &key, true).unwrap();
        let from = guard.state.last_refresh.lock().unwrap().wall;
        let late = from.duration_since(before).unwrap_or_default();
        assert!(late < delay / 2, "counted from {late:?} after the start");
    }

    /// A store that fails to answer looks at locks, or answers writes of
    /// locks with an error after storing them (a reply lost on the way).
    struct Unanswering {
        inner: crate::backend::LocalBackend,
        looks: bool,
        writes: bool,
        deletes: bool,
    }

    impl Backend for Unanswering {
        crate::backend::forward_to_inner!(location, create, list, read, read_range);

        fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
            if self.deletes && kind == FileKind::Lock {
                return Err(Error::Backend("no answer".into()));
            }
            self.inner.delete(kind, name)
        }

        fn stored_size(&self, kind: FileKind, name: &str) -> Result<Option<u64>> {
            if self.looks && kind == FileKind::Lock {
                return Err(Error::Backend("no answer".into()));
            }
            self.inner.stored_size(kind, name)
        }

        fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
            self.inner.write(kind, name, data)?;
            if self.writes && kind == FileKind::Lock {
                return Err(Error::Backend("no answer".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn a_refresh_the_storage_does_not_answer_keeps_the_lock_and_leaves_no_record() {
        let (dir, b, key) = local();
        let guard = acquire(b.clone(), &key, false).unwrap();
        let held = guard.state.current.lock().unwrap().clone();
        let store = |looks, writes| Unanswering {
            inner: crate::backend::LocalBackend::new(dir.path().join("repo")),
            looks,
            writes,
            deletes: false,
        };
        let r = refresh(&guard.state, &store(true, false), &key, false, Utc::now());
        assert_eq!(r, Refresh::Unanswered);
        // Not taken for removed: still held, under its old record.
        guard.check().unwrap();
        // A write that landed but was not confirmed is cleared later.
        let r = refresh(&guard.state, &store(false, true), &key, false, Utc::now());
        assert_eq!(r, Refresh::Unanswered);
        assert_eq!(b.list(FileKind::Lock).unwrap().len(), 2);
        assert_eq!(*guard.state.current.lock().unwrap(), held);
        let r = refresh(&guard.state, &*b, &key, false, Utc::now());
        assert_eq!(r, Refresh::Done);
        assert_eq!(b.list(FileKind::Lock).unwrap().len(), 1);
        guard.check().unwrap();
        // A refresh whose deletion of the old record fails: the new record
        // is the lock, and the old one goes when the lock is released.
        let no_deletes = Unanswering {
            inner: crate::backend::LocalBackend::new(dir.path().join("repo")),
            looks: false,
            writes: false,
            deletes: true,
        };
        let r = refresh(&guard.state, &no_deletes, &key, false, Utc::now());
        assert_eq!(r, Refresh::Done);
        assert_eq!(b.list(FileKind::Lock).unwrap().len(), 2);
        guard.check().unwrap();
        drop(guard);
        assert!(b.list(FileKind::Lock).unwrap().is_empty());
    }

    #[test]
    fn older_lock_records_decode_and_new_fields_are_omitted_when_unknown() {
        #[derive(Serialize)]
        struct Old {
            time: DateTime<Utc>,
            exclusive: bool,
            hostname: String,
            username: String,
            pid: u32,
        }
        let old = Old {
            time: Utc::now(),
            exclusive: true,
            hostname: "h".into(),
            username: "u".into(),
            pid: 7,
        };
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        let rec: LockRecord = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!((rec.pid, rec.boot_id.as_str()), (7, ""));
        let again = rmp_serde::to_vec_named(&rec).unwrap();
        assert_eq!(again, bytes, "no empty fields are written");
        let current = ProcessSpace::current();
        assert!(!current.boot_id.is_empty() && !current.pid_namespace.is_empty());
    }
}
