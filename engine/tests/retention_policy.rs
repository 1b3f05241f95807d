//! Retention policy tests: cases worked out from restic's documentation
//! (doc/060_forget.rst) and its issue tracker, edge cases, and properties
//! that must hold for any list of snapshots.

use std::collections::BTreeSet;

use cairn_engine::Id;
use cairn_engine::retention::{
    Candidate, Count, Decision, Duration, GroupBy, Policy, apply, parse_tag_list, plan,
};
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

fn t(s: &str) -> DateTime<FixedOffset> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .and_utc()
        .fixed_offset()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn snap(n: usize, time: &str) -> Candidate {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(n as u64).to_be_bytes());
    Candidate {
        id: Id(id),
        time: t(time),
        hostname: "mopped".into(),
        paths: vec!["/home/user/work".into()],
        tags: vec![],
        hold: false,
        partial: false,
    }
}

fn snaps(times: &[&str]) -> Vec<Candidate> {
    times.iter().enumerate().map(|(i, s)| snap(i, s)).collect()
}

fn fmt(d: &Decision) -> String {
    d.snapshot.time.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Applies `p` to one group in UTC; returns (kept times with reasons, removed times).
fn run(list: &[Candidate], p: &Policy) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let (keep, remove) = apply(list.to_vec(), p, &Utc, now());
    (
        keep.iter().map(|d| (fmt(d), d.reasons.clone())).collect(),
        remove.iter().map(fmt).collect(),
    )
}

fn kept_times(list: &[Candidate], p: &Policy) -> Vec<String> {
    run(list, p).0.into_iter().map(|(t, _)| t).collect()
}

