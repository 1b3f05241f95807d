//! Prune: delete what no snapshot references, repack what is mostly garbage.
//!
//! Runs under an exclusive lock, which no live backup can hold at the same
//! time; a stalled backup whose lock went stale has that lock deleted here
//! and refuses to commit when it wakes (see [`crate::lock`]).
//!
//! Space is freed before any is taken, so that a prune on a full disk gets
//! room for its repack: first the packs no index names go, then (when there
//! is something to repack) index files without the wholly unused packs
//! replace the old ones and those packs go. Then the repacked blobs are
//! written (new packs, then their index files), index files for the packs
//! kept replace the others, and only then are the repacked packs deleted.
//! A crash at any point leaves every live blob indexed.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::blob::{BlobType, PackedBlob, stored_shares};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::IndexPack;
use crate::localindex::load_index_file;
use crate::pack;
use crate::repository::Repository;
use crate::saver::BlobSaver;
use crate::tree::{NodeKind, Tree};

mod duplicates;

/// How to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack when more than this fraction of it is unused (0.0..=1.0).
    pub max_unused: f64,
    /// Report only; change nothing.
    pub dry_run: bool,
    /// Copy at most this many bytes of live data when repacking; the packs
    /// beyond it (the least wasteful) are kept for a later prune.
    pub max_repack_bytes: Option<u64>,
    /// In a dry run, what the dry run of the command before it (`forget`,
    /// `rewrite`) would have changed. Ignored otherwise (a real prune
    /// keeps the data of every snapshot there is).
    pub assume: DryRunChanges,
    /// With `dry_run`, take no lock (to preview a read-only repository; a
    /// change made meanwhile elsewhere can make the report stale). A run
    /// that changes the repository locks whatever this says.
    pub no_lock: bool,
    /// Merge every pack below 80% of the target pack size, not only tiny
    /// ones when there are many (see [`SMALL_PACKS_WORTH_MERGING`]).
    pub repack_small: bool,
}

/// What a dry run of a command that removes or replaces snapshot records
/// would have done, for the preview of the prune after it: without it, the
/// preview counted the data of every record as still in use, and promised
/// to free nothing.
#[derive(Debug, Clone, Default)]
pub struct DryRunChanges {
    /// Snapshot records it would have removed.
    pub forgotten: Vec<Id>,
    /// The root trees of the records it would have written.
    pub roots: Vec<Id>,
    /// The trees it would have stored, by ID: none is in the repository.
    pub trees: HashMap<Id, Tree>,
}

/// Packs below 1/25 of the target size are merged once there are this
/// many of a kind (data packs, tree packs): each small backup leaves a small data
/// pack and a small tree pack behind, and a year of hourly backups would
/// otherwise keep thousands of them (one request each on S3). Fewer are
/// left alone: merging the last partial pack again and again gains nothing.
pub const SMALL_PACKS_WORTH_MERGING: usize = 10;

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            dry_run: false,
            max_repack_bytes: None,
            assume: DryRunChanges::default(),
            no_lock: false,
            repack_small: false,
        }
    }
}

/// Receives progress from a running prune.
pub trait PruneProgress: Sync {
    /// A new phase started.
    fn phase(&self, _name: &str) {}
    /// One pack was repacked or deleted.
    fn pack_done(&self) {}
}

/// A progress sink that ignores everything.
pub struct NoPruneProgress;
impl PruneProgress for NoPruneProgress {}

