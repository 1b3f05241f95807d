//! Which paths of a snapshot a command works on: gitignore-style patterns
//! matched against the absolute path inside the snapshot (restore's and
//! rewrite's `--include` / `--exclude`; backup's excludes use
//! [`Patterns`] too). As in restic, a pattern with a slash inside but not
//! at its start matches at any depth ([`any_depth`]), a pattern matches a
//! path when it matches the path or a directory above it, and of the
//! patterns that match, the last decides: `!` re-includes what it names
//! and all below it ([`Patterns::matches`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use ignore::Match;
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

/// The directories at or below one of `paths` and above another (`/` and
/// `/home` for `/` and `/home/me`): a walk may stop at one short of the
/// path below it, and a listing of one may hold only the way down.
pub(crate) fn nested_leads(
    paths: &[std::path::PathBuf],
) -> std::collections::HashSet<std::path::PathBuf> {
    let given: std::collections::HashSet<&std::path::Path> =
        paths.iter().map(|p| p.as_path()).collect();
    let mut leads = std::collections::HashSet::new();
    for s in paths {
        let above: Vec<&std::path::Path> = s.ancestors().skip(1).collect();
        // Every directory from the parent up to the highest given path.
        if let Some(top) = above.iter().rposition(|a| given.contains(a)) {
            leads.extend(above[..=top].iter().map(|a| a.to_path_buf()));
        }
    }
    leads
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
    // ASCII is left to globset's own folding.
    if bytes.is_ascii() {
        return Cow::Borrowed(bytes);
    }
    // Run by run: a name that is not UTF-8 elsewhere in the path (a
    // Latin-1 directory above) left every other name unfolded.
    let mut out = Vec::with_capacity(bytes.len());
    for run in bytes.utf8_chunks() {
        out.extend_from_slice(fold_str(run.valid()).as_bytes());
        out.extend_from_slice(run.invalid());
    }
    Cow::Owned(out)
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

/// `p` taken as written where gitignore would read it otherwise: a
/// leading `#` (a comment line in gitignore; `--exclude '#*#'` excluded
/// nothing) and trailing spaces (dropped by gitignore; `-e 'name '`
/// excluded `name`). Pattern files drop their comments and spaces first,
/// as restic does.
pub fn as_written(p: &str) -> Cow<'_, str> {
    let (negated, rest) = match p.strip_prefix('!') {
        Some(r) => ("!", r),
        None => ("", p),
    };
    let kept = rest.trim_end_matches(' ');
    let spaces = rest.len() - kept.len();
    let hash = rest.starts_with('#');
    // A space after a backslash is escaped already.
    let escape_spaces = spaces > 0 && !kept.ends_with('\\');
    if !hash && !escape_spaces {
        return Cow::Borrowed(p);
    }
    let mut out = String::from(negated);
    if hash {
        out.push('\\');
    }
    if escape_spaces {
        out.push_str(kept);
        out.push_str(&"\\ ".repeat(spaces));
    } else {
        out.push_str(rest);
    }
    Cow::Owned(out)
}

/// `p` cleaned as restic cleans a pattern (`filepath.Clean`): `//`, `/./`
/// and `dir/..` are folded, a leading `./` dropped (`/a//b`, `./junk`
/// and `$D/x` with `D=/h/` matched nothing). A trailing `/` is kept: it
/// means a directory, as in gitignore. `/` alone is everything below it.
pub fn cleaned(p: &str) -> Cow<'_, str> {
    let (negated, body) = match p.strip_prefix('!') {
        Some(r) => ("!", r),
        None => ("", p),
    };
    let rooted = body.starts_with('/');
    let dir = body.len() > 1 && body.ends_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in body.split('/') {
        match c {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            c => parts.push(c),
        }
    }
    let mut out = String::from(negated);
    if rooted {
        out.push('/');
    }
    out.push_str(&parts.join("/"));
    if parts.is_empty() && rooted {
        out.push_str("**");
    } else if dir {
        out.push('/');
    }
    if out == p {
        Cow::Borrowed(p)
    } else {
        Cow::Owned(out)
    }
}

