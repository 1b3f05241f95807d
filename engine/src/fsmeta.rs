//! Reading filesystem metadata into nodes.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use std::path::Path;

use crate::tree::{Node, NodeKind, Timestamp, Xattr};

/// The node kind of a file type.
pub fn kind_of(m: &Metadata) -> NodeKind {
    let ft = m.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::Chardev
    } else if ft.is_block_device() {
        NodeKind::Blockdev
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A node for `name` with the metadata of `m` (content fields left empty).
pub fn node_from_metadata(name: Vec<u8>, m: &Metadata) -> Node {
    Stat::from(m).node(name)
}

/// What a node records of an entry's `lstat`, from std's [`Metadata`] or
/// from [`lstat_at`].
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: Timestamp,
    atime: Timestamp,
    ctime: Timestamp,
    ino: u64,
    dev: u64,
    nlink: u64,
    rdev: u64,
}

impl From<&Metadata> for Stat {
    fn from(m: &Metadata) -> Stat {
        let ts = |sec: i64, nsec: i64| Timestamp {
            sec,
            nsec: nsec as u32,
        };
        Stat {
            kind: kind_of(m),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: ts(m.mtime(), m.mtime_nsec()),
            atime: ts(m.atime(), m.atime_nsec()),
            ctime: ts(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
            rdev: m.rdev(),
        }
    }
}

impl Stat {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }

    /// The size of a regular file; `None` for anything else.
    pub fn file_size(&self) -> Option<u64> {
        (self.kind == NodeKind::File).then_some(self.size)
    }

    /// The device the entry is on.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// Its inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// A node for `name` with this metadata (content fields left empty).
    pub fn node(&self, name: Vec<u8>) -> Node {
        let mut n = Node::new(name, self.kind);
        n.mode = self.mode & 0o7777;
        n.uid = self.uid;
        n.gid = self.gid;
        n.size = if n.kind == NodeKind::Dir {
            0
        } else {
            self.size
        };
        n.mtime = self.mtime;
        n.atime = self.atime;
        n.ctime = self.ctime;
        n.inode = self.ino;
        n.device = self.dev;
        n.links = self.nlink;
        if matches!(n.kind, NodeKind::Chardev | NodeKind::Blockdev) {
            n.rdev = self.rdev;
        }
        n
    }
}

/// What to record for `name` in the open directory `dir` when a stat of
/// it is refused because another filesystem is mounted there that even
/// root may not look at (a FUSE mount of another user without
/// `allow_other`): a statx asking for nothing still gets its device. A
/// directory of that device, owned as `dir` is, private, with `dir`'s
/// times; `None` if it is on `dir`'s own filesystem (the refusal is real).
pub fn refused_mount(dir: &std::fs::File, name: &std::ffi::OsStr) -> Option<Stat> {
    use rustix::fs::{AtFlags, StatxFlags, makedev, statx};
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT | AtFlags::STATX_DONT_SYNC;
    let st = statx(dir, name, flags, StatxFlags::empty()).ok()?;
    let dev = makedev(st.stx_dev_major, st.stx_dev_minor);
    let above = Stat::from(&dir.metadata().ok()?);
    (dev != above.dev).then_some(Stat {
        kind: NodeKind::Dir,
        mode: libc::S_IFDIR | 0o700,
        size: 0,
        ino: 0,
        dev,
        nlink: 1,
        rdev: 0,
        ..above
    })
}

/// `lstat` of `name` inside the open directory `dir` (`fstatat` with
/// `AT_SYMLINK_NOFOLLOW`): no path walk beyond the one name.
pub fn lstat_at(dir: &std::fs::File, name: &std::ffi::OsStr) -> std::io::Result<Stat> {
    use nix::sys::stat::{FileStat, SFlag};
    let st: FileStat =
        nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let kind = match fmt {
        SFlag::S_IFDIR => NodeKind::Dir,
        SFlag::S_IFLNK => NodeKind::Symlink,
        SFlag::S_IFIFO => NodeKind::Fifo,
        SFlag::S_IFCHR => NodeKind::Chardev,
        SFlag::S_IFBLK => NodeKind::Blockdev,
        SFlag::S_IFSOCK => NodeKind::Socket,
        _ => NodeKind::File,
    };
    let ts = |sec: i64, nsec: i64| Timestamp {
        sec,
        nsec: nsec as u32,
    };
    Ok(Stat {
        kind,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        mtime: ts(st.st_mtime, st.st_mtime_nsec),
        atime: ts(st.st_atime, st.st_atime_nsec),
        ctime: ts(st.st_ctime, st.st_ctime_nsec),
        ino: st.st_ino,
        dev: st.st_dev,
        // nlink_t is u32 on aarch64, where this did not build.
        #[allow(clippy::useless_conversion)]
        nlink: u64::from(st.st_nlink),
        rdev: st.st_rdev,
    })
}

