//! Index files: the authoritative, encrypted, append-only record of which
//! blobs live in which pack. Written only after the packs they describe.

use serde::{Deserialize, Serialize};

use crate::blob::PackedBlob;
use crate::id::Id;

/// One pack as described by an index file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// Pack object ID.
    pub id: Id,
    /// Pack size in bytes (checked against the backend by `check`).
    pub size: u64,
    /// Its blobs, as in the pack header.
    pub blobs: Vec<PackedBlob>,
}

/// The payload of an `index/<id>` object (MessagePack with named fields,
/// inside an envelope of kind 2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Packs described by this file.
    pub packs: Vec<IndexPack>,
    /// Index files this one replaces (written by prune and repair; empty otherwise).
    #[serde(default)]
    pub supersedes: Vec<Id>,
}
