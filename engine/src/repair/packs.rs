//! `repair packs`: the blobs of damaged or missing packs that still read
//! are salvaged into new packs, and the damaged packs leave the index and
//! the repository.
//!
//! Order, so that a crash at any point loses nothing that still read: the
//! salvaged blobs are written (new packs, then their index files) first;
//! then the index files naming a damaged pack are replaced by ones without
//! it; only then is the damaged pack deleted. Run again after a crash, the
//! repair finds the salvaged blobs held elsewhere and finishes.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::FileKind;
use crate::blob::{BlobType, PackedBlob};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::IndexPack;
use crate::localindex::load_index_file;
use crate::pack;
use crate::repository::Repository;
use crate::saver::BlobSaver;

/// What was found in one pack named to `repair packs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PackOutcome {
    /// Its bytes hash to its name: nothing to salvage, left as it is.
    Intact,
    /// Damaged: what still reads was (or, in a dry run, would be) salvaged.
    Damaged,
    /// Not in the repository: only the index named it.
    Missing,
}

/// One pack named to `repair packs`.
#[derive(Debug, Clone, Serialize)]
pub struct PackRepair {
    /// The pack's ID.
    pub pack: String,
    /// What was found.
    pub outcome: PackOutcome,
    /// What is wrong with it, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Distinct blobs the index or the pack's own header says it holds.
    pub blobs: usize,
    /// Blobs read intact from it and written into new packs.
    pub salvaged: usize,
    /// Blobs another pack holds too, which need no salvage.
    pub held_elsewhere: usize,
    /// Blobs that could not be read and no other pack holds (`ID: why`).
    pub lost: Vec<String>,
}

/// What `repair packs` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairPacksReport {
    /// Nothing was written or deleted.
    pub dry_run: bool,
    /// Each pack named, in the order given.
    pub packs: Vec<PackRepair>,
    /// Blobs salvaged into new packs, over all packs.
    pub salvaged: usize,
    /// Blobs lost, over all packs.
    pub lost: usize,
    /// Bytes of new packs and their index files written.
    pub bytes_written: u64,
    /// Index files written in place of those naming a dropped pack.
    pub index_files_written: usize,
    /// Index files that named a dropped pack, replaced.
    pub index_files_removed: usize,
    /// Damaged packs deleted from the repository.
    pub packs_deleted: usize,
}

/// The packs `specs` name (full IDs or unique prefixes), each once, among
/// the packs stored or indexed.
fn resolve(specs: &[String], known: &HashSet<Id>) -> Result<Vec<Id>> {
    let mut out = Vec::new();
    for s in specs {
        let s = s.trim().to_ascii_lowercase();
        if s.len() < 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "{s:?} is not a pack ID (at least 4 hex digits; `cairn check --read-data` names damaged packs)"
            )));
        }
        let hits: Vec<&Id> = known
            .iter()
            .filter(|id| id.to_hex().starts_with(&s))
            .collect();
        match hits[..] {
            [one] => {
                if !out.contains(one) {
                    out.push(*one);
                }
            }
            [] => {
                return Err(Error::InvalidInput(format!(
                    "no pack {s} in the repository or its index; nothing was changed"
                )));
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "pack ID {s} is ambiguous ({} packs start with it); nothing was changed",
                    hits.len()
                )));
            }
        }
    }
    Ok(out)
}

/// Why a blob did not open, without the object name the caller gives.
fn why(e: Error) -> String {
    match e {
        Error::Corrupt { reason, .. } => reason,
        e => e.to_string(),
    }
}

/// A blob read intact out of a damaged pack.
struct Salvaged {
    id: Id,
    blob_type: BlobType,
    plain: Vec<u8>,
}

