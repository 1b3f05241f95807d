//! Backup: walk the sources, store what changed, write a snapshot.
//!
//! Directories are processed in parallel (rayon); inside a file, chunks are
//! hashed, compressed and encrypted in parallel batches, so memory stays
//! bounded by (threads × batch × max chunk size) plus the open packs and
//! compression groups (one per worker, 384 KiB at most each).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, FixedOffset, Local};
use rayon::prelude::*;

use crate::blob::BlobType;
use crate::capture::sqlite;
use crate::error::{Error, Result};
use crate::exclude::{ExcludeOptions, Filter};
use crate::fsmeta::{ChangeCheck, node_from_metadata, read_xattrs};
use crate::id::Id;
use crate::localindex::IndexReader;
use crate::lock::LockGuard;
use crate::owner::Owners;
use crate::repository::Repository;
use crate::saver::BlobSaver;
use crate::snapshot::{DatabaseCapture, Snapshot, Summary};
use crate::tree::{Node, NodeKind, Tree};

mod changes;
mod content;
mod permits;
mod readahead;
mod scan;
mod stdin;
mod warmup;

pub use changes::ChangedPaths;
use changes::Dirty;
use content::{store_file, store_fixed};
use readahead::ReadAhead;
pub use scan::{ScanTotals, scan, scan_options};
use stdin::stdin_tree;
pub use stdin::{StdinSource, stream_path};
pub use warmup::Warmup;

/// What to back up and how to label it.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Source paths (files or directories).
    pub paths: Vec<PathBuf>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name to record instead of this machine's.
    pub host: Option<String>,
    /// Snapshot time to record instead of now.
    pub time: Option<DateTime<FixedOffset>>,
    /// Parent snapshot for change detection; by default the newest snapshot
    /// of the same host and paths.
    pub parent: Option<Id>,
    /// Read every file even if it looks unchanged.
    pub force: bool,
    /// What, besides size and mtime, says a file is unchanged since the
    /// parent snapshot (by default its inode number and ctime too).
    pub change_check: ChangeCheck,
    /// Record every entry's access time as it is now. By default an entry
    /// whose type, inode, recorded device, size, mtime and ctime are those the parent
    /// snapshot recorded keeps the access time recorded there: reading a
    /// file or listing a directory moves only its atime, and would
    /// otherwise make a new tree for it and every directory above.
    pub atime: bool,
    /// What to leave out.
    pub exclude: ExcludeOptions,
    /// Back up a stream instead of `paths`.
    pub stdin: Option<StdinSource>,
    /// SQLite databases to capture consistently (online backup API) and
    /// store at their own paths, alongside `paths`.
    pub sqlite: Vec<PathBuf>,
    /// Capture SQLite databases (the header) met in `paths` the same way
    /// when in use (a `-wal` or `-journal` sibling, whose files are then
    /// skipped) or changed since the parent snapshot.
    pub sqlite_aware: bool,
    /// How long a SQLite capture waits for a lock held elsewhere; `None`
    /// for [`sqlite::LOCK_TIMEOUT`].
    pub sqlite_lock_timeout: Option<std::time::Duration>,
    /// How long `pg_dump` waits for the locks it takes on each table (a
    /// session holding one exclusively, a migration, keeps it out);
    /// `None` for [`crate::capture::postgres::LOCK_TIMEOUT`].
    pub postgres_lock_timeout: Option<std::time::Duration>,
    /// Capture records the caller made (e.g. a `pg_dump` stream's server
    /// and format) to add to the snapshot.
    pub databases: Vec<DatabaseCapture>,
    /// Files examined and read at once; `None` for
    /// [`default_read_threads`].
    pub read_threads: Option<usize>,
}

/// Twice the CPUs, at least 4: a cold disk answers many small reads and
/// `stat`s in parallel much sooner than one or two at a time (the Linux
/// tree backs up a third faster with 4 threads than with 2 on 2 CPUs).
pub fn default_read_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .max(4)
}

/// How a `--files-from` list is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// One path or glob per line, as restic reads `--files-from`: each line
    /// trimmed of surrounding whitespace, empty lines and `#` comments
    /// skipped, globs (`*`, `?`, `[...]`) expanded (one that matches nothing
    /// is kept as written, and reported missing).
    Lines,
    /// One path per line, taken as it is (`--files-from-verbatim`); only
    /// empty lines are skipped.
    Verbatim,
    /// NUL-separated paths, taken as they are (`--files-from-raw`).
    Raw,
}

/// Reads a `--files-from` list (`-` is standard input).
pub fn read_files_from(path: &Path, format: ListFormat) -> Result<Vec<PathBuf>> {
    let data = if path == Path::new("-") {
        let mut v = Vec::new();
        std::io::stdin()
            .read_to_end(&mut v)
            .map_err(|e| Error::io("read", "standard input", e))?;
        v
    } else {
        std::fs::read(path).map_err(|e| Error::io("read", path, e))?
    };
    // A byte order mark is no part of the first name (but in --files-from0).
    let data = match format {
        ListFormat::Raw => &data[..],
        _ => data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&data),
    };
    let items: Vec<&[u8]> = match format {
        ListFormat::Raw => data.split(|b| *b == 0).collect(),
        ListFormat::Verbatim => data
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .collect(),
        ListFormat::Lines => data
            .split(|b| *b == b'\n')
            .map(|l| l.trim_ascii())
            .filter(|l| !l.starts_with(b"#"))
            .collect(),
    };
    let mut out = Vec::new();
    for l in items.into_iter().filter(|l| !l.is_empty()) {
        let literal = PathBuf::from(OsStr::from_bytes(l));
        // A name that exists as written is that name, `[` or `*` in it or
        // not (a list made by `find`).
        let glob = format == ListFormat::Lines
            && is_go_glob(l)
            && std::fs::symlink_metadata(&literal).is_err();
        if !glob {
            out.push(literal);
            continue;
        }
        let matched = expand_glob(&literal)?;
        if matched.is_empty() {
            out.push(literal); // reported missing
        } else {
            out.extend(matched);
        }
    }
    Ok(out)
}

