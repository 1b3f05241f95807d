//! A file's content into the repository: read, cut into chunks (content
//! defined, or fixed for captured databases), and handed to the saver in
//! parallel batches.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;

use super::{Ctx, open_entry};
use crate::blob::BlobType;
use crate::chunker::{ChunkWindow, FixedCuts};
use crate::error::{Error, Result};
use crate::fsmeta::node_from_metadata;
use crate::id::Id;
use crate::tree::Node;

/// How far past its size at stat time a file is read (see `store_file`).
const GROWTH_ALLOWANCE: u64 = 16 << 20;

/// Chunks processed in parallel per file before the next are read.
const CHUNK_BATCH: usize = 4;

/// Stores `f` cut into fixed `chunk`-byte pieces (the last may be
/// shorter), for files that change in place at fixed offsets: a captured
/// database, whose pages stay where they are.
pub(super) fn store_fixed<R: Read>(
    ctx: &Ctx,
    path: &Path,
    f: R,
    chunk: usize,
) -> Result<(Vec<Id>, u64)> {
    // Enough chunks per batch to keep the workers busy with 4 KiB pieces.
    const PER_BATCH: usize = 256;
    let mut ids = Vec::new();
    let mut size = 0u64;
    let mut cuts = FixedCuts::new(f, chunk);
    loop {
        let batch = cuts
            .by_ref()
            .take(PER_BATCH)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("read", path, e))?;
        if batch.is_empty() {
            break;
        }
        let n: u64 = batch.iter().map(|c| c.len() as u64).sum();
        size += n;
        ctx.count_read(n);
        let saved: Vec<Id> = batch
            .par_iter()
            .map(|c| ctx.saver.save(BlobType::Data, c).map(|(id, _)| id))
            .collect::<Result<_>>()?;
        ids.extend(saved);
    }
    Ok((ids, size))
}

/// Reads, chunks and stores a file's content into `node`. A file that
/// changes while it is read is read once more; if it changes again it is
/// stored as read, flagged, and the recorded size is the size read. The
/// file is opened inside `dir` when it is given (see [`open_entry`]).
pub(super) fn store_file(
    ctx: &Ctx,
    path: &Path,
    io: &Path,
    dir: Option<&File>,
    node: &mut Node,
) -> Result<()> {
    for attempt in 0..2 {
        let at = dir.map(|d| (d, node.name.as_slice()));
        let f = open_entry(io, at, false).map_err(|e| Error::io("open", path, e))?;
        adopt_opened(ctx, path, &f, node)?;
        // Read no further than a bounded distance past the size seen at stat
        // time: a file that grows faster than it can be read must not keep
        // the backup reading forever (the change is detected below).
        let limit = node.size.saturating_add(GROWTH_ALLOWANCE);
        let (content, size) = store_content(ctx, path, (&f).take(limit), Some(node.size))?;
        let after = f.metadata().map_err(|e| Error::io("stat", path, e))?;
        let after = node_from_metadata(node.name.clone(), &after);
        // Pseudo files report a size that is not what they hold: 0 in
        // /proc, 4096 in /sys, whatever a read gives; their stat does not
        // move. Elsewhere a read shorter than the size is a file rewritten
        // meanwhile, whose times may not move (coarse timestamps): only on
        // a pseudo file system is it what the file holds. (Bytes read
        // against the size alone flagged every /sys file as changed.)
        let same_stat =
            after.size == node.size && after.mtime == node.mtime && after.ctime == node.ctime;
        let pseudo = (node.size == 0 && after.size == 0)
            || (size < after.size && crate::fsmeta::on_pseudo_fs(&f));
        let stable = same_stat && (size == after.size || pseudo);
        if stable && after.size == 0 && size == limit {
            ctx.warn(
                path,
                format!(
                    "a file that reports no size (a /proc file) is stored as its first {} MiB only",
                    limit >> 20
                ),
                false,
            );
        }
        if stable || attempt == 1 {
            if !stable {
                node.warnings.push("changed-while-reading".into());
                // A database written meanwhile may be stored torn: an
                // error, where another file is as good as the moment read.
                let db = ctx.sqlite_aware && crate::capture::sqlite::is_sqlite(io);
                let msg = if db {
                    "SQLite database changed while it was read: stored as read, possibly \
                     torn (name it with --sqlite to capture it consistently)"
                } else {
                    "file changed while it was read; stored as read"
                };
                if db {
                    ctx.leave_out(path, msg.into());
                } else {
                    ctx.warn(path, msg.into(), false);
                }
            }
            node.content = content;
            node.size = size;
            // A file still changing keeps the times it had when opened
            // (stable, they are the times after): with the later ones, the
            // next backup found it unchanged and kept the torn content for
            // as long as the file stayed as it was.
            return Ok(());
        }
        // The second read takes all of its metadata, xattrs too, from the
        // file as opened again (`adopt_opened` sees the new change time).
    }
    unreachable!("the loop returns on its second pass")
}

