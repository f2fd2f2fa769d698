//! Request ids: taken from `x-request-id` when the caller sends a sane one,
//! generated otherwise, echoed on the response, and carried by a tracing span
//! so every log line of the request — host and component — names it.

use std::sync::Arc;

use axum::http::HeaderMap;

pub const HEADER: &str = "x-request-id";
/// Longest caller-supplied id accepted; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The id of the request being served, as a request extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The caller's id when it sent an acceptable one, else a new one.
pub fn of(headers: &HeaderMap) -> Arc<str> {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable(v))
        .map(Arc::from)
        .unwrap_or_else(|| Arc::from(uuid::Uuid::new_v4().simple().to_string()))
}

fn is_acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::is_acceptable;

    #[test]
    fn only_short_printable_ids_are_kept() {
        assert!(is_acceptable("abc-123"));
        assert!(!is_acceptable(""));
        assert!(!is_acceptable("has space"));
        assert!(!is_acceptable(&"x".repeat(129)));
    }
}
