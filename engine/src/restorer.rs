//! Restore: recreate a snapshot's tree (or a part of it) on disk.
//!
//! Files are written in parallel; directory metadata is set after their
//! contents; hard links are made in a second pass. A file whose data cannot
//! be read or verified is removed, never left at its final name looking
//! complete, and reported (one updated `--in-place` is left partly updated,
//! and said to be). An entry that cannot be restored is reported and
//! counted, and the restore goes on with the others (see [`failure`]).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::bulk_read::{BulkReader, DEFAULT_CAPACITY, Plan};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::owner::Owners;
use crate::pathmatch::PathMatcher;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{LinkGroup, Node, NodeKind, Tree};

mod alias;
mod entry;
mod failure;
#[cfg(test)]
mod link_group_tests;
mod takeover_log;

use entry::{
    Made, TakenOver, create_file, create_unnamed, give_back, is_root, make_dir, make_special,
    publish, remove_existing, set_metadata, set_metadata_of,
};
use failure::Fail;
use takeover_log::{Start, TakeoverLog};

/// Block size used to leave holes: all-zero blocks aligned to it are
/// skipped, so sparse files stay sparse.
const HOLE_BLOCK: usize = 4096;

/// Paths longer than this are reached relative to their directory's descriptor
/// (PATH_MAX is 4096 on Linux).
const LONG_PATH: usize = 3000;

/// How a file that replaces an existing one is named until it is complete
/// (a restore killed meanwhile leaves it behind, under this name).
const TEMP_PREFIX: &str = ".cairn-restore-";

/// What to do with files that already exist in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Always rewrite.
    Always,
    /// Rewrite unless the existing file already has the snapshot's content
    /// (same size and mtime, and every chunk hashes to the stored ID); its
    /// owner, mode, extended attributes and times are set either way.
    #[default]
    IfChanged,
    /// Only where the snapshot's entry is newer (its mtime) than what
    /// stands there, as `if-changed` does; what is as new or newer is kept
    /// as `never` keeps it (restic's `if-newer`).
    IfNewer,
    /// Never touch an existing file.
    Never,
}

/// What names the entry at `path` in [`Ctx::overwrite_at`]'s decisions: a
/// 128-bit hash of the path, or for one reached through its directory's
/// descriptor (`/proc/self/fd/N/name`, deep trees), of that directory's
/// device and inode and the name, since a descriptor's number is reused.
fn decision_key(path: &Path) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    let through_fd = crate::fsmeta::is_at(path)
        .then(|| Some((fs::metadata(path.parent()?).ok()?, path.file_name()?)))
        .flatten();
    match through_fd {
        Some((dir, name)) => {
            h.update(b"at\0");
            h.update(&dir.dev().to_le_bytes());
            h.update(&dir.ino().to_le_bytes());
            h.update(name.as_bytes());
        }
        None => {
            h.update(b"path\0");
            h.update(path.as_os_str().as_bytes());
        }
    }
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Path inside the snapshot to restore (`/` or empty for everything);
    /// its names need not be UTF-8.
    pub subpath: Option<PathBuf>,
    /// Restore owners by numeric ID only (names are not consulted).
    pub numeric_ids: bool,
    /// Only restore paths matching these gitignore-style patterns (and what is below them).
    pub include: Vec<String>,
    /// Do not restore paths matching these patterns.
    pub exclude: Vec<String>,
    /// As `include`, matched without regard to case.
    pub iinclude: Vec<String>,
    /// As `exclude`, matched without regard to case.
    pub iexclude: Vec<String>,
    /// Read every restored file back and check it against the snapshot.
    pub verify: bool,
    /// Policy for existing files.
    pub overwrite: Overwrite,
    /// Remove entries in the target that the snapshot does not have.
    pub delete: bool,
    /// Report what would be done without writing anything.
    pub dry_run: bool,
    /// Update an existing file that differs in place, writing only the
    /// chunks that differ, instead of writing a whole new copy beside it:
    /// no room needed for two copies, but a restore that fails leaves the
    /// file partly updated. Only for files with no other hard link.
    pub in_place: bool,
    /// Write every block, all-zero ones too, instead of leaving them holes
    /// (`--no-sparse`): a preallocated file gets its room back. Swap files
    /// are always written so (the kernel refuses one with holes).
    pub dense: bool,
    /// A restore test's scratch copy (`verify-restore`): an owner or a
    /// device node that only more privilege than this process has could
    /// make (root in a user namespace, an unprivileged user) is a
    /// warning, not an error. It says nothing against the snapshot.
    pub scratch: bool,
}

/// Receives progress from a running restore.
pub trait RestoreProgress: Sync {
    /// Bytes of file content written (in a dry run: that would be).
    fn bytes_written(&self, _n: u64) {}
    /// Bytes of file content left as they were: a file found in place (or
    /// kept by `--overwrite never`), or the chunks `--in-place` did not
    /// write again.
    /// With [`Self::bytes_written`], what of the snapshot's bytes is done.
    fn bytes_kept(&self, _n: u64) {}
    /// A file is done: restored, or found already there and left as it is.
    fn file_done(&self) {}
    /// Something could not be restored (`is_error`: the entry, or some of
    /// its metadata, is missing; the restore will exit 1), or a warning.
    fn warning(&self, _path: &Path, _message: &str, _is_error: bool) {}
    /// Whether to stop (SIGINT): the restore stops between blobs, removes
    /// the file it was writing (one updated in place stays, partly
    /// updated), gives back the directories it took over, and returns
    /// [`Error::Interrupted`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// A progress sink that ignores everything.
pub struct NoRestoreProgress;
impl RestoreProgress for NoRestoreProgress {}

/// A progress sink that ignores everything but a stop request to the
/// process ([`crate::child::stopping`]).
pub struct StopRequested;
impl RestoreProgress for StopRequested {
    fn cancelled(&self) -> bool {
        crate::child::stopping()
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    /// Files restored (written or linked).
    pub files: u64,
    /// Files whose content was already there (their metadata is set again),
    /// or left alone under `--overwrite never`.
    pub files_skipped: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Other entries restored.
    pub others: u64,
    /// Entries other than files left as they were under `--overwrite
    /// never` (a symlink there already, or anything in the way of a
    /// directory, a symlink or a special file): they were counted as files.
    pub others_kept: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Content bytes left as they were and not written (see
    /// [`RestoreProgress::bytes_kept`]).
    pub bytes_skipped: u64,
    /// Entries removed by `delete`.
    pub deleted: u64,
    /// Files read back and verified, counted by name as `files` is (a
    /// hard link to a verified name counts).
    pub verified: u64,
    /// Entries that could not be restored (files among them were removed),
    /// or not with all their metadata.
    pub errors: u64,
    /// Of `errors`, those for data the repository did not give (missing or
    /// damaged), as against the target's own (a full disk, permissions).
    pub unreadable: u64,
    /// One line per problem.
    pub warnings: Vec<String>,
    /// The lines of `warnings` that are errors.
    pub failures: Vec<String>,
    /// A dry run with `delete`: each entry it would delete (a directory
    /// stands for all below it), sorted, bytes that are not UTF-8 as
    /// `\xNN`. Empty otherwise.
    pub would_delete: Vec<String>,
}

struct Deferred {
    link: PathBuf,
    node: Node,
    key: LinkGroup,
}

struct Ctx<'a> {
    repo: &'a Repository,
    /// Where in the target the repository (when local) and its cache lie,
    /// if they do: never written over nor deleted ([`own_in_target`]).
    own: std::sync::OnceLock<Vec<(PathBuf, Own)>>,
    /// The same by device and inode, and the directories that hold them:
    /// reached through another path (a bind mount), they are known by
    /// these ([`own_ids`]).
    own_ids: std::sync::OnceLock<OwnIds>,
    /// Whether the repository left alone was said (once per restore).
    own_told: AtomicBool,
    reader: BulkReader<'a>,
    opts: &'a RestoreOptions,
    progress: &'a dyn RestoreProgress,
    matcher: PathMatcher,
    owners: Owners,
    files: AtomicU64,
    skipped: AtomicU64,
    others_kept: AtomicU64,
    dirs: AtomicU64,
    others: AtomicU64,
    bytes: AtomicU64,
    kept_bytes: AtomicU64,
    deleted: AtomicU64,
    /// See [`RestoreSummary::would_delete`].
    would_delete: Mutex<Vec<String>>,
    verified: AtomicU64,
    errors: AtomicU64,
    /// See [`RestoreSummary::unreadable`].
    unreadable: AtomicU64,
    warnings: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
    /// Set once the target has refused extended attributes as unsupported
    /// (warned about once, not for every file).
    no_xattrs: std::sync::atomic::AtomicBool,
    /// Hard link groups ([`Node::link_group`]) -> first restored path.
    /// `None` while the first member is being restored, or if it was not
    /// (kept, failed): then the others get their own content.
    links: Mutex<HashMap<LinkGroup, Option<PathBuf>>>,
    deferred: Mutex<Vec<Deferred>>,
    /// Hard link groups whose first member is in the target already with
    /// the snapshot's content but with other names too: left as they are if,
    /// once every member is known, those names are the group's own
    /// ([`link_deferred`]).
    in_place: Mutex<HashMap<LinkGroup, InPlace>>,
    /// Hard link groups whose first member was kept as it stood
    /// (`--overwrite never`), with its node: its missing names are linked
    /// to it if it holds the snapshot's content ([`link_deferred`]).
    kept_first: Mutex<HashMap<LinkGroup, (PathBuf, Node)>>,
    /// Under `--overwrite if-newer`, whether what stood at each path met
    /// was kept, by [`decision_key`] (16 bytes per entry restored).
    if_newer_kept: Mutex<HashMap<[u8; 16], bool>>,
    /// Directories above hard links, with their snapshot metadata: set at
    /// the very end, after the links, so that no directory is given back to
    /// its owner while the restore still writes into it.
    dir_meta: Mutex<Vec<(PathBuf, Node)>>,
    /// The directories above any member of a hard link group: finished only
    /// after the links are made.
    link_dirs: Mutex<HashSet<PathBuf>>,
    /// Existing directories [`make_dir`] took over, with what to give back.
    taken: Mutex<HashMap<PathBuf, TakenOver>>,
    /// The same, kept for a restore killed before it gives them back
    /// (none in a dry run, or where it could not be started).
    taken_log: std::sync::OnceLock<TakeoverLog>,
    /// Directories this restore made, recorded in [`Self::taken_log`] and
    /// not settled yet: device and inode.
    made: Mutex<HashMap<PathBuf, (u64, u64)>>,
    /// Directories a restore killed before made and did not finish (see
    /// [`TakeoverLog::made_before`]): finished by this one as its own.
    made_before: std::sync::OnceLock<HashSet<(u64, u64)>>,
    /// Why there is no [`Self::taken_log`], told at the first take-over.
    no_taken_log: Mutex<Option<String>>,
    /// Taken-over directories that could not be given back: left in the
    /// record for the next restore.
    not_given_back: Mutex<Vec<(PathBuf, TakenOver)>>,
    is_root: bool,
    /// The groups this process is in, when not root: a file's recorded
    /// group among them is given back, as `cp -a` does.
    my_groups: Vec<u32>,
    /// The paths the snapshot's backup was given: only at or below one of
    /// them does the snapshot hold a directory's whole listing. The
    /// directories above (`/`, `/home` for `/home/me`) hold only the way down.
    whole: Vec<PathBuf>,
    /// The directories of `whole` with another of them below: their
    /// listing may hold only the way down (a mount point under `-x`, an
    /// excluded directory, walked through to a source below it).
    leads: HashSet<PathBuf>,
    /// The snapshot paths of its SQLite captures (see [`drop_stale_sidecars`]).
    sqlite: HashSet<PathBuf>,
}

impl Ctx<'_> {
    /// `--overwrite` as it applies to what stands at `path`, where `n` is
    /// restored: `if-newer` is `never` there if that is as new as `n` or
    /// newer (its mtime), else `if-changed`.
    ///
    /// Decided once per path, before the restore touches it: what it wrote
    /// there has the snapshot's mtime, and asked again (`--delete` looking
    /// for the journal of a database kept, a hard link's name) it read as
    /// kept.
    fn overwrite_at(&self, path: &Path, n: &Node) -> Overwrite {
        if self.opts.overwrite != Overwrite::IfNewer {
            return self.opts.overwrite;
        }
        let key = decision_key(path);
        let known = self
            .if_newer_kept
            .lock()
            .expect("if_newer_kept")
            .get(&key)
            .copied();
        let kept = known.unwrap_or_else(|| {
            // Stat taken outside the lock; the first decision stands (another
            // thread's, made before either wrote there).
            let kept = fs::symlink_metadata(path).is_ok_and(|m| {
                (m.mtime(), m.mtime_nsec()) >= (n.mtime.sec, i64::from(n.mtime.nsec))
            });
            *self
                .if_newer_kept
                .lock()
                .expect("if_newer_kept")
                .entry(key)
                .or_insert(kept)
        });
        if kept {
            Overwrite::Never
        } else {
            Overwrite::IfChanged
        }
    }

