//! `cairn audit`

use anyhow::Result;
use cairn_engine::audit::{AuditRecord, Changes, records};

use crate::common::{Global, bytes, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(g: &Global, _a: Args) -> Result<i32> {
    let repo = g.open()?;
    let all = records(&**repo.backend(), repo.key())?;
    if g.json {
        print_json(&all)?;
        return Ok(exit::OK);
    }
    for r in &all {
        println!("{}", line(r));
    }
    println!("{} record(s)", all.len());
    Ok(exit::OK)
}

fn line(r: &AuditRecord) -> String {
    let what = [describe("+", &r.added), describe("-", &r.removed)]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "{}  {}@{}  key {}  {}: {}",
        r.time
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S"),
        r.username,
        r.hostname,
        &r.key[..r.key.len().min(8)],
        if r.command.is_empty() {
            "?"
        } else {
            &r.command
        },
        what
    )
}

fn describe(sign: &str, c: &Changes) -> String {
    let mut parts = Vec::new();
    let short = |ids: &[String]| {
        ids.iter()
            .map(|i| i[..i.len().min(8)].to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !c.snapshots.is_empty() {
        parts.push(format!("{sign}snapshots {}", short(&c.snapshots)));
    }
    if !c.keys.is_empty() {
        parts.push(format!("{sign}keys {}", short(&c.keys)));
    }
    if c.packs > 0 {
        let size = if c.pack_bytes > 0 {
            format!(" ({})", bytes(c.pack_bytes))
        } else {
            String::new()
        };
        parts.push(format!("{sign}{} packs{size}", c.packs));
    }
    if c.index_files > 0 {
        parts.push(format!("{sign}{} index files", c.index_files));
    }
    if c.dicts > 0 {
        parts.push(format!("{sign}{} dictionaries", c.dicts));
    }
    if c.config {
        parts.push(format!("{sign}config"));
    }
    parts.join(", ")
}
