//! Prune: frees what no snapshot references, repacks mostly-unused packs,
//! and survives kill -9 and concurrent or stalled backups.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn pack_count(repo: &Path) -> usize {
    walkdir::WalkDir::new(repo.join("data"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
        .count()
}

/// Locks in the repository (a lock is written under a temporary name first).
fn lock_count(repo: &Path) -> usize {
    finished_objects(&repo.join("locks"))
}

/// Starts `cairn backup SOURCE` and returns it once its lock is in place
/// (beside the locks already there).
fn backup_holding_its_lock(env: &Env, source: &Path) -> std::process::Child {
    let before = lock_count(&env.repo);
    let child = env
        .cmd()
        .args(["backup", source.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_for_locks(env, "backup", before + 1);
    child
}

/// Waits until some process holds a lock in the repository.
fn wait_for_a_lock(env: &Env, who: &str) {
    wait_for_locks(env, who, 1);
}

/// Waits until the repository holds at least `n` locks.
fn wait_for_locks(env: &Env, who: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while lock_count(&env.repo) < n {
        assert!(Instant::now() < deadline, "the {who} took no lock");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn kill(signal: &str, pid: u32) {
    assert!(
        std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Removes a snapshot record the way `forget` does (prune is what frees data).
fn drop_snapshot(env: &Env, id: &str) {
    fs::remove_file(env.repo.join("snapshots").join(id)).unwrap();
}

fn assert_check_clean(env: &Env) {
    env.assert_check_clean();
}

#[test]
fn prune_frees_forgotten_data_and_keeps_the_rest() {
    let env = Env::new();
    let a = env.path("a");
    let b = env.path("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    write_random(&a.join("only-a"), 8 << 20, 1);
    write_random(&b.join("only-b"), 8 << 20, 2);
    write_random(&a.join("shared"), 2 << 20, 3);
    fs::copy(a.join("shared"), b.join("shared")).unwrap();
    let sa = env.backup(&[&a]);
    env.backup(&[&b]);
    drop_snapshot(&env, sa["snapshot_id"].as_str().unwrap());

    let before = files_size(&env.repo);
    let dry = env.json(&["prune", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["bytes_deleted"].as_u64().unwrap() >= 8 << 20, "{dry}");
    assert_eq!(
        files_size(&env.repo),
        before,
        "dry run changed the repository"
    );

    let r = env.json(&["prune"]);
    assert!(
        r["packs_deleted"].as_u64().unwrap() + r["packs_repacked"].as_u64().unwrap() >= 1,
        "{r}"
    );
    let after = files_size(&env.repo);
    assert!(
        before - after >= 7 << 20,
        "freed only {} bytes: {r}",
        before - after
    );
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&b, &restored(&t, &b));
    // Nothing left to do the second time.
    let again = env.json(&["prune"]);
    assert_eq!(again["packs_deleted"], 0);
    assert_eq!(again["packs_repacked"], 0);
}

#[test]
fn prune_repacks_partly_used_packs() {
    let env = Env::uninit();
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // Many small files share packs; half of them go away.
    for i in 0..200 {
        write_random(&src.join(format!("f{i:03}")), 20_000, 100 + i);
    }
    let first = env.backup(&[&src]);
    for i in (0..200).step_by(2) {
        fs::remove_file(src.join(format!("f{i:03}"))).unwrap();
    }
    env.backup(&[&src]);
    drop_snapshot(&env, first["snapshot_id"].as_str().unwrap());
    let dry = env.json(&["prune", "--max-unused", "10%", "--dry-run"]);
    let before = files_size(&env.repo);
    let stored = || files_size(&env.repo.join("data")) + files_size(&env.repo.join("index"));
    let stored_before = stored();
    let index_before = finished_objects(&env.repo.join("index")) as u64;
    let r = env.json(&["prune", "--max-unused", "10%"]);
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    // What it says it freed is what packs and index files take less (the
    // index files it replaced were left out: it said less than it freed).
    assert_eq!(
        r["bytes_freed"].as_i64().unwrap(),
        stored_before as i64 - stored() as i64,
        "{r}"
    );
    // The index files there now are those it wrote, less those it wrote
    // and removed again (the count left out the repacked blobs' files).
    let written = r["index_files_written"].as_u64().unwrap();
    let removed_again = r["index_files_removed"].as_u64().unwrap() - index_before;
    assert_eq!(
        written - removed_again,
        finished_objects(&env.repo.join("index")) as u64,
        "{r}"
    );
    // A dry run counts what the repack writes back (the live half of each
    // pack), not the whole of every pack it rewrites: its estimate is near
    // what the prune freed on disk.
    let freed = before as i64 - files_size(&env.repo) as i64;
    let said = dry["bytes_freed"].as_i64().unwrap();
    assert!(dry["bytes_added"].as_u64().unwrap() > 1 << 20, "{dry}");
    assert!(
        (said - freed).abs() < freed / 10,
        "said {said}, freed {freed}: {dry}"
    );
    assert_eq!(r["unused_bytes_kept"], 0, "{r}");
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn prune_merges_small_packs_once_there_are_many() {
    // Each small backup leaves a tiny data pack and a tiny tree pack; prune
    // only repacked packs with unused data, so they piled up for good.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let backup_once_more = |i: usize| {
        fs::write(src.join(format!("f{i}")), format!("hourly change {i}")).unwrap();
        env.backup(&[&src]);
    };
    for i in 0..3 {
        backup_once_more(i);
    }
    // A few: left alone, so the last partial pack is not merged over and over.
    let few = pack_count(&env.repo);
    let r = env.json(&["prune"]);
    assert_eq!(r["small_packs_merged"], 0, "{r}");
    assert_eq!(pack_count(&env.repo), few);
    // --repack-small merges them when that makes fewer packs.
    let r = env.json(&["prune", "--repack-small"]);
    assert_eq!(
        r["small_packs_merged"].as_u64().unwrap() as usize,
        few,
        "{r}"
    );
    assert!(pack_count(&env.repo) <= 2, "one data, one tree pack");
    // Merged, they stay: one small pack of each kind gains nothing.
    let r = env.json(&["prune", "--repack-small"]);
    assert_eq!(r["small_packs_merged"], 0, "{r}");

    for i in 3..12 {
        backup_once_more(i);
    }
    let many = pack_count(&env.repo);
    assert!(many >= 10, "{many}");
    let dry = env.json(&["prune", "--dry-run"]);
    assert_eq!(
        dry["small_packs_merged"].as_u64().unwrap() as usize,
        many,
        "{dry}"
    );
    assert_eq!(pack_count(&env.repo), many);
    let r = env.json(&["prune"]);
    assert_eq!(
        r["small_packs_merged"].as_u64().unwrap() as usize,
        many,
        "{r}"
    );
    assert_eq!(r["unused_blobs"], 0, "{r}");
    assert!(pack_count(&env.repo) <= 2, "{r}");
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
    let text = env.ok(&["prune", "--dry-run"]);
    assert!(!text.contains("merged"), "nothing left to merge: {text}");
}

#[test]
fn prune_merges_the_smallest_packs_that_fit_max_repack_size() {
    // With more live data in small packs than --max-repack-size allows,
    // prune merged none of them and named them "left for later" at every
    // run, so they piled up for good under a tight budget.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..15u64 {
        // Random, so each backup leaves a data pack of about 4 KiB.
        write_random(&src.join(format!("f{i}")), 4096 + 64 * i as usize, 100 + i);
        env.backup(&[&src]);
    }
    let before = pack_count(&env.repo);
    assert!(before >= 30, "a data and a tree pack per backup: {before}");
    let dry = env.json(&["prune", "--max-repack-size", "20K", "--dry-run"]);
    assert!(dry["bytes_added"].as_u64().unwrap() <= 20 << 10, "{dry}");
    let r = env.json(&["prune", "--max-repack-size", "20K"]);
    assert_eq!(r["small_packs_merged"], dry["small_packs_merged"], "{r}");
    let merged = r["small_packs_merged"].as_u64().unwrap() as usize;
    assert!(merged >= 2, "the smallest that fit are merged: {r}");
    assert!(
        r["packs_left_for_later"].as_u64().unwrap() >= 1,
        "the rest wait for the next prune: {r}"
    );
    assert!(pack_count(&env.repo) < before, "{r}");
    // Each prune makes fewer packs, until too few small ones are left.
    let mut last = pack_count(&env.repo);
    for _ in 0..10 {
        let r = env.json(&["prune", "--max-repack-size", "20K"]);
        if r["small_packs_merged"] == 0 {
            break;
        }
        let now = pack_count(&env.repo);
        assert!(now < last, "merging made no fewer packs: {r}");
        last = now;
    }
    let r = env.json(&["prune", "--max-repack-size", "20K"]);
    assert_eq!(r["small_packs_merged"], 0, "{r}");
    let (data, trees) = packs_by_kind(&env);
    let many = cairn_engine::prune::SMALL_PACKS_WORTH_MERGING;
    assert!(
        data < many && trees < many,
        "fewer than {many} small packs of each kind are left: {data} of data, {trees} of trees"
    );
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
}

/// How many packs hold data and how many hold trees, as `cat pack` says.
fn packs_by_kind(env: &Env) -> (usize, usize) {
    let (mut data, mut trees) = (0, 0);
    for e in walkdir::WalkDir::new(env.repo.join("data")) {
        let e = e.unwrap();
        if !e.file_type().is_file() || e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let out = env.ok(&["cat", "pack", &e.file_name().to_string_lossy()]);
        let blobs: serde_json::Value = serde_json::from_str(&out).unwrap();
        match blobs[0]["blob_type"].as_u64() {
            Some(0) => data += 1,
            Some(1) => trees += 1,
            other => panic!("blob type {other:?}: {blobs}"),
        }
    }
    (data, trees)
}

fn setup_history(env: &Env) -> (PathBuf, Vec<String>) {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for round in 0..4u64 {
        for i in 0..6u64 {
            write_random(&src.join(format!("f{i}")), 3 << 20, round * 10 + i);
        }
        ids.push(
            env.backup(&[&src])["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    (src, ids)
}

/// [`setup_history`] with all but the newest snapshot forgotten (data for
/// prune to delete), and a source of `files` random 32 MiB files that takes
/// a backup long enough to be caught running.
fn forgotten_history_and_big_source(
    env: &Env,
    files: u64,
    seed: u64,
) -> (PathBuf, Vec<String>, PathBuf) {
    let (src, ids) = setup_history(env);
    for id in &ids[..3] {
        drop_snapshot(env, id);
    }
    let big = env.path("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..files {
        write_random(&big.join(format!("g{i}")), 32 << 20, seed + i);
    }
    (src, ids, big)
}

#[test]
fn kill_9_at_random_points_of_prune() {
    for (round, delay_ms) in [5u64, 40, 90, 150, 250, 400].into_iter().enumerate() {
        let env = Env::new();
        let (src, ids) = setup_history(&env);
        // Keep the newest; the others are forgotten.
        for id in &ids[..3] {
            drop_snapshot(&env, id);
        }
        let mut child = env
            .cmd()
            .args(["prune", "--max-unused", "0%"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();

        // Packs it dropped from the index but had not deleted yet are
        // its leftovers, which the next prune removes.
        let report = env.assert_check_clean();
        for w in report["warnings"].as_array().unwrap() {
            let w = w.as_str().unwrap();
            if w.contains("is not in any index") {
                assert!(w.contains("`cairn prune` removes it if not"), "{w}");
            }
        }
        let t = env.path(&format!("t{round}"));
        env.restore(&ids[3], &t);
        assert_same_tree(&src, &restored(&t, &src));
        env.ok(&["prune"]);
        assert_check_clean(&env);
        env.backup(&[&src]);
    }
}

#[test]
fn prune_refuses_while_a_backup_runs_and_two_backups_coexist() {
    let env = Env::new();
    let big = env.path("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..4 {
        write_random(&big.join(format!("f{i}")), 32 << 20, 200 + i);
    }
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    write_random(&other.join("x"), 64 << 20, 300);

    // Each backup is stopped once its lock is in place, so prune meets both
    // locks whatever the machine's speed (and no backup meets prune's
    // short-lived exclusive lock, which would refuse it).
    let mut b1 = backup_holding_its_lock(&env, &big);
    kill("-STOP", b1.id());
    let mut b2 = backup_holding_its_lock(&env, &other);
    kill("-STOP", b2.id());
    // While they hold their locks, prune must refuse (exit 11), and say
    // what to do.
    let err = env.fails(&["prune"], 11);
    assert!(
        err.contains("--retry-lock") && err.contains("cairn unlock"),
        "{err}"
    );
    kill("-CONT", b1.id());
    kill("-CONT", b2.id());
    assert!(b1.wait().unwrap().success());
    assert!(b2.wait().unwrap().success());
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    env.ok(&["prune"]);
    assert_check_clean(&env);
    // Each source's own newest snapshot (`latest --include` restored
    // nothing from the other source's, and passed).
    for src in [&big, &other] {
        let t = env.path(&format!("r-{}", src.file_name().unwrap().to_string_lossy()));
        env.ok(&[
            "restore",
            "latest",
            "--path",
            src.to_str().unwrap(),
            "--target",
            t.to_str().unwrap(),
        ]);
        assert_same_tree(src, &restored(&t, src));
    }
}

/// Prunes with a lock stale age of 6 s (so that it takes a lock unrefreshed
/// that long for stale), which must succeed.
fn prune_with_stale_age_6s(env: &Env) {
    let out = env
        .cmd()
        .env("CAIRN_TEST_LOCK_STALE_SECS", "6")
        .args(["prune"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stalled_backup_whose_lock_went_stale_does_not_commit() {
    let env = Env::new();
    let (src, _, big) = forgotten_history_and_big_source(&env, 6, 500);
    let packs_before = pack_count(&env.repo);
    let mut backup = env
        .cmd()
        .env("CAIRN_TEST_LOCK_STALE_SECS", "6")
        .args(["backup", big.to_str().unwrap()])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pack_count(&env.repo) <= packs_before {
        assert!(
            Instant::now() < deadline && backup.try_wait().unwrap().is_none(),
            "backup ended too early"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = backup.id();
    kill("-STOP", pid);
    // Long enough a stale age that a loaded machine's late lock refresh (due
    // every half of it) does not stop the prune too.
    std::thread::sleep(Duration::from_secs(7));
    // The stopped backup's lock is stale now: prune goes ahead (and removes it).
    prune_with_stale_age_6s(&env);
    kill("-CONT", pid);
    let out = backup.wait_with_output().unwrap();
    // A backup that lost its lock must not commit.
    exits(&out, 11);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn a_prune_whose_lock_was_judged_stale_deletes_nothing() {
    // A backup judged the prune's lock stale (its clock runs ahead, or the
    // prune's machine slept): it removes that lock, deduplicates against
    // data the prune is about to drop, and commits. The prune must notice
    // its lock is gone and stop before it deletes anything.
    let env = Env::uninit();
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    let again = env.path("again");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&again).unwrap();
    for i in 0..200 {
        write_random(&src.join(format!("f{i:03}")), 20_000, 500 + i);
    }
    let first = env.backup(&[&src]);
    for i in (0..200).step_by(2) {
        let name = format!("f{i:03}");
        fs::rename(src.join(&name), again.join(&name)).unwrap();
    }
    env.backup(&[&src]);
    drop_snapshot(&env, first["snapshot_id"].as_str().unwrap());

    // Its lock stays fresh by its own reckoning (stale age 600 s); reading
    // each pack to repack takes 4 s.
    let prune = env
        .cmd()
        .env("CAIRN_TEST_LOCK_STALE_SECS", "600")
        .env("CAIRN_TEST_FAULTS", "slow-read=pack:4000")
        // One pack read at a time: the prune outlasts the backup below by
        // seconds on any number of CPUs.
        .env("RAYON_NUM_THREADS", "1")
        .args(["prune", "--max-unused", "0%"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_a_lock(&env, "prune");
    std::thread::sleep(Duration::from_millis(3500));
    let b = env
        .cmd()
        .env("CAIRN_TEST_LOCK_STALE_SECS", "3")
        .args(["--json", "backup", again.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let mut prune = prune;
    assert!(
        prune.try_wait().unwrap().is_none(),
        "the prune ended before the backup: the test shows nothing"
    );
    let out = prune.wait_with_output().unwrap();
    let err = exits(&out, 11);
    assert!(err.contains("lock lost"), "{err}");
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&again, &restored(&t, &again));
    // The next prune, with nobody in its way, completes.
    env.ok(&["prune", "--max-unused", "0%"]);
    assert_check_clean(&env);
}

/// `recover` stalled between saving its trees and writing its snapshot for
/// longer than its lock's stale age: a prune meanwhile takes the lock for
/// stale and deletes those trees, unreferenced yet. The snapshot, written
/// after all, is taken back (exit 11) instead of naming deleted trees.
#[test]
fn a_stalled_recover_whose_lock_went_stale_does_not_commit() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"kept").unwrap();
    env.backup(&[&src]);
    fs::write(src.join("b"), b"forgotten").unwrap();
    let second = env.backup(&[&src]);
    env.ok(&["forget", second["snapshot_id"].as_str().unwrap()]);
    // Its third write is the snapshot (after the tree pack and its index
    // file); the lock is not refreshed meanwhile.
    let recover = env
        .cmd()
        .env("CAIRN_TEST_LOCK_STALE_SECS", "6")
        .env(
            "CAIRN_TEST_FAULTS",
            "stall-write=3:11000,stall-refresh=9000",
        )
        .arg("recover")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    prune_with_stale_age_6s(&env);
    let out = recover.wait_with_output().unwrap();
    exits(&out, 11);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert_check_clean(&env);
}

/// `hold` stalled before it writes the held record for longer than its
/// lock's stale age: a `forget` and prune meanwhile delete the snapshot and
/// its data. The held record, written after all, is taken back (exit 11);
/// it named data that was gone, and `hold` said it had succeeded.
#[test]
fn a_stalled_hold_whose_lock_went_stale_does_not_commit() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("a"), 200_000, 8);
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("b"), b"stays").unwrap();
    env.backup(&[&other]);
    let id = env.backup(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Its first write is the held record; the lock is not refreshed meanwhile.
    let hold = env
        .cmd()
        .env("CAIRN_TEST_LOCK_STALE_SECS", "6")
        .env(
            "CAIRN_TEST_FAULTS",
            "stall-write=1:11000,stall-refresh=9000",
        )
        .args(["hold", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let out = env
        .cmd()
        .env("CAIRN_TEST_LOCK_STALE_SECS", "6")
        .args(["forget", &id])
        .output()
        .unwrap();
    exits(&out, 0);
    prune_with_stale_age_6s(&env);
    let out = hold.wait_with_output().unwrap();
    exits(&out, 11);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert_check_clean(&env);
}

/// Two copies of the same data (a backup stored again while its index file
/// was out of the way), one of them truncated: prune keeps the intact copy
/// and leaves the damaged pack alone for check and repair, instead of
/// keeping the truncated copy and deleting the good one.
#[test]
fn prune_never_keeps_a_truncated_copy_over_an_intact_one() {
    let env = Env::new();
    let (src, data) = stored_twice(&env);
    fs::File::options()
        .write(true)
        .open(&data[0])
        .unwrap()
        .set_len(2_000_000)
        .unwrap();

    let out = env.run(&["prune"]);
    assert_no_panic(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("does not have the size the index records"),
        "{err}"
    );
    // The intact copy stays; the truncated one, whose used blobs it holds,
    // goes with its index entries.
    assert!(data[1].exists(), "the intact data pack was deleted");
    assert!(!data[0].exists(), "the truncated pack was kept");
    assert_check_clean(&env);
    let target = env.path("t");
    env.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));

    // A truncated pack holding the only copy of used data: prune refuses.
    fs::File::options()
        .write(true)
        .open(&data[1])
        .unwrap()
        .set_len(2_000_000)
        .unwrap();
    let err = env.fails(&["prune"], 1);
    assert!(err.contains("no intact indexed pack holds"), "{err}");
    // And says what gets past it: repair index keeps the pack's entries,
    // repair snapshots finds the blobs still indexed.
    let name = data[1].file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(&format!("`cairn repair packs {name}`")),
        "{err}"
    );
    assert!(data[1].exists());
}

#[test]
fn prune_refusing_over_a_missing_pack_names_the_repairs_that_get_past_it() {
    // It named `repair snapshots --forget`, which refuses while the index
    // names packs that are gone.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("a.bin"), 3_000_000, 5);
    fs::write(src.join("b"), b"small").unwrap();
    env.backup(&[&src]);
    let pack = largest_pack(&env.repo);
    fs::remove_file(&pack).unwrap();
    let err = env.fails(&["prune"], 1);
    assert!(err.contains("no intact indexed pack holds"), "{err}");
    let short = &pack.file_name().unwrap().to_str().unwrap()[..8];
    let advice = format!("`cairn repair packs {short}`");
    assert!(err.contains(&advice), "{err}");
    // check reads every pack there is: it does not say some went unread.
    let err = env.fails(&["check", "--read-data"], 1);
    assert!(err.contains("missing from the repository"), "{err}");
    assert!(err.contains("the others restore whole"), "{err}");
    // The advice, followed, gets prune going again.
    env.ok(&["repair", "packs", short]);
    env.ok(&["repair", "snapshots", "--forget"]);
    env.ok(&["prune"]);
    assert_check_clean(&env);
}

#[test]
fn prune_keeps_the_intact_copy_of_a_blob_stored_twice_not_a_damaged_one() {
    // With one byte of a copy flipped, prune deleted the intact pack as
    // redundant and kept the damaged one: the data was lost for good.
    let flip = |pack: &Path| flip_byte(pack, 500_000);
    for damaged in 0..2 {
        let env = Env::new();
        let (src, data) = stored_twice(&env);
        flip(&data[damaged]);
        let out = env.run(&["prune"]);
        assert_no_panic(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        // The lower ID wins a tie: that copy is the one read and found out.
        if damaged == 0 {
            assert!(err.contains("holds a damaged copy"), "{err}");
        }
        assert!(
            data[1 - damaged].exists(),
            "the intact data pack was deleted"
        );
        assert!(!data[damaged].exists(), "the damaged pack was kept");
        env.ok(&["check", "--read-data"]);
        let target = env.path("t");
        env.restore("latest", &target);
        assert_same_tree(&src, &restored(&target, &src));
    }

    // Both copies of one blob damaged: nothing to keep, so nothing is
    // deleted.
    let env = Env::new();
    let (_, data) = stored_twice(&env);
    let entries = |p: &Path| -> Vec<serde_json::Value> {
        let name = p.file_name().unwrap().to_str().unwrap();
        serde_json::from_str(&env.ok(&["cat", "pack", name])).unwrap()
    };
    let blob = entries(&data[0])[0]["id"].clone();
    for p in &data {
        let e = entries(p).into_iter().find(|e| e["id"] == blob).unwrap();
        let middle = e["offset"].as_u64().unwrap() + e["length"].as_u64().unwrap() / 2;
        flip_byte(p, middle as usize);
    }
    let err = env.fails(&["prune"], 1);
    assert!(err.contains("no intact indexed pack holds"), "{err}");
    assert!(err.contains("cairn repair packs"), "{err}");
    assert!(data.iter().all(|p| p.exists()));
}

#[test]
fn prune_with_damaged_copies_keeps_to_max_repack_size_and_names_damage_it_meets() {
    // A pack holding a damaged copy was repacked whatever the budget:
    // `--max-repack-size 0` copied half a megabyte on what may be a full
    // disk. Readers go to the intact copy, so the pack may stay.
    let env = Env::new();
    let (src, data) = stored_twice(&env);
    // A different blob damaged in each: both packs hold a damaged copy.
    let entries = |p: &Path| -> Vec<serde_json::Value> {
        let name = p.file_name().unwrap().to_str().unwrap();
        serde_json::from_str(&env.ok(&["cat", "pack", name])).unwrap()
    };
    let ids: Vec<serde_json::Value> = entries(&data[0]).iter().map(|e| e["id"].clone()).collect();
    for (pack, id) in data.iter().zip(&ids) {
        let e = entries(pack).into_iter().find(|e| e["id"] == *id).unwrap();
        let middle = e["offset"].as_u64().unwrap() + e["length"].as_u64().unwrap() / 2;
        flip_byte(pack, middle as usize);
    }
    let r = env.json(&["prune", "--max-repack-size", "0"]);
    assert_eq!(r["packs_repacked"], 0, "{r}");
    // What it wrote is index files only.
    assert!(r["bytes_added"].as_u64().unwrap() < 4096, "{r}");
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));

    // Damage met while repacking (no copy elsewhere, no check before):
    // a raw "authentication failed" with nothing to do about it.
    let env = Env::uninit();
    env.ok(&["init", "--pack-size-mib", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40 {
        write_random(&src.join(format!("f{i:02}")), 30_000, 300 + i);
    }
    let first = env.backup(&[&src]);
    for i in 1..40 {
        fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    env.backup(&[&src]);
    drop_snapshot(&env, first["snapshot_id"].as_str().unwrap());
    let kept = blob_of(&env, "latest", &src.join("f00"));
    let data_packs: Vec<PathBuf> = walkdir::WalkDir::new(env.repo.join("data"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.is_file())
        .collect();
    let (pack, entry) = data_packs
        .iter()
        .find_map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            let entries: Vec<serde_json::Value> =
                serde_json::from_str(&env.ok(&["cat", "pack", name])).unwrap();
            let e = entries.into_iter().find(|e| e["id"] == kept.as_str())?;
            Some((p.clone(), e))
        })
        .unwrap();
    let middle = entry["offset"].as_u64().unwrap() + entry["length"].as_u64().unwrap() / 2;
    flip_byte(&pack, middle as usize);
    let err = env.fails(&["prune"], 1);
    assert!(err.contains("cairn repair packs"), "{err}");
    assert!(pack.exists());
}

#[test]
fn prune_refuses_to_empty_a_repository_whose_snapshots_are_gone() {
    // Every pack would be unused: far more often a listing gone wrong (a
    // missing `snapshots/`, an S3 reply that is not a listing) or a
    // retention policy that outran an offline machine than a wish.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("f"), 1 << 20, 77);
    let id = env.backup(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let packs = pack_count(&env.repo);
    // A missing snapshots/ directory is damage, not "no snapshots".
    fs::rename(env.repo.join("snapshots"), env.path("snapshots.bak")).unwrap();
    let err = env.fails(&["prune"], 1);
    assert!(err.contains("snapshots/"), "{err}");
    assert_eq!(pack_count(&env.repo), packs);
    fs::rename(env.path("snapshots.bak"), env.repo.join("snapshots")).unwrap();
    // Every snapshot forgotten: refused too.
    drop_snapshot(&env, &id);
    let err = env.fails(&["prune"], 1);
    assert!(err.contains("no snapshots"), "{err}");
    assert_eq!(pack_count(&env.repo), packs);
}

/// A process ID no process on this host has, below `pid_max`.
fn unused_pid() -> u32 {
    let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (1000..max - 1)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("a free process ID")
}

#[test]
fn a_backup_in_another_pid_namespace_of_this_host_keeps_its_lock() {
    // A container shares the host name with its host (or another
    // container) but numbers its processes apart: its backup's PID may not
    // exist here. That must not make its live lock stale, or a prune here
    // deletes data under it.
    assert!(
        is_root(),
        "this test makes a PID namespace: run the suite as root (tests/run-all.sh)"
    );
    let env = Env::new();
    let (src, ids, big) = forgotten_history_and_big_source(&env, 4, 700);
    let pid = unused_pid();
    let template = env.cmd();
    let mut cmd = std::process::Command::new("unshare");
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    // In the new namespace the shell is PID 1; it sets the namespace's last
    // PID so that the backup it starts gets `pid`.
    cmd.args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg(format!(
            "echo {} > /proc/sys/kernel/ns_last_pid && \"$0\" \"$@\"",
            pid - 1
        ))
        .arg(cairn_bin())
        .args(["backup", big.to_str().unwrap()])
        .process_group(0);
    let backup = cmd.spawn().unwrap();
    let group = format!("-{}", backup.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while lock_count(&env.repo) == 0 {
        assert!(Instant::now() < deadline, "the backup took no lock");
        std::thread::sleep(Duration::from_millis(2));
    }
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, "--", &group])
                .status()
                .unwrap()
                .success()
        )
    };
    // Stopped, the backup holds a fresh lock however long prune takes.
    signal("-STOP");
    let out = env.run(&["prune"]);
    signal("-CONT");
    // Prune must see the lock of a backup in another PID namespace as live.
    let err = exits(&out, 11);
    assert!(err.contains(&format!("PID {pid}")), "{err}");
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    env.ok(&["prune"]);
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&big, &restored(&t, &big));
    let t2 = env.path("t2");
    env.restore(&ids[3], &t2);
    assert_same_tree(&src, &restored(&t2, &src));
}

#[test]
fn unlock_removes_stale_locks_and_with_remove_all_live_ones() {
    let env = Env::new();
    let (src, _, big) = forgotten_history_and_big_source(&env, 4, 800);
    // A backup killed while it holds its lock leaves the lock behind.
    let mut killed = backup_holding_its_lock(&env, &big);
    kill("-KILL", killed.id());
    killed.wait().unwrap();
    assert_eq!(lock_count(&env.repo), 1);
    let out = env.ok(&["unlock"]);
    assert!(out.contains("1 lock(s) removed"), "{out}");
    assert_eq!(lock_count(&env.repo), 0);

    // A live lock (a stopped backup) is not stale: unlock keeps it and
    // prune still refuses; --remove-all removes it, and the backup, once
    // resumed, finds its lock gone and commits nothing.
    // Its input comes after a pause, so it is still at work when stopped
    // however slowly this test's own thread is scheduled.
    let before = lock_count(&env.repo);
    let stopped = env
        .cmd()
        .args([
            "backup",
            "--stdin-filename",
            "late",
            "--stdin-from-command",
            "--",
        ])
        .args(["sh", "-c", "sleep 5; head -c 1048576 /dev/urandom"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_locks(&env, "backup", before + 1);
    let pid = stopped.id();
    kill("-STOP", pid);
    let out = env.ok(&["unlock"]);
    assert!(out.contains("0 lock(s) removed"), "{out}");
    env.fails(&["prune"], 11);
    let v = env.json(&["unlock", "--remove-all"]);
    let removed = v["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{v}");
    assert!(
        removed[0].as_str().unwrap().contains(&format!("PID {pid}")),
        "{v}"
    );
    env.ok(&["prune"]);
    kill("-CONT", pid);
    let out = stopped.wait_with_output().unwrap();
    // A backup whose lock was removed must not commit.
    exits(&out, 11);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn forget_with_prune_frees_the_space_of_removed_snapshots() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3u64 {
        write_random(&src.join("data"), 6 << 20, 900 + i);
        env.ok(&[
            "backup",
            src.to_str().unwrap(),
            "--time",
            &format!("2026-0{}-01 12:00:00", i + 1),
        ]);
    }
    let before = files_size(&env.repo);
    // A dry run's prune counts what the forget would have removed as gone.
    let dry = env.json(&["forget", "--keep-last", "1", "--prune", "--dry-run"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["snapshots"], 1, "{dry}");
    assert!(dry["bytes_freed"].as_i64().unwrap() >= 11 << 20, "{dry}");
    assert_eq!(files_size(&env.repo), before);
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert!(
        before - files_size(&env.repo) >= 11 << 20,
        "forget --prune freed too little"
    );
    // Nothing more to remove: no prune (and no exclusive lock), as restic.
    let out = env
        .cmd()
        .args(["forget", "--keep-last", "1", "--prune", "--json"])
        .output()
        .unwrap();
    exits(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not pruning"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn prune_removes_leftovers_of_interrupted_writes() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.backup(&[&src]);
    let old = env
        .repo
        .join(format!("data/ab/.tmp-{}-12345678", "ab".repeat(32)));
    let fresh = env
        .repo
        .join(format!("index/.tmp-{}-87654321", "ca".repeat(32)));
    fs::write(&old, b"half a pack").unwrap();
    fs::write(&fresh, b"being written").unwrap();
    // A repository made in a directory that held the user's files: theirs
    // are not leftovers, whatever their names.
    let theirs = env.repo.join("docs/.tmp-draft.txt");
    fs::create_dir(env.repo.join("docs")).unwrap();
    fs::write(&theirs, b"the only copy").unwrap();
    let two_hours_ago =
        filetime::FileTime::from_unix_time(filetime::FileTime::now().unix_seconds() - 7200, 0);
    filetime::set_file_mtime(&old, two_hours_ago).unwrap();
    filetime::set_file_mtime(&theirs, two_hours_ago).unwrap();
    // check counts the old one (a warning, not an error); a dry run
    // counts it and leaves it.
    let out = env.run(&["check"]);
    let err = exits(&out, 0);
    assert!(
        err.contains("warning: 1 leftovers of interrupted writes (temporary files, unfinished uploads) are older than 1h"),
        "{err}"
    );
    let dry = env.json(&["prune", "--dry-run"]);
    assert_eq!(dry["temporaries_removed"], 1, "{dry}");
    assert!(old.exists(), "a dry run removes nothing");
    let r = env.json(&["prune"]);
    assert_eq!(r["temporaries_removed"], 1, "{r}");
    assert!(!old.exists(), "an old leftover is removed");
    assert_eq!(fs::read(&theirs).unwrap(), b"the only copy");
    assert!(
        fresh.exists(),
        "a write that may still be in progress is left alone"
    );
    assert_check_clean(&env);
}

/// The names of the repository's index files.
fn index_files(env: &Env) -> Vec<String> {
    fs::read_dir(env.repo.join("index"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

#[test]
fn prune_on_a_full_disk_frees_whole_packs_before_it_repacks() {
    assert!(
        is_root(),
        "this test mounts a small tmpfs: run the suite as root (tests/run-all.sh)"
    );
    let mut env = Env::uninit();
    let (disk, _tmpfs) = small_disk(&env, "40m");
    env.repo = disk.join("repo");
    env.ok(&["init", "--pack-size-mib", "4"]);
    // A big file backed up alone fills packs of its own, which go whole.
    let big = env.path("big");
    fs::create_dir_all(&big).unwrap();
    write_random(&big.join("a"), 12 << 20, 1);
    let first = env.backup(&[&big])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Small files whose next version drops half of them: their pack is
    // then half unused (incompressible, so a repack copies 512 KiB).
    let src = env.path("src");
    fs::create_dir_all(src.join("s")).unwrap();
    for i in 0..64 {
        write_random(&src.join(format!("s/{i}")), 16 << 10, 100 + i);
    }
    let second = env.backup(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..32 {
        fs::remove_file(src.join(format!("s/{i}"))).unwrap();
    }
    write_random(&src.join("b"), 6 << 20, 2);
    env.backup(&[&src]);
    env.ok(&["forget", &first, &second]);

    // A dry run repacking all it may, within a budget.
    let within = |budget: &str| {
        [
            "prune",
            "--dry-run",
            "--max-unused",
            "0",
            "--max-repack-size",
            budget,
        ]
        .map(String::from)
    };
    // A repack budget keeps the partly used packs for later.
    let dry = env.json(&within("0"));
    assert_eq!(dry["packs_repacked"], 0, "{dry}");
    assert!(dry["packs_left_for_later"].as_u64().unwrap() >= 1, "{dry}");
    assert!(dry["packs_deleted"].as_u64().unwrap() >= 2, "{dry}");
    // A budget below a pack's live data is never enough: said so, with
    // the least that is, and not "left for a later prune".
    let out = env.ok(&within("100K"));
    assert!(!out.contains("left for a later prune"), "{out}");
    let needed = out
        .split("need --max-repack-size ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{out}"));
    let dry = env.json(&within(needed));
    assert!(
        dry["packs_repacked"].as_u64().unwrap() >= 1,
        "{needed}: {dry}"
    );

    // Too little room for the repack's new pack until whole packs are gone.
    let originals = index_files(&env);
    let filler = fill_leaving(&disk, 256 << 10);
    let r = env.json(&["prune", "--max-unused", "0"]);
    assert!(r["packs_deleted"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["packs_left_for_later"], 0, "{r}");
    fs::remove_file(&filler).unwrap();
    // Every index file it left (the repacked blobs' and the kept packs')
    // names the original files as superseded, though the interim step
    // deleted them: a sync elsewhere that loaded one before the prune
    // absorbed it after (its rows name deleted packs, which a backup
    // sharing that cache reused).
    let now = index_files(&env);
    assert!(now.len() >= 2, "{now:?}");
    for f in &now {
        let file: serde_json::Value = serde_json::from_str(&env.ok(&["cat", "index", f])).unwrap();
        let named = file["supersedes"].to_string();
        for o in &originals {
            assert!(
                named.contains(o.as_str()),
                "{f} does not supersede {o}: {named}"
            );
        }
    }
    env.assert_check_clean();
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &restored(&out, &src));
    // Nothing left to do.
    let again = env.json(&["prune", "--max-unused", "0"]);
    assert_eq!(again["packs_repacked"], 0, "{again}");
    assert_eq!(again["packs_deleted"], 0, "{again}");
}

#[test]
fn prune_announces_only_the_phases_it_goes_through() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for (dir, seed) in [(&a, 1), (&b, 2)] {
        fs::create_dir_all(dir).unwrap();
        write_random(&dir.join("f"), 4 << 20, seed);
    }
    let sa = env.backup(&[&a]);
    env.backup(&[&b]);
    drop_snapshot(&env, sa["snapshot_id"].as_str().unwrap());
    // Whole packs go, none is repacked: nothing is deleted before a repack.
    let out = env.run(&["prune", "--max-unused", "100%"]);
    assert_no_panic(&out);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let phases: Vec<&str> = err.lines().collect();
    assert_eq!(
        phases,
        [
            "loading index",
            "finding used blobs",
            "rewriting index",
            "deleting packs"
        ],
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(", repack 0,"), "{stdout}");
    assert_check_clean(&env);
}

#[test]
fn retry_lock_waits_for_the_holder_and_gives_up_when_told() {
    let env = Env::new();
    let big = env.path("big");
    fs::create_dir_all(&big).unwrap();
    write_random(&big.join("f"), 64 << 20, 400);
    // A backup stopped with its lock in place: prune cannot have the lock.
    let mut backup = Killed(backup_holding_its_lock(&env, &big));
    kill("-STOP", backup.0.id());
    let started = Instant::now();
    let err = env.fails(&["prune", "--retry-lock", "2s"], 11);
    assert!(started.elapsed() >= Duration::from_secs(2), "{err}");
    assert!(
        err.contains("waiting up to 2s for the repository: shared lock held by PID"),
        "{err}"
    );
    assert!(err.contains("(waited "), "{err}");
    assert!(!err.contains("--retry-lock DURATION"), "{err}");
    // Without --retry-lock, it fails at once, waits for nothing and says
    // how to.
    let err = env.fails(&["prune"], 11);
    assert!(!err.contains("waiting up to"), "{err}");
    assert!(err.contains("--retry-lock DURATION"), "{err}");
    // A prune that may wait long enough goes on once the backup is done.
    let log = env.path("prune.err");
    let mut prune = Killed(
        env.cmd()
            .args(["prune", "--retry-lock", "10m"])
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    kill("-CONT", backup.0.id());
    assert!(backup.0.wait().unwrap().success());
    let status = prune.0.wait().unwrap();
    let err = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("waiting up to 10m for the repository"),
        "{err}"
    );
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert_check_clean(&env);
}

/// A file whose bytes are a tree's (kept output of `cairn cat blob TREE`,
/// or made so on purpose) has that tree's ID. Prune took the file's
/// content, met first, for the tree already walked, and deleted what only
/// that tree leads to, with check passing before and exit 0.
#[test]
fn a_file_holding_a_trees_bytes_does_not_hide_that_trees_data_from_prune() {
    let env = Env::new();
    let first = env.path("first");
    fs::create_dir_all(first.join("d")).unwrap();
    write_random(&first.join("d/u"), 3000, 7);
    env.backup(&[&first]);
    let tree = subtree_of(&env, &first.join("d"));
    let bytes = env.run(&["cat", "blob", &tree]);
    assert!(bytes.status.success());
    let second = env.path("second");
    fs::create_dir_all(&second).unwrap();
    fs::write(second.join("tree-bytes"), &bytes.stdout).unwrap();
    env.backup(&[&second]);
    // One stored blob, used both ways: stats counted it twice.
    let used = env.json(&["prune", "--dry-run"])["used_blobs"].clone();
    let stats = env.json(&["stats", "--mode", "raw-data"]);
    assert_eq!(stats["total_blob_count"], used, "{stats}");
    env.ok(&["prune"]);
    env.ok(&["check", "--read-data"]);
    let target = env.path("r");
    env.ok(&[
        "restore",
        "latest",
        "--path",
        first.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_same_tree(&first, &restored(&target, &first));
}
