//! `forget`: removing snapshot records, by policy or by ID.
//!
//! Only snapshot objects are deleted; the data they alone referenced stays
//! until prune removes it. Snapshots under legal hold are never removed.

use std::collections::HashMap;

use chrono::{Local, Utc};

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::hold::refuse_held;
use crate::id::Id;
use crate::lineage::{Logical, deletable_with, logical_snapshots};
use crate::repository::Repository;
use crate::retention::{self, Candidate, Decision, GroupBy, GroupKey, GroupPlan, Policy};
use crate::snapshot::{Snapshot, SnapshotFilter};

/// What to remove.
#[derive(Debug, Clone)]
pub enum Target {
    /// Whatever `policy` does not keep, group by group.
    Policy {
        /// The `--keep-*` options.
        policy: Policy,
        /// How snapshots are grouped before the policy is applied.
        group_by: GroupBy,
    },
    /// These snapshots (IDs, unique prefixes or `latest`).
    Ids(Vec<String>),
    /// Whatever `policy` does not keep among the snapshots of one host,
    /// set of paths and set of tags, leaving every other group alone (what
    /// `watch` and a schedule apply to their own snapshots).
    Group {
        /// The `--keep-*` options.
        policy: Policy,
        /// The host name of the group.
        hostname: String,
        /// The backed-up paths of the group, in any order.
        paths: Vec<String>,
        /// The tags of the group, in any order ([`crate::snapshot::MARKER_TAGS`]
        /// aside): a schedule's retention removed the snapshots of the same
        /// paths taken by hand (`--tag pre-upgrade`) or by another schedule
        /// with other tags (a stream without a file name is `/stdin`).
        tags: Vec<String>,
    },
}

/// Options of [`forget`].
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    /// What to remove.
    pub target: Target,
    /// With [`Target::Policy`]: only snapshots this filter accepts are
    /// considered; the others are kept without being looked at.
    pub filter: SnapshotFilter,
    /// Decide and report, but delete nothing.
    pub dry_run: bool,
    /// With `dry_run`, take no lock (to preview a read-only repository; a
    /// change made meanwhile elsewhere can make the report stale). A run
    /// that changes the repository locks whatever this says.
    pub no_lock: bool,
}

/// What [`forget`] decided and did.
#[derive(Debug, Clone)]
pub struct ForgetReport {
    /// Per group, the snapshots kept (with reasons) and removed. Removal by
    /// ID gives one group, keyed by nothing, with an empty keep list.
    pub groups: Vec<GroupPlan>,
    /// Snapshot records deleted (or, in a dry run, that would be): each
    /// removed snapshot's records of the same content and damaged ones; an
    /// intact record of other content (the one an interrupted rewrite left)
    /// stays, see [`crate::lineage::deletable_with`].
    pub removed: Vec<Id>,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Of `removed`, the records named by ID that could not be read
    /// (damaged): they are in no group.
    pub damaged: Vec<Id>,
}

