//! `cairn -r DEST copy --from-repo SRC [SNAPSHOT...]`

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use cairn_engine::activity::Activity;
use cairn_engine::backend::S3Credentials;
use cairn_engine::copy::{Copied, CopyOptions, CopyProgress, Skipped, copy};
use cairn_engine::repository::Repository;
use cairn_engine::snapshot::Snapshot;
use indicatif::ProgressBar;

use crate::common::{Global, bytes, print_json, read_password};
use crate::{exit, progress, timefmt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshots to copy (IDs, unique prefixes or `latest`); default all
    snapshots: Vec<String>,
    /// The repository to copy from (an S3 source may have keys of its own:
    /// CAIRN_FROM_AWS_ACCESS_KEY_ID, CAIRN_FROM_AWS_SECRET_ACCESS_KEY and
    /// CAIRN_FROM_AWS_SESSION_TOKEN; otherwise it uses the destination's)
    #[arg(long, value_name = "SRC", env = "CAIRN_FROM_REPOSITORY")]
    from_repo: String,
    /// Read the source repository's password from this file
    #[arg(long, value_name = "FILE", env = "CAIRN_FROM_PASSWORD_FILE")]
    from_password_file: Option<PathBuf>,
    /// Run this command and use its output as the source repository's password
    #[arg(long, value_name = "COMMAND", env = "CAIRN_FROM_PASSWORD_COMMAND")]
    from_password_command: Option<String>,
    /// S3 signing region of the source (default: the destination's)
    #[arg(long, value_name = "REGION", env = "CAIRN_FROM_S3_REGION")]
    from_s3_region: Option<String>,
    /// AWS profile for the source (default: the destination's)
    #[arg(long, value_name = "PROFILE")]
    from_s3_profile: Option<String>,
    /// How to address the source's bucket: auto, dns or path (default: the destination's)
    #[arg(long, value_name = "HOW", env = "CAIRN_FROM_S3_BUCKET_LOOKUP")]
    from_s3_bucket_lookup: Option<String>,
    /// Only snapshots from this host
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots with these tags (a,b: both; repeatable: all must
    /// match; '' matches untagged snapshots)
    #[arg(long = "tag", value_name = "TAGS", value_parser = crate::snapshot_arg::parse_tag_list_arg)]
    tags: Vec<crate::snapshot_arg::TagList>,
    /// Only snapshots that include this path (repeatable: all must match)
    #[arg(long = "path", value_parser = crate::snapshot_arg::source_path())]
    paths: Vec<String>,
}

/// The source's own S3 keys, from `CAIRN_FROM_AWS_ACCESS_KEY_ID` and
/// `CAIRN_FROM_AWS_SECRET_ACCESS_KEY` (and `CAIRN_FROM_AWS_SESSION_TOKEN`):
/// `None` when neither is set, so the source shares the destination's.
fn source_credentials() -> Result<Option<S3Credentials>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (id, secret, token) = (
        var("CAIRN_FROM_AWS_ACCESS_KEY_ID"),
        var("CAIRN_FROM_AWS_SECRET_ACCESS_KEY"),
        var("CAIRN_FROM_AWS_SESSION_TOKEN"),
    );
    match (id, secret) {
        (None, None) if token.is_none() => Ok(None),
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
            given_as: "CAIRN_FROM_AWS_ACCESS_KEY_ID and CAIRN_FROM_AWS_SECRET_ACCESS_KEY (the \
                       source's keys)"
                .into(),
        })),
        _ => bail!(
            "the source's S3 keys need both CAIRN_FROM_AWS_ACCESS_KEY_ID and \
             CAIRN_FROM_AWS_SECRET_ACCESS_KEY (and CAIRN_FROM_AWS_SESSION_TOKEN only with them)"
        ),
    }
}

/// Prints each snapshot as it is copied or skipped (text mode only), and
/// keeps them for the JSON report of a copy that fails partway.
struct Progress {
    bar: ProgressBar,
    text: bool,
    activity: Activity,
    /// Snapshots copied so far.
    copied: Mutex<Vec<Copied>>,
    /// Snapshots skipped so far.
    skipped: Mutex<Vec<Skipped>>,
}

