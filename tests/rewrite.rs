//! `cairn rewrite`: removing a secret and a cache directory from every
//! snapshot, the data freed by prune, and the refusals (legal hold,
//! append-only) that leave the repository untouched.

mod common;

use std::fs;
use std::path::Path;

use common::*;

const EXIT_APPEND_ONLY: i32 = 13;

/// A project with a secret at two depths, a cache directory and code.
fn make_source(root: &Path) {
    fs::create_dir_all(root.join("app/cache/deep")).unwrap();
    fs::create_dir_all(root.join("app/config")).unwrap();
    fs::write(root.join("app/.env"), b"API_KEY=hunter2\n").unwrap();
    fs::write(root.join("app/config/.env"), b"DB_PASSWORD=hunter3\n").unwrap();
    fs::write(root.join("app/main.rs"), b"fn main() {}\n").unwrap();
    // Random, so the repository shrinks by about this much when it goes.
    write_random(&root.join("app/cache/big.bin"), 3 << 20, 1);
    write_random(&root.join("app/cache/deep/small.bin"), 4096, 2);
}

fn names(env: &Env, spec: &str) -> Vec<String> {
    env.ok(&["ls", spec])
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn rewrite_removes_paths_from_every_snapshot_and_prune_frees_them() {
    let env = Env::new();
    let src = env.path("src");
    make_source(&src);
    env.backup(&[&src]);
    fs::write(src.join("app/lib.rs"), b"pub fn f() {}\n").unwrap();
    env.backup(&[&src]);
    let before = snapshot_ids(&env);
    assert_eq!(before.len(), 2);
    let secret = format!("{}/app/.env", src.display());

    // A dry run names what would go and changes nothing in the repository.
    let repo_before = files_size(&env.repo);
    let dry = env.json(&["rewrite", "--exclude", ".env", "--exclude", "cache/", "-n"]);
    assert_eq!(dry["dry_run"], true);
    let rewritten = dry["rewritten"].as_array().unwrap();
    assert_eq!(rewritten.len(), 2, "{dry}");
    let removed: Vec<&str> = rewritten[0]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(removed.contains(&secret.as_str()), "{removed:?}");
    assert!(
        removed.contains(&format!("{}/app/cache", src.display()).as_str()),
        "{removed:?}"
    );
    assert_eq!(rewritten[0]["files_removed"], 4, "{dry}");
    assert_eq!(snapshot_ids(&env), before);
    assert_eq!(files_size(&env.repo), repo_before);

    let out = env.ok(&["rewrite", "--exclude", ".env", "--exclude", "cache/"]);
    assert!(out.contains("2 of 2 snapshots rewritten"), "{out}");
    let after = env.json(&["snapshots"]);
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 2);
    for s in after {
        let id = s["id"].as_str().unwrap();
        assert!(
            !before.contains(&id.to_string()),
            "old record {id} still listed"
        );
        assert!(
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "rewritten"),
            "{s}"
        );
        // The lineage names the snapshot as it was first written.
        assert!(
            before.contains(&s["original"].as_str().unwrap().to_string()),
            "{s}"
        );
    }
    // Every old record is gone from storage, not only from the listing.
    assert_eq!(finished_objects(&env.repo.join("snapshots")), 2);

    for spec in [after[0]["id"].as_str().unwrap(), "latest"] {
        let listed = names(&env, spec);
        assert!(!listed.iter().any(|p| p.ends_with(".env")), "{listed:?}");
        assert!(!listed.iter().any(|p| p.contains("/cache")), "{listed:?}");
        assert!(
            listed.iter().any(|p| p.ends_with("app/main.rs")),
            "{listed:?}"
        );
    }
    let found = env.json(&["find", ".env"]);
    assert!(found.as_array().unwrap().is_empty(), "{found}");

    // What was kept restores byte for byte.
    let target = env.path("restore");
    env.restore("latest", &target);
    let back = restored(&target, &src);
    assert_eq!(
        fs::read(back.join("app/lib.rs")).unwrap(),
        b"pub fn f() {}\n"
    );
    assert_eq!(
        fs::read(back.join("app/main.rs")).unwrap(),
        b"fn main() {}\n"
    );
    assert!(!back.join("app/.env").exists());
    assert!(!back.join("app/config/.env").exists());
    assert!(back.join("app/config").is_dir());
    assert!(!back.join("app/cache").exists());

    // Prune frees the cache's 3 MiB; check reads everything left.
    let grown = files_size(&env.repo);
    env.ok(&["prune"]);
    let pruned = files_size(&env.repo);
    assert!(
        grown - pruned > 3 << 20,
        "prune freed {} bytes of {grown}",
        grown - pruned
    );
    env.assert_check_clean();

    // A pattern that matches nothing rewrites nothing.
    let ids = snapshot_ids(&env);
    let out = env.ok(&["rewrite", "--exclude", "no-such-file"]);
    assert!(out.contains("0 of 2 snapshots rewritten"), "{out}");
    assert_eq!(snapshot_ids(&env), ids);

    // The audit trail says who rewrote what.
    let audit = env.ok(&["audit", "--command", "rewrite"]);
    assert!(audit.contains("rewrite: +snapshots"), "{audit}");
}

