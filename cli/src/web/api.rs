//! The JSON API (`/api/v1/...`).

use std::sync::Arc;

use axum::Json;
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
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
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

/// `GET /api/v1/snapshots/{id}/ls?path=/dir`: the entries of one directory.
pub async fn ls(
    State(srv): State<Arc<Server>>,
    Path(id): Path<String>,
    Query(q): Query<DirQuery>,
) -> Result<Json<Value>, HttpError> {
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
    /// Report at most this many matches (default [`FIND_LIMIT`]).
    pub limit: Option<usize>,
}

/// Matches reported by default: a search of a large repository stops there.
pub const FIND_LIMIT: usize = 500;

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

/// Runs the search `q` describes: matches newest snapshot first, at most
/// the limit, and whether it stopped there.
pub fn search(s: &Server, q: &FindQuery) -> Result<(Vec<Found>, bool), HttpError> {
    let Some(pattern) = q.pattern.as_deref().filter(|p| !p.is_empty()) else {
        return Err(HttpError::bad_request("give a pattern: ?pattern=*.pdf"));
    };
    let limit = q.limit.unwrap_or(FIND_LIMIT).max(1);
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
    match r {
        Ok(_) => Ok((found, false)),
        Err(cairn_engine::Error::Interrupted) if truncated => Ok((found, true)),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v1/find?pattern=*.pdf[&snapshot=ID][&limit=N]`: entries whose
/// name (or path, for a pattern with `/`) matches, newest snapshot first.
pub async fn find_api(
    State(srv): State<Arc<Server>>,
    Query(q): Query<FindQuery>,
) -> Result<Json<Value>, HttpError> {
    blocking(srv, move |s| {
        let (matches, truncated) = search(s, &q)?;
        Ok(Json(json!({ "matches": matches, "truncated": truncated })))
    })
    .await
}
