//! Micro benchmarks of the engine's building blocks, so regressions show.
//!
//! `cargo bench --bench engine` (a few minutes on 2 cores). Each benchmark
//! keeps its sample count and measurement time small; the numbers are for
//! spotting regressions and comparing orders of magnitude, not for papers.
//!
//! Index lookups run on a local index of 1 M blobs. A 10 M-blob index takes
//! minutes and about 1.5 GB of disk to build, so it is only built when
//! `CAIRN_BENCH_10M=1` is set.

use std::hint::black_box;
use std::time::Duration;

use cairn_engine::Id;
use cairn_engine::blob::{BlobType, PackedBlob, blob_aad};
use cairn_engine::chunker::{Chunker, ChunkerParams};
use cairn_engine::compress::{self, Compression};
use cairn_engine::crypto::{MasterKey, NONCE_DOMAIN_BLOB, nonce};
use cairn_engine::indexfile::{IndexFile, IndexPack};
use cairn_engine::localindex::LocalIndex;
use cairn_engine::pack::{PackWriter, verify_finished};
use cairn_engine::tree::{Node, NodeKind, Timestamp, Tree};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const MIB: usize = 1 << 20;

fn key() -> MasterKey {
    MasterKey::from_bytes([42; 32])
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Deterministic C-like source text (compresses about 4-5x with zstd -3,
/// roughly like kernel sources).
fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "static",
        "int",
        "struct",
        "return",
        "if",
        "else",
        "for",
        "while",
        "unsigned",
        "long",
        "const",
        "void",
        "char",
        "dev",
        "priv",
        "ret",
        "err",
        "->",
        "NULL",
        "sizeof",
        "u32",
        "u64",
        "kfree",
        "kmalloc",
        "GFP_KERNEL",
        "mutex_lock",
        "spin_unlock",
        "pci_dev",
        "#include",
        "#define",
        "EXPORT_SYMBOL",
        "0x",
        "(",
        ")",
        "{",
        "}",
        ";",
        "=",
        "==",
        "&&",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 64);
    let mut col = 0;
    while out.len() < len {
        let w = WORDS[rng.random_range(0..WORDS.len())];
        out.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if rng.random_range(0..10) == 0 {
            out.extend_from_slice(format!("{}", rng.random_range(0..4096u32)).as_bytes());
        }
        if col > 60 || rng.random_range(0..12) == 0 {
            out.push(b'\n');
            let tabs = rng.random_range(0..3);
            out.extend(std::iter::repeat_n(b'\t', tabs));
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

fn quick<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

fn chunker(c: &mut Criterion) {
    let params = ChunkerParams::default();
    let seed = key().chunker_seed();
    let mut g = quick(c, "chunker");
    for (name, data) in [
        ("random 64 MiB", random_bytes(64 * MIB, 1)),
        ("text 64 MiB", text_bytes(64 * MIB, 2)),
    ] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                for ch in Chunker::new(&data[..], &params, seed) {
                    n += ch.unwrap().len();
                }
                assert_eq!(n, data.len());
            })
        });
    }
    g.finish();
}

fn blob_id(c: &mut Criterion) {
    let k = key();
    let mut g = quick(c, "blob id (keyed BLAKE3)");
    for len in [4 * 1024, MIB] {
        let data = random_bytes(len, 3);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{} KiB", len / 1024)),
            &data,
            |b, d| b.iter(|| k.blob_id(black_box(d))),
        );
    }
    g.finish();
}

fn zstd(c: &mut Criterion) {
    let mut g = quick(c, "zstd level 3, 1 MiB");
    let text = text_bytes(MIB, 4);
    let random = random_bytes(MIB, 5);
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("compress text", |b| {
        b.iter(|| compress::compress(black_box(&text), 3))
    });
    g.bench_function("compress random", |b| {
        b.iter(|| compress::compress(black_box(&random), 3))
    });
    let (kind, z) = compress::compress(&text, 3);
    assert_eq!(kind, Compression::Zstd);
    g.bench_function("decompress text", |b| {
        b.iter(|| {
            compress::decompress(
                kind,
                black_box(z.clone()),
                MIB,
                "bench",
                &cairn_engine::dict::NoDicts,
            )
            .unwrap()
        })
    });
    g.finish();
}

fn aes_gcm(c: &mut Criterion) {
    let k = key();
    let cipher = k.pack_cipher(&[7; 16]);
    let aad = blob_aad(&Id([1; 32]), BlobType::Data, Compression::None);
    let n = nonce(NONCE_DOMAIN_BLOB, 24);
    let mut g = quick(c, "AES-256-GCM (pack subkey)");
    for len in [4 * 1024, MIB] {
        let data = random_bytes(len, 6);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("seal {} KiB", len / 1024), |b| {
            b.iter(|| cipher.seal(&n, &aad, black_box(&data)))
        });
        let ct = cipher.seal(&n, &aad, &data);
        g.bench_function(format!("open {} KiB", len / 1024), |b| {
            b.iter(|| cipher.open(&n, &aad, black_box(&ct), "bench").unwrap())
        });
    }
    g.bench_function("derive pack subkey", |b| {
        b.iter(|| k.pack_cipher(black_box(&[9; 16])))
    });
    g.finish();
}

