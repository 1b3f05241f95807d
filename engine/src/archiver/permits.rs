//! A limit on how many large files are chunked at once.
//!
//! A backup reads with more threads than CPUs (a cold disk answers many
//! small reads sooner in parallel), but each thread chunking a large file
//! holds the chunker's buffer and a batch of chunks, about 12 MiB. Bounding
//! those threads to the CPU count keeps memory independent of
//! `--read-concurrency` while small files still read at full width.

use std::cell::Cell;
use std::sync::{Condvar, Mutex};

thread_local! {
    /// Whether this thread holds a permit. rayon may run another file's job
    /// on a thread that waits inside a join; waiting for a second permit
    /// there could deadlock, so a nested job goes ahead on the first. (A
    /// holder's own parallel work must not run on the backup's other
    /// threads either: see `store_chunks`.)
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// A counting semaphore with re-entry per thread.
pub(super) struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A held permit (or a nested use of one), returned on drop.
pub(super) struct Permit<'a> {
    owner: Option<&'a Permits>,
}

impl Permits {
    /// `n` permits (at least one).
    pub(super) fn new(n: usize) -> Permits {
        Permits {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a permit, unless this thread already holds one.
    pub(super) fn acquire(&self) -> Permit<'_> {
        if HELD.get() {
            return Permit { owner: None };
        }
        let mut free = self.free.lock().expect("permits");
        while *free == 0 {
            free = self.freed.wait(free).expect("permits");
        }
        *free -= 1;
        HELD.set(true);
        Permit { owner: Some(self) }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.owner {
            HELD.set(false);
            *p.free.lock().expect("permits") += 1;
            p.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn at_most_n_holders_and_nested_use_does_not_wait() {
        let permits = Permits::new(2);
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _p = permits.acquire();
                        // Re-entry on the same thread returns at once.
                        let _nested = permits.acquire();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(*permits.free.lock().unwrap(), 2);
    }
}
