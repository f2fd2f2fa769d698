//! The `connector` world's call path: one delivery attempt of an outbox
//! message, judged by what the connector says of it.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;

use super::Runtime;
use super::invoke::{Call, InvokeError, settle};
use super::outcome::{Cost, Outcome, OutcomeRecord};
use super::registry::Prepared;
use super::state::InvocationState;
use crate::capabilities::bindings::{ConnectorPre, sender, types};
use crate::config::World;

/// One delivery attempt of an outbox message, as handed to a connector.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub attempt: u32,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub metadata: Vec<(String, String)>,
}

/// What a connector made of a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered {
        provider_id: String,
    },
    /// Worth retrying later (provider 429/5xx, transport failure, trap, timeout).
    Retryable(String),
    /// Will never succeed (provider 4xx, forbidden host, bad message).
    Permanent(String),
    /// The connector's breaker is open: nothing was attempted.
    Rejected {
        retry_after_ms: i64,
    },
}

/// The result of a connector invocation.
#[derive(Debug)]
pub struct DeliveryAttempt {
    pub delivery: Delivery,
    pub record: OutcomeRecord,
}

impl Call for ConnectorPre<InvocationState> {
    type Input = types::Envelope;
    type Output = Result<sender::Receipt, sender::SendError>;

    async fn call(
        &self,
        store: &mut Store<InvocationState>,
        envelope: types::Envelope,
    ) -> wasmtime::Result<Self::Output> {
        let connector = self.instantiate_async(&mut *store).await?;
        connector.switchyard_platform_sender().call_send(&mut *store, &envelope).await
    }
}

impl Runtime {
    /// Runs `component`'s `send` for one delivery attempt.
    pub async fn invoke_connector(
        &self,
        component: &str,
        request_id: Arc<str>,
        envelope: Envelope,
    ) -> Result<DeliveryAttempt, InvokeError> {
        // Every attempt of one message meets the same version.
        let (deployed, canary) = self.lookup(component, Some(&envelope.id))?;
        let Prepared::Connector(pre) = &deployed.pre else { return Err(deployed.wrong_world(World::Connector)) };
        let started = Instant::now();
        // Deliveries are paced by the dispatcher, not queued here: only the
        // breaker stands in front of a connector.
        let permit = match self.breaker(component).map(|b| b.try_acquire()).transpose() {
            Ok(permit) => permit,
            Err(rejected) => {
                let record = deployed.finish(&request_id, Outcome::Rejected, started, Cost::default(), None);
                let delivery = Delivery::Rejected { retry_after_ms: rejected.retry_after_ms };
                return Ok(DeliveryAttempt { delivery, record });
            }
        };
        let envelope = types::Envelope {
            id: envelope.id,
            attempt: envelope.attempt,
            message: types::Message {
                recipient: envelope.recipient,
                subject: envelope.subject,
                body: envelope.body,
                metadata: envelope.metadata,
            },
        };
        let execution = self.sandbox(&deployed, &request_id).execute(pre, envelope).await;
        // Connectors keep no state here; nothing to commit.
        let _ = settle(execution.unit_of_work, false, component, &request_id).await;
        let (outcome, delivery) = match execution.result {
            Ok(Ok(receipt)) => (Outcome::Ok, Delivery::Delivered { provider_id: receipt.provider_id }),
            Ok(Err(sender::SendError::Retryable(reason))) => (Outcome::Error, Delivery::Retryable(reason)),
            Ok(Err(sender::SendError::Permanent(reason))) => (Outcome::Error, Delivery::Permanent(reason)),
            Err(err) => {
                let outcome = deployed.failed(&request_id, &err, execution.memory_exceeded);
                (outcome, Delivery::Retryable(format!("connector {outcome}")))
            }
        };
        if let Some(permit) = permit {
            // A provider that answers "permanently no" is healthy; one that
            // cannot be reached, or a connector that crashes, is not.
            permit.record(canary || !matches!(delivery, Delivery::Retryable(_)));
        }
        let record = deployed.finish(&request_id, outcome, started, execution.cost, None);
        Ok(DeliveryAttempt { delivery, record })
    }
}
