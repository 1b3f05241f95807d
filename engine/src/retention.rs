//! Retention policies: which snapshots `forget` keeps, and why.
//!
//! [`plan`] is a pure function of snapshot metadata, a [`Policy`], the time
//! zone that calendar buckets are cut in and the current time. It follows
//! restic's documented `forget` semantics (doc/060_forget.rst), so that
//! users can carry their policies over unchanged:
//!
//! - Snapshots are grouped (by host and paths unless [`GroupBy`] says
//!   otherwise) and the policy is applied to each group on its own.
//! - Within a group, snapshots are walked newest first. `--keep-last N`
//!   keeps the N newest; `--keep-hourly/daily/weekly/monthly/yearly N` keep
//!   the newest snapshot of each of the N newest calendar buckets (local
//!   hour, day, ISO week starting Monday, month, year) that hold a snapshot.
//!   [`Count::Unlimited`] keeps one per bucket for every bucket.
//! - If a counted option still has room when the walk reaches the oldest
//!   snapshot, the oldest is kept too ("oldest daily snapshot" when its
//!   bucket already had one): that keeps the longest history while the
//!   policy is not yet full (restic 0.17).
//! - `--keep-within D` keeps everything newer than D before the newest
//!   snapshot of the group (not before now); `--keep-within-<unit> D` keeps
//!   the newest snapshot per bucket within D. Snapshots dated in the future
//!   do not count as "the newest", and are therefore kept by these options.
//! - `--keep-tag a,b` keeps snapshots carrying all of `a` and `b`; several
//!   `--keep-tag` options are alternatives; `--keep-tag ''` keeps untagged
//!   snapshots.
//! - A snapshot is kept if any option keeps it; its reasons say which.
//!
//! On top of restic: a snapshot under legal hold is always kept, with the
//! reason "legal hold", whatever the policy says. Held snapshots still take
//! part in the policy (a held snapshot can be the "last snapshot"), so hold
//! only ever adds to what the policy keeps.
//!
//! Safety, as in restic: an empty policy is refused (it would otherwise keep
//! nothing, or everything, silently), and so is a policy that would leave a
//! group with no snapshot at all.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone,
    Timelike, Utc,
};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::snapshot::{Snapshot, has_tags};

/// The reason given for every snapshot kept because it is under legal hold.
pub const LEGAL_HOLD: &str = "legal hold";

/// How many buckets a `--keep-<unit>` option keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// This many buckets; 0 means the option is off.
    N(u32),
    /// Every bucket (`unlimited` or `-1` on the command line).
    Unlimited,
}

impl Default for Count {
    fn default() -> Self {
        Count::N(0)
    }
}

impl Count {
    fn active(self) -> bool {
        self != Count::N(0)
    }
}

impl FromStr for Count {
    type Err = Error;

    /// Parses `N`, `unlimited` or `-1` (restic's older spelling of unlimited).
    fn from_str(s: &str) -> Result<Count> {
        match s.trim() {
            "unlimited" | "-1" => Ok(Count::Unlimited),
            // More than any repository holds (restic takes 64-bit counts).
            t if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && t.parse::<u32>().is_err() => {
                Ok(Count::Unlimited)
            }
            t => t.parse::<u32>().map(Count::N).map_err(|_| {
                Error::InvalidInput(format!(
                    "invalid count {s:?}: expected a non-negative number, or `unlimited` (or -1) to keep all"
                ))
            }),
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::N(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("all"),
        }
    }
}

/// A calendar duration such as `1y5m7d2h` (years, months, days, hours), as
/// taken by `--keep-within*`. Years, months and days are calendar steps in
/// local time; hours are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duration {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl Duration {
    /// Whether all parts are zero (the option is off).
    pub fn is_zero(&self) -> bool {
        *self == Duration::default()
    }
}

impl FromStr for Duration {
    type Err = Error;

