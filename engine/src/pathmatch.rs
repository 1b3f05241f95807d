//! Which paths of a snapshot a command works on: gitignore-style patterns
//! matched against the absolute path inside the snapshot (restore's and
//! rewrite's `--include` / `--exclude`). As in restic, a pattern with a
//! slash inside but not at its start matches at any depth ([`any_depth`]).

use std::borrow::Cow;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};

/// `p` as gitignore has to be told restic's rule: a pattern with a slash
/// inside but none at its start (`node_modules/.cache`, `src/*.o`) matches
/// below any directory, not only at the root, where gitignore anchors it
/// (and where a relative path almost never is, paths being absolute).
/// Patterns starting with `/` stay anchored.
pub fn any_depth(p: &str) -> Cow<'_, str> {
    let (negated, rest) = match p.strip_prefix('!') {
        Some(r) => ("!", r),
        None => ("", p),
    };
    if rest.starts_with('/') || rest.starts_with("**/") || !rest.trim_end_matches('/').contains('/')
    {
        return Cow::Borrowed(p);
    }
    Cow::Owned(format!("{negated}**/{rest}"))
}

/// The names of `p`'s components, as bytes (no root, `.` or `..`).
pub(crate) fn components(p: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    p.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

/// Whether a pattern component holds glob syntax (globset's, with
/// backslash escapes), rather than a literal name.
pub(crate) fn has_glob_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{', '\\'])
}

/// `bytes` lower-cased for a case-insensitive match, as restic does it
/// (`strings.ToLower`): Unicode where they are UTF-8, since globset folds
/// ASCII letters only (`--iexclude äpfel` missed `Äpfel`).
pub fn fold_case(bytes: &[u8]) -> Cow<'_, [u8]> {
    match std::str::from_utf8(bytes) {
        // ASCII is left to globset's own folding.
        Ok(s) if !s.is_ascii() => Cow::Owned(fold_str(s).into_bytes()),
        _ => Cow::Borrowed(bytes),
    }
}

/// Every character lower-cased on its own: one fixed map for patterns and
/// paths alike (`str::to_lowercase` reads a final sigma by its context,
/// and `is_uppercase` misses title-case letters).
pub fn fold_str(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// [`fold_case`] of a path.
pub fn fold_path(p: &Path) -> Cow<'_, Path> {
    use std::os::unix::ffi::OsStrExt;
    match fold_case(p.as_os_str().as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(p),
        Cow::Owned(b) => Cow::Owned(std::ffi::OsString::from_vec(b).into()),
    }
}

/// Include and exclude patterns, compiled once.
#[derive(Debug, Default)]
pub struct PathMatcher {
    include: Option<Gitignore>,
    exclude: Option<Gitignore>,
    /// The case-insensitive ones (`--iinclude`, `--iexclude`).
    iinclude: Option<Gitignore>,
    iexclude: Option<Gitignore>,
}

fn compile(patterns: &[String], ignore_case: bool) -> Result<Option<Gitignore>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GitignoreBuilder::new("/");
    b.case_insensitive(ignore_case)
        .map_err(|e| Error::InvalidInput(format!("patterns: {e}")))?;
    for p in patterns {
        let line = if ignore_case {
            Cow::Owned(fold_str(p))
        } else {
            Cow::Borrowed(p.as_str())
        };
        b.add_line(None, &any_depth(&line))
            .map_err(|e| Error::InvalidInput(format!("invalid pattern {p:?}: {e}")))?;
    }
    Ok(Some(b.build().map_err(|e| {
        Error::InvalidInput(format!("patterns: {e}"))
    })?))
}

/// Whether `set` matches `path` or a directory above it.
fn matches(set: &Gitignore, path: &Path, is_dir: bool) -> bool {
    set.matched_path_or_any_parents(path, is_dir).is_ignore()
}

impl PathMatcher {
    /// Compiles the patterns; an invalid one is [`Error::InvalidInput`].
    /// With no include patterns every path is included.
    pub fn new(include: &[String], exclude: &[String]) -> Result<PathMatcher> {
        Ok(PathMatcher {
            include: compile(include, false)?,
            exclude: compile(exclude, false)?,
            ..PathMatcher::default()
        })
    }

