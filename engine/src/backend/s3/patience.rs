//! How long S3 calls may take. `--s3-timeout` bounds the time spent
//! waiting in vain for the server (failed attempts and the backoff between
//! them); moving bytes is given time by their size, at the slowest rate the
//! link is allowed (`--s3-min-rate`), so that a pack goes up over a slow
//! uplink while a dead server is still given up on after `--s3-timeout`.
//! A server that takes an upload and never answers costs at most
//! [`Timing::budget`].

use std::time::Duration;

use tokio::time::Instant;
use tokio::time::error::Elapsed;

use crate::units::MAX_DURATION;

/// The first and the longest wait between retries of a failed call (also
/// of opendal's own retries of reads, listings and deletions).
pub(super) const RETRY_MIN: Duration = Duration::from_millis(200);
pub(super) const RETRY_MAX: Duration = Duration::from_secs(10);

/// The time limits of a backend's calls.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// Time spent waiting in vain after which a call gives up.
    pub give_up_after: Duration,
    /// How long one attempt may wait for the server, not counting the time
    /// its bytes take.
    pub attempt: Duration,
    /// The slowest transfer rate allowed for, in bytes per second.
    pub min_rate: u64,
}

impl Timing {
    /// The limits for `--s3-timeout` and `--s3-min-rate`: an attempt may
    /// wait a third of the budget (1 to 60 s), so that a stalled connection
    /// is abandoned and retried while time remains.
    pub fn new(give_up_after: Duration, min_rate: u64) -> Timing {
        let give_up_after = give_up_after.min(MAX_DURATION);
        Timing {
            give_up_after,
            attempt: (give_up_after / 3).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            min_rate: min_rate.max(1),
        }
    }

    /// The time `bytes` take at the slowest rate allowed.
    pub fn transfer(&self, bytes: u64) -> Duration {
        Duration::try_from_secs_f64(bytes as f64 / self.min_rate as f64)
            .unwrap_or(MAX_DURATION)
            .min(MAX_DURATION)
    }

    /// How much of a failed attempt that took `took` counts as waiting in
    /// vain: at most an attempt's time (beyond that it was moving bytes).
    pub fn waited_in(&self, took: Duration) -> Duration {
        took.min(self.attempt)
    }

    /// How long one attempt that moves `bytes` may take.
    pub fn attempt_for(&self, bytes: u64) -> Duration {
        self.attempt.saturating_add(self.transfer(bytes))
    }

    /// The whole time given to a call that moves `bytes` whose retries
    /// happen out of sight (inside opendal): room for two transfers, one
    /// that failed and one that did not.
    pub fn budget(&self, bytes: u64) -> Duration {
        self.give_up_after
            .saturating_add(self.transfer(bytes).saturating_mul(2))
    }
}

/// A call given up on: after how long spent waiting, and the last
/// attempt's error (`None` if it ran out of time).
pub(super) struct GaveUp {
    pub after: Duration,
    pub last: Option<String>,
    /// It was given one attempt's time (see `outage`).
    pub one_attempt: bool,
}

/// What one attempt of an upload came to: its answer, or out of time.
pub(super) type Attempt = Result<opendal::Result<()>, Elapsed>;

/// The retries of one upload.
pub(super) struct Patience {
    timing: Timing,
    /// How long each attempt may take.
    limit: Duration,
    /// When the call ends, whatever its attempts do: [`Timing::budget`]
    /// after it began.
    until: Instant,
    budget: Duration,
    /// Given an attempt's time only (see `outage`).
    one_attempt: bool,
    wasted: Duration,
    delay: Duration,
}

impl Patience {
    /// For an upload of `bytes` that begins now, given its whole budget
    /// or, with `one_attempt`, an attempt's time.
    pub fn new(timing: Timing, bytes: u64, one_attempt: bool) -> Patience {
        let budget = if one_attempt {
            timing.attempt_for(bytes)
        } else {
            timing.budget(bytes)
        };
        Patience {
            timing,
            limit: timing.attempt_for(bytes),
            until: Instant::now() + budget,
            budget,
            one_attempt,
            wasted: Duration::ZERO,
            delay: RETRY_MIN,
        }
    }

    /// The deadline of an attempt that begins at `started`.
    pub fn deadline(&self, started: Instant) -> Instant {
        (started + self.limit).min(self.until)
    }

    /// Settles an attempt that began at `started`: `Some` with the call's
    /// outcome, or `None` to try again (after the backoff, slept here). A
    /// temporary error and running out of time are worth another attempt.
    pub async fn settle(
        &mut self,
        started: Instant,
        sent: Attempt,
    ) -> Option<Result<opendal::Result<()>, GaveUp>> {
        let last = match sent {
            Ok(Err(e)) if e.is_temporary() => Some(super::with_causes(&e)),
            Ok(answer) => return Some(Ok(answer)),
            Err(_) => None,
        };
        if self.again(started).await {
            return None;
        }
        // Out of time by the clock rather than by waiting in vain: attempts
        // that ran out of time while moving bytes.
        let after = if self.one_attempt || Instant::now() >= self.until {
            self.budget
        } else {
            self.timing.give_up_after
        };
        Some(Err(GaveUp {
            after,
            last,
            one_attempt: self.one_attempt,
        }))
    }

