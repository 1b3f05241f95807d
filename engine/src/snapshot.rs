//! Snapshot records: the root of one point-in-time backup.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Counters describing what a backup did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Files not seen in the parent snapshot.
    pub files_new: u64,
    /// Files whose metadata changed since the parent (content re-read).
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unmodified: u64,
    /// Directories.
    pub dirs: u64,
    /// Other entries (symlinks, devices, FIFOs).
    #[serde(default)]
    pub others: u64,
    /// File content bytes actually read.
    pub bytes_read: u64,
    /// Total size of all files in the snapshot.
    pub total_bytes: u64,
    /// Bytes written to the repository (packs, after compression and encryption).
    pub data_added: u64,
    /// New blobs stored.
    pub blobs_added: u64,
    /// Entries that could not be read.
    #[serde(default)]
    pub errors: u64,
    /// When the backup started (RFC 3339).
    pub backup_start: String,
    /// When it ended (RFC 3339).
    pub backup_end: String,
}

/// The payload of a `snapshots/<id>` object (MessagePack with named fields,
/// inside an envelope of kind 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Point in time the snapshot represents (RFC 3339 with offset).
    pub time: DateTime<FixedOffset>,
    /// Root tree blob.
    pub tree: Id,
    /// The paths given to `backup`, absolute.
    pub paths: Vec<String>,
    /// Host the backup ran on (or `--host`).
    pub hostname: String,
    /// User it ran as.
    pub username: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The snapshot used for change detection, if any.
    #[serde(default)]
    pub parent: Option<Id>,
    /// `cairn <version>` that wrote it.
    pub program_version: String,
    /// What the backup did.
    #[serde(default)]
    pub summary: Option<Summary>,
    /// Some source entries could not be read; the snapshot is incomplete.
    #[serde(default)]
    pub partial: bool,
    /// Under legal hold: nothing removes it until the hold is released.
    /// Omitted when false, so records without a hold keep their old bytes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hold: bool,
    /// The ID this snapshot had before it was first rewritten (by `hold`),
    /// so users can still find it; omitted for records never rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
    /// Databases captured consistently (SQLite online backup, pg_dump), with
    /// what `verify-restore` checks them against; omitted when empty so
    /// ordinary records keep their old bytes (format-spec/capture.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseCapture>,
    /// Where `copy` took this snapshot from; omitted for snapshots made
    /// here, so their records keep their old bytes (format-spec/snapshot-copy.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<CopiedFrom>,
    /// The IDs the snapshot had between `original` and this record, oldest
    /// first, so that an ID shown before the latest rewrite still finds it
    /// (format-spec/snapshot-hold.md); omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former: Vec<Id>,
    /// Fields this build does not know (a newer one wrote them): kept, in
    /// their order, when the record is written again (`tag`, `hold`,
    /// `copy`), as spec W13 asks. Read and written by [`decode`] and
    /// [`encode`], not by serde.
    #[serde(skip)]
    pub unknown: UnknownFields,
}

pub use crate::unknown::UnknownFields;

/// Every field name [`Snapshot`] knows (a test checks it against serde's).
const FIELDS: [&str; 15] = [
    "time",
    "tree",
    "paths",
    "hostname",
    "username",
    "tags",
    "parent",
    "program_version",
    "summary",
    "partial",
    "hold",
    "original",
    "databases",
    "copied_from",
    "former",
];

/// Decodes a snapshot record's payload, keeping the fields it does not know.
pub fn decode(payload: &[u8], what: &str) -> crate::error::Result<Snapshot> {
    let mut s: Snapshot = crate::envelope::from_msgpack(payload, what)?;
    s.unknown = UnknownFields::of(payload, &FIELDS);
    Ok(s)
}

/// Encodes a snapshot record's payload: the known fields as serde writes
/// them, then the unknown ones it was read with.
pub fn encode(s: &Snapshot) -> Vec<u8> {
    s.unknown.appended_to(crate::envelope::to_msgpack(s))
}

/// The origin of a snapshot written by `copy` (format-spec/snapshot-copy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedFrom {
    /// The source repository's ID (its config `id`).
    pub repository: Id,
    /// The source snapshot's lineage: the ID it had there before any rewrite.
    pub snapshot: Id,
    /// The source snapshot's root tree, under the source repository's key
    /// (lets a later copy reuse this copy's translated subtrees).
    pub tree: Id,
    /// Where the snapshot was first made, when that is not `repository`
    /// (a copy of a copy): copying from there again then finds this copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A snapshot's first repository and its lineage there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The repository's ID (its config `id`).
    pub repository: Id,
    /// The snapshot's lineage in that repository.
    pub snapshot: Id,
}

