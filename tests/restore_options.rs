//! Restore options: include/exclude, verify, resume, overwrite policies,
//! delete (inside the target only), dry runs, and damaged data.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, lchown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

fn tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::write(src.join("docs/a.txt"), b"alpha").unwrap();
    fs::write(src.join("docs/b.md"), b"beta").unwrap();
    fs::write(src.join("tmp/c.txt"), b"gamma").unwrap();
    write_random(&src.join("big"), 3 << 20, 11);
    src
}

fn restore_json(env: &Env, target: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.json(&args)
}

#[test]
fn a_restore_over_its_own_result_says_what_it_left_in_place() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("kept"), vec![7u8; 3000]).unwrap();
    fs::write(src.join("changed"), vec![8u8; 1000]).unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    let first = env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert!(first.contains("2 files (0 already there)"), "{first}");
    assert!(!first.contains("written"), "nothing was there: {first}");
    fs::write(restored(&t, &src).join("changed"), vec![9u8; 1000]).unwrap();
    let again = env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert!(
        again.contains("1 file (1 already there)")
            && again.contains("1000 B written (2.93 KiB already there)"),
        "{again}"
    );
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn include_exclude_verify_and_dry_run() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);

    let t = env.path("dry");
    let r = restore_json(&env, &t, &["--dry-run"]);
    assert_eq!(r["files"], 4);
    assert!(
        !t.exists() || fs::read_dir(&t).unwrap().next().is_none(),
        "dry run wrote files"
    );

    let t = env.path("inc");
    restore_json(&env, &t, &["--include", "*.txt"]);
    let d = restored(&t, &src);
    assert!(d.join("docs/a.txt").exists() && d.join("tmp/c.txt").exists());
    assert!(!d.join("docs/b.md").exists() && !d.join("big").exists());

    let t = env.path("exc");
    // A bare "tmp" would match /tmp, where the test tree lives: anchor it.
    let pattern = format!("{}/tmp", src.display());
    restore_json(&env, &t, &["--exclude", &pattern]);
    let d = restored(&t, &src);
    assert!(d.join("docs/b.md").exists() && !d.join("tmp").exists());

    let t = env.path("verify");
    let r = restore_json(&env, &t, &["--verify"]);
    assert_eq!(r["verified"], 4);
    assert_same_tree(&src, &restored(&t, &src));
    // Again: nothing written, and every file found in place was checked.
    let r = restore_json(&env, &t, &["--verify"]);
    assert_eq!(
        (r["files"].as_u64(), r["verified"].as_u64()),
        (Some(0), Some(4)),
        "{r}"
    );
}

/// The files below `dir`, relative to it, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|p| dir.join(p).is_file())
        .map(|p| p.to_str().unwrap().to_string())
        .collect()
}

#[test]
fn case_insensitive_patterns_and_pattern_files_as_restic_has_them() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("Äpfel")).unwrap();
    fs::create_dir_all(src.join("pics")).unwrap();
    for f in [
        "pics/a.JPG",
        "pics/b.jpg",
        "pics/c.png",
        "Äpfel/x",
        "notes.txt",
    ] {
        fs::write(src.join(f), f).unwrap();
    }
    env.backup(&[&src]);
    let run = |name: &str, extra: &[&str]| {
        let t = env.path(name);
        restore_json(&env, &t, extra);
        files_below(&restored(&t, &src))
    };
    assert_eq!(
        run("ii", &["--iinclude", "*.jpg"]),
        ["pics/a.JPG", "pics/b.jpg"]
    );
    // Either kind of include lets a path in.
    assert_eq!(
        run("both", &["--iinclude", "*.jpg", "--include", "*.txt"]),
        ["notes.txt", "pics/a.JPG", "pics/b.jpg"]
    );
    // Unicode letters fold too (globset folds ASCII only).
    assert_eq!(
        run("ie", &["--iexclude", "äPFEL", "--iexclude", "*.PNG"]),
        ["notes.txt", "pics/a.JPG", "pics/b.jpg"]
    );
    // --include keeps case.
    let t = env.path("case");
    env.json(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--include",
        "*.jpg",
    ]);
    assert_eq!(files_below(&restored(&t, &src)), ["pics/b.jpg"]);

    let list = env.path("patterns");
    fs::write(&list, "# pictures\n*.JPG\n\n  *.png  \n").unwrap();
    let list = list.to_str().unwrap();
    assert_eq!(
        run("if", &["--include-file", list]),
        ["pics/a.JPG", "pics/c.png"]
    );
    assert_eq!(
        run("iif", &["--iinclude-file", list]),
        ["pics/a.JPG", "pics/b.jpg", "pics/c.png"]
    );
    assert_eq!(
        run("ef", &["--exclude-file", list]),
        ["notes.txt", "pics/b.jpg", "Äpfel/x"]
    );
    assert_eq!(
        run("ief", &["--iexclude-file", list]),
        ["notes.txt", "Äpfel/x"]
    );
    // A list that is not there fails before anything is restored.
    let t = env.path("missing");
    let err = env.fails(
        &[
            "restore",
            "latest",
            "--target",
            t.to_str().unwrap(),
            "--exclude-file",
            "/nonexistent/list",
        ],
        1,
    );
    assert!(err.contains("/nonexistent/list"), "{err}");
    assert!(!t.exists());
    // A variable that is not set is an error naming the file as what it
    // is (an include file was called an exclude file).
    let unset = env.path("unset-list");
    fs::write(&unset, "$CAIRN_TEST_NEVER_SET/*.jpg\n").unwrap();
    let err = env.fails(
        &[
            "restore",
            "latest",
            "--target",
            t.to_str().unwrap(),
            "--include-file",
            unset.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        err.contains("pattern file") && !err.contains("exclude"),
        "{err}"
    );
    assert!(err.contains("CAIRN_TEST_NEVER_SET"), "{err}");
    assert!(!t.exists());

    // backup --iexclude-file and rewrite --iexclude, the same way.
    let v = env.json(&["backup", "--iexclude-file", list, src.to_str().unwrap()]);
    let id = v["snapshot_id"].as_str().unwrap().to_string();
    let t = env.path("b");
    env.restore(&id, &t);
    assert_eq!(files_below(&restored(&t, &src)), ["notes.txt", "Äpfel/x"]);
    env.ok(&["rewrite", &id, "--iexclude", "ÄPFEL"]);
    let t = env.path("rw");
    env.restore("latest", &t);
    assert_eq!(files_below(&restored(&t, &src)), ["notes.txt"]);
}

#[test]
fn resume_and_overwrite_policies() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);

    // Simulate an interrupted restore: one file half-written, one missing.
    fs::write(d.join("big"), b"half").unwrap();
    fs::remove_file(d.join("docs/a.txt")).unwrap();
    let r = restore_json(&env, &t, &[]);
    assert_eq!(r["files"], 2, "{r}");
    assert_eq!(r["files_skipped"], 2, "{r}");
    assert_same_tree(&src, &d);

    // never: an existing file is left alone.
    fs::write(d.join("docs/b.md"), b"local edit").unwrap();
    restore_json(&env, &t, &["--overwrite", "never"]);
    assert_eq!(fs::read(d.join("docs/b.md")).unwrap(), b"local edit");
    // if-changed (default) notices the edit even with the same size and mtime.
    fs::write(d.join("docs/b.md"), b"BETA").unwrap();
    let m = fs::metadata(src.join("docs/b.md")).unwrap();
    filetime::set_file_mtime(
        d.join("docs/b.md"),
        filetime::FileTime::from_last_modification_time(&m),
    )
    .unwrap();
    restore_json(&env, &t, &[]);
    assert_eq!(fs::read(d.join("docs/b.md")).unwrap(), b"beta");
    // always rewrites everything.
    let r = restore_json(&env, &t, &["--overwrite", "always"]);
    assert_eq!(r["files"], 4);
}

#[test]
fn overwrite_if_newer_keeps_what_is_as_new_as_the_snapshot_or_newer() {
    // restic's `--overwrite if-newer`: restoring into a live tree keeps the
    // edits made since the backup and replaces older copies.
    use filetime::{FileTime, set_file_mtime, set_symlink_file_times};
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let t0 = FileTime::from_unix_time(1_600_000_000, 500);
    for name in ["older", "newer", "same", "gone"] {
        fs::write(src.join(name), format!("{name} from the snapshot")).unwrap();
        set_file_mtime(src.join(name), t0).unwrap();
    }
    std::os::unix::fs::symlink("older", src.join("link")).unwrap();
    set_symlink_file_times(src.join("link"), t0, t0).unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);

    let edit = |name: &str, mtime: FileTime| {
        fs::write(d.join(name), format!("{name}: the user's")).unwrap();
        set_file_mtime(d.join(name), mtime).unwrap();
    };
    edit("older", FileTime::from_unix_time(1_600_000_000, 499));
    edit("newer", FileTime::from_unix_time(1_600_000_100, 0));
    edit("same", t0);
    fs::remove_file(d.join("gone")).unwrap();
    // A link the user pointed elsewhere since, older than the snapshot's.
    fs::remove_file(d.join("link")).unwrap();
    std::os::unix::fs::symlink("newer", d.join("link")).unwrap();
    let old = FileTime::from_unix_time(1_500_000_000, 0);
    set_symlink_file_times(d.join("link"), old, old).unwrap();

    // A dry run counts what the run does.
    let dry = restore_json(&env, &t, &["--overwrite", "if-newer", "--dry-run"]);
    let r = restore_json(&env, &t, &["--overwrite", "if-newer"]);
    for r in [&dry, &r] {
        assert_eq!(
            (r["files"].as_u64(), r["files_skipped"].as_u64()),
            (Some(2), Some(2)),
            "{r}"
        );
    }
    let read = |name: &str| fs::read_to_string(d.join(name)).unwrap();
    assert_eq!(read("older"), "older from the snapshot");
    assert_eq!(read("gone"), "gone from the snapshot");
    assert_eq!(read("newer"), "newer: the user's");
    assert_eq!(read("same"), "same: the user's");
    assert_eq!(fs::read_link(d.join("link")).unwrap(), Path::new("older"));

    // Not a value restic's users mistype into a usage error.
    let err = exits(
        &env.run(&["restore", "latest", "--target", "x", "--overwrite", "newer"]),
        2,
    );
    assert!(err.contains("if-newer"), "{err}");
    // A file an --in-place update left half done has the mtime of now: the
    // next if-newer run would keep it.
    let err = env.fails(
        &[
            "restore",
            "latest",
            "--target",
            "x",
            "--overwrite",
            "if-newer",
            "--in-place",
        ],
        2,
    );
    assert!(err.contains("--in-place cannot be used"), "{err}");

    // --delete leaves the journal of a database kept as newer, and removes
    // that of one the restore replaced (its journal would be replayed over
    // the snapshot's copy): judged by what was there before, not by the
    // mtime the restore gave the file.
    for name in ["replaced.db", "kept.db"] {
        fs::write(src.join(name), format!("{name} from the snapshot")).unwrap();
        set_file_mtime(src.join(name), t0).unwrap();
    }
    env.backup(&[&src]);
    let t = env.path("t2");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    for (name, mtime) in [
        ("replaced.db", FileTime::from_unix_time(1_500_000_000, 0)),
        ("kept.db", FileTime::from_unix_time(1_700_000_000, 0)),
    ] {
        fs::write(d.join(name), "the user's").unwrap();
        set_file_mtime(d.join(name), mtime).unwrap();
        fs::write(d.join(format!("{name}-wal")), "its journal").unwrap();
    }
    let args = ["--overwrite", "if-newer", "--delete"];
    let dry = restore_json(&env, &t, &[&args[..], &["--dry-run"]].concat());
    let r = restore_json(&env, &t, &args);
    for r in [&dry, &r] {
        assert_eq!(r["deleted"], 1, "{r}");
    }
    assert_eq!(
        fs::read_to_string(d.join("replaced.db")).unwrap(),
        "replaced.db from the snapshot"
    );
    assert!(!d.join("replaced.db-wal").exists());
    assert_eq!(fs::read_to_string(d.join("kept.db")).unwrap(), "the user's");
    assert!(d.join("kept.db-wal").exists());
}

/// A restore of one selected file walks the snapshot's other directories
/// too, for what they may hold of the selection. A symlink or file the
/// user put since where one of them was (`tmp` now a link elsewhere,
/// `docs` now a file) was replaced by a directory, then by nothing when
/// nothing came: gone, uncounted, and not in a dry run. It stays now; a
/// directory the selection needs still replaces what is in its way.
#[test]
fn a_restore_of_a_selection_leaves_the_users_links_and_files_elsewhere_alone() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    let elsewhere = env.path("media");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("song"), b"la").unwrap();
    fs::remove_dir_all(d.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, d.join("tmp")).unwrap();
    fs::remove_dir_all(d.join("docs")).unwrap();
    fs::write(d.join("docs"), b"a note").unwrap();
    fs::remove_file(d.join("big")).unwrap();

    let big = src.join("big");
    let r = restore_json(&env, &t, &["--include", big.to_str().unwrap()]);
    assert_eq!(r["files"], 1, "{r}");
    assert_eq!(fs::read(d.join("big")).unwrap(), fs::read(&big).unwrap());
    assert_eq!(fs::read_link(d.join("tmp")).unwrap(), elsewhere);
    assert_eq!(fs::read(elsewhere.join("song")).unwrap(), b"la");
    assert_eq!(fs::read(d.join("docs")).unwrap(), b"a note");

    // Selected below it: the directory comes back in place of the file.
    let a = src.join("docs/a.txt");
    restore_json(&env, &t, &["--include", a.to_str().unwrap()]);
    assert_eq!(fs::read(d.join("docs/a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read_link(d.join("tmp")).unwrap(), elsewhere);
}

#[test]
fn delete_stays_inside_the_target() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), b"keep me").unwrap();

    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    fs::write(d.join("extra"), b"x").unwrap();
    fs::create_dir_all(d.join("extra-dir/deep")).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("escape")).unwrap();
    // A directory the snapshot has, replaced by a symlink pointing outside.
    fs::remove_dir_all(d.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("tmp")).unwrap();

    let r = restore_json(&env, &t, &["--delete"]);
    assert_eq!(r["deleted"], 3, "{r}");
    assert!(!d.join("extra").exists() && !d.join("extra-dir").exists());
    assert!(fs::symlink_metadata(d.join("escape")).is_err());
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        1,
        "restore wrote outside the target"
    );
    assert_same_tree(&src, &d);
}

#[test]
fn delete_leaves_sockets_alone_as_backups_never_store_them() {
    // "Make /srv match its copy" deleted the live sockets of its services:
    // no snapshot has one, so every socket counted as an extra.
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    let sock = d.join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    fs::write(d.join("extra"), b"not in the snapshot").unwrap();
    let r = restore_json(&env, &t, &["--delete"]);
    assert_eq!(r["deleted"], 1, "{r}");
    assert!(!d.join("extra").exists());
    assert!(
        fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()),
        "the socket was deleted"
    );
}

