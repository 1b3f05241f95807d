//! Unchanged re-backups: the parent's content is reused without an index
//! lookup per blob only while the local index provably still holds every
//! blob of the parent, and is re-stored when it does not.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    write_random(&src.join("d/big"), 6 << 20, 1);
    write_random(&src.join("d/e/small"), 10_000, 2);
    fs::write(src.join("text"), "hello world\n".repeat(10_000)).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    src
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {v}"))
}

/// The pack files of the repository with their sizes, largest first.
fn packs_by_size(repo: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = walkdir::WalkDir::new(repo.join("data"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.metadata().unwrap().len(), e.path().to_path_buf()))
        .collect();
    out.sort_by(|a, b| b.cmp(a));
    out
}

#[test]
fn unchanged_files_of_a_verified_parent_are_not_looked_up_until_prune() {
    let env = Env::new();
    let src = tree(&env);
    // Only in the first snapshot: prune will have something to delete.
    write_random(&src.join("extra"), 2 << 20, 3);
    let first = env.backup(&[&src]);
    assert_eq!(count(&first, "index_lookups_skipped"), 0, "no parent");
    let blobs = count(&first, "blobs_added");
    fs::remove_file(src.join("extra")).unwrap();

    // The first snapshot's blobs were all indexed when it was committed:
    // the next backup takes its unchanged files' content on trust.
    let second = env.backup(&[&src]);
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert_eq!(count(&second, "files_unmodified"), 4);
    assert_eq!(count(&second, "bytes_read"), 0);
    let changed_dir = count(&second, "index_lookups_skipped");
    // One lookup per content blob of the three non-empty files (the empty
    // one has none) and one per unchanged directory's tree (`d`, `d/e`):
    // `src` itself lost `extra`, so its tree and those above it are new.
    assert!(
        (3..blobs).contains(&changed_dir),
        "{changed_dir} of {blobs}: {second}"
    );
    // A snapshot written on the fast path is itself verified; nothing
    // changed since, so now every directory's tree is reused as well (all
    // of the first backup's blobs but `extra`'s).
    let second_tree = subtree_of(&env, &src);
    let third = env.backup(&[&src]);
    let skipped = count(&third, "index_lookups_skipped");
    assert!(
        (changed_dir + 1..blobs).contains(&skipped),
        "{skipped} of {blobs}, {changed_dir} before: {third}"
    );
    // Nothing below the source is stored again (the trees above it may be:
    // tests running alongside change /tmp).
    assert_eq!(subtree_of(&env, &src), second_tree);
    assert!(count(&third, "blobs_added") <= trees_above(&src), "{third}");

    // Prune deletes `extra`'s data and rewrites the local index: the record
    // is gone, so the next backup looks every blob up again (and finds
    // them), then records anew.
    env.ok(&["forget", first["snapshot_id"].as_str().unwrap()]);
    let pruned = env.json(&["prune"]);
    assert!(count(&pruned, "unused_blobs") > 0, "{pruned}");
    let fourth = env.backup(&[&src]);
    assert_eq!(count(&fourth, "index_lookups_skipped"), 0, "{fourth}");
    assert_eq!(count(&fourth, "files_unmodified"), 4);
    assert_eq!(count(&fourth, "bytes_read"), 0);
    let fifth = env.backup(&[&src]);
    let again = count(&fifth, "index_lookups_skipped");
    assert!(
        again.abs_diff(skipped) <= trees_above(&src),
        "{again} against {skipped}"
    );

    let target = env.path("r");
    env.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
    env.assert_check_clean();
}

