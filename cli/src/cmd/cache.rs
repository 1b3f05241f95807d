//! `cairn cache [--cleanup]`

use std::time::{Duration, SystemTime};

use anyhow::Result;
use cairn_engine::cachedir::{self, CacheDir};
use chrono::{DateTime, Utc};

use crate::common::{Global, bytes, parse_duration, print_json};
use crate::{exit, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove the caches not used for --max-age (they are rebuilt when
    /// their repository is used again)
    #[arg(long)]
    cleanup: bool,
    /// How long a cache may go unused before it counts as old
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
    max_age: Duration,
    /// Do not add up the size of each cache
    #[arg(long)]
    no_size: bool,
    /// With --cleanup: list what would be removed, remove nothing
    #[arg(short = 'n', long, requires = "cleanup")]
    dry_run: bool,
}

/// Where the caches are, or why there is none to look at.
fn root(g: &Global) -> Result<std::path::PathBuf> {
    if g.no_cache {
        return Err(crate::exit::usage(
            "--no-cache: there is no cache to list or clean up".to_string(),
        ));
    }
    g.open_options().cache_dir.ok_or_else(|| {
        crate::exit::usage(
            "no cache directory: set --cache-dir, CAIRN_CACHE_DIR, XDG_CACHE_HOME or HOME"
                .to_string(),
        )
    })
}

/// `t` as a date, if chrono can hold it (a modification time set far off
/// by hand may not be).
fn utc(t: SystemTime) -> Option<DateTime<Utc>> {
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    DateTime::from_timestamp(i64::try_from(d.as_secs()).ok()?, d.subsec_nanos())
}

fn json_of(c: &CacheDir, old: bool, sizes: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": c.id,
        "path": c.path.to_string_lossy(),
        "last_used": utc(c.last_used).map(|t| t.to_rfc3339()),
        "old": old,
        "place": c.place,
    });
    if sizes {
        v["bytes"] = c.bytes.into();
    }
    v
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let root = root(g)?;
    let sizes = !a.no_size;
    let caches = cachedir::list(&root, sizes)?;
    let now = SystemTime::now();
    let is_old = |c: &CacheDir| c.unused_for(a.max_age, now);
    if !a.cleanup {
        if g.json {
            let all: Vec<_> = caches
                .iter()
                .map(|c| json_of(c, is_old(c), sizes))
                .collect();
            print_json(&all)?;
            return Ok(exit::OK);
        }
        if caches.is_empty() {
            crate::say!("no caches in {}", root.display());
            return Ok(exit::OK);
        }
        crate::say!(
            "{:<10} {:<19}  {:>10}  {:<3}  place",
            "repository",
            "last used",
            "size",
            ""
        );
        for c in &caches {
            let used = utc(c.last_used).map_or("?".into(), |t| timefmt::show(&t.fixed_offset()));
            let size = if sizes { bytes(c.bytes) } else { "-".into() };
            let mark = if is_old(c) { "old" } else { "" };
            // The place tells a repository from its copy elsewhere (same ID).
            let place = c.place.as_deref().unwrap_or("?");
            crate::say!(
                "{:<10} {used:<19}  {size:>10}  {mark:<3}  {place}",
                &c.id[..8]
            );
        }
        let old = caches.iter().filter(|c| is_old(c)).count();
        let total: u64 = caches.iter().map(|c| c.bytes).sum();
        crate::say!(
            "{} cache(s) in {}{}; {old} not used for {}{}",
            caches.len(),
            root.display(),
            if sizes {
                format!(", {}", bytes(total))
            } else {
                String::new()
            },
            cairn_engine::units::format_duration(a.max_age),
            if old > 0 {
                " (`cairn cache --cleanup` removes them)"
            } else {
                ""
            }
        );
        return Ok(exit::OK);
    }
    let mut removed = Vec::new();
    let mut freed = 0;
    for c in caches.iter().filter(|c| is_old(c)) {
        if !a.dry_run && !cachedir::remove_if_unused(c, a.max_age, now)? {
            continue;
        }
        freed += c.bytes;
        removed.push(c);
    }
    if g.json {
        print_json(&serde_json::json!({
            "removed": removed.iter().map(|c| json_of(c, true, sizes)).collect::<Vec<_>>(),
            "dry_run": a.dry_run,
            "bytes": if sizes { Some(freed) } else { None },
        }))?;
    } else if !g.quiet || a.dry_run {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for c in &removed {
            crate::say!("{verb} {}", c.path.display());
        }
        crate::say!(
            "{verb} {} cache(s) not used for {}{}",
            removed.len(),
            cairn_engine::units::format_duration(a.max_age),
            if sizes {
                format!(" ({})", bytes(freed))
            } else {
                String::new()
            }
        );
    }
    Ok(exit::OK)
}
