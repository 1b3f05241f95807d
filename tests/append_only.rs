//! Append-only repositories and keys: backup and restore work; everything
//! that would delete or replace data is refused with exit 13 and leaves the
//! repository exactly as it was.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{
    Env, add_append_only_key, assert_same_tree, exits, ok_as, restored, run_as, snapshot_ids,
    write_random,
};

const EXIT_APPEND_ONLY: i32 = 13;
const EXIT_WRONG_PASSWORD: i32 = 12;

/// Every file of the repository with its bytes, except lock objects (each
/// command writes and removes its own lock).
fn repo_state(repo: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(repo)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(repo).unwrap().to_path_buf())
        .filter(|p| !p.starts_with("locks"))
        .map(|p| {
            let bytes = std::fs::read(repo.join(&p)).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs `args` and asserts it is refused with exit 13 and `reason` in the message.
fn assert_refused(env: &Env, password: &str, args: &[&str], reason: &str) {
    let out = run_as(env, password, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_APPEND_ONLY),
        "cairn {args:?} was not refused: stdout {} stderr {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("refused: ") && err.contains(reason),
        "cairn {args:?}: message {err:?} does not say {reason:?}"
    );
}

fn make_source(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    write_random(&src.join("a.bin"), 300_000, 1);
    write_random(&src.join("sub/b.bin"), 50_000, 2);
    std::fs::write(src.join("sub/c.txt"), b"hello").unwrap();
    src
}

/// The commands that must be refused, each with the word its message names.
fn deleting_commands(first_snapshot: &str, other_key: &str) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        s(&["forget", first_snapshot]),
        s(&["forget", "--keep-last", "1"]),
        s(&["prune"]),
        s(&["repair", "index"]),
        s(&["repair", "snapshots", "--forget"]),
        s(&["repair", "packs", "0000"]),
        s(&["tag", "--add", "x", "latest"]),
        s(&["hold", "latest"]),
        s(&["key", "remove", other_key]),
        s(&["unlock", "--remove-all"]),
    ]
}

fn key_ids(env: &Env, password: &str) -> Vec<(String, bool, bool)> {
    let out = ok_as(env, password, &["--json", "key", "list"]);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                k["current"].as_bool().unwrap(),
                k["append_only"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn append_only_repository_keeps_everything_until_switched_off() {
    let env = Env::uninit();
    let out = env.json(&["init", "--append-only"]);
    assert_eq!(out["append_only"], true);
    let src = make_source(&env);
    env.backup(&[&src]);
    write_random(&src.join("a.bin"), 300_000, 3);
    env.backup(&[&src]);
    let target = env.path("restore");
    env.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));

    let pw2 = env.path("pw2");
    std::fs::write(&pw2, "second password").unwrap();
    env.ok(&["key", "add", "--new-password-file", pw2.to_str().unwrap()]);
    let other = key_ids(&env, &env.password)
        .into_iter()
        .find(|k| !k.1)
        .unwrap()
        .0;
    // A temporary file a crashed write left behind an hour ago: prune would
    // remove it, so it must survive the refused prune.
    let tmp = env
        .repo
        .join(format!("data/00/.tmp-{}-0123abcd", "00".repeat(32)));
    std::fs::write(&tmp, b"partial").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let ids = snapshot_ids(&env);
    assert_eq!(ids.len(), 2);
    let before = repo_state(&env.repo);
    assert!(before.keys().any(|p| p.starts_with("snapshots")) && before.len() > 6);
    for cmd in deleting_commands(&ids[0], &other) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        assert_refused(&env, &env.password, &args, "the repository is append-only");
    }
    let pw3 = env.path("pw3");
    std::fs::write(&pw3, "third password").unwrap();
    assert_refused(
        &env,
        &env.password,
        &[
            "key",
            "passwd",
            "--new-password-file",
            pw3.to_str().unwrap(),
        ],
        "the repository is append-only",
    );
    assert_eq!(
        repo_state(&env.repo),
        before,
        "a refused command changed the repository"
    );
    // Each refused command still released its lock: lock deletion stays allowed.
    assert_eq!(
        std::fs::read_dir(env.repo.join("locks")).unwrap().count(),
        0,
        "locks left behind"
    );
    // So is removing stale locks, as every exclusive command does.
    assert!(env.ok(&["unlock"]).contains("0 lock(s) removed"));
    // Reading and dry runs are not deletions.
    env.ok(&["forget", "--dry-run", "--keep-last", "1"]);
    env.ok(&["prune", "--dry-run"]);
    env.ok(&["check", "--read-data"]);
    assert_eq!(repo_state(&env.repo), before);
    assert!(
        env.ok(&["config", "append-only"])
            .contains("append-only: on")
    );

    // Switching off (with a key that is not append-only) makes deletion possible again.
    assert!(
        env.ok(&["config", "append-only", "off"])
            .contains("append-only: off")
    );
    env.ok(&["forget", &ids[0]]);
    assert_eq!(snapshot_ids(&env), vec![ids[1].clone()]);
    env.ok(&["prune"]);
    assert!(!tmp.exists(), "prune removes old temporaries once allowed");
    env.ok(&["check", "--read-data"]);
    let again = env.path("again");
    env.restore("latest", &again);
    assert_same_tree(&src, &restored(&again, &src));
}

