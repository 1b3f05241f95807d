//! Parsing the times users type (`--time`, `--at`).

use anyhow::{Result, bail};
use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};

/// Parses `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DD` (local
/// time) or RFC 3339.
pub fn parse(s: &str) -> Result<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t);
    }
    let naive = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(23, 59, 59))
    });
    let Some(naive) = naive else {
        bail!("cannot parse time {s:?}: use \"YYYY-MM-DD HH:MM:SS\" (local time) or RFC 3339");
    };
    match Local.from_local_datetime(&naive).earliest() {
        Some(t) => Ok(t.fixed_offset()),
        None => bail!("{s:?} does not exist in the local time zone"),
    }
}

/// Formats a snapshot time for listings.
pub fn show(t: &DateTime<FixedOffset>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}
