//! The recovery runbook (docs/recovery.md), scenario by scenario,
//! with the commands as documented.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

#[test]
fn runbook_restore_scenarios() {
    let env = Env::new();
    let home = env.path("home");
    fs::create_dir_all(home.join("work")).unwrap();
    fs::write(home.join("work/report.odt"), b"version 1").unwrap();
    write_random(&home.join("work/data.bin"), 3 << 20, 1);
    let h = home.to_str().unwrap();
    env.ok(&["backup", h, "--time", "2026-01-03 09:00:00"]);
    // Another source's snapshot, newer than the one asked for below.
    let etc = env.path("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("conf"), b"c").unwrap();
    env.ok(&[
        "backup",
        etc.to_str().unwrap(),
        "--time",
        "2026-01-03 10:00:00",
    ]);
    fs::write(home.join("work/report.odt"), b"version 2").unwrap();
    env.ok(&["backup", h, "--time", "2026-01-03 11:00:00"]);

    // 1. Everything, verified.
    let target = env.path("newroot");
    let r = env.json(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--numeric-ids",
        "--verify",
    ]);
    assert_eq!(r["verified"], 2);
    assert_same_tree(&home, &restored(&target, &home));

    // 2. One file as it was at a time; a directory by snapshot ID. --at
    // picks the newest snapshot of the source asked about, not etc's.
    let work = format!("{h}/work");
    let out = env.ok(&["ls", "--at", "2026-01-03 10:15", &work]);
    assert!(out.contains("report.odt"));
    let t2 = env.path("r");
    let include = format!("{h}/work/report.odt");
    let out = env.run(&[
        "restore",
        "--at",
        "2026-01-03 10:15",
        "--target",
        t2.to_str().unwrap(),
        "--include",
        &include,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("from 2026-01-03 09:00:00"), "{err}");
    assert_eq!(
        fs::read(restored(&t2, &home).join("work/report.odt")).unwrap(),
        b"version 1"
    );
    assert!(!restored(&t2, &home).join("work/data.bin").exists());
    // The same with the directory as a subpath.
    let t4 = env.path("r4");
    env.ok(&[
        "restore",
        &format!(":{work}"),
        "--at",
        "2026-01-03 10:15",
        "--target",
        t4.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(t4.join("report.odt")).unwrap(), b"version 1");
    let snaps = env.json(&["snapshots"]);
    let first = snaps[0]["short_id"].as_str().unwrap();
    let t3 = env.path("work");
    env.ok(&[
        "restore",
        &format!("{first}:{h}/work"),
        "--target",
        t3.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(t3.join("report.odt")).unwrap(), b"version 1");

    // 3. Interrupted restore: run it again; then make the target match exactly.
    fs::remove_file(restored(&target, &home).join("work/data.bin")).unwrap();
    fs::write(
        restored(&target, &home).join("stray"),
        b"not in the snapshot",
    )
    .unwrap();
    let r = env.json(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(r["files"], 1);
    assert_eq!(r["files_skipped"], 1);
    env.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--delete",
    ]);
    assert_same_tree(&home, &restored(&target, &home));

    // `dump latest:SUBFOLDER --path` picks the newest snapshot of that
    // source, not the newest of all (etc's, now).
    env.ok(&[
        "backup",
        etc.to_str().unwrap(),
        "--time",
        "2026-01-03 12:00:00",
    ]);
    let out = env.run(&["dump", &format!("latest:{work}"), "--path", h, "report.odt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(out.stdout, b"version 2");
    assert!(err.contains("from 2026-01-03 11:00:00"), "{err}");
}

#[test]
fn runbook_damaged_repository() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("safe"), b"in the first snapshot").unwrap();
    let s = src.to_str().unwrap();
    env.ok(&["backup", s]);
    write_random(&src.join("damaged"), 2 << 20, 9);
    env.ok(&["backup", s]);
    // Bit rot in the pack holding the new file.
    let pack = largest_pack(&env.repo);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[1000] ^= 0x20;
    fs::write(&pack, &bytes).unwrap();

    // check --read-data names the pack and the affected path.
    let report = env.json_any(&["check", "--read-data"]);
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        report["damaged_packs"].to_string().contains(name),
        "{report}"
    );
    assert!(
        report["affected"].to_string().contains("/damaged"),
        "{report}"
    );
    // 1. Unaffected data restores.
    let t = env.path("t");
    env.ok(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--include",
        &format!("{s}/safe"),
    ]);
    assert_eq!(
        fs::read(restored(&t, &src).join("safe")).unwrap(),
        b"in the first snapshot"
    );
    // 3. Move the damaged pack away, repair index, repair snapshots.
    fs::rename(&pack, env.path("damaged-pack")).unwrap();
    env.ok(&["repair", "index"]);
    env.ok(&["repair", "snapshots", "--forget"]);
    // 4. check passes, prune frees what is unreferenced.
    env.assert_check_clean();
    env.ok(&["prune"]);
    env.assert_check_clean();
    let t = env.path("t2");
    env.restore("latest", &t);
    assert!(restored(&t, &src).join("safe").exists());
}