/// Whether a file looks unchanged since `old` was recorded (restic's rule:
/// size, mtime, ctime and inode all equal).
pub fn unchanged(old: &Node, new: &Node) -> bool {
    ChangeCheck::default().unchanged(old, new)
}

/// What a backup compares, besides size and mtime, to take a file as it
/// was (restic's `--ignore-inode` and `--ignore-ctime`). Some filesystems
/// give a file a new inode number on every mount (sshfs, some FUSE and
/// network ones, mergerfs), a copy made with `cp -a` or `rsync -a` keeps
/// mtimes but not inodes or ctimes, and `chown -R` moves every ctime:
/// leaving those out keeps such files from being read again, at the cost
/// of missing a change made at the same size with the mtime set back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCheck {
    /// Leave the inode number out, and the ctime with it (restic's
    /// `--ignore-inode` does both: a new inode comes with a new ctime).
    pub ignore_inode: bool,
    /// Leave the ctime out.
    pub ignore_ctime: bool,
}

impl ChangeCheck {
    /// Whether file `new` looks unchanged since `old` was recorded.
    pub fn unchanged(self, old: &Node, new: &Node) -> bool {
        old.kind == NodeKind::File
            && new.kind == NodeKind::File
            && old.size == new.size
            && old.mtime == new.mtime
            && (self.ignore_inode || self.ignore_ctime || old.ctime == new.ctime)
            && (self.ignore_inode || old.inode == new.inode)
    }
}

/// Reads the extended attributes of `path` without following symlinks
/// (every namespace the process may read, POSIX ACLs included).
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    collect_xattrs(xattr::list(path), |name| xattr::get(path, name))
}

/// [`read_xattrs`] of an open file: those of the inode it has open, even if
/// its path now names another.
pub fn read_xattrs_of(f: &std::fs::File) -> std::io::Result<Vec<Xattr>> {
    use xattr::FileExt;
    collect_xattrs(f.list_xattr(), |name| f.get_xattr(name))
}

fn collect_xattrs(
    names: std::io::Result<xattr::XAttrs>,
    get: impl Fn(&std::ffi::OsStr) -> std::io::Result<Option<Vec<u8>>>,
) -> std::io::Result<Vec<Xattr>> {
    let mut out = Vec::new();
    let names = match names {
        Ok(n) => n,
        // Filesystems without xattr support have none to back up.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        if let Some(value) = get(&name)? {
            out.push(Xattr {
                name: std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A short path naming `name` inside the open directory `dir`, whatever the
/// length of the directory's own path: `/proc/self/fd/<fd>/<name>`. Going
/// through the directory's descriptor keeps every path handed to the kernel
/// far below PATH_MAX, so trees of any depth back up and restore.
pub fn at(dir: &std::fs::File, name: &std::ffi::OsStr) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    Path::new(FD_DIR)
        .join(dir.as_raw_fd().to_string())
        .join(name)
}

const FD_DIR: &str = "/proc/self/fd";

/// Whether [`at`] paths work: not without `/proc` (a chroot, a container
/// or rescue system that does not mount it), where every such path is
/// missing and must not be taken for a vanished entry.
pub fn fd_paths_work() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| Path::new(FD_DIR).is_dir())
}

/// Whether `path` was made by [`at`]: valid only while that descriptor is open.
pub fn is_at(path: &Path) -> bool {
    path.starts_with(FD_DIR)
}

/// Opens `path` for reading without updating its access time
/// (`O_NOATIME`): a backup that moved the atimes it records would find
/// every directory changed the next time. The kernel grants `O_NOATIME`
/// only to the file's owner or a process with `CAP_FOWNER`; otherwise
/// (`EPERM`) the file is opened plainly and its atime may move. With
/// `dir`, `path` must be a directory (`O_DIRECTORY`).
///
/// Anything but a directory is opened `O_NONBLOCK`: a FIFO put in a file's
/// place since it was listed would otherwise block the backup until some
/// process writes to it (callers read regular files only, and for those
/// the flag changes nothing).
pub fn open_noatime(path: &Path, dir: bool) -> std::io::Result<std::fs::File> {
    open_path(path, dir, 0)
}

/// [`open_noatime`], refusing a symbolic link in the last component
/// (`ELOOP`): an entry backed up by its path (a source, a path `watch`
/// saw change) that a link replaced since it was stat'ed must not be read
/// through the link, which may name a file its owner could not read.
pub fn open_noatime_nofollow(path: &Path, dir: bool) -> std::io::Result<std::fs::File> {
    open_path(path, dir, libc::O_NOFOLLOW)
}

/// Opens the regular file at `path` to read its first bytes (a marker's
/// signature, a database's header) without moving its access time. A
/// symbolic link is not followed and nothing but a regular file is opened:
/// anyone who may write in a backed-up tree could otherwise have root's
/// backup open any file or device (opening a watchdog arms it, a FIFO's
/// writer wakes).
pub fn open_regular_noatime(path: &Path) -> std::io::Result<std::fs::File> {
    let not_regular =
        || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
    if !std::fs::symlink_metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let f = open_noatime_nofollow(path, false)?;
    // Put in its place since the look above.
    if !f.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(f)
}

fn open_path(path: &Path, dir: bool, more: libc::c_int) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = more
        | if dir {
            libc::O_DIRECTORY
        } else {
            libc::O_NONBLOCK
        };
    noatime_or_plain(|extra| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags | extra)
            .open(path)
    })
}