/// How one database in a snapshot was captured (format-spec/capture.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseCapture {
    /// `sqlite` or `postgres`.
    pub kind: String,
    /// The absolute path of the captured file inside the snapshot.
    pub path: String,
    /// Database name (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Server version (PostgreSQL) or library version (SQLite) at capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Dump format (`plain` for pg_dump); omitted for SQLite's own file format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Rows per table, counted in the captured copy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, u64>,
}

/// The tag of snapshots written by `recover` (crate::recover).
pub const RECOVERED_TAG: &str = "recovered";
/// The tag `repair snapshots` gives the copies it writes.
pub const REPAIRED_TAG: &str = "repaired";
/// The tag a rewritten snapshot carries (`rewrite`).
pub const REWRITTEN_TAG: &str = "rewritten";
/// Tags that say what a record is, not a user's label: `copy` pairs no
/// rewritten or repaired copy with its source's trees, a repaired record
/// stands for its damaged one, and a recovered one is never `latest`. Kept
/// through `tag --set`, and never removed.
pub const MARKER_TAGS: [&str; 3] = [REWRITTEN_TAG, REPAIRED_TAG, RECOVERED_TAG];

/// Refuses to remove a tag of [`MARKER_TAGS`].
pub fn check_removable_tags<S: AsRef<str>>(remove: &[S]) -> crate::error::Result<()> {
    match remove
        .iter()
        .map(|t| t.as_ref().trim())
        .find(|t| MARKER_TAGS.contains(t))
    {
        Some(t) => Err(crate::error::Error::InvalidInput(format!(
            "the tag `{t}` says what the snapshot is, and copy, forget and restore rely on it: \
             it cannot be removed"
        ))),
        None => Ok(()),
    }
}

/// Refuses a tag of [`MARKER_TAGS`] among tags a user gives (`tag --add`,
/// `tag --set`, `backup --tag`): it changes how the snapshot is treated (a
/// `repaired` one may not be restored with `--delete`, and stands for its
/// lineage), and could not be removed again.
pub fn check_user_tags<S: AsRef<str>>(tags: &[S]) -> crate::error::Result<()> {
    match tags
        .iter()
        .flat_map(|t| tag_parts(t.as_ref()))
        .find(|t| MARKER_TAGS.contains(t))
    {
        Some(t) => Err(crate::error::Error::InvalidInput(format!(
            "the tag `{t}` is cairn's own: it says what a snapshot is (copy, forget and restore \
             rely on it) and is given only by the command that makes such a snapshot"
        ))),
        None => Ok(()),
    }
}

/// The path recorded in snapshots written by `recover`.
pub const RECOVERED_PATH: &str = "/recovered";

impl Snapshot {
    /// Where this snapshot (a record `lineage` of repository `here`) was
    /// first made: through every `copy` it went, back to its backup.
    pub fn origin(&self, here: Id, lineage: Id) -> Origin {
        match self.copied_from {
            Some(CopiedFrom {
                origin: Some(o), ..
            }) => o,
            Some(c) => Origin {
                repository: c.repository,
                snapshot: c.snapshot,
            },
            None => Origin {
                repository: here,
                snapshot: lineage,
            },
        }
    }

    /// The ID that names this snapshot across rewrites: `original` if it was
    /// rewritten, else the record's own ID.
    pub fn lineage(&self, own: Id) -> Id {
        self.original.unwrap_or(own)
    }

    /// Makes this copy of records `replaced` (of lineage `lineage`) their
    /// rewrite: `original` names the lineage and `former` gains the IDs
    /// that are neither it nor already there.
    pub fn rewritten_from(&mut self, lineage: Id, replaced: impl IntoIterator<Item = Id>) {
        self.original = Some(lineage);
        for id in replaced {
            if id != lineage && !self.former.contains(&id) {
                self.former.push(id);
            }
        }
    }

    /// Whether `prefix` (lowercase hex) begins an ID this snapshot had
    /// before its latest rewrite.
    pub fn was_named(&self, prefix: &str) -> bool {
        self.original
            .iter()
            .chain(&self.former)
            .any(|id| id.to_hex().starts_with(prefix))
    }

