//! Verifying a repository: structure always, every byte on request.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::blob::{BlobLocation, BlobType};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::localindex::load_index_file;
use crate::pack;
use crate::repository::Repository;
use crate::tree::NodeKind;

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Download every pack and verify every blob.
    pub read_data: bool,
    /// Read and verify only this subset of the packs.
    pub subset: Option<Subset>,
}

/// A subset of packs for `--read-data-subset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    /// Part `n` of `m` (1-based): packs whose first four ID bytes (a
    /// big-endian number) modulo `m` are `n - 1`.
    /// Running 1/m … m/m over time reads everything once.
    Part(u32, u32),
    /// A random share of the packs, in percent (0.0..=100.0).
    Share(f64),
    /// Random packs up to this many bytes.
    Bytes(u64),
}

impl Subset {
    /// Parses `N/M`, `P%` or a size like `500M` / `2G`.
    pub fn parse(s: &str) -> Result<Subset> {
        let bad = || {
            Error::InvalidInput(format!(
                "invalid subset {s:?}: use N/M, P% or a size like 500M"
            ))
        };
        if let Some((n, m)) = s.split_once('/') {
            let (n, m): (u32, u32) = (
                n.trim().parse().map_err(|_| bad())?,
                m.trim().parse().map_err(|_| bad())?,
            );
            if m == 0 || n == 0 || n > m {
                return Err(bad());
            }
            return Ok(Subset::Part(n, m));
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            // 0 % reads nothing and reports success: in a cron line, a
            // typo that verifies nothing for good.
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Subset::Share(p));
        }
        match crate::units::parse_size(s) {
            Ok(0) | Err(_) => Err(bad()),
            Ok(n) => Ok(Subset::Bytes(n)),
        }
    }

    fn select(&self, mut packs: Vec<(Id, u64)>) -> Vec<(Id, u64)> {
        let shuffle = |v: &mut Vec<(Id, u64)>| {
            // Order by a keyed hash of the ID: a fresh random order each run.
            let salt = Id::random();
            v.sort_by_key(|(id, _)| blake3::keyed_hash(&salt.0, &id.0).as_bytes().to_owned());
        };
        match *self {
            // Four bytes of the ID, not one: with one, parts beyond 256
            // selected nothing and others were uneven.
            Subset::Part(n, m) => packs
                .into_iter()
                .filter(|(id, _)| {
                    u32::from_be_bytes(id.0[..4].try_into().expect("4 bytes")) % m == n - 1
                })
                .collect(),
            Subset::Share(p) => {
                shuffle(&mut packs);
                // Divided last: `7%` of 100 packs is 7, where a share of
                // 0.07 made it 7.000000000000001, rounded up to 8.
                let k = (packs.len() as f64 * p / 100.0).ceil() as usize;
                packs.truncate(k);
                packs
            }
            Subset::Bytes(max) => {
                shuffle(&mut packs);
                let mut total = 0;
                packs
                    .into_iter()
                    .take_while(|(_, size)| {
                        total += size;
                        total - size < max
                    })
                    .collect()
            }
        }
    }
}

/// Receives progress from a running check.
pub trait CheckProgress: Sync {
    /// A pack was read and verified (with `read_data`).
    fn pack_done(&self, _bytes: u64) {}
}

/// A progress sink that ignores everything.
pub struct NoCheckProgress;
impl CheckProgress for NoCheckProgress {}

/// The findings of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Problems that mean data is damaged or missing.
    pub errors: Vec<String>,
    /// Objects the store failed to deliver (it did not answer in time, or
    /// failed): not known to be damaged, but not verified either, so the
    /// check is incomplete.
    pub unreadable: Vec<String>,
    /// Harmless findings (e.g. packs left by an interrupted backup).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Distinct trees walked.
    pub trees: usize,
    /// Distinct data blobs referenced.
    pub data_blobs: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Packs read and verified (with `read_data`).
    pub packs_read: usize,
    /// Packs in the index the repository does not have (never read).
    pub packs_missing: usize,
    /// Audit records that decrypt and match their names.
    pub audit_records: usize,
    /// Damaged or missing packs.
    pub damaged_packs: Vec<String>,
    /// Of those, the packs `repair packs` acts on: missing, of the wrong
    /// size, or with bytes that do not hash to their name. (A pack whose
    /// bytes are its own but that fails otherwise, say against a header
    /// the index disagrees with, needs another repair, which its error
    /// names.)
    pub salvageable_packs: Vec<String>,
    /// Dictionary files that hold another dictionary than their name says
    /// (`dicts/NAME holds ID`): intact, but renamed or copied over. Their
    /// blobs read again once each has its own name back; `repair packs`
    /// would drop them.
    pub misnamed_dictionaries: Vec<String>,
    /// Dictionary files (`dicts/NAME`) that blobs in intact packs need and
    /// the repository lacks: those blobs read again once the file is put
    /// back from a copy; `repair packs` would drop them for good.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_dictionaries: Vec<String>,
    /// Snapshot paths whose data lies in damaged or missing packs
    /// (`snapshot-short-id:/path`): a sample, at most
    /// [`AFFECTED_PER_SNAPSHOT`] of each affected snapshot and
    /// [`AFFECTED_LISTED`] in all; `affected_snapshots` counts them all.
    pub affected: Vec<String>,
    /// Every snapshot with paths whose data lies in damaged or missing
    /// packs, oldest first, and how many such paths it has (a damaged
    /// directory listing counts once: what lay below it is unknown).
    pub affected_snapshots: Vec<AffectedSnapshot>,
}

/// One snapshot that damaged or missing packs reach.
#[derive(Debug, Clone, Serialize)]
pub struct AffectedSnapshot {
    /// Its ID.
    pub snapshot: String,
    /// How many of its paths (files, directory listings) are affected.
    pub paths: u64,
}

/// Affected paths listed per snapshot, at most ([`CheckReport::affected`]).
pub const AFFECTED_PER_SNAPSHOT: usize = 10;
/// Affected paths listed in all, at most.
pub const AFFECTED_LISTED: usize = 100;

