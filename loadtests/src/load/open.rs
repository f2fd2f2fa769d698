//! The open model: requests arrive at a rate the server does not control.
//! Each request has an *intended* start time fixed by the schedule, and its
//! latency is measured from that time, not from when it was actually sent.
//! If the server stalls, the requests that should have started during the
//! stall still count the whole wait, so the stall shows in p99 instead of
//! being hidden by a generator that politely waited (coordinated omission).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Outcome, Recorder, Sample, StopFlag, Target, Workload};

/// Lowest rate the scheduler steps with when a profile asks for ~0 rps, so a
/// zero segment pauses instead of never ending.
const MIN_RATE: f64 = 0.1;

/// A piece of a rate profile: the rate moves linearly from `from_rps` to
/// `to_rps` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub duration: Duration,
    pub from_rps: f64,
    pub to_rps: f64,
}

/// Arrival rate over time, as consecutive linear segments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateProfile {
    segments: Vec<Segment>,
}

impl RateProfile {
    /// `rps` for `duration`.
    pub fn constant(rps: f64, duration: Duration) -> RateProfile {
        RateProfile::default().then_constant(rps, duration)
    }

    /// Appends a constant segment.
    pub fn then_constant(self, rps: f64, duration: Duration) -> RateProfile {
        self.then_ramp(rps, rps, duration)
    }

    /// Appends a linear ramp.
    pub fn then_ramp(mut self, from_rps: f64, to_rps: f64, duration: Duration) -> RateProfile {
        self.segments.push(Segment { duration, from_rps, to_rps });
        self
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Length of the whole profile.
    pub fn duration(&self) -> Duration {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// The rate at `at` from the profile's start; 0 past its end.
    pub fn rate_at(&self, at: Duration) -> f64 {
        let mut start = Duration::ZERO;
        for segment in &self.segments {
            let end = start + segment.duration;
            if at < end {
                let into = (at - start).as_secs_f64();
                let span = segment.duration.as_secs_f64();
                let fraction = if span > 0.0 { into / span } else { 0.0 };
                return segment.from_rps + (segment.to_rps - segment.from_rps) * fraction;
            }
            start = end;
        }
        0.0
    }

    /// Requests the profile asks for in total (its integral), for sizing the
    /// request bound.
    pub fn expected_requests(&self) -> f64 {
        self.segments.iter().map(|s| (s.from_rps + s.to_rps) / 2.0 * s.duration.as_secs_f64()).sum()
    }

    /// The intended start offsets of at most `max_requests` requests.
    pub fn schedule(&self, max_requests: u64) -> Schedule<'_> {
        Schedule { profile: self, next: 0.0, end: self.duration().as_secs_f64(), issued: 0, max_requests }
    }
}

/// Intended start offsets (from the profile's start) in order: each next
/// start is one inter-arrival gap (1 / current rate) after the previous, so a
/// constant rate yields an evenly spaced grid and a ramp a tightening one.
#[derive(Debug, Clone)]
pub struct Schedule<'a> {
    profile: &'a RateProfile,
    /// Seconds; f64 keeps the grid exact enough over a 15-minute soak.
    next: f64,
    end: f64,
    issued: u64,
    max_requests: u64,
}

impl Iterator for Schedule<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        loop {
            if self.issued >= self.max_requests || self.next >= self.end {
                return None;
            }
            let at = Duration::from_secs_f64(self.next);
            let rate = self.profile.rate_at(at);
            if rate < MIN_RATE {
                // A paused stretch: skip ahead without issuing.
                self.next += 1.0 / MIN_RATE / 100.0;
                continue;
            }
            self.next += 1.0 / rate;
            self.issued += 1;
            return Some(at);
        }
    }
}

/// Bounds of one open-loop run.
#[derive(Debug, Clone)]
pub struct OpenConfig {
    pub profile: RateProfile,
    /// Hard bound on requests scheduled, whatever the profile says.
    pub max_requests: u64,
    /// Requests in flight at once; past it a request is recorded as
    /// [`Outcome::Overload`] instead of queueing, because queueing in the
    /// client would hide the server's slowness.
    pub max_in_flight: usize,
}

/// Default for [`OpenConfig::max_in_flight`]: far above what a healthy host
/// needs at these rates (rate × latency), low enough not to exhaust file
/// descriptors.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2048;

