//! `cairn dump`

use std::io::IsTerminal;

use anyhow::Result;
use cairn_engine::dump::{ArchiveFormat, DumpOptions, dump};

use crate::common::Global;
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot ID, unique prefix or `latest`, optionally `:SUBFOLDER` (paths then start there)
    snapshot: String,
    /// A file (written as is) or directory (written as an archive); `/` for everything
    path: String,
    /// Archive format for directories: tar or zip
    #[arg(short, long, default_value = "tar")]
    archive: ArchiveFormat,
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open()?;
    // A shared lock keeps prune from deleting packs while they are read.
    let _lock = g.read_lock(&repo)?;
    let stdout = std::io::stdout();
    let opts = DumpOptions {
        snapshot: a.snapshot,
        path: a.path,
        archive: a.archive,
        output_is_terminal: stdout.is_terminal(),
    };
    // Standard output is line-buffered; archives hold newlines everywhere.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    dump(&repo, &opts, &mut out)?;
    Ok(exit::OK)
}
