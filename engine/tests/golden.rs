//! Golden test vectors: objects encoded under fixed keys and salts, stored in
//! `format-spec/vectors/`. Every stored vector must decode to the expected
//! value, and encoding the same value must reproduce the stored bytes, so a
//! change to the repository format cannot slip in unnoticed.
//!
//! To regenerate after a deliberate format change (which must also update
//! `format-spec/`): `CAIRN_UPDATE_VECTORS=1 cargo test -p cairn-engine --test golden`.

use std::path::PathBuf;

use cairn_engine::audit::{AuditRecord, Changes};
use cairn_engine::blob::BlobType;
use cairn_engine::chunker::{Chunker, ChunkerParams};
use cairn_engine::compress::{self, Compression};
use cairn_engine::config::Config;
use cairn_engine::crypto::MasterKey;
use cairn_engine::envelope::{self, ObjectKind};
use cairn_engine::id::Id;
use cairn_engine::indexfile::{IndexFile, IndexPack};
use cairn_engine::keyfile::KeyFile;
use cairn_engine::lock::LockRecord;
use cairn_engine::pack::{self, PackWriter};
use cairn_engine::snapshot::{CopiedFrom, DatabaseCapture, Origin, Snapshot, Summary};
use cairn_engine::tree::{Node, NodeKind, Timestamp, Tree, Xattr};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors")
}

fn master() -> MasterKey {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    MasterKey::from_bytes(k)
}

/// Compares `bytes` with the stored vector `name` (hex), or writes it when updating.
fn check_vector(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = dir().join(name);
    let hexed = format!("{}\n", hex::encode(bytes));
    if std::env::var("CAIRN_UPDATE_VECTORS").as_deref() == Ok("1") {
        std::fs::write(&path, &hexed).unwrap();
    }
    let stored =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stored = hex::decode(stored.trim()).expect("vector is hex");
    assert_eq!(
        hex::encode(&stored),
        hex::encode(bytes),
        "encoding of {name} differs from the golden vector: the repository format changed (update format-spec/ and the vectors deliberately)"
    );
    stored
}

fn sample_tree() -> Tree {
    let mut file = Node::new(b"caf\xc3\xa9 \xff raw.txt".to_vec(), NodeKind::File);
    file.mode = 0o4755;
    file.uid = 1000;
    file.gid = 100;
    file.user = "alice".into();
    file.group = "users".into();
    file.size = 11;
    file.mtime = Timestamp {
        sec: -86_400,
        nsec: 1,
    };
    file.atime = Timestamp {
        sec: 4_102_444_800,
        nsec: 999_999_999,
    };
    file.ctime = Timestamp {
        sec: 1_700_000_000,
        nsec: 5,
    };
    file.inode = 42;
    file.device = 2049;
    file.links = 1;
    file.content = vec![master().blob_id(b"hello world")];
    file.xattrs = vec![Xattr {
        name: b"user.note".to_vec(),
        value: b"\x00\x01".to_vec(),
    }];
    let mut link = Node::new(b"link".to_vec(), NodeKind::Symlink);
    link.mode = 0o777;
    link.size = 4;
    link.link_target = b"../x".to_vec();
    let mut dir = Node::new(b"sub".to_vec(), NodeKind::Dir);
    dir.mode = 0o1777;
    dir.subtree = Some(Id([7; 32]));
    let mut t = Tree {
        nodes: vec![link, dir, file],
    };
    t.sort();
    t
}

#[test]
fn blob_ids_and_derived_keys() {
    let k = master();
    let mut out = Vec::new();
    for input in [&b""[..], b"hello world", &[0u8; 1000]] {
        out.extend_from_slice(&k.blob_id(input).0);
    }
    out.extend_from_slice(&k.chunker_seed().to_le_bytes());
    check_vector("blob-ids.hex", &out);
}

#[test]
fn chunker_cut_points() {
    let params = ChunkerParams {
        min_size: 16 * 1024,
        avg_size: 64 * 1024,
        max_size: 256 * 1024,
        ..ChunkerParams::default()
    };
    let mut data = vec![0u8; 2 << 20];
    blake3::Hasher::new()
        .update(b"cairn chunker vector")
        .finalize_xof()
        .fill(&mut data);
    let mut out = Vec::new();
    for c in Chunker::new(&data[..], &params, master().chunker_seed()) {
        out.extend_from_slice(&(c.unwrap().len() as u32).to_le_bytes());
    }
    check_vector("chunker-lengths.hex", &out);
}