    /// How the user spelled the `--overwrite` that keeps what is there.
    fn keeping_option(&self) -> &'static str {
        if self.opts.overwrite == Overwrite::IfNewer {
            "--overwrite if-newer"
        } else {
            "--overwrite never"
        }
    }

    /// Counts a file restored (or, in a dry run, to be).
    fn count_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.progress.file_done();
    }

    /// Counts a file already there and left as it is, with `bytes` of its
    /// content not counted as kept yet.
    fn count_skipped(&self, bytes: u64) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.count_kept(bytes);
        self.progress.file_done();
    }

    /// Counts a new file of `bytes` put in place: its content counts in
    /// the summary only now (the progress counted it as written), so that
    /// a file written and then not put in place (a directory with entries
    /// in the way, damaged data) is not counted as restored.
    fn count_file_written(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.count_file();
    }

    /// Counts content bytes written (in a dry run: that it would write),
    /// for the summary and the progress alike.
    fn count_written(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.progress.bytes_written(bytes);
    }

    /// Counts content bytes found in place and not written.
    fn count_kept(&self, bytes: u64) {
        if bytes > 0 {
            self.kept_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.progress.bytes_kept(bytes);
        }
    }

    /// Whether the snapshot holds the whole listing of its directory
    /// `snap_dir`, so that `--delete` may remove what it does not list.
    fn holds_whole(&self, snap_dir: &Path) -> bool {
        self.whole.iter().any(|p| snap_dir.starts_with(p)) && !self.leads.contains(snap_dir)
    }

    /// Makes `path` a directory to restore into ([`make_dir`]), recording
    /// it as taken over before it is.
    fn make_dir(&self, path: &Path) -> Result<Made> {
        let made = make_dir(path, &|| self.record_making(path), &|t| {
            self.record_taken(path, t)
        })?;
        self.took_over(path, made.taken());
        if matches!(made, Made::Created)
            && let Some(log) = self.taken_log.get()
            && let Ok(m) = fs::symlink_metadata(path)
        {
            self.made
                .lock()
                .expect("made")
                .insert(path.to_path_buf(), (m.dev(), m.ino()));
            if let Err(e) = log.made(path, &m) {
                self.warn(
                    path,
                    format!("cannot record that this restore made it: {e}"),
                );
            }
        }
        Ok(made)
    }

    /// Records that `path` is about to be made: without it, a restore
    /// killed right after leaves an empty directory no record names.
    fn record_making(&self, path: &Path) {
        if let Some(log) = self.taken_log.get()
            && let Err(e) = log.making(path)
        {
            self.warn(
                path,
                format!("cannot record that this restore makes it: {e}"),
            );
        }
    }

    fn record_taken(&self, path: &Path, t: &TakenOver) {
        let Some(log) = self.taken_log.get() else {
            let why = self.no_taken_log.lock().expect("no_taken_log").take();
            if let Some(why) = why {
                self.warn(path, format!("{why}: {}", takeover_log::UNRECORDED));
            }
            return;
        };
        if let Err(e) = log.record(path, t) {
            self.warn(
                path,
                format!(
                    "cannot record that it is taken over ({e}): if this restore is killed, \
                     it stays root's, closed to its group, until set by hand"
                ),
            );
        }
    }

    /// Forgets `path` as taken over, before it gets the snapshot's metadata
    /// (and records that, so that a restore killed after is not taken to
    /// have left it taken over).
    fn settle(&self, path: &Path) {
        let t = self.taken.lock().expect("taken").remove(path);
        let id = t
            .map(|t| (t.dev, t.ino))
            .or_else(|| self.made.lock().expect("made").remove(path))
            .or_else(|| self.made_before_here(path));
        if let (Some(id), Some(log)) = (id, self.taken_log.get())
            && let Err(e) = log.settle(id)
        {
            self.warn(path, format!("cannot record that its metadata is set: {e}"));
        }
    }

    /// The device and inode of `path` if a restore killed before made it
    /// (see [`Self::made_before`]).
    fn made_before_here(&self, path: &Path) -> Option<(u64, u64)> {
        let before = self.made_before.get().filter(|b| !b.is_empty())?;
        let m = fs::symlink_metadata(path).ok()?;
        Some((m.dev(), m.ino())).filter(|id| before.contains(id))
    }

    fn took_over(&self, path: &Path, t: Option<TakenOver>) {
        if let Some(t) = t {
            self.taken
                .lock()
                .expect("taken")
                .insert(path.to_path_buf(), t);
        }
    }

    /// Gives back a taken-over directory at once (see [`finish_dirs`]).
    fn give_back_now(&self, path: &Path) {
        let t = self.taken.lock().expect("taken").remove(path);
        if let Some(t) = t {
            self.give_back(path, t);
        }
    }

    /// [`give_back`], a failure reported as an error (the directory is left
    /// owned by root, or closed to others).
    fn give_back(&self, path: &Path, t: TakenOver) {
        if let Err(e) = give_back(path, t) {
            self.error(path, format!("cannot give back owner and mode: {e}"));
            self.not_given_back
                .lock()
                .expect("not_given_back")
                .push((path.to_path_buf(), t));
        }
    }

    fn warn(&self, path: &Path, msg: String) {
        self.report(path, msg, false);
    }

    /// Tells the progress sink (as an error or a warning) and keeps `msg`.
    fn report(&self, path: &Path, msg: String, is_error: bool) {
        self.progress.warning(path, &msg, is_error);
        self.warnings
            .lock()
            .expect("warnings")
            .push(format!("{}: {msg}", path.display()));
    }

    fn error(&self, path: &Path, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.failures
            .lock()
            .expect("failures")
            .push(format!("{}: {msg}", path.display()));
        self.report(path, msg, true);
    }

    /// Reports the entry at `path` as not restored; the restore goes on.
    fn fail(&self, path: &Path, e: &Error) {
        // A restored file read back wrong (`--verify`) is the target's fault.
        let target_side =
            matches!(e, Error::Corrupt { object, .. } if object.starts_with(RESTORED_FILE));
        if matches!(e, Error::Missing(_) | Error::Corrupt { .. }) && !target_side {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
        }
        match e {
            // The path the call failed on, which says the operation already.
            Error::Io {
                op,
                path: at,
                source,
            } => self.error(at, format!("not restored: cannot {op}: {source}")),
            e => self.error(path, format!("not restored: {e}")),
        }
    }

    /// Reports a [`Fail::Entry`] and goes on (counted as nothing restored);
    /// hands a [`Fail::Abort`] on.
    fn carry_on(&self, path: &Path, r: Result<u64, Fail>) -> Result<u64, Fail> {
        match r {
            Err(Fail::Entry(e)) => {
                self.fail(path, &e);
                Ok(0)
            }
            r => r,
        }
    }

    /// Counts the entry at `path` as deleted (or, in a dry run, to be).
    fn count_deleted(&self, path: &Path) {
        self.deleted.fetch_add(1, Ordering::Relaxed);
        if self.opts.dry_run {
            use std::os::unix::ffi::OsStrExt;
            let shown = crate::walk::escaped(path.as_os_str().as_bytes());
            self.would_delete.lock().expect("would_delete").push(shown);
        }
    }

    /// [`remove_existing`], counting a directory tree removed as deleted.
    fn remove_in_the_way(&self, path: &Path) -> Result<()> {
        // A directory that holds the repository or the cache is removed
        // only if empty (it then holds neither): an error otherwise.
        let whole_trees = self.opts.delete && !self.holds_own(path);
        if remove_existing(path, whole_trees)? {
            self.count_deleted(path);
        }
        Ok(())
    }
}

/// Finds the node at `subpath` in a snapshot; `None` for the root.
pub fn resolve(repo: &Repository, snap: &Snapshot, subpath: &[u8]) -> Result<Option<Node>> {
    if crate::walk::components(subpath).any(|c| c == b"..") {
        return Err(Error::InvalidInput(format!(
            "{}: `..` is not allowed in a path inside a snapshot",
            crate::walk::shown(subpath)
        )));
    }
    crate::walk::lookup(repo, &snap.tree, subpath)
}

/// The directories `snap` holds in full, as paths of its tree, for
/// `--delete`: the paths its backup was given. A path is recorded as text,
/// so a name that is not UTF-8 was recorded lossily; it is found again in
/// the tree by that lossy form, and refused if two names share it. A path
/// the tree lacks (a source that vanished) holds nothing to delete for.
fn whole_paths(repo: &Repository, snap: &Snapshot) -> Result<Vec<PathBuf>> {
    if snap.partial {
        return Err(Error::InvalidInput(
            "--delete cannot be used with a partial snapshot: some entries could not be read \
             when it was taken and are missing from it, so --delete would delete them where \
             they still are. Restore without --delete, or into an empty directory"
                .into(),
        ));
    }
    if snap.is_repaired() {
        return Err(Error::InvalidInput(
            "--delete cannot be used with a snapshot rewritten by `repair snapshots`: the files \
             whose data was lost are missing from it, and where they still are they may be the \
             last copy. Restore without --delete, or into an empty directory"
                .into(),
        ));
    }
    if snap.is_recovered() {
        return Err(Error::InvalidInput(
            "--delete cannot be used with a snapshot made by `cairn recover`: it does not \
             record which directories its trees held in full, so what is extra in the target \
             is unknown. Restore it into an empty directory instead"
                .into(),
        ));
    }
    let root = repo.load_tree(&snap.tree)?;
    let mut out = Vec::new();
    'paths: for p in &snap.paths {
        let mut tree = Some(root.clone());
        let mut raw = PathBuf::from("/");
        for comp in p.split('/').filter(|c| !c.is_empty()) {
            let Some(t) = tree.take() else {
                continue 'paths; // below a file: holds no directory
            };
            // Recorded with `\xNN` for bytes that are not UTF-8, or (before
            // that) with U+FFFD.
            let lossy = comp.contains(char::REPLACEMENT_CHARACTER);
            let escaped = comp.contains("\\x");
            let mut hits = t.nodes.iter().filter(|n| {
                n.name == comp.as_bytes()
                    || escaped && crate::walk::escaped(&n.name) == comp
                    || lossy && n.display_name() == comp
            });
            let Some(n) = hits.next() else {
                continue 'paths;
            };
            if hits.next().is_some() {
                return Err(Error::InvalidInput(format!(
                    "--delete: the snapshot's path {p:?} names more than one entry (names that \
                     are not UTF-8 are recorded lossily), so which directories it holds in \
                     full is unknown. Restore without --delete, or into an empty directory"
                )));
            }
            raw.push(OsStr::from_bytes(&n.name));
            tree = n.subtree.map(|id| repo.load_tree(&id)).transpose()?;
        }
        out.push(raw);
    }
    Ok(out)
}

/// Fails if the target lies inside the repository, or holds it and
/// `delete` is asked for: a snapshot whose sources held the repository
/// would delete every object written since. (Without `--delete`, a target
/// holding it is fine: a whole system restored to `/` with the repository
/// on a disk mounted below; the repository is left as it is, see
/// [`own_in_target`].)
fn refuse_repository_in_target(repo: &Repository, target: &Path, delete: bool) -> Result<()> {
    let Some(root) = repo.backend().local_root() else {
        return Ok(());
    };
    let Ok(root) = fs::canonicalize(root) else {
        return Ok(());
    };
    // Only an existing target can hold anything; a new one lies where its
    // nearest existing ancestor is (`out` is `./out`). Judged first on the
    // path as given, and again once it is made and resolved (`restore_start`).
    let target = std::path::absolute(target).map_err(|e| Error::io("resolve", target, e))?;
    let exists = target.exists();
    let Some(target) = target.ancestors().find_map(|a| fs::canonicalize(a).ok()) else {
        return Ok(());
    };
    if target.starts_with(&root) {
        return Err(Error::InvalidInput(format!(
            "the restore target {} lies inside the repository {}; choose another target",
            target.display(),
            root.display()
        )));
    }
    if delete && exists && root.starts_with(&target) {
        return Err(Error::InvalidInput(format!(
            "the restore target {} holds the repository {}: --delete could delete its objects; \
             restore elsewhere, or without --delete",
            target.display(),
            root.display()
        )));
    }
    Ok(())
}

