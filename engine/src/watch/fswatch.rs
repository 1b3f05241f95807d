//! The filesystem watcher: inotify through the `notify` crate, reduced to
//! what a snapshot needs to know (which paths changed, or that events were
//! lost).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};

use super::mounts::MountWatch;
use crate::capture::sqlite;
use crate::exclude::Filter;

/// What the watcher reports.
#[derive(Debug)]
pub(super) enum Signal {
    /// An entry changed in place, or is gone.
    Changed(PathBuf),
    /// An entry appeared, possibly renamed from the second path.
    Replaced(PathBuf, Option<PathBuf>),
    /// Events were lost, or a directory could not be watched: only a full
    /// rescan is safe. `limit` when the inotify watch limit is the cause;
    /// `source_back` when a source was created or renamed into place (one
    /// that was gone made the snapshots before fail: the retry need not
    /// wait out its backoff).
    Lost {
        reason: String,
        limit: bool,
        source_back: bool,
    },
}

/// Which paths the watcher reports on.
#[derive(Clone)]
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
    /// SQLite databases in use are captured whole (`--sqlite-aware`): a
    /// change to one's journal is a change to the database.
    pub sqlite_aware: bool,
}

/// The sources that are directories now (not links to them), and the
/// others.
pub(super) fn classify(paths: impl IntoIterator<Item = PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    paths
        .into_iter()
        .partition(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
}

impl Interest {
    /// This interest with its sources sorted into directories and files
    /// anew: a file source that became a directory is watched as one.
    pub fn reclassified(&self) -> Interest {
        let (dirs, files) = classify(self.dirs.iter().chain(&self.files).cloned());
        Interest {
            dirs,
            files,
            ..self.clone()
        }
    }

    fn wants(&self, p: &Path) -> bool {
        // The nearest: a source inside another is not excluded by a marker.
        let source = self
            .dirs
            .iter()
            .filter(|d| p.starts_with(d))
            .max_by_key(|d| d.as_os_str().len());
        let inside = source.is_some() || self.files.iter().any(|f| p == f);
        inside
            && !self.ignored.iter().any(|i| p.starts_with(i))
            && !self.filter.excludes_path(p)
            // A busy build or cache directory marked out of backups
            // (`--exclude-caches`, `--exclude-if-present`) brought a
            // snapshot, alike, after each change.
            && !source.is_some_and(|s| self.filter.marked_out(p, s))
            && !source.is_some_and(|s| self.filter.always_by_id_above(p, s))
    }

    /// What the watcher is given: each directory source recursively, and
    /// non-recursively the directories holding a file source or a
    /// directory source (so that a source deleted, renamed away or
    /// replaced by rename is seen), unless already inside a directory
    /// source (which would lose its recursion). The third value says
    /// whether changes go unseen without it: a file source's directory is
    /// where its events come from; a directory source's only shows it
    /// coming back after it was gone (its own watch sees it go).
    fn targets(&self) -> Vec<(PathBuf, RecursiveMode, bool)> {
        // A source whose directory is gone too (`rm -rf` of the directory
        // above, a deploy unpacking it again) is awaited in the nearest
        // directory still there: its return is an event in that one.
        let nearest = |p: &Path| -> PathBuf {
            p.ancestors()
                .find(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.is_dir()))
                .unwrap_or(p)
                .to_path_buf()
        };
        let holders = |of: &[PathBuf]| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = of
                .iter()
                .filter_map(|p| p.parent())
                .map(nearest)
                .filter(|p| !self.dirs.iter().any(|d| p.starts_with(d)))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let of_files = holders(&self.files);
        let of_dirs: Vec<PathBuf> = holders(&self.dirs)
            .into_iter()
            .filter(|p| !of_files.contains(p))
            .collect();
        let flat = |essential| move |p| (p, RecursiveMode::NonRecursive, essential);
        self.dirs
            .iter()
            .map(|d| (d.clone(), RecursiveMode::Recursive, true))
            .chain(of_files.into_iter().map(flat(true)))
            .chain(of_dirs.into_iter().map(flat(false)))
            .collect()
    }

    /// The directory source that an event of this kind on `p` moved,
    /// deleted or replaced, itself or with a directory above it, or the
    /// file source whose directory it did so to, if any: its watches no
    /// longer follow the path.
    fn source_replaced(&self, kind: &EventKind, p: &Path) -> Option<PathBuf> {
        let replacing = matches!(
            kind,
            EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        if !replacing {
            return None;
        }
        let holder_gone = |f: &&PathBuf| f.parent().is_some_and(|d| d.starts_with(p));
        // A file source that is now a directory: its directory's watch
        // does not look inside it.
        let now_a_dir = |f: &&PathBuf| {
            f.as_path() == p && std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
        };
        self.dirs
            .iter()
            .find(|d| d.starts_with(p))
            .or_else(|| self.files.iter().find(holder_gone))
            .or_else(|| self.files.iter().find(now_a_dir))
            .cloned()
    }
}

/// A running watcher and the signals it sends, each stamped with the time
/// it was seen.
pub(super) struct FsWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    /// The paths given to the watcher (each directory below them has a
    /// watch of its own).
    targets: Vec<PathBuf>,
    /// Signals, oldest first.
    pub rx: Receiver<(Instant, Signal)>,
    // Kept so that the channel stays open even without a watcher.
    _tx: SyncSender<(Instant, Signal)>,
    /// Set when a signal found the queue full and was dropped.
    overflowed: Arc<AtomicBool>,
    /// The paths of the `Changed` signals in the queue, with when each
    /// was last seen: a path written to again while its signal waits is
    /// not queued again, so the queue fills with distinct paths only (a
    /// log written to all through a long snapshot takes one place).
    queued: Arc<Mutex<std::collections::HashMap<PathBuf, Instant>>>,
    /// Directories left unwatched because the user may not read them.
    unreadable: Arc<Mutex<Vec<PathBuf>>>,
    /// The mounts the sources lie on, watched (see [`MountWatch`]).
    mounts: Option<MountWatch>,
}

