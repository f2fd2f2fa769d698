//! The one error type HTTP handlers return.
//!
//! Clients get a status and a short, generic JSON body with the request id;
//! the details — which may name files, SQL or guest traps — go to the logs
//! only.

use axum::Json;
use axum::http::StatusCode;
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
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    /// The component's breaker is open or its queue is full; try again later.
    #[error("the component is temporarily unavailable")]
    Overloaded { retry_after_secs: u64 },
    /// The component trapped, ran out of fuel or memory, or failed to commit.
    #[error("the component failed")]
    ComponentFailed { request_id: String },
    #[error("the component timed out")]
    ComponentTimedOut { request_id: String },
    #[error("service unavailable")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    fn status(&self) -> StatusCode {
        match self {
            AppError::NoRoute { .. } | AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::ComponentFailed { .. } | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::ComponentTimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            AppError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            AppError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                json!({ "error": "internal error" })
            }
            AppError::ComponentFailed { request_id } | AppError::ComponentTimedOut { request_id } => {
                json!({ "error": self.to_string(), "request_id": request_id })
            }
            other => json!({ "error": other.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if let AppError::Overloaded { retry_after_secs } = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}
