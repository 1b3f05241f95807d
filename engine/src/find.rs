//! `find`: entries whose name (or path) matches glob patterns, across
//! snapshots.
//!
//! A pattern without `/` is matched against entry names (`*.rs`); a pattern
//! with `/` against the entry's absolute path in the snapshot, anchored at
//! the root when it starts with `/` (`/home/*/notes.txt`) and at any depth
//! otherwise (`src/*.rs` = `**/src/*.rs`). `*` and `?` never match `/`;
//! `**` does. When every pattern is anchored, subtrees that cannot hold a
//! match are not read at all.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SnapshotFilter};
use crate::tree::{Node, NodeKind, Timestamp};
use crate::walk::{Next, walk};

/// What to look for and where.
#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    /// Glob patterns; an entry matching any of them is reported.
    pub patterns: Vec<String>,
    /// Match regardless of case.
    pub ignore_case: bool,
    /// Snapshots to search (IDs, unique prefixes or `latest`); empty: all,
    /// oldest first.
    pub snapshots: Vec<String>,
    /// Which snapshots to search when `snapshots` is empty, and what
    /// `latest` picks from.
    pub filter: SnapshotFilter,
    /// Only entries modified at or after this time.
    pub oldest: Option<Timestamp>,
    /// Only entries modified at or before this time.
    pub newest: Option<Timestamp>,
    /// With `snapshots` empty: newest first (where the copy a user wants
    /// back usually is).
    pub newest_first: bool,
}

/// One match, as handed to the caller.
pub struct FindMatch<'a> {
    /// The snapshot it was found in.
    pub snapshot_id: &'a Id,
    /// That snapshot's record.
    pub snapshot: &'a Snapshot,
    /// Absolute path inside the snapshot.
    pub path: &'a [u8],
    /// The entry.
    pub node: &'a Node,
}

/// What a search covered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FindSummary {
    /// Snapshots searched.
    pub snapshots: u64,
    /// Snapshots with at least one match.
    pub snapshots_with_matches: u64,
    /// Matches, counted once per snapshot they appear in.
    pub matches: u64,
    /// Snapshots searched only in part, each with why: a tree that is
    /// missing or damaged (the search goes on with the next snapshot).
    pub incomplete: Vec<(Id, String)>,
}

/// Compiled patterns.
struct Matcher {
    names: GlobSet,
    paths: GlobSet,
    /// Literal leading components of each pattern, when every pattern is
    /// anchored at the root (for pruning); `None` otherwise.
    anchored: Option<Vec<Vec<Vec<u8>>>>,
    ignore_case: bool,
}

impl Matcher {
    fn new(patterns: &[String], ignore_case: bool) -> Result<Matcher> {
        if patterns.is_empty() {
            return Err(Error::InvalidInput("give at least one pattern".into()));
        }
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let mut anchored = Some(Vec::new());
        for p in patterns {
            // Folded here and in the paths matched, as restic does.
            let p = if ignore_case {
                crate::pathmatch::fold_str(p)
            } else {
                p.clone()
            };
            let trimmed = match p.trim_end_matches('/') {
                "" => "/",
                t => t,
            };
            let (set, glob) = if !trimmed.contains('/') {
                anchored = None;
                (&mut names, trimmed.to_string())
            } else if trimmed.starts_with('/') {
                if let Some(a) = &mut anchored {
                    a.push(
                        trimmed
                            .split('/')
                            .filter(|c| !c.is_empty())
                            .take_while(|c| !crate::pathmatch::has_glob_meta(c))
                            .map(|c| c.as_bytes().to_vec())
                            .collect(),
                    );
                }
                (&mut paths, trimmed.to_string())
            } else {
                anchored = None;
                (&mut paths, format!("**/{trimmed}"))
            };
            let g = GlobBuilder::new(&glob)
                .literal_separator(true)
                .case_insensitive(ignore_case)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidInput(format!("bad pattern {p:?}: {e}")))?;
            set.add(g);
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("bad pattern: {e}")))
        };
        Ok(Matcher {
            names: build(names)?,
            paths: build(paths)?,
            anchored,
            ignore_case,
        })
    }

    fn matches(&self, path: &[u8], node: &Node) -> bool {
        let (name, path) = if self.ignore_case {
            (
                crate::pathmatch::fold_case(&node.name),
                crate::pathmatch::fold_case(path),
            )
        } else {
            (
                std::borrow::Cow::Borrowed(&node.name[..]),
                std::borrow::Cow::Borrowed(path),
            )
        };
        self.names.is_match(Path::new(OsStr::from_bytes(&name)))
            || self.paths.is_match(Path::new(OsStr::from_bytes(&path)))
    }

    /// Whether something below directory `path` could match.
    fn may_descend(&self, path: &[u8]) -> bool {
        let Some(patterns) = &self.anchored else {
            return true;
        };
        let comps: Vec<&[u8]> = path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        patterns.iter().any(|lits| {
            comps.iter().zip(lits).all(|(c, l)| {
                if self.ignore_case {
                    crate::pathmatch::fold_case(c).eq_ignore_ascii_case(l)
                } else {
                    c == &l.as_slice()
                }
            })
        })
    }
}

