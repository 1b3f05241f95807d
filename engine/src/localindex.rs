//! The local index: a redb database mapping blob IDs to their location.
//!
//! It is a cache of the repository's index files, never authoritative: it
//! records which index files it has absorbed and is brought up to date (or
//! rebuilt from scratch) from the repository. Losing or damaging it costs
//! time, never data. Lookups touch only the on-disk B-tree through a small,
//! fixed page cache ([`CACHE_BYTES`]), so memory stays bounded however many
//! blobs the repository holds, but for the filter below: 5 bits per blob,
//! loaded only once a view has looked many blobs up in the tables (a backup
//! of new data).
//!
//! A lookup of a new chunk in a large index reads a random leaf, and so does
//! inserting its row: with 10 M blobs, cold, that made a first backup take
//! 1.6 times as long as into an empty repository. So new rows go to a small
//! `fresh_blobs` table, merged into a larger `recent_blobs` in one sorted
//! pass once it holds a sixty-fourth as many rows as the others
//! ([`FRESH_MIN_ROWS`] at least), and `recent_blobs` is merged into `blobs`
//! once it holds an eighth as many ([`MERGE_MIN_ROWS`] at least). A negative
//! filter over all three ([`filter`]) answers most lookups of new chunks
//! from memory.

mod advice;
mod busy;
mod filter;
mod handle;
mod reader;

use advice::Advice;
pub use busy::WAIT_ENV;
use busy::WriteGate;
use handle::{Handle, shielded};
pub use reader::IndexReader;
use reader::LazyFilter;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use rayon::prelude::*;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::backend::{Backend, FileKind};
use crate::blob::{BlobLocation, BlobType};
use crate::crypto::MasterKey;
use crate::envelope::{ObjectKind, open_msgpack};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::IndexFile;

/// blob id -> (pack number, offset, length, raw length, type, compression,
/// start in its group frame, or [`NO_START`])
type BlobRow = (u32, u32, u32, u32, u8, u8, u32);
/// A row's start when its entry has none (no frame decodes to 4 GiB).
const NO_START: u32 = u32::MAX;

const BLOBS: TableDefinition<[u8; 32], BlobRow> = TableDefinition::new("blobs");
/// Rows merged from `fresh_blobs` since the last merge into `blobs`; asked
/// before `blobs`, and wins over a row of it for the same blob (it was
/// absorbed later).
const RECENT: TableDefinition<[u8; 32], BlobRow> = TableDefinition::new("recent_blobs");
/// Rows absorbed since the last merge into `recent_blobs`; asked first, and
/// wins over the other two tables. Inserting a backup's rows into
/// `recent_blobs` directly touched nearly every one of its leaves, cold (0.2 s
/// of a first backup's end with 10 M blobs, 272,000 of them recent); a
/// small table that was just written takes them in a fraction of that.
const FRESH: TableDefinition<[u8; 32], BlobRow> = TableDefinition::new("fresh_blobs");
/// `fresh_blobs` is merged into `recent_blobs` when it holds this many rows,
/// or a sixty-fourth of the other two tables if more.
const FRESH_MIN_ROWS: u64 = 1 << 17;
/// `recent_blobs` is merged into `blobs` when, with the rows of a merge
/// from `fresh_blobs` (only then is this checked), it holds this many rows,
/// or an eighth of `blobs` if more: a merge of `T` rows into a table of `L` leaves
/// touches about `L (1 - e^(-T/L))` of them, so merging rarely and in bulk
/// costs a fraction of a leaf per row where inserting each backup's rows
/// directly cost nearly one.
const MERGE_MIN_ROWS: u64 = 1 << 18;
/// The rows of `blobs` stored as trees, again: a few thousand per snapshot
/// against millions of data blobs, so reading a snapshot's trees (the next
/// backup's parent, ls, restore) touches a small B-tree that stays cached
/// instead of one random leaf of `blobs` per directory. Filled and emptied
/// with the other blob tables; a tree not found here is looked up in them
/// (its bytes may have been stored as a data blob).
const TREES: TableDefinition<[u8; 32], BlobRow> = TableDefinition::new("trees");
/// pack number -> (pack id, pack size)
const PACKS: TableDefinition<u32, ([u8; 32], u64)> = TableDefinition::new("packs");
/// pack id -> pack number
const PACK_NOS: TableDefinition<[u8; 32], u32> = TableDefinition::new("pack_numbers");
/// index file id -> number of packs it listed
const INDEX_FILES: TableDefinition<[u8; 32], u64> = TableDefinition::new("index_files");
/// index file id -> (unused) for every file an absorbed one supersedes
/// (a prune's or repair's): one loaded before it was deleted and absorbed
/// after its replacement is refused (its rows would outlive the packs it
/// names). Written only in write transactions, which make it; cleared with
/// the rest. A schema-7 client neither fills nor clears it: what it leaves
/// names files that are gone or replaced, so the table needs no version.
const SUPERSEDED: TableDefinition<[u8; 32], ()> = TableDefinition::new("superseded_index_files");
/// Times [`LocalIndex::sync`] starts again because another process cleared
/// the database, or because a file supersedes one absorbed meanwhile,
/// before it absorbs without those checks.
const SYNC_RESTARTS: usize = 4;

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
/// client would neither fill nor clear. Version 4 added `recent_blobs` and
/// the filter, which an older client would neither read nor keep up.
/// Version 5 added each row's start in its group frame (format version 3).
/// Version 6 added `fresh_blobs`, which an older client would not read.
/// Version 7 added [`FILTER_FRESH`]: an older client would trust stored
/// filter pages that lack the bits of fresh rows.
const SCHEMA: &str = "cairn-local-index-7";
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Meta key present while cached packs await tidying after a rebuild.
const CACHE_TIDY: &str = "cache-tidy";
/// `meta` key: how many times the database was cleared (see [`VERIFIED`]).
const CLEARS: &str = "clears";
/// `meta` key: the filter's size in 512-bit blocks (absent or 0: no filter).
const FILTER_BLOCKS: &str = "filter_blocks";
/// `meta` key: bumped by every transaction that writes filter pages or
/// absorbs rows, so a process knows when its copy in memory is another's.
const FILTER_GEN: &str = "filter_gen";
/// `meta` key, present while rows of `fresh_blobs` may lack their bits in
/// the stored filter pages: a backup's index files are absorbed without
/// writing the pages (every page at 16,384 rows, 6.8 MB at 10 M blobs),
/// which are written once at its end ([`LocalIndex::settle_filter`]), by
/// any absorb that does not defer them, or when rows leave `fresh_blobs`.
/// Meanwhile a reader whose filter lacks those bits asks `fresh_blobs` for
/// an ID the filter rules out.
const FILTER_FRESH: &str = "filter_fresh_pending";

/// redb's page cache for an on-disk index. redb's default (1 GiB) grows with
/// every distinct page read: a backup's lookups of random blob IDs in a
/// 10 M-blob index touch one leaf page each, so the cache, and the process's
/// memory, grew by about 4 KiB per blob looked up (669 MiB peak for one
/// backup of the Linux tree, docs/benchmarks.md). Pages beyond this cache
/// are read again through the operating system's page cache, which holds
/// them anyway: with 10 M blobs a first backup peaked at 87-93 MiB with a
/// 16 MiB cache and at 72 MiB (as with an empty index) with 4 MiB, and was
/// no slower; restores took the same time. Since the filter (6 MB at 10 M
/// blobs) came, the cache is 2 MiB: a first backup with 10 M blobs peaked at
/// 78-79 MiB with 4 MiB, 74-76 MiB with 2 MiB, again no slower, and restores
/// of the Linux tree from that repository took the same time with 4, 2 or
/// 1 MiB.
pub const CACHE_BYTES: usize = 2 << 20;

