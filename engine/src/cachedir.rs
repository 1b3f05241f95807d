//! The local cache directories: one per repository ID under the cache root
//! (`~/.cache/cairn/<64 hex digits>/`), holding the local index and, for
//! remote repositories, cached objects.
//!
//! A cache is never authoritative, so removing one costs only the time to
//! rebuild it. Repositories that were deleted, re-created or are no longer
//! used leave theirs behind; [`list`] finds them by when they were last
//! used, which opening a repository records ([`mark_used`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// How long a cache may go unused before it counts as old (30 days, as
/// restic counts).
pub const OLD_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// One repository's cache directory.
#[derive(Debug, Clone)]
pub struct CacheDir {
    /// The repository ID (the directory's name).
    pub id: String,
    /// The directory.
    pub path: PathBuf,
    /// When a command last opened the repository with this cache, or wrote
    /// into it: the newest modification time of the directory and of what
    /// is directly in it.
    pub last_used: SystemTime,
    /// Bytes of the files in it (0 unless sizes were asked for).
    pub bytes: u64,
    /// Where the repository it caches is (its canonical path or URL), as
    /// the first command to use it recorded; `None` for a cache made
    /// before places were recorded. A repository and its copy elsewhere
    /// share the ID: the place tells their caches apart.
    pub place: Option<String>,
}

impl CacheDir {
    /// Whether it went unused for `max_age` or longer, as of `now`.
    pub fn unused_for(&self, max_age: Duration, now: SystemTime) -> bool {
        unused_since(self.last_used, max_age, now)
    }
}

/// Whether `max_age` or more passed from `last_used` to `now`.
fn unused_since(last_used: SystemTime, max_age: Duration, now: SystemTime) -> bool {
    now.duration_since(last_used)
        .is_ok_and(|age| age >= max_age)
}

/// A repository ID as a cache directory is named: 64 lowercase hex digits,
/// and for another copy of the repository `-` and 16 more (see
/// [`for_repository`]). Nothing else under the root is ever listed or
/// removed.
fn is_cache_name(name: &str) -> bool {
    let (id, copy) = name.split_at(name.len().min(64));
    crate::id::is_lower_hex(id, 64)
        && (copy.is_empty()
            || copy
                .strip_prefix('-')
                .is_some_and(|c| crate::id::is_lower_hex(c, 16)))
}

/// The file in a cache directory naming the repository's place.
const PLACE: &str = "place";

/// The cache directory under `root` for the repository `id` at `place`
/// (its canonical path, or its URL): `<id>`, or `<id>-<16 hex digits of
/// the place's hash>` when `<id>` belongs to a copy of the repository at
/// another place. A copy (`cp -a`, `rsync`, a clone) keeps the ID, and two
/// copies in use at once must not share an index: a backup into one found
/// blobs "already stored" that only the other held, and its snapshot lacked
/// them. The first place to use `<id>` claims it (caches made before this
/// was recorded included). The directory is created if need be; one that
/// cannot be is returned all the same, for the index to fail on and the
/// command to go on without a cache.
pub fn for_repository(root: &Path, id: &str, place: &str) -> PathBuf {
    let first = root.join(id);
    match claim(&first, place) {
        Ok(true) => first,
        Ok(false) => {
            let copy = blake3::hash(place.as_bytes()).to_hex();
            let dir = root.join(format!("{id}-{}", &copy[..16]));
            let _ = claim(&dir, place);
            dir
        }
        Err(_) => first,
    }
}