#[test]
fn a_directory_in_the_way_of_a_file_is_replaced_only_with_delete() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("y"), b"the snapshot's file").unwrap();
    fs::write(src.join("z"), b"another").unwrap();
    env.backup(&[&src]);
    // Where the snapshot has the file `y`, the target has a directory of
    // the user's own files.
    let target = env.path("t");
    let y = restored(&target, &src).join("y");
    fs::create_dir_all(y.join("deep")).unwrap();
    fs::write(y.join("deep/thesis.txt"), b"important").unwrap();
    // The summary counts what was put in place: `z`, not `y`, which was
    // written and then could not take its name (it was counted).
    let out = env.run(&[
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    exits(&out, 1);
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .expect("a summary");
    assert_eq!(summary["files"], 1, "{summary}");
    assert_eq!(summary["bytes"], 7, "{summary}");
    let err = env.fails(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        1,
    );
    assert!(err.contains("move it away and restore again"), "{err}");
    // Named once, as it is met; the summary counts it.
    assert_eq!(err.matches("move it away").count(), 1, "{err}");
    assert!(err.contains("1 entry could not be restored"), "{err}");
    assert_eq!(fs::read(y.join("deep/thesis.txt")).unwrap(), b"important");
    // A dry run says so too.
    let t = target.to_str().unwrap();
    let err = env.fails(&["restore", "latest", "--target", t, "--dry-run"], 1);
    assert!(err.contains("move it away and restore again"), "{err}");
    assert_eq!(
        fs::read(restored(&target, &src).join("z")).unwrap(),
        b"another"
    );
    // An empty directory in the way goes without asking.
    fs::remove_file(y.join("deep/thesis.txt")).unwrap();
    fs::remove_dir(y.join("deep")).unwrap();
    env.restore("latest", &target);
    assert_eq!(fs::read(&y).unwrap(), b"the snapshot's file");
    // With --delete, a full one does too.
    fs::remove_file(&y).unwrap();
    fs::create_dir_all(y.join("deep")).unwrap();
    fs::write(y.join("deep/thesis.txt"), b"important").unwrap();
    // Counted as deleted, in the dry run first (it said 0 and the real run
    // removed the tree, also saying 0).
    for dry in [true, false] {
        let mut args = vec!["restore", "latest", "--delete", "--target", t];
        if dry {
            args.push("--dry-run");
        }
        let r = env.json(&args);
        assert_eq!(r["deleted"], 1, "dry run {dry}: {r}");
        assert_eq!(y.join("deep/thesis.txt").exists(), dry);
    }
    assert_eq!(fs::read(&y).unwrap(), b"the snapshot's file");
    // Never into another filesystem mounted below the directory in the way.
    if is_root() {
        fs::remove_file(&y).unwrap();
        fs::create_dir_all(y.join("mnt")).unwrap();
        let _m = Tmpfs::mount(&y.join("mnt"), "1m");
        fs::write(y.join("mnt/other-fs"), b"not the restore's").unwrap();
        let err = env.fails(&["restore", "latest", "--delete", "--target", t], 1);
        assert!(err.contains("mount point"), "{err}");
        assert_eq!(
            fs::read(y.join("mnt/other-fs")).unwrap(),
            b"not the restore's"
        );
    }
}

#[test]
fn damaged_file_is_removed_and_reported() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("one"), "first file ".repeat(100)).unwrap();
    // Large enough not to share a group frame with "one" (small files
    // compressed together are lost together, tests/groups.rs).
    fs::write(src.join("two"), "second file ".repeat(30_000)).unwrap();
    let summary = env.backup(&[&src]);
    assert_eq!(summary["files_new"], 2);
    // Damage the first blob (or frame) of the data pack.
    let pack = walkdir::WalkDir::new(env.repo.join("data"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .find(|p| {
            let id = p.file_name().unwrap().to_str().unwrap();
            env.ok(&["cat", "pack", id]).contains("\"blob_type\": 0")
        })
        .expect("a data pack");
    let id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let header: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "pack", &id])).unwrap();
    let off = header[0]["offset"].as_u64().unwrap() as usize;
    let mut bytes = fs::read(&pack).unwrap();
    bytes[off + 3] ^= 0xff;
    fs::write(&pack, &bytes).unwrap();

    let t = env.path("t");
    let err = env.fails(&["restore", "latest", "--target", t.to_str().unwrap()], 1);
    let d = restored(&t, &src);
    let present: Vec<bool> = ["one", "two"].iter().map(|n| d.join(n).exists()).collect();
    assert_eq!(
        present.iter().filter(|p| **p).count(),
        1,
        "exactly the undamaged file is restored"
    );
    let missing = if present[0] { "two" } else { "one" };
    assert!(err.contains(missing) && err.contains(&id), "{err}");
    // Named an error (it said "warning"), once, as it happens.
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(missing)).collect();
    assert!(
        lines.len() == 1 && lines.iter().all(|l| l.starts_with("error: ")),
        "{err}"
    );

    // The user's own file where the damaged one belongs: a restore that
    // cannot write the snapshot's version leaves it as it is, and no
    // half-written file beside it.
    fs::write(d.join(missing), b"my newer version").unwrap();
    env.fails(&["restore", "latest", "--target", t.to_str().unwrap()], 1);
    assert_eq!(fs::read(d.join(missing)).unwrap(), b"my newer version");
    let names: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A snapshot of `/x/y/src` holds `/`, `/x` and `/x/y` only as the way down
/// to it: `--delete` must not take their other entries for extras.
#[test]
fn delete_leaves_alone_what_is_beside_the_backed_up_paths() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let t = env.path("t");
    let d = restored(&t, &src);
    let beside = d.parent().unwrap().join("sibling");
    fs::create_dir_all(&beside).unwrap();
    fs::write(beside.join("file"), b"not backed up, not to be deleted").unwrap();
    fs::create_dir_all(t.join("etc")).unwrap();
    fs::write(t.join("etc/passwd"), b"root:x:0:0").unwrap();
    fs::create_dir_all(d.join("docs")).unwrap();
    fs::write(d.join("docs/extra"), b"inside the backed-up path").unwrap();

    let r = restore_json(&env, &t, &["--delete"]);
    assert_eq!(r["deleted"], 1, "{r}");
    assert!(!d.join("docs/extra").exists());
    assert_eq!(
        fs::read(beside.join("file")).unwrap(),
        b"not backed up, not to be deleted"
    );
    assert_eq!(fs::read(t.join("etc/passwd")).unwrap(), b"root:x:0:0");
    assert_same_tree(&src, &d);
}

