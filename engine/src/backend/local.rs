//! A repository in a local directory.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Backend, FileKind, Listed};
use crate::error::{Error, IoContext, Result};

/// Stores objects as files under a root directory.
///
/// Writes go to a hidden temporary file in the target directory, which is
/// fsynced, renamed into place, and then the directory is fsynced: a crash
/// leaves either the complete object or a temporary file that listings ignore.
///
/// Files are created readable by their owner only (0600, directories 0700;
/// the umask may take more away): key files are what a password guess
/// starts from. A repository whose `config` its group may read is shared
/// with that group, as restic does it: new files are 0640, directories
/// 0750 (so too a repository made before this rule, under umask 022), and
/// they are given the config's group.
pub struct LocalBackend {
    root: PathBuf,
    access: Access,
}

/// Who may read what a [`LocalBackend`] creates.
#[derive(Debug, Clone, Copy)]
struct Access {
    file_mode: u32,
    dir_mode: u32,
    /// The config's group, for a repository shared with its group: new
    /// files and directories get it, whoever's primary group the writer
    /// has (root's backups made files of group root, which the group's
    /// members could not read).
    group: Option<u32>,
}

impl Access {
    /// Gives the new file or directory `f` the shared group. One the writer
    /// may not give it (not a member) keeps the writer's, as before.
    fn adopt(&self, f: &fs::File) {
        if let Some(g) = self.group {
            let _ = std::os::unix::fs::fchown(f, None, Some(g));
        }
    }

    /// [`Access::adopt`] for the directory `d` just made.
    fn adopt_dir(&self, d: &Path) {
        if let Some(g) = self.group {
            let _ = std::os::unix::fs::chown(d, None, Some(g));
        }
    }
}

impl LocalBackend {
    /// Opens the object at `p` for reading, and its size: a regular file
    /// only. A FIFO in an object's place (`config`, a pack) hung every
    /// command at the open, and a device read on until memory ran out.
    fn open_object(&self, kind: FileKind, name: &str, p: &Path) -> Result<(File, u64)> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(p)
            .map_err(|e| not_found(&self.root, kind, name, p, e))?;
        let m = f.metadata().ctx("stat", p)?;
        if !m.is_file() {
            let object = match kind {
                FileKind::Config => "config".to_string(),
                _ => format!("{} {name}", kind.dir()),
            };
            return Err(Error::corrupt(
                object,
                "not a regular file: a FIFO, device or directory stands in its place",
            ));
        }
        Ok((f, m.len()))
    }

    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        let root = root.into();
        let shared = fs::metadata(root.join("config"))
            .ok()
            .filter(|m| m.permissions().mode() & 0o040 != 0);
        let access = match shared {
            Some(m) => Access {
                file_mode: 0o640,
                dir_mode: 0o750,
                group: Some(m.gid()),
            },
            None => Access {
                file_mode: 0o600,
                dir_mode: 0o700,
                group: None,
            },
        };
        LocalBackend { root, access }
    }

    fn make_dir(&self, d: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(self.access.dir_mode)
            .create(d)
            .ctx("create directory", d)?;
        self.access.adopt_dir(d);
        Ok(())
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            FileKind::Config => self.root.join("config"),
            FileKind::Pack => self
                .root
                .join("data")
                .join(name.get(..2).unwrap_or("00"))
                .join(name),
            k => self.root.join(k.dir()).join(name),
        }
    }

    /// [`LocalBackend::path`] of an object whose name is checked first: a
    /// name from the command line (`cat key ../../etc/passwd`) must not
    /// reach outside the repository.
    fn object_path(&self, kind: FileKind, name: &str) -> Result<PathBuf> {
        if kind != FileKind::Config
            && (name.is_empty() || name.starts_with('.') || name.contains('/'))
        {
            return Err(Error::InvalidInput(format!("invalid object name {name:?}")));
        }
        Ok(self.path(kind, name))
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).ctx("open directory", dir)?;
    match d.sync_all() {
        // Filesystems that cannot sync a directory (SMB/CIFS, vboxsf, some
        // FUSE ones) say so with these: the rename is all they offer, and
        // failing every write there would make them unusable (restic and
        // borg ignore them too).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => Ok(()),
        r => r.ctx("fsync directory", dir),
    }
}