/// `PRAGMA integrity_check` (or the error opening the file) and rows of `t`.
const CHECK: &str = "import sqlite3,sys\n\
    try:\n c=sqlite3.connect(sys.argv[1])\n r=c.execute('pragma integrity_check').fetchone()[0]\n\
    \x20print(r, c.execute('select count(*) from t').fetchone()[0] if r=='ok' else '')\n\
    except Exception as e:\n print('error', e)";

#[test]
fn runbook_corrupted_sqlite_database() {
    let env = Env::new();
    let app = env.path("srv/app");
    fs::create_dir_all(&app).unwrap();
    let db = app.join("app.db");
    let d = db.to_str().unwrap();
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('pragma journal_mode=wal')\n\
         c.execute('create table t(id integer primary key, v text)')\n\
         c.execute(\"with recursive n(x) as (select 1 union all select x+1 from n where x<5000) \
                    insert into t select x, hex(randomblob(60)) from n\")\nc.commit()",
        &[&db],
    );
    env.ok(&["backup", "--sqlite", d, "--time", "2026-01-03 09:00:00"]);
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
         c.execute(\"insert into t(v) values ('after the capture')\")\nc.commit()",
        &[&db],
    );
    // The damage: pages in the middle of the file overwritten.
    let mut bytes = fs::read(&db).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 16384].fill(0x5a);
    fs::write(&db, &bytes).unwrap();
    let damaged = py(CHECK, &[&db]);
    assert!(
        !damaged.starts_with("ok"),
        "the damage went unnoticed: {damaged}"
    );

    // The steps of docs/recovery.md, section 3.
    let snaps = env.json(&["snapshots", "--path", d]);
    let id = snaps[0]["short_id"].as_str().unwrap().to_string();
    let v = env.json(&["verify-restore", &id]);
    assert_eq!(v["ok"], true, "{v}");
    let r = env.path("r");
    env.ok(&[
        "restore",
        "--at",
        "2026-01-03 10:15",
        "--path",
        d,
        "--target",
        r.to_str().unwrap(),
    ]);
    // The damaged file and its journals, kept together.
    let damaged = app.join("damaged");
    fs::create_dir(&damaged).unwrap();
    for s in ["", "-wal", "-shm", "-journal"] {
        let name = format!("app.db{s}");
        if app.join(&name).exists() {
            fs::rename(app.join(&name), damaged.join(&name)).unwrap();
        }
    }
    let status = std::process::Command::new("cp")
        .arg("-p")
        .arg(restored(&r, &db))
        .arg(&db)
        .status()
        .unwrap();
    assert!(status.success());
    // Whole again, as captured: the row written after the capture is the RPO.
    assert_eq!(py(CHECK, &[&db]).trim(), "ok 5000");
}