/// A hard link planted in the target, to a file outside it with the
/// snapshot's content and times: the restore replaces the name, and the
/// outside file keeps its owner and mode.
#[test]
fn a_hard_link_in_the_target_does_not_pass_metadata_outside() {
    let env = Env::new();
    let src = tree(&env);
    fs::set_permissions(src.join("docs/a.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let victim = outside.join("victim");
    fs::copy(d.join("docs/a.txt"), &victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let mtime = filetime::FileTime::from_last_modification_time(
        &fs::metadata(d.join("docs/a.txt")).unwrap(),
    );
    filetime::set_file_mtime(&victim, mtime).unwrap();
    fs::remove_file(d.join("docs/a.txt")).unwrap();
    fs::hard_link(&victim, d.join("docs/a.txt")).unwrap();

    restore_json(&env, &t, &[]);
    let v = fs::metadata(&victim).unwrap();
    assert_eq!(v.mode() & 0o7777, 0o600);
    assert_eq!(
        v.nlink(),
        1,
        "the target's name was given an inode of its own"
    );
    let a = fs::metadata(d.join("docs/a.txt")).unwrap();
    assert_eq!(a.mode() & 0o7777, 0o644);
    assert_eq!(fs::read(d.join("docs/a.txt")).unwrap(), b"alpha");
}

#[test]
fn restoring_again_leaves_a_hard_link_group_in_place_unless_it_has_a_name_outside() {
    let env = Env::new();
    let src = tree(&env);
    fs::hard_link(src.join("big"), src.join("docs/big-link")).unwrap();
    fs::hard_link(src.join("big"), src.join("tmp/big-link")).unwrap();
    fs::set_permissions(src.join("big"), fs::Permissions::from_mode(0o640)).unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    let r = restore_json(&env, &t, &[]);
    assert_eq!(r["files"], 6, "{r}");
    let d = restored(&t, &src);
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    let group = ino(&d.join("big"));
    assert_eq!(ino(&d.join("docs/big-link")), group);
    assert_eq!(ino(&d.join("tmp/big-link")), group);

    // Again, over itself: nothing written, the group's inode kept, and
    // metadata changed since (a chmod) put back.
    fs::set_permissions(d.join("docs/big-link"), fs::Permissions::from_mode(0o600)).unwrap();
    // A dry run counts it as the real run does, and changes nothing.
    let r = restore_json(&env, &t, &["--dry-run"]);
    assert_eq!(
        (r["files"].as_u64(), r["files_skipped"].as_u64()),
        (Some(0), Some(6)),
        "{r}"
    );
    let mode = fs::metadata(d.join("big")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the dry run put the mode back");
    // Under --overwrite never every name is there already, links too.
    let r = restore_json(&env, &t, &["--dry-run", "--overwrite", "never"]);
    assert_eq!(
        (r["files"].as_u64(), r["files_skipped"].as_u64()),
        (Some(0), Some(6)),
        "{r}"
    );
    let r = restore_json(&env, &t, &[]);
    assert_eq!(
        (r["files"].as_u64(), r["bytes"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["files_skipped"], 6, "{r}");
    assert_eq!(ino(&d.join("big")), group);
    assert_eq!(fs::metadata(d.join("big")).unwrap().mode() & 0o7777, 0o640);
    assert_same_tree(&src, &d);

    // A name outside the target makes the group's inode not the restore's
    // own: the group gets a new inode, the outside name keeps the old one
    // and its mode.
    let outside = env.path("outside-link");
    fs::hard_link(d.join("big"), &outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
    let r = restore_json(&env, &t, &["--dry-run"]);
    assert_eq!(r["files"], 3, "{r}");
    let r = restore_json(&env, &t, &[]);
    assert_eq!(r["files"], 3, "{r}");
    let fresh = ino(&d.join("big"));
    assert_ne!(fresh, group);
    assert_eq!(ino(&d.join("docs/big-link")), fresh);
    assert_eq!(ino(&d.join("tmp/big-link")), fresh);
    let o = fs::metadata(&outside).unwrap();
    assert_eq!((o.ino(), o.nlink(), o.mode() & 0o7777), (group, 1, 0o600));
    assert_same_tree(&src, &d);
}

#[test]
fn overwrite_never_joins_the_missing_names_of_a_hard_link_group_to_the_ones_there() {
    let env = Env::new();
    let src = tree(&env);
    let names = ["big", "docs/big-link", "tmp/big-link"];
    for n in &names[1..] {
        fs::hard_link(src.join("big"), src.join(n)).unwrap();
    }
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    let ino = |n: &str| fs::metadata(d.join(n)).unwrap().ino();
    let one_group = |why: &str| {
        let i = ino(names[0]);
        for n in names {
            assert_eq!(ino(n), i, "{n} not linked to the rest: {why}");
            assert!(fs::read(d.join(n)).unwrap() == fs::read(src.join(n)).unwrap());
        }
        assert_eq!(fs::metadata(d.join(names[0])).unwrap().nlink(), 3, "{why}");
    };
    one_group("first restore");

    // Names missing (a restore killed before it linked them, or removed
    // by hand): the rerun links them to the names that are there, whether
    // the group's first member is one of those or not.
    for gone in [&names[1..], &names[..2], &names[..1]] {
        for n in gone {
            fs::remove_file(d.join(n)).unwrap();
        }
        let r = restore_json(&env, &t, &["--overwrite", "never"]);
        assert_eq!(r["errors"], 0, "{r}");
        one_group(&format!("{gone:?} removed"));
    }

    // A name holding something else is someone's file: left out.
    for n in &names[..2] {
        fs::remove_file(d.join(n)).unwrap();
    }
    fs::remove_file(d.join(names[2])).unwrap();
    fs::write(d.join(names[2]), b"mine").unwrap();
    restore_json(&env, &t, &["--overwrite", "never"]);
    assert_eq!(fs::read(d.join(names[2])).unwrap(), b"mine");
    assert_eq!(ino(names[0]), ino(names[1]));
    assert_eq!(fs::metadata(d.join(names[0])).unwrap().nlink(), 2);
    assert!(fs::read(d.join(names[0])).unwrap() == fs::read(src.join("big")).unwrap());
}

/// A hard link group whose names cannot be linked in the target (here the
/// group spans a mount; vfat, exFAT and SMB have no hard links at all):
/// each name gets a copy of its own and a warning. A file got an error
/// and no content (links and FIFOs already fell back).
#[test]
fn hard_linked_files_that_cannot_be_linked_in_the_target_get_copies_of_their_own() {
    assert!(
        is_root(),
        "this test mounts a tmpfs: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    write_random(&src.join("a/f"), 300 << 10, 9);
    fs::hard_link(src.join("a/f"), src.join("b/f")).unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    let d = restored(&t, &src);
    fs::create_dir_all(d.join("b")).unwrap();
    let _mounted = Tmpfs::mount(&d.join("b"), "8m");
    let r = restore_json(&env, &t, &[]);
    assert_eq!(r["errors"], 0, "{r}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("restored as a copy of its own"), "{r}");
    for name in ["a/f", "b/f"] {
        assert!(files_equal(&src.join("a/f"), &d.join(name)), "{name}");
        assert_eq!(fs::metadata(d.join(name)).unwrap().nlink(), 1, "{name}");
    }
}

/// A source holding one file, `image`, of `size` random bytes (`seed`),
/// backed up and restored into `t` on a tmpfs of `disk_size` of its own.
/// Returns the source, the tmpfs, `t`, the restored image, and the mount.
fn image_restored_on_small_disk(
    env: &Env,
    size: usize,
    seed: u64,
    disk_size: &str,
) -> (PathBuf, PathBuf, PathBuf, PathBuf, Tmpfs) {
    assert!(
        is_root(),
        "this test mounts a small tmpfs: run the suite as root (tests/run-all.sh)"
    );
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("image"), size, seed);
    env.backup(&[&src]);
    let (disk, tmpfs) = small_disk(env, disk_size);
    let t = disk.join("t");
    restore_json(env, &t, &[]);
    let img = restored(&t, &src).join("image");
    (src, disk, t, img, tmpfs)
}

/// `--in-place` over a sparse file on a full disk: the first chunk that
/// differs fills a hole and runs out of room half-way. The file has changed
/// already, and the restore says so (it said only that the write failed,
/// which reads as "left as it was").
#[test]
fn an_in_place_write_that_fails_half_way_says_the_file_was_partly_updated() {
    let env = Env::new();
    let (_, disk, t, img, _tmpfs) = image_restored_on_small_disk(&env, 4 << 20, 6, "8m");
    // All holes now: its size, no blocks.
    fs::remove_file(&img).unwrap();
    fs::File::create(&img).unwrap().set_len(4 << 20).unwrap();
    let _filler = fill_leaving(&disk, 64 << 10);
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--in-place",
    ]);
    let err = exits(&out, 1);
    assert!(err.contains("No space left"), "{err}");
    assert!(err.contains("left partly updated (--in-place)"), "{err}");
}

#[test]
fn in_place_writes_only_what_differs_and_needs_no_room_for_a_second_copy() {
    use std::os::unix::fs::FileExt;
    let env = Env::new();
    let (src, disk, t, img, _tmpfs) = image_restored_on_small_disk(&env, 16 << 20, 5, "40m");
    let inode = fs::metadata(&img).unwrap().ino();
    // Damaged in place: 100 bytes in the middle, and 1 MiB more at the end.
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0xee; 100], 9 << 20).unwrap();
    f.write_all_at(&vec![1u8; 1 << 20], 16 << 20).unwrap();
    drop(f);
    let damaged = fs::read(&img).unwrap();

    // With 1 MiB free, a whole new copy beside it does not fit: the
    // restore fails and leaves the file as it was.
    let filler = fill_leaving(&disk, 1 << 20);
    env.fails(&["restore", "latest", "--target", t.to_str().unwrap()], 1);
    assert!(fs::read(&img).unwrap() == damaged, "the file was changed");

    // In place: the chunk that differs is written over, the tail cut off.
    let r = restore_json(&env, &t, &["--in-place", "--verify"]);
    assert_eq!(
        (r["files"].as_u64(), r["verified"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(r["bytes"].as_u64().unwrap() < 8 << 20, "{r}");
    // The chunks compared equal count as skipped: together, the file.
    assert_eq!(
        r["bytes"].as_u64().unwrap() + r["bytes_skipped"].as_u64().unwrap(),
        16 << 20,
        "{r}"
    );
    assert_eq!(r["warnings"].as_array().unwrap().len(), 0, "{r}");
    let (m, s) = (
        fs::metadata(&img).unwrap(),
        fs::metadata(src.join("image")).unwrap(),
    );
    assert_eq!(m.ino(), inode);
    assert_eq!((m.mtime(), m.mtime_nsec()), (s.mtime(), s.mtime_nsec()));
    assert!(files_equal(&src.join("image"), &img));
    fs::remove_file(&filler).unwrap();

    // Metadata alone differs: nothing written, counted as already there.
    filetime::set_file_mtime(&img, filetime::FileTime::from_unix_time(1, 0)).unwrap();
    let r = restore_json(&env, &t, &["--in-place"]);
    assert_eq!(
        (r["files"].as_u64(), r["files_skipped"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    assert_eq!(
        (r["bytes"].as_u64(), r["bytes_skipped"].as_u64()),
        (Some(0), Some(16 << 20)),
        "{r}"
    );
    assert_eq!(fs::metadata(&img).unwrap().mtime(), s.mtime());

    // A setuid file is not written through (it would run the new bytes
    // with its owner's rights until its mode is set): replaced as a whole.
    fs::set_permissions(&img, fs::Permissions::from_mode(0o4755)).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0xee; 100], 1 << 20).unwrap();
    drop(f);
    restore_json(&env, &t, &["--in-place"]);
    let m = fs::metadata(&img).unwrap();
    assert_ne!(m.ino(), inode);
    assert_eq!(m.mode() & 0o7777, s.mode() & 0o7777);
    assert!(files_equal(&src.join("image"), &img));
    let inode = m.ino();

    // A file with another name is never written through: it gets an inode
    // of its own, and the other name keeps what it had.
    let other = disk.join("other-name");
    fs::hard_link(&img, &other).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0xee; 100], 1 << 20).unwrap();
    drop(f);
    let before = fs::read(&other).unwrap();
    restore_json(&env, &t, &["--in-place"]);
    assert_ne!(fs::metadata(&img).unwrap().ino(), inode);
    assert!(files_equal(&src.join("image"), &img));
    assert!(fs::read(&other).unwrap() == before);
}

#[test]
fn a_restore_stopped_by_a_full_disk_leaves_its_directories_with_their_modes() {
    assert!(
        is_root(),
        "this test mounts a small tmpfs: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    write_random(&src.join("a/b/big"), 8 << 20, 3);
    fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(src.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
    env.backup(&[&src]);
    let (disk, _tmpfs) = small_disk(&env, "4m");
    let t = disk.join("t");
    let err = env.fails(&["restore", "latest", "--target", t.to_str().unwrap()], 1);
    assert!(err.contains("No space left"), "{err}");
    // They were made 0700 while being filled; the failed restore must not
    // leave them so (other users locked out, a service that reads them
    // broken).
    let d = restored(&t, &src);
    for (dir, mode) in [("a", 0o755), ("a/b", 0o750)] {
        let m = fs::metadata(d.join(dir)).unwrap().mode() & 0o7777;
        assert_eq!(m, mode, "{dir}: {m:o}");
    }
}

#[test]
fn delete_works_below_a_source_whose_name_is_not_utf8_and_a_dry_run_counts() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("").join(std::ffi::OsStr::from_bytes(b"src-\xff"));
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/kept"), b"kept").unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    fs::write(d.join("extra"), b"x").unwrap();
    fs::write(d.join("sub/extra"), b"x").unwrap();

    let r = restore_json(&env, &t, &["--delete", "--dry-run"]);
    assert_eq!(r["deleted"], 2, "{r}");
    assert!(d.join("extra").exists() && d.join("sub/extra").exists());
    // What it would delete is named, each path (its byte 0xff as \xff).
    let shown = |p: &Path| -> String {
        let bytes: Vec<u8> = p
            .as_os_str()
            .as_bytes()
            .iter()
            .flat_map(|&c| {
                if c == 0xff {
                    b"\\xff".to_vec()
                } else {
                    vec![c]
                }
            })
            .collect();
        String::from_utf8(bytes).unwrap()
    };
    let named = [shown(&d.join("extra")), shown(&d.join("sub/extra"))];
    assert_eq!(r["would_delete"], serde_json::json!(named), "{r}");
    let text = env.ok(&[
        "restore",
        "latest",
        "--delete",
        "--dry-run",
        "--target",
        t.to_str().unwrap(),
    ]);
    for n in &named {
        assert!(text.contains(&format!("would delete {n}\n")), "{text}");
    }

    let r = restore_json(&env, &t, &["--delete"]);
    assert_eq!(r["deleted"], 2, "{r}");
    assert_eq!(r["would_delete"], serde_json::json!([]), "{r}");
    assert_same_tree(&src, &d);

    // Two sources that differ only in bytes that are not UTF-8 were
    // recorded alike (U+FFFD for each), and --delete was refused as it
    // could not tell which one a path meant; recorded apart (`\xNN`), each
    // is found.
    let twin = env.path("").join(std::ffi::OsStr::from_bytes(b"src-\xfe"));
    fs::create_dir_all(&twin).unwrap();
    let both = env.backup(&[&src, &twin]);
    let id = both["snapshot_id"].as_str().unwrap();
    let listed = env.json(&["snapshots"]);
    let paths = &listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()["paths"];
    assert_eq!(paths.as_array().unwrap().len(), 2, "{paths}");
    assert_ne!(paths[0], paths[1]);
    env.ok(&["restore", id, "--delete", "--target", t.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn a_path_inside_a_snapshot_may_not_climb_with_dot_dot() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let t = env.path("t");
    let spec = format!("latest:{}/docs/..", src.display());
    let err = env.fails(&["restore", &spec, "--target", t.to_str().unwrap()], 1);
    assert!(err.contains("`..` is not allowed"), "{err}");
    assert!(!t.exists() || fs::read_dir(&t).unwrap().next().is_none());
}

/// `--at` picks the newest snapshot *of that source* at or before the time:
/// two sources backed up alternately, and every command asked about one of
/// them at a time when the other one has the newer snapshot.
#[test]
fn at_picks_the_newest_snapshot_of_the_same_source() {
    let env = Env::new();
    let (a, b) = (env.path("site-a"), env.path("site-b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let backup = |src: &str, content: &str, time: &str, extra: &[&str]| -> String {
        let dir = Path::new(src);
        fs::write(dir.join("state.txt"), content).unwrap();
        let mut args = vec!["backup", src, "--time", time];
        args.extend(extra);
        env.json(&args)["snapshot_id"].as_str().unwrap()[..8].to_string()
    };
    let a1 = backup(sa, "a at 09", "2026-03-01 09:00:00", &["--host", "web1"]);
    let _b1 = backup(
        sb,
        "b at 10",
        "2026-03-01 10:00:00",
        &["--host", "db1", "--tag", "db"],
    );
    let a2 = backup(sa, "a at 11", "2026-03-01 11:00:00", &["--host", "web1"]);
    let b2 = backup(
        sb,
        "b at 12",
        "2026-03-01 12:00:00",
        &["--host", "db1", "--tag", "db"],
    );
    let at = "2026-03-01 12:30:00";
    let a_file = format!("{sa}/state.txt");

    // restore: --path / --host / --tag narrow the source; the message names
    // the snapshot chosen.
    for filter in [["--path", sa], ["--host", "web1"]] {
        let t = env.path(&format!("r{}", filter[0].len()));
        let mut args = vec!["restore", "--at", at, "--target", t.to_str().unwrap()];
        args.extend(filter);
        let out = env.cmd().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("using snapshot {a2}")),
            "{filter:?}: {err}"
        );
        assert_eq!(
            fs::read_to_string(restored(&t, &a).join("state.txt")).unwrap(),
            "a at 11"
        );
        assert!(!restored(&t, &b).exists());
    }
    let t = env.path("rt");
    let out = env
        .cmd()
        .args([
            "restore",
            "--at",
            "2026-03-01 11:59",
            "--tag",
            "db",
            "--target",
        ])
        .arg(&t)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        fs::read_to_string(restored(&t, &b).join("state.txt")).unwrap(),
        "b at 10"
    );
    // Without a filter: the newest snapshot of any source, as before.
    let out = env
        .cmd()
        .args(["restore", "--at", at, "--target"])
        .arg(env.path("rn"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("using snapshot {b2}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With -q that note is not printed (cron mails whatever is).
    let out = env
        .cmd()
        .args(["restore", "-q", "--at", at, "--path", sa, "--target"])
        .arg(env.path("rq"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    // ls: the directory asked for implies the source; the listing header
    // says which snapshot it is.
    let out = env.ok(&["ls", "--at", at, sa]);
    assert!(
        out.starts_with(&format!("snapshot {a2} of [{sa}]")),
        "{out}"
    );
    assert!(out.contains(&a_file), "{out}");
    let out = env.ok(&["ls", "--at", "2026-03-01 10:59", "--path", sa]);
    assert!(out.starts_with(&format!("snapshot {a1} ")), "{out}");

    // dump: the file asked for implies the source.
    let out = env.ok(&["dump", "--at", at, &a_file]);
    assert_eq!(out, "a at 11");
    let out = env.ok(&["dump", "--at", "2026-03-01 10:30", &a_file]);
    assert_eq!(out, "a at 09");

    // A path written another way than the snapshot holds it (relative,
    // doubled slashes) implies the source too.
    let odd = format!("{}//state.txt", sa.trim_start_matches('/'));
    assert_eq!(env.ok(&["dump", "--at", at, &odd]), "a at 11");
    let out = env.ok(&["ls", "--at", at, &format!("{sa}/./")]);
    assert!(out.starts_with(&format!("snapshot {a2} ")), "{out}");
    // `latest` is the newest snapshot of all (narrowed by --path, --host,
    // --tag only): a directory it lacks is an error, never an older
    // snapshot of some source that may have excluded it.
    let err = env.fails(&["ls", "latest", sa], 1);
    assert!(err.contains("not found in the snapshot"), "{err}");
    assert_eq!(
        env.ok(&["dump", "latest", "--path", sa, &a_file]),
        "a at 11"
    );

    // Nothing of that source yet: a clear error, not another source's snapshot.
    let err = env.fails(
        &[
            "restore",
            "--at",
            "2026-03-01 09:30",
            "--tag",
            "db",
            "--target",
            "x",
        ],
        1,
    );
    assert!(
        err.contains("no snapshot of tags [db] at or before 2026-03-01 09:30"),
        "{err}"
    );
}

#[test]
fn delete_with_at_refuses_to_choose_among_sources() {
    // The newest snapshot holding /r/home was one of /r that excluded
    // /r/home/ann: `restore --at T :/r/home --delete` deleted ann's files
    // that the /r/home snapshot holds, exit 0.
    let env = Env::new();
    let r = env.path("r");
    let home = r.join("home");
    fs::create_dir_all(home.join("ann")).unwrap();
    fs::write(home.join("ann/doc"), "ann's").unwrap();
    fs::write(home.join("common"), "c").unwrap();
    env.ok(&[
        "backup",
        home.to_str().unwrap(),
        "--time",
        "2026-03-01 10:00:00",
    ]);
    let excluded = format!("{}/ann/*", home.display());
    env.ok(&[
        "backup",
        r.to_str().unwrap(),
        "--exclude",
        &excluded,
        "--time",
        "2026-03-01 11:00:00",
    ]);
    let t = env.path("t");
    fs::create_dir_all(t.join("ann")).unwrap();
    fs::write(t.join("ann/doc"), "ann's").unwrap();
    let sub = format!(":{}", home.display());
    let at = ["--at", "2026-03-01 12:00"];
    let mut args = vec![
        "restore",
        sub.as_str(),
        "--target",
        t.to_str().unwrap(),
        "--delete",
    ];
    args.extend(at);
    let err = env.fails(&args, 2);
    assert!(
        err.contains("--path") && err.contains(home.to_str().unwrap()),
        "{err}"
    );
    assert!(t.join("ann/doc").exists());
    // Named, the source is not in doubt.
    let h = home.to_str().unwrap();
    args.extend(["--path", h]);
    env.ok(&args);
    assert_eq!(fs::read_to_string(t.join("ann/doc")).unwrap(), "ann's");
    // `latest` chooses among sources too; so does another host's
    // snapshot of the same paths.
    let latest = format!("latest:{}", home.display());
    let err = env.fails(
        &[
            "restore",
            &latest,
            "--target",
            t.to_str().unwrap(),
            "--delete",
        ],
        2,
    );
    assert!(err.contains("--delete with latest"), "{err}");
    assert!(t.join("ann/doc").exists());
    env.ok(&[
        "backup",
        h,
        "--host",
        "other",
        "--time",
        "2026-03-01 11:30:00",
    ]);
    args.truncate(args.len() - 2);
    let err = env.fails(&args, 2);
    assert!(err.contains("other ["), "{err}");
    // A source whose paths meet none of the chosen one's is no doubt:
    // --delete acts inside the chosen snapshot's paths only.
    let apart = env.path("apart");
    fs::create_dir_all(&apart).unwrap();
    fs::write(apart.join("f"), "f").unwrap();
    env.backup(&[&apart]);
    let t2 = env.path("t2");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t2.to_str().unwrap(),
        "--delete",
    ]);
    assert_eq!(
        fs::read_to_string(restored(&t2, &apart).join("f")).unwrap(),
        "f"
    );
    // Without --delete nothing is removed, and the newest is taken.
    env.ok(&[
        "restore",
        &sub,
        "--target",
        t.to_str().unwrap(),
        "--at",
        at[1],
    ]);
    assert!(t.join("ann/doc").exists());
}

/// A target given as a symlink to a directory is restored through: the
/// link stays, the files land in the directory it names.
#[test]
fn a_target_that_is_a_symlink_is_followed_not_replaced() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let real = env.path("real-target");
    fs::create_dir(&real).unwrap();
    let link = env.path("link-target");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let s = restore_json(&env, &link, &[]);
    assert_eq!(s["errors"], 0, "{s}");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read(restored(&real, &src).join("docs/a.txt")).unwrap(),
        b"alpha"
    );
}

/// `--include` removes the directories it made only to reach included
/// entries, never an empty one that was already there.
#[test]
fn include_keeps_an_empty_directory_that_was_already_there() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let target = env.path("target");
    let kept = restored(&target, &src).join("tmp");
    fs::create_dir_all(&kept).unwrap();
    restore_json(&env, &target, &["--include", "*.md"]);
    assert_eq!(
        fs::read(restored(&target, &src).join("docs/b.md")).unwrap(),
        b"beta"
    );
    assert!(kept.is_dir(), "the existing empty directory was removed");
    assert!(!restored(&target, &src).join("docs/a.txt").exists());
}

/// Hands the repository, the cache and everything under `paths` to nobody
/// (uid 65534), so that `cairn` can run as that user.
fn give_to_nobody(env: &Env, paths: &[&Path]) {
    assert_root();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for p in [env.repo.as_path(), env.cache.as_path()]
        .into_iter()
        .chain(paths.iter().copied())
    {
        for e in walkdir::WalkDir::new(p) {
            lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
        }
    }
}

/// Runs `cairn --json ARGS` as nobody, whatever its exit code: the output
/// and the summary (the last line of stdout).
fn json_as_nobody(env: &Env, args: &[&str]) -> (Output, serde_json::Value) {
    let mut cmd = env.cmd();
    cmd.uid(65534)
        .gid(65534)
        .env("HOME", env.dir.path())
        .arg("--json")
        .args(args);
    summary_of(output_within(cmd, 120))
}

fn summary_of(out: Output) -> (Output, serde_json::Value) {
    let v = last_json(&out);
    (out, v)
}

/// Makes a file immutable (`chattr +i`) while it lives, where the
/// filesystem supports it.
struct Immutable(PathBuf);

impl Immutable {
    fn try_new(p: &Path) -> Option<Immutable> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(p)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(p.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        // Or the scratch directory could not be removed.
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// One entry that cannot be written (something in its place the restore
/// may not remove) is reported by path and costs nothing else: the other
/// files, the hard links and the directory's own mode and mtime are all
/// restored, and the exit code says the restore finished with errors.
#[test]
fn an_entry_that_cannot_be_restored_does_not_stop_the_others() {
    let env = Env::new();
    let src = env.path("src");
    let dir = src.join("dir");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    fs::write(dir.join("a"), b"first").unwrap();
    fs::write(dir.join("blocked"), b"from the snapshot").unwrap();
    fs::write(dir.join("z"), b"last").unwrap();
    fs::hard_link(dir.join("a"), dir.join("a-link")).unwrap();
    fs::write(src.join("other/c"), b"elsewhere").unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    filetime::set_file_mtime(&dir, filetime::FileTime::from_unix_time(1_000_000_000, 5)).unwrap();
    env.backup(&[&src]);

    let target = env.path("target");
    let d = restored(&target, &src).join("dir");
    fs::create_dir_all(&d).unwrap();
    let blocker = d.join("blocked");
    fs::write(&blocker, b"in the way").unwrap();
    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    let frozen = Immutable::try_new(&blocker);
    let (out, summary) = if frozen.is_some() {
        summary_of(env.cmd().arg("--json").args(args).output().unwrap())
    } else {
        // No immutable files here: as nobody, a directory of root's that
        // holds a file cannot be removed to make room.
        fs::remove_file(&blocker).unwrap();
        fs::create_dir(&blocker).unwrap();
        fs::write(blocker.join("x"), b"root's").unwrap();
        give_to_nobody(&env, &[&target]);
        lchown(&blocker, Some(0), Some(0)).unwrap();
        lchown(blocker.join("x"), Some(0), Some(0)).unwrap();
        json_as_nobody(&env, &args)
    };
    let err = exits(&out, 1);
    assert_eq!(summary["errors"], 1, "{summary}");
    assert!(
        err.contains(&format!("{}: not restored", blocker.display())),
        "{err}"
    );
    // --json names it too, apart from plain warnings.
    let failures = summary["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{summary}");
    assert!(
        failures[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}: not restored", blocker.display())),
        "{summary}"
    );
    for (rel, content) in [
        ("dir/a", "first"),
        ("dir/z", "last"),
        ("other/c", "elsewhere"),
    ] {
        let p = restored(&target, &src).join(rel);
        assert_eq!(fs::read_to_string(&p).unwrap(), content, "{rel}");
    }
    assert_eq!(
        fs::metadata(d.join("a")).unwrap().ino(),
        fs::metadata(d.join("a-link")).unwrap().ino(),
        "the hard link was not made"
    );
    let m = fs::metadata(&d).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o750, "mode of the directory");
    assert_eq!(
        (m.mtime(), m.mtime_nsec()),
        (1_000_000_000, 5),
        "mtime of the directory"
    );
}

/// A non-root restore keeps `user.*` attributes on entries it makes
/// read-only (the kernel refuses to set them once they are), and puts them
/// back on such entries already there.
#[test]
fn in_place_over_a_shorter_file_keeps_a_sparse_file_sparse() {
    // An interrupted restore left the image empty; `--in-place` then wrote
    // out every hole (64 MiB allocated for 3 bytes of data), where a
    // restore that writes the file anew keeps it sparse.
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let image = src.join("hole.img");
    let f = fs::File::create(&image).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let mut f = fs::OpenOptions::new().append(true).open(&image).unwrap();
    std::io::Write::write_all(&mut f, b"end").unwrap();
    drop(f);
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let img = restored(&t, &src).join("hole.img");
    let allocated = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
    assert!(allocated(&img) < 1 << 20, "a plain restore keeps the holes");
    for left in [0, 10 << 20] {
        fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(left)
            .unwrap();
        let r = restore_json(&env, &t, &["--in-place", "--verify"]);
        assert_eq!(r["files"], 1, "{r}");
        assert!(files_equal(&image, &img));
        // At most the chunk that straddles the old end (4 MiB at most) is
        // written whole.
        assert!(
            allocated(&img) <= (1 << 20) + if left > 0 { 4 << 20 } else { 0 },
            "left at {left} bytes: {} bytes allocated",
            allocated(&img)
        );
    }
}

#[test]
fn swap_files_and_no_sparse_restores_are_written_without_holes() {
    // Every all-zero block became a hole: `swapon` refuses such a swap
    // file, and a preallocated file lost its room, with no way to ask
    // otherwise.
    use std::os::unix::fs::{FileExt, MetadataExt};
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // What mkswap leaves: the signature ends the first page, then zeros.
    let swap = fs::File::create(src.join("swapfile")).unwrap();
    swap.write_all_at(&vec![0; 8 << 20], 0).unwrap();
    swap.write_all_at(b"\x01\x00\x00\x00", 1024).unwrap();
    swap.write_all_at(b"SWAPSPACE2", 4096 - 10).unwrap();
    drop(swap);
    fs::write(src.join("zeros.db"), vec![0u8; 8 << 20]).unwrap();
    env.backup(&[&src]);
    let allocated = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let back = restored(&t, &src);
    assert!(files_equal(&src.join("swapfile"), &back.join("swapfile")));
    assert!(
        allocated(&back.join("swapfile")) >= 8 << 20,
        "swap file with holes"
    );
    assert!(
        allocated(&back.join("zeros.db")) < 1 << 20,
        "holes by default"
    );
    // Over a swap file an interrupted restore left empty, in place too.
    fs::File::create(back.join("swapfile")).unwrap();
    restore_json(&env, &t, &["--in-place"]);
    assert!(files_equal(&src.join("swapfile"), &back.join("swapfile")));
    assert!(
        allocated(&back.join("swapfile")) >= 8 << 20,
        "in place, with holes"
    );
    let t = env.path("dense");
    restore_json(&env, &t, &["--no-sparse"]);
    let back = restored(&t, &src);
    assert!(files_equal(&src.join("zeros.db"), &back.join("zeros.db")));
    assert!(allocated(&back.join("zeros.db")) >= 8 << 20);
}

#[test]
fn a_non_root_restore_gives_back_a_group_the_user_is_in() {
    // The group was never set without root: a shared project directory
    // (set-group-ID) came back in the user's own group, and passed that
    // on to every file made in it, where `cp -a` keeps the group.
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("shared")).unwrap();
    fs::write(src.join("shared/report"), b"r").unwrap();
    fs::write(src.join("other"), b"o").unwrap();
    lchown(src.join("shared"), Some(65534), Some(5678)).unwrap();
    lchown(src.join("shared/report"), Some(65534), Some(5678)).unwrap();
    lchown(src.join("other"), Some(65534), Some(5679)).unwrap();
    // In the group, in a directory without set-group-ID.
    fs::write(src.join("mine"), b"m").unwrap();
    lchown(src.join("mine"), Some(65534), Some(5678)).unwrap();
    fs::set_permissions(src.join("mine"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(src.join("shared"), fs::Permissions::from_mode(0o2770)).unwrap();
    fs::set_permissions(src.join("shared/report"), fs::Permissions::from_mode(0o660)).unwrap();
    env.backup(&[&src]);
    let target = env.path("target");
    fs::create_dir(&target).unwrap();
    give_to_nobody(&env, &[&target]);
    // Restores as nobody, in group 5678 besides its own.
    let restore_in_group = |extra: &[&str]| {
        let out = env
            .cmd_via(&[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--groups=5678",
                "--",
            ])
            .env("HOME", env.dir.path())
            .args(["restore", "latest", "--target", target.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        exits(&out, 0)
    };
    restore_in_group(&[]);
    let back = restored(&target, &src);
    let shared = fs::metadata(back.join("shared")).unwrap();
    assert_eq!((shared.uid(), shared.gid()), (65534, 5678));
    assert_eq!(shared.mode() & 0o7777, 0o2770);
    assert_eq!(
        fs::metadata(back.join("shared/report")).unwrap().gid(),
        5678
    );
    // Not a group of the user's: the user's own, as before.
    assert_eq!(fs::metadata(back.join("other")).unwrap().gid(), 65534);
    // Its own file in that group is updated in place (it was taken for
    // one whose mode let in a group the snapshot's keeps out).
    assert_eq!(fs::metadata(back.join("mine")).unwrap().gid(), 5678);
    write_random(&src.join("mine"), 1 << 20, 3);
    env.backup(&[&src]);
    give_to_nobody(&env, &[]);
    let inode = fs::metadata(back.join("mine")).unwrap().ino();
    let err = restore_in_group(&["--in-place"]);
    assert!(!err.contains("replaced as a whole"), "{err}");
    assert!(files_equal(&src.join("mine"), &back.join("mine")));
    let now = fs::metadata(back.join("mine")).unwrap();
    assert_eq!((now.ino(), now.gid()), (inode, 5678));
}

#[test]
fn a_non_root_restore_updates_its_own_files_in_place() {
    use std::os::unix::fs::FileExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("data"), 4 << 20, 9);
    fs::set_permissions(src.join("data"), fs::Permissions::from_mode(0o644)).unwrap();
    env.backup(&[&src]);
    let target = env.path("target");
    fs::create_dir(&target).unwrap();
    give_to_nobody(&env, &[&target]);
    let args = [
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--in-place",
    ];
    let (out, _) = json_as_nobody(&env, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = restored(&target, &src).join("data");
    let inode = fs::metadata(&data).unwrap().ino();
    let f = fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.write_all_at(&[0xee; 100], 2 << 20).unwrap();
    drop(f);
    // Its own file, group-readable by its own group as in the snapshot.
    let (out, r) = json_as_nobody(&env, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["warnings"].as_array().unwrap().len(), 0, "{r}");
    // Replaced or updated, which tells why (seen once under a full run:
    // every byte written, no warning).
    let now = fs::metadata(&data).unwrap();
    assert_eq!(
        now.ino(),
        inode,
        "replaced as a whole: {r}; mode {:o}, uid {}, links {}",
        now.mode(),
        now.uid(),
        now.nlink()
    );
    assert!(r["bytes"].as_u64().unwrap() < 4 << 20, "{r}");
    assert!(files_equal(&src.join("data"), &data));
}

#[test]
fn a_non_root_restore_keeps_attributes_of_read_only_entries() {
    let env = Env::new();
    let src = env.path("src");
    let ro = src.join("ro-dir");
    fs::create_dir_all(&ro).unwrap();
    fs::write(ro.join("ro-file"), b"read only").unwrap();
    xattr::set(ro.join("ro-file"), "user.note", b"on a 0444 file").unwrap();
    xattr::set(&ro, "user.note", b"on a 0555 directory").unwrap();
    fs::set_permissions(ro.join("ro-file"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    env.backup(&[&src]);

    let target = env.path("target");
    fs::create_dir(&target).unwrap();
    give_to_nobody(&env, &[&target]);
    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    let d = restored(&target, &src).join("ro-dir");
    let check = |(out, summary): (Output, serde_json::Value)| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(summary["errors"], 0, "{summary}");
        assert!(!err.contains("user.note"), "{err}");
        for (p, mode, note) in [
            (d.join("ro-file"), 0o444, &b"on a 0444 file"[..]),
            (d.clone(), 0o555, b"on a 0555 directory"),
        ] {
            let m = fs::symlink_metadata(&p).unwrap();
            assert_eq!(m.uid(), 65534, "{} was not restored by nobody", p.display());
            assert_eq!(m.mode() & 0o7777, mode, "mode of {}", p.display());
            assert_eq!(
                xattr::get(&p, "user.note").unwrap().as_deref(),
                Some(note),
                "attribute of {}",
                p.display()
            );
        }
        summary
    };
    check(json_as_nobody(&env, &args));
    // Again, in place, after the attributes were lost.
    xattr::remove(d.join("ro-file"), "user.note").unwrap();
    xattr::remove(&d, "user.note").unwrap();
    let summary = check(json_as_nobody(&env, &args));
    assert_eq!(summary["files_skipped"], 1, "{summary}");
}

/// Metadata that cannot be set counts as an error: nobody restores in
/// place over a file whose content is right but which root owns, so its
/// mode and times cannot be set.
#[test]
fn metadata_that_cannot_be_set_is_an_error() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("roots"), b"owned by root").unwrap();
    fs::set_permissions(src.join("roots"), fs::Permissions::from_mode(0o640)).unwrap();
    env.backup(&[&src]);
    let target = env.path("target");
    env.restore("latest", &target);
    let file = restored(&target, &src).join("roots");
    give_to_nobody(&env, &[&target]);
    lchown(&file, Some(0), Some(0)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();

    let args = ["restore", "latest", "--target", target.to_str().unwrap()];
    let (out, summary) = json_as_nobody(&env, &args);
    let err = exits(&out, 1);
    assert_eq!(summary["errors"], 1, "{summary}");
    assert_eq!(summary["files_skipped"], 1, "{summary}");
    assert!(
        err.contains(&format!("{}: cannot set mode", file.display())),
        "{err}"
    );
    assert_eq!(fs::read(&file).unwrap(), b"owned by root");
}

#[test]
fn delete_removes_only_what_include_and_exclude_select() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    for extra in [
        "docs/extra.txt",
        "docs/notes.md",
        "extra-top",
        "scratch.log",
    ] {
        fs::write(d.join(extra), b"mine").unwrap();
    }
    // Only *.txt is restored: an extra .txt goes, the rest of the target
    // (in directories only passed through) stays.
    let r = restore_json(&env, &t, &["--include", "*.txt", "--delete"]);
    assert_eq!(r["deleted"], 1, "{r}");
    assert!(!d.join("docs/extra.txt").exists());
    for kept in ["docs/notes.md", "extra-top", "scratch.log"] {
        assert_eq!(fs::read(d.join(kept)).unwrap(), b"mine", "{kept}");
    }
    // Everything but *.log: the excluded name stays, the others go.
    let r = restore_json(&env, &t, &["--exclude", "*.log", "--delete"]);
    assert_eq!(r["deleted"], 2, "{r}");
    assert!(!d.join("docs/notes.md").exists() && !d.join("extra-top").exists());
    assert_eq!(fs::read(d.join("scratch.log")).unwrap(), b"mine");
    // A directory the snapshot does not have, holding an excluded name:
    // removed whole, it took the name the patterns keep along.
    for extra in [
        "new/keep.log",
        "new/deep/go",
        "new/deep/keep.log",
        "gone/a/b",
    ] {
        fs::create_dir_all(d.join(extra).parent().unwrap()).unwrap();
        fs::write(d.join(extra), b"mine").unwrap();
    }
    let dry = restore_json(&env, &t, &["--exclude", "*.log", "--delete", "--dry-run"]);
    let r = restore_json(&env, &t, &["--exclude", "*.log", "--delete"]);
    // new/deep/go, gone/a/b, gone/a and gone.
    assert_eq!(r["deleted"], 4, "{r}");
    assert_eq!(dry["deleted"], r["deleted"], "{dry}");
    for kept in ["new/keep.log", "new/deep/keep.log"] {
        assert_eq!(fs::read(d.join(kept)).unwrap(), b"mine", "{kept}");
    }
    assert!(!d.join("new/deep/go").exists() && !d.join("gone").exists());
}

#[test]
fn delete_leaves_other_filesystems_alone() {
    assert!(is_root(), "mounting a tmpfs needs root");
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("mnt")).unwrap();
    fs::write(src.join("f"), b"kept").unwrap();
    let _mnt = Tmpfs::mount(&src.join("mnt"), "1m");
    fs::write(src.join("mnt/g"), b"on another filesystem").unwrap();
    // With -x the mount point is recorded, empty.
    env.ok(&["backup", "-x", src.to_str().unwrap()]);
    fs::write(src.join("extra"), b"goes").unwrap();
    fs::create_dir_all(src.join("extra-dir/m")).unwrap();
    let _m = Tmpfs::mount(&src.join("extra-dir/m"), "1m");
    fs::write(src.join("extra-dir/m/h"), b"on a third filesystem").unwrap();
    // A bind mount of a directory of this same filesystem (same device).
    let home = env.path("home");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join("precious"), b"bound in").unwrap();
    let _b = BindMount::writable(&home, &src.join("extra-bind/b"));

    let spec = format!("latest:{}", src.display());
    let target = src.to_str().unwrap();
    for dry in [true, false] {
        let mut args = vec!["--json", "restore", &spec, "--target", target, "--delete"];
        if dry {
            args.push("--dry-run");
        }
        let out = env.run(&args);
        // The directory holding a mount point is named and kept.
        let err = exits(&out, 1);
        assert!(
            err.contains("extra-dir") && err.contains("mount point"),
            "{err}"
        );
        assert!(err.contains("extra-bind"), "{err}");
        assert_eq!(last_json(&out)["deleted"], 1, "dry run {dry}");
    }
    assert!(!src.join("extra").exists());
    assert_eq!(fs::read(src.join("f")).unwrap(), b"kept");
    assert_eq!(
        fs::read(src.join("mnt/g")).unwrap(),
        b"on another filesystem"
    );
    assert_eq!(
        fs::read(src.join("extra-dir/m/h")).unwrap(),
        b"on a third filesystem"
    );
    assert_eq!(fs::read(home.join("precious")).unwrap(), b"bound in");
}

#[test]
fn delete_refuses_a_target_that_shares_nothing_with_the_restore() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    // The mistake of restoring a snapshot of /srv with --target /srv: the
    // snapshot's paths go below the target, and --delete would empty it.
    let live = env.path("live");
    fs::create_dir_all(live.join("www")).unwrap();
    fs::write(live.join("www/index.html"), b"live site").unwrap();
    fs::write(live.join("big"), b"changed since").unwrap();
    let target = live.to_str().unwrap();
    let err = env.fails(&["restore", "latest", "--target", target, "--delete"], 1);
    assert!(err.contains("--delete would remove all 2 entries"), "{err}");
    assert!(err.contains("SNAPSHOT:/path"), "{err}");
    assert_eq!(fs::read(live.join("www/index.html")).unwrap(), b"live site");
    // Named as the copy of the source it is, the target is made to match.
    let spec = format!("latest:{}", src.display());
    let r = env.json(&["restore", &spec, "--target", target, "--delete"]);
    assert_eq!(r["deleted"], 1, "{r}");
    assert_same_tree(&src, &live);
}

#[test]
fn overwrite_never_keeps_anything_in_the_way() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("docs/a.txt"), b"alpha").unwrap();
    std::os::unix::fs::symlink("docs", src.join("link")).unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    let d = restored(&t, &src);
    // Where the snapshot has a symlink, the target has a directory with
    // data; where it has a directory, a file.
    fs::create_dir_all(d.join("link")).unwrap();
    fs::write(d.join("link/precious"), b"keep me").unwrap();
    fs::write(d.join("docs"), b"my file").unwrap();
    let r = restore_json(&env, &t, &["--overwrite", "never"]);
    assert_eq!(fs::read(d.join("link/precious")).unwrap(), b"keep me");
    assert_eq!(fs::read(d.join("docs")).unwrap(), b"my file");
    assert_eq!(r["files"], 0, "{r}");
    // Counted as what they are: they were two files "already there".
    assert_eq!(
        (r["files_skipped"].as_u64(), r["others_kept"].as_u64()),
        (Some(0), Some(2)),
        "{r}"
    );
    let warned = r["warnings"].to_string();
    assert!(warned.contains("not a directory"), "{r}");
    // Replacing the file is overwriting it; the directory with data goes
    // only with --delete, even with --overwrite always.
    let err = env.fails(
        &[
            "restore",
            "latest",
            "--target",
            t.to_str().unwrap(),
            "--overwrite",
            "always",
        ],
        1,
    );
    assert!(err.contains("move it away and restore again"), "{err}");
    assert_eq!(fs::read(d.join("link/precious")).unwrap(), b"keep me");
    assert_eq!(fs::read(d.join("docs/a.txt")).unwrap(), b"alpha");
    restore_json(&env, &t, &["--overwrite", "always", "--delete"]);
    assert_same_tree(&src, &d);
}

#[test]
fn a_user_restores_into_a_setgid_directory_of_a_group_it_is_not_in() {
    // Closed to the group while restoring, the kernel dropped its setgid
    // bit (set by a user outside the group), and giving it back was then
    // refused as a directory changed since: it stayed closed to its group.
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let t = env.path("t");
    fs::create_dir(&t).unwrap();
    give_to_nobody(&env, &[&t]);
    lchown(&t, None, Some(4321)).unwrap();
    fs::set_permissions(&t, fs::Permissions::from_mode(0o2775)).unwrap();
    let spec = format!("latest:{}", src.display());
    let (out, summary) = json_as_nobody(&env, &["restore", &spec, "--target", t.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(summary["errors"], 0, "{summary}");
    let m = fs::metadata(&t).unwrap();
    // The setgid bit only the group's members may set is gone; the rest is back.
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 4321, 0o775));
}

#[test]
fn a_user_restores_into_a_shared_sticky_directory() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    // Like /tmp: root's, writable by all, sticky.
    let shared = env.path("shared");
    fs::create_dir_all(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    give_to_nobody(&env, &[]);
    let target = shared.to_str().unwrap();
    let (out, summary) = json_as_nobody(&env, &["restore", "latest", "--target", target]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(summary["files"], 4, "{summary}");
    assert_eq!(
        fs::read(restored(&shared, &src).join("docs/a.txt")).unwrap(),
        b"alpha"
    );
    let m = fs::metadata(&shared).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o1777));
}

/// A new repository with packs of 1 MiB and a snapshot of `src`: 12 files
/// of 1 MiB (random from `seed`), each in a pack of its own, so that a
/// restore slowed per pack read can be stopped half-way.
fn snapshot_of_twelve_mib(env: &Env, seed: u64) -> PathBuf {
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..12 {
        write_random(&src.join(format!("f{i:02}")), 1 << 20, seed + i);
    }
    env.backup(&[&src]);
    src
}

/// A snapshot of 12 files of 1 MiB in packs of 1 MiB, restored (`latest:src`)
/// into `t`, someone else's group-writable directory of mode `mode`, with
/// each pack read taking half a second; returns once the restore has taken
/// the target over, with its source, target and arguments.
fn slow_restore_into_a_shared_directory(
    env: &Env,
    mode: u32,
) -> (PathBuf, PathBuf, Vec<String>, std::process::Child) {
    assert!(
        is_root(),
        "root takes over the directories it restores into"
    );
    let src = snapshot_of_twelve_mib(env, 900);
    let t = env.path("t");
    fs::create_dir_all(&t).unwrap();
    lchown(&t, Some(1234), Some(4321)).unwrap();
    fs::set_permissions(&t, fs::Permissions::from_mode(mode)).unwrap();
    let args: Vec<String> = vec![
        "restore".into(),
        format!("latest:{}", src.display()),
        "--target".into(),
        t.to_str().unwrap().into(),
    ];
    let child = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "slow-read=pack:500")
        // One pack at a time: on many cores the restore was over before the kill.
        .env("RAYON_NUM_THREADS", "1")
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fs::metadata(&t).unwrap().uid() != 0 {
        assert!(
            std::time::Instant::now() < until,
            "the restore never took the target over"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (src, t, args, child)
}

#[test]
fn an_interrupted_restore_gives_back_the_directories_it_took_over() {
    let env = Env::uninit();
    let (src, t, args, child) = slow_restore_into_a_shared_directory(&env, 0o775);
    std::thread::sleep(std::time::Duration::from_millis(700));
    // SAFETY: signals a child process of this test.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = exits(&out, 130);
    let m = fs::metadata(&t).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (1234, 4321, 0o775),
        "{err}"
    );
    // Nothing half-written is left looking complete.
    let left: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        left.len() < 12,
        "the restore had finished: the test shows nothing"
    );
    for p in left {
        assert_eq!(
            fs::read(&p).unwrap(),
            fs::read(src.join(p.file_name().unwrap())).unwrap()
        );
    }
    // The same command again finishes the job.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&args);
    assert_same_tree(&src, &t);
}

#[test]
fn a_restore_killed_outright_leaves_no_half_written_file_and_the_next_gives_the_target_back() {
    let env = Env::uninit();
    // Setgid too: the mode given back is all of it.
    let (src, t, args, mut child) = slow_restore_into_a_shared_directory(&env, 0o2775);
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed, it could give nothing back (what the next run is for).
    let m = fs::metadata(&t).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o2755));
    // No file stands at its name half-written: a run with `--overwrite
    // never` would keep it as restored.
    let left: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        left.len() < 12,
        "the restore had finished: the test shows nothing"
    );
    for p in &left {
        // Compared without printing a megabyte of bytes when they differ.
        assert!(
            fs::read(p).unwrap() == fs::read(src.join(p.file_name().unwrap())).unwrap(),
            "{} is half-written ({} bytes)",
            p.display(),
            fs::metadata(p).unwrap().len()
        );
    }
    // What it took over is recorded in the cache, not in the target (where
    // a snapshot or the target's owner could have put a record).
    let records = || fs::read_dir(env.cache.join("restores")).unwrap().count();
    assert_eq!(records(), 1);
    // The same command again, keeping what is there, finishes the job and
    // gives the target back as it was before the first run.
    let out = env
        .cmd()
        .args(&args)
        .args(["--overwrite", "never"])
        .output()
        .unwrap();
    let err = exits(&out, 0);
    assert!(err.contains("given back the owner and mode"), "{err}");
    let m = fs::metadata(&t).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (1234, 4321, 0o2775),
        "{err}"
    );
    assert_same_tree(&src, &t);
    assert_eq!(records(), 0, "the record outlived its restore");
}