/// What the scheduler did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenStats {
    pub scheduled: u64,
    pub overloaded: u64,
}

/// Runs `config.profile` against `target`, recording every request into
/// `recorder`, and returns once every sent request has finished (each is
/// bounded by the target's timeout) or `stop` was set and the in-flight
/// ones finished.
pub async fn run_open(
    target: Arc<Target>,
    workload: Arc<dyn Workload>,
    recorder: Arc<Recorder>,
    config: OpenConfig,
    stop: StopFlag,
) -> OpenStats {
    let base = Instant::now();
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut stats = OpenStats::default();
    for offset in config.profile.schedule(config.max_requests) {
        if stop.is_stopped() {
            break;
        }
        let intended = base + offset;
        // Never sleep past the intended time; if the generator is late it
        // sends at once and the lateness is charged to the request.
        tokio::time::sleep_until(intended.into()).await;
        stats.scheduled += 1;
        let spec = workload.next_request();
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let (target, workload, recorder) = (Arc::clone(&target), Arc::clone(&workload), Arc::clone(&recorder));
                tasks.spawn(async move {
                    target.send(&spec, workload.as_ref(), &recorder, intended).await;
                    drop(permit);
                });
            }
            Err(_) => {
                stats.overloaded += 1;
                recorder.record(Sample {
                    endpoint: spec.endpoint,
                    outcome: Outcome::Overload,
                    intended_us: recorder.offset_us(intended),
                    latency_us: 0,
                    version: 0,
                });
            }
        }
        // Reap finished tasks as we go so a long run's JoinSet stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    stats
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn constant_rate_is_an_even_grid() {
        let profile = RateProfile::constant(100.0, Duration::from_secs(1));
        let offsets: Vec<Duration> = profile.schedule(u64::MAX).collect();
        assert_eq!(offsets.len(), 100);
        for (n, offset) in offsets.iter().enumerate() {
            let expected = n as f64 * 0.01;
            assert!((offset.as_secs_f64() - expected).abs() < 1e-6, "request {n} at {offset:?}");
        }
    }

    #[test]
    fn the_request_bound_caps_the_schedule() {
        let profile = RateProfile::constant(1000.0, Duration::from_secs(10));
        assert_eq!(profile.schedule(250).count(), 250);
    }

    #[test]
    fn a_ramp_tightens_the_gaps_and_matches_its_integral() {
        let profile = RateProfile::default().then_ramp(10.0, 100.0, Duration::from_secs(10));
        let offsets: Vec<Duration> = profile.schedule(u64::MAX).collect();
        // ∫ = (10 + 100) / 2 × 10 = 550; stepping with the rate at each start
        // lags the integral a little on a rising ramp.
        assert!((offsets.len() as f64 - profile.expected_requests()).abs() < 15.0, "{}", offsets.len());
        let first_gap = offsets[1] - offsets[0];
        let last_gap = offsets[offsets.len() - 1] - offsets[offsets.len() - 2];
        assert!(first_gap > last_gap * 5, "{first_gap:?} vs {last_gap:?}");
    }

    #[test]
    fn a_zero_segment_pauses_arrivals() {
        let profile = RateProfile::constant(10.0, Duration::from_secs(1))
            .then_constant(0.0, Duration::from_secs(2))
            .then_constant(10.0, Duration::from_secs(1));
        let offsets: Vec<Duration> = profile.schedule(u64::MAX).collect();
        assert_eq!(offsets.len(), 20);
        assert!(offsets.iter().all(|o| *o < Duration::from_secs(1) || *o >= Duration::from_secs(3)));
    }

    #[test]
    fn rate_at_interpolates_segments() {
        let profile =
            RateProfile::constant(50.0, Duration::from_secs(2)).then_ramp(50.0, 150.0, Duration::from_secs(2));
        assert_eq!(profile.rate_at(Duration::from_secs(1)), 50.0);
        assert!((profile.rate_at(Duration::from_secs(3)) - 100.0).abs() < 1e-9);
        assert_eq!(profile.rate_at(Duration::from_secs(5)), 0.0);
        assert_eq!(profile.duration(), Duration::from_secs(4));
    }
}
