//! `cairn copy`: replication between repositories with different keys and
//! chunker parameters, through the real binary.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::{
    Env, Killed, ROWS_40K, UPDATE_ROWS, assert_no_panic, assert_same_tree, blob_of, check_db, copy,
    exits, from_env_cleared, largest_pack, last_json, open_engine, py, restored, run_copy,
    wait_for_file, write_random,
};
use serde_json::Value;

/// A repository with its own password (so its master key differs).
fn repo(password: &str, init: &[&str]) -> Env {
    let mut env = Env::uninit();
    env.password = password.into();
    let mut args = vec!["init"];
    args.extend_from_slice(init);
    env.ok(&args);
    env
}

/// A small tree with every common kind of entry and content that spans
/// several chunks.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    write_random(&root.join("big.bin"), 3 << 20, 1);
    write_random(&root.join("sub/medium.bin"), 700 << 10, 2);
    std::fs::write(root.join("sub/deeper/small.txt"), b"hello replication\n").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("private"), b"secret\n").unwrap();
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink("sub/deeper/small.txt", root.join("link")).unwrap();
}

fn snapshots(env: &Env) -> Vec<Value> {
    env.json(&["snapshots"]).as_array().unwrap().clone()
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn copy_between_keys_restores_identically_keeps_metadata_and_copies_once() {
    let src = repo("source password", &[]);
    let dst = repo("a different destination password", &[]);
    let data = src.path("data");
    make_tree(&data);
    src.json(&[
        "backup",
        data.to_str().unwrap(),
        "--host",
        "db-1",
        "--tag",
        "nightly",
        "--tag",
        "eu",
        "--time",
        "2026-03-04 05:06:07",
    ]);
    let source = snapshots(&src);
    let source = &source[0];
    src.ok(&["hold", source["id"].as_str().unwrap()]);

    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 1);
    assert_eq!(num(&v["snapshots_skipped"]), 0);
    // Two repositories with their own keys never cut files alike.
    assert_eq!(v["rechunked"], true);
    assert!(num(&v["bytes_read"]) >= (3 << 20) + (700 << 10));
    assert!(num(&v["bytes_uploaded"]) > 3 << 20);

    // What the destination holds is the same backup: bytes and metadata.
    let copied = snapshots(&dst);
    assert_eq!(copied.len(), 1);
    let c = &copied[0];
    for field in ["time", "hostname", "username", "paths", "tags", "summary"] {
        assert_eq!(c[field], source[field], "{field} differs");
    }
    assert_eq!(c["hold"], true, "a held snapshot stays held in the copy");
    let target = dst.path("restore");
    dst.restore("latest", &target);
    assert_same_tree(&data, &restored(&target, &data));
    dst.ok(&["check", "--read-data"]);

    // Copying again finds the copy and does nothing.
    let again = copy(&dst, &src, &[]);
    assert_eq!(num(&again["snapshots_copied"]), 0);
    assert_eq!(num(&again["snapshots_skipped"]), 1);
    assert_eq!(num(&again["bytes_uploaded"]), 0);
    assert_eq!(num(&again["bytes_read"]), 0);
    assert_eq!(snapshots(&dst).len(), 1);

    // Copying back finds the snapshot it came from.
    let back = copy(&src, &dst, &[]);
    assert_eq!(num(&back["snapshots_copied"]), 0);
    assert_eq!(back["skipped"][0]["reason"], "origin");
    assert_eq!(snapshots(&src).len(), 1);

    // A chain: the copy goes on to a third repository, and a copy straight
    // from the source to it then finds the snapshot there (it came by way
    // of the second), as does a copy from the third back to the source.
    let third = repo("third password", &[]);
    let relayed = copy(&third, &dst, &[]);
    assert_eq!(num(&relayed["snapshots_copied"]), 1);
    let direct = copy(&third, &src, &[]);
    assert_eq!(num(&direct["snapshots_copied"]), 0, "{direct}");
    assert_eq!(direct["skipped"][0]["reason"], "copied");
    assert_eq!(direct["skipped"][0]["existing"], relayed["copied"][0]["id"]);
    assert_eq!(snapshots(&third).len(), 1);
    let home = copy(&src, &third, &[]);
    assert_eq!(num(&home["snapshots_copied"]), 0, "{home}");
    assert_eq!(snapshots(&src).len(), 1);
}

