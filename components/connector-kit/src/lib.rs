//! What the connector components (`connector-email`, `connector-sms`,
//! `connector-webhook`) share: the `switchyard:platform/connector` bindings,
//! the connector settings, the one HTTP POST per delivery and how its result
//! becomes a receipt, a retryable or a permanent send error.
//!
//! A connector only says what to send for a message: it implements
//! [`Channel`] and calls [`export!`] on that type. Everything else lives here,
//! so the three channels read their config, send their headers, time out,
//! classify answers and log alike.
//!
//! - `lib.rs` (here): the bindings, [`Channel`] and the `send` export.
//! - [`settings`]: the `url` and `timeout_ms` config keys.
//! - [`transport`]: the request through `wasi:http/outgoing-handler` and its
//!   bounded reply.
//! - [`outcome`]: statuses and transport errors as receipts or send errors.
//!
//! Connectors import nothing from WASI but `wasi:http` and the `wasi:io`
//! streams and pollables it needs: no clocks, randomness or stdio.

/// The generated bindings. Public only because the [`export!`] macro, which
/// expands in each connector crate, names them; connectors use the
/// re-exports below instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "switchyard:platform/connector",
        generate_all,
        // The export macro expands in the connector crates, against the
        // bindings generated once here.
        pub_export_macro: true,
        default_bindings_module: "connector_kit::bindings",
    });
}

mod outcome;
mod settings;
mod transport;

/// Exports a [`Channel`] type as the component's `switchyard:platform/sender`.
pub use bindings::export;
pub use bindings::switchyard::platform::types::Message;

use bindings::exports::switchyard::platform::sender::{Guest, Receipt, SendError};
use bindings::switchyard::platform::log::{self, Level};
use bindings::switchyard::platform::types::Envelope;
use outcome::{Delivered, Failure};
use settings::Settings;

/// What a channel sends to its provider for one message.
pub struct Payload {
    /// Appended to the path of the configured `url`: a webhook's recipient
    /// path. Empty for channels with one fixed endpoint.
    pub path: String,
    /// The `content-type` header of the request.
    pub content_type: String,
    /// The request body, sent as is.
    pub body: Vec<u8>,
}

impl Payload {
    /// A JSON body posted to the configured `url` itself.
    pub fn json(value: &impl serde::Serialize) -> Result<Self, InvalidMessage> {
        let body =
            serde_json::to_vec(value).map_err(|error| InvalidMessage(format!("cannot encode as JSON: {error}")))?;
        Ok(Payload { path: String::new(), content_type: "application/json".to_owned(), body })
    }
}

/// Why a message can never be delivered by a channel, whatever the provider
/// would say: the delivery fails permanently without a request. The reason
/// is logged, so it must not quote the recipient or the body.
pub struct InvalidMessage(pub String);

/// One delivery channel: how an outbox message becomes the provider's
/// request. Every type implementing it is a `sender`, ready for [`export!`].
pub trait Channel {
    fn payload(message: &Message) -> Result<Payload, InvalidMessage>;
}

impl<C: Channel> Guest for C {
    fn send(envelope: Envelope) -> Result<Receipt, SendError> {
        let result = deliver::<C>(&envelope);
        let Envelope { id, attempt, .. } = &envelope;
        // One line per outcome, with the message id but never the recipient
        // or body: those are customer data.
        match result {
            Ok(Delivered { status, receipt }) => {
                log::log(Level::Info, &format!("delivered {id} attempt {attempt}: {status}"));
                Ok(receipt)
            }
            Err(failure) => {
                log::log(Level::Info, &format!("{} {id} attempt {attempt}: {}", failure.kind(), failure.log_reason()));
                Err(failure.into_send_error())
            }
        }
    }
}

/// One attempt: settings, payload, request, classification.
fn deliver<C: Channel>(envelope: &Envelope) -> Result<Delivered, Failure> {
    let settings = Settings::load()?;
    let payload = C::payload(&envelope.message)
        .map_err(|InvalidMessage(reason)| Failure::Permanent(format!("invalid message: {reason}")))?;
    let headers = [
        // Stable across attempts, so the provider can drop repeats.
        ("idempotency-key", envelope.id.clone()),
        ("x-attempt", envelope.attempt.to_string()),
        ("content-type", payload.content_type),
        ("content-length", payload.body.len().to_string()),
    ];
    let reply = transport::post(&settings, &payload.path, &headers, &payload.body)?;
    outcome::classify(reply)
}
