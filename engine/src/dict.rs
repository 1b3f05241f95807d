//! Compression dictionaries for small data blobs (format §10, §3).
//!
//! Small files compress badly on their own because every zstd frame starts
//! with empty history. A dictionary trained on the repository's own small
//! blobs gives each frame a shared history: on the Linux tree it saves about
//! 9 % of the compressed size of files below 256 KiB (docs/benchmarks.md).
//!
//! A dictionary is a standard zstd dictionary (magic `37 a4 30 ec`, then its
//! u32 ID), stored once as `dicts/<8 hex digits of the ID>` in an envelope of
//! kind [`ObjectKind::Dictionary`](crate::envelope::ObjectKind::Dictionary).
//! It is immutable and never deleted (but by `repair packs`, once its
//! stored bytes no longer open): every blob stored with compression `2`
//! names its dictionary in the zstd frame header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zstd::zstd_safe::{CDict, DDict};

use crate::backend::{Backend, FileKind};
use crate::crypto::MasterKey;
use crate::envelope::{self, ObjectKind};
use crate::error::{Error, Result};

/// Data blobs shorter than this are compressed with the dictionary.
/// Longer ones come from chunked files and gain nothing measurable.
pub const MAX_DICT_BLOB: usize = 256 << 10;
/// Only blobs shorter than this are taken as training samples (the
/// dictionary is for small files; big samples would dominate it).
pub const MAX_SAMPLE: usize = 64 << 10;
/// Bytes of samples collected before training (about 1,800 files of the
/// Linux tree; training takes well under a second, docs/benchmarks.md).
pub const SAMPLE_BUDGET: usize = 8 << 20;
/// Largest dictionary trained.
pub const DICT_CAPACITY: usize = 112 << 10;
/// The zstd dictionary magic number, little-endian.
pub const DICT_MAGIC: [u8; 4] = [0x37, 0xa4, 0x30, 0xec];
/// Smallest and one past the largest dictionary ID a writer draws: zstd
/// reserves the IDs outside this range for a public registry.
const ID_RANGE: std::ops::Range<u32> = 32_768..(1 << 31);

/// The object name of dictionary `id`: 8 lower-case hex digits.
pub fn dict_name(id: u32) -> String {
    format!("{id:08x}")
}

/// The dictionary ID stored in bytes 4..8 of a zstd dictionary, if it is one.
pub fn dict_id_of(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 8 || bytes[..4] != DICT_MAGIC {
        return None;
    }
    Some(u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")))
}

/// A dictionary ready for use: its bytes and the prepared zstd tables.
pub struct Dictionary {
    /// The dictionary ID (also its name, see [`dict_name`]).
    pub id: u32,
    /// The raw zstd dictionary.
    pub bytes: Vec<u8>,
    ddict: DDict<'static>,
    /// Prepared only by writers, and only at the level they compress at.
    cdict: Mutex<Option<(i32, Arc<CDict<'static>>)>>,
}

impl Dictionary {
    /// Checks `bytes` is a zstd dictionary with ID `id` and prepares it.
    pub fn new(id: u32, bytes: Vec<u8>) -> Result<Dictionary> {
        let what = || format!("dictionary dicts/{}", dict_name(id));
        match dict_id_of(&bytes) {
            None => return Err(Error::corrupt(what(), "not a zstd dictionary")),
            Some(got) if got != id => {
                return Err(Error::corrupt(
                    what(),
                    format!(
                        "holds dictionary {}, not the one its name says \
                         (renamed or copied over; its bytes are intact)",
                        dict_name(got)
                    ),
                ));
            }
            Some(_) => {}
        }
        // Its header and ID may be right and its tables not (damaged before
        // it was sealed): zstd then refuses it, which is damage, not a panic.
        let ddict = DDict::try_create(&bytes)
            .ok_or_else(|| Error::corrupt(what(), "zstd cannot load its tables"))?;
        Ok(Dictionary {
            id,
            bytes,
            ddict,
            cdict: Mutex::new(None),
        })
    }

    /// The prepared decompression tables.
    pub fn ddict(&self) -> &DDict<'static> {
        &self.ddict
    }

    /// The prepared compression tables for `level` (made on first use);
    /// `None` if zstd cannot make them.
    pub fn cdict(&self, level: i32) -> Option<Arc<CDict<'static>>> {
        let mut c = self.cdict.lock().expect("cdict");
        match &*c {
            Some((l, d)) if *l == level => Some(d.clone()),
            _ => {
                let d = Arc::new(CDict::try_create(&self.bytes, level)?);
                *c = Some((level, d.clone()));
                Some(d)
            }
        }
    }
}