/// `cairn backup --sqlite` cuts a captured database at its pages, so that
/// a few changed rows add a few pages. A copy to a repository with another
/// key must cut it there the same way, or each copy of a changed database
/// stores it nearly whole, and the destination's own captures share nothing
/// with the copies.
#[test]
fn a_copied_sqlite_capture_keeps_its_page_cuts() {
    let src = repo("source password", &[]);
    let dst = repo("a different destination password", &[]);
    let db = src.path("app.db");
    py(ROWS_40K, &[&db]);
    let arg = db.to_str().unwrap();
    src.json(&["backup", "--sqlite", arg]);
    let first = copy(&dst, &src, &[]);
    assert_eq!(first["rechunked"], true);
    py(UPDATE_ROWS, &[&db]);
    let src_second = src.json(&["backup", "--sqlite", arg]);
    let second = copy(&dst, &src, &[]);
    let (u1, u2) = (
        num(&first["bytes_uploaded"]),
        num(&second["bytes_uploaded"]),
    );
    assert_eq!(num(&second["snapshots_copied"]), 1);
    assert!(
        u2 < u1 / 4,
        "the second copy uploaded {u2} bytes, the first {u1}: changed pages alone should go"
    );
    // A capture made in the destination itself, of the database changed
    // once more, finds the copy's pages.
    py(UPDATE_ROWS, &[&db]);
    let own = dst.json(&["backup", "--sqlite", arg]);
    let added = num(&own["data_added"]);
    assert!(
        added < u1 / 4,
        "a capture in the destination added {added} bytes beside copies of {u1}"
    );
    // A database smaller than the destination's smallest chunk keeps its
    // page cut too: a capture in the destination finds its pages.
    let small = src.path("small.db");
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
         c.execute('create table s(x text)')\n\
         c.executemany('insert into s values (hex(randomblob(100)))', [()]*300)\n\
         c.commit()",
        &[&small],
    );
    let small_size = std::fs::metadata(&small).unwrap().len();
    src.json(&["backup", "--sqlite", small.to_str().unwrap()]);
    copy(&dst, &src, &[]);
    // Changed, or the capture would take the copy's content unread.
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
         c.execute('update s set x=hex(randomblob(100)) where rowid=1')\n\
         c.commit()",
        &[&small],
    );
    let own = dst.json(&["backup", "--sqlite", small.to_str().unwrap()]);
    let added = num(&own["data_added"]);
    assert!(
        added < small_size / 4,
        "a capture of a {small_size}-byte database added {added} bytes beside its copy"
    );
    // And the copy is the database, row for row.
    let t = dst.path("r");
    dst.restore(second["copied"][0]["id"].as_str().unwrap(), &t);
    assert_eq!(check_db(&restored(&t, &db), "t"), ("ok".to_string(), 40000));
    let from_src = src.path("r");
    src.restore(src_second["snapshot_id"].as_str().unwrap(), &from_src);
    assert_eq!(
        std::fs::read(restored(&t, &db)).unwrap(),
        std::fs::read(restored(&from_src, &db)).unwrap()
    );
}

