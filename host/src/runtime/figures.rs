//! What one version of a component has done so far, kept in atomics beside
//! it: invocations by outcome, a latency histogram, fuel and peak memory.
//! A rollout takes a [`Figures`] snapshot when a step starts and subtracts
//! it from one taken when the step is judged, so each step is judged on its
//! own invocations.
//!
//! The histogram is a fixed set of logarithmic buckets (each 1.25× the one
//! below, 10 µs to about 100 s) with a counter each, so recording is one
//! atomic increment and two snapshots subtract. Prometheus's histogram is
//! exported, not readable back, and an HDR histogram needs `&mut` to record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::outcome::Outcome;

/// Upper bound of the first bucket, in microseconds.
const FIRST_BUCKET_US: f64 = 10.0;
/// Each bucket's bound over the one below it.
const BUCKET_GROWTH: f64 = 1.25;
/// 10 µs · 1.25^72 ≈ 100 s; slower calls land in the last bucket.
pub const LATENCY_BUCKETS: usize = 73;

/// Counters of one version; see the module docs.
#[derive(Debug)]
pub struct VersionStats {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    latency: [AtomicU64; LATENCY_BUCKETS],
    fuel: AtomicU64,
    memory_peak: AtomicU64,
}

impl Default for VersionStats {
    fn default() -> Self {
        VersionStats {
            outcomes: Default::default(),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            fuel: AtomicU64::new(0),
            memory_peak: AtomicU64::new(0),
        }
    }
}

impl VersionStats {
    pub(crate) fn record(&self, outcome: Outcome, latency: Duration, fuel: u64, memory_peak: usize) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Rejected {
            // Not run: no latency, fuel or memory of the version's own.
            return;
        }
        self.latency[bucket(latency)].fetch_add(1, Ordering::Relaxed);
        self.fuel.fetch_add(fuel, Ordering::Relaxed);
        self.memory_peak.fetch_max(memory_peak as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Figures {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Figures {
            outcomes: std::array::from_fn(|i| load(&self.outcomes[i])),
            latency: std::array::from_fn(|i| load(&self.latency[i])),
            fuel: load(&self.fuel),
            memory_peak: load(&self.memory_peak),
        }
    }

    /// Invocations by outcome so far.
    pub(crate) fn outcome_count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()].load(Ordering::Relaxed)
    }
}

fn bucket(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us <= FIRST_BUCKET_US {
        return 0;
    }
    let index = ((us / FIRST_BUCKET_US).ln() / BUCKET_GROWTH.ln()).ceil() as usize;
    index.min(LATENCY_BUCKETS - 1)
}

/// Upper bound of bucket `index`.
fn bucket_bound(index: usize) -> Duration {
    Duration::from_secs_f64(FIRST_BUCKET_US * BUCKET_GROWTH.powi(index as i32) / 1e6)
}

/// A snapshot of a version's counters, or the difference of two.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Figures {
    /// Invocations by outcome, in the order of [`Outcome::ALL`].
    #[serde(skip)]
    pub outcomes: [u64; Outcome::ALL.len()],
    #[serde(skip)]
    pub latency: [u64; LATENCY_BUCKETS],
    /// Fuel of all its invocations.
    #[serde(skip)]
    pub fuel: u64,
    /// Largest linear memory any invocation reached, in bytes (over the
    /// version's life: a peak does not subtract).
    pub memory_peak: u64,
}

impl Default for Figures {
    fn default() -> Self {
        Figures { outcomes: [0; Outcome::ALL.len()], latency: [0; LATENCY_BUCKETS], fuel: 0, memory_peak: 0 }
    }
}

/// [`Figures`] as another replica reads them from this one's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FiguresWire {
    pub outcomes: Vec<u64>,
    pub latency: Vec<u64>,
    pub fuel: u64,
    pub memory_peak: u64,
}

impl Figures {
    pub fn to_wire(&self) -> FiguresWire {
        FiguresWire {
            outcomes: self.outcomes.to_vec(),
            latency: self.latency.to_vec(),
            fuel: self.fuel,
            memory_peak: self.memory_peak,
        }
    }

    /// `None` when the counts do not fit (another build's bucket layout).
    pub fn from_wire(wire: &FiguresWire) -> Option<Figures> {
        Some(Figures {
            outcomes: wire.outcomes.as_slice().try_into().ok()?,
            latency: wire.latency.as_slice().try_into().ok()?,
            fuel: wire.fuel,
            memory_peak: wire.memory_peak,
        })
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Figures) -> Figures {
        Figures {
            outcomes: std::array::from_fn(|i| self.outcomes[i].saturating_sub(earlier.outcomes[i])),
            latency: std::array::from_fn(|i| self.latency[i].saturating_sub(earlier.latency[i])),
            fuel: self.fuel.saturating_sub(earlier.fuel),
            memory_peak: self.memory_peak,
        }
    }