    /// Parses `1y5m7d2h`: numbers each followed by `y`, `m`, `d` or `h`, each
    /// unit at most once. Unlike restic, unknown units are an error rather
    /// than silently ignored.
    fn from_str(s: &str) -> Result<Duration> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "invalid duration {s:?}: {why} (expected numbers with units y, m, d, h, e.g. 1y5m7d2h)"
            ))
        };
        let mut d = Duration::default();
        let mut seen = String::new();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("expected a non-negative number"));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("number too large"))?;
            let Some(unit) = rest[digits..].chars().next() else {
                return Err(bad(&format!("no unit after {n}")));
            };
            if seen.contains(unit) {
                return Err(bad(&format!("unit {unit} given twice")));
            }
            seen.push(unit);
            match unit {
                'y' => d.years = n,
                'm' => d.months = n,
                'd' => d.days = n,
                'h' => d.hours = n,
                u => return Err(bad(&format!("unknown unit {u:?}"))),
            }
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

/// Parses one `--keep-tag` value: a comma-separated list of tags a snapshot
/// must all carry. `''` alone means "untagged"; mixing it with tags is
/// refused (restic's result for that depends on the order of the list).
pub fn parse_tag_list(s: &str) -> Result<Vec<String>> {
    let tags: Vec<String> = crate::snapshot::tag_parts(s).map(String::from).collect();
    let empties = tags.iter().filter(|t| t.is_empty()).count();
    if empties == tags.len() {
        return Ok(vec![String::new()]);
    }
    if empties > 0 {
        return Err(Error::InvalidInput(format!(
            "invalid tag list {s:?}: an empty tag (meaning \"untagged\") cannot be combined with other tags"
        )));
    }
    Ok(tags)
}

/// Which snapshots to keep. The default keeps nothing and is refused by
/// [`plan`]: at least one option must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--keep-last`: the N newest snapshots.
    pub last: Count,
    /// `--keep-hourly`: the newest of each of the N newest hours.
    pub hourly: Count,
    /// `--keep-daily`.
    pub daily: Count,
    /// `--keep-weekly` (ISO weeks, Monday to Sunday).
    pub weekly: Count,
    /// `--keep-monthly`.
    pub monthly: Count,
    /// `--keep-yearly`.
    pub yearly: Count,
    /// `--keep-within`: everything newer than this before the newest snapshot.
    pub within: Duration,
    /// `--keep-within-hourly`: the newest of each hour within this.
    pub within_hourly: Duration,
    /// `--keep-within-daily`.
    pub within_daily: Duration,
    /// `--keep-within-weekly`.
    pub within_weekly: Duration,
    /// `--keep-within-monthly`.
    pub within_monthly: Duration,
    /// `--keep-within-yearly`.
    pub within_yearly: Duration,
    /// `--keep-tag`: each entry is a list of tags that must all be present;
    /// a snapshot matching any entry is kept (see [`parse_tag_list`]).
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && self.within.is_zero()
            && self.counts().iter().all(|(c, ..)| !c.active())
            && self.withins().iter().all(|(d, ..)| d.is_zero())
    }

    fn counts(&self) -> [(Count, Unit, &'static str); 6] {
        [
            (self.last, Unit::Each, "latest"),
            (self.hourly, Unit::Hour, "hourly"),
            (self.daily, Unit::Day, "daily"),
            (self.weekly, Unit::Week, "weekly"),
            (self.monthly, Unit::Month, "monthly"),
            (self.yearly, Unit::Year, "yearly"),
        ]
    }

    fn withins(&self) -> [(Duration, Unit, &'static str); 5] {
        [
            (self.within_hourly, Unit::Hour, "hourly"),
            (self.within_daily, Unit::Day, "daily"),
            (self.within_weekly, Unit::Week, "weekly"),
            (self.within_monthly, Unit::Month, "monthly"),
            (self.within_yearly, Unit::Year, "yearly"),
        ]
    }
}

impl fmt::Display for Policy {
    /// A one-line summary in restic's words, e.g. `keep 4 daily snapshots`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let counts: Vec<String> = self
            .counts()
            .iter()
            .filter(|(c, ..)| c.active())
            .map(|(c, _, name)| format!("{c} {name}"))
            .collect();
        if !counts.is_empty() {
            parts.push(format!("{} snapshots", counts.join(", ")));
        }
        for (d, _, name) in self.withins() {
            if !d.is_zero() {
                parts.push(format!("{name} snapshots within {d}"));
            }
        }
        if !self.tags.is_empty() {
            // `--keep-tag ''` is the untagged ones; it read "with tags []".
            let untagged = |l: &[String]| l.len() == 1 && l[0].is_empty();
            let lists: Vec<String> = self
                .tags
                .iter()
                .filter(|l| !untagged(l))
                .map(|l| tag_list_str(l))
                .collect();
            if !lists.is_empty() {
                parts.push(format!("all snapshots with tags {}", lists.join(" or ")));
            }
            if self.tags.iter().any(|l| untagged(l)) {
                parts.push("all untagged snapshots".into());
            }
        }
        if !self.within.is_zero() {
            parts.push(format!(
                "all snapshots within {} of the newest",
                self.within
            ));
        }
        if parts.is_empty() {
            return f.write_str("keep nothing (empty policy)");
        }
        write!(f, "keep {}", parts.join(", "))
    }
}

