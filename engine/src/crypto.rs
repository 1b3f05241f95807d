//! Keys and authenticated encryption.
//!
//! One random 32-byte master key per repository. Everything else is derived
//! from it with BLAKE3 `derive_key`, so no key is ever used for more than one
//! purpose. Every encrypted unit is AES-256-GCM under a subkey that is unique
//! to its pack or object (derived from a random 128-bit salt), with a counter
//! nonce inside that subkey: a nonce can never repeat under one key.

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::id::Id;

/// Length of the authentication tag AES-GCM appends.
pub const TAG_LEN: usize = 16;
/// Length of the random salts that select per-pack and per-object subkeys.
pub const SALT_LEN: usize = 16;

/// Nonce domain of blobs inside a pack (counter = the blob's offset in the pack).
pub const NONCE_DOMAIN_BLOB: u8 = 0;
/// Nonce domain of a pack's header.
pub const NONCE_DOMAIN_PACK_HEADER: u8 = 1;
/// Nonce domain of a whole encrypted object (config, index, snapshot, lock).
pub const NONCE_DOMAIN_OBJECT: u8 = 2;

const CTX_BLOB_ID: &str = "cairn v1 2026-11 blob id key";
const CTX_CHUNKER: &str = "cairn v1 2026-11 chunker seed";
const CTX_PACK: &str = "cairn v1 2026-11 pack subkey";
const CTX_OBJECT: &str = "cairn v1 2026-11 object subkey";

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    // The OS RNG failing is not recoverable and must never yield a weak key.
    getrandom::fill(buf).expect("operating system random number generator failed");
}

/// A random salt selecting a subkey.
pub fn random_salt() -> [u8; SALT_LEN] {
    let mut s = [0u8; SALT_LEN];
    fill_random(&mut s);
    s
}

/// The 96-bit nonce for counter `counter` in `domain`: byte 0 is the domain,
/// bytes 4..12 the counter little-endian, the rest zero.
pub fn nonce(domain: u8, counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0] = domain;
    n[4..12].copy_from_slice(&counter.to_le_bytes());
    n
}

/// The repository master key and the keys derived from it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    master: [u8; 32],
    id_key: [u8; 32],
    chunker_seed: u64,
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> MasterKey {
        let mut m = [0u8; 32];
        fill_random(&mut m);
        MasterKey::from_bytes(m)
    }

    /// Rebuilds the key set from the 32 master key bytes.
    pub fn from_bytes(master: [u8; 32]) -> MasterKey {
        let id_key = blake3::derive_key(CTX_BLOB_ID, &master);
        let seed = blake3::derive_key(CTX_CHUNKER, &master);
        let chunker_seed = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
        MasterKey {
            master,
            id_key,
            chunker_seed,
        }
    }

    /// The master key bytes (only for wrapping them in a key file).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.master
    }

    /// Whether `other` is this very key, compared in constant time.
    pub fn same_as(&self, other: &MasterKey) -> bool {
        use subtle::ConstantTimeEq;
        self.master.ct_eq(&other.master).into()
    }

    /// Keyed BLAKE3 of a blob's plaintext: its ID.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// The seed of the chunker's gear table.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The AEAD key of the pack whose header carries `salt`.
    pub fn pack_cipher(&self, salt: &[u8; SALT_LEN]) -> Cipher {
        Cipher::derive(CTX_PACK, &self.master, salt)
    }

    /// The AEAD key of the standalone object whose envelope carries `salt`.
    pub fn object_cipher(&self, salt: &[u8; SALT_LEN]) -> Cipher {
        Cipher::derive(CTX_OBJECT, &self.master, salt)
    }
}

/// An AES-256-GCM key bound to one pack or object.
pub struct Cipher(Aes256Gcm);

impl Cipher {
    fn derive(context: &str, master: &[u8; 32], salt: &[u8; SALT_LEN]) -> Cipher {
        let mut material = [0u8; 32 + SALT_LEN];
        material[..32].copy_from_slice(master);
        material[32..].copy_from_slice(salt);
        let mut key = blake3::derive_key(context, &material);
        material.zeroize();
        let c = Cipher::from_key(&key);
        key.zeroize();
        c
    }

