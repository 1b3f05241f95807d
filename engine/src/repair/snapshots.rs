//! `repair snapshots`: snapshots rewritten without the data they lost.

use std::rc::Rc;

use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::saver::BlobSaver;

/// Fails if the repository holds packs its index does not name and whose
/// header opens: the data `repair snapshots` would drop as missing may be
/// in them, and the prune after it would delete them as unused. `repair
/// index` finds it again. Returns those whose header does not open.
fn refuse_unindexed_packs(repo: &Repository) -> Result<Vec<Id>> {
    let Storage {
        unindexed,
        unusable,
        missing,
    } = index_against_storage(repo)?;
    if unindexed > 0 {
        return Err(Error::InvalidInput(format!(
            "{unindexed} pack(s) in the repository are not in the index and may hold the data \
             these snapshots miss; nothing was changed (run `cairn repair index` first)"
        )));
    }
    // The repair judges data by the index: blobs of a pack that is gone
    // still count as present, and it dropped nothing, exit 0.
    if let Some(first) = missing.first() {
        return Err(Error::InvalidInput(format!(
            "{} pack(s) the index names are missing from the storage (first: {}), so the \
             data they held still counts as present; nothing was changed (run `cairn repair \
             packs` with the IDs `cairn check` names first)",
            missing.len(),
            first.to_hex()
        )));
    }
    Ok(unusable)
}

/// How many packs the repository holds that its index does not name and
/// `repair index` could add, and those in no index whose header does not
/// open, which it cannot (what they hold cannot be found).
pub(crate) fn unindexed_packs(repo: &Repository) -> Result<(usize, Vec<Id>)> {
    let s = index_against_storage(repo)?;
    Ok((s.unindexed, s.unusable))
}

/// The index against the packs stored.
struct Storage {
    /// Stored packs the index does not name, whose header opens (or could
    /// not be read for another reason than damage).
    unindexed: usize,
    /// Stored packs the index does not name whose header is damaged: what
    /// they hold cannot be found, so nothing waits for them.
    unusable: Vec<Id>,
    /// Packs the index names that are not stored.
    missing: Vec<Id>,
}

fn index_against_storage(repo: &Repository) -> Result<Storage> {
    let mut indexed: std::collections::HashSet<Id> = repo
        .index()
        .packs()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let (mut unindexed, mut unusable) = (0, Vec::new());
    for l in repo.backend().list(FileKind::Pack)? {
        match Id::from_hex(&l.name) {
            Ok(id) if indexed.remove(&id) => {}
            // Once one pack blocks, the rest need not be read (with the
            // index lost, that would be every pack, three reads each).
            Ok(_) if unindexed > 0 => unindexed += 1,
            Ok(id) => match crate::repair::read_pack_header(repo, &l.name, l.size) {
                Err(Error::Corrupt { .. }) => unusable.push(id),
                _ => unindexed += 1,
            },
            Err(_) => {}
        }
    }
    let mut missing: Vec<Id> = indexed.into_iter().collect();
    missing.sort();
    unusable.sort();
    Ok(Storage {
        unindexed,
        unusable,
        missing,
    })
}

/// What `repair snapshots` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots examined.
    pub snapshots: usize,
    /// Snapshots rewritten: (old ID, new ID).
    pub repaired: Vec<(String, String)>,
    /// Paths dropped because their data or listing is missing (`old-short-id:/path`).
    pub dropped: Vec<String>,
    /// Original snapshot records removed (with `forget`).
    pub removed: usize,
    /// Snapshot records that cannot be read at all.
    pub unreadable: Vec<String>,
    /// Packs in no index whose header does not open (`repair index` left
    /// them out): what they hold cannot be found, so the repair went on
    /// without them; `prune` deletes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unusable_packs: Vec<String>,
    /// Damaged records left beside a repair an earlier run wrote (without
    /// `--forget`): (old ID, the repair's ID). Not repaired again (each
    /// run wrote one more repaired record of the same snapshot); removed
    /// with `--forget`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired_before: Vec<(String, String)>,
    /// Directory listings that could not be read (each counted once). What
    /// was below them may still be stored, in trees no snapshot reaches any
    /// more: `recover` saves them, `prune` deletes them.
    pub lost_listings: usize,
    /// Nothing was written.
    pub dry_run: bool,
}

struct TreeFixer<'a, 'r> {
    repo: &'r Repository,
    saver: &'a BlobSaver<'r>,
    reader: crate::localindex::IndexReader,
    dry_run: bool,
    /// Each tree fixed, with what was dropped from it (paths below it):
    /// a tree shared by several snapshots is fixed once, and what it lost
    /// is reported for each of them.
    memo: std::collections::HashMap<Id, (Fixed, Rc<Vec<String>>)>,
    /// Trees whose listing was lost.
    lost_listings: usize,
}