#[test]
fn pack_vector() {
    let k = master();
    let blobs: Vec<Vec<u8>> = vec![
        b"hello world".to_vec(),
        "compressible ".repeat(100).into_bytes(),
        Vec::new(),
    ];
    let mut w = PackWriter::with_salt(&k, BlobType::Data, [0xA5; 16]);
    for b in &blobs {
        let (c, stored) = compress::compress(b, 3);
        w.add(k.blob_id(b), b.len() as u32, c, &stored);
    }
    let p = w.finish().unwrap();
    let pb = p.bytes().unwrap();
    let stored = check_vector("pack-data.hex", pb);
    let id = Id::of_object(&stored);
    let entries = pack::read_header_from_bytes(&k, &id, &stored).unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].compression, Compression::None);
    assert_eq!(entries[1].compression, Compression::Zstd);
    let cipher = k.pack_cipher(&pack::parse_prefix(&id, &stored).unwrap());
    for (e, b) in entries.iter().zip(&blobs) {
        let ct = &stored[e.offset as usize..(e.offset + e.length) as usize];
        assert_eq!(
            &pack::open_blob(&k, &cipher, e, ct, &id, &cairn_engine::dict::NoDicts).unwrap(),
            b
        );
    }
}

#[test]
fn group_pack_vector() {
    // pack-group.hex (format version 3), salt a7 x 16: one blob alone, then
    // a group frame of three small blobs (the middle one empty).
    let k = master();
    let alone = b"stored alone".to_vec();
    let members: Vec<Vec<u8>> = vec![
        "first member, first member, first member "
            .repeat(4)
            .into_bytes(),
        Vec::new(),
        b"third member".to_vec(),
    ];
    let mut w = PackWriter::with_salt(&k, BlobType::Data, [0xA7; 16]);
    let (c, stored) = compress::compress(&alone, 3);
    w.add(k.blob_id(&alone), alone.len() as u32, c, &stored);
    let frame = compress::compress_group(&members.concat(), 3).expect("compressible");
    let ids: Vec<(Id, u32)> = members
        .iter()
        .map(|m| (k.blob_id(m), m.len() as u32))
        .collect();
    w.add_group(&ids, &frame);
    let p = w.finish().unwrap();
    let pb = p.bytes().unwrap();
    let stored = check_vector("pack-group.hex", pb);
    let id = Id::of_object(&stored);
    let entries = pack::read_header_from_bytes(&k, &id, &stored).unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0].start, None);
    let starts: Vec<Option<u32>> = entries[1..].iter().map(|e| e.start).collect();
    assert_eq!(starts, [Some(0), Some(164), Some(164)]);
    assert!(
        entries[1..]
            .iter()
            .all(|e| e.compression == Compression::ZstdGroup
                && (e.offset, e.length) == (entries[1].offset, entries[1].length))
    );
    let cipher = k.pack_cipher(&pack::parse_prefix(&id, &stored).unwrap());
    for (e, b) in entries.iter().zip(std::iter::once(&alone).chain(&members)) {
        let ct = &stored[e.offset as usize..(e.offset + e.length) as usize];
        assert_eq!(
            &pack::open_blob(&k, &cipher, e, ct, &id, &cairn_engine::dict::NoDicts).unwrap(),
            b
        );
    }
    // A member's entry pointing into the wrong place does not verify.
    let shifted = cairn_engine::blob::PackedBlob {
        start: Some(1),
        ..entries[3]
    };
    let ct = &stored[shifted.offset as usize..(shifted.offset + shifted.length) as usize];
    assert!(pack::open_blob(&k, &cipher, &shifted, ct, &id, &cairn_engine::dict::NoDicts).is_err());

    // index-group.hex: an index file listing that pack, its group members with the `start` key, salt 08 x 16.
    let index = IndexFile {
        packs: vec![IndexPack {
            id,
            size: stored.len() as u64,
            blobs: entries.clone(),
        }],
        supersedes: Vec::new(),
    };
    let sealed = envelope::seal_with_salt(
        &k,
        ObjectKind::Index,
        &envelope::to_msgpack(&index),
        &[8; 16],
    );
    let stored = check_vector("index-group.hex", &sealed);
    let back: IndexFile = envelope::open_msgpack(&k, ObjectKind::Index, &stored, "index").unwrap();
    assert_eq!(back, index);
}

