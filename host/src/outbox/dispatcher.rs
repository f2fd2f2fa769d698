//! The dispatcher: one worker per connector, so one connector's backlog or
//! outage never holds up another's messages.
//!
//! Each round a worker claims a batch of due PENDING messages under a lease,
//! delivers them concurrently through the connector component (fresh Store,
//! fuel, deadline, breaker — the handlers' invoke path), and settles the
//! whole batch in one transaction: DELIVERED with the receipt, a retry
//! scheduled with capped exponential backoff and full jitter, or DEAD after
//! `max_attempts` or a permanent error. While the connector's breaker is
//! open nothing is claimed or attempted and attempts are not counted. A
//! worker that dies holding a claim loses it when the lease expires.
//! Workers sleep until new messages commit, the poll interval passes, or
//! they are stopped; a stop lets the current batch finish first.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{DeliveryTallies, backoff};
use crate::clock::SharedClock;
use crate::config::{Config, ConnectorConfig, OutboxConfig};
use crate::db::Database;
use crate::db::outbox::{ClaimedMessage, Settlement};
use crate::runtime::{Delivery, Envelope, Runtime};
use crate::telemetry::metrics::{DELIVERY_OUTCOMES, OUTBOX_DELIVERIES, OUTBOX_LAG};
use metrics::{Counter, Histogram};

/// Starts workers for every connector that has a component.
pub struct Dispatcher;

