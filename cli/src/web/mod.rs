//! `cairn serve`: a read-only HTTP view of one repository: a dashboard for
//! people, JSON for tools, Prometheus metrics for monitoring. Every answer
//! comes from one engine call ([`cairn_engine::overview`],
//! [`cairn_engine::listing`], [`cairn_engine::audit`]); this module only
//! routes, authenticates and renders.

mod api;
mod metrics;
mod page;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_engine::audit::AuditRecord;
use cairn_engine::overview::{Overview, OverviewOptions, overview};
use cairn_engine::repository::{Repository, SnapshotList};
use cairn_engine::snapshot::PickError;
use cairn_engine::{Error, Id, activity};

/// What every request shares.
pub struct Server {
    repo: Repository,
    options: OverviewOptions,
    token: Option<String>,
    /// Without a token, the only host names accepted in the Host header
    /// (see [`Server::host_allowed`]); `None` accepts any.
    hosts: Option<Vec<String>>,
    cache_for: Duration,
    cached: Mutex<Option<(Instant, Arc<View>)>>,
    /// The audit records read so far: each is read once.
    audit_read: Mutex<cairn_engine::audit::AuditCache>,
}

/// One look at the repository, shared by the requests of a few seconds
/// (`--cache-for`), so a dashboard left open does not list the storage on
/// every refresh.
pub struct View {
    /// The overview; its running operations are re-read on every request.
    pub overview: Overview,
    /// Every snapshot, oldest first.
    pub snapshots: SnapshotList,
    /// The audit trail, oldest first, or why it could not be read.
    pub audit: Result<Vec<AuditRecord>, String>,
    /// Why each record of the trail left out of `audit` was (damaged,
    /// not cairn's, or its read failed): `cairn check` names them too.
    pub audit_unreadable: Vec<String>,
}

/// An error answer: a status and a message.
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn bad_request(e: impl std::fmt::Display) -> HttpError {
        HttpError {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
        }
    }

    fn not_found(e: impl std::fmt::Display) -> HttpError {
        HttpError {
            status: StatusCode::NOT_FOUND,
            message: e.to_string(),
        }
    }
}

