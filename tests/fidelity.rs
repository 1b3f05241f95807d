//! Metadata fidelity: every kind of file and every piece of metadata comes
//! back exactly, compared field by field with lstat.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use filetime::FileTime;

/// A POSIX ACL as the kernel stores it in `system.posix_acl_access`:
/// user::rw-, user:1000:r--, group::r--, mask::r--, other::r--.
fn acl_xattr() -> Vec<u8> {
    acl_of(&[
        (0x01, 6, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ])
}

/// The xattr value of an ACL with these (tag, permissions, ID) entries.
fn acl_of(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/empty")).unwrap();
    fs::create_dir_all(root.join("links/other")).unwrap();
    let f = |p: &str, data: &[u8], mode: u32| {
        let path = root.join(p);
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    f("setuid", b"su", 0o4755);
    f("setgid", b"sg", 0o2750);
    f("private", b"secret", 0o600);
    f("dir/plain", b"plain", 0o644);
    fs::set_permissions(root.join("dir/empty"), fs::Permissions::from_mode(0o1777)).unwrap();

    // Names are bytes.
    fs::write(root.join(OsStr::from_bytes(b"bad-utf8-\xff\xfe")), b"bytes").unwrap();
    fs::write(root.join("new\nline"), b"nl").unwrap();
    fs::write(root.join("n".repeat(255)), b"long name").unwrap();

    // Symlinks of every shape: stored as links, never followed.
    std::os::unix::fs::symlink("dir/plain", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();

    // Hard links, across directories.
    fs::write(root.join("links/a"), b"linked content").unwrap();
    fs::hard_link(root.join("links/a"), root.join("links/b")).unwrap();
    fs::hard_link(root.join("links/a"), root.join("links/other/c")).unwrap();
    // A symlink and a FIFO with two names each (restored as two inodes).
    std::os::unix::fs::symlink("a", root.join("links/sym")).unwrap();
    fs::hard_link(root.join("links/sym"), root.join("links/other/sym2")).unwrap();
    mknod(&root.join("links/fifo"), libc::S_IFIFO, 0o600, 0);
    fs::hard_link(root.join("links/fifo"), root.join("links/other/fifo2")).unwrap();

    // Special files.
    mknod(&root.join("fifo"), libc::S_IFIFO, 0o640, 0);
    mknod(
        &root.join("chardev"),
        libc::S_IFCHR,
        0o666,
        libc::makedev(1, 3),
    );
    mknod(
        &root.join("blockdev"),
        libc::S_IFBLK,
        0o660,
        libc::makedev(7, 0),
    );
    let _sock = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    std::mem::forget(_sock);

    // Sparse: 1 GiB with two 4 KiB islands of data.
    let sparse = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(root.join("sparse"))
        .unwrap();
    sparse.set_len(1 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&[0xAB; 4096], 0).unwrap();
    sparse.write_all_at(&[0xCD; 4096], 512 << 20).unwrap();
    drop(sparse);

    // Extended attributes, including a POSIX ACL.
    xattr::set(root.join("dir/plain"), "user.comment", b"hello \x00 xattr").unwrap();
    xattr::set(root.join("dir"), "user.dirattr", b"on a directory").unwrap();
    xattr::set(
        root.join("private"),
        "system.posix_acl_access",
        &acl_xattr(),
    )
    .unwrap();

    // Owners: numeric IDs without names, and a named system user.
    std::os::unix::fs::lchown(root.join("dir/plain"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(root.join("rel-link"), Some(4321), Some(8765)).unwrap();
    std::os::unix::fs::lchown(root.join("private"), Some(1), Some(1)).unwrap(); // daemon

    // Times to the nanosecond, before 1970 and after 2038; directories too.
    let t = |p: &str, a: (i64, u32), m: (i64, u32)| {
        filetime::set_symlink_file_times(
            root.join(p),
            FileTime::from_unix_time(a.0, a.1),
            FileTime::from_unix_time(m.0, m.1),
        )
        .unwrap();
    };
    t("setuid", (1_600_000_000, 1), (-2_000_000_000, 999_999_999));
    t("setgid", (1_700_000_000, 2), (4_200_000_000, 123_456_789));
    t("rel-link", (1_500_000_000, 3), (1_400_000_000, 7));
    t("dir/empty", (1_300_000_000, 4), (1_200_000_000, 5));
    t("dir", (1_100_000_000, 6), (1_000_000_000, 8));
    t("links", (1_100_000_000, 6), (1_000_000_009, 9));
}

#[test]
fn every_kind_of_file_and_metadata_round_trips() {
    assert!(
        is_root(),
        "this test creates devices and sets owners: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    build_tree(&src);

    // The FIFO must not make the backup hang.
    let out = output_within(
        {
            let mut c = env.cmd();
            c.args(["--json", "backup", src.to_str().unwrap()]);
            c
        },
        120,
    );
    assert_no_panic(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    // The socket is left out without a word (a warning at every run).
    assert_eq!(summary["warnings"], serde_json::json!([]), "{summary}");
    // Named as a source, it is said (an empty snapshot, exit 0, before).
    let out = Env::new()
        .cmd()
        .args(["backup"])
        .arg(src.join("socket"))
        .output()
        .unwrap();
    let err = exits(&out, 3);
    assert!(err.contains("backups leave sockets out"), "{err}");
    // The sparse gigabyte costs almost nothing in the repository.
    assert!(
        summary["data_added"].as_u64().unwrap() < 2 << 20,
        "{summary}"
    );

    let target = env.path("restore");
    env.restore("latest", &target);
    let dst = restored(&target, &src);

    // atime (checked before anything reads the restored tree) is restored as recorded (the source's may have moved when it was read).
    let m = fs::symlink_metadata(dst.join("rel-link")).unwrap();
    assert_eq!((m.atime(), m.atime_nsec()), (1_500_000_000, 3));
    let mut src_entries = entries(&src);
    src_entries.retain(|p| p != Path::new("socket"));
    assert_eq!(src_entries, entries(&dst));
    for rel in &src_entries {
        let (a, b) = (src.join(rel), dst.join(rel));
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap(),
        );
        let what = rel.display();
        assert_eq!(ma.file_type(), mb.file_type(), "type of {what}");
        assert_eq!(ma.mode(), mb.mode(), "mode of {what}");
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "owner of {what}"
        );
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {what}"
        );
        assert_eq!(ma.rdev(), mb.rdev(), "device number of {what}");
        assert_eq!(ma.nlink(), mb.nlink(), "link count of {what}");
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&a).unwrap(),
                fs::read_link(&b).unwrap(),
                "target of {what}"
            );
        } else {
            assert_eq!(xattrs(&a), xattrs(&b), "xattrs of {what}");
        }
        if ma.is_file() {
            assert_eq!(ma.len(), mb.len(), "size of {what}");
            assert!(
                mb.blocks() <= ma.blocks(),
                "{what}: restored uses {} blocks, source {}",
                mb.blocks(),
                ma.blocks()
            );
            assert!(files_equal(&a, &b), "content of {what}");
        }
    }
    // Hard links are one inode again.
    let ino = |p: &str| fs::metadata(dst.join(p)).unwrap().ino();
    assert_eq!(ino("links/a"), ino("links/b"));
    assert_eq!(ino("links/a"), ino("links/other/c"));
    let lino = |p: &str| fs::symlink_metadata(dst.join(p)).unwrap().ino();
    assert_eq!(lino("links/sym"), lino("links/other/sym2"));
    assert_eq!(lino("links/fifo"), lino("links/other/fifo2"));
    // The ACL came back as an ACL.
    assert_eq!(
        xattr::get(dst.join("private"), "system.posix_acl_access")
            .unwrap()
            .unwrap(),
        acl_xattr()
    );

    // Owner names are recorded, and --numeric-ids ignores them.
    let target2 = env.path("restore-numeric");
    env.ok(&[
        "restore",
        "latest",
        "--numeric-ids",
        "--target",
        target2.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::metadata(restored(&target2, &src).join("private"))
            .unwrap()
            .uid(),
        1
    );
}

/// Root restores a user's home in place while the user can still write to it:
/// a symlink the user put where a setuid file was is replaced, never
/// followed, and every directory ends with the user's owner and mode again.
#[test]
fn restore_in_place_over_a_tree_another_user_owns() {
    use std::os::unix::fs::lchown;
    assert!(
        is_root(),
        "this test sets owners: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let home = env.path("home");
    fs::create_dir_all(home.join("sub/deeper")).unwrap();
    fs::write(home.join("sub/deeper/tool"), b"a setuid tool").unwrap();
    fs::write(home.join("notes"), b"notes").unwrap();
    let mode = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    for rel in ["", "sub", "sub/deeper", "sub/deeper/tool", "notes"] {
        lchown(home.join(rel), Some(1234), Some(1234)).unwrap();
    }
    // After chown, which clears the setuid bit.
    mode(&home.join("sub/deeper/tool"), 0o4755);
    for rel in ["", "sub", "sub/deeper"] {
        mode(&home.join(rel), 0o750);
    }
    env.ok(&["backup", home.to_str().unwrap()]);

    // The user opens the tree to everyone and points the tool's name at a
    // file only root may read.
    let secret = env.path("secret");
    fs::write(&secret, b"root only").unwrap();
    mode(&secret, 0o600);
    for rel in ["", "sub", "sub/deeper"] {
        mode(&home.join(rel), 0o777);
    }
    fs::remove_file(home.join("sub/deeper/tool")).unwrap();
    std::os::unix::fs::symlink(&secret, home.join("sub/deeper/tool")).unwrap();

    let spec = format!("latest:{}", home.display());
    env.ok(&[
        "restore",
        &spec,
        "--target",
        home.to_str().unwrap(),
        "--overwrite",
        "always",
    ]);
    let m = fs::metadata(&secret).unwrap();
    assert_eq!(
        m.mode() & 0o7777,
        0o600,
        "the file behind the link changed mode"
    );
    assert_eq!(fs::read(&secret).unwrap(), b"root only");
    let tool = fs::symlink_metadata(home.join("sub/deeper/tool")).unwrap();
    assert!(tool.is_file());
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    assert_eq!((tool.uid(), tool.gid()), (1234, 1234));
    assert_eq!(
        fs::read(home.join("sub/deeper/tool")).unwrap(),
        b"a setuid tool"
    );
    for rel in ["", "sub", "sub/deeper"] {
        let m = fs::symlink_metadata(home.join(rel)).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o750, "mode of {rel:?}");
        assert_eq!((m.uid(), m.gid()), (1234, 1234), "owner of {rel:?}");
    }

    // The whole snapshot into a directory the user owns: taken over while the
    // restore runs, and given back as it was (the snapshot has no metadata for it).
    let target = env.path("target");
    fs::create_dir(&target).unwrap();
    lchown(&target, Some(1234), Some(1234)).unwrap();
    mode(&target, 0o777);
    let t = target.to_str().unwrap();
    env.ok(&["restore", "latest", "--target", t]);
    let m = fs::symlink_metadata(&target).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 1234, 0o777));
    let back = restored(&target, &home);
    // Again, for one file that is already there: nothing is written, and the
    // directories taken over on the way to it come back as they were.
    let notes = format!("{}/notes", home.display());
    env.ok(&["restore", "latest", "--target", t, "--include", &notes]);
    let m = fs::symlink_metadata(&back).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 1234, 0o750));
    let m = fs::symlink_metadata(&target).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 1234, 0o777));
}

