//! `wasi:http@0.3` instances that serve several requests at once
//! (`reuse.max_concurrent` above 1), against the real `hello-http-p3`
//! fixture: requests share an instance while they wait; a trap fails the
//! requests on its instance and no others; each request keeps its own
//! deadline and fuel; a client that leaves ends only its own request; a
//! swap lets the requests in flight finish on the old version.
//!
//! The fixture's `count` answers with how many requests its instance has
//! taken, so a body tells which instance served it. Requests meant for one
//! instance are sent while the earlier ones on it wait in `sleep_ms`, each
//! once the one before is admitted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use reqwest::StatusCode;

use common::{Backend, TestHost, component_bytes, deploy, eventually, sample, scrape_metrics};
use common::{active_version_of as version_of, invocations_of as invocations, settled_invocations as settled};

/// The 0.3 fixture sharing its instances, `concurrent` requests at a time.
fn app(concurrent: u32, timeout_ms: u64) -> String {
    format!(
        r#"
    [components.p3]
    path = "hello-http-p3.wasm"
    world = "wasi-http"
    limits = {{ timeout_ms = {timeout_ms}, fuel = 50_000_000 }}

    [components.p3.reuse]
    max_requests = 100
    max_concurrent = {concurrent}
    idle_timeout_ms = 600_000

    [[routes]]
    method = "*"
    path = "/p3/{{*rest}}"
    component = "p3"
"#
    )
}

async fn start(toml: &str) -> TestHost {
    TestHost::start_with_toml(Backend::Sqlite, toml).await.expect("sqlite host")
}

/// Sends `GET /p3/x?QUERY` in a task of its own; answers status and body.
fn send(host: &TestHost, query: &str) -> tokio::task::JoinHandle<(StatusCode, String)> {
    let request = send_naming_version(host, query);
    tokio::spawn(async move {
        let (status, body, _) = request.await.unwrap();
        (status, body)
    })
}

/// As [`send`], also answering the version that served it.
fn send_naming_version(host: &TestHost, query: &str) -> tokio::task::JoinHandle<(StatusCode, String, String)> {
    let url = format!("{}/p3/x?{query}", host.url);
    tokio::spawn(async move {
        let response = TestHost::client().get(url).send().await.unwrap();
        let status = response.status();
        let version = response.headers().get("x-switchyard-version").map(|v| v.to_str().unwrap().to_owned());
        (status, response.text().await.unwrap_or_default(), version.unwrap_or_default())
    })
}

/// Waits until `n` requests are admitted and in flight: a request is
/// handed to its instance as it is admitted, so the next one sent after
/// this finds it there.
async fn taken(host: &TestHost, n: usize) {
    let gate = host.runtime.admissions().find(|(name, _)| *name == "p3").map(|(_, gate)| gate.clone());
    let gate = gate.expect("admission gate");
    eventually(&format!("{n} requests in flight"), Duration::from_secs(10), || async { gate.running() == n }).await;
}

