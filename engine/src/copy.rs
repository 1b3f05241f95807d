//! Copying snapshots between repositories (replication).
//!
//! Two repositories never share blob IDs: IDs are keyed by the master key
//! and the chunker is seeded from it. So a copy re-identifies every data
//! blob under the destination's key and rewrites every tree bottom-up (a
//! tree names its children by ID). When both repositories cut files
//! identically (same chunker parameters and seed, which only happens when
//! they share a master key), each source chunk is re-hashed as it is;
//! otherwise each file's content is streamed through the destination's
//! chunker, so the copy deduplicates with the destination's own backups
//! (a database captured by `backup --sqlite` is cut at its pages, as a
//! capture there would be).
//!
//! Blobs go through [`BlobSaver`], which checks the destination's index
//! before compressing, encrypting or uploading anything. Each snapshot is
//! committed like a backup: packs, then index files, then (after
//! [`LockGuard::check`]) the snapshot record, which carries `copied_from`
//! (the source repository and the snapshot's lineage there) so that a later
//! copy skips it.
//!
//! Work already done is reused without reading file content again: subtrees
//! translated earlier in the run, and, through the nearest snapshot already
//! copied from the same source (same host and paths), every unchanged
//! subtree and file, as a backup reuses its parent: whole subtrees only
//! when that copy is verified in the destination's local index (all its
//! blobs indexed, and nothing removed since), else each unchanged file's
//! content once it is found indexed; a copy is recorded as verified once
//! committed, as a backup is.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::blob::BlobType;
use crate::bulk_read::{BulkReader, DEFAULT_CAPACITY, Plan};
use crate::capture::sqlite;
use crate::chunker::{Chunker, FixedCuts};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::lineage::{Logical, logical_snapshots};
use crate::localindex::BackupView;
use crate::lock::LockGuard;
use crate::repository::Repository;
use crate::saver::BlobSaver;
use crate::snapshot::{CopiedFrom, Origin, Snapshot, SnapshotFilter};
use crate::tree::{Node, NodeKind, Tree};

/// A snapshot's time, as recorded.
type Time = chrono::DateTime<chrono::FixedOffset>;

/// Chunks processed in parallel per file before the next are read.
const CHUNK_BATCH: usize = 4;

/// Pages cut and stored in parallel at a time: enough 4 KiB pieces to keep
/// the workers busy (as a capture's backup does).
const PAGE_BATCH: usize = 256;

/// Which source snapshots to copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Snapshots named by ID, unique prefix or `latest`; empty means all.
    pub snapshots: Vec<String>,
    /// Only snapshots from this host.
    pub host: Option<String>,
    /// Only snapshots carrying every tag of one of these lists (see
    /// [`SnapshotFilter::tags`]).
    pub tags: Vec<Vec<String>>,
    /// Only snapshots that include every one of these paths.
    pub paths: Vec<String>,
    /// Take a shared lock on the source (off for read-only sources).
    pub lock_source: bool,
}

/// Receives progress from a running copy. Called from worker threads.
pub trait CopyProgress: Sync {
    /// Copying of a source snapshot starts.
    fn snapshot_start(&self, _source: &Id, _snapshot: &Snapshot) {}
    /// Bytes of source file content read.
    fn bytes_read(&self, _n: u64) {}
    /// A source snapshot was copied.
    fn snapshot_done(&self, _copied: &Copied) {}
    /// A source snapshot was skipped because the destination has it.
    fn snapshot_skipped(&self, _skipped: &Skipped) {}
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl CopyProgress for NoProgress {}

/// One snapshot written to the destination.
#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    /// The source record.
    pub source: Id,
    /// The new record in the destination.
    pub id: Id,
    /// The new record.
    #[serde(skip)]
    pub snapshot: Snapshot,
    /// Source file content bytes read for it.
    pub bytes_read: u64,
    /// New blobs stored in the destination for it.
    pub blobs_added: u64,
    /// Bytes written to the destination for it (packs and index files).
    pub bytes_uploaded: u64,
}

