//! The HTTP front: routes, the caller's token checked on each, answers and errors as JSON.
//! Each handler is a thin call into the library the stages use (`ferry status`'s runs, the
//! metrics), run off the async threads because it reads SQLite.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::auth::{Caller, Refusal, Scope, Tokens};
use crate::stage::{metrics, status};

/// What every handler shares.
pub(crate) struct App {
    pub tokens: Tokens,
    pub state: PathBuf,
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run))
        .fallback(not_found)
        .with_state(app)
}

/// An error answer: `{"error": {"status", "code", "message"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
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

impl From<crate::error::Error> for ApiError {
    fn from(e: crate::error::Error) -> ApiError {
        tracing::error!(error = %e, "a request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
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

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {}", uri.path()),
    )
}
