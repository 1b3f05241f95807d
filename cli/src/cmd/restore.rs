//! `cairn restore`

use std::path::PathBuf;

use anyhow::{Result, bail};
use cairn_engine::restorer::{RestoreOptions, restore};

use crate::common::{Global, bytes, print_json};
use crate::snapshot_arg::select;
use crate::{exit, progress};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot ID, unique prefix or `latest`, optionally followed by `:SUBPATH`
    snapshot: Option<String>,
    /// Directory to restore into
    #[arg(long, short = 't')]
    target: PathBuf,
    /// Instead of a snapshot ID: the newest snapshot at or before this time
    #[arg(long)]
    at: Option<String>,
    /// Restore owners by numeric ID
    #[arg(long)]
    numeric_ids: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let (spec, subpath) = match &a.snapshot {
        Some(s) => match s.split_once(':') {
            Some((id, sub)) => (Some(id.to_string()), Some(sub.to_string())),
            None => (Some(s.clone()), None),
        },
        None => (None, None),
    };
    if spec.is_none() && a.at.is_none() {
        bail!("give a snapshot (ID, prefix or `latest`) or --at TIME");
    }
    let (id, snap) = select(&repo, spec.as_deref(), a.at.as_deref())?;
    let show = progress::enabled(g.quiet, g.json);
    let total = snap
        .summary
        .as_ref()
        .map(|s| s.total_bytes)
        .filter(|_| subpath.is_none());
    let p = progress::Restore {
        bar: progress::bytes_bar(show, total, "restore"),
    };
    let opts = RestoreOptions {
        target: a.target.clone(),
        subpath,
        numeric_ids: a.numeric_ids,
    };
    let r = restore(&repo, &snap, &opts, &p)?;
    p.bar.finish_and_clear();
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": id.to_hex(),
            "target": a.target,
            "files": r.files,
            "dirs": r.dirs,
            "others": r.others,
            "bytes": r.bytes,
            "errors": r.errors,
            "warnings": r.warnings,
        }))?;
    } else if !g.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} directories, {}",
            id.short(),
            a.target.display(),
            r.files,
            r.dirs,
            bytes(r.bytes)
        );
    }
    Ok(if r.errors > 0 { exit::FATAL } else { exit::OK })
}
