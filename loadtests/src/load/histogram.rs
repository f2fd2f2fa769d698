//! From raw samples to numbers: latency percentiles (via an HDR histogram,
//! so p99.9 of a million samples costs a few kilobytes) and per-second
//! timelines for the chart.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{Outcome, Sample};

/// Latencies above this (µs) are clamped; the client gives up long before.
const MAX_TRACKABLE_US: u64 = 120_000_000;
/// Three significant figures: 0.1% error on each percentile.
const SIGNIFICANT_FIGURES: u8 = 3;

/// Percentiles of one group of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A latency histogram in microseconds. The bounds are constants
/// hdrhistogram accepts, so `None` never happens in practice; callers degrade
/// to empty statistics rather than panic.
pub fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGNIFICANT_FIGURES).ok()
}

/// Percentiles of the samples that got an answer or failed while sending;
/// [`Outcome::Overload`] samples were never sent and have no latency.
pub fn stats<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> LatencyStats {
    let Some(mut histogram) = new_histogram() else {
        return LatencyStats::default();
    };
    for sample in samples {
        if sample.outcome != Outcome::Overload {
            histogram.saturating_record(sample.latency_us.max(1));
        }
    }
    stats_of(&histogram)
}

/// Percentiles of a histogram of microseconds.
pub fn stats_of(histogram: &Histogram<u64>) -> LatencyStats {
    if histogram.is_empty() {
        return LatencyStats::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencyStats {
        count: histogram.len(),
        mean_ms: histogram.mean() / 1000.0,
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p95_ms: ms(histogram.value_at_quantile(0.95)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    }
}

/// One second of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Start of the bucket, seconds since the run started.
    pub second: u64,
    /// Answers completed in this second.
    pub completed: u64,
    /// Errors among requests intended to start in this second.
    pub errors: u64,
    /// Latency of requests intended to start in this second.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Per-second buckets: throughput by completion time, latency by intended
/// start (so a stall is drawn where it began, not where it ended).
pub fn timeline(samples: &[Sample]) -> Vec<TimelinePoint> {
    let seconds = samples.iter().map(|s| s.completed_us().max(s.intended_us) / 1_000_000 + 1).max().unwrap_or(0);
    let seconds = usize::try_from(seconds).unwrap_or(0);
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); seconds];
    let mut points: Vec<TimelinePoint> =
        (0..seconds).map(|second| TimelinePoint { second: second as u64, ..TimelinePoint::default() }).collect();
    for sample in samples {
        let started = usize::try_from(sample.intended_us / 1_000_000).unwrap_or(usize::MAX);
        if let Some(point) = points.get_mut(started) {
            point.errors += u64::from(sample.outcome.is_error());
        }
        if sample.outcome != Outcome::Overload
            && let Some(bucket) = latencies.get_mut(started)
        {
            bucket.push(sample.latency_us);
        }
        let completed = usize::try_from(sample.completed_us() / 1_000_000).unwrap_or(usize::MAX);
        if let Some(point) = points.get_mut(completed)
            && sample.outcome != Outcome::Overload
        {
            point.completed += 1;
        }
    }
    // One histogram, emptied for each second: the same percentiles as
    // `stats`, in the memory of one histogram however long the run.
    let Some(mut histogram) = new_histogram() else { return points };
    for (point, bucket) in points.iter_mut().zip(&latencies) {
        histogram.reset();
        for latency_us in bucket {
            histogram.saturating_record((*latency_us).max(1));
        }
        let second = stats_of(&histogram);
        point.p50_ms = second.p50_ms;
        point.p99_ms = second.p99_ms;
    }
    points
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn sample(intended_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            endpoint: "GET /x",
            outcome,
            intended_us: intended_ms * 1000,
            latency_us: latency_ms * 1000,
            version: 0,
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let samples: Vec<Sample> = (1..=100).map(|ms| sample(0, ms, Outcome::Status(200))).collect();
        let stats = stats(&samples);
        assert_eq!(stats.count, 100);
        assert!((stats.p50_ms - 50.0).abs() < 0.1, "{stats:?}");
        assert!((stats.p99_ms - 99.0).abs() < 0.1, "{stats:?}");
        assert!((stats.max_ms - 100.0).abs() < 0.1, "{stats:?}");
    }

    #[test]
    fn overloaded_samples_have_no_latency() {
        let samples = vec![sample(0, 10, Outcome::Status(200)), sample(0, 0, Outcome::Overload)];
        assert_eq!(stats(&samples).count, 1);
    }

    #[test]
    fn timeline_buckets_latency_by_start_and_throughput_by_completion() {
        let samples = vec![
            sample(100, 50, Outcome::Status(200)),
            sample(900, 1500, Outcome::Status(500)),
            sample(1200, 10, Outcome::Status(200)),
        ];
        let points = timeline(&samples);
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].completed, 1);
        assert_eq!(points[0].errors, 1);
        // HDR buckets hold three significant figures.
        assert!((points[0].p99_ms - 1500.0).abs() < 1.5, "{points:?}");
        assert_eq!(points[1].completed, 1);
        assert_eq!(points[2].completed, 1);
    }
}
