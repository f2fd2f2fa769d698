//! Contract: delivers an outbox message as a text message via `POST {url}`; 2xx → receipt, 429/5xx/transport →
//! retryable, other statuses and hosts not allowed → permanent.
//!
//! The body is the SMS provider's JSON, `{"to": recipient, "body": body}`
//! (a subject and metadata have no place in a text message and are left
//! out), sent with the headers `Idempotency-Key` (the message id),
//! `x-attempt` and `content-type: application/json`. Config: `url`
//! (required) and `timeout_ms` (default 5000); the request, timeouts,
//! classification and logging are `connector-kit`'s.

use connector_kit::{Channel, InvalidMessage, Message, Payload};
use serde::Serialize;

/// The SMS provider's request body.
#[derive(Serialize)]
struct SmsRequest<'a> {
    to: &'a str,
    body: &'a str,
}

struct Sms;

impl Channel for Sms {
    fn payload(message: &Message) -> Result<Payload, InvalidMessage> {
        if message.recipient.trim().is_empty() {
            return Err(InvalidMessage("empty recipient".to_owned()));
        }
        Payload::json(&SmsRequest { to: &message.recipient, body: &message.body })
    }
}

connector_kit::export!(Sms);
