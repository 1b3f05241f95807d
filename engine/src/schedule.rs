//! Scheduled backups: a backup run again and again, at a fixed interval or
//! at the times of a cron expression, with retention after each run.
//!
//! The loop runs one job at a time. A run that fails is reported and the
//! schedule goes on, so one unreachable database or full disk does not end
//! the protection. Runs never pile up: the next run is the first time due
//! after the last run ended, so times passed during a run are not made up
//! for; after a sleep (suspend) through one or more times, one run starts
//! at wake.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, Offset, TimeZone, Timelike};

use crate::error::{Error, Result};
use crate::forget::ForgetReport;
use crate::hook::{run_failure_hook, run_success_hook};
use crate::id::Id;
use crate::prune::PruneReport;
use crate::repository::Repository;
use crate::retention::Policy;
use crate::snapshot::Snapshot;
use crate::upkeep::{Upkeep, UpkeepEvent};

/// When runs are due.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Right away, then each time this long after the previous run began
    /// (or after it ended, if it took longer).
    Every(Duration),
    /// At each time of a cron expression (5 fields, or 6 with seconds
    /// first), in local time.
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// Reads an interval (`90s`, `15m`, `6h`, `1d`: see
    /// [`crate::units::parse_duration`]) or a cron expression
    /// (`"0 3 * * *"`: 03:00 every day).
    pub fn parse(spec: &str) -> Result<Schedule> {
        let spec = spec.trim();
        // `@hourly`, `@daily` and the other nicknames are cron's.
        if !spec.contains(char::is_whitespace) && !spec.starts_with('@') {
            return match crate::units::parse_duration(spec) {
                // Shorter, it is a typo (`1ms` for `1m`), not a backup plan:
                // it would write snapshots as fast as the machine can.
                Ok(d) if d >= Duration::from_secs(1) => Ok(Schedule::Every(d)),
                Ok(d) if !d.is_zero() => Err(Error::InvalidInput(format!(
                    "a schedule's interval must be at least one second, not {spec}"
                ))),
                Ok(_) => Err(Error::InvalidInput(
                    "a schedule's interval must be longer than zero".into(),
                )),
                // What is wrong with something that starts as an interval.
                Err(e) if spec.starts_with(|c: char| c.is_ascii_digit()) => Err(e),
                Err(_) => Err(Error::InvalidInput(format!(
                    "schedule {spec:?} is neither an interval (such as 15m, 6h or 1d) nor a \
                     cron expression (such as \"0 3 * * *\")"
                ))),
            };
        }
        let cron = croner::Cron::from_str(spec)
            .map_err(|e| Error::InvalidInput(format!("cron expression {spec:?}: {e}")))?;
        // One that never matches (31 February) would end the schedule at
        // once, silently.
        if cron.find_next_occurrence(&Local::now(), false).is_err() {
            return Err(Error::InvalidInput(format!(
                "cron expression {spec:?} never matches a time to come"
            )));
        }
        Ok(Schedule::Cron(Box::new(cron)))
    }

    /// When the next run is due, at `now` (wall clock) and `mono` (the
    /// monotonic clock), after a run that began at `began` on both clocks
    /// (`None` before the first run), for the time `slot` it was due at;
    /// `None` if the expression never matches again.
    ///
    /// An interval is the earlier of its ends by the wall clock, which goes
    /// on through a suspend (a laptop that slept through a run backs up at
    /// wake), and by the monotonic clock, which the wall clock being set
    /// back does not move (the run is not put off by the step). A cron
    /// time comes after the slot just run, also when the clock was set
    /// back during the run (the slot was run twice), unless by more than
    /// [`Schedule::replans_after`] allows.
    pub fn due(
        &self,
        began: Option<(DateTime<Local>, Instant)>,
        slot: Option<DateTime<Local>>,
        now: DateTime<Local>,
        mono: Instant,
    ) -> Option<DateTime<Local>> {
        let due = match (self, began, slot) {
            (Schedule::Cron(c), Some((wall, at)), Some(slot)) => {
                // How far the wall clock was set back during the run.
                let by_mono =
                    chrono::Duration::from_std(mono.saturating_duration_since(at)).ok()?;
                let back = (by_mono - (now - wall)).to_std().unwrap_or_default();
                let from = if self.replans_after(back) {
                    now
                } else {
                    now.max(slot)
                };
                next_cron(c, from)?
            }
            _ => self.next(began.map(|(wall, _)| wall), now)?,
        };
        match (self, began) {
            (Schedule::Every(d), Some((_, at))) => {
                let left = (at + *d).saturating_duration_since(mono);
                let by_mono = now + chrono::Duration::from_std(left).ok()?;
                Some(due.min(by_mono))
            }
            _ => Some(due),
        }
    }

    /// Whether a wall clock set back by `step` while waiting calls for
    /// working out the next run again. An interval's always does. A cron
    /// time does after a large step, not after a small one: as cron does,
    /// the time it ran at (by the wrong clock) is not run again, so a fix
    /// of a few minutes or hours makes no second run. A large step (a clock
    /// that had run days or years ahead) would otherwise put the next run
    /// that far off.
    fn replans_after(&self, step: Duration) -> bool {
        match self {
            Schedule::Every(_) => true,
            Schedule::Cron(_) => step > Duration::from_secs(3 * 3600),
        }
    }

    /// The first time a run is due after one that began at `began` and
    /// ended at `ended` (`None` before the first run); `None` if the
    /// expression never matches again.
    pub fn next(
        &self,
        began: Option<DateTime<Local>>,
        ended: DateTime<Local>,
    ) -> Option<DateTime<Local>> {
        match self {
            Schedule::Every(d) => match began {
                None => Some(ended),
                Some(b) => {
                    let step = chrono::Duration::from_std(*d).ok()?;
                    Some((b + step).max(ended))
                }
            },
            Schedule::Cron(c) => next_cron(c, ended),
        }
    }
}