/// Whether `s` holds the glob syntax of Go's `filepath.Match`.
fn is_go_glob(s: &[u8]) -> bool {
    s.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// The paths a glob matches, component by component as Go's
/// `filepath.Glob` (restic) does: `*`, `?`, `[...]` within one name (so
/// `**` is `*`), dotfiles too, never `.` or `..`, names that are not UTF-8
/// too, and only paths that exist. A directory on the way that cannot be
/// listed is returned itself: the backup then names why it could not be
/// read.
fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>> {
    let mut found = vec![if pattern.is_absolute() {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    for c in pattern.components() {
        let std::path::Component::Normal(name) = c else {
            if let std::path::Component::ParentDir = c {
                found.iter_mut().for_each(|p| p.push(".."));
            }
            continue;
        };
        let bytes = name.as_bytes();
        if !is_go_glob(bytes) {
            // Only what is there: `g/*/x.txt` added `g/b/x.txt` for every
            // `g/b`, reported missing (exit 3).
            // One that cannot be looked at (permission denied) is kept: the
            // backup names why.
            found = found
                .into_iter()
                .map(|p| p.join(name))
                .filter(|p| match p.symlink_metadata() {
                    Ok(_) => true,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ),
                })
                .collect();
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        let glob = globset::GlobBuilder::new(&text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| {
                Error::InvalidInput(format!("--files-from: bad pattern {pattern:?}: {e}"))
            })?
            .compile_matcher();
        let mut next = Vec::new();
        for dir in found {
            let listed = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(&dir)
            };
            let entries = match listed {
                Ok(entries) => entries,
                // A file where a directory is wanted matches nothing
                // (`g/*/*.txt` took in the file `g/file`).
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(_) => {
                    if std::fs::symlink_metadata(&dir).is_ok() {
                        next.push(dir);
                    }
                    continue;
                }
            };
            let mut names: Vec<_> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .filter(|n| glob.is_match(Path::new(n)))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.dedup();
    Ok(found)
}

/// How a backup took a regular file, as its summary counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Not in the parent snapshot (or no file there).
    New,
    /// In the parent, and read again: its content or metadata changed
    /// (or `--force`).
    Modified,
    /// Its content is the parent's.
    Unchanged,
}

impl FileStatus {
    /// The word restic's `--verbose` listing uses: `new`, `modified`,
    /// `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::New => "new",
            FileStatus::Modified => "modified",
            FileStatus::Unchanged => "unchanged",
        }
    }
}

/// Receives progress from a running backup. Called from worker threads.
pub trait BackupProgress: Sync {
    /// A file is done, its content stored or taken from the parent
    /// snapshot (`bytes` = its size).
    fn file_done(&self, _path: &Path, _bytes: u64) {}
    /// Bytes of file content read.
    fn bytes_read(&self, _n: u64) {}
    /// A file's content was taken from the parent snapshot without reading
    /// it (`bytes` = its size): with [`BackupProgress::bytes_read`], how
    /// much of the sources is done.
    fn content_reused(&self, _bytes: u64) {}
    /// A regular file was counted in the summary as new, modified or
    /// unchanged (`bytes` = its size); for listings of what a backup did.
    fn file_status(&self, _path: &Path, _status: FileStatus, _bytes: u64) {}
    /// A source entry could not be backed up (the snapshot will be partial)
    /// or something noteworthy happened (`is_error == false`).
    fn warning(&self, _path: &Path, _message: &str, _is_error: bool) {}
    /// The entry at `path` is not in the snapshot as it is: it could not
    /// be read and is missing (or, a directory, holds only part of its
    /// entries), or it is a SQLite database stored as a plain file (not
    /// captured, or read while it changed). A continuous backup reads it
    /// again next time. Its error was given to [`BackupProgress::warning`]
    /// first.
    fn read_again(&self, _path: &Path) {}
    /// Whether to abandon the backup: checked before each entry; when it
    /// returns true the backup stops with [`Error::Interrupted`] and writes
    /// no snapshot (what it stored is left for prune).
    fn cancelled(&self) -> bool {
        false
    }
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl BackupProgress for NoProgress {}

/// The outcome of a backup.
#[derive(Debug, Clone)]
pub struct BackupResult {
    /// The new snapshot's ID.
    pub snapshot_id: Id,
    /// The snapshot record.
    pub snapshot: Snapshot,
    /// Its summary (also inside the record).
    pub summary: Summary,
    /// Warnings and errors, one line each.
    pub warnings: Vec<String>,
    /// Index lookups of unchanged files' content blobs and unchanged
    /// directories' trees that were skipped because the parent snapshot
    /// was known to be fully indexed (0 when
    /// the local index was cleared since the parent was written, e.g. by
    /// prune or `repair index`, or the parent was written elsewhere).
    pub index_lookups_skipped: u64,
    /// An incremental backup ([`FollowUp::changes`]) walked every source
    /// instead: it read a file with other names (a new link, or a change
    /// through one name), whose other names, unseen by the change set,
    /// changed too (link count, content).
    pub walked_all: bool,
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs: AtomicU64,
    others: AtomicU64,
    bytes_read: AtomicU64,
    total_bytes: AtomicU64,
    errors: AtomicU64,
    /// What the base snapshot held at the places an incremental backup
    /// re-examined: subtracted from the base's totals to get this one's.
    removed_files: AtomicU64,
    removed_dirs: AtomicU64,
    removed_others: AtomicU64,
    removed_bytes: AtomicU64,
}

struct Ctx<'a, 'r> {
    repo: &'r Repository,
    filter: Filter,
    owners: Owners,
    saver: BlobSaver<'r>,
    progress: &'a dyn BackupProgress,
    counters: Counters,
    warnings: Mutex<Vec<String>>,
    force: bool,
    change_check: ChangeCheck,
    /// `--atime`: see [`BackupOptions::atime`].
    fresh_atimes: bool,
    sqlite: std::collections::HashSet<PathBuf>,
    sqlite_aware: bool,
    sqlite_lock_timeout: std::time::Duration,
    databases: Mutex<Vec<DatabaseCapture>>,
    /// The SQLite databases the parent captured: only their copies may be
    /// kept unchanged as captures (one stored plainly is no capture).
    parent_captured: std::collections::HashSet<PathBuf>,
    /// The root tree of the snapshot an incremental backup starts from
    /// (where renamed entries are looked up).
    base_root: Option<Tree>,
    /// The local index as it was when the backup started: one read
    /// transaction for the whole walk instead of one per unchanged file
    /// (each costs file-lock calls and a header read). It answers for the
    /// parent's blobs, which were indexed before the backup began; blobs
    /// stored during the backup go through the saver, which sees them.
    index: IndexReader,
    /// The parent snapshot read everything it recorded (it is not
    /// partial), so its extended attributes and link targets can stand in
    /// for those of entries that did not change since.
    parent_complete: bool,
    /// Large files chunked at once: one per CPU (see [`permits`]).
    chunking: permits::Permits,
    /// Every blob the parent snapshot refers to is in `index`
    /// ([`LocalIndex::backup_view`](crate::localindex::LocalIndex::backup_view)):
    /// an unchanged file's content needs no lookup.
    parent_verified: bool,
    /// Content blob lookups skipped thanks to `parent_verified`.
    lookups_skipped: AtomicU64,
    /// Parent trees found damaged (their files are read again), and why.
    damaged_parent_trees: Mutex<Vec<(Id, String)>>,
    /// When the parent snapshot's backup started (nanoseconds since the
    /// epoch): entries it recorded with times this close to it may have
    /// changed again within the same timestamp tick ("racily clean", as
    /// git calls it). See [`racy`].
    parent_start: Option<i128>,
    /// The paths given to the backup: each is read whole, whatever
    /// filesystem it is on (`--one-file-system` stops below them).
    sources: std::collections::HashSet<PathBuf>,
    /// Directories inside a source with another source below them (see
    /// [`through_to_sources`]).
    leads: std::collections::HashSet<PathBuf>,
    /// Journal files of databases that could not be captured, by directory,
    /// for its tree (the listing leaves them out).
    sidecars: Mutex<HashMap<PathBuf, Vec<Node>>>,
    /// Journal files the listing kept (their database was not live): saved
    /// with their directory already, not again for a failed capture.
    listed_sidecars: Mutex<std::collections::HashSet<PathBuf>>,
    /// A file with other names was read (not taken from its parent node):
    /// see [`Ran::Relinked`].
    relinked: AtomicBool,
}

impl Ctx<'_, '_> {
    /// Counts a file whose content is the parent's.
    fn count_unmodified_file(&self, path: &Path, size: u64) {
        self.counters.total_bytes.fetch_add(size, Ordering::Relaxed);
        self.counters
            .files_unmodified
            .fetch_add(1, Ordering::Relaxed);
        self.progress.file_status(path, FileStatus::Unchanged, size);
    }

    /// Counts a file whose content was stored (not reused from the parent).
    fn count_stored_file(&self, path: &Path, size: u64, changed: bool) {
        self.counters.total_bytes.fetch_add(size, Ordering::Relaxed);
        let (counter, status) = if changed {
            (&self.counters.files_changed, FileStatus::Modified)
        } else {
            (&self.counters.files_new, FileStatus::New)
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.progress.file_status(path, status, size);
    }

    /// Counts `n` bytes of file content read, for the summary and progress.
    fn count_read(&self, n: u64) {
        self.counters.bytes_read.fetch_add(n, Ordering::Relaxed);
        self.progress.bytes_read(n);
    }

    /// Notes that the parent's tree `id`, which the index lists, could not
    /// be read (see [`load_subtree`]); told once per tree before commit.
    fn parent_tree_unreadable(&self, id: Id, e: &Error) {
        let mut damaged = self.damaged_parent_trees.lock().expect("damaged trees");
        if !damaged.iter().any(|(d, _)| *d == id) {
            damaged.push((id, e.to_string()));
        }
    }

    /// Reports an entry deleted since its directory was listed: a warning
    /// (`rm -rf build/` during the backup), except for a source, which is
    /// missing as one not found at the start is (a USB disk unplugged
    /// meanwhile): an error, the snapshot partial. A source gone went into
    /// a snapshot with exit 0 that retention took for complete.
    fn vanished(&self, path: &Path) {
        if self.sources.contains(path) {
            self.leave_out(path, "vanished during the backup (a source)".into());
        } else {
            self.warn(path, "vanished before it could be read".into(), false);
        }
    }

    /// Whether directory `path` lies in a source's walk with another
    /// source below it, which the walk must reach even if it stops here.
    fn leads_to_source(&self, path: &Path) -> bool {
        !self.leads.is_empty() && self.leads.contains(path)
    }

    /// An error for the entry at `path`, which is not in the snapshot as it
    /// is (see [`BackupProgress::read_again`]).
    fn leave_out(&self, path: &Path, msg: String) {
        self.warn(path, msg, true);
        self.progress.read_again(path);
    }

    fn warn(&self, path: &Path, msg: String, is_error: bool) {
        if is_error {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.progress.warning(path, &msg, is_error);
        self.warnings
            .lock()
            .expect("warnings")
            .push(format!("{}: {msg}", path.display()));
    }

    fn check_cancelled(&self) -> Result<()> {
        if self.progress.cancelled() {
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    /// Whether the file at `path`, stat'ed into `node`, is captured as a
    /// SQLite database: named with `--sqlite`, or found by `--sqlite-aware`
    /// with a journal beside it, or changed since `parent`. Between
    /// transactions a database in rollback-journal mode has no journal, nor
    /// has one in WAL mode between the connections of short-lived writers
    /// (each checkpoints and deletes the `-wal` as it closes), yet a commit
    /// can land while a plain copy reads it: torn copies were stored. A WAL
    /// database in a directory this process cannot write is copied plainly
    /// (a capture would have to create its `-shm` there).
    /// A database named with `--sqlite` and unchanged since `parent`,
    /// with no journal, keeps its copy too: capturing an idle WAL database
    /// makes and deletes its `-wal` and `-shm`, which changed its
    /// directory, so `--skip-if-unchanged` never skipped. Only a copy the
    /// parent captured is kept so: one it stored plainly (backed up before
    /// `--sqlite` was given) is no capture, and the snapshot had none.
    /// (`--sqlite-aware` keeps an unchanged plain copy: it was consistent.)
    fn captures(&self, path: &Path, node: &Node, parent: Option<&Node>) -> bool {
        let named = self.sqlite.contains(path);
        if !named && !self.sqlite_aware {
            return false;
        }
        if sqlite::has_journal(path) {
            return named || sqlite::is_sqlite(path);
        }
        // An empty file is stored as it is, which SQLite opens as an empty
        // database: a capture came back as a 4 KiB one.
        if node.size == 0 {
            return false;
        }
        let changed = same_entry(self, parent, node).is_none();
        if named {
            return changed || !self.parent_captured.contains(path);
        }
        // Not asked of `--sqlite-aware`'s other files: reading the header
        // of every unchanged file would cost each unchanged backup.
        changed
            && (sqlite::is_rollback_journal_db(path)
                || (sqlite::can_add_sidecars(path) && sqlite::is_sqlite(path)))
    }
}

/// A directory of the virtual root: either a source path or an ancestor of one.
#[derive(Default)]
struct VDir {
    children: BTreeMap<Vec<u8>, VEntry>,
}

enum VEntry {
    /// A source path; with the device of `/` when it is an entry of `/`
    /// and `/` itself is the source (`--one-file-system` then stays on the
    /// root filesystem, keeping `/proc` as an empty directory).
    Source(Option<u64>),
    Ancestor(VDir),
}

/// `p` as a backup records a source path: absolute (from the current
/// directory), with `.`, `..`, repeated and trailing slashes resolved as
/// written, not through symlinks.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io("resolve", p, e))?;
    // Normalise `.` and `..` lexically, as the user wrote them.
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Runs a backup and writes the snapshot.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn BackupProgress,
) -> Result<BackupResult> {
    match run_locking(repo, opts, Mode::Write, progress)? {
        Ran::Written(r) => Ok(r),
        Ran::Unchanged | Ran::Counted(_) | Ran::Relinked => {
            unreachable!("Mode::Write always writes, and walks everything")
        }
    }
}

/// What a backup would do, found by doing all of it but the writing: the
/// sources are read, chunked, looked up and compressed as for a backup, and
/// nothing is stored (no pack, index file, dictionary or snapshot; the local
/// index is not changed). Only the shared lock is taken, as a backup takes
/// it, and removed.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The snapshot record a backup would have written (its `tree` is the
    /// ID the root tree would have; no snapshot ID exists).
    pub snapshot: Snapshot,
    /// Its summary: `data_added` is the blob bytes that would be stored
    /// (compressed and encrypted, without pack headers and index files),
    /// `blobs_added` their number.
    pub summary: Summary,
    /// Warnings and errors, one line each.
    pub warnings: Vec<String>,
}

/// Runs a backup that writes nothing (see [`DryRun`]).
pub fn backup_dry_run(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn BackupProgress,
) -> Result<DryRun> {
    match run_locking(repo, opts, Mode::DryRun, progress)? {
        Ran::Counted(d) => Ok(d),
        Ran::Unchanged | Ran::Written(_) | Ran::Relinked => {
            unreachable!("Mode::DryRun only counts, and walks everything")
        }
    }
}

/// Like [`backup`], but writes no snapshot, and returns `None`, when the
/// new root tree equals the parent's: nothing in the sources changed since
/// (for a backup that runs often, so unchanged runs do not pile up
/// snapshots).
pub fn backup_if_changed(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn BackupProgress,
) -> Result<Option<BackupResult>> {
    run_locking(repo, opts, Mode::IfChanged, progress).map(Ran::written)
}

/// Takes the shared lock a backup needs, prepares a job and runs it in
/// `mode`. The job is prepared under the lock: after a wait for the lock
/// (`--retry-lock`), its time and parent are those of when it runs.
fn run_locking(
    repo: &Repository,
    opts: &BackupOptions,
    mode: Mode,
    progress: &dyn BackupProgress,
) -> Result<Ran> {
    let lock = repo.lock(false)?;
    let job = Job::prepare(repo, opts, None)?;
    job.run(repo, opts, &lock, None, mode, progress)
}

/// How [`backup_locked`] relates to an earlier snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct FollowUp<'a> {
    /// The snapshot to use as parent; `None` resolves it as [`backup`]
    /// does (`opts.parent`, else the newest of the same host and paths taken
    /// by `opts.time`).
    pub base: Option<(Id, &'a Snapshot)>,
    /// The paths changed since `base`. `Some` makes the backup incremental:
    /// it starts from `base`'s tree, re-examines only these paths (and
    /// re-lists their ancestors), and reuses every other subtree by ID
    /// without looking at it. Only correct if every change since `base`
    /// is in the set, and only safe if `base` still exists under the lock
    /// (prune keeps exactly what snapshots reference; reused entries are
    /// not looked up in the index). `None` walks everything, with change
    /// detection.
    pub changes: Option<&'a ChangedPaths>,
    /// Write no snapshot if the new root tree equals the parent's.
    pub skip_unchanged: bool,
    /// With `skip_unchanged`: judge by the sources' own entries, not by the
    /// directories above them, whose metadata a full walk reads again and
    /// an incremental one carries over (watch's idle rescans of a tree
    /// under `/tmp` or `~` each wrote a snapshot, and their alert hook ran
    /// in place of the idle one).
    pub sources_only: bool,
    /// Record the snapshot as partial whatever this run reads: entries of
    /// `base` stored with errors (attributes that could not be read, a
    /// database that could not be captured) are carried over unread.
    pub partial: bool,
}

/// Like [`backup`], under a shared `lock` the caller already holds (so it
/// can bring the index up to date first), with the parent and change set
/// given by `follow`. Returns `None` when `follow.skip_unchanged` is set
/// and nothing changed (no snapshot written). The lock is checked again
/// before the snapshot is committed.
pub fn backup_locked(
    repo: &Repository,
    opts: &BackupOptions,
    lock: &LockGuard,
    follow: &FollowUp,
    progress: &dyn BackupProgress,
) -> Result<Option<BackupResult>> {
    if opts.stdin.is_some() && follow.changes.is_some() {
        return Err(Error::InvalidInput(
            "a stream backup cannot be incremental".into(),
        ));
    }
    let base = follow.base.map(|(id, s)| (id, s.clone()));
    if follow.changes.is_some() && base.is_none() {
        return Err(Error::InvalidInput(
            "an incremental backup needs the snapshot the changes are relative to".into(),
        ));
    }
    let mut job = Job::prepare(repo, opts, base.clone())?;
    job.carried_partial = follow.partial;
    let mode = if follow.skip_unchanged && follow.sources_only {
        Mode::IfSourcesChanged
    } else if follow.skip_unchanged {
        Mode::IfChanged
    } else {
        Mode::Write
    };
    // An incremental pass may be walked again whole: its warnings are told
    // once it is kept, or the second pass told each of them again.
    let held = Held {
        to: progress,
        told: Mutex::new(Vec::new()),
    };
    let first: &dyn BackupProgress = if follow.changes.is_some() {
        &held
    } else {
        progress
    };
    let ran = job.run(repo, opts, lock, follow.changes, mode, first);
    if !matches!(ran, Ok(Ran::Relinked)) {
        held.release();
    }
    match ran? {
        // The other names of the file, reused from the base unseen, keep
        // their old link count and content: restored, they would be apart
        // from the name read. Walked whole, every name is stat'ed again;
        // what the first walk stored is found in the index.
        Ran::Relinked => {
            let job = Job::prepare(repo, opts, base)?;
            let ran = job.run(repo, opts, lock, None, mode, progress)?;
            Ok(ran.written().map(|r| BackupResult {
                walked_all: true,
                ..r
            }))
        }
        ran => Ok(ran.written()),
    }
}

/// A pass's progress, its warnings held back until [`Held::release`].
struct Held<'p> {
    to: &'p dyn BackupProgress,
    told: Mutex<Vec<Told>>,
}

/// What [`Held`] holds back.
enum Told {
    /// [`BackupProgress::warning`].
    Warning(PathBuf, String, bool),
    /// [`BackupProgress::read_again`].
    ReadAgain(PathBuf),
}

impl Held<'_> {
    /// Tells what was held back, in order.
    fn release(self) {
        for told in self.told.into_inner().expect("held") {
            match told {
                Told::Warning(path, message, is_error) => {
                    self.to.warning(&path, &message, is_error)
                }
                Told::ReadAgain(path) => self.to.read_again(&path),
            }
        }
    }
}

impl BackupProgress for Held<'_> {
    fn file_done(&self, path: &Path, bytes: u64) {
        self.to.file_done(path, bytes)
    }
    fn bytes_read(&self, n: u64) {
        self.to.bytes_read(n)
    }
    fn content_reused(&self, bytes: u64) {
        self.to.content_reused(bytes)
    }
    fn file_status(&self, path: &Path, status: FileStatus, bytes: u64) {
        self.to.file_status(path, status, bytes)
    }
    fn warning(&self, path: &Path, message: &str, is_error: bool) {
        let mut told = self.told.lock().expect("held");
        told.push(Told::Warning(
            path.to_path_buf(),
            message.to_string(),
            is_error,
        ));
    }
    fn read_again(&self, path: &Path) {
        let mut told = self.told.lock().expect("held");
        told.push(Told::ReadAgain(path.to_path_buf()));
    }
    fn cancelled(&self) -> bool {
        self.to.cancelled()
    }
}

/// What [`Job::run`] does at the end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Write the snapshot.
    Write,
    /// Write it unless the root tree equals the parent's.
    IfChanged,
    /// Write it unless every source's entry equals the parent's.
    IfSourcesChanged,
    /// Store nothing; count what would be stored.
    DryRun,
}

