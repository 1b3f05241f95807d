//! Storage backends: where a repository's objects live.
//!
//! The trait is deliberately small (list, read, read a range, write once,
//! delete) so that object storage and fault-injecting test backends fit
//! without the layers above knowing which one they talk to.

mod append_only;
mod cached;
mod fault;
mod local;
mod s3;
mod verified;

pub use append_only::AppendOnlyBackend;
pub use cached::CachedBackend;
pub(crate) use cached::create_private_dir;
pub use fault::{FAULTS_ENV, FaultBackend};
pub use local::LocalBackend;
pub(crate) use local::ensure_layout;
pub use s3::{BucketLookup, S3Backend, S3Credentials, S3Location, S3Options};
pub use verified::VerifiedWrites;

use crate::error::Result;

/// The kinds of objects a repository stores, each in its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The single `config` object.
    Config,
    /// Key files (`keys/<id>`).
    Key,
    /// Packfiles (`data/<id[0..2]>/<id>`).
    Pack,
    /// Index files (`index/<id>`).
    Index,
    /// Snapshot records (`snapshots/<id>`).
    Snapshot,
    /// Lock records (`locks/<id>`).
    Lock,
    /// Compression dictionaries (`dicts/<8 hex digits>`).
    Dict,
    /// Audit records (`audit/<id>`): which command changed what.
    Audit,
}

impl FileKind {
    /// Every kind, in the order `init` creates their directories.
    pub const ALL: [FileKind; 8] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Lock,
        FileKind::Dict,
        FileKind::Audit,
    ];

    /// The directory (or file, for the config) name in the repository.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "keys",
            FileKind::Pack => "data",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Lock => "locks",
            FileKind::Dict => "dicts",
            FileKind::Audit => "audit",
        }
    }

    /// Whether `name` can name an object of this kind: 64 lower-case hex
    /// digits (8 for a dictionary). Listings leave other names out: a
    /// README or a file manager's thumbnails in `locks/` are not locks
    /// every command must wait for, and not packs for prune to delete.
    pub fn is_object_name(self, name: &str) -> bool {
        let hex = |len| crate::id::is_lower_hex(name, len);
        match self {
            FileKind::Config => name == "config",
            FileKind::Dict => hex(8),
            _ => hex(64),
        }
    }
}

/// One listed object: its name, stored size and, where the store reports
/// it, when it was written by the store's own clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Object name (64 hex digits for everything but the config).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time as the storage records it (a file's mtime, an S3
    /// object's `LastModified`): one clock for every writer, which lock ages
    /// are measured against (see [`crate::lock`]).
    pub modified: Option<std::time::SystemTime>,
}