/// Creates `depth` nested directories named `name` under `root`, going
/// through directory descriptors (the full path exceeds PATH_MAX), and a
/// file at the bottom.
fn deep_chain(root: &Path, name: &str, depth: usize) {
    use std::os::fd::AsRawFd;
    let mut bottom = fs::File::open(root).unwrap();
    for _ in 0..depth {
        let p = format!("/proc/self/fd/{}/{name}", bottom.as_raw_fd());
        fs::create_dir(&p).unwrap();
        bottom = fs::File::open(&p).unwrap();
    }
    let file = format!("/proc/self/fd/{}/bottom.txt", bottom.as_raw_fd());
    fs::write(&file, b"deep down").unwrap();
    // A hard link down there too (restored as a copy: see restorer.rs).
    fs::hard_link(
        &file,
        format!("/proc/self/fd/{}/bottom-link.txt", bottom.as_raw_fd()),
    )
    .unwrap();
}

fn read_deep(root: &Path, name: &str, depth: usize, file: &str) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let mut d = fs::File::open(root).unwrap();
    for _ in 0..depth {
        d = fs::File::open(format!("/proc/self/fd/{}/{name}", d.as_raw_fd())).unwrap();
    }
    fs::read(format!("/proc/self/fd/{}/{file}", d.as_raw_fd())).unwrap()
}

