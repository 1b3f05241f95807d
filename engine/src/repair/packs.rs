//! `repair packs`: the blobs of damaged or missing packs that still read
//! are salvaged into new packs, and the damaged packs leave the index and
//! the repository.
//!
//! Nothing is written until every named pack has been read, and a pack is
//! called damaged only when two reads of it agree (a flipped bit in this
//! machine's memory or on the wire must not cost the stored pack). Then,
//! so that a crash at any point loses nothing that still read: the
//! salvaged blobs are written (new packs, then their index files); the
//! index files naming a dropped pack are replaced by ones without it; only
//! then is the damaged pack deleted. Run again after a crash, the repair
//! salvages the same blobs again (duplicates, which prune removes) and
//! finishes.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::backend::FileKind;
use crate::blob::{BlobLocation, PackedBlob};
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
    /// Damaged, and no index names it and its header does not open: what
    /// it holds is unknown, so it is kept (nothing is salvaged or dropped).
    Unknown,
    /// Damaged or missing in the store, and put back (in a dry run: would
    /// be) from this machine's cache, whose copy matches its name.
    PutBack,
}

/// A blob that no named pack gave intact and no other pack holds.
#[derive(Debug, Clone, Serialize)]
pub struct LostBlob {
    /// Its ID.
    pub blob: String,
    /// Why it could not be read.
    pub why: String,
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
    /// Blobs that did not open from it but that another pack holds intact
    /// (read to make sure), or that another named pack gave.
    pub held_elsewhere: usize,
    /// Blobs that did not open from it and that nothing else holds.
    pub lost: Vec<LostBlob>,
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
    /// Dictionaries (`dicts/` names) whose stored bytes no longer open,
    /// removed (or, in a dry run, to be): the blobs compressed with them
    /// cannot be read whether they stay or not, and `check` failed on them
    /// for good.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dictionaries_removed: Vec<String>,
    /// Dictionaries (`dicts/` names) that blobs of these packs were
    /// compressed with and that are missing. Without `dictionaries_lost`
    /// only a dry run reports them; a repair stops instead, as a file put
    /// back from a copy would make those blobs read again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dictionaries_missing: Vec<String>,
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
        // The blob is fine; what it needs is not.
        Error::Corrupt { object, .. } if object.starts_with("dictionary ") => {
            format!("compressed with {object}, which does not open")
        }
        Error::Corrupt { reason, .. } => reason,
        e => e.to_string(),
    }
}

/// Every index file, one at a time (the whole index is never held).
fn each_index_file(
    repo: &Repository,
    mut f: impl FnMut(&str, Vec<IndexPack>) -> Result<()>,
) -> Result<()> {
    let backend = repo.backend();
    for l in backend.list(FileKind::Index)? {
        let Ok(fid) = Id::from_hex(&l.name) else {
            continue;
        };
        let file = load_index_file(&**backend, repo.key(), &fid).map_err(|e| match e {
            // Only damage calls for `repair index`; a store that did not
            // answer keeps its error (and exit code).
            Error::Corrupt { .. } => Error::InvalidInput(format!(
                "cannot read index file {} ({e}); nothing was changed (run `cairn repair index` first)",
                l.name
            )),
            e => e,
        })?;
        f(&l.name, file.packs)?;
    }
    Ok(())
}

/// One named pack, as read before anything is written.
struct Assessed {
    id: Id,
    report: PackRepair,
    /// Every entry the index files or the header give (they may disagree).
    entries: Vec<PackedBlob>,
    /// For a damaged pack: the hash of the bytes two reads agreed on.
    bytes_hash: Option<Id>,
}

