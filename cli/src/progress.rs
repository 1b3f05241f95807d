//! Progress bars on stderr (only when it is a terminal).

use std::io::IsTerminal;
use std::path::Path;

use cairn_engine::activity::Activity;
use cairn_engine::archiver::BackupProgress;
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
    }
    fn warning(&self, path: &Path, message: &str, is_error: bool) {
        if self.verbose_warnings {
            let kind = if is_error { "error" } else { "warning" };
            self.bar
                .suspend(|| crate::warn!("{kind}: {}: {message}", path.display()));
        }
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
}

impl RestoreProgress for Restore {
    fn cancelled(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn bytes_written(&self, n: u64) {
        self.bar.inc(n);
        self.activity.add_bytes(n);
    }
    fn warning(&self, path: &Path, message: &str, is_error: bool) {
        let kind = if is_error { "error" } else { "warning" };
        self.bar
            .suspend(|| crate::warn!("{kind}: {}: {message}", path.display()));
    }
}