/// The error of a failed read of object `name` at `path`, below `root`.
fn not_found(root: &Path, kind: FileKind, name: &str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() != ErrorKind::NotFound {
        return Error::io("read", path, e);
    }
    match dangling_link(root, path) {
        Some(link) => unreachable_link(&link),
        None => Error::Missing(format!("{} {name}", kind.dir())),
    }
}

/// The link on the way to `path` (itself, or a directory of it below
/// `root`) whose target does not exist. A `data/XX` or a pack moved to
/// another disk and linked reads as gone while that disk is not mounted:
/// taken for missing, `repair packs` dropped its blobs from the snapshots
/// and a prune after the disk came back deleted it.
fn dangling_link(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut p = path;
    while p != root && p.starts_with(root) {
        if fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
            && fs::metadata(p).is_err_and(|e| e.kind() == ErrorKind::NotFound)
        {
            return Some(p.to_path_buf());
        }
        p = p.parent()?;
    }
    None
}

/// The error for `link`, whose target does not exist: the storage failed
/// (a disk not mounted), nothing behind it is known to be gone.
fn unreachable_link(link: &Path) -> Error {
    let to = fs::read_link(link)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "?".into());
    Error::Backend(format!(
        "{} links to {to}, which does not exist (a disk not mounted?): what it holds is not \
         taken for missing",
        link.display()
    ))
}

/// The error for a repository at `root` without the directory of `kind`.
fn no_directory(root: &Path, kind: FileKind) -> Error {
    Error::Backend(format!(
        "{}: the repository has no {}/ directory (damaged, or not a repository)",
        root.display(),
        kind.dir()
    ))
}

/// Whether the repository at `root` has the directories every repository
/// has (`dicts/` and `audit/` are younger than some repositories): a
/// backup into one whose `data/` was lost deduplicated against packs that
/// were gone, and said it had saved a snapshot.
pub(crate) fn ensure_layout(root: &Path) -> Result<()> {
    for kind in [
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Key,
    ] {
        if !root.join(kind.dir()).is_dir() {
            return Err(no_directory(root, kind));
        }
    }
    Ok(())
}

/// What an object is written from.
#[derive(Clone, Copy)]
enum Content<'a> {
    Bytes(&'a [u8]),
    /// The first `len` bytes of a file.
    File(&'a File, u64),
}

impl Content<'_> {
    /// Writes the content to `out`.
    fn write_to(self, out: &mut File) -> std::io::Result<()> {
        match self {
            Content::Bytes(b) => out.write_all(b),
            Content::File(mut f, len) => {
                f.seek(SeekFrom::Start(0))?;
                // A copy inside the kernel (copy_file_range) where it can.
                let copied = std::io::copy(&mut f.take(len), out)?;
                if copied != len {
                    return Err(std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("the spooled pack has {copied} of its {len} bytes"),
                    ));
                }
                Ok(())
            }
        }
    }
}

