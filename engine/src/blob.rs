//! Blob types and the location of a blob inside a pack.

use serde::{Deserialize, Serialize};

use crate::compress::Compression;
use crate::id::Id;

/// What a blob holds. Trees and data go to separate packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
#[repr(u8)]
pub enum BlobType {
    /// File content.
    Data = 0,
    /// A directory listing (tree).
    Tree = 1,
}

impl BlobType {
    /// The stored byte.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// Parses the stored byte.
    pub fn from_byte(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

impl From<BlobType> for u8 {
    fn from(t: BlobType) -> u8 {
        t.to_byte()
    }
}

impl TryFrom<u8> for BlobType {
    type Error = String;
    fn try_from(b: u8) -> Result<BlobType, String> {
        BlobType::from_byte(b).ok_or_else(|| format!("unknown blob type {b}"))
    }
}

/// One blob inside a pack, as listed in the pack header and in index files.
///
/// Encoded as a MessagePack array `[id, type, offset, length, raw_length, compression]`
/// in pack headers, and as a map with these field names in index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedBlob {
    /// Blob ID.
    pub id: Id,
    /// Tree or data.
    pub blob_type: BlobType,
    /// Offset of its ciphertext from the start of the pack.
    pub offset: u32,
    /// Length of its ciphertext including the 16-byte tag.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
    /// How the plaintext was stored inside the ciphertext.
    pub compression: Compression,
}

/// Where a blob lives: its pack and its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: Id,
    /// Its entry in that pack.
    pub blob: PackedBlob,
}

/// The AEAD associated data binding a blob's ciphertext to its ID, type and
/// compression: a blob cannot be swapped for another or re-labelled.
pub fn blob_aad(id: &Id, blob_type: BlobType, compression: Compression) -> [u8; 34] {
    let mut aad = [0u8; 34];
    aad[..32].copy_from_slice(&id.0);
    aad[32] = blob_type.to_byte();
    aad[33] = compression.to_byte();
    aad
}