/// Every blob of `entries` (the index's and the header's, which may
/// disagree) that still opens from `bytes`; the others with why not.
fn read_what_remains(
    repo: &Repository,
    id: &Id,
    bytes: &[u8],
    entries: &[PackedBlob],
) -> Result<(Vec<Salvaged>, HashMap<Id, String>)> {
    let mut got: Vec<Salvaged> = Vec::new();
    let mut failed: HashMap<Id, String> = HashMap::new();
    let mut have: HashSet<Id> = HashSet::new();
    pack::open_each(repo.key(), id, bytes, entries, repo, |b, opened| {
        if have.contains(&b.id) {
            return Ok(());
        }
        match opened {
            Ok(plain) => {
                failed.remove(&b.id);
                have.insert(b.id);
                got.push(Salvaged {
                    id: b.id,
                    blob_type: b.blob_type,
                    plain: plain.to_vec(),
                });
            }
            Err(e) => {
                failed.entry(b.id).or_insert_with(|| why(e));
            }
        }
        Ok(())
    })?;
    Ok((got, failed))
}

/// Salvages the packs `specs` name: every blob in them that still decrypts
/// and hashes to its ID, and that no other pack holds, is written into new
/// packs; then the packs leave the index and the repository. A pack whose
/// bytes are intact is left as it is. Blobs that could not be read are
/// lost: `check` then names the snapshot paths that used them, and
/// `repair snapshots` rewrites those snapshots without them (a backup of a
/// source that still has the files stores them again first).
///
/// Fails, changing nothing, if a pack cannot be fetched for a reason other
/// than damage (the store did not answer) or an index file cannot be read.
pub fn repair_packs(
    repo: &Repository,
    specs: &[String],
    dry_run: bool,
) -> Result<RepairPacksReport> {
    let lock = repo.lock(true)?;
    if !dry_run {
        repo.ensure_may_delete("`repair packs` (it deletes damaged packs)")?;
    }
    let backend = repo.backend();
    // Every index file is read: those naming a damaged pack are rewritten,
    // and the others tell which blobs intact packs hold too.
    let mut index_files: Vec<(String, Vec<IndexPack>)> = Vec::new();
    for l in backend.list(FileKind::Index)? {
        let Ok(fid) = Id::from_hex(&l.name) else {
            continue;
        };
        let f = load_index_file(&**backend, repo.key(), &fid).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read index file {} ({e}); nothing was changed (run `cairn repair index` first)",
                l.name
            ))
        })?;
        index_files.push((l.name, f.packs));
    }
    let stored: HashMap<Id, u64> = backend
        .list(FileKind::Pack)?
        .into_iter()
        .filter_map(|l| Id::from_hex(&l.name).ok().map(|id| (id, l.size)))
        .collect();
    let mut indexed: HashMap<Id, &IndexPack> = HashMap::new();
    for (_, packs) in &index_files {
        for p in packs {
            indexed.entry(p.id).or_insert(p);
        }
    }
    let known: HashSet<Id> = stored.keys().chain(indexed.keys()).copied().collect();
    let targets = resolve(specs, &known)?;

    // Blobs that a pack not being repaired holds, stored at the size the
    // index gives (a truncated one is no refuge).
    let mut elsewhere: HashSet<Id> = HashSet::new();
    for (pid, p) in &indexed {
        if !targets.contains(pid) && stored.get(pid) == Some(&p.size) {
            elsewhere.extend(p.blobs.iter().map(|b| b.id));
        }
    }

    let mut report = RepairPacksReport {
        dry_run,
        ..Default::default()
    };
    let saver = BlobSaver::without_index_dedup(repo).with_lock(&lock);
    let mut to_delete = Vec::new();
    for id in &targets {
        let listed: Vec<PackedBlob> = indexed.get(id).map(|p| p.blobs.clone()).unwrap_or_default();
        let mut r = PackRepair {
            pack: id.to_hex(),
            outcome: PackOutcome::Damaged,
            problem: None,
            blobs: 0,
            salvaged: 0,
            held_elsewhere: 0,
            lost: Vec::new(),
        };
        let bytes = if stored.contains_key(id) {
            match backend.read(FileKind::Pack, &id.to_hex()) {
                Ok(b) => Some(b),
                Err(Error::Missing(_)) => None,
                // Damage is what this repairs; a store that did not answer
                // is not damage, and nothing may be dropped for it.
                Err(e) if !matches!(e, Error::Corrupt { .. }) => {
                    return Err(Error::InvalidInput(format!(
                        "cannot read pack {id} ({e}); nothing was changed (run it again when the store answers)"
                    )));
                }
                Err(e) => {
                    r.problem = Some(e.to_string());
                    Some(Vec::new())
                }
            }
        } else {
            None
        };
        let Some(bytes) = bytes else {
            r.outcome = PackOutcome::Missing;
            r.problem = Some("missing from the repository".into());
            let ids: HashSet<Id> = listed.iter().map(|b| b.id).collect();
            r.blobs = ids.len();
            for b in ids {
                if elsewhere.contains(&b) {
                    r.held_elsewhere += 1;
                } else {
                    r.lost.push(format!("{b}: its pack is missing"));
                }
            }
            report.packs.push(r);
            continue;
        };
        let header = pack::read_header_from_bytes(repo.key(), id, &bytes);
        if Id::of_object(&bytes) == *id {
            r.outcome = PackOutcome::Intact;
            let header = header.unwrap_or_default();
            r.blobs = header.iter().map(|b| b.id).collect::<HashSet<_>>().len();
            if indexed.contains_key(id) && header != listed {
                r.problem = Some(
                    "the pack is intact but the index disagrees with its header (run `cairn repair index`)"
                        .into(),
                );
            }
            report.packs.push(r);
            continue;
        }
        r.problem.get_or_insert_with(|| match &header {
            Ok(_) => "content does not hash to its name".into(),
            Err(e) => e.to_string(),
        });
        let mut entries = listed;
        if let Ok(h) = header {
            for b in h {
                if !entries.contains(&b) {
                    entries.push(b);
                }
            }
        }
        let (got, failed) = read_what_remains(repo, id, &bytes, &entries)?;
        r.blobs = got.len() + failed.len();
        for s in got {
            if elsewhere.contains(&s.id) {
                r.held_elsewhere += 1;
                continue;
            }
            if !dry_run {
                saver.save(s.blob_type, &s.plain)?;
            }
            r.salvaged += 1;
        }
        let mut failed: Vec<(Id, String)> = failed.into_iter().collect();
        failed.sort();
        for (b, why) in failed {
            if elsewhere.contains(&b) {
                r.held_elsewhere += 1;
            } else {
                r.lost.push(format!("{b}: {why}"));
            }
        }
        to_delete.push(*id);
        report.packs.push(r);
    }
    report.salvaged = report.packs.iter().map(|p| p.salvaged).sum();
    report.lost = report.packs.iter().map(|p| p.lost.len()).sum();
    let dropping: Vec<Id> = report
        .packs
        .iter()
        .filter(|p| p.outcome != PackOutcome::Intact)
        .filter_map(|p| Id::from_hex(&p.pack).ok())
        .collect();
    if dry_run || dropping.is_empty() {
        return Ok(report);
    }

    // The salvage is stored and indexed before the index lets go of the packs.
    saver.flush()?;
    report.bytes_written = saver
        .bytes_written
        .load(std::sync::atomic::Ordering::Relaxed);

    let (mut old, mut kept, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
    for (name, packs) in &index_files {
        if packs.iter().any(|p| dropping.contains(&p.id)) {
            old.push(name.clone());
            for p in packs {
                if !dropping.contains(&p.id) && seen.insert(p.id) {
                    kept.push(p.clone());
                }
            }
        }
    }
    if !old.is_empty() {
        report.index_files_written = repo.replace_index_files(&lock, &kept, &old)?.len();
        report.index_files_removed = old.len();
    }
    lock.check()?;
    for id in &to_delete {
        lock.check_fresh()?;
        match backend.delete(FileKind::Pack, &id.to_hex()) {
            Ok(()) | Err(Error::Missing(_)) => report.packs_deleted += 1,
            Err(e) => return Err(e),
        }
    }
    repo.index().clear()?;
    repo.index().sync(&**backend, repo.key())?;
    Ok(report)
}
