//! `cairn backup`

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Result, bail};
use cairn_engine::Id;
use cairn_engine::activity::Activity;
use cairn_engine::archiver::{
    BackupOptions, BackupResult, ListFormat, StdinSource, Warmup, backup, backup_dry_run,
    backup_if_changed, read_files_from,
};
use cairn_engine::capture::postgres::backup_postgres;
use cairn_engine::exclude::{ExcludeOptions, PatternFile};
use cairn_engine::fsmeta::ChangeCheck;
use cairn_engine::repository::Repository;
use cairn_engine::schedule::{Hooks, Retention, Schedule, ScheduleEvent, Tally, run_scheduled};
use cairn_engine::snapshot::{Snapshot, Summary};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::forget::KeepArgs;
use crate::common::{Global, bytes, parse_duration, print_json};
use crate::{exit, progress};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files and directories to back up
    paths: Vec<PathBuf>,
    #[command(flatten)]
    exclude: ExcludeArgs,
    /// Read paths to back up from FILE, one per line (`-` for stdin), as
    /// restic does: lines trimmed, empty ones and `#` comments skipped,
    /// globs (`*`, `?`, `[...]` within a name) expanded unless the line
    /// names something that exists as written
    #[arg(long = "files-from")]
    files_from: Vec<PathBuf>,
    /// Read paths to back up from FILE, one per line, taken as they are
    #[arg(long = "files-from-verbatim")]
    files_from_verbatim: Vec<PathBuf>,
    /// Read NUL-separated paths to back up from FILE
    #[arg(long = "files-from-raw")]
    files_from_raw: Vec<PathBuf>,
    /// Files examined and read at once (default: twice the CPUs, at least 4)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    read_concurrency: Option<u16>,
    /// Back up standard input as one file
    #[arg(long)]
    stdin: bool,
    /// Back up the standard output of the command given after `--`
    #[arg(long, conflicts_with = "stdin")]
    stdin_from_command: bool,
    /// File name for --stdin / --stdin-from-command (default `stdin`, as
    /// in restic) or --postgres (default `<database>.sql`); a relative path
    /// (`db/app.sql`) puts it in directories of those names
    #[arg(long, value_parser = stream_filename)]
    stdin_filename: Option<String>,
    /// Store an empty stream instead of refusing it
    #[arg(long)]
    allow_empty: bool,
    /// The command for --stdin-from-command; without it, more paths (as
    /// `--` ends the options elsewhere: `cairn backup -- -name`)
    #[arg(last = true)]
    command: Vec<String>,
    /// Capture these SQLite databases consistently (online backup API,
    /// checked with quick_check) and store them at their own paths
    #[arg(long, num_args = 1.., value_name = "DBFILE")]
    sqlite: Vec<PathBuf>,
    /// Capture SQLite databases met in the paths the same way instead of
    /// copying them torn: those in use (a -wal or -journal file beside) and
    /// those changed since the parent snapshot
    #[arg(long)]
    sqlite_aware: bool,
    /// How long a SQLite capture waits for a lock another connection holds
    /// before it gives up (e.g. 30s, 5m)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "60s")]
    sqlite_lock_timeout: std::time::Duration,
    /// How long pg_dump waits for a lock another session holds on a table
    /// before the capture fails (e.g. 30s, 5m)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "60s", requires = "postgres")]
    postgres_lock_timeout: std::time::Duration,
    /// Back up the PostgreSQL database behind CONNINFO with pg_dump (plain
    /// format); committed only if pg_dump exits 0
    #[arg(long, value_name = "CONNINFO", conflicts_with_all = ["stdin", "stdin_from_command", "sqlite"])]
    postgres: Option<String>,
    /// Add a tag (repeatable; a,b adds both, as in restic)
    #[arg(long = "tag", value_delimiter = ',')]
    tags: Vec<String>,
    /// Record this host name instead of the machine's (empty: the
    /// machine's, as restic does)
    #[arg(long)]
    host: Option<String>,
    /// Record this time instead of now ("YYYY-MM-DD HH:MM:SS", local time; a bare date is its start)
    #[arg(long, value_parser = crate::common::parse_snapshot_time)]
    time: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Snapshot to compare against for change detection (default: the newest
    /// of the same host and paths; with --time, the newest taken by then)
    #[arg(long)]
    parent: Option<String>,
    /// Read every file, even those that look unchanged (atimes are still
    /// kept as the parent recorded them where nothing else changed: see --atime)
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    change: ChangeArgs,
    /// Record every entry's access time as it is now. By default an entry
    /// unchanged since the parent snapshot but for its atime (read or
    /// listed since) keeps the atime recorded there, so that reading alone
    /// makes no new trees
    #[arg(long)]
    atime: bool,
    /// Write no snapshot if nothing changed since the last one of these
    /// paths (the new root tree equals the parent's; a partial run, or a
    /// clean one after a partial parent, is always written)
    #[arg(long, conflicts_with_all = ["stdin", "stdin_from_command", "postgres"])]
    skip_if_unchanged: bool,
    /// Do everything but write: read, chunk and compress the sources and
    /// report what would be added; store nothing, write no snapshot
    #[arg(long, short = 'n', conflicts_with_all = ["postgres", "skip_if_unchanged", "schedule"])]
    dry_run: bool,
    /// List each regular file as it is taken: `new` or `modified` (read and
    /// stored); given twice (`-vv`), `unchanged` ones too. With --json, as
    /// restic's `verbose_status` lines
    #[arg(long, short = 'v', action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Keep running and back up on a schedule: an interval (`15m`, `6h`:
    /// the first run at once; at least 1s) or a cron expression in local time
    /// (`"0 3 * * *"`; 6 fields with seconds first); a failed run is
    /// reported and the schedule goes on; SIGINT or SIGTERM stops after the
    /// run under way
    #[arg(long, value_name = "SPEC", conflicts_with_all = ["stdin", "time", "parent"], value_parser = Schedule::parse)]
    schedule: Option<Schedule>,
    /// With --schedule: after each run, forget the snapshots of its host
    /// and paths that this policy does not keep
    #[command(flatten)]
    keep: KeepArgs,
    /// With --schedule: prune after a run, at most this often
    #[arg(long, value_parser = parse_duration, requires = "schedule")]
    prune_every: Option<Duration>,
    /// With --schedule: run this shell command after each run that
    /// succeeded (CAIRN_SNAPSHOT_ID holds the snapshot's ID, empty if none
    /// was written; CAIRN_PARTIAL is 1 if some entries could not be read),
    /// e.g. a monitoring ping
    #[arg(long, value_name = "COMMAND", requires = "schedule")]
    on_success: Option<String>,
    /// With --schedule: run this shell command after each run that failed
    /// (CAIRN_ERROR holds the error), e.g. a mail or a webhook
    #[arg(long, value_name = "COMMAND", requires = "schedule")]
    on_failure: Option<String>,
}

