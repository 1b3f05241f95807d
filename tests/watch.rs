//! `cairn watch`: the real binary, real inotify, real files. Every wait has
//! a timeout, and the watcher is killed when a test ends however it ends.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A `cairn --json watch` running in the background.
struct Watch {
    child: Child,
    events: Receiver<Value>,
    stderr: PathBuf,
    /// Every event read so far, for failure messages.
    seen: Vec<Value>,
}

impl Watch {
    /// Starts `cairn --json watch ARGS` and waits until it watches, with
    /// every directory watched.
    fn start(env: &Env, args: &[&str]) -> Watch {
        let (w, first) = Watch::spawn(env, env.cmd(), args);
        assert!(first["problem"].is_null(), "{first}");
        w
    }

    /// Runs `cmd` (cairn, or a program that runs cairn with the arguments
    /// it is given) with `--json watch ARGS`; returns it and its `watching`
    /// event.
    fn spawn(env: &Env, mut cmd: Command, args: &[&str]) -> (Watch, Value) {
        let stderr = env.path(&format!("watch-stderr-{}", rand::random::<u32>()));
        cmd.arg("--json")
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap());
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
        (w, first)
    }

    /// Waits until the watcher's state (in `/proc/PID/stat`) is `state`.
    fn wait_for_state(&self, state: char) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = proc_stat(self.child.id());
            if stat.starts_with(state) {
                return;
            }
            assert!(Instant::now() < deadline, "state never {state}: {stat}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the watcher.
    fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
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

    /// Waits for `n` failed snapshots, with no snapshot between.
    fn failures(&mut self, n: usize) {
        let mut failures = 0;
        while failures < n {
            match self.next(Duration::from_secs(60)) {
                Some(v) if v["message_type"] == "snapshot_failed" => failures += 1,
                Some(v) if v["message_type"] == "snapshot" => self.fail(&format!("{v}")),
                Some(_) => {}
                None => self.fail("no snapshot_failed event within 60 s"),
            }
        }
    }

    /// Fails if a backup run (a snapshot, or one that found nothing
    /// changed) comes within `quiet`, as one for `what` would.
    fn no_run_for(&mut self, quiet: Duration, what: &str) {
        let until = Instant::now() + quiet;
        while let Some(v) = self.next(until.saturating_duration_since(Instant::now())) {
            if ["snapshot", "unchanged"].contains(&v["message_type"].as_str().unwrap()) {
                self.fail(&format!("a run for {what}: {v}"));
            }
        }
    }

    fn snapshot(&mut self) -> Value {
        self.next_of("snapshot", Duration::from_secs(120))
    }

    /// Sends SIGINT and returns the exit code.
    fn interrupt(self) -> (Option<i32>, Vec<Value>) {
        self.stop_with(libc::SIGINT)
    }

    /// Sends `sig` (SIGINT, SIGTERM or SIGHUP) and returns the exit code.
    fn stop_with(mut self, sig: i32) -> (Option<i32>, Vec<Value>) {
        self.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "cairn watch did not exit within 30 s of signal {sig}"
                ));
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
    assert!(s["bytes_added"].as_u64().unwrap() > 0, "{s}");
    assert!(s["duration_ms"].is_u64(), "{s}");
    // Other commands read the repository while watch runs.
    let dumped = ok_when_unlocked(
        &env,
        &["dump", "latest", src.join("a.txt").to_str().unwrap()],
    );
    assert_eq!(dumped, "second, longer version\n");
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
fn durations_too_long_for_the_clock_are_refused() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for option in ["--rescan-every", "--max-delay", "--prune-every"] {
        let out = env.run(&[
            "watch",
            src.to_str().unwrap(),
            option,
            "18446744073709551615",
        ]);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{option}: a usage error");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("too long: at most 100 years"),
            "{option}: {err}"
        );
    }
    // Values that cannot work are usage errors too, as the README says.
    for args in [
        ["--debounce", "0s"],
        ["--max-delay", "100ms"],
        ["--rescan-every", "0s"],
    ] {
        let out = env.run(&["watch", src.to_str().unwrap(), args[0], args[1]]);
        assert_no_panic(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(args[0]), "{args:?}: {err}");
    }
}

/// A deployment swaps a new version of the watched directory into place
/// (`mv data data.old; mv data.new data`): the next snapshot holds the new
/// directory, and changes in it, not in the old one, reach snapshots.
/// Symbolic links inside are not followed by the watcher either.
#[test]
fn a_source_directory_replaced_by_rename_is_watched_afresh() {
    let env = Env::new();
    let data = env.path("data");
    let outside = env.path("outside");
    fs::create_dir_all(&data).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(data.join("v1.txt"), "version one\n").unwrap();
    fs::write(outside.join("o.txt"), "not in the source\n").unwrap();
    std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();
    // A second of quiet: the deleted source is back by then.
    let mut w = Watch::start(&env, &[data.to_str().unwrap(), "--debounce", "1s"]);
    w.snapshot();
    let outside_ino = fs::metadata(&outside).unwrap().ino();
    assert!(
        !watched_inodes(w.child.id()).contains(&outside_ino),
        "the link's target is watched"
    );

    let new = env.path("data.new");
    fs::create_dir_all(new.join("sub")).unwrap();
    fs::write(new.join("sub/v2.txt"), "version two\n").unwrap();
    let old = env.path("data.old");
    fs::rename(&data, &old).unwrap();
    fs::rename(&new, &data).unwrap();
    let (s, rescan) = next_snapshot_and_rescan(&mut w);
    assert_eq!(s["full_rescan"], true, "{s}");
    let why = rescan.expect("a rescan event")["reason"].to_string();
    assert!(why.contains("moved, deleted or replaced"), "{why}");
    assert_latest_matches(&env, &data, "swapped");

    // The old directory is no longer the source; the new one is watched.
    fs::write(old.join("v1.txt"), "changed after it left\n").unwrap();
    fs::write(data.join("sub/v2.txt"), "version two, edited\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], false, "{s}");
    assert_eq!(s["changed_paths"], 1, "{s}");
    assert_latest_matches(&env, &data, "edited");

    // Deleted, then created again: watched again too.
    fs::remove_dir_all(&data).unwrap();
    fs::create_dir(&data).unwrap();
    fs::write(data.join("v3.txt"), "version three\n").unwrap();
    let (s, _) = snapshot_holding(&mut w, &env, &data.join("v3.txt"), "version three\n");
    assert_eq!(s["full_rescan"], true, "{s}");
    fs::write(data.join("v3.txt"), "version three, edited\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], false, "{s}");
    assert_latest_matches(&env, &data, "recreated");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

#[test]
fn a_source_that_comes_back_is_snapshotted_without_waiting_out_the_retry_backoff() {
    // While the only source is gone every snapshot fails, each retry
    // waiting twice as long (up to a minute); when it came back, the
    // snapshot waited for the retry all the same.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "before\n").unwrap();
    let mut w = Watch::start(&env, &[src.to_str().unwrap(), "--debounce", "300ms"]);
    w.snapshot();
    fs::remove_dir_all(&src).unwrap();
    // The fifth failure is retried after 16 s.
    w.failures(5);
    assert_eq!(w.seen.last().unwrap()["retry_in_ms"], 16000, "{:?}", w.seen);
    fs::create_dir(&src).unwrap();
    fs::write(src.join("back.txt"), "after\n").unwrap();
    let back = Instant::now();
    let s = w.snapshot();
    assert!(
        // The retry it waited for came 16 s after the last failure.
        back.elapsed() < Duration::from_secs(12),
        "the snapshot came {:?} after the source was back: {s}",
        back.elapsed()
    );
    assert_latest_matches(&env, &src, "back");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

#[test]
fn a_file_source_that_comes_back_is_snapshotted_without_waiting_out_the_retry_backoff() {
    // Only a directory source coming back cut the backoff short: a file
    // source (a config file an editor deleted and wrote again) waited for
    // the next retry, up to a minute.
    let env = Env::new();
    let dir = env.path("etc");
    fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("app.conf");
    fs::write(&conf, "before\n").unwrap();
    let mut w = Watch::start(&env, &[conf.to_str().unwrap(), "--debounce", "300ms"]);
    w.snapshot();
    fs::remove_file(&conf).unwrap();
    // The fourth failure is retried after 8 s.
    w.failures(4);
    assert_eq!(w.seen.last().unwrap()["retry_in_ms"], 8000, "{:?}", w.seen);
    fs::write(&conf, "after\n").unwrap();
    let back = Instant::now();
    let s = w.snapshot();
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "the snapshot came {:?} after the source was back: {s}",
        back.elapsed()
    );
    let out = env
        .cmd()
        .args(["dump", "latest"])
        .arg(&conf)
        .output()
        .unwrap();
    exits(&out, 0);
    assert_eq!(out.stdout, b"after\n");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
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
            // Quiet, and the burst is all in: a snapshot that began during
            // the burst holds part of it, and the next may take a while.
            None if !snapshots.is_empty()
                && written.elapsed() > Duration::from_secs(5)
                && count_files_in_latest(&env, &burst) == 10_000 =>
            {
                break;
            }
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
fn changes_made_during_a_slow_snapshot_go_into_one_more_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..100 {
        fs::write(src.join(format!("s{i:03}")), b"v1\n").unwrap();
    }
    let mut w = Watch::start(&env, &[src.to_str().unwrap(), "--debounce", "300ms"]);
    w.snapshot();
    // A big new file makes the next snapshot slow; small changes come in
    // while it runs, each seen (and stamped) then.
    write_random(&src.join("big"), 200 << 20, 7);
    std::thread::sleep(Duration::from_millis(600));
    for i in 0..100 {
        fs::write(src.join(format!("s{i:03}")), b"v2\n").unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut batches = Vec::new();
    loop {
        match w.next(Duration::from_secs(10)) {
            Some(v) if v["message_type"] == "snapshot" || v["message_type"] == "unchanged" => {
                batches.push(v)
            }
            Some(_) => {}
            None => break,
        }
    }
    // Taken one by one after the slow snapshot, each queued change was past
    // its debounce and made a snapshot of its own (about 100).
    assert!(
        (1..=4).contains(&batches.len()),
        "{} batches: {batches:?}",
        batches.len()
    );
    assert_latest_matches(&env, &src, "after the changes during a slow snapshot");
}

/// While watch is busy (a slow snapshot), what it sees waits in a queue of
/// bounded length; past it, a full rescan follows. Unbounded, a busy log
/// written to during a first backup of hours queued millions of events.
#[test]
fn changes_past_watch_queue_while_it_is_busy_make_a_full_rescan() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("seed"), "seed\n").unwrap();
    let mut cmd = env.cmd();
    cmd.env("CAIRN_TEST_WATCH_QUEUE", "64");
    let (mut w, first) = Watch::spawn(&env, cmd, &[src.to_str().unwrap(), "--debounce", "300ms"]);
    assert!(first["problem"].is_null(), "{first}");
    w.snapshot();
    // One file written to 500 times while a slow snapshot runs takes one
    // place in the queue: no rescan (a log written to all through a long
    // snapshot made every snapshot after a full rescan).
    write_random(&src.join("big0"), 200 << 20, 8);
    std::thread::sleep(Duration::from_millis(600));
    for i in 0..500 {
        fs::write(src.join("log"), format!("{i}\n")).unwrap();
    }
    let mut events = Vec::new();
    while let Some(v) = w.next(Duration::from_secs(5)) {
        events.push(v);
    }
    assert!(
        events
            .iter()
            .all(|v| v["message_type"] != "rescan" && v["full_rescan"] != true),
        "{events:?}"
    );
    assert_latest_matches(&env, &src, "after one file written to while busy");
    // A big new file makes the next snapshot slow; 500 new files come
    // while it runs.
    write_random(&src.join("big"), 200 << 20, 9);
    std::thread::sleep(Duration::from_millis(600));
    for i in 0..500 {
        fs::write(src.join(format!("n{i:03}")), format!("{i}\n")).unwrap();
    }
    let rescan = w.next_of("rescan", Duration::from_secs(60));
    assert!(
        rescan["reason"]
            .as_str()
            .unwrap()
            .contains("more changes came while busy"),
        "{rescan}"
    );
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], true, "{s}");
    assert_latest_matches(&env, &src, "after the queue was full");
    let (code, _) = w.interrupt();
    assert_eq!(code, Some(0));
}