/// Makes `node`, built from the entry's `lstat` when its directory was
/// listed, describe the file `f` that was opened. An entry changed or
/// replaced since (renamed over, as editors and `install` do) is recorded
/// with the mode, owner, times and xattrs of what is read, never the old
/// file's metadata with the new content; one that is no longer a regular
/// file (a FIFO would block the read) is not read at all.
fn adopt_opened(ctx: &Ctx, path: &Path, f: &File, node: &mut Node) -> Result<()> {
    let m = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !m.is_file() {
        return Err(Error::io(
            "open",
            path,
            std::io::Error::other("no longer a regular file (replaced while the backup ran)"),
        ));
    }
    let mut fresh = node_from_metadata(node.name.clone(), &m);
    // The change time moves with every change of content, mode, owner or
    // xattrs, but an inode number freed by the rename can be handed to the
    // replacement within the same clock tick: compare what is recorded too.
    let meta = |n: &Node| (n.device, n.mode, n.uid, n.gid);
    if crate::fsmeta::unchanged(node, &fresh) && meta(&fresh) == meta(node) {
        return Ok(());
    }
    let replaced = (fresh.inode, fresh.device) != (node.inode, node.device);
    fresh.user = ctx.owners.user_name(fresh.uid);
    fresh.group = ctx.owners.group_name(fresh.gid);
    match crate::fsmeta::read_xattrs_of(f) {
        Ok(x) => fresh.xattrs = x,
        Err(e) => ctx.warn(path, format!("cannot read extended attributes: {e}"), true),
    }
    *node = fresh;
    if replaced {
        ctx.warn(
            path,
            "replaced while the backup ran; stored as it is now".into(),
            false,
        );
    }
    Ok(())
}

/// Reads up to `limit` bytes. With the file's size known, a buffer of that
/// size plus one takes the whole of a small file in one `read` and sees
/// the end in a second (`read_to_end` starts with a 32-byte probe and
/// reads at most 8 KiB at first, doubling: about nine calls per file).
fn read_head(f: &mut impl Read, limit: u64, size_hint: Option<u64>) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    if let Some(size) = size_hint {
        head.resize(size.saturating_add(1).min(limit) as usize, 0);
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let full = n == head.len();
        head.truncate(n);
        if !full {
            return Ok(head);
        }
        // The file grew since stat (or is exactly the limit): read on.
    }
    let left = limit - head.len() as u64;
    f.take(left).read_to_end(&mut head)?;
    Ok(head)
}

