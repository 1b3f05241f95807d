//! The filesystem watcher: inotify through the `notify` crate, reduced to
//! what a snapshot needs to know (which paths changed, or that events were
//! lost).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};

use crate::exclude::Filter;

/// Test hook: the N-th change reported after start is turned into a queue
/// overflow, for systems where the real queue limit cannot be lowered.
pub const FAKE_OVERFLOW_ENV: &str = "CAIRN_TEST_WATCH_OVERFLOW_AFTER";

/// What the watcher reports.
#[derive(Debug)]
pub(super) enum Signal {
    /// An entry changed in place, or is gone.
    Changed(PathBuf),
    /// An entry appeared, possibly renamed from the second path.
    Replaced(PathBuf, Option<PathBuf>),
    /// Events were lost, or a directory could not be watched: only a full
    /// rescan is safe. `limit` when the inotify watch limit is the cause.
    Lost { reason: String, limit: bool },
}

/// Which paths the watcher reports on.
pub(super) struct Interest {
    /// Directory sources: everything below them.
    pub dirs: Vec<PathBuf>,
    /// File sources: these paths only (their directory is watched, so a
    /// file replaced by rename is still seen).
    pub files: Vec<PathBuf>,
    /// Never reported: the repository and cache directories, which every
    /// snapshot writes to (reporting them would trigger snapshots forever).
    pub ignored: Vec<PathBuf>,
    /// The backup's exclude patterns.
    pub filter: Filter,
}

impl Interest {
    fn wants(&self, p: &Path) -> bool {
        let inside =
            self.dirs.iter().any(|d| p.starts_with(d)) || self.files.iter().any(|f| p == f);
        inside && !self.ignored.iter().any(|i| p.starts_with(i)) && !self.filter.excludes_path(p)
    }
}

/// A running watcher and the signals it sends, each stamped with the time
/// it was seen.
pub(super) struct FsWatcher {
    _watcher: Option<notify::RecommendedWatcher>,
    /// Signals, oldest first.
    pub rx: Receiver<(Instant, Signal)>,
    // Kept so that the channel stays open even without a watcher.
    _tx: Sender<(Instant, Signal)>,
}

impl FsWatcher {
    /// Starts watching everything `interest` names. The second value says
    /// why watching is incomplete, if it is (changes may then go unseen,
    /// and the caller must rescan periodically).
    pub fn start(interest: Arc<Interest>) -> (FsWatcher, Option<String>) {
        let (tx, rx) = channel();
        let fake_overflow_after: u64 = std::env::var(FAKE_OVERFLOW_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let seen = AtomicU64::new(0);
        let handler = {
            let (tx, interest) = (tx.clone(), interest.clone());
            move |res: notify::Result<notify::Event>| {
                let now = Instant::now();
                for mut s in translate(&interest, res) {
                    let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
                    if n == fake_overflow_after {
                        s = overflow();
                    }
                    let _ = tx.send((now, s));
                }
            }
        };
        let mut problem = None;
        let watcher = match notify::recommended_watcher(handler) {
            Ok(mut w) => {
                let targets = interest
                    .dirs
                    .iter()
                    .map(|d| (d.as_path(), RecursiveMode::Recursive))
                    .chain(interest.files.iter().map(|f| {
                        (
                            f.parent().unwrap_or(Path::new("/")),
                            RecursiveMode::NonRecursive,
                        )
                    }));
                for (path, mode) in targets {
                    if let Err(e) = w.watch(path, mode) {
                        problem = Some(describe(&e));
                        break;
                    }
                }
                Some(w)
            }
            Err(e) => {
                problem = Some(describe(&e));
                None
            }
        };
        (
            FsWatcher {
                _watcher: watcher,
                rx,
                _tx: tx,
            },
            problem,
        )
    }
}

fn sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn limit_message() -> String {
    format!(
        "the inotify watch limit is reached (fs.inotify.max_user_watches = {}): raise it \
         (sysctl -w fs.inotify.max_user_watches=524288, and in /etc/sysctl.d/ to keep it); \
         until then directories without a watch are only seen by full rescans",
        sysctl("max_user_watches")
    )
}

fn overflow() -> Signal {
    Signal::Lost {
        reason: format!(
            "the inotify event queue overflowed and events were lost \
             (fs.inotify.max_queued_events = {}; raise it if this repeats)",
            sysctl("max_queued_events")
        ),
        limit: false,
    }
}

fn describe(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => limit_message(),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => format!(
            "cannot start inotify: too many inotify instances (fs.inotify.max_user_instances = {}): raise it",
            sysctl("max_user_instances")
        ),
        _ => format!("cannot watch: {e}"),
    }
}

/// The signals for one notify event.
fn translate(interest: &Interest, res: notify::Result<notify::Event>) -> Vec<Signal> {
    let ev = match res {
        Ok(ev) => ev,
        Err(e) => {
            let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch);
            return vec![Signal::Lost {
                reason: describe(&e),
                limit,
            }];
        }
    };
    if ev.need_rescan() {
        return vec![overflow()];
    }
    let wanted = |p: &PathBuf| interest.wants(p);
    match ev.kind {
        // Reading changes nothing (and our own snapshots read).
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => ev
            .paths
            .into_iter()
            .filter(wanted)
            .map(Signal::Changed)
            .collect(),
        EventKind::Access(_) => Vec::new(),
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => ev
            .paths
            .into_iter()
            .filter(wanted)
            .map(|p| Signal::Replaced(p, None))
            .collect(),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match ev.paths.as_slice() {
            [from, to] if wanted(to) => {
                vec![Signal::Replaced(
                    to.clone(),
                    wanted(from).then(|| from.clone()),
                )]
            }
            _ => Vec::new(),
        },
        _ => ev
            .paths
            .into_iter()
            .filter(wanted)
            .map(Signal::Changed)
            .collect(),
    }
}
