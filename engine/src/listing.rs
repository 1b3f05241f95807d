//! `ls`: the entries of a snapshot, filtered by directory as restic does,
//! and the JSON views of nodes and snapshots that listings print.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::restorer::resolve;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind};
use crate::walk::{Next, has_prefix, normalize, shown, walk};

/// What `ls` lists.
#[derive(Debug, Clone, Default)]
pub struct LsOptions {
    /// Absolute directories to list (as bytes: names need not be UTF-8).
    /// Empty lists the whole snapshot, recursively; otherwise each
    /// directory and its direct entries.
    pub dirs: Vec<Vec<u8>>,
    /// With `dirs`: also everything below the directories' entries.
    pub recursive: bool,
}

/// Calls `out` with the path and node of every entry `opts` selects, in
/// tree order (restic's rules: a directory filter prints the directory
/// itself and its entries, `recursive` everything below it too).
pub fn ls(
    repo: &Repository,
    snap: &Snapshot,
    opts: &LsOptions,
    out: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<()> {
    let mut dirs = Vec::new();
    for d in &opts.dirs {
        if !d.starts_with(b"/") {
            return Err(Error::InvalidInput(format!(
                "{}: directory filters must be absolute paths (starting with '/')",
                shown(d)
            )));
        }
        let d = normalize(d);
        // A filter that matches nothing is more likely a typo than a wish.
        resolve(repo, snap, &d)?;
        dirs.push(d);
    }
    walk(repo, &snap.tree, b"", &mut |path, node| {
        let within = dirs.is_empty() || dirs.iter().any(|d| has_prefix(d, path));
        if within {
            out(path, node)?;
            if opts.recursive {
                return Ok(Next::Continue);
            }
        }
        // Descend only towards a filter directory (or into one when listing it).
        let approaching = dirs.is_empty() || dirs.iter().any(|d| has_prefix(path, d));
        Ok(if approaching {
            Next::Continue
        } else {
            Next::SkipSubtree
        })
    })
}

/// The entries directly inside directory `dir` (absolute) of `snap`, in
/// name order, with their paths; fails if `dir` is not a directory there.
pub fn list_dir(repo: &Repository, snap: &Snapshot, dir: &str) -> Result<Vec<(Vec<u8>, Node)>> {
    if !dir.starts_with('/') {
        return Err(Error::InvalidInput(format!(
            "{dir:?}: directories must be absolute paths (starting with '/')"
        )));
    }
    let base = normalize(dir.as_bytes());
    let tree = match resolve(repo, snap, &base)? {
        None => snap.tree,
        Some(node) => match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(t)) => t,
            _ => return Err(Error::InvalidInput(format!("{dir:?} is not a directory"))),
        },
    };
    let base = base.strip_suffix(b"/").unwrap_or(&base);
    Ok(repo
        .load_tree(&tree)?
        .nodes
        .into_iter()
        .map(|n| {
            let mut path = [base, b"/"].concat();
            path.extend_from_slice(&n.name);
            (path, n)
        })
        .collect())
}

