//! The audit trail: every command that changes the repository leaves one
//! encrypted record of who ran it, when, and what it added and removed;
//! commands that only read leave none, and nothing deletes the records.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

fn records(env: &Env) -> Vec<Value> {
    env.json(&["audit"]).as_array().unwrap().clone()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn current_key(env: &Env) -> String {
    key_where(env, "current")
}

#[test]
fn every_command_that_changes_the_repository_says_who_when_and_what() {
    let env = Env::new();
    let key = current_key(&env);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("old.bin"), 200_000, 1);
    let first = env.backup(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(src.join("old.bin")).unwrap();
    write_random(&src.join("new.bin"), 200_000, 2);
    let second = env.backup(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let after_backups = records(&env).len();

    // Reading changes nothing, so it is not recorded.
    env.ok(&["snapshots"]);
    env.ok(&["ls", "latest"]);
    env.ok(&["check", "--read-data"]);
    env.restore("latest", &env.path("r"));
    env.ok(&["stats"]);
    assert_eq!(records(&env).len(), after_backups);

    let tagged = env.json(&["tag", "--add", "x", &second]);
    let tagged_id = tagged[0]["id"].as_str().unwrap().to_string();
    // Setting a hold and releasing it each rewrite the record alike: the
    // command tells which (both were `hold`).
    let held = env.json(&["hold", &tagged_id])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.ok(&["hold", "--release", &held]);
    let pw2 = env.path("pw2");
    fs::write(&pw2, "another password").unwrap();
    env.ok(&["key", "add", "--new-password-file", pw2.to_str().unwrap()]);
    env.ok(&["forget", &first]);
    env.ok(&["prune"]);

    let all = records(&env);
    let commands: Vec<&str> = all.iter().map(|r| r["command"].as_str().unwrap()).collect();
    assert_eq!(
        commands,
        [
            "init",
            "backup",
            "backup",
            "tag --add x",
            "hold",
            "hold --release",
            "key add",
            "forget",
            "prune"
        ],
        "{all:#?}"
    );
    let host = env.json(&["snapshots"])[0]["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    for r in &all {
        assert_eq!(r["hostname"], host.as_str(), "{r}");
        assert_eq!(r["key"], key.as_str(), "{r}");
        assert!(r["pid"].as_u64().unwrap() > 0, "{r}");
        // As times, not strings: `started` has millisecond precision, and
        // "…925Z" sorts after "…925049272Z".
        let at = |k: &str| chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap()).unwrap();
        assert!(at("time") >= at("started"), "{r}");
    }
    let [init, b1, b2, tag, hold, release, key_add, forget, prune] = &all[..] else {
        unreachable!()
    };
    assert_eq!(ids(&init["added"]["keys"]), [key.as_str()]);
    assert_eq!(init["added"]["config"], true);
    assert_eq!(ids(&b1["added"]["snapshots"]), [first.as_str()]);
    assert_eq!(ids(&b2["added"]["snapshots"]), [second.as_str()]);
    for b in [b1, b2] {
        assert!(b["added"]["packs"].as_u64().unwrap() >= 1, "{b}");
        assert!(b["added"]["pack_bytes"].as_u64().unwrap() >= 200_000, "{b}");
        assert_eq!(b["added"]["index_files"], 1, "{b}");
        assert!(b["removed"]["snapshots"].is_null(), "{b}");
    }
    // A tag rewrites the snapshot record: one added, one removed.
    assert_eq!(ids(&tag["added"]["snapshots"]), [tagged_id.as_str()]);
    assert_eq!(ids(&tag["removed"]["snapshots"]), [second]);
    assert_eq!(ids(&hold["removed"]["snapshots"]), [tagged_id.as_str()]);
    assert_eq!(ids(&release["removed"]["snapshots"]), [held.as_str()]);
    assert_eq!(ids(&key_add["added"]["keys"]).len(), 1);
    assert_ne!(ids(&key_add["added"]["keys"])[0], key);
    assert_eq!(ids(&forget["removed"]["snapshots"]), [first.as_str()]);
    // The forgotten snapshot's own data goes with the prune.
    assert!(prune["removed"]["packs"].as_u64().unwrap() >= 1, "{prune}");
    assert!(
        prune["removed"]["index_files"].as_u64().unwrap() >= 1,
        "{prune}"
    );

    // Plain text: one line per record.
    let text = env.ok(&["audit"]);
    assert!(text.contains("forget: -snapshots"), "{text}");
    assert!(text.contains(&format!("{} record(s)", all.len())), "{text}");

    // Filters: who deleted the first snapshot, which commands used keys, by time.
    let commands_of = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["audit"];
        a.extend_from_slice(args);
        env.json(&a)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["command"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        commands_of(&["--snapshot", &first[..10]]),
        ["backup", "forget"]
    );
    assert_eq!(commands_of(&["--command", "key"]), ["key add"]);
    assert_eq!(commands_of(&["--command", "backup"]), ["backup", "backup"]);
    assert_eq!(
        commands_of(&["--command", "hold"]),
        ["hold", "hold --release"]
    );
    assert!(
        commands_of(&["--command", "ke"]).is_empty(),
        "whole words only"
    );
    assert_eq!(
        commands_of(&["--key", &key[..6], "--command", "prune"]),
        ["prune"]
    );
    assert_eq!(commands_of(&["--host", &host]).len(), all.len());
    assert!(commands_of(&["--host", "no-such-host"]).is_empty());
    let forget_time = forget["time"].as_str().unwrap().to_string();
    assert_eq!(commands_of(&["--since", &forget_time]), ["forget", "prune"]);
    assert_eq!(
        commands_of(&["--until", init["time"].as_str().unwrap()]),
        ["init"]
    );
    let err = env.fails(&["audit", "--since", "yesterday-ish"], 2);
    assert!(err.contains("cannot parse time"));
    env.assert_check_clean();
}

#[test]
fn the_user_is_named_without_the_environment() {
    // Service managers may start cairn without $USER or $LOGNAME: the user
    // comes from the password database.
    let env = Env::uninit();
    let out = env
        .cmd()
        .env_remove("USER")
        .env_remove("LOGNAME")
        .arg("init")
        .output()
        .unwrap();
    assert!(out.status.success());
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = String::from_utf8(me.stdout).unwrap().trim().to_string();
    assert!(!me.is_empty());
    let recs = records(&env);
    assert_eq!(recs[0]["username"], me.as_str(), "{recs:?}");
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys[0]["username"], me.as_str(), "{keys}");
}

