//! Reading a plain-format `pg_dump` stream as it goes by: rows per table,
//! counted from its COPY sections, recorded at capture so that a restore
//! can be checked against them.

use std::collections::BTreeMap;
use std::io::Read;

/// Counts the rows of every `COPY ... FROM stdin;` section of a plain
/// `pg_dump` stream while passing the stream through unchanged. COPY text
/// format escapes newlines inside values, so each line up to the closing
/// `\.` is one row.
pub struct CopyCounter<R> {
    inner: R,
    /// The current line, kept only up to [`LINE_KEEP`] bytes (a COPY header
    /// is short; data lines only need their start).
    line: Vec<u8>,
    /// The table whose COPY section the stream is in.
    table: Option<String>,
    tables: BTreeMap<String, u64>,
}

/// How much of a line [`CopyCounter`] keeps to recognise it.
const LINE_KEEP: usize = 64 * 1024;

impl<R: Read> CopyCounter<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        CopyCounter {
            inner,
            line: Vec::new(),
            table: None,
            tables: BTreeMap::new(),
        }
    }

    /// Rows per table seen so far, keyed by the table's name as the dump
    /// writes it (schema-qualified and quoted where needed, e.g.
    /// `public."Order"`).
    pub fn tables(&self) -> &BTreeMap<String, u64> {
        &self.tables
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        match &self.table {
            Some(_) if line == b"\\." => self.table = None,
            Some(t) => *self.tables.get_mut(t).expect("table entered") += 1,
            None => {
                if let Some(t) = copy_header(&line) {
                    self.tables.entry(t.clone()).or_insert(0);
                    self.table = Some(t);
                }
            }
        }
    }
}

impl<R: Read> Read for CopyCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.keep(&rest[..i]);
                    self.end_line();
                    rest = &rest[i + 1..];
                }
                None => {
                    self.keep(rest);
                    rest = &[];
                }
            }
        }
        Ok(n)
    }
}

impl<R> CopyCounter<R> {
    fn keep(&mut self, part: &[u8]) {
        let room = LINE_KEEP.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }
}

/// The table a `COPY <table> [(columns)] FROM stdin;` line loads, as
/// written (quoted identifiers may hold spaces and parentheses).
fn copy_header(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("COPY ")?;
    if !rest.ends_with(" FROM stdin;") {
        return None;
    }
    let mut quoted = false;
    let end = rest
        .char_indices()
        .find(|&(_, c)| {
            if c == '"' {
                quoted = !quoted;
            }
            c == ' ' && !quoted
        })
        .map(|(i, _)| i)?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(dump: &str, read_size: usize) -> BTreeMap<String, u64> {
        struct Small<'a>(&'a [u8], usize);
        impl Read for Small<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut c = CopyCounter::new(Small(dump.as_bytes(), read_size));
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        assert_eq!(out, dump.as_bytes(), "the stream passes through unchanged");
        c.tables().clone()
    }

    #[test]
    fn copy_sections_are_counted_across_read_boundaries() {
        let dump = "SET search_path = '';\n\
            CREATE TABLE public.a (x int);\n\
            COPY public.a (x) FROM stdin;\n1\n2\n3\n\\.\n\n\
            COPY public.\"odd (name) \"\"x\"\"\" (y, z) FROM stdin;\n\\.\n\
            COPY public.b FROM stdin;\nline with \\\\. inside\n\\N\n\\.\n\
            -- COPY public.c FROM stdin;\n";
        for size in [1, 2, 3, 7, 4096] {
            let t = count(dump, size);
            assert_eq!(
                t.into_iter().collect::<Vec<_>>(),
                [
                    ("public.\"odd (name) \"\"x\"\"\"".to_string(), 0),
                    ("public.a".to_string(), 3),
                    ("public.b".to_string(), 2),
                ],
                "read size {size}"
            );
        }
    }
}
