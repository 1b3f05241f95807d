//! The local index: a redb database mapping blob IDs to their location.
//!
//! It is a cache of the repository's index files, never authoritative: it
//! records which index files it has absorbed and is brought up to date (or
//! rebuilt from scratch) from the repository. Losing or damaging it costs
//! time, never data. Lookups touch only the on-disk B-tree, so memory stays
//! flat however many blobs the repository holds.

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
/// pack number -> (pack id, pack size)
const PACKS: TableDefinition<u32, ([u8; 32], u64)> = TableDefinition::new("packs");
/// pack id -> pack number
const PACK_NOS: TableDefinition<[u8; 32], u32> = TableDefinition::new("pack_numbers");
/// index file id -> number of packs it listed
const INDEX_FILES: TableDefinition<[u8; 32], u64> = TableDefinition::new("index_files");

/// Layout version of the local database; a mismatch triggers a rebuild.
const SCHEMA: &str = "cairn-local-index-1";
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

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
            tx.open_table(PACKS).map_err(db_err)?;
            tx.open_table(PACK_NOS).map_err(db_err)?;
            tx.open_table(INDEX_FILES).map_err(db_err)?;
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
        // Decrypt in parallel, insert in batches so memory stays bounded.
        for batch in new.chunks(256) {
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

    /// Empties every table.
    pub fn clear(&self) -> Result<()> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.delete_table(BLOBS).map_err(db_err)?;
        tx.delete_table(PACKS).map_err(db_err)?;
        tx.delete_table(PACK_NOS).map_err(db_err)?;
        tx.delete_table(INDEX_FILES).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        self.init_tables()
    }

    /// Records the contents of index file `file_id` in one transaction.
    pub fn add_index_file(&self, file_id: &Id, f: &IndexFile) -> Result<()> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut blobs = tx.open_table(BLOBS).map_err(db_err)?;
            let mut packs = tx.open_table(PACKS).map_err(db_err)?;
            let mut nos = tx.open_table(PACK_NOS).map_err(db_err)?;
            let mut files = tx.open_table(INDEX_FILES).map_err(db_err)?;
            let mut next = packs
                .last()
                .map_err(db_err)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(0);
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
                for b in &p.blobs {
                    blobs
                        .insert(
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
                        .map_err(db_err)?;
                }
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
            packs: tx.open_table(PACKS).map_err(db_err)?,
        })
    }

    /// Where blob `id` is, if indexed.
    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        self.reader()?.lookup(id)
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

/// A consistent read view of the local index.
pub struct IndexReader {
    blobs: redb::ReadOnlyTable<[u8; 32], BlobRow>,
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
