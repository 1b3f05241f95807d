//! PostgreSQL capture and restore against a real, private server: a cluster
//! made with initdb in a scratch directory, listening only on a private
//! socket directory and port, stopped at the end even if the test fails.
//! Needs Debian's postgresql package (tests/run-all.sh installs it).

mod common;

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

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
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

    let out = env.ok(&[
        "restore-db",
        r["snapshot_id"].as_str().unwrap(),
        "--postgres",
        &c.conninfo("restored"),
        "--create",
    ]);
    assert!(out.contains("restored"), "{out}");
    assert_eq!(contents(&c, "restored"), before);
    assert_ne!(contents(&c, "bench"), before, "pgbench -t changed nothing");

    // Loading into a database that already has the tables stops at the
    // first error instead of half-applying the dump.
    let out = env.run(&[
        "restore-db",
        "latest",
        "--postgres",
        &c.conninfo("restored"),
    ]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_failing_pg_dump_leaves_no_snapshot() {
    let c = Cluster::start();
    let env = Env::new();
    let out = env.run(&["backup", "--postgres", &c.conninfo("no_such_database")]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_database"), "{err}");
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
}