impl CopyProgress for Progress {
    fn snapshot_start(&self, source: &cairn_engine::Id, s: &Snapshot) {
        self.activity.snapshot(source);
        if self.text {
            self.bar.suspend(|| {
                crate::say!(
                    "copying snapshot {} of {} from {} ({})",
                    source.short(),
                    s.hostname,
                    timefmt::show(&s.time),
                    s.paths.join(", ")
                )
            });
        }
    }
    fn bytes_read(&self, n: u64) {
        self.bar.inc(n);
        self.activity.add_bytes(n);
    }
    fn snapshot_done(&self, c: &Copied) {
        // Before anything is printed: a log that cannot be written must
        // not make committed copies look failed to a cron job.
        let n = {
            let mut copied = self.copied.lock().unwrap_or_else(|e| e.into_inner());
            copied.push(c.clone());
            copied.len()
        };
        exit::done(format!("{n} snapshot(s) were copied"));
        if self.text {
            self.bar.suspend(|| {
                crate::say!(
                    "  -> snapshot {} ({} read, {} new blobs, {} uploaded)",
                    c.id.short(),
                    bytes(c.bytes_read),
                    c.blobs_added,
                    bytes(c.bytes_uploaded)
                )
            });
        }
    }
    fn snapshot_skipped(&self, s: &Skipped) {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        if self.text {
            let why = match s.reason {
                "origin" => "it is a copy of",
                _ => "already copied as",
            };
            // Tags and hold set after a copy stay where they were set.
            let differs = if s.differs.is_empty() {
                String::new()
            } else {
                format!(
                    " (its {} {} there: a copy does not carry changes over; set them in \
                     the destination with `cairn tag` or `cairn hold`)",
                    s.differs.join(" and "),
                    if s.differs == ["hold"] {
                        "differs"
                    } else {
                        "differ"
                    }
                )
            };
            self.bar.suspend(|| {
                crate::say!(
                    "skipping snapshot {}: {why} {}{differs}",
                    s.source.short(),
                    s.existing.short()
                )
            });
        }
    }
}