    /// Which snapshot the record `own` is of: its lineage and its time. No
    /// rewrite changes the time, so a record claiming a lineage with
    /// another one (anyone holding the key can write it) is another
    /// snapshot (see `lineage::logical_snapshots`).
    pub fn logical_key(&self, own: Id) -> (Id, DateTime<FixedOffset>) {
        (self.lineage(own), self.time)
    }

    /// Written by `repair snapshots` (its tag): the copy of a snapshot
    /// without what was lost, which stands for it beside the damaged record.
    pub fn is_repaired(&self) -> bool {
        self.tags.iter().any(|t| t == REPAIRED_TAG)
    }

    /// Forgets the database captures whose file is at or below one of
    /// `removed` (absolute paths in the snapshot; `""` is its whole tree):
    /// with the file gone from the tree, every restore test of the snapshot
    /// would fail on it.
    pub fn forget_captures_under<'a>(&mut self, removed: impl IntoIterator<Item = &'a str>) {
        let removed: Vec<&str> = removed
            .into_iter()
            .map(|r| r.trim_end_matches('/'))
            .collect();
        self.databases.retain(|d| {
            !removed.iter().any(|r| {
                d.path == *r
                    || d.path
                        .strip_prefix(r)
                        .is_some_and(|below| below.starts_with('/'))
            })
        });
    }

    /// Written by `recover` (its tag and its path): lost trees under
    /// directories named by their IDs, not a backup of any source. Never
    /// picked as `latest` or by `--at` unless asked for by its tag
    /// ([`SnapshotFilter::picks`]), so that `restore latest --delete` cannot
    /// take it for the newest backup. A backup its user tagged `recovered`
    /// (before [`check_user_tags`] refused it) is still a backup.
    pub fn is_recovered(&self) -> bool {
        self.paths.len() == 1
            && self.paths[0] == RECOVERED_PATH
            && self.tags.iter().any(|t| t == RECOVERED_TAG)
    }
}

/// Why a snapshot ID prefix picked no single snapshot ([`pick_by_prefix`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// The spec is empty or not hexadecimal.
    #[error("{0:?} is not a snapshot ID, ID prefix or `latest`")]
    NotAnId(String),
    /// No snapshot ID starts with the spec.
    #[error("no snapshot matches {0:?}")]
    NoMatch(String),
    /// Several snapshot IDs start with the spec (the spec, how many).
    #[error("{0:?} matches {1} snapshots; give more digits")]
    Several(String, usize),
}

impl From<PickError> for crate::error::Error {
    fn from(e: PickError) -> Self {
        crate::error::Error::InvalidInput(e.to_string())
    }
}

/// The one candidate whose hex snapshot ID starts with `spec` (any case):
/// the rule every command and the web view apply to a snapshot ID prefix.
/// `candidates` pairs each ID's hex form with what to return for it.
pub fn pick_by_prefix<T>(
    spec: &str,
    candidates: impl IntoIterator<Item = (String, T)>,
) -> Result<T, PickError> {
    let spec_l = spec.to_ascii_lowercase();
    if spec_l.is_empty() || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PickError::NotAnId(spec.to_string()));
    }
    let mut found = candidates
        .into_iter()
        .filter(|(hex, _)| hex.starts_with(&spec_l));
    match (found.next(), found.next()) {
        (Some((_, one)), None) => Ok(one),
        (None, _) => Err(PickError::NoMatch(spec.to_string())),
        (Some(_), Some(_)) => Err(PickError::Several(spec.to_string(), 2 + found.count())),
    }
}

/// Which snapshots a command works on: from one host, including given
/// paths, carrying given tags (restic's `--host`, `--path`, `--tag`). The
/// default matches every snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Only snapshots with this host name.
    pub host: Option<String>,
    /// Only snapshots whose backed-up paths include all of these.
    pub paths: Vec<String>,
    /// Only snapshots carrying every tag of every one of these lists
    /// (`--tag a,b --tag c`: a, b and c; narrower than restic, where a
    /// repeated `--tag` means either list, so that a filter never reaches
    /// more snapshots than it used to); a list of one empty tag means
    /// untagged.
    pub tags: Vec<Vec<String>>,
}

