//! Reading a plain-format `pg_dump` stream as it goes by: rows per table,
//! counted from its COPY sections, recorded at capture so that a restore
//! can be checked against them.

use std::collections::BTreeMap;
use std::io::Read;

/// Counts the rows of every `COPY ... FROM stdin;` section of a plain
/// `pg_dump` stream while passing the stream through unchanged. COPY text
/// format escapes newlines inside values, so each line up to the closing
/// `\.` is one row. Outside the sections the SQL is followed ([`Lexer`]):
/// a line that only looks like a COPY header, inside a string (a comment on
/// a table, a function's body) or a comment, starts no section.
pub struct CopyCounter<R> {
    inner: R,
    /// The current line, kept only up to [`LINE_KEEP`] bytes (a table's
    /// name is at a COPY header's start; data lines only need their start).
    line: Vec<u8>,
    /// The current line's last bytes, for the end of a header longer than
    /// [`LINE_KEEP`] (a table of a thousand columns).
    tail: Vec<u8>,
    /// The current line began where a statement may begin.
    line_may_start: bool,
    lexer: Lexer,
    /// The table whose COPY section the stream is in.
    table: Option<String>,
    tables: BTreeMap<String, u64>,
}

/// Where the SQL outside COPY sections is: what a line break means
/// depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Between tokens.
    Code,
    /// In `'...'`; `true` for `E'...'`, where a backslash escapes.
    Quoted(bool),
    /// Right after a backslash in an `E'...'` string.
    QuotedEscape,
    /// In `"..."`.
    Identifier,
    /// After `$`: a dollar quote's tag, if it ends with `$`.
    Tag(Vec<u8>),
    /// In `$tag$...$tag$`: the closing delimiter and how much of it matched.
    Dollar(Vec<u8>, usize),
    /// In `-- ...` up to the end of the line.
    LineComment,
    /// In `/* ... */`, nested this deep.
    BlockComment(u32),
}

/// PostgreSQL's lexical structure, as much of it as says whether a byte is
/// code, inside a literal, or inside a comment.
#[derive(Debug)]
struct Lexer {
    state: State,
    /// The last byte seen (for `--`, `/*`, `*/`, `E'`).
    prev: u8,
    /// The one before it.
    prev2: u8,
    /// No token since the last `;` (or the start).
    statement_start: bool,
    /// Whether the last string closed was an `E'...'` one: `''` inside it
    /// closes and reopens it.
    last_escaping: bool,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

impl Lexer {
    fn new() -> Lexer {
        Lexer {
            state: State::Code,
            prev: b'\n',
            prev2: b'\n',
            statement_start: true,
            last_escaping: false,
        }
    }

    /// Whether a statement may begin here (a COPY header, say).
    fn may_start_statement(&self) -> bool {
        self.state == State::Code && self.statement_start
    }

    fn feed(&mut self, b: u8) {
        let state = std::mem::replace(&mut self.state, State::Code);
        self.state = match state {
            // `/*` opens; its `*` must not also close (`/*/` is no comment's
            // end).
            State::Code if b == b'*' && self.prev == b'/' => {
                return self.comment_edge(State::BlockComment(1));
            }
            State::Code => self.code(b),
            State::Quoted(e) if b == b'\'' => {
                self.last_escaping = e;
                State::Code
            }
            State::Quoted(true) if b == b'\\' => State::QuotedEscape,
            State::QuotedEscape => State::Quoted(true),
            s @ State::Quoted(_) => s,
            State::Identifier if b == b'"' => State::Code,
            State::Identifier => State::Identifier,
            State::Tag(tag) if b == b'$' => {
                let mut close = vec![b'$'];
                close.extend_from_slice(&tag);
                close.push(b'$');
                State::Dollar(close, 0)
            }
            State::Tag(mut tag) if is_ident(b) && !(tag.is_empty() && b.is_ascii_digit()) => {
                tag.push(b);
                State::Tag(tag)
            }
            // `$1`, `a$b`: no dollar quote; this byte is code again.
            State::Tag(_) => self.code(b),
            State::Dollar(close, at) => {
                let at = if b == close[at] {
                    at + 1
                } else {
                    usize::from(b == close[0])
                };
                if at == close.len() {
                    State::Code
                } else {
                    State::Dollar(close, at)
                }
            }
            State::LineComment if b == b'\n' => State::Code,
            State::LineComment => State::LineComment,
            State::BlockComment(d) if self.prev == b'*' && b == b'/' => {
                return self.comment_edge(match d {
                    1 => State::Code,
                    d => State::BlockComment(d - 1),
                });
            }
            State::BlockComment(d) if self.prev == b'/' && b == b'*' => {
                return self.comment_edge(State::BlockComment(d + 1));
            }
            s @ State::BlockComment(_) => s,
        };
        self.prev2 = self.prev;
        self.prev = b;
    }

