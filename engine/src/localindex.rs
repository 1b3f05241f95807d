//! The local index: a redb database mapping blob IDs to their location.
//!
//! It is a cache of the repository's index files, never authoritative: it
//! records which index files it has absorbed and is brought up to date (or
//! rebuilt from scratch) from the repository. Losing or damaging it costs
//! time, never data. Lookups touch only the on-disk B-tree through a small,
//! fixed page cache ([`CACHE_BYTES`]), so memory stays bounded however many
//! blobs the repository holds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::backend::{Backend, FileKind};
use crate::blob::{BlobLocation, BlobType, PackedBlob};
use crate::compress::Compression;
use crate::crypto::MasterKey;
use crate::envelope::{ObjectKind, open_msgpack};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::IndexFile;

/// blob id -> (pack number, offset, length, raw length, type, compression)
/// (pack number, offset, length, raw length, type, compression)
type BlobRow = (u32, u32, u32, u32, u8, u8);

const BLOBS: TableDefinition<[u8; 32], BlobRow> = TableDefinition::new("blobs");
/// The rows of `blobs` stored as trees, again: a few thousand per snapshot
/// against millions of data blobs, so reading a snapshot's trees (the next
/// backup's parent, ls, restore) touches a small B-tree that stays cached
/// instead of one random leaf of `blobs` per directory. Filled and emptied
/// with `blobs`; a tree not found here is looked up in `blobs`.
const TREES: TableDefinition<[u8; 32], BlobRow> = TableDefinition::new("trees");
/// pack number -> (pack id, pack size)
const PACKS: TableDefinition<u32, ([u8; 32], u64)> = TableDefinition::new("packs");
/// pack id -> pack number
const PACK_NOS: TableDefinition<[u8; 32], u32> = TableDefinition::new("pack_numbers");
/// index file id -> number of packs it listed
const INDEX_FILES: TableDefinition<[u8; 32], u64> = TableDefinition::new("index_files");

/// snapshot id -> sequence number: snapshots whose every blob was in this
/// database when they were committed. Rows only leave `blobs` through
/// [`LocalIndex::clear`], which empties this table in the same transaction,
/// so a row here means the snapshot's blobs are all still indexed and a
/// backup with it as parent need not look up its unchanged files' content.
/// The sequence number keeps the newest [`VERIFIED_KEEP`].
const VERIFIED: TableDefinition<[u8; 32], u64> = TableDefinition::new("verified_snapshots");
/// Verified snapshots remembered (a parent is nearly always a recent one).
const VERIFIED_KEEP: u64 = 64;

/// Layout version of the local database; a mismatch triggers a rebuild.
/// Version 2 added `verified_snapshots` and the `clears` counter: a version-1
/// client's `clear` would keep the former and not bump the latter, so the two
/// must not share a database. Version 3 added `trees`, which an older
/// client would neither fill nor clear.
const SCHEMA: &str = "cairn-local-index-3";
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// `meta` key: how many times the database was cleared (see [`VERIFIED`]).
const CLEARS: &str = "clears";

/// redb's page cache for an on-disk index. redb's default (1 GiB) grows with
/// every distinct page read: a backup's lookups of random blob IDs in a
/// 10 M-blob index touch one leaf page each, so the cache, and the process's
/// memory, grew by about 4 KiB per blob looked up (669 MiB peak for one
/// backup of the Linux tree, docs/benchmarks.md). Pages beyond this cache
/// are read again through the operating system's page cache, which holds
/// them anyway: with 10 M blobs a first backup peaked at 87-93 MiB with a
/// 16 MiB cache and at 72 MiB (as with an empty index) with 4 MiB, and was
/// no slower; restores took the same time.
pub const CACHE_BYTES: usize = 4 << 20;

/// Index files decrypted and decoded at once per worker thread by
/// [`LocalIndex::sync`]: enough to keep the threads busy, few enough that a
/// rebuild of a large repository does not hold all its index files in memory.
const SYNC_FILES_PER_THREAD: usize = 2;

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::corrupt("local index database", e.to_string())
}

/// The local blob index.
pub struct LocalIndex {
    db: Database,
    path: Option<PathBuf>,
    /// The database on disk was unreadable and has been recreated empty.
    pub recreated: bool,
}