#[test]
fn rewrite_of_one_snapshot_leaves_the_others() {
    let env = Env::new();
    let src = env.path("src");
    make_source(&src);
    env.backup(&[&src]);
    env.backup(&[&src]);
    let ids = snapshot_ids(&env);
    let r = env.json(&["rewrite", &ids[1][..8], "--exclude", "/**/cache"]);
    assert_eq!(r["snapshots"], 1);
    let after = snapshot_ids(&env);
    assert!(after.contains(&ids[0]), "the other snapshot was touched");
    assert!(!after.contains(&ids[1]));
    assert!(
        names(&env, &ids[0][..8])
            .iter()
            .any(|p| p.contains("/cache"))
    );
    assert!(!names(&env, "latest").iter().any(|p| p.contains("/cache")));
}

#[test]
fn a_rewrite_without_patterns_is_a_usage_error_before_the_password() {
    // It exited 1 (a failure of the repository to a script), and only
    // after the password was asked for.
    let env = Env::new();
    let src = env.path("src");
    make_source(&src);
    env.backup(&[&src]);
    let empty = env.path("no-patterns");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let args = [
        "rewrite",
        "latest",
        "--exclude-file",
        empty.to_str().unwrap(),
    ];
    for args in [&args[..2], &args[..]] {
        let out = env
            .cmd()
            .env("CAIRN_PASSWORD", "not the password")
            .args(args)
            .output()
            .unwrap();
        let err = exits(&out, 2);
        assert!(err.contains("at least one --exclude"), "{err}");
    }
}

#[test]
fn an_id_from_before_a_rewrite_names_the_record_that_stands_for_it_now() {
    // `rewrite --prune OLD` killed during its prune, run again: "no
    // snapshot matches" left the user to guess that OLD had been rewritten.
    let env = Env::new();
    let src = env.path("src");
    make_source(&src);
    env.backup(&[&src]);
    let old = snapshot_ids(&env)[0].clone();
    env.ok(&["rewrite", &old[..8], "--exclude", "/**/cache"]);
    env.ok(&["tag", "--add", "cleaned", "latest"]);
    let now = snapshot_ids(&env);
    assert_eq!(now.len(), 1);
    for cmd in [
        &["rewrite", &old[..8], "--exclude", "/**/cache"][..],
        &["ls", &old],
    ] {
        let err = env.fails(cmd, 1);
        assert!(
            err.contains("has been rewritten since") && err.contains(&now[0][..8]),
            "{cmd:?}: {err}"
        );
    }
    // An ID that never was is still just unknown.
    let err = env.fails(&["ls", "abcdef12"], 1);
    assert!(!err.contains("rewritten"), "{err}");
}