    /// Enters `next` at the second byte of a `/*` or `*/`: both bytes are
    /// spent, so neither starts another (`/*/` does not close, `*/*` does
    /// not reopen).
    fn comment_edge(&mut self, next: State) {
        self.state = next;
        self.prev = 0;
        self.prev2 = 0;
    }

    /// The state after byte `b` met between tokens.
    fn code(&mut self, b: u8) -> State {
        match b {
            b'\'' => {
                self.statement_start = false;
                let e = if self.prev == b'\'' {
                    self.last_escaping
                } else {
                    matches!(self.prev, b'E' | b'e') && !is_ident(self.prev2)
                };
                State::Quoted(e)
            }
            b'"' => {
                self.statement_start = false;
                State::Identifier
            }
            b'$' if !is_ident(self.prev) && self.prev != b'$' => State::Tag(Vec::new()),
            b'-' if self.prev == b'-' => State::LineComment,
            b';' => {
                self.statement_start = true;
                State::Code
            }
            // The first `-` or `/` of a comment is no token yet.
            b'-' | b'/' => State::Code,
            b if b.is_ascii_whitespace() => State::Code,
            _ => {
                self.statement_start = false;
                State::Code
            }
        }
    }
}

/// How much of a line [`CopyCounter`] keeps to recognise it.
const LINE_KEEP: usize = 64 * 1024;

impl<R: Read> CopyCounter<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        CopyCounter {
            inner,
            line: Vec::new(),
            tail: Vec::new(),
            line_may_start: true,
            lexer: Lexer::new(),
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
        // Cleared, not taken: its buffer serves every line (each a row).
        let ends_as_header = self.tail.ends_with(FROM_STDIN);
        self.tail.clear();
        match &self.table {
            Some(_) if line == b"\\." => self.table = None,
            Some(t) => *self.tables.get_mut(t).expect("table entered") += 1,
            None => {
                let header = self.line_may_start && ends_as_header;
                if let Some(t) = copy_header(&line).filter(|_| header) {
                    self.tables.entry(t.clone()).or_insert(0);
                    self.table = Some(t);
                    // The section's data is no SQL; after `\.` a statement
                    // begins.
                    self.lexer = Lexer::new();
                }
            }
        }
        self.line_may_start = self.table.is_none() && self.lexer.may_start_statement();
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
                    if self.table.is_none() {
                        self.lexer.feed(b'\n');
                    }
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
    /// Takes in part of the current line (without its line break).
    fn keep(&mut self, part: &[u8]) {
        let room = LINE_KEEP.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
        // Only the last bytes can end the line: a row's are not copied.
        self.tail
            .extend_from_slice(&part[part.len().saturating_sub(FROM_STDIN.len())..]);
        let extra = self.tail.len().saturating_sub(FROM_STDIN.len());
        self.tail.drain(..extra);
        if self.table.is_none() {
            for &b in part {
                self.lexer.feed(b);
            }
        }
    }
}

/// How a COPY header line ends.
const FROM_STDIN: &[u8] = b" FROM stdin;";

/// The table a `COPY <table> [(columns)] FROM stdin;` line loads, as
/// written (quoted identifiers may hold spaces and parentheses), from the
/// line's start (its end is checked by the caller). Dumps are taken in
/// UTF-8; a name that is not (a `SQL_ASCII` database's) is kept with its
/// stray bytes replaced, rather than its section read as SQL: the counter
/// then lost its place, and no table after it was counted.
fn copy_header(line: &[u8]) -> Option<String> {
    let line = String::from_utf8_lossy(line);
    let rest = line.strip_prefix("COPY ")?;
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
        count_bytes(dump.as_bytes(), read_size)
    }

