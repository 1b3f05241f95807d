//! `mount`: every snapshot as a read-only filesystem (FUSE).
//!
//! The mount shows restic's layout: `snapshots/<time>/`, `ids/<short id>/`,
//! `hosts/<host>/<time>/`, `tags/<tag>/<time>/` and a `latest` symlink,
//! each snapshot directory holding the backed-up paths as they were.
//! Nothing is restored ahead of time: directories are decoded when they are
//! listed and file content is fetched chunk by chunk as it is read.
//!
//! - [`layout`]: the virtual directories, named from the snapshot list
//! - [`inodes`]: inode numbers, handed out lazily per directory
//! - [`content`]: a file's offset table, for reads at any offset
//! - [`cache`]: bounded caches of decrypted blobs and decoded trees
//! - [`fs`]: the answers to the kernel's requests
//!
//! Mounting needs `/dev/fuse`; as root the mount is made directly, other
//! users need `fusermount3` (Debian package `fuse3`). No libfuse is linked.

pub mod cache;
pub mod content;
pub mod fs;
pub mod inodes;
pub mod layout;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lock::LockGuard;
use crate::repository::Repository;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// An existing directory to mount on.
    pub mountpoint: PathBuf,
    /// Upper bound for the cache of decrypted file chunks, in bytes.
    pub cache_bytes: u64,
    /// How often, at most, the snapshot list is re-read (when the top-level
    /// directories are looked at), so new snapshots appear.
    pub refresh: Duration,
    /// Let other users (and root) see the mount; permissions are then
    /// checked by the kernel against the stored modes and owners.
    pub allow_other: bool,
    /// Do not hold a shared lock while mounted. Prune can then delete data
    /// the mount is showing; reads of it fail with EIO.
    pub no_lock: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            mountpoint: PathBuf::new(),
            cache_bytes: 64 << 20,
            refresh: Duration::from_secs(2),
            allow_other: false,
            no_lock: false,
        }
    }
}

/// Receives what happens while mounted.
pub trait MountEvents: Send + Sync {
    /// The filesystem is ready at `mountpoint`, showing `snapshots` snapshots.
    fn mounted(&self, _mountpoint: &Path, _snapshots: usize) {}
    /// A request failed (the reader got EIO); `what` names the object.
    fn error(&self, _what: &str, _err: &Error) {}
}

/// An events sink that ignores everything.
pub struct NoMountEvents;
impl MountEvents for NoMountEvents {}

