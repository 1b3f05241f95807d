//! `diff`: what changed between two snapshots, with restic's modifiers.
//!
//! `+` added, `-` removed, `M` content modified (files; symlink targets),
//! `T` type changed, `U` metadata only (mode, owner, mtime, ctime, xattrs;
//! shown with `metadata`), `?` after `M` when the content changed but size,
//! times and inode did not (bit rot on the source, or a forced re-read).
//!
//! Directories whose subtree IDs are equal are skipped without being read:
//! the Merkle tree makes a diff cost O(changes), not O(snapshot). One
//! consequence for the statistics: added and removed blobs are counted among
//! the changed entries only, so content that moved into a new file from an
//! unchanged part of the tree counts as added (restic reads the whole of
//! both snapshots to exclude it).
//!
//! Unlike restic, when an entry changes type to or from a directory, the
//! directory's contents are listed as added or removed (and counted), and
//! the entry counts as removed in its old kind and added in its new one.

use std::collections::HashSet;

use serde::Serialize;

use crate::blob::BlobType;
use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind};
use crate::walk::{Next, SnapshotRoot, subtree_of, walk};

/// How to compare.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Also report metadata-only changes (`U`).
    pub metadata: bool,
}

/// One changed entry.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Always `change`.
    pub message_type: &'static str,
    /// Absolute path in the snapshots; directories end with `/` (lossy
    /// UTF-8).
    pub path: String,
    /// `+`, `-`, `M`, `M?`, `T`, `U`.
    pub modifier: String,
    /// The path's bytes, when they are not UTF-8 (`path` then has U+FFFD
    /// in their place).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    /// The path as stored, for text output.
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// Counts for one side of a diff (restic's field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffStat {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks, devices, FIFOs, sockets.
    pub others: u64,
    /// Data blobs referenced only on this side (among the changed entries).
    pub data_blobs: u64,
    /// Tree blobs referenced only on this side (among the changed entries).
    pub tree_blobs: u64,
    /// Plaintext bytes of those blobs.
    pub bytes: u64,
}

impl DiffStat {
    fn count(&mut self, node: &Node) {
        match node.kind {
            NodeKind::File => self.files += 1,
            NodeKind::Dir => self.dirs += 1,
            _ => self.others += 1,
        }
    }
}

/// The closing statistics of a diff (restic's `statistics` message).
#[derive(Debug, Clone, Serialize)]
pub struct DiffStats {
    /// Always `statistics`.
    pub message_type: &'static str,
    /// Full ID of the first snapshot.
    pub source_snapshot: String,
    /// Full ID of the second snapshot.
    pub target_snapshot: String,
    /// Files whose content changed (`M`).
    pub changed_files: u64,
    /// What the second snapshot has that the first has not.
    pub added: DiffStat,
    /// What the first snapshot had that the second has not.
    pub removed: DiffStat,
}

type BlobSet = HashSet<(Id, BlobType)>;

fn add_blobs(set: &mut BlobSet, node: &Node) {
    match node.kind {
        NodeKind::File => set.extend(node.content.iter().map(|id| (*id, BlobType::Data))),
        NodeKind::Dir => set.extend(node.subtree.map(|id| (id, BlobType::Tree))),
        _ => {}
    }
}

/// Whether metadata a user would call "changed" differs. atime is left out
/// (reading a file changes it), as are inode, device and link count.
fn metadata_differs(a: &Node, b: &Node) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.user != b.user
        || a.group != b.group
        || a.mtime != b.mtime
        || a.ctime != b.ctime
        || a.xattrs != b.xattrs
        || a.rdev != b.rdev
        || (a.kind != NodeKind::Dir && a.size != b.size)
}

/// Content differs but nothing that changes when a file is written did.
fn looks_like_bitrot(a: &Node, b: &Node) -> bool {
    a.size == b.size
        && a.mtime == b.mtime
        && a.ctime == b.ctime
        && a.inode == b.inode
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
}

struct Differ<'a> {
    repo: &'a Repository,
    opts: &'a DiffOptions,
    out: &'a mut dyn FnMut(&Change) -> Result<()>,
    changed_files: u64,
    added: DiffStat,
    removed: DiffStat,
    before: BlobSet,
    after: BlobSet,
}

/// The path shown for `node` at `path`: directories end with `/`.
fn display(path: &[u8], node: &Node) -> Vec<u8> {
    let mut s = path.to_vec();
    if node.kind == NodeKind::Dir {
        s.push(b'/');
    }
    s
}