fn reasons(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

/// restic's documentation example: one backup every Sunday for 12 weeks,
/// `forget --keep-daily 4` keeps the last four Sundays.
#[test]
fn doc_example_keep_daily_4_on_twelve_sundays() {
    let list = snaps(&[
        "2019-09-01 11:00:00",
        "2019-09-08 11:00:00",
        "2019-09-15 11:00:00",
        "2019-09-22 11:00:00",
        "2019-09-29 11:00:00",
        "2019-10-06 11:00:00",
        "2019-10-13 11:00:00",
        "2019-10-20 11:00:00",
        "2019-10-27 11:00:00",
        "2019-11-03 11:00:00",
        "2019-11-10 11:00:00",
        "2019-11-17 11:00:00",
    ]);
    let p = Policy {
        daily: Count::N(4),
        ..Policy::default()
    };
    let (keep, remove) = run(&list, &p);
    let daily = reasons(&["daily snapshot"]);
    assert_eq!(
        keep,
        vec![
            ("2019-10-27 11:00:00".into(), daily.clone()),
            ("2019-11-03 11:00:00".into(), daily.clone()),
            ("2019-11-10 11:00:00".into(), daily.clone()),
            ("2019-11-17 11:00:00".into(), daily.clone()),
        ]
    );
    assert_eq!(remove.len(), 8);
    assert_eq!(remove[0], "2019-09-01 11:00:00");
    assert_eq!(remove[7], "2019-10-20 11:00:00");
}

/// The documentation's "one backup every day" example, over 20 years instead
/// of 100: `--keep-daily 7 --keep-weekly 5 --keep-monthly 12 --keep-yearly 75`.
#[test]
fn doc_example_daily_weekly_monthly_yearly() {
    let mut list = Vec::new();
    let mut day = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
    let last = chrono::NaiveDate::from_ymd_opt(2019, 12, 31).unwrap(); // a Tuesday
    while day <= last {
        list.push(snap(
            list.len(),
            &format!("{} 12:00:00", day.format("%Y-%m-%d")),
        ));
        day = day.succ_opt().unwrap();
    }
    let p = Policy {
        daily: Count::N(7),
        weekly: Count::N(5),
        monthly: Count::N(12),
        yearly: Count::N(75),
        ..Policy::default()
    };
    let (keep, _) = run(&list, &p);
    let find = |d: &str| {
        keep.iter()
            .find(|(t, _)| t.starts_with(d))
            .unwrap_or_else(|| panic!("{d} not kept"))
            .1
            .clone()
    };
    // Seven dailies, 25-31 December; the newest is also the newest of its
    // ISO week, month and year.
    assert_eq!(
        find("2019-12-31"),
        reasons(&[
            "daily snapshot",
            "weekly snapshot",
            "monthly snapshot",
            "yearly snapshot"
        ])
    );
    assert_eq!(
        find("2019-12-29"),
        reasons(&["daily snapshot", "weekly snapshot"])
    );
    assert_eq!(find("2019-12-25"), reasons(&["daily snapshot"]));
    // Three more Sundays complete the five weeks.
    for d in ["2019-12-22", "2019-12-15", "2019-12-08"] {
        assert_eq!(find(d), reasons(&["weekly snapshot"]), "{d}");
    }
    // Eleven more month ends, 19 more year ends...
    assert_eq!(find("2019-01-31"), reasons(&["monthly snapshot"]));
    assert_eq!(find("2000-12-31"), reasons(&["yearly snapshot"]));
    // ... and, since --keep-yearly still has room, the oldest snapshot
    // (restic 0.17 and later).
    assert_eq!(find("2000-01-01"), reasons(&["oldest yearly snapshot"]));
    assert_eq!(keep.len(), 7 + 3 + 11 + 19 + 1);
}

/// restic issue 4806: three snapshots in one day, two in the same hour,
/// `--keep-hourly 24` keeps all three; the oldest because the option still
/// had room, and it says so.
#[test]
fn same_bucket_newest_wins_and_oldest_is_kept_while_room_is_left() {
    let list = snaps(&[
        "2024-05-17 09:36:51",
        "2024-05-17 09:41:06",
        "2024-05-17 10:05:00",
    ]);
    let hourly = |n| Policy {
        hourly: Count::N(n),
        ..Policy::default()
    };
    assert_eq!(
        run(&list, &hourly(24)).0,
        vec![
            (
                "2024-05-17 09:36:51".into(),
                reasons(&["oldest hourly snapshot"])
            ),
            ("2024-05-17 09:41:06".into(), reasons(&["hourly snapshot"])),
            ("2024-05-17 10:05:00".into(), reasons(&["hourly snapshot"])),
        ]
    );
    // With exactly two slots, both go to the two hours: no room for the oldest.
    assert_eq!(
        run(&list, &hourly(2)),
        (
            vec![
                ("2024-05-17 09:41:06".into(), reasons(&["hourly snapshot"])),
                ("2024-05-17 10:05:00".into(), reasons(&["hourly snapshot"])),
            ],
            vec!["2024-05-17 09:36:51".into()]
        )
    );
    // One slot: only the newest of the newest hour.
    assert_eq!(
        kept_times(&list, &hourly(1)),
        vec!["2024-05-17 10:05:00".to_string()]
    );
}

#[test]
fn unlimited_keeps_one_per_bucket_and_the_oldest() {
    let mut list = snaps(&[
        "2021-01-01 10:00:00",
        "2021-01-02 10:00:00",
        "2021-01-02 20:00:00",
        "2021-01-03 09:00:00",
        "2021-01-03 21:00:00",
    ]);
    let p = Policy {
        daily: Count::Unlimited,
        ..Policy::default()
    };
    assert_eq!(
        kept_times(&list, &p),
        vec![
            "2021-01-01 10:00:00",
            "2021-01-02 20:00:00",
            "2021-01-03 21:00:00"
        ]
    );
    // An older snapshot on the first day: unlimited always has room left.
    list.push(snap(99, "2021-01-01 08:00:00"));
    let (keep, remove) = run(&list, &p);
    assert_eq!(
        keep[0],
        (
            "2021-01-01 08:00:00".into(),
            reasons(&["oldest daily snapshot"])
        )
    );
    assert_eq!(remove, vec!["2021-01-02 10:00:00", "2021-01-03 09:00:00"]);
}

#[test]
fn policies_are_unioned_with_all_reasons() {
    let list = snaps(&[
        "2021-01-01 10:00:00",
        "2021-01-02 10:00:00",
        "2021-01-02 20:00:00",
        "2021-01-03 09:00:00",
        "2021-01-03 21:00:00",
    ]);
    let p = Policy {
        last: Count::N(2),
        daily: Count::N(2),
        ..Policy::default()
    };
    assert_eq!(
        run(&list, &p),
        (
            vec![
                ("2021-01-02 20:00:00".into(), reasons(&["daily snapshot"])),
                ("2021-01-03 09:00:00".into(), reasons(&["last snapshot"])),
                (
                    "2021-01-03 21:00:00".into(),
                    reasons(&["last snapshot", "daily snapshot"])
                ),
            ],
            vec!["2021-01-01 10:00:00".into(), "2021-01-02 10:00:00".into()]
        )
    );
}

#[test]
fn keep_within_is_relative_to_the_newest_snapshot_not_now() {
    let list = snaps(&[
        "2019-12-31 12:00:00",
        "2020-01-01 12:00:00", // exactly 1y before the newest: not "within"
        "2020-01-01 12:00:01",
        "2020-06-01 00:00:00",
        "2021-01-01 12:00:00",
    ]);
    let p = Policy {
        within: "1y".parse().unwrap(),
        ..Policy::default()
    };
    // "now" is 2026: relative to now, nothing would be within a year.
    assert_eq!(
        run(&list, &p),
        (
            vec![
                ("2020-01-01 12:00:01".into(), reasons(&["within 1y"])),
                ("2020-06-01 00:00:00".into(), reasons(&["within 1y"])),
                ("2021-01-01 12:00:00".into(), reasons(&["within 1y"])),
            ],
            vec!["2019-12-31 12:00:00".into(), "2020-01-01 12:00:00".into()]
        )
    );
    // Hours are exact; the unit order in the output is normalised.
    let p = Policy {
        within: "2h0d".parse().unwrap(),
        ..Policy::default()
    };
    let list = snaps(&[
        "2021-01-01 09:59:59",
        "2021-01-01 10:00:01",
        "2021-01-01 12:00:00",
    ]);
    let (keep, _) = run(&list, &p);
    assert_eq!(keep.len(), 2);
    assert_eq!(keep[0].1, reasons(&["within 2h"]));
}

/// Calendar arithmetic follows Go's AddDate, as restic does: 31 March minus
/// one month is "31 February", which is 3 March; 29 February 2020 minus one
/// year is 1 March 2019.
#[test]
fn keep_within_month_and_year_arithmetic_matches_restic() {
    let p = |d: &str| Policy {
        within: d.parse().unwrap(),
        ..Policy::default()
    };
    let list = snaps(&[
        "2021-03-02 23:00:00",
        "2021-03-03 12:00:00",
        "2021-03-03 12:00:01",
        "2021-03-31 12:00:00",
    ]);
    assert_eq!(
        kept_times(&list, &p("1m")),
        vec!["2021-03-03 12:00:01", "2021-03-31 12:00:00"]
    );
    let list = snaps(&[
        "2019-02-28 13:00:00",
        "2019-03-01 13:00:00",
        "2020-02-29 12:00:00",
    ]);
    assert_eq!(
        kept_times(&list, &p("1y")),
        vec!["2019-03-01 13:00:00", "2020-02-29 12:00:00"]
    );
}

#[test]
fn future_snapshots_do_not_count_as_newest_and_are_kept_by_within() {
    let list = snaps(&[
        "2019-01-01 00:00:00",
        "2025-11-15 00:00:00",
        "2025-12-01 00:00:00",
        "2030-01-01 00:00:00", // after now(): a wrong clock somewhere
    ]);
    let p = Policy {
        within: "1m".parse().unwrap(),
        ..Policy::default()
    };
    assert_eq!(
        run(&list, &p),
        (
            vec![
                ("2025-11-15 00:00:00".into(), reasons(&["within 1m"])),
                ("2025-12-01 00:00:00".into(), reasons(&["within 1m"])),
                // Kept, but for being dated ahead: no option counts it.
                (
                    "2030-01-01 00:00:00".into(),
                    reasons(&["dated ahead of now"])
                ),
            ],
            vec!["2019-01-01 00:00:00".into()]
        )
    );
}

#[test]
fn keep_within_daily_keeps_the_newest_per_day_inside_the_window() {
    let mut list = Vec::new();
    for day in 1..=10 {
        for hour in [0, 6, 12, 18] {
            list.push(snap(
                list.len(),
                &format!("2021-01-{day:02} {hour:02}:00:00"),
            ));
        }
    }
    let p = Policy {
        within_daily: "3d".parse().unwrap(),
        ..Policy::default()
    };
    let within = reasons(&["daily within 3d"]);
    assert_eq!(
        run(&list, &p).0,
        vec![
            ("2021-01-08 18:00:00".into(), within.clone()),
            ("2021-01-09 18:00:00".into(), within.clone()),
            ("2021-01-10 18:00:00".into(), within.clone()),
        ]
    );
    // The GFS scheme of docs/retention.md on the same list.
    let p = Policy {
        within_hourly: "1d".parse().unwrap(),
        within_daily: "5d".parse().unwrap(),
        within_weekly: "12m".parse().unwrap(),
        ..Policy::default()
    };
    let (keep, _) = run(&list, &p);
    let kept: Vec<&str> = keep.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        kept,
        vec![
            "2021-01-01 00:00:00", // oldest weekly within 12m (the week of 28 Dec to 3 Jan)
            "2021-01-03 18:00:00", // weekly: Sunday ends ISO week 53 of 2020
            "2021-01-06 18:00:00", // daily within 5d: after 05 18:00
            "2021-01-07 18:00:00",
            "2021-01-08 18:00:00",
            "2021-01-09 18:00:00", // hourly within 1d starts after 09 18:00
            "2021-01-10 00:00:00",
            "2021-01-10 06:00:00",
            "2021-01-10 12:00:00",
            "2021-01-10 18:00:00",
        ]
    );
    assert_eq!(keep[0].1, reasons(&["oldest weekly within 12m"]));
    assert_eq!(
        keep[9].1,
        reasons(&["hourly within 1d", "daily within 5d", "weekly within 12m"])
    );
}

