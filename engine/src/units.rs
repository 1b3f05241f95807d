//! Parsing the sizes users type.

use crate::error::{Error, Result};

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
}