#[test]
fn a_copy_names_none_of_the_ids_the_snapshot_had_in_its_source() {
    // The source's earlier IDs came along in `former`: in the destination
    // `tag ID` took a source ID for the copy.
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    make_tree(&data);
    let first = src.json(&["backup", data.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let middle = src.json(&["tag", "--add", "a", &first])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    src.ok(&["tag", "--add", "b", &middle]);
    let listed = src.json(&["snapshots"]);
    assert_eq!(listed[0]["former"], serde_json::json!([middle]), "{listed}");
    copy(&dst, &src, &[]);
    let copied = dst.json(&["snapshots"]);
    assert_eq!(copied[0]["former"], serde_json::json!([]), "{copied}");
    assert_eq!(copied[0]["original"], serde_json::Value::Null, "{copied}");
    dst.fails(&["tag", "--add", "z", &middle[..8]], 1);
}

#[test]
fn two_copies_of_one_backup_in_the_source_are_copied_once() {
    // Two copies of one backup met in B (two copies A to B that ran at
    // once leave that); copied on to C in one run, both were written
    // there: the first's origin was not known until the next run.
    let a = repo("a password", &[]);
    let b = repo("b password", &[]);
    let c = repo("c password", &[]);
    let data = a.path("data");
    make_tree(&data);
    a.ok(&["backup", data.to_str().unwrap()]);
    copy(&b, &a, &[]);
    let engine = open_engine(&b);
    let id = cairn_engine::Id::from_hex(snapshots(&b)[0]["id"].as_str().unwrap()).unwrap();
    // Of the same time (a copy keeps it), another record: written by
    // another cairn. A record of another time claiming the same origin is
    // another snapshot (see
    // `a_record_claiming_a_snapshots_lineage_does_not_keep_it_from_being_copied`).
    let mut twin = engine.load_snapshot(&id).unwrap();
    twin.program_version.push_str(" (another)");
    engine.save_snapshot(&twin).unwrap();
    assert_eq!(snapshots(&b).len(), 2);

    let v = copy(&c, &b, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 1, "{v}");
    assert_eq!(v["skipped"][0]["reason"], "copied", "{v}");
    assert_eq!(v["skipped"][0]["existing"], v["copied"][0]["id"], "{v}");
    assert_eq!(snapshots(&c).len(), 1);
}

#[test]
fn copy_to_other_chunk_sizes_rechunks_with_the_destination_chunker() {
    let src = repo("source password", &[]);
    let dst = repo(
        "destination password",
        &[
            "--chunk-min",
            "16K",
            "--chunk-avg",
            "64K",
            "--chunk-max",
            "256K",
        ],
    );
    let data = src.path("data");
    make_tree(&data);
    src.backup(&[&data]);

    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 1);
    assert_eq!(v["rechunked"], true);
    // 3.7 MiB at a 64 KiB average: dozens of chunks, where the source
    // (1 MiB average) has a handful.
    assert!(num(&v["blobs_added"]) > 30, "{v}");
    let target = dst.path("restore");
    dst.restore("latest", &target);
    assert_same_tree(&data, &restored(&target, &data));
    dst.ok(&["check", "--read-data"]);

    // The chunks are the destination's own: backing the same files up
    // straight into it (reading every file, not trusting the copy as a
    // parent) stores no data again.
    let b = dst.json(&["backup", "--force", data.to_str().unwrap()]);
    assert!(num(&b["bytes_read"]) >= 3 << 20, "{b}");
    assert!(
        num(&b["data_added"]) < 64 << 10,
        "a backup after the copy added {}",
        b["data_added"]
    );
}

#[test]
fn copying_a_mostly_unchanged_snapshot_uploads_and_reads_little() {
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    make_tree(&data);
    src.backup(&[&data]);
    let first = copy(&dst, &src, &[]);
    assert_eq!(num(&first["snapshots_copied"]), 1);

    std::fs::write(data.join("sub/deeper/small.txt"), b"changed\n").unwrap();
    write_random(&data.join("new.bin"), 40 << 10, 3);
    src.backup(&[&data]);

    let second = copy(&dst, &src, &[]);
    assert_eq!(num(&second["snapshots_copied"]), 1);
    assert_eq!(num(&second["snapshots_skipped"]), 1);
    let uploaded = num(&second["bytes_uploaded"]);
    assert!(
        uploaded < 256 << 10,
        "second copy uploaded {uploaded} bytes for a 40 KiB change"
    );
    // Unchanged files are taken from the first copy, not read again.
    let read = num(&second["bytes_read"]);
    assert!(read < 256 << 10, "second copy read {read} bytes");

    let target = dst.path("restore");
    dst.restore("latest", &target);
    assert_same_tree(&data, &restored(&target, &data));
    dst.ok(&["check", "--read-data"]);
}

/// The earlier copy lost data in the destination (a pack gone, dropped from
/// the index by `repair index`): the next copy brings the unchanged files'
/// content from the source again instead of naming what is gone.
#[test]
fn unchanged_files_whose_data_the_destination_lost_are_copied_again() {
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    make_tree(&data);
    src.backup(&[&data]);
    copy(&dst, &src, &[]);
    std::fs::remove_file(largest_pack(&dst.repo)).unwrap();
    dst.ok(&["repair", "index"]);

    // sub/ is unchanged, whole.
    std::fs::write(data.join("new.txt"), b"new\n").unwrap();
    src.backup(&[&data]);
    let next = copy(&dst, &src, &[]);
    assert_eq!(num(&next["snapshots_copied"]), 1, "{next}");
    let target = dst.path("restore");
    dst.restore("latest", &target);
    assert_same_tree(&data, &restored(&target, &data));
}

#[test]
fn copy_selects_by_id_and_filters() {
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), b"one").unwrap();
    src.json(&["backup", data.to_str().unwrap(), "--host", "h1"]);
    std::fs::write(data.join("a"), b"two").unwrap();
    src.json(&[
        "backup",
        data.to_str().unwrap(),
        "--host",
        "h2",
        "--tag",
        "keep",
    ]);
    std::fs::write(data.join("a"), b"three").unwrap();
    src.json(&["backup", data.to_str().unwrap(), "--host", "h2"]);
    let all = snapshots(&src);

    let v = copy(&dst, &src, &[all[0]["short_id"].as_str().unwrap()]);
    assert_eq!(num(&v["snapshots_copied"]), 1);
    assert_eq!(v["copied"][0]["source"], all[0]["id"]);

    let v = copy(&dst, &src, &["--tag", "keep"]);
    assert_eq!(num(&v["snapshots_copied"]), 1);
    assert_eq!(v["copied"][0]["source"], all[1]["id"]);

    let v = copy(&dst, &src, &["--host", "h2"]);
    assert_eq!(num(&v["snapshots_copied"]), 1);
    assert_eq!(num(&v["snapshots_skipped"]), 1);
    assert_eq!(v["copied"][0]["source"], all[2]["id"]);

    // `latest` of a host is that host's newest; named snapshots that match
    // nothing are an error, not an empty success.
    let v = copy(&dst, &src, &["latest", "--host", "h1"]);
    assert_eq!(num(&v["snapshots_skipped"]), 1, "{v}");
    let id0 = all[0]["short_id"].as_str().unwrap();
    for args in [
        vec!["latest", "--host", "nohost"],
        vec![id0, "--host", "h2"],
    ] {
        let err = exits(&run_copy(&dst, &src, &src.password, &args), 1);
        assert!(err.contains("--host"), "{args:?}: {err}");
    }
    // A filter that matches nothing copies nothing, and says so (a typo
    // looked like a copy that was up to date).
    let out = run_copy(&dst, &src, &src.password, &["--host", "nohost"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    exits(&out, 0);
    assert!(err.contains("no source snapshot matches"), "{err}");
    let out = run_copy(&dst, &src, &src.password, &["--host", "h2"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("no source snapshot"));

    let hosts: Vec<Value> = snapshots(&dst)
        .iter()
        .map(|s| s["hostname"].clone())
        .collect();
    assert_eq!(hosts, ["h1", "h2", "h2"]);
    let target = dst.path("restore");
    dst.restore("latest", &target);
    assert_eq!(
        std::fs::read(restored(&target, &data).join("a")).unwrap(),
        b"three"
    );
}

#[test]
fn wrong_or_missing_source_password_is_refused_clearly() {
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), b"x").unwrap();
    src.backup(&[&data]);

    let out = run_copy(&dst, &src, "not the source password", &[]);
    let err = exits(&out, 12);
    assert!(
        err.contains("source repository") && err.contains("wrong password"),
        "{err}"
    );
    assert!(snapshots(&dst).is_empty());

    // A password file works, read as `-r`'s is (trailing spaces and blank
    // lines dropped when its bytes as they are fail, as restic does); no
    // password at all says where to give one.
    let pw = dst.path("from-pw");
    std::fs::write(&pw, format!("{}  \n\n", src.password)).unwrap();
    let out = from_env_cleared(&dst)
        .args(["copy", "--from-repo"])
        .arg(&src.repo)
        .arg("--from-password-file")
        .arg(&pw)
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshots(&dst).len(), 1);

    let out = from_env_cleared(&dst)
        .args(["copy", "--from-repo"])
        .arg(&src.repo)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("CAIRN_FROM_PASSWORD"), "{err}");

    // A repository is not copied into itself.
    let out = run_copy(&src, &src, &src.password, &[]);
    let err = exits(&out, 1);
    assert!(err.contains("same repository"));
}

