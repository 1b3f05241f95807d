//! `cairn forget`

use anyhow::Result;
use cairn_engine::forget::{ForgetOptions, ForgetReport, Target, forget};
use cairn_engine::retention::{Count, Decision, Duration, GroupBy, Policy};

use crate::common::{Global, count, print_json};
use crate::output::{cell, say_cells};
use crate::snapshot_arg::{SourceFilter, TagList, parse_tag_list_arg};
use crate::{exit, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshots to remove (IDs, unique prefixes or `latest`); without
    /// them, the --keep-* options decide
    snapshots: Vec<String>,
    #[command(flatten)]
    keep: KeepArgs,
    /// Apply the policy to groups of snapshots sharing these (comma list of
    /// host, paths, tags; '' for one group)
    #[arg(long, value_name = "GROUPS", default_value = "host,paths", value_parser = str::parse::<GroupBy>)]
    group_by: GroupBy,
    /// Show what would be removed, and remove nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Prune afterwards (with the default --max-unused), freeing the data of removed snapshots
    #[arg(long)]
    prune: bool,
    // With --keep-*: the policy only considers these snapshots and leaves
    // every other snapshot alone.
    #[command(flatten)]
    filter: SourceFilter,
}

/// The `--keep-*` options that `forget` and `watch` share.
#[derive(clap::Args, Debug)]
pub struct KeepArgs {
    /// Keep the N newest snapshots (`unlimited` keeps all)
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = str::parse::<Count>)]
    keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the N newest hours that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = str::parse::<Count>)]
    keep_hourly: Option<Count>,
    /// Keep the newest snapshot of each of the N newest days that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = str::parse::<Count>)]
    keep_daily: Option<Count>,
    /// Keep the newest snapshot of each of the N newest weeks (Monday to Sunday)
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = str::parse::<Count>)]
    keep_weekly: Option<Count>,
    /// Keep the newest snapshot of each of the N newest months
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = str::parse::<Count>)]
    keep_monthly: Option<Count>,
    /// Keep the newest snapshot of each of the N newest years
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = str::parse::<Count>)]
    keep_yearly: Option<Count>,
    /// Keep snapshots newer than DURATION (e.g. 1y5m7d2h) before the newest snapshot
    #[arg(long, value_name = "DURATION", value_parser = str::parse::<Duration>)]
    keep_within: Option<Duration>,
    /// Keep the newest snapshot of each hour within DURATION of the newest snapshot
    #[arg(long, value_name = "DURATION", value_parser = str::parse::<Duration>)]
    keep_within_hourly: Option<Duration>,
    /// Keep the newest snapshot of each day within DURATION
    #[arg(long, value_name = "DURATION", value_parser = str::parse::<Duration>)]
    keep_within_daily: Option<Duration>,
    /// Keep the newest snapshot of each week within DURATION
    #[arg(long, value_name = "DURATION", value_parser = str::parse::<Duration>)]
    keep_within_weekly: Option<Duration>,
    /// Keep the newest snapshot of each month within DURATION
    #[arg(long, value_name = "DURATION", value_parser = str::parse::<Duration>)]
    keep_within_monthly: Option<Duration>,
    /// Keep the newest snapshot of each year within DURATION
    #[arg(long, value_name = "DURATION", value_parser = str::parse::<Duration>)]
    keep_within_yearly: Option<Duration>,
    /// Keep snapshots that have all these tags (comma-separated; repeatable,
    /// any list matches; '' matches untagged snapshots)
    #[arg(long = "keep-tag", value_name = "TAGS", value_parser = parse_tag_list_arg)]
    keep_tags: Vec<TagList>,
}