#[test]
fn an_inotify_queue_overflow_falls_back_to_a_full_rescan() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("seed"), "seed\n").unwrap();
    let mut w = Watch::start(&env, &[src.to_str().unwrap(), "--debounce", "300ms"]);
    w.snapshot();
    // A real overflow, without touching any system setting: while watch is
    // stopped nobody reads its inotify queue, and each new file queues at
    // least three events (create, modify, close), so half the queue limit
    // in files overflows it.
    let limit: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        limit <= 1 << 20,
        "fs.inotify.max_queued_events = {limit}: too many files needed to overflow it"
    );
    let files = limit / 2 + 100;
    w.signal(libc::SIGSTOP);
    w.wait_for_state('T');
    for i in 0..files {
        fs::write(src.join("d").join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    w.signal(libc::SIGCONT);
    let rescan = w.next_of("rescan", Duration::from_secs(60));
    let reason = rescan["reason"].as_str().unwrap();
    assert!(
        reason.contains("overflowed") && reason.contains("fs.inotify.max_queued_events"),
        "{rescan}"
    );
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], true, "{s}");
    assert_latest_matches(&env, &src, "after-overflow");
    assert_eq!(count_files_in_latest(&env, &src.join("d")), files);
    // The watcher was set up afresh: later changes are seen one by one again.
    fs::write(src.join("d/after"), "after\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], false, "{s}");
    assert_latest_matches(&env, &src, "after-recovery");
    let (code, _) = w.interrupt();
    assert_eq!(code, Some(0));
}

/// The inodes of the directories the process `pid` has inotify watches on
/// (from `/proc/PID/fdinfo`).
fn watched_inodes(pid: u32) -> Vec<u64> {
    let mut out = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        let is_inotify =
            fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify"));
        if !is_inotify {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap();
        // "inotify wd:1 ino:3a2f sdev:... mask:..." per watch.
        for line in info.lines().filter(|l| l.starts_with("inotify ")) {
            for field in line.split_whitespace() {
                if let Some(hex) = field.strip_prefix("ino:") {
                    out.push(u64::from_str_radix(hex, 16).unwrap());
                }
            }
        }
    }
    out
}

/// Waits for the next snapshot and returns it with the `rescan` event
/// that came before it, if any.
#[test]
fn a_file_source_whose_directory_is_replaced_by_rename_is_watched_afresh() {
    let env = Env::new();
    let dir = env.path("etc/app");
    fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("conf");
    fs::write(&conf, "v1\n").unwrap();
    let mut w = Watch::start(&env, &[conf.to_str().unwrap(), "--debounce", "300ms"]);
    w.snapshot();
    // The directory renamed away and made again (a deploy's swap): the
    // watch stayed on the old directory, and v2 and v3 never got a
    // snapshot.
    fs::rename(&dir, env.path("etc/app.old")).unwrap();
    fs::create_dir(&dir).unwrap();
    fs::write(&conf, "v2\n").unwrap();
    let (_, rescan) = snapshot_holding(&mut w, &env, &conf, "v2\n");
    let why = rescan.expect("a rescan event")["reason"].to_string();
    assert!(why.contains("moved, deleted or replaced"), "{why}");
    fs::write(&conf, "v3\n").unwrap();
    snapshot_holding(&mut w, &env, &conf, "v3\n");

    // The file replaced by a directory: what is written inside it later
    // went unseen until the hourly rescan (only conf's directory had a
    // watch).
    fs::remove_file(&conf).unwrap();
    fs::create_dir(&conf).unwrap();
    fs::write(conf.join("x"), "a\n").unwrap();
    let (_, rescan) = snapshot_holding(&mut w, &env, &conf.join("x"), "a\n");
    let why = rescan.expect("a rescan event")["reason"].to_string();
    assert!(why.contains("moved, deleted or replaced"), "{why}");
    fs::write(conf.join("y"), "b\n").unwrap();
    fs::write(conf.join("x"), "a, more\n").unwrap();
    let (s, _) = snapshot_holding(&mut w, &env, &conf.join("y"), "b\n");
    assert_eq!(s["full_rescan"], false, "{s}");
    assert_latest_matches(&env, &conf, "a directory now");
    // And back to a file.
    fs::remove_dir_all(&conf).unwrap();
    fs::write(&conf, "v4\n").unwrap();
    snapshot_holding(&mut w, &env, &conf, "v4\n");
    fs::write(&conf, "v5\n").unwrap();
    snapshot_holding(&mut w, &env, &conf, "v5\n");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

fn next_snapshot_and_rescan(w: &mut Watch) -> (Value, Option<Value>) {
    let mut rescan = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match w.next(left) {
            Some(v) if v["message_type"] == "snapshot" => return (v, rescan),
            Some(v) if v["message_type"] == "rescan" => rescan = Some(v),
            Some(v) if v["message_type"] == "snapshot_failed" => {
                w.fail(&format!("a snapshot failed: {v}"))
            }
            Some(_) => {}
            None => w.fail("no snapshot within 60 s"),
        }
    }
}

/// Waits for a snapshot in which `file` holds `content` (a periodic rescan
/// that began before the change may end in a snapshot without it), and
/// returns it with the `rescan` event before it.
fn snapshot_holding(
    w: &mut Watch,
    env: &Env,
    file: &Path,
    content: &str,
) -> (Value, Option<Value>) {
    for _ in 0..10 {
        let (s, rescan) = next_snapshot_and_rescan(w);
        let out = env.run(&["dump", "latest", file.to_str().unwrap()]);
        assert_no_panic(&out);
        if out.status.success() && out.stdout == content.as_bytes() {
            return (s, rescan);
        }
    }
    w.fail(&format!(
        "10 snapshots without {} holding {content:?}",
        file.display()
    ))
}

