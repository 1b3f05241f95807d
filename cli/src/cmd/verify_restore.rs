//! `cairn verify-restore`

use std::path::PathBuf;

use anyhow::Result;
use cairn_engine::activity::Activity;
use cairn_engine::id::Id;
use cairn_engine::overview::record_restore_test;
use cairn_engine::verify::{VerifyReport, verify_restore};

use crate::common::{Global, bytes, print_json};
use crate::exit;
use crate::snapshot_arg::{Holding, SourceFilter, select_holding};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshots to verify (ID, unique prefix or `latest`; default `latest`)
    snapshots: Vec<String>,
    #[command(flatten)]
    source: SourceFilter,
    /// Directory to restore into (a scratch directory is made and removed
    /// inside it; default $TMPDIR)
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// A PostgreSQL server to load captured dumps into (keyword/value
    /// CONNINFO of a database to connect to, e.g. "host=/run/pg dbname=postgres");
    /// a scratch database cairn_verify_<hex> is created there and dropped
    #[arg(long, value_name = "CONNINFO")]
    postgres: Option<String>,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    if let Some(c) = &a.postgres {
        crate::common::warn_password_in_conninfo(c);
        cairn_engine::capture::postgres::check_keyword_conninfo(c, "--postgres")
            .map_err(|e| exit::usage(e.to_string()))?;
    }
    // As a restore on another machine reads it: not from the objects this
    // one cached, which may hide a tree pack lost from the store.
    let repo = g.open_uncached()?;
    // A shared lock keeps prune from repacking what is being restored (a
    // test beside a prune reported an intact snapshot as FAILED).
    let lock = g.read_lock(&repo)?;
    // Stopped, the scratch directory and database are removed (exit 130).
    cairn_engine::child::stop_with(exit::stop_flag(&[
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?);
    let scratch = a.scratch.unwrap_or_else(std::env::temp_dir);
    let specs = if a.snapshots.is_empty() {
        vec!["latest".to_string()]
    } else {
        a.snapshots
    };
    // Every name is resolved first: one that names no snapshot ended the
    // run after tests that had passed or failed, none of them recorded.
    let chosen = specs
        .iter()
        .map(|spec| select_holding(&repo, Some(spec), None, &a.source, &Holding::default()))
        .collect::<Result<Vec<_>>>()?;
    // A test that failed after a prune took the lock (a machine asleep
    // past its stale age) may have failed for the prune's work: said so,
    // not recorded as a failed test.
    let lock_held = || match crate::common::lock_lost(lock.as_ref()) {
        Some(e) => Err(e),
        None => Ok(()),
    };
    // Each snapshot tested once (`ID latest` naming one twice restored it
    // twice), marked if any of its names was `latest`.
    let mut tests: Vec<(Id, &cairn_engine::snapshot::Snapshot, bool)> = Vec::new();
    for (spec, (id, snap)) in specs.iter().zip(&chosen) {
        let by_latest = spec == "latest";
        match tests.iter_mut().find(|(t, _, _)| t == id) {
            Some(t) => t.2 |= by_latest,
            None => tests.push((*id, snap, by_latest)),
        }
    }
    let mut all_ok = true;
    let mut reports = Vec::new();
    for (id, snap, by_latest) in tests {
        let _activity = Activity::start_on(&repo, "verify-restore", Some(&id), None);
        let (mut stop, mut ran) = (None, true);
        let r = match verify_restore(&repo, id, snap, &scratch, a.postgres.as_deref()) {
            Ok(r) => r,
            Err(e @ cairn_engine::Error::Interrupted) => return Err(e.into()),
            Err(e) => {
                lock_held()?;
                // A test that could not run is a failed test, for monitors
                // too. A damaged snapshot (a tree lost) leaves the others
                // to test; anything else (the store, the scratch disk)
                // would fail them all alike, and ends the run.
                ran = false;
                let r = VerifyReport::failed(&id, e.to_string());
                if !matches!(
                    e,
                    cairn_engine::Error::Corrupt { .. } | cairn_engine::Error::Missing(_)
                ) {
                    stop = Some(e);
                }
                r
            }
        };
        // `latest` chosen past a record that cannot be read tested an
        // older snapshot, perhaps of another source: a pass would hide the
        // very damage a restore test is for.
        let mut r = r;
        let passed = repo.passed_over_records();
        if by_latest && !passed.is_empty() {
            r.ok = false;
            r.errors.push(format!(
                "`latest` passed over {} snapshot record(s) that cannot be read, which may be \
                 newer than this one: {} (`cairn check` names them)",
                passed.len(),
                passed.join("; ")
            ));
        }
        if !r.ok {
            lock_held()?;
        }
        all_ok &= r.ok;
        reports.push((snap, r.clone()));
        if let Some(e) = stop {
            if g.json {
                print_json(&r)?;
            }
            record_restore_test(&repo, &reports);
            return Err(e.into());
        }
        if g.json {
            print_json(&r)?;
            continue;
        }
        // Under -q a test that passed says nothing (cron mails only failures).
        if g.quiet && r.ok {
            continue;
        }
        if ran {
            crate::say!(
                "snapshot {}: {} files, {} restored and verified in {:.2} s: {}",
                id.short(),
                r.files,
                bytes(r.bytes),
                r.seconds,
                if r.ok { "ok" } else { "FAILED" }
            );
        } else {
            crate::say!("snapshot {}: the restore could not run: FAILED", id.short());
        }
        for e in &r.errors {
            crate::say!("  error: {e}");
        }
        for w in &r.warnings {
            crate::say!("  warning: {w}");
        }
        for d in &r.databases {
            // psql's or SQLite's message may run over several lines: each
            // its own, so that none shows as `\n` on a terminal.
            let mut said = d.integrity.lines();
            crate::say!(
                "  {} database {}: {}{}",
                d.kind,
                d.path,
                said.next().unwrap_or_default(),
                if d.ok { "" } else { " (FAILED)" }
            );
            for more in said {
                crate::say!("    {more}");
            }
            for n in &d.not_checked {
                crate::say!("    not checked: {n} (only the application defines it)");
            }
            for (name, c) in &d.tables {
                if c.expected != c.actual {
                    crate::say!(
                        "    table {name}: {} rows at capture, {} restored",
                        show(c.expected),
                        show(c.actual)
                    );
                }
            }
        }
    }
    record_restore_test(&repo, &reports);
    Ok(if all_ok { exit::OK } else { exit::FATAL })
}

fn show(n: Option<u64>) -> String {
    n.map_or_else(|| "no".into(), |n| n.to_string())
}