/// The paths below `target` (as the restore spells them) of the
/// repository's local directory and of its cache. A snapshot of a tree that
/// held them (a whole system restored to `/`, a home with `~/.cache`) holds
/// older copies: restored over the live ones, the config rolled back (an
/// append-only repository was one no more), key files removed to revoke a
/// password came back, and the cache's index was replaced under the
/// restore reading it.
fn own_in_target(repo: &Repository, target: &Path) -> Vec<(PathBuf, Own)> {
    let Ok(real) = fs::canonicalize(target) else {
        return Vec::new();
    };
    // The whole cache root: it holds this restore's own record of the
    // directories it takes over, too.
    let cache_root = repo
        .cache_dir()
        .and_then(Path::parent)
        .map(|p| (p.to_path_buf(), Own::Cache));
    crate::own_paths::repository_files(repo)
        .into_iter()
        .map(|p| (p, Own::Repository))
        .chain(cache_root)
        .filter_map(|(p, own)| Some((fs::canonicalize(p).ok()?, own)))
        .filter_map(|(p, own)| Some((target.join(p.strip_prefix(&real).ok()?), own)))
        .filter(|(p, _)| p != target)
        .collect()
}

/// The repository's files and the cache by device and inode (see
/// [`own_in_target`]), and the directories that hold them, up to `/`.
#[derive(Default)]
struct OwnIds {
    own: HashMap<(u64, u64), Own>,
    holding: HashSet<(u64, u64)>,
}

/// [`OwnIds`] of `repo`.
fn own_ids(repo: &Repository) -> OwnIds {
    use crate::own_paths::id_of;
    let mut ids = OwnIds::default();
    let cache_root = repo.cache_dir().and_then(Path::parent);
    for p in crate::own_paths::repository_files(repo) {
        if let Some(id) = id_of(&p) {
            ids.own.insert(id, Own::Repository);
        }
    }
    if let Some(id) = cache_root.and_then(id_of) {
        ids.own.insert(id, Own::Cache);
    }
    let roots = repo.backend().local_root().into_iter().chain(cache_root);
    for root in roots {
        if let Ok(real) = fs::canonicalize(root) {
            ids.holding.extend(real.ancestors().filter_map(id_of));
        }
    }
    ids
}

/// The device and inode of the entry at `path`, not following a link.
fn id_here(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whose a path [`own_in_target`] found is.
#[derive(Clone, Copy, PartialEq)]
enum Own {
    /// The repository's files: a snapshot's older copy is not restored
    /// over them, and the user is told.
    Repository,
    /// The cache: never worth a word.
    Cache,
}

impl Ctx<'_> {
    /// Whose `path` is, if it is the repository's or the cache's; `by_id`
    /// also when reached by another path (asked of directories and of
    /// files named `config`: the others cannot be).
    fn own_at(&self, path: &Path, by_id: bool) -> Option<Own> {
        let own = self.own.get()?;
        if let Some((_, w)) = own.iter().find(|(o, _)| o == path) {
            return Some(*w);
        }
        let ids = self.own_ids.get().filter(|i| by_id && !i.own.is_empty())?;
        ids.own.get(&id_here(path)?).copied()
    }

    /// Whether `path` holds the repository or its cache (or is one of
    /// their directories), by its path or as another path to it.
    fn holds_own(&self, path: &Path) -> bool {
        if self
            .own
            .get()
            .is_some_and(|own| own.iter().any(|(o, _)| o.starts_with(path)))
        {
            return true;
        }
        self.own_ids.get().is_some_and(|ids| {
            (!ids.own.is_empty() || !ids.holding.is_empty())
                && id_here(path)
                    .is_some_and(|id| ids.holding.contains(&id) || ids.own.contains_key(&id))
        })
    }
}

/// Patterns as given, but below a subpath an anchored one (`/b`) is
/// relative to it (`/sub/path/b`): the subpath is the root of what is
/// restored, as in restic. Only a pattern that starts with the subpath
/// itself is read as a full snapshot path. Never both: `/tmp` below
/// `/tmp/app` also matched the subpath's own ancestor, and left nothing.
/// `fold`: the patterns ignore case, so a full path is recognised in any.
fn below_subpath(patterns: &[String], full: &Path, fold: bool) -> Vec<String> {
    if full == Path::new("/") {
        return patterns.to_vec();
    }
    // A subpath that is not UTF-8 cannot be written in a pattern: the
    // patterns stay as given.
    let Some(base) = crate::exclude::literal_dir(full) else {
        return patterns.to_vec();
    };
    patterns
        .iter()
        // Cleaned first: `/` is everything below the subpath, and a full
        // path written with `/./` is still one.
        .map(|p| crate::pathmatch::cleaned(p).into_owned())
        .flat_map(|p| {
            let (neg, body) = p.strip_prefix('!').map_or(("", p.as_str()), |b| ("!", b));
            // The subpath itself is all of what is restored: matched by
            // nothing below it, it selected nothing.
            let whole = body.trim_end_matches('/');
            let named = full.to_str().is_some_and(|f| {
                if fold {
                    f.to_lowercase() == whole.to_lowercase()
                } else {
                    f == whole
                }
            });
            if named {
                // And as given, for a file as the subpath.
                return vec![format!("{neg}{base}**"), p.to_string()];
            }
            let given_in_full = starts_like(body, full, fold);
            vec![match body.strip_prefix('/').filter(|_| !given_in_full) {
                Some(rest) => format!("{neg}{base}{rest}"),
                None => p.to_string(),
            }]
        })
        .collect()
}

/// Whether the anchored pattern `body` begins with the path `full`, each
/// component matched as a glob: `/home/*/.cache` below `/home/me` is a
/// full path, and `/**/x` matches anywhere either way.
fn starts_like(body: &str, full: &Path, fold: bool) -> bool {
    let mut pattern = body.split('/').filter(|c| !c.is_empty()).peekable();
    // A first component that is a glob (`/*/Downloads` below `/home`) is
    // relative: read as a full path it matched `/home/Downloads` only.
    if pattern
        .peek()
        .is_none_or(|c| crate::pathmatch::has_glob_meta(c))
    {
        return false;
    }
    for want in crate::pathmatch::components(full) {
        match pattern.next() {
            None => return false,
            Some("**") => return true,
            Some(c) => {
                let (c, want) = if fold {
                    let name = crate::pathmatch::fold_case(&want).into_owned();
                    (crate::pathmatch::fold_str(c), name)
                } else {
                    (c.to_string(), want)
                };
                let matches = globset::GlobBuilder::new(&c)
                    .case_insensitive(fold)
                    .build()
                    .is_ok_and(|g| g.compile_matcher().is_match(OsStr::from_bytes(&want)));
                if !matches {
                    return false;
                }
            }
        }
    }
    true
}

/// Restores `snap` (or `opts.subpath` of it) into `opts.target`.
pub fn restore(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn RestoreProgress,
) -> Result<RestoreSummary> {
    // As the tree is walked (`a//b`, `a/./b/` named it, but the paths
    // matched then never met the patterns anchored at it).
    let sub = crate::walk::normalize(
        opts.subpath
            .as_deref()
            .map_or(b"/".as_slice(), |p| p.as_os_str().as_bytes()),
    );
    let start = resolve(repo, snap, &sub)?;
    let sub = Path::new(OsStr::from_bytes(&sub));
    // A file restored as the subpath lands in the target: `/NAME` names
    // it there, so patterns are anchored at its directory.
    let anchor = match &start {
        Some(n) if n.kind != NodeKind::Dir => sub.parent().unwrap_or(Path::new("/")),
        _ => sub,
    };
    let matcher = PathMatcher::new(
        &below_subpath(&opts.include, anchor, false),
        &below_subpath(&opts.exclude, anchor, false),
    )?
    .ignoring_case(
        &below_subpath(&opts.iinclude, anchor, true),
        &below_subpath(&opts.iexclude, anchor, true),
    )?
    .below(sub);
    refuse_repository_in_target(repo, &opts.target, opts.delete)?;
    let snap_base = sub.to_path_buf();
    // Which blobs will be read, so that each pack is fetched in a few large
    // ranges instead of one request per blob.
    let plan = Plan::new(repo)?;
    if !opts.dry_run {
        match &start {
            None => plan_tree(repo, &matcher, &snap.tree, &snap_base, &plan)?,
            Some(n) => {
                let top = n.kind == NodeKind::Dir;
                plan_node(repo, &matcher, n, &snap_base, &plan, top)?
            }
        }
    }
    let whole = if opts.delete {
        whole_paths(repo, snap)?
    } else {
        Vec::new()
    };
    let mut ctx = Ctx {
        repo,
        own: std::sync::OnceLock::new(),
        own_ids: std::sync::OnceLock::new(),
        own_told: AtomicBool::new(false),
        reader: plan.into_reader(DEFAULT_CAPACITY),
        opts,
        progress,
        matcher,
        owners: Owners::default(),
        files: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        others_kept: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        others: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        kept_bytes: AtomicU64::new(0),
        deleted: AtomicU64::new(0),
        would_delete: Mutex::new(Vec::new()),
        verified: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        unreadable: AtomicU64::new(0),
        warnings: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
        no_xattrs: Default::default(),
        links: Mutex::new(HashMap::new()),
        deferred: Mutex::new(Vec::new()),
        in_place: Mutex::new(HashMap::new()),
        kept_first: Mutex::new(HashMap::new()),
        if_newer_kept: Mutex::new(HashMap::new()),
        dir_meta: Mutex::new(Vec::new()),
        link_dirs: Mutex::new(HashSet::new()),
        taken: Mutex::new(HashMap::new()),
        taken_log: std::sync::OnceLock::new(),
        no_taken_log: Mutex::new(None),
        made: Mutex::new(HashMap::new()),
        made_before: std::sync::OnceLock::new(),
        not_given_back: Mutex::new(Vec::new()),
        is_root: is_root(),
        my_groups: entry::my_groups(),
        leads: crate::pathmatch::nested_leads(&whole),
        whole,
        sqlite: snap
            .databases
            .iter()
            .filter(|d| d.kind == "sqlite")
            .map(|d| PathBuf::from(&d.path))
            .collect(),
    };
    let done = restore_start(&ctx, snap, start, &snap_base);
    if !opts.dry_run {
        finish_dirs(&ctx);
        if let Some(log) = ctx.taken_log.take() {
            let left = std::mem::take(&mut *ctx.not_given_back.lock().expect("not_given_back"));
            if let Err(e) = log.finish(&left) {
                ctx.warn(
                    &opts.target,
                    format!("cannot remove the record of the directories taken over: {e}"),
                );
            }
        }
    }
    done?;
    let warnings = ctx.warnings.into_inner().expect("warnings");
    let failures = ctx.failures.into_inner().expect("failures");
    let mut would_delete = ctx.would_delete.into_inner().expect("would_delete");
    would_delete.sort();
    Ok(RestoreSummary {
        files: ctx.files.into_inner(),
        files_skipped: ctx.skipped.into_inner(),
        dirs: ctx.dirs.into_inner(),
        others: ctx.others.into_inner(),
        others_kept: ctx.others_kept.into_inner(),
        bytes: ctx.bytes.into_inner(),
        bytes_skipped: ctx.kept_bytes.into_inner(),
        deleted: ctx.deleted.into_inner(),
        verified: ctx.verified.into_inner(),
        errors: ctx.errors.into_inner(),
        unreadable: ctx.unreadable.into_inner(),
        warnings,
        failures,
        would_delete,
    })
}

/// Finishes the directories left for the end, deepest first (an entry made
/// in a directory moves its times, and no directory may go back to its
/// owner while one below it is still to be done): the snapshot's metadata
/// where it has some, else the owner and mode they had before.
fn finish_dirs(ctx: &Ctx) {
    let dirs = std::mem::take(&mut *ctx.dir_meta.lock().expect("dir_meta"));
    let mut taken = std::mem::take(&mut *ctx.taken.lock().expect("taken"));
    let mut todo: Vec<(PathBuf, Result<Node, TakenOver>)> = Vec::new();
    for (path, n) in dirs {
        // Settled below, in its turn.
        if let Some(t) = taken.remove(&path) {
            ctx.taken.lock().expect("taken").insert(path.clone(), t);
        }
        todo.push((path, Ok(n)));
    }
    todo.extend(taken.into_iter().map(|(p, t)| (p, Err(t))));
    todo.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, what) in todo {
        match what {
            Ok(n) => {
                ctx.settle(&path);
                set_metadata(ctx, &path, &n);
            }
            // Only left by a failed restore: its descriptor is gone, and the
            // number may name another file by now.
            Err(_) if crate::fsmeta::is_at(&path) => ctx.warn(
                &path,
                "left owned by root: the restore failed below a path too long to reach again"
                    .into(),
            ),
            Err(t) => ctx.give_back(&path, t),
        }
    }
}