/// Excludes that keep only some files (`-e '*' -e '!*/' -e '!*.txt'`, as
/// the README shows) leave directories in: a directory moved into the
/// tree, or renamed in it, reaches the next snapshot. Its events were
/// judged as a file's, excluded by `*`, and dropped: no snapshot came.
#[test]
fn a_directory_moved_in_or_renamed_reaches_a_snapshot_under_keep_only_excludes() {
    let env = Env::new();
    let src = env.path("notes");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "a\n").unwrap();
    let outside = env.path("outside/meeting");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("m.txt"), "minutes\n").unwrap();
    fs::write(outside.join("skip.bin"), "x").unwrap();
    let keep_txt = ["-e", "*", "-e", "!*/", "-e", "!*.txt"];
    let mut args = vec![src.to_str().unwrap(), "--debounce", "200ms"];
    args.extend(keep_txt);
    let mut w = Watch::start(&env, &args);
    w.snapshot();

    fs::rename(&outside, src.join("meeting")).unwrap();
    snapshot_holding(&mut w, &env, &src.join("meeting/m.txt"), "minutes\n");
    fs::rename(src.join("meeting"), src.join("minutes")).unwrap();
    snapshot_holding(&mut w, &env, &src.join("minutes/m.txt"), "minutes\n");
    let listing = env.ok(&["ls", "latest", "--recursive"]);
    assert!(!listing.contains("/meeting"), "{listing}");
    assert!(!listing.contains("skip.bin"), "{listing}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// The commonest outage, a repository that cannot be opened when a watch
/// or a schedule starts (a disk not mounted after a reboot, a password
/// file changed), reaches the failure hook: a service restarted on
/// failure failed silently for ever.
#[test]
fn a_repository_that_cannot_be_opened_at_start_is_told_to_the_failure_hook() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let told = env.path("told");
    let hook = format!("printf '%s\\n' \"$CAIRN_ERROR\" >> {}", told.display());
    let gone = Env::uninit();
    let wrong = Env {
        password: "not the password".into(),
        ..Env::uninit()
    };
    let wrong = Env {
        repo: env.repo.clone(),
        ..wrong
    };
    let runs: [(&Env, Vec<&str>, i32, &str); 2] = [
        (
            &gone,
            vec!["watch", src.to_str().unwrap(), "--on-failure", &hook],
            10,
            "does not exist",
        ),
        (
            &wrong,
            vec![
                "backup",
                src.to_str().unwrap(),
                "--schedule",
                "1h",
                "--on-failure",
                &hook,
            ],
            12,
            "password",
        ),
    ];
    for (e, args, code, says) in runs {
        let _ = fs::remove_file(&told);
        let err = e.fails(&args, code);
        let heard = fs::read_to_string(&told).unwrap_or_default();
        assert!(
            heard.contains(says),
            "{args:?}: hook heard {heard:?}; stderr {err}"
        );
    }
}