/// Gives the repository at `env` a new random ID, keeping its key: what a
/// mirror made with `cp -r` would need to be copied into. No command makes
/// such a pair, so the engine's API sets it up.
fn give_new_id(env: &Env) {
    use cairn_engine::backend::{Backend, FileKind, LocalBackend};
    use cairn_engine::envelope::{ObjectKind, seal_msgpack};
    use cairn_engine::{Id, OpenOptions, Repository};
    let backend: std::sync::Arc<dyn Backend> = std::sync::Arc::new(LocalBackend::new(&env.repo));
    let repo = Repository::open(
        backend.clone(),
        env.password.as_bytes(),
        &OpenOptions::default(),
    )
    .unwrap();
    let mut config = repo.config().clone();
    config.id = Id::random();
    let sealed = seal_msgpack(repo.key(), ObjectKind::Config, &config);
    backend.delete(FileKind::Config, "config").unwrap();
    backend.write(FileKind::Config, "config", &sealed).unwrap();
}

#[test]
fn repositories_sharing_key_and_chunker_keep_the_chunks_as_they_are() {
    let src = repo("shared password", &[]);
    let dst = Env::uninit();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src.repo)
        .arg(&dst.repo)
        .status()
        .unwrap();
    assert!(status.success());
    let dst = Env {
        password: src.password.clone(),
        ..dst
    };
    give_new_id(&dst);
    let data = src.path("data");
    make_tree(&data);
    src.backup(&[&data]);

    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 1);
    assert_eq!(v["rechunked"], false);
    assert!(num(&v["bytes_uploaded"]) > 3 << 20);
    // Same key and same cuts give the same blob IDs, so the copied root
    // tree is the source's: not one chunk boundary moved.
    assert_eq!(snapshots(&dst)[0]["tree"], snapshots(&src)[0]["tree"]);
    let target = dst.path("restore");
    dst.restore("latest", &target);
    assert_same_tree(&data, &restored(&target, &data));
    dst.ok(&["check", "--read-data"]);
}

