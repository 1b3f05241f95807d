//! `cairn ls`

use anyhow::Result;
use cairn_engine::listing::{LsOptions, NodeInfo, SnapshotInfo, ls};

use crate::common::Global;
use crate::output::{Output, long_line};
use crate::snapshot_arg::{Holding, SourceFilter, select_holding};
use crate::{exit, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot ID, unique prefix or `latest`
    snapshot: Option<String>,
    /// Absolute directories to list: each one and its entries (default: the whole snapshot)
    dirs: Vec<String>,
    /// Instead of a snapshot ID: the newest snapshot at or before this time
    #[arg(long, value_parser = crate::common::checked_time)]
    at: Option<String>,
    #[command(flatten)]
    source: SourceFilter,
    /// Long listing: permissions, owner, size, modification time
    #[arg(short, long)]
    long: bool,
    /// With directories: list everything below them, not only their entries
    #[arg(long)]
    recursive: bool,
    /// Sizes in human-readable units (with --long)
    #[arg(long)]
    human_readable: bool,
}

pub fn run(g: &Global, mut a: Args) -> Result<i32> {
    // With --at there is no snapshot argument: the first positional is a
    // directory, and a snapshot given as well would be read as one.
    if a.at.is_some()
        && let Some(first) = a.snapshot.take()
    {
        a.dirs.insert(0, first);
    }
    if let Some(d) = a.dirs.iter().find(|d| !d.starts_with('/')) {
        return Err(exit::usage(format!(
            "directories to list are absolute paths in the snapshot, not {d:?} (with --at, \
             give no snapshot)"
        )));
    }
    let repo = g.open()?;
    // With --at the source is also implied by the directories asked for:
    // the newest snapshot that holds them, not one of some other source.
    let holding = Holding {
        all: a.dirs.clone(),
        any: Vec::new(),
    };
    let (id, snap) = select_holding(
        &repo,
        a.snapshot.as_deref(),
        a.at.as_deref(),
        &a.source,
        &holding,
    )?;
    let mut out = Output::stdout();
    if g.json {
        out.json_line(&SnapshotInfo::new(&id, &snap))?;
    } else if !g.quiet {
        // A line of its own: the paths are escaped on a terminal, as names are.
        out.engine_line(&format!(
            "snapshot {} of [{}]{} at {}:",
            id.short(),
            snap.paths.join(" "),
            if a.dirs.is_empty() {
                String::new()
            } else {
                format!(" filtered by [{}]", a.dirs.join(" "))
            },
            timefmt::show(&snap.time)
        ))?;
    }
    let opts = LsOptions {
        dirs: a.dirs.clone(),
        recursive: a.recursive,
    };
    ls(&repo, &snap, &opts, &mut |path, node| {
        if g.json {
            out.engine_json_line(&NodeInfo::new(path, node))
        } else if a.long {
            out.engine_path_line(&long_line(path, node, a.human_readable))
        } else {
            out.engine_path_line(path)
        }
    })?;
    out.finish()?;
    Ok(exit::OK)
}