/// How a file is found unchanged since the parent snapshot: the options
/// `backup` and `watch` share.
#[derive(clap::Args, Debug)]
pub struct ChangeArgs {
    /// Take a file whose size and mtime are as the parent recorded them
    /// for unchanged even if its inode number or ctime moved, as restic
    /// does (filesystems that number inodes anew on each mount: sshfs,
    /// mergerfs, some network ones; a tree copied with cp -a or rsync -a).
    /// A change made at the same size with the mtime set back is then missed
    #[arg(long)]
    ignore_inode: bool,
    /// Take a file whose size, mtime and inode are as the parent recorded
    /// them for unchanged even if its ctime moved (after a chown -R or
    /// chmod -R; the new owner or mode is still recorded; a change made at
    /// the same size with the mtime set back is missed)
    #[arg(long)]
    ignore_ctime: bool,
}

impl ChangeArgs {
    /// The engine's comparison these options ask for.
    pub fn check(&self) -> ChangeCheck {
        ChangeCheck {
            ignore_inode: self.ignore_inode,
            ignore_ctime: self.ignore_ctime,
        }
    }
}

/// What to leave out: the options `backup` and `watch` share.
#[derive(clap::Args, Debug)]
pub struct ExcludeArgs {
    /// Exclude paths matching this gitignore-style pattern (repeatable; as
    /// in restic, `a/b` matches at any depth, `/a/b` only at the root, and
    /// `!PATTERN` takes back what it matches and all below it). A path
    /// named as a source is kept whatever the exclude options say of it
    /// (what lies below it is judged as usual, as in restic)
    #[arg(long = "exclude", short = 'e')]
    exclude: Vec<String>,
    /// Like --exclude, ignoring case
    #[arg(long = "iexclude")]
    iexclude: Vec<String>,
    /// Read exclude patterns from a file (one per line, `#` comments,
    /// `$VAR` expanded)
    #[arg(long = "exclude-file")]
    exclude_file: Vec<PathBuf>,
    /// Like --exclude-file, ignoring case
    #[arg(long = "iexclude-file")]
    iexclude_file: Vec<PathBuf>,
    /// Exclude the contents of directories that contain an entry with this
    /// name, but that entry (`NAME:HEADER`: only if that file starts with
    /// HEADER), as restic does; unlike restic, an entry that is a directory
    /// (`.git`) goes too
    #[arg(long = "exclude-if-present", value_name = "NAME[:HEADER]")]
    exclude_if_present: Vec<String>,
    /// Exclude the contents of directories holding a CACHEDIR.TAG with a
    /// valid signature, but the tag
    #[arg(long)]
    exclude_caches: bool,
    /// Exclude files larger than SIZE (e.g. 500K, 2M, 1G)
    #[arg(long, value_parser = crate::common::parse_size)]
    exclude_larger_than: Option<u64>,
    /// Stay on the filesystem of each source path (a source below a mount
    /// point that another source's walk stops at is still read whole, as
    /// are sources below directories a marker file excludes)
    #[arg(long, short = 'x')]
    one_file_system: bool,
}