impl LocalBackend {
    /// Stores an object: a temporary file, fsynced, renamed into place.
    fn write_content(&self, kind: FileKind, name: &str, data: Content<'_>) -> Result<()> {
        let p = self.object_path(kind, name)?;
        let dir = p
            .parent()
            .expect("object paths have a parent")
            .to_path_buf();
        // `dicts/` and `audit/` are missing in repositories made before
        // they existed; an empty `locks/` in one brought back by a tool
        // that copies no empty directory (rclone, `aws s3 sync`).
        if matches!(
            kind,
            FileKind::Pack | FileKind::Dict | FileKind::Audit | FileKind::Lock
        ) && !dir.is_dir()
        {
            // A lost `data/` is not made anew: packs stored into a new one
            // would hide that the old ones are gone.
            if kind == FileKind::Pack && !self.root.join(kind.dir()).is_dir() {
                return Err(no_directory(&self.root, kind));
            }
            // That one directory alone, in a repository still there: a
            // root gone (its disk unmounted while a scheduled backup or a
            // watch ran) was made anew, with every directory above it, on
            // the disk below the mount point (or, for a repository at the
            // mount point itself, inside the empty mount point), and each
            // later run called that stub a damaged repository.
            let gone = || {
                Error::Backend(format!(
                    "the repository's directory {} is gone (its disk unmounted, or the \
                     repository moved?)",
                    self.root.display()
                ))
            };
            if !self.root.join("config").is_file() {
                return Err(gone());
            }
            match fs::DirBuilder::new()
                .mode(self.access.dir_mode)
                .create(&dir)
            {
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(gone()),
                Err(e) if e.kind() != ErrorKind::AlreadyExists => {
                    return Err(e).ctx("create directory", &dir);
                }
                Err(_) => {}
                Ok(()) => self.access.adopt_dir(&dir),
            }
            fsync_dir(dir.parent().expect("data/"))?;
        }
        let tmp = dir.join(format!(".tmp-{}-{}", name, crate::id::Id::random().short()));
        if matches!(kind, FileKind::Config | FileKind::Dict) {
            // Two `init`s at once: exactly one config may land. A check
            // before the rename let both pass, and the second config
            // replaced the first under its user's feet. The same for two
            // backups that drew one dictionary ID: the blobs compressed
            // with the first would be unreadable.
            return write_durably(&tmp, &p, &dir, data, Rename::NoReplace, &self.access).map_err(
                |e| match e {
                    Error::Io { source, .. } if source.kind() == ErrorKind::AlreadyExists => {
                        match kind {
                            FileKind::Config => Error::RepositoryExists(self.location()),
                            _ => Error::InvalidInput(format!(
                                "dictionary dicts/{name} exists already"
                            )),
                        }
                    }
                    e => e,
                },
            );
        }
        write_durably(&tmp, &p, &dir, data, Rename::Replace, &self.access)
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        self.make_dir(&self.root)?;
        for k in FileKind::ALL {
            if k != FileKind::Config {
                let d = self.root.join(k.dir());
                self.make_dir(&d)?;
            }
        }
        for i in 0..=255u8 {
            let d = self.root.join("data").join(format!("{i:02x}"));
            self.make_dir(&d)?;
        }
        // Make every new directory entry durable before anything is written into them.
        fsync_dir(&self.root.join("data"))?;
        fsync_dir(&self.root)?;
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
        Ok(())
    }

