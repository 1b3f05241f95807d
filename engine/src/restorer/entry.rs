//! Creating entries and setting their metadata without ever following a
//! symlink that someone put where a restored entry goes.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use filetime::FileTime;

use super::Ctx;
use crate::error::{Error, Result};
use crate::tree::{Node, NodeKind, Timestamp};

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The groups this process is in (supplementary and effective); none for
/// root, who may give any.
pub(super) fn my_groups() -> Vec<u32> {
    if is_root() {
        return Vec::new();
    }
    let mut g: Vec<u32> = nix::unistd::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    g.push(nix::unistd::getegid().as_raw());
    g
}

/// An existing directory's owner and mode before [`make_dir`] took it over.
#[derive(Debug, Clone, Copy)]
pub(super) struct TakenOver {
    /// Its device number, which with the inode number tells it from a
    /// directory put in its place since.
    pub(super) dev: u64,
    /// Its inode number.
    pub(super) ino: u64,
    /// Its birth time (seconds, nanoseconds), where the filesystem keeps
    /// one: an inode number freed and given to a new directory is not the
    /// directory taken over.
    pub(super) born: Option<(i64, u32)>,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
    /// The owner it was left with while the restore runs.
    pub(super) left_uid: u32,
    /// The mode it was left with while the restore runs.
    pub(super) left_mode: u32,
}

/// What [`make_dir`] did.
pub(super) enum Made {
    /// Created the directory.
    Created,
    /// Found it there, and changed what is given (to be given back with
    /// [`give_back`] if the snapshot's metadata is not set on it).
    Existing(Option<TakenOver>),
}

impl Made {
    /// What to give back, if anything.
    pub(super) fn taken(&self) -> Option<TakenOver> {
        match self {
            Made::Created => None,
            Made::Existing(t) => *t,
        }
    }
}

/// Makes `path` a directory the restore can write into safely; an existing
/// one is passed to `record` before it is changed.
pub(super) fn make_dir(
    path: &Path,
    making: &dyn Fn(),
    record: &dyn Fn(&TakenOver),
) -> Result<Made> {
    let existing = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Some(m),
        // Never descend through a symlink or into a file: that could write outside the target.
        Ok(_) => {
            fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
            None
        }
        Err(_) => None,
    };
    let Some(m) = existing else {
        making();
        // Private from the start: one killed before the chmod leaves it so.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::io("create directory", path, e))?;
        // Private and writable while its contents are restored; the real mode comes last.
        chmod_nofollow(path, 0o700).map_err(|e| Error::io("chmod", path, e))?;
        return Ok(Made::Created);
    };
    // Whoever else can change a directory's entries could swap one for a
    // symlink while files are created in it. Until its metadata is set, root
    // takes it over and nobody but the owner may write, unless the sticky bit
    // already keeps others off the entries this restore creates.
    let euid = nix::unistd::geteuid().as_raw();
    let took_over = euid == 0 && m.uid() != 0;
    let old = m.mode() & 0o7777;
    let sticky = old & libc::S_ISVTX != 0;
    let mut mode = if sticky {
        old | 0o700
    } else {
        (old & !0o022) | 0o700
    };
    // The kernel drops setgid from a mode set by a user outside the
    // directory's group: what the take-over leaves, to be known again.
    if euid != 0 && !in_group(m.gid()) {
        mode &= !libc::S_ISGID;
    }
    let before = TakenOver {
        dev: m.dev(),
        ino: m.ino(),
        born: born(&m),
        uid: m.uid(),
        gid: m.gid(),
        mode: old,
        left_uid: if took_over { 0 } else { m.uid() },
        left_mode: mode,
    };
    // Left as it is when already safe: an in-place restore to / must not
    // close /, /tmp or /home to everyone else while it runs. Root's own
    // directories are safe for anyone (and only root could chmod them).
    if !took_over && mode == old && (m.uid() == euid || m.uid() == 0) {
        return Ok(Made::Existing(None));
    }
    record(&before);
    if took_over {
        std::os::unix::fs::lchown(path, Some(0), None).map_err(|e| Error::io("chown", path, e))?;
    }
    // Someone else's directory a non-root restore cannot secure fails here.
    if let Err(e) = chmod_nofollow(path, mode) {
        if took_over {
            let _ = std::os::unix::fs::lchown(path, Some(before.uid), Some(before.gid));
        }
        if e.raw_os_error() == Some(libc::EPERM) && euid != 0 && m.uid() != euid {
            // "chmod: Operation not permitted" said neither why nor what to do.
            return Err(Error::InvalidInput(format!(
                "cannot restore into {}: it is another user's directory, which others may \
                 change (mode {old:04o}), so what is restored into it could be sent elsewhere; \
                 restore into a new directory (--target {}/restored), or as its owner or root",
                path.display(),
                path.display()
            )));
        }
        return Err(Error::io("chmod", path, e));
    }
    Ok(Made::Existing(Some(before)))
}