#[test]
fn an_unreadable_source_snapshot_is_reported_and_the_others_are_copied() {
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), b"one").unwrap();
    src.backup(&[&data]);
    std::fs::write(data.join("a"), b"two").unwrap();
    src.backup(&[&data]);
    let all = snapshots(&src);
    let damaged = src
        .repo
        .join("snapshots")
        .join(all[0]["id"].as_str().unwrap());
    std::fs::write(&damaged, b"not a snapshot").unwrap();

    // Named by ID, the others are not asked for: the damaged record is
    // none of the run's business (a nightly copy of one snapshot failed).
    let named = all[1]["id"].as_str().unwrap();
    let out = run_copy(&dst, &src, &src.password, &[named]);
    exits(&out, 0);
    dst.ok(&["forget", "latest"]);
    let out = run_copy(&dst, &src, &src.password, &[]);
    let err = exits(&out, 1);
    assert!(err.contains("source snapshot not copied"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(num(&v["snapshots_copied"]), 1);
    assert_eq!(v["copied"][0]["source"], all[1]["id"]);
    assert_eq!(v["errors"].as_array().unwrap().len(), 1);
    let target = dst.path("restore");
    dst.restore("latest", &target);
    assert_eq!(
        std::fs::read(restored(&target, &data).join("a")).unwrap(),
        b"two"
    );
}

/// A source with two snapshots of `data` (300 KiB more each), and an
/// empty destination.
fn two_snapshots_and_an_empty_destination() -> (Env, Env, PathBuf) {
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    std::fs::create_dir_all(&data).unwrap();
    write_random(&data.join("a"), 300 << 10, 7);
    src.backup(&[&data]);
    write_random(&data.join("b"), 300 << 10, 8);
    src.backup(&[&data]);
    (src, dst, data)
}

/// `copy --from-repo SRC` into `dst` with `faults` injected (see
/// `CAIRN_TEST_FAULTS`) into the destination.
fn copy_with_faults(dst: &Env, src: &Env, faults: &str) -> std::process::Output {
    from_env_cleared(dst)
        .env("CAIRN_FROM_PASSWORD", &src.password)
        .env("CAIRN_TEST_FAULTS", faults)
        .args(["copy", "--from-repo"])
        .arg(&src.repo)
        .output()
        .unwrap()
}

#[test]
fn each_snapshot_copied_is_in_the_audit_trail_even_if_the_copy_is_killed_after_it() {
    // The trail was written when the copy ended: one killed (kill -9,
    // or a signal, which ends it without closing the repository) left
    // only an open record, naming no snapshot it had written.
    let (src, dst, _) = two_snapshots_and_an_empty_destination();
    let mut child = Killed(
        from_env_cleared(&dst)
            .env("CAIRN_FROM_PASSWORD", &src.password)
            .env("CAIRN_TEST_FAULTS", "slow-read=pack:700")
            .args(["copy", "--from-repo"])
            .arg(&src.repo)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let records = dst.repo.join("snapshots");
    let started = std::time::Instant::now();
    let first = loop {
        let names: Vec<_> = std::fs::read_dir(&records)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.contains(".tmp"))
            .collect();
        if let Some(n) = names.first() {
            break n.clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no copy"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The second snapshot's first pack read sleeps 0.7 s.
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(std::fs::read_dir(&records).unwrap().count(), 1);
    let found = dst.json(&["audit", "--snapshot", &first[..8]]);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["command"], "copy", "{found:?}");
}

/// The tree of snapshot `id` in `env`, as MessagePack values.
fn raw_tree(env: &Env, snapshot: &str) -> (cairn_engine::Repository, rmpv::Value) {
    let repo = open_engine(env);
    let (_, s) = repo.find_snapshot(snapshot).unwrap();
    let data = repo.load_blob(&s.tree).unwrap();
    let v = rmpv::decode::read_value(&mut &data[..]).unwrap();
    (repo, v)
}

/// The first node of a tree read by [`raw_tree`].
fn first_node(v: &mut rmpv::Value) -> &mut Vec<(rmpv::Value, rmpv::Value)> {
    let rmpv::Value::Map(top) = v else {
        panic!("not a map")
    };
    let rmpv::Value::Array(nodes) = &mut top[0].1 else {
        panic!("no nodes")
    };
    let rmpv::Value::Map(fields) = &mut nodes[0] else {
        panic!("not a map")
    };
    fields
}

#[test]
fn fields_a_newer_cairn_wrote_in_a_tree_are_copied() {
    // The format lets a writer add fields that older readers ignore; a
    // copy writes every tree again (other blob IDs) and dropped them.
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), b"one").unwrap();
    src.backup(&[&data]);
    {
        use cairn_engine::blob::BlobType;
        let (repo, mut v) = raw_tree(&src, "latest");
        first_node(&mut v).push(("future".into(), "kept".into()));
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &v).unwrap();
        let saver = cairn_engine::saver::BlobSaver::new(&repo);
        let tree = saver.save(BlobType::Tree, &bytes).unwrap().0;
        saver.flush().unwrap();
        let (_, mut s) = repo.find_snapshot("latest").unwrap();
        s.tree = tree;
        repo.save_snapshot(&s).unwrap();
    }
    // The record with the newer tree beside the original: one of the two
    // copies has the field.
    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 2, "{v}");
    let mut kept = 0;
    for c in v["copied"].as_array().unwrap() {
        let (_, mut tree) = raw_tree(&dst, c["id"].as_str().unwrap());
        let fields = first_node(&mut tree);
        kept += fields
            .iter()
            .filter(|(k, val)| k.as_str() == Some("future") && val.as_str() == Some("kept"))
            .count();
    }
    assert_eq!(kept, 1, "{v}");
    dst.ok(&["check", "--read-data"]);
}

