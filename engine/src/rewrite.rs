//! Removing paths from existing snapshots (restic's `rewrite`, borg's
//! `recreate --exclude`): a file backed up by mistake, a secret, a cache
//! directory that should never have been kept.
//!
//! Each chosen snapshot whose tree holds a path that an exclude pattern
//! matches is written again without it, and replaces the old record: the
//! new one keeps the snapshot's lineage (`original`), time, host, paths and
//! tags (and `copied_from`), gains the tag `rewritten`, and the old records
//! are deleted. The removed data stays in the packs until `prune`, since
//! other snapshots may still refer to it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::backend::FileKind;
use crate::blob::BlobType;
use crate::error::{Error, Result};
use crate::hold::refuse_held;
use crate::id::Id;
use crate::lineage::{self, logical_snapshots};
use crate::localindex::IndexReader;
use crate::pathmatch::PathMatcher;
use crate::prune::DryRunChanges;
use crate::repository::Repository;
use crate::saver::BlobSaver;
use crate::snapshot::SnapshotFilter;
use crate::tree::{NodeKind, Tree};

pub use crate::snapshot::REWRITTEN_TAG;

/// What to rewrite and how.
#[derive(Debug, Clone, Default)]
pub struct RewriteOptions {
    /// Snapshots by ID, prefix or `latest`; empty: every snapshot `filter` accepts.
    pub snapshots: Vec<String>,
    /// Narrows the snapshots (and what `latest` means).
    pub filter: SnapshotFilter,
    /// Gitignore-style patterns over absolute paths in the snapshot
    /// (as `restore --exclude`); at least one is required.
    pub exclude: Vec<String>,
    /// As `exclude`, matched without regard to case.
    pub iexclude: Vec<String>,
    /// Report what would change and write nothing.
    pub dry_run: bool,
}

/// One snapshot that was (or would be) rewritten.
#[derive(Debug, Clone, Serialize)]
pub struct Rewritten {
    /// The record that was replaced.
    pub old: String,
    /// The record that replaces it (`None` in a dry run), or the record
    /// itself when only leftovers of an interrupted rewrite were deleted.
    pub new: Option<String>,
    /// Entries removed, each the top of what went: a directory's contents
    /// are not listed.
    pub removed: Vec<String>,
    /// Files removed, counting those inside removed directories.
    pub files_removed: u64,
    /// Their bytes.
    pub bytes_removed: u64,
    /// Removed directories whose listing (or one below them) was lost:
    /// what they held is not in `files_removed` and `bytes_removed`, nor
    /// taken off the snapshot's recorded size.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uncounted: Vec<String>,
    /// Every record deleted: the old one and leftovers of its lineage.
    pub records_deleted: Vec<String>,
}

/// The outcome of [`rewrite`].
#[derive(Debug, Clone, Serialize)]
pub struct RewriteReport {
    /// Snapshots looked at.
    pub snapshots: usize,
    /// Those that held a matching path.
    pub rewritten: Vec<Rewritten>,
    /// Nothing was written.
    pub dry_run: bool,
    /// Records of a chosen snapshot that still hold paths the patterns
    /// match and are not of its content once rewritten: left by a rewrite
    /// with other patterns that was interrupted, or written by someone
    /// else claiming its lineage. Kept (a record not proven to be this
    /// snapshot's may be a real one), and named, as the paths they hold
    /// stay in the repository: the run before this said nothing of them.
    pub records_kept: Vec<KeptRecord>,
    /// In a dry run, what it would have changed: for the preview of a
    /// prune after it ([`crate::prune::PruneOptions::assume`]).
    #[serde(skip)]
    pub dry_run_changes: DryRunChanges,
}

/// A record [`RewriteReport::records_kept`] names.
#[derive(Debug, Clone, Serialize)]
pub struct KeptRecord {
    /// The snapshot it is a record of (as `snapshots` shows it, after
    /// this rewrite).
    pub snapshot: String,
    /// The record.
    pub record: String,
    /// The snapshot shown is a repair (`repair snapshots`), and this record
    /// is perhaps the one it was made of, kept beside it.
    pub beside_repair: bool,
}

