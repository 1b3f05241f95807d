//! Which failures cost one entry of a restore and which stop it.

use crate::error::Error;

/// Why an entry could not be restored.
#[derive(Debug)]
pub(super) enum Fail {
    /// This entry (and what is below it) only: reported, and the restore
    /// goes on with the others.
    Entry(Error),
    /// Going on is pointless: the repository cannot be read, or the target
    /// is full or read-only.
    Abort(Error),
}

impl Fail {
    /// A failure of the target filesystem: the entry's own, unless no other
    /// entry could be written either.
    pub(super) fn target(e: Error) -> Fail {
        let whole_target = matches!(
            &e,
            Error::Io { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)
                )
        );
        if whole_target {
            Fail::Abort(e)
        } else {
            Fail::Entry(e)
        }
    }

    /// The error, for a caller that does not go on either way.
    pub(super) fn into_error(self) -> Error {
        match self {
            Fail::Entry(e) | Fail::Abort(e) => e,
        }
    }
}

/// A failure reading the repository: damage to a blob costs the entries
/// that need it; anything else (the backend, the lock, an I/O error on the
/// repository) would fail the next entry just the same.
impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        match e {
            Error::Corrupt { .. } | Error::Missing(_) => Fail::Entry(e),
            e => Fail::Abort(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(errno: i32) -> Error {
        Error::io("write", "/t/f", std::io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn a_full_or_read_only_target_stops_the_restore() {
        for errno in [libc::ENOSPC, libc::EDQUOT, libc::EROFS] {
            assert!(matches!(Fail::target(io(errno)), Fail::Abort(_)), "{errno}");
        }
        for errno in [libc::EACCES, libc::EPERM, libc::EIO, libc::ENAMETOOLONG] {
            assert!(matches!(Fail::target(io(errno)), Fail::Entry(_)), "{errno}");
        }
    }

    #[test]
    fn only_damaged_data_spares_the_rest_of_a_repository_read() {
        assert!(matches!(
            Fail::from(Error::corrupt("pack 1", "bad MAC")),
            Fail::Entry(_)
        ));
        assert!(matches!(
            Fail::from(Error::Missing("blob 2".into())),
            Fail::Entry(_)
        ));
        for e in [
            Error::Backend("connection reset".into()),
            Error::Locked("lock lost".into()),
            Error::Interrupted,
            io(libc::EIO),
        ] {
            assert!(matches!(Fail::from(e), Fail::Abort(_)));
        }
    }
}
