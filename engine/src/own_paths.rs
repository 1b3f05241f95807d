//! The repository's own files on this machine: its directory, when it is
//! local, and its local cache. A backup or a watch of a tree that holds them
//! leaves them out, as a restore leaves the repository alone: stored in
//! itself, a repository grew by what the backup before had written, each
//! time, and the cache's index, written while it was read, was stored
//! changed and useless on every run.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::exclude::ExcludeOptions;
use crate::repository::Repository;

/// Every spelling (see [`spellings`]) of the repository's local directory,
/// its cache directory and the cache's key hints, as `sources` may reach
/// them.
pub fn own_paths(repo: &Repository, sources: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = repo.index().path().and_then(|p| p.parent()) {
        out.extend(spellings(dir, sources));
        // And the names of the key files that opened repositories last,
        // beside it in the cache's root,
        // and the root's cache tag: neither is worth a backup.
        if let Some(root) = dir.parent() {
            out.extend(spellings(&root.join(crate::repository::KEY_HINTS), sources));
            out.extend(spellings(&root.join("CACHEDIR.TAG"), sources));
        }
    }
    // The repository's own files, not its whole directory: one made at the
    // root of a disk that holds the user's files too leaves those in.
    for own in repository_files(repo) {
        out.extend(spellings(&own, sources));
    }
    out.sort();
    out.dedup();
    out
}

/// `exclude` with the repository's own files and cache left out of a walk
/// of `sources`, by path and by device and inode (as a backup, and the
/// count of what it will do, leave them out), and every `cairn mount`
/// (see [`mounts`]).
pub fn left_out(repo: &Repository, sources: &[PathBuf], exclude: &mut ExcludeOptions) {
    exclude.always.extend(own_paths(repo, sources));
    exclude.always_ids = own_ids(repo);
    exclude.cairn_mounts = mounts();
}

/// Those of `sources` whose walk could store nothing but what a backup
/// leaves out, each an empty directory in the snapshot: a source that is
/// one of `own` ([`own_paths`]: the repository's own files, its cache) or
/// below one, or a directory whose every entry is one (the repository's
/// local directory, the cache's). A symbolic link named as a source is
/// stored as the link, whatever it points to.
pub fn only_own(sources: &[PathBuf], own: &[PathBuf]) -> Vec<PathBuf> {
    // The link test last: a stat for the few that may be theirs, not one
    // more for every path of a `--files-from` list.
    sources
        .iter()
        .filter(|s| {
            own.iter().any(|o| s.starts_with(o))
                // Only a directory holding some of them is listed, and
                // without moving its access time.
                || own.iter().any(|o| o.parent() == Some(s.as_path()))
                    && crate::fsmeta::open_noatime(s, true)
                        .and_then(|d| crate::fsmeta::dir_names(&d, drop))
                        .is_ok_and(|names| {
                            !names.is_empty()
                                && names
                                    .iter()
                                    .all(|n| own.contains(&s.join(std::ffi::OsStr::from_bytes(n))))
                        })
        })
        .filter(|s| std::fs::symlink_metadata(s).is_ok_and(|m| !m.file_type().is_symlink()))
        .cloned()
        .collect()
}

/// The device and mount point of each `cairn mount` on this machine, of
/// any repository: a backup of a tree holding one stored every snapshot
/// the mount shows (three or four times each: by date, ID, host and tag),
/// so each backup held all the ones before, again.
pub fn mounts() -> Vec<(u64, PathBuf)> {
    crate::fsmeta::fuse_mounts(MOUNT_FSNAME)
}

/// The name `cairn mount` gives its file systems (their source in the
/// mount table).
pub const MOUNT_FSNAME: &str = "cairn";

/// The device and inode of what [`own_paths`] names (the repository's own
/// files, its cache): a walk that reaches them by another path (a bind
/// mount of the disk) knows them by these.
pub fn own_ids(repo: &Repository) -> Vec<(u64, u64)> {
    let mut paths = repository_files(repo);
    if let Some(dir) = repo.index().path().and_then(|p| p.parent()) {
        paths.push(dir.to_path_buf());
        if let Some(root) = dir.parent() {
            paths.push(root.join(crate::repository::KEY_HINTS));
            paths.push(root.join("CACHEDIR.TAG"));
        }
    }
    paths.iter().filter_map(|p| id_of(p)).collect()
}

/// The device and inode of the file at `p`, if it is there.
pub fn id_of(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// The repository's own files and directories, when it is local: its
/// config and the directory of each kind of object.
pub fn repository_files(repo: &Repository) -> Vec<PathBuf> {
    let Some(root) = repo.backend().local_root() else {
        return Vec::new();
    };
    crate::backend::FileKind::ALL
        .iter()
        .map(|k| root.join(k.dir()))
        .collect()
}

/// The ways a walk of `sources` may name `dir`: as given, with symbolic
/// links and `..` resolved, and below each source that holds it as that
/// source is spelled (a repository given through a link to the watched
/// tree was not recognised).
pub fn spellings(dir: &Path, sources: &[PathBuf]) -> Vec<PathBuf> {
    let given = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(real) = std::fs::canonicalize(dir) else {
        return vec![given];
    };
    let mut out = vec![given, real.clone()];
    for s in sources {
        if let Ok(rest) = std::fs::canonicalize(s)
            .map_err(drop)
            .and_then(|r| real.strip_prefix(&r).map(Path::to_path_buf).map_err(drop))
        {
            out.push(s.join(rest));
        }
    }
    out
}
