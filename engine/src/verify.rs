//! Restore testing: restore a snapshot into a scratch directory, check every
//! byte against the stored hashes, and run each captured database's own
//! checks against what was recorded at capture. The time taken is the
//! measured recovery time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::capture::sqlite;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::restorer::{NoRestoreProgress, RestoreOptions, restore};
use crate::snapshot::Snapshot;

/// Expected (recorded at capture) and actual (in the restored copy) rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCount {
    /// Rows recorded at capture; `None` for a table the capture did not have.
    pub expected: Option<u64>,
    /// Rows in the restored copy; `None` for a table it lacks.
    pub actual: Option<u64>,
}

/// The checks of one captured database.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseReport {
    /// Its path in the snapshot.
    pub path: String,
    /// `ok`, or what `PRAGMA integrity_check` (or opening it) reported.
    pub integrity: String,
    /// Rows per table, recorded and found.
    pub tables: BTreeMap<String, TableCount>,
    /// Integrity passed and every count matches.
    pub ok: bool,
}

/// The outcome of verifying one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The snapshot's ID.
    pub snapshot: String,
    /// Files restored and read back.
    pub files: u64,
    /// Content bytes restored.
    pub bytes: u64,
    /// One entry per captured database.
    pub databases: Vec<DatabaseReport>,
    /// Restore problems (unreadable or mismatching data), one line each.
    pub errors: Vec<String>,
    /// Everything passed.
    pub ok: bool,
    /// Wall time of restore plus checks (the measured recovery time).
    pub seconds: f64,
}

/// Restores `snap` into a fresh directory under `scratch` (removed
/// afterwards), verifying every file's bytes, then checks its databases.
pub fn verify_restore(
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    scratch: &Path,
) -> Result<VerifyReport> {
    let start = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("cairn-verify-")
        .tempdir_in(scratch)
        .map_err(|e| Error::io("create scratch directory in", scratch, e))?;
    let opts = RestoreOptions {
        target: dir.path().to_path_buf(),
        verify: true,
        // Numeric IDs: the scratch copy needs no name lookups.
        numeric_ids: true,
        ..RestoreOptions::default()
    };
    let r = restore(repo, snap, &opts, &NoRestoreProgress)?;
    let mut errors = r.warnings.clone();
    if r.errors > 0 && errors.is_empty() {
        errors.push(format!("{} entries could not be restored", r.errors));
    }
    let mut databases = Vec::new();
    for db in &snap.databases {
        if db.kind != "sqlite" {
            continue; // Other kinds are verified by restoring into a server.
        }
        let file = dir.path().join(db.path.trim_start_matches('/'));
        databases.push(check_sqlite(&db.path, &file, &db.tables));
    }
    let ok = errors.is_empty() && databases.iter().all(|d| d.ok);
    Ok(VerifyReport {
        snapshot: id.to_hex(),
        files: r.files,
        bytes: r.bytes,
        databases,
        errors,
        ok,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn check_sqlite(path: &str, file: &Path, recorded: &BTreeMap<String, u64>) -> DatabaseReport {
    let (integrity, actual) = if !file.exists() {
        ("missing from the restore".to_string(), BTreeMap::new())
    } else {
        match sqlite::inspect(file) {
            Ok((p, t)) if p.is_empty() => ("ok".to_string(), t),
            Ok((p, t)) => (p.join("; "), t),
            Err(e) => (e.to_string(), BTreeMap::new()),
        }
    };
    let mut tables = BTreeMap::new();
    for name in recorded.keys().chain(actual.keys()) {
        tables.insert(
            name.clone(),
            TableCount {
                expected: recorded.get(name).copied(),
                actual: actual.get(name).copied(),
            },
        );
    }
    let ok = integrity == "ok" && tables.values().all(|c| c.expected == c.actual);
    DatabaseReport {
        path: path.to_string(),
        integrity,
        tables,
        ok,
    }
}
