//! Data over HTTP: exports (started, watched, downloaded), imports (uploaded, planned, run),
//! and streams validated on their own or compared with a store.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::app::{App, audit, authorize, blocking, own, slot, store};
use super::auth::Scope;
use super::error::{ApiError, Body, query};
use super::exports::ExportRequest;
use super::imports::ImportRequest;
use super::jobs::{Job, JobStatus};
use crate::address::Address;

/// `POST /api/v1/export`: start an export of a named store (one entity, some tables, or all).
pub(super) async fn start_export(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(request): Body<ExportRequest>,
) -> Result<Response, ApiError> {
    let caller = authorize(&app, &headers, Scope::Export)?.clone();
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let source = store(&app, &caller, &request.store)?;
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
    let job = app
        .exports
        .start(&id, &caller.name, json!(request), Some(download), None)?;
    let runner = Arc::clone(&app);
    tokio::task::spawn_blocking(move || {
        super::exports::run(&runner.exports, &runner.state, &id, &request, source);
        drop(slot);
    });
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

pub(super) async fn export_status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let caller = authorize(&app, &headers, Scope::Export)?;
    own(&app.exports, "export", caller, &id).map(Json)
}

pub(super) async fn import_status(
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
pub(super) async fn start_import(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    let caller = authorize(&app, req.headers(), Scope::Import)?.clone();
    let request: ImportRequest = query(req.uri())?;
    let target = store(&app, &caller, &request.store)?;
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
    // A body that does not start as a stream is refused now, not after a 202.
    let run = match super::upload::stream_run_id(&input) {
        Ok(run) => run,
        Err(e) => {
            let _ = std::fs::remove_file(&input);
            return Err(e);
        }
    };
    if request.dry_run {
        let state = app.state.clone();
        let (r, path) = (request.clone(), input.clone());
        let planned = blocking(move || super::imports::plan(&r, target, &state, &path)).await;
        let _ = std::fs::remove_file(&input);
        drop(slot);
        return Ok(Json(json!({"plan": planned?})).into_response());
    }
    let started = audit(&app, &caller, "import", &id, &request.store, json!(request))
        .and_then(|()| Ok(app.imports.start(&id, &caller.name, json!(request), None, run)?));
    let job = match started {
        Ok(job) => job,
        Err(e) => {
            let _ = std::fs::remove_file(&input);
            return Err(e);
        }
    };
    let runner = Arc::clone(&app);
    let one_at_a_time = app.import_lock(&request.store);
    tokio::task::spawn_blocking(move || {
        // Imports into one store wait for each other (a store takes one writer), as running.
        let _turn = one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        super::imports::run(&runner.imports, &runner.state, &id, &request, target, &input);
        // The upload is not needed once its import ended: sent again, it is found done.
        let _ = std::fs::remove_file(&input);
        drop(slot);
    });
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// The export's stream file, once complete; HTTP Range requests resume a cut download.
pub(super) async fn download(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
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
    if r.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "bad_range",
            format!(
                "the Range asked for is not within export {id}'s {} bytes (one range, bytes=FROM- or bytes=FROM-TO)",
                job.done.bytes
            ),
        ));
    }
    if r.status().is_success() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
    }
    Ok(r)
}

/// `POST /api/v1/validate[?export=ID]`: a stream (the body, or an export this token made)
/// checked on its own: whole, its counts and digests as its producer says, its keys and
/// references. 200 with the verdict, the report and the findings.
pub(super) async fn validate(State(app): State<Arc<App>>, req: Request) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = authorize(&app, req.headers(), Scope::Read)?.clone();
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Query {
        export: Option<String>,
    }
    let q: Query = query(req.uri())?;
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
pub(super) async fn compare(State(app): State<Arc<App>>, req: Request) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = authorize(&app, req.headers(), Scope::Import)?.clone();
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Query {
        store: String,
    }
    let q: Query = query(req.uri())?;
    let target = store(&app, &caller, &q.store)?;
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
    let checked = checked?;
    if checked["status"] != "pass"
        && let Some(alerts) = &app.alerts
    {
        let text = format!(
            "ferry: a validation over the API did not pass ({}): {} findings",
            checked["status"].as_str().unwrap_or("?"),
            checked["findings"].as_array().map_or(0, Vec::len)
        );
        alerts.send("differences", text, checked["report"].clone());
    }
    Ok(Json(checked))
}