/// How many signals wait while watch is busy (a snapshot, a hook, a
/// prune), about 10 MiB: unbounded, a busy log or database written to
/// during a first backup of hours queued millions. Repeats of a path
/// waiting take no place (see `FsWatcher::queued`); past it, signals are
/// dropped for a full rescan, as inotify does when its own queue is full.
fn queue_len() -> usize {
    std::env::var("CAIRN_TEST_WATCH_QUEUE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 16)
}

impl FsWatcher {
    /// Starts watching everything `interest` names. The second value says
    /// why watching is incomplete, if it is (changes may then go unseen,
    /// and the caller must rescan periodically).
    pub fn start(interest: Arc<Interest>) -> (FsWatcher, Option<String>) {
        let (tx, rx) = sync_channel(queue_len());
        let unreadable: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
        let overflowed = Arc::new(AtomicBool::new(false));
        let queued: Arc<Mutex<std::collections::HashMap<PathBuf, Instant>>> = Arc::default();
        let handler = {
            let (tx, interest, unreadable, overflowed, queued) = (
                tx.clone(),
                interest.clone(),
                unreadable.clone(),
                overflowed.clone(),
                queued.clone(),
            );
            move |res: notify::Result<notify::Event>| {
                let now = Instant::now();
                for s in translate(&interest, &unreadable, res) {
                    let mut waiting = queued.lock().expect("queued");
                    if let Signal::Changed(p) = &s {
                        if let Some(t) = waiting.get_mut(p) {
                            *t = now;
                            continue;
                        }
                        waiting.insert(p.clone(), now);
                    }
                    if let Err(TrySendError::Full((_, s))) = tx.try_send((now, s)) {
                        if let Signal::Changed(p) = s {
                            waiting.remove(&p);
                        }
                        overflowed.store(true, Ordering::Relaxed);
                    }
                }
            }
        };
        // Before the watches: a mount during their setup (a walk of the
        // whole tree) is then a change, not the starting point.
        let mounts = {
            let (tx, overflowed) = (tx.clone(), overflowed.clone());
            let sources = interest
                .dirs
                .iter()
                .chain(&interest.files)
                .cloned()
                .collect();
            // Below a source too, unless the backup stays on its
            // filesystems.
            let below = !interest.filter.one_file_system;
            MountWatch::start(sources, below, move |moved| {
                let names: Vec<String> = moved.iter().map(|p| p.display().to_string()).collect();
                let lost = Signal::Lost {
                    reason: format!(
                        "a filesystem was mounted or unmounted at, above or below {}",
                        names.join(", ")
                    ),
                    limit: false,
                    // A disk that came back: no need to wait out a retry.
                    source_back: true,
                };
                if tx.try_send((Instant::now(), lost)).is_err() {
                    overflowed.store(true, Ordering::Relaxed);
                }
            })
        };
        let mut problem = None;
        let mut added = Vec::new();
        // Symbolic links are stored as links, not followed: what they point
        // to is not part of the source (and may be a whole filesystem).
        let config = notify::Config::default().with_follow_symlinks(false);
        let watcher = match notify::RecommendedWatcher::new(handler, config) {
            Ok(mut w) => {
                for (path, mode, essential) in interest.targets() {
                    let result = match mode {
                        RecursiveMode::Recursive => watch_tree(&mut w, &path, true, &unreadable),
                        RecursiveMode::NonRecursive => w.watch(&path, mode),
                    };
                    // Recorded even on failure: the watches added below it
                    // before the failure stay.
                    added.push(path);
                    if let Err(e) = result {
                        let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch);
                        // A directory that cannot be read (0711) hides only
                        // a source coming back after it was gone.
                        if essential || limit {
                            problem.get_or_insert_with(|| describe(&e));
                        }
                        // At the limit every further watch fails too; a
                        // source that is missing (for now) spoils no other.
                        if limit {
                            break;
                        }
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
                watcher,
                targets: added,
                rx,
                _tx: tx,
                overflowed,
                queued,
                unreadable,
                mounts,
            },
            problem,
        )
    }
}

/// Watches `dir` and everything below it. notify stops adding watches at
/// the first directory it cannot watch (one the user may not read), which
/// left every directory after it in its walk unwatched: then each child is
/// watched on its own, and only the ones that cannot be are left out (the
/// first failure is returned). Each watch is recursive, so that
/// directories created later are watched too.
///
/// A directory below the source that the user may not read is left out
/// without failing (the backup cannot read it either; counted as a
/// failure it made every snapshot a full rescan, for good) and noted in
/// `unreadable`, whose change (a `chmod`) has it watched afresh.
fn watch_tree(
    w: &mut notify::RecommendedWatcher,
    dir: &Path,
    root: bool,
    unreadable: &Mutex<Vec<PathBuf>>,
) -> notify::Result<()> {
    let e = match w.watch(dir, RecursiveMode::Recursive) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let denied = matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied);
    let at_dir = e.paths.iter().any(|p| p == dir);
    if !root && denied && at_dir {
        unreadable
            .lock()
            .expect("unreadable")
            .push(dir.to_path_buf());
        return Ok(());
    }
    // At the limit, or `dir` itself not watched: nothing below can be.
    let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch);
    if limit || at_dir || e.paths.is_empty() {
        return Err(e);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Err(e);
    };
    // The failure is met again below, unless its directory went meanwhile.
    let mut first = None;
    for entry in entries.flatten() {
        // Symbolic links are not followed (see `FsWatcher::start`).
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Err(e) = crate::deep::deeper(|| watch_tree(w, &entry.path(), false, unreadable)) {
            if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                return Err(first.unwrap_or(e));
            }
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

impl FsWatcher {
    /// Whether signals were dropped since the last call, the queue being
    /// full.
    pub fn overflowed(&self) -> bool {
        self.overflowed.swap(false, Ordering::Relaxed)
    }

    /// When `signal`, taken from the queue stamped `at`, was last seen:
    /// later for a path written to again while it waited.
    pub fn last_seen(&self, at: Instant, signal: &Signal) -> Instant {
        match signal {
            Signal::Changed(p) => self
                .queued
                .lock()
                .expect("queued")
                .remove(p)
                .map_or(at, |t| t.max(at)),
            _ => at,
        }
    }

    /// Watches `dir`, a directory that appeared (made, or moved in), and
    /// everything below it, again. notify adds these watches itself, but
    /// stops at the first subdirectory it cannot watch (one the user may
    /// not read, one removed meanwhile) and says nothing: the directories
    /// after it in its walk stayed unwatched until the next full rescan.
    /// A watch added twice is one watch. A signal comes back when watching
    /// is still incomplete. `dir` was a directory when the caller looked.
    pub fn watch_new(&mut self, dir: &Path) -> Option<Signal> {
        let w = self.watcher.as_mut()?;
        let mut tries = 0;
        loop {
            let e = watch_tree(w, dir, false, &self.unreadable).err()?;
            let gone = match &e.kind {
                notify::ErrorKind::PathNotFound => true,
                notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
                _ => false,
            };
            if !gone {
                return Some(Signal::Lost {
                    reason: describe(&e),
                    limit: matches!(e.kind, notify::ErrorKind::MaxFilesWatch),
                    source_back: false,
                });
            }
            // A directory removed during the walk needs no watch, but may
            // have cut the walk short (notify does not always say where):
            // the next walk lists what is there now. A tree that keeps
            // changing (a build) is left as far as it got.
            tries += 1;
            if tries == 3 || !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
                return None;
            }
        }
    }

    /// Removes every watch now (they count against the user's limit), so
    /// that a watcher started next can have them all.
    pub fn stop(&mut self) {
        if let Some(w) = &mut self.watcher {
            // Unwatching returns once the kernel has removed the watches;
            // dropping the watcher only asks its thread to close inotify.
            for t in &self.targets {
                let _ = w.unwatch(t);
            }
        }
        self.watcher = None;
        self.mounts = None;
    }
}

fn sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn limit_message() -> String {
    let global = sysctl("max_user_watches");
    // Inside a user namespace the namespace's own limit may be the lower one.
    let userns = std::fs::read_to_string("/proc/sys/user/max_inotify_watches")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|n| *n != global && n.parse::<u64>().ok() < global.parse().ok())
        .map(|n| format!(", user.max_inotify_watches = {n} in this user namespace"))
        .unwrap_or_default();
    format!(
        "the inotify watch limit is reached (fs.inotify.max_user_watches = {global}{userns}): \
         raise it (sysctl -w fs.inotify.max_user_watches=524288, and in /etc/sysctl.d/ to keep \
         it); until then directories without a watch are only seen by full rescans"
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
        source_back: false,
    }
}

