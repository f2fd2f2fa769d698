//! The decision rule: is a new version worse than the one beside it?
//!
//! Two kinds of look. At every tick a version fails only on evidence that
//! is already sure: an early stop for clear faults that never trips on
//! noise. At a step's end, with the whole step's calls, the canary must
//! also be no worse by the plain figures, and must not have hurt the
//! stable version.
//!
//! - **Errors**, from [`EARLY_CALLS`] calls on: at any look, the canary
//!   fails when even the 99 % lower bound of its error share (Wilson score)
//!   is more than `max_error_rate_increase` above the stable version's; at
//!   a step's end, also when its share itself is. A build that always traps
//!   fails after five calls, one that traps on a fifth of them after some
//!   twenty to thirty, one that traps on a tenth after about a hundred or at
//!   the step's end; one error in 50 beside one in 100 never fails.
//! - With `min_invocations` calls of each version: **mean fuel** per call
//!   and **peak memory** against a ratio, and **latency** as shares of
//!   calls. The canary's median is beyond the limit (the stable median
//!   times `max_p99_ratio`, and at least [`P99_FLOOR`] more) when more than
//!   half of its calls took longer, and its p99 beyond the p99 limit when
//!   more than 1 % did; each fails when the 99 % lower bound of that share
//!   is above it. A build slower on every call fails on its median at
//!   `min_invocations` (on its p99 first), one slower on a few calls on its
//!   p99, and one slow
//!   call in a hundred, which is what a p99 allows and what a busy host
//!   produces, never fails a canary. Comparing two small windows' p99s
//!   directly would compare their single slowest calls.
//! - **Harm**, at a step's end: a canary can hurt what both versions share
//!   (the database's write lock, the CPU); then both are slower or fail
//!   alike, and comparing them finds nothing. So [`harms_stable`] judges the
//!   stable version over the step against its own figures from before the
//!   rollout, by the error rule and a stricter tail: more than [`HARM_TAIL`]
//!   of its calls surely beyond its old p99 limit. A stall of the whole host
//!   for a fraction of a second slows a few percent of a step's calls, both
//!   versions' alike; it must not roll a good canary back.

use std::time::Duration;

use crate::config::RolloutConfig;
use crate::runtime::Figures;
use crate::telemetry::metrics::ROLLBACK_REASONS;

/// One-sided 99 % normal quantile: a few looks a second at a growing
/// sample must not add up to a noisy canary rolled back.
const Z: f64 = 2.326;
/// Calls of the canary before its error share is judged at all.
pub const EARLY_CALLS: u64 = 5;

/// The share of calls a median leaves above it.
const MEDIAN_TAIL: f64 = 0.5;
/// The share of calls a p99 leaves above it.
const P99_TAIL: f64 = 0.01;
/// The share of the stable version's calls beyond the limit that counts as
/// harm: its p95, not its p99, moved.
const HARM_TAIL: f64 = 0.05;

/// Latency regressions smaller than this are not judged: on a busy host a
/// small window's p99 moves more than that with scheduling alone, and a
/// build that adds less is no regression a client notices.
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
    /// Most calls slower: the median moved.
    P50,
    /// The slowest calls slower: the tail moved.
    P99,
    /// The stable version fails more beside the canary than before it.
    StableErrorRate,
    /// The stable version is slower beside the canary than before it.
    StableP99,
}

impl Reason {
    /// The `reason` label: the metric names' one list, by position.
    pub fn as_str(self) -> &'static str {
        ROLLBACK_REASONS[self as usize]
    }
}

