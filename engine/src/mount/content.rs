//! Random access to a file's content: an offset table over its chunks.
//!
//! A file is the concatenation of its data blobs. When it is opened, the
//! index gives every blob's plaintext length; their running sum is the
//! offset table, and a read at any offset finds its first chunk by binary
//! search and fetches only the chunks it overlaps.

use crate::blob::BlobLocation;
use crate::error::{Error, Result};
use crate::mount::cache::BlobCache;
use crate::repository::Repository;
use crate::tree::Node;

/// The chunks of one file and where each starts.
#[derive(Debug)]
pub struct FileContent {
    blobs: Vec<BlobLocation>,
    /// `starts[i]` is the file offset of the first byte of `blobs[i]`.
    starts: Vec<u64>,
    size: u64,
}

impl FileContent {
    /// Builds the offset table of `node` from the index. `what` names the
    /// file in errors.
    pub fn new(repo: &Repository, node: &Node, what: &str) -> Result<FileContent> {
        let mut blobs = Vec::with_capacity(node.content.len());
        let mut starts = Vec::with_capacity(node.content.len());
        let mut size = 0u64;
        // One read view for all the chunks (a view per lookup is a transaction).
        let index = repo.index_reader()?;
        for id in &node.content {
            let loc = index.locate(id)?;
            starts.push(size);
            size += u64::from(loc.blob.raw_length);
            blobs.push(loc);
        }
        if size != node.size {
            return Err(Error::corrupt(
                format!("file {what}"),
                format!(
                    "its chunks hold {size} bytes but the snapshot records {}",
                    node.size
                ),
            ));
        }
        Ok(FileContent {
            blobs,
            starts,
            size,
        })
    }

    /// The file's length.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Index of the chunk holding byte `offset` (which must be below the size).
    fn chunk_at(&self, offset: u64) -> usize {
        self.starts.partition_point(|&s| s <= offset) - 1
    }

    /// Reads up to `len` bytes at `offset` (fewer only at the end of the
    /// file). Returns the bytes and the index of the last chunk touched.
    pub fn read(
        &self,
        repo: &Repository,
        cache: &BlobCache,
        offset: u64,
        len: usize,
    ) -> Result<(Vec<u8>, Option<usize>)> {
        if offset >= self.size || len == 0 {
            return Ok((Vec::new(), None));
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut i = self.chunk_at(offset);
        let mut last = i;
        let mut pos = offset;
        while pos < end {
            let data = cache.get(repo, &self.blobs[i])?;
            let from = (pos - self.starts[i]) as usize;
            let to = ((end - self.starts[i]) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
            pos += (to - from) as u64;
            last = i;
            i += 1;
        }
        Ok((out, Some(last)))
    }

    /// The chunks after `chunk` worth loading ahead of a sequential reader:
    /// up to `n` that are not cached yet.
    pub fn ahead(&self, cache: &BlobCache, chunk: usize, n: usize) -> Vec<BlobLocation> {
        self.blobs
            .iter()
            .skip(chunk + 1)
            .take(n)
            .filter(|b| !cache.contains(&b.blob.id))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobType;
    use crate::repository::test_repository;
    use crate::saver::BlobSaver;
    use crate::tree::NodeKind;

    #[test]
    fn reads_at_any_offset_fetch_only_the_chunks_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repository(dir.path(), Default::default());
        // Chunks of uneven sizes, including a one-byte one.
        let chunks: Vec<Vec<u8>> = [1000usize, 1, 4096, 3000]
            .iter()
            .enumerate()
            .map(|(k, n)| (0..*n).map(|i| (i * 7 + k * 13) as u8).collect())
            .collect();
        let whole: Vec<u8> = chunks.concat();
        let saver = BlobSaver::new(&repo);
        let mut node = Node::new(b"f".to_vec(), NodeKind::File);
        for c in &chunks {
            node.content.push(saver.save(BlobType::Data, c).unwrap().0);
        }
        saver.flush().unwrap();
        node.size = whole.len() as u64;

        let f = FileContent::new(&repo, &node, "f").unwrap();
        assert_eq!(f.size(), whole.len() as u64);
        let cache = BlobCache::new(1 << 20);
        for (off, len) in [
            (0, 10),
            (995, 10),
            (1000, 1),
            (1000, 2),
            (1001, 5000),
            (8000, 1000),
            (0, 100_000),
            (8097, 1),
        ] {
            let (got, _) = f.read(&repo, &cache, off, len).unwrap();
            let end = whole.len().min(off as usize + len);
            assert_eq!(got, whole[off as usize..end], "read {len} at {off}");
        }
        assert!(
            f.read(&repo, &cache, whole.len() as u64, 10)
                .unwrap()
                .0
                .is_empty()
        );

        // A read inside the last chunk loads that chunk alone.
        let fresh = BlobCache::new(1 << 20);
        let (_, last) = f.read(&repo, &fresh, 6000, 100).unwrap();
        assert_eq!((fresh.loads(), last), (1, Some(3)));
        assert_eq!(
            f.ahead(&fresh, 1, 5).len(),
            1,
            "chunk 2 is not cached, chunk 3 is"
        );

        // A size that disagrees with the chunks is named, not served.
        node.size += 1;
        assert!(matches!(
            FileContent::new(&repo, &node, "f"),
            Err(Error::Corrupt { .. })
        ));
    }
}
