//! Lineage: the records of one snapshot, folded into the snapshot users see.
//!
//! A snapshot record is immutable, so a snapshot that is changed (held,
//! tagged, repaired) gets a new record naming its first ID in `original`,
//! and the old record is deleted once the new one is durable. A crash in
//! between, or `repair snapshots` without `--forget`, leaves several records
//! of one snapshot: [`logical_snapshots`] folds them into one, represented
//! by the record that stands for it (see `format-spec/snapshot-hold.md`).

use std::collections::BTreeMap;

use crate::id::Id;
use crate::snapshot::Snapshot;

/// One snapshot as users and retention see it: possibly several records
/// left by an interrupted rewrite.
#[derive(Debug, Clone)]
pub struct Logical {
    /// The record that represents it (see [`logical_snapshots`]).
    pub id: Id,
    /// That record's content, with `hold` set if any record is held.
    pub snapshot: Snapshot,
    /// Every record of this snapshot with the same content (tree), `id`
    /// included: what holding, tagging or forgetting it replaces or
    /// deletes.
    pub records: Vec<Id>,
    /// Records of the same lineage with other content: a damaged record
    /// kept beside its repair, a leftover of an interrupted `rewrite`, or
    /// a record written by anyone holding the key that claims this lineage
    /// (`check` tells which). Shown through `id`, but never deleted with
    /// it: only when named (`forget ID`), or by the `rewrite` that turns
    /// them into this very tree.
    pub others: Vec<Id>,
}

/// Folds snapshot records into logical snapshots, oldest first.
///
/// Records belong together when they share a lineage (`original`, or the
/// record's own ID when it was never rewritten). Among them, the
/// representative is a held record if there is one, then a repaired one
/// (`repair snapshots` keeps the damaged record beside it), then a
/// rewritten one (it was written after the original), then the highest ID. The logical
/// snapshot is held if any record is: an interrupted release must not
/// expose a snapshot that is still held on disk.
pub fn logical_snapshots(records: Vec<(Id, Snapshot)>) -> Vec<Logical> {
    let mut by_lineage: BTreeMap<Id, Vec<(Id, Snapshot)>> = BTreeMap::new();
    for (id, s) in records {
        by_lineage.entry(s.lineage(id)).or_default().push((id, s));
    }
    let mut out: Vec<Logical> = by_lineage
        .into_values()
        .map(|mut recs| {
            recs.sort_by_key(|(id, s)| (s.hold, s.is_repaired(), s.original.is_some(), *id));
            let held = recs.iter().any(|(_, s)| s.hold);
            let tree = recs.last().expect("a lineage has a record").1.tree;
            let (records, others) = recs.iter().partition::<Vec<_>, _>(|(_, s)| s.tree == tree);
            let records = records.into_iter().map(|(id, _)| *id).collect();
            let others = others.into_iter().map(|(id, _)| *id).collect();
            let (id, mut snapshot) = recs.pop().expect("a lineage has a record");
            snapshot.hold = held;
            Logical {
                id,
                snapshot,
                records,
                others,
            }
        })
        .collect();
    out.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
    out
}
