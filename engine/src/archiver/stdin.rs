//! A backup of one stream (standard input or a command's output) stored as
//! a single file, at the snapshot's root or in directories of its own.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use chrono::Local;

use super::Ctx;
use super::content::store_content;
use crate::blob::BlobType;
use crate::capture::pgdump;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::tree::{Node, NodeKind, Timestamp, Tree};

/// A backup of one stream: standard input or a command's output.
#[derive(Debug, Clone, Default)]
pub struct StdinSource {
    /// The file name the stream is stored under: at the snapshot's root,
    /// or a relative path (`db/app.sql`) whose directories the snapshot
    /// then holds (see [`stream_path`]).
    pub filename: String,
    /// Run this command (program and arguments) and store its standard
    /// output; the snapshot is written only if it exits 0. `None` reads
    /// this process's standard input.
    pub command: Option<Vec<String>>,
    /// Variables added to the command's environment (a password that must
    /// not show in its arguments).
    pub env: Vec<(String, String)>,
    /// How messages name the command, if not by its program and arguments
    /// (which may hold a password).
    pub label: Option<String>,
    /// Accept an empty stream.
    pub allow_empty: bool,
    /// The stream is a plain `pg_dump`: count the rows of its COPY sections
    /// into the `databases` record whose path is this stream's file.
    pub count_copy_rows: bool,
}

/// The components of a stream's file name (`/db//app.sql` is `db`,
/// `app.sql`): at least one, none of them `.` or `..`, as restic takes
/// `--stdin-filename`.
pub fn stream_path(filename: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = filename.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(Error::InvalidInput(format!(
            "--stdin-filename {filename:?} must be a file name or a relative path without `.` or `..`"
        )));
    }
    Ok(parts)
}

/// The root tree of a stream backup: one file holding the stream, inside
/// the directories its name gives.
pub(super) fn stdin_tree(ctx: &Ctx, src: &StdinSource) -> Result<Tree> {
    let parts = stream_path(&src.filename)?;
    let (name, dirs) = parts.split_last().expect("at least one part");
    let label = Path::new(&src.filename);
    let mut counted = BTreeMap::new();
    let mut store = |r: &mut dyn Read| -> Result<(Vec<Id>, u64)> {
        if !src.count_copy_rows {
            return store_content(ctx, label, r, None);
        }
        let mut counter = pgdump::CopyCounter::new(r);
        let stored = store_content(ctx, label, &mut counter, None);
        counted = counter.tables().clone();
        stored
    };
    // A stop asked for while the stream is idle (a producer that has not
    // written yet, or pauses) waited for its next byte or its end, and
    // then said the stream was empty: it is a stop.
    let stopped = |e: Error| {
        if ctx.progress.cancelled() {
            Error::Interrupted
        } else {
            e
        }
    };
    let (content, size) = match &src.command {
        None => {
            let mut r = Stoppable::new(std::io::stdin().lock(), ctx);
            store(&mut r).map_err(stopped)?
        }
        Some(cmd) => {
            let (prog, args) = cmd.split_first().ok_or_else(|| {
                Error::InvalidInput("--stdin-from-command needs a command after `--`".into())
            })?;
            let mut child = crate::child::dies_with_us(&mut std::process::Command::new(prog))
                .args(args)
                .envs(src.env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| Error::InvalidInput(format!("cannot run {prog:?}: {e}")))?;
            let mut out = Stoppable::new(child.stdout.take().expect("piped stdout"), ctx);
            let stored = match store(&mut out).map_err(stopped) {
                Ok(stored) => stored,
                Err(e) => {
                    // Storing stopped before the end of the stream: a
                    // command still writing would block on the full pipe
                    // forever, so stop it; the storing's error is the one
                    // to report.
                    drop(out);
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            };
            let status = child.wait().map_err(|e| Error::io("wait for", prog, e))?;
            if !status.success() {
                // A failed capture never becomes a snapshot.
                return Err(Error::CommandFailed(format!(
                    "{} exited with {status}; no snapshot was written",
                    src.label.clone().unwrap_or_else(|| cmd.join(" "))
                )));
            }
            stored
        }
    };
    if size == 0 && !src.allow_empty {
        return Err(Error::InvalidInput(
            "the stream was empty; no snapshot was written (use --allow-empty to store an empty stream)".into(),
        ));
    }
    let path = format!("/{}", parts.join("/"));
    if src.count_copy_rows {
        let mut dbs = ctx.databases.lock().expect("databases");
        if let Some(db) = dbs.iter_mut().find(|d| d.path == path) {
            db.tables = counted;
        }
    }
    ctx.count_stored_file(Path::new(&path), size, false);
    let now = Local::now();
    let ts = Timestamp {
        sec: now.timestamp(),
        nsec: now.timestamp_subsec_nanos(),
    };
    // The stream has no metadata of its own: it is this process's, now.
    let made = |name: &[u8], kind, mode| {
        let mut node = Node::new(name.to_vec(), kind);
        node.mode = mode;
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        node.uid = uid;
        node.gid = gid;
        node.user = ctx.owners.user_name(uid);
        node.group = ctx.owners.group_name(gid);
        node.mtime = ts;
        node.atime = ts;
        node.ctime = ts;
        node
    };
    // Owner-only: a stream is most often a database dump, and nothing says
    // who else may read it (restored or dumped, it stays private).
    let mut node = made(name.as_bytes(), NodeKind::File, 0o600);
    node.size = size;
    node.links = 1;
    node.content = content;
    let mut tree = Tree { nodes: vec![node] };
    for dir in dirs.iter().rev() {
        let mut node = made(dir.as_bytes(), NodeKind::Dir, 0o755);
        node.subtree = Some(ctx.saver.save(BlobType::Tree, &tree.encode())?.0);
        ctx.counters.dirs.fetch_add(1, Ordering::Relaxed);
        tree = Tree { nodes: vec![node] };
    }
    Ok(tree)
}

/// A stream read in short waits for data, so that a stop asked for while
/// it is idle ends the read instead of waiting for the next byte.
struct Stoppable<'a, R> {
    inner: R,
    progress: &'a dyn super::BackupProgress,
}

impl<'a, R: Read + AsRawFd> Stoppable<'a, R> {
    fn new(inner: R, ctx: &Ctx<'a, '_>) -> Self {
        Stoppable {
            inner,
            progress: ctx.progress,
        }
    }
}

impl<R: Read + AsRawFd> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.progress.cancelled() {
                // Not `Interrupted`: readers retry that.
                return Err(std::io::Error::other("stopped by a signal"));
            }
            let mut pfd = libc::pollfd {
                fd: self.inner.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, 200) };
            // Readable, at its end, or poll failing for another reason than
            // a signal: the read itself says what there is.
            if ready > 0
                || (ready < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
            {
                return self.inner.read(buf);
            }
        }
    }
}
