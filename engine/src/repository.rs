//! The repository: the one door the layers above go through.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::audit::{AuditLog, AuditingBackend};
use crate::backend::{AppendOnlyBackend, Backend, CachedBackend, FileKind, Listed, VerifiedWrites};
use crate::blob::BlobLocation;
use crate::config::{Config, InitOptions};
use crate::crypto::{Cipher, MasterKey, SALT_LEN};
use crate::envelope::{ObjectKind, open_msgpack, seal_msgpack};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::indexfile::{IndexFile, IndexPack};
use crate::keyfile::{KdfParams, KeyFile};
use crate::lineage::logical_snapshots;
use crate::localindex::{IndexReader, LocalIndex, SyncStats};
use crate::lock::{self, LockGuard};
use crate::pack;
use crate::snapshot::{PickError, Snapshot, SnapshotFilter};
use crate::tree::{Tree, UnknownTreeFields};

/// Snapshots with their IDs, oldest first.
pub type SnapshotList = Vec<(Id, Snapshot)>;

/// How to open a repository.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Root of the local cache (the redb index lives in `<root>/<repo id>/`).
    /// `None` keeps the index in memory, rebuilt on every open.
    pub cache_dir: Option<PathBuf>,
    /// For remote backends, keep key files, snapshots, index files and tree
    /// packs in `<cache_dir>/<repo id>/objects` (ignored without a cache dir).
    /// `check` turns this off so that it verifies the repository itself.
    pub no_object_cache: bool,
    /// Try the password trimmed of surrounding whitespace too, on each key
    /// file in turn (restic trims one read from a file or a command): tried
    /// only after every key had refused it as it is, a stray space cost a
    /// right password the derivation of every key file, the costliest
    /// (planted by anyone who may add one) too.
    pub trimmed_too: bool,
}

/// Packs named by each index file that prune and `repair index` write.
const PACKS_PER_INDEX_FILE: usize = 1024;
/// Blobs named by each of those files, unless one pack alone has more:
/// readers decompress an index file with a 1 GiB limit (spec §6), and 1024
/// packs of small files (25,000 blobs each, about 125 bytes an entry) went
/// past it, leaving every blob they named unreadable.
const BLOBS_PER_INDEX_FILE: usize = 65_536;

/// An open, unlocked repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    config: Config,
    key_name: String,
    key_append_only: bool,
    index: LocalIndex,
    index_sync: SyncStats,
    pack_salts: Mutex<HashMap<Id, [u8; SALT_LEN]>>,
    dicts: crate::dict::DictCache,
    frames: crate::frames::FrameCache,
    /// Changes not yet in an audit record, and the backend that writes
    /// records (under the one that notes changes).
    audit: Arc<AuditLog>,
    unaudited: Arc<dyn Backend>,
    cache_dir: Option<PathBuf>,
    cache_unusable: Option<String>,
    lock_wait: lock::LockWait,
    /// Set while [`Repository::without_lock_wait`] runs.
    lock_wait_off: std::sync::atomic::AtomicBool,
    warnings: Warnings,
    /// The snapshots the index is known to be complete for: a listing that
    /// brings no other needs no fresh look at `index/` (one LIST on S3).
    indexed_for: Mutex<std::collections::HashSet<Id>>,
    /// The local index file the last sync filled
    /// ([`LocalIndex::file_incarnation`]): another one replaced it (damage
    /// was found), and lacks rows until synced.
    synced_file: AtomicU64,
    /// Held by the sync [`Repository::synced_index`] makes.
    resyncing: Mutex<()>,
    /// Copies of blobs in other packs than the local index names (which
    /// holds one place per blob), gathered from the index files at the
    /// first read that fails: see [`Repository::load_blob_at`].
    other_copies: Mutex<Option<OtherCopies>>,
    /// Headers read to judge the local index after a blob did not open,
    /// by pack (`None`: no header that opens): read once each.
    pack_headers: Mutex<HashMap<Id, Option<Vec<crate::blob::PackedBlob>>>>,
}

/// The index files [`Repository::replace_index_files`] wrote.
#[derive(Debug, Clone, Default)]
pub struct IndexFilesWritten {
    /// Their names.
    pub names: Vec<String>,
    /// Their stored size in all.
    pub bytes: u64,
}

/// Places of blobs besides the one the local index names, by blob.
type OtherCopies = HashMap<Id, Vec<BlobLocation>>;

/// Receives the engine's warnings, one line each.
pub type WarningSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Where the engine says what it passed over without failing (a damaged
/// snapshot record when choosing `latest`), each thing once per session.
#[derive(Default)]
struct Warnings {
    sink: Option<WarningSink>,
    said: Mutex<std::collections::HashSet<String>>,
    /// Snapshot records passed over as unreadable, by why.
    passed_over: Mutex<std::collections::BTreeSet<String>>,
}

impl Warnings {
    fn say(&self, what: String) {
        if let Some(sink) = &self.sink
            && self.said.lock().unwrap().insert(what.clone())
        {
            sink(&what);
        }
    }
}

impl Drop for Repository {
    /// Writes the audit record of what this session changed. A failure
    /// cannot be returned from here: it is reported on standard error.
    fn drop(&mut self) {
        if let Err(e) = self.flush_audit() {
            eprintln!(
                "cairn: warning: the audit record of this command was not written: {}",
                crate::error::printable(&e.to_string())
            );
        }
    }
}

impl crate::dict::DictSource for Repository {
    fn dictionary(&self, id: u32) -> Result<Arc<crate::dict::Dictionary>> {
        self.dicts.get(&*self.backend, &self.key, id)
    }
}

/// A key file as listed by `key list`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Key file ID.
    pub id: String,
    /// Whether this key opened the repository in this session.
    pub current: bool,
    /// Creating user.
    pub username: String,
    /// Creating host.
    pub hostname: String,
    /// Creation time.
    pub created: String,
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Whether the key is restricted to operations that never delete data.
    pub append_only: bool,
}

fn config_exists(backend: &dyn Backend) -> Result<bool> {
    backend.exists(FileKind::Config, "config")
}

fn write_key(
    backend: &dyn Backend,
    key: &MasterKey,
    password: &[u8],
    params: KdfParams,
    append_only: bool,
    replaces: Option<&str>,
) -> Result<String> {
    let mut kf = KeyFile::create(key, password, params, append_only)?;
    kf.replaces = replaces.map(str::to_string);
    let bytes = kf.to_bytes();
    let name = Id::of_object(&bytes).to_hex();
    backend.write(FileKind::Key, &name, &bytes)?;
    // From the storage: a remote repository's cache keeps what was written.
    backend.evict(FileKind::Key, &name);
    // Read back and opened before a command goes on (and `key passwd`
    // removes the old key): a write's size check does not show a key file
    // that no password opens, and the only key lost that way loses the
    // repository.
    let back = backend
        .read(FileKind::Key, &name)
        .and_then(|d| KeyFile::from_bytes(&d, &name))
        .and_then(|kf| Ok((kf.append_only, kf.open(password, &name)?)));
    let why = match back {
        Ok((a, Some(m))) if a == append_only && m.same_as(key) => return Ok(name),
        Ok(_) => "it does not open with its password".to_string(),
        Err(e) => e.to_string(),
    };
    // Ours, and no use to anyone (where storage refuses, check names it).
    let _ = backend.delete(FileKind::Key, &name);
    Err(Error::corrupt(
        format!("key {}", short(&name)),
        format!("written, but read back {why}: the storage did not keep it; no key was removed"),
    ))
}

/// The bytes of the listed key file `l`, unread if it is larger than a
/// key file can be ([`crate::keyfile::MAX_KEY_FILE`]; an error then).
pub(crate) fn read_key(backend: &dyn Backend, l: &Listed) -> Result<Vec<u8>> {
    if l.size > crate::keyfile::MAX_KEY_FILE {
        return Err(crate::keyfile::too_large(&l.name, l.size));
    }
    backend.read(FileKind::Key, &l.name)
}

/// The directory of the cache's root that holds [`key_hint_path`]s.
pub const KEY_HINTS: &str = "key-hints";

/// Where the local cache keeps the name of the key file that last opened
/// the repository at `location` (its ID is in the config, which that key
/// opens): [`Repository::open`] tries it first.
fn key_hint_path(open: &OpenOptions, location: &str) -> Option<PathBuf> {
    let root = open.cache_dir.as_ref()?;
    let name = blake3::hash(location.as_bytes()).to_hex();
    Some(root.join(KEY_HINTS).join(name.as_str()))
}

/// The error for a repository whose config is gone while its snapshots or
/// packs are there: it is damaged, not absent, and advice fit for an empty
/// or half-made one (`init`, removing the directory) would destroy it.
fn config_lost(backend: &dyn Backend) -> Result<Option<Error>> {
    let snapshots = backend.list(FileKind::Snapshot).unwrap_or_default().len();
    let packs = backend.list(FileKind::Pack).unwrap_or_default().len();
    if snapshots + packs == 0 {
        return Ok(None);
    }
    Ok(Some(Error::corrupt(
        "config",
        format!(
            "{} has no config, but holds {snapshots} snapshot(s) and {packs} pack(s): the \
             repository is damaged, not absent. Do not remove it or run `init` over it; put \
             the `config` file back from a copy of the repository (docs/recovery.md)",
            backend.location()
        ),
    )))
}

/// The key files of an interrupted `init` at this place (key files, no
/// config, no data) that `password` opens, by name with their bytes, for
/// this `init` to remove; empty if there are no key files. Their master key is
/// not taken up: nothing was written with it, and a key file put there by
/// someone else (a copy of this password's key to another repository, whose
/// other key holders know its master key) would have made the new
/// repository readable to them. Key files it does not open are another
/// `init`'s, under way or interrupted: refused, as removing them could break
/// the repository that one is creating.
fn interrupted_init_keys(backend: &dyn Backend, password: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let keys = backend.list(FileKind::Key).unwrap_or_default();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // The key files will be removed or refused on what else is there: a
    // listing that fails must not pass for an empty repository (an
    // interrupted `init` made every directory before its key file).
    for kind in [FileKind::Snapshot, FileKind::Pack] {
        if !backend.list(kind)?.is_empty() {
            return Err(config_lost(backend)?.unwrap_or_else(|| {
                Error::corrupt("config", format!("{} has no config", backend.location()))
            }));
        }
    }
    let mut found = Vec::new();
    let mut others = Vec::new();
    for l in &keys {
        let data = match read_key(backend, l) {
            Ok(data) => data,
            Err(Error::Missing(_)) => continue,
            Err(Error::Corrupt { .. }) => {
                others.push(l);
                continue;
            }
            Err(e) => return Err(e),
        };
        let opens = KeyFile::from_bytes(&data, &l.name)
            .ok()
            .filter(|kf| !kf.append_only)
            .is_some_and(|kf| kf.open(password, &l.name).ok().flatten().is_some());
        if opens {
            found.push((l.name.clone(), data));
        } else {
            others.push(l);
        }
    }
    if others.is_empty() {
        return Ok(found);
    }
    // Another `init` writes its key, derives, then writes the config: a
    // young key file may be one under way, whose repository the usual
    // advice would have the user delete.
    let young = others.iter().any(|k| {
        k.modified
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < std::time::Duration::from_secs(600))
    });
    // On S3 a "directory" is every object under the prefix.
    let place = if backend.is_remote() {
        "delete every object under that prefix"
    } else {
        "remove that directory"
    };
    Err(Error::InvalidInput(if young {
        format!(
            "a repository is already being created at {} (a key file that this password does \
             not open, but no config yet, written in the last 10 minutes): another `init` is \
             probably under way; if none is, run `init` again with the password of the one \
             that was interrupted, or {place} and run `init` again",
            backend.location()
        )
    } else {
        format!(
            "{} holds key files but no config (and no snapshot or pack): an earlier `init` was \
             interrupted; run `init` again with its password, or {place} and run `init` \
             again",
            backend.location()
        )
    }))
}