/// A tree after [`TreeFixer::fix`].
#[derive(Clone, Copy)]
struct Fixed {
    /// The repaired tree's ID.
    id: Id,
    /// Whether anything was dropped.
    changed: bool,
    /// The size of the files left in it, all the way down (the snapshot's
    /// new `total_bytes`).
    bytes: u64,
}

impl TreeFixer<'_, '_> {
    fn has(&self, id: &Id) -> Result<bool> {
        self.reader.contains(id)
    }

    /// The repaired version of tree `id`: entries whose data is missing are
    /// dropped, unreadable directories become empty. Returns it with what
    /// was dropped, by path below the tree (`/dir/file`; the tree itself,
    /// if its listing is lost, as the empty path).
    fn fix(&mut self, id: Id) -> Result<(Fixed, Rc<Vec<String>>)> {
        if let Some((fixed, dropped)) = self.memo.get(&id) {
            return Ok((*fixed, dropped.clone()));
        }
        let mut dropped = Vec::new();
        let tree = match self.has(&id)?.then(|| self.repo.load_tree(&id)) {
            Some(Ok(t)) => t,
            // Only data that is provably gone or damaged is dropped; any
            // other error (I/O, network) aborts rather than lose a directory.
            Some(Err(e)) if !matches!(e, Error::Missing(_) | Error::Corrupt { .. }) => {
                return Err(e);
            }
            _ => {
                self.lost_listings += 1;
                dropped.push(" (directory listing lost; restored as empty)".to_string());
                let empty = crate::tree::Tree::default();
                let fixed = Fixed {
                    id: self.save_tree(&empty)?,
                    changed: true,
                    bytes: 0,
                };
                let dropped = Rc::new(dropped);
                self.memo.insert(id, (fixed, dropped.clone()));
                return Ok((fixed, dropped));
            }
        };
        let mut changed = false;
        let mut bytes = 0;
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut n in tree.nodes {
            let p = format!("/{}", n.display_name());
            match n.kind {
                crate::tree::NodeKind::Dir => {
                    if let Some(sub) = n.subtree {
                        let (f, below) = crate::deep::deeper(|| self.fix(sub))?;
                        dropped.extend(below.iter().map(|b| format!("{p}{b}")));
                        n.subtree = Some(f.id);
                        changed |= f.changed;
                        bytes += f.bytes;
                    }
                    nodes.push(n);
                }
                crate::tree::NodeKind::File => {
                    let mut complete = true;
                    for b in &n.content {
                        if !self.has(b)? {
                            complete = false;
                            break;
                        }
                    }
                    if complete {
                        bytes += n.size;
                        nodes.push(n);
                    } else {
                        dropped.push(p);
                        changed = true;
                    }
                }
                _ => nodes.push(n),
            }
        }
        let result = Fixed {
            id: if changed {
                self.save_tree(&crate::tree::Tree { nodes })?
            } else {
                id
            },
            changed,
            bytes,
        };
        let dropped = Rc::new(dropped);
        self.memo.insert(id, (result, dropped.clone()));
        Ok((result, dropped))
    }

    fn save_tree(&self, t: &crate::tree::Tree) -> Result<Id> {
        if self.dry_run {
            return Ok(self.repo.key().blob_id(&t.encode()));
        }
        Ok(self.saver.save(crate::blob::BlobType::Tree, &t.encode())?.0)
    }
}

