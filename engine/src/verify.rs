//! Restore testing: restore a snapshot into a scratch directory, check every
//! byte against the stored hashes, and run each captured database's own
//! checks against what was recorded at capture: SQLite's integrity check,
//! or loading a PostgreSQL dump into a scratch database; then rows per
//! table. The time taken is the measured recovery time.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::capture::{postgres, sqlite};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::restorer::{RestoreOptions, StopRequested, restore};
use crate::snapshot::{DatabaseCapture, Snapshot};

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
    /// `sqlite` or `postgres`.
    pub kind: String,
    /// Its path in the snapshot.
    pub path: String,
    /// `ok`, or the problem: for SQLite what `PRAGMA integrity_check` (or
    /// opening the copy) reported; for PostgreSQL why the dump could not be
    /// loaded into a scratch database (psql's error).
    pub integrity: String,
    /// Tables the check could not look at, each with SQLite's reason: they
    /// need a collation or function only the database's application
    /// defines ([`sqlite::Checked`]). Their rows are still compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_checked: Vec<String>,
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
    /// What the scratch restore could not set but which is no fault of the
    /// snapshot (a `trusted.*` attribute for a user other than root), and
    /// a scratch directory that could not be removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Everything passed.
    pub ok: bool,
    /// Wall time of restore plus checks (the measured recovery time).
    pub seconds: f64,
}

impl VerifyReport {
    /// The report of a test of `snapshot` that could not run to the end.
    pub fn failed(snapshot: &Id, error: String) -> VerifyReport {
        VerifyReport {
            snapshot: snapshot.to_hex(),
            files: 0,
            bytes: 0,
            databases: Vec::new(),
            errors: vec![error],
            warnings: Vec::new(),
            ok: false,
            seconds: 0.0,
        }
    }
}

/// The message a PostgreSQL capture gets when no server was given.
pub const NEEDS_SERVER: &str = "not checked: a PostgreSQL dump is verified by loading it into a \
     scratch database; give --postgres CONNINFO for a server to load it into";

/// Restores `snap` into a fresh directory under `scratch` (removed
/// afterwards), verifying every file's bytes, then checks its databases.
/// PostgreSQL dumps are loaded into a scratch database (always dropped
/// afterwards) on the server behind `postgres`; without one they fail with
/// [`NEEDS_SERVER`].
pub fn verify_restore(
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    scratch: &Path,
    postgres: Option<&str>,
) -> Result<VerifyReport> {
    let start = Instant::now();
    let dir = crate::scratch::dir(scratch, "cairn-verify-")
        .map_err(|e| Error::io("create scratch directory in", scratch, e))?;
    // Restored below the private (0700) scratch directory, whatever mode
    // the snapshot's root gives the restore's own target.
    let target = dir.path().join("restore");
    let opts = RestoreOptions {
        target: target.clone(),
        verify: true,
        // Numeric IDs: the scratch copy needs no name lookups.
        numeric_ids: true,
        scratch: true,
        ..RestoreOptions::default()
    };
    let r = restore(repo, snap, &opts, &StopRequested)?;
    // Named by their paths in the snapshot, not in the scratch restore
    // (gone by the time anyone reads them).
    let scratch_prefix = target.to_string_lossy().into_owned();
    let in_snapshot = |line: &String| line.replace(&scratch_prefix, "");
    let mut errors: Vec<String> = r.failures.iter().map(in_snapshot).collect();
    // What the restore only warned about (metadata this user may not set)
    // says nothing against the snapshot's data.
    let mut warnings: Vec<String> = r
        .warnings
        .iter()
        .filter(|w| !r.failures.contains(w))
        .map(in_snapshot)
        .collect();
    if r.errors > 0 && errors.is_empty() {
        errors.push(format!("{} entries could not be restored", r.errors));
    }
    // A pass says nothing of what the backup could not read: said, or a
    // test of a snapshot that lacks a database looked like a full one.
    if snap.partial {
        warnings.push(
            "the snapshot is partial: its backup could not read or capture some entries (it \
             named them, exit 3), so they are not in it, and a database it stored as a plain \
             file is restored but not checked"
                .into(),
        );
    }
    let mut databases = Vec::new();
    for db in &snap.databases {
        // A stop that came between two checks ends the next before it starts.
        if crate::child::stopping() {
            return Err(Error::Interrupted);
        }
        let (integrity, actual) = match restored_at(&target, &db.path) {
            Err(why) => (Verdict::of(why), BTreeMap::new()),
            Ok(file) => match db.kind.as_str() {
                "sqlite" => check_sqlite(&file),
                "postgres" => {
                    let (v, t) = check_postgres(&file, &db.tables, postgres)?;
                    (Verdict::of(v), t)
                }
                // A restore test that did not test the database fails.
                other => (
                    Verdict::of(format!(
                        "a capture of kind {other:?}, which this version of cairn cannot check"
                    )),
                    BTreeMap::new(),
                ),
            },
        };
        databases.push(report(db, integrity, actual));
    }
    // A check cut short by a stop request is no verdict on the data.
    if crate::child::stopping() {
        return Err(Error::Interrupted);
    }
    let ok = errors.is_empty() && databases.iter().all(|d| d.ok);
    let seconds = start.elapsed().as_secs_f64();
    let at = dir.path().to_path_buf();
    if let Err(e) = dir.remove() {
        warnings.push(format!(
            "scratch directory {} could not be removed: {e}",
            at.display()
        ));
    }
    Ok(VerifyReport {
        snapshot: id.to_hex(),
        files: r.files,
        bytes: r.bytes,
        databases,
        errors,
        warnings,
        ok,
        seconds,
    })
}