#[test]
fn a_copy_whose_report_cannot_be_written_says_what_it_copied() {
    let (src, dst, _) = two_snapshots_and_an_empty_destination();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = from_env_cleared(&dst)
        .env("CAIRN_FROM_PASSWORD", &src.password)
        .args(["--json", "copy", "--from-repo"])
        .arg(&src.repo)
        .stdout(full)
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("2 snapshot(s) were copied; only this report was lost"),
        "{err}"
    );
    assert_eq!(dst.json(&["snapshots"]).as_array().unwrap().len(), 2);
}

#[test]
fn a_copy_that_fails_midway_keeps_finished_snapshots_and_the_next_run_completes() {
    let (src, dst, data) = two_snapshots_and_an_empty_destination();

    // Destination writes: its lock, then for the first snapshot a data
    // pack, a tree pack, an index file and the record; the disk fills up
    // right after (the source's only write is its lock).
    let out = copy_with_faults(&dst, &src, "enospc-write=6");
    let err = exits(&out, 1);
    assert!(err.contains("No space left"), "{err}");
    assert!(
        err.contains("note: 1 snapshot(s) were copied before the error"),
        "{err}"
    );
    assert_eq!(snapshots(&dst).len(), 1, "the finished snapshot is kept");
    dst.ok(&["check"]);

    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 1);
    assert_eq!(num(&v["snapshots_skipped"]), 1);
    dst.ok(&["check", "--read-data"]);
    let target = dst.path("restore");
    dst.restore("latest", &target);
    assert_same_tree(&data, &restored(&target, &data));
}

#[test]
fn a_copy_that_fails_midway_reports_in_json_what_it_copied() {
    let (src, dst, _) = two_snapshots_and_an_empty_destination();
    // As above: the disk fills up after the first snapshot's record.
    let out = from_env_cleared(&dst)
        .env("CAIRN_FROM_PASSWORD", &src.password)
        .env("CAIRN_TEST_FAULTS", "enospc-write=6")
        .args(["--json", "copy", "--from-repo"])
        .arg(&src.repo)
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("No space left"), "{err}");
    let v = last_json(&out);
    assert_eq!(v["message_type"], "summary", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("No space left"),
        "{v}"
    );
    assert_eq!(num(&v["snapshots_copied"]), 1, "{v}");
    let kept = snapshots(&dst);
    assert_eq!(kept.len(), 1);
    assert_eq!(v["copied"][0]["id"], kept[0]["id"], "{v}");
    assert!(num(&v["bytes_uploaded"]) > 0, "{v}");
}

/// A write to the destination that fails as "not found" (S3's answer to
/// completing a multipart upload it dropped) or as damage (the check
/// before upload) is the destination's failure: the copy stops there, and
/// does not send the user to check the source, snapshot after snapshot.
#[test]
fn a_destination_write_answered_not_found_stops_the_copy() {
    let (src, dst, _) = two_snapshots_and_an_empty_destination();

    // The destination's lock, then the first snapshot's data pack.
    let out = copy_with_faults(&dst, &src, "missing-write=2");
    let err = exits(&out, 1);
    assert!(err.contains("injected: upload not found"), "{err}");
    assert!(!err.contains("not copied"), "{err}");
    assert!(!err.contains("on the source"), "{err}");
    assert_eq!(snapshots(&dst).len(), 0);
    dst.ok(&["check"]);

    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 2);
    dst.ok(&["check", "--read-data"]);
}

/// The packs of `env`'s repository that hold file data (not trees).
fn data_packs(env: &Env) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(env.repo.join("data")) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let pack = env.ok(&["cat", "pack", e.file_name().to_str().unwrap()]);
        let header: Value = serde_json::from_str(&pack).unwrap();
        if header[0]["blob_type"] == 0 {
            out.push(e.path().to_path_buf());
        }
    }
    out
}

