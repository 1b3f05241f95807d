//! The state of a repository at a glance, for dashboards and monitoring
//! (`cairn serve`): its size, the newest snapshot of every source and how
//! old it is, locks and running operations, the last check, and a health
//! verdict from all of these.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::activity::{self, ActivityRecord};
use crate::backend::FileKind;
use crate::check::CheckReport;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::lineage::logical_snapshots;
use crate::lock::{LockInfo, LockListing, UnreadableLock, list_locks, unreadable_lock};
use crate::repository::{Repository, SnapshotList};
use crate::snapshot::Snapshot;
use crate::verify::VerifyReport;

/// What the overview judges against.
#[derive(Debug, Clone, Default)]
pub struct OverviewOptions {
    /// The recovery point objective: a source whose newest snapshot is
    /// older than this makes the repository unhealthy. `None`: no limit.
    pub rpo: Option<Duration>,
    /// How often a `check` should run on this machine: a warning when the
    /// last one is older, or there is none. `None`: not judged.
    pub check_every: Option<Duration>,
    /// How often a restore test (`verify-restore`) should run on this
    /// machine, judged the same way.
    pub restore_test_every: Option<Duration>,
}

/// The repository's identity and size.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryInfo {
    /// Repository ID.
    pub id: String,
    /// Where it is (a directory or an S3 URL).
    pub location: String,
    /// Format version.
    pub version: u32,
    /// Whether the repository is in append-only mode.
    pub append_only: bool,
    /// Whether the key in use may only add.
    pub key_append_only: bool,
    /// Snapshots (records left twice by an interrupted hold count once).
    pub snapshots: usize,
    /// Pack files stored.
    pub packs: usize,
    /// Bytes in pack files: what the data takes in storage.
    pub pack_bytes: u64,
    /// Index files stored.
    pub index_files: usize,
    /// Key files.
    pub keys: usize,
}

/// The newest snapshot of one source: one host backing up one set of paths.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// The host.
    pub hostname: String,
    /// The paths, as the snapshots record them.
    pub paths: Vec<String>,
    /// Snapshots of this source.
    pub snapshots: usize,
    /// The newest one's ID.
    pub latest: String,
    /// When it was taken.
    pub latest_time: DateTime<Utc>,
    /// Seconds since then: the data loss if the source failed now.
    pub age_seconds: i64,
    /// Whether some of its entries could not be read.
    pub latest_partial: bool,
    /// Bytes of file data its backup found (a hard-linked file counted
    /// once per name; a restore writes its content once).
    pub latest_bytes: Option<u64>,
    /// Bytes its backup added to the repository.
    pub latest_added: Option<u64>,
    /// How long its backup took, in seconds.
    pub latest_duration_seconds: Option<f64>,
    /// Whether `age_seconds` is past the RPO, or every snapshot of the
    /// source is dated in the future (`dated_ahead`) with an RPO given.
    pub overdue: bool,
    /// Whether every snapshot of the source is dated in the future (a
    /// clock set wrong): then none tells how old the newest data is.
    pub dated_ahead: bool,
    /// The last restore test of one of its snapshots on this machine.
    pub restore_test: Option<SourceRestoreTest>,
}

/// The last restore test (`verify-restore`) of one source's snapshot on
/// this machine: kept per source, so that a failed test of one is not
/// hidden by a later run that tested another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceRestoreTest {
    /// The snapshot tested (hex ID).
    pub snapshot: String,
    /// When the run that tested it finished.
    pub time: DateTime<Utc>,
    /// Whether every byte and every database check passed.
    pub ok: bool,
    /// The first problem, if any.
    pub first_error: Option<String>,
}

/// A [`SourceRestoreTest`] with the source it belongs to, as remembered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RememberedTest {
    hostname: String,
    paths: Vec<String>,
    #[serde(flatten)]
    test: SourceRestoreTest,
}

impl RememberedTest {
    /// Whether it is the test of the source `hostname` backing up `paths`.
    fn is_of(&self, hostname: &str, paths: &[String]) -> bool {
        self.hostname == hostname && self.paths == paths
    }
}

/// The outcome of the last `check` run on this machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// When it finished.
    pub time: DateTime<Utc>,
    /// How much data it read: `none`, `all` or the subset asked for.
    pub read_data: String,
    /// Whether it found no error.
    pub ok: bool,
    /// Errors found.
    pub errors: usize,
    /// Warnings.
    pub warnings: usize,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs read and verified.
    pub packs_read: usize,
}

