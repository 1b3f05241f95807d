//! A local cache in front of a remote backend.
//!
//! Keeps the small, often-read, immutable objects on local disk: key files,
//! snapshots, index files and the packs that hold trees, so that listing
//! snapshots, browsing trees (`ls`, `find`, `diff`, `mount`) and opening the
//! repository do not download data packs again. Every object except the
//! config is named by the BLAKE3 hash of its bytes, so a cached copy is
//! verified against its name when stored and when read whole; a damaged or
//! foreign file is deleted and fetched again. Blobs read from a cached pack
//! are authenticated by AES-GCM as always, and [`Backend::evict`] lets the
//! repository drop a cached pack whose blob failed authentication.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Backend, FileKind, Listed};
use crate::error::{Error, Result};
use crate::id::Id;

/// Wraps `inner`, caching objects under `dir`.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
    /// Objects [`Backend::pin`] is fetching: threads that want the same one
    /// at once wait for the first instead of downloading it again (restore
    /// and recover read trees in parallel; a tree pack is up to 16 MiB).
    fetching: Mutex<HashMap<(FileKind, String), Gate>>,
}

/// Held while one thread fetches an object into the cache; holds the
/// failure of that fetch for the threads that waited on it, so that they
/// report it at once instead of each trying again (and each waiting out
/// the store's retries).
type Gate = Arc<Mutex<Option<Error>>>;

impl CachedBackend {
    /// A cache in `dir` (created on first use) for `inner`.
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf) -> CachedBackend {
        CachedBackend {
            inner,
            dir,
            fetching: Mutex::default(),
        }
    }

    /// Downloads `name` into the cache, checking it against its name.
    fn fetch(&self, kind: FileKind, name: &str) -> Result<()> {
        let data = self.inner.read(kind, name)?;
        if Self::valid_name(name).is_some_and(|id| Id::of_object(&data) != id) {
            return Err(Error::corrupt(
                format!("{} {name}", kind.dir()),
                "content does not match its name",
            ));
        }
        self.put(kind, name, &data);
        Ok(())
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            FileKind::Pack => self
                .dir
                .join("data")
                .join(name.get(..2).unwrap_or("00"))
                .join(name),
            k => self.dir.join(k.dir()).join(name),
        }
    }

    /// Kinds whose whole objects are cached on every read.
    fn caches_whole(kind: FileKind) -> bool {
        matches!(kind, FileKind::Key | FileKind::Snapshot | FileKind::Index)
    }

    fn valid_name(name: &str) -> Option<Id> {
        Id::from_hex(name).ok()
    }

    /// A cached object whose hash matches its name; anything else is removed.
    fn get(&self, kind: FileKind, name: &str) -> Option<Vec<u8>> {
        let id = Self::valid_name(name)?;
        let p = self.path(kind, name);
        let data = fs::read(&p).ok()?;
        if Id::of_object(&data) == id {
            Some(data)
        } else {
            let _ = fs::remove_file(&p);
            None
        }
    }

    /// Stores a copy; the cache is an optimisation, so failures are ignored.
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) {
        let Some(id) = Self::valid_name(name) else {
            return;
        };
        if Id::of_object(data) != id {
            return; // never cache what does not match its name
        }
        let p = self.path(kind, name);
        let _ = write_atomic(&p, data);
    }

    fn remove(&self, kind: FileKind, name: &str) {
        let _ = fs::remove_file(self.path(kind, name));
    }

    /// Drops cached objects of `kind` that the repository no longer lists
    /// (snapshots and index files another machine's prune or forget
    /// deleted, which would stay here for good otherwise).
    fn retain(&self, kind: FileKind, listed: &[Listed]) {
        let keep: std::collections::HashSet<&str> =
            listed.iter().map(|l| l.name.as_str()).collect();
        self.retain_where(kind, |name| keep.contains(name));
    }

    /// The objects of `kind` cached here that `listed` leaves out but the
    /// store still holds, each asked for by name. A listing that lags or
    /// loses entries (an S3-compatible server's paging gone wrong) made a
    /// snapshot look forgotten, whose data `prune` then deleted, and an
    /// index file look gone, whose packs `prune` took for leftovers. An
    /// object deleted elsewhere costs one request, once: it then leaves
    /// the cache.
    fn unlisted_but_stored(&self, kind: FileKind, listed: &[Listed]) -> Result<Vec<Listed>> {
        let names: std::collections::HashSet<&str> =
            listed.iter().map(|l| l.name.as_str()).collect();
        let unlisted: Vec<String> = fs::read_dir(self.dir.join(kind.dir()))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| Self::valid_name(n).is_some() && !names.contains(n.as_str()))
            .collect();
        // Many at once: a prune elsewhere replaces every index file (the
        // sync then fetches as many new ones). Threads of their own, not
        // rayon's: a caller may hold a lock another rayon task waits for.
        let per = unlisted.len().div_ceil(UNLISTED_ASKED_AT_ONCE).max(1);
        let found: Vec<Result<Vec<Listed>>> = std::thread::scope(|s| {
            let asks: Vec<_> = unlisted
                .chunks(per)
                .map(|names| {
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for name in names {
                            if let Some(size) = self.inner.stored_size(kind, name)? {
                                out.push(Listed {
                                    name: name.clone(),
                                    size,
                                    modified: None,
                                });
                            }
                        }
                        Ok(out)
                    })
                })
                .collect();
            asks.into_iter()
                .map(|a| a.join().expect("a listing check panicked"))
                .collect()
        });
        let mut out = Vec::new();
        for f in found {
            out.extend(f?);
        }
        Ok(out)
    }

    /// Drops cached objects of `kind` whose name `keep` refuses. Another
    /// process's copy in the making is left alone until it is an hour old
    /// (then it is one a crash left behind).
    fn retain_where(&self, kind: FileKind, keep: impl Fn(&str) -> bool) {
        let dir = self.dir.join(kind.dir());
        let dirs = match kind {
            FileKind::Pack => fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect(),
            k if Self::caches_whole(k) => vec![dir],
            _ => return,
        };
        for d in dirs {
            for e in fs::read_dir(d).into_iter().flatten().flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                let drop = if n.starts_with(TEMP_PREFIX) {
                    e.metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > TEMP_MAX_AGE))
                } else {
                    !keep(n.as_ref())
                };
                if drop {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Objects [`CachedBackend::unlisted_but_stored`] asks the store about at
/// once.
const UNLISTED_ASKED_AT_ONCE: usize = 16;

/// How a copy being written is named until it is complete.
const TEMP_PREFIX: &str = ".tmp-";

/// Older than this, a copy still being written was abandoned by a crash.
const TEMP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Creates `dir` (and its parents) readable by its owner only: the cache
/// holds the repository's objects, its index, and the paths being backed
/// up, and is kept as private as the repository keeps its files.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn write_atomic(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = p.parent().expect("cache paths have a parent");
    use std::os::unix::fs::OpenOptionsExt;
    create_private_dir(dir)?;
    let tmp = dir.join(format!("{TEMP_PREFIX}{}", Id::random().short()));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, p)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

