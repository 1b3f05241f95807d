//! Reading many blobs at once (restore, dump, copy).
//!
//! Reading blob by blob costs one request per blob: on S3 that is one
//! round trip per small file, on a disk one open and seek. A [`BulkReader`]
//! is told up front which blobs will be read, groups them by pack into a
//! few large ranges ("segments", neighbours merged across small gaps), and
//! fetches each segment once, shared by every thread that needs a blob in
//! it. A segment is dropped as soon as its last planned blob has been read,
//! and the least recently used ones go when the cache holds more than its
//! capacity, so memory stays bounded whatever the order of reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::FileKind;
use crate::blob::BlobLocation;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::localindex::IndexReader;
use crate::repository::Repository;

/// Blobs closer than this in one pack are fetched in one range: reading a
/// little unused data is cheaper than another request.
const MAX_GAP: u64 = 1 << 20;
/// Upper bound of one range request from a local disk.
const MAX_SEGMENT: u64 = 8 << 20;
/// Upper bound of one range request from a remote store, where each
/// request costs a round trip: 8 MiB ranges made an S3 restore of the
/// Linux tree about a third slower than 32 MiB ones.
const MAX_REMOTE_SEGMENT: u64 = 32 << 20;
/// Default bound on the fetched bytes held at once, raised to two ranges
/// per worker thread when ranges are large.
pub const DEFAULT_CAPACITY: usize = 32 << 20;

/// A byte range of one pack holding planned blobs.
struct Segment {
    start: u64,
    end: u64,
    /// Planned reads of blobs in this segment not yet served.
    uses: AtomicU64,
}

/// A segment in the cache: fetched once, by the first thread that needs it.
#[derive(Default)]
struct Slot {
    /// The segment's bytes, or `None` if fetching failed (blobs are then
    /// read one by one, which reports the error precisely).
    data: OnceLock<Option<Arc<Vec<u8>>>>,
    /// Bytes counted against the capacity (set once cached).
    size: AtomicUsize,
    last_used: AtomicU64,
}

#[derive(Default)]
struct Cache {
    slots: HashMap<(Id, usize), Arc<Slot>>,
    bytes: usize,
}

/// Reads planned blobs through shared, coalesced pack ranges.
pub struct BulkReader<'r> {
    repo: &'r Repository,
    /// One read view of the index for every lookup (a view per lookup
    /// cost a redb read transaction, four lock calls, per blob).
    index: IndexReader,
    /// Per pack, the planned segments sorted by offset.
    segments: HashMap<Id, Vec<Segment>>,
    cache: Mutex<Cache>,
    capacity: usize,
    clock: AtomicU64,
    requests: AtomicU64,
}

/// The blobs a [`BulkReader`] will be asked for, gathered one by one
/// (from several threads at once if need be: a restore plans the trees of
/// a snapshot in parallel).
pub struct Plan<'r> {
    repo: &'r Repository,
    index: IndexReader,
    ranges: Mutex<HashMap<Id, Vec<(u64, u64)>>>,
}

impl<'r> Plan<'r> {
    /// An empty plan.
    pub fn new(repo: &'r Repository) -> Result<Self> {
        Ok(Plan {
            repo,
            index: repo.index_reader()?,
            ranges: Mutex::new(HashMap::new()),
        })
    }

    /// The plan's read view of the index (for loading trees while planning).
    pub fn index(&self) -> &IndexReader {
        &self.index
    }

    /// Adds one read of blob `id` (a blob read twice is added twice).
    /// Blobs not in the index are left out: reading them reports the error.
    pub fn add(&self, id: &Id) -> Result<()> {
        self.add_all(std::slice::from_ref(id))
    }

    /// [`Plan::add`] for each of `ids` (a file's content), taking the lock
    /// once.
    pub fn add_all(&self, ids: &[Id]) -> Result<()> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            match self.index.locate(id) {
                Ok(loc) => {
                    let start = loc.blob.offset as u64;
                    found.push((loc.pack, (start, start + loc.blob.length as u64)));
                }
                Err(Error::Missing(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut ranges = self.ranges.lock().expect("plan ranges");
        for (pack, range) in found {
            ranges.entry(pack).or_default().push(range);
        }
        Ok(())
    }

    /// The reader for this plan, holding at most about `capacity` fetched
    /// bytes at once.
    pub fn into_reader(self, capacity: usize) -> BulkReader<'r> {
        // Room for two ranges per worker: with less, workers evict each
        // other's ranges and fetch them again and again (an S3 restore
        // with 32 MiB ranges and 32 MiB held took three times as long).
        let floor = 2 * rayon::current_num_threads() * self.max_segment() as usize;
        self.build(capacity.max(floor))
    }

    fn max_segment(&self) -> u64 {
        if self.repo.backend().is_remote() {
            MAX_REMOTE_SEGMENT
        } else {
            MAX_SEGMENT
        }
    }

    /// [`Plan::into_reader`] with exactly `capacity`.
    fn build(self, capacity: usize) -> BulkReader<'r> {
        let max_segment = self.max_segment();
        let segments = self
            .ranges
            .into_inner()
            .expect("plan ranges")
            .into_iter()
            .map(|(pack, mut r)| {
                r.sort_unstable();
                (pack, coalesce(&r, max_segment))
            })
            .collect();
        BulkReader {
            repo: self.repo,
            index: self.index,
            segments,
            cache: Mutex::new(Cache::default()),
            capacity,
            clock: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }
}

impl<'r> BulkReader<'r> {
    /// Plans the reads of `blobs` (an ID listed twice is read twice).
    pub fn new(repo: &'r Repository, blobs: impl IntoIterator<Item = Id>) -> Result<Self> {
        let plan = Plan::new(repo)?;
        for id in blobs {
            plan.add(&id)?;
        }
        Ok(plan.into_reader(DEFAULT_CAPACITY))
    }