fn pack(c: &mut Criterion) {
    let k = key();
    let mut g = quick(c, "pack of 16 x 1 MiB: add + finish + verify");
    g.throughput(Throughput::Bytes(16 * MIB as u64));
    for (name, compressible) in [("random (stored raw)", false), ("text (zstd)", true)] {
        let blobs: Vec<(Id, u32, Compression, Vec<u8>)> = (0..16)
            .map(|i| {
                let raw = if compressible {
                    text_bytes(MIB, 100 + i)
                } else {
                    random_bytes(MIB, 100 + i)
                };
                let (c, s) = compress::compress(&raw, 3);
                (k.blob_id(&raw), raw.len() as u32, c, s)
            })
            .collect();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut w = PackWriter::new(&k, BlobType::Data);
                for (id, len, c, s) in &blobs {
                    w.add(*id, *len, *c, s);
                }
                let p = w.finish().unwrap();
                verify_finished(&k, &p, &cairn_engine::dict::NoDicts).unwrap();
                p.len()
            })
        });
    }
    g.finish();
}

/// A local index in `dir` holding `n` blobs spread over packs of 1,000
/// blobs, all in one index file; returns some present IDs.
fn build_index(dir: &std::path::Path, n: usize) -> (LocalIndex, Vec<Id>) {
    let idx = LocalIndex::open(&dir.join("index.redb")).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut present = Vec::new();
    let mut file = IndexFile::default();
    for p in 0..n.div_ceil(1000) {
        let mut pid = [0u8; 32];
        rng.fill_bytes(&mut pid);
        let blobs = (0..1000.min(n - p * 1000))
            .map(|i| {
                let mut id = [0u8; 32];
                rng.fill_bytes(&mut id);
                if present.len() < 100_000 && i % 10 == 0 {
                    present.push(Id(id));
                }
                PackedBlob {
                    id: Id(id),
                    blob_type: BlobType::Data,
                    offset: 24 + i as u32 * 20_000,
                    length: 20_000,
                    raw_length: 60_000,
                    compression: Compression::Zstd,
                    start: None,
                }
            })
            .collect();
        file.packs.push(IndexPack {
            id: Id(pid),
            size: 20_000_000,
            blobs,
        });
    }
    idx.add_index_file(&Id([0xee; 32]), &file).unwrap();
    assert_eq!(idx.blob_count().unwrap(), n as u64);
    (idx, present)
}

fn index_lookups(c: &mut Criterion, n: usize, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let (idx, present) = build_index(dir.path(), n);
    eprintln!("local index of {label} blobs built in {:.1?}", t.elapsed());
    let absent: Vec<Id> = (0..present.len()).map(|_| Id::random()).collect();
    let reader = idx.reader().unwrap();
    let mut g = quick(c, &format!("local index, {label} blobs"));
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut next = |v: &[Id]| {
        i = (i + 7919) % v.len();
        v[i]
    };
    g.bench_function("IndexReader::contains, present", |b| {
        b.iter(|| assert!(reader.contains(&next(&present)).unwrap()))
    });
    g.bench_function("IndexReader::contains, absent", |b| {
        b.iter(|| assert!(!reader.contains(&next(&absent)).unwrap()))
    });
    g.bench_function("IndexReader::lookup, present", |b| {
        b.iter(|| reader.lookup(&next(&present)).unwrap().unwrap())
    });
    g.bench_function("LocalIndex::contains (own read transaction), absent", |b| {
        b.iter(|| assert!(!idx.contains(&next(&absent)).unwrap()))
    });
    g.bench_function("LocalIndex::lookup (own read transaction), present", |b| {
        b.iter(|| idx.lookup(&next(&present)).unwrap().unwrap())
    });
    g.finish();
}

fn index(c: &mut Criterion) {
    index_lookups(c, 1_000_000, "1 M");
    if std::env::var("CAIRN_BENCH_10M").as_deref() == Ok("1") {
        index_lookups(c, 10_000_000, "10 M");
    }
}

fn tree(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(8);
    let mut t = Tree::default();
    for i in 0..1000 {
        let mut n = Node::new(
            format!("file-{i:05}-{}.c", rng.random::<u32>()).into_bytes(),
            NodeKind::File,
        );
        n.mode = 0o644;
        n.uid = 1000;
        n.gid = 1000;
        n.user = "builder".into();
        n.group = "builder".into();
        n.size = rng.random_range(0..100_000);
        n.mtime = Timestamp {
            sec: 1_700_000_000 + i,
            nsec: 123_456_789,
        };
        n.atime = n.mtime;
        n.ctime = n.mtime;
        n.inode = 1_000_000 + i as u64;
        n.device = 2049;
        n.links = 1;
        n.content = vec![Id::random()];
        t.nodes.push(n);
    }
    t.sort();
    let enc = t.encode();
    let mut g = quick(c, "tree of 1,000 entries");
    g.throughput(Throughput::Elements(1000));
    g.bench_function(format!("encode ({} bytes)", enc.len()), |b| {
        b.iter(|| black_box(&t).encode())
    });
    g.bench_function("decode", |b| {
        b.iter(|| Tree::decode(black_box(&enc), "bench").unwrap())
    });
    g.finish();
}

criterion_group!(benches, chunker, blob_id, zstd, aes_gcm, pack, index, tree);
criterion_main!(benches);
