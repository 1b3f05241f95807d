//! Choosing a snapshot from a command line: ID, prefix, `latest` or `--at`,
//! narrowed to one source by `--host`, `--path` and `--tag`.

use anyhow::Result;
use cairn_engine::snapshot::{Snapshot, SnapshotFilter};
use cairn_engine::{Id, Repository};
use clap::builder::TypedValueParser;

use crate::timefmt;

/// `--host`, `--path` and `--tag`: which snapshots a command considers.
/// Commands that work on one snapshot pick the newest of those for `--at`
/// and `latest`; find, stats and forget work on all of them.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct SourceFilter {
    /// Only snapshots from this host (also what `latest`, and --at where
    /// a command has it, pick the newest of)
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots that include this source path (repeatable: all must match)
    #[arg(long = "path", value_parser = source_path())]
    pub paths: Vec<String>,
    /// Only snapshots with these tags (a,b: both; repeatable: all must
    /// match; '' matches untagged snapshots)
    #[arg(long = "tag", value_name = "TAGS", value_parser = parse_tag_list_arg)]
    pub tags: Vec<TagList>,
}

/// The tags of one `--tag` filter or `--keep-tag` (a type of its own:
/// clap reads a `Vec<Vec<_>>` field as values per occurrence).
#[derive(Debug, Clone)]
pub struct TagList(pub Vec<String>);

/// Reads `a,b` as the tags a and b; `''` as untagged.
pub fn parse_tag_list_arg(s: &str) -> cairn_engine::Result<TagList> {
    Ok(TagList(cairn_engine::retention::parse_tag_list(s)?))
}

/// Reads a `--path` value in the form a backup records it (`src/a/` from
/// /tmp is `/tmp/src/a`; bytes that are not UTF-8 as `\xNN`), so that it
/// matches what `snapshots` shows. Any bytes: a source's name need not be
/// UTF-8.
pub fn source_path() -> impl clap::builder::TypedValueParser<Value = String> {
    clap::builder::OsStringValueParser::new().try_map(|s| {
        let p = cairn_engine::archiver::absolute(std::path::Path::new(&s))?;
        Ok::<_, cairn_engine::Error>(cairn_engine::archiver::path_strings(&[p]).remove(0))
    })
}

impl SourceFilter {
    /// The engine's form of the filter.
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            host: self.host.clone(),
            paths: self.paths.clone(),
            tags: self.tags.iter().map(|l| l.0.clone()).collect(),
        }
    }
}

