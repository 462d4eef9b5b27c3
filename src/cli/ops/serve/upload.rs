//! An upload kept on disk: the request's body (or its multipart form's `file` field) written to
//! a file as it arrives, no bigger than a limit.

use std::io::Write as _;
use std::path::Path;

use axum::extract::{FromRequest as _, Multipart, Request};
use axum::http::{StatusCode, header};
use futures_util::StreamExt as _;

use super::error::ApiError;

/// Write the upload of `req` to `path`; an empty one, one over `limit` bytes, or a form without
/// a `file` field is refused (the caller removes what was written).
pub(crate) async fn save(req: Request, path: &Path, limit: u64) -> Result<u64, ApiError> {
    let io = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("keeping the upload: {e}"),
        )
    };
    let mut file = std::io::BufWriter::new(super::jobs::private_file(path).map_err(io)?);
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("multipart/form-data"));
    let mut n: u64 = 0;
    let mut take = |chunk: &[u8]| -> Result<(), ApiError> {
        n += chunk.len() as u64;
        if n > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the upload is over {limit} bytes, the most this server takes (max_upload_bytes): nothing was imported"
                ),
            ));
        }
        file.write_all(chunk).map_err(io)
    };
    let cut = |e: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the upload was cut or malformed ({e}): nothing was imported"),
        )
    };
    if multipart {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| cut(e.body_text()))?;
        let mut found = false;
        while let Some(mut field) = form.next_field().await.map_err(|e| cut(e.body_text()))? {
            if field.name() != Some("file") {
                continue;
            }
            found = true;
            while let Some(chunk) = field.chunk().await.map_err(|e| cut(e.body_text()))? {
                take(&chunk)?;
            }
        }
        if !found {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the form has no field named file (curl -F file=@export.ndjson): nothing was imported",
            ));
        }
    } else {
        let mut body = req.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            take(&chunk.map_err(|e| cut(e.to_string()))?)?;
        }
    }
    // Not synced: the upload matters only while its job runs, and a job a crash interrupts is
    // failed on restart and sent again.
    file.flush().map_err(io)?;
    if n == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the upload is empty: send the stream as the body (--data-binary @export.ndjson) or as the form's file field",
        ));
    }
    Ok(n)
}

/// The run id of the stream kept at `path`, from its first line: a BEGIN (`None` for a stream
/// that starts otherwise, as a Singer tap's does). A first line that is not a protocol message
/// is refused (422), before anything is started.
pub(crate) fn stream_run_id(path: &Path) -> Result<Option<String>, ApiError> {
    use std::io::{BufRead as _, Read as _};
    let first: Vec<u8> = std::fs::File::open(path)
        .and_then(|f| {
            let mut line = Vec::new();
            std::io::BufReader::new(f.take(1 << 20))
                .read_until(b'\n', &mut line)
                .map(|_| line)
        })
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("reading the upload: {e}"),
            )
        })?;
    let message: serde_json::Value = serde_json::from_slice(&first)
        .ok()
        .filter(|m: &serde_json::Value| m.get("type").is_some_and(serde_json::Value::is_string))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_stream",
                "line 1 of the upload is not a ferry (or Singer) message: send a stream ferry-export (or a Singer tap) wrote; nothing was imported",
            )
        })?;
    Ok((message["type"] == "BEGIN")
        .then(|| message["run_id"].as_str().map(str::to_owned))
        .flatten())
}