/// Index files decrypted and decoded at once per worker thread by
/// [`LocalIndex::sync`]: enough to keep the threads busy, few enough that a
/// rebuild of a large repository does not hold all its index files in memory.
const SYNC_FILES_PER_THREAD: usize = 2;

/// A database that cannot be opened or created: an I/O failure (a
/// read-only or full disk, no permission) is told as one, not as damage.
fn open_err(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => Error::io("open", path, io),
        e => db_err(e),
    }
}

/// A database error: a failing disk (full, read-only, gone) is told as the
/// cache's I/O error, not as damage; anything else is damage.
fn db_err(e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Io(io) => Error::io("update", CACHE_INDEX, io),
        // Every call after an I/O failure answers this: the same failure.
        redb::Error::PreviousIo => Error::io(
            "update",
            CACHE_INDEX,
            std::io::Error::other("an earlier write to it failed"),
        ),
        e => damaged(e),
    }
}

/// Damage found in what the database holds.
fn damaged(e: impl std::fmt::Display) -> Error {
    Error::corrupt(DAMAGED_OBJECT, e.to_string())
}

/// What damage to the local index is reported as, before [`shielded`]
/// removes the file and says so.
const DAMAGED_OBJECT: &str = "local index database";

/// How an I/O error of the local index names it (the path is not at hand
/// where redb reports one).
pub const CACHE_INDEX: &str = "the local cache's index database";

/// The filter in memory, with the generation it was loaded or written at
/// and the database's clear count then.
type FilterCache = Arc<Mutex<Option<Cached>>>;

struct Cached {
    generation: u64,
    clears: u64,
    filter: Arc<filter::Filter>,
    /// Has the bits of every row up to its generation, those of
    /// `fresh_blobs` included (see [`FILTER_FRESH`]).
    complete: bool,
}

/// Which filter a view or a transaction has.
#[derive(Clone, Copy)]
struct FilterKey {
    generation: u64,
    clears: u64,
    blocks: u64,
    /// [`FILTER_FRESH`] is set: the stored pages may lack bits of fresh rows.
    fresh_pending: bool,
}

impl Cached {
    /// Whether this copy answers for `key`'s view without hiding a row
    /// (but fresh rows, if it is not [`Cached::complete`]): it is that
    /// generation's, or, for a reader, a later one with no clear in between
    /// (rows only leave by a clear, and a filter only gains bits or is
    /// rebuilt from every row). A writer, which stores pages from it, needs
    /// that very generation.
    fn serves(&self, key: FilterKey, exact: bool) -> bool {
        if exact {
            self.generation == key.generation && self.filter.blocks() == key.blocks
        } else {
            self.generation >= key.generation && self.clears == key.clears
        }
    }
}

thread_local! {
    /// Set while this thread runs [`without_panicking`].
    static SHIELDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set by the hook when a panic on this thread came from redb.
    static FROM_REDB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, or returns `None` if redb panicked in it, without the panic's
/// report on standard error (the panic is handled, not a crash). Any other
/// panic goes on as if this were not here, report and all (a bug is not a
/// damaged cache). The report is held back by a process-wide hook,
/// installed once, that stays silent only for redb's panics on the threads
/// inside this function: swapping the hook at each call would also
/// silence other threads' panics meanwhile.
fn without_panicking<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // redb's own code, or the standard library called from it.
            let redb = info
                .location()
                .is_some_and(|l| l.file().contains("/redb-") || l.file().contains("/library/"));
            if redb && SHIELDED.with(std::cell::Cell::get) {
                FROM_REDB.with(|r| r.set(true));
            } else {
                report(info)
            }
        }));
    });
    let was = SHIELDED.with(|s| s.replace(true));
    FROM_REDB.with(|r| r.set(false));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    SHIELDED.with(|s| s.set(was));
    match r {
        Ok(v) => Some(v),
        Err(_) if FROM_REDB.with(|r| r.replace(false)) => None,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// Data blobs a saver saves before it calls [`LocalIndex::warm`]: a backup
/// of a few changed files reads what it needs of the index, not the whole
/// of its newer tables.
pub const WARM_AFTER_DATA_BLOBS: u64 = 1024;
/// Key ranges of a table read at once by [`LocalIndex::warm`].
const WARM_PARTS: usize = 8;
/// The cache of [`warm_tables`]'s own handle: it reads each page once.
const WARM_CACHE_BYTES: usize = 64 << 10;
/// The most rows of `recent_blobs` [`LocalIndex::warm`] reads (113 MB of
/// rows, 160-230 MB of leaves): with more, warming would read much that a
/// backup never uses.
const WARM_RECENT_MAX_ROWS: u64 = 1 << 21;

/// Reads `fresh_blobs`, and `recent_blobs` if it holds at most
/// `recent_max` rows (see [`LocalIndex::warm`]), through a read-only handle
/// of its own (its small cache leaves the command's alone), each in
/// [`WARM_PARTS`] key ranges at once: their leaves lie all over the file,
/// and one range read at a time took 1.4 s for 800,000 recent rows, eight
/// 0.44-0.47 s (read-ahead instead read 800 MB more, in 0.83 s). A read
/// transaction per table, so that pages freed meanwhile are not held long.
/// Gives up at the first error: warming is only ever a gain.
fn warm_tables(path: &Path, recent_max: u64) -> Option<()> {
    let file = std::fs::File::open(path).ok()?;
    let _random = Advice::random(file.try_clone().ok()?);
    let db = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .set_cache_size(WARM_CACHE_BYTES)
        .open_read_only_with_backend(redb::backends::FileBackend::new(file).ok()?)
        .ok()?;
    for (def, most) in [(FRESH, u64::MAX), (RECENT, recent_max)] {
        let tx = db.begin_read().ok()?;
        let t = tx.open_table(def).ok()?;
        if t.len().ok()? > most {
            break;
        }
        let t = &t;
        std::thread::scope(|s| {
            for part in 0..WARM_PARTS {
                s.spawn(move || {
                    // An error repeats on every later call of the iterator.
                    without_panicking(|| {
                        key_range_part(t, part, WARM_PARTS)
                            .map(|rows| rows.take_while(Result::is_ok).count())
                    })
                });
            }
        });
    }
    Some(())
}

/// The rows of `t` whose keys' first byte falls in part `part` of `parts`.
fn key_range_part<'t>(
    t: &'t redb::ReadOnlyTable<[u8; 32], BlobRow>,
    part: usize,
    parts: usize,
) -> std::result::Result<redb::Range<'t, [u8; 32], BlobRow>, redb::StorageError> {
    let start = |p: usize| {
        let mut k = [0u8; 32];
        k[0] = (p * 256 / parts) as u8;
        k
    };
    if part + 1 == parts {
        t.range(start(part)..)
    } else {
        t.range(start(part)..start(part + 1))
    }
}

/// The local blob index.
pub struct LocalIndex {
    /// The database file open now: replaced by the next call once damage
    /// is found in it (see [`handle`]).
    current: RwLock<Arc<Handle>>,
    path: Option<Arc<Path>>,
    /// The database on disk was unreadable and has been recreated empty.
    pub recreated: bool,
    /// [`MERGE_MIN_ROWS`], smaller in tests.
    merge_min_rows: u64,
    /// [`FRESH_MIN_ROWS`], smaller in tests.
    fresh_min_rows: u64,
    /// Every write transaction begins here (and an open waits as long).
    writes: WriteGate,
    /// Since when, and why, the file at `path` could not be opened again
    /// after damage and an index in memory stands in for it (see
    /// [`LocalIndex::retry_file`]); whether that was said yet.
    stand_in: Mutex<Option<StandIn>>,
}

/// An index in memory standing in for the file (see [`LocalIndex::handle`]).
struct StandIn {
    since: std::time::Instant,
    why: String,
    said: bool,
}

