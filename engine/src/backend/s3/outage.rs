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
    last: Option<(Instant, String)>,
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
                Allowance::OneAttempt
            }
            n => Allowance::Refused(format!(
                "not sent: the server has not answered the last {n} calls \
                 ({what} gave up {}s ago); calls go out again {}s after the last one gave up, \
                 or once one sent to find out gets an answer",
                ago.as_secs(),
                self.cool_down.as_secs()
            )),
        }
    }

    /// The server answered (even with an error): it is there.
    pub fn answered(&self) {
        *self.state.lock().expect("outage state") = State::default();
    }

    /// The call `what`, begun at `started`, gave up waiting for an answer.
    pub fn gave_up(&self, what: &str, started: Instant) {
        let mut s = self.state.lock().expect("outage state");
        match &s.last {
            // Long ago: this one starts a new count.
            Some((at, _)) if at.elapsed() >= self.cool_down => s.in_a_row = 1,
            // Calls under way together when the server went count as one.
            Some((at, _)) if started < *at => {}
            _ => s.in_a_row += 1,
        }
        s.last = Some((Instant::now(), what.to_string()));
        s.probing = false;
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
        o.gave_up("upload data/ab/ab12", under_way);
        o.gave_up("upload data/ab/ab34", under_way);
        assert_eq!(o.allowance(), Allowance::OneAttempt);
        o.gave_up("delete locks/cd34", Instant::now());
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
        o.gave_up("stat config", Instant::now());
        o.gave_up("stat config", Instant::now());
        assert_eq!(o.allowance(), Allowance::Full);
    }

    #[test]
    fn while_calls_are_refused_one_at_a_time_goes_out_to_find_out() {
        let o = Outage::new(Duration::from_secs(60), Duration::ZERO);
        o.gave_up("read data/ab/ab12", Instant::now());
        o.gave_up("read data/cd/cd34", Instant::now());
        assert_eq!(o.allowance(), Allowance::OneAttempt, "the probe");
        assert!(matches!(o.allowance(), Allowance::Refused(_)));
        // The probe gave up too: the next one may go.
        o.gave_up("read data/ef/ef56", Instant::now());
        assert_eq!(o.allowance(), Allowance::OneAttempt);
        o.answered();
        assert_eq!(o.allowance(), Allowance::Full);
    }
}