/// Reads pack `id` (twice if it does not hash to its name) and decides
/// what it is. `listed` is what the index files say it holds.
fn assess(
    repo: &Repository,
    id: Id,
    stored: bool,
    listed: Vec<PackedBlob>,
    dicts: &mut BTreeSet<u32>,
) -> Result<Assessed> {
    let mut a = Assessed {
        id,
        report: PackRepair {
            pack: id.to_hex(),
            outcome: PackOutcome::Damaged,
            problem: None,
            blobs: listed.iter().map(|b| b.id).collect::<HashSet<_>>().len(),
            salvaged: 0,
            held_elsewhere: 0,
            lost: Vec::new(),
        },
        entries: listed,
        bytes_hash: None,
    };
    let backend = repo.backend();
    let name = id.to_hex();
    // Put back after every named pack was read (below), as any write.
    let cached_whole = || backend.cached_copy(FileKind::Pack, &name).is_some();
    if !stored {
        if cached_whole() {
            a.report.outcome = PackOutcome::PutBack;
            a.report.problem = Some("missing from the store".into());
            return Ok(a);
        }
        a.report.outcome = PackOutcome::Missing;
        a.report.problem = Some("missing from the repository".into());
        return Ok(a);
    }
    // Listed but not delivered (or any other failure) is not damage.
    let first = backend.read(FileKind::Pack, &name)?;
    if Id::of_object(&first) == id {
        a.report.outcome = PackOutcome::Intact;
        let header = pack::read_header_from_bytes(repo.key(), &id, &first);
        if let Ok(header) = &header
            && !a.entries.is_empty()
            && a.entries.iter().any(|b| !header.contains(b))
        {
            a.report.problem = Some(
                "the pack is intact but the index disagrees with its header (run `cairn repair index`)"
                    .into(),
            );
        }
        if a.report.problem.is_none() {
            let entries = match header {
                Ok(h) if a.entries.is_empty() => h,
                _ => a.entries.clone(),
            };
            if let Some((unreadable, first_why)) =
                blobs_not_opening(repo, &id, &first, &entries, dicts)?
            {
                // Intact bytes, but blobs that do not open (compressed with
                // a dictionary that is damaged or gone): kept as they are,
                // the index would name them for good, and backups would
                // never store them again.
                a.report.outcome = PackOutcome::Damaged;
                a.report.problem = Some(format!(
                    "its bytes are intact, but {unreadable} blob(s) in it do not open: {first_why}"
                ));
                a.entries = entries;
                a.report.blobs = a.entries.iter().map(|b| b.id).collect::<HashSet<_>>().len();
                a.bytes_hash = Some(id);
            }
        }
        return Ok(a);
    }
    let second = backend.read(FileKind::Pack, &name)?;
    if Id::of_object(&second) == id {
        a.report.outcome = PackOutcome::Intact;
        a.report.problem = Some(
            "a first read was damaged, a second one intact: the store or this machine \
             is unreliable; the pack was left as it is"
                .into(),
        );
        return Ok(a);
    }
    if first != second {
        return Err(Error::InvalidInput(format!(
            "two reads of pack {name} gave different bytes, neither of them its own: the store \
             or this machine is unreliable; nothing was changed"
        )));
    }
    if cached_whole() {
        a.report.outcome = PackOutcome::PutBack;
        a.report.problem = Some("damaged in the store".into());
        return Ok(a);
    }
    let header =
        pack::read_header_from_bytes(repo.key(), &id, &pack::mend_pack(repo.key(), &id, &first));
    a.report.problem = Some(match &header {
        Ok(_) => "content does not hash to its name".into(),
        Err(e) => why(e.replica()),
    });
    if let Ok(h) = header {
        for b in h {
            if !a.entries.contains(&b) {
                a.entries.push(b);
            }
        }
    }
    a.report.blobs = a.entries.iter().map(|b| b.id).collect::<HashSet<_>>().len();
    if a.entries.is_empty() {
        a.report.outcome = PackOutcome::Unknown;
        a.report.problem = Some(format!(
            "{}; no index names it and its header does not open, so what it holds is unknown: \
             kept as it is",
            a.report.problem.take().unwrap_or_default()
        ));
        return Ok(a);
    }
    a.bytes_hash = Some(Id::of_object(&first));
    Ok(a)
}

