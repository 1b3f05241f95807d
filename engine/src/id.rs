//! 32-byte identifiers for blobs and repository objects.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Whether `s` is exactly `len` lower-case hex digits, as cairn writes
/// IDs and their prefixes in names.
pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A 32-byte identifier: a blob ID (keyed BLAKE3 of plaintext) or an object
/// ID (plain BLAKE3 of the stored bytes of a file in the repository).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Length of an ID in bytes.
    pub const LEN: usize = 32;

    /// Plain (unkeyed) BLAKE3 of `data`: the name of a stored object.
    pub fn of_object(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// A fresh random ID.
    pub fn random() -> Id {
        let mut b = [0u8; 32];
        crate::crypto::fill_random(&mut b);
        Id(b)
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.hex_str(&mut [0; 64]).to_owned()
    }

    /// The hex form in `buf`. (`hex::encode` goes through a char iterator:
    /// formatting blob names for error context cost ~2 % of a check's CPU.)
    fn hex_str<'b>(&self, buf: &'b mut [u8; 64]) -> &'b str {
        hex::encode_to_slice(self.0, buf).expect("64 bytes hold 32 in hex");
        std::str::from_utf8(buf).expect("hex digits are ASCII")
    }

    /// The first 8 hex characters, as shown in listings.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Id> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|_| {
            Error::InvalidInput(format!("invalid ID {s:?}: expected 64 hex digits"))
        })?;
        Ok(Id(b))
    }

    /// Builds an ID from a 32-byte slice.
    pub fn from_slice(s: &[u8]) -> Option<Id> {
        s.try_into().ok().map(Id)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex_str(&mut [0; 64]))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

// IDs are raw bytes in the binary formats (MessagePack bin 32), hex in JSON.
impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(self.hex_str(&mut [0; 64]))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Id, D::Error> {
        use serde::de::Error as _;
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Id::from_hex(&s).map_err(D::Error::custom)
        } else {
            let b: serde_bytes::ByteBuf = serde_bytes::ByteBuf::deserialize(d)?;
            Id::from_slice(&b).ok_or_else(|| D::Error::custom("ID must be 32 bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::of_object(b"abc");
        assert_eq!(Id::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!(Id::from_hex("zz").is_err());
        let mut b = [0u8; 32];
        b[0] = 0x0f;
        b[31] = 0xa0;
        let want = format!("0f{}a0", "00".repeat(30));
        assert_eq!(Id(b).to_hex(), want);
        assert_eq!(Id(b).to_string(), want);
    }
}
