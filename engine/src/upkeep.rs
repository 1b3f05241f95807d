//! Retention for long-running commands (`watch`, scheduled backups): after
//! each snapshot, forget what the policy does not keep in that snapshot's
//! group (host and paths), and prune at most every so often.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// Forgetting or pruning failed; it is tried again after the next snapshot.
    Failed(&'a Error),
}

/// The retention of a long-running command, with its last prune.
pub struct Upkeep {
    keep: Option<Policy>,
    prune_every: Option<Duration>,
    last_prune: Option<Instant>,
}

impl Upkeep {
    /// Forgets by `keep` after each snapshot and prunes when the last prune
    /// is `prune_every` old. The first prune comes after the first
    /// snapshot, or, with `first_prune_waits`, once `prune_every` has passed
    /// from now (a watch starting often should not prune at every start).
    pub fn new(
        keep: Option<Policy>,
        prune_every: Option<Duration>,
        first_prune_waits: bool,
    ) -> Upkeep {
        Upkeep {
            keep,
            prune_every,
            last_prune: first_prune_waits.then(Instant::now),
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
                Err(e) => event(UpkeepEvent::Failed(&e)),
            }
        }
        if let Some(every) = self.prune_every
            && self.last_prune.is_none_or(|t| t.elapsed() >= every)
            && !stopping()
        {
            match repo.without_lock_wait(|| prune(repo, &PruneOptions::default(), &NoPruneProgress))
            {
                Ok(r) => {
                    self.last_prune = Some(Instant::now());
                    event(UpkeepEvent::Pruned(&r));
                }
                Err(e) => event(UpkeepEvent::Failed(&e)),
            }
        }
    }
}
