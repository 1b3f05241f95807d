//! Buffered standard output for listings that run to millions of lines,
//! and the `ls -l` line format shared by `ls` and `find`.

use std::io::{BufWriter, StdoutLock, Write};

use anyhow::Result;
use cairn_engine::Error;
use cairn_engine::listing::permissions;
use cairn_engine::tree::{Node, NodeKind};

use crate::common::bytes;
use crate::timefmt;

/// Standard output, locked and buffered.
pub struct Output {
    w: BufWriter<StdoutLock<'static>>,
    /// Escape control characters in lines: standard output is a terminal.
    escape: bool,
}

fn write_error(e: std::io::Error) -> Error {
    Error::io("write", "<stdout>", e)
}

impl Output {
    /// Locks standard output.
    pub fn stdout() -> Output {
        Output {
            escape: stdout_is_terminal(),
            w: BufWriter::new(std::io::stdout().lock()),
        }
    }

    /// Writes `v` as one line of JSON.
    pub fn json_line<T: serde::Serialize>(&mut self, v: &T) -> Result<()> {
        Ok(self.engine_json_line(v)?)
    }

    /// [`Output::json_line`] for use inside engine callbacks.
    pub fn engine_json_line<T: serde::Serialize>(&mut self, v: &T) -> cairn_engine::Result<()> {
        self.json(v)?;
        self.bytes(b"\n")
    }

    /// Writes one line of text, for use inside engine callbacks. On a
    /// terminal, control characters (in file names) are escaped, as GNU
    /// `ls` does: a name must not move the cursor or fake a line.
    pub fn engine_line(&mut self, s: &str) -> cairn_engine::Result<()> {
        if self.escape {
            writeln!(self.w, "{}", printable(s)).map_err(write_error)
        } else {
            writeln!(self.w, "{s}").map_err(write_error)
        }
    }

    /// Writes one line holding a path as the snapshot stores it, for use
    /// inside engine callbacks: its bytes as they are, so that a script
    /// reading a listing gets names it can open, those that are not UTF-8
    /// too (they were written with U+FFFD in place of their bytes). On a
    /// terminal it is escaped by [`printable_bytes`].
    pub fn engine_path_line(&mut self, line: &[u8]) -> cairn_engine::Result<()> {
        if self.escape {
            writeln!(self.w, "{}", printable_bytes(line))
        } else {
            self.w
                .write_all(line)
                .and_then(|()| self.w.write_all(b"\n"))
        }
        .map_err(write_error)
    }

    /// Flushes what is buffered.
    pub fn finish(mut self) -> Result<()> {
        // Named as the other writes are, so that a reader gone away ends
        // the process by SIGPIPE (see main.rs) rather than as an error.
        Ok(self.w.flush().map_err(write_error)?)
    }
}

// Not `io::Write`: every write's error is named as standard output's, so
// that a reader gone away ends the process by SIGPIPE (see main.rs) and
// not as "error: Broken pipe", exit 1.
impl Output {
    /// What `write!` and `writeln!` call.
    pub fn write_fmt(&mut self, args: std::fmt::Arguments) -> cairn_engine::Result<()> {
        self.w.write_fmt(args).map_err(write_error)
    }

    /// Writes `bytes` as they are.
    pub fn bytes(&mut self, bytes: &[u8]) -> cairn_engine::Result<()> {
        self.w.write_all(bytes).map_err(write_error)
    }

    /// Writes `v` as JSON, without a newline.
    pub fn json<T: serde::Serialize>(&mut self, v: &T) -> cairn_engine::Result<()> {
        serde_json::to_writer(&mut self.w, v).map_err(|e| write_error(e.into()))
    }
}

/// `s` with each control character written as an escape (`\n`, `\x1b`,
/// `\u{9b}`), for text from outside (file names, host names, tags, key
/// file fields) shown on a terminal. A backslash is escaped too, as by
/// `ls -b`, so that a name with `\n` (backslash, n) stays apart from one
/// with a newline.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() || c == '\\' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// [`printable`] for bytes that need not be UTF-8: each byte that is not
/// is written `\xNN` (GNU `ls -b` writes it in octal).
pub fn printable_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&printable(chunk.valid()));
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

/// Writes `prefix` and `path` (bytes as stored, escaped on a terminal as
/// [`Output::engine_path_line`] does) as one line on standard output,
/// unbuffered by this process beyond the line: for listings printed while
/// other threads print too (an [`Output`] holds standard output's lock).
pub fn path_line(prefix: &str, path: &[u8]) {
    let line = if stdout_is_terminal() {
        format!("{prefix}{}\n", printable_bytes(path)).into_bytes()
    } else {
        [prefix.as_bytes(), path, b"\n"].concat()
    };
    write_line(&line);
}

/// [`path_line`] for one line of JSON.
pub fn json_line_unlocked<T: serde::Serialize>(v: &T) {
    if let Ok(mut line) = serde_json::to_vec(v) {
        line.push(b'\n');
        write_line(&line);
    }
}

