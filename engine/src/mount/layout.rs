//! The virtual directories above the snapshots: `snapshots/<time>`,
//! `ids/<short id>`, `hosts/<host>/<time>`, `tags/<tag>/<time>` and
//! `latest` (restic's layout).
//!
//! A [`Layout`] is rebuilt from the snapshot list whenever it is re-read;
//! it only names things, so rebuilding it is cheap and never touches trees.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Local, SecondsFormat};

use crate::id::Id;
use crate::lineage::Logical;

/// Shortest ID prefix shown under `ids/` (as in `cairn snapshots`).
const SHORT_ID_HEX: usize = 8;

/// A directory of the virtual layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VDir {
    /// `snapshots/`: one directory per snapshot, named by its time.
    Snapshots,
    /// `ids/`: one directory per snapshot, named by its short ID.
    Ids,
    /// `hosts/`: one directory per host.
    Hosts,
    /// `tags/`: one directory per tag.
    Tags,
    /// `hosts/<host>/`: that host's snapshots, named by time.
    Host(String),
    /// `tags/<tag>/`: the snapshots with that tag, named by time.
    Tag(String),
}

/// What a name in a virtual directory leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Child {
    /// The snapshot at this index of [`Layout::snaps`].
    Snapshot(usize),
    /// A virtual directory.
    Dir(VDir),
}

/// One snapshot as the mount shows it.
#[derive(Debug, Clone)]
pub struct SnapInfo {
    /// The snapshot ID (the representative record of a logical snapshot).
    pub id: Id,
    /// Its root tree.
    pub tree: Id,
    /// Its time.
    pub time: DateTime<FixedOffset>,
    /// Its directory name under `snapshots/`, `hosts/` and `tags/`.
    pub name: String,
    /// Written by `recover` ([`crate::snapshot::Snapshot::is_recovered`]).
    pub recovered: bool,
}

/// The names of every virtual directory, built from the snapshot list.
#[derive(Debug, Default)]
pub struct Layout {
    /// Snapshots, oldest first.
    pub snaps: Vec<SnapInfo>,
    by_name: BTreeMap<String, usize>,
    by_short: BTreeMap<String, usize>,
    hosts: BTreeMap<String, BTreeMap<String, usize>>,
    tags: BTreeMap<String, BTreeMap<String, usize>>,
    /// When a running mount rebuilt it (none for the first): the virtual
    /// directories' modification time must change with every new listing,
    /// or the kernel keeps serving the old one from its cache.
    pub rebuilt: Option<std::time::SystemTime>,
}

/// Makes a host name or tag usable as one path component.
fn component(s: &str) -> String {
    let c = s.replace(['/', '\0'], "_");
    if c.is_empty() || c == "." || c == ".." {
        format!("_{c}")
    } else {
        c
    }
}

