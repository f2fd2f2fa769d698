//! The one error type every JSON error body comes from.
//!
//! Clients get a status and a short, generic JSON body,
//! `{"error": "…", "request_id": "…"}`; the details — which may name files,
//! SQL or guest traps — go to the logs only. The request id is written in
//! by the front layer, which every request passes through: an error response
//! carries its message in an [`ErrorMessage`] extension until then.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("method {method} not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request headers too large: at most {max_headers} headers and {max_bytes} bytes")]
    HeadersTooLarge { max_headers: usize, max_bytes: usize },
    #[error("request not answered within {timeout_ms} ms")]
    RequestTimeout { timeout_ms: u128 },
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// No or a wrong credential; `bearer` asks for a bearer token.
    #[error("{message}")]
    Unauthorized { message: &'static str, bearer: bool },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A rollout is in the way (or missing); the body shows its state.
    #[error("{message}")]
    RolloutConflict { message: String, rollout: Option<serde_json::Value> },
    #[error("{0}")]
    Unprocessable(String),
    #[error("rate limit exceeded for {who}; retry after {retry_after_secs} s")]
    RateLimited { who: String, retry_after_secs: u64 },
    /// The component's breaker is open or its queue is full; try again later.
    #[error("the component is temporarily unavailable")]
    Overloaded { retry_after_secs: u64 },
    /// The component trapped, ran out of fuel or memory, or failed to commit.
    #[error("the component failed")]
    ComponentFailed,
    #[error("the component timed out")]
    ComponentTimedOut,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The message of an error response (and a field that details it), kept
/// until the front layer writes the body with the request id ([`finish_body`]).
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String, pub Option<(&'static str, serde_json::Value)>);

impl AppError {
    fn status(&self) -> StatusCode {
        match self {
            AppError::NoRoute { .. } | AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            AppError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AppError::Conflict(_) | AppError::RolloutConflict { .. } => StatusCode::CONFLICT,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::ComponentFailed | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::ComponentTimedOut => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let message = match &self {
            AppError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let detail = match &self {
            AppError::RolloutConflict { rollout: Some(rollout), .. } => Some(("rollout", rollout.clone())),
            _ => None,
        };
        // A body of its own for a response that never meets the front layer.
        let mut response = (self.status(), Json(body(&message, detail.as_ref(), None))).into_response();
        response.extensions_mut().insert(ErrorMessage(message, detail));
        let headers = response.headers_mut();
        match self {
            AppError::Overloaded { retry_after_secs } | AppError::RateLimited { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, retry_after_secs.into());
            }
            AppError::Unauthorized { bearer: true, .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// Writes an error response's JSON body with the request id it answered.
pub fn finish_body(response: &mut Response, request_id: &str) {
    if let Some(ErrorMessage(message, detail)) = response.extensions_mut().remove::<ErrorMessage>() {
        *response.body_mut() = Body::from(body(&message, detail.as_ref(), Some(request_id)).to_string());
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
}

fn body(
    message: &str,
    detail: Option<&(&'static str, serde_json::Value)>,
    request_id: Option<&str>,
) -> serde_json::Value {
    let mut body = json!({ "error": message });
    if let Some((key, value)) = detail {
        body[*key] = value.clone();
    }
    if let Some(request_id) = request_id {
        body["request_id"] = json!(request_id);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn internal_errors_hide_the_detail_and_carry_the_request_id() {
        let mut response = AppError::Internal(anyhow::anyhow!("SELECT failed on /var/db")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        finish_body(&mut response, "req-7");
        assert_eq!(body_of(response).await, json!({ "error": "internal error", "request_id": "req-7" }));
    }

    #[tokio::test]
    async fn retry_and_auth_headers_come_with_their_errors() {
        let limited = AppError::RateLimited { who: "key alpha".into(), retry_after_secs: 3 }.into_response();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "3");
        let admin = AppError::Unauthorized { message: "admin token missing or invalid", bearer: true }.into_response();
        assert_eq!(admin.headers()[header::WWW_AUTHENTICATE], "Bearer");
        // Without the front layer the body still says what went wrong.
        assert_eq!(body_of(admin).await, json!({ "error": "admin token missing or invalid" }));
    }
}
