//! The HTTP front: routes, the caller's token checked on each, answers and errors as JSON.
//! Each handler is a thin call into the library the stages use (`ferry status`'s runs, the
//! metrics), run off the async threads because it reads SQLite.

use std::path::PathBuf;
use std::sync::Arc;

use std::collections::BTreeMap;
use std::io::Write as _;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Semaphore;

use super::auth::{Caller, Refusal, Scope, Tokens};
use super::exports::ExportRequest;
use super::imports::ImportRequest;
use super::jobs::{Job, JobStatus, Jobs};
use crate::address::Address;
use crate::stage::{metrics, status};

/// What every handler shares.
pub(crate) struct App {
    pub tokens: Tokens,
    pub state: PathBuf,
    /// The stores requests may name.
    pub stores: BTreeMap<String, Address>,
    pub exports: Jobs,
    pub imports: Jobs,
    /// The largest upload an import takes, in bytes.
    pub max_upload: u64,
    /// One permit per run that may go on at once.
    pub slots: Arc<Semaphore>,
    pub max_runs: usize,
    /// `serve-audit.ndjson`, appended to and synced before a request that changes data is acted on.
    pub audit: std::sync::Mutex<std::fs::File>,
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/runs/{id}/events", get(run_events))
        .route("/api/v1/runs/{id}/rollback", post(rollback))
        .route("/api/v1/export", post(start_export))
        .route("/api/v1/export/{id}", get(export_status))
        .route("/api/v1/export/{id}/download", get(download))
        .route("/api/v1/import", post(start_import))
        .route("/api/v1/import/{id}", get(import_status))
        .route("/api/v1/validate", post(validate))
        .route("/api/v1/compare", post(compare))
        .fallback(not_found)
        .with_state(app)
}

/// A JSON request body; what is wrong with one (not JSON, a field missing or unknown, too
/// large) is a JSON error naming it.
pub(crate) struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejected) => {
                let status = rejected.status();
                let code = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    _ => "bad_request",
                };
                Err(ApiError::new(status, code, rejected.body_text()))
            }
        }
    }
}

/// An error answer: `{"error": {"status", "code", "message"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"status": self.status.as_u16(), "code": self.code, "message": self.message}}));
        let mut r = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// What the library refused or failed at, as an answer: what the caller asked for that cannot
/// be done (409), a stream that is not one (422), the stores or the server (502, 500).
impl From<crate::error::Error> for ApiError {
    fn from(e: crate::error::Error) -> ApiError {
        use crate::error::ErrorKind as K;
        let (status, code) = match e.kind() {
            K::Usage => (StatusCode::CONFLICT, "refused"),
            K::Input | K::Data | K::Truncated => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_stream"),
            K::Source | K::Target | K::Transient => (StatusCode::BAD_GATEWAY, "store_failed"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "a request failed");
        }
        ApiError::new(status, code, e.to_string())
    }
}

/// The caller, if its token is known and grants `scope`.
fn authorize<'a>(app: &'a App, headers: &HeaderMap, scope: Scope) -> Result<&'a Caller, ApiError> {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let caller = app.tokens.caller(header).map_err(|r| {
        let message = match r {
            Refusal::NoToken => {
                "this needs a token: Authorization: Bearer TOKEN (ferry serve --new-token NAME makes one)"
            }
            Refusal::UnknownToken => "the token is not one the server's config knows",
        };
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    })?;
    if !caller.may(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} does not have the {} scope this needs",
                caller.name,
                scope.as_str()
            ),
        ));
    }
    Ok(caller)
}

/// Run blocking library work (SQLite reads) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics_text(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    let state = app.state.clone();
    let text = blocking(move || Ok(metrics::render(&status::runs_now(&state)?))).await?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

async fn runs(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    let state = app.state.clone();
    let runs = blocking(move || status::runs_now(&state)).await?;
    let list: Vec<serde_json::Value> = runs.iter().map(status::RunNow::json).collect();
    Ok(Json(json!({"runs": list})))
}

async fn run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    let state = app.state.clone();
    let wanted = id.clone();
    match blocking(move || status::run_detail(&state, &wanted)).await? {
        Some(run) => Ok(Json(run)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no run {id} in the server's state file (GET /api/v1/runs lists them)"),
        )),
    }
}