/// The restore proper, from the snapshot's root or `start`.
fn restore_start(ctx: &Ctx, snap: &Snapshot, start: Option<Node>, snap_base: &Path) -> Result<()> {
    let (repo, opts) = (ctx.repo, ctx.opts);
    let mut target = opts.target.clone();
    // What goes directly into the target: the entries of the snapshot's
    // root or of the directory asked for, or the one entry asked for.
    let top = match &start {
        None => Some(repo.load_tree_in(ctx.reader.index(), &snap.tree)?),
        Some(n) if n.kind == NodeKind::Dir => Some(
            repo.load_tree_in(
                ctx.reader.index(),
                &n.subtree
                    .ok_or_else(|| Error::corrupt("tree", "directory without subtree"))?,
            )?,
        ),
        Some(_) => None,
    };
    if opts.delete
        && let Some(tree) = &top
    {
        refuse_wholesale_delete(&target, tree)?;
    }
    // A target that was there keeps its own metadata below (it may be
    // `/tmp`, empty in a container, or a shared directory), unless it is
    // where the directory was backed up from (a restore in place, perhaps
    // run again after an interruption) or `--delete` makes it the copy.
    let mut target_given = !opts.delete && fs::canonicalize(&target).is_ok_and(|t| t != snap_base);
    let mut existed = fs::symlink_metadata(&target).is_ok();
    // A file given for the target ("create directory: File exists" said
    // nothing of what to do).
    if fs::metadata(&target).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::InvalidInput(format!(
            "the target {} is not a directory: give a directory to restore into (it is made if \
             missing); `cairn dump` writes one file's content out",
            target.display()
        )));
    }
    if !opts.dry_run {
        // Made private when a directory's contents go into it, as every
        // directory the restore makes is until its metadata comes last:
        // made from the umask (0755), the files of a 0700 directory were
        // readable by anyone while it was restored. Otherwise (a whole
        // snapshot, one entry) nothing gives it a mode later: the umask's.
        if start.is_some() && top.is_some() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
            }
            match std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
                .create(&target)
            {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::io("create directory", &target, e));
                }
                _ => {}
            }
        } else {
            fs::create_dir_all(&target).map_err(|e| Error::io("create directory", &target, e))?;
        }
        // A target that is a symlink to a directory is restored through, as
        // given; make_dir below must see the directory, not the link.
        target = fs::canonicalize(&target).map_err(|e| Error::io("resolve", &target, e))?;
        // Judged again as it now is, resolved: `..` and links in the path
        // given can hide where it lies.
        refuse_repository_in_target(ctx.repo, &target, opts.delete)?;
        warn_changeable_above(ctx, &target);
        let contents = start.is_some() && top.is_some();
        if start_taken_log(ctx, &target, contents && !existed) {
            // Made by a restore killed before it gave it the directory's
            // metadata: this one ends that restore's work.
            (target_given, existed) = (false, false);
        }
        // The target too: its owner could otherwise swap what is restored into it.
        ctx.make_dir(&target)?;
    }
    let target = target.as_path();
    let _ = ctx.own.set(own_in_target(repo, target));
    let _ = ctx.own_ids.set(own_ids(repo));
    match (start, top) {
        (None, Some(tree)) => {
            restore_tree(ctx, target, snap_base, &tree).map_err(Fail::into_error)?;
        }
        (Some(n), Some(tree)) => {
            // The directory's contents go into the target, and its
            // metadata onto it if this restore made it: restoring a
            // directory's contents into `/tmp` took its sticky bit away.
            let done = restore_tree(ctx, target, snap_base, &tree);
            // Also when a restore that made the target stops (a full disk):
            // a run again finds it full and would leave it so. One that
            // was there is given back as it was.
            if !opts.dry_run && !target_given && (done.is_ok() || !existed) {
                ctx.dir_meta
                    .lock()
                    .expect("dir_meta")
                    .push((target.to_path_buf(), n));
            }
            done.map_err(Fail::into_error)?;
        }
        (Some(n), None) => {
            if !n.has_safe_name() {
                return Err(Error::corrupt("snapshot", n.unsafe_name_error()));
            }
            let p = target.join(OsStr::from_bytes(&n.name));
            // A file alone: no sidecar of it is restored with it.
            let r = restore_node(ctx, &p, snap_base, &n, false);
            ctx.carry_on(&p, r).map_err(Fail::into_error)?;
        }
        (None, None) => unreachable!("a whole snapshot starts at its root tree"),
    }
    link_deferred(ctx)
}

/// Warns, as root, when someone else may rename the entries of a directory
/// above `target`: they could swap the target (or a directory on the way to
/// it) for one of their own while the restore runs, and so have root write
/// the snapshot's files wherever they choose. Taking the target over
/// cannot prevent that; restoring below directories only root may change
/// can.
fn warn_changeable_above(ctx: &Ctx, target: &Path) {
    if !ctx.is_root {
        return;
    }
    for a in target.ancestors().skip(1) {
        let Ok(m) = fs::symlink_metadata(a) else {
            continue;
        };
        let who = if m.uid() != 0 {
            let name = nix::unistd::User::from_uid(m.uid().into())
                .ok()
                .flatten()
                .map_or_else(|| m.uid().to_string(), |u| u.name);
            format!("its owner ({name})")
        } else if m.mode() & 0o022 != 0 && m.mode() & libc::S_ISVTX == 0 {
            "users other than root (it is group- or world-writable)".to_string()
        } else {
            continue;
        };
        ctx.warn(
            a,
            format!(
                "{who} may rename its entries: while this restore runs as root, they could swap \
                 {} for a directory of their own and have files written where they choose; \
                 to rule that out, restore below directories only root may change, then move \
                 the result into place with `mv -T` (which renames, and follows no symlink \
                 put at the destination)",
                target.display()
            ),
        );
        return;
    }
}

/// Starts the record of the directories this restore takes over, in the
/// user's cache directory, first giving back (each with a warning) what a
/// restore into `target` killed before left taken over (see
/// [`takeover_log`]). `made_it`: this restore made the target to restore
/// a directory's contents into. Returns whether a restore killed before
/// had made it so (and not yet given it the directory's metadata).
fn start_taken_log(ctx: &Ctx, target: &Path, made_it: bool) -> bool {
    let no_log = |why: String| {
        *ctx.no_taken_log.lock().expect("no_taken_log") = Some(why);
        false
    };
    let Some(dir) = ctx.repo.cache_dir().and_then(Path::parent) else {
        return no_log("no record of the directories taken over is kept without a cache".into());
    };
    let dir = dir.join("restores");
    match TakeoverLog::start(&dir, target) {
        Ok(Start::Started(mut log, done, failed, removed)) => {
            if removed > 0 {
                ctx.warn(
                    target,
                    format!(
                        "removed {removed} empty directories that an interrupted restore had \
                         made on its way"
                    ),
                );
            }
            for p in done {
                ctx.warn(
                    &p,
                    "given back the owner and mode that an interrupted restore had left taken \
                     over"
                        .into(),
                );
            }
            for (p, e) in failed {
                ctx.error(
                    &p,
                    format!("cannot give back the owner and mode an interrupted restore took: {e}"),
                );
            }
            let _ = ctx.made_before.set(log.made_before().collect());
            let made_before = log.target_made();
            if made_it
                && !made_before
                && let Err(e) = log.made_target()
            {
                ctx.warn(
                    target,
                    format!(
                        "cannot record that this restore made the target (if it is killed, the \
                         next one leaves it private): {e}"
                    ),
                );
            }
            let _ = ctx.taken_log.set(log);
            made_before
        }
        Ok(Start::Busy) => no_log(
            "another restore into this target is running (it keeps the record of what it takes \
             over; this one keeps none)"
                .into(),
        ),
        Err(e) => no_log(format!(
            "cannot keep the record of the directories taken over in {}: {e}",
            dir.display()
        )),
    }
}

/// `--delete` into a target that holds entries, none of which the restore
/// has, would remove all of them: `restore latest --target /srv --delete`
/// puts the snapshot's `/srv` at `/srv/srv` and empties the rest of `/srv`.
/// That is refused; the user meant `latest:/srv`, or can empty the target.
fn refuse_wholesale_delete(target: &Path, tree: &Tree) -> Result<()> {
    let Ok(entries) = fs::read_dir(target) else {
        return Ok(()); // none yet, or unreadable: the restore reports it
    };
    let mut existing = 0;
    for e in entries.flatten() {
        if tree.find(e.file_name().as_bytes()).is_some() {
            return Ok(());
        }
        existing += 1;
    }
    // A target that folds names finds the snapshot's `Photos` as the
    // `photos` it lists.
    if existing == 0
        || tree.nodes.iter().any(|n| {
            n.has_safe_name()
                && fs::symlink_metadata(target.join(OsStr::from_bytes(&n.name))).is_ok()
        })
    {
        return Ok(());
    }
    let restored: Vec<String> = tree
        .nodes
        .iter()
        .take(3)
        .map(|n| n.display_name())
        .collect();
    Err(Error::InvalidInput(format!(
        "--delete would remove all {existing} entries of {}: none of them is among what the \
         restore puts there ({}{}). A snapshot is restored under its full paths; to make a \
         directory match its copy in the snapshot, name it: SNAPSHOT:/path/of/it. To replace \
         the target's contents anyway, empty it first",
        target.display(),
        restored.join(", "),
        if tree.nodes.len() > 3 { ", ..." } else { "" },
    )))
}

/// Adds the content of every file under tree `id` that the restore will
/// write. Trees that cannot be read are left to the restore to report.
/// Subtrees are planned in parallel: one thread spent a tenth of a cold
/// restore of the Linux tree loading trees one by one before the first
/// file was written.
fn plan_tree(
    repo: &Repository,
    matcher: &PathMatcher,
    id: &Id,
    snap_dir: &Path,
    plan: &Plan,
) -> Result<()> {
    let Ok(tree) = repo.load_tree_in(plan.index(), id) else {
        return Ok(());
    };
    tree.nodes.par_iter().try_for_each(|n| {
        let p = snap_dir.join(OsStr::from_bytes(&n.name));
        plan_node(repo, matcher, n, &p, plan, false)
    })
}

/// [`plan_tree`] for one node at `snap_path`; `top` marks the restored
/// subdirectory itself, whose contents go straight into the target.
fn plan_node(
    repo: &Repository,
    matcher: &PathMatcher,
    n: &Node,
    snap_path: &Path,
    plan: &Plan,
    top: bool,
) -> Result<()> {
    let is_dir = n.kind == NodeKind::Dir;
    if !top && matcher.excluded(snap_path, is_dir) {
        return Ok(());
    }
    match (n.kind, &n.subtree) {
        (NodeKind::Dir, Some(sub)) => {
            crate::deep::deeper(|| plan_tree(repo, matcher, sub, snap_path, plan))
        }
        (NodeKind::File, _) if matcher.included(snap_path, false) => plan.add_all(&n.content),
        _ => Ok(()),
    }
}

/// Restores the entries of `tree` into the existing directory `dir`;
/// returns how many selected entries it holds now, restored or found
/// already right or kept (a directory holding none that the selection does
/// not name goes if this restore made it, and is otherwise left as it is).
/// Entries that fail are reported; only a [`Fail::Abort`] comes back as an
/// error.
fn restore_tree(ctx: &Ctx, dir: &Path, snap_dir: &Path, tree: &Tree) -> Result<u64, Fail> {
    // Paths deeper than the kernel accepts are reached through the open
    // directory (`/proc/self/fd/N/name`); shorter ones stay readable in messages.
    // A dry run too, where the directory exists: it counted a deep file
    // already there as one to write.
    let dirf = File::open(dir).ok();
    let child_path = |name: &OsStr| match &dirf {
        Some(d) if dir.as_os_str().len() + name.len() > LONG_PATH => crate::fsmeta::at(d, name),
        _ => dir.join(name),
    };
    let units = alias::groups(&tree.nodes);
    // Where names may alias, the listing before any of them is restored.
    let before = match &dirf {
        Some(d) if units.iter().any(|u| u.len() > 1) => alias::listing(d),
        _ => Default::default(),
    };
    let restored: Vec<u64> = units
        .par_iter()
        .map(|unit| {
            let mut count = 0;
            let mut done: Vec<&OsStr> = Vec::new();
            for n in unit {
                if !n.has_safe_name() {
                    ctx.error(dir, n.unsafe_name_error());
                    continue;
                }
                let name = OsStr::from_bytes(&n.name);
                let path = child_path(name);
                if let (Some(d), Some(was)) = (&dirf, done.first())
                    && alias::reaches_other(d, &before, &done, name)
                {
                    ctx.error(
                        &path,
                        format!(
                            "not restored: this filesystem takes the name for {}, restored \
                             already (names that differ only in case or Unicode form are one \
                             entry here); restore it elsewhere on its own (--include)",
                            was.to_string_lossy()
                        ),
                    );
                    continue;
                }
                let stored = sidecars_stored(tree, &n.name);
                let snap_path = snap_dir.join(name);
                let n = ctx.carry_on(&path, restore_node(ctx, &path, &snap_path, n, stored))?;
                if n > 0 {
                    done.push(name);
                }
                count += n;
            }
            Ok(count)
        })
        .collect::<Result<_, Fail>>()?;
    if ctx.opts.delete && ctx.holds_whole(snap_dir) && !unentered_mount(dir, tree) {
        delete_extra(ctx, dir, snap_dir, tree);
    }
    Ok(restored.iter().sum())
}

