//! `cairn stats`

use anyhow::Result;
use cairn_engine::stats::{StatsMode, StatsOptions, stats};

use crate::common::{Global, bytes, print_json};
use crate::snapshot_arg::SourceFilter;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshots: IDs, unique prefixes or `latest` (default: all)
    snapshots: Vec<String>,
    /// restore-size, files-by-contents, blobs-per-file or raw-data
    #[arg(long, default_value = "restore-size")]
    mode: StatsMode,
    #[command(flatten)]
    filter: SourceFilter,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    // As dump: keeps prune from deleting packs while they are read.
    let _lock = g.read_lock(&repo)?;
    let s = stats(
        &repo,
        &StatsOptions {
            mode: a.mode,
            snapshots: a.snapshots,
            filter: a.filter.filter(),
        },
    )?;
    if g.json {
        print_json(&s)?;
        return Ok(crate::common::passed_over_exit(&repo, "counted"));
    }
    let mode = serde_json::to_value(s.mode)?;
    crate::say!("Stats in {} mode:", mode.as_str().unwrap_or_default());
    crate::say!("     Snapshots processed:  {}", s.snapshots_count);
    if let Some(n) = s.total_blob_count {
        crate::say!("        Total Blob Count:  {n}");
    }
    if let Some(n) = s.total_file_count {
        crate::say!("        Total File Count:  {n}");
    }
    if let Some(n) = s.total_uncompressed_size {
        crate::say!(" Total Uncompressed Size:  {}", bytes(n));
    }
    crate::say!("              Total Size:  {}", bytes(s.total_size));
    if let Some(r) = s.compression_ratio {
        crate::say!("       Compression Ratio:  {r:.2}x");
    }
    if let Some(p) = s.compression_space_saving {
        crate::say!("Compression Space Saving:  {p:.2}%");
    }
    if let Some(n) = s.restore_size {
        crate::say!("            Restore Size:  {}", bytes(n));
    }
    if let Some(r) = s.deduplication_ratio {
        crate::say!("     Deduplication Ratio:  {r:.2}x");
    }
    Ok(crate::common::passed_over_exit(&repo, "counted"))
}
