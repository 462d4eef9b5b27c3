//! What every handler shares: the caller's token checked against the scope a route needs, the
//! stores named by the config, the runs' slots, the audit log, and the answers that need no
//! store (health, an unknown route). The handlers are thin calls into the library the stages
//! use, run off the async threads when they read or write a store: [`super::runs`] (runs,
//! progress, metrics, rollback) and [`super::data`] (exports, imports, validation).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::json;
use tokio::sync::Semaphore;

use super::auth::{Caller, Refusal, Scope, Tokens};
use super::error::ApiError;
use super::jobs::{Job, Jobs};
use crate::address::Address;

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
    /// Where alerts go, when the config says.
    pub alerts: Option<super::alerts::Alerts>,
    /// One lock per store imports into: they take turns (a store takes one writer).
    pub import_locks: std::sync::Mutex<BTreeMap<String, Arc<std::sync::Mutex<()>>>>,
}

impl App {
    /// The lock imports into `store` take turns on.
    pub(crate) fn import_lock(&self, store: &str) -> Arc<std::sync::Mutex<()>> {
        let mut locks = self.import_locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(store.to_owned()).or_default())
    }
}

/// The caller, if its token is known and grants `scope`.
pub(super) fn authorize<'a>(app: &'a App, headers: &HeaderMap, scope: Scope) -> Result<&'a Caller, ApiError> {
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
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The store a request names.
pub(super) fn store(app: &App, caller: &Caller, name: &str) -> Result<Address, ApiError> {
    if !caller.may_use(name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} may not use the store {name:?} (its config's stores)",
                caller.name
            ),
        ));
    }
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
pub(super) fn slot(app: &App) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
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
pub(super) fn own(jobs: &Jobs, kind: &str, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    match jobs.get(id) {
        Some(job) if job.caller == caller.name || caller.is_admin() => Ok(job),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {kind} {id} of token {:?}", caller.name),
        )),
    }
}

/// Write and sync an audit line before the request is acted on; a log that cannot be written
/// refuses the request.
pub(super) fn audit(
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

pub(super) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {}", uri.path()),
    )
}

pub(super) async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method} (see ferry serve --help)", uri.path()),
    )
}
