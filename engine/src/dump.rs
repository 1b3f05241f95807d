//! `dump`: one file's content, or a directory as a tar or zip stream.
//!
//! Content is streamed blob by blob, so memory stays at one blob whatever
//! the file size. As in restic, archive entries are named by their path in
//! the snapshot without the leading `/` (`home/me/work/a.txt`), and
//! `SNAPSHOT:SUBFOLDER` makes paths relative to the subfolder. Unlike
//! restic, a directory dumped by its path is itself the first entry (its
//! mode, owner and times); its ancestors are not entries, nor is the
//! subfolder of `SNAPSHOT:SUBFOLDER`.
//!
//! tar keeps modes (with setuid, setgid, sticky), owners, mtimes (PAX
//! records carry nanoseconds and times before 1970), symlinks, FIFOs,
//! devices, hard links (as GNU tar writes them: later names of an inode
//! link to its first), extended attributes (`SCHILY.xattr.*`) and POSIX
//! ACLs (also as `SCHILY.acl.*` text, for `tar --acls`). zip keeps
//! permission bits (read, write, execute only: the zip crate masks
//! setuid, setgid and sticky away; use tar for those), mtimes (DOS time plus the extended-timestamp field)
//! and symlinks; it has no way to hold FIFOs or devices, so they are left
//! out, hard-linked names each hold a copy, and a name that is not UTF-8
//! is stored with each byte that is not as `\xNN` (see [`DumpSummary`]).
//!
//! A file with content chunks that are all zeros (holes of a sparse file,
//! cut by the chunker into chunks of zeros) goes into a tar as a PAX sparse
//! entry (format 1.0, as `tar --sparse` writes), holding only the other
//! chunks: a 6 GiB disk image that is nearly all hole no longer makes a
//! 6 GiB archive. GNU tar, bsdtar and Python's tarfile make the holes
//! again; zip has no such entry and holds the zeros, as does a tar with
//! `no_sparse` (busybox tar reads such an entry as a file of its own).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::Serialize;

use crate::bulk_read::{BulkReader, DEFAULT_CAPACITY, Plan};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::posix_acl;
use crate::repository::Repository;
use crate::tree::{LinkGroup, Node, NodeKind, Timestamp};
use crate::walk::{Next, lookup, normalize, shown, snapshot_root, subtree_of, walk};

/// How a directory is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveFormat {
    /// A tar stream (GNU headers with PAX records).
    #[default]
    Tar,
    /// A zip stream (data descriptors, so no seeking is needed).
    Zip,
}

impl FromStr for ArchiveFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<ArchiveFormat> {
        match s {
            "tar" => Ok(ArchiveFormat::Tar),
            "zip" => Ok(ArchiveFormat::Zip),
            _ => Err(Error::InvalidInput(format!(
                "unknown archive format {s:?}: use tar or zip"
            ))),
        }
    }
}

/// What to dump.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// Snapshot: ID, unique prefix or `latest`, optionally `:SUBFOLDER`
    /// (as bytes: names need not be UTF-8).
    pub snapshot: Vec<u8>,
    /// Path inside the snapshot (or subfolder), as bytes (names need not
    /// be UTF-8); `/` dumps all of it.
    pub path: Vec<u8>,
    /// Format for directories.
    pub archive: ArchiveFormat,
    /// The output is a terminal: refuse to write an archive onto it.
    pub output_is_terminal: bool,
    /// Write every file whole in a tar, its chunks of zeros too, for
    /// readers without PAX sparse entries (busybox tar) and for swap files.
    pub no_sparse: bool,
}

