//! Progress bars on stderr (only when it is a terminal), and the status
//! lines of a backup or restore with `--json`.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use cairn_engine::Repository;
use cairn_engine::activity::Activity;
use cairn_engine::archiver::{
    BackupOptions, BackupProgress, FileStatus, ScanTotals, scan, scan_options,
};
use cairn_engine::restorer::RestoreProgress;
use indicatif::{ProgressBar, ProgressStyle};

/// Whether bars should be drawn.
pub fn enabled(quiet: bool, json: bool) -> bool {
    !quiet && !json && std::io::stderr().is_terminal()
}

/// A byte counter bar, or a hidden one.
pub fn bytes_bar(show: bool, total: Option<u64>, msg: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::new_spinner(),
    };
    let style = if total.is_some() {
        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}"
    } else {
        "{spinner} {msg} [{elapsed_precise}] {bytes} {bytes_per_sec}"
    };
    pb.set_style(ProgressStyle::with_template(style).expect("valid template"));
    pb.set_message(msg);
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// Backup progress: a byte counter plus warnings on stderr.
pub struct Backup {
    /// The bar.
    pub bar: ProgressBar,
    /// Print warnings.
    pub verbose_warnings: bool,
    /// Published for monitors (`cairn serve`).
    pub activity: Activity,
    /// Set by SIGINT or SIGTERM, if this backup stops for them.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// What is done so far, for [`backup_status`].
    pub done: Arc<Done>,
    /// `--verbose`: list files as they are taken.
    pub listing: Option<FileListing>,
}

/// `backup --verbose`: each regular file listed as the backup takes it,
/// with restic's words (`new`, `modified`, `unchanged`).
#[derive(Debug, Clone, Copy)]
pub struct FileListing {
    /// Unchanged files too (`-vv`), not only new and modified ones.
    pub unchanged: bool,
    /// As `verbose_status` JSON lines (restic's), not text.
    pub json: bool,
}

impl FileListing {
    /// The listing `-v` given `count` times asks for, if any.
    pub fn from_count(count: u8, json: bool) -> Option<FileListing> {
        (count > 0).then_some(FileListing {
            unchanged: count > 1,
            json,
        })
    }

    fn tell(&self, bar: &ProgressBar, path: &Path, status: FileStatus, bytes: u64) {
        if status == FileStatus::Unchanged && !self.unchanged {
            return;
        }
        let raw = path.as_os_str().as_bytes();
        if self.json {
            let mut v = serde_json::json!({
                "message_type": "verbose_status",
                "action": status.as_str(),
                "item": String::from_utf8_lossy(raw),
                "data_size": bytes,
            });
            // As diff's `path_bytes`: the name a script can open.
            if std::str::from_utf8(raw).is_err() {
                v["item_bytes"] = raw.into();
            }
            crate::output::json_line_unlocked(&v);
        } else {
            bar.suspend(|| crate::output::path_line(&format!("{:<10}", status.as_str()), raw));
        }
    }
}

/// What a backup has done so far.
#[derive(Debug, Default)]
pub struct Done {
    /// Files done (stored or taken from the parent).
    pub files: AtomicU64,
    /// Bytes of the sources done: read, or taken from the parent unread.
    pub bytes: AtomicU64,
    /// Entries that could not be backed up.
    pub errors: AtomicU64,
    /// Restore: bytes found in place already, not written.
    pub kept: AtomicU64,
}

impl BackupProgress for Backup {
    fn cancelled(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
    }
    fn bytes_read(&self, n: u64) {
        self.bar.inc(n);
        self.activity.add_bytes(n);
        self.done.bytes.fetch_add(n, Relaxed);
    }
    fn content_reused(&self, n: u64) {
        self.done.bytes.fetch_add(n, Relaxed);
    }
    fn file_done(&self, _path: &Path, _bytes: u64) {
        self.done.files.fetch_add(1, Relaxed);
    }
    fn file_status(&self, path: &Path, status: FileStatus, bytes: u64) {
        if let Some(l) = &self.listing {
            l.tell(&self.bar, path, status, bytes);
        }
    }
    fn warning(&self, path: &Path, message: &str, is_error: bool) {
        if is_error {
            self.done.errors.fetch_add(1, Relaxed);
        }
        if self.verbose_warnings {
            let kind = if is_error { "error" } else { "warning" };
            self.bar
                .suspend(|| crate::warn!("{kind}: {}: {message}", path.display()));
        }
    }
}

/// How often a backup's status is told.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Threads that tell a command's status while it runs; stopped and joined
/// by [`Ticker::finish`] or when dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn idle() -> Ticker {
        Ticker {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// Runs `tell` with the time since the start, every [`STATUS_EVERY`].
    fn every_second(&mut self, mut tell: impl FnMut(Duration) + Send + 'static) {
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let started = Instant::now();
            let mut next = started + STATUS_EVERY;
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if Instant::now() >= next {
                    next += STATUS_EVERY;
                    tell(started.elapsed());
                }
            }
        }));
    }

    /// Stops telling it (before the summary is printed).
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.end();
    }
}