/// [`open_noatime`] for `name` inside the open directory `dir` (`openat`):
/// no walk through `/proc/self/fd` (see [`at`]), and a symbolic link put
/// in the entry's place since it was stat'ed is refused (`O_NOFOLLOW`),
/// not followed.
pub fn open_noatime_at(
    dir: &std::fs::File,
    name: &std::ffi::OsStr,
    is_dir: bool,
) -> std::io::Result<std::fs::File> {
    use nix::fcntl::OFlag;
    let mut flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    flags |= if is_dir {
        OFlag::O_DIRECTORY
    } else {
        OFlag::O_NONBLOCK
    };
    noatime_or_plain(|extra| {
        let flags = flags | OFlag::from_bits_retain(extra);
        let fd = nix::fcntl::openat(dir, name, flags, nix::sys::stat::Mode::empty())?;
        Ok(std::fs::File::from(fd))
    })
}

/// Runs `open` with `O_NOATIME`, and again without it if that is refused.
fn noatime_or_plain(
    open: impl Fn(libc::c_int) -> std::io::Result<std::fs::File>,
) -> std::io::Result<std::fs::File> {
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        r => r,
    }
}

/// The entry names of the open directory `dir` (without `.` and `..`), in
/// the order the filesystem returns them. Reading through `dir` itself,
/// rather than opening the path again, keeps its `O_NOATIME` (see
/// [`open_noatime`]). An error goes to `on_error` and ends the listing
/// with the names read so far.
pub fn dir_names(
    dir: &std::fs::File,
    mut on_error: impl FnMut(std::io::Error),
) -> std::io::Result<Vec<Vec<u8>>> {
    // The duplicate shares the open file description (and its flags).
    let mut d = nix::dir::Dir::from_fd(dir.try_clone()?.into())?;
    let mut names = Vec::new();
    for e in d.iter() {
        match e {
            Ok(e) => {
                let n = e.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            // Ends the listing: readdir asks the kernel again at the next
            // call, and a directory block that keeps failing (a checksum
            // error, a network mount gone) failed for ever, each failure
            // one more warning in memory.
            Err(e) => {
                on_error(e.into());
                break;
            }
        }
    }
    Ok(names)
}

/// The device and mount point of each FUSE file system mounted with the
/// name `fsname` (`cairn mount`'s is `cairn`), from `/proc/self/mountinfo`:
/// read there, not by a `stat` of each mount, which a mount whose server
/// hangs would never answer, and another user's refuses even root. Empty
/// without `/proc`.
pub fn fuse_mounts(fsname: &str) -> Vec<(u64, std::path::PathBuf)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| fuse_mounts_in(&t, fsname))
        .unwrap_or_default()
}

