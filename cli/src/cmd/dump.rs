//! `cairn dump`

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use anyhow::Result;
use cairn_engine::dump::{ArchiveFormat, DumpOptions, dump};

use crate::common::Global;
use crate::exit;
use crate::snapshot_arg::{Holding, SourceFilter, select_holding, snapshot_path, split_spec};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot ID, unique prefix or `latest`, optionally `:SUBFOLDER` (paths then start there);
    /// left out with --at
    snapshot: OsString,
    /// A file (written as is) or directory (written as an archive); `/` for everything
    path: Option<OsString>,
    /// Instead of a snapshot ID: the newest snapshot at or before this time
    /// that holds PATH
    #[arg(long, value_parser = crate::common::checked_time)]
    at: Option<String>,
    #[command(flatten)]
    source: SourceFilter,
    /// Archive format for directories: tar (keeps modes, owners, hard links, FIFOs, devices and
    /// xattrs) or zip (permission bits, times and symlinks; hard links become copies, FIFOs and
    /// devices are left out). tar holds the holes of sparse files as PAX sparse entries (as `tar
    /// --sparse` writes; GNU tar, bsdtar and Python make the holes again; see --no-sparse); zip
    /// holds them as zeros
    #[arg(short, long, default_value = "tar")]
    archive: ArchiveFormat,
    /// Write sparse files into a tar whole, their holes as zeros: for tar
    /// readers without PAX sparse entries (busybox tar, which extracts them
    /// wrong) and for swap files (`swapon` refuses a file with holes)
    #[arg(long)]
    no_sparse: bool,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    // With --at the only positional is the path, or `:SUBFOLDER` and the
    // path, as `restore --at T :/sub` takes it.
    let (spec, path) = match (a.at.is_some(), a.path) {
        (true, None) => (None, a.snapshot),
        (true, Some(p)) if a.snapshot.as_bytes().starts_with(b":") => (Some(a.snapshot), p),
        (false, Some(p)) => (Some(a.snapshot), p),
        (true, Some(_)) => {
            return Err(exit::usage("give either a snapshot or --at, not both"));
        }
        (false, None) => {
            return Err(exit::usage(
                "give a snapshot and a PATH (or --at TIME and a PATH)",
            ));
        }
    };
    // The command line is checked before the password is asked for.
    let repo = g.open()?;
    // A shared lock keeps prune from deleting packs while they are read.
    let lock = g.read_lock(&repo)?;
    // An explicit ID (or ID:SUBFOLDER) is taken as is; `latest` and --at
    // pick the newest snapshot of the source (`latest:SUBFOLDER` too),
    // which with --at is also implied by SUBFOLDER or PATH.
    let (base, sub) = match spec.as_deref() {
        Some(s) => split_spec(s)?,
        None => (None, None),
    };
    let snapshot = match base {
        Some(b) if b != "latest" => spec.as_deref().expect("given").as_bytes().to_vec(),
        _ => {
            // Below a subfolder, PATH is relative to it: the snapshot must
            // hold both (the newest that held the subfolder alone could
            // be one of a source beside PATH, and the dump failed).
            let full = match sub {
                Some(sub) => [sub, b"/", path.as_bytes()].concat(),
                None => path.as_bytes().to_vec(),
            };
            let held = snapshot_path(&full);
            let holding = Holding {
                all: if held == "/" { vec![] } else { vec![held] },
                any: Vec::new(),
            };
            let (id, _) = select_holding(&repo, base, a.at.as_deref(), &a.source, &holding)?;
            match sub {
                Some(sub) => [id.to_hex().as_bytes(), b":", sub].concat(),
                None => id.to_hex().into_bytes(),
            }
        }
    };
    let stdout = std::io::stdout();
    let opts = DumpOptions {
        snapshot,
        path: path.into_vec(),
        archive: a.archive,
        output_is_terminal: stdout.is_terminal(),
        no_sparse: a.no_sparse,
    };
    // Standard output is line-buffered; archives hold newlines everywhere.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let summary = dump(&repo, &opts, &mut out)
        .map_err(|e| crate::common::unless_lock_lost(lock.as_ref(), e, "dump"))?;
    // What a zip cannot hold, said (a tar archive keeps all of it).
    let zip_copies = match opts.archive {
        ArchiveFormat::Zip => summary.hard_links,
        ArchiveFormat::Tar => 0,
    };
    for (n, what) in [
        (
            summary.escaped_names,
            "entry path(s) are not UTF-8; in the zip their other bytes are written as \\xNN",
        ),
        (
            summary.renamed,
            "entry path(s) equalled another's once escaped; written in the zip with a ~N suffix",
        ),
        (
            summary.left_out,
            "FIFO(s), device(s) or socket(s) left out of the zip, which cannot hold them",
        ),
        (
            summary.special_bits_dropped,
            "entries lost their setuid, setgid or sticky bit in the zip",
        ),
        (
            summary.lossy_link_targets,
            "symbolic link target(s) are not UTF-8; written in the zip with U+FFFD",
        ),
        (
            zip_copies,
            "hard-linked name(s) hold copies in the zip, which has no hard links",
        ),
        (
            summary.times_out_of_range,
            "modification time(s) are outside the 1980-2107 a zip's DOS time holds; written as \
             1980-01-01 (with the exact time in the extended timestamp for 1901-2038, which \
             not every unzip reads: Info-ZIP's unzip 6.0 ignores times before 1970)",
        ),
    ] {
        if n > 0 {
            crate::warn!("warning: {n} {what} (a tar archive keeps them exactly)");
        }
    }
    Ok(exit::OK)
}