/// Why `p` reads as a borg pattern, which gitignore syntax would take
/// literally and match against nothing: `sh:**/*.tmp` (a style prefix) or
/// `- *.tmp` (a line of a borg patterns file). A name that does start so is
/// written with a class: `[s]h:x`, `[-] x`.
fn borg_style(p: &str) -> Option<String> {
    let neg = if p.starts_with('!') { "!" } else { "" };
    let bare = &p[neg.len()..];
    const STYLES: [&str; 5] = ["sh:", "fm:", "pp:", "pf:", "re:"];
    if let Some(style) = STYLES.iter().find(|s| bare.starts_with(**s)) {
        let rest = &bare[style.len()..];
        let instead = if *style == "re:" {
            "regular expressions are not supported".to_string()
        } else {
            format!("write `{neg}{rest}`")
        };
        return Some(format!(
            "borg's `{style}` style: cairn's patterns are gitignore-style, as restic's \
             ({instead}; for a name that starts with `{style}`, write `{neg}[{}]{}`)",
            &style[..1],
            &bare[1..]
        ));
    }
    let line = ["- ", "+ ", "R ", "P ", "! "]
        .iter()
        .find(|l| p.starts_with(**l))?;
    let rest = &p[2..];
    let instead = match line.trim() {
        "-" | "!" => format!("write `{rest}`"),
        "+" => format!("write `!{rest}` after what it takes back"),
        "R" => "name the paths to back up as arguments".into(),
        _ => "there is one pattern style, gitignore's".into(),
    };
    // `[!...]` opens a negated class: a leading `!` is escaped instead.
    let literal = match line.trim() {
        "!" => format!("\\{p}"),
        _ => format!("[{}]{}", &line[..1], &p[1..]),
    };
    Some(format!(
        "a line of a borg patterns file (`{}`): cairn's patterns are gitignore-style, as \
         restic's ({instead}; for a name that starts with `{line}`, write `{literal}`)",
        line.trim(),
    ))
}

/// Patterns compiled once, matched as restic matches them.
#[derive(Debug, Clone)]
pub struct Patterns {
    set: Gitignore,
    /// Each compiled line's place in the list (the last, for a line given
    /// twice): which of several matching patterns came last.
    order: HashMap<String, usize>,
}

