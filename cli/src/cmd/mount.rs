//! `cairn mount`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use cairn_engine::Error;
use cairn_engine::mount::{MountEvents, MountOptions, serve};

use crate::common::{Global, bytes, parse_size, print_json};
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Empty directory to mount the snapshots on
    mountpoint: PathBuf,
    /// Memory for decrypted file chunks (K, M, G suffixes)
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    cache_size: u64,
    /// Let other users see the mount (the kernel then checks stored modes and owners)
    #[arg(long)]
    allow_other: bool,
    /// Do not hold a shared lock while mounted (prune may then remove data being shown)
    #[arg(long)]
    no_lock: bool,
}

/// The smallest chunk cache: two of the largest chunks of the default
/// chunker (4 MiB each), more if the repository's are larger.
const MIN_CACHE: u64 = 8 << 20;

struct Events {
    quiet: bool,
}

impl MountEvents for Events {
    fn mounted(&self, mountpoint: &Path, snapshots: usize) {
        if !self.quiet {
            crate::warn!(
                "mounted {snapshots} snapshots at {m}; Ctrl-C (or `fusermount3 -u {m}`) unmounts",
                m = mountpoint.display()
            );
        }
    }

    fn error(&self, what: &str, err: &Error) {
        crate::warn!("cairn: error: {what}: {err}");
    }
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let mut repo = g.open()?;
    // The first signal unmounts; a second one, while unmounting hangs,
    // exits at once.
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let stop = exit::stop_flag(&[SIGINT, SIGTERM, SIGHUP])?;
    repo.set_lock_wait(g.lock_wait_until(&stop));
    let opts = MountOptions {
        mountpoint: a.mountpoint,
        cache_bytes: a.cache_size,
        allow_other: a.allow_other,
        no_lock: a.no_lock,
        ..MountOptions::default()
    };
    let events = Arc::new(Events { quiet: g.quiet });
    let min_cache = MIN_CACHE.max(2 * u64::from(repo.config().chunker.max_size));
    if opts.cache_bytes < min_cache {
        // A chunk larger than the cache was never kept: every 128 KiB read
        // of it fetched and decrypted the whole chunk again.
        crate::warn!(
            "warning: --cache-size {} is less than two of the largest chunks; using {}",
            bytes(opts.cache_bytes),
            bytes(min_cache)
        );
    }
    let opts = MountOptions {
        cache_bytes: opts.cache_bytes.max(min_cache),
        ..opts
    };
    let summary = serve(repo, &opts, events, &stop)?;
    if g.json {
        print_json(&summary)?;
    } else if !g.quiet {
        crate::warn!(
            "unmounted {}{}: {} files opened, {} read, {} chunks loaded",
            summary.mountpoint.display(),
            if summary.lazy_unmount {
                " (lazily: it was still in use)"
            } else {
                ""
            },
            summary.files_opened,
            bytes(summary.bytes_read),
            summary.blobs_loaded
        );
    }
    Ok(exit::OK)
}
