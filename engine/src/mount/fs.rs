//! The FUSE side: answers the kernel's requests from the layout, the
//! inode table, the tree cache and the blob cache.
//!
//! Everything is read-only: requests that would change anything get EROFS
//! (the mount is also read-only, so the kernel usually answers first).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, WriteFlags,
};

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::lineage::logical_snapshots;
use crate::mount::MountEvents;
use crate::mount::cache::{BlobCache, CachedTree, TreeCache};
use crate::mount::content::FileContent;
use crate::mount::inodes::{self, Block, Inode, InodeTable};
use crate::mount::layout::{Child, Layout, VDir};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};

/// How long the kernel may trust what it learned about snapshot contents
/// (they never change).
const CONTENT_TTL: Duration = Duration::from_secs(3600);
/// ... and about the virtual directories, which change as snapshots come and go.
const VIRTUAL_TTL: Duration = Duration::from_secs(1);
/// Preferred I/O size reported to programs (`st_blksize`).
const BLKSIZE: u32 = 128 << 10;
/// Chunks loaded ahead of a sequential reader, decrypting on other cores
/// while the reader copies (1 GiB sequential read: 0 ahead 1.5 s, 2 ahead
/// 1.2 s, 4 ahead 1.1 s, 8 no better; see docs/mount.md).
const READ_AHEAD_CHUNKS: usize = 4;
/// How far a read may be from where the previous one ended and still
/// count as sequential (the kernel issues readahead out of order).
const SEQUENTIAL_SLACK: u64 = 4 << 20;

type FsResult<T> = std::result::Result<T, Errno>;

/// Counters for the summary printed at unmount.
#[derive(Debug, Default)]
pub struct Stats {
    /// File content bytes returned to readers.
    pub bytes_read: AtomicU64,
    /// Files opened.
    pub files_opened: AtomicU64,
    /// Snapshots shown.
    pub snapshots: AtomicU64,
}

struct OpenFile {
    content: FileContent,
    /// Where the previous read ended, to recognise sequential reading.
    last_end: AtomicU64,
}

/// Snapshot records read so far, so a refresh loads only new ones.
struct Source {
    last: Option<Instant>,
    known: HashMap<Id, Snapshot>,
    /// Records that failed to load, reported once.
    bad: HashSet<Id>,
}

/// The filesystem served by `cairn mount`.
pub struct CairnFs {
    repo: Arc<Repository>,
    blobs: Arc<BlobCache>,
    trees: TreeCache,
    table: RwLock<InodeTable>,
    layout: RwLock<Arc<Layout>>,
    source: Mutex<Source>,
    refresh_every: Duration,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    events: Arc<dyn MountEvents>,
    owner: (u32, u32),
    started: SystemTime,
    stats: Arc<Stats>,
    /// The kernel can do without opendir (Linux 5.1 and later).
    no_opendir: bool,
    /// Whether the kernel checks stored POSIX ACLs (see [`CairnFs::checking_acls`]).
    acls: bool,
}

fn system_time(sec: i64, nsec: u32) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec.into())
    }
}

