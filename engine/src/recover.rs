//! Recovering directory trees that no snapshot refers to.
//!
//! A snapshot record removed by mistake (`forget` of the wrong ID), by
//! someone holding a full key, or damaged beyond reading leaves its trees
//! and data in the packs until the next `prune`. [`recover`] finds the
//! trees that neither another tree nor a snapshot refers to (the roots of
//! lost snapshots, of backups killed before their snapshot was written,
//! and of records replaced by `rewrite` or `repair snapshots`) and writes
//! one snapshot, tagged [`RECOVERED_TAG`], holding each as a directory
//! named after its ID. Only roots whose every tree and blob is indexed are
//! taken unless asked for: an incomplete one would make `check` fail and
//! `prune` refuse. It only adds objects, so it works on append-only
//! repositories and with append-only keys. A recovered snapshot is never
//! `latest` ([`Snapshot::is_recovered`]).

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use crate::blob::BlobType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::saver::BlobSaver;
use crate::snapshot::Snapshot;
pub use crate::snapshot::{RECOVERED_PATH, RECOVERED_TAG};
use crate::tree::{Node, NodeKind, Timestamp, Tree};

/// What [`recover`] is asked to do.
#[derive(Debug, Default, Clone)]
pub struct RecoverOptions {
    /// Write nothing; only report.
    pub dry_run: bool,
    /// Only the lost trees whose IDs start with one of these (all if empty).
    pub only: Vec<String>,
    /// Also take trees below which something is unreadable or not indexed.
    pub allow_incomplete: bool,
    /// With `dry_run`, take no lock (to preview a read-only repository; a
    /// change made meanwhile elsewhere can make the report stale). A run
    /// that changes the repository locks whatever this says.
    pub no_lock: bool,
}

/// A tree nothing refers to, with what identifies it.
#[derive(Debug, Clone, Serialize)]
pub struct LostTree {
    /// Its ID (the name of its directory in the recovered snapshot).
    pub id: String,
    /// The path its single-entry directories lead to from its top (for the
    /// root of a lost snapshot of `/home/ann`: `/home/ann`).
    pub path: String,
    /// Entries below it, counting each distinct tree once.
    pub entries: u64,
    /// File content blobs below it that the index does not hold.
    pub missing_blobs: u64,
    /// Trees below it that cannot be read.
    pub unreadable_trees: u64,
}

impl LostTree {
    /// Whether everything below it can be read.
    pub fn complete(&self) -> bool {
        self.missing_blobs == 0 && self.unreadable_trees == 0
    }
}

/// What [`recover`] found and wrote.
#[derive(Debug, Default, Serialize)]
pub struct RecoverReport {
    /// Tree blobs in the index.
    pub trees: usize,
    /// Trees that could not be read (`ID: error`); their subtrees may be
    /// among the lost ones.
    pub unreadable: Vec<String>,
    /// Snapshot records that could not be read: their trees count as lost.
    pub unreadable_snapshots: Vec<String>,
    /// Packs in no index whose header does not open (`repair index` left
    /// them out): the trees and data in them cannot be found, so the
    /// search went on without them; `prune` deletes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unusable_packs: Vec<String>,
    /// Packs no index named whose header opens (a backup killed before it
    /// wrote their index file left them): searched too, and added to the
    /// index, in a new index file, when a snapshot is written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub indexed_packs: Vec<String>,
    /// The lost trees taken (or, on a dry run, that would be).
    pub recovered: Vec<LostTree>,
    /// Lost trees left out: incomplete (without `allow_incomplete`) or not
    /// chosen by `only`.
    pub left_out: Vec<LostTree>,
    /// The snapshot written, if any.
    pub snapshot: Option<String>,
    /// Nothing was written.
    pub dry_run: bool,
}

/// One tree as read: the trees it refers to, its entry count, its content
/// blobs the index lacks, and its only entry if that is a directory.
struct Read {
    subtrees: Vec<Id>,
    entries: u64,
    missing: u64,
    only_dir: Option<(String, Id)>,
    /// Shaped like the tree a recovered snapshot holds (each entry a
    /// directory named after its tree's ID).
    holds_recovered: bool,
}

