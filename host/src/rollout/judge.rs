//! The decision rule: is a new version worse than the one beside it?
//!
//! Errors are judged as soon as they say something: once the canary has
//! [`EARLY_CALLS`] calls, it fails when even the 99 % lower bound of its
//! error share (Wilson score) is more than `max_error_rate_increase` above
//! the stable version's share. A build that always traps fails after five
//! calls and one that traps on a fifth of them after some twenty to thirty,
//! while one error in 50 calls beside one in 100 never fails, in whatever
//! order the calls come. The other figures need `min_invocations` calls of each
//! version: mean fuel per call, peak memory and p99 latency, each against a
//! ratio. A p99 that grew by less than [`P99_FLOOR`] is not judged.

use std::time::Duration;

use crate::config::RolloutConfig;
use crate::runtime::Figures;
use crate::telemetry::metrics::ROLLBACK_REASONS;

/// One-sided 99 % normal quantile: a few looks a second at a growing
/// sample must not add up to a noisy canary rolled back.
const Z: f64 = 2.326;
/// Calls of the canary before its error share is judged at all.
pub const EARLY_CALLS: u64 = 5;

/// p99 regressions smaller than this are not judged: on a busy host a small
/// window's p99 moves more than that with scheduling alone, and a build
/// that adds less is no regression a client notices.
pub const P99_FLOOR: Duration = Duration::from_millis(5);

/// What one look at the two versions found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Worse than the stable version, for this reason.
    Fail(Reason),
    /// Not enough calls of one version to judge the rest.
    TooFew,
    /// No worse on any figure.
    Pass,
}

/// Why a version failed; a bounded label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ErrorRate,
    Fuel,
    Memory,
    P99,
}

impl Reason {
    /// The `reason` label: the metric names' one list, by position.
    pub fn as_str(self) -> &'static str {
        ROLLBACK_REASONS[self as usize]
    }
}

/// Judges `candidate` against `stable`, each over the same window.
pub fn judge(stable: &Figures, candidate: &Figures, config: &RolloutConfig) -> Verdict {
    if errors_alarming(stable, candidate, config.max_error_rate_increase) {
        return Verdict::Fail(Reason::ErrorRate);
    }
    if candidate.invocations() < config.min_invocations || stable.invocations() < config.min_invocations {
        return Verdict::TooFew;
    }
    if ratio(candidate.fuel_per_invocation(), stable.fuel_per_invocation()) > config.max_fuel_ratio {
        return Verdict::Fail(Reason::Fuel);
    }
    if ratio(candidate.memory_peak as f64, stable.memory_peak as f64) > config.max_memory_ratio {
        return Verdict::Fail(Reason::Memory);
    }
    let (p99, stable_p99) = (candidate.p99(), stable.p99());
    if p99.saturating_sub(stable_p99) > P99_FLOOR
        && ratio(p99.as_secs_f64(), stable_p99.as_secs_f64()) > config.max_p99_ratio
    {
        return Verdict::Fail(Reason::P99);
    }
    Verdict::Pass
}

/// Whether the candidate's error share is surely above the allowed one.
fn errors_alarming(stable: &Figures, candidate: &Figures, max_increase: f64) -> bool {
    let calls = candidate.invocations();
    calls >= EARLY_CALLS && wilson_lower(candidate.errors(), calls) > stable.error_rate() + max_increase
}

/// The lower bound of the Wilson score interval of `failures` in `calls`.
fn wilson_lower(failures: u64, calls: u64) -> f64 {
    let n = calls as f64;
    let p = failures as f64 / n;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let spread = Z * ((p * (1.0 - p) + z2 / (4.0 * n)) / n).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

fn ratio(value: f64, base: f64) -> f64 {
    match (value > 0.0, base > 0.0) {
        (_, true) => value / base,
        (true, false) => f64::INFINITY,
        (false, false) => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Outcome;

    /// `calls` calls, `errors` of them traps, each taking `latency` and
    /// `fuel`, peaking at `memory` bytes.
    fn figures(calls: u64, errors: u64, latency: Duration, fuel: u64, memory: u64) -> Figures {
        let stats = crate::runtime::VersionStats::default();
        for i in 0..calls {
            let outcome = if i < errors { Outcome::Trap } else { Outcome::Ok };
            stats.record(outcome, latency, fuel, memory as usize);
        }
        stats.snapshot()
    }

    fn config() -> RolloutConfig {
        RolloutConfig { min_invocations: 50, ..RolloutConfig::default() }
    }

    const FAST: Duration = Duration::from_micros(200);

    #[test]
    fn noise_does_not_trip() {
        let stable = figures(100, 1, FAST, 1_000, 1 << 20);
        let canary = figures(50, 1, FAST, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &canary, &config()), Verdict::Pass);
        // Equal shares, a little more each.
        let canary = figures(50, 2, FAST, 1_100, 1 << 20);
        let stable = figures(150, 6, FAST, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &canary, &config()), Verdict::Pass);
    }

    #[test]
    fn a_real_fault_trips_within_the_first_calls() {
        let stable = figures(200, 0, FAST, 1_000, 1 << 20);
        // Always trapping: five calls are enough, fewer say nothing yet.
        assert_eq!(judge(&stable, &figures(5, 5, FAST, 1_000, 1 << 20), &config()), Verdict::Fail(Reason::ErrorRate));
        assert_eq!(judge(&stable, &figures(4, 4, FAST, 1_000, 1 << 20), &config()), Verdict::TooFew);
        // A fifth of the calls: well within min_invocations.
        let first = (1..=50).find(|n| {
            judge(&stable, &figures(*n, n / 5, FAST, 1_000, 1 << 20), &config()) == Verdict::Fail(Reason::ErrorRate)
        });
        assert!(first.is_some_and(|n| n <= 40), "tripped after {first:?} calls");
    }

    #[test]
    fn one_error_in_fifty_never_trips_whatever_call_it_is() {
        let stable = figures(100, 1, FAST, 1_000, 1 << 20);
        for calls in 1..=50 {
            // The error came first: the worst order.
            let canary = figures(calls, 1, FAST, 1_000, 1 << 20);
            assert_ne!(judge(&stable, &canary, &config()), Verdict::Fail(Reason::ErrorRate), "after {calls} calls");
        }
    }

    #[test]
    fn too_few_calls_of_either_version_is_no_verdict() {
        let stable = figures(200, 0, FAST, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &figures(49, 0, FAST, 1_000, 1 << 20), &config()), Verdict::TooFew);
        assert_eq!(judge(&figures(10, 0, FAST, 1_000, 1 << 20), &stable, &config()), Verdict::TooFew);
    }

    #[test]
    fn fuel_memory_and_latency_trip_for_their_own_reason() {
        let stable = figures(100, 0, FAST, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &figures(60, 0, FAST, 5_000, 1 << 20), &config()), Verdict::Fail(Reason::Fuel));
        assert_eq!(judge(&stable, &figures(60, 0, FAST, 1_000, 3 << 20), &config()), Verdict::Fail(Reason::Memory));
        let slow = Duration::from_millis(20);
        assert_eq!(judge(&stable, &figures(60, 0, slow, 1_000, 1 << 20), &config()), Verdict::Fail(Reason::P99));
        // Twice as slow, but by less than the floor.
        let canary = figures(60, 0, FAST * 2, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &canary, &config()), Verdict::Pass);
    }
}