/// Rewrites snapshots that refer to missing data: files whose blobs are
/// gone are dropped, unreadable directories become empty. The new snapshot
/// carries the tag `repaired` and names the old one in `original` (and
/// loses `copied_from`: it is no longer a faithful copy); the old record is
/// removed only with `forget`.
pub fn repair_snapshots(
    repo: &Repository,
    forget: bool,
    dry_run: bool,
) -> Result<RepairSnapshotsReport> {
    let lock = repo.lock(true)?;
    // Without `forget` the repair only adds snapshots, which append-only allows.
    if forget && !dry_run {
        repo.ensure_may_delete("`repair snapshots --forget`")?;
    }
    let unusable = refuse_unindexed_packs(repo)?;
    let (snapshots, unreadable) = repo.snapshots_lenient()?;
    let mut report = RepairSnapshotsReport {
        snapshots: snapshots.len(),
        unreadable: unreadable.iter().map(|e| e.to_string()).collect(),
        unusable_packs: unusable.iter().map(Id::to_hex).collect(),
        dry_run,
        ..Default::default()
    };
    let saver = BlobSaver::new(repo).with_lock(&lock);
    let mut fixer = TreeFixer {
        repo,
        saver: &saver,
        reader: repo.index().reader()?,
        dry_run,
        memo: Default::default(),
        lost_listings: 0,
    };
    // The repairs already written: by the snapshot they stand for and tree.
    let repairs: std::collections::HashMap<(Id, Id), Id> = snapshots
        .iter()
        .filter(|(_, s)| s.is_repaired())
        .filter_map(|(id, s)| Some(((s.original?, s.tree), *id)))
        .collect();
    let mut fixes = Vec::new();
    for (id, snap) in &snapshots {
        let (fixed, dropped) = fixer.fix(snap.tree)?;
        if fixed.changed {
            fixes.push((*id, snap, fixed, dropped));
        }
    }
    // A repair that itself lost data since stands for nothing: the record
    // it repaired is repaired anew (with --forget both would go, and the
    // tree rebuilt for it with them).
    let damaged_now: std::collections::HashSet<Id> = fixes.iter().map(|(id, ..)| *id).collect();
    // Snapshots whose own record (not a repair) is repaired in this run: a
    // repair of theirs that lost data since is not repaired in turn (the
    // two would stand for one snapshot, and `snapshots` may show either).
    let origin = |id: Id, s: &crate::snapshot::Snapshot| s.original.unwrap_or(id);
    let fixing_own: std::collections::HashSet<Id> = fixes
        .iter()
        .filter(|(_, s, ..)| !s.is_repaired())
        .map(|(id, s, ..)| origin(*id, s))
        .collect();
    let mut rewrites = Vec::new();
    let mut stale = Vec::new();
    let mut superseded = Vec::new();
    // What stands for each snapshot now: an earlier repair kept, or the
    // record this run repairs (its new ID once written).
    let mut standing: std::collections::HashMap<Id, Id> = std::collections::HashMap::new();
    for (id, snap, fixed, dropped) in fixes {
        let of = origin(id, snap);
        if snap.is_repaired() && fixing_own.contains(&of) {
            superseded.push((id, of));
            continue;
        }
        if let Some(repair) = repairs
            .get(&(of, fixed.id))
            .filter(|r| !damaged_now.contains(r))
        {
            stale.push((id, *repair));
            standing.insert(of, *repair);
            continue;
        }
        report
            .dropped
            .extend(dropped.iter().map(|p| format!("{}:{p}", id.short())));
        standing.entry(of).or_insert(id);
        rewrites.push((id, snap.clone(), fixed));
    }
    report.repaired_before = stale
        .iter()
        .map(|(old, repair)| (old.to_hex(), repair.to_hex()))
        .collect();
    report.lost_listings = fixer.lost_listings;
    if dry_run {
        report.repaired = rewrites
            .iter()
            .map(|(id, _, _)| (id.to_hex(), String::new()))
            .collect();
        for (old, of) in &superseded {
            let by = standing.get(of).copied().unwrap_or(*of);
            report.repaired_before.push((old.to_hex(), by.to_hex()));
        }
        return Ok(report);
    }
    saver.flush()?;
    for (old, mut snap, fixed) in rewrites {
        snap.tree = fixed.id;
        // What `snapshots`, restore's progress and serve show as its size.
        if let Some(s) = snap.summary.as_mut() {
            s.total_bytes = fixed.bytes;
        }
        snap.original = Some(snap.original.unwrap_or(old));
        // A repaired copy no longer holds what its source snapshot holds:
        // dropping `copied_from` lets the next `copy` bring the complete
        // snapshot again, and keeps the repaired tree from being reused as
        // the translation of the source's.
        snap.copied_from = None;
        if !snap.is_repaired() {
            snap.tags.push(crate::snapshot::REPAIRED_TAG.into());
        }
        // Taken back if the lock was lost meanwhile (see `rewrite`).
        let new = crate::lock::write_snapshot(&lock, repo, &snap)?;
        if let Some(s) = snap.original.and_then(|o| standing.get_mut(&o))
            && *s == old
        {
            *s = new;
        }
        if forget {
            lock.check_fresh()?;
            repo.backend().delete(FileKind::Snapshot, &old.to_hex())?;
            report.removed += 1;
        }
        report.repaired.push((old.to_hex(), new.to_hex()));
    }
    for (old, of) in &superseded {
        let by = standing.get(of).copied().unwrap_or(*of);
        report.repaired_before.push((old.to_hex(), by.to_hex()));
    }
    if forget {
        for old in stale.iter().chain(&superseded).map(|(old, _)| old) {
            lock.check_fresh()?;
            repo.backend().delete(FileKind::Snapshot, &old.to_hex())?;
            report.removed += 1;
        }
    }
    Ok(report)
}