/// What [`Job::run`] did.
enum Ran {
    /// Nothing changed ([`Mode::IfChanged`], [`Mode::IfSourcesChanged`]):
    /// no snapshot.
    Unchanged,
    /// The snapshot was written.
    Written(BackupResult),
    /// An incremental walk read a file with other names (see
    /// [`BackupResult::walked_all`]): nothing was written but blobs, and
    /// the backup must walk everything.
    Relinked,
    /// A dry run's findings.
    Counted(DryRun),
}

impl Ran {
    fn written(self) -> Option<BackupResult> {
        match self {
            Ran::Written(r) => Some(r),
            Ran::Unchanged | Ran::Counted(_) | Ran::Relinked => None,
        }
    }
}

/// A backup whose sources and parent are resolved.
struct Job {
    start: DateTime<Local>,
    hostname: String,
    paths: Vec<PathBuf>,
    path_strings: Vec<String>,
    parent: Option<(Id, Snapshot)>,
    /// Sources given that could not be found, reported once the backup runs.
    missing: Missing,
    /// Record the snapshot as partial whatever this run reads (see
    /// [`FollowUp::partial`]).
    carried_partial: bool,
}

impl Job {
    fn prepare(
        repo: &Repository,
        opts: &BackupOptions,
        parent: Option<(Id, Snapshot)>,
    ) -> Result<Job> {
        repo.ensure_whole()?;
        crate::snapshot::check_user_tags(&opts.tags)?;
        let start = Local::now();
        let hostname = opts.host.clone().unwrap_or_else(crate::host::hostname);
        let mut paths = Vec::new();
        let mut missing = Vec::new();
        if let Some(src) = &opts.stdin {
            paths.push(PathBuf::from("/").join(stdin::stream_path(&src.filename)?.join("/")));
        } else {
            // A database named for capture that is no regular file (a
            // symlink, a directory) would be backed up as what it is,
            // without a capture and without a word.
            for p in &opts.sqlite {
                if let Ok(m) = std::fs::symlink_metadata(p)
                    && !m.is_file()
                {
                    let what = if m.is_symlink() {
                        "a symbolic link: give the database's own path"
                    } else if m.is_dir() {
                        "a directory: give the database file, or use --sqlite-aware"
                    } else {
                        "not a regular file"
                    };
                    return Err(Error::InvalidInput(format!(
                        "--sqlite {}: {what}",
                        p.display()
                    )));
                }
            }
            let all: Vec<PathBuf> = opts.paths.iter().chain(&opts.sqlite).cloned().collect();
            (paths, missing) = sources_found(&all)?;
        }
        // The snapshot names every source asked for, found or not: its
        // group (parent, retention) must not change while one is away.
        let mut asked: Vec<PathBuf> = paths.clone();
        asked.extend(missing.iter().map(|(p, _)| p.clone()));
        asked.sort();
        asked.dedup();
        let path_strings = path_strings(&asked);
        let parent = match (parent, &opts.parent) {
            (Some(p), _) => Some(p),
            (None, Some(id)) => Some((*id, repo.load_snapshot(id)?)),
            // A damaged record (check names it) must not stop every backup:
            // it cannot be a parent anyway.
            // One dated ahead is passed over, as by `latest`: every
            // backup after it re-read what changed since it.
            // Dated with `--time`, the backup follows the newest snapshot
            // taken by then, as restic does (a back-filled history must
            // not record a later snapshot as its parent).
            (None, None) => crate::snapshot::newest(repo.readable_snapshots()?, |s| {
                s.hostname == hostname
                    && s.paths == path_strings
                    && opts.time.is_none_or(|t| s.time <= t)
            }),
        };
        Ok(Job {
            start,
            hostname,
            paths,
            path_strings,
            parent,
            missing,
            carried_partial: false,
        })
    }

