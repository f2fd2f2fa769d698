//! A circuit breaker per component.
//!
//! Closed → Open after `failure_threshold` consecutive failures, or when the
//! failure rate in the current window passes `failure_rate` (with at least
//! `min_calls` calls, so two failures out of three do not trip it). Open
//! rejects at once, without instantiating anything, until `open_for` has
//! passed; then Half-open admits at most `half_open_probes` concurrent
//! probes. A successful probe closes the breaker, a failed one reopens it.
//!
//! Every admitted call holds a [`Permit`]. A call that hangs ends at its
//! invocation deadline with a verdict (a timeout, a failure). A permit
//! dropped without one belongs to a call whose caller went away (a client
//! that disconnected, a request timeout at the HTTP layer): that says
//! nothing about the component, so it counts as neither, and a probe's
//! place goes to the next call, so the breaker is never stuck half-open.
//! Counting it as a failure let any client open a breaker by sending a few
//! requests and leaving. Time comes from the injected clock.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::SharedClock;

/// Tuning of one breaker; the defaults suit a component that normally
/// succeeds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (3–10).
    pub failure_threshold: u32,
    /// Failure share in the window that opens the breaker (0–1).
    pub failure_rate: f64,
    /// Calls the window needs before the rate counts.
    pub min_calls: u32,
    /// Length of the failure-rate window.
    pub window_ms: i64,
    /// How long the breaker stays open before probing.
    pub open_for_ms: i64,
    /// Probes admitted at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window_ms: 30_000,
            open_for_ms: 10_000,
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(3..=10).contains(&self.failure_threshold) {
            return Err("breaker failure_threshold must be between 3 and 10".into());
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err("breaker failure_rate must be in (0, 1]".into());
        }
        if self.min_calls == 0 || self.window_ms <= 0 || self.open_for_ms <= 0 || self.half_open_probes == 0 {
            return Err("breaker min_calls, window_ms, open_for_ms and half_open_probes must be positive".into());
        }
        Ok(())
    }
}

/// The externally visible state; the numbers are the gauge values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Why a call was not admitted, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after_ms: i64,
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: i64 },
    HalfOpen { probes: u32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
    window_start: i64,
    window_calls: u32,
    window_failures: u32,
    trips: u64,
}

impl Inner {
    /// Starts counting afresh from `now`.
    fn forget(&mut self, now: i64) {
        self.consecutive_failures = 0;
        self.window_start = now;
        self.window_calls = 0;
        self.window_failures = 0;
    }
}

pub struct CircuitBreaker {
    name: Arc<str>,
    config: BreakerConfig,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker").field("name", &self.name).field("state", &self.state()).finish()
    }
}

impl CircuitBreaker {
    pub fn new(name: Arc<str>, config: BreakerConfig, clock: SharedClock) -> Arc<Self> {
        let now = clock.now_millis();
        Arc::new(Self {
            name,
            config,
            clock,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                window_start: now,
                window_calls: 0,
                window_failures: 0,
                trips: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update;
        // the counters are still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state now; an open breaker whose time is up reads as half-open.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if self.clock.now_millis() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Milliseconds until an open breaker admits a probe; `None` unless open.
    pub fn open_remaining_ms(&self) -> Option<i64> {
        match self.lock().state {
            State::Open { until } => Some(until - self.clock.now_millis()).filter(|ms| *ms > 0),
            _ => None,
        }
    }

    /// Times the breaker has opened.
    pub fn trips(&self) -> u64 {
        self.lock().trips
    }

    /// Closes the breaker and forgets its counts: the version whose faults
    /// opened it no longer serves (a rollout rolled it back).
    pub fn reset(&self) {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        inner.state = State::Closed;
        inner.forget(now);
        tracing::info!(breaker = &*self.name, "circuit breaker reset: the failing version was rolled back");
    }

    /// Admits a call or says when to retry.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        let probe = match inner.state {
            State::Closed => false,
            State::Open { until } if now < until => return Err(Rejected { retry_after_ms: until - now }),
            State::Open { .. } => {
                inner.state = State::HalfOpen { probes: 1 };
                tracing::info!(breaker = &*self.name, "circuit breaker half-open: probing");
                true
            }
            State::HalfOpen { probes } if probes < self.config.half_open_probes => {
                inner.state = State::HalfOpen { probes: probes + 1 };
                true
            }
            // Probes are out; their verdict comes within one deadline.
            State::HalfOpen { .. } => return Err(Rejected { retry_after_ms: self.config.open_for_ms.min(1_000) }),
        };
        Ok(Permit { breaker: self.clone(), probe, settled: false })
    }

    fn settle(&self, probe: bool, success: bool) {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        match inner.state {
            State::HalfOpen { .. } if probe => {
                if success {
                    inner.state = State::Closed;
                    inner.forget(now);
                    tracing::info!(breaker = &*self.name, "circuit breaker closed");
                } else {
                    self.trip(&mut inner, now);
                }
            }
            State::Closed => {
                if now - inner.window_start >= self.config.window_ms {
                    inner.window_start = now;
                    inner.window_calls = 0;
                    inner.window_failures = 0;
                }
                inner.window_calls += 1;
                if success {
                    inner.consecutive_failures = 0;
                } else {
                    inner.consecutive_failures += 1;
                    inner.window_failures += 1;
                    let rate_exceeded = inner.window_calls >= self.config.min_calls
                        && f64::from(inner.window_failures) / f64::from(inner.window_calls) > self.config.failure_rate;
                    if inner.consecutive_failures >= self.config.failure_threshold || rate_exceeded {
                        self.trip(&mut inner, now);
                    }
                }
            }
            // Calls admitted before the breaker opened, finishing late:
            // their verdict is stale.
            State::Open { .. } | State::HalfOpen { .. } => {}
        }
    }

    /// A call that ended without a verdict: a probe gives its place back.
    fn abandon(&self, probe: bool) {
        if !probe {
            return;
        }
        if let State::HalfOpen { probes } = &mut self.lock().state {
            *probes = probes.saturating_sub(1);
        }
    }

    fn trip(&self, inner: &mut Inner, now: i64) {
        inner.state = State::Open { until: now + self.config.open_for_ms };
        inner.trips += 1;
        inner.forget(now);
        tracing::warn!(breaker = &*self.name, open_for_ms = self.config.open_for_ms, "circuit breaker opened");
    }
}

/// An admitted call. Settle it with [`Permit::success`] or
/// [`Permit::failure`]; dropping it unsettled is no verdict.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
    settled: bool,
}

