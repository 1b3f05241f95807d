//! Packs stored that no index file names: left by a command killed between
//! writing a pack and the index file naming it (a backup, a repair), or
//! by lost index files.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::backend::FileKind;
use crate::blob::BlobLocation;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::IndexPack;
use crate::lock::LockGuard;
use crate::repair::read_pack_header;
use crate::repository::Repository;

/// The stored packs no index names, read by [`find`].
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Those whose header opens.
    pub packs: Vec<IndexPack>,
    /// Those whose header is damaged: what they hold cannot be found.
    pub unusable: Vec<Id>,
    /// Packs the index names that are not stored.
    pub missing: Vec<Id>,
}

/// Reads the header of every stored pack no index names: left by a
/// command killed before it wrote their index file (a backup, a repair),
/// or named by index files since lost. A repair that judges data by the
/// index counts what they hold, after [`Found::index`] or through
/// [`Found::locations`]; before, it asked for `repair index` first, which
/// a killed run of its own made necessary and an append-only key may not
/// run. Fails when a header cannot be read for another reason than damage.
pub(crate) fn find(repo: &Repository) -> Result<Found> {
    let mut indexed: HashSet<Id> = repo
        .index()
        .packs()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut listed = Vec::new();
    for l in repo.backend().list(FileKind::Pack)? {
        if let Ok(id) = Id::from_hex(&l.name)
            && !indexed.remove(&id)
        {
            listed.push((id, l.size));
        }
    }
    let mut missing: Vec<Id> = indexed.into_iter().collect();
    missing.sort();
    let read: Vec<(Id, Result<IndexPack>)> = listed
        .par_iter()
        .map(|(id, size)| (*id, read_pack_header(repo, &id.to_hex(), *size)))
        .collect();
    let mut found = Found {
        missing,
        ..Found::default()
    };
    for (id, r) in read {
        match r {
            Ok(p) => found.packs.push(p),
            Err(Error::Corrupt { .. }) => found.unusable.push(id),
            Err(e) => return Err(e),
        }
    }
    found.packs.sort_by_key(|p| p.id);
    found.unusable.sort();
    Ok(found)
}

impl Found {
    /// Adds the packs whose header opens to the index, in a new index file
    /// (which only adds: an append-only key may write it). `lock` must be
    /// exclusive: a running backup's packs are not in the index yet either.
    pub fn index(&self, repo: &Repository, lock: &LockGuard) -> Result<()> {
        if !self.packs.is_empty() {
            repo.replace_index_files(lock, &self.packs, &[], &[])?;
            repo.refresh_index()?;
        }
        Ok(())
    }

    /// Where each blob of [`Found::packs`] is, for a dry run that does not
    /// index them.
    pub fn locations(&self) -> HashMap<Id, BlobLocation> {
        let mut at = HashMap::new();
        for p in &self.packs {
            for b in &p.blobs {
                at.entry(b.id).or_insert_with(|| BlobLocation {
                    pack: p.id,
                    blob: *b,
                });
            }
        }
        at
    }

    /// Fails, when the index names packs that are not stored, for a repair
    /// that judges data by the index: what they held still counts as
    /// present.
    pub fn refuse_missing(&self) -> Result<()> {
        match self.missing.first() {
            None => Ok(()),
            Some(first) => Err(Error::InvalidInput(format!(
                "{} pack(s) the index names are missing from the storage (first: {}), so the \
                 data they held still counts as present; nothing was changed (run `cairn repair \
                 packs` with the IDs `cairn check` names first)",
                self.missing.len(),
                first.to_hex()
            ))),
        }
    }
}