/// Running workers; [`DispatcherHandle::stop`] ends them gracefully.
pub struct DispatcherHandle {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl DispatcherHandle {
    /// Lets each worker finish its current batch, then waits for all.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

/// What one connector's worker needs.
struct Worker {
    connector: String,
    component: String,
    settings: ConnectorConfig,
    outbox: OutboxConfig,
    /// Identifies this worker's claims; unique per process and start.
    owner: String,
    runtime: Arc<Runtime>,
    db: Database,
    clock: SharedClock,
    /// `outbox_deliveries_total`, by [`DeliveryOutcome`].
    deliveries: [Counter; DELIVERY_OUTCOMES.len()],
    tallies: Arc<DeliveryTallies>,
    lag: Histogram,
}

/// How one attempt was settled: the `outcome` label of
/// `outbox_deliveries_total`, named by position in [`DELIVERY_OUTCOMES`].
#[derive(Debug, Clone, Copy)]
enum DeliveryOutcome {
    Delivered,
    Retry,
    Dead,
    SkippedOpenBreaker,
}

impl DeliveryOutcome {
    fn as_str(self) -> &'static str {
        DELIVERY_OUTCOMES[self as usize]
    }
}

impl Dispatcher {
    /// Starts a worker per connector; each counts its attempts in `tallies`.
    pub fn start(
        config: &Config,
        runtime: Arc<Runtime>,
        db: Database,
        clock: SharedClock,
        tallies: Arc<DeliveryTallies>,
    ) -> DispatcherHandle {
        let (stop, _) = watch::channel(false);
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let workers = config
            .connectors
            .iter()
            .filter_map(|(name, settings)| {
                let component = settings.component.clone()?;
                let metrics = runtime.metrics();
                let worker = Worker {
                    deliveries: DELIVERY_OUTCOMES.map(|outcome| {
                        metrics.counter(OUTBOX_DELIVERIES, &[("connector", name), ("outcome", outcome)])
                    }),
                    lag: metrics.histogram(OUTBOX_LAG, &[("connector", name)]),
                    tallies: tallies.clone(),
                    connector: name.clone(),
                    component,
                    settings: settings.clone(),
                    outbox: config.outbox,
                    owner: format!("{}-{name}-{}", std::process::id(), &instance[..12]),
                    runtime: runtime.clone(),
                    db: db.clone(),
                    clock: clock.clone(),
                };
                Some(tokio::spawn(worker.run(stop.subscribe())))
            })
            .collect();
        DispatcherHandle { stop, workers }
    }
}

impl Worker {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut new_messages = self.db.outbox_changes();
        let mut rng = fastrand::Rng::new();
        let poll = Duration::from_millis(self.outbox.poll_interval_ms);
        tracing::info!(
            connector = self.connector,
            component = self.component,
            owner = self.owner,
            "dispatcher started"
        );
        while !*stop.borrow() {
            let wait = match self.round(&mut rng).await {
                // A full batch: more may be due right away.
                Ok(Round::Full) => continue,
                Ok(Round::Drained) => poll,
                Ok(Round::BreakerOpen { retry_after_ms }) => {
                    poll.min(Duration::from_millis(u64::try_from(retry_after_ms).unwrap_or(0).max(1)))
                }
                Err(err) => {
                    tracing::error!(connector = self.connector, error = format!("{err:#}"), "dispatcher round failed");
                    poll
                }
            };
            tokio::select! {
                _ = stop.changed() => {}
                _ = new_messages.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(connector = self.connector, "dispatcher stopped");
    }

    /// Claims, delivers and settles one batch.
    async fn round(&self, rng: &mut fastrand::Rng) -> anyhow::Result<Round> {
        if let Some(retry_after_ms) = self.runtime.breaker(&self.component).and_then(|b| b.open_remaining_ms()) {
            // Messages stay PENDING and unclaimed; nothing is attempted.
            return Ok(Round::BreakerOpen { retry_after_ms });
        }
        let now = self.clock.now_millis();
        let lease_until = now + i64::try_from(self.outbox.lease_ms).unwrap_or(i64::MAX / 2);
        let batch = i64::from(self.outbox.batch_size);
        let claimed = self.db.outbox_claim(&self.connector, &self.owner, now, lease_until, batch).await?;
        if claimed.is_empty() {
            return Ok(Round::Drained);
        }
        let full = claimed.len() as i64 == batch;
        let results: Vec<(ClaimedMessage, Delivery)> = futures::stream::iter(claimed)
            .map(|message| async move {
                let delivery = self.deliver(&message).await;
                (message, delivery)
            })
            .buffer_unordered(self.outbox.concurrency as usize)
            .collect()
            .await;

        let now = self.clock.now_millis();
        let mut retry_after = None;
        let settlements: Vec<Settlement> = results
            .into_iter()
            .map(|(message, delivery)| {
                if let Delivery::Rejected { retry_after_ms } = delivery {
                    retry_after = Some(retry_after_ms);
                }
                self.settlement(message, delivery, now, rng)
            })
            .collect();
        self.db.outbox_settle(&self.owner, now, &settlements).await?;
        Ok(match retry_after {
            Some(retry_after_ms) => Round::BreakerOpen { retry_after_ms },
            None if full => Round::Full,
            None => Round::Drained,
        })
    }

    async fn deliver(&self, message: &ClaimedMessage) -> Delivery {
        let attempt = u32::try_from(message.attempts + 1).unwrap_or(u32::MAX);
        let envelope = Envelope {
            id: message.id.clone(),
            attempt,
            recipient: message.recipient.clone(),
            subject: message.subject.clone(),
            body: message.body.clone(),
            metadata: message.metadata.clone(),
        };
        let request_id: Arc<str> = Arc::from(message.request_id.as_str());
        match self.runtime.invoke_connector(&self.component, request_id, envelope).await {
            Ok(attempted) => attempted.delivery,
            Err(err) => Delivery::Retryable(err.to_string()),
        }
    }

    fn settlement(&self, message: ClaimedMessage, delivery: Delivery, now: i64, rng: &mut fastrand::Rng) -> Settlement {
        let attempt = u32::try_from(message.attempts + 1).unwrap_or(u32::MAX);
        let id = message.id;
        let (settlement, outcome) = match delivery {
            Delivery::Delivered { provider_id } => {
                self.lag.record((now - message.created_at).max(0) as f64 / 1_000.0);
                (Settlement::Delivered { id, receipt: provider_id }, DeliveryOutcome::Delivered)
            }
            Delivery::Permanent(error) => (Settlement::Dead { id, error }, DeliveryOutcome::Dead),
            Delivery::Retryable(error) if attempt >= self.settings.max_attempts => {
                let error = format!("gave up after {attempt} attempts: {error}");
                (Settlement::Dead { id, error }, DeliveryOutcome::Dead)
            }
            Delivery::Retryable(error) => {
                let delay =
                    backoff::delay_ms(attempt, self.settings.backoff_base_ms, self.settings.backoff_max_ms, rng);
                let next_attempt_at = now + i64::try_from(delay).unwrap_or(i64::MAX / 2);
                (Settlement::Retry { id, error, next_attempt_at }, DeliveryOutcome::Retry)
            }
            Delivery::Rejected { .. } => (Settlement::Release { id }, DeliveryOutcome::SkippedOpenBreaker),
        };
        self.deliveries[outcome as usize].increment(1);
        self.tallies.add(&self.connector, outcome as usize);
        tracing::info!(
            request_id = message.request_id,
            message_id = settlement_id(&settlement),
            connector = self.connector,
            attempt,
            outcome = outcome.as_str(),
            "outbox delivery"
        );
        settlement
    }
}

fn settlement_id(settlement: &Settlement) -> &str {
    match settlement {
        Settlement::Delivered { id, .. }
        | Settlement::Retry { id, .. }
        | Settlement::Dead { id, .. }
        | Settlement::Release { id } => id,
    }
}

enum Round {
    /// The batch was full; claim again at once.
    Full,
    /// Nothing (more) is due.
    Drained,
    /// The breaker refused; wait before claiming again.
    BreakerOpen { retry_after_ms: i64 },
}