/// What prune found and did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Snapshots whose trees were walked.
    pub snapshots: usize,
    /// Distinct blobs referenced by snapshots.
    pub used_blobs: usize,
    /// Blobs stored but referenced by no snapshot (duplicates included).
    pub unused_blobs: usize,
    /// Packs in the index before pruning.
    pub packs_before: usize,
    /// Packs kept as they are.
    pub packs_kept: usize,
    /// Packs holding only unused blobs, deleted.
    pub packs_deleted: usize,
    /// Packs whose live blobs were copied into new packs, then deleted.
    pub packs_repacked: usize,
    /// Packs in storage but in no index (left by interrupted backups), deleted.
    pub unindexed_packs_deleted: usize,
    /// Packs the index names but storage lacks (dropped from the index).
    pub missing_packs: Vec<String>,
    /// Packs whose stored size is not the index's (truncated or replaced).
    /// No blob is taken from them: one is deleted when intact copies hold
    /// every blob of it that snapshots use; otherwise prune refuses.
    pub damaged_packs: Vec<String>,
    /// Packs holding a copy of a blob that failed verification when prune
    /// read it (another copy is kept, or prune refuses): it is repacked
    /// without that copy, or deleted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged_copies: Vec<String>,
    /// Bytes of packs deleted, and of index files replaced (a dry run
    /// leaves index files out of both counts).
    pub bytes_deleted: u64,
    /// Bytes of new packs and index files written (in a dry run, the live
    /// data the repack would copy into new packs).
    pub bytes_added: u64,
    /// Net bytes freed: by how much packs and index files shrank (a
    /// truncated pack counted at the size its index gives; leftovers of
    /// interrupted writes not counted).
    pub bytes_freed: i64,
    /// Bytes of unused data left in kept packs (below the repack threshold,
    /// or beyond `max_repack_bytes`).
    pub unused_bytes_kept: u64,
    /// Packs that were worth repacking but kept, beyond `max_repack_bytes`,
    /// for a later prune with the same limit.
    pub packs_left_for_later: usize,
    /// Packs worth repacking that no prune with this `max_repack_bytes`
    /// repacks: one holds more live data than the limit, or small ones
    /// that only merge two at a time and two do not fit.
    pub packs_beyond_repack_limit: usize,
    /// The least `max_repack_bytes` that repacks those (0 if none).
    pub repack_limit_needed: u64,
    /// Of the packs repacked, those merged only for being small (all of
    /// them used).
    pub small_packs_merged: usize,
    /// Index files written.
    pub index_files_written: usize,
    /// Index files removed.
    pub index_files_removed: usize,
    /// Leftovers of interrupted writes removed (temporary files,
    /// unfinished multipart uploads).
    pub temporaries_removed: usize,
    /// Why leftovers of interrupted writes could not be looked for or
    /// removed, if so; the prune went on without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporaries_failed: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    Delete,
    Repack,
}