impl CheckReport {
    /// Records a failure: as [`CheckReport::unreadable`] when the store
    /// failed to deliver, else as an error, described by `what`.
    fn note(&mut self, e: Error, what: impl FnOnce(&Error) -> String) {
        file_failure(&e, what(&e), &mut self.errors, &mut self.unreadable);
    }

    /// True if everything was verified and no error was found.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.unreadable.is_empty()
    }
}

/// Checks the repository.
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn CheckProgress,
) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let backend = repo.backend();

    // 0. Every key file is whole: a damaged second key (the one kept for
    // recovery) is found before it is needed. Only the password can tell
    // more.
    for l in backend.list(FileKind::Key)? {
        let checked = crate::repository::read_key(&**backend, &l).and_then(|d| {
            crate::keyfile::KeyFile::from_bytes(&d, &l.name)?.validate(&l.name)?;
            crate::keyfile::check_name(&d, &l.name)
        });
        if let Err(e) = checked {
            r.note(e, |e| format!("key {}: {e}", l.name));
        }
    }

    // Listed in the order writers commit (packs, then the index files
    // naming them, then snapshots), backwards: a backup running beside
    // this check may add all three, and a snapshot listed before the index
    // files are read, or an index file read before the packs are listed,
    // named what had not been seen yet (damage reported where there was
    // none). A snapshot or pack written later is simply not checked.
    let (snapshots, unreadable) = repo.snapshots_lenient()?;
    // The trees are looked up in the local index, brought up to date at
    // open: again now, for snapshots committed since.
    if let Err(e) = repo.refresh_index() {
        // The local cache, not the repository: a word, not damage.
        r.warnings.push(format!(
            "the local index could not be brought up to date ({e}): snapshots written since \
             this check began may show as missing data; run it again with --no-cache"
        ));
    }

    // 1. Index files decrypt and every pack they name exists with the right size.
    let mut indexed: Indexed = HashMap::new();
    // Per pack, the furthest any listing of it (in any index file) says a
    // blob reaches, and that blob: an entry past the pack's end is read by
    // nobody, whichever listing a reader takes.
    let mut reach: HashMap<Id, (u64, Id)> = HashMap::new();
    for l in backend.list(FileKind::Index)? {
        let Ok(id) = Id::from_hex(&l.name) else {
            continue;
        };
        match load_index_file(&**backend, repo.key(), &id) {
            Ok(f) => {
                for p in f.packs {
                    for b in &p.blobs {
                        let end = u64::from(b.offset) + u64::from(b.length);
                        let r = reach.entry(p.id).or_insert((0, b.id));
                        if end > r.0 {
                            *r = (end, b.id);
                        }
                    }
                    indexed.entry(p.id).or_insert((p.size, p.blobs));
                }
            }
            Err(e) => r.note(e, |e| format!("index {}: {e}", l.name)),
        }
    }
    r.packs = indexed.len();
    let stored: HashMap<String, u64> = backend
        .list(FileKind::Pack)?
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    let mut damaged: HashSet<Id> = HashSet::new();
    let mut salvageable: HashSet<Id> = HashSet::new();
    let mut missing_dicts: BTreeSet<u32> = BTreeSet::new();
    for (id, (size, _)) in &indexed {
        match stored.get(&id.to_hex()) {
            None => {
                r.errors.push(format!(
                    "pack {id} is in the index but missing from the repository"
                ));
                r.packs_missing += 1;
                damaged.insert(*id);
                salvageable.insert(*id);
            }
            Some(s) if s != size => {
                r.errors.push(format!(
                    "pack {id} has {s} bytes, the index says {size} (truncated or replaced)"
                ));
                damaged.insert(*id);
                salvageable.insert(*id);
            }
            Some(s) => {
                if let Some((end, blob)) = reach.get(id).filter(|(end, _)| end > s) {
                    r.errors.push(format!(
                        "pack {id} has {s} bytes, but the index places blob {blob} up to byte \
                         {end} (`cairn repair index` lists the packs as their headers say)"
                    ));
                }
            }
        }
    }
    // A backup running beside the check writes packs it indexes at its
    // end: such a pack is not one an interrupted backup left.
    let host = crate::host::hostname();
    let listing = crate::lock::list_locks(&**backend, repo.key()).unwrap_or_default();
    let running: Vec<String> = listing
        .locks
        .into_iter()
        .filter(|l| !l.stale && !l.record.exclusive)
        // Not this check's own lock (a process elsewhere may share its PID).
        .filter(|l| l.record.pid != std::process::id() || l.record.hostname != host)
        .filter(|l| {
            let c = l.record.command.as_str();
            c.is_empty() || ["backup", "watch", "copy"].contains(&c)
        })
        .map(|l| {
            format!(
                "{} on {} (pid {})",
                l.record.command, l.record.hostname, l.record.pid
            )
        })
        // Whoever holds a lock that does not open may be backing up.
        .chain(
            listing
                .unreadable
                .iter()
                .filter(|l| !l.stale)
                .map(|l| format!("unreadable lock {}", l.name)),
        )
        .collect();
    let why = if running.is_empty() {
        // A prune stopped between its index and its deletions leaves such
        // packs too, holding only data nothing uses.
        "left by an interrupted command (backup, prune, copy or repair); `cairn repair index` \
         adds it if snapshots need its data, `cairn prune` removes it if not"
            .to_string()
    } else {
        format!(
            "written by a backup under way ({}) or left by an interrupted one",
            running.join(", ")
        )
    };
    for (name, size) in &stored {
        if Id::from_hex(name)
            .map(|id| !indexed.contains_key(&id))
            .unwrap_or(true)
        {
            // `repair index` cannot add a pack whose header does not open:
            // saying it would sent users round in circles.
            match crate::repair::read_pack_header(repo, name, *size) {
                Err(e @ Error::Corrupt { .. }) => r.errors.push(format!(
                    "pack {name} is not in any index and its header cannot be read ({e}): \
                     the blobs in it cannot be found; `cairn repair snapshots --forget` \
                     rewrites the snapshots that used them, then `cairn prune` deletes it \
                     (docs/recovery.md, section 7)"
                )),
                _ => r
                    .warnings
                    .push(format!("pack {name} is not in any index ({why})")),
            }
        }
    }
    // Leftovers cost room, not data: worth a word, not an error.
    match backend.stale_temporaries(crate::lock::abandoned_after(), false) {
        Ok(0) => {}
        Ok(n) => r.warnings.push(format!(
            "{n} leftovers of interrupted writes (temporary files, unfinished uploads) \
             are older than {} (a prune removes them)",
            crate::units::format_duration(crate::lock::abandoned_after())
        )),
        Err(e) => r.warnings.push(format!(
            "leftovers of interrupted writes could not be looked for: {e}"
        )),
    }

    // 1b. Every dictionary decrypts and is the dictionary its name says. A
    // missing one cannot be named without reading the blobs (the frame
    // header inside the ciphertext names it; `--read-data` does), but
    // dictionary blobs with no readable dictionary at all are caught here.
    let mut readable_dicts = 0;
    for id in crate::dict::list(&**backend)? {
        match crate::dict::read(&**backend, repo.key(), id) {
            Ok(_) => readable_dicts += 1,
            Err(e) => {
                if let Some(holds) = crate::dict::misnamed(&**backend, repo.key(), id) {
                    r.misnamed_dictionaries.push(format!(
                        "dicts/{} holds {}",
                        crate::dict::dict_name(id),
                        crate::dict::dict_name(holds)
                    ));
                }
                r.note(e, |e| e.to_string())
            }
        }
    }
    let dict_blobs = indexed
        .values()
        .flat_map(|(_, blobs)| blobs.iter())
        .filter(|b| b.compression == crate::compress::Compression::ZstdDict)
        .count();
    if dict_blobs > 0 && readable_dicts == 0 {
        r.errors.push(format!(
            "{dict_blobs} blobs are compressed with a dictionary, but dicts/ holds no readable dictionary"
        ));
    }

    // 1c. The audit trail is authentic: every record decrypts and is named
    // after its content.
    let (sound, problems) = crate::audit::verify(&**backend, repo.key())?;
    r.audit_records = sound;
    for e in problems {
        r.note(e, |e| format!("audit trail: {e}"));
    }

    // 2. Every snapshot's trees and data blobs are indexed, and 3. with
    // read_data, every pack's header agrees with the index and every blob
    // verifies. The walk is one thread reading trees one at a time; the
    // packs are read in parallel beside it, so it costs no wall time of
    // its own.
    for e in unreadable {
        r.note(e, |e| e.to_string());
    }
    r.snapshots = snapshots.len();
    r.errors.extend(lineage_problems(repo, &snapshots));
    let mut present: Vec<(Id, u64)> = Vec::new();
    if opts.read_data || opts.subset.is_some() {
        present = indexed
            .iter()
            // A truncated pack is read too: what it still holds narrows
            // the affected paths to the blobs it lost.
            .filter(|(id, _)| stored.contains_key(&id.to_hex()))
            .map(|(id, (size, _))| (*id, *size))
            .collect();
        present.sort();
        if let Some(sub) = &opts.subset {
            present = sub.select(present);
        }
    }
    let (walk, bad) = rayon::join(
        || walk_snapshots(repo, &snapshots, &indexed),
        || read_packs(repo, &present, &indexed, progress),
    );
    r.errors.extend(walk.errors);
    r.unreadable.extend(walk.unreadable);
    r.warnings.extend(walk.cache);
    r.trees = walk.trees;
    r.data_blobs = walk.data_blobs;
    r.packs_read = present.len();
    // Packs read that failed, and those read (all of them verified).
    let failed: HashSet<Id> = bad.iter().map(|(id, _)| *id).collect();
    let read: HashSet<Id> = present.iter().map(|(id, _)| *id).collect();
    // Of packs read, the blobs that do not open: only those are lost.
    let mut narrowed: HashMap<Id, HashSet<Id>> = HashMap::new();
    for (id, f) in bad {
        if is_unreadable(&f.error) {
            // Not read, so not verified either.
            r.packs_read -= 1;
            r.unreadable.push(format!("pack {id}: {}", f.error));
            continue;
        }
        // A truncated pack's size was reported already.
        if damaged.insert(id) {
            r.errors.push(f.error.to_string());
        }
        if !f.bytes_intact || f.blobs_only {
            salvageable.insert(id);
        }
        missing_dicts.extend(f.missing_dicts.iter().copied());
        if let Some(lost) = f.lost {
            narrowed.insert(id, lost);
        }
    }
    // Named by the walk's error already; without --read-data only the
    // trees are known to be lost, the rest of the pack was not read.
    // A pack whose bytes are its own (its name is their hash) is not
    // damaged: a tree in it that does not open was written so, or the
    // index places it wrongly, and `repair packs` would find nothing to do.
    for (pack, trees) in walk.damaged_trees {
        let intact = if read.contains(&pack) {
            !failed.contains(&pack)
        } else {
            backend
                .read(FileKind::Pack, &pack.to_hex())
                .is_ok_and(|b| Id::of_object(&b) == pack)
        };
        if intact {
            continue;
        }
        damaged.insert(pack);
        salvageable.insert(pack);
        narrowed.entry(pack).or_insert(trees);
    }
    r.errors.sort();
    r.unreadable.sort();
    // Every snapshot using what is lost is named, not only the first
    // one the walk met (a file unchanged in three snapshots named one).
    let mut blobs: HashSet<Id> = damaged
        .iter()
        .flat_map(|p| match narrowed.get(p) {
            Some(lost) => lost.iter().copied().collect::<Vec<_>>(),
            None => indexed[p].1.iter().map(|b| b.id).collect(),
        })
        .collect();
    // A blob with a copy in another pack is not lost: restore reads that.
    if !blobs.is_empty() {
        for (p, (_, held)) in &indexed {
            // A damaged pack that was read still holds what opened in it.
            let intact = |b: &Id| match narrowed.get(p) {
                Some(lost) => !lost.contains(b),
                None => !damaged.contains(p),
            };
            if stored.contains_key(&p.to_hex()) {
                for b in held.iter().filter(|b| intact(&b.id)) {
                    blobs.remove(&b.id);
                }
            }
        }
    }
    blobs.extend(walk.lost);
    if !blobs.is_empty() {
        (r.affected, r.affected_snapshots) = affected_paths(repo, &snapshots, &blobs);
    }
    if !damaged.is_empty() {
        r.damaged_packs = damaged.iter().map(|p| p.to_hex()).collect();
        r.damaged_packs.sort();
        r.salvageable_packs = salvageable.iter().map(|p| p.to_hex()).collect();
        r.salvageable_packs.sort();
        r.missing_dictionaries = missing_dicts
            .iter()
            .map(|d| format!("dicts/{}", crate::dict::dict_name(*d)))
            .collect();
    }
    Ok(r)
}