/// `POST /api/v1/export`: start an export of a named store (one entity, some tables, or all).
async fn start_export(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(request): Body<ExportRequest>,
) -> Result<Response, ApiError> {
    let caller = authorize(&app, &headers, Scope::Export)?.clone();
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let source = store(&app, &request.store)?;
    if request.root.is_some() && !request.tables.is_empty() {
        return Err(bad("give root (one entity) or tables, not both".into()));
    }
    if request.follow_fks && request.root.is_none() {
        return Err(bad("follow_fks follows the references to a root: give root too".into()));
    }
    if let Some(root) = &request.root {
        crate::stage::entity::Root::parse(root)
            .map_err(|_| bad(format!("root {root:?}: write TABLE:COLUMN=VALUE, e.g. users:id=42")))?;
    }
    if !caller.may_export(request.root.as_deref()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} may export only the entities its config lists, and {} is not one",
                caller.name,
                request
                    .root
                    .as_deref()
                    .map_or("a whole table".to_owned(), |r| format!("{r:?}"))
            ),
        ));
    }
    let slot = slot(&app)?;
    let id = uuid::Uuid::now_v7().to_string();
    audit(&app, &caller, "export", &id, &request.store, json!(request))?;
    let download = format!("/api/v1/export/{id}/download");
    let job = app.exports.start(&id, &caller.name, json!(request), Some(download))?;
    let runner = Arc::clone(&app);
    tokio::task::spawn_blocking(move || {
        super::exports::run(&runner.exports, &runner.state, &id, &request, source);
        drop(slot);
    });
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// The store a request names.
fn store(app: &App, name: &str) -> Result<Address, ApiError> {
    app.stores.get(name).cloned().ok_or_else(|| {
        let names: Vec<&str> = app.stores.keys().map(String::as_str).collect();
        let names = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("no store {name:?} in the server's config (stores: {names})"),
        )
    })
}

/// A permit for one more run, or 429 when `max_runs` are going on.
fn slot(app: &App) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    Arc::clone(&app.slots).try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_runs",
            format!(
                "{} runs are going on, the most this server runs at once (max_runs): try again when one ends",
                app.max_runs
            ),
        )
    })
}

/// A job the caller may see: its own, or any for an admin.
fn own(jobs: &Jobs, kind: &str, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    match jobs.get(id) {
        Some(job) if job.caller == caller.name || caller.is_admin() => Ok(job),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {kind} {id} of token {:?}", caller.name),
        )),
    }
}

async fn export_status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let caller = authorize(&app, &headers, Scope::Export)?;
    own(&app.exports, "export", caller, &id).map(Json)
}

async fn import_status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let caller = authorize(&app, &headers, Scope::Import)?;
    own(&app.imports, "import", caller, &id).map(Json)
}

/// `POST /api/v1/import?store=NAME[&on_conflict=skip][&create=true][&dry_run=true]`, the stream
/// as the body (or as the `file` field of a multipart form): kept whole first, then imported in
/// the background (202 and the import's record), or with `dry_run` planned at once (200 and the
/// PLAN lines).
async fn start_import(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    let caller = authorize(&app, req.headers(), Scope::Import)?.clone();
    let request: ImportRequest = axum::extract::Query::try_from_uri(req.uri())
        .map(|q| q.0)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let target = store(&app, &request.store)?;
    let slot = slot(&app)?;
    let id = uuid::Uuid::now_v7().to_string();
    let partial = app.imports.file(&id, "ndjson.partial");
    let input = app.imports.file(&id, "ndjson");
    if let Err(e) = super::upload::save(req, &partial, app.max_upload).await {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &input).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("keeping the upload: {e}"),
        )
    })?;
    if request.dry_run {
        let state = app.state.clone();
        let (r, path) = (request.clone(), input.clone());
        let planned = blocking(move || super::imports::plan(&r, target, &state, &path)).await;
        let _ = std::fs::remove_file(&input);
        drop(slot);
        return Ok(Json(json!({"plan": planned?})).into_response());
    }
    audit(&app, &caller, "import", &id, &request.store, json!(request))?;
    let job = app.imports.start(&id, &caller.name, json!(request), None)?;
    let runner = Arc::clone(&app);
    tokio::task::spawn_blocking(move || {
        super::imports::run(&runner.imports, &runner.state, &id, &request, target, &input);
        drop(slot);
    });
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// The export's stream file, once complete; HTTP Range requests resume a cut download.
async fn download(State(app): State<Arc<App>>, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let caller = authorize(&app, req.headers(), Scope::Export)?;
    let job = own(&app.exports, "export", caller, &id)?;
    if job.status != JobStatus::Complete {
        let why = match job.status {
            JobStatus::Running => "is still running: GET /api/v1/export/ID says when it is complete".to_owned(),
            _ => format!(
                "failed: {}",
                job.error.as_deref().unwrap_or("see GET /api/v1/export/ID")
            ),
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!("export {id} {why}"),
        ));
    }
    let file = app.exports.file(&id, "ndjson");
    let mut r = tower_http::services::ServeFile::new(&file)
        .try_call(req)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("reading export {id}: {e}"),
            )
        })?
        .into_response();
    if r.status().is_success() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
    }
    Ok(r)
}