/// Whether cache directory `dir` is `place`'s: it names `place`, or named
/// none and now does (created exclusively, so that of two places claiming
/// at once one wins; the other may read the file still empty, and takes a
/// directory of its own, which costs a rebuild, never a shared index).
fn claim(dir: &Path, place: &str) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = dir.join(PLACE);
    let owner = |bytes: Vec<u8>| bytes == place.as_bytes();
    match std::fs::read(&file) {
        // Left empty by a crash while it was written (older than a claim
        // under way could be): it named no place, and the directory was
        // orphaned for good, its monitoring state with it.
        // Claimed in place under an exclusive lock, which a claim that
        // creates the file takes too: of two that found it empty, the
        // second finds the first's place.
        Ok(b) if b.is_empty() && written_before(&file, Duration::from_secs(60)) => {
            use std::io::{Read, Seek};
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&file)?;
            lock_briefly(&f)?;
            let mut now = Vec::new();
            f.read_to_end(&mut now)?;
            if !now.is_empty() {
                return Ok(owner(now));
            }
            f.rewind()?;
            f.write_all(place.as_bytes())?;
            f.sync_all()?;
            return Ok(true);
        }
        Ok(b) => return Ok(owner(b)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    crate::backend::create_private_dir(dir)?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file);
    match created {
        Ok(mut f) => match lock_briefly(&f)
            .and_then(|()| f.write_all(place.as_bytes()))
            .and_then(|()| f.sync_all())
        {
            Ok(()) => Ok(true),
            // Left empty, it would match no place for good.
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                Err(e)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(owner(std::fs::read(&file)?)),
        Err(e) => Err(e),
    }
}

/// Locks `f` exclusively, waiting a second at most: another claimer holds
/// it for one small write. One held longer (a machine that crashed holding
/// it on a cache shared over NFS) is an error, as any other here (the
/// directory is then used as it is), not a command that hangs.
fn lock_briefly(f: &std::fs::File) -> std::io::Result<()> {
    use rustix::fs::{FlockOperation, flock};
    for _ in 0..20 {
        match flock(f, FlockOperation::NonBlockingLockExclusive) {
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r.map_err(std::io::Error::from),
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::WouldBlock))
}

/// Whether the file at `path` was last written more than `ago` before now.
fn written_before(path: &Path, ago: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > ago))
}

