//! Scheduled backups (`backup --schedule`): runs on an interval or a cron
//! expression, retention after each run, failed runs reported without
//! ending the schedule, and a clean stop on SIGTERM.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use common::*;

/// Each line the child writes to stdout and stderr, as it comes.
fn lines(child: &mut Child) -> (Receiver<String>, Receiver<String>) {
    (
        line_by_line(Box::new(child.stdout.take().unwrap())),
        line_by_line(Box::new(child.stderr.take().unwrap())),
    )
}

/// Each line read from `r`, as it comes.
fn line_by_line(r: Box<dyn std::io::Read + Send>) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Every line of `rx` still to come, up to the end of the stream (the
/// process has exited): lines its last moments printed may not have been
/// passed on yet.
fn remaining(rx: &Receiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => out.push(l),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return out,
            Err(e) => panic!("the output did not end within a minute: {e}"),
        }
    }
}

/// The next line of `rx` that satisfies `want`, within a minute.
fn next_line(rx: &Receiver<String>, want: impl Fn(&str) -> bool) -> String {
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the scheduled backup said nothing more within a minute");
        if want(&l) {
            return l;
        }
    }
}

fn message(l: &str) -> serde_json::Value {
    serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
}

fn is(kind: &str) -> impl Fn(&str) -> bool + '_ {
    move |l| l.starts_with('{') && message(l)["message_type"] == kind
}

fn terminate(child: &Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn start(env: &Env, args: &[&str]) -> Child {
    env.cmd()
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// [`start`] with `input` on its standard input (then closed).
fn start_fed(env: &Env, args: &[&str], input: &str) -> Child {
    use std::io::Write;
    let mut child = env
        .cmd()
        .arg("--json")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    child
}

#[test]
fn an_interval_schedule_backs_up_again_and_again_keeping_what_the_policy_keeps() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.txt"), "first").unwrap();
    let mut child = start(
        &env,
        &[
            "backup",
            src.to_str().unwrap(),
            "--schedule",
            "1s",
            "--keep-last",
            "2",
        ],
    );
    let (out, _err) = lines(&mut child);
    let time =
        |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let mut starts = Vec::new();
    let mut nexts = Vec::new();
    let mut forgot = 0;
    for run in 0..4 {
        let s = message(&next_line(&out, is("summary")));
        starts.push(time(&s["backup_start"]));
        if run == 1 {
            fs::write(src.join("notes.txt"), "second").unwrap();
        }
        if run >= 2 {
            // Two snapshots kept: each run from the third on forgets one.
            let f = message(&next_line(&out, is("forgot")));
            forgot += f["removed"].as_array().unwrap().len();
        }
        nexts.push(time(&message(&next_line(&out, is("scheduled")))["next"]));
    }
    terminate(&child);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "a stopped schedule with no failure exits 0"
    );
    // A run under way at the stop finishes, without its retention.
    let late = remaining(&out).iter().filter(|l| is("summary")(l)).count();
    // The interval is counted from the start of a run, and no run starts
    // before its time. (Between `backup_start`s, stamped after the lock is
    // taken, a loaded machine's fsyncs may take more than a tenth off.)
    for w in nexts.windows(2) {
        let gap = (w[1] - w[0]).num_milliseconds();
        assert!(
            gap >= 999,
            "runs planned {gap} ms apart with a 1 s schedule"
        );
    }
    for (next, start) in nexts.iter().zip(&starts[1..]) {
        let early = (*next - *start).num_milliseconds();
        assert!(early < 50, "a run started {early} ms before its time");
    }
    assert_eq!(forgot, 2);
    // One audit record per run, holding its retention too.
    let audit = env.json(&["audit"]);
    let runs: Vec<&serde_json::Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "backup")
        .collect();
    assert!(runs.len() >= 4, "{audit:#}");
    assert!(
        runs.iter()
            .all(|r| r["added"]["snapshots"].as_array().unwrap().len() == 1),
        "{audit:#}"
    );
    assert!(
        runs.iter().any(|r| r["removed"]["snapshots"].is_array()),
        "{audit:#}"
    );
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 2 + late);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_eq!(
        fs::read_to_string(restored(&t, &src).join("notes.txt")).unwrap(),
        "second"
    );
}

