//! `cairn restore-db`

use anyhow::Result;
use cairn_engine::capture::postgres::{postgres_capture, restore_db};

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
    )?;
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": id.to_hex(),
            "database": db,
        }))?;
    } else if !g.quiet {
        crate::say!("loaded snapshot {} into database {db}", id.short());
    }
    Ok(exit::OK)
}