/// A path as a string, bytes that are not UTF-8 replaced: serde refuses
/// such a path.
fn lossy<S: serde::Serializer>(p: &std::path::Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What a mount did, reported when it ends.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MountSummary {
    /// The mount point (in JSON with bytes that are not UTF-8 replaced).
    #[serde(serialize_with = "lossy")]
    pub mountpoint: PathBuf,
    /// Snapshots shown when it ended.
    pub snapshots: usize,
    /// Files opened.
    pub files_opened: u64,
    /// File content bytes read through the mount.
    pub bytes_read: u64,
    /// Chunks read from the repository (the rest came from the cache).
    pub blobs_loaded: u64,
    /// Whether the unmount had to be lazy because the mount was busy.
    pub lazy_unmount: bool,
}

/// Why a mount point cannot be used, with what to do about it.
fn check_mountpoint(path: &Path) -> Result<()> {
    let leftover = || {
        Error::InvalidInput(format!(
            "mount point {p} is a leftover mount of a process that is gone \
             (\"Transport endpoint is not connected\"); unmount it with \
             `fusermount3 -u {p}` (or `umount {p}` as root) and try again",
            p = path.display()
        ))
    };
    match std::fs::metadata(path) {
        // Its contents would be hidden while mounted (FUSE 2 refused this
        // too): a source tree mounted over looks deleted.
        Ok(m) if m.is_dir() => match std::fs::read_dir(path).map(|mut d| d.next().is_some()) {
            Ok(false) => Ok(()),
            Ok(true) => Err(Error::InvalidInput(format!(
                "mount point {} is not empty: what is in it would be hidden while the \
                 snapshots are mounted; use an empty directory",
                path.display()
            ))),
            // Its root's attributes may still be cached by the kernel
            // (a stat by the process now gone): only the listing fails.
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(leftover()),
            Err(e) => Err(Error::io("list", path, e)),
        },
        Ok(_) => Err(Error::InvalidInput(format!(
            "mount point {} is not a directory",
            path.display()
        ))),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(leftover()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::InvalidInput(format!(
            "mount point {} does not exist; create an empty directory first",
            path.display()
        ))),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Turns a failed mount into an error that says what to install or do.
fn mount_error(path: &Path, e: std::io::Error) -> Error {
    let fuse_closed = || {
        nix::unistd::access(
            "/dev/fuse",
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_err()
    };
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) if !Path::new("/dev/fuse").exists() => {
            " (no /dev/fuse: load the fuse kernel module, or give the container the device)"
        }
        // fusermount3 is there, but the device is not open to this user
        // (mode 0600): the fuse3 hint sent users to install what they had.
        Some(libc::EPERM) | Some(libc::EACCES) if fuse_closed() => {
            " (this user may not open /dev/fuse: it should be mode 0666, as the fuse3 package's \
             udev rule makes it; `chmod 0666 /dev/fuse` as root, or mount as root)"
        }
        Some(libc::ENOENT) | Some(libc::EPERM) | Some(libc::EACCES) => {
            " (mounting as a normal user needs fusermount3: install the Debian package fuse3)"
        }
        _ => "",
    };
    Error::Io {
        op: "mount",
        path: path.to_path_buf(),
        source: std::io::Error::new(e.kind(), format!("{e}{hint}")),
    }
}

/// The mount this process serves, by its path and device, for
/// [`detach_served`].
static SERVED: std::sync::Mutex<Option<(PathBuf, u64)>> = std::sync::Mutex::new(None);

/// The device (`major:minor`) of the topmost mount at `path`, from
/// `/proc/self/mountinfo`; `None` if nothing is mounted there. Not a
/// `stat`: this process's own FUSE server answers that, and a stop waiting
/// on it waited on the store (a listing due), with a second Ctrl-C queued
/// and a `kill -9` then leaving a process nothing could end.
fn device_at(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    text.lines()
        .filter_map(|l| {
            // ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ...
            let mut f = l.split(' ');
            let dev = f.nth(2)?;
            let point = f.nth(1)?;
            (crate::fsmeta::unescape_mount_point(point.as_bytes()) == want).then_some(dev)
        })
        .next_back()
        .and_then(|dev| {
            let (major, minor) = dev.split_once(':')?;
            Some(nix::sys::stat::makedev(
                major.parse().ok()?,
                minor.parse().ok()?,
            ))
        })
}

/// Detaches the mount this process serves, if it is still the one at its
/// path (lazily: at once, gone when the last user leaves). For a command
/// that must exit at once (a second Ctrl-C while unmounting hangs): a
/// FUSE mount left behind by a process gone answers every access with
/// "Transport endpoint is not connected" until someone unmounts it.
pub fn detach_served() {
    let Some((path, dev)) = SERVED.lock().map(|s| s.clone()).unwrap_or(None) else {
        return;
    };
    if device_at(&path) == Some(dev)
        && nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH).is_err()
    {
        let _ = std::process::Command::new("fusermount3")
            .arg("-uz")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Unmounts `path`: a plain unmount, or a lazy one (detached now, gone when
/// the last user leaves) if something still uses the mount. Returns
/// whether it had to be lazy.
fn unmount(path: &Path) -> Result<bool> {
    match nix::mount::umount(path) {
        Ok(()) => return Ok(false),
        Err(nix::errno::Errno::EBUSY) => {
            nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| Error::io("unmount", path, e.into()))?;
            return Ok(true);
        }
        Err(nix::errno::Errno::EPERM) => {}
        Err(e) => return Err(Error::io("unmount", path, e.into())),
    }
    // Not root: the setuid helper does it, lazily if busy.
    let run = |lazy: bool| {
        let mut c = std::process::Command::new("fusermount3");
        c.arg(if lazy { "-uz" } else { "-u" }).arg(path);
        c.stderr(std::process::Stdio::null());
        c.status().map(|s| s.success())
    };
    match run(false) {
        Ok(true) => Ok(false),
        _ => match run(true) {
            Ok(true) => Ok(true),
            Ok(false) => Err(Error::InvalidInput(format!(
                "could not unmount {}: run `fusermount3 -u {}`",
                path.display(),
                path.display()
            ))),
            Err(e) => Err(Error::io("run fusermount3 for", path, e)),
        },
    }
}

/// How often a mount looks whether its lock is still held.
const LOCK_CHECK: Duration = Duration::from_secs(1);

/// The shared lock a mount holds while it serves.
struct Kept {
    /// `None` with `--no-lock`.
    guard: Option<LockGuard>,
    /// Lost, and not taken again yet.
    lost: bool,
    /// When to try taking it again after a failed attempt.
    retry_at: Option<Instant>,
}

impl Kept {
    /// Takes the lock again once it is lost (a laptop asleep past the
    /// stale age, a network down that long): another host may have judged
    /// it stale, and a prune or forget then ran under the mount, which went
    /// on showing what they deleted as if still protected.
    fn keep(&mut self, repo: &Repository, events: &dyn MountEvents) {
        let Some(guard) = &self.guard else {
            return;
        };
        if !self.lost {
            let Err(e) = guard.check_fresh() else {
                return;
            };
            events.error("the repository lock (taking a new one)", &e);
            self.lost = true;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match repo.lock(false) {
            Ok(g) => {
                self.guard = Some(g);
                self.lost = false;
                self.retry_at = None;
                // A prune may have run meanwhile: packs moved or went.
                if let Err(e) = repo.refresh_index() {
                    events.error("the index, after the lock was taken again", &e);
                }
            }
            // Tried again at the next check; a prune holding the
            // exclusive lock ends, a store that fails comes back.
            Err(e) => {
                events.error("the repository lock (trying again in 10 s)", &e);
                self.retry_at = Some(Instant::now() + Duration::from_secs(10));
            }
        }
    }
}

/// Mounts the repository's snapshots at `opts.mountpoint` and serves them
/// until `stop` becomes true (set it from a SIGINT/SIGTERM handler) or the
/// filesystem is unmounted from outside (`fusermount3 -u`). Then unmounts
/// and returns what was done.
pub fn serve(
    repo: Repository,
    opts: &MountOptions,
    events: Arc<dyn MountEvents>,
    stop: &AtomicBool,
) -> Result<MountSummary> {
    check_mountpoint(&opts.mountpoint)?;
    // The kernel records the mount under its canonical path, and
    // `fusermount3 -u` finds it only by that (a link's name failed, in the
    // advice printed too).
    let mountpoint = &std::fs::canonicalize(&opts.mountpoint)
        .map_err(|e| Error::io("resolve", &opts.mountpoint, e))?;
    // Prune takes an exclusive lock, so it cannot delete what is shown.
    let mut lock = Kept {
        guard: if opts.no_lock {
            None
        } else {
            Some(repo.lock(false)?)
        },
        lost: false,
        retry_at: None,
    };
    let repo = Arc::new(repo);
    let fs = fs::CairnFs::new(repo.clone(), opts.cache_bytes, opts.refresh, events.clone())
        .checking_acls(opts.allow_other);
    fs.reload()?;
    let (stats, blobs) = (fs.stats(), fs.blob_cache());

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        // Known by it to backups, which leave such mounts out.
        MountOption::FSName(crate::own_paths::MOUNT_FSNAME.into()),
        MountOption::Subtype(crate::own_paths::MOUNT_FSNAME.into()),
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    // Requests are served in parallel, so one slow chunk does not hold up
    // `ls` in another window; few threads, since every extra one adds
    // wake-up latency to a single reader's stream of small requests.
    config.n_threads = Some(
        std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(2, 4),
    );
    let session =
        fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| mount_error(mountpoint, e))?;
    // Its device tells this mount from one mounted over the same path
    // later (after an outside lazy unmount): that one is not ours to end.
    let ours = device_at(mountpoint);
    if let (Some(dev), Ok(mut served)) = (ours, SERVED.lock()) {
        *served = Some((mountpoint.clone(), dev));
    }
    events.mounted(mountpoint, stats.snapshots.load(Ordering::Relaxed) as usize);

    let mut next_check = Instant::now();
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next_check {
            lock.keep(&repo, &*events);
            next_check = Instant::now() + LOCK_CHECK;
        }
    }
    let mut lazy = false;
    if !session.guard.is_finished() {
        // Detached from outside (`umount -l`) while in use, the path is
        // empty again or holds another mount: the session ends when this
        // process closes its connection, below.
        let still_ours = ours.is_some() && device_at(mountpoint) == ours;
        lazy = !still_ours || unmount(mountpoint)?;
        // After a lazy unmount the session lasts until the last user
        // leaves; do not wait for that forever.
        let deadline = Instant::now() + Duration::from_secs(if lazy { 2 } else { 10 });
        while !session.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Ok(mut served) = SERVED.lock() {
        *served = None;
    }
    if session.guard.is_finished() {
        session
            .join()
            .map_err(|e| Error::io("serve", mountpoint, e))?;
    } else {
        // Still in use after a lazy unmount: exiting closes /dev/fuse, and
        // the remaining users get errors instead of a hang.
        std::mem::forget(session);
    }
    Ok(MountSummary {
        mountpoint: mountpoint.clone(),
        snapshots: stats.snapshots.load(Ordering::Relaxed) as usize,
        files_opened: stats.files_opened.load(Ordering::Relaxed),
        bytes_read: stats.bytes_read.load(Ordering::Relaxed),
        blobs_loaded: blobs.loads(),
        lazy_unmount: lazy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_devices_come_from_mountinfo_with_its_escapes_undone() {
        assert_eq!(
            crate::fsmeta::unescape_mount_point(br"/mnt/a\040b\134c"),
            b"/mnt/a b\\c"
        );
        assert_eq!(crate::fsmeta::unescape_mount_point(br"/x\04"), b"/x\\04");
        // The root is always mounted; a path with no mount of its own is not.
        assert!(device_at(Path::new("/")).is_some());
        assert_eq!(device_at(Path::new("/no/such/mount")), None);
    }
}
