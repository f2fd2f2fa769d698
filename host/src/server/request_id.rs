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
        .unwrap_or_else(generate)
}

/// A random (v4) UUID as 32 lowercase hex digits.
fn generate() -> Arc<str> {
    let mut text = [0; uuid::fmt::Simple::LENGTH];
    Arc::from(&*uuid::Uuid::new_v4().simple().encode_lower(&mut text))
}

fn is_acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::{generate, is_acceptable};

    #[test]
    fn only_short_printable_ids_are_kept() {
        assert!(is_acceptable("abc-123"));
        assert!(!is_acceptable(""));
        assert!(!is_acceptable("has space"));
        assert!(!is_acceptable(&"x".repeat(129)));
    }

    #[test]
    fn generated_ids_are_fresh_uuids_in_hex() {
        let (first, second) = (generate(), generate());
        assert_ne!(first, second);
        for id in [&first, &second] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
            assert!(is_acceptable(id));
            assert_eq!(uuid::Uuid::parse_str(id).map(|u| u.get_version_num()), Ok(4));
        }
    }
}