fn tag_list_str(l: &[String]) -> String {
    format!("[{}]", l.join(", "))
}

/// Which snapshot attributes separate groups (`--group-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the set of backed-up paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    /// By host and paths, as restic does.
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    /// Parses a comma list of `host`, `paths`, `tags` (singular forms too);
    /// the empty string means no grouping.
    fn from_str(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim) {
            match part {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                "" => {}
                other => {
                    return Err(Error::InvalidInput(format!(
                        "unknown grouping option {other:?}: use a comma list of host, paths, tags, or '' for no grouping"
                    )));
                }
            }
        }
        Ok(g)
    }
}

/// What identifies a group: the attributes grouped by (`None` when not).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    /// Host name.
    pub hostname: Option<String>,
    /// Backed-up paths, sorted.
    pub paths: Option<Vec<String>>,
    /// Tags, sorted, but [`crate::snapshot::MARKER_TAGS`]: a snapshot
    /// rewritten or repaired stays in its group (alone in one of its own,
    /// every policy kept it for good).
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(c: &Candidate, by: GroupBy) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let user_tags = |v: &[String]| {
            let mut v: Vec<String> = crate::snapshot::user_tags(v).cloned().collect();
            v.sort();
            // Records written with a tag twice are of the group without.
            v.dedup();
            v
        };
        GroupKey {
            hostname: by.host.then(|| c.hostname.clone()),
            paths: by.paths.then(|| sorted(&c.paths)),
            tags: by.tags.then(|| user_tags(&c.tags)),
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.hostname {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths [{}]", p.join(" ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            return f.write_str("all snapshots");
        }
        f.write_str(&parts.join(", "))
    }
}

/// The metadata of one snapshot that retention looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Snapshot ID.
    pub id: Id,
    /// When it was taken.
    pub time: DateTime<FixedOffset>,
    /// Host.
    pub hostname: String,
    /// Backed-up paths.
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Under legal hold: never removed.
    pub hold: bool,
    /// Partial: a source was missing or entries could not be read.
    pub partial: bool,
}

impl Candidate {
    /// The candidate for a stored snapshot record.
    pub fn of(id: Id, s: &Snapshot) -> Candidate {
        Candidate {
            id,
            time: s.time,
            hostname: s.hostname.clone(),
            paths: s.paths.clone(),
            tags: s.tags.clone(),
            hold: s.hold,
            partial: s.partial,
        }
    }
}