#[test]
fn runbook_snapshot_forgotten_by_mistake() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("docs/contract.txt"), b"the only copy").unwrap();
    write_random(&src.join("data.bin"), 2 << 20, 7);
    let s = src.to_str().unwrap();
    let lost = env.backup(&[s])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = env.path("before");
    env.restore(&lost, &before);
    // The next version deletes a file; then the wrong snapshot is forgotten.
    fs::remove_file(src.join("docs/contract.txt")).unwrap();
    env.backup(&[s]);
    env.ok(&["forget", &lost]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);

    // A dry run names the lost tree, with where it leads, and writes nothing.
    let dry = env.json(&["recover", "--dry-run"]);
    assert_eq!(dry["recovered"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["recovered"][0]["path"], s, "{dry}");
    assert!(dry["left_out"].as_array().unwrap().is_empty(), "{dry}");
    assert!(dry["snapshot"].is_null());
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);

    // Recovered: one snapshot, tagged, with the lost tree under its ID. It
    // only adds, so a backup host's append-only key may run it.
    add_append_only_key(&env, "backup host");
    let out = ok_as(&env, "backup host", &["recover"]);
    let root = dry["recovered"][0]["id"].as_str().unwrap();
    assert!(out.contains(&root[..16]), "{out}");
    let recovered = env.json(&["snapshots", "--tag", "recovered"]);
    let recovered = recovered.as_array().unwrap();
    assert_eq!(recovered.len(), 1);
    let id = recovered[0]["id"].as_str().unwrap();
    assert!(
        out.contains(&format!("snapshot {} saved", &id[..8])),
        "{out}"
    );
    // As the runbook says.
    assert!(
        env.ok(&["ls", "latest", "--tag", "recovered"])
            .contains(root)
    );
    let target = env.path("back");
    env.restore_recovered(&target);
    let under = target.join(root);
    assert_eq!(
        fs::metadata(&under).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    // The snapshot as it was, file for file, byte for byte.
    assert_same_tree(&restored(&before, &src), &restored(&under, &src));
    assert_eq!(
        fs::read(restored(&under, &src).join("docs/contract.txt")).unwrap(),
        b"the only copy"
    );
    env.assert_check_clean();
    // --delete needs the directories a snapshot holds in full, which a
    // recovered one does not record: refused, not a silent no-op.
    fs::write(target.join("stray"), b"x").unwrap();
    let err = env.fails(
        &[
            "restore",
            "latest",
            "--tag",
            "recovered",
            "--delete",
            "--target",
            target.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("made by `cairn recover`"), "{err}");
    assert!(target.join("stray").exists());
    // `latest` is still the newest backup, never the recovered snapshot: a
    // full restore (here with --delete) gets the source as it is now.
    let now = env.path("now");
    fs::create_dir_all(restored(&now, &src)).unwrap();
    fs::write(restored(&now, &src).join("stray"), b"x").unwrap();
    env.ok(&[
        "restore",
        "latest",
        "--delete",
        "--target",
        now.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &restored(&now, &src));
    assert!(!now.join(root).exists());
    // Nor is it picked by --at, or as the newest of its host.
    let host = recovered[0]["hostname"].as_str().unwrap().to_string();
    for args in [
        vec!["ls", "--at", "2099-01-01 00:00"],
        vec!["ls", "latest", "--host", host.as_str()],
    ] {
        let out = env.ok(&args);
        assert!(
            !out.contains(root) && out.contains("data.bin"),
            "{args:?}: {out}"
        );
    }
    // Nor kept or dropped by a policy in place of a backup of its host.
    env.ok(&["forget", "--keep-last", "1", "--group-by", "host"]);
    let left = snapshot_ids(&env);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&id.to_string()), "{left:?}");

    // Nothing is left to recover, and nothing more is written.
    let again = env.ok(&["recover"]);
    assert!(again.contains("nothing to recover"), "{again}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    // Once forgotten and pruned, the data is gone for good.
    env.ok(&["forget", id]);
    env.ok(&["prune"]);
    let gone = env.json(&["recover", "--dry-run"]);
    assert_eq!(gone["recovered"].as_array().unwrap().len(), 0, "{gone}");
}

#[test]
fn recover_leaves_out_a_lost_tree_whose_data_is_gone_unless_asked() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    write_random(&a.join("kept.bin"), 1 << 20, 1);
    write_random(&b.join("lost.bin"), 1 << 20, 2);
    let packs = || -> std::collections::BTreeSet<std::path::PathBuf> {
        walkdir::WalkDir::new(env.repo.join("data"))
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .filter(|p| p.is_file())
            .collect()
    };
    let snap_a = env.backup(&[&a])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before_b = packs();
    let snap_b = env.backup(&[&b])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["forget", &snap_a, &snap_b]);
    // b's file data is lost (its data pack, the only big one b's backup
    // wrote, is gone); its trees are still there.
    let data_pack: Vec<_> = packs()
        .difference(&before_b)
        .filter(|p| fs::metadata(p).unwrap().len() > 512 << 10)
        .cloned()
        .collect();
    assert_eq!(data_pack.len(), 1);
    fs::remove_file(&data_pack[0]).unwrap();
    // Before `repair index` too: the index still names the pack that is
    // gone, and its blobs were taken for present (b's tree for complete).
    let dry = env.json(&["recover", "--dry-run"]);
    assert_eq!(dry["left_out"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["left_out"][0]["path"], b.to_str().unwrap(), "{dry}");
    env.ok(&["repair", "index"]);

    let dry = env.json(&["recover", "--dry-run"]);
    assert_eq!(dry["recovered"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["recovered"][0]["path"], a.to_str().unwrap(), "{dry}");
    assert_eq!(dry["left_out"].as_array().unwrap().len(), 1, "{dry}");
    let incomplete = &dry["left_out"][0];
    assert_eq!(incomplete["path"], b.to_str().unwrap(), "{dry}");
    assert!(incomplete["missing_blobs"].as_u64().unwrap() > 0, "{dry}");
    let (id_a, id_b) = (
        dry["recovered"][0]["id"].as_str().unwrap(),
        incomplete["id"].as_str().unwrap(),
    );

    // Chosen by ID: only that tree; an ID that names no lost tree fails.
    let err = env.fails(&["recover", "--dry-run", "0000000000"], 1);
    assert!(err.contains("no tree that nothing refers to"));
    let out = env.ok(&["recover", "--dry-run", &id_b[..10]]);
    assert!(out.contains("--allow-incomplete takes it"), "{out}");
    assert!(
        out.contains("nothing recovered: 2 lost trees left out"),
        "{out}"
    );
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());
    // Not a dry run: asked for by ID and not taken is a failure (a script's
    // `recover ID && restore --tag recovered` went on with exit 0).
    let err = env.fails(&["recover", &id_b[..10]], 1);
    assert!(
        err.contains(&format!("lost tree {} is incomplete", &id_b[..16]))
            && err.contains("--allow-incomplete takes it")
            && err.contains("nothing was recovered"),
        "{err}"
    );
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());

    // Without asking, the complete tree only: check stays clean.
    env.ok(&["recover", &id_a[..10]]);
    env.assert_check_clean();
    // `--at` picks it with `--tag recovered`, a path in it given too (its
    // source path, /recovered, is not its tree's).
    let in_it = format!("/{id_a}{}/kept.bin", a.display());
    let at = ["--at", "2999-01-01", "--tag", "recovered"];
    let lists_a = || {
        let listed = env.ok(&[&["ls", "--recursive"][..], &at, &[&format!("/{id_a}")]].concat());
        assert!(listed.contains("kept.bin"), "{listed}");
    };
    lists_a();
    let dumped = env.cmd().arg("dump").args(at).arg(&in_it).output().unwrap();
    exits(&dumped, 0);
    assert_eq!(dumped.stdout, fs::read(a.join("kept.bin")).unwrap());
    // Without the tag, `--at` passes it over.
    env.fails(
        &[&["ls", "--at", "2999-01-01"][..], &[&format!("/{id_a}")]].concat(),
        1,
    );
    // Asked for, the incomplete one too; `repair snapshots` then drops what
    // is missing, as the runbook says, and check is clean again.
    env.ok(&["recover", "--allow-incomplete", &id_b[..10]]);
    let check = env.run(&["check"]);
    exits(&check, 1);
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("lost.bin") && said.contains("missing"),
        "{said}"
    );
    env.ok(&["repair", "snapshots", "--forget"]);
    env.assert_check_clean();
    // A newer recovered snapshot (b's) is passed over: it holds no /<a's ID>.
    lists_a();
    // a's recovered snapshot restores what a held.
    let snaps = env.json(&["snapshots", "--tag", "recovered"]);
    let first = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| !s["tags"].to_string().contains("repaired"))
        .unwrap();
    let target = env.path("back");
    env.restore(first["id"].as_str().unwrap(), &target);
    assert!(files_equal(
        &a.join("kept.bin"),
        &restored(&target.join(id_a), &a).join("kept.bin")
    ));
}

