//! Watch mode: continuous snapshots of paths as they change.
//!
//! The first snapshot is a normal backup (with the newest snapshot of the
//! same host and paths as parent, so a restart reads only what changed
//! while watch was not running). From then on inotify reports which paths
//! change; once changes settle for the debounce time (or at the latest
//! `max_delay` after the first of them) an incremental backup re-examines
//! only those paths and reuses the rest of the previous snapshot's tree by
//! ID (see [`crate::archiver::ChangedPaths`]).
//!
//! Whenever events may have been lost (queue overflow, a directory that
//! could not be watched, a watcher error, a failed snapshot, or the
//! previous snapshot removed by forget) the next snapshot is a full rescan
//! with change detection, and the reason is reported; a periodic rescan
//! catches anything inotify cannot see (for example changes made on
//! another host of a network filesystem).
//!
//! The repository lock is held only while a snapshot is written, so other
//! commands (prune and forget included) can run in between.

mod fswatch;
mod mounts;
mod pending;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::archiver::{
    BackupOptions, BackupProgress, BackupResult, FollowUp, backup_locked, path_strings,
    source_paths,
};
use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::exclude::Filter;
use crate::id::Id;
use crate::own_paths::{own_paths, spellings};
use crate::prune::PruneReport;
use crate::repository::Repository;
use crate::retention::Policy;
use crate::snapshot::{Snapshot, Summary};
use crate::upkeep::{Upkeep, UpkeepEvent};

use fswatch::{FsWatcher, Interest, Signal};
use pending::Pending;

/// How often the loop wakes up when nothing happens, to notice a stop
/// request (cheap: one timed-out channel receive).
const TICK: Duration = Duration::from_millis(250);
/// The longest wait between attempts after failed snapshots.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Paths, exclusions, tags and host, as for a backup (`stdin`, `time`,
    /// `force` and `parent` are not accepted).
    pub backup: BackupOptions,
    /// Quiet time after the last change before a snapshot is taken.
    pub debounce: Duration,
    /// Longest time from a change to its snapshot during a steady stream.
    pub max_delay: Duration,
    /// Interval of the full safety rescan.
    pub rescan_every: Duration,
    /// Retention applied to this host's and paths' snapshots after each
    /// snapshot (never to other groups).
    pub keep: Option<Policy>,
    /// Prune at most this often (after a snapshot); never if `None`.
    pub prune_every: Option<Duration>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            backup: BackupOptions::default(),
            debounce: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            rescan_every: Duration::from_secs(3600),
            keep: None,
            prune_every: None,
        }
    }
}

/// One snapshot written by watch.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    /// Its ID.
    pub snapshot_id: Id,
    /// Its parent.
    pub parent: Option<Id>,
    /// Distinct changed paths it was told about (for a full rescan, those
    /// seen before it started).
    pub changed_paths: usize,
    /// It was a full rescan rather than an incremental snapshot.
    pub full_rescan: bool,
    /// Time spent writing it.
    pub duration: Duration,
    /// Time from the first change it holds being seen to its commit
    /// (`None` when no event led to it: the first snapshot, a timed rescan).
    pub lag: Option<Duration>,
    /// Some entries could not be read.
    pub partial: bool,
    /// The snapshot's summary (totals over the whole tree).
    pub summary: Summary,
}

/// What happens while watching, in order.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// The watcher is set up (before the first snapshot); `problem` says
    /// why watching is incomplete, if it is.
    Watching {
        /// The sources, absolute.
        paths: Vec<PathBuf>,
        /// Why some changes may go unseen between full rescans.
        problem: Option<String>,
    },
    /// A full rescan starts.
    Rescan {
        /// Why.
        reason: String,
    },
    /// A snapshot was written.
    Snapshot(SnapshotReport),
    /// Changes were seen but the tree came out identical: nothing written.
    Unchanged {
        /// Distinct changed paths.
        changed_paths: usize,
        /// It was a full rescan.
        full_rescan: bool,
        /// Time spent.
        duration: Duration,
    },
    /// A source entry could not be read (`is_error`) or something
    /// noteworthy happened.
    Warning {
        /// The entry, if the warning is about one.
        path: Option<PathBuf>,
        /// What happened.
        message: String,
        /// The snapshot is partial because of it.
        is_error: bool,
    },
    /// A snapshot failed; it is tried again after `retry_in` (as a full
    /// rescan, unless the repository was only locked).
    Failed {
        /// The error.
        message: String,
        /// When the next attempt is made.
        retry_in: Duration,
        /// For a repository locked by another process (a prune, a tag):
        /// how long the lock has kept snapshots out, since the first
        /// attempt it refused.
        locked_for: Option<Duration>,
        /// Whether to alert on it (`--on-failure`): every failure but a
        /// lock held for less than [`LOCKED_ALERT_AFTER`], which a routine
        /// prune holds for minutes.
        alert: bool,
    },
    /// Retention removed these snapshots.
    Forgot {
        /// Snapshot records removed.
        removed: Vec<Id>,
    },
    /// Prune ran.
    Pruned(PruneReport),
    /// Watch is stopping.
    Stopped {
        /// Changed paths not yet in a snapshot (the next start picks them up).
        pending: usize,
        /// A full rescan in flight was abandoned.
        abandoned: bool,
    },
}

