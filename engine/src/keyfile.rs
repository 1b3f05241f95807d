//! Key files: the master key wrapped under a password-derived key.
//!
//! A key file is JSON (so an operator can see which KDF parameters and host
//! it belongs to without the password). The wrapping key is Argon2id of the
//! password with the stored salt and parameters; the master key is sealed with
//! AES-256-GCM under it. Several key files may wrap the same master key.
//!
//! A key may be *append-only*: the flag is stored in the JSON and bound into
//! the AAD of the wrapped master key, so stripping (or adding) it makes the
//! key fail to open instead of silently lifting (or imposing) the restriction.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::crypto::{Cipher, MasterKey, fill_random};
use crate::error::{Error, Result};

/// The largest key file read: they are under 1 KiB. A larger one, which
/// anyone who may add key files can put there, is passed over unread
/// (read whole, it stopped every open, the right password's too, for lack
/// of memory).
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// The error for key file `name` of `size` bytes, over [`MAX_KEY_FILE`].
pub fn too_large(name: &str, size: u64) -> Error {
    Error::corrupt(
        format!("key file {name}"),
        format!("{size} bytes: too large to be a key file (at most {MAX_KEY_FILE}); not read"),
    )
}

/// Argon2id cost parameters, stored in each key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The default for new keys: 48 MiB, 6 passes, 4 lanes. Against RFC
    /// 9106's second recommended option (64 MiB, 3 passes: the default
    /// before, which older keys keep) a guess costs more memory traffic
    /// (288 against 192 MiB passed over) and more area-time (48²·6 against
    /// 64²·3), while every command needs 16 MiB less; unlocking takes 1.5x
    /// the CPU time. The lanes are filled in parallel.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost: 48 * 1024,
        t_cost: 6,
        p_cost: 4,
    };

    /// Deliberately weak parameters for fast tests. Never the default: only
    /// chosen when the environment variable [`INSECURE_KDF_ENV`] is `1`.
    pub const INSECURE_TEST: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// The parameters for a new key: the default, unless the test-only switch is set.
    pub fn for_new_key() -> KdfParams {
        if std::env::var(INSECURE_KDF_ENV).as_deref() == Ok("1") {
            KdfParams::INSECURE_TEST
        } else {
            KdfParams::DEFAULT
        }
    }
}

/// Environment variable that makes new key files use [`KdfParams::INSECURE_TEST`].
/// Test suites set it; nothing else should.
pub const INSECURE_KDF_ENV: &str = "CAIRN_TEST_INSECURE_KDF";

const KEYFILE_AAD: &[u8] = b"cairn v1 key file";
/// AAD of an append-only key: differs from [`KEYFILE_AAD`], so the flag is authenticated.
const KEYFILE_AAD_APPEND_ONLY: &[u8] = b"cairn v1 key file append-only";

fn aad(append_only: bool) -> &'static [u8] {
    if append_only {
        KEYFILE_AAD_APPEND_ONLY
    } else {
        KEYFILE_AAD
    }
}

/// The JSON document stored under `keys/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    /// Format version of the key file (1).
    pub version: u32,
    /// When the key was created (RFC 3339).
    pub created: String,
    /// Host that created it.
    pub hostname: String,
    /// User that created it.
    pub username: String,
    /// Always `argon2id`.
    pub kdf: String,
    /// Argon2id parameters.
    #[serde(flatten)]
    pub params: KdfParams,
    /// Argon2 salt, hex.
    pub salt: String,
    /// AES-GCM nonce, hex.
    pub nonce: String,
    /// Sealed master key (32 bytes + 16-byte tag), hex.
    pub data: String,
    /// Whether the key is restricted to operations that never delete or
    /// replace data. Omitted from the JSON when `false`, so unrestricted key
    /// files are byte-for-byte what they were before the flag existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append_only: bool,
    /// The key file `key passwd` wrote this one to replace (its name):
    /// what lets the same command, run again after it was stopped before
    /// removing that one, finish the change. Not authenticated (whoever
    /// may write key files may delete them anyway); omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