/// Whether this process is in group `gid` (its own or a supplementary one).
fn in_group(gid: u32) -> bool {
    nix::unistd::getegid().as_raw() == gid
        || nix::unistd::getgroups().is_ok_and(|g| g.iter().any(|x| x.as_raw() == gid))
}

/// Puts back the owner and mode [`make_dir`] changed, for a directory the
/// snapshot's metadata is not set on (the target, one kept only for the
/// entries under it, or any when the restore failed).
pub(super) fn give_back(path: &Path, t: TakenOver) -> std::io::Result<()> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        // Removed since (an empty directory under --include): nothing to give back.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
            return Err(replaced_since());
        }
        r => r?,
    };
    if give_back_open(&f, &t)? {
        return Ok(());
    }
    Err(replaced_since())
}

fn replaced_since() -> std::io::Error {
    std::io::Error::other(
        "another entry stands at its name now (the directory taken over was moved or replaced \
         while the restore ran), or it was changed since: left as it is",
    )
}

/// Gives `t` back to the open directory `f` if it is the directory taken
/// over (device, inode and birth time) and still as the take-over left it;
/// false if not. By descriptor: whoever may rename entries of a directory
/// above could have swapped another (a file of theirs) in at its name, to
/// be given the owner and mode (setgid, say) of the one taken over.
pub(super) fn give_back_open(f: &File, t: &TakenOver) -> std::io::Result<bool> {
    let m = f.metadata()?;
    // The take-over leaves the group as it was: a directory whose group
    // changed since was set by someone else (a restore that kept no record
    // setting the snapshot's owner, say), and stays as they left it.
    if !is_dir_known(&m, (t.dev, t.ino, t.born))
        || m.uid() != t.left_uid
        || m.gid() != t.gid
        || m.mode() & 0o7777 != t.left_mode
    {
        return Ok(false);
    }
    std::os::unix::fs::fchown(f, Some(t.uid), Some(t.gid))?;
    // Mode after owner: a chown may clear set-ID bits.
    f.set_permissions(fs::Permissions::from_mode(t.mode))?;
    Ok(true)
}

/// A directory as the restore knew it: device, inode, and birth time
/// where the filesystem keeps one.
pub(super) type DirId = (u64, u64, Option<(i64, u32)>);

/// Whether `m` is the directory `id`: an inode number freed and given to a
/// new directory since is not (its birth time tells, where kept).
pub(super) fn is_dir_known(m: &fs::Metadata, id: DirId) -> bool {
    let (dev, ino, was_born) = id;
    (m.dev(), m.ino()) == (dev, ino)
        && (was_born.is_none() || born(m).is_none() || born(m) == was_born)
}

/// The birth time of `m`, where the filesystem keeps one.
pub(super) fn born(m: &fs::Metadata) -> Option<(i64, u32)> {
    let d = m
        .created()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((i64::try_from(d.as_secs()).ok()?, d.subsec_nanos()))
}

/// Sets the mode of `path` itself: a symlink put there in the meantime is
/// refused, never followed (chmod would change whatever it points to).
fn chmod_nofollow(path: &Path, mode: u32) -> std::io::Result<()> {
    // Linux 6.6's fchmodat2 does it in one call; glibc's fchmodat goes
    // through /proc in four, which costs an in-place restore time per file.
    static NO_FCHMODAT2: AtomicBool = AtomicBool::new(false);
    if !NO_FCHMODAT2.load(Ordering::Relaxed) {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: `c` is NUL-terminated and outlives the call; the rest are integers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fchmodat2,
                libc::AT_FDCWD,
                c.as_ptr(),
                mode as libc::c_uint,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r == 0 {
            return Ok(());
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EOPNOTSUPP) => return Err(replaced_by_symlink()),
            Some(libc::ENOSYS) => NO_FCHMODAT2.store(true, Ordering::Relaxed),
            // Anything else (a sandbox refusing the call, say) gets the
            // authoritative answer from the older way below.
            _ => {}
        }
    }
    chmod_nofollow_via_proc(path, mode)
}