/// Receives watch events (from the watching thread and backup workers).
pub trait WatchObserver: Sync {
    /// Called for every event.
    fn event(&self, event: &WatchEvent);
}

/// How long another process's lock may keep snapshots out before a failed
/// attempt is an alert ([`WatchEvent::Failed`]'s `alert`): as long as a lock
/// may go unrefreshed before it counts as stale. A prune holds its lock for
/// minutes as a matter of course; each retry called the failure hook.
pub const LOCKED_ALERT_AFTER: Duration = Duration::from_secs(30 * 60);

/// Watches `opts.backup.paths` and writes snapshots as they change, until
/// `stop` becomes true. A snapshot in flight when `stop` is set is finished
/// if it is incremental and ends within [`INCREMENTAL_STOP_GRACE`], else
/// abandoned (nothing committed), as a full rescan is at once. Fails only
/// on bad options, or if the first snapshot fails for any reason but a
/// lock held by another process; later failures are reported as
/// [`WatchEvent::Failed`] and retried.
pub fn watch(
    repo: &Repository,
    opts: &WatchOptions,
    observer: &dyn WatchObserver,
    stop: &AtomicBool,
) -> Result<()> {
    let b = &opts.backup;
    if b.stdin.is_some() || b.time.is_some() || b.force || b.parent.is_some() {
        return Err(Error::InvalidInput(
            "watch takes paths only: no stream, time, force or parent".into(),
        ));
    }
    if opts.debounce.is_zero() || opts.max_delay < opts.debounce {
        return Err(Error::InvalidInput(
            "the debounce time must be positive and the maximum delay at least as long".into(),
        ));
    }
    if opts.rescan_every.is_zero() {
        return Err(Error::InvalidInput(
            "the rescan interval must be positive".into(),
        ));
    }
    if opts.keep.as_ref().is_some_and(Policy::is_empty) {
        return Err(Error::InvalidInput(
            "the retention policy keeps nothing: give at least one --keep-* option".into(),
        ));
    }
    let paths = source_paths(&b.paths)?;
    let interest = Arc::new(interest(repo, opts, &paths)?);
    // Nor are they backed up: inside a watched tree, each rescan stored the
    // packs the one before had written (and the cache's changed index).
    // Not as patterns: a user's `!` pattern after them took them back.
    let mut owned = opts.clone();
    owned
        .backup
        .exclude
        .always
        .extend(interest.ignored.iter().cloned());
    let opts = &owned;
    let (fs, problem) = FsWatcher::start(interest.clone());
    observer.event(&WatchEvent::Watching {
        paths: paths.clone(),
        problem: problem.clone(),
    });
    let now = Instant::now();
    let mut w = Watcher {
        repo,
        opts,
        observer,
        stop,
        hostname: b.host.clone().unwrap_or_else(crate::host::hostname),
        path_strings: path_strings(&paths),
        interest,
        fs,
        degraded: problem.is_some(),
        restart_watcher: false,
        walked: HashMap::new(),
        base: None,
        unread: Vec::new(),
        flagged: false,
        pending: Pending {
            rescan: Some("first snapshot".into()),
            ..Pending::default()
        },
        next_rescan: now + opts.rescan_every,
        upkeep: Upkeep::new(opts.keep.clone(), opts.prune_every, true),
        retry_at: None,
        files_gone: Vec::new(),
        backoff: Duration::from_secs(1),
        locked_since: None,
    };
    w.run()
}

