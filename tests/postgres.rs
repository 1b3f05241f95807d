//! PostgreSQL capture and restore against a real, private server: a cluster
//! made with initdb in a scratch directory, listening only on a private
//! socket directory and port, stopped at the end even if the test fails.
//! Needs Debian's postgresql package (tests/run-all.sh installs it).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

use common::*;

/// The newest installed `/usr/lib/postgresql/<version>/bin`.
fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run tests/run-all.sh (apt-get install postgresql)")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("no /usr/lib/postgresql/*/bin/initdb")
}

/// A private cluster; stopped when dropped.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    /// `program args` as the cluster's owner (`postgres` when we are root,
    /// because the server refuses to run as root).
    fn as_owner(&self, program: &str, args: &[&str]) -> Command {
        let prog = self.bin.join(program);
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(prog);
            c
        } else {
            Command::new(prog)
        };
        c.args(args);
        c
    }

    fn start() -> Cluster {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        // A port per cluster, away from the default 5432.
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let port =
            20000 + (std::process::id() % 20000) as u16 + NEXT.fetch_add(1, Ordering::Relaxed);
        let c = Cluster { bin, dir, port };
        let data = c.dir.path().join("data");
        let d = data.to_str().unwrap();
        run(c.as_owner(
            "initdb",
            &["-D", d, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        ));
        let opts = format!(
            "-k {} -p {} -c listen_addresses=''",
            c.dir.path().display(),
            c.port
        );
        let log = c.dir.path().join("log");
        run(c.as_owner(
            "pg_ctl",
            &[
                "-D",
                d,
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        ));
        c
    }

    fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.dir.path().display(),
            self.port
        )
    }

    /// Runs `sql` in `db`, in UTF-8 whatever the database's encoding (as
    /// Rust's strings are); its output.
    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .env("PGCLIENTENCODING", "UTF8")
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.conninfo(db),
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn pgbench(&self, args: &[&str]) {
        let mut c = Command::new(self.bin.join("pgbench"));
        c.args([
            "-h",
            self.dir.path().to_str().unwrap(),
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(args);
        run(c);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .as_owner(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            )
            .output();
    }
}

fn run(mut c: Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What must be identical between the source and the restored database.
const CONTENTS: [&str; 4] = [
    "SELECT count(*), sum(abalance), sum(bid) FROM pgbench_accounts",
    "SELECT count(*), sum(bbalance) FROM pgbench_branches",
    "SELECT count(*), sum(tbalance) FROM pgbench_tellers",
    "SELECT count(*), coalesce(sum(delta), 0) FROM pgbench_history",
];

fn contents(c: &Cluster, db: &str) -> Vec<String> {
    CONTENTS.iter().map(|q| c.psql(db, q)).collect()
}

#[test]
fn pgbench_database_is_captured_and_restored_with_identical_contents() {
    let c = Cluster::start();
    let env = Env::new();
    c.psql("postgres", "CREATE DATABASE bench");
    c.pgbench(&["-i", "-s", "5", "-q", "bench"]);
    c.pgbench(&["-T", "5", "-c", "2", "bench"]);
    let before = contents(&c, "bench");

    let r = env.json(&["backup", "--postgres", &c.conninfo("bench")]);
    let db = &r["databases"][0];
    assert_eq!(db["kind"], "postgres");
    assert_eq!(db["database"], "bench");
    assert_eq!(db["format"], "plain");
    assert_eq!(db["path"], "/bench.sql");
    let version = c.psql("postgres", "SHOW server_version");
    assert_eq!(db["server_version"], version.as_str());

    // A second capture after a little more work dedups against the first.
    c.pgbench(&["-t", "50", "bench"]);
    let r2 = env.json(&["backup", "--postgres", &c.conninfo("bench")]);
    let dump_size = r2["total_bytes"].as_u64().unwrap();
    let added = r2["data_added"].as_u64().unwrap();
    println!("second capture: dump {dump_size} bytes, {added} bytes added to the repository");
    assert!(added < dump_size / 2, "plain dumps should dedup: {r2}");

    // A site's own object in template1 (as extensions put there): a
    // database made from it would already hold a table of the dump's name,
    // and the load stop there. pg_dump's manual: restore into template0's.
    c.psql("template1", "CREATE TABLE pgbench_branches(site_local int)");
    // A name with a space, quoted as libpq reads it.
    let restored = "'restored copy'";
    let out = env.ok(&[
        "restore-db",
        r["snapshot_id"].as_str().unwrap(),
        "--postgres",
        &c.conninfo(restored),
        "--create",
    ]);
    assert!(out.contains("restored copy"), "{out}");
    assert_eq!(contents(&c, restored), before);
    assert_ne!(contents(&c, "bench"), before, "pgbench -t changed nothing");

    // Loading into a database that already has the tables stops at the
    // first error instead of half-applying the dump.
    let err = env.fails(
        &["restore-db", "latest", "--postgres", &c.conninfo(restored)],
        1,
    );
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn a_failing_pg_dump_leaves_no_snapshot() {
    let c = Cluster::start();
    let env = Env::new();
    let err = env.fails(
        &["backup", "--postgres", &c.conninfo("no_such_database")],
        1,
    );
    assert!(err.contains("no_such_database"), "{err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

#[test]
fn a_table_locked_by_another_session_fails_the_capture_after_the_lock_timeout() {
    // pg_dump waited for an exclusive lock (a migration) for as long as it
    // was held, and every scheduled run after it with it.
    let c = Cluster::start();
    c.psql("postgres", "CREATE DATABASE app");
    c.psql("app", "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let mut locker = Command::new(c.bin.join("psql"))
        .args(["-X", "-d", &c.conninfo("app"), "-c"])
        .arg("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);")
        .stdout(std::process::Stdio::null())
        // Its session is ended below ("connection to server was lost").
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.psql(
        "app",
        "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 't'::regclass",
    ) != "1"
    {
        assert!(std::time::Instant::now() < deadline, "the lock was never taken");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let env = Env::new();
    let started = std::time::Instant::now();
    let err = env.fails(
        &[
            "backup",
            "--postgres",
            &c.conninfo("app"),
            "--postgres-lock-timeout",
            "2s",
        ],
        1,
    );
    let took = started.elapsed();
    // Its session ends the lock (ending psql alone leaves it asleep).
    c.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()",
    );
    let _ = locker.wait();
    // pg_dump's own words for it.
    assert!(err.contains("LOCK TABLE public.t"), "{err}");
    assert!(took < std::time::Duration::from_secs(60), "{took:?}: {err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
    // With the lock gone, the same capture goes through.
    env.ok(&["backup", "--postgres", &c.conninfo("app")]);
}

#[test]
fn a_password_in_the_conninfo_shows_in_no_message_or_argument() {
    let c = Cluster::start();
    let env = Env::new();
    // Trust authentication ignores it: the capture works with the rest.
    let conninfo = format!("{} password='Sup3r Secret'", c.conninfo("postgres"));
    let out = env
        .cmd()
        .args(["--json", "backup", "--postgres", &conninfo])
        .output()
        .unwrap();
    // cairn's own arguments show it in `ps`: said, with the way around.
    let err = exits(&out, 0);
    assert!(
        err.contains("read in `ps`") && err.contains("PGPASSWORD"),
        "{err}"
    );
    let r = last_json(&out);
    assert_eq!(r["databases"][0]["database"], "postgres", "{r}");
    let out = env
        .cmd()
        .env("PGPASSWORD", "Sup3r Secret")
        .args(["backup", "--postgres", &c.conninfo("postgres")])
        .output()
        .unwrap();
    let err = exits(&out, 0);
    assert!(!err.contains("PGPASSWORD"), "{err}");
    // A pg_dump that fails (a stand-in that prints its arguments and the
    // password it was given): the error named the whole command line,
    // password and all, and hooks and logs passed it on.
    let bin = env.path("bin");
    fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("pg_dump");
    fs::write(
        &fake,
        "#!/bin/sh\necho \"$@\" >&2\n[ \"$PGPASSWORD\" = 'Sup3r Secret' ] && exit 3\nexit 4\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = env
        .cmd()
        .env("PATH", path)
        .args(["backup", "--postgres", &conninfo])
        .output()
        .unwrap();
    let err = exits(&out, 1);
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(!err.contains("Sup3r"), "{err}");
}

/// Scratch databases `verify-restore` left behind (there must be none).
fn scratch_dbs(c: &Cluster) -> String {
    c.psql(
        "postgres",
        "SELECT string_agg(datname, ' ') FROM pg_database WHERE datname LIKE 'cairn_verify_%'",
    )
}

#[test]
fn verify_restore_loads_a_capture_into_a_scratch_database_and_compares_row_counts() {
    let c = Cluster::start();
    let env = Env::new();
    c.psql("postgres", "CREATE DATABASE app");
    // An awkward name, an inheritance child (its rows are not the parent's
    // in the dump), an empty table and a multi-line value.
    c.psql(
        "app",
        "CREATE TABLE \"Order Lines\" (id int, note text);
         INSERT INTO \"Order Lines\" SELECT g, 'line ' || g || E'\\nsecond line' FROM generate_series(1, 1234) g;
         CREATE TABLE events (id int);
         INSERT INTO events SELECT generate_series(1, 300);
         CREATE TABLE old_events () INHERITS (events);
         INSERT INTO old_events SELECT generate_series(1, 70);
         CREATE TABLE empty (x int);
         COMMENT ON TABLE events IS E'Bulk load with:\nCOPY public.events FROM stdin;\nthen check';
         CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN /* loaded by hand:
COPY public.empty FROM stdin;
         */ RETURN 1; END $$;",
    );
    // Lines inside the comment and the function's body only look like
    // COPY headers: they start no section (counted, they made the recorded
    // numbers wrong, and verify-restore failed a good capture).
    let r = env.json(&["backup", "--postgres", &c.conninfo("app")]);
    let recorded = &r["databases"][0]["tables"];
    assert_eq!(recorded["public.\"Order Lines\""], 1234, "{r}");
    assert_eq!(recorded["public.events"], 300, "{r}");
    assert_eq!(recorded["public.old_events"], 70, "{r}");
    assert_eq!(recorded["public.empty"], 0, "{r}");
    assert_eq!(recorded.as_object().unwrap().len(), 4, "{r}");
    let id = r["snapshot_id"].as_str().unwrap();

    let v = env.json(&["verify-restore", id, "--postgres", &c.conninfo("postgres")]);
    assert_eq!(v["ok"], true, "{v}");
    let d = &v["databases"][0];
    assert_eq!(d["kind"], "postgres");
    assert_eq!(d["path"], "/app.sql");
    assert_eq!(d["integrity"], "ok");
    assert_eq!(d["tables"]["public.events"]["expected"], 300, "{v}");
    assert_eq!(d["tables"]["public.events"]["actual"], 300, "{v}");
    assert_eq!(d["tables"]["public.\"Order Lines\""]["actual"], 1234, "{v}");
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(scratch_dbs(&c), "", "scratch database not dropped");

    // Without a server to load into it cannot be checked: that is a failure
    // (exit 1) that says what to give, never a silent pass.
    let out = env.run(&["verify-restore", id]);
    exits(&out, 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILED") && text.contains("give --postgres CONNINFO"),
        "{text}"
    );

    // A server that does not answer says nothing of the snapshots: the
    // run ends at the first test, which names the server (every snapshot
    // was failed as if its capture did not load).
    let again = env.json(&["backup", "--postgres", &c.conninfo("app")]);
    let dead = c
        .conninfo("postgres")
        .replace(&format!("port={}", c.port), "port=1");
    let second = again["snapshot_id"].as_str().unwrap();
    let out = env.run(&["--json", "verify-restore", id, second, "--postgres", &dead]);
    let err = exits(&out, 1);
    let reports = String::from_utf8_lossy(&out.stdout);
    assert_eq!(reports.lines().count(), 1, "{reports}");
    assert!(reports.contains("not the snapshot's"), "{reports}");
    assert!(err.contains("no scratch database could be made"), "{err}");
}

