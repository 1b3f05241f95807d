//! Live SQLite capture and restore verification, end to end: the real
//! binary against databases that python3's sqlite3 module writes to.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A writer inserting one row per transaction until `stop` exists; prints
/// the rows it wrote and its longest commit (the stall) as JSON. It does
/// not checkpoint: the fsyncs of its own checkpoints took over a second on
/// a loaded machine, a stall that is not the capture's.
const WRITER: &str = "import sqlite3,sys,time,os,json
c=sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
c.execute('pragma synchronous=normal')
c.execute('pragma wal_autocheckpoint=0')
n=0; worst=0.0
while not os.path.exists(sys.argv[2]):
    t=time.monotonic()
    c.execute('begin immediate')
    c.execute('insert into events(payload) values (?)', ('w'*200,))
    c.execute('commit')
    worst=max(worst, time.monotonic()-t); n+=1
print(json.dumps({'rows': n, 'max_stall': worst}))
";

fn start_writer(db: &Path, stop: &Path) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(WRITER)
        .arg(db)
        .arg(stop)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start writer")
}

/// Captures `db` 8 times while the writer inserts, then checks every
/// snapshot; returns the writer's longest stall in seconds.
fn captures_under_load(mode: &str) -> f64 {
    let env = Env::new();
    let db = env.path("live.db");
    let stop = env.path("stop");
    // About 5 MiB: the copy takes many steps of 1 MiB.
    create_db(&db, mode, 20_000);
    let writer = start_writer(&db, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let mut snaps = Vec::new();
    for _ in 0..8 {
        let r = env.json(&["backup", "--sqlite", db.to_str().unwrap()]);
        let dbs = r["databases"].as_array().expect("databases recorded");
        assert_eq!(dbs.len(), 1);
        assert_eq!(dbs[0]["path"], db.to_str().unwrap());
        let rows = dbs[0]["tables"]["events"].as_u64().expect("row count");
        snaps.push((r["snapshot_id"].as_str().unwrap().to_string(), rows));
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::write(&stop, b"").unwrap();
    let out = writer.wait_with_output().unwrap();
    assert!(out.status.success(), "writer failed");
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stall = w["max_stall"].as_f64().unwrap();
    println!(
        "{mode}: writer inserted {} rows during 8 captures; longest writer stall {:.1} ms",
        w["rows"],
        stall * 1000.0
    );

    let mut last = 0;
    for (i, (id, rows)) in snaps.iter().enumerate() {
        assert!(*rows >= last, "row counts went backwards: {snaps:?}");
        last = *rows;
        let target = env.path(&format!("restore-{i}"));
        env.restore(id, &target);
        let copy = restored(&target, &db);
        let (integrity, count) = check_db(&copy, "events");
        assert_eq!(integrity, "ok", "snapshot {id}");
        assert_eq!(
            count, *rows,
            "snapshot {id}: restored rows differ from recorded"
        );
    }
    assert!(
        snaps.last().unwrap().1 > snaps[0].1,
        "the writer made no progress during the captures: {snaps:?}"
    );
    let ids: Vec<&str> = snaps.iter().map(|(id, _)| id.as_str()).collect();
    let mut args = vec!["--json", "verify-restore"];
    args.extend(&ids);
    let out = env.ok(&args);
    for line in out.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["ok"], true, "{line}");
        assert_eq!(r["databases"][0]["integrity"], "ok", "{line}");
    }
    assert_eq!(out.lines().count(), 8);
    stall
}

#[test]
fn captures_of_a_busy_wal_database_are_consistent_and_monotonic() {
    let stall = captures_under_load("wal");
    assert!(stall < 1.0, "writer stalled {stall:.3} s");
}

#[test]
fn captures_of_a_busy_rollback_journal_database_are_consistent_and_monotonic() {
    let stall = captures_under_load("delete");
    // A rollback-journal database has no snapshot isolation: each copy step
    // holds a shared lock the writer must wait out. The 1 s target holds in
    // WAL mode (above, and the recommended mode in docs/databases.md); here a
    // loaded 2-core CI machine has been seen at 1-2 s, so the bound is looser.
    eprintln!("rollback journal: longest writer stall {stall:.3} s");
    assert!(stall < 3.0, "writer stalled {stall:.3} s");
}

/// A writer updating rows in place (the file never grows) and committing as
/// fast as it can until `stop` exists; prints its commits, its longest
/// commit and the checksum it keeps in step with the rows.
const UPDATER: &str = "import sqlite3,sys,time,os,json,random
c=sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
n=0; worst=0.0
while not os.path.exists(sys.argv[2]):
    t=time.monotonic()
    c.execute('begin immediate')
    c.execute('update events set payload=? where id=?', ('u%07d' % n + 'p'*192, random.randint(1, 20000)))
    c.execute('update total set n=n+1')
    c.execute('commit')
    worst=max(worst, time.monotonic()-t); n+=1
    if len(sys.argv) > 3: time.sleep(float(sys.argv[3]))
print(json.dumps({'commits': n, 'max_stall': worst}))
";

/// A rollback-journal database of `rows` events, with the `total` table
/// [`UPDATER`] counts its commits in.
fn create_db_for_updater(db: &Path, rows: u32) {
    create_db(db, "delete", rows);
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
         c.execute('create table total(n integer)')\n\
         c.execute('insert into total values (0)')\nc.commit()",
        &[db],
    );
}

/// Starts [`UPDATER`] on `db` until `stop` exists; `pause` is the seconds
/// it sleeps after each commit, if any.
fn start_updater(db: &Path, stop: &Path, pause: &[&str]) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(UPDATER)
        .arg(db)
        .arg(stop)
        .args(pause)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start writer")
}

