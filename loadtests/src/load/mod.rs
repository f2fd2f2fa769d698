//! The load generator proper: what one request looks like ([`RequestSpec`]),
//! how it is sent ([`Target`]), and what is kept of it ([`Recorder`]). The two
//! ways of producing load live beside it: [`open`] (a fixed arrival rate,
//! latency counted from each request's intended start) and [`closed`] (N
//! virtual users, each waiting for its answer before asking again).
//! [`histogram`] turns the recorded samples into percentiles and timelines.
//!
//! Nothing here knows about Switchyard's API; the scenarios supply a
//! [`Workload`] that does.

pub mod closed;
pub mod histogram;
pub mod open;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use reqwest::Method;

/// Header naming the component version that served a response.
pub const VERSION_HEADER: &str = "x-switchyard-version";

/// One request a workload wants sent.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Bounded label the results are grouped by, e.g. `POST /orders`.
    pub endpoint: &'static str,
    pub method: Method,
    /// Path and query, appended to the target's base URL.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<String>,
    /// Sent as `Idempotency-Key`, so a retried order never double-books.
    pub idempotency_key: Option<String>,
}

/// What the load generator asks next, and what it learns from answers (for
/// example the ids of created orders, so reads hit real ones).
pub trait Workload: Send + Sync {
    /// The next request to send.
    fn next_request(&self) -> RequestSpec;
    /// Sees every answer with a status; the default ignores them.
    fn observe(&self, _spec: &RequestSpec, _status: u16, _body: &[u8]) {}
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The server answered with this status.
    Status(u16),
    /// Connection refused or reset, or an unreadable answer.
    Transport,
    /// No answer within the request timeout.
    Timeout,
    /// Never sent: the open-loop generator already had its maximum number of
    /// requests in flight. Counted as an error, because a server that keeps
    /// up never causes it.
    Overload,
}

impl Outcome {
    /// Server errors and every failure to get an answer count as errors;
    /// 4xx are the application's answers (sold out, unknown sku) and do not.
    pub fn is_error(self) -> bool {
        match self {
            Outcome::Status(status) => status >= 500,
            Outcome::Transport | Outcome::Timeout | Outcome::Overload => true,
        }
    }

    /// The status code, or the failure's name.
    pub fn label(self) -> String {
        match self {
            Outcome::Status(status) => status.to_string(),
            Outcome::Transport => "transport".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Overload => "client-overload".into(),
        }
    }

    /// `2xx`, `4xx`, `5xx` or the failure's name.
    pub fn class(self) -> String {
        match self {
            Outcome::Status(status) => format!("{}xx", status / 100),
            other => other.label(),
        }
    }
}

/// One finished request. Times are microseconds since the run started, so a
/// sample is small and a whole soak run's worth fits in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub endpoint: &'static str,
    pub outcome: Outcome,
    /// When the request was meant to start (open model) or started (closed).
    pub intended_us: u64,
    /// From `intended_us` to the end of the answer.
    pub latency_us: u64,
    /// Index into [`Recorder::versions`] of `x-switchyard-version`; 0 = none.
    pub version: u16,
}

impl Sample {
    /// When the answer arrived, in microseconds since the run started.
    pub fn completed_us(&self) -> u64 {
        self.intended_us.saturating_add(self.latency_us)
    }
}

/// Collects samples from every concurrent request of a run.
#[derive(Debug)]
pub struct Recorder {
    /// Time zero for every sample of the run, across phases.
    start: Instant,
    samples: Mutex<Vec<Sample>>,
    /// Distinct versions seen, so each sample stores a small index instead
    /// of a string; index 0 stands for "no header".
    versions: Mutex<Vec<String>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder whose time zero is now.
    pub fn new() -> Recorder {
        Recorder { start: Instant::now(), samples: Mutex::new(Vec::new()), versions: Mutex::new(vec![String::new()]) }
    }

    /// Time zero of the run.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Microseconds from time zero to `at` (0 for instants before it).
    pub fn offset_us(&self, at: Instant) -> u64 {
        micros(at.saturating_duration_since(self.start))
    }

