//! The repository config: parameters every client must agree on.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::error::{Error, Result};
use crate::id::Id;

/// Repository format version written by this build. Version 2 adds blobs
/// compressed with a repository dictionary (compression `2`, `dicts/`);
/// version 3 adds group frames of small data blobs (compression `3`).
/// Older repositories are read and written as before, without them.
pub const FORMAT_VERSION: u32 = 3;
/// Oldest repository format version this build reads and writes.
pub const MIN_FORMAT_VERSION: u32 = 1;

/// The payload of the `config` object (MessagePack with named fields, inside
/// an envelope of kind 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Repository format version.
    pub version: u32,
    /// Random repository ID (names the local cache).
    pub id: Id,
    /// How files are cut into chunks.
    pub chunker: ChunkerParams,
    /// zstd level for blobs (0 disables compression).
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// When the repository was created (RFC 3339).
    pub created: String,
    /// Whether the repository refuses every operation that deletes or
    /// replaces data, whatever the key. Omitted when `false`, so a config
    /// without it is byte-for-byte what it was before the field existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append_only: bool,
}

/// Every field name [`Config`] knows (a test checks it against serde's).
pub(crate) const FIELDS: [&str; 7] = [
    "version",
    "id",
    "chunker",
    "compression_level",
    "pack_size",
    "created",
    "append_only",
];

/// The one field of a config that every version keeps: read alone when
/// the whole does not decode, so that a newer version whose other fields
/// changed is named as such, not taken for damage.
#[derive(Deserialize)]
pub(crate) struct VersionOnly {
    /// Repository format version.
    pub version: u32,
}

/// The error for a format version this build does not read, if `version`
/// is one. Not damage: said as "corrupt object config", it sent users to
/// the advice for a damaged config, putting an older one back, which
/// undoes the newer cairn's work.
pub(crate) fn unsupported(version: u32) -> Option<Error> {
    (!(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version)).then(|| {
        Error::InvalidInput(format!(
            "the repository's format version {version} is not supported (this cairn reads \
             versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION}){}",
            if version > FORMAT_VERSION {
                ": it was made or upgraded by a newer cairn; use that version"
            } else {
                ""
            }
        ))
    })
}

impl Config {
    /// Checks that this build can use the repository.
    pub fn validate(&self) -> Result<()> {
        if let Some(e) = unsupported(self.version) {
            return Err(e);
        }
        self.chunker.validate()?;
        if !(-7..=22).contains(&self.compression_level) {
            return Err(Error::InvalidInput(format!(
                "compression level {} out of range -7..=22",
                self.compression_level
            )));
        }
        if !(1 << 20..=1 << 30).contains(&self.pack_size) {
            return Err(Error::InvalidInput(format!(
                "pack size {} out of range 1 MiB..1 GiB",
                self.pack_size
            )));
        }
        Ok(())
    }
}

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// zstd level.
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Argon2id parameters of the first key.
    pub kdf: crate::keyfile::KdfParams,
    /// Create the repository append-only.
    pub append_only: bool,
    /// Format version to write ([`MIN_FORMAT_VERSION`]..=[`FORMAT_VERSION`]):
    /// an older one keeps the repository readable by older clients.
    pub format_version: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_size: 16 << 20,
            kdf: crate::keyfile::KdfParams::for_new_key(),
            append_only: false,
            format_version: FORMAT_VERSION,
        }
    }
}