/// Snapshots in groups as `by` says, groups in key order and each group
/// in the order given; with `latest`, only the newest `latest` of each
/// host and set of paths within a group (`cairn snapshots --group-by
/// --latest`, as restic's).
pub fn group_snapshots(
    snaps: Vec<(Id, Snapshot)>,
    by: GroupBy,
    latest: Option<usize>,
) -> Vec<(GroupKey, Vec<(Id, Snapshot)>)> {
    let mut groups: BTreeMap<GroupKey, Vec<(Id, Snapshot)>> = BTreeMap::new();
    for (id, s) in snaps {
        let key = GroupKey::of(&Candidate::of(id, &s), by);
        groups.entry(key).or_default().push((id, s));
    }
    let Some(n) = latest else {
        return groups.into_iter().collect();
    };
    let sources = GroupBy {
        host: true,
        paths: true,
        tags: false,
    };
    groups
        .into_iter()
        .map(|(key, members)| {
            // The newest `n` of each source, kept in the order given.
            let mut newest: Vec<(DateTime<FixedOffset>, usize, GroupKey)> = members
                .iter()
                .enumerate()
                .map(|(i, (id, s))| (s.time, i, GroupKey::of(&Candidate::of(*id, s), sources)))
                .collect();
            newest.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
            let mut taken: BTreeMap<GroupKey, usize> = BTreeMap::new();
            let mut keep = vec![false; members.len()];
            for (_, i, source) in newest {
                let count = taken.entry(source).or_default();
                if *count < n {
                    *count += 1;
                    keep[i] = true;
                }
            }
            let kept = members
                .into_iter()
                .zip(keep)
                .filter_map(|(m, k)| k.then_some(m))
                .collect();
            (key, kept)
        })
        .collect()
}

/// One snapshot and why it is kept (empty for removed snapshots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub snapshot: Candidate,
    /// Why it is kept, in restic's words ("daily snapshot", "within 1y", ...).
    pub reasons: Vec<String>,
}

/// The outcome for one group; both lists oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    /// What the group's snapshots have in common.
    pub key: GroupKey,
    /// Snapshots kept, with reasons.
    pub keep: Vec<Decision>,
    /// Snapshots to remove.
    pub remove: Vec<Decision>,
}