/// Deterministic text samples for the dictionary vector.
fn dict_samples() -> (Vec<u8>, Vec<usize>) {
    let words = [
        "static", "int", "struct", "return", "unsigned", "void", "const", "char", "if", "NULL",
    ];
    let (mut buf, mut sizes, mut x) = (Vec::new(), Vec::new(), 1u64);
    for _ in 0..300 {
        let start = buf.len();
        for _ in 0..100 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            buf.extend_from_slice(words[(x >> 33) as usize % words.len()].as_bytes());
            buf.push(b' ');
        }
        sizes.push(buf.len() - start);
    }
    (buf, sizes)
}

#[test]
fn dictionary_and_dictionary_pack_vectors() {
    use cairn_engine::dict::{self, Dictionary};
    let k = master();
    let (buf, sizes) = dict_samples();
    let trained = dict::train_with_id(&buf, &sizes, 3, 0x1234_5678, 2048).expect("trains");
    // dict.hex: the dictionary in its envelope (kind 5), salt 05 x 16.
    let sealed = envelope::seal_with_salt(&k, ObjectKind::Dictionary, &trained, &[5; 16]);
    let stored = check_vector("dict.hex", &sealed);
    let bytes = envelope::open(&k, ObjectKind::Dictionary, &stored, "dict").unwrap();
    assert_eq!(bytes, trained);
    assert_eq!(dict::dict_id_of(&bytes), Some(0x1234_5678));
    assert_eq!(dict::dict_name(0x1234_5678), "12345678");
    assert!(envelope::open(&k, ObjectKind::Config, &stored, "dict").is_err());
    let d = std::sync::Arc::new(Dictionary::new(0x1234_5678, bytes).unwrap());

    // pack-dict.hex: one data blob compressed with that dictionary, salt a6 x 16.
    let blob = b"static int struct return unsigned void const char if NULL static int return NULL void if char const struct".to_vec();
    let (c, z) = compress::compress_with_dict(&blob, 3, &d);
    assert_eq!(c, Compression::ZstdDict);
    let mut w = PackWriter::with_salt(&k, BlobType::Data, [0xA6; 16]);
    w.add(k.blob_id(&blob), blob.len() as u32, c, &z);
    let p = w.finish().unwrap();
    let pb = p.bytes().unwrap();
    let stored = check_vector("pack-dict.hex", pb);
    let id = Id::of_object(&stored);
    let entries = pack::read_header_from_bytes(&k, &id, &stored).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].compression, Compression::ZstdDict);
    let cipher = k.pack_cipher(&pack::parse_prefix(&id, &stored).unwrap());
    let e = &entries[0];
    let ct = &stored[e.offset as usize..(e.offset + e.length) as usize];
    let mut dicts = std::collections::HashMap::new();
    dicts.insert(d.id, d.clone());
    assert_eq!(
        pack::open_blob(&k, &cipher, e, ct, &id, &dicts).unwrap(),
        blob
    );
    // Without its dictionary the blob does not open, and the error names it.
    let err = pack::open_blob(&k, &cipher, e, ct, &id, &dict::NoDicts).unwrap_err();
    assert!(err.to_string().contains("dicts/12345678"), "{err}");
}

#[test]
fn tree_vector() {
    let t = sample_tree();
    let stored = check_vector("tree.hex", &t.encode());
    assert_eq!(Tree::decode(&stored, "tree").unwrap(), t);
}

#[test]
fn audit_record_vector() {
    // format-spec §20: a closing audit record with every field set.
    let k = master();
    let rec = AuditRecord {
        started: "2026-11-30T10:00:00Z".parse().unwrap(),
        time: "2026-11-30T10:00:05.5Z".parse().unwrap(),
        command: "forget".into(),
        hostname: "vm".into(),
        username: "me".into(),
        pid: 4242,
        key: hex::encode([0x55; 32]),
        added: Changes {
            snapshots: vec![hex::encode([0x66; 32])],
            keys: Vec::new(),
            index_files: 1,
            packs: 2,
            pack_bytes: 3000,
            config: false,
            dicts: 0,
        },
        removed: Changes {
            snapshots: vec![hex::encode([0x77; 32])],
            keys: vec![hex::encode([0x88; 32])],
            index_files: 4,
            packs: 5,
            pack_bytes: 0,
            config: true,
            dicts: 1,
        },
        open: false,
        removing: Changes::default(),
    };
    let sealed =
        envelope::seal_with_salt(&k, ObjectKind::Audit, &envelope::to_msgpack(&rec), &[6; 16]);
    let stored = check_vector("audit.hex", &sealed);
    let back: AuditRecord =
        envelope::open_msgpack(&k, ObjectKind::Audit, &stored, "audit").unwrap();
    assert_eq!(back, rec);
    assert!(envelope::open(&k, ObjectKind::Snapshot, &stored, "audit").is_err());
}