/// Where files cannot be made without a name (NFS, SMB, FAT; bindfs here),
/// a new file is written under a temporary name and renamed once complete:
/// a restore killed left a half-written file at its name, which a run again
/// with `--overwrite never` kept as restored.
#[test]
fn a_restore_killed_on_a_filesystem_without_unnamed_files_leaves_no_half_written_file() {
    use std::os::unix::ffi::OsStrExt;
    assert!(is_root(), "this test mounts bindfs: run the suite as root");
    let env = Env::uninit();
    // Files of many packs each: one is written half a second a pack.
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        write_random(&src.join(format!("f{i:02}")), 6 << 20, 700 + i);
    }
    env.backup(&[&src]);
    let (under, t) = (env.path("under"), env.path("t"));
    fs::create_dir_all(&under).unwrap();
    let _view = Bindfs::mount(&under, &t);
    let spec = format!("latest:{}", src.display());
    let args = ["restore", &spec, "--target", t.to_str().unwrap()];
    let mut child = slowed_restore(&env, &args, 500);
    // Killed once a file is being written, under whatever name.
    wait_until(30, "no file was written", || {
        fs::read_dir(&t)
            .unwrap()
            .any(|e| e.unwrap().metadata().unwrap().len() > 0)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let named: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .as_bytes()
                .starts_with(b".cairn-restore-")
        })
        .collect();
    assert!(
        named.len() < 3,
        "the restore had finished: the test shows nothing"
    );
    for p in &named {
        assert!(
            files_equal(p, &src.join(p.file_name().unwrap())),
            "{} is half-written ({} bytes)",
            p.display(),
            fs::metadata(p).unwrap().len()
        );
    }
    env.ok(&[&args[..], &["--overwrite", "never"]].concat());
    for i in 0..3 {
        let name = format!("f{i:02}");
        assert!(files_equal(&t.join(&name), &src.join(&name)), "{name}");
        let (a, b) = (
            fs::metadata(t.join(&name)).unwrap(),
            fs::metadata(src.join(&name)).unwrap(),
        );
        assert_eq!((a.mode(), a.mtime()), (b.mode(), b.mtime()), "{name}");
    }
}