impl LocalIndex {
    /// Opens (or creates) the database at `path`. A database that cannot be
    /// opened or has another schema is deleted and recreated empty; a
    /// database another process holds open is shared with it.
    pub fn open(path: &Path) -> Result<LocalIndex> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        let open = |p: &Path| {
            redb::Builder::new()
                .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
                .set_cache_size(CACHE_BYTES)
                .create(p)
        };
        let (db, recreated) = match open(path).ok() {
            Some(db) if schema_ok(&db) => (db, false),
            other => {
                // Unreadable or foreign: it is only a cache, start it afresh.
                drop(other);
                let _ = std::fs::remove_file(path);
                (open(path).map_err(db_err)?, true)
            }
        };
        let idx = LocalIndex {
            db,
            path: Some(path.to_path_buf()),
            recreated,
        };
        idx.init_tables()?;
        Ok(idx)
    }

    /// A throw-away index in memory (used when no cache directory is usable).
    pub fn in_memory() -> Result<LocalIndex> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db_err)?;
        let idx = LocalIndex {
            db,
            path: None,
            recreated: false,
        };
        idx.init_tables()?;
        Ok(idx)
    }

    fn init_tables(&self) -> Result<()> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            tx.open_table(BLOBS).map_err(db_err)?;
            tx.open_table(TREES).map_err(db_err)?;
            tx.open_table(PACKS).map_err(db_err)?;
            tx.open_table(PACK_NOS).map_err(db_err)?;
            tx.open_table(INDEX_FILES).map_err(db_err)?;
            tx.open_table(VERIFIED).map_err(db_err)?;
            let mut meta = tx.open_table(META).map_err(db_err)?;
            if meta.get("schema").map_err(db_err)?.is_none() {
                meta.insert("schema", SCHEMA).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Where the database lives, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Brings the database up to date with the repository's index files:
    /// absorbs new ones, and rebuilds from scratch if any it absorbed is gone
    /// (prune or repair replaced it).
    pub fn sync(&self, backend: &dyn Backend, key: &MasterKey) -> Result<SyncStats> {
        let listed: Vec<Id> = backend
            .list(FileKind::Index)?
            .into_iter()
            .filter_map(|l| Id::from_hex(&l.name).ok())
            .collect();
        let present: HashSet<Id> = listed.iter().copied().collect();
        let known = self.known_index_files()?;
        let mut stats = SyncStats::default();
        if known.iter().any(|k| !present.contains(k)) {
            self.clear()?;
            stats.rebuilt = true;
        }
        let known = if stats.rebuilt { HashSet::new() } else { known };
        let new: Vec<Id> = listed
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        // Decrypt in parallel, insert in small batches so memory stays bounded.
        let batch_len = SYNC_FILES_PER_THREAD * rayon::current_num_threads().max(1);
        for batch in new.chunks(batch_len) {
            let files: Vec<(Id, IndexFile)> = batch
                .par_iter()
                .map(|id| load_index_file(backend, key, id).map(|f| (*id, f)))
                .collect::<Result<_>>()?;
            for (id, f) in &files {
                stats.blobs += f.packs.iter().map(|p| p.blobs.len()).sum::<usize>();
                self.add_index_file(id, f)?;
            }
            stats.files_loaded += files.len();
        }
        Ok(stats)
    }

    fn known_index_files(&self) -> Result<HashSet<Id>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(INDEX_FILES).map_err(db_err)?;
        let mut out = HashSet::new();
        for r in t.iter().map_err(db_err)? {
            let (k, _) = r.map_err(db_err)?;
            out.insert(Id(k.value()));
        }
        Ok(out)
    }

    /// Empties every table and counts the clear (see [`VERIFIED`]).
    pub fn clear(&self) -> Result<()> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.delete_table(BLOBS).map_err(db_err)?;
        tx.delete_table(TREES).map_err(db_err)?;
        tx.delete_table(PACKS).map_err(db_err)?;
        tx.delete_table(PACK_NOS).map_err(db_err)?;
        tx.delete_table(INDEX_FILES).map_err(db_err)?;
        tx.delete_table(VERIFIED).map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let n = clears(&meta)? + 1;
            meta.insert(CLEARS, n.to_string().as_str())
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        self.init_tables()
    }

    /// Records the contents of index file `file_id` in one transaction.
    pub fn add_index_file(&self, file_id: &Id, f: &IndexFile) -> Result<()> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut blobs = tx.open_table(BLOBS).map_err(db_err)?;
            let mut trees = tx.open_table(TREES).map_err(db_err)?;
            let mut packs = tx.open_table(PACKS).map_err(db_err)?;
            let mut nos = tx.open_table(PACK_NOS).map_err(db_err)?;
            let mut files = tx.open_table(INDEX_FILES).map_err(db_err)?;
            let mut next = packs
                .last()
                .map_err(db_err)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(0);
            let mut rows: Vec<([u8; 32], BlobRow)> =
                Vec::with_capacity(f.packs.iter().map(|p| p.blobs.len()).sum());
            for p in &f.packs {
                let existing = nos.get(p.id.0).map_err(db_err)?.map(|n| n.value());
                let no = match existing {
                    Some(n) => n,
                    None => {
                        let n = next;
                        next += 1;
                        nos.insert(p.id.0, n).map_err(db_err)?;
                        packs.insert(n, (p.id.0, p.size)).map_err(db_err)?;
                        n
                    }
                };
                rows.extend(p.blobs.iter().map(|b| {
                    (
                        b.id.0,
                        (
                            no,
                            b.offset,
                            b.length,
                            b.raw_length,
                            b.blob_type.to_byte(),
                            b.compression.to_byte(),
                        ),
                    )
                }));
            }
            // In key order, each B-tree page is changed in one visit while it
            // is still cached; in pack order (random IDs) a large index has
            // its pages evicted and read back between changes.
            // Stable: of two entries for one blob the later one still wins.
            rows.sort_by_key(|r| r.0);
            for (id, row) in rows {
                if row.4 == BlobType::Tree.to_byte() {
                    trees.insert(id, row).map_err(db_err)?;
                }
                blobs.insert(id, row).map_err(db_err)?;
            }
            files
                .insert(file_id.0, f.packs.len() as u64)
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// A read view for many lookups.
    pub fn reader(&self) -> Result<IndexReader> {
        let tx = self.db.begin_read().map_err(db_err)?;
        Ok(IndexReader {
            blobs: tx.open_table(BLOBS).map_err(db_err)?,
            trees: tx.open_table(TREES).map_err(db_err)?,
            packs: tx.open_table(PACKS).map_err(db_err)?,
        })
    }

    /// A read view for a backup with `parent`, whether `parent` is a
    /// verified snapshot in that same view, and the view's clear count
    /// (for [`LocalIndex::mark_verified`]).
    pub fn backup_view(&self, parent: Option<&Id>) -> Result<BackupView> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let clears = clears(&tx.open_table(META).map_err(db_err)?)?;
        let parent_verified = match parent {
            Some(p) => tx
                .open_table(VERIFIED)
                .map_err(db_err)?
                .get(p.0)
                .map_err(db_err)?
                .is_some(),
            None => false,
        };
        Ok(BackupView {
            reader: IndexReader {
                blobs: tx.open_table(BLOBS).map_err(db_err)?,
                trees: tx.open_table(TREES).map_err(db_err)?,
                packs: tx.open_table(PACKS).map_err(db_err)?,
            },
            parent_verified,
            clears,
        })
    }

    /// Records that every blob of `snapshot` is indexed, if the database
    /// was not cleared since the view with clear count `clears` (taken
    /// before any of the snapshot's blobs were checked); returns whether it
    /// was recorded. Only call it for a committed snapshot whose blobs were
    /// each found in, or added to, this database since that view.
    pub fn mark_verified(&self, snapshot: &Id, clears_then: u64) -> Result<bool> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let same = clears(&tx.open_table(META).map_err(db_err)?)? == clears_then;
        if same {
            let mut t = tx.open_table(VERIFIED).map_err(db_err)?;
            let mut seqs = Vec::new();
            for r in t.iter().map_err(db_err)? {
                let (k, v) = r.map_err(db_err)?;
                seqs.push((v.value(), k.value()));
            }
            seqs.sort_unstable();
            let next = seqs.last().map_or(0, |(s, _)| s + 1);
            t.insert(snapshot.0, next).map_err(db_err)?;
            let excess = (seqs.len() as u64 + 1).saturating_sub(VERIFIED_KEEP) as usize;
            for (_, k) in seqs.iter().take(excess) {
                t.remove(*k).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(same)
    }

    /// Where blob `id` is, if indexed.
    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        self.reader()?.lookup(id)
    }

    /// Where the tree blob `id` is, if indexed (see [`IndexReader::lookup_tree`]).
    pub fn lookup_tree(&self, id: &Id) -> Result<Option<BlobLocation>> {
        self.reader()?.lookup_tree(id)
    }

    /// Whether blob `id` is indexed.
    pub fn contains(&self, id: &Id) -> Result<bool> {
        self.reader()?.contains(id)
    }

    /// Number of indexed blobs.
    pub fn blob_count(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(db_err)?;
        tx.open_table(BLOBS).map_err(db_err)?.len().map_err(db_err)
    }

    /// Every indexed pack with its recorded size.
    pub fn packs(&self) -> Result<Vec<(Id, u64)>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(PACKS).map_err(db_err)?;
        let mut out = Vec::new();
        for r in t.iter().map_err(db_err)? {
            let (_, v) = r.map_err(db_err)?;
            let (id, size) = v.value();
            out.push((Id(id), size));
        }
        Ok(out)
    }

    /// Calls `f` for every indexed blob.
    pub fn for_each_blob(&self, mut f: impl FnMut(BlobLocation) -> Result<()>) -> Result<()> {
        let r = self.reader()?;
        for row in r.blobs.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            f(r.decode(Id(k.value()), v.value())?)?;
        }
        Ok(())
    }
}