/// One source snapshot the destination already holds.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The source record.
    pub source: Id,
    /// The destination snapshot that holds it.
    pub existing: Id,
    /// Why it counts as present: `copied` (copied here before) or
    /// `origin` (the source snapshot is itself a copy of this one).
    pub reason: &'static str,
    /// What the destination's record has otherwise than the source's,
    /// set or changed after the copy and not carried over: `tags`,
    /// `hold`. A `forget --keep-tag` there goes by the destination's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differs: Vec<&'static str>,
}

/// What [`copy`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots written, oldest first.
    pub copied: Vec<Copied>,
    /// Snapshots the destination already had.
    pub skipped: Vec<Skipped>,
    /// Whether file content was re-chunked (the repositories cut
    /// differently) rather than re-hashed chunk by chunk.
    pub rechunked: bool,
    /// Source snapshot records that could not be read (not copied).
    pub errors: Vec<String>,
}

impl CopyReport {
    /// Total source file content bytes read.
    pub fn bytes_read(&self) -> u64 {
        self.copied.iter().map(|c| c.bytes_read).sum()
    }
    /// Total new blobs stored in the destination.
    pub fn blobs_added(&self) -> u64 {
        self.copied.iter().map(|c| c.blobs_added).sum()
    }
    /// Total bytes written to the destination.
    pub fn bytes_uploaded(&self) -> u64 {
        self.copied.iter().map(|c| c.bytes_uploaded).sum()
    }
}

