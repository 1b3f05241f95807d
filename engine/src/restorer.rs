//! Restore: recreate a snapshot's tree (or a part of it) on disk.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use filetime::FileTime;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Timestamp, Tree};

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Path inside the snapshot to restore (`/` or empty for everything).
    pub subpath: Option<String>,
    /// Restore owners by numeric ID only (names are not consulted).
    pub numeric_ids: bool,
}

/// Receives progress from a running restore.
pub trait RestoreProgress: Sync {
    /// Bytes of file content written.
    fn bytes_written(&self, _n: u64) {}
    /// Something could not be restored.
    fn warning(&self, _path: &Path, _message: &str) {}
}

/// A progress sink that ignores everything.
pub struct NoRestoreProgress;
impl RestoreProgress for NoRestoreProgress {}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    /// Files restored.
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Other entries restored.
    pub others: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Entries that could not be restored fully.
    pub errors: u64,
    /// One line per problem.
    pub warnings: Vec<String>,
}

struct Ctx<'a> {
    repo: &'a Repository,
    progress: &'a dyn RestoreProgress,
    files: AtomicU64,
    dirs: AtomicU64,
    others: AtomicU64,
    bytes: AtomicU64,
    warnings: Mutex<Vec<String>>,
    is_root: bool,
}

impl Ctx<'_> {
    fn warn(&self, path: &Path, msg: String) {
        self.progress.warning(path, &msg);
        self.warnings
            .lock()
            .expect("warnings")
            .push(format!("{}: {msg}", path.display()));
    }
}

/// Finds the node at `subpath` in a snapshot; `None` for the root.
pub fn resolve(repo: &Repository, snap: &Snapshot, subpath: &str) -> Result<Option<Node>> {
    let mut tree = repo.load_tree(&snap.tree)?;
    let mut found: Option<Node> = None;
    for comp in subpath.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if let Some(n) = &found {
            let sub = n.subtree.ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{subpath:?}: {} is not a directory in the snapshot",
                    n.display_name()
                ))
            })?;
            tree = repo.load_tree(&sub)?;
        }
        found = Some(tree.find(comp.as_bytes()).cloned().ok_or_else(|| {
            Error::InvalidInput(format!("{subpath:?} not found in the snapshot"))
        })?);
    }
    Ok(found)
}

/// Restores `snap` (or `opts.subpath` of it) into `opts.target`.
pub fn restore(
    repo: &Repository,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn RestoreProgress,
) -> Result<RestoreSummary> {
    let ctx = Ctx {
        repo,
        progress,
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        others: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        warnings: Mutex::new(Vec::new()),
        is_root: unsafe_geteuid_is_root(),
    };
    fs::create_dir_all(&opts.target).map_err(|e| Error::io("create directory", &opts.target, e))?;
    let start = resolve(repo, snap, opts.subpath.as_deref().unwrap_or("/"))?;
    match start {
        None => {
            let tree = repo.load_tree(&snap.tree)?;
            restore_tree(&ctx, &opts.target, &tree)?;
        }
        Some(n) if n.kind == NodeKind::Dir => {
            // The directory's contents go into the target, and its metadata onto it.
            let tree = repo.load_tree(
                &n.subtree
                    .ok_or_else(|| Error::corrupt("tree", "directory without subtree"))?,
            )?;
            restore_tree(&ctx, &opts.target, &tree)?;
            set_metadata(&ctx, &opts.target, &n);
        }
        Some(n) => {
            let p = opts.target.join(OsStr::from_bytes(&n.name));
            restore_node(&ctx, &p, &n)?;
        }
    }
    let warnings = ctx.warnings.into_inner().expect("warnings");
    Ok(RestoreSummary {
        files: ctx.files.into_inner(),
        dirs: ctx.dirs.into_inner(),
        others: ctx.others.into_inner(),
        bytes: ctx.bytes.into_inner(),
        errors: warnings.len() as u64,
        warnings,
    })
}

