//! Contract: delivers an outbox message as an email via `POST {url}`; 2xx → receipt, 429/5xx/transport → retryable,
//! other statuses and hosts not allowed → permanent.
//!
//! The body is the email provider's JSON,
//! `{"to": recipient, "subject": subject or null, "body": body, "metadata": [[key, value], …]}`,
//! sent with the headers `Idempotency-Key` (the message id), `x-attempt` and
//! `content-type: application/json`. Config: `url` (required) and
//! `timeout_ms` (default 5000); the request, timeouts, classification and
//! logging are `connector-kit`'s.

use connector_kit::{Channel, InvalidMessage, Message, Payload};
use serde::Serialize;

/// The email provider's request body.
#[derive(Serialize)]
struct EmailRequest<'a> {
    to: &'a str,
    subject: Option<&'a str>,
    body: &'a str,
    metadata: &'a [(String, String)],
}

struct Email;

impl Channel for Email {
    fn payload(message: &Message) -> Result<Payload, InvalidMessage> {
        if message.recipient.trim().is_empty() {
            return Err(InvalidMessage("empty recipient".to_owned()));
        }
        Payload::json(&EmailRequest {
            to: &message.recipient,
            subject: message.subject.as_deref(),
            body: &message.body,
            metadata: &message.metadata,
        })
    }
}

connector_kit::export!(Email);