fn describe(e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => limit_message(),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => format!(
            "cannot start inotify: too many inotify instances (fs.inotify.max_user_instances = {}): raise it",
            sysctl("max_user_instances")
        ),
        // notify's own words end in "about [\"/path\"]", a debug list.
        _ => {
            let said = e.to_string();
            let said = said.split(" about [").next().unwrap_or_default();
            let paths: Vec<String> = e.paths.iter().map(|p| p.display().to_string()).collect();
            match paths.is_empty() {
                true => format!("cannot watch: {said}"),
                false => format!(
                    "cannot watch {}: {said}; changes there are found by full rescans only",
                    paths.join(", ")
                ),
            }
        }
    }
}

/// The signals for one notify event.
fn translate(
    interest: &Interest,
    unreadable: &Mutex<Vec<PathBuf>>,
    res: notify::Result<notify::Event>,
) -> Vec<Signal> {
    let mut ev = match res {
        Ok(ev) => ev,
        Err(e) => {
            let limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch);
            return vec![Signal::Lost {
                reason: describe(&e),
                limit,
                source_back: false,
            }];
        }
    };
    if ev.need_rescan() {
        return vec![overflow()];
    }
    // A directory left unwatched as unreadable changed (its mode, perhaps):
    // only a new watcher sees what happens in it from now on. Its owner
    // opening it (a listing) is no change: taken for one, it made a full
    // rescan and a snapshot each time.
    if !matches!(ev.kind, EventKind::Access(_))
        && let Some(p) = {
            let unreadable = unreadable.lock().expect("unreadable");
            ev.paths.iter().find(|p| unreadable.contains(p)).cloned()
        }
    {
        return vec![Signal::Lost {
            reason: format!(
                "{} changed, which could not be watched: watching afresh",
                p.display()
            ),
            limit: false,
            source_back: false,
        }];
    }
    if let Some(root) = ev
        .paths
        .iter()
        .find_map(|p| interest.source_replaced(&ev.kind, p))
    {
        // Its watches follow the directory it was, wherever that went:
        // only a new watcher and a full rescan see the path again.
        let back = matches!(
            ev.kind,
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
        ) && std::fs::symlink_metadata(&root).is_ok();
        return vec![Signal::Lost {
            reason: format!(
                "{} was moved, deleted or replaced: watching it afresh",
                root.display()
            ),
            limit: false,
            source_back: back,
        }];
    }
    let mut out = Vec::new();
    if interest.sqlite_aware {
        // Every SQLite connection, our capture's read-only one included,
        // opens the -wal and -shm for writing, changes their owner when run
        // as root, and closes them: counting those events would make each
        // capture trigger the next. Only data written, or the file created,
        // removed or renamed, is a change.
        let written = matches!(
            ev.kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
        );
        for p in &ev.paths {
            // A commit writes the WAL or journal, often not the database
            // file: capture the database again.
            if let Some(Sidecar::Journal(db)) = sidecar(p)
                && written
                && interest.wants(&db)
            {
                out.push(Signal::Changed(db));
            }
        }
        // The -shm is an index written through mmap (no events) and never
        // stored while its database is captured.
        ev.paths.retain(|p| match sidecar(p) {
            Some(Sidecar::Shm) => false,
            Some(Sidecar::Journal(_)) => written,
            None => true,
        });
    }
    let wanted = |p: &PathBuf| interest.wants(p);
    out.extend(translate_kind(ev, wanted));
    out
}