/// A symbolic link, FIFO or device that replaces an entry is made beside
/// it and renamed over it: when it cannot be made (here a device, by
/// someone other than root), the entry is still there. It was removed
/// first, leaving nothing. A link that is already right is kept, not made
/// again on every run.
#[test]
fn an_entry_stays_when_the_link_or_device_replacing_it_cannot_be_made() {
    assert!(
        is_root(),
        "this test makes a device node and restores as nobody: run the suite as root"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    std::os::unix::fs::symlink("elsewhere", src.join("link")).unwrap();
    mknod(&src.join("fifo"), libc::S_IFIFO, 0o640, 0);
    mknod(&src.join("null"), libc::S_IFCHR, 0o666, libc::makedev(1, 3));
    env.backup(&[&src]);
    let t = env.path("t");
    restore_json(&env, &t, &[]);
    let d = restored(&t, &src);
    // Still the same link after a second run: it has its one name.
    let held = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(d.join("link"))
            .unwrap()
    };
    let r = restore_json(&env, &t, &[]);
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(
        held.metadata().unwrap().nlink(),
        1,
        "the link was made again"
    );
    // The target becomes nobody's, with a file of theirs where the device
    // was; nobody may not make devices.
    fs::remove_file(d.join("null")).unwrap();
    fs::write(d.join("null"), b"mine").unwrap();
    for e in walkdir::WalkDir::new(&t) {
        lchown(e.unwrap().path(), Some(65534), Some(65534)).unwrap();
    }
    let mut cmd = env.cmd();
    cmd.args(["restore", "latest", "--target", t.to_str().unwrap()]);
    as_unprivileged(&env, &mut cmd);
    let out = cmd.output().unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(fs::read(d.join("null")).unwrap(), b"mine", "{err}");
    assert!(
        fs::symlink_metadata(d.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        fs::read_link(d.join("link")).unwrap(),
        Path::new("elsewhere")
    );
    let left = fs::read_dir(&d).unwrap().count();
    assert_eq!(left, 3, "a temporary name was left behind");
}

#[test]
fn a_directory_restore_killed_and_run_again_gives_the_target_the_directorys_metadata() {
    // A restore of a directory's contents makes the target private and
    // gives it the directory's metadata at its end; killed first, the same
    // command again found the target there, took it for the user's own
    // and left it private and root's. With `--overwrite never`, which
    // leaves the user's directories as they are, the directories the
    // killed restore had made are still its to finish.
    assert!(
        is_root(),
        "this test gives files to other owners: run as root"
    );
    let env = Env::uninit();
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    let d = src.join("d");
    // Ten files of 300 KiB a directory: four packs of reads, each slowed.
    for s in ["s0", "s1"] {
        fs::create_dir_all(d.join(s)).unwrap();
        for i in 0..10 {
            let seed = i + if s == "s0" { 7 } else { 70 };
            write_random(&d.join(s).join(format!("f{i}")), 300 << 10, seed);
        }
        std::os::unix::fs::chown(d.join(s), Some(7), Some(8)).unwrap();
    }
    fs::set_permissions(&d, fs::Permissions::from_mode(0o751)).unwrap();
    std::os::unix::fs::chown(&d, Some(5), Some(6)).unwrap();
    env.backup(&[&src]);
    // Also in a setgid directory, which makes the target 02700.
    for (parent, mode) in [("plain", 0o755), ("setgid", 0o2775)] {
        let parent = env.path(parent);
        fs::create_dir(&parent).unwrap();
        fs::set_permissions(&parent, fs::Permissions::from_mode(mode)).unwrap();
        let t = parent.join("t");
        killed_and_run_again(&env, &d, &t);
    }
}

/// Restores the contents of `d` into `t`, kills the restore midway, and
/// runs it again with `--overwrite never`.
fn killed_and_run_again(env: &Env, d: &Path, t: &Path) {
    let restore = [
        "restore",
        &format!("latest:{}", d.display()),
        "--target",
        t.to_str().unwrap(),
    ];
    let mut child = slowed_restore(env, &restore, 400);
    wait_until(20, "nothing restored", || {
        fs::read_dir(t.join("s0")).is_ok_and(|mut d| d.next().is_some())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let m = fs::metadata(t).unwrap();
    assert_eq!(m.mode() & 0o777, 0o700, "killed before its end: private");
    // Begun and not finished: private, and root's.
    let m = fs::metadata(t.join("s0")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700));
    let err = env.ok(&[&restore[..], &["--overwrite", "never"]].concat());
    let m = fs::metadata(t).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (5, 6, 0o751),
        "{err}"
    );
    let m = fs::metadata(t.join("s0")).unwrap();
    assert_eq!((m.uid(), m.gid()), (7, 8), "{err}");
    assert_same_tree(d, t);
}

#[test]
fn overwrite_never_leaves_a_directory_that_is_there_as_it_is() {
    // Files there are kept; the directories holding them were given the
    // snapshot's mode, owner and times, and lost the ACLs and attributes
    // the snapshot did not have: a 0700 directory restored into was open.
    assert!(
        is_root(),
        "this test gives files to other owners: run as root"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/old.txt"), b"from the snapshot").unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    fs::create_dir_all(t.join("d")).unwrap();
    fs::write(t.join("d/mine.txt"), b"the user's").unwrap();
    fs::set_permissions(t.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(t.join("d"), Some(1000), Some(1000)).unwrap();
    xattr::set(t.join("d"), "user.mine", b"kept").unwrap();
    let before = fs::metadata(t.join("d")).unwrap();
    env.ok(&[
        "restore",
        &format!("latest:{}", src.display()),
        "--target",
        t.to_str().unwrap(),
        "--overwrite",
        "never",
    ]);
    assert_eq!(fs::read(t.join("d/old.txt")).unwrap(), b"from the snapshot");
    assert_eq!(fs::read(t.join("d/mine.txt")).unwrap(), b"the user's");
    let m = fs::metadata(t.join("d")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (before.uid(), before.gid(), 0o700)
    );
    assert_eq!(
        xattrs(&t.join("d")),
        [(b"user.mine".to_vec(), b"kept".to_vec())]
    );
}

#[test]
fn an_include_restore_killed_and_run_again_ends_as_one_never_stopped() {
    // Directories are made on the way down before it is known whether
    // anything below them is included; a restore killed meanwhile left them
    // empty, root's and private, and the same command again kept them.
    let env = Env::uninit();
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    for d in ["d1", "d2", "d3", "d4"] {
        for s in ["s0", "s1"] {
            fs::create_dir_all(src.join(d).join(s)).unwrap();
            write_random(&src.join(d).join(s).join("f"), 600 << 10, d.len() as u64);
        }
    }
    env.backup(&[&src]);
    // Killed outright, or stopped by Ctrl-C (which cleans up what it can).
    for (n, signal) in [libc::SIGKILL, libc::SIGINT].into_iter().enumerate() {
        let t = env.path(&format!("t{n}"));
        fs::create_dir(&t).unwrap();
        let restore = [
            "restore",
            &format!("latest:{}", src.display()),
            "--target",
            t.to_str().unwrap(),
            "--include",
            "/d3",
        ];
        let child = slowed_restore(&env, &restore, 400);
        wait_until(20, "no directory made on the way", || {
            ["d1", "d2", "d4"].iter().any(|d| t.join(d).exists())
        });
        // SAFETY: signals a child process of this test.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        child.wait_with_output().unwrap();
        env.ok(&restore);
        let mut left: Vec<String> = walkdir::WalkDir::new(&t)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(&t)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["d3", "d3/s0", "d3/s0/f", "d3/s1", "d3/s1/f"],
            "signal {signal}"
        );
    }
}

#[test]
fn a_target_swapped_while_restoring_is_not_given_the_owner_and_mode_of_the_one_taken_over() {
    assert!(
        is_root(),
        "root takes over the directories it restores into"
    );
    let env = Env::uninit();
    let src = snapshot_of_twelve_mib(&env, 500);
    // A directory anyone may rename entries of, holding someone's project.
    let shared = env.path("shared");
    fs::create_dir_all(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let proj = shared.join("proj");
    fs::create_dir(&proj).unwrap();
    lchown(&proj, Some(1234), Some(4321)).unwrap();
    fs::set_permissions(&proj, fs::Permissions::from_mode(0o2775)).unwrap();
    let child = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "slow-read=pack:300")
        .args([
            "restore",
            &format!("latest:{}", src.display()),
            "--target",
            proj.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fs::metadata(&proj).unwrap().uid() != 0 {
        assert!(std::time::Instant::now() < until, "never taken over");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Someone else swaps a file of theirs in at the target's name.
    fs::rename(&proj, shared.join("proj.x")).unwrap();
    fs::write(&proj, b"#!/bin/sh\n").unwrap();
    lchown(&proj, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&proj, fs::Permissions::from_mode(0o755)).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = exits(&out, 1);
    // It was given the owner and mode (setgid) of the directory taken over.
    let m = fs::symlink_metadata(&proj).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (65534, 65534, 0o755),
        "{err}"
    );
    assert!(err.contains("may rename its entries"), "{err}");
    assert!(
        err.contains("another entry stands at its name now"),
        "{err}"
    );
}

/// What each name made in `dir` (created, or renamed there) was as soon as
/// it appeared: its name, size, mode and mtime. Stops, and gives them, when
/// the returned function is called.
fn watch_names(dir: &Path) -> impl FnOnce() -> Vec<(String, u64, u32, i64)> {
    // SAFETY: plain system calls on a descriptor this test owns.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: as above; `c` is NUL-terminated.
    let wd =
        unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO) };
    assert!(wd >= 0);
    let watched = dir.to_path_buf();
    let watcher = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a buffer of this size.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            assert!(n > 0);
            let mut at = 0;
            while at < n as usize {
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                let name = &buf[at + 16..at + 16 + len];
                let name = String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_string();
                at += 16 + len;
                if name == "stop" {
                    // SAFETY: closes this test's descriptor.
                    unsafe { libc::close(fd) };
                    return seen;
                }
                // A name renamed away already is seen under its next one.
                if let Ok(m) = fs::symlink_metadata(watched.join(&name)) {
                    seen.push((name, m.len(), m.mode() & 0o7777, m.mtime()));
                }
            }
        }
    });
    let dir = dir.to_path_buf();
    move || {
        fs::write(dir.join("stop"), b"").unwrap();
        let seen = watcher.join().unwrap();
        fs::remove_file(dir.join("stop")).unwrap();
        seen
    }
}

