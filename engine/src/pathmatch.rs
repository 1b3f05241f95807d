//! Which paths of a snapshot a command works on: gitignore-style patterns
//! matched against the absolute path inside the snapshot (restore's and
//! rewrite's `--include` / `--exclude`).

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};

/// Include and exclude patterns, compiled once.
#[derive(Debug)]
pub struct PathMatcher {
    include: Option<Gitignore>,
    exclude: Option<Gitignore>,
}

fn compile(patterns: &[String]) -> Result<Option<Gitignore>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GitignoreBuilder::new("/");
    for p in patterns {
        b.add_line(None, p)
            .map_err(|e| Error::InvalidInput(format!("invalid pattern {p:?}: {e}")))?;
    }
    Ok(Some(b.build().map_err(|e| {
        Error::InvalidInput(format!("patterns: {e}"))
    })?))
}

impl PathMatcher {
    /// Compiles the patterns; an invalid one is [`Error::InvalidInput`].
    /// With no include patterns every path is included.
    pub fn new(include: &[String], exclude: &[String]) -> Result<PathMatcher> {
        Ok(PathMatcher {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// Whether an exclude pattern matches `snap_path` or a directory above it.
    pub fn excluded(&self, snap_path: &Path, is_dir: bool) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|g| g.matched_path_or_any_parents(snap_path, is_dir).is_ignore())
    }

    /// Whether `snap_path` is included: no include patterns were given, or
    /// one matches it or a directory above it.
    pub fn included(&self, snap_path: &Path, is_dir: bool) -> bool {
        self.include
            .as_ref()
            .is_none_or(|g| g.matched_path_or_any_parents(snap_path, is_dir).is_ignore())
    }
}
