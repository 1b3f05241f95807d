//! kill -9 at each object write and each deletion of the commands that
//! change a repository: what is left must pass `check`, the same command
//! run again must finish, and a backup must complete after it.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Where a command is stopped: at its Nth object write or Nth deletion
/// (locks and audit records not counted).
#[derive(Clone, Copy, Debug)]
enum At {
    Write(u32),
    Delete(u32),
}

/// A command to stop, on a repository set up for it.
struct Job {
    args: Vec<String>,
    /// Variables for the command (a copy's source password).
    vars: Vec<(String, String)>,
    /// What must live as long as the job (a copy's source repository).
    _keep: Option<Env>,
    /// The repository is damaged before the job runs (which repairs it):
    /// `check` may report that damage after a kill, not more.
    damaged: bool,
    /// The password that opens the repository once the job is done.
    password_after: Option<String>,
}

impl Job {
    fn new(args: &[&str]) -> Job {
        Job {
            args: args.iter().map(|a| a.to_string()).collect(),
            vars: Vec::new(),
            _keep: None,
            damaged: false,
            password_after: None,
        }
    }

    fn cmd(&self, env: &Env) -> std::process::Command {
        let mut c = env.cmd();
        c.args(&self.args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }
}

/// Runs `job` with a stall at `at` and kills it there with SIGKILL; false
/// if it finished before it got there.
fn kill_at(env: &Env, job: &Job, at: At) -> bool {
    let stall = match at {
        At::Write(n) => format!("stall-write={n}:60000"),
        At::Delete(n) => format!("stall-delete={n}:60000"),
    };
    kill_when_stalled(env, job.cmd(env), &stall)
}

/// Kills the job `setup` makes (on a new repository each time) at each of
/// its writes and deletions in turn; after each kill the repository passes
/// `check --read-data`, the job run again finishes and leaves what `done`
/// checks, and a backup of `src` follows.
fn at_every_change(setup: impl Fn(&Env) -> Job, done: impl Fn(&Env)) {
    at_each_change(2, setup, done);
}

/// [`at_every_change`] for a job that makes at least `least` writes and
/// deletions.
fn at_each_change(least: u32, setup: impl Fn(&Env) -> Job, done: impl Fn(&Env)) {
    let mut points = 0;
    for kind in [At::Write as fn(u32) -> At, At::Delete] {
        for n in 1.. {
            let mut env = Env::new();
            let job = setup(&env);
            let at = kind(n);
            let errors = |env: &Env| {
                let out = env.run(&["--json", "check", "--read-data"]);
                last_json(&out)["errors"].as_array().unwrap().len()
            };
            let before = if job.damaged { errors(&env) } else { 0 };
            if !kill_at(&env, &job, at) {
                break;
            }
            points += 1;
            let after = errors(&env);
            assert!(
                after <= before,
                "{:?} killed at {at:?}: check found {after} errors, {before} before",
                job.args
            );
            let out = job.cmd(&env).output().unwrap();
            assert_no_panic(&out);
            assert!(
                out.status.success(),
                "{:?} run again after a kill at {at:?}: {}",
                job.args,
                String::from_utf8_lossy(&out.stderr)
            );
            if let Some(p) = &job.password_after {
                env.password = p.clone();
            }
            done(&env);
            env.assert_check_clean();
            env.backup(&[env.path("src")]);
            env.assert_check_clean();
        }
    }
    assert!(points >= least, "only {points} points to stop at");
}

/// A source of a few files, some large enough for packs of their own.
fn source(env: &Env) {
    let src = env.path("src");
    fs::create_dir_all(src.join("secret")).unwrap();
    fs::write(src.join("notes.txt"), "notes\n".repeat(1000)).unwrap();
    fs::write(src.join("secret/key"), "do not keep").unwrap();
    write_random(&src.join("big.bin"), 3 << 20, 9);
}

fn restores_as(env: &Env, spec: &str, src: &Path) {
    let t = env.path(&format!("restored-{}", rand_suffix()));
    env.restore(spec, &t);
    assert_same_tree(src, &restored(&t, src));
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn kill_9_at_each_step_of_forget_with_prune() {
    at_every_change(
        |env| {
            source(env);
            let src = env.path("src");
            env.backup(&[&src]);
            write_random(&src.join("big.bin"), 3 << 20, 10);
            env.backup(&[&src]);
            write_random(&src.join("big.bin"), 3 << 20, 11);
            env.backup(&[&src]);
            Job::new(&["forget", "--keep-last", "1", "--prune"])
        },
        |env| {
            assert_eq!(snapshot_ids(env).len(), 1);
            restores_as(env, "latest", &env.path("src"));
        },
    );
}

#[test]
fn kill_9_at_each_step_of_rewrite() {
    // With --prune, run again after a kill, the removed data is gone too.
    for prune in [false, true] {
        at_every_change(
            |env| {
                source(env);
                env.backup(&[env.path("src")]);
                let mut args = vec!["rewrite", "latest", "--exclude", "/**/secret"];
                if prune {
                    args.push("--prune");
                }
                Job::new(&args)
            },
            |env| {
                assert_eq!(snapshot_ids(env).len(), 1);
                let listed = env.ok(&["ls", "latest"]);
                assert!(!listed.contains("secret"), "{listed}");
                assert!(listed.contains("big.bin"), "{listed}");
                if prune {
                    let r = env.json(&["prune", "--dry-run", "--max-unused", "0"]);
                    assert_eq!(r["unused_blobs"], 0, "{r}");
                }
            },
        );
    }
}

#[test]
fn kill_9_at_each_step_of_copy() {
    at_every_change(
        |env| {
            source(env);
            let from = Env::new();
            let src = env.path("src");
            from.backup(&[&src]);
            fs::write(src.join("notes.txt"), "changed").unwrap();
            from.backup(&[&src]);
            let mut job = Job::new(&["copy", "--from-repo", from.repo.to_str().unwrap()]);
            job.vars
                .push(("CAIRN_FROM_PASSWORD".into(), from.password.clone()));
            job._keep = Some(from);
            job
        },
        |env| {
            assert_eq!(snapshot_ids(env).len(), 2);
            restores_as(env, "latest", &env.path("src"));
        },
    );
}

#[test]
fn kill_9_at_each_step_of_repair_packs() {
    at_every_change(
        |env| {
            source(env);
            env.backup(&[env.path("src")]);
            // The biggest pack (big.bin's data) gets one flipped byte.
            let pack = largest_pack(&env.repo);
            let n = fs::metadata(&pack).unwrap().len() as usize;
            flip_byte(&pack, n / 2);
            let name = pack.file_name().unwrap().to_str().unwrap().to_string();
            let mut job = Job::new(&["repair", "packs", &name]);
            job.damaged = true;
            job
        },
        |env| {
            // The snapshot lost big.bin's damaged blob: the repair of the
            // snapshots drops it, and what is left restores.
            env.ok(&["repair", "snapshots", "--forget"]);
        },
    );
}

#[test]
fn kill_9_at_each_step_of_recover() {
    at_every_change(
        |env| {
            source(env);
            let id = env.backup(&[env.path("src")])["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string();
            env.ok(&["forget", &id]);
            Job::new(&["recover"])
        },
        |env| {
            let snaps = env.json(&["snapshots", "--tag", "recovered"]);
            assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
            // The lost snapshot's tree, under its ID, not under the tree a
            // killed run wrote to hold it.
            let t = env.path("recovered");
            env.restore_recovered(&t);
            let tops: Vec<_> = fs::read_dir(&t)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(tops.len(), 1, "{tops:?}");
            let src = env.path("src");
            assert_same_tree(&src, &restored(&tops[0], &src));
        },
    );
}

#[test]
fn kill_9_at_each_step_of_repair_snapshots() {
    at_every_change(
        |env| {
            source(env);
            env.backup(&[env.path("src")]);
            let pack = largest_pack(&env.repo);
            fs::remove_file(&pack).unwrap();
            env.ok(&[
                "repair",
                "packs",
                pack.file_name().unwrap().to_str().unwrap(),
            ]);
            let mut job = Job::new(&["repair", "snapshots", "--forget"]);
            job.damaged = true;
            job
        },
        |env| {
            let snaps = env.json(&["snapshots"]);
            let snaps = snaps.as_array().unwrap();
            assert_eq!(snaps.len(), 1, "{snaps:?}");
            assert!(snaps[0]["tags"].to_string().contains("repaired"));
            let listed = env.ok(&["ls", "latest"]);
            assert!(!listed.contains("big.bin"), "{listed}");
            env.restore("latest", &env.path("after-repair"));
        },
    );
}

#[test]
fn kill_9_at_each_step_of_repair_index_and_tag() {
    for args in [&["repair", "index"][..], &["tag", "--add", "x", "latest"]] {
        at_every_change(
            |env| {
                source(env);
                env.backup(&[env.path("src")]);
                Job::new(args)
            },
            |env| {
                assert_eq!(snapshot_ids(env).len(), 1);
                restores_as(env, "latest", &env.path("src"));
            },
        );
    }
}

#[test]
fn a_backup_removes_the_locks_of_backups_killed_on_this_machine() {
    // Only an exclusive command (forget, prune) or `unlock` removed them,
    // and every command read them all until then: a machine whose backups
    // were often cut short (shut down mid-way) piled them up.
    let env = Env::new();
    source(&env);
    let src = env.path("src");
    for _ in 0..3 {
        let job = Job::new(&["backup", src.to_str().unwrap()]);
        assert!(kill_at(&env, &job, At::Write(1)));
        write_random(&src.join("big.bin"), 3 << 20, rand_suffix() as u64 + 100);
    }
    let locks = || finished_objects(&env.repo.join("locks"));
    // Each one removed the lock the one before it left.
    assert_eq!(locks(), 1);
    env.backup(&[&src]);
    assert_eq!(locks(), 0);
    env.assert_check_clean();
}

#[test]
fn kill_9_at_each_step_of_hold_release_and_key_passwd() {
    for release in [false, true] {
        at_every_change(
            |env| {
                source(env);
                env.backup(&[env.path("src")]);
                if release {
                    env.ok(&["hold", "latest"]);
                    Job::new(&["hold", "--release", "latest"])
                } else {
                    Job::new(&["hold", "latest"])
                }
            },
            |env| {
                let snaps = env.json(&["snapshots"]);
                assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
                assert_eq!(snaps[0]["hold"], !release, "{snaps}");
                assert_eq!(finished_objects(&env.repo.join("snapshots")), 1);
            },
        );
    }
    at_every_change(
        |env| {
            source(env);
            env.backup(&[env.path("src")]);
            let file = env.path("new-password");
            fs::write(&file, "a new password").unwrap();
            let mut job = Job::new(&[
                "key",
                "passwd",
                "--new-password-file",
                file.to_str().unwrap(),
            ]);
            job.password_after = Some("a new password".into());
            job
        },
        |env| {
            let keys = env.json(&["key", "list"]);
            assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
            restores_as(env, "latest", &env.path("src"));
        },
    );
}

/// `init` run again after it was killed: finishes the repository, or says
/// that the killed one had finished it. Either way the repository opens,
/// every key file in it opens it, and a backup and check follow.
fn init_finished_after_kill(env: &Env, what: &str) {
    let out = env.run(&["init"]);
    if !out.status.success() {
        let err = exits(&out, 1);
        assert!(err.contains("a repository already exists"), "{what}: {err}");
    }
    let keys = env.json(&["key", "list"]);
    let keys = keys.as_array().unwrap();
    assert!(!keys.is_empty() && keys.len() <= 2, "{what}: {keys:?}");
    // Each key file opens the repository: a spare copy of the master key,
    // never one of another.
    let dir = env.repo.join("keys");
    let aside = env.path("keys-aside");
    fs::create_dir_all(&aside).unwrap();
    for k in keys {
        let id = k["id"].as_str().unwrap();
        let others: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_str() != Some(id))
            .collect();
        for n in &others {
            fs::rename(dir.join(n), aside.join(n)).unwrap();
        }
        let out = env.run(&["snapshots"]);
        assert!(
            out.status.success(),
            "{what}: key {id} alone does not open the repository"
        );
        for n in &others {
            fs::rename(aside.join(n), dir.join(n)).unwrap();
        }
    }
    source(env);
    env.backup(&[env.path("src")]);
    env.assert_check_clean();
    restores_as(env, "latest", &env.path("src"));
}

#[test]
fn kill_9_at_each_step_of_init() {
    let init = |env: &Env| {
        let mut c = env.cmd();
        c.arg("init");
        c
    };
    let mut points = 0;
    for n in 1.. {
        let env = Env::uninit();
        if !kill_when_stalled(&env, init(&env), &format!("stall-write={n}:60000")) {
            break;
        }
        points += 1;
        init_finished_after_kill(&env, &format!("init killed at write {n}"));
    }
    assert!(points >= 2, "only {points} points to stop at");
    // An init killed after its key file, then the init that finishes it
    // killed at each of its own writes and deletions: a third run finishes.
    let mut points = 0;
    for stall in ["stall-write", "stall-delete"] {
        for n in 1.. {
            let env = Env::uninit();
            assert!(kill_when_stalled(&env, init(&env), "stall-write=2:60000"));
            if !kill_when_stalled(&env, init(&env), &format!("{stall}={n}:60000")) {
                break;
            }
            points += 1;
            init_finished_after_kill(&env, &format!("second init killed at {stall} {n}"));
        }
    }
    assert!(
        points >= 3,
        "only {points} points to stop the second init at"
    );
}

#[test]
fn init_does_not_take_up_a_key_file_its_password_does_not_open() {
    let env = Env::uninit();
    let cmd = env.cmd();
    let mut cmd = cmd;
    cmd.arg("init").env("CAIRN_PASSWORD", "the first password");
    assert!(kill_when_stalled(&env, cmd, "stall-write=2:60000"));
    let err = env.fails(&["init"], 1);
    assert!(
        err.contains("a repository is already being created")
            && err.contains("run `init` again with the password of the one that was interrupted"),
        "{err}"
    );
    let keys = fs::read_dir(env.repo.join("keys")).unwrap().count();
    assert_eq!(keys, 1, "the other password's key file is left alone");
    ok_as(&env, "the first password", &["init"]);
    let out = run_as(&env, "the first password", &["--json", "key", "list"]);
    assert_eq!(last_json(&out).as_array().unwrap().len(), 1);
}

#[test]
fn init_removes_key_files_of_two_interrupted_inits_with_one_password() {
    // Two inits at one place with the same password, both killed after
    // their key files: neither master key is taken up, both files go.
    let env = Env::uninit();
    let other = Env::uninit();
    for e in [&env, &other] {
        let mut c = e.cmd();
        c.arg("init");
        assert!(kill_when_stalled(e, c, "stall-write=2:60000"));
    }
    let theirs = fs::read_dir(other.repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    fs::copy(
        theirs.path(),
        env.repo.join("keys").join(theirs.file_name()),
    )
    .unwrap();
    let before: Vec<_> = fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    env.ok(&["init"]);
    let after: Vec<_> = fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(!before.contains(&after[0]), "a leftover key file was kept");
    source(&env);
    env.backup(&[env.path("src")]);
    env.assert_check_clean();
}

#[test]
fn init_does_not_take_up_the_master_key_of_a_key_file_put_in_its_way() {
    // Someone who holds a key to repository A copies the user's own key
    // file of A (same password) where the user is about to make B: init
    // took it for an interrupted init's and made B with A's master key,
    // which the other key holders of A know.
    let a = Env::new();
    let keys_of = |env: &Env| -> Vec<std::path::PathBuf> {
        fs::read_dir(env.repo.join("keys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let users = keys_of(&a);
    assert_eq!(users.len(), 1);
    let pw_file = a.path("theirs");
    fs::write(&pw_file, "the other key holder's password").unwrap();
    a.ok(&[
        "key",
        "add",
        "--new-password-file",
        pw_file.to_str().unwrap(),
    ]);
    let theirs = keys_of(&a)
        .into_iter()
        .find(|k| !users.contains(k))
        .expect("their key file");
    let b = Env::uninit();
    for d in ["keys", "snapshots", "data"] {
        fs::create_dir_all(b.repo.join(d)).unwrap();
    }
    let name = |k: &std::path::Path| k.file_name().unwrap().to_owned();
    fs::copy(&users[0], b.repo.join("keys").join(name(&users[0]))).unwrap();
    b.ok(&["init"]);
    // Their key file put into B later does not open it.
    fs::copy(&theirs, b.repo.join("keys").join(name(&theirs))).unwrap();
    let out = run_as(&b, "the other key holder's password", &["snapshots"]);
    assert!(!out.status.success(), "A's other key opens B");
    let src = b.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "data").unwrap();
    b.backup(&[&src]);
    b.assert_check_clean();
}

#[test]
fn kill_9_at_each_step_of_key_add_and_remove_and_config() {
    let file = |env: &Env| {
        let file = env.path("new-password");
        fs::write(&file, "a second password").unwrap();
        file.to_str().unwrap().to_string()
    };
    at_each_change(
        1,
        |env| {
            source(env);
            env.backup(&[env.path("src")]);
            Job::new(&["key", "add", "--new-password-file", &file(env)])
        },
        |env| {
            let keys = env.json(&["key", "list"]);
            assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
            ok_as(env, "a second password", &["snapshots"]);
        },
    );
    at_each_change(
        1,
        |env| {
            source(env);
            env.backup(&[env.path("src")]);
            env.ok(&["key", "add", "--new-password-file", &file(env)]);
            let other = env
                .json(&["key", "list"])
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["current"] != true)
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            Job::new(&["key", "remove", &other])
        },
        |env| {
            assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 1);
            exits(&run_as(env, "a second password", &["snapshots"]), 12);
            restores_as(env, "latest", &env.path("src"));
        },
    );
    for on in [true, false] {
        at_each_change(
            1,
            |env| {
                source(env);
                env.backup(&[env.path("src")]);
                if !on {
                    env.ok(&["config", "append-only", "on"]);
                }
                Job::new(&["config", "append-only", if on { "on" } else { "off" }])
            },
            |env| {
                let out = env.json(&["config", "append-only"]);
                assert_eq!(out["append_only"], on, "{out}");
                restores_as(env, "latest", &env.path("src"));
            },
        );
    }
    at_each_change(
        1,
        |env| {
            let env2 = Env::with_format(2);
            // The job runs on env; move env2's repository there.
            fs::remove_dir_all(&env.repo).unwrap();
            fs::rename(&env2.repo, &env.repo).unwrap();
            source(env);
            env.backup(&[env.path("src")]);
            Job::new(&["config", "format-version", "3"])
        },
        |env| {
            let out = env.json(&["config", "format-version"]);
            assert_eq!(out["format_version"], 3, "{out}");
            restores_as(env, "latest", &env.path("src"));
        },
    );
}
