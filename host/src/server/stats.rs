//! The dashboard's numbers: once a second, each component's own counters
//! (the per-version figures rollouts judge by) are read and the second's
//! difference is kept as a [`Point`] in a ring of [`RING_SECONDS`] per
//! component; each connector's delivered count becomes a rate the same way.
//! Nothing here scrapes or parses `/metrics`.
//!
//! A point sums the versions serving in that second (stable and canary).
//! A version swapped out between two samples takes the calls it served
//! since the last one with it: at most a second of one version's calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::clock::SharedClock;
use crate::outbox::DeliveryTallies;
use crate::runtime::{Figures, Outcome, Runtime};

/// Seconds of history kept per component: five minutes.
pub const RING_SECONDS: usize = 300;
/// How often a point is taken.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Snapshots a stream may fall behind by before it is dropped: a client
/// that stops reading holds at most this many.
pub const STREAM_BUFFER: usize = 8;

/// One component's second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// End of the second, in milliseconds since the Unix epoch.
    pub t: i64,
    /// Invocations by outcome (`ok`, `error`, `trap`, `fuel_exhausted`,
    /// `timeout`, `rejected`); the ones that did not happen are left out.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Invocations that ran (not refused): calls per second.
    pub calls: u64,
    /// Of those, the ones that failed (error, trap, timeout, fuel exhausted).
    pub errors: u64,
    /// Refused before running (queue full, breaker open, rate limited).
    pub rejected: u64,
    /// Latency of the calls that ran; 0 when none did.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub fuel_per_call: f64,
}

impl Point {
    fn of(t: i64, figures: &Figures) -> Point {
        let outcomes =
            Outcome::ALL.iter().map(|o| (o.as_str(), figures.outcomes[o.index()])).filter(|(_, n)| *n > 0).collect();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Point {
            t,
            outcomes,
            calls: figures.invocations(),
            errors: figures.errors(),
            rejected: figures.outcomes[Outcome::Rejected.index()],
            p50_ms: ms(figures.p50()),
            p99_ms: ms(figures.p99()),
            fuel_per_call: figures.fuel_per_invocation().round(),
        }
    }
}

/// A component's ring and the counters its last point was taken from.
#[derive(Default)]
struct Track {
    /// By version: the figures at the last sample.
    previous: HashMap<String, Figures>,
    points: VecDeque<Point>,
}

/// A connector's delivered count at the last sample, and the rate since.
#[derive(Default, Clone, Copy)]
struct Deliveries {
    delivered: u64,
    per_second: f64,
}

/// The rings of every component and the delivery rates.
pub struct Stats {
    runtime: Arc<Runtime>,
    deliveries: Arc<DeliveryTallies>,
    clock: SharedClock,
    tracks: Mutex<HashMap<String, Track>>,
    rates: Mutex<HashMap<String, Deliveries>>,
    /// Each second's snapshot, serialised once for every stream.
    feed: broadcast::Sender<Arc<str>>,
}

impl Stats {
    pub fn new(runtime: Arc<Runtime>, deliveries: Arc<DeliveryTallies>, clock: SharedClock) -> Stats {
        let (feed, _) = broadcast::channel(STREAM_BUFFER);
        Stats { runtime, deliveries, clock, tracks: Mutex::default(), rates: Mutex::default(), feed }
    }

    /// A new stream's end of the feed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.feed.subscribe()
    }

    /// Streams open now; no snapshot is built for nobody.
    pub fn watchers(&self) -> usize {
        self.feed.receiver_count()
    }

    /// Hands a snapshot to every open stream.
    pub fn publish(&self, snapshot: Arc<str>) {
        // No receivers is not an error: they come and go.
        let _ = self.feed.send(snapshot);
    }

    /// Takes the second's point of every component and the delivery rates.
    pub fn sample(&self) {
        let now = self.clock.now_millis();
        let mut tracks = lock(&self.tracks);
        for name in self.runtime.component_names() {
            let Some(figures) = self.runtime.figures(name) else { continue };
            let track = tracks.entry(name.to_owned()).or_default();
            let serving: Vec<(String, Figures)> = std::iter::once(figures.stable)
                .chain(figures.canary.map(|(version, figures, _)| (version, figures)))
                .collect();
            let mut second = Figures::default();
            for (version, now_figures) in &serving {
                let since = match track.previous.get(version) {
                    Some(before) => now_figures.since(before),
                    None => now_figures.clone(),
                };
                second = second.plus(&since);
            }
            track.previous = serving.into_iter().collect();
            if track.points.len() == RING_SECONDS {
                track.points.pop_front();
            }
            track.points.push_back(Point::of(now, &second));
        }
        drop(tracks);

        let elapsed = INTERVAL.as_secs_f64();
        let mut rates = lock(&self.rates);
        for connector in self.runtime.connector_names() {
            let delivered = self.deliveries.delivered(connector);
            let rate = rates.entry(connector.to_owned()).or_default();
            rate.per_second = delivered.saturating_sub(rate.delivered) as f64 / elapsed;
            rate.delivered = delivered;
        }
    }

    /// `name`'s points, oldest first.
    pub fn series(&self, name: &str) -> Vec<Point> {
        lock(&self.tracks).get(name).map(|t| t.points.iter().cloned().collect()).unwrap_or_default()
    }

    /// `name`'s newest point.
    pub fn last(&self, name: &str) -> Option<Point> {
        lock(&self.tracks).get(name).and_then(|t| t.points.back().cloned())
    }

    /// Messages per second `connector` delivered in the last second.
    pub fn delivery_rate(&self, connector: &str) -> f64 {
        lock(&self.rates).get(connector).map_or(0.0, |r| r.per_second)
    }

    /// Points held, and roughly the bytes they take: what the rings cost.
    pub fn footprint(&self) -> (usize, usize) {
        let tracks = lock(&self.tracks);
        let points: usize = tracks.values().map(|t| t.points.len()).sum();
        let outcome_bytes = Outcome::ALL.len() * (std::mem::size_of::<(&str, u64)>() + 32);
        (points, points * (std::mem::size_of::<Point>() + outcome_bytes))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
