//! Repairs that rebuild derived state from what the repository holds.

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::IndexPack;
use crate::pack;
use crate::repository::Repository;
use crate::saver::BlobSaver;

/// What `repair index` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairIndexReport {
    /// Packs whose headers were read.
    pub packs: usize,
    /// Blobs indexed.
    pub blobs: usize,
    /// Packs that could not be read (left out of the index, not deleted).
    pub unreadable: Vec<String>,
    /// Index files written.
    pub index_files_written: usize,
    /// Old index files removed.
    pub index_files_removed: usize,
}

fn read_pack_header(repo: &Repository, name: &str, size: u64) -> Result<IndexPack> {
    let id = Id::from_hex(name)?;
    let min = (pack::PREFIX_LEN + pack::TRAILER_LEN) as u64;
    if size < min {
        return Err(Error::corrupt(
            format!("pack {name}"),
            "too short to be a pack",
        ));
    }
    let b = repo.backend();
    let prefix = b.read_range(FileKind::Pack, name, 0, pack::PREFIX_LEN as u64)?;
    let trailer = b.read_range(
        FileKind::Pack,
        name,
        size - pack::TRAILER_LEN as u64,
        pack::TRAILER_LEN as u64,
    )?;
    let hlen = pack::header_len(&id, &trailer, size)? as u64;
    let hct = b.read_range(
        FileKind::Pack,
        name,
        size - pack::TRAILER_LEN as u64 - hlen,
        hlen,
    )?;
    let blobs = pack::open_header(repo.key(), &id, &prefix, &hct)?;
    Ok(IndexPack { id, size, blobs })
}

/// Rebuilds the repository's index files (and the local index) from pack
/// headers. New index files are written before the old ones are removed.
pub fn repair_index(repo: &Repository) -> Result<RepairIndexReport> {
    let lock = repo.lock(true)?;
    repo.ensure_may_delete("`repair index` (it replaces the index files)")?;
    let backend = repo.backend();
    let old: Vec<String> = backend
        .list(FileKind::Index)?
        .into_iter()
        .map(|l| l.name)
        .collect();
    let listed = backend.list(FileKind::Pack)?;
    let results: Vec<(String, Result<IndexPack>)> = listed
        .par_iter()
        .map(|l| (l.name.clone(), read_pack_header(repo, &l.name, l.size)))
        .collect();
    let mut report = RepairIndexReport::default();
    let mut packs = Vec::new();
    // What the old index files say, for packs whose header cannot be read
    // now (a damaged header does not make the blobs in the pack unreadable).
    let mut previous: std::collections::HashMap<Id, IndexPack> = std::collections::HashMap::new();
    for n in &old {
        if let Ok(id) = Id::from_hex(n)
            && let Ok(f) = crate::localindex::load_index_file(&**backend, repo.key(), &id)
        {
            for p in f.packs {
                previous.entry(p.id).or_insert(p);
            }
        }
    }
    for (name, r) in results {
        match r {
            Ok(p) => {
                report.blobs += p.blobs.len();
                packs.push(p);
            }
            // Gone since it was listed (a prune that judged our lock stale
            // deleted it): the old index must not bring it back.
            Err(Error::Missing(_)) => {
                report
                    .unreadable
                    .push(format!("pack {name}: deleted while the index was rebuilt"));
            }
            Err(e) => {
                let kept = Id::from_hex(&name).ok().and_then(|id| previous.remove(&id));
                match kept {
                    Some(p) => {
                        report.blobs += p.blobs.len();
                        report.unreadable.push(format!(
                            "pack {name}: {e} (kept its entries from the old index)"
                        ));
                        packs.push(p);
                    }
                    None => report.unreadable.push(format!(
                        "pack {name}: {e} (left out of the index, not deleted)"
                    )),
                }
            }
        }
    }
    report.packs = packs.len();
    report.index_files_written = repo.replace_index_files(&lock, &packs, &old)?.len();
    report.index_files_removed = old.len();
    repo.index().clear()?;
    repo.index().sync(&**backend, repo.key())?;
    Ok(report)
}

