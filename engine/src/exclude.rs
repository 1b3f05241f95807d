//! Choosing what a backup leaves out.
//!
//! Patterns follow gitignore syntax, matched against absolute paths: a
//! pattern without `/` matches a name at any depth, one starting with `/`
//! is anchored at the filesystem root, one with a `/` further in matches
//! below any directory (restic's rule, see [`crate::pathmatch::any_depth`]),
//! `**` spans directories, and `!` re-includes what it names and all below
//! it (the last pattern to match an entry or a directory above it decides,
//! as in restic: [`crate::pathmatch::Patterns::matches`]).
//!
//! A path named as a source is never left out by a pattern, a size or a
//! marker: naming it asks for it (`backup --exclude-larger-than 1M
//! big.iso` stored an empty snapshot, exit 0). What lies below it is
//! judged as usual, by its whole path, as restic does since its issue
//! 5767 (so a pattern naming a directory above the source still leaves
//! out what the source holds).

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::pathmatch::Patterns;

/// The signature a `CACHEDIR.TAG` file must start with
/// (<https://bford.info/cachedir/>).
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The inode number a FUSE file system's root has (`FUSE_ROOT_ID`).
const FUSE_ROOT_INO: u64 = 1;

/// What to exclude, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ExcludeOptions {
    /// Case-sensitive patterns (`--exclude`).
    pub patterns: Vec<String>,
    /// Case-insensitive patterns (`--iexclude`).
    pub ipatterns: Vec<String>,
    /// Files holding one pattern per line (`--exclude-file`), their
    /// patterns after those of [`Self::patterns`], in the order given.
    pub pattern_files: Vec<PatternFile>,
    /// Files holding one case-insensitive pattern per line
    /// (`--iexclude-file`).
    pub ipattern_files: Vec<PatternFile>,
    /// Skip directories containing an entry with one of these names;
    /// `NAME:HEADER` only if that file starts with HEADER (restic's form).
    pub if_present: Vec<String>,
    /// Skip directories holding a valid `CACHEDIR.TAG`.
    pub caches: bool,
    /// Skip files larger than this many bytes.
    pub larger_than: Option<u64>,
    /// Do not descend into other filesystems.
    pub one_file_system: bool,
    /// Directories left out with all below them whatever the patterns say
    /// (`watch`'s repository and cache inside a watched tree).
    pub always: Vec<PathBuf>,
    /// The same, by device and inode: reached by another path (a bind
    /// mount), they are left out too.
    pub always_ids: Vec<(u64, u64)>,
    /// `cairn mount`s, by device and mount point: one met below a source
    /// is left out (a backup of it stored every snapshot it shows again,
    /// each time); a source named on one is backed up.
    pub cairn_mounts: Vec<(u64, PathBuf)>,
}

/// A file of patterns, one per line ([`read_pattern_file`]).
#[derive(Debug, Clone)]
pub enum PatternFile {
    /// To be read by each filter made (a scheduled run sees it edited).
    Named(PathBuf),
    /// Read already, with its patterns: a pipe cannot be read again. It
    /// keeps its place among the files: the last pattern to match decides.
    Read(PathBuf, Vec<String>),
}

impl PatternFile {
    /// Its patterns, read now if they were not.
    fn patterns(&self) -> Result<Vec<String>> {
        match self {
            PatternFile::Named(p) => read_pattern_file(p),
            PatternFile::Read(_, patterns) => Ok(patterns.clone()),
        }
    }
}

impl ExcludeOptions {
    /// These options with the pattern files read into the patterns: what
    /// is given to two readers (a backup and the scan of its sources) must
    /// read each file once, since one may be a pipe.
    pub fn resolved(&self) -> Result<ExcludeOptions> {
        self.read_where(|_| true)
    }

    /// These options with the pattern files that are no regular files (a
    /// pipe, `/dev/stdin`) read into the patterns, the others left to be
    /// read by each backup (so that scheduled runs see them edited). A
    /// pipe read again gives nothing: from the second scheduled run on,
    /// its patterns were gone, and what they excluded backed up.
    pub fn streams_read(&self) -> Result<ExcludeOptions> {
        self.read_where(|f| !std::fs::metadata(f).is_ok_and(|m| m.is_file()))
    }

