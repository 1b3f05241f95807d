//! The HTML pages: the dashboard and a snapshot's browser. Server-rendered,
//! no script; the dashboard reloads itself every 10 seconds.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_engine::Id;
use cairn_engine::listing::{list_dir, permissions};
use cairn_engine::overview::{Level, Overview, Status};
use cairn_engine::snapshot::Snapshot;
use cairn_engine::tree::NodeKind;
use chrono::{DateTime, TimeZone};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::api::{DirQuery, FindQuery, Searched, search};
use super::{HttpError, Server, View, blocking};
use crate::common::bytes;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}\
th{background:#f4f4f4}.ok{color:#176117}.degraded{color:#8a5a00}.failing,.error{color:#a01010}\
.badge{font-weight:bold;text-transform:uppercase}.num{text-align:right}code{font-size:.95em}";

fn when<Tz: TimeZone>(t: &DateTime<Tz>) -> String {
    t.to_utc().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn ago(secs: i64) -> String {
    cairn_engine::units::format_duration(std::time::Duration::from_secs(secs.max(0) as u64))
}

fn layout(title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="10"; }
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

/// `ID:DIR` as a shell word: quoted where the path needs it.
fn restore_spec(id: &str, dir: &str) -> String {
    let spec = format!("{id}:{dir}");
    shlex::try_quote(&spec).map_or(spec.clone(), |q| q.into_owned())
}

fn snapshot_link(id: &Id) -> Markup {
    html! { a href={ "/snapshots/" (id.to_hex()) } { code { (id.short()) } } }
}

fn status_badge(s: Status) -> Markup {
    let (class, text) = match s {
        Status::Ok => ("ok", "ok"),
        Status::Degraded => ("degraded", "degraded"),
        Status::Failing => ("failing", "failing"),
    };
    html! { span class={ "badge " (class) } { (text) } }
}

fn render_dashboard(view: &View, o: &Overview) -> Markup {
    let r = &o.repository;
    layout(
        &format!("cairn: {}", r.location),
        true,
        html! {
            h1 { "cairn repository " code { (&r.id[..8]) } " " (status_badge(o.health.status)) }
            p { (r.location) " · " (r.snapshots) " snapshots · " (bytes(r.pack_bytes)) " in "
                (r.packs) " packs · " (r.index_files) " index files · " (r.keys) " keys"
                @if r.append_only { " · append-only" }
                " · as of " (when(&o.generated)) }
            form action="/find" method="get" {
                "Find files in every snapshot: "
                input type="search" name="pattern" placeholder="*.pdf or docs/**/report*" size="40";
                " " input type="submit" value="Find";
            }
            h2 { "Health" }
            @if o.health.findings.is_empty() { p class="ok" { "No problem found." } }
            ul {
                @for f in &o.health.findings {
                    li class=(if f.level == Level::Error { "error" } else { "degraded" }) { (f.message) }
                }
            }
            @match &o.last_check {
                Some(c) => p { "Last check on this machine: " (when(&c.time)) " (data read: " (c.read_data) "): "
                    @if c.ok { span class="ok" { "no errors" } } @else { span class="error" { (c.errors) " error(s)" } } },
                None => p { "No check recorded on this machine." },
            }
            @match &o.last_restore_test {
                Some(t) => p { "Last restore test on this machine: " (when(&t.time)) " (" (t.snapshots.len()) " snapshot(s), "
                    (t.files) " files, " (bytes(t.bytes)) @if t.databases > 0 { ", " (t.databases) " database(s)" } "): "
                    @if t.ok { span class="ok" { "passed" } } @else { span class="error" { "FAILED" } } },
                None => p { "No restore test recorded on this machine (" code { "cairn verify-restore" } ")." },
            }
            h2 { "Sources" }
            table {
                tr { th { "host" } th { "paths" } th { "snapshots" } th { "newest" } th { "age" } th { "size" } th { "added" } th { "took" } th { "restore test" } th { "state" } }
                @for s in &o.sources {
                    tr {
                        td { (s.hostname) } td { (s.paths.join(" ")) } td.num { (s.snapshots) }
                        td { @if let Ok(id) = Id::from_hex(&s.latest) { (snapshot_link(&id)) } " " (when(&s.latest_time)) }
                        td { (ago(s.age_seconds)) }
                        td.num { (s.latest_bytes.map(bytes).unwrap_or_default()) }
                        td.num { (s.latest_added.map(bytes).unwrap_or_default()) }
                        td.num { (s.latest_duration_seconds.map(|d| format!("{d:.1} s")).unwrap_or_default()) }
                        td {
                            @if let Some(t) = &s.restore_test {
                                @if t.ok { span.ok { "passed" } } @else { span.error { "FAILED" } }
                                " " (when(&t.time))
                            }
                        }
                        td { @if s.overdue { span.error { "overdue" } } @else if s.latest_partial { span.degraded { "partial" } } @else { span.ok { "ok" } } }
                    }
                }
            }
            h2 { "Running operations" }
            @if o.operations.is_empty() && o.locks.is_empty() && o.unreadable_locks.is_empty() { p { "None." } }
            @if !o.operations.is_empty() {
                table {
                    tr { th { "command" } th { "phase" } th { "process" } th { "started" } th { "progress" } }
                    @for op in &o.operations {
                        tr {
                            td { (op.command) } td { (op.phase) }
                            td { (op.username) "@" (op.hostname) " pid " (op.pid) }
                            td { (when(&op.started)) }
                            td {
                                @match op.bytes_total {
                                    Some(t) if t > 0 => {
                                        progress max=(t) value=(op.bytes_done.min(t)) {}
                                        " " (bytes(op.bytes_done)) " of " (bytes(t))
                                        " (" (op.bytes_done.min(t) * 100 / t) "%)"
                                    }
                                    _ => (bytes(op.bytes_done)),
                                }
                            }
                        }
                    }
                }
            }
            @if !o.locks.is_empty() || !o.unreadable_locks.is_empty() {
                table {
                    tr { th { "lock" } th { "command" } th { "holder" } th { "since" } th { "refreshed" } th { "state" } }
                    @for l in &o.unreadable_locks {
                        tr {
                            td { "unreadable" } td {} td { code { "locks/" (l.name) } } td {} td {}
                            td {
                                @if l.stale { span.degraded { "stale" } }
                                @else { span.error { "blocks every command" } }
                            }
                        }
                    }
                    @for l in &o.locks {
                        tr {
                            td { (if l.record.exclusive { "exclusive" } else { "shared" }) }
                            td { (l.record.command) }
                            td { (l.record.username) "@" (l.record.hostname) " pid " (l.record.pid) }
                            td { (l.record.started.as_ref().map(when).unwrap_or_default()) }
                            td { (when(&l.record.time)) }
                            td { @if l.stale { span.degraded { "stale" } } @else { "live" } }
                        }
                    }
                }
            }
            h2 { "Snapshots" }
            table {
                tr { th { "ID" } th { "time" } th { "host" } th { "paths" } th { "tags" } th { "size" } th { "added" } th { "" } }
                @for (id, s) in view.snapshots.iter().rev() {
                    tr {
                        td { (snapshot_link(id)) } td { (when(&s.time)) } td { (s.hostname) }
                        td { (s.paths.join(" ")) } td { (s.tags.join(",")) }
                        td.num { (s.summary.as_ref().map(|x| bytes(x.total_bytes)).unwrap_or_default()) }
                        td.num { (s.summary.as_ref().map(|x| bytes(x.data_added)).unwrap_or_default()) }
                        td { @if s.partial { "partial " } @if s.hold { "held" } }
                    }
                }
            }
            h2 { "Recent changes (audit trail)" }
            @match &view.audit {
                Err(e) => p.error { "The audit trail cannot be read: " (e) },
                Ok(records) => table {
                    tr { th { "time" } th { "command" } th { "who" } th { "added" } th { "removed" } }
                    @for a in records.iter().rev().take(20) {
                        tr {
                            td { (when(&a.time)) } td { (a.command) }
                            td { (a.username) "@" (a.hostname) }
                            @if a.open {
                                td colspan="2" class="degraded" { "not finished: still running, or killed or crashed" }
                            } @else {
                                td { (changes(&a.added)) } td { (changes(&a.removed)) }
                            }
                        }
                    }
                },
            }
            @if let Some(first) = view.audit_unreadable.first() {
                p.error {
                    (view.audit_unreadable.len()) " audit record(s) left out: they cannot be read (`cairn check` names them), the first: " (first)
                }
            }
        },
    )
}

fn changes(c: &cairn_engine::audit::Changes) -> String {
    let mut parts = Vec::new();
    if !c.snapshots.is_empty() {
        parts.push(format!("{} snapshot(s)", c.snapshots.len()));
    }
    if c.packs > 0 {
        parts.push(format!("{} pack(s), {}", c.packs, bytes(c.pack_bytes)));
    }
    if c.index_files > 0 {
        parts.push(format!("{} index file(s)", c.index_files));
    }
    if !c.keys.is_empty() {
        parts.push(format!("{} key(s)", c.keys.len()));
    }
    if c.config {
        parts.push("config".into());
    }
    parts.join(", ")
}

/// `GET /`: the dashboard.
pub async fn dashboard(State(srv): State<Arc<Server>>) -> Result<Response, HttpError> {
    blocking(srv, |s| {
        let (view, o) = s.view()?;
        Ok(render_dashboard(&view, &o).into_response())
    })
    .await
}

fn render_snapshot(id: &Id, snap: &Snapshot, dir: &str, entries: Markup) -> Markup {
    let href = |p: &str| {
        format!(
            "/snapshots/{}?path={}",
            id.to_hex(),
            utf8_percent_encode(p, NON_ALPHANUMERIC)
        )
    };
    // Breadcrumbs: each ancestor of `dir`, linked.
    let mut crumbs = vec![("/".to_string(), "/".to_string())];
    let mut acc = String::new();
    for c in dir.split('/').filter(|c| !c.is_empty()) {
        acc.push('/');
        acc.push_str(c);
        crumbs.push((acc.clone(), format!("{c}/")));
    }
    layout(
        &format!("cairn: snapshot {}", id.short()),
        false,
        html! {
            p { a href="/" { "← dashboard" } }
            h1 { "Snapshot " code { (id.short()) } }
            table {
                tr { th { "ID" } td { code { (id.to_hex()) } } }
                tr { th { "time" } td { (when(&snap.time)) } }
                tr { th { "host, user" } td { (snap.hostname) ", " (snap.username) } }
                tr { th { "paths" } td { (snap.paths.join(" ")) } }
                @if !snap.tags.is_empty() { tr { th { "tags" } td { (snap.tags.join(", ")) } } }
                @if let Some(p) = &snap.parent { tr { th { "parent" } td { (snapshot_link(p)) } } }
                @if let Some(s) = &snap.summary {
                    tr { th { "files" } td { (s.files_new) " new, " (s.files_changed) " changed, " (s.files_unmodified) " unmodified; " (s.dirs) " directories" } }
                    tr { th { "size" } td { (bytes(s.total_bytes)) " (" (bytes(s.data_added)) " added to the repository)" } }
                    tr { th { "took" } td { (s.backup_start) " to " (s.backup_end) } }
                }
                @if snap.partial { tr { th { "partial" } td.degraded { "some entries could not be read" } } }
                @if snap.hold { tr { th { "legal hold" } td { "yes: forget and prune keep it" } } }
                @for d in &snap.databases { tr { th { (d.kind) } td { (d.path) } } }
            }
            h2 {
                @for (path, name) in &crumbs { a href=(href(path)) { (name) } }
            }
            (entries)
        },
    )
}

/// `GET /snapshots/{id}?path=/dir`: a snapshot and one of its directories.
pub async fn snapshot(
    State(srv): State<Arc<Server>>,
    Path(spec): Path<String>,
    Query(q): Query<DirQuery>,
) -> Response {
    let res = blocking(srv, move |s| {
        let (id, snap) = s.snapshot(&spec)?;
        let dir = q.path().to_string();
        let link = |p: &[u8]| {
            format!(
                "/snapshots/{}?path={}",
                id.to_hex(),
                utf8_percent_encode(&String::from_utf8_lossy(p), NON_ALPHANUMERIC)
            )
        };
        let (status, entries) = match list_dir(&s.repo, &snap, &dir) {
            Ok(list) => (StatusCode::OK, html! {
                table {
                    tr { th { "name" } th { "permissions" } th { "owner" } th.num { "size" } th { "modified" } }
                    @for (path, n) in &list {
                        tr {
                            td { @if n.kind == NodeKind::Dir { a href=(link(path)) { (n.display_name()) "/" } } @else { (n.display_name()) } }
                            td { code { (permissions(n.kind, n.mode)) } }
                            td { (if n.user.is_empty() { n.uid.to_string() } else { n.user.clone() }) }
                            td.num { @if n.kind == NodeKind::File { (bytes(n.size)) } }
                            td { (chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).as_ref().map(when).unwrap_or_default()) }
                        }
                    }
                }
                // Quoted for a shell: a path with a space or `;` pasted
                // as shown would run something else.
                p { (list.len()) " entries. To restore: " code { "cairn restore " (restore_spec(&id.short(), &dir)) " --target DIR" } }
            }),
            Err(e) => {
                let status = match e {
                    cairn_engine::Error::InvalidInput(_) => StatusCode::NOT_FOUND,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (status, html! { p.error { (e) } })
            }
        };
        Ok((status, render_snapshot(&id, &snap, &dir, entries)).into_response())
    })
    .await;
    match res {
        Ok(r) => r,
        Err(e) => (
            if e.status == StatusCode::OK {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                e.status
            },
            layout(
                "cairn: error",
                false,
                html! { p { a href="/" { "← dashboard" } } p.error { (e.message) } },
            ),
        )
            .into_response(),
    }
}

/// `GET /find?pattern=`: the search page.
pub async fn find(State(srv): State<Arc<Server>>, Query(q): Query<FindQuery>) -> Response {
    let pattern = q.pattern.clone().unwrap_or_default();
    let res = blocking(srv, move |s| search(s, &q)).await;
    let (status, body) = match res {
        Ok(Searched {
            matches,
            truncated,
            incomplete,
        }) => (
            StatusCode::OK,
            html! {
                p { (matches.len()) " match(es)" @if truncated { ", the first " (matches.len()) " only: narrow the pattern" } "." }
                @for (id, why) in &incomplete {
                    p.error { "snapshot " code { (&id[..8]) } " was searched only in part: " (why) }
                }
                table {
                    tr { th { "snapshot" } th { "path" } th.num { "size" } th { "modified" } }
                    @for m in &matches {
                        @let dir = m.node.path.rsplit_once('/').map(|(d, _)| if d.is_empty() { "/" } else { d }).unwrap_or("/");
                        tr {
                            td { a href={ "/snapshots/" (m.snapshot) } { code { (&m.snapshot[..8]) } } " " (m.time) }
                            td { a href={ "/snapshots/" (m.snapshot) "?path=" (utf8_percent_encode(dir, NON_ALPHANUMERIC)) } { (m.node.path) } }
                            td.num { @if m.node.kind == NodeKind::File { (bytes(m.node.size)) } }
                            td { (m.node.mtime.clone().unwrap_or_default()) }
                        }
                    }
                }
            },
        ),
        Err(e) => (e.status, html! { p.error { (e.message) } }),
    };
    (
        status,
        layout(
            "cairn: find",
            false,
            html! {
                p { a href="/" { "← dashboard" } }
                h1 { "Find" }
                form action="/find" method="get" {
                    input type="search" name="pattern" value=(pattern) size="40";
                    " " input type="submit" value="Find";
                }
                (body)
            },
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_command_shown_is_one_shell_word_per_argument() {
        assert_eq!(restore_spec("3fa2c1e9", "/srv/www"), "3fa2c1e9:/srv/www");
        // Pasted unquoted, this ran `touch PWNED`.
        assert_eq!(
            restore_spec("3fa2c1e9", "/srv/my docs; touch PWNED"),
            "'3fa2c1e9:/srv/my docs; touch PWNED'"
        );
    }
}