/// The `clears` counter of a `meta` table (0 if never cleared).
fn clears(meta: &impl ReadableTable<&'static str, &'static str>) -> Result<u64> {
    match meta.get(CLEARS).map_err(db_err)? {
        Some(v) => v.value().parse().map_err(db_err),
        None => Ok(0),
    }
}

/// The error for a blob the index does not have.
fn not_indexed(id: &Id) -> Error {
    Error::Missing(format!("blob {id} (not in the index)"))
}

fn schema_ok(db: &Database) -> bool {
    let Ok(tx) = db.begin_read() else {
        return false;
    };
    match tx.open_table(META) {
        Ok(t) => matches!(t.get("schema"), Ok(Some(v)) if v.value() == SCHEMA),
        // A fresh database has no tables yet.
        Err(redb::TableError::TableDoesNotExist(_)) => true,
        Err(_) => false,
    }
}

/// Reads and decrypts one index file.
pub fn load_index_file(backend: &dyn Backend, key: &MasterKey, id: &Id) -> Result<IndexFile> {
    let data = backend.read(FileKind::Index, &id.to_hex())?;
    let what = format!("index {id}");
    if Id::of_object(&data) != *id {
        return Err(Error::corrupt(&what, "content does not match its name"));
    }
    open_msgpack(key, ObjectKind::Index, &data, &what)
}

