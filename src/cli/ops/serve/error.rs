//! Errors as answers: `{"error": {"status", "code", "message"}}`, from a refused token, a
//! malformed request body, or what the library refused or failed at.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// A JSON request body; what is wrong with one (not JSON, a field missing or unknown, too
/// large) is a JSON error naming it.
pub(crate) struct Body<T>(pub T);

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
                    StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
                    _ => "bad_request",
                };
                Err(ApiError::new(status, code, rejected.body_text()))
            }
        }
    }
}

/// A query string read as `T`; what is wrong with it (a field missing, unknown, or of the wrong
/// kind) is a 400 naming it.
pub(crate) fn query<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
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
