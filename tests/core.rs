//! End-to-end tests of the repository core: init, backup, restore, change
//! detection, dedup, passwords and exit codes, crash safety, corruption.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::*;
use filetime::FileTime;

fn chunker_sizes(env: &Env) -> (usize, usize, usize) {
    let cfg: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "config"])).unwrap();
    let c = &cfg["chunker"];
    let get = |k: &str| c[k].as_u64().unwrap() as usize;
    (get("min_size"), get("avg_size"), get("max_size"))
}

/// The mixed tree the issue asks for: empty and tiny files, sizes around the
/// chunker's bounds, 64 MiB of random data, compressible text, odd modes and
/// timestamps before 1970 and after 2038.
fn make_mixed_tree(env: &Env, root: &Path) {
    let (min, avg, max) = chunker_sizes(env);
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("one"), b"x").unwrap();
    for (i, size) in [
        min - 1,
        min,
        min + 1,
        avg,
        max - 1,
        max,
        max + 1,
        2 * max + 3,
    ]
    .into_iter()
    .enumerate()
    {
        write_random(&root.join(format!("sub/boundary-{size}")), size, i as u64);
    }
    write_random(&root.join("random-64mib"), 64 << 20, 99);
    let text: String = (0..200_000)
        .map(|i| format!("line {i} of some very compressible text\n"))
        .collect();
    fs::write(root.join("sub/deeper/text.txt"), &text).unwrap();
    std::os::unix::fs::symlink("../one", root.join("sub/link-to-one")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", root.join("dangling")).unwrap();
    fs::set_permissions(root.join("one"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(
        root.join("sub/deeper/text.txt"),
        fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    fs::set_permissions(root.join("sub/deeper"), fs::Permissions::from_mode(0o750)).unwrap();
    filetime::set_file_mtime(
        root.join("one"),
        FileTime::from_unix_time(-1_234_567_890, 123_456_789),
    )
    .unwrap();
    filetime::set_file_mtime(
        root.join("empty"),
        FileTime::from_unix_time(4_102_444_800, 987_654_321),
    )
    .unwrap();
    filetime::set_file_mtime(
        root.join("sub/deeper"),
        FileTime::from_unix_time(1_000_000_000, 42),
    )
    .unwrap();
}

/// A file whose times are whole seconds (a coarse filesystem: FAT, ext4
/// with small inodes) within a tick of the backup that read it may have
/// changed again in that tick, unseen by size, times and inode: the next
/// backup reads it again, and counts it unmodified when the content is the
/// same. Once the backup before is a tick later than its times, it is
/// trusted again.
#[test]
fn a_file_with_coarse_times_close_to_the_backup_is_read_again() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("f");
    fs::write(&f, b"same size, other bytes maybe").unwrap();
    let now = FileTime::now().unix_seconds();
    filetime::set_file_mtime(&f, FileTime::from_unix_time(now, 0)).unwrap();
    env.backup(&[&src]);
    let second = env.backup(&[&src]);
    assert_eq!(second["bytes_read"], 28, "{second}");
    assert_eq!(second["files_unmodified"], 1, "{second}");
    assert_eq!(second["files_changed"], 0, "{second}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.backup(&[&src]);
    let fourth = env.backup(&[&src]);
    assert_eq!(fourth["bytes_read"], 0, "{fourth}");
    assert_eq!(fourth["files_unmodified"], 1, "{fourth}");
}

#[test]
fn mixed_tree_restores_identical_and_rebackup_reads_nothing() {
    let env = Env::new();
    let src = env.path("src");
    make_mixed_tree(&env, &src);

    let first = env.backup(&[&src]);
    assert_eq!(first["files_new"], 12);
    assert_eq!(first["partial"], false);
    assert!(first["bytes_read"].as_u64().unwrap() > 64 << 20);
    // Random data does not compress: the repository grows by about what was read.
    let added = first["data_added"].as_u64().unwrap();
    assert!(
        added < first["bytes_read"].as_u64().unwrap(),
        "text compresses, so less is stored than read"
    );

    let target = env.path("restore1");
    env.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));

    // Unchanged: nothing is read, every file is reused from the parent.
    let second = env.backup(&[&src]);
    assert_eq!(second["bytes_read"], 0, "{second}");
    assert_eq!(second["files_unmodified"], 12);
    assert_eq!(second["files_new"], 0);
    assert_eq!(second["parent"], first["snapshot_id"]);

    // A changed file is re-read, and only it.
    fs::write(src.join("one"), b"y").unwrap();
    let third = env.backup(&[&src]);
    assert_eq!(third["files_changed"], 1);
    assert_eq!(third["bytes_read"], 1);

    // The first snapshot still restores as it was.
    let first_id = first["snapshot_id"].as_str().unwrap();
    let target = env.path("restore-first");
    env.restore(first_id, &target);
    assert_eq!(fs::read(restored(&target, &src).join("one")).unwrap(), b"x");

    // Subpath restore puts the directory's contents into the target.
    let target = env.path("restore-sub");
    let spec = format!("latest:{}/sub", src.display());
    env.restore(&spec, &target);
    assert!(files_equal(
        &src.join("sub/deeper/text.txt"),
        &target.join("deeper/text.txt")
    ));

    let report = env.json(&["check", "--read-data"]);
    assert_eq!(report["errors"].as_array().unwrap().len(), 0, "{report}");
}

#[test]
fn copied_file_adds_almost_nothing() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big"), 64 << 20, 7);
    let first = env.backup(&[&src]);
    assert!(first["data_added"].as_u64().unwrap() >= 64 << 20);
    fs::copy(src.join("big"), src.join("big-copy")).unwrap();
    let second = env.backup(&[&src]);
    assert_eq!(second["files_new"], 1);
    assert_eq!(second["bytes_read"], 64 << 20);
    let added = second["data_added"].as_u64().unwrap();
    assert!(
        added < 64 * 1024,
        "a copy of a stored file added {added} bytes"
    );
}