/// The outcome of the last restore test (`verify-restore`) run on this
/// machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreTestOutcome {
    /// When it finished.
    pub time: DateTime<Utc>,
    /// The snapshots restored and verified.
    pub snapshots: Vec<String>,
    /// Whether every byte and every database check passed.
    pub ok: bool,
    /// Files restored and verified.
    pub files: u64,
    /// Bytes restored and verified.
    pub bytes: u64,
    /// Databases checked.
    pub databases: usize,
    /// Seconds it took.
    pub seconds: f64,
    /// The first problem, if any.
    pub first_error: Option<String>,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Worth knowing; nothing is at risk.
    Warning,
    /// Data is missing, damaged or not protected as asked.
    Error,
}

/// One health finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub level: Level,
    /// What it is and what to do.
    pub message: String,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No finding.
    Ok,
    /// Warnings only.
    Degraded,
    /// At least one error.
    Failing,
}

/// The health verdict and what it rests on.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// The verdict.
    pub status: Status,
    /// The findings, errors first.
    pub findings: Vec<Finding>,
}

/// Everything a dashboard shows.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// When this overview was made.
    pub generated: DateTime<Utc>,
    /// Identity and size.
    pub repository: RepositoryInfo,
    /// The verdict.
    pub health: Health,
    /// The newest snapshot of every source, most recent first.
    pub sources: Vec<SourceStatus>,
    /// Locks in the repository, from any machine.
    pub locks: Vec<LockInfo>,
    /// Locks that cannot be read (damaged, or another repository's): each
    /// blocks every command, as an exclusive lock does, until stale.
    pub unreadable_locks: Vec<UnreadableLock>,
    /// Operations running on this machine, with their progress.
    pub operations: Vec<ActivityRecord>,
    /// The last check run on this machine, if one was recorded.
    pub last_check: Option<CheckOutcome>,
    /// Failed checks on this machine that no passing check has covered
    /// since (one reading the same data, or all of it), oldest first.
    pub unresolved_checks: Vec<FailedCheck>,
    /// The last restore test run on this machine, if one was recorded.
    pub last_restore_test: Option<RestoreTestOutcome>,
}