#[test]
fn a_copy_repaired_after_data_loss_is_copied_again_in_full() {
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    std::fs::create_dir_all(data.join("d")).unwrap();
    write_random(&data.join("d/a"), 200 << 10, 9);
    std::fs::write(data.join("b"), b"small").unwrap();
    src.backup(&[&data]);
    copy(&dst, &src, &[]);

    // Lose every data pack of the destination, then repair it as the
    // runbook says: the copy loses its files.
    let lost = data_packs(&dst);
    assert!(!lost.is_empty());
    for p in lost {
        std::fs::remove_file(p).unwrap();
    }
    dst.ok(&["repair", "index"]);
    dst.ok(&["repair", "snapshots", "--forget"]);

    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 1, "{v}");
    // The repaired snapshot keeps the original's time, so `latest` could
    // be either one: restore the copy by its ID.
    let id = v["copied"][0]["id"].as_str().unwrap().to_string();
    let target = dst.path("restore");
    dst.restore(&id, &target);
    assert_same_tree(&data, &restored(&target, &data));
    dst.ok(&["check", "--read-data"]);

    // The other way round: the source loses its data and is repaired; its
    // replica brings the snapshot back whole (it was skipped as a copy of
    // the repaired snapshot that lost the data).
    for e in walkdir::WalkDir::new(src.repo.join("data")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    src.ok(&["repair", "index"]);
    src.ok(&["repair", "snapshots", "--forget"]);
    // (The replica's own repaired snapshot comes along too, as any other.)
    let back = copy(&src, &dst, &[]);
    let whole = back["copied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| !c["tags"].to_string().contains("repaired"))
        .unwrap_or_else(|| panic!("no complete snapshot copied back: {back}"));
    let target = src.path("restore-back");
    src.restore(whole["id"].as_str().unwrap(), &target);
    assert_same_tree(&data, &restored(&target, &data));
    src.ok(&["check", "--read-data"]);
    // And from then on, both ways, nothing is copied again: repaired
    // snapshots stand for repaired ones, complete ones for complete ones.
    for _ in 0..2 {
        let there = copy(&dst, &src, &[]);
        assert_eq!(num(&there["snapshots_copied"]), 0, "{there}");
        let back = copy(&src, &dst, &[]);
        assert_eq!(num(&back["snapshots_copied"]), 0, "{back}");
    }
}

/// A source snapshot repaired after data loss is copied as repaired; once
/// the source has its data again and the complete record stands for the
/// snapshot, the next copy brings it whole (the repaired copy stood for it,
/// and the replica kept the incomplete one for good).
#[test]
fn a_source_snapshot_complete_again_is_copied_over_its_repaired_copy() {
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    std::fs::create_dir_all(&data).unwrap();
    write_random(&data.join("a"), 200 << 10, 9);
    src.backup(&[&data]);
    // The data packs go away for a while: repaired, the damaged record kept.
    let away = src.path("away");
    std::fs::create_dir_all(&away).unwrap();
    let mut moved = Vec::new();
    for p in data_packs(&src) {
        let to = away.join(p.file_name().unwrap());
        std::fs::rename(&p, &to).unwrap();
        moved.push((to, p));
    }
    assert!(!moved.is_empty());
    src.ok(&["repair", "index"]);
    src.ok(&["repair", "snapshots"]);
    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 1, "{v}");
    let repaired = v["copied"][0]["source"].as_str().unwrap().to_string();
    // The packs come back; the repaired record goes, the complete one stays.
    for (from, to) in moved {
        std::fs::rename(from, to).unwrap();
    }
    src.ok(&["repair", "index"]);
    src.ok(&["forget", &repaired]);
    src.ok(&["check", "--read-data"]);
    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 1, "{v}");
    let id = v["copied"][0]["id"].as_str().unwrap().to_string();
    let target = dst.path("restore");
    dst.restore(&id, &target);
    assert_same_tree(&data, &restored(&target, &data));
    // And not again.
    let v = copy(&dst, &src, &[]);
    assert_eq!(num(&v["snapshots_copied"]), 0, "{v}");
}