#[test]
fn snapshots_json_and_selection() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"first").unwrap();
    let src_s = src.to_str().unwrap();
    env.ok(&[
        "backup",
        src_s,
        "--tag",
        "daily",
        "--host",
        "box",
        "--time",
        "2026-01-03 10:00:00",
    ]);
    fs::write(src.join("a"), b"second").unwrap();
    env.ok(&[
        "backup",
        src_s,
        "--tag",
        "daily",
        "--host",
        "box",
        "--time",
        "2026-01-03 11:00:00",
    ]);

    let list = env.json(&["snapshots"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for s in list {
        for k in [
            "id", "short_id", "time", "hostname", "paths", "tags", "summary",
        ] {
            assert!(!s[k].is_null(), "snapshot JSON lacks {k}: {s}");
        }
        assert_eq!(s["hostname"], "box");
        assert_eq!(s["tags"][0], "daily");
        assert_eq!(s["paths"][0], src_s);
    }
    // --path matches as the backup recorded the source: a trailing slash
    // or a path relative to the current directory is the same path.
    let slash = format!("{src_s}/");
    for (path, dir) in [
        (slash.as_str(), &env.repo),
        ("src", &env.dir.path().to_path_buf()),
    ] {
        let out = env
            .cmd()
            .current_dir(dir)
            .args(["--json", "snapshots", "--path", path])
            .output()
            .unwrap();
        exits(&out, 0);
        assert_eq!(
            last_json(&out).as_array().unwrap().len(),
            2,
            "--path {path}"
        );
    }
    assert!(chrono_like(list[0]["time"].as_str().unwrap()));

    // --at picks the newest snapshot at or before the time.
    let target = env.path("at");
    env.ok(&[
        "restore",
        "--at",
        "2026-01-03 10:30:00",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read(restored(&target, &src).join("a")).unwrap(),
        b"first"
    );
    let ls = env.ok(&["ls", "--at", "2026-01-03 11:30:00", "-l"]);
    assert!(ls.contains(&format!("{src_s}/a")), "{ls}");
    // Unique prefixes select; bad ones are clear errors.
    let short = list[1]["short_id"].as_str().unwrap();
    env.ok(&["ls", short]);
    let err = env.fails(&["ls", "zz"], 1);
    assert!(err.contains("not a snapshot ID"));
    let err = env.fails(
        &[
            "restore",
            "--at",
            "2020-01-01 00:00:00",
            "--target",
            target.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("no snapshot at or before"));
}

#[test]
fn at_a_time_without_fractions_takes_in_its_second() {
    // Snapshot times have fractions of a second that listings leave out:
    // `--at` with the time `snapshots` shows (or a minute, as the docs
    // write it) chose the snapshot before, exit 0. The rest of a minute is
    // not taken in: a snapshot after the moment meant is the wrong one.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("f");
    let f_s = f.to_str().unwrap();
    for (time, content) in [
        ("2026-01-03 10:14:00", "old"),
        ("2026-01-03 10:15:00.300", "new"),
        ("2026-01-03 10:15:40", "later"),
    ] {
        fs::write(&f, content).unwrap();
        env.ok(&["backup", src.to_str().unwrap(), "--time", time]);
    }
    let shown = env.ok(&["snapshots"]);
    assert!(shown.contains("2026-01-03 10:15:00"), "{shown}");
    for (at, content) in [
        ("2026-01-03 10:15", "new"),
        ("2026-01-03 10:15:00", "new"),
        ("2026-01-03 10:15:39", "new"),
        ("2026-01-03 10:15:40", "later"),
        ("2026-01-03 10:15:00.2", "old"),
        ("2026-01-03 10:14:59", "old"),
        ("2026-01-03 10:14", "old"),
    ] {
        assert_eq!(env.ok(&["dump", "--at", at, f_s]), content, "--at {at}");
    }
    // A subfolder with --at, as restore takes it (dump refused it: "give
    // either a snapshot or --at, not both").
    let sub = format!(":{}", src.display());
    let at = ["dump", "--at", "2026-01-03 10:15", &sub, "/f"];
    assert_eq!(env.ok(&at), "new");
    // The snapshot must hold the subfolder and PATH: a newer one of a
    // directory below the subfolder was taken, and the dump failed.
    fs::create_dir(src.join("sub")).unwrap();
    let sub_dir = src.join("sub");
    env.ok(&[
        "backup",
        sub_dir.to_str().unwrap(),
        "--time",
        "2026-01-03 10:15:20",
    ]);
    let at = ["dump", "--at", "2026-01-03 10:15:30", &sub, "/f"];
    assert_eq!(env.ok(&at), "new");
    // A record that could not be read (EIO, a 5xx) was reported as no
    // snapshot at all: "no backup then" for a store that failed.
    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "fail-read-once=snapshot")
        .args(["dump", "--at", "2026-01-03 10:15", f_s])
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(!err.contains("no snapshot"), "{err}");
    assert!(err.contains("injected I/O error"), "{err}");
}

#[test]
fn a_backup_dated_with_time_follows_the_snapshot_taken_by_then() {
    // A back-filled history recorded the newest snapshot as the parent of
    // one dated before it, as restic does not.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    let src_s = src.to_str().unwrap();
    let at = |time: &str| {
        let summary = env.json(&["backup", src_s, "--time", time]);
        (
            summary["snapshot_id"].as_str().unwrap().to_string(),
            summary,
        )
    };
    let (noon, _) = at("2026-01-03 12:00:00");
    let (ten, before_all) = at("2026-01-03 10:00:00");
    assert!(before_all["parent"].is_null(), "{before_all}");
    let (one, between) = at("2026-01-03 13:00:00");
    assert_eq!(between["parent"], noon.as_str(), "{between}");
    let (_, back) = at("2026-01-03 11:00:00");
    assert_eq!(back["parent"], ten.as_str(), "{back}");
    let now = env.json(&["backup", src_s]);
    assert_eq!(now["parent"], one.as_str(), "{now}");
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T')
}

#[test]
fn wrong_password_and_missing_repository_exit_codes() {
    let env = Env::new();
    let mut c = env.cmd();
    let out = c
        .env("CAIRN_PASSWORD", "not the password")
        .arg("snapshots")
        .output()
        .unwrap();
    let err = exits(&out, 12);
    assert!(err.contains("wrong password"));

    let missing = Env::uninit();
    let err = missing.fails(&["snapshots"], 10);
    assert!(err.contains("does not exist"));

    // init on an existing repository refuses and changes nothing.
    let err = env.fails(&["init"], 1);
    assert!(err.contains("already exists"));
    env.ok(&["snapshots"]);
}

#[test]
fn a_wrong_command_line_exits_2_and_changes_nothing() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"one").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let f = src.join("f");
    let f = f.to_str().unwrap();
    let t = env.path("t");
    let t = t.to_str().unwrap();
    let before = repo_files(&env.repo);
    for (args, says) in [
        (vec!["prune", "--max-unused", "101%"], "invalid share"),
        // A bare 1 is no 1%: taken as 100%, it turned repacking off.
        (vec!["prune", "--max-unused", "1"], "invalid share"),
        (vec!["check", "--read-data-subset", "0/7"], "subset"),
        (vec!["snapshots", "--s3-min-rate", "0"], "above 0"),
        (
            vec!["check", "--read-data", "--read-data-subset", "1/3"],
            "cannot be used with",
        ),
        (vec!["backup", "--time", "garbage", f], "cannot parse time"),
        (vec!["backup", "--time", "2263-01-01", f], "out of range"),
        (vec!["backup"], "nothing to back up"),
        (
            vec!["backup", "--stdin", "--stdin-filename", "x", f],
            "take no paths",
        ),
        (
            vec!["find", "x", "--oldest", "last week"],
            "cannot parse time",
        ),
        (vec!["forget", "--keep-within", "1x"], "invalid duration"),
        (vec!["forget", "--keep-tag", "a,,b"], "empty tag"),
        (
            vec!["backup", "--schedule", "1h", "--keep-last", "0", f],
            "no policy",
        ),
        (vec!["watch", "--keep-daily", "0", f], "no policy"),
        (vec!["init", "--chunk-min", "1"], "invalid chunk sizes"),
        (vec!["init", "--chunk-max", "8G"], "too large"),
        (vec!["ls", "--at", "garbage"], "cannot parse time"),
        (
            vec!["ls", "latest", "--at", "2030-01-01"],
            "give no snapshot",
        ),
        (vec!["ls", "latest", "rel/dir"], "absolute paths"),
        (
            vec!["restore", "latest", "--at", "2030-01-01", "-t", t],
            "not both",
        ),
        (vec!["restore", ":/sub", "-t", t], "give a snapshot"),
        (vec!["restore", "-t", t], "required"),
        (vec!["dump", "latest", f, "--at", "2030-01-01"], "not both"),
        (vec!["cat", "blob"], "needs an ID"),
        (vec!["cat", "key"], "needs an ID"),
        (vec!["cat", "nothing"], "invalid value"),
        (
            vec![
                "-r",
                "s3:http://127.0.0.1:9/b",
                "--s3-bucket-lookup",
                "sideways",
                "snapshots",
            ],
            "sideways",
        ),
        // Found before the repository is opened: the same for a missing one.
        (vec!["-r", "/nonexistent", "backup"], "nothing to back up"),
        (vec!["-r", "/nonexistent", "cat", "tree"], "needs an ID"),
    ] {
        let err = env.fails(&args, 2);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Values that are fine: far times for queries, an S3 setting in the
    // environment of a local repository, an empty cache setting (the
    // default), a subpath with --at.
    env.ok(&["ls", "--at", "3000-01-01", "/"]);
    env.ok(&["find", "f", "--newest", "9999-01-01"]);
    let out = env
        .cmd()
        .env("CAIRN_S3_BUCKET_LOOKUP", "virtual")
        .env("CAIRN_S3_TIMEOUT", "0")
        .env("CAIRN_S3_MIN_RATE", "fast")
        .env("CAIRN_CACHE_DIR", "")
        .env("HOME", env.path("home"))
        .env_remove("XDG_CACHE_HOME")
        .arg("snapshots")
        .output()
        .unwrap();
    exits(&out, 0);
    assert!(env.path("home/.cache/cairn").is_dir());
    // Without $HOME (a service without `User=`, `env -i`), the password
    // database's home: nobody's, /nonexistent, cannot be made, and that is
    // said (the cache was dropped without a word).
    if is_root() {
        let mut cmd = env.cmd();
        as_unprivileged(&env, &mut cmd);
        let out = cmd
            .env("CAIRN_CACHE_DIR", "")
            .env_remove("HOME")
            .env_remove("XDG_CACHE_HOME")
            .arg("snapshots")
            .output()
            .unwrap();
        let err = exits(&out, 0);
        assert!(
            err.contains("create directory /nonexistent/.cache/cairn/"),
            "{err}"
        );
        for e in walkdir::WalkDir::new(&env.repo)
            .into_iter()
            .chain(walkdir::WalkDir::new(&env.cache))
        {
            std::os::unix::fs::lchown(e.unwrap().path(), Some(0), Some(0)).unwrap();
        }
    }
    let t2 = env.path("t2");
    let sub = format!(":{}", src.display());
    env.ok(&[
        "restore",
        &sub,
        "--at",
        "2999-01-01",
        "-t",
        t2.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(t2.join("f")).unwrap(), b"one");
    assert_eq!(repo_files(&env.repo), before);
    assert!(!env.path("t").exists());
}

#[test]
fn a_source_given_as_link_slash_is_the_directory_it_points_to() {
    let env = Env::new();
    let dir = env.path("real");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/f"), b"content").unwrap();
    let link = env.path("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    // `link` alone is the link itself; `link/` is the directory, as for
    // the shell, tar and rsync.
    let v = env.backup(&[format!("{}/", link.display())]);
    assert_eq!(v["files_new"], 1, "{v}");
    let snap = env.json(&["snapshots"]);
    let real = fs::canonicalize(&dir).unwrap();
    assert_eq!(snap[0]["paths"][0], real.to_str().unwrap());
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&dir, &restored(&t, &real));
    // A file named with a trailing slash is an error, as for the shell.
    let err = env.fails(&["backup", &format!("{}/", dir.join("sub/f").display())], 1);
    assert!(err.contains("Not a directory"), "{err}");
}

#[test]
fn password_from_file_and_command() {
    let env = Env::new();
    let pwfile = env.path("pw");
    fs::write(&pwfile, format!("{}\n", env.password)).unwrap();
    stdout_of(
        env.cmd()
            .env_remove("CAIRN_PASSWORD")
            .env("CAIRN_PASSWORD_FILE", &pwfile)
            .arg("snapshots"),
    );
    stdout_of(
        env.cmd()
            .env_remove("CAIRN_PASSWORD")
            .env(
                "CAIRN_PASSWORD_COMMAND",
                format!("cat {}", pwfile.display()),
            )
            .arg("snapshots"),
    );
    // A file given for the run wins over a password left in the
    // environment (restic's order), for init too; an empty CAIRN_PASSWORD
    // (a unit file's `Environment=CAIRN_PASSWORD=`) means none.
    stdout_of(
        env.cmd()
            .env("CAIRN_PASSWORD", "not the password")
            .arg("--password-file")
            .arg(&pwfile)
            .arg("snapshots"),
    );
    let err = exits(
        &env.cmd()
            .arg("--password-file")
            .arg(&pwfile)
            .args(["--password-command", "true", "snapshots"])
            .output()
            .unwrap(),
        2,
    );
    assert!(err.contains("not both"), "{err}");
    // An empty file or command output is said to be empty, not taken for
    // a wrong password.
    let empty = env.path("empty");
    fs::write(&empty, "\n").unwrap();
    for (opt, val) in [
        ("--password-file", empty.to_str().unwrap()),
        ("--password-command", "true"),
    ] {
        let out = env.cmd().args([opt, val, "snapshots"]).output().unwrap();
        let err = exits(&out, 1);
        assert!(
            err.contains("empty") || err.contains("no password"),
            "{err}"
        );
    }
    // A failing command is said to fail, without its text: it may hold a
    // secret (a vault token), and errors reach logs and failure hooks.
    let secret = "exit 3 # X-Vault-Token: hvs.TOPSECRET";
    let out = env
        .cmd()
        .args(["--password-command", secret, "snapshots"])
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("password command failed"), "{err}");
    assert!(!err.contains("TOPSECRET"), "{err}");
    stdout_of(
        env.cmd()
            .env("CAIRN_PASSWORD", "")
            .env("CAIRN_PASSWORD_FILE", &pwfile)
            .arg("snapshots"),
    );
    let fresh = Env::uninit();
    stdout_of(
        fresh
            .cmd()
            .env("CAIRN_PASSWORD", "something else")
            .env("CAIRN_PASSWORD_FILE", &pwfile)
            .arg("init"),
    );
    assert_eq!(fresh.password, env.password);
    fresh.ok(&["snapshots"]);
    // No password source and no terminal: a clear error, not a hang.
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("snapshots")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("no password given"));
}