#[test]
fn keep_tag_lists_need_all_tags_and_alternatives_any() {
    let mut list = snaps(&[
        "2021-01-01 00:00:00",
        "2021-01-02 00:00:00",
        "2021-01-03 00:00:00",
        "2021-01-04 00:00:00",
    ]);
    list[0].tags = vec!["foo".into()];
    list[1].tags = vec!["bar".into(), "foo".into()];
    list[2].tags = vec!["bar".into()];
    let tags = |lists: &[&str]| Policy {
        tags: lists.iter().map(|l| parse_tag_list(l).unwrap()).collect(),
        ..Policy::default()
    };
    assert_eq!(
        run(&list, &tags(&["foo, bar"])).0,
        vec![(
            "2021-01-02 00:00:00".into(),
            reasons(&["has tags [foo, bar]"])
        )]
    );
    assert_eq!(
        run(&list, &tags(&["foo", "bar"])).0,
        vec![
            ("2021-01-01 00:00:00".into(), reasons(&["has tags [foo]"])),
            (
                "2021-01-02 00:00:00".into(),
                reasons(&["has tags [foo]", "has tags [bar]"])
            ),
            ("2021-01-03 00:00:00".into(), reasons(&["has tags [bar]"])),
        ]
    );
    // '' keeps untagged snapshots only.
    assert_eq!(
        run(&list, &tags(&[""])).0,
        vec![("2021-01-04 00:00:00".into(), reasons(&["has tags []"]))]
    );
    assert!(parse_tag_list("foo,,bar").is_err());
    assert!(parse_tag_list(",foo").is_err());
    assert_eq!(parse_tag_list(" , ").unwrap(), vec![String::new()]);
}

