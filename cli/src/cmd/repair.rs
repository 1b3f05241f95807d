//! `cairn repair index | snapshots`

use anyhow::Result;
use cairn_engine::repair::{repair_index, repair_snapshots};

use crate::common::{Global, print_json};
use crate::exit;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Rebuild the index from pack headers
    Index,
    /// Rewrite snapshots that refer to missing data, dropping what cannot be read
    Snapshots {
        /// Remove the original (damaged) snapshot records
        #[arg(long)]
        forget: bool,
        /// Show what would be repaired without writing anything
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}

pub fn run(g: &Global, c: Command) -> Result<i32> {
    let repo = g.open()?;
    match c {
        Command::Index => {
            let r = repair_index(&repo)?;
            if g.json {
                print_json(&r)?;
            } else {
                for u in &r.unreadable {
                    eprintln!("warning: {u}");
                }
                if g.quiet {
                    return Ok(exit::OK);
                }
                println!(
                    "indexed {} blobs in {} packs; wrote {} index files, removed {}",
                    r.blobs, r.packs, r.index_files_written, r.index_files_removed
                );
            }
        }
        Command::Snapshots { forget, dry_run } => {
            let r = repair_snapshots(&repo, forget, dry_run)?;
            if g.json {
                print_json(&r)?;
            } else {
                for u in &r.unreadable {
                    eprintln!("error: {u}");
                }
                // What was lost is said even with -q.
                for d in &r.dropped {
                    println!("dropped {d}");
                }
                if g.quiet && !dry_run {
                    return Ok(exit::OK);
                }
                for (old, new) in &r.repaired {
                    if dry_run {
                        println!("would repair snapshot {}", &old[..8]);
                    } else {
                        println!("snapshot {} repaired as {}", &old[..8], &new[..8]);
                    }
                }
                println!(
                    "{} of {} snapshots {}repaired",
                    r.repaired.len(),
                    r.snapshots,
                    if dry_run { "would be " } else { "" }
                );
            }
        }
    }
    Ok(exit::OK)
}
