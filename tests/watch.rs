//! `cairn watch`: the real binary, real inotify, real files. Every wait has
//! a timeout, and the watcher is killed when a test ends however it ends.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Held while a watcher sets up inotify: the overflow test lowers the
/// system-wide queue limit for that moment, and no other watcher may
/// start meanwhile.
static STARTUP: Mutex<()> = Mutex::new(());

fn startup_lock() -> MutexGuard<'static, ()> {
    STARTUP.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `cairn --json watch` running in the background.
struct Watch {
    child: Child,
    events: Receiver<Value>,
    stderr: PathBuf,
    /// Every event read so far, for failure messages.
    seen: Vec<Value>,
}

impl Watch {
    /// Starts `cairn --json watch ARGS` and waits until it watches.
    fn start(env: &Env, args: &[&str]) -> Watch {
        let _g = startup_lock();
        Watch::start_locked(env, args, &[])
    }

    fn start_locked(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Watch {
        let stderr = env.path(&format!("watch-stderr-{}", rand::random::<u32>()));
        let mut cmd = env.cmd();
        cmd.arg("--json")
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cairn watch");
        let out = child.stdout.take().unwrap();
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut w = Watch {
            child,
            events,
            stderr,
            seen: Vec::new(),
        };
        let first = w.next_of("watching", Duration::from_secs(60));
        assert!(first["problem"].is_null(), "{first}");
        w
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "{why}\nevents so far:\n{}\nstderr:\n{}",
            self.seen
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// The next event of any type, or `None` after `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        match self.events.recv_timeout(timeout) {
            Ok(v) => {
                self.seen.push(v.clone());
                Some(v)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => self.fail("cairn watch exited"),
        }
    }

    /// The next event of type `kind`, skipping others.
    fn next_of(&mut self, kind: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(v) if v["message_type"] == kind => return v,
                Some(v) if v["message_type"] == "snapshot_failed" => {
                    self.fail(&format!("a snapshot failed: {v}"))
                }
                Some(_) => {}
                None => self.fail(&format!("no {kind} event within {timeout:?}")),
            }
        }
    }

    fn snapshot(&mut self) -> Value {
        self.next_of("snapshot", Duration::from_secs(120))
    }

    /// Sends SIGINT and returns the exit code.
    fn interrupt(mut self) -> (Option<i32>, Vec<Value>) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                self.fail("cairn watch did not exit within 30 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(v) = self.events.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(v);
        }
        (status.code(), std::mem::take(&mut self.seen))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Restores a sysctl when dropped.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    /// Sets `path` to `value`; `None` if that is not allowed here.
    fn set(path: &'static str, value: &str) -> Option<Sysctl> {
        let old = fs::read_to_string(path).ok()?;
        fs::write(path, value).ok()?;
        Some(Sysctl { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        fs::write(self.path, self.old.trim()).expect("restore sysctl");
    }
}

/// Restores the latest snapshot and compares it with `src`: names, kinds,
/// bytes, modes and times, directories included.
fn assert_latest_matches(env: &Env, src: &Path, step: &str) {
    let target = env.path(&format!("restore-{step}"));
    env.restore("latest", &target);
    assert_same_tree(src, &restored(&target, src));
    fs::remove_dir_all(&target).unwrap();
}

fn count_files_in_latest(env: &Env, dir: &Path) -> usize {
    let out = env.ok(&["ls", "latest", dir.to_str().unwrap()]);
    let prefix = format!("{}/", dir.display());
    out.lines().filter(|l| l.starts_with(&prefix)).count()
}

/// Runs a command, trying again while it finds the repository locked (by
/// watch writing a snapshot, or applying retention, at that moment).
fn ok_when_unlocked(env: &Env, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = env.run(args);
        assert_no_panic(&out);
        match out.status.code() {
            Some(0) => return String::from_utf8(out.stdout).unwrap(),
            Some(11) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            code => panic!(
                "cairn {args:?} exited with {code:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

#[test]
fn each_kind_of_change_appears_in_the_next_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("docs/deep")).unwrap();
    fs::write(src.join("a.txt"), "first version\n").unwrap();
    fs::write(src.join("gone.txt"), "to be deleted\n").unwrap();
    fs::write(src.join("old-name.txt"), "to be renamed\n").unwrap();
    fs::write(src.join("docs/deep/x.txt"), "deep\n").unwrap();
    write_random(&src.join("docs/big.bin"), 256 << 10, 1);
    let mut w = Watch::start(&env, &[src.to_str().unwrap(), "--debounce", "200ms"]);
    let first = w.snapshot();
    assert_eq!(first["full_rescan"], true, "{first}");
    assert_latest_matches(&env, &src, "first");

    let mut last = first["snapshot_id"].clone();
    let mut step = |w: &mut Watch, name: &str, change: &dyn Fn()| -> Value {
        change();
        let s = w.snapshot();
        assert_eq!(s["full_rescan"], false, "{name}: {s}");
        assert_eq!(s["parent"], last, "{name}: {s}");
        assert!(s["changed_paths"].as_u64().unwrap() >= 1, "{name}: {s}");
        assert!(s["lag_ms"].as_u64().unwrap() < 10_000, "{name}: {s}");
        assert_latest_matches(&env, &src, name);
        last = s["snapshot_id"].clone();
        s
    };

    let s = step(&mut w, "changed", &|| {
        fs::write(src.join("a.txt"), "second, longer version\n").unwrap()
    });
    assert_eq!(s["files_changed"], 1, "{s}");
    assert_eq!(s["bytes_read"], 23, "only the changed file is read: {s}");
    let s = step(&mut w, "new", &|| {
        fs::write(src.join("docs/new.txt"), "new file\n").unwrap()
    });
    assert_eq!(s["files_new"], 1, "{s}");
    step(&mut w, "renamed", &|| {
        fs::rename(src.join("old-name.txt"), src.join("new-name.txt")).unwrap()
    });
    step(&mut w, "deleted", &|| {
        fs::remove_file(src.join("gone.txt")).unwrap()
    });
    let s = step(&mut w, "new-dir", &|| {
        fs::create_dir(src.join("fresh")).unwrap();
        fs::write(src.join("fresh/inside.txt"), "in a new directory\n").unwrap();
    });
    assert_eq!(s["files_new"], 1, "{s}");
    // A renamed directory: its files are found unchanged at the old name.
    let s = step(&mut w, "renamed-dir", &|| {
        fs::rename(src.join("docs"), src.join("documents")).unwrap()
    });
    assert_eq!(s["bytes_read"], 0, "nothing is read again: {s}");
    step(&mut w, "deleted-dir", &|| {
        fs::remove_dir_all(src.join("documents/deep")).unwrap()
    });

    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
    // The totals of the incremental snapshots match what a full scan finds.
    let full = env.json(&["backup", src.to_str().unwrap(), "--force"]);
    let files = |v: &Value| {
        ["files_new", "files_changed", "files_unmodified"]
            .iter()
            .map(|k| v[k].as_u64().unwrap())
            .sum::<u64>()
    };
    let last_snap: Value = {
        let list: Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
        let id = last.as_str().unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("snapshot {id} not listed: {list}"))
    };
    let summary = &last_snap["summary"];
    assert_eq!(files(summary), files(&full), "{summary} vs {full}");
    assert_eq!(
        summary["total_bytes"], full["total_bytes"],
        "{summary} vs {full}"
    );
    assert_eq!(summary["dirs"], full["dirs"], "{summary} vs {full}");
}

#[test]
fn a_burst_of_10000_writes_coalesces_into_few_snapshots() {
    let env = Env::new();
    let src = env.path("src");
    let burst = src.join("burst");
    fs::create_dir_all(&burst).unwrap();
    let mut w = Watch::start(&env, &[src.to_str().unwrap()]);
    w.snapshot();
    for i in 0..10_000 {
        fs::write(burst.join(format!("f{i:05}")), format!("file {i}\n")).unwrap();
    }
    let written = Instant::now();
    // Wait until a snapshot taken after the burst, then for quiet.
    let mut snapshots = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            w.fail("the burst was not snapshotted within 180 s");
        }
        match w.next(Duration::from_secs(5).min(left)) {
            Some(v) if v["message_type"] == "snapshot" => snapshots.push(v),
            Some(_) => {}
            None if !snapshots.is_empty() && written.elapsed() > Duration::from_secs(5) => break,
            None => {}
        }
    }
    for s in &snapshots {
        eprintln!(
            "burst snapshot: {} changed paths, {} ms, lag {} ms, full rescan {}",
            s["changed_paths"], s["duration_ms"], s["lag_ms"], s["full_rescan"]
        );
    }
    assert!(
        snapshots.len() < 10,
        "{} snapshots for one burst: {snapshots:?}",
        snapshots.len()
    );
    assert_eq!(count_files_in_latest(&env, &burst), 10_000);
}

