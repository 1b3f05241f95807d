//! Property tests: every encoder round-trips through its decoder, for
//! arbitrary contents (names as arbitrary bytes, extreme timestamps, empty
//! and incompressible blobs).

use cairn_engine::blob::{BlobType, PackedBlob};
use cairn_engine::compress::{self, Compression};
use cairn_engine::crypto::MasterKey;
use cairn_engine::envelope::{self, ObjectKind};
use cairn_engine::id::Id;
use cairn_engine::indexfile::{IndexFile, IndexPack};
use cairn_engine::pack::{self, PackWriter};
use cairn_engine::snapshot::{CopiedFrom, Origin, Snapshot, Summary};
use cairn_engine::tree::{Node, NodeKind, Timestamp, Tree, Xattr};
use proptest::prelude::*;

fn key() -> MasterKey {
    MasterKey::from_bytes([42; 32])
}

fn arb_id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id)
}

fn arb_ts() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0u32..1_000_000_000).prop_map(|(sec, nsec)| Timestamp { sec, nsec })
}

fn arb_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        Just(NodeKind::File),
        Just(NodeKind::Dir),
        Just(NodeKind::Symlink),
        Just(NodeKind::Fifo),
        Just(NodeKind::Chardev),
        Just(NodeKind::Blockdev),
        Just(NodeKind::Socket),
    ]
}

