//! Loading a plain dump with psql's backslash commands shut off.
//!
//! psql runs the backslash commands it meets in its input (`\! cmd` runs a
//! shell command, `\o file` writes a file), and a dump in a snapshot is
//! only as trustworthy as whoever could write snapshots: any holder of the
//! repository key, an append-only one too. `verify-restore` and
//! `restore-db` must not run what such a dump says on the machine that
//! loads it. psql's restricted mode (`\restrict KEY`, since PostgreSQL
//! 13.22, 14.19, 15.14, 16.10 and 17.6) refuses every backslash command
//! but `\unrestrict KEY`. The load is restricted before the dump is read,
//! with a key only this process knows, so that nothing in the dump can
//! lift it. pg_dump of those versions restricts its dumps itself (a
//! `\restrict` line first, an `\unrestrict` last): those two lines are
//! left out, as they would fail inside the restriction.

use std::io::{BufRead, Write};

/// A key for a restriction of this process's own: nothing in a dump can
/// know it.
pub fn fresh_key() -> String {
    let mut b = [0u8; 24];
    crate::crypto::fill_random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether a line of a dump is blank or a comment (`--` to its end): psql
/// runs nothing in it.
fn inert(line: &[u8]) -> bool {
    let t = line.trim_ascii();
    t.is_empty() || t.starts_with(b"--")
}

/// Copies the dump `dump` to `out` without its own restriction: a
/// `\restrict KEY` as its first command, and an `\unrestrict KEY` with the
/// same key as its last (one followed by anything else is kept, and fails
/// inside the caller's restriction). Each line left out is sent as an empty
/// one, so that psql's line numbers stay the dump's.
pub fn feed(dump: impl std::io::Read, out: &mut impl Write) -> std::io::Result<()> {
    let mut r = std::io::BufReader::with_capacity(1 << 20, dump);
    let mut line = Vec::new();
    let mut first = true;
    let mut key: Option<Vec<u8>> = None;
    // The dump's `\unrestrict`, sent only if a command follows it.
    let mut held: Option<Vec<u8>> = None;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let t = line.trim_ascii();
        if inert(t) {
            out.write_all(&line)?;
            continue;
        }
        if std::mem::take(&mut first)
            && let Some(k) = t.strip_prefix(b"\\restrict ")
        {
            key = Some(k.trim_ascii().to_vec());
            out.write_all(b"\n")?;
            continue;
        }
        if let Some(h) = held.take() {
            out.write_all(&h)?;
        }
        let unrestrict = t.strip_prefix(b"\\unrestrict ").map(<[u8]>::trim_ascii);
        if unrestrict.is_some() && unrestrict == key.as_deref() {
            held = Some(line.clone());
            out.write_all(b"\n")?;
            continue;
        }
        out.write_all(&line)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(text: &str) -> String {
        let mut out = Vec::new();
        feed(text.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn only_the_dumps_own_first_restrict_and_last_unrestrict_are_left_out() {
        let own = "--\n-- dump\n--\n\n\\restrict K1\n\nSET a = 1;\nCOPY t (a) FROM stdin;\n\
                   x\\\\unrestrict K1\n\\.\n\n\\unrestrict K1\n\n-- complete\n";
        let want = "--\n-- dump\n--\n\n\n\nSET a = 1;\nCOPY t (a) FROM stdin;\n\
                    x\\\\unrestrict K1\n\\.\n\n\n\n-- complete\n";
        assert_eq!(fed(own), want);
        // Without a restriction of its own, nothing is left out.
        let old = "SET a = 1;\n\\unrestrict K1\n\\restrict K2\n";
        assert_eq!(fed(old), old);
        // Lifted before its end: the lift is kept (and fails).
        let early = "\\restrict K1\n\\unrestrict K1\n\\! echo x\n";
        assert_eq!(fed(early), "\n\n\\unrestrict K1\n\\! echo x\n");
        // Lifted with another key, or mid-line: kept.
        let other = "\\restrict K1\nSELECT 1 \\unrestrict K1\n\\unrestrict K2\n";
        assert_eq!(fed(other), "\nSELECT 1 \\unrestrict K1\n\\unrestrict K2\n");
        // Restricted only after a command: kept.
        let late = "SELECT 1;\n\\restrict K1\n";
        assert_eq!(fed(late), late);
    }
}