/// Judges `candidate` against `stable`, each over the same window; with
/// `step_end`, the step's calls are all in and the plain figures count too.
pub fn judge(stable: &Figures, candidate: &Figures, config: &RolloutConfig, step_end: bool) -> Verdict {
    if errors_alarming(stable, candidate, config.max_error_rate_increase) {
        return Verdict::Fail(Reason::ErrorRate);
    }
    if candidate.invocations() < config.min_invocations || stable.invocations() < config.min_invocations {
        return Verdict::TooFew;
    }
    if step_end && candidate.error_rate() > stable.error_rate() + config.max_error_rate_increase {
        return Verdict::Fail(Reason::ErrorRate);
    }
    if ratio(candidate.fuel_per_invocation(), stable.fuel_per_invocation()) > config.max_fuel_ratio {
        return Verdict::Fail(Reason::Fuel);
    }
    if ratio(candidate.memory_peak as f64, stable.memory_peak as f64) > config.max_memory_ratio {
        return Verdict::Fail(Reason::Memory);
    }
    if surely_slower(candidate, latency_limit(stable.p99(), config), P99_TAIL) {
        return Verdict::Fail(Reason::P99);
    }
    // Beside a stable version whose tail the canary itself lengthened (its
    // calls queue behind the canary's), the canary's tail may not stand
    // out; its median still does.
    if surely_slower(candidate, latency_limit(stable.p50(), config), MEDIAN_TAIL) {
        return Verdict::Fail(Reason::P50);
    }
    Verdict::Pass
}

/// Why the stable version during a canary (`during`) is worse than it was
/// before the rollout (`before`, its figures until then), if it is. Says
/// nothing until both have `min_invocations`.
pub fn harms_stable(before: &Figures, during: &Figures, config: &RolloutConfig) -> Option<Reason> {
    if before.invocations() < config.min_invocations || during.invocations() < config.min_invocations {
        return None;
    }
    if errors_alarming(before, during, config.max_error_rate_increase) {
        return Some(Reason::StableErrorRate);
    }
    surely_slower(during, latency_limit(before.p99(), config), HARM_TAIL).then_some(Reason::StableP99)
}

/// A latency `max_p99_ratio` times `reference`, and at least [`P99_FLOOR`] more.
fn latency_limit(reference: Duration, config: &RolloutConfig) -> Duration {
    reference.mul_f64(config.max_p99_ratio).max(reference + P99_FLOOR)
}