/// Prunes the repository.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &dyn PruneProgress,
) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&opts.max_unused) {
        return Err(Error::InvalidInput(
            "--max-unused must be between 0% and 100%".into(),
        ));
    }
    // Exclusive even for a dry run: a running backup's packs are not in
    // the index yet and would be counted as leftovers to delete.
    let lock = repo.lock_unless(opts.dry_run && opts.no_lock, true)?;
    if !opts.dry_run {
        repo.ensure_may_delete("`prune`")?;
    }
    let backend = repo.backend();
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };

    progress.phase("loading index");
    let listed = backend.list(FileKind::Index)?;
    let old_index: Vec<Id> = listed
        .iter()
        .filter_map(|l| Id::from_hex(&l.name).ok())
        .collect();
    // Removed once the new index files are in: freed like packs.
    let old_index_bytes: u64 = listed
        .iter()
        .filter(|l| Id::from_hex(&l.name).is_ok())
        .map(|l| l.size)
        .sum();
    let mut packs: HashMap<Id, IndexPack> = HashMap::new();
    for id in &old_index {
        for p in load_index_file(&**backend, repo.key(), id)?.packs {
            packs.entry(p.id).or_insert(p);
        }
    }
    let mut stored: HashMap<String, u64> = backend
        .list(FileKind::Pack)?
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    // An indexed pack the listing left out is asked for by name, as
    // `repair index` does: a store whose listing lags or loses entries
    // made prune drop packs that were there from the index (and the next
    // prune delete them as unindexed).
    let mut unlisted: Vec<String> = packs
        .keys()
        .map(|id| id.to_hex())
        .filter(|name| !stored.contains_key(name))
        .collect();
    unlisted.sort();
    for name in unlisted {
        if let Some(size) = backend.stored_size(FileKind::Pack, &name)? {
            stored.insert(name, size);
        }
    }
    report.packs_before = packs.len();
    packs.retain(|id, _| {
        let present = stored.contains_key(&id.to_hex());
        if !present {
            report.missing_packs.push(id.to_hex());
        }
        present
    });

    // A copy of a blob in a damaged pack must never be the one kept while
    // an intact copy elsewhere is deleted.
    let damaged: HashSet<Id> = packs
        .iter()
        .filter(|(id, p)| stored.get(&id.to_hex()).is_some_and(|s| *s != p.size))
        .map(|(id, _)| *id)
        .collect();
    report.damaged_packs = damaged.iter().map(|id| id.to_hex()).collect();
    report.damaged_packs.sort();

    progress.phase("finding used blobs");
    let none = DryRunChanges::default();
    let assumed = if opts.dry_run { &opts.assume } else { &none };
    let used = used_blobs(repo, assumed, &mut report)?;
    report.used_blobs = used.len();
    // No snapshot at all would make every pack unused. That is far more
    // often a listing gone wrong, or a retention policy that outran an
    // offline machine, than a wish to empty the repository.
    if report.snapshots == 0 && !stored.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the repository has no snapshots, so prune would delete all of its {} packs; \
             nothing was pruned (to empty a repository on purpose, delete it and run `cairn init`)",
            stored.len()
        )));
    }

    // A copy kept while another goes is verified first; one that fails is
    // never kept, and the plan is made again without it.
    let mut bad: HashSet<duplicates::BlobCopy> = HashSet::new();
    let mut verified: HashSet<duplicates::BlobCopy> = HashSet::new();
    let Plan {
        packs: plan,
        chosen,
        candidates,
    } = loop {
        let pack_size = u64::from(repo.config().pack_size);
        let planned = plan_packs(&packs, &used, &damaged, &bad, opts, pack_size);
        let mut risky = duplicates::at_risk(&packs, &planned.packs, &used);
        for (pack, blobs) in risky.iter_mut() {
            blobs.retain(|b| verified.insert((*pack, b.id)));
        }
        risky.retain(|_, blobs| !blobs.is_empty());
        if risky.is_empty() {
            break planned;
        }
        progress.phase("verifying the copies kept of blobs stored twice");
        let failed = duplicates::failing(repo, &risky)?;
        if failed.is_empty() {
            break planned;
        }
        bad.extend(failed);
    };
    report.unused_blobs = plan
        .iter()
        .filter(|(id, _, _)| !damaged.contains(id))
        .map(|(id, _, keep)| packs[id].blobs.len() - keep.len())
        .sum();
    report.unused_bytes_kept = candidates.kept_unused;
    report.packs_left_for_later = candidates.left_for_later;
    report.packs_beyond_repack_limit = candidates.beyond_limit;
    report.repack_limit_needed = candidates.limit_needed;
    report.small_packs_merged = candidates.small;
    let candidates = candidates.repacked;
    let mut damaged_copies: Vec<String> = bad.iter().map(|(pack, _)| pack.to_hex()).collect();
    damaged_copies.sort();
    damaged_copies.dedup();
    report.damaged_copies = damaged_copies;
    let unindexed: Vec<String> = stored
        .keys()
        .filter(|n| Id::from_hex(n).is_ok_and(|id| !packs.contains_key(&id)))
        .filter(|n| !report.missing_packs.contains(n))
        .cloned()
        .collect();
    for (id, fate, _) in &plan {
        let size = packs[id].size;
        match fate {
            Fate::Keep => report.packs_kept += 1,
            Fate::Delete => {
                report.packs_deleted += 1;
                report.bytes_deleted += size;
            }
            Fate::Repack => {
                report.packs_repacked += 1;
                report.bytes_deleted += size;
            }
        }
    }
    // Deleting anything while snapshots use blobs that no present pack holds
    // in the index could destroy the only copy (in a pack the index lost).
    let unindexed_used = used.iter().filter(|id| !chosen.contains(id)).count();
    if unindexed_used > 0 {
        let had_bad_copy = used
            .iter()
            .filter(|id| !chosen.contains(id))
            .any(|id| bad.iter().any(|(_, b)| b == id));
        // A blob only a truncated or replaced pack holds: neither repair
        // index (which keeps the pack's entries) nor repair snapshots (the
        // blob is still indexed) gets past it; repair packs does.
        let mut only_in_damaged: Vec<String> = damaged
            .iter()
            .filter(|p| {
                packs[p]
                    .blobs
                    .iter()
                    .any(|b| used.contains(&b.id) && !chosen.contains(&b.id))
            })
            .map(|p| p.to_hex())
            .collect();
        only_in_damaged.sort();
        let repair_damaged;
        let next = if !only_in_damaged.is_empty() {
            repair_damaged = format!(
                "their only copies are in packs whose stored size is not the index's: \
                 `cairn repair packs {}` salvages what is left of them",
                only_in_damaged.join(" ")
            );
            repair_damaged.as_str()
        } else if !report.missing_packs.is_empty() {
            // `repair snapshots` refuses while the index names packs that
            // are gone: the packs come first.
            let mut missing: Vec<&str> = report.missing_packs.iter().map(|m| &m[..8]).collect();
            missing.sort();
            repair_damaged = format!(
                "packs the index names are missing from the repository: `cairn repair packs {}` \
                 drops them from the index and names what was lost, then `cairn repair \
                 snapshots --forget` mends the snapshots that used them",
                missing.join(" ")
            );
            repair_damaged.as_str()
        } else if !had_bad_copy {
            "run `cairn check`, then `cairn repair index` or `cairn repair snapshots --forget`; \
             after a `repair snapshots` without `--forget`, `cairn forget` the damaged records \
             it named"
        } else {
            // Read here and found damaged: repair salvages what is left.
            "`cairn check --read-data` names the damaged packs; `cairn repair packs` salvages them"
        };
        return Err(Error::InvalidInput(format!(
            "snapshots use {unindexed_used} blobs that no intact indexed pack holds; nothing was pruned \
             ({next})"
        )));
    }
    report.unindexed_packs_deleted = unindexed.len();
    report.bytes_deleted += unindexed.iter().map(|n| stored[n]).sum::<u64>();
    if let Some(lock) = lock.as_ref().filter(|_| !opts.dry_run) {
        lock.check()?;
    }
    match backend.stale_temporaries(crate::lock::abandoned_after(), !opts.dry_run) {
        Ok(n) => report.temporaries_removed = n,
        // Leftovers cost room, not data: they wait for the next prune.
        Err(e) => report.temporaries_failed = Some(e.to_string()),
    }
    let nothing_to_do =
        report.packs_deleted + report.packs_repacked + report.unindexed_packs_deleted == 0
            && report.missing_packs.is_empty();
    if opts.dry_run || nothing_to_do {
        // What a repack would write back: the live data it copies (its new
        // packs' headers and index files aside). Left out, a dry run said
        // a repack frees the whole of each pack it rewrites.
        report.bytes_added = candidates
            .iter()
            .filter(|&&(at, _, _)| matches!(plan[at].1, Fate::Repack))
            .map(|&(_, live, _)| live)
            .sum();
        report.bytes_freed = report.bytes_deleted as i64 - report.bytes_added as i64;
        return Ok(report);
    }
    let lock = lock.expect("only a dry run goes without a lock");

    // What goes without copying anything goes first (see the module doc).
    // Asked of the storage once, then of the clocks before each deletion:
    // a prune whose lock was taken from it deletes nothing more.
    lock.check()?;
    let repacking = plan.iter().any(|(_, f, _)| matches!(f, Fate::Repack));
    // Wholly unused packs go before a repack, which needs room (below).
    let deleted_early = repacking && plan.iter().any(|(_, f, _)| matches!(f, Fate::Delete));
    if !unindexed.is_empty() || deleted_early {
        progress.phase("deleting packs");
    }
    for name in &unindexed {
        lock.check_fresh()?;
        backend.delete(FileKind::Pack, name)?;
    }
    let mut old_names: Vec<String> = old_index.iter().map(Id::to_hex).collect();
    // Every index file prune writes names the original ones as superseded,
    // also after the interim step below deleted them: a sync elsewhere that
    // loaded an original before the prune must not absorb it after (its
    // rows name packs the prune deleted, which a backup would reuse).
    let mut replaced: Vec<String> = Vec::new();
    if deleted_early {
        let interim: Vec<IndexPack> = plan
            .iter()
            .filter(|(_, f, _)| !matches!(f, Fate::Delete))
            .map(|(id, _, _)| packs[id].clone())
            .collect();
        let written = repo.replace_index_files(&lock, &interim, &old_names, &[])?;
        report.index_files_written += written.names.len();
        report.index_files_removed += old_names.len();
        // Written now, removed again below.
        report.bytes_added += written.bytes;
        report.bytes_deleted += written.bytes;
        replaced = std::mem::replace(&mut old_names, written.names);
        lock.check()?;
        delete_packs(&lock, repo, &plan, |f| matches!(f, Fate::Delete), progress)?;
    }

    if repacking {
        progress.phase("repacking");
    }
    let saver = BlobSaver::without_index_dedup(repo)
        .with_lock(&lock)
        .superseding(
            replaced
                .iter()
                .chain(&old_names)
                .filter_map(|n| Id::from_hex(n).ok())
                .collect(),
        );
    // Packs are read in parallel so that one's read overlaps another's
    // re-encryption; live blobs move as stored, without recompression,
    // except group members, which are grouped again without the dead ones.
    plan.par_iter()
        .filter(|(_, fate, _)| matches!(fate, Fate::Repack))
        .try_for_each(|(id, _, keep)| -> Result<()> {
            repack(repo, &saver, id, keep).map_err(|e| match e {
                // Damage no check had found: say what to do about it.
                Error::Corrupt { .. } => Error::InvalidInput(format!(
                    "{e}; prune stopped before deleting any pack it copies from: \
                         `cairn check --read-data` names what the damage affects and \
                         `cairn repair packs {}` salvages the rest",
                    &id.to_hex()[..8]
                )),
                e => e,
            })?;
            progress.pack_done();
            Ok(())
        })?;
    saver.flush()?;
    report.bytes_added += saver
        .bytes_written
        .load(std::sync::atomic::Ordering::Relaxed);
    report.index_files_written += saver
        .index_files_written
        .load(std::sync::atomic::Ordering::Relaxed) as usize;

    progress.phase("rewriting index");
    let kept: Vec<IndexPack> = plan
        .iter()
        .filter(|(_, f, _)| matches!(f, Fate::Keep))
        .map(|(id, _, _)| packs[id].clone())
        .collect();
    // Nothing is deleted if our lock was lost meanwhile.
    let written = repo.replace_index_files(&lock, &kept, &old_names, &replaced)?;
    report.index_files_written += written.names.len();
    report.index_files_removed += old_names.len();
    report.bytes_added += written.bytes;
    report.bytes_deleted += old_index_bytes;

    progress.phase("deleting packs");
    lock.check()?;
    delete_packs(
        &lock,
        repo,
        &plan,
        |f| matches!(f, Fate::Repack) || !deleted_early && matches!(f, Fate::Delete),
        progress,
    )?;
    repo.index().clear()?;
    repo.index().sync(&**backend, repo.key())?;
    report.bytes_freed = report.bytes_deleted as i64 - report.bytes_added as i64;
    Ok(report)
}