    /// After a failed attempt that began at `started`: whether to try
    /// again, after the backoff (slept here). The attempt counts as waiting
    /// for at most [`Timing::attempt`] (beyond that it was moving bytes);
    /// the backoff counts in full.
    async fn again(&mut self, started: Instant) -> bool {
        self.wasted += self.timing.waited_in(started.elapsed());
        // The last backoff is cut to the time left, and one more attempt
        // made: given up before it, a call ended with up to 10 s of its
        // `--s3-timeout` left.
        let delay = self
            .delay
            .min(self.timing.give_up_after.saturating_sub(self.wasted));
        if delay.is_zero() || Instant::now() + delay >= self.until {
            return false;
        }
        tokio::time::sleep(delay).await;
        self.wasted += delay;
        self.delay = (self.delay * 2).min(RETRY_MAX);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_get_time_by_size_and_waiting_is_bounded() {
        let t = Timing::new(Duration::from_secs(60), 64 << 10);
        assert_eq!(t.attempt, Duration::from_secs(20));
        // A 16 MiB pack at 64 KiB/s.
        assert_eq!(t.transfer(16 << 20), Duration::from_secs(256));
        assert_eq!(t.attempt_for(16 << 20), Duration::from_secs(276));
        assert_eq!(t.budget(0), Duration::from_secs(60));
        assert_eq!(
            Timing::new(Duration::from_secs(1), 0).attempt,
            Duration::from_secs(1)
        );
    }

    fn temporary() -> Attempt {
        Ok(Err(opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "refused",
        )
        .set_temporary()))
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_until_the_time_waited_reaches_the_budget() {
        let t = Timing::new(Duration::from_secs(5), 64 << 10);
        let mut p = Patience::new(t, 0, false);
        let denied = opendal::Error::new(opendal::ErrorKind::PermissionDenied, "denied");
        assert!(matches!(
            p.settle(Instant::now(), Ok(Err(denied))).await,
            Some(Ok(Err(_)))
        ));
        assert!(matches!(
            p.settle(Instant::now(), Ok(Ok(()))).await,
            Some(Ok(Ok(())))
        ));
        // Instant failures (a refused connection): the backoffs add up to
        // the budget (0.2 + 0.4 + 0.8 + 1.6 s; 3.2 s more would pass it).
        let start = Instant::now();
        let mut tries = 1;
        let gave_up = loop {
            match p.settle(Instant::now(), temporary()).await {
                None => tries += 1,
                Some(r) => break r,
            }
        };
        assert_eq!(tries, 5);
        assert!(start.elapsed() < Duration::from_secs(5));
        let Err(GaveUp { after, last, .. }) = gave_up else {
            panic!("not given up")
        };
        assert_eq!(after, Duration::from_secs(5));
        assert!(last.is_some_and(|e| e.to_string().contains("refused")));
        // A server that takes uploads and never answers (16 MiB, 256 s at
        // 64 KiB/s): each attempt gets its transfer time, counts only its
        // waiting part, and the call ends when its budget (5 s and twice
        // the transfer time) is spent, however the time went.
        let mut p = Patience::new(t, 16 << 20, false);
        let start = Instant::now();
        assert_eq!(
            p.deadline(start) - start,
            Duration::from_secs(256) + t.attempt
        );
        let mut tries = 0;
        let gave_up = loop {
            tries += 1;
            let started = Instant::now();
            let stalled =
                tokio::time::timeout_at(p.deadline(started), std::future::pending()).await;
            if let Some(r) = p.settle(started, stalled).await {
                break r;
            }
        };
        assert_eq!(tries, 3);
        assert_eq!(start.elapsed(), Duration::from_secs(517));
        let Err(GaveUp {
            after, last: None, ..
        }) = gave_up
        else {
            panic!("not given up")
        };
        assert_eq!(after, Duration::from_secs(517));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_given_one_attempt_ends_within_it() {
        let t = Timing::new(Duration::from_secs(30), 64 << 10);
        let mut p = Patience::new(t, 0, true);
        let start = Instant::now();
        assert_eq!(p.deadline(start) - start, Duration::from_secs(10));
        // Instant failures are retried within the attempt's 10 s only
        // (0.2 + 0.4 + 0.8 + 1.6 + 3.2 s of backoff; 6.4 s more would pass it).
        let gave_up = loop {
            if let Some(r) = p.settle(Instant::now(), temporary()).await {
                break r;
            }
        };
        assert!(start.elapsed() < Duration::from_secs(10));
        let Err(GaveUp { after, last, .. }) = gave_up else {
            panic!("not given up")
        };
        assert_eq!(after, Duration::from_secs(10));
        assert!(last.is_some_and(|e| e.contains("refused")));
    }

    #[test]
    fn absurd_settings_do_not_overflow() {
        let t = Timing::new(Duration::MAX, 1);
        assert_eq!(t.give_up_after, MAX_DURATION);
        assert!(t.budget(u64::MAX) >= MAX_DURATION);
        assert!(t.attempt_for(u64::MAX) >= MAX_DURATION);
    }
}
