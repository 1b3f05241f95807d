//! Counting what a backup will look at, beside it, so that its progress
//! can be told as a share of the whole and a time left (as restic's
//! scanner does). Only metadata is read; the counts are an estimate of a
//! tree that may change meanwhile, and of the sources only (not of
//! databases captured by `--sqlite` or `--postgres`, nor standard input).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::exclude::Filter;
use crate::fsmeta::{dir_names, lstat_at, open_noatime_nofollow};
use crate::repository::Repository;

use super::{BackupOptions, sources_found};

/// The running totals of a [`scan`], read while it goes on.
#[derive(Debug, Default)]
pub struct ScanTotals {
    /// Regular files found so far.
    pub files: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Directories found so far.
    pub dirs: AtomicU64,
    /// Set once every source was walked: the totals are final.
    pub complete: AtomicBool,
}

impl ScanTotals {
    fn add_file(&self, len: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
    }
}

/// `opts` as [`scan`] wants them for a backup into `repo`: with the
/// repository's own files and cache left out, as the backup leaves them
/// out (a repository under a source made the totals, and the time left,
/// too large by its size).
pub fn scan_options(repo: &Repository, opts: &BackupOptions) -> BackupOptions {
    let mut out = opts.clone();
    if let Ok((sources, _)) = sources_found(&opts.paths) {
        crate::own_paths::left_out(repo, &sources, &mut out.exclude);
    }
    out
}

/// Walks the sources of `opts` with its exclusions, adding to `totals` as
/// it goes, until done or until `stop` is set. Entries it cannot read are
/// passed over (the backup reports them).
///
/// Pattern files are not read (give [`ExcludeOptions::resolved`] options,
/// as the backup gets): one may be a pipe that only the backup may read.
///
/// [`ExcludeOptions::resolved`]: crate::exclude::ExcludeOptions::resolved
pub fn scan(opts: &BackupOptions, totals: &ScanTotals, stop: &AtomicBool) {
    let exclude = opts.exclude.without_unread_files();
    let Ok((sources, _)) = sources_found(&opts.paths) else {
        return;
    };
    let Ok(filter) = Filter::new(&exclude) else {
        return;
    };
    let filter = filter.for_sources(sources.iter().cloned());
    for source in &sources {
        if !walk(source, &filter, totals, stop) {
            return;
        }
    }
    totals.complete.store(true, Ordering::Release);
}

/// One source; false if stopped. Directories are opened and their entries
/// stat'ed as the backup does it (`O_NOATIME`, `fstatat`), so counting
/// moves no access time the backup records.
fn walk(source: &Path, filter: &Filter, totals: &ScanTotals, stop: &AtomicBool) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(source) else {
        return true;
    };
    if !meta.is_dir() {
        if meta.is_file() {
            totals.add_file(meta.len());
        }
        return true;
    }
    let root_dev = meta.dev();
    let mut pending = vec![source.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        // Not through a link put in the directory's place meanwhile.
        let Ok(f) = open_noatime_nofollow(&dir, true) else {
            continue;
        };
        let Ok(mut names) = dir_names(&f, |_| {}) else {
            continue;
        };
        if filter.has_markers() && filter.excludes_dir_by_marker(&dir, &names) {
            filter.keep_markers(&dir, &mut names);
        }
        totals.dirs.fetch_add(1, Ordering::Relaxed);
        for name in names {
            // Asked per entry: a directory of millions must not hold up
            // the end of the backup.
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let name = OsStr::from_bytes(&name);
            let Ok(st) = lstat_at(&f, name) else { continue };
            let path = dir.join(name);
            if filter.excludes_entry(&path, st.is_dir(), st.file_size())
                || filter.always_by_id(st.dev(), st.ino())
            {
                continue;
            }
            if st.is_dir() {
                if !filter.one_file_system || st.dev() == root_dev {
                    pending.push(path);
                }
            } else if let Some(len) = st.file_size() {
                totals.add_file(len);
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exclude::ExcludeOptions;

    #[test]
    fn counts_what_the_exclusions_leave() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(src.join("skipped")).unwrap();
        std::fs::create_dir_all(src.join("cache")).unwrap();
        std::fs::write(src.join("a"), vec![0u8; 100]).unwrap();
        std::fs::write(src.join("sub/b"), vec![0u8; 20]).unwrap();
        std::fs::write(src.join("sub/deeper/c.tmp"), vec![0u8; 7]).unwrap();
        std::fs::write(src.join("skipped/d"), vec![0u8; 1000]).unwrap();
        std::fs::write(src.join("cache/e"), vec![0u8; 1000]).unwrap();
        std::fs::write(src.join("cache/.nobackup"), b"").unwrap();
        std::os::unix::fs::symlink("a", src.join("link")).unwrap();
        let opts = BackupOptions {
            paths: vec![src.clone()],
            exclude: ExcludeOptions {
                patterns: vec!["*.tmp".into(), "skipped".into()],
                if_present: vec![".nobackup".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let totals = ScanTotals::default();
        scan(&opts, &totals, &AtomicBool::new(false));
        assert!(totals.complete.load(Ordering::Acquire));
        // a, sub/b, and cache/ with only its marker (as the backup keeps).
        assert_eq!(totals.files.load(Ordering::Relaxed), 3);
        assert_eq!(totals.bytes.load(Ordering::Relaxed), 120);
        assert_eq!(totals.dirs.load(Ordering::Relaxed), 4);

        // Counting moves no access time (the backup records them).
        let atime = |p: &Path| std::fs::metadata(p).unwrap().atime();
        let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        for p in [src.clone(), src.join("sub"), src.join("cache/.nobackup")] {
            filetime::set_file_atime(&p, old).unwrap();
        }
        scan(&opts, &ScanTotals::default(), &AtomicBool::new(false));
        for p in [src.clone(), src.join("sub"), src.join("cache/.nobackup")] {
            assert_eq!(atime(&p), 1_000_000_000, "{}", p.display());
        }

        let stopped = ScanTotals::default();
        scan(&opts, &stopped, &AtomicBool::new(true));
        assert!(!stopped.complete.load(Ordering::Acquire));
    }
}