    fn run(
        self,
        repo: &Repository,
        opts: &BackupOptions,
        lock: &LockGuard,
        changes: Option<&ChangedPaths>,
        mode: Mode,
        progress: &dyn BackupProgress,
    ) -> Result<Ran> {
        let Job {
            start,
            hostname,
            paths,
            path_strings,
            parent,
            missing,
            carried_partial,
        } = self;
        // An incremental backup cannot do without the base tree: it is
        // what the unchanged parts are taken from.
        let mut parent_unreadable = None;
        let parent_tree = match &parent {
            Some((_, s)) if changes.is_some() => Some(repo.load_tree(&s.tree)?),
            // A full backup does without: it reads every file again (told
            // below), as after `repair index` dropped a damaged pack.
            // `--force` reads every file anyway, but still takes the atimes
            // and the summary's "unmodified" from the parent.
            Some((_, s)) => match repo.load_tree(&s.tree) {
                Ok(t) => Some(t),
                Err(e) => {
                    parent_unreadable = Some((s.tree, e));
                    None
                }
            },
            _ => None,
        };
        // Synced again if the parent's load above met damage in it.
        let view = repo
            .synced_index()?
            .backup_view(parent.as_ref().map(|(id, _)| id))?;
        let clears = view.clears;
        // Not as patterns: a user's `!` pattern after them took them back.
        let mut exclude = opts.exclude.clone();
        crate::own_paths::left_out(repo, &paths, &mut exclude);
        // Named alone, such sources made an empty snapshot with exit 0;
        // beside others (a glob, a `find` list), they are told and left.
        let own_only = crate::own_paths::only_own(&paths, &exclude.always);
        const OWN_ONLY: &str = "the repository's own files (or its cache), which a backup \
                                leaves out (`cairn copy` copies a repository's snapshots to \
                                another)";
        if !own_only.is_empty() && own_only.len() == paths.len() {
            return Err(Error::InvalidInput(format!(
                "{}: {OWN_ONLY}: the snapshot would be empty",
                own_only[0].display()
            )));
        }
        let ctx = Ctx {
            repo,
            filter: Filter::new(&exclude)?.for_sources(paths.iter().cloned()),
            owners: Owners::default(),
            saver: if mode == Mode::DryRun {
                BlobSaver::counting(repo)
            } else {
                BlobSaver::new(repo).with_lock(lock)
            },
            progress,
            counters: Counters::default(),
            warnings: Mutex::new(Vec::new()),
            force: opts.force,
            change_check: opts.change_check,
            fresh_atimes: opts.atime,
            sqlite: opts
                .sqlite
                .iter()
                .map(|p| absolute(p))
                .collect::<Result<_>>()?,
            sqlite_aware: opts.sqlite_aware,
            sqlite_lock_timeout: opts.sqlite_lock_timeout.unwrap_or(sqlite::LOCK_TIMEOUT),
            databases: Mutex::new(opts.databases.clone()),
            parent_captured: parent
                .iter()
                .flat_map(|(_, s)| &s.databases)
                .filter(|d| d.kind == "sqlite")
                .map(|d| PathBuf::from(&d.path))
                .collect(),
            base_root: changes.and(parent_tree.clone()),
            index: view.reader,
            parent_complete: parent.as_ref().is_some_and(|(_, s)| !s.partial),
            chunking: permits::Permits::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            parent_verified: view.parent_verified,
            lookups_skipped: AtomicU64::new(0),
            damaged_parent_trees: Mutex::new(Vec::new()),
            parent_start: parent.as_ref().map(|(_, s)| started(s)),
            sources: paths.iter().cloned().collect(),
            leads: crate::pathmatch::nested_leads(&paths),
            sidecars: Mutex::default(),
            listed_sidecars: Mutex::default(),
            relinked: AtomicBool::new(false),
        };
        for (path, e) in missing {
            ctx.leave_out(&path, format!("not backed up: {e}"));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(
                opts.read_threads
                    .unwrap_or_else(default_read_threads)
                    .max(1),
            )
            .thread_name(|i| format!("cairn-backup-{i}"))
            .build()
            .map_err(|e| Error::Backend(format!("cannot start the backup's threads: {e}")))?;
        // Warnings about the backup as a whole name its first source.
        let whole = paths.first().map_or(Path::new("/"), PathBuf::as_path);
        for s in &own_only {
            ctx.warn(s, format!("{OWN_ONLY}: stored empty"), false);
        }
        // A named source is kept whatever the patterns say of it, but not
        // what is below it: `backup ~/Documents --exclude Documents` stored
        // an empty directory without a word.
        // Not one with another source below it (a `find` list names what
        // is below too, kept as named), and stat'ed only if matched.
        for s in paths.iter().filter(|s| {
            ctx.filter.source_matched(s, true)
                && !ctx.leads_to_source(s)
                && std::fs::metadata(s).is_ok_and(|m| m.is_dir())
        }) {
            ctx.warn(
                s,
                "an exclude pattern matches this source: the directory is kept, being named, \
                 but the pattern leaves out what is below it (all of it, unless a `!` \
                 pattern keeps some)"
                    .into(),
                false,
            );
        }
        match parent_unreadable {
            // Still indexed: see `load_subtree`.
            Some((id, e)) if ctx.index.lookup_tree(&id).is_ok_and(|l| l.is_some()) => {
                ctx.parent_tree_unreadable(id, &e)
            }
            Some((_, e)) => ctx.warn(
                whole,
                format!(
                    "the parent snapshot's tree cannot be read ({e}): every file is read again"
                ),
                false,
            ),
            None => {}
        }
        let tree = pool.install(|| match &opts.stdin {
            Some(src) => stdin_tree(&ctx, src),
            None => {
                let root = virtual_root(&paths)?;
                let scope = match changes {
                    Some(c) => Scope::Changed(Some(c.root())),
                    None => Scope::Everything,
                };
                save_vdir(&ctx, Path::new("/"), &root, parent_tree.as_ref(), scope)
            }
        })?;
        // A signal during the last read, or a stream cut short by it (Ctrl-C
        // stops the producer too), must not be committed as complete.
        ctx.check_cancelled()?;
        if changes.is_some() && ctx.relinked.load(Ordering::Relaxed) {
            ctx.saver.flush()?;
            return Ok(Ran::Relinked);
        }
        let damaged = std::mem::take(&mut *ctx.damaged_parent_trees.lock().expect("damaged"));
        if let Some((_, why)) = damaged.first() {
            // Partial: the snapshot may share the damaged listings.
            ctx.warn(
                whole,
                format!(
                    "{} directory listing(s) of the parent snapshot cannot be read ({why}); their \
                     files were read again, but this snapshot may refer to the same damaged \
                     data: run `cairn check --read-data`, then follow docs/recovery.md \
                     section 7",
                    damaged.len()
                ),
                true,
            );
        }
        let (tree_id, _) = ctx.saver.save(BlobType::Tree, &tree.encode())?;
        ctx.saver.flush()?;
        // A run that could not read everything is written (partial), so
        // that it is reported as such each time, not skipped as unchanged;
        // and a clean run after a partial one is written, or the partial
        // one stayed the newest (its unreadable entry since excluded).
        let same = |s: &Snapshot| match mode {
            Mode::IfChanged => s.tree == tree_id,
            Mode::IfSourcesChanged => {
                s.tree == tree_id || same_sources(repo, &s.tree, &tree_id, &paths)
            }
            Mode::Write | Mode::DryRun => false,
        };
        if parent.as_ref().is_some_and(|(_, s)| same(s) && !s.partial)
            && ctx.counters.errors.load(Ordering::Relaxed) == 0
        {
            return Ok(Ran::Unchanged);
        }

        let c = &ctx.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut summary = Summary {
            files_new: load(&c.files_new),
            files_changed: load(&c.files_changed),
            files_unmodified: load(&c.files_unmodified),
            dirs: load(&c.dirs),
            others: load(&c.others),
            bytes_read: load(&c.bytes_read),
            total_bytes: load(&c.total_bytes),
            data_added: ctx.saver.bytes_written.load(Ordering::Relaxed),
            blobs_added: ctx.saver.blobs_added.load(Ordering::Relaxed),
            errors: load(&c.errors),
            backup_start: start.to_rfc3339(),
            backup_end: Local::now().to_rfc3339(),
        };
        if let (Some(_), Some(base)) = (
            changes,
            parent.as_ref().and_then(|(_, s)| s.summary.as_ref()),
        ) {
            // Totals describe the whole tree: the base's, less what was
            // re-examined, plus what that became.
            let total = |before: u64, now: u64, removed: &AtomicU64| {
                (before + now).saturating_sub(load(removed))
            };
            let files_before = base.files_new + base.files_changed + base.files_unmodified;
            let files_now = summary.files_new + summary.files_changed + summary.files_unmodified;
            let files = total(files_before, files_now, &c.removed_files);
            summary.files_unmodified =
                files.saturating_sub(summary.files_new + summary.files_changed);
            summary.dirs = total(base.dirs, summary.dirs, &c.removed_dirs);
            summary.others = total(base.others, summary.others, &c.removed_others);
            summary.total_bytes = total(base.total_bytes, summary.total_bytes, &c.removed_bytes);
        }
        let mut databases = ctx.databases.into_inner().expect("databases");
        if let Some((_, base)) = &parent {
            // Databases stored as the base stored them (no event touched
            // them, or they are unchanged since): their capture records
            // still hold.
            for rec in &base.databases {
                if !databases.iter().any(|d| d.path == rec.path)
                    && let Some(old) = node_at(repo, &base.tree, Path::new(&rec.path))
                    && node_at(repo, &tree_id, Path::new(&rec.path))
                        .is_some_and(|n| n.content == old.content)
                {
                    databases.push(rec.clone());
                }
            }
        }
        databases.sort_by(|a, b| a.path.cmp(&b.path));
        let snapshot = Snapshot {
            time: opts.time.unwrap_or_else(|| start.fixed_offset()),
            tree: tree_id,
            paths: path_strings,
            hostname,
            username: crate::host::username(),
            tags: crate::snapshot::clean_tags(&opts.tags),
            parent: parent.map(|(id, _)| id),
            program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
            partial: summary.errors > 0 || carried_partial,
            summary: Some(summary.clone()),
            hold: false,
            original: None,
            copied_from: None,
            former: Vec::new(),
            unknown: Default::default(),
            databases,
        };
        if mode == Mode::DryRun {
            return Ok(Ran::Counted(DryRun {
                snapshot,
                summary,
                warnings: ctx.warnings.into_inner().expect("warnings"),
            }));
        }
        let snapshot_id = crate::lock::write_snapshot(lock, repo, &snapshot)?;
        // Every blob of the new snapshot is now indexed: new ones were added
        // by the saver, reused ones were looked up in the view taken at the
        // start (or came from a verified parent), and an incremental
        // backup's untouched subtrees are the base's. `mark_verified` records
        // it only if nothing cleared the database since that view. It is a
        // cache: failing to record costs the next backup its lookups.
        if changes.is_none() || ctx.parent_verified {
            let _ = repo.index().mark_verified(&snapshot_id, clears);
        }
        Ok(Ran::Written(BackupResult {
            snapshot_id,
            snapshot,
            summary,
            warnings: ctx.warnings.into_inner().expect("warnings"),
            index_lookups_skipped: ctx.lookups_skipped.load(Ordering::Relaxed),
            walked_all: changes.is_none(),
        }))
    }
}

/// Whether every source in `paths` has the same entry in the trees `a` and
/// `b`: the snapshots differ at most in the directories above them. The
/// root as a source has no entry of its own: then the trees must be equal.
fn same_sources(repo: &Repository, a: &Id, b: &Id, paths: &[PathBuf]) -> bool {
    paths.iter().all(|p| {
        let x = node_at(repo, a, p);
        x.is_some() && x == node_at(repo, b, p)
    })
}

/// The entry at the absolute `path` in the tree `root`, if there is one.
fn node_at(repo: &Repository, root: &Id, path: &Path) -> Option<Node> {
    let comps = crate::pathmatch::components(path);
    let (last, dirs) = comps.split_last()?;
    let mut tree = repo.load_tree(root).ok()?;
    for c in dirs {
        let sub = tree.find(c)?.subtree?;
        tree = repo.load_tree(&sub).ok()?;
    }
    tree.find(last).cloned()
}

/// The absolute, lexically normalised, sorted and deduplicated form of
/// backup sources; each must exist.
pub fn source_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let (found, mut missing) = sources_found(paths)?;
    match missing.is_empty() {
        true => Ok(found),
        false => Err(missing.swap_remove(0).1),
    }
}

