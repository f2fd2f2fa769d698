//! Contract: delivers an outbox message's body as is via `POST {url}{recipient}`; 2xx → receipt, 429/5xx/transport →
//! retryable, other statuses, hosts not allowed and recipients not starting with `/` → permanent.
//!
//! The recipient is a path below the configured `url` (`/fulfilment` with
//! `url = "http://127.0.0.1:9090/webhook"` posts to `/webhook/fulfilment`).
//! The content type is the message's `content-type` metadata, by default
//! `application/json`; the headers `Idempotency-Key` (the message id) and
//! `x-attempt` let the subscriber drop repeats. Config: `url` (required) and
//! `timeout_ms` (default 5000); the request, timeouts, classification and
//! logging are `connector-kit`'s.

use connector_kit::{Channel, InvalidMessage, Message, Payload};

/// The content type of a message that names none.
const DEFAULT_CONTENT_TYPE: &str = "application/json";

struct Webhook;

impl Channel for Webhook {
    fn payload(message: &Message) -> Result<Payload, InvalidMessage> {
        // A path, so that the configured URL alone decides the host.
        if !message.recipient.starts_with('/') {
            return Err(InvalidMessage("the recipient must be a path starting with '/'".to_owned()));
        }
        let content_type = message
            .metadata
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("content-type"))
            .map_or(DEFAULT_CONTENT_TYPE, |(_, value)| value.as_str());
        Ok(Payload {
            path: message.recipient.clone(),
            content_type: content_type.to_owned(),
            body: message.body.clone().into_bytes(),
        })
    }
}

connector_kit::export!(Webhook);
