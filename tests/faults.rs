//! Fault injection: failing, full, lying and bit-flipping storage under
//! backup, prune, restore and check. Whatever fails, the repository stays
//! consistent and the next run succeeds.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;

fn tree(env: &Env, seed: u64) -> PathBuf {
    let src = env.path(&format!("src{seed}"));
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..3 {
        write_random(&src.join(format!("d/f{i}")), 6 << 20, seed * 10 + i);
    }
    fs::write(src.join("text"), "some text\n".repeat(5000)).unwrap();
    src
}

fn faulty(env: &Env, spec: &str, args: &[&str]) -> std::process::Output {
    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", spec)
        .args(args)
        .output()
        .unwrap();
    assert_no_panic(&out);
    out
}

fn assert_check_clean(env: &Env) {
    env.assert_check_clean();
}

#[test]
fn failed_writes_at_every_point_of_a_backup_leave_a_consistent_repository() {
    let env = Env::new();
    let first = tree(&env, 1);
    env.backup(&[&first]);
    let second = tree(&env, 2);
    // A backup of `second` writes a handful of objects; fail each in turn.
    for n in 1..=6 {
        let out = faulty(
            &env,
            &format!("fail-write={n}"),
            &["backup", second.to_str().unwrap()],
        );
        if out.status.success() {
            break; // fewer writes than n: the backup completed
        }
        let err = exits(&out, 1);
        assert!(err.contains("injected I/O error"));
        assert_check_clean(&env);
        let t = env.path(&format!("r{n}"));
        env.restore("latest", &t);
        assert_same_tree(&first, &restored(&t, &first));
    }
    env.backup(&[&second]);
    assert_check_clean(&env);
}

#[test]
fn full_disk_is_a_clear_error_and_nothing_is_lost() {
    let env = Env::new();
    let first = tree(&env, 3);
    env.backup(&[&first]);
    let second = tree(&env, 4);
    let out = faulty(
        &env,
        "enospc-write=2",
        &["backup", second.to_str().unwrap()],
    );
    let err = exits(&out, 1);
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert_check_clean(&env);
    env.backup(&[&second]);
    assert_check_clean(&env);
}

#[test]
fn a_command_whose_output_cannot_be_stored_is_stopped_instead_of_hanging_the_backup() {
    let env = Env::new();
    // An endless stream that does not deduplicate: the first pack written
    // fails while the command is still writing into a pipe nobody reads.
    let mut cmd = env.cmd();
    cmd.env("CAIRN_TEST_FAULTS", "enospc-write=1").args([
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "endless",
        "--",
        "cat",
        "/dev/urandom",
    ]);
    let out = output_within(cmd, 120);
    let err = exits(&out, 1);
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
    assert_check_clean(&env);
}