/// What narrows a choice, for messages: the non-empty `parts`, joined
/// (`host web1, those holding [/srv]`).
pub fn described(parts: impl IntoIterator<Item = String>) -> String {
    parts
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a command asks of the snapshot it works on, beyond
/// [`SourceFilter`]: with `--at`, the newest snapshot is one that holds
/// these paths, not one of some other source.
#[derive(Debug, Default)]
pub struct Holding {
    /// Every one of these (`ls DIR...`, a restore's or dump's subpath).
    pub all: Vec<String>,
    /// One of these at least, if any (a restore's `--include` paths).
    pub any: Vec<String>,
}

/// [`select`] among the snapshots of one source (`latest` and `--at`: the
/// newest matching `filter`; an explicit ID is taken as is), where `--at`
/// also narrows the choice to snapshots that hold what `holding` names.
pub fn select_holding(
    repo: &Repository,
    spec: Option<&str>,
    at: Option<&str>,
    filter: &SourceFilter,
    holding: &Holding,
) -> Result<(Id, Snapshot)> {
    let source = filter.filter();
    let empty = Holding::default();
    // Only --at: a snapshot whose source paths cover a directory may
    // still not hold it (excluded), so `latest` stays the newest snapshot
    // (of --host, --path, --tag) and fails if it lacks the path, rather
    // than quietly reaching back to another source.
    let holding = if at.is_some() { holding } else { &empty };
    let what = described([
        source.describe(),
        if holding.all.is_empty() {
            String::new()
        } else {
            format!("those holding [{}]", holding.all.join(" "))
        },
        if holding.any.is_empty() {
            String::new()
        } else {
            format!("those holding one of [{}]", holding.any.join(" "))
        },
    ]);
    select_where(repo, spec, at, &what, |s| {
        source.picks(s) && holding.held_by(repo, s)
    })
}

impl Holding {
    /// Whether the source paths of `s` cover what this names. A recovered
    /// snapshot's are not its tree's (`/<tree ID>/...`): there, whether its
    /// root holds the path's first name (it is chosen only with `--tag
    /// recovered`; each `recover` writes one).
    fn held_by(&self, repo: &Repository, s: &Snapshot) -> bool {
        let covered = |d: &String| {
            let p = snapshot_path(d.as_bytes());
            if s.is_recovered() {
                let first = p.trim_start_matches('/').split('/').next().unwrap_or("");
                return repo
                    .load_tree(&s.tree)
                    .is_ok_and(|t| t.find(first.as_bytes()).is_some());
            }
            covers(&s.paths, &p) || (p.contains("\\x") && covers(&s.paths, &lossy(&p)))
        };
        self.all.iter().all(covered) && (self.any.is_empty() || self.any.iter().any(covered))
    }
}

/// The sources (host and paths), other than `chosen`'s, of the snapshots
/// (at or before `at`, if given) that `filter` accepts and that hold what
/// `holding` names: where there are any, `latest` or `--at` chose among
/// sources, and one may hold what another excluded.
pub fn other_sources(
    repo: &Repository,
    at: Option<&str>,
    filter: &SourceFilter,
    holding: &Holding,
    chosen: &Snapshot,
) -> Result<Vec<String>> {
    let t = at.map(timefmt::parse).transpose()?;
    let source = filter.filter();
    let name = |s: &Snapshot| format!("{} [{}]", s.hostname, s.paths.join(" "));
    let mut out: Vec<String> = repo
        .readable_snapshots()?
        .into_iter()
        .filter(|(_, s)| {
            t.is_none_or(|t| s.time <= t) && source.picks(s) && holding.held_by(repo, s)
        })
        .filter(|(_, s)| (&s.hostname, &s.paths) != (&chosen.hostname, &chosen.paths))
        // Only one whose paths meet the chosen one's: --delete acts inside
        // the chosen snapshot's own paths, which a disjoint source (an
        // `/etc` job beside a `/home` one, a stream) cannot lose anything to.
        .filter(|(_, s)| s.paths.iter().any(|p| covers(&chosen.paths, p)))
        .map(|(_, s)| name(&s))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// `ID[:SUBPATH]` split at its first `:`: the ID, which is text (`None`
/// where empty, as in `:SUBPATH` with --at), and the subpath as bytes,
/// whose names need not be UTF-8 (`None` without a `:`).
pub fn split_spec(spec: &std::ffi::OsStr) -> anyhow::Result<(Option<&str>, Option<&[u8]>)> {
    use std::os::unix::ffi::OsStrExt;
    let (id, sub) = cairn_engine::walk::split_spec(spec.as_bytes())
        .map_err(|_| crate::exit::usage("a snapshot ID is text (hex, or `latest`)"))?;
    Ok(((!id.is_empty()).then_some(id), sub))
}

/// A path inside a snapshot as `/a/b`, as snapshots record their sources
/// (bytes that are not UTF-8 as `\xNN`): a subpath may be written
/// relative, with `.`, doubled or trailing slashes.
pub fn snapshot_path(sub: &[u8]) -> String {
    cairn_engine::walk::escaped(&cairn_engine::walk::normalize(sub))
}

/// `path` (from [`snapshot_path`]) as snapshots recorded before format-spec
/// §13 wrote sources: each `\xNN` escape as U+FFFD. Only approximate (a
/// name spelling `\xNN` itself reads as escaped) and only for matching old
/// records.
fn lossy(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(at) = rest.find("\\x") {
        out.push_str(&rest[..at]);
        let hex = rest
            .get(at + 2..at + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex {
            Some(_) => {
                out.push(char::REPLACEMENT_CHARACTER);
                rest = &rest[at + 4..];
            }
            None => {
                out.push_str("\\x");
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// [`select`] among the snapshots `keep` accepts, described as `what` in
/// messages (e.g. `host web1, tags [db]`).
pub fn select_where(
    repo: &Repository,
    spec: Option<&str>,
    at: Option<&str>,
    what: &str,
    keep: impl Fn(&Snapshot) -> bool,
) -> Result<(Id, Snapshot)> {
    let of = if what.is_empty() {
        String::new()
    } else {
        format!(" of {what}")
    };
    if let Some(at) = at {
        let t = timefmt::parse(at)?;
        let (id, s) = repo
            .snapshot_at(t, keep)?
            .ok_or_else(|| anyhow::anyhow!("no snapshot{of} at or before {at}"))?;
        crate::common::note(format_args!(
            "using snapshot {} from {} of [{}] (newest{of} at or before {at})",
            id.short(),
            timefmt::show(&s.time),
            s.paths.join(" "),
        ));
        return Ok((id, s));
    }
    let spec = spec.unwrap_or("latest");
    if spec == "latest" && !what.is_empty() {
        let (id, s) = cairn_engine::snapshot::newest(repo.readable_snapshots()?, keep)
            .ok_or_else(|| anyhow::anyhow!("no snapshot{of}"))?;
        crate::common::note(format_args!(
            "using snapshot {} from {} (newest{of})",
            id.short(),
            timefmt::show(&s.time)
        ));
        return Ok((id, s));
    }
    Ok(repo.find_snapshot(spec)?)
}

/// Whether a snapshot of source paths `sources` holds `dir` or something
/// below it (`/` is in every snapshot).
pub fn covers(sources: &[String], dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    // A source of `/` trims to "" and holds everything.
    let under = |a: &str, b: &str| b.is_empty() || a == b || a.starts_with(&format!("{b}/"));
    dir.is_empty()
        || sources.iter().any(|p| {
            let p = p.trim_end_matches('/');
            under(dir, p) || under(p, dir)
        })
}

#[cfg(test)]
mod tests {
    use super::{covers, lossy, snapshot_path};

    #[test]
    fn paths_with_bytes_that_are_not_utf8_match_new_and_old_records() {
        let p = snapshot_path(b"/srv/lat\xe9n//sub/");
        assert_eq!(p, "/srv/lat\\xe9n/sub");
        assert!(covers(&["/srv/lat\\xe9n".to_string()], &p));
        assert!(!covers(&["/srv/lat\u{fffd}n".to_string()], &p));
        assert_eq!(lossy(&p), "/srv/lat\u{fffd}n/sub");
        assert_eq!(lossy("/a\\xzz\\x4"), "/a\\xzz\\x4");
    }

    #[test]
    fn a_snapshot_of_the_root_covers_every_path() {
        let root = ["/".to_string()];
        assert!(covers(&root, "/home/ann"));
        assert!(covers(&root, "/"));
        let home = ["/home".to_string()];
        assert!(covers(&home, "/home/ann"));
        assert!(covers(&home, "/"));
        assert!(!covers(&home, "/homes"));
        assert!(!covers(&home, "/etc"));
    }
}
