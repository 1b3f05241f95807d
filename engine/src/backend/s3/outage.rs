//! A server that stopped answering. Each call is given `--s3-timeout` to
//! get an answer; without a memory of earlier calls, a command whose upload
//! gave up went on to spend that much again on each call after it (its
//! lock's removal, its audit record, each pack of a `check --read-data`):
//! several times the timeout in all, or hours for a check. So once a call
//! has given up, the next ones get a single attempt's time, and once two in
//! a row have, calls fail at once, but for one at a time that goes out as a
//! probe every so often. An answer ends this, and so does a cool-down
//! passing since the last call gave up: a command that runs for long
//! (`watch`, a schedule) tries again with full patience.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much time the next call is given.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Allowance {
    /// The whole budget.
    Full,
    /// One attempt's time: an earlier call gave up.
    OneAttempt,
    /// One attempt's time, as the one call that goes out to find out
    /// whether the server is back while others are refused.
    Probe,
    /// None: calls keep giving up. Says why, for the error.
    Refused(String),
}

/// Calls given up on in a row, and when and on what the last one was.
#[derive(Debug)]
pub(super) struct Outage {
    /// How long after the last call gave up full patience comes back.
    cool_down: Duration,
    /// How long after it a probe may go out while calls are refused.
    probe_every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    in_a_row: u32,
    /// When the last call gave up, and what it was.
    last: Option<(Instant, String)>,
    /// When the last counted one gave up: calls begun before it were
    /// under way when the server went, and do not count again.
    counted_at: Option<Instant>,
    /// A probe is under way.
    probing: bool,
}

impl Outage {
    /// No call given up yet.
    pub fn new(cool_down: Duration, probe_every: Duration) -> Outage {
        Outage {
            cool_down,
            probe_every,
            state: Mutex::default(),
        }
    }

    /// The time a call starting now gets.
    pub fn allowance(&self) -> Allowance {
        let mut s = self.state.lock().expect("outage state");
        let Some((at, what)) = &s.last else {
            return Allowance::Full;
        };
        let ago = at.elapsed();
        if ago >= self.cool_down {
            return Allowance::Full;
        }
        match s.in_a_row {
            0 => Allowance::Full,
            1 => Allowance::OneAttempt,
            // One call at a time finds out whether the server is back.
            _ if !s.probing && ago >= self.probe_every => {
                s.probing = true;
                Allowance::Probe
            }
            n => Allowance::Refused(format!(
                "not sent: the last {n} calls got no answer from the server, or only \
                 temporary errors ({what} gave up {}s ago); calls go out again {}s after the \
                 last one gave up, or once one sent to find out gets an answer",
                ago.as_secs(),
                self.cool_down.as_secs()
            )),
        }
    }

    /// The server answered (even with an error): it is there.
    pub fn answered(&self) {
        *self.state.lock().expect("outage state") = State::default();
    }

    /// The call `what`, begun at `started`, gave up waiting for an answer;
    /// `probe` says it was the [`Allowance::Probe`].
    pub fn gave_up(&self, what: &str, started: Instant, probe: bool) {
        let mut s = self.state.lock().expect("outage state");
        let now = Instant::now();
        match (&s.last, s.counted_at) {
            // Long ago: this one starts a new count.
            (Some((at, _)), _) if at.elapsed() >= self.cool_down => {
                s.in_a_row = 1;
                s.counted_at = Some(now);
            }
            // Calls under way together when the server went count as one.
            (_, Some(counted)) if started < counted => {}
            _ => {
                s.in_a_row += 1;
                s.counted_at = Some(now);
            }
        }
        s.last = Some((now, what.to_string()));
        if probe {
            s.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_get_less_time_once_others_gave_up_until_an_answer_or_the_cool_down() {
        let minute = Duration::from_secs(60);
        let o = Outage::new(minute, minute);
        assert_eq!(o.allowance(), Allowance::Full);
        // Three uploads under way when the server went: one give-up.
        let under_way = Instant::now();
        for pack in ["ab12", "ab34", "ab56"] {
            o.gave_up(&format!("upload data/ab/{pack}"), under_way, false);
        }
        assert_eq!(o.state.lock().unwrap().in_a_row, 1);
        assert_eq!(o.allowance(), Allowance::OneAttempt);
        // One begun after the first give-up counts, though an earlier
        // one gave up after it began.
        let after = Instant::now();
        o.gave_up("upload data/ab/ab78", under_way, false);
        o.gave_up("delete locks/cd34", after, false);
        match o.allowance() {
            Allowance::Refused(why) => {
                assert!(why.contains("last 2 calls"), "{why}");
                assert!(why.contains("delete locks/cd34"), "{why}");
            }
            a => panic!("{a:?}"),
        }
        // An answer ends it.
        o.answered();
        assert_eq!(o.allowance(), Allowance::Full);
        // Past the cool-down, a call is given full patience again, and a
        // give-up starts a new count.
        let o = Outage::new(Duration::ZERO, minute);
        o.gave_up("stat config", Instant::now(), false);
        o.gave_up("stat config", Instant::now(), false);
        assert_eq!(o.state.lock().unwrap().in_a_row, 1);
        assert_eq!(o.allowance(), Allowance::Full);
    }

    #[test]
    fn while_calls_are_refused_one_at_a_time_goes_out_to_find_out() {
        let o = Outage::new(Duration::from_secs(60), Duration::ZERO);
        o.gave_up("read data/ab/ab12", Instant::now(), false);
        o.gave_up("read data/cd/cd34", Instant::now(), false);
        assert_eq!(o.allowance(), Allowance::Probe);
        assert!(matches!(o.allowance(), Allowance::Refused(_)));
        // Another call giving up does not end the probe.
        o.gave_up("delete locks/ab", Instant::now(), false);
        assert!(matches!(o.allowance(), Allowance::Refused(_)));
        // The probe gave up too: the next one may go.
        o.gave_up("read data/ef/ef56", Instant::now(), true);
        assert_eq!(o.allowance(), Allowance::Probe);
        o.answered();
        assert_eq!(o.allowance(), Allowance::Full);
    }
}
