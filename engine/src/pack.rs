//! Packfiles: many encrypted blobs in one object, with an encrypted header
//! listing them so the index can be rebuilt from packs alone.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "CRNP"
//! 4       1     format version (1)
//! 5       1     pack type (0 data, 1 tree)
//! 6       2     reserved (0)
//! 8       16    salt: pack subkey = derive_key("cairn v1 2026-11 pack subkey", master || salt)
//! 24      ...   each blob: AES-256-GCM(stored bytes), nonce (domain 0, counter = its offset),
//!               AAD = id || type || compression (0 none, 1 zstd, 2 zstd with a dictionary,
//!               3 a group frame of several blobs, whose id bytes are zero)
//! h       n     header: AES-256-GCM(MessagePack [PackedBlob...]), its 16-byte tag
//!               included in n, nonce (domain 1, counter 0), AAD = bytes 0..24
//! h+n     4     n as u32 little-endian
//! ```

use crate::blob::{BlobType, PackedBlob, entry_aad};
use crate::compress::{self, Compression};
use crate::crypto::{
    Cipher, MasterKey, NONCE_DOMAIN_BLOB, NONCE_DOMAIN_PACK_HEADER, SALT_LEN, TAG_LEN, nonce,
    random_salt,
};
use crate::dict::DictSource;
use crate::error::{Error, Result};
use crate::id::Id;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

/// Magic bytes at the start of every pack.
pub const MAGIC: &[u8; 4] = b"CRNP";
/// Pack format version.
pub const VERSION: u8 = 1;
/// Length of the fixed prefix before the first blob.
pub const PREFIX_LEN: usize = 8 + SALT_LEN;
/// Length of the trailer holding the header length.
pub const TRAILER_LEN: usize = 4;
/// Largest header accepted when reading (guards against a forged length).
const MAX_HEADER_LEN: u32 = 64 << 20;

/// Builds one pack, in memory or spooled to a file.
pub struct PackWriter {
    pack_type: BlobType,
    prefix: [u8; PREFIX_LEN],
    cipher: Cipher,
    /// The bytes not spooled yet: the whole pack when built in memory.
    buf: Vec<u8>,
    spool: Option<Spool>,
    entries: Vec<PackedBlob>,
}

/// Where a spooled pack's bytes go, and what has gone there.
struct Spool {
    file: File,
    /// Bytes written to `file`, all before `buf`'s.
    written: u64,
    /// BLAKE3 of those bytes, which names the pack when finished.
    hasher: blake3::Hasher,
    /// The first write that failed; the pack then fails to finish.
    failed: Option<std::io::Error>,
}

/// A spooled pack writes its buffer out once it holds this much.
const SPOOL_FLUSH: usize = 1 << 20;
/// What errors about a spooled pack's file name it.
const SPOOL_NAME: &str = "a pack spooled to the repository's disk";

/// A finished pack, ready to be stored.
pub struct FinishedPack {
    /// The pack's object ID (BLAKE3 of its bytes).
    pub id: Id,
    /// The complete pack.
    pub body: PackBody,
    /// What it holds.
    pub entries: Vec<PackedBlob>,
}

/// Where a finished pack's bytes are.
pub enum PackBody {
    /// In memory.
    Memory(Vec<u8>),
    /// The first `len` bytes of an unnamed file.
    Spooled {
        /// The file ([`PackWriter::spooled`]).
        file: File,
        /// The pack's length.
        len: u64,
    },
}

impl FinishedPack {
    /// The pack's length in bytes.
    pub fn len(&self) -> u64 {
        match &self.body {
            PackBody::Memory(b) => b.len() as u64,
            PackBody::Spooled { len, .. } => *len,
        }
    }

    /// Whether the pack has no bytes (never: a pack has a prefix).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pack's bytes when it was built in memory.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.body {
            PackBody::Memory(b) => Some(b),
            PackBody::Spooled { .. } => None,
        }
    }
}

impl PackWriter {
    /// A new, empty pack for blobs of `pack_type`.
    pub fn new(key: &MasterKey, pack_type: BlobType) -> PackWriter {
        Self::with_salt(key, pack_type, random_salt())
    }

    /// A new, empty pack whose bytes go to `file` (an empty file, written
    /// from its start) as it fills, so that memory does not grow with the
    /// pack's size; a megabyte at most is held back.
    pub fn spooled(key: &MasterKey, pack_type: BlobType, file: File) -> PackWriter {
        let mut w = Self::new(key, pack_type);
        w.spool = Some(Spool {
            file,
            written: 0,
            hasher: blake3::Hasher::new(),
            failed: None,
        });
        w
    }

