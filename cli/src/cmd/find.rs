//! `cairn find`

use anyhow::Result;
use cairn_engine::Id;
use cairn_engine::find::{FindOptions, find};
use cairn_engine::listing::NodeInfo;
use cairn_engine::tree::Timestamp;

use crate::common::Global;
use crate::output::{Output, long_line};
use crate::snapshot_arg::SourceFilter;
use crate::{exit, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Glob patterns: matched against names, or against paths when they contain '/'
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Snapshot to search: ID, unique prefix or `latest` (repeatable; default: all)
    #[arg(short = 's', long = "snapshot")]
    snapshots: Vec<String>,
    /// Ignore case in patterns
    #[arg(short = 'i', long)]
    ignore_case: bool,
    /// Long listing: permissions, owner, size, modification time
    #[arg(short, long)]
    long: bool,
    /// Sizes in human-readable units (with --long)
    #[arg(long)]
    human_readable: bool,
    /// Only entries modified at or after this time (a bare date is its start)
    #[arg(short = 'O', long, value_parser = crate::common::parse_time_from)]
    oldest: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Only entries modified at or before this time (a bare date is its end, a time without fractions the end of its second)
    #[arg(short = 'N', long, value_parser = crate::common::parse_time)]
    newest: Option<chrono::DateTime<chrono::FixedOffset>>,
    #[command(flatten)]
    filter: SourceFilter,
}

fn timestamp(t: Option<chrono::DateTime<chrono::FixedOffset>>) -> Option<Timestamp> {
    t.map(|t| Timestamp {
        sec: t.timestamp(),
        nsec: t.timestamp_subsec_nanos(),
    })
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let opts = FindOptions {
        patterns: a.patterns.clone(),
        ignore_case: a.ignore_case,
        snapshots: a.snapshots.clone(),
        filter: a.filter.filter(),
        oldest: timestamp(a.oldest),
        newest: timestamp(a.newest),
        newest_first: false,
    };
    // Before the password is asked for: exit 2, nothing done.
    cairn_engine::find::check_patterns(&a.patterns, a.ignore_case)
        .map_err(|e| exit::usage(e.to_string()))?;
    let repo = g.open()?;
    // As dump: keeps prune from deleting packs while they are read.
    let _lock = g.read_lock(&repo)?;
    let mut out = Output::stdout();
    // Matches come snapshot by snapshot; a new ID opens a new group.
    let mut current: Option<(Id, u64)> = None;
    let close_json = |out: &mut Output, cur: &Option<(Id, u64)>| -> cairn_engine::Result<()> {
        if let Some((id, hits)) = cur {
            write!(out, "],\"hits\":{hits},\"snapshot\":\"{id}\"}}")?;
        }
        Ok(())
    };
    if g.json {
        out.bytes(b"[")?;
    }
    let summary = find(&repo, &opts, &mut |m| {
        let new_group = current.as_ref().is_none_or(|(id, _)| id != m.snapshot_id);
        if g.json {
            if new_group {
                let first = current.is_none();
                close_json(&mut out, &current)?;
                if !first {
                    out.bytes(b",")?;
                }
                out.bytes(b"{\"matches\":[")?;
                current = Some((*m.snapshot_id, 0));
            }
            let (_, hits) = current.as_mut().expect("group opened above");
            if *hits > 0 {
                out.bytes(b",")?;
            }
            *hits += 1;
            out.json(&NodeInfo::new(m.path, m.node))
        } else {
            if new_group {
                if current.is_some() {
                    out.engine_line("")?;
                }
                out.engine_line(&format!(
                    "Found matching entries in snapshot {} from {}",
                    m.snapshot_id.short(),
                    timefmt::show(&m.snapshot.time)
                ))?;
                current = Some((*m.snapshot_id, 0));
            }
            if a.long {
                out.engine_path_line(&long_line(m.path, m.node, a.human_readable))
            } else {
                out.engine_path_line(m.path)
            }
        }
    })?;
    if g.json {
        close_json(&mut out, &current)?;
        out.bytes(b"]\n")?;
    } else if !g.quiet && summary.matches == 0 {
        crate::warn!(
            "no matches in {} snapshot{}",
            summary.snapshots,
            if summary.snapshots == 1 { "" } else { "s" }
        );
    }
    out.finish()?;
    for (id, why) in &summary.incomplete {
        crate::warn!(
            "error: snapshot {} searched only in part: {why}",
            id.short()
        );
    }
    if !summary.incomplete.is_empty() {
        crate::warn!(
            "{} of {} snapshots could not be searched in full (`cairn check` tells what is damaged)",
            summary.incomplete.len(),
            summary.snapshots
        );
        return Ok(exit::FATAL);
    }
    Ok(crate::common::passed_over_exit(&repo, "searched"))
}