#[test]
fn an_inotify_queue_overflow_falls_back_to_a_full_rescan() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("seed"), "seed\n").unwrap();
    let mut w = {
        let _g = startup_lock();
        // The queue limit applies to inotify instances created while it is
        // set: only this watcher's. Restored as soon as it is watching.
        match Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "4") {
            Some(_restore) => {
                Watch::start_locked(&env, &[src.to_str().unwrap(), "--debounce", "300ms"], &[])
            }
            None => {
                eprintln!("cannot lower fs.inotify.max_queued_events here: injecting the overflow");
                Watch::start_locked(
                    &env,
                    &[src.to_str().unwrap(), "--debounce", "300ms"],
                    &[("CAIRN_TEST_WATCH_OVERFLOW_AFTER", "3")],
                )
            }
        }
    };
    w.snapshot();
    for i in 0..200 {
        fs::write(src.join("d").join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    let rescan = w.next_of("rescan", Duration::from_secs(60));
    assert!(
        rescan["reason"].as_str().unwrap().contains("overflow"),
        "{rescan}"
    );
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], true, "{s}");
    assert_latest_matches(&env, &src, "after-overflow");
    assert_eq!(count_files_in_latest(&env, &src.join("d")), 200);
    // The watcher was set up afresh: later changes are seen one by one again.
    fs::write(src.join("d/after"), "after\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], false, "{s}");
    assert_latest_matches(&env, &src, "after-recovery");
}