    /// Like [`PackWriter::new`] with a given salt (for golden test vectors).
    pub fn with_salt(key: &MasterKey, pack_type: BlobType, salt: [u8; SALT_LEN]) -> PackWriter {
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[..4].copy_from_slice(MAGIC);
        prefix[4..8].copy_from_slice(&[VERSION, pack_type.to_byte(), 0, 0]);
        prefix[8..].copy_from_slice(&salt);
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(&prefix);
        PackWriter {
            pack_type,
            cipher: key.pack_cipher(&salt),
            prefix,
            buf,
            spool: None,
            entries: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.spool.as_ref().map_or(0, |s| s.written as usize) + self.buf.len()
    }

    /// Number of blobs added.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// True when no blob has been added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encrypts and appends a blob whose plaintext is `raw_length` bytes and
    /// whose stored form (after compression) is `stored`.
    pub fn add(&mut self, id: Id, raw_length: u32, compression: Compression, stored: &[u8]) {
        let entry = PackedBlob {
            id,
            blob_type: self.pack_type,
            offset: 0,
            length: 0,
            raw_length,
            compression,
            start: None,
        };
        let entry = self.seal(entry, stored);
        self.entries.push(entry);
    }

    /// Encrypts and appends one group frame: `frame` is the zstd frame of
    /// `members`' plaintexts laid back to back, each given as its ID and
    /// length in that order. Each member gets an entry naming the frame.
    pub fn add_group(&mut self, members: &[(Id, u32)], frame: &[u8]) {
        let first = PackedBlob {
            id: Id([0; 32]),
            blob_type: self.pack_type,
            offset: 0,
            length: 0,
            raw_length: 0,
            compression: Compression::ZstdGroup,
            start: Some(0),
        };
        let frame = self.seal(first, frame);
        let mut start = 0u32;
        for &(id, raw_length) in members {
            self.entries.push(PackedBlob {
                id,
                raw_length,
                start: Some(start),
                ..frame
            });
            start += raw_length;
        }
    }

    /// Appends `stored` encrypted for `entry`, returning the entry with its
    /// place in the pack.
    fn seal(&mut self, entry: PackedBlob, stored: &[u8]) -> PackedBlob {
        // The offset is unique within the pack, so it serves as the nonce counter.
        let offset = self.len();
        let n = nonce(NONCE_DOMAIN_BLOB, offset as u64);
        self.cipher
            .seal_append(&n, &entry_aad(&entry), stored, &mut self.buf);
        if self.buf.len() >= SPOOL_FLUSH {
            self.spill();
        }
        PackedBlob {
            offset: offset as u32,
            length: (self.len() - offset) as u32,
            ..entry
        }
    }

    /// Writes the held-back bytes of a spooled pack to its file. A failure
    /// is kept for [`PackWriter::finish`] to report (adding stays
    /// infallible, and nothing of a failed pack is ever stored).
    fn spill(&mut self) {
        let Some(s) = &mut self.spool else { return };
        if s.failed.is_none() {
            s.hasher.update(&self.buf);
            if let Err(e) = s.file.write_all(&self.buf) {
                s.failed = Some(e);
            }
        }
        // Counted even when lost, so that offsets (nonces) stay unique and
        // the length is the pack's as if it had been written.
        s.written += self.buf.len() as u64;
        self.buf.clear();
    }

    /// Whether writing a spooled pack's file failed: the pack can then only
    /// fail to finish, so there is no point adding to it.
    pub fn failed(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| s.failed.is_some())
    }

    /// Appends the encrypted header and trailer. Fails only for a spooled
    /// pack whose file could not be written.
    pub fn finish(mut self) -> Result<FinishedPack> {
        let header = rmp_serde::to_vec(&self.entries).expect("entries serialize");
        let ct = self
            .cipher
            .seal(&nonce(NONCE_DOMAIN_PACK_HEADER, 0), &self.prefix, &header);
        self.buf.extend_from_slice(&ct);
        self.buf.extend_from_slice(&(ct.len() as u32).to_le_bytes());
        self.spill();
        let (id, body) = match self.spool.take() {
            None => (Id::of_object(&self.buf), PackBody::Memory(self.buf)),
            Some(Spool {
                failed: Some(e), ..
            }) => {
                return Err(Error::io("write", SPOOL_NAME, e));
            }
            Some(Spool {
                file,
                written,
                hasher,
                ..
            }) => (
                Id(*hasher.finalize().as_bytes()),
                PackBody::Spooled { file, len: written },
            ),
        };
        Ok(FinishedPack {
            id,
            body,
            entries: self.entries,
        })
    }
}

fn pack_name(id: &Id) -> String {
    format!("pack {}", id.to_hex())
}