#[test]
fn a_parent_blob_lost_and_dropped_by_repair_index_is_stored_again() {
    let env = Env::new();
    let src = tree(&env);
    let first = env.backup(&[&src]);
    // Verified: the fast path would be taken now.
    assert!(count(&env.backup(&[&src]), "index_lookups_skipped") > 0);

    // The largest pack (the 6 MiB file's data) is lost; `repair index`
    // rebuilds the index from the packs that are left.
    let packs = packs_by_size(&env.repo);
    assert!(packs[0].0 > 4 << 20, "{packs:?}");
    fs::remove_file(&packs[0].1).unwrap();
    env.ok(&["repair", "index"]);

    // The parent still names the lost blobs, but the index no longer holds
    // them: the files are read and their content stored again.
    let again = env.backup(&[&src]);
    assert_eq!(count(&again, "index_lookups_skipped"), 0, "{again}");
    assert!(count(&again, "bytes_read") >= 6 << 20, "{again}");
    assert!(count(&again, "data_added") >= 6 << 20, "{again}");
    assert!(count(&again, "files_unmodified") < 4, "{again}");

    // Once the snapshots that name the lost pack are forgotten, the
    // repository checks clean and the new snapshot restores the bytes.
    let keep = again["snapshot_id"].as_str().unwrap();
    let snaps = env.json(&["snapshots"]);
    for s in snaps.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        if id != keep {
            env.ok(&["forget", id]);
        }
    }
    assert_ne!(first["snapshot_id"].as_str().unwrap(), keep);
    env.ok(&["prune"]);
    // Nothing damaged the cache: check keeps it (and its verified
    // snapshots, which the fast path below needs).
    let report = env.assert_check_clean();
    assert!(!report.to_string().contains("lacked"), "{report}");
    let target = env.path("r");
    env.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
    // And the fast path is back for the next backup.
    let last = env.backup(&[&src]);
    assert!(count(&last, "index_lookups_skipped") > 0, "{last}");
}

/// A file attached to a loop device of its own (as root), detached when
/// dropped.
struct LoopDevice(String);

impl LoopDevice {
    fn attach(image: &Path) -> LoopDevice {
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .expect("run losetup");
        assert!(out.status.success(), "losetup {}", image.display());
        LoopDevice(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }

    /// Mounts the device at `at`, unmounted when the guard is dropped.
    fn mount(&self, at: &Path) -> Mounted {
        let st = std::process::Command::new("mount")
            .arg(&self.0)
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount {} at {}", self.0, at.display());
        Mounted(at.to_path_buf())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_disk_attached_again_under_another_device_number_keeps_its_trees() {
    // A USB disk enumerated anew, or a btrfs, ZFS or LVM snapshot mounted
    // anew, has the same files under another device number: recorded in
    // every node, it made every tree of the disk new at each such backup.
    use std::os::unix::fs::MetadataExt;
    assert!(
        is_root(),
        "this test mounts loop devices: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let image = env.path("disk.img");
    fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
    // 256-byte inodes: times to the nanosecond, whatever e2fsprogs'
    // default for a disk this small (whole seconds made files "racy").
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-I", "256"])
        .arg(&image)
        .status()
        .expect("run mkfs.ext4");
    assert!(st.success(), "mkfs.ext4");
    let disk = env.path("disk");
    fs::create_dir(&disk).unwrap();

    // The first device stays attached, so the second is another one.
    let first_device = LoopDevice::attach(&image);
    let mounted = first_device.mount(&disk);
    fs::create_dir_all(disk.join("d/e")).unwrap();
    write_random(&disk.join("d/big"), 1 << 20, 1);
    write_random(&disk.join("d/e/small"), 10_000, 2);
    fs::create_dir(disk.join("links")).unwrap();
    fs::write(disk.join("links/a"), "one file, two names").unwrap();
    fs::hard_link(disk.join("links/a"), disk.join("links/b")).unwrap();
    let dev_before = fs::metadata(&disk).unwrap().dev();
    let first = env.backup(&[&disk]);
    let (d_tree, links_tree) = (
        subtree_of(&env, &disk.join("d")),
        subtree_of(&env, &disk.join("links")),
    );
    drop(mounted);

    let second_device = LoopDevice::attach(&image);
    let _mounted = second_device.mount(&disk);
    assert_ne!(
        fs::metadata(&disk).unwrap().dev(),
        dev_before,
        "same device"
    );
    let second = env.backup(&[&disk]);
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert_eq!(count(&second, "bytes_read"), 0, "{second}");
    // The trees without hard links are the same trees.
    assert_eq!(subtree_of(&env, &disk.join("d")), d_tree);
    // Hard links keep their device (it tells their group apart): their
    // directory's tree is new, and so are those above it only.
    assert_ne!(subtree_of(&env, &disk.join("links")), links_tree);
    assert!(
        count(&second, "blobs_added") <= 2 + trees_above(&disk),
        "{second}"
    );

    let target = env.path("r");
    env.restore("latest", &target);
    let back = restored(&target, &disk);
    assert_same_tree(&disk, &back);
    let ino = |name: &str| fs::metadata(back.join(name)).unwrap().ino();
    assert_eq!(ino("links/a"), ino("links/b"), "the hard link is kept");
    env.assert_check_clean();
}
