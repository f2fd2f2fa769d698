//! The dispatcher: one worker per connector, so one connector's backlog or
//! outage never holds up another's messages.
//!
//! A worker claims due PENDING messages in batches under a lease and
//! delivers them through the connector component (fresh Store, fuel,
//! deadline, breaker — the handlers' invoke path), `concurrency` at a time.
//! Deliveries are settled as they complete, a group at a time in one
//! statement: DELIVERED with the receipt, a retry scheduled with capped
//! exponential backoff and full jitter, or DEAD after `max_attempts` or a
//! permanent error. The next batch is claimed as soon as every message of
//! the last one has started, so a slow delivery holds back only itself.
//! While the connector's breaker is open nothing is claimed or attempted
//! and attempts are not counted. A worker that dies holding a claim loses
//! it when the lease expires. Workers sleep until new messages commit, the
//! poll interval passes, or they are stopped; a stop claims nothing more
//! and lets the deliveries already claimed finish first.

use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

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
    /// Lets each worker finish the deliveries it has claimed, then waits for all.
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
            let wait = match self.round(&mut rng, &stop).await {
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

    /// Claims, delivers and settles until nothing more is due, the breaker
    /// refuses, or the worker is stopped.
    async fn round(&self, rng: &mut fastrand::Rng, stop: &watch::Receiver<bool>) -> anyhow::Result<Round> {
        if let Some(retry_after_ms) = self.breaker_open() {
            // Messages stay PENDING and unclaimed; nothing is attempted.
            return Ok(Round::BreakerOpen { retry_after_ms });
        }
        let concurrency = (self.outbox.concurrency as usize).max(1);
        let batch = i64::from(self.outbox.batch_size);
        let mut waiting = VecDeque::new();
        // Each delivery is a task of its own, so deliveries go on while
        // the worker claims or settles.
        let mut running = FuturesUnordered::new();
        let mut finished = Vec::new();
        // Whether a claim may find more; a claim that is not full says no.
        let mut more = true;
        let mut retry_after = None;
        loop {
            if waiting.is_empty() && more && retry_after.is_none() && !*stop.borrow() {
                match self.breaker_open() {
                    Some(retry_after_ms) => retry_after = Some(retry_after_ms),
                    None => {
                        let now = self.clock.now_millis();
                        let lease_until = now + i64::try_from(self.outbox.lease_ms).unwrap_or(i64::MAX / 2);
                        let claimed =
                            self.db.outbox_claim(&self.connector, &self.owner, now, lease_until, batch).await?;
                        more = claimed.len() as i64 == batch;
                        waiting.extend(claimed);
                    }
                }
            }
            while running.len() < concurrency
                && let Some(message) = waiting.pop_front()
            {
                running.push(self.start_delivery(message));
            }
            let Some(delivered) = running.next().await else { break };
            let (message, delivery) = match delivered {
                Ok(delivered) => delivered,
                Err(err) => {
                    // Its message stays claimed, and is due again when the
                    // lease runs out.
                    tracing::error!(connector = self.connector, error = %err, "a delivery task failed");
                    continue;
                }
            };
            if let Delivery::Rejected { retry_after_ms } = delivery {
                // The breaker opened: what is still waiting goes back.
                retry_after = Some(retry_after_ms);
            }
            finished.push(self.settlement(message, delivery, self.clock.now_millis(), rng));
            // A group at a time while more waits to start; once nothing
            // does, each as it ends, so none waits for a slow one.
            if finished.len() >= concurrency || waiting.is_empty() {
                self.settle(&mut finished, &mut waiting, retry_after.is_some()).await?;
            }
        }
        self.settle(&mut finished, &mut waiting, retry_after.is_some()).await?;
        Ok(match retry_after {
            Some(retry_after_ms) => Round::BreakerOpen { retry_after_ms },
            None => Round::Drained,
        })
    }

    /// How long the connector's breaker stays open, if it is.
    fn breaker_open(&self) -> Option<i64> {
        self.runtime.breaker(&self.component).and_then(|b| b.open_remaining_ms())
    }

    /// Starts one delivery in a task of its own.
    fn start_delivery(&self, message: ClaimedMessage) -> JoinHandle<(ClaimedMessage, Delivery)> {
        let (runtime, component) = (self.runtime.clone(), self.component.clone());
        tokio::spawn(
            async move {
                let delivery = deliver(&runtime, &component, &message).await;
                (message, delivery)
            }
            .in_current_span(),
        )
    }

    /// Writes the settlements of `finished` deliveries in one statement;
    /// with `release`, the claimed messages still `waiting` go back to
    /// PENDING unattempted too.
    async fn settle(
        &self,
        finished: &mut Vec<Settlement>,
        waiting: &mut VecDeque<ClaimedMessage>,
        release: bool,
    ) -> anyhow::Result<()> {
        if release {
            for message in waiting.drain(..) {
                self.count(DeliveryOutcome::SkippedOpenBreaker);
                finished.push(Settlement::Release { id: message.id });
            }
        }
        if !finished.is_empty() {
            self.db.outbox_settle(&self.owner, self.clock.now_millis(), finished).await?;
            finished.clear();
        }
        Ok(())
    }

    fn count(&self, outcome: DeliveryOutcome) {
        self.deliveries[outcome as usize].increment(1);
        self.tallies.add(&self.connector, outcome as usize);
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
        self.count(outcome);
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

/// One attempt at delivering `message` through the connector `component`.
async fn deliver(runtime: &Runtime, component: &str, message: &ClaimedMessage) -> Delivery {
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
    match runtime.invoke_connector(component, request_id, envelope).await {
        Ok(attempted) => attempted.delivery,
        Err(err) => Delivery::Retryable(err.to_string()),
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
    /// Nothing (more) is due.
    Drained,
    /// The breaker refused; wait before claiming again.
    BreakerOpen { retry_after_ms: i64 },
}