/// Reads the salt from a pack's prefix, checking magic and version.
pub fn parse_prefix(pack: &Id, prefix: &[u8]) -> Result<[u8; SALT_LEN]> {
    if prefix.len() < PREFIX_LEN || &prefix[..4] != MAGIC {
        return Err(Error::corrupt(
            pack_name(pack),
            "bad magic: not a cairn pack",
        ));
    }
    if prefix[4] != VERSION {
        return Err(Error::corrupt(
            pack_name(pack),
            format!("unsupported pack version {}", prefix[4]),
        ));
    }
    if prefix[5] > 1 || prefix[6] != 0 || prefix[7] != 0 {
        return Err(Error::corrupt(
            pack_name(pack),
            "unknown pack type or reserved bytes set",
        ));
    }
    Ok(prefix[8..PREFIX_LEN].try_into().expect("16 bytes"))
}

/// Pack `bytes` with its prefix mended where one flipped bit there would
/// cost every blob of the pack (for salvage: `repair packs`). The header
/// binds the whole prefix, so a prefix that opens it is the original: the
/// one tried are the fixed bytes (magic, version, reserved) put back,
/// either type, and each single-bit change of the salt. Where the header
/// opens with none, the fixed bytes alone are put back (blobs are sealed
/// under the salt only). Every blob is still authenticated and hashed.
pub fn mend_pack<'a>(key: &MasterKey, pack: &Id, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    let mut scratch = Vec::new();
    let Ok(header_ct) = header_in(pack, bytes, &mut scratch) else {
        return mend_prefix(bytes);
    };
    match open_header_mending(key, pack, &bytes[..PREFIX_LEN], header_ct) {
        Ok((_, None)) => std::borrow::Cow::Borrowed(bytes),
        Ok((_, Some(prefix))) => {
            let mut mended = bytes.to_vec();
            mended[..PREFIX_LEN].copy_from_slice(&prefix);
            std::borrow::Cow::Owned(mended)
        }
        Err(_) => mend_prefix(bytes),
    }
}

/// Like [`open_header`]; where `prefix` does not open the header, tries
/// the prefixes [`mend_pack`] names and returns the one that opens it.
pub fn open_header_mending(
    key: &MasterKey,
    pack: &Id,
    prefix: &[u8],
    header_ct: &[u8],
) -> Result<(Vec<PackedBlob>, Option<[u8; PREFIX_LEN]>)> {
    let first = match open_header(key, pack, prefix, header_ct) {
        Ok(entries) => return Ok((entries, None)),
        Err(e @ Error::Corrupt { .. }) if prefix.len() >= PREFIX_LEN => e,
        Err(e) => return Err(e),
    };
    let mut base: [u8; PREFIX_LEN] = prefix[..PREFIX_LEN].try_into().expect("prefix length");
    put_back_fixed_bytes(&mut base);
    for kind in [base[5], 1 - base[5]] {
        base[5] = kind;
        let salt_flips = (0..SALT_LEN * 8).map(Some);
        for flip in std::iter::once(None).chain(salt_flips) {
            let mut candidate = base;
            if let Some(bit) = flip {
                candidate[8 + bit / 8] ^= 1 << (bit % 8);
            }
            if candidate[..] == prefix[..PREFIX_LEN] {
                continue;
            }
            if let Ok(entries) = open_header(key, pack, &candidate, header_ct) {
                return Ok((entries, Some(candidate)));
            }
        }
    }
    Err(first)
}