/// What was written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DumpSummary {
    /// Whether an archive (rather than one file's content) was written.
    pub archive: bool,
    /// Archive entries written (1 for a file).
    pub entries: u64,
    /// File content bytes written.
    pub bytes: u64,
    /// Hard-linked names after their group's first: in a tar, entries
    /// linking to that first entry; in a zip, which has no hard links,
    /// names holding a copy.
    pub hard_links: u64,
    /// Zip entries whose paths are not UTF-8 (zip names are text): their
    /// other bytes are written as `\xNN`. Tar keeps names as bytes.
    pub escaped_names: u64,
    /// Zip entries whose name (escaped as above) equalled an earlier
    /// one's: written with a `~N` suffix.
    pub renamed: u64,
    /// Entries a zip cannot hold (FIFOs, devices, sockets), left out.
    pub left_out: u64,
    /// Zip entries whose setuid, setgid or sticky bit was dropped (zip
    /// keeps permission bits only).
    pub special_bits_dropped: u64,
    /// Zip symbolic links whose target is not UTF-8 (written with U+FFFD).
    pub lossy_link_targets: u64,
    /// Zip entries whose modification time a DOS time cannot hold (before
    /// 1980 or after 2107): written as 1980-01-01, with the exact time in
    /// the extended timestamp where that holds it (1901 to 2038).
    pub times_out_of_range: u64,
    /// Files written to a tar as sparse entries, their chunks of zeros
    /// left out (`bytes` counts them whole).
    pub sparse_files: u64,
}

/// Writes the file or directory `opts.path` of a snapshot to `out`.
pub fn dump(repo: &Repository, opts: &DumpOptions, out: &mut dyn Write) -> Result<DumpSummary> {
    let root = snapshot_root(repo, &opts.snapshot)?.tree;
    let path = normalize(&opts.path);
    // A directory asked for is an entry of the archive too: its mode,
    // owner and times travel with it.
    let (tree, prefix, top) = match lookup(repo, &root, &path)? {
        None => (root, Vec::new(), None),
        Some(n) if n.kind == NodeKind::Dir => (subtree_of(&n, &path)?, path, Some(n)),
        Some(n) if n.kind == NodeKind::File => {
            let reader = BulkReader::new(repo, n.content.iter().copied())?;
            let bytes =
                io::copy(&mut ContentReader::new(&reader, &n, &path), out).map_err(from_io)?;
            out.flush().map_err(from_io)?;
            return Ok(DumpSummary {
                archive: false,
                entries: 1,
                bytes,
                ..DumpSummary::default()
            });
        }
        Some(n) => {
            return Err(Error::InvalidInput(format!(
                "{} is a {}, not a file or directory",
                shown(&path),
                serde_json::to_value(n.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            )));
        }
    };
    if opts.output_is_terminal {
        return Err(Error::InvalidInput(
            "refusing to write an archive to a terminal: redirect standard output".into(),
        ));
    }
    // Every file's content, so that each pack is fetched in a few ranges.
    let plan = Plan::new(repo)?;
    // Chunks of zeros a tar leaves out (sparse entries): never fetched.
    let mut zeros = Zeros::new(repo);
    // Names are checked here, before the archive's first byte: a name
    // like `..` or `a/../../x` in a forged tree would make a zip-slip
    // archive that some extractors write outside their target.
    walk(repo, &tree, &prefix, &mut |p, n| {
        if !n.has_safe_name() {
            return Err(Error::corrupt("snapshot", n.unsafe_name_error()));
        }
        if n.kind == NodeKind::File {
            // A path that is not UTF-8 stays in the entry's own header:
            // bsdtar cannot turn such a `GNU.sparse.name` into a path.
            if opts.archive == ArchiveFormat::Tar && !opts.no_sparse && may_be_sparse(p) {
                for id in &n.content {
                    if !zeros.is_zero(plan.index(), id)? {
                        plan.add(id)?;
                    }
                }
            } else {
                plan.add_all(&n.content)?;
            }
        }
        Ok(Next::Continue)
    })?;
    let reader = plan.into_reader(DEFAULT_CAPACITY);
    let mut summary = DumpSummary {
        archive: true,
        ..DumpSummary::default()
    };
    // Dropped on a failure, the archive writers finish the archive anyway
    // (tar's end blocks, zip's central directory): a zip cut off at a
    // damaged file then tested as complete. Once cut, nothing more is
    // written, so what was written reads as the truncated archive it is.
    let cut = std::cell::Cell::new(false);
    let mut cut_out = Cut { out, cut: &cut };
    let out: &mut dyn Write = &mut cut_out;
    // Every entry in turn, the directory asked for first; cut on failure.
    let each_entry = |entry: &mut dyn FnMut(&[u8], &Node) -> Result<()>| {
        let r = (|| {
            if let Some(n) = &top {
                entry(&prefix, n)?;
            }
            walk(repo, &tree, &prefix, &mut |p, n| {
                entry(p, n)?;
                Ok(Next::Continue)
            })
        })();
        if r.is_err() {
            cut.set(true);
        }
        r
    };
    match opts.archive {
        ArchiveFormat::Tar => {
            let mut b = tar::Builder::new(out);
            let mut links = HashMap::new();
            each_entry(&mut |p, n| {
                tar_entry(&reader, &zeros, &mut b, p, n, &mut links, &mut summary)
            })?;
            b.into_inner().and_then(|w| w.flush()).map_err(from_io)?;
        }
        ArchiveFormat::Zip => {
            let mut z = zip::ZipWriter::new_stream(out);
            let mut seen = ZipSeen::default();
            each_entry(&mut |p, n| zip_entry(&reader, &mut z, p, n, &mut seen, &mut summary))?;
            z.finish()
                .map_err(from_zip)?
                .into_inner()
                .flush()
                .map_err(from_io)?;
        }
    }
    Ok(summary)
}

/// The archive's output, which takes in and drops whatever is written
/// once `cut` is set (the dump failed).
struct Cut<'a> {
    out: &'a mut dyn Write,
    cut: &'a std::cell::Cell<bool>,
}