/// The regular file that this process's descriptor `fd` writes to, if it
/// is one.
fn output_file(fd: i32) -> Option<PathBuf> {
    let link = format!("/proc/self/fd/{fd}");
    // The link leads to the open file itself, even one renamed since.
    if !std::fs::metadata(&link).is_ok_and(|m| m.is_file()) {
        return None;
    }
    std::fs::read_link(&link).ok().filter(|p| p.is_absolute())
}

/// What the watcher reports on: the sources, minus excluded paths, the
/// repository's own directories and the files its output goes to.
fn interest(repo: &Repository, opts: &WatchOptions, paths: &[PathBuf]) -> Result<Interest> {
    let (dirs, files) = fswatch::classify(paths.iter().cloned());
    let mut ignored = own_paths(repo, paths);
    // Its own output, in a log in the tree (`cairn watch ~ >> ~/watch.log`,
    // `nohup` writing ./nohup.out): each line about a snapshot was a
    // change that made another, one a second for good.
    for fd in [1, 2] {
        if let Some(file) = output_file(fd) {
            ignored.extend(spellings(&file, paths));
        }
    }
    ignored.sort();
    ignored.dedup();
    // By device and inode too: the repository reached through a bind mount
    // of the watched tree ran a backup for each lock it wrote, for ever.
    let mut exclude = opts.backup.exclude.clone();
    exclude.always_ids = crate::own_paths::own_ids(repo);
    exclude.cairn_mounts = crate::own_paths::mounts();
    let filter = Filter::new(&exclude)?.for_sources(dirs.iter().chain(&files).cloned());
    Ok(Interest {
        dirs,
        files,
        ignored,
        filter,
        sqlite_aware: opts.backup.sqlite_aware,
    })
}

struct Watcher<'a> {
    repo: &'a Repository,
    opts: &'a WatchOptions,
    observer: &'a dyn WatchObserver,
    stop: &'a AtomicBool,
    hostname: String,
    path_strings: Vec<String>,
    interest: Arc<Interest>,
    fs: FsWatcher,
    /// Some directories are not watched: every snapshot is a full rescan.
    degraded: bool,
    /// Events were lost: set up the watcher afresh before the next rescan
    /// (a lost event may have been a new directory that never got a watch).
    restart_watcher: bool,
    /// Directories that appeared and were watched again (`watch_new`)
    /// since the last snapshot, with when: one that appeared below them
    /// before that is watched already.
    walked: HashMap<PathBuf, Instant>,
    /// The last snapshot written (the next one's parent).
    base: Option<(Id, Snapshot)>,
    /// The entries the last snapshot could not read: read again by the
    /// next, which is partial too while they stay unreadable (a snapshot
    /// built on a partial one lacks them as well).
    unread: Vec<PathBuf>,
    /// Entries stored with errors since the last full rescan: carried over
    /// unread (reading them again can be costly, a locked database), so
    /// every snapshot until that rescan is partial.
    flagged: bool,
    pending: Pending,
    next_rescan: Instant,
    upkeep: Upkeep,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// When a lock held by another process first kept a snapshot out,
    /// while it still does.
    locked_since: Option<Instant>,
    /// File sources that were gone when the last attempt failed: one
    /// coming back need not wait out the backoff (any other rewrite of
    /// one, an editor's save, must: the store may be what fails).
    files_gone: Vec<PathBuf>,
}