/// Removes snapshots under an exclusive lock (a dry run takes a shared one:
/// it only reads).
///
/// With [`Target::Ids`], every ID is resolved and checked first: if one is
/// unknown or under legal hold, the call fails naming it and nothing is
/// removed. With [`Target::Policy`], calendar buckets use each snapshot's
/// recorded UTC offset and `--keep-within` the local time zone; see
/// [`retention::plan`] for the rules and the refusals.
pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    let lock = repo.lock_unless(opts.dry_run && opts.no_lock, !opts.dry_run)?;
    if !opts.dry_run {
        repo.ensure_may_delete("`forget`")?;
    }
    // Named by ID, a record too damaged to read can go (else prune refused
    // for good); a policy cannot judge it, so it needs every record.
    let (all, damaged) = match &opts.target {
        Target::Ids(specs) => readable_and_damaged(repo, specs)?,
        _ => (repo.snapshots().map_err(unjudged)?, Vec::new()),
    };
    // `latest` of --host, --path or --tag is chosen here, under the lock:
    // chosen before it (the command line did, ahead of a wait for a
    // running backup's lock), it named the snapshot newest before the wait.
    let narrowed;
    let specs = match &opts.target {
        Target::Ids(specs) if !opts.filter.is_empty() => {
            narrowed = specs
                .iter()
                .map(|s| {
                    if s != "latest" {
                        return Ok(s.clone());
                    }
                    let picked = all.iter().filter(|(_, s)| opts.filter.picks(s));
                    crate::snapshot::newest_by(picked, |(_, s)| s.time)
                        .map(|(id, _)| id.to_hex())
                        .ok_or_else(|| {
                            Error::InvalidInput(format!(
                                "no snapshot of {}",
                                opts.filter.describe()
                            ))
                        })
                })
                .collect::<Result<Vec<String>>>()?;
            narrowed.as_slice()
        }
        Target::Ids(specs) => specs.as_slice(),
        _ => &[],
    };
    let trees: HashMap<Id, Id> = all.iter().map(|(id, s)| (*id, s.tree)).collect();
    let logical = logical_snapshots(all);
    let groups = match &opts.target {
        Target::Policy { policy, group_by } => {
            // A recovered snapshot is no backup to keep or drop by policy
            // (it would take the place of one in its group): it goes by ID,
            // or by policy only when `--tag recovered` asks for it.
            let candidates: Vec<Candidate> = logical
                .iter()
                .filter(|l| opts.filter.picks(&l.snapshot))
                .map(|l| Candidate::of(l.id, &l.snapshot))
                .collect();
            retention::plan(&candidates, policy, *group_by, &Local, Utc::now())?
        }
        Target::Ids(_) => {
            let readable: Vec<String> = specs
                .iter()
                .filter(|s| !repo.snapshot_id(s).is_ok_and(|id| damaged.contains(&id)))
                .cloned()
                .collect();
            vec![by_id(repo, &logical, &readable)?]
        }
        Target::Group {
            policy,
            hostname,
            paths,
            tags,
        } => {
            let sorted = |p: &[String]| {
                let mut p = p.to_vec();
                p.sort();
                p
            };
            // As stored: trimmed, no empty ones (the options' tags are as
            // given, `--tag "a, b"`).
            let user_tags = |t: &[String]| {
                let t = crate::snapshot::clean_tags(t);
                let mut t: Vec<String> = crate::snapshot::user_tags(&t).cloned().collect();
                t.sort();
                t.dedup();
                t
            };
            let (paths, tags) = (sorted(paths), user_tags(tags));
            let candidates: Vec<Candidate> = logical
                .iter()
                .filter(|l| {
                    l.snapshot.hostname == *hostname
                        && sorted(&l.snapshot.paths) == paths
                        && user_tags(&l.snapshot.tags) == tags
                })
                .map(|l| Candidate::of(l.id, &l.snapshot))
                .collect();
            if candidates.is_empty() {
                Vec::new()
            } else {
                retention::plan(&candidates, policy, GroupBy::default(), &Local, Utc::now())?
            }
        }
    };
    let records: HashMap<Id, &Logical> = logical.iter().map(|l| (l.id, l)).collect();
    let mut removed: Vec<Id> = Vec::new();
    for d in groups.iter().flat_map(|g| &g.remove) {
        match records.get(&d.snapshot.id) {
            // A decision on a record that does not stand for its snapshot
            // (see `by_id`) removes that record alone.
            None => removed.push(d.snapshot.id),
            // The snapshot shown may be a record that claims another's
            // lineage (anyone holding the key, an append-only key too, can
            // write one, dated to fall out of any policy): an intact record
            // of other content beside it is not taken along.
            Some(l) => removed.extend(deletable_with(repo, l, &trees)?),
        }
    }
    removed.extend(&damaged);
    // A damaged record named beside its snapshot is in both.
    let mut once = std::collections::HashSet::new();
    removed.retain(|id| once.insert(*id));
    if !opts.dry_run {
        // Only under a lock still held: one lost meanwhile (a laptop
        // asleep) may have let another exclusive command run, one that
        // turned append-only mode on, say.
        let lock = lock.as_ref().expect("forget locks unless a dry run");
        lock.check()?;
        repo.audit_removing_snapshots(&removed);
        for id in &removed {
            lock.check_fresh()?;
            repo.backend().delete(FileKind::Snapshot, &id.to_hex())?;
        }
    }
    Ok(ForgetReport {
        groups,
        removed,
        dry_run: opts.dry_run,
        damaged,
    })
}

