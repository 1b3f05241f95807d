//! `repair snapshots`: snapshots rewritten without the data they lost.

use std::rc::Rc;

use serde::Serialize;

use crate::backend::FileKind;
use crate::blob::BlobLocation;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::saver::BlobSaver;

/// How a directory whose listing was lost is named among the dropped
/// paths, after its path.
const LISTING_LOST: &str = " (directory listing lost; restored as empty)";

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
    /// Packs no index named whose header opens (a command killed before
    /// it wrote their index file left them): added to the index first, in
    /// a new index file, so that what they hold counts as present (with
    /// `dry_run`, only read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub indexed_packs: Vec<String>,
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
    /// In a dry run, the blobs of the packs no index named (a real run
    /// indexed them first).
    unindexed: std::collections::HashMap<Id, BlobLocation>,
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
        Ok(self.unindexed.contains_key(id) || self.reader.contains(id)?)
    }

    fn load_tree(&self, id: &Id) -> Result<crate::tree::Tree> {
        match self.unindexed.get(id) {
            Some(loc) => self.repo.load_tree_at(loc),
            None => self.repo.load_tree(id),
        }
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
        // A damaged read may be the read's fault (memory, the wire), not
        // the data's: the listing is lost only when a second read agrees,
        // as `repair packs` asks of a pack.
        let read = || match self.load_tree(&id) {
            Err(Error::Corrupt { .. }) => self.load_tree(&id),
            r => r,
        };
        let tree = match self.has(&id)?.then(read) {
            Some(Ok(t)) => t,
            // Only data that is provably gone or damaged is dropped; any
            // other error (I/O, network) aborts rather than lose a directory.
            Some(Err(e)) if !matches!(e, Error::Missing(_) | Error::Corrupt { .. }) => {
                return Err(e);
            }
            _ => {
                self.lost_listings += 1;
                dropped.push(LISTING_LOST.to_string());
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
    // A dry run only reads: backups may go on beside it, as beside
    // `repair packs --dry-run`.
    let lock = repo.lock(!dry_run)?;
    // Without `forget` the repair only adds snapshots, which append-only allows.
    if forget && !dry_run {
        repo.ensure_may_delete("`repair snapshots --forget`")?;
    }
    let taken = crate::repair::unindexed::find(repo)?;
    taken.refuse_missing()?;
    if !dry_run {
        taken.index(repo, &lock)?;
    }
    let (snapshots, unreadable) = repo.snapshots_lenient()?;
    // A record not read for a passing reason (a timeout, a 5xx) may be of
    // a snapshot that lost data: the others were repaired, with exit 0,
    // and it was left as it was. Damaged records are reported below.
    if let Some(e) = unreadable.iter().find(|e| super::passing(e)) {
        return Err(Error::Backend(format!(
            "cannot read a snapshot record: {e}; no snapshot was repaired, run `repair \
             snapshots` again"
        )));
    }
    let mut report = RepairSnapshotsReport {
        snapshots: snapshots.len(),
        unreadable: unreadable.iter().map(|e| e.to_string()).collect(),
        unusable_packs: taken.unusable.iter().map(Id::to_hex).collect(),
        indexed_packs: taken.packs.iter().map(|p| p.id.to_hex()).collect(),
        dry_run,
        ..Default::default()
    };
    let saver = BlobSaver::new(repo).with_lock(&lock);
    let mut fixer = TreeFixer {
        repo,
        saver: &saver,
        reader: repo.index_reader()?,
        unindexed: if dry_run {
            taken.locations()
        } else {
            Default::default()
        },
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
        rewrites.push((id, snap.clone(), fixed, dropped));
    }
    report.repaired_before = stale
        .iter()
        .map(|(old, repair)| (old.to_hex(), repair.to_hex()))
        .collect();
    report.lost_listings = fixer.lost_listings;
    if dry_run {
        report.repaired = rewrites
            .iter()
            .map(|(id, ..)| (id.to_hex(), String::new()))
            .collect();
        for (old, of) in &superseded {
            let by = standing.get(of).copied().unwrap_or(*of);
            report.repaired_before.push((old.to_hex(), by.to_hex()));
        }
        return Ok(report);
    }
    saver.flush()?;
    for (old, mut snap, fixed, dropped) in rewrites {
        snap.tree = fixed.id;
        // What `snapshots`, restore's progress and serve show as its size.
        if let Some(s) = snap.summary.as_mut() {
            s.total_bytes = fixed.bytes;
        }
        snap.rewritten_from(snap.original.unwrap_or(old), [old]);
        // A capture whose file was dropped (or whose directory's listing
        // was lost) is no longer in it: verify-restore would fail on it
        // for good while check passes.
        snap.forget_captures_under(
            dropped
                .iter()
                .map(|p| p.strip_suffix(LISTING_LOST).unwrap_or(p)),
        );
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
