//! Parsing the times users type (`--time`, `--at`).

use anyhow::{Result, bail};
use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};

/// Parses `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DD` (local
/// time; the end of that day, for `--at` and upper bounds) or RFC 3339.
pub fn parse(s: &str) -> Result<DateTime<FixedOffset>> {
    parse_as(s, true)
}

/// [`parse`], but a bare date is the start of that day (for lower bounds,
/// and a time to record).
pub fn parse_from(s: &str) -> Result<DateTime<FixedOffset>> {
    parse_as(s, false)
}

/// [`parse`] (`end`: a bare date is the last instant of its day, a time
/// the clock shows twice its later one) or [`parse_from`] (the first
/// instant of the day, the earlier one; a midnight that a clock change
/// skips is the first time the day has).
fn parse_as(s: &str, end: bool) -> Result<DateTime<FixedOffset>> {
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
    .map(|t| (t, false))
    .or_else(|| {
        let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
        let t = if end {
            day.and_hms_nano_opt(23, 59, 59, 999_999_999)
        } else {
            day.and_hms_opt(0, 0, 0)
        };
        Some((t?, true))
    });
    let Some((naive, bare)) = naive else {
        bail!("cannot parse time {s:?}: use \"YYYY-MM-DD HH:MM:SS\" (local time) or RFC 3339");
    };
    let at = |t: &NaiveDateTime| {
        let local = Local.from_local_datetime(t);
        if end {
            local.latest()
        } else {
            local.earliest()
        }
    };
    // A day's first instant when its midnight is skipped (gaps are whole
    // quarters of an hour, at most a few hours).
    let found = at(&naive).or_else(|| {
        (bare && !end)
            .then(|| (1..=16).find_map(|q| at(&(naive + chrono::Duration::minutes(15 * q)))))
            .flatten()
    });
    match found {
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
        let end = parse("2026-12-02").unwrap();
        assert_eq!(end.timestamp_subsec_nanos(), 999_999_999, "{end}");
        assert_eq!(at(parse_from("2026-12-02").unwrap()), "2026-12-02 00:00:00");
        assert_eq!(
            at(parse_from("2026-12-02 07:30").unwrap()),
            "2026-12-02 07:30:00"
        );
        assert!(parse_from("2026-13-02").is_err());
    }
}