/// An open audit record (format-spec §20) of `command`, about to delete
/// `removing`.
fn open_record(command: &str, removing: Changes) -> AuditRecord {
    AuditRecord {
        started: "2026-11-30T10:00:00Z".parse().unwrap(),
        time: "2026-11-30T10:00:00.25Z".parse().unwrap(),
        command: command.into(),
        hostname: "vm".into(),
        username: "me".into(),
        pid: 4242,
        key: hex::encode([0x55; 32]),
        added: Changes::default(),
        removed: Changes::default(),
        open: true,
        removing,
    }
}

/// Seals `rec` with `salt`, checks it against vector `name` and reads it back.
fn check_audit_vector(rec: &AuditRecord, salt: u8, name: &str) {
    let k = master();
    let sealed = envelope::seal_with_salt(
        &k,
        ObjectKind::Audit,
        &envelope::to_msgpack(rec),
        &[salt; 16],
    );
    let stored = check_vector(name, &sealed);
    let back: AuditRecord =
        envelope::open_msgpack(&k, ObjectKind::Audit, &stored, "audit").unwrap();
    assert_eq!(&back, rec);
}

#[test]
fn open_audit_record_vector() {
    // format-spec §20: the open record written before a command's first change.
    check_audit_vector(
        &open_record("backup", Changes::default()),
        7,
        "audit-open.hex",
    );
}

#[test]
fn open_forget_audit_record_vector() {
    // format-spec §20: a forget's open record names the snapshot records
    // it is about to delete in `removing`.
    let removing = Changes {
        snapshots: vec![hex::encode([0x99; 32]), hex::encode([0xaa; 32])],
        ..Changes::default()
    };
    check_audit_vector(&open_record("forget", removing), 8, "audit-open-forget.hex");
}

#[test]
fn envelopes_config_index_snapshot() {
    let k = master();
    let config = Config {
        version: 1,
        id: Id([0x11; 32]),
        chunker: ChunkerParams::default(),
        compression_level: 3,
        pack_size: 16 << 20,
        created: "2026-11-22T00:00:00+00:00".into(),
        append_only: false,
    };
    let sealed = envelope::seal_with_salt(
        &k,
        ObjectKind::Config,
        &envelope::to_msgpack(&config),
        &[1; 16],
    );
    let stored = check_vector("config.hex", &sealed);
    let back: Config = envelope::open_msgpack(&k, ObjectKind::Config, &stored, "config").unwrap();
    assert_eq!(back, config);

    // An append-only repository's config: the same map plus `append_only: true`.
    let ao = Config {
        append_only: true,
        ..config.clone()
    };
    let sealed =
        envelope::seal_with_salt(&k, ObjectKind::Config, &envelope::to_msgpack(&ao), &[1; 16]);
    let stored = check_vector("config-append-only.hex", &sealed);
    let back: Config = envelope::open_msgpack(&k, ObjectKind::Config, &stored, "config").unwrap();
    assert_eq!(back, ao);

    let index = IndexFile {
        packs: vec![IndexPack {
            id: Id([0x22; 32]),
            size: 1234,
            blobs: vec![cairn_engine::blob::PackedBlob {
                id: Id([0x33; 32]),
                blob_type: BlobType::Tree,
                offset: 24,
                length: 100,
                raw_length: 200,
                compression: Compression::Zstd,
                start: None,
            }],
        }],
        supersedes: vec![Id([0x44; 32])],
    };
    let sealed = envelope::seal_with_salt(
        &k,
        ObjectKind::Index,
        &envelope::to_msgpack(&index),
        &[2; 16],
    );
    let stored = check_vector("index.hex", &sealed);
    let back: IndexFile = envelope::open_msgpack(&k, ObjectKind::Index, &stored, "index").unwrap();
    assert_eq!(back, index);

    let snap = Snapshot {
        time: chrono::DateTime::parse_from_rfc3339("2026-01-03T10:15:00.123456789+01:00").unwrap(),
        tree: Id([0x55; 32]),
        paths: vec!["/home/alice".into()],
        hostname: "host".into(),
        username: "alice".into(),
        tags: vec!["daily".into()],
        parent: Some(Id([0x66; 32])),
        program_version: "cairn 0.1.0".into(),
        summary: Some(Summary {
            files_new: 1,
            files_changed: 2,
            files_unmodified: 3,
            dirs: 4,
            others: 5,
            bytes_read: 6,
            total_bytes: 7,
            data_added: 8,
            blobs_added: 9,
            errors: 0,
            backup_start: "2026-01-03T10:15:00+01:00".into(),
            backup_end: "2026-01-03T10:16:00+01:00".into(),
        }),
        partial: false,
        hold: false,
        original: None,
        databases: Vec::new(),
        copied_from: None,
        former: Vec::new(),
        unknown: Default::default(),
    };
    let sealed = envelope::seal_with_salt(
        &k,
        ObjectKind::Snapshot,
        &envelope::to_msgpack(&snap),
        &[3; 16],
    );
    let stored = check_vector("snapshot.hex", &sealed);
    let back: Snapshot =
        envelope::open_msgpack(&k, ObjectKind::Snapshot, &stored, "snapshot").unwrap();
    assert_eq!(back, snap);

    // A held snapshot, rewritten from the record above (format-spec/snapshot-hold.md):
    // the same map with two more keys at the end, "hold" and "original".
    let plain = envelope::to_msgpack(&snap);
    let held = Snapshot {
        hold: true,
        original: Some(Id::of_object(&stored)),
        databases: Vec::new(),
        ..snap
    };
    let payload = envelope::to_msgpack(&held);
    let mut tail = vec![0xa4];
    tail.extend_from_slice(b"hold");
    tail.push(0xc3);
    tail.push(0xa8);
    tail.extend_from_slice(b"original");
    tail.extend_from_slice(&[0xc4, 32]);
    tail.extend_from_slice(&Id::of_object(&stored).0);
    assert_eq!(payload[0], plain[0] + 2, "fixmap with two more entries");
    assert_eq!(&payload[1..plain.len()], &plain[1..]);
    assert_eq!(&payload[plain.len()..], &tail[..]);
    let sealed = envelope::seal_with_salt(&k, ObjectKind::Snapshot, &payload, &[4; 16]);
    let stored = check_vector("snapshot-hold.hex", &sealed);
    let back: Snapshot =
        envelope::open_msgpack(&k, ObjectKind::Snapshot, &stored, "snapshot").unwrap();
    assert_eq!(back, held);
}

