//! Depth-first walks over a snapshot's Merkle tree.
//!
//! Every read-only command (ls, find, diff, dump, stats) visits entries the
//! same way: in name order, a directory before its contents, with the
//! entry's absolute path inside the snapshot as bytes (`/home/me/a`).
//! Subtrees are loaded only when the visitor asks to descend into them.

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::tree::{Node, NodeKind};

/// What a visitor wants the walker to do after an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on; descend into the entry if it is a directory.
    Continue,
    /// Go on, but do not load or visit the entry's subtree.
    SkipSubtree,
}

/// Walks the tree `root` depth-first in name order, calling `visit` with
/// each entry's path (`prefix` + `/` + name, `prefix` without a trailing
/// slash; empty for the snapshot root) and node.
pub fn walk(
    repo: &Repository,
    root: &Id,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<Next>,
) -> Result<()> {
    let mut path = prefix.to_vec();
    walk_tree(repo, root, &mut path, visit)
}

fn walk_tree(
    repo: &Repository,
    id: &Id,
    path: &mut Vec<u8>,
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<Next>,
) -> Result<()> {
    let tree = repo.load_tree(id)?;
    for node in &tree.nodes {
        let len = path.len();
        path.push(b'/');
        path.extend_from_slice(&node.name);
        let next = visit(path, node)?;
        if next == Next::Continue && node.kind == NodeKind::Dir {
            let sub = subtree_of(node, path)?;
            crate::deep::deeper(|| walk_tree(repo, &sub, path, visit))?;
        }
        path.truncate(len);
    }
    Ok(())
}

/// The subtree ID of a directory node; a directory without one is damage.
pub fn subtree_of(node: &Node, path: &[u8]) -> Result<Id> {
    node.subtree.ok_or_else(|| {
        Error::corrupt(
            format!("tree node {}", String::from_utf8_lossy(path)),
            "directory without subtree",
        )
    })
}

/// Splits a path inside a snapshot into its components, ignoring empty
/// ones and `.` (so `/a//b/` and `a/./b` both give `a`, `b`). Bytes: a
/// name need not be UTF-8.
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// `path` in canonical form: absolute, no empty or `.` components, no
/// trailing slash; the root is `/`.
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in components(path) {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// A path inside a snapshot for a message: quoted, each byte that is not
/// part of valid UTF-8 written as `\xNN` (not one U+FFFD for all).
pub fn shown(path: &[u8]) -> String {
    format!("\"{}\"", escaped(path))
}

/// `bytes` as text, each byte that is not part of valid UTF-8 written as
/// `\xNN` (lowercase hex): two names or paths that differ only in such
/// bytes stay apart, as they did not when all became U+FFFD. Valid UTF-8
/// is returned as it is.
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Whether `path` is `base` or lies below it (component-wise, so `/ab` is
/// not below `/a`). Both in [`normalize`]d form.
pub fn has_prefix(base: &[u8], path: &[u8]) -> bool {
    if base == b"/" {
        return path.starts_with(b"/");
    }
    path.starts_with(base) && (path.len() == base.len() || path[base.len()] == b'/')
}

/// The entry at `path` below the tree `root`; `None` for `root` itself
/// (`/` or empty). A path that does not exist is [`Error::InvalidInput`].
pub fn lookup(repo: &Repository, root: &Id, path: &[u8]) -> Result<Option<Node>> {
    let mut found: Option<Node> = None;
    let mut walked = Vec::new();
    for comp in components(path) {
        let id = match &found {
            None => *root,
            Some(n) if n.kind == NodeKind::Dir => subtree_of(n, &walked)?,
            Some(_) => {
                return Err(Error::InvalidInput(format!(
                    "{} is not a directory in the snapshot",
                    shown(&walked)
                )));
            }
        };
        walked.push(b'/');
        walked.extend_from_slice(comp);
        let tree = repo.load_tree(&id)?;
        found = Some(tree.find(comp).cloned().ok_or_else(|| {
            Error::InvalidInput(format!("{} not found in the snapshot", shown(&walked)))
        })?);
    }
    Ok(found)
}

/// The tree of directory `subfolder` of the tree `root` (`/` or empty for
/// `root` itself): for `SNAPSHOT:SUBFOLDER` arguments.
pub fn subfolder_tree(repo: &Repository, root: &Id, subfolder: &[u8]) -> Result<Id> {
    match lookup(repo, root, subfolder)? {
        None => Ok(*root),
        Some(n) if n.kind == NodeKind::Dir => subtree_of(&n, subfolder),
        Some(_) => Err(Error::InvalidInput(format!(
            "{} is not a directory in the snapshot",
            shown(subfolder)
        ))),
    }
}

/// A snapshot and the tree a command treats as its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRoot {
    /// The snapshot's ID.
    pub snapshot: Id,
    /// Its root tree, or the tree of the subfolder that was asked for.
    pub tree: Id,
}

/// Resolves `ID[:SUBFOLDER]` (an ID, unique prefix or `latest`, optionally
/// with restic's subfolder suffix, whose names need not be UTF-8).
pub fn snapshot_root(repo: &Repository, spec: &[u8]) -> Result<SnapshotRoot> {
    let (id_spec, sub) = split_spec(spec)?;
    let sub = sub.unwrap_or(b"/");
    let (id, snap) = repo.find_snapshot(id_spec)?;
    Ok(SnapshotRoot {
        snapshot: id,
        tree: subfolder_tree(repo, &snap.tree, sub)?,
    })
}

/// `ID[:SUBFOLDER]` split at its first `:` (`None` if there is none); the
/// ID part is text, the subfolder bytes (its names need not be UTF-8).
pub fn split_spec(spec: &[u8]) -> Result<(&str, Option<&[u8]>)> {
    let (id, sub) = match spec.iter().position(|b| *b == b':') {
        Some(i) => (&spec[..i], Some(&spec[i + 1..])),
        None => (spec, None),
    };
    let id = std::str::from_utf8(id)
        .map_err(|_| Error::InvalidInput(format!("{}: not a snapshot ID", shown(id))))?;
    Ok((id, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_and_prefix() {
        assert_eq!(normalize(b""), b"/");
        assert_eq!(normalize(b"/"), b"/");
        assert_eq!(normalize(b"a//b/./c/"), b"/a/b/c");
        assert_eq!(normalize(b"/caf\xe9//x"), b"/caf\xe9/x");
        assert_eq!(shown(b"/caf\xe9/\"q\""), r#""/caf\xe9/"q"""#);
        assert!(has_prefix(b"/a", b"/a"));
        assert!(has_prefix(b"/a", b"/a/b"));
        assert!(!has_prefix(b"/a", b"/ab"));
        assert!(!has_prefix(b"/a/b", b"/a"));
        assert!(has_prefix(b"/", b"/x"));
    }
}