/// [`put_back`] of a pack assessed as [`PackOutcome::PutBack`]; fails if
/// its cached copy went meanwhile (`nothing_yet`: no new pack was written).
fn put_back_assessed(repo: &Repository, id: &Id, nothing_yet: bool) -> Result<()> {
    if put_back(repo, &id.to_hex())? {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "pack {id}: this machine's cached copy went while the repair ran; stopped{}",
        if nothing_yet {
            "; nothing was changed"
        } else {
            " (new packs written so far are removed by the next prune)"
        }
    )))
}

/// Puts pack `name` back into the store from this machine's cache, if that
/// holds a copy matching its name (see [`crate::backend::Backend::cached_copy`]).
/// Returns whether there was one.
pub(crate) fn put_back(repo: &Repository, name: &str) -> Result<bool> {
    let Some(copy) = repo.backend().cached_copy(FileKind::Pack, name) else {
        return Ok(false);
    };
    repo.backend().write(FileKind::Pack, name, &copy)?;
    Ok(true)
}

/// How many of `entries` do not open in the pack `bytes`, and why the
/// first did not; `None` when all open.
/// An error that stops a repair with nothing changed is anything else.
fn does_not_open(e: Error, dicts: &mut BTreeSet<u32>) -> Result<String> {
    match &e {
        Error::Corrupt { object, .. } | Error::Missing(object) => {
            if let Some(d) = crate::dict::named_in(object) {
                dicts.insert(d);
            }
            Ok(why(e))
        }
        // Not damage (a dictionary this user may not read, a store that
        // did not answer): judged as such, an intact pack was deleted.
        _ => Err(e),
    }
}

fn blobs_not_opening(
    repo: &Repository,
    id: &Id,
    bytes: &[u8],
    entries: &[PackedBlob],
    dicts: &mut BTreeSet<u32>,
) -> Result<Option<(usize, String)>> {
    let mut failed: Option<(usize, String)> = None;
    pack::open_each(repo.key(), id, bytes, entries, repo, |_, opened| {
        if let Err(e) = opened {
            let why = does_not_open(e, dicts)?;
            match &mut failed {
                Some((n, _)) => *n += 1,
                None => failed = Some((1, why)),
            }
        }
        Ok(())
    })?;
    Ok(failed)
}