/// How often a long-running process tries again to open the file an index
/// in memory stands in for: the open may wait for another process
/// ([`busy::wait`]), and each sync would otherwise wait again.
const RETRY_FILE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

impl LocalIndex {
    /// Opens (or creates) the database at `path`. A database that cannot be
    /// opened or has another schema is deleted and recreated empty; a
    /// database another process holds open is shared with it. An error
    /// means no database can be kept at `path` (a read-only or full disk,
    /// a file in the way, damage that cannot be removed), or another
    /// process has held its write lock for longer than [`busy::wait`].
    pub fn open(path: &Path) -> Result<LocalIndex> {
        Self::open_waiting(path, busy::wait())
    }

    /// [`LocalIndex::open`], waiting at most `wait` for another process's
    /// write lock, there and in each write transaction.
    pub(crate) fn open_waiting(path: &Path, wait: std::time::Duration) -> Result<LocalIndex> {
        let writes = WriteGate::new(wait);
        let (handle, recreated) = Self::open_handle(path, &writes, 0)?;
        Ok(Self::with_handle(handle, Some(path), recreated, writes))
    }

    /// An index on `handle`, first of its path's.
    fn with_handle(
        handle: Handle,
        path: Option<&Path>,
        recreated: bool,
        writes: WriteGate,
    ) -> LocalIndex {
        LocalIndex {
            current: RwLock::new(Arc::new(handle)),
            path: path.map(Arc::from),
            recreated,
            merge_min_rows: MERGE_MIN_ROWS,
            fresh_min_rows: FRESH_MIN_ROWS,
            writes,
            stand_in: Mutex::new(None),
        }
    }

    /// Opens the file at `path` as handle number `incarnation`, with its
    /// tables made, waiting as long as `writes` does for another process;
    /// whether it was recreated empty.
    fn open_handle(path: &Path, writes: &WriteGate, incarnation: u64) -> Result<(Handle, bool)> {
        if let Some(dir) = path.parent() {
            crate::backend::create_private_dir(dir)
                .map_err(|e| Error::io("create directory", dir, e))?;
        }
        let (handle, recreated) = Self::open_or_recreate(path, writes, incarnation)?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        Ok((handle, recreated))
    }

    fn open_or_recreate(
        path: &Path,
        writes: &WriteGate,
        incarnation: u64,
    ) -> Result<(Handle, bool)> {
        // redb trusts its own pages and panics on some damage to them; the
        // file is only a cache, so a panic while opening it means the same
        // as an error: start afresh.
        match without_panicking(|| Self::open_as_found(path, writes, incarnation)) {
            Some(r) => r,
            None => {
                let _ = std::fs::remove_file(path);
                match without_panicking(|| Self::open_as_found(path, writes, incarnation)) {
                    Some(Ok((handle, _))) => Ok((handle, true)),
                    Some(Err(e)) => Err(e),
                    None => Err(Error::corrupt(
                        "local index database",
                        format!("{} is damaged and could not be replaced", path.display()),
                    )),
                }
            }
        }
    }

