//! Fills a repository with N tiny synthetic blobs, for `benches/bigindex.sh`.
//!
//! ```text
//! CAIRN_PASSWORD=... bigindex-fill REPO CACHE_DIR N [BLOBS_PER_PACK]
//! ```
//!
//! Every blob is real: 16 bytes of distinct content (a counter and a run
//! nonce), its keyed BLAKE3 ID, encrypted into a verified pack that is
//! written to the repository, and named by an index file written after its
//! packs, which is then absorbed into the local redb index, the same order
//! `BlobSaver` follows. So `check --read-data` accepts the repository, and
//! a later backup dedups against an index of N + its own blobs, read from
//! the same on-disk structures a real 10 M-blob repository has.
//!
//! Two things differ from `BlobSaver`, on purpose: the contents are distinct
//! by construction, so the per-blob dedup lookup is skipped (it would
//! measure the index while filling it), and packs close at BLOBS_PER_PACK
//! blobs (default 1,000, 32 packs per index file as the saver does) instead
//! of at 16 MiB: 16-byte blobs would otherwise fill 100,000-blob packs and
//! 3.2 M-blob index files, a shape no real repository has. No snapshot
//! refers to these blobs, so a prune would delete them: the repository is a
//! benchmark fixture.
//!
//! Prints one JSON line: blobs, packs, index files, bytes, seconds, and the
//! longest time one index file took to absorb into the local index.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cairn_engine::backend::{FileKind, LocalBackend};
use cairn_engine::blob::BlobType;
use cairn_engine::compress::Compression;
use cairn_engine::envelope::{ObjectKind, seal_msgpack};
use cairn_engine::indexfile::{IndexFile, IndexPack};
use cairn_engine::pack::{PackWriter, verify_finished};
use cairn_engine::{Id, OpenOptions, Repository};
use rand::RngCore;
use rayon::prelude::*;

/// Packs per index file, as `BlobSaver` writes them.
const PACKS_PER_INDEX_FILE: u64 = 32;
/// Plaintext bytes per synthetic blob.
const BLOB_LEN: usize = 16;

fn usage() -> ! {
    eprintln!("usage: CAIRN_PASSWORD=... bigindex-fill REPO CACHE_DIR N [BLOBS_PER_PACK]");
    std::process::exit(2)
}

fn main() -> cairn_engine::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(3..=4).contains(&args.len()) {
        usage();
    }
    let repo_dir = PathBuf::from(&args[0]);
    let cache_dir = PathBuf::from(&args[1]);
    let n: u64 = args[2].replace('_', "").parse().unwrap_or_else(|_| usage());
    let per_pack: u64 = match args.get(3) {
        Some(s) => s.parse().unwrap_or_else(|_| usage()),
        None => 1000,
    };
    if per_pack == 0 {
        usage();
    }
    let password = std::env::var("CAIRN_PASSWORD").unwrap_or_else(|_| usage());

    let t0 = Instant::now();
    let repo = Repository::open(
        Arc::new(LocalBackend::new(&repo_dir)),
        password.as_bytes(),
        &OpenOptions {
            cache_dir: Some(cache_dir),
            no_object_cache: false,
            ..Default::default()
        },
    )?;
    let lock = repo.lock(false)?;
    let key = repo.key();
    let backend = repo.backend();
    // A different nonce per run keeps two fixtures in one repository distinct.
    let mut nonce = [0u8; BLOB_LEN - 8];
    rand::rng().fill_bytes(&mut nonce);

    let packs_total = n.div_ceil(per_pack);
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let mut slowest_absorb = 0f64;
    let mut first = 0;
    while first < packs_total {
        let last = (first + PACKS_PER_INDEX_FILE).min(packs_total);
        // Build and verify the packs of one index file in parallel.
        let packs: Vec<_> = (first..last)
            .into_par_iter()
            .map(|p| {
                let mut w = PackWriter::new(key, BlobType::Data);
                for i in p * per_pack..((p + 1) * per_pack).min(n) {
                    let mut content = [0u8; BLOB_LEN];
                    content[..8].copy_from_slice(&i.to_le_bytes());
                    content[8..].copy_from_slice(&nonce);
                    w.add(
                        key.blob_id(&content),
                        BLOB_LEN as u32,
                        Compression::None,
                        &content,
                    );
                }
                let f = w.finish()?;
                verify_finished(key, &f, &cairn_engine::dict::NoDicts).map(|()| f)
            })
            .collect::<cairn_engine::Result<_>>()?;
        let mut file = IndexFile::default();
        for f in packs {
            let fb = f.bytes().expect("built in memory");
            backend.write(FileKind::Pack, &f.id.to_hex(), fb)?;
            bytes += fb.len() as u64;
            file.packs.push(IndexPack {
                id: f.id,
                size: fb.len() as u64,
                blobs: f.entries,
            });
        }
        // Packs are durable before the index file naming them, and the index
        // file before the local index relies on it.
        let data = seal_msgpack(key, ObjectKind::Index, &file);
        let id = Id::of_object(&data);
        lock.check()?;
        backend.write(FileKind::Index, &id.to_hex(), &data)?;
        bytes += data.len() as u64;
        files += 1;
        let absorb = Instant::now();
        repo.index().add_index_file(&id, &file)?;
        // The one that merges `recent_blobs` into `blobs` is the slow one.
        slowest_absorb = slowest_absorb.max(absorb.elapsed().as_secs_f64());
        first = last;
        if last_report.elapsed().as_secs() >= 10 {
            eprintln!(
                "bigindex-fill: {} of {n} blobs after {:.0?}",
                (last * per_pack).min(n),
                t0.elapsed()
            );
            last_report = Instant::now();
        }
    }
    drop(lock);
    println!(
        "{{\"blobs\":{n},\"packs\":{packs_total},\"index_files\":{files},\"bytes\":{bytes},\"index_blobs\":{},\"seconds\":{:.1},\"slowest_absorb_seconds\":{slowest_absorb:.2}}}",
        repo.index().blob_count()?,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