async fn instances(host: &TestHost, metric: &str, reason: Option<&str>) -> f64 {
    let samples = scrape_metrics(host).await;
    let mut labels = vec![("component", "p3")];
    labels.extend(reason.map(|reason| ("reason", reason)));
    sample(&samples, metric, &labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_wait_share_one_instance() {
    let host = start(&app(4, 10_000)).await;
    let waiting: Vec<_> = (0..4).map(|_| send(&host, "count&sleep_ms=1000")).collect();
    let mut counts = Vec::new();
    for request in waiting {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        counts.push(body);
    }
    counts.sort();
    assert_eq!(counts, ["1", "2", "3", "4"], "four requests in flight on one instance at once");
    // The instance goes on serving, one request or several at a time.
    let (status, body) = send(&host, "count").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "5"));

    let samples = settled(&host, "p3", 5.0).await;
    assert_eq!(invocations(&host, &samples, "p3", "ok"), 5.0);
    assert_eq!(instances(&host, "component_instances_started_total", None).await, 1.0);
    let fuel = sample(&samples, "component_fuel_consumed_total", &[("component", "p3")]);
    assert!(fuel.unwrap_or(0.0) > 0.0, "the fuel each request burned is charged to it: {fuel:?}");
    eventually("the idle instance counted", Duration::from_secs(10), || async {
        instances(&host, "component_instances_idle", None).await == 1.0
    })
    .await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_the_requests_on_its_instance_and_no_others() {
    let host = start(&app(2, 10_000)).await;
    // Two on the first instance, which is then full; two on a second.
    let first = send(&host, "count&sleep_ms=3000");
    taken(&host, 1).await;
    let second = send(&host, "count&sleep_ms=3000");
    taken(&host, 2).await;
    let third = send(&host, "count&sleep_ms=3000");
    taken(&host, 3).await;
    let trap = send(&host, "trap");

    let (status, _) = trap.await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = third.await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "on the trapped instance");
    let mut survivors = vec![first.await.unwrap(), second.await.unwrap()];
    survivors.sort();
    let ok = |body: &str| (StatusCode::OK, body.to_owned());
    assert_eq!(survivors, [ok("1"), ok("2")], "the other instance's requests are served");

    let samples = settled(&host, "p3", 4.0).await;
    assert_eq!(invocations(&host, &samples, "p3", "trap"), 2.0, "each request on it counted");
    assert_eq!(invocations(&host, &samples, "p3", "ok"), 2.0);
    assert_eq!(instances(&host, "component_instances_retired_total", Some("failed")).await, 1.0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_keeps_its_own_deadline_and_fuel() {
    let host = start(&app(4, 1_500)).await;
    // Past its deadline while a later request on its instance is served.
    let late = send(&host, "count&sleep_ms=30000");
    taken(&host, 1).await;
    let (status, body) = send(&host, "count&sleep_ms=100").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "2"), "served beside the late one");
    let (status, _) = late.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let samples = settled(&host, "p3", 2.0).await;
    assert_eq!(invocations(&host, &samples, "p3", "timeout"), 1.0);
    // Its task could not be stopped alone: its instance took no more
    // requests and is stopped at the last deadline on it.
    eventually("the late request's instance retired", Duration::from_secs(10), || async {
        instances(&host, "component_instances_retired_total", Some("failed")).await == 1.0
    })
    .await;
    let (status, body) = send(&host, "count").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1"), "a new instance");

    // One request's budget, not the instance's, bounds its fuel.
    let (status, _) = send(&host, "spin=10000000000").await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let samples = settled(&host, "p3", 4.0).await;
    assert_eq!(invocations(&host, &samples, "p3", "fuel_exhausted"), 1.0);
    let (status, body) = send(&host, "count").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1"), "a new instance after the fuel ran out");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_ends_only_its_own_request() {
    let host = start(&app(4, 600_000)).await;
    common::assert_stopped_when_the_client_leaves(&host, "/p3/x", "p3").await;
    // Its instance goes on serving; the guest's lingering task is its own.
    let (status, body) = send(&host, "count").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "2"));
    assert_eq!(instances(&host, "component_instances_started_total", None).await, 1.0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_lets_the_requests_in_flight_finish_on_the_old_version() {
    let host = start(&app(4, 10_000)).await;
    let p3 = version_of(&host, "p3");
    let in_flight: Vec<_> = (0..2).map(|_| send_naming_version(&host, "count&sleep_ms=2000")).collect();
    taken(&host, 2).await;
    let (status, report) = deploy(&host, "p3", component_bytes("hello-http")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let p2 = version_of(&host, "p3");
    assert_ne!(p2, p3);
    let (status, _, version) = send_naming_version(&host, "x").await.unwrap();
    assert_eq!((status, version.as_str()), (StatusCode::OK, p2.as_str()), "the new version serves");
    let mut bodies = Vec::new();
    for request in in_flight {
        let (status, body, version) = request.await.unwrap();
        assert_eq!((status, version.as_str()), (StatusCode::OK, p3.as_str()));
        bodies.push(body);
    }
    bodies.sort();
    assert_eq!(bodies, ["1", "2"], "both finished on the old version's shared instance");
    eventually("the old instance retired as swapped", Duration::from_secs(10), || async {
        instances(&host, "component_instances_retired_total", Some("swapped")).await == 1.0
    })
    .await;
    host.stop().await;
}