/// Checks that `patterns` compile, before anything is opened: a bad
/// pattern is a mistake on the command line.
pub fn check_patterns(patterns: &[String], ignore_case: bool) -> Result<()> {
    Matcher::new(patterns, ignore_case).map(|_| ())
}

/// Searches the snapshots `opts` names, calling `on_match` for each match
/// (snapshot by snapshot, in tree order within one).
pub fn find(
    repo: &Repository,
    opts: &FindOptions,
    on_match: &mut dyn FnMut(&FindMatch) -> Result<()>,
) -> Result<FindSummary> {
    let matcher = Matcher::new(&opts.patterns, opts.ignore_case)?;
    let mut snapshots = repo.select_snapshots(&opts.snapshots, &opts.filter)?;
    if opts.snapshots.is_empty() && opts.newest_first {
        snapshots.reverse();
    }
    let mut summary = FindSummary::default();
    for (id, snap) in &snapshots {
        summary.snapshots += 1;
        let mut hits = 0u64;
        let walked = walk(repo, &snap.tree, b"", &mut |path, node| {
            let in_time = opts.oldest.is_none_or(|t| node.mtime >= t)
                && opts.newest.is_none_or(|t| node.mtime <= t);
            if in_time && matcher.matches(path, node) {
                hits += 1;
                on_match(&FindMatch {
                    snapshot_id: id,
                    snapshot: snap,
                    path,
                    node,
                })?;
            }
            Ok(
                if node.kind == NodeKind::Dir && !matcher.may_descend(path) {
                    Next::SkipSubtree
                } else {
                    Next::Continue
                },
            )
        });
        match walked {
            // In a damaged repository, where a surviving copy is looked
            // for, the other snapshots are still searched.
            Err(e @ (Error::Missing(_) | Error::Corrupt { .. })) => {
                summary.incomplete.push((*id, e.to_string()))
            }
            r => r?,
        }
        summary.matches += hits;
        summary.snapshots_with_matches += u64::from(hits > 0);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node::new(name.as_bytes().to_vec(), NodeKind::File)
    }

    fn m(patterns: &[&str], ic: bool) -> Matcher {
        Matcher::new(
            &patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ic,
        )
        .unwrap()
    }

    #[test]
    fn names_paths_and_case() {
        let x = m(&["*.rs"], false);
        assert!(x.matches(b"/a/b/main.rs", &node("main.rs")));
        assert!(!x.matches(b"/a/b/main.c", &node("main.c")));
        assert!(!m(&["*.RS"], false).matches(b"/main.rs", &node("main.rs")));
        assert!(m(&["*.RS"], true).matches(b"/main.rs", &node("main.rs")));

        let p = m(&["b/*.rs"], false);
        assert!(p.matches(b"/a/b/main.rs", &node("main.rs")));
        assert!(!p.matches(b"/a/b/c/main.rs", &node("main.rs")));
        assert!(m(&["b/**/*.rs"], false).matches(b"/a/b/c/main.rs", &node("main.rs")));

        let a = m(&["/a/*/main.rs"], false);
        assert!(a.matches(b"/a/b/main.rs", &node("main.rs")));
        assert!(!a.matches(b"/x/a/b/main.rs", &node("main.rs")));
        assert!(a.may_descend(b"/a"));
        assert!(a.may_descend(b"/a/zzz"));
        assert!(!a.may_descend(b"/b"));
        assert!(m(&["x", "/a/b"], false).may_descend(b"/q"));
        assert!(Matcher::new(&[], false).is_err());
        assert!(Matcher::new(&["[".into()], false).is_err());
    }
}
