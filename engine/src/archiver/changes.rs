//! Incremental backups: the previous snapshot's tree plus the set of paths
//! that changed since.
//!
//! Watch mode learns from inotify which paths changed. Only those are
//! stat'ed (and read, if their content changed), and only the directories
//! above them are listed again; every other entry is copied from the base
//! tree as it was, a directory by its subtree ID without looking inside,
//! so a snapshot costs O(changes), not O(tree).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{Ctx, child_paths, list_dir, load_subtree, save_path, save_tree, stat_node, tree_of};
use crate::error::Result;
use crate::pathmatch::components;
use crate::tree::{Node, NodeKind, Tree};

/// The paths changed since a snapshot, kept as a tree of path components
/// so that the backup can find, directory by directory, what to look at.
#[derive(Debug, Default, Clone)]
pub struct ChangedPaths {
    root: Dirty,
    count: usize,
}

/// One path component of a [`ChangedPaths`].
#[derive(Debug, Default, Clone)]
pub(super) struct Dirty {
    mark: Mark,
    children: BTreeMap<Vec<u8>, Dirty>,
}

#[derive(Debug, Default, Clone, PartialEq)]
enum Mark {
    /// Only something below changed.
    #[default]
    None,
    /// The entry itself changed: content, metadata, its entries (for a
    /// directory), or it is gone.
    Changed,
    /// An entry appeared here (created, or renamed from the path given):
    /// everything below it is examined.
    Replaced(Option<PathBuf>),
}

impl Dirty {
    pub(super) fn child(&self, name: &[u8]) -> Option<&Dirty> {
        self.children.get(name)
    }
}

impl ChangedPaths {
    /// An empty set.
    pub fn new() -> ChangedPaths {
        ChangedPaths::default()
    }

    /// How many paths were recorded (each counted once).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records that the entry at the absolute `path` changed in place (its
    /// content or metadata, or its entries if it is a directory), or is gone.
    pub fn changed(&mut self, path: &Path) {
        self.mark(path, Mark::Changed);
    }

    /// Records that an entry appeared at the absolute `path`: created, or
    /// renamed from `origin`. Everything below `path` is examined; a
    /// directory's files found unchanged at `origin` in the base snapshot
    /// are reused from there rather than read again.
    pub fn replaced(&mut self, path: &Path, origin: Option<&Path>) {
        let origin = match origin {
            // Renamed twice since the base: the base knows the first name.
            Some(o) => match self.find(o).map(|d| &d.mark) {
                Some(Mark::Replaced(Some(first))) => Some(first.clone()),
                _ => Some(o.to_path_buf()),
            },
            // Keep a known origin: it only offers candidates for reuse,
            // each still checked by size, times and inode.
            None => match self.find(path).map(|d| &d.mark) {
                Some(Mark::Replaced(o)) => o.clone(),
                _ => None,
            },
        };
        self.mark(path, Mark::Replaced(origin));
    }

    /// Adds every path of `other` (for example the changes of a snapshot
    /// that failed, to be tried again with the newer ones).
    pub fn absorb(&mut self, other: ChangedPaths) {
        fn walk(into: &mut ChangedPaths, d: &Dirty, path: &mut PathBuf) {
            match &d.mark {
                Mark::Changed => into.changed(path),
                Mark::Replaced(o) => into.replaced(path, o.as_deref()),
                Mark::None => {}
            }
            for (name, c) in &d.children {
                path.push(OsStr::from_bytes(name));
                crate::deep::deeper(|| walk(into, c, path));
                path.pop();
            }
        }
        walk(self, &other.root, &mut PathBuf::from("/"));
    }

    pub(super) fn root(&self) -> &Dirty {
        &self.root
    }

    fn find(&self, path: &Path) -> Option<&Dirty> {
        let mut d = &self.root;
        for c in components(path) {
            d = d.children.get(&c)?;
        }
        Some(d)
    }