/// Write and sync an audit line before the request is acted on; a log that cannot be written
/// refuses the request.
fn audit(
    app: &App,
    caller: &Caller,
    action: &str,
    run: &str,
    store: &str,
    request: serde_json::Value,
) -> Result<(), ApiError> {
    let line = crate::protocol::side::RequestAudit {
        at: crate::protocol::now_rfc3339(),
        caller: caller.name.clone(),
        action: action.into(),
        run: run.into(),
        store: store.into(),
        request,
    };
    let mut text = serde_json::to_vec(&line).expect("an audit line serializes");
    text.push(b'\n');
    let mut file = app.audit.lock().unwrap_or_else(|p| p.into_inner());
    file.write_all(&text).and_then(|()| file.sync_data()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit_failed",
            format!("the audit log could not be written ({e}): nothing was done"),
        )
    })
}

/// `POST /api/v1/validate[?export=ID]`: a stream (the body, or an export this token made)
/// checked on its own: whole, its counts and digests as its producer says, its keys and
/// references. 200 with the verdict, the report and the findings.
async fn validate(State(app): State<Arc<App>>, req: Request) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = authorize(&app, req.headers(), Scope::Read)?.clone();
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Query {
        export: Option<String>,
    }
    let q: Query = axum::extract::Query::try_from_uri(req.uri())
        .map(|q| q.0)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    if let Some(id) = q.export {
        let job = own(&app.exports, "export", &caller, &id)?;
        if job.status != JobStatus::Complete {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_ready",
                format!("export {id} is not complete"),
            ));
        }
        let file = app.exports.file(&id, "ndjson");
        return blocking(move || super::imports::validate(&file, None)).await.map(Json);
    }
    checked_upload(&app, req, None).await
}

/// `POST /api/v1/compare?store=NAME`: the stream in the body compared with a store, row by row,
/// as `ferry-validate` compares them.
async fn compare(State(app): State<Arc<App>>, req: Request) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, req.headers(), Scope::Import)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Query {
        store: String,
    }
    let q: Query = axum::extract::Query::try_from_uri(req.uri())
        .map(|q| q.0)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let target = store(&app, &q.store)?;
    checked_upload(&app, req, Some(target)).await
}

