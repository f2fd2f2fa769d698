//! `switchyard:platform/outbox`: messages are stored PENDING in the
//! invocation's transaction, so they exist iff the invocation commits.

use crate::db::outbox::NewMessage;
use crate::runtime::bindings::outbox::{EnqueueError, Host};
use crate::runtime::bindings::types::Message;
use crate::runtime::state::InvocationState;

/// Bounds on a message; a connector's provider would reject more anyway.
const MAX_RECIPIENT_BYTES: usize = 512;
const MAX_SUBJECT_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = 256 * 1024;
const MAX_METADATA_ENTRIES: usize = 32;

impl Host for InvocationState {
    async fn enqueue(&mut self, connector: String, message: Message) -> wasmtime::Result<Result<String, EnqueueError>> {
        if !self.component.connectors.contains(&connector) {
            return Ok(Err(EnqueueError::UnknownConnector(connector)));
        }
        if let Err(problem) = validate(&message) {
            return Ok(Err(EnqueueError::Invalid(problem)));
        }
        let message = NewMessage {
            recipient: message.recipient,
            subject: message.subject,
            body: message.body,
            metadata: message.metadata,
        };
        match self.unit_of_work.enqueue(&connector, &message).await {
            Ok(id) => Ok(Ok(id)),
            Err(err) => {
                tracing::error!(component = &*self.component.name, request_id = &*self.request_id, error = %err, "outbox enqueue failed");
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
