//! `cairn restore`

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Result;
use cairn_engine::activity::Activity;
use cairn_engine::exclude::read_pattern_file;
use cairn_engine::restorer::{Overwrite, RestoreOptions, restore};

use crate::common::{Global, bytes, count, print_json};
use crate::snapshot_arg::{
    Holding, SourceFilter, other_sources, select_holding, snapshot_path, split_spec,
};
use crate::{exit, progress};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot ID, unique prefix or `latest`, optionally followed by
    /// `:SUBPATH` (with --at, only `:SUBPATH`)
    #[arg(required_unless_present = "at")]
    snapshot: Option<OsString>,
    /// Directory to restore into
    #[arg(long, short = 't')]
    target: PathBuf,
    /// Instead of a snapshot ID: the newest snapshot at or before this time
    #[arg(long, value_parser = crate::common::checked_time)]
    at: Option<String>,
    #[command(flatten)]
    source: SourceFilter,
    /// Restore owners by numeric ID (ignore the recorded user and group names)
    #[arg(long)]
    numeric_ids: bool,
    /// Only restore paths matching this pattern (repeatable). Below a
    /// subpath (ID:/sub), /NAME is anchored at the subpath; a pattern that
    /// starts with the subpath itself is read as a full path
    #[arg(long, short = 'i')]
    include: Vec<String>,
    /// Do not restore paths matching this pattern (repeatable; anchored as
    /// for --include)
    #[arg(long, short = 'e')]
    exclude: Vec<String>,
    /// Like --include, ignoring case
    #[arg(long)]
    iinclude: Vec<String>,
    /// Like --exclude, ignoring case
    #[arg(long)]
    iexclude: Vec<String>,
    /// Read include patterns from a file, one per line (`#` comments,
    /// `$VAR` expanded; repeatable)
    #[arg(long)]
    include_file: Vec<PathBuf>,
    /// Read exclude patterns from a file, as --include-file
    #[arg(long)]
    exclude_file: Vec<PathBuf>,
    /// Like --include-file, ignoring case
    #[arg(long)]
    iinclude_file: Vec<PathBuf>,
    /// Like --exclude-file, ignoring case
    #[arg(long)]
    iexclude_file: Vec<PathBuf>,
    /// Read every restored file back and check it against the snapshot
    #[arg(long)]
    verify: bool,
    /// What to do with existing files: always; if-changed (keep those that
    /// hold the snapshot's content); if-newer (keep those at least as new,
    /// by mtime, as the snapshot's, as in restic); never
    #[arg(long, value_enum, default_value = "if-changed")]
    overwrite: OverwriteArg,
    /// Remove files in the target that are not in the snapshot (sockets,
    /// which backups do not store, are left alone)
    #[arg(long)]
    delete: bool,
    /// Update existing files in place, writing only the chunks that differ
    /// (no room needed for a second copy; a failed restore leaves such a
    /// file partly updated: run it again). Files it may not be used for
    /// (other hard links, owner, mode, ACL: see docs/recovery.md) are
    /// replaced as usual, with a warning
    #[arg(long)]
    in_place: bool,
    /// Write all-zero blocks too instead of leaving them holes, so that
    /// preallocated files (databases, VM images) get their room back
    /// (swap files are always written in full)
    #[arg(long)]
    no_sparse: bool,
    /// Show what would be restored without writing anything
    #[arg(long, short = 'n')]
    dry_run: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum OverwriteArg {
    Always,
    IfChanged,
    IfNewer,
    Never,
}

/// `patterns` and those read from `files`.
fn with_files(mut patterns: Vec<String>, files: &[PathBuf]) -> Result<Vec<String>> {
    for f in files {
        patterns.extend(read_pattern_file(f)?);
    }
    Ok(patterns)
}