impl From<Error> for HttpError {
    fn from(e: Error) -> HttpError {
        let status = match e {
            Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Error::Missing(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError {
            status,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl Server {
    /// A server for `repo` listening on `listen` (given as the host name
    /// `name`, if it was); `token` (if any) must come with every request.
    pub fn new(
        repo: Repository,
        options: OverviewOptions,
        token: Option<String>,
        listen: std::net::SocketAddr,
        name: Option<&str>,
        cache_for: Duration,
    ) -> Server {
        // A page on another site can point its own name at 127.0.0.1 and
        // read an unauthenticated loopback server through the browser (DNS
        // rebinding); the Host header it sends still names that site.
        let hosts = (token.is_none() && listen.ip().is_loopback()).then(|| {
            let ip = match listen.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            // The name it was told to listen on, which resolved to a
            // loopback address here, is this machine's to use too.
            ["localhost", "127.0.0.1", "[::1]", &ip]
                .into_iter()
                .chain(name)
                .map(|h| h.to_string())
                .collect()
        });
        Server {
            repo,
            options,
            token,
            hosts,
            cache_for,
            cached: Mutex::new(None),
            audit_read: Mutex::default(),
        }
    }

    /// Whether a request with this Host header may be answered.
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        // The name without its port (`[::1]:8722`, `localhost:8722`).
        let name = match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => &host[..i],
            _ => host,
        };
        hosts.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    /// The current view: at most `cache_for` old, with the running
    /// operations of this very moment.
    fn view(&self) -> Result<(Arc<View>, Overview), HttpError> {
        // A request that panicked while it refreshed leaves the cache usable.
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = match &*cached {
            Some((at, v)) if at.elapsed() < self.cache_for => v.clone(),
            _ => {
                // New index files name the trees of new snapshots.
                self.repo.refresh_index()?;
                let (overview, snapshots) = overview(&self.repo, &self.options)?;
                // One damaged record (check names it) must not hide the trail.
                let mut read = self
                    .audit_read
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (audit, audit_unreadable) = match cairn_engine::audit::records_cached(
                    &**self.repo.backend(),
                    self.repo.key(),
                    &mut read,
                ) {
                    Ok((records, left_out)) => (
                        Ok(records),
                        left_out.iter().map(ToString::to_string).collect(),
                    ),
                    Err(e) => (Err(e.to_string()), Vec::new()),
                };
                let v = Arc::new(View {
                    overview,
                    snapshots,
                    audit,
                    audit_unreadable,
                });
                *cached = Some((Instant::now(), v.clone()));
                v
            }
        };
        let mut overview = fresh.overview.clone();
        overview.operations = activity::running(&self.repo);
        Ok((fresh, overview))
    }

    /// The snapshot `spec` names (`latest`, an ID or a unique prefix).
    fn snapshot(&self, spec: &str) -> Result<(Id, cairn_engine::snapshot::Snapshot), HttpError> {
        let (view, _) = self.view()?;
        if spec == "latest" {
            let picked = view.snapshots.iter().filter(|s| !s.1.is_recovered());
            return cairn_engine::snapshot::newest_by(picked, |s| s.1.time)
                .cloned()
                .ok_or_else(|| HttpError::not_found("the repository has no snapshots"));
        }
        let all = view.snapshots.iter().map(|s| (s.0.to_hex(), s));
        match cairn_engine::snapshot::pick_by_prefix(spec, all) {
            Ok(one) => Ok(one.clone()),
            Err(e @ PickError::Several(..)) => Err(HttpError::bad_request(e)),
            Err(e) => Err(HttpError::not_found(e)),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        // The scheme's name is case-insensitive (RFC 7235).
        let (scheme, rest) = given.split_once(' ').unwrap_or((given, ""));
        let secret = if scheme.eq_ignore_ascii_case("Bearer") {
            rest.trim().as_bytes().to_vec()
        } else if scheme.eq_ignore_ascii_case("Basic") {
            let b = rest;
            // A browser's login prompt: any user name, the token as password.
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                Ok(pair) => match pair.iter().position(|&c| c == b':') {
                    Some(i) => pair[i + 1..].to_vec(),
                    None => return false,
                },
                Err(_) => return false,
            }
        } else {
            return false;
        };
        // Equal-length digests, compared in constant time (blake3::Hash's
        // equality), so neither the token nor its length leaks by timing.
        blake3::hash(&secret) == blake3::hash(token.as_bytes())
    }
}

/// Runs `f` on a thread that may block (engine calls read storage).
async fn blocking<T: Send + 'static>(
    srv: Arc<Server>,
    f: impl FnOnce(&Server) -> Result<T, HttpError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(move || f(&srv))
        .await
        .unwrap_or_else(|e| {
            Err(HttpError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("request failed: {e}"),
            })
        })
}

async fn authenticate(State(srv): State<Arc<Server>>, req: Request, next: Next) -> Response {
    if !srv.host_allowed(req.headers()) {
        return HttpError {
            status: StatusCode::FORBIDDEN,
            message: "unknown Host: without a token this server answers only requests for localhost or its loopback address".into(),
        }
        .into_response();
    }
    if srv.authorized(req.headers()) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"cairn\"")],
        axum::Json(serde_json::json!({
            "error": "a token is required: send `Authorization: Bearer TOKEN` (or the token as a Basic password)"
        })),
    )
        .into_response()
}

/// The routes, behind the token check.
pub fn router(srv: Arc<Server>) -> Router {
    Router::new()
        .route("/", get(page::dashboard))
        .route("/snapshots/{id}", get(page::snapshot))
        .route("/find", get(page::find))
        .route("/api/v1/find", get(api::find_api))
        .route("/api/v1/overview", get(api::overview))
        .route("/api/v1/health", get(api::health))
        .route("/api/v1/snapshots", get(api::snapshots))
        .route("/api/v1/snapshots/{id}", get(api::snapshot))
        .route("/api/v1/snapshots/{id}/ls", get(api::ls))
        .route("/api/v1/operations", get(api::operations))
        .route("/api/v1/audit", get(api::audit))
        .route("/metrics", get(metrics::metrics))
        .layer(middleware::from_fn_with_state(srv.clone(), authenticate))
        .with_state(srv)
}