#[test]
fn patterns_from_a_pipe_hold_for_every_scheduled_run() {
    // Each run read the pattern files again: a pipe (`--exclude-file
    // <(...)`, /dev/stdin) gave nothing the second time, and what it
    // excluded was backed up from then on.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("keep.txt"), "kept").unwrap();
    fs::write(src.join("secret.key"), "left out").unwrap();
    let listed = env.path("listed");
    fs::write(&listed, "*.txt.bak\n").unwrap();
    // A regular file is read by every run: an edit holds from the next.
    // Made by the hook, so before the next run, however loaded the machine.
    let edit = format!("printf '*.txt\\n' > {}", listed.display());
    let mut child = start_fed(
        &env,
        &[
            "backup",
            src.to_str().unwrap(),
            "--schedule",
            "1s",
            "--exclude-file",
            "/dev/stdin",
            "--exclude-file",
            listed.to_str().unwrap(),
            "--on-success",
            &edit,
        ],
        "*.key\n",
    );
    let (out, _err) = lines(&mut child);
    for _ in 0..3 {
        message(&next_line(&out, is("summary")));
    }
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let ids = snapshot_ids(&env);
    assert!(ids.len() >= 3, "{ids:?}");
    for (i, id) in ids.iter().enumerate() {
        let ls = env.ok(&["ls", id]);
        assert!(!ls.contains("secret.key"), "run {i}: {ls}");
        assert_eq!(ls.contains("keep.txt"), i == 0, "run {i}: {ls}");
    }
}

#[test]
fn files_from_lists_are_read_again_by_each_scheduled_run_pipes_once() {
    // The lists were read once, at the start: an edit to one took effect
    // only when the process was restarted (unlike pattern files).
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for f in ["a.txt", "b.txt", "piped.txt"] {
        fs::write(src.join(f), f).unwrap();
    }
    let list = env.path("list");
    fs::write(&list, format!("{}\n", src.join("a.txt").display())).unwrap();
    // Edited by the hook, so before the next run, however loaded the machine.
    let edit = format!(
        "printf '%s\\n' {} > {}",
        src.join("b.txt").display(),
        list.display()
    );
    let mut child = start_fed(
        &env,
        &[
            "backup",
            "--schedule",
            "1s",
            "--files-from",
            "/dev/stdin",
            "--files-from",
            list.to_str().unwrap(),
            "--on-success",
            &edit,
        ],
        &format!("{}\n", src.join("piped.txt").display()),
    );
    let (out, _err) = lines(&mut child);
    for _ in 0..3 {
        message(&next_line(&out, is("summary")));
    }
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let ids = snapshot_ids(&env);
    assert!(ids.len() >= 3, "{ids:?}");
    for (i, id) in ids.iter().enumerate() {
        let ls = env.ok(&["ls", id]);
        assert!(ls.contains("piped.txt"), "run {i}: {ls}");
        assert_eq!(ls.contains("a.txt"), i == 0, "run {i}: {ls}");
        assert_eq!(ls.contains("b.txt"), i > 0, "run {i}: {ls}");
    }
}

