//! The JSON API (`/api/v1/...`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
