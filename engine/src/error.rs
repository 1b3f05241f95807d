//! The one error type every public engine function returns.
//!
//! Each variant is a *kind* the CLI maps to an exit code, so callers never
//! have to parse messages to decide what happened.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine, grouped by what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No repository at the given location (no `config` object).
    #[error("repository does not exist at {0} (create one with `cairn init`)")]
    RepositoryNotFound(String),

    /// The S3 bucket of a repository location does not exist (a listing
    /// answered NoSuchBucket): `init` would not help, as it makes no buckets.
    #[error(
        "{0}: the bucket does not exist (or these credentials cannot see it); create it \
         with the storage provider's tools, then `cairn init` makes a repository in it"
    )]
    BucketNotFound(String),

    /// A repository already exists where `init` was asked to create one.
    #[error("a repository already exists at {0}")]
    RepositoryExists(String),

    /// No key file could be opened with the password given; `damaged`
    /// names key files that could not be read (the password may be theirs).
    #[error("wrong password or no key found for it in the repository{}", damaged_keys(.damaged))]
    WrongPassword {
        /// Key files that could not be read or opened, with why.
        damaged: Vec<String>,
    },

    /// Another process holds a lock that conflicts with the requested operation.
    #[error("repository is locked: {0}")]
    Locked(String),

    /// An object in the repository failed authentication, decoding or a consistency check.
    #[error("corrupt object {object}: {reason}")]
    Corrupt {
        /// What was damaged, e.g. `pack 3fa2…` or `snapshot 9c1e…`.
        object: String,
        /// What exactly was wrong.
        reason: String,
    },

    /// An object the repository refers to is missing.
    #[error("missing object {0}")]
    Missing(String),

    /// The user asked for something that cannot be done as asked.
    #[error("{0}")]
    InvalidInput(String),

    /// A filesystem operation on a local path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted (`open`, `read`, `write`, ...).
        op: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The storage backend failed.
    #[error("backend: {0}")]
    Backend(String),

    /// An external program or database cairn drives (a SQLite capture,
    /// pg_dump, psql, a `--stdin-from-command` command) failed; the
    /// message says which and how.
    #[error("{0}")]
    CommandFailed(String),

    /// The operation would delete or replace data, and the repository or the
    /// key in use is append-only.
    #[error("refused: {0}")]
    AppendOnly(String),

    /// The operation was interrupted on request (for example SIGINT).
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// Builds an [`Error::Corrupt`] naming the damaged object.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// A copy of this error, for reporting one failure to several waiting
    /// threads ([`std::io::Error`] cannot be cloned: its kind and message
    /// are kept).
    pub fn replica(&self) -> Error {
        match self {
            Error::RepositoryNotFound(s) => Error::RepositoryNotFound(s.clone()),
            Error::BucketNotFound(s) => Error::BucketNotFound(s.clone()),
            Error::RepositoryExists(s) => Error::RepositoryExists(s.clone()),
            Error::WrongPassword { damaged } => Error::WrongPassword {
                damaged: damaged.clone(),
            },
            Error::Locked(s) => Error::Locked(s.clone()),
            Error::Corrupt { object, reason } => Error::corrupt(object.clone(), reason.clone()),
            Error::Missing(s) => Error::Missing(s.clone()),
            Error::InvalidInput(s) => Error::InvalidInput(s.clone()),
            Error::Io { op, path, source } => Error::io(
                op,
                path.clone(),
                std::io::Error::new(source.kind(), source.to_string()),
            ),
            Error::Backend(s) => Error::Backend(s.clone()),
            Error::CommandFailed(s) => Error::CommandFailed(s.clone()),
            Error::AppendOnly(s) => Error::AppendOnly(s.clone()),
            Error::Interrupted => Error::Interrupted,
        }
    }

    /// Whether this is the local cache's index database failing on its
    /// disk (full, read-only, failing), or held by another process past the
    /// wait: neither damage nor the repository's.
    pub fn is_cache_io(&self) -> bool {
        matches!(self, Error::Io { path, .. } if path.as_os_str() == crate::localindex::CACHE_INDEX)
    }

    /// Builds an [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Adds path context to `std::io::Result`s.
pub trait IoContext<T> {
    /// Converts the error into [`Error::Io`] naming `op` and `path`.
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

/// `text` with control characters other than newlines and tabs escaped
/// (`\u{1b}`), for the few messages the engine writes to standard error
/// itself: an error's text may quote a server's answer, and raw escape
/// sequences would act on the user's terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The note after a wrong password about key files that could not be read.
fn damaged_keys(damaged: &[String]) -> String {
    if damaged.is_empty() {
        return String::new();
    }
    let (files, key, restore) = match damaged.len() {
        1 => ("a key file", "that key", "the key file"),
        _ => ("key files", "one of those keys", "the key files"),
    };
    format!(
        "; but {files} could not be read ({}): if the password is for {key}, restore {restore} \
         from a copy of the repository",
        damaged.join("; "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_but_newlines_and_tabs() {
        assert_eq!(
            printable("server: \u{1b}[2Jgone\r\n\tat once\u{7f}, é"),
            "server: \\u{1b}[2Jgone\\r\n\tat once\\u{7f}, é"
        );
    }
}
