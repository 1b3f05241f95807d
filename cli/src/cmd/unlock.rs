//! `cairn unlock [--remove-all]`

use anyhow::Result;
use cairn_engine::lock::remove_locks;

use crate::common::{Global, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove every lock, not only stale ones: only when no cairn process
    /// is using the repository (one that is finds its lock gone and commits
    /// nothing)
    #[arg(long)]
    remove_all: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let removed = remove_locks(&repo, a.remove_all)?;
    if g.json {
        print_json(&serde_json::json!({ "removed": removed }))?;
        return Ok(exit::OK);
    }
    if g.quiet {
        return Ok(exit::OK);
    }
    for r in &removed {
        crate::say!("removed {r}");
    }
    crate::say!(
        "{} lock(s) removed{}",
        removed.len(),
        if a.remove_all {
            ""
        } else {
            " (stale ones only; --remove-all removes live ones too)"
        }
    );
    Ok(exit::OK)
}