/// Where a reader finds the dictionary a blob names.
pub trait DictSource: Sync {
    /// Dictionary `id`, or an error naming `dicts/<id>` when it is missing
    /// or damaged.
    fn dictionary(&self, id: u32) -> Result<Arc<Dictionary>>;
}

/// A source with no dictionaries (for code that only handles blobs it
/// compressed itself without one, such as tests).
pub struct NoDicts;

impl DictSource for NoDicts {
    fn dictionary(&self, id: u32) -> Result<Arc<Dictionary>> {
        Err(Error::Missing(format!(
            "dictionary dicts/{} (no dictionaries available here)",
            dict_name(id)
        )))
    }
}

/// A fixed set of dictionaries held in memory.
impl DictSource for HashMap<u32, Arc<Dictionary>> {
    fn dictionary(&self, id: u32) -> Result<Arc<Dictionary>> {
        match self.get(&id) {
            Some(d) => Ok(d.clone()),
            None => NoDicts.dictionary(id),
        }
    }
}

/// The dictionaries of one repository, loaded on first use and kept.
pub struct DictCache {
    loaded: Mutex<HashMap<u32, Arc<Dictionary>>>,
}

impl Default for DictCache {
    fn default() -> Self {
        DictCache::new()
    }
}

impl DictCache {
    /// An empty cache.
    pub fn new() -> DictCache {
        DictCache {
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// Dictionary `id`: from the cache, or read, authenticated and checked.
    /// Failures are not cached, so a repaired file is picked up.
    pub fn get(&self, backend: &dyn Backend, key: &MasterKey, id: u32) -> Result<Arc<Dictionary>> {
        if let Some(d) = self.loaded.lock().expect("dicts").get(&id) {
            return Ok(d.clone());
        }
        let d = Arc::new(read(backend, key, id)?);
        Ok(self
            .loaded
            .lock()
            .expect("dicts")
            .entry(id)
            .or_insert(d)
            .clone())
    }

    /// Adds a dictionary this process has just stored and verified.
    pub fn insert(&self, d: Arc<Dictionary>) {
        self.loaded.lock().expect("dicts").insert(d.id, d);
    }
}

/// Reads and checks dictionary `id` from the repository.
pub fn read(backend: &dyn Backend, key: &MasterKey, id: u32) -> Result<Dictionary> {
    let name = dict_name(id);
    let what = format!("dictionary dicts/{name}");
    let data = backend.read(FileKind::Dict, &name).map_err(|e| match e {
        Error::Missing(_) => {
            Error::Missing(format!("{what} (blobs compressed with it cannot be read)"))
        }
        e => e,
    })?;
    let bytes = envelope::open(key, ObjectKind::Dictionary, &data, &what)?;
    Dictionary::new(id, bytes)
}

/// The other dictionary that the file of dictionary `id` holds, if its
/// bytes authenticate and hold one: intact, but renamed or copied over
/// (two files' names swapped). Not damage: removing it, as a damaged one
/// is, would lose the blobs of the dictionary it holds.
pub fn misnamed(backend: &dyn Backend, key: &MasterKey, id: u32) -> Option<u32> {
    let name = dict_name(id);
    let data = backend.read(FileKind::Dict, &name).ok()?;
    let bytes = envelope::open(key, ObjectKind::Dictionary, &data, &name).ok()?;
    holds_other(id, &bytes)
}

/// The ID of the dictionary in `bytes`, opened from the file of `id`, if
/// it is another's.
pub fn holds_other(id: u32, bytes: &[u8]) -> Option<u32> {
    dict_id_of(bytes).filter(|got| *got != id)
}

/// The dictionary an error's object names (`dictionary dicts/<id> ...`,
/// as [`read`] words it), if any.
pub fn named_in(object: &str) -> Option<u32> {
    object
        .strip_prefix("dictionary dicts/")
        .and_then(|rest| rest.get(..8))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
}

/// The IDs of the dictionaries stored in the repository, ascending. Names
/// that are not 8 lower-case hex digits are ignored.
pub fn list(backend: &dyn Backend) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = backend
        .list(FileKind::Dict)?
        .into_iter()
        .filter(|l| {
            l.name.len() == 8
                && l.name
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .filter_map(|l| u32::from_str_radix(&l.name, 16).ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Trains a dictionary on `samples` (concatenated; `sizes` gives each
/// one's length) with fastCover at fixed parameters, and gives it a random
/// ID. `None` when zstd finds too little to learn.
pub fn train(samples: &[u8], sizes: &[usize], level: i32) -> Option<Vec<u8>> {
    let mut id_bytes = [0u8; 4];
    crate::crypto::fill_random(&mut id_bytes);
    let id = ID_RANGE.start + u32::from_le_bytes(id_bytes) % (ID_RANGE.end - ID_RANGE.start);
    train_with_id(samples, sizes, level, id, DICT_CAPACITY)
}

/// Like [`train`] with a given ID and size limit (for golden test vectors).
pub fn train_with_id(
    samples: &[u8],
    sizes: &[usize],
    level: i32,
    id: u32,
    capacity: usize,
) -> Option<Vec<u8>> {
    let mut out = vec![0u8; capacity];
    // k = 1024, d = 8 without the parameter search: the search (steps = 4,
    // as `ZDICT_trainFromBuffer` does) took 3x the time for a dictionary
    // 0.2 % better on the Linux tree.
    let params = zstd_sys::ZDICT_fastCover_params_t {
        k: 1024,
        d: 8,
        f: 20,
        steps: 0,
        nbThreads: 1,
        splitPoint: 1.0,
        accel: 1,
        shrinkDict: 0,
        shrinkDictMaxRegression: 0,
        zParams: zstd_sys::ZDICT_params_t {
            compressionLevel: level,
            notificationLevel: 0,
            dictID: id,
        },
    };
    // SAFETY: the buffers are valid for the lengths passed; `sizes` sums
    // to at most `samples.len()` (checked below).
    if sizes.iter().sum::<usize>() > samples.len() || sizes.is_empty() {
        return None;
    }
    let n = unsafe {
        zstd_sys::ZDICT_trainFromBuffer_fastCover(
            out.as_mut_ptr().cast(),
            out.len(),
            samples.as_ptr().cast(),
            sizes.as_ptr(),
            sizes.len() as u32,
            params,
        )
    };
    // SAFETY: ZDICT_isError only inspects the value.
    if unsafe { zstd_sys::ZDICT_isError(n) } != 0 {
        return None;
    }
    out.truncate(n);
    (dict_id_of(&out) == Some(id)).then_some(out)
}

/// Seals a dictionary for storage as `dicts/<name>`.
pub fn seal(key: &MasterKey, bytes: &[u8]) -> Vec<u8> {
    envelope::seal(key, ObjectKind::Dictionary, bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Text-like samples that share vocabulary, as source files do.
    pub(crate) fn samples() -> (Vec<u8>, Vec<usize>) {
        let words = [
            "static",
            "int",
            "struct",
            "return",
            "unsigned",
            "long",
            "void",
            "const",
            "char",
            "#include",
            "<linux/module.h>",
            "if",
            "else",
            "for",
            "while",
            "NULL",
            "->",
            "err",
        ];
        let mut buf = Vec::new();
        let mut sizes = Vec::new();
        let mut x: u64 = 1;
        for _ in 0..600 {
            let start = buf.len();
            for _ in 0..400 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                buf.extend_from_slice(words[(x >> 33) as usize % words.len()].as_bytes());
                buf.push(if (x >> 20).is_multiple_of(7) {
                    b'\n'
                } else {
                    b' '
                });
            }
            sizes.push(buf.len() - start);
        }
        (buf, sizes)
    }

    #[test]
    fn trains_a_dictionary_with_its_id() {
        let (buf, sizes) = samples();
        let d = train(&buf, &sizes, 3).expect("trains");
        let id = dict_id_of(&d).unwrap();
        assert!(ID_RANGE.contains(&id));
        let dict = Dictionary::new(id, d.clone()).unwrap();
        assert_eq!(dict.ddict().get_dict_id().map(|i| i.get()), Some(id));
        assert!(Dictionary::new(id ^ 1, d).is_err());
        assert!(Dictionary::new(id, b"not a dictionary".to_vec()).is_err());
    }

    #[test]
    fn a_dictionary_with_the_right_header_and_damaged_tables_is_an_error() {
        let (buf, sizes) = samples();
        let mut d = train(&buf, &sizes, 3).expect("trains");
        let id = dict_id_of(&d).unwrap();
        // The entropy tables follow the ID: scramble them.
        for (i, b) in d[8..64].iter_mut().enumerate() {
            *b ^= 0x5a ^ i as u8;
        }
        let e = Dictionary::new(id, d).err().expect("refused");
        assert!(
            matches!(&e, Error::Corrupt { reason, .. } if reason.contains("cannot load")),
            "{e}"
        );
    }
}