impl SnapshotFilter {
    /// Whether `s` passes the filter.
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| &s.hostname == h)
            && self.tags.iter().all(|l| has_tags(&s.tags, l))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }

    /// Whether `s` may be picked as the newest snapshot (`latest`, `--at`):
    /// it passes the filter, and is not a [`Snapshot::is_recovered`] one
    /// unless the filter asks for that tag.
    pub fn picks(&self, s: &Snapshot) -> bool {
        self.matches(s)
            && (!s.is_recovered() || self.tags.iter().flatten().any(|t| t == RECOVERED_TAG))
    }

    /// True when it lets every snapshot through.
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.paths.is_empty() && self.tags.is_empty()
    }

    /// The filter in words, for messages (empty when there is none).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if !self.paths.is_empty() {
            parts.push(format!("paths [{}]", self.paths.join(" ")));
        }
        if !self.tags.is_empty() {
            let lists: Vec<String> = self.tags.iter().map(|l| l.join(",")).collect();
            parts.push(format!("tags [{}]", lists.join(",")));
        }
        parts.join(", ")
    }
}

/// How far ahead of now a snapshot's time may be and still count as now
/// (clock skew between hosts); past it, the snapshot is *dated ahead*.
pub const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Whether `time` lies more than [`CLOCK_SKEW`] after `now`: a snapshot
/// taken while its host's clock ran ahead.
pub fn dated_ahead(time: &DateTime<FixedOffset>, now: DateTime<chrono::Utc>) -> bool {
    time.with_timezone(&chrono::Utc) > now + CLOCK_SKEW
}

/// The newest of `snapshots` (oldest first) that `pick` accepts, passing
/// over those [`dated_ahead`] unless every one picked is: one snapshot
/// from a clock that ran ahead must not stand for `latest` (a restore of
/// old data) until that date.
pub fn newest(
    snapshots: Vec<(Id, Snapshot)>,
    pick: impl Fn(&Snapshot) -> bool,
) -> Option<(Id, Snapshot)> {
    newest_by(snapshots.into_iter().filter(|(_, s)| pick(s)), |(_, s)| {
        s.time
    })
}

/// [`newest`] over any list of snapshots oldest first, `time` saying when
/// each was taken (the mount's entries, copy's lineages, a borrowed list).
pub fn newest_by<T>(
    items: impl DoubleEndedIterator<Item = T>,
    time: impl Fn(&T) -> DateTime<FixedOffset>,
) -> Option<T> {
    let now = chrono::Utc::now();
    let mut ahead = None;
    for item in items.rev() {
        if !dated_ahead(&time(&item), now) {
            return Some(item);
        }
        ahead.get_or_insert(item);
    }
    ahead
}

