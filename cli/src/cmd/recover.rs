//! `cairn recover`

use anyhow::Result;
use cairn_engine::recover::{TAG, recover};

use crate::common::{Global, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show what would be recovered without writing anything
    #[arg(long, short = 'n')]
    dry_run: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let r = recover(&repo, a.dry_run)?;
    if g.json {
        print_json(&r)?;
        return Ok(exit::OK);
    }
    for u in &r.unreadable {
        eprintln!("warning: tree {u}");
    }
    println!(
        "{} trees read, {} not referenced by any snapshot or other tree",
        r.trees,
        r.roots.len()
    );
    for root in &r.roots {
        println!("  {root}");
    }
    match &r.snapshot {
        Some(id) => println!(
            "snapshot {} saved (tag {TAG}): each tree is a directory named after its ID; \
             browse or restore it, then `cairn forget {}` once you have what you need",
            &id[..8],
            &id[..8]
        ),
        None if r.dry_run && !r.roots.is_empty() => {
            println!("nothing written (--dry-run)")
        }
        None => println!("nothing to recover"),
    }
    Ok(exit::OK)
}