/// The mode and mtime of every directory of the chain, top first.
fn deep_meta(root: &Path, name: &str, depth: usize) -> Vec<(u32, i64)> {
    use std::os::fd::AsRawFd;
    let mut d = fs::File::open(root).unwrap();
    let mut out = Vec::new();
    for _ in 0..depth {
        d = fs::File::open(format!("/proc/self/fd/{}/{name}", d.as_raw_fd())).unwrap();
        let m = d.metadata().unwrap();
        out.push((m.mode(), m.mtime()));
    }
    out
}

#[test]
fn paths_longer_than_path_max_round_trip() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let name = "d".repeat(200);
    let depth = 30; // 30 × 201 bytes: over 6,000 bytes, beyond PATH_MAX (4096)
    deep_chain(&src, &name, depth);
    let s = env.backup(&[&src]);
    assert_eq!(s["partial"], false, "{s}");
    assert_eq!(s["files_new"], 2, "{s}");
    let target = env.path("t");
    env.restore("latest", &target);
    for file in ["bottom.txt", "bottom-link.txt"] {
        assert_eq!(
            read_deep(&restored(&target, &src), &name, depth, file),
            b"deep down"
        );
    }
    // Directories reached through descriptors get their metadata too.
    assert_eq!(
        deep_meta(&restored(&target, &src), &name, depth),
        deep_meta(&src, &name, depth)
    );
    // Again: everything is there, and a dry run says so as the real run
    // does (it counted the deep file as one to write).
    let t = target.to_str().unwrap();
    for dry in [true, false] {
        let mut args = vec!["restore", "latest", "--target", t];
        if dry {
            args.push("--dry-run");
        }
        let r = env.json(&args);
        assert_eq!(
            (&r["files"], &r["bytes"]),
            (&0.into(), &0.into()),
            "dry run {dry}: {r}"
        );
    }
}