#[test]
fn a_restored_file_appears_at_its_name_complete_with_its_metadata() {
    // Each file was created at its name and then written, mode 0600 and
    // the restore's time until its metadata came last: a restore killed
    // meanwhile left such a file, and `--overwrite never` kept it. A
    // replacement was renamed over the old file before its metadata.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let old = filetime::FileTime::from_unix_time(1_500_000_000, 0);
    for i in 0..8 {
        let f = src.join(format!("f{i}"));
        write_random(&f, 4 << 20, 300 + i);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        filetime::set_file_mtime(&f, old).unwrap();
    }
    env.backup(&[&src]);
    let t = env.path("t");
    fs::create_dir(&t).unwrap();
    let restore = [
        "restore",
        &format!("latest:{}", src.display()),
        "--target",
        t.to_str().unwrap(),
    ];
    for run in ["new", "replacing"] {
        let stop = watch_names(&t);
        if run == "new" {
            env.ok(&restore);
        } else {
            env.ok(&[&restore[..], &["--overwrite", "always"]].concat());
        }
        let seen = stop();
        assert!(seen.len() >= 8, "{run}: {seen:?}");
        for (name, len, mode, mtime) in seen {
            assert_eq!(
                (len, mode, mtime),
                (4 << 20, 0o640, 1_500_000_000),
                "{run}: {name} as it appeared"
            );
        }
    }
}

#[test]
fn a_file_given_as_the_target_is_named_as_not_a_directory() {
    let env = Env::new();
    let src = tree(&env);
    env.backup(&[&src]);
    let file = env.path("a-file");
    fs::write(&file, b"mine").unwrap();
    for dry in [false, true] {
        let mut args = vec!["restore", "latest", "--target", file.to_str().unwrap()];
        if dry {
            args.push("--dry-run");
        }
        let err = env.fails(&args, 1);
        assert!(err.contains("is not a directory"), "{err}");
    }
    assert_eq!(fs::read(&file).unwrap(), b"mine");
}

#[test]
fn a_restore_never_writes_into_the_repository_nor_deletes_it() {
    // The repository lies inside the directory backed up, as it may when a
    // whole home directory is.
    let env = Env::uninit();
    let home = env.path("home");
    let mut env = env;
    env.repo = home.join("repo");
    env.ok(&["init"]);
    fs::write(home.join("notes"), b"first").unwrap();
    let first = env.backup(&[&home])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(home.join("notes"), b"second").unwrap();
    env.backup(&[&home]);
    let spec = format!("{first}:{}", home.display());
    let err = env.fails(
        &[
            "restore",
            &spec,
            "--target",
            home.to_str().unwrap(),
            "--delete",
        ],
        1,
    );
    assert!(err.contains("holds the repository"), "{err}");
    let inside = env.repo.join("data");
    let err = env.fails(
        &["restore", &first, "--target", inside.to_str().unwrap()],
        1,
    );
    assert!(err.contains("lies inside the repository"), "{err}");
    // A relative target is where it points, from the working directory.
    let out = env
        .cmd()
        .current_dir(&env.repo)
        .args(["restore", &first, "--target", "out"])
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("lies inside the repository"), "{err}");
    assert!(!env.repo.join("out").exists());
    // A new directory beside the repository holds nothing: --delete is fine.
    let beside = home.join("restored");
    env.ok(&[
        "restore",
        &spec,
        "--target",
        beside.to_str().unwrap(),
        "--delete",
    ]);
    assert_eq!(fs::read(beside.join("notes")).unwrap(), b"first");
    env.assert_check_clean();
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
}

