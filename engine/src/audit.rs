//! The audit trail: one encrypted record per command that changed the
//! repository, saying who (host, user, key), when and what (snapshots, keys
//! and data added or removed).
//!
//! The changes are counted where every one of them passes, the backend, so
//! no operation can change the repository unrecorded. Before a command's
//! first change an *open* record is written (who, when, nothing yet); the
//! closing record with what was changed is written when the repository is
//! closed (and by long-running commands after each snapshot). A process
//! killed in between leaves its open record alone: the trail shows a command
//! that did not finish, and when and by whom it ran. cairn never deletes
//! audit records, and an append-only key cannot.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileKind};
use crate::crypto::MasterKey;
use crate::envelope::{ObjectKind, open_msgpack, seal_msgpack};
use crate::error::{Error, Result};
use crate::id::Id;

/// Objects of one kind added or removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Snapshot IDs (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// Key file IDs (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Index files.
    #[serde(default)]
    pub index_files: u64,
    /// Packs.
    #[serde(default)]
    pub packs: u64,
    /// Bytes of the packs added (0 for removed ones).
    #[serde(default)]
    pub pack_bytes: u64,
    /// The config was written (`init`, append-only mode switched).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config: bool,
    /// Compression dictionaries.
    #[serde(default)]
    pub dicts: u64,
}

impl Changes {
    /// Whether nothing is in it.
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// The payload of an `audit/<id>` object (format-spec §20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the first change was made.
    pub started: DateTime<Utc>,
    /// When the record was written.
    pub time: DateTime<Utc>,
    /// The command (`backup`, `forget`, `key add`, ...).
    pub command: String,
    /// Host of the process.
    pub hostname: String,
    /// User of the process.
    pub username: String,
    /// Process ID.
    pub pid: u32,
    /// The key file that opened the repository.
    pub key: String,
    /// What was added.
    pub added: Changes,
    /// What was removed.
    pub removed: Changes,
    /// An open record: written before the command's first change, with
    /// nothing in `added` and `removed`. Its closing record has the same
    /// `hostname`, `pid` and `started`; an open record without one is a
    /// command that did not finish (killed, crashed, power lost), whose
    /// changes are not recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// In an open record: what the command is about to delete, as far as
    /// it knew before its first change (`forget`: the snapshot records it
    /// removes), so that a command killed halfway leaves word of what
    /// may be gone. Empty (omitted) otherwise.
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub removing: Changes,
}

impl AuditRecord {
    /// What an open record and its closing record share.
    fn pairing(&self) -> (&str, u32, DateTime<Utc>) {
        (&self.hostname, self.pid, self.started)
    }
}

static COMMAND: OnceLock<String> = OnceLock::new();

/// Names the command this process runs, for its audit records (the
/// command-line tool sets it once, before opening the repository).
pub fn set_command(name: &str) {
    let _ = COMMAND.set(name.to_string());
}

/// The command named by [`set_command`] (empty if none was).
pub fn command() -> &'static str {
    COMMAND.get().map(String::as_str).unwrap_or_default()
}

#[derive(Default)]
struct Pending {
    started: Option<DateTime<Utc>>,
    added: Changes,
    removed: Changes,
    /// What the next changes are to delete, for their open record.
    removing: Changes,
    /// The open record of these changes is written.
    opened: bool,
}

/// The changes of an open repository not yet written to an audit record.
#[derive(Default)]
pub struct AuditLog {
    pending: Mutex<Pending>,
}

impl AuditLog {
    /// Notes one object written (`added`) or deleted.
    pub(crate) fn note(&self, kind: FileKind, name: &str, bytes: u64, added: bool) {
        if matches!(kind, FileKind::Lock | FileKind::Audit) {
            return;
        }
        let mut p = self.pending.lock().expect("audit log");
        p.started.get_or_insert_with(Utc::now);
        let c = if added { &mut p.added } else { &mut p.removed };
        match kind {
            FileKind::Snapshot => c.snapshots.push(name.to_string()),
            FileKind::Key => c.keys.push(name.to_string()),
            FileKind::Index => c.index_files += 1,
            FileKind::Pack => {
                c.packs += 1;
                c.pack_bytes += bytes;
            }
            FileKind::Config => c.config = true,
            FileKind::Dict => c.dicts += 1,
            FileKind::Lock | FileKind::Audit => {}
        }
    }

    /// Notes that the next changes delete these snapshot records, for
    /// their open record (if it is not written yet).
    pub(crate) fn removing_snapshots(&self, ids: &[String]) {
        let mut p = self.pending.lock().expect("audit log");
        if !p.opened {
            p.removing.snapshots.extend(ids.iter().cloned());
        }
    }

    /// Writes the open record of the next changes through `backend`
    /// (unaudited), unless it is written already; call before each change.
    /// The change must not be made if this fails.
    pub(crate) fn open(
        &self,
        backend: &dyn Backend,
        key: &MasterKey,
        key_name: &str,
    ) -> Result<()> {
        let mut p = self.pending.lock().expect("audit log");
        if p.opened {
            return Ok(());
        }
        let started = *p.started.get_or_insert_with(Utc::now);
        let rec = AuditRecord {
            open: true,
            removing: p.removing.clone(),
            ..record(started, key_name, Changes::default(), Changes::default())
        };
        write(backend, key, &rec)?;
        p.opened = true;
        Ok(())
    }