pub fn run(g: &Global, mut a: Args) -> Result<i32> {
    // Read before the repository opens: a missing file fails at once.
    a.include = with_files(std::mem::take(&mut a.include), &a.include_file)?;
    a.exclude = with_files(std::mem::take(&mut a.exclude), &a.exclude_file)?;
    a.iinclude = with_files(std::mem::take(&mut a.iinclude), &a.iinclude_file)?;
    a.iexclude = with_files(std::mem::take(&mut a.iexclude), &a.iexclude_file)?;
    crate::common::check_path_patterns(&a.include, &a.exclude, &a.iinclude, &a.iexclude)?;
    let (spec, subpath) = match &a.snapshot {
        Some(s) => split_spec(s)?,
        None => (None, None),
    };
    let spec = spec.map(str::to_string);
    match (&spec, &a.at) {
        (Some(_), Some(_)) => {
            return Err(exit::usage(
                "give either a snapshot or --at, not both (a subpath goes with --at as :SUBPATH)",
            ));
        }
        (None, None) => {
            return Err(exit::usage(
                "give a snapshot (ID, prefix or `latest`) or --at TIME",
            ));
        }
        _ => {}
    }
    // A file an in-place update left half done has the mtime of now, which
    // the next `if-newer` run would keep as newer than the snapshot.
    if a.in_place && matches!(a.overwrite, OverwriteArg::IfNewer) {
        return Err(exit::usage(
            "--in-place cannot be used with --overwrite if-newer: a file left partly updated \
             by a failed or interrupted run looks newer than the snapshot, and the next run \
             would keep it",
        ));
    }
    let mut repo = g.open()?;
    // Stopped between blobs, a restore puts back the owner and mode of the
    // directories it took over (as root) before it exits. Caught from the
    // lock on: a stop while the snapshot is chosen (reading every record,
    // seconds on S3) killed it there, and its lock stayed for half an hour.
    let stop = exit::stop_flag(&[
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?;
    // Calls retrying against a server that fails them stop on it too.
    cairn_engine::child::stop_with(stop.clone());
    // A stop ends a wait for the lock (--retry-lock) too.
    repo.set_lock_wait(g.lock_wait_until(&stop));
    // A shared lock keeps prune from deleting packs while they are read.
    let lock = g.read_lock(&repo)?;
    // With --at, the newest snapshot that holds what is asked for: the
    // subpath, and one of the --include paths when they are plain paths
    // (a pattern cannot say which source it means).
    let plain = |p: &String| p.starts_with('/') && !p.contains(['*', '?', '[', '{', '\\']);
    let holding = Holding {
        all: subpath
            .map(snapshot_path)
            .filter(|p| p != "/")
            .into_iter()
            .collect(),
        // Below a subpath, includes may be written relative to it.
        any: if subpath.is_none() && a.iinclude.is_empty() && a.include.iter().all(plain) {
            a.include.clone()
        } else {
            Vec::new()
        },
    };
    let (id, snap) = select_holding(&repo, spec.as_deref(), a.at.as_deref(), &a.source, &holding)?;
    // --delete makes the target match the snapshot: chosen among sources
    // by `latest` or --at, the newest might be a wider one that excluded
    // what a narrower one holds (`/` without `/home/ann`, beside `/home`;
    // or another host's), and --delete would remove it with exit 0.
    if a.delete && spec.as_deref().is_none_or(|s| s == "latest") {
        let others = other_sources(&repo, a.at.as_deref(), &a.source, &holding, &snap)?;
        if !others.is_empty() {
            return Err(exit::usage(format!(
                "--delete with {}: snapshots of more than one source hold what is asked for \
                 (chose {} [{}]; also {}), and one may hold what another left out; give the \
                 snapshot's ID (or --host/--path/--tag naming one source: --path keeps every \
                 source that includes the path, so where sources share it only the ID does)",
                if a.at.is_some() { "--at" } else { "latest" },
                snap.hostname,
                snap.paths.join(" "),
                others.join(", ")
            )));
        }
    }
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(cairn_engine::Error::Interrupted.into());
    }
    let show = progress::enabled(g.quiet, g.json);
    // What the snapshot's summary counted is what is restored only when
    // all of it is.
    let whole = subpath.is_none()
        && [&a.include, &a.exclude, &a.iinclude, &a.iexclude]
            .iter()
            .all(|p| p.is_empty());
    let totals = snap.summary.as_ref().filter(|_| whole).map(|s| {
        (
            s.files_new + s.files_changed + s.files_unmodified,
            s.total_bytes,
        )
    });
    let total = totals.map(|(_, bytes)| bytes);
    let p = progress::Restore {
        bar: progress::bytes_bar(show, total, "restore"),
        activity: Activity::start_on(&repo, "restore", Some(&id), total),
        stop,
        done: Default::default(),
    };
    let status = progress::restore_status(&p, totals, g.json && !g.quiet);
    let opts = RestoreOptions {
        target: a.target.clone(),
        subpath: subpath.map(|s| PathBuf::from(OsStr::from_bytes(s))),
        numeric_ids: a.numeric_ids,
        include: a.include,
        exclude: a.exclude,
        iinclude: a.iinclude,
        iexclude: a.iexclude,
        verify: a.verify,
        overwrite: match a.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::IfNewer => Overwrite::IfNewer,
            OverwriteArg::Never => Overwrite::Never,
        },
        delete: a.delete,
        dry_run: a.dry_run,
        in_place: a.in_place,
        dense: a.no_sparse,
        scratch: false,
    };
    let r = restore(&repo, &snap, &opts, &p)
        .map_err(|e| crate::common::unless_lock_lost(lock.as_ref(), e, "restore"))?;
    status.finish();
    let include: Vec<&String> = opts.include.iter().chain(&opts.iinclude).collect();
    // A pattern that matches nothing is most often a path written another
    // way than the snapshot holds it: said, not left to an empty target,
    // and not exit 0, which a scripted restore test took for a pass (nor
    // under a line saying the snapshot was restored). Entries that matched
    // and failed are errors, told below.
    let matched_nothing = !include.is_empty()
        && r.errors == 0
        && r.files + r.files_skipped + r.others + r.others_kept + r.dirs == 0;
    p.bar.finish_and_clear();
    if g.json {
        print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": id.to_hex(),
            // A name that is not UTF-8 is shown as the summary shows it
            // (serde_json refuses it, and the restore ended in a panic).
            "target": a.target.to_string_lossy(),
            "dry_run": a.dry_run,
            "files": r.files,
            "files_skipped": r.files_skipped,
            "dirs": r.dirs,
            "others": r.others,
            "others_kept": r.others_kept,
            "bytes": r.bytes,
            "bytes_skipped": r.bytes_skipped,
            "deleted": r.deleted,
            "verified": r.verified,
            "errors": r.errors,
            "warnings": r.warnings,
            // The lines of `warnings` that are errors, one per entry.
            "failures": r.failures,
            "would_delete": r.would_delete,
        }))?;
    } else if (!g.quiet || a.dry_run) && !matched_nothing {
        // A dry run's report is what it is asked for: said under -q too,
        // with each entry --delete would remove (a directory for all below
        // it), so that what it would take is seen before it is gone.
        for p in &r.would_delete {
            crate::say!("would delete {p}");
        }
        crate::say!(
            "{} snapshot {} to {}: {} ({} already there), {}, {}{}{}{}",
            if a.dry_run {
                "would restore"
            } else {
                "restored"
            },
            id.short(),
            a.target.display(),
            count(r.files, "file"),
            r.files_skipped,
            count(r.dirs, "directory"),
            // Symlinks, FIFOs and devices: a restore of a link alone said 0.
            if r.others + r.others_kept > 0 {
                format!(
                    "{} (links, special files{}), ",
                    count(r.others, "other entry"),
                    if r.others_kept > 0 {
                        format!("; {} kept as they were", r.others_kept)
                    } else {
                        String::new()
                    }
                )
            } else {
                String::new()
            },
            // Bytes left in place are said too: a resumed restore that wrote
            // little is not mistaken for one that restored little.
            if r.bytes_skipped > 0 {
                format!(
                    "{} written ({} already there)",
                    bytes(r.bytes),
                    bytes(r.bytes_skipped)
                )
            } else {
                bytes(r.bytes)
            },
            if a.delete {
                let what = if a.dry_run { "to delete" } else { "deleted" };
                format!(", {} {what}", r.deleted)
            } else {
                String::new()
            },
            if a.verify {
                format!(", {} verified", r.verified)
            } else {
                String::new()
            },
        );
    }
    if matched_nothing {
        crate::warn!(
            "error: nothing in snapshot {} matched the include patterns {}{}: nothing was restored (`cairn ls {}` shows its paths)",
            id.short(),
            include
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            // What they matched may all have been excluded.
            if opts.exclude.is_empty() && opts.iexclude.is_empty() {
                ""
            } else {
                " that the exclude patterns let through"
            },
            id.short()
        );
        return Ok(exit::USAGE);
    }
    // The restore went on past each of them: everything else is there.
    if r.errors > 0 {
        // Each was named on stderr as it was met (a second list here
        // printed every failure twice).
        crate::warn!(
            "{} could not be restored, or not with all their metadata (each named above)",
            count(r.errors, "entry")
        );
        // Only data the repository did not give may be a prune's doing
        // (the target's own errors would come again).
        if r.unreadable > 0
            && let Some(e) = crate::common::lock_lost(lock.as_ref())
        {
            return Err(anyhow::Error::from(e).context(
                "the errors above came after this restore lost its lock: a prune may have \
                 moved what it was reading; run the restore again",
            ));
        }
        return Ok(exit::FATAL);
    }
    Ok(exit::OK)
}