impl Write for Cut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cut.get() {
            return Ok(buf.len());
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.cut.get() {
            return Ok(());
        }
        self.out.flush()
    }
}

/// Which content chunks are all zeros: a chunk's ID is compared with the
/// ID of that many zero bytes, so no chunk is read to find out.
struct Zeros<'r> {
    repo: &'r Repository,
    /// The ID of `len` zero bytes, by `len`.
    of_len: HashMap<u32, Id>,
    /// Chunks found to be zeros, with their length.
    found: HashMap<Id, u32>,
}

/// Chunks shorter than this are never taken for holes: a hole is at least
/// a filesystem block, and a tiny zero chunk is not worth an entry's map.
const MIN_HOLE: u32 = 4096;

impl<'r> Zeros<'r> {
    fn new(repo: &'r Repository) -> Zeros<'r> {
        Zeros {
            repo,
            of_len: HashMap::new(),
            found: HashMap::new(),
        }
    }

    /// Whether the content chunk `id` is all zeros (a missing one is not:
    /// reading it reports it).
    fn is_zero(&mut self, index: &crate::localindex::IndexReader, id: &Id) -> Result<bool> {
        if self.found.contains_key(id) {
            return Ok(true);
        }
        let len = match index.locate(id) {
            Ok(loc) => loc.blob.raw_length,
            Err(Error::Missing(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if len < MIN_HOLE {
            return Ok(false);
        }
        let key = self.repo.key();
        let zero = *self
            .of_len
            .entry(len)
            .or_insert_with(|| key.blob_id(&vec![0u8; len as usize]));
        if zero == *id {
            self.found.insert(*id, len);
            return Ok(true);
        }
        Ok(false)
    }
}

/// Streams a file's content blob by blob, and fails rather than write a
/// length other than the one the node records (an archive header has
/// already promised it).
struct ContentReader<'a> {
    reader: &'a BulkReader<'a>,
    ids: std::vec::IntoIter<Id>,
    buf: Vec<u8>,
    pos: usize,
    produced: u64,
    expected: u64,
    path: &'a [u8],
}

impl<'a> ContentReader<'a> {
    fn new(reader: &'a BulkReader<'a>, node: &'a Node, path: &'a [u8]) -> ContentReader<'a> {
        ContentReader::of(reader, node.content.clone(), node.size, path)
    }

    /// The chunks `ids`, `expected` bytes in all.
    fn of(
        reader: &'a BulkReader<'a>,
        ids: Vec<Id>,
        expected: u64,
        path: &'a [u8],
    ) -> ContentReader<'a> {
        ContentReader {
            reader,
            ids: ids.into_iter(),
            buf: Vec::new(),
            pos: 0,
            produced: 0,
            expected,
            path,
        }
    }

    fn wrong_length(&self) -> io::Error {
        io::Error::other(Error::corrupt(
            format!("file {}", String::from_utf8_lossy(self.path)),
            format!(
                "its content is longer or shorter than the {} bytes the snapshot records",
                self.expected
            ),
        ))
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.ids.next() else {
                if self.produced != self.expected {
                    return Err(self.wrong_length());
                }
                return Ok(0);
            };
            self.buf = self.reader.load_blob(&id).map_err(io::Error::other)?;
            self.pos = 0;
            self.produced += self.buf.len() as u64;
            if self.produced > self.expected {
                return Err(self.wrong_length());
            }
        }
        let n = dst.len().min(self.buf.len() - self.pos);
        dst[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An engine error that travelled through `io::Error` comes back as itself;
/// anything else is a failure to write the output.
fn from_io(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|r| r.is::<Error>()) {
        if let Some(inner) = e.into_inner()
            && let Ok(err) = inner.downcast::<Error>()
        {
            return *err;
        }
        unreachable!("checked above that the error holds an engine error");
    }
    Error::io("write", "<output>", e)
}

fn from_zip(e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(e) => from_io(e),
        e => Error::io("write zip", "<output>", io::Error::other(e.to_string())),
    }
}

/// A PAX time value: seconds with a fraction, possibly negative.
fn pax_time(t: Timestamp) -> String {
    let (neg, sec, nsec) = if t.sec < 0 && t.nsec > 0 {
        (true, -(t.sec + 1), 1_000_000_000 - t.nsec)
    } else {
        (t.sec < 0, t.sec.abs(), t.nsec)
    };
    let mut s = format!("{}{sec}", if neg { "-" } else { "" });
    if nsec > 0 {
        s.push_str(format!(".{nsec:09}").trim_end_matches('0'));
    }
    s
}

/// The PAX keyword of an extended attribute, as GNU tar writes and reads
/// it: the name's bytes as they are, with `%` and `=` (which would end the
/// keyword) written `%25` and `%3D`.
fn xattr_key(name: &[u8]) -> Vec<u8> {
    let mut key = b"SCHILY.xattr.".to_vec();
    for &b in name {
        match b {
            b'%' => key.extend_from_slice(b"%25"),
            b'=' => key.extend_from_slice(b"%3D"),
            _ => key.push(b),
        }
    }
    key
}

/// One PAX record: `LEN KEY=VALUE\n`, where LEN counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: impl AsRef<[u8]>, value: &[u8]) {
    let key = key.as_ref();
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len += 1;
    }
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Whether a file at `path` may go into a tar as a sparse entry: its path
/// travels in a PAX record then, which bsdtar cannot make a path of unless
/// it is UTF-8. Asked by the walk that plans the reads and by
/// [`tar_entry`], which must agree on which chunks are read.
fn may_be_sparse(path: &[u8]) -> bool {
    std::str::from_utf8(path).is_ok()
}