/// Builds the overview of `repo`. It lists every kind of object once and
/// reads every snapshot record and lock; it reads no pack.
pub fn overview(repo: &Repository, opts: &OverviewOptions) -> Result<(Overview, SnapshotList)> {
    let backend = repo.backend();
    let (records, damaged) = repo.snapshots_lenient()?;
    let snapshots: SnapshotList = logical_snapshots(records)
        .into_iter()
        .map(|l| (l.id, l.snapshot))
        .collect();
    let mut packs = backend.list(FileKind::Pack)?;
    let mut missing = missing_packs(repo, &packs)?;
    if !missing.is_empty() {
        // A prune may have replaced the index files and deleted packs since
        // the index was synced: only what is still missing after a fresh
        // sync and listing is missing.
        repo.refresh_index()?;
        packs = backend.list(FileKind::Pack)?;
        missing = missing_packs(repo, &packs)?;
    }
    let LockListing {
        locks,
        unreadable: unreadable_locks,
    } = list_locks(&**backend, repo.key())?;
    let now = Utc::now();
    let tests: Option<Vec<RememberedTest>> = recall(repo, RESTORE_TESTS);
    let mut sources = sources(&snapshots, now, opts.rpo);
    for s in &mut sources {
        s.restore_test = tests
            .iter()
            .flatten()
            .find(|t| t.is_of(&s.hostname, &s.paths))
            .map(|t| t.test.clone());
    }
    let last_check = last_check(repo);
    let unresolved_checks: Vec<FailedCheck> = recall(repo, FAILED_CHECKS).unwrap_or_default();
    let last_restore_test = last_restore_test(repo);

    let mut findings = Vec::new();
    let mut error = |message: String| {
        findings.push(Finding {
            level: Level::Error,
            message,
        })
    };
    // One that is gone since it was listed was forgotten meanwhile (a
    // forget after each snapshot, by `watch --keep-*`): no finding.
    for e in damaged.iter().filter(|e| !matches!(e, Error::Missing(_))) {
        error(format!("a snapshot record cannot be read: {e}"));
    }
    for l in unreadable_locks.iter().filter(|l| !l.stale) {
        error(format!(
            "every command waits for {}",
            unreadable_lock(&l.name)
        ));
    }
    if !missing.is_empty() {
        error(format!(
            "{} pack(s) named by the index are missing from the storage (first: {}); run `cairn check` and see the recovery runbook",
            missing.len(),
            missing[0]
        ));
    }
    for s in sources.iter().filter(|s| s.overdue) {
        if s.dated_ahead {
            error(format!(
                "every snapshot of {} on {} is dated in the future (is that host's clock \
                 right?): how old its newest data is cannot be told",
                s.paths.join(" "),
                s.hostname
            ));
            continue;
        }
        error(format!(
            "the newest snapshot of {} on {} is {} old, past the RPO",
            s.paths.join(" "),
            s.hostname,
            crate::units::format_duration(Duration::from_secs(s.age_seconds.max(0) as u64))
        ));
    }
    // A failure the last check did not read again (a plain check, another
    // part of a subset rotation) is not gone: it fails the health until a
    // check that covers it passes.
    for f in unresolved_checks
        .iter()
        .filter(|f| last_check.as_ref().is_none_or(|l| l.time != f.outcome.time))
    {
        let c = &f.outcome;
        error(format!(
            "a check ({}, data read: {}) found {} error(s){}, and no check since has read that \
             data and passed ({})",
            c.time.to_rfc3339(),
            c.read_data,
            c.errors,
            c.first_error
                .as_ref()
                .map(|e| format!(", first: {e}"))
                .unwrap_or_default(),
            check_covering(&f.needs)
        ));
    }
    if let Some(c) = last_check.as_ref().filter(|c| !c.ok) {
        error(format!(
            "the last check ({}) found {} error(s){}",
            c.time.to_rfc3339(),
            c.errors,
            c.first_error
                .as_ref()
                .map(|e| format!(", first: {e}"))
                .unwrap_or_default()
        ));
    }
    let because = |e: &Option<String>| e.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
    // Each source's last test: a later run that tested another source
    // does not hide a failure.
    let mut failed_shown = false;
    for s in &sources {
        if let Some(t) = s.restore_test.as_ref().filter(|t| !t.ok) {
            failed_shown |= last_restore_test.as_ref().is_some_and(|l| l.time == t.time);
            error(format!(
                "the last restore test of {} on {} (snapshot {}, {}) failed{}",
                s.paths.join(" "),
                s.hostname,
                t.snapshot.get(..8).unwrap_or(&t.snapshot),
                t.time.to_rfc3339(),
                because(&t.first_error)
            ));
        }
    }
    // The last run failed a snapshot that backs up no source shown (a
    // recovered one, one forgotten since), or an older cairn kept no
    // record per source: the run's failure still counts.
    if let Some(t) = last_restore_test
        .as_ref()
        .filter(|t| !t.ok && !failed_shown)
    {
        error(format!(
            "the last restore test ({}) failed{}",
            t.time.to_rfc3339(),
            because(&t.first_error)
        ));
    }
    let mut warning = |message: String| {
        findings.push(Finding {
            level: Level::Warning,
            message,
        })
    };
    if snapshots.is_empty() {
        warning("the repository holds no snapshot yet".into());
    }
    // Without an RPO a source dated ahead is not failing, but its age says
    // nothing: worth a look.
    for s in sources.iter().filter(|s| s.dated_ahead && !s.overdue) {
        warning(format!(
            "every snapshot of {} on {} is dated in the future (is that host's clock right?)",
            s.paths.join(" "),
            s.hostname
        ));
    }
    for s in sources.iter().filter(|s| s.latest_partial) {
        warning(format!(
            "the newest snapshot of {} on {} ({}) is partial: some entries could not be read",
            s.paths.join(" "),
            s.hostname,
            &s.latest[..8]
        ));
    }
    let overdue = |last: Option<DateTime<Utc>>, every: Option<Duration>| {
        let every = every?;
        let late =
            last.is_none_or(|t| now.signed_duration_since(t).to_std().unwrap_or_default() > every);
        late.then(|| crate::units::format_duration(every))
    };
    if let Some(every) = overdue(last_check.as_ref().map(|c| c.time), opts.check_every) {
        warning(format!(
            "no check has run on this machine in the last {every} (`cairn check --read-data-subset \"$(date +%u)/7\"` daily reads everything in a week; in a crontab, write `%` as `\\%`)"
        ));
    }
    if let Some(every) = overdue(
        last_restore_test.as_ref().map(|t| t.time),
        opts.restore_test_every,
    ) {
        warning(format!(
            "no restore test has run on this machine in the last {every} (`cairn verify-restore`)"
        ));
    }
    let stale = locks.iter().filter(|l| l.stale).count()
        + unreadable_locks.iter().filter(|l| l.stale).count();
    if stale > 0 {
        warning(format!(
            "{stale} stale lock(s) left by processes that are gone; `cairn unlock` removes them"
        ));
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.level));
    let status = match findings.first().map(|f| f.level) {
        None => Status::Ok,
        Some(Level::Warning) => Status::Degraded,
        Some(Level::Error) => Status::Failing,
    };
    // Read again: a long-running `serve` showed the mode it started with.
    let config = repo.current_config()?;
    let repository = RepositoryInfo {
        id: config.id.to_hex(),
        location: backend.location(),
        version: config.version,
        append_only: config.append_only,
        key_append_only: repo.key_is_append_only(),
        snapshots: snapshots.len(),
        packs: packs.len(),
        pack_bytes: packs.iter().map(|p| p.size).sum(),
        index_files: backend.list(FileKind::Index)?.len(),
        keys: backend.list(FileKind::Key)?.len(),
    };
    let overview = Overview {
        generated: now,
        repository,
        health: Health { status, findings },
        sources,
        locks,
        unreadable_locks,
        operations: activity::running(repo),
        last_check,
        unresolved_checks,
        last_restore_test,
    };
    Ok((overview, snapshots))
}

