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
    /// Every record of this snapshot, `id` included.
    pub records: Vec<Id>,
}

/// Folds snapshot records into logical snapshots, oldest first.
///
/// Records belong together when they share a lineage (`original`, or the
/// record's own ID when it was never rewritten) and a time: no rewrite
/// changes the time, so a record claiming a lineage with another one was
/// written by someone else (anyone holding the key, an append-only key
/// too), and is a snapshot of its own, judged by its own time. Dated
/// back, it stood for the real snapshot and took it along when a policy
/// let it go. Among them, the
/// representative is a held record if there is one, then a repaired one
/// (`repair snapshots` keeps the damaged record beside it), then a
/// rewritten one (it was written after the original), then the one whose
/// `former` names the most others (written after them), then the highest ID. The logical
/// snapshot is held if any record is: an interrupted release must not
/// expose a snapshot that is still held on disk.
pub fn logical_snapshots(records: Vec<(Id, Snapshot)>) -> Vec<Logical> {
    let mut by_lineage: BTreeMap<_, Vec<(Id, Snapshot)>> = BTreeMap::new();
    for (id, s) in records {
        by_lineage
            .entry(s.logical_key(id))
            .or_default()
            .push((id, s));
    }
    let mut out: Vec<Logical> = by_lineage
        .into_values()
        .map(|mut recs| {
            let ids: Vec<Id> = recs.iter().map(|(id, _)| *id).collect();
            // A record whose `former` names others of them was written
            // after those (an interrupted second tag change showed the old
            // tags or the new by the toss of the IDs); counted, as after
            // two interrupted changes the newest names both older records.
            let later = |s: &Snapshot| s.former.iter().filter(|f| ids.contains(f)).count();
            recs.sort_by_key(|(id, s)| {
                (s.hold, s.is_repaired(), s.original.is_some(), later(s), *id)
            });
            let held = recs.iter().any(|(_, s)| s.hold);
            let records = recs.iter().map(|(id, _)| *id).collect();
            let (id, mut snapshot) = recs.pop().expect("a lineage has a record");
            snapshot.hold = held;
            Logical {
                id,
                snapshot,
                records,
            }
        })
        .collect();
    out.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
    out
}

/// The records of `l` (whose trees `trees` gives, by record) that a command
/// rewriting or forgetting it may delete without being asked by ID:
/// those of the same content, and damaged ones (a tree or data blob of
/// theirs is not in the index: a damaged record kept beside its repair).
/// An intact record of other content stays: it may be a leftover of an
/// interrupted rewrite, or a real snapshot whose lineage a record written
/// by anyone holding the key (an append-only key too) claims, shown in its
/// place; `check` tells which.
pub fn deletable_with(
    repo: &crate::repository::Repository,
    l: &Logical,
    trees: &std::collections::HashMap<Id, Id>,
) -> crate::error::Result<Vec<Id>> {
    let reader = repo.index_reader()?;
    let mut out = Vec::new();
    for id in &l.records {
        let tree = trees[id];
        if tree == l.snapshot.tree || is_damaged(repo, &reader, tree)? {
            out.push(*id);
        }
    }
    Ok(out)
}

/// Whether a tree, or anything below it, is missing from the index. A tree
/// that is indexed but does not read counts as intact: the index keeps one
/// copy of each blob, and anyone holding the key can store a bad copy under
/// a real blob's ID; a record must not be deleted for that. Errors other
/// than damage (the store did not answer) fail.
pub(crate) fn is_damaged(
    repo: &crate::repository::Repository,
    reader: &crate::localindex::IndexReader,
    root: Id,
) -> crate::error::Result<bool> {
    use crate::error::Error;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root];
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        if !reader.contains(&t)? {
            return Ok(true);
        }
        let tree = match repo.load_tree_in(reader, &t) {
            Ok(tree) => tree,
            Err(Error::Missing(_)) => return Ok(true),
            Err(Error::Corrupt { .. }) => continue,
            Err(e) => return Err(e),
        };
        for n in &tree.nodes {
            stack.extend(n.subtree);
            for b in &n.content {
                if !reader.contains(b)? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_two_rewrites_the_one_naming_the_other_in_former_stands() {
        // An interrupted second `tag`: both records carry `original`, and
        // the older (old tags) had the higher ID, so it stood.
        let first = Id([1; 32]);
        let older_id = Id([9; 32]);
        let mut older = crate::repository::snapshot_at("2026-01-03T10:15:00Z");
        older.original = Some(first);
        older.tags = vec!["a".into()];
        let mut newer = older.clone();
        newer.tags.push("keep".into());
        newer.former = vec![older_id];
        for records in [
            vec![(older_id, older.clone()), (Id([2; 32]), newer.clone())],
            vec![(Id([2; 32]), newer.clone()), (older_id, older.clone())],
        ] {
            let l = logical_snapshots(records);
            assert_eq!(l.len(), 1);
            assert_eq!(l[0].id, Id([2; 32]));
            assert_eq!(l[0].snapshot.tags, ["a", "keep"]);
        }
        // Two interrupted changes: the newest names both others; the
        // middle one (of the highest ID) only the first.
        let mut middle = older.clone();
        middle.former = vec![Id([3; 32])];
        let mut newest = older.clone();
        newest.tags = vec!["a".into(), "b".into(), "c".into()];
        newest.former = vec![Id([3; 32]), Id([9; 32])];
        let l = logical_snapshots(vec![
            (Id([3; 32]), older),
            (Id([9; 32]), middle),
            (Id([1; 32]), newest),
        ]);
        assert_eq!(l[0].id, Id([1; 32]));
        assert_eq!(l[0].snapshot.tags, ["a", "b", "c"]);
    }
}