/// What prune does with each pack: its fate, and the blobs it keeps.
struct Plan {
    packs: Vec<(Id, Fate, Vec<PackedBlob>)>,
    /// The used blobs a copy of which is kept.
    chosen: HashSet<Id>,
    candidates: Repacks,
}

/// The packs worth repacking, and the unused bytes left where they are.
#[derive(Default)]
struct Repacks {
    /// Plan position, live and unused bytes of each pack repacked.
    repacked: Vec<(usize, u64, u64)>,
    /// Unused bytes left in kept packs.
    kept_unused: u64,
    /// Packs worth repacking, kept beyond the budget.
    left_for_later: usize,
    /// Packs worth repacking that the budget never lets through, and the
    /// least budget that would.
    beyond_limit: usize,
    limit_needed: u64,
    /// Packs repacked for being small.
    small: usize,
}

/// A kept pack below the small-pack size: where it is in the plan, its live
/// and unused bytes, and how many blobs it keeps.
#[derive(Clone, Copy)]
struct SmallPack {
    at: usize,
    live: u64,
    unused: u64,
    blobs: usize,
}

/// How many packs the live blobs of `group` make when merged: bytes and the
/// blob limit of a pack both count (packs of many tiny grouped files reach
/// the limit well below the target size).
fn packs_after(group: &[SmallPack], pack_size: u64) -> usize {
    let live: u64 = group.iter().map(|p| p.live).sum();
    let blobs: usize = group.iter().map(|p| p.blobs).sum();
    (live.div_ceil(pack_size.max(1)) as usize).max(blobs.div_ceil(crate::saver::MAX_BLOBS_PER_PACK))
}

