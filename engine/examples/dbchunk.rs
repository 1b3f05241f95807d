//! What a second capture of a database changed in place adds to a
//! repository, with the engine's content-defined chunker against
//! page-aligned fixed-size chunks. Run by `benches/dbchunk.sh`:
//!
//!     cargo run --release -p cairn-engine --example dbchunk -- V1.db V2.db
//!
//! Both databases are first captured with the engine's SQLite capture (the
//! copy a backup stores). Each chunking cuts both copies; chunks are
//! identified by BLAKE3 and each unique chunk is compressed on its own with
//! zstd at the repository's default level, as the repository stores blobs.
//! "added" is what the second capture's new chunks cost, compressed, plus
//! metadata: per new chunk its GCM tag, pack header entry and index entry
//! ([`PER_NEW_CHUNK`] bytes), and per chunk reference the 34 bytes its ID
//! takes in the file's content list (the tree is rewritten every capture).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use cairn_engine::capture::sqlite;
use cairn_engine::chunker::{Chunker, ChunkerParams};
use cairn_engine::compress::compress;
use rayon::prelude::*;

/// GCM tag (16) + pack header entry (~46) + named index entry (~96).
const PER_NEW_CHUNK: u64 = 158;
/// A 32-byte ID as MessagePack bin in a tree node's content list.
const PER_REF: u64 = 34;
/// The repository's default zstd level.
const LEVEL: i32 = 3;
/// Any fixed seed: the measurement is about where cuts fall, not which.
const SEED: u64 = 0x6361_6972_6e5f_6364;

#[derive(Default)]
struct Tally {
    refs: u64,
    new_chunks: u64,
    new_raw: u64,
    new_stored: u64,
}

/// Feeds `chunks` through `seen`; counts what was new.
fn tally(chunks: impl Iterator<Item = Vec<u8>>, seen: &mut HashSet<[u8; 32]>) -> Tally {
    let mut t = Tally::default();
    let mut batch = Vec::new();
    let flush = |batch: &mut Vec<Vec<u8>>, t: &mut Tally, seen: &mut HashSet<[u8; 32]>| {
        let hashed: Vec<([u8; 32], usize)> = batch
            .par_iter()
            .map(|c| (*blake3::hash(c).as_bytes(), c.len()))
            .collect();
        let mut fresh = Vec::new();
        for (i, (h, len)) in hashed.iter().enumerate() {
            t.refs += 1;
            if seen.insert(*h) {
                t.new_chunks += 1;
                t.new_raw += *len as u64;
                fresh.push(i);
            }
        }
        t.new_stored += fresh
            .par_iter()
            .map(|&i| compress(&batch[i], LEVEL).1.len() as u64)
            .sum::<u64>();
        batch.clear();
    };
    for c in chunks {
        batch.push(c);
        if batch.len() >= 256 {
            flush(&mut batch, &mut t, seen);
        }
    }
    flush(&mut batch, &mut t, seen);
    t
}

fn fixed(path: &Path, size: usize) -> impl Iterator<Item = Vec<u8>> + use<> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path).unwrap());
    std::iter::from_fn(move || {
        let mut buf = Vec::with_capacity(size);
        (&mut r).take(size as u64).read_to_end(&mut buf).unwrap();
        (!buf.is_empty()).then_some(buf)
    })
}

fn cdc(path: &Path) -> impl Iterator<Item = Vec<u8>> + use<> {
    let f = BufReader::with_capacity(1 << 20, File::open(path).unwrap());
    Chunker::new(f, &ChunkerParams::default(), SEED).map(|c| c.unwrap())
}

fn mb(n: u64) -> f64 {
    n as f64 / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [v1, v2] = &args[..] else {
        eprintln!("usage: dbchunk V1.db V2.db");
        std::process::exit(2);
    };
    let t = Instant::now();
    let capture = |p: &str| {
        let m = std::fs::symlink_metadata(p).expect("stat");
        let file = (m.dev(), m.ino());
        match sqlite::capture(Path::new(p), file, sqlite::LOCK_TIMEOUT, &|| false) {
            Ok(sqlite::Capture::Copied(copy)) => copy,
            Ok(sqlite::Capture::Replaced) => panic!("{p} was replaced as it was opened"),
            Err(e) => panic!("capture {p}: {e}"),
        }
    };
    let (c1, c2) = (capture(v1), capture(v2));
    let (p1, p2) = (&c1.path(), &c2.path());
    let size = std::fs::metadata(p2).unwrap().len();
    eprintln!("captured both in {:.0} s", t.elapsed().as_secs_f64());
    // Pages that differ, for context.
    let pages = {
        let (mut a, mut b) = (fixed(p1, 4096), fixed(p2, 4096));
        let (mut n, mut diff) = (0u64, 0u64);
        while let (Some(x), Some(y)) = (a.next(), b.next()) {
            n += 1;
            diff += u64::from(x != y);
        }
        (n, diff)
    };
    println!(
        "database: {:.1} MB, {} pages of 4 KiB, {} changed ({:.1}%)",
        mb(size),
        pages.0,
        pages.1,
        100.0 * pages.1 as f64 / pages.0 as f64
    );
    println!(
        "| chunking | chunks per capture | first capture stored MB | second capture: new chunks | new raw MB | new stored MB (zstd-{LEVEL}) | + metadata MB | added MB | added / file size |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // None: the repository's CDC; Some(KiB): fixed-size chunks.
    let schemes = [None, Some(4usize), Some(8), Some(16), Some(32), Some(64)];
    let cut = |scheme: Option<usize>, p: &Path| -> Box<dyn Iterator<Item = Vec<u8>>> {
        match scheme {
            None => Box::new(cdc(p)),
            Some(k) => Box::new(fixed(p, k * 1024)),
        }
    };
    for scheme in schemes {
        let name = match scheme {
            None => "FastCDC 256K/1M/4M (repository default)".to_string(),
            Some(k) => format!("fixed {k} KiB, page-aligned"),
        };
        let t = Instant::now();
        let mut seen = HashSet::new();
        let first = tally(cut(scheme, p1), &mut seen);
        let second = tally(cut(scheme, p2), &mut seen);
        let meta = second.new_chunks * PER_NEW_CHUNK + second.refs * PER_REF;
        let added = second.new_stored + meta;
        println!(
            "| {name} | {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | **{:.1}** | {:.1}% |",
            second.refs,
            mb(first.new_stored + first.new_chunks * PER_NEW_CHUNK + first.refs * PER_REF),
            second.new_chunks,
            mb(second.new_raw),
            mb(second.new_stored),
            mb(meta),
            mb(added),
            100.0 * added as f64 / size as f64
        );
        eprintln!("{name}: {:.0} s", t.elapsed().as_secs_f64());
    }
}
