//! `switchyard:platform/outbox`: messages are stored PENDING in the
//! invocation's transaction, so they exist iff the invocation commits.

use std::collections::BTreeSet;

use wasmtime::component::HasData;

use super::bindings::outbox::{EnqueueError, Host};
use super::bindings::types::Message;
use crate::db::UnitOfWork;
use crate::db::outbox::NewMessage;

/// Bounds on a message; a connector's provider would reject more anyway.
const MAX_RECIPIENT_BYTES: usize = 512;
const MAX_SUBJECT_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = 256 * 1024;
const MAX_METADATA_ENTRIES: usize = 32;
/// Messages one invocation may enqueue: an order enqueues three; a guest
/// looping on `enqueue` is refused before its transaction grows without
/// bound.
pub const MAX_MESSAGES_PER_INVOCATION: u32 = 1_000;

/// What enqueueing needs: the connectors that exist and the invocation's
/// transaction, plus who enqueues for the logs.
pub struct OutboxView<'a> {
    pub component: &'a str,
    pub request_id: &'a str,
    pub connectors: &'a BTreeSet<String>,
    pub unit_of_work: &'a mut UnitOfWork,
}

/// Links `switchyard:platform/outbox` to an [`OutboxView`].
pub struct Outbox;

impl HasData for Outbox {
    type Data<'a> = OutboxView<'a>;
}

impl Host for OutboxView<'_> {
    async fn enqueue(&mut self, connector: String, message: Message) -> wasmtime::Result<Result<String, EnqueueError>> {
        if !self.connectors.contains(&connector) {
            return Ok(Err(EnqueueError::UnknownConnector(connector)));
        }
        if let Err(problem) = validate(&message) {
            return Ok(Err(EnqueueError::Invalid(problem)));
        }
        if self.unit_of_work.enqueued() >= MAX_MESSAGES_PER_INVOCATION {
            return Ok(Err(EnqueueError::Invalid(format!(
                "more than {MAX_MESSAGES_PER_INVOCATION} messages in one invocation"
            ))));
        }
        let message = NewMessage {
            recipient: message.recipient,
            subject: message.subject,
            body: message.body,
            metadata: message.metadata,
        };
        match self.unit_of_work.enqueue(&connector, message).await {
            Ok(id) => Ok(Ok(id)),
            Err(err) => {
                tracing::error!(component = self.component, request_id = self.request_id, error = %err, "outbox enqueue failed");
                Ok(Err(EnqueueError::Unavailable("the outbox is unavailable".to_owned())))
            }
        }
    }
}

fn validate(message: &Message) -> Result<(), String> {
    if message.recipient.trim().is_empty() {
        return Err("recipient is empty".to_owned());
    }
    if message.recipient.len() > MAX_RECIPIENT_BYTES {
        return Err(format!("recipient longer than {MAX_RECIPIENT_BYTES} bytes"));
    }
    if message.subject.as_ref().is_some_and(|s| s.len() > MAX_SUBJECT_BYTES) {
        return Err(format!("subject longer than {MAX_SUBJECT_BYTES} bytes"));
    }
    if message.body.len() > MAX_BODY_BYTES {
        return Err(format!("body larger than {MAX_BODY_BYTES} bytes"));
    }
    if message.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(format!("more than {MAX_METADATA_ENTRIES} metadata entries"));
    }
    Ok(())
}
