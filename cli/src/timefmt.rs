//! Parsing the times users type (`--time`, `--at`).

use anyhow::{Result, bail};
use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};

/// Parses `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DD` (local
/// time) or RFC 3339, for `--at` and upper bounds: the end of the day
/// given, or of the second (`10:15` is 10:15:00.999999999): snapshot times
/// have fractions of a second that listings leave out, so the time
/// `snapshots` shows chose the one before. Not the end of a minute: `watch`
/// writes several snapshots a minute, and one after the moment meant is
/// the wrong one to restore.
pub fn parse(s: &str) -> Result<DateTime<FixedOffset>> {
    parse_as(s, true)
}

/// [`parse`], but a bare date is the start of that day (for lower bounds,
/// and a time to record).
pub fn parse_from(s: &str) -> Result<DateTime<FixedOffset>> {
    parse_as(s, false)
}

/// [`parse`] (`end`: a bare date is the last instant of its day, a time
/// without fractions the last of its second, a time the clock shows twice
/// its later one) or [`parse_from`] (the first
/// instant of the day, the earlier one; a midnight that a clock change
/// skips is the first time the day has).
fn parse_as(s: &str, end: bool) -> Result<DateTime<FixedOffset>> {
    // What the unit given leaves out, added for an upper bound.
    let second = chrono::Duration::nanoseconds(999_999_999);
    let rest = |unit: chrono::Duration| {
        if end { unit } else { chrono::Duration::zero() }
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        let whole_second = t.timestamp_subsec_nanos() == 0 && !s.contains('.');
        return Ok(t + rest(if whole_second {
            second
        } else {
            chrono::Duration::zero()
        }));
    }
    let naive = [
        ("%Y-%m-%d %H:%M:%S", second),
        ("%Y-%m-%d %H:%M:%S%.f", chrono::Duration::zero()),
        ("%Y-%m-%d %H:%M", second),
        ("%Y-%m-%dT%H:%M:%S", second),
        ("%Y-%m-%dT%H:%M", second),
    ]
    .iter()
    .find_map(|(f, unit)| Some((NaiveDateTime::parse_from_str(s, f).ok()?, *unit)))
    .map(|(t, unit)| (t + rest(unit), false))
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

    #[test]
    fn an_upper_bound_ends_with_the_second_given() {
        let at = |t: DateTime<FixedOffset>| t.with_timezone(&Local).format("%F %T%.9f").to_string();
        assert_eq!(
            at(parse("2026-12-02 07:30").unwrap()),
            "2026-12-02 07:30:00.999999999"
        );
        assert_eq!(
            at(parse("2026-12-02 07:30:15").unwrap()),
            "2026-12-02 07:30:15.999999999"
        );
        assert_eq!(
            at(parse("2026-12-02 07:30:15.25").unwrap()),
            "2026-12-02 07:30:15.250000000"
        );
        assert_eq!(
            at(parse("2026-12-02T07:30").unwrap()),
            "2026-12-02 07:30:00.999999999"
        );
        let rfc = parse("2026-12-02T07:30:15Z").unwrap();
        assert_eq!(rfc.timestamp_subsec_nanos(), 999_999_999, "{rfc}");
        let exact = parse("2026-12-02T07:30:15.000Z").unwrap();
        assert_eq!(exact.timestamp_subsec_nanos(), 0, "{exact}");
        assert_eq!(
            at(parse_from("2026-12-02 07:30:15").unwrap()),
            "2026-12-02 07:30:15.000000000"
        );
    }
}