#[test]
fn a_failed_run_is_reported_and_the_schedule_goes_on() {
    let env = Env::new();
    let flag = env.path("dump-works");
    let script = format!(
        "test -e {} && echo 'CREATE TABLE t();' || {{ echo 'database down' >&2; exit 3; }}",
        flag.display()
    );
    let (oks, errs) = (env.path("oks"), env.path("errs"));
    let on_success = format!("echo \"$CAIRN_SNAPSHOT_ID\" >> {}; exit 7", oks.display());
    let on_failure = format!("echo \"$CAIRN_ERROR\" >> {}", errs.display());
    let mut child = start(
        &env,
        &[
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "app.sql",
            "--schedule",
            "1s",
            "--on-success",
            &on_success,
            "--on-failure",
            &on_failure,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let (out, err) = lines(&mut child);
    for _ in 0..2 {
        let l = next_line(&err, |l| l.contains("scheduled backup failed"));
        assert!(l.contains("the schedule goes on"), "{l}");
        next_line(&out, is("error"));
    }
    fs::write(&flag, "").unwrap();
    let s = message(&next_line(&out, is("summary")));
    assert!(s["snapshot_id"].is_string());
    terminate(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "failed runs make the exit status 1");
    // The hook's failure is a warning, not the error of a failed run.
    let rest_out = remaining(&out);
    assert!(
        rest_out
            .iter()
            .any(|l| is("warning")(l) && l.contains("hook")),
        "{rest_out:?}"
    );
    assert!(!rest_out.iter().any(|l| is("error")(l)), "{rest_out:?}");
    // A run under way at the stop finishes.
    let late = rest_out.iter().filter(|l| is("summary")(l)).count();
    let rest = remaining(&err);
    assert!(
        rest.iter()
            .any(|l| l.contains("scheduled backups failed (each is reported above)")),
        "{rest:?}"
    );
    // A hook that fails is reported; it does not count as a failed run.
    assert!(
        rest.iter()
            .any(|l| l.contains("hook") && l.contains("failed (exit status: 7)")),
        "{rest:?}"
    );
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 1 + late);
    assert_eq!(
        env.ok(&["dump", "latest", "app.sql"]),
        "CREATE TABLE t();\n"
    );
    // The hooks ran with what happened: each failure's error, the snapshot.
    let errs = fs::read_to_string(&errs).unwrap();
    assert!(errs.lines().count() >= 2, "{errs}");
    assert!(errs.lines().all(|l| l.contains("exit status: 3")), "{errs}");
    assert_eq!(
        fs::read_to_string(&oks).unwrap().lines().next(),
        s["snapshot_id"].as_str()
    );
}

/// A repository whose disk goes away while a schedule runs is not made
/// anew: the first lock written made the repository's directory, and every
/// one above it, below the mount point, and each run after called that
/// stub damaged, also once the disk was back at another place.
#[test]
fn a_repository_gone_under_a_schedule_is_not_made_anew() {
    let mut env = Env::uninit();
    let disk = env.path("disk");
    env.repo = disk.join("repo");
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "one").unwrap();
    let mut child = start(&env, &["backup", src.to_str().unwrap(), "--schedule", "1s"]);
    let (out, err) = lines(&mut child);
    next_line(&out, is("summary"));
    let away = env.path("disk-away");
    fs::rename(&disk, &away).unwrap();
    let l = next_line(&err, |l| l.contains("scheduled backup failed"));
    assert!(l.contains("directory") && l.contains("is gone"), "{l}");
    // Another run, and still nothing made where the disk was.
    next_line(&err, |l| l.contains("scheduled backup failed"));
    assert!(!disk.exists(), "{l}");
    fs::rename(&away, &disk).unwrap();
    next_line(&out, is("summary"));
    terminate(&child);
    child.wait().unwrap();
    env.assert_check_clean();

    // A repository at the mount point itself: the empty mount point stays
    // when its disk goes, and the lock was made inside it.
    let mut child = start(&env, &["backup", src.to_str().unwrap(), "--schedule", "1s"]);
    let (out, err) = lines(&mut child);
    next_line(&out, is("summary"));
    let repo_away = env.path("repo-away");
    fs::rename(&env.repo, &repo_away).unwrap();
    fs::create_dir(&env.repo).unwrap();
    let l = next_line(&err, |l| l.contains("scheduled backup failed"));
    assert!(l.contains("is gone"), "{l}");
    next_line(&err, |l| l.contains("scheduled backup failed"));
    assert_eq!(fs::read_dir(&env.repo).unwrap().count(), 0, "{l}");
    terminate(&child);
    child.wait().unwrap();
}