impl Patterns {
    /// Compiles `patterns` (gitignore syntax, see [`any_depth`] and
    /// [`as_written`]), folding case with `ignore_case`; `None` if there
    /// are none.
    pub fn compile(patterns: &[String], ignore_case: bool) -> Result<Option<Patterns>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut b = GitignoreBuilder::new("/");
        b.case_insensitive(ignore_case)
            .map_err(|e| Error::InvalidInput(format!("patterns: {e}")))?;
        let mut order = HashMap::new();
        for (i, p) in patterns.iter().enumerate() {
            if let Some(why) = borg_style(p) {
                return Err(Error::InvalidInput(format!("pattern {p:?}: {why}")));
            }
            let folded = if ignore_case {
                Cow::Owned(fold_str(p))
            } else {
                Cow::Borrowed(p.as_str())
            };
            let clean = cleaned(&folded);
            let line = any_depth(&as_written(&clean)).into_owned();
            // As in restic, `**` may match no name: `dir/**` matches `dir`
            // too (`!/h/junk/**` after `/h/*` left junk out entirely).
            // `dir/**/` likewise matches the directory `dir/`.
            let itself = match clean.strip_suffix("/**/") {
                Some(d) => Some(format!("{d}/")),
                None => clean.strip_suffix("/**").map(String::from),
            }
            .filter(|d| {
                let name = d.trim_end_matches('/');
                !name.is_empty() && name != "!" && !name.ends_with("**")
            })
            .map(|d| any_depth(&as_written(&d)).into_owned());
            for line in std::iter::once(line).chain(itself) {
                b.add_line(None, &line)
                    .map_err(|e| Error::InvalidInput(format!("invalid pattern {p:?}: {e}")))?;
                // gitignore keeps the line without trailing whitespace
                // that is not escaped: found by either.
                order.insert(line.trim_end().to_string(), i);
                order.insert(line, i);
            }
        }
        let set = b
            .build()
            .map_err(|e| Error::InvalidInput(format!("patterns: {e}")))?;
        Ok(Some(Patterns { set, order }))
    }

    /// Whether the patterns select `path` (a directory if `is_dir`): of
    /// the patterns that match it or a directory above it, the last is not
    /// a `!` one. So `$HOME/**/*` then `!$HOME/Documents` keeps all of
    /// Documents, as in restic (gitignore kept the directory, empty). A
    /// `!` pattern ending in `/` counts for the directory itself only, as
    /// in gitignore: `*`, `!*/`, `!*.txt` keeps the text files only.
    pub fn matches(&self, path: &Path, is_dir: bool) -> bool {
        self.matches_below(path, is_dir, Path::new("/"))
    }

    /// [`Patterns::matches`] for a path below `root`, where directories
    /// at `root` and above it are not looked at: `restore SNAP:/src/proj
    /// --exclude src` excluded everything, `src` matching above the
    /// subpath restored.
    pub fn matches_below(&self, path: &Path, is_dir: bool, root: &Path) -> bool {
        // By depth: case folding may change the names, never their number.
        let floor = root.components().count();
        let mut last: Option<(usize, bool)> = None;
        let mut at = Some(path);
        let mut dir = is_dir;
        // The path itself is looked at unless it is the root directory (a
        // file restored as the subpath is matched by name).
        while let Some(p) = at.filter(|p| {
            p.parent().is_some() && (p.components().count() > floor || (*p == path && !is_dir))
        }) {
            let (glob, selects) = match self.set.matched(p, dir) {
                Match::None => (None, false),
                Match::Ignore(g) => (Some(g), true),
                // A `!` for directories counts for the directory itself
                // only, as in gitignore.
                Match::Whitelist(g) if p != path && g.is_only_dir() => (None, false),
                Match::Whitelist(g) => (Some(g), false),
            };
            if let Some(g) = glob {
                let i = self.order.get(g.original()).copied().unwrap_or(0);
                if last.is_none_or(|(j, _)| i > j) {
                    last = Some((i, selects));
                }
            }
            at = p.parent();
            dir = true;
        }
        last.is_some_and(|(_, selects)| selects)
    }
}

/// Include and exclude patterns, compiled once.
#[derive(Debug, Default)]
pub struct PathMatcher {
    include: Option<Patterns>,
    exclude: Option<Patterns>,
    /// The case-insensitive ones (`--iinclude`, `--iexclude`).
    iinclude: Option<Patterns>,
    iexclude: Option<Patterns>,
    /// Directories at and above it are not matched (see
    /// [`Patterns::matches_below`]); `/` unless set.
    root: Option<std::path::PathBuf>,
}

impl PathMatcher {
    /// Compiles the patterns; an invalid one is [`Error::InvalidInput`].
    /// With no include patterns every path is included.
    pub fn new(include: &[String], exclude: &[String]) -> Result<PathMatcher> {
        Ok(PathMatcher {
            include: Patterns::compile(include, false)?,
            exclude: Patterns::compile(exclude, false)?,
            ..PathMatcher::default()
        })
    }

    /// Adds patterns matched without regard to case (Unicode letters
    /// folded as [`fold_str`] does); a path is included if a pattern of
    /// either kind includes it, excluded if one of either kind excludes it.
    pub fn ignoring_case(mut self, include: &[String], exclude: &[String]) -> Result<PathMatcher> {
        self.iinclude = Patterns::compile(include, true)?;
        self.iexclude = Patterns::compile(exclude, true)?;
        Ok(self)
    }

