//! The whole Linux source tree (78,000 files) backs up and restores identical.
//!
//! Needs the tree on disk: `tests/run-all.sh` fetches it from Debian's
//! linux-source-6.1 package and runs this test with `--include-ignored`.

mod common;

use common::*;

#[test]
#[ignore = "needs the Linux source tree: run tests/run-all.sh (it fetches the tree and sets CAIRN_KERNEL_TREE)"]
fn linux_source_tree_round_trip() {
    let tree = std::env::var_os("CAIRN_KERNEL_TREE")
        .map(std::path::PathBuf::from)
        .expect("CAIRN_KERNEL_TREE must point at an unpacked Linux source tree (tests/fetch-test-data.sh)");
    assert!(
        tree.join("Makefile").is_file(),
        "{} is not a Linux source tree",
        tree.display()
    );

    let env = Env::new();
    let first = env.backup(&[&tree]);
    assert_eq!(first["partial"], false, "{first}");
    assert!(first["files_new"].as_u64().unwrap() > 70_000, "{first}");
    // Source code compresses: the repository must be much smaller than the tree.
    let total = first["total_bytes"].as_u64().unwrap();
    let added = first["data_added"].as_u64().unwrap();
    assert!(
        added * 3 < total,
        "stored {added} bytes for {total} bytes of source"
    );

    let again = env.backup(&[&tree]);
    assert_eq!(again["bytes_read"], 0, "{again}");

    let target = env.path("restore");
    env.restore("latest", &target);
    assert_same_tree(&tree, &restored(&target, &tree));
}
