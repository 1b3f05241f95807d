//! Choosing a snapshot from a command line: ID, prefix, `latest` or `--at`.

use anyhow::Result;
use cairn_engine::snapshot::Snapshot;
use cairn_engine::{Id, Repository};

use crate::timefmt;

/// Resolves `spec` (ID, prefix, `latest`) or, when `at` is given, the newest
/// snapshot at or before that time; tells the user which one `--at` chose.
pub fn select(repo: &Repository, spec: Option<&str>, at: Option<&str>) -> Result<(Id, Snapshot)> {
    if let Some(at) = at {
        let t = timefmt::parse(at)?;
        let (id, s) = repo.snapshot_at(t, |_| true)?;
        eprintln!(
            "using snapshot {} from {} (newest at or before {at})",
            id.short(),
            timefmt::show(&s.time)
        );
        return Ok((id, s));
    }
    Ok(repo.find_snapshot(spec.unwrap_or("latest"))?)
}