/// The first time of `cron` after `ended`, in `ended`'s time zone.
fn next_cron<Tz>(cron: &croner::Cron, ended: DateTime<Tz>) -> Option<DateTime<Tz>>
where
    Tz: TimeZone + Copy,
    Tz::Offset: Copy,
{
    // From the whole second (croner keeps the fraction of the start time in
    // what it returns), taken off the instant: `with_nanosecond` maps the
    // local time back, which has no single answer in the hour repeated
    // when the clocks go back, and the schedule ended there, silently.
    let frac = i64::from(ended.nanosecond() % 1_000_000_000);
    let whole = ended - chrono::Duration::nanoseconds(frac);
    // croner searches local time forward: from the first pass of a
    // repeated hour it never comes back to the second pass's times, and
    // from the second pass it gives a time's first occurrence, an hour
    // ago. So the search starts that much earlier when the clocks go back
    // within the next hours, and the first of its times (the iterator
    // gives both occurrences, out of order) still to come is taken.
    let offset = |t: DateTime<Tz>| i64::from(t.offset().fix().local_minus_utc());
    let back = (offset(whole) - offset(whole + chrono::Duration::hours(3))).max(0);
    let back = chrono::Duration::seconds(back);
    let mut best: Option<DateTime<Tz>> = None;
    // The bound only guards against a loop: a repeated hour of a schedule
    // by the second is 7,200 times.
    for t in cron.iter_after(whole - back).take(20_000) {
        if best.is_some_and(|b| t > b + back) {
            break;
        }
        if t > ended && best.is_none_or(|b| t < b) {
            best = Some(t);
        }
    }
    best
}

/// What a scheduled backup asks for after each run.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Forget the snapshots of the run's group (host and paths) that this
    /// policy does not keep.
    pub keep: Option<Policy>,
    /// Prune after a run when the last prune is at least this old (the
    /// first time after the first run).
    pub prune_every: Option<Duration>,
}