/// Chooses one copy of every used blob, none in a `damaged` pack or among
/// the `bad` copies, preferring packs that are mostly live so that as
/// little as possible has to be copied. Packs well below `pack_size` are
/// merged when that is worth it ([`SMALL_PACKS_WORTH_MERGING`]).
fn plan_packs(
    packs: &HashMap<Id, IndexPack>,
    used: &HashSet<Id>,
    damaged: &HashSet<Id>,
    bad: &HashSet<duplicates::BlobCopy>,
    opts: &PruneOptions,
    pack_size: u64,
) -> Plan {
    let small_below = if opts.repack_small {
        pack_size / 5 * 4
    } else {
        pack_size / 25
    };
    let mut order: Vec<(&Id, &IndexPack)> = packs.iter().collect();
    let shares: HashMap<Id, Vec<u64>> = packs
        .iter()
        .map(|(id, p)| (*id, stored_shares(&p.blobs)))
        .collect();
    let live = |id: &Id, p: &IndexPack| {
        p.blobs
            .iter()
            .zip(&shares[id])
            .filter(|(b, _)| used.contains(&b.id))
            .map(|(_, s)| s)
            .sum::<u64>()
    };
    // Packs holding a damaged copy come last: what they hold is taken from
    // the others where it can be, and they are copied from, or go, whole.
    let holds_bad = |id: &Id, p: &IndexPack| p.blobs.iter().any(|b| bad.contains(&(*id, b.id)));
    order.sort_by_cached_key(|(id, p)| {
        (
            holds_bad(id, p),
            std::cmp::Reverse(live(id, p) * 1000 / p.size.max(1)),
            **id,
        )
    });
    let mut chosen: HashSet<Id> = HashSet::new();
    let mut plan: Vec<(Id, Fate, Vec<PackedBlob>)> = Vec::new();
    let mut r = Repacks::default();
    // Repacked whatever the budget: they hold a damaged copy, which a
    // kept pack would leave in the index for a restore to find.
    let mut forced = Vec::new();
    // Kept packs below `small_below`, with the kind of blobs they hold.
    let mut small: Vec<(SmallPack, BlobType)> = Vec::new();
    for (id, p) in order {
        if damaged.contains(id) {
            continue; // decided below, once the intact copies are chosen
        }
        let (mut keep, mut live_bytes) = (Vec::new(), 0);
        for (b, share) in p.blobs.iter().zip(&shares[id]) {
            if used.contains(&b.id) && !bad.contains(&(*id, b.id)) && chosen.insert(b.id) {
                keep.push(*b);
                live_bytes += share;
            }
        }
        // A dead member of a group frame wastes its share of the frame,
        // which a repack (grouping the live members again) gives back.
        let all_bytes: u64 = shares[id].iter().sum();
        let unused_bytes = all_bytes - live_bytes;
        let unused_share = unused_bytes as f64 / p.size.max(1) as f64;
        let fate = if keep.is_empty() {
            Fate::Delete
        } else if holds_bad(id, p) {
            forced.push(plan.len());
            r.repacked.push((plan.len(), live_bytes, unused_bytes));
            Fate::Repack
        } else if unused_share > opts.max_unused
            // Asked to keep nothing unused (`rewrite --prune`, removing a
            // secret): a dead member too small for a byte of its group
            // frame's share still holds its bytes in the frame.
            || (opts.max_unused == 0.0 && keep.len() < p.blobs.len())
        {
            r.repacked.push((plan.len(), live_bytes, unused_bytes));
            Fate::Repack
        } else {
            // Small by bytes but nearly full by count (many tiny grouped
            // files): merged, it would come out as many packs again.
            if p.size < small_below && keep.len() < crate::saver::MAX_BLOBS_PER_PACK / 5 * 4 {
                let kind = p.blobs.first().map_or(BlobType::Data, |b| b.blob_type);
                let pack = SmallPack {
                    at: plan.len(),
                    live: live_bytes,
                    unused: unused_bytes,
                    blobs: keep.len(),
                };
                small.push((pack, kind));
            } else {
                r.kept_unused += unused_bytes;
            }
            Fate::Keep
        };
        plan.push((*id, fate, keep));
    }
    // Within the budget, the packs that free most for what they copy.
    let mut copied = 0u64;
    if let Some(budget) = opts.max_repack_bytes {
        r.repacked.sort_by_key(|&(at, live, unused)| {
            (
                !forced.contains(&at),
                std::cmp::Reverse(unused * 1000 / (live + unused).max(1)),
            )
        });
        for &(at, live, unused) in &r.repacked {
            // A pack holding a damaged copy may stay too: readers go
            // to the intact copy, chosen in another pack.
            if copied + live <= budget {
                copied += live;
                continue;
            }
            plan[at].1 = Fate::Keep;
            r.kept_unused += unused;
            // "Later" would be never for a pack the budget cannot hold
            // (0 asks for no repack at all: a later prune without it).
            if live > budget && budget > 0 {
                r.beyond_limit += 1;
                r.limit_needed = r.limit_needed.max(live);
            } else {
                r.left_for_later += 1;
            }
        }
    }
    // Small packs are merged by kind (data and trees go to packs of their
    // own): the whole kind when the budget allows, else its smallest packs
    // that fit, and only ever into fewer packs (a lone small pack rewritten
    // is as small again, and would be rewritten at every prune).
    for kind in [BlobType::Data, BlobType::Tree] {
        let mut group: Vec<SmallPack> = small
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(p, _)| *p)
            .collect();
        let worth = group.len() >= SMALL_PACKS_WORTH_MERGING
            || opts.repack_small && group.len() > packs_after(&group, pack_size).max(1);
        if !worth {
            r.kept_unused += group.iter().map(|p| p.unused).sum::<u64>();
            continue;
        }
        let room = opts
            .max_repack_bytes
            .map_or(u64::MAX, |budget| budget.saturating_sub(copied));
        group.sort_by_key(|p| (p.live, p.at));
        let mut fit = 0;
        let mut live = 0u64;
        while fit < group.len() && live + group[fit].live <= room {
            live += group[fit].live;
            fit += 1;
        }
        let take = if fit >= 2 && fit > packs_after(&group[..fit], pack_size) {
            fit
        } else {
            live = 0;
            0
        };
        // Only what the budget kept out waits for a later prune; a set that
        // would not make fewer packs is no candidate at all. Under a budget
        // too small for the two smallest, no later prune merges any.
        let budget_bound = fit < group.len();
        let two = group.iter().take(2).map(|p| p.live).sum::<u64>();
        let never = take == 0
            && budget_bound
            && group.len() >= 2
            && opts.max_repack_bytes.is_some_and(|b| b > 0 && b < two);
        if never {
            r.beyond_limit += group.len();
            r.limit_needed = r.limit_needed.max(two);
        }
        for (i, p) in group.iter().enumerate() {
            if i < take {
                plan[p.at].1 = Fate::Repack;
                r.repacked.push((p.at, p.live, p.unused));
                r.small += 1;
            } else {
                r.kept_unused += p.unused;
                r.left_for_later += usize::from(budget_bound && !never);
            }
        }
        copied += live;
    }
    // A damaged pack goes once intact copies hold every blob of it that
    // snapshots use (left in the index, its copies could still be the ones
    // a lookup finds); otherwise prune refuses below, and it stays.
    for id in damaged {
        let covered = packs[id]
            .blobs
            .iter()
            .all(|b| !used.contains(&b.id) || chosen.contains(&b.id));
        let fate = if covered { Fate::Delete } else { Fate::Keep };
        plan.push((*id, fate, Vec::new()));
    }
    Plan {
        packs: plan,
        chosen,
        candidates: r,
    }
}

