//! Verifying a repository: structure always, every byte on request.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::blob::BlobType;
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
}

impl CheckReport {
    /// True if no error was found.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
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

    // 1. Index files decrypt and every pack they name exists with the right size.
    let stored: HashMap<String, u64> = backend
        .list(FileKind::Pack)?
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    let mut indexed: HashMap<Id, (u64, Vec<crate::blob::PackedBlob>)> = HashMap::new();
    for l in backend.list(FileKind::Index)? {
        let Ok(id) = Id::from_hex(&l.name) else {
            continue;
        };
        match load_index_file(&**backend, repo.key(), &id) {
            Ok(f) => {
                for p in f.packs {
                    indexed.entry(p.id).or_insert((p.size, p.blobs));
                }
            }
            Err(e) => r.errors.push(format!("index {}: {e}", l.name)),
        }
    }
    r.packs = indexed.len();
    for (id, (size, _)) in &indexed {
        match stored.get(&id.to_hex()) {
            None => r.errors.push(format!(
                "pack {id} is in the index but missing from the repository"
            )),
            Some(s) if s != size => r.errors.push(format!(
                "pack {id} has {s} bytes, the index says {size} (truncated or replaced)"
            )),
            Some(_) => {}
        }
    }
    for name in stored.keys() {
        if Id::from_hex(name)
            .map(|id| !indexed.contains_key(&id))
            .unwrap_or(true)
        {
            r.warnings.push(format!(
                "pack {name} is not in any index (left by an interrupted backup; `cairn repair index` would add it)"
            ));
        }
    }

    // 2. Every snapshot's trees and data blobs are indexed.
    let (snapshots, damaged) = repo.snapshots_lenient()?;
    r.errors.extend(damaged.iter().map(|e| e.to_string()));
    r.snapshots = snapshots.len();
    let mut seen_trees: HashSet<Id> = HashSet::new();
    let mut seen_data: HashSet<Id> = HashSet::new();
    // Judge blobs by the index files just read, not by the local cache.
    let blob_types: HashMap<Id, BlobType> = indexed
        .values()
        .flat_map(|(_, blobs)| blobs.iter().map(|b| (b.id, b.blob_type)))
        .collect();
    for (sid, snap) in &snapshots {
        let mut stack = vec![(snap.tree, String::from("/"))];
        while let Some((tid, path)) = stack.pop() {
            if !seen_trees.insert(tid) {
                continue;
            }
            let tree = match repo.load_tree(&tid) {
                Ok(t) => t,
                Err(e) => {
                    r.errors.push(format!(
                        "snapshot {}: tree {} ({path}): {e}",
                        sid.short(),
                        tid.short()
                    ));
                    continue;
                }
            };
            for n in &tree.nodes {
                let p = format!("{}{}", path, n.display_name());
                match n.kind {
                    NodeKind::Dir => match n.subtree {
                        Some(s) => stack.push((s, format!("{p}/"))),
                        None => r.errors.push(format!(
                            "snapshot {}: {p}: directory without a tree",
                            sid.short()
                        )),
                    },
                    NodeKind::File => {
                        for b in &n.content {
                            if !seen_data.insert(*b) {
                                continue;
                            }
                            match blob_types.get(b) {
                                None => r.errors.push(format!(
                                    "snapshot {}: {p}: data blob {} is missing",
                                    sid.short(),
                                    b.short()
                                )),
                                Some(BlobType::Tree) => r.errors.push(format!(
                                    "snapshot {}: {p}: content blob {} is a tree, not data",
                                    sid.short(),
                                    b.short()
                                )),
                                Some(BlobType::Data) => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    r.trees = seen_trees.len();
    r.data_blobs = seen_data.len();

    // 3. With read_data: every pack's header agrees with the index and every blob verifies.
    if opts.read_data {
        let errors = Mutex::new(Vec::new());
        let present: Vec<(&Id, &(u64, Vec<crate::blob::PackedBlob>))> = indexed
            .iter()
            .filter(|(id, _)| stored.contains_key(&id.to_hex()))
            .collect();
        present.par_iter().for_each(|(id, (_, blobs))| {
            if let Err(e) = verify_pack(repo, id, blobs) {
                errors.lock().expect("errors").push(e.to_string());
            }
            progress.pack_done(0);
        });
        r.packs_read = present.len();
        r.errors.extend(errors.into_inner().expect("errors"));
    }
    r.errors.sort();
    Ok(r)
}

fn verify_pack(repo: &Repository, id: &Id, expected: &[crate::blob::PackedBlob]) -> Result<()> {
    let bytes = repo.backend().read(FileKind::Pack, &id.to_hex())?;
    if Id::of_object(&bytes) != *id {
        return Err(Error::corrupt(
            format!("pack {id}"),
            "content does not hash to its name",
        ));
    }
    let header = pack::read_header_from_bytes(repo.key(), id, &bytes)?;
    if header != expected {
        return Err(Error::corrupt(
            format!("pack {id}"),
            "header does not agree with the index",
        ));
    }
    for b in &header {
        let data = repo.open_blob_in(id, &bytes, b)?;
        if b.blob_type == BlobType::Tree {
            // Tree blobs must also decode.
            crate::tree::Tree::decode(&data, &format!("tree {} in pack {id}", b.id))?;
        }
    }
    Ok(())
}
