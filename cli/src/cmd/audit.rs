//! `cairn audit`

use anyhow::Result;
use cairn_engine::audit::{AuditFilter, AuditRecord, Changes, records};
use chrono::Utc;

use crate::common::{Global, bytes, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only changes that ended at or after this time (YYYY-MM-DD HH:MM:SS local, or RFC 3339; a bare date is its start)
    #[arg(long, value_parser = crate::common::parse_time_from)]
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Only changes that started at or before this time (a bare date is its end, a time without fractions the end of its second)
    #[arg(long, value_parser = crate::common::parse_time)]
    until: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Only this command, or commands starting with these words (`key` matches `key add`)
    #[arg(long)]
    command: Option<String>,
    /// Only commands run on this host
    #[arg(long)]
    host: Option<String>,
    /// Only commands run by this user
    #[arg(long)]
    user: Option<String>,
    /// Only commands that used this key (ID or prefix, as `key list` shows)
    #[arg(long, value_parser = crate::common::id_prefix)]
    key: Option<String>,
    /// Only records that added or removed this snapshot (ID or prefix): who wrote it, who deleted it
    #[arg(long, value_parser = crate::common::id_prefix)]
    snapshot: Option<String>,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let filter = AuditFilter {
        since: a.since.map(|t| t.with_timezone(&Utc)),
        until: a.until.map(|t| t.with_timezone(&Utc)),
        command: a.command,
        host: a.host,
        user: a.user,
        key: a.key,
        snapshot: a.snapshot,
    };
    let repo = g.open()?;
    let (records, damaged) = records(&**repo.backend(), repo.key())?;
    let all: Vec<AuditRecord> = records.into_iter().filter(|r| filter.matches(r)).collect();
    // The readable records are shown; the others are named, and the trail
    // is incomplete (exit 1), as `check` says.
    for e in &damaged {
        crate::warn!("error: {e}");
    }
    let code = if damaged.is_empty() {
        exit::OK
    } else {
        crate::warn!(
            "{} audit record(s) cannot be read: the trail shown is incomplete",
            damaged.len()
        );
        exit::FATAL
    };
    if g.json {
        print_json(&all)?;
        return Ok(code);
    }
    for r in &all {
        crate::say!("{}", line(r));
    }
    crate::say!("{} record(s)", all.len());
    Ok(code)
}

fn line(r: &AuditRecord) -> String {
    let what = if r.open {
        let mut s = "not finished: still running, or killed or crashed (its changes are not \
                     recorded)"
            .to_string();
        if !r.removing.snapshots.is_empty() {
            let ids: Vec<&str> = r.removing.snapshots.iter().map(|i| short(i)).collect();
            s.push_str(&format!(
                "; it was to remove snapshot(s) {}",
                ids.join(", ")
            ));
        }
        s
    } else {
        [describe("+", &r.added), describe("-", &r.removed)]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!(
        "{}  {}@{}  key {}  {}: {}",
        r.time
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S"),
        r.username,
        r.hostname,
        short(&r.key),
        if r.command.is_empty() {
            "?"
        } else {
            &r.command
        },
        what
    )
}

/// The first 8 characters of an ID as a record gives it: anyone holding
/// the key can write any text there (a byte slice panicked inside a
/// character, and then every `cairn audit` did).
fn short(id: &str) -> &str {
    id.char_indices().nth(8).map_or(id, |(i, _)| &id[..i])
}

fn describe(sign: &str, c: &Changes) -> String {
    let mut parts = Vec::new();
    let short = |ids: &[String]| {
        ids.iter()
            .map(|i| short(i).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !c.snapshots.is_empty() {
        parts.push(format!("{sign}snapshots {}", short(&c.snapshots)));
    }
    if !c.keys.is_empty() {
        parts.push(format!("{sign}keys {}", short(&c.keys)));
    }
    if c.packs > 0 {
        let size = if c.pack_bytes > 0 {
            format!(" ({})", bytes(c.pack_bytes))
        } else {
            String::new()
        };
        parts.push(format!("{sign}{} packs{size}", c.packs));
    }
    if c.index_files > 0 {
        parts.push(format!("{sign}{} index files", c.index_files));
    }
    if c.dicts > 0 {
        parts.push(format!("{sign}{} dictionaries", c.dicts));
    }
    if c.config {
        parts.push(format!("{sign}config"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_whose_ids_are_not_ascii_is_shown() {
        let id = "aéééééééé".to_string();
        let r = AuditRecord {
            started: chrono::Utc::now(),
            time: chrono::Utc::now(),
            command: "backup".into(),
            hostname: "h".into(),
            username: "u".into(),
            pid: 1,
            key: id.clone(),
            added: Changes {
                snapshots: vec![id.clone()],
                ..Changes::default()
            },
            removed: Changes::default(),
            open: false,
            removing: Changes::default(),
        };
        let shown = line(&r);
        assert!(shown.contains("key aééééééé "), "{shown}");
        assert!(shown.contains("+snapshots aééééééé"), "{shown}");
        let open = AuditRecord {
            open: true,
            removing: r.added.clone(),
            ..r
        };
        assert!(line(&open).contains("snapshot(s) aééééééé"));
    }
}