#[test]
fn a_held_snapshot_or_an_append_only_repository_refuses_before_anything_changes() {
    let env = Env::new();
    let src = env.path("src");
    make_source(&src);
    env.backup(&[&src]);
    env.backup(&[&src]);
    let held = snapshot_ids(&env)[0].clone();
    env.ok(&["hold", &held]);
    let ids = snapshot_ids(&env);
    let files = finished_objects(&env.repo.join("snapshots"));

    let err = env.fails(&["rewrite", "--exclude", ".env"], 1);
    assert!(
        err.contains("legal hold") && err.contains("nothing was rewritten"),
        "{err}"
    );
    assert_eq!(snapshot_ids(&env), ids);
    assert_eq!(finished_objects(&env.repo.join("snapshots")), files);

    // Leaving the held snapshot out works.
    let listed = env.json(&["snapshots"]);
    let by_hold = |h: bool| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["hold"].as_bool().unwrap_or(false) == h)
            .map(|s| s["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (held_now, other) = (by_hold(true), by_hold(false));
    env.ok(&["rewrite", &other, "--exclude", ".env"]);
    assert!(snapshot_ids(&env).contains(&held_now));
    assert!(!snapshot_ids(&env).contains(&other));

    // Append-only: exit 13, nothing written.
    env.ok(&["config", "append-only", "on"]);
    let ids = snapshot_ids(&env);
    let err = env.fails(&["rewrite", "--exclude", "cache/"], EXIT_APPEND_ONLY);
    assert!(err.contains("append-only"));
    assert_eq!(snapshot_ids(&env), ids);

    // Bad input: no pattern (nothing to act on, exit 2), or a pattern file
    // that does not exist (1).
    env.ok(&["config", "append-only", "off"]);
    for (args, code) in [
        (vec!["rewrite"], 2),
        (
            vec!["rewrite", "--exclude-file", "/nonexistent/patterns"],
            1,
        ),
    ] {
        let out = env.run(&args);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    assert_eq!(snapshot_ids(&env), ids);
}

/// Backs up `make_source` and runs `rewrite --exclude cache/` stopped
/// after it wrote the new record, before it deleted the old one.
fn interrupted_rewrite(env: &Env) {
    let src = env.path("src");
    make_source(&src);
    env.backup(&[&src]);
    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "fail-delete=snapshot")
        .args(["rewrite", "--exclude", "cache/"])
        .output()
        .unwrap();
    exits(&out, 1);
}

/// A rewrite stopped after writing the new record but before deleting the
/// old one leaves the old record (and the secret) behind; running it again
/// deletes the leftover, and prune can then free the data.
#[test]
fn an_interrupted_rewrite_is_finished_by_running_it_again() {
    let env = Env::new();
    interrupted_rewrite(&env);
    // Two records of one snapshot: listed once, and check is clean.
    assert_eq!(finished_objects(&env.repo.join("snapshots")), 2);
    assert_eq!(snapshot_ids(&env).len(), 1);
    env.assert_check_clean();

    let r = env.json(&["rewrite", "--exclude", "cache/"]);
    let rewritten = r["rewritten"].as_array().unwrap();
    assert_eq!(rewritten.len(), 1, "{r}");
    assert_eq!(
        rewritten[0]["records_deleted"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    assert_eq!(finished_objects(&env.repo.join("snapshots")), 1);
    assert!(!names(&env, "latest").iter().any(|p| p.contains("/cache")));
    let grown = files_size(&env.repo);
    env.ok(&["prune"]);
    assert!(grown - files_size(&env.repo) > 3 << 20);
    env.assert_check_clean();
}

/// Run again with other patterns, a rewrite cannot tell the interrupted
/// one's leftover record for its own: it is kept, but named, and the run
/// fails, as the paths it holds stay in the repository (before, it said
/// the snapshot was rewritten and exited 0).
#[test]
fn a_leftover_of_a_rewrite_with_other_patterns_is_named_and_fails_the_run() {
    let env = Env::new();
    interrupted_rewrite(&env);
    let records = || {
        let mut v: Vec<String> = fs::read_dir(env.repo.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let both = records();
    assert_eq!(both.len(), 2);
    let out = env.run(&["--json", "rewrite", "--exclude", ".env"]);
    let err = exits(&out, 1);
    let r: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let kept = r["records_kept"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{r}");
    let leftover = kept[0]["record"].as_str().unwrap();
    assert!(both.contains(&leftover.to_string()), "{r}");
    assert!(err.contains(&leftover[..8]), "{err}");
    assert!(
        err.contains("still holds paths these patterns match"),
        "{err}"
    );
    // The leftover is there, as it was; the snapshot shown lost both.
    assert!(records().contains(&leftover.to_string()));
    let shown = names(&env, "latest");
    assert!(
        !shown
            .iter()
            .any(|p| p.contains("/cache") || p.ends_with(".env"))
    );
    // With the interrupted rewrite's patterns too, it goes.
    env.ok(&["rewrite", "--exclude", "cache/", "--exclude", ".env"]);
    assert!(!records().contains(&leftover.to_string()));
    assert_eq!(records().len(), 1);
    env.assert_check_clean();
}

/// `repair snapshots` keeps the record it repaired beside the repair; once
/// a backup stores the lost data again, that record is whole and other
/// content. A rewrite then named it as an interrupted rewrite's leftover or
/// a forged record; it is named as what it is.
#[test]
fn a_record_kept_beside_its_repair_is_named_as_such() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("keep"), b"kept").unwrap();
    write_random(&src.join("secret.txt"), 200 << 10, 5);
    env.backup(&[&src]);
    let pack = largest_pack(&env.repo);
    let away = env.path("pack-away");
    fs::rename(&pack, &away).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();
    env.ok(&["repair", "packs", &name[..8]]);
    env.ok(&["repair", "snapshots"]);
    env.backup(&[&src]);
    env.assert_check_clean();
    let err = env.fails(&["rewrite", "--exclude", "secret.txt"], 1);
    assert!(err.contains("is a repair (`repair snapshots`)"), "{err}");
    assert!(!err.contains("interrupted"), "{err}");
    let r = env.json_any(&["rewrite", "--exclude", "secret.txt"]);
    let rec = r["records_kept"][0]["record"].as_str().unwrap().to_string();
    assert_eq!(r["records_kept"][0]["beside_repair"], true, "{r}");
    env.ok(&["forget", &rec[..8]]);
    env.ok(&["rewrite", "--exclude", "secret.txt"]);
    env.assert_check_clean();
}

/// `rewrite --prune` deletes a small secret's data even though its pack is
/// almost all in use (plain prune keeps such packs).
#[test]
fn rewrite_with_prune_leaves_the_secret_unreadable() {
    let env = Env::new();
    let src = env.path("src");
    make_source(&src);
    env.backup(&[&src]);
    let blob = blob_of(&env, "latest", &src.join("app/.env"));
    assert!(env.ok(&["cat", "blob", &blob]).contains("hunter2"));

    env.ok(&["rewrite", "--exclude", ".env", "--prune"]);
    let out = env.run(&["cat", "blob", &blob]);
    assert_no_panic(&out);
    assert!(!out.status.success(), "the secret's blob is still readable");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
    // The kept code is still there and whole.
    let code = blob_of(&env, "latest", &src.join("app/main.rs"));
    assert_eq!(env.ok(&["cat", "blob", &code]), "fn main() {}\n");
    env.assert_check_clean();
}

/// A secret small enough that its share of the zstd frame it was grouped
/// in rounds to no byte (a 3-byte file beside a 6 KB one) was kept, frame
/// and index entry, by `rewrite --prune`: still readable.
#[test]
fn rewrite_with_prune_removes_a_tiny_secret_grouped_with_a_larger_file() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.txt"), "notes\n".repeat(1000)).unwrap();
    fs::write(src.join("token"), b"k=1").unwrap();
    env.backup(&[&src]);
    let blob = blob_of(&env, "latest", &src.join("token"));
    assert_eq!(env.ok(&["cat", "blob", &blob]), "k=1");

    env.ok(&["rewrite", "--exclude", "/**/token", "--prune"]);
    let out = env.run(&["cat", "blob", &blob]);
    assert_no_panic(&out);
    assert!(!out.status.success(), "the secret's blob is still readable");
    let notes = blob_of(&env, "latest", &src.join("notes.txt"));
    assert_eq!(env.ok(&["cat", "blob", &notes]), "notes\n".repeat(1000));
    let r = env.json(&["prune", "--dry-run", "--max-unused", "0"]);
    assert_eq!(r["unused_blobs"], 0, "{r}");
    env.assert_check_clean();
}

/// A SQLite database removed by a rewrite leaves the snapshot's record of
/// databases too: `verify-restore` found it missing from every restore and
/// failed the snapshot for good.
#[test]
fn a_database_rewritten_out_of_a_snapshot_is_no_longer_expected_in_it() {
    let env = Env::new();
    let src = env.path("src");
    make_source(&src);
    create_db(&src.join("app/data.db"), "wal", 10);
    create_db(&src.join("app/keep.db"), "wal", 3);
    env.json(&["backup", "--sqlite-aware", src.to_str().unwrap()]);
    let r = env.json(&["verify-restore", "latest"]);
    assert_eq!(r["databases"].as_array().unwrap().len(), 2, "{r}");
    env.ok(&["rewrite", "--exclude", "data.db"]);
    assert_only_keep_db_is_verified(&env);
}

/// The latest snapshot's restore test passes, and checks `keep.db` alone.
fn assert_only_keep_db_is_verified(env: &Env) {
    let r = env.json(&["verify-restore", "latest"]);
    assert_eq!(r["ok"], true, "{r}");
    let dbs = r["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 1, "{r}");
    assert!(dbs[0].to_string().contains("keep.db"), "{r}");
}

/// `repair snapshots` that drops a captured database (its data lost)
/// leaves the snapshot's record of databases too, as a rewrite does: it
/// kept the capture, and `verify-restore` failed the repaired snapshot for
/// good while `check` passed.
#[test]
fn a_database_lost_and_repaired_out_of_a_snapshot_is_no_longer_expected_in_it() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    create_db(&src.join("keep.db"), "wal", 3);
    env.json(&["backup", "--sqlite-aware", src.to_str().unwrap()]);
    // Megabytes of its own, in the pack the second backup writes.
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
         c.execute('create table b(x blob)')\n\
         c.executemany('insert into b values (randomblob(?))', [(1<<20,)]*3)\n\
         c.commit()",
        &[&src.join("data.db")],
    );
    env.json(&["backup", "--sqlite-aware", src.to_str().unwrap()]);
    let r = env.json(&["verify-restore", "latest"]);
    assert_eq!(r["databases"].as_array().unwrap().len(), 2, "{r}");
    fs::remove_file(largest_pack(&env.repo)).unwrap();
    env.ok(&["repair", "index"]);
    let r = env.json(&["repair", "snapshots", "--forget"]);
    assert!(r["dropped"].to_string().contains("data.db"), "{r}");
    env.ok(&["check"]);
    assert_only_keep_db_is_verified(&env);
}

/// A directory whose listing was lost can still be rewritten out of a
/// snapshot (removed whole, it needs no listing), and a snapshot that lost
/// its root listing stops a rewrite with its ID and the way out: the
/// rewrite failed on any lost tree, with a bare blob ID.
#[test]
fn a_lost_listing_is_rewritten_out_and_one_in_the_way_is_named() {
    let env = Env::new();
    let a = env.path("A");
    fs::create_dir_all(a.join("sub")).unwrap();
    write_random(&a.join("sub/secret"), 64 << 10, 1);
    let before: std::collections::HashSet<_> = packs(&env.repo).into_iter().collect();
    let first = env.backup(&[a.join("sub")])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let of_first: Vec<_> = packs(&env.repo)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    write_random(&a.join("kept"), 64 << 10, 2);
    env.backup(&[&a]);
    for p in of_first {
        fs::remove_file(p).unwrap();
    }
    env.ok(&["repair", "index"]);

    let sub = a.join("sub");
    let r = env.json(&["rewrite", "--exclude", sub.to_str().unwrap(), "latest"]);
    assert_eq!(r["rewritten"].as_array().unwrap().len(), 1, "{r}");
    // What it held is unknown, and said so rather than counted as nothing.
    assert_eq!(
        r["rewritten"][0]["uncounted"],
        serde_json::json!([sub.to_str().unwrap()]),
        "{r}"
    );
    let t = env.path("t");
    env.restore("latest", &t);
    let back = restored(&t, &a);
    assert!(!back.join("sub").exists());
    assert!(files_equal(&back.join("kept"), &a.join("kept")));

    let err = env.fails(&["rewrite", "--exclude", "other"], 1);
    assert!(
        err.contains(&format!("snapshot {}", &first[..8]))
            && err.contains("nothing was rewritten")
            && err.contains("`repair packs` for packs that are gone, then `repair snapshots`"),
        "{err}"
    );
}

/// `rewrite --dry-run --prune` previews the prune as the rewrite would
/// leave the repository: it counted the old records as still in use, and
/// so promised to free nothing of what the real run then freed.
#[test]
fn a_dry_run_of_rewrite_with_prune_previews_the_prune_that_follows() {
    let env = Env::new();
    let src = env.path("src");
    make_source(&src);
    env.backup(&[&src]);
    fs::write(src.join("app/lib.rs"), b"pub fn f() {}\n").unwrap();
    env.backup(&[&src]);
    let rewrite = [
        "rewrite",
        "--exclude",
        ".env",
        "--exclude",
        "cache/",
        "--prune",
    ];
    let before = files_size(&env.repo);
    let dry = env.json(&[&rewrite[..], &["--dry-run"]].concat());
    assert_eq!(
        files_size(&env.repo),
        before,
        "the dry run changed the repository"
    );
    let real = env.json(&rewrite);
    assert!(dry["unused_blobs"].as_u64().unwrap() > 0, "{dry}");
    assert!(dry["bytes_deleted"].as_u64().unwrap() >= 3 << 20, "{dry}");
    for key in [
        "snapshots",
        "unused_blobs",
        "packs_deleted",
        "packs_repacked",
    ] {
        assert_eq!(dry[key], real[key], "{key}: dry run {dry}, real {real}");
    }
    env.assert_check_clean();
}

/// The `rewritten` marker is not a user's label: a snapshot rewritten to
/// remove a secret is still untagged for `--keep-tag ''` (it fell out of
/// that policy and was forgotten, and the marker cannot be removed), and
/// stays in its group for `--group-by tags` (alone in a group of its own,
/// every policy kept it for good).
#[test]
fn a_rewritten_snapshot_keeps_its_place_in_retention_by_tags() {
    let env = Env::new();
    let src = env.path("src");
    make_source(&src);
    for i in 0..3 {
        fs::write(src.join("app/n"), i.to_string()).unwrap();
        env.backup(&[&src]);
    }
    let first = snapshot_ids(&env)[0].clone();
    env.ok(&["rewrite", &first, "--exclude", ".env"]);
    let removed = |r: &serde_json::Value| -> usize {
        let groups = r.as_array().unwrap();
        groups
            .iter()
            .map(|g| g["remove"].as_array().unwrap().len())
            .sum()
    };
    let untagged = env.json(&["forget", "--keep-tag", "", "--keep-last", "1", "-n"]);
    assert_eq!(removed(&untagged), 0, "{untagged}");
    // Said in words ("with tags []" before).
    let said = env.ok(&["forget", "--keep-tag", "", "--keep-last", "1", "-n"]);
    assert!(said.contains("all untagged snapshots"), "{said}");
    let by_tags = env.json(&["forget", "--group-by", "tags", "--keep-last", "1", "-n"]);
    assert_eq!(by_tags.as_array().unwrap().len(), 1, "{by_tags}");
    assert_eq!(removed(&by_tags), 2, "{by_tags}");
    // Asked for by name, it is still found.
    let listed = env.json(&["snapshots", "--tag", "rewritten"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}
