//! Pass/fail rules of a run. Every scenario has default thresholds (error
//! rate, p99) that flags can override, plus checks of its own (no lost
//! messages, enough swaps); any failed check makes `loadtest` exit non-zero,
//! which is what lets `just loadtest smoke` gate CI.

use serde::{Deserialize, Serialize};

/// The common limits, in the units people type on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Largest tolerated fraction of errors (5xx, transport, timeouts).
    pub max_error_rate: f64,
    /// Largest tolerated p99 latency over the whole run, in ms.
    pub max_p99_ms: f64,
}

/// One evaluated rule, as written to the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// The rule, e.g. `<= 500 ms`.
    pub limit: String,
    pub actual: String,
    pub passed: bool,
}

impl Thresholds {
    /// Checks the error rate and p99 of a run with `total` requests.
    pub fn evaluate(&self, total: u64, errors: u64, p99_ms: f64) -> Vec<Check> {
        let requests = at_least("requests completed", total as f64, 1.0, "");
        let rate = if total == 0 { 1.0 } else { errors as f64 / total as f64 };
        let error_rate = Check {
            name: "error rate".into(),
            limit: format!("<= {}", percent(self.max_error_rate)),
            actual: format!("{} ({errors} of {total})", percent(rate)),
            passed: total > 0 && rate <= self.max_error_rate,
        };
        vec![requests, error_rate, at_most("p99 latency", p99_ms, self.max_p99_ms, " ms")]
    }
}

/// `actual <= limit`.
pub fn at_most(name: &str, actual: f64, limit: f64, unit: &str) -> Check {
    Check {
        name: name.into(),
        limit: format!("<= {}{unit}", number(limit)),
        actual: format!("{}{unit}", number(actual)),
        passed: actual <= limit,
    }
}

/// `actual >= limit`.
pub fn at_least(name: &str, actual: f64, limit: f64, unit: &str) -> Check {
    Check {
        name: name.into(),
        limit: format!(">= {}{unit}", number(limit)),
        actual: format!("{}{unit}", number(actual)),
        passed: actual >= limit,
    }
}

/// True when every check passed (and there was at least one).
pub fn all_passed(checks: &[Check]) -> bool {
    !checks.is_empty() && checks.iter().all(|c| c.passed)
}

/// Integers without a fraction, others with up to two decimals.
pub fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{value:.0}") } else { format!("{value:.2}") }
}

fn percent(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const SMOKE: Thresholds = Thresholds { max_error_rate: 0.0, max_p99_ms: 500.0 };

    #[test]
    fn a_clean_fast_run_passes() {
        let checks = SMOKE.evaluate(1500, 0, 42.0);
        assert!(all_passed(&checks), "{checks:?}");
    }

    #[test]
    fn one_error_fails_a_zero_error_budget() {
        let checks = SMOKE.evaluate(1500, 1, 42.0);
        assert!(!all_passed(&checks));
        let failed: Vec<&str> = checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
        assert_eq!(failed, ["error rate"]);
    }

    #[test]
    fn a_slow_tail_fails_the_p99_limit() {
        let checks = SMOKE.evaluate(1500, 0, 500.5);
        assert!(!all_passed(&checks));
        assert!(SMOKE.evaluate(1500, 0, 500.0).iter().all(|c| c.passed), "the limit itself passes");
    }

    #[test]
    fn an_error_budget_tolerates_errors_up_to_it() {
        let lenient = Thresholds { max_error_rate: 0.01, max_p99_ms: 2000.0 };
        assert!(all_passed(&lenient.evaluate(1000, 10, 100.0)));
        assert!(!all_passed(&lenient.evaluate(1000, 11, 100.0)));
    }

    #[test]
    fn a_run_without_requests_fails() {
        assert!(!all_passed(&SMOKE.evaluate(0, 0, 0.0)));
        assert!(!all_passed(&[]));
    }

    #[test]
    fn scenario_checks_compare_both_ways() {
        assert!(at_least("swaps", 20.0, 20.0, "").passed);
        assert!(!at_least("swaps", 19.0, 20.0, "").passed);
        assert!(at_most("lost messages", 0.0, 0.0, "").passed);
        assert!(!at_most("lost messages", 3.0, 0.0, "").passed);
    }
}
