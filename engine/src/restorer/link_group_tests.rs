//! Hard link groups whose names were recorded with different contents.

use super::*;
use crate::blob::BlobType;
use crate::repository::test_repository;
use crate::saver::BlobSaver;

/// A file node of source inode 7 (two names) holding `content`.
fn linked(name: &str, saver: &BlobSaver, content: &[u8]) -> Node {
    let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::File);
    n.mode = 0o644;
    (n.device, n.inode, n.links) = (1, 7, 2);
    n.size = content.len() as u64;
    n.content = vec![saver.save(BlobType::Data, content).unwrap().0];
    n
}

fn dir(name: &str, saver: &BlobSaver, nodes: Vec<Node>) -> Node {
    let mut t = Tree { nodes };
    t.sort();
    let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::Dir);
    n.mode = 0o755;
    n.subtree = Some(saver.save(BlobType::Tree, &t.encode()).unwrap().0);
    n
}

#[test]
fn names_of_one_inode_with_different_contents_are_restored_apart() {
    let dir_ = tempfile::tempdir().unwrap();
    let repo = test_repository(dir_.path(), Default::default());
    let saver = BlobSaver::new(&repo);
    // What a backup records when the two names of `a/p` are deleted and a
    // new linked pair gets their inode number while it runs (or a linked
    // file is rewritten between the reads of its names).
    let old = b"AAA-old-file".as_slice();
    let new = b"BBB-new-unrelated-file".as_slice();
    let a = dir(
        "a",
        &saver,
        vec![linked("p", &saver, old), linked("p2", &saver, old)],
    );
    let zz = dir(
        "zz",
        &saver,
        vec![linked("new", &saver, new), linked("new2", &saver, new)],
    );
    let root = dir("", &saver, vec![a, zz]);
    saver.flush().unwrap();
    let snap = Snapshot {
        time: chrono::Utc::now().fixed_offset(),
        tree: root.subtree.unwrap(),
        paths: vec!["/".into()],
        hostname: "h".into(),
        username: "u".into(),
        tags: Vec::new(),
        parent: None,
        program_version: "test".into(),
        summary: None,
        partial: false,
        hold: false,
        original: None,
        databases: Vec::new(),
        copied_from: None,
        former: Vec::new(),
        unknown: Default::default(),
    };
    let target = dir_.path().join("target");
    let opts = RestoreOptions {
        target: target.clone(),
        verify: true,
        ..Default::default()
    };
    let summary = restore(&repo, &snap, &opts, &NoRestoreProgress).unwrap();
    assert_eq!(summary.files, 4);
    let read = |p: &str| fs::read(target.join(p)).unwrap();
    assert_eq!(read("a/p"), old);
    assert_eq!(read("a/p2"), old);
    assert_eq!(read("zz/new"), new, "linked to another file's bytes");
    assert_eq!(read("zz/new2"), new);
    let ino = |p: &str| fs::metadata(target.join(p)).unwrap().ino();
    // Each group of equal contents is still one inode.
    assert_eq!(ino("a/p"), ino("a/p2"));
    assert_eq!(ino("zz/new"), ino("zz/new2"));
    assert_ne!(ino("a/p"), ino("zz/new"));
}