/// A LATIN1 database with a name outside ASCII: the dump's COPY header was
/// not UTF-8, so its section was read as SQL and no table after it was
/// counted (verify-restore then passed, comparing nothing).
#[test]
fn a_latin1_database_is_counted_past_its_names_outside_utf_8() {
    let c = Cluster::start();
    let env = Env::new();
    c.psql(
        "postgres",
        "CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    c.psql(
        "latin",
        "CREATE TABLE \"café\" (a text); INSERT INTO \"café\" VALUES ('crème'), ('brûlée');
         CREATE TABLE d_after (b int); INSERT INTO d_after SELECT generate_series(1, 40);",
    );
    let r = env.json(&["backup", "--postgres", &c.conninfo("latin")]);
    let recorded = &r["databases"][0]["tables"];
    // The dump is in the database's encoding: the name's stray byte is
    // replaced, and the table after it counted all the same.
    assert_eq!(recorded["public.\"caf\u{fffd}\""], 2, "{r}");
    assert_eq!(recorded["public.d_after"], 40, "{r}");
    let id = r["snapshot_id"].as_str().unwrap();
    // Loaded back into a LATIN1 database, the names and values are as
    // they were.
    c.psql(
        "postgres",
        "CREATE DATABASE latin_copy ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    env.ok(&["restore-db", id, "--postgres", &c.conninfo("latin_copy")]);
    let values = c.psql(
        "latin_copy",
        "SELECT string_agg(a, ',' ORDER BY a) FROM \"café\"",
    );
    assert_eq!(values, "brûlée,crème");
    // Into a database that is not there, without --create: the way out is
    // said (psql's words alone left it unsaid).
    let out = env.run(&["restore-db", id, "--postgres", &c.conninfo("nowhere")]);
    let err = exits(&out, 1);
    assert!(err.contains("give --create"), "{err}");
}

/// Backs up database `slow`, whose dump takes 20 s to load (each row's
/// CHECK sleeps once the function is replaced), the capture no time.
fn back_up_slow_database(c: &Cluster, env: &Env) {
    c.psql("postgres", "CREATE DATABASE slow");
    c.psql(
        "slow",
        "CREATE FUNCTION pause(int) RETURNS bool LANGUAGE sql AS 'SELECT true';
         CREATE TABLE t (n int CHECK (pause(n)));
         INSERT INTO t SELECT generate_series(1, 200);
         CREATE OR REPLACE FUNCTION pause(int) RETURNS bool LANGUAGE sql
           AS 'SELECT pg_sleep(0.1) IS NOT NULL';",
    );
    env.ok(&["backup", "--postgres", &c.conninfo("slow")]);
}

/// Sends SIGTERM to `child` 1.5 s into its load; its standard error, once
/// it ended with exit 130.
fn stop_mid_load(child: std::process::Child) -> String {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    exits(&out, 130)
}

#[test]
fn a_stopped_verify_restore_drops_its_scratch_database_and_directory() {
    // SIGTERM used to kill it outright: the scratch database (a full copy
    // of the data), the restored dump and psql itself stayed behind.
    let c = Cluster::start();
    let env = Env::new();
    back_up_slow_database(&c, &env);
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let child = env
        .cmd()
        .args(["verify-restore", "--scratch", scratch.to_str().unwrap()])
        .args(["--postgres", &c.conninfo("postgres")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while scratch_dbs(&c).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no scratch database");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let err = stop_mid_load(child);
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(scratch_dbs(&c), "", "scratch database left");
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch files left"
    );
}

#[test]
fn a_stopped_restore_db_create_drops_the_database_it_made() {
    // psql stopped mid-load leaves its server session running the
    // statement it sent: the plain DROP gave up on it after 5 s, and the
    // half-loaded database stayed, without a word (and the same command
    // run again failed: "already exists").
    let c = Cluster::start();
    let env = Env::new();
    back_up_slow_database(&c, &env);
    let child = env
        .cmd()
        .args(["restore-db", "latest", "--create"])
        .args(["--postgres", &c.conninfo("copy")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let copies = || {
        c.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy'",
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while copies() == "0" {
        assert!(std::time::Instant::now() < deadline, "no database made");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let err = stop_mid_load(child);
    assert!(!err.contains("left half loaded"), "{err}");
    assert_eq!(copies(), "0", "the database made for the load was left");
}

#[test]
fn verify_restore_fails_with_psql_error_when_a_capture_does_not_load() {
    let c = Cluster::start();
    let env = Env::new();
    c.psql("postgres", "CREATE DATABASE shop");
    // A classic dump that does not restore: a CHECK constraint calling a
    // function that reads another table. pg_dump cannot see that dependency
    // and loads a_orders before z_customers, so the check fails on load.
    c.psql(
        "shop",
        "CREATE TABLE z_customers (id int PRIMARY KEY);
         INSERT INTO z_customers VALUES (1), (2);
         CREATE FUNCTION public.customer_exists(int) RETURNS bool LANGUAGE sql
             AS 'SELECT EXISTS (SELECT 1 FROM public.z_customers WHERE id = $1)';
         CREATE TABLE a_orders (id int, customer int CHECK (public.customer_exists(customer)), \
             card text);
         INSERT INTO a_orders VALUES (10, 1, 'CARD-4111'), (11, 2, 'CARD-5500');",
    );
    let r = env.json(&["backup", "--postgres", &c.conninfo("shop")]);
    let id = r["snapshot_id"].as_str().unwrap();

    let v = env.json_any(&["verify-restore", id, "--postgres", &c.conninfo("postgres")]);
    assert_eq!(v["ok"], false, "{v}");
    let why = v["databases"][0]["integrity"].as_str().unwrap();
    assert!(
        why.contains("a_orders") && why.contains("violates check constraint"),
        "{why}"
    );
    assert!(
        why.contains("cairn_verify_"),
        "names the scratch database: {why}"
    );
    let out = env.run(&["verify-restore", id, "--postgres", &c.conninfo("postgres")]);
    exits(&out, 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILED") && text.contains("a_orders"),
        "{text}"
    );
    assert_eq!(
        scratch_dbs(&c),
        "",
        "scratch database not dropped after a failure"
    );
    // psql's message quotes the failing row, which the terminal may show
    // but the outcome `serve`'s health endpoint reads must not: it
    // promises no contents.
    assert!(text.contains("CARD-4111"), "{text}");
    let outcome = walkdir::WalkDir::new(&env.cache)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.ends_with("last-restore-test.json"))
        .expect("the restore test's outcome is remembered");
    let remembered = fs::read_to_string(&outcome).unwrap();
    assert!(
        !remembered.contains("CARD-") && remembered.contains("did not load, stopping at its line"),
        "{remembered}"
    );
    // A CONNINFO a scratch database cannot be named in (a bare database
    // name, a URI) is a usage error before any test runs, not a failed
    // restore test that turns the health endpoint red.
    for bad in ["postgres", "postgresql:///postgres"] {
        let err = env.fails(&["verify-restore", id, "--postgres", bad], 2);
        assert!(err.contains("keyword/value CONNINFO"), "{err}");
    }
    assert_eq!(fs::read_to_string(&outcome).unwrap(), remembered);
}

#[test]
fn a_forged_dump_runs_none_of_its_backslash_commands_when_loaded() {
    // Whoever can write snapshots (an append-only key too) can store a
    // "dump" of their own: psql ran its `\!` shell commands on the machine
    // that loaded it, even after the dump's own `\restrict`, which the
    // dump itself can lift. Here pg_dump is a script printing such a dump.
    let c = Cluster::start();
    let env = Env::new();
    c.psql("postgres", "CREATE DATABASE shop");
    let marker = env.path("ran");
    let forged = env.path("forged.sql");
    fs::write(
        &forged,
        format!(
            "--\n-- PostgreSQL database dump\n--\n\n\\restrict K1\n\n\
             CREATE TABLE t (a int);\nSELECT 1 \\unrestrict K1\n\\! touch {m}\n",
            m = marker.display()
        ),
    )
    .unwrap();
    let bin = env.path("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::write(
        bin.join("pg_dump"),
        format!("#!/bin/sh\ncat {}\n", forged.display()),
    )
    .unwrap();
    fs::set_permissions(bin.join("pg_dump"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = env
        .cmd()
        .env("PATH", &path)
        .args(["backup", "--postgres", &c.conninfo("shop")])
        .output()
        .unwrap();
    exits(&out, 0);

    let err = env.fails(
        &[
            "restore-db",
            "latest",
            "--postgres",
            &c.conninfo("copy"),
            "--create",
        ],
        1,
    );
    assert!(err.contains("\\unrestrict: wrong key"), "{err}");
    assert!(!marker.exists(), "the dump ran a shell command");
    // Made for the load, the database is dropped again: the same command
    // can be run again (it failed with "already exists").
    assert!(err.contains("dropped again"), "{err}");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy'"
        ),
        "0"
    );

    let v = env.json_any(&[
        "verify-restore",
        "latest",
        "--postgres",
        &c.conninfo("postgres"),
    ]);
    assert_eq!(v["ok"], false, "{v}");
    assert!(!marker.exists(), "the dump ran a shell command");
    assert_eq!(scratch_dbs(&c), "");
}

#[test]
fn a_dump_node_that_is_a_symlink_is_not_followed_by_the_load() {
    // The dump's name comes from the snapshot's capture record: a forged
    // record naming a symlink fed psql the file the link points to, a
    // host file the snapshot's writer chose (fragments of it in psql's
    // errors, or statements of a file cairn never backed up).
    let c = Cluster::start();
    let env = Env::new();
    let host_file = env.path("host.sql");
    fs::write(&host_file, "CREATE TABLE leaked (secret text);\n").unwrap();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    std::os::unix::fs::symlink(&host_file, src.join("shop.sql")).unwrap();
    let id = env.json(&["backup", src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let repo = open_engine(&env);
    let mut forged = repo
        .load_snapshot(&cairn_engine::Id::from_hex(&id).unwrap())
        .unwrap();
    forged.databases = vec![cairn_engine::snapshot::DatabaseCapture {
        kind: "postgres".into(),
        path: src.join("shop.sql").display().to_string(),
        database: Some("shop".into()),
        server_version: None,
        format: Some("plain".into()),
        tables: Default::default(),
    }];
    let forged = repo.save_snapshot(&forged).unwrap().to_hex();

    let err = env.fails(
        &[
            "restore-db",
            &forged,
            "--postgres",
            &c.conninfo("copy"),
            "--create",
        ],
        1,
    );
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy'"
        ),
        "0",
        "the database made for the load is dropped again"
    );
}

#[test]
fn restore_db_at_picks_the_newest_capture_of_that_database() {
    let c = Cluster::start();
    let env = Env::new();
    for db in ["app", "shop"] {
        c.psql("postgres", &format!("CREATE DATABASE {db}"));
        c.psql(db, "CREATE TABLE v (n int)");
    }
    let files = env.path("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("f"), "x").unwrap();
    // app, shop and a file backup interleaved; app's value is its hour.
    let capture = |db: &str, hour: u32| {
        if db == "app" {
            c.psql(
                "app",
                &format!("DELETE FROM v; INSERT INTO v VALUES ({hour})"),
            );
        }
        let time = format!("2026-03-01 {hour:02}:00:00");
        if db == "files" {
            env.ok(&["backup", files.to_str().unwrap(), "--time", &time]);
        } else {
            env.ok(&["backup", "--postgres", &c.conninfo(db), "--time", &time]);
        }
    };
    capture("app", 9);
    capture("shop", 10);
    capture("app", 11);
    capture("shop", 12);
    capture("files", 13);

    let out = env.run(&[
        "restore-db",
        "--at",
        "2026-03-01 13:30",
        "--database",
        "app",
        "--postgres",
        &c.conninfo("app_copy"),
        "--create",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("newest of PostgreSQL database app at or before"),
        "{err}"
    );
    assert_eq!(c.psql("app_copy", "SELECT n FROM v"), "11");
    // Into an existing database named by a URI: the summary names it (the
    // URI's name is the server's to read).
    c.psql("postgres", "CREATE DATABASE app_uri");
    let uri = format!(
        "postgresql:///app_uri?host={}&port={}&user=postgres",
        c.dir.path().display(),
        c.port
    );
    let r = env.json(&[
        "restore-db",
        "latest",
        "--database",
        "app",
        "--postgres",
        &uri,
    ]);
    assert_eq!(r["database"], "app_uri", "{r}");
    assert_eq!(c.psql("app_uri", "SELECT n FROM v"), "11");
    // Without --database, with captures of two databases: refused (exit
    // 2), naming both. It had loaded whichever was captured last (shop),
    // and said only which snapshot.
    let err = env.fails(
        &[
            "restore-db",
            "--at",
            "2026-03-01 13:30",
            "--postgres",
            &c.conninfo("shop_copy"),
            "--create",
        ],
        2,
    );
    assert!(
        err.contains("2 databases (/app.sql, /shop.sql)") && err.contains("--database"),
        "{err}"
    );
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop_copy'"
        ),
        "0"
    );
    // At a time when only app had been captured, there is no choice to
    // make: app is loaded. (Later captures of shop had it refused.)
    let r = env.json(&[
        "restore-db",
        "--at",
        "2026-03-01 09:30",
        "--postgres",
        &c.conninfo("app_at_9"),
        "--create",
    ]);
    assert_eq!(r["captured_database"], "app", "{r}");
    assert_eq!(c.psql("app_at_9", "SELECT n FROM v"), "9");
    // Named: the newest snapshot holding that capture (shop at 12), never
    // the file backup at 13, and the summary says which capture it loaded.
    let out = env.run(&[
        "restore-db",
        "--at",
        "2026-03-01 13:30",
        "--database",
        "shop",
        "--postgres",
        &c.conninfo("shop_copy"),
        "--create",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("12:00:00"));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("loaded database \"shop\" (/shop.sql) of snapshot"),
        "{said}"
    );
    assert_eq!(c.psql("shop_copy", "SELECT count(*) FROM v"), "0");
    // Before the first capture of app: a clear error.
    let err = env.fails(
        &[
            "restore-db",
            "--at",
            "2026-03-01 08:00",
            "--database",
            "app",
            "--postgres",
            &c.conninfo("nothing"),
        ],
        1,
    );
    assert!(
        err.contains("no snapshot of PostgreSQL database app"),
        "{err}"
    );
}

#[test]
fn database_names_with_separators_and_slashes_are_recorded_as_they_are() {
    // `a|b` was recorded as database `a` at /a.sql: restore-db --database a
    // loaded the other database's data, exit 0, and retention took both
    // for one source. `a/b` was a file b in a directory a.
    let c = Cluster::start();
    let env = Env::new();
    let mut recorded = Vec::new();
    for (db, table) in [("a", "real_a"), ("a|b", "from_ab"), ("a/b", "slashed")] {
        c.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        c.psql(&format!("'{db}'"), &format!("CREATE TABLE {table} (n int)"));
        let v = env.json(&["backup", "--postgres", &c.conninfo(&format!("'{db}'"))]);
        let d = &v["databases"][0];
        recorded.push((
            d["database"].as_str().unwrap().to_string(),
            d["path"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        recorded,
        [
            ("a".to_string(), "/a.sql".to_string()),
            ("a|b".into(), "/a|b.sql".into()),
            ("a/b".into(), "/a%2Fb.sql".into()),
        ]
    );
    for (db, copy, table) in [("a", "copy_a", "real_a"), ("a|b", "copy_ab", "from_ab")] {
        env.ok(&[
            "restore-db",
            "latest",
            "--database",
            db,
            "--postgres",
            &c.conninfo(copy),
            "--create",
        ]);
        assert_eq!(
            c.psql(
                copy,
                "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'"
            ),
            table
        );
    }
}

#[test]
fn a_dump_named_with_stdin_filename_keeps_another_servers_database_of_that_name_apart() {
    // Two servers' `app` were both /app.sql: one group, so retention for
    // one forgot the other's captures. --stdin-filename was ignored.
    let c = Cluster::start();
    let env = Env::new();
    c.psql("postgres", "CREATE DATABASE app");
    c.psql("app", "CREATE TABLE staging_only (n int)");
    let named = env.json(&[
        "backup",
        "--postgres",
        &c.conninfo("app"),
        "--stdin-filename",
        "/staging//app.sql",
    ]);
    // Recorded as stored, with its row counts.
    assert_eq!(named["databases"][0]["path"], "/staging/app.sql", "{named}");
    assert_eq!(
        named["databases"][0]["tables"]["public.staging_only"], 0,
        "{named}"
    );
    assert_eq!(named["databases"][0]["database"], "app", "{named}");
    env.json(&["backup", "--postgres", &c.conninfo("app")]);
    // Two sources: keeping the last of each keeps both.
    env.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(snapshot_ids(&env).len(), 2);
    env.ok(&[
        "restore-db",
        named["snapshot_id"].as_str().unwrap(),
        "--postgres",
        &c.conninfo("copy"),
        "--create",
    ]);
    assert_eq!(
        c.psql(
            "copy",
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'"
        ),
        "staging_only"
    );
    // `--database app` names both: refused (exit 2), asking for the path,
    // not the newest of either loaded.
    let err = env.fails(
        &[
            "restore-db",
            "latest",
            "--database",
            "app",
            "--postgres",
            &c.conninfo("copy2"),
            "--create",
        ],
        2,
    );
    assert!(
        err.contains("named app (/app.sql, /staging/app.sql)") && err.contains("--database PATH"),
        "{err}"
    );
    env.ok(&[
        "restore-db",
        "latest",
        "--database",
        "/staging/app.sql",
        "--postgres",
        &c.conninfo("copy2"),
        "--create",
    ]);
    assert_eq!(
        c.psql(
            "copy2",
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'"
        ),
        "staging_only"
    );
    // Given where it names nothing, it is refused, not ignored.
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let err = env.fails(
        &["backup", src.to_str().unwrap(), "--stdin-filename", "x.sql"],
        2,
    );
    assert!(err.contains("--stdin-filename names what"), "{err}");
}

/// docs/recovery.md, "A PostgreSQL table was dropped": load the last
/// capture into a scratch database, copy the table back, drop the scratch.
#[test]
fn runbook_dropped_postgresql_table() {
    let c = Cluster::start();
    let env = Env::new();
    c.psql("postgres", "CREATE DATABASE app");
    c.psql(
        "app",
        "CREATE TABLE customers (id int PRIMARY KEY, name text);
         INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 500) g;
         CREATE TABLE orders (id int, customer int);
         INSERT INTO orders SELECT g, g % 500 + 1 FROM generate_series(1, 2000) g;",
    );
    let before = c.psql("app", "SELECT count(*), sum(length(name)) FROM customers");
    env.ok(&["backup", "--postgres", &c.conninfo("app")]);
    // Work goes on after the backup; then the accident.
    c.psql("app", "INSERT INTO orders VALUES (9999, 1)");
    c.psql("app", "DROP TABLE customers");

    // 1. Load the capture into a scratch database next to the live one.
    env.ok(&[
        "restore-db",
        "latest",
        "--database",
        "app",
        "--postgres",
        &c.conninfo("app_recover"),
        "--create",
    ]);
    // 2. Copy the table back: schema and data of that table only.
    let dump = Command::new(c.bin.join("pg_dump"))
        .args([
            "--table=public.customers",
            "--dbname",
            &c.conninfo("app_recover"),
        ])
        .output()
        .unwrap();
    assert!(dump.status.success());
    let mut load = Command::new(c.bin.join("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &c.conninfo("app"),
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    load.stdin.take().unwrap().write_all(&dump.stdout).unwrap();
    assert!(load.wait().unwrap().success());
    // 3. Drop the scratch database.
    c.psql("postgres", "DROP DATABASE app_recover");

    assert_eq!(
        c.psql("app", "SELECT count(*), sum(length(name)) FROM customers"),
        before
    );
    // Work done after the backup in other tables is untouched.
    assert_eq!(c.psql("app", "SELECT count(*) FROM orders"), "2001");
}

#[test]
fn a_database_loads_on_a_new_server_once_its_roles_come_back_from_a_globals_capture() {
    // The disaster docs/databases.md walks through: the server is lost, a
    // new one has none of the roles the dump's objects belong to.
    let old = Cluster::start();
    let env = Env::new();
    old.psql("postgres", "CREATE ROLE app LOGIN");
    old.psql("postgres", "CREATE DATABASE app OWNER app");
    old.psql(
        "app",
        "CREATE TABLE t (n int); ALTER TABLE t OWNER TO app; INSERT INTO t VALUES (7), (8)",
    );
    env.ok(&["backup", "--postgres", &old.conninfo("app")]);
    let globals = format!("--dbname={}", old.conninfo("postgres"));
    env.ok(&[
        "backup",
        "--stdin-filename",
        "pg-globals.sql",
        "--stdin-from-command",
        "--",
        old.bin.join("pg_dumpall").to_str().unwrap(),
        "--globals-only",
        &globals,
    ]);
    drop(old);

    let new = Cluster::start();
    let load = [
        "restore-db",
        "latest",
        "--database",
        "app",
        "--postgres",
        &new.conninfo("app"),
        "--create",
    ];
    let err = env.fails(&load, 1);
    assert!(
        err.contains("role \"app\" does not exist") && err.contains("pg_dumpall --globals-only"),
        "{err}"
    );
    // As the docs say: the globals' dump into psql on the new server (its
    // own `postgres` role exists already; psql goes on past that error).
    let dumped = env.ok(&[
        "dump",
        "--path",
        "/pg-globals.sql",
        "latest",
        "/pg-globals.sql",
    ]);
    assert!(dumped.contains("CREATE ROLE app"), "{dumped}");
    let mut psql = Command::new(new.bin.join("psql"))
        .args(["-X", "-q", "-d", &new.conninfo("postgres")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    psql.stdin
        .take()
        .unwrap()
        .write_all(dumped.as_bytes())
        .unwrap();
    psql.wait().unwrap();
    env.ok(&load);
    assert_eq!(
        new.psql("app", "SELECT string_agg(n::text, ',' ORDER BY n) FROM t"),
        "7,8"
    );
    assert_eq!(
        new.psql(
            "app",
            "SELECT tableowner FROM pg_tables WHERE tablename = 't'"
        ),
        "app"
    );
}