/// Copies the blobs `keep` of pack `id` into new packs: as stored, without
/// recompression, except group members, which are grouped again without
/// the dead ones.
fn repack(repo: &Repository, saver: &BlobSaver, id: &Id, keep: &[PackedBlob]) -> Result<()> {
    let bytes = repo.backend().read(FileKind::Pack, &id.to_hex())?;
    let cipher = repo.key().pack_cipher(&pack::parse_prefix(id, &bytes)?);
    // The decoded group frame of the last member, by its offset.
    let mut frame: Option<(u32, Vec<u8>)> = None;
    for b in keep {
        let ct = bytes
            .get(b.offset as usize..b.offset as usize + b.length as usize)
            .ok_or_else(|| Error::corrupt(format!("pack {id}"), "blob lies beyond its end"))?;
        if !b.in_group() {
            saver.save_stored(b, &pack::open_stored(&cipher, b, ct, id)?)?;
            continue;
        }
        if frame.as_ref().is_none_or(|(at, _)| *at != b.offset) {
            frame = Some((b.offset, pack::open_frame(&cipher, b, ct, id)?));
        }
        let (_, decoded) = frame.as_ref().expect("just set");
        saver.save(b.blob_type, pack::group_member(repo.key(), b, decoded, id)?)?;
    }
    Ok(())
}

