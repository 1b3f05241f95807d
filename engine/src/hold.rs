//! Legal hold: snapshots that nothing may remove until the hold is released.
//!
//! Snapshot records are immutable objects named by the hash of their bytes,
//! so setting or releasing a hold rewrites the record: the new record (with
//! `hold` changed and `original` naming the first ID the snapshot had) is
//! written and durable first, then the old record is deleted, as restic's
//! `tag` does. A crash in between leaves two records of one snapshot;
//! [`logical_snapshots`](crate::lineage::logical_snapshots) folds them back into one, and the next `hold` on it
//! leaves a single record again (see `format-spec/snapshot-hold.md`).

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::lineage::{deletable_with, logical_snapshots};
use crate::repository::Repository;
use crate::snapshot::Snapshot;

/// The refusal of a command that would change or remove the snapshots
/// `held` (short IDs) under legal hold; `nothing` says what did not happen
/// ("removed", "rewritten") and `or` offers another way out, if any.
pub fn refuse_held(held: &[String], nothing: &str, or: &str) -> Error {
    Error::InvalidInput(format!(
        "snapshot {} {} under legal hold; nothing was {nothing} (release with `cairn hold --release {}` first{or})",
        held.join(", "),
        if held.len() == 1 { "is" } else { "are" },
        held.join(" ")
    ))
}

/// What [`set_hold`] did to one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldChange {
    /// The record the user named.
    pub old: Id,
    /// The record that now holds the snapshot (`old` if unchanged).
    pub new: Id,
    /// The snapshot's first ID (its lineage).
    pub original: Id,
    /// Whether a record was rewritten.
    pub changed: bool,
    /// Held after the call.
    pub hold: bool,
}

/// What [`rewrite_snapshots`] did to one snapshot.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// The record the user named.
    pub old: Id,
    /// The record that now holds the snapshot (`old` if unchanged).
    pub new: Id,
    /// The snapshot's first ID (its lineage).
    pub original: Id,
    /// Whether a record was rewritten.
    pub changed: bool,
    /// The snapshot after the edit.
    pub snapshot: Snapshot,
}

/// Applies `edit` to the snapshots named by `specs` (IDs, unique prefixes
/// or `latest`), under an exclusive lock. Snapshot records are immutable,
/// so a changed snapshot gets a new record (with `original` naming its
/// lineage), written before every older record of it is deleted.
///
/// Every spec is resolved before anything is written, so a bad one changes
/// nothing. A snapshot the edit leaves as it is, stored as one record, is
/// left alone.
pub fn rewrite_snapshots(
    repo: &Repository,
    specs: &[String],
    edit: &dyn Fn(&mut Snapshot),
) -> Result<Vec<Rewrite>> {
    let lock = repo.lock(true)?;
    // A rewrite deletes the old record; checked before the new one is written.
    repo.ensure_may_delete("changing tags or holds (it replaces snapshot records)")?;
    let mut targets = Vec::new();
    for spec in specs {
        let (id, s) = repo.find_snapshot_or_its_rewrite(spec)?;
        // One snapshot is one lineage at one time: a backdated record
        // claiming the lineage is another snapshot, named on its own.
        let key = s.logical_key(id);
        if !targets
            .iter()
            .any(|(i, t, _): &(Id, Snapshot, Id)| t.logical_key(*i) == key)
        {
            targets.push((id, s, key.0));
        }
    }
    // A damaged record (its lookup above said so) stays as it is: nothing
    // can tell whose it is, so no rewrite deletes it, and it must not keep
    // a hold off every other snapshot until it is forgotten.
    let all = repo.records_past_damage(|_| {})?;
    let trees: std::collections::HashMap<Id, Id> =
        all.iter().map(|(id, s)| (*id, s.tree)).collect();
    let logical = logical_snapshots(all);
    let mut out = Vec::new();
    for (id, s, lineage) in targets {
        // Start from the record that stands for the snapshot, in the merged
        // view: after an interrupted rewrite the record named may lack a
        // hold another record carries, and a damaged record kept beside its
        // repair must not take the repair's place.
        let l = logical
            .iter()
            .find(|l| l.records.contains(&id))
            .ok_or_else(|| Error::Missing(format!("snapshot {id}")))?;
        // The records the new one replaces; an intact record of other
        // content stays (see `deletable_with`).
        let records = deletable_with(repo, l, &trees)?;
        let mut edited = l.snapshot.clone();
        edit(&mut edited);
        if edited == s && records == [id] {
            out.push(Rewrite {
                old: id,
                new: id,
                original: lineage,
                changed: false,
                snapshot: s,
            });
            continue;
        }
        edited.rewritten_from(lineage, records.iter().copied());
        // The new record is durable (Backend::write) before any old one
        // goes. Only under a lock still held: one lost meanwhile (a laptop
        // asleep) let a prune delete the snapshot's data, and a hold then
        // named data that is gone.
        let new = crate::lock::write_snapshot(&lock, repo, &edited)?;
        for r in records.iter().filter(|r| **r != new) {
            lock.check_fresh()?;
            repo.backend().delete(FileKind::Snapshot, &r.to_hex())?;
        }
        out.push(Rewrite {
            old: id,
            new,
            original: lineage,
            changed: true,
            snapshot: edited,
        });
    }
    Ok(out)
}

/// Sets (`hold = true`) or releases the legal hold of the snapshots named
/// by `specs` (see [`rewrite_snapshots`]).
pub fn set_hold(repo: &Repository, specs: &[String], hold: bool) -> Result<Vec<HoldChange>> {
    Ok(rewrite_snapshots(repo, specs, &|s| s.hold = hold)?
        .into_iter()
        .map(|r| HoldChange {
            old: r.old,
            new: r.new,
            original: r.original,
            changed: r.changed,
            hold,
        })
        .collect())
}

/// Changes the tags of the snapshots named by `specs`: `set` replaces them
/// all (when given) but those of [`crate::snapshot::MARKER_TAGS`], then
/// `add` and `remove` apply (see [`rewrite_snapshots`]); removing a marker
/// tag is refused.
pub fn change_tags(
    repo: &Repository,
    specs: &[String],
    set: Option<&[String]>,
    add: &[String],
    remove: &[String],
) -> Result<Vec<Rewrite>> {
    crate::snapshot::check_removable_tags(remove)?;
    crate::snapshot::check_user_tags(add)?;
    crate::snapshot::check_user_tags(set.unwrap_or_default())?;
    rewrite_snapshots(repo, specs, &|s| {
        if let Some(set) = set {
            let mut tags = crate::snapshot::clean_tags(set);
            for t in &s.tags {
                if crate::snapshot::MARKER_TAGS.contains(&t.as_str()) && !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
            s.tags = tags;
        }
        for t in crate::snapshot::clean_tags(add) {
            if !s.tags.contains(&t) {
                s.tags.push(t);
            }
        }
        // A stored tag with a comma (from before tags were split) goes
        // when all of its parts are removed.
        let gone = |p: &str| remove.iter().any(|r| r.trim() == p);
        s.tags.retain(|t| !crate::snapshot::tag_parts(t).all(gone));
    })
}
