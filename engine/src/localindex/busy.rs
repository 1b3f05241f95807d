//! Waiting, for a bounded time, on another process that holds the local
//! index database's write lock.
//!
//! Processes sharing a cache take redb's write lock in turn. One stopped
//! while holding it (a backup suspended with Ctrl-Z, or by SIGSTOP) would
//! make every other command block for as long, silently: so a command waits
//! at most [`wait`] for it, then goes on without the cache (when opening) or
//! fails saying why (later; the writes after that fail at once).
//!
//! redb also takes a header lock, without a time limit, around the fsync of
//! an open and of a close: a process stopped there still holds the others
//! up. That window is a few milliseconds; the write lock's is seconds.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redb::{Database, TransactionError, WriteTransaction};

use super::{CACHE_INDEX, db_err};
use crate::error::{Error, Result};

/// Environment variable overriding [`wait`] in seconds (for tests).
pub const WAIT_ENV: &str = "CAIRN_TEST_CACHE_WAIT_SECS";

/// How long a command waits for another process's write lock on the cache
/// (60 s unless overridden by [`WAIT_ENV`]): longer than any one write a
/// live process makes (a merge into `blobs` took 2.8 s with 10 M blobs).
pub fn wait() -> Duration {
    crate::units::seconds_from_env(WAIT_ENV, Duration::from_secs(60))
}

/// The error for a lock held past `waited`.
pub fn held_too_long(waited: Duration) -> Error {
    Error::io(
        "wait for",
        CACHE_INDEX,
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "another process has held its write lock for {} s (a stopped cairn? \
                 resume it with `kill -CONT`, or end it)",
                waited.as_secs()
            ),
        ),
    )
}

/// Write transactions of one database, one at a time in this process (so
/// that a wait is only ever for another process).
pub struct WriteGate {
    turn: Mutex<()>,
    wait: Duration,
    /// A wait ran out: the holder is taken for stopped, and the writes
    /// that follow (most are best effort) fail without waiting again.
    gave_up: AtomicBool,
}

/// A write transaction, with this process's turn to write.
pub struct Writing<'a> {
    tx: WriteTransaction,
    _turn: MutexGuard<'a, ()>,
}

impl WriteGate {
    /// A gate whose waits for other processes last at most `wait`.
    pub fn new(wait: Duration) -> WriteGate {
        WriteGate {
            turn: Mutex::new(()),
            wait,
            gave_up: AtomicBool::new(false),
        }
    }

    /// How long this gate's waits for other processes last at most.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Begins a write transaction on `db`, waiting at most this gate's
    /// time for another process to finish its own.
    pub fn begin<'a>(&'a self, db: &Database) -> Result<Writing<'a>> {
        // A panic elsewhere left no transaction open: the turn is free.
        let turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let wait = if self.gave_up.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            self.wait
        };
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match db.try_begin_write() {
                Ok(tx) => return Ok(Writing { tx, _turn: turn }),
                Err(TransactionError::WouldBlock) if start.elapsed() < wait => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(TransactionError::WouldBlock) => {
                    self.gave_up.store(true, Ordering::Relaxed);
                    return Err(held_too_long(self.wait));
                }
                Err(e) => return Err(db_err(e)),
            }
        }
    }
}

impl Writing<'_> {
    /// Commits the transaction.
    pub fn commit(self) -> Result<()> {
        self.tx.commit().map_err(db_err)
    }
}

impl Deref for Writing<'_> {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        &self.tx
    }
}

/// Runs `open` (which may block on another process's write lock: redb
/// takes it to open a database for writing) in a thread, waiting at most
/// `wait` for it, or for as long as it takes once `open` sets `repairing`
/// (the lock is then its own, and a repair after a crash reads the whole
/// file). Past the wait the thread is left to finish on its own, and what
/// it opens is dropped.
pub fn within<T: Send + 'static>(
    wait: Duration,
    repairing: Arc<AtomicBool>,
    open: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("cairn-cache-open".into())
        .spawn(move || {
            let _ = tx.send(open());
        })
        .map_err(|e| Error::io("start a thread for", CACHE_INDEX, e))?;
    let got = match rx.recv_timeout(wait) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) if repairing.load(Ordering::SeqCst) => rx
            .recv()
            .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        got => got,
    };
    match got {
        Ok(v) => Ok(v),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(held_too_long(wait)),
        // It panicked: as if `open` had, on this thread.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
    }
}
