//! Inode numbers, handed out lazily.
//!
//! The kernel names every file by an inode number, and the mount must map
//! each number back to what it stands for. Numbers are not assigned per
//! file: the first time a directory of a snapshot is listed or searched,
//! its entries get one contiguous block of numbers (`base + index` in its
//! sorted tree), so listing a directory of 100,000 entries allocates one
//! block instead of 100,000 map entries, and a file's number tells which
//! directory and which entry it is. Trees are immutable, so a block stays
//! valid for the life of the mount.
//!
//! Hard links are one inode again: within one snapshot directory, files
//! that had the same source device and inode get the number of the first
//! of them seen, so `cp -a` and `tar` keep them linked.

use std::collections::{BTreeMap, HashMap};

use crate::id::Id;
use crate::mount::layout::VDir;
use crate::tree::LinkGroup;

/// The root directory.
pub const ROOT: u64 = 1;
const SNAPSHOTS: u64 = 2;
const IDS: u64 = 3;
const HOSTS: u64 = 4;
const TAGS: u64 = 5;
/// The `latest` symlink.
pub const LATEST: u64 = 6;
const FIRST_FREE: u64 = 7;

/// What an inode number stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inode {
    /// The mount's root.
    Root,
    /// A directory of the virtual layout.
    Virtual(VDir),
    /// The `latest` symlink at the root.
    Latest,
    /// A snapshot's directory: the content of its root tree.
    Snapshot {
        /// Its root tree.
        tree: Id,
        /// The snapshot's time (the directory's times).
        time: (i64, u32),
        /// The virtual directory it is listed in.
        parent: u64,
    },
    /// Entry `index` of the tree of directory inode `dir`.
    Entry {
        /// The directory inode holding the entry.
        dir: u64,
        /// Its position in that directory's tree.
        index: u32,
    },
}

/// The map from inode numbers to what they stand for.
#[derive(Debug)]
pub struct InodeTable {
    next: u64,
    /// Inodes outside snapshot trees (virtual directories, snapshot roots).
    named: HashMap<u64, Inode>,
    /// The reverse of `named`, so a name keeps its number across refreshes.
    by_key: HashMap<Key, u64>,
    /// Directory inode -> its block.
    bases: HashMap<u64, Block>,
    /// First inode number of a block -> (directory inode, number of entries).
    blocks: BTreeMap<u64, (u64, u32)>,
    /// (snapshot directory inode, hard link group) -> the group's inode
    /// number.
    links: HashMap<(u64, LinkGroup), u64>,
}

/// The inode numbers of one directory's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The number of entry 0; entry `i` is `base + i`.
    pub base: u64,
    /// The directory's tree.
    pub tree: Id,
    /// The snapshot directory inode it lies in.
    pub root: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Dir(VDir),
    Snapshot { parent: u64, id: Id },
}

impl Default for InodeTable {
    fn default() -> Self {
        let mut t = InodeTable {
            next: FIRST_FREE,
            named: HashMap::new(),
            by_key: HashMap::new(),
            bases: HashMap::new(),
            blocks: BTreeMap::new(),
            links: HashMap::new(),
        };
        t.named.insert(ROOT, Inode::Root);
        t.named.insert(LATEST, Inode::Latest);
        for (ino, d) in [
            (SNAPSHOTS, VDir::Snapshots),
            (IDS, VDir::Ids),
            (HOSTS, VDir::Hosts),
            (TAGS, VDir::Tags),
        ] {
            t.named.insert(ino, Inode::Virtual(d.clone()));
            t.by_key.insert(Key::Dir(d), ino);
        }
        t
    }
}

impl InodeTable {
    /// What `ino` stands for, if it was handed out.
    pub fn get(&self, ino: u64) -> Option<Inode> {
        if let Some(i) = self.named.get(&ino) {
            return Some(i.clone());
        }
        let (base, (dir, count)) = self.blocks.range(..=ino).next_back()?;
        let index = ino - base;
        (index < u64::from(*count)).then_some(Inode::Entry {
            dir: *dir,
            index: index as u32,
        })
    }

    /// The inode of a virtual directory (numbered on first use).
    pub fn virtual_dir(&mut self, d: &VDir) -> u64 {
        self.named_ino(Key::Dir(d.clone()), || Inode::Virtual(d.clone()))
    }

