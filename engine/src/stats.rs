//! `stats`: sizes and counts over snapshots, in restic's four modes.
//!
//! - `restore-size` (default): what a restore would write. Every entry is
//!   counted in `total_file_count` (directories and symlinks too, as restic
//!   counts), and the bytes of regular files make `total_size` (a symbolic
//!   link's target length is not written as file bytes: restic counts 0,
//!   as `snapshots` does); a hard-linked file counts once per snapshot.
//! - `files-by-contents`: regular files counted once per distinct content.
//! - `blobs-per-file`: for each file path, the distinct data blobs it ever
//!   referenced, by plaintext size.
//! - `raw-data`: the distinct blobs (data and trees) the snapshots
//!   reference, as stored (`total_size`, after compression and encryption)
//!   and as plaintext (`total_uncompressed_size`), with the compression
//!   ratio and the deduplication ratio (file bytes a restore would write /
//!   plaintext of the distinct data blobs).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use serde::Serialize;

use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SnapshotFilter};
use crate::tree::{Node, NodeKind};
use crate::walk::{Next, walk};

/// How to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsMode {
    /// Sizes of the files a restore would write.
    #[default]
    RestoreSize,
    /// Files unique by content.
    FilesByContents,
    /// Distinct blobs per file path.
    BlobsPerFile,
    /// Distinct blobs as stored.
    RawData,
}

impl FromStr for StatsMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<StatsMode> {
        match s {
            "restore-size" => Ok(StatsMode::RestoreSize),
            "files-by-contents" => Ok(StatsMode::FilesByContents),
            "blobs-per-file" => Ok(StatsMode::BlobsPerFile),
            "raw-data" => Ok(StatsMode::RawData),
            _ => Err(Error::InvalidInput(format!(
                "unknown mode {s:?}: use restore-size, files-by-contents, blobs-per-file or raw-data"
            ))),
        }
    }
}

/// What to count over.
#[derive(Debug, Clone, Default)]
pub struct StatsOptions {
    /// Counting mode.
    pub mode: StatsMode,
    /// Snapshots (IDs, unique prefixes or `latest`); empty: all.
    pub snapshots: Vec<String>,
    /// Which snapshots count when `snapshots` is empty, and what `latest`
    /// picks from.
    pub filter: SnapshotFilter,
}

/// The result (restic's field names; fields a mode does not produce are
/// left out of the JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// The mode counted in.
    pub mode: StatsMode,
    /// Snapshots walked.
    pub snapshots_count: u64,
    /// restore-size, files-by-contents, blobs-per-file: bytes counted;
    /// raw-data: bytes stored in packs for the distinct blobs.
    pub total_size: u64,
    /// Entries (restore-size) or files (other modes) counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_file_count: Option<u64>,
    /// Distinct blobs (raw-data) or distinct blob references (blobs-per-file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_blob_count: Option<u64>,
    /// raw-data: plaintext bytes of the distinct blobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_uncompressed_size: Option<u64>,
    /// raw-data: plaintext / stored size of the blobs stored compressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_ratio: Option<f64>,
    /// raw-data: percent of plaintext saved by compression, all blobs
    /// (encryption overhead included, so it can dip below zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_space_saving: Option<f64>,
    /// raw-data: what a restore of all counted snapshots would write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<u64>,
    /// raw-data: bytes of regular files in `restore_size` / plaintext of
    /// the distinct data blobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplication_ratio: Option<f64>,
}

/// Counts restore sizes, hard links once per snapshot (per [`Node::link_group`]).
#[derive(Default)]
struct RestoreSize {
    /// Bytes of regular files.
    size: u64,
    entries: u64,
    links_seen: HashSet<crate::tree::LinkGroup>,
}

impl RestoreSize {
    fn add(&mut self, n: &Node) {
        self.entries += 1;
        if n.kind != NodeKind::File {
            return;
        }
        let hardlink = n.links > 1 && n.inode != 0;
        if !hardlink || self.links_seen.insert(n.link_group()) {
            self.size += n.size;
        }
    }
}

