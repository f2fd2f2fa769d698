//! How an invocation ended, and what it cost: the one record every call
//! produces. Metrics, breakers and logs read it; nothing else decides how a
//! call went.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Trap;

use crate::telemetry::metrics::OUTCOMES;

/// How an invocation ended; a bounded label set for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered with a status below 500, or delivered.
    Ok,
    /// Answered with a 5xx status, a connector error, or its work could not
    /// be committed.
    Error,
    /// Trapped: a panic, an invalid operation, or growing past its memory limit.
    Trap,
    /// Ran out of its fuel budget.
    FuelExhausted,
    /// Passed its wall-clock deadline.
    Timeout,
    /// Not run: the component's circuit breaker is open.
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 6] =
        [Outcome::Ok, Outcome::Error, Outcome::Trap, Outcome::FuelExhausted, Outcome::Timeout, Outcome::Rejected];

    /// The `outcome` label: the metric names' one list, by position.
    pub fn as_str(self) -> &'static str {
        OUTCOMES[self.index()]
    }

    /// Position in [`Outcome::ALL`], for per-outcome arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Outcomes that say the component itself is unhealthy.
    pub(crate) fn is_fault(self) -> bool {
        matches!(self, Outcome::Trap | Outcome::FuelExhausted | Outcome::Timeout)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one invocation cost and how it ended.
#[derive(Debug, Clone)]
pub struct OutcomeRecord {
    pub component: Arc<str>,
    pub version: Arc<str>,
    pub outcome: Outcome,
    pub latency: Duration,
    pub fuel_consumed: u64,
    /// Largest linear memory the instance grew to, in bytes.
    pub memory_peak: usize,
}

/// What a call used, as its store reports it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cost {
    pub fuel_consumed: u64,
    /// Largest linear memory, in bytes.
    pub memory_peak: usize,
}

/// Returned by the epoch callback past the deadline, so a timeout can be
/// told apart from other traps.
#[derive(Debug)]
pub(crate) struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invocation exceeded its wall-clock deadline")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Sorts a failed call into an outcome.
pub(crate) fn classify(err: &wasmtime::Error) -> Outcome {
    if err.chain().any(|e| e.is::<DeadlineExceeded>()) {
        return Outcome::Timeout;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::FuelExhausted,
        Some(Trap::Interrupt) => Outcome::Timeout,
        _ => Outcome::Trap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_in_all_and_names_the_label() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome}");
        }
        let labels: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels, ["ok", "error", "trap", "fuel_exhausted", "timeout", "rejected"]);
    }

    #[test]
    fn deadlines_fuel_and_traps_are_told_apart() {
        assert_eq!(classify(&wasmtime::Error::new(DeadlineExceeded)), Outcome::Timeout);
        assert_eq!(classify(&wasmtime::Error::new(DeadlineExceeded).context("while calling")), Outcome::Timeout);
        assert_eq!(classify(&wasmtime::Error::new(Trap::OutOfFuel)), Outcome::FuelExhausted);
        assert_eq!(classify(&wasmtime::Error::new(Trap::UnreachableCodeReached)), Outcome::Trap);
        assert_eq!(classify(&wasmtime::Error::msg("host failure")), Outcome::Trap);
    }
}
