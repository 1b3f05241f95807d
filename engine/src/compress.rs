//! Blob compression (zstd), with incompressible data stored raw.

use std::cell::RefCell;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zstd::zstd_safe::{CCtx, CDict, CParameter, DCtx, DictAttachPref, ResetDirective};

use crate::dict::{DictSource, Dictionary};
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
    /// A single zstd frame made with a repository dictionary, which the
    /// frame header names (format version 2).
    ZstdDict = 2,
    /// One zstd frame (no dictionary) holding several small data blobs back
    /// to back; each blob's entry says where it starts (format version 3).
    ZstdGroup = 3,
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
            2 => Some(Compression::ZstdDict),
            3 => Some(Compression::ZstdGroup),
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

thread_local! {
    // Contexts for dictionary frames: the prepared dictionary is passed per
    // call, so one context serves every dictionary.
    static DICT_CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static DICT_DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
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

/// Like [`compress`], with `dict` at `level`: the frame header names the
/// dictionary, so readers find it. The data is stored uncompressed when the
/// dictionary frame is not smaller (or cannot be made).
pub fn compress_with_dict(data: &[u8], level: i32, dict: &Dictionary) -> (Compression, Vec<u8>) {
    if level == 0 || data.len() < 64 {
        return (Compression::None, data.to_vec());
    }
    let Some(cdict) = dict.cdict(level) else {
        return (Compression::None, data.to_vec());
    };
    let out = DICT_CCTX.with(|c| {
        let mut c = c.borrow_mut();
        let cctx = c.get_or_insert_with(CCtx::create);
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        // SAFETY: the context refers to the dictionary only until the reset
        // below, while `cdict` keeps it alive; the context outlives the call
        // (thread-local), hence the 'static its type asks for.
        let tables: &'static CDict<'static> = unsafe { &*Arc::as_ptr(&cdict) };
        // Attached, zstd reads the prepared tables where they are. By
        // default it copies them (768 KiB at level 3) into the context for
        // every input above 16 KiB, then matches in its slower
        // external-dictionary mode: about a tenth more time on the Linux
        // tree's small files for the same output (docs/benchmarks.md).
        let made = cctx
            .set_parameter(CParameter::ForceAttachDict(DictAttachPref::ForceAttach))
            .and_then(|_| cctx.ref_cdict(tables))
            .and_then(|_| cctx.compress2(&mut out, data));
        let reset = cctx.reset(ResetDirective::SessionAndParameters);
        if reset.is_err() {
            // A context still holding the reference must not outlive `cdict`.
            *c = None;
        }
        made.ok().map(|_| out)
    });
    match out {
        Some(z) if z.len() < data.len() => (Compression::ZstdDict, z),
        _ => (Compression::None, data.to_vec()),
    }
}

/// Reverses [`compress`] and [`compress_with_dict`]. `raw_len` is the
/// expected plaintext length; a frame that decodes to anything else is
/// reported as corrupt. `dicts` supplies the dictionary a
/// [`Compression::ZstdDict`] frame names.
pub fn decompress(
    c: Compression,
    data: Vec<u8>,
    raw_len: usize,
    what: &str,
    dicts: &dyn DictSource,
) -> Result<Vec<u8>> {
    if c == Compression::None {
        check_len(data.len(), raw_len, what)?;
        return Ok(data);
    }
    let mut out = Vec::new();
    decompress_into(c, &data, raw_len, what, dicts, &mut out)?;
    Ok(out)
}

/// Like [`decompress`] for a compressed frame, into `out` (cleared first),
/// which a caller decoding many blobs reuses.
pub fn decompress_into(
    c: Compression,
    data: &[u8],
    raw_len: usize,
    what: &str,
    dicts: &dyn DictSource,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    // `raw_len` comes from an index entry (the local cache is not
    // authenticated, and any key holder writes index files): before
    // memory is set aside for it, the frame's own recorded size, which
    // the AEAD vouches for, must agree.
    if c != Compression::None
        && let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(data)
        && n != raw_len as u64
    {
        return Err(Error::corrupt(
            what,
            format!("its frame holds {n} bytes, its index entry says {raw_len}"),
        ));
    }
    out.reserve(if c == Compression::None {
        data.len()
    } else {
        raw_len
    });
    match c {
        Compression::None => out.extend_from_slice(data),
        Compression::ZstdDict => {
            let id = zstd::zstd_safe::get_dict_id_from_frame(data)
                .ok_or_else(|| Error::corrupt(what, "dictionary frame names no dictionary"))?;
            let dict = dicts.dictionary(id.get()).map_err(|e| match e {
                Error::Missing(m) => Error::Missing(format!("{m}, needed by {what}")),
                Error::Corrupt { object, reason } => Error::Corrupt {
                    object,
                    reason: format!("{reason} (needed by {what})"),
                },
                e => e,
            })?;
            DICT_DCTX
                .with(|d| {
                    let mut d = d.borrow_mut();
                    let dctx = d.get_or_insert_with(DCtx::create);
                    dctx.decompress_using_ddict(out, data, dict.ddict())
                })
                .map_err(|code| {
                    Error::corrupt(
                        what,
                        format!("zstd: {}", zstd::zstd_safe::get_error_name(code)),
                    )
                })?;
        }
        Compression::Zstd | Compression::ZstdGroup => {
            DECOMPRESSOR
                .with(|d| {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    d.as_mut()
                        .expect("just made")
                        .decompress_to_buffer(data, out)
                })
                .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))?;
        }
    }
    check_len(out.len(), raw_len, what)
}