#[test]
fn crossed_key_changes_leave_a_key_that_may_delete() {
    // Two `key remove`s, each opened with the key the other removes: both
    // succeeded, leaving only the append-only key, and the repository
    // could never be pruned or administered again.
    use std::process::Stdio;
    let env = Env::new();
    let pw = |name: &str, text: &str| {
        let p = env.path(name);
        fs::write(&p, text).unwrap();
        p
    };
    let second = pw("second", "second password\n");
    let backup_only = pw("backup-only", "backup only\n");
    env.ok(&[
        "key",
        "add",
        "--new-password-file",
        second.to_str().unwrap(),
    ]);
    env.ok(&[
        "key",
        "add",
        "--append-only",
        "--new-password-file",
        backup_only.to_str().unwrap(),
    ]);
    let keys = env.json(&["key", "list"]);
    let id_of = |current: bool, append_only: bool| -> String {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["current"] == current && k["append_only"] == append_only)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (first_id, second_id) = (id_of(true, false), id_of(false, false));
    // Both open, then wait for the exclusive lock this test holds.
    let repo = open_engine(&env);
    let guard = repo.lock(true).unwrap();
    let remove = |password: &str, id: &str| {
        env.cmd()
            .env("CAIRN_PASSWORD", password)
            .args(["--retry-lock", "60s", "key", "remove", id])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = remove(&env.password, &second_id);
    let b = remove("second password", &first_id);
    std::thread::sleep(std::time::Duration::from_secs(2));
    drop(guard);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "{} / {}", stderr_of(&a), stderr_of(&b));
    let failed = if a.status.success() { &b } else { &a };
    let err = stderr_of(failed);
    assert!(
        err.contains("has been removed since") || failed.status.code() == Some(12),
        "{err}"
    );
    let full = [&env.password, "second password"]
        .iter()
        .filter(|p| run_as(&env, p, &["key", "list"]).status.success())
        .count();
    assert_eq!(full, 1, "one of the two full keys is left");
}

#[test]
fn two_keys_added_at_once_with_one_password_do_not_both_stay() {
    // `key add` runs under a shared lock: both checked that no key opened
    // with the password, then both wrote one.
    let env = Env::new();
    let pw = env.path("pw");
    fs::write(&pw, "shared\n").unwrap();
    let add = ["key", "add", "--new-password-file", pw.to_str().unwrap()];
    // The first stalls 3 s on writing its key file, after its check.
    let slow = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "stall-write=1:3000")
        .args(add)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    env.ok(&add);
    let out = slow.wait_with_output().unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("this password already opens key"), "{err}");
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 2);
    exits(&run_as(&env, "shared", &["snapshots"]), 0);
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_password_opens_one_key_only() {
    // A full key given an append-only key's password: the password then
    // opened whichever key sorted first, silently with full rights.
    let env = Env::new();
    let backup_only = env.path("backup-only");
    fs::write(&backup_only, "backup only\n").unwrap();
    let f = backup_only.to_str().unwrap();
    env.ok(&["key", "add", "--append-only", "--new-password-file", f]);
    let err = env.fails(&["key", "add", "--new-password-file", f], 1);
    assert!(err.contains("this password already opens key"), "{err}");
    let err = env.fails(&["key", "passwd", "--new-password-file", f], 1);
    assert!(err.contains("this password already opens key"), "{err}");
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 2);
    // The append-only password still opens the append-only key.
    let out = run_as(&env, "backup only", &["--json", "key", "list"]);
    exits(&out, 0);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["current"] == true && k["append_only"] == true),
        "{keys}"
    );
    // A password of its own is taken; the audit record names the key that
    // ran the command (it named the new one, so `audit --key OLD` missed it).
    // The key's own password again is taken: it renews the KDF settings.
    let same = env.path("same");
    fs::write(&same, format!("{}\n", env.password)).unwrap();
    env.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        same.to_str().unwrap(),
    ]);
    let mine = key_where(&env, "current").to_uppercase();
    let fresh = env.path("fresh");
    fs::write(&fresh, "fresh\n").unwrap();
    env.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        fresh.to_str().unwrap(),
    ]);
    let trail = run_as(&env, "fresh", &["audit", "--key", &mine[..8]]);
    let text = exits(&trail, 0);
    assert!(
        String::from_utf8_lossy(&trail.stdout).contains("key passwd"),
        "{text}"
    );
    let out = run_as(&env, "fresh", &["key", "remove", ""]);
    assert!(exits(&out, 2).contains("not an ID"));
}

#[test]
fn a_key_passwd_stopped_before_removing_the_old_key_is_finished_by_the_same_command() {
    // Stopped between writing the new key and removing the old one (here
    // the removal fails; `kill -9` leaves the same), both keys stayed: the
    // old password still opened the repository, and the command again was
    // refused because the new password already opened a key.
    let env = Env::new();
    let old = key_where(&env, "current");
    let newpw = env.path("newpw");
    fs::write(&newpw, "new password\n").unwrap();
    let passwd = [
        "key",
        "passwd",
        "--new-password-file",
        newpw.to_str().unwrap(),
    ];
    // A key file of another repository, for that password, put among the
    // keys: it opens too, but holds another master key. Taken for the
    // new key, it left the repository with no key at all.
    let other = env.path("other");
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "new password")
        .args(["init", "-r", other.to_str().unwrap()])
        .output()
        .unwrap();
    exits(&out, 0);
    let foreign = fs::read_dir(other.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let planted = env.repo.join("keys").join(foreign.file_name());
    fs::copy(foreign.path(), &planted).unwrap();
    let err = env.fails(&passwd, 1);
    assert!(err.contains("this password already opens key"), "{err}");
    exits(&env.cmd().args(["snapshots"]).output().unwrap(), 0);
    fs::remove_file(&planted).unwrap();
    // Nor is a key someone added with that password: `key passwd` did not
    // write it to replace this one.
    let added = env.json(&["key", "add", "--new-password-file", newpw.to_str().unwrap()]);
    let err = env.fails(&passwd, 1);
    assert!(err.contains("this password already opens key"), "{err}");
    env.ok(&["key", "remove", added["id"].as_str().unwrap()]);

    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "fail-delete=key")
        .args(passwd)
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(
        err.contains("run the same command again to finish"),
        "{err}"
    );
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 2);
    exits(&run_as(&env, "new password", &["snapshots"]), 0);

    let out = env.cmd().args(passwd).output().unwrap();
    let text = exits(&out, 0);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("finished an interrupted `key passwd`"),
        "{said}{text}"
    );
    // The old password opens nothing now; the new one opens the only key.
    exits(&env.cmd().args(["snapshots"]).output().unwrap(), 12);
    let out = run_as(&env, "new password", &["--json", "key", "list"]);
    exits(&out, 0);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_ne!(keys[0]["id"], old.as_str());
    assert_eq!(keys[0]["append_only"], false);
    exits(&run_as(&env, "new password", &["check"]), 0);
}