/// Keep the upload, validate it (against `target`, or on its own), and forget it.
async fn checked_upload(app: &App, req: Request, target: Option<Address>) -> Result<Json<serde_json::Value>, ApiError> {
    let slot = slot(app)?;
    let id = uuid::Uuid::now_v7().to_string();
    let partial = app.imports.file(&id, "check.partial");
    let saved = super::upload::save(req, &partial, app.max_upload).await;
    let checked = match saved {
        Ok(_) => {
            let file = partial.clone();
            blocking(move || super::imports::validate(&file, target)).await
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&partial);
    drop(slot);
    checked.map(Json)
}

/// `GET /api/v1/runs/ID/events`: the run's progress as Server-Sent Events: a `progress` event
/// (the run as `GET /api/v1/runs/ID` gives it, batches left out) each time it changes, polled
/// every half second, then an `end` event once it is no longer running. 404 for a run the state
/// file does not hold.
async fn run_events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    authorize(&app, &headers, Scope::Read)?;
    let first = current(&app, &id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no run {id} in the server's state file (GET /api/v1/runs lists them)"),
        )
    })?;
    // State: the app, the run, the last run sent, and whether the end was sent.
    let start = (app, id, None::<serde_json::Value>, Some(first), false);
    let events = futures_util::stream::unfold(start, |(app, id, last, mut next, ended)| async move {
        if ended {
            return None;
        }
        loop {
            let now = match next.take() {
                Some(n) => n,
                None => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    match current(&app, &id).await {
                        Ok(Some(n)) => n,
                        // The run is gone (its state file replaced) or unreadable: the stream ends.
                        _ => return None,
                    }
                }
            };
            let running = now["run"]["status"] == "running";
            if !running {
                let event = Event::default().event("end").json_data(&now).ok()?;
                return Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (app, id, Some(now), None, true),
                ));
            }
            if last.as_ref() != Some(&now) {
                let event = Event::default().event("progress").json_data(&now).ok()?;
                return Some((Ok(event), (app, id, Some(now), None, false)));
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// A run as it is now, its pace included; `None` when the state file does not hold it.
async fn current(app: &Arc<App>, id: &str) -> Result<Option<serde_json::Value>, ApiError> {
    let (state, wanted) = (app.state.clone(), id.to_owned());
    let runs = blocking(move || status::runs_now(&state)).await?;
    Ok(runs.iter().find(|r| r.run.run_id == wanted).map(|r| {
        let mut j = r.json();
        // The time since the last progress changes every poll: not a change of the run.
        j["idle_s"] = serde_json::Value::Null;
        j
    }))
}

/// `POST /api/v1/runs/ID/rollback` (scope rollback): `ferry rollback --batch ID`. With no body
/// (or `{"confirm": false}`) the plan; with `{"confirm": true}` it is carried out, the plan lines
/// then being what was done. 200 with the plan and the counts.
async fn rollback(State(app): State<Arc<App>>, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        #[serde(default)]
        confirm: bool,
    }
    let caller = authorize(&app, req.headers(), Scope::Rollback)?.clone();
    let bytes = axum::body::to_bytes(req.into_body(), 64 << 10)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let ask: Ask = if bytes.iter().all(u8::is_ascii_whitespace) {
        Ask::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("the body: {e}")))?
    };
    let Some(run) = current(&app, &id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no run {id} in the server's state file (GET /api/v1/runs lists them)"),
        ));
    };
    // A PostgreSQL target is reached with the store's own address (its password), never one
    // from the request.
    let recorded = run["run"]["target"].as_str().unwrap_or_default().to_owned();
    let target = app.stores.values().find_map(|a| match a {
        Address::Postgres(url) if a.redacted() == recorded => Some(url.clone()),
        _ => None,
    });
    let store = app
        .stores
        .iter()
        .find(|(_, a)| a.redacted() == recorded)
        .map_or(recorded.clone(), |(name, _)| name.clone());
    if ask.confirm {
        audit(&app, &caller, "rollback", &id, &store, json!({"confirm": true}))?;
    }
    let cfg = crate::stage::rollback::RollbackConfig {
        state_path: app.state.clone(),
        batch: id,
        last: false,
        full: false,
        db_only: false,
        objects_only: false,
        confirm: ask.confirm,
        force: false,
        failed_only: false,
        s3: Default::default(),
        target,
    };
    let (plan, outcome) = blocking(move || {
        let mut out = crate::protocol::StreamWriter::new(Vec::new());
        let outcome = crate::stage::rollback::run(&cfg, &mut out)?;
        let text = out.into_inner()?;
        let plan: Vec<serde_json::Value> = String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok((plan, outcome))
    })
    .await?;
    Ok(Json(json!({"confirmed": ask.confirm, "plan": plan, "outcome": outcome})).into_response())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {}", uri.path()),
    )
}