    fn stored_size(&self, kind: FileKind, name: &str) -> Result<Option<u64>> {
        let p = self.path(kind, name);
        // Followed, as reads are: a pack moved to another disk and linked.
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => match dangling_link(&self.root, &p) {
                Some(link) => Err(unreachable_link(&link)),
                None => Ok(None),
            },
            Err(e) => Err(Error::io("stat", p, e)),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.join(kind.dir())];
        if kind == FileKind::Config {
            if let Ok(m) = fs::metadata(&dirs[0]) {
                out.push(Listed {
                    name: "config".into(),
                    size: m.len(),
                    modified: m.modified().ok(),
                });
            }
            return Ok(out);
        }
        let top = dirs[0].clone();
        while let Some(dir) = dirs.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                // A repository without `dicts/` or `audit/` predates them.
                // Without one of the others it is damaged: listing it as
                // empty would let prune take every pack for unused.
                Err(e) if e.kind() == ErrorKind::NotFound && dir == top => {
                    // An empty `locks/` holds nothing: see `write_content`.
                    if matches!(kind, FileKind::Dict | FileKind::Audit | FileKind::Lock) {
                        continue;
                    }
                    return Err(no_directory(&self.root, kind));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", dir, e)),
            };
            // Packs live in `data/<first two digits>/` and are read only
            // from there: one moved elsewhere under `data/` is not there.
            let fanout = dir.file_name().filter(|_| dir != top);
            for entry in rd {
                let entry = entry.ctx("list", &dir)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // temporary files of unfinished writes
                }
                // An object deleted between the listing and its stat (a
                // lock refreshed, an index file replaced) is not listed.
                let Some(mut ft) = unless_gone(entry.file_type(), &entry)? else {
                    continue;
                };
                // Links are followed, as reads do (a `data/XX` or a pack
                // moved to another disk and linked): listed as the link,
                // such packs were missing to check and prune. A dangling
                // one fails the listing: what it holds is not known gone.
                if ft.is_symlink() {
                    let Some(m) = unless_gone(fs::metadata(entry.path()), &entry)? else {
                        let fanned = kind == FileKind::Pack
                            && dir == top
                            && name.len() == 2
                            && name.bytes().all(|b| b.is_ascii_hexdigit());
                        if (fanned || kind.is_object_name(&name))
                            && dangling_link(&self.root, &entry.path()).is_some()
                        {
                            return Err(unreachable_link(&entry.path()));
                        }
                        continue;
                    };
                    ft = m.file_type();
                }
                if ft.is_dir() {
                    if kind == FileKind::Pack && dir == top {
                        dirs.push(entry.path());
                    }
                    continue;
                }
                if !kind.is_object_name(&name)
                    || kind == FileKind::Pack
                        && fanout
                            .is_none_or(|f| Some(f.to_string_lossy().as_ref()) != name.get(..2))
                {
                    continue;
                }
                // Through a link too (above).
                let Some(m) = unless_gone(fs::metadata(entry.path()), &entry)? else {
                    continue;
                };
                // A FIFO or device named like an object would hang or
                // flood every read of it (a key file read at each open).
                if !m.is_file() {
                    continue;
                }
                out.push(Listed {
                    name,
                    size: m.len(),
                    modified: m.modified().ok(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let p = self.object_path(kind, name)?;
        let (mut f, size) = self.open_object(kind, name, &p)?;
        // An error, not an abort, for a file too large to hold.
        let mut buf = Vec::new();
        buf.try_reserve_exact(size as usize)
            .map_err(|e| Error::io("read", &p, std::io::Error::new(ErrorKind::OutOfMemory, e)))?;
        f.read_to_end(&mut buf).ctx("read", &p)?;
        Ok(buf)
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let p = self.object_path(kind, name)?;
        let (mut f, _) = self.open_object(kind, name, &p)?;
        f.seek(SeekFrom::Start(offset)).ctx("seek", &p)?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                Error::corrupt(
                    format!("{} {name}", kind.dir()),
                    format!("truncated: cannot read {len} bytes at offset {offset}"),
                )
            } else {
                Error::io("read", &p, e)
            }
        })?;
        Ok(buf)
    }

    fn prefetch(&self, kind: FileKind, name: &str) {
        // Asks the kernel to start reading the file into the page cache, so a
        // cold read overlaps with the caller's work on the previous object.
        if let Ok(f) = File::open(self.path(kind, name)) {
            let _ = nix::fcntl::posix_fadvise(
                &f,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.write_content(kind, name, Content::Bytes(data))
    }

    fn write_file(&self, kind: FileKind, name: &str, file: &File, len: u64) -> Result<()> {
        self.write_content(kind, name, Content::File(file, len))
    }

    fn spool(&self) -> Option<File> {
        // Unnamed (O_TMPFILE): nothing is left behind if the process dies.
        // Beside the packs, so storing one copies within the file system.
        tempfile::tempfile_in(self.root.join(FileKind::Pack.dir())).ok()
    }

    fn replace_config(&self, data: &[u8]) -> Result<()> {
        let p = self.path(FileKind::Config, "config");
        if !p.is_file() {
            return Err(Error::RepositoryNotFound(self.location()));
        }
        let tmp = self
            .root
            .join(format!(".tmp-config-{}", crate::id::Id::random().short()));
        // rename(2) replaces atomically: a crash leaves the old or the new config.
        write_durably(
            &tmp,
            &p,
            &self.root,
            Content::Bytes(data),
            Rename::Replace,
            &self.access,
        )
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn stale_temporaries(&self, age: std::time::Duration, remove: bool) -> Result<usize> {
        let mut found = 0;
        for e in temporaries(&self.root) {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a > age);
            if old && (!remove || fs::remove_file(e.path()).is_ok()) {
                found += 1;
            }
        }
        Ok(found)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let p = self.object_path(kind, name)?;
        match fs::remove_file(&p) {
            Ok(()) => fsync_dir(p.parent().expect("has parent")),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete", p, e)),
        }
    }
}

/// How [`write_durably`] puts a file in place.
#[derive(Clone, Copy)]
enum Rename {
    /// Over whatever is there (content-addressed objects are the same
    /// bytes; the config's replacement is meant).
    Replace,
    /// Only if nothing is there: an `AlreadyExists` error otherwise.
    NoReplace,
}

/// Renames `tmp` to `dest` unless `dest` exists, atomically where the
/// filesystem can (renameat2), else by a hard link, which fails just as
/// atomically; else (a filesystem without links) checked, then renamed.
fn rename_no_replace(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, tmp, CWD, dest, RenameFlags::NOREPLACE) {
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {}
        r => return r.map_err(Into::into),
    }
    let same = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    };
    match fs::hard_link(tmp, dest) {
        // The name in place is what counts; a leftover temporary is tidied
        // by prune.
        Ok(()) => {
            let _ = fs::remove_file(tmp);
            Ok(())
        }
        // NFS may answer a retried link that did succeed with EEXIST.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && same(tmp, dest) => {
            let _ = fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(e),
        // A filesystem without hard links (FAT, exFAT, some SMB and FUSE
        // ones): checked, then renamed. Any other failure (EIO, ENOSPC) is
        // the write's: renaming over a `dest` that appeared meanwhile would
        // replace what another `init` wrote.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS)
            ) =>
        {
            if dest.exists() {
                return Err(ErrorKind::AlreadyExists.into());
            }
            fs::rename(tmp, dest)
        }
        Err(e) => Err(e),
    }
}