#[test]
fn legal_hold_is_always_kept_and_says_so() {
    let mut list = snaps(&[
        "2021-01-01 00:00:00",
        "2021-01-02 00:00:00",
        "2021-01-03 00:00:00",
        "2021-01-04 00:00:00",
    ]);
    list[0].hold = true;
    let p = Policy {
        last: Count::N(1),
        ..Policy::default()
    };
    assert_eq!(
        run(&list, &p),
        (
            vec![
                ("2021-01-01 00:00:00".into(), reasons(&["legal hold"])),
                ("2021-01-04 00:00:00".into(), reasons(&["last snapshot"])),
            ],
            vec!["2021-01-02 00:00:00".into(), "2021-01-03 00:00:00".into()]
        )
    );
    // A held snapshot takes part in the policy like any other.
    list[0].hold = false;
    list[3].hold = true;
    assert_eq!(
        run(&list, &p).0,
        vec![(
            "2021-01-04 00:00:00".into(),
            reasons(&["last snapshot", "legal hold"])
        )]
    );
}

#[test]
fn empty_policies_and_policies_that_keep_nothing_are_refused() {
    let mut list = snaps(&["2021-01-01 00:00:00", "2021-01-02 00:00:00"]);
    let err = plan(&list, &Policy::default(), GroupBy::default(), &Utc, now()).unwrap_err();
    assert!(err.to_string().contains("no policy was specified"), "{err}");
    // --keep-last 0 and --keep-within 0d are "not given".
    let zero = Policy {
        last: Count::N(0),
        within: "0d".parse().unwrap(),
        ..Policy::default()
    };
    assert!(zero.is_empty());
    assert!(plan(&list, &zero, GroupBy::default(), &Utc, now()).is_err());
    // Any single option is a policy.
    for one in [
        Policy {
            last: Count::N(1),
            ..Policy::default()
        },
        Policy {
            yearly: Count::Unlimited,
            ..Policy::default()
        },
        Policy {
            within: "1h".parse().unwrap(),
            ..Policy::default()
        },
        Policy {
            within_monthly: "1y".parse().unwrap(),
            ..Policy::default()
        },
        Policy {
            tags: vec![vec![String::new()]],
            ..Policy::default()
        },
    ] {
        assert!(!one.is_empty(), "{one:?}");
        plan(&list, &one, GroupBy::default(), &Utc, now()).unwrap();
    }
    // A tag no snapshot has would empty the group.
    let tag = Policy {
        tags: vec![vec!["nightly".into()]],
        ..Policy::default()
    };
    let err = plan(&list, &tag, GroupBy::default(), &Utc, now()).unwrap_err();
    assert!(
        err.to_string().contains(
            "refusing to remove every snapshot of group \"host mopped, paths [/home/user/work]\""
        ),
        "{err}"
    );
    // ... even if a legal hold would keep one of them.
    list[0].hold = true;
    assert!(plan(&list, &tag, GroupBy::default(), &Utc, now()).is_err());
}