/// A copy rewritten in the destination (`rewrite`) stays rewritten: the
/// next copy still counts its source as copied, and a later source snapshot
/// is copied faithfully, not paired with the rewritten trees (which would
/// silently leave the removed file out of unchanged directories).
#[test]
fn a_rewritten_copy_is_neither_copied_again_nor_used_as_a_pattern() {
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    make_tree(&data);
    std::fs::write(data.join("sub/deeper/token.env"), b"TOKEN=1\n").unwrap();
    src.ok(&["backup", data.to_str().unwrap()]);
    copy(&dst, &src, &[]);
    dst.ok(&["rewrite", "--exclude", "*.env"]);

    let again = copy(&dst, &src, &[]);
    assert_eq!(num(&again["snapshots_copied"]), 0, "{again}");
    assert_eq!(again["skipped"][0]["reason"], "copied", "{again}");
    assert_eq!(snapshots(&dst).len(), 1);
    let ls = |spec: &str| dst.ok(&["ls", spec]);
    assert!(!ls("latest").contains("token.env"));
    // Its tags replaced: `rewritten` stays, which keeps it from being
    // paired; removing it is refused (exit 2), changing nothing.
    dst.ok(&["tag", "--set", "weekly", "latest"]);
    assert_eq!(
        snapshots(&dst)[0]["tags"],
        serde_json::json!(["weekly", "rewritten"])
    );
    let out = dst.run(&["tag", "--remove", "rewritten", "latest"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be removed"));

    // sub/ is unchanged in the next source snapshot; only the root changes.
    std::fs::write(data.join("new.txt"), b"new\n").unwrap();
    src.ok(&["backup", data.to_str().unwrap()]);
    let next = copy(&dst, &src, &[]);
    assert_eq!(num(&next["snapshots_copied"]), 1, "{next}");
    let listed = ls("latest");
    assert!(listed.contains("sub/deeper/token.env"), "{listed}");
    assert!(listed.contains("new.txt"), "{listed}");
}

#[test]
fn a_damaged_source_snapshot_does_not_stop_the_newer_ones_from_being_copied() {
    // Small packs: the skipped snapshot has stored some before the damaged
    // chunk is met.
    let src = repo("source password", &["--pack-size-mib", "1"]);
    let dst = repo("destination password", &["--pack-size-mib", "1"]);
    let data = src.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"first\n").unwrap();
    src.backup(&[&data]);
    // A directory new in the damaged snapshot and kept in the next: its
    // tree, translated while the damaged one was copied, must be stored.
    std::fs::create_dir_all(data.join("a")).unwrap();
    std::fs::write(data.join("a/kept.txt"), b"kept\n").unwrap();
    write_random(&data.join("a/big.bin"), 4 << 20, 78);
    write_random(&data.join("b.bin"), 2 << 20, 77);
    let second = src.backup(&[&data])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    // b.bin's first chunk, damaged. Its own bytes: the pack's middle may be
    // a chunk of a/big.bin, which the next snapshot keeps.
    let blob = blob_of(&src, &second, &data.join("b.bin"));
    let at = open_engine(&src)
        .locate(&cairn_engine::Id::from_hex(&blob).unwrap())
        .unwrap();
    let pack = at.pack.to_hex();
    let pack = src.repo.join("data").join(&pack[..2]).join(&pack);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[(at.blob.offset + at.blob.length / 2) as usize] ^= 0x20;
    std::fs::write(&pack, &bytes).unwrap();
    std::fs::remove_file(data.join("b.bin")).unwrap();
    std::fs::write(data.join("c.txt"), b"third\n").unwrap();
    src.backup(&[&data]);

    // Every run copies the healthy ones and names the damaged one.
    for _ in 0..2 {
        let out = run_copy(&dst, &src, &src.password, &[]);
        let err = exits(&out, 1);
        assert!(
            err.contains(&format!("snapshot {} not copied", &second[..8])),
            "{err}"
        );
    }
    let copied = snapshots(&dst);
    assert_eq!(copied.len(), 2, "{copied:?}");
    let t = dst.path("t");
    dst.restore("latest", &t);
    let back = restored(&t, &data);
    assert_eq!(std::fs::read(back.join("c.txt")).unwrap(), b"third\n");
    assert_eq!(std::fs::read(back.join("a/kept.txt")).unwrap(), b"kept\n");
    // What the skipped snapshot had stored is indexed: each nightly run
    // left packs no index named, stored again the next night.
    let report = dst.assert_check_clean();
    let warnings = report["warnings"].to_string();
    assert!(!warnings.contains("not in any index"), "{warnings}");
}

#[test]
fn a_copy_says_which_repository_is_locked() {
    // Both sides gave the same "repository is locked" (exit 11), so the
    // user could not tell which one to wait for or unlock.
    let src = repo("source password", &[]);
    let dst = repo("destination password", &[]);
    let data = src.path("data");
    make_tree(&data);
    src.backup(&[&data]);
    copy(&dst, &src, &[]);
    for (locked, side) in [(&src, "source"), (&dst, "destination")] {
        // `repair index` holds an exclusive lock while it reads every pack.
        let mark = locked.path(&format!("reading-{side}"));
        let mut child = locked
            .cmd()
            .env(
                "CAIRN_TEST_FAULTS",
                format!("slow-read=pack:4000,slow-read-mark={}", mark.display()),
            )
            .args(["repair", "index"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for_file(
            &mark,
            std::time::Duration::from_secs(30),
            "repair never read a pack",
        );
        let err = exits(&run_copy(&dst, &src, &src.password, &[]), 11);
        assert!(
            err.contains(&format!("(in the {side} repository)")),
            "{side}: {err}"
        );
        assert!(child.wait().unwrap().success());
    }
}

/// Tags and hold set on a source snapshot after it was copied stay in the
/// source: `copy` skipped it as "already copied", and a `forget
/// --keep-tag` in the destination then went by the copy's old tags. The
/// skip says what differs.
#[test]
fn a_copied_snapshot_whose_tags_or_hold_changed_since_is_named() {
    let src = repo("source password", &[]);
    let dst = repo("a different destination password", &[]);
    let data = src.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"f").unwrap();
    src.backup(&[&data]);
    copy(&dst, &src, &[]);
    let again = copy(&dst, &src, &[]);
    assert!(again["skipped"][0].get("differs").is_none(), "{again}");

    src.ok(&["tag", "--add", "keep", "latest"]);
    let tagged = copy(&dst, &src, &[]);
    assert_eq!(
        tagged["skipped"][0]["differs"],
        serde_json::json!(["tags"]),
        "{tagged}"
    );
    src.ok(&["hold", "latest"]);
    let held = copy(&dst, &src, &[]);
    assert_eq!(
        held["skipped"][0]["differs"],
        serde_json::json!(["tags", "hold"]),
        "{held}"
    );
    // Set in the destination too, only the hold is left.
    dst.ok(&["tag", "--add", "keep", "latest"]);
    let hold_only = copy(&dst, &src, &[]);
    assert_eq!(
        hold_only["skipped"][0]["differs"],
        serde_json::json!(["hold"]),
        "{hold_only}"
    );
    let out = from_env_cleared(&dst)
        .env("CAIRN_FROM_PASSWORD", &src.password)
        .args(["copy", "--from-repo"])
        .arg(&src.repo)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("its hold differs there"), "{text}");
}
