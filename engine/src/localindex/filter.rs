//! A negative filter over every blob ID in the local index: a blocked Bloom
//! filter held in memory and stored in the database in pages.
//!
//! A new chunk is looked up before it is stored; in an index of millions of
//! rows that lookup reads one random B-tree leaf, cold in a first backup.
//! The filter answers "certainly absent" for most new IDs from memory (5 bits
//! per blob when built, 6.1 MB for 10 M blobs and the next merge's rows). It is written in the same
//! transactions as the rows, so a row whose bits are not set is never
//! committed, but for rows of `fresh_blobs` absorbed with the pages deferred,
//! which are marked so (`filter_fresh_pending`) and asked for directly; the
//! in-memory copy only ever gains bits (a bit set for a row whose
//! transaction then failed makes a "maybe", never a miss).
//!
//! Blob IDs are keyed hashes, so their own bytes choose the block and the
//! bits: bytes 0-7 (big-endian) pick the 512-bit block, bytes 8-15
//! (little-endian) give [`PROBES`] 9-bit positions within it.

use std::sync::atomic::{AtomicU64, Ordering};

use redb::TableDefinition;

/// Page number -> [`PAGE_WORDS`] little-endian u64 words of filter bits
/// (the last page may be shorter).
pub(super) const FILTER: TableDefinition<u32, &[u8]> = TableDefinition::new("blob_filter");

const BLOCK_WORDS: usize = 8;
const BLOCK_BITS: u64 = (BLOCK_WORDS * 64) as u64;
/// Words per stored page: a page and its key fit one 32 KiB redb page, so a
/// cold load is a few hundred reads, not one per 4 KiB.
pub(super) const PAGE_WORDS: usize = 4032;
/// Bits set per blob.
const PROBES: u32 = 3;
/// Bits per blob when the filter is (re)built: about 10 % of absent IDs
/// answer "maybe". The filter is all of the memory a large index adds to a
/// backup, so it is kept lean.
const BUILD_BITS_PER_ROW: u64 = 5;
/// Below this (about 16 % "maybe") the filter is rebuilt bigger, so rebuilds,
/// a scan of every row, happen once per 1.25x growth.
const MIN_BITS_PER_ROW: u64 = 4;
/// The smallest filter is sized for this many rows (40 KiB).
const MIN_ROWS: u64 = 1 << 16;

/// The filter's bits.
pub(super) struct Filter {
    blocks: u64,
    words: Vec<AtomicU64>,
}

impl Filter {
    /// An empty filter sized for `rows` blobs.
    pub fn for_rows(rows: u64) -> Filter {
        let blocks = (rows.max(MIN_ROWS) * BUILD_BITS_PER_ROW).div_ceil(BLOCK_BITS);
        Filter::zeroed(blocks)
    }

    /// An empty filter of `blocks` blocks.
    pub fn zeroed(blocks: u64) -> Filter {
        let words = (0..blocks as usize * BLOCK_WORDS)
            .map(|_| AtomicU64::new(0))
            .collect();
        Filter { blocks, words }
    }

    /// Number of 512-bit blocks (recorded in `meta` as `filter_blocks`).
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Whether the filter still answers well for `rows` blobs.
    pub fn holds(&self, rows: u64) -> bool {
        holds(self.blocks, rows)
    }

    fn probes(&self, id: &[u8; 32]) -> (usize, [u32; PROBES as usize]) {
        probes(self.blocks, id)
    }

    /// Sets `id`'s bits; returns the page they are in.
    pub fn insert(&self, id: &[u8; 32]) -> u32 {
        let (base, bits) = self.probes(id);
        for b in bits {
            self.words[base + (b / 64) as usize].fetch_or(1 << (b % 64), Ordering::Relaxed);
        }
        (base / PAGE_WORDS) as u32
    }

    /// Whether `id` may be indexed; `false` is certain.
    pub fn may_contain(&self, id: &[u8; 32]) -> bool {
        let (base, bits) = self.probes(id);
        bits.iter().all(|&b| {
            self.words[base + (b / 64) as usize].load(Ordering::Relaxed) & (1 << (b % 64)) != 0
        })
    }

    /// Number of stored pages.
    pub fn pages(&self) -> u32 {
        pages_for(self.blocks)
    }

    /// The stored form of page `p`.
    pub fn page(&self, p: u32) -> Vec<u8> {
        let start = p as usize * PAGE_WORDS;
        let end = (start + PAGE_WORDS).min(self.words.len());
        self.words[start..end]
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .collect()
    }

    /// A filter of `blocks` blocks from its `stored` pages, in page order;
    /// `None` if they are not exactly the pages such a filter has.
    pub fn from_pages<B: AsRef<[u8]>>(
        blocks: u64,
        stored: u64,
        pages: impl Iterator<Item = (u32, B)>,
    ) -> Option<Filter> {
        // A damaged count must not make us allocate without bound, nor
        // more than the pages stored hold (a flipped digit asked for up to
        // 256 GiB, and the process was killed).
        if blocks == 0 || blocks > 1 << 32 || u64::from(pages_for(blocks)) != stored {
            return None;
        }
        let f = Filter::zeroed(blocks);
        let mut next = 0u32;
        for (p, bytes) in pages {
            let bytes = bytes.as_ref();
            let start = p as usize * PAGE_WORDS;
            let want = PAGE_WORDS.min(f.words.len().checked_sub(start)?);
            if p != next || bytes.len() != want * 8 {
                return None;
            }
            for (w, b) in f.words[start..start + want]
                .iter()
                .zip(bytes.chunks_exact(8))
            {
                w.store(
                    u64::from_le_bytes(b.try_into().expect("8 bytes")),
                    Ordering::Relaxed,
                );
            }
            next += 1;
        }
        (next == f.pages()).then_some(f)
    }
}

