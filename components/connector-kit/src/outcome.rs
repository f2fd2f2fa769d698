//! How one attempt ends: a receipt, or a failure the host's dispatcher
//! retries (`retryable`) or dead-letters (`permanent`).
//!
//! - 2xx: delivered; the receipt holds the `id` of the provider's JSON reply,
//!   else the status.
//! - 429 and 5xx: retryable, the provider asked for patience.
//! - any other status: permanent, with an excerpt of the provider's reply.
//! - transport errors: retryable, except a host the connector may not reach.

use crate::bindings::exports::switchyard::platform::sender::{Receipt, SendError};
use crate::bindings::wasi::http::types::ErrorCode;
use crate::transport::Reply;

/// Longest provider reply quoted in a permanent error, in characters.
const EXCERPT_CHARS: usize = 200;

/// A successful attempt.
pub(crate) struct Delivered {
    /// Logged; the receipt may not carry it.
    pub status: u16,
    pub receipt: Receipt,
}

pub(crate) enum Failure {
    /// Will not succeed by retrying: bad settings, bad message, forbidden host.
    Permanent(String),
    /// May succeed later: the provider or the network is having a bad time.
    Retryable(String),
    /// The provider refused this message. Kept apart because the excerpt of
    /// its reply goes into the send error but not into the log: providers
    /// like to echo recipients back.
    Refused { status: u16, excerpt: String },
}

impl Failure {
    pub fn misconfigured(detail: impl std::fmt::Display) -> Self {
        Failure::Permanent(format!("connector misconfigured: {detail}"))
    }

    /// A wasi:http error from sending the request or awaiting its response.
    pub fn transport(code: ErrorCode, authority: &str) -> Self {
        match code {
            // What the host answers for a destination outside the
            // connector's allowed hosts.
            ErrorCode::HttpRequestDenied => Failure::Permanent(format!("host not allowed: {authority}")),
            // The host cannot make a request of the configured URL at all.
            ErrorCode::HttpRequestUriInvalid => {
                Failure::misconfigured(format!("the host rejected the URI of {authority}"))
            }
            // Refused connections, DNS, timeouts, protocol errors.
            other => Failure::Retryable(format!("{other:?}")),
        }
    }

    /// The first word of the log line.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Retryable(_) => "retryable",
            Failure::Permanent(_) | Failure::Refused { .. } => "permanent",
        }
    }

    /// The rest of the log line: the error without customer data.
    pub fn log_reason(&self) -> String {
        match self {
            Failure::Permanent(reason) | Failure::Retryable(reason) => reason.clone(),
            Failure::Refused { status, .. } => format!("provider answered {status}"),
        }
    }

    pub fn into_send_error(self) -> SendError {
        match self {
            Failure::Permanent(reason) => SendError::Permanent(reason),
            Failure::Retryable(reason) => SendError::Retryable(reason),
            Failure::Refused { status, excerpt } if excerpt.is_empty() => {
                SendError::Permanent(format!("provider answered {status}"))
            }
            Failure::Refused { status, excerpt } => {
                SendError::Permanent(format!("provider answered {status}: {excerpt}"))
            }
        }
    }
}

/// The provider's answer as the attempt's outcome.
pub(crate) fn classify(reply: Reply) -> Result<Delivered, Failure> {
    match reply.status {
        200..=299 => {
            let provider_id = provider_id(&reply).unwrap_or_else(|| reply.status.to_string());
            Ok(Delivered { status: reply.status, receipt: Receipt { provider_id } })
        }
        429 | 500..=599 => Err(Failure::Retryable(format!("provider answered {}", reply.status))),
        status => Err(Failure::Refused { status, excerpt: excerpt(&reply.body) }),
    }
}

/// The `id` string of a JSON object reply, if the whole reply was read.
fn provider_id(reply: &Reply) -> Option<String> {
    if reply.truncated {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    let id = value.get("id")?.as_str()?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// The start of a reply as one line of text.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().filter(|c| !c.is_control()).take(EXCERPT_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply { status, body: body.as_bytes().to_vec(), truncated: false }
    }

    fn send_error(status: u16, body: &str) -> Option<SendError> {
        classify(reply(status, body)).err().map(Failure::into_send_error)
    }

    #[test]
    fn receipt_holds_the_provider_id_else_the_status() {
        let id = |status, body| classify(reply(status, body)).ok().map(|delivered| delivered.receipt.provider_id);
        assert_eq!(id(200, r#"{"id":"em-7","duplicate":false}"#).as_deref(), Some("em-7"));
        assert_eq!(id(202, "queued").as_deref(), Some("202"));
        assert_eq!(id(204, r#"{"id":7}"#).as_deref(), Some("204"));
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        for status in [429, 500, 503, 599] {
            assert!(matches!(send_error(status, ""), Some(SendError::Retryable(_))), "{status}");
        }
    }

    #[test]
    fn other_statuses_are_permanent_with_a_short_excerpt() {
        assert!(matches!(send_error(302, ""), Some(SendError::Permanent(reason)) if reason == "provider answered 302"));
        let long = format!("{{\"error\":\n\"{}\"}}", "x".repeat(500));
        let Some(SendError::Permanent(reason)) = send_error(422, &long) else {
            unreachable!("422 must be permanent");
        };
        assert!(reason.starts_with("provider answered 422: {\"error\": \"xxx"));
        assert_eq!(reason.chars().count(), "provider answered 422: ".len() + EXCERPT_CHARS);
    }

    #[test]
    fn refusals_log_no_provider_text() {
        let failure = Failure::Refused { status: 400, excerpt: "bad address alice@example.com".into() };
        assert_eq!(failure.log_reason(), "provider answered 400");
    }

    #[test]
    fn denied_hosts_are_permanent_other_transport_errors_retryable() {
        assert!(matches!(
            Failure::transport(ErrorCode::HttpRequestDenied, "evil:80").into_send_error(),
            SendError::Permanent(reason) if reason == "host not allowed: evil:80"
        ));
        assert!(matches!(
            Failure::transport(ErrorCode::ConnectionRefused, "h").into_send_error(),
            SendError::Retryable(reason) if reason.contains("ConnectionRefused")
        ));
    }
}
