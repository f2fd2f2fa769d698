//! Every way a request can fail, and the one place that turns a failure into
//! a JSON response.
//!
//! Client errors carry a message meant for the caller. Internal errors carry
//! a detail meant for the operator: it is logged here and the caller gets a
//! generic body, so storage or connector internals never leak.

use crate::response;
use crate::switchyard::platform::log::{Level, log};
use crate::switchyard::platform::types::Response;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed or fails validation.
    BadRequest(String),
    /// 404: the route, sku or order does not exist.
    NotFound(String),
    /// 405: the route exists, with this method only.
    MethodNotAllowed { allow: &'static str },
    /// 409: the request is valid but the stock cannot satisfy it.
    Conflict(String),
    /// 422: the request contradicts an earlier one (idempotency key reuse).
    Unprocessable(String),
    /// 500: the key-value store failed or holds something unreadable.
    Storage(String),
    /// 500: the outbox refused a message.
    Notifications(String),
}

impl ApiError {
    pub fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(message) => (400, message),
            ApiError::NotFound(message) => (404, message),
            ApiError::MethodNotAllowed { allow } => {
                let body = response::error_body("method not allowed");
                return response::with_header(response::json_bytes(405, body), "allow", allow);
            }
            ApiError::Conflict(message) => (409, message),
            ApiError::Unprocessable(message) => (422, message),
            ApiError::Storage(detail) => {
                log(Level::Error, &format!("storage error: {detail}"));
                (500, "storage unavailable".to_owned())
            }
            ApiError::Notifications(detail) => {
                log(Level::Error, &format!("outbox error: {detail}"));
                (500, "could not queue notifications".to_owned())
            }
        };
        response::json_bytes(status, response::error_body(&message))
    }
}