/// Writes a whole `line` under standard output's lock, ignoring failure: a
/// reader gone away stops the listing, not the backup listed (its snapshot
/// is saved; the summary after it then ends the process).
fn write_line(line: &[u8]) {
    let _ = std::io::stdout().lock().write_all(line);
}

/// Whether standard output is a terminal (asked once).
fn stdout_is_terminal() -> bool {
    static TTY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TTY.get_or_init(|| std::io::IsTerminal::is_terminal(&std::io::stdout()))
}

/// Whether standard error is a terminal (asked once).
pub fn stderr_is_terminal() -> bool {
    static TTY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TTY.get_or_init(|| std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// Prints one line of human text (not JSON, not content): on a terminal
/// with control characters escaped ([`printable`]), since it may hold
/// names from the repository, which anyone who could write a snapshot
/// chose (an escape sequence in a host name must not drive the terminal).
pub fn say_line(s: &str) {
    println!("{}", cell(s));
}

/// A table cell of text from outside: escaped as [`say_line`] would
/// escape it, so that columns can be padded to what is shown (a `\\` in
/// a host name pushed the rest of its row right).
pub fn cell(s: &str) -> String {
    if stdout_is_terminal() {
        printable(s).into_owned()
    } else {
        s.to_string()
    }
}

/// Prints a line whose text from outside went through [`cell`] already.
pub fn say_cells(line: &str) {
    println!("{line}");
}

/// [`say_line`] for standard error, where messages quote other programs'
/// output (pg_dump's errors, lines apart): control characters other than
/// newlines and tabs are escaped, backslashes kept. A standard error that
/// cannot be written (a closed terminal, a killed `| tee`) loses the line
/// only: `eprintln!` panicked, which in a `mount` ended the FUSE thread
/// reporting the error and, with the first one, the mount.
pub fn warn_line(s: &str) {
    use std::io::Write;
    if stderr_is_terminal() && s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        let kept: String = s
            .chars()
            .map(|c| match c {
                '\n' | '\t' => c.to_string(),
                c if c.is_control() => c.escape_default().to_string(),
                c => c.to_string(),
            })
            .collect();
        let _ = writeln!(std::io::stderr(), "{kept}");
    } else {
        let _ = writeln!(std::io::stderr(), "{s}");
    }
}

/// `println!` for human text: see [`say_line`].
#[macro_export]
macro_rules! say {
    () => {
        println!()
    };
    ($($t:tt)*) => {
        $crate::output::say_line(&format!($($t)*))
    };
}

/// `eprintln!` for messages that may hold names: see [`warn_line`].
#[macro_export]
macro_rules! warn {
    () => {
        $crate::output::warn_line("")
    };
    ($($t:tt)*) => {
        $crate::output::warn_line(&format!($($t)*))
    };
}

/// restic's long listing line: permissions, uid, gid, size, local mtime,
/// path, and ` -> target` for symlinks; the path and the target as stored
/// (for [`Output::engine_path_line`]).
pub fn long_line(path: &[u8], n: &Node, human: bool) -> Vec<u8> {
    let size = if human {
        bytes(n.size)
    } else {
        n.size.to_string()
    };
    let mtime = chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec)
        .map(|t| timefmt::show(&t.fixed_offset()))
        .unwrap_or_else(|| "?".into());
    let mut line = format!(
        "{} {:>5} {:>5} {:>6} {} ",
        permissions(n.kind, n.mode),
        n.uid,
        n.gid,
        size,
        mtime,
    )
    .into_bytes();
    line.extend_from_slice(path);
    if n.kind == NodeKind::Symlink {
        line.extend_from_slice(b" -> ");
        line.extend_from_slice(&n.link_target);
    }
    line
}

/// The text a panic was raised with (empty if not text).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("")
}

/// Runs `f`; a write to standard output that fails in it (which panics in
/// `println!`, see `main`) is returned as the error it was, for a
/// long-running schedule to report and go on: it ended there for good,
/// and its `--on-failure` hook never ran.
pub fn stdout_failure_caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(p) => match panic_message(&*p).strip_prefix("failed printing to stdout: ") {
            Some(why) => Err(format!("write <stdout>: {why}")),
            None => std::panic::resume_unwind(p),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{printable, printable_bytes};

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_each() {
        assert_eq!(
            printable_bytes(b"caf\xe9/\xff\xfe\n\xc3\xa9"),
            "caf\\xe9/\\xff\\xfe\\n\u{e9}"
        );
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("plain name ü"), "plain name ü");
        assert_eq!(printable("a\nb\u{1b}[2J\u{9b}c"), "a\\nb\\u{1b}[2J\\u{9b}c");
        assert_eq!(printable("back\\slash\n"), "back\\\\slash\\n");
        assert_eq!(printable("back\\slash"), "back\\\\slash");
    }
}