/// [`chmod_nofollow`] for kernels before 6.6: glibc's emulation through
/// /proc, or a descriptor where /proc is missing.
fn chmod_nofollow_via_proc(path: &Path, mode: u32) -> std::io::Result<()> {
    use nix::sys::stat::{FchmodatFlags, Mode, fchmodat};
    let m = Mode::from_bits_truncate(mode as libc::mode_t);
    match fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        m,
        FchmodatFlags::NoFollowSymlink,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) if !fs::symlink_metadata(path)?.is_symlink() => {
            // glibc needs /proc for this; without it, go through a descriptor
            // that O_NOFOLLOW keeps off symlinks.
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)?;
            f.set_permissions(fs::Permissions::from_mode(mode))
        }
        Err(nix::errno::Errno::EOPNOTSUPP) => Err(replaced_by_symlink()),
        Err(e) => Err(e.into()),
    }
}

fn replaced_by_symlink() -> std::io::Error {
    std::io::Error::other("replaced by a symbolic link during the restore")
}

/// Why a directory with entries was left where an entry that is no
/// directory goes.
pub(super) fn in_the_way(path: &Path) -> Error {
    Error::io(
        "replace",
        path,
        std::io::Error::other(
            "a directory with entries in it stands where the snapshot has no \
             directory; left as it is (move it away and restore again; --delete would \
             replace it, but also deletes everything else in the target that the \
             snapshot does not hold, excluded files too)",
        ),
    )
}

/// Removes what stands at `path` for an entry that is not a directory. A
/// directory with anything in it goes only with `whole_trees` (`--delete`):
/// files the snapshot does not have must not vanish without being asked for.
/// True if such a directory went (counted as deleted, as `--delete` counts
/// one for a whole tree).
pub(super) fn remove_existing(path: &Path, whole_trees: bool) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && whole_trees => match fs::remove_dir(path) {
            Ok(()) => Ok(false),
            // Never into another filesystem mounted below: emptying it is
            // not the restore's to do.
            Err(_) => super::remove_dir_on_one_fs(path, false)
                .map(|()| true)
                .map_err(|e| Error::io("remove", path, e)),
        },
        Ok(m) if m.is_dir() => fs::remove_dir(path).map(|()| false).map_err(|e| {
            if e.kind() == std::io::ErrorKind::DirectoryNotEmpty {
                in_the_way(path)
            } else {
                Error::io("remove", path, e)
            }
        }),
        Ok(_) => fs::remove_file(path)
            .map(|()| false)
            .map_err(|e| Error::io("remove", path, e)),
        Err(_) => Ok(false),
    }
}