    /// A cipher from raw key bytes.
    pub fn from_key(key: &[u8; 32]) -> Cipher {
        Cipher(Aes256Gcm::new_from_slice(key).expect("32-byte key"))
    }

    /// Encrypts `plaintext`, returning ciphertext followed by the 16-byte tag.
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        self.seal_append(nonce, aad, plaintext, &mut out);
        out
    }

    /// Like [`Cipher::seal`], appending ciphertext and tag to `out`
    /// (encrypted in place there: no buffer per message).
    pub fn seal_append(&self, nonce: &[u8; 12], aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let n = Nonce::from(*nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .encrypt_inout_detached(&n, aad, (&mut out[start..]).into())
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        out.extend_from_slice(&tag);
    }

    /// Like [`Cipher::open`], decrypting into `out` (cleared first), which
    /// a caller opening many messages reuses.
    pub fn open_into(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
        what: &str,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let failed = || {
            Error::corrupt(
                what,
                "authentication failed (data damaged or not encrypted with this repository's key)",
            )
        };
        let body = ciphertext.len().checked_sub(TAG_LEN).ok_or_else(failed)?;
        let (ct, tag) = ciphertext.split_at(body);
        let tag = tag.try_into().map_err(|_| failed())?;
        out.clear();
        out.resize(body, 0);
        let buf = InOutBuf::new(ct, &mut out[..]).expect("equal lengths");
        self.0
            .decrypt_inout_detached(&Nonce::from(*nonce), aad, buf, tag)
            .map_err(|_| {
                out.clear();
                failed()
            })
    }

    /// Authenticates and decrypts; `what` names the object in the error.
    pub fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
        what: &str,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_into(nonce, aad, ciphertext, what, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place forms make the same bytes as `seal` and `open` and
    /// reject the same tampering.
    #[test]
    fn in_place_forms_match() {
        let c = MasterKey::from_bytes([7; 32]).pack_cipher(&[2; 16]);
        let n = nonce(NONCE_DOMAIN_BLOB, 9);
        let mut out = b"prefix".to_vec();
        c.seal_append(&n, b"aad", b"hello world", &mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out[6..], c.seal(&n, b"aad", b"hello world")[..]);
        let mut plain = b"stale".to_vec();
        c.open_into(&n, b"aad", &out[6..], "x", &mut plain).unwrap();
        assert_eq!(plain, b"hello world");
        assert!(
            c.open_into(&n, b"aad2", &out[6..], "x", &mut plain)
                .is_err()
        );
        assert!(
            c.open_into(&n, b"aad", &out[6..10], "x", &mut plain)
                .is_err()
        );
        out[7] ^= 1;
        assert!(c.open_into(&n, b"aad", &out[6..], "x", &mut plain).is_err());
    }

    #[test]
    fn seal_open_and_tamper() {
        let mk = MasterKey::from_bytes([7; 32]);
        let c = mk.pack_cipher(&[1; 16]);
        let n = nonce(NONCE_DOMAIN_BLOB, 5);
        let mut ct = c.seal(&n, b"aad", b"hello");
        assert_eq!(c.open(&n, b"aad", &ct, "x").unwrap(), b"hello");
        assert!(c.open(&n, b"other", &ct, "x").is_err());
        assert!(
            c.open(&nonce(NONCE_DOMAIN_BLOB, 6), b"aad", &ct, "x")
                .is_err()
        );
        ct[0] ^= 1;
        assert!(c.open(&n, b"aad", &ct, "x").is_err());
        // A different salt is a different key.
        let c2 = mk.pack_cipher(&[2; 16]);
        let ct = c.seal(&n, b"", b"hello");
        assert!(c2.open(&n, b"", &ct, "x").is_err());
    }

    #[test]
    fn derived_keys_differ() {
        let mk = MasterKey::from_bytes([7; 32]);
        assert_ne!(mk.blob_id(b"a"), Id::of_object(b"a"));
        assert_ne!(
            mk.blob_id(b"a"),
            MasterKey::from_bytes([8; 32]).blob_id(b"a")
        );
    }
}
