//! `cairn snapshots`

use anyhow::Result;
use cairn_engine::hold::logical_snapshots;

use crate::common::{Global, bytes};
use crate::snapshot_arg::SourceFilter;
use crate::{exit, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    filter: SourceFilter,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let (all, damaged) = repo.snapshots_lenient()?;
    for e in &damaged {
        eprintln!("error: {e}");
    }
    // Records left twice by an interrupted hold are shown once.
    let filter = a.filter.filter();
    let logical: Vec<_> = logical_snapshots(all)
        .into_iter()
        .filter(|l| filter.matches(&l.snapshot))
        .collect();
    for l in logical.iter().filter(|l| l.records.len() > 1) {
        eprintln!(
            "note: snapshot {} is stored as {} records after an interrupted hold or release; `cairn hold {}` (or `--release`) leaves one",
            l.id.short(),
            l.records.len(),
            l.id.short()
        );
    }
    let snaps: Vec<_> = logical.into_iter().map(|l| (l.id, l.snapshot)).collect();
    if g.json {
        let v: Vec<serde_json::Value> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "short_id": id.short(),
                    "time": s.time.to_rfc3339(),
                    "hostname": s.hostname,
                    "username": s.username,
                    "paths": s.paths,
                    "tags": s.tags,
                    "parent": s.parent.map(|p| p.to_hex()),
                    "tree": s.tree.to_hex(),
                    "partial": s.partial,
                    "hold": s.hold,
                    "original": s.original.map(|o| o.to_hex()),
                    "program_version": s.program_version,
                    "summary": s.summary,
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&v)?);
        return Ok(if damaged.is_empty() {
            exit::OK
        } else {
            exit::FATAL
        });
    }
    println!(
        "{:<10} {:<20} {:<16} {:<16} {:>10}  Paths",
        "ID", "Time", "Host", "Tags", "Size"
    );
    for (id, s) in &snaps {
        println!(
            "{:<10} {:<20} {:<16} {:<16} {:>10}  {}{}{}",
            id.short(),
            timefmt::show(&s.time),
            s.hostname,
            s.tags.join(","),
            s.summary
                .as_ref()
                .map(|x| bytes(x.total_bytes))
                .unwrap_or_default(),
            s.paths.join(" "),
            if s.partial { " (partial)" } else { "" },
            if s.hold { " (held)" } else { "" }
        );
    }
    println!("{} snapshots", snaps.len());
    Ok(if damaged.is_empty() {
        exit::OK
    } else {
        exit::FATAL
    })
}