    fn read_where(&self, read: impl Fn(&Path) -> bool) -> Result<ExcludeOptions> {
        let read_in = |files: &mut Vec<PatternFile>| -> Result<()> {
            for f in files {
                if let PatternFile::Named(p) = f
                    && read(p)
                {
                    let patterns = read_pattern_file(p)?;
                    *f = PatternFile::Read(std::mem::take(p), patterns);
                }
            }
            Ok(())
        };
        let mut o = self.clone();
        read_in(&mut o.pattern_files)?;
        read_in(&mut o.ipattern_files)?;
        Ok(o)
    }

    /// These options without the pattern files still to be read.
    pub fn without_unread_files(&self) -> ExcludeOptions {
        let mut o = self.clone();
        for files in [&mut o.pattern_files, &mut o.ipattern_files] {
            files.retain(|f| matches!(f, PatternFile::Read(..)));
        }
        o
    }
}

/// A compiled exclusion filter.
#[derive(Clone)]
pub struct Filter {
    exact: Option<Patterns>,
    insensitive: Option<Patterns>,
    /// Marker names, and the header each must start with, if any.
    if_present: Vec<(String, Option<Vec<u8>>)>,
    caches: bool,
    larger_than: Option<u64>,
    /// Do not cross filesystem boundaries.
    pub one_file_system: bool,
    always: Vec<PathBuf>,
    always_ids: std::collections::HashSet<(u64, u64)>,
    cairn_mounts: Vec<(u64, PathBuf)>,
    /// The paths named as sources (see the module's documentation).
    sources: Vec<PathBuf>,
    /// The same, for a lookup per entry when there are many
    /// (`--files-from`).
    source_set: std::collections::HashSet<std::ffi::OsString>,
}

/// A pattern that matches directory `dir` (absolute) and all below it, and
/// nothing else: its glob characters escaped by globset (which reads the
/// patterns), and its backslashes, which gitignore reads as escapes.
/// `None` for a path that is not UTF-8, which no pattern can name exactly.
pub fn literal_dir(dir: &Path) -> Option<String> {
    let escaped = globset::escape(&dir.to_str()?.replace('\\', "\\\\"));
    Some(format!("{escaped}/"))
}

/// Reads one pattern per line, as restic does: spaces around a pattern are
/// dropped, empty lines and lines starting with `#` are ignored, and
/// `$VAR` or `${VAR}` is replaced by the variable's value (one that is not
/// set is an error, rather than a pattern that silently matches something
/// else).
pub fn read_pattern_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).ctx("read pattern file", path)?;
    // A byte order mark (Windows editors write one) made the first
    // pattern match nothing, silently.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            shellexpand::env(l).map(|p| p.into_owned()).map_err(|e| {
                Error::InvalidInput(format!(
                    "pattern file {}: pattern {l:?}: {e} (a `$` that is part of a name is \
                     written `$$`, as in restic)",
                    path.display()
                ))
            })
        })
        .collect()
}

impl Filter {
    /// Compiles the options.
    pub fn new(o: &ExcludeOptions) -> Result<Filter> {
        let mut patterns = o.patterns.clone();
        for f in &o.pattern_files {
            patterns.extend(f.patterns()?);
        }
        let mut ipatterns = o.ipatterns.clone();
        for f in &o.ipattern_files {
            ipatterns.extend(f.patterns()?);
        }
        Ok(Filter {
            // Case is folded there and in the paths matched (see `fold_path`).
            exact: Patterns::compile(&patterns, false)?,
            insensitive: Patterns::compile(&ipatterns, true)?,
            if_present: o
                .if_present
                .iter()
                .map(|m| match m.split_once(':') {
                    Some((name, header)) => (name.to_string(), Some(header.as_bytes().to_vec())),
                    None => (m.clone(), None),
                })
                .collect(),
            caches: o.caches,
            larger_than: o.larger_than,
            one_file_system: o.one_file_system,
            always: o.always.clone(),
            always_ids: o.always_ids.iter().copied().collect(),
            cairn_mounts: o.cairn_mounts.clone(),
            sources: Vec::new(),
            source_set: Default::default(),
        })
    }