/// Of `named`, the dictionaries whose stored bytes are damaged: two
/// reads agree (a fault on the wire or in this machine's memory is not
/// damage), and those bytes fail authentication or are no dictionary
/// zstd can load. One this version cannot read (a newer format) is not
/// damaged, nor is one that is gone (nothing to remove). Also returns the
/// ones there that are not damaged. One that holds another dictionary
/// than its name says is the error: it is intact.
fn damaged_dictionaries(repo: &Repository, named: &BTreeSet<u32>) -> Result<(Vec<u32>, Vec<u32>)> {
    let backend = repo.backend();
    let mut damaged = Vec::new();
    let mut intact = Vec::new();
    for &d in named {
        let name = crate::dict::dict_name(d);
        let what = format!("dictionary dicts/{name}");
        let first = match backend.read(FileKind::Dict, &name) {
            Ok(b) => b,
            Err(Error::Missing(_)) => {
                // Renamed: another name may hold it, intact.
                for other in crate::dict::list(&**backend)? {
                    if other != d && crate::dict::misnamed(&**backend, repo.key(), other) == Some(d)
                    {
                        return Err(misnamed(other, d));
                    }
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if backend.read(FileKind::Dict, &name)? != first {
            intact.push(d);
            continue;
        }
        let bad = match crate::envelope::open(
            repo.key(),
            crate::envelope::ObjectKind::Dictionary,
            &first,
            &what,
        ) {
            Err(Error::Corrupt { reason, .. }) => reason.starts_with("authentication failed"),
            Err(_) => false,
            Ok(bytes) => {
                if let Some(holds) = crate::dict::holds_other(d, &bytes) {
                    return Err(misnamed(d, holds));
                }
                crate::dict::Dictionary::new(d, bytes).is_err()
            }
        };
        if bad {
            damaged.push(d);
        } else {
            intact.push(d);
        }
    }
    Ok((damaged, intact))
}

/// The error that stops a repair over the file of dictionary `name`, which
/// holds dictionary `holds`: it is intact, and removing it (with the blobs
/// that did not open) would lose what both dictionaries compressed.
fn misnamed(name: u32, holds: u32) -> Error {
    Error::Corrupt {
        object: format!("dictionary dicts/{}", crate::dict::dict_name(name)),
        reason: format!(
            "holds dictionary {}, not the one its name says: renamed or copied over, with \
             its bytes intact. Nothing was dropped or deleted; give each dictionary file its \
             own name back (from a copy of dicts/ if one was overwritten), then check again",
            crate::dict::dict_name(holds)
        ),
    }
}

/// Salvages the packs `specs` name: every blob in them that still decrypts
/// and hashes to its ID is written into new packs; then the packs leave
/// the index and the repository. A pack whose bytes are intact is left as
/// it is unless some of its blobs do not open (their dictionary is damaged
/// or gone); a damaged one whose contents are unknown is left too. A
/// dictionary those blobs needed whose stored bytes are damaged is removed
/// last. Any failure other than damage (a store or file that cannot be
/// read) stops the repair. Blobs that
/// could not be read and that no other pack holds intact are lost: `check`
/// then names the snapshot paths that used them, and `repair snapshots`
/// rewrites those snapshots without them (a backup of a source that still
/// has the files stores them again first).
///
/// Every named pack is read before anything is written: a pack that cannot
/// be fetched (the store did not answer) or whose two reads disagree stops
/// the repair with nothing changed.
///
/// Blobs compressed with a dictionary file that is missing are dropped
/// only if `dictionaries_lost` says no copy of it exists; otherwise the
/// repair stops with nothing changed (a dry run reports them).
pub fn repair_packs(
    repo: &Repository,
    specs: &[String],
    dry_run: bool,
    dictionaries_lost: bool,
) -> Result<RepairPacksReport> {
    // A dry run only reads: backups may go on beside it.
    let lock = repo.lock(!dry_run)?;
    if !dry_run {
        repo.ensure_may_delete("`repair packs` (it deletes damaged packs)")?;
    }
    let backend = repo.backend();
    let stored: HashSet<Id> = backend
        .list(FileKind::Pack)?
        .into_iter()
        .filter_map(|l| Id::from_hex(&l.name).ok())
        .collect();
    // Every indexed pack's ID, and the listings of those a spec may name
    // (merged over every index file that lists them).
    let prefixes: Vec<String> = specs
        .iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut known = stored.clone();
    let mut listings: HashMap<Id, Vec<PackedBlob>> = HashMap::new();
    each_index_file(repo, |_, packs| {
        for p in packs {
            known.insert(p.id);
            let hex = p.id.to_hex();
            if prefixes.iter().any(|s| hex.starts_with(s.as_str())) {
                let l = listings.entry(p.id).or_default();
                for b in p.blobs {
                    if !l.contains(&b) {
                        l.push(b);
                    }
                }
            }
        }
        Ok(())
    })?;
    let targets = resolve(specs, &known)?;
    let mut assessed = Vec::new();
    // Dictionaries the blobs that did not open needed.
    let mut dicts = BTreeSet::new();
    for id in &targets {
        let listed = listings.remove(id).unwrap_or_default();
        // A store's listing may lag or leave names out: a pack is missing
        // only if asking for it by name says so too (as `repair index`
        // asks), or its blobs would be dropped from the index though there.
        let there =
            stored.contains(id) || backend.stored_size(FileKind::Pack, &id.to_hex())?.is_some();
        assessed.push(assess(repo, *id, there, listed, &mut dicts)?);
    }

    // Salvage: every blob that opens, whatever other packs are said to
    // hold (they may be damaged too, unchecked).
    let saver = BlobSaver::without_index_dedup(repo).with_lock(&lock);
    let mut salvaged: HashSet<Id> = HashSet::new();
    // Whether a pack was put back from the cache yet (a change too).
    let mut put_any = false;
    // Blobs that did not open, by named pack, with why.
    let mut failed: Vec<HashMap<Id, String>> = Vec::new();
    for a in &mut assessed {
        let mut why_not: HashMap<Id, String> = HashMap::new();
        match (a.report.outcome, a.bytes_hash) {
            (PackOutcome::PutBack, _) if !dry_run => {
                put_back_assessed(repo, &a.id, salvaged.is_empty() && !put_any)?;
                put_any = true;
            }
            (PackOutcome::Missing, _) => {
                for b in &a.entries {
                    why_not.insert(b.id, "its pack is missing".into());
                }
            }
            (PackOutcome::Damaged, Some(hash)) => {
                let bytes = backend.read(FileKind::Pack, &a.id.to_hex())?;
                if Id::of_object(&bytes) != hash {
                    return Err(Error::InvalidInput(format!(
                        "pack {} changed while it was repaired (its reads disagree); stopped{}",
                        a.id,
                        if salvaged.is_empty() && !put_any || dry_run {
                            "; nothing was changed"
                        } else {
                            " (new packs written so far are removed by the next prune)"
                        }
                    )));
                }
                let mut mine = 0;
                let bytes = pack::mend_pack(repo.key(), &a.id, &bytes);
                pack::open_each(repo.key(), &a.id, &bytes, &a.entries, repo, |b, opened| {
                    match opened {
                        Ok(plain) => {
                            why_not.remove(&b.id);
                            if salvaged.insert(b.id) {
                                if !dry_run {
                                    saver.save(b.blob_type, plain)?;
                                }
                                mine += 1;
                            }
                        }
                        Err(e) => {
                            let why = does_not_open(e, &mut dicts)?;
                            if !salvaged.contains(&b.id) {
                                why_not.entry(b.id).or_insert(why);
                            }
                        }
                    }
                    Ok(())
                })?;
                a.report.salvaged = mine;
            }
            _ => {}
        }
        failed.push(why_not);
    }

    // What did not open may still be intact in another pack: looked up in
    // the index files and read to make sure.
    let unopened: HashSet<Id> = failed
        .iter()
        .flat_map(|f| f.keys())
        .filter(|b| !salvaged.contains(*b))
        .copied()
        .collect();
    let mut elsewhere: HashSet<Id> = HashSet::new();
    if !unopened.is_empty() {
        let mut copies: Vec<(Id, PackedBlob)> = Vec::new();
        each_index_file(repo, |_, packs| {
            for p in packs {
                if targets.contains(&p.id) || !stored.contains(&p.id) {
                    continue;
                }
                for b in p.blobs {
                    if unopened.contains(&b.id) {
                        copies.push((p.id, b));
                    }
                }
            }
            Ok(())
        })?;
        for (pack_id, b) in copies {
            // Read by its range and opened, as a restore would read it.
            let copy = BlobLocation {
                pack: pack_id,
                blob: b,
            };
            if !elsewhere.contains(&b.id) && repo.load_blob_here(&copy).is_ok() {
                elsewhere.insert(b.id);
            }
        }
    }
    for (a, why_not) in assessed.iter_mut().zip(failed) {
        let mut lost: Vec<LostBlob> = Vec::new();
        for (b, why) in why_not {
            if salvaged.contains(&b) || elsewhere.contains(&b) {
                a.report.held_elsewhere += 1;
            } else {
                lost.push(LostBlob {
                    blob: b.to_hex(),
                    why,
                });
            }
        }
        lost.sort_by(|x, y| x.blob.cmp(&y.blob));
        a.report.lost = lost;
    }

    let (damaged_dicts, intact_dicts) = damaged_dictionaries(repo, &dicts)?;
    if let Some(d) = intact_dicts.first() {
        // Blobs did not open with a dictionary that now reads intact (a
        // passing fault in this machine's memory or on the wire, or one
        // this version cannot use): counted lost, they were deleted with
        // their pack though whole.
        return Err(Error::Corrupt {
            object: format!("dictionary dicts/{}", crate::dict::dict_name(*d)),
            reason: "blobs of these packs did not open with it, but it reads intact now: \
                     nothing was dropped or deleted; run the repair again (if this repeats, \
                     this version of cairn cannot use the dictionary)"
                .into(),
        });
    }
    // Gone, not damaged: put back from a copy of the repository, the file
    // makes its blobs read again, unless this repair dropped them.
    let missing: Vec<String> = dicts
        .iter()
        .filter(|d| !damaged_dicts.contains(d) && !intact_dicts.contains(d))
        .map(|d| crate::dict::dict_name(*d))
        .collect();
    if !missing.is_empty() && !dry_run && !dictionaries_lost {
        return Err(Error::Missing(format!(
            "dictionary {}: blobs of these packs were compressed with it. Nothing was dropped or \
             deleted; put the file back from a copy of the repository's dicts/, then check \
             again. Only if no copy has it, `repair packs --dictionaries-lost` drops those \
             blobs for good",
            missing
                .iter()
                .map(|n| format!("dicts/{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut report = RepairPacksReport {
        dry_run,
        dictionaries_missing: missing,
        salvaged: salvaged.len(),
        lost: assessed.iter().map(|a| a.report.lost.len()).sum(),
        ..Default::default()
    };
    let dropping: HashSet<Id> = assessed
        .iter()
        .filter(|a| {
            matches!(
                a.report.outcome,
                PackOutcome::Damaged | PackOutcome::Missing
            )
        })
        .map(|a| a.id)
        .collect();
    let to_delete: Vec<Id> = assessed
        .iter()
        .filter(|a| a.report.outcome == PackOutcome::Damaged)
        .map(|a| a.id)
        .collect();
    report.packs = assessed.into_iter().map(|a| a.report).collect();
    let dict_names: Vec<String> = damaged_dicts
        .iter()
        .map(|d| crate::dict::dict_name(*d))
        .collect();
    report.dictionaries_removed = dict_names.clone();
    if dry_run {
        return Ok(report);
    }
    // Only after the packs' blobs were opened: what still opened with a
    // dictionary is salvaged by then.
    let remove_dicts = |lock: &crate::lock::LockGuard| -> Result<()> {
        for name in &dict_names {
            lock.check_fresh()?;
            match backend.delete(FileKind::Dict, name) {
                Ok(()) | Err(Error::Missing(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    if dropping.is_empty() {
        remove_dicts(&lock)?;
        return Ok(report);
    }

    // The salvage is stored and indexed before the index lets go of the packs.
    saver.flush()?;
    report.bytes_written = saver
        .bytes_written
        .load(std::sync::atomic::Ordering::Relaxed);
    let (mut old, mut kept, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
    each_index_file(repo, |name, packs| {
        if packs.iter().any(|p| dropping.contains(&p.id)) {
            old.push(name.to_string());
            for p in packs {
                if !dropping.contains(&p.id) && seen.insert(p.id) {
                    kept.push(p);
                }
            }
        }
        Ok(())
    })?;
    if !old.is_empty() {
        report.index_files_written = repo
            .replace_index_files(&lock, &kept, &old, &[])?
            .names
            .len();
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
    remove_dicts(&lock)?;
    repo.index().clear()?;
    repo.index().sync(&**backend, repo.key())?;
    Ok(report)
}