/// A file's data regions (offset, length) once its chunks of zeros are
/// left out, as a PAX sparse map lists them; `None` if its chunks do not
/// add up to its size (the content reader then says so).
fn sparse_map(reader: &BulkReader, zeros: &Zeros, n: &Node) -> Result<Option<Vec<(u64, u64)>>> {
    let mut regions: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    for id in &n.content {
        let len = match zeros.found.get(id) {
            Some(&len) => {
                at += u64::from(len);
                continue;
            }
            None => u64::from(reader.index().locate(id)?.blob.raw_length),
        };
        match regions.last_mut() {
            Some((off, l)) if *off + *l == at => *l += len,
            _ => regions.push((at, len)),
        }
        at += len;
    }
    if at != n.size {
        return Ok(None);
    }
    // A file that ends in a hole: a last region of no length at its end.
    if regions.last().is_none_or(|&(off, l)| off + l < n.size) {
        regions.push((n.size, 0));
    }
    Ok(Some(regions))
}

/// The PAX sparse 1.0 map that starts a sparse entry's data: the number
/// of regions, then each offset and length, one decimal per line, padded
/// with zeros to a 512-byte block.
fn sparse_map_block(regions: &[(u64, u64)]) -> Vec<u8> {
    let mut map = format!("{}\n", regions.len());
    for (off, len) in regions {
        map.push_str(&format!("{off}\n{len}\n"));
    }
    let mut map = map.into_bytes();
    map.resize(map.len().div_ceil(512) * 512, 0);
    map
}

