//! The open-loop generator against a tiny in-process server that stalls
//! once: requests whose intended start falls inside the stall must be
//! charged the wait, so the stall shows in max and p99 — the property that
//! keeps coordinated omission out of the numbers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use reqwest::Method;
use switchyard_loadtests::load::histogram;
use switchyard_loadtests::load::open::{self, OpenConfig, RateProfile};
use switchyard_loadtests::load::{Outcome, Recorder, RequestSpec, StopFlag, Target, Workload};
use tokio::net::TcpListener;

const STALL: Duration = Duration::from_millis(500);

/// GETs `/` forever.
struct Pings;

impl Workload for Pings {
    fn next_request(&self) -> RequestSpec {
        RequestSpec { endpoint: "GET /", method: Method::GET, path: "/".into(), body: None, idempotency_key: None }
    }
}

/// A server that answers at once, except that its `stall_at`-th request
/// freezes the whole server for [`STALL`]: every request arriving meanwhile
/// waits until the stall ends, like a host stuck in a GC pause or a lock.
async fn stalling_server(stall_at: u64) -> String {
    let count = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let stalled_until: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let app = Router::new().route(
        "/",
        get(move || {
            let (count, gate, stalled_until) = (Arc::clone(&count), Arc::clone(&gate), Arc::clone(&stalled_until));
            async move {
                if count.fetch_add(1, Ordering::SeqCst) + 1 == stall_at {
                    let _held = gate.write().await;
                    *stalled_until.lock().unwrap() = Some(Instant::now() + STALL);
                    tokio::time::sleep(STALL).await;
                } else {
                    let _shared = gate.read().await;
                }
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stall_shows_in_max_and_tail_latency() {
    let base = stalling_server(100).await;
    let target = Arc::new(Target::new(&base, Duration::from_secs(5)).unwrap());
    let recorder = Arc::new(Recorder::new());
    // 200 rps for 2 s: the stall at request 100 (t ≈ 0.5 s) covers ~100
    // intended starts, a quarter of the run.
    let config = OpenConfig {
        profile: RateProfile::constant(200.0, Duration::from_secs(2)),
        max_requests: 10_000,
        max_in_flight: 1000,
    };
    let stats = open::run_open(target, Arc::new(Pings), Arc::clone(&recorder), config, StopFlag::new()).await;
    assert_eq!(stats.scheduled, 400);
    assert_eq!(stats.overloaded, 0);

    let samples = recorder.snapshot();
    assert_eq!(samples.len(), 400);
    assert!(samples.iter().all(|s| s.outcome == Outcome::Status(200)), "every request answered");
    let latency = histogram::stats(&samples);
    assert!(latency.max_ms >= STALL.as_millis() as f64 * 0.95, "the stalled request: {latency:?}");
    // Requests intended during the stall wait out its remainder: from ~500 ms
    // down to ~0. A closed-loop measurement would show one slow request and
    // a p99 near zero; measured from intended start, the tail is the stall.
    assert!(latency.p99_ms >= 400.0, "{latency:?}");
    assert!(latency.p90_ms >= 200.0, "{latency:?}");
    assert!(latency.p50_ms < 100.0, "most requests are unaffected: {latency:?}");

    // The intended starts are the schedule's grid, not when requests left.
    let mut intended: Vec<u64> = samples.iter().map(|s| s.intended_us).collect();
    intended.sort_unstable();
    let first = intended[0];
    for (n, at) in intended.iter().enumerate() {
        let expected = first + n as u64 * 5_000;
        assert!(at.abs_diff(expected) < 1_000, "request {n} intended at {at} µs, grid says {expected}");
    }
}

#[tokio::test]
async fn a_full_client_records_overload_instead_of_queueing() {
    let base = stalling_server(1).await;
    let target = Arc::new(Target::new(&base, Duration::from_secs(5)).unwrap());
    let recorder = Arc::new(Recorder::new());
    // The first request stalls the server for 500 ms; with 5 in flight at
    // most, later arrivals during the stall cannot be sent.
    let config = OpenConfig {
        profile: RateProfile::constant(100.0, Duration::from_millis(300)),
        max_requests: 10_000,
        max_in_flight: 5,
    };
    let stats = open::run_open(target, Arc::new(Pings), Arc::clone(&recorder), config, StopFlag::new()).await;
    assert_eq!(stats.scheduled, 30);
    assert_eq!(stats.overloaded, 25);
    let samples = recorder.snapshot();
    assert_eq!(samples.iter().filter(|s| s.outcome == Outcome::Overload).count(), 25);
    assert!(samples.iter().filter(|s| s.outcome == Outcome::Overload).all(|s| s.outcome.is_error()));
}