pub(super) fn make_special(path: &Path, n: &Node) -> std::io::Result<()> {
    let kind = match n.kind {
        NodeKind::Fifo => libc::S_IFIFO,
        NodeKind::Chardev => libc::S_IFCHR,
        _ => libc::S_IFBLK,
    };
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: c is a valid NUL-terminated path; mknod does not retain it.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | (n.mode & 0o7777), n.rdev as libc::dev_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Opens a file without a name in the directory of `path`, for a new
/// file that shows at `path` only once complete ([`publish`]): a restore
/// killed while writing it leaves nothing there, where a half-written
/// file at its name looked restored to a run again with `--overwrite
/// never`. `None` where the filesystem has no unnamed files, or without
/// /proc (root in a container may lack the capability to name one by its
/// descriptor alone); the file is then written at its name.
pub(super) fn create_unnamed(path: &Path) -> std::io::Result<Option<File>> {
    use rustix::fs::{Mode, OFlags};
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) || !proc_fd_available() {
        return Ok(None);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    match rustix::fs::openat(rustix::fs::CWD, dir, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => Ok(Some(File::from(fd))),
        // Filesystems without O_TMPFILE say so in one of these ways (EISDIR
        // from kernels before it).
        Err(e)
            if [
                rustix::io::Errno::OPNOTSUPP,
                rustix::io::Errno::ISDIR,
                rustix::io::Errno::INVAL,
                rustix::io::Errno::NOSYS,
            ]
            .contains(&e) =>
        {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn proc_fd_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Gives the unnamed file `f` ([`create_unnamed`]) the name `path`; fails
/// if anything is there.
pub(super) fn publish(f: &File, path: &Path) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD, linkat};
    use std::os::fd::AsRawFd;
    // By descriptor as root (it takes CAP_DAC_READ_SEARCH, which a
    // container's root may lack), else through /proc, which is how the
    // kernel lets anyone else name it.
    if is_root() {
        match linkat(f, "", CWD, path, AtFlags::EMPTY_PATH) {
            Err(rustix::io::Errno::NOENT) => {}
            r => return r.map_err(Into::into),
        }
    }
    let proc = format!("/proc/self/fd/{}", f.as_raw_fd());
    linkat(CWD, proc.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW).map_err(Into::into)
}

/// Creates `path` for writing; fails if anything is there.
pub(super) fn create_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

pub(super) fn ft(t: Timestamp) -> FileTime {
    FileTime::from_unix_time(t.sec, t.nsec)
}

/// Ownership, extended attributes, mode and times, in that order: chown
/// clears setuid bits and file capabilities, so both follow it; attributes
/// go on before chmod may make the entry read-only (the kernel then refuses
/// a non-root restore `user.*` ones), and chmod after an ACL leaves the mode
/// as recorded; times come last because everything before moves ctime only.
/// Any failure makes the entry count as an error, except what a non-root
/// restore is not allowed to set and attributes the target cannot hold.
pub(super) fn set_metadata(ctx: &Ctx, path: &Path, n: &Node) {
    set_metadata_on(ctx, On::Path(path), path, n);
}

/// [`set_metadata`] on an open file (one not named yet, see
/// [`create_unnamed`]); messages name `path`.
pub(super) fn set_metadata_of(ctx: &Ctx, f: &File, path: &Path, n: &Node) {
    set_metadata_on(ctx, On::File(f), path, n);
}

/// What metadata is set on: an entry by its name (never through a
/// symlink), or an open file.
#[derive(Clone, Copy)]
enum On<'a> {
    Path(&'a Path),
    File(&'a File),
}

impl On<'_> {
    fn chown(self, uid: u32, gid: u32) -> std::io::Result<()> {
        match self {
            On::Path(p) => std::os::unix::fs::lchown(p, Some(uid), Some(gid)),
            On::File(f) => std::os::unix::fs::fchown(f, Some(uid), Some(gid)),
        }
    }

    fn chmod(self, mode: u32) -> std::io::Result<()> {
        match self {
            On::Path(p) => chmod_nofollow(p, mode),
            On::File(f) => f.set_permissions(fs::Permissions::from_mode(mode)),
        }
    }

    fn set_times(self, atime: FileTime, mtime: FileTime) -> std::io::Result<()> {
        match self {
            On::Path(p) => filetime::set_symlink_file_times(p, atime, mtime),
            On::File(f) => filetime::set_file_handle_times(f, Some(atime), Some(mtime)),
        }
    }

    fn list_xattrs(self) -> std::io::Result<Vec<std::ffi::OsString>> {
        use xattr::FileExt;
        match self {
            On::Path(p) => xattr::list(p).map(Iterator::collect),
            On::File(f) => f.list_xattr().map(Iterator::collect),
        }
    }

    fn remove_xattr(self, name: &OsStr) -> std::io::Result<()> {
        use xattr::FileExt;
        match self {
            On::Path(p) => xattr::remove(p, name),
            On::File(f) => f.remove_xattr(name),
        }
    }

    fn set_xattr(self, name: &OsStr, value: &[u8]) -> std::io::Result<()> {
        use xattr::FileExt;
        match self {
            On::Path(p) => xattr::set(p, name, value),
            On::File(f) => f.set_xattr(name, value),
        }
    }
}

fn set_metadata_on(ctx: &Ctx, on: On, path: &Path, n: &Node) {
    let mut failed = Vec::new();
    // A file root could not give its owner (a uid not mapped in a user
    // namespace, NFS root_squash) stays root's: its set-user-ID and
    // set-group-ID bits and file capability would hand root's power to
    // whoever may run it, so they are not restored.
    let mut owner_lost = false;
    if ctx.is_root {
        let (uid, gid) = restored_owner(ctx, n);
        if let Err(e) = on.chown(uid, gid) {
            owner_lost = true;
            // Root in a user namespace maps few IDs (EINVAL), a squashed
            // root may give none (EPERM): the test's copy stays root's.
            if ctx.opts.scratch && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) {
                ctx.warn(path, format!("cannot set owner: {e}"));
            } else {
                let privileged =
                    n.mode & 0o6000 != 0 || n.xattrs.iter().any(|x| x.name == CAPABILITY);
                failed.push(if privileged && n.kind == NodeKind::File {
                    format!(
                        "cannot set owner: {e} (its set-user-ID/set-group-ID bits and file \
                     capability are not restored)"
                    )
                } else {
                    format!("cannot set owner: {e}")
                });
            }
        }
    } else {
        // The owner stays the user's, but a group of theirs is theirs to
        // give (a shared project directory, its set-group-ID bit); as
        // with `cp -a`, one that cannot be given is said nowhere.
        let (_, gid) = restored_owner(ctx, n);
        if ctx.my_groups.contains(&gid) {
            let _ = on.chown(nix::unistd::geteuid().as_raw(), gid);
        }
    }
    let acl_lost = set_xattrs(ctx, on, path, n, owner_lost, &mut failed);
    let mut mode = n.mode & 0o7777;
    // A directory's set-group-ID bit only passes its group on.
    if owner_lost && n.kind == NodeKind::File {
        mode &= !0o6000;
    }
    // Without its ACL the mode's group bits, the ACL's mask, would grant
    // the owning group what its own entry denied (`group::---` with a
    // named group's `r--`): they become what the group had.
    if acl_lost
        && let Some(x) = n.xattrs.iter().find(|x| x.name == crate::posix_acl::ACCESS)
        && let Some(bits) = crate::posix_acl::owning_group_bits(&x.value)
    {
        mode = (mode & !0o070) | (bits << 3);
    }
    if n.kind != NodeKind::Symlink
        && let Err(e) = on.chmod(mode)
    {
        failed.push(format!("cannot set mode: {e}"));
    }
    if let Err(e) = on.set_times(ft(n.atime), ft(n.mtime)) {
        failed.push(format!("cannot set times: {e}"));
    }
    if !failed.is_empty() {
        ctx.error(path, failed.join("; "));
    }
}

/// The owner and group [`set_metadata`] gives `n` (as root): by name unless
/// `--numeric-ids` or the name is unknown here, else by number.
pub(super) fn restored_owner(ctx: &Ctx, n: &Node) -> (u32, u32) {
    let uid = (!ctx.opts.numeric_ids && !n.user.is_empty())
        .then(|| ctx.owners.uid_of(&n.user))
        .flatten()
        .unwrap_or(n.uid);
    let gid = (!ctx.opts.numeric_ids && !n.group.is_empty())
        .then(|| ctx.owners.gid_of(&n.group))
        .flatten()
        .unwrap_or(n.gid);
    (uid, gid)
}

/// Whether attribute `name`, found on a restored entry but not in the
/// snapshot, is removed: user and trusted attributes, ACLs and a file
/// capability. Security labels (SELinux, Smack, IMA) belong to the system
/// restored on, and other namespaces (btrfs properties) to its filesystem.
fn removable(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name.starts_with(b"trusted.")
        || name == crate::posix_acl::ACCESS
        || name == crate::posix_acl::DEFAULT
        || name == CAPABILITY
}

/// The extended attribute holding a file capability.
const CAPABILITY: &[u8] = b"security.capability";

/// Runs `op` on `path`; if a non-root restore is denied on an entry of its
/// own that is read-only (restored in place), makes it writable for a
/// moment (once: its recorded mode follows at once) and runs `op` again.
fn with_write_access(
    ctx: &Ctx,
    on: On,
    n: &Node,
    opened: &mut bool,
    op: impl Fn() -> std::io::Result<()>,
) -> std::io::Result<()> {
    let res = op();
    let denied = matches!(&res, Err(e) if e.raw_os_error() == Some(libc::EACCES));
    if denied && !*opened && !ctx.is_root && n.kind != NodeKind::Symlink {
        *opened = on.chmod(0o700).is_ok();
        if *opened {
            return op();
        }
    }
    res
}

/// The extended attributes (ACLs among them) of [`set_metadata`]: those
/// the snapshot has are set, others on the entry removed; failures that
/// count are added to `failed`.
/// Returns whether the access ACL could not be set (the target does not
/// hold ACLs).
fn set_xattrs(
    ctx: &Ctx,
    on: On,
    path: &Path,
    n: &Node,
    owner_lost: bool,
    failed: &mut Vec<String>,
) -> bool {
    let mut opened = false;
    let mut acl_lost = false;
    // An entry restored over an existing one must not keep an ACL or an
    // attribute that grants more than the snapshot records, nor one that a
    // default ACL of the target gave a new entry.
    let found = match on.list_xattrs() {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
        Err(e) => {
            failed.push(format!("cannot list extended attributes: {e}"));
            Vec::new()
        }
    };
    for name in found {
        let b = name.as_bytes();
        let kept = n.xattrs.iter().any(|x| x.name == b) && !(owner_lost && b == CAPABILITY);
        if !removable(b) || kept {
            continue;
        }
        let what = String::from_utf8_lossy(b);
        match with_write_access(ctx, on, n, &mut opened, || on.remove_xattr(&name)) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::ENODATA)) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && !ctx.is_root => ctx.warn(
                path,
                format!("extended attribute {what} not removed: only root may remove it"),
            ),
            Err(e) => failed.push(format!("cannot remove extended attribute {what}: {e}")),
        }
    }
    for x in &n.xattrs {
        if owner_lost && x.name == CAPABILITY {
            continue;
        }
        let name = OsStr::from_bytes(&x.name);
        let res = with_write_access(ctx, on, n, &mut opened, || on.set_xattr(name, &x.value));
        let Err(e) = res else { continue };
        let what = String::from_utf8_lossy(&x.name);
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => {
                acl_lost |= x.name == crate::posix_acl::ACCESS;
                if !ctx.no_xattrs.swap(true, Ordering::Relaxed) {
                    ctx.warn(
                        path,
                        format!(
                            "cannot set extended attribute {what}: the target filesystem does \
                             not support it (said once; such attributes are not restored)"
                        ),
                    );
                }
            }
            // Expected, like owners a non-root restore leaves alone:
            // namespaces only root may set (root in a user namespace may
            // not either: a restore test's scratch copy warns then too).
            Some(libc::EPERM)
                if (!ctx.is_root || ctx.opts.scratch)
                    && (x.name.starts_with(b"trusted.") || x.name.starts_with(b"security.")) =>
            {
                ctx.warn(
                    path,
                    format!(
                        "extended attribute {what} not restored: only root (outside a user \
                         namespace) may set it"
                    ),
                );
            }
            _ => failed.push(format!("cannot set extended attribute {what}: {e}")),
        }
    }
    acl_lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();

        for chmod in [chmod_nofollow, chmod_nofollow_via_proc] {
            let err = chmod(&link, 0o4777).unwrap_err();
            assert!(err.to_string().contains("symbolic link"), "{err}");
            let mode = fs::metadata(&outside).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o600, "the file behind the link was changed");
        }
        chmod_nofollow(&outside, 0o640).unwrap();
        assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o640);
        chmod_nofollow_via_proc(&outside, 0o4750).unwrap();
        assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o4750);
    }

    #[test]
    fn an_existing_directory_is_taken_over_while_it_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        if is_root() {
            std::os::unix::fs::lchown(&d, Some(1234), Some(5678)).unwrap();
        }
        let taken = make_dir(&d, &|| {}, &|_| {})
            .unwrap()
            .taken()
            .expect("taken over");
        let m = fs::symlink_metadata(&d).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755, "others could still write to it");
        if is_root() {
            assert_eq!(m.uid(), 0, "its old owner could still write");
        }
        give_back(&d, taken).unwrap();
        let m = fs::symlink_metadata(&d).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o777);
        if is_root() {
            assert_eq!((m.uid(), m.gid()), (1234, 5678));
        }

        // A sticky directory already keeps others off what the restore creates.
        let t = dir.path().join("t");
        fs::create_dir(&t).unwrap();
        fs::set_permissions(&t, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            make_dir(&t, &|| {}, &|_| {}).unwrap().taken().is_none(),
            "changed a safe directory"
        );
        assert_eq!(fs::metadata(&t).unwrap().mode() & 0o7777, 0o1777);

        // A symlink where a directory belongs is replaced, never entered.
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let before = fs::metadata(&elsewhere).unwrap().mode();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(matches!(
            make_dir(&link, &|| {}, &|_| {}).unwrap(),
            Made::Created
        ));
        assert!(fs::symlink_metadata(&link).unwrap().is_dir());
        assert_eq!(fs::metadata(&elsewhere).unwrap().mode(), before);
    }
}