/// The name a sparse entry's header carries (the real one is in the PAX
/// record `GNU.sparse.name`), as GNU tar makes it: `DIR/GNUSparseFile.0/NAME`;
/// cut to the 100 bytes of a POSIX header's name field, as only a reader
/// that cannot read sparse entries uses it.
fn sparse_header_name(name: &[u8]) -> Vec<u8> {
    let cut = name.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
    let (dir, base) = name.split_at(cut);
    let full = [dir, b"GNUSparseFile.0/", base].concat();
    if full.len() <= 100 {
        return full;
    }
    [b"GNUSparseFile.0/", &base[..base.len().min(84)]].concat()
}

/// Writes one node as a tar entry. `links` holds the archive path of
/// each hard link group's first member: later members become hard link
/// entries to it, as GNU tar writes them, so extracting gives one inode
/// again (restore and the mount link the same groups).
fn tar_entry(
    reader: &BulkReader,
    zeros: &Zeros,
    b: &mut tar::Builder<&mut dyn Write>,
    path: &[u8],
    n: &Node,
    links: &mut HashMap<LinkGroup, Vec<u8>>,
    summary: &mut DumpSummary,
) -> Result<()> {
    use tar::{EntryType, Header};
    let name = &path[1..];
    // GNU tar reads a PAX sparse map only under a POSIX header: under a GNU
    // one it looks for the old GNU sparse format, and extracts garbage.
    // (Only as the walk above planned it: a path that is not UTF-8 whole.)
    let maybe_sparse = n.kind == NodeKind::File
        && may_be_sparse(path)
        && n.content.iter().any(|id| zeros.found.contains_key(id));
    let mut h = if maybe_sparse {
        Header::new_ustar()
    } else {
        Header::new_gnu()
    };
    h.set_mode(n.mode & 0o7777);
    h.set_uid(u64::from(n.uid));
    h.set_gid(u64::from(n.gid));
    h.set_mtime(n.mtime.sec.max(0) as u64);
    h.set_size(0);
    // Names too long for the header are left out; the IDs are always there.
    let _ = h.set_username(&n.user);
    let _ = h.set_groupname(&n.group);
    // A socket is never written, so it cannot be a link's target.
    if n.links > 1 && !matches!(n.kind, NodeKind::Dir | NodeKind::Socket) {
        match links.entry(n.link_group()) {
            Entry::Occupied(first) => {
                h.set_entry_type(EntryType::Link);
                set_name(b, &mut h, name, Field::Name).map_err(from_io)?;
                set_name(b, &mut h, &first.get()[1..], Field::Link).map_err(from_io)?;
                h.set_cksum();
                b.append(&h, io::empty()).map_err(from_io)?;
                summary.entries += 1;
                summary.hard_links += 1;
                return Ok(());
            }
            Entry::Vacant(v) => {
                v.insert(path.to_vec());
            }
        }
    }

    let mut pax = Vec::new();
    if n.mtime.nsec != 0 || n.mtime.sec < 0 {
        pax_record(&mut pax, "mtime", pax_time(n.mtime).as_bytes());
    }
    for x in &n.xattrs {
        pax_record(&mut pax, xattr_key(&x.name), &x.value);
        // Also as text, which `tar --acls` (without --xattrs) and bsdtar read.
        let acl = match x.name.as_slice() {
            posix_acl::ACCESS => "SCHILY.acl.access",
            posix_acl::DEFAULT => "SCHILY.acl.default",
            _ => continue,
        };
        if let Some(text) = posix_acl::to_text(&x.value) {
            pax_record(&mut pax, acl, text.as_bytes());
        }
    }
    let kind = match n.kind {
        NodeKind::File => EntryType::Regular,
        NodeKind::Dir => EntryType::Directory,
        NodeKind::Symlink => EntryType::Symlink,
        NodeKind::Fifo => EntryType::Fifo,
        NodeKind::Chardev => EntryType::Char,
        NodeKind::Blockdev => EntryType::Block,
        // A socket cannot be archived or recreated; restore skips it too.
        NodeKind::Socket => return Ok(()),
    };
    h.set_entry_type(kind);
    // Holes left out: the map block, then the data regions (`stored`
    // bytes of them).
    let sparse = match maybe_sparse {
        true => sparse_map(reader, zeros, n)?.map(|regions| {
            let stored: u64 = regions.iter().map(|(_, l)| l).sum();
            (sparse_map_block(&regions), stored)
        }),
        false => None,
    };
    if n.kind == NodeKind::File {
        h.set_size(n.size);
    }
    if let Some((map, stored)) = &sparse {
        h.set_size(map.len() as u64 + stored);
        pax_record(&mut pax, "GNU.sparse.major", b"1");
        pax_record(&mut pax, "GNU.sparse.minor", b"0");
        pax_record(&mut pax, "GNU.sparse.name", name);
        pax_record(
            &mut pax,
            "GNU.sparse.realsize",
            n.size.to_string().as_bytes(),
        );
    }
    if !pax.is_empty() {
        let mut ph = Header::new_ustar();
        ph.set_entry_type(EntryType::XHeader);
        ph.set_path("PaxHeader").map_err(from_io)?;
        ph.set_mode(0o644);
        ph.set_size(pax.len() as u64);
        ph.set_cksum();
        b.append(&ph, pax.as_slice()).map_err(from_io)?;
    }
    match &sparse {
        Some(_) => set_name(b, &mut h, &sparse_header_name(name), Field::Name),
        None => set_name(b, &mut h, name, Field::Name),
    }
    .map_err(from_io)?;
    match n.kind {
        // Byte for byte, not normalised.
        NodeKind::Symlink => set_name(b, &mut h, &n.link_target, Field::Link).map_err(from_io)?,
        NodeKind::Chardev | NodeKind::Blockdev => {
            let dev = n.rdev as libc::dev_t;
            h.set_device_major(libc::major(dev) as u32)
                .map_err(from_io)?;
            h.set_device_minor(libc::minor(dev) as u32)
                .map_err(from_io)?;
        }
        _ => {}
    }
    h.set_cksum();
    let r = if let Some((map, stored)) = sparse {
        summary.bytes += n.size;
        summary.sparse_files += 1;
        let data: Vec<Id> = (n.content.iter())
            .filter(|id| !zeros.found.contains_key(id))
            .copied()
            .collect();
        b.append(
            &h,
            map.as_slice()
                .chain(ContentReader::of(reader, data, stored, path)),
        )
    } else if n.kind == NodeKind::File {
        summary.bytes += n.size;
        b.append(&h, ContentReader::new(reader, n, path))
    } else {
        b.append(&h, io::empty())
    };
    r.map_err(from_io)?;
    summary.entries += 1;
    Ok(())
}