/// A place to keep repository objects.
///
/// Writes are atomic and durable: after `write` returns, the object is
/// complete on stable storage or absent, never half there. Objects are never
/// overwritten in place; the one exception is [`Backend::replace_config`].
pub trait Backend: Send + Sync {
    /// Human-readable location, used in messages.
    fn location(&self) -> String;
    /// Creates the repository's namespaces (directories, bucket prefix).
    fn create(&self) -> Result<()>;
    /// Whether the object exists. Asked before writes: a backend may answer
    /// it more cheaply than [`Backend::stored_size`], so decisions that
    /// remove or give up data go by `stored_size`.
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        Ok(self.stored_size(kind, name)?.is_some())
    }
    /// All objects of a kind, with their sizes.
    fn list(&self, kind: FileKind) -> Result<Vec<Listed>>;
    /// The whole object.
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    /// `len` bytes from `offset`; fails if the object is shorter.
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Stores an object atomically and durably.
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;
    /// Like [`Backend::write`], the object being the first `len` bytes of
    /// `file` (one from [`Backend::spool`]). The default reads them into
    /// memory and calls `write`, so a wrapper that changes `write` changes
    /// this too.
    fn write_file(&self, kind: FileKind, name: &str, file: &std::fs::File, len: u64) -> Result<()> {
        let mut data = vec![0; usize::try_from(len).expect("a pack fits in memory")];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut data, 0)
            .map_err(|e| crate::error::Error::io("read", "a pack spooled to disk", e))?;
        self.write(kind, name, &data)
    }
    /// An empty unnamed file on the store's own file system, to build a
    /// pack in before [`Backend::write_file`] stores it, so that a pack is
    /// not held in memory while it fills; `None` where that saves nothing
    /// (the pack is then built in memory).
    fn spool(&self) -> Option<std::fs::File> {
        None
    }
    /// Removes an object; removing a missing object is not an error.
    fn delete(&self, kind: FileKind, name: &str) -> Result<()>;
    /// The size the store holds the object with; `None` when it is absent.
    fn stored_size(&self, kind: FileKind, name: &str) -> Result<Option<u64>>;

    /// Counts the leftovers of writes that never completed (a temporary
    /// file a crash kept from being renamed, a multipart upload never
    /// finished) older than `age` and, with `remove`, removes them.
    /// Returns how many there were (were removed). Backends without such
    /// leftovers have none.
    fn stale_temporaries(&self, _age: std::time::Duration, _remove: bool) -> Result<usize> {
        Ok(0)
    }

    /// The directory the repository is in, for a backend on the local
    /// file system (so that a restore can refuse to write into it).
    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }

    /// Replaces the existing `config` object atomically: a reader sees the
    /// old or the new one, never neither and never a mix. Only switching
    /// append-only mode and raising the format version use it. Backends that cannot do this refuse.
    fn replace_config(&self, _data: &[u8]) -> Result<()> {
        Err(crate::error::Error::Backend(format!(
            "{}: this backend cannot rewrite the config",
            self.location()
        )))
    }

    /// Whether reads cross a network (worth caching tree packs and
    /// snapshots locally). Local disks say no.
    fn is_remote(&self) -> bool {
        false
    }

    /// Keeps a whole copy of the object in a local cache, if this backend
    /// has one, so later range reads are served locally.
    fn pin(&self, _kind: FileKind, _name: &str) -> Result<()> {
        Ok(())
    }

    /// This machine's cached copy of the object, if it keeps one whose
    /// content matches its name: a pack damaged or lost in the store may be
    /// whole here (tree packs of a remote repository are), and a repair
    /// that went by the store alone dropped its blobs, and with them this
    /// copy. Backends that keep no copies have none.
    fn cached_copy(&self, _kind: FileKind, _name: &str) -> Option<Vec<u8>> {
        None
    }

    /// Drops a locally cached copy (one that failed authentication);
    /// returns whether there was one, i.e. whether reading again may help.
    fn evict(&self, _kind: FileKind, _name: &str) -> bool {
        false
    }

    /// A hint that the whole object will be read soon, so the backend may
    /// start fetching it while the caller still works on something else.
    /// Backends that cannot read ahead ignore it; errors are ignored too
    /// (the real read reports them).
    fn prefetch(&self, _kind: FileKind, _name: &str) {}

    /// Drops the local copies of packs that `keep` refuses (those a prune
    /// elsewhere deleted), if this backend keeps copies; returns whether it
    /// does (those that keep none ignore the call).
    fn retain_cached_packs(&self, _keep: &dyn Fn(&crate::id::Id) -> bool) -> bool {
        false
    }
}