/// Copies the snapshots `opts` selects from `src` into `dst`, oldest first,
/// skipping those `dst` already holds. Takes a shared lock on `dst` (and on
/// `src` unless `opts.lock_source` is off). Each snapshot is committed on
/// its own, so an interrupted copy keeps the snapshots it finished.
pub fn copy(
    src: &Repository,
    dst: &Repository,
    opts: &CopyOptions,
    progress: &dyn CopyProgress,
) -> Result<CopyReport> {
    if src.config().id == dst.config().id {
        return Err(Error::InvalidInput(
            "the source and the destination are the same repository".into(),
        ));
    }
    // Either side can be locked: the message says which.
    let side = |which: &'static str| {
        move |e| match e {
            Error::Locked(why) => Error::Locked(format!("{why} (in the {which} repository)")),
            e => e,
        }
    };
    let _src_lock = if opts.lock_source {
        Some(src.lock(false).map_err(side("source"))?)
    } else {
        None
    };
    let dst_lock = dst.lock(false).map_err(side("destination"))?;
    dst.ensure_whole()?;

    let (records, unread) = src.snapshots_lenient()?;
    // Snapshots named by ID that were found leave the records that could
    // not be read out of the selection: they fail the run only where they
    // could have been asked for (a nightly copy of one snapshot failed for
    // good over an old damaged record). One gone between listing and
    // reading was forgotten meanwhile (only without the source's lock).
    let by_id = !opts.snapshots.is_empty() && opts.snapshots.iter().all(|s| s != "latest");
    let errors = unread
        .iter()
        .filter(|e| !by_id && !matches!(e, Error::Missing(_)))
        .map(|e| e.to_string())
        .collect();
    let mut report = CopyReport {
        rechunked: !same_cutting(src, dst),
        errors,
        ..CopyReport::default()
    };
    // A `parent` names a source record; its lineage finds its copy.
    let lineage_of: HashMap<Id, Id> = records
        .iter()
        .map(|(id, s)| (*id, s.lineage(*id)))
        .collect();
    let selected = select(src, logical_snapshots(records), opts)?;

    let (dst_records, dst_damaged) = dst.snapshots_lenient()?;
    if !dst_damaged.is_empty() {
        // Without every record, an existing copy could go unseen and be
        // copied twice; refuse rather than duplicate.
        return Err(Error::corrupt(
            "destination snapshots",
            format!(
                "{} snapshot record(s) cannot be read ({}); run `check` on the destination",
                dst_damaged.len(),
                dst_damaged[0]
            ),
        ));
    }
    let src_repo = src.config().id;
    let dst_repo = dst.config().id;
    // Each with whether it was repaired here: a repaired snapshot lost data,
    // so it stands for a copy only of a source snapshot that is repaired
    // too; a complete one is copied, which brings the data back. Where a
    // complete snapshot of the same origin is here as well, it is the one.
    // By lineage or origin and time: one lineage may stand for two
    // snapshots (a record anyone holding a key, an append-only one too,
    // wrote claiming another's, dated apart), told apart by their times
    // (see `lineage`); taken for one, the real snapshot was never copied.
    let mut dst_lineages: HashMap<(Id, Time), (Id, bool)> = HashMap::new();
    let mut dst_origins: HashMap<(Origin, Time), (Id, bool)> = HashMap::new();
    // By the source snapshot's lineage, every copy here.
    let mut copies: HashMap<Id, Vec<(Id, Snapshot)>> = HashMap::new();
    // Each record's user tags and hold, to tell where they differ.
    let mut dst_marks: HashMap<Id, (Vec<String>, bool)> = HashMap::new();
    let note = |lineages: &mut HashMap<(Id, Time), (Id, bool)>,
                origins: &mut HashMap<(Origin, Time), (Id, bool)>,
                id: Id,
                s: &Snapshot| {
        let repaired = s.is_repaired();
        let lineage = s.lineage(id);
        lineages.insert((lineage, s.time), (id, repaired));
        let origin = (s.origin(dst_repo, lineage), s.time);
        if !repaired || !origins.contains_key(&origin) {
            origins.insert(origin, (id, repaired));
        }
    };
    for l in logical_snapshots(dst_records) {
        note(&mut dst_lineages, &mut dst_origins, l.id, &l.snapshot);
        dst_marks.insert(l.id, marks(&l.snapshot));
        if let Some(c) = l.snapshot.copied_from.filter(|c| c.repository == src_repo) {
            copies
                .entry(c.snapshot)
                .or_default()
                .push((l.id, l.snapshot));
        }
    }

    let copier = Copier {
        src,
        dst,
        rechunk: report.rechunked,
        trees: Mutex::new(HashMap::new()),
        added: Mutex::new(Vec::new()),
        progress,
    };
    for l in selected {
        let lineage = l.snapshot.lineage(l.id);
        let stands_for =
            |&(id, repaired): &(Id, bool)| (!repaired || l.snapshot.is_repaired()).then_some(id);
        // Copied here before; or a copy of one of the destination's own
        // snapshots, which goes home as the snapshot it came from; or the
        // same backup brought here by way of another repository (A to B to
        // C, then A to C). Each of this snapshot's time (see `dst_lineages`).
        let already = copies
            .get(&lineage)
            .into_iter()
            .flatten()
            .find(|(_, copy)| {
                copy.time == l.snapshot.time && (!copy.is_repaired() || l.snapshot.is_repaired())
            })
            .map(|(existing, _)| (*existing, "copied"))
            .or_else(|| {
                l.snapshot
                    .copied_from
                    .filter(|c| c.repository == dst_repo)
                    .and_then(|c| dst_lineages.get(&(c.snapshot, l.snapshot.time)))
                    .and_then(stands_for)
                    .map(|existing| (existing, "origin"))
            })
            .or_else(|| {
                let origin = l.snapshot.origin(src_repo, lineage);
                let reason = if origin.repository == dst_repo {
                    "origin"
                } else {
                    "copied"
                };
                dst_origins
                    .get(&(origin, l.snapshot.time))
                    .and_then(stands_for)
                    .map(|existing| (existing, reason))
            });
        if let Some((existing, reason)) = already {
            let (tags, hold) = marks(&l.snapshot);
            let differs = match dst_marks.get(&existing) {
                Some((t, h)) => [("tags", *t != tags), ("hold", *h != hold)]
                    .into_iter()
                    .filter_map(|(what, differs)| differs.then_some(what))
                    .collect(),
                None => Vec::new(),
            };
            let s = Skipped {
                source: l.id,
                existing,
                reason,
                differs,
            };
            progress.snapshot_skipped(&s);
            report.skipped.push(s);
            continue;
        }
        progress.snapshot_start(&l.id, &l.snapshot);
        let base = nearest_copy(&copies, &l.snapshot);
        let parent = l
            .snapshot
            .parent
            .map(|p| lineage_of.get(&p).copied().unwrap_or(p))
            .and_then(|p| copies.get(&p))
            .and_then(|c| c.first())
            .map(|(id, _)| *id);
        copier.added.lock().expect("added trees").clear();
        let done = match copier.copy_one(&l, lineage, base, parent, &dst_lock) {
            Ok(done) => done,
            // Damaged source data costs that snapshot only: a nightly
            // replication must not stop at it for good and never copy the
            // newer, healthy ones. Anything else (the destination, damaged
            // or refusing, a store that does not answer, the lock) stops
            // the copy.
            Err((e @ (Error::Corrupt { .. } | Error::Missing(_)), Side::Source)) => {
                // Trees translated by a snapshot that is then skipped were
                // never stored: a later snapshot must not take them as copied.
                let mut trees = copier.trees.lock().expect("tree map");
                for id in copier.added.lock().expect("added trees").drain(..) {
                    trees.remove(&id);
                }
                drop(trees);
                report.errors.push(format!(
                    "snapshot {} not copied: {e} (`cairn check --read-data` on the source names what is damaged)",
                    l.id.short()
                ));
                continue;
            }
            Err((e, _)) => return Err(e),
        };
        progress.snapshot_done(&done);
        // One audit record per snapshot, as watch writes them: a copy of
        // hours killed halfway must still say who wrote what it copied. A
        // failure keeps the changes for the next flush (the last one, as
        // the repository closes, reports it).
        let _ = dst.flush_audit();
        // Two source snapshots of one backup (two copies of it that met in
        // the source) are copied once: the second is found by its origin.
        note(&mut dst_lineages, &mut dst_origins, done.id, &done.snapshot);
        copies
            .entry(lineage)
            .or_default()
            .push((done.id, done.snapshot.clone()));
        report.copied.push(done);
    }
    Ok(report)
}