#[test]
fn a_tree_thousands_of_levels_deep_backs_up_restores_and_copies() {
    // Every walk recurses once per level: a 2 MiB thread stack held about
    // 390 levels, and the process crashed below that.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let depth = 3000;
    deep_chain(&src, "d", depth);
    let first = env.backup(&[&src]);
    assert_eq!(first["partial"], false, "{first}");
    assert_eq!(first["files_new"], 2, "{first}");
    // Changed at the bottom: the next backup walks down beside its parent.
    let bottom = (0..depth).fold(fs::File::open(&src).unwrap(), |d, _| {
        use std::os::fd::AsRawFd;
        fs::File::open(format!("/proc/self/fd/{}/d", d.as_raw_fd())).unwrap()
    });
    {
        use std::os::fd::AsRawFd;
        fs::write(
            format!("/proc/self/fd/{}/bottom.txt", bottom.as_raw_fd()),
            b"changed",
        )
        .unwrap();
    }
    let second = env.backup(&[&src]);
    // Both names of the hard link.
    assert_eq!(second["files_changed"], 2, "{second}");
    let diff = env.ok(&[
        "diff",
        first["snapshot_id"].as_str().unwrap(),
        second["snapshot_id"].as_str().unwrap(),
    ]);
    assert!(
        diff.contains("M    ") && diff.contains("/d/bottom.txt"),
        "{diff}"
    );
    env.assert_check_clean();
    let target = env.path("t");
    env.restore("latest", &target);
    assert_eq!(
        read_deep(&restored(&target, &src), "d", depth, "bottom.txt"),
        b"changed"
    );
    let dst = Env::new();
    copy(&dst, &env, &[]);
    let target = dst.path("t");
    dst.restore("latest", &target);
    assert_eq!(
        read_deep(&restored(&target, &src), "d", depth, "bottom-link.txt"),
        b"changed"
    );
}