/// Pack `bytes` with the fixed bytes of its prefix (magic, version, type,
/// reserved) put back where they are wrong, the salt as it is.
fn mend_prefix(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if bytes.len() < PREFIX_LEN {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut fixed = [0u8; 8];
    fixed.copy_from_slice(&bytes[..8]);
    put_back_fixed_bytes(&mut fixed);
    if fixed[..] == bytes[..8] {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut mended = bytes.to_vec();
    mended[..8].copy_from_slice(&fixed);
    std::borrow::Cow::Owned(mended)
}

/// Puts back the fixed bytes at the start of a pack prefix (magic,
/// version, reserved) and keeps the type to its low bit (0 or 1).
fn put_back_fixed_bytes(prefix: &mut [u8]) {
    prefix[..4].copy_from_slice(MAGIC);
    prefix[4] = VERSION;
    prefix[5] &= 1;
    prefix[6] = 0;
    prefix[7] = 0;
}

/// The header length stored in a pack's trailer, validated against the pack size.
pub fn header_len(pack: &Id, trailer: &[u8], pack_size: u64) -> Result<u32> {
    let n = u32::from_le_bytes(
        trailer
            .try_into()
            .map_err(|_| Error::corrupt(pack_name(pack), "short trailer"))?,
    );
    if n < TAG_LEN as u32
        || n > MAX_HEADER_LEN
        || (n as u64) + (PREFIX_LEN + TRAILER_LEN) as u64 > pack_size
    {
        return Err(Error::corrupt(
            pack_name(pack),
            format!("header length {n} does not fit a pack of {pack_size} bytes (truncated?)"),
        ));
    }
    Ok(n)
}

/// Decrypts a pack header given the pack's prefix and the header ciphertext.
pub fn open_header(
    key: &MasterKey,
    pack: &Id,
    prefix: &[u8],
    header_ct: &[u8],
) -> Result<Vec<PackedBlob>> {
    let salt = parse_prefix(pack, prefix)?;
    let what = pack_name(pack);
    let plain = key.pack_cipher(&salt).open(
        &nonce(NONCE_DOMAIN_PACK_HEADER, 0),
        &prefix[..PREFIX_LEN],
        header_ct,
        &format!("{what} header"),
    )?;
    decode_header(&plain, &what)
}

/// The entries of a pack header's plaintext.
fn decode_header(plain: &[u8], what: &str) -> Result<Vec<PackedBlob>> {
    let entries: Vec<HeaderEntry> =
        rmp_serde::from_slice(plain).map_err(|e| Error::corrupt(what, format!("header: {e}")))?;
    Ok(entries.into_iter().map(|e| e.0).collect())
}

/// A pack header entry, which is an array of 6 or 7 elements and nothing
/// else (spec §9): serde would take a map for the struct too, and ignore
/// its keys it does not know, while entries may not grow without a new
/// format version.
struct HeaderEntry(PackedBlob);

impl<'de> serde::Deserialize<'de> for HeaderEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{Error as _, IgnoredAny, SeqAccess, Visitor};
        struct Entry;
        impl<'de> Visitor<'de> for Entry {
            type Value = PackedBlob;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of 6 or 7 elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<PackedBlob, A::Error> {
                let short = |n| A::Error::invalid_length(n, &Entry);
                let entry = PackedBlob {
                    id: a.next_element()?.ok_or_else(|| short(0))?,
                    blob_type: a.next_element()?.ok_or_else(|| short(1))?,
                    offset: a.next_element()?.ok_or_else(|| short(2))?,
                    length: a.next_element()?.ok_or_else(|| short(3))?,
                    raw_length: a.next_element()?.ok_or_else(|| short(4))?,
                    compression: a.next_element()?.ok_or_else(|| short(5))?,
                    start: a.next_element()?,
                };
                if a.next_element::<IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(8, &Entry));
                }
                Ok(entry)
            }
        }
        d.deserialize_seq(Entry).map(HeaderEntry)
    }
}

/// Parses a whole pack held in memory: its header entries, checked against its size.
pub fn read_header_from_bytes(key: &MasterKey, pack: &Id, bytes: &[u8]) -> Result<Vec<PackedBlob>> {
    read_header_in(key, pack, bytes)
}

/// [`read_header_from_bytes`] over a pack read from `source`.
fn read_header_in(
    key: &MasterKey,
    pack: &Id,
    source: &(impl PackSource + ?Sized),
) -> Result<Vec<PackedBlob>> {
    // Checks the length before the prefix is read.
    let (mut ct, mut prefix) = (Vec::new(), Vec::new());
    let header_ct = header_in(pack, source, &mut ct)?;
    let prefix = source
        .range(0, PREFIX_LEN, &mut prefix)?
        .expect("a pack long enough for its header has a prefix");
    open_header(key, pack, prefix, header_ct)
}

/// The header ciphertext of a whole pack, where its trailer says it is
/// (in `scratch` if it must be copied).
fn header_in<'a>(
    pack: &Id,
    source: &'a (impl PackSource + ?Sized),
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    let size = source.size();
    let short = || Error::corrupt(pack_name(pack), "too short to be a pack (truncated?)");
    if size < (PREFIX_LEN + TRAILER_LEN + TAG_LEN) as u64 {
        return Err(short());
    }
    let end = size - TRAILER_LEN as u64;
    let mut t = Vec::new();
    let trailer = source.range(end, TRAILER_LEN, &mut t)?.ok_or_else(short)?;
    let n = header_len(pack, trailer, size)?;
    source
        .range(end - n as u64, n as usize, scratch)?
        .ok_or_else(short)
}

/// Decrypts, decompresses and verifies one blob. `ciphertext` is the blob's
/// bytes as stored in the pack; `cipher` is the pack's subkey; `dicts`
/// supplies the dictionary of a blob compressed with one.
pub fn open_blob(
    key: &MasterKey,
    cipher: &Cipher,
    entry: &PackedBlob,
    ciphertext: &[u8],
    pack: &Id,
    dicts: &dyn DictSource,
) -> Result<Vec<u8>> {
    let what = blob_name(entry, pack);
    if entry.in_group() {
        let frame = open_frame(cipher, entry, ciphertext, pack)?;
        return group_member(key, entry, &frame, pack).map(<[u8]>::to_vec);
    }
    let stored = open_stored(cipher, entry, ciphertext, pack)?;
    let plain = compress::decompress(
        entry.compression,
        stored,
        entry.raw_length as usize,
        &what,
        dicts,
    )?;
    check_id(key, entry, &plain, &what)?;
    Ok(plain)
}

