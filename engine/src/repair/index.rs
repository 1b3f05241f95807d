//! `repair index`: the index files rebuilt from the pack headers.

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::IndexPack;
use crate::repository::Repository;
use crate::repository::read_pack_header;

use super::passing;

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
    let results: Vec<(String, u64, Result<IndexPack>)> = listed
        .par_iter()
        .map(|l| {
            (
                l.name.clone(),
                l.size,
                read_pack_header(repo, &l.name, l.size),
            )
        })
        .collect();
    let mut report = RepairIndexReport::default();
    let mut packs = Vec::new();
    // What the old index files say, for packs whose header cannot be read
    // now (a damaged header does not make the blobs in the pack unreadable).
    let mut previous: std::collections::HashMap<Id, IndexPack> = std::collections::HashMap::new();
    for n in &old {
        let Ok(id) = Id::from_hex(n) else { continue };
        match crate::localindex::load_index_file(&**backend, repo.key(), &id) {
            Ok(f) => {
                for p in f.packs {
                    previous.entry(p.id).or_insert(p);
                }
            }
            // Not read (a timeout, a 5xx, a bad sector): its entries are
            // not there for packs whose headers fail below, which then
            // stop the repair (see `passing`), and it is deleted once the
            // new index is in: said.
            Err(e) if passing(&e) => report
                .unreadable
                .push(format!("index file {n}: {e} (its entries not used)")),
            Err(_) => {}
        }
    }
    for (name, size, r) in results {
        // A read that failed other than by damage (a timeout, a 5xx) is
        // tried again: a pack left out of the index is deleted by the next
        // prune as unindexed.
        let r = match r {
            Err(e) if passing(&e) => read_pack_header(repo, &name, size),
            r => r,
        };
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
                    // Nothing is replaced yet: the old index files stay.
                    None if passing(&e) => {
                        return Err(Error::Backend(format!(
                            "cannot read pack {name} (tried twice): {e}; nothing was changed. \
                             Run `repair index` again; a pack that never reads can be moved out \
                             of the repository's packs/ first (`check` then names what it held)"
                        )));
                    }
                    None => report.unreadable.push(format!(
                        "pack {name}: {e} (left out of the index, not deleted)"
                    )),
                }
            }
        }
    }
    // A pack the old index names that the listing left out is looked at
    // by itself: a store whose listing lagged or lost entries made this
    // drop packs that were there, and check then called them unindexed.
    let was_listed: std::collections::HashSet<&str> =
        listed.iter().map(|l| l.name.as_str()).collect();
    let mut unlisted: Vec<IndexPack> = previous
        .into_values()
        .filter(|p| !was_listed.contains(p.id.to_hex().as_str()))
        .collect();
    unlisted.sort_by_key(|p| p.id);
    for old_entry in unlisted {
        let name = old_entry.id.to_hex();
        let size = match backend.stored_size(FileKind::Pack, &name)? {
            Some(size) => size,
            // This machine's cache may hold it whole (a remote
            // repository's tree packs): dropped, the tidy after the
            // rebuild deleted that copy too.
            None if super::packs::put_back(repo, &name)? => {
                report.unreadable.push(format!(
                    "pack {name}: missing from the store; put back from this machine's cache, \
                     whose copy is intact"
                ));
                match backend.stored_size(FileKind::Pack, &name)? {
                    Some(size) => size,
                    None => continue,
                }
            }
            None => {
                // Said: it was dropped from the index without a word.
                report.unreadable.push(format!(
                    "pack {name}: missing from the store: its {} blobs are dropped from the index",
                    old_entry.blobs.len()
                ));
                continue;
            }
        };
        let p = match read_pack_header(repo, &name, size) {
            Ok(p) => p,
            // Deleted between its look-up and its header read: gone, as a
            // listed pack deleted mid-rebuild is.
            Err(Error::Missing(_)) => continue,
            Err(_) => old_entry,
        };
        report.blobs += p.blobs.len();
        report.unreadable.push(format!(
            "pack {name}: missing from the storage's listing, but there (indexed all the same)"
        ));
        packs.push(p);
    }
    report.packs = packs.len();
    report.index_files_written = repo
        .replace_index_files(&lock, &packs, &old, &[])?
        .names
        .len();
    report.index_files_removed = old.len();
    repo.index().clear()?;
    repo.index().sync(&**backend, repo.key())?;
    Ok(report)
}