#[test]
fn a_restore_over_a_tree_holding_the_repository_leaves_the_repository_as_it_is() {
    // A snapshot that holds an older copy of the repository (taken by an
    // older cairn, or of a copy of it): restored over the live one, its
    // config turned append-only off, and a revoked password came back.
    let mut env = Env::new();
    let sys = env.path("sys");
    fs::create_dir_all(sys.join("data")).unwrap();
    fs::write(sys.join("data/f"), b"mine").unwrap();
    let pw2 = env.path("pw2");
    fs::write(&pw2, "second password").unwrap();
    env.ok(&["key", "add", "--new-password-file", pw2.to_str().unwrap()]);
    let copy_of = |env: &Env| {
        let _ = fs::remove_dir_all(sys.join("repo"));
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(&env.repo)
            .arg(sys.join("repo"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    copy_of(&env);
    env.backup(&[&sys]);
    // The repository, with that snapshot, now lives in the tree.
    copy_of(&env);
    env.repo = sys.join("repo");
    let keys = env.json(&["key", "list"]);
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["key", "remove", &other]);
    env.ok(&["config", "append-only", "on"]);
    let keys_dir = |env: &Env| fs::read_dir(env.repo.join("keys")).unwrap().count();
    assert_eq!(keys_dir(&env), 1);
    fs::remove_file(sys.join("data/f")).unwrap();

    let spec = format!("latest:{}", sys.display());
    let out = env.run(&["restore", &spec, "--target", sys.to_str().unwrap()]);
    let err = exits(&out, 0);
    assert!(
        err.contains("left as it is: the repository this restore reads from"),
        "{err}"
    );
    assert_eq!(fs::read(sys.join("data/f")).unwrap(), b"mine");
    assert_eq!(env.ok(&["config", "append-only"]).trim(), "append-only: on");
    assert_eq!(keys_dir(&env), 1, "the revoked key stays revoked");
    env.assert_check_clean();
}

#[test]
fn a_restore_with_delete_into_a_home_holding_the_cache_keeps_the_cache() {
    // Backups leave the cache out, so `--delete` found it extra, and
    // deleted the index the restore was reading.
    let mut env = Env::uninit();
    let home = env.path("home");
    env.cache = home.join(".cache/cairn");
    env.ok(&["init"]);
    fs::create_dir_all(home.join("work")).unwrap();
    fs::write(home.join("work/f"), b"mine").unwrap();
    env.backup(&[&home]);
    fs::write(home.join("work/extra"), b"since").unwrap();
    let spec = format!("latest:{}", home.display());
    let out = env.run(&[
        "restore",
        &spec,
        "--target",
        home.to_str().unwrap(),
        "--delete",
    ]);
    let err = exits(&out, 0);
    assert!(err.is_empty(), "{err}");
    assert!(!home.join("work/extra").exists());
    // Nor anything else of the cache root (it holds the restore's own
    // record of directories taken over, as root).
    assert!(env.cache.join("CACHEDIR.TAG").exists());
    assert!(env.cache.join("key-hints").exists());
    assert_eq!(fs::read(home.join("work/f")).unwrap(), b"mine");
    let caches: Vec<_> = fs::read_dir(&env.cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 64)
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    assert!(env.cache.join(&caches[0]).join("index.redb").exists());
    env.assert_check_clean();
}

#[test]
fn the_text_summary_counts_links_and_special_files() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    std::os::unix::fs::symlink("/nowhere", src.join("link")).unwrap();
    env.backup(&[&src]);
    // A restore of the link alone said "0 files ..., 0 directories, 0 B".
    let spec = format!("latest:{}", src.join("link").display());
    let t = env.path("t");
    let out = env.ok(&["restore", &spec, "--target", t.to_str().unwrap()]);
    assert!(
        out.contains("1 other entry (links, special files)"),
        "{out}"
    );
    assert_eq!(
        fs::read_link(t.join("link")).unwrap(),
        Path::new("/nowhere")
    );
}

#[test]
fn patterns_below_a_subpath_may_be_anchored_at_it_and_a_pattern_that_matches_nothing_is_said() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/f"), b"in a").unwrap();
    fs::write(src.join("b/g"), b"in b").unwrap();
    env.backup(&[&src]);
    let spec = format!("latest:{}", src.display());
    // Each restore into a target of its own must bring b and leave a out.
    let only_b = |target: &str, option: &str, pattern: &str| {
        let t = env.path(target);
        env.ok(&[
            "restore",
            &spec,
            "--target",
            t.to_str().unwrap(),
            option,
            pattern,
        ]);
        assert!(
            t.join("b/g").exists() && !t.join("a").exists(),
            "{option} {pattern}"
        );
    };
    // Anchored at the subpath (the root of what is restored, as in restic)...
    only_b("t1", "--include", "/b");
    // A relative pattern is matched below the subpath only: naming a
    // directory above it (`src`) excluded or included everything.
    only_b("t9", "--exclude", "a");
    only_b("t10b", "--include", "b");
    let t = env.path("t11");
    let out = env
        .cmd()
        .args(["restore", &spec, "--target"])
        .arg(&t)
        .args(["--exclude", "src"])
        .output()
        .unwrap();
    exits(&out, 0);
    assert!(t.join("a/f").exists() && t.join("b/g").exists());
    // A file as the subpath is matched by its own name (it was never
    // matched: `--include g` restored nothing), and `/` below a subpath
    // is all of it.
    // The subpath itself, as a full path, is all of it too (it selected
    // nothing).
    let whole = format!("{}/", src.display());
    let file = format!("{}/b/g", src.display());
    for (spec, pattern) in [
        (format!("latest:{}/b/g", src.display()), "g"),
        (spec.clone(), "/"),
        (spec.clone(), &whole[..whole.len() - 1]),
        (spec.clone(), &whole),
        (format!("latest:{file}"), &file),
    ] {
        let t = env.path(&format!("t12-{}", pattern.len() + spec.len()));
        let r = env.json(&[
            "restore",
            &spec,
            "--target",
            t.to_str().unwrap(),
            "--include",
            pattern,
        ]);
        assert!(r["files"].as_u64().unwrap() >= 1, "{spec} {pattern}: {r}");
    }
    // A subpath written with `//` or `/./` is the same subpath (patterns
    // anchored at it selected nothing); a file as the subpath is `/g`
    // there; a full path in other case is one for --iinclude.
    let d = src.display().to_string();
    let (parent, name) = d.rsplit_once('/').unwrap();
    let upper = d.to_uppercase();
    for (n, spec, option, pattern, want) in [
        (
            1,
            format!("latest:{parent}//{name}/./b"),
            "--include",
            "/g".to_string(),
            "g",
        ),
        (
            2,
            format!("latest:{d}/b/g"),
            "--include",
            "/g".to_string(),
            "g",
        ),
        (
            3,
            format!("latest:{d}/b/g"),
            "--include",
            "/*".to_string(),
            "g",
        ),
        (
            4,
            format!("latest:{d}"),
            "--iinclude",
            format!("{upper}/B"),
            "b/g",
        ),
    ] {
        let t = env.path(&format!("t13-{n}"));
        let ts = t.to_str().unwrap();
        env.ok(&["restore", &spec, "--target", ts, option, &pattern]);
        assert!(t.join(want).exists(), "{spec} {option} {pattern}");
        assert!(!t.join("a").exists(), "{spec} {option} {pattern}");
    }
    only_b("t2", "--exclude", "/a");
    // ...or written as the full path in the snapshot, as before.
    only_b("t3", "--include", &format!("{}/b", src.display()));
    // A full path with a glob in it is one too (`/home/*/.cache`).
    let mut globbed: Vec<String> = src
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_str().unwrap().to_string())
        .collect();
    let parent = globbed.len() - 2;
    globbed[parent] = "*".into();
    only_b("t7", "--exclude", &format!("/{}/a", globbed.join("/")));
    // One whose first component is a glob is relative to the subpath
    // (`/*/Downloads` below `/home`), even where its globs could match the
    // subpath's own path: read as a full path, `/*/*/*/x` below
    // `/tmp/t/src` excluded `src/x`.
    fs::write(src.join("x"), b"kept").unwrap();
    env.backup(&[&src]);
    let depth = src.components().count() - 1;
    let pattern = format!("/{}x", "*/".repeat(depth));
    let t = env.path("t8");
    let s = t.to_str().unwrap();
    env.ok(&["restore", &spec, "--target", s, "--exclude", &pattern]);
    assert_eq!(fs::read(t.join("x")).unwrap(), b"kept", "{pattern}");
    // A name inside that is also the first of the subpath's own path
    // (`/tmp` below `/tmp/.../src`) means the one inside, not the
    // subpath's ancestor: that left the target empty, exit 0.
    let first = src.components().nth(1).unwrap().as_os_str().to_owned();
    fs::create_dir_all(src.join(&first)).unwrap();
    fs::write(src.join(&first).join("h"), b"in first").unwrap();
    env.backup(&[&src]);
    let anchored = format!("/{}", first.to_str().unwrap());
    let t = env.path("t5");
    let s = t.to_str().unwrap();
    env.ok(&["restore", &spec, "--target", s, "--exclude", &anchored]);
    assert!(!t.join(&first).exists(), "{anchored} not excluded");
    assert!(t.join("a/f").exists() && t.join("b/g").exists());
    let t = env.path("t6");
    let s = t.to_str().unwrap();
    env.ok(&["restore", &spec, "--target", s, "--include", &anchored]);
    assert!(t.join(&first).join("h").exists());
    assert!(!t.join("a").exists() && !t.join("b").exists());
    // A pattern that matches nothing is said, not left to an empty target,
    // and exits 2 (a scripted restore test took exit 0 for a pass).
    let warned = |name: &str, patterns: &[&str]| {
        let t = env.path(name);
        let mut args = vec!["restore", &spec, "--target", t.to_str().unwrap()];
        args.extend_from_slice(patterns);
        let out = env.cmd().args(&args).output().unwrap();
        // Not under a line that says the snapshot was restored.
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(!said.contains("restored snapshot"), "{said}");
        exits(&out, 2)
    };
    let err = warned("t4", &["--include", "/nothing"]);
    assert!(
        err.contains("nothing in snapshot") && err.contains("/nothing"),
        "{err}"
    );
    assert!(!err.contains("exclude"), "{err}");
    // One that matched only what an exclude took out again: said as such
    // (it read as though the include had matched nothing).
    let err = warned("t9", &["--include", &anchored, "--exclude", "*"]);
    assert!(
        err.contains("that the exclude patterns let through"),
        "{err}"
    );
}

#[test]
fn a_dry_run_counts_what_is_already_in_the_target_as_the_real_run_does() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    env.backup(&[&src]);
    let t = env.path("t");
    let target = t.to_str().unwrap();
    env.ok(&["restore", "latest", "--target", target]);
    fs::write(restored(&t, &src).join("f0"), b"changed since").unwrap();
    let dry = env.json(&["restore", "latest", "--target", target, "--dry-run"]);
    let real = env.json(&["restore", "latest", "--target", target]);
    for key in ["files", "files_skipped", "bytes"] {
        assert_eq!(dry[key], real[key], "{key}: dry run {dry} against {real}");
    }
    assert_eq!(real["files"], 1, "{real}");
    assert_eq!(real["files_skipped"], 4, "{real}");
    // Damaged in place, size and modification time kept: the real run
    // rewrites it, and the dry run counted it as already there.
    let f1 = restored(&t, &src).join("f1");
    let mtime = filetime::FileTime::from_last_modification_time(&fs::metadata(&f1).unwrap());
    fs::write(&f1, b"FILE 1").unwrap();
    filetime::set_file_mtime(&f1, mtime).unwrap();
    let dry = env.json(&["restore", "latest", "--target", target, "--dry-run"]);
    assert_eq!(dry["files"], 1, "{dry}");
    let real = env.json(&["restore", "latest", "--target", target]);
    assert_eq!(real["files"], 1, "{real}");
    assert_eq!(fs::read(&f1).unwrap(), b"file 1");
    let never = env.json(&[
        "restore",
        "latest",
        "--target",
        target,
        "--dry-run",
        "--overwrite",
        "never",
    ]);
    assert_eq!(never["files"], 0, "{never}");
}

#[test]
fn a_subpath_restored_into_a_directory_that_exists_leaves_its_metadata_alone() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/f"), b"restored").unwrap();
    fs::set_permissions(src.join("dir"), fs::Permissions::from_mode(0o750)).unwrap();
    let old = filetime::FileTime::from_unix_time(1_577_836_800, 0);
    filetime::set_file_mtime(src.join("dir"), old).unwrap();
    env.backup(&[&src]);
    let spec = format!("latest:{}", src.join("dir").display());
    // A shared directory, as /tmp is: it kept the restored one's mode 0750
    // and lost its sticky bit.
    let shared = env.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::write(shared.join("someone-elses"), b"x").unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let s = shared.to_str().unwrap();
    env.ok(&["restore", &spec, "--target", s]);
    assert_eq!(fs::read(shared.join("f")).unwrap(), b"restored");
    let mode = fs::metadata(&shared).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o1777, "{mode:o}");
    // So does an empty one (`/tmp` in a container).
    let empty = env.path("empty");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o1777)).unwrap();
    env.ok(&["restore", &spec, "--target", empty.to_str().unwrap()]);
    let mode = fs::metadata(&empty).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o1777, "empty: {mode:o}");
    // A target the restore makes is the directory's copy, metadata too,
    // and so is the directory's own path (a restore in place, perhaps run
    // again after an interruption).
    let fresh = env.path("fresh");
    env.ok(&["restore", &spec, "--target", fresh.to_str().unwrap()]);
    let m = fs::metadata(&fresh).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o750, "fresh: {:o}", m.mode());
    // Its times too: nothing the restore does after moves them.
    assert_eq!(m.mtime(), 1_577_836_800, "fresh: mtime");
    let dir = src.join("dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    env.ok(&["restore", &spec, "--target", dir.to_str().unwrap()]);
    let mode = fs::metadata(&dir).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o750, "in place: {mode:o}");
}

#[test]
fn verify_restore_as_another_user_removes_read_only_directories_and_only_warns_about_root_attributes()
 {
    // As a user other than root, the scratch restore of a snapshot holding
    // a 0555 directory could not be removed: "ok", and a full copy left
    // behind at every run. A trusted.* attribute such a user may not set
    // failed the test, where restore only warns about it.
    let env = Env::new();
    let src = env.path("src");
    let ro = src.join("ro");
    fs::create_dir_all(&ro).unwrap();
    fs::write(ro.join("f"), b"inside a read-only directory").unwrap();
    fs::write(src.join("g"), b"with a root-only attribute").unwrap();
    let trusted = xattr::set(src.join("g"), "trusted.note", b"root's").is_ok();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    env.backup(&[&src]);
    let scratch = env.path("scratch");
    fs::create_dir(&scratch).unwrap();
    give_to_nobody(&env, &[&scratch]);
    for _ in 0..2 {
        let (out, r) = json_as_nobody(
            &env,
            &[
                "verify-restore",
                "latest",
                "--scratch",
                scratch.to_str().unwrap(),
            ],
        );
        exits(&out, 0);
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["files"], 2, "{r}");
        if trusted {
            let w = r["warnings"].to_string();
            assert!(w.contains("trusted.note") && w.contains("/g"), "{r}");
        }
        let left: Vec<_> = fs::read_dir(&scratch).unwrap().collect();
        assert!(left.is_empty(), "scratch directories left: {left:?}");
    }
}