    /// This filter for a backup of `sources` (absolute paths), which it
    /// does not leave out (see the module's documentation).
    pub fn for_sources(mut self, sources: impl IntoIterator<Item = PathBuf>) -> Filter {
        self.sources = sources.into_iter().collect();
        if self.sources.len() > 8 {
            self.source_set = self
                .sources
                .iter()
                .map(|s| s.clone().into_os_string())
                .collect();
        }
        self
    }

    /// Whether `path` was named as a source: called for every entry, so
    /// by bytes, and through a set where there are many.
    fn is_source(&self, path: &Path) -> bool {
        let p = path.as_os_str();
        if self.source_set.is_empty() {
            self.sources.iter().any(|s| s.as_os_str() == p)
        } else {
            self.source_set.contains(p)
        }
    }

    /// Whether the patterns would leave out source `path`, a directory
    /// if `is_dir`, were it not named: it is kept, and what is below it is
    /// judged by the same patterns (all of it left out, unless a `!`
    /// pattern keeps some).
    pub fn source_matched(&self, path: &Path, is_dir: bool) -> bool {
        self.is_source(path) && !self.always_out(path) && self.pattern_match(path, is_dir)
    }

    /// Whether a pattern of either kind leaves `path` out.
    fn pattern_match(&self, path: &Path, is_dir: bool) -> bool {
        self.exact.as_ref().is_some_and(|g| g.matches(path, is_dir))
            || self
                .insensitive
                .as_ref()
                .is_some_and(|g| g.matches(&crate::pathmatch::fold_path(path), is_dir))
    }

    /// Whether the entry at `path` with metadata `m` is excluded by pattern or size.
    pub fn excludes(&self, path: &Path, m: &Metadata) -> bool {
        self.excludes_entry(path, m.is_dir(), m.is_file().then_some(m.len()))
    }

    /// Like [`Filter::excludes`], from the entry's kind and, for a regular
    /// file, its size.
    pub fn excludes_entry(&self, path: &Path, is_dir: bool, file_size: Option<u64>) -> bool {
        if self.always_out(path) {
            return true;
        }
        if self.is_source(path) {
            return false;
        }
        self.pattern_match(path, is_dir)
            || matches!((self.larger_than, file_size), (Some(max), Some(len)) if len > max)
    }

    /// Whether the patterns exclude `path` (or a directory above it)
    /// whatever it is, file or directory, without looking at the
    /// filesystem (a watcher's path may be gone already). Taken for a file
    /// only, a directory that `!*/` keeps under `*` (keep only some files)
    /// was excluded, and its moves never reached a snapshot.
    pub fn excludes_path(&self, path: &Path) -> bool {
        if self.always_out(path) {
            return true;
        }
        !self.is_source(path) && self.pattern_match(path, false) && self.pattern_match(path, true)
    }

    /// Whether the entry of device `dev` and inode `ino` is one of
    /// [`ExcludeOptions::always_ids`].
    pub fn always_by_id(&self, dev: u64, ino: u64) -> bool {
        !self.always_ids.is_empty() && self.always_ids.contains(&(dev, ino))
    }

    /// Whether `path` is the mount point of one of
    /// [`ExcludeOptions::cairn_mounts`] and no source: asked before the
    /// entry is stat'ed, which another user's mount refuses even root.
    pub fn mount_point_left_out(&self, path: &Path) -> bool {
        !self.cairn_mounts.is_empty()
            && self.cairn_mounts.iter().any(|(_, p)| p == path)
            && !self.is_source(path)
    }

    /// Whether the entry at `path`, of device `dev` and inode `ino`, is the
    /// root of one of [`ExcludeOptions::cairn_mounts`] (reached by another
    /// path than its mount point: a bind mount) and no source.
    pub fn mount_root_left_out(&self, path: &Path, dev: u64, ino: u64) -> bool {
        ino == FUSE_ROOT_INO
            && self.cairn_mounts.iter().any(|(d, _)| *d == dev)
            && !self.is_source(path)
    }

