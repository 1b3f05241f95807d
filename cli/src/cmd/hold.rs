//! `cairn hold [--release] SNAPSHOT...`

use anyhow::Result;
use cairn_engine::hold::set_hold;

use crate::common::{Global, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshots (IDs, unique prefixes or `latest`)
    #[arg(required = true)]
    snapshots: Vec<String>,
    /// Release the hold instead of setting it
    #[arg(long)]
    release: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let changes = set_hold(&repo, &a.snapshots, !a.release)?;
    if g.json {
        let v: Vec<serde_json::Value> = changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "old_id": c.old.to_hex(),
                    "id": c.new.to_hex(),
                    "short_id": c.new.short(),
                    "original": c.original.to_hex(),
                    "hold": c.hold,
                    "changed": c.changed,
                })
            })
            .collect();
        print_json(&v)?;
        return Ok(exit::OK);
    }
    if g.quiet {
        return Ok(exit::OK);
    }
    for c in &changes {
        let state = if c.hold { "held" } else { "not held" };
        if !c.changed {
            crate::say!("snapshot {} is already {state}", c.new.short());
        } else {
            // The record is rewritten, so the ID changes: say both.
            crate::say!(
                "snapshot {} is now {state}; its new ID is {} (first ID {})",
                c.old.short(),
                c.new.short(),
                c.original.short()
            );
        }
    }
    Ok(exit::OK)
}
