//! `cairn watch`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use cairn_engine::activity::Activity;
use cairn_engine::archiver::BackupOptions;
use cairn_engine::hook::{run_failure_hook, run_success_hook};
use cairn_engine::watch::{WatchEvent, WatchObserver, WatchOptions, watch};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::backup::{ChangeArgs, ExcludeArgs};
use super::forget::KeepArgs;
use crate::common::{Global, bytes, parse_duration};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files and directories to watch and back up
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Quiet time after the last change before a snapshot is taken
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    debounce: Duration,
    /// Longest time from a change to its snapshot while changes keep coming
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    max_delay: Duration,
    /// Interval of the full safety rescan
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    rescan_every: Duration,
    /// Prune at most this often (after a snapshot); by default never
    #[arg(long, value_parser = parse_duration)]
    prune_every: Option<Duration>,
    /// Run this shell command after each snapshot written
    /// (CAIRN_SNAPSHOT_ID holds its ID; CAIRN_PARTIAL is 1 if some entries
    /// could not be read), e.g. a monitoring ping
    #[arg(long, value_name = "COMMAND")]
    on_success: Option<String>,
    /// Run this shell command after each full rescan that found nothing to
    /// store (every --rescan-every on an idle tree, and one forced by lost
    /// events or a retry), e.g. the same ping as --on-success, so that a
    /// dead man's switch hears from an idle watch
    #[arg(long, value_name = "COMMAND")]
    on_idle: Option<String>,
    /// Run this shell command after each failed snapshot attempt
    /// (CAIRN_ERROR holds the error), e.g. a mail or a webhook
    #[arg(long, value_name = "COMMAND")]
    on_failure: Option<String>,
    #[command(flatten)]
    exclude: ExcludeArgs,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    keep: KeepArgs,
    /// Add a tag to every snapshot (repeatable; a,b adds both)
    #[arg(long = "tag", value_delimiter = ',')]
    tags: Vec<String>,
    /// Record this host name instead of the machine's (empty: the
    /// machine's, as restic does)
    #[arg(long)]
    host: Option<String>,
    /// Capture SQLite databases met in the paths consistently, as backup
    /// --sqlite-aware does, each time they change, instead of copying them
    /// torn
    #[arg(long)]
    sqlite_aware: bool,
    /// How long a SQLite capture waits for a lock another connection holds
    /// before it gives up (e.g. 30s, 5m)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "60s")]
    sqlite_lock_timeout: Duration,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    cairn_engine::snapshot::check_user_tags(&a.tags).map_err(|e| exit::usage(e.to_string()))?;
    // A second signal while stopping exits at once. SIGHUP (the terminal
    // or ssh session closed) stops it the same way: dying on it left the
    // lock and the pending changes unreported.
    let stop = exit::stop_flag(&[SIGINT, SIGTERM, SIGHUP])?;
    // A hook still running at a stop is killed rather than waited out.
    cairn_engine::child::stop_with(stop.clone());
    let keep = a.keep.policy()?;
    // Checked again by the engine; here they are usage errors (exit 2),
    // found before the repository is opened.
    if a.debounce.is_zero() || a.max_delay < a.debounce {
        return Err(exit::usage(
            "--debounce must be positive and --max-delay at least as long",
        ));
    }
    if a.rescan_every.is_zero() {
        return Err(exit::usage("--rescan-every must be positive"));
    }
    // Read once, for the watcher and every snapshot alike: a pattern file
    // may be a pipe (`--exclude-file <(...)`).
    let exclude = a.exclude.options().resolved()?;
    crate::common::check_exclude(&exclude)?;
    let mut repo = g.open_or_tell(a.on_failure.as_deref())?;
    repo.set_lock_wait(g.lock_wait_until(&stop));
    let opts = WatchOptions {
        backup: BackupOptions {
            paths: a.paths,
            exclude,
            tags: a.tags,
            host: a.host.filter(|h| !h.is_empty()),
            sqlite_aware: a.sqlite_aware,
            sqlite_lock_timeout: Some(a.sqlite_lock_timeout),
            change_check: a.change.check(),
            ..BackupOptions::default()
        },
        debounce: a.debounce,
        max_delay: a.max_delay,
        rescan_every: a.rescan_every,
        keep,
        prune_every: a.prune_every,
    };
    let out = Printer {
        json: g.json,
        quiet: g.quiet,
        on_success: a.on_success,
        on_idle: a.on_idle,
        on_failure: a.on_failure,
        activity: Activity::start(&repo, "watch"),
        stdout_failed: Default::default(),
        untold: Default::default(),
    };
    if let Err(e) = watch(&repo, &opts, &out, &stop) {
        // A failure that ends the watch (its first snapshot's, one that
        // keeps it from starting) is a failure too: its hook hears of it,
        // or a service restarted on failure would fail silently for ever.
        if !matches!(e, cairn_engine::Error::Interrupted) {
            out.failure_hook(&e.to_string());
        }
        return Err(e.into());
    }
    Ok(exit::OK)
}