/// Sources that could not be found, with why.
type Missing = Vec<(PathBuf, Error)>;

/// [`source_paths`] for a backup, which goes on without the sources that
/// are not there (each reported, the snapshot partial), as restic does:
/// one path gone from a list must not stop the backup of the others. If
/// none is found, the first one's error.
fn sources_found(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Missing)> {
    if paths.is_empty() {
        return Err(Error::InvalidInput(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for p in paths {
        let abs = absolute(p)?;
        match source_path(p, abs.clone()) {
            Ok(a) => found.push(a),
            // A source that is not there or cannot be reached (no access,
            // a symlink loop) is named and left out, as an unreadable entry
            // inside a source is: one bad path in a list must not cost the
            // backup of the others.
            Err(Error::Io { source, .. }) => missing.push((abs, Error::io("stat", p, source))),
            Err(e) => return Err(e),
        }
    }
    if found.is_empty() {
        return Err(missing.swap_remove(0).1);
    }
    found.sort();
    found.dedup();
    // A source below another that is no directory, a symlink to one (`/home`
    // on Fedora Atomic, given with `/home/me`), cannot be stored: the tree
    // holds the link there, not a path through it, and the source below was
    // dropped without a word. Named and left out; the link is kept.
    let mut kept: Vec<PathBuf> = Vec::with_capacity(found.len());
    for p in found {
        // The shortest source covering it is the one whose walk stores
        // what lies between; `/` covers everything.
        let link = kept
            .iter()
            .find(|k| p.starts_with(k) && **k != p)
            .and_then(|k| not_a_dir_between(k, &p));
        match link {
            Some(link) => {
                let why = format!(
                    "it lies below {}, a symbolic link that another source stores as one: \
                     give the path the link points to instead",
                    link.display()
                );
                missing.push((
                    p.clone(),
                    Error::io("back up", &p, std::io::Error::other(why)),
                ));
            }
            None => kept.push(p),
        }
    }
    Ok((kept, missing))
}

/// The first of `from` and the paths between it and `to` (not `to`
/// itself) that is no directory (lstat: a symlink to one is stored as the
/// link), if any.
fn not_a_dir_between(from: &Path, to: &Path) -> Option<PathBuf> {
    let mut between: Vec<&Path> = to
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(from))
        .collect();
    between.reverse();
    between
        .into_iter()
        .find(|a| !std::fs::symlink_metadata(a).is_ok_and(|m| m.is_dir()))
        .map(Path::to_path_buf)
}

/// One source `p` (made absolute: `abs`) as the backup reads it.
fn source_path(p: &Path, mut abs: PathBuf) -> Result<PathBuf> {
    let meta = std::fs::symlink_metadata(&abs).map_err(|e| Error::io("stat", &abs, e))?;
    // `link/` names the directory a link points to, as it does for the
    // shell, tar and rsync (and a file with a trailing slash, nothing).
    let bytes = p.as_os_str().as_bytes();
    if bytes.ends_with(b"/") || bytes.ends_with(b"/.") {
        let dir = std::fs::canonicalize(&abs).map_err(|e| Error::io("resolve", p, e))?;
        if !dir.is_dir() {
            return Err(Error::io(
                "stat",
                p,
                std::io::Error::from_raw_os_error(libc::ENOTDIR),
            ));
        }
        if meta.file_type().is_symlink() {
            abs = dir;
        }
    }
    Ok(abs)
}

/// Sources as a snapshot records them (`Snapshot::paths`): a byte that is
/// not part of valid UTF-8 written as `\xNN` (format-spec §13). Written as
/// U+FFFD, two sources that differed only in such bytes were one: the
/// second took the first's snapshot for its parent, and retention, one
/// group for both, forgot the first's snapshots.
pub fn path_strings(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| crate::walk::escaped(p.as_os_str().as_bytes()))
        .collect()
}

/// The directories that lead to the sources `paths` (absolute, sorted).
/// The root tree of a snapshot holds the entries of `/`, so when `/` itself
/// is a source each of its entries is one.
fn virtual_root(paths: &[PathBuf]) -> Result<VDir> {
    let mut root = VDir::default();
    for p in paths {
        let comps = crate::pathmatch::components(p);
        if comps.is_empty() {
            let dev = std::fs::symlink_metadata(p)
                .map_err(|e| Error::io("stat", p, e))?
                .dev();
            for e in std::fs::read_dir(p).map_err(|e| Error::io("list", p, e))? {
                let e = e.map_err(|e| Error::io("list", p, e))?;
                let name = e.file_name().into_vec();
                root.children.insert(name, VEntry::Source(Some(dev)));
            }
        } else {
            insert_path(&mut root, &comps);
        }
    }
    Ok(root)
}

/// `node`, the directory at `path` that the walk does not enter (a mount
/// point under `-x`, excluded, marked by `--exclude-if-present` or not
/// readable), with only the way to the sources below it: a source named
/// on its own is read whole, as it is when it is the only one.
fn through_to_sources(
    ctx: &Ctx,
    path: &Path,
    mut node: Node,
    parent: Option<&Node>,
) -> Result<Option<Node>> {
    let depth = crate::pathmatch::components(path).len();
    let mut below: Vec<&PathBuf> = ctx
        .sources
        .iter()
        .filter(|s| *s != path && s.starts_with(path))
        .collect();
    // Sorted, so that a source comes before the sources below it (which
    // its own walk then reaches).
    below.sort();
    let mut vdir = VDir::default();
    for s in below {
        insert_path(&mut vdir, &crate::pathmatch::components(s)[depth..]);
    }
    let ptree = load_subtree(ctx, parent);
    let tree =
        crate::deep::deeper(|| save_vdir(ctx, path, &vdir, ptree.as_ref(), Scope::Everything))?;
    node.kind = NodeKind::Dir;
    node.subtree = Some(save_tree(ctx, &tree, parent, ptree.as_ref())?);
    Ok(Some(node))
}

fn insert_path(dir: &mut VDir, comps: &[Vec<u8>]) {
    let Some((first, rest)) = comps.split_first() else {
        return;
    };
    if rest.is_empty() {
        // A source already there (an entry of `/`) covers it.
        dir.children
            .entry(first.clone())
            .or_insert(VEntry::Source(None));
        return;
    }
    let entry = dir
        .children
        .entry(first.clone())
        .or_insert_with(|| VEntry::Ancestor(VDir::default()));
    if let VEntry::Ancestor(d) = entry {
        insert_path(d, rest);
    } // A source that is an ancestor of another source already covers it.
}

fn child_parent<'t>(parent: Option<&'t Tree>, name: &[u8]) -> Option<&'t Node> {
    parent.and_then(|t| t.find(name))
}