/// A subtree without the excluded paths.
#[derive(Clone)]
struct Outcome {
    id: Id,
    changed: bool,
    removed: Vec<String>,
    /// Of `removed`, the directories not counted in full (a listing lost).
    uncounted: Vec<String>,
    files: u64,
    bytes: u64,
}

struct Rewriter<'a> {
    repo: &'a Repository,
    reader: IndexReader,
    matcher: PathMatcher,
    /// By (tree, path): the same subtree at the same place, common across
    /// the snapshots of one source, is rewritten once.
    memo: HashMap<(Id, PathBuf), Outcome>,
    /// Files and bytes under a removed tree, and whether a listing below
    /// it was lost (then they are too low).
    counts: HashMap<Id, (u64, u64, bool)>,
    /// Encoded new trees, saved only once nothing refuses the rewrite.
    new_trees: Vec<Vec<u8>>,
    /// In a dry run, the new trees by ID (for [`DryRunChanges`]).
    planned: Option<HashMap<Id, Tree>>,
}

impl Rewriter<'_> {
    fn tree(&self, id: &Id) -> Result<Tree> {
        self.repo.load_tree_in(&self.reader, id)
    }

    fn rewrite(&mut self, id: Id, dir: &Path) -> Result<Outcome> {
        let key = (id, dir.to_path_buf());
        if let Some(o) = self.memo.get(&key) {
            return Ok(o.clone());
        }
        let tree = self
            .tree(&id)
            .map_err(|e| lost_listing(e, &format!("the listing of {}", dir.display())))?;
        let mut out = Outcome {
            id,
            changed: false,
            removed: Vec::new(),
            uncounted: Vec::new(),
            files: 0,
            bytes: 0,
        };
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        for mut n in tree.nodes {
            let path = dir.join(OsStr::from_bytes(&n.name));
            let is_dir = n.kind == NodeKind::Dir;
            if self.matcher.excluded(&path, is_dir) {
                let (files, bytes, lost) = match (n.kind, n.subtree) {
                    (NodeKind::Dir, Some(sub)) => crate::deep::deeper(|| self.count(sub))?,
                    (NodeKind::File, _) => (1, n.size, false),
                    _ => (0, 0, false),
                };
                out.files += files;
                out.bytes += bytes;
                let path = path.to_string_lossy().into_owned();
                if lost {
                    out.uncounted.push(path.clone());
                }
                out.removed.push(path);
                out.changed = true;
                continue;
            }
            if let (true, Some(sub)) = (is_dir, n.subtree) {
                let o = crate::deep::deeper(|| self.rewrite(sub, &path))?;
                if o.changed {
                    n.subtree = Some(o.id);
                    out.changed = true;
                    out.removed.extend(o.removed);
                    out.uncounted.extend(o.uncounted);
                    out.files += o.files;
                    out.bytes += o.bytes;
                }
            }
            nodes.push(n);
        }
        if out.changed {
            let tree = Tree { nodes };
            let bytes = tree.encode();
            out.id = self.repo.key().blob_id(&bytes);
            self.new_trees.push(bytes);
            if let Some(planned) = self.planned.as_mut() {
                planned.insert(out.id, tree);
            }
        }
        self.memo.insert(key, out.clone());
        Ok(out)
    }

    fn count(&mut self, id: Id) -> Result<(u64, u64, bool)> {
        if let Some(c) = self.counts.get(&id) {
            return Ok(*c);
        }
        let mut c = (0, 0, false);
        // Removed whole, a directory needs no listing: one that is lost
        // only goes uncounted (it stopped the rewrite of the secret above).
        let tree = match self.tree(&id) {
            Err(Error::Missing(_) | Error::Corrupt { .. }) => {
                c.2 = true;
                Tree::default()
            }
            r => r?,
        };
        for n in tree.nodes {
            match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    let (f, b, lost) = crate::deep::deeper(|| self.count(sub))?;
                    c = (c.0 + f, c.1 + b, c.2 || lost);
                }
                (NodeKind::File, _) => c = (c.0 + 1, c.1 + n.size, c.2),
                _ => {}
            }
        }
        self.counts.insert(id, c);
        Ok(c)
    }
}

