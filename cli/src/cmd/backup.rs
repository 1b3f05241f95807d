//! `cairn backup`

use std::path::PathBuf;

use anyhow::Result;
use cairn_engine::Id;
use cairn_engine::archiver::{BackupOptions, backup};

use crate::common::{Global, bytes, print_json};
use crate::{exit, progress, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files and directories to back up
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Add a tag (repeatable)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Record this host name instead of the machine's
    #[arg(long)]
    host: Option<String>,
    /// Record this time instead of now ("YYYY-MM-DD HH:MM:SS", local time)
    #[arg(long)]
    time: Option<String>,
    /// Snapshot to compare against for change detection (default: latest of the same host and paths)
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, even those that look unchanged
    #[arg(long)]
    force: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let parent = match &a.parent {
        Some(p) => Some(repo.find_snapshot(p)?.0),
        None => None,
    };
    let opts = BackupOptions {
        paths: a.paths,
        tags: a.tags,
        host: a.host,
        time: a.time.as_deref().map(timefmt::parse).transpose()?,
        parent,
        force: a.force,
    };
    let show = progress::enabled(g.quiet, g.json);
    let p = progress::Backup {
        bar: progress::bytes_bar(show, None, "backup"),
        verbose_warnings: true,
    };
    let r = backup(&repo, &opts, &p)?;
    p.bar.finish_and_clear();
    let s = &r.summary;
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": r.snapshot_id.to_hex(),
            "short_id": r.snapshot_id.short(),
            "parent": r.snapshot.parent.map(|p: Id| p.to_hex()),
            "partial": r.snapshot.partial,
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unmodified": s.files_unmodified,
            "dirs": s.dirs,
            "others": s.others,
            "bytes_read": s.bytes_read,
            "total_bytes": s.total_bytes,
            "data_added": s.data_added,
            "blobs_added": s.blobs_added,
            "errors": s.errors,
            "warnings": r.warnings,
            "backup_start": s.backup_start,
            "backup_end": s.backup_end,
        }))?;
    } else if !g.quiet {
        println!(
            "Files: {} new, {} changed, {} unmodified; {} directories",
            s.files_new, s.files_changed, s.files_unmodified, s.dirs
        );
        println!(
            "Read {} of {}; added {} to the repository",
            bytes(s.bytes_read),
            bytes(s.total_bytes),
            bytes(s.data_added)
        );
        println!("snapshot {} saved", r.snapshot_id.short());
    }
    if r.snapshot.partial {
        eprintln!(
            "warning: {} source entries could not be read; the snapshot is incomplete",
            s.errors
        );
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}