#[test]
fn a_store_that_keeps_part_of_a_write_is_caught_while_the_data_is_in_memory() {
    let env = Env::new();
    let src = tree(&env, 5);
    // The first write of a backup is a data pack; the store keeps half of
    // it and says nothing. The size check after the write sees it, and the
    // pack is written again.
    let out = faulty(&env, "truncate-write=1", &["backup", src.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["check", "--read-data"]);
    let target = env.path("restored");
    env.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn a_store_that_keeps_losing_data_stops_the_backup_and_leaves_nothing_behind() {
    let env = Env::new();
    let src = tree(&env, 5);
    let out = faulty(&env, "truncate-from=1", &["backup", src.to_str().unwrap()]);
    let err = exits(&out, 1);
    assert!(
        err.contains("the store kept") && err.contains("data/"),
        "{err}"
    );
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
    assert_check_clean(&env);
    // Nothing short was left for a later backup to rely on.
    let packs = walkdir::WalkDir::new(env.repo.join("data"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .count();
    assert_eq!(packs, 0);
    env.backup(&[&src]);
    env.ok(&["check", "--read-data"]);
}

#[test]
fn bit_flips_on_read_are_detected_never_restored() {
    let env = Env::new();
    let src = tree(&env, 6);
    env.backup(&[&src]);
    let t = env.path("t");
    let out = faulty(
        &env,
        "flip-read=pack",
        &["restore", "latest", "--target", t.to_str().unwrap()],
    );
    let err = exits(&out, 1);
    assert!(err.contains("authentication failed"));
    // Whatever was written, no damaged file sits at its final name.
    for e in walkdir::WalkDir::new(&t)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
    {
        let rel = e.path().strip_prefix(restored(&t, &src)).unwrap();
        assert!(
            files_equal(e.path(), &src.join(rel)),
            "{} restored with wrong content",
            rel.display()
        );
    }
    let out = faulty(&env, "flip-read=pack", &["check", "--read-data"]);
    exits(&out, 1);
    let out = faulty(&env, "flip-read=snapshot", &["snapshots"]);
    let err = exits(&out, 1);
    assert!(err.contains("snapshot"));
    // The repository itself is fine.
    assert_check_clean(&env);
}

#[test]
fn failed_writes_during_prune_leave_a_consistent_repository() {
    let env = Env::new();
    let a = tree(&env, 7);
    let b = tree(&env, 8);
    let sa = env.backup(&[&a]);
    env.backup(&[&b]);
    fs::remove_file(
        env.repo
            .join("snapshots")
            .join(sa["snapshot_id"].as_str().unwrap()),
    )
    .unwrap();
    for n in 1..=4 {
        let out = faulty(
            &env,
            &format!("fail-write={n},stall-write=1:50"),
            &["prune", "--max-unused", "0%"],
        );
        if out.status.success() {
            break;
        }
        exits(&out, 1);
        assert_check_clean(&env);
    }
    env.ok(&["prune"]);
    assert_check_clean(&env);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_same_tree(&b, &restored(&t, &b));
}

#[test]
fn init_on_a_store_that_keeps_part_of_a_write_leaves_a_usable_repository_or_none() {
    // The first write of `init` is the key file: kept short once, it is
    // caught and written again, and the repository opens.
    let env = Env::uninit();
    let out = faulty(&env, "truncate-write=1", &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let src = tree(&env, 3);
    env.backup(&[&src]);
    env.ok(&["check", "--read-data"]);

    // A store that keeps every write short: `init` fails and leaves no key
    // file behind, so the next `init` is not refused.
    let env = Env::uninit();
    let out = faulty(&env, "truncate-from=1", &["init"]);
    let err = exits(&out, 1);
    assert!(
        err.contains("the store kept") && err.contains("keys/"),
        "{err}"
    );
    env.ok(&["init"]);
    env.ok(&["snapshots"]);
}

#[test]
fn a_config_the_store_keeps_short_is_written_again_or_the_old_one_put_back() {
    let env = Env::new();
    let src = tree(&env, 2);
    env.backup(&[&src]);
    // Kept short once: written again, and the change holds.
    let out = faulty(&env, "truncate-write=1", &["config", "append-only", "on"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        env.ok(&["config", "append-only"])
            .contains("append-only: on")
    );
    env.ok(&["config", "append-only", "off"]);
    // Kept short every time: the command fails, saying so, and the config
    // it would have replaced is back (the repository opens, unchanged).
    let before = std::fs::read(env.repo.join("config")).unwrap();
    let out = faulty(
        &env,
        "truncate-write=1,truncate-write=2",
        &["config", "append-only", "on"],
    );
    let err = exits(&out, 1);
    assert!(
        err.contains("the config was written with") && err.contains("is back in place"),
        "{err}"
    );
    assert_eq!(std::fs::read(env.repo.join("config")).unwrap(), before);
    assert!(
        env.ok(&["config", "append-only"])
            .contains("append-only: off")
    );
    env.ok(&["snapshots"]);
    assert_check_clean(&env);
}

#[test]
fn a_forget_whose_lock_went_stale_removes_no_more_snapshots() {
    // Its first deletion hangs past half the stale age (3 s here), its
    // refreshes too: others may have taken the lock for stale meanwhile
    // and run an exclusive command. It went on deleting all the same.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join("f"), format!("version {i}")).unwrap();
        env.backup(&[&src]);
    }
    let ids = snapshot_ids(&env);
    let out = env
        .cmd()
        .env("CAIRN_TEST_LOCK_STALE_SECS", "3")
        .env(
            "CAIRN_TEST_FAULTS",
            "stall-refresh=2500,stall-delete=1:4000",
        )
        .args(["forget", &ids[0], &ids[1]])
        .output()
        .unwrap();
    let err = exits(&out, 11);
    assert!(err.contains("lock lost"), "{err}");
    assert_eq!(snapshot_ids(&env).len(), 2);
    assert_check_clean(&env);
}

#[test]
fn a_lock_refresh_that_hangs_past_half_the_stale_age_loses_the_lock() {
    // A refresh whose write hangs (a suspend inside it, a hung mount) is
    // time without refresh: another process may have judged the lock stale
    // and deleted it meanwhile, so the backup must commit nothing. With a
    // stale age of 3 s the lock is refreshed every 0.5 s and lost after
    // 1.5 s without; the refresh hangs 2.5 s, the backup's first pack 4 s.
    let env = Env::new();
    let src = tree(&env, 3);
    let out = env
        .cmd()
        .env("CAIRN_TEST_LOCK_STALE_SECS", "3")
        .env("CAIRN_TEST_FAULTS", "stall-refresh=2500,stall-write=1:4000")
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    let err = exits(&out, 11);
    assert!(err.contains("lock lost"), "{err}");
    assert!(snapshot_ids(&env).is_empty());
    assert_check_clean(&env);
    env.backup(&[&src]);
}

#[test]
fn a_lock_whose_write_fails_after_it_landed_is_not_left_behind() {
    // An S3 answer lost on the way: the lock is stored, the command fails
    // and ends. The lock it left kept every prune off for half an hour.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    let out = faulty(&env, "lost-answer=lock", &["backup", src.to_str().unwrap()]);
    let err = exits(&out, 1);
    assert!(err.contains("injected I/O error after the write"), "{err}");
    let left: Vec<_> = fs::read_dir(env.repo.join("locks"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "locks left: {left:?}");
    env.ok(&["prune"]);
}