/// Whether a filter of `blocks` blocks still answers well for `rows` blobs.
pub(super) fn holds(blocks: u64, rows: u64) -> bool {
    rows.saturating_mul(MIN_BITS_PER_ROW) <= blocks * BLOCK_BITS
}

/// In a filter of `blocks` blocks: the index of the first word of `id`'s
/// block and its bit positions within the block.
fn probes(blocks: u64, id: &[u8; 32]) -> (usize, [u32; PROBES as usize]) {
    let prefix = u64::from_be_bytes(id[..8].try_into().expect("8 bytes"));
    let block = ((u128::from(prefix) * u128::from(blocks)) >> 64) as usize;
    let h = u64::from_le_bytes(id[8..16].try_into().expect("8 bytes"));
    let bits = std::array::from_fn(|i| ((h >> (9 * i)) & (BLOCK_BITS - 1)) as u32);
    (block * BLOCK_WORDS, bits)
}

/// Number of stored pages of a filter of `blocks` blocks.
pub(super) fn pages_for(blocks: u64) -> u32 {
    (blocks as usize * BLOCK_WORDS).div_ceil(PAGE_WORDS) as u32
}

/// The stored page of a filter of `blocks` blocks that holds `id`'s bits.
pub(super) fn page_of(blocks: u64, id: &[u8; 32]) -> u32 {
    (probes(blocks, id).0 / PAGE_WORDS) as u32
}

/// Sets `id`'s bits in `page`, the stored page [`page_of`] `id` of a filter
/// of `blocks` blocks, without the rest of the filter in memory (a small
/// index file absorbed by a process that has not loaded it). `false` if
/// `page` is not the size that page has.
pub(super) fn set_in_page(blocks: u64, page: &mut [u8], id: &[u8; 32]) -> bool {
    let (base, bits) = probes(blocks, id);
    let start = base / PAGE_WORDS * PAGE_WORDS;
    let words = (blocks as usize * BLOCK_WORDS - start).min(PAGE_WORDS);
    if page.len() != words * 8 {
        return false;
    }
    for b in bits {
        let byte = (base - start) * 8 + (b / 8) as usize;
        page[byte] |= 1 << (b % 8);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn never_hides_an_id_and_rules_most_others_out() {
        let rows = 50_000u64;
        let f = Filter::for_rows(rows);
        let ids: Vec<[u8; 32]> = (0..rows).map(|_| Id::random().0).collect();
        for id in &ids {
            f.insert(id);
        }
        assert!(ids.iter().all(|id| f.may_contain(id)));
        let maybe = (0..100_000)
            .filter(|_| f.may_contain(&Id::random().0))
            .count();
        // Sized for 65,536 rows at 5 bits: holding 50,000, about 7 %.
        assert!(
            maybe < 10_000,
            "{maybe} of 100000 absent IDs answered maybe"
        );
    }

    /// Bits set in a stored page are the bits `insert` sets in memory.
    #[test]
    fn setting_bits_in_a_stored_page_matches_the_filter_in_memory() {
        let f = Filter::for_rows(1_000_000);
        let g = Filter::for_rows(1_000_000);
        let mut pages: Vec<Vec<u8>> = (0..g.pages()).map(|p| g.page(p)).collect();
        for _ in 0..5000 {
            let id = Id::random().0;
            let p = f.insert(&id);
            assert_eq!(page_of(f.blocks(), &id), p);
            assert!(set_in_page(f.blocks(), &mut pages[p as usize], &id));
        }
        assert!((0..f.pages()).all(|p| f.page(p) == pages[p as usize]));
        let id = Id::random().0;
        let p = page_of(f.blocks(), &id) as usize;
        pages[p].pop();
        assert!(!set_in_page(f.blocks(), &mut pages[p], &id));
    }

    #[test]
    fn grows_before_it_gets_poor() {
        let f = Filter::for_rows(10_000_000);
        assert_eq!(f.blocks(), 97_657);
        assert!(f.holds(10_000_000) && f.holds(12_500_000) && !f.holds(12_501_000));
        assert!(Filter::for_rows(0).holds(MIN_ROWS));
    }

    #[test]
    fn round_trips_through_its_pages_and_refuses_damaged_ones() {
        let f = Filter::for_rows(1_000_000);
        let ids: Vec<[u8; 32]> = (0..1000).map(|_| Id::random().0).collect();
        for id in &ids {
            f.insert(id);
        }
        let pages: Vec<(u32, Vec<u8>)> = (0..f.pages()).map(|p| (p, f.page(p))).collect();
        assert!(pages.len() > 2);
        let load = |pages: &[(u32, Vec<u8>)], blocks| {
            Filter::from_pages(
                blocks,
                pages.len() as u64,
                pages.iter().map(|(p, b)| (*p, b)),
            )
        };
        let g = load(&pages, f.blocks()).expect("loads");
        assert!(ids.iter().all(|id| g.may_contain(id)));
        assert!((0..f.pages()).all(|p| g.page(p) == f.page(p)));

        assert!(load(&pages, f.blocks() + 1).is_none(), "other size");
        assert!(
            load(&pages, 1 << 31).is_none(),
            "a count its pages cannot hold"
        );
        assert!(load(&pages[1..], f.blocks()).is_none(), "page missing");
        assert!(
            load(&pages[..pages.len() - 1], f.blocks()).is_none(),
            "last missing"
        );
        let mut short = pages.clone();
        short[1].1.pop();
        assert!(load(&short, f.blocks()).is_none(), "short page");
        assert!(load(&pages, 0).is_none());
    }
}