/// Whether `dir` is a mount point (on another filesystem than its parent)
/// that the snapshot holds empty: what a backup with `--one-file-system`
/// records for a filesystem it did not enter. What is in it was never
/// backed up, so `--delete` is not told what to keep there.
fn unentered_mount(dir: &Path, tree: &Tree) -> bool {
    tree.nodes.is_empty() && is_mount_point(dir)
}

/// Whether a filesystem, or a bind mount of part of one, is mounted at
/// `p`, or `p` is on another device than its parent. The kernel tells
/// mount roots (statx, Linux 5.8 on), bind mounts of the same filesystem
/// included; a device compare alone misses those.
fn is_mount_point(p: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
    let mount_root = statx(CWD, p, flags, StatxFlags::BASIC_STATS).is_ok_and(|st| {
        st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
            && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    });
    // A device of its own is what `--one-file-system` stops at (a btrfs
    // subvolume has one without being a mount root).
    mount_root
        // `p/..`, not `p.parent()`: a path through a parent's descriptor
        // (/proc/self/fd/N/name) has a procfs link for parent.
        || match (fs::symlink_metadata(p), fs::metadata(p.join(".."))) {
            (Ok(m), Ok(parent)) => m.dev() != parent.dev(),
            _ => false,
        }
}

/// Removes the directory `p` and all below it (or, in a dry run, only
/// checks that it may), unless another filesystem is mounted on or below
/// it: that filesystem's contents are not the restore's to delete, and
/// removing the tree would empty it.
fn remove_dir_on_one_fs(p: &Path, dry_run: bool) -> std::io::Result<()> {
    let mut mount = None;
    for e in walkdir::WalkDir::new(p) {
        let e = e?;
        if e.file_type().is_dir() && is_mount_point(e.path()) {
            mount = Some(e.into_path());
            break;
        }
    }
    if let Some(m) = mount {
        return Err(std::io::Error::other(format!(
            "{} is a mount point: another filesystem is not deleted",
            m.display()
        )));
    }
    if dry_run {
        return Ok(());
    }
    fs::remove_dir_all(p)
}

/// Removes entries of `dir` that `tree` does not have and that the restore
/// selects (`--include`/`--exclude` apply as if the snapshot had them: a
/// directory only passed through to reach included entries keeps its
/// other ones). Only names directly inside `dir` are touched, and symlinks
/// are removed, never followed. A dry run counts what it would remove.
/// Returns whether every entry of `dir` went (or would go).
fn delete_extra(ctx: &Ctx, dir: &Path, snap_dir: &Path, tree: &Tree) -> bool {
    // A dry run does not replace a symlink where the snapshot has a
    // directory: what it points to is not the target's to count.
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return false;
    }
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    let mut emptied = true;
    let entries: Vec<fs::DirEntry> = rd.flatten().collect();
    let listed: HashSet<Vec<u8>> = entries
        .iter()
        .map(|e| e.file_name().as_bytes().to_vec())
        .collect();
    let unlisted = alias::Unlisted::new(&tree.nodes, &listed);
    for e in entries {
        let name = e.file_name();
        if tree.find(name.as_bytes()).is_some() || unlisted.stands_for(dir, name.as_bytes()) {
            emptied = false;
            continue;
        }
        let in_snapshot = snap_dir.join(&name);
        if !delete_entry(ctx, dir, snap_dir, tree, &e.path(), &in_snapshot) {
            emptied = false;
        }
    }
    emptied
}

/// Deletes `p`, an entry of `dir` that `tree` does not have, unless the
/// restore leaves it (see [`delete_extra`]); whether it went (or would).
/// Under include or exclude patterns, an extra directory is gone through
/// like the snapshot's own, and removed only once empty: removed whole,
/// the names they keep went with it (a new config/ took its excluded .env
/// along).
fn delete_entry(
    ctx: &Ctx,
    dir: &Path,
    snap_dir: &Path,
    tree: &Tree,
    p: &Path,
    snap_path: &Path,
) -> bool {
    let meta = fs::symlink_metadata(p);
    // Backups do not store sockets, so no snapshot has one: "make
    // /srv match its copy" deleted the live sockets of its services.
    if meta
        .as_ref()
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    {
        return false;
    }
    let is_dir = meta.as_ref().is_ok_and(|m| m.is_dir());
    if ctx.matcher.excluded(snap_path, is_dir) || !ctx.matcher.included(snap_path, is_dir) {
        return false;
    }
    // Backups leave the cache out, so no snapshot has it.
    if ctx.holds_own(p) {
        return false;
    }
    let name = p.file_name().unwrap_or_default();
    if journal_of_a_kept_database(ctx, dir, snap_dir, tree, name.as_bytes()) {
        return false;
    }
    let dry = ctx.opts.dry_run;
    let res = match meta {
        Ok(_) if is_dir && !ctx.matcher.selects_all() => {
            if is_mount_point(p) {
                Err(std::io::Error::other(format!(
                    "{} is a mount point: another filesystem is not deleted",
                    p.display()
                )))
            } else if let Err(e) = fs::read_dir(p) {
                Err(e)
            } else if !delete_extra(ctx, p, snap_path, &Tree::default()) {
                return false;
            } else if dry {
                Ok(())
            } else {
                fs::remove_dir(p)
            }
        }
        Ok(_) if is_dir => remove_dir_on_one_fs(p, dry),
        Ok(_) if dry => Ok(()),
        Ok(_) => fs::remove_file(p),
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => {
            ctx.count_deleted(p);
            true
        }
        Err(e) => {
            ctx.error(p, format!("cannot delete: {e}"));
            false
        }
    }
}

/// Whether `name` in `dir` is the `-wal`, `-shm` or `-journal` of a
/// database there that the restore leaves as it is (excluded, or kept by
/// `--overwrite never`): a capture stores none, so `--delete` took them
/// for extra, and the database lost the commits its WAL held, or was left
/// corrupt without its hot journal. A database the restore writes over
/// loses them as it should ([`drop_stale_sidecars`]).
fn journal_of_a_kept_database(
    ctx: &Ctx,
    dir: &Path,
    snap_dir: &Path,
    tree: &Tree,
    name: &[u8],
) -> bool {
    let Some((base, _)) = crate::capture::sqlite::sidecar_of(name) else {
        return false;
    };
    let base_name = OsStr::from_bytes(base);
    if !fs::symlink_metadata(dir.join(base_name)).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let snap_base = snap_dir.join(base_name);
    ctx.matcher.excluded(&snap_base, false)
        || !ctx.matcher.included(&snap_base, false)
        || tree
            .find(base)
            .is_some_and(|b| ctx.overwrite_at(&dir.join(base_name), b) == Overwrite::Never)
}

/// Whether `tree` holds a `-wal`, `-shm` or `-journal` beside `name`: a
/// plain copy of a database with its sidecars, restored together.
fn sidecars_stored(tree: &Tree, name: &[u8]) -> bool {
    crate::capture::sqlite::SIDECARS
        .iter()
        .any(|s| tree.find(&[name, s.as_bytes()].concat()).is_some())
}

/// Whether the file `n` just restored at `path` is a SQLite database with a
/// `-wal` or `-journal` beside it. SQLite databases are whole pages (512
/// bytes or a multiple), which spares nearly every other file the stats.
fn database_with_journal(path: &Path, n: &Node) -> bool {
    n.size >= 512
        && n.size.is_multiple_of(512)
        && crate::capture::sqlite::has_journal(path)
        && crate::capture::sqlite::is_sqlite(path)
}

/// Restores one entry (a directory with what is below it); returns how many
/// selected entries it is or holds, as [`restore_tree`]. `sidecars_stored`:
/// the snapshot holds a `-wal`, `-shm` or `-journal` beside it.
fn restore_node(
    ctx: &Ctx,
    path: &Path,
    snap_path: &Path,
    n: &Node,
    sidecars_stored: bool,
) -> Result<u64, Fail> {
    if ctx.progress.cancelled() {
        return Err(Fail::Abort(Error::Interrupted));
    }
    let is_dir = n.kind == NodeKind::Dir;
    if ctx.matcher.excluded(snap_path, is_dir) {
        return Ok(0);
    }
    let included = ctx.matcher.included(snap_path, is_dir);
    if !included && !is_dir {
        return Ok(0);
    }
    if let Some(own) = ctx.own_at(path, is_dir || n.name == b"config") {
        if own == Own::Repository && !ctx.own_told.swap(true, Ordering::Relaxed) {
            ctx.warn(
                path.parent().unwrap_or(path),
                "left as it is: the repository this restore reads from is here, and the \
                 snapshot's older copy of it is not restored over it; restore that elsewhere"
                    .into(),
            );
        }
        return Ok(0);
    }
    let dry = ctx.opts.dry_run;
    // `--overwrite never` leaves whatever is already at a path, of any
    // kind: only files are compared, so anything else there is kept as is.
    // A dry run too: it counts what the real run keeps.
    let overwrite = ctx.overwrite_at(path, n);
    if overwrite == Overwrite::Never
        && !matches!(n.kind, NodeKind::File | NodeKind::Socket)
        && let Ok(m) = fs::symlink_metadata(path)
        && !(n.kind == NodeKind::Dir && m.is_dir())
    {
        ctx.others_kept.fetch_add(1, Ordering::Relaxed);
        if n.kind == NodeKind::Dir {
            ctx.warn(
                path,
                format!(
                    "kept ({}): not a directory, so nothing of the snapshot's directory was \
                     restored under it",
                    ctx.keeping_option()
                ),
            );
        }
        return Ok(0);
    }
    match n.kind {
        NodeKind::Dir => {
            // Walked only for what is selected below it: a file or link in
            // its place (the user's since the backup) stays unless
            // something selected needs the directory. It was replaced by a
            // directory, then by nothing when none came.
            if !included
                && fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir())
                && !selects_below(ctx, snap_path, n)?
            {
                return Ok(0);
            }
            // Removed again below only if this restore made it.
            let mut created = false;
            if !dry {
                let made = ctx.make_dir(path).map_err(Fail::target)?;
                created = matches!(made, Made::Created);
            }
            // `--overwrite never` leaves a directory that was there as it
            // was: its mode, owner, times, ACLs and attributes (what was
            // taken over is given back at the end). One a restore killed
            // before made is this restore's to finish.
            let keep_own = !dry
                && !created
                && overwrite == Overwrite::Never
                && ctx.made_before_here(path).is_none();
            // A listing that cannot be read is reported, and the directory
            // still finished below: it exists now.
            let inner = crate::deep::deeper(|| restore_subtree(ctx, path, snap_path, n));
            let inner = match ctx.carry_on(path, inner) {
                Ok(inner) => inner,
                Err(abort) => {
                    // One made only on the way to included entries, and
                    // still empty, goes: as a run never stopped leaves it.
                    if created && !included && fs::remove_dir(path).is_ok() {
                        ctx.settle(path);
                        return Err(abort);
                    }
                    // The restore stops (a full disk), but the directory
                    // exists and gets its metadata at the end all the same,
                    // not the private mode it was made with.
                    if !dry && !keep_own && !crate::fsmeta::is_at(path) {
                        ctx.dir_meta
                            .lock()
                            .expect("dir_meta")
                            .push((path.to_path_buf(), n.clone()));
                    }
                    return Err(abort);
                }
            };
            // Everything below is done, so the directory is finished now,
            // unless a hard link is still to be made below it (they come at
            // the end, see link_deferred). A path through the parent's
            // descriptor (beyond LONG_PATH) dies with it: finished now.
            let wait = !crate::fsmeta::is_at(path)
                && ctx.link_dirs.lock().expect("link_dirs").contains(path);
            if inner == 0 && !included {
                // Only created to hold included entries, and none were.
                if created {
                    ctx.settle(path);
                    let _ = fs::remove_dir(path);
                }
                if !dry && !wait {
                    ctx.give_back_now(path);
                }
                return Ok(0);
            }
            ctx.dirs.fetch_add(1, Ordering::Relaxed);
            if keep_own {
                return Ok(1);
            }
            if !dry && wait {
                ctx.dir_meta
                    .lock()
                    .expect("dir_meta")
                    .push((path.to_path_buf(), n.clone()));
            } else if !dry {
                ctx.settle(path);
                set_metadata(ctx, path, n);
            }
            return Ok(1);
        }
        NodeKind::File => {
            // A path through a parent's descriptor is gone by the time links
            // are made: such a member gets its own content instead.
            let grouped = n.links > 1 && !crate::fsmeta::is_at(path);
            let first_of_group = grouped && claim_link(ctx, path, n);
            if grouped && !first_of_group {
                return Ok(1); // linked to its group's first member after the main pass
            }
            // A group restored before may be there: decided once every
            // member is known (a dry run goes by size and time alone).
            if first_of_group
                && overwrite == Overwrite::IfChanged
                && let Some(ident) = linked_copy(ctx, path, n)
            {
                ctx.in_place
                    .lock()
                    .expect("in_place")
                    .insert(n.link_group(), (path.to_path_buf(), n.clone(), ident));
                return Ok(1);
            }
            if !dry {
                let outcome = restore_file(ctx, path, n)?;
                // Kept as identical too: a journal beside it would still
                // be replayed over it. A database stored as a plain file
                // (a capture that fell back to a copy, a backup without
                // --sqlite-aware) too, unless its sidecars were stored
                // with it: a stale WAL undid the restore.
                if matches!(
                    outcome,
                    Outcome::Written | Outcome::Finished | Outcome::Identical
                ) && (ctx.sqlite.contains(snap_path)
                    || !sidecars_stored && database_with_journal(path, n))
                {
                    drop_stale_sidecars(ctx, path);
                }
                if first_of_group && outcome != Outcome::Kept {
                    // Only a member holding the snapshot's content may be linked to.
                    ctx.links
                        .lock()
                        .expect("links")
                        .insert(n.link_group(), Some(path.to_path_buf()));
                } else if first_of_group {
                    ctx.kept_first
                        .lock()
                        .expect("kept_first")
                        .insert(n.link_group(), (path.to_path_buf(), n.clone()));
                }
                match outcome {
                    Outcome::Written => {}
                    Outcome::Finished => return Ok(1),
                    // The content is right, but `chmod -R` or the like may
                    // have changed the rest since. Found right or kept, it
                    // counts: the directories above get their metadata too.
                    Outcome::Identical => {
                        set_metadata(ctx, path, n);
                        return Ok(1);
                    }
                    Outcome::Kept => return Ok(1),
                }
            }
            if dry {
                if dry_run_keeps(ctx, path, n) {
                    ctx.count_skipped(n.size);
                    return Ok(1);
                }
                if dry_run_dir_in_the_way(ctx, path, n) {
                    return Ok(0);
                }
                ctx.count_file();
                ctx.count_written(n.size);
                return Ok(1);
            }
        }
        NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
            if dry && dry_run_dir_in_the_way(ctx, path, n) {
                return Ok(0);
            }
            // Names of one inode on the source are one inode again, as for
            // files (they became separate symlinks and FIFOs).
            let grouped = n.links > 1 && !crate::fsmeta::is_at(path);
            if grouped && !claim_link(ctx, path, n) {
                return Ok(1); // linked to its group's first member after the main pass
            }
            if !dry {
                let made = make_other(ctx, path, n).map_err(Fail::target)?;
                if grouped {
                    // Not made (a scratch restore's device node): the
                    // group's other names are made, or not, on their own.
                    ctx.links
                        .lock()
                        .expect("links")
                        .insert(n.link_group(), made.then(|| path.to_path_buf()));
                }
            }
            ctx.others.fetch_add(1, Ordering::Relaxed);
            return Ok(1);
        }
        NodeKind::Socket => return Ok(0),
    }
    if !dry {
        set_metadata(ctx, path, n);
    }
    Ok(1)
}