    fn open_as_found(path: &Path, writes: &WriteGate, incarnation: u64) -> Result<(Handle, bool)> {
        use std::os::unix::fs::MetadataExt;
        let wait = writes.wait();
        type Opened = (Database, Advice, (u64, u64));
        let open_now = |p: &Path,
                        repairing: Arc<AtomicBool>|
         -> std::result::Result<Opened, redb::DatabaseError> {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)?;
            // The same open file as redb's (its locks are the open file's
            // too, and outlive this descriptor), for access advice only.
            let same = file.try_clone()?;
            // Which file it is, so that only it is removed once condemned.
            let meta = file.metadata()?;
            let id = (meta.dev(), meta.ino());
            let db = redb::Builder::new()
                .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
                .set_cache_size(CACHE_BYTES)
                // Called with the write lock held: what is left is ours.
                .set_repair_callback(move |_| repairing.store(true, Ordering::SeqCst))
                .create_with_backend(redb::backends::FileBackend::new(file)?)?;
            // After the open: a repair after a crash reads the whole file.
            Ok((db, Advice::random(same), id))
        };
        // Opened in a thread: redb waits for another process's write lock.
        // A panic there (on damage) is an unreadable file, as an error is.
        let open = |p: &Path| {
            let owned = p.to_path_buf();
            let repairing = Arc::new(AtomicBool::new(false));
            let flag = repairing.clone();
            busy::within(wait, repairing, move || {
                without_panicking(|| open_now(&owned, flag)).unwrap_or_else(|| {
                    Err(redb::StorageError::Corrupted("redb panicked opening it".into()).into())
                })
            })
        };
        let ((db, advice, id), recreated) = match open(path)?.ok() {
            Some((db, advice, id)) if schema_ok(&db) => ((db, advice, id), false),
            other => {
                // Unreadable or foreign: it is only a cache, start it afresh.
                drop(other);
                let _ = std::fs::remove_file(path);
                (open(path)?.map_err(|e| open_err(path, e))?, true)
            }
        };
        let handle = Handle::new(db, advice, Some(Arc::from(path)), Some(id), incarnation);
        init_tables(writes, &handle)?;
        Ok((handle, recreated))
    }

    /// A throw-away index in memory (used when no cache directory is usable).
    pub fn in_memory() -> Result<LocalIndex> {
        let writes = WriteGate::new(busy::wait());
        let handle = Self::memory_handle(&writes, 0)?;
        Ok(Self::with_handle(handle, None, false, writes))
    }

    fn memory_handle(writes: &WriteGate, incarnation: u64) -> Result<Handle> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db_err)?;
        let handle = Handle::new(db, Advice::none(), None, None, incarnation);
        init_tables(writes, &handle)?;
        Ok(handle)
    }

    /// The database to use now: the one open, or, once damage was found in
    /// it, the file at its path opened again (rebuilt by another process,
    /// or created empty for the next sync to fill). A file that cannot be
    /// opened (a full or read-only disk, another process holding its write
    /// lock too long, damage that cannot be removed) is done without, as
    /// when the repository was opened: an index in memory, for the rest of
    /// the process (each call would otherwise wait on it again).
    fn handle(&self) -> Result<Arc<Handle>> {
        let h = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !h.condemned() {
            return Ok(h);
        }
        drop(h);
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.condemned() {
            let next = current.incarnation + 1;
            let handle = match self.path.as_deref() {
                Some(p) => match Self::open_handle(p, &self.writes, next) {
                    Ok((h, _)) => {
                        *self.stand_in.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        h
                    }
                    Err(e) => {
                        *self.stand_in.lock().unwrap_or_else(|e| e.into_inner()) = Some(StandIn {
                            since: std::time::Instant::now(),
                            why: e.to_string(),
                            said: false,
                        });
                        Self::memory_handle(&self.writes, next)?
                    }
                },
                None => Self::memory_handle(&self.writes, next)?,
            };
            let old = std::mem::replace(&mut *current, Arc::new(handle));
            // Closing a damaged database may meet the damage (redb writes
            // its state back): as anywhere else, that is no crash.
            without_panicking(|| drop(old));
        }
        Ok(current.clone())
    }

    /// Why the file could not be opened again after damage was found in
    /// it, once: an index in memory stands in for it, and holds every row
    /// in RAM (a long-running process on a large repository should say so).
    pub fn stand_in_unsaid(&self) -> Option<String> {
        let mut s = self.stand_in.lock().unwrap_or_else(|e| e.into_inner());
        let s = s.as_mut().filter(|s| !s.said)?;
        s.said = true;
        Some(s.why.clone())
    }

    /// Opens the file again if an index in memory stands in for it and the
    /// last try is [`RETRY_FILE_EVERY`] old: on success the file replaces
    /// it (empty or another process's: the next sync fills it, as after
    /// damage) and true is returned.
    pub fn retry_file(&self) -> bool {
        self.retry_file_after(RETRY_FILE_EVERY)
    }

    fn retry_file_after(&self, every: std::time::Duration) -> bool {
        let Some(p) = self.path.as_deref() else {
            return false;
        };
        let due = || {
            (self.stand_in.lock().unwrap_or_else(|e| e.into_inner()))
                .as_ref()
                .is_some_and(|s| s.since.elapsed() >= every)
        };
        // Without the write lock first: most syncs have nothing to retry.
        if !due() {
            return false;
        }
        // `current` before `stand_in`, as in `handle`.
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have opened the file meanwhile (a retry of
        // its own, or `handle` after new damage was found).
        if !due() || current.path.is_some() {
            return false;
        }
        let opened = Self::open_handle(p, &self.writes, current.incarnation + 1);
        let mut stand_in = self.stand_in.lock().unwrap_or_else(|e| e.into_inner());
        match opened {
            Ok((h, _)) => {
                *stand_in = None;
                let old = std::mem::replace(&mut *current, Arc::new(h));
                drop((stand_in, current));
                without_panicking(|| drop(old));
                true
            }
            Err(e) => {
                if let Some(s) = stand_in.as_mut() {
                    (s.since, s.why) = (std::time::Instant::now(), e.to_string());
                }
                false
            }
        }
    }

    /// Which database file this is: it changes once damage is found in the
    /// one open (the next is not the one synced before, and may be empty).
    pub fn file_incarnation(&self) -> u64 {
        let h = self.current.read().unwrap_or_else(|e| e.into_inner());
        h.incarnation + u64::from(h.condemned())
    }

    /// Where the database lives, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Removes the database file, found damaged (the next call opens a
    /// new one: the next sync fills it); returns where it was.
    pub fn condemn(&self) -> Option<&Path> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .condemn();
        self.path.as_deref()
    }

    /// Brings the database up to date with the repository's index files:
    /// absorbs new ones, and rebuilds from scratch if any it absorbed is gone
    /// (prune or repair replaced it).
    pub fn sync(&self, backend: &dyn Backend, key: &MasterKey) -> Result<SyncStats> {
        let h = self.handle()?;
        shielded(&h, || {
            let mut stats = SyncStats::default();
            let mut done = false;
            for attempt in 0..=SYNC_RESTARTS {
                if self.sync_once(backend, key, &mut stats, attempt < SYNC_RESTARTS)? {
                    done = true;
                    break;
                }
            }
            // Cleared under it each time: what it holds is not the
            // repository's index, and a caller taking it for complete
            // would report blobs missing (or tidy the cache of live packs).
            if !done {
                return Err(Error::Locked(format!(
                    "the local index was cleared by other cairn processes on this machine {} \
                     times while it was brought up to date: run the command again",
                    SYNC_RESTARTS + 1
                )));
            }
            if stats.files_loaded > 0 {
                // Only time is at stake: readers ask `fresh_blobs` until a
                // later command writes the pages.
                let _ = self.settle_filter();
            }
            Ok(stats)
        })
    }

    /// One pass of [`LocalIndex::sync`], adding to `stats`; `false` when it
    /// must start again (`strict`: another process cleared the database
    /// since, or a file supersedes one that is absorbed).
    fn sync_once(
        &self,
        backend: &dyn Backend,
        key: &MasterKey,
        stats: &mut SyncStats,
        strict: bool,
    ) -> Result<bool> {
        // What the last pass met.
        stats.damaged.clear();
        stats.vanished = 0;
        // Read before the listing: a file another process absorbs
        // meanwhile (a backup's) is then listed, and only loaded again.
        // Read after, it was taken for one deleted since, and everything
        // was rebuilt.
        let (known, mut clears_then) = self.known_index_files()?;
        let listed: Vec<Id> = backend
            .list(FileKind::Index)?
            .into_iter()
            .filter_map(|l| Id::from_hex(&l.name).ok())
            .collect();
        let present: HashSet<Id> = listed.iter().copied().collect();
        let rebuild = known.iter().any(|k| !present.contains(k));
        if rebuild {
            clears_then = self.clear()?;
            stats.rebuilt = true;
        }
        let known = if rebuild { HashSet::new() } else { known };
        let new: Vec<Id> = listed
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        // Decrypt in parallel, insert in small batches so memory stays bounded.
        let batch_len = SYNC_FILES_PER_THREAD * rayon::current_num_threads().max(1);
        for batch in new.chunks(batch_len) {
            let loaded: Vec<(Id, Result<IndexFile>)> = batch
                .par_iter()
                .map(|id| (*id, load_index_file(backend, key, id)))
                .collect();
            let mut files = Vec::with_capacity(loaded.len());
            for (id, r) in loaded {
                match r {
                    Ok(f) => files.push((id, f)),
                    // One damaged index file must not make the repository
                    // unopenable (a new machine has no cache to fall back
                    // on, and `check` and `repair index` need to open it):
                    // left out, named, and tried again next time. Prune
                    // reads every index file itself and refuses.
                    Err(e @ Error::Corrupt { .. }) => {
                        stats.damaged.push(format!("index {id}: {e}"))
                    }
                    // Replaced since the listing (a prune elsewhere).
                    Err(Error::Missing(_)) => stats.vanished += 1,
                    Err(e) => return Err(e),
                }
            }
            for (id, f) in &files {
                let since = Since {
                    clears: clears_then,
                    strict,
                    still_there: false,
                };
                let mut absorbed = self.absorb(id, f, true, Some(since))?;
                // Superseded but still there: a replacement stopped before
                // it wrote its other files leaves the old ones naming packs
                // only they list. Every file present counts (spec §12); only
                // one gone since the listing (a prune deleted it) is left out.
                if matches!(absorbed, Absorbed::Superseded)
                    && backend
                        .stored_size(FileKind::Index, &id.to_hex())?
                        .is_some()
                {
                    let since = Since {
                        still_there: true,
                        ..since
                    };
                    absorbed = self.absorb(id, f, true, Some(since))?;
                }
                match absorbed {
                    Absorbed::Yes => {
                        stats.blobs += f.packs.iter().map(|p| p.blobs.len()).sum::<usize>();
                        stats.files_loaded += 1;
                    }
                    Absorbed::Already | Absorbed::Superseded => {}
                    Absorbed::Stale => return Ok(false),
                }
            }
        }
        Ok(true)
    }

    /// The index files absorbed, and the clear count they go with.
    fn known_index_files(&self) -> Result<(HashSet<Id>, u64)> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = h.db.begin_read().map_err(db_err)?;
            let t = tx.open_table(INDEX_FILES).map_err(db_err)?;
            let mut out = HashSet::new();
            for r in t.iter().map_err(db_err)? {
                let (k, _) = r.map_err(db_err)?;
                out.insert(Id(k.value()));
            }
            let clears = clears(&tx.open_table(META).map_err(db_err)?)?;
            Ok((out, h.clear_token(clears)))
        })
    }

    /// Empties every table and counts the clear (see [`VERIFIED`]);
    /// returns the new count (as [`LocalIndex::clear_count`] gives it).
    pub fn clear(&self) -> Result<u64> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = self.writes.begin(&h.db)?;
            // Deleting a table reads its pages to free them.
            let _pass = h.advice.whole_tables();
            tx.delete_table(BLOBS).map_err(db_err)?;
            tx.delete_table(RECENT).map_err(db_err)?;
            tx.delete_table(FRESH).map_err(db_err)?;
            tx.delete_table(filter::FILTER).map_err(db_err)?;
            tx.delete_table(TREES).map_err(db_err)?;
            tx.delete_table(PACKS).map_err(db_err)?;
            tx.delete_table(PACK_NOS).map_err(db_err)?;
            tx.delete_table(INDEX_FILES).map_err(db_err)?;
            tx.delete_table(VERIFIED).map_err(db_err)?;
            tx.delete_table(SUPERSEDED).map_err(db_err)?;
            let n = {
                let mut meta = tx.open_table(META).map_err(db_err)?;
                let n = clears(&meta)? + 1;
                meta.insert(CLEARS, n.to_string().as_str())
                    .map_err(db_err)?;
                let generation = meta_u64(&meta, FILTER_GEN)? + 1;
                meta.insert(FILTER_GEN, generation.to_string().as_str())
                    .map_err(db_err)?;
                meta.remove(FILTER_BLOCKS).map_err(db_err)?;
                meta.remove(FILTER_FRESH).map_err(db_err)?;
                // Packs another client pruned may be cached: they go once a
                // cached repository has the rebuilt index (see `cache_tidied`).
                meta.insert(CACHE_TIDY, "pending").map_err(db_err)?;
                n
            };
            // Made again in the same transaction: between two, another process
            // sharing the cache found no tables ("Table 'blobs' does not
            // exist", as if the cache were damaged).
            open_tables(&tx)?;
            tx.commit()?;
            *h.filter.lock().expect("filter lock") = None;
            Ok(h.clear_token(n))
        })
    }

    /// Whether the index was rebuilt since cached packs were last tidied
    /// against it (a rebuild means index files went: a prune, perhaps
    /// elsewhere, deleted packs this machine may hold copies of).
    pub fn cache_tidy_pending(&self) -> Result<bool> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = h.db.begin_read().map_err(db_err)?;
            let meta = tx.open_table(META).map_err(db_err)?;
            Ok(meta.get(CACHE_TIDY).map_err(db_err)?.is_some())
        })
    }

    /// Records that cached packs were tidied against this index.
    pub fn cache_tidied(&self) -> Result<()> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = self.writes.begin(&h.db)?;
            tx.open_table(META)
                .map_err(db_err)?
                .remove(CACHE_TIDY)
                .map_err(db_err)?;
            tx.commit()
        })
    }

    /// Records the contents of index file `file_id` in one transaction.
    pub fn add_index_file(&self, file_id: &Id, f: &IndexFile) -> Result<()> {
        self.absorb(file_id, f, false, None).map(drop)
    }

    /// Like [`LocalIndex::add_index_file`], but leaves the filter's stored
    /// pages for [`LocalIndex::settle_filter`] (see [`FILTER_FRESH`]), for a
    /// command that absorbs several files in a row; and only if the
    /// database was not cleared since [`LocalIndex::clear_count`] gave
    /// `clears_before` (read before the file was written). Returns whether
    /// it was absorbed. A writer stalled after writing its file may have had
    /// its lock judged stale meanwhile, and the file's packs pruned: the
    /// process that then found the file gone cleared the database, and the
    /// rows must not come back into it.
    pub fn add_index_file_deferred(
        &self,
        file_id: &Id,
        f: &IndexFile,
        clears_before: u64,
    ) -> Result<bool> {
        let since = Since {
            clears: clears_before,
            strict: false,
            still_there: true,
        };
        let absorbed = self.absorb(file_id, f, true, Some(since))?;
        Ok(matches!(absorbed, Absorbed::Yes | Absorbed::Already))
    }

    /// How many times the database has been cleared (see
    /// [`LocalIndex::add_index_file_deferred`]), with which file it is in
    /// the bits above: a count from a file replaced since matches no count
    /// of the new one.
    pub fn clear_count(&self) -> Result<u64> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = h.db.begin_read().map_err(db_err)?;
            Ok(h.clear_token(clears(&tx.open_table(META).map_err(db_err)?)?))
        })
    }

    /// Writes the filter pages that deferred absorbs left unwritten, if any
    /// (another process may have written them since).
    pub fn settle_filter(&self) -> Result<()> {
        let h = self.handle()?;
        shielded(&h, || {
            // Asked first without the write lock: another process may have
            // written the pages since.
            let read = h.db.begin_read().map_err(db_err)?;
            if !filter_key(&read.open_table(META).map_err(db_err)?)?.fresh_pending {
                return Ok(());
            }
            drop(read);
            let tx = self.writes.begin(&h.db)?;
            let pending = filter_key(&tx.open_table(META).map_err(db_err)?)?.fresh_pending;
            if !pending {
                return Ok(());
            }
            let unset = self.unset_ids(&h, &tx)?;
            let filter = self.update_filter(&h, &tx, unset.iter(), false, false)?;
            tx.commit()?;
            *h.filter.lock().expect("filter lock") = filter;
            Ok(())
        })
    }

    /// Absorbs one index file. `since`, for a file a sync loaded: absorbs
    /// it only if the database was not cleared since the sync read it, and
    /// neither holds it already nor records it as superseded.
    fn absorb(
        &self,
        file_id: &Id,
        f: &IndexFile,
        defer: bool,
        since: Option<Since>,
    ) -> Result<Absorbed> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = self.writes.begin(&h.db)?;
            if let Some(since) = since {
                // Dropping `tx` undoes nothing: nothing is written yet.
                if let Some(not) = self.absorbable(&h, &tx, file_id, f, since)? {
                    return Ok(not);
                }
            }
            {
                let mut superseded = tx.open_table(SUPERSEDED).map_err(db_err)?;
                for old in &f.supersedes {
                    superseded.insert(old.0, ()).map_err(db_err)?;
                }
            }
            let pending = filter_key(&tx.open_table(META).map_err(db_err)?)?.fresh_pending;
            let (rows, merge_fresh, merge) = {
                let mut fresh = tx.open_table(FRESH).map_err(db_err)?;
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
                                // Absent is kept apart from 0, so a group member
                                // listed without one is still refused when read.
                                b.start.unwrap_or(NO_START),
                            ),
                        )
                    }));
                }
                // In key order, each B-tree page is changed in one visit while it
                // is still cached; in pack order (random IDs) a large index has
                // its pages evicted and read back between changes.
                // Stable: of two entries for one blob the later one still wins.
                rows.sort_by_key(|r| r.0);
                for (id, row) in &rows {
                    if row.4 == BlobType::Tree.to_byte() {
                        trees.insert(id, row).map_err(db_err)?;
                    }
                    fresh.insert(id, row).map_err(db_err)?;
                }
                files
                    .insert(file_id.0, f.packs.len() as u64)
                    .map_err(db_err)?;
                let len =
                    |t| -> Result<u64> { tx.open_table(t).map_err(db_err)?.len().map_err(db_err) };
                let (in_blobs, in_recent) = (len(BLOBS)?, len(RECENT)?);
                let in_fresh = fresh.len().map_err(db_err)?;
                let merge_fresh = in_fresh >= self.next_fresh_merge(in_blobs + in_recent);
                let merge = merge_fresh && in_recent + in_fresh >= self.next_merge(in_blobs);
                (rows, merge_fresh, merge)
            };
            // Rows leaving `fresh_blobs` must have their bits stored.
            let defer = defer && !merge_fresh;
            // Taken before a merge empties `fresh_blobs`.
            let unset = if pending && !defer {
                self.unset_ids(&h, &tx)?
            } else {
                Vec::new()
            };
            // A merge reads every leaf of the table it goes into (and after
            // one into `blobs` the filter is rebuilt from every row).
            let _pass = merge_fresh.then(|| h.advice.whole_tables());
            if merge_fresh {
                merge_into(&tx, FRESH, RECENT)?;
            }
            if merge {
                merge_into(&tx, RECENT, BLOBS)?;
            }
            let ids = rows.iter().map(|r| &r.0).chain(&unset);
            let filter = self.update_filter(&h, &tx, ids, merge, defer)?;
            tx.commit()?;
            *h.filter.lock().expect("filter lock") = filter;
            Ok(Absorbed::Yes)
        })
    }

    /// Why a sync must not absorb `file_id` in `tx`, if it must not.
    fn absorbable(
        &self,
        h: &Handle,
        tx: &redb::WriteTransaction,
        file_id: &Id,
        f: &IndexFile,
        since: Since,
    ) -> Result<Option<Absorbed>> {
        // Cleared since the sync's listing: the file may be one whose
        // deletion made the other process clear, and its rows would point
        // at packs gone. The sync lists again.
        if h.clear_token(clears(&tx.open_table(META).map_err(db_err)?)?) != since.clears {
            return Ok(Some(Absorbed::Stale));
        }
        let files = tx.open_table(INDEX_FILES).map_err(db_err)?;
        if files.get(file_id.0).map_err(db_err)?.is_some() {
            return Ok(Some(Absorbed::Already));
        }
        let superseded = tx.open_table(SUPERSEDED).map_err(db_err)?;
        if !since.still_there && superseded.get(file_id.0).map_err(db_err)?.is_some() {
            return Ok(Some(Absorbed::Superseded));
        }
        // It replaces a file absorbed since the sync's listing (loaded by a
        // process that listed before the prune deleted it): that file's
        // rows the replacement leaves out name packs that may be gone, and
        // only a rebuild drops them. The sync lists again, and clears if
        // the old file is gone.
        if since.strict {
            for old in &f.supersedes {
                if files.get(old.0).map_err(db_err)?.is_some() {
                    return Ok(Some(Absorbed::Stale));
                }
            }
        }
        Ok(None)
    }

    /// The rows whose bits a transaction that writes filter pages while
    /// [`FILTER_FRESH`] is set must set: every row of `fresh_blobs`, unless
    /// this process has a complete copy of the filter of `tx`'s generation
    /// (it has their bits, and every page is written from it).
    fn unset_ids(&self, h: &Handle, tx: &redb::WriteTransaction) -> Result<Vec<[u8; 32]>> {
        let key = filter_key(&tx.open_table(META).map_err(db_err)?)?;
        if cached_filter(&h.filter, key, true).is_some_and(|c| c.complete) {
            return Ok(Vec::new());
        }
        let t = tx.open_table(FRESH).map_err(db_err)?;
        let mut out = Vec::with_capacity(t.len().map_err(db_err)? as usize);
        for r in t.iter().map_err(db_err)? {
            out.push(r.map_err(db_err)?.0.value());
        }
        Ok(out)
    }

    /// How many rows `recent_blobs` gathers before it is merged into a
    /// `blobs` of `in_blobs` rows.
    fn next_merge(&self, in_blobs: u64) -> u64 {
        self.merge_min_rows.max(in_blobs / 8)
    }

    /// How many rows `fresh_blobs` gathers before it is merged into
    /// `recent_blobs`, with `others` rows in the other two tables.
    fn next_fresh_merge(&self, others: u64) -> u64 {
        self.fresh_min_rows.max(others / 64)
    }

    /// [`LocalIndex::filter_add`] over the three blob tables of `tx`, for as
    /// many rows as they hold, or, if `tx` merged into `blobs`, until the next
    /// such merge.
    fn update_filter<'a>(
        &self,
        h: &Handle,
        tx: &redb::WriteTransaction,
        ids: impl Iterator<Item = &'a [u8; 32]>,
        merged: bool,
        defer: bool,
    ) -> Result<Option<Cached>> {
        let blobs = tx.open_table(BLOBS).map_err(db_err)?;
        let recent = tx.open_table(RECENT).map_err(db_err)?;
        let fresh = tx.open_table(FRESH).map_err(db_err)?;
        let total = blobs.len().map_err(db_err)?
            + recent.len().map_err(db_err)?
            + fresh.len().map_err(db_err)?;
        // A filter that fills up is rebuilt from every row: right after a
        // merge, which has just read the leaves of `blobs`, it is made to
        // hold until the next one (and the fresh rows before it), so a
        // rebuild never reads them cold.
        let need = if merged {
            total + self.next_merge(total) + self.next_fresh_merge(total)
        } else {
            total
        };
        self.filter_add(h, tx, [&blobs, &recent, &fresh], ids, need, defer)
    }

    /// Sets the bits of `ids` in the filter and writes the pages they
    /// changed; rebuilds the filter from every row, sized for `need` rows,
    /// if it does not hold that many (or is missing or damaged). While
    /// [`FILTER_FRESH`] is set, `ids` must include
    /// [`LocalIndex::unset_ids`] (a complete copy writes every page
    /// instead). With `defer`, a filter that holds `need` rows gets no
    /// stored pages, only [`FILTER_FRESH`]. Returns the filter in memory with
    /// the generation this transaction gives it, or `None` if none is kept.
    fn filter_add<'a>(
        &self,
        h: &Handle,
        tx: &redb::WriteTransaction,
        tables: [&redb::Table<[u8; 32], BlobRow>; 3],
        ids: impl Iterator<Item = &'a [u8; 32]>,
        need: u64,
        defer: bool,
    ) -> Result<Option<Cached>> {
        let mut meta = tx.open_table(META).map_err(db_err)?;
        let mut pages = tx.open_table(filter::FILTER).map_err(db_err)?;
        // Read before the generation is bumped: the copy that serves it.
        let key = filter_key(&meta)?;
        let blocks = key.blocks;
        let next = key.generation + 1;
        meta.insert(FILTER_GEN, next.to_string().as_str())
            .map_err(db_err)?;
        let ids: Vec<&[u8; 32]> = ids.collect();
        let cached = cached_filter(&h.filter, key, true);
        if defer && blocks > 0 && filter::holds(blocks, need) {
            meta.insert(FILTER_FRESH, "1").map_err(db_err)?;
            // A copy of this generation gains the bits (it stays complete,
            // or not, as it was).
            return Ok(cached.map(|c| {
                for id in &ids {
                    c.filter.insert(id);
                }
                Cached {
                    generation: next,
                    ..c
                }
            }));
        }
        // The pages written below have every row's bits: `ids` include
        // those of `fresh_blobs` while they were pending.
        meta.remove(FILTER_FRESH).map_err(db_err)?;
        // Without the filter in memory (this process looked up too little to
        // load it: a small backup, a sync), change the pages the rows fall
        // in where they are, rather than load all of it.
        if cached.is_none()
            && blocks > 0
            && filter::holds(blocks, need)
            && add_in_pages(&mut pages, blocks, &ids)?
        {
            return Ok(None);
        }
        // Left: no filter, one too small, or a damaged page. Loading it
        // would not help: it is rebuilt.
        let (f, dirty): (Arc<filter::Filter>, BTreeSet<u32>) = match cached {
            Some(c) if c.filter.holds(need) => {
                let f = c.filter;
                let mut dirty: BTreeSet<u32> = ids.iter().map(|id| f.insert(id)).collect();
                if key.fresh_pending && c.complete {
                    // The deferred rows' pages are not known: all of them.
                    dirty = (0..f.pages()).collect();
                }
                (f, dirty)
            }
            _ => {
                let _pass = h.advice.whole_tables();
                let f = filter::Filter::for_rows(need);
                for table in tables {
                    for r in table.iter().map_err(db_err)? {
                        f.insert(&r.map_err(db_err)?.0.value());
                    }
                }
                pages.retain(|_, _| false).map_err(db_err)?;
                meta.insert(FILTER_BLOCKS, f.blocks().to_string().as_str())
                    .map_err(db_err)?;
                let all = (0..f.pages()).collect();
                (Arc::new(f), all)
            }
        };
        for p in dirty {
            pages.insert(p, f.page(p).as_slice()).map_err(db_err)?;
        }
        Ok(Some(Cached {
            generation: next,
            clears: key.clears,
            filter: f,
            complete: true,
        }))
    }

    /// Reads `fresh_blobs`, then `recent_blobs` if it holds at most
    /// [`WARM_RECENT_MAX_ROWS`], into the operating system's cache, in
    /// threads of their own, for a command about to look up and store many
    /// blobs (see [`warm_tables`]; the saver calls it once a backup has
    /// saved [`WARM_AFTER_DATA_BLOBS`] data blobs). Inserting into `fresh_blobs` reads nearly
    /// every leaf: on a cold cache a backup's first index file took
    /// 0.27-0.40 s to absorb with 80,000 fresh rows, the later ones
    /// 0.08-0.11 s. Lookups of blobs stored lately (a `--force` backup), the
    /// filter's "maybe"s and merges into `recent_blobs` read its leaves one
    /// by one, cold: a `--force` backup with 800,000 recent rows took 2.75 s
    /// warmed, 3.12 s not (medians of three). Once per open index (a `watch`
    /// saves often); errors and damage are left for the command to meet.
    /// Its threads keep the normal priority: they wait on the disk, and a
    /// late warm-up is worth little.
    pub fn warm(&self) {
        let Ok(h) = self.handle() else {
            return;
        };
        let Some(path) = h.path.clone() else {
            return;
        };
        if h.warmed.swap(true, Ordering::Relaxed) {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("cairn-index-warm".into())
            .spawn(move || without_panicking(|| warm_tables(&path, WARM_RECENT_MAX_ROWS)));
    }

    /// A read view for many lookups.
    pub fn reader(&self) -> Result<IndexReader> {
        Self::reader_of(&self.handle()?)
    }

    /// A read view of `h`.
    fn reader_of(h: &Arc<Handle>) -> Result<IndexReader> {
        Self::reader_in(h, &h.db.begin_read().map_err(db_err)?)
    }

    /// A read view of `h` in `tx`.
    fn reader_in(h: &Arc<Handle>, tx: &redb::ReadTransaction) -> Result<IndexReader> {
        let meta = tx.open_table(META).map_err(db_err)?;
        Ok(IndexReader {
            handle: h.clone(),
            blobs: tx.open_table(BLOBS).map_err(db_err)?,
            recent: tx.open_table(RECENT).map_err(db_err)?,
            fresh: tx.open_table(FRESH).map_err(db_err)?,
            trees: tx.open_table(TREES).map_err(db_err)?,
            packs: tx.open_table(PACKS).map_err(db_err)?,
            filter: LazyFilter {
                key: filter_key(&meta)?,
                pages: tx.open_table(filter::FILTER).map_err(db_err)?,
                cache: h.filter.clone(),
                loaded: OnceLock::new(),
                asked: AtomicU32::new(0),
            },
        })
    }

    /// A read view for a backup with `parent`, whether `parent` is a
    /// verified snapshot in that same view, and the view's clear count
    /// (for [`LocalIndex::mark_verified`]).
    pub fn backup_view(&self, parent: Option<&Id>) -> Result<BackupView> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = h.db.begin_read().map_err(db_err)?;
            let clears = h.clear_token(clears(&tx.open_table(META).map_err(db_err)?)?);
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
                reader: Self::reader_in(&h, &tx)?,
                parent_verified,
                clears,
            })
        })
    }

    /// Records that every blob of `snapshot` is indexed, if the database
    /// was not cleared since the view with clear count `clears` (taken
    /// before any of the snapshot's blobs were checked); returns whether it
    /// was recorded. Only call it for a committed snapshot whose blobs were
    /// each found in, or added to, this database since that view.
    pub fn mark_verified(&self, snapshot: &Id, clears_then: u64) -> Result<bool> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = self.writes.begin(&h.db)?;
            let same = h.clear_token(clears(&tx.open_table(META).map_err(db_err)?)?) == clears_then;
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
            tx.commit()?;
            Ok(same)
        })
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

    /// Number of index rows: the indexed blobs, where a blob absorbed again
    /// counts once for each of the three tables that holds a row for it.
    pub fn blob_count(&self) -> Result<u64> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = h.db.begin_read().map_err(db_err)?;
            let mut rows = 0;
            for t in [BLOBS, RECENT, FRESH] {
                rows += tx.open_table(t).map_err(db_err)?.len().map_err(db_err)?;
            }
            Ok(rows)
        })
    }

    /// Whether pack `id` is indexed.
    pub fn has_pack(&self, id: &Id) -> Result<bool> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = h.db.begin_read().map_err(db_err)?;
            let t = tx.open_table(PACK_NOS).map_err(db_err)?;
            Ok(t.get(id.0).map_err(db_err)?.is_some())
        })
    }

    /// Every indexed pack with its recorded size.
    pub fn packs(&self) -> Result<Vec<(Id, u64)>> {
        let h = self.handle()?;
        shielded(&h, || {
            let tx = h.db.begin_read().map_err(db_err)?;
            let t = tx.open_table(PACKS).map_err(db_err)?;
            let mut out = Vec::new();
            for r in t.iter().map_err(db_err)? {
                let (_, v) = r.map_err(db_err)?;
                let (id, size) = v.value();
                out.push((Id(id), size));
            }
            Ok(out)
        })
    }

    /// The ID of every indexed tree blob, in ID order (read from the small
    /// table of trees, not the whole index).
    pub fn tree_ids(&self) -> Result<Vec<Id>> {
        let h = self.handle()?;
        shielded(&h, || {
            let r = Self::reader_of(&h)?;
            rows(&r.trees)?
                .map(|row| row.map(|(id, _)| Id(id)))
                .collect()
        })
    }

    /// Calls `f` for every indexed blob, once, in ID order.
    pub fn for_each_blob(&self, mut f: impl FnMut(BlobLocation) -> Result<()>) -> Result<()> {
        let h = self.handle()?;
        shielded(&h, || {
            let _pass = h.advice.whole_tables();
            let r = Self::reader_of(&h)?;
            // Newest level first: of rows for one blob, the first wins.
            let mut levels = [
                rows(&r.fresh)?.peekable(),
                rows(&r.recent)?.peekable(),
                rows(&r.blobs)?.peekable(),
            ];
            loop {
                // Every table is in key order: take the smallest key next.
                let mut next: Option<(usize, [u8; 32])> = None;
                for (i, level) in levels.iter_mut().enumerate() {
                    match level.peek() {
                        Some(Err(_)) => return Err(level.next().expect("peeked").unwrap_err()),
                        Some(Ok((id, _))) if next.is_none_or(|(_, least)| *id < least) => {
                            next = Some((i, *id));
                        }
                        _ => {}
                    }
                }
                let Some((i, id)) = next else {
                    return Ok(());
                };
                let (_, row) = levels[i].next().expect("peeked")?;
                for level in &mut levels[i + 1..] {
                    if matches!(level.peek(), Some(Ok((other, _))) if *other == id) {
                        level.next();
                    }
                }
                f(r.decode(Id(id), row)?)?;
            }
        })
    }
}