#[test]
fn key_file_vector_opens() {
    // Key files carry a random salt and nonce, so the vector is checked by
    // opening it: password "cairn golden vector" unwraps the fixed master key.
    let path = dir().join("keyfile.json");
    if std::env::var("CAIRN_UPDATE_VECTORS").as_deref() == Ok("1") {
        let kf = KeyFile::create(
            &master(),
            b"cairn golden vector",
            cairn_engine::keyfile::KdfParams::INSECURE_TEST,
            false,
        )
        .unwrap();
        std::fs::write(&path, kf.to_bytes()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let kf = KeyFile::from_bytes(&bytes, "golden").unwrap();
    // The writer's bytes are pinned too (README §7: the layout, and the
    // name that is their hash): what it reads, it writes back unchanged.
    assert_eq!(
        String::from_utf8(kf.to_bytes()).unwrap(),
        String::from_utf8(bytes).unwrap()
    );
    assert!(!kf.append_only);
    let k = kf
        .open(b"cairn golden vector", "golden")
        .unwrap()
        .expect("password opens the golden key file");
    assert_eq!(k.as_bytes(), master().as_bytes());
    assert!(kf.open(b"wrong", "golden").unwrap().is_none());
}

#[test]
fn append_only_key_file_vector_opens() {
    // Like `keyfile.json`, with `"append_only": true` bound into the AAD.
    let path = dir().join("keyfile-append-only.json");
    if std::env::var("CAIRN_UPDATE_VECTORS").as_deref() == Ok("1") {
        let kf = KeyFile::create(
            &master(),
            b"cairn golden vector",
            cairn_engine::keyfile::KdfParams::INSECURE_TEST,
            true,
        )
        .unwrap();
        std::fs::write(&path, kf.to_bytes()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("\"append_only\": true"));
    let mut kf = KeyFile::from_bytes(&bytes, "golden").unwrap();
    assert_eq!(kf.to_bytes(), bytes);
    assert!(kf.append_only);
    let k = kf
        .open(b"cairn golden vector", "golden")
        .unwrap()
        .expect("password opens the append-only golden key file");
    assert_eq!(k.as_bytes(), master().as_bytes());
    // With the flag stripped the AAD differs, so the key no longer opens.
    kf.append_only = false;
    assert!(kf.open(b"cairn golden vector", "golden").unwrap().is_none());
}

/// The derived keys and object IDs test-vectors.md gives, computed here
/// from README §5 alone (BLAKE3 `derive_key` over the master key, and the
/// salt for subkeys), and tied to what the engine does with them.
#[test]
fn the_documented_derived_keys_and_object_ids_hold() {
    let doc = std::fs::read_to_string(dir().join("../test-vectors.md")).unwrap();
    let k = master();
    let m = *k.as_bytes();
    let documented = |what: &str, hex: &str| {
        assert!(
            doc.contains(hex),
            "{what} {hex} is not the one test-vectors.md gives"
        );
    };
    let id_key = blake3::derive_key("cairn v1 2026-11 blob id key", &m);
    documented("id_key", &hex::encode(id_key));
    assert_eq!(
        k.blob_id(b"hello world").0,
        *blake3::keyed_hash(&id_key, b"hello world").as_bytes()
    );
    let seed = blake3::derive_key("cairn v1 2026-11 chunker seed", &m);
    assert_eq!(k.chunker_seed().to_le_bytes(), seed[..8]);
    documented("chunker seed", &hex::encode(&seed[..8]));
    let subkey = |ctx: &str, salt: u8| {
        let mut material = m.to_vec();
        material.extend_from_slice(&[salt; 16]);
        blake3::derive_key(ctx, &material)
    };
    // The engine's ciphers use those subkeys: the same sealing, byte for byte.
    let nonce = cairn_engine::crypto::nonce(0, 7);
    let pack = subkey("cairn v1 2026-11 pack subkey", 0xa5);
    documented("pack subkey", &hex::encode(pack));
    assert_eq!(
        k.pack_cipher(&[0xa5; 16]).seal(&nonce, b"aad", b"text"),
        cairn_engine::crypto::Cipher::from_key(&pack).seal(&nonce, b"aad", b"text")
    );
    let tree_pack = subkey("cairn v1 2026-11 pack subkey", 0xa8);
    documented("tree pack subkey", &hex::encode(tree_pack));
    for salt in [0x01, 0x02, 0x03, 0x08, 0x09, 0x0a] {
        let object = subkey("cairn v1 2026-11 object subkey", salt);
        documented("object subkey", &hex::encode(object));
        assert_eq!(
            k.object_cipher(&[salt; 16]).seal(&nonce, b"", b"text"),
            cairn_engine::crypto::Cipher::from_key(&object).seal(&nonce, b"", b"text")
        );
    }
    // Object IDs: BLAKE3 of each vector's bytes, on the vector's own row of
    // the ID table.
    for name in [
        "pack-data.hex",
        "config.hex",
        "index.hex",
        "snapshot.hex",
        "pack-group.hex",
        "index-group.hex",
        "pack-tree.hex",
        "lock.hex",
        "snapshot-copied.hex",
        "config-v3.hex",
    ] {
        let stored = std::fs::read_to_string(dir().join(name)).unwrap();
        let id = blake3::hash(&hex::decode(stored.trim()).unwrap())
            .to_hex()
            .to_string();
        // The files table names it first; the ID table after.
        let row = doc
            .lines()
            .rfind(|l| l.starts_with(&format!("| `{name}` | `")))
            .unwrap_or_else(|| panic!("no object ID row for {name}"));
        assert!(
            row.contains(&id),
            "{name}: its ID is {id}, the document says {row}"
        );
    }
    let keyfile = std::fs::read(dir().join("keyfile.json")).unwrap();
    documented("keyfile.json's ID", &blake3::hash(&keyfile).to_hex());
}

/// The FastCDC tables gear.md reproduces for writers without Rust are the
/// crate's: read from the document, compared entry by entry.
#[test]
fn gear_md_tables_are_the_crates() {
    let doc = std::fs::read_to_string(dir().join("../gear.md")).unwrap();
    let hex_words = |text: &str| -> Vec<u64> {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .filter_map(|w| w.strip_prefix("0x"))
            .filter(|w| w.len() == 16)
            .map(|w| u64::from_str_radix(w, 16).unwrap())
            .collect()
    };
    let gear_at = doc.find("## `GEAR`").expect("a GEAR section");
    let masks_at = doc.find("## `MASKS`").expect("a MASKS section");
    let gear = hex_words(&doc[gear_at..masks_at]);
    let (crate_gear, crate_gear_ls) = fastcdc::v2020::get_gear_with_seed(0);
    assert_eq!(gear.as_slice(), &crate_gear[..]);
    let shifted: Vec<u64> = gear.iter().map(|g| g << 1).collect();
    assert_eq!(shifted.as_slice(), &crate_gear_ls[..]);
    // The MASKS table: index, value, index, value per row.
    let mut masks = [None; 26];
    for row in doc[masks_at..].lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for pair in cells[1..].chunks(2).filter(|p| p.len() == 2) {
            if let (Ok(i), [v]) = (pair[0].parse::<usize>(), hex_words(pair[1]).as_slice()) {
                masks[i] = Some(*v);
            }
        }
    }
    let masks: Vec<u64> = masks.iter().map(|m| m.expect("every index")).collect();
    assert_eq!(masks.as_slice(), &fastcdc::v2020::MASKS[..]);
}

/// A tree with the node types and keys `tree.hex` leaves out: a FIFO, both
/// device kinds (with `rdev`), a socket and a file with `warnings`.
fn special_tree() -> Tree {
    let mut fifo = Node::new(b"fifo".to_vec(), NodeKind::Fifo);
    fifo.mode = 0o644;
    fifo.links = 1;
    let mut chr = Node::new(b"null".to_vec(), NodeKind::Chardev);
    chr.mode = 0o666;
    chr.links = 1;
    // makedev(1, 3): /dev/null.
    chr.rdev = 0x103;
    let mut blk = Node::new(b"sda".to_vec(), NodeKind::Blockdev);
    blk.mode = 0o660;
    blk.links = 1;
    blk.gid = 6;
    blk.group = "disk".into();
    // makedev(8, 0): /dev/sda.
    blk.rdev = 0x800;
    let mut sock = Node::new(b"sock".to_vec(), NodeKind::Socket);
    sock.mode = 0o755;
    sock.links = 1;
    let mut file = Node::new(b"grown.log".to_vec(), NodeKind::File);
    file.mode = 0o600;
    file.size = 11;
    file.links = 1;
    file.content = vec![master().blob_id(b"hello world")];
    file.warnings = vec!["changed-while-reading".into()];
    let mut t = Tree {
        nodes: vec![sock, file, blk, chr, fifo],
    };
    t.sort();
    t
}

#[test]
fn special_nodes_tree_vector() {
    let t = special_tree();
    let stored = check_vector("tree-special.hex", &t.encode());
    let back = Tree::decode(&stored, "tree").unwrap();
    assert_eq!(back, t);
    let kinds: Vec<NodeKind> = back.nodes.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        [
            NodeKind::Fifo,
            NodeKind::File,
            NodeKind::Chardev,
            NodeKind::Blockdev,
            NodeKind::Socket
        ]
    );
}

#[test]
fn tree_pack_vector() {
    // pack-tree.hex: a tree pack (type 1), salt a8 x 16, holding the trees of
    // tree.hex and tree-special.hex, each zstd-compressed.
    let k = master();
    let trees = [sample_tree().encode(), special_tree().encode()];
    let mut w = PackWriter::with_salt(&k, BlobType::Tree, [0xA8; 16]);
    for t in &trees {
        let (c, stored) = compress::compress(t, 3);
        w.add(k.blob_id(t), t.len() as u32, c, &stored);
    }
    let p = w.finish().unwrap();
    let stored = check_vector("pack-tree.hex", p.bytes().unwrap());
    assert_eq!(stored[5], 1, "pack type 1: trees");
    let id = Id::of_object(&stored);
    let entries = pack::read_header_from_bytes(&k, &id, &stored).unwrap();
    assert_eq!(entries.len(), 2);
    let cipher = k.pack_cipher(&pack::parse_prefix(&id, &stored).unwrap());
    for (e, t) in entries.iter().zip(&trees) {
        assert_eq!(e.blob_type, BlobType::Tree);
        assert_eq!(e.compression, Compression::Zstd);
        let ct = &stored[e.offset as usize..(e.offset + e.length) as usize];
        let plain = pack::open_blob(&k, &cipher, e, ct, &id, &cairn_engine::dict::NoDicts).unwrap();
        assert_eq!(&plain, t);
        // The blob AAD binds the type: read as a data blob, it does not open.
        let as_data = cairn_engine::blob::PackedBlob {
            blob_type: BlobType::Data,
            ..*e
        };
        assert!(
            pack::open_blob(&k, &cipher, &as_data, ct, &id, &cairn_engine::dict::NoDicts).is_err()
        );
    }
}

#[test]
fn lock_vector() {
    // lock.hex: envelope kind 4, salt 09 x 16, a lock record with every key set.
    let k = master();
    let rec = LockRecord {
        time: "2026-11-30T10:00:05.5Z".parse().unwrap(),
        exclusive: true,
        hostname: "vm".into(),
        username: "me".into(),
        pid: 4242,
        boot_id: "0f5d3c1e-6a4b-4a57-9d1b-3c2e8f6a7b90".into(),
        pid_namespace: "pid:[4026531836]".into(),
        machine_id: "5b7c9e0d1f2a43b4c5d6e7f8091a2b3c".into(),
        command: "prune".into(),
        started: Some("2026-11-30T10:00:00Z".parse().unwrap()),
    };
    let sealed =
        envelope::seal_with_salt(&k, ObjectKind::Lock, &envelope::to_msgpack(&rec), &[9; 16]);
    let stored = check_vector("lock.hex", &sealed);
    let back: LockRecord = envelope::open_msgpack(&k, ObjectKind::Lock, &stored, "lock").unwrap();
    assert_eq!(
        envelope::to_msgpack(&back),
        envelope::to_msgpack(&rec),
        "decodes back"
    );
    assert_eq!(back.started, rec.started);
    assert!(envelope::open(&k, ObjectKind::Snapshot, &stored, "lock").is_err());
}

#[test]
fn snapshot_optional_keys_and_config_v3_vectors() {
    let k = master();
    // snapshot-copied.hex: envelope kind 3, salt 0a x 16. A copy (of a copy)
    // of a snapshot holding a SQLite and a PostgreSQL capture, tagged twice
    // in this repository since (`original` the copy's first record, `former`
    // the one between): every optional key set but `hold`.
    let snap = Snapshot {
        time: chrono::DateTime::parse_from_rfc3339("2026-01-03T10:15:00Z").unwrap(),
        tree: Id([0x55; 32]),
        paths: vec!["/srv".into()],
        hostname: "db1".into(),
        username: "root".into(),
        tags: vec!["db".into()],
        parent: None,
        program_version: "cairn 0.1.0".into(),
        summary: None,
        partial: false,
        hold: false,
        original: Some(Id([0xc0; 32])),
        databases: vec![
            DatabaseCapture {
                kind: "sqlite".into(),
                path: "/srv/app.db".into(),
                database: None,
                server_version: Some("3.46.0".into()),
                format: None,
                tables: [("users".to_string(), 40_000u64), ("z".to_string(), 0)]
                    .into_iter()
                    .collect(),
            },
            DatabaseCapture {
                kind: "postgres".into(),
                path: "/srv/pg/shop.sql".into(),
                database: Some("shop".into()),
                server_version: Some("15.8".into()),
                format: Some("plain".into()),
                tables: Default::default(),
            },
        ],
        copied_from: Some(CopiedFrom {
            repository: Id([0xb1; 32]),
            snapshot: Id([0xb2; 32]),
            tree: Id([0xb3; 32]),
            origin: Some(Origin {
                repository: Id([0xb4; 32]),
                snapshot: Id([0xb5; 32]),
            }),
        }),
        former: vec![Id([0xc1; 32])],
        unknown: Default::default(),
    };
    let sealed = envelope::seal_with_salt(
        &k,
        ObjectKind::Snapshot,
        &envelope::to_msgpack(&snap),
        &[0x0a; 16],
    );
    let stored = check_vector("snapshot-copied.hex", &sealed);
    let back: Snapshot =
        envelope::open_msgpack(&k, ObjectKind::Snapshot, &stored, "snapshot").unwrap();
    assert_eq!(back, snap);

    // config-v3.hex: as config.hex (salt 01 x 16) at format version 3.
    let config = Config {
        version: 3,
        id: Id([0x11; 32]),
        chunker: ChunkerParams::default(),
        compression_level: 3,
        pack_size: 16 << 20,
        created: "2026-11-22T00:00:00+00:00".into(),
        append_only: false,
    };
    let sealed = envelope::seal_with_salt(
        &k,
        ObjectKind::Config,
        &envelope::to_msgpack(&config),
        &[1; 16],
    );
    let stored = check_vector("config-v3.hex", &sealed);
    let back: Config = envelope::open_msgpack(&k, ObjectKind::Config, &stored, "config").unwrap();
    assert_eq!(back, config);
}