    /// The inode of snapshot `id` listed in virtual directory `parent`.
    /// Each listing gets its own inode: the kernel does not allow one
    /// directory inode under two parents.
    pub fn snapshot(&mut self, parent: u64, id: Id, tree: Id, time: (i64, u32)) -> u64 {
        self.named_ino(Key::Snapshot { parent, id }, || Inode::Snapshot {
            tree,
            time,
            parent,
        })
    }

    fn named_ino(&mut self, key: Key, make: impl FnOnce() -> Inode) -> u64 {
        if let Some(ino) = self.by_key.get(&key) {
            return *ino;
        }
        let ino = self.next;
        self.next += 1;
        self.named.insert(ino, make());
        self.by_key.insert(key, ino);
        ino
    }

    /// The block of directory `dir`, once given out.
    pub fn block(&self, dir: u64) -> Option<Block> {
        self.bases.get(&dir).copied()
    }

    /// The block of the `count` entries of directory `dir` (whose tree is
    /// `tree`, inside snapshot directory `root`), allocated on first use.
    pub fn block_or_alloc(&mut self, dir: u64, tree: Id, root: u64, count: usize) -> Block {
        if let Some(b) = self.bases.get(&dir) {
            return *b;
        }
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let base = self.next;
        // An empty directory still takes a number, so bases stay distinct.
        self.next += u64::from(count).max(1);
        let b = Block { base, tree, root };
        self.bases.insert(dir, b);
        self.blocks.insert(base, (dir, count));
        b
    }

    /// The inode number of hard link group `group` of snapshot directory
    /// `root`: `ino` if it is the first member seen.
    pub fn hard_link(&mut self, root: u64, group: LinkGroup, ino: u64) -> u64 {
        *self.links.entry((root, group)).or_insert(ino)
    }

    /// How many inode numbers have been handed out.
    pub fn allocated(&self) -> u64 {
        self.next - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_map_back_to_their_directory() {
        let mut t = InodeTable::default();
        let snap = t.snapshot(SNAPSHOTS, Id([1; 32]), Id([2; 32]), (0, 0));
        assert_eq!(
            t.snapshot(SNAPSHOTS, Id([1; 32]), Id([2; 32]), (0, 0)),
            snap
        );
        assert_ne!(t.snapshot(IDS, Id([1; 32]), Id([2; 32]), (0, 0)), snap);
        let base = t.block_or_alloc(snap, Id::default(), snap, 100_000).base;
        assert_eq!(
            t.block_or_alloc(snap, Id::default(), snap, 100_000).base,
            base
        );
        assert_eq!(t.block(snap).unwrap().root, snap);
        assert_eq!(
            t.get(base + 99_999),
            Some(Inode::Entry {
                dir: snap,
                index: 99_999
            })
        );
        let empty = t.block_or_alloc(base + 5, Id::default(), snap, 0).base;
        assert_eq!(t.get(empty), None);
        let next = t.block_or_alloc(base + 6, Id::default(), snap, 1).base;
        let mut node = crate::tree::Node::new(b"f".to_vec(), crate::tree::NodeKind::File);
        (node.device, node.inode, node.links, node.size) = (7, 8, 2, 1);
        let group = node.link_group();
        assert_eq!(t.hard_link(snap, group, base + 1), base + 1);
        assert_eq!(t.hard_link(snap, group, base + 2), base + 1);
        assert_eq!(t.hard_link(snap + 1, group, base + 2), base + 2);
        // The same inode recorded with other content is another file.
        node.size = 2;
        assert_eq!(t.hard_link(snap, node.link_group(), base + 3), base + 3);
        assert_eq!(
            t.get(next),
            Some(Inode::Entry {
                dir: base + 6,
                index: 0
            })
        );
        assert_eq!(t.get(ROOT), Some(Inode::Root));
        assert_eq!(t.get(u64::MAX), None);
        let host = t.virtual_dir(&VDir::Host("h".into()));
        assert_eq!(t.virtual_dir(&VDir::Host("h".into())), host);
        assert_eq!(t.virtual_dir(&VDir::Snapshots), SNAPSHOTS);
    }
}
