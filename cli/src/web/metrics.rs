//! `GET /metrics`: the overview as Prometheus (OpenMetrics) gauges, so a
//! missed backup can page someone.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cairn_engine::overview::{Level, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{HttpError, Server, blocking};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    hostname: String,
    paths: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LockLabels {
    kind: String,
    stale: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    command: String,
    pid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    level: String,
}

/// A label value in the text format's escaping (`\`, `"`, newline):
/// prometheus-client 0.24 writes values as given, and a path or host name
/// holding a quote would otherwise break, or forge, lines of the scrape.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn gauge(reg: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    reg.register(name, help, g);
}

fn family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

/// The metrics text.
pub async fn metrics(State(srv): State<Arc<Server>>) -> Result<Response, HttpError> {
    blocking(srv, |s| {
        let (view, o) = s.view()?;
        let mut reg = Registry::default();
        let status = match o.health.status {
            Status::Ok => 0,
            Status::Degraded => 1,
            Status::Failing => 2,
        };
        gauge(
            &mut reg,
            "cairn_health_status",
            "Health verdict: 0 ok, 1 degraded (warnings), 2 failing (errors)",
            status,
        );
        let findings = family::<LevelLabels>(
            &mut reg,
            "cairn_health_findings",
            "Health findings by level",
        );
        for level in [Level::Warning, Level::Error] {
            let n = o
                .health
                .findings
                .iter()
                .filter(|f| f.level == level)
                .count();
            let name = if level == Level::Error {
                "error"
            } else {
                "warning"
            };
            findings
                .get_or_create(&LevelLabels { level: name.into() })
                .set(n as i64);
        }
        let r = &o.repository;
        gauge(
            &mut reg,
            "cairn_snapshots",
            "Snapshots in the repository",
            r.snapshots as i64,
        );
        gauge(
            &mut reg,
            "cairn_repository_packs",
            "Pack files stored",
            r.packs as i64,
        );
        gauge(
            &mut reg,
            "cairn_repository_pack_bytes",
            "Bytes in pack files (the data as stored)",
            r.pack_bytes as i64,
        );
        gauge(
            &mut reg,
            "cairn_repository_index_files",
            "Index files stored",
            r.index_files as i64,
        );
        gauge(
            &mut reg,
            "cairn_repository_keys",
            "Key files",
            r.keys as i64,
        );
        let count = family::<SourceLabels>(
            &mut reg,
            "cairn_source_snapshots",
            "Snapshots of each source (host and paths)",
        );
        let time = family::<SourceLabels>(
            &mut reg,
            "cairn_source_latest_timestamp_seconds",
            "Unix time of the newest snapshot of each source",
        );
        let age = family::<SourceLabels>(
            &mut reg,
            "cairn_source_latest_age_seconds",
            "Age of the newest snapshot of each source: the data a failure now would lose",
        );
        let size = family::<SourceLabels>(
            &mut reg,
            "cairn_source_latest_bytes",
            "File data in the newest snapshot of each source",
        );
        let added = family::<SourceLabels>(
            &mut reg,
            "cairn_source_latest_added_bytes",
            "Bytes the newest backup of each source added to the repository",
        );
        let took = Family::<SourceLabels, Gauge<f64, AtomicU64>>::default();
        reg.register(
            "cairn_source_latest_duration_seconds",
            "How long the newest backup of each source took",
            took.clone(),
        );
        let partial = family::<SourceLabels>(
            &mut reg,
            "cairn_source_latest_partial",
            "1 if the newest snapshot of the source missed unreadable entries",
        );
        let overdue = family::<SourceLabels>(
            &mut reg,
            "cairn_source_overdue",
            "1 if the newest snapshot of the source is older than the RPO (--rpo)",
        );
        let ahead = family::<SourceLabels>(
            &mut reg,
            "cairn_source_dated_ahead",
            "1 if every snapshot of the source is dated in the future (a clock set wrong)",
        );
        let tested = family::<SourceLabels>(
            &mut reg,
            "cairn_source_restore_test_timestamp_seconds",
            "Unix time the last restore test of the source on this machine finished",
        );
        let passed = family::<SourceLabels>(
            &mut reg,
            "cairn_source_restore_test_success",
            "1 if the last restore test of the source on this machine passed",
        );
        for src in &o.sources {
            let l = SourceLabels {
                hostname: label(&src.hostname),
                paths: label(&src.paths.join(" ")),
            };
            count.get_or_create(&l).set(src.snapshots as i64);
            time.get_or_create(&l).set(src.latest_time.timestamp());
            age.get_or_create(&l).set(src.age_seconds);
            size.get_or_create(&l)
                .set(src.latest_bytes.unwrap_or(0) as i64);
            added
                .get_or_create(&l)
                .set(src.latest_added.unwrap_or(0) as i64);
            if let Some(d) = src.latest_duration_seconds {
                took.get_or_create(&l).set(d);
            }
            partial.get_or_create(&l).set(src.latest_partial as i64);
            overdue.get_or_create(&l).set(src.overdue as i64);
            ahead.get_or_create(&l).set(src.dated_ahead as i64);
            if let Some(t) = &src.restore_test {
                tested.get_or_create(&l).set(t.time.timestamp());
                passed.get_or_create(&l).set(t.ok as i64);
            }
        }
        let locks = family::<LockLabels>(
            &mut reg,
            "cairn_locks",
            "Locks in the repository, from any machine",
        );
        for l in &o.locks {
            let kind = if l.record.exclusive {
                "exclusive"
            } else {
                "shared"
            };
            locks
                .get_or_create(&LockLabels {
                    kind: kind.into(),
                    stale: l.stale.to_string(),
                })
                .inc();
        }
        for l in &o.unreadable_locks {
            locks
                .get_or_create(&LockLabels {
                    kind: "unreadable".into(),
                    stale: l.stale.to_string(),
                })
                .inc();
        }
        gauge(
            &mut reg,
            "cairn_operations_running",
            "Commands running on this machine against the repository",
            o.operations.len() as i64,
        );
        let done = family::<OperationLabels>(
            &mut reg,
            "cairn_operation_bytes_done",
            "Bytes a running command has handled",
        );
        let total = family::<OperationLabels>(
            &mut reg,
            "cairn_operation_bytes_total",
            "Bytes a running command expects to handle (when known)",
        );
        for op in &o.operations {
            let l = OperationLabels {
                command: label(&op.command),
                pid: op.pid.to_string(),
            };
            done.get_or_create(&l).set(op.bytes_done as i64);
            if let Some(t) = op.bytes_total {
                total.get_or_create(&l).set(t as i64);
            }
        }
        if let Some(c) = &o.last_check {
            gauge(
                &mut reg,
                "cairn_last_check_timestamp_seconds",
                "Unix time the last check on this machine finished",
                c.time.timestamp(),
            );
            gauge(
                &mut reg,
                "cairn_last_check_success",
                "1 if the last check found no error",
                c.ok as i64,
            );
            gauge(
                &mut reg,
                "cairn_last_check_errors",
                "Errors the last check found",
                c.errors as i64,
            );
        }
        gauge(
            &mut reg,
            "cairn_checks_unresolved",
            "Failed checks on this machine that no passing check has read again since",
            o.unresolved_checks.len() as i64,
        );
        if let Some(t) = &o.last_restore_test {
            gauge(
                &mut reg,
                "cairn_last_restore_test_timestamp_seconds",
                "Unix time the last restore test (verify-restore) on this machine finished",
                t.time.timestamp(),
            );
            gauge(
                &mut reg,
                "cairn_last_restore_test_success",
                "1 if the last restore test restored and verified everything",
                t.ok as i64,
            );
        }
        if let Ok(a) = &view.audit {
            gauge(
                &mut reg,
                "cairn_audit_records",
                "Records in the audit trail",
                a.len() as i64,
            );
            gauge(
                &mut reg,
                "cairn_audit_records_unreadable",
                "Records of the audit trail that cannot be read",
                view.audit_unreadable.len() as i64,
            );
        }
        let mut out = String::new();
        encode(&mut out, &reg).map_err(|e| HttpError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("encoding metrics: {e}"),
        })?;
        Ok((
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response())
    })
    .await
}
