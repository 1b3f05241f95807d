//! Storing new blobs: dedup, compress, encrypt, pack, index.
//!
//! Shared by every worker thread of a backup. Ordering follows the write
//! invariants: a pack is verified and durable before the index file naming
//! it is written, and an index file is durable before the local index (and
//! so any later dedup decision) relies on it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use crate::backend::FileKind;
use crate::blob::{BlobType, PackedBlob};
use crate::compress;
use crate::envelope::{ObjectKind, seal_msgpack};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::{IndexFile, IndexPack};
use crate::localindex::IndexReader;
use crate::lock::LockGuard;
use crate::pack::{self, PackBody, PackWriter};
use crate::repository::Repository;

/// Packs accumulated before an index file is written.
const PACKS_PER_INDEX_FILE: usize = 32;
/// Blobs accumulated before an index file is written, whatever the number
/// of packs: the index of a tree of small files is written while the
/// backup goes on, instead of all of it (80,000 entries for the Linux
/// tree) by one thread after the last file. The blobs waiting for an
/// index file are held in memory twice (their entries, and their IDs as
/// claimed), so this also bounds what a first backup holds with a big
/// index: one file at the end for 83,000 new blobs into 10 M held 9 MB
/// more, and its rows took 0.2 s to insert where the files while the
/// backup goes on cost little ([`crate::localindex`]'s `fresh_blobs`).
const BLOBS_PER_INDEX_FILE: usize = 16_384;
/// A pack is closed at this many blobs whatever its size, so its header
/// stays far below the 64 MiB readers accept.
pub(crate) const MAX_BLOBS_PER_PACK: usize = 100_000;
/// Full packs waiting to be written or being written, beyond which savers
/// wait before adding more: each is a pack's size in memory (or, spooled,
/// on the repository's disk), and on a slow disk (or a busy one) every
/// worker thread could otherwise hold one.
const MAX_QUEUED_PACKS: usize = 2;
/// The same for remote stores, where uploads in parallel pay.
const MAX_QUEUED_PACKS_REMOTE: usize = 4;
/// Data blobs below this size are compressed in groups (format version 3):
/// alone, each small blob's frame starts cold, which cost a third of a first
/// backup's CPU and a tenth of its size (docs/benchmarks.md).
const GROUP_BLOB_MAX: usize = 256 << 10;
/// A group is compressed once it holds this many bytes, so a frame decodes
/// to less than `GROUP_TARGET + GROUP_BLOB_MAX` (what a reader of one small
/// file decodes).
const GROUP_TARGET: usize = 128 << 10;

/// Small data blobs waiting to be compressed together.
#[derive(Default)]
struct Group {
    /// Their plaintexts, back to back.
    plain: Vec<u8>,
    /// Their IDs and lengths, in order.
    members: Vec<(Id, u32)>,
}

/// Groups a saver fills at once: one per worker of a backup by default
/// (twice the CPUs, at least 4, read files; with more, workers share), at
/// least 8. With one group for all, a group held several workers' files
/// interleaved, from as many places in the tree: the Linux tree stored 1 %
/// larger (234.4 against 232.0 MB) into an empty repository, and 2 % larger
/// (236.4 MB) into the 10 M-blob one, whose lookups make the workers' turns
/// interleave finer. Each open group holds at most 384 KiB.
fn group_slots() -> usize {
    std::thread::available_parallelism().map_or(8, |n| (n.get() * 2).max(8))
}