/// A `st_rdev` as glibc encodes it, in the kernel's 32-bit encoding that
/// FUSE carries (`new_encode_dev`).
fn fuse_rdev(rdev: u64) -> u32 {
    let (major, minor) = (
        libc::major(rdev as libc::dev_t),
        libc::minor(rdev as libc::dev_t),
    );
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Chardev => FileType::CharDevice,
        NodeKind::Blockdev => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

fn node_attr(ino: u64, n: &Node) -> FileAttr {
    let size = match n.kind {
        NodeKind::Symlink => n.link_target.len() as u64,
        NodeKind::Dir => 0,
        _ => n.size,
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: system_time(n.atime.sec, n.atime.nsec),
        mtime: system_time(n.mtime.sec, n.mtime.nsec),
        ctime: system_time(n.ctime.sec, n.ctime.nsec),
        crtime: system_time(n.mtime.sec, n.mtime.nsec),
        kind: file_type(n.kind),
        perm: (n.mode & 0o7777) as u16,
        nlink: u32::try_from(n.links).unwrap_or(u32::MAX).max(1),
        uid: n.uid,
        gid: n.gid,
        rdev: if matches!(n.kind, NodeKind::Chardev | NodeKind::Blockdev) {
            fuse_rdev(n.rdev)
        } else {
            0
        },
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// The xattr list format: names, each followed by NUL.
fn xattr_names(n: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    for x in &n.xattrs {
        out.extend_from_slice(&x.name);
        out.push(0);
    }
    out
}

/// Replies to getxattr/listxattr: the size when asked for it, else the
/// value if it fits.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// A directory's entries as the kernel wants them.
struct DirEntry<'a> {
    ino: u64,
    name: &'a [u8],
    attr: FileAttr,
    ttl: Duration,
}

impl CairnFs {
    /// A filesystem over `repo` with a blob cache of `cache_bytes`,
    /// re-reading the snapshot list at most every `refresh_every`.
    pub fn new(
        repo: Arc<Repository>,
        cache_bytes: u64,
        refresh_every: Duration,
        events: Arc<dyn MountEvents>,
    ) -> CairnFs {
        CairnFs {
            repo,
            blobs: Arc::new(BlobCache::new(cache_bytes)),
            // Trees are small next to data; a quarter of the budget holds
            // the metadata of a few hundred thousand files.
            trees: TreeCache::new((cache_bytes / 4).max(16 << 20)),
            table: RwLock::new(InodeTable::default()),
            layout: RwLock::new(Arc::new(Layout::default())),
            source: Mutex::new(Source {
                last: None,
                known: HashMap::new(),
                bad: HashSet::new(),
            }),
            refresh_every,
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            events,
            owner: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            started: SystemTime::now(),
            stats: Arc::new(Stats::default()),
            no_opendir: false,
            acls: false,
        }
    }

    /// Has the kernel check the stored POSIX ACLs besides the modes, for a
    /// mount others may use (`default_permissions`). Only then: accepting
    /// ACLs turns the kernel's checks on for every mount, and the mounting
    /// user could then no longer read files of another owner (their own,
    /// under an old uid) in their snapshots.
    pub fn checking_acls(mut self, on: bool) -> CairnFs {
        self.acls = on;
        self
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The cache of decrypted chunks (it counts what it loaded).
    pub fn blob_cache(&self) -> Arc<BlobCache> {
        self.blobs.clone()
    }

    fn layout(&self) -> Arc<Layout> {
        self.layout.read().expect("layout").clone()
    }

    /// Re-reads the snapshot list now; new snapshots become visible once
    /// the index knows their blobs.
    pub fn reload(&self) -> Result<()> {
        let mut src = self.source.lock().expect("snapshot source");
        let r = self.reload_locked(&mut src);
        src.last = Some(Instant::now());
        r
    }

    fn reload_locked(&self, src: &mut Source) -> Result<()> {
        let listed: HashSet<Id> = self
            .repo
            .backend()
            .list(FileKind::Snapshot)?
            .into_iter()
            .filter_map(|l| Id::from_hex(&l.name).ok())
            .collect();
        // `src` is changed only once nothing can fail: a change left
        // half-made would not be seen as one by the next refresh.
        let gone = src.known.keys().any(|id| !listed.contains(id));
        let mut added = Vec::new();
        for &id in &listed {
            if src.known.contains_key(&id) || src.bad.contains(&id) {
                continue;
            }
            match self.repo.load_snapshot(&id) {
                Ok(s) => added.push((id, s)),
                Err(Error::Missing(_)) => {} // deleted since the listing
                // Damaged: left out for the life of the mount (told once).
                Err(e @ Error::Corrupt { .. }) => {
                    self.events.error(&format!("snapshot {id}"), &e);
                    src.bad.insert(id);
                }
                // Not answered (a timeout, a 5xx): asked again next time.
                Err(e) => self.events.error(&format!("snapshot {id}"), &e),
            }
        }
        if !added.is_empty() {
            // A snapshot is written after the index files that cover it.
            // Known only once they are in: a sync that fails leaves them
            // new to the next refresh, which shows them (else they stayed
            // hidden until another snapshot came or went).
            self.repo.refresh_index()?;
        }
        let changed = gone || !added.is_empty() || src.last.is_none();
        src.known.retain(|id, _| listed.contains(id));
        src.known.extend(added);
        if changed {
            let records = src.known.iter().map(|(i, s)| (*i, s.clone())).collect();
            let mut layout = Layout::build(&logical_snapshots(records));
            if src.last.is_some() {
                // Later than the directories' last time, whatever the
                // clock or the snapshots' times (one dated a little ahead
                // would otherwise keep it where it was).
                let before = self.layout_time(&self.layout()) + Duration::from_micros(1);
                layout.rebuilt = Some(before.max(SystemTime::now()));
            }
            self.stats
                .snapshots
                .store(layout.snaps.len() as u64, Ordering::Relaxed);
            *self.layout.write().expect("layout") = Arc::new(layout);
        }
        Ok(())
    }

    /// Re-reads the snapshot list if it is older than the refresh interval
    /// and nobody else is re-reading it.
    fn refresh_if_due(&self) {
        let Ok(mut src) = self.source.try_lock() else {
            return;
        };
        if src.last.is_some_and(|t| t.elapsed() < self.refresh_every) {
            return;
        }
        if let Err(e) = self.reload_locked(&mut src) {
            self.events.error("re-reading the snapshot list", &e);
        }
        src.last = Some(Instant::now());
    }

    fn fail(&self, what: &str, e: Error) -> Errno {
        self.events.error(what, &e);
        Errno::EIO
    }

    fn inode(&self, ino: u64) -> FsResult<Inode> {
        self.table
            .read()
            .expect("inode table")
            .get(ino)
            .ok_or(Errno::ENOENT)
    }

    fn tree(&self, id: &Id) -> FsResult<Arc<CachedTree>> {
        self.trees
            .get(&self.repo, id)
            .map_err(|e| self.fail(&format!("tree {id}"), e))
    }

    /// The tree holding entry inode `(dir, index)`.
    fn entry_tree(&self, dir: u64, index: u32) -> FsResult<(Arc<CachedTree>, usize)> {
        let block = self
            .table
            .read()
            .expect("inode table")
            .block(dir)
            .ok_or(Errno::ENOENT)?;
        let t = self.tree(&block.tree)?;
        if index as usize >= t.tree.nodes.len() {
            return Err(Errno::ENOENT);
        }
        Ok((t, index as usize))
    }

    /// The tree of directory inode `ino` (a snapshot or a directory in one)
    /// and the inode numbers of its entries.
    fn children(&self, ino: u64, what: &Inode) -> FsResult<(Block, Arc<CachedTree>)> {
        // Out of the table before the tree is loaded: in an `if let`, the
        // read guard lived through the load, and a slow store held every
        // request that needs the table (lookups, listings) behind it.
        let known = self.table.read().expect("inode table").block(ino);
        if let Some(b) = known {
            return Ok((b, self.tree(&b.tree)?));
        }
        let (tree_id, root) = match what {
            Inode::Snapshot { tree, .. } => (*tree, ino),
            Inode::Entry { dir, index } => {
                let (t, i) = self.entry_tree(*dir, *index)?;
                let n = &t.tree.nodes[i];
                if n.kind != NodeKind::Dir {
                    return Err(Errno::ENOTDIR);
                }
                let sub = n.subtree.ok_or_else(|| {
                    self.fail(
                        &n.display_name(),
                        Error::corrupt("tree", "directory without a tree"),
                    )
                })?;
                let root = self
                    .table
                    .read()
                    .expect("inode table")
                    .block(*dir)
                    .ok_or(Errno::ENOENT)?
                    .root;
                (sub, root)
            }
            _ => return Err(Errno::ENOTDIR),
        };
        let tree = self.tree(&tree_id)?;
        let block = self.table.write().expect("inode table").block_or_alloc(
            ino,
            tree_id,
            root,
            tree.tree.nodes.len(),
        );
        Ok((block, tree))
    }

    /// The inode number of entry `index` of a directory: its place in the
    /// block, or the number of its hard link group.
    fn entry_ino(&self, b: &Block, index: usize, n: &Node) -> u64 {
        let ino = b.base + index as u64;
        if n.kind == NodeKind::Dir || n.links < 2 {
            return ino;
        }
        self.table
            .write()
            .expect("inode table")
            .hard_link(b.root, n.link_group(), ino)
    }

    fn dir_attr(&self, ino: u64, time: SystemTime) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    /// When the virtual directories last changed: the newest snapshot, or
    /// the mount's last rebuild of their listings if later (a snapshot
    /// forgotten, or copied in with an older time, changes them too).
    fn layout_time(&self, l: &Layout) -> SystemTime {
        let newest = l
            .latest()
            .map(|s| system_time(s.time.timestamp(), s.time.timestamp_subsec_nanos()))
            .unwrap_or(self.started);
        l.rebuilt.map_or(newest, |r| r.max(newest))
    }

    fn latest_target(l: &Layout) -> Option<String> {
        l.latest().map(|s| format!("snapshots/{}", s.name))
    }

    /// The attributes of `ino` and how long the kernel may keep them.
    fn attr(&self, ino: u64, what: &Inode) -> FsResult<(FileAttr, Duration)> {
        // A listing kept by the kernel is asked for again only when its
        // directory's time changes, and a shell working inside one asks
        // for nothing else: the list is read again here too, or `ls` there
        // showed the old one for the life of the mount.
        if matches!(what, Inode::Root | Inode::Virtual(_) | Inode::Latest) {
            self.refresh_if_due();
        }
        Ok(match what {
            Inode::Root | Inode::Virtual(_) => (
                self.dir_attr(ino, self.layout_time(&self.layout())),
                VIRTUAL_TTL,
            ),
            Inode::Latest => {
                let l = self.layout();
                let target = Self::latest_target(&l).ok_or(Errno::ENOENT)?;
                let mut a = self.dir_attr(ino, self.layout_time(&l));
                a.kind = FileType::Symlink;
                a.perm = 0o777;
                a.nlink = 1;
                a.size = target.len() as u64;
                (a, VIRTUAL_TTL)
            }
            Inode::Snapshot { time, .. } => {
                (self.dir_attr(ino, system_time(time.0, time.1)), CONTENT_TTL)
            }
            Inode::Entry { dir, index } => {
                let (t, i) = self.entry_tree(*dir, *index)?;
                (node_attr(ino, &t.tree.nodes[i]), CONTENT_TTL)
            }
        })
    }

    /// The parent of directory `ino` (for `..`).
    fn parent(&self, what: &Inode) -> u64 {
        match what {
            Inode::Virtual(VDir::Host(_)) => self
                .table
                .write()
                .expect("inode table")
                .virtual_dir(&VDir::Hosts),
            Inode::Virtual(VDir::Tag(_)) => self
                .table
                .write()
                .expect("inode table")
                .virtual_dir(&VDir::Tags),
            Inode::Snapshot { parent, .. } => *parent,
            Inode::Entry { dir, .. } => *dir,
            _ => inodes::ROOT,
        }
    }

    /// The inode of a name in a virtual directory.
    fn virtual_child(&self, dir_ino: u64, l: &Layout, child: &Child) -> u64 {
        let mut t = self.table.write().expect("inode table");
        match child {
            Child::Snapshot(i) => {
                let s = &l.snaps[*i];
                t.snapshot(
                    dir_ino,
                    s.id,
                    s.tree,
                    (s.time.timestamp(), s.time.timestamp_subsec_nanos()),
                )
            }
            Child::Dir(d) => t.virtual_dir(d),
        }
    }

    fn root_entries(&self, l: &Layout) -> Vec<(&'static str, u64)> {
        let mut t = self.table.write().expect("inode table");
        let mut v = vec![
            ("snapshots", t.virtual_dir(&VDir::Snapshots)),
            ("ids", t.virtual_dir(&VDir::Ids)),
            ("hosts", t.virtual_dir(&VDir::Hosts)),
            ("tags", t.virtual_dir(&VDir::Tags)),
        ];
        if l.latest().is_some() {
            v.push(("latest", inodes::LATEST));
        }
        v
    }

    /// The attributes of `name` in directory `parent`, how long they hold,
    /// and how long the name holds: a name in a listing of snapshots may
    /// go (a snapshot forgotten) or change what it names; one inside a
    /// snapshot never does.
    fn lookup_in(&self, parent: u64, name: &OsStr) -> FsResult<(FileAttr, Duration, Duration)> {
        let what = self.inode(parent)?;
        let ino = match &what {
            Inode::Root => {
                self.refresh_if_due();
                let l = self.layout();
                self.root_entries(&l)
                    .into_iter()
                    .find(|(n, _)| n.as_bytes() == name.as_bytes())
                    .ok_or(Errno::ENOENT)?
                    .1
            }
            Inode::Virtual(d) => {
                self.refresh_if_due();
                let l = self.layout();
                let name = name.to_str().ok_or(Errno::ENOENT)?;
                let child = l.lookup(d, name).ok_or(Errno::ENOENT)?;
                self.virtual_child(parent, &l, &child)
            }
            Inode::Latest => return Err(Errno::ENOTDIR),
            Inode::Snapshot { .. } | Inode::Entry { .. } => {
                let (block, tree) = self.children(parent, &what)?;
                let i = tree
                    .tree
                    .nodes
                    .binary_search_by(|n| n.name.as_slice().cmp(name.as_bytes()))
                    .map_err(|_| Errno::ENOENT)?;
                let n = &tree.tree.nodes[i];
                let attr = node_attr(self.entry_ino(&block, i, n), n);
                return Ok((attr, CONTENT_TTL, CONTENT_TTL));
            }
        };
        let child = self.inode(ino)?;
        let (attr, ttl) = self.attr(ino, &child)?;
        Ok((attr, ttl, VIRTUAL_TTL))
    }

    /// Calls `add` for the entries of directory `ino` from position
    /// `offset` on (0 = `.`, 1 = `..`, then the entries), until it returns
    /// true (the reply buffer is full).
    fn list(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, DirEntry<'_>) -> bool,
    ) -> FsResult<()> {
        let what = self.inode(ino)?;
        let (own, ttl) = self.attr(ino, &what)?;
        if own.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let dots = [
            (b".".as_slice(), ino),
            (b"..".as_slice(), self.parent(&what)),
        ];
        for (i, (name, d)) in dots.into_iter().enumerate().skip(offset as usize) {
            let mut attr = own;
            attr.ino = INodeNo(d);
            if add(
                (i + 1) as u64,
                DirEntry {
                    ino: d,
                    name,
                    attr,
                    ttl,
                },
            ) {
                return Ok(());
            }
        }
        let skip = offset.saturating_sub(2) as usize;
        match &what {
            Inode::Root | Inode::Virtual(_) => {
                self.refresh_if_due();
                let l = self.layout();
                let named: Vec<(String, u64)> = match &what {
                    Inode::Virtual(d) => l
                        .list(d)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(n, c)| {
                            let i = self.virtual_child(ino, &l, &c);
                            (n, i)
                        })
                        .collect(),
                    _ => self
                        .root_entries(&l)
                        .into_iter()
                        .map(|(n, i)| (n.to_string(), i))
                        .collect(),
                };
                for (k, (name, child)) in named.iter().enumerate().skip(skip) {
                    let (attr, _) = self.attr(*child, &self.inode(*child)?)?;
                    // One time for the name and its attributes here: the
                    // name's (see `lookup_in`).
                    let e = DirEntry {
                        ino: *child,
                        name: name.as_bytes(),
                        attr,
                        ttl: VIRTUAL_TTL,
                    };
                    if add((k + 3) as u64, e) {
                        break;
                    }
                }
            }
            _ => {
                let (block, tree) = self.children(ino, &what)?;
                for (k, n) in tree.tree.nodes.iter().enumerate().skip(skip) {
                    // Only a forged or damaged tree has one: the kernel
                    // failed the whole listing on a `/` or an empty name,
                    // and listed `.` or `..` twice. Left out, and told.
                    if !n.has_safe_name() {
                        let dir = format!("directory (inode {ino})");
                        let e = Error::corrupt(&dir, n.unsafe_name_error());
                        self.events.error(&dir, &e);
                        continue;
                    }
                    let child = self.entry_ino(&block, k, n);
                    let e = DirEntry {
                        ino: child,
                        name: &n.name,
                        attr: node_attr(child, n),
                        ttl: CONTENT_TTL,
                    };
                    if add((k + 3) as u64, e) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn node(&self, ino: u64) -> FsResult<(Arc<CachedTree>, usize)> {
        match self.inode(ino)? {
            Inode::Entry { dir, index } => self.entry_tree(dir, index),
            _ => Err(Errno::ENODATA),
        }
    }

    fn open_file(&self, ino: u64) -> FsResult<OpenFile> {
        let (t, i) = match self.inode(ino)? {
            Inode::Entry { dir, index } => self.entry_tree(dir, index)?,
            _ => return Err(Errno::EISDIR),
        };
        let n = &t.tree.nodes[i];
        match n.kind {
            NodeKind::File => {}
            NodeKind::Dir => return Err(Errno::EISDIR),
            _ => return Err(Errno::EACCES),
        }
        let what = format!("{} (inode {ino})", n.display_name());
        let content = FileContent::new(&self.repo, n, &what).map_err(|e| self.fail(&what, e))?;
        Ok(OpenFile {
            content,
            last_end: AtomicU64::new(0),
        })
    }

    /// Loads the chunks after `chunk` in the background.
    fn read_ahead(&self, f: &Arc<OpenFile>, chunk: usize) {
        for loc in f.content.ahead(&self.blobs, chunk, READ_AHEAD_CHUNKS) {
            let (repo, blobs) = (self.repo.clone(), self.blobs.clone());
            rayon::spawn(move || blobs.prefetch(&repo, &loc));
        }
    }
}

impl Filesystem for CairnFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Listing with attributes saves one lookup per entry in `ls -l`.
        // Always, not "auto": the kernel's heuristic lists all but the first
        // 4 KiB of a big directory without them, and `ls -lR` then looks up
        // every entry. Parallel lookups help `find` and `cp -a`.
        for flags in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            let _ = config.add_capabilities(flags);
        }
        // Without it the kernel checked modes only, and a user an ACL
        // denied could read through a mount shared with others.
        if self.acls {
            let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        }
        self.no_opendir = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_in(parent.0, name) {
            Ok((attr, attr_ttl, name_ttl)) => {
                reply.entry_with_ttls(&attr_ttl, &name_ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inode(ino.0).and_then(|w| self.attr(ino.0, &w)) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = match self.inode(ino.0) {
            Ok(Inode::Latest) => {
                self.refresh_if_due();
                Self::latest_target(&self.layout())
                    .map(String::into_bytes)
                    .ok_or(Errno::ENOENT)
            }
            Ok(Inode::Entry { dir, index }) => self.entry_tree(dir, index).and_then(|(t, i)| {
                let n = &t.tree.nodes[i];
                if n.kind == NodeKind::Symlink {
                    Ok(n.link_target.clone())
                } else {
                    Err(Errno::EINVAL)
                }
            }),
            Ok(_) => Err(Errno::EINVAL),
            Err(e) => Err(e),
        };
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.open_file(ino.0) {
            Ok(f) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.files
                    .lock()
                    .expect("open files")
                    .insert(fh, Arc::new(f));
                self.stats.files_opened.fetch_add(1, Ordering::Relaxed);
                // Contents never change: the page cache may keep them across opens.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = self.files.lock().expect("open files").get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match f
            .content
            .read(&self.repo, &self.blobs, offset, size as usize)
        {
            Ok((data, last)) => {
                let prev_end = f
                    .last_end
                    .swap(offset + data.len() as u64, Ordering::Relaxed);
                if let Some(chunk) = last
                    && offset.abs_diff(prev_end) <= SEQUENTIAL_SLACK
                {
                    self.read_ahead(&f, chunk);
                }
                self.stats
                    .bytes_read
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                reply.data(&data);
            }
            Err(e) => reply.error(self.fail(&format!("reading inode {ino} at {offset}"), e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.lock().expect("open files").remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Listing needs no per-open state. ENOSYS tells a kernel that
        // supports it to stop sending opendir and releasedir at all: two
        // requests fewer per directory in `find` or `ls -R`.
        if self.no_opendir {
            reply.error(Errno::ENOSYS);
        } else {
            reply.opened(FileHandle(0), FopenFlags::empty());
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.list(ino.0, offset, |next, e| {
            reply.add(INodeNo(e.ino), next, e.attr.kind, OsStr::from_bytes(e.name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.list(ino.0, offset, |next, e| {
            reply.add(
                INodeNo(e.ino),
                next,
                OsStr::from_bytes(e.name),
                &e.ttl,
                &e.attr,
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.table.read().expect("inode table").allocated();
        reply.statfs(0, 0, 0, files, 0, BLKSIZE, 255, BLKSIZE);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.node(ino.0) {
            Ok((t, i)) => match t.tree.nodes[i]
                .xattrs
                .iter()
                .find(|x| x.name == name.as_bytes())
            {
                Some(x) => reply_xattr(reply, size, &x.value),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(Errno::ENODATA) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.node(ino.0) {
            Ok((t, i)) => reply_xattr(reply, size, &xattr_names(&t.tree.nodes[i])),
            Err(Errno::ENODATA) => reply_xattr(reply, size, &[]),
            Err(e) => reply.error(e),
        }
    }

    // Everything below would change the filesystem.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}