impl Repository {
    /// Creates a new repository on `backend` protected by `password`.
    /// Where an earlier `init` with the same password was interrupted
    /// after writing its key file, this one removes that key file (and
    /// makes a new master key).
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
        open: &OpenOptions,
    ) -> Result<Repository> {
        if config_exists(&*backend)? {
            return Err(Error::RepositoryExists(backend.location()));
        }
        if let Some(why) = config_lost(&*backend)? {
            return Err(why);
        }
        if password.is_empty() {
            return Err(Error::InvalidInput(
                "an empty password is not allowed".into(),
            ));
        }
        // Key files without a config are what an interrupted `init` leaves.
        // Run again with its password, this one removes them.
        let leftovers = interrupted_init_keys(&*backend, password)?;
        let key = MasterKey::generate();
        let config = Config {
            version: opts.format_version,
            id: Id::random(),
            chunker: opts.chunker.clone(),
            compression_level: opts.compression_level,
            pack_size: opts.pack_size,
            created: chrono::Utc::now().to_rfc3339(),
            append_only: opts.append_only,
        };
        config.validate()?;
        backend.create()?;
        // The key file and the config are checked against what the store
        // kept, as every write of an open repository is: a short key file
        // would lock the repository for good.
        let checked = VerifiedWrites::new(backend.clone());
        let key_name = write_key(&checked, &key, password, opts.kdf, false, None)?;
        // The leftovers go before the config: once it is there, every key
        // file must open it (a kill in between leaves this init's own key
        // file, a leftover for the next).
        for (name, _) in &leftovers {
            match backend.delete(FileKind::Key, name) {
                Ok(()) | Err(Error::Missing(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // The config is written last: a crash before this leaves no repository.
        let written = checked.write(
            FileKind::Config,
            "config",
            &seal_msgpack(&key, ObjectKind::Config, &config),
        );
        if let Err(e) = written {
            // Another `init` won the race: its repository must not list a
            // key of a master key it never had, and gets back its own key
            // file if this one took it for a leftover (an `init` with the
            // same password, under way).
            if matches!(e, Error::RepositoryExists(_)) {
                for (name, data) in &leftovers {
                    let _ = backend.write(FileKind::Key, name, data);
                }
                let _ = backend.delete(FileKind::Key, &key_name);
            }
            return Err(e);
        }
        let repo = Self::finish_open(backend, key, key_name.clone(), false, config, open)?;
        repo.audit.note(FileKind::Key, &key_name, 0, true);
        for (name, _) in &leftovers {
            repo.audit.note(FileKind::Key, name, 0, false);
        }
        repo.audit.note(FileKind::Config, "config", 0, true);
        Ok(repo)
    }

    /// Writes an audit record of the changes made since the last one (if
    /// any). Closing the repository does this too; a long-running command
    /// calls it after each snapshot.
    pub fn flush_audit(&self) -> Result<()> {
        self.audit
            .flush(&*self.unaudited, &self.key, &self.key_name)
    }

    /// Names, in the open audit record of the changes to come, the
    /// snapshot records they delete (before the first of them).
    pub(crate) fn audit_removing_snapshots(&self, ids: &[Id]) {
        let hex: Vec<String> = ids.iter().map(Id::to_hex).collect();
        self.audit.removing_snapshots(&hex);
    }

    /// Opens the repository on `backend` with `password`.
    pub fn open(
        backend: Arc<dyn Backend>,
        password: &[u8],
        open: &OpenOptions,
    ) -> Result<Repository> {
        if !config_exists(&*backend)? {
            if let Some(why) = config_lost(&*backend)? {
                return Err(why);
            }
            return Err(Error::RepositoryNotFound(backend.location()));
        }
        let data = backend.read(FileKind::Config, "config")?;
        let hint_at = key_hint_path(open, &backend.location());
        let hint = hint_at
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        let hint = hint.as_deref().map(str::trim);
        let trimmed = password.trim_ascii();
        let mut passwords = vec![password];
        if open.trimmed_too && trimmed.len() != password.len() && !trimmed.is_empty() {
            passwords.push(trimmed);
        }
        let (key, key_name, key_append_only, config) =
            Self::find_key(&*backend, &passwords, &data, hint)?;
        config.validate()?;
        if let Some(at) = hint_at.filter(|_| hint != Some(key_name.as_str())) {
            // Only saves work: a cache that cannot take it goes without.
            if let Some(dir) = at.parent()
                && crate::backend::create_private_dir(dir).is_ok()
            {
                crate::cachedir::write_aside(&at, key_name.as_bytes());
            }
        }
        Self::finish_open(backend, key, key_name, key_append_only, config, open)
    }

    /// Finds a key file that one of `passwords` opens and whose master key
    /// authenticates the config (a key left by an interrupted `init` of
    /// another repository at the same place unwraps, but does not fit),
    /// trying the key file named `hint` first.
    fn find_key(
        backend: &dyn Backend,
        passwords: &[&[u8]],
        config: &[u8],
        hint: Option<&str>,
    ) -> Result<(MasterKey, String, bool, Config)> {
        let mut damaged = Vec::new();
        let mut config_err = None;
        let keys = backend.list(FileKind::Key)?;
        let mut parsed = Vec::with_capacity(keys.len());
        for l in &keys {
            let data = match read_key(backend, l) {
                Ok(d) => d,
                // Removed since it was listed (a `key passwd` elsewhere).
                Err(Error::Missing(_)) => continue,
                Err(e @ Error::Corrupt { .. }) => {
                    damaged.push(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match KeyFile::from_bytes(&data, &l.name) {
                Ok(kf) => parsed.push((l, data, kf)),
                Err(e) => damaged.push(e),
            }
        }
        // Cheapest first: a key file written with the costliest parameters
        // the limits allow (anyone holding a key, an append-only one too,
        // can add one) would otherwise cost every open minutes and
        // gigabytes when its name sorts first.
        // The one that opened it last goes first: key files cheaper than
        // the real one, added by anyone who may add one, were all tried
        // before it (a hundred of them took a right password's open from
        // 0.1 to 12 s).
        parsed.sort_by_key(|(l, _, kf)| (Some(l.name.as_str()) != hint, kf.cost(), l.name.clone()));
        for (l, data, kf) in parsed {
            let mut opened = Ok(None);
            for password in passwords {
                opened = kf.open(password, &l.name);
                if !matches!(opened, Ok(None)) {
                    break;
                }
            }
            match opened {
                Ok(Some(k)) => {
                    match open_msgpack::<Config>(&k, ObjectKind::Config, config, "config") {
                        Ok(c) => return Ok((k, l.name.clone(), kf.append_only, c)),
                        Err(e) => {
                            // A newer format whose fields changed, not damage
                            // (whose advice, putting an old copy back, would
                            // undo the newer client's work).
                            let newer = open_msgpack::<crate::config::VersionOnly>(
                                &k,
                                ObjectKind::Config,
                                config,
                                "config",
                            )
                            .ok()
                            .and_then(|v| crate::config::unsupported(v.version));
                            if let Some(newer) = newer {
                                return Err(newer);
                            }
                            config_err = Some((e, l.name.clone()));
                        }
                    }
                }
                // Not this password's, or damaged where only its name tells.
                Ok(None) => {
                    if let Err(e) = crate::keyfile::check_name(&data, &l.name) {
                        damaged.push(e);
                    }
                }
                Err(e) => damaged.push(e),
            }
        }
        // A key opened, so the password is right: the config is damaged,
        // or that key was put there from another repository.
        if let Some((e, name)) = config_err {
            const PUT_BACK: &str = "the config is damaged: put the `config` file back from a \
                 copy of the repository's files (docs/recovery.md, section 7)";
            return Err(match e {
                Error::Corrupt { object, reason } if keys.len() > 1 => Error::Corrupt {
                    object,
                    reason: format!(
                        "{reason}: {PUT_BACK}; or key {name}, which this password opens, \
                         belongs to another repository (another key's password opens this one)"
                    ),
                },
                Error::Corrupt { object, reason } => Error::Corrupt {
                    object,
                    reason: format!("{reason}: {PUT_BACK}"),
                },
                e => e,
            });
        }
        // A damaged key file is reported only if no other key fits: as the
        // error when it is the only one, beside the wrong password when
        // the password may be another key's.
        if keys.len() == 1
            && let Some(e) = damaged.pop()
        {
            return Err(e);
        }
        // No password could open it: said as a wrong one, users kept
        // trying others (key files lost, a copy made without keys/).
        if keys.is_empty() {
            return Err(Error::corrupt(
                "keys",
                format!(
                    "{} has no key files: the repository is damaged, or was copied without \
                     its keys/ directory; put the files of keys/ back from a copy of the \
                     repository (docs/recovery.md)",
                    backend.location()
                ),
            ));
        }
        Err(Error::WrongPassword {
            damaged: damaged.iter().map(|e| e.to_string()).collect(),
        })
    }

    fn finish_open(
        backend: Arc<dyn Backend>,
        key: MasterKey,
        key_name: String,
        key_append_only: bool,
        config: Config,
        open: &OpenOptions,
    ) -> Result<Repository> {
        // The backstop under every deleting operation's own check.
        let backend: Arc<dyn Backend> =
            match append_only_reason(config.append_only, key_append_only, &key_name) {
                Some(why) => Arc::new(AppendOnlyBackend::new(backend, why)),
                None => backend,
            };
        // Above the append-only guard: a short object it cannot remove is
        // written over instead.
        let backend: Arc<dyn Backend> = Arc::new(VerifiedWrites::new(backend));
        // The cache only saves work: one that cannot be used (a file in the
        // way, a read-only home) is done without, as with `--no-cache`.
        // Named by the repository's ID and, for a copy of it elsewhere,
        // its place (see `cachedir::for_repository`).
        let cache_dir = open.cache_dir.as_ref().map(|root| {
            let place = backend.location();
            let place = match backend.is_remote() {
                true => place,
                false => std::fs::canonicalize(&place)
                    .map(|p| p.display().to_string())
                    .unwrap_or(place),
            };
            crate::cachedir::for_repository(root, &config.id.to_hex(), &place)
        });
        let (mut index, mut cache_dir, mut cache_unusable) = match cache_dir {
            Some(dir) => match LocalIndex::open(&dir.join("index.redb")) {
                Ok(index) => {
                    crate::cachedir::mark_used(&dir);
                    (index, Some(dir), None)
                }
                Err(e) => (LocalIndex::in_memory()?, None, Some(e.to_string())),
            },
            None => (LocalIndex::in_memory()?, None, None),
        };
        let uncached = backend;
        let with_cache = |cache_dir: &Option<PathBuf>| -> Arc<dyn Backend> {
            match cache_dir {
                Some(dir) if uncached.is_remote() && !open.no_object_cache => {
                    Arc::new(CachedBackend::new(uncached.clone(), dir.join("objects")))
                }
                _ => uncached.clone(),
            }
        };
        let mut backend = with_cache(&cache_dir);
        let index_sync = match sync_index(&index, &*backend, &key) {
            // The cache's disk failed (full): go on as without a cache.
            Err(e) if e.is_cache_io() => {
                cache_unusable = Some(e.to_string());
                cache_dir = None;
                index = LocalIndex::in_memory()?;
                backend = with_cache(&cache_dir);
                sync_index(&index, &*backend, &key)?
            }
            r => r?,
        };
        let synced_file = index.file_incarnation();
        let audit = Arc::new(AuditLog::default());
        let unaudited = backend;
        let backend: Arc<dyn Backend> = Arc::new(AuditingBackend::new(
            unaudited.clone(),
            audit.clone(),
            key.clone(),
            key_name.clone(),
        ));
        Ok(Repository {
            audit,
            unaudited,
            cache_dir,
            cache_unusable,
            backend,
            key,
            config,
            key_name,
            key_append_only,
            index,
            index_sync,
            pack_salts: Mutex::new(HashMap::new()),
            frames: Default::default(),
            dicts: crate::dict::DictCache::new(),
            lock_wait: Default::default(),
            lock_wait_off: Default::default(),
            warnings: Warnings::default(),
            indexed_for: Default::default(),
            synced_file: synced_file.into(),
            resyncing: Mutex::new(()),
            other_copies: Default::default(),
            pack_headers: Default::default(),
        })
    }

    /// Where to say what the engine passes over without failing (for
    /// example a snapshot record that cannot be read when `latest` is
    /// chosen); each warning is given once. Without it, nothing is said.
    pub fn set_warnings(&mut self, sink: WarningSink) {
        self.warnings.sink = Some(sink);
    }

    /// Why each snapshot record that [`Repository::readable_snapshots`]
    /// passed over (it cannot be read) could not be read, so far in this
    /// session: a command that chose or searched snapshots without them
    /// (`latest`, `find`, `stats`) did not see them all, and says so by
    /// its exit code.
    pub fn passed_over_records(&self) -> Vec<String> {
        let passed = self.warnings.passed_over.lock().expect("passed over");
        passed.iter().cloned().collect()
    }

    /// Makes [`Repository::lock`] wait for conflicting locks held by
    /// others, as `wait` says, instead of failing at once.
    pub fn set_lock_wait(&mut self, wait: lock::LockWait) {
        self.lock_wait = wait;
    }

    /// Runs `f` with locks taken at once or not at all, whatever
    /// [`Repository::set_lock_wait`] said: for the upkeep of a long-running
    /// command, which must not hold its own work up (a watch that waited
    /// half an hour for another host's backup to end took no snapshot
    /// meanwhile), and is tried again later anyway.
    pub fn without_lock_wait<T>(&self, f: impl FnOnce() -> T) -> T {
        struct On<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for On<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        self.lock_wait_off.store(true, Ordering::SeqCst);
        let _on = On(&self.lock_wait_off);
        f()
    }

    /// This repository's directory in the local cache (`<root>/<repo id>`),
    /// if it has one.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache_dir.as_deref()
    }

    /// Why the local cache asked for could not be used, if it could not:
    /// the repository then works as if opened without one.
    pub fn cache_unusable(&self) -> Option<&str> {
        self.cache_unusable.as_deref()
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The master key set.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The repository config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config as the repository holds it now (read again: `cairn
    /// config` elsewhere may have changed it since this was opened).
    pub fn current_config(&self) -> Result<Config> {
        let data = self.backend.read(FileKind::Config, "config")?;
        open_msgpack::<Config>(&self.key, ObjectKind::Config, &data, "config")
    }

    /// Whether the key that opened the repository is append-only.
    pub fn key_is_append_only(&self) -> bool {
        self.key_append_only
    }

    /// Refuses a local repository that lost one of its directories (a
    /// backup there would deduplicate against packs that are gone). A
    /// remote store has no directories to lose.
    pub fn ensure_whole(&self) -> Result<()> {
        match self.backend.local_root() {
            Some(root) => crate::backend::ensure_layout(root),
            None => Ok(()),
        }
    }

    /// Fails with [`Error::AppendOnly`] if the repository or the key in use
    /// is append-only; `what` names the operation for the message. Every
    /// operation that deletes or replaces objects (other than its own locks)
    /// calls this after taking its lock and before writing anything. The
    /// config is read again, so a switch made since the repository was opened
    /// counts (switching takes the exclusive lock).
    pub fn ensure_may_delete(&self, what: &str) -> Result<()> {
        let data = self.backend.read(FileKind::Config, "config")?;
        let config: Config = open_msgpack(&self.key, ObjectKind::Config, &data, "config")?;
        if config.id != self.config.id {
            return Err(Error::corrupt(
                "config",
                "the repository ID changed while it was open",
            ));
        }
        match append_only_reason(config.append_only, self.key_append_only, &self.key_name) {
            Some(why) => {
                let hint = if self.key_append_only {
                    "use a key that is not append-only"
                } else {
                    "`cairn config append-only off` lifts it"
                };
                Err(Error::AppendOnly(format!(
                    "{why}: {what} would delete data ({hint}; see docs/append-only.md)"
                )))
            }
            None => Ok(()),
        }
    }

    /// Switches the repository-wide append-only mode; returns whether the
    /// config changed. Switching it off needs a key that is not append-only.
    /// The config is replaced atomically under the exclusive lock, with
    /// every other field unchanged.
    pub fn set_append_only(&mut self, on: bool) -> Result<bool> {
        if !on && self.key_append_only {
            return Err(Error::AppendOnly(format!(
                "the key in use ({}) is append-only: switching append-only mode off needs a key that is not",
                short(&self.key_name)
            )));
        }
        self.rewrite_config(|c| {
            let changed = c.append_only != on;
            c.append_only = on;
            Ok(changed)
        })
    }

    /// Raises the repository's format version to `version` (never lowers
    /// it: objects of the current version may exist). Clients that read
    /// only older versions refuse the repository from then on; this one
    /// writes what the new version allows (format version 3: small files
    /// compressed together) from its next backup. Needs a key that is not
    /// append-only, in a repository that is not append-only. Returns
    /// whether the version changed.
    pub fn raise_format_version(&mut self, version: u32) -> Result<bool> {
        if version > crate::config::FORMAT_VERSION {
            return Err(Error::InvalidInput(format!(
                "format version {version} is not known to this cairn (it writes up to {})",
                crate::config::FORMAT_VERSION
            )));
        }
        let lowering = |now: u32| {
            Error::InvalidInput(format!(
                "the repository is format version {now}: a version is never lowered \
                 (objects of version {now} may exist); copy it into a new repository \
                 (`cairn init --format-version {version}`, `cairn copy`) instead"
            ))
        };
        // Versions only go up, so what the open config says is a floor:
        // no lock is needed to answer "unchanged" or refuse to lower.
        match version.cmp(&self.config.version) {
            std::cmp::Ordering::Less => return Err(lowering(self.config.version)),
            std::cmp::Ordering::Equal => return Ok(false),
            std::cmp::Ordering::Greater => {}
        }
        let (key_append_only, key_name) = (self.key_append_only, self.key_name.clone());
        self.rewrite_config(|c| {
            if version < c.version {
                return Err(lowering(c.version));
            }
            if c.version == version {
                return Ok(false);
            }
            // The config as read under the lock: a switch made since the
            // repository was opened counts.
            if let Some(why) = append_only_reason(c.append_only, key_append_only, &key_name) {
                let hint = if key_append_only {
                    "use a key that is not append-only"
                } else {
                    "`cairn config append-only off` lifts it"
                };
                return Err(Error::AppendOnly(format!(
                    "{why}: raising the format version would replace the config ({hint}; see docs/append-only.md)"
                )));
            }
            c.version = version;
            Ok(true)
        })
    }

    /// Reads the config under an exclusive lock, lets `change` edit it and
    /// say whether it changed, and writes it back if so.
    fn rewrite_config(&mut self, change: impl FnOnce(&mut Config) -> Result<bool>) -> Result<bool> {
        let _lock = self.lock(true)?;
        let data = self.backend.read(FileKind::Config, "config")?;
        let payload = crate::envelope::open(&self.key, ObjectKind::Config, &data, "config")?;
        let mut config: Config = crate::envelope::from_msgpack(&payload, "config")?;
        // A newer cairn's fields stay (spec W13: only the one field changes).
        let unknown = crate::unknown::UnknownFields::of(&payload, &crate::config::FIELDS);
        if config.id != self.config.id {
            return Err(Error::corrupt(
                "config",
                "the repository ID changed while it was open",
            ));
        }
        let changed = change(&mut config)?;
        if changed {
            config.validate()?;
            let payload = unknown.appended_to(crate::envelope::to_msgpack(&config));
            self.backend.replace_config(&crate::envelope::seal(
                &self.key,
                ObjectKind::Config,
                &payload,
            ))?;
        }
        self.config = config;
        Ok(changed)
    }

    /// The local index.
    pub fn index(&self) -> &LocalIndex {
        &self.index
    }

    /// What bringing the local index up to date did when the repository was opened.
    pub fn index_sync_stats(&self) -> SyncStats {
        self.index_sync.clone()
    }

    /// Brings the local index up to date with the repository's index files
    /// (a long-running process calls this after taking its lock, since
    /// other processes may have added or pruned data meanwhile).
    pub fn refresh_index(&self) -> Result<SyncStats> {
        let stats = self.sync_local(&*self.backend)?;
        self.index_changed(&stats);
        if !stats.damaged.is_empty() || stats.vanished > 0 {
            // Not known to be complete: the next listing looks again.
            self.indexed_for.lock().expect("indexed for").clear();
        }
        Ok(stats)
    }

    /// [`sync_index`] of the local index through `backend`, noting which
    /// file it filled.
    fn sync_local(&self, backend: &dyn Backend) -> Result<SyncStats> {
        // A long-running process whose file could not be opened again
        // after damage tries it again now and then, not for good never.
        self.index.retry_file();
        // Read before: a file replaced during the sync (another thread
        // found damage) is not the one it filled.
        let file = self.index.file_incarnation();
        let stats = sync_index(&self.index, backend, &self.key)?;
        self.synced_file.store(file, Ordering::SeqCst);
        if let Some(why) = self.index.stand_in_unsaid() {
            self.warnings.say(format!(
                "the local cache {} could not be opened again after damage was found in it \
                 ({why}): an index in memory stands in for it (every row in RAM), and the file \
                 is tried again every 10 minutes",
                self.index
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ));
        }
        Ok(stats)
    }

    /// Whether the local index file was replaced since the last sync
    /// (damage was found in it): it lacks rows until synced again.
    fn index_replaced(&self) -> bool {
        self.index.file_incarnation() != self.synced_file.load(Ordering::SeqCst)
    }

    /// Forgets the other copies found, once a sync took in or dropped
    /// index files: they may name packs gone or miss new copies.
    fn index_changed(&self, stats: &SyncStats) {
        if stats.rebuilt || stats.files_loaded > 0 {
            *self.other_copies.lock().expect("other copies") = None;
        }
    }

    /// [`Repository::lock`], or no lock when `skip` (a dry run told not to
    /// lock, e.g. on a read-only repository).
    pub fn lock_unless(&self, skip: bool, exclusive: bool) -> Result<Option<LockGuard>> {
        if skip {
            return Ok(None);
        }
        self.lock(exclusive).map(Some)
    }

    /// Takes a shared (`exclusive = false`) or exclusive lock, waiting for
    /// others' as [`Repository::set_lock_wait`] said.
    pub fn lock(&self, exclusive: bool) -> Result<LockGuard> {
        let at_once = lock::LockWait::default();
        let wait = if self.lock_wait_off.load(Ordering::SeqCst) {
            &at_once
        } else {
            &self.lock_wait
        };
        let guard = lock::acquire_waiting(self.backend.clone(), &self.key, exclusive, wait)?;
        // The index may have changed since the repository was opened (a prune
        // elsewhere); decisions made under the lock must see the current one.
        self.refresh_index()?;
        Ok(guard)
    }

    fn pack_cipher(&self, pack: &Id) -> Result<Cipher> {
        if let Some(salt) = self.pack_salts.lock().expect("salt cache").get(pack) {
            return Ok(self.key.pack_cipher(salt));
        }
        let prefix =
            self.backend
                .read_range(FileKind::Pack, &pack.to_hex(), 0, pack::PREFIX_LEN as u64)?;
        let salt = pack::parse_prefix(pack, &prefix)?;
        self.pack_salts
            .lock()
            .expect("salt cache")
            .insert(*pack, salt);
        Ok(self.key.pack_cipher(&salt))
    }

    /// Whether new small data blobs are compressed in groups: format
    /// version 3 (older readers refuse such repositories as a whole) and
    /// compression switched on.
    pub fn groups_allowed(&self) -> bool {
        self.config.version >= 3 && self.config.compression_level != 0
    }

    /// Whether new blobs may be compressed with a dictionary: format
    /// version 2 (older readers refuse such repositories as a whole) and
    /// compression switched on.
    pub fn dictionaries_allowed(&self) -> bool {
        self.config.version >= 2 && self.config.compression_level != 0
    }

    /// The dictionary new small data blobs are compressed with: the lowest
    /// ID that loads, so that writers converge on one dictionary even after
    /// concurrent first backups each stored their own. `None` if there is none.
    pub fn writer_dictionary(&self) -> Result<Option<Arc<crate::dict::Dictionary>>> {
        use crate::dict::DictSource;
        for id in crate::dict::list(&*self.backend)? {
            if let Ok(d) = self.dictionary(id) {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// Stores a newly trained dictionary as `dicts/<id>`, then reads it
    /// back and checks it, all before any blob is compressed with it (W14).
    pub fn store_dictionary(&self, bytes: Vec<u8>) -> Result<Arc<crate::dict::Dictionary>> {
        let id = crate::dict::dict_id_of(&bytes)
            .ok_or_else(|| Error::InvalidInput("not a zstd dictionary".into()))?;
        let name = crate::dict::dict_name(id);
        // Dictionaries are immutable: never write over one (IDs are random,
        // so a clash means another writer drew the same ID).
        if self.backend.exists(FileKind::Dict, &name)? {
            return Err(Error::InvalidInput(format!(
                "dictionary dicts/{name} exists already"
            )));
        }
        self.backend
            .write(FileKind::Dict, &name, &crate::dict::seal(&self.key, &bytes))?;
        let stored = crate::dict::read(&*self.backend, &self.key, id)?;
        if stored.bytes != bytes {
            return Err(Error::corrupt(
                format!("dictionary dicts/{name}"),
                "reads back different from what was written",
            ));
        }
        let d = Arc::new(stored);
        self.dicts.insert(d.clone());
        Ok(d)
    }

    /// Where a blob is stored, or [`Error::Missing`].
    pub fn locate(&self, id: &Id) -> Result<BlobLocation> {
        self.index_reader()?.locate(id)
    }

    /// A read view of the local index, synced first if damage found in it
    /// replaced its file since the last sync: a long-running process
    /// (mount, serve) reads on after it.
    pub fn index_reader(&self) -> Result<IndexReader> {
        self.synced_index()?.reader()
    }

    /// The local index, synced first if damage found in it replaced its
    /// file since the last sync (see [`Repository::index_reader`]). A sync
    /// that fails is the error: the new file lacks rows, and a blob taken
    /// for absent there may be stored again or a record judged damaged.
    pub fn synced_index(&self) -> Result<&LocalIndex> {
        if self.index_replaced() {
            // One sync for the threads that found it replaced; but a rayon
            // worker that finds one under way syncs too, rather than wait:
            // the syncing thread may be that very worker, handed this task
            // while it waits in the sync's own parallel load.
            let one = match rayon::current_thread_index() {
                Some(_) => self.resyncing.try_lock().ok(),
                None => Some(self.resyncing.lock().unwrap_or_else(|e| e.into_inner())),
            };
            if self.index_replaced() {
                self.refresh_index()?;
            }
            drop(one);
        }
        Ok(&self.index)
    }

    /// Reads, authenticates, decompresses and verifies a blob.
    pub fn load_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        self.load_blob_at(&loc)
    }

    /// Like [`Repository::load_blob`] for a known location. Where the copy
    /// there is damaged or gone, a copy of the blob in another pack that an
    /// index file names is read instead, with a warning (a blob stored
    /// twice, by backups that raced or one run while the index was lost).
    pub fn load_blob_at(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        let first = self.load_blob_here(loc);
        let Err(e @ (Error::Corrupt { .. } | Error::Missing(_))) = first else {
            return first;
        };
        // A damaged local cache can place a blob wrongly (a flipped bit
        // in its row): the repository was blamed, and check found nothing.
        // The cache is wrong only where the index files place the blob
        // elsewhere; where they agree with it, they are what is damaged.
        let others = self.other_copies(&loc.blob.id, loc);
        let disowned = self.header_disowns(loc);
        let cache_wrong = disowned && self.index.path().is_some() && !others.is_empty();
        let cache_removed = || {
            // Only the file open now, if it holds that row: `loc` may have
            // been read from one damage replaced since, and the file there
            // now (perhaps another process's rebuild) must stay.
            let held = match loc.blob.blob_type {
                crate::blob::BlobType::Tree => self.index.lookup_tree(&loc.blob.id),
                _ => self.index.lookup(&loc.blob.id),
            };
            let here = matches!(held, Ok(Some(l)) if l == *loc);
            let at = here.then(|| self.index.condemn()).flatten();
            format!(
                "the local cache {} placed blob {} where pack {}'s header does not: the cache \
                 is damaged; {}",
                self.index
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                loc.blob.id,
                loc.pack,
                match at {
                    Some(_) =>
                        "it was removed, and the next command rebuilds it from the repository",
                    None => "it has been replaced since",
                }
            )
        };
        for other in others {
            if let Ok(data) = self.load_blob_here(&other) {
                if cache_wrong {
                    self.warnings.say(cache_removed());
                    return Ok(data);
                }
                let what = match e {
                    Error::Missing(_) => "is missing (lost, or deleted by a prune meanwhile)",
                    _ => "is damaged",
                };
                self.warnings.say(format!(
                    "pack {} {what}: blobs in it were read from their copies in other packs \
                     (`cairn check --read-data` says more)",
                    loc.pack
                ));
                return Ok(data);
            }
        }
        if cache_wrong {
            return Err(Error::corrupt("local cache", cache_removed()));
        }
        if disowned {
            return Err(Error::corrupt(
                format!("pack {}", loc.pack),
                format!(
                    "its header does not hold blob {} where the index files place it: run \
                     `cairn repair index` ({e})",
                    loc.blob.id
                ),
            ));
        }
        Err(e)
    }

    /// Whether pack `loc.pack` is there with a header that opens and does
    /// not hold `loc.blob` as the local index gave it.
    fn header_disowns(&self, loc: &BlobLocation) -> bool {
        let mut headers = self.pack_headers.lock().expect("pack headers");
        let header = headers.entry(loc.pack).or_insert_with(|| {
            let name = loc.pack.to_hex();
            match self.backend.stored_size(FileKind::Pack, &name) {
                Ok(Some(size)) => read_pack_header(self, &name, size).ok().map(|p| p.blobs),
                _ => None,
            }
        });
        header
            .as_ref()
            .is_some_and(|blobs| !blobs.contains(&loc.blob))
    }

    /// The places besides `loc` where an index file puts blob `id`.
    fn other_copies(&self, id: &Id, loc: &BlobLocation) -> Vec<BlobLocation> {
        let mut held = self.other_copies.lock().expect("other copies");
        if held.is_none() {
            // Not kept when it fails: the next damaged read looks again.
            *held = self.find_other_copies().ok();
        }
        held.as_ref()
            .and_then(|copies| copies.get(id))
            .map(|places| places.iter().filter(|l| *l != loc).copied().collect())
            .unwrap_or_default()
    }

    /// Every place of each blob that an index file places elsewhere than
    /// the local index does (that place included): one pass over the index
    /// files, keeping only blobs stored more than once (few, unless backups
    /// raced). Index files that are damaged are left out (check names them).
    fn find_other_copies(&self) -> Result<OtherCopies> {
        let reader = self.index.reader()?;
        let mut out: HashMap<Id, Vec<BlobLocation>> = HashMap::new();
        for l in self.backend.list(FileKind::Index)? {
            let Ok(name) = Id::from_hex(&l.name) else {
                continue;
            };
            let file = match crate::localindex::load_index_file(&*self.backend, &self.key, &name) {
                Ok(f) => f,
                Err(Error::Corrupt { .. } | Error::Missing(_)) => continue,
                Err(e) => return Err(e),
            };
            for p in file.packs {
                for b in p.blobs {
                    let first = match b.blob_type {
                        crate::blob::BlobType::Tree => reader.lookup_tree(&b.id)?,
                        crate::blob::BlobType::Data => reader.lookup(&b.id)?,
                    };
                    let here = BlobLocation {
                        pack: p.id,
                        blob: b,
                    };
                    if let Some(first) = first.filter(|f| *f != here) {
                        let places = out.entry(b.id).or_default();
                        if places.is_empty() {
                            places.push(first);
                        }
                        places.push(here);
                    }
                }
            }
        }
        Ok(out)
    }

    /// [`Repository::load_blob_at`] without looking for other copies:
    /// what verifies the copy at `loc` itself (prune, before it deletes
    /// another copy).
    pub(crate) fn load_blob_here(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        match self.load_blob_once(loc) {
            // A damaged local copy of a cached pack: drop it, ask the server.
            Err(Error::Corrupt { .. })
                if self.backend.evict(FileKind::Pack, &loc.pack.to_hex()) =>
            {
                self.pack_salts
                    .lock()
                    .expect("salt cache")
                    .remove(&loc.pack);
                self.load_blob_once(loc)
            }
            r => r,
        }
    }

    fn load_blob_once(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        if loc.blob.in_group()
            && let Some(frame) = self.frames.get(&loc.pack, loc.blob.offset)
        {
            return pack::group_member(&self.key, &loc.blob, &frame, &loc.pack).map(<[u8]>::to_vec);
        }
        let ct = self
            .backend
            .read_range(
                FileKind::Pack,
                &loc.pack.to_hex(),
                loc.blob.offset as u64,
                loc.blob.length as u64,
            )
            .map_err(|e| match e {
                Error::Missing(_) => {
                    Error::Missing(format!("pack {} (holding blob {})", loc.pack, loc.blob.id))
                }
                e => e,
            })?;
        self.open_blob_at(loc, &ct)
    }

    /// Authenticates, decompresses and verifies a blob from its ciphertext
    /// `ct`, read by the caller from where `loc` says.
    pub fn open_blob_at(&self, loc: &BlobLocation, ct: &[u8]) -> Result<Vec<u8>> {
        let cipher = self.pack_cipher(&loc.pack)?;
        if loc.blob.in_group() {
            let frame = self.frames.get_or_open(&loc.pack, loc.blob.offset, || {
                pack::open_frame(&cipher, &loc.blob, ct, &loc.pack)
            })?;
            return pack::group_member(&self.key, &loc.blob, &frame, &loc.pack).map(<[u8]>::to_vec);
        }
        pack::open_blob(&self.key, &cipher, &loc.blob, ct, &loc.pack, self)
    }

    /// Loads and decodes a tree blob.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        self.load_tree_in(&self.index_reader()?, id)
    }

    /// Like [`Repository::load_tree`], looked up in `index`: a read view
    /// the caller holds for many loads (each new view is a transaction).
    pub fn load_tree_in(&self, index: &IndexReader, id: &Id) -> Result<Tree> {
        self.load_tree_at(&index.locate_tree(id)?)
    }

    /// Like [`Repository::load_tree`] for a location the caller looked up
    /// (in an [`IndexReader`] it holds).
    pub fn load_tree_at(&self, loc: &BlobLocation) -> Result<Tree> {
        self.load_tree_from(loc, true)
    }

    /// Like [`Repository::load_tree_at`], reading the copy at `loc` only
    /// (no other copy when it is damaged or gone): for `check`, which must
    /// name a damaged copy that a restore reads around.
    pub fn load_tree_here(&self, loc: &BlobLocation) -> Result<Tree> {
        self.load_tree_from(loc, false)
    }

    fn load_tree_from(&self, loc: &BlobLocation, other_copies: bool) -> Result<Tree> {
        let data = self.tree_plaintext(loc, other_copies)?;
        Tree::decode(&data, &format!("tree {}", loc.blob.id))
    }

    /// Like [`Repository::load_tree`], with what the tree holds that this
    /// build does not know (a newer cairn wrote it), for a command that
    /// writes the tree again (`copy`) and must keep it.
    pub fn load_tree_keeping(&self, id: &Id) -> Result<(Tree, UnknownTreeFields)> {
        let loc = self.index_reader()?.locate_tree(id)?;
        let data = self.tree_plaintext(&loc, true)?;
        let tree = Tree::decode(&data, &format!("tree {id}"))?;
        Ok((tree, UnknownTreeFields::of(&data)))
    }

    /// The plaintext of the tree blob at `loc`; `other_copies` as in
    /// [`Repository::load_blob_at`].
    fn tree_plaintext(&self, loc: &BlobLocation, other_copies: bool) -> Result<Vec<u8>> {
        // The stored type does not matter: a file with the same bytes as a
        // tree is the same blob, and the keyed hash proves the content.
        // Trees are read again and again (ls, find, diff, mount, the next
        // backup's parent): keep their packs local when the backend is
        // remote. A pack damaged elsewhere cannot be kept, but may still
        // hold this tree intact: it is read from the server by range.
        // A pack that is gone may have a copy of the tree elsewhere.
        match self.backend.pin(FileKind::Pack, &loc.pack.to_hex()) {
            Ok(()) | Err(Error::Corrupt { .. } | Error::Missing(_)) => {}
            Err(e) => return Err(e),
        }
        if other_copies {
            self.load_blob_at(loc)
        } else {
            self.load_blob_here(loc)
        }
    }

    /// Replaces the index files named `old` with new ones naming `packs`
    /// (1024 packs or 65,536 blobs per file, each listing `old` as
    /// superseded), as prune and
    /// `repair index` do; returns the files written. The
    /// new files stay only if `lock` still holds once they are written
    /// (else another prune may delete the packs they name: they are taken
    /// back and the old ones stay); each old file is removed only while the
    /// lock is fresh, since until the last is gone a backup that ignored
    /// the lock could still deduplicate against a pack about to go.
    /// `gone` names files an earlier step already replaced and deleted,
    /// listed as superseded too (not deleted again).
    pub fn replace_index_files(
        &self,
        lock: &LockGuard,
        packs: &[IndexPack],
        old: &[String],
        gone: &[String],
    ) -> Result<IndexFilesWritten> {
        let supersedes: Vec<Id> = old
            .iter()
            .chain(gone)
            .filter_map(|n| Id::from_hex(n).ok())
            .collect();
        let mut written = Vec::new();
        let mut bytes = 0;
        for chunk in index_file_runs(packs, PACKS_PER_INDEX_FILE, BLOBS_PER_INDEX_FILE) {
            let f = IndexFile {
                packs: chunk.to_vec(),
                supersedes: supersedes.clone(),
            };
            let data = seal_msgpack(&self.key, ObjectKind::Index, &f);
            let name = Id::of_object(&data).to_hex();
            self.backend.write(FileKind::Index, &name, &data)?;
            written.push(name);
            bytes += data.len() as u64;
        }
        if let Err(e) = lock.check() {
            for name in &written {
                let _ = self.backend.delete(FileKind::Index, name);
            }
            return Err(e);
        }
        for n in old {
            lock.check_fresh()?;
            self.backend.delete(FileKind::Index, n)?;
        }
        Ok(IndexFilesWritten {
            names: written,
            bytes,
        })
    }

    /// Stores a snapshot record; returns its ID.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let data = crate::envelope::seal(
            &self.key,
            ObjectKind::Snapshot,
            &crate::snapshot::encode(snap),
        );
        let id = Id::of_object(&data);
        self.backend
            .write(FileKind::Snapshot, &id.to_hex(), &data)?;
        Ok(id)
    }

    /// Loads one snapshot record.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        // `damaged_snapshot` reads this name back.
        let data = self.backend.read(FileKind::Snapshot, &id.to_hex())?;
        let what = format!("snapshot {id}");
        if Id::of_object(&data) != *id {
            return Err(Error::corrupt(&what, "content does not match its name"));
        }
        let payload = crate::envelope::open(&self.key, ObjectKind::Snapshot, &data, &what)?;
        crate::snapshot::decode(&payload, &what)
    }

    /// Every snapshot that can be read, oldest first, and the errors of those
    /// that cannot (so one damaged record does not hide the others).
    pub fn snapshots_lenient(&self) -> Result<(SnapshotList, Vec<Error>)> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for l in self.backend.list(FileKind::Snapshot)? {
            let Ok(id) = Id::from_hex(&l.name) else {
                continue;
            };
            match self.load_snapshot(&id) {
                Ok(s) => out.push((id, s)),
                Err(e) => errors.push(e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        self.index_after_snapshots(out.iter().map(|(id, _)| *id));
        Ok((out, errors))
    }

    /// Takes in the index files written since the repository was opened,
    /// after snapshots were listed: a backup writes its index files before
    /// its snapshot, so every snapshot listed finds its blobs (a backup
    /// committing meanwhile made `find` and `stats` fail with "not in the
    /// index"). Best effort: the index was complete when opened. Skipped
    /// when every snapshot listed was seen at an earlier sync.
    fn index_after_snapshots(&self, listed: impl IntoIterator<Item = Id>) {
        let mut known = self.indexed_for.lock().unwrap();
        if self.index_replaced() {
            known.clear();
        }
        let before = known.len();
        known.extend(listed);
        if known.len() == before && before > 0 {
            return;
        }
        let synced = self.sync_local(&*self.unaudited);
        if let Ok(stats) = &synced {
            self.index_changed(stats);
        }
        let whole = synced.is_ok_and(|s| s.damaged.is_empty() && s.vanished == 0);
        if !whole {
            // Not known to be complete: look again next time.
            known.clear();
        }
    }

    /// Every snapshot that can be read, oldest first, each as the record
    /// that stands for it ([`logical_snapshots`]): for choosing among them
    /// (`latest`, `--at`, a filter), where neither a damaged record nor one
    /// superseded by its repair or rewrite is a candidate (they share the
    /// snapshot's time, so the newest record alone could be either).
    /// `rewrite` uses [`Self::snapshots`]. A damaged record is passed over
    /// with a warning, not hidden: it may have been the newest.
    pub fn readable_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let readable = self.records_past_damage(|e| {
            let mut passed = self.warnings.passed_over.lock().expect("passed over");
            passed.insert(e.to_string());
            drop(passed);
            self.warnings.say(format!(
                "passed over a snapshot record that cannot be read ({e}); \
                 `cairn check` and `cairn repair snapshots` say more"
            ))
        })?;
        Ok(logical_snapshots(readable)
            .into_iter()
            .map(|l| (l.id, l.snapshot))
            .collect())
    }

    /// Every snapshot record that can be read, oldest first, each damaged
    /// one handed to `damaged` and left out, as is one gone between listing
    /// and reading (forgotten meanwhile). A record that could not be read
    /// for another reason (the storage failed) fails the call: a snapshot
    /// must not be passed over because of a passing error.
    pub fn records_past_damage(&self, mut damaged: impl FnMut(&Error)) -> Result<SnapshotList> {
        let (readable, errors) = self.snapshots_lenient()?;
        let mut failed = None;
        for e in errors {
            match e {
                Error::Corrupt { .. } => damaged(&e),
                Error::Missing(_) => {}
                e => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(readable),
        }
    }

    /// All snapshots, oldest first; fails if any cannot be read.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let mut out = Vec::new();
        for l in self.backend.list(FileKind::Snapshot)? {
            let Ok(id) = Id::from_hex(&l.name) else {
                continue;
            };
            out.push((id, self.load_snapshot(&id)?));
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        self.index_after_snapshots(out.iter().map(|(id, _)| *id));
        Ok(out)
    }

    /// Resolves `latest` (the newest snapshot that is not a recovered one,
    /// [`SnapshotFilter::picks`]), a full ID or a unique ID prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        self.find_snapshot_from(spec, false)
    }

    /// [`Repository::find_snapshot`] for commands that change a snapshot's
    /// tags or hold: an ID that names no record any more is taken for the
    /// record that now stands for the same snapshot, when exactly one
    /// snapshot was rewritten from it. Such a command run again after it
    /// was killed then finishes (its first run rewrote some of the records
    /// it names) instead of failing on them.
    pub fn find_snapshot_or_its_rewrite(&self, spec: &str) -> Result<(Id, Snapshot)> {
        self.find_snapshot_from(spec, true)
    }

    fn find_snapshot_from(&self, spec: &str, follow: bool) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            let all = SnapshotFilter::default();
            // A damaged record (check and `snapshots` name it) cannot be
            // restored: it must not keep the others from being found.
            let snapshots = self.readable_snapshots()?;
            let none = if snapshots.is_empty() {
                "the repository has no snapshots"
            } else {
                "the repository has only recovered snapshots: give `--tag recovered`, or an ID"
            };
            return crate::snapshot::newest(snapshots, |s| all.picks(s))
                .ok_or_else(|| Error::InvalidInput(none.into()));
        }
        let id = match self.pick_snapshot_id(spec)? {
            Ok(id) => id,
            Err(e @ PickError::NoMatch(_)) => {
                let now = self.rewrites_of(spec);
                // A backdated record claiming the lineage is another
                // snapshot, and was picked.
                let snapshots: std::collections::HashSet<_> =
                    now.iter().map(|(id, s)| s.logical_key(*id)).collect();
                if follow && snapshots.len() == 1 {
                    let (id, snap) = now.into_iter().next().expect("one lineage");
                    self.index_after_snapshots([id]);
                    return Ok((id, snap));
                }
                return Err(
                    rewritten_since(&spec.to_ascii_lowercase(), &now).unwrap_or_else(|| e.into())
                );
            }
            Err(e) => return Err(e.into()),
        };
        let snap = self.load_snapshot(&id)?;
        self.index_after_snapshots([id]);
        Ok((id, snap))
    }

    /// For an ID no record has: the records rewritten from it. `tag`,
    /// `hold`, `rewrite` and `repair` write a new record (naming the first
    /// in `original`, the others in `former`) and remove the old one, so an ID from before (a
    /// script's, or the same command run again after it was killed) names
    /// nothing any more.
    fn rewrites_of(&self, spec: &str) -> Vec<(Id, Snapshot)> {
        let spec = spec.to_ascii_lowercase();
        let Ok(all) = self.readable_snapshots() else {
            return Vec::new();
        };
        all.into_iter()
            .filter(|(_, s)| s.was_named(&spec))
            .collect()
    }

    /// The ID of the snapshot record a full ID or unique prefix names,
    /// without reading it (it may be damaged).
    pub fn snapshot_id(&self, spec: &str) -> Result<Id> {
        Ok(self.pick_snapshot_id(spec)??)
    }

    /// [`Self::snapshot_id`], with why no single record was picked.
    fn pick_snapshot_id(&self, spec: &str) -> Result<std::result::Result<Id, PickError>> {
        let names = self
            .backend
            .list(FileKind::Snapshot)?
            .into_iter()
            .map(|l| l.name);
        match crate::snapshot::pick_by_prefix(spec, names.map(|n| (n.clone(), n))) {
            Ok(one) => Ok(Ok(Id::from_hex(&one)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// The snapshots a command names: with no `specs`, every snapshot that
    /// `filter` accepts, oldest first; otherwise each spec resolved in turn,
    /// where `latest` is the newest snapshot `filter` accepts and an ID or
    /// prefix is taken as given.
    pub fn select_snapshots(
        &self,
        specs: &[String],
        filter: &SnapshotFilter,
    ) -> Result<Vec<(Id, Snapshot)>> {
        if specs.is_empty() {
            let mut all = self.readable_snapshots()?;
            all.retain(|(_, s)| filter.matches(s));
            return Ok(all);
        }
        let mut out: Vec<(Id, Snapshot)> = Vec::with_capacity(specs.len());
        for spec in specs {
            let found = if spec != "latest" || filter.is_empty() {
                self.find_snapshot(spec)?
            } else {
                crate::snapshot::newest(self.readable_snapshots()?, |s| filter.picks(s))
                    .ok_or_else(|| {
                        Error::InvalidInput(format!("no snapshot of {}", filter.describe()))
                    })?
            };
            // Named twice (`latest` and its ID): taken once, as restic
            // does (stats counted it twice, find listed it twice).
            if !out.iter().any(|(id, _)| *id == found.0) {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// The newest snapshot taken at or before `at` (optionally limited by
    /// `filter`); `None` if there is none, an error if the records could
    /// not be read.
    pub fn snapshot_at(
        &self,
        at: chrono::DateTime<chrono::FixedOffset>,
        filter: impl Fn(&Snapshot) -> bool,
    ) -> Result<Option<(Id, Snapshot)>> {
        Ok(self
            .readable_snapshots()?
            .into_iter()
            .rfind(|(_, s)| s.time <= at && filter(s)))
    }

    /// Lists key files, and the errors of those that cannot be read (so
    /// that one damaged key file does not hide the others).
    pub fn keys(&self) -> Result<(Vec<KeyInfo>, Vec<Error>)> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for l in self.backend.list(FileKind::Key)? {
            let data = match read_key(&*self.backend, &l) {
                Err(e @ Error::Corrupt { .. }) => {
                    damaged.push(e);
                    continue;
                }
                // Removed since it was listed (a `key passwd` elsewhere).
                Err(Error::Missing(_)) => continue,
                r => r?,
            };
            let kf = match KeyFile::from_bytes(&data, &l.name) {
                Ok(kf) => kf,
                Err(e) => {
                    damaged.push(e);
                    continue;
                }
            };
            // Listed all the same: it may still open (the damage may be in
            // its unauthenticated host or user).
            if let Err(e) = crate::keyfile::check_name(&data, &l.name) {
                damaged.push(e);
            }
            out.push(KeyInfo {
                current: l.name == self.key_name,
                id: l.name,
                username: kf.username,
                hostname: kf.hostname,
                created: kf.created,
                kdf: kf.params,
                append_only: kf.append_only,
            });
        }
        Ok((out, damaged))
    }

    /// Adds a key file for `password`; returns its ID. An append-only key
    /// can only add append-only keys.
    pub fn add_key(&self, password: &[u8], params: KdfParams, append_only: bool) -> Result<String> {
        if password.is_empty() {
            return Err(Error::InvalidInput(
                "an empty password is not allowed".into(),
            ));
        }
        if self.key_append_only && !append_only {
            return Err(Error::AppendOnly(format!(
                "the key in use ({}) is append-only: it can only add append-only keys (`key add --append-only`)",
                short(&self.key_name)
            )));
        }
        self.ensure_key_in_use()?;
        self.ensure_password_unused(password, None)?;
        let new = write_key(
            &*self.backend,
            &self.key,
            password,
            params,
            append_only,
            None,
        )?;
        // `key add` runs under a shared lock: another may have added a key
        // for the same password meanwhile. Then this one goes again (the
        // other may do the same: both fail, neither is left doubled).
        if let Err(e) = self.ensure_password_unused(password, Some(&new)) {
            self.backend.delete(FileKind::Key, &new)?;
            return Err(e);
        }
        Ok(new)
    }

    /// Fails unless the key this session opened with is still there (key
    /// changes run under a lock, so this holds until they are done). A
    /// `key remove` or `key passwd` elsewhere between this session's open
    /// and its lock may have removed it: two crossed `key remove`s each
    /// removed the other's key, leaving only an append-only key, and a key
    /// revoked while its holder changed its password lived on as the new one.
    fn ensure_key_in_use(&self) -> Result<()> {
        if self.backend.exists(FileKind::Key, &self.key_name)? {
            return Ok(());
        }
        Err(Error::InvalidInput(format!(
            "the key this command opened the repository with ({}) has been removed since (by \
             `key remove` or `key passwd` elsewhere), so it may not change keys; open the \
             repository again with a key that is there",
            short(&self.key_name)
        )))
    }

    /// Fails if `password` opens a key already there, but for `replaced`.
    /// Which of two keys a password opens depends on the order of their
    /// IDs, so a second key for it (an append-only key's password given to
    /// a full key) silently changed the rights of whoever used it.
    fn ensure_password_unused(&self, password: &[u8], replaced: Option<&str>) -> Result<()> {
        if let Some((name, ..)) = self
            .keys_opened_by(password, replaced.unwrap_or_default())?
            .first()
        {
            return Err(password_in_use(name));
        }
        Ok(())
    }

    /// The name of the one key file whose name starts with `spec` (an ID
    /// as `key list` shows it, or all of it), and how many there are.
    pub fn key_named(&self, spec: &str) -> Result<(String, usize)> {
        let keys = self.backend.list(FileKind::Key)?;
        let matches: Vec<&str> = keys
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| n.starts_with(spec))
            .collect();
        match matches.as_slice() {
            [one] => Ok((one.to_string(), keys.len())),
            [] => Err(Error::InvalidInput(format!("no key matches {spec:?}"))),
            _ => Err(Error::InvalidInput(format!(
                "{spec:?} matches several keys"
            ))),
        }
    }

    /// Removes a key file (by ID or unique prefix). The key in use and the
    /// last remaining key cannot be removed.
    pub fn remove_key(&self, spec: &str) -> Result<String> {
        self.ensure_may_delete("`key remove`")?;
        self.ensure_key_in_use()?;
        let (name, keys) = self.key_named(spec)?;
        if keys <= 1 {
            return Err(Error::InvalidInput(
                "refusing to remove the last key: the repository would become unreadable".into(),
            ));
        }
        if name == self.key_name {
            return Err(Error::InvalidInput(
                "refusing to remove the key in use; open the repository with another key to remove this one (or use `key passwd`)".into(),
            ));
        }
        self.backend.delete(FileKind::Key, &name)?;
        Ok(name)
    }

    /// Replaces the key in use by one for `new_password`. The session's
    /// audit record still names the key it was opened with: the one that
    /// ran the command.
    pub fn change_password(&self, new_password: &[u8], params: KdfParams) -> Result<KeyChange> {
        self.ensure_may_delete("`key passwd` (it removes the old key file)")?;
        if new_password.is_empty() {
            return Err(Error::InvalidInput(
                "an empty password is not allowed".into(),
            ));
        }
        // A `key passwd` killed between writing the new key and removing
        // the old one left both: the old password still opened the
        // repository, and the same command again was refused for the new
        // one. It is finished instead, if the new password opens exactly
        // one other key, written by `key passwd` to replace this one, of
        // this repository and with the same rights: the end is what the
        // finished command leaves. (A key someone added with that password
        // is no such key, nor one of another repository put here.)
        self.ensure_key_in_use()?;
        let others = self.keys_opened_by(new_password, &self.key_name)?;
        let mine = self
            .backend
            .read(FileKind::Key, &self.key_name)
            .and_then(|d| KeyFile::from_bytes(&d, &self.key_name))?;
        if let [(name, kf, master)] = others.as_slice()
            && kf.append_only == self.key_append_only
            && master.same_as(&self.key)
        {
            // This session may have opened with the new key: with the
            // same password again (it sorts first), then the other is the
            // old; or with the new password, to set the old one again,
            // then this key is the old one now, and `name` the key for the
            // password asked for. (Taken for the old key, `name` went, and
            // the password the command said was set opened nothing.)
            let pair = if kf.replaces.as_deref() == Some(self.key_name.as_str()) {
                Some((self.key_name.clone(), name.clone()))
            } else if mine.replaces.as_deref() == Some(name.as_str()) {
                if matches!(mine.open(new_password, &self.key_name), Ok(Some(_))) {
                    Some((name.clone(), self.key_name.clone()))
                } else {
                    Some((self.key_name.clone(), name.clone()))
                }
            } else {
                None
            };
            if let Some((old, new)) = pair {
                self.backend.delete(FileKind::Key, &old)?;
                return Ok(KeyChange {
                    id: new,
                    finished_earlier: true,
                    also_removed: None,
                    left: Vec::new(),
                });
            }
        }
        // Each key was tried with the password above: not again.
        if let Some((name, ..)) = others.first() {
            return Err(password_in_use(name));
        }
        // The key in use was written by a `key passwd` killed before it
        // removed the key it replaces, and this session opened with the
        // new password: the old key goes too, or its password, which the
        // user believes revoked, would open the repository for good.
        // Not when another key file is this one's copy (same salt, nonce
        // and wrapped key): `replaces` is not authenticated, so anyone who
        // may add key files could copy the key in use with `replaces`
        // naming another key, the recovery key, to have it removed here.
        let keys = self.backend.list(FileKind::Key)?;
        let copied = keys.iter().any(|l| {
            l.name != self.key_name
                && read_key(&*self.backend, l)
                    .and_then(|d| KeyFile::from_bytes(&d, &l.name))
                    .is_ok_and(|kf| {
                        // As the hex is read: in either case.
                        let wrap = |k: &KeyFile| {
                            [&k.salt, &k.nonce, &k.data].map(|h| h.to_ascii_lowercase())
                        };
                        wrap(&kf) == wrap(&mine)
                    })
        });
        let replaced = mine
            .replaces
            .filter(|_| !copied)
            .filter(|old| *old != self.key_name)
            .filter(|old| {
                keys.iter().find(|l| l.name == *old).is_some_and(|l| {
                    read_key(&*self.backend, l)
                        .and_then(|d| KeyFile::from_bytes(&d, old))
                        .is_ok_and(|kf| kf.append_only == self.key_append_only)
                })
            });
        // The same password again is allowed: it gives the key today's KDF
        // settings.
        let new = write_key(
            &*self.backend,
            &self.key,
            new_password,
            params,
            self.key_append_only,
            Some(&self.key_name),
        )?;
        // The new key is durable before the old one goes: never zero keys.
        if let Err(e) = self.backend.delete(FileKind::Key, &self.key_name) {
            return Err(Error::InvalidInput(format!(
                "the new key {} is written and opens with the new password, but the old key {} \
                 could not be removed ({e}), so the old password opens the repository still: \
                 run the same command again to finish",
                short(&new),
                short(&self.key_name)
            )));
        }
        let left = keys
            .iter()
            .filter(|l| l.name != new && Some(&l.name) != replaced.as_ref())
            .filter(|l| {
                read_key(&*self.backend, l)
                    .and_then(|d| KeyFile::from_bytes(&d, &l.name))
                    .is_ok_and(|kf| kf.replaces.as_deref() == Some(self.key_name.as_str()))
            })
            .map(|l| l.name.clone())
            .collect();
        let also_removed = match replaced {
            Some(old) => match self.backend.delete(FileKind::Key, &old) {
                Ok(()) | Err(Error::Missing(_)) => Some(old),
                Err(e) => {
                    return Err(Error::InvalidInput(format!(
                        "the password is changed (key {}), but key {}, which an interrupted \
                         `key passwd` left, could not be removed ({e}): its old password \
                         opens the repository still; `cairn key remove {}` removes it",
                        short(&new),
                        short(&old),
                        short(&old)
                    )));
                }
            },
            None => None,
        };
        Ok(KeyChange {
            id: new,
            finished_earlier: false,
            also_removed,
            left,
        })
    }

    /// The keys but `except` that `password` opens, each with its key file
    /// and the master key it holds.
    fn keys_opened_by(
        &self,
        password: &[u8],
        except: &str,
    ) -> Result<Vec<(String, KeyFile, MasterKey)>> {
        let mut found = Vec::new();
        for l in self.backend.list(FileKind::Key)? {
            if l.name == except {
                continue;
            }
            let data = match read_key(&*self.backend, &l) {
                Ok(d) => d,
                Err(Error::Missing(_) | Error::Corrupt { .. }) => continue,
                Err(e) => return Err(e),
            };
            let Ok(kf) = KeyFile::from_bytes(&data, &l.name) else {
                continue; // damaged: opens nothing (check names it)
            };
            if let Ok(Some(master)) = kf.open(password, &l.name) {
                found.push((l.name, kf, master));
            }
        }
        Ok(found)
    }
}

/// The refusal of a password that already opens key `name`.
fn password_in_use(name: &str) -> Error {
    Error::InvalidInput(format!(
        "this password already opens key {}: give each key a password of its own (which of \
         two keys a shared password opens, and with what rights, depends on the order they are \
         tried in)",
        short(name)
    ))
}

/// What [`Repository::change_password`] did.
#[derive(Debug, Clone)]
pub struct KeyChange {
    /// The key the new password opens.
    pub id: String,
    /// Whether that key was there already, written by a `key passwd` killed
    /// before it removed the old key: the command only removed the old one.
    pub finished_earlier: bool,
    /// A key removed besides the one in use: the one an interrupted `key
    /// passwd` wrote the key in use to replace, still there.
    pub also_removed: Option<String>,
    /// Keys that say they replace the key in use (an interrupted `key
    /// passwd` to another password wrote them) and still open with that
    /// password: left, since `replaces` is not authenticated (removing
    /// them on its word would let anyone who may add key files have the
    /// recovery key removed), and named so the user can.
    pub left: Vec<String>,
}

fn short(name: &str) -> &str {
    &name[..8.min(name.len())]
}

/// Why a session is append-only, if it is: the repository's mode or the key's.
fn append_only_reason(repo: bool, key: bool, key_name: &str) -> Option<String> {
    if key {
        Some(format!(
            "the key in use ({}) is append-only",
            short(key_name)
        ))
    } else if repo {
        Some("the repository is append-only".into())
    } else {
        None
    }
}

/// The error for an ID no record has, naming the records rewritten from
/// it (`now`), if there are any.
fn rewritten_since(spec: &str, now: &[(Id, Snapshot)]) -> Option<Error> {
    let named: Vec<String> = now.iter().map(|(id, _)| id.short()).collect();
    (!now.is_empty()).then(|| {
        Error::InvalidInput(format!(
            "no snapshot matches {spec:?}: that snapshot has been rewritten since (by `tag`, \
             `hold`, `rewrite` or `repair`), and its record now is {} (see `cairn snapshots`)",
            named.join(", ")
        ))
    })
}

/// The snapshot record that an error of [`Repository::load_snapshot`]
/// says is damaged, if it says so (and not that the storage failed).
pub fn damaged_snapshot(e: &Error) -> Option<Id> {
    match e {
        Error::Corrupt { object, .. } => Id::from_hex(object.strip_prefix("snapshot ")?).ok(),
        _ => None,
    }
}

/// A new local repository in `dir/repo` made with `opts` and a fast key
/// derivation (password `pw`), for unit tests.
#[cfg(test)]
pub(crate) fn test_repository(dir: &std::path::Path, opts: InitOptions) -> Repository {
    let opts = InitOptions {
        kdf: KdfParams::INSECURE_TEST,
        ..opts
    };
    let backend = Arc::new(crate::backend::LocalBackend::new(dir.join("repo")));
    Repository::init(backend, b"pw", &opts, &OpenOptions::default()).expect("test repository")
}

/// A snapshot of host `h` taken at `time` (RFC 3339), of tree `[1; 32]`,
/// for unit tests.
#[cfg(test)]
pub(crate) fn snapshot_at(time: &str) -> Snapshot {
    Snapshot {
        time: chrono::DateTime::parse_from_rfc3339(time).unwrap(),
        tree: Id([1; 32]),
        paths: vec!["/x".into()],
        hostname: "h".into(),
        username: "u".into(),
        tags: Vec::new(),
        parent: None,
        program_version: "cairn test".into(),
        summary: None,
        partial: false,
        hold: false,
        original: None,
        copied_from: None,
        former: Vec::new(),
        databases: Vec::new(),
        unknown: Default::default(),
    }
}

/// Brings `index` up to date. Once it has been rebuilt because index files
/// it knew are gone (a prune or repair, perhaps on another machine), the
/// next command with the object cache (whichever command rebuilt it) also
/// drops the cached copies of packs the index no longer lists: a machine
/// that only backs up never lists the packs, so its cache would keep them
/// for good. Tidying is optional: its failures are ignored.
fn sync_index(index: &LocalIndex, backend: &dyn Backend, key: &MasterKey) -> Result<SyncStats> {
    let stats = index.sync(backend, key)?;
    // With an index file left out (damaged, or replaced while this sync
    // read the others) live packs would look gone: wait for a whole index.
    let whole = stats.damaged.is_empty() && stats.vanished == 0;
    if whole && index.cache_tidy_pending().unwrap_or(false) {
        // A pack the index cannot be asked about is kept, and so is every
        // pack once damage replaced the file (the new one may be empty).
        let file = index.file_incarnation();
        let live = |id: &Id| index.file_incarnation() != file || index.has_pack(id).unwrap_or(true);
        if backend.retain_cached_packs(&live) {
            let _ = index.cache_tidied();
        }
    }
    Ok(stats)
}

/// A pack's index entry, from its header (`size`: its stored size).
pub(crate) fn read_pack_header(
    repo: &Repository,
    name: &str,
    size: u64,
) -> Result<crate::indexfile::IndexPack> {
    let id = Id::from_hex(name)?;
    let min = (crate::pack::PREFIX_LEN + crate::pack::TRAILER_LEN) as u64;
    if size < min {
        return Err(Error::corrupt(
            format!("pack {name}"),
            "too short to be a pack",
        ));
    }
    let b = repo.backend();
    let prefix = b.read_range(FileKind::Pack, name, 0, crate::pack::PREFIX_LEN as u64)?;
    let trailer = b.read_range(
        FileKind::Pack,
        name,
        size - crate::pack::TRAILER_LEN as u64,
        crate::pack::TRAILER_LEN as u64,
    )?;
    let hlen = crate::pack::header_len(&id, &trailer, size)? as u64;
    let hct = b.read_range(
        FileKind::Pack,
        name,
        size - crate::pack::TRAILER_LEN as u64 - hlen,
        hlen,
    )?;
    // A flipped bit in the prefix must not hide what the pack holds: the
    // header tells the original (`repair packs` then salvages the blobs).
    let (blobs, _) = crate::pack::open_header_mending(repo.key(), &id, &prefix, &hct)?;
    Ok(crate::indexfile::IndexPack { id, size, blobs })
}

/// `packs` cut, in order, into runs of at most `max_packs` packs and
/// `max_blobs` blobs (a pack with more blobs is a run of its own).
fn index_file_runs(packs: &[IndexPack], max_packs: usize, max_blobs: usize) -> Vec<&[IndexPack]> {
    let mut runs = Vec::new();
    let (mut start, mut blobs) = (0, 0);
    for (i, p) in packs.iter().enumerate() {
        if i > start && (i - start == max_packs || blobs + p.blobs.len() > max_blobs) {
            runs.push(&packs[start..i]);
            (start, blobs) = (i, 0);
        }
        blobs += p.blobs.len();
    }
    if start < packs.len() {
        runs.push(&packs[start..]);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::REPAIRED_TAG;

    /// A config for key tests: only its sealing matters.
    fn test_config() -> Config {
        Config {
            version: 3,
            id: Id::random(),
            chunker: Default::default(),
            compression_level: 3,
            pack_size: 16 << 20,
            created: String::new(),
            append_only: false,
        }
    }

    #[test]
    fn the_key_file_that_opened_the_repository_last_is_tried_first() {
        // Two key files of one master key under one password (what an
        // interrupted `key passwd` leaves): without a hint the order is
        // the cost's, then the name's; the hint goes before both.
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::backend::LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        let key = MasterKey::generate();
        let kdf = KdfParams::INSECURE_TEST;
        let mut names: Vec<String> = (0..2)
            .map(|_| write_key(&backend, &key, b"pw", kdf, false, None).unwrap())
            .collect();
        names.sort();
        let config = test_config();
        let sealed = seal_msgpack(&key, ObjectKind::Config, &config);
        let found = |hint: Option<&str>| {
            Repository::find_key(&backend, &[b"pw"], &sealed, hint)
                .unwrap()
                .1
        };
        assert_eq!(found(None), names[0]);
        assert_eq!(found(Some(&names[1])), names[1]);
        // A hint no key file answers to is passed over.
        assert_eq!(found(Some("gone")), names[0]);
    }

    #[test]
    fn a_password_and_its_trimmed_form_are_both_tried_on_each_key_in_turn() {
        // The cheap key opens with the trimmed password, a costlier one
        // with it as read: tried as read on every key first, the costlier
        // key was derived before the cheap one (and any planted costly
        // key file with it, on every open).
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::backend::LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        let key = MasterKey::generate();
        let cheap =
            write_key(&backend, &key, b"pw", KdfParams::INSECURE_TEST, false, None).unwrap();
        let costlier = KdfParams {
            m_cost: 128,
            ..KdfParams::INSECURE_TEST
        };
        write_key(&backend, &key, b"pw ", costlier, false, None).unwrap();
        let config = test_config();
        let sealed = seal_msgpack(&key, ObjectKind::Config, &config);
        let found = Repository::find_key(&backend, &[b"pw ", b"pw"], &sealed, None).unwrap();
        assert_eq!(found.1, cheap);
    }

    #[test]
    fn index_files_written_in_bulk_are_cut_by_blobs_as_well_as_packs() {
        let pack = |n: usize| IndexPack {
            id: Id([n as u8; 32]),
            size: 1,
            blobs: vec![
                crate::blob::PackedBlob {
                    id: Id([0; 32]),
                    blob_type: crate::blob::BlobType::Data,
                    offset: 0,
                    length: 1,
                    raw_length: 1,
                    compression: crate::compress::Compression::None,
                    start: None,
                };
                n
            ],
        };
        let counts = |packs: &[IndexPack]| -> Vec<Vec<usize>> {
            index_file_runs(packs, PACKS_PER_INDEX_FILE, BLOBS_PER_INDEX_FILE)
                .iter()
                .map(|r| r.iter().map(|p| p.blobs.len()).collect())
                .collect()
        };
        // 1024 packs of small files' blobs made one file too big to read.
        let packs: Vec<IndexPack> = [10, 40_000, 30_000, 100_000, 5, 65_531, 1]
            .into_iter()
            .map(pack)
            .collect();
        assert_eq!(
            counts(&packs),
            [
                vec![10, 40_000],
                vec![30_000],
                vec![100_000],
                vec![5, 65_531],
                vec![1]
            ]
        );
        let many: Vec<IndexPack> = (0..2100).map(|_| pack(1)).collect();
        let sizes: Vec<usize> = counts(&many).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1024, 1024, 52]);
        assert!(counts(&[]).is_empty());
    }

    #[test]
    fn a_config_field_this_build_does_not_know_survives_switching_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repository(dir.path(), Default::default());
        let known = crate::envelope::to_msgpack(repo.config());
        let future = crate::unknown::UnknownFields(vec![("future".into(), rmpv::Value::from(1))]);
        let payload = future.appended_to(known);
        let sealed = crate::envelope::seal(&repo.key, ObjectKind::Config, &payload);
        repo.backend.replace_config(&sealed).unwrap();
        drop(repo);
        let backend = Arc::new(crate::backend::LocalBackend::new(dir.path().join("repo")));
        let mut repo = Repository::open(backend, b"pw", &OpenOptions::default()).unwrap();
        assert!(repo.set_append_only(true).unwrap());
        let data = repo.backend.read(FileKind::Config, "config").unwrap();
        let payload = crate::envelope::open(&repo.key, ObjectKind::Config, &data, "c").unwrap();
        let config: Config = crate::envelope::from_msgpack(&payload, "c").unwrap();
        assert!(config.append_only);
        assert_eq!(
            crate::unknown::UnknownFields::of(&payload, &crate::config::FIELDS),
            future
        );
        // Every field serde writes is one the list knows.
        let mut all = repo.config().clone();
        all.append_only = true;
        assert!(
            crate::unknown::UnknownFields::of(&crate::envelope::to_msgpack(&all), &[])
                .0
                .iter()
                .map(|(k, _)| k.as_str())
                .eq(crate::config::FIELDS)
        );
    }

    #[test]
    fn a_newer_config_whose_fields_changed_is_named_a_newer_version_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repository(dir.path(), Default::default());
        #[derive(serde::Serialize)]
        struct Newer {
            version: u32,
            chunker: &'static str,
        }
        let newer = Newer {
            version: 9,
            chunker: "a layout this build does not know",
        };
        // The error of opening the repository with `config` stored.
        let refused = |config: &[u8]| {
            repo.backend.replace_config(config).unwrap();
            let backend = Arc::new(crate::backend::LocalBackend::new(dir.path().join("repo")));
            let e = Repository::open(backend, b"pw", &OpenOptions::default())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("a newer cairn"), "{e}");
            assert!(!e.contains("damaged") && !e.contains("corrupt"), "{e}");
            e
        };
        let e = refused(&seal_msgpack(&repo.key, ObjectKind::Config, &newer));
        assert!(e.contains("format version 9 is not supported"), "{e}");
        // A newer version whose fields this build reads is one all the same.
        let mut same_fields = repo.config().clone();
        same_fields.version = crate::config::FORMAT_VERSION + 1;
        refused(&seal_msgpack(&repo.key, ObjectKind::Config, &same_fields));
    }

    #[test]
    fn choices_see_a_repair_never_the_damaged_record_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repository(dir.path(), Default::default());
        let damaged = snapshot_at("2026-01-03T10:15:00Z");
        let damaged_id = repo.save_snapshot(&damaged).unwrap();
        // `repair snapshots` without --forget: a record of the same time and
        // lineage beside it. Written until its ID sorts first, where the
        // newest record by (time, ID) is the damaged one.
        let mut repair = damaged.clone();
        repair.tree = Id([2; 32]);
        repair.tags.push(REPAIRED_TAG.into());
        repair.original = Some(damaged_id);
        let repaired_id = loop {
            let id = repo.save_snapshot(&repair).unwrap();
            if id < damaged_id {
                break id;
            }
            repo.backend()
                .delete(FileKind::Snapshot, &id.to_hex())
                .unwrap();
        };
        assert_eq!(repo.snapshots().unwrap().len(), 2);

        let readable = repo.readable_snapshots().unwrap();
        assert_eq!(readable.len(), 1);
        assert_eq!(readable[0].0, repaired_id);
        assert_eq!(repo.find_snapshot("latest").unwrap().0, repaired_id);
        let at = chrono::DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z").unwrap();
        assert_eq!(
            repo.snapshot_at(at, |_| true).unwrap().unwrap().0,
            repaired_id
        );
        let of_h = SnapshotFilter {
            host: Some("h".into()),
            ..Default::default()
        };
        let chosen = repo.select_snapshots(&["latest".into()], &of_h).unwrap();
        assert_eq!(chosen[0].0, repaired_id);
        let all = repo.select_snapshots(&[], &of_h).unwrap();
        assert_eq!(all.iter().map(|c| c.0).collect::<Vec<_>>(), [repaired_id]);
        // Named by its ID, the damaged record is still what is read.
        assert_eq!(
            repo.find_snapshot(&damaged_id.to_hex()).unwrap().0,
            damaged_id
        );
    }

    /// Counts the listings of `index/`.
    struct IndexLists {
        inner: crate::backend::LocalBackend,
        lists: std::sync::atomic::AtomicUsize,
    }

    impl Backend for IndexLists {
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
        fn list(&self, kind: FileKind) -> Result<Vec<crate::backend::Listed>> {
            if kind == FileKind::Index {
                self.lists.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.list(kind)
        }
    }

    #[test]
    fn snapshots_seen_before_need_no_fresh_look_at_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let writer = test_repository(dir.path(), Default::default());
        let snap = |minute: u32| snapshot_at(&format!("2026-01-03T10:{minute:02}:00Z"));
        let first = writer.save_snapshot(&snap(1)).unwrap();
        let counted = Arc::new(IndexLists {
            inner: crate::backend::LocalBackend::new(dir.path().join("repo")),
            lists: Default::default(),
        });
        let reader = Repository::open(counted.clone(), b"pw", &OpenOptions::default()).unwrap();
        let lists = || counted.lists.load(Ordering::SeqCst);
        let opened = lists();

        // The first listing may bring snapshots committed after the open.
        assert_eq!(reader.snapshots().unwrap().len(), 1);
        assert_eq!(lists(), opened + 1);
        reader.readable_snapshots().unwrap();
        reader.find_snapshot("latest").unwrap();
        reader.find_snapshot(&first.to_hex()).unwrap();
        reader
            .select_snapshots(&["latest".into(), first.to_hex()], &Default::default())
            .unwrap();
        assert_eq!(lists(), opened + 1, "nothing new was listed");

        // A snapshot committed since: its index files are taken in.
        writer.save_snapshot(&snap(2)).unwrap();
        assert_eq!(reader.snapshots().unwrap().len(), 2);
        assert_eq!(lists(), opened + 2);
        reader.snapshots().unwrap();
        assert_eq!(lists(), opened + 2);
    }
}
