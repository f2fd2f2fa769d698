//! Store-and-forward delivery of outbox messages.
//!
//! Handlers enqueue messages inside their transaction (see
//! `capabilities::outbox`); the [`dispatcher`] claims due messages with a
//! lease, hands each to its connector component through the same invoke path
//! as handlers, and records delivery, a retry with backoff, or a dead letter.
//! This module decides *what* happens to a message; SQL lives in `db::outbox`.

pub mod backoff;
pub mod dispatcher;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub use dispatcher::{Dispatcher, DispatcherHandle};

use crate::config::Config;
use crate::telemetry::metrics::DELIVERY_OUTCOMES;

/// Delivery attempts per connector and outcome (in the order of
/// `DELIVERY_OUTCOMES`), kept where they can be read back: the Prometheus
/// counters cannot be, and the dashboard's delivery rate is their change.
#[derive(Debug, Default)]
pub struct DeliveryTallies(HashMap<String, [AtomicU64; DELIVERY_OUTCOMES.len()]>);

impl DeliveryTallies {
    /// A zeroed tally for every configured connector.
    pub fn new(config: &Config) -> DeliveryTallies {
        DeliveryTallies(config.connectors.keys().map(|name| (name.clone(), Default::default())).collect())
    }

    fn add(&self, connector: &str, outcome: usize) {
        if let Some(counts) = self.0.get(connector) {
            counts[outcome].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages `connector` has delivered so far.
    pub fn delivered(&self, connector: &str) -> u64 {
        self.0.get(connector).map_or(0, |counts| counts[0].load(Ordering::Relaxed))
    }
}
