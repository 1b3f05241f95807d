//! Recovering directory trees that no snapshot refers to.
//!
//! A snapshot record removed by mistake (`forget` of the wrong ID), by
//! someone holding a full key, or damaged beyond reading leaves its trees
//! and data in the packs until the next `prune`. [`recover`] finds the
//! trees that neither another tree nor a snapshot refers to (the roots of
//! lost snapshots, and of backups killed before their snapshot was written)
//! and writes one snapshot, tagged `recovered`, holding each as a directory
//! named after its ID. It only adds objects, so it works on append-only
//! repositories and with append-only keys.

use std::collections::HashSet;

use rayon::prelude::*;

use crate::blob::BlobType;
use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::saver::BlobSaver;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Timestamp, Tree};

/// The tag of snapshots written by [`recover`].
pub const TAG: &str = "recovered";
/// The path recorded in snapshots written by [`recover`].
pub const PATH: &str = "/recovered";

/// What [`recover`] found and wrote.
#[derive(Debug, Default, serde::Serialize)]
pub struct RecoverReport {
    /// Tree blobs in the index.
    pub trees: usize,
    /// Trees that could not be read (`ID: error`); their subtrees may be
    /// among the roots.
    pub unreadable: Vec<String>,
    /// Readable trees no snapshot and no other tree refers to, by ID.
    pub roots: Vec<String>,
    /// The snapshot written, if any.
    pub snapshot: Option<String>,
    /// Nothing was written.
    pub dry_run: bool,
}

/// Finds the trees nothing refers to and, unless `dry_run`, saves a
/// snapshot that holds them (see the module documentation). Writes nothing
/// when there are none.
pub fn recover(repo: &Repository, dry_run: bool) -> Result<RecoverReport> {
    // Exclusive: a running backup's trees have no snapshot yet and would be
    // taken for lost ones; a prune must not remove trees meanwhile.
    let lock = repo.lock(true)?;
    let mut trees = Vec::new();
    repo.index().for_each_blob(|loc| {
        if loc.blob.blob_type == BlobType::Tree {
            trees.push(loc.blob.id);
        }
        Ok(())
    })?;
    let reader = repo.index().reader()?;
    // Every tree is read once, in parallel; what each refers to is kept.
    let read: Vec<(Id, std::result::Result<Vec<Id>, String>)> = trees
        .par_iter()
        .map(|id| {
            let subtrees = repo
                .load_tree_in(&reader, id)
                .map(|t| t.nodes.iter().filter_map(|n| n.subtree).collect())
                .map_err(|e| e.to_string());
            (*id, subtrees)
        })
        .collect();
    let (snapshots, _) = repo.snapshots_lenient()?;
    let mut referred: HashSet<Id> = snapshots.iter().map(|(_, s)| s.tree).collect();
    let mut report = RecoverReport {
        trees: trees.len(),
        dry_run,
        ..RecoverReport::default()
    };
    for (id, r) in &read {
        match r {
            Ok(subtrees) => referred.extend(subtrees),
            Err(e) => report.unreadable.push(format!("{id}: {e}")),
        }
    }
    let roots: Vec<Id> = read
        .iter()
        .filter(|(id, r)| r.is_ok() && !referred.contains(id))
        .map(|(id, _)| *id)
        .collect();
    report.roots = roots.iter().map(Id::to_hex).collect();
    if roots.is_empty() || dry_run {
        return Ok(report);
    }
    let now = chrono::Utc::now();
    let stamp = Timestamp {
        sec: now.timestamp(),
        nsec: now.timestamp_subsec_nanos(),
    };
    let mut tree = Tree {
        nodes: roots
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
        paths: vec![PATH.into()],
        hostname: crate::host::hostname(),
        username: crate::host::username(),
        tags: vec![TAG.into()],
        parent: None,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: None,
        partial: false,
        hold: false,
        original: None,
        databases: Vec::new(),
        copied_from: None,
    };
    lock.check()?;
    report.snapshot = Some(repo.save_snapshot(&snap)?.to_hex());
    Ok(report)
}
