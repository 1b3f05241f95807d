//! Changes seen but not yet in a snapshot, and when they are due.

use std::time::{Duration, Instant};

use crate::archiver::ChangedPaths;

use super::fswatch::Signal;

/// Changes waiting for the next snapshot.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// The paths that changed.
    pub changes: ChangedPaths,
    /// Why only a full rescan will do, if so.
    pub rescan: Option<String>,
    /// When the oldest change not yet in a snapshot was seen.
    pub first: Option<Instant>,
    /// When the newest was seen.
    pub last: Option<Instant>,
}

impl Pending {
    /// Records one signal seen at `at`. Returns true if it means events
    /// were lost because a watch could not be added.
    pub fn add(&mut self, at: Instant, signal: Signal) -> bool {
        let mut limit_hit = false;
        match signal {
            Signal::Changed(p) => self.changes.changed(&p),
            Signal::Replaced(p, origin) => self.changes.replaced(&p, origin.as_deref()),
            Signal::Lost { reason, limit, .. } => {
                limit_hit = limit;
                self.rescan.get_or_insert(reason);
            }
        }
        self.first.get_or_insert(at);
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
        self.bound();
        limit_hit
    }

    /// Keeps the paths only while they are of use: a full rescan reads
    /// everything anyway (kept through days of failed retries, paths piled
    /// up), and past [`MAX_TRACKED`] paths one rescan costs less than the
    /// memory of tracking each.
    fn bound(&mut self) {
        if self.rescan.is_none() && self.changes.len() > MAX_TRACKED {
            self.rescan = Some(format!(
                "more than {MAX_TRACKED} paths changed before a snapshot could take them"
            ));
        }
        if self.rescan.is_some() && !self.changes.is_empty() {
            self.changes = ChangedPaths::new();
        }
    }

    /// Whether there is anything to snapshot.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.rescan.is_none()
    }

    /// When a snapshot is due: once changes have settled for `debounce`,
    /// or `max_delay` after the first of them during a steady stream; at
    /// once for a rescan that no event asked for (start, timer, retry).
    pub fn due_at(&self, now: Instant, debounce: Duration, max_delay: Duration) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        match (self.first, self.last) {
            (Some(first), Some(last)) => Some((last + debounce).min(first + max_delay)),
            _ => Some(now),
        }
    }

    /// Takes everything, leaving nothing pending.
    pub fn take(&mut self) -> Pending {
        std::mem::take(self)
    }

    /// Adds newer changes to these (a failed batch and what came since).
    pub fn absorb(&mut self, newer: Pending) {
        self.changes.absorb(newer.changes);
        if self.rescan.is_none() {
            self.rescan = newer.rescan;
        }
        self.first = match (self.first, newer.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(newer.last);
        self.bound();
    }
}

/// The most changed paths kept one by one (about 100 MiB of them).
const MAX_TRACKED: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn due_after_quiet_or_at_the_latest_after_max_delay() {
        let (debounce, max) = (Duration::from_secs(1), Duration::from_secs(10));
        let t0 = Instant::now();
        let mut p = Pending::default();
        assert_eq!(p.due_at(t0, debounce, max), None);
        p.add(t0, Signal::Changed(PathBuf::from("/a")));
        assert_eq!(p.due_at(t0, debounce, max), Some(t0 + debounce));
        // A steady stream: each change pushes the quiet time, not past max.
        for i in 1..=20 {
            p.add(
                t0 + Duration::from_millis(500 * i),
                Signal::Changed(PathBuf::from("/a")),
            );
        }
        assert_eq!(p.due_at(t0, debounce, max), Some(t0 + max));
        // A rescan no event asked for is due at once.
        let mut r = Pending {
            rescan: Some("timer".into()),
            ..Pending::default()
        };
        assert_eq!(r.due_at(t0, debounce, max), Some(t0));
        let lost = Signal::Lost {
            reason: "overflow".into(),
            limit: false,
            source_back: false,
        };
        assert!(!r.add(t0, lost));
        assert_eq!(r.rescan.as_deref(), Some("timer"));
    }

    #[test]
    fn a_rescan_pending_keeps_no_paths() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.add(t0, Signal::Changed(PathBuf::from("/a")));
        assert_eq!(p.changes.len(), 1);
        let lost = Signal::Lost {
            reason: "overflow".into(),
            limit: false,
            source_back: false,
        };
        p.add(t0, lost);
        assert!(p.changes.is_empty());
        p.add(t0, Signal::Changed(PathBuf::from("/b")));
        assert!(p.changes.is_empty());
        // Absorbed by a batch that failed, newer paths are not kept either.
        let mut failed = Pending::default();
        failed.add(t0, Signal::Changed(PathBuf::from("/c")));
        failed.absorb(p);
        assert!(failed.changes.is_empty());
        assert_eq!(failed.rescan.as_deref(), Some("overflow"));
    }
}