/// A prune that fails (here: a pack is missing) is not tried again after
/// every run: each try holds the exclusive lock, keeping other hosts'
/// backups out, for a whole walk of the trees before it fails.
#[test]
fn a_failed_prune_waits_before_it_is_tried_again() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big"), 2 << 20, 3);
    env.backup(&[&src]);
    fs::remove_file(largest_pack(&env.repo)).unwrap();
    let mut child = start(
        &env,
        &[
            "backup",
            src.to_str().unwrap(),
            "--schedule",
            "1s",
            "--keep-last",
            "3",
            "--prune-every",
            "1d",
        ],
    );
    let (out, _err) = lines(&mut child);
    let mut seen = Vec::new();
    for _ in 0..4 {
        loop {
            let l = next_line(&out, |_| true);
            let done = is("scheduled")(&l);
            seen.push(l);
            if done {
                break;
            }
        }
    }
    terminate(&child);
    child.wait().unwrap();
    let failed: Vec<&String> = seen
        .iter()
        .filter(|l| is("warning")(l) && l.contains("retention failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{seen:#?}");
    assert!(
        failed[0].contains("the prune is tried again after the next run 1h or more from now"),
        "{}",
        failed[0]
    );
}

/// Ctrl-C on a terminal and `systemctl stop` signal the whole process
/// group: the capture command dies with cairn's stop. That run is not a
/// failure to alert on: no failure hook, exit 130 (interrupted), no
/// snapshot of the cut-off stream.
#[test]
fn a_signal_to_the_whole_group_stops_the_schedule_without_a_failure_alert() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let started = env.path("started");
    let errs = env.path("errs");
    let script = format!("echo partial; touch {}; sleep 60", started.display());
    let on_failure = format!("echo \"$CAIRN_ERROR\" >> {}", errs.display());
    let mut child = env
        .cmd()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "app.sql",
            "--schedule",
            "1s",
            "--on-failure",
            &on_failure,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_out, err) = lines(&mut child);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(std::time::Instant::now() < deadline, "the run never began");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill has no memory preconditions; the group is the child's.
    assert_eq!(
        unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) },
        0
    );
    let status = child.wait().unwrap();
    let rest = remaining(&err);
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    assert!(
        !rest.iter().any(|l| l.contains("scheduled backup failed")),
        "{rest:?}"
    );
    assert!(!errs.exists(), "the failure hook ran");
    assert!(env.json(&["snapshots"]).as_array().unwrap().is_empty());
}

/// A run that could not read every entry still writes its snapshot, but
/// the hook hears it was partial and the schedule ends with exit status 3
/// (as a single backup would), not 0. Each such run says so: with
/// --skip-if-unchanged too, where the tree stays the same.
#[test]
fn partial_runs_are_told_to_the_hook_and_in_the_exit_status() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok"), "readable").unwrap();
    fs::write(src.join("secret"), "unreadable").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    // Written by the hook, which runs as the backup's user.
    let heard = env.path("heard");
    fs::write(&heard, "").unwrap();
    fs::set_permissions(&heard, fs::Permissions::from_mode(0o666)).unwrap();
    let on_success = format!(
        "echo \"$CAIRN_SNAPSHOT_ID $CAIRN_PARTIAL\" >> {}",
        heard.display()
    );
    let mut cmd = env.cmd();
    cmd.args(["--json", "backup", src.to_str().unwrap()])
        .args(["--schedule", "1s", "--skip-if-unchanged"])
        .args(["--on-success", &on_success])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_unprivileged(&env, &mut cmd);
    let mut child = cmd.spawn().unwrap();
    let (out, err) = lines(&mut child);
    let first = message(&next_line(&out, is("summary")));
    let second = message(&next_line(&out, is("summary")));
    // The hook of the second run has run once the next one is scheduled.
    next_line(&out, is("scheduled"));
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(3));
    let rest = remaining(&err);
    assert!(
        rest.iter()
            .any(|l| l.contains("scheduled backups could not read some entries")),
        "{rest:?}"
    );
    let heard = fs::read_to_string(&heard).unwrap();
    let heard: Vec<&str> = heard.lines().collect();
    assert!(heard.len() >= 2, "{heard:?}");
    assert_eq!(
        heard[0],
        format!("{} 1", first["snapshot_id"].as_str().unwrap())
    );
    assert_eq!(
        heard[1],
        format!("{} 1", second["snapshot_id"].as_str().unwrap())
    );
    assert!(heard.iter().all(|l| l.ends_with(" 1")), "{heard:?}");
}

