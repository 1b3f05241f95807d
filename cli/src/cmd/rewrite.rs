//! `cairn rewrite [SNAPSHOT...] --exclude PATTERN...`

use std::path::PathBuf;

use anyhow::Result;
use cairn_engine::exclude::read_pattern_file;
use cairn_engine::rewrite::{RewriteOptions, rewrite};

use crate::common::{Global, bytes, count, print_json};
use crate::exit;
use crate::snapshot_arg::SourceFilter;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshots to rewrite (IDs, unique prefixes or `latest`); without
    /// them, every snapshot (narrowed by --host, --path, --tag)
    snapshots: Vec<String>,
    /// Remove paths matching this pattern (gitignore syntax over the
    /// absolute path in the snapshot, as `restore --exclude`; repeatable)
    #[arg(long, short = 'e')]
    exclude: Vec<String>,
    /// Read exclude patterns from this file, one per line (repeatable)
    #[arg(long = "exclude-file")]
    exclude_file: Vec<PathBuf>,
    /// Like --exclude, ignoring case
    #[arg(long)]
    iexclude: Vec<String>,
    /// Like --exclude-file, ignoring case
    #[arg(long)]
    iexclude_file: Vec<PathBuf>,
    /// Show what would be removed, and write nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Prune afterwards with --max-unused 0: every pack holding removed
    /// data is repacked, so none of it is left readable
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    filter: SourceFilter,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let mut exclude = a.exclude;
    for f in &a.exclude_file {
        exclude.extend(read_pattern_file(f)?);
    }
    let mut iexclude = a.iexclude;
    for f in &a.iexclude_file {
        iexclude.extend(read_pattern_file(f)?);
    }
    if exclude.is_empty() && iexclude.is_empty() {
        // Nothing to act on: before the password is asked for.
        return Err(crate::exit::usage(
            "rewrite needs at least one --exclude or --iexclude pattern",
        ));
    }
    crate::common::check_path_patterns(&[], &exclude, &[], &iexclude)?;
    let repo = g.open()?;
    let opts = RewriteOptions {
        snapshots: a.snapshots,
        filter: a.filter.filter(),
        exclude,
        iexclude,
        dry_run: a.dry_run,
    };
    let r = rewrite(&repo, &opts)?;
    // Said even with -q: the snapshot's recorded size is then too large.
    if !g.json {
        for w in &r.rewritten {
            for u in &w.uncounted {
                crate::warn!(
                    "snapshot {}: {u} {}, but a listing in it was lost: what it held is not \
                     counted in what was removed",
                    &w.old[..8],
                    if r.dry_run {
                        "would be removed"
                    } else {
                        "was removed"
                    }
                );
            }
        }
    }
    if g.json {
        print_json(&r)?;
    } else if !g.quiet || r.dry_run {
        for w in &r.rewritten {
            for p in &w.removed {
                crate::say!(
                    "{} {}: {p}",
                    if r.dry_run { "would remove" } else { "removed" },
                    &w.old[..8]
                );
            }
            match &w.new {
                Some(new) if *new == w.old => crate::say!(
                    "snapshot {}: {} record(s) left by an interrupted rewrite {}deleted",
                    &w.old[..8],
                    w.records_deleted.len(),
                    if r.dry_run { "would be " } else { "" }
                ),
                Some(new) => crate::say!(
                    "snapshot {} rewritten as {}: {}, {} removed",
                    &w.old[..8],
                    &new[..8],
                    count(w.files_removed, "file"),
                    bytes(w.bytes_removed)
                ),
                None => crate::say!(
                    "snapshot {} would be rewritten: {}, {} removed",
                    &w.old[..8],
                    count(w.files_removed, "file"),
                    bytes(w.bytes_removed)
                ),
            }
        }
        crate::say!(
            "{} of {} {}rewritten{}",
            r.rewritten.len(),
            count(r.snapshots as u64, "snapshot"),
            if r.dry_run { "would be " } else { "" },
            if r.rewritten.is_empty() || r.dry_run || a.prune {
                ""
            } else {
                "; run `cairn prune --max-unused 0` to delete the removed data"
            }
        );
    }
    if a.prune {
        // Plain prune keeps packs that are mostly in use, removed blobs and
        // all. Also when nothing was rewritten: the same command run again
        // after it was killed in its prune finishes the prune.
        super::prune::prune_after(g, &repo, a.dry_run, 0.0, r.dry_run_changes)?;
    }
    // Said even with -q and --json: the paths are still in the repository.
    for k in &r.records_kept {
        let (snap, rec) = (&k.snapshot[..8], &k.record[..8]);
        if k.beside_repair {
            crate::warn!(
                "snapshot {snap} is a repair (`repair snapshots`), and its record {rec}, kept \
                 beside it, still holds paths these patterns match: it may hold what the \
                 repair lost (or be a real snapshot that a forged repair claims: `cairn check` \
                 tells), so it is not rewritten; `cairn ls {rec}` shows it, `cairn forget {rec}` \
                 removes it alone"
            );
            continue;
        }
        crate::warn!(
            "snapshot {snap}: its record {rec} still holds paths these patterns match and is \
             kept: it is not this snapshot's content once rewritten (a leftover of a rewrite \
             with other patterns that was interrupted, or a real snapshot whose lineage a forged \
             record claims: `cairn check` tells); `cairn ls {rec}` shows it; a leftover goes \
             with the rewrite run again with the interrupted one's patterns too, or alone with \
             `cairn forget {rec}`"
        );
    }
    Ok(if r.records_kept.is_empty() {
        exit::OK
    } else {
        exit::FATAL
    })
}