    /// Time since time zero.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn record(&self, sample: Sample) {
        lock(&self.samples).push(sample);
    }

    /// The index to store for `version`, adding it if new.
    pub fn version_index(&self, version: &str) -> u16 {
        let mut versions = lock(&self.versions);
        if let Some(index) = versions.iter().position(|v| v == version) {
            return u16::try_from(index).unwrap_or(u16::MAX);
        }
        versions.push(version.to_owned());
        u16::try_from(versions.len() - 1).unwrap_or(u16::MAX)
    }

    /// Every version seen; index 0 is the empty "none".
    pub fn versions(&self) -> Vec<String> {
        lock(&self.versions).clone()
    }

    /// Samples recorded so far.
    pub fn snapshot_len(&self) -> usize {
        lock(&self.samples).len()
    }

    /// A copy of every sample so far.
    pub fn snapshot(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    /// Samples completed within `window` before now: (count, errors, p99 in
    /// ms), for the live progress line. Samples are appended roughly in
    /// completion order, so scanning from the end stops early.
    pub fn recent(&self, window: Duration) -> (u64, u64, f64) {
        let now = self.offset_us(Instant::now());
        let from = now.saturating_sub(micros(window));
        let samples = lock(&self.samples);
        let mut latencies = Vec::new();
        let mut errors = 0;
        // Completion order is only approximate, so look a little further back
        // than the window before stopping.
        let slack = from.saturating_sub(micros(window));
        for sample in samples.iter().rev() {
            let done = sample.completed_us();
            if done < slack {
                break;
            }
            if done >= from {
                latencies.push(sample.latency_us);
                errors += u64::from(sample.outcome.is_error());
            }
        }
        latencies.sort_unstable();
        let p99 = match latencies.len() {
            0 => 0.0,
            n => latencies[(n * 99 / 100).min(n - 1)] as f64 / 1000.0,
        };
        (latencies.len() as u64, errors, p99)
    }
}

/// Where requests go, and the pooled client that sends them.
#[derive(Debug, Clone)]
pub struct Target {
    pub client: reqwest::Client,
    /// e.g. `http://127.0.0.1:41234`, without a trailing slash.
    pub base_url: String,
    /// Longest wait for one answer; the request then counts as a timeout.
    pub request_timeout: Duration,
}

/// Default for [`Target::request_timeout`]: longer than the host's own
/// deadline (2 s for the order handler), so a timeout here means the server
/// stopped answering, not that a handler was slow.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl Target {
    /// A target with a client whose pool keeps enough idle connections for
    /// an open-loop run's concurrency.
    pub fn new(base_url: &str, request_timeout: Duration) -> anyhow::Result<Target> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(Target { client, base_url: base_url.trim_end_matches('/').to_owned(), request_timeout })
    }

    /// Sends `spec`, timing it from `intended`, and records the sample.
    pub async fn send(&self, spec: &RequestSpec, workload: &dyn Workload, recorder: &Recorder, intended: Instant) {
        let url = format!("{}{}", self.base_url, spec.path);
        let mut request = self.client.request(spec.method.clone(), url).timeout(self.request_timeout);
        if let Some(body) = &spec.body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        if let Some(key) = &spec.idempotency_key {
            request = request.header("idempotency-key", key.as_str());
        }
        let (outcome, version) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let version = response
                    .headers()
                    .get(VERSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| recorder.version_index(v))
                    .unwrap_or(0);
                match response.bytes().await {
                    Ok(body) => {
                        workload.observe(spec, status, &body);
                        (Outcome::Status(status), version)
                    }
                    Err(err) if err.is_timeout() => (Outcome::Timeout, version),
                    Err(_) => (Outcome::Transport, version),
                }
            }
            Err(err) if err.is_timeout() => (Outcome::Timeout, 0),
            Err(_) => (Outcome::Transport, 0),
        };
        let done = Instant::now();
        recorder.record(Sample {
            endpoint: spec.endpoint,
            outcome,
            intended_us: recorder.offset_us(intended),
            latency_us: micros(done.saturating_duration_since(intended)),
            version,
        });
    }
}

/// Shared "stop now" flag: set by Ctrl-C, the hard time cap, or a scenario
/// that has seen enough (stress past its knee).
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> StopFlag {
        StopFlag::default()
    }

    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A duration in whole microseconds, saturating.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Locks ignoring poison: a panicked request task leaves the samples valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
