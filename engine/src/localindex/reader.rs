//! Lookups in one consistent read view of the local index.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use super::handle::{Handle, shielded};
use super::{
    BlobRow, FilterCache, FilterKey, NO_START, cached_filter, damaged, db_err, filter, load_filter,
    not_indexed,
};
use crate::blob::{BlobLocation, BlobType, PackedBlob};
use crate::compress::Compression;
use crate::error::Result;
use crate::id::Id;

/// A consistent read view of the local index.
pub struct IndexReader {
    /// The database's file, condemned if a lookup finds it damaged.
    pub(super) handle: Arc<Handle>,
    pub(super) blobs: redb::ReadOnlyTable<[u8; 32], BlobRow>,
    pub(super) recent: redb::ReadOnlyTable<[u8; 32], BlobRow>,
    pub(super) fresh: redb::ReadOnlyTable<[u8; 32], BlobRow>,
    pub(super) trees: redb::ReadOnlyTable<[u8; 32], BlobRow>,
    pub(super) packs: redb::ReadOnlyTable<u32, ([u8; 32], u64)>,
    pub(super) filter: LazyFilter,
}

/// At most this many lookups a view answers from the tables before it loads the filter
/// from disk: a few cold lookups cost less than reading the filter, so a
/// small backup (a watch snapshot, the new trees of an unchanged re-backup)
/// never reads it.
pub(super) const LOOKUPS_BEFORE_FILTER: u32 = 256;

/// Lookups answered from the tables before a filter of `blocks` blocks is
/// loaded: about when they would have cost as much as loading it. On the
/// 10 M-blob fixture a cold lookup (two B-trees) took about 1 ms and the
/// filter's pages about 0.25 ms each (190 in 0.05 s), so a quarter of its
/// page count; a first backup into that repository spent 0.25 s on the
/// first 256 lookups.
fn lookups_before_load(blocks: u64) -> u32 {
    (filter::pages_for(blocks) / 4).clamp(16, LOOKUPS_BEFORE_FILTER)
}

/// A view's filter, loaded when it is first needed: commands that only
/// look up blobs they know are there (restore, check) never hold it in
/// memory.
pub(super) struct LazyFilter {
    pub(super) key: FilterKey,
    pub(super) pages: redb::ReadOnlyTable<u32, &'static [u8]>,
    pub(super) cache: FilterCache,
    /// The filter, and whether it has every row's bits (else an ID it rules
    /// out may still be in `fresh_blobs`).
    pub(super) loaded: OnceLock<Option<(Arc<filter::Filter>, bool)>>,
    pub(super) asked: AtomicU32,
}

impl LazyFilter {
    /// Whether `id` may be indexed in this view; `false` is certain.
    pub(super) fn may_contain(&self, id: &Id) -> Result<bool> {
        if self.key.blocks == 0 {
            return Ok(true);
        }
        let f = match self.loaded.get() {
            Some(f) => f,
            None => {
                let f = match cached_filter(&self.cache, self.key, false) {
                    Some(c) => Some((c.filter, c.complete)),
                    None if self.asked.fetch_add(1, Ordering::Relaxed)
                        < lookups_before_load(self.key.blocks) =>
                    {
                        return Ok(true);
                    }
                    None => self.load()?,
                };
                self.loaded.get_or_init(|| f)
            }
        };
        // A damaged filter rules nothing out.
        Ok(f.as_ref().is_none_or(|(f, _)| f.may_contain(&id.0)))
    }

    /// Whether an ID [`LazyFilter::may_contain`] ruled out is certainly
    /// absent, rather than perhaps in `fresh_blobs`.
    pub(super) fn certain(&self) -> bool {
        self.loaded
            .get()
            .is_none_or(|f| f.as_ref().is_none_or(|(_, complete)| *complete))
    }

    pub(super) fn load(&self) -> Result<Option<(Arc<filter::Filter>, bool)>> {
        load_filter(&self.cache, self.key, &self.pages)
    }
}

impl IndexReader {
    /// Whether blob `id` is indexed. Most IDs that are not are ruled out by
    /// the filter, without reading the tables.
    pub fn contains(&self, id: &Id) -> Result<bool> {
        shielded(&self.handle, || {
            if !self.filter.may_contain(id)? {
                // Rows absorbed without their bits stored are all fresh.
                return Ok(
                    !self.filter.certain() && self.fresh.get(id.0).map_err(db_err)?.is_some()
                );
            }
            Ok(self.row(id)?.is_some())
        })
    }

    /// The row of blob `id`: the table absorbed last first.
    fn row(&self, id: &Id) -> Result<Option<BlobRow>> {
        for t in [&self.fresh, &self.recent] {
            if let Some(v) = t.get(id.0).map_err(db_err)? {
                return Ok(Some(v.value()));
            }
        }
        Ok(self.blobs.get(id.0).map_err(db_err)?.map(|v| v.value()))
    }

    /// Where blob `id` is, if indexed.
    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        shielded(&self.handle, || match self.row(id)? {
            Some(v) => Ok(Some(self.decode(*id, v)?)),
            None => Ok(None),
        })
    }

    /// Where blob `id` is, or [`Error::Missing`].
    pub fn locate(&self, id: &Id) -> Result<BlobLocation> {
        self.lookup(id)?.ok_or_else(|| not_indexed(id))
    }

    /// Where the tree blob `id` is, or [`Error::Missing`].
    pub fn locate_tree(&self, id: &Id) -> Result<BlobLocation> {
        self.lookup_tree(id)?.ok_or_else(|| not_indexed(id))
    }

    /// Like [`IndexReader::lookup`] for a blob wanted as a tree: asks the
    /// small `trees` table first.
    pub fn lookup_tree(&self, id: &Id) -> Result<Option<BlobLocation>> {
        shielded(&self.handle, || {
            match self.trees.get(id.0).map_err(db_err)? {
                Some(v) => Ok(Some(self.decode(*id, v.value())?)),
                None => self.lookup(id),
            }
        })
    }

    pub(super) fn decode(&self, id: Id, v: BlobRow) -> Result<BlobLocation> {
        let (no, offset, length, raw_length, t, c, start) = v;
        let compression = Compression::from_byte(c).ok_or_else(|| damaged("bad compression"))?;
        let pack = self
            .packs
            .get(no)
            .map_err(db_err)?
            .ok_or_else(|| damaged(format!("pack number {no} missing")))?
            .value()
            .0;
        Ok(BlobLocation {
            pack: Id(pack),
            blob: PackedBlob {
                id,
                blob_type: BlobType::from_byte(t).ok_or_else(|| damaged("bad blob type"))?,
                offset,
                length,
                raw_length,
                compression,
                start: (start != NO_START).then_some(start),
            },
        })
    }
}
