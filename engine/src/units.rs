//! Parsing the sizes users type.

use crate::error::{Error, Result};

/// Seconds from environment variable `var` (a test's override), or
/// `default` if it is unset or not a whole number.
pub(crate) fn seconds_from_env(var: &str, default: std::time::Duration) -> std::time::Duration {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(default)
}

/// Parses sizes like `1024`, `500K`, `2M`, `1G`, `1T` (binary units).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "invalid size {s:?}: use a number with an optional K, M, G or T suffix"
            ))
        })
}

/// Writes a duration the way [`parse_duration`] reads it, to the two
/// largest units (`2d3h`, `1h30m`, `45s`).
pub fn format_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 && d.subsec_millis() > 0 {
        return format!("{}ms", d.subsec_millis());
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0 || first == 3)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}

/// The longest duration [`parse_duration`] accepts: 100 years. Timers and
/// clocks add durations to the present, which longer ones would overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(36_500 * 86_400);

/// Parses durations like `500ms`, `1s`, `10m`, `1h30m`, `2d` (a bare
/// number is seconds), up to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let d = parse_any_duration(s)?;
    if d > MAX_DURATION {
        return Err(Error::InvalidInput(format!(
            "duration {s:?} is too long: at most 100 years (36500d)"
        )));
    }
    Ok(d)
}

fn parse_any_duration(s: &str) -> Result<std::time::Duration> {
    let bad = || {
        Error::InvalidInput(format!(
            "invalid duration {s:?}: use e.g. 500ms, 1s, 10m, 1h30m or 2d"
        ))
    };
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(n));
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let part = std::time::Duration::from_millis(n.checked_mul(ms).ok_or_else(bad)?);
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    if t.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("2M").unwrap(), 2 << 20);
        assert_eq!(super::parse_size("17").unwrap(), 17);
        assert_eq!(super::parse_size("1k").unwrap(), 1024);
        assert!(super::parse_size("x").is_err());
        assert!(super::parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations_written_back() {
        use std::time::Duration;
        let f = |s| super::format_duration(Duration::from_secs(s));
        assert_eq!(f(0), "0s");
        assert_eq!(f(45), "45s");
        assert_eq!(f(5400), "1h30m");
        assert_eq!(f(2 * 86_400 + 3 * 3600 + 59), "2d3h");
        assert_eq!(f(86_400 + 30), "1d");
        for s in [45, 5400, 86_400, 3 * 3600 + 60] {
            assert_eq!(super::parse_duration(&f(s)).unwrap().as_secs(), s);
        }
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        let d = |s| super::parse_duration(s).unwrap();
        assert_eq!(d("90"), Duration::from_secs(90));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("2d"), Duration::from_secs(172_800));
        assert_eq!(d("36500d"), super::MAX_DURATION);
        for bad in [
            "",
            "1x",
            "h",
            "99999999999999999999d",
            "36501d",
            "18446744073709551615",
        ] {
            assert!(super::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