/// The packs named in the index files, by ID: size and blobs.
type Indexed = HashMap<Id, (u64, Vec<crate::blob::PackedBlob>)>;

/// What the walk of every snapshot's trees found.
struct Walk {
    errors: Vec<String>,
    /// Trees the store did not deliver.
    unreadable: Vec<String>,
    trees: usize,
    data_blobs: usize,
    /// Data blobs no index file names, and trees that do not load: each
    /// is reported once, under the first snapshot met that uses it.
    lost: HashSet<Id>,
    /// Packs whose copy of a tree does not open (damaged where the pack's
    /// size is right), with those trees.
    damaged_trees: HashMap<Id, HashSet<Id>>,
    /// What was found of the local cache, if it lacked blobs (see
    /// [`cache_lacking`]).
    cache: Option<String>,
}

/// Walks every snapshot's trees, checking that each tree loads and each
/// data blob is in `indexed` (the index files just read, not the local cache).
fn walk_snapshots(
    repo: &Repository,
    snapshots: &[(Id, crate::snapshot::Snapshot)],
    indexed: &Indexed,
) -> Walk {
    let (mut errors, mut unreadable) = (Vec::new(), Vec::new());
    let mut seen_trees: HashSet<Id> = HashSet::new();
    let mut lengths = Lengths::new(indexed);
    // Data blobs no index file names, each reported once.
    let mut missing: HashSet<Id> = HashSet::new();
    let mut lost: HashSet<Id> = HashSet::new();
    let copies = tree_copies(indexed);
    let mut damaged_trees: HashMap<Id, HashSet<Id>> = HashMap::new();
    // One read view for every tree (a view per tree costs a transaction).
    let index = match repo.index_reader() {
        Ok(r) => r,
        Err(e) => {
            errors.push(format!("local index: {e}"));
            return Walk {
                errors,
                unreadable,
                trees: 0,
                data_blobs: 0,
                lost: HashSet::new(),
                damaged_trees: HashMap::new(),
                cache: None,
            };
        }
    };
    for (sid, snap) in snapshots {
        let mut stack = vec![(snap.tree, String::from("/"))];
        while let Some((tid, path)) = stack.pop() {
            if !seen_trees.insert(tid) {
                continue;
            }
            let tree = match load_tree_checked(repo, &index, &copies, &tid) {
                Ok((t, damaged_copy)) => {
                    if let Some((pack, e)) = damaged_copy {
                        let next = match e {
                            Error::Missing(_) => {
                                "`cairn repair packs` with its ID drops it from the index"
                            }
                            _ => "`cairn repair packs` with its ID drops the damaged copy",
                        };
                        errors.push(format!(
                            "snapshot {}: tree {} ({path}) in pack {pack}: {e}; its copy in \
                             another pack is intact and was read ({next})",
                            sid.short(),
                            tid.short(),
                        ));
                    }
                    t
                }
                Err(e) => {
                    let what = format!(
                        "snapshot {}: tree {} ({path}): {e}",
                        sid.short(),
                        tid.short()
                    );
                    if !is_unreadable(&e) {
                        lost.insert(tid);
                    }
                    // No copy opens: each pack holding one is damaged, as
                    // a read of its data would have found (a pack gone or
                    // cut short is counted by its size already).
                    if matches!(e, Error::Corrupt { .. }) {
                        let from = copies.partition_point(|(t, _, _)| *t < tid);
                        for (_, pack, _) in copies[from..].iter().take_while(|(t, _, _)| *t == tid)
                        {
                            damaged_trees.entry(**pack).or_default().insert(tid);
                        }
                    }
                    file_failure(&e, what, &mut errors, &mut unreadable);
                    continue;
                }
            };
            for n in &tree.nodes {
                if !n.has_safe_name() {
                    errors.push(format!(
                        "snapshot {}: {path}: {} (a restore refuses it)",
                        sid.short(),
                        n.unsafe_name_error()
                    ));
                }
                match n.kind {
                    NodeKind::Dir => match n.subtree {
                        Some(s) => stack.push((s, format!("{path}{}/", n.display_name()))),
                        None => errors.push(format!(
                            "snapshot {}: {path}{}: directory without a tree",
                            sid.short(),
                            n.display_name()
                        )),
                    },
                    NodeKind::File => {
                        let mut length = Some(0u64);
                        for b in &n.content {
                            let raw = lengths.see(b);
                            length = length.zip(raw).map(|(l, r)| l + u64::from(r));
                            if raw.is_none() && missing.insert(*b) {
                                errors.push(format!(
                                    "snapshot {}: {path}{}: data blob {} is missing",
                                    sid.short(),
                                    n.display_name(),
                                    b.short()
                                ));
                            }
                        }
                        // A restore refuses content of another length than
                        // the node records.
                        if let Some(l) = length.filter(|l| *l != n.size) {
                            errors.push(format!(
                                "snapshot {}: {path}{}: content is {l} bytes but the snapshot records {}",
                                sid.short(),
                                n.display_name(),
                                n.size
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    lost.extend(&missing);
    let cache = cache_lacking(repo, &lengths);
    Walk {
        errors,
        unreadable,
        trees: seen_trees.len(),
        data_blobs: lengths.seen() + missing.len(),
        lost,
        damaged_trees,
        cache,
    }
}

/// Whether the local cache lacks blobs the index files hold, brought up to
/// date as it was before they were read: rows a flipped bit in the cache
/// file lost (or put under another ID). Restore, dump and copy then failed
/// on "not in the index" for good while check found nothing wrong. Such a
/// cache is removed (the next command rebuilds it); what is said of it.
fn cache_lacking(repo: &Repository, lengths: &Lengths) -> Option<String> {
    let cache = repo.synced_index().ok()?;
    cache.path()?;
    let mut held = vec![0u64; lengths.by_id.len().div_ceil(64)];
    let scanned = cache.for_each_blob(|loc| {
        if let Some(i) = lengths.position(&loc.blob.id) {
            held[i / 64] |= 1 << (i % 64);
        }
        Ok(())
    });
    scanned.ok()?;
    let lacking: Vec<Id> = (0..lengths.by_id.len())
        .filter(|i| held[i / 64] & (1 << (i % 64)) == 0)
        .map(|i| lengths.by_id[i].0)
        .collect();
    if lacking.is_empty() {
        return None;
    }
    // An index file a backup wrote after the cache was last brought up to
    // date is no damage: brought up to date again, the cache has its blobs.
    repo.refresh_index().ok()?;
    let reader = repo.index_reader().ok()?;
    let lost = lacking
        .iter()
        .filter(|id| {
            matches!(reader.lookup(id), Ok(None)) && matches!(reader.lookup_tree(id), Ok(None))
        })
        .count();
    if lost == 0 {
        return None;
    }
    let at = repo.synced_index().ok()?.condemn()?;
    Some(format!(
        "the local cache {} lacked {lost} blobs that the repository's index files hold: it is \
         damaged (the repository is not), and was removed; the next command rebuilds it",
        at.display()
    ))
}

/// The raw length of every blob the index files name, sorted by ID, and
/// which of them the walk met: a flat array and a bit per blob, where maps
/// of IDs took about 120 bytes per blob (1.2 GB at 10 M blobs). IDs are
/// uniform hashes, so their first bits find a bucket of about 8 entries
/// (`starts`): a lookup touches two or three cache lines, as a hash map's
/// does, not the twenty of a binary search over the whole array.
struct Lengths {
    by_id: Vec<(Id, u32)>,
    starts: Vec<usize>,
    shift: u32,
    seen: Vec<u64>,
}

impl Lengths {
    fn new(indexed: &Indexed) -> Lengths {
        // Sized at once: grown by doubling, it would take up to twice as much.
        let mut by_id: Vec<(Id, u32)> =
            Vec::with_capacity(indexed.values().map(|(_, b)| b.len()).sum());
        by_id.extend(
            indexed
                .values()
                .flat_map(|(_, blobs)| blobs.iter().map(|b| (b.id, b.raw_length))),
        );
        // Either stored type will do for a file's content (identical
        // bytes are one blob): one entry per ID.
        by_id.sort_unstable_by_key(|(id, _)| *id);
        by_id.dedup_by_key(|(id, _)| *id);
        by_id.shrink_to_fit();
        let buckets = (by_id.len() / 8).max(1).next_power_of_two();
        let shift = 64 - buckets.trailing_zeros();
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut i = 0;
        for b in 0..buckets {
            while i < by_id.len() && Lengths::bucket(shift, &by_id[i].0) < b {
                i += 1;
            }
            starts.push(i);
        }
        starts.push(by_id.len());
        let seen = vec![0; by_id.len().div_ceil(64)];
        Lengths {
            by_id,
            starts,
            shift,
            seen,
        }
    }

    /// The bucket of `id`: its first bits (none with a single bucket).
    fn bucket(shift: u32, id: &Id) -> usize {
        let prefix = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
        prefix.checked_shr(shift).unwrap_or(0) as usize
    }

    /// The raw length of blob `id` if an index file names it, which is
    /// then counted as seen.
    fn see(&mut self, id: &Id) -> Option<u32> {
        let i = self.position(id)?;
        self.seen[i / 64] |= 1 << (i % 64);
        Some(self.by_id[i].1)
    }

    /// Where blob `id` is in `by_id`, if an index file names it.
    fn position(&self, id: &Id) -> Option<usize> {
        let b = Lengths::bucket(self.shift, id);
        let (lo, hi) = (self.starts[b], self.starts[b + 1]);
        self.by_id[lo..hi]
            .binary_search_by_key(id, |(x, _)| *x)
            .ok()
            .map(|i| lo + i)
    }

    /// How many blobs [`Lengths::see`] found, each once.
    fn seen(&self) -> usize {
        self.seen.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Where the index files just read place each tree: every copy, sorted by
/// tree ID (copies of one tree side by side). References into `indexed`,
/// 48 bytes a tree: a repository may hold millions.
fn tree_copies(indexed: &Indexed) -> Vec<(Id, &Id, &crate::blob::PackedBlob)> {
    let mut out: Vec<_> = indexed
        .iter()
        .flat_map(|(pack, (_, blobs))| {
            blobs
                .iter()
                .filter(|b| b.blob_type == BlobType::Tree)
                .map(move |b| (b.id, pack, b))
        })
        .collect();
    out.sort_unstable_by_key(|(id, _, _)| *id);
    out
}

/// Loads tree `id` from the copy a restore reads first (the local index's
/// choice); if that copy is damaged or gone but another verifies, returns
/// the tree with the failed copy's pack and error (a restore reads around
/// it without a word worth an error; check must name it). The copies are
/// those of the index files (`copies`, from [`tree_copies`]), not of the
/// local cache: a fault in the cache was reported as a damaged pack, and a
/// tree missing from it as lost. A tree no index file has as a tree (one
/// stored as data, its bytes a file's too) is found through the cache.
fn load_tree_checked(
    repo: &Repository,
    index: &crate::localindex::IndexReader,
    copies: &[(Id, &Id, &crate::blob::PackedBlob)],
    id: &Id,
) -> Result<(crate::tree::Tree, Option<(Id, Error)>)> {
    let from = copies.partition_point(|(t, _, _)| t < id);
    let copies: Vec<BlobLocation> = copies[from..]
        .iter()
        .take_while(|(t, _, _)| t == id)
        .map(|(_, pack, blob)| BlobLocation {
            pack: **pack,
            blob: **blob,
        })
        .collect();
    let first = match copies.first() {
        None => index.locate_tree(id)?,
        Some(c) => index
            .lookup_tree(id)
            .ok()
            .flatten()
            .filter(|l| copies.contains(l))
            .unwrap_or(*c),
    };
    let mut failed: Option<(Id, Error)> = None;
    for loc in std::iter::once(&first).chain(copies.iter().filter(|c| **c != first)) {
        match repo.load_tree_here(loc) {
            Ok(t) => return Ok((t, failed)),
            Err(e @ (Error::Corrupt { .. } | Error::Missing(_))) => {
                failed.get_or_insert((loc.pack, e));
            }
            Err(e) => return Err(e),
        }
    }
    let (pack, e) = failed.expect("at least one copy was tried");
    // Another copy a restore would read (one stored as data, say).
    match repo.load_tree_at(&first) {
        Ok(t) => Ok((t, Some((pack, e)))),
        Err(_) => Err(e),
    }
}

/// Records of one lineage with other content than each other: one must
/// only leave out what the other holds, as `repair snapshots` (files whose
/// data is lost, listings it cannot read) and `rewrite` (excluded paths)
/// do. Anything else is a record written by someone holding the key that
/// claims another snapshot's lineage (so that it is shown in that
/// snapshot's place), or damage. Records of one lineage taken at
/// different times are such a record too: no rewrite changes the time.
fn lineage_problems(
    repo: &Repository,
    snapshots: &[(Id, crate::snapshot::Snapshot)],
) -> Vec<String> {
    let mut by_lineage: HashMap<Id, Vec<(Id, &crate::snapshot::Snapshot)>> = HashMap::new();
    for (id, s) in snapshots {
        by_lineage.entry(s.lineage(*id)).or_default().push((*id, s));
    }
    let Ok(reader) = repo.index_reader() else {
        return Vec::new(); // the walk reports the local index
    };
    let mut memo = HashMap::new();
    let mut problems = Vec::new();
    for records in by_lineage.values() {
        for (i, (a, sa)) in records.iter().enumerate() {
            for (b, sb) in &records[i + 1..] {
                // No rewrite changes the time (see `logical_snapshots`).
                if sa.time != sb.time {
                    problems.push(format!(
                        "snapshot records {} and {} claim to be one snapshot (same lineage), \
                         but were taken at different times ({} and {}): one was written by \
                         someone holding the key (each is shown as a snapshot of its own; \
                         `cairn forget ID` of the one that is not yours removes it)",
                        a.short(),
                        b.short(),
                        sa.time.to_rfc3339(),
                        sb.time.to_rfc3339()
                    ));
                    continue;
                }
                let (ta, tb) = (&sa.tree, &sb.tree);
                if ta != tb
                    && !restricts(repo, &reader, *ta, *tb, &mut memo)
                    && !restricts(repo, &reader, *tb, *ta, &mut memo)
                {
                    problems.push(format!(
                        "snapshot records {} and {} claim to be one snapshot (same lineage), \
                         but neither only leaves out what the other holds: one was written by \
                         someone holding the key, or is damaged (`cairn forget ID` of the one \
                         that is not yours removes it alone)",
                        a.short(),
                        b.short()
                    ));
                }
            }
        }
    }
    problems.sort();
    problems
}

/// Whether tree `small` holds only entries that `big` holds at the same
/// place, as they are there, directories compared by their content in
/// turn; a listing `big` cannot give may be empty in `small` (a repair
/// empties it). A `small` that cannot be read is left to the walk to
/// report.
fn restricts(
    repo: &Repository,
    reader: &crate::localindex::IndexReader,
    small: Id,
    big: Id,
    memo: &mut HashMap<(Id, Id), bool>,
) -> bool {
    if small == big {
        return true;
    }
    if let Some(r) = memo.get(&(small, big)) {
        return *r;
    }
    let Ok(s) = repo.load_tree_in(reader, &small) else {
        return true;
    };
    let result = match repo.load_tree_in(reader, &big) {
        Err(Error::Missing(_) | Error::Corrupt { .. }) => s.nodes.is_empty(),
        // The store did not answer: nothing to say.
        Err(_) => true,
        Ok(b) => {
            let by_name: HashMap<&[u8], &crate::tree::Node> =
                b.nodes.iter().map(|n| (n.name.as_slice(), n)).collect();
            s.nodes.iter().all(|n| {
                let Some(m) = by_name.get(n.name.as_slice()) else {
                    return false;
                };
                match (n.subtree, m.subtree) {
                    (Some(x), Some(y)) => {
                        // Directories: their metadata, then their content.
                        let bare = |x: &crate::tree::Node| crate::tree::Node {
                            subtree: None,
                            ..x.clone()
                        };
                        bare(n) == bare(m)
                            && crate::deep::deeper(|| restricts(repo, reader, x, y, memo))
                    }
                    _ => n == *m,
                }
            })
        }
    };
    memo.insert((small, big), result);
    result
}

/// The store failing to answer (a timeout, a server error) says nothing
/// about the bytes: calling it damage would send people to `repair`.
fn is_unreadable(e: &Error) -> bool {
    match e {
        Error::Backend(_) | Error::BucketNotFound(_) => true,
        // A local read this user may not make, or a network filesystem
        // that did not answer: nothing was read to judge, and the repair
        // check advised found nothing to repair. An I/O error (EIO, a bad
        // sector) is damage that stays, and is reported as such.
        Error::Io { source, .. } => {
            source.kind() == std::io::ErrorKind::PermissionDenied
                || matches!(
                    source.raw_os_error(),
                    Some(
                        libc::ESTALE
                            | libc::ETIMEDOUT
                            | libc::EHOSTDOWN
                            | libc::ENOTCONN
                            | libc::ENODEV
                            | libc::ENXIO
                            | libc::EMFILE
                            | libc::ENFILE
                    )
                )
        }
        _ => false,
    }
}

/// Files `line`, the account of failure `e`, under `unreadable` when the
/// store failed to deliver, else under `errors`.
fn file_failure(e: &Error, line: String, errors: &mut Vec<String>, unreadable: &mut Vec<String>) {
    if is_unreadable(e) {
        unreadable.push(line);
    } else {
        errors.push(line);
    }
}

/// A pack that failed verification.
struct PackFailure {
    /// Why.
    error: Error,
    /// The blobs the index places in it that do not open from it (none
    /// when only its header or padding is damaged); `None` when it could
    /// not be read at all.
    lost: Option<HashSet<Id>>,
    /// Its bytes hash to its name: the failure is in what was written
    /// (or the index), not in storage.
    bytes_intact: bool,
    /// Its bytes and header are intact, yet blobs do not open (their
    /// dictionary is damaged or gone): `repair packs` keeps the others.
    blobs_only: bool,
    /// Dictionaries its blobs need that are not in the repository.
    missing_dicts: BTreeSet<u32>,
}

/// Reads and verifies the packs `present`, in parallel; returns the packs
/// that failed, with why.
fn read_packs(
    repo: &Repository,
    present: &[(Id, u64)],
    indexed: &Indexed,
    progress: &dyn CheckProgress,
) -> Vec<(Id, PackFailure)> {
    let bad = Mutex::new(Vec::new());
    present.par_iter().enumerate().for_each(|(i, (id, size))| {
        // A worker takes neighbouring packs in turn: start reading its
        // next one so a cold read overlaps with verifying this one.
        if let Some((next, _)) = present.get(i + 1) {
            repo.backend().prefetch(FileKind::Pack, &next.to_hex());
        }
        if let Err(e) = verify_pack(repo, id, &indexed[id].1) {
            bad.lock().expect("errors").push((*id, *e));
        }
        progress.pack_done(*size);
    });
    bad.into_inner().expect("errors")
}

/// Paths in snapshots whose content or directory listing uses one of
/// `blobs`: a sample of them, and every affected snapshot with its count.
/// Each distinct tree is read once, however many snapshots share it.
fn affected_paths(
    repo: &Repository,
    snapshots: &[(Id, crate::snapshot::Snapshot)],
    blobs: &HashSet<Id>,
) -> (Vec<String>, Vec<AffectedSnapshot>) {
    let hit = |n: &crate::tree::Node| match n.kind {
        NodeKind::Dir => n.subtree.is_some_and(|t| blobs.contains(&t)),
        _ => n.content.iter().any(|b| blobs.contains(b)),
    };
    let mut below: HashMap<Id, u64> = HashMap::new();
    let (mut sample, mut counts) = (Vec::new(), Vec::new());
    for (sid, snap) in snapshots {
        let root_hit = blobs.contains(&snap.tree);
        let total = u64::from(root_hit) + damage_below(repo, snap.tree, &hit, &mut below);
        if total == 0 {
            continue;
        }
        counts.push(AffectedSnapshot {
            snapshot: sid.to_hex(),
            paths: total,
        });
        // A sample, walking only into trees with damage below them.
        let room = AFFECTED_PER_SNAPSHOT.min(AFFECTED_LISTED.saturating_sub(sample.len()));
        let mut mine = Vec::new();
        if root_hit {
            mine.push(format!("{}:/", sid.short()));
        }
        let mut stack = vec![(snap.tree, String::new())];
        while let Some((tid, path)) = stack.pop() {
            let Ok(tree) = repo.load_tree(&tid) else {
                continue;
            };
            for n in &tree.nodes {
                if mine.len() >= room {
                    break;
                }
                let p = format!("{path}/{}", n.display_name());
                if hit(n) {
                    mine.push(format!("{}:{p}", sid.short()));
                }
                if let Some(t) = n.subtree.filter(|t| below.get(t).is_some_and(|c| *c > 0)) {
                    stack.push((t, p));
                }
            }
        }
        mine.truncate(room);
        sample.extend(mine);
    }
    (sample, counts)
}

/// How many entries below tree `id` (at any depth) `hit` picks, counted
/// once per distinct tree in `memo`. A tree that cannot be read adds
/// nothing: its parent's entry for it is the hit.
fn damage_below(
    repo: &Repository,
    id: Id,
    hit: &dyn Fn(&crate::tree::Node) -> bool,
    memo: &mut HashMap<Id, u64>,
) -> u64 {
    if let Some(n) = memo.get(&id) {
        return *n;
    }
    let Ok(tree) = repo.load_tree(&id) else {
        memo.insert(id, 0);
        return 0;
    };
    let mut n = 0;
    for node in &tree.nodes {
        n += u64::from(hit(node));
        if let Some(sub) = node.subtree {
            n += crate::deep::deeper(|| damage_below(repo, sub, hit, memo));
        }
    }
    memo.insert(id, n);
    n
}

fn verify_pack(
    repo: &Repository,
    id: &Id,
    expected: &[crate::blob::PackedBlob],
) -> std::result::Result<(), Box<PackFailure>> {
    let bytes = repo
        .backend()
        .read(FileKind::Pack, &id.to_hex())
        .map_err(|error| {
            Box::new(PackFailure {
                error,
                lost: None,
                bytes_intact: false,
                blobs_only: false,
                missing_dicts: BTreeSet::new(),
            })
        })?;
    let bytes_intact = Id::of_object(&bytes) == *id;
    let whole = verify_whole(repo, id, &bytes, bytes_intact, expected);
    whole.map_err(|error| {
        // Each blob where the index places it, as a restore reads it.
        let mut lost = HashSet::new();
        let mut missing_dicts = BTreeSet::new();
        let _ = pack::open_each(repo.key(), id, &bytes, expected, repo, |b, opened| {
            if let Err(e) = opened.and_then(|data| valid_blob(id, b, data)) {
                lost.insert(b.id);
                if let Error::Missing(object) = &e
                    && let Some(d) = crate::dict::named_in(object)
                {
                    missing_dicts.insert(d);
                }
            }
            Ok(())
        });
        let blobs_only = bytes_intact
            && !lost.is_empty()
            && pack::read_header_from_bytes(repo.key(), id, &bytes).is_ok_and(|h| h == expected);
        Box::new(PackFailure {
            error,
            lost: Some(lost),
            bytes_intact,
            blobs_only,
            missing_dicts,
        })
    })
}

/// The checks of a whole pack held in `bytes`: its name, its header
/// against the index, every blob.
fn verify_whole(
    repo: &Repository,
    id: &Id,
    bytes: &[u8],
    bytes_intact: bool,
    expected: &[crate::blob::PackedBlob],
) -> Result<()> {
    if !bytes_intact {
        return Err(Error::corrupt(
            format!("pack {id}"),
            "content does not hash to its name",
        ));
    }
    let header = pack::read_header_from_bytes(repo.key(), id, bytes)?;
    if header != expected {
        return Err(Error::corrupt(
            format!("pack {id}"),
            "header does not agree with the index (`cairn repair index` rewrites the index \
             from the pack headers)",
        ));
    }
    pack::verify_blobs(repo.key(), id, bytes, &header, repo, |b, data| {
        valid_blob(id, b, data)
    })
}

/// What a blob must be beyond hashing to its ID: a tree must decode.
fn valid_blob(pack: &Id, b: &crate::blob::PackedBlob, data: &[u8]) -> Result<()> {
    if b.blob_type == BlobType::Tree {
        crate::tree::Tree::decode(data, &format!("tree {} in pack {pack}", b.id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_of_a_subset_cover_every_pack_once_even_beyond_256() {
        let packs: Vec<(Id, u64)> = (0..20_000).map(|_| (Id::random(), 1)).collect();
        for m in [7u32, 300, 1000] {
            let mut seen = 0;
            for n in 1..=m {
                let part = Subset::Part(n, m).select(packs.clone());
                assert!(!part.is_empty(), "part {n}/{m} is empty");
                seen += part.len();
            }
            assert_eq!(seen, packs.len(), "parts of {m} overlap or miss packs");
        }
    }

    #[test]
    fn a_share_in_percent_reads_exactly_that_share() {
        for (len, share, want) in [
            (100, "7%", 7),
            (100, "14%", 14),
            (100, "28%", 28),
            (1000, "7%", 70),
            (3, "50%", 2),
            (1000, "2.5%", 25),
            (10, "0.01%", 1),
            (10, "100%", 10),
        ] {
            let packs: Vec<(Id, u64)> = (0..len).map(|_| (Id::random(), 1)).collect();
            let got = Subset::parse(share).unwrap().select(packs).len();
            assert_eq!(got, want, "{share} of {len}");
        }
        // Nothing at all is no subset: a check that reads nothing passed.
        for none in ["0%", "0", "0M", "0/3", "-1%"] {
            assert!(Subset::parse(none).is_err(), "{none}");
        }
    }

    #[test]
    fn lengths_answer_for_every_indexed_blob_and_count_each_seen_once() {
        use crate::blob::{BlobType, PackedBlob};
        use crate::compress::Compression;
        let blob = |id, raw_length| PackedBlob {
            id,
            blob_type: BlobType::Data,
            offset: 0,
            length: raw_length + 16,
            raw_length,
            compression: Compression::None,
            start: None,
        };
        let mut ids: Vec<Id> = (0..1000).map(|_| Id::random()).collect();
        // The first and last buckets' edges.
        ids[3] = Id([0; 32]);
        ids[4] = Id([0xff; 32]);
        let mut indexed: Indexed = HashMap::new();
        for (p, chunk) in ids.chunks(100).enumerate() {
            let blobs = chunk
                .iter()
                .zip(p * 100..)
                .map(|(id, i)| blob(*id, i as u32));
            indexed.insert(Id::random(), (0, blobs.collect()));
        }
        // A blob in two packs (a copy left by an interrupted prune).
        indexed.insert(Id::random(), (0, vec![blob(ids[7], 7)]));
        let mut l = Lengths::new(&indexed);
        assert_eq!(l.by_id.len(), 1000);
        for (i, id) in ids.iter().enumerate().rev() {
            assert_eq!(l.see(id), Some(i as u32));
        }
        assert_eq!(l.see(&ids[7]), Some(7));
        assert_eq!(l.see(&Id::random()), None);
        assert_eq!(l.seen(), 1000);
        let mut empty = Lengths::new(&HashMap::new());
        assert_eq!(empty.see(&ids[0]), None);
        // Fewer than 16 blobs: one bucket.
        let few: Indexed = HashMap::from([(
            Id::random(),
            (0, vec![blob(ids[3], 3), blob(ids[4], 4), blob(ids[5], 5)]),
        )]);
        let mut few = Lengths::new(&few);
        assert_eq!(few.starts, [0, 3]);
        assert_eq!(
            (few.see(&ids[4]), few.see(&ids[5]), few.see(&ids[6])),
            (Some(4), Some(5), None)
        );
        assert_eq!(few.seen(), 2);
        let mut l = Lengths::new(&indexed);
        l.see(&ids[0]);
        l.see(&ids[999]);
        l.see(&ids[0]);
        assert_eq!(l.seen(), 2);
    }
}