fn load_subtree(ctx: &Ctx, node: Option<&Node>) -> Option<Tree> {
    let id = node.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
    // A parent tree that cannot be read only costs change detection, but
    // a damaged one is told: the directory's new listing may be the same
    // bytes, which the index says are stored (in the damaged pack).
    let loc = ctx.index.lookup_tree(&id).ok()??;
    match ctx.repo.load_tree_at(&loc) {
        Ok(t) => Some(t),
        // Indexed but unreadable (damaged, or its pack gone): the same
        // bytes saved again would be taken as stored.
        Err(e) => {
            ctx.parent_tree_unreadable(id, &e);
            None
        }
    }
}

/// How much of the filesystem a backup looks at below some directory.
#[derive(Clone, Copy)]
enum Scope<'c> {
    /// All of it (a full backup).
    Everything,
    /// Only the changed paths: `None` when nothing changed below.
    Changed(Option<&'c Dirty>),
}

fn save_vdir(
    ctx: &Ctx,
    path: &Path,
    dir: &VDir,
    parent: Option<&Tree>,
    scope: Scope,
) -> Result<Tree> {
    let mut nodes = Vec::new();
    for (name, entry) in &dir.children {
        let child = path.join(OsStr::from_bytes(name));
        let pnode = child_parent(parent, name);
        let sub = match scope {
            Scope::Everything => Scope::Everything,
            Scope::Changed(d) => Scope::Changed(d.and_then(|d| d.child(name))),
        };
        match entry {
            VEntry::Source(dev) => {
                let saved = match sub {
                    Scope::Everything => {
                        save_path(ctx, &child, &child, None, name.clone(), pnode, *dev)?
                    }
                    Scope::Changed(d) => crate::deep::deeper(|| {
                        changes::save_changed(
                            ctx,
                            &child,
                            &child,
                            None,
                            name.clone(),
                            pnode,
                            d,
                            *dev,
                        )
                    })?,
                };
                if let Some(n) = saved {
                    nodes.push(n);
                }
            }
            VEntry::Ancestor(sub_dir) => {
                // The directory the path leads through, not a symlink that
                // names it (`/home` -> `var/home`): recorded as a directory,
                // it must carry the directory's mode, owner and xattrs.
                let m = match std::fs::metadata(&child) {
                    Ok(m) => m,
                    // Removed (or replaced by a file) since the backup
                    // began, a disk unplugged: the sources below it are
                    // gone, as a source that vanished is.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                        ) =>
                    {
                        ctx.leave_out(
                            &child,
                            "vanished during the backup (sources lie below it)".into(),
                        );
                        continue;
                    }
                    Err(e) => return Err(Error::io("stat", &child, e)),
                };
                let mut node = node_from_metadata(name.clone(), &m);
                node.user = ctx.owners.user_name(node.uid);
                node.group = ctx.owners.group_name(node.gid);
                // A directory one may pass through but not read (0711)
                // keeps its attributes to itself: a warning, not an error.
                match crate::fsmeta::open_noatime(&child, true)
                    .and_then(|d| crate::fsmeta::read_xattrs_of(&d))
                {
                    Ok(x) => node.xattrs = x,
                    Err(e) => ctx.warn(
                        &child,
                        format!("cannot read extended attributes: {e}"),
                        false,
                    ),
                }
                keep_atime(ctx, pnode, &mut node);
                let ptree = load_subtree(ctx, pnode);
                let tree =
                    crate::deep::deeper(|| save_vdir(ctx, &child, sub_dir, ptree.as_ref(), sub))?;
                node.kind = NodeKind::Dir;
                node.subtree = Some(save_tree(ctx, &tree, pnode, ptree.as_ref())?);
                nodes.push(node);
            }
        }
    }
    // A database given as a source that could not be captured has its
    // journal files stored beside it here.
    Ok(tree_of(ctx, path, nodes))
}

/// The parent's node for the same entry if nothing about it can have
/// changed since the parent recorded it: same kind, inode and ctime (any
/// change to extended attributes, ACLs, mode, owner or a link's target
/// moves the ctime or makes a new inode), in a parent that read everything.
fn same_entry<'p>(ctx: &Ctx, parent: Option<&'p Node>, node: &Node) -> Option<&'p Node> {
    parent.filter(|p| ctx.parent_complete && !ctx.force && only_accessed(ctx, p, node))
}

/// Whether nothing but the access time can have changed between `p`, as
/// the parent recorded it, and `node`: any change to content, mode, owner,
/// links or extended attributes moves the ctime, unless it came within a
/// coarse clock's tick of the parent's backup ([`racy`]).
fn only_accessed(ctx: &Ctx, p: &Node, node: &Node) -> bool {
    !racy(ctx, p)
        && p.kind == node.kind
        && p.inode == node.inode
        && p.recorded_device() == node.recorded_device()
        && p.ctime == node.ctime
        && p.mtime == node.mtime
        && p.size == node.size
}

/// Gives `node` the atime its `parent` recorded if it was only read or
/// listed since (unless `--atime`): a fresh atime would change its tree and
/// every tree above, so that reading alone made new trees (borg leaves
/// atimes out by default for this reason; cairn keeps them, as of the
/// entry's last other change).
fn keep_atime(ctx: &Ctx, parent: Option<&Node>, node: &mut Node) {
    // A file replaced within a coarse clock's tick of the parent's backup,
    // same size and inode, would keep an atime not its own: `only_accessed`
    // leaves those out.
    if let Some(p) = parent.filter(|p| !ctx.fresh_atimes && only_accessed(ctx, p, node)) {
        node.atime = p.atime;
    }
}

/// Stats `path` into a node with owner names and extended attributes;
/// `Ok(None)` when it is excluded, vanished, or cannot be stat'ed (warned).
/// The extended attributes of an entry unchanged since `parent` are taken
/// from it instead of being listed again (a system call per entry).
fn stat_node(
    ctx: &Ctx,
    path: &Path,
    io: &Path,
    dir: Option<&File>,
    name: Vec<u8>,
    parent: Option<&Node>,
) -> Result<Option<Node>> {
    ctx.check_cancelled()?;
    // Before the stat: another user's mount refuses it even to root.
    if ctx.filter.mount_point_left_out(path) && !ctx.leads_to_source(path) {
        return Ok(None);
    }
    // `path` names the entry for people and patterns; `io` is what the
    // kernel is given (short even when `path` exceeds PATH_MAX). Inside an
    // open directory `dir`, `fstatat` on its descriptor spares the kernel
    // the walk through `/proc/self/fd` that `io` costs (a third of a warm
    // unchanged re-backup's samples went there).
    let stat = match dir {
        Some(d) => crate::fsmeta::lstat_at(d, OsStr::from_bytes(&name)),
        None => std::fs::symlink_metadata(io).map(|m| crate::fsmeta::Stat::from(&m)),
    };
    let (m, refused) = match stat {
        Ok(m) => (m, false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ctx.vanished(path);
            return Ok(None);
        }
        // Not entered anyway: kept as an empty directory, as any other
        // mount point, not an error making the snapshot partial (and
        // `restore --delete` refuse it).
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && ctx.filter.one_file_system
                && let Some(m) =
                    dir.and_then(|d| crate::fsmeta::refused_mount(d, OsStr::from_bytes(&name))) =>
        {
            (m, true)
        }
        Err(e) => {
            ctx.leave_out(path, format!("cannot stat: {e}"));
            return Ok(None);
        }
    };
    // A directory leading to another source is judged in `save_node`.
    if ctx.filter.excludes_entry(path, m.is_dir(), m.file_size())
        && !(m.is_dir() && ctx.leads_to_source(path))
    {
        return Ok(None);
    }
    if ctx.filter.always_by_id(m.dev(), m.ino())
        || ctx.filter.mount_root_left_out(path, m.dev(), m.ino()) && !ctx.leads_to_source(path)
    {
        return Ok(None);
    }
    let mut node = m.node(name);
    node.user = ctx.owners.user_name(node.uid);
    node.group = ctx.owners.group_name(node.gid);
    if refused {
        ctx.warn(
            path,
            "a filesystem mounted here refuses even root (another user's FUSE mount?): not \
             entered (--one-file-system), kept as an empty directory without its metadata"
                .into(),
            false,
        );
        return Ok(Some(node));
    }
    if let Some(p) = same_entry(ctx, parent, &node) {
        node.xattrs = p.xattrs.clone();
    } else if node.kind != NodeKind::Socket {
        match read_xattrs(io) {
            Ok(x) => node.xattrs = x,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ctx.vanished(path);
                return Ok(None);
            }
            Err(e) => ctx.warn(path, format!("cannot read extended attributes: {e}"), true),
        }
    }
    keep_atime(ctx, parent, &mut node);
    Ok(Some(node))
}

/// Where an entry is opened from: its open parent directory and its name,
/// or `None` to go by the entry's `io` path.
type At<'a> = Option<(&'a File, &'a [u8])>;

/// Opens an entry for reading without moving its access time, through its
/// parent's descriptor when there is one; a symbolic link put in its place
/// since it was stat'ed is refused as "no longer" what it was, not followed.
fn open_entry(io: &Path, at: At, is_dir: bool) -> std::io::Result<File> {
    match at {
        Some((dir, name)) => crate::fsmeta::open_noatime_at(dir, OsStr::from_bytes(name), is_dir),
        None => crate::fsmeta::open_noatime_nofollow(io, is_dir),
    }
    .map_err(|e| match e.raw_os_error() {
        // O_NOFOLLOW's answer; with O_DIRECTORY a link is "not a directory".
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            let was = if is_dir {
                "a directory"
            } else {
                "a regular file"
            };
            std::io::Error::other(format!("no longer {was} (replaced while the backup ran)"))
        }
        _ => e,
    })
}

