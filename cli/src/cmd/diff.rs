//! `cairn diff`

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use anyhow::Result;
use cairn_engine::diff::{DiffOptions, diff};
use cairn_engine::walk::snapshot_root;

use crate::common::{Global, bytes};
use crate::exit;
use crate::output::Output;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// First snapshot: ID, unique prefix or `latest`, optionally `:SUBFOLDER`
    from: OsString,
    /// Second snapshot, the same way
    to: OsString,
    /// Also show metadata-only changes (U): mode, owner, times, extended attributes
    #[arg(long)]
    metadata: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    // As dump: keeps prune from deleting packs while they are read.
    let _lock = g.read_lock(&repo)?;
    // A subfolder's names need not be UTF-8.
    let from = snapshot_root(&repo, a.from.as_bytes())?;
    let to = snapshot_root(&repo, a.to.as_bytes())?;
    let mut out = Output::stdout();
    if !g.json && !g.quiet {
        writeln!(
            out,
            "comparing snapshot {} to {}:\n",
            from.snapshot.short(),
            to.snapshot.short()
        )?;
    }
    let opts = DiffOptions {
        metadata: a.metadata,
    };
    let s = diff(&repo, &from, &to, &opts, &mut |c| {
        if g.json {
            out.engine_json_line(c)
        } else if g.quiet {
            Ok(())
        } else {
            out.engine_path_line(&[format!("{:<5}", c.modifier).as_bytes(), &c.raw].concat())
        }
    })?;
    if g.json {
        out.json_line(&s)?;
    } else {
        if !g.quiet {
            writeln!(out)?;
        }
        writeln!(
            out,
            "Files:       {:>5} new, {:>5} removed, {:>5} changed",
            s.added.files, s.removed.files, s.changed_files
        )?;
        writeln!(
            out,
            "Dirs:        {:>5} new, {:>5} removed",
            s.added.dirs, s.removed.dirs
        )?;
        writeln!(
            out,
            "Others:      {:>5} new, {:>5} removed",
            s.added.others, s.removed.others
        )?;
        writeln!(
            out,
            "Data Blobs:  {:>5} new, {:>5} removed",
            s.added.data_blobs, s.removed.data_blobs
        )?;
        writeln!(
            out,
            "Tree Blobs:  {:>5} new, {:>5} removed",
            s.added.tree_blobs, s.removed.tree_blobs
        )?;
        writeln!(out, "  Added:   {}", bytes(s.added.bytes))?;
        writeln!(out, "  Removed: {}", bytes(s.removed.bytes))?;
    }
    out.finish()?;
    Ok(exit::OK)
}
