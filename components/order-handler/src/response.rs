//! Building JSON responses; the only place that sets `content-type`.

use serde::Serialize;

use crate::switchyard::platform::log::{Level, log};
use crate::switchyard::platform::types::Response;

const JSON: &str = "application/json";

/// Serializes `value` as the body. Serializing this crate's own types cannot
/// really fail, but if it ever did the caller gets a 500, not a trap.
pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, body),
        Err(e) => {
            log(Level::Error, &format!("could not serialize a response: {e}"));
            json_bytes(500, error_body("internal error"))
        }
    }
}

/// A response whose body is already JSON (for example a stored order).
pub fn json_bytes(status: u16, body: Vec<u8>) -> Response {
    Response { status, headers: vec![("content-type".into(), JSON.into())], body }
}

pub fn with_header(mut response: Response, name: &str, value: &str) -> Response {
    response.headers.push((name.into(), value.into()));
    response
}

/// `{"error": message}`, built by serde_json so the message is escaped.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::json!({ "error": message }).to_string().into_bytes()
}