impl Differ<'_> {
    fn emit(&mut self, path: Vec<u8>, modifier: &str) -> Result<()> {
        (self.out)(&Change {
            message_type: "change",
            path: String::from_utf8_lossy(&path).into_owned(),
            modifier: modifier.to_string(),
            path_bytes: crate::listing::bytes_unless_utf8(&path),
            raw: path,
        })
    }

    /// Reports `node` (at `path`) and everything below it as added or removed.
    fn one_sided(&mut self, added: bool, path: &[u8], node: &Node, announce: bool) -> Result<()> {
        let modifier = if added { "+" } else { "-" };
        if announce {
            self.emit(display(path, node), modifier)?;
        }
        self.tally(added, node);
        if node.kind != NodeKind::Dir {
            return Ok(());
        }
        let sub = subtree_of(node, path)?;
        let repo = self.repo;
        walk(repo, &sub, path, &mut |p, n| {
            self.emit(display(p, n), modifier)?;
            self.tally(added, n);
            Ok(Next::Continue)
        })
    }

    fn tally(&mut self, added: bool, node: &Node) {
        if added {
            self.added.count(node);
            add_blobs(&mut self.after, node);
        } else {
            self.removed.count(node);
            add_blobs(&mut self.before, node);
        }
    }

    fn diff_tree(&mut self, prefix: &mut Vec<u8>, id1: &Id, id2: &Id) -> Result<()> {
        let t1 = self.repo.load_tree(id1)?;
        let t2 = self.repo.load_tree(id2)?;
        let (mut i, mut j) = (0, 0);
        while i < t1.nodes.len() || j < t2.nodes.len() {
            let (n1, n2) = match (t1.nodes.get(i), t2.nodes.get(j)) {
                (Some(a), Some(b)) if a.name == b.name => {
                    i += 1;
                    j += 1;
                    (Some(a), Some(b))
                }
                (Some(a), Some(b)) if a.name < b.name => {
                    i += 1;
                    (Some(a), None)
                }
                (Some(a), None) => {
                    i += 1;
                    (Some(a), None)
                }
                (_, b) => {
                    j += 1;
                    (None, b)
                }
            };
            let len = prefix.len();
            prefix.push(b'/');
            prefix.extend_from_slice(&n1.or(n2).expect("one side").name);
            match (n1, n2) {
                (Some(a), Some(b)) => self.both(prefix, a, b)?,
                (Some(a), None) => self.one_sided(false, prefix, a, true)?,
                (None, Some(b)) => self.one_sided(true, prefix, b, true)?,
                (None, None) => unreachable!("the loop stops when both sides are done"),
            }
            prefix.truncate(len);
        }
        Ok(())
    }

    fn both(&mut self, path: &mut Vec<u8>, a: &Node, b: &Node) -> Result<()> {
        add_blobs(&mut self.before, a);
        add_blobs(&mut self.after, b);
        let mut modifier = String::new();
        if a.kind != b.kind {
            modifier.push('T');
        } else if a.kind == NodeKind::File && a.content != b.content {
            modifier.push('M');
            self.changed_files += 1;
            if looks_like_bitrot(a, b) {
                modifier.push('?');
            }
        } else if a.kind == NodeKind::Symlink && a.link_target != b.link_target {
            modifier.push('M');
        } else if self.opts.metadata && metadata_differs(a, b) {
            modifier.push('U');
        }
        if !modifier.is_empty() {
            self.emit(display(path, b), &modifier)?;
        }
        match (a.kind, b.kind) {
            (NodeKind::Dir, NodeKind::Dir) => {
                let (s1, s2) = (subtree_of(a, path)?, subtree_of(b, path)?);
                // Equal IDs: equal subtrees, nothing below can differ.
                if s1 != s2 {
                    crate::deep::deeper(|| self.diff_tree(path, &s1, &s2))?;
                }
            }
            (k1, k2) if k1 != k2 => {
                self.one_sided(false, path, a, false)?;
                self.one_sided(true, path, b, false)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Compares `from` with `to` (see [`crate::walk::snapshot_root`]), calling
/// `on_change` for each change in path order; returns the statistics.
pub fn diff(
    repo: &Repository,
    from: &SnapshotRoot,
    to: &SnapshotRoot,
    opts: &DiffOptions,
    on_change: &mut dyn FnMut(&Change) -> Result<()>,
) -> Result<DiffStats> {
    let (tree1, tree2) = (from.tree, to.tree);
    let mut d = Differ {
        repo,
        opts,
        out: on_change,
        changed_files: 0,
        added: DiffStat::default(),
        removed: DiffStat::default(),
        before: HashSet::from([(tree1, BlobType::Tree)]),
        after: HashSet::from([(tree2, BlobType::Tree)]),
    };
    if tree1 != tree2 {
        d.diff_tree(&mut Vec::new(), &tree1, &tree2)?;
    }
    let reader = repo.index_reader()?;
    let tally = |set: &BlobSet, other: &BlobSet, stat: &mut DiffStat| -> Result<()> {
        for (id, t) in set.difference(other) {
            match t {
                BlobType::Data => stat.data_blobs += 1,
                BlobType::Tree => stat.tree_blobs += 1,
            }
            // A blob missing from the index is `check`'s business; the
            // counts stay right, only its size is unknown.
            if let Some(loc) = reader.lookup(id)? {
                stat.bytes += u64::from(loc.blob.raw_length);
            }
        }
        Ok(())
    };
    let (mut added, mut removed) = (d.added.clone(), d.removed.clone());
    tally(&d.after, &d.before, &mut added)?;
    tally(&d.before, &d.after, &mut removed)?;
    Ok(DiffStats {
        message_type: "statistics",
        source_snapshot: from.snapshot.to_hex(),
        target_snapshot: to.snapshot.to_hex(),
        changed_files: d.changed_files,
        added,
        removed,
    })
}
