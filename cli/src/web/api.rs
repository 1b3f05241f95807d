//! The JSON API (`/api/v1/...`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_engine::find::{FindOptions, find};
use cairn_engine::listing::{NodeInfo, SnapshotInfo, list_dir};
use cairn_engine::overview::Status;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{HttpError, Server, blocking};

/// `GET /api/v1/overview`: everything the dashboard shows.
pub async fn overview(State(srv): State<Arc<Server>>) -> Result<Json<Value>, HttpError> {
    blocking(srv, |s| {
        let (_, o) = s.view()?;
        Ok(Json(
            serde_json::to_value(o).expect("an overview serialises"),
        ))
    })
    .await
}

/// `GET /api/v1/health`: the verdict; 503 when failing, so that an uptime
/// monitor needs no JSON parsing.
pub async fn health(State(srv): State<Arc<Server>>) -> Result<Response, HttpError> {
    blocking(srv, |s| {
        let (_, o) = s.view()?;
        let code = match o.health.status {
            Status::Failing => StatusCode::SERVICE_UNAVAILABLE,
            Status::Ok | Status::Degraded => StatusCode::OK,
        };
        Ok((code, Json(o.health)).into_response())
    })
    .await
}

/// `GET /api/v1/snapshots`: every snapshot, oldest first, as `ls --json`
/// describes one.
pub async fn snapshots(State(srv): State<Arc<Server>>) -> Result<Json<Value>, HttpError> {
    blocking(srv, |s| {
        let (view, _) = s.view()?;
        let list: Vec<SnapshotInfo> = view
            .snapshots
            .iter()
            .map(|(id, snap)| SnapshotInfo::new(id, snap))
            .collect();
        Ok(Json(
            serde_json::to_value(list).expect("snapshots serialise"),
        ))
    })
    .await
}

/// `GET /api/v1/snapshots/{id}`: one snapshot (`latest`, an ID or a prefix).
pub async fn snapshot(
    State(srv): State<Arc<Server>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, HttpError> {
    let id = path(id)?;
    blocking(srv, move |s| {
        let (id, snap) = s.snapshot(&id)?;
        Ok(Json(
            serde_json::to_value(SnapshotInfo::new(&id, &snap)).expect("a snapshot serialises"),
        ))
    })
    .await
}

/// The directory asked for (the root by default).
#[derive(Deserialize)]
pub struct DirQuery {
    path: Option<String>,
}

impl DirQuery {
    /// The directory, `/` if none was given.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

/// A query string that did not parse (`limit=abc`), as an API error: a
/// JSON body like every other, not axum's plain text.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, HttpError> {
    q.map(|Query(t)| t).map_err(|e| HttpError {
        status: StatusCode::BAD_REQUEST,
        message: e.body_text(),
    })
}

/// A path parameter that did not parse (`%FF`), as [`query`] does.
fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, HttpError> {
    p.map(|Path(t)| t).map_err(|e| HttpError {
        status: StatusCode::BAD_REQUEST,
        message: e.body_text(),
    })
}

/// `GET /api/v1/snapshots/{id}/ls?path=/dir`: the entries of one directory.
pub async fn ls(
    State(srv): State<Arc<Server>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<DirQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let id = path(id)?;
    let q = query(q)?;
    blocking(srv, move |s| {
        let (id, snap) = s.snapshot(&id)?;
        let dir = q.path().to_string();
        let entries: Vec<NodeInfo> = list_dir(&s.repo, &snap, &dir)
            .map_err(|e| match e {
                cairn_engine::Error::InvalidInput(m) => HttpError::not_found(m),
                e => e.into(),
            })?
            .iter()
            .map(|(path, node)| NodeInfo::new(path, node))
            .collect();
        Ok(Json(json!({
            "snapshot": id.to_hex(),
            "path": dir,
            "entries": entries,
        })))
    })
    .await
}

/// `GET /api/v1/operations`: locks from every machine, and this machine's
/// running commands with their progress.
pub async fn operations(State(srv): State<Arc<Server>>) -> Result<Json<Value>, HttpError> {
    blocking(srv, |s| {
        let (_, o) = s.view()?;
        Ok(Json(json!({
            "locks": o.locks,
            "unreadable_locks": o.unreadable_locks,
            "operations": o.operations,
        })))
    })
    .await
}

/// `GET /api/v1/audit`: the audit trail, oldest first.
pub async fn audit(State(srv): State<Arc<Server>>) -> Result<Json<Value>, HttpError> {
    blocking(srv, |s| {
        let (view, _) = s.view()?;
        match &view.audit {
            Ok(records) => Ok(Json(
                serde_json::to_value(records).expect("audit records serialise"),
            )),
            Err(e) => Err(HttpError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: e.clone(),
            }),
        }
    })
    .await
}

