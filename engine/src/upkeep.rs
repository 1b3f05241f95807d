//! Retention for long-running commands (`watch`, scheduled backups): after
//! each snapshot, forget what the policy does not keep in that snapshot's
//! group (host and paths), and prune at most every so often.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::forget::{ForgetOptions, ForgetReport, Target, forget};
use crate::prune::{NoPruneProgress, PruneOptions, PruneReport, prune};
use crate::repository::Repository;
use crate::retention::Policy;

/// What one round of upkeep did; each is reported as it happens.
pub enum UpkeepEvent<'a> {
    /// Snapshots were forgotten.
    Forgot(&'a ForgetReport),
    /// A prune ran.
    Pruned(&'a PruneReport),
    /// Forgetting (`None`) or pruning failed. A forget is tried again
    /// after the next snapshot; a prune after the next snapshot at least
    /// this long from now (a damaged repository fails each prune only
    /// after its exclusive lock kept other hosts' backups out for a whole
    /// walk of the trees).
    Failed(&'a Error, Option<Duration>),
}

/// The longest wait after a failed prune before upkeep tries again (less
/// when prunes are due more often).
pub const PRUNE_RETRY: Duration = Duration::from_secs(3600);

/// The retention of a long-running command, with its last prune.
pub struct Upkeep {
    keep: Option<Policy>,
    prune_every: Option<Duration>,
    /// When the current prune interval began: the last prune this process
    /// ran, or what the cache recorded (a prune, or the first start that
    /// waited).
    last_prune: Option<SystemTime>,
    /// With `first_prune_waits`, when this process started.
    waits_from: Option<SystemTime>,
    /// When the last prune this process tried failed, if it did.
    prune_failed: Option<SystemTime>,
}

/// The cache file holding when the prune interval of upkeep began: its
/// last prune of the repository, or the first start that waited for one.
const LAST_PRUNE: &str = "prune-interval-start";

impl Upkeep {
    /// Forgets by `keep` after each snapshot and prunes when the last prune
    /// is `prune_every` old: the last one this command, or an earlier run
    /// of one, recorded in the repository's cache. Wall-clock time: a
    /// watch restarted more often than `prune_every` (a laptop, a daily
    /// service restart) never pruned when each start began the interval
    /// anew, nor did one asleep for most of it. With none recorded, the
    /// first prune comes after the first snapshot, or, with
    /// `first_prune_waits`, once `prune_every` has passed from now.
    pub fn new(
        keep: Option<Policy>,
        prune_every: Option<Duration>,
        first_prune_waits: bool,
    ) -> Upkeep {
        Upkeep {
            keep,
            prune_every,
            last_prune: None,
            waits_from: first_prune_waits.then(SystemTime::now),
            prune_failed: None,
        }
    }

    /// Whether a prune is due by `every`, as of now.
    fn prune_due(&mut self, repo: &Repository, every: Duration) -> bool {
        if self.last_prune.is_none() {
            self.last_prune = recorded_prune(repo);
            // The interval starts with the first start that waits, not
            // with each (which never pruned a watch restarted daily).
            if self.last_prune.is_none()
                && let Some(start) = self.waits_from
            {
                record_prune(repo, start);
                self.last_prune = Some(start);
            }
        }
        if let Some(failed) = self.prune_failed
            && SystemTime::now()
                .duration_since(failed)
                .is_ok_and(|d| d < retry_after(every))
        {
            return false;
        }
        let Some(since) = self.last_prune else {
            return true;
        };
        match SystemTime::now().duration_since(since) {
            Ok(age) => age >= every,
            // The clock was set back: due once it is back past the
            // record, or at once if the record is more than an interval
            // ahead (a clock that was wrong then).
            Err(e) => e.duration() > every,
        }
    }

    /// Runs after a snapshot of `hostname`, `paths` and `tags` was written, unless
    /// `stop` is set: a stopping process must not start a forget or a prune
    /// (a prune cannot be stopped, and `systemctl stop` kills what takes
    /// longer than it waits, its lock left behind). The next snapshot
    /// catches up.
    pub fn after_snapshot(
        &mut self,
        repo: &Repository,
        hostname: &str,
        paths: &[String],
        tags: &[String],
        stop: &AtomicBool,
        event: &mut dyn FnMut(UpkeepEvent),
    ) {
        let stopping = || stop.load(Ordering::SeqCst);
        if let Some(policy) = &self.keep
            && !stopping()
        {
            let opts = ForgetOptions {
                target: Target::Group {
                    policy: policy.clone(),
                    hostname: hostname.to_string(),
                    paths: paths.to_vec(),
                    tags: tags.to_vec(),
                },
                filter: Default::default(),
                dry_run: false,
                no_lock: false,
            };
            match repo.without_lock_wait(|| forget(repo, &opts)) {
                Ok(r) if !r.removed.is_empty() => event(UpkeepEvent::Forgot(&r)),
                Ok(_) => {}
                Err(e) => event(UpkeepEvent::Failed(&e, None)),
            }
        }
        if let Some(every) = self.prune_every
            && self.prune_due(repo, every)
            && !stopping()
        {
            match repo.without_lock_wait(|| prune(repo, &PruneOptions::default(), &NoPruneProgress))
            {
                Ok(r) => {
                    let now = SystemTime::now();
                    self.last_prune = Some(now);
                    self.prune_failed = None;
                    record_prune(repo, now);
                    event(UpkeepEvent::Pruned(&r));
                }
                Err(e) => {
                    self.prune_failed = Some(SystemTime::now());
                    event(UpkeepEvent::Failed(&e, Some(retry_after(every))));
                }
            }
        }
    }
}

/// How long after a failed prune the next is tried, for prunes due
/// `every`: [`PRUNE_RETRY`], or `every` if shorter.
fn retry_after(every: Duration) -> Duration {
    every.min(PRUNE_RETRY)
}

/// When a failed forget or prune is tried again, as words for a warning
/// (`retry` as [`UpkeepEvent::Failed`] gives it; `after` names what upkeep
/// follows: a snapshot, a run).
pub fn when_retried(retry: Option<Duration>, after: &str) -> String {
    match retry {
        None => format!("tried again after the next {after}"),
        Some(d) => format!(
            "the prune is tried again after the next {after} {} or more from now",
            crate::units::format_duration(d)
        ),
    }
}

/// When upkeep's prune interval for `repo` began, as its cache recorded it
/// (seconds since the epoch); `None` without a cache or a record.
fn recorded_prune(repo: &Repository) -> Option<SystemTime> {
    let text = std::fs::read_to_string(repo.cache_dir()?.join(LAST_PRUNE)).ok()?;
    let secs: u64 = text.trim().parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Records `at` as the start of upkeep's prune interval for `repo` (best
/// effort: without it the next start waits a whole interval again).
fn record_prune(repo: &Repository, at: SystemTime) {
    let Some(dir) = repo.cache_dir() else {
        return;
    };
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::cachedir::write_aside(&dir.join(LAST_PRUNE), format!("{secs}\n").as_bytes());
}