#[test]
fn sigint_exits_0_and_a_restart_resumes_from_the_latest_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big.bin"), 2 << 20, 7);
    fs::write(src.join("small.txt"), "one\n").unwrap();
    let args = [src.to_str().unwrap(), "--debounce", "200ms"];
    let mut w = Watch::start(&env, &args);
    let first = w.snapshot();
    assert!(first["bytes_read"].as_u64().unwrap() >= 2 << 20, "{first}");
    fs::write(src.join("small.txt"), "two\n").unwrap();
    let second = w.snapshot();
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
    assert!(
        events.iter().any(|e| e["message_type"] == "stopped"),
        "{events:?}"
    );

    // A change while watch is not running is found by the restart, which
    // reads only it.
    fs::write(src.join("small.txt"), "three\n").unwrap();
    let mut w = Watch::start(&env, &args);
    let resumed = w.snapshot();
    assert_eq!(resumed["parent"], second["snapshot_id"], "{resumed}");
    assert_eq!(resumed["bytes_read"], 6, "{resumed}");
    assert_eq!(resumed["files_changed"], 1, "{resumed}");
    assert_latest_matches(&env, &src, "resumed");
    let (code, _) = w.interrupt();
    assert_eq!(code, Some(0));
}

#[test]
fn retention_prune_and_other_commands_work_while_watching() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "0\n").unwrap();
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--debounce",
            "200ms",
            "--keep-last",
            "2",
            "--prune-every",
            "1s",
        ],
    );
    w.snapshot();
    for i in 1..=3 {
        std::thread::sleep(Duration::from_millis(600));
        fs::write(src.join("f"), format!("{i}\n")).unwrap();
        w.snapshot();
    }
    // Retention runs after each snapshot; prune at most once a second.
    for kind in ["forget", "prune"] {
        if !w.seen.iter().any(|e| e["message_type"] == kind) {
            w.next_of(kind, Duration::from_secs(30));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Value = serde_json::from_str(&env.ok(&["snapshots", "--json"])).unwrap();
        if list.as_array().unwrap().len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "--keep-last 2 left {list}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Between snapshots watch holds no lock: exclusive commands run. Here
    // they even remove the snapshot watch builds on; the next snapshot
    // notices and rescans instead of reusing pruned trees.
    ok_when_unlocked(&env, &["forget", "latest"]);
    ok_when_unlocked(&env, &["prune"]);
    fs::write(src.join("g"), "new\n").unwrap();
    let rescan = w.next_of("rescan", Duration::from_secs(30));
    assert!(
        rescan["reason"].as_str().unwrap().contains("removed"),
        "{rescan}"
    );
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], true, "{s}");
    assert_latest_matches(&env, &src, "after-forget");
    let check = ok_when_unlocked(&env, &["--json", "check", "--read-data"]);
    let check: Value = serde_json::from_str(check.lines().last().unwrap()).unwrap();
    assert!(check["errors"].as_array().unwrap().is_empty(), "{check}");
    let (code, _) = w.interrupt();
    assert_eq!(code, Some(0));
}