/// Which name field of a tar header [`set_name`] fills.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    Name,
    Link,
}

/// Puts `name` in `h`'s name or link name field byte for byte, after a GNU
/// long-name entry holding all of it where the field is too short (as GNU
/// tar writes them). The tar crate's own way cuts the field at the first
/// byte that is not UTF-8, and refuses a name that starts with one.
fn set_name(
    b: &mut tar::Builder<&mut dyn Write>,
    h: &mut tar::Header,
    name: &[u8],
    field: Field,
) -> io::Result<()> {
    let old = h.as_old_mut();
    let dst: &mut [u8] = match field {
        Field::Name => &mut old.name,
        Field::Link => &mut old.linkname,
    };
    if name.len() > dst.len() {
        let mut l = tar::Header::new_gnu();
        l.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        l.set_mode(0o644);
        l.set_uid(0);
        l.set_gid(0);
        l.set_mtime(0);
        l.set_size(name.len() as u64 + 1);
        l.set_entry_type(match field {
            Field::Name => tar::EntryType::GNULongName,
            Field::Link => tar::EntryType::GNULongLink,
        });
        l.set_cksum();
        b.append(&l, name.chain(&[0u8][..]))?;
    }
    let n = name.len().min(dst.len());
    dst[..n].copy_from_slice(&name[..n]);
    Ok(())
}