/// A SQLite sidecar file name.
enum Sidecar {
    /// `-wal` or `-journal` of the database at this path.
    Journal(PathBuf),
    /// `-shm`.
    Shm,
}

fn sidecar(p: &Path) -> Option<Sidecar> {
    let (base, suffix) = sqlite::sidecar_of(p.file_name()?.as_bytes())?;
    Some(if suffix == "-shm" {
        Sidecar::Shm
    } else {
        Sidecar::Journal(p.with_file_name(OsStr::from_bytes(base)))
    })
}

/// The signals for an event's wanted paths.
fn translate_kind(ev: notify::Event, wanted: impl Fn(&PathBuf) -> bool) -> Vec<Signal> {
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

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind};

    use super::*;
    use crate::exclude::ExcludeOptions;

    fn interest(sqlite_aware: bool) -> Interest {
        Interest {
            dirs: vec![PathBuf::from("/src")],
            files: Vec::new(),
            ignored: Vec::new(),
            filter: Filter::new(&ExcludeOptions::default()).unwrap(),
            sqlite_aware,
        }
    }

    fn changed(kind: EventKind, path: &str, sqlite_aware: bool) -> Vec<String> {
        let ev = notify::Event::new(kind).add_path(PathBuf::from(path));
        translate(&interest(sqlite_aware), &Mutex::default(), Ok(ev))
            .into_iter()
            .map(|s| match s {
                Signal::Changed(p) => format!("changed {}", p.display()),
                Signal::Replaced(p, _) => format!("replaced {}", p.display()),
                Signal::Lost { .. } => "lost".into(),
            })
            .collect()
    }

    #[test]
    fn a_source_directory_moved_deleted_or_replaced_needs_a_new_watcher() {
        let lost = |kind| changed(kind, "/src", false) == ["lost"];
        assert!(lost(EventKind::Modify(ModifyKind::Name(RenameMode::From))));
        assert!(lost(EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(lost(EventKind::Remove(RemoveKind::Folder)));
        assert!(lost(EventKind::Create(CreateKind::Folder)));
        // Its own metadata, or anything below it, is an ordinary change.
        let chmod = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
        assert_eq!(changed(chmod, "/src", false), ["changed /src"]);
        let moved = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        assert_eq!(changed(moved, "/src/a", false), ["changed /src/a"]);
        // The directory holding it, moved away (its own watch's event).
        assert_eq!(changed(moved, "/", false), ["lost"]);
    }

    #[test]
    fn the_directory_of_a_file_source_moved_deleted_or_replaced_needs_a_new_watcher() {
        let i = Interest {
            dirs: Vec::new(),
            files: vec![PathBuf::from("/etc/app/conf")],
            ..interest(false)
        };
        let signals = |kind, path: &str| {
            let ev = notify::Event::new(kind).add_path(PathBuf::from(path));
            translate(&i, &Mutex::default(), Ok(ev))
                .into_iter()
                .map(|s| matches!(s, Signal::Lost { .. }))
                .collect::<Vec<_>>()
        };
        let moved = EventKind::Modify(ModifyKind::Name(RenameMode::Any));
        assert_eq!(signals(moved, "/etc/app"), [true]);
        assert_eq!(
            signals(EventKind::Remove(RemoveKind::Folder), "/etc/app"),
            [true]
        );
        // The file itself replaced by rename is an ordinary change, and a
        // sibling is none of its business.
        let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(signals(to, "/etc/app/conf"), [false]);
        assert!(signals(to, "/etc/app/other").is_empty());
    }

    #[test]
    fn sources_are_watched_with_the_directories_that_hold_them() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("a")).unwrap();
        std::fs::create_dir_all(r.join("c")).unwrap();
        let i = Interest {
            dirs: vec![r.join("a"), r.join("a/b"), r.join("c/d")],
            files: vec![r.join("a/f"), r.join("c/g")],
            ..interest(false)
        };
        let targets = |i: &Interest| -> Vec<_> {
            i.targets()
                .into_iter()
                .map(|(p, m, e)| {
                    let p = p.strip_prefix(r).unwrap().display().to_string();
                    (p, m == RecursiveMode::Recursive, e)
                })
                .collect()
        };
        // The root holds `a` but a/b's and a/f's holder is watched already,
        // recursively (a second, flat watch would stop its recursion). `c`
        // holds a file source, whose events come from there.
        let expected = [
            ("a", true, true),
            ("a/b", true, true),
            ("c/d", true, true),
            ("c", false, true),
            ("", false, false),
        ];
        assert_eq!(
            targets(&i),
            expected.map(|(p, r, e)| (p.to_string(), r, e)).to_vec()
        );
        // A file source whose directory is gone is awaited in the nearest
        // directory still there.
        let i = Interest {
            dirs: vec![],
            files: vec![r.join("gone/deeper/h")],
            ..interest(false)
        };
        assert_eq!(targets(&i), [(String::new(), false, true)]);
    }

    #[test]
    fn journal_writes_recapture_the_database_and_connection_noise_is_dropped() {
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let chown = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(
            changed(write, "/src/app.db-wal", true),
            ["changed /src/app.db", "changed /src/app.db-wal"]
        );
        assert_eq!(
            changed(
                EventKind::Create(CreateKind::File),
                "/src/app.db-journal",
                true
            ),
            ["changed /src/app.db", "replaced /src/app.db-journal"]
        );
        assert_eq!(
            changed(EventKind::Remove(RemoveKind::File), "/src/app.db-wal", true),
            ["changed /src/app.db", "changed /src/app.db-wal"]
        );
        assert!(changed(chown, "/src/app.db-wal", true).is_empty());
        assert!(changed(close, "/src/app.db-wal", true).is_empty());
        assert!(changed(write, "/src/app.db-shm", true).is_empty());
        // Outside the sources, or without --sqlite-aware: ordinary files.
        assert!(changed(write, "/elsewhere/app.db-wal", true).is_empty());
        assert_eq!(
            changed(write, "/src/app.db-wal", false),
            ["changed /src/app.db-wal"]
        );
        assert_eq!(
            changed(close, "/src/app.db-shm", false),
            ["changed /src/app.db-shm"]
        );
        assert_eq!(changed(write, "/src/-wal", true), ["changed /src/-wal"]);
    }
}