/// Computes statistics over the snapshots `opts` names.
pub fn stats(repo: &Repository, opts: &StatsOptions) -> Result<Stats> {
    let snapshots: Vec<(Id, Snapshot)> = repo.select_snapshots(&opts.snapshots, &opts.filter)?;
    let mut st = Stats {
        mode: opts.mode,
        snapshots_count: snapshots.len() as u64,
        ..Stats::default()
    };
    let reader = repo.index_reader()?;
    let blob_size = |id: &Id| -> Result<u64> { Ok(u64::from(reader.locate(id)?.blob.raw_length)) };

    let mut restore = RestoreSize::default();
    let mut contents: HashSet<Vec<Id>> = HashSet::new();
    let mut per_path: HashMap<Vec<u8>, HashSet<Id>> = HashMap::new();
    // Distinct blobs, and whether any use is as a file's content: one
    // stored blob may be both (a file holding a tree's bytes has its ID).
    let mut blobs: HashMap<Id, bool> = HashMap::new();
    let (mut count, mut size, mut refs) = (0u64, 0u64, 0u64);
    for (_, snap) in &snapshots {
        let mut snap_restore = RestoreSize::default();
        if opts.mode == StatsMode::RawData {
            blobs.entry(snap.tree).or_default();
        }
        walk(repo, &snap.tree, b"", &mut |path, n| {
            match opts.mode {
                StatsMode::RestoreSize | StatsMode::RawData => snap_restore.add(n),
                StatsMode::FilesByContents => {
                    if n.kind == NodeKind::File && contents.insert(n.content.clone()) {
                        count += 1;
                        size += n.size;
                    }
                }
                StatsMode::BlobsPerFile => {
                    if n.kind == NodeKind::File && !n.content.is_empty() {
                        let seen = per_path.entry(path.to_vec()).or_default();
                        for id in &n.content {
                            if seen.insert(*id) {
                                refs += 1;
                                size += blob_size(id)?;
                            }
                        }
                    }
                }
            }
            if opts.mode == StatsMode::RawData {
                match n.kind {
                    NodeKind::File => blobs.extend(n.content.iter().map(|id| (*id, true))),
                    NodeKind::Dir => {
                        if let Some(id) = n.subtree {
                            blobs.entry(id).or_default();
                        }
                    }
                    _ => {}
                }
            }
            Ok(Next::Continue)
        })?;
        restore.size += snap_restore.size;
        restore.entries += snap_restore.entries;
    }

    match opts.mode {
        StatsMode::RestoreSize => {
            st.total_size = restore.size;
            st.total_file_count = Some(restore.entries);
        }
        StatsMode::FilesByContents => {
            st.total_size = size;
            st.total_file_count = Some(count);
        }
        StatsMode::BlobsPerFile => {
            st.total_size = size;
            st.total_file_count = Some(per_path.len() as u64);
            st.total_blob_count = Some(refs);
        }
        StatsMode::RawData => {
            let (mut stored, mut raw, mut data_raw) = (0u64, 0u64, 0u64);
            let (mut z_stored, mut z_raw) = (0u64, 0u64);
            // A group frame's bytes count once, however many members it has.
            let mut frames = std::collections::HashSet::new();
            for (id, is_data) in &blobs {
                let loc = reader.locate(id)?;
                let raw_len = u64::from(loc.blob.raw_length);
                let len = if !loc.blob.in_group() || frames.insert((loc.pack, loc.blob.offset)) {
                    u64::from(loc.blob.length)
                } else {
                    0
                };
                stored += len;
                raw += raw_len;
                if *is_data {
                    data_raw += raw_len;
                }
                if loc.blob.compression != Compression::None {
                    z_stored += len;
                    z_raw += raw_len;
                }
            }
            let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
            st.total_size = stored;
            st.total_blob_count = Some(blobs.len() as u64);
            st.total_uncompressed_size = Some(raw);
            st.compression_ratio = ratio(z_raw, z_stored);
            st.compression_space_saving =
                ratio(stored, raw).map(|r| ((1.0 - r) * 10_000.0).round() / 100.0);
            st.restore_size = Some(restore.size);
            st.deduplication_ratio = ratio(restore.size, data_raw);
        }
    }
    Ok(st)
}
