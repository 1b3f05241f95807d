//! Parsing the times users type (`--time`, `--at`).

use anyhow::{Result, bail};
use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};

/// Parses `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DD` (local
/// time; the end of that day, for `--at` and upper bounds) or RFC 3339.
pub fn parse(s: &str) -> Result<DateTime<FixedOffset>> {
    parse_as(s, (23, 59, 59))
}

/// [`parse`], but a bare date is the start of that day (for lower bounds,
/// and a time to record).
pub fn parse_from(s: &str) -> Result<DateTime<FixedOffset>> {
    parse_as(s, (0, 0, 0))
}

/// [`parse`] with a bare date at `(hour, minute, second)`.
fn parse_as(s: &str, (h, m, sec): (u32, u32, u32)) -> Result<DateTime<FixedOffset>> {
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
            .and_then(|d| d.and_hms_opt(h, m, sec))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_date_ends_an_upper_bound_and_starts_a_lower_one() {
        let at = |t: DateTime<FixedOffset>| t.with_timezone(&Local).format("%F %T").to_string();
        assert_eq!(at(parse("2026-12-02").unwrap()), "2026-12-02 23:59:59");
        assert_eq!(at(parse_from("2026-12-02").unwrap()), "2026-12-02 00:00:00");
        assert_eq!(
            at(parse_from("2026-12-02 07:30").unwrap()),
            "2026-12-02 07:30:00"
        );
        assert!(parse_from("2026-13-02").is_err());
    }
}
