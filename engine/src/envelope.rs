//! The encrypted envelope of standalone objects: config, index files,
//! snapshots, locks, dictionaries and audit records.
//!
//! ```text
//! offset size
//! 0      4    magic "CRNO"
//! 4      1    format version (1)
//! 5      1    object kind (1 config, 2 index, 3 snapshot, 4 lock, 5 dictionary, 6 audit)
//! 6      1    flags: bit 0 = payload is a zstd frame
//! 7      1    reserved (0)
//! 8      16   salt selecting the object subkey
//! 24     n+16 AES-256-GCM(payload), nonce = (domain 2, counter 0), AAD = bytes 0..24
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::{MasterKey, NONCE_DOMAIN_OBJECT, SALT_LEN, TAG_LEN, nonce, random_salt};
use crate::error::{Error, Result};

/// Magic bytes of an encrypted object.
pub const MAGIC: &[u8; 4] = b"CRNO";
/// Envelope format version.
pub const VERSION: u8 = 1;
const HEADER_LEN: usize = 8 + SALT_LEN;
const FLAG_ZSTD: u8 = 1;

/// What an envelope holds; checked on open so that one kind of object can
/// never be passed off as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    /// The repository config.
    Config = 1,
    /// An index file.
    Index = 2,
    /// A snapshot record.
    Snapshot = 3,
    /// A lock record.
    Lock = 4,
    /// A compression dictionary (`dicts/<id>`); its payload is the raw
    /// zstd dictionary, not MessagePack.
    Dictionary = 5,
    /// An audit record (`audit/<id>`).
    Audit = 6,
}

/// Encrypts `payload` into an envelope with a fresh salt.
pub fn seal(key: &MasterKey, kind: ObjectKind, payload: &[u8]) -> Vec<u8> {
    seal_with_salt(key, kind, payload, &random_salt())
}

/// Like [`seal`] with a given salt (for golden test vectors).
pub fn seal_with_salt(
    key: &MasterKey,
    kind: ObjectKind,
    payload: &[u8],
    salt: &[u8; SALT_LEN],
) -> Vec<u8> {
    match compress_smaller(payload) {
        Some(z) => seal_body(key, kind, salt, FLAG_ZSTD, &z),
        None => seal_body(key, kind, salt, 0, payload),
    }
}

/// The payload compressed with zstd, if that makes it smaller.
fn compress_smaller(payload: &[u8]) -> Option<Vec<u8>> {
    zstd::bulk::compress(payload, 3)
        .ok()
        .filter(|z| z.len() < payload.len())
}

/// The envelope of `body` (already compressed as `flags` say), encrypted
/// in place in the object's own buffer: a big index file is not held twice.
fn seal_body(
    key: &MasterKey,
    kind: ObjectKind,
    salt: &[u8; SALT_LEN],
    flags: u8,
    body: &[u8],
) -> Vec<u8> {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4..8].copy_from_slice(&[VERSION, kind as u8, flags, 0]);
    header[8..].copy_from_slice(salt);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    out.extend_from_slice(&header);
    key.object_cipher(salt)
        .seal_append(&nonce(NONCE_DOMAIN_OBJECT, 0), &header, body, &mut out);
    out
}

/// Authenticates and decrypts an envelope; `what` names it in errors.
pub fn open(key: &MasterKey, kind: ObjectKind, data: &[u8], what: &str) -> Result<Vec<u8>> {
    if data.len() < HEADER_LEN + TAG_LEN || &data[..4] != MAGIC {
        return Err(Error::corrupt(
            what,
            "not an encrypted cairn object (bad magic or too short)",
        ));
    }
    if data[4] != VERSION {
        return Err(Error::corrupt(
            what,
            format!("unsupported object version {}", data[4]),
        ));
    }
    if data[6] & !FLAG_ZSTD != 0 || data[7] != 0 {
        return Err(Error::corrupt(
            what,
            "unknown flags or reserved bits set (written by a newer cairn?)",
        ));
    }
    if data[5] != kind as u8 {
        return Err(Error::corrupt(
            what,
            format!("object kind {} where {:?} was expected", data[5], kind),
        ));
    }
    let salt: [u8; SALT_LEN] = data[8..HEADER_LEN].try_into().expect("16 bytes");
    let body = key.object_cipher(&salt).open(
        &nonce(NONCE_DOMAIN_OBJECT, 0),
        &data[..HEADER_LEN],
        &data[HEADER_LEN..],
        what,
    )?;
    if data[6] & FLAG_ZSTD != 0 {
        // Bounded decode: objects are small; 1 GiB guards against a decompression bomb.
        zstd::bulk::decompress(&body, 1 << 30)
            .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))
    } else {
        Ok(body)
    }
}

/// Serializes `value` as MessagePack (maps with field names) and seals it.
pub fn seal_msgpack<T: Serialize>(key: &MasterKey, kind: ObjectKind, value: &T) -> Vec<u8> {
    let payload = to_msgpack(value);
    let salt = random_salt();
    match compress_smaller(&payload) {
        // The encoding goes before the envelope is made (an index file
        // of a big backup is megabytes).
        Some(z) => {
            drop(payload);
            seal_body(key, kind, &salt, FLAG_ZSTD, &z)
        }
        None => seal_body(key, kind, &salt, 0, &payload),
    }
}

/// Opens an envelope and decodes its MessagePack payload.
pub fn open_msgpack<T: DeserializeOwned>(
    key: &MasterKey,
    kind: ObjectKind,
    data: &[u8],
    what: &str,
) -> Result<T> {
    from_msgpack(&open(key, kind, data, what)?, what)
}

/// MessagePack with named fields: the encoding of every structured object.
pub fn to_msgpack<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("in-memory structures serialize")
}

/// Decodes MessagePack, naming `what` in the error.
pub fn from_msgpack<T: DeserializeOwned>(data: &[u8], what: &str) -> Result<T> {
    rmp_serde::from_slice(data).map_err(|e| Error::corrupt(what, format!("cannot decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_kind_check() {
        let k = MasterKey::from_bytes([3; 32]);
        let sealed = seal(
            &k,
            ObjectKind::Snapshot,
            b"payload payload payload payload payload payload",
        );
        assert_eq!(
            open(&k, ObjectKind::Snapshot, &sealed, "s").unwrap(),
            b"payload payload payload payload payload payload"
        );
        assert!(open(&k, ObjectKind::Index, &sealed, "s").is_err());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            open(&k, ObjectKind::Snapshot, &bad, "s"),
            Err(Error::Corrupt { .. })
        ));
        assert!(open(&k, ObjectKind::Snapshot, &sealed[..10], "s").is_err());
    }
}
