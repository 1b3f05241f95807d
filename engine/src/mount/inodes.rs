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

use std::collections::{BTreeMap, HashMap};

use crate::id::Id;
use crate::mount::layout::VDir;

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
    /// Directory inode -> first inode number of its entries, and its tree.
    bases: HashMap<u64, (u64, Id)>,
    /// First inode number of a block -> (directory inode, number of entries).
    blocks: BTreeMap<u64, (u64, u32)>,
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

    /// The first inode number of the entries of directory `dir` and the
    /// tree they come from, once a block was given out.
    pub fn block(&self, dir: u64) -> Option<(u64, Id)> {
        self.bases.get(&dir).copied()
    }

    /// The first inode number of the `count` entries of directory `dir`
    /// (whose tree is `tree`), allocating the block on first use.
    pub fn base_or_alloc(&mut self, dir: u64, tree: Id, count: usize) -> u64 {
        if let Some((b, _)) = self.bases.get(&dir) {
            return *b;
        }
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let base = self.next;
        // An empty directory still takes a number, so bases stay distinct.
        self.next += u64::from(count).max(1);
        self.bases.insert(dir, (base, tree));
        self.blocks.insert(base, (dir, count));
        base
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
        let base = t.base_or_alloc(snap, Id::default(), 100_000);
        assert_eq!(t.base_or_alloc(snap, Id::default(), 100_000), base);
        assert_eq!(
            t.get(base + 99_999),
            Some(Inode::Entry {
                dir: snap,
                index: 99_999
            })
        );
        let empty = t.base_or_alloc(base + 5, Id::default(), 0);
        assert_eq!(t.get(empty), None);
        let next = t.base_or_alloc(base + 6, Id::default(), 1);
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