#[test]
fn a_key_passwd_to_the_same_password_stopped_before_removing_the_old_key_is_finished_too() {
    // Both keys open with the one password: whichever sorts first opens
    // the repository, and when it was the new one, the command run again
    // was refused ("already opens key"). Several repositories, so that
    // both orders come up.
    for _ in 0..4 {
        let env = Env::new();
        let same = env.path("same");
        fs::write(&same, format!("{}\n", env.password)).unwrap();
        let passwd = [
            "key",
            "passwd",
            "--new-password-file",
            same.to_str().unwrap(),
        ];
        let out = env
            .cmd()
            .env("CAIRN_TEST_FAULTS", "fail-delete=key")
            .args(passwd)
            .output()
            .unwrap();
        exits(&out, 1);
        assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 2);
        let out = env.cmd().args(passwd).output().unwrap();
        exits(&out, 0);
        assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 1);
        exits(&env.cmd().args(["check"]).output().unwrap(), 0);
    }
}

/// A `key passwd` to `new` that stops between writing the new key and
/// removing the old one (here the removal fails; `kill -9` leaves the same).
fn passwd_stopped_before_removing(env: &Env, new: &str) {
    let file = env.path("stopped-new-password");
    fs::write(&file, format!("{new}\n")).unwrap();
    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "fail-delete=key")
        .args(["key", "passwd", "--new-password-file"])
        .arg(&file)
        .output()
        .unwrap();
    exits(&out, 1);
}

/// `key passwd` to `new`, opened with `password`.
fn passwd_as(env: &Env, password: &str, new: &str) -> Output {
    let file = env.path("new-password");
    fs::write(&file, format!("{new}\n")).unwrap();
    let file = file.to_str().unwrap();
    run_as(
        env,
        password,
        &["key", "passwd", "--new-password-file", file],
    )
}

/// A `key passwd` stopped before it removed the old key, then a password
/// change opened with the new password: the old key stayed, and the
/// password the user believed revoked opened the repository for good.
#[test]
fn a_password_change_after_an_interrupted_one_removes_the_key_it_left() {
    let env = Env::new();
    passwd_stopped_before_removing(&env, "second password");
    let out = passwd_as(&env, "second password", "third password");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    exits(&out, 0);
    assert!(said.contains("also removed key"), "{said}");
    for revoked in [env.password.as_str(), "second password"] {
        exits(&run_as(&env, revoked, &["snapshots"]), 12);
    }
    let out = run_as(&env, "third password", &["--json", "key", "list"]);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
}

/// A `key passwd` stopped before it removed the old key, then another
/// password set, opened with the old one: the key the first left still
/// opened the repository with its password, and nothing said so.
#[test]
fn a_password_change_after_an_interrupted_one_to_another_password_names_the_key_left() {
    let env = Env::new();
    passwd_stopped_before_removing(&env, "second password");
    let out = passwd_as(&env, &env.password, "third password");
    let err = exits(&out, 0);
    // Left in place (`replaces` is not authenticated), but named.
    let out = run_as(&env, "second password", &["--json", "key", "list"]);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let left = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    assert!(
        err.contains(&format!("`cairn key remove {}`", &left[..8])),
        "{err}"
    );
    exits(&run_as(&env, &env.password, &["snapshots"]), 12);
}

/// A `key passwd` stopped before it removed the old key, then the old
/// password set again, opened with the new one: the key for the old
/// password was taken for the one to remove, and the password the command
/// said was set opened nothing.
#[test]
fn setting_the_old_password_again_after_an_interrupted_change_keeps_its_key() {
    let env = Env::new();
    passwd_stopped_before_removing(&env, "second password");
    let out = passwd_as(&env, "second password", &env.password);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    exits(&out, 0);
    assert!(
        said.contains("finished an interrupted `key passwd`"),
        "{said}"
    );
    exits(&env.cmd().args(["check"]).output().unwrap(), 0);
    exits(&run_as(&env, "second password", &["snapshots"]), 12);
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 1);
}

/// A key file the storage damaged as it was written (its size kept): the
/// old key was removed all the same, and no password opened the
/// repository again.
#[test]
fn a_new_key_that_does_not_read_back_leaves_the_old_one() {
    let env = Env::new();
    let old = key_where(&env, "current");
    let second = env.path("second");
    fs::write(&second, "second password\n").unwrap();
    let passwd = [
        "key",
        "passwd",
        "--new-password-file",
        second.to_str().unwrap(),
    ];
    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "flip-write=key")
        .args(passwd)
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(
        err.contains("the storage did not keep it; no key was removed"),
        "{err}"
    );
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys[0]["id"], old.as_str());
    exits(&env.cmd().args(["check"]).output().unwrap(), 0);
    // `key add` and `init` check what they wrote the same way.
    let add = [
        "key",
        "add",
        "--new-password-file",
        second.to_str().unwrap(),
    ];
    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "flip-write=key")
        .args(add)
        .output()
        .unwrap();
    assert!(exits(&out, 1).contains("the storage did not keep it"));
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 1);
    exits(&env.cmd().args(passwd).output().unwrap(), 0);
    exits(&run_as(&env, "second password", &["check"]), 0);
}

/// A key file far larger than any is (1 TiB, sparse), which anyone who may
/// add key files can put there: read whole, it stopped every open, with
/// the right password too.
#[test]
fn an_oversized_key_file_is_passed_over_unread() {
    let env = Env::new();
    let planted = env.repo.join("keys").join("ab".repeat(32));
    fs::File::create(&planted)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    exits(&env.cmd().args(["snapshots"]).output().unwrap(), 0);
    let second = env.path("second");
    fs::write(&second, "second password\n").unwrap();
    let second = second.to_str().unwrap();
    exits(&run_as(&env, "second password", &["snapshots"]), 12);
    env.ok(&["key", "add", "--new-password-file", second]);
    let out = env.cmd().args(["key", "list"]).output().unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("too large to be a key file"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let out = env.cmd().args(["check"]).output().unwrap();
    let err = exits(&out, 1);
    assert!(
        err.contains(&format!(
            "{}: 1099511627776 bytes: too large",
            "ab".repeat(32)
        )),
        "{err}"
    );
}

#[test]
fn key_management() {
    let mut env = Env::new();
    let newpw = env.path("newpw");
    fs::write(&newpw, "second password\n").unwrap();
    // Off a terminal, the missing password is the new one (the message
    // named the current password's variables).
    for args in [&["key", "add"][..], &["key", "passwd"]] {
        let out = env
            .cmd()
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = exits(&out, 1);
        assert!(
            err.contains("no new password given: use --new-password-file"),
            "{err}"
        );
    }
    env.ok(&["key", "add", "--new-password-file", newpw.to_str().unwrap()]);
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let first_id = key_where(&env, "current");

    // The new password opens the repository.
    let old = std::mem::replace(&mut env.password, "second password".into());
    env.ok(&["snapshots"]);
    // Remove the first key with the second.
    env.ok(&["key", "remove", &first_id[..8]]);
    env.password = old;
    env.fails(&["snapshots"], 12);
    env.password = "second password".into();
    // The last key cannot be removed, whoever asks.
    let keys = env.json(&["key", "list"]);
    let only = keys[0]["id"].as_str().unwrap().to_string();
    let err = env.fails(&["key", "remove", &only], 1);
    assert!(err.contains("last key"));
    // passwd replaces the key in use.
    fs::write(&newpw, "third\n").unwrap();
    env.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        newpw.to_str().unwrap(),
    ]);
    env.fails(&["snapshots"], 12);
    env.password = "third".into();
    env.ok(&["snapshots"]);
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn tag_add_remove_set() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.ok(&["backup", src.to_str().unwrap(), "--tag", "one"]);
    let tags = |env: &Env| env.json(&["snapshots"])[0]["tags"].clone();
    env.ok(&["tag", "latest", "--add", "two", "--add", "three"]);
    assert_eq!(tags(&env), serde_json::json!(["one", "two", "three"]));
    env.ok(&["tag", "latest", "--remove", "one"]);
    assert_eq!(tags(&env), serde_json::json!(["two", "three"]));
    let r = env.json(&["tag", "latest", "--set", "only"]);
    assert_eq!(r[0]["changed"], true);
    assert_eq!(tags(&env), serde_json::json!(["only"]));
    // Still one snapshot, and it still restores.
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_eq!(fs::read(restored(&t, &src).join("a")).unwrap(), b"a");
    let r = env.json(&["tag", "latest", "--add", "only"]);
    assert_eq!(r[0]["changed"], false);
    env.fails(&["tag", "latest"], 2);
    // --set replaces every tag: with --add or --remove it is a usage
    // error (as in restic), and nothing changes.
    for other in ["--add", "--remove"] {
        let err = env.fails(&["tag", "latest", "--set", "x", other, "y"], 2);
        assert!(err.contains("cannot be used with"), "{err}");
    }
    assert_eq!(tags(&env), serde_json::json!(["only"]));
    // cairn's own tags say what a snapshot is (a `repaired` one may not be
    // restored with --delete) and cannot be removed: given by a user, they
    // stuck for good. Refused where tags come in.
    for args in [
        vec!["tag", "latest", "--add", "repaired"],
        vec!["tag", "latest", "--set", "weekly,rewritten"],
        vec!["tag", "latest", "--add", "recovered"],
        vec!["backup", src.to_str().unwrap(), "--tag", "repaired"],
        vec!["watch", src.to_str().unwrap(), "--tag", "rewritten"],
    ] {
        let err = env.fails(&args, 2);
        assert!(err.contains("cairn's own"), "{args:?}: {err}");
    }
    assert_eq!(tags(&env), serde_json::json!(["only"]));
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
}