impl KeepArgs {
    /// The policy, or `None` if no option was given; options given only
    /// as zero are a usage error (a script that lost its values).
    pub fn policy(&self) -> Result<Option<Policy>> {
        let policy = Policy {
            last: self.keep_last.unwrap_or_default(),
            hourly: self.keep_hourly.unwrap_or_default(),
            daily: self.keep_daily.unwrap_or_default(),
            weekly: self.keep_weekly.unwrap_or_default(),
            monthly: self.keep_monthly.unwrap_or_default(),
            yearly: self.keep_yearly.unwrap_or_default(),
            within: self.keep_within.unwrap_or_default(),
            within_hourly: self.keep_within_hourly.unwrap_or_default(),
            within_daily: self.keep_within_daily.unwrap_or_default(),
            within_weekly: self.keep_within_weekly.unwrap_or_default(),
            within_monthly: self.keep_within_monthly.unwrap_or_default(),
            within_yearly: self.keep_within_yearly.unwrap_or_default(),
            tags: self.keep_tags.iter().map(|t| t.0.clone()).collect(),
        };
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        let withins = [
            self.keep_within,
            self.keep_within_hourly,
            self.keep_within_daily,
            self.keep_within_weekly,
            self.keep_within_monthly,
            self.keep_within_yearly,
        ];
        let given = counts.iter().any(Option::is_some)
            || withins.iter().any(Option::is_some)
            || !self.keep_tags.is_empty();
        if given && policy.is_empty() {
            return Err(exit::usage(
                "no policy: the --keep-* options given are all 0, which keeps nothing; give at least one above 0",
            ));
        }
        Ok(given.then_some(policy))
    }
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let policy = a.keep.policy()?;
    let by_id = !a.snapshots.is_empty();
    let target = match policy {
        Some(_) if by_id => {
            return Err(exit::usage(
                "give either snapshot IDs to remove or --keep-* options, not both",
            ));
        }
        // They pick `latest` as everywhere; an ID names its snapshot alone.
        _ if by_id
            && !a.filter.filter().is_empty()
            && a.snapshots.iter().any(|s| s != "latest") =>
        {
            return Err(exit::usage(
                "--host, --path and --tag narrow `latest` or a --keep-* policy; give them without snapshot IDs",
            ));
        }
        _ if by_id => Target::Ids(a.snapshots.clone()),
        Some(policy) => Target::Policy {
            policy,
            group_by: a.group_by,
        },
        None => {
            return Err(exit::usage(
                "no policy was specified, no snapshots will be removed: give at least one --keep-* option, or the IDs of the snapshots to remove",
            ));
        }
    };
    let repo = g.open()?;
    let report = forget(
        &repo,
        &ForgetOptions {
            target: target.clone(),
            filter: a.filter.filter(),
            dry_run: a.dry_run,
            no_lock: g.no_lock,
        },
    )?;
    if g.json {
        print_json(&json_groups(&report))?;
    } else if g.quiet && !report.dry_run {
        // A summary only: nothing to say.
    } else if let Target::Policy { policy, .. } = &target {
        print_policy(g, policy, &report);
    } else {
        let verb = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for d in report.groups.iter().flat_map(|g| &g.remove) {
            crate::say!("{verb} snapshot {}", d.snapshot.id.short());
        }
        for id in &report.damaged {
            crate::say!(
                "{verb} damaged snapshot record {} (its data stays until prune)",
                id.short()
            );
        }
    }
    if a.prune && !report.damaged.is_empty() {
        // Its data is the only copy `recover` could still save: a prune in
        // the same breath would take that chance away unasked.
        crate::warn!(
            "not pruning: a damaged snapshot record was removed, and its data can still be \
             saved with `cairn recover`; run `cairn prune` once that is done or not wanted"
        );
    } else if a.prune && report.removed.is_empty() {
        // As restic: a nightly `forget --prune` that removed nothing would
        // take the exclusive lock (and hold backups off) for nothing new.
        crate::common::note(format_args!(
            "no snapshot removed: not pruning (run `cairn prune` for earlier removals)"
        ));
    } else if a.prune {
        let max_unused = cairn_engine::prune::PruneOptions::default().max_unused;
        // A dry run removed nothing: its prune counts as gone what it
        // would have removed.
        let assume = cairn_engine::prune::DryRunChanges {
            forgotten: report.removed.clone(),
            ..Default::default()
        };
        super::prune::prune_after(g, &repo, a.dry_run, max_unused, assume)?;
    }
    Ok(exit::OK)
}