impl Permit {
    pub fn success(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, true);
    }

    pub fn failure(mut self) {
        self.settled = true;
        self.breaker.settle(self.probe, false);
    }

    pub fn record(self, success: bool) {
        if success { self.success() } else { self.failure() }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.abandon(self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn breaker(config: BreakerConfig) -> (Arc<CircuitBreaker>, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        (CircuitBreaker::new(Arc::from("test"), config, Arc::new(clock.clone())), clock)
    }

    fn fail(b: &Arc<CircuitBreaker>, n: u32) {
        for _ in 0..n {
            b.try_acquire().expect("admitted").failure();
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_rejects_without_calling() {
        let (b, _clock) = breaker(BreakerConfig { failure_threshold: 3, ..Default::default() });
        fail(&b, 2);
        b.try_acquire().expect("admitted").success(); // resets the run
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.trips(), 1);
        let rejected = b.try_acquire().expect_err("open rejects");
        assert_eq!(rejected.retry_after_ms, 10_000);
    }

    #[test]
    fn opens_on_failure_rate_in_window() {
        let config = BreakerConfig { failure_threshold: 10, failure_rate: 0.5, min_calls: 10, ..Default::default() };
        let (b, _clock) = breaker(config);
        for i in 0..10 {
            let permit = b.try_acquire().expect("admitted");
            permit.record(i % 3 == 2); // 7 of 10 fail, never more than 2 in a row
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn failure_rate_window_resets() {
        let config = BreakerConfig { failure_threshold: 10, min_calls: 4, window_ms: 1_000, ..Default::default() };
        let (b, clock) = breaker(config);
        fail(&b, 2);
        b.try_acquire().expect("admitted").success();
        clock.advance(1_000);
        // A new window: these alone are under min_calls.
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_after_open_for_admits_only_configured_probes() {
        let config =
            BreakerConfig { failure_threshold: 3, half_open_probes: 2, open_for_ms: 500, ..Default::default() };
        let (b, clock) = breaker(config);
        fail(&b, 3);
        clock.advance(499);
        assert!(b.try_acquire().is_err());
        clock.advance(1);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let first = b.try_acquire().expect("probe 1");
        let second = b.try_acquire().expect("probe 2");
        assert!(b.try_acquire().is_err(), "a third concurrent probe is refused");
        first.success();
        assert_eq!(b.state(), BreakerState::Closed);
        drop(second); // stale verdict after closing: ignored
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire().is_ok());
    }

    #[test]
    fn failed_probe_reopens() {
        let (b, clock) = breaker(BreakerConfig { failure_threshold: 3, open_for_ms: 100, ..Default::default() });
        fail(&b, 3);
        clock.advance(100);
        b.try_acquire().expect("probe").failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.trips(), 2);
        assert_eq!(b.try_acquire().expect_err("open").retry_after_ms, 100);
    }

    #[test]
    fn reset_closes_at_once_and_counts_afresh() {
        let (b, _clock) = breaker(BreakerConfig { failure_threshold: 3, open_for_ms: 100, ..Default::default() });
        fail(&b, 3);
        assert_eq!(b.state(), BreakerState::Open);
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        // Two failures after the reset do not reach the threshold of three.
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.trips(), 1, "the trip before the reset still counts");
    }

    #[test]
    fn abandoned_calls_are_no_verdict() {
        let (b, clock) = breaker(BreakerConfig { failure_threshold: 3, open_for_ms: 100, ..Default::default() });
        // Callers that went away, more than the threshold: still closed.
        for _ in 0..10 {
            drop(b.try_acquire().expect("closed"));
        }
        assert_eq!((b.state(), b.trips()), (BreakerState::Closed, 0));

        fail(&b, 3);
        clock.advance(100);
        let probe = b.try_acquire().expect("probe");
        assert!(b.try_acquire().is_err(), "one probe at a time");
        // The probe's caller goes away: the next call probes instead.
        drop(probe);
        assert_eq!(b.state(), BreakerState::HalfOpen, "no verdict either way");
        b.try_acquire().expect("the next probe").success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn config_bounds_are_checked() {
        assert!(BreakerConfig::default().validate().is_ok());
        assert!(BreakerConfig { failure_threshold: 2, ..Default::default() }.validate().is_err());
        assert!(BreakerConfig { failure_threshold: 11, ..Default::default() }.validate().is_err());
        assert!(BreakerConfig { half_open_probes: 0, ..Default::default() }.validate().is_err());
    }
}