    /// Range requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Reads, authenticates, decompresses and verifies a blob, like
    /// [`Repository::load_blob`].
    pub fn load_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.index.locate(id)?;
        let Some((idx, seg)) = self.segment_of(&loc) else {
            return self.repo.load_blob_at(&loc);
        };
        let key = (loc.pack, idx);
        let slot = self.slot(key);
        let data = slot
            .data
            .get_or_init(|| self.fetch(key, seg, &slot))
            .clone();
        let out = match data {
            Some(bytes) => {
                let from = (loc.blob.offset as u64 - seg.start) as usize;
                let ct = &bytes[from..from + loc.blob.length as usize];
                match self.repo.open_blob_at(&loc, ct) {
                    // Damaged in transit or in a cached copy: the one-blob
                    // path evicts and retries, and names what is damaged.
                    Err(Error::Corrupt { .. }) => self.repo.load_blob_at(&loc),
                    r => r,
                }
            }
            None => self.repo.load_blob_at(&loc),
        };
        let served = seg
            .uses
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_sub(1));
        if served == Ok(1) {
            self.drop_slot(key);
        }
        out
    }

    /// This reader's view of the index, taken when the plan was made.
    pub fn index(&self) -> &IndexReader {
        &self.index
    }

    fn segment_of(&self, loc: &BlobLocation) -> Option<(usize, &Segment)> {
        let segs = self.segments.get(&loc.pack)?;
        let off = loc.blob.offset as u64;
        let i = segs.partition_point(|s| s.start <= off).checked_sub(1)?;
        let s = &segs[i];
        (off + loc.blob.length as u64 <= s.end && s.uses.load(Ordering::Acquire) > 0)
            .then_some((i, s))
    }

    fn slot(&self, key: (Id, usize)) -> Arc<Slot> {
        let mut cache = self.cache.lock().expect("bulk read cache");
        let slot = cache.slots.entry(key).or_default().clone();
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        slot
    }

    fn fetch(&self, key: (Id, usize), seg: &Segment, slot: &Arc<Slot>) -> Option<Arc<Vec<u8>>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .repo
            .backend()
            .read_range(
                FileKind::Pack,
                &key.0.to_hex(),
                seg.start,
                seg.end - seg.start,
            )
            .ok()?;
        let mut cache = self.cache.lock().expect("bulk read cache");
        // Count it only if still cached (not dropped while being fetched).
        if cache.slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slot.size.store(bytes.len(), Ordering::Relaxed);
            cache.bytes += bytes.len();
            while cache.bytes > self.capacity {
                let victim = cache
                    .slots
                    .iter()
                    .filter(|(k, s)| **k != key && s.size.load(Ordering::Relaxed) > 0)
                    .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                    .map(|(k, _)| *k);
                let Some(victim) = victim else { break };
                remove(&mut cache, &victim);
            }
        }
        Some(Arc::new(bytes))
    }

    fn drop_slot(&self, key: (Id, usize)) {
        let mut cache = self.cache.lock().expect("bulk read cache");
        remove(&mut cache, &key);
    }
}

fn remove(cache: &mut Cache, key: &(Id, usize)) {
    if let Some(s) = cache.slots.remove(key) {
        cache.bytes -= s.size.load(Ordering::Relaxed);
    }
}