fn json_groups(r: &ForgetReport) -> serde_json::Value {
    let item = |d: &Decision| {
        let s = &d.snapshot;
        serde_json::json!({
            "id": s.id.to_hex(),
            "short_id": s.id.short(),
            "time": s.time.to_rfc3339(),
            "hostname": s.hostname,
            "paths": s.paths,
            "tags": s.tags,
            "hold": s.hold,
            "reasons": d.reasons,
        })
    };
    // Records too damaged to read have no time, host or paths to show.
    let damaged = r
        .damaged
        .iter()
        .map(|id| serde_json::json!({"id": id.to_hex(), "short_id": id.short(), "damaged": true}));
    let mut groups: Vec<serde_json::Value> = r
        .groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "group_key": g.key,
                "keep": g.keep.iter().map(item).collect::<Vec<_>>(),
                "remove": g.remove.iter().map(item).collect::<Vec<_>>(),
            })
        })
        .collect();
    if let Some(serde_json::Value::Array(remove)) =
        groups.last_mut().and_then(|g| g.get_mut("remove"))
    {
        remove.extend(damaged);
    }
    serde_json::Value::Array(groups)
}

fn print_policy(g: &Global, policy: &Policy, r: &ForgetReport) {
    if !g.quiet {
        crate::say!("Applying policy: {policy}");
        for group in &r.groups {
            crate::say!("snapshots for {}:", group.key);
            if !group.keep.is_empty() {
                crate::say!("keep {}:", count(group.keep.len() as u64, "snapshot"));
                table(&group.keep, true);
            }
            if !group.remove.is_empty() {
                crate::say!("remove {}:", count(group.remove.len() as u64, "snapshot"));
                table(&group.remove, false);
            }
        }
    }
    let n = count(
        r.groups.iter().map(|g| g.remove.len() as u64).sum::<u64>(),
        "snapshot",
    );
    if r.dry_run {
        crate::say!("would remove {n} (dry run: nothing was removed)");
    } else {
        crate::say!("removed {n}");
    }
}

/// A restic-like table; a snapshot with several reasons takes several lines.
fn table(ds: &[Decision], reasons: bool) {
    let rows: Vec<[String; 4]> = ds
        .iter()
        .map(|d| {
            let s = &d.snapshot;
            [
                s.id.short(),
                timefmt::show(&s.time),
                cell(&s.hostname),
                cell(&s.tags.join(",")),
            ]
        })
        .collect();
    let width = |i: usize, head: &str| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([head.len()])
            .max()
            .unwrap_or(0)
    };
    let (wh, wt) = (width(2, "Host"), width(3, "Tags"));
    let wr = ds
        .iter()
        .flat_map(|d| d.reasons.iter().map(String::len))
        .chain(["Reasons".len()])
        .max()
        .unwrap_or(0);
    let reasons_head = if reasons {
        format!("{:<wr$}  ", "Reasons")
    } else {
        String::new()
    };
    let head = format!(
        "{:<8}  {:<19}  {:<wh$}  {:<wt$}  {reasons_head}Paths",
        "ID", "Time", "Host", "Tags"
    );
    let paths: Vec<String> = ds
        .iter()
        .map(|d| cell(&d.snapshot.paths.join(" ")))
        .collect();
    let paths_width = paths.iter().map(String::len).max().unwrap_or(0);
    let rule = "-".repeat(head.len().max(head.len() - "Paths".len() + paths_width));
    crate::say!("{head}");
    crate::say!("{rule}");
    for ((row, d), paths) in rows.iter().zip(ds).zip(&paths) {
        let first = d.reasons.first().map(String::as_str).unwrap_or("");
        let reason = if reasons {
            format!("{first:<wr$}  ")
        } else {
            String::new()
        };
        // Cells escaped already, so padded to what is shown.
        say_cells(&format!(
            "{:<8}  {:<19}  {:<wh$}  {:<wt$}  {reason}{paths}",
            row[0], row[1], row[2], row[3],
        ));
        if reasons {
            for more in d.reasons.iter().skip(1) {
                crate::say!("{:<8}  {:<19}  {:<wh$}  {:<wt$}  {more}", "", "", "", "");
            }
        }
    }
    crate::say!("{rule}");
    crate::say!("{}", count(ds.len() as u64, "snapshot"));
    crate::say!();
}
