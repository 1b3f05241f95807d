//! `cairn restore-db`

use anyhow::Result;
use cairn_engine::capture::postgres::{
    check_keyword_conninfo, postgres_capture, postgres_capture_paths, restore_db,
};

use crate::common::{Global, print_json};
use crate::exit;
use crate::snapshot_arg::{SourceFilter, described, select_where};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot ID, unique prefix or `latest`
    #[arg(required_unless_present = "at", conflicts_with = "at")]
    snapshot: Option<String>,
    /// Instead of a snapshot ID: the newest snapshot with a PostgreSQL
    /// capture (of --database, if given) at or before this time
    #[arg(long, value_parser = crate::common::checked_time)]
    at: Option<String>,
    /// The captured database to load: its name, or its path in the
    /// snapshot (e.g. /app.sql); default: the snapshot's only one
    #[arg(long, value_name = "NAME")]
    database: Option<String>,
    #[command(flatten)]
    source: SourceFilter,
    /// The database to load into (libpq CONNINFO, e.g. "host=/run/pg dbname=app")
    #[arg(long, value_name = "CONNINFO")]
    postgres: String,
    /// Create the database (named by dbname= in CONNINFO) first
    #[arg(long)]
    create: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    crate::common::warn_password_in_conninfo(&a.postgres);
    if a.create {
        check_keyword_conninfo(&a.postgres, "--create").map_err(|e| exit::usage(e.to_string()))?;
    }
    let repo = g.open()?;
    // A shared lock keeps prune from repacking what is being restored (a
    // test beside a prune reported an intact snapshot as FAILED).
    let _lock = g.read_lock(&repo)?;
    // Stopped, psql is ended and the restored dump removed (exit 130); a
    // database it was loading into stays, partly loaded.
    cairn_engine::child::stop_with(exit::stop_flag(&[
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?);
    let name = a.database.as_deref();
    let source = a.source.filter();
    // `latest` (or --at) is the newest capture of any database without
    // --database, and of any of that name with it (two servers' `app`):
    // with captures of several, another database than the one meant
    // would be loaded, without a word.
    // Captures made after --at cannot be the one meant: they leave the
    // choice alone.
    let named = a.snapshot.as_deref().filter(|s| *s != "latest");
    let until = a.at.as_deref().map(crate::timefmt::parse).transpose()?;
    let candidates: Vec<_> = match named {
        Some(spec) => vec![repo.find_snapshot(spec)?.1],
        None => repo
            .readable_snapshots()?
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| source.matches(s) && until.is_none_or(|t| s.time <= t))
            .collect(),
    };
    let paths = postgres_capture_paths(&candidates, name);
    if paths.len() > 1 {
        return Err(exit::usage(format!(
            "{} holds PostgreSQL captures of {} databases{} ({}): name the one to load with \
             --database{}",
            if named.is_some() {
                "this snapshot"
            } else {
                "the repository"
            },
            paths.len(),
            name.map(|n| format!(" named {n}")).unwrap_or_default(),
            paths.iter().copied().collect::<Vec<_>>().join(", "),
            if name.is_some() { " PATH" } else { "" }
        )));
    }
    let what = described([
        source.describe(),
        match name {
            Some(n) => format!("PostgreSQL database {n}"),
            None => "a PostgreSQL capture".into(),
        },
    ]);
    let (id, snap) = select_where(&repo, a.snapshot.as_deref(), a.at.as_deref(), &what, |s| {
        source.matches(s) && postgres_capture(s, name).is_some()
    })?;
    let db = restore_db(
        &repo,
        &snap,
        name,
        &a.postgres,
        a.create,
        &std::env::temp_dir(),
    )
    .map_err(|e| {
        // psql's words alone left the way out unsaid.
        let said = e.to_string();
        let missing =
            !a.create && said.contains("FATAL:  database \"") && said.contains("\" does not exist");
        let e = anyhow::Error::new(e);
        match missing {
            true => e.context("the database to load into does not exist: give --create to make it"),
            false => e,
        }
    })?;
    // Which capture was loaded, by the name it had and its path.
    let captured = postgres_capture(&snap, name);
    let from = captured.map(|c| c.path.as_str()).unwrap_or_default();
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": id.to_hex(),
            "captured_database": captured.and_then(|c| c.database.as_deref()),
            "dump": from,
            "database": db,
        }))?;
    } else if !g.quiet {
        let of = captured
            .and_then(|c| c.database.as_deref())
            .map(|d| format!("database {d:?} ({from})"))
            .unwrap_or_else(|| from.to_string());
        crate::say!("loaded {of} of snapshot {} into database {db}", id.short());
    }
    Ok(exit::OK)
}