/// The packs the local index names that are not in `stored`.
fn missing_packs(repo: &Repository, stored: &[crate::backend::Listed]) -> Result<Vec<Id>> {
    let stored: HashSet<&str> = stored.iter().map(|p| p.name.as_str()).collect();
    Ok(repo
        .index()
        .packs()?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !stored.contains(id.to_hex().as_str()))
        .collect())
}

/// The newest snapshot of every (host, paths), most recent first.
fn sources(
    snapshots: &SnapshotList,
    now: DateTime<Utc>,
    rpo: Option<Duration>,
) -> Vec<SourceStatus> {
    // (host, paths) -> (snapshots, the newest not dated in the future, the
    // newest)
    type Source = (String, Vec<String>);
    type Seen<'a> = (usize, Option<&'a (Id, Snapshot)>, &'a (Id, Snapshot));
    let mut by_source: BTreeMap<Source, Seen> = BTreeMap::new();
    // A snapshot dated ahead of now (past a few minutes of clock skew) is
    // not the newest, as in retention: one made on a host whose clock is
    // wrong would otherwise hide a missed backup for as long.
    // Oldest first, so the last one seen of a source is its newest. A
    // recovered snapshot backs up no source: it would be overdue for ever.
    for s in snapshots.iter().filter(|s| !s.1.is_recovered()) {
        let key = (s.1.hostname.clone(), s.1.paths.clone());
        let (count, newest, _) = by_source.get(&key).copied().unwrap_or((0, None, s));
        let here = !crate::snapshot::dated_ahead(&s.1.time, now);
        by_source.insert(key, (count + 1, if here { Some(s) } else { newest }, s));
    }
    let mut out: Vec<SourceStatus> = by_source
        .into_iter()
        .map(|((hostname, paths), (count, newest, last))| {
            let dated_ahead = newest.is_none();
            let (id, s) = newest.unwrap_or(last);
            let time = s.time.with_timezone(&Utc);
            let age_seconds = now.signed_duration_since(time).num_seconds();
            SourceStatus {
                hostname,
                paths,
                snapshots: count,
                latest: id.to_hex(),
                latest_time: time,
                age_seconds,
                latest_partial: s.partial,
                latest_bytes: s.summary.as_ref().map(|x| x.total_bytes),
                latest_added: s.summary.as_ref().map(|x| x.data_added),
                latest_duration_seconds: s.summary.as_ref().and_then(|x| {
                    let t = |v: &str| DateTime::parse_from_rfc3339(v).ok();
                    let took = t(&x.backup_end)?.signed_duration_since(t(&x.backup_start)?);
                    Some(took.num_milliseconds() as f64 / 1000.0)
                }),
                overdue: rpo.is_some_and(|r| dated_ahead || age_seconds > r.as_secs() as i64),
                dated_ahead,
                restore_test: None,
            }
        })
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.latest_time));
    out
}