/// A snapshot's tags as its user set them (sorted, without the marks
/// `rewrite`, `repair` and `recover` add), and its hold.
fn marks(s: &Snapshot) -> (Vec<String>, bool) {
    let mut tags: Vec<String> = s
        .tags
        .iter()
        .filter(|t| !crate::snapshot::MARKER_TAGS.contains(&t.as_str()))
        .cloned()
        .collect();
    tags.sort();
    tags.dedup();
    (tags, s.hold)
}

/// Whether both repositories cut files into the same chunks.
fn same_cutting(src: &Repository, dst: &Repository) -> bool {
    src.config().chunker == dst.config().chunker
        && src.key().chunker_seed() == dst.key().chunker_seed()
}

/// The logical source snapshots `opts` names, oldest first.
fn select(src: &Repository, all: Vec<Logical>, opts: &CopyOptions) -> Result<Vec<Logical>> {
    let filter = SnapshotFilter {
        host: opts.host.clone(),
        tags: opts.tags.clone(),
        paths: opts.paths.clone(),
    };
    let matches = |s: &Snapshot| filter.matches(s);
    // Snapshots named must each be found: a replication job that matches
    // nothing must not look like one that had nothing new.
    let mut lineages = Vec::new();
    for spec in &opts.snapshots {
        let lineage = if spec == "latest" && !filter.is_empty() {
            // Passing over snapshots dated ahead, as `latest` does.
            let picked = all.iter().filter(|l| filter.picks(&l.snapshot));
            crate::snapshot::newest_by(picked, |l| l.snapshot.time)
                .map(|l| l.snapshot.lineage(l.id))
                .ok_or_else(|| {
                    Error::InvalidInput(
                        "no snapshot matches --host, --tag and --path for `latest`".into(),
                    )
                })?
        } else {
            let (id, s) = src.find_snapshot(spec)?;
            if !matches(&s) {
                return Err(Error::InvalidInput(format!(
                    "snapshot {} does not match --host, --tag and --path",
                    id.short()
                )));
            }
            s.lineage(id)
        };
        lineages.push(lineage);
    }
    Ok(all
        .into_iter()
        .filter(|l| matches(&l.snapshot))
        .filter(|l| opts.snapshots.is_empty() || lineages.contains(&l.snapshot.lineage(l.id)))
        .collect())
}