/// The atime of every path in `paths` (to the nanosecond).
fn atimes(paths: &[std::path::PathBuf]) -> Vec<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            let m = fs::symlink_metadata(p).unwrap();
            (m.atime(), m.atime_nsec())
        })
        .collect()
}

#[test]
fn backup_leaves_atimes_alone_and_an_unchanged_tree_adds_nothing() {
    let env = Env::new();
    let (min, _, _) = chunker_sizes(&env);
    let src = env.path("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::create_dir_all(src.join("hollow")).unwrap();
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::write(src.join("small.txt"), b"read whole").unwrap();
    write_random(&src.join("sub/chunked.bin"), min + 1, 7);
    fs::write(src.join("sub/deeper/leaf.txt"), b"deep").unwrap();
    // Read (to check the signature), and the directory's one entry kept
    // with --exclude-caches.
    fs::write(
        src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    // Deepest first, so that setting a child's times does not touch a
    // directory already set. An atime older than the mtime is one that
    // `relatime` (and `strictatime`) would move on the next read.
    let paths: Vec<std::path::PathBuf> = [
        "small.txt",
        "sub/chunked.bin",
        "sub/deeper/leaf.txt",
        "cache/CACHEDIR.TAG",
        "sub/deeper",
        "sub",
        "hollow",
        "cache",
        "",
    ]
    .iter()
    .map(|r| src.join(r))
    .collect();
    for (i, p) in paths.iter().enumerate() {
        filetime::set_file_times(
            p,
            FileTime::from_unix_time(1_000_000_000, i as u32),
            FileTime::from_unix_time(1_100_000_000, 0),
        )
        .unwrap();
    }
    let before = atimes(&paths);

    let first = env.backup(&[src.as_os_str(), "--exclude-caches".as_ref()]);
    assert_eq!(first["files_new"], 4, "{first}");
    assert!(first["bytes_read"].as_u64().unwrap() > min as u64);
    assert_eq!(atimes(&paths), before, "the first backup moved atimes");
    let first_subtree = subtree_of(&env, &src);

    let second = env.backup(&[src.as_os_str(), "--exclude-caches".as_ref()]);
    assert_eq!(atimes(&paths), before, "the second backup moved atimes");
    assert_eq!(second["files_unmodified"], 4, "{second}");
    assert_eq!(second["files_new"], 0, "{second}");
    assert_eq!(second["files_changed"], 0, "{second}");
    assert_eq!(second["bytes_read"], 0, "{second}");
    let first_tree = first_subtree;
    assert_eq!(subtree_of(&env, &src), first_tree, "the same tree");
    assert!(
        second["blobs_added"].as_u64().unwrap() <= trees_above(&src),
        "no new tree blobs below the source: {second}"
    );
}

#[test]
fn a_backup_of_a_tree_holding_the_repository_and_its_cache_leaves_both_out() {
    // A home backed up with the repository on a disk mounted in it, and
    // the cache in ~/.cache: each run stored the packs the run before had
    // written, and the cache's index as it was being written.
    let env = Env::new();
    let home = env.dir.path().to_path_buf();
    fs::create_dir_all(home.join("work")).unwrap();
    fs::write(home.join("work/f"), b"mine").unwrap();
    // A repository made at the root of a disk that holds the user's
    // files: those are backed up, as a source of their own too.
    fs::create_dir_all(env.repo.join("photos")).unwrap();
    fs::write(env.repo.join("photos/p.jpg"), b"a photo").unwrap();
    let first = env.backup(&[&home]);
    assert_eq!(first["files_new"], 2, "{first}");
    let listing = env.ok(&["ls", "latest", "--recursive"]);
    let root = home.to_str().unwrap();
    assert!(listing.contains(&format!("{root}/work/f")), "{listing}");
    assert!(
        listing.contains(&format!("{root}/repo/photos/p.jpg")),
        "{listing}"
    );
    let photos = env.backup(&[&env.repo.join("photos")]);
    assert_eq!(photos["files_new"], 1, "{photos}");
    // (The cache root itself is an empty directory there.)
    for own in [
        "repo/config",
        "repo/data",
        "repo/index",
        "repo/keys",
        "cache/",
    ] {
        assert!(
            !listing.contains(&format!("{root}/{own}")),
            "{own} stored: {listing}"
        );
    }
    let second = env.backup(&[&home]);
    assert_eq!(second["files_new"], 0, "{second}");
    assert_eq!(second["files_changed"], 0, "{second}");
    env.ok(&["ls", "latest"]);
    assert_eq!(second["files_changed"], 0, "{second}");
    // The cache root is tagged, so other tools' `--exclude-caches` (and a
    // backup by another repository) leave it out too.
    let tag = fs::read_to_string(env.cache.join("CACHEDIR.TAG")).unwrap();
    assert!(
        tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"),
        "{tag}"
    );
}

/// The atime `ls --json` reports for the entry at absolute `path` in the
/// latest snapshot, as (seconds, nanoseconds).
fn recorded_atime(env: &Env, path: &Path) -> (i64, i64) {
    let out = env.ok(&["--json", "ls", "latest"]);
    let node: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|n| n["path"] == path.to_str().unwrap())
        .unwrap_or_else(|| panic!("{} not listed: {out}", path.display()));
    let t = chrono::DateTime::parse_from_rfc3339(node["atime"].as_str().unwrap()).unwrap();
    (t.timestamp(), i64::from(t.timestamp_subsec_nanos()))
}

#[test]
fn reading_and_listing_alone_make_no_new_snapshot_unless_atime_is_asked_for() {
    assert!(
        is_root(),
        "this test mounts a tmpfs: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    // A tmpfs of its own moves atimes as Linux does by default (relatime),
    // whatever the options of the disk the tests run on.
    let (disk, _tmpfs) = small_disk(&env, "8m");
    let src = disk.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    fs::write(src.join("sub/b.txt"), b"beta").unwrap();
    // Atimes older than the mtimes: the next read or listing moves them
    // (relatime, as strictatime does).
    for (i, r) in ["a.txt", "sub/b.txt", "sub", ""].iter().enumerate() {
        filetime::set_file_times(
            src.join(r),
            FileTime::from_unix_time(1_000_000_000, i as u32),
            FileTime::from_unix_time(1_100_000_000, 0),
        )
        .unwrap();
    }
    let s = src.to_str().unwrap();
    env.backup(&[&src]);
    let first = subtree_of(&env, &src);
    let a = src.join("a.txt");
    let b = src.join("sub/b.txt");
    assert_eq!(recorded_atime(&env, &a), (1_000_000_000, 0));

    // What a user, an editor or an indexer does between two backups.
    let before = atimes(&[a.clone(), b.clone(), src.join("sub")]);
    fs::read(&a).unwrap();
    fs::read(&b).unwrap();
    assert_eq!(fs::read_dir(src.join("sub")).unwrap().count(), 1);
    let after = atimes(&[a.clone(), b.clone(), src.join("sub")]);
    for (i, (x, y)) in before.iter().zip(&after).enumerate() {
        assert_ne!(
            x, y,
            "entry {i}: reading did not move its atime (noatime mount?)"
        );
    }

    // Nothing but atimes moved: no new tree, no snapshot. (A test running
    // alongside may change /tmp, recorded as the source's ancestor, between
    // two runs: tried again then.)
    let skipped = (0..3).any(|_| {
        env.ok(&["backup", s, "--skip-if-unchanged"])
            .contains("no snapshot written")
    });
    assert!(skipped, "a snapshot was written each time");
    let second = env.backup(&[&src]);
    assert!(
        second["blobs_added"].as_u64().unwrap() <= trees_above(&src),
        "{second}"
    );
    assert_eq!(subtree_of(&env, &src), first);
    assert_eq!(recorded_atime(&env, &a), (1_000_000_000, 0));

    // --force reads every file again, and still compares with the parent:
    // atimes kept, nothing new to write, the files counted as unmodified
    // (without the parent's tree it counted them new and wrote a snapshot).
    let skipped = (0..3).any(|_| {
        env.ok(&["backup", s, "--force", "--skip-if-unchanged"])
            .contains("no snapshot written")
    });
    assert!(skipped, "--force wrote a snapshot each time");
    let forced = env.json(&["backup", s, "--force"]);
    assert_eq!(forced["files_new"], 0, "{forced}");
    assert_eq!(forced["files_unmodified"], 2, "{forced}");
    assert_eq!(subtree_of(&env, &src), first);
    assert_eq!(recorded_atime(&env, &a), (1_000_000_000, 0));

    // A changed file records the atime it has now, with its new content;
    // its directory did not change and keeps its own.
    use std::io::Write as _;
    fs::OpenOptions::new()
        .append(true)
        .open(&b)
        .unwrap()
        .write_all(b"!")
        .unwrap();
    let third = env.backup(&[&src]);
    assert_eq!(third["files_changed"], 1, "{third}");
    assert_eq!(recorded_atime(&env, &b), after[1]);
    assert_eq!(recorded_atime(&env, &src.join("sub")), (1_000_000_000, 2));
    assert_eq!(recorded_atime(&env, &a), (1_000_000_000, 0));

    // --atime records every access time as it is.
    let fourth = env.json(&["backup", s, "--atime"]);
    assert!(fourth["blobs_added"].as_u64().unwrap() >= 2, "{fourth}");
    assert_eq!(recorded_atime(&env, &a), after[0]);
    assert_eq!(recorded_atime(&env, &src.join("sub")), after[2]);
    let target = env.path("restore");
    env.restore("latest", &target);
    let got = atimes(&[restored(&target, &src).join("a.txt")]);
    assert_eq!(got[0], after[0]);
}

#[test]
fn a_backup_by_another_user_reads_files_it_may_not_keep_atimes_of() {
    // O_NOATIME is refused (EPERM) on files the process does not own,
    // unless it has CAP_FOWNER: the backup must fall back to a plain open.
    assert_root();
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/root-owned.txt"), b"readable by all").unwrap();
    for p in [env.dir.path(), &src, &src.join("dir")] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The repository and cache belong to the backing-up user; the source to root.
    env.give_to_nobody();
    let out = env
        .cmd_as_nobody()
        .args(["--json", "backup"])
        .arg(&src)
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["files_new"], 1, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    let dumped = env.ok(&[
        "dump",
        "latest",
        src.join("dir/root-owned.txt").to_str().unwrap(),
    ]);
    assert_eq!(dumped, "readable by all");
}

#[test]
fn sysfs_files_are_stored_as_read_without_a_change_warning() {
    // They report 4096 bytes and hold fewer: each was read twice, warned
    // about as changed while read, flagged, and read again every backup.
    let env = Env::new();
    let files = [
        "/sys/devices/system/cpu/possible",
        "/sys/devices/system/cpu/online",
    ];
    for f in files {
        assert_eq!(
            fs::metadata(f).unwrap().len(),
            4096,
            "{f}: not a sysfs file?"
        );
    }
    let out = env
        .cmd()
        .args(["--json", "backup"])
        .args(files)
        .output()
        .unwrap();
    let err = exits(&out, 0);
    assert!(!err.contains("changed while it was read"), "{err}");
    for f in files {
        assert_eq!(
            env.ok(&["dump", "latest", f]).as_bytes(),
            fs::read(f).unwrap()
        );
    }
    // Read once each (twice before), and again each backup: their size
    // says nothing of their content.
    let held: usize = files.iter().map(|f| fs::read(f).unwrap().len()).sum();
    let again = env.json(&["backup", files[0], files[1]]);
    assert_eq!(again["bytes_read"], held, "{again}");
    assert_eq!(again["warnings"], serde_json::json!([]), "{again}");
}

#[test]
fn a_clean_run_after_a_partial_one_is_written_under_skip_if_unchanged() {
    // The unreadable file excluded next time gives the partial parent's
    // tree again: the clean run was skipped as unchanged, and the partial
    // snapshot stayed the newest, for snapshots and monitors alike.
    assert_root();
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("open.txt"), b"for all").unwrap();
    fs::write(src.join("secret"), b"root's").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    for p in [env.dir.path(), &src] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    env.give_to_nobody();
    let s = src.to_str().unwrap();
    let run = |args: &[&str]| {
        env.cmd_as_nobody()
            .args(["backup", s, "--skip-if-unchanged"])
            .args(args)
            .output()
            .unwrap()
    };
    exits(&run(&[]), 3);
    let out = run(&["--exclude", "secret"]);
    let err = exits(&out, 0);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("no snapshot written"), "{said}{err}");
    let snaps = env.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let newest = snaps.iter().max_by_key(|s| s["time"].as_str()).unwrap();
    let oldest = snaps.iter().min_by_key(|s| s["time"].as_str()).unwrap();
    assert_eq!(oldest["partial"], true, "{oldest}");
    assert_ne!(newest["partial"], true, "{newest}");
}