fn unsafe_geteuid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn restore_tree(ctx: &Ctx, dir: &Path, tree: &Tree) -> Result<()> {
    tree.nodes.par_iter().try_for_each(|n| {
        if n.name.is_empty() || n.name.contains(&b'/') || n.name == b"." || n.name == b".." {
            ctx.warn(
                dir,
                format!(
                    "refusing unsafe name {:?} from the snapshot",
                    n.display_name()
                ),
            );
            return Ok(());
        }
        restore_node(ctx, &dir.join(OsStr::from_bytes(&n.name)), n)
    })
}

fn restore_node(ctx: &Ctx, path: &Path, n: &Node) -> Result<()> {
    match n.kind {
        NodeKind::Dir => {
            match fs::create_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(e) => return Err(Error::io("create directory", path, e)),
            }
            // Writable while its contents are restored; real mode set afterwards.
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            let sub = n.subtree.ok_or_else(|| {
                Error::corrupt(
                    format!("tree node {}", path.display()),
                    "directory without subtree",
                )
            })?;
            let tree = ctx.repo.load_tree(&sub)?;
            restore_tree(ctx, path, &tree)?;
            ctx.dirs.fetch_add(1, Ordering::Relaxed);
        }
        NodeKind::File => {
            restore_file(ctx, path, n)?;
            ctx.files.fetch_add(1, Ordering::Relaxed);
        }
        NodeKind::Symlink => {
            let _ = fs::remove_file(path);
            std::os::unix::fs::symlink(OsStr::from_bytes(&n.link_target), path)
                .map_err(|e| Error::io("create symlink", path, e))?;
            ctx.others.fetch_add(1, Ordering::Relaxed);
        }
        NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
            let _ = fs::remove_file(path);
            let kind = match n.kind {
                NodeKind::Fifo => libc::S_IFIFO,
                NodeKind::Chardev => libc::S_IFCHR,
                _ => libc::S_IFBLK,
            };
            let c = std::ffi::CString::new(path.as_os_str().as_bytes())
                .map_err(|_| Error::InvalidInput("path with NUL".into()))?;
            // SAFETY: c is a valid NUL-terminated path; mknod does not retain it.
            let rc =
                unsafe { libc::mknod(c.as_ptr(), kind | (n.mode & 0o7777), n.rdev as libc::dev_t) };
            if rc != 0 {
                ctx.warn(
                    path,
                    format!(
                        "cannot create {:?}: {}",
                        n.kind,
                        std::io::Error::last_os_error()
                    ),
                );
                return Ok(());
            }
            ctx.others.fetch_add(1, Ordering::Relaxed);
        }
        NodeKind::Socket => return Ok(()),
    }
    set_metadata(ctx, path, n);
    Ok(())
}

fn restore_file(ctx: &Ctx, path: &Path, n: &Node) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut f: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    let mut written = 0u64;
    for id in &n.content {
        let data = ctx.repo.load_blob(id)?;
        f.write_all(&data)
            .map_err(|e| Error::io("write", path, e))?;
        written += data.len() as u64;
        ctx.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        ctx.progress.bytes_written(data.len() as u64);
    }
    if written != n.size {
        ctx.warn(
            path,
            format!(
                "restored {written} bytes but the snapshot records {}",
                n.size
            ),
        );
    }
    Ok(())
}

fn ft(t: Timestamp) -> FileTime {
    FileTime::from_unix_time(t.sec, t.nsec)
}

/// Ownership, mode and times, in that order (chown clears setuid bits;
/// chmod must follow it, and times come last because both touch ctime only).
fn set_metadata(ctx: &Ctx, path: &Path, n: &Node) {
    if ctx.is_root
        && let Err(e) = std::os::unix::fs::lchown(path, Some(n.uid), Some(n.gid))
    {
        ctx.warn(path, format!("cannot set owner: {e}"));
    }
    if n.kind != NodeKind::Symlink
        && let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(n.mode & 0o7777))
    {
        ctx.warn(path, format!("cannot set mode: {e}"));
    }
    if let Err(e) = filetime::set_symlink_file_times(path, ft(n.atime), ft(n.mtime)) {
        ctx.warn(path, format!("cannot set times: {e}"));
    }
}