impl ExcludeArgs {
    /// The engine's form of these options.
    pub fn options(self) -> ExcludeOptions {
        ExcludeOptions {
            patterns: self.exclude,
            ipatterns: self.iexclude,
            pattern_files: self
                .exclude_file
                .into_iter()
                .map(PatternFile::Named)
                .collect(),
            ipattern_files: self
                .iexclude_file
                .into_iter()
                .map(PatternFile::Named)
                .collect(),
            if_present: self.exclude_if_present,
            caches: self.exclude_caches,
            larger_than: self.exclude_larger_than,
            one_file_system: self.one_file_system,
            always: Vec::new(),
            always_ids: Vec::new(),
            cairn_mounts: Vec::new(),
        }
    }
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let schedule = a.schedule.clone();
    let retention = Retention {
        keep: a.keep.policy()?,
        prune_every: a.prune_every,
    };
    if schedule.is_none() && retention.keep.is_some() {
        return Err(exit::usage(
            "--keep-* options need --schedule (or use `cairn forget`)",
        ));
    }
    cairn_engine::snapshot::check_user_tags(&a.tags).map_err(|e| exit::usage(e.to_string()))?;
    // clap sees the conflict only when -q follows the subcommand.
    if g.quiet && a.verbose > 0 {
        return Err(exit::usage(
            "--verbose and --quiet cannot be used with each other",
        ));
    }
    if a.stdin_from_command && a.command.is_empty() {
        return Err(exit::usage(
            "--stdin-from-command needs the command after `--` (e.g. `-- pg_dump app`)",
        ));
    }
    let mut paths = a.paths;
    if !a.stdin_from_command {
        // Paths after `--` were taken for a command nobody ran, and left
        // out of the snapshot with exit 0.
        // One that is an option of restic's or borg's, passed on as clap's
        // tip for an unknown option says (`-- -v`), and not there: it
        // made a partial snapshot of a source named `-v`.
        if let Some(o) = a
            .command
            .iter()
            .find(|c| c.starts_with('-') && std::fs::symlink_metadata(c).is_err())
        {
            return Err(exit::usage(format!(
                "{o:?} after `--` is a path to back up, and there is none: `cairn backup` has \
                 no such option (`cairn backup --help` lists them)"
            )));
        }
        paths.extend(a.command.iter().map(PathBuf::from));
    }
    let given = paths.clone();
    let mut lists = Vec::new();
    for (files, format) in [
        (&a.files_from, ListFormat::Lines),
        (&a.files_from_verbatim, ListFormat::Verbatim),
        (&a.files_from_raw, ListFormat::Raw),
    ] {
        for f in files {
            let listed = read_files_from(f, format)?;
            paths.extend(listed.iter().cloned());
            lists.push(List {
                file: f.clone(),
                format,
                first: listed,
            });
        }
    }
    let stdin = (a.stdin || a.stdin_from_command).then(|| StdinSource {
        filename: a.stdin_filename.clone().unwrap_or_else(|| "stdin".into()),
        command: a.stdin_from_command.then(|| a.command.clone()),
        allow_empty: a.allow_empty,
        // No capture record to count into: a plain stream is opaque.
        count_copy_rows: false,
        env: Vec::new(),
        label: None,
    });
    if stdin.is_none() && paths.is_empty() && a.sqlite.is_empty() && a.postgres.is_none() {
        return Err(exit::usage(
            "nothing to back up: give paths, --sqlite, --postgres, --files-from, --stdin or \
             --stdin-from-command",
        ));
    }
    if stdin.is_some() && !(paths.is_empty() && a.sqlite.is_empty()) {
        return Err(exit::usage(
            "--stdin and --stdin-from-command take no paths (a command to back up the output \
             of goes after `--` with --stdin-from-command)",
        ));
    }
    if a.postgres.is_some() && !paths.is_empty() {
        return Err(exit::usage("--postgres takes no paths"));
    }
    if a.stdin_filename.is_some() && stdin.is_none() && a.postgres.is_none() {
        return Err(exit::usage(
            "--stdin-filename names what --stdin, --stdin-from-command or --postgres stores",
        ));
    }
    if let Some(c) = &a.postgres {
        crate::common::warn_password_in_conninfo(c);
    }
    let exclude = a.exclude.options().streams_read()?;
    crate::common::check_exclude(&exclude)?;
    // The sources' metadata is read into the kernel's caches while the key
    // is derived; it stops once the repository is open.
    let warmup = Warmup::start(&paths);
    let mut repo = g.open_or_tell(a.on_failure.as_deref())?;
    let parent = match &a.parent {
        Some(p) => Some(repo.find_snapshot(p)?.0),
        None => None,
    };
    drop(warmup);
    let opts = BackupOptions {
        paths,
        exclude,
        stdin,
        sqlite: a.sqlite,
        sqlite_aware: a.sqlite_aware,
        sqlite_lock_timeout: Some(a.sqlite_lock_timeout),
        postgres_lock_timeout: Some(a.postgres_lock_timeout),
        databases: Vec::new(),
        tags: a.tags,
        host: a.host.filter(|h| !h.is_empty()),
        time: a.time,
        parent,
        force: a.force,
        change_check: a.change.check(),
        atime: a.atime,
        read_threads: a.read_concurrency.map(usize::from),
    };
    let how = How {
        postgres: a.postgres.clone(),
        dump_name: a.stdin_filename.clone(),
        skip_if_unchanged: a.skip_if_unchanged,
        listing: progress::FileListing::from_count(a.verbose, g.json),
    };
    // A second signal, while a backup stops or a run finishes, exits at once.
    // SIGHUP too: a closed terminal or ssh session must not kill it
    // where it stands, with its lock left.
    let stop = exit::stop_flag(&[SIGINT, SIGTERM, SIGHUP])?;
    repo.set_lock_wait(g.lock_wait_until(&stop));
    // A hook still running at a stop is killed rather than waited out, and
    // storage calls retrying against a server that fails them give up.
    cairn_engine::child::stop_with(stop.clone());
    if a.dry_run {
        // Stopped like a backup: killed by the signal, it left its lock.
        return dry_run(g, &repo, &opts, how.listing, &stop);
    }
    let Some(schedule) = schedule else {
        // Stopped at the next entry, the lock and the audit record are
        // written off before exit 130 (killed outright they were left).
        return once(g, &repo, &opts, &how, Some(&stop)).map(|(code, _)| code);
    };
    let tally = run_scheduled(
        &repo,
        &schedule,
        &retention,
        &Hooks {
            on_success: a.on_success.clone(),
            on_failure: a.on_failure.clone(),
        },
        &stop,
        || {
            let opts = lists_read_again(&opts, &given, &lists)?;
            let engine_error = |e: anyhow::Error| match e.downcast::<cairn_engine::Error>() {
                Ok(e) => e,
                Err(e) => cairn_engine::Error::InvalidInput(format!("{e:#}")),
            };
            // Standard output that cannot be written (a full disk under the
            // log) fails a run that had not written its snapshot yet; the
            // schedule goes on (it ended there, its failure hook unrun).
            let r = crate::output::stdout_failure_caught(|| run_once(g, &repo, &opts, &how, None))
                .map_err(cairn_engine::Error::InvalidInput)?
                .map_err(engine_error)?;
            // A snapshot written is one: retention follows it, though its
            // report cannot be shown (said on standard error and to the
            // failure hook).
            match crate::output::stdout_failure_caught(|| show_once(g, r.as_ref())) {
                Ok(shown) => {
                    shown.map_err(engine_error)?;
                }
                Err(why) => {
                    let message = format!("{why}: the report of snapshot {} was lost", {
                        r.as_ref()
                            .map(|r| r.snapshot_id.short())
                            .unwrap_or_default()
                    });
                    crate::warn!("cairn: warning: {message}");
                    if let Some(Err(e)) = a
                        .on_failure
                        .as_deref()
                        .map(|h| cairn_engine::hook::run_failure_hook(h, &message))
                    {
                        crate::warn!("cairn: warning: {e}");
                    }
                }
            }
            Ok(r.map(|r| (r.snapshot_id, r.snapshot)))
        },
        |e| {
            if let Err(why) = crate::output::stdout_failure_caught(|| report(g, &e)) {
                crate::warn!("cairn: warning: {why}");
            }
        },
    )?;
    let Tally {
        runs,
        failed,
        partial,
        stopped,
    } = tally;
    if failed > 0 {
        bail!("{failed} of {runs} scheduled backups failed (each is reported above)");
    }
    if stopped {
        return Ok(exit::INTERRUPTED);
    }
    if partial > 0 {
        crate::warn!(
            "cairn: {partial} of {runs} scheduled backups could not read some entries (each is reported above)"
        );
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}

/// A `--files-from` list and what was read from it first.
struct List {
    file: PathBuf,
    format: ListFormat,
    first: Vec<PathBuf>,
}

/// `opts` for a scheduled run: the lists that are regular files read again
/// (an edit holds from the next run, globs match new files), the others (a
/// pipe, standard input) as they were read first, as pattern files are.
fn lists_read_again(
    opts: &BackupOptions,
    given: &[PathBuf],
    lists: &[List],
) -> cairn_engine::Result<BackupOptions> {
    if lists.is_empty() {
        return Ok(opts.clone());
    }
    let mut paths = given.to_vec();
    for l in lists {
        let regular = l.file != Path::new("-") && fs::metadata(&l.file).is_ok_and(|m| m.is_file());
        if regular {
            paths.extend(read_files_from(&l.file, l.format)?);
        } else {
            paths.extend(l.first.iter().cloned());
        }
    }
    Ok(BackupOptions {
        paths,
        ..opts.clone()
    })
}

/// Shows what the schedule did between runs.
fn report(g: &Global, e: &ScheduleEvent) {
    let json = |v: serde_json::Value| {
        let _ = print_json(&v);
    };
    // On standard error always, and as a JSON line for scripts: an error
    // for a run that failed, a warning for what failed beside a run that
    // did not (a hook, retention, the audit record), which monitoring must
    // not take for a failed backup.
    let error = |what: &str, err: &cairn_engine::Error| {
        crate::warn!("cairn: error: {what}{err}");
        if g.json {
            json(serde_json::json!({"message_type": "error", "error": err.to_string()}));
        }
    };
    let warning = |what: &str, err: &cairn_engine::Error| {
        crate::warn!("cairn: warning: {what}{err}");
        if g.json {
            json(serde_json::json!({
                "message_type": "warning",
                "path": null,
                "message": format!("{what}{err}"),
            }));
        }
    };
    match e {
        ScheduleEvent::Waiting(at) if g.json => {
            json(serde_json::json!({"message_type": "scheduled", "next": at.to_rfc3339()}))
        }
        ScheduleEvent::Waiting(at) if !g.quiet => {
            crate::say!("next backup at {}", at.format("%Y-%m-%d %H:%M:%S"))
        }
        ScheduleEvent::Waiting(_) => {}
        ScheduleEvent::Failed(err) => {
            error("scheduled backup failed (the schedule goes on): ", err)
        }
        ScheduleEvent::Stopped(err) => {
            error("interrupted: the run under way did not finish: ", err)
        }
        ScheduleEvent::AuditFailed(err) => {
            warning("the audit record of this run was not written: ", err)
        }
        ScheduleEvent::HookFailed(err) => warning("", err),
        ScheduleEvent::RetentionFailed(err, retry) => warning(
            &format!(
                "retention failed ({}): ",
                cairn_engine::upkeep::when_retried(*retry, "run")
            ),
            err,
        ),
        ScheduleEvent::Forgot(r) if g.json => json(serde_json::json!({
            "message_type": "forgot",
            "removed": r.removed.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
        })),
        ScheduleEvent::Forgot(r) if !g.quiet => {
            crate::say!("retention removed {} snapshot(s)", r.removed.len())
        }
        ScheduleEvent::Pruned(r) if g.json => json(serde_json::json!({
            "message_type": "pruned",
            "packs_deleted": r.packs_deleted,
            "bytes_freed": r.bytes_freed,
        })),
        ScheduleEvent::Pruned(r) if !g.quiet => crate::say!(
            "prune deleted {} pack(s), freed {}",
            r.packs_deleted,
            bytes(r.bytes_freed.max(0) as u64)
        ),
        ScheduleEvent::Forgot(_) | ScheduleEvent::Pruned(_) => {}
    }
}

/// The JSON summary fields a backup and a dry run share: the summary's
/// counts, the parent, whether it is partial, and the warnings.
fn summary_json(
    snap: &Snapshot,
    s: &Summary,
    warnings: &[String],
) -> serde_json::Map<String, serde_json::Value> {
    let mut v = match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    v.insert("message_type".into(), "summary".into());
    v.insert("parent".into(), snap.parent.map(|p: Id| p.to_hex()).into());
    v.insert("partial".into(), snap.partial.into());
    v.insert("warnings".into(), warnings.into());
    v
}

/// The summary's first line of text.
fn print_files(s: &Summary) {
    crate::say!(
        "Files: {} new, {} changed, {} unmodified; {} directories",
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        s.dirs
    );
}

/// `opts` with its pattern files read, once per run, for the backup and
/// the scan of its sources alike (one may be a pipe).
fn patterns_read(opts: &BackupOptions) -> Result<BackupOptions> {
    Ok(BackupOptions {
        exclude: opts.exclude.resolved()?,
        ..opts.clone()
    })
}

/// `backup --dry-run`: what a backup would read and add.
fn dry_run(
    g: &Global,
    repo: &Repository,
    opts: &BackupOptions,
    listing: Option<progress::FileListing>,
    stop: &Arc<AtomicBool>,
) -> Result<i32> {
    let opts = &patterns_read(opts)?;
    let show = progress::enabled(g.quiet, g.json);
    let p = progress::Backup {
        bar: progress::bytes_bar(show, None, "dry run"),
        verbose_warnings: true,
        activity: Activity::start(repo, "backup --dry-run"),
        stop: Some(stop.clone()),
        done: Default::default(),
        listing,
    };
    let status = progress::backup_status(repo, opts, &p, g.json && !g.quiet);
    let d = backup_dry_run(repo, opts, &p)?;
    status.finish();
    p.bar.finish_and_clear();
    let s = &d.summary;
    if g.json {
        let mut v = summary_json(&d.snapshot, s, &d.warnings);
        v.insert("dry_run".into(), true.into());
        v.insert("snapshot_id".into(), serde_json::Value::Null);
        print_json(&v)?;
    } else {
        // The report is what a dry run is asked for: said under -q too.
        print_files(s);
        crate::say!(
            "Read {} of {}; would add {} in {} blobs to the repository",
            bytes(s.bytes_read),
            bytes(s.total_bytes),
            bytes(s.data_added),
            s.blobs_added
        );
        crate::say!("dry run: nothing was stored, no snapshot written");
    }
    Ok(if d.snapshot.partial {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

/// The choices of one run besides its [`BackupOptions`].
struct How {
    postgres: Option<String>,
    /// `--stdin-filename` for a `--postgres` dump.
    dump_name: Option<String>,
    skip_if_unchanged: bool,
    /// `--verbose`.
    listing: Option<progress::FileListing>,
}

/// One backup, reported; the exit code it earns and its result (`None`:
/// nothing changed, no snapshot written).
fn once(
    g: &Global,
    repo: &Repository,
    opts: &BackupOptions,
    how: &How,
    stop: Option<&Arc<AtomicBool>>,
) -> Result<(i32, Option<BackupResult>)> {
    let r = run_once(g, repo, opts, how, stop)?;
    let code = show_once(g, r.as_ref())?;
    Ok((code, r))
}

/// One backup, with its progress shown; `None` when `--skip-if-unchanged`
/// found nothing changed.
fn run_once(
    g: &Global,
    repo: &Repository,
    opts: &BackupOptions,
    how: &How,
    stop: Option<&Arc<AtomicBool>>,
) -> Result<Option<BackupResult>> {
    let opts = &patterns_read(opts)?;
    let show = progress::enabled(g.quiet, g.json);
    let p = progress::Backup {
        bar: progress::bytes_bar(show, None, "backup"),
        verbose_warnings: true,
        activity: Activity::start(repo, "backup"),
        stop: stop.cloned(),
        done: Default::default(),
        listing: how.listing,
    };
    let status = progress::backup_status(repo, opts, &p, g.json && !g.quiet);
    let r = match &how.postgres {
        Some(conninfo) => Some(backup_postgres(
            repo,
            conninfo,
            how.dump_name.as_deref(),
            opts,
            &p,
        )?),
        None if how.skip_if_unchanged => {
            backup_if_changed(repo, opts, &p).map_err(|e| no_source(e, opts))?
        }
        None => Some(backup(repo, opts, &p).map_err(|e| no_source(e, opts))?),
    };
    status.finish();
    p.bar.finish_and_clear();
    drop(p);
    Ok(r)
}

/// `e`, said to have written no snapshot when it is that not one of the
/// paths to back up can be found (one of several gone is left out, exit 3).
fn no_source(e: cairn_engine::Error, opts: &BackupOptions) -> anyhow::Error {
    let gone = matches!(&e, cairn_engine::Error::Io { op: "stat", path, .. }
        if opts.paths.iter().any(|p| p == path));
    let e = anyhow::Error::from(e);
    if gone {
        if opts.paths.len() == 1 {
            return e
                .context("the path to back up cannot be found or reached; no snapshot written");
        }
        // The error names the first; the others are named here.
        let others: Vec<String> = opts.paths[1..]
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return e.context(format!(
            "none of the paths to back up can be found or reached ({} too); no snapshot written",
            others.join(", ")
        ));
    }
    e
}

/// Prints what a backup [`run_once`] did; the exit code it calls for.
fn show_once(g: &Global, r: Option<&BackupResult>) -> Result<i32> {
    let Some(r) = r else {
        if g.json {
            print_json(&serde_json::json!({"message_type": "unchanged"}))?;
        } else if !g.quiet {
            crate::say!(
                "nothing changed since the last snapshot of these paths: no snapshot written"
            );
        }
        return Ok(exit::OK);
    };
    exit::done(format!("snapshot {} was saved", r.snapshot_id.short()));
    let s = &r.summary;
    if g.json {
        let mut v = summary_json(&r.snapshot, s, &r.warnings);
        v.insert("snapshot_id".into(), r.snapshot_id.to_hex().into());
        v.insert("short_id".into(), r.snapshot_id.short().into());
        v.insert(
            "index_lookups_skipped".into(),
            r.index_lookups_skipped.into(),
        );
        v.insert(
            "databases".into(),
            serde_json::to_value(&r.snapshot.databases)?,
        );
        print_json(&v)?;
    } else if !g.quiet {
        print_files(s);
        crate::say!(
            "Read {} of {}; added {} to the repository",
            bytes(s.bytes_read),
            bytes(s.total_bytes),
            bytes(s.data_added)
        );
        crate::say!("snapshot {} saved", r.snapshot_id.short());
    }
    let code = if r.snapshot.partial {
        crate::warn!(
            "warning: {} source entries could not be read; the snapshot is incomplete",
            s.errors
        );
        exit::PARTIAL
    } else {
        exit::OK
    };
    Ok(code)
}

/// A `--stdin-filename` the engine accepts (a wrong one is a usage error).
fn stream_filename(s: &str) -> std::result::Result<String, String> {
    cairn_engine::archiver::stream_path(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}