    fn mark(&mut self, path: &Path, mark: Mark) {
        let mut d = &mut self.root;
        for c in components(path) {
            if matches!(d.mark, Mark::Replaced(_)) {
                return; // covered: its whole subtree is examined anyway
            }
            d = d.children.entry(c).or_default();
        }
        if matches!(d.mark, Mark::Replaced(_)) && mark == Mark::Changed {
            return;
        }
        if d.mark == Mark::None {
            self.count += 1;
        }
        if matches!(mark, Mark::Replaced(_)) {
            d.children.clear();
        }
        d.mark = mark;
    }
}

/// Backs up the entry at `path` given what changed below it (`dirty`) and
/// what the base snapshot held there (`old`); `Ok(None)` when it is gone,
/// excluded or unreadable (warned), as in `save_path`. Below a source it
/// is reached through its open parent directory `dir` (`io` the path to
/// use for it, see `save_node`), as in a full backup: looked up by its
/// full path, a directory above it swapped for a symbolic link meanwhile
/// would redirect the read to a file the tree's owner may not read.
#[allow(clippy::too_many_arguments)]
pub(super) fn save_changed(
    ctx: &Ctx,
    path: &Path,
    io: &Path,
    dir: Option<&File>,
    name: Vec<u8>,
    old: Option<&Node>,
    dirty: Option<&Dirty>,
    root_dev: Option<u64>,
) -> Result<Option<Node>> {
    ctx.check_cancelled()?;
    let Some(d) = dirty else {
        return match old {
            // Unchanged: reused as recorded, not even stat'ed.
            Some(o) => Ok(Some(o.clone())),
            // Present but unknown to the base (no event said so): look.
            None => save_path(ctx, path, io, dir, name, None, root_dev),
        };
    };
    if let Mark::Replaced(origin) = &d.mark {
        if let Some(o) = old {
            count_old(ctx, o);
        }
        let moved = origin.as_deref().and_then(|o| lookup(ctx, o));
        return save_path(ctx, path, io, dir, name, moved.as_ref().or(old), root_dev);
    }
    let Some(o) = old.filter(|o| o.kind == NodeKind::Dir) else {
        // A file, link or device (or something new): stat it again and
        // read it if it changed, exactly as a full backup would.
        if let Some(o) = old {
            count_old(ctx, o);
        }
        return save_path(ctx, path, io, dir, name, old, root_dev);
    };
    // A directory before: list it again, recurse only into what changed.
    let Some(old_tree) = load_subtree(ctx, Some(o)) else {
        count_old(ctx, o);
        return save_path(ctx, path, io, dir, name, None, root_dev);
    };
    // The walk may stop here short of a source below: walked as a full
    // backup walks it (see `through_to_sources`).
    if ctx.leads_to_source(path) {
        count_old(ctx, o);
        return save_path(ctx, path, io, dir, name, Some(o), root_dev);
    }
    let Some(mut node) = stat_node(ctx, path, io, dir, name.clone(), Some(o))? else {
        count_old(ctx, o);
        return Ok(None);
    };
    let dev = root_dev.unwrap_or(node.device);
    if node.kind != NodeKind::Dir || (ctx.filter.one_file_system && node.device != dev) {
        count_old(ctx, o);
        return save_path(ctx, path, io, dir, name, Some(o), root_dev);
    }
    let at = dir.map(|d| (d, name.as_slice()));
    let Some((dirf, names)) = list_dir(ctx, path, io, at) else {
        count_old(ctx, o);
        return Ok(None);
    };
    // list_dir counted the directory; it stands in for the old one.
    ctx.counters.removed_dirs.fetch_add(1, Ordering::Relaxed);
    for gone in old_tree
        .nodes
        .iter()
        .filter(|n| names.binary_search(&n.name).is_err())
    {
        count_old(ctx, gone);
    }
    let children: Vec<Option<Node>> = names
        .into_par_iter()
        .map(|n| {
            let (child, child_io) = child_paths(&dirf, path, io, &n);
            let (was, below) = (old_tree.find(&n), d.child(&n));
            crate::deep::deeper(|| {
                save_changed(
                    ctx,
                    &child,
                    &child_io,
                    Some(&dirf),
                    n,
                    was,
                    below,
                    Some(dev),
                )
            })
        })
        .collect::<Result<_>>()?;
    let tree = tree_of(ctx, path, children.into_iter().flatten().collect());
    node.subtree = Some(save_tree(ctx, &tree, Some(o), Some(&old_tree))?);
    Ok(Some(node))
}