impl Watcher<'_> {
    fn run(&mut self) -> Result<()> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                self.observer.event(&WatchEvent::Stopped {
                    pending: self.pending.changes.len(),
                    abandoned: false,
                });
                return Ok(());
            }
            let now = Instant::now();
            if now >= self.next_rescan && self.pending.rescan.is_none() {
                self.pending.rescan = Some(if self.degraded {
                    "periodic rescan (watching is incomplete)".into()
                } else {
                    "periodic safety rescan".into()
                });
            }
            let due = self
                .pending
                .due_at(now, self.opts.debounce, self.opts.max_delay)
                .map(|t| self.retry_at.map_or(t, |r| t.max(r)));
            if due.is_some_and(|t| now >= t) {
                let batch = self.pending.take();
                if !self.snapshot(batch)? {
                    return Ok(());
                }
                continue;
            }
            // A rescan already pending waits for its debounce or retry: the
            // periodic one, past due meanwhile, must not wake the loop (it
            // spun a CPU for the whole of a failing store's backoff).
            let rescan_at = Some(self.next_rescan).filter(|_| self.pending.rescan.is_none());
            let wake = [due, rescan_at]
                .into_iter()
                .flatten()
                .fold(now + TICK, Instant::min);
            match self.fs.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok((at, signal)) => {
                    let at = self.fs.last_seen(at, &signal);
                    self.add(at, signal);
                    // Everything queued meanwhile (during a snapshot) joins
                    // this batch: taken one by one, each was already past
                    // its debounce and made a snapshot of its own.
                    // Only what had come by now: a steady stream must not
                    // keep the loop here, past max_delay and a stop.
                    let now = Instant::now();
                    while let Ok((at, signal)) = self.fs.rx.try_recv() {
                        let at = self.fs.last_seen(at, &signal);
                        self.add(at, signal);
                        if at > now {
                            break;
                        }
                    }
                    if self.fs.overflowed() {
                        self.add(
                            now,
                            Signal::Lost {
                                reason: "more changes came while busy than watch queues".into(),
                                limit: false,
                                source_back: false,
                            },
                        );
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(TICK),
            }
        }
    }

    /// Adds one signal seen at `at` to the pending changes.
    fn add(&mut self, at: Instant, signal: Signal) {
        // A source that was gone failed the snapshots since, each retry
        // waiting longer: now it is back, the next need not wait.
        let file_source_back = matches!(&signal, Signal::Replaced(p, _)
            if self.files_gone.contains(p) && std::fs::symlink_metadata(p).is_ok());
        if file_source_back
            || matches!(
                &signal,
                Signal::Lost {
                    source_back: true,
                    ..
                }
            )
        {
            self.retry_at = None;
        }
        // Unless a full rescan comes, which sets up every watch afresh.
        if let Signal::Replaced(p, _) = &signal
            && self.pending.rescan.is_none()
            && !p
                .ancestors()
                .any(|a| self.walked.get(a).is_some_and(|t| *t >= at))
            && std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
        {
            let now = Instant::now();
            let lost = self.fs.watch_new(p);
            // Only a saving: bounded, as the pending paths are.
            if self.walked.len() >= 1 << 16 {
                self.walked.clear();
            }
            self.walked.insert(p.clone(), now);
            if let Some(lost) = lost {
                self.add(at, lost);
            }
        }
        if self.pending.add(at, signal) {
            self.degraded = true;
        }
        if self.pending.rescan.is_some() {
            self.restart_watcher = true;
        }
    }

    /// Writes one snapshot of `batch`; false if watch must stop (a stop
    /// request abandoned a full rescan).
    fn snapshot(&mut self, mut batch: Pending) -> Result<bool> {
        self.walked.clear();
        let changed_paths = batch.changes.len();
        for p in &self.unread {
            batch.changes.changed(p);
        }
        if batch.rescan.is_none() && self.degraded {
            // Kept with the batch: the restart below may end the degraded
            // state, and a retry after a lock held elsewhere must still be
            // the full rescan (changes in the unwatched directories were
            // missed until the hourly one).
            batch.rescan = Some("watching is incomplete".into());
        }
        let reason = batch.rescan.clone();
        let first = self.base.is_none();
        // The first snapshot follows the watcher's start: no restart unless
        // events were lost since.
        if reason.is_some() && (!first || self.restart_watcher) {
            // Set up afresh before scanning (a lost event may have been a new
            // directory, or a source replaced, that has no watch), so nothing
            // changed during the scan goes unseen; watches that could not be
            // added are retried. Costs a walk of the directories, as the
            // rescan does anyway.
            // The old watches go first: near the watch limit, the new
            // watcher would otherwise get only what the old one left over.
            // What changes in between is seen by the rescan that follows.
            self.fs.stop();
            // A source may have changed kind (a file is now a directory).
            self.interest = Arc::new(self.interest.reclassified());
            let (fs, problem) = FsWatcher::start(self.interest.clone());
            self.fs = fs;
            self.restart_watcher = false;
            self.degraded = problem.is_some();
            if let Some(p) = problem {
                self.warn(p);
            }
        }
        let started = Instant::now();
        let seen = Mutex::new(Seen::default());
        let written = self.write(&batch, reason.as_deref(), &seen);
        if let Ok((_, full)) = &written {
            let seen = seen.into_inner().expect("seen");
            let unread: std::collections::HashSet<&PathBuf> = seen.unread.iter().collect();
            let stored_with_error = seen.errors.iter().any(|p| !unread.contains(p));
            self.flagged = (self.flagged && !full) || stored_with_error;
            self.unread = seen.unread;
        }
        match written {
            Ok((Some(r), full)) => {
                if full {
                    self.next_rescan = Instant::now() + self.opts.rescan_every;
                }
                let report = SnapshotReport {
                    snapshot_id: r.snapshot_id,
                    parent: r.snapshot.parent,
                    changed_paths,
                    full_rescan: full,
                    duration: started.elapsed(),
                    lag: batch.first.map(|f| f.elapsed()),
                    partial: r.snapshot.partial,
                    summary: r.summary.clone(),
                };
                self.base = Some((r.snapshot_id, r.snapshot));
                self.observer.event(&WatchEvent::Snapshot(report));
                // One audit record per snapshot, not one per session.
                if let Err(e) = self.repo.flush_audit() {
                    self.warn(format!("the audit record was not written: {e}"));
                }
                self.recovered();
                self.retention();
                // Retention's changes get their own record now, not with
                // the next snapshot (which may be days away).
                if let Err(e) = self.repo.flush_audit() {
                    self.warn(format!("the audit record was not written: {e}"));
                }
            }
            Ok((None, full)) => {
                if full {
                    self.next_rescan = Instant::now() + self.opts.rescan_every;
                }
                self.observer.event(&WatchEvent::Unchanged {
                    changed_paths,
                    full_rescan: full,
                    duration: started.elapsed(),
                });
                self.recovered();
            }
            Err(Error::Interrupted) => {
                self.observer.event(&WatchEvent::Stopped {
                    pending: batch.changes.len() + self.pending.changes.len(),
                    abandoned: true,
                });
                return Ok(false);
            }
            Err(e) => {
                let locked = matches!(e, Error::Locked(_));
                if first && !locked {
                    return Err(e);
                }
                // Only a lock another process holds waits before it is an
                // alert: one of ours that was lost is told at once.
                let locked_for = if locked && !crate::lock::is_lost(&e) {
                    Some(self.locked_since.get_or_insert_with(Instant::now).elapsed())
                } else {
                    self.locked_since = None;
                    None
                };
                // Looked at before the failure is told: a file source
                // written again by whoever heard of it (a hook, a test)
                // before this look was not taken for gone, and its return
                // waited out the whole retry delay.
                self.files_gone = (self.interest.files.iter())
                    .filter(|f| std::fs::symlink_metadata(f).is_err())
                    .cloned()
                    .collect();
                self.observer.event(&WatchEvent::Failed {
                    message: e.to_string(),
                    retry_in: self.backoff,
                    locked_for,
                    alert: locked_for.is_none_or(|d| d >= LOCKED_ALERT_AFTER),
                });
                let mut again = batch;
                again.absorb(self.pending.take());
                if !locked {
                    // What was stored or seen is uncertain: look at everything.
                    again.rescan = Some(format!("retrying after an error: {e}"));
                }
                self.pending = again;
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
        Ok(true)
    }

    fn recovered(&mut self) {
        self.retry_at = None;
        self.locked_since = None;
        self.backoff = Duration::from_secs(1);
    }

    /// Takes the lock, writes the snapshot (`None`: nothing changed, none
    /// written) and releases the lock; the bool says whether it was a full
    /// rescan.
    fn write(
        &self,
        batch: &Pending,
        reason: Option<&str>,
        seen: &Mutex<Seen>,
    ) -> Result<(Option<BackupResult>, bool)> {
        let lock = self.repo.lock(false)?;
        // Others may have written or pruned since our last snapshot; with
        // the lock held, no prune can start until we are done.
        self.repo.refresh_index()?;
        let mut reason = reason.map(str::to_string);
        let base = match &self.base {
            Some(b) => {
                let live = self.live_base(b)?;
                if live.is_none() && reason.is_none() {
                    reason = Some(
                        "the previous snapshot was removed (forget or prune): rescanning".into(),
                    );
                }
                live
            }
            None => None,
        };
        let full = reason.is_some();
        if let Some(r) = &reason {
            self.observer
                .event(&WatchEvent::Rescan { reason: r.clone() });
        }
        let progress = Forward {
            observer: self.observer,
            stop: self.stop,
            full,
            stop_seen: Mutex::new(None),
            seen,
        };
        let follow = FollowUp {
            base: base.as_ref().map(|(id, s)| (*id, s)),
            changes: (!full).then_some(&batch.changes),
            // The first snapshot is always written: it marks the start.
            skip_unchanged: self.base.is_some(),
            // A rescan of an idle tree under a busy directory is idle.
            sources_only: true,
            partial: self.flagged && !full,
        };
        let r = backup_locked(self.repo, &self.opts.backup, &lock, &follow, &progress)?;
        // Released before the snapshot is announced: a hook run on it may
        // use the repository (and retention locks itself).
        drop(lock);
        // A new hard link turns an incremental snapshot into a full walk.
        let full = full || r.as_ref().is_some_and(|r| r.walked_all);
        Ok((r, full))
    }

    /// The previous snapshot if it (or a rewrite of it with the same tree,
    /// as `hold` makes) still exists; only then is its tree safe to build
    /// on, since prune keeps what a snapshot references.
    fn live_base(&self, (id, snap): &(Id, Snapshot)) -> Result<Option<(Id, Snapshot)>> {
        if self
            .repo
            .backend()
            .exists(FileKind::Snapshot, &id.to_hex())?
        {
            return Ok(Some((*id, snap.clone())));
        }
        Ok(self
            .repo
            .snapshots_lenient()?
            .0
            .into_iter()
            .rfind(|(_, s)| {
                s.tree == snap.tree && s.hostname == snap.hostname && s.paths == snap.paths
            }))
    }

    /// Forget (and prune, when due) after a snapshot; failures are reported
    /// and tried again after the next snapshot.
    fn retention(&mut self) {
        let (observer, repo) = (self.observer, self.repo);
        self.upkeep.after_snapshot(
            repo,
            &self.hostname,
            &self.path_strings,
            &self.opts.backup.tags,
            self.stop,
            &mut |e| {
                observer.event(&match e {
                    UpkeepEvent::Forgot(r) => WatchEvent::Forgot {
                        removed: r.removed.clone(),
                    },
                    UpkeepEvent::Pruned(r) => WatchEvent::Pruned(r.clone()),
                    UpkeepEvent::Failed(e, retry) => WatchEvent::Warning {
                        path: None,
                        message: format!(
                            "retention failed ({}): {e}",
                            crate::upkeep::when_retried(retry, "snapshot")
                        ),
                        is_error: false,
                    },
                })
            },
        );
    }

    fn warn(&self, message: String) {
        self.observer.event(&WatchEvent::Warning {
            path: None,
            message,
            is_error: false,
        });
    }
}

/// How long an incremental snapshot in flight at a stop request may go on
/// to finish: most take well under a second, but one reading a big changed
/// file, or waiting for a locked database, held `systemctl stop` up until
/// its kill and left the lock.
const INCREMENTAL_STOP_GRACE: Duration = Duration::from_secs(10);

/// Passes backup warnings on as events, and stops a snapshot on request: a
/// full rescan at once, an incremental one after [`INCREMENTAL_STOP_GRACE`].
struct Forward<'a> {
    observer: &'a dyn WatchObserver,
    stop: &'a AtomicBool,
    full: bool,
    /// When the stop request was first seen.
    stop_seen: Mutex<Option<Instant>>,
    /// The errors' paths, and the entries left out.
    seen: &'a Mutex<Seen>,
}

/// What one snapshot's errors were about.
#[derive(Default)]
struct Seen {
    /// The paths of the errors.
    errors: Vec<PathBuf>,
    /// The entries left out because they could not be read.
    unread: Vec<PathBuf>,
}

impl BackupProgress for Forward<'_> {
    fn read_again(&self, path: &std::path::Path) {
        self.seen
            .lock()
            .expect("seen")
            .unread
            .push(path.to_path_buf());
    }

    fn warning(&self, path: &std::path::Path, message: &str, is_error: bool) {
        if is_error {
            self.seen
                .lock()
                .expect("seen")
                .errors
                .push(path.to_path_buf());
        }
        self.observer.event(&WatchEvent::Warning {
            path: Some(path.to_path_buf()),
            message: message.to_string(),
            is_error,
        });
    }

    fn cancelled(&self) -> bool {
        if !self.stop.load(Ordering::SeqCst) {
            return false;
        }
        if self.full {
            return true;
        }
        let mut seen = self.stop_seen.lock().expect("stop seen");
        seen.get_or_insert_with(Instant::now).elapsed() >= INCREMENTAL_STOP_GRACE
    }
}