#[test]
fn an_append_only_keys_changes_are_recorded_and_outlast_prune() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    add_append_only_key(&env, "append only password");
    ok_as(
        &env,
        "append only password",
        &["--json", "backup", src.to_str().unwrap()],
    );
    let ao_key = key_where(&env, "append_only");
    let before = records(&env);
    let last = before.last().unwrap();
    assert_eq!(
        (last["command"].as_str(), last["key"].as_str()),
        (Some("backup"), Some(ao_key.as_str()))
    );
    // Whatever prune and repair do, the records stay. (This prune finds
    // nothing to delete, so it changes nothing and leaves no record.)
    env.ok(&["prune"]);
    env.ok(&["repair", "index"]);
    let after = records(&env);
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(
        after[before.len()..]
            .iter()
            .map(|r| r["command"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["repair index"]
    );
}

#[test]
fn check_finds_an_altered_audit_record() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.backup(&[&src]);
    let report = env.assert_check_clean();
    assert_eq!(
        report["audit_records"], 3,
        "init, and the backup's open and closing records: {report}"
    );
    let mut files: Vec<_> = fs::read_dir(env.repo.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let victim = &files[0];
    let mut bytes = fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(victim, &bytes).unwrap();
    let out = env.cmd().args(["--json", "check"]).output().unwrap();
    // An altered record is an error.
    exits(&out, 1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap();
    let errors = report["errors"].to_string();
    assert!(errors.contains(&format!("audit record {name}")), "{report}");
    assert_eq!(report["audit_records"], 2);
    // `audit` still shows the others (it showed none), names the damaged
    // one and says the trail is incomplete (exit 1).
    let out = env.cmd().args(["--json", "audit"]).output().unwrap();
    let err = exits(&out, 1);
    assert!(err.contains(name) && err.contains("incomplete"), "{err}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    // init, and the backup's closing record (its open record pairs with it,
    // unless the damaged one is that closing record).
    let n = shown.as_array().unwrap().len();
    assert!((1..=2).contains(&n), "{shown}");
}

#[test]
fn a_command_killed_mid_way_shows_in_the_trail_as_unfinished() {
    let env = Env::uninit();
    env.ok(&["init", "--pack-size-mib", "1"]);
    let audit_files = || finished_objects(&env.repo.join("audit"));
    let before = audit_files();
    let mut backup = env
        .cmd()
        .args(["backup", "--stdin", "--stdin-filename", "big.bin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = backup.id();
    let mut stdin = backup.stdin.take().unwrap();
    let chunk = {
        let path = env.path("noise");
        write_random(&path, 1 << 20, 5);
        fs::read(&path).unwrap()
    };
    // Feed it until its first pack makes it write its open record.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while audit_files() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no open record written"
        );
        use std::io::Write;
        stdin.write_all(&chunk).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    backup.kill().unwrap();
    backup.wait().unwrap();
    drop(stdin);

    let all = records(&env);
    let last = all.last().unwrap();
    assert_eq!(last["command"], "backup", "{all:#?}");
    assert_eq!(last["open"], true, "{last}");
    assert_eq!(last["pid"], pid);
    let text = env.ok(&["audit"]);
    assert!(text.contains("not finished"), "{text}");
    // Its progress note for monitors is left in the cache; the next long
    // command clears it (only `serve` did: they piled up).
    let notes = || -> Vec<String> {
        walkdir::WalkDir::new(&env.cache)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().parent().is_some_and(|p| p.ends_with("activity")))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{pid}-")))
            .collect()
    };
    assert_eq!(notes().len(), 1, "the killed backup left no note to clear");
    // The repository is sound, and the next command's records pair up.
    let report = env.json(&["check", "--read-data"]);
    assert!(notes().is_empty(), "{:?}", notes());
    assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.backup(&[&src]);
    let all = records(&env);
    let opens: Vec<&Value> = all.iter().filter(|r| r["open"] == true).collect();
    assert_eq!(
        opens.len(),
        1,
        "only the killed one is unfinished: {all:#?}"
    );
    assert_eq!(all.last().unwrap()["command"], "backup");
    assert!(all.last().unwrap()["open"].is_null());
}

#[test]
fn a_forget_killed_halfway_leaves_word_of_the_snapshots_it_was_removing() {
    // Its open record said only that a forget had not finished: which
    // snapshots it took along was nowhere.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut snaps = Vec::new();
    for i in 0..3 {
        fs::write(src.join("f"), format!("version {i}")).unwrap();
        snaps.push(
            env.backup(&[&src])["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Killed in the second deletion, the first record gone.
    let mut forget = env.cmd();
    forget.args(["forget", "--keep-last", "1"]);
    assert!(kill_when_stalled(&env, forget, "stall-delete=2:60000"));
    assert_eq!(snapshot_ids(&env).len(), 2);

    let all = records(&env);
    let last = all.last().unwrap();
    assert_eq!(last["command"], "forget", "{all:#?}");
    assert_eq!(last["open"], true, "{last}");
    let mut removing = ids(&last["removing"]["snapshots"]);
    removing.sort();
    let mut expected = snaps[..2].to_vec();
    expected.sort();
    assert_eq!(removing, expected, "{last}");
    let text = env.ok(&["audit"]);
    assert!(
        text.contains(&format!("it was to remove snapshot(s) {}", &snaps[0][..8])),
        "{text}"
    );
    let found = env.json(&["audit", "--snapshot", &snaps[1][..8]]);
    assert!(
        found.as_array().unwrap().iter().any(|r| r["open"] == true),
        "{found}"
    );
    // A forget that finishes records what it removed, and no intent.
    env.ok(&["forget", "--keep-last", "1"]);
    let last = records(&env).last().unwrap().clone();
    assert!(
        last["open"].is_null() && last["removing"].is_null(),
        "{last}"
    );
    assert_eq!(ids(&last["removed"]["snapshots"]).len(), 1, "{last}");
    env.assert_check_clean();
}

#[test]
fn no_change_is_made_without_its_open_record() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("f"), 100_000, 9);
    let objects = |dir: &str| fs::read_dir(env.repo.join(dir)).unwrap().count();
    let packs_before: usize = fs::read_dir(env.repo.join("data"))
        .unwrap()
        .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    // The open record cannot be written: the backup changes nothing.
    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "fail-audit=1")
        .arg("backup")
        .arg(&src)
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("injected I/O error"));
    let packs_after: usize = fs::read_dir(env.repo.join("data"))
        .unwrap()
        .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(packs_after, packs_before, "no pack without an open record");
    assert_eq!(objects("snapshots"), 0);
    assert_eq!(objects("index"), 0);

    // The closing record cannot be written: the backup is kept, the failure
    // is reported, and the trail shows the command as not finished.
    let out = env
        .cmd()
        .env("CAIRN_TEST_FAULTS", "fail-audit=2")
        .arg("backup")
        .arg(&src)
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("audit record of this command was not written"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(objects("snapshots"), 1);
    let all = records(&env);
    assert_eq!(all.last().unwrap()["open"], true, "{all:#?}");
    env.assert_check_clean();
}
