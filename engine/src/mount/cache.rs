//! Bounded caches of decrypted blobs and decoded trees.
//!
//! Reads through the mount arrive in pieces of at most 128 KiB to 1 MiB,
//! much smaller than a chunk on average, so every chunk would otherwise be
//! fetched, decrypted and hashed several times. The caches are bounded by
//! bytes; a blob being loaded is loaded once, and other readers wait for it
//! (a tree may be decoded by two requests at once: cheap beside a blob).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quick_cache::sync::{Cache, GuardResult};
use quick_cache::{OptionsBuilder, Weighter};

use crate::blob::BlobLocation;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::tree::Tree;

#[derive(Clone)]
struct ByLen;

impl Weighter<Id, Arc<Vec<u8>>> for ByLen {
    fn weight(&self, _: &Id, v: &Arc<Vec<u8>>) -> u64 {
        v.len().max(1) as u64
    }
}

/// Decrypted data blobs, bounded by their total size.
pub struct BlobCache {
    cache: Cache<Id, Arc<Vec<u8>>, ByLen>,
    loads: AtomicU64,
}

impl BlobCache {
    /// A cache holding at most about `bytes` of plaintext.
    pub fn new(bytes: u64) -> BlobCache {
        // Chunks average about 1 MiB; the estimate only sizes the table.
        let items = (bytes >> 20).clamp(16, 1 << 16) as usize;
        BlobCache {
            cache: Cache::with_weighter(items, bytes.max(1), ByLen),
            loads: AtomicU64::new(0),
        }
    }

    /// The plaintext of the blob at `loc`, from the cache or the repository.
    pub fn get(&self, repo: &Repository, loc: &BlobLocation) -> Result<Arc<Vec<u8>>> {
        self.cache
            .get_or_insert_with(&loc.blob.id, || self.load(repo, loc))
    }

    /// Loads the blob at `loc` into the cache unless it is there or being
    /// loaded; errors are left for the reader that needs the blob to meet.
    pub fn prefetch(&self, repo: &Repository, loc: &BlobLocation) {
        if let GuardResult::Guard(g) = self
            .cache
            .get_value_or_guard(&loc.blob.id, Some(Duration::ZERO))
            && let Ok(v) = self.load(repo, loc)
        {
            let _ = g.insert(v);
        }
    }

    /// Whether the blob is cached (or being loaded).
    pub fn contains(&self, id: &Id) -> bool {
        self.cache.contains_key(id)
    }

    /// How many blobs were read from the repository.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn load(&self, repo: &Repository, loc: &BlobLocation) -> Result<Arc<Vec<u8>>> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        let data = repo.load_blob_at(loc)?;
        if data.len() != loc.blob.raw_length as usize {
            return Err(Error::corrupt(
                format!("blob {}", loc.blob.id),
                format!(
                    "{} bytes, but the index records {}",
                    data.len(),
                    loc.blob.raw_length
                ),
            ));
        }
        Ok(Arc::new(data))
    }
}

/// A decoded tree and what it costs to keep in memory.
pub struct CachedTree {
    /// The tree.
    pub tree: Tree,
    weight: u64,
}

#[derive(Clone)]
struct ByWeight;

impl Weighter<Id, Arc<CachedTree>> for ByWeight {
    fn weight(&self, _: &Id, v: &Arc<CachedTree>) -> u64 {
        v.weight
    }
}

/// Decoded trees, bounded by an estimate of their memory.
pub struct TreeCache {
    cache: Cache<Id, Arc<CachedTree>, ByWeight>,
    /// Trees heavier than a shard of `cache` holds (a directory of tens of
    /// thousands of entries), which it would refuse: the last few used are
    /// kept anyway, newest first. Without them such a directory was decoded
    /// again for every lookup and attribute request, and `ls -l` of 10,000
    /// entries took minutes.
    big: Mutex<Vec<(Id, Arc<CachedTree>)>>,
    /// The weight above which a tree goes to `big`.
    big_from: u64,
}

/// Shards of the tree cache: few, so that each holds big trees.
const TREE_SHARDS: usize = 4;
/// Trees too big for the cache kept beside it.
const BIG_TREES: usize = 2;

impl TreeCache {
    /// A cache holding trees of about `bytes` in memory (and up to
    /// [`BIG_TREES`] bigger ones beside it).
    pub fn new(bytes: u64) -> TreeCache {
        let bytes = bytes.max(1);
        let options = OptionsBuilder::new()
            .estimated_items_capacity(4096)
            .weight_capacity(bytes)
            .shards(TREE_SHARDS)
            .build()
            .expect("every option is set");
        TreeCache {
            cache: Cache::with_options(options, ByWeight, Default::default(), Default::default()),
            big: Mutex::new(Vec::new()),
            // A shard's hot part takes 97 % of its share; stay below.
            big_from: bytes / TREE_SHARDS as u64 * 9 / 10,
        }
    }

    /// The tree `id`, from the cache or the repository.
    pub fn get(&self, repo: &Repository, id: &Id) -> Result<Arc<CachedTree>> {
        if let Some(t) = self.cache.get(id) {
            return Ok(t);
        }
        {
            let mut big = self.big.lock().expect("big trees");
            if let Some(at) = big.iter().position(|(b, _)| b == id) {
                let hit = big.remove(at);
                let tree = hit.1.clone();
                big.insert(0, hit);
                return Ok(tree);
            }
        }
        let tree = repo.load_tree(id)?;
        let weight = tree
            .nodes
            .iter()
            .map(|n| {
                (std::mem::size_of_val(n)
                    + n.name.len()
                    + n.link_target.len()
                    + n.content.len() * Id::LEN
                    + n.xattrs
                        .iter()
                        .map(|x| x.name.len() + x.value.len() + 48)
                        .sum::<usize>()) as u64
            })
            .sum::<u64>()
            .max(1);
        let cached = Arc::new(CachedTree { tree, weight });
        if weight <= self.big_from {
            self.cache.insert(*id, cached.clone());
        } else {
            let mut big = self.big.lock().expect("big trees");
            big.insert(0, (*id, cached.clone()));
            big.truncate(BIG_TREES);
        }
        Ok(cached)
    }
}
