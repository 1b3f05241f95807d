//! Regression tests for data-safety bugs found in review.

mod common;

use std::fs;

use common::*;

#[test]
fn a_file_with_the_bytes_of_a_tree_does_not_break_snapshots() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("empty-dir")).unwrap();
    // MessagePack of an empty tree: {"nodes": []}.
    fs::write(
        src.join("looks-like-a-tree"),
        [0x81, 0xa5, b'n', b'o', b'd', b'e', b's', 0x90],
    )
    .unwrap();
    env.backup(&[&src]);
    fs::create_dir_all(src.join("another-empty-dir")).unwrap();
    env.backup(&[&src]);
    env.assert_check_clean();
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
    env.ok(&["prune"]);
}

#[test]
fn restore_overwrite_never_keeps_existing_hard_link_members() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"snapshot content").unwrap();
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    let d = restored(&t, &src);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("a"), b"USER FILE A").unwrap();
    fs::write(d.join("b"), b"USER FILE B").unwrap();
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--overwrite",
        "never",
    ]);
    assert_eq!(fs::read(d.join("a")).unwrap(), b"USER FILE A");
    assert_eq!(fs::read(d.join("b")).unwrap(), b"USER FILE B");
    // And a normal restore links them again.
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--overwrite",
        "always",
    ]);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(d.join("a")).unwrap().ino(),
        fs::metadata(d.join("b")).unwrap().ino()
    );
    assert_eq!(fs::read(d.join("b")).unwrap(), b"snapshot content");
}

#[test]
fn tag_after_an_interrupted_hold_keeps_the_hold() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    let s = env.backup(&[&src]);
    let id = s["snapshot_id"].as_str().unwrap().to_string();
    let old = fs::read(env.repo.join("snapshots").join(&id)).unwrap();
    env.ok(&["hold", &id]);
    // Simulate a crash between writing the held record and deleting the old one.
    fs::write(env.repo.join("snapshots").join(&id), &old).unwrap();
    env.ok(&["tag", &id, "--add", "foo"]);
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    assert_eq!(snaps[0]["hold"], true, "{snaps}");
    let new_id = snaps[0]["id"].as_str().unwrap().to_string();
    // A held snapshot must not be forgotten.
    env.fails(&["forget", &new_id], 1);
}

#[test]
fn a_pack_with_a_damaged_header_is_neither_unindexed_nor_pruned() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("f"), 300_000, 3);
    env.backup(&[&src]);
    let pack = largest_pack(&env.repo);
    let mut bytes = fs::read(&pack).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40; // inside the encrypted header
    fs::write(&pack, &bytes).unwrap();
    env.ok(&["repair", "index"]);
    env.ok(&["prune"]);
    assert!(pack.exists(), "prune deleted a pack that holds live blobs");
    let t = env.path("t");
    env.restore("latest", &t);
    assert!(files_equal(&src.join("f"), &restored(&t, &src).join("f")));
}