/// Local time to the second with its offset, like restic's directory names.
fn time_name(t: &DateTime<FixedOffset>) -> String {
    t.with_timezone(&Local)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The shortest prefix length (at least [`SHORT_ID_HEX`]) that tells all `ids` apart.
fn short_len(ids: &[Id]) -> usize {
    let mut hex: Vec<String> = ids.iter().map(Id::to_hex).collect();
    hex.sort();
    let common = hex
        .windows(2)
        .map(|w| {
            w[0].bytes()
                .zip(w[1].bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap_or(0);
    (common + 1).clamp(SHORT_ID_HEX, 64)
}

impl Layout {
    /// Names the snapshots (oldest first). Two snapshots in the same second
    /// share a time; the later ones get `-<short id>` appended, so the
    /// oldest keeps the plain name and names do not shift as new ones come.
    pub fn build(list: &[Logical]) -> Layout {
        let mut l = Layout::default();
        let ids: Vec<Id> = list.iter().map(|s| s.id).collect();
        let short = short_len(&ids);
        for s in list {
            let mut name = time_name(&s.snapshot.time);
            if l.by_name.contains_key(&name) {
                name = format!("{name}-{}", &s.id.to_hex()[..short]);
            }
            let i = l.snaps.len();
            l.by_name.insert(name.clone(), i);
            l.by_short.insert(s.id.to_hex()[..short].to_string(), i);
            l.hosts
                .entry(component(&s.snapshot.hostname))
                .or_default()
                .insert(name.clone(), i);
            for t in &s.snapshot.tags {
                l.tags
                    .entry(component(t))
                    .or_default()
                    .insert(name.clone(), i);
            }
            l.snaps.push(SnapInfo {
                id: s.id,
                tree: s.snapshot.tree,
                time: s.snapshot.time,
                name,
                recovered: s.snapshot.is_recovered(),
            });
        }
        l
    }

    /// The newest snapshot that is not a recovered one, passing over those
    /// dated ahead of now unless all are ([`crate::snapshot::newest`]).
    pub fn latest(&self) -> Option<&SnapInfo> {
        crate::snapshot::newest_by(self.snaps.iter().filter(|s| !s.recovered), |s| s.time)
    }

    /// The entries of `dir`, sorted by name; `None` if `dir` no longer exists.
    pub fn list(&self, dir: &VDir) -> Option<Vec<(String, Child)>> {
        let snaps = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(n, i)| (n.clone(), Child::Snapshot(*i)))
                .collect()
        };
        Some(match dir {
            VDir::Snapshots => snaps(&self.by_name),
            VDir::Ids => snaps(&self.by_short),
            VDir::Hosts => self
                .hosts
                .keys()
                .map(|h| (h.clone(), Child::Dir(VDir::Host(h.clone()))))
                .collect(),
            VDir::Tags => self
                .tags
                .keys()
                .map(|t| (t.clone(), Child::Dir(VDir::Tag(t.clone()))))
                .collect(),
            VDir::Host(h) => snaps(self.hosts.get(h)?),
            VDir::Tag(t) => snaps(self.tags.get(t)?),
        })
    }

    /// Looks up one name in `dir`.
    pub fn lookup(&self, dir: &VDir, name: &str) -> Option<Child> {
        let snap = |m: &BTreeMap<String, usize>| m.get(name).map(|i| Child::Snapshot(*i));
        match dir {
            VDir::Snapshots => snap(&self.by_name),
            VDir::Ids => snap(&self.by_short),
            VDir::Hosts => self
                .hosts
                .contains_key(name)
                .then(|| Child::Dir(VDir::Host(name.to_string()))),
            VDir::Tags => self
                .tags
                .contains_key(name)
                .then(|| Child::Dir(VDir::Tag(name.to_string()))),
            VDir::Host(h) => snap(self.hosts.get(h)?),
            VDir::Tag(t) => snap(self.tags.get(t)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    fn logical(id: u8, time: &str, host: &str, tags: &[&str]) -> Logical {
        let mut raw = [0u8; 32];
        raw[0] = 0xab;
        raw[31] = id;
        Logical {
            id: Id(raw),
            snapshot: Snapshot {
                time: DateTime::parse_from_rfc3339(time).unwrap(),
                tree: Id::default(),
                paths: vec!["/x".into()],
                hostname: host.into(),
                username: "u".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                parent: None,
                program_version: "cairn test".into(),
                summary: None,
                partial: false,
                hold: false,
                original: None,
                copied_from: None,
                former: Vec::new(),
                unknown: Default::default(),
                databases: Vec::new(),
            },
            records: vec![Id(raw)],
        }
    }

    #[test]
    fn names_are_unique_and_grouped() {
        let l = Layout::build(&[
            logical(1, "2026-01-03T10:15:00Z", "alpha", &["nightly"]),
            logical(2, "2026-01-03T10:15:00.5Z", "beta/x", &["nightly", ""]),
            logical(3, "2026-01-04T10:15:00Z", "alpha", &[]),
        ]);
        let names: Vec<String> = l
            .list(&VDir::Snapshots)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names.len(), 3);
        // Same second: the second one is told apart by its ID.
        assert!(
            names[1].starts_with(&names[0]) && names[1].len() > names[0].len(),
            "{names:?}"
        );
        // The IDs share their first bytes, so the short names grow until unique.
        let ids: Vec<String> = l
            .list(&VDir::Ids)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert!(ids.iter().all(|i| i.len() == 64), "{ids:?}");
        let hosts: Vec<String> = l
            .list(&VDir::Hosts)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(hosts, ["alpha", "beta_x"]);
        assert_eq!(l.list(&VDir::Host("alpha".into())).unwrap().len(), 2);
        let tags: Vec<String> = l
            .list(&VDir::Tags)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(tags, ["_", "nightly"]);
        assert_eq!(l.latest().unwrap().id.0[31], 3);
        assert_eq!(
            l.lookup(&VDir::Snapshots, &names[2]),
            Some(Child::Snapshot(2))
        );
        assert_eq!(l.lookup(&VDir::Host("gone".into()), "x"), None);
    }

    #[test]
    fn short_ids_are_eight_digits_when_unique() {
        assert_eq!(short_len(&[Id([1; 32]), Id([2; 32])]), 8);
        assert_eq!(short_len(&[]), 8);
    }
}
