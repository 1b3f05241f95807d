//! Repairs that rebuild derived state from what the repository holds.

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::envelope::{ObjectKind, seal_msgpack};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::{IndexFile, IndexPack};
use crate::pack;
use crate::repository::Repository;

/// Packs described per rebuilt index file.
const PACKS_PER_FILE: usize = 1024;

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
    let _lock = repo.lock(true)?;
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
    for (name, r) in results {
        match r {
            Ok(p) => {
                report.blobs += p.blobs.len();
                packs.push(p);
            }
            Err(e) => report.unreadable.push(format!("pack {name}: {e}")),
        }
    }
    report.packs = packs.len();
    let supersedes: Vec<Id> = old.iter().filter_map(|n| Id::from_hex(n).ok()).collect();
    for chunk in packs.chunks(PACKS_PER_FILE) {
        let f = IndexFile {
            packs: chunk.to_vec(),
            supersedes: supersedes.clone(),
        };
        let data = seal_msgpack(repo.key(), ObjectKind::Index, &f);
        backend.write(FileKind::Index, &Id::of_object(&data).to_hex(), &data)?;
        report.index_files_written += 1;
    }
    for n in &old {
        backend.delete(FileKind::Index, n)?;
        report.index_files_removed += 1;
    }
    repo.index().clear()?;
    repo.index().sync(&**backend, repo.key())?;
    Ok(report)
}