/// The destination snapshot copied from the same source, host and paths
/// nearest in time to `s`: its trees pair with the source's, so what did
/// not change is taken from it. A copy rewritten since (`rewrite`) no longer
/// holds what its source holds, so it is never paired.
fn nearest_copy(copies: &HashMap<Id, Vec<(Id, Snapshot)>>, s: &Snapshot) -> Option<Base> {
    copies
        .values()
        .flatten()
        .filter(|(_, c)| c.hostname == s.hostname && c.paths == s.paths)
        .filter(|(_, c)| !c.tags.iter().any(|t| t == crate::rewrite::REWRITTEN_TAG))
        .filter_map(|(id, c)| c.copied_from.map(|f| (id, c, f)))
        .min_by_key(|(_, c, _)| (c.time - s.time).num_milliseconds().unsigned_abs())
        .map(|(id, c, f)| Base {
            snapshot: *id,
            trees: (f.tree, c.tree),
        })
}

/// The earlier copy a snapshot's copy starts from.
#[derive(Clone, Copy)]
struct Base {
    /// Its record in the destination.
    snapshot: Id,
    /// Its source tree and its tree in the destination.
    trees: (Id, Id),
}

struct Copier<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    rechunk: bool,
    /// Source tree → destination tree, for every tree translated this run
    /// (all committed or pending in the current snapshot's saver).
    trees: Mutex<HashMap<Id, Id>>,
    /// The keys of `trees` the current snapshot added: taken out again if
    /// it is skipped, since its saver never stores them.
    added: Mutex<Vec<Id>>,
    progress: &'a dyn CopyProgress,
}

/// One snapshot's work: its saver and counters.
struct Job<'a> {
    saver: BlobSaver<'a>,
    /// The destination's index as the copy starts, and whether the
    /// earlier copy it starts from is verified in it.
    view: BackupView,
    /// Source content, read in coalesced pack ranges.
    reader: BulkReader<'a>,
    bytes_read: AtomicU64,
    /// A write to the destination failed: the copy's error is the
    /// destination's, whatever its kind.
    dst_failed: AtomicBool,
}

impl Job<'_> {
    /// Stores a blob in the destination; returns its ID there.
    fn save(&self, blob_type: BlobType, data: &[u8]) -> Result<Id> {
        self.in_dst(self.saver.save(blob_type, data).map(|(id, _)| id))
    }

    /// `r`, a destination write's outcome, noted if it failed.
    fn in_dst<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.dst_failed.store(true, Ordering::Relaxed);
        }
        r
    }
}

/// Which repository a copy's error came from.
enum Side {
    Source,
    Destination,
}

