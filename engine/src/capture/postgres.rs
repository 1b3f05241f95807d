//! PostgreSQL: a `pg_dump` in plain format (text that deduplicates well
//! between captures) stored as one file through the command-stream path of
//! the archiver, and loaded back with `psql`, stopping at the first error.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::archiver::{BackupOptions, BackupProgress, BackupResult, StdinSource, backup};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::restorer::{NoRestoreProgress, RestoreOptions, restore};
use crate::snapshot::{DatabaseCapture, Snapshot};

/// The dump format recorded in the snapshot.
pub const FORMAT: &str = "plain";

fn run_psql(args: &[&str]) -> Result<String> {
    let out = Command::new("psql")
        .args(["-X", "--no-password", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::CommandFailed(format!("cannot run psql: {e}")))?;
    if !out.status.success() {
        return Err(Error::CommandFailed(format!(
            "psql exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The database name and server version behind `conninfo`.
pub fn server_info(conninfo: &str) -> Result<(String, String)> {
    let out = run_psql(&[
        "-At",
        "-d",
        conninfo,
        "-c",
        "SELECT current_database() || '|' || current_setting('server_version')",
    ])?;
    let (db, version) = out
        .split_once('|')
        .ok_or_else(|| Error::CommandFailed(format!("unexpected answer from psql: {out:?}")))?;
    Ok((db.to_string(), version.to_string()))
}

/// Backs up the database behind `conninfo` with `pg_dump`; the snapshot
/// (one file `/<database>.sql`) is written only if pg_dump exits 0.
/// `opts` supplies tags, host and time; its paths must be empty.
pub fn backup_postgres(
    repo: &Repository,
    conninfo: &str,
    opts: &BackupOptions,
    progress: &dyn BackupProgress,
) -> Result<BackupResult> {
    let (database, version) = server_info(conninfo)?;
    let filename = format!("{database}.sql");
    let mut o = opts.clone();
    o.stdin = Some(StdinSource {
        filename: filename.clone(),
        command: Some(
            [
                "pg_dump",
                "--no-password",
                "--format=plain",
                "--dbname",
                conninfo,
            ]
            .map(String::from)
            .to_vec(),
        ),
        allow_empty: false,
    });
    o.databases.push(DatabaseCapture {
        kind: "postgres".into(),
        path: format!("/{filename}"),
        database: Some(database),
        server_version: Some(version),
        format: Some(FORMAT.into()),
        ..DatabaseCapture::default()
    });
    backup(repo, &o, progress)
}

/// The database name a keyword/value `conninfo` names (`dbname=...`).
fn dbname(conninfo: &str) -> Option<&str> {
    conninfo
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("dbname="))
}

/// Loads the PostgreSQL dump in `snap` into the database behind `conninfo`
/// with `psql -v ON_ERROR_STOP=1`. With `create`, the database (named by
/// `dbname=` in `conninfo`) is created first through the `postgres`
/// maintenance database. Returns the database name loaded into.
pub fn restore_db(
    repo: &Repository,
    snap: &Snapshot,
    conninfo: &str,
    create: bool,
    scratch: &Path,
) -> Result<String> {
    let db = snap
        .databases
        .iter()
        .find(|d| d.kind == "postgres")
        .ok_or_else(|| Error::InvalidInput("this snapshot holds no PostgreSQL dump".into()))?;
    let dir = tempfile::Builder::new()
        .prefix("cairn-restore-db-")
        .tempdir_in(scratch)
        .map_err(|e| Error::io("create scratch directory in", scratch, e))?;
    let opts = RestoreOptions {
        target: dir.path().to_path_buf(),
        subpath: Some(db.path.clone()),
        verify: true,
        numeric_ids: true,
        ..RestoreOptions::default()
    };
    let r = restore(repo, snap, &opts, &NoRestoreProgress)?;
    if r.errors > 0 {
        return Err(Error::corrupt("dump", r.warnings.join("; ")));
    }
    let file = dir.path().join(db.path.trim_start_matches('/'));
    if create {
        let name = dbname(conninfo).ok_or_else(|| {
            Error::InvalidInput("--create needs a keyword/value CONNINFO with dbname=NAME".into())
        })?;
        // A later keyword overrides an earlier one in libpq's conninfo.
        let maintenance = format!("{conninfo} dbname=postgres");
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        run_psql(&[
            "-q",
            "-d",
            &maintenance,
            "-c",
            &format!("CREATE DATABASE {quoted}"),
        ])?;
    }
    let file = file.to_string_lossy().into_owned();
    run_psql(&["-q", "-d", conninfo, "-f", &file])?;
    Ok(dbname(conninfo).unwrap_or_default().to_string())
}