/// Keeps `value` as `<cache>/<name>` (written aside, then renamed). A
/// failure is ignored: these are notes for monitors.
fn remember(repo: &Repository, name: &str, value: &impl Serialize) {
    let Some(dir) = repo.cache_dir() else {
        return;
    };
    let json = serde_json::to_vec(value).expect("an outcome serialises");
    crate::cachedir::write_aside(&dir.join(name), &json);
}

/// What [`remember`] kept as `name`, if anything.
fn recall<T: serde::de::DeserializeOwned>(repo: &Repository, name: &str) -> Option<T> {
    let bytes = std::fs::read(repo.cache_dir()?.join(name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Where failed checks no passing one has covered yet are remembered.
const FAILED_CHECKS: &str = "failed-checks.json";

/// A failed check no passing one has covered since.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedCheck {
    /// The check.
    #[serde(flatten)]
    pub outcome: CheckOutcome,
    /// What a passing check must read to cover it: `none` when no pack it
    /// read was found damaged (the structure, a store that did not answer:
    /// any check tells again), else its `read_data`. (Missing, as in the
    /// first records of this kind: empty, covered by `all` alone.)
    #[serde(default)]
    pub needs: String,
}

/// Whether a passing check that read `passed` (`none`, `all`, a subset as
/// written) read again what one that failed reading `failed` found wrong.
/// Every check reads the structure; part N/M is the same packs each time,
/// while a percentage or a size picks packs at random.
fn covers(passed: &str, failed: &str) -> bool {
    failed == "none" || passed == "all" || (passed == failed && failed.contains('/'))
}

/// The `check` arguments that would cover a failed check that read
/// `read_data`.
fn check_covering(read_data: &str) -> String {
    match read_data {
        "none" => "`cairn check`".into(),
        s if s.contains('/') => {
            format!("`cairn check --read-data-subset {s}` or `cairn check --read-data`")
        }
        _ => "`cairn check --read-data`".into(),
    }
}

/// Remembers the outcome of a check of `repo` in its cache directory, for
/// [`overview`]. `read_data` says how much data the check read.
pub fn record_check(repo: &Repository, report: &CheckReport, read_data: &str) {
    let outcome = CheckOutcome {
        time: Utc::now(),
        read_data: read_data.to_string(),
        ok: report.ok(),
        errors: report.errors.len() + report.unreadable.len(),
        warnings: report.warnings.len(),
        first_error: report.errors.first().cloned().or_else(|| {
            report
                .unreadable
                .first()
                .map(|e| format!("could not be read: {e}"))
        }),
        snapshots: report.snapshots,
        packs_read: report.packs_read,
    };
    let mut failed: Vec<FailedCheck> = recall(repo, FAILED_CHECKS).unwrap_or_default();
    if outcome.ok {
        failed.retain(|f| !covers(read_data, &f.needs));
    } else {
        // Packs missing are found without reading any.
        let found_reading = report.damaged_packs.len() > report.packs_missing;
        let needs = if found_reading { read_data } else { "none" };
        // The newest failure of a kind stands for it.
        failed.retain(|f| f.needs != needs);
        failed.push(FailedCheck {
            outcome: outcome.clone(),
            needs: needs.to_string(),
        });
    }
    remember(repo, FAILED_CHECKS, &failed);
    remember(repo, "last-check.json", &outcome);
}

/// Where each source's last restore test is remembered.
const RESTORE_TESTS: &str = "restore-tests.json";

/// Remembers the outcome of a restore test of `repo` (one report per
/// snapshot tested, with the snapshot), for [`overview`]: the run's, and
/// each source's.
pub fn record_restore_test(repo: &Repository, tested: &[(&Snapshot, VerifyReport)]) {
    let time = Utc::now();
    let first_error = |r: &VerifyReport| {
        r.errors.first().cloned().or_else(|| {
            let d = r.databases.iter().find(|d| !d.ok)?;
            Some(database_failure(d))
        })
    };
    // Two runs at once may each keep their own sources only: the newest
    // run's record stands, as for the run's outcome.
    let mut tests: Vec<RememberedTest> = recall(repo, RESTORE_TESTS).unwrap_or_default();
    let mut this_run: Vec<RememberedTest> = Vec::new();
    for (snap, r) in tested {
        let test = RememberedTest {
            hostname: snap.hostname.clone(),
            paths: snap.paths.clone(),
            test: SourceRestoreTest {
                snapshot: r.snapshot.clone(),
                time,
                ok: r.ok,
                first_error: first_error(r),
            },
        };
        match this_run
            .iter_mut()
            .find(|t| t.is_of(&test.hostname, &test.paths))
        {
            // Two snapshots of one source in a run: a failure stands.
            Some(t) if !t.test.ok => {}
            Some(t) => *t = test,
            None => this_run.push(test),
        }
    }
    tests.retain(|t| !this_run.iter().any(|n| n.is_of(&t.hostname, &t.paths)));
    tests.extend(this_run);
    remember(repo, RESTORE_TESTS, &tests);
    let reports: Vec<&VerifyReport> = tested.iter().map(|(_, r)| r).collect();
    let outcome = RestoreTestOutcome {
        time,
        snapshots: reports.iter().map(|r| r.snapshot.clone()).collect(),
        ok: reports.iter().all(|r| r.ok),
        files: reports.iter().map(|r| r.files).sum(),
        bytes: reports.iter().map(|r| r.bytes).sum(),
        databases: reports.iter().map(|r| r.databases.len()).sum(),
        seconds: reports.iter().map(|r| r.seconds).sum(),
        first_error: reports
            .iter()
            .flat_map(|r| r.errors.first())
            .next()
            .cloned()
            .or_else(|| {
                let d = reports.iter().flat_map(|r| &r.databases).find(|d| !d.ok)?;
                Some(database_failure(d))
            }),
    };
    remember(repo, "last-restore-test.json", &outcome);
}

/// A failed database check as the outcome remembers it, for `status` and
/// `serve`'s health endpoint, which show no file contents: psql's message
/// for a dump that did not load may quote its rows (`DETAIL: Failing row
/// contains (...)`, `CONTEXT: COPY t, line 3: "..."`, or the error line
/// itself: `invalid input syntax for type integer: "..."`). The line of the
/// dump the load stopped at is kept; verify-restore's own output has the rest.
fn database_failure(d: &crate::verify::DatabaseReport) -> String {
    let what = if d.integrity == "ok" {
        let differ: Vec<&str> = d
            .tables
            .iter()
            .filter(|(_, c)| c.expected != c.actual)
            .map(|(name, _)| name.as_str())
            .collect();
        format!(
            "the row counts of {} differ from the capture's",
            differ.join(", ")
        )
    } else if let Some(at) = d.integrity.find("ERROR:") {
        // psql names the line it stopped at: `psql:<stdin>:123: ERROR: ...`.
        let line = d.integrity[..at]
            .rsplit("psql:")
            .next()
            .and_then(|s| s.split(':').nth(1))
            .and_then(|n| n.trim().parse::<u64>().ok());
        format!(
            "the dump did not load{} (psql's message is left out here, as it may quote the \
             database's rows; verify-restore shows it)",
            line.map(|n| format!(", stopping at its line {n}"))
                .unwrap_or_default()
        )
    } else {
        d.integrity.clone()
    };
    format!("{} database {}: {what}", d.kind, d.path)
}

/// The outcome [`record_restore_test`] last remembered for `repo`, if any.
pub fn last_restore_test(repo: &Repository) -> Option<RestoreTestOutcome> {
    recall(repo, "last-restore-test.json")
}

/// The outcome [`record_check`] last remembered for `repo`, if any.
pub fn last_check(repo: &Repository) -> Option<CheckOutcome> {
    recall(repo, "last-check.json")
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn a_passing_check_covers_a_failure_only_where_it_read_the_same_data() {
        // Every check reads the structure.
        assert!(covers("none", "none"));
        assert!(covers("2/7", "none"));
        // All the data covers any part of it.
        assert!(covers("all", "3/7"));
        assert!(covers("all", "10%"));
        // Part N/M is the same packs each time; a percentage or a size is
        // drawn at random.
        assert!(covers("3/7", "3/7"));
        assert!(!covers("4/7", "3/7"));
        assert!(!covers("10%", "10%"));
        assert!(!covers("2G", "2G"));
        assert!(!covers("none", "all"));
        assert!(!covers("3/7", "all"));
    }
}