/// `e`, if it says a tree is lost or damaged, with where (`what`: a
/// directory's listing, then its snapshot) and what to do; the advice is
/// added once, at the snapshot.
fn lost_listing(e: Error, what: &str) -> Error {
    let advice = what.starts_with("snapshot ");
    let more = |said: String| {
        if advice {
            format!(
                "{said}, in {what}: nothing was rewritten; `cairn check` names the repairs to \
                 run first (`repair packs` for packs that are gone, then `repair snapshots`, \
                 which rewrites the snapshots that lost data without it)"
            )
        } else {
            format!("{said}, {what}")
        }
    };
    match e {
        Error::Missing(s) => Error::Missing(more(s)),
        Error::Corrupt { object, reason } => Error::Corrupt {
            object,
            reason: more(reason),
        },
        e => e,
    }
}

/// Removes the paths `opts.exclude` matches from the chosen snapshots,
/// under an exclusive lock (a dry run takes a shared one).
///
/// Refused before anything is written when the repository or key is
/// append-only (the old records are deleted) or when a snapshot that would
/// change is under legal hold. A rewrite that is interrupted leaves the old
/// record next to the new one, folded into one snapshot; running it again
/// finishes it.
pub fn rewrite(repo: &Repository, opts: &RewriteOptions) -> Result<RewriteReport> {
    if opts.exclude.is_empty() && opts.iexclude.is_empty() {
        return Err(Error::InvalidInput(
            "rewrite needs at least one --exclude or --iexclude pattern".into(),
        ));
    }
    let matcher = PathMatcher::new(&[], &opts.exclude)?.ignoring_case(&[], &opts.iexclude)?;
    let lock = repo.lock(!opts.dry_run)?;
    if !opts.dry_run {
        repo.ensure_may_delete("`rewrite`")?;
    }
    let records = repo.snapshots()?;
    let trees: HashMap<Id, Id> = records.iter().map(|(id, s)| (*id, s.tree)).collect();
    let logical = logical_snapshots(records);
    let chosen: Vec<usize> = if opts.snapshots.is_empty() {
        (0..logical.len())
            .filter(|&i| opts.filter.matches(&logical[i].snapshot))
            .collect()
    } else {
        let mut v = Vec::new();
        for (id, _) in repo.select_snapshots(&opts.snapshots, &opts.filter)? {
            let i = logical
                .iter()
                .position(|l| l.records.contains(&id))
                .ok_or_else(|| Error::Missing(format!("snapshot {id}")))?;
            if !v.contains(&i) {
                v.push(i);
            }
        }
        v
    };
    let mut rw = Rewriter {
        repo,
        reader: repo.index_reader()?,
        matcher,
        memo: HashMap::new(),
        counts: HashMap::new(),
        new_trees: Vec::new(),
        planned: opts.dry_run.then(HashMap::new),
    };
    let mut changes = Vec::new();
    let mut records_kept = Vec::new();
    for &i in &chosen {
        let l = &logical[i];
        let o = rw
            .rewrite(l.snapshot.tree, Path::new("/"))
            .map_err(|e| lost_listing(e, &format!("snapshot {}", l.id.short())))?;
        // Its other records go too when they are of its content, damaged
        // (kept beside their repair), or leftovers of an interrupted rewrite
        // (one this rewrite turns into what stays). Any other record stays:
        // it may be a real snapshot whose lineage a record written by anyone
        // holding the key claims (format-spec/snapshot-hold.md).
        let mut delete = Vec::new();
        // Unchanged, `o` counts what goes with the leftovers alone.
        let mut left = o.clone();
        for r in &l.records {
            let tree = trees[r];
            if tree == l.snapshot.tree || lineage::is_damaged(repo, &rw.reader, tree)? {
                if o.changed {
                    delete.push(*r);
                }
                continue;
            }
            let ro = rw
                .rewrite(tree, Path::new("/"))
                .map_err(|e| lost_listing(e, &format!("snapshot {}", l.id.short())))?;
            if ro.changed && ro.id == o.id {
                if !o.changed {
                    left.removed.extend(ro.removed);
                    left.uncounted.extend(ro.uncounted);
                    left.files += ro.files;
                    left.bytes += ro.bytes;
                }
                delete.push(*r);
            } else if ro.changed {
                records_kept.push(KeptRecord {
                    snapshot: l.id.to_hex(),
                    record: r.to_hex(),
                    beside_repair: l.snapshot.is_repaired(),
                });
            }
        }
        if o.changed {
            changes.push((i, o, delete));
        } else if !delete.is_empty() {
            changes.push((i, left, delete));
        }
    }
    let held: Vec<String> = changes
        .iter()
        .filter(|(i, _, _)| logical[*i].snapshot.hold)
        .map(|(i, _, _)| logical[*i].id.short())
        .collect();
    if !held.is_empty() {
        return Err(refuse_held(&held, "rewritten", ", or leave it out"));
    }
    let mut report = RewriteReport {
        snapshots: chosen.len(),
        rewritten: Vec::new(),
        dry_run: opts.dry_run,
        records_kept,
        dry_run_changes: DryRunChanges::default(),
    };
    if opts.dry_run {
        let planned = &mut report.dry_run_changes;
        for (_, o, delete) in &changes {
            planned.forgotten.extend(delete);
            if o.changed {
                planned.roots.push(o.id);
            }
        }
        planned.trees = rw.planned.take().unwrap_or_default();
    }
    if !opts.dry_run && !changes.is_empty() {
        let saver = BlobSaver::new(repo).with_lock(&lock);
        for t in &rw.new_trees {
            saver.save(BlobType::Tree, t)?;
        }
        saver.flush()?;
    }
    for (i, o, delete) in changes {
        let l = &logical[i];
        let mut entry = Rewritten {
            old: l.id.to_hex(),
            // Only leftovers go: the record itself is already clean.
            new: (!o.changed).then(|| l.id.to_hex()),
            removed: o.removed,
            uncounted: o.uncounted,
            files_removed: o.files,
            bytes_removed: o.bytes,
            records_deleted: delete.iter().map(Id::to_hex).collect(),
        };
        if !opts.dry_run && !o.changed {
            lock.check()?;
            for r in &delete {
                repo.backend().delete(FileKind::Snapshot, &r.to_hex())?;
            }
        } else if !opts.dry_run {
            let mut snap = l.snapshot.clone();
            snap.tree = o.id;
            snap.rewritten_from(snap.lineage(l.id), delete.iter().copied());
            // `copied_from` stays, so `copy` does not bring the source's
            // snapshot back; the tag keeps its tree from being paired with
            // the source's (copy::nearest_copy).
            if let Some(s) = snap.summary.as_mut() {
                s.total_bytes = s.total_bytes.saturating_sub(o.bytes);
            }
            // A database whose capture was removed is no longer in it
            // (verify-restore found it missing, every time).
            snap.forget_captures_under(entry.removed.iter().map(String::as_str));
            if !snap.tags.iter().any(|t| t == REWRITTEN_TAG) {
                snap.tags.push(REWRITTEN_TAG.into());
            }
            // The new record first: an interruption leaves both, never
            // neither. Taken back if the lock was lost meanwhile (a prune may
            // have deleted its new trees), and then the old ones stay.
            let new = crate::lock::write_snapshot(&lock, repo, &snap)?;
            entry.new = Some(new.to_hex());
            for r in &delete {
                lock.check_fresh()?;
                repo.backend().delete(FileKind::Snapshot, &r.to_hex())?;
            }
        }
        report.rewritten.push(entry);
    }
    // Named by the record that now stands for the snapshot.
    for k in &mut report.records_kept {
        if let Some(new) = report
            .rewritten
            .iter()
            .find(|w| w.old == k.snapshot)
            .and_then(|w| w.new.clone())
        {
            k.snapshot = new;
        }
    }
    Ok(report)
}