/// Makes the symbolic link, FIFO or device node `n` at `path`, in place of
/// whatever is there, with its metadata. A symbolic link already there
/// with `n`'s target is kept (its metadata set). Whether it was made: a
/// scratch restore ([`RestoreOptions::scratch`]) leaves out, with a
/// warning, a device node this user may not make.
fn make_other(ctx: &Ctx, path: &Path, n: &Node) -> Result<bool> {
    // read_link fails on anything but a symbolic link.
    let same_link = n.kind == NodeKind::Symlink
        && fs::read_link(path).is_ok_and(|t| t.as_os_str().as_bytes() == n.link_target);
    if !same_link {
        let (op, made) = if n.kind == NodeKind::Symlink {
            let target = OsStr::from_bytes(&n.link_target);
            let made = make_in_place_of(ctx, path, |tmp| std::os::unix::fs::symlink(target, tmp));
            ("create symlink", made)
        } else {
            (
                "create",
                make_in_place_of(ctx, path, |tmp| make_special(tmp, n)),
            )
        };
        if let Err(NotMade::Io(e)) = &made
            && ctx.opts.scratch
            && matches!(n.kind, NodeKind::Chardev | NodeKind::Blockdev)
            && e.raw_os_error() == Some(libc::EPERM)
        {
            ctx.warn(
                path,
                format!("device node not made: {e} (this user may not make one)"),
            );
            return Ok(false);
        }
        made.map_err(|e| match e {
            NotMade::Io(e) => Error::io(op, path, e),
            NotMade::Other(e) => e,
        })?;
    }
    set_metadata(ctx, path, n);
    Ok(true)
}

/// Why [`make_in_place_of`] failed.
enum NotMade {
    /// Making or renaming the entry.
    Io(std::io::Error),
    /// Removing a directory in the way.
    Other(Error),
}

/// Makes an entry with `make` under a temporary name beside `path` and
/// renames it over what stands there: a restore killed, or a `make` that
/// fails, leaves the old entry rather than nothing. Only a directory in
/// the way (which no rename replaces) is removed first.
fn make_in_place_of(
    ctx: &Ctx,
    path: &Path,
    make: impl Fn(&Path) -> std::io::Result<()>,
) -> Result<(), NotMade> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        ctx.remove_in_the_way(path).map_err(NotMade::Other)?;
    }
    let (tmp, ()) = beside(path, make).map_err(NotMade::Io)?;
    let renamed = fs::rename(&tmp, path);
    // A rename between two names of one inode (a hard link made again)
    // succeeds without removing `tmp`.
    if renamed.is_err() || fs::symlink_metadata(&tmp).is_ok() {
        let _ = fs::remove_file(&tmp);
    }
    renamed.map_err(NotMade::Io)
}