/// `security.capability` granting CAP_NET_RAW (version 2, effective).
fn capability_xattr() -> Vec<u8> {
    let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
    for word in [1u32 << 13, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

/// An in-place restore over a tree whose content is intact but whose
/// metadata was damaged (`chown -R`, `chmod -R`, `setfattr`) puts owner,
/// mode, extended attributes (an ACL and a file capability among them)
/// back on the files it does not rewrite, too.
#[test]
fn an_in_place_restore_puts_metadata_back_on_unchanged_files() {
    use std::os::unix::fs::lchown;
    assert!(
        is_root(),
        "this test sets owners: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("tool"), b"setuid, with a capability").unwrap();
    fs::write(src.join("dir/notes"), b"notes").unwrap();
    lchown(src.join("tool"), Some(1234), Some(1234)).unwrap();
    lchown(src.join("dir"), Some(4321), Some(4321)).unwrap();
    lchown(src.join("dir/notes"), Some(4321), Some(4321)).unwrap();
    xattr::set(
        src.join("dir/notes"),
        "system.posix_acl_access",
        &acl_xattr(),
    )
    .unwrap();
    // After chown, which clears setuid bits and capabilities.
    let mode =
        |p: &str, m: u32| fs::set_permissions(src.join(p), fs::Permissions::from_mode(m)).unwrap();
    mode("tool", 0o4750);
    mode("dir/notes", 0o640);
    mode("dir", 0o750);
    xattr::set(src.join("tool"), "security.capability", &capability_xattr()).unwrap();
    xattr::set(src.join("dir/notes"), "user.comment", b"keep me").unwrap();
    env.backup(&[&src]);
    let target = env.path("target");
    env.restore("latest", &target);
    let dst = restored(&target, &src);

    // The damage: content and mtimes stay as they were.
    for rel in ["tool", "dir", "dir/notes"] {
        let p = dst.join(rel);
        lchown(&p, Some(0), Some(0)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
    }
    xattr::set(dst.join("dir/notes"), "user.comment", b"damaged").unwrap();
    xattr::remove(dst.join("dir/notes"), "system.posix_acl_access").unwrap();
    // And grants the snapshot does not record: an ACL letting user 1000
    // read the tool, an attribute and a default ACL on the directory.
    xattr::set(dst.join("tool"), "system.posix_acl_access", &acl_xattr()).unwrap();
    xattr::set(dst.join("dir"), "user.injected", b"1").unwrap();
    xattr::set(dst.join("dir"), "system.posix_acl_default", &acl_xattr()).unwrap();
    assert!(
        xattr::get(dst.join("tool"), "security.capability")
            .unwrap()
            .is_none(),
        "chown kept the capability"
    );

    let r = env.json(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(
        (r["files"].as_u64(), r["errors"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["files_skipped"], 2, "{r}");
    for rel in ["tool", "dir", "dir/notes"] {
        let (a, b) = (src.join(rel), dst.join(rel));
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap(),
        );
        assert_eq!(ma.mode(), mb.mode(), "mode of {rel}");
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "owner of {rel}");
        assert_eq!(xattrs(&a), xattrs(&b), "xattrs of {rel}");
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {rel}"
        );
    }
    assert_eq!(
        xattr::get(dst.join("tool"), "security.capability").unwrap(),
        Some(capability_xattr())
    );
    assert_eq!(fs::read(dst.join("dir/notes")).unwrap(), b"notes");

    // A new restore into a directory with a default ACL: the entries do
    // not inherit grants the snapshot does not record.
    let shared = env.path("shared");
    fs::create_dir(&shared).unwrap();
    xattr::set(&shared, "system.posix_acl_default", &acl_xattr()).unwrap();
    env.restore("latest", &shared);
    for rel in ["tool", "dir", "dir/notes"] {
        assert_eq!(
            xattrs(&restored(&shared, &src).join(rel)),
            xattrs(&src.join(rel)),
            "xattrs of {rel} restored under a default ACL"
        );
    }
}

#[test]
fn a_tar_dump_carries_acls_for_tar_acls() {
    // GNU tar restores ACLs with --acls from SCHILY.acl.* text; the raw
    // xattr alone needed --xattrs, so `tar --acls -x` dropped them.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("private"), "secret").unwrap();
    xattr::set(src.join("private"), "system.posix_acl_access", &acl_xattr()).unwrap();
    xattr::set(src.join("d"), "system.posix_acl_default", &acl_xattr()).unwrap();
    // Attribute names with `=` (which ends a PAX keyword) and bytes that
    // are not UTF-8 come back as they were (they were cut or made lossy).
    let odd: [&[u8]; 2] = [b"user.a=b%c", b"user.\xffz"];
    for name in odd {
        xattr::set(src.join("private"), OsStr::from_bytes(name), name).unwrap();
    }
    env.backup(&[&src]);
    let tarball = env.path("src.tar");
    let out = env
        .cmd()
        .args(["dump", "latest", src.to_str().unwrap()])
        .stdout(fs::File::create(&tarball).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Extracts with GNU tar into a new directory; gives the source's place there.
    let untar = |dir: &str, flags: &[&str]| {
        let target = env.path(dir);
        fs::create_dir(&target).unwrap();
        let st = std::process::Command::new("tar")
            .args(flags)
            .arg("-xpf")
            .arg(&tarball)
            .arg("-C")
            .arg(&target)
            .status()
            .expect("run tar");
        assert!(st.success());
        target.join(src.strip_prefix("/").unwrap())
    };
    let got = untar("untar", &["--acls"]);
    assert_eq!(
        xattr::get(got.join("private"), "system.posix_acl_access")
            .unwrap()
            .as_deref(),
        Some(acl_xattr().as_slice())
    );
    assert_eq!(
        xattr::get(got.join("d"), "system.posix_acl_default")
            .unwrap()
            .as_deref(),
        Some(acl_xattr().as_slice())
    );
    assert_eq!(fs::read(got.join("private")).unwrap(), b"secret");

    let got = untar("untar-xattrs", &["--xattrs", "--xattrs-include=*"]);
    for name in odd {
        assert_eq!(
            xattr::get(got.join("private"), OsStr::from_bytes(name))
                .unwrap()
                .as_deref(),
            Some(name),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
}

/// A target that holds no ACLs (ramfs, vfat, some NFS): the mode's group
/// bits, an ACL's mask, granted the owning group what its own ACL entry
/// denied (`group::---` beside `group:4242:r--` restored as 0640).
#[test]
fn without_its_acl_a_file_gives_its_owning_group_no_more_than_the_acl_did() {
    assert!(
        is_root(),
        "this test mounts a ramfs: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("report");
    fs::write(&f, "for auditors only\n").unwrap();
    // user::rw-, group::---, group:4242:r--, mask::r--, other::---
    let acl = acl_of(&[
        (0x01, 6, u32::MAX),
        (0x04, 0, u32::MAX),
        (0x08, 4, 4242),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ]);
    xattr::set(&f, "system.posix_acl_access", &acl).unwrap();
    assert_eq!(
        fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o640
    );
    env.backup(&[&src]);
    let disk = env.path("ramfs");
    fs::create_dir(&disk).unwrap();
    let _mounted = Tmpfs::ramfs(&disk);
    let t = disk.join("t");
    let out = env.run(&["restore", "latest", "--target", t.to_str().unwrap()]);
    let err = exits(&out, 0);
    assert!(err.contains("system.posix_acl_access"), "{err}");
    let back = restored(&t, &src).join("report");
    assert_eq!(fs::read(&back).unwrap(), b"for auditors only\n");
    assert_eq!(
        fs::metadata(&back).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// A restore test run where owners cannot be given (root in a user
/// namespace, as in a rootless container) or device nodes made (a user
/// that is not root) passes, with warnings: it failed the snapshot, and
/// monitoring reported a good backup as a failed restore test.
#[test]
fn a_restore_test_without_the_privilege_for_owners_or_devices_passes_with_warnings() {
    use std::os::unix::fs::chown;
    assert!(
        is_root(),
        "this test sets owners and makes device nodes: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("theirs"), b"data\n").unwrap();
    chown(src.join("theirs"), Some(4242), Some(4242)).unwrap();
    mknod(&src.join("null"), libc::S_IFCHR, 0o666, libc::makedev(1, 3));
    // A second name of the node: linked to a first one never made.
    fs::hard_link(src.join("null"), src.join("null2")).unwrap();
    // Root in a user namespace may not set trusted.* either.
    xattr::set(src.join("theirs"), "trusted.note", b"root's").unwrap();
    env.backup(&[&src]);

    let in_namespace = env
        .cmd_via(&["unshare", "--user", "--map-root-user"])
        .args(["--json", "verify-restore", "latest"])
        .output()
        .unwrap();
    exits(&in_namespace, 0);
    let r = last_json(&in_namespace);
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        r["warnings"].to_string().contains("cannot set owner"),
        "{r}"
    );
    assert!(r["warnings"].to_string().contains("trusted.note"), "{r}");

    env.give_to_nobody();
    let as_nobody = env
        .cmd_as_nobody()
        .args(["--json", "verify-restore", "latest"])
        .output()
        .unwrap();
    exits(&as_nobody, 0);
    let r = last_json(&as_nobody);
    assert_eq!(r["ok"], true, "{r}");
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("/null: device node not made")
            && warnings.contains("/null2: device node not made"),
        "{r}"
    );
    // A restore proper still says it could not make them (exit 1).
    let target = env.path("out");
    fs::create_dir_all(&target).unwrap();
    std::process::Command::new("chown")
        .args(["65534:65534"])
        .arg(&target)
        .status()
        .unwrap();
    let out = env
        .cmd_as_nobody()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    exits(&out, 1);
}

/// A root restore that cannot give a file its owner (here a user namespace
/// mapping root alone: every other uid is EINVAL, as for an unmapped uid
/// in a container or NFS root_squash) leaves it root's, so its setuid and
/// setgid bits and its file capability are not restored: `alice 4755`
/// came back as a setuid-root program anyone could run.
#[test]
fn a_root_restore_that_cannot_set_the_owner_drops_setuid_and_capabilities() {
    use std::os::unix::fs::chown;
    assert!(
        is_root(),
        "this test sets owners and file capabilities: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let prog = src.join("prog");
    fs::write(&prog, b"#!/bin/sh\necho hi\n").unwrap();
    let plain = src.join("plain");
    fs::write(&plain, b"data\n").unwrap();
    for f in [&prog, &plain] {
        chown(f, Some(4242), Some(4242)).unwrap();
    }
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o6755)).unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o640)).unwrap();
    // cap_net_raw=ep, as setcap writes it (version 2, effective).
    let cap: [u8; 20] = [
        0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    xattr::set(&prog, "security.capability", &cap).unwrap();
    env.backup(&[&src]);

    let target = env.path("out");
    let out = env
        .cmd_via(&["unshare", "--user", "--map-root-user"])
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("cannot set owner"), "{err}");
    assert!(
        err.contains("set-user-ID/set-group-ID bits and file capability are not restored"),
        "{err}"
    );
    let back = restored(&target, &src);
    let m = fs::metadata(back.join("prog")).unwrap();
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o755,
        "{:o}",
        m.permissions().mode()
    );
    assert_eq!(
        xattr::get(back.join("prog"), "security.capability").unwrap(),
        None
    );
    assert_eq!(
        fs::read(back.join("prog")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    // Modes without those bits are restored as they are.
    let m = fs::metadata(back.join("plain")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
}