impl Copier<'_> {
    fn copy_one(
        &self,
        l: &Logical,
        lineage: Id,
        base: Option<Base>,
        parent: Option<Id>,
        lock: &LockGuard,
    ) -> std::result::Result<Copied, (Error, Side)> {
        let source = |e| (e, Side::Source);
        let view = self
            .dst
            .index()
            .backup_view(base.as_ref().map(|b| &b.snapshot))
            .map_err(|e| (e, Side::Destination))?;
        let base = base.map(|b| b.trees);
        let plan = Plan::new(self.src).map_err(source)?;
        self.plan_tree(&plan, &view, &mut HashSet::new(), l.snapshot.tree, base)
            .map_err(source)?;
        let job = Job {
            saver: BlobSaver::new(self.dst).with_lock(lock),
            view,
            reader: plan.into_reader(DEFAULT_CAPACITY),
            bytes_read: AtomicU64::new(0),
            dst_failed: AtomicBool::new(false),
        };
        match self.copy_with(&job, l, lineage, base, parent, lock) {
            Ok(done) => Ok(done),
            Err(e) if job.dst_failed.load(Ordering::Relaxed) => Err((e, Side::Destination)),
            // Skipped for damaged source data: what it stored by then is
            // indexed all the same (verified, durable), or each run left
            // packs no index names and stored the same data again.
            Err(e @ (Error::Corrupt { .. } | Error::Missing(_))) => match job.saver.flush() {
                Ok(()) => Err((e, Side::Source)),
                Err(f) => Err((f, Side::Destination)),
            },
            Err(e) => Err((e, Side::Source)),
        }
    }

    /// [`Copier::copy_one`] with its job made.
    fn copy_with(
        &self,
        job: &Job,
        l: &Logical,
        lineage: Id,
        base: Option<(Id, Id)>,
        parent: Option<Id>,
        lock: &LockGuard,
    ) -> Result<Copied> {
        let tree = self.tree(job, l.snapshot.tree, base)?;
        job.in_dst(job.saver.flush())?;
        let s = &l.snapshot;
        let snapshot = Snapshot {
            tree,
            parent,
            // A fresh record in the destination: its lineage starts here
            // (the source's IDs name nothing there).
            original: None,
            former: Vec::new(),
            copied_from: Some(CopiedFrom {
                repository: self.src.config().id,
                snapshot: lineage,
                tree: s.tree,
                // Named only for a copy of a copy: a first copy's origin is
                // its source.
                origin: s
                    .copied_from
                    .map(|_| s.origin(self.src.config().id, lineage)),
            }),
            // Time, host, user, paths, tags, summary, partial, databases
            // and the legal hold describe the backup and travel with it.
            ..s.clone()
        };
        let id = job.in_dst(crate::lock::write_snapshot(lock, self.dst, &snapshot))?;
        // Every blob it names was found in the view, or stored since; only
        // time is at stake (a later copy then checks each reused file).
        let _ = self.dst.index().mark_verified(&id, job.view.clears);
        Ok(Copied {
            source: l.id,
            id,
            snapshot,
            bytes_read: job.bytes_read.load(Ordering::Relaxed),
            blobs_added: job.saver.blobs_added.load(Ordering::Relaxed),
            bytes_uploaded: job.saver.bytes_written.load(Ordering::Relaxed),
        })
    }

    /// Translates source tree `id`; `base` pairs a source tree with its
    /// translation that was copied earlier for the same place.
    fn tree(&self, job: &Job, id: Id, base: Option<(Id, Id)>) -> Result<Id> {
        if let Some((src_base, dst_base)) = base
            && src_base == id
            && job.view.parent_verified
        {
            return Ok(dst_base);
        }
        if let Some(done) = self.trees.lock().expect("tree map").get(&id) {
            return Ok(*done);
        }
        let (tree, unknown) = self.src.load_tree_keeping(&id)?;
        let base_trees = self.base_trees(base);
        let nodes = tree
            .nodes
            .par_iter()
            .map(|n| self.node(job, n, base_pair(&base_trees, n)))
            .collect::<Result<Vec<Node>>>()?;
        let new = job.save(
            BlobType::Tree,
            &unknown.appended_to(Tree { nodes }.encode()),
        )?;
        self.trees.lock().expect("tree map").insert(id, new);
        self.added.lock().expect("added trees").push(id);
        Ok(new)
    }

    fn node(&self, job: &Job, n: &Node, base: Option<(&Node, &Node)>) -> Result<Node> {
        let mut out = n.clone();
        match n.kind {
            NodeKind::Dir => {
                let sub = n.subtree.ok_or_else(|| {
                    Error::corrupt(
                        format!("directory {:?}", n.display_name()),
                        "it names no tree",
                    )
                })?;
                let pair = base.and_then(|(s, d)| Some((s.subtree?, d.subtree?)));
                out.subtree = Some(crate::deep::deeper(|| self.tree(job, sub, pair))?);
            }
            NodeKind::File => {
                out.content = match base {
                    Some((_, d)) if reusable(&job.view, n, base) => d.content.clone(),
                    _ => self.content(job, &n.content, n.size)?,
                };
            }
            _ => {}
        }
        Ok(out)
    }

    /// The source and destination trees of an earlier copy of the same
    /// place. It only saves work: if either cannot be read, go without.
    fn base_trees(&self, base: Option<(Id, Id)>) -> Option<(Tree, Tree)> {
        base.and_then(|(s, d)| Some((self.src.load_tree(&s).ok()?, self.dst.load_tree(&d).ok()?)))
    }

    /// Adds the source blobs [`Copier::tree`] will read for tree `id` to
    /// `plan`, making the same choices: trees translated before and files
    /// unchanged since the earlier copy read nothing.
    fn plan_tree(
        &self,
        plan: &Plan,
        view: &BackupView,
        seen: &mut HashSet<Id>,
        id: Id,
        base: Option<(Id, Id)>,
    ) -> Result<()> {
        if base.is_some_and(|(s, _)| s == id) && view.parent_verified
            || self.trees.lock().expect("tree map").contains_key(&id)
            || !seen.insert(id)
        {
            return Ok(());
        }
        // Unreadable trees are left for the copy itself to report.
        let Ok(tree) = self.src.load_tree(&id) else {
            return Ok(());
        };
        let base_trees = self.base_trees(base);
        for n in &tree.nodes {
            let pair = base_pair(&base_trees, n);
            match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    let pair = pair.and_then(|(s, d)| Some((s.subtree?, d.subtree?)));
                    crate::deep::deeper(|| self.plan_tree(plan, view, seen, sub, pair))?;
                }
                (NodeKind::File, _) if !reusable(view, n, pair) => {
                    plan.add_all(&n.content)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Stores one file's content (`size` bytes) in the destination;
    /// returns its chunk IDs.
    fn content(&self, job: &Job, ids: &[Id], size: u64) -> Result<Vec<Id>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if !self.rechunk {
            // Same cuts: each chunk only needs its destination ID.
            let mut out = Vec::with_capacity(ids.len());
            for batch in ids.chunks(CHUNK_BATCH) {
                let saved: Vec<Id> = batch
                    .par_iter()
                    .map(|id| {
                        let data = job.reader.load_blob(id)?;
                        self.read(job, data.len());
                        job.save(BlobType::Data, &data)
                    })
                    .collect::<Result<_>>()?;
                out.extend(saved);
            }
            return Ok(out);
        }
        let cfg = self.dst.config();
        let mut reader = BlobReader {
            copier: self,
            job,
            ids,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            error: None,
        };
        // A file no larger than the smallest chunk is one chunk: skip the
        // chunker, whose buffer is a whole maximum-size chunk.
        let min = cfg.chunker.min_size as u64;
        let mut head = Vec::new();
        if let Err(e) = (&mut reader).take(min + 1).read_to_end(&mut head) {
            return Err(reader.error(e));
        }
        if head.is_empty() {
            return Ok(Vec::new());
        }
        // A captured database, however small, keeps its page cut.
        let page_cut = page_cut(&head, size, ids.len());
        if head.len() as u64 <= min && page_cut.is_none() {
            return Ok(vec![job.save(BlobType::Data, &head)?]);
        }
        let stream = std::io::Cursor::new(head).chain(&mut reader);
        let (mut cuts, per_batch): (Box<dyn Iterator<Item = std::io::Result<Vec<u8>>> + '_>, _) =
            match page_cut {
                Some(chunk) => (Box::new(FixedCuts::new(stream, chunk)), PAGE_BATCH),
                None => {
                    let seed = self.dst.key().chunker_seed();
                    (
                        Box::new(Chunker::new(stream, &cfg.chunker, seed)),
                        CHUNK_BATCH,
                    )
                }
            };
        let mut out = Vec::new();
        loop {
            let mut batch = Vec::with_capacity(per_batch);
            for c in cuts.by_ref().take(per_batch) {
                match c {
                    Ok(c) => batch.push(c),
                    Err(e) => {
                        drop(cuts);
                        return Err(reader.error(e));
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            let saved: Vec<Id> = batch
                .par_iter()
                .map(|c| job.save(BlobType::Data, c))
                .collect::<Result<_>>()?;
            out.extend(saved);
        }
        Ok(out)
    }

    fn read(&self, job: &Job, n: usize) {
        job.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        self.progress.bytes_read(n as u64);
    }
}

/// The page cut `backup --sqlite` gave a captured database, to cut it the
/// same way in the destination (as a capture there would): a file that
/// starts as a SQLite database, held as `chunks` (more than one) chunks of
/// [`sqlite::chunk_size`] for its page size, the last excepted. The
/// content-defined chunker does not cut that small by default (256 KiB at
/// least); should a repository set up to cut as small match by chance, the
/// content is copied whole all the same, cut otherwise.
fn page_cut(head: &[u8], size: u64, chunks: usize) -> Option<usize> {
    let chunk = sqlite::chunk_size(sqlite::page_size_of(head)?);
    (chunks > 1 && size.div_ceil(u64::from(chunk)) == chunks as u64).then_some(chunk as usize)
}

/// The entries named like `n` in an earlier copy's source and destination
/// trees, when both are of `n`'s kind.
fn base_pair<'t>(base: &'t Option<(Tree, Tree)>, n: &Node) -> Option<(&'t Node, &'t Node)> {
    base.as_ref()
        .and_then(|(s, d)| Some((s.find(&n.name)?, d.find(&n.name)?)))
        .filter(|(s, d)| s.kind == n.kind && d.kind == n.kind)
}

/// Whether file `n` is unchanged since the earlier copy `base`, so its
/// translated content can be reused as is: if that copy is verified in
/// `view`, or each of its blobs is indexed there. (A pack lost and dropped
/// by `repair index` takes blobs of the earlier copy with it; the source
/// still has them.)
fn reusable(view: &BackupView, n: &Node, base: Option<(&Node, &Node)>) -> bool {
    base.is_some_and(|(s, d)| {
        s.content == n.content
            && s.size == n.size
            && d.size == n.size
            && (view.parent_verified
                || d.content
                    .iter()
                    .all(|id| view.reader.contains(id).unwrap_or(false)))
    })
}

/// A file's content read blob by blob from the source: one blob in memory
/// at a time, so re-chunking needs no more than the chunker's buffer.
struct BlobReader<'c, 'a> {
    copier: &'c Copier<'a>,
    job: &'c Job<'a>,
    ids: &'c [Id],
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    /// The engine error behind the last `io::Error` (which cannot carry it).
    error: Option<Error>,
}

impl BlobReader<'_, '_> {
    /// The engine error behind an I/O error from [`Read::read`]: the one a
    /// failed blob read left behind, so its kind (missing, corrupt) survives.
    fn error(&mut self, e: std::io::Error) -> Error {
        self.error
            .take()
            .unwrap_or_else(|| Error::Backend(format!("reading source content: {e}")))
    }
}

impl Read for BlobReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.ids.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            match self.job.reader.load_blob(id) {
                Ok(b) => {
                    self.copier.read(self.job, b.len());
                    self.buf = b;
                    self.pos = 0;
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::{snapshot_at, test_repository};
    use crate::tree::Tree;

    #[test]
    fn a_record_claiming_a_snapshots_lineage_does_not_keep_it_from_being_copied() {
        // Anyone holding a key to the source, an append-only one too, can
        // write a record claiming a real snapshot's lineage, dated before
        // it: copied first, it was taken for the real one's copy, and the
        // real snapshot never reached the replica.
        let dir = tempfile::tempdir().unwrap();
        let src = test_repository(&dir.path().join("src"), Default::default());
        let dst = test_repository(&dir.path().join("dst"), Default::default());
        let saver = BlobSaver::new(&src);
        let (tree, _) = saver
            .save(BlobType::Tree, &Tree::default().encode())
            .unwrap();
        saver.flush().unwrap();
        let real = Snapshot {
            tree,
            ..snapshot_at("2026-01-03T10:15:00Z")
        };
        let real_id = src.save_snapshot(&real).unwrap();
        let forged = Snapshot {
            time: chrono::DateTime::parse_from_rfc3339("2025-01-03T10:15:00Z").unwrap(),
            original: Some(real_id),
            ..real.clone()
        };
        src.save_snapshot(&forged).unwrap();
        let opts = CopyOptions {
            snapshots: Vec::new(),
            host: None,
            tags: Vec::new(),
            paths: Vec::new(),
            lock_source: false,
        };
        copy(&src, &dst, &opts, &NoProgress).unwrap();
        let times: Vec<_> = dst
            .snapshots()
            .unwrap()
            .iter()
            .map(|(_, s)| s.time)
            .collect();
        assert!(times.contains(&real.time), "{times:?}");
        // Run again, nothing more is copied.
        let again = copy(&src, &dst, &opts, &NoProgress).unwrap();
        assert!(again.copied.is_empty(), "{:?}", again.copied.len());
    }
}