/// Finds the trees nothing refers to and, unless `opts.dry_run`, saves a
/// snapshot that holds those chosen (see the module documentation). Writes
/// nothing when none is chosen.
pub fn recover(repo: &Repository, opts: &RecoverOptions) -> Result<RecoverReport> {
    // Exclusive when writing: a running backup's trees have no snapshot yet
    // and would be taken for lost ones, and a prune must not remove trees
    // meanwhile. A report only needs the shared lock.
    let lock = repo.lock_unless(opts.dry_run && opts.no_lock, !opts.dry_run)?;
    // Packs no index names hold the trees of backups killed before they
    // wrote their index file (or of one running beside a dry run): they
    // are searched too, and indexed before a snapshot refers to them.
    let found = crate::repair::unindexed::find(repo)?;
    let unindexed = found.locations();
    let reader = repo.index_reader()?;
    let gone: HashSet<Id> = found.missing.iter().copied().collect();
    let mut trees = repo.index().tree_ids()?;
    for (id, loc) in &unindexed {
        if loc.blob.blob_type == BlobType::Tree && !reader.contains(id)? {
            trees.push(*id);
        }
    }
    trees.sort();
    // Every tree is read once, in parallel. Only damage makes a tree
    // unreadable; any other failure (a store or disk error) stops here,
    // or the trees below it would be taken for lost ones.
    let read: HashMap<Id, std::result::Result<Read, String>> = trees
        .par_iter()
        .map(|id| -> Result<(Id, std::result::Result<Read, String>)> {
            let t = match unindexed.get(id) {
                Some(loc) if !reader.contains(id)? => repo.load_tree_at(loc),
                _ => repo.load_tree_in(&reader, id),
            };
            let t = match t {
                Ok(t) => t,
                Err(e @ (Error::Corrupt { .. } | Error::Missing(_))) => {
                    return Ok((*id, Err(e.to_string())));
                }
                Err(e) => return Err(e),
            };
            let mut missing = 0;
            for b in t.nodes.iter().flat_map(|n| &n.content) {
                // Indexed in a pack that is gone is missing too: such a
                // tree was taken for complete, and the snapshot recovered
                // named data that is not there.
                let present = unindexed.contains_key(b)
                    || match reader.lookup(b)? {
                        Some(loc) => !gone.contains(&loc.pack),
                        None => false,
                    };
                if !present {
                    missing += 1;
                }
            }
            let only_dir = match t.nodes.as_slice() {
                [n] if n.kind == NodeKind::Dir => n.subtree.map(|sub| (n.display_name(), sub)),
                _ => None,
            };
            let holds_recovered = !t.nodes.is_empty()
                && t.nodes.iter().all(|n| {
                    n.kind == NodeKind::Dir
                        && n.subtree.is_some_and(|s| s.to_hex().as_bytes() == n.name)
                });
            let r = Read {
                subtrees: t.nodes.iter().filter_map(|n| n.subtree).collect(),
                entries: t.nodes.len() as u64,
                missing,
                only_dir,
                holds_recovered,
            };
            Ok((*id, Ok(r)))
        })
        .collect::<Result<_>>()?;
    let (snapshots, mut bad_snapshots) = repo.snapshots_lenient()?;
    // Only a damaged record is unreadable for good; one the store did not
    // answer for would have its tree taken for lost, and recovered as a
    // duplicate of a live snapshot. One gone since it was listed was
    // forgotten meanwhile.
    bad_snapshots.retain(|e| !matches!(e, Error::Missing(_)));
    if let Some(i) = bad_snapshots
        .iter()
        .position(|e| !matches!(e, Error::Corrupt { .. }))
    {
        return Err(bad_snapshots.swap_remove(i));
    }
    let mut referred: HashSet<Id> = snapshots.iter().map(|(_, s)| s.tree).collect();
    // The tree a recover killed before its snapshot wrote to hold the lost
    // trees: those are still lost (recovering it instead put them one
    // directory deeper, under that killed run's tree).
    let stopped_recovers: HashSet<Id> = trees
        .iter()
        .filter(|id| !referred.contains(id))
        .filter(|id| read[id].as_ref().is_ok_and(|r| r.holds_recovered))
        .copied()
        .collect();
    let mut report = RecoverReport {
        trees: trees.len(),
        unreadable_snapshots: bad_snapshots.iter().map(|e| e.to_string()).collect(),
        unusable_packs: found.unusable.iter().map(Id::to_hex).collect(),
        indexed_packs: found.packs.iter().map(|p| p.id.to_hex()).collect(),
        dry_run: opts.dry_run,
        ..RecoverReport::default()
    };
    for id in &trees {
        match &read[id] {
            Ok(_) if stopped_recovers.contains(id) => {}
            Ok(r) => referred.extend(&r.subtrees),
            Err(e) => report.unreadable.push(format!("{id}: {e}")),
        }
    }
    let mut chosen = Vec::new();
    let mut matched = vec![false; opts.only.len()];
    // Trees asked for by ID but left out as incomplete.
    let mut asked_incomplete = Vec::new();
    for id in trees
        .iter()
        .filter(|id| !referred.contains(id) && !stopped_recovers.contains(id))
    {
        if read[id].is_err() {
            continue;
        }
        let lost = describe(*id, &read);
        let hex = id.to_hex();
        let mut wanted = opts.only.is_empty();
        for (i, p) in opts.only.iter().enumerate() {
            if hex.starts_with(&p.to_ascii_lowercase()) {
                matched[i] = true;
                wanted = true;
            }
        }
        if wanted && (lost.complete() || opts.allow_incomplete) {
            chosen.push(*id);
            report.recovered.push(lost);
        } else {
            if wanted && !opts.only.is_empty() {
                asked_incomplete.push(hex);
            }
            report.left_out.push(lost);
        }
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(Error::InvalidInput(format!(
            "no tree that nothing refers to has an ID starting with {:?}",
            opts.only[i]
        )));
    }
    // Asked for by ID and not taken: a script's `recover ID && restore
    // --tag recovered` would go on to restore nothing, or an older one. A
    // dry run lists it as left out.
    if let Some(first) = asked_incomplete.first().filter(|_| !opts.dry_run) {
        return Err(Error::InvalidInput(format!(
            "lost tree {} is incomplete (data or trees below it are missing){}: \
             --allow-incomplete takes it (then `cairn check` names the repairs: `repair \
             packs` for packs that are gone, then `repair snapshots`); nothing was recovered",
            &first[..16],
            match asked_incomplete.len() {
                1 => String::new(),
                n => format!(", as are {} more asked for", n - 1),
            }
        )));
    }
    if chosen.is_empty() || opts.dry_run {
        return Ok(report);
    }
    let lock = lock.expect("only a dry run goes without a lock");
    found.index(repo, &lock)?;
    let now = chrono::Utc::now();
    let stamp = Timestamp {
        sec: now.timestamp(),
        nsec: now.timestamp_subsec_nanos(),
    };
    let mut tree = Tree {
        nodes: chosen
            .iter()
            .map(|root| {
                let mut n = Node::new(root.to_hex().into_bytes(), NodeKind::Dir);
                // Whatever the lost snapshot held, only its restorer may look.
                n.mode = 0o700;
                n.uid = nix::unistd::geteuid().as_raw();
                n.gid = nix::unistd::getegid().as_raw();
                (n.mtime, n.atime, n.ctime) = (stamp, stamp, stamp);
                n.subtree = Some(*root);
                n
            })
            .collect(),
    };
    tree.sort();
    let saver = BlobSaver::new(repo).with_lock(&lock);
    let (tree_id, _) = saver.save(BlobType::Tree, &tree.encode())?;
    saver.flush()?;
    let snap = Snapshot {
        time: now.fixed_offset(),
        tree: tree_id,
        paths: vec![RECOVERED_PATH.into()],
        hostname: crate::host::hostname(),
        username: crate::host::username(),
        tags: vec![RECOVERED_TAG.into()],
        parent: None,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: None,
        partial: false,
        hold: false,
        original: None,
        databases: Vec::new(),
        copied_from: None,
        former: Vec::new(),
        unknown: Default::default(),
    };
    // Taken back if the lock was lost meanwhile: a prune may have deleted
    // the trees it saves.
    let id = crate::lock::write_snapshot(&lock, repo, &snap)?;
    report.snapshot = Some(id.to_hex());
    Ok(report)
}

/// Counts what lies below `root`, each distinct tree once, and names the
/// path its single-entry directories lead to.
fn describe(root: Id, read: &HashMap<Id, std::result::Result<Read, String>>) -> LostTree {
    let mut lost = LostTree {
        id: root.to_hex(),
        path: String::new(),
        entries: 0,
        missing_blobs: 0,
        unreadable_trees: 0,
    };
    let mut at = root;
    while let Some(Ok(Read {
        only_dir: Some((name, sub)),
        ..
    })) = read.get(&at)
    {
        lost.path.push('/');
        lost.path.push_str(name);
        at = *sub;
    }
    if lost.path.is_empty() {
        lost.path.push('/');
    }
    let mut seen = HashSet::from([root]);
    let mut todo = vec![root];
    while let Some(t) = todo.pop() {
        match read.get(&t) {
            Some(Ok(r)) => {
                lost.entries += r.entries;
                lost.missing_blobs += r.missing;
                todo.extend(r.subtrees.iter().filter(|s| seen.insert(**s)));
            }
            // Unreadable, or not in the index at all.
            _ => lost.unreadable_trees += 1,
        }
    }
    lost
}