/// Writes `data` to the new file `tmp`, fsyncs it, renames it to `dest` as
/// `how` says and fsyncs `dir`; the temporary file is removed on any
/// failure, so a crash or error leaves the old state or the new one.
fn write_durably(
    tmp: &Path,
    dest: &Path,
    dir: &Path,
    data: Content<'_>,
    how: Rename,
    access: &Access,
) -> Result<()> {
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(access.file_mode)
            .open(tmp)
            .ctx("create", tmp)?;
        access.adopt(&f);
        data.write_to(&mut f).ctx("write", tmp)?;
        f.sync_all().ctx("fsync", tmp)?;
        drop(f);
        match how {
            Rename::Replace => fs::rename(tmp, dest),
            Rename::NoReplace => rename_no_replace(tmp, dest),
        }
        .ctx("rename", dest)?;
        fsync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(tmp);
    }
    res
}

/// The files cairn's own interrupted writes left in the repository at
/// `root`, and nothing else: a repository made in a directory that held
/// other files (the root of a USB disk) keeps them, whatever their names,
/// and nothing outside the repository's own directories is looked at.
fn temporaries(root: &Path) -> Vec<fs::DirEntry> {
    let files = |dir: &Path, own: &dyn Fn(&str) -> bool| -> Vec<fs::DirEntry> {
        let Ok(rd) = fs::read_dir(dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| e.file_name().to_str().is_some_and(own))
            .collect()
    };
    let mut out = Vec::new();
    for kind in FileKind::ALL {
        let written = |name: &str| written_temporary(kind, name);
        match kind {
            FileKind::Config => out.extend(files(root, &written)),
            FileKind::Pack => {
                let data = root.join(kind.dir());
                out.extend(files(&data, &is_spool));
                let Ok(rd) = fs::read_dir(&data) else {
                    continue;
                };
                for sub in rd.flatten() {
                    let fan_out = sub
                        .file_name()
                        .to_str()
                        .is_some_and(|n| crate::id::is_lower_hex(n, 2));
                    if fan_out && sub.file_type().is_ok_and(|t| t.is_dir()) {
                        out.extend(files(&sub.path(), &written));
                    }
                }
            }
            _ => out.extend(files(&root.join(kind.dir()), &written)),
        }
    }
    out
}

/// Whether `name` is the temporary name [`LocalBackend::write`] gives an
/// object of `kind` until its rename: `.tmp-<object name>-<8 hex digits>`.
fn written_temporary(kind: FileKind, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(".tmp-") else {
        return false;
    };
    let Some((object, suffix)) = rest.rsplit_once('-') else {
        return false;
    };
    kind.is_object_name(object) && crate::id::is_lower_hex(suffix, 8)
}

