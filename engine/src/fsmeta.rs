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
    let mut n = Node::new(name, kind_of(m));
    n.mode = m.mode() & 0o7777;
    n.uid = m.uid();
    n.gid = m.gid();
    n.size = if n.kind == NodeKind::Dir { 0 } else { m.size() };
    n.mtime = Timestamp {
        sec: m.mtime(),
        nsec: m.mtime_nsec() as u32,
    };
    n.atime = Timestamp {
        sec: m.atime(),
        nsec: m.atime_nsec() as u32,
    };
    n.ctime = Timestamp {
        sec: m.ctime(),
        nsec: m.ctime_nsec() as u32,
    };
    n.inode = m.ino();
    n.device = m.dev();
    n.links = m.nlink();
    if matches!(n.kind, NodeKind::Chardev | NodeKind::Blockdev) {
        n.rdev = m.rdev();
    }
    n
}

/// Whether a file looks unchanged since `old` was recorded (restic's rule:
/// size, mtime, ctime and inode all equal).
pub fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && old.size == new.size
        && old.mtime == new.mtime
        && old.ctime == new.ctime
        && old.inode == new.inode
}

/// Reads the extended attributes of `path` without following symlinks
/// (every namespace the process may read, POSIX ACLs included).
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        // Filesystems without xattr support have none to back up.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        if let Some(value) = xattr::get(path, &name)? {
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
    Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name)
}

/// Opens `path` for reading without updating its access time
/// (`O_NOATIME`): a backup that moved the atimes it records would find
/// every directory changed the next time. The kernel grants `O_NOATIME`
/// only to the file's owner or a process with `CAP_FOWNER`; otherwise
/// (`EPERM`) the file is opened plainly and its atime may move. With
/// `dir`, `path` must be a directory (`O_DIRECTORY`).
pub fn open_noatime(path: &Path, dir: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = if dir { libc::O_DIRECTORY } else { 0 };
    let open = |extra: libc::c_int| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags | extra)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        r => r,
    }
}

/// The entry names of the open directory `dir` (without `.` and `..`), in
/// the order the filesystem returns them. Reading through `dir` itself,
/// rather than opening the path again, keeps its `O_NOATIME` (see
/// [`open_noatime`]). An error on one entry goes to `on_error` and the
/// listing goes on.
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
            Err(e) => on_error(e.into()),
        }
    }
    Ok(names)
}