#[test]
fn links_and_xattrs_settle_and_a_changed_xattr_is_read_again() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    xattr::set(src.join("f"), "user.note", b"one").unwrap();
    std::os::unix::fs::symlink("f", src.join("link")).unwrap();
    env.backup(&[&src]);
    let first = subtree_of(&env, &src);
    // Reading the link moved its atime (readlink has no O_NOATIME); the
    // second backup keeps the one recorded, so the tree stays.
    let second = env.backup(&[&src]);
    assert!(
        second["blobs_added"].as_u64().unwrap() <= trees_above(&src),
        "{second}"
    );
    assert_eq!(subtree_of(&env, &src), first);

    // A changed attribute moves the ctime: it is read again.
    xattr::set(src.join("f"), "user.note", b"two").unwrap();
    env.backup(&[&src]);
    let target = env.path("restore");
    env.restore("latest", &target);
    let dst = restored(&target, &src);
    assert_eq!(
        xattr::get(dst.join("f"), "user.note").unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("f"));
}

/// Every file under `dir` with its size, except locks (a dry run takes and
/// removes one, as a backup does).
fn repo_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            (rel, e.metadata().unwrap().len())
        })
        .filter(|(rel, _)| !rel.starts_with("locks/"))
        .collect();
    out.sort();
    out
}