struct Printer {
    json: bool,
    quiet: bool,
    on_success: Option<String>,
    on_idle: Option<String>,
    on_failure: Option<String>,
    activity: Activity,
    /// Standard output failed (a full disk under the log): said once, on
    /// standard error and to the failure hook, and the watch goes on.
    stdout_failed: std::sync::atomic::AtomicBool,
    /// That failure for the hook, told once a snapshot is done: the event
    /// that met it may come from inside a backup, its lock held (a hook
    /// using the repository waited on it).
    untold: std::sync::Mutex<Option<String>>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn now() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

impl Printer {
    fn json(&self, e: &WatchEvent) -> serde_json::Value {
        use serde_json::json;
        match e {
            // Paths as text, lossily: a name that is not UTF-8 must not
            // stop the watch (serde refuses such a path).
            WatchEvent::Watching { paths, problem } => json!({
                "message_type": "watching",
                "paths": paths.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
                "problem": problem,
            }),
            WatchEvent::Rescan { reason } => json!({"message_type": "rescan", "reason": reason}),
            WatchEvent::Snapshot(r) => json!({
                "message_type": "snapshot",
                "snapshot_id": r.snapshot_id.to_hex(),
                "short_id": r.snapshot_id.short(),
                "parent": r.parent.map(|p| p.to_hex()),
                "changed_paths": r.changed_paths,
                "bytes_added": r.summary.data_added,
                "bytes_read": r.summary.bytes_read,
                "files_new": r.summary.files_new,
                "files_changed": r.summary.files_changed,
                "files_unmodified": r.summary.files_unmodified,
                "total_bytes": r.summary.total_bytes,
                "duration_ms": ms(r.duration),
                "lag_ms": r.lag.map(ms),
                "full_rescan": r.full_rescan,
                "partial": r.partial,
            }),
            WatchEvent::Unchanged {
                changed_paths,
                full_rescan,
                duration,
            } => json!({
                "message_type": "unchanged", "changed_paths": changed_paths,
                "full_rescan": full_rescan, "duration_ms": ms(*duration),
            }),
            WatchEvent::Warning {
                path,
                message,
                is_error,
            } => json!({
                "message_type": if *is_error { "error" } else { "warning" },
                "path": path.as_ref().map(|p| p.to_string_lossy()), "message": message,
            }),
            WatchEvent::Failed {
                message,
                retry_in,
                locked_for,
                alert,
            } => json!({
                "message_type": "snapshot_failed", "message": message, "retry_in_ms": ms(*retry_in),
                "locked_for_ms": locked_for.map(ms), "alert": alert,
            }),
            WatchEvent::Forgot { removed } => json!({
                "message_type": "forget",
                "removed": removed.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            }),
            WatchEvent::Pruned(r) => {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["message_type"] = json!("prune");
                v
            }
            WatchEvent::Stopped { pending, abandoned } => json!({
                "message_type": "stopped", "pending_paths": pending, "abandoned": abandoned,
            }),
        }
    }

