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
/// in pack headers, and as a map with these field names in index files; a
/// member of a group frame (format version 3) adds `start` (a seventh
/// element, or a seventh key), which every other entry leaves out.
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
    /// For [`Compression::ZstdGroup`]: where the blob starts in the group
    /// frame's decoded bytes. `offset` and `length` are then the frame's,
    /// shared by every member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u32>,
}

impl PackedBlob {
    /// Whether this entry is a member of a group frame.
    pub fn in_group(&self) -> bool {
        self.compression == Compression::ZstdGroup
    }
}

/// The bytes of their pack that `entries` (all of one pack) account for,
/// entry by entry: a blob's ciphertext, or for a member of a group frame a
/// share of the frame in proportion to its length (so a frame's members
/// add up to the frame, and dead members show as the room they waste).
pub fn stored_shares(entries: &[PackedBlob]) -> Vec<u64> {
    let mut frames: std::collections::HashMap<u32, (u64, usize)> = Default::default();
    for b in entries.iter().filter(|b| b.in_group()) {
        let f = frames.entry(b.offset).or_default();
        f.0 += u64::from(b.raw_length);
        f.1 += 1;
    }
    entries
        .iter()
        .map(|b| {
            let length = u64::from(b.length);
            match frames.get(&b.offset).filter(|_| b.in_group()) {
                Some(&(0, members)) => length / members as u64,
                Some(&(raw, _)) => length * u64::from(b.raw_length) / raw,
                None => length,
            }
        })
        .collect()
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
/// compression: a blob cannot be swapped for another or re-labelled. A
/// group frame holds several blobs, so its ID bytes are zero; its members
/// are proven by their keyed hashes.
pub fn entry_aad(entry: &PackedBlob) -> [u8; 34] {
    let id = if entry.in_group() {
        Id([0; 32])
    } else {
        entry.id
    };
    blob_aad(&id, entry.blob_type, entry.compression)
}

/// [`entry_aad`]'s bytes for a blob `id` of `blob_type` stored with `compression`.
pub fn blob_aad(id: &Id, blob_type: BlobType, compression: Compression) -> [u8; 34] {
    let mut aad = [0u8; 34];
    aad[..32].copy_from_slice(&id.0);
    aad[32] = blob_type.to_byte();
    aad[33] = compression.to_byte();
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_members_share_its_bytes_by_length() {
        let entry = |offset, length, raw_length, compression| PackedBlob {
            id: Id::random(),
            blob_type: BlobType::Data,
            offset,
            length,
            raw_length,
            compression,
            start: (compression == Compression::ZstdGroup).then_some(0),
        };
        let g = Compression::ZstdGroup;
        let entries = [
            entry(24, 77, 90, Compression::Zstd),
            entry(101, 200, 100, g),
            entry(101, 200, 300, g),
            entry(101, 200, 0, g),
            // A frame of empty blobs only: its bytes split evenly.
            entry(301, 40, 0, g),
            entry(301, 40, 0, g),
        ];
        assert_eq!(stored_shares(&entries), [77, 50, 150, 0, 20, 20]);
    }
}