#[test]
fn sqlite_aware_captures_a_changed_database_without_a_journal_and_reuses_an_unchanged_one() {
    // Between transactions a rollback-journal database has no `-journal`,
    // yet a commit can land while a plain copy reads it: torn copies were
    // stored without an error.
    let env = Env::new();
    let src = env.path("app");
    fs::create_dir(&src).unwrap();
    let db = src.join("app.db");
    create_db_for_updater(&db, 2_000);
    assert!(!src.join("app.db-journal").exists());
    // A closed WAL database is captured too (its next writer may come
    // along while it is read), and left without -wal and -shm, as its last
    // connection left it.
    create_db(&src.join("closed-wal.db"), "wal", 10);
    assert!(!src.join("closed-wal.db-wal").exists());
    let s = src.to_str().unwrap();
    let r = env.json(&["backup", "--sqlite-aware", s]);
    assert_eq!(r["databases"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["databases"][0]["tables"]["events"], 2_000, "{r}");
    assert_eq!(r["databases"][1]["tables"]["events"], 10, "{r}");
    assert!(!src.join("closed-wal.db-wal").exists());
    assert!(!src.join("closed-wal.db-shm").exists());
    // Unchanged: the parent's copy and its record stand, and the file is
    // not read.
    let r = env.json(&["backup", "--sqlite-aware", s]);
    assert_eq!(r["databases"][0]["tables"]["events"], 2_000, "{r}");
    assert_eq!(
        (r["files_unmodified"].as_u64(), r["bytes_read"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );

    // A writer committing every 5 ms: each backup captures the database.
    let stop = env.path("stop");
    let writer = start_updater(&db, &stop, &["0.005"]);
    // Until the writer's first commits are in.
    let before = fs::metadata(&db).unwrap().modified().unwrap();
    let started = std::time::Instant::now();
    while fs::metadata(&db).unwrap().modified().unwrap() == before {
        assert!(started.elapsed() < Duration::from_secs(30), "no commit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut snaps = Vec::new();
    for _ in 0..5 {
        let r = env.json(&["backup", "--sqlite-aware", s]);
        assert_eq!(r["databases"][0]["path"], db.to_str().unwrap(), "{r}");
        assert_eq!(r["partial"], false, "{r}");
        snaps.push(r["snapshot_id"].as_str().unwrap().to_string());
    }
    fs::write(&stop, b"").unwrap();
    let w = writer.wait_with_output().unwrap();
    let w: serde_json::Value = serde_json::from_slice(&w.stdout).unwrap();
    assert!(w["commits"].as_u64().unwrap() > 10, "{w}");
    for id in &snaps {
        let target = env.path(&format!("restore-{id}"));
        env.restore(id, &target);
        let (integrity, rows) = check_db(&restored(&target, &db), "events");
        assert_eq!((integrity.as_str(), rows), ("ok", 2_000), "snapshot {id}");
    }
}

/// Commits `rows` rows to `db`'s `events` in its WAL and exits without
/// closing, as a crashed application does: nothing is checkpointed, and
/// the `-wal` stays beside the database holding them.
fn commit_then_crash(db: &Path, rows: u32) {
    py(
        &format!(
            "import sqlite3,sys,os\nc=sqlite3.connect(sys.argv[1])\n\
             c.execute('pragma wal_autocheckpoint=0')\n\
             c.executemany('insert into events(payload) values (?)', [('late',)]*{rows})\n\
             c.commit()\nsys.stdout.flush()\nos._exit(0)"
        ),
        &[db],
    );
}

/// Restores the latest snapshot's `src` onto itself; its stderr.
fn restore_over(env: &Env, src: &Path) -> String {
    let sub = format!("latest:{}", src.display());
    let out = env
        .cmd()
        .args(["restore", &sub, "--target", src.to_str().unwrap()])
        .output()
        .unwrap();
    exits(&out, 0)
}

#[test]
fn a_capture_restored_over_its_database_drops_the_journal_left_beside_it() {
    // The application wrote on after the backup and crashed, leaving its
    // -wal: restored over it, the capture got that journal replayed over
    // it (the restore silently undone, or a corrupt database).
    let env = Env::new();
    let src = env.path("app");
    fs::create_dir(&src).unwrap();
    let db = src.join("app.db");
    create_db(&db, "wal", 100);
    let r = env.json(&["backup", "--sqlite", db.to_str().unwrap()]);
    assert_eq!(r["databases"][0]["tables"]["events"], 100, "{r}");
    commit_then_crash(&db, 50);
    assert!(src.join("app.db-wal").exists(), "the crash left no -wal");
    let err = restore_over(&env, &src);
    assert!(err.contains("app.db-wal"), "{err}");
    assert!(!src.join("app.db-wal").exists());
    assert!(!src.join("app.db-shm").exists());
    assert_eq!(check_db(&db, "events"), ("ok".to_string(), 100));
}

#[test]
fn a_database_stored_as_a_plain_file_restored_over_its_database_drops_the_stale_journal() {
    // Backed up without --sqlite-aware (or a capture that fell back to a
    // plain copy) while idle: the snapshot holds the file and no -wal. The
    // -wal a crash left later was kept beside the restored copy, and
    // SQLite replayed it: the restore was undone without a word.
    let env = Env::new();
    let src = env.path("app");
    fs::create_dir(&src).unwrap();
    let db = src.join("app.db");
    create_db(&db, "wal", 100);
    assert!(
        !src.join("app.db-wal").exists(),
        "an idle database has no -wal"
    );
    // A file of whole pages that is no database keeps what is beside it.
    write_random(&src.join("blob.bin"), 4096, 3);
    env.backup(&[&src]);
    commit_then_crash(&db, 50);
    assert!(src.join("app.db-wal").exists(), "the crash left no -wal");
    fs::write(src.join("blob.bin-wal"), b"not SQLite's").unwrap();
    let err = restore_over(&env, &src);
    assert!(err.contains("app.db-wal"), "{err}");
    assert!(!src.join("app.db-wal").exists());
    assert!(!src.join("app.db-shm").exists());
    assert_eq!(check_db(&db, "events"), ("ok".to_string(), 100));
    assert!(src.join("blob.bin-wal").exists(), "{err}");
    assert!(!err.contains("blob.bin-wal"), "{err}");
}

#[test]
fn restore_with_delete_keeps_the_journal_of_a_database_it_leaves_as_it_is() {
    // A capture stores no -wal: `--delete` took the live one for extra
    // beside a database kept (excluded, or under `--overwrite never`), and
    // the commits it held were lost (a hot -journal: a corrupt database).
    let env = Env::new();
    let src = env.path("app");
    fs::create_dir(&src).unwrap();
    let db = src.join("app.db");
    create_db(&db, "wal", 100);
    env.json(&["backup", "--sqlite-aware", src.to_str().unwrap()]);
    commit_then_crash(&db, 50);
    assert!(
        src.join("app.db-wal").exists(),
        "the commits are not in a -wal"
    );
    let sub = format!("latest:{}", src.display());
    for kept in [
        &["--overwrite", "never"][..],
        &["--exclude", db.to_str().unwrap()],
    ] {
        let out = env
            .cmd()
            .args([
                "restore",
                &sub,
                "--target",
                src.to_str().unwrap(),
                "--delete",
            ])
            .args(kept)
            .output()
            .unwrap();
        exits(&out, 0);
        assert!(src.join("app.db-wal").exists(), "{kept:?}: -wal deleted");
    }
    assert_eq!(check_db(&db, "events"), ("ok".to_string(), 150));
    // Restored over, the database loses them, as the snapshot has it.
    commit_then_crash(&db, 5);
    let out = env
        .cmd()
        .args([
            "restore",
            &sub,
            "--target",
            src.to_str().unwrap(),
            "--delete",
        ])
        .output()
        .unwrap();
    exits(&out, 0);
    assert!(!src.join("app.db-wal").exists());
    assert_eq!(check_db(&db, "events"), ("ok".to_string(), 100));
}

#[test]
fn a_wal_database_cairn_may_not_write_is_copied_and_left_without_sidecars() {
    // Opened by a user who may not write it, a connection reads only and
    // leaves -wal and -shm behind, owned by that user: the database's
    // owner could no longer write it.
    let env = Env::new();
    let src = env.path("shared");
    fs::create_dir(&src).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o777)).unwrap();
    let db = src.join("app.db");
    create_db(&db, "wal", 100);
    let mut cmd = env.cmd();
    as_unprivileged(&env, &mut cmd);
    if !is_root() {
        fs::set_permissions(&db, fs::Permissions::from_mode(0o444)).unwrap();
    }
    let out = cmd
        .args(["--json", "backup", "--sqlite-aware", src.to_str().unwrap()])
        .output()
        .unwrap();
    exits(&out, 0);
    assert!(!src.join("app.db-wal").exists());
    assert!(!src.join("app.db-shm").exists());
    let target = env.path("r");
    env.restore("latest", &target);
    let (integrity, rows) = check_db(&restored(&target, &db), "events");
    assert_eq!((integrity.as_str(), rows), ("ok", 100));
    // Named with --sqlite by a user who neither owns it nor may write it:
    // refused, nothing left beside it.
    if is_root() {
        let mut cmd = env.cmd();
        as_unprivileged(&env, &mut cmd);
        let out = cmd
            .args(["backup", "--sqlite", db.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(exits(&out, 1).contains("as its owner or as root"));
        assert!(!src.join("app.db-wal").exists());
        assert!(!src.join("app.db-shm").exists());
    }
}

#[test]
fn sqlite_aware_captures_a_wal_database_whose_writers_come_and_go() {
    // Short-lived connections (a CLI, a cron script, a PHP page) each
    // checkpoint and delete the -wal as they close: most of the time there
    // is none, and a plain copy was torn by the next one's checkpoint.
    let env = Env::new();
    let src = env.path("app");
    fs::create_dir(&src).unwrap();
    let db = src.join("app.db");
    create_db(&db, "wal", 20_000);
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
         c.execute('create table total(n integer)')\n\
         c.execute('insert into total values (0)')\nc.commit()",
        &[&db],
    );
    let stop = env.path("stop");
    let writer = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys,time,os,random
n=0
while not os.path.exists(sys.argv[2]):
    c=sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    c.execute('begin immediate')
    for _ in range(50):
        c.execute('update events set payload=? where id=?', ('u%07d' % n + 'p'*192, random.randint(1, 20000)))
    c.execute('update total set n=n+1')
    c.execute('commit')
    c.close(); n+=1
    time.sleep(0.02)
print(n)",
        )
        .arg(&db)
        .arg(&stop)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Until the writer's first commits are in (a checkpoint moves them).
    let before = fs::metadata(&db).unwrap().modified().unwrap();
    let started = std::time::Instant::now();
    while fs::metadata(&db).unwrap().modified().unwrap() == before {
        assert!(started.elapsed() < Duration::from_secs(30), "no commit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = src.to_str().unwrap();
    let mut snaps = Vec::new();
    for _ in 0..6 {
        let r = env.json(&["backup", "--sqlite-aware", s]);
        assert_eq!(r["databases"][0]["path"], db.to_str().unwrap(), "{r}");
        assert_eq!(r["databases"][0]["tables"]["events"], 20_000, "{r}");
        assert_eq!(r["partial"], false, "{r}");
        snaps.push(r["snapshot_id"].as_str().unwrap().to_string());
    }
    fs::write(&stop, b"").unwrap();
    let w = writer.wait_with_output().unwrap();
    let commits: u64 = String::from_utf8_lossy(&w.stdout).trim().parse().unwrap();
    assert!(commits > 1, "{commits} commits");
    for id in &snaps {
        let target = env.path(&format!("restore-{id}"));
        env.restore(id, &target);
        let (integrity, rows) = check_db(&restored(&target, &db), "events");
        assert_eq!((integrity.as_str(), rows), ("ok", 20_000), "snapshot {id}");
    }
    // The last connection's cleanup stands: no -shm left by the captures.
    assert!(!src.join("app.db-shm").exists() || src.join("app.db-wal").exists());
}

#[test]
fn a_writer_committing_between_every_step_cannot_keep_a_capture_from_finishing() {
    let env = Env::new();
    let db = env.path("busy.db");
    let stop = env.path("stop");
    // Rollback journal: each commit elsewhere starts SQLite's copy over.
    create_db_for_updater(&db, 20_000);
    let writer = start_updater(&db, &stop, &[]);
    std::thread::sleep(Duration::from_millis(300));
    // Before the restart limit this never ended (the copy began again after
    // every commit). The writer has to land a commit in 4 of the copy's
    // 2 ms pauses: on a loaded machine it may not get the CPU in time, and
    // the copy simply finishes; a few tries give it the chance.
    let mut tries = 0;
    let r = loop {
        tries += 1;
        let mut cmd = env.cmd();
        cmd.args(["--json", "backup", "--sqlite", db.to_str().unwrap()]);
        let out = output_within(cmd, 120);
        assert_no_panic(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        let r = last_json(&out);
        if r["warnings"]
            .to_string()
            .contains("restarted the SQLite copy")
            || tries == 5
        {
            break r;
        }
    };
    fs::write(&stop, b"").unwrap();
    let w = writer.wait_with_output().unwrap();
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("commits restarted the SQLite copy 4 times")
            && warnings.contains("finished in one step under one read lock"),
        "{r}"
    );
    let w: serde_json::Value = serde_json::from_slice(&w.stdout).unwrap();
    assert!(w["commits"].as_u64().unwrap() > 0, "{w}");
    eprintln!("update-only writer: {w}");

    // The copy is one consistent state: whole, and every update counted.
    let target = env.path("restore");
    env.restore("latest", &target);
    let copy = restored(&target, &db);
    let (integrity, rows) = check_db(&copy, "events");
    assert_eq!((integrity.as_str(), rows), ("ok", 20_000));
    let out = py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
         print(c.execute('select n from total').fetchone()[0])\n\
         print(c.execute(\"select count(*) from events where payload like 'u%'\").fetchone()[0])",
        &[&copy],
    );
    let v: Vec<u64> = out.lines().map(|l| l.parse().unwrap()).collect();
    // Random rows: some are hit twice, none is updated without the count.
    assert!(
        v[1] <= v[0] && v[0] > 0,
        "commits {} rows updated {}",
        v[0],
        v[1]
    );
}

/// Starts a process holding an exclusive transaction on `db` (it keeps
/// every reader out until it ends) for `secs` seconds, once it holds it.
fn hold_exclusive_lock(env: &Env, db: &Path, secs: u32) -> Killed {
    let ready = env.path("ready");
    let holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('begin exclusive')\nopen(sys.argv[2],'w').close()\ntime.sleep({secs})"
        ))
        .arg(db)
        .arg(&ready)
        .spawn()
        .expect("start lock holder");
    let holder = Killed(holder);
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    holder
}

#[test]
fn a_lock_held_longer_than_the_timeout_fails_the_capture_and_writes_no_snapshot() {
    let env = Env::new();
    let db = env.path("locked.db");
    create_db(&db, "delete", 100);
    let holder = hold_exclusive_lock(&env, &db, 30);
    let started = std::time::Instant::now();
    let mut cmd = env.cmd();
    cmd.args([
        "backup",
        "--sqlite",
        db.to_str().unwrap(),
        "--sqlite-lock-timeout",
        "2s",
    ]);
    let out = output_within(cmd, 25);
    let took = started.elapsed();
    drop(holder);
    let err = exits(&out, 1);
    assert!(
        err.contains("locked by another connection for more than 2 s"),
        "{err}"
    );
    assert!(took >= Duration::from_secs(2), "gave up after {took:?}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

/// Starts `backup --sqlite db ARGS`, sends it SIGINT after `after` (it
/// must still run then) and returns its output; it must end within `limit`
/// of the signal.
fn stop_backup_after(
    env: &Env,
    db: &Path,
    args: &[&str],
    after: Duration,
    limit: Duration,
) -> std::process::Output {
    let mut backup = env
        .cmd()
        .args(["backup", "--sqlite", db.to_str().unwrap()])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    assert!(backup.try_wait().unwrap().is_none(), "the backup ended");
    // SAFETY: signals a child process of this test.
    assert_eq!(unsafe { libc::kill(backup.id() as i32, libc::SIGINT) }, 0);
    let stopped = std::time::Instant::now();
    while backup.try_wait().unwrap().is_none() {
        assert!(
            stopped.elapsed() < limit,
            "the backup went on after the stop ({:?})",
            stopped.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    backup.wait_with_output().unwrap()
}

#[test]
fn a_stop_ends_the_wait_for_a_lock_at_once() {
    let env = Env::new();
    let db = env.path("locked.db");
    create_db(&db, "delete", 100);
    let holder = hold_exclusive_lock(&env, &db, 60);
    // An hour's wait for the lock, stopped a moment after it began: the
    // stop used to wait for the lock (here, the holder's minute).
    let out = stop_backup_after(
        &env,
        &db,
        &["--sqlite-lock-timeout", "1h"],
        Duration::from_millis(1500),
        Duration::from_secs(20),
    );
    drop(holder);
    exits(&out, 130);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

/// The copy's check and row counts read all of it (minutes for a large
/// database): a stop ends them too. Here a CHECK constraint that takes
/// 0.1 s a row makes quick_check of 150 rows last 15 s.
#[test]
fn a_stop_ends_the_check_of_the_copy() {
    let env = Env::new();
    let db = env.path("slow.db");
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
         c.execute('create table t(a)')\n\
         c.executemany('insert into t values (?)', [(i,) for i in range(150)])\n\
         c.commit()\nc.execute('pragma writable_schema=on')\n\
         c.execute(\"update sqlite_schema set sql='CREATE TABLE t(a CHECK(length(hex(zeroblob(20000000+a)))>0))' where name='t'\")\n\
         c.commit()",
        &[&db],
    );
    let out = stop_backup_after(
        &env,
        &db,
        &[],
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    exits(&out, 130);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

/// The capture copies the database into $TMPDIR first: a $TMPDIR too
/// small says so, and names it, not the database's own disk.
#[test]
fn a_full_tmpdir_is_named_as_the_place_that_is_full() {
    let env = Env::new();
    let db = env.path("big.db");
    create_db(&db, "delete", 20_000);
    assert!(fs::metadata(&db).unwrap().len() > 2 << 20);
    let (disk, _tmpfs) = small_disk(&env, "1m");
    let out = env
        .cmd()
        .env("TMPDIR", &disk)
        .args(["backup", "--sqlite", db.to_str().unwrap()])
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("filled its disk"), "{err}");
    assert!(err.contains(disk.to_str().unwrap()), "{err}");
    assert!(err.contains("TMPDIR"), "{err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

#[test]
fn sqlite_aware_backup_captures_what_the_wal_holds_and_skips_sidecars() {
    let env = Env::new();
    let src = env.path("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("notes.txt"), b"plain file").unwrap();
    let db = src.join("app.db");
    create_db(&db, "wal", 10);
    // Rows committed to the WAL only: exit without closing, so nothing is
    // checkpointed into app.db and a plain copy of it alone would lack them.
    commit_then_crash(&db, 500);
    assert!(src.join("app.db-wal").exists());

    let r = env.json(&["backup", "--sqlite-aware", src.to_str().unwrap()]);
    assert_eq!(r["databases"][0]["tables"]["events"], 510);
    let listed = env.ok(&["ls", "latest"]);
    assert!(listed.contains("app.db"), "{listed}");
    assert!(!listed.contains("app.db-wal"), "{listed}");
    assert!(!listed.contains("app.db-shm"), "{listed}");
    assert!(listed.contains("notes.txt"), "{listed}");

    let target = env.path("restore");
    env.restore("latest", &target);
    let copy = restored(&target, &db);
    assert!(!copy.with_file_name("app.db-wal").exists());
    assert_eq!(check_db(&copy, "events"), ("ok".to_string(), 510));
    assert_eq!(
        fs::read(restored(&target, &src.join("notes.txt"))).unwrap(),
        b"plain file"
    );
}

#[test]
fn a_database_failing_quick_check_leaves_no_snapshot() {
    let env = Env::new();
    let db = env.path("broken.db");
    create_db(&db, "delete", 2000);
    // Overwrite the middle of a table page with garbage: a torn write.
    let mut bytes = fs::read(&db).unwrap();
    let page = 4096 * 3;
    for b in &mut bytes[page + 8..page + 2048] {
        *b = 0xA5;
    }
    fs::write(&db, &bytes).unwrap();

    let err = env.fails(&["backup", "--sqlite", db.to_str().unwrap()], 1);
    assert!(err.contains("quick_check"), "{err}");
    assert!(err.contains("no snapshot was written"), "{err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);

    // Named for capture but no database file: a symlink (stored as a
    // link, nothing captured, exit 0) or a directory (a plain backup).
    let link = env.path("link.db");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    let err = env.fails(&["backup", "--sqlite", link.to_str().unwrap()], 1);
    assert!(err.contains("symbolic link"), "{err}");
    let d = env.path("a-dir");
    fs::create_dir(&d).unwrap();
    let err = env.fails(&["backup", "--sqlite", d.to_str().unwrap()], 1);
    assert!(err.contains("a directory"), "{err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);

    // Found by --sqlite-aware in a directory (a stale journal beside it makes
    // it look live), the same database does not stop the backup of the
    // rest: stored as it is on disk, reported, the snapshot partial (exit 3).
    let dir = env.path("app");
    fs::create_dir(&dir).unwrap();
    fs::copy(&db, dir.join("broken.db")).unwrap();
    fs::write(dir.join("broken.db-journal"), b"").unwrap();
    fs::write(dir.join("notes.txt"), b"still backed up").unwrap();
    let err = env.fails(&["backup", "--sqlite-aware", dir.to_str().unwrap()], 3);
    assert!(err.contains("cannot capture this SQLite database"), "{err}");
    // The capture's words for a named database are not this one's: a
    // snapshot was written.
    assert!(!err.contains("no snapshot was written"), "{err}");
    let target = env.path("restore");
    env.restore("latest", &target);
    assert_eq!(
        fs::read(restored(&target, &dir.join("notes.txt"))).unwrap(),
        b"still backed up"
    );
    assert_eq!(
        fs::read(restored(&target, &dir.join("broken.db"))).unwrap(),
        bytes
    );
    // Its journal stays beside it: the plain copy needs it.
    assert!(restored(&target, &dir.join("broken.db-journal")).exists());

    // Given as a source itself: its journal is stored beside it all the
    // same (it was left out of the snapshot).
    let err = env.fails(
        &[
            "backup",
            "--sqlite-aware",
            dir.join("broken.db").to_str().unwrap(),
        ],
        3,
    );
    assert!(err.contains("cannot capture this SQLite database"), "{err}");
    let target = env.path("restore-file");
    env.restore("latest", &target);
    assert!(restored(&target, &dir.join("broken.db-journal")).exists());

    // A `-shm` left without a journal is kept by the listing, and the
    // failed capture added it again: a tree with a name twice, which no
    // reader accepts (`ls`, `restore` and the next backup failed on it).
    fs::remove_file(dir.join("broken.db-journal")).unwrap();
    fs::write(dir.join("broken.db-shm"), b"left by a crash").unwrap();
    let out = env
        .cmd()
        .args(["--json", "backup", "--sqlite-aware", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let err = exits(&out, 3);
    assert!(err.contains("cannot capture this SQLite database"), "{err}");
    // Counted once too (its second save added it to the summary again).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let files = ["files_new", "files_changed", "files_unmodified"]
        .iter()
        .map(|k| r[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(files, 3, "{r}");
    let listed = env.ok(&["ls", "latest"]);
    assert_eq!(listed.matches("broken.db-shm").count(), 1, "{listed}");
    let target = env.path("restore-shm");
    env.restore("latest", &target);
    assert_eq!(
        fs::read(restored(&target, &dir.join("broken.db-shm"))).unwrap(),
        b"left by a crash"
    );
    env.assert_check_clean();
}

/// Applications register collations and functions at run time (Calibre's
/// `PYNOCASE`, `title_sort`); SQLite cannot check an index that uses one
/// without it. Such a database is captured and restore-tested all the
/// same, checked table by table, and the tables left out are named. Rows
/// are counted without indexes: `books` has a column more than its index,
/// so SQLite would count through the index, and fail without `PYNOCASE`.
/// `shelves` is keyed on the collation: it cannot be counted, only named.
#[test]
fn a_database_using_its_applications_collation_or_function_is_captured_and_verified() {
    let env = Env::new();
    let db = env.path("library.db");
    let made = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys
c=sqlite3.connect(sys.argv[1])
c.create_collation('PYNOCASE', lambda a,b:(a.lower()>b.lower())-(a.lower()<b.lower()))
c.create_function('title_sort', 1, lambda s: s.lower(), deterministic=True)
c.execute('create table books(id integer primary key, title text collate PYNOCASE, author text)')
c.execute('create index by_title on books(title collate PYNOCASE)')
c.execute('create table shelves(name text collate PYNOCASE primary key, room text) without rowid')
c.execute('create table series(id integer primary key, name text)')
c.execute('create index by_sort on series(title_sort(name))')
c.execute('create table plain(x)')
c.executemany('insert into books(title, author) values (?, ?)', [('b', 'x'), ('A', 'y'), ('c', 'z')])
c.executemany('insert into shelves values (?, ?)', [('top', 'hall'), ('Low', 'den')])
c.executemany('insert into series(name) values (?)', [('X',), ('y',)])
c.execute('insert into plain values (1)')
c.commit()",
        )
        .arg(&db)
        .status()
        .unwrap();
    assert!(made.success());
    let out = env.run(&["--json", "backup", "--sqlite", db.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("could not check table books"), "{err}");
    assert!(err.contains("PYNOCASE"), "{err}");

    // The restore test checks what SQLite can and names the rest.
    let r = env.json(&["verify-restore", "latest"]);
    assert_eq!(r["ok"], true, "{r}");
    let d = &r["databases"][0];
    assert_eq!(d["integrity"], "ok");
    // Rows recorded at capture and found in the restored copy.
    for (table, rows) in [("books", 3), ("series", 2), ("plain", 1)] {
        assert_eq!(d["tables"][table]["expected"], rows, "{d}");
        assert_eq!(d["tables"][table]["actual"], rows, "{d}");
    }
    let not_checked: Vec<&str> = d["not_checked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(not_checked.len(), 3, "{not_checked:?}");
    assert!(
        not_checked[0].starts_with("table books: "),
        "{not_checked:?}"
    );
    assert!(
        not_checked[1].starts_with("table series: "),
        "{not_checked:?}"
    );
    assert!(not_checked[1].contains("title_sort"), "{not_checked:?}");
    assert!(
        not_checked[2].starts_with("table shelves: "),
        "{not_checked:?}"
    );
    assert!(d["tables"].get("shelves").is_none(), "{d}");

    // The text report says so too.
    let text = env.ok(&["verify-restore", "latest"]);
    assert!(text.contains("not checked: table books"), "{text}");
}

#[test]
fn verify_restore_of_a_partial_snapshot_says_it_is_partial() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    let gone = env.path("gone");
    let out = env.run(&["backup", src.to_str().unwrap(), gone.to_str().unwrap()]);
    exits(&out, 3);
    let r = env.json(&["verify-restore", "latest"]);
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["warnings"].to_string().contains("partial"), "{r}");
    let text = env.ok(&["verify-restore", "latest"]);
    assert!(text.contains("warning: the snapshot is partial"), "{text}");
}

#[test]
fn verify_restore_passes_good_snapshots_and_names_the_damage_in_a_bad_one() {
    let env = Env::new();
    let good = env.path("good.db");
    create_db(&good, "wal", 300);
    let good_id = env.json(&["backup", "--sqlite", good.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    // A database damaged before capture: its index no longer matches its
    // table (the schema was edited under it, as a buggy tool might).
    // quick_check does not compare indexes with tables, so the capture
    // passes and records row counts; integrity_check at verify time does.
    let bad = env.path("bad.db");
    create_db(&bad, "delete", 300);
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
         c.execute('create index by_payload on events(payload)')\nc.commit()\n\
         c.execute('pragma writable_schema=on')\n\
         c.execute(\"update sqlite_schema set sql='CREATE INDEX by_payload ON events(id)' where name='by_payload'\")\n\
         c.commit()",
        &[&bad],
    );
    let bad_id = env.json(&["backup", "--sqlite", bad.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = env.json(&["verify-restore", &good_id]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["files"], 1);
    assert!(r["seconds"].as_f64().unwrap() >= 0.0);
    let d = &r["databases"][0];
    assert_eq!(d["path"], good.to_str().unwrap());
    assert_eq!(d["integrity"], "ok");
    assert_eq!(d["tables"]["events"]["expected"], 300);
    assert_eq!(d["tables"]["events"]["actual"], 300);

    let out = env
        .cmd()
        .args(["--json", "verify-restore", &good_id, &bad_id])
        .output()
        .unwrap();
    exits(&out, 1);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(lines[1]["ok"], false);
    let d = &lines[1]["databases"][0];
    assert_eq!(d["ok"], false);
    let why = d["integrity"].as_str().unwrap();
    assert!(why.contains("missing from index by_payload"), "{why}");

    // The human report names it too.
    let out = env.run(&["verify-restore", &bad_id]);
    exits(&out, 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILED") && text.contains("by_payload"),
        "{text}"
    );
}

#[test]
fn verify_restore_checks_only_what_it_restored() {
    // A forged record names a database outside the restore (`..`) or of a
    // kind this version does not know: the check opened the host's own
    // file (read-write) and passed, or skipped the database and passed.
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, "wal", 10);
    let id = env.json(&["backup", "--sqlite", db.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let host_db = env.path("host.db");
    create_db(&host_db, "wal", 10);
    let repo = open_engine(&env);
    let real = repo
        .load_snapshot(&cairn_engine::Id::from_hex(&id).unwrap())
        .unwrap();
    let forge = |path: String, kind: &str| {
        let mut f = real.clone();
        f.databases[0].path = path;
        f.databases[0].kind = kind.into();
        repo.save_snapshot(&f).unwrap().to_hex()
    };
    let escaping = format!("/{}{}", "../".repeat(12), host_db.display());
    for (forged, why) in [
        (forge(escaping, "sqlite"), "no path inside the snapshot"),
        (forge(db.display().to_string(), "mysql"), "cannot check"),
    ] {
        let out = env.run(&["--json", "verify-restore", &forged]);
        exits(&out, 1);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["ok"], false, "{r}");
        let integrity = r["databases"][0]["integrity"].as_str().unwrap();
        assert!(integrity.contains(why), "{integrity}");
    }
}

#[test]
fn sqlite_aware_leaves_the_access_times_of_other_files_alone() {
    // Whether a changed file is a database was asked with a plain open,
    // which moved its access time (a mail client's "new mail" went).
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mbox = src.join("inbox");
    fs::write(&mbox, "From someone\n\nnew mail\n").unwrap();
    let long_ago = filetime::FileTime::from_unix_time(1_500_000_000, 0);
    filetime::set_file_atime(&mbox, long_ago).unwrap();
    env.ok(&["backup", "--sqlite-aware", src.to_str().unwrap()]);
    let m = fs::metadata(&mbox).unwrap();
    assert_eq!(filetime::FileTime::from_last_access_time(&m), long_ago);
}

/// Captured databases are cut into page-aligned fixed-size chunks: after 1%
/// of the rows were updated in place, a second capture stores only the
/// changed pages (content-defined ~1 MiB chunks would re-store nearly the
/// whole file), and the restored copy is the database as it was.
#[test]
fn a_second_capture_of_a_lightly_modified_database_adds_little() {
    let env = Env::new();
    let db = env.path("app.db");
    py(ROWS_40K, &[&db]);
    let size = fs::metadata(&db).unwrap().len();
    let first = env.json(&["backup", "--sqlite", db.to_str().unwrap()]);
    py(UPDATE_ROWS, &[&db]);
    let second = env.json(&["backup", "--sqlite", db.to_str().unwrap()]);
    let (a1, a2) = (
        first["data_added"].as_u64().unwrap(),
        second["data_added"].as_u64().unwrap(),
    );
    println!("database {size} bytes: first capture added {a1}, second {a2}");
    assert!(
        a1 > size / 4,
        "the first capture stores the database: {first}"
    );
    assert!(
        a2 < a1 / 4,
        "second capture added {a2} bytes, first {a1}: pages should dedup"
    );
    let t = env.path("r");
    env.restore(second["snapshot_id"].as_str().unwrap(), &t);
    let copy = restored(&t, &db);
    assert_eq!(check_db(&copy, "t"), ("ok".to_string(), 40000));
    let sum = "import hashlib,sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
               print(hashlib.sha256(c.execute('select group_concat(payload) from t').fetchone()[0].encode()).hexdigest())";
    assert_eq!(py(sum, &[&copy]), py(sum, &[&db]), "restored rows differ");
}

/// A writer that checkpoints every few commits (so that pages of the
/// database file itself change all the time) into an indexed table, until
/// `stop` exists.
const CHECKPOINTING_WRITER: &str = "import sqlite3,sys,os
c=sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
c.execute('pragma wal_autocheckpoint=20')
i=0
while not os.path.exists(sys.argv[2]):
    i+=1
    c.execute('insert into events(payload) values (?)', ('v%d' % i + 'w'*300,))
";

#[test]
fn a_database_named_with_sqlite_in_a_directory_backed_up_too_is_captured_consistently() {
    // `backup app --sqlite app/app.db`: the walk of app/ read the -wal and
    // -shm as plain files while the capture ran, and closing them dropped
    // the capture's locks (POSIX locks belong to the process), so a
    // checkpoint overwrote pages mid-copy: "database disk image is
    // malformed" most runs, now and then a corrupt copy saved. The raw
    // -wal and -shm were stored beside the copy too.
    let env = Env::new();
    let app = env.path("app");
    fs::create_dir_all(&app).unwrap();
    let db = app.join("app.db");
    create_db(&db, "wal", 5_000);
    py(
        "import sqlite3,sys\nsqlite3.connect(sys.argv[1]).execute('create index by_payload on events(payload)')",
        &[&db],
    );
    fs::write(app.join("notes.txt"), "beside the database\n").unwrap();
    let stop = env.path("stop");
    let writer = Killed(
        Command::new("python3")
            .arg("-c")
            .arg(CHECKPOINTING_WRITER)
            .arg(&db)
            .arg(&stop)
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = Vec::new();
    for _ in 0..8 {
        let r = env.json(&[
            "backup",
            app.to_str().unwrap(),
            "--sqlite",
            db.to_str().unwrap(),
        ]);
        ids.push(r["snapshot_id"].as_str().unwrap().to_string());
    }
    fs::write(&stop, b"").unwrap();
    drop(writer);
    for id in &ids {
        let listed = env.ok(&["ls", id]);
        assert!(
            listed.contains("app.db") && listed.contains("notes.txt"),
            "{listed}"
        );
        assert!(
            !listed.contains("app.db-wal") && !listed.contains("app.db-shm"),
            "the capture holds what the journal held: {listed}"
        );
        let target = env.path(&format!("r-{id}"));
        env.restore(id, &target);
        let (integrity, rows) = check_db(&restored(&target, &db), "events");
        assert_eq!(integrity, "ok", "snapshot {id}");
        assert!(rows >= 5_000, "{rows}");
    }
}

#[test]
fn an_idle_database_named_with_sqlite_is_skipped_while_unchanged() {
    // Capturing an idle WAL database makes and deletes its -wal and -shm,
    // which changed its directory: every `--skip-if-unchanged` run saved a
    // snapshot of an unchanged database.
    let env = Env::new();
    let dir = env.path("d");
    fs::create_dir_all(&dir).unwrap();
    let db = dir.join("idle.db");
    create_db(&db, "wal", 100);
    let args = [
        "backup",
        "--sqlite",
        db.to_str().unwrap(),
        "--skip-if-unchanged",
    ];
    // The first run saves; a second may too (the first capture changed the
    // directory), and one more now and then when a test running alongside
    // changed /tmp, an ancestor recorded too.
    let unchanged = (0..6).any(|_| env.json(&args)["message_type"] == "unchanged");
    assert!(unchanged, "never skipped");
    py(
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute(\"insert into events(payload) values ('new')\")\nc.commit()",
        &[&db],
    );
    let r = env.json(&args);
    assert_eq!(r["message_type"], "summary", "a change is saved: {r}");
    assert_eq!(r["databases"][0]["tables"]["events"], 101, "{r}");
}

#[test]
fn a_database_first_backed_up_plainly_is_captured_when_named_with_sqlite() {
    // Unchanged since a plain backup, the file was kept as stored: the
    // snapshot held no capture, and verify-restore passed without a word
    // of the database, run after run until it changed.
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, "wal", 100);
    let plain = env.json(&["backup", db.to_str().unwrap()]);
    assert!(
        plain["databases"].as_array().is_none_or(|d| d.is_empty()),
        "{plain}"
    );
    for _ in 0..2 {
        let r = env.json(&["backup", "--sqlite", db.to_str().unwrap()]);
        assert_eq!(r["databases"][0]["tables"]["events"], 100, "{r}");
        let v = env.json(&["verify-restore", "latest"]);
        assert_eq!(v["databases"][0]["integrity"], "ok", "{v}");
    }
}

#[test]
fn an_empty_file_named_with_sqlite_comes_back_empty() {
    let env = Env::new();
    let db = env.path("empty.db");
    fs::write(&db, b"").unwrap();
    env.ok(&["backup", "--sqlite", db.to_str().unwrap()]);
    let t = env.path("t");
    env.restore("latest", &t);
    assert_eq!(fs::metadata(restored(&t, &db)).unwrap().len(), 0);
}

#[test]
fn a_capture_copy_left_by_kill_9_is_removed_by_the_next_capture() {
    // The copy is as big as the database; a killed capture left it in
    // $TMPDIR for good, so a scheduled backup killed now and then (the OOM
    // killer) filled it.
    let env = Env::new();
    let tmp = env.path("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let db = env.path("big.db");
    py(
        "import sqlite3,sys,os\nc=sqlite3.connect(sys.argv[1])\n\
         c.execute('pragma journal_mode=wal')\nc.execute('create table t(a)')\n\
         c.executemany('insert into t values (?)', [(os.urandom(1000),) for _ in range(60000)])\n\
         c.commit()",
        &[&db],
    );
    let copies = || -> Vec<String> {
        fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("cairn-sqlite-"))
            .collect()
    };
    let mut child = env
        .cmd()
        .env("TMPDIR", &tmp)
        .args(["backup", "--sqlite", db.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while copies().is_empty() {
        assert!(std::time::Instant::now() < until, "no copy was made");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the capture ended first"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!copies().is_empty(), "kill -9 leaves the copy");
    // Each copy lies in a directory of its own, closed to others: SQLite
    // opens the copy's -wal by name, and another user could put one first.
    for c in copies() {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(tmp.join(&c)).unwrap();
        assert!(
            m.is_dir() && m.mode() & 0o777 == 0o700,
            "{c}: {:o}",
            m.mode()
        );
    }
    let out = env
        .cmd()
        .env("TMPDIR", &tmp)
        .args(["backup", "--sqlite", db.to_str().unwrap()])
        .output()
        .unwrap();
    exits(&out, 0);
    assert_eq!(
        copies(),
        Vec::<String>::new(),
        "the next capture removed it"
    );
}

#[test]
fn a_hot_journal_is_named_as_the_cause_when_a_capture_cannot_start() {
    // The capture's connection may only read, so it cannot roll back the
    // journal of a writer killed mid-transaction: SQLite says only
    // "attempt to write a readonly database".
    let env = Env::new();
    let db = env.path("crashed.db");
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys,os\nc=sqlite3.connect(sys.argv[1])\n\
             c.execute('create table t(a)')\n\
             c.executemany('insert into t values (?)', [(os.urandom(100),) for _ in range(5000)])\n\
             c.commit()\nc.execute('pragma cache_size=1')\nc.execute('begin')\n\
             c.execute('update t set a=randomblob(100)')\nos.kill(os.getpid(), 9)",
        )
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let journal = env.path("crashed.db-journal");
    assert!(fs::metadata(&journal).unwrap().len() > 0, "a hot journal");
    let err = env.fails(&["backup", "--sqlite", db.to_str().unwrap()], 1);
    assert!(
        err.contains("hot journal") && err.contains("as its owner"),
        "{err}"
    );
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

/// Starts `cairn backup ARGS` with each capture stalled 3 s before the
/// database is opened, and returns once the first stall has begun.
fn backup_stalled_at_open(env: &Env, args: &[&str]) -> Child {
    let mark = env.path("opening");
    let backup = env
        .cmd()
        .env("CAIRN_TEST_SQLITE_STALL_MARK", &mark)
        .arg("backup")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !mark.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no capture");
        std::thread::sleep(Duration::from_millis(10));
    }
    backup
}

#[test]
fn a_directory_above_a_source_removed_during_the_backup_leaves_that_source_out() {
    // A USB disk unplugged while another source was read (its mount point
    // above a source removed): the stat of that directory ended the whole
    // backup, no snapshot, though a source removed itself is left out.
    let env = Env::new();
    let first = env.path("aa");
    fs::create_dir_all(&first).unwrap();
    create_db(&first.join("x.db"), "delete", 10);
    let gone = env.path("zz");
    let second = gone.join("anc").join("src");
    fs::create_dir_all(&second).unwrap();
    fs::write(second.join("f"), "d").unwrap();
    let backup = backup_stalled_at_open(
        &env,
        &[
            "--sqlite-aware",
            first.to_str().unwrap(),
            second.to_str().unwrap(),
        ],
    );
    fs::remove_dir_all(&gone).unwrap();
    let out = backup.wait_with_output().unwrap();
    let err = exits(&out, 3);
    assert!(
        err.contains(&format!(
            "{}: vanished during the backup (sources lie below it)",
            gone.display()
        )),
        "{err}"
    );
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    let listed = env.ok(&["ls", "latest", first.to_str().unwrap()]);
    assert!(listed.contains("x.db"), "{listed}");
}

#[test]
fn a_database_replaced_by_a_link_as_it_is_opened_is_not_copied() {
    // A user who may rename entries where a database of theirs lies puts a
    // symbolic link in its place (or in place of a directory above it)
    // once root's backup has listed it: SQLite followed it, and the
    // database it pointed to was stored as the user's.
    for above in [false, true] {
        let env = Env::new();
        let src = env.path("src");
        let app = src.join("app");
        fs::create_dir_all(&app).unwrap();
        let db = app.join("x.db");
        create_db(&db, "delete", 10);
        let secret = env.path("secret");
        fs::create_dir(&secret).unwrap();
        create_db(&secret.join("x.db"), "delete", 777);
        let backup = backup_stalled_at_open(&env, &["--sqlite-aware", src.to_str().unwrap()]);
        if above {
            fs::rename(&app, src.join("app.old")).unwrap();
            std::os::unix::fs::symlink(&secret, &app).unwrap();
        } else {
            fs::rename(&db, app.join("x.db.old")).unwrap();
            std::os::unix::fs::symlink(secret.join("x.db"), &db).unwrap();
        }
        let out = backup.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("another file stood at its name as it was opened"),
            "{err}"
        );
        let target = env.path("target");
        env.restore("latest", &target);
        let back = restored(&target, &db);
        if fs::symlink_metadata(&back).is_ok_and(|m| m.is_file()) {
            assert_eq!(check_db(&back, "events").1, 10, "{err}");
        }
    }
}

#[test]
fn a_database_saved_by_renaming_a_new_file_over_it_is_captured_as_saved() {
    // Applications that save by writing a new file and renaming it over
    // the old one replace the database between the listing and the
    // capture: the file now at its name, in the same directory, is
    // captured. Named with --sqlite, the backup failed on it.
    for named in [true, false] {
        let env = Env::new();
        let src = env.path("src");
        fs::create_dir(&src).unwrap();
        let db = src.join("x.db");
        create_db(&db, "delete", 10);
        let new = env.path("x.db.new");
        create_db(&new, "delete", 25);
        let what = if named { "--sqlite" } else { "--sqlite-aware" };
        let source = if named { &db } else { &src };
        let backup = backup_stalled_at_open(&env, &["--json", what, source.to_str().unwrap()]);
        fs::rename(&new, &db).unwrap();
        let out = backup.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "named {named}: {err}");
        assert!(!err.contains("another file stood"), "named {named}: {err}");
        let target = env.path("target");
        env.restore("latest", &target);
        let back = restored(&target, &db);
        assert_eq!(check_db(&back, "events").1, 25, "named {named}: {err}");
        let r = last_json(&out);
        assert_eq!(r["databases"][0]["tables"]["events"], 25, "{r}");
    }
}