/// What [`LocalIndex::sync`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncStats {
    /// The database was cleared and rebuilt.
    pub rebuilt: bool,
    /// Index files read from the repository.
    pub files_loaded: usize,
    /// Blob entries added.
    pub blobs: usize,
}

/// What a backup starts from: see [`LocalIndex::backup_view`].
pub struct BackupView {
    /// The index as it is now.
    pub reader: IndexReader,
    /// The parent snapshot asked for is verified in `reader`: every blob it
    /// refers to is there.
    pub parent_verified: bool,
    /// How many times the database had been cleared.
    pub clears: u64,
}

/// A consistent read view of the local index.
pub struct IndexReader {
    blobs: redb::ReadOnlyTable<[u8; 32], BlobRow>,
    trees: redb::ReadOnlyTable<[u8; 32], BlobRow>,
    packs: redb::ReadOnlyTable<u32, ([u8; 32], u64)>,
}

impl IndexReader {
    /// Whether blob `id` is indexed.
    pub fn contains(&self, id: &Id) -> Result<bool> {
        Ok(self.blobs.get(id.0).map_err(db_err)?.is_some())
    }

    /// Where blob `id` is, if indexed.
    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        match self.blobs.get(id.0).map_err(db_err)? {
            Some(v) => Ok(Some(self.decode(*id, v.value())?)),
            None => Ok(None),
        }
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
        match self.trees.get(id.0).map_err(db_err)? {
            Some(v) => Ok(Some(self.decode(*id, v.value())?)),
            None => self.lookup(id),
        }
    }

    fn decode(&self, id: Id, v: BlobRow) -> Result<BlobLocation> {
        let (no, offset, length, raw_length, t, c) = v;
        let pack = self
            .packs
            .get(no)
            .map_err(db_err)?
            .ok_or_else(|| db_err(format!("pack number {no} missing")))?
            .value()
            .0;
        Ok(BlobLocation {
            pack: Id(pack),
            blob: PackedBlob {
                id,
                blob_type: BlobType::from_byte(t).ok_or_else(|| db_err("bad blob type"))?,
                offset,
                length,
                raw_length,
                compression: Compression::from_byte(c).ok_or_else(|| db_err("bad compression"))?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::envelope::seal_msgpack;
    use crate::indexfile::IndexPack;

    fn blob(i: u32) -> PackedBlob {
        PackedBlob {
            id: Id::random(),
            blob_type: BlobType::Data,
            offset: 24 + i * 100,
            length: 100,
            raw_length: 84,
            compression: Compression::None,
        }
    }

    /// Writes an index file of one pack with `n` blobs; returns its ID and content.
    fn write_index(backend: &dyn Backend, key: &MasterKey, n: u32) -> (Id, IndexFile) {
        let f = IndexFile {
            packs: vec![IndexPack {
                id: Id::random(),
                size: 24 + u64::from(n) * 100 + 100,
                blobs: (0..n).map(blob).collect(),
            }],
            supersedes: Vec::new(),
        };
        let data = seal_msgpack(key, ObjectKind::Index, &f);
        let id = Id::of_object(&data);
        backend.write(FileKind::Index, &id.to_hex(), &data).unwrap();
        (id, f)
    }

    #[test]
    fn sync_absorbs_more_index_files_than_one_batch_and_rebuilds_when_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        let key = MasterKey::generate();
        let batch = SYNC_FILES_PER_THREAD * rayon::current_num_threads().max(1);
        let files: Vec<(Id, IndexFile)> = (0..2 * batch + 1)
            .map(|i| write_index(&backend, &key, 1 + i as u32))
            .collect();
        let total: usize = files.iter().map(|(_, f)| f.packs[0].blobs.len()).sum();

        let idx = LocalIndex::open(&dir.path().join("cache/index.redb")).unwrap();
        let s = idx.sync(&backend, &key).unwrap();
        assert!(!s.rebuilt);
        assert_eq!(s.files_loaded, files.len());
        assert_eq!(s.blobs, total);
        assert_eq!(idx.blob_count().unwrap(), total as u64);
        let r = idx.reader().unwrap();
        for (_, f) in &files {
            for b in &f.packs[0].blobs {
                let loc = r.lookup(&b.id).unwrap().expect("indexed");
                assert_eq!(loc.pack, f.packs[0].id);
                assert_eq!(loc.blob, *b);
            }
        }
        assert!(!r.contains(&Id::random()).unwrap());
        drop(r);

        // Nothing new: nothing loaded.
        let s = idx.sync(&backend, &key).unwrap();
        assert_eq!((s.rebuilt, s.files_loaded), (false, 0));

        // An absorbed index file is gone (as after prune): rebuilt without it.
        let (gone, f) = &files[batch];
        backend.delete(FileKind::Index, &gone.to_hex()).unwrap();
        let s = idx.sync(&backend, &key).unwrap();
        assert!(s.rebuilt);
        assert_eq!(s.files_loaded, files.len() - 1);
        let left = total - f.packs[0].blobs.len();
        assert_eq!(idx.blob_count().unwrap(), left as u64);
        assert!(!idx.contains(&f.packs[0].blobs[0].id).unwrap());
        assert!(idx.contains(&files[0].1.packs[0].blobs[0].id).unwrap());
    }

    #[test]
    fn a_blob_listed_twice_in_one_index_file_is_found_in_the_later_pack() {
        // Rows are inserted sorted by ID; the sort must keep pack order for
        // equal IDs, as inserting in pack order did.
        let idx = LocalIndex::in_memory().unwrap();
        let twice = blob(3);
        let packs: Vec<IndexPack> = (0..3)
            .map(|i| {
                let mut blobs: Vec<PackedBlob> = (0..20).map(blob).collect();
                blobs[7 + i] = PackedBlob {
                    offset: 1000 + i as u32,
                    ..twice
                };
                IndexPack {
                    id: Id::random(),
                    size: 10_000,
                    blobs,
                }
            })
            .collect();
        let last = packs[2].id;
        let f = IndexFile {
            packs,
            supersedes: Vec::new(),
        };
        idx.add_index_file(&Id::random(), &f).unwrap();
        let loc = idx.lookup(&twice.id).unwrap().unwrap();
        assert_eq!((loc.pack, loc.blob.offset), (last, 1002));
        assert_eq!(idx.blob_count().unwrap(), 3 * 19 + 1);
    }

    /// Trees are found through their own small table, agree with `blobs`
    /// (the later of two copies wins in both) and leave with a clear; a
    /// tree stored as data (same bytes) is still found.
    #[test]
    fn trees_are_found_in_their_own_table_and_cleared_with_the_rest() {
        let idx = LocalIndex::in_memory().unwrap();
        let tree = |i| PackedBlob {
            blob_type: BlobType::Tree,
            ..blob(i)
        };
        let (t, d) = (tree(0), blob(1));
        let mut again = tree(2);
        again.id = t.id;
        let f = IndexFile {
            packs: vec![
                IndexPack {
                    id: Id::random(),
                    size: 1000,
                    blobs: vec![t, d],
                },
                IndexPack {
                    id: Id::random(),
                    size: 1000,
                    blobs: vec![again],
                },
            ],
            supersedes: Vec::new(),
        };
        idx.add_index_file(&Id::random(), &f).unwrap();
        let r = idx.reader().unwrap();
        assert_eq!(r.trees.len().unwrap(), 1);
        let loc = r.lookup_tree(&t.id).unwrap().unwrap();
        assert_eq!(loc, r.lookup(&t.id).unwrap().unwrap());
        assert_eq!((loc.pack, loc.blob.offset), (f.packs[1].id, again.offset));
        assert_eq!(r.lookup_tree(&d.id).unwrap().unwrap().blob, d);
        assert!(r.lookup_tree(&Id::random()).unwrap().is_none());
        drop(r);
        idx.clear().unwrap();
        assert!(idx.lookup_tree(&t.id).unwrap().is_none());
        assert_eq!(idx.reader().unwrap().trees.len().unwrap(), 0);
    }

    #[test]
    fn a_verified_snapshot_is_forgotten_when_the_index_is_cleared() {
        let idx = LocalIndex::in_memory().unwrap();
        let (s1, s2) = (Id::random(), Id::random());
        let v = idx.backup_view(Some(&s1)).unwrap();
        assert!(!v.parent_verified);
        assert!(idx.mark_verified(&s1, v.clears).unwrap());
        assert!(idx.backup_view(Some(&s1)).unwrap().parent_verified);
        assert!(!idx.backup_view(Some(&s2)).unwrap().parent_verified);
        assert!(!idx.backup_view(None).unwrap().parent_verified);

        // A clear (sync after an index file vanished, prune, repair) drops
        // the record, and a backup that started before it cannot record.
        let before = idx.backup_view(Some(&s1)).unwrap();
        idx.clear().unwrap();
        let after = idx.backup_view(Some(&s1)).unwrap();
        assert!(!after.parent_verified);
        assert_eq!(after.clears, before.clears + 1);
        assert!(!idx.mark_verified(&s2, before.clears).unwrap());
        assert!(!idx.backup_view(Some(&s2)).unwrap().parent_verified);
        assert!(idx.mark_verified(&s2, after.clears).unwrap());
        assert!(idx.backup_view(Some(&s2)).unwrap().parent_verified);
    }

    #[test]
    fn only_the_newest_verified_snapshots_are_kept() {
        let idx = LocalIndex::in_memory().unwrap();
        let ids: Vec<Id> = (0..VERIFIED_KEEP + 3).map(|_| Id::random()).collect();
        for id in &ids {
            assert!(idx.mark_verified(id, 0).unwrap());
        }
        let verified = |id: &Id| idx.backup_view(Some(id)).unwrap().parent_verified;
        assert!(ids[..3].iter().all(|id| !verified(id)));
        assert!(ids[3..].iter().all(verified));
    }

    #[test]
    fn a_reopened_index_keeps_its_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let f = IndexFile {
            packs: vec![IndexPack {
                id: Id::random(),
                size: 10_000,
                blobs: (0..50).map(blob).collect(),
            }],
            supersedes: Vec::new(),
        };
        {
            let idx = LocalIndex::open(&path).unwrap();
            assert_eq!(idx.blob_count().unwrap(), 0);
            idx.add_index_file(&Id::random(), &f).unwrap();
        }
        let idx = LocalIndex::open(&path).unwrap();
        assert!(!idx.recreated);
        assert_eq!(idx.blob_count().unwrap(), 50);
        for b in &f.packs[0].blobs {
            assert_eq!(idx.lookup(&b.id).unwrap().unwrap().blob, *b);
        }
    }
}