/// What happened, for the caller to show.
pub enum ScheduleEvent<'a> {
    /// The next run is due at this time.
    Waiting(DateTime<Local>),
    /// A run failed; the schedule goes on.
    Failed(&'a Error),
    /// The run under way when `stop` was set failed: the signal reached
    /// what it ran too (a terminal's Ctrl-C, `systemctl stop`, both stop
    /// the whole process group); the schedule ends, no hook runs.
    Stopped(&'a Error),
    /// Retention after a run forgot snapshots.
    Forgot(&'a ForgetReport),
    /// Retention after a run pruned.
    Pruned(&'a PruneReport),
    /// Retention failed: a forget (`None`) is tried again after the next
    /// run, a prune after the next run at least this long from now.
    RetentionFailed(&'a Error, Option<std::time::Duration>),
    /// A notification command failed (see [`Hooks`]).
    HookFailed(&'a Error),
    /// The run's audit record could not be written ([`crate::audit`]).
    AuditFailed(&'a Error),
}

/// Notification commands run after each scheduled run (with `sh -c`, see
/// [`crate::hook`]).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// After a run that succeeded; `CAIRN_SNAPSHOT_ID` holds the new
    /// snapshot's ID (empty if nothing changed and none was written), and
    /// `CAIRN_PARTIAL` is `1` if some entries could not be read (else `0`).
    pub on_success: Option<String>,
    /// After a run that failed; `CAIRN_ERROR` holds the error.
    pub on_failure: Option<String>,
}

/// How the runs of a schedule went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Runs started.
    pub runs: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Runs that wrote a snapshot without some entries they could not read.
    pub partial: u64,
    /// The last run failed after `stop` was set ([`ScheduleEvent::Stopped`]).
    pub stopped: bool,
}

/// Runs `job` (one backup, returning its snapshot, or `None` if it wrote
/// none because nothing changed) at each time of `schedule` until `stop` is
/// set, applying `retention` after each run that wrote a snapshot and then
/// running the matching hook. A run under way when `stop` is set is
/// finished first.
pub fn run_scheduled(
    repo: &Repository,
    schedule: &Schedule,
    retention: &Retention,
    hooks: &Hooks,
    stop: &AtomicBool,
    mut job: impl FnMut() -> Result<Option<(Id, Snapshot)>>,
    mut event: impl FnMut(ScheduleEvent),
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut began = None;
    let mut slot = None;
    let mut upkeep = Upkeep::new(retention.keep.clone(), retention.prune_every, false);
    while let Some(due) = schedule.due(began, slot, Local::now(), Instant::now()) {
        event(ScheduleEvent::Waiting(due));
        match sleep_until(due, stop) {
            Wake::Due => {}
            Wake::Stopped => break,
            // The time is worked out again: an interval from the monotonic
            // clock, a cron time from the clock as it now is.
            Wake::ClockBack(step) if schedule.replans_after(step) => continue,
            Wake::ClockBack(_) => {
                if !sleep_until_ignoring_steps(due, stop) {
                    break;
                }
            }
        }
        began = Some((Local::now(), Instant::now()));
        slot = Some(due);
        tally.runs += 1;
        let hook = match job() {
            Ok(written) => {
                let partial = written.as_ref().is_some_and(|(_, s)| s.partial);
                tally.partial += u64::from(partial);
                if let Some((_, snapshot)) = &written {
                    upkeep.after_snapshot(
                        repo,
                        &snapshot.hostname,
                        &snapshot.paths,
                        &snapshot.tags,
                        stop,
                        &mut |e| {
                            event(match e {
                                UpkeepEvent::Forgot(r) => ScheduleEvent::Forgot(r),
                                UpkeepEvent::Pruned(r) => ScheduleEvent::Pruned(r),
                                UpkeepEvent::Failed(e, retry) => {
                                    ScheduleEvent::RetentionFailed(e, retry)
                                }
                            })
                        },
                    );
                }
                let id = written.map(|(id, _)| id.to_hex()).unwrap_or_default();
                hooks
                    .on_success
                    .as_deref()
                    .map(|h| run_success_hook(h, &id, partial))
            }
            Err(e) if stop.load(Ordering::SeqCst) => {
                // Not a failure to alert on: the run was stopped with the
                // schedule (its capture command, killed by the same signal,
                // made it fail).
                tally.stopped = true;
                event(ScheduleEvent::Stopped(&e));
                None
            }
            Err(e) => {
                tally.failed += 1;
                event(ScheduleEvent::Failed(&e));
                hooks
                    .on_failure
                    .as_deref()
                    .map(|h| run_failure_hook(h, &e.to_string()))
            }
        };
        if let Some(Err(e)) = hook {
            event(ScheduleEvent::HookFailed(&e));
        }
        // One audit record per run (with its retention), not per session.
        if let Err(e) = repo.flush_audit() {
            event(ScheduleEvent::AuditFailed(&e));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    Ok(tally)
}

/// How a wait for the next run ended.
enum Wake {
    /// The time came.
    Due,
    /// `stop` was set.
    Stopped,
    /// The wall clock was set back by this much (NTP correcting a clock
    /// that ran ahead, an administrator, a board without a battery).
    ClockBack(Duration),
}

/// A wall clock step back smaller than this is taken for jitter.
const CLOCK_STEP: Duration = Duration::from_secs(2);

/// Sleeps until `due`, waking early to look at `stop` and at the clock.
fn sleep_until(due: DateTime<Local>, stop: &AtomicBool) -> Wake {
    let poll = Duration::from_millis(200);
    let mut seen = Local::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Wake::Stopped;
        }
        let now = Local::now();
        if let Ok(step) = (seen - now).to_std()
            && step > poll + CLOCK_STEP
        {
            return Wake::ClockBack(step);
        }
        seen = now;
        let left = (due - now).to_std().unwrap_or_default();
        if left.is_zero() {
            return Wake::Due;
        }
        std::thread::sleep(left.min(poll));
    }
}

/// [`sleep_until`], for a cron time kept through a small step back.
fn sleep_until_ignoring_steps(due: DateTime<Local>, stop: &AtomicBool) -> bool {
    loop {
        match sleep_until(due, stop) {
            Wake::Due => return true,
            Wake::Stopped => return false,
            Wake::ClockBack(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn intervals_and_cron_expressions_give_the_next_run() {
        let t = |h, m, s| Local.with_ymd_and_hms(2026, 11, 30, h, m, s).unwrap();
        let every = Schedule::parse("15m").unwrap();
        // Right away, then 15 minutes after each run began, or when a run
        // that took longer ended.
        assert_eq!(every.next(None, t(9, 0, 0)), Some(t(9, 0, 0)));
        assert_eq!(every.next(Some(t(9, 0, 0)), t(9, 2, 0)), Some(t(9, 15, 0)));
        assert_eq!(every.next(Some(t(9, 0, 0)), t(9, 20, 0)), Some(t(9, 20, 0)));
        let cron = Schedule::parse("0 3 * * *").unwrap();
        assert_eq!(
            cron.next(None, t(9, 0, 0)),
            Some(t(3, 0, 0) + chrono::Duration::days(1))
        );
        let seconds = Schedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(
            seconds.next(Some(t(9, 0, 0)), t(9, 0, 3)),
            Some(t(9, 0, 10))
        );
        let late = t(9, 0, 9) + chrono::Duration::milliseconds(700);
        assert_eq!(seconds.next(None, late), Some(t(9, 0, 10)));
        // Cron's nicknames.
        let hourly = Schedule::parse("@hourly").unwrap();
        assert_eq!(hourly.next(None, t(9, 20, 0)), Some(t(10, 0, 0)));
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(
            daily.next(None, t(9, 0, 0)),
            Some(t(0, 0, 0) + chrono::Duration::days(1))
        );
        for bad in [
            "0s",
            "1ms",
            "soon",
            "61 * * * *",
            "* * *",
            "0 0 31 2 *",
            "@often",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_interval_is_neither_put_off_by_a_clock_set_back_nor_by_a_suspend() {
        let t = |h, m| Local.with_ymd_and_hms(2026, 11, 30, h, m, 0).unwrap();
        let every = Schedule::parse("5m").unwrap();
        let mono = Instant::now();
        let minute = Duration::from_secs(60);
        let began = Some((t(10, 0), mono));
        // Untouched clocks: five minutes after the run began.
        assert_eq!(
            every.due(began, None, t(10, 1), mono + minute),
            Some(t(10, 5))
        );
        // A minute on, the clock was set back an hour: four minutes more,
        // not an hour and four.
        assert_eq!(
            every.due(began, None, t(9, 1), mono + minute),
            Some(t(9, 5))
        );
        // Suspended for half an hour (the monotonic clock stood still):
        // due at once, by the wall clock.
        assert_eq!(
            every.due(began, None, t(10, 31), mono + minute),
            Some(t(10, 31))
        );
        assert_eq!(every.due(None, None, t(9, 0), mono), Some(t(9, 0)));
        // A cron time is the clock's, whatever the monotonic clock says.
        let cron = Schedule::parse("0 3 * * *").unwrap();
        let tomorrow = t(3, 0) + chrono::Duration::days(1);
        assert_eq!(
            cron.due(began, None, t(9, 1), mono + minute),
            Some(tomorrow)
        );
        // It is worked out again after a step of days, not after a fix of
        // an hour (the run the wrong clock made is not made again).
        assert!(every.replans_after(Duration::from_secs(5)));
        assert!(!cron.replans_after(Duration::from_secs(3600)));
        assert!(cron.replans_after(Duration::from_secs(3 * 86_400)));
    }

    #[test]
    fn a_cron_slot_is_not_run_again_when_the_clock_is_set_back_during_its_run() {
        let t = |h, m| Local.with_ymd_and_hms(2026, 11, 30, h, m, 0).unwrap();
        let cron = Schedule::parse("*/20 * * * *").unwrap();
        let mono = Instant::now();
        let minutes = |n: u64| Duration::from_secs(60 * n);
        // The 10:40 run took 4 minutes, during which the clock was set
        // back 10: it ends at 10:34 by the wall clock. 10:40 ran already.
        let began = Some((t(10, 40), mono));
        let slot = Some(t(10, 40));
        assert_eq!(
            cron.due(began, slot, t(10, 34), mono + minutes(4)),
            Some(t(11, 0))
        );
        // Untouched clocks: the next slot.
        assert_eq!(
            cron.due(began, slot, t(10, 44), mono + minutes(4)),
            Some(t(11, 0))
        );
        // A clock that had run days ahead is believed once set right.
        let ahead = Some((t(10, 40) + chrono::Duration::days(3), mono));
        let slot = ahead.map(|(w, _)| w);
        assert_eq!(
            cron.due(ahead, slot, t(10, 44), mono + minutes(4)),
            Some(t(11, 0))
        );
    }

    #[test]
    fn cron_schedules_go_on_through_the_hour_repeated_when_clocks_go_back() {
        use chrono_tz::America::New_York as NY;
        // 2026-11-01: 01:00-01:59 EDT, then 01:00-01:59 EST again.
        let first = |m, s| {
            NY.with_ymd_and_hms(2026, 11, 1, 1, m, s)
                .earliest()
                .unwrap()
        };
        let second = |m, s| NY.with_ymd_and_hms(2026, 11, 1, 1, m, s).latest().unwrap();
        let cron = |spec: &str| match Schedule::parse(spec).unwrap() {
            Schedule::Cron(c) => c,
            Schedule::Every(_) => unreachable!(),
        };
        let quarter = cron("*/15 * * * *");
        let ended = first(0, 30) + chrono::Duration::milliseconds(250);
        // The schedule went on: no end in the repeated hour.
        assert_eq!(next_cron(&quarter, ended), Some(first(15, 0)));
        // In the second pass, the next quarter is its own, not the first
        // pass's (an hour ago).
        let later = second(10, 0);
        assert_eq!(next_cron(&quarter, later), Some(second(15, 0)));
        assert_eq!(
            next_cron(&quarter, second(45, 1)),
            Some(NY.with_ymd_and_hms(2026, 11, 1, 2, 0, 0).unwrap())
        );
        // Each time comes after the last one, through the whole night.
        let mut t = NY.with_ymd_and_hms(2026, 10, 31, 23, 50, 0).unwrap();
        let mut runs = 0;
        while t < NY.with_ymd_and_hms(2026, 11, 1, 4, 0, 0).unwrap() {
            let n = next_cron(&quarter, t).unwrap();
            assert!(n > t, "{n} after {t}");
            t = n + chrono::Duration::seconds(20);
            runs += 1;
        }
        // The quarters from 00:00 to 04:00, and the repeated hour's four.
        assert_eq!(runs, 21);
        // A fixed time runs once, at its first occurrence.
        let fixed = cron("30 1 * * *");
        let day = |d| NY.with_ymd_and_hms(2026, 11, d, 1, 30, 0).unwrap();
        assert_eq!(next_cron(&fixed, first(10, 0)), Some(first(30, 0)));
        assert_eq!(next_cron(&fixed, first(30, 40)), Some(day(2)));
        assert_eq!(next_cron(&fixed, second(10, 0)), Some(day(2)));
        // 2026-03-08 has no 02:00-02:59: a fixed time there runs at 03:00.
        let spring = |h, m| NY.with_ymd_and_hms(2026, 3, 8, h, m, 0).unwrap();
        let fixed = cron("30 2 * * *");
        assert_eq!(next_cron(&fixed, spring(1, 0)), Some(spring(3, 0)));
        assert_eq!(next_cron(&quarter, spring(1, 50)), Some(spring(3, 0)));
    }
}