/// Whether the selection takes any entry below directory `n` (at
/// `snap_path` in the snapshot).
fn selects_below(ctx: &Ctx, snap_path: &Path, n: &Node) -> Result<bool, Fail> {
    let Some(sub) = n.subtree else {
        return Ok(false);
    };
    let tree = ctx.repo.load_tree_in(ctx.reader.index(), &sub)?;
    for c in &tree.nodes {
        let p = snap_path.join(OsStr::from_bytes(&c.name));
        let is_dir = c.kind == NodeKind::Dir;
        if ctx.matcher.excluded(&p, is_dir) {
            continue;
        }
        if ctx.matcher.included(&p, is_dir)
            || (is_dir && crate::deep::deeper(|| selects_below(ctx, &p, c))?)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Restores the contents of directory node `n` into `path`.
fn restore_subtree(ctx: &Ctx, path: &Path, snap_path: &Path, n: &Node) -> Result<u64, Fail> {
    let sub = n.subtree.ok_or_else(|| {
        Fail::Entry(Error::corrupt(
            format!("tree node {}", path.display()),
            "directory without subtree",
        ))
    })?;
    let tree = ctx.repo.load_tree_in(ctx.reader.index(), &sub)?;
    restore_tree(ctx, path, snap_path, &tree)
}

/// Returns true if this node is the first of its hard link group (and
/// should be restored with content); otherwise queues a link.
fn claim_link(ctx: &Ctx, path: &Path, n: &Node) -> bool {
    // The link is made at the end, through the first member's path and its
    // own: every directory above either waits for it.
    {
        let mut held = ctx.link_dirs.lock().expect("link_dirs");
        for a in path.ancestors().skip(1) {
            if !held.insert(a.to_path_buf()) {
                break;
            }
        }
    }
    let key = n.link_group();
    let mut links = ctx.links.lock().expect("links");
    if let std::collections::hash_map::Entry::Vacant(e) = links.entry(key) {
        e.insert(None);
        return true;
    }
    ctx.deferred.lock().expect("deferred").push(Deferred {
        link: path.to_path_buf(),
        node: n.clone(),
        key,
    });
    false
}

/// Makes the hard links queued by [`claim_link`]; a link that cannot be
/// made is reported, and the others are made. A group found in place is
/// first kept as it is or written anew.
fn link_deferred(ctx: &Ctx) -> Result<()> {
    let deferred = std::mem::take(&mut *ctx.deferred.lock().expect("deferred"));
    let in_place = std::mem::take(&mut *ctx.in_place.lock().expect("in_place"));
    let mut links = ctx.links.lock().expect("links");
    let mut kept = HashSet::new();
    let groups = by_group(&deferred);
    for (key, (first, node, ident)) in in_place {
        let members: Vec<&Path> = groups
            .get(&key)
            .into_iter()
            .flatten()
            .map(|d| d.link.as_path())
            .collect();
        if names_exactly(&first, ident, &members) {
            if !ctx.opts.dry_run {
                set_metadata(ctx, &first, &node);
                // Each name: `verified` counts names, as `files` does.
                for _ in 0..=members.len() {
                    kept_verified(ctx);
                }
            }
            for _ in 0..=members.len() {
                ctx.count_skipped(node.size);
            }
            kept.insert(key);
            continue;
        }
        // Some name of that inode is not one of the group's: its own inode.
        if ctx.opts.dry_run {
            ctx.count_file();
            ctx.count_written(node.size);
            continue;
        }
        match replace_file(ctx, &first, &node) {
            Ok(outcome) => {
                if outcome != Outcome::Finished {
                    set_metadata(ctx, &first, &node);
                }
                links.insert(key, Some(first));
            }
            Err(Fail::Entry(e)) => ctx.fail(&first, &e),
            Err(Fail::Abort(e)) => return Err(e),
        }
    }
    if matches!(ctx.opts.overwrite, Overwrite::Never | Overwrite::IfNewer) && !ctx.opts.dry_run {
        join_kept_names(ctx, &deferred, &mut links);
    }
    for d in deferred {
        if kept.contains(&d.key) {
            continue;
        }
        let is_file = d.node.kind == NodeKind::File;
        let count_made = || {
            if is_file {
                ctx.count_file();
            } else {
                ctx.others.fetch_add(1, Ordering::Relaxed);
            }
        };
        if ctx.opts.dry_run {
            // As the real run: a name already taken is left under `never`.
            let kept = ctx.overwrite_at(&d.link, &d.node) == Overwrite::Never
                && fs::symlink_metadata(&d.link).is_ok();
            if !kept {
                count_made();
            } else if is_file {
                ctx.count_skipped(d.node.size);
            } else {
                ctx.skipped.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let res = match links.get(&d.key) {
            Some(Some(first)) => {
                let exists = fs::symlink_metadata(&d.link).is_ok();
                if exists && ctx.overwrite_at(&d.link, &d.node) == Overwrite::Never {
                    ctx.count_skipped(d.node.size);
                    continue;
                }
                let linked = make_in_place_of(ctx, &d.link, |tmp| fs::hard_link(first, tmp));
                match linked {
                    Ok(()) => Ok(()),
                    // A target without hard links (vfat, exFAT, SMB), out
                    // of them, or a group across a mount: a name of its
                    // own, as before they were linked. Files too: they got
                    // an error and no content.
                    Err(NotMade::Io(e))
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK | libc::EXDEV)
                        ) =>
                    {
                        if d.node.kind != NodeKind::File {
                            make_other(ctx, &d.link, &d.node).map(drop)
                        } else {
                            ctx.warn(
                                &d.link,
                                format!(
                                    "restored as a copy of its own, not a hard link to {} \
                                     (cannot link here: {e})",
                                    first.display()
                                ),
                            );
                            own_copy(ctx, &d)?;
                            continue;
                        }
                    }
                    Err(NotMade::Io(e)) => Err(Error::io("link", &d.link, e)),
                    Err(NotMade::Other(e)) => Err(e),
                }
            }
            // The first member was not made: this one is made on its own.
            _ if d.node.kind != NodeKind::File => make_other(ctx, &d.link, &d.node).map(drop),
            // The first member was not restored: this one gets its own content.
            _ => {
                own_copy(ctx, &d)?;
                continue;
            }
        };
        match res.map_err(Fail::target) {
            Ok(()) => {
                count_made();
                // A name of the inode its first name verified: `verified`
                // counts names, as `files` does (4 files, 2 verified read
                // as 2 left unchecked).
                if is_file && links.get(&d.key).is_some_and(Option::is_some) {
                    kept_verified(ctx);
                }
            }
            Err(Fail::Entry(e)) => ctx.fail(&d.link, &e),
            Err(Fail::Abort(e)) => return Err(e),
        }
    }
    Ok(())
}

/// Restores the hard link group member `d` as a file of its own, with its
/// content; only an abort is returned (an entry's failure is reported).
fn own_copy(ctx: &Ctx, d: &Deferred) -> Result<()> {
    match restore_file(ctx, &d.link, &d.node) {
        Ok(Outcome::Kept | Outcome::Finished) => {}
        Ok(_) => set_metadata(ctx, &d.link, &d.node),
        Err(Fail::Entry(e)) => ctx.fail(&d.link, &e),
        Err(Fail::Abort(e)) => return Err(e),
    }
    Ok(())
}

/// Under `--overwrite never`, a hard link group some of whose names were
/// there already (a restore killed before it linked them, say) is joined
/// to one of those that holds the snapshot's content: the names this
/// restore makes link to it instead of to a copy of their own (the group's
/// first member, written before the others were known, is relinked). A
/// name holding anything else is someone's file, left out of the group.
/// The deferred names of each hard-link group: looked up per group, a scan
/// of them all made a run again over a million groups take hours.
fn by_group(deferred: &[Deferred]) -> HashMap<LinkGroup, Vec<&Deferred>> {
    let mut groups: HashMap<LinkGroup, Vec<&Deferred>> = HashMap::new();
    for d in deferred {
        groups.entry(d.key).or_default().push(d);
    }
    groups
}

fn join_kept_names(
    ctx: &Ctx,
    deferred: &[Deferred],
    links: &mut HashMap<LinkGroup, Option<PathBuf>>,
) {
    let kept_first = std::mem::take(&mut *ctx.kept_first.lock().expect("kept_first"));
    // Deferred names are made after this: those there now were there before.
    let there = |p: &Path| fs::symlink_metadata(p).is_ok();
    let mut keys: Vec<LinkGroup> = kept_first.keys().copied().collect();
    keys.extend(
        deferred
            .iter()
            .filter(|d| d.node.kind == NodeKind::File && there(&d.link))
            .map(|d| d.key),
    );
    let mut seen = HashSet::new();
    keys.retain(|k| seen.insert(*k));
    let groups = by_group(deferred);
    for key in keys {
        let members = || groups.get(&key).into_iter().flatten().copied();
        let fresh = links.get(&key).cloned().flatten();
        if fresh.is_none() && members().all(|d| there(&d.link)) {
            continue; // every name is there: nothing to link
        }
        let candidates = kept_first
            .get(&key)
            .map(|(p, n)| (p.as_path(), n))
            .into_iter()
            .chain(
                members()
                    .filter(|d| there(&d.link))
                    .map(|d| (d.link.as_path(), &d.node)),
            );
        let anchor = candidates
            .filter(|(p, n)| fs::symlink_metadata(p).is_ok_and(|m| holds(ctx, &m, p, n)))
            .map(|(p, _)| p.to_path_buf())
            .next();
        let Some(anchor) = anchor else { continue };
        if let Some(fresh) = fresh {
            let relinked = fs::remove_file(&fresh).and_then(|_| fs::hard_link(&anchor, &fresh));
            if let Err(e) = relinked {
                ctx.fail(&fresh, &Error::io("link", &fresh, e));
                continue;
            }
        }
        links.insert(key, Some(anchor));
    }
}

/// Removes the `-wal`, `-shm` and `-journal` files beside `path`, a SQLite
/// database just written over another: they belong to the database it
/// replaced, and SQLite would replay that one's journal over the restored
/// copy (torn pages, or commits the restore was to undo).
fn drop_stale_sidecars(ctx: &Ctx, path: &Path) {
    for suffix in crate::capture::sqlite::SIDECARS {
        let side = crate::capture::sqlite::beside(path, suffix);
        match fs::remove_file(&side) {
            Ok(()) => ctx.warn(
                &side,
                "removed: it belonged to the database the restore replaced".into(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => ctx.fail(&side, &Error::io("remove", &side, e)),
        }
    }
}

/// What a dry run makes of a directory with entries standing where an
/// entry that is no directory goes, as the real run would: with
/// `--delete` counted as deleted (or named, if another filesystem is
/// mounted below it), else named as left in the way. True if the entry
/// would not be restored.
fn dry_run_dir_in_the_way(ctx: &Ctx, path: &Path, n: &Node) -> bool {
    // Kept as it is, as everything in the way under `--overwrite never`.
    if ctx.overwrite_at(path, n) == Overwrite::Never {
        return false;
    }
    let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if !is_dir || fs::read_dir(path).is_ok_and(|mut d| d.next().is_none()) {
        return false;
    }
    if !ctx.opts.delete {
        ctx.fail(path, &entry::in_the_way(path));
        return true;
    }
    match remove_dir_on_one_fs(path, true) {
        Ok(()) => {
            ctx.count_deleted(path);
            false
        }
        Err(e) => {
            ctx.fail(path, &Error::io("remove", path, e));
            true
        }
    }
}

/// Whether a dry run counts the file at `path` as already there, as the
/// real run would: anything at all under `--overwrite never`; under
/// `if-changed`, a file of one name that holds the snapshot's content,
/// read and hashed as the real run reads it (only the target is read, not
/// the repository). Size and modification time alone counted a file
/// damaged in place as there, which the real run then rewrote.
fn dry_run_keeps(ctx: &Ctx, path: &Path, n: &Node) -> bool {
    let Ok(m) = fs::symlink_metadata(path) else {
        return false;
    };
    match ctx.overwrite_at(path, n) {
        Overwrite::Never => true,
        Overwrite::IfChanged | Overwrite::IfNewer => m.nlink() == 1 && holds(ctx, &m, path, n),
        Overwrite::Always => false,
    }
}

fn already_restored(ctx: &Ctx, path: &Path, n: &Node) -> bool {
    // A file with other names may be one planted from outside the target:
    // setting its owner and mode would change that file too. Written anew,
    // it gets an inode of its own. (A hard link group's own names are
    // accepted by `link_deferred`, once they are all known.)
    fs::symlink_metadata(path).is_ok_and(|m| m.nlink() == 1 && holds(ctx, &m, path, n))
}

/// The identity of a file at one moment: device, inode and change time
/// (which a write, a chmod or a new link moves).
type Ident = (u64, u64, i64, i64);

/// A hard link group's first member found in place: its path, its node
/// and its identity when its content was checked.
type InPlace = (PathBuf, Node, Ident);

fn ident(m: &fs::Metadata) -> Ident {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

/// The identity of the file at `path` if it holds `n`'s content and has
/// other names too: perhaps a hard link group restored before.
fn linked_copy(ctx: &Ctx, path: &Path, n: &Node) -> Option<Ident> {
    let m = fs::symlink_metadata(path).ok()?;
    (m.nlink() > 1 && holds(ctx, &m, path, n)).then(|| ident(&m))
}

/// Whether `m`, the metadata of the file at `path`, and its content are
/// `n`'s: size and modification time, then every byte against the hashes.
fn holds(ctx: &Ctx, m: &fs::Metadata, path: &Path, n: &Node) -> bool {
    looks_like(m, n) && verify_file(ctx, path, path, n).is_ok()
}

/// Counts a file kept because [`holds`] found it in place: read back and
/// checked, as `--verify` asks, though not written.
fn kept_verified(ctx: &Ctx) {
    if ctx.opts.verify {
        ctx.verified.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether `m` is a file with `n`'s size and modification time: the cheap
/// first test of [`holds`]. The time within two seconds: a target with
/// coarser timestamps than the source (FAT's 2 s, exFAT's 10 ms, SMB's
/// 100 ns, ext4 with small inodes' 1 s) rounds the one the restore set,
/// and compared exactly no file was ever found restored, so a run again
/// wrote everything anew. The content's hashes decide in the end.
fn looks_like(m: &fs::Metadata, n: &Node) -> bool {
    const SLACK_NS: i128 = 2_000_000_000;
    let ns = |sec: i64, nsec: i64| i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    let there = ns(m.mtime(), m.mtime_nsec());
    let recorded = ns(n.mtime.sec, i64::from(n.mtime.nsec));
    m.is_file() && m.len() == n.size && (there - recorded).abs() < SLACK_NS
}

/// Whether the file at `first` is still the one checked (`was`: nothing
/// written, linked or changed since) and has exactly the names `first` and
/// `members`: all of them are links to it, and it has no other.
fn names_exactly(first: &Path, was: Ident, members: &[&Path]) -> bool {
    let Ok(m) = fs::symlink_metadata(first) else {
        return false;
    };
    ident(&m) == was
        && m.nlink() == 1 + members.len() as u64
        && members
            .iter()
            .all(|p| fs::symlink_metadata(p).is_ok_and(|o| (o.dev(), o.ino()) == (was.0, was.1)))
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Content written.
    Written,
    /// Content written and metadata set.
    Finished,
    /// Already there with the snapshot's content.
    Identical,
    /// An existing file left alone (`--overwrite never`).
    Kept,
}

/// Writes a file's content unless it is already there. A file that cannot
/// be written or verified in full is removed, never left at its final name
/// looking complete; what stood at that name stays until its replacement
/// is complete (unless it is updated `--in-place`).
fn restore_file(ctx: &Ctx, path: &Path, n: &Node) -> Result<Outcome, Fail> {
    let create = |path: &Path| {
        if fs::symlink_metadata(path).is_ok() {
            return Err(std::io::ErrorKind::AlreadyExists.into());
        }
        create_unnamed(path)
    };
    let f = match create(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let skip = match ctx.overwrite_at(path, n) {
                Overwrite::Never => Some(Outcome::Kept),
                Overwrite::IfChanged | Overwrite::IfNewer => {
                    already_restored(ctx, path, n).then(|| {
                        kept_verified(ctx);
                        Outcome::Identical
                    })
                }
                Overwrite::Always => None,
            };
            if let Some(outcome) = skip {
                ctx.count_skipped(n.size);
                return Ok(outcome);
            }
            if ctx.opts.in_place {
                match open_in_place(ctx, path, n) {
                    Ok(f) => return update_in_place(ctx, f, path, n),
                    Err(Some(why)) => ctx.warn(
                        path,
                        format!("replaced as a whole, not updated in place: {why}"),
                    ),
                    Err(None) => {}
                }
            }
            return replace_file(ctx, path, n);
        }
        Err(e) => return Err(Fail::target(Error::io("create", path, e))),
    };
    // It gets its name complete, metadata and all, so that a restore
    // killed leaves no file at its name that a run again with
    // `--overwrite never` would keep as it is.
    let Some(f) = f else {
        return write_beside(ctx, path, n);
    };
    write_complete(ctx, f, None, path, n)
        .and_then(|f| publish(&f, path).map_err(|e| Fail::target(Error::io("create", path, e))))?;
    ctx.count_file_written(n.size);
    Ok(Outcome::Finished)
}

/// Replaces what stands at `path` by `n`'s content: written beside it under
/// a temporary name and renamed over it once complete, so that a restore
/// that fails (damaged data, a full disk, Ctrl-C) leaves the existing entry
/// as it was. A directory in the way is removed only then.
fn replace_file(ctx: &Ctx, path: &Path, n: &Node) -> Result<Outcome, Fail> {
    if let Some(f) = create_unnamed(path).map_err(|e| Fail::target(Error::io("create", path, e)))? {
        // Complete, metadata and all, before it has any name: a restore
        // killed leaves neither a half-written file beside the one it
        // replaces nor a replacement without its metadata.
        let f = write_complete(ctx, f, None, path, n)?;
        let tmp =
            publish_beside(&f, path).map_err(|e| Fail::target(Error::io("create", path, e)))?;
        rename_over(ctx, &tmp, path)?;
        ctx.count_file_written(n.size);
        return Ok(Outcome::Finished);
    }
    write_beside(ctx, path, n)
}

/// [`replace_file`] where files cannot be made unnamed (NFS, SMB, FAT):
/// the file is written, checked and given its metadata under a temporary
/// name beside `path`, then renamed there.
fn write_beside(ctx: &Ctx, path: &Path, n: &Node) -> Result<Outcome, Fail> {
    let (tmp, f) = create_beside(path).map_err(|e| Fail::target(Error::io("create", path, e)))?;
    write_complete(ctx, f, Some(&tmp), path, n)
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .and_then(|f| {
            drop(f);
            rename_over(ctx, &tmp, path)
        })?;
    ctx.count_file_written(n.size);
    Ok(Outcome::Finished)
}

/// Puts the complete file `tmp` in place of what stands at `path` (a
/// directory in the way removed only now); `tmp` goes if that fails.
fn rename_over(ctx: &Ctx, tmp: &Path, path: &Path) -> Result<(), Fail> {
    let done = (|| {
        if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            ctx.remove_in_the_way(path).map_err(Fail::target)?;
        }
        fs::rename(tmp, path).map_err(|e| Fail::target(Error::io("rename", path, e)))
    })();
    done.inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })
}

/// Writes `n`'s content into the new file `f`, reads it back with
/// `--verify` (at `at`; the unnamed file of [`create_unnamed`] by its
/// descriptor), and sets its metadata: all it needs before it gets its
/// final name `path`.
fn write_complete(
    ctx: &Ctx,
    mut f: File,
    at: Option<&Path>,
    path: &Path,
    n: &Node,
) -> Result<File, Fail> {
    write_content(ctx, &mut f, path, n)?;
    if ctx.opts.verify {
        use std::os::fd::AsRawFd;
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        verify_file(ctx, at.unwrap_or(&by_fd), path, n)?;
        ctx.verified.fetch_add(1, Ordering::Relaxed);
    }
    set_metadata_of(ctx, &f, path, n);
    Ok(f)
}

/// Names the unnamed file `f` beside `path`, under a name of its own.
fn publish_beside(f: &File, path: &Path) -> std::io::Result<PathBuf> {
    beside(path, |tmp| publish(f, tmp)).map(|(tmp, ())| tmp)
}

/// Makes an entry with `make` beside `path` (same directory) under a
/// temporary name of its own, and returns that name.
fn beside<T>(
    path: &Path,
    make: impl Fn(&Path) -> std::io::Result<T>,
) -> std::io::Result<(PathBuf, T)> {
    loop {
        let tmp = path.with_file_name(format!("{TEMP_PREFIX}{}", Id::random().short()));
        match make(&tmp) {
            Ok(made) => return Ok((tmp, made)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The regular file at `path` opened for update, if updating it in place
/// gives no one more than replacing it would: it has no other name (a hard
/// link planted in the target must not let a restore write into a file
/// outside it), belongs to the user restoring (or, as root, to the owner
/// it is given), carries no setuid, setgid or sticky bit and no ACL, and
/// its mode lets no one in that `n`'s keeps out (the group only if it is
/// `n`'s too): someone who may open it could read what is written. Else
/// the file is replaced as a whole.
fn open_in_place(
    ctx: &Ctx,
    path: &Path,
    n: &Node,
) -> std::result::Result<File, Option<&'static str>> {
    use std::os::unix::fs::OpenOptionsExt;
    use xattr::FileExt;
    // Only a regular file is opened (opening a device may act on it).
    let before = fs::symlink_metadata(path).map_err(|_| None)?;
    if !before.is_file() {
        return Err(None);
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|_| None)?;
    let m = f.metadata().map_err(|_| None)?;
    if !m.is_file() || (m.dev(), m.ino()) != (before.dev(), before.ino()) {
        return Err(None);
    }
    // The owner and group a replacement would end up with.
    let (uid, gid) = if ctx.is_root {
        entry::restored_owner(ctx, n)
    } else {
        // The recorded group when the user is in it (set_metadata_on gives
        // it back), else what a new file gets here.
        let (_, recorded) = entry::restored_owner(ctx, n);
        let parent = path.parent().and_then(|p| fs::metadata(p).ok());
        let gid = match parent {
            _ if ctx.my_groups.contains(&recorded) => recorded,
            Some(d) if d.mode() & libc::S_ISGID != 0 => d.gid(),
            _ => nix::unistd::getegid().as_raw(),
        };
        (nix::unistd::geteuid().as_raw(), gid)
    };
    let group = if m.gid() == gid {
        0o070 & !n.mode
    } else {
        0o070
    };
    let acl = f
        .list_xattr()
        .map(|mut names| names.any(|x| x == "system.posix_acl_access"))
        .unwrap_or(true);
    let refused = if m.nlink() != 1 {
        "it has other hard links"
    } else if m.uid() != uid {
        "its owner is not the one the restore gives it"
    } else if m.mode() & 0o7000 != 0 {
        "it has a setuid, setgid or sticky bit"
    } else if acl {
        "it has an ACL"
    } else if m.mode() & (0o007 & !n.mode | group) != 0 {
        "its mode lets in someone the snapshot's keeps out"
    } else {
        return Ok(f);
    };
    Err(Some(refused))
}

/// Makes the file open as `f` hold `n`'s content: each chunk already at
/// its offset (by its keyed hash) stays, the others are written over, and
/// the file is cut to its size. On failure the file is left partly updated.
fn update_in_place(ctx: &Ctx, mut f: File, path: &Path, n: &Node) -> Result<Outcome, Fail> {
    use std::os::unix::fs::FileExt;
    let io = |op, e| Fail::target(Error::io(op, path, e));
    // A snapshot whose chunks do not add up to the size must not touch it.
    let mut lengths = Vec::with_capacity(n.content.len());
    for id in &n.content {
        lengths.push(u64::from(ctx.reader.index().locate(id)?.blob.raw_length));
    }
    check_size(path, lengths.iter().sum(), n)?;
    let mut offset = 0u64;
    let mut have = Vec::new();
    let mut changed = false;
    // Past the file's end (a shorter file, one an interrupted restore left
    // empty) nothing is compared, and zero blocks of the chunks that start
    // there stay holes, as a restore that writes the file anew leaves them:
    // a sparse image was written out in full, the room `--in-place` is
    // there to save. (The chunk across the old end is written whole.)
    let end = f.metadata().map_err(|e| io("stat", e))?.len();
    let mut cursor = u64::MAX;
    let mut dense = ctx.opts.dense;
    let done = (|| {
        for (id, &len) in n.content.iter().zip(&lengths) {
            if ctx.progress.cancelled() {
                return Err(Fail::Abort(Error::Interrupted));
            }
            have.resize(len as usize, 0);
            let same = offset < end
                && f.read_exact_at(&mut have, offset).is_ok()
                && ctx.repo.key().blob_id(&have) == *id;
            if same && offset == 0 {
                dense |= is_swap_file(&have);
            }
            if !same {
                let data = ctx.reader.load_blob(id)?;
                dense |= offset == 0 && is_swap_file(&data);
                // Before the write: one that fails half-way (a full disk)
                // has changed the file already.
                changed = true;
                if offset >= end {
                    write_blocks(&mut f, offset, &data, &mut cursor, dense)
                } else {
                    f.write_all_at(&data, offset)
                }
                .map_err(|e| io("write", e))?;
                ctx.count_written(data.len() as u64);
            } else {
                ctx.count_kept(len);
            }
            offset += len;
        }
        if f.metadata().map_err(|e| io("stat", e))?.len() != offset {
            changed = true;
            f.set_len(offset).map_err(|e| io("truncate", e))?;
        }
        // Unchanged, every chunk was just compared by its hash already.
        if ctx.opts.verify && changed {
            verify_file(ctx, path, path, n)?;
        }
        if ctx.opts.verify {
            ctx.verified.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })();
    if done.is_err() && changed {
        ctx.warn(
            path,
            "left partly updated (--in-place): run the restore again".into(),
        );
    }
    done?;
    if !changed {
        // The content was there already (its bytes counted as kept above);
        // only its metadata differed.
        ctx.count_skipped(0);
        return Ok(Outcome::Identical);
    }
    ctx.count_file();
    Ok(Outcome::Written)
}

/// A new file beside `path` (same directory), under a name of its own.
fn create_beside(path: &Path) -> std::io::Result<(PathBuf, File)> {
    beside(path, create_file)
}

fn write_content(ctx: &Ctx, f: &mut File, path: &Path, n: &Node) -> Result<(), Fail> {
    // The file is new: its length and position are where the last write ended.
    let (mut offset, mut end) = (0u64, 0u64);
    let io = |op, e| Fail::target(Error::io(op, path, e));
    let mut dense = ctx.opts.dense;
    for id in &n.content {
        if ctx.progress.cancelled() {
            return Err(Fail::Abort(Error::Interrupted));
        }
        let data = ctx.reader.load_blob(id)?;
        dense |= offset == 0 && is_swap_file(&data);
        write_blocks(f, offset, &data, &mut end, dense).map_err(|e| io("write", e))?;
        offset += data.len() as u64;
        // The summary counts the file once it is in place.
        ctx.progress.bytes_written(data.len() as u64);
    }
    if end != offset {
        // Extends the file over trailing holes.
        f.set_len(offset).map_err(|e| io("truncate", e))?;
    }
    check_size(path, offset, n)
}

/// Fails unless the `len` bytes the content of `n` came to are its size.
fn check_size(path: &Path, len: u64, n: &Node) -> Result<(), Fail> {
    if len == n.size {
        return Ok(());
    }
    Err(Fail::Entry(Error::corrupt(
        format!("file {}", path.display()),
        format!("content is {len} bytes but the snapshot records {}", n.size),
    )))
}

/// Whether `first`, a file's first chunk, begins a Linux swap area: its
/// signature ends the first page (4, 8, 16 or 64 KiB). `swapon` refuses
/// a swap file with holes, so a restored system did not swap.
fn is_swap_file(first: &[u8]) -> bool {
    [4096usize, 8192, 16384, 65536].iter().any(|&page| {
        first
            .get(page - 10..page)
            .is_some_and(|s| s == b"SWAPSPACE2" || s == b"SWAP-SPACE")
    })
}

/// Writes `data` at `offset`: every byte when `dense`, else as
/// [`write_sparse`]. `cursor` as there.
fn write_blocks(
    f: &mut File,
    offset: u64,
    data: &[u8],
    cursor: &mut u64,
    dense: bool,
) -> std::io::Result<()> {
    if !dense {
        return write_sparse(f, offset, data, cursor);
    }
    if offset != *cursor {
        f.seek(SeekFrom::Start(offset))?;
    }
    f.write_all(data)?;
    *cursor = offset + data.len() as u64;
    Ok(())
}

/// Writes `data` at `offset`, skipping aligned all-zero blocks so they stay
/// holes. `cursor` is the file's position (the end of the last write), so a
/// write that follows on needs no seek.
fn write_sparse(f: &mut File, offset: u64, data: &[u8], cursor: &mut u64) -> std::io::Result<()> {
    let mut pos = 0usize;
    while pos < data.len() {
        // Blocks are aligned to file offsets, so holes line up with the filesystem's.
        let abs = offset + pos as u64;
        let block_end = ((abs / HOLE_BLOCK as u64 + 1) * HOLE_BLOCK as u64 - offset) as usize;
        let end = block_end.min(data.len());
        let mut run_end = end;
        let zero = data[pos..end].iter().all(|b| *b == 0) && end - pos == HOLE_BLOCK;
        if !zero {
            // Extend the run of non-hole blocks to write them in one call.
            while run_end < data.len() {
                let next = (run_end + HOLE_BLOCK).min(data.len());
                if next - run_end == HOLE_BLOCK && data[run_end..next].iter().all(|b| *b == 0) {
                    break;
                }
                run_end = next;
            }
            if abs != *cursor {
                f.seek(SeekFrom::Start(abs))?;
            }
            f.write_all(&data[pos..run_end])?;
            *cursor = offset + run_end as u64;
        }
        pos = run_end;
    }
    Ok(())
}

/// How a restored file that reads back wrong is named in its error.
const RESTORED_FILE: &str = "restored file ";

/// Reads the file back and checks every chunk against its blob ID.
fn verify_file(ctx: &Ctx, at: &Path, path: &Path, n: &Node) -> Result<(), Fail> {
    let io = |op, e| Fail::target(Error::io(op, path, e));
    let differs = |reason: &str| {
        Fail::Entry(Error::corrupt(
            format!("{RESTORED_FILE}{}", path.display()),
            reason,
        ))
    };
    let mut f = File::open(at).map_err(|e| io("open", e))?;
    let mut buf = Vec::new();
    for id in &n.content {
        let loc = ctx.reader.index().locate(id)?;
        buf.resize(loc.blob.raw_length as usize, 0);
        f.read_exact(&mut buf)
            .map_err(|_| differs("shorter than the snapshot records"))?;
        if ctx.repo.key().blob_id(&buf) != *id {
            return Err(differs("content differs from the snapshot"));
        }
    }
    let mut extra = [0u8; 1];
    if f.read(&mut extra).map_err(|e| io("read", e))? != 0 {
        return Err(differs("longer than the snapshot records"));
    }
    Ok(())
}