    /// Two windows together, as one (say, two versions' same second).
    pub fn plus(&self, other: &Figures) -> Figures {
        Figures {
            outcomes: std::array::from_fn(|i| self.outcomes[i] + other.outcomes[i]),
            latency: std::array::from_fn(|i| self.latency[i] + other.latency[i]),
            fuel: self.fuel + other.fuel,
            memory_peak: self.memory_peak.max(other.memory_peak),
        }
    }

    /// Invocations that ran (refused ones are not the version's doing).
    pub fn invocations(&self) -> u64 {
        self.outcomes.iter().sum::<u64>() - self.outcomes[Outcome::Rejected.index()]
    }

    /// Invocations that failed: error, trap, timeout or fuel exhausted.
    pub fn errors(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| !matches!(o, Outcome::Ok | Outcome::Rejected))
            .map(|o| self.outcomes[o.index()])
            .sum()
    }

    /// Share of invocations that failed, 0 for none.
    pub fn error_rate(&self) -> f64 {
        match self.invocations() {
            0 => 0.0,
            n => self.errors() as f64 / n as f64,
        }
    }

    /// The upper bound of the bucket holding the 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// The upper bound of the bucket holding the median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    /// The upper bound of the bucket holding quantile `q` (0–1).
    fn quantile(&self, q: f64) -> Duration {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_bound(index);
            }
        }
        bucket_bound(LATENCY_BUCKETS - 1)
    }

    /// Calls surely slower than `limit`: those in buckets wholly above it.
    pub fn slower_than(&self, limit: Duration) -> u64 {
        (1..LATENCY_BUCKETS).filter(|&index| bucket_bound(index - 1) >= limit).map(|index| self.latency[index]).sum()
    }

    /// Mean fuel per invocation that ran.
    pub fn fuel_per_invocation(&self) -> f64 {
        match self.invocations() {
            0 => 0.0,
            n => self.fuel as f64 / n as f64,
        }
    }

    /// What a person reads of them: `120 calls, 0.8 % errors, p99 3.1 ms,
    /// 44,512 fuel/call, peak 2.0 MiB`.
    pub fn summary(&self) -> String {
        format!(
            "{} calls, {:.1} % errors, p99 {:.2} ms, {:.0} fuel/call, peak {:.1} MiB",
            self.invocations(),
            100.0 * self.error_rate(),
            self.p99().as_secs_f64() * 1e3,
            self.fuel_per_invocation(),
            self.memory_peak as f64 / (1024.0 * 1024.0)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_quarter_and_hold_their_latency() {
        assert_eq!(bucket(Duration::from_micros(5)), 0);
        assert_eq!(bucket(Duration::from_micros(10)), 0);
        for us in [11, 100, 1_000, 12_345, 1_000_000] {
            let latency = Duration::from_micros(us);
            let index = bucket(latency);
            assert!(bucket_bound(index) >= latency, "{us} µs under its bound");
            assert!(bucket_bound(index - 1) < latency, "{us} µs above the bound below");
        }
        assert_eq!(bucket(Duration::from_secs(1_000)), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let stats = VersionStats::default();
        for _ in 0..10 {
            stats.record(Outcome::Ok, Duration::from_micros(100), 1_000, 4096);
        }
        let start = stats.snapshot();
        for _ in 0..98 {
            stats.record(Outcome::Ok, Duration::from_micros(100), 2_000, 8192);
        }
        stats.record(Outcome::Trap, Duration::from_millis(50), 2_000, 8192);
        stats.record(Outcome::Rejected, Duration::ZERO, 0, 0);
        stats.record(Outcome::Timeout, Duration::from_millis(50), 2_000, 8192);
        let window = stats.snapshot().since(&start);
        assert_eq!(window.invocations(), 100);
        assert_eq!(window.errors(), 2);
        assert!((window.error_rate() - 0.02).abs() < 1e-9);
        assert!((window.fuel_per_invocation() - 2_000.0).abs() < 1e-9);
        assert_eq!(window.memory_peak, 8192);
        assert!(window.p50() >= Duration::from_micros(100) && window.p50() < Duration::from_micros(125));
        // 98 of 100 at 100 µs, two at 50 ms: p99 is 50 ms's bucket.
        let p99 = window.p99();
        assert!(p99 >= Duration::from_millis(50) && p99 < Duration::from_millis(63), "{p99:?}");
        assert_eq!(window.slower_than(Duration::from_millis(10)), 2);
        assert_eq!(window.slower_than(Duration::from_micros(50)), 100);
        // 50 ms's bucket runs from 48.1 ms: not wholly above 49 ms.
        assert_eq!(window.slower_than(Duration::from_millis(49)), 0);
    }
}