/// A backup's status while it runs, as restic gives it: with `--json`, a
/// `status` line on standard output every second (the share done, files
/// and bytes done and in all, errors, the time left); on a terminal, files
/// and the share done beside the bar. The totals come from a scan of the
/// sources beside the backup, run only when the status is shown. Nothing
/// is started if neither `json` nor a shown bar asks for it.
pub fn backup_status(repo: &Repository, opts: &BackupOptions, p: &Backup, json: bool) -> Ticker {
    let mut t = Ticker::idle();
    if !json && p.bar.is_hidden() {
        return t;
    }
    let totals = Arc::new(ScanTotals::default());
    if !opts.paths.is_empty() && opts.stdin.is_none() {
        let opts = scan_options(repo, opts);
        let (totals, stop) = (totals.clone(), t.stop.clone());
        t.threads
            .push(std::thread::spawn(move || scan(&opts, &totals, &stop)));
    }
    let (done, bar) = (p.done.clone(), p.bar.clone());
    t.every_second(move |elapsed| {
        let s = Status::now(&done, &totals, elapsed);
        if json {
            println!("{}", s.json());
        } else {
            bar.set_message(s.line());
        }
    });
    t
}

/// A restore's status, as restic gives it: with `--json`, a `status` line
/// every second (bytes and files restored, and of all when the whole
/// snapshot is restored, with the share done); on a terminal, files beside
/// the bar. `totals` (files, bytes) are known for a whole snapshot only.
pub fn restore_status(p: &Restore, totals: Option<(u64, u64)>, json: bool) -> Ticker {
    let mut t = Ticker::idle();
    if !json && p.bar.is_hidden() {
        return t;
    }
    let (done, bar) = (p.done.clone(), p.bar.clone());
    t.every_second(move |elapsed| {
        let files = done.files.load(Relaxed);
        let bytes = done.bytes.load(Relaxed);
        let kept = done.kept.load(Relaxed);
        if !json {
            bar.set_message(match totals {
                Some((all, _)) => format!("restore: {files} of {all} files"),
                None => format!("restore: {files} files"),
            });
            return;
        }
        let mut v = serde_json::json!({
            "message_type": "status",
            "seconds_elapsed": elapsed.as_secs(),
            "files_restored": files,
            "bytes_restored": bytes,
            "bytes_skipped": kept,
        });
        if let Some((all_files, all_bytes)) = totals {
            v["total_files"] = all_files.into();
            v["total_bytes"] = all_bytes.into();
            v["percent_done"] = share(bytes + kept, all_bytes, files, all_files).into();
        }
        println!("{v}");
    });
    t
}

/// The share done by bytes (by files where there are no bytes); below 1
/// until the command ends, whatever an estimate says.
fn share(bytes: u64, all_bytes: u64, files: u64, all_files: u64) -> f64 {
    let (done, all) = if all_bytes > 0 {
        (bytes, all_bytes)
    } else {
        (files, all_files)
    };
    if all == 0 {
        return 0.0;
    }
    (done as f64 / all as f64).min(0.999)
}

/// One status of a running backup.
struct Status {
    elapsed: Duration,
    files: u64,
    bytes: u64,
    errors: u64,
    total_files: u64,
    total_bytes: u64,
    scanned: bool,
}

impl Status {
    fn now(done: &Done, totals: &ScanTotals, elapsed: Duration) -> Status {
        // Read first: once the scan is complete its totals are final.
        let scanned = totals.complete.load(Acquire);
        Status {
            elapsed,
            files: done.files.load(Relaxed),
            bytes: done.bytes.load(Relaxed),
            errors: done.errors.load(Relaxed),
            total_files: totals.files.load(Relaxed),
            total_bytes: totals.bytes.load(Relaxed),
            scanned,
        }
    }

    fn share(&self) -> f64 {
        share(self.bytes, self.total_bytes, self.files, self.total_files)
    }

    fn seconds_remaining(&self) -> Option<u64> {
        let share = self.share();
        (self.scanned && share > 0.0)
            .then(|| (self.elapsed.as_secs_f64() * (1.0 - share) / share).round() as u64)
    }

    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "message_type": "status",
            "seconds_elapsed": self.elapsed.as_secs(),
            "percent_done": self.share(),
            "total_files": self.total_files,
            "files_done": self.files,
            "total_bytes": self.total_bytes,
            "bytes_done": self.bytes,
            "error_count": self.errors,
            "scan_complete": self.scanned,
        });
        if let Some(s) = self.seconds_remaining() {
            v["seconds_remaining"] = s.into();
        }
        v
    }

    fn line(&self) -> String {
        let mut l = format!(
            "backup: {} of {}{} files, {:.1}%",
            self.files,
            self.total_files,
            if self.scanned { "" } else { "+" },
            self.share() * 100.0
        );
        if self.errors > 0 {
            l.push_str(&format!(", {} errors", self.errors));
        }
        if let Some(s) = self.seconds_remaining() {
            l.push_str(&format!(
                ", {} left",
                cairn_engine::units::format_duration(Duration::from_secs(s))
            ));
        }
        l
    }
}

/// Restore progress.
pub struct Restore {
    /// The bar.
    pub bar: ProgressBar,
    /// Published for monitors (`cairn serve`).
    pub activity: Activity,
    /// Set by SIGINT or SIGTERM.
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Files and bytes done so far (`errors` unused).
    pub done: Arc<Done>,
}

impl RestoreProgress for Restore {
    fn cancelled(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn bytes_written(&self, n: u64) {
        self.bar.inc(n);
        self.activity.add_bytes(n);
        self.done.bytes.fetch_add(n, Relaxed);
    }
    fn bytes_kept(&self, n: u64) {
        // Done as much as written ones: the bar and the share reach the end.
        self.bar.inc(n);
        self.activity.add_bytes(n);
        self.done.kept.fetch_add(n, Relaxed);
    }
    fn file_done(&self) {
        self.done.files.fetch_add(1, Relaxed);
    }
    fn warning(&self, path: &Path, message: &str, is_error: bool) {
        let kind = if is_error { "error" } else { "warning" };
        self.bar
            .suspend(|| crate::warn!("{kind}: {}: {message}", path.display()));
    }
}