    fn text(&self, e: &WatchEvent) {
        let t = now();
        match e {
            WatchEvent::Watching { paths, problem } => {
                let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                if !self.quiet {
                    crate::say!("{t} watching {}", list.join(" "));
                }
                if let Some(p) = problem {
                    crate::warn!("{t} warning: {p}");
                }
            }
            WatchEvent::Rescan { reason } => {
                if !self.quiet {
                    crate::say!("{t} full rescan: {reason}");
                }
            }
            WatchEvent::Snapshot(r) => {
                if self.quiet {
                    return;
                }
                let lag = r
                    .lag
                    .map(|l| format!(", {:.1} s after the first change", l.as_secs_f64()))
                    .unwrap_or_default();
                // A full rescan walks everything: the paths it was told
                // of first (none after a retry) say nothing of its reach.
                let what = match r.full_rescan {
                    true => "full rescan".to_string(),
                    false => format!("{} changed paths", r.changed_paths),
                };
                crate::say!(
                    "{t} snapshot {} saved: {what}, read {}, added {}, {} ms{lag}{}",
                    r.snapshot_id.short(),
                    bytes(r.summary.bytes_read),
                    bytes(r.summary.data_added),
                    ms(r.duration),
                    if r.partial { " (partial)" } else { "" }
                );
            }
            WatchEvent::Unchanged { .. } => {}
            WatchEvent::Warning {
                path,
                message,
                is_error,
            } => {
                let kind = if *is_error { "error" } else { "warning" };
                match path {
                    Some(p) => crate::warn!("{t} {kind}: {}: {message}", p.display()),
                    None => crate::warn!("{t} {kind}: {message}"),
                }
            }
            WatchEvent::Failed {
                message, retry_in, ..
            } => crate::warn!(
                "{t} snapshot failed: {message}; trying again in {} s",
                retry_in.as_secs()
            ),
            WatchEvent::Forgot { removed } => {
                if !self.quiet {
                    crate::say!("{t} retention removed {} snapshots", removed.len());
                }
            }
            WatchEvent::Pruned(r) => {
                if !self.quiet {
                    crate::say!(
                        "{t} prune freed {} ({} packs deleted, {} repacked)",
                        bytes(r.bytes_freed.max(0) as u64),
                        r.packs_deleted,
                        r.packs_repacked
                    );
                }
            }
            WatchEvent::Stopped { pending, abandoned } => {
                if !self.quiet {
                    let what = if *abandoned {
                        "a snapshot in flight was abandoned; "
                    } else {
                        ""
                    };
                    crate::say!(
                        "{t} stopped: {what}{pending} changed paths not yet in a snapshot (the next start picks them up)"
                    );
                }
            }
        }
    }

    /// Runs `--on-failure`, if given, for a failure said by `message`.
    fn failure_hook(&self, message: &str) {
        if let Some(Err(err)) = self
            .on_failure
            .as_deref()
            .map(|h| run_failure_hook(h, message))
        {
            self.hook_failed(&err);
        }
    }

    /// Says that a hook failed, and why: a warning, as `backup --schedule`
    /// gives it (an `error` event means a partial snapshot, which this is
    /// not).
    fn hook_failed(&self, err: &cairn_engine::Error) {
        crate::warn!("{} warning: {err}", now());
        if self.json {
            // JSON as it is (say! would escape its backslashes). Not
            // `println!`: standard output may be what failed.
            use std::io::Write;
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::json!({"message_type": "warning", "path": null, "message": err.to_string()})
            );
        }
    }
}

impl WatchObserver for Printer {
    fn event(&self, e: &WatchEvent) {
        match e {
            WatchEvent::Watching { .. } => self.activity.phase("watching"),
            WatchEvent::Rescan { .. } => self.activity.phase("full rescan"),
            WatchEvent::Snapshot(r) => {
                self.activity.snapshot(&r.snapshot_id);
                self.activity.phase("watching");
            }
            WatchEvent::Unchanged { .. } => self.activity.phase("watching"),
            WatchEvent::Failed { .. } => self.activity.phase("waiting to retry"),
            _ => {}
        }
        let shown = crate::output::stdout_failure_caught(|| {
            if self.json {
                println!("{}", self.json(e));
            } else {
                self.text(e);
            }
        });
        if let Err(why) = shown
            && !self
                .stdout_failed
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let message = format!("{why}: what watch does is not shown from now on");
            crate::warn!("{} warning: {message}", now());
            *self.untold.lock().expect("untold") = Some(message);
        }
        if matches!(
            e,
            WatchEvent::Snapshot(_) | WatchEvent::Unchanged { .. } | WatchEvent::Failed { .. }
        ) && let Some(message) = self.untold.lock().expect("untold").take()
        {
            self.failure_hook(&message);
        }
        match e {
            WatchEvent::Snapshot(r) => {
                if let Some(Err(err)) = self
                    .on_success
                    .as_deref()
                    .map(|h| run_success_hook(h, &r.snapshot_id.to_hex(), r.partial))
                {
                    self.hook_failed(&err);
                }
            }
            // A periodic rescan that found nothing to store succeeded all
            // the same: without a ping, a ping-based monitor (a dead man's
            // switch) took a tree left idle for a day for a dead watch. Its
            // own option: an --on-success hook given no snapshot ID (`cairn
            // copy $CAIRN_SNAPSHOT_ID`) would act on every snapshot.
            WatchEvent::Unchanged {
                full_rescan: true, ..
            } => {
                if let Some(Err(err)) = self
                    .on_idle
                    .as_deref()
                    .map(|h| run_success_hook(h, "", false))
                {
                    self.hook_failed(&err);
                }
            }
            WatchEvent::Failed {
                message,
                alert: true,
                ..
            } => self.failure_hook(message),
            _ => {}
        }
    }
}
