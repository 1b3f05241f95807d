//! `cairn check`

use anyhow::Result;
use cairn_engine::activity::Activity;
use cairn_engine::check::{AFFECTED_PER_SNAPSHOT, CheckOptions, CheckProgress, Subset, check};
use cairn_engine::overview::record_check;

use crate::common::{Global, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Read every pack and verify every blob
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read and verify only a subset: N/M, P% or a size (e.g. 1/7, 10%, 2G)
    #[arg(long, value_parser = checked_subset)]
    read_data_subset: Option<String>,
}

/// A `--read-data-subset` value as written (reports quote it), checked
/// with the command line.
fn checked_subset(s: &str) -> cairn_engine::Result<String> {
    Subset::parse(s).map(|_| s.to_string())
}

/// Feeds the bytes of verified packs to the published activity.
struct Progress(Activity);

impl CheckProgress for Progress {
    fn pack_done(&self, bytes: u64) {
        self.0.add_bytes(bytes);
    }
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open_uncached()?;
    let subset = a
        .read_data_subset
        .as_deref()
        .map(Subset::parse)
        .transpose()?;
    let lock = g.read_lock(&repo)?;
    let read = match (&a.read_data_subset, a.read_data, subset) {
        // Part N/M as one spelling: a failure of `3 / 7` is covered by `3/7`.
        (_, _, Some(Subset::Part(n, m))) => format!("{n}/{m}"),
        (Some(s), _, _) => s.clone(),
        (None, true, _) => "all".to_string(),
        (None, false, _) => "none".to_string(),
    };
    let r = match check(
        &repo,
        &CheckOptions {
            read_data: a.read_data,
            subset,
        },
        &Progress(Activity::start(&repo, "check")),
    ) {
        Ok(r) => r,
        Err(e @ cairn_engine::Error::Interrupted) => return Err(e.into()),
        Err(e) => {
            // A check that could not run is a failed check, for monitors
            // too: they kept showing the last one that passed.
            let failed = cairn_engine::check::CheckReport {
                unreadable: vec![e.to_string()],
                ..Default::default()
            };
            record_check(&repo, &failed, &read);
            return Err(e.into());
        }
    };
    // What a prune did after taking the lock from a check (a laptop asleep
    // past its stale age) is no damage: not reported, nor recorded.
    if !r.ok()
        && let Some(e) = crate::common::lock_lost(lock.as_ref())
    {
        return Err(e.into());
    }
    record_check(&repo, &r, &read);
    if g.json {
        // `ok` too: a check that could not read everything has no errors
        // but did not pass.
        #[derive(serde::Serialize)]
        struct Out<'a> {
            ok: bool,
            #[serde(flatten)]
            report: &'a cairn_engine::check::CheckReport,
        }
        print_json(&Out {
            ok: r.ok(),
            report: &r,
        })?;
    } else {
        for w in &r.warnings {
            crate::warn!("warning: {w}");
        }
        for e in &r.errors {
            crate::warn!("error: {e}");
        }
        for e in &r.unreadable {
            crate::warn!("error: could not be read: {e}");
        }
        if !r.affected_snapshots.is_empty() {
            // Whole only as far as their packs were read.
            // Missing packs cannot be read: every pack there was.
            let others = if r.packs_read + r.packs_missing >= r.packs {
                "the others restore whole"
            } else {
                "the others hold nothing of those packs; the packs not read were not verified"
            };
            crate::warn!(
                "affected snapshots ({} of {}; {others}):",
                r.affected_snapshots.len(),
                r.snapshots
            );
            for a in &r.affected_snapshots {
                crate::warn!("  {}: {} affected paths", &a.snapshot[..8], a.paths);
            }
            let all: u64 = r.affected_snapshots.iter().map(|a| a.paths).sum();
            crate::warn!(
                "affected snapshot paths ({}):",
                if all > r.affected.len() as u64 {
                    format!(
                        "{} of {all}, at most {AFFECTED_PER_SNAPSHOT} per snapshot",
                        r.affected.len()
                    )
                } else {
                    "all".to_string()
                }
            );
            for p in &r.affected {
                crate::warn!("  {p}");
            }
        }
        if !r.misnamed_dictionaries.is_empty() {
            // Before any repair: `repair packs` would drop the blobs that
            // need them.
            crate::warn!(
                "dictionary files renamed or copied over, their bytes intact: {}. Give each \
                 its own name back (from a copy of dicts/ if one was overwritten), then check \
                 again (docs/recovery.md, section 7)",
                r.misnamed_dictionaries.join(", ")
            );
        } else if !r.salvageable_packs.is_empty() {
            // A missing dictionary may come back from a copy; once `repair
            // packs` dropped its blobs, it no longer brings them back.
            let first = if r.missing_dictionaries.is_empty() {
                String::new()
            } else {
                crate::warn!(
                    "dictionary files missing: {}. Put each back from a copy of the \
                     repository's dicts/ first, then check again: the blobs compressed with \
                     them read again (docs/recovery.md, section 7)",
                    r.missing_dictionaries.join(", ")
                );
                "only if no copy has them: ".into()
            };
            let short: Vec<&str> = r.salvageable_packs.iter().map(|p| &p[..8]).collect();
            let lost = if r.missing_dictionaries.is_empty() {
                ""
            } else {
                "--dictionaries-lost "
            };
            crate::warn!(
                "{first}to keep what still reads in the damaged packs and drop them: cairn repair \
                 packs {lost}{} (docs/recovery.md, section 7)",
                short.join(" ")
            );
        }
        if !g.quiet {
            crate::say!(
                "checked {} snapshots, {} trees, {} data blobs, {} packs, {} audit records{}",
                r.snapshots,
                r.trees,
                r.data_blobs,
                r.packs,
                r.audit_records,
                if a.read_data || a.read_data_subset.is_some() {
                    format!(" ({} packs read)", r.packs_read)
                } else {
                    String::new()
                }
            );
        }
        if r.ok() {
            if !g.quiet {
                crate::say!("no errors were found");
            }
        } else if !r.errors.is_empty() {
            // Only damaged packs get a command of their own above; the
            // runbook takes every kind of damage in order.
            crate::warn!(
                "{} errors found: the repository is damaged (docs/recovery.md, section 7, says \
                 what to do, in order)",
                r.errors.len()
            );
        }
        if !r.unreadable.is_empty() {
            crate::warn!(
                "{} objects could not be read from the store, so they were not verified \
                 (not known to be damaged): run the check again when the store answers, or \
                 as a user who may read them",
                r.unreadable.len()
            );
        }
    }
    Ok(if r.ok() { exit::OK } else { exit::FATAL })
}