/// Largest decoded group frame a reader accepts (writers stay far below),
/// so a forged frame header cannot make a reader allocate without bound.
pub const MAX_GROUP_LEN: usize = 4 << 20;

/// Compresses a group of blobs laid back to back in `data` at `level`, or
/// `None` when zstd does not make it smaller (its members are then stored
/// one by one, uncompressed).
pub fn compress_group(data: &[u8], level: i32) -> Option<Vec<u8>> {
    match compress(data, level) {
        (Compression::Zstd, z) => Some(z),
        _ => None,
    }
}

/// Decodes a group frame whole: its header gives the decoded size, which
/// must be known and at most [`MAX_GROUP_LEN`].
pub fn decompress_group(data: &[u8], what: &str, out: &mut Vec<u8>) -> Result<()> {
    let len = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n <= MAX_GROUP_LEN as u64 => n as usize,
        Ok(Some(n)) => {
            return Err(Error::corrupt(
                what,
                format!("group frame of {n} bytes exceeds {MAX_GROUP_LEN}"),
            ));
        }
        _ => return Err(Error::corrupt(what, "group frame without its size")),
    };
    decompress_into(
        Compression::ZstdGroup,
        data,
        len,
        what,
        &crate::dict::NoDicts,
        out,
    )
}

fn check_len(got: usize, raw_len: usize, what: &str) -> Result<()> {
    if got != raw_len {
        return Err(Error::corrupt(
            what,
            format!("decoded to {got} bytes, expected {raw_len}"),
        ));
    }
    Ok(())
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
        assert_eq!(
            decompress(c, z, text.len(), "t", &crate::dict::NoDicts).unwrap(),
            text
        );
        let mut random = vec![0u8; 4096];
        crate::crypto::fill_random(&mut random);
        let (c, z) = compress(&random, 3);
        assert_eq!(c, Compression::None);
        assert_eq!(z, random);
        assert!(
            decompress(
                Compression::Zstd,
                b"garbage".to_vec(),
                10,
                "t",
                &crate::dict::NoDicts
            )
            .is_err()
        );
    }

    #[test]
    fn an_entry_claiming_a_huge_length_is_refused_before_memory_is_set_aside() {
        let text = b"hello hello hello hello hello hello hello".repeat(20);
        let (c, z) = compress(&text, 3);
        assert_eq!(c, Compression::Zstd);
        for claimed in [usize::MAX / 2, text.len() + 1] {
            let e = decompress(c, z.clone(), claimed, "blob x", &crate::dict::NoDicts)
                .expect_err("refused");
            assert!(
                matches!(&e, Error::Corrupt { reason, .. } if reason.contains("index entry says")),
                "{e}"
            );
        }
        let e = decompress(
            Compression::None,
            text.clone(),
            usize::MAX / 2,
            "b",
            &crate::dict::NoDicts,
        )
        .expect_err("refused");
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    #[test]
    fn dictionary_round_trip() {
        let (buf, sizes) = crate::dict::tests::samples();
        let bytes = crate::dict::train(&buf, &sizes, 3).unwrap();
        let d = std::sync::Arc::new(
            Dictionary::new(crate::dict::dict_id_of(&bytes).unwrap(), bytes).unwrap(),
        );
        let blob = &buf[..sizes[0]];
        let (c, z) = compress_with_dict(blob, 3, &d);
        assert_eq!(c, Compression::ZstdDict);
        assert!(z.len() < compress(blob, 3).1.len());
        let mut dicts = std::collections::HashMap::new();
        dicts.insert(d.id, d.clone());
        assert_eq!(
            decompress(c, z.clone(), blob.len(), "t", &dicts).unwrap(),
            blob
        );
        // Above 16 KiB zstd would copy the tables by default; attached, the
        // frame still names the dictionary, gains from it and reads back.
        let big = &buf[..sizes[..60].iter().sum::<usize>()];
        assert!(big.len() > 64 << 10);
        let (bc, bz) = compress_with_dict(big, 3, &d);
        assert_eq!(bc, Compression::ZstdDict);
        assert_eq!(
            zstd::zstd_safe::get_dict_id_from_frame(&bz).map(|i| i.get()),
            Some(d.id)
        );
        assert!(bz.len() < compress(big, 3).1.len());
        assert_eq!(decompress(bc, bz, big.len(), "t", &dicts).unwrap(), big);
        // Without the dictionary the blob cannot be read, and the error says which.
        let e = decompress(c, z, blob.len(), "t", &crate::dict::NoDicts).unwrap_err();
        assert!(e.to_string().contains(&crate::dict::dict_name(d.id)), "{e}");
    }
}