    /// Matches only below `root` (the subpath a restore starts at).
    pub fn below(mut self, root: &Path) -> PathMatcher {
        self.root = Some(root.to_path_buf());
        self
    }

    /// Whether `set` selects `path`, both case-folded if `fold`.
    fn matches(&self, set: &Patterns, path: &Path, is_dir: bool, fold: bool) -> bool {
        let root = self.root.as_deref().unwrap_or(Path::new("/"));
        if fold {
            set.matches_below(&fold_path(path), is_dir, &fold_path(root))
        } else {
            set.matches_below(path, is_dir, root)
        }
    }

    /// Whether no pattern of any kind was given: every path is selected.
    pub fn selects_all(&self) -> bool {
        self.include.is_none()
            && self.exclude.is_none()
            && self.iinclude.is_none()
            && self.iexclude.is_none()
    }

    /// Whether an exclude pattern matches `snap_path` or a directory above it.
    pub fn excluded(&self, snap_path: &Path, is_dir: bool) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|g| self.matches(g, snap_path, is_dir, false))
            || self
                .iexclude
                .as_ref()
                .is_some_and(|g| self.matches(g, snap_path, is_dir, true))
    }

    /// Whether `snap_path` is included: no include patterns were given, or
    /// one matches it or a directory above it.
    pub fn included(&self, snap_path: &Path, is_dir: bool) -> bool {
        if self.include.is_none() && self.iinclude.is_none() {
            return true;
        }
        self.include
            .as_ref()
            .is_some_and(|g| self.matches(g, snap_path, is_dir, false))
            || self
                .iinclude
                .as_ref()
                .is_some_and(|g| self.matches(g, snap_path, is_dir, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn case_folding_is_one_map_for_patterns_and_paths() {
        // Title case (ǅ) and a final sigma fold as every other letter.
        assert_eq!(fold_str("ǅungla"), fold_str("ǄUNGLA"));
        assert_eq!(fold_str("ΟΔΟΣ"), "οδοσ");
        assert_eq!(
            &*fold_case("/Äpfel/ΟΔΟΣΑ".as_bytes()),
            "/äpfel/οδοσα".as_bytes()
        );
        // ASCII is left to globset; bytes that are not UTF-8 as they are,
        // and the names beside them folded all the same.
        assert!(matches!(fold_case(b"/Data"), Cow::Borrowed(_)));
        assert_eq!(&*fold_case(b"/D\xff"), b"/d\xff");
        assert_eq!(
            &*fold_case("/caf\u{e9}/\u{c4}pfel".as_bytes()),
            "/caf\u{e9}/\u{e4}pfel".as_bytes()
        );
        assert_eq!(
            &*fold_case(b"/srv/caf\xe9/\xc3\x84pfel.txt"),
            b"/srv/caf\xe9/\xc3\xa4pfel.txt"
        );
        let m = PathMatcher::default()
            .ignoring_case(&[], &["\u{e4}pfel.txt".into()])
            .unwrap();
        let latin1 = OsStr::from_bytes(b"/srv/caf\xe9/\xc3\x84pfel.txt");
        assert!(m.excluded(Path::new(latin1), false));
    }

    #[test]
    fn borg_patterns_are_refused_with_their_gitignore_spelling() {
        let refused = |p: &str| match Patterns::compile(&[p.to_string()], false) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("{p}: {other:?}"),
        };
        let m = refused("sh:**/*.tmp");
        assert!(
            m.contains("write `**/*.tmp`") && m.contains("`[s]h:**/*.tmp`"),
            "{m}"
        );
        assert!(refused("!fm:/home/*/junk").contains("write `!/home/*/junk`"));
        assert!(refused("re:^/tmp").contains("regular expressions"));
        let m = refused("- *.tmp");
        assert!(
            m.contains("borg patterns file") && m.contains("write `*.tmp`"),
            "{m}"
        );
        assert!(m.contains("`[-] *.tmp`"), "{m}");
        assert!(refused("+ /home/me/keep").contains("write `!/home/me/keep`"));
        assert!(refused("R /home").contains("as arguments"));
        let m = refused("! x");
        assert!(m.contains("write `\\! x`"), "{m}");
        assert!(refused("!sh:x").contains("write `![s]h:x`"));
        assert!(!m.contains("  "), "{m}");
        // What a class spells still matches those names; others are as before.
        for (p, name) in [
            ("[s]h:x", "/a/sh:x"),
            ("[-] x", "/a/- x"),
            ("-x", "/a/-x"),
            ("\\! x", "/a/! x"),
        ] {
            let set = Patterns::compile(&[p.to_string()], false).unwrap().unwrap();
            assert!(set.matches(Path::new(name), false), "{p}");
        }
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
    fn the_last_pattern_matching_a_path_or_a_directory_above_it_decides() {
        // restic's own example: all of home but Documents, all of it.
        let m =
            PathMatcher::new(&[], &["/home/u/**/*".into(), "!/home/u/Documents".into()]).unwrap();
        assert!(m.excluded(Path::new("/home/u/junk"), true));
        assert!(m.excluded(Path::new("/home/u/junk/x"), false));
        assert!(!m.excluded(Path::new("/home/u/Documents"), true));
        assert!(!m.excluded(Path::new("/home/u/Documents/report.txt"), false));
        assert!(!m.excluded(Path::new("/home/u/Documents/sub/deep.txt"), false));
        assert!(!m.excluded(Path::new("/home/u"), true));
        // A later pattern excludes again inside what `!` took back.
        let m = PathMatcher::new(
            &[],
            &["*.log".into(), "!/keep".into(), "/keep/*.tmp".into()],
        )
        .unwrap();
        assert!(m.excluded(Path::new("/a/x.log"), false));
        assert!(!m.excluded(Path::new("/keep/x.log"), false));
        assert!(m.excluded(Path::new("/keep/x.tmp"), false));
        // The same line twice: its last place counts.
        let m = PathMatcher::new(&[], &["x".into(), "!x".into(), "x".into()]).unwrap();
        assert!(m.excluded(Path::new("/a/x"), false));
    }

    #[test]
    fn a_directory_only_take_back_and_double_star_keep_their_meanings() {
        // gitignore's "only these files": `!*/` takes back directories
        // alone, not all below them.
        let m = PathMatcher::new(&[], &["*".into(), "!*/".into(), "!*.txt".into()]).unwrap();
        assert!(m.excluded(Path::new("/p/a.bin"), false));
        assert!(m.excluded(Path::new("/p/sub/b.bin"), false));
        assert!(!m.excluded(Path::new("/p/sub/b.txt"), false));
        assert!(!m.excluded(Path::new("/p/sub"), true));
        // `**` may match no name, as in restic: `dir/**` is `dir` too.
        let m = PathMatcher::new(&[], &["/h/*".into(), "!/h/junk/**".into()]).unwrap();
        assert!(!m.excluded(Path::new("/h/junk"), true));
        assert!(!m.excluded(Path::new("/h/junk/keep/k.txt"), false));
        assert!(m.excluded(Path::new("/h/docs"), true));
        let m = PathMatcher::new(&[], &["junk/**".into()]).unwrap();
        assert!(m.excluded(Path::new("/h/junk"), true));
    }

    #[test]
    fn a_directory_only_take_back_counts_as_in_gitignore() {
        // `!*/` takes `sub` back, and nothing below it matches an exclude
        // of its own: gitignore keeps it all, so does cairn.
        let m = PathMatcher::new(&[], &["/t/sub".into(), "!*/".into()]).unwrap();
        assert!(!m.excluded(Path::new("/t/sub"), true));
        assert!(!m.excluded(Path::new("/t/sub/f.bin"), false));
        // restic's "only these files" written with `**`: `/h/**/` is `/h/`
        // too, so the walk still enters /h.
        let m =
            PathMatcher::new(&[], &["/h/**".into(), "!/h/**/".into(), "!*.txt".into()]).unwrap();
        assert!(!m.excluded(Path::new("/h"), true));
        assert!(!m.excluded(Path::new("/h/d"), true));
        assert!(!m.excluded(Path::new("/h/d/a.txt"), false));
        assert!(m.excluded(Path::new("/h/d/a.bin"), false));
    }

    #[test]
    fn below_a_subpath_case_folding_and_a_file_as_the_subpath() {
        // The root is compared by depth: folding a non-ASCII name changed
        // the path so that it no longer met the unfolded root.
        let m = PathMatcher::new(&[], &[])
            .unwrap()
            .ignoring_case(&[], &["photos".into()])
            .unwrap()
            .below(Path::new("/t2/Photos"));
        assert!(!m.excluded(Path::new("/t2/Photos/Été.jpg"), false));
        assert!(!m.excluded(Path::new("/t2/Photos/a.jpg"), false));
        // A file restored as the subpath is matched by its name.
        let m = PathMatcher::new(&["*.txt".into()], &[])
            .unwrap()
            .below(Path::new("/t/sub/f.txt"));
        assert!(m.included(Path::new("/t/sub/f.txt"), false));
        let m = PathMatcher::new(&[], &["*.txt".into()])
            .unwrap()
            .below(Path::new("/t/sub/f.txt"));
        assert!(m.excluded(Path::new("/t/sub/f.txt"), false));
    }

    #[test]
    fn patterns_are_cleaned_as_restic_cleans_them() {
        assert_eq!(cleaned("/a//b/./c/"), "/a/b/c/");
        assert_eq!(cleaned("!/h//Documents"), "!/h/Documents");
        assert_eq!(cleaned("./junk"), "junk");
        assert_eq!(cleaned("/a/b/../c"), "/a/c");
        assert_eq!(cleaned("/../a"), "/a");
        assert_eq!(cleaned("../a"), "../a");
        assert_eq!(cleaned("/"), "/**");
        assert_eq!(cleaned("*.txt"), "*.txt");
        let m = PathMatcher::new(&[], &["/h/*".into(), "!/h//Documents/".into()]).unwrap();
        assert!(!m.excluded(Path::new("/h/Documents/x"), false));
        assert!(m.excluded(Path::new("/h/other"), false));
    }

    #[test]
    fn below_a_subpath_directories_above_it_are_not_matched() {
        let m = PathMatcher::new(&[], &["src".into()])
            .unwrap()
            .ignoring_case(&[], &["R2".into()])
            .unwrap()
            .below(Path::new("/r2/src/proj"));
        assert!(!m.excluded(Path::new("/r2/src/proj/Makefile"), false));
        assert!(m.excluded(Path::new("/r2/src/proj/src/main.c"), false));
        let m = PathMatcher::new(&["src".into()], &[])
            .unwrap()
            .below(Path::new("/r2/src/proj"));
        assert!(!m.included(Path::new("/r2/src/proj/Makefile"), false));
        assert!(m.included(Path::new("/r2/src/proj/src/main.c"), false));
    }

    #[test]
    fn a_leading_hash_and_trailing_spaces_are_part_of_the_pattern() {
        let m = PathMatcher::new(&[], &["#*#".into(), "report ".into(), "!#keep#".into()]).unwrap();
        assert!(m.excluded(Path::new("/d/#notes.txt#"), false));
        assert!(!m.excluded(Path::new("/d/#keep#"), false));
        assert!(m.excluded(Path::new("/d/report "), false));
        assert!(!m.excluded(Path::new("/d/report"), false));
        assert_eq!(as_written("plain"), "plain");
        assert_eq!(as_written("a\\ "), "a\\ ");
        assert_eq!(as_written("!a  "), "!a\\ \\ ");
        assert_eq!(as_written("#a"), "\\#a");
        assert_eq!(as_written("!#a"), "!\\#a");
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