#[test]
fn grouping_by_host_paths_tags_or_nothing() {
    let mut list = snaps(&[
        "2021-01-01 00:00:00",
        "2021-01-02 00:00:00",
        "2021-01-03 00:00:00",
        "2021-01-04 00:00:00",
    ]);
    list[0].hostname = "other".into();
    list[1].hostname = "other".into();
    list[1].paths = vec!["/b".into(), "/a".into()];
    list[1].tags = vec!["x".into()];
    list[2].paths = vec!["/a".into(), "/b".into()];
    list[2].tags = vec!["x".into()];
    let last1 = Policy {
        last: Count::N(1),
        ..Policy::default()
    };
    let kept = |by: &str| -> (usize, BTreeSet<String>) {
        let groups = plan(&list, &last1, by.parse().unwrap(), &Utc, now()).unwrap();
        let kept = groups.iter().flat_map(|g| g.keep.iter().map(fmt)).collect();
        (groups.len(), kept)
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(GroupBy::default(), "host,paths".parse().unwrap());
    // host+paths: {other /home/user/work}, {other [/a /b]}, {mopped [/a /b]}, {mopped /home/user/work}
    assert_eq!(kept("host,paths").0, 4);
    // paths alone: the /a /b group spans hosts; path order does not matter.
    assert_eq!(
        kept("paths"),
        (2, set(&["2021-01-03 00:00:00", "2021-01-04 00:00:00"]))
    );
    assert_eq!(
        kept("tags"),
        (2, set(&["2021-01-03 00:00:00", "2021-01-04 00:00:00"]))
    );
    assert_eq!(
        kept("host"),
        (2, set(&["2021-01-02 00:00:00", "2021-01-04 00:00:00"]))
    );
    assert_eq!(kept(""), (1, set(&["2021-01-04 00:00:00"])));
    let groups = plan(&list, &last1, "host,tags".parse().unwrap(), &Utc, now()).unwrap();
    assert_eq!(groups[0].key.to_string(), "host mopped, tags []");
    let groups = plan(&list, &last1, "".parse().unwrap(), &Utc, now()).unwrap();
    assert_eq!(groups[0].key.to_string(), "all snapshots");
    assert!("host,colour".parse::<GroupBy>().is_err());
}

#[test]
fn buckets_use_the_wall_clock_each_snapshot_recorded() {
    // Three backups of a host two hours east of UTC, its 21:00 being 23:00
    // UTC, and 01:30 the next day 23:30 UTC.
    let east = FixedOffset::east_opt(2 * 3600).unwrap();
    let mut list = snaps(&[
        "2021-01-01 10:00:00",
        "2021-01-01 21:00:00",
        "2021-01-01 23:30:00",
    ]);
    for c in &mut list {
        c.time = c.time.with_timezone(&east);
    }
    let p = Policy {
        daily: Count::N(2),
        ..Policy::default()
    };
    // Wherever `forget` runs, 1 and 2 January of the host: the newest of
    // each day. (Run in UTC, all three shared one day: a server kept
    // other snapshots than the host's own `backup --keep-daily`.)
    let expect = vec!["2021-01-01 21:00:00", "2021-01-01 23:30:00"];
    for tz in [
        FixedOffset::east_opt(0).unwrap(),
        east,
        FixedOffset::west_opt(5 * 3600).unwrap(),
    ] {
        let (keep, _) = apply(list.clone(), &p, &tz, now());
        let kept: Vec<String> = keep
            .iter()
            .map(|d| d.snapshot.time.naive_utc().to_string())
            .collect();
        assert_eq!(kept, expect, "forget run at {tz}");
    }
}

#[test]
fn keep_within_counts_months_on_the_newest_snapshots_clock() {
    // A host two hours east of UTC: its newest backup is at 01:00 on
    // 1 April, still 31 March in UTC.
    let east = FixedOffset::east_opt(2 * 3600).unwrap();
    let at = |m: u32, d: u32, h: u32| east.with_ymd_and_hms(2025, m, d, h, 0, 0).unwrap();
    let mut list = snaps(&["2000-01-01 00:00:00", "2000-01-01 00:00:00"]);
    list[0].time = at(3, 1, 12);
    list[1].time = at(4, 1, 1);
    let p = Policy {
        within: Duration {
            months: 1,
            ..Duration::default()
        },
        ..Policy::default()
    };
    // One month before 1 April on the host's clock is 1 March: the older
    // one is within, wherever `forget` runs (as restic reads a recorded
    // time). On the clock of a server in UTC it was 31 March minus a month,
    // 3 March: the older one was removed.
    for tz in [FixedOffset::east_opt(0).unwrap(), east] {
        let (keep, _) = apply(list.clone(), &p, &tz, now());
        assert_eq!(keep.len(), 2, "forget run at {tz}");
    }
}

#[test]
fn parsing_counts_durations_and_descriptions() {
    assert_eq!("unlimited".parse::<Count>().unwrap(), Count::Unlimited);
    assert_eq!("-1".parse::<Count>().unwrap(), Count::Unlimited);
    assert_eq!("7".parse::<Count>().unwrap(), Count::N(7));
    for bad in ["-2", "x", "", "1.5"] {
        assert!(bad.parse::<Count>().is_err(), "{bad}");
    }
    let d: Duration = "1y5m7d2h".parse().unwrap();
    assert_eq!(
        d,
        Duration {
            years: 1,
            months: 5,
            days: 7,
            hours: 2
        }
    );
    assert_eq!(d.to_string(), "1y5m7d2h");
    assert_eq!("2h7d".parse::<Duration>().unwrap().to_string(), "7d2h");
    for bad in ["", "5", "d", "5x", "1d2d", "-1d", "1w", "7 d"] {
        assert!(bad.parse::<Duration>().is_err(), "{bad}");
    }
    let p = Policy {
        last: Count::N(1),
        daily: Count::Unlimited,
        within: "1y".parse().unwrap(),
        within_daily: "30d".parse().unwrap(),
        tags: vec![vec!["a".into(), "b".into()]],
        ..Policy::default()
    };
    assert_eq!(
        p.to_string(),
        "keep 1 latest, all daily snapshots, daily snapshots within 30d, all snapshots with tags [a, b], all snapshots within 1y of the newest"
    );
}

// Properties over arbitrary snapshot lists.

fn arb_list() -> impl Strategy<Value = Vec<Candidate>> {
    // Up to 60 snapshots over about three years, some close together so
    // that buckets are shared; a few tagged, a few held.
    proptest::collection::vec(
        (
            0i64..3 * 366 * 24 * 60,
            prop::sample::select(vec![0u8, 0, 0, 1, 2, 3]),
            prop::bool::weighted(0.1),
        ),
        1..60,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (minutes, tags, hold))| {
                let mut c = snap(i, "2020-01-01 00:00:00");
                c.time += TimeDelta::minutes(minutes);
                c.tags = match tags {
                    1 => vec!["a".into()],
                    2 => vec!["b".into()],
                    3 => vec!["a".into(), "b".into()],
                    _ => vec![],
                };
                c.hold = hold;
                c
            })
            .collect()
    })
}