/// Groups `snapshots` and decides for each whether `policy` keeps it.
///
/// Calendar buckets use the wall clock each snapshot recorded (its own UTC
/// offset, as restic does), so that a server running `forget` in another
/// time zone keeps what the hosts' own `backup --keep-*` keep.
/// `--keep-within` arithmetic runs on the newest snapshot's wall clock: in
/// `tz` (the local time zone in the CLI, with its daylight saving changes)
/// where `tz` had the offset that snapshot recorded, else in that fixed
/// offset. `now` only decides which snapshots lie in the future. Groups
/// come out sorted by key.
///
/// Fails with [`Error::InvalidInput`] if the policy is empty, or if it would
/// remove snapshots of a group and keep none of them by policy (legal holds
/// and dates ahead are not counted, so that they do not hide a policy that
/// matches nothing).
pub fn plan<Tz: TimeZone>(
    snapshots: &[Candidate],
    policy: &Policy,
    group_by: GroupBy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Result<Vec<GroupPlan>> {
    if policy.is_empty() {
        return Err(Error::InvalidInput(
            "no policy was specified, no snapshots will be removed: give at least one --keep-* option, or the IDs of the snapshots to remove".into(),
        ));
    }
    let mut groups: BTreeMap<GroupKey, Vec<Candidate>> = BTreeMap::new();
    for c in snapshots {
        groups
            .entry(GroupKey::of(c, group_by))
            .or_default()
            .push(c.clone());
    }
    let mut out = Vec::with_capacity(groups.len());
    for (key, list) in groups {
        let (keep, remove) = apply(list, policy, tz, now);
        // Kept for a hold or a date ahead is not kept by the policy.
        let by_policy = |d: &Decision| {
            d.reasons
                .iter()
                .any(|r| r != LEGAL_HOLD && r != DATED_AHEAD)
        };
        // A group it removes nothing from (held or dated ahead, all of it)
        // is no reason to refuse: that stopped every forget of the
        // repository over one host whose clock ran ahead.
        if !remove.is_empty() && !keep.iter().any(by_policy) {
            return Err(Error::InvalidInput(format!(
                "refusing to remove every snapshot of group \"{key}\": the policy keeps none of them; remove them by ID if that is really meant"
            )));
        }
        out.push(GroupPlan { key, keep, remove });
    }
    Ok(out)
}

/// What the reasons of a complete snapshot kept only for being complete
/// end in (see [`apply`]).
pub const AMONG_COMPLETE: &str = " (among complete snapshots)";

/// Applies `policy` to one group (no grouping, no safety checks); returns
/// (keep, remove), each oldest first.
///
/// Where the group holds partial snapshots (a source missing, entries
/// unreadable), the policy also runs over its complete ones alone, and
/// keeps what either run keeps: partial snapshots must not take the
/// complete ones' places (a week of nightly backups without their USB
/// disk made `--keep-daily 7` forget every snapshot that still held it),
/// yet go as any others once newer snapshots push them out.
pub fn apply<Tz: TimeZone>(
    mut list: Vec<Candidate>,
    policy: &Policy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> (Vec<Decision>, Vec<Decision>) {
    // Newest first; equal times in the reverse of the repository's listing
    // order, so that the newest here is what `latest` resolves to.
    list.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let mut reasons = policy_reasons(&list, policy, tz, now);
    if list.iter().any(|c| c.partial) {
        let complete: Vec<usize> = (0..list.len()).filter(|&i| !list[i].partial).collect();
        let subset: Vec<Candidate> = complete.iter().map(|&i| list[i].clone()).collect();
        let alone = policy_reasons(&subset, policy, tz, now);
        for (i, mut r) in complete.into_iter().zip(alone) {
            if reasons[i].is_empty() && !r.is_empty() {
                for reason in r.iter_mut() {
                    reason.push_str(AMONG_COMPLETE);
                }
                reasons[i] = r;
            }
        }
    }
    let (mut keep, mut remove) = (Vec::new(), Vec::new());
    for (c, mut reasons) in list.into_iter().zip(reasons).rev() {
        if c.hold {
            reasons.push(LEGAL_HOLD.to_string());
        }
        let d = Decision {
            snapshot: c,
            reasons,
        };
        if d.reasons.is_empty() {
            remove.push(d);
        } else {
            keep.push(d);
        }
    }
    (keep, remove)
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Each,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    /// The bucket a snapshot (the `nr`-th newest) falls in.
    fn bucket(self, t: &NaiveDateTime, nr: usize) -> i64 {
        let (y, m, d, h) = (
            t.year() as i64,
            t.month() as i64,
            t.day() as i64,
            t.hour() as i64,
        );
        match self {
            Unit::Each => nr as i64,
            Unit::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Unit::Day => (y * 100 + m) * 100 + d,
            Unit::Week => {
                let w = t.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }
            Unit::Month => y * 100 + m,
            Unit::Year => y,
        }
    }
}

/// The reason a snapshot dated ahead of now is kept.
pub const DATED_AHEAD: &str = "dated ahead of now";

/// The reasons each snapshot of `list` (newest first) is kept by the policy
/// alone; an empty list means remove.
fn policy_reasons<Tz: TimeZone>(
    list: &[Candidate],
    policy: &Policy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Vec<Vec<String>> {
    // "Newest" ignores snapshots dated in the future, so a clock mistake on
    // one host cannot make every real snapshot fall outside --keep-within.
    let latest = list.iter().map(|c| c.time).filter(|t| *t < now).max();
    // Each in its own offset: a bucket is a day (hour, ...) where the
    // snapshot was taken.
    let local: Vec<NaiveDateTime> = list.iter().map(|c| c.time.naive_local()).collect();
    let within = |i: usize, d: &Duration| match &latest {
        None => true,
        Some(l) => cutoff(l, d, tz).is_none_or(|c| list[i].time > c),
    };

    // The buckets each option has kept a snapshot of. Not only the last
    // one, as restic compares: with the snapshots of one group taken in
    // different offsets (hosts in other zones, a laptop that travels),
    // newest first is not day after day, and a day met again kept a second
    // snapshot of it while an older day's only one went.
    let mut counts: Vec<(Count, Unit, String, HashSet<i64>)> = policy
        .counts()
        .iter()
        .map(|&(c, u, name)| {
            let reason = match u {
                Unit::Each => "last snapshot".to_string(),
                _ => format!("{name} snapshot"),
            };
            (c, u, reason, HashSet::new())
        })
        .collect();
    let mut withins: Vec<(Duration, Unit, &str, HashSet<i64>)> = policy
        .withins()
        .iter()
        .map(|&(d, u, name)| (d, u, name, HashSet::new()))
        .collect();

    let oldest = list.len().saturating_sub(1);
    let mut out = Vec::with_capacity(list.len());
    for (nr, c) in list.iter().enumerate() {
        let mut reasons = Vec::new();
        // Kept, and not counted: taken while its host's clock ran ahead,
        // it would stand for the newest and push out every real snapshot
        // (`--keep-last 1` removed each new backup, watch the one it had
        // just written).
        if crate::snapshot::dated_ahead(&c.time, now) {
            reasons.push(DATED_AHEAD.to_string());
            out.push(reasons);
            continue;
        }
        for l in &policy.tags {
            if has_tags(&c.tags, l) {
                reasons.push(format!("has tags {}", tag_list_str(l)));
            }
        }
        if !policy.within.is_zero() && within(nr, &policy.within) {
            reasons.push(format!("within {}", policy.within));
        }
        for (count, unit, reason, seen) in counts.iter_mut() {
            if !count.active() {
                continue;
            }
            let val = unit.bucket(&local[nr], nr);
            // The oldest snapshot is kept while the option still has room.
            let new = seen.insert(val);
            if new || nr == oldest {
                let prefix = if new { "" } else { "oldest " };
                reasons.push(format!("{prefix}{reason}"));
                if let Count::N(n) = count {
                    *n -= 1;
                }
            }
        }
        for (dur, unit, name, seen) in withins.iter_mut() {
            if dur.is_zero() || !within(nr, dur) {
                continue;
            }
            // The oldest within the duration is kept too, as restic does.
            let val = unit.bucket(&local[nr], nr);
            let new = seen.insert(val);
            if new || nr == oldest {
                let prefix = if new { "" } else { "oldest " };
                reasons.push(format!("{prefix}{name} within {dur}"));
            }
        }
        out.push(reasons);
    }
    out
}

/// `latest` minus `d`: years, months and days on its wall clock (normalised
/// like Go's `AddDate`, so 31 March minus one month is 3 March, as in
/// restic), then hours as exact time. The wall clock is `tz`'s, daylight
/// saving changes included, where `tz` has the offset `latest` recorded,
/// else that fixed offset's: how Go reads a recorded time, and so restic.
/// `None` if out of range, which means "everything is within".
fn cutoff<Tz: TimeZone>(
    latest: &DateTime<FixedOffset>,
    d: &Duration,
    tz: &Tz,
) -> Option<DateTime<FixedOffset>> {
    use chrono::Offset;
    if tz.offset_from_utc_datetime(&latest.naive_utc()).fix() == *latest.offset() {
        cutoff_in(latest, d, tz)
    } else {
        cutoff_in(latest, d, latest.offset())
    }
}

/// [`cutoff`] on the wall clock of `tz`.
fn cutoff_in<Tz: TimeZone>(
    latest: &DateTime<FixedOffset>,
    d: &Duration,
    tz: &Tz,
) -> Option<DateTime<FixedOffset>> {
    let wall = latest.with_timezone(tz).naive_local();
    let months =
        wall.year() as i64 * 12 + wall.month0() as i64 - d.years as i64 * 12 - d.months as i64;
    let first = NaiveDate::from_ymd_opt(
        i32::try_from(months.div_euclid(12)).ok()?,
        months.rem_euclid(12) as u32 + 1,
        1,
    )?;
    let date =
        first.checked_add_signed(TimeDelta::try_days(wall.day() as i64 - 1 - d.days as i64)?)?;
    let naive = date.and_time(wall.time());
    let t = match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.fixed_offset(),
        LocalResult::Ambiguous(a, _) => a.fixed_offset(),
        // A wall-clock time skipped by a DST change: read it with the
        // offset of the newest snapshot.
        LocalResult::None => latest.offset().from_local_datetime(&naive).single()?,
    };
    t.checked_sub_signed(TimeDelta::try_hours(d.hours as i64)?)
}