fn wrapping_key(password: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32]> {
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::corrupt("key file", format!("invalid Argon2 parameters: {e}")))?;
    // The working memory is ours, to overwrite when done: the crate frees
    // its own without clearing it (it holds what the key derives from).
    let mut blocks: Vec<argon2::Block> = Vec::new();
    blocks
        .try_reserve_exact(params.block_count())
        .map_err(|_| {
            Error::corrupt(
                "key file",
                format!(
                    "Argon2 needs {} MiB, more than this machine gives",
                    p.m_cost / 1024
                ),
            )
        })?;
    blocks.resize(params.block_count(), argon2::Block::new());
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    let r = argon.hash_password_into_with_memory(password, salt, &mut out, &mut blocks[..]);
    blocks.zeroize();
    r.map_err(|e| Error::corrupt("key file", format!("Argon2 failed: {e}")))?;
    Ok(out)
}

/// Whether the key file `data` is stored under its own name (the hash of
/// its bytes). Its host, user and creation time are not authenticated: an
/// edit or a flipped bit there opens as before, and one in `data`, `salt`
/// or `nonce` looks like a wrong password; only the name tells.
pub fn check_name(data: &[u8], name: &str) -> Result<()> {
    if crate::id::Id::of_object(data).to_hex() != name {
        return Err(Error::corrupt(
            format!("key file {name}"),
            "its content does not match its name (damaged, or edited since it was written)",
        ));
    }
    Ok(())
}