fn arb_count() -> impl Strategy<Value = Count> {
    prop_oneof![
        3 => Just(Count::N(0)),
        3 => (1u32..8).prop_map(Count::N),
        1 => Just(Count::Unlimited),
    ]
}

fn arb_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        2 => Just(Duration::default()),
        1 => (0u32..2, 0u32..6, 0u32..40, 0u32..48).prop_map(|(years, months, days, hours)| Duration { years, months, days, hours }),
    ]
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        proptest::collection::vec(arb_count(), 6),
        proptest::collection::vec(arb_duration(), 6),
        prop::sample::select(vec![vec![], vec!["a"], vec!["a,b"], vec!["b", ""]]),
    )
        .prop_map(|(c, d, tags)| Policy {
            last: c[0],
            hourly: c[1],
            daily: c[2],
            weekly: c[3],
            monthly: c[4],
            yearly: c[5],
            within: d[0],
            within_hourly: d[1],
            within_daily: d[2],
            within_weekly: d[3],
            within_monthly: d[4],
            within_yearly: d[5],
            tags: tags.iter().map(|l| parse_tag_list(l).unwrap()).collect(),
        })
}

/// Splits a policy's options between two policies by the bits of `mask`.
fn split(p: &Policy, mask: u16) -> (Policy, Policy) {
    let (mut a, mut b) = (Policy::default(), Policy::default());
    let bit = |i: u32| mask & (1 << i) != 0;
    macro_rules! share {
        ($($i:literal $f:ident),*) => {$(
            if bit($i) { a.$f = p.$f.clone() } else { b.$f = p.$f.clone() }
        )*};
    }
    share!(0 last, 1 hourly, 2 daily, 3 weekly, 4 monthly, 5 yearly, 6 within,
        7 within_hourly, 8 within_daily, 9 within_weekly, 10 within_monthly,
        11 within_yearly, 12 tags);
    (a, b)
}

