//! Request ids: taken from `x-request-id` when the caller sends a sane one,
//! generated otherwise, echoed on the response, and carried by a tracing span
//! so every log line of the request — host and component — names it.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";
/// Longest caller-supplied id accepted; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The id of the request being served, as a request extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id: Arc<str> = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable(v))
        .map(Arc::from)
        .unwrap_or_else(|| Arc::from(uuid::Uuid::new_v4().simple().to_string()));
    request.extensions_mut().insert(RequestId(id.clone()));
    let span =
        tracing::info_span!("request", request_id = &*id, method = %request.method(), path = request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
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