/// The rows of a blob table in key order.
fn rows(
    t: &redb::ReadOnlyTable<[u8; 32], BlobRow>,
) -> Result<impl Iterator<Item = Result<([u8; 32], BlobRow)>> + '_> {
    Ok(t.iter()
        .map_err(db_err)?
        .map(|row| row.map(|(k, v)| (k.value(), v.value())).map_err(db_err)))
}

type BlobTable = TableDefinition<'static, [u8; 32], BlobRow>;

/// Moves every row of table `from` into table `into` (an older level), in
/// key order, so each leaf of `into` is changed once; `from`'s rows win.
fn merge_into(tx: &redb::WriteTransaction, from: BlobTable, into: BlobTable) -> Result<()> {
    {
        let from = tx.open_table(from).map_err(db_err)?;
        let mut into = tx.open_table(into).map_err(db_err)?;
        for r in from.iter().map_err(db_err)? {
            let (k, v) = r.map_err(db_err)?;
            into.insert(k.value(), v.value()).map_err(db_err)?;
        }
    }
    tx.delete_table(from).map_err(db_err)?;
    tx.open_table(from).map_err(db_err)?;
    Ok(())
}

/// The filter for a reader's view `key`: the process's copy if it serves
/// the view ([`Cached::serves`]), else loaded from `pages` (and kept, if
/// newer than the copy); `None` if there is none or it is damaged. With
/// it, whether it has the bits of every row (see [`Cached::complete`]).
fn load_filter(
    cache: &FilterCache,
    key: FilterKey,
    pages: &impl ReadableTable<u32, &'static [u8]>,
) -> Result<Option<(Arc<filter::Filter>, bool)>> {
    if key.blocks == 0 {
        return Ok(None);
    }
    // Held while loading: the threads sharing a view would otherwise each
    // load a copy at once.
    let mut c = cache.lock().expect("filter lock");
    if let Some(cached) = &*c
        && cached.serves(key, false)
    {
        return Ok(Some((cached.filter.clone(), cached.complete)));
    }
    // One page at a time: the filter is not held twice.
    let mut failed = None;
    let stored = pages.iter().map_err(db_err)?.map_while(|r| match r {
        Ok((k, v)) => Some((k.value(), v.value().to_vec())),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    let loaded = filter::Filter::from_pages(key.blocks, pages.len().map_err(db_err)?, stored);
    if let Some(e) = failed {
        return Err(db_err(e));
    }
    let Some(f) = loaded.map(Arc::new) else {
        return Ok(None);
    };
    let complete = !key.fresh_pending;
    if c.as_ref().is_none_or(|old| old.generation < key.generation) {
        *c = Some(Cached {
            generation: key.generation,
            clears: key.clears,
            filter: f.clone(),
            complete,
        });
    }
    Ok(Some((f, complete)))
}

/// Sets the bits of `ids` in the stored pages of a filter of `blocks`
/// blocks, reading and writing only the pages they are in. `false` if one
/// of those pages is missing or damaged (the filter must be rebuilt).
fn add_in_pages(
    pages: &mut redb::Table<u32, &'static [u8]>,
    blocks: u64,
    ids: &[&[u8; 32]],
) -> Result<bool> {
    let mut by_page: Vec<(u32, &[u8; 32])> = ids
        .iter()
        .map(|id| (filter::page_of(blocks, id), *id))
        .collect();
    by_page.sort_unstable_by_key(|(p, _)| *p);
    for group in by_page.chunk_by(|a, b| a.0 == b.0) {
        let p = group[0].0;
        let Some(mut page) = pages.get(p).map_err(db_err)?.map(|v| v.value().to_vec()) else {
            return Ok(false);
        };
        for (_, id) in group {
            if !filter::set_in_page(blocks, &mut page, id) {
                return Ok(false);
            }
        }
        pages.insert(p, page.as_slice()).map_err(db_err)?;
    }
    Ok(true)
}

/// `cache`'s filter if it serves `key` (see [`Cached::serves`]).
fn cached_filter(cache: &FilterCache, key: FilterKey, exact: bool) -> Option<Cached> {
    match &*cache.lock().expect("filter lock") {
        Some(c) if c.serves(key, exact) => Some(Cached {
            filter: c.filter.clone(),
            ..*c
        }),
        _ => None,
    }
}

/// The filter a view or transaction with `meta` has.
fn filter_key(meta: &impl ReadableTable<&'static str, &'static str>) -> Result<FilterKey> {
    Ok(FilterKey {
        generation: meta_u64(meta, FILTER_GEN)?,
        clears: clears(meta)?,
        blocks: meta_u64(meta, FILTER_BLOCKS)?,
        fresh_pending: meta.get(FILTER_FRESH).map_err(db_err)?.is_some(),
    })
}

/// A decimal counter in `meta` (absent: 0).
fn meta_u64(meta: &impl ReadableTable<&'static str, &'static str>, key: &str) -> Result<u64> {
    match meta.get(key).map_err(db_err)? {
        Some(v) => v.value().parse().map_err(damaged),
        None => Ok(0),
    }
}

/// The `clears` counter of a `meta` table (0 if never cleared).
fn clears(meta: &impl ReadableTable<&'static str, &'static str>) -> Result<u64> {
    meta_u64(meta, CLEARS)
}

/// Creates the tables that are not there (and the schema mark) in `h`.
fn init_tables(writes: &WriteGate, h: &Handle) -> Result<()> {
    let tx = writes.begin(&h.db)?;
    open_tables(&tx)?;
    tx.commit()
}

/// Creates the tables that are not there (and the schema mark) in `tx`.
fn open_tables(tx: &redb::WriteTransaction) -> Result<()> {
    tx.open_table(BLOBS).map_err(db_err)?;
    tx.open_table(RECENT).map_err(db_err)?;
    tx.open_table(FRESH).map_err(db_err)?;
    tx.open_table(filter::FILTER).map_err(db_err)?;
    tx.open_table(TREES).map_err(db_err)?;
    tx.open_table(PACKS).map_err(db_err)?;
    tx.open_table(PACK_NOS).map_err(db_err)?;
    tx.open_table(INDEX_FILES).map_err(db_err)?;
    tx.open_table(VERIFIED).map_err(db_err)?;
    let mut meta = tx.open_table(META).map_err(db_err)?;
    if meta.get("schema").map_err(db_err)?.is_none() {
        meta.insert("schema", SCHEMA).map_err(db_err)?;
    }
    Ok(())
}

/// The error for a blob the index does not have.
fn not_indexed(id: &Id) -> Error {
    Error::Missing(format!(
        "blob {id} (not in the index; `cairn check`, without --no-cache, tells a damaged local \
         cache from lost data)"
    ))
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

/// What a sync saw when it loaded an index file: see [`LocalIndex::absorb`].
#[derive(Clone, Copy)]
struct Since {
    /// The clear count when it listed the index files.
    clears: u64,
    /// Whether a file superseding one absorbed starts the sync again
    /// (not on its last attempt: both are listed while a prune runs).
    strict: bool,
    /// The file was found superseded, then still in the repository: it is
    /// absorbed all the same.
    still_there: bool,
}

/// What [`LocalIndex::absorb`] did with an index file.
enum Absorbed {
    /// Its rows are in.
    Yes,
    /// It was absorbed already (by another process, since the listing).
    Already,
    /// An absorbed file supersedes it: it is gone, or going (if it is
    /// still there, the sync absorbs it all the same).
    Superseded,
    /// The database changed under the sync, which must list again.
    Stale,
}

/// What [`LocalIndex::sync`] did.
#[derive(Debug, Default, Clone)]
pub struct SyncStats {
    /// The database was cleared and rebuilt.
    pub rebuilt: bool,
    /// Index files read from the repository.
    pub files_loaded: usize,
    /// Blob entries added.
    pub blobs: usize,
    /// Index files left out because they are damaged (what `check`
    /// reports; `repair index` rebuilds them): their packs' blobs look
    /// absent, so a backup stores them again.
    pub damaged: Vec<String>,
    /// Index files listed but gone before they were read (replaced by a
    /// prune running meanwhile): the index may lack packs that live.
    pub vanished: usize,
}

/// What a backup starts from: see [`LocalIndex::backup_view`].
pub struct BackupView {
    /// The index as it is now.
    pub reader: IndexReader,
    /// The parent snapshot asked for is verified in `reader`: every blob it
    /// refers to is there.
    pub parent_verified: bool,
    /// How many times the database had been cleared (as
    /// [`LocalIndex::clear_count`] gives it).
    pub clears: u64,
}

#[cfg(test)]
mod tests;