    /// Whether `path`, or a directory above it below `source`, is one of
    /// [`ExcludeOptions::always_ids`] (or the root of one of
    /// [`ExcludeOptions::cairn_mounts`]): a watcher's question, whose paths
    /// name the repository by another path than its own (a bind mount).
    pub fn always_by_id_above(&self, path: &Path, source: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        (!self.always_ids.is_empty() || !self.cairn_mounts.is_empty())
            && below(path, source).any(|d| {
                self.mount_point_left_out(d)
                    || std::fs::symlink_metadata(d).is_ok_and(|m| {
                        self.always_by_id(m.dev(), m.ino())
                            || self.mount_root_left_out(d, m.dev(), m.ino())
                    })
            })
    }

    /// Whether `path` is one of [`ExcludeOptions::always`] or below one.
    fn always_out(&self, path: &Path) -> bool {
        self.always.iter().any(|d| path.starts_with(d))
    }

    /// Whether directories may be excluded by a marker file in them
    /// (`--exclude-if-present`, `--exclude-caches`).
    pub fn has_markers(&self) -> bool {
        !self.if_present.is_empty() || self.caches
    }

    /// Whether the directory `dir` (whose entry names are `names`) is excluded
    /// by a marker file inside it; `io` is where the marker files are read
    /// (`dir` itself, or a shorter name for it). A source too, as in
    /// restic: named, it is kept, but not what is below it (the walk says so).
    pub fn excludes_dir_by_marker(&self, io: &Path, names: &[Vec<u8>]) -> bool {
        self.marked(io, |n| names.iter().any(|x| x == n.as_bytes()))
    }

    /// Of the entry names of the directory read at `io` that a marker
    /// excludes, what is kept, as restic keeps it: the marker files. A
    /// restore then gives a cache directory back with its tag, and the next
    /// backup leaves it out again. A marker that is a directory (`.git`)
    /// is not kept: it would bring back the very contents left out.
    pub fn keep_markers(&self, io: &Path, names: &mut Vec<Vec<u8>>) {
        names.retain(|n| {
            std::str::from_utf8(n).is_ok_and(|n| self.is_marker_name(n))
                && std::fs::symlink_metadata(io.join(OsStr::from_bytes(n)))
                    .is_ok_and(|m| !m.is_dir())
        });
    }

    /// Whether a directory between the directory source `source` and
    /// `path` (neither of them) is excluded by a marker file in it now: a
    /// watcher's question, as a change there changes no snapshot. A
    /// marker's own path is not asked of its directory: adding or removing
    /// one changes what is stored.
    pub fn marked_out(&self, path: &Path, source: &Path) -> bool {
        // A source is backed up wherever it lies.
        if !self.has_markers() || self.is_source(path) {
            return false;
        }
        let mut above = below(path, source).skip(1);
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| self.is_marker_name(n))
        {
            above.next();
        }
        above.any(|d| {
            !self.is_source(d) && self.marked(d, |n| std::fs::symlink_metadata(d.join(n)).is_ok())
        })
    }

    /// Whether `name` is the name of a marker file.
    fn is_marker_name(&self, name: &str) -> bool {
        self.if_present.iter().any(|(n, _)| n == name) || (self.caches && name == "CACHEDIR.TAG")
    }

    /// Whether the directory read at `io`, holding the names `has` says it
    /// holds, has a marker that excludes it.
    fn marked(&self, io: &Path, has: impl Fn(&str) -> bool) -> bool {
        let marks = |(n, header): &(String, Option<Vec<u8>>)| {
            has(n) && header.as_ref().is_none_or(|h| starts_with(&io.join(n), h))
        };
        if self.if_present.iter().any(marks) {
            return true;
        }
        self.caches
            && has("CACHEDIR.TAG")
            && starts_with(&io.join("CACHEDIR.TAG"), CACHEDIR_SIGNATURE)
    }
}

