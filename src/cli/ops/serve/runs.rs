//! Runs over HTTP: the state file's runs as `ferry status` reads them, a run's progress as
//! Server-Sent Events, the Prometheus metrics, and a run's rollback.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::app::{App, audit, authorize, blocking};
use super::auth::Scope;
use super::error::ApiError;
use crate::address::Address;
use crate::stage::{metrics, status};

pub(super) async fn metrics_text(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    let state = app.state.clone();
    let text = blocking(move || Ok(metrics::render(&status::runs_now(&state)?))).await?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

pub(super) async fn runs(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    let state = app.state.clone();
    let runs = blocking(move || status::runs_now(&state)).await?;
    let list: Vec<serde_json::Value> = runs.iter().map(status::RunNow::json).collect();
    Ok(Json(json!({"runs": list})))
}

pub(super) async fn run(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    let state = app.state.clone();
    let wanted = id.clone();
    match blocking(move || status::run_detail(&state, &wanted)).await? {
        Some(run) => Ok(Json(run)),
        None => Err(no_run(&id)),
    }
}

/// `GET /api/v1/runs/ID/events`: the run's progress as Server-Sent Events: a `progress` event
/// (the run as `GET /api/v1/runs/ID` gives it, batches left out) each time it changes, polled
/// every half second, then an `end` event once it is no longer running. 404 for a run the state
/// file does not hold.
pub(super) async fn run_events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    authorize(&app, &headers, Scope::Read)?;
    let first = current(&app, &id).await?.ok_or_else(|| no_run(&id))?;
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
pub(super) async fn rollback(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
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
        return Err(no_run(&id));
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
    let (outcome, plan) = blocking(move || super::jobs::captured(|out| crate::stage::rollback::run(&cfg, out))).await?;
    Ok(Json(json!({"confirmed": ask.confirm, "plan": plan, "outcome": outcome})).into_response())
}

/// The answer for a run the state file does not hold.
fn no_run(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no run {id} in the server's state file (GET /api/v1/runs lists them)"),
    )
}