/// The entry names of directory `path`, sorted (only its markers if a
/// marker file excludes it); `None` if it cannot be read (warned). Counts
/// the directory.
fn list_dir(ctx: &Ctx, path: &Path, io: &Path, at: At) -> Option<(File, Vec<Vec<u8>>)> {
    let opened = open_entry(io, at, true).and_then(|d| {
        let names = crate::fsmeta::dir_names(&d, |e| {
            ctx.leave_out(path, format!("error listing directory: {e}"))
        })?;
        Ok((d, names))
    });
    let (dirf, mut names) = match opened {
        Ok(x) => x,
        // Deleted since its parent was listed (`rm -rf build/` during the
        // backup): gone as a vanished file is, not an entry that could not
        // be read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ctx.vanished(path);
            return None;
        }
        Err(e) => {
            ctx.leave_out(path, format!("cannot read directory: {e}"));
            return None;
        }
    };
    if ctx.filter.excludes_dir_by_marker(io, &names) {
        let leads = ctx.leads_to_source(path);
        // A source kept its contents without a word, unlike one a pattern
        // matches.
        if ctx.sources.contains(path) {
            let kept = if leads {
                "the sources named below it"
            } else {
                "the marker alone"
            };
            ctx.warn(
                path,
                format!(
                    "a marker file in this source (--exclude-caches, --exclude-if-present) \
                     leaves out what is below it: the directory is kept, being named, with \
                     {kept}"
                ),
                false,
            );
        }
        // One that leads to another source is gone through to it alone.
        if leads {
            return None;
        }
        ctx.filter.keep_markers(io, &mut names);
    }
    // The capture includes what the journal holds; a copy of the journal
    // itself would only be torn. (A database found by --sqlite-aware that
    // cannot be captured gets its journal back: see `save_sidecars`.) Nor
    // may the walk open them while a capture runs: closing any descriptor
    // of the `-shm` drops the capture's locks on it (POSIX locks are the
    // process's), and a checkpoint then overwrote pages mid-copy.
    if ctx.sqlite_aware || !ctx.sqlite.is_empty() {
        names.retain(|n| {
            let Some((base, _)) = sqlite::sidecar_of(n) else {
                return true;
            };
            let db = path.join(OsStr::from_bytes(base));
            let keep = !(ctx.sqlite.contains(&db) || ctx.sqlite_aware && sqlite::is_live(&db));
            if keep {
                let sc = path.join(OsStr::from_bytes(n));
                ctx.listed_sidecars.lock().expect("listed").insert(sc);
            }
            keep
        });
    }
    ctx.counters.dirs.fetch_add(1, Ordering::Relaxed);
    names.sort();
    Some((dirf, names))
}

/// The path of entry `n` of directory `dirf` (at `path`, reached as `io`),
/// and the path to reach it by: through the open directory where
/// `/proc/self/fd` works.
fn child_paths(dirf: &File, path: &Path, io: &Path, n: &[u8]) -> (PathBuf, PathBuf) {
    let n = OsStr::from_bytes(n);
    let child_io = if crate::fsmeta::fd_paths_work() {
        crate::fsmeta::at(dirf, n)
    } else {
        // Without /proc, by the full path (up to PATH_MAX).
        io.join(n)
    };
    (path.join(n), child_io)
}

/// Backs up one filesystem entry; `Ok(None)` when it was excluded or skipped
/// with a warning. `root_dev` is the device of the source path it lies under.
fn save_path(
    ctx: &Ctx,
    path: &Path,
    io: &Path,
    dir: Option<&File>,
    name: Vec<u8>,
    parent: Option<&Node>,
    root_dev: Option<u64>,
) -> Result<Option<Node>> {
    match stat_node(ctx, path, io, dir, name, parent)? {
        Some(node) => save_node(ctx, path, io, dir, node, parent, root_dev),
        None => Ok(None),
    }
}

/// Whether `node`'s content must be read, judged on metadata alone: the
/// file changed since `parent` recorded it, or there is no parent.
fn may_have_changed(ctx: &Ctx, parent: Option<&Node>, node: &Node) -> bool {
    !parent.is_some_and(|p| looks_unchanged(ctx, p, node) && !racy(ctx, p))
}

/// Whether nothing recorded about `p` says file `node` changed since (and
/// `--force` does not ask to read it anyway).
fn looks_unchanged(ctx: &Ctx, p: &Node, node: &Node) -> bool {
    !ctx.force && ctx.change_check.unchanged(p, node) && p.warnings.is_empty()
}

/// Whether the parent recorded `p` so soon after its last change that a
/// later change within the same timestamp tick would leave size, times and
/// inode as they were. Such an entry is read again.
fn racy(ctx: &Ctx, p: &Node) -> bool {
    ctx.parent_start
        .is_some_and(|start| is_racy(start, p.mtime) || is_racy(start, p.ctime))
}

/// Whether time `t` is in whole seconds (a coarse filesystem: 2 s on FAT,
/// 1 s on ext4 with small inodes, some network and FUSE ones) and within
/// 2 s of `start` or after it. Finer times only repeat within one tick of
/// their clock (the kernel's, a few milliseconds, where a filesystem has no
/// multigrain timestamps: all before Linux 6.13, and since then all but
/// ext4, xfs, btrfs and tmpfs; exFAT's 10 ms): that narrow window is left
/// open, as restic and borg leave it. Closing it (a tick's window before
/// the start, and every time after it) made files written just before a
/// backup, or during it, be read again by the next.
fn is_racy(start: i128, t: crate::tree::Timestamp) -> bool {
    t.nsec == 0 && i128::from(t.sec) * 1_000_000_000 >= start - 2_000_000_000
}

/// When `parent`'s backup started, in nanoseconds since the epoch (its
/// recorded time if the summary is missing).
fn started(parent: &Snapshot) -> i128 {
    let start = parent
        .summary
        .as_ref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s.backup_start).ok())
        .unwrap_or(parent.time);
    i128::from(start.timestamp()) * 1_000_000_000 + i128::from(start.timestamp_subsec_nanos())
}

/// [`save_path`] for an entry already stat'ed into `node`.
fn save_node(
    ctx: &Ctx,
    path: &Path,
    io: &Path,
    dir: Option<&File>,
    mut node: Node,
    parent: Option<&Node>,
    root_dev: Option<u64>,
) -> Result<Option<Node>> {
    // A source starts its own filesystem, even one inside another source.
    let root_dev = match root_dev {
        Some(d) if !ctx.sources.contains(path) => d,
        _ => node.device,
    };
    match node.kind {
        NodeKind::Dir if ctx.filter.one_file_system && node.device != root_dev => {
            // A mount point is kept as an empty directory, as restic does,
            // and not opened: listing another filesystem can hang (a stale
            // NFS mount), mount one (autofs) or be refused (a FUSE mount of
            // another user), none of which this backup is about.
            ctx.counters.dirs.fetch_add(1, Ordering::Relaxed);
            if ctx.leads_to_source(path) {
                return through_to_sources(ctx, path, node, parent);
            }
            node.subtree = Some(save_tree(ctx, &Tree::default(), parent, None)?);
        }
        NodeKind::Dir => {
            // A cairn mount on the way to a source is gone through to it
            // alone (see `stat_node`): listed, it stored every snapshot.
            let cairn_mount = || {
                ctx.filter.mount_point_left_out(path)
                    || ctx
                        .filter
                        .mount_root_left_out(path, node.device, node.inode)
            };
            if ctx.leads_to_source(path)
                && (ctx.filter.excludes_entry(path, true, None) || cairn_mount())
            {
                ctx.counters.dirs.fetch_add(1, Ordering::Relaxed);
                return through_to_sources(ctx, path, node, parent);
            }
            let at = dir.map(|d| (d, node.name.as_slice()));
            let Some((dirf, names)) = list_dir(ctx, path, io, at) else {
                if ctx.leads_to_source(path) {
                    return through_to_sources(ctx, path, node, parent);
                }
                return Ok(None);
            };
            let ptree = load_subtree(ctx, parent);
            let child_paths = |n: &[u8]| child_paths(&dirf, path, io, n);
            // Every entry is stat'ed first, so the files that will be read
            // are known and the kernel can read them ahead of the workers.
            let entries: Vec<Option<Node>> = names
                .into_par_iter()
                .map(|n| {
                    let (child, child_io) = child_paths(&n);
                    let pnode = child_parent(ptree.as_ref(), &n);
                    stat_node(ctx, &child, &child_io, Some(&dirf), n, pnode)
                })
                .collect::<Result<_>>()?;
            let ahead = ReadAhead::new(
                &dirf,
                entries.iter().map(|e| {
                    let n = e.as_ref().filter(|n| n.kind == NodeKind::File)?;
                    let pnode = child_parent(ptree.as_ref(), &n.name);
                    may_have_changed(ctx, pnode, n).then(|| (n.name.clone(), n.size))
                }),
            );
            let children: Vec<Option<Node>> = entries
                .into_par_iter()
                .enumerate()
                .map(|(i, e)| {
                    let Some(n) = e else { return Ok(None) };
                    let (child, child_io) = child_paths(&n.name);
                    ahead.reach(i);
                    let pnode = child_parent(ptree.as_ref(), &n.name);
                    crate::deep::deeper(|| {
                        save_node(
                            ctx,
                            &child,
                            &child_io,
                            Some(&dirf),
                            n,
                            pnode,
                            Some(root_dev),
                        )
                    })
                })
                .collect::<Result<_>>()?;
            let tree = tree_of(ctx, path, children.into_iter().flatten().collect());
            node.subtree = Some(save_tree(ctx, &tree, parent, ptree.as_ref())?);
        }
        NodeKind::File if ctx.captures(path, &node, parent) => {
            let changed = parent.is_some_and(|p| p.kind == NodeKind::File);
            let capture = |node: &Node| {
                let file = (node.device, node.inode);
                sqlite::capture(path, file, ctx.sqlite_lock_timeout, &|| {
                    ctx.progress.cancelled()
                })
            };
            let mut captured = capture(&node);
            // An application that saves by writing a new file and renaming
            // it over the database replaced it since it was listed: the
            // file in the listed directory now (stat'ed through its
            // descriptor, which no link put in since redirects) is
            // captured in its place, once.
            if matches!(captured, Ok(sqlite::Capture::Replaced))
                && let Some(now) = stat_node(ctx, path, io, dir, node.name.clone(), None)?
                && now.kind == NodeKind::File
                && (now.device, now.inode) != (node.device, node.inode)
            {
                node = now;
                captured = capture(&node);
            }
            let captured = captured.and_then(|c| match c {
                sqlite::Capture::Copied(copy) => Ok(copy),
                sqlite::Capture::Replaced => Err(sqlite::replaced(path)),
            });
            match captured {
                Ok(copy) => {
                    if let Some(took) = copy.one_step {
                        ctx.warn(
                            path,
                            format!(
                                "commits restarted the SQLite copy {} times: it was finished \
                                 in one step under one read lock ({:.2} s)",
                                copy.restarts,
                                took.as_secs_f64()
                            ),
                            false,
                        );
                    }
                    for (table, why) in &copy.unchecked {
                        ctx.warn(
                            path,
                            format!(
                                "PRAGMA quick_check could not check table {table}, which \
                                 needs what only the database's application defines ({why}); \
                                 the other tables were checked one by one and passed (the \
                                 file-wide page checks were skipped)"
                            ),
                            false,
                        );
                    }
                    store_sqlite(ctx, path, copy, &mut node)?;
                    ctx.progress.file_done(path, node.size);
                    ctx.count_stored_file(path, node.size, changed);
                }
                // Found by --sqlite-aware (not named with --sqlite), a
                // database that cannot be captured (damaged, locked, a stale
                // journal beside a file that is none) does not stop the
                // backup: stored as it is on disk, and reported as an error.
                Err(e) if !ctx.sqlite.contains(path) && !matches!(e, Error::Interrupted) => {
                    // Its journal files are stored beside it: a later
                    // snapshot that reused the copy would lack them. The
                    // capture's own words for a named database ("no
                    // snapshot was written") are not true here.
                    let why = e.to_string().replace("; no snapshot was written", "");
                    ctx.leave_out(
                        path,
                        format!(
                            "cannot capture this SQLite database ({why}): stored as a plain \
                             file, which may be inconsistent"
                        ),
                    );
                    save_sidecars(ctx, path, io, dir)?;
                    return save_file(ctx, path, io, dir, node, parent);
                }
                Err(e) => return Err(e),
            }
        }
        NodeKind::File => return save_file(ctx, path, io, dir, node, parent),
        NodeKind::Symlink => {
            // Reading a link moves its atime (there is no O_NOATIME for
            // readlink): an unchanged link keeps the target recorded.
            if let Some(p) = same_entry(ctx, parent, &node) {
                node.link_target = p.link_target.clone();
                ctx.counters.others.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(node));
            }
            match std::fs::read_link(io) {
                Ok(t) => node.link_target = t.as_os_str().as_bytes().to_vec(),
                Err(e) => {
                    ctx.leave_out(path, format!("cannot read link: {e}"));
                    return Ok(None);
                }
            }
            ctx.counters.others.fetch_add(1, Ordering::Relaxed);
        }
        NodeKind::Socket => {
            // Left out without a word, as borg does: a service makes its
            // socket anew, and a warning at every run of every backup of
            // /run or /tmp was the noise cron mails. Named as a source, it
            // made an empty snapshot, exit 0.
            if ctx.sources.contains(path) {
                ctx.leave_out(path, "a socket: backups leave sockets out".into());
            }
            return Ok(None);
        }
        NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
            // Never opened: reading a FIFO would block, a device is not a file.
            ctx.counters.others.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(Some(node))
}