/// Counts what the base held at an entry that is re-examined, so the new
/// snapshot's totals can be derived from the base's.
fn count_old(ctx: &Ctx, n: &Node) {
    let c = &ctx.counters;
    match n.kind {
        NodeKind::File => {
            c.removed_files.fetch_add(1, Ordering::Relaxed);
            c.removed_bytes.fetch_add(n.size, Ordering::Relaxed);
        }
        NodeKind::Dir => {
            c.removed_dirs.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = load_subtree(ctx, Some(n)) {
                t.nodes
                    .par_iter()
                    .for_each(|c| crate::deep::deeper(|| count_old(ctx, c)));
            }
        }
        NodeKind::Socket => {}
        _ => {
            c.removed_others.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The base snapshot's entry at the absolute `path`, if it has one.
fn lookup(ctx: &Ctx, path: &Path) -> Option<Node> {
    let root = ctx.base_root.as_ref()?;
    let comps = components(path);
    let (last, dirs) = comps.split_last()?;
    let mut here: Option<Tree> = None;
    for c in dirs {
        let n = here.as_ref().unwrap_or(root).find(c)?;
        here = Some(load_subtree(ctx, Some(n))?);
    }
    here.as_ref().unwrap_or(root).find(last).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark_at<'a>(c: &'a ChangedPaths, p: &str) -> Option<&'a Mark> {
        c.find(Path::new(p)).map(|d| &d.mark)
    }

    #[test]
    fn a_new_entry_covers_later_changes_below_it() {
        let mut c = ChangedPaths::new();
        c.changed(Path::new("/a/b/file"));
        c.replaced(Path::new("/a/b"), None);
        c.changed(Path::new("/a/b/other"));
        assert_eq!(mark_at(&c, "/a/b"), Some(&Mark::Replaced(None)));
        assert!(c.find(Path::new("/a/b/file")).is_none());
        assert!(c.find(Path::new("/a/b/other")).is_none());
        assert_eq!(mark_at(&c, "/a"), Some(&Mark::None));
    }

    #[test]
    fn renames_remember_the_name_the_base_knows() {
        let mut c = ChangedPaths::new();
        c.changed(Path::new("/d/a"));
        c.replaced(Path::new("/d/b"), Some(Path::new("/d/a")));
        c.changed(Path::new("/d/b"));
        c.replaced(Path::new("/d/c"), Some(Path::new("/d/b")));
        c.replaced(Path::new("/d/c"), None);
        assert_eq!(
            mark_at(&c, "/d/c"),
            Some(&Mark::Replaced(Some(PathBuf::from("/d/a"))))
        );
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn absorb_keeps_every_path() {
        let mut a = ChangedPaths::new();
        a.changed(Path::new("/x/1"));
        let mut b = ChangedPaths::new();
        b.replaced(Path::new("/x/2"), Some(Path::new("/x/0")));
        b.changed(Path::new("/y"));
        a.absorb(b);
        assert_eq!(mark_at(&a, "/x/1"), Some(&Mark::Changed));
        assert_eq!(
            mark_at(&a, "/x/2"),
            Some(&Mark::Replaced(Some(PathBuf::from("/x/0"))))
        );
        assert_eq!(mark_at(&a, "/y"), Some(&Mark::Changed));
        assert_eq!(a.len(), 3);
    }
}