#[test]
fn a_dry_run_reports_what_a_backup_would_add_and_stores_nothing() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..20 {
        write_random(&src.join(format!("d/f{i}")), 40_000 + i * 1000, i as u64);
    }
    fs::write(src.join("small.txt"), "small text\n".repeat(50)).unwrap();
    let before = repo_files(&env.repo);

    let dry = env.json(&["backup", "--dry-run", src.to_str().unwrap()]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(dry["snapshot_id"].is_null());
    assert_eq!(dry["files_new"], 21);
    assert_eq!(repo_files(&env.repo), before, "a dry run stores nothing");
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());

    // The real backup then stores everything the dry run counted: the
    // local index was not told of blobs that do not exist.
    let real = env.backup(&[&src]);
    for k in [
        "files_new",
        "files_changed",
        "files_unmodified",
        "blobs_added",
        "total_bytes",
    ] {
        assert_eq!(dry[k], real[k], "{k}: dry {dry} real {real}");
    }
    let (would, did) = (
        dry["data_added"].as_u64().unwrap(),
        real["data_added"].as_u64().unwrap(),
    );
    // The real count adds pack headers and the index file.
    assert!(
        would <= did && did - would < 16_384,
        "would add {would}, added {did}"
    );
    env.assert_check_clean();

    // After a change, it names what changed and counts only that.
    write_random(&src.join("d/f3"), 55_000, 99);
    let before = repo_files(&env.repo);
    let text = env.ok(&["backup", "-n", src.to_str().unwrap()]);
    assert!(
        text.contains("Files: 0 new, 1 changed, 20 unmodified"),
        "{text}"
    );
    assert!(text.contains("dry run: nothing was stored"), "{text}");
    assert_eq!(repo_files(&env.repo), before);
    let dry = env.json(&["backup", "--dry-run", src.to_str().unwrap()]);
    let real = env.backup(&[&src]);
    assert_eq!(dry["blobs_added"], real["blobs_added"]);
    assert_eq!(dry["parent"], real["parent"]);
    let restored = env.path("r");
    env.restore("latest", &restored);
    assert_same_tree(&src, &common::restored(&restored, &src));
    let audit = env.json(&["audit"]);
    let commands: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        commands,
        ["init", "backup", "backup"],
        "dry runs leave no record"
    );

    // Options a dry run cannot honour are refused.
    for extra in [["--schedule", "1h"], ["--postgres", "dbname=x"]] {
        let out = env.run(&[
            "backup",
            "--dry-run",
            extra[0],
            extra[1],
            src.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
    }
}

/// The lines of `backup -v` standard output that list files: (word, path bytes).
fn listed_files(stdout: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = stdout
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let word = ["new", "modified", "unchanged"]
                .into_iter()
                .find(|w| l.starts_with(format!("{w:<10}").as_bytes()))?;
            Some((word.to_string(), l[10..].to_vec()))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn verbose_lists_each_file_as_new_modified_or_unchanged() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    fs::write(src.join("d/b"), "b").unwrap();
    let odd = src.join(std::ffi::OsStr::from_bytes(b"n\xffo"));
    fs::write(&odd, "odd").unwrap();
    std::os::unix::fs::symlink("a", src.join("link")).unwrap();
    let bytes = |p: &Path| p.as_os_str().as_bytes().to_vec();
    let s = src.to_str().unwrap();

    // -v names the files a backup stores, each once, by its full path as
    // stored (a name that is not UTF-8 as its bytes); links and directories
    // are not files.
    let out = env.run(&["backup", "-v", s]);
    exits(&out, 0);
    let mut want = vec![
        ("new".to_string(), bytes(&src.join("a"))),
        ("new".to_string(), bytes(&src.join("d/b"))),
        ("new".to_string(), bytes(&odd)),
    ];
    want.sort();
    assert_eq!(listed_files(&out.stdout), want);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Files: 3 new, 0 changed"), "{text}");

    // After a change, -v lists only what is read again; -vv the
    // unchanged files too; a dry run lists what a backup would do.
    fs::write(src.join("a"), "changed").unwrap();
    fs::write(src.join("d/c"), "c").unwrap();
    let out = env.run(&["backup", "-v", "--dry-run", s]);
    exits(&out, 0);
    let mut want = vec![
        ("modified".to_string(), bytes(&src.join("a"))),
        ("new".to_string(), bytes(&src.join("d/c"))),
    ];
    want.sort();
    assert_eq!(listed_files(&out.stdout), want);
    let out = env.run(&["backup", "-vv", s]);
    exits(&out, 0);
    want.push(("unchanged".to_string(), bytes(&src.join("d/b"))));
    want.push(("unchanged".to_string(), bytes(&odd)));
    want.sort();
    assert_eq!(listed_files(&out.stdout), want);

    // --json: restic's verbose_status lines, the bytes of a name that is
    // not UTF-8 beside its lossy text.
    fs::write(&odd, "odd, longer").unwrap();
    let out = env.run(&["--json", "backup", "-v", s]);
    exits(&out, 0);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["message_type"] == "verbose_status")
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["action"], "modified");
    assert_eq!(lines[0]["data_size"], 11);
    let item_bytes: Vec<u8> = lines[0]["item_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(item_bytes, bytes(&odd));
    assert_eq!(
        lines[0]["item"],
        String::from_utf8_lossy(&bytes(&odd)).as_ref()
    );

    // A reader that goes away (`| head -1`) stops the listing, not the
    // backup: its snapshot is saved, in JSON as in text. (Enough lines to
    // fill the pipe, so that the listing meets the closed pipe.)
    fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..3000 {
        fs::write(src.join(format!("many/f{i}")), "x").unwrap();
    }
    for json in [false, true] {
        fs::write(src.join("a"), format!("again {json}")).unwrap();
        fs::write(src.join("d/b"), format!("again {json}")).unwrap();
        let before = env.json(&["snapshots"]).as_array().unwrap().len();
        let mut cmd = env.cmd();
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .args(["backup", "-vv", s])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 1];
        use std::io::Read;
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // Dropped: the pipe is closed for every later line.
        child.wait().unwrap();
        let after = env.json(&["snapshots"]).as_array().unwrap().len();
        assert_eq!(after, before + 1, "json {json}: the snapshot was saved");
    }

    // Asked to be quiet and verbose at once: a usage error, as in restic.
    let err = exits(&env.run(&["-q", "backup", "-v", s]), 2);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = exits(&env.run(&["backup", "-v", "-q", s]), 2);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn ignore_inode_and_ignore_ctime_take_a_file_with_its_size_and_mtime_for_unchanged() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let (a, b) = (src.join("a"), src.join("b"));
    fs::write(&a, "alpha").unwrap();
    fs::write(&b, "bravo").unwrap();
    let old = FileTime::from_unix_time(1_600_000_000, 123_456_789);
    for p in [&a, &b] {
        filetime::set_file_mtime(p, old).unwrap();
    }
    let s = src.to_str().unwrap();
    env.ok(&["backup", s]);
    let bytes = |p: &Path| p.as_os_str().as_bytes().to_vec();
    let listed = |args: &[&str]| {
        let out = env.run(&[&["backup", "-vv"], args, &[s]].concat());
        exits(&out, 0);
        listed_files(&out.stdout)
    };

    // `a` copied over itself with its mtime (a new inode and ctime, as a
    // remount of sshfs gives every file); `b` given another mode (its
    // ctime moves).
    let inode = fs::metadata(&a).unwrap().ino();
    fs::copy(&a, src.join("a.new")).unwrap();
    filetime::set_file_mtime(src.join("a.new"), old).unwrap();
    fs::rename(src.join("a.new"), &a).unwrap();
    assert_ne!(fs::metadata(&a).unwrap().ino(), inode);
    fs::set_permissions(&b, fs::Permissions::from_mode(0o600)).unwrap();

    // By default both are read again; --ignore-ctime leaves `b` unread;
    // --ignore-inode both (restic's flags, and their meaning).
    let of = |want: &[(&str, &Path)]| {
        let mut v: Vec<_> = want
            .iter()
            .map(|(w, p)| (w.to_string(), bytes(p)))
            .collect();
        v.sort();
        v
    };
    let dry = ["--dry-run"];
    assert_eq!(listed(&dry), of(&[("modified", &a), ("modified", &b)]));
    assert_eq!(
        listed(&["--dry-run", "--ignore-ctime"]),
        of(&[("modified", &a), ("unchanged", &b)])
    );
    assert_eq!(
        listed(&["--ignore-inode"]),
        of(&[("unchanged", &a), ("unchanged", &b)])
    );
    // What changed besides the content is recorded all the same.
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    let back = restored(&out, &src);
    assert_eq!(fs::read(back.join("a")).unwrap(), b"alpha");
    assert_eq!(fs::metadata(back.join("b")).unwrap().mode() & 0o7777, 0o600);

    // The price: content changed at the same size with the mtime set back
    // is missed by --ignore-ctime, and found without it.
    fs::write(&b, "BRAVO").unwrap();
    filetime::set_file_mtime(&b, old).unwrap();
    assert_eq!(
        listed(&["--dry-run", "--ignore-ctime"]),
        of(&[("unchanged", &a), ("unchanged", &b)])
    );
    assert_eq!(listed(&[]), of(&[("unchanged", &a), ("modified", &b)]));
    let out = env.path("out2");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(fs::read(restored(&out, &src).join("b")).unwrap(), b"BRAVO");
}

#[test]
fn a_directory_a_backup_path_leads_through_by_a_symlink_keeps_its_own_metadata() {
    // `cairn backup /home/alice` where `/home` is a symlink to `var/home`
    // (as on Fedora Silverblue): the snapshot holds `home` as a directory,
    // which must be restored with the real directory's mode and owner, not
    // the link's 0777.
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let real = env.path("real");
    fs::create_dir_all(real.join("d")).unwrap();
    fs::write(real.join("d/f"), b"data").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o750)).unwrap();
    xattr::set(&real, "user.note", b"kept").unwrap();
    std::os::unix::fs::chown(&real, Some(1234), Some(4321)).unwrap();
    let lnk = env.path("lnk");
    std::os::unix::fs::symlink("real", &lnk).unwrap();
    env.backup(&[&lnk.join("d")]);
    let t = env.path("t");
    env.restore("latest", &t);
    let got = restored(&t, &lnk);
    let m = fs::symlink_metadata(&got).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.permissions().mode() & 0o7777, 0o750);
    assert_eq!((m.uid(), m.gid()), (1234, 4321));
    assert_eq!(
        xattr::get(&got, "user.note").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(fs::read(got.join("d/f")).unwrap(), b"data");
}

#[test]
fn check_finds_a_damaged_key_file_it_cannot_open() {
    // The second key, kept for recovery, is cut short: check must say so
    // now, not on the day the first password is lost.
    let env = Env::new();
    let newpw = env.path("newpw");
    fs::write(&newpw, "recovery password\n").unwrap();
    env.ok(&["key", "add", "--new-password-file", newpw.to_str().unwrap()]);
    env.assert_check_clean();
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
    let path = env.repo.join("keys").join(&other);
    let text = fs::read_to_string(&path).unwrap();
    let cut = text.replace(&text[text.find("\"data\"").unwrap()..], "\"data\": \"00\"}");
    fs::write(&path, &cut).unwrap();
    let out = env.run(&["check"]);
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    exits(&out, 1);
    assert!(all.contains(&format!("key {other}")), "{all}");
    // The key in use still opens the repository.
    env.ok(&["snapshots"]);
    // Its password is not called wrong and left at that: the damaged key
    // file is named (the password may be its).
    for damage in [cut.as_str(), "{ not json"] {
        fs::write(&path, damage).unwrap();
        let out = env
            .cmd()
            .env("CAIRN_PASSWORD", "recovery password")
            .arg("snapshots")
            .output()
            .unwrap();
        let err = exits(&out, 12);
        assert!(err.contains("wrong password"), "{err}");
        assert!(
            err.contains("could not be read") && err.contains(&other),
            "{err}"
        );
        // `key list` shows the keys it can read and names the other.
        let out = env.run(&["--json", "key", "list"]);
        let err = exits(&out, 1);
        assert!(err.contains(&other), "{err}");
        let listed = last_json(&out);
        assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed[0]["current"], true);
    }
    // An edit of what is not authenticated (the host) still opens; only
    // the name tells, and check says so.
    fs::write(
        &path,
        text.replacen("\"hostname\": \"", "\"hostname\": \"x", 1),
    )
    .unwrap();
    exits(&run_as(&env, "recovery password", &["snapshots"]), 0);
    let out = env.run(&["check"]);
    exits(&out, 1);
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        all.contains(&other) && all.contains("does not match its name"),
        "{all}"
    );
    // It can be removed, and then everything is clean.
    env.ok(&["key", "remove", &other[..8]]);
    env.ok(&["key", "list"]);
    env.assert_check_clean();
}

#[test]
fn a_tree_of_many_small_files_is_indexed_while_the_backup_runs() {
    // More blobs than one index file gathers (16,384): the index is written
    // in parts during the backup, and each part only names stored packs.
    let env = Env::new();
    let src = env.path("src");
    for d in 0..20 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..900 {
            fs::write(dir.join(format!("f{f:03}")), format!("file {d} {f}\n")).unwrap();
        }
    }
    let first = env.backup(&[&src]);
    assert_eq!(first["files_new"], 18_000);
    let index_files = fs::read_dir(env.repo.join("index")).unwrap().count();
    assert!(index_files >= 2, "{index_files} index file(s)");
    env.ok(&["check", "--read-data"]);
    let target = env.path("restore");
    env.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
    // A second backup finds every file in the parent and reads none.
    let second = env.backup(&[&src]);
    assert_eq!(second["files_unmodified"], 18_000);
    assert_eq!(second["bytes_read"], 0, "{second}");
}