/// Whether more than `tail` of the calls, on the 99 % lower bound, took
/// longer than `limit`.
fn surely_slower(figures: &Figures, limit: Duration, tail: f64) -> bool {
    wilson_lower(figures.slower_than(limit), figures.invocations()) > tail
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
        assert_eq!(judge(&stable, &canary, &config(), false), Verdict::Pass);
        // Equal shares, a little more each.
        let canary = figures(50, 2, FAST, 1_100, 1 << 20);
        let stable = figures(150, 6, FAST, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &canary, &config(), false), Verdict::Pass);
    }

    #[test]
    fn a_real_fault_trips_within_the_first_calls() {
        let stable = figures(200, 0, FAST, 1_000, 1 << 20);
        // Always trapping: five calls are enough, fewer say nothing yet.
        assert_eq!(
            judge(&stable, &figures(5, 5, FAST, 1_000, 1 << 20), &config(), false),
            Verdict::Fail(Reason::ErrorRate)
        );
        assert_eq!(judge(&stable, &figures(4, 4, FAST, 1_000, 1 << 20), &config(), false), Verdict::TooFew);
        // A fifth of the calls: well within min_invocations.
        let first = (1..=50).find(|n| {
            judge(&stable, &figures(*n, n / 5, FAST, 1_000, 1 << 20), &config(), false)
                == Verdict::Fail(Reason::ErrorRate)
        });
        assert!(first.is_some_and(|n| n <= 40), "tripped after {first:?} calls");
    }

    #[test]
    fn one_error_in_fifty_never_trips_whatever_call_it_is() {
        let stable = figures(100, 1, FAST, 1_000, 1 << 20);
        for calls in 1..=50 {
            // The error came first: the worst order.
            let canary = figures(calls, 1, FAST, 1_000, 1 << 20);
            assert_ne!(
                judge(&stable, &canary, &config(), false),
                Verdict::Fail(Reason::ErrorRate),
                "after {calls} calls"
            );
        }
    }

    #[test]
    fn too_few_calls_of_either_version_is_no_verdict() {
        let stable = figures(200, 0, FAST, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &figures(49, 0, FAST, 1_000, 1 << 20), &config(), false), Verdict::TooFew);
        assert_eq!(judge(&figures(10, 0, FAST, 1_000, 1 << 20), &stable, &config(), false), Verdict::TooFew);
    }

    #[test]
    fn fuel_memory_and_latency_trip_for_their_own_reason() {
        let stable = figures(100, 0, FAST, 1_000, 1 << 20);
        assert_eq!(
            judge(&stable, &figures(60, 0, FAST, 5_000, 1 << 20), &config(), false),
            Verdict::Fail(Reason::Fuel)
        );
        assert_eq!(
            judge(&stable, &figures(60, 0, FAST, 1_000, 3 << 20), &config(), false),
            Verdict::Fail(Reason::Memory)
        );
        let slow = Duration::from_millis(20);
        assert_eq!(judge(&stable, &figures(60, 0, slow, 1_000, 1 << 20), &config(), false), Verdict::Fail(Reason::P99));
        // Twice as slow, but by less than the floor.
        let canary = figures(60, 0, FAST * 2, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &canary, &config(), false), Verdict::Pass);
    }

    /// `calls` fast calls of which `slow` took `latency`.
    fn with_slow_calls(calls: u64, slow: u64, latency: Duration) -> Figures {
        let stats = crate::runtime::VersionStats::default();
        for i in 0..calls {
            stats.record(Outcome::Ok, if i < slow { latency } else { FAST }, 1_000, 1 << 20);
        }
        stats.snapshot()
    }

    #[test]
    fn a_slow_call_or_two_is_a_p99_not_a_regression() {
        let stable = figures(300, 0, FAST, 1_000, 1 << 20);
        let outlier = Duration::from_millis(40);
        // The slowest of 98 calls is 200 times the stable p99: still a pass.
        assert_eq!(judge(&stable, &with_slow_calls(98, 1, outlier), &config(), false), Verdict::Pass);
        assert_eq!(judge(&stable, &with_slow_calls(98, 2, outlier), &config(), false), Verdict::Pass);
        // One call in ten that slow is a regression of the tail.
        assert_eq!(judge(&stable, &with_slow_calls(100, 10, outlier), &config(), false), Verdict::Fail(Reason::P99));
    }

    #[test]
    fn at_a_steps_end_the_plain_error_share_counts_too() {
        let stable = figures(1_800, 0, FAST, 1_000, 1 << 20);
        // 19 traps in 263 calls: 7.2 %, not yet sure to be above 5 %.
        let canary = figures(263, 19, FAST, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &canary, &config(), false), Verdict::Pass);
        assert_eq!(judge(&stable, &canary, &config(), true), Verdict::Fail(Reason::ErrorRate));
        // Noise stays noise: one in 50 beside one in 100.
        let stable = figures(100, 1, FAST, 1_000, 1 << 20);
        assert_eq!(judge(&stable, &figures(50, 1, FAST, 1_000, 1 << 20), &config(), true), Verdict::Pass);
    }

    #[test]
    fn a_canary_slower_on_most_calls_fails_on_its_median_when_the_tails_match() {
        // The stable version's tail is as long as the canary's (its calls
        // queue behind the canary's), but most of its calls are fast.
        let stable = with_slow_calls(1_000, 30, Duration::from_millis(40));
        let canary = figures(60, 0, Duration::from_millis(20), 1_000, 1 << 20);
        assert_eq!(judge(&stable, &canary, &config(), false), Verdict::Fail(Reason::P50));
        // The same calls as the stable version: nothing to see.
        assert_eq!(
            judge(&stable, &with_slow_calls(100, 3, Duration::from_millis(40)), &config(), false),
            Verdict::Pass
        );
    }

    #[test]
    fn a_canary_that_slows_or_fails_the_stable_version_harms_it() {
        let before = figures(300, 3, FAST, 1_000, 1 << 20);
        // The same as before, or a stall that slowed 3 % of the calls: no harm.
        assert_eq!(harms_stable(&before, &figures(100, 1, FAST, 1_000, 1 << 20), &config()), None);
        let stalled = with_slow_calls(1_000, 30, Duration::from_millis(80));
        assert_eq!(harms_stable(&before, &stalled, &config()), None);
        // A fifth of them queued behind a canary that holds a lock.
        let queued = with_slow_calls(1_000, 200, Duration::from_millis(30));
        assert_eq!(harms_stable(&before, &queued, &config()), Some(Reason::StableP99));
        // Every call 20 ms slower, or a fifth of them failing.
        let slowed = figures(100, 0, Duration::from_millis(20), 1_000, 1 << 20);
        assert_eq!(harms_stable(&before, &slowed, &config()), Some(Reason::StableP99));
        let failing = figures(100, 20, FAST, 1_000, 1 << 20);
        assert_eq!(harms_stable(&before, &failing, &config()), Some(Reason::StableErrorRate));
        // Too little history to say.
        assert_eq!(harms_stable(&figures(20, 0, FAST, 1_000, 1 << 20), &slowed, &config()), None);
    }

    /// A canary rollout of 12 % of 200 calls/s, looked at 4 times a second
    /// over three 10 s steps, with the canary failing a share
    /// `canary_rate` of its calls and the stable version `stable_rate`:
    /// when the rule rolled it back for its errors, in seconds, if it did.
    fn simulated_rollback(
        rng: &mut fastrand::Rng,
        canary_rate: f64,
        stable_rate: f64,
        config: &RolloutConfig,
    ) -> Option<f64> {
        const LOOKS_PER_STEP: u32 = 40;
        for (step, share) in [12.0, 25.0, 50.0].into_iter().enumerate() {
            let (stable, canary) = (crate::runtime::VersionStats::default(), crate::runtime::VersionStats::default());
            // 200 calls/s over a quarter second.
            let per_look = 50.0;
            for look in 1..=LOOKS_PER_STEP {
                for _ in 0..per_look as u32 {
                    let (stats, rate) =
                        if rng.f64() * 100.0 < share { (&canary, canary_rate) } else { (&stable, stable_rate) };
                    let outcome = if rng.f64() < rate { Outcome::Trap } else { Outcome::Ok };
                    stats.record(outcome, FAST, 1_000, 1 << 20);
                }
                let step_end = look == LOOKS_PER_STEP;
                if judge(&stable.snapshot(), &canary.snapshot(), config, step_end) == Verdict::Fail(Reason::ErrorRate) {
                    return Some(step as f64 * 10.0 + f64::from(look) / 4.0);
                }
            }
        }
        None
    }

    #[test]
    fn noise_is_rarely_rolled_back_and_a_tenth_failing_is_caught_in_seconds() {
        let mut rng = fastrand::Rng::with_seed(17);
        let rollouts = 300;
        for (threshold, max_noise, min_fast) in [(0.05, 0.03, 0.55), (0.03, 0.08, 0.85)] {
            let config = RolloutConfig { max_error_rate_increase: threshold, ..config() };
            let noise = (0..rollouts).filter(|_| simulated_rollback(&mut rng, 0.02, 0.01, &config).is_some()).count();
            let equal = (0..rollouts).filter(|_| simulated_rollback(&mut rng, 0.01, 0.01, &config).is_some()).count();
            let faults: Vec<Option<f64>> =
                (0..rollouts).map(|_| simulated_rollback(&mut rng, 0.10, 0.0, &config)).collect();
            let fast = faults.iter().filter(|t| t.is_some_and(|t| t <= 5.0)).count();
            // The figures docs/performance.md quotes (`-- --nocapture`).
            eprintln!(
                "max_error_rate_increase {threshold}: of {rollouts} rollouts, noise rolled back {noise}, equal shares {equal}, a 10 % fault decided within 5 s {fast}"
            );
            assert!(
                noise as f64 / rollouts as f64 <= max_noise,
                "{threshold}: 2 % beside 1 % rolled back {noise} times"
            );
            assert!(equal as f64 / rollouts as f64 <= 0.01, "{threshold}: equal shares rolled back {equal} times");
            assert!(faults.iter().all(Option::is_some), "{threshold}: a 10 % fault was promoted");
            assert!(fast as f64 / rollouts as f64 >= min_fast, "{threshold}: only {fast} of {rollouts} within 5 s");
        }
    }
}