/// Numbers savers apart for [`GROUP_SLOT`] (0: none yet).
static SAVERS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The saver (its number) this thread last saved a small blob with,
    /// and its group slot there.
    static GROUP_SLOT: std::cell::Cell<(u64, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// What a saver does about the compression dictionary (see [`crate::dict`]).
enum DictState {
    /// Not looked at yet: the first small data blob decides.
    Unknown,
    /// No dictionary: format version 1, compression off, training failed,
    /// or a saver that only moves stored blobs.
    Off,
    /// The repository has none: small data blobs are kept as samples until
    /// there are enough to train one. Until then blobs go without.
    Collecting { buf: Vec<u8>, sizes: Vec<usize> },
    /// One worker is training and storing it; the others go on without.
    Training,
    /// Small data blobs are compressed with this one.
    Ready(Arc<crate::dict::Dictionary>),
}

/// Saves blobs into a repository, deduplicating against its index and
/// against blobs saved earlier in the same session.
pub struct BlobSaver<'r> {
    repo: &'r Repository,
    /// Blobs saved in this session that the local index does not know yet.
    pending: Mutex<HashSet<Id>>,
    /// A read view of the local index shared by the workers for dedup
    /// lookups (a read transaction per lookup costs file-lock calls and a
    /// header read), with the [`BlobSaver::generation`] it was taken at.
    view: RwLock<Option<(Arc<IndexReader>, u64)>>,
    /// Index files this saver has added to the local index. A blob leaves
    /// `pending` only together with a step of this count (under the
    /// `pending` lock), so a worker whose view predates the step can tell
    /// that its "not indexed" may be out of date, and looks again.
    generation: AtomicU64,
    data: Mutex<Option<PackWriter>>,
    tree: Mutex<Option<PackWriter>>,
    /// The groups being filled (see [`GROUP_BLOB_MAX`]), one per worker
    /// slot (see [`BlobSaver::group_slot`]).
    groups: Vec<Mutex<Group>>,
    /// Slots handed to workers so far.
    slots_given: AtomicUsize,
    /// This saver's number, told apart from others' in [`GROUP_SLOT`].
    number: u64,
    unindexed: Mutex<Vec<IndexPack>>,
    /// Full packs not written yet (see [`MAX_QUEUED_PACKS`]).
    queued: Mutex<usize>,
    /// Signalled when a queued pack has been written (or failed).
    dequeued: Condvar,
    dedup_against_index: bool,
    /// Count what would be stored, store nothing (a dry run).
    counting: bool,
    lock: Option<&'r LockGuard>,
    /// What each index file it writes names in `supersedes`.
    supersedes: Vec<Id>,
    /// Bytes written to packs so far.
    pub bytes_written: AtomicU64,
    /// Blobs stored so far.
    pub blobs_added: AtomicU64,
    /// Index files written so far (their bytes are in `bytes_written`).
    pub index_files_written: AtomicU64,
    /// Data blobs given to `save` (see [`crate::localindex::WARM_AFTER_DATA_BLOBS`]).
    data_saves: AtomicU64,
    dict: Mutex<DictState>,
}

/// Takes a written pack off [`BlobSaver::queued`] when dropped.
struct Dequeue<'a, 'r>(&'a BlobSaver<'r>);

impl Drop for Dequeue<'_, '_> {
    fn drop(&mut self) {
        *self.0.queued.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.dequeued.notify_all();
    }
}