pub fn run(g: &Global, a: Args) -> Result<i32> {
    let dst = g.open()?;
    // The source is opened like the destination (same backends, cache),
    // with its own location and password.
    let from = Global {
        repo: Some(a.from_repo.clone()),
        s3_region: a.from_s3_region.clone().or_else(|| g.s3_region.clone()),
        s3_profile: a.from_s3_profile.clone().or_else(|| g.s3_profile.clone()),
        s3_bucket_lookup: a
            .from_s3_bucket_lookup
            .clone()
            .unwrap_or_else(|| g.s3_bucket_lookup.clone()),
        // Keys matter only to an S3 source.
        s3_credentials: if a.from_repo.starts_with("s3:") {
            source_credentials()?
        } else {
            None
        },
        ..g.clone()
    };
    let src_backend = from
        .backend()
        .with_context(|| format!("source repository {}", a.from_repo))?;
    let password = read_password(
        "CAIRN_FROM_PASSWORD",
        a.from_password_file.as_deref(),
        a.from_password_command.as_deref(),
        "source repository",
        "CAIRN_FROM_PASSWORD, --from-password-file or --from-password-command",
    )?;
    let given = a.from_password_file.is_some() || a.from_password_command.is_some();
    let mut src =
        crate::common::open_repository(src_backend, &password, given, &from.open_options())
            .map_err(|e| {
                // The destination's keys, turned away by the source's
                // bucket: the user may not know the source takes its own.
                let theirs = from.s3_credentials.is_none()
                    && a.from_repo.starts_with("s3:")
                    && e.to_string().contains("(access denied");
                anyhow::Error::new(e).context(format!(
                    "source repository {}{}",
                    a.from_repo,
                    if theirs {
                        " (read with the destination's S3 keys; a source with keys of its \
                         own takes them from CAIRN_FROM_AWS_ACCESS_KEY_ID and \
                         CAIRN_FROM_AWS_SECRET_ACCESS_KEY)"
                    } else {
                        ""
                    }
                ))
            })?;
    src.set_lock_wait(g.lock_wait());
    src.set_warnings(crate::common::warning_sink("source repository: "));
    crate::common::warn_cache_unusable(&src);
    crate::common::warn_damaged_index(&src, "source repository: ");
    let opts = CopyOptions {
        snapshots: a.snapshots,
        host: a.host,
        tags: a.tags.into_iter().map(|l| l.0).collect(),
        paths: a.paths,
        lock_source: !g.no_lock,
    };
    let show = progress::enabled(g.quiet, g.json);
    let p = Progress {
        bar: progress::bytes_bar(show, None, "copying"),
        text: !g.json && !g.quiet,
        activity: Activity::start(&dst, "copy"),
        copied: Default::default(),
        skipped: Default::default(),
    };
    let report = match copy(&src, &dst, &opts, &p) {
        Ok(report) => report,
        Err(e) => {
            p.bar.finish_and_clear();
            if g.json {
                // What was committed before the failure stays committed:
                // a script must learn of it, not only of the error.
                let copied = p.copied.into_inner().unwrap_or_else(|e| e.into_inner());
                let skipped = p.skipped.into_inner().unwrap_or_else(|e| e.into_inner());
                let e = anyhow::Error::from(e);
                print_json(&summary(
                    &src,
                    &dst,
                    None,
                    &copied,
                    &skipped,
                    &[],
                    Some(exit::describe(&e)),
                ))?;
                return Err(e);
            }
            return Err(e.into());
        }
    };
    p.bar.finish_and_clear();
    for e in &report.errors {
        crate::warn!("error: source snapshot not copied: {e}");
    }
    // A typo in a filter (`--host web-1` for `web1`) copied nothing and
    // looked like a copy that was up to date.
    let filtered = opts.host.is_some() || !opts.tags.is_empty() || !opts.paths.is_empty();
    if filtered && report.copied.is_empty() && report.skipped.is_empty() && report.errors.is_empty()
    {
        crate::warn!("warning: no source snapshot matches --host, --tag and --path as given");
    }
    if g.json {
        print_json(&summary(
            &src,
            &dst,
            Some(report.rechunked),
            &report.copied,
            &report.skipped,
            &report.errors,
            None,
        ))?;
    } else if !g.quiet {
        crate::say!(
            "copied {} snapshot(s), skipped {} already present; read {}, added {} blobs, uploaded {}{}",
            report.copied.len(),
            report.skipped.len(),
            bytes(report.bytes_read()),
            report.blobs_added(),
            bytes(report.bytes_uploaded()),
            if report.rechunked && !report.copied.is_empty() {
                " (re-chunked: the repositories cut files differently)"
            } else {
                ""
            }
        );
    }
    Ok(if report.errors.is_empty() {
        exit::OK
    } else {
        exit::FATAL
    })
}

/// The `--json` summary; `rechunked` is unknown (null) and `error` set when
/// the copy failed partway.
fn summary(
    src: &Repository,
    dst: &Repository,
    rechunked: Option<bool>,
    copied: &[Copied],
    skipped: &[Skipped],
    errors: &[String],
    error: Option<String>,
) -> serde_json::Value {
    let sum = |f: fn(&Copied) -> u64| copied.iter().map(f).sum::<u64>();
    let listed: Vec<serde_json::Value> = copied
        .iter()
        .map(|c| {
            serde_json::json!({
                "source": c.source.to_hex(),
                "id": c.id.to_hex(),
                "short_id": c.id.short(),
                "time": c.snapshot.time.to_rfc3339(),
                "hostname": c.snapshot.hostname,
                "paths": c.snapshot.paths,
                "tags": c.snapshot.tags,
                "hold": c.snapshot.hold,
                "bytes_read": c.bytes_read,
                "blobs_added": c.blobs_added,
                "bytes_uploaded": c.bytes_uploaded,
            })
        })
        .collect();
    let mut v = serde_json::json!({
        "message_type": "summary",
        "source": src.config().id.to_hex(),
        "destination": dst.config().id.to_hex(),
        "rechunked": rechunked,
        "snapshots_copied": copied.len(),
        "snapshots_skipped": skipped.len(),
        "bytes_read": sum(|c| c.bytes_read),
        "blobs_added": sum(|c| c.blobs_added),
        "bytes_uploaded": sum(|c| c.bytes_uploaded),
        "copied": listed,
        "skipped": skipped,
        "errors": errors,
    });
    if let Some(error) = error {
        v["error"] = error.into();
    }
    v
}
