//! A server that stopped answering. Each call is given `--s3-timeout` to
//! get an answer; without a memory of earlier calls, a command whose upload
//! gave up went on to spend that much again on each call after it (its
//! lock's removal, its audit record, each pack of a `check --read-data`):
//! several times the timeout in all, or hours for a check. So once a call
//! has given up, the next ones get a single attempt's time, and once two in
//! a row have, calls fail at once. Any answer from the server ends this, and
//! so does a cool-down (a minute, or `--s3-timeout` if longer) passing since
//! the last call gave up: a command that runs for long (`watch`, a schedule)
//! tries again with full patience.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much time the next call is given.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Allowance {
    /// The whole budget.
    Full,
    /// One attempt's time: the last call gave up.
    OneAttempt,
    /// None: calls keep giving up. Says why, for the error.
    Refused(String),
}

/// Calls given up on in a row, and when and on what the last one was.
#[derive(Debug, Default)]
pub(super) struct Outage {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    in_a_row: u32,
    last: Option<(Instant, String)>,
}

impl Outage {
    /// The time a call starting now gets, where `cool_down` is how long
    /// after the last call gave up full patience comes back.
    pub fn allowance(&self, cool_down: Duration) -> Allowance {
        let s = self.state.lock().expect("outage state");
        let Some((at, what)) = &s.last else {
            return Allowance::Full;
        };
        let ago = at.elapsed();
        if ago >= cool_down {
            return Allowance::Full;
        }
        match s.in_a_row {
            0 => Allowance::Full,
            1 => Allowance::OneAttempt,
            n => Allowance::Refused(format!(
                "not sent: the server has not answered the last {n} calls \
                 ({what} gave up {}s ago); calls go out again {}s after the last one gave up",
                ago.as_secs(),
                cool_down.as_secs()
            )),
        }
    }

    /// The server answered (even with an error): it is there.
    pub fn answered(&self) {
        let mut s = self.state.lock().expect("outage state");
        s.in_a_row = 0;
        s.last = None;
    }

    /// The call `what` gave up waiting for an answer.
    pub fn gave_up(&self, what: &str) {
        let mut s = self.state.lock().expect("outage state");
        s.in_a_row += 1;
        s.last = Some((Instant::now(), what.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_get_less_time_once_others_gave_up_until_an_answer_or_the_cool_down() {
        let o = Outage::default();
        let minute = Duration::from_secs(60);
        assert_eq!(o.allowance(minute), Allowance::Full);
        o.gave_up("upload data/ab/ab12");
        assert_eq!(o.allowance(minute), Allowance::OneAttempt);
        o.gave_up("delete locks/cd34");
        match o.allowance(minute) {
            Allowance::Refused(why) => {
                assert!(why.contains("last 2 calls"), "{why}");
                assert!(why.contains("delete locks/cd34"), "{why}");
            }
            a => panic!("{a:?}"),
        }
        // Past the cool-down, a call is given full patience again.
        assert_eq!(o.allowance(Duration::ZERO), Allowance::Full);
        // An answer ends it.
        o.answered();
        assert_eq!(o.allowance(minute), Allowance::Full);
    }
}