/// Merges sorted blob ranges (with repeats) into segments, counting the
/// planned reads of each.
fn coalesce(ranges: &[(u64, u64)], max_segment: u64) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for &(start, end) in ranges {
        match out.last_mut() {
            Some(s) if start <= s.end + MAX_GAP && end.max(s.end) - s.start <= max_segment => {
                s.end = s.end.max(end);
                *s.uses.get_mut() += 1;
            }
            _ => out.push(Segment {
                start,
                end,
                uses: AtomicU64::new(1),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::config::InitOptions;
    use crate::repository::test_repository;
    use crate::saver::BlobSaver;

    /// A repository on disk (1 MiB packs) holding `n` distinct blobs made
    /// by `make`.
    fn repo_with(
        dir: &std::path::Path,
        n: usize,
        make: impl Fn(usize) -> Vec<u8>,
    ) -> (Repository, Vec<(Id, Vec<u8>)>) {
        let opts = InitOptions {
            pack_size: 1 << 20,
            ..InitOptions::default()
        };
        let repo = test_repository(dir, opts);
        let saver = BlobSaver::new(&repo);
        let blobs: Vec<(Id, Vec<u8>)> = (0..n)
            .map(|i| {
                let data = make(i);
                (saver.save(BlobType::Data, &data).unwrap().0, data)
            })
            .collect();
        saver.flush().unwrap();
        (repo, blobs)
    }

    /// [`repo_with`] small compressible blobs.
    fn repo_with_blobs(dir: &std::path::Path, n: usize) -> (Repository, Vec<(Id, Vec<u8>)>) {
        repo_with(dir, n, |i| {
            format!("blob number {i} ").repeat(1 + i % 50).into_bytes()
        })
    }

    #[test]
    fn many_blobs_of_a_pack_cost_one_request_and_come_back_intact() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, blobs) = repo_with_blobs(dir.path(), 500);
        let reader = BulkReader::new(&repo, blobs.iter().map(|(id, _)| *id)).unwrap();
        for (id, data) in blobs.iter().rev() {
            assert_eq!(&reader.load_blob(id).unwrap(), data);
        }
        assert_eq!(reader.requests(), 1);
        // Served as planned: nothing stays cached.
        assert_eq!(reader.cache.lock().unwrap().bytes, 0);
        // A read beyond the plan still works, blob by blob.
        assert_eq!(reader.load_blob(&blobs[0].0).unwrap(), blobs[0].1);
    }

    #[test]
    fn a_tiny_capacity_refetches_but_stays_correct_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        // Incompressible 400 KiB blobs: a few 1 MiB packs, one segment each.
        let (repo, blobs) = repo_with(dir.path(), 8, |i| {
            let mut x = i as u64 + 1;
            (0..400 << 10)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        });
        let packs: std::collections::HashSet<Id> = blobs
            .iter()
            .map(|(id, _)| repo.locate(id).unwrap().pack)
            .collect();
        assert!(packs.len() >= 3, "{} packs", packs.len());
        // Every blob read twice, the second round after all the others,
        // with room for almost nothing: segments are fetched again.
        let order = || blobs.iter().chain(blobs.iter());
        let plan = Plan::new(&repo).unwrap();
        order().for_each(|(id, _)| plan.add(id).unwrap());
        let reader = plan.build(10);
        for (id, data) in order() {
            assert_eq!(&reader.load_blob(id).unwrap(), data);
            assert!(reader.cache.lock().unwrap().bytes <= 2 << 20);
        }
        assert!(reader.requests() > packs.len() as u64);
        assert_eq!(reader.cache.lock().unwrap().bytes, 0);
    }

    #[test]
    fn a_damaged_pack_names_the_blob_and_spares_the_others() {
        let dir = tempfile::tempdir().unwrap();
        // 8-80 KiB each: several group frames.
        let (repo, blobs) = repo_with(dir.path(), 50, |i| {
            format!("blob number {i:3} ")
                .repeat(500 + i * 100)
                .into_bytes()
        });
        let victim = repo.locate(&blobs[10].0).unwrap();
        let path = dir
            .path()
            .join("repo/data")
            .join(&victim.pack.to_hex()[..2])
            .join(victim.pack.to_hex());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[victim.blob.offset as usize + 5] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let reader = BulkReader::new(&repo, blobs.iter().map(|(id, _)| *id)).unwrap();
        // Small blobs share group frames: the damaged frame's members are
        // lost with it, every other blob reads back.
        let in_victim = |id: &Id| {
            let loc = repo.locate(id).unwrap();
            (loc.pack, loc.blob.offset) == (victim.pack, victim.blob.offset)
        };
        let mut spared = 0;
        for (i, (id, data)) in blobs.iter().enumerate() {
            match reader.load_blob(id) {
                Ok(got) => {
                    assert!(!in_victim(id), "blob {i} read from a damaged frame");
                    assert_eq!(&got, data);
                    spared += 1;
                }
                Err(Error::Corrupt { .. }) if in_victim(id) => {}
                Err(e) => panic!("blob {i}: {e}"),
            }
        }
        assert!(spared > 0, "no frame besides the damaged one");
        assert!(matches!(
            reader.load_blob(&blobs[10].0),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn neighbours_merge_and_far_blobs_do_not() {
        let r = [(0, 10), (0, 10), (20, 30), (30 + MAX_GAP + 1, 40 + MAX_GAP)];
        let s = coalesce(&r, MAX_SEGMENT);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].start, s[0].end), (0, 30));
        assert_eq!(s[0].uses.load(Ordering::Relaxed), 3);
        assert_eq!((s[1].start, s[1].end), (30 + MAX_GAP + 1, 40 + MAX_GAP));
    }

    #[test]
    fn segments_stay_under_the_request_limit() {
        let step = 4 << 20;
        let r: Vec<(u64, u64)> = (0..20).map(|i| (i * step, (i + 1) * step)).collect();
        let s = coalesce(&r, MAX_SEGMENT);
        assert!(s.iter().all(|s| s.end - s.start <= MAX_SEGMENT));
        assert_eq!(s.len(), (20 * step).div_ceil(MAX_SEGMENT) as usize);
    }
}