#[test]
fn an_include_restore_run_again_gives_the_directories_above_its_files_their_metadata() {
    // Files found already right counted as nothing restored, so a
    // directory above them that the selection did not name itself was
    // passed over: a run again after `chmod -R` (or after a restore killed
    // before the directories were finished, made 0700) left them wrong.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d/s")).unwrap();
    fs::write(src.join("d/s/f"), b"kept").unwrap();
    fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(src.join("d/s"), fs::Permissions::from_mode(0o755)).unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    let include = src.join("d/s/f");
    let args = ["--include", include.to_str().unwrap()];
    restore_json(&env, &t, &args);
    let (d, s) = (restored(&t, &src).join("d"), restored(&t, &src).join("d/s"));
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!((mode(&d), mode(&s)), (0o751, 0o755));
    for p in [&d, &s] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let again = restore_json(&env, &t, &args);
    assert_eq!(
        (&again["files"], &again["files_skipped"]),
        (&0.into(), &1.into()),
        "{again}"
    );
    assert_eq!((mode(&d), mode(&s)), (0o751, 0o755), "{again}");
}

#[test]
fn a_restore_run_again_onto_a_target_with_coarse_times_keeps_what_is_there() {
    // The times the restore set were rounded by the target (to the second
    // here, as on FAT, SMB or ext3), and compared exactly: no file was
    // found restored, and every run again wrote everything anew.
    assert!(
        is_root(),
        "this test mounts a loop device: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let f = src.join(name);
        write_random(&f, 100_000 + i * 1000, i as u64);
        filetime::set_file_mtime(
            &f,
            filetime::FileTime::from_unix_time(1_700_000_000, 123_456_789),
        )
        .unwrap();
    }
    env.backup(&[&src]);
    let disk = env.path("disk");
    fs::create_dir_all(&disk).unwrap();
    let _mounted = Tmpfs::coarse_times(&env.path("disk.img"), &disk);
    let target = disk.join("out");
    let t = target.to_str().unwrap();
    let first = env.json(&["restore", "latest", "--target", t]);
    assert_eq!(first["files_skipped"], 0, "{first}");
    let again = env.json(&["restore", "latest", "--target", t]);
    assert_eq!(again["files_skipped"], 3, "{again}");
    for name in ["a", "b", "c"] {
        let back = restored(&target, &src).join(name);
        assert_eq!(fs::read(&back).unwrap(), fs::read(src.join(name)).unwrap());
        // Rounded down to the second by this target.
        assert_eq!(fs::metadata(&back).unwrap().mtime(), 1_700_000_000);
    }
    // Content changed in place, size and time kept: written anew.
    let a = restored(&target, &src).join("a");
    let mut bytes = fs::read(&a).unwrap();
    bytes[10] ^= 1;
    fs::write(&a, &bytes).unwrap();
    filetime::set_file_mtime(&a, filetime::FileTime::from_unix_time(1_700_000_000, 0)).unwrap();
    let third = env.json(&["restore", "latest", "--target", t]);
    assert_eq!(third["files_skipped"], 2, "{third}");
    assert_eq!(fs::read(&a).unwrap(), fs::read(src.join("a")).unwrap());
}

#[test]
fn names_one_entry_on_a_case_insensitive_target_are_not_restored_over_each_other() {
    // README and readme (and a directory Docs beside a file docs) are one
    // entry each on exFAT: restored at once, one silently replaced the
    // other, and the restore said all was well.
    assert!(
        is_root(),
        "this test mounts a loop device: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("Docs")).unwrap();
    fs::write(src.join("Docs/guide"), "the guide").unwrap();
    fs::write(src.join("docs"), "a file named docs").unwrap();
    fs::write(src.join("README"), "upper").unwrap();
    fs::write(src.join("readme"), "lower").unwrap();
    fs::write(src.join("other"), "other").unwrap();
    env.backup(&[&src]);
    let disk = env.path("disk");
    fs::create_dir_all(&disk).unwrap();
    let _mounted = Tmpfs::case_insensitive(&env.path("disk.img"), &disk);
    let target = disk.join("out");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let back = restored(&target, &src);
    // Tree order: the upper-case names come first and are restored.
    assert_eq!(fs::read_to_string(back.join("README")).unwrap(), "upper");
    assert_eq!(
        fs::read_to_string(back.join("Docs/guide")).unwrap(),
        "the guide"
    );
    assert_eq!(fs::read_to_string(back.join("other")).unwrap(), "other");
    for (name, was) in [("readme", "README"), ("docs", "Docs")] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("/{name}: not restored")))
            .unwrap_or_else(|| panic!("{name} named on stderr: {err}"));
        assert!(
            line.contains(&format!(
                "this filesystem takes the name for {was}, restored already"
            )),
            "{line}"
        );
    }
    // A directory already in the target under the second spelling: the
    // first filled it, and the second was merged in with exit 0.
    let src = env.path("src2");
    fs::create_dir_all(src.join("Lib")).unwrap();
    fs::create_dir_all(src.join("lib")).unwrap();
    fs::write(src.join("Lib/a"), "a").unwrap();
    fs::write(src.join("lib/b"), "b").unwrap();
    env.backup(&[&src]);
    let target = disk.join("out2");
    let back = restored(&target, &src);
    fs::create_dir_all(back.join("lib")).unwrap();
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/lib: not restored: this filesystem takes the name for Lib"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(back.join("Lib/a")).unwrap(), "a");
    assert!(!back.join("Lib/b").exists(), "{err}");
}

/// `restore --delete` onto a target that folds names: a directory renamed
/// in case since the last restore (`photos` to `Photos`) is restored into
/// the entry the target has, which keeps its old spelling; `--delete` then
/// took that entry for an extra one and deleted it whole, with exit 0.
#[test]
fn restore_delete_on_a_case_insensitive_target_keeps_what_it_restored_into() {
    assert!(
        is_root(),
        "this test mounts a loop device: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("photos")).unwrap();
    fs::write(src.join("photos/a.jpg"), "first photo").unwrap();
    fs::write(src.join("notes"), "notes").unwrap();
    fs::write(src.join("same"), "same").unwrap();
    env.backup(&[&src]);
    let disk = env.path("disk");
    fs::create_dir_all(&disk).unwrap();
    let _mounted = Tmpfs::case_insensitive(&env.path("disk.img"), &disk);
    // The source's own directory: exFAT keeps no sticky bit (/tmp's).
    let spec = format!("latest:{}", src.display());
    let back = disk.join("out");
    env.restore(&spec, &back);
    fs::write(back.join("extra"), "not in the snapshot").unwrap();
    fs::rename(src.join("photos"), src.join("Photos")).unwrap();
    fs::write(src.join("Photos/b.jpg"), "second photo").unwrap();
    fs::rename(src.join("notes"), src.join("NOTES")).unwrap();
    env.backup(&[&src]);
    let r = env.json(&[
        "restore",
        &spec,
        "--delete",
        "--target",
        back.to_str().unwrap(),
    ]);
    assert_eq!(r["deleted"], 1, "{r}");
    assert!(!back.join("extra").exists());
    assert_eq!(
        fs::read_to_string(back.join("Photos/a.jpg")).unwrap(),
        "first photo"
    );
    assert_eq!(
        fs::read_to_string(back.join("Photos/b.jpg")).unwrap(),
        "second photo"
    );
    assert_eq!(fs::read_to_string(back.join("NOTES")).unwrap(), "notes");
}

/// A target the restore makes is private until the directory's own
/// metadata comes last: made from the umask (0755), the files of a 0700
/// directory restored into it were readable by anyone while it ran.
#[test]
fn a_target_the_restore_makes_is_private_while_it_runs() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.txt"), "private notes").unwrap();
    fs::set_permissions(src.join("notes.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
    env.backup(&[&src]);
    let mark = env.path("reading");
    let target = env.path("new/priv");
    let mut child = env
        .cmd()
        .env(
            "CAIRN_TEST_FAULTS",
            format!("slow-read=pack:1500,slow-read-mark={}", mark.display()),
        )
        .args(["--no-cache", "restore"])
        .arg(format!("latest:{}", src.display()))
        .arg("--target")
        .arg(&target)
        .spawn()
        .unwrap();
    // The target is made once the trees are read; the file's content is
    // read (slowly) after.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mode = loop {
        if let Ok(m) = fs::metadata(&target) {
            break m.permissions().mode() & 0o7777;
        }
        assert!(std::time::Instant::now() < until, "no target made");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(mark.exists());
    assert_eq!(mode, 0o700, "{mode:o} while the restore runs");
    assert!(child.wait().unwrap().success());
    let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750, "{mode:o} once restored");
    assert_eq!(
        fs::read_to_string(target.join("notes.txt")).unwrap(),
        "private notes"
    );
    // A whole snapshot's target has no mode of its own in it: the umask's,
    // not 0700 for good.
    let umask = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap();
    let whole = env.path("new2/whole");
    env.restore("latest", &whole);
    let mode = fs::metadata(&whole).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777 & !umask, "{mode:o}");
}

#[test]
fn a_restore_stopped_while_it_chooses_the_snapshot_removes_its_lock() {
    // The signal handler came only after the snapshot was chosen (every
    // record read: seconds on S3): a Ctrl-C there killed the restore with
    // its lock left, and other hosts' prune and forget were refused.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    env.backup(&[&src]);
    let mark = env.path("reading");
    let target = env.path("target");
    let child = env
        .cmd()
        .env(
            "CAIRN_TEST_FAULTS",
            format!("slow-read=snapshot:3000,slow-read-mark={}", mark.display()),
        )
        .args(["--no-cache", "restore", "latest", "--target"])
        .arg(&target)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !mark.exists() {
        assert!(std::time::Instant::now() < until, "no snapshot read");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: signals a child process of this test.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    exits(&out, 130);
    assert_eq!(fs::read_dir(env.repo.join("locks")).unwrap().count(), 0);
    assert!(!target.exists());
}

/// A user restoring into another user's directory that others may write to
/// (a shared group directory) is refused, as the entries could be swapped
/// for links while files are written: it said "chmod: Operation not
/// permitted", neither why nor what to do. The way it names works.
#[test]
fn a_restore_into_another_users_shared_directory_says_why_not_and_what_works() {
    assert_root();
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "restored").unwrap();
    env.backup(&[&src]);
    let shared = env.path("shared");
    fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::chown(&shared, Some(1234), Some(1234)).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env.give_to_nobody();
    let as_nobody = |target: &Path| {
        env.cmd_as_nobody()
            .args(["restore", "latest", "--target"])
            .arg(target)
            .output()
            .unwrap()
    };
    let err = exits(&as_nobody(&shared), 1);
    assert!(err.contains("another user's directory"), "{err}");
    let suggested = shared.join("restored");
    assert!(
        err.contains(&format!("--target {}", suggested.display())),
        "{err}"
    );
    assert_eq!(fs::read_dir(&shared).unwrap().count(), 0, "nothing written");
    exits(&as_nobody(&suggested), 0);
    assert_eq!(
        fs::read_to_string(restored(&suggested, &src).join("f")).unwrap(),
        "restored"
    );
}

/// The repository and its cache are known by device and inode too: given
/// through a bind mount of the disk (a container's `-v /srv/backup:/repo`),
/// a backup of the tree stored the repository in itself, and a restore
/// with `--delete` of that tree deleted its live packs.
#[test]
fn a_repository_reached_through_a_bind_mount_is_left_out_of_backups_and_restores() {
    assert!(
        is_root(),
        "this test bind-mounts: run the suite as root (tests/run-all.sh)"
    );
    let mut env = Env::uninit();
    let src = env.path("srv");
    fs::create_dir_all(src.join("home/.cache")).unwrap();
    fs::write(src.join("doc.txt"), "one").unwrap();
    let _repo_view = repository_bound_into(&mut env, &src);
    let _cache_view = BindMount::writable(&src.join("home/.cache"), &env.path("cache-view"));
    env.cache = env.path("cache-view/cairn");
    env.ok(&["init"]);
    let first = env.backup(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = env.ok(&["ls", &first, "--recursive"]);
    for own in [
        "/backup/repo/data",
        "/backup/repo/config",
        "/home/.cache/cairn/",
    ] {
        assert!(!listed.contains(own), "{own} stored: {listed}");
    }
    assert!(listed.contains("/doc.txt"), "{listed}");
    fs::write(src.join("doc.txt"), "two").unwrap();
    env.backup(&[&src]);
    let spec = format!("{first}:{}", src.display());
    env.ok(&[
        "restore",
        &spec,
        "--target",
        src.to_str().unwrap(),
        "--delete",
    ]);
    assert_eq!(fs::read_to_string(src.join("doc.txt")).unwrap(), "one");
    env.assert_check_clean();
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
}

/// A restore with `args` whose every pack read is slowed by `ms`
/// milliseconds, its errors not read.
fn slowed_restore(env: &Env, args: &[&str], ms: u32) -> std::process::Child {
    env.cmd()
        .env("CAIRN_TEST_FAULTS", format!("slow-read=pack:{ms}"))
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits up to `secs` seconds for `cond`, failing with `what` if it never
/// holds.
fn wait_until(secs: u64, what: &str, cond: impl Fn() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < until, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `verified` counts names, as `files` does: a file with three names read
/// "4 files, 2 verified", as though two were left unchecked.
#[test]
fn verify_counts_every_name_of_a_file_with_hard_links() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("x"), "shared").unwrap();
    fs::hard_link(src.join("x"), src.join("y")).unwrap();
    fs::hard_link(src.join("x"), src.join("d/z")).unwrap();
    fs::write(src.join("w"), "alone").unwrap();
    env.backup(&[&src]);
    let t = env.path("t");
    let r = restore_json(&env, &t, &["--verify"]);
    assert_eq!(
        (r["files"].as_u64(), r["verified"].as_u64()),
        (Some(4), Some(4)),
        "{r}"
    );
    assert_same_tree(&src, &restored(&t, &src));
    // Again, all found in place: each name checked.
    let r = restore_json(&env, &t, &["--verify"]);
    assert_eq!(r["verified"].as_u64(), Some(4), "{r}");
}

/// Include patterns that match entries which then fail to restore are not
/// "nothing matched" (exit 2, a mistyped path): the failure is told, exit 1.
#[test]
fn an_include_that_matches_only_what_fails_is_an_error_not_a_typo() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("data"), 200_000, 3);
    env.backup(&[&src]);
    // The file's data pack (its tree is in a small one).
    fs::remove_file(largest_pack(&env.repo)).unwrap();
    let t = env.path("t");
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--include",
        src.join("data").to_str().unwrap(),
    ]);
    let err = exits(&out, 1);
    assert!(!err.contains("nothing in snapshot"), "{err}");
    assert!(err.contains("1 entry could not be restored"), "{err}");
}