#[test]
fn append_only_key_can_back_up_but_not_delete() {
    let env = Env::new();
    let src = make_source(&env);
    env.backup(&[&src]);
    add_append_only_key(&env, "append only password");
    let ao = "append only password";
    let keys = key_ids(&env, ao);
    let (ao_id, _, _) = keys.iter().find(|k| k.1).unwrap().clone();
    assert!(keys.iter().find(|k| k.1).unwrap().2, "{keys:?}");
    let (full_id, _, full_ao) = keys.iter().find(|k| !k.1).unwrap().clone();
    assert!(!full_ao);
    assert!(ok_as(&env, ao, &["key", "list"]).contains("append-only"));

    // The append-only key backs up and restores.
    write_random(&src.join("sub/new.bin"), 100_000, 4);
    ok_as(&env, ao, &["backup", src.to_str().unwrap()]);
    let target = env.path("restore");
    ok_as(
        &env,
        ao,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&src, &restored(&target, &src));
    // It may add keys, but only append-only ones.
    let pw3 = env.path("pw3");
    std::fs::write(&pw3, "third").unwrap();
    ok_as(
        &env,
        ao,
        &[
            "key",
            "add",
            "--append-only",
            "--new-password-file",
            pw3.to_str().unwrap(),
        ],
    );

    let ids = snapshot_ids(&env);
    assert_eq!(ids.len(), 2);
    let before = repo_state(&env.repo);
    let reason = format!("the key in use ({}) is append-only", &ao_id[..8]);
    for cmd in deleting_commands(&ids[0], &full_id) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        assert_refused(&env, ao, &args, &reason);
    }
    for args in [
        vec![
            "key",
            "passwd",
            "--new-password-file",
            pw3.to_str().unwrap(),
        ],
        vec!["key", "add", "--new-password-file", pw3.to_str().unwrap()],
        vec!["config", "append-only", "off"],
    ] {
        assert_refused(&env, ao, &args, &reason);
    }
    assert_eq!(
        repo_state(&env.repo),
        before,
        "a refused command changed the repository"
    );
    // Switching the repository on is a restriction, so the key may do it;
    // only a full key switches it off again.
    assert!(ok_as(&env, ao, &["config", "append-only", "on"]).contains("append-only: on"));
    assert_refused(
        &env,
        &env.password,
        &["forget", &ids[0]],
        "the repository is append-only",
    );
    env.ok(&["config", "append-only", "off"]);

    // The full key still deletes: the restriction belongs to the other key.
    env.ok(&["forget", &ids[0]]);
    env.ok(&["prune"]);
    assert_eq!(snapshot_ids(&env), vec![ids[1].clone()]);
    env.ok(&["key", "remove", &ao_id]);
    exits(&run_as(&env, ao, &["snapshots"]), EXIT_WRONG_PASSWORD);
    env.ok(&["check", "--read-data"]);
}

#[test]
fn stripping_the_flag_from_a_key_file_does_not_lift_it() {
    let env = Env::new();
    add_append_only_key(&env, "append only password");
    let ao = "append only password";
    let keys = key_ids(&env, ao);
    let ao_id = &keys.iter().find(|k| k.1).unwrap().0;
    let path = env.repo.join("keys").join(ao_id);
    let json = std::fs::read_to_string(&path).unwrap();
    assert!(json.contains("\"append_only\": true"), "{json}");
    // An attacker with write access to keys/ edits the flag away ...
    let stripped = json.replace("\"append_only\": true", "\"append_only\": false");
    std::fs::write(&path, stripped).unwrap();
    // ... and the key stops opening instead of becoming a full key.
    let err = exits(
        &run_as(&env, ao, &["forget", "--keep-last", "1"]),
        EXIT_WRONG_PASSWORD,
    );
    assert!(err.contains("wrong password"));
    // Putting it back restores the append-only key.
    std::fs::write(&path, json).unwrap();
    assert!(ok_as(&env, ao, &["config", "append-only"]).contains("the key in use is append-only"));
}

#[test]
fn a_key_file_with_the_costliest_parameters_is_tried_last() {
    let env = Env::new();
    let keys = env.repo.join("keys");
    let real = std::fs::read_dir(&keys)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    // Within the bounds a reader accepts; about a minute and 1 GiB each
    // time it is tried. A host with an append-only key can add it, under
    // a name that sorts before every real key's.
    forged["m_cost"] = (1024 * 1024).into();
    forged["t_cost"] = 100.into();
    std::fs::write(
        keys.join("0".repeat(64)),
        serde_json::to_vec_pretty(&forged).unwrap(),
    )
    .unwrap();
    let mut child = env
        .cmd()
        .args(["snapshots"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let status = status.expect("the right password still waited for the forged key's Argon2");
    assert!(status.success(), "{status:?}");
}
