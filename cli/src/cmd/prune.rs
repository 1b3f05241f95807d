//! `cairn prune`

use anyhow::Result;
use cairn_engine::activity::Activity;
use cairn_engine::prune::{PruneOptions, PruneProgress, prune};

use crate::common::{Global, bytes, parse_size, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Repack packs with more than this share unused (e.g. 5%, 0.1; 0:
    /// every pack holding any blob no snapshot uses)
    #[arg(long, default_value = "5%", value_parser = parse_share)]
    max_unused: f64,
    /// Report what would be freed without changing anything
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Copy at most this much live data when repacking (e.g. 500M, 0 for
    /// none): on a nearly full disk or a metered store; the rest waits for
    /// a later prune
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_repack_size: Option<u64>,
    /// Merge every pack below 80% of the target pack size when that makes
    /// fewer packs (without it, only packs below 1/25 of it are merged, once
    /// there are 10 or more of a kind: data or trees)
    #[arg(long)]
    repack_small: bool,
}

/// Parses `5%` or `0.05`. A bare number is a fraction below 1: a bare `1`
/// was taken for 100% (no repacking at all) where `1%` was meant, while `2`
/// was refused.
pub fn parse_share(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s
            .trim()
            .parse::<f64>()
            .map(|v| if v < 1.0 { v } else { f64::NAN }),
    };
    match v {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid share {s:?}: use a percentage like 5% (0%: repack every pack with unused \
             data; 100%: none) or a fraction below 1 like 0.05"
        )),
    }
}

/// Prints the phases, and publishes them for monitors.
struct Phases {
    quiet: bool,
    activity: Activity,
}

impl PruneProgress for Phases {
    fn phase(&self, name: &str) {
        self.activity.phase(name);
        if !self.quiet {
            crate::warn!("{name}");
        }
    }
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    let opts = PruneOptions {
        max_unused: a.max_unused,
        dry_run: a.dry_run,
        max_repack_bytes: a.max_repack_size,
        no_lock: g.no_lock,
        repack_small: a.repack_small,
        ..Default::default()
    };
    let r = prune(
        &repo,
        &opts,
        &Phases {
            quiet: g.quiet || g.json,
            activity: Activity::start(&repo, "prune"),
        },
    )?;
    if !a.dry_run {
        exit::done("the prune was completed".into());
    }
    print_report(g, &r)?;
    Ok(exit::OK)
}

/// Prunes after another command (`forget --prune`, `rewrite --prune`)
/// and prints the report; `max_unused` as `prune --max-unused`.
pub fn prune_after(
    g: &Global,
    repo: &cairn_engine::repository::Repository,
    dry_run: bool,
    max_unused: f64,
    assume: cairn_engine::prune::DryRunChanges,
) -> Result<()> {
    let opts = cairn_engine::prune::PruneOptions {
        dry_run,
        max_unused,
        assume,
        no_lock: g.no_lock,
        ..Default::default()
    };
    let r = cairn_engine::prune::prune(repo, &opts, &cairn_engine::prune::NoPruneProgress)?;
    if !dry_run {
        crate::exit::done("the prune was completed".into());
    }
    print_report(g, &r)
}

/// Prints a prune report (shared with `forget --prune`).
pub fn print_report(g: &Global, r: &cairn_engine::prune::PruneReport) -> Result<()> {
    if g.json {
        return print_json(r);
    }
    for m in &r.missing_packs {
        crate::warn!("warning: pack {m} is in the index but missing from the repository");
    }
    for d in &r.damaged_packs {
        crate::warn!(
            "warning: pack {d} does not have the size the index records (truncated or replaced): \
             no blob is taken from it (intact copies elsewhere, or none: see `cairn check`)"
        );
    }
    for d in &r.damaged_copies {
        crate::warn!(
            "warning: pack {d} holds a damaged copy of a blob stored twice: the intact copy is \
             kept (`cairn check --read-data` says more)"
        );
    }
    if let Some(why) = &r.temporaries_failed {
        crate::warn!("warning: not every leftover of interrupted writes was removed: {why}");
    }
    // A dry run's report is its result; a real run's is only a summary.
    if g.quiet && !r.dry_run {
        return Ok(());
    }
    let verb = if r.dry_run { "would " } else { "" };
    crate::say!(
        "{} snapshots reference {} blobs; {} blobs are unused",
        r.snapshots,
        r.used_blobs,
        r.unused_blobs
    );
    let merged = match r.small_packs_merged {
        0 => String::new(),
        n => format!(" ({n} small, merged)"),
    };
    crate::say!(
        "packs: {} kept, {verb}delete {}, {verb}repack {}{merged}, {verb}remove {} left by interrupted backups or prunes",
        r.packs_kept,
        r.packs_deleted,
        r.packs_repacked,
        r.unindexed_packs_deleted
    );
    crate::say!(
        "{}free {} (deleted {}, written {}); {} unused left in kept packs",
        verb,
        bytes(r.bytes_freed.max(0) as u64),
        bytes(r.bytes_deleted),
        bytes(r.bytes_added),
        bytes(r.unused_bytes_kept)
    );
    if r.temporaries_removed > 0 {
        crate::say!(
            "{} {} leftovers of interrupted writes (temporary files, unfinished uploads)",
            if r.dry_run { "would remove" } else { "removed" },
            r.temporaries_removed
        );
    }
    if r.packs_left_for_later > 0 {
        crate::say!(
            "{} packs worth repacking left for a later prune (--max-repack-size)",
            r.packs_left_for_later
        );
    }
    if r.packs_beyond_repack_limit > 0 {
        crate::say!(
            "{} packs worth repacking need --max-repack-size {} or more: no prune with less \
             repacks them",
            r.packs_beyond_repack_limit,
            // As the option takes it, rounded up.
            match r.repack_limit_needed {
                n if n >= 1 << 20 => format!("{}M", n.div_ceil(1 << 20)),
                n => format!("{}K", n.div_ceil(1 << 10)),
            }
        );
    }
    Ok(())
}