fn fuse_mounts_in(table: &str, fsname: &str) -> Vec<(u64, std::path::PathBuf)> {
    use std::os::unix::ffi::OsStringExt;
    table
        .lines()
        .filter_map(|l| {
            // ID PARENT MAJOR:MINOR ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE ...
            let (head, tail) = l.split_once(" - ")?;
            let mut t = tail.split(' ');
            let (fstype, source) = (t.next()?, t.next()?);
            // Mounted by root the type is `fuse`; through fusermount3,
            // `fuse.` and the subtype.
            let fuse = fstype == "fuse" || fstype.strip_prefix("fuse.") == Some(fsname);
            if !fuse || source != fsname {
                return None;
            }
            let mut h = head.split(' ');
            let (major, minor) = h.nth(2)?.split_once(':')?;
            let point = unescape_mount_point(h.nth(1)?.as_bytes());
            Some((
                nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?),
                std::path::PathBuf::from(std::ffi::OsString::from_vec(point)),
            ))
        })
        .collect()
}

/// A mount point of `/proc/self/mountinfo` with the kernel's octal
/// escapes (`\040` for a space) undone.
pub(crate) fn unescape_mount_point(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// Whether `f` lies on a kernel pseudo file system (proc, sysfs, debugfs,
/// configfs, securityfs, tracefs, cgroup, efivarfs, pstore, bpf), whose
/// files report a size that is not what a read gives.
pub fn on_pseudo_fs(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    const PSEUDO: [i64; 11] = [
        0x9fa0,     // proc
        0x62656572, // sysfs
        0x64626720, // debugfs
        0x62656570, // configfs
        0x73636673, // securityfs
        0x74726163, // tracefs
        0x63677270, // cgroup2
        0x27e0eb,   // cgroup
        0xde5e81e4, // efivarfs
        0x6165676c, // pstore
        0xcafe4a11, // bpf
    ];
    // SAFETY: statfs is plain data; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a statfs buffer of the right type.
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    PSEUDO.contains(&(st.f_type as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cairn_mounts_are_found_by_name_as_root_or_through_fusermount() {
        let table = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
45 22 0:40 / /tmp/a ro,nosuid,nodev,relatime - fuse cairn ro,user_id=0,group_id=0
46 22 0:41 / /home/u/m ro,nosuid,nodev shared:7 - fuse.cairn cairn ro,user_id=1000
47 22 0:42 / /mnt/s ro - fuse.sshfs host:/ ro
48 22 0:43 / /mnt/o ro - fuse other ro";
        assert_eq!(
            fuse_mounts_in(table, "cairn"),
            [
                (nix::sys::stat::makedev(0, 40), "/tmp/a".into()),
                (nix::sys::stat::makedev(0, 41), "/home/u/m".into())
            ]
        );
    }

    #[test]
    fn only_kernel_pseudo_files_are_taken_for_pseudo_files() {
        // A short read of a real file is a rewrite under way, stored torn
        // unless flagged; only a pseudo file holds less than its size.
        let sys = std::fs::File::open("/sys/devices/system/cpu/possible").unwrap();
        assert!(on_pseudo_fs(&sys));
        let proc = std::fs::File::open("/proc/self/status").unwrap();
        assert!(on_pseudo_fs(&proc));
        let real = tempfile::tempfile().unwrap();
        assert!(!on_pseudo_fs(&real));
    }
    use std::ffi::OsStr;
    use std::io::Read;

    #[test]
    fn open_at_reads_entries_and_refuses_links_in_their_place() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("file"), b"content").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("file", d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("sub", d.path().join("dirlink")).unwrap();
        let dir = open_noatime(d.path(), true).unwrap();
        let mut s = String::new();
        open_noatime_at(&dir, OsStr::new("file"), false)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "content");
        let sub = open_noatime_at(&dir, OsStr::new("sub"), true).unwrap();
        assert!(sub.metadata().unwrap().is_dir());
        // A link is refused, not followed (with O_DIRECTORY the kernel
        // reports it as not a directory).
        for (name, is_dir, errno) in [
            ("link", false, libc::ELOOP),
            ("dirlink", true, libc::ENOTDIR),
        ] {
            let e = open_noatime_at(&dir, OsStr::new(name), is_dir).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(errno), "{name}: {e}");
        }
        let e = open_noatime_at(&dir, OsStr::new("file"), true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        let e = open_noatime_at(&dir, OsStr::new("missing"), false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);

        // By path: a link in the last component is refused too (a source
        // swapped for a link to a secret was read through it), and
        // followed only where asked.
        let p = |n: &str| d.path().join(n);
        let e = open_noatime_nofollow(&p("link"), false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        let e = open_noatime_nofollow(&p("dirlink"), true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR), "{e}");
        assert!(open_noatime_nofollow(&p("file"), false).is_ok());
        assert!(open_noatime_nofollow(&p("sub"), true).is_ok());
        assert!(open_noatime(&p("link"), false).is_ok());
    }
}
