//! Counting what a backup will look at, beside it, so that its progress
//! can be told as a share of the whole and a time left (as restic's
//! scanner does). Only metadata is read; the counts are an estimate of a
//! tree that may change meanwhile, and of the sources only (not of
//! databases captured by `--sqlite` or `--postgres`, nor standard input).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::exclude::Filter;

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

/// Walks the sources of `opts` with its exclusions, adding to `totals` as
/// it goes, until done or until `stop` is set. Entries it cannot read are
/// passed over (the backup reports them).
pub fn scan(opts: &BackupOptions, totals: &ScanTotals, stop: &AtomicBool) {
    let Ok(filter) = Filter::new(&opts.exclude) else {
        return;
    };
    let Ok((sources, _)) = sources_found(&opts.paths) else {
        return;
    };
    for source in &sources {
        if !walk(source, &filter, totals, stop) {
            return;
        }
    }
    totals.complete.store(true, Ordering::Release);
}

/// One source; false if stopped.
fn walk(source: &Path, filter: &Filter, totals: &ScanTotals, stop: &AtomicBool) -> bool {
    let mut it = walkdir::WalkDir::new(source)
        .follow_links(false)
        .same_file_system(filter.one_file_system)
        .into_iter();
    while let Some(entry) = it.next() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        let path = entry.path();
        // A source itself is backed up whatever the patterns say.
        if entry.depth() > 0 && filter.excludes(path, &meta) {
            if meta.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if meta.is_dir() {
            if filter.has_markers() && excluded_by_marker(filter, path) {
                it.skip_current_dir();
                continue;
            }
            totals.dirs.fetch_add(1, Ordering::Relaxed);
        } else if meta.is_file() {
            totals.files.fetch_add(1, Ordering::Relaxed);
            totals.bytes.fetch_add(meta.len(), Ordering::Relaxed);
        }
    }
    true
}

fn excluded_by_marker(filter: &Filter, dir: &Path) -> bool {
    use std::os::unix::ffi::OsStringExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    let names: Vec<Vec<u8>> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_vec())
        .collect();
    filter.excludes_dir_by_marker(dir, &names)
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
        assert_eq!(totals.files.load(Ordering::Relaxed), 2);
        assert_eq!(totals.bytes.load(Ordering::Relaxed), 120);
        assert_eq!(totals.dirs.load(Ordering::Relaxed), 3);

        let stopped = ScanTotals::default();
        scan(&opts, &stopped, &AtomicBool::new(true));
        assert!(!stopped.complete.load(Ordering::Acquire));
    }
}