/// Inside an `impl Backend for W`, where `W` has a field `inner` holding the
/// backend it wraps: implements each named method by passing the call to
/// `inner` unchanged. A wrapper spells out only the verbs it changes.
macro_rules! forward_to_inner {
    ($($method:ident),* $(,)?) => {
        $($crate::backend::forward_to_inner!(@ $method);)*
    };
    (@ location) => {
        fn location(&self) -> String {
            self.inner.location()
        }
    };
    (@ create) => {
        fn create(&self) -> $crate::error::Result<()> {
            self.inner.create()
        }
    };
    (@ exists) => {
        fn exists(&self, kind: $crate::backend::FileKind, name: &str) -> $crate::error::Result<bool> {
            self.inner.exists(kind, name)
        }
    };
    (@ list) => {
        fn list(
            &self,
            kind: $crate::backend::FileKind,
        ) -> $crate::error::Result<Vec<$crate::backend::Listed>> {
            self.inner.list(kind)
        }
    };
    (@ read) => {
        fn read(&self, kind: $crate::backend::FileKind, name: &str) -> $crate::error::Result<Vec<u8>> {
            self.inner.read(kind, name)
        }
    };
    (@ read_range) => {
        fn read_range(
            &self,
            kind: $crate::backend::FileKind,
            name: &str,
            offset: u64,
            len: u64,
        ) -> $crate::error::Result<Vec<u8>> {
            self.inner.read_range(kind, name, offset, len)
        }
    };
    (@ write) => {
        fn write(&self, kind: $crate::backend::FileKind, name: &str, data: &[u8]) -> $crate::error::Result<()> {
            self.inner.write(kind, name, data)
        }
    };
    (@ delete) => {
        fn delete(&self, kind: $crate::backend::FileKind, name: &str) -> $crate::error::Result<()> {
            self.inner.delete(kind, name)
        }
    };
    (@ stored_size) => {
        fn stored_size(
            &self,
            kind: $crate::backend::FileKind,
            name: &str,
        ) -> $crate::error::Result<Option<u64>> {
            self.inner.stored_size(kind, name)
        }
    };
    (@ stale_temporaries) => {
        fn stale_temporaries(&self, age: std::time::Duration, remove: bool) -> $crate::error::Result<usize> {
            self.inner.stale_temporaries(age, remove)
        }
    };
    (@ replace_config) => {
        fn replace_config(&self, data: &[u8]) -> $crate::error::Result<()> {
            self.inner.replace_config(data)
        }
    };
    (@ spool) => {
        fn spool(&self) -> Option<std::fs::File> {
            self.inner.spool()
        }
    };
    (@ local_root) => {
        fn local_root(&self) -> Option<&std::path::Path> {
            self.inner.local_root()
        }
    };
    (@ is_remote) => {
        fn is_remote(&self) -> bool {
            self.inner.is_remote()
        }
    };
    (@ pin) => {
        fn pin(&self, kind: $crate::backend::FileKind, name: &str) -> $crate::error::Result<()> {
            self.inner.pin(kind, name)
        }
    };
    (@ cached_copy) => {
        fn cached_copy(&self, kind: $crate::backend::FileKind, name: &str) -> Option<Vec<u8>> {
            self.inner.cached_copy(kind, name)
        }
    };
    (@ evict) => {
        fn evict(&self, kind: $crate::backend::FileKind, name: &str) -> bool {
            self.inner.evict(kind, name)
        }
    };
    (@ prefetch) => {
        fn prefetch(&self, kind: $crate::backend::FileKind, name: &str) {
            self.inner.prefetch(kind, name)
        }
    };
    (@ retain_cached_packs) => {
        fn retain_cached_packs(&self, keep: &dyn Fn(&$crate::id::Id) -> bool) -> bool {
            self.inner.retain_cached_packs(keep)
        }
    };
}
pub(crate) use forward_to_inner;

/// A local store whose writes go through a test's own `write` (given the
/// store beneath): another process acting between a write and what follows
/// it, with a real store under both.
#[cfg(test)]
pub(crate) struct WriteHook<F> {
    pub inner: LocalBackend,
    pub write: F,
}

#[cfg(test)]
impl<F> Backend for WriteHook<F>
where
    F: Fn(&LocalBackend, FileKind, &str, &[u8]) -> crate::error::Result<()> + Send + Sync,
{
    forward_to_inner!(
        location,
        create,
        list,
        read,
        read_range,
        delete,
        stored_size
    );

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> crate::error::Result<()> {
        (self.write)(&self.inner, kind, name, data)
    }
}

#[cfg(test)]
mod tests {
    use super::FileKind;

    #[test]
    fn only_lower_case_hex_names_are_objects() {
        let id = "0f".repeat(32);
        for kind in [
            FileKind::Key,
            FileKind::Pack,
            FileKind::Lock,
            FileKind::Audit,
        ] {
            assert!(kind.is_object_name(&id));
            for stray in [
                "README",
                ".tmp-1",
                "",
                &id.to_uppercase(),
                &id[1..],
                &format!("{id}0"),
            ] {
                assert!(!kind.is_object_name(stray), "{kind:?} {stray}");
            }
        }
        assert!(FileKind::Dict.is_object_name("12345678"));
        assert!(!FileKind::Dict.is_object_name(&id));
        assert!(FileKind::Config.is_object_name("config"));
    }
}