    fn count_bytes(dump: &[u8], read_size: usize) -> BTreeMap<String, u64> {
        struct Small<'a>(&'a [u8], usize);
        impl Read for Small<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut c = CopyCounter::new(Small(dump, read_size));
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        assert_eq!(out, dump, "the stream passes through unchanged");
        c.tables().clone()
    }

    #[test]
    fn copy_lines_inside_strings_and_comments_start_no_section() {
        let dump = "COMMENT ON TABLE public.t IS 'Bulk load with:\n\
            COPY public.t FROM stdin;\nthen it''s counted';\n\
            COMMENT ON TABLE public.u IS E'it\\'s\n\
            COPY public.u FROM stdin;\n';\n\
            CREATE FUNCTION public.f() RETURNS text AS $body$\n\
            COPY public.t FROM stdin;\n$x$ $$ $body$ LANGUAGE sql;\n\
            CREATE FUNCTION public.g() RETURNS text AS $$\n\
            COPY public.t FROM stdin;\n$$ LANGUAGE sql;\n\
            /* a comment /* nested */\n\
            COPY public.t FROM stdin;\n*/\n\
            /*/ not closed by its own star\n\
            COPY public.t FROM stdin;\n*/\n\
            SELECT 1\n\
            COPY public.t FROM stdin;\n;\n\
            COPY public.\"t;x\" (\"a'b\") FROM stdin;\n1\n\\.\n\
            COPY public.t FROM stdin;\nrow one\nit's data, not SQL\n\\.\n\
            COPY public.u FROM stdin;\n\\.\n";
        for size in [1, 3, 4096] {
            let t = count(dump, size);
            assert_eq!(
                t.into_iter().collect::<Vec<_>>(),
                [
                    ("public.\"t;x\"".to_string(), 1),
                    ("public.t".to_string(), 2),
                    ("public.u".to_string(), 0),
                ],
                "read size {size}"
            );
        }
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

    #[test]
    fn a_header_not_in_utf_8_or_longer_than_kept_loses_no_table_after_it() {
        // A SQL_ASCII database's LATIN1 name, and a table of 1,100 columns
        // (a header of 70 KB): their sections were read as SQL, and no
        // table after them was counted.
        let columns: Vec<String> = (0..1100)
            .map(|i| format!("c{i:04}_{}", "x".repeat(57)))
            .collect();
        let mut dump = b"COPY public.\"caf\xe9\" (a) FROM stdin;\n1\n2\n\\.\n".to_vec();
        dump.extend(format!("COPY public.wide ({}) FROM stdin;\n", columns.join(", ")).bytes());
        dump.extend(b"1\n\\.\nCOPY public.after (b) FROM stdin;\n1\n2\n3\n\\.\n");
        for size in [5, 4096, 1 << 20] {
            let t = count_bytes(&dump, size);
            assert_eq!(
                t.into_iter().collect::<Vec<_>>(),
                [
                    ("public.\"caf\u{fffd}\"".to_string(), 2),
                    ("public.after".to_string(), 3),
                    ("public.wide".to_string(), 1),
                ],
                "read size {size}"
            );
        }
    }
}
