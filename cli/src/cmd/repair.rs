//! `cairn repair index`

use anyhow::Result;
use cairn_engine::repair::repair_index;

use crate::common::{Global, print_json};
use crate::exit;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Rebuild the index from pack headers
    Index,
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
                println!(
                    "indexed {} blobs in {} packs; wrote {} index files, removed {}",
                    r.blobs, r.packs, r.index_files_written, r.index_files_removed
                );
            }
        }
    }
    Ok(exit::OK)
}