/// A damaged snapshot record stops forget, with what to do about it.
fn unjudged(e: Error) -> Error {
    match e {
        Error::Corrupt { .. } => Error::InvalidInput(format!(
            "{e}: what it holds is unknown, so nothing is forgotten; `cairn recover` keeps \
             its data in a new snapshot, then `cairn forget ID` with its ID removes it"
        )),
        e => e,
    }
}

/// The snapshot records that can be read, and of those `specs` name, the
/// ones too damaged to read. Any other failure to read one fails, and so
/// does a damaged record not named: what it holds is unknown, so no record
/// can be judged a copy of it (a policy refuses alike).
fn readable_and_damaged(
    repo: &Repository,
    specs: &[String],
) -> Result<(crate::repository::SnapshotList, Vec<Id>)> {
    let (all, errors) = repo.snapshots_lenient()?;
    let named: Vec<Id> = specs
        .iter()
        .filter(|s| *s != "latest")
        .filter_map(|s| repo.snapshot_id(s).ok())
        .collect();
    let mut damaged = Vec::new();
    for e in errors {
        match crate::repository::damaged_snapshot(&e) {
            Some(id) if named.contains(&id) => {
                if !damaged.contains(&id) {
                    damaged.push(id);
                }
            }
            None if matches!(e, Error::Missing(_)) => {}
            _ => return Err(unjudged(e)),
        }
    }
    Ok((all, damaged))
}

/// Whether `other`, a record of the snapshot shown as `shown`, holds other
/// content: a damaged record beside its repair, a leftover of an
/// interrupted rewrite, or a real snapshot a record written with the key
/// claims. Named by ID, it is forgotten alone.
fn other_content(shown: &Snapshot, other: &Snapshot) -> bool {
    shown.tree != other.tree
}

fn by_id(repo: &Repository, logical: &[Logical], specs: &[String]) -> Result<GroupPlan> {
    let mut remove: Vec<Decision> = Vec::new();
    let mut held = Vec::new();
    for spec in specs {
        let (id, named) = repo.find_snapshot(spec)?;
        let l = logical
            .iter()
            .find(|l| l.records.contains(&id))
            .ok_or_else(|| Error::Missing(format!("snapshot {id}")))?;
        if id != l.id && other_content(&l.snapshot, &named) {
            // A damaged record beside its repair (or any record of other
            // content) goes alone when named, and only if it is not held
            // itself.
            if named.hold {
                held.push(id.short());
            } else if !remove.iter().any(|d| d.snapshot.id == id) {
                remove.push(Decision {
                    snapshot: Candidate::of(id, &named),
                    reasons: Vec::new(),
                });
            }
        } else if l.snapshot.hold {
            held.push(id.short());
        } else if !remove.iter().any(|d| d.snapshot.id == l.id) {
            remove.push(Decision {
                snapshot: Candidate::of(l.id, &l.snapshot),
                reasons: Vec::new(),
            });
        }
    }
    if !held.is_empty() {
        return Err(refuse_held(&held, "removed", ""));
    }
    remove.sort_by_key(|d| (d.snapshot.time, d.snapshot.id));
    Ok(GroupPlan {
        key: GroupKey {
            hostname: None,
            paths: None,
            tags: None,
        },
        keep: Vec::new(),
        remove,
    })
}