/// Whether `name` is a pack spool's in `data/` where the file system has
/// no `O_TMPFILE`: tempfile's `.tmp` and six letters or digits (named, then
/// unlinked at once, so one is left only by a crash in between).
fn is_spool(name: &str) -> bool {
    name.strip_prefix(".tmp")
        .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A listed entry's stat, or `None` if it was deleted since the listing.
fn unless_gone<T>(r: std::io::Result<T>, entry: &fs::DirEntry) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", entry.path(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dictionary_is_never_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        b.write(FileKind::Dict, "0000002a", b"first").unwrap();
        let e = b.write(FileKind::Dict, "0000002a", b"second").unwrap_err();
        assert!(e.to_string().contains("exists already"), "{e}");
        assert_eq!(b.read(FileKind::Dict, "0000002a").unwrap(), b"first");
    }

    #[test]
    fn of_two_configs_written_at_once_exactly_one_lands() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let b = LocalBackend::new(dir.path().join("repo"));
            b.create().unwrap();
            let results: Vec<Result<()>> = std::thread::scope(|s| {
                let writers: Vec<_> = [b"first".as_slice(), b"second"]
                    .into_iter()
                    .map(|data| {
                        let b = &b;
                        s.spawn(move || b.write(FileKind::Config, "config", data))
                    })
                    .collect();
                writers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            let won: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
            assert_eq!(won.len(), 1, "{results:?}");
            let lost = &results[1 - won[0]];
            assert!(matches!(lost, Err(Error::RepositoryExists(_))), "{lost:?}");
            let kept = b.read(FileKind::Config, "config").unwrap();
            assert_eq!(kept, [b"first".as_slice(), b"second"][won[0]]);
            // Neither left a temporary file behind.
            assert_eq!(
                b.stale_temporaries(std::time::Duration::ZERO, false)
                    .unwrap(),
                0
            );
        }
    }

    #[test]
    fn a_spooled_object_is_stored_from_its_file_and_a_short_one_is_not_stored() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        let mut file = b.spool().expect("a local store spools");
        // Read from the start, whatever the file position.
        file.write_all(b"0123456789").unwrap();
        let name = "ab".repeat(32);
        b.write_file(FileKind::Pack, &name, &file, 8).unwrap();
        assert_eq!(b.read(FileKind::Pack, &name).unwrap(), b"01234567");
        // A file shorter than the object: an error, and nothing left behind.
        let other = "cd".repeat(32);
        let e = b.write_file(FileKind::Pack, &other, &file, 11).unwrap_err();
        assert!(e.to_string().contains("has 10 of its 11 bytes"), "{e}");
        assert!(!b.exists(FileKind::Pack, &other).unwrap());
        assert_eq!(
            b.stale_temporaries(std::time::Duration::ZERO, false)
                .unwrap(),
            0
        );
        // The spool itself has no name in the repository.
        let mut listed = Vec::new();
        for e in walkdir::WalkDir::new(dir.path().join("repo")) {
            let e = e.unwrap();
            if e.file_type().is_file() && e.file_name() != "config" {
                listed.push(e.file_name().to_owned());
            }
        }
        assert_eq!(listed, [std::ffi::OsString::from(&name)]);
    }

    #[test]
    fn only_cairns_own_leftovers_are_taken_for_stale_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(root.clone());
        b.create().unwrap();
        let pack = "ab".repeat(32);
        let ours = [
            ".tmp-config-0123abcd".to_string(),
            format!("data/ab/.tmp-{pack}-89abcdef"),
            ".tmpAb3xYz".replace(".tmp", "data/.tmp"),
            format!("snapshots/.tmp-{}-00000000", "cd".repeat(32)),
            ".tmp-0123abcd-ffffffff".replace(".tmp", "dicts/.tmp"),
        ];
        // A repository made where other files were: none of them goes,
        // whatever its name.
        let theirs = [
            ".tmprc".to_string(),
            "docs/.tmp-draft.txt".into(),
            "photos/.tmpimage.jpg".into(),
            "data/ab/.tmp-notes".into(),
            "snapshots/.tmp-draft-0123abcd".into(),
            "data/xy/.tmp-0123abcd-0123abcd".into(),
        ];
        for f in ours.iter().chain(&theirs) {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"x").unwrap();
        }
        let zero = std::time::Duration::ZERO;
        assert_eq!(b.stale_temporaries(zero, false).unwrap(), ours.len());
        assert_eq!(b.stale_temporaries(zero, true).unwrap(), ours.len());
        for f in &ours {
            assert!(!root.join(f).exists(), "{f}");
        }
        for f in &theirs {
            assert!(root.join(f).exists(), "{f}");
        }
    }

    #[test]
    fn no_replace_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, dest) = (dir.path().join("tmp"), dir.path().join("dest"));
        fs::write(&tmp, b"new").unwrap();
        fs::write(&dest, b"old").unwrap();
        let e = rename_no_replace(&tmp, &dest).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        fs::remove_file(&dest).unwrap();
        rename_no_replace(&tmp, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert!(!tmp.exists());
    }

    #[test]
    fn objects_deleted_while_listed_are_left_out_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            // Locks come and go as their holders refresh them.
            s.spawn(|| {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("{i:064x}");
                    b.write(FileKind::Lock, &name, b"lock").unwrap();
                    b.delete(FileKind::Lock, &name).unwrap();
                    i += 1;
                }
            });
            let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while std::time::Instant::now() < until {
                if let Err(e) = b.list(FileKind::Lock) {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    panic!("listing failed: {e}");
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
}