#[test]
fn recover_finds_the_trees_of_a_backup_killed_before_it_indexed_them() {
    // A backup killed after its packs went up and before its index file
    // (or whose index file was lost) leaves trees no index names: recover
    // refused until `repair index`, which an append-only key may not run.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("old"), b"backed up before").unwrap();
    env.backup(&[&src]);
    write_random(&src.join("new.bin"), 1 << 20, 3);
    let names = |dir: &str| -> std::collections::BTreeSet<std::path::PathBuf> {
        fs::read_dir(env.repo.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let (indexes, snapshots) = (names("index"), names("snapshots"));
    env.backup(&[&src]);
    // What the kill leaves: its packs, no index file, no snapshot.
    for f in names("index").difference(&indexes) {
        fs::remove_file(f).unwrap();
    }
    for f in names("snapshots").difference(&snapshots) {
        fs::remove_file(f).unwrap();
    }
    add_append_only_key(&env, "backup host");
    let dry = run_as(&env, "backup host", &["--json", "recover", "--dry-run"]);
    exits(&dry, 0);
    let dry = last_json(&dry);
    assert_eq!(dry["recovered"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["recovered"][0]["path"], src.to_str().unwrap(), "{dry}");
    assert_eq!(dry["recovered"][0]["missing_blobs"], 0, "{dry}");
    assert!(
        !dry["indexed_packs"].as_array().unwrap().is_empty(),
        "{dry}"
    );
    assert_eq!(names("index"), indexes, "a dry run wrote an index file");

    let out = ok_as(&env, "backup host", &["recover"]);
    assert!(
        out.contains("searched too") && out.contains("now indexed"),
        "{out}"
    );
    env.assert_check_clean();
    let root = dry["recovered"][0]["id"].as_str().unwrap();
    let target = env.path("back");
    env.restore_recovered(&target);
    let back = restored(&target.join(root), &src);
    assert!(files_equal(&src.join("new.bin"), &back.join("new.bin")));
    assert_eq!(fs::read(back.join("old")).unwrap(), b"backed up before");
    // The next backup goes on from there.
    env.backup(&[&src]);
    env.assert_check_clean();
}

/// The docs name the tests that show what they promise: each named test
/// exists (the runbook cited one that never did).
#[test]
fn every_test_the_docs_cite_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read_all = |dirs: &[&str], ext: &str| -> Vec<(PathBuf, String)> {
        dirs.iter()
            .flat_map(|d| walkdir::WalkDir::new(root.join(d)))
            .map(|e| e.unwrap())
            .filter(|e| e.path().extension().is_some_and(|x| x == ext))
            .map(|e| {
                (
                    e.path().to_path_buf(),
                    fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let code: String = read_all(&["tests", "engine", "cli"], "rs")
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let mut docs = read_all(&["docs", "format-spec"], "md");
    docs.push((
        root.join("README.md"),
        fs::read_to_string(root.join("README.md")).unwrap(),
    ));
    let mut cited = 0;
    let mut missing = Vec::new();
    for (path, text) in &docs {
        // Test names are snake_case sentences in backquotes: five words or
        // more (metric names, `cairn_...`, are not tests).
        for quoted in text.split('`').skip(1).step_by(2) {
            let words = quoted.split('_').count();
            let snake = quoted
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !snake || words < 5 || quoted.starts_with("cairn_") {
                continue;
            }
            cited += 1;
            if !code.contains(&format!("fn {quoted}(")) {
                missing.push(format!("{}: {quoted}", path.display()));
            }
        }
    }
    assert!(
        cited > 50,
        "only {cited} cited tests found: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "cited tests that do not exist:\n{}",
        missing.join("\n")
    );
}