/// Stores the content read from `f`; `size_hint` is the size `stat` gave,
/// if `f` is a file.
pub(super) fn store_content<R: Read>(
    ctx: &Ctx,
    path: &Path,
    mut f: R,
    size_hint: Option<u64>,
) -> Result<(Vec<Id>, u64)> {
    let cfg = ctx.repo.config();
    // Most files are smaller than the minimum chunk and are always exactly
    // one chunk: read them whole instead of setting up a chunker (whose
    // buffer of max_size bytes costs more than reading a small file).
    let min = cfg.chunker.min_size as u64;
    let head = read_head(&mut f, min + 1, size_hint).map_err(|e| Error::io("read", path, e))?;
    if head.len() as u64 <= min {
        let n = head.len() as u64;
        ctx.count_read(n);
        if head.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let (id, _) = ctx.saver.save(BlobType::Data, &head)?;
        return Ok((vec![id], n));
    }
    let _permit = ctx.chunking.acquire();
    let reader = std::io::Cursor::new(head).chain(f);
    let mut window = ChunkWindow::new(reader, &cfg.chunker, ctx.repo.key().chunker_seed());
    store_chunks(ctx, path, &mut window)
}

/// Stores the chunks `window` cuts, a batch at a time in parallel.
fn store_chunks<R: Read>(
    ctx: &Ctx,
    path: &Path,
    window: &mut ChunkWindow<R>,
) -> Result<(Vec<Id>, u64)> {
    let mut ids = Vec::new();
    let mut size = 0u64;
    let mut batch = Vec::with_capacity(CHUNK_BATCH);
    loop {
        // A big file or a stream (`--stdin-from-command`) is not one step.
        ctx.check_cancelled()?;
        window
            .next_batch(CHUNK_BATCH, &mut batch)
            .map_err(|e| Error::io("read", path, e))?;
        if batch.is_empty() {
            break;
        }
        let data = window.data();
        let n: u64 = batch.iter().map(|r| r.len() as u64).sum();
        size += n;
        ctx.count_read(n);
        let save_all = || {
            batch
                .par_iter()
                .map(|r| {
                    ctx.saver
                        .save(BlobType::Data, &data[r.clone()])
                        .map(|(id, _)| id)
                })
                .collect::<Result<Vec<Id>>>()
        };
        // On rayon's global pool, waited for by a plain thread: were the
        // batch split among the backup's threads, one of them could take a
        // part of it and then, while waiting, another file's job, which
        // waits for the chunking permit this file holds (a deadlock seen
        // under load). The global pool's threads never wait for permits.
        let saved = std::thread::scope(|s| {
            s.spawn(save_all)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        ids.extend(saved);
    }
    Ok((ids, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that counts its calls and hands out at most `step` bytes each.
    struct Counted<'a> {
        data: &'a [u8],
        calls: usize,
        step: usize,
    }

    impl Read for Counted<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            let n = self.data.len().min(out.len()).min(self.step);
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn head(data: &[u8], limit: u64, hint: Option<u64>, step: usize) -> (Vec<u8>, usize) {
        let mut r = Counted {
            data,
            calls: 0,
            step,
        };
        let h = read_head(&mut r, limit, hint).unwrap();
        (h, r.calls)
    }

    #[test]
    fn read_head_takes_a_known_size_in_two_calls_and_never_loses_growth() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        // As stat said: the whole file in one read, the end in a second.
        assert_eq!(
            head(&data, 500_000, Some(100_000), usize::MAX),
            (data.clone(), 2)
        );
        assert_eq!(head(&[], 500_000, Some(0), usize::MAX), (Vec::new(), 1));
        // Short reads are retried.
        assert_eq!(head(&data, 500_000, Some(100_000), 7000).0, data);
        // Grown since stat: all of it still comes in, up to the limit.
        assert_eq!(head(&data, 500_000, Some(10), usize::MAX).0, data);
        assert_eq!(head(&data, 50_001, Some(10), usize::MAX).0, data[..50_001]);
        // Shrunk since stat, larger than the limit, or no size known.
        assert_eq!(
            head(&data[..5], 500_000, Some(100_000), usize::MAX).0,
            data[..5]
        );
        assert_eq!(head(&data, 1000, Some(100_000), usize::MAX).0, data[..1000]);
        assert_eq!(head(&data, 500_000, None, 7000).0, data);
    }
}
