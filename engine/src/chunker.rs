//! Content-defined chunking (FastCDC 2020), keyed by a seed from the master key.

use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Chunk size bounds, stored in the repository config so that every client
/// of a repository cuts identically (and therefore deduplicates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Algorithm name; `fastcdc-2020` is the only one in format v1.
    pub algorithm: String,
    /// Smallest chunk, bytes.
    pub min_size: u32,
    /// Target average chunk, bytes.
    pub avg_size: u32,
    /// Largest chunk, bytes.
    pub max_size: u32,
    /// FastCDC normalization level (0..=3).
    pub normalization: u8,
}

impl Default for ChunkerParams {
    /// The defaults measured in `docs/chunking.md`.
    fn default() -> Self {
        ChunkerParams {
            algorithm: "fastcdc-2020".into(),
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
            normalization: 1,
        }
    }
}

impl ChunkerParams {
    /// Checks the bounds FastCDC accepts.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let ok = self.algorithm == "fastcdc-2020"
            && (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.min_size.is_multiple_of(2)
            && self.avg_size.is_multiple_of(2)
            && self.max_size.is_multiple_of(2)
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "invalid chunker parameters {self:?}"
            )))
        }
    }

    fn level(&self) -> Normalization {
        match self.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }
}

/// Cuts a stream into chunks inside one window of twice the largest chunk:
/// the chunks of a batch are ranges of the window, so no chunk is copied
/// out and no buffer is allocated per chunk (fastcdc's `StreamCDC` copies
/// each chunk out and moves the rest of its buffer down after each one).
/// Cuts are those of `StreamCDC`: every cut is searched in at least
/// `max_size` bytes, or in all that is left.
pub struct ChunkWindow<R: Read> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    eof: bool,
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    gear: (Cow<'static, [u64]>, Cow<'static, [u64]>),
}

impl<R: Read> ChunkWindow<R> {
    /// A window over `reader` with the repository's parameters and seed.
    pub fn new(reader: R, params: &ChunkerParams, seed: u64) -> Self {
        let max = params.max_size as usize;
        ChunkWindow {
            reader,
            // Zeroed by the allocator: pages never read into cost nothing.
            buf: vec![0; 2 * max],
            start: 0,
            filled: 0,
            eof: false,
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max,
            masks: select_masks(params.avg_size as usize, params.level()),
            gear: get_gear_with_seed(seed),
        }
    }

    /// Cuts up to `n` more chunks into `out` (cleared first) as ranges of
    /// [`ChunkWindow::data`]; leaves `out` empty at the end of the stream.
    /// The ranges stay valid until the next call.
    pub fn next_batch(&mut self, n: usize, out: &mut Vec<Range<usize>>) -> std::io::Result<()> {
        out.clear();
        // Keep the uncut tail and fill the rest of the window.
        self.buf.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.start = 0;
        while !self.eof && self.filled < self.buf.len() {
            match self.reader.read(&mut self.buf[self.filled..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.filled += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while out.len() < n && self.start < self.filled {
            let left = self.filled - self.start;
            if left < self.max && !self.eof {
                break;
            }
            let end = self.start + left.min(self.max);
            let (_, len) = cut_gear(
                &self.buf[self.start..end],
                self.min,
                self.avg,
                self.max,
                self.masks.0,
                self.masks.1,
                self.masks.0 << 1,
                self.masks.1 << 1,
                &self.gear.0,
                &self.gear.1,
            );
            if len == 0 {
                break;
            }
            out.push(self.start..self.start + len);
            self.start += len;
        }
        Ok(())
    }

    /// The window the ranges of the last batch point into.
    pub fn data(&self) -> &[u8] {
        &self.buf
    }
}

/// Cuts a stream into chunks, one owned buffer per chunk (for callers that
/// keep chunks; [`ChunkWindow`] avoids the copies).
pub struct Chunker<R: Read> {
    window: ChunkWindow<R>,
    batch: Vec<Range<usize>>,
    next: usize,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader` with the repository's parameters and seed.
    pub fn new(reader: R, params: &ChunkerParams, seed: u64) -> Self {
        Chunker {
            window: ChunkWindow::new(reader, params, seed),
            batch: Vec::new(),
            next: 0,
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == self.batch.len() {
            self.next = 0;
            if let Err(e) = self.window.next_batch(usize::MAX, &mut self.batch) {
                self.batch.clear();
                return Some(Err(e));
            }
        }
        let r = self.batch.get(self.next)?.clone();
        self.next += 1;
        Some(Ok(self.window.data()[r].to_vec()))
    }
}

/// Cuts a stream into fixed `size`-byte chunks (the last may be shorter):
/// a captured database's pages stay at fixed offsets, so a fixed cut keeps
/// unchanged pages unchanged chunks.
pub struct FixedCuts<R: Read> {
    reader: R,
    size: usize,
}

impl<R: Read> FixedCuts<R> {
    /// Chunks of `size` bytes read from `reader`.
    pub fn new(reader: R, size: usize) -> Self {
        FixedCuts { reader, size }
    }
}

impl<R: Read> Iterator for FixedCuts<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut c = Vec::with_capacity(self.size);
        match (&mut self.reader)
            .take(self.size as u64)
            .read_to_end(&mut c)
        {
            Err(e) => Some(Err(e)),
            Ok(0) => None,
            Ok(_) => Some(Ok(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let p = ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
            ..Default::default()
        };
        p.validate().unwrap();
        let mut data = vec![0u8; 200_000];
        crate::crypto::fill_random(&mut data);
        let chunks: Vec<Vec<u8>> = Chunker::new(&data[..], &p, 42)
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(chunks.concat(), data);
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.len() >= 1024 && c.len() <= 16384);
        }
        // A different seed cuts differently.
        let other: Vec<usize> = Chunker::new(&data[..], &p, 43)
            .map(|c| c.unwrap().len())
            .collect();
        assert_ne!(other, chunks.iter().map(|c| c.len()).collect::<Vec<_>>());
    }

    /// The window cuts exactly where fastcdc's own streaming chunker does
    /// (repositories written before it must keep deduplicating), whatever
    /// the batch size and however short the reads.
    #[test]
    fn window_cuts_like_streamcdc() {
        struct Dribble<'a>(&'a [u8], usize);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(out.len()).min(self.1);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let p = ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
            ..Default::default()
        };
        let mut data = vec![0u8; 300_000];
        crate::crypto::fill_random(&mut data);
        // A long run of equal bytes forces maximum-size cuts.
        data[100_000..200_000].fill(7);
        for len in [0, 1, 1023, 1024, 16384, 16385, 40_000, 300_000] {
            let src = &data[..len];
            let want: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::with_level_and_seed(
                src,
                1024,
                4096,
                16384,
                p.level(),
                9,
            )
            .map(|c| c.unwrap().data)
            .collect();
            for (batch, step) in [(1, 7), (4, 5000), (usize::MAX, usize::MAX)] {
                let mut w = ChunkWindow::new(Dribble(src, step), &p, 9);
                let mut got = Vec::new();
                let mut ranges = Vec::new();
                loop {
                    w.next_batch(batch, &mut ranges).unwrap();
                    if ranges.is_empty() {
                        break;
                    }
                    assert!(ranges.len() <= batch);
                    got.extend(ranges.iter().map(|r| w.data()[r.clone()].to_vec()));
                }
                assert_eq!(got, want, "len {len}, batch {batch}, reads of {step}");
            }
            let iter: Vec<Vec<u8>> = Chunker::new(src, &p, 9).map(|c| c.unwrap()).collect();
            assert_eq!(iter, want);
        }
    }
}