impl KeyFile {
    /// Wraps `master` under `password` with parameters `params`; an
    /// `append_only` key records (and authenticates) that restriction.
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        append_only: bool,
    ) -> Result<KeyFile> {
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        fill_random(&mut salt);
        fill_random(&mut nonce);
        let mut wk = wrapping_key(password, &salt, params)?;
        let sealed = Cipher::from_key(&wk).seal(&nonce, aad(append_only), master.as_bytes());
        wk.zeroize();
        Ok(KeyFile {
            version: 1,
            created: chrono::Utc::now().to_rfc3339(),
            hostname: crate::host::hostname(),
            username: crate::host::username(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            data: hex::encode(sealed),
            append_only,
            replaces: None,
        })
    }

    /// Checks everything about the key file but the password: what `check`
    /// can tell about keys it cannot open (a damaged recovery key is found
    /// before it is needed).
    pub fn validate(&self, name: &str) -> Result<()> {
        self.parts(&format!("key file {name}")).map(|_| ())
    }

    /// Salt, nonce and sealed key, after every check that needs no password.
    fn parts(&self, what: &str) -> Result<(Vec<u8>, [u8; 12], Vec<u8>)> {
        if self.version != 1 || self.kdf != "argon2id" {
            return Err(Error::corrupt(
                what,
                format!(
                    "unsupported key file version {} / KDF {}",
                    self.version, self.kdf
                ),
            ));
        }
        let salt = hex::decode(&self.salt).map_err(|_| Error::corrupt(what, "salt is not hex"))?;
        // Argon2 refuses salts shorter than 8 bytes; ours are 16.
        if salt.len() < 8 {
            return Err(Error::corrupt(what, "salt is too short"));
        }
        let nonce: [u8; 12] = hex::decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| Error::corrupt(what, "nonce is not 12 hex bytes"))?;
        let data = hex::decode(&self.data).map_err(|_| Error::corrupt(what, "data is not hex"))?;
        if data.len() != 32 + crate::crypto::TAG_LEN {
            return Err(Error::corrupt(what, "sealed key has the wrong length"));
        }
        // Refuse parameters that would let a forged key file make us allocate absurd memory.
        if self.params.m_cost > 4 * 1024 * 1024
            || self.params.t_cost > 100
            || self.params.p_cost > 64
        {
            return Err(Error::corrupt(
                what,
                "Argon2 parameters out of the accepted range",
            ));
        }
        argon2::Params::new(
            self.params.m_cost,
            self.params.t_cost,
            self.params.p_cost,
            Some(32),
        )
        .map_err(|e| Error::corrupt(what, format!("invalid Argon2 parameters: {e}")))?;
        Ok((salt, nonce, data))
    }

    /// What trying a password on this key costs: KiB of memory passed
    /// over by Argon2 (memory times passes).
    pub fn cost(&self) -> u64 {
        u64::from(self.params.m_cost) * u64::from(self.params.t_cost)
    }

    /// Unwraps the master key. `Ok(None)` means the password does not fit this key.
    pub fn open(&self, password: &[u8], name: &str) -> Result<Option<MasterKey>> {
        let what = format!("key file {name}");
        let (salt, nonce, data) = self.parts(&what)?;
        let mut wk = wrapping_key(password, &salt, self.params).map_err(|e| match e {
            Error::Corrupt { reason, .. } => Error::corrupt(&what, reason),
            e => e,
        })?;
        let res = Cipher::from_key(&wk).open(&nonce, aad(self.append_only), &data, &what);
        wk.zeroize();
        match res {
            Ok(mut plain) => {
                let bytes: [u8; 32] = plain
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::corrupt(&what, "master key has the wrong length"))?;
                plain.zeroize();
                Ok(Some(MasterKey::from_bytes(bytes)))
            }
            Err(_) => Ok(None),
        }
    }

    /// Serializes to the stored JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    /// Parses stored JSON bytes.
    /// Its fields are checked as opening would (so that a listing names a
    /// damaged key file, not only opening it).
    pub fn from_bytes(b: &[u8], name: &str) -> Result<KeyFile> {
        let what = format!("key file {name}");
        let kf: KeyFile = serde_json::from_slice(b)
            .map_err(|e| Error::corrupt(&what, format!("not a valid key file: {e}")))?;
        kf.parts(&what)?;
        Ok(kf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap() {
        let mk = MasterKey::generate();
        let kf = KeyFile::create(&mk, b"pw", KdfParams::INSECURE_TEST, false).unwrap();
        let kf = KeyFile::from_bytes(&kf.to_bytes(), "k").unwrap();
        assert_eq!(
            kf.open(b"pw", "k").unwrap().unwrap().as_bytes(),
            mk.as_bytes()
        );
        assert!(kf.open(b"wrong", "k").unwrap().is_none());
        assert!(
            !String::from_utf8(kf.to_bytes())
                .unwrap()
                .contains("append_only")
        );
    }

    #[test]
    fn lanes_give_the_reference_result() {
        // Expected values from libargon2 (the reference implementation,
        // through Python's argon2-cffi `hash_secret_raw`), so the parallel
        // lane filling is checked against an independent implementation.
        let salt = b"cairn-kdf-lanes!";
        let pw = b"correct horse battery staple";
        let small = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 4,
        };
        assert_eq!(
            hex::encode(wrapping_key(pw, salt, small).unwrap()),
            "a82371027afce114e45e6574add4ec32b8d87029710a32d74894f4d4d50feef4"
        );
        // The default before session 39, which older keys still carry.
        let rfc = KdfParams {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 4,
        };
        assert_eq!(
            hex::encode(wrapping_key(pw, salt, rfc).unwrap()),
            "b0cf8dfb06dd3035fce72f9951aac46062dc61f971741f3375fba6cfa420ca42"
        );
        assert_eq!(
            hex::encode(wrapping_key(pw, salt, KdfParams::DEFAULT).unwrap()),
            "d4fd570d76ca29269acf3feea0517f72add96f238c0b41205a6ba88e46b44464"
        );
    }

    #[test]
    fn append_only_flag_is_authenticated() {
        let mk = MasterKey::generate();
        let kf = KeyFile::create(&mk, b"pw", KdfParams::INSECURE_TEST, true).unwrap();
        let mut kf = KeyFile::from_bytes(&kf.to_bytes(), "k").unwrap();
        assert!(kf.append_only);
        assert!(kf.open(b"pw", "k").unwrap().is_some());
        // Stripping the flag does not lift the restriction: the key stops opening.
        kf.append_only = false;
        assert!(kf.open(b"pw", "k").unwrap().is_none());
        // Nor can a normal key be relabelled.
        let mut normal = KeyFile::create(&mk, b"pw", KdfParams::INSECURE_TEST, false).unwrap();
        normal.append_only = true;
        assert!(normal.open(b"pw", "k").unwrap().is_none());
    }
}
