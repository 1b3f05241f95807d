//! `cairn snapshots`

use anyhow::Result;
use cairn_engine::id::Id;
use cairn_engine::lineage::logical_snapshots;
use cairn_engine::retention::{GroupBy, group_snapshots};
use cairn_engine::snapshot::Snapshot;

use crate::common::{Global, bytes, count};
use crate::snapshot_arg::SourceFilter;
use crate::{exit, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    filter: SourceFilter,
    /// List snapshots in groups sharing these (comma list of host, paths,
    /// tags)
    #[arg(long, value_name = "GROUPS", default_value = "", value_parser = str::parse::<GroupBy>)]
    group_by: GroupBy,
    /// Only the newest N snapshots of each host and set of paths
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    latest: Option<u64>,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let (all, mut damaged) = repo.snapshots_lenient()?;
    // One gone since it was listed was forgotten meanwhile (a `watch
    // --keep-*` or a cron job; listing takes no lock): a monitor polling
    // this failed now and then.
    damaged.retain(|e| !matches!(e, cairn_engine::Error::Missing(_)));
    for e in &damaged {
        crate::warn!("error: {e}");
    }
    // Records left twice by an interrupted hold are shown once.
    let filter = a.filter.filter();
    let trees: std::collections::HashMap<_, _> = all.iter().map(|(id, s)| (*id, s.tree)).collect();
    let logical: Vec<_> = logical_snapshots(all)
        .into_iter()
        .filter(|l| filter.matches(&l.snapshot))
        .collect();
    for l in logical.iter().filter(|l| l.records.len() > 1) {
        crate::warn!(
            "note: snapshot {} is stored as {} records (after an interrupted tag, hold, release or rewrite, or a repair kept beside the damaged record); `{}` leaves one and keeps it as shown; a damaged record that `repair snapshots` named goes alone with `cairn forget ID`",
            l.id.short(),
            l.records.len(),
            // Whatever stands now: a plain `hold` would put a hold on a
            // snapshot an interrupted `tag` left without one.
            if l.snapshot.hold {
                format!("cairn hold {}", l.id.short())
            } else {
                format!("cairn hold --release {}", l.id.short())
            }
        );
        // Named one by one: such a record is not shown, and only `check`
        // tells a damaged one from one that another record, written with
        // the key, claims to replace.
        for r in l
            .records
            .iter()
            .filter(|r| trees.get(*r) != Some(&l.snapshot.tree))
        {
            crate::warn!(
                "note: record {} of snapshot {} holds other content than the one shown (a damaged record beside its repair, a leftover of an interrupted rewrite, or a real snapshot that a forged record claims: `cairn check` tells); `cairn restore {}` reads it, `cairn forget {}` removes it alone",
                r.short(),
                l.id.short(),
                r.short(),
                r.short()
            );
        }
    }
    let snaps: Vec<_> = logical.into_iter().map(|l| (l.id, l.snapshot)).collect();
    let by = a.group_by;
    let grouped = by.host || by.paths || by.tags;
    let groups = group_snapshots(snaps, by, a.latest.map(|n| n as usize));
    let code = if damaged.is_empty() {
        exit::OK
    } else {
        exit::FATAL
    };
    if g.json {
        let v: Vec<serde_json::Value> = if grouped {
            groups
                .iter()
                .map(|(key, snaps)| {
                    serde_json::json!({ "group_key": key, "snapshots": json_list(snaps) })
                })
                .collect()
        } else {
            groups.iter().flat_map(|(_, s)| json_list(s)).collect()
        };
        println!("{}", serde_json::to_string(&v)?);
        return Ok(code);
    }
    let mut total = 0;
    for (key, snaps) in &groups {
        if grouped {
            crate::say!("snapshots for {key}:");
        }
        table(snaps);
        total += snaps.len();
        if grouped {
            crate::say!();
        }
    }
    crate::say!("{}", count(total as u64, "snapshot"));
    Ok(code)
}

/// The JSON form of each snapshot.
fn json_list(snaps: &[(Id, Snapshot)]) -> Vec<serde_json::Value> {
    snaps
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
                "former": s.former.iter().map(Id::to_hex).collect::<Vec<_>>(),
                "program_version": s.program_version,
                "summary": s.summary,
            })
        })
        .collect()
}

/// The table of snapshots, one per line.
fn table(snaps: &[(Id, Snapshot)]) {
    crate::say!(
        "{:<10} {:<20} {:<16} {:<16} {:>10}  Paths",
        "ID",
        "Time",
        "Host",
        "Tags",
        "Size"
    );
    for (id, s) in snaps {
        // Cells escaped already, so padded to what is shown.
        crate::output::say_cells(&format!(
            "{:<10} {:<20} {:<16} {:<16} {:>10}  {}{}{}",
            id.short(),
            timefmt::show(&s.time),
            crate::output::cell(&s.hostname),
            crate::output::cell(&s.tags.join(",")),
            s.summary
                .as_ref()
                .map(|x| bytes(x.total_bytes))
                .unwrap_or_default(),
            crate::output::cell(&s.paths.join(" ")),
            if s.partial { " (partial)" } else { "" },
            if s.hold { " (held)" } else { "" }
        ));
    }
}
