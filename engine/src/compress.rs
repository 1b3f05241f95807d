//! Blob compression (zstd), with incompressible data stored raw.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a blob's plaintext is stored inside its ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
#[repr(u8)]
pub enum Compression {
    /// Stored as is (compression would not make it smaller).
    None = 0,
    /// A single zstd frame.
    Zstd = 1,
}

impl Compression {
    /// The byte stored in pack headers and index entries.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// Parses the stored byte.
    pub fn from_byte(b: u8) -> Option<Compression> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl From<Compression> for u8 {
    fn from(c: Compression) -> u8 {
        c.to_byte()
    }
}

impl TryFrom<u8> for Compression {
    type Error = String;
    fn try_from(b: u8) -> std::result::Result<Compression, String> {
        Compression::from_byte(b).ok_or_else(|| format!("unknown compression {b}"))
    }
}

thread_local! {
    // Reusing a compression context per thread avoids re-allocating zstd's
    // tables for every blob.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

thread_local! {
    // Likewise for decompression: a fresh context per blob was a fifth of
    // `check --read-data`'s CPU time.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `data` at `level`; returns the data unchanged (flagged
/// [`Compression::None`]) when zstd does not make it smaller.
pub fn compress(data: &[u8], level: i32) -> (Compression, Vec<u8>) {
    if level == 0 || data.len() < 64 {
        return (Compression::None, data.to_vec());
    }
    let out = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        c.as_mut().and_then(|(_, z)| z.compress(data).ok())
    });
    match out {
        Some(z) if z.len() < data.len() => (Compression::Zstd, z),
        _ => (Compression::None, data.to_vec()),
    }
}

/// Reverses [`compress`]. `raw_len` is the expected plaintext length; a
/// frame that decodes to anything else is reported as corrupt.
pub fn decompress(c: Compression, data: Vec<u8>, raw_len: usize, what: &str) -> Result<Vec<u8>> {
    let out = match c {
        Compression::None => data,
        Compression::Zstd => DECOMPRESSOR
            .with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut().expect("just made").decompress(&data, raw_len)
            })
            .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))?,
    };
    if out.len() != raw_len {
        return Err(Error::corrupt(
            what,
            format!("decoded to {} bytes, expected {raw_len}", out.len()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_raw_fallback() {
        let text =
            b"hello hello hello hello hello hello hello hello hello hello hello hello".repeat(10);
        let (c, z) = compress(&text, 3);
        assert_eq!(c, Compression::Zstd);
        assert!(z.len() < text.len());
        assert_eq!(decompress(c, z, text.len(), "t").unwrap(), text);
        let mut random = vec![0u8; 4096];
        crate::crypto::fill_random(&mut random);
        let (c, z) = compress(&random, 3);
        assert_eq!(c, Compression::None);
        assert_eq!(z, random);
        assert!(decompress(Compression::Zstd, b"garbage".to_vec(), 10, "t").is_err());
    }
}