fn newest_mtime(dir: &Path) -> std::io::Result<SystemTime> {
    let mut newest = std::fs::symlink_metadata(dir)?.modified()?;
    for e in std::fs::read_dir(dir)? {
        let Ok(e) = e else { continue };
        if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    Ok(newest)
}

fn bytes_in(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The cache directories under `root`, oldest first; with their sizes if
/// `sizes`. A root that does not exist holds none. Symbolic links and
/// entries not named as a repository ID are left out.
pub fn list(root: &Path, sizes: bool) -> Result<Vec<CacheDir>> {
    let entries = match std::fs::read_dir(root) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read cache directory", root, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io("read cache directory", root, e))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        // file_type does not follow a symbolic link.
        if !is_cache_name(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        // Removed meanwhile by another process: not there.
        let Ok(last_used) = newest_mtime(&path) else {
            continue;
        };
        let bytes = if sizes { bytes_in(&path) } else { 0 };
        let place = std::fs::read(path.join(PLACE))
            .ok()
            .filter(|b| !b.is_empty())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        out.push(CacheDir {
            id: name,
            path,
            last_used,
            bytes,
            place,
        });
    }
    out.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Removes a cache directory if it is still unused for `max_age` as of
/// `now` (a command may have opened its repository since it was listed);
/// whether it was removed. One already gone is not an error.
pub fn remove_if_unused(dir: &CacheDir, max_age: Duration, now: SystemTime) -> Result<bool> {
    let Ok(last_used) = newest_mtime(&dir.path) else {
        return Ok(false);
    };
    if !unused_since(last_used, max_age, now) {
        return Ok(false);
    }
    remove(dir)?;
    Ok(true)
}

/// Removes a cache directory. One already gone is not an error.
fn remove(dir: &CacheDir) -> Result<()> {
    match std::fs::remove_dir_all(&dir.path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove cache directory", &dir.path, e)),
    }
}

/// Replaces the cache file at `path` with `bytes`, written aside and
/// renamed so a reader never sees half of it; a failure is ignored (such
/// files are notes that save work or inform monitors, never needed).
pub(crate) fn write_aside(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    // 0600 as every cache file (docs/security.md): they name paths and hosts.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes));
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, path);
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Records that the repository whose cache is `dir` was opened now (the
/// directory's modification time), so [`list`] does not take the cache of
/// a repository only read from for an old one, and tags the cache root
/// (`CACHEDIR.TAG`). Best effort: a cache that cannot be marked only looks
/// older.
pub fn mark_used(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.set_modified(SystemTime::now());
    }
    if let Some(root) = dir.parent() {
        tag(root);
    }
}

/// The start of a cache directory tag (<https://bford.info/cachedir/>).
const TAG_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Marks the cache root as a cache to other tools: `--exclude-caches`
/// (cairn's, restic's, borg's, tar's) leaves it out of backups of a home.
/// Written aside, as the cache's other files: owner-only, and never seen
/// half-written.
fn tag(root: &Path) {
    let path = root.join("CACHEDIR.TAG");
    if std::fs::read(&path).is_ok_and(|t| t.starts_with(TAG_SIGNATURE)) {
        return;
    }
    let mut text = TAG_SIGNATURE.to_vec();
    text.extend_from_slice(
        b"\n# This file is a cache directory tag created by cairn.\n\
          # For information about cache directory tags, see https://bford.info/cachedir/\n",
    );
    write_aside(&path, &text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_of_a_repository_elsewhere_gets_a_cache_of_its_own() {
        let root = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        // A cache made before places were recorded: the first to come claims it.
        std::fs::create_dir(root.path().join(&id)).unwrap();
        let first = for_repository(root.path(), &id, "/srv/repo");
        assert_eq!(first, root.path().join(&id));
        let copy = for_repository(root.path(), &id, "/media/usb/repo");
        assert_ne!(copy, first);
        assert_eq!(for_repository(root.path(), &id, "/srv/repo"), first);
        assert_eq!(for_repository(root.path(), &id, "/media/usb/repo"), copy);
        let listed: Vec<String> = list(root.path(), false)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(is_cache_name(&format!("{id}-0123456789abcdef")));
        assert!(!is_cache_name(&format!("{id}-0123")));
        assert!(!is_cache_name(&format!("{id}_0123456789abcdef")));
    }

    #[test]
    fn a_place_file_a_crash_left_empty_is_claimed_again() {
        let root = tempfile::tempdir().unwrap();
        let id = "cd".repeat(32);
        let dir = root.path().join(&id);
        std::fs::create_dir(&dir).unwrap();
        let place = dir.join(PLACE);
        std::fs::write(&place, b"").unwrap();
        // One being written now may belong to a claim under way.
        assert_ne!(for_repository(root.path(), &id, "/srv/repo"), dir);
        let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        filetime::set_file_mtime(&place, old).unwrap();
        assert_eq!(for_repository(root.path(), &id, "/srv/repo"), dir);
        assert_eq!(std::fs::read(&place).unwrap(), b"/srv/repo");
    }

    #[test]
    fn lists_only_directories_named_as_repository_ids() {
        let root = tempfile::tempdir().unwrap();
        let id = "ab".repeat(32);
        std::fs::create_dir(root.path().join(&id)).unwrap();
        std::fs::write(root.path().join(&id).join("index.redb"), [0u8; 100]).unwrap();
        std::fs::create_dir(root.path().join("AB".repeat(32))).unwrap();
        std::fs::create_dir(root.path().join("notes")).unwrap();
        std::fs::write(root.path().join("cd".repeat(32)), b"a file").unwrap();
        std::os::unix::fs::symlink(root.path().join(&id), root.path().join("ef".repeat(32)))
            .unwrap();
        let found = list(root.path(), true).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].id, id);
        assert_eq!(found[0].bytes, 100);
        assert!(list(&root.path().join("none"), false).unwrap().is_empty());
    }

    #[test]
    fn last_use_is_the_newest_time_in_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("01".repeat(32));
        std::fs::create_dir(&dir).unwrap();
        let file = std::fs::File::create(dir.join("index.redb")).unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(90 * 24 * 3600);
        file.set_modified(long_ago).unwrap();
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let now = SystemTime::now();
        let found = &list(root.path(), false).unwrap()[0];
        assert!(found.unused_for(OLD_AFTER, now));
        file.set_modified(now).unwrap();
        let found = &list(root.path(), false).unwrap()[0];
        assert!(!found.unused_for(OLD_AFTER, now));
        file.set_modified(long_ago).unwrap();
        mark_used(&dir);
        let found = &list(root.path(), false).unwrap()[0];
        assert!(!found.unused_for(OLD_AFTER, now));
    }
}