/// A repository reached through a bind mount of the watched tree (a
/// container's `-v /srv/backup:/repo`) is known by device and inode: each
/// lock it wrote was a change that brought another run, for ever.
#[test]
fn a_repository_bound_into_the_watched_tree_brings_no_run() {
    assert!(
        is_root(),
        "this test bind-mounts: run the suite as root (tests/run-all.sh)"
    );
    let mut env = Env::uninit();
    let src = env.path("srv");
    let _view = repository_bound_into(&mut env, &src);
    fs::write(src.join("notes.txt"), "one\n").unwrap();
    env.ok(&["init"]);
    let mut w = Watch::start(&env, &[src.to_str().unwrap(), "--debounce", "200ms"]);
    w.snapshot();
    w.no_run_for(Duration::from_secs(3), "the repository's own writes");
    fs::write(src.join("notes.txt"), "two\n").unwrap();
    snapshot_holding(&mut w, &env, &src.join("notes.txt"), "two\n");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// A directory marked out of backups (`--exclude-if-present`,
/// `--exclude-caches`) is often a busy build or cache directory: its
/// changes bring no backup run, while adding or removing its marker does.
#[test]
fn changes_in_a_directory_marked_out_of_backups_bring_no_run() {
    let env = Env::new();
    let src = env.path("src");
    let build = src.join("build");
    fs::create_dir_all(build.join("obj")).unwrap();
    fs::write(build.join(".nobackup"), "").unwrap();
    fs::write(src.join("notes.txt"), "one\n").unwrap();
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--debounce",
            "200ms",
            "--exclude-if-present",
            ".nobackup",
        ],
    );
    w.snapshot();
    for i in 0..5 {
        fs::write(build.join(format!("obj/{i}.o")), "x").unwrap();
        fs::create_dir(build.join(format!("obj/d{i}"))).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    // Quiet for 3 s: far past the debounce, on a loaded machine too.
    w.no_run_for(Duration::from_secs(3), "changes marked out");
    fs::write(src.join("notes.txt"), "two\n").unwrap();
    snapshot_holding(&mut w, &env, &src.join("notes.txt"), "two\n");
    fs::remove_file(build.join(".nobackup")).unwrap();
    snapshot_holding(&mut w, &env, &build.join("obj/4.o"), "x");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// A pattern file given as a pipe (`--exclude-file <(gen-excludes)`) is
/// read once, for the watcher and every snapshot: each snapshot opened it
/// again, and waited for a writer that never came.
#[test]
fn an_exclude_file_that_is_a_pipe_is_read_once() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("keep.txt"), "one\n").unwrap();
    fs::write(src.join("secret.key"), "k1").unwrap();
    let fifo = env.path("excludes");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::write(fifo, "*.key\n").unwrap())
    };
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--debounce",
            "200ms",
            "--exclude-file",
            fifo.to_str().unwrap(),
        ],
    );
    w.snapshot();
    writer.join().unwrap();
    fs::write(src.join("keep.txt"), "two\n").unwrap();
    fs::write(src.join("secret.key"), "k2").unwrap();
    snapshot_holding(&mut w, &env, &src.join("keep.txt"), "two\n");
    let listing = env.ok(&["ls", "latest", "--recursive"]);
    assert!(!listing.contains("secret.key"), "{listing}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// At the inotify watch limit watch says which sysctl to raise, and
/// changes still reach snapshots: through full rescans that events in
/// watched directories trigger, and through the periodic rescan for
/// directories without a watch. The limit is real: watch runs in a user
/// namespace of its own whose inotify watch limit is lowered (as lowering
/// fs.inotify.max_user_watches would, for the whole machine).
/// A repository (and cache) inside the watched tree, named through a
/// symbolic link: their changes trigger no snapshot (each snapshot
/// triggered the next, forever), and they are not backed up (each rescan
/// stored the packs the one before had written).
#[test]
fn a_repository_inside_the_watched_tree_is_neither_watched_nor_backed_up() {
    let env = Env::new();
    let src = env.dir.path().to_path_buf();
    let link = env.path("link");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    fs::create_dir_all(src.join("work")).unwrap();
    fs::write(src.join("work/f"), "one\n").unwrap();
    let mut cmd = env.cmd();
    cmd.env("CAIRN_REPOSITORY", link.join("repo"))
        .env("CAIRN_CACHE_DIR", link.join("cache"));
    let (mut w, first) = Watch::spawn(&env, cmd, &[src.to_str().unwrap(), "--debounce", "200ms"]);
    assert!(first["problem"].is_null(), "{first}");
    w.next_of("snapshot", Duration::from_secs(60));
    // Quiet: the snapshot's own writes bring no other (it took a second).
    while let Some(v) = w.next(Duration::from_secs(3)) {
        assert_ne!(
            v["message_type"], "snapshot",
            "a snapshot nothing asked for: {v}"
        );
    }
    fs::write(src.join("work/f"), "two\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["changed_paths"], 1, "{s}");
    let listing = env.ok(&["ls", "latest", "--recursive"]);
    let root = src.to_str().unwrap();
    assert!(listing.contains(&format!("{root}/work/f")), "{listing}");
    // The repository's files and the cache's are left out (their
    // directories stay, empty, as where other files could be).
    for own in ["repo/", "cache/"] {
        assert!(
            !listing.contains(&format!("{root}/{own}")),
            "{own} stored: {listing}"
        );
    }
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// A directory the user may not read cannot be watched; the others beside
/// it still are (notify's walk stopped at the first failure, leaving every
/// directory after it in its walk to the hourly rescan).
#[test]
fn an_unreadable_file_keeps_every_snapshot_partial_and_odd_names_do_not_stop_json() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("src");
    // A directory whose name is not UTF-8: `--json` events name it (they
    // panicked on it, and watch died).
    let odd = src.join(std::ffi::OsStr::from_bytes(b"n\xff"));
    fs::create_dir_all(&odd).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    fs::write(src.join("other/a"), "a\n").unwrap();
    let secret = odd.join("secret");
    fs::write(&secret, "s\n").unwrap();
    let mut cmd = env.cmd();
    as_unprivileged(&env, &mut cmd);
    // Root's own file, or the unprivileged user's own unreadable one.
    fs::set_permissions(
        &secret,
        fs::Permissions::from_mode(if is_root() { 0o600 } else { 0o000 }),
    )
    .unwrap();
    let args = [src.to_str().unwrap(), "--debounce", "300ms"];
    let (mut w, _) = Watch::spawn(&env, cmd, &args);
    let first = w.snapshot();
    assert_eq!(first["partial"], true, "{first}");
    let error = w
        .seen
        .iter()
        .find(|e| e["message_type"] == "error")
        .cloned()
        .unwrap_or_else(|| w.fail("no error event"));
    assert_eq!(
        error["path"],
        format!("{}/n\u{fffd}/secret", src.display()),
        "{error}"
    );
    // An incremental snapshot built on it lacks the file too: partial
    // (it was recorded as complete, and a health check went back to ok).
    fs::write(src.join("other/a"), "b\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["partial"], true, "{s}");
    assert_eq!(s["changed_paths"], 1, "{s}");
    // Readable again: read with the next change, and complete.
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(src.join("other/a"), "c\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["partial"], false, "{s}");
    let target = env.path("restored");
    env.restore("latest", &target);
    let back = restored(&target, &src).join(std::ffi::OsStr::from_bytes(b"n\xff/secret"));
    assert_eq!(fs::read(back).unwrap(), b"s\n");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

#[test]
fn an_entry_stored_with_an_error_keeps_later_snapshots_partial() {
    // A database that cannot be captured is stored as a plain file, with an
    // error; snapshots built on that one carry it over unread, and were
    // recorded complete.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("other")).unwrap();
    fs::write(src.join("other/a"), "a\n").unwrap();
    let db = src.join("broken.db");
    create_db(&db, "delete", 500);
    let mut bytes = fs::read(&db).unwrap();
    bytes[4096 * 3 + 8..4096 * 3 + 2048].fill(0xA5);
    fs::write(&db, &bytes).unwrap();
    fs::write(src.join("broken.db-journal"), b"").unwrap();
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--sqlite-aware",
            "--debounce",
            "300ms",
        ],
    );
    let first = w.snapshot();
    assert_eq!(first["partial"], true, "{first}");
    fs::write(src.join("other/a"), "b\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["partial"], true, "{s}");
    assert_eq!(s["full_rescan"], false, "{s}");
    // Read again, not carried over: its journal stays beside it (a later
    // snapshot kept the plain copy and lost the journal it needs).
    let listed = env.ok(&["ls", "latest"]);
    assert!(listed.contains("broken.db-journal"), "{listed}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// A directory the user may not read is left unwatched (the backup cannot
/// read it either), and the others beside it are watched (notify's walk
/// stopped at the first failure). It does not make watching incomplete:
/// counted so, it made every snapshot a full rescan, for good. Made
/// readable, it is watched.
#[test]
fn an_unreadable_directory_leaves_the_others_watched() {
    let env = Env::new();
    let src = env.path("src");
    // Many siblings, so some come after the unreadable one in any order.
    for i in 0..20 {
        let d = src.join(format!("d{i:02}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), "0\n").unwrap();
    }
    let private = src.join("m_private");
    fs::create_dir_all(&private).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = env.cmd();
    as_unprivileged(&env, &mut cmd);
    if is_root() {
        // Root reads everything: the directory is root's own, for nobody.
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    } else {
        fs::set_permissions(&private, fs::Permissions::from_mode(0o000)).unwrap();
    }
    let (mut w, first) = Watch::spawn(&env, cmd, &[src.to_str().unwrap(), "--debounce", "500ms"]);
    assert!(first["problem"].is_null(), "{first}");
    let s = w.snapshot();
    assert_eq!(s["partial"], true, "{s}");
    // Every readable directory is watched: each change is seen when it is
    // made (unwatched, it waited for the hourly rescan), without a rescan.
    for i in 0..20 {
        let f = src.join(format!("d{i:02}/f"));
        fs::write(&f, format!("{i} changed\n")).unwrap();
        let s = w.snapshot();
        assert_eq!(s["changed_paths"], 1, "{s}");
        assert_eq!(s["full_rescan"], false, "{s}");
        assert_eq!(
            env.ok(&["dump", "latest", f.to_str().unwrap()]),
            format!("{i} changed\n")
        );
    }
    // Its owner listing it changes nothing: each opening was taken for a
    // change of the unwatched directory, a full rescan and a new snapshot.
    if is_root() {
        for _ in 0..3 {
            assert_eq!(fs::read_dir(&private).unwrap().count(), 0);
        }
        let f = src.join("d00/f");
        fs::write(&f, "after the listing\n").unwrap();
        let s = w.snapshot();
        assert_eq!(s["full_rescan"], false, "{s}");
        assert_eq!(s["changed_paths"], 1, "{s}");
    }
    // Readable now: watched afresh, so what is written in it next is seen.
    fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
    let (s, _) = next_snapshot_and_rescan(&mut w);
    assert_eq!(s["full_rescan"], true, "{s}");
    let inside = private.join("new");
    fs::write(&inside, "seen\n").unwrap();
    let (s, _) = snapshot_holding(&mut w, &env, &inside, "seen\n");
    assert_eq!(s["partial"], false, "{s}");
    assert_eq!(s["full_rescan"], false, "{s}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// In text, a snapshot of a full walk says so, not "0 changed paths" (the
/// paths it was told of first: none at the start or after a retry).
#[test]
fn a_full_rescan_snapshot_says_so_in_text() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a\n").unwrap();
    let out = env.path("watch-stdout");
    let mut child = env
        .cmd()
        .args(["watch", src.to_str().unwrap()])
        .stdout(fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        let text = fs::read_to_string(&out).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(" saved: ")) {
            break l.to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no snapshot line: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(line.contains("saved: full rescan, read 2 B"), "{line}");
}

/// A source it may not read is named in plain words, with what follows (it
/// was notify's "... about [\"/path\"]").
#[test]
fn a_source_it_cannot_watch_is_named_in_plain_words() {
    let env = Env::new();
    let src = env.path("closed");
    fs::create_dir_all(&src).unwrap();
    let mut cmd = env.cmd();
    as_unprivileged(&env, &mut cmd);
    // Root's own directory, for nobody (or the user's own unreadable one).
    let mode = if is_root() { 0o700 } else { 0o000 };
    fs::set_permissions(&src, fs::Permissions::from_mode(mode)).unwrap();
    let (w, first) = Watch::spawn(&env, cmd, &[src.to_str().unwrap()]);
    let problem = first["problem"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"));
    let named = format!("cannot watch {}: ", src.display());
    assert!(problem.contains(&named), "{problem}");
    assert!(!problem.contains("about ["), "{problem}");
    assert!(problem.contains("full rescans only"), "{problem}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// A directory tree moved in whole, with a subdirectory the user may not
/// read, has its other subdirectories watched. notify watches a new tree
/// itself but stopped at the unreadable one, silently: what was written
/// in the directories after it in its walk waited for the hourly rescan.
#[test]
fn a_tree_moved_in_with_an_unreadable_directory_has_the_others_watched() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("top"), "top\n").unwrap();
    // Made beside the source, on the same filesystem, and moved in whole.
    let made = env.path("made");
    for i in 0..20 {
        let d = made.join(format!("d{i:02}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), "0\n").unwrap();
    }
    let private = made.join("m_private");
    fs::create_dir_all(&private).unwrap();
    for d in [&src, &made] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = env.cmd();
    as_unprivileged(&env, &mut cmd);
    // Root's own directory, for nobody (or the user's own unreadable one).
    let mode = if is_root() { 0o700 } else { 0o000 };
    fs::set_permissions(&private, fs::Permissions::from_mode(mode)).unwrap();
    let (mut w, first) = Watch::spawn(&env, cmd, &[src.to_str().unwrap(), "--debounce", "300ms"]);
    assert!(first["problem"].is_null(), "{first}");
    w.snapshot();
    let moved = src.join("tree");
    fs::rename(&made, &moved).unwrap();
    let s = w.snapshot();
    assert_eq!(s["partial"], true, "{s}");
    for i in 0..20 {
        let f = moved.join(format!("d{i:02}/f"));
        fs::write(&f, format!("{i} changed\n")).unwrap();
        let s = w.next_of("snapshot", Duration::from_secs(20));
        assert_eq!(s["full_rescan"], false, "{s}");
        assert_eq!(
            env.ok(&["dump", "latest", f.to_str().unwrap()]),
            format!("{i} changed\n")
        );
    }
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

#[test]
fn at_the_watch_limit_the_sysctl_is_named_and_rescans_catch_every_change() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..12 {
        let d = src.join(format!("d{i:02}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), format!("{i}\n")).unwrap();
    }
    fs::write(src.join("top"), "top\n").unwrap();
    // The namespace's limit applies on top of the machine's; 4 watches for
    // 13 directories. unshare execs, so the child's pid is watch's own.
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "sh", "-c"])
        .arg("echo 4 > /proc/sys/user/max_inotify_watches && exec \"$@\"")
        .arg("sh")
        .arg(cairn_bin());
    for (k, v) in env.cmd().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let (mut w, watching) = Watch::spawn(
        &env,
        cmd,
        &[
            src.to_str().unwrap(),
            "--debounce",
            "200ms",
            "--rescan-every",
            "3s",
        ],
    );
    let problem = watching["problem"].as_str().unwrap_or_else(|| {
        w.fail(&format!(
            "no problem reported at the watch limit: {watching}"
        ))
    });
    assert!(
        problem.contains("sysctl -w fs.inotify.max_user_watches=")
            && problem.contains("user.max_inotify_watches = 4"),
        "{problem}"
    );
    let first = w.snapshot();
    assert_eq!(first["full_rescan"], true, "{first}");

    // A change in a directory without a watch produces no event: the
    // periodic rescan finds it.
    let watched = watched_inodes(w.child.id());
    assert_eq!(watched.len(), 4, "{watched:?}");
    let blind = (0..12)
        .map(|i| src.join(format!("d{i:02}")))
        .find(|d| !watched.contains(&fs::metadata(d).unwrap().ino()))
        .expect("a directory without a watch");
    fs::write(blind.join("f"), "changed where inotify cannot see\n").unwrap();
    let (s, rescan) = snapshot_holding(
        &mut w,
        &env,
        &blind.join("f"),
        "changed where inotify cannot see\n",
    );
    let reason = rescan.as_ref().map(|r| r["reason"].to_string());
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("periodic rescan (watching is incomplete)")),
        "{rescan:?} {s}"
    );
    assert_eq!(s["full_rescan"], true, "{s}");
    assert!(s["lag_ms"].is_null(), "no event led to it: {s}");
    assert_latest_matches(&env, &src, "periodic");

    // A change in a watched directory: its event triggers a full rescan,
    // since other changes may have gone unseen.
    fs::write(src.join("top"), "top, changed\n").unwrap();
    let (s, rescan) = snapshot_holding(&mut w, &env, &src.join("top"), "top, changed\n");
    assert_eq!(s["full_rescan"], true, "{s}");
    assert!(rescan.is_some(), "{s}");
    assert_latest_matches(&env, &src, "event");

    // A new directory cannot get a watch: the failure is reported with the
    // sysctl to raise, and the rescan picks the directory up.
    fs::create_dir(src.join("new")).unwrap();
    fs::write(src.join("new/inside"), "new\n").unwrap();
    let (s, _) = snapshot_holding(&mut w, &env, &src.join("new/inside"), "new\n");
    assert_eq!(s["full_rescan"], true, "{s}");
    assert_latest_matches(&env, &src, "new-dir");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
    let named = events
        .iter()
        .filter(|e| {
            ["rescan", "warning"].contains(&e["message_type"].as_str().unwrap_or(""))
                && e.to_string().contains("fs.inotify.max_user_watches")
        })
        .count();
    assert!(
        named >= 1,
        "the limit is reported at every rescan: {events:?}"
    );
}

#[test]
fn sigint_and_sigterm_exit_0_and_a_restart_resumes_from_the_latest_snapshot() {
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
    // SIGTERM (what systemd sends) stops it the same way, and so does
    // SIGHUP (a closed terminal), leaving no lock behind.
    let (code, events) = w.stop_with(libc::SIGTERM);
    assert_eq!(code, Some(0), "{events:?}");
    assert!(
        events.iter().any(|e| e["message_type"] == "stopped"),
        "{events:?}"
    );
    let mut w = Watch::start(&env, &args);
    w.snapshot();
    // A closed session often hangs up twice (the shell, then the kernel):
    // still a clean stop, not the at-once exit of a second SIGINT.
    w.signal(libc::SIGHUP);
    let (code, events) = w.stop_with(libc::SIGHUP);
    assert_eq!(code, Some(0), "{events:?}");
    assert!(
        events.iter().any(|e| e["message_type"] == "stopped"),
        "{events:?}"
    );
    let locks = fs::read_dir(env.repo.join("locks")).unwrap().count();
    assert_eq!(locks, 0, "watch stopped by SIGHUP left a lock");
}

/// A tree whose inode numbers all changed (copied back with cp -a, as a
/// filesystem that numbers inodes anew on each mount does to it): with
/// --ignore-inode a restarted watch reads nothing of it again; without,
/// every file.
#[test]
fn ignore_inode_keeps_a_restarted_watch_from_reading_a_renumbered_tree_again() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big.bin"), 1 << 20, 9);
    fs::write(src.join("small.txt"), "one\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let renumber = || {
        let copy = env.path("copy");
        let st = Command::new("cp").arg("-a").arg(&src).arg(&copy).status();
        assert!(st.unwrap().success());
        fs::remove_dir_all(&src).unwrap();
        fs::rename(&copy, &src).unwrap();
    };
    renumber();
    let mut w = Watch::start(&env, &[src.to_str().unwrap(), "--ignore-inode"]);
    let first = w.snapshot();
    assert_eq!(first["bytes_read"], 0, "{first}");
    assert_eq!(first["files_unmodified"], 2, "{first}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
    assert_latest_matches(&env, &src, "ignore-inode");

    renumber();
    let mut w = Watch::start(&env, &[src.to_str().unwrap()]);
    let first = w.snapshot();
    assert!(first["bytes_read"].as_u64().unwrap() >= 1 << 20, "{first}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// A full rescan of an idle tree is idle even where a directory above the
/// tree changed (a file made beside it, as in /tmp or ~ all day long): it
/// wrote a snapshot each time, and the alert hook ran in place of --on-idle.
#[test]
fn an_idle_rescan_is_idle_when_only_a_directory_above_the_tree_changed() {
    let env = Env::new();
    let parent = env.path("p/parent");
    let src = parent.join("tree");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a\n").unwrap();
    let mut w = Watch::start(&env, &[src.to_str().unwrap(), "--rescan-every", "1s"]);
    w.snapshot();
    for i in 0..2 {
        fs::write(parent.join(format!("sibling{i}")), "x").unwrap();
        // Two full rescans, so that one started after the change.
        let mut idle = 0;
        while idle < 2 {
            match w.next(Duration::from_secs(60)) {
                Some(v) if v["message_type"] == "unchanged" && v["full_rescan"] == true => {
                    idle += 1
                }
                Some(v) if v["message_type"] == "snapshot" => {
                    w.fail(&format!("a snapshot for a change above the tree: {v}"))
                }
                Some(_) => {}
                None => w.fail("no full rescan within 60 s"),
            }
        }
    }
    // A change in the tree is still stored.
    fs::write(src.join("a"), "b\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["bytes_read"], 2, "{s}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
    assert_latest_matches(&env, &src, "after the idle rescans");
}

/// Waits until `path` holds `lines` lines, and returns them.
/// A source `src` holding `a.txt`, and a failure hook that appends each
/// error it is given to the file `errs`: (src, errs, hook).
fn source_and_failure_log(env: &Env) -> (PathBuf, PathBuf, String) {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "one\n").unwrap();
    let errs = env.path("errs");
    let on_failure = format!("echo \"$CAIRN_ERROR\" >> {}", errs.display());
    (src, errs, on_failure)
}

fn lines_of(path: &Path, lines: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        let got: Vec<String> = text.lines().map(str::to_string).collect();
        if got.len() >= lines {
            return got;
        }
        assert!(Instant::now() < deadline, "{}: {got:?}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_lock_another_command_holds_a_while_is_no_alert() {
    // Each attempt a prune's (or a tag's) exclusive lock kept out ran the
    // failure hook: at 1, 2, 4 ... 60 s, dozens of mails for a routine
    // prune. The attempts still show, with how long the lock has held.
    let env = Env::new();
    let (src, errs, on_failure) = source_and_failure_log(&env);
    let args = [
        src.to_str().unwrap(),
        "--debounce",
        "200ms",
        "--on-failure",
        &on_failure,
    ];
    let mut w = Watch::start(&env, &args);
    w.snapshot();
    // `tag` takes the exclusive lock, then reads the snapshots, each slowly.
    let mark = env.path("tag-reading");
    let mut tag = env
        .cmd()
        .env(
            "CAIRN_TEST_FAULTS",
            format!("slow-read=snapshot:4000,slow-read-mark={}", mark.display()),
        )
        .args(["tag", "--add", "held", "latest"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "tag never read a snapshot");
        std::thread::sleep(Duration::from_millis(10));
    }
    fs::write(src.join("a.txt"), "two\n").unwrap();
    let failed = w.next_of("snapshot_failed", Duration::from_secs(30));
    assert!(
        failed["message"].as_str().unwrap().contains("locked"),
        "{failed}"
    );
    assert_eq!(failed["alert"], false, "{failed}");
    assert!(failed["locked_for_ms"].is_u64(), "{failed}");
    assert!(tag.wait().unwrap().success());
    // Tried again once the lock is gone.
    let after = loop {
        let v = w.next(Duration::from_secs(120)).expect("a snapshot");
        match v["message_type"].as_str() {
            Some("snapshot") => break v,
            Some("snapshot_failed") => assert_eq!(v["alert"], false, "{v}"),
            _ => {}
        }
    };
    assert_eq!(after["files_changed"], 1, "{after}");
    assert!(!errs.exists(), "{}", fs::read_to_string(&errs).unwrap());
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

#[test]
fn hooks_run_after_each_snapshot_and_each_failed_attempt() {
    let env = Env::new();
    let (src, errs, on_failure) = source_and_failure_log(&env);
    let oks = env.path("oks");
    // The success hook uses the repository (tagging takes the exclusive
    // lock): watch has released its own by then.
    let on_success = format!(
        "{} tag --add hooked \"$CAIRN_SNAPSHOT_ID\" >/dev/null && echo \"$CAIRN_SNAPSHOT_ID\" >> {}",
        cairn_bin().display(),
        oks.display()
    );
    let args = [
        src.to_str().unwrap(),
        "--debounce",
        "200ms",
        "--on-success",
        &on_success,
        "--on-failure",
        &on_failure,
    ];
    let mut w = Watch::start(&env, &args);
    let first = w.snapshot();
    assert_eq!(lines_of(&oks, 1), [first["snapshot_id"].as_str().unwrap()]);
    // With the snapshots directory gone, the next snapshot cannot be
    // written: the failure hook hears why.
    let snapshots = env.repo.join("snapshots");
    let away = env.repo.join("snapshots-away");
    fs::rename(&snapshots, &away).unwrap();
    fs::write(src.join("a.txt"), "two\n").unwrap();
    let failed = loop {
        let v = w.next(Duration::from_secs(60)).expect("an event");
        if v["message_type"] == "snapshot_failed" {
            break v;
        }
    };
    let errs_seen = lines_of(&errs, 1);
    assert_eq!(errs_seen[0], failed["message"].as_str().unwrap());
    fs::rename(&away, &snapshots).unwrap();
    let second = w.snapshot();
    let ids = lines_of(&oks, 2);
    assert_eq!(ids[1], second["snapshot_id"].as_str().unwrap());
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
    assert_latest_matches(&env, &src, "after the failure");
    let tagged = env.json(&["snapshots", "--tag", "hooked"]);
    assert_eq!(tagged.as_array().unwrap().len(), 2, "{tagged}");

    // A periodic rescan of an idle tree pings --on-idle (not --on-success,
    // whose hooks expect a snapshot ID): a dead man's switch took a watch
    // of a tree idle for a day for a dead one.
    let pings = env.path("pings");
    let ping = format!("echo \"[$CAIRN_SNAPSHOT_ID]\" >> {}", pings.display());
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--debounce",
            "200ms",
            "--rescan-every",
            "1s",
            "--on-success",
            "echo snapshot >> /dev/null",
            "--on-idle",
            &ping,
        ],
    );
    loop {
        let v = w.next_of("unchanged", Duration::from_secs(60));
        if v["full_rescan"] == true {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&pings)
        .unwrap_or_default()
        .lines()
        .any(|l| l == "[]")
    {
        assert!(Instant::now() < deadline, "no ping after an idle rescan");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");

    // A hook that fails is a warning of the shape the README gives (it
    // was an `error`, the event of a partial snapshot, without `message`).
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--debounce",
            "200ms",
            "--on-success",
            "exit 7",
        ],
    );
    w.snapshot();
    let warning = w.next_of("warning", Duration::from_secs(60));
    assert!(
        warning["message"].as_str().unwrap().contains('7'),
        "{warning}"
    );
    assert!(warning["path"].is_null(), "{warning}");
    assert!(
        !w.seen.iter().any(|e| e["message_type"] == "error"),
        "{:?}",
        w.seen
    );
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");

    // A first snapshot that fails ends the watch: its hook hears of it
    // too (a service restarted on failure failed silently, for ever).
    fs::rename(&snapshots, &away).unwrap();
    fs::write(src.join("a.txt"), "three\n").unwrap();
    let mut cmd = env.cmd();
    cmd.arg("watch").args(args);
    let out = output_within(cmd, 60);
    let err = exits(&out, 1);
    let errs_seen = lines_of(&errs, 2);
    assert!(err.contains(&errs_seen[1]), "{err} / {errs_seen:?}");
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
    // Retention runs right after the snapshot, under the exclusive lock
    // (which restore respects): retry as for the other commands here.
    let target = env.path("restore-after-forget");
    ok_when_unlocked(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_same_tree(&src, &restored(&target, &src));
    let check = ok_when_unlocked(&env, &["--json", "check", "--read-data"]);
    let check: Value = serde_json::from_str(check.lines().last().unwrap()).unwrap();
    assert!(check["errors"].as_array().unwrap().is_empty(), "{check}");
    let (code, _) = w.interrupt();
    assert_eq!(code, Some(0));
}

/// Inserts one row per transaction into `events`, 100 a second, without
/// checkpointing (so only the -wal changes, never the database file),
/// until the file `argv[2]` exists; prints how many rows it inserted.
const WAL_WRITER: &str = "import sqlite3,sys,time,os
c=sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
c.execute('pragma wal_autocheckpoint=0')
n=0
while not os.path.exists(sys.argv[2]):
    c.execute('begin immediate')
    c.execute('insert into events(payload) values (?)', ('w'*200,))
    c.execute('commit')
    n+=1
    time.sleep(0.01)
print(n, flush=True)
os._exit(0)
";

/// Keeps a read connection to the database open until the file `argv[2]`
/// exists, so the -wal stays (the last connection to close would
/// checkpoint it into the database and delete it).
const HOLDER: &str = "import sqlite3,sys,time,os
c=sqlite3.connect(sys.argv[1])
print(c.execute('select count(*) from events').fetchone()[0], flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
";

fn python(script: &str, args: &[&Path]) -> Killed {
    Killed(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3"),
    )
}

/// Holds an exclusive lock on a rollback-journal database (readers get
/// SQLITE_BUSY) after one more committed row, until the stop file exists.
const LOCKER: &str = "import sqlite3,sys,time,os
c=sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('insert into events(payload) values (?)', ('one more',))
c.execute('begin exclusive')
print('locked', flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
";

#[test]
fn a_stop_abandons_an_incremental_snapshot_still_waiting_after_the_grace() {
    // An incremental snapshot in flight was always finished: one waiting
    // for a database its writer keeps locked held SIGTERM up for the whole
    // --sqlite-lock-timeout (systemd then kills it, and the lock stays).
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let db = src.join("app.db");
    create_db(&db, "delete", 10);
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--sqlite-aware",
            "--sqlite-lock-timeout",
            "300s",
            "--debounce",
            "200ms",
        ],
    );
    w.snapshot();
    let stop_locker = env.path("stop-locker");
    let mut locker = python(LOCKER, &[&db, &stop_locker]);
    let mut line = String::new();
    BufReader::new(locker.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    // The incremental snapshot starts and waits for the lock.
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (code, events) = w.stop_with(libc::SIGTERM);
    let waited = started.elapsed();
    fs::write(&stop_locker, "").unwrap();
    let _ = locker.0.wait();
    assert_eq!(code, Some(0), "{events:?}");
    assert!(
        waited >= Duration::from_secs(9),
        "{waited:?}: not given its grace"
    );
    let stopped = events
        .iter()
        .find(|e| e["message_type"] == "stopped")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(stopped["abandoned"], true, "{stopped}");
    assert!(stopped["pending_paths"].as_u64().unwrap() >= 1, "{stopped}");
    // Nothing was committed: the one snapshot is the first.
    assert_eq!(snapshot_ids(&env).len(), 1);
}

#[test]
fn sqlite_aware_watch_captures_a_busy_wal_database_consistently() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.txt"), "a plain file\n").unwrap();
    let db = src.join("app.db");
    create_db(&db, "wal", 100);
    let stop_holder = env.path("stop-holder");
    let mut holder = python(HOLDER, &[&db, &stop_holder]);
    let mut line = String::new();
    BufReader::new(holder.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "100");
    assert!(src.join("app.db-wal").exists() && src.join("app.db-shm").exists());
    let db_mtime = fs::metadata(&db).unwrap().modified().unwrap();

    let stop_writer = env.path("stop-writer");
    let mut writer = python(WAL_WRITER, &[&db, &stop_writer]);
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--sqlite-aware",
            "--debounce",
            "200ms",
            "--max-delay",
            "1s",
        ],
    );
    // While rows keep coming, a snapshot at the latest every max-delay.
    let mut snaps: Vec<Value> = (0..5).map(|_| w.snapshot()).collect();
    fs::write(&stop_writer, "").unwrap();
    let mut out = String::new();
    writer
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = writer.0.wait();
    let written: u64 = out.trim().parse().expect("writer's row count");
    // The last rows reach a snapshot too; then, with the database idle and
    // its -wal still there, nothing happens: a capture (which opens and
    // closes the -wal and -shm) does not trigger the next.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    // Quiet for 5 s: longer than a capture and snapshot take on a loaded
    // machine, so the last one is not mistaken for quiet.
    while quiet_since.elapsed() < Duration::from_secs(5) {
        if Instant::now() > deadline {
            w.fail("snapshots of an idle database keep coming");
        }
        match w.next(Duration::from_millis(500)) {
            Some(v) if ["snapshot", "unchanged"].contains(&v["message_type"].as_str().unwrap()) => {
                quiet_since = Instant::now();
                if v["message_type"] == "snapshot" {
                    snaps.push(v);
                }
            }
            Some(v) if v["message_type"] == "snapshot_failed" => {
                w.fail(&format!("a snapshot failed: {v}"))
            }
            _ => {}
        }
    }
    assert!(src.join("app.db-wal").exists());
    // Every new row went only to the -wal: the -wal's events alone
    // triggered the captures.
    assert_eq!(fs::metadata(&db).unwrap().modified().unwrap(), db_mtime);
    // A change elsewhere: the database is reused as the last snapshot
    // captured it, not captured again.
    fs::write(src.join("notes.txt"), "a plain file, changed\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["bytes_read"], 22, "{s}");
    snaps.push(s);
    let listed = ok_when_unlocked(&env, &["ls", "latest"]);
    assert!(
        listed.contains("app.db") && listed.contains("notes.txt"),
        "{listed}"
    );
    assert!(
        !listed.contains("app.db-wal") && !listed.contains("app.db-shm"),
        "{listed}"
    );
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
    fs::write(&stop_holder, "").unwrap();
    let _ = holder.0.wait();

    let mut last = 0;
    let mut counts = Vec::new();
    for (i, s) in snaps.iter().enumerate() {
        let id = s["snapshot_id"].as_str().unwrap();
        let target = env.path(&format!("restore-db-{i}"));
        env.restore(id, &target);
        let copy = restored(&target, &db);
        assert!(
            !copy.with_file_name("app.db-wal").exists()
                && !copy.with_file_name("app.db-shm").exists(),
            "snapshot {id} holds a sidecar"
        );
        let (integrity, rows) = check_db(&copy, "events");
        assert_eq!(integrity, "ok", "snapshot {id}");
        assert!(
            rows >= last,
            "rows went backwards in snapshot {id}: {counts:?} then {rows}"
        );
        // Every snapshot records the capture (an incremental one that did
        // not capture the database again carries the record over), and
        // verify-restore finds the recorded rows.
        let v: Value = serde_json::from_str(&env.ok(&["--json", "verify-restore", id])).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        let dbs = v["databases"].as_array().unwrap();
        assert_eq!(dbs.len(), 1, "{v}");
        assert_eq!(dbs[0]["integrity"], "ok", "{v}");
        assert_eq!(dbs[0]["tables"]["events"]["expected"], rows, "{v}");
        assert_eq!(dbs[0]["tables"]["events"]["actual"], rows, "{v}");
        last = rows;
        counts.push(rows);
        fs::remove_dir_all(&target).unwrap();
    }
    eprintln!("rows per snapshot: {counts:?}; the writer inserted {written}");
    assert!(
        counts.windows(2).filter(|p| p[1] > p[0]).count() >= 4,
        "captures did not follow the writer: {counts:?}"
    );
    assert_eq!(
        last,
        100 + written,
        "the last rows are in the last snapshot"
    );
}

#[test]
fn its_own_log_in_the_watched_tree_brings_no_snapshot() {
    // `cairn watch ~ >> ~/watch.log`: each line it wrote about a snapshot
    // was a change that made another, one a second for good.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "one\n").unwrap();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(src.join("watch.log"))
        .unwrap();
    let _w = Killed(
        env.cmd()
            .args(["watch", src.to_str().unwrap(), "--debounce", "200ms"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let count = || env.json(&["snapshots"]).as_array().unwrap().len();
    let until = Instant::now() + Duration::from_secs(60);
    while count() == 0 {
        assert!(Instant::now() < until, "no first snapshot");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));
    let quiet = count();
    assert_eq!(
        quiet,
        1,
        "snapshots nothing asked for: {}",
        fs::read_to_string(src.join("watch.log")).unwrap()
    );
    fs::write(src.join("f"), "two\n").unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while count() == quiet {
        assert!(Instant::now() < until, "the change was not saved");
        std::thread::sleep(Duration::from_millis(100));
    }
    let listing = env.ok(&["ls", "latest"]);
    assert!(listing.contains("/src/f"), "{listing}");
    assert!(
        !listing.contains("watch.log"),
        "its own log is left out: {listing}"
    );
}

/// The fields of `/proc/PID/stat` after "PID (comm) ": the state first.
fn proc_stat(pid: u32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].to_string()
}

/// CPU seconds (user and system) the process `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    // State is the 1st field, utime the 12th, stime the 13th.
    let stat = proc_stat(pid);
    let after: Vec<&str> = stat.split(' ').collect();
    let ticks: u64 = after[11].parse::<u64>().unwrap() + after[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn a_failing_snapshot_waits_out_its_retry_without_spinning_past_the_periodic_rescan() {
    // Once the periodic rescan was due while a failed snapshot waited for
    // its retry, the loop woke at once, again and again: a CPU busy for
    // the whole backoff (up to a minute at a time, for a whole outage).
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "before\n").unwrap();
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--debounce",
            "100ms",
            "--rescan-every",
            "1s",
        ],
    );
    w.snapshot();
    fs::remove_dir_all(&src).unwrap();
    w.failures(2);
    // The second failure is retried after 2 s, the third after 4 s: the
    // loop has little to do meanwhile.
    let before = cpu_seconds(w.child.id());
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_seconds(w.child.id()) - before;
    assert!(used < 1.0, "{used:.2} CPU seconds used in 4 s of waiting");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

#[test]
fn a_stop_that_comes_with_a_snapshot_starts_no_forget_or_prune() {
    // Retention ran after the snapshot all the same: a prune, which
    // cannot be stopped, outlasted `systemctl stop`'s wait and was killed
    // holding its lock.
    use cairn_engine::retention::{Count, Policy};
    use cairn_engine::watch::{WatchEvent, WatchObserver, WatchOptions, watch};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    struct StopAtSnapshot<'a> {
        stop: &'a AtomicBool,
        seen: Mutex<Vec<String>>,
    }
    impl WatchObserver for StopAtSnapshot<'_> {
        fn event(&self, e: &WatchEvent) {
            let name = match e {
                WatchEvent::Snapshot(_) => {
                    self.stop.store(true, Ordering::SeqCst);
                    "snapshot"
                }
                WatchEvent::Forgot { .. } => "forgot",
                WatchEvent::Pruned(_) => "pruned",
                WatchEvent::Warning { .. } => "warning",
                WatchEvent::Stopped { .. } => "stopped",
                _ => return,
            };
            self.seen.lock().unwrap().push(name.into());
        }
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..2 {
        fs::write(src.join("f"), format!("{i}\n")).unwrap();
        env.backup(&[&src]);
    }
    fs::write(src.join("f"), "watched\n").unwrap();
    let repo = open_engine(&env);
    let mut opts = WatchOptions {
        keep: Some(Policy {
            last: Count::N(1),
            ..Policy::default()
        }),
        prune_every: Some(Duration::from_nanos(1)),
        ..WatchOptions::default()
    };
    opts.backup.paths = vec![src.clone()];
    let stop = AtomicBool::new(false);
    let observer = StopAtSnapshot {
        stop: &stop,
        seen: Mutex::new(Vec::new()),
    };
    watch(&repo, &opts, &observer, &stop).unwrap();
    let seen = observer.seen.into_inner().unwrap();
    assert_eq!(seen, ["snapshot", "stopped"]);
    drop(repo);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 3);
}

#[test]
fn retention_does_not_wait_for_locks_and_hold_the_next_snapshot_up() {
    // Forget waited --retry-lock for another host's long backup to end:
    // no snapshot was taken meanwhile, whatever changed.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "0\n").unwrap();
    // Another backup under way: its shared lock keeps forget's exclusive one off.
    let other = open_engine(&env);
    let held = other.lock(false).unwrap();
    let mut w = Watch::start(
        &env,
        &[
            src.to_str().unwrap(),
            "--debounce",
            "200ms",
            "--keep-last",
            "1",
            "--retry-lock",
            "10m",
        ],
    );
    w.snapshot();
    let warning = w.next_of("warning", Duration::from_secs(30));
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("retention failed"),
        "{warning}"
    );
    fs::write(src.join("f"), "1\n").unwrap();
    w.snapshot();
    assert_latest_matches(&env, &src, "while locked");
    drop(held);
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

#[test]
fn a_source_whose_directory_is_deleted_and_made_again_later_is_watched_again() {
    // With the directory above a source gone, its return was an event
    // nothing watched: the source's changes waited for the hourly rescan.
    let env = Env::new();
    let a = env.path("a");
    let app = env.path("srv/app");
    let data = app.join("data");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&data).unwrap();
    fs::write(a.join("f"), "a\n").unwrap();
    fs::write(data.join("f"), "v1\n").unwrap();
    let mut w = Watch::start(
        &env,
        &[
            a.to_str().unwrap(),
            data.to_str().unwrap(),
            "--debounce",
            "200ms",
        ],
    );
    w.snapshot();
    fs::remove_dir_all(&app).unwrap();
    // The snapshot of the loss (partial) or its failure, and time past it.
    loop {
        match w.next(Duration::from_secs(60)) {
            Some(v)
                if ["snapshot", "snapshot_failed"]
                    .contains(&v["message_type"].as_str().unwrap()) =>
            {
                break;
            }
            Some(_) => {}
            None => w.fail("nothing came of the loss within 60 s"),
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "v2\n").unwrap();
    let back = Instant::now();
    loop {
        match w.next(Duration::from_secs(30)) {
            Some(v) if v["message_type"] == "snapshot" => {
                let out = env.run(&["dump", "latest", data.join("f").to_str().unwrap()]);
                if out.stdout == b"v2\n" {
                    break;
                }
            }
            Some(_) => {}
            None => w.fail("the source made again reached no snapshot within 30 s"),
        }
    }
    assert!(back.elapsed() < Duration::from_secs(30));
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// Damage a watch finds in the local cache fails one snapshot; the retry
/// opens the cache afresh and brings it up to date from the repository.
/// Every retry failed on the damaged file until a restart, and each one
/// removed the file that another process had rebuilt meanwhile: here a
/// second watch, which met the damage after the first had healed, removed
/// the first's rebuilt cache.
#[test]
fn damage_found_in_the_local_cache_heals_without_restarting_the_watch() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for (i, src) in [&a, &b].into_iter().enumerate() {
        fs::create_dir_all(src).unwrap();
        write_random(&src.join("f"), 300_000, i as u64);
    }
    let mut wa = Watch::start(&env, &[a.to_str().unwrap(), "--debounce", "200ms"]);
    wa.snapshot();
    let mut wb = Watch::start(&env, &[b.to_str().unwrap(), "--debounce", "200ms"]);
    wb.snapshot();
    let db = cache_db(&env);
    empty_cache_packs_table(&db);

    // The next snapshot reads its parent's trees, from rows naming no pack.
    let heal = |w: &mut Watch, src: &Path| {
        fs::copy(src.join("f"), src.join("copy")).unwrap();
        w.failures(1);
        let failed = w.seen.last().unwrap().clone();
        assert!(
            failed["message"].as_str().unwrap().contains("local cache"),
            "{failed}"
        );
        let healed = w.snapshot();
        assert!(healed["bytes_added"].as_u64().unwrap() < 50_000, "{healed}");
        assert_latest_matches(&env, src, "after the damage");
    };
    heal(&mut wa, &a);
    let rebuilt = fs::metadata(&db).expect("the cache rebuilt").ino();
    heal(&mut wb, &b);
    assert_eq!(
        fs::metadata(&db).expect("the cache kept").ino(),
        rebuilt,
        "the second watch removed the cache the first rebuilt"
    );
    // Both go on with the cache on disk.
    fs::write(a.join("more"), "more\n").unwrap();
    assert_eq!(wa.snapshot()["files_new"], 1);
    fs::write(b.join("more"), "more\n").unwrap();
    assert_eq!(wb.snapshot()["files_new"], 1);
    for w in [wa, wb] {
        let (code, events) = w.interrupt();
        assert_eq!(code, Some(0), "{events:?}");
    }
    env.assert_check_clean();
}

/// Unmounts the filesystem at `dir` when dropped.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a new tmpfs at `dir`.
    fn tmpfs(dir: &Path) -> Mount {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "cairn-test"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs at {}", dir.display());
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A source on a filesystem unmounted and mounted again (a USB disk, a
/// network share back) is watched again at once: inotify tells of
/// neither, and changes to the filesystem mounted again waited for the
/// periodic rescan (an hour).
#[test]
fn a_source_whose_filesystem_is_mounted_again_is_watched_again() {
    assert!(is_root(), "mounting a tmpfs needs root (tests/run-all.sh)");
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let disk = Mount::tmpfs(&src);
    fs::write(src.join("a"), "on the first mount\n").unwrap();
    let args = [src.to_str().unwrap(), "--debounce", "200ms"];
    let mut w = Watch::start(&env, &args);
    w.snapshot();

    drop(disk);
    let unmounted = w.snapshot();
    assert_eq!(unmounted["full_rescan"], true, "{unmounted}");
    let disk = Mount::tmpfs(&src);
    fs::write(src.join("b"), "on the second mount\n").unwrap();
    let back = w.snapshot();
    assert_eq!(back["full_rescan"], true, "{back}");
    // Watched again: a change to it alone makes the next snapshot.
    fs::write(src.join("c"), "written once watched\n").unwrap();
    let changed = w.snapshot();
    assert_eq!(changed["files_new"], 1, "{changed}");
    assert_latest_matches(&env, &src, "mounted again");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
    drop(disk);
}

/// A filesystem mounted below a source is part of it (a backup crosses
/// into it): it is snapshotted and watched from its mounting on, and gone
/// from the next snapshot once unmounted. Neither was seen: inotify tells
/// of no mount.
#[test]
fn a_filesystem_mounted_below_a_source_is_snapshotted_and_watched() {
    assert!(is_root(), "mounting a tmpfs needs root (tests/run-all.sh)");
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("m")).unwrap();
    fs::write(src.join("f"), "one\n").unwrap();
    let args = [src.to_str().unwrap(), "--debounce", "200ms"];
    let mut w = Watch::start(&env, &args);
    w.snapshot();

    let disk = Mount::tmpfs(&src.join("m"));
    fs::create_dir(src.join("m/newdir")).unwrap();
    fs::write(src.join("m/newdir/y"), "on the disk\n").unwrap();
    let mounted = w.snapshot();
    assert_eq!(mounted["full_rescan"], true, "{mounted}");
    // Watched: a change on it alone makes the next snapshot.
    fs::write(src.join("m/newdir/z"), "written once watched\n").unwrap();
    let changed = w.snapshot();
    assert_eq!(changed["files_new"], 1, "{changed}");
    assert_latest_matches(&env, &src, "a disk mounted below");

    drop(disk);
    let unmounted = w.snapshot();
    assert_eq!(unmounted["full_rescan"], true, "{unmounted}");
    assert_latest_matches(&env, &src, "the disk unmounted");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}

/// Standard output that cannot be written (the disk under the log is
/// full) is said once, on standard error and to the failure hook, and the
/// watch goes on taking snapshots: the failed write ended it for good,
/// hook unrun.
#[test]
fn a_log_that_cannot_be_written_is_said_once_and_the_watch_goes_on() {
    let env = Env::new();
    let (src, errs, on_failure) = source_and_failure_log(&env);
    let stderr = env.path("stderr");
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = env
        .cmd()
        .args([
            "--json",
            "watch",
            src.to_str().unwrap(),
            "--debounce",
            "200ms",
        ])
        .args(["--on-failure", &on_failure])
        .stdout(full)
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let said = lines_of(&errs, 1);
    assert!(said[0].contains("No space left on device"), "{said:?}");
    let snapshots = || env.json(&["snapshots"]).as_array().unwrap().len();
    let until = Instant::now() + Duration::from_secs(60);
    while snapshots() < 1 {
        assert!(Instant::now() < until, "no first snapshot");
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::write(src.join("a.txt"), "two\n").unwrap();
    while snapshots() < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the watch ended: {}",
            fs::read_to_string(&stderr).unwrap()
        );
        assert!(Instant::now() < until, "no snapshot after the change");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let err = fs::read_to_string(&stderr).unwrap();
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    assert_eq!(fs::read_to_string(&errs).unwrap().lines().count(), 1);
    assert_latest_matches(&env, &src, "with the log unwritable");
}

/// Retention among watch's own snapshots: its tags as given on the command
/// line (`--tag "work, laptop"`: a space after the comma) are the stored
/// ones, trimmed; compared as given, no snapshot was ever its own and
/// nothing was forgotten, silently.
#[test]
fn retention_finds_watch_snapshots_whatever_the_spacing_of_their_tags() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "0\n").unwrap();
    let args = [
        src.to_str().unwrap(),
        "--debounce",
        "200ms",
        "--tag",
        "work, laptop",
    ];
    let mut w = Watch::start(&env, &[&args[..], &["--keep-last", "1"]].concat());
    w.snapshot();
    fs::write(src.join("f"), "1\n").unwrap();
    w.snapshot();
    let forgot = w.next_of("forget", Duration::from_secs(30));
    assert!(!forgot.is_null(), "{forgot}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
    let list = env.json(&["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        list[0]["tags"],
        serde_json::json!(["work", "laptop"]),
        "{list}"
    );
}

#[test]
fn a_watch_restarted_more_often_than_prune_every_still_prunes() {
    // Each start began the prune interval anew: a watch restarted daily
    // (a laptop, a service) with --prune-every 1d never pruned, and the
    // repository grew for good. The interval now runs in wall-clock time
    // from the first start, across restarts.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "0\n").unwrap();
    let first_start = Instant::now();
    let mut pruned_in = None;
    for run in 1..=3 {
        let started = Instant::now();
        let mut w = Watch::start(
            &env,
            &[
                src.to_str().unwrap(),
                "--debounce",
                "200ms",
                "--keep-last",
                "1",
                "--prune-every",
                "3s",
            ],
        );
        std::thread::sleep(Duration::from_millis(1200));
        fs::write(src.join("f"), format!("{run}\n")).unwrap();
        w.snapshot();
        // Retention runs right after the snapshot.
        let until = Instant::now() + Duration::from_secs(3);
        while let Some(v) = w.next(until.saturating_duration_since(Instant::now())) {
            if v["message_type"] == "prune" {
                pruned_in = Some(run);
                break;
            }
        }
        let (code, _) = w.interrupt();
        assert_eq!(code, Some(0));
        if pruned_in.is_some() {
            // The run that pruned was shorter than the interval itself:
            // only the time since the first start made it due.
            assert!(first_start.elapsed() >= Duration::from_secs(3));
            if started.elapsed() >= Duration::from_secs(3) {
                // A machine so slow that one run outlasted the interval
                // proves nothing either way.
                println!("run {run} took {:?}, the whole interval", started.elapsed());
            }
            return;
        }
    }
    panic!(
        "three restarts over {:?} never pruned",
        first_start.elapsed()
    );
}

/// A new name for a file (`ln`, `cp -al`) changes the link count of its
/// other names, and a write through one name their content, which no event
/// reports: reused from the previous snapshot, they came back from a
/// restore apart from the name read. Such a snapshot walks the whole tree
/// instead; other changes stay incremental.
#[test]
fn a_hard_link_made_while_watching_keeps_its_names_together_in_a_restore() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("a"), "shared content\n").unwrap();
    fs::write(src.join("d/f"), "f\n").unwrap();
    fs::write(src.join("d/e/g"), "g\n").unwrap();
    fs::write(src.join("plain"), "plain\n").unwrap();
    let mut w = Watch::start(&env, &[src.to_str().unwrap(), "--debounce", "200ms"]);
    w.snapshot();
    let same_inode = |step: &str, names: &[(&str, &str)]| {
        let target = env.path(&format!("r-{step}"));
        env.restore("latest", &target);
        let back = common::restored(&target, &src);
        for (x, y) in names {
            let (mx, my) = (
                fs::metadata(back.join(x)).unwrap(),
                fs::metadata(back.join(y)).unwrap(),
            );
            assert_eq!(mx.ino(), my.ino(), "{step}: {x} and {y} are apart");
            assert_eq!(mx.nlink(), 2, "{step}: {x}");
        }
        assert_same_tree(&src, &back);
    };

    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], true, "a new link walks everything: {s}");
    same_inode("ln", &[("a", "b")]);

    let out = Command::new("cp")
        .arg("-al")
        .arg(src.join("d"))
        .arg(src.join("d.bak"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    w.snapshot();
    same_inode("cp-al", &[("d/f", "d.bak/f"), ("d/e/g", "d.bak/e/g")]);

    // A file written through one name: the other, unseen, has the new
    // content too.
    fs::write(src.join("b"), "shared content, changed\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], true, "{s}");
    same_inode("edit", &[("a", "b")]);
    // Other changes stay incremental.
    fs::write(src.join("plain"), "plain, changed\n").unwrap();
    let s = w.snapshot();
    assert_eq!(s["full_rescan"], false, "{s}");
    let (code, events) = w.interrupt();
    assert_eq!(code, Some(0), "{events:?}");
}