fn ids(ds: &[Decision]) -> BTreeSet<Id> {
    ds.iter().map(|d| d.snapshot.id).collect()
}

proptest! {
    /// Every snapshot is decided exactly once; held snapshots are kept;
    /// kept snapshots have reasons, removed ones none; both lists oldest first.
    #[test]
    fn partition_and_hold(list in arb_list(), p in arb_policy()) {
        let (keep, remove) = apply(list.clone(), &p, &Utc, now());
        prop_assert_eq!(keep.len() + remove.len(), list.len());
        let all: BTreeSet<Id> = list.iter().map(|c| c.id).collect();
        prop_assert_eq!(ids(&keep).union(&ids(&remove)).copied().collect::<BTreeSet<_>>(), all);
        for c in list.iter().filter(|c| c.hold) {
            prop_assert!(ids(&keep).contains(&c.id));
        }
        prop_assert!(keep.iter().all(|d| !d.reasons.is_empty()));
        prop_assert!(remove.iter().all(|d| d.reasons.is_empty()));
        for w in keep.windows(2).chain(remove.windows(2)) {
            prop_assert!(w[0].snapshot.time <= w[1].snapshot.time);
        }
        if p.is_empty() {
            prop_assert_eq!(ids(&keep), list.iter().filter(|c| c.hold).map(|c| c.id).collect());
        }
    }

    /// Options are independent: what a policy keeps is the union of what
    /// its options keep one by one (restic ORs them).
    #[test]
    fn policies_union(list in arb_list(), p in arb_policy(), mask in any::<u16>()) {
        let (a, b) = split(&p, mask);
        let kept = |p: &Policy| ids(&apply(list.clone(), p, &Utc, now()).0);
        let union: BTreeSet<Id> = kept(&a).union(&kept(&b)).copied().collect();
        prop_assert_eq!(kept(&p), union);
    }

    /// --keep-last N alone keeps exactly the N newest (plus held ones).
    #[test]
    fn keep_last_keeps_the_newest(mut list in arb_list(), n in 1u32..10) {
        for c in &mut list { c.hold = false; }
        let p = Policy { last: Count::N(n), ..Policy::default() };
        let (keep, _) = apply(list.clone(), &p, &Utc, now());
        list.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let newest: BTreeSet<Id> = list.iter().take(n as usize).map(|c| c.id).collect();
        prop_assert_eq!(ids(&keep), newest);
    }

    /// --keep-daily N keeps the newest snapshot of each of the N newest days,
    /// plus the oldest snapshot if fewer than N days exist and it shares its
    /// day with a newer one.
    #[test]
    fn keep_daily_counts_days(mut list in arb_list(), n in 1u32..40) {
        for c in &mut list { c.hold = false; }
        let p = Policy { daily: Count::N(n), ..Policy::default() };
        let (keep, _) = apply(list.clone(), &p, &Utc, now());
        list.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let day = |c: &Candidate| c.time.date_naive();
        let mut expect = BTreeSet::new();
        let mut days = Vec::new();
        for c in &list {
            if !days.contains(&day(c)) {
                days.push(day(c));
                if days.len() <= n as usize {
                    expect.insert(c.id);
                }
            }
        }
        let oldest = list.last().unwrap();
        if days.len() < n as usize {
            expect.insert(oldest.id);
        }
        prop_assert_eq!(ids(&keep), expect);
    }

    /// The same in the snapshots' own offsets, mixed within one group (a
    /// laptop that travels, hosts in other zones): newest first is then
    /// not day after day, and comparing a day only with the one before kept
    /// a second snapshot of a day met again while an older day's only one
    /// went.
    #[test]
    fn keep_daily_counts_days_in_mixed_offsets(
        list in proptest::collection::vec((0i64..6 * 24 * 60, 0usize..3), 1..30),
        n in 1u32..8,
    ) {
        let offsets = [-8 * 3600, 0, 9 * 3600];
        let mut list: Vec<Candidate> = list
            .into_iter()
            .enumerate()
            .map(|(i, (minutes, o))| {
                let mut c = snap(i, "2025-11-01 00:00:00");
                c.time = (c.time + TimeDelta::minutes(minutes))
                    .with_timezone(&FixedOffset::east_opt(offsets[o]).unwrap());
                c
            })
            .collect();
        let p = Policy { daily: Count::N(n), ..Policy::default() };
        let (keep, _) = apply(list.clone(), &p, &Utc, now());
        list.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let day = |c: &Candidate| c.time.naive_local().date();
        let mut expect = BTreeSet::new();
        let mut days = Vec::new();
        for c in &list {
            if !days.contains(&day(c)) {
                days.push(day(c));
                if days.len() <= n as usize {
                    expect.insert(c.id);
                }
            }
        }
        if days.len() < n as usize {
            expect.insert(list.last().unwrap().id);
        }
        prop_assert_eq!(ids(&keep), expect);
    }

    /// --keep-within Nd keeps exactly the snapshots newer than N days before
    /// the newest (in UTC, where days are 24 hours).
    #[test]
    fn keep_within_days(mut list in arb_list(), days in 1u32..400) {
        for c in &mut list { c.hold = false; }
        let p = Policy { within: Duration { days, ..Duration::default() }, ..Policy::default() };
        let (keep, _) = apply(list.clone(), &p, &Utc, now());
        let newest = list.iter().map(|c| c.time).max().unwrap();
        let cutoff = newest - TimeDelta::days(days as i64);
        let expect: BTreeSet<Id> = list.iter().filter(|c| c.time > cutoff).map(|c| c.id).collect();
        prop_assert_eq!(ids(&keep), expect);
    }
}