/// Decrypts and decodes the group frame holding `entry` (a group member):
/// the plaintexts of all its members, back to back.
pub fn open_frame(
    cipher: &Cipher,
    entry: &PackedBlob,
    ciphertext: &[u8],
    pack: &Id,
) -> Result<Vec<u8>> {
    let (mut stored, mut frame) = (Vec::new(), Vec::new());
    let what = frame_name(entry, pack);
    open_stored_into(cipher, entry, ciphertext, &what, &mut stored)?;
    compress::decompress_group(&stored, &what, &mut frame)?;
    Ok(frame)
}

/// The member `entry` names in its decoded group `frame`, checked against
/// its length and keyed hash.
pub fn group_member<'f>(
    key: &MasterKey,
    entry: &PackedBlob,
    frame: &'f [u8],
    pack: &Id,
) -> Result<&'f [u8]> {
    let what = blob_name(entry, pack);
    if entry.blob_type != BlobType::Data {
        // Frames hold data only; a tree entry naming one is forged or damaged.
        return Err(Error::corrupt(&what, "a tree listed as a group member"));
    }
    let start = entry
        .start
        .ok_or_else(|| Error::corrupt(&what, "group member without a start"))?
        as usize;
    let plain = frame
        .get(start..start + entry.raw_length as usize)
        .ok_or_else(|| Error::corrupt(&what, "lies beyond the end of its group frame"))?;
    check_id(key, entry, plain, &what)?;
    Ok(plain)
}

fn frame_name(entry: &PackedBlob, pack: &Id) -> String {
    format!("group frame at offset {} in pack {}", entry.offset, pack)
}

fn blob_name(entry: &PackedBlob, pack: &Id) -> String {
    format!("blob {} in pack {}", entry.id, pack)
}

/// Whether `plain` is the content `entry` names: its length and keyed hash.
fn check_id(key: &MasterKey, entry: &PackedBlob, plain: &[u8], what: &str) -> Result<()> {
    if plain.len() != entry.raw_length as usize || key.blob_id(plain) != entry.id {
        return Err(Error::corrupt(what, "content does not hash to its ID"));
    }
    Ok(())
}

/// Decrypts and authenticates one blob, leaving it as stored (compressed
/// or not, per `entry`). The AEAD binds the bytes to the blob's ID, type
/// and compression, so they can be moved to another pack as they are
/// (not a group member's: its frame holds other blobs too).
pub fn open_stored(
    cipher: &Cipher,
    entry: &PackedBlob,
    ciphertext: &[u8],
    pack: &Id,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    open_stored_into(cipher, entry, ciphertext, &blob_name(entry, pack), &mut out)?;
    Ok(out)
}

/// Like [`open_stored`], into `out` (reused by callers opening many blobs).
fn open_stored_into(
    cipher: &Cipher,
    entry: &PackedBlob,
    ciphertext: &[u8],
    what: &str,
    out: &mut Vec<u8>,
) -> Result<()> {
    cipher.open_into(
        &nonce(NONCE_DOMAIN_BLOB, entry.offset as u64),
        &entry_aad(entry),
        ciphertext,
        what,
        out,
    )
}

/// Checks every blob of a finished pack: decrypt, decompress, hash. Run
/// before the pack is stored, so a compressor or memory fault never reaches
/// the repository.
pub fn verify_finished(key: &MasterKey, pack: &FinishedPack, dicts: &dyn DictSource) -> Result<()> {
    match &pack.body {
        PackBody::Memory(bytes) => verify_from(key, pack, &bytes[..], dicts),
        PackBody::Spooled { file, len } => {
            verify_from(key, pack, &SpooledSource { file, len: *len }, dicts)
        }
    }
}

/// [`verify_finished`] reading the pack from `source`.
fn verify_from(
    key: &MasterKey,
    pack: &FinishedPack,
    source: &(impl PackSource + ?Sized),
    dicts: &dyn DictSource,
) -> Result<()> {
    let header = read_header_in(key, &pack.id, source)?;
    if header != pack.entries {
        return Err(Error::corrupt(
            pack_name(&pack.id),
            "header does not match the blobs written",
        ));
    }
    open_each_in(key, &pack.id, source, &pack.entries, dicts, |_, opened| {
        opened.map(|_| ())
    })
}

/// A pack's bytes, read range by range (see [`open_each_in`]).
trait PackSource {
    /// The pack's length in bytes.
    fn size(&self) -> u64;
    /// The `len` bytes at `offset`, in `scratch` if they must be copied;
    /// `None` past the pack's end.
    fn range<'a>(
        &'a self,
        offset: u64,
        len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>>;
}

impl PackSource for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn range<'a>(
        &'a self,
        offset: u64,
        len: usize,
        _: &'a mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        Ok(self.get(start..start.saturating_add(len)))
    }
}

/// A spooled pack's file, read blob by blob so that verifying it does not
/// bring the whole pack into memory.
struct SpooledSource<'f> {
    file: &'f File,
    len: u64,
}