impl Backend for CachedBackend {
    crate::backend::forward_to_inner!(
        location,
        create,
        exists,
        stale_temporaries,
        is_remote,
        local_root,
        spool,
        replace_config,
        prefetch,
        stored_size
    );
    fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        let mut listed = self.inner.list(kind)?;
        // Key files are left as listed: one missing costs an open, not data.
        if matches!(kind, FileKind::Snapshot | FileKind::Index) {
            let found = self.unlisted_but_stored(kind, &listed)?;
            listed.extend(found);
        }
        // Packs go by the index instead (see `Backend::retain_cached_packs`):
        // one the store lost, not pruned, is still indexed, and this copy
        // may be its only whole one (`repair` puts it back).
        if kind != FileKind::Pack {
            self.retain(kind, &listed);
        }
        Ok(listed)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        if Self::caches_whole(kind) {
            if let Some(d) = self.get(kind, name) {
                return Ok(d);
            }
            let d = self.inner.read(kind, name)?;
            self.put(kind, name, &d);
            return Ok(d);
        }
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if kind == FileKind::Pack
            && let Ok(mut f) = fs::File::open(self.path(kind, name))
        {
            let mut buf = vec![0u8; len as usize];
            if f.seek(SeekFrom::Start(offset)).is_ok() && f.read_exact(&mut buf).is_ok() {
                return Ok(buf);
            }
            // A short cached copy is damaged: drop it and ask the server.
            self.remove(kind, name);
        }
        self.inner.read_range(kind, name, offset, len)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(kind, name, data)?;
        if Self::caches_whole(kind) {
            self.put(kind, name, data);
        }
        Ok(())
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)?;
        self.remove(kind, name);
        Ok(())
    }
    fn pin(&self, kind: FileKind, name: &str) -> Result<()> {
        if self.path(kind, name).exists() {
            return Ok(());
        }
        let key = (kind, name.to_string());
        let gate = self
            .fetching
            .lock()
            .expect("fetching")
            .entry(key.clone())
            .or_default()
            .clone();
        let mut held = gate.lock().unwrap_or_else(|p| p.into_inner());
        // Whoever held the gate before may have fetched it meanwhile, or
        // failed to.
        let r = if self.path(kind, name).exists() {
            Ok(())
        } else if let Some(failed) = held.as_ref() {
            Err(failed.replica())
        } else {
            let r = self.fetch(kind, name);
            if let Err(e) = &r {
                *held = Some(e.replica());
            }
            r
        };
        drop(held);
        // An object whose content does not match its name stays damaged:
        // its gate (holding the error) is kept, so that later pins fail at
        // once instead of downloading it again (the caller reads what it
        // needs by range). Other failures may pass: a later pin tries again.
        let damaged = matches!(r, Err(Error::Corrupt { .. }));
        let mut fetching = self.fetching.lock().expect("fetching");
        // Threads still waiting on this gate hold it and read its outcome
        // there; a pin after now starts afresh. (Counting the gate's
        // holders instead left it in place when two threads finished at
        // once, each seeing the other's: a passing failure then failed
        // every later pin until the process ended.)
        if !damaged && fetching.get(&key).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
            fetching.remove(&key);
        }
        r
    }
    fn cached_copy(&self, kind: FileKind, name: &str) -> Option<Vec<u8>> {
        self.get(kind, name)
    }
    fn evict(&self, kind: FileKind, name: &str) -> bool {
        let p = self.path(kind, name);
        fs::remove_file(p).is_ok()
    }
    fn retain_cached_packs(&self, keep: &dyn Fn(&Id) -> bool) -> bool {
        self.retain_where(FileKind::Pack, |name| {
            Id::from_hex(name).is_ok_and(|id| keep(&id))
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A slow store that counts whole-object reads.
    struct Counting {
        inner: LocalBackend,
        reads: AtomicUsize,
    }

    impl Backend for Counting {
        crate::backend::forward_to_inner!(
            location,
            create,
            exists,
            list,
            read_range,
            write,
            delete,
            stored_size,
        );
        fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(100));
            self.inner.read(kind, name)
        }
    }

    #[test]
    fn threads_pinning_one_object_download_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting {
            inner: LocalBackend::new(dir.path().join("repo")),
            reads: AtomicUsize::new(0),
        });
        let data = vec![7u8; 100_000];
        let name = Id::of_object(&data).to_hex();
        store.create().unwrap();
        store.write(FileKind::Pack, &name, &data).unwrap();
        let cached = CachedBackend::new(store.clone(), dir.path().join("cache"));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| cached.pin(FileKind::Pack, &name).unwrap());
            }
        });
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
        assert!(cached.fetching.lock().unwrap().is_empty());
        assert_eq!(
            cached.read_range(FileKind::Pack, &name, 10, 5).unwrap(),
            vec![7u8; 5]
        );
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn threads_waiting_on_a_failed_download_share_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting {
            inner: LocalBackend::new(dir.path().join("repo")),
            reads: AtomicUsize::new(0),
        });
        store.create().unwrap();
        let name = Id::of_object(b"never stored").to_hex();
        let cached = CachedBackend::new(store.clone(), dir.path().join("cache"));
        // Several times: threads that finish at once must not leave the
        // failure behind for later pins.
        for round in 1..=5 {
            let errors: Vec<Error> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| cached.pin(FileKind::Pack, &name).unwrap_err()))
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            // One read failed; the threads that waited for it got its error.
            if round == 1 {
                assert_eq!(store.reads.load(Ordering::SeqCst), 1);
            }
            for e in &errors {
                assert!(matches!(e, Error::Missing(_)), "{e}");
            }
            assert!(cached.fetching.lock().unwrap().is_empty());
        }
        // A later pin tries again.
        let reads = store.reads.load(Ordering::SeqCst);
        assert!(cached.pin(FileKind::Pack, &name).is_err());
        assert_eq!(store.reads.load(Ordering::SeqCst), reads + 1);
        // Unless the object is damaged (its content does not match its
        // name): that is downloaded once.
        store.write(FileKind::Pack, &name, b"other bytes").unwrap();
        for _ in 0..3 {
            let e = cached.pin(FileKind::Pack, &name).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        }
        assert_eq!(store.reads.load(Ordering::SeqCst), reads + 2);
    }

    /// A store whose listings of snapshots leave everything out.
    struct Forgetful {
        inner: LocalBackend,
    }

    impl Backend for Forgetful {
        crate::backend::forward_to_inner!(
            location,
            create,
            exists,
            read,
            read_range,
            write,
            delete,
            stored_size,
        );
        fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
            match kind {
                FileKind::Snapshot => Ok(Vec::new()),
                k => self.inner.list(k),
            }
        }
    }

    #[test]
    fn a_cached_snapshot_the_listing_leaves_out_is_listed_while_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Forgetful {
            inner: LocalBackend::new(dir.path().join("repo")),
        });
        store.create().unwrap();
        let cached = CachedBackend::new(store.clone(), dir.path().join("cache"));
        let names: Vec<String> = [&b"first"[..], b"second record"]
            .iter()
            .map(|d| {
                let name = Id::of_object(d).to_hex();
                cached.write(FileKind::Snapshot, &name, d).unwrap();
                name
            })
            .collect();
        let listed = |c: &CachedBackend| {
            let mut v: Vec<(String, u64)> = c
                .list(FileKind::Snapshot)
                .unwrap()
                .into_iter()
                .map(|l| (l.name, l.size))
                .collect();
            v.sort();
            v
        };
        let mut want = vec![(names[0].clone(), 5), (names[1].clone(), 13)];
        want.sort();
        assert_eq!(listed(&cached), want);
        // Deleted elsewhere: asked for once, then no longer cached.
        store.inner.delete(FileKind::Snapshot, &names[0]).unwrap();
        assert_eq!(listed(&cached), vec![(names[1].clone(), 13)]);
        assert!(cached.get(FileKind::Snapshot, &names[0]).is_none());
        assert!(cached.get(FileKind::Snapshot, &names[1]).is_some());
    }
}