/// Deletes the packs of `plan` whose fate `which` picks, each only while
/// the lock is fresh.
fn delete_packs(
    lock: &crate::lock::LockGuard,
    repo: &Repository,
    plan: &[(Id, Fate, Vec<PackedBlob>)],
    which: impl Fn(&Fate) -> bool,
    progress: &dyn PruneProgress,
) -> Result<()> {
    for (id, fate, _) in plan {
        if which(fate) {
            lock.check_fresh()?;
            repo.backend().delete(FileKind::Pack, &id.to_hex())?;
            progress.pack_done();
        }
    }
    Ok(())
}

/// Every blob referenced by a snapshot. Fails rather than guess if any
/// snapshot or tree cannot be read: deleting on partial knowledge loses data.
fn used_blobs(
    repo: &Repository,
    assumed: &DryRunChanges,
    report: &mut PruneReport,
) -> Result<HashSet<Id>> {
    let forgotten = &assumed.forgotten;
    // A damaged record already forgotten (a dry run of `forget ID
    // --prune`) is no reason to refuse.
    let (mut snapshots, errors) = repo.snapshots_lenient()?;
    let blocking = errors.into_iter().find(|e| {
        !crate::repository::damaged_snapshot(e).is_some_and(|id| forgotten.contains(&id))
    });
    if let Some(e) = blocking {
        let what = match e {
            Error::Corrupt { .. } => {
                "what it holds is unknown: `cairn recover` keeps its data in a new \
                 snapshot, then `cairn forget ID` removes the damaged record \
                 (docs/recovery.md §12)"
            }
            _ => "run `cairn check`",
        };
        return Err(Error::InvalidInput(format!(
            "cannot read every snapshot ({e}); nothing was pruned: {what}"
        )));
    }
    snapshots.retain(|(id, _)| !forgotten.contains(id));
    report.snapshots = snapshots.len() + assumed.roots.len();
    let mut used = HashSet::new();
    let mut stack: Vec<Id> = snapshots.iter().map(|(_, s)| s.tree).collect();
    // The trees a dry run would have written are walked but not counted
    // as used: no pack holds them (they would go into new ones), and a
    // used blob no pack holds stops the prune.
    let mut walked = HashSet::new();
    let mut planned = assumed.roots.clone();
    let index = repo.index_reader()?;
    while let Some(t) = planned.pop() {
        let Some(tree) = assumed.trees.get(&t) else {
            stack.push(t);
            continue;
        };
        // One stored already (the same tree, kept by a record that goes)
        // would be the one used.
        if index.lookup_tree(&t)?.is_some() {
            used.insert(t);
        }
        if walked.insert(t) {
            for n in &tree.nodes {
                match n.kind {
                    NodeKind::Dir => planned.extend(n.subtree),
                    NodeKind::File => used.extend(n.content.iter().copied()),
                    _ => {}
                }
            }
        }
    }
    // Trees walked apart from `used`: a file whose bytes are a tree's has
    // that tree's ID, and its content in `used` must not pass for the
    // tree walked (its blobs would then go).
    let mut seen = HashSet::new();
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        used.insert(t);
        let tree = repo.load_tree(&t).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read tree {t} ({e}); nothing was pruned (run `cairn check`)"
            ))
        })?;
        for n in &tree.nodes {
            match n.kind {
                NodeKind::Dir => stack.extend(n.subtree),
                NodeKind::File => used.extend(n.content.iter().copied()),
                _ => {}
            }
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;

    const PACK_SIZE: u64 = 16 << 20;

    /// A data pack of `blobs` blobs of `len` bytes each, all used.
    fn pack(n: u8, blobs: u32, len: u32, used: &mut HashSet<Id>) -> (Id, IndexPack) {
        let id = Id([n; 32]);
        let blobs: Vec<PackedBlob> = (0..blobs)
            .map(|i| {
                let mut b = [n; 32];
                b[..4].copy_from_slice(&i.to_le_bytes());
                let blob = Id(b);
                used.insert(blob);
                PackedBlob {
                    id: blob,
                    blob_type: BlobType::Data,
                    offset: 24 + i * len,
                    length: len,
                    raw_length: len,
                    compression: Compression::None,
                    start: None,
                }
            })
            .collect();
        let size = 24 + u64::from(len) * blobs.len() as u64;
        (id, IndexPack { id, size, blobs })
    }

    /// The plan with nothing damaged.
    fn plan_of(packs: &HashMap<Id, IndexPack>, used: &HashSet<Id>, opts: &PruneOptions) -> Plan {
        plan_packs(
            packs,
            used,
            &HashSet::new(),
            &HashSet::new(),
            opts,
            PACK_SIZE,
        )
    }

    fn fates(plan: &Plan) -> HashMap<Id, Fate> {
        plan.packs
            .iter()
            .map(|(id, fate, _)| (*id, *fate))
            .collect()
    }

    #[test]
    fn packs_full_by_count_are_not_merged_again() {
        // Tiny files grouped: small by bytes, at the blob limit by count.
        // Merged, they came out as as many packs again, at every prune.
        let mut used = HashSet::new();
        let full: Vec<_> = (1..=3)
            .map(|n| {
                pack(
                    n,
                    crate::saver::MAX_BLOBS_PER_PACK as u32 - 10,
                    8,
                    &mut used,
                )
            })
            .collect();
        let tiny: Vec<_> = (4..=5).map(|n| pack(n, 10, 100, &mut used)).collect();
        let packs: HashMap<Id, IndexPack> = full.iter().chain(&tiny).cloned().collect();
        let opts = PruneOptions {
            repack_small: true,
            ..PruneOptions::default()
        };
        let plan = plan_of(&packs, &used, &opts);
        let f = fates(&plan);
        for (id, _) in &full {
            assert_eq!(f[id], Fate::Keep);
        }
        for (id, _) in &tiny {
            assert_eq!(f[id], Fate::Repack);
        }
        assert_eq!(plan.candidates.left_for_later, 0);
    }

    #[test]
    fn under_a_budget_the_smallest_small_packs_that_fit_are_merged() {
        let mut used = HashSet::new();
        let packs: HashMap<Id, IndexPack> = (1..=12u8)
            .map(|n| pack(n, 1, 1000 * u32::from(n), &mut used))
            .collect();
        let opts = PruneOptions {
            max_repack_bytes: Some(6000),
            ..PruneOptions::default()
        };
        let plan = plan_of(&packs, &used, &opts);
        let f = fates(&plan);
        // 1000 + 2000 + 3000 fit in 6000; the other nine wait.
        for n in 1..=12u8 {
            let want = if n <= 3 { Fate::Repack } else { Fate::Keep };
            assert_eq!(f[&Id([n; 32])], want, "pack {n}");
        }
        assert_eq!(plan.candidates.small, 3);
        assert_eq!(plan.candidates.left_for_later, 9);
        // Room for one pack only merges nothing: one rewritten is as small.
        let opts = PruneOptions {
            max_repack_bytes: Some(1500),
            ..PruneOptions::default()
        };
        let plan = plan_of(&packs, &used, &opts);
        assert!(fates(&plan).values().all(|f| *f == Fate::Keep));
        // Never "later" with this budget: it needs room for two.
        assert_eq!(plan.candidates.left_for_later, 0);
        assert_eq!(plan.candidates.beyond_limit, 12);
        assert_eq!(plan.candidates.limit_needed, 3000);
    }
}