#[test]
fn a_cron_schedule_runs_at_the_times_it_names() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    // Six fields: seconds first, every even second.
    let mut child = start(
        &env,
        &[
            "backup",
            src.to_str().unwrap(),
            "--schedule",
            "*/2 * * * * *",
        ],
    );
    let (out, _err) = lines(&mut child);
    for _ in 0..2 {
        let next = message(&next_line(&out, is("scheduled")));
        let at = chrono::DateTime::parse_from_rfc3339(next["next"].as_str().unwrap()).unwrap();
        use chrono::Timelike;
        assert_eq!((at.second() % 2, at.nanosecond()), (0, 0), "{at}");
        next_line(&out, is("summary"));
    }
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // A run under way at the stop finishes.
    let late = remaining(&out).iter().filter(|l| is("summary")(l)).count();
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2 + late);
}

#[test]
fn a_bad_schedule_or_retention_without_one_is_refused() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for (args, says) in [
        (vec!["--schedule", "soon"], "neither an interval"),
        (vec!["--schedule", "0s"], "longer than zero"),
        (vec!["--schedule", "1ms"], "at least one second, not 1ms"),
        (
            vec!["--schedule", "0 0 31 2 *"],
            "never matches a time to come",
        ),
        (vec!["--schedule", "36501d"], "too long: at most 100 years"),
        (vec!["--schedule", "5x"], "invalid duration \"5x\""),
        (vec!["--schedule", "61 * * * *"], "cron expression"),
        (vec!["--keep-last", "3"], "need --schedule"),
    ] {
        let out = env
            .cmd()
            .arg("backup")
            .arg(&src)
            .args(&args)
            .output()
            .unwrap();
        assert_no_panic(&out);
        // A wrong command line: exit 2.
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

#[test]
fn skip_if_unchanged_writes_no_snapshot_until_something_changes() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "one").unwrap();
    let s = src.to_str().unwrap();
    env.ok(&["backup", s, "--skip-if-unchanged"]);
    // A run writes a snapshot after all when a test running alongside
    // changed /tmp (recorded as the source's ancestor) since the last: try
    // again, and count it.
    let mut extra = 0;
    let out = loop {
        let out = env.ok(&["backup", s, "--skip-if-unchanged"]);
        if out.contains("no snapshot written") || extra == 3 {
            break out;
        }
        assert!(out.contains("saved"), "{out}");
        extra += 1;
    };
    assert!(out.contains("no snapshot written"), "{out}");
    let v = loop {
        let v = env.json(&["backup", s, "--skip-if-unchanged"]);
        if v["message_type"] != "summary" || extra == 6 {
            break v;
        }
        extra += 1;
    };
    assert_eq!(v["message_type"], "unchanged", "{v}");
    assert_eq!(
        env.json(&["snapshots"]).as_array().unwrap().len(),
        1 + extra
    );
    fs::write(src.join("f"), "two").unwrap();
    let v = env.json(&["backup", s, "--skip-if-unchanged"]);
    assert_eq!(v["message_type"], "summary");
    assert_eq!(v["files_changed"], 1);
    // Scheduled: runs that find nothing changed write nothing.
    let mut child = start(
        &env,
        &["backup", s, "--skip-if-unchanged", "--schedule", "1s"],
    );
    let (out, _err) = lines(&mut child);
    // A snapshot also records the source's ancestors (/tmp here, which
    // tests running alongside change): a run that sees them changed writes
    // one. Count what each run said.
    let (mut unchanged, mut written) = (0, 0);
    while unchanged < 3 {
        let l = next_line(&out, |l| is("unchanged")(l) || is("summary")(l));
        if is("unchanged")(&l) {
            unchanged += 1;
        } else {
            written += 1;
        }
    }
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    written += remaining(&out).iter().filter(|l| is("summary")(l)).count();
    assert_eq!(
        env.json(&["snapshots"]).as_array().unwrap().len(),
        2 + extra + written
    );
    let t = env.path("t");
    env.restore("latest", &t);
    assert_eq!(
        fs::read_to_string(restored(&t, &src).join("f")).unwrap(),
        "two"
    );
    // A stream has no earlier tree to compare with.
    let out = env
        .cmd()
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "x",
            "--skip-if-unchanged",
        ])
        .output()
        .unwrap();
    // A usage error.
    exits(&out, 2);
}