impl PackSource for SpooledSource<'_> {
    fn size(&self) -> u64 {
        self.len
    }
    fn range<'a>(
        &'a self,
        offset: u64,
        len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>> {
        if offset.saturating_add(len as u64) > self.len {
            return Ok(None);
        }
        scratch.resize(len, 0);
        self.file
            .read_exact_at(scratch, offset)
            .map_err(|e| Error::io("read", SPOOL_NAME, e))?;
        Ok(Some(scratch))
    }
}

/// Decrypts, decompresses and hashes each of `entries` in the pack `bytes`
/// named `pack`, handing each blob's plaintext to `each` (which may check
/// more), stopping at the first failure. One cipher and two buffers serve
/// the whole pack; a group frame is decoded once for its members listed
/// one after another.
pub fn verify_blobs(
    key: &MasterKey,
    pack: &Id,
    bytes: &[u8],
    entries: &[PackedBlob],
    dicts: &dyn DictSource,
    mut each: impl FnMut(&PackedBlob, &[u8]) -> Result<()>,
) -> Result<()> {
    open_each(key, pack, bytes, entries, dicts, |e, opened| {
        each(e, opened?)
    })
}

/// Like [`verify_blobs`], but hands `each` every blob's outcome, so a
/// damaged blob does not hide the intact ones after it (what `check` and
/// `repair packs` need of a damaged pack); stops only where `each` fails.
pub fn open_each(
    key: &MasterKey,
    pack: &Id,
    bytes: &[u8],
    entries: &[PackedBlob],
    dicts: &dyn DictSource,
    each: impl FnMut(&PackedBlob, Result<&[u8]>) -> Result<()>,
) -> Result<()> {
    open_each_in(key, pack, bytes, entries, dicts, each)
}

/// [`open_each`] over a pack read from `source`.
fn open_each_in(
    key: &MasterKey,
    pack: &Id,
    source: &(impl PackSource + ?Sized),
    entries: &[PackedBlob],
    dicts: &dyn DictSource,
    mut each: impl FnMut(&PackedBlob, Result<&[u8]>) -> Result<()>,
) -> Result<()> {
    let mut ct_buf = Vec::new();
    let prefix = source
        .range(0, PREFIX_LEN, &mut ct_buf)?
        .unwrap_or_default();
    let cipher = match parse_prefix(pack, prefix) {
        Ok(salt) => key.pack_cipher(&salt),
        Err(e) => {
            for entry in entries {
                each(entry, Err(e.replica()))?;
            }
            return Ok(());
        }
    };
    let (mut stored, mut plain) = (Vec::new(), Vec::new());
    // The group frame last decoded into `plain` (by what its AAD binds:
    // offset and length, type and compression), with why it failed to,
    // if it did.
    type FrameKey = (u32, u32, BlobType, Compression);
    let mut frame: Option<(FrameKey, Option<Error>)> = None;
    for e in entries {
        let beyond = || Error::corrupt(pack_name(pack), "blob lies beyond the end of the pack");
        if e.in_group() {
            let at = (e.offset, e.length, e.blob_type, e.compression);
            // A frame's bytes are read once for all its members.
            if frame.as_ref().map(|f| f.0) != Some(at) {
                let Some(ct) = source.range(e.offset as u64, e.length as usize, &mut ct_buf)?
                else {
                    frame = None;
                    each(e, Err(beyond()))?;
                    continue;
                };
                let name = frame_name(e, pack);
                let decoded = open_stored_into(&cipher, e, ct, &name, &mut stored)
                    .and_then(|()| compress::decompress_group(&stored, &name, &mut plain));
                frame = Some((at, decoded.err()));
            }
            let member = match &frame {
                Some((_, Some(failed))) => Err(failed.replica()),
                _ => group_member(key, e, &plain, pack),
            };
            each(e, member)?;
            continue;
        }
        frame = None;
        let Some(ct) = source.range(e.offset as u64, e.length as usize, &mut ct_buf)? else {
            each(e, Err(beyond()))?;
            continue;
        };
        let opened = open_single(key, &cipher, e, ct, pack, dicts, &mut stored, &mut plain);
        each(e, opened)?;
    }
    Ok(())
}

