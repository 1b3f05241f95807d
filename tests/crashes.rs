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
    assert!(points >= 2, "only {points} points to stop at");
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
            let pack = biggest_pack(env);
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

/// The biggest pack of `env`'s repository (big.bin's data).
fn biggest_pack(env: &Env) -> std::path::PathBuf {
    walkdir::WalkDir::new(env.repo.join("data"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .into_path()
}

#[test]
fn kill_9_at_each_step_of_repair_snapshots() {
    at_every_change(
        |env| {
            source(env);
            env.backup(&[env.path("src")]);
            let pack = biggest_pack(env);
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