#[test]
fn other_tools_repository_schemes_are_refused_not_made_directories() {
    let env = Env::uninit();
    let cwd = env.path("cwd");
    fs::create_dir_all(&cwd).unwrap();
    let out = env
        .cmd()
        .current_dir(&cwd)
        .args(["-r", "sftp:backuphost:/srv/repo", "init"])
        .output()
        .unwrap();
    let err = exits(&out, 2);
    assert!(err.contains("cairn has no sftp: backend"), "{err}");
    assert_eq!(
        fs::read_dir(&cwd).unwrap().count(),
        0,
        "nothing was created"
    );
    // An empty location (`-r "$REPO"` with REPO unset) made the skeleton of
    // a repository in the current directory, then failed.
    for (args, what) in [
        (&["-r", "", "init"][..], "empty repository location"),
        (&["-r", "local:", "init"], "empty repository location"),
        (
            &["-r", "https://host/bucket", "init"],
            "unsupported repository location",
        ),
        (&["init"], "no repository given"),
        // borg's and scp's remote locations made a local directory.
        (
            &["-r", "me@backuphost:/srv/repo", "init"],
            "a remote HOST:PATH",
        ),
        (&["-r", "nas:backups/repo", "init"], "a remote HOST:PATH"),
        (
            &["-r", "S3:s3.amazonaws.com/bucket", "init"],
            "a remote HOST:PATH",
        ),
    ] {
        let out = env
            .cmd()
            .current_dir(&cwd)
            .env_remove("CAIRN_REPOSITORY")
            .args(args)
            .output()
            .unwrap();
        let err = exits(&out, 2);
        assert!(err.contains(what), "{args:?}: {err}");
        assert_eq!(fs::read_dir(&cwd).unwrap().count(), 0, "{args:?}");
    }
    // A directory of that name is still reachable, `://` in it too.
    let out = env
        .cmd()
        .current_dir(&cwd)
        .args(["-r", "./sftp://nas", "init"])
        .output()
        .unwrap();
    exits(&out, 0);
    assert!(cwd.join("sftp:/nas/config").is_file());
    let out = env
        .cmd()
        .current_dir(&cwd)
        .args(["-r", "./sftp:backuphost", "init"])
        .output()
        .unwrap();
    exits(&out, 0);
    assert!(cwd.join("sftp:backuphost/config").is_file());
    let out = env
        .cmd()
        .current_dir(&cwd)
        .args(["-r", "local:nas:repo", "init"])
        .output()
        .unwrap();
    exits(&out, 0);
    assert!(cwd.join("nas:repo/config").is_file());
}

/// Every file under `dir` (and `dir` itself with its directories), with its mode.
fn modes_under(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let m = e.metadata().unwrap().permissions().mode() & 0o777;
            (e.into_path(), m)
        })
        .collect()
}

#[test]
fn repository_and_cache_files_are_readable_by_their_owner_only() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"private").unwrap();
    env.backup(&[&src]);
    // They leave notes for monitors in the cache (made 0644 before).
    env.ok(&["check"]);
    env.ok(&["verify-restore", "latest"]);
    let notes = modes_under(&env.cache)
        .into_iter()
        .filter(|(p, _)| p.ends_with("last-check.json") || p.ends_with("last-restore-test.json"))
        .count();
    assert_eq!(notes, 2);
    // Key files are where a password guess starts: nobody else may read
    // them, nor anything else of the repository or the cache.
    for (p, m) in modes_under(&env.repo)
        .into_iter()
        .chain(modes_under(&env.cache))
    {
        assert_eq!(m & 0o077, 0, "{} has mode {m:o}", p.display());
    }
    // A repository shared with its group (its config group-readable) stays
    // shared; never with everyone.
    fs::set_permissions(env.repo.join("config"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(src.join("g"), b"more").unwrap();
    env.backup(&[&src]);
    let newest = modes_under(&env.repo.join("snapshots"))
        .into_iter()
        .filter(|(p, _)| p.is_file())
        .max_by_key(|(p, _)| fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    assert_eq!(newest.1 & 0o007, 0, "{newest:?}");
    assert_ne!(newest.1 & 0o040, 0, "{newest:?}");

    // Shared as security.md says (`chgrp -R GROUP REPO && chmod -R g+rX
    // REPO`): what root's backups add next gets the config's group, not
    // root's, so that the group's members go on reading the repository.
    if !is_root() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    const GROUP: u32 = 4321;
    for e in walkdir::WalkDir::new(&env.repo) {
        let p = e.unwrap().into_path();
        std::os::unix::fs::lchown(&p, None, Some(GROUP)).unwrap();
        let m = fs::metadata(&p).unwrap().mode();
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(m | if m & 0o040_000 != 0 { 0o050 } else { 0o040 }),
        )
        .unwrap();
    }
    fs::write(src.join("h"), b"after the chgrp").unwrap();
    env.backup(&[&src]);
    for p in walkdir::WalkDir::new(&env.repo)
        .into_iter()
        .map(|e| e.unwrap().into_path())
    {
        assert_eq!(fs::metadata(&p).unwrap().gid(), GROUP, "{}", p.display());
    }
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = env
        .cmd()
        .args(["--no-lock", "--no-cache", "--json", "snapshots"])
        .env("HOME", env.dir.path())
        .uid(65534)
        .gid(GROUP)
        .output()
        .unwrap();
    exits(&out, 0);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
}

/// `replaces` is not authenticated: a copy of the key in use, naming the
/// recovery key as the one it replaces, had `key passwd` (opened with the
/// copy) remove the recovery key as left by an interrupted change.
#[test]
fn a_copied_key_cannot_have_key_passwd_remove_another_key() {
    use cairn_engine::id::Id;
    let env = Env::new();
    let original = key_where(&env, "current");
    let recovery_pw = env.path("recovery");
    fs::write(&recovery_pw, "recovery password\n").unwrap();
    let recovery = env.json(&[
        "key",
        "add",
        "--new-password-file",
        recovery_pw.to_str().unwrap(),
    ]);
    let recovery = recovery["id"].as_str().unwrap().to_string();
    let text = fs::read_to_string(env.repo.join("keys").join(&original)).unwrap();
    // Its wrapped key in upper case: read the same, and no longer the same
    // string as the original's.
    let (head, rest) = text.split_once("\"data\": \"").unwrap();
    let (data, tail) = rest.split_once('"').unwrap();
    let text = format!("{head}\"data\": \"{}\"{tail}", data.to_uppercase());
    // A copy whose name sorts first, so that it is the key opened.
    let forged = (0..)
        .map(|n| {
            let bytes = text
                .replacen("\"hostname\": \"", &format!("\"hostname\": \"{n}"), 1)
                .strip_suffix("\n}")
                .map(|t| format!("{t},\n  \"replaces\": \"{recovery}\"\n}}"))
                .unwrap();
            (Id::of_object(bytes.as_bytes()).to_hex(), bytes)
        })
        .find(|(name, _)| *name < original)
        .unwrap();
    fs::write(env.repo.join("keys").join(&forged.0), &forged.1).unwrap();
    let out = passwd_as(&env, &env.password, "new password");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    exits(&out, 0);
    assert!(!said.contains("also removed"), "{said}");
    exits(&run_as(&env, "recovery password", &["snapshots"]), 0);
}

/// `cat key` takes the ID `key list` shows (8 digits), as `key remove`
/// does: it said the key in use was missing.
#[test]
fn cat_key_takes_the_id_key_list_shows() {
    let env = Env::new();
    let keys = env.json(&["key", "list"]);
    let id = keys[0]["id"].as_str().unwrap();
    let listed = env.ok(&["key", "list"]);
    assert!(listed.contains(&format!("*{}", &id[..8])), "{listed}");
    for spec in [&id[..8], id] {
        let key: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "key", spec])).unwrap();
        assert_eq!(key["kdf"], "argon2id", "{key}");
    }
    let err = env.fails(&["cat", "key", "0000"], 1);
    assert!(err.contains("no key matches"), "{err}");
}

/// recovery.md section 10: a key file kept offline with `cat key` and put
/// back into a repository whose `keys/` was lost opens it again, and check
/// finds it whole (its bytes hash to its name).
#[test]
fn a_key_file_kept_offline_opens_the_repository_when_put_back() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "kept\n").unwrap();
    env.backup(&[&src]);
    let keys = env.json(&["key", "list"]);
    let id = keys[0]["id"].as_str().unwrap().to_string();
    let out = env.run(&["cat", "key", &id[..8]]);
    exits(&out, 0);
    assert_eq!(
        out.stdout,
        fs::read(env.repo.join("keys").join(&id)).unwrap(),
        "byte for byte"
    );
    let kept = env.path("offline-key");
    fs::write(&kept, &out.stdout).unwrap();

    fs::remove_dir_all(env.repo.join("keys")).unwrap();
    env.fails(&["snapshots"], 1);
    fs::create_dir(env.repo.join("keys")).unwrap();
    fs::copy(&kept, env.repo.join("keys").join(&id)).unwrap();
    env.assert_check_clean();
    assert_eq!(
        env.ok(&["dump", "latest", src.join("f").to_str().unwrap()]),
        "kept\n"
    );
}