/// A DOS date and time (local, 2-second steps, 1980..2107) for `t`;
/// `None` outside that range.
fn dos_time(t: Timestamp) -> Option<zip::DateTime> {
    use chrono::{Datelike, Timelike};
    chrono::DateTime::from_timestamp(t.sec, 0)
        .map(|d| d.with_timezone(&chrono::Local))
        .and_then(|d| {
            zip::DateTime::from_date_and_time(
                u16::try_from(d.year()).ok()?,
                d.month() as u8,
                d.day() as u8,
                d.hour() as u8,
                d.minute() as u8,
                d.second() as u8,
            )
            .ok()
        })
}

/// `name` with each byte that is not part of valid UTF-8 written as
/// `\xNN`. Two names that differ only in such bytes stay apart (replacing
/// them all with U+FFFD made them one, and the zip writer refused the
/// second mid-archive).
fn escape_name(name: &[u8]) -> String {
    crate::walk::escaped(name)
}

/// What a zip has taken so far.
#[derive(Default)]
struct ZipSeen {
    /// Hard link groups with a name in the archive.
    links: HashSet<LinkGroup>,
    /// Names containing `\x`, the only ones an escaped name can equal.
    escapable: HashSet<String>,
    /// Directories named otherwise than their path says (given a suffix,
    /// or below one that was), by their path: what lies below them is
    /// named below the new name.
    renamed_dirs: HashMap<Vec<u8>, String>,
}