/// Fails if the repository holds packs its index does not name: the data
/// `repair snapshots` would drop as missing may be in them, and the prune
/// after it would delete them as unused. `repair index` finds it again.
fn refuse_unindexed_packs(repo: &Repository) -> Result<()> {
    let unindexed = unindexed_packs(repo)?;
    if unindexed > 0 {
        return Err(Error::InvalidInput(format!(
            "{unindexed} pack(s) in the repository are not in the index and may hold the data \
             these snapshots miss; nothing was changed (run `cairn repair index` first)"
        )));
    }
    Ok(())
}

/// How many packs the repository holds that its index does not name.
pub(crate) fn unindexed_packs(repo: &Repository) -> Result<usize> {
    let indexed: std::collections::HashSet<Id> = repo
        .index()
        .packs()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    Ok(repo
        .backend()
        .list(FileKind::Pack)?
        .iter()
        .filter(|l| Id::from_hex(&l.name).is_ok_and(|id| !indexed.contains(&id)))
        .count())
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
    /// Nothing was written.
    pub dry_run: bool,
}

struct TreeFixer<'a, 'r> {
    repo: &'r Repository,
    saver: &'a BlobSaver<'r>,
    reader: crate::localindex::IndexReader,
    dry_run: bool,
    /// tree ID -> (repaired tree ID, whether anything changed)
    memo: std::collections::HashMap<Id, (Id, bool)>,
}

impl TreeFixer<'_, '_> {
    fn has(&self, id: &Id) -> Result<bool> {
        self.reader.contains(id)
    }

    /// The repaired version of tree `id`: entries whose data is missing are
    /// dropped, unreadable directories become empty.
    fn fix(&mut self, id: Id, path: &str, dropped: &mut Vec<String>) -> Result<(Id, bool)> {
        if let Some(r) = self.memo.get(&id) {
            return Ok(*r);
        }
        let tree = match self.has(&id)?.then(|| self.repo.load_tree(&id)) {
            Some(Ok(t)) => t,
            // Only data that is provably gone or damaged is dropped; any
            // other error (I/O, network) aborts rather than lose a directory.
            Some(Err(e)) if !matches!(e, Error::Missing(_) | Error::Corrupt { .. }) => {
                return Err(e);
            }
            _ => {
                dropped.push(format!(
                    "{path} (directory listing lost; restored as empty)"
                ));
                let empty = crate::tree::Tree::default();
                return Ok((self.save_tree(&empty)?, true));
            }
        };
        let mut changed = false;
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut n in tree.nodes {
            let p = format!("{}/{}", path.trim_end_matches('/'), n.display_name());
            match n.kind {
                crate::tree::NodeKind::Dir => {
                    if let Some(sub) = n.subtree {
                        let (new, c) = crate::deep::deeper(|| self.fix(sub, &p, dropped))?;
                        n.subtree = Some(new);
                        changed |= c;
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
                        nodes.push(n);
                    } else {
                        dropped.push(p);
                        changed = true;
                    }
                }
                _ => nodes.push(n),
            }
        }
        let result = if changed {
            (self.save_tree(&crate::tree::Tree { nodes })?, true)
        } else {
            (id, false)
        };
        self.memo.insert(id, result);
        Ok(result)
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
    refuse_unindexed_packs(repo)?;
    let (snapshots, unreadable) = repo.snapshots_lenient()?;
    let mut report = RepairSnapshotsReport {
        snapshots: snapshots.len(),
        unreadable: unreadable.iter().map(|e| e.to_string()).collect(),
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
    };
    let mut rewrites = Vec::new();
    for (id, snap) in &snapshots {
        let mut dropped = Vec::new();
        let (tree, changed) = fixer.fix(snap.tree, "", &mut dropped)?;
        report
            .dropped
            .extend(dropped.into_iter().map(|p| format!("{}:{p}", id.short())));
        if changed {
            rewrites.push((*id, snap.clone(), tree));
        }
    }
    if dry_run {
        report.repaired = rewrites
            .iter()
            .map(|(id, _, _)| (id.to_hex(), String::new()))
            .collect();
        return Ok(report);
    }
    saver.flush()?;
    for (old, mut snap, tree) in rewrites {
        snap.tree = tree;
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
        if forget {
            lock.check_fresh()?;
            repo.backend().delete(FileKind::Snapshot, &old.to_hex())?;
            report.removed += 1;
        }
        report.repaired.push((old.to_hex(), new.to_hex()));
    }
    Ok(report)
}