    /// Writes one record of the changes since the last one, if there were
    /// any or their open record was written, through `backend` (unaudited,
    /// so the record is not itself noted).
    pub fn flush(&self, backend: &dyn Backend, key: &MasterKey, key_name: &str) -> Result<()> {
        let mut p = self.pending.lock().expect("audit log");
        if p.added.is_empty() && p.removed.is_empty() && !p.opened {
            return Ok(());
        }
        let started = *p.started.get_or_insert_with(Utc::now);
        let rec = record(started, key_name, p.added.clone(), p.removed.clone());
        // Kept until written: a failed write leaves them for the next flush.
        write(backend, key, &rec)?;
        *p = Pending::default();
        Ok(())
    }
}

/// A record of this process.
fn record(started: DateTime<Utc>, key_name: &str, added: Changes, removed: Changes) -> AuditRecord {
    AuditRecord {
        started,
        time: Utc::now(),
        command: command().to_string(),
        hostname: crate::host::hostname(),
        username: crate::host::username(),
        pid: std::process::id(),
        key: key_name.to_string(),
        added,
        removed,
        open: false,
        removing: Changes::default(),
    }
}

fn write(backend: &dyn Backend, key: &MasterKey, rec: &AuditRecord) -> Result<()> {
    let data = seal_msgpack(key, ObjectKind::Audit, rec);
    backend.write(FileKind::Audit, &Id::of_object(&data).to_hex(), &data)
}

/// Which audit records to show; every field left empty matches all.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Records of changes that ended at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Records of changes that started at or before this time.
    pub until: Option<DateTime<Utc>>,
    /// The command, or its first words (`key` matches `key add`).
    pub command: Option<String>,
    /// The host.
    pub host: Option<String>,
    /// The user.
    pub user: Option<String>,
    /// A prefix of the key file ID the command used.
    pub key: Option<String>,
    /// A prefix of a snapshot ID the record added or removed (or, an open
    /// record, was removing): who wrote, or who deleted, that snapshot.
    pub snapshot: Option<String>,
}

impl AuditFilter {
    /// Whether `r` passes every condition given.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let prefix = |want: &Option<String>, have: &str| {
            want.as_ref()
                .is_none_or(|w| have.starts_with(&w.to_ascii_lowercase()))
        };
        let command = self
            .command
            .as_ref()
            .is_none_or(|c| r.command == *c || r.command.starts_with(&format!("{c} ")));
        let snapshot = self.snapshot.as_ref().is_none_or(|s| {
            let s = s.to_ascii_lowercase();
            r.added
                .snapshots
                .iter()
                .chain(&r.removed.snapshots)
                .chain(&r.removing.snapshots)
                .any(|id| id.starts_with(&s))
        });
        self.since.is_none_or(|t| r.time >= t)
            && self.until.is_none_or(|t| r.started <= t)
            && command
            && self.host.as_ref().is_none_or(|h| r.hostname == *h)
            && self.user.as_ref().is_none_or(|u| r.username == *u)
            && prefix(&self.key, &r.key)
            && snapshot
    }
}

/// Reads every audit record and confirms that each one decrypts under
/// `key` and is named after its content (a record swapped, altered or
/// truncated is found); returns how many are sound and what is wrong with
/// the others (for `check`).
pub fn verify(backend: &dyn Backend, key: &MasterKey) -> Result<(usize, Vec<Error>)> {
    let (sound, damaged) = raw_records(backend, key, &mut AuditCache::default())?;
    Ok((sound.len(), damaged))
}

/// The audit trail, oldest first: every closing record, and every open
/// record that no closing record completes (a command that did not finish);
/// and apart the errors of the records that do not open or are not named
/// after their content: one damaged record must not hide the whole trail.
pub fn records(backend: &dyn Backend, key: &MasterKey) -> Result<(Vec<AuditRecord>, Vec<Error>)> {
    records_cached(backend, key, &mut AuditCache::default())
}

/// Audit records already read, by object name. A record never changes
/// (each is named after its content, and sound ones only are kept), so a
/// process that shows the trail again and again (`serve`, on each refresh)
/// reads only the new ones: it read the whole trail, one request per
/// record on S3, every few seconds.
#[derive(Debug, Default)]
pub struct AuditCache(HashMap<String, AuditRecord>);

/// [`records`], reading only the records `cache` does not hold yet (and
/// forgetting those no longer listed).
pub fn records_cached(
    backend: &dyn Backend,
    key: &MasterKey,
    cache: &mut AuditCache,
) -> Result<(Vec<AuditRecord>, Vec<Error>)> {
    let (all, damaged) = raw_records(backend, key, cache)?;
    let closed: HashSet<(&str, u32, DateTime<Utc>)> = all
        .iter()
        .filter(|r| !r.open)
        .map(AuditRecord::pairing)
        .collect();
    let shown = all
        .iter()
        .filter(|r| !r.open || !closed.contains(&r.pairing()))
        .cloned()
        .collect();
    Ok((shown, damaged))
}