/// Opens one blob that is not a group member, into the buffers given.
#[allow(clippy::too_many_arguments)]
fn open_single<'b>(
    key: &MasterKey,
    cipher: &Cipher,
    e: &PackedBlob,
    ct: &[u8],
    pack: &Id,
    dicts: &dyn DictSource,
    stored: &'b mut Vec<u8>,
    plain: &'b mut Vec<u8>,
) -> Result<&'b [u8]> {
    let what = blob_name(e, pack);
    open_stored_into(cipher, e, ct, &what, stored)?;
    let content = if e.compression == Compression::None {
        stored
    } else {
        compress::decompress_into(
            e.compression,
            stored,
            e.raw_length as usize,
            &what,
            dicts,
            plain,
        )?;
        plain
    };
    check_id(key, e, content, &what)?;
    Ok(content)
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_entries_are_arrays_of_6_or_7_elements_only() {
        let entry = PackedBlob {
            id: Id([7; 32]),
            blob_type: BlobType::Data,
            offset: 24,
            length: 40,
            raw_length: 24,
            compression: Compression::None,
            start: None,
        };
        let grouped = PackedBlob {
            compression: Compression::ZstdGroup,
            start: Some(3),
            ..entry
        };
        let both = rmp_serde::to_vec(&[entry, grouped]).unwrap();
        assert_eq!(decode_header(&both, "p").unwrap(), vec![entry, grouped]);
        // The same entries as maps, as serde would take them for the struct.
        let maps = rmp_serde::to_vec_named(&[entry]).unwrap();
        assert!(rmp_serde::from_slice::<Vec<PackedBlob>>(&maps).is_ok());
        let e = decode_header(&maps, "p").unwrap_err().to_string();
        assert!(e.contains("an array of 6 or 7 elements"), "{e}");
        // An eighth element, or a fifth only.
        let long =
            rmp_serde::to_vec(&[(Id([7; 32]), 0u8, 24u32, 40u32, 24u32, 3u8, 3u32, 9u32)]).unwrap();
        let e = decode_header(&long, "p").unwrap_err().to_string();
        assert!(e.contains("6 or 7"), "{e}");
        let short = rmp_serde::to_vec(&[(Id([7; 32]), 0u8, 24u32, 40u32, 24u32)]).unwrap();
        assert!(decode_header(&short, "p").is_err());
    }

    use super::*;

    #[test]
    fn group_members_open_and_forged_entries_do_not() {
        let k = MasterKey::from_bytes([3; 32]);
        let members: Vec<Vec<u8>> = vec![b"alpha ".repeat(50), Vec::new(), b"omega".to_vec()];
        let ids: Vec<(Id, u32)> = members
            .iter()
            .map(|m| (k.blob_id(m), m.len() as u32))
            .collect();
        let frame = compress::compress_group(&members.concat(), 3).unwrap();
        let mut w = PackWriter::new(&k, BlobType::Data);
        w.add_group(&ids, &frame);
        let p = w.finish().unwrap();
        let pb = p.bytes().unwrap();
        verify_finished(&k, &p, &crate::dict::NoDicts).unwrap();
        let cipher = k.pack_cipher(&parse_prefix(&p.id, pb).unwrap());
        let open = |e: &PackedBlob| {
            let ct = &pb[e.offset as usize..(e.offset + e.length) as usize];
            open_blob(&k, &cipher, e, ct, &p.id, &crate::dict::NoDicts)
        };
        for (e, m) in p.entries.iter().zip(&members) {
            assert_eq!(&open(e).unwrap(), m);
        }
        // Another member's start, no start, or a tree type: refused.
        let e = p.entries[2];
        assert!(
            open(&PackedBlob {
                start: Some(0),
                ..e
            })
            .is_err()
        );
        assert!(open(&PackedBlob { start: None, ..e }).is_err());
        let tree = PackedBlob {
            blob_type: BlobType::Tree,
            ..e
        };
        assert!(open(&tree).is_err(), "the frame's AAD names data");
        // A frame already decoded (a reader's cache) is not decrypted again:
        // the member check itself refuses a tree.
        let ct = &pb[e.offset as usize..(e.offset + e.length) as usize];
        let decoded = open_frame(&cipher, &e, ct, &p.id).unwrap();
        assert_eq!(group_member(&k, &e, &decoded, &p.id).unwrap(), b"omega");
        let err = group_member(&k, &tree, &decoded, &p.id).unwrap_err();
        assert!(err.to_string().contains("tree"), "{err}");
    }

    /// The blobs of the spooling tests: small ones, a group, and one larger
    /// than a spool flush, so the file is written in several steps.
    fn fill(w: &mut PackWriter, k: &MasterKey) {
        for i in 0..50u32 {
            let b = format!("blob {i} ").repeat(i as usize * 100).into_bytes();
            let (c, s) = compress::compress(&b, 3);
            w.add(k.blob_id(&b), b.len() as u32, c, &s);
        }
        let members = [b"first ".repeat(40), b"second ".repeat(40)];
        let ids: Vec<(Id, u32)> = members
            .iter()
            .map(|m| (k.blob_id(m), m.len() as u32))
            .collect();
        w.add_group(
            &ids,
            &compress::compress_group(&members.concat(), 3).unwrap(),
        );
        let big: Vec<u8> = (0..3 * SPOOL_FLUSH as u32)
            .map(|i| (i.wrapping_mul(7919) >> 5) as u8)
            .collect();
        w.add(k.blob_id(&big), big.len() as u32, Compression::None, &big);
    }

    #[test]
    fn a_spooled_pack_is_the_pack_built_in_memory_and_is_verified_from_its_file() {
        let k = MasterKey::from_bytes([5; 32]);
        let salt = [4u8; SALT_LEN];
        let mut mem = PackWriter::with_salt(&k, BlobType::Data, salt);
        fill(&mut mem, &k);
        let mem = mem.finish().unwrap();
        let spooled = |file: File| {
            let mut w = PackWriter::with_salt(&k, BlobType::Data, salt);
            w.spool = PackWriter::spooled(&k, BlobType::Data, file).spool;
            fill(&mut w, &k);
            w.finish().unwrap()
        };
        let p = spooled(tempfile::tempfile().unwrap());
        assert_eq!(
            (p.id, &p.entries, p.len()),
            (mem.id, &mem.entries, mem.len())
        );
        let PackBody::Spooled { file, len } = &p.body else {
            panic!("built in memory")
        };
        let mut on_disk = vec![0; *len as usize];
        file.read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(on_disk, mem.bytes().unwrap());
        verify_finished(&k, &p, &crate::dict::NoDicts).unwrap();
        // What verification reads is the file: a flipped bit in a blob, in
        // the group frame or in the header, or a lost end, is caught.
        let group = p.entries.iter().find(|e| e.in_group()).unwrap().offset as u64;
        for at in [PREFIX_LEN as u64 + 3, group + 2, *len - 10] {
            let p = spooled(tempfile::tempfile().unwrap());
            let PackBody::Spooled { file, .. } = &p.body else {
                unreachable!()
            };
            let mut b = [0u8];
            file.read_exact_at(&mut b, at).unwrap();
            file.write_all_at(&[b[0] ^ 0x20], at).unwrap();
            assert!(
                verify_finished(&k, &p, &crate::dict::NoDicts).is_err(),
                "flip at {at}"
            );
        }
        let p = spooled(tempfile::tempfile().unwrap());
        let PackBody::Spooled { file, len } = p.body else {
            unreachable!()
        };
        file.set_len(len - 1).unwrap();
        let short = FinishedPack {
            body: PackBody::Spooled { file, len },
            ..p
        };
        assert!(verify_finished(&k, &short, &crate::dict::NoDicts).is_err());
    }

    #[test]
    fn a_pack_whose_spool_cannot_be_written_does_not_finish() {
        let k = MasterKey::from_bytes([5; 32]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let read_only = File::open(dir.path().join("f")).unwrap();
        let mut w = PackWriter::spooled(&k, BlobType::Data, read_only);
        fill(&mut w, &k);
        assert!(w.failed());
        // Offsets went on as if the file had been written.
        let mut mem = PackWriter::new(&k, BlobType::Data);
        fill(&mut mem, &k);
        assert_eq!(w.len(), mem.len());
        let e = w.finish().err().expect("a pack that was never written");
        assert!(e.to_string().contains("spooled"), "{e}");
    }

    #[test]
    fn write_read_verify() {
        let k = MasterKey::from_bytes([9; 32]);
        let mut w = PackWriter::new(&k, BlobType::Data);
        let blobs: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![7u8; 5000], Vec::new()];
        for b in &blobs {
            let (c, s) = compress::compress(b, 3);
            w.add(k.blob_id(b), b.len() as u32, c, &s);
        }
        let p = w.finish().unwrap();
        let pb = p.bytes().unwrap();
        verify_finished(&k, &p, &crate::dict::NoDicts).unwrap();
        let entries = read_header_from_bytes(&k, &p.id, pb).unwrap();
        assert_eq!(entries.len(), 3);
        // Offsets are nonces: a blob moved to another offset does not open.
        let cipher = k.pack_cipher(&parse_prefix(&p.id, pb).unwrap());
        let e = entries[1];
        let ct = &pb[e.offset as usize..e.offset as usize + e.length as usize];
        assert_eq!(
            open_blob(&k, &cipher, &e, ct, &p.id, &crate::dict::NoDicts).unwrap(),
            blobs[1]
        );
        let moved = PackedBlob {
            offset: e.offset + 1,
            ..e
        };
        assert!(open_blob(&k, &cipher, &moved, ct, &p.id, &crate::dict::NoDicts).is_err());
        // Truncation and bit flips are detected.
        assert!(read_header_from_bytes(&k, &p.id, &pb[..pb.len() - 10]).is_err());
        let mut bad = pb.to_vec();
        bad[30] ^= 0x10;
        let cipher = k.pack_cipher(&parse_prefix(&p.id, &bad).unwrap());
        let e0 = &entries[0];
        assert!(
            open_blob(
                &k,
                &cipher,
                e0,
                &bad[e0.offset as usize..(e0.offset + e0.length) as usize],
                &p.id,
                &crate::dict::NoDicts
            )
            .is_err()
        );
    }
}