fn arb_node() -> impl Strategy<Value = Node> {
    (
        proptest::collection::vec(any::<u8>(), 1..255),
        arb_kind(),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()),
        (arb_ts(), arb_ts(), arb_ts()),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        proptest::collection::vec(arb_id(), 0..4),
        proptest::option::of(arb_id()),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 1..16),
                proptest::collection::vec(any::<u8>(), 0..16),
            ),
            0..3,
        ),
        ".*",
    )
        .prop_map(
            |(
                name,
                kind,
                (mode, uid, gid, size),
                (mtime, atime, ctime),
                (inode, device, links, rdev),
                content,
                subtree,
                link,
                xattrs,
                user,
            )| {
                let mut n = Node::new(name, kind);
                n.mode = mode;
                n.uid = uid;
                n.gid = gid;
                n.size = size;
                n.mtime = mtime;
                n.atime = atime;
                n.ctime = ctime;
                n.inode = inode;
                n.device = device;
                n.links = links;
                n.rdev = rdev;
                n.content = content;
                n.subtree = subtree;
                n.link_target = link;
                n.xattrs = xattrs
                    .into_iter()
                    .map(|(name, value)| Xattr { name, value })
                    .collect();
                n.user = user;
                n
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 0..12), text in 0usize..20_000, tree in any::<bool>()) {
        let k = key();
        let mut all = blobs.clone();
        all.push("abc".repeat(text).into_bytes());
        let t = if tree { BlobType::Tree } else { BlobType::Data };
        let mut w = PackWriter::new(&k, t);
        for b in &all {
            let (c, s) = compress::compress(b, 3);
            w.add(k.blob_id(b), b.len() as u32, c, &s);
        }
        let p = w.finish().unwrap();
        let pb = p.bytes().unwrap();
        pack::verify_finished(&k, &p, &cairn_engine::dict::NoDicts).unwrap();
        let entries = pack::read_header_from_bytes(&k, &p.id, pb).unwrap();
        prop_assert_eq!(&entries, &p.entries);
        let cipher = k.pack_cipher(&pack::parse_prefix(&p.id, pb).unwrap());
        for (e, b) in entries.iter().zip(&all) {
            prop_assert_eq!(e.blob_type, t);
            let ct = &pb[e.offset as usize..(e.offset + e.length) as usize];
            prop_assert_eq!(&pack::open_blob(&k, &cipher, e, ct, &p.id, &cairn_engine::dict::NoDicts).unwrap(), b);
        }
    }

    #[test]
    fn pack_any_single_bit_flip_is_detected(len in 1usize..3000, pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let k = key();
        let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let mut w = PackWriter::new(&k, BlobType::Data);
        let (c, s) = compress::compress(&data, 3);
        w.add(k.blob_id(&data), data.len() as u32, c, &s);
        let p = w.finish().unwrap();
        let pb = p.bytes().unwrap();
        let mut bad = pb.to_vec();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        // Either the header or the blob fails to authenticate: never wrong data.
        let res = pack::read_header_from_bytes(&k, &p.id, &bad).and_then(|entries| {
            let cipher = k.pack_cipher(&pack::parse_prefix(&p.id, &bad)?);
            let e = &entries[0];
            let ct = bad.get(e.offset as usize..(e.offset + e.length) as usize).ok_or_else(|| cairn_engine::Error::corrupt("x", "range"))?;
            pack::open_blob(&k, &cipher, e, ct, &p.id, &cairn_engine::dict::NoDicts)
        });
        prop_assert!(res.is_err());
    }

    #[test]
    fn index_file_round_trip(packs in proptest::collection::vec((arb_id(), any::<u64>(), proptest::collection::vec((arb_id(), any::<bool>(), any::<u32>(), any::<u32>(), any::<u32>(), 0u8..4, any::<u32>()), 0..8)), 0..6), sup in proptest::collection::vec(arb_id(), 0..3)) {
        let f = IndexFile {
            packs: packs.into_iter().map(|(id, size, blobs)| IndexPack {
                id,
                size,
                blobs: blobs.into_iter().map(|(id, tree, offset, length, raw_length, z, start)| {
                    let compression = Compression::from_byte(z).unwrap();
                    PackedBlob {
                        id,
                        blob_type: if tree { BlobType::Tree } else { BlobType::Data },
                        offset, length, raw_length, compression,
                        // Only group members carry a start (and it may be 0).
                        start: (compression == Compression::ZstdGroup).then_some(start),
                    }
                }).collect(),
            }).collect(),
            supersedes: sup,
        };
        let sealed = envelope::seal_msgpack(&key(), ObjectKind::Index, &f);
        let back: IndexFile = envelope::open_msgpack(&key(), ObjectKind::Index, &sealed, "index").unwrap();
        prop_assert_eq!(back, f);
    }

    #[test]
    fn tree_round_trip(nodes in proptest::collection::vec(arb_node(), 0..20)) {
        let mut t = Tree { nodes };
        t.sort();
        let back = Tree::decode(&t.encode(), "tree").unwrap();
        prop_assert_eq!(back, t);
    }

    #[test]
    fn snapshot_round_trip(paths in proptest::collection::vec(".*", 1..4), tags in proptest::collection::vec("[a-z]{1,8}", 0..3), tree in arb_id(), parent in proptest::option::of(arb_id()), secs in -2_000_000_000i64..8_000_000_000, nanos in 0u32..1_000_000_000, partial in any::<bool>(), n in any::<u64>(), hold in any::<bool>(), original in proptest::option::of(arb_id()), former in proptest::collection::vec(arb_id(), 0..3), copied in proptest::option::of((arb_id(), arb_id(), arb_id(), proptest::option::of((arb_id(), arb_id()))))) {
        let time = chrono::DateTime::from_timestamp(secs, nanos).unwrap().fixed_offset();
        let s = Snapshot {
            time, tree, paths, hostname: "h".into(), username: "u".into(), tags, parent,
            program_version: "cairn test".into(),
            summary: Some(Summary { files_new: n, data_added: n / 2, ..Summary::default() }),
            partial, hold, original, databases: Vec::new(),
            copied_from: copied.map(|(repository, snapshot, tree, origin)| CopiedFrom {
                repository, snapshot, tree,
                origin: origin.map(|(repository, snapshot)| Origin { repository, snapshot }),
            }),
            former,
            unknown: Default::default(),
        };
        let sealed = envelope::seal_msgpack(&key(), ObjectKind::Snapshot, &s);
        let back: Snapshot = envelope::open_msgpack(&key(), ObjectKind::Snapshot, &sealed, "snapshot").unwrap();
        prop_assert_eq!(back, s);
    }
}
