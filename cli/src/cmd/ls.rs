//! `cairn ls`

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use anyhow::Result;
use cairn_engine::listing::{LsOptions, NodeInfo, SnapshotInfo, ls};
use cairn_engine::walk::shown;

use crate::common::Global;
use crate::output::{Output, long_line};
use crate::snapshot_arg::{Holding, SourceFilter, select_holding, snapshot_path};
use crate::{exit, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot ID, unique prefix or `latest`
    snapshot: Option<OsString>,
    /// Absolute directories to list: each one and its entries (default: the whole snapshot)
    dirs: Vec<OsString>,
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
    if let Some(d) = a.dirs.iter().find(|d| !d.as_bytes().starts_with(b"/")) {
        return Err(exit::usage(format!(
            "directories to list are absolute paths in the snapshot, not {} (with --at, \
             give no snapshot)",
            shown(d.as_bytes())
        )));
    }
    let spec = match &a.snapshot {
        Some(s) => Some(
            s.to_str()
                .ok_or_else(|| exit::usage("a snapshot ID is text (hex, or `latest`)"))?,
        ),
        None => None,
    };
    // Names need not be UTF-8.
    let dirs: Vec<Vec<u8>> = a.dirs.iter().map(|d| d.as_bytes().to_vec()).collect();
    let repo = g.open()?;
    // As dump: keeps prune from deleting packs while they are read.
    let lock = g.read_lock(&repo)?;
    // With --at the source is also implied by the directories asked for:
    // the newest snapshot that holds them, not one of some other source.
    let holding = Holding {
        all: dirs.iter().map(|d| snapshot_path(d)).collect(),
        any: Vec::new(),
    };
    let (id, snap) = select_holding(&repo, spec, a.at.as_deref(), &a.source, &holding)?;
    let mut out = Output::stdout();
    if g.json {
        out.json_line(&SnapshotInfo::new(&id, &snap))?;
    } else if !g.quiet {
        // A line of its own: the paths are escaped on a terminal, as
        // names are, and written as given elsewhere.
        let filtered = if dirs.is_empty() {
            Vec::new()
        } else {
            [b" filtered by [".as_slice(), &dirs.join(&b' '), b"]"].concat()
        };
        out.engine_path_line(
            &[
                format!("snapshot {} of [{}]", id.short(), snap.paths.join(" ")).as_bytes(),
                &filtered,
                format!(" at {}:", timefmt::show(&snap.time)).as_bytes(),
            ]
            .concat(),
        )?;
    }
    let opts = LsOptions {
        dirs,
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
    })
    .map_err(|e| crate::common::unless_lock_lost(lock.as_ref(), e, "listing"))?;
    out.finish()?;
    Ok(exit::OK)
}