impl<'r> BlobSaver<'r> {
    /// A saver for `repo`.
    pub fn new(repo: &'r Repository) -> BlobSaver<'r> {
        BlobSaver {
            repo,
            pending: Mutex::new(HashSet::new()),
            view: RwLock::new(None),
            generation: AtomicU64::new(0),
            data: Mutex::new(None),
            tree: Mutex::new(None),
            groups: (0..group_slots()).map(|_| Mutex::default()).collect(),
            slots_given: AtomicUsize::new(0),
            number: SAVERS.fetch_add(1, Ordering::Relaxed),
            unindexed: Mutex::new(Vec::new()),
            queued: Mutex::new(0),
            dequeued: Condvar::new(),
            dedup_against_index: true,
            counting: false,
            lock: None,
            supersedes: Vec::new(),
            bytes_written: AtomicU64::new(0),
            blobs_added: AtomicU64::new(0),
            index_files_written: AtomicU64::new(0),
            data_saves: AtomicU64::new(0),
            dict: Mutex::new(DictState::Unknown),
        }
    }

    /// Makes every index file conditional on `lock` still being held: a
    /// process that stalled until its lock was judged stale (and a prune may
    /// have deleted its unindexed packs) must not index them afterwards.
    pub fn with_lock(mut self, lock: &'r LockGuard) -> BlobSaver<'r> {
        self.lock = Some(lock);
        self
    }

    /// Names `files` in the `supersedes` of every index file it writes
    /// (prune's repacked blobs): a sync that loaded one of those files
    /// before the prune deleted it then knows not to absorb it.
    pub fn superseding(mut self, files: Vec<Id>) -> BlobSaver<'r> {
        self.supersedes = files;
        self
    }

    /// A saver that stores blobs even if the index already has them (used
    /// by prune to copy live blobs out of packs it is about to delete).
    pub fn without_index_dedup(repo: &'r Repository) -> BlobSaver<'r> {
        BlobSaver {
            dedup_against_index: false,
            dict: Mutex::new(DictState::Off),
            ..BlobSaver::new(repo)
        }
    }

    /// A saver that writes nothing: it deduplicates and compresses as
    /// [`BlobSaver::new`] does and counts in [`BlobSaver::bytes_written`]
    /// and [`BlobSaver::blobs_added`] what it would store (blob bytes as
    /// stored, without pack headers and index files), for a dry run. It
    /// uses the repository's dictionary if there is one, and trains none.
    pub fn counting(repo: &'r Repository) -> BlobSaver<'r> {
        BlobSaver {
            counting: true,
            ..BlobSaver::new(repo)
        }
    }

    /// Stores `plaintext` as a blob of `blob_type` unless it is already
    /// stored; returns its ID and whether it was new.
    pub fn save(&self, blob_type: BlobType, plaintext: &[u8]) -> Result<(Id, bool)> {
        let key = self.repo.key();
        // Offsets and lengths in a pack are u32: the blob must fit after a full pack.
        if plaintext.len() > (u32::MAX - self.repo.config().pack_size - 1024) as usize {
            return Err(crate::error::Error::InvalidInput(format!(
                "a {blob_type:?} blob of {} bytes is too large for the format (offsets are 32-bit)",
                plaintext.len()
            )));
        }
        let id = key.blob_id(plaintext);
        if blob_type == BlobType::Data
            && self.dedup_against_index
            && !self.counting
            && self.data_saves.fetch_add(1, Ordering::Relaxed) + 1
                == crate::localindex::WARM_AFTER_DATA_BLOBS
        {
            // Much data to store: its lookups and index files read the
            // local index's newer rows.
            self.repo.index().warm();
        }
        if !self.claim(&id)? {
            return Ok((id, false));
        }
        if blob_type == BlobType::Data
            && plaintext.len() < GROUP_BLOB_MAX
            && self.repo.groups_allowed()
        {
            let full = {
                let mut g = self.groups[self.group_slot()].lock().expect("group");
                g.plain.extend_from_slice(plaintext);
                g.members.push((id, plaintext.len() as u32));
                (g.plain.len() >= GROUP_TARGET).then(|| std::mem::take(&mut *g))
            };
            if let Some(g) = full {
                self.seal_group(g)?;
            }
            return Ok((id, true));
        }
        let level = self.repo.config().compression_level;
        let dict = if blob_type == BlobType::Data && plaintext.len() < crate::dict::MAX_DICT_BLOB {
            self.dictionary_for(plaintext)
        } else {
            None
        };
        let (c, stored) = match dict {
            Some(d) => compress::compress_with_dict(plaintext, level, &d),
            None => compress::compress(plaintext, level),
        };
        self.store(blob_type, id, plaintext.len() as u32, c, &stored)?;
        Ok((id, true))
    }

    /// This thread's group slot (of [`group_slots`]), the same for all its
    /// saves, so that a group holds the files one worker took, in order:
    /// neighbours in a directory, which compress together best.
    fn group_slot(&self) -> usize {
        GROUP_SLOT.with(|c| match c.get() {
            (saver, slot) if saver == self.number => slot,
            _ => {
                let slot = self.slots_given.fetch_add(1, Ordering::Relaxed) % self.groups.len();
                c.set((self.number, slot));
                slot
            }
        })
    }

    /// Compresses a full group into one frame and adds it to the data pack
    /// (or counts it). A group zstd cannot shrink is stored member by member
    /// as it is.
    fn seal_group(&self, g: Group) -> Result<()> {
        let level = self.repo.config().compression_level;
        let Some(frame) = compress::compress_group(&g.plain, level) else {
            let mut at = 0;
            for &(id, len) in &g.members {
                let plain = &g.plain[at..at + len as usize];
                at += len as usize;
                self.store(BlobType::Data, id, len, compress::Compression::None, plain)?;
            }
            return Ok(());
        };
        if self.counting {
            self.count(frame.len(), g.members.len());
            return Ok(());
        }
        self.append(BlobType::Data, g.members.len(), |w| {
            w.add_group(&g.members, &frame)
        })
    }

    /// Adds (or counts) one blob in its stored form.
    fn store(
        &self,
        blob_type: BlobType,
        id: Id,
        raw_length: u32,
        c: compress::Compression,
        stored: &[u8],
    ) -> Result<()> {
        if self.counting {
            self.count(stored.len(), 1);
            return Ok(());
        }
        self.append(blob_type, 1, |w| w.add(id, raw_length, c, stored))
    }

    /// Counts what a dry run would store: `n` blobs in `stored` bytes of
    /// ciphertext before its tag.
    fn count(&self, stored: usize, n: usize) {
        self.bytes_written
            .fetch_add((stored + crate::crypto::TAG_LEN) as u64, Ordering::Relaxed);
        self.blobs_added.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Stores a blob already in its stored form (as [`pack::open_stored`]
    /// returns it) without decompressing and compressing it again: prune
    /// moves live blobs this way. The new pack is still verified in full
    /// before it is written. Returns whether the blob was new.
    pub fn save_stored(&self, entry: &PackedBlob, stored: &[u8]) -> Result<bool> {
        if entry.in_group() {
            // Its frame holds other blobs: a member is saved from its plaintext.
            return Err(Error::InvalidInput(format!(
                "blob {} is in a group frame and cannot be moved as stored",
                entry.id
            )));
        }
        if !self.claim(&entry.id)? {
            return Ok(false);
        }
        self.append(entry.blob_type, 1, |w| {
            w.add(entry.id, entry.raw_length, entry.compression, stored)
        })?;
        Ok(true)
    }

    /// The dictionary for a small data blob, if there is one yet. While the
    /// repository has none, keeps the blob as a training sample; the worker
    /// whose sample completes the budget trains and stores the dictionary
    /// (the others carry on without it meanwhile, so training never stalls
    /// the backup). Failing to make one only means going without.
    fn dictionary_for(&self, plaintext: &[u8]) -> Option<Arc<crate::dict::Dictionary>> {
        let mut state = self.dict.lock().expect("dict state");
        if matches!(*state, DictState::Unknown) {
            *state = if !self.repo.dictionaries_allowed() {
                DictState::Off
            } else {
                match self.repo.writer_dictionary() {
                    Ok(Some(d)) => DictState::Ready(d),
                    // Training would store one.
                    Ok(None) if self.counting => DictState::Off,
                    Ok(None) => DictState::Collecting {
                        buf: Vec::with_capacity(
                            crate::dict::SAMPLE_BUDGET + crate::dict::MAX_SAMPLE,
                        ),
                        sizes: Vec::new(),
                    },
                    Err(_) => DictState::Off,
                }
            };
        }
        let samples = match &mut *state {
            DictState::Ready(d) => return Some(d.clone()),
            DictState::Off | DictState::Training | DictState::Unknown => return None,
            DictState::Collecting { buf, sizes } => {
                if plaintext.len() >= crate::dict::MAX_SAMPLE {
                    return None;
                }
                buf.extend_from_slice(plaintext);
                sizes.push(plaintext.len());
                if buf.len() < crate::dict::SAMPLE_BUDGET {
                    return None;
                }
                std::mem::replace(&mut *state, DictState::Training)
            }
        };
        drop(state);
        let DictState::Collecting { buf, sizes } = samples else {
            unreachable!("taken from Collecting")
        };
        let level = self.repo.config().compression_level;
        let made = crate::dict::train(&buf, &sizes, level)
            .and_then(|bytes| self.repo.store_dictionary(bytes).ok());
        let mut state = self.dict.lock().expect("dict state");
        *state = match &made {
            Some(d) => DictState::Ready(d.clone()),
            None => DictState::Off,
        };
        made
    }

    /// Lets `put` append `n` blobs to the open pack of `blob_type`, writing
    /// the pack out when it is full.
    fn append(
        &self,
        blob_type: BlobType,
        n: usize,
        put: impl FnOnce(&mut PackWriter),
    ) -> Result<()> {
        self.wait_for_room();
        let slot = match blob_type {
            BlobType::Data => &self.data,
            BlobType::Tree => &self.tree,
        };
        let full = {
            let mut guard = slot.lock().expect("packer");
            let w = guard.get_or_insert_with(|| self.new_pack(blob_type));
            put(w);
            // A pack whose spool failed is finished at once, to report why.
            if w.len() >= self.repo.config().pack_size as usize
                || w.count() >= MAX_BLOBS_PER_PACK
                || w.failed()
            {
                *self.queued.lock().expect("queued") += 1;
                guard.take()
            } else {
                None
            }
        };
        self.blobs_added.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(w) = full {
            // Dequeued when written, failed or unwinding, so no saver waits forever.
            self.write_pack(w, Some(Dequeue(self)))?;
        }
        Ok(())
    }

    /// An empty pack: spooled to the store's disk where it offers one (a
    /// local repository), so that filling and queued packs take no memory;
    /// in memory otherwise.
    fn new_pack(&self, blob_type: BlobType) -> PackWriter {
        let key = self.repo.key();
        match self.repo.backend().spool() {
            Some(file) => PackWriter::spooled(key, blob_type, file),
            None => PackWriter::new(key, blob_type),
        }
    }

    /// Waits while too many full packs are waiting for the store (in
    /// memory, or on its disk when spooled).
    /// The threads writing them never wait here, so they always finish.
    fn wait_for_room(&self) {
        let max = if self.repo.backend().is_remote() {
            MAX_QUEUED_PACKS_REMOTE
        } else {
            MAX_QUEUED_PACKS
        };
        let mut queued = self.queued.lock().expect("queued");
        while *queued >= max {
            queued = self.dequeued.wait(queued).expect("queued");
        }
    }

    /// Whether this saver is to store blob `id`: neither indexed (unless
    /// index dedup is off) nor already taken by another worker.
    fn claim(&self, id: &Id) -> Result<bool> {
        loop {
            let seen = if self.dedup_against_index {
                let (view, generation) = self.view()?;
                if view.contains(id)? {
                    return Ok(false);
                }
                Some(generation)
            } else {
                None
            };
            let mut pending = self.pending.lock().expect("pending");
            // An index file was added since the view was taken: `id` may
            // have left `pending` for it, unseen by the view. Look again.
            if seen.is_some_and(|g| g != self.generation.load(Ordering::SeqCst)) {
                continue;
            }
            return Ok(pending.insert(*id));
        }
    }

    /// The shared view of the local index and the generation it was taken
    /// at; a view older than the current generation is replaced.
    fn view(&self) -> Result<(Arc<IndexReader>, u64)> {
        let current = |v: &Option<(Arc<IndexReader>, u64)>| {
            v.as_ref()
                .filter(|(_, g)| *g == self.generation.load(Ordering::SeqCst))
                .cloned()
        };
        if let Some(v) = current(&self.view.read().expect("index view")) {
            return Ok(v);
        }
        let mut w = self.view.write().expect("index view");
        if let Some(v) = current(&w) {
            return Ok(v);
        }
        // The generation is read before the view is taken: a step after it
        // makes the view look older than it is (a needless second look),
        // never newer.
        let generation = self.generation.load(Ordering::SeqCst);
        let view = Arc::new(self.repo.index_reader()?);
        *w = Some((view.clone(), generation));
        Ok((view, generation))
    }

    /// Verifies and stores a full pack, then writes an index file if
    /// enough packs wait for one. `queued` is the pack's place in the queue
    /// of full packs, given up once the pack is stored: the index file that
    /// may follow (slow with a big local index on a cold disk) holds neither
    /// the pack's memory nor other savers back.
    fn write_pack(&self, w: PackWriter, queued: Option<Dequeue<'_, 'r>>) -> Result<()> {
        let finished = w.finish()?;
        pack::verify_finished(self.repo.key(), &finished, self.repo)?;
        let (backend, name) = (self.repo.backend(), finished.id.to_hex());
        match &finished.body {
            PackBody::Memory(bytes) => backend.write(FileKind::Pack, &name, bytes)?,
            PackBody::Spooled { file, len } => {
                backend.write_file(FileKind::Pack, &name, file, *len)?;
            }
        }
        let size = finished.len();
        let pack::FinishedPack { id, body, entries } = finished;
        drop(body);
        drop(queued);
        self.bytes_written.fetch_add(size, Ordering::Relaxed);
        let ready = {
            let mut u = self.unindexed.lock().expect("unindexed");
            u.push(IndexPack {
                id,
                size,
                blobs: entries,
            });
            if u.len() >= PACKS_PER_INDEX_FILE
                || u.iter().map(|p| p.blobs.len()).sum::<usize>() >= BLOBS_PER_INDEX_FILE
            {
                std::mem::take(&mut *u)
            } else {
                Vec::new()
            }
        };
        self.write_index(ready)
    }

    fn write_index(&self, packs: Vec<IndexPack>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let file = IndexFile {
            packs,
            supersedes: self.supersedes.clone(),
        };
        let data = seal_msgpack(self.repo.key(), ObjectKind::Index, &file);
        let id = Id::of_object(&data);
        // Read before the file exists: see `add_index_file_deferred`.
        let clears = self.repo.index().clear_count()?;
        if let Some(lock) = self.lock {
            lock.check()?;
        }
        self.repo
            .backend()
            .write(FileKind::Index, &id.to_hex(), &data)?;
        if let Some(lock) = self.lock
            && let Err(e) = lock.check()
        {
            // Lost while writing: take the index file back rather than let
            // it name packs a prune may already have deleted.
            if let Err(d) = self.repo.backend().delete(FileKind::Index, &id.to_hex()) {
                return Err(Error::Locked(format!(
                    "{e}; the index file {id} written just before could not be taken back \
                     ({d}): run `cairn repair index` (with a full key) before the next backup"
                )));
            }
            return Err(e);
        }
        self.bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.index_files_written.fetch_add(1, Ordering::Relaxed);
        // Stored: not held while the local index takes the file in.
        drop(data);
        // Its filter pages are written once, at the end (`flush`).
        // Not absorbed (cleared since): its blobs leave `pending` all the
        // same; one saved again is stored again, which costs room only.
        self.repo
            .index()
            .add_index_file_deferred(&id, &file, clears)?;
        // Only now may the local index answer for these blobs; a view taken
        // from now on includes this file, and older ones are retired.
        let mut pending = self.pending.lock().expect("pending");
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.view.write().expect("index view") = None;
        for p in &file.packs {
            for b in &p.blobs {
                pending.remove(&b.id);
            }
        }
        Ok(())
    }

    /// Writes the partly filled packs and the remaining index entries.
    /// Call once, after the last `save`, before anything refers to the blobs.
    pub fn flush(&self) -> Result<()> {
        for slot in &self.groups {
            let group = std::mem::take(&mut *slot.lock().expect("group"));
            if !group.members.is_empty() {
                self.seal_group(group)?;
            }
        }
        if self.counting {
            return Ok(());
        }
        for slot in [&self.data, &self.tree] {
            let w = slot.lock().expect("packer").take();
            if let Some(w) = w.filter(|w| !w.is_empty()) {
                self.write_pack(w, None)?;
            }
        }
        let rest = std::mem::take(&mut *self.unindexed.lock().expect("unindexed"));
        self.write_index(rest)?;
        // Every index file written was absorbed with its pages deferred.
        if self.index_files_written.load(Ordering::Relaxed) > 0 {
            // Only time is at stake: until a later command writes the pages,
            // readers ask the fresh rows directly.
            let _ = self.repo.index().settle_filter();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::test_repository;

    /// A local store whose spool cannot be written (a disk that fails).
    struct FailingSpool {
        inner: crate::backend::LocalBackend,
        read_only: std::path::PathBuf,
    }

    impl crate::backend::Backend for FailingSpool {
        crate::backend::forward_to_inner!(
            location,
            create,
            list,
            read,
            read_range,
            write,
            delete,
            stored_size
        );
        fn spool(&self) -> Option<std::fs::File> {
            std::fs::File::open(&self.read_only).ok()
        }
    }

    #[test]
    fn a_pack_whose_spool_fails_fails_the_save_at_once_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let read_only = dir.path().join("spool");
        std::fs::write(&read_only, b"").unwrap();
        let store = FailingSpool {
            inner: crate::backend::LocalBackend::new(dir.path().join("repo")),
            read_only,
        };
        let opts = crate::config::InitOptions {
            kdf: crate::keyfile::KdfParams::INSECURE_TEST,
            ..Default::default()
        };
        let repo = Repository::init(
            Arc::new(store),
            b"pw",
            &opts,
            &crate::repository::OpenOptions::default(),
        )
        .unwrap();
        let saver = BlobSaver::new(&repo);
        // The first save that spills (a blob over a megabyte) reports the
        // lost write, rather than the pack taking blobs until it is full.
        let mut big = vec![0u8; 3 << 20];
        blake3::Hasher::new().finalize_xof().fill(&mut big);
        let e = saver.save(BlobType::Data, &big).unwrap_err();
        assert!(e.to_string().contains("spooled"), "{e}");
        assert!(repo.backend().list(FileKind::Pack).unwrap().is_empty());
    }

    #[test]
    fn a_worker_with_a_view_older_than_an_index_file_does_not_store_its_blobs_again() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repository(dir.path(), Default::default());
        let saver = BlobSaver::new(&repo);
        // One worker takes its view of the index...
        let (stale, generation) = saver.view().unwrap();
        // ...while another stores a blob and its index file, which takes
        // the blob out of `pending`.
        let (id, new) = saver.save(BlobType::Data, b"the same chunk").unwrap();
        assert!(new);
        saver.flush().unwrap();
        assert!(saver.pending.lock().unwrap().is_empty());
        // The first worker now asks with its old view: not indexed there,
        // not pending any more. It must look again, not store it twice.
        *saver.view.write().unwrap() = Some((stale.clone(), generation));
        assert!(!stale.contains(&id).unwrap(), "the view predates the blob");
        assert!(!saver.claim(&id).unwrap(), "stored twice");
        let (again, new) = saver.save(BlobType::Data, b"the same chunk").unwrap();
        assert_eq!((again, new), (id, false));
    }

    #[test]
    fn each_worker_fills_a_group_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repository(dir.path(), Default::default());
        assert!(repo.groups_allowed());
        let saver = BlobSaver::new(&repo);
        let workers = 4;
        let turn = std::sync::Barrier::new(workers);
        // Each worker saves its next small file only once every worker has
        // saved its last: as interleaved as workers can be.
        let saved: Vec<Vec<Id>> = std::thread::scope(|s| {
            let running: Vec<_> = (0..workers)
                .map(|w| {
                    let (saver, turn) = (&saver, &turn);
                    s.spawn(move || {
                        (0..40)
                            .map(|i| {
                                turn.wait();
                                let file = format!("worker {w}, file {i}; ").repeat(300);
                                saver.save(BlobType::Data, file.as_bytes()).unwrap().0
                            })
                            .collect()
                    })
                })
                .collect();
            running.into_iter().map(|r| r.join().unwrap()).collect()
        });
        saver.flush().unwrap();
        // A frame is its pack and offset.
        let frames = |ids: &[Id]| -> HashSet<(Id, u32)> {
            ids.iter()
                .map(|id| {
                    let at = repo.index().lookup(id).unwrap().expect("indexed");
                    assert_eq!(at.blob.compression, crate::compress::Compression::ZstdGroup);
                    (at.pack, at.blob.offset)
                })
                .collect()
        };
        let each: Vec<HashSet<(Id, u32)>> = saved.iter().map(|ids| frames(ids)).collect();
        let all: HashSet<(Id, u32)> = each.iter().flatten().copied().collect();
        // About 220 KiB each: a full group and the rest.
        assert!(each.iter().all(|f| f.len() >= 2), "{each:?}");
        assert_eq!(
            all.len(),
            each.iter().map(HashSet::len).sum::<usize>(),
            "a frame holds files of two workers"
        );
    }
}