/// `path` and the directories above it, up to and without `source`.
fn below<'a>(path: &'a Path, source: &'a Path) -> impl Iterator<Item = &'a Path> {
    path.ancestors()
        .take_while(move |d| *d != source && d.starts_with(source))
}

/// Whether the regular file at `p` starts with `header` (a link to one
/// is no marker: see [`crate::fsmeta::open_regular_noatime`]).
fn starts_with(p: &Path, header: &[u8]) -> bool {
    let mut buf = vec![0u8; header.len()];
    crate::fsmeta::open_regular_noatime(p)
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok_and(|_| buf == header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dollar_in_a_name_is_written_twice_and_the_error_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("excludes");
        std::fs::write(&f, "$$RECYCLE.BIN\n").unwrap();
        assert_eq!(read_pattern_file(&f).unwrap(), ["$RECYCLE.BIN"]);
        std::fs::write(&f, "$RECYCLE.BIN\n").unwrap();
        let err = read_pattern_file(&f).unwrap_err().to_string();
        assert!(err.contains("written `$$`"), "{err}");
    }

    #[test]
    fn a_byte_order_mark_is_no_part_of_the_first_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("excludes");
        std::fs::write(&f, "\u{feff}*.tmp\n# c\n  cache/ \n").unwrap();
        assert_eq!(read_pattern_file(&f).unwrap(), ["*.tmp", "cache/"]);
        let list = dir.path().join("files");
        std::fs::write(&list, "\u{feff}/etc/hosts\n").unwrap();
        for format in [
            crate::archiver::ListFormat::Lines,
            crate::archiver::ListFormat::Verbatim,
        ] {
            let names = crate::archiver::read_files_from(&list, format).unwrap();
            assert_eq!(names, [Path::new("/etc/hosts")]);
        }
    }

    #[test]
    fn a_literal_directory_pattern_matches_that_directory_only() {
        let dir = Path::new("/srv/a*b [x]/{bk1,c}/repo");
        let filt = Filter::new(&ExcludeOptions {
            patterns: vec![literal_dir(dir).unwrap()],
            ..Default::default()
        })
        .unwrap();
        assert!(!filt.excludes_entry(Path::new("/srv/a*b [x]/bk1/repo"), true, None));
        let dir = Path::new("/srv/a*b [x]/repo");
        let filt = Filter::new(&ExcludeOptions {
            patterns: vec![literal_dir(dir).unwrap()],
            ..Default::default()
        })
        .unwrap();
        assert!(filt.excludes_entry(dir, true, None));
        assert!(filt.excludes_path(&dir.join("data/00/pack")));
        assert!(!filt.excludes_entry(Path::new("/srv/aXb [x]/repo"), true, None));
        assert!(!filt.excludes_entry(Path::new("/srv/a*b x/repo"), true, None));
        assert!(!filt.excludes_entry(Path::new("/srv/a*b [x]/repo2"), true, None));
    }

    #[test]
    fn sources_are_kept_and_what_is_below_them_is_judged_as_usual() {
        // What a watcher asks of paths that may be gone (no metadata).
        let mut sources: Vec<PathBuf> = vec!["/home/u/stash".into(), "/srv/x.img".into()];
        let filt = |sources: &[PathBuf]| {
            Filter::new(&ExcludeOptions {
                patterns: vec!["cache".into(), "*.img".into(), "/srv/*".into()],
                ipatterns: vec!["*.TMP".into()],
                always: vec![PathBuf::from("/home/u/stash/repo")],
                larger_than: Some(10),
                ..Default::default()
            })
            .unwrap()
            .for_sources(sources.to_vec())
        };
        // Few sources are compared one by one, many looked up in a set.
        for f in [filt(&sources), {
            sources.extend((0..20).map(|i| PathBuf::from(format!("/other/{i}"))));
            filt(&sources)
        }] {
            assert!(!f.excludes_path(Path::new("/home/u/stash")));
            assert!(!f.excludes_entry(Path::new("/srv/x.img"), false, Some(100)));
            assert!(f.excludes_entry(Path::new("/srv/y.img"), false, Some(1)));
            assert!(f.excludes_path(Path::new("/home/u/stash/keep/cache/f")));
            assert!(f.excludes_path(Path::new("/home/u/stash/x.tmp")));
            assert!(f.excludes_path(Path::new("/home/u/stash/repo/data")));
            assert!(f.excludes_entry(Path::new("/home/u/stash/big"), false, Some(11)));
            assert!(!f.excludes_entry(Path::new("/home/u/stash/small"), false, Some(1)));
        }
    }

    #[test]
    fn what_is_always_left_out_no_pattern_takes_back() {
        // watch's repository inside the tree: `!` after it took it back.
        let filt = Filter::new(&ExcludeOptions {
            patterns: vec!["/w/*".into(), "!/w/keep".into()],
            always: vec![PathBuf::from("/w/keep/repo")],
            ..Default::default()
        })
        .unwrap();
        assert!(filt.excludes_entry(Path::new("/w/keep/repo"), true, None));
        assert!(filt.excludes_path(Path::new("/w/keep/repo/data/00/x")));
        assert!(!filt.excludes_entry(Path::new("/w/keep/doc"), false, Some(1)));
        assert!(filt.excludes_entry(Path::new("/w/other"), false, Some(1)));
    }

    #[test]
    fn gitignore_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.tmp");
        std::fs::write(&f, b"x").unwrap();
        let m = std::fs::metadata(&f).unwrap();
        let filt = Filter::new(&ExcludeOptions {
            patterns: vec!["*.tmp".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(filt.excludes(&f, &m));
        assert!(!filt.excludes(&dir.path().join("a.txt"), &m));
        let filt = Filter::new(&ExcludeOptions {
            ipatterns: vec!["*.TMP".into()],
            larger_than: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert!(filt.excludes(&f, &m));
    }

    #[test]
    fn a_change_below_a_marked_directory_is_marked_out_and_the_marker_itself_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let build = src.join("a/build");
        std::fs::create_dir_all(build.join("deep")).unwrap();
        std::fs::create_dir_all(src.join("cache")).unwrap();
        std::fs::write(build.join(".nobackup"), b"").unwrap();
        std::fs::write(src.join("cache/CACHEDIR.TAG"), b"no signature").unwrap();
        let filt = Filter::new(&ExcludeOptions {
            if_present: vec![".nobackup".into()],
            caches: true,
            ..Default::default()
        })
        .unwrap()
        .for_sources([src.clone()]);
        assert!(filt.marked_out(&build.join("deep/o.o"), &src));
        assert!(filt.marked_out(&build.join("x"), &src));
        // Its own changes, its marker's, and those beside it are not.
        assert!(!filt.marked_out(&build, &src));
        assert!(!filt.marked_out(&build.join(".nobackup"), &src));
        assert!(!filt.marked_out(&src.join("a/other"), &src));
        // A tag without its signature marks nothing; with it, it does.
        assert!(!filt.marked_out(&src.join("cache/x"), &src));
        std::fs::write(src.join("cache/CACHEDIR.TAG"), CACHEDIR_SIGNATURE).unwrap();
        assert!(filt.marked_out(&src.join("cache/x"), &src));
        // A marker in a source, or above it, excludes nothing.
        std::fs::write(src.join(".nobackup"), b"").unwrap();
        assert!(!filt.marked_out(&src.join("a/other"), &src));
        assert!(!filt.marked_out(&build.join("x"), &build));
        // A file named as a source is backed up, so watched, all the same.
        let named = Filter::new(&ExcludeOptions {
            if_present: vec![".nobackup".into()],
            ..Default::default()
        })
        .unwrap()
        .for_sources([src.clone(), build.join("keep.txt")]);
        assert!(!named.marked_out(&build.join("keep.txt"), &src));
        assert!(named.marked_out(&build.join("other.txt"), &src));
        // Gone, the marker marks nothing.
        std::fs::remove_file(build.join(".nobackup")).unwrap();
        assert!(!filt.marked_out(&build.join("deep/o.o"), &src));
    }
}
