//! End-to-end tests of retention: `forget` by policy and by ID, `--dry-run`,
//! `--json`, legal hold (`hold`, `hold --release`) and the refusals.
//!
//! Every command runs with TZ=UTC so that the calendar buckets of the
//! chosen `--time`s do not depend on the machine's time zone.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Output;

use common::*;
use serde_json::Value;

fn run(env: &Env, args: &[&str]) -> Output {
    let out = env
        .cmd()
        .env("TZ", "UTC")
        .args(args)
        .output()
        .expect("run cairn");
    assert_no_panic(&out);
    out
}

fn ok(env: &Env, args: &[&str]) -> String {
    let out = run(env, args);
    assert!(
        out.status.success(),
        "cairn {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn json(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(env, &all);
    let last = out.lines().last().expect("JSON output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad JSON {last:?}: {e}"))
}

/// Runs a command expected to fail with exit 1; returns stderr.
fn fails(env: &Env, args: &[&str]) -> String {
    let out = run(env, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "cairn {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Backs up a one-file directory as it is at `time`; returns the snapshot ID.
fn backup_at(env: &Env, time: &str, host: &str, tags: &[&str]) -> String {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), time).unwrap();
    let src = src.to_str().unwrap().to_string();
    let mut args = vec!["backup", &src, "--time", time, "--host", host];
    for t in tags {
        args.extend(["--tag", t]);
    }
    json(env, &args)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The snapshots in the repository: ID to `snapshots --json` entry.
fn listed(env: &Env) -> BTreeMap<String, Value> {
    json(env, &["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

fn ids(env: &Env) -> BTreeSet<String> {
    listed(env).into_keys().collect()
}

/// Snapshot objects stored (more than `ids` after an interrupted hold).
fn records(env: &Env) -> usize {
    fs::read_dir(env.repo.join("snapshots")).unwrap().count()
}

/// Twenty snapshots of one host and path: 14 days at noon, three earlier
/// mornings, and three months before; returns time to ID.
fn twenty(env: &Env) -> BTreeMap<&'static str, String> {
    let mut times = vec![
        "2024-10-15 12:00:00",
        "2024-11-15 12:00:00",
        "2024-12-15 12:00:00",
        "2025-01-10 09:00:00",
        "2025-01-13 06:00:00",
        "2025-01-14 08:00:00",
    ];
    let days = [
        "2025-01-01 12:00:00",
        "2025-01-02 12:00:00",
        "2025-01-03 12:00:00",
        "2025-01-04 12:00:00",
        "2025-01-05 12:00:00",
        "2025-01-06 12:00:00",
        "2025-01-07 12:00:00",
        "2025-01-08 12:00:00",
        "2025-01-09 12:00:00",
        "2025-01-10 12:00:00",
        "2025-01-11 12:00:00",
        "2025-01-12 12:00:00",
        "2025-01-13 12:00:00",
        "2025-01-14 12:00:00",
    ];
    times.extend(days);
    times
        .into_iter()
        .map(|t| (t, backup_at(env, t, "box", &[])))
        .collect()
}

fn pick(by_time: &BTreeMap<&str, String>, times: &[&str]) -> BTreeSet<String> {
    times.iter().map(|t| by_time[t].clone()).collect()
}

/// The IDs a `forget --json` report keeps and removes, over all groups.
fn decided(report: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut keep = BTreeSet::new();
    let mut remove = BTreeSet::new();
    for g in report.as_array().unwrap() {
        for s in g["keep"].as_array().unwrap() {
            keep.insert(s["id"].as_str().unwrap().to_string());
        }
        for s in g["remove"].as_array().unwrap() {
            remove.insert(s["id"].as_str().unwrap().to_string());
        }
    }
    (keep, remove)
}

#[test]
fn forget_policy_removes_exactly_what_it_does_not_keep() {
    let env = Env::new();
    let by_time = twenty(&env);
    assert_eq!(ids(&env).len(), 20);
    let all: BTreeSet<String> = by_time.values().cloned().collect();

    // --keep-within is relative to the newest snapshot (14 January 2025),
    // not to now: relative to now, nothing would be kept at all.
    let report = json(&env, &["forget", "--keep-within", "3d", "--dry-run"]);
    let within = pick(
        &by_time,
        &[
            "2025-01-12 12:00:00",
            "2025-01-13 06:00:00",
            "2025-01-13 12:00:00",
            "2025-01-14 08:00:00",
            "2025-01-14 12:00:00",
        ],
    );
    assert_eq!(decided(&report).0, within);
    // A dry run removes nothing.
    let report = json(&env, &["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(decided(&report).1.len(), 19);
    assert_eq!(ids(&env), all);
    let text = ok(&env, &["forget", "--keep-last", "1", "-n"]);
    assert!(text.contains("would remove 19 snapshots"), "{text}");
    assert_eq!(ids(&env), all);

    // Five days, newest per day, and three months (January counts once).
    let report = json(
        &env,
        &["forget", "--keep-daily", "5", "--keep-monthly", "3"],
    );
    let expected = pick(
        &by_time,
        &[
            "2024-11-15 12:00:00",
            "2024-12-15 12:00:00",
            "2025-01-10 12:00:00",
            "2025-01-11 12:00:00",
            "2025-01-12 12:00:00",
            "2025-01-13 12:00:00",
            "2025-01-14 12:00:00",
        ],
    );
    let (keep, remove) = decided(&report);
    assert_eq!(keep, expected);
    assert_eq!(remove.len(), 13);
    assert_eq!(ids(&env), expected, "exactly the kept snapshots remain");
    assert_eq!(records(&env), 7);

    // Reasons, in restic's words.
    let reasons = |time: &str| -> Vec<String> {
        report[0]["keep"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == by_time[time].as_str())
            .unwrap()["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        reasons("2025-01-14 12:00:00"),
        ["daily snapshot", "monthly snapshot"]
    );
    assert_eq!(reasons("2025-01-10 12:00:00"), ["daily snapshot"]);
    assert_eq!(reasons("2024-11-15 12:00:00"), ["monthly snapshot"]);

    // Applying the same policy again changes nothing.
    let report = json(
        &env,
        &["forget", "--keep-daily", "5", "--keep-monthly", "3"],
    );
    assert!(decided(&report).1.is_empty());
    assert_eq!(ids(&env), expected);
}

#[test]
fn keep_within_a_bucket_keeps_the_newest_of_each_and_the_oldest_too() {
    // As restic 0.17 does (and its forget help says), and retention.md
    // did not say.
    let env = Env::new();
    let ids: Vec<String> = [
        "2026-11-20 08:00:00",
        "2026-11-20 12:00:00",
        "2026-11-20 18:00:00",
    ]
    .iter()
    .map(|t| backup_at(&env, t, "h", &[]))
    .collect();
    let report = json(&env, &["forget", "--keep-within-daily", "7d", "--dry-run"]);
    let (keep, remove) = decided(&report);
    assert_eq!(
        keep,
        BTreeSet::from([ids[0].clone(), ids[2].clone()]),
        "{report}"
    );
    assert_eq!(remove, BTreeSet::from([ids[1].clone()]));
    assert!(
        report.to_string().contains("oldest daily within 7d"),
        "{report}"
    );
    // So does a counted option with room.
    let report = json(&env, &["forget", "--keep-daily", "7", "--dry-run"]);
    assert_eq!(
        decided(&report).0,
        BTreeSet::from([ids[0].clone(), ids[2].clone()])
    );
}

#[test]
fn forget_json_structure_and_grouping() {
    let env = Env::new();
    let a1 = backup_at(&env, "2025-02-01 10:00:00", "alpha", &["x"]);
    let a2 = backup_at(&env, "2025-02-02 10:00:00", "alpha", &[]);
    let b1 = backup_at(&env, "2025-02-01 11:00:00", "beta", &[]);
    let b2 = backup_at(&env, "2025-02-03 11:00:00", "beta", &[]);

    // By host and paths (the default): one group per host.
    let report = json(&env, &["forget", "--keep-last", "1", "--dry-run"]);
    let groups = report.as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let src = env.path("src").to_str().unwrap().to_string();
    assert_eq!(groups[0]["group_key"]["hostname"], "alpha");
    assert_eq!(groups[0]["group_key"]["paths"][0], src.as_str());
    assert!(groups[0]["group_key"]["tags"].is_null());
    let keep = &groups[0]["keep"][0];
    assert_eq!(keep["id"], a2.as_str());
    assert_eq!(keep["short_id"], &a2[..8]);
    assert!(
        keep["time"]
            .as_str()
            .unwrap()
            .starts_with("2025-02-02T10:00:00")
    );
    assert_eq!(keep["reasons"][0], "last snapshot");
    assert_eq!(keep["hold"], false);
    let remove = &groups[0]["remove"][0];
    assert_eq!(remove["id"], a1.as_str());
    assert_eq!(remove["reasons"].as_array().unwrap().len(), 0);
    assert_eq!(groups[1]["group_key"]["hostname"], "beta");
    assert_eq!(groups[1]["keep"][0]["id"], b2.as_str());

    // No grouping: one group keyed by nothing.
    let report = json(
        &env,
        &["forget", "--keep-last", "1", "--group-by", "", "--dry-run"],
    );
    let groups = report.as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert!(groups[0]["group_key"]["hostname"].is_null());
    assert!(groups[0]["group_key"]["paths"].is_null());
    assert_eq!(groups[0]["keep"][0]["id"], b2.as_str());
    assert_eq!(groups[0]["remove"].as_array().unwrap().len(), 3);

    // By host and tags: alpha splits into tagged and untagged.
    let report = json(
        &env,
        &["forget", "--keep-last", "1", "--group-by", "host,tags"],
    );
    assert_eq!(report.as_array().unwrap().len(), 3);
    assert_eq!(report[1]["group_key"]["tags"][0], "x");
    assert_eq!(
        ids(&env),
        BTreeSet::from([a1.clone(), a2.clone(), b2.clone()])
    );
    assert!(!ids(&env).contains(&b1));

    // The text table names the group, the policy and the reasons.
    let text = ok(&env, &["forget", "--keep-last", "1", "--dry-run"]);
    assert!(
        text.contains("Applying policy: keep 1 latest snapshots"),
        "{text}"
    );
    assert!(text.contains("snapshots for host alpha, paths ["), "{text}");
    assert!(text.contains("last snapshot"), "{text}");
}

#[test]
fn hold_survives_forget_until_released() {
    let env = Env::new();
    let by_time = twenty(&env);
    let old = by_time["2024-10-15 12:00:00"].clone();
    let newest = by_time["2025-01-14 12:00:00"].clone();

    // Holding rewrites the record: a new ID, the first one kept as `original`.
    let held = json(&env, &["hold", &old[..10]]);
    assert_eq!(held[0]["old_id"], old.as_str());
    assert_eq!(held[0]["hold"], true);
    assert_eq!(held[0]["changed"], true);
    let held_id = held[0]["id"].as_str().unwrap().to_string();
    assert_ne!(held_id, old);
    let list = listed(&env);
    assert_eq!(list.len(), 20);
    assert!(!list.contains_key(&old));
    assert_eq!(list[&held_id]["hold"], true);
    assert_eq!(list[&held_id]["original"], old.as_str());
    assert_eq!(list[&newest]["hold"], false);
    assert!(list[&newest]["original"].is_null());
    let text = ok(&env, &["snapshots"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&held_id[..8]) && l.ends_with("(held)")),
        "{text}"
    );
    // Holding again changes nothing.
    let again = json(&env, &["hold", &held_id]);
    assert_eq!(again[0]["changed"], false);
    assert_eq!(again[0]["id"], held_id.as_str());

    // forget --keep-last 1 keeps the newest and the held one.
    let report = json(&env, &["forget", "--keep-last", "1"]);
    let kept = &report[0]["keep"];
    assert_eq!(kept[0]["id"], held_id.as_str());
    assert_eq!(kept[0]["reasons"][0], "legal hold");
    assert_eq!(kept[0]["hold"], true);
    assert_eq!(ids(&env), BTreeSet::from([held_id.clone(), newest.clone()]));

    // Naming it explicitly fails, and removes nothing else either.
    let err = fails(&env, &["forget", &newest, &held_id[..8]]);
    assert!(err.contains("legal hold"), "{err}");
    assert!(err.contains(&held_id[..8]), "{err}");
    assert_eq!(ids(&env).len(), 2);

    // Released, it goes like any other.
    let released = json(&env, &["hold", "--release", &held_id]);
    assert_eq!(released[0]["hold"], false);
    assert_eq!(released[0]["original"], old.as_str());
    let released_id = released[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed(&env)[&released_id]["hold"], false);
    json(&env, &["forget", "--keep-last", "1"]);
    assert_eq!(ids(&env), BTreeSet::from([newest.clone()]));
    assert_eq!(records(&env), 1);
}

#[test]
fn forget_by_id_and_refusals() {
    let env = Env::new();
    let s1 = backup_at(&env, "2025-03-01 10:00:00", "box", &[]);
    let s2 = backup_at(&env, "2025-03-02 10:00:00", "box", &[]);
    let s3 = backup_at(&env, "2025-03-03 10:00:00", "box", &[]);
    let all = BTreeSet::from([s1.clone(), s2.clone(), s3.clone()]);

    // Nothing is removed by any of these.
    for args in [&["forget"][..], &["forget", "--keep-last", "0"]] {
        let err = exits(&run(&env, args), 2);
        assert!(err.contains("no policy"), "{err}");
    }
    let err = fails(&env, &["forget", "--keep-tag", "nightly"]);
    assert!(err.contains("refusing to remove every snapshot"), "{err}");
    // A wrong command line: exit 2.
    let err = exits(&run(&env, &["forget", "--keep-within", "1w"]), 2);
    assert!(err.contains("invalid duration"), "{err}");
    let err = exits(&run(&env, &["forget", "--keep-daily", "-3"]), 2);
    assert!(err.contains("invalid count"), "{err}");
    let err = exits(
        &run(
            &env,
            &["forget", "--keep-last", "1", "--group-by", "colour"],
        ),
        2,
    );
    assert!(err.contains("unknown grouping option"), "{err}");
    let err = exits(&run(&env, &["forget", "--keep-last", "1", &s1]), 2);
    assert!(err.contains("not both"), "{err}");
    let err = fails(&env, &["forget", &s1, "ffffffff"]);
    assert!(err.contains("no snapshot matches"), "{err}");
    assert_eq!(ids(&env), all);

    // -1 and `unlimited` keep every bucket; so does a count beyond any
    // repository (restic takes 64-bit counts; it was "not a number").
    for unlimited in ["-1", "unlimited", "4294967296", "18446744073709551615"] {
        let report = json(&env, &["forget", "--keep-last", unlimited, "--dry-run"]);
        assert_eq!(decided(&report).0, all);
    }

    // A dry run by ID names what it would remove.
    let text = ok(&env, &["forget", "--dry-run", &s1[..8]]);
    assert!(
        text.contains(&format!("would remove snapshot {}", &s1[..8])),
        "{text}"
    );
    assert_eq!(ids(&env), all);

    // By ID and by prefix.
    let report = json(&env, &["forget", &s1, &s2[..12]]);
    let (keep, remove) = decided(&report);
    assert!(keep.is_empty());
    assert_eq!(remove, BTreeSet::from([s1.clone(), s2.clone()]));
    assert_eq!(ids(&env), BTreeSet::from([s3.clone()]));
    // `latest` works too, and the last snapshot can go when named.
    ok(&env, &["forget", "latest"]);
    assert!(ids(&env).is_empty());
}

#[test]
fn interrupted_hold_leaves_two_records_that_count_as_one_held_snapshot() {
    let env = Env::new();
    let old = backup_at(&env, "2025-04-01 10:00:00", "box", &[]);
    let newest = backup_at(&env, "2025-04-02 10:00:00", "box", &[]);
    // A crash between writing the held record and deleting the old one:
    // put the old record back after the hold.
    let old_path = env.repo.join("snapshots").join(&old);
    let old_bytes = fs::read(&old_path).unwrap();
    let held = json(&env, &["hold", &old])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(&old_path, &old_bytes).unwrap();
    assert_eq!(records(&env), 3);

    // Listed once, as held, with a note on stderr.
    let list = listed(&env);
    assert_eq!(list.len(), 2);
    assert_eq!(list[&held]["hold"], true);
    let out = run(&env, &["snapshots"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 records"));

    // forget keeps both records of the held snapshot; naming the stale
    // record is naming a held snapshot.
    json(&env, &["forget", "--keep-last", "1"]);
    assert_eq!(records(&env), 3);
    let err = fails(&env, &["forget", &old]);
    assert!(err.contains("legal hold"), "{err}");

    // Releasing leaves one record; then forget removes it.
    let released = json(&env, &["hold", "--release", &held])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(records(&env), 2);
    assert_eq!(ids(&env), BTreeSet::from([released, newest.clone()]));
    json(&env, &["forget", "--keep-last", "1"]);
    assert_eq!(ids(&env), BTreeSet::from([newest]));
    assert_eq!(records(&env), 1);
}

#[test]
fn the_note_on_an_interrupted_tag_names_a_command_that_keeps_the_snapshot_as_shown() {
    // The note said `cairn hold ID` for every such snapshot: followed
    // after an interrupted `tag`, it put a legal hold on it.
    let env = Env::new();
    let old = backup_at(&env, "2025-04-01 10:00:00", "box", &[]);
    let old_path = env.repo.join("snapshots").join(&old);
    let old_bytes = fs::read(&old_path).unwrap();
    let tagged = json(&env, &["tag", "--add", "kept", &old])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(&old_path, &old_bytes).unwrap();
    assert_eq!(records(&env), 2);
    let out = run(&env, &["snapshots"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let advice = format!("`cairn hold --release {}`", &tagged[..8]);
    assert!(err.contains(&advice), "{err}");
    ok(&env, &["hold", "--release", &tagged[..8]]);
    assert_eq!(records(&env), 1);
    let list = listed(&env);
    let (_, s) = list.iter().next().unwrap();
    assert_eq!(s["hold"], false, "{s}");
    assert_eq!(s["tags"], serde_json::json!(["kept"]), "{s}");
    let out = run(&env, &["snapshots"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("records"));
}

#[test]
fn a_tag_or_hold_killed_halfway_finishes_when_run_again_with_the_same_ids() {
    // The first run had rewritten some of the snapshots named, so their
    // IDs named no record any more: the same command run again exited 1
    // on them, leaving the rest untagged.
    let env = Env::new();
    let a = backup_at(&env, "2025-04-01 10:00:00", "box", &[]);
    let b = backup_at(&env, "2025-04-02 10:00:00", "box", &[]);
    // The hold is given the IDs from before the tag, too.
    for args in [vec!["tag", "--add", "kept"], vec!["hold"]] {
        // The records standing for a and b now, oldest first.
        let now: Vec<String> = json(&env, &["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        // Killed while writing the second record, the first rewritten.
        let mut cmd = env.cmd();
        cmd.args(&args).args([&a, &b]);
        assert!(kill_when_stalled(&env, cmd, "stall-write=2:60000"));
        assert!(
            !env.repo.join("snapshots").join(&now[0]).exists(),
            "{args:?} rewrote nothing"
        );
        assert!(
            env.repo.join("snapshots").join(&now[1]).exists(),
            "{args:?}"
        );
        let mut again = args.clone();
        again.extend([a.as_str(), b.as_str()]);
        let changes = json(&env, &again);
        let changed: Vec<bool> = changes
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["changed"].as_bool().unwrap())
            .collect();
        assert_eq!(changed, [false, true], "{args:?}: {changes}");
    }
    let list = listed(&env);
    assert_eq!(list.len(), 2);
    for s in list.values() {
        assert_eq!(s["tags"], serde_json::json!(["kept"]), "{s}");
        assert_eq!(s["hold"], true, "{s}");
    }
    assert_eq!(records(&env), 2);
    // An ID that was never a snapshot's is still an error.
    let err = fails(&env, &["tag", "--add", "x", "abcdef12"]);
    assert!(err.contains("no snapshot"), "{err}");
}

#[test]
fn an_id_from_between_two_rewrites_still_names_its_snapshot() {
    // Only the first ID a snapshot had was followed: after a second tag or
    // hold change, the ID `snapshots` had listed (and scripts kept) named
    // nothing, so the same `tag` run again failed for good and `forget`
    // said only "no snapshot matches".
    let env = Env::new();
    let first = backup_at(&env, "2025-04-01 10:00:00", "box", &[]);
    let rewrite = |args: &[&str]| -> String {
        let out = json(&env, args);
        out[0]["id"].as_str().unwrap().to_string()
    };
    let middle = rewrite(&["tag", "--add", "a", &first]);
    let now = rewrite(&["tag", "--add", "b", &middle]);
    // Run again with the middle ID: nothing to change, no error.
    let again = json(&env, &["tag", "--add", "b", &middle]);
    assert_eq!(again[0]["changed"], false, "{again}");
    assert_eq!(again[0]["id"], now.as_str(), "{again}");
    let err = fails(&env, &["forget", &middle[..8]]);
    assert!(
        err.contains("rewritten since") && err.contains(&now[..8]),
        "{err}"
    );
    // A third rewrite, by hold, from the middle ID; the first still works.
    let held = rewrite(&["hold", &middle]);
    let released = rewrite(&["hold", "--release", &first]);
    let again = json(&env, &["hold", "--release", &held]);
    assert_eq!(again[0]["changed"], false, "{again}");
    let list = listed(&env);
    assert_eq!(list.len(), 1);
    let s = &list[&released];
    assert_eq!(s["original"], first.as_str(), "{s}");
    assert_eq!(s["former"], serde_json::json!([middle, now, held]), "{s}");
    assert_eq!(s["tags"], serde_json::json!(["a", "b"]), "{s}");
    assert_eq!(s["hold"], false, "{s}");
    assert_eq!(records(&env), 1);
    env.assert_check_clean();
}

#[test]
fn a_tag_given_twice_is_stored_once_and_groups_with_the_others() {
    // `--tag x,x` stored [x, x]: `--group-by tags` made it a group of its
    // own, whose newest snapshot every policy then kept.
    let env = Env::new();
    let a = backup_at(&env, "2025-04-01 10:00:00", "box", &["x,x"]);
    let b = backup_at(&env, "2025-04-02 10:00:00", "box", &["x", "x"]);
    let list = listed(&env);
    assert_eq!(list[&a]["tags"], serde_json::json!(["x"]));
    assert_eq!(list[&b]["tags"], serde_json::json!(["x"]));
    let out = json(
        &env,
        &[
            "forget",
            "--group-by",
            "tags",
            "--keep-last",
            "1",
            "--tag",
            "x",
        ],
    );
    assert_eq!(listed(&env).len(), 1, "{out}");
    assert!(listed(&env).contains_key(&b));
    let out = json(&env, &["tag", "--set", "y, y,x", &b]);
    assert_eq!(out[0]["tags"], serde_json::json!(["y", "x"]), "{out}");
}

/// `--host`, `--path` and `--tag` narrow `find`, `stats` and a `forget`
/// policy to some snapshots (and `latest` to the newest of those); the
/// other snapshots are neither searched, counted nor removed.
#[test]
fn host_path_and_tag_filters_narrow_find_stats_and_forget() {
    let env = Env::new();
    let a1 = backup_at(&env, "2025-05-01 10:00:00", "alpha", &["x"]);
    let b1 = backup_at(&env, "2025-05-02 10:00:00", "beta", &[]);
    let a2 = backup_at(&env, "2025-05-03 10:00:00", "alpha", &["x"]);
    let b2 = backup_at(&env, "2025-05-04 10:00:00", "beta", &[]);
    let src = env.path("src").to_str().unwrap().to_string();

    let found = |args: &[&str]| -> BTreeSet<String> {
        let mut all = vec!["find", "f"];
        all.extend_from_slice(args);
        json(&env, &all)
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["snapshot"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        found(&["--host", "beta"]),
        BTreeSet::from([b1.clone(), b2.clone()])
    );
    assert_eq!(
        found(&["--tag", "x"]),
        BTreeSet::from([a1.clone(), a2.clone()])
    );
    assert_eq!(
        found(&["--path", &src, "--host", "alpha", "--tag", "x"]).len(),
        2
    );
    assert!(found(&["--path", "/elsewhere"]).is_empty());
    // `latest` is the newest snapshot the filter accepts.
    assert_eq!(found(&["-s", "latest"]), BTreeSet::from([b2.clone()]));
    assert_eq!(
        found(&["-s", "latest", "--tag", "x"]),
        BTreeSet::from([a2.clone()])
    );

    let counted = |args: &[&str]| -> u64 {
        let mut all = vec!["stats"];
        all.extend_from_slice(args);
        json(&env, &all)["snapshots_count"].as_u64().unwrap()
    };
    assert_eq!(counted(&[]), 4);
    assert_eq!(counted(&["--host", "alpha"]), 2);
    assert_eq!(counted(&["--host", "alpha", "latest"]), 1);
    let err = fails(&env, &["stats", "--host", "gamma", "latest"]);
    assert!(err.contains("no snapshot of host gamma"), "{err}");

    // The policy applies to alpha's snapshots only; beta keeps both.
    let err = exits(&run(&env, &["forget", "--host", "alpha", &a1]), 2);
    assert!(err.contains("without snapshot IDs"), "{err}");
    let report = json(&env, &["forget", "--host", "alpha", "--keep-last", "1"]);
    let (keep, remove) = decided(&report);
    assert_eq!(keep, BTreeSet::from([a2.clone()]));
    assert_eq!(remove, BTreeSet::from([a1.clone()]));
    assert_eq!(
        ids(&env),
        BTreeSet::from([b1.clone(), a2.clone(), b2.clone()])
    );
    // An untagged policy run over tag x leaves the untagged snapshots alone.
    json(&env, &["forget", "--tag", "x", "--keep-last", "1"]);
    assert_eq!(
        ids(&env),
        BTreeSet::from([b1.clone(), a2.clone(), b2.clone()])
    );
    // `latest` is the newest the filter accepts here too (it was refused,
    // though the help says the filters pick it).
    json(&env, &["forget", "latest", "--host", "beta"]);
    assert_eq!(ids(&env), BTreeSet::from([b1.clone(), a2.clone()]));
    json(&env, &["forget", "--tag", "x", "latest"]);
    assert_eq!(ids(&env), BTreeSet::from([b1]));
    let err = fails(&env, &["forget", "latest", "--host", "alpha"]);
    assert!(err.contains("no snapshot of host alpha"), "{err}");
}

#[test]
fn forget_latest_of_a_host_is_chosen_once_the_lock_is_had() {
    // `latest` of --host was chosen before the wait for the lock: the
    // snapshot of the backup that held it, committed meanwhile, survived,
    // and the one before it went (plain `latest` took the new one).
    let env = Env::new();
    let old = backup_at(&env, "2026-01-01 10:00:00", "alpha", &[]);
    let repo = open_engine(&env);
    // A backup running: its shared lock.
    let guard = repo.lock(false).unwrap();
    let forget = env
        .cmd()
        .args(["--json", "--retry-lock", "60s", "forget", "latest"])
        .args(["--host", "alpha"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let new = backup_at(&env, "2026-01-02 10:00:00", "alpha", &[]);
    drop(guard);
    let out = forget.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ids(&env), BTreeSet::from([old]), "{new} was to go");
}

#[test]
fn snapshots_latest_and_group_by() {
    let env = Env::new();
    let a1 = backup_at(&env, "2026-01-01 10:00:00", "alpha", &["db"]);
    let a2 = backup_at(&env, "2026-01-02 10:00:00", "alpha", &[]);
    let a3 = backup_at(&env, "2026-01-03 10:00:00", "alpha", &["db"]);
    let b1 = backup_at(&env, "2026-01-01 11:00:00", "beta", &[]);
    let b2 = backup_at(&env, "2026-01-02 11:00:00", "beta", &[]);
    let ids_of = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Ungrouped: a flat list, as without the options.
    assert_eq!(json(&env, &["snapshots"]).as_array().unwrap().len(), 5);
    // The newest of each host and paths, oldest first.
    let latest = json(&env, &["snapshots", "--latest", "1"]);
    assert_eq!(ids_of(&latest), [b2.clone(), a3.clone()]);
    let latest = json(&env, &["snapshots", "--latest", "2", "--host", "alpha"]);
    assert_eq!(ids_of(&latest), [a2.clone(), a3.clone()]);
    // Groups by host, in key order, each with its group key.
    let grouped = json(&env, &["snapshots", "--group-by", "host"]);
    let groups = grouped.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{grouped}");
    assert_eq!(groups[0]["group_key"]["hostname"], "alpha");
    assert!(groups[0]["group_key"]["paths"].is_null(), "{grouped}");
    assert_eq!(
        ids_of(&groups[0]["snapshots"]),
        [a1, a2.clone(), a3.clone()]
    );
    assert_eq!(groups[1]["group_key"]["hostname"], "beta");
    assert_eq!(ids_of(&groups[1]["snapshots"]), [b1, b2.clone()]);
    // --latest counts within each host and paths, inside tag groups too.
    let grouped = json(&env, &["snapshots", "--group-by", "tags", "--latest", "1"]);
    let groups = grouped.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{grouped}");
    assert_eq!(groups[0]["group_key"]["tags"], serde_json::json!([]));
    assert_eq!(ids_of(&groups[0]["snapshots"]), [a2, b2]);
    assert_eq!(groups[1]["group_key"]["tags"], serde_json::json!(["db"]));
    assert_eq!(ids_of(&groups[1]["snapshots"]), [a3]);
    // Text: a heading per group, and the count of all listed.
    let text = ok(&env, &["snapshots", "--group-by", "host", "--latest", "1"]);
    assert!(text.contains("snapshots for host alpha:"), "{text}");
    assert!(text.contains("snapshots for host beta:"), "{text}");
    assert!(text.trim_end().ends_with("2 snapshots"), "{text}");
    let err = exits(&run(&env, &["snapshots", "--group-by", "colour"]), 2);
    assert!(err.contains("unknown grouping option \"colour\""), "{err}");
    exits(&run(&env, &["snapshots", "--latest", "0"]), 2);
}

#[test]
fn a_comma_splits_tags_everywhere_as_in_restic() {
    // `backup --tag keep,nightly` stored one tag "keep,nightly" that
    // `--keep-tag keep,nightly` (both tags) and `--keep-tag nightly` missed:
    // a restic policy removed what it was meant to keep.
    let env = Env::new();
    let both = backup_at(&env, "2025-01-01 00:00:00", "box", &["keep,nightly"]);
    let keep = backup_at(&env, "2025-01-02 00:00:00", "box", &["keep"]);
    let none = backup_at(&env, "2025-01-03 00:00:00", "box", &[""]);
    let odd = backup_at(&env, "2025-01-04 00:00:00", "box", &["a,,b"]);
    let tags = |id: &str| listed(&env)[id]["tags"].clone();
    assert_eq!(tags(&both), serde_json::json!(["keep", "nightly"]));
    assert_eq!(tags(&none), serde_json::json!([]));
    assert_eq!(tags(&odd), serde_json::json!(["a", "b"]));
    let ids = |args: &[&str]| -> BTreeSet<String> {
        let mut all = vec!["snapshots"];
        all.extend_from_slice(args);
        json(&env, &all)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    // A list means all of its tags, and so do repeated lists (narrower
    // than restic's "either", never wider than before).
    assert_eq!(
        ids(&["--tag", "keep,nightly"]),
        BTreeSet::from([both.clone()])
    );
    assert_eq!(
        ids(&["--tag", "nightly", "--tag", "keep"]),
        BTreeSet::from([both.clone()])
    );
    assert!(ids(&["--tag", "nightly", "--tag", "b"]).is_empty());

    assert_eq!(ids(&["--tag", ""]), BTreeSet::from([none.clone()]));
    let plan = json(
        &env,
        &[
            "forget",
            "--dry-run",
            "--keep-tag",
            "nightly",
            "--keep-last",
            "1",
        ],
    );
    let kept: BTreeSet<String> = plan[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, BTreeSet::from([both.clone(), odd.clone()]));
    // `tag` splits the same way.
    json(&env, &["tag", "--add", "x,y", &keep]);
    let keep_now = ids(&["--tag", "x,y"]);
    assert_eq!(keep_now.len(), 1);
    let id = keep_now.iter().next().unwrap();
    assert_eq!(tags(id), serde_json::json!(["keep", "x", "y"]));
}

#[test]
fn a_group_all_dated_ahead_does_not_stop_forget_for_the_others() {
    // A new machine whose clock ran ahead on its first backup: every
    // policy forget of the repository was refused ("refusing to remove
    // every snapshot of group host b"), removing nothing anywhere.
    let env = Env::new();
    let a1 = backup_at(&env, "2026-01-01 12:00:00", "a", &[]);
    let a2 = backup_at(&env, "2026-02-01 12:00:00", "a", &[]);
    let a3 = backup_at(&env, "2026-03-01 12:00:00", "a", &[]);
    let b = backup_at(&env, "2099-01-01 12:00:00", "b", &[]);
    let plan = json(&env, &["forget", "--keep-last", "1", "--dry-run"]);
    let removed: BTreeSet<String> = plan
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["remove"].as_array().unwrap())
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed, BTreeSet::from([a1, a2]), "{plan}");
    ok(&env, &["forget", "--keep-last", "1"]);
    assert_eq!(ids(&env), BTreeSet::from([a3, b]));
}

#[test]
fn a_snapshot_dated_ahead_is_kept_but_neither_counted_nor_latest() {
    // Taken while the host's clock ran years ahead: `--keep-last 1` kept it
    // and removed every new backup (watch the one it had just written),
    // and `latest` restored its old data.
    let env = Env::new();
    let ahead = backup_at(&env, "2099-01-01 00:00:00", "h", &[]);
    let src = env.path("src");
    fs::write(src.join("f"), "now").unwrap();
    let src_s = src.to_str().unwrap();
    let now = json(&env, &["backup", src_s, "--host", "h"])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let f = format!("{src_s}/f");
    assert_eq!(ok(&env, &["dump", "latest", &f]), "now");
    let plan = json(&env, &["forget", "--keep-last", "1", "--dry-run"]);
    let kept: BTreeMap<String, Value> = plan[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d["reasons"].clone()))
        .collect();
    assert_eq!(kept.len(), 2, "{plan}");
    assert_eq!(kept[&ahead], serde_json::json!(["dated ahead of now"]));
    assert_eq!(kept[&now], serde_json::json!(["last snapshot"]));
    ok(&env, &["forget", "--keep-last", "1"]);
    assert_eq!(ids(&env), BTreeSet::from([ahead.clone(), now.clone()]));
    // Kept for its date, it does not count as kept by the policy: one that
    // keeps no real snapshot of the group is refused as before.
    let err = fails(&env, &["forget", "--keep-tag", "nothing-has-it"]);
    assert!(err.contains("refusing to remove every snapshot"), "{err}");
    assert_eq!(ids(&env), BTreeSet::from([ahead, now.clone()]));
    // Nor is it the next backup's parent (which re-read everything
    // changed since it).
    let next = json(&env, &["backup", src_s, "--host", "h"]);
    assert_eq!(next["parent"], now.as_str(), "{next}");
    assert_eq!(next["files_unmodified"], 1, "{next}");
}

#[test]
fn partial_snapshots_do_not_take_the_places_of_complete_ones() {
    // Nightly backups of a home and a USB disk, the disk away for the last
    // two nights: --keep-last 2 forgot the one snapshot that held it.
    let env = Env::new();
    let (home, usb) = (env.path("home"), env.path("usb"));
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&usb).unwrap();
    fs::write(usb.join("photo"), b"only copy").unwrap();
    let (h, u) = (home.to_str().unwrap(), usb.to_str().unwrap());
    let complete = json(&env, &["backup", h, u, "--time", "2026-11-01 01:00:00"]);
    let complete = complete["snapshot_id"].as_str().unwrap().to_string();
    fs::rename(&usb, env.path("usb.away")).unwrap();
    let mut partial = Vec::new();
    for day in ["02", "03"] {
        let time = format!("2026-11-{day} 01:00:00");
        let out = run(&env, &["--json", "backup", h, u, "--time", &time]);
        assert_eq!(out.status.code(), Some(3), "a source missing");
        let r = last_json(&out);
        partial.push(r["snapshot_id"].as_str().unwrap().to_string());
    }
    let r = json(&env, &["forget", "--keep-last", "2"]);
    let (keep, remove) = decided(&r);
    let expect: BTreeSet<String> = [&complete, &partial[0], &partial[1]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(keep, expect, "{r}");
    assert!(remove.is_empty(), "{r}");
    let shown = r.to_string();
    assert!(
        shown.contains("last snapshot (among complete snapshots)"),
        "{r}"
    );
    // A third partial night: the oldest partial one goes, the complete one stays.
    let out = run(&env, &["backup", h, u, "--time", "2026-11-04 01:00:00"]);
    assert_eq!(out.status.code(), Some(3));
    let r = json(&env, &["forget", "--keep-last", "2"]);
    let (keep, remove) = decided(&r);
    assert!(keep.contains(&complete), "{r}");
    assert_eq!(remove, BTreeSet::from([partial[0].clone()]), "{r}");
    let t = env.path("t");
    env.restore(&complete, &t);
    assert_eq!(
        fs::read(restored(&t, &usb).join("photo")).unwrap(),
        b"only copy"
    );
    // The disk is back for two nights: the partial snapshots go as any
    // others would, and so does the complete one they no longer push out.
    fs::rename(env.path("usb.away"), &usb).unwrap();
    for day in ["05", "06"] {
        let time = format!("2026-11-{day} 01:00:00");
        json(&env, &["backup", h, u, "--time", &time]);
    }
    let r = json(&env, &["forget", "--keep-last", "2"]);
    let (keep, remove) = decided(&r);
    assert_eq!(keep.len(), 2, "{r}");
    assert_eq!(remove.len(), 3, "{r}");
    assert!(
        remove.contains(&complete) && remove.contains(&partial[1]),
        "{r}"
    );
}

/// Two sources whose names differ only in bytes that are not UTF-8 (Latin-1
/// names) were recorded as one path, U+FFFD for each such byte: one group
/// to a policy, which forgot the first source's only snapshot for the
/// second's, and the second took the first's snapshot for its parent.
#[test]
fn sources_that_differ_only_in_bytes_that_are_not_utf8_stay_apart() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let root = env.path("latin1");
    let (e_acute, e_grave) = (
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe8")),
    );
    for (d, content) in [(&e_acute, "one"), (&e_grave, "two")] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), content).unwrap();
    }
    let first = env.backup(&[&e_acute]);
    let second = env.backup(&[&e_grave]);
    assert!(second["parent"].is_null(), "{second}");
    let snaps = json(&env, &["snapshots"]);
    let paths: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["paths"][0].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2);
    assert_ne!(paths[0], paths[1]);
    assert!(paths.iter().any(|p| p.ends_with("caf\\xe9")), "{paths:?}");
    ok(&env, &["forget", "--keep-last", "1"]);
    let ids: Vec<String> = json(&env, &["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "a policy forgot the other source's snapshot");
    assert!(
        ids.iter()
            .any(|i| i == first["snapshot_id"].as_str().unwrap())
    );
}

/// Such a source is picked by its own bytes: `--path` takes them as given
/// (it took UTF-8 alone, exit 2), and `--at` finds the snapshot that holds
/// a path below it (since sources are recorded with `\xNN`, the path asked
/// for was compared with U+FFFD in it, and no snapshot held it).
#[test]
fn a_source_whose_name_is_not_utf8_is_picked_by_path_and_by_time() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let d = env
        .path("latin1")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::create_dir_all(d.join("sub")).unwrap();
    fs::write(d.join("sub/f"), "hi\n").unwrap();
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    let stdout = |o: &Output| {
        exits(o, 0);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let first = env.backup(&[&d]);
    env.backup(&[&other]);
    let by_path = env
        .cmd()
        .args(["snapshots", "--json", "--path"])
        .arg(&d)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&by_path)).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first["snapshot_id"].as_str().unwrap()]);
    let at = "2099-01-01 00:00";
    let ls = env
        .cmd()
        .args(["ls", "--at", at])
        .arg(d.join("sub"))
        .output()
        .unwrap();
    let listed = stdout(&ls);
    assert!(listed.lines().any(|l| l.ends_with("sub/f")), "{listed}");
    let dump = env
        .cmd()
        .args(["dump", "--at", at])
        .arg(d.join("sub/f"))
        .output()
        .unwrap();
    assert_eq!(stdout(&dump), "hi\n");
}