/// Every audit record of the repository, open ones too, oldest first, and
/// the errors of those that do not decrypt (not cairn's) or are not named
/// after their content (a record copied over another would show twice and
/// hide that one).
fn raw_records(
    backend: &dyn Backend,
    key: &MasterKey,
    cache: &mut AuditCache,
) -> Result<(Vec<AuditRecord>, Vec<Error>)> {
    let (mut out, mut damaged) = (Vec::new(), Vec::new());
    let listed = backend.list(FileKind::Audit)?;
    let names: HashSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    cache.0.retain(|name, _| names.contains(name.as_str()));
    for l in &listed {
        if let Some(r) = cache.0.get(&l.name) {
            out.push(r.clone());
            continue;
        }
        let what = format!("audit record {}", l.name);
        let data = match backend.read(FileKind::Audit, &l.name) {
            Ok(d) => d,
            Err(Error::Missing(_)) => continue,
            // One record that cannot be read (a bad sector, a timeout)
            // must not hide the trail, nor stop a check of everything else.
            Err(e) => {
                damaged.push(e);
                continue;
            }
        };
        if Id::from_hex(&l.name).ok() != Some(Id::of_object(&data)) {
            damaged.push(Error::corrupt(what, "content does not match its name"));
            continue;
        }
        match open_msgpack::<AuditRecord>(key, ObjectKind::Audit, &data, &what) {
            Ok(r) => {
                cache.0.insert(l.name.clone(), r.clone());
                out.push(r);
            }
            Err(e) => damaged.push(e),
        }
    }
    out.sort_by_key(|r| (r.started, r.time));
    Ok((out, damaged))
}

/// A backend that notes every object written or deleted in an [`AuditLog`].
pub struct AuditingBackend {
    inner: Arc<dyn Backend>,
    log: Arc<AuditLog>,
    key: MasterKey,
    key_name: String,
}

impl AuditingBackend {
    /// Notes the changes made through it in `log`, writing open records
    /// (through `inner`, under `key`, naming key file `key_name`) first.
    pub fn new(
        inner: Arc<dyn Backend>,
        log: Arc<AuditLog>,
        key: MasterKey,
        key_name: String,
    ) -> AuditingBackend {
        AuditingBackend {
            inner,
            log,
            key,
            key_name,
        }
    }

    /// The open record, before a change of `kind` (locks are not changes).
    fn before(&self, kind: FileKind) -> Result<()> {
        if matches!(kind, FileKind::Lock | FileKind::Audit) {
            return Ok(());
        }
        self.log.open(&*self.inner, &self.key, &self.key_name)
    }
}

impl Backend for AuditingBackend {
    crate::backend::forward_to_inner!(
        location,
        create,
        exists,
        list,
        read,
        read_range,
        stale_temporaries,
        is_remote,
        local_root,
        spool,
        pin,
        cached_copy,
        evict,
        retain_cached_packs,
        prefetch,
        stored_size
    );
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.before(kind)?;
        self.inner.write(kind, name, data)?;
        self.log.note(kind, name, data.len() as u64, true);
        Ok(())
    }
    fn write_file(&self, kind: FileKind, name: &str, file: &std::fs::File, len: u64) -> Result<()> {
        self.before(kind)?;
        self.inner.write_file(kind, name, file, len)?;
        self.log.note(kind, name, len, true);
        Ok(())
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.before(kind)?;
        self.inner.delete(kind, name)?;
        self.log.note(kind, name, 0, false);
        Ok(())
    }
    fn replace_config(&self, data: &[u8]) -> Result<()> {
        self.before(FileKind::Config)?;
        self.inner.replace_config(data)?;
        self.log.note(FileKind::Config, "config", 0, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    #[test]
    fn records_read_once_are_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.create().unwrap();
        let key = MasterKey::generate();
        let log = AuditLog::default();
        for name in ["a", "b"] {
            log.note(FileKind::Snapshot, name, 0, true);
            log.flush(&backend, &key, "k").unwrap();
        }
        let mut cache = AuditCache::default();
        let (first, damaged) = records_cached(&backend, &key, &mut cache).unwrap();
        assert_eq!((first.len(), damaged.len()), (2, 0));
        // Read again, each would now fail: what was read is not.
        for l in backend.list(FileKind::Audit).unwrap() {
            backend.write(FileKind::Audit, &l.name, b"garbage").unwrap();
        }
        let (again, damaged) = records_cached(&backend, &key, &mut cache).unwrap();
        assert_eq!((again, damaged.len()), (first, 0));
        // Without the cache they are read, and found damaged.
        let (none, damaged) = records(&backend, &key).unwrap();
        assert_eq!((none.len(), damaged.len()), (0, 2));
        // One no longer listed is forgotten.
        let gone = backend.list(FileKind::Audit).unwrap().remove(0).name;
        backend.delete(FileKind::Audit, &gone).unwrap();
        let (left, _) = records_cached(&backend, &key, &mut cache).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(cache.0.len(), 1);
    }
}