    /// Adds patterns matched without regard to case (Unicode letters
    /// folded as [`fold_str`] does); a path is included if a pattern of
    /// either kind includes it, excluded if one of either kind excludes it.
    pub fn ignoring_case(mut self, include: &[String], exclude: &[String]) -> Result<PathMatcher> {
        self.iinclude = compile(include, true)?;
        self.iexclude = compile(exclude, true)?;
        Ok(self)
    }

    /// Whether an exclude pattern matches `snap_path` or a directory above it.
    pub fn excluded(&self, snap_path: &Path, is_dir: bool) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|g| matches(g, snap_path, is_dir))
            || self
                .iexclude
                .as_ref()
                .is_some_and(|g| matches(g, &fold_path(snap_path), is_dir))
    }

    /// Whether `snap_path` is included: no include patterns were given, or
    /// one matches it or a directory above it.
    pub fn included(&self, snap_path: &Path, is_dir: bool) -> bool {
        if self.include.is_none() && self.iinclude.is_none() {
            return true;
        }
        self.include
            .as_ref()
            .is_some_and(|g| matches(g, snap_path, is_dir))
            || self
                .iinclude
                .as_ref()
                .is_some_and(|g| matches(g, &fold_path(snap_path), is_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_folding_is_one_map_for_patterns_and_paths() {
        // Title case (ǅ) and a final sigma fold as every other letter.
        assert_eq!(fold_str("ǅungla"), fold_str("ǄUNGLA"));
        assert_eq!(fold_str("ΟΔΟΣ"), "οδοσ");
        assert_eq!(
            &*fold_case("/Äpfel/ΟΔΟΣΑ".as_bytes()),
            "/äpfel/οδοσα".as_bytes()
        );
        // ASCII is left to globset; bytes that are not UTF-8 as they are.
        assert!(matches!(fold_case(b"/Data"), Cow::Borrowed(_)));
        assert!(matches!(fold_case(b"/D\xff"), Cow::Borrowed(_)));
    }

    #[test]
    fn case_insensitive_patterns_join_the_others() {
        let m = PathMatcher::new(&["/keep".into()], &["*.log".into()])
            .unwrap()
            .ignoring_case(&["ÄPFEL/".into()], &["*.TMP".into()])
            .unwrap();
        assert!(m.included(Path::new("/keep/x"), false));
        assert!(m.included(Path::new("/home/äpfel/x"), false));
        assert!(m.included(Path::new("/home/Äpfel/x"), false));
        assert!(!m.included(Path::new("/home/birnen/x"), false));
        assert!(
            !m.included(Path::new("/Keep/x"), false),
            "--include keeps case"
        );
        assert!(m.excluded(Path::new("/a/b.tmp"), false));
        assert!(m.excluded(Path::new("/a/B.Tmp"), false));
        assert!(m.excluded(Path::new("/a/b.log"), false));
        assert!(
            !m.excluded(Path::new("/a/b.LOG"), false),
            "--exclude keeps case"
        );
        let none = PathMatcher::new(&[], &[])
            .unwrap()
            .ignoring_case(&[], &[])
            .unwrap();
        assert!(none.included(Path::new("/x"), false));
        assert!(!none.excluded(Path::new("/x"), false));
    }

    #[test]
    fn a_relative_pattern_with_a_slash_matches_at_any_depth() {
        let m = PathMatcher::new(&[], &["a/b".into(), "/top/x".into(), "!keep/b".into()]).unwrap();
        assert!(m.excluded(Path::new("/home/me/a/b"), false));
        assert!(m.excluded(Path::new("/a/b/c"), false));
        assert!(!m.excluded(Path::new("/home/me/xa/b"), false));
        assert!(m.excluded(Path::new("/top/x"), false));
        assert!(!m.excluded(Path::new("/home/top/x"), false));
        let m = PathMatcher::new(&["src/*.txt".into()], &[]).unwrap();
        assert!(m.included(Path::new("/tmp/x1/src/hello.txt"), false));
        assert!(!m.included(Path::new("/tmp/x1/src/a/hello.txt"), false));
        assert_eq!(any_depth("name"), "name");
        assert_eq!(any_depth("dir/"), "dir/");
        assert_eq!(any_depth("**/a/b"), "**/a/b");
        assert_eq!(any_depth("!a/b"), "!**/a/b");
    }
}