fn zip_entry(
    reader: &BulkReader,
    z: &mut zip::ZipWriter<zip::write::StreamWriter<&mut dyn Write>>,
    path: &[u8],
    n: &Node,
    seen: &mut ZipSeen,
    summary: &mut DumpSummary,
) -> Result<()> {
    // zip has no hard links: each later name of a group is a copy, counted.
    if n.links > 1
        && matches!(n.kind, NodeKind::File | NodeKind::Symlink)
        && !seen.links.insert(n.link_group())
    {
        summary.hard_links += 1;
    }
    let raw = &path[1..];
    let text = |b: &[u8]| std::str::from_utf8(b).map_or_else(|_| escape_name(b), str::to_string);
    let whole = std::str::from_utf8(raw);
    if whole.is_err() {
        summary.escaped_names += 1;
    }
    // Below a directory given a suffix, the entry goes below the new name:
    // named by its own path, it went into the directory whose name took
    // the suffix's place.
    let below = raw
        .iter()
        .rposition(|&c| c == b'/')
        .and_then(|i| Some((i, seen.renamed_dirs.get(&raw[..i])?)));
    let mut name = match below {
        Some((i, dir)) => format!("{dir}/{}", text(&raw[i + 1..])),
        None => whole.map_or_else(|_| escape_name(raw), str::to_string),
    };
    let mut renamed = below.is_some();
    // An escaped name can equal a real one (`a\xe9` written as text); the
    // zip writer refused the second mid-archive, so it gets a suffix.
    if name.contains("\\x") {
        let base = name.clone();
        let mut k = 0;
        while !seen.escapable.insert(name.clone()) {
            k += 1;
            name = format!("{base}~{k}");
        }
        if k > 0 {
            summary.renamed += 1;
            renamed = true;
        }
    }
    if renamed && n.kind == NodeKind::Dir {
        seen.renamed_dirs.insert(raw.to_vec(), name.clone());
    }
    let dos = dos_time(n.mtime).unwrap_or_else(|| {
        summary.times_out_of_range += 1;
        zip::DateTime::default()
    });
    // Deflate makes what does not compress a little larger (up to about
    // 0.03 %): a file just under 4 GiB could need zip64 too, and the
    // writer failed on it mid-archive. A 1/256 margin is ample.
    let zip64 = n.size >= u64::from(u32::MAX) - u64::from(u32::MAX >> 8);
    let mut opts = zip::write::FullFileOptions::default()
        .unix_permissions(n.mode & 0o7777)
        .last_modified_time(dos)
        .large_file(zip64);
    // Extended timestamp (0x5455): flags = mtime present, then Unix seconds,
    // exact where DOS time is local and rounded to 2 seconds. Readers
    // prefer it to the DOS time, so a time it cannot hold (after 2038)
    // leaves it out rather than write a wrong one.
    if let Ok(mtime) = i32::try_from(n.mtime.sec) {
        let mut ut = vec![1u8];
        ut.extend_from_slice(&mtime.to_le_bytes());
        opts.add_extra_field(0x5455, ut, false).map_err(from_zip)?;
    }
    if n.mode & 0o7000 != 0 && matches!(n.kind, NodeKind::Dir | NodeKind::File) {
        summary.special_bits_dropped += 1;
    }
    match n.kind {
        // Named with its `/` here: the writer adds none to a name ending
        // in `\`, and unzip took such an entry for a file.
        NodeKind::Dir => z
            .add_directory(format!("{name}/"), opts)
            .map_err(from_zip)?,
        NodeKind::File => {
            z.start_file(name, opts).map_err(from_zip)?;
            summary.bytes +=
                io::copy(&mut ContentReader::new(reader, n, path), z).map_err(from_io)?;
        }
        NodeKind::Symlink => {
            let target = String::from_utf8_lossy(&n.link_target);
            if matches!(target, std::borrow::Cow::Owned(_)) {
                summary.lossy_link_targets += 1;
            }
            z.add_symlink(name, target, opts).map_err(from_zip)?
        }
        // zip has no FIFOs, devices or sockets.
        _ => {
            summary.left_out += 1;
            return Ok(());
        }
    }
    summary.entries += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_and_records() {
        let t = |sec, nsec| pax_time(Timestamp { sec, nsec });
        assert_eq!(t(5, 0), "5");
        assert_eq!(t(5, 500_000_000), "5.5");
        assert_eq!(t(-2, 500_000_000), "-1.5");
        assert_eq!(t(-2, 0), "-2");
        assert_eq!(t(1, 1), "1.000000001");
        let mut r = Vec::new();
        pax_record(&mut r, "mtime", b"1.5");
        assert_eq!(r, b"13 mtime=1.5\n");
        // The length's own digits push it over a power of ten.
        let mut r = Vec::new();
        pax_record(&mut r, "k", &[b'x'; 94]);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with(b"101 k="));
        assert_eq!(
            xattr_key(b"user.a=b%\xff"),
            b"SCHILY.xattr.user.a%3Db%25\xff"
        );
    }
}