/// The `ls -l` style permission string: type letter and `rwx` triplets with
/// setuid, setgid and sticky bits (`drwxr-sr-t`).
pub fn permissions(kind: NodeKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
        NodeKind::Socket => 's',
    });
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, shift) in [6, 3, 0].into_iter().enumerate() {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let (flag, set_x, set_no_x) = special[i];
        s.push(match (mode & flag != 0, bits & 1 != 0) {
            (true, true) => set_x,
            (true, false) => set_no_x,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `b` when it is not UTF-8: JSON output carries such a name's exact
/// bytes beside its lossy text, so that a script can reach the file.
pub fn bytes_unless_utf8(b: &[u8]) -> Option<Vec<u8>> {
    std::str::from_utf8(b).is_err().then(|| b.to_vec())
}

/// One node as `ls --json` and `find --json` print it (restic's field names).
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// File name (lossy UTF-8).
    pub name: String,
    /// `file`, `dir`, `symlink`, `fifo`, `chardev`, `blockdev` or `socket`.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Absolute path inside the snapshot (lossy UTF-8).
    pub path: String,
    /// Owner user ID.
    pub uid: u32,
    /// Owner group ID.
    pub gid: u32,
    /// Owner user name, when recorded.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Owner group name, when recorded.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Size in bytes (files: content; symlinks: target length; directories: 0).
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`) as a number, e.g. 420 for 0644.
    pub mode: u32,
    /// The same as `ls -l` shows it, with the type letter: `-rw-r--r--`.
    pub permissions: String,
    /// Modification time, RFC 3339.
    pub mtime: Option<String>,
    /// Access time, RFC 3339.
    pub atime: Option<String>,
    /// Status change time, RFC 3339.
    pub ctime: Option<String>,
    /// Inode number on the source filesystem.
    pub inode: u64,
    /// Hard link count on the source.
    pub links: u64,
    /// Symlink target (lossy UTF-8), for symlinks only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// The name's bytes, when they are not UTF-8 (`name` then has U+FFFD
    /// in their place); likewise `path_bytes` and `link_target_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_bytes: Option<Vec<u8>>,
    /// See `name_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    /// See `name_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target_bytes: Option<Vec<u8>>,
    /// Always `node` (restic's older name for `message_type`).
    pub struct_type: &'static str,
    /// Always `node`.
    pub message_type: &'static str,
}

impl NodeInfo {
    /// The JSON view of `node` found at `path`.
    pub fn new(path: &[u8], node: &Node) -> NodeInfo {
        NodeInfo {
            name: node.display_name(),
            kind: node.kind,
            path: String::from_utf8_lossy(path).into_owned(),
            uid: node.uid,
            gid: node.gid,
            user: node.user.clone(),
            group: node.group.clone(),
            size: node.size,
            mode: node.mode,
            permissions: permissions(node.kind, node.mode),
            mtime: node.mtime.to_rfc3339(),
            atime: node.atime.to_rfc3339(),
            ctime: node.ctime.to_rfc3339(),
            inode: node.inode,
            links: node.links,
            link_target: (node.kind == NodeKind::Symlink)
                .then(|| String::from_utf8_lossy(&node.link_target).into_owned()),
            name_bytes: bytes_unless_utf8(&node.name),
            path_bytes: bytes_unless_utf8(path),
            link_target_bytes: (node.kind == NodeKind::Symlink)
                .then(|| bytes_unless_utf8(&node.link_target))
                .flatten(),
            struct_type: "node",
            message_type: "node",
        }
    }
}

/// A snapshot as the first line of `ls --json` describes it: the record's
/// fields plus its ID (restic's `struct_type: "snapshot"` line).
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo<'a> {
    /// The snapshot record.
    #[serde(flatten)]
    pub snapshot: &'a Snapshot,
    /// Full snapshot ID.
    pub id: Id,
    /// The first 8 hex digits of the ID.
    pub short_id: String,
    /// Always `snapshot`.
    pub struct_type: &'static str,
    /// Always `snapshot`.
    pub message_type: &'static str,
}

impl<'a> SnapshotInfo<'a> {
    /// The JSON view of snapshot `id`.
    pub fn new(id: &Id, snapshot: &'a Snapshot) -> SnapshotInfo<'a> {
        SnapshotInfo {
            snapshot,
            id: *id,
            short_id: id.short(),
            struct_type: "snapshot",
            message_type: "snapshot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_strings() {
        assert_eq!(permissions(NodeKind::File, 0o644), "-rw-r--r--");
        assert_eq!(permissions(NodeKind::Dir, 0o2755), "drwxr-sr-x");
        assert_eq!(permissions(NodeKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(permissions(NodeKind::File, 0o4644), "-rwSr--r--");
        assert_eq!(permissions(NodeKind::Symlink, 0o777), "lrwxrwxrwx");
    }
}