/// A search (`/api/v1/find`, `/find`).
#[derive(Deserialize)]
pub struct FindQuery {
    /// A glob pattern, as `cairn find` takes it.
    pub pattern: Option<String>,
    /// Only this snapshot (ID, prefix or `latest`); default every one.
    pub snapshot: Option<String>,
    /// Report at most this many matches (default [`FIND_LIMIT`], at most
    /// [`FIND_LIMIT_MAX`]).
    pub limit: Option<usize>,
}

/// Matches reported by default: a search of a large repository stops there.
pub const FIND_LIMIT: usize = 500;
/// Matches reported at most, whatever `limit` asks: `pattern=*` with no
/// bound held every entry of every snapshot in memory several times over.
pub const FIND_LIMIT_MAX: usize = 10_000;

/// What a search found.
pub struct Searched {
    /// Matches, newest snapshot first.
    pub matches: Vec<Found>,
    /// Whether it stopped at the limit.
    pub truncated: bool,
    /// Snapshots searched only in part (a tree missing or damaged), each
    /// with why: a search that skipped them found "nothing" silently.
    pub incomplete: Vec<(String, String)>,
}

/// One match.
#[derive(serde::Serialize)]
pub struct Found {
    /// The snapshot's full ID.
    pub snapshot: String,
    /// Its time.
    pub time: String,
    /// The entry, as `ls --json` prints it.
    #[serde(flatten)]
    pub node: NodeInfo,
}

/// Runs the search `q` describes.
pub fn search(s: &Server, q: &FindQuery) -> Result<Searched, HttpError> {
    let Some(pattern) = q.pattern.as_deref().filter(|p| !p.is_empty()) else {
        return Err(HttpError::bad_request("give a pattern: ?pattern=*.pdf"));
    };
    let limit = q.limit.unwrap_or(FIND_LIMIT).clamp(1, FIND_LIMIT_MAX);
    // Newest first: the copy a user wants back is usually the latest. All
    // of them as they are now, listed once (by ID from the cached view,
    // each was listed again, and one forgotten since failed the search).
    let snapshots: Vec<String> = match &q.snapshot {
        Some(spec) => vec![s.snapshot(spec)?.0.to_hex()],
        None => Vec::new(),
    };
    let opts = FindOptions {
        patterns: vec![pattern.to_string()],
        snapshots,
        newest_first: true,
        ..FindOptions::default()
    };
    let mut found = Vec::new();
    let mut truncated = false;
    let r = find(&s.repo, &opts, &mut |m| {
        if found.len() == limit {
            truncated = true;
            // Stops the walk; told apart from a real failure below.
            return Err(cairn_engine::Error::Interrupted);
        }
        found.push(Found {
            snapshot: m.snapshot_id.to_hex(),
            time: m.snapshot.time.to_rfc3339(),
            node: NodeInfo::new(m.path, m.node),
        });
        Ok(())
    });
    let incomplete = match r {
        Ok(summary) => summary.incomplete,
        Err(cairn_engine::Error::Interrupted) if truncated => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(Searched {
        matches: found,
        truncated,
        incomplete: incomplete
            .into_iter()
            .map(|(id, why)| (id.to_hex(), why))
            .collect(),
    })
}

/// `GET /api/v1/find?pattern=*.pdf[&snapshot=ID][&limit=N]`: entries whose
/// name (or path, for a pattern with `/`) matches, newest snapshot first.
pub async fn find_api(
    State(srv): State<Arc<Server>>,
    q: Result<Query<FindQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let q = query(q)?;
    blocking(srv, move |s| {
        let found = search(s, &q)?;
        let incomplete: Vec<Value> = found
            .incomplete
            .iter()
            .map(|(id, why)| json!({ "snapshot": id, "error": why }))
            .collect();
        Ok(Json(json!({
            "matches": found.matches,
            "truncated": found.truncated,
            "incomplete": incomplete,
        })))
    })
    .await
}
