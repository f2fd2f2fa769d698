//! Admission before a call: a component that serves routes waits in its
//! bounded queue, then every component passes its circuit breaker. A
//! refused call costs nothing more and comes back already recorded.

use std::time::Instant;

use super::Runtime;
use super::outcome::{Cost, Outcome, OutcomeRecord};
use super::registry::Deployed;
use crate::resilience::{Permit, Slot};
use crate::telemetry::metrics::ADMISSION_REJECTED;

/// `Retry-After` for a full queue: long enough for a slot to free up,
/// short enough that a retry soon succeeds.
const ADMISSION_RETRY_AFTER_MS: i64 = 1_000;

/// Why a call was refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The `admission_rejected_total` reason: queue_full, queue_timeout, breaker_open.
    pub reason: &'static str,
    pub retry_after_ms: i64,
}

/// Admitted to run: the queue slot and breaker permit, held until the
/// invocation is recorded.
pub(crate) struct Admitted {
    _slot: Option<Slot>,
    permit: Option<Permit>,
}

impl Admitted {
    /// Tells the breaker how the call went: `healthy` unless the component
    /// itself failed.
    pub(crate) fn settle(self, healthy: bool) {
        if let Some(permit) = self.permit {
            permit.record(healthy);
        }
    }
}

impl Runtime {
    /// Bounded admission (for components that serve routes), then the
    /// breaker; a refused call costs nothing more and comes back recorded.
    pub(crate) async fn admit(
        &self,
        deployed: &Deployed,
        request_id: &str,
        started: Instant,
    ) -> Result<Admitted, (OutcomeRecord, Rejection)> {
        let name = &*deployed.context.name;
        let slot = match self.admissions.get(name) {
            Some(gate) => match gate.admit().await {
                Ok(slot) => Some(slot),
                Err(refusal) => {
                    let rejection = Rejection { reason: refusal.as_str(), retry_after_ms: ADMISSION_RETRY_AFTER_MS };
                    return Err(self.refuse(deployed, request_id, started, rejection));
                }
            },
            None => None,
        };
        match self.breaker(name).map(|b| b.try_acquire()).transpose() {
            Ok(permit) => Ok(Admitted { _slot: slot, permit }),
            Err(rejected) => {
                let rejection = Rejection { reason: "breaker_open", retry_after_ms: rejected.retry_after_ms };
                Err(self.refuse(deployed, request_id, started, rejection))
            }
        }
    }

    fn refuse(
        &self,
        deployed: &Deployed,
        request_id: &str,
        started: Instant,
        rejection: Rejection,
    ) -> (OutcomeRecord, Rejection) {
        self.metrics.counter(ADMISSION_REJECTED, &[("reason", rejection.reason)]).increment(1);
        (deployed.finish(request_id, Outcome::Rejected, started, Cost::default(), None), rejection)
    }
}