/// Tags as they are stored: trimmed, each once, and without empty ones (an
/// empty tag would read as "untagged" in filters, `--tag ''`).
pub fn clean_tags<S: AsRef<str>>(tags: &[S]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags.iter().map(|t| t.as_ref().trim()) {
        // Once each: `--tag x,x` made a `--group-by tags` group of its own.
        if !t.is_empty() && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

/// The tags of a comma-separated list, trimmed: what a `--keep-tag` value
/// means, and what a stored tag counts as when matching (itself, or for
/// one with a comma, written before tags were split at commas, its parts).
pub fn tag_parts(stored: &str) -> impl Iterator<Item = &str> {
    stored.split(',').map(str::trim)
}

/// Whether `snapshot_tags` hold every tag of `list`; the list of one empty
/// tag asks for no tags at all (restic's `--tag ''`) but
/// [`MARKER_TAGS`]: those say what a record is, not how its user labelled
/// it, and a snapshot rewritten to remove a secret (which the marker
/// cannot be removed from) fell out of `--keep-tag ''` and was forgotten.
pub fn has_tags(snapshot_tags: &[String], list: &[String]) -> bool {
    if list.len() == 1 && list[0].is_empty() {
        return user_tags(snapshot_tags).next().is_none();
    }
    list.iter().all(|t| {
        snapshot_tags
            .iter()
            .any(|s| s == t || tag_parts(s).any(|part| part == t))
    })
}

/// The tags of `tags` that are a user's labels (not [`MARKER_TAGS`]).
pub fn user_tags(tags: &[String]) -> impl Iterator<Item = &String> {
    tags.iter().filter(|t| !MARKER_TAGS.contains(&t.as_str()))
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with every field serde can write.
    fn full() -> Snapshot {
        let id = Id([7; 32]);
        Snapshot {
            time: DateTime::parse_from_rfc3339("2026-01-03T10:15:00Z").unwrap(),
            tree: id,
            paths: vec!["/x".into()],
            hostname: "h".into(),
            username: "u".into(),
            tags: vec!["t".into()],
            parent: Some(id),
            program_version: "cairn test".into(),
            summary: Some(Summary::default()),
            partial: true,
            hold: true,
            original: Some(id),
            databases: vec![DatabaseCapture::default()],
            former: vec![id],
            copied_from: Some(CopiedFrom {
                repository: id,
                snapshot: id,
                tree: id,
                origin: None,
            }),
            unknown: UnknownFields::default(),
        }
    }

    #[test]
    fn every_field_serde_writes_is_known() {
        let payload = crate::envelope::to_msgpack(&full());
        let rmpv::Value::Map(entries) = rmpv::decode::read_value(&mut &payload[..]).unwrap() else {
            panic!("not a map")
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str().unwrap()).collect();
        assert_eq!(keys, FIELDS);
    }

    #[test]
    fn a_field_this_build_does_not_know_survives_a_hold_and_a_tag() {
        use crate::backend::FileKind;
        use crate::envelope::ObjectKind;
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::test_repository(dir.path(), Default::default());
        // A record a newer cairn wrote, with a field this one does not know.
        let s = Snapshot {
            hold: false,
            original: None,
            ..full()
        };
        let mut v = rmpv::decode::read_value(&mut &crate::envelope::to_msgpack(&s)[..]).unwrap();
        let future = rmpv::Value::Map(vec![(rmpv::Value::from("x"), rmpv::Value::from(1))]);
        if let rmpv::Value::Map(entries) = &mut v {
            entries.push((rmpv::Value::from("future"), future.clone()));
        }
        let mut payload = Vec::new();
        rmpv::encode::write_value(&mut payload, &v).unwrap();
        let sealed = crate::envelope::seal(repo.key(), ObjectKind::Snapshot, &payload);
        let id = Id::of_object(&sealed);
        repo.backend()
            .write(FileKind::Snapshot, &id.to_hex(), &sealed)
            .unwrap();
        let held = crate::hold::set_hold(&repo, &[id.to_hex()], true).unwrap();
        let tagged =
            crate::hold::change_tags(&repo, &[held[0].new.to_hex()], None, &["more".into()], &[])
                .unwrap();
        let data = repo
            .backend()
            .read(FileKind::Snapshot, &tagged[0].new.to_hex())
            .unwrap();
        let payload = crate::envelope::open(repo.key(), ObjectKind::Snapshot, &data, "s").unwrap();
        let rmpv::Value::Map(entries) = rmpv::decode::read_value(&mut &payload[..]).unwrap() else {
            panic!("not a map")
        };
        assert!(
            entries.contains(&(rmpv::Value::from("future"), future)),
            "{entries:?}"
        );
        let back = repo.load_snapshot(&tagged[0].new).unwrap();
        assert!(back.hold && back.tags.contains(&"more".to_string()));
        assert_eq!(back.unknown.0.len(), 1);
    }

    #[test]
    fn a_tag_stored_with_a_comma_counts_as_its_parts() {
        // Written before tags were split at commas: `--keep-tag nightly`
        // and `--tag keep,nightly` must still find it.
        let stored = vec!["keep,nightly".to_string()];
        assert!(has_tags(&stored, &["nightly".into()]));
        assert!(has_tags(&stored, &["keep".into(), "nightly".into()]));
        assert!(!has_tags(&stored, &["weekly".into()]));
        assert!(!has_tags(&stored, &[String::new()]));
    }

    #[test]
    fn a_prefix_picks_exactly_one_snapshot() {
        let ids = || {
            ["ab12", "ab34", "cd56"]
                .into_iter()
                .map(|h| (h.to_string(), h))
        };
        assert_eq!(pick_by_prefix("CD", ids()), Ok("cd56"));
        assert_eq!(pick_by_prefix("ab3", ids()), Ok("ab34"));
        assert_eq!(
            pick_by_prefix("ab", ids()),
            Err(PickError::Several("ab".into(), 2))
        );
        assert_eq!(
            pick_by_prefix("ef", ids()),
            Err(PickError::NoMatch("ef".into()))
        );
        assert_eq!(
            pick_by_prefix("", ids()),
            Err(PickError::NotAnId("".into()))
        );
        assert_eq!(
            pick_by_prefix("a-b", ids()),
            Err(PickError::NotAnId("a-b".into()))
        );
    }
}