/// Backs up a regular file: its content reused from `parent` when nothing
/// says it changed, else read and stored.
fn save_file(
    ctx: &Ctx,
    path: &Path,
    io: &Path,
    dir: Option<&File>,
    mut node: Node,
    parent: Option<&Node>,
) -> Result<Option<Node>> {
    let reuse =
        parent.filter(|p| !may_have_changed(ctx, Some(p), &node) && known_indexed(ctx, &p.content));
    // A file with other names read again: new (a link made), or changed
    // through this name. Its other names changed as well, unseen by an
    // incremental backup (see `Ran::Relinked`).
    if node.links > 1 && reuse.is_none() {
        ctx.relinked.store(true, Ordering::Relaxed);
    }
    if let Some(p) = reuse {
        node.content = p.content.clone();
        ctx.count_unmodified_file(path, node.size);
        ctx.progress.content_reused(node.size);
        ctx.progress.file_done(path, node.size);
        return Ok(Some(node));
    }
    let changed = parent.is_some_and(|p| p.kind == NodeKind::File);
    // Read again only because the parent read it too soon after a change
    // or because of `--force`: unmodified if the content is what the
    // parent had.
    let racy_only = parent.filter(|p| {
        ctx.change_check.unchanged(p, &node) && p.warnings.is_empty() && (ctx.force || racy(ctx, p))
    });
    match store_file(ctx, path, io, dir, &mut node) {
        Ok(()) => ctx.progress.file_done(path, node.size),
        // Only errors about the source file itself are the source's
        // fault; a failing repository write aborts the backup.
        Err(Error::Io {
            source, path: p, ..
        }) if p == path && source.kind() == std::io::ErrorKind::NotFound => {
            ctx.vanished(path);
            return Ok(None);
        }
        Err(Error::Io {
            op,
            source,
            path: p,
        }) if p == path => {
            ctx.leave_out(path, format!("cannot {op}: {source}"));
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    if racy_only.is_some_and(|p| p.content == node.content) {
        ctx.count_unmodified_file(path, node.size);
    } else {
        ctx.count_stored_file(path, node.size, changed);
    }
    Ok(Some(node))
}

/// The tree of directory `dir` from its entries' nodes, with the journal
/// files of its databases that could not be captured (see `save_sidecars`).
/// A name met twice is stored once, the listing's own entry: a `-shm`
/// left without a journal is listed and added again by a failed capture,
/// a network filesystem may list a name twice while the directory
/// changes, and readers refuse a tree holding a name twice.
fn tree_of(ctx: &Ctx, dir: &Path, mut nodes: Vec<Node>) -> Tree {
    if let Some(extra) = ctx.sidecars.lock().expect("sidecars").remove(dir) {
        nodes.extend(extra);
    }
    // The walk is done with the devices (`--one-file-system`, SQLite
    // captures, replaced files); the tree keeps only those it needs.
    for n in &mut nodes {
        n.device = n.recorded_device();
    }
    let mut tree = Tree { nodes };
    // Stable: the listing's entry stays first.
    tree.sort();
    tree.nodes.dedup_by(|later, first| later.name == first.name);
    tree
}

/// Stores the journal files of the database at `path` (reached as `io`)
/// that could not be captured, for its directory's tree: its plain copy
/// needs them, and the listing left them out.
fn save_sidecars(ctx: &Ctx, path: &Path, io: &Path, dir: Option<&File>) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    for suffix in sqlite::SIDECARS {
        let mut sc = name.to_os_string();
        sc.push(suffix);
        let (sc_path, sc_io) = (path.with_file_name(&sc), io.with_file_name(&sc));
        // Most databases have one journal file or none: those absent are
        // not "vanished". One the listing kept is saved already (saved
        // again, it was counted twice in the summary).
        if std::fs::symlink_metadata(&sc_io).is_err()
            || ctx
                .listed_sidecars
                .lock()
                .expect("listed")
                .contains(&sc_path)
        {
            continue;
        }
        let Some(node) = stat_node(ctx, &sc_path, &sc_io, dir, sc.as_bytes().to_vec(), None)?
        else {
            continue;
        };
        if node.kind != NodeKind::File {
            continue;
        }
        if let Some(node) = save_file(ctx, &sc_path, &sc_io, dir, node, None)? {
            ctx.sidecars
                .lock()
                .expect("sidecars")
                .entry(parent.to_path_buf())
                .or_default()
                .push(node);
        }
    }
    Ok(())
}

/// Stores `copy`, a consistent, checked copy of the SQLite database at
/// `path`, in place of the file, and records its row counts for
/// `verify-restore`.
fn store_sqlite(ctx: &Ctx, path: &Path, copy: sqlite::SqliteCopy, node: &mut Node) -> Result<()> {
    let copied = copy.path();
    let f = File::open(&copied).map_err(|e| Error::io("open", &copied, e))?;
    let chunk = sqlite::chunk_size(copy.page_size) as usize;
    let f = std::io::BufReader::with_capacity(1 << 20, f);
    let (content, size) = store_fixed(ctx, &copied, f, chunk)?;
    node.content = content;
    node.size = size;
    ctx.databases
        .lock()
        .expect("databases")
        .push(DatabaseCapture {
            kind: "sqlite".into(),
            path: path.to_string_lossy().into_owned(),
            server_version: Some(copy.version),
            tables: copy.tables,
            ..DatabaseCapture::default()
        });
    Ok(())
}

/// Stores a directory's tree, unless it is the one `parent` (the entry in
/// the parent snapshot) names and the parent is verified: then it is
/// indexed already, and an unchanged directory costs no index lookup (one
/// random leaf read each, cold, in a big index). `old` is the parent's
/// tree as loaded (and verified against its ID), if it was.
fn save_tree(ctx: &Ctx, tree: &Tree, parent: Option<&Node>, old: Option<&Tree>) -> Result<Id> {
    let old_id = parent
        .and_then(|p| p.subtree)
        .filter(|_| ctx.parent_verified);
    // The same nodes as the parent's tree: its ID stands, without encoding
    // and hashing them again (a twentieth of an unchanged re-backup's CPU).
    if let (Some(id), Some(old)) = (old_id, old)
        && old.nodes == tree.nodes
    {
        ctx.lookups_skipped.fetch_add(1, Ordering::Relaxed);
        return Ok(id);
    }
    let bytes = tree.encode();
    if let Some(id) = old_id
        && ctx.repo.key().blob_id(&bytes) == id
    {
        ctx.lookups_skipped.fetch_add(1, Ordering::Relaxed);
        return Ok(id);
    }
    Ok(ctx.saver.save(BlobType::Tree, &bytes)?.0)
}

/// Whether every blob of a reused file (content from the parent snapshot)
/// is still indexed: known without lookups when the parent is verified.
fn known_indexed(ctx: &Ctx, ids: &[Id]) -> bool {
    if ctx.parent_verified {
        ctx.lookups_skipped
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        return true;
    }
    all_indexed(ctx, ids)
}

/// Whether every blob of a reused file is still indexed (a blob missing
/// from the index at the start makes the file be read again).
fn all_indexed(ctx: &Ctx, ids: &[Id]) -> bool {
    ids.iter().all(|id| ctx.index.contains(id).unwrap_or(false))
}