/// Where the database recorded at `path` was restored below `target`, or
/// why it is not checked there. A path leaving the target (`..`) or going
/// through a symbolic link is refused: only a forged snapshot has one, and
/// the check would have opened a file of this machine (SQLite's read-write)
/// instead of the restored copy.
fn restored_at(target: &Path, path: &str) -> std::result::Result<PathBuf, String> {
    let mut at = target.to_path_buf();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                at.push(name);
                match std::fs::symlink_metadata(&at) {
                    Err(_) => return Err("missing from the restore".into()),
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(format!(
                            "not checked: {} is a symbolic link in the snapshot",
                            at.strip_prefix(target).unwrap_or(&at).display()
                        ));
                    }
                    Ok(_) => {}
                }
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "not checked: {path:?} is no path inside the snapshot"
                ));
            }
        }
    }
    Ok(at)
}

/// A database's check: `ok` or its problem, and what it could not check.
struct Verdict {
    integrity: String,
    not_checked: Vec<String>,
}

impl Verdict {
    fn of(integrity: impl Into<String>) -> Verdict {
        Verdict {
            integrity: integrity.into(),
            not_checked: Vec::new(),
        }
    }
}

fn check_sqlite(file: &Path) -> (Verdict, BTreeMap<String, u64>) {
    match sqlite::inspect(file) {
        Ok((c, t)) => {
            let integrity = if c.problems.is_empty() {
                "ok".to_string()
            } else {
                c.problems.join("; ")
            };
            let not_checked = c
                .unchecked
                .into_iter()
                .map(|(table, why)| format!("table {table}: {why}"))
                .collect();
            (
                Verdict {
                    integrity,
                    not_checked,
                },
                t,
            )
        }
        Err(e) => (Verdict::of(e.to_string()), BTreeMap::new()),
    }
}

/// Loads the dump into a scratch database and counts the recorded tables
/// there; the scratch database is dropped on every path out. A scratch
/// database the server does not make (it does not answer, the role may
/// not create databases) is an error, not a verdict: it says nothing of
/// the snapshot, and every test after it would fail alike.
fn check_postgres(
    file: &Path,
    recorded: &BTreeMap<String, u64>,
    conninfo: Option<&str>,
) -> Result<(String, BTreeMap<String, u64>)> {
    let Some(conninfo) = conninfo else {
        return Ok((NEEDS_SERVER.to_string(), BTreeMap::new()));
    };
    let db = postgres::ScratchDatabase::create(conninfo).map_err(|e| match e {
        Error::Interrupted => e,
        e => Error::CommandFailed(format!(
            "no scratch database could be made on the server given with --postgres, so the \
             capture was not tested (the server's or the role's doing, not the snapshot's): {e}"
        )),
    })?;
    let run = || -> Result<BTreeMap<String, u64>> {
        postgres::load_dump(&db.conninfo(), file).map_err(|e| {
            Error::CommandFailed(format!("loading into scratch database {}: {e}", db.name()))
        })?;
        let names: Vec<&str> = recorded.keys().map(String::as_str).collect();
        postgres::count_rows(&db.conninfo(), &names)
    };
    Ok(match run() {
        Ok(t) => ("ok".to_string(), t),
        Err(e) => (e.to_string(), BTreeMap::new()),
    })
}

/// The verdict on one database: its check, and every table's recorded and
/// found rows side by side (a table on one side only counts as a mismatch).
fn report(db: &DatabaseCapture, verdict: Verdict, actual: BTreeMap<String, u64>) -> DatabaseReport {
    let Verdict {
        integrity,
        not_checked,
    } = verdict;
    let recorded = &db.tables;
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
    // A failed check already decides; its counts would only add noise.
    if integrity != "ok" && actual.is_empty() {
        tables.clear();
    }
    let ok = integrity == "ok" && tables.values().all(|c| c.expected == c.actual);
    DatabaseReport {
        kind: db.kind.clone(),
        path: db.path.clone(),
        integrity,
        not_checked,
        tables,
        ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(tables: &[(&str, u64)]) -> DatabaseCapture {
        DatabaseCapture {
            kind: "postgres".into(),
            path: "/app.sql".into(),
            tables: tables.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            ..DatabaseCapture::default()
        }
    }

    #[test]
    fn a_count_that_differs_fails_and_keeps_both_numbers() {
        let db = capture(&[("public.a", 3), ("public.b", 5)]);
        let found = [("public.a".to_string(), 3), ("public.b".to_string(), 4)];
        let r = report(&db, Verdict::of("ok"), found.into_iter().collect());
        assert!(!r.ok);
        assert_eq!(
            r.tables["public.b"],
            TableCount {
                expected: Some(5),
                actual: Some(4)
            }
        );
        let all = [("public.a".to_string(), 3), ("public.b".to_string(), 5)];
        assert!(report(&db, Verdict::of("ok"), all.into_iter().collect()).ok);
    }

    #[test]
    fn a_table_on_one_side_only_fails() {
        let db = capture(&[("public.a", 3)]);
        let found = [("public.a".to_string(), 3), ("public.x".to_string(), 0)];
        let r = report(&db, Verdict::of("ok"), found.into_iter().collect());
        assert!(!r.ok);
        assert_eq!(r.tables["public.x"].expected, None);
    }

    #[test]
    fn a_failed_check_fails_without_listing_every_table() {
        let db = capture(&[("public.a", 3)]);
        let r = report(&db, Verdict::of(NEEDS_SERVER), BTreeMap::new());
        assert!(!r.ok);
        assert!(r.tables.is_empty());
    }
}