/// A schedule's retention forgets among its own snapshots: same host,
/// paths and tags. Every stream is `/stdin`, so a schedule of one
/// database's dumps removed another's, and a schedule of a directory the
/// snapshot of it taken by hand before an upgrade.
#[test]
fn a_schedule_forgets_only_among_snapshots_with_its_own_tags() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.txt"), "first").unwrap();
    let s = src.to_str().unwrap();
    env.ok(&["backup", s, "--tag", "pre-upgrade"]);
    env.ok(&["backup", s]);
    let by_hand = snapshot_ids(&env);
    let mut child = start(
        &env,
        &[
            "backup",
            s,
            "--tag",
            "nightly",
            "--schedule",
            "1s",
            "--keep-last",
            "1",
        ],
    );
    let (out, _err) = lines(&mut child);
    for run in 0..3 {
        next_line(&out, is("summary"));
        if run >= 1 {
            let f = message(&next_line(&out, is("forgot")));
            let removed = f["removed"].as_array().unwrap();
            assert_eq!(removed.len(), 1, "{f}");
            assert!(
                !by_hand.contains(&removed[0].as_str().unwrap().to_string()),
                "{f}"
            );
        }
    }
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // A run under way at the stop finishes, without its retention.
    let late = remaining(&out).iter().filter(|l| is("summary")(l)).count();
    let now = snapshot_ids(&env);
    assert_eq!(now.len(), 3 + late, "{now:?}");
    for id in &by_hand {
        assert!(now.contains(id), "{id} taken by hand was forgotten");
    }
}

/// A run whose report cannot be written to standard output (the disk under
/// the log is full) is told to the failure hook, and the schedule goes on,
/// its retention too: the write ended the schedule for good, hook unrun.
#[test]
fn a_report_that_cannot_be_written_is_told_and_the_schedule_goes_on() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("notes.txt"), "notes").unwrap();
    let errs = env.path("errs");
    let on_failure = format!("echo \"$CAIRN_ERROR\" >> {}", errs.display());
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = env
        .cmd()
        .args(["backup", src.to_str().unwrap(), "--schedule", "1s"])
        .args(["--keep-last", "1", "--on-failure", &on_failure])
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = line_by_line(Box::new(child.stderr.take().unwrap()));
    for _ in 0..3 {
        let l = next_line(&err, |l| l.contains("was lost"));
        assert!(l.contains("No space left on device"), "{l}");
    }
    assert!(child.try_wait().unwrap().is_none(), "the schedule ended");
    terminate(&child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let errs = fs::read_to_string(&errs).unwrap();
    assert!(errs.lines().count() >= 3, "{errs}");
    assert!(errs.contains("No space left on device"), "{errs}");
    // The snapshots were written all the same, and retention ran after
    // them (not after the last, which the stop cut short).
    let left = snapshot_ids(&env).len();
    assert!((1..=2).contains(&left), "{left} snapshots of 3 runs left");
}
