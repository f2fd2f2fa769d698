//! Opt-in instance reuse of `wasi:http` components, against the real
//! `hello-http` fixture, whose `?count` answers with the number of requests
//! its instance has handled: instances serve up to `max_requests`, a failed
//! call retires its instance, fuel and the deadline are per request on a
//! reused instance, a swap retires the old version's instances (idle at
//! once, busy when they finish), and idle instances go after their time.
//!
//! An instance is given back when its guest returns, which may be after the
//! client has the whole response; each step therefore waits until the
//! invocation before it is recorded, which happens after the give-back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use reqwest::StatusCode;

use common::{Backend, Samples, TestHost, component_bytes, deploy, parse_metrics, sample, variant};

/// Fuel of the reusing component: each `?spin=SPIN` call takes well over
/// half of it, so two calls on one instance fit only if fuel is per call.
const FUEL: u64 = 2_000_000;
const SPIN: u64 = 100_000;

/// `hello-http` twice: once reusing instances, once as by default.
const REUSE: &str = r#"
    [components.reused]
    path = "hello-http.wasm"
    world = "wasi-http"
    limits = { fuel = 2_000_000, timeout_ms = 1_000 }
    [components.reused.reuse]
    max_requests = 3
    idle_timeout_ms = 60_000

    [components.fresh]
    path = "hello-http.wasm"
    world = "wasi-http"

    [[routes]]
    method = "*"
    path = "/reused/{*rest}"
    component = "reused"
    [[routes]]
    method = "*"
    path = "/fresh/{*rest}"
    component = "fresh"
"#;

async fn start() -> TestHost {
    TestHost::start_with_toml(Backend::Sqlite, REUSE).await.expect("sqlite host")
}

async fn scrape(host: &TestHost) -> Samples {
    let response = TestHost::client().get(format!("{}/metrics", host.url)).send().await.unwrap();
    parse_metrics(&response.text().await.unwrap())
}

/// Invocations of `component` recorded so far, every version and outcome.
fn recorded(samples: &Samples, component: &str) -> f64 {
    invocations(samples, component, None)
}

/// `component_invocations_total` of `component`, summed over versions and,
/// unless one is named, outcomes.
fn invocations(samples: &Samples, component: &str, outcome: Option<&str>) -> f64 {
    samples
        .iter()
        .filter(|((name, labels), _)| {
            name == "component_invocations_total"
                && labels.get("component").map(String::as_str) == Some(component)
                && outcome.is_none_or(|outcome| labels.get("outcome").map(String::as_str) == Some(outcome))
        })
        .map(|(_, value)| value)
        .sum()
}

/// Sends `query` to `component`'s route and waits until its invocation is
/// recorded; the status and body.
struct Client<'a> {
    host: &'a TestHost,
    calls: f64,
}

impl Client<'_> {
    async fn call(&mut self, component: &str, query: &str) -> (StatusCode, String) {
        let url = format!("{}/{component}/x?{query}", self.host.url);
        let response = TestHost::client().get(url).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        self.calls += 1.0;
        let (host, calls) = (self.host, self.calls);
        common::eventually("the call to be recorded", Duration::from_secs(10), || async move {
            let samples = scrape(host).await;
            recorded(&samples, "reused") + recorded(&samples, "fresh") >= calls
        })
        .await;
        (status, body)
    }

    /// How many requests the instance that served this one has handled.
    async fn count(&mut self, component: &str) -> u64 {
        let (status, body) = self.call(component, "count").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.parse().unwrap_or_else(|_| panic!("not a count: {body:?}"))
    }
}

fn retired(samples: &Samples, reason: &str) -> f64 {
    sample(samples, "component_instances_retired_total", &[("component", "reused"), ("reason", reason)]).unwrap()
}

fn started(samples: &Samples) -> f64 {
    sample(samples, "component_instances_started_total", &[("component", "reused")]).unwrap()
}

fn idle(samples: &Samples) -> f64 {
    sample(samples, "component_instances_idle", &[("component", "reused")]).unwrap()
}

fn outcome(samples: &Samples, outcome: &str) -> f64 {
    invocations(samples, "reused", Some(outcome))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_an_instance_up_to_max_requests() {
    let host = start().await;
    let mut client = Client { host: &host, calls: 0.0 };
    let mut counts = Vec::new();
    for _ in 0..7 {
        counts.push(client.count("reused").await);
    }
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1], "7 requests, at most 3 per instance: ⌈7/3⌉ = 3 instances");
    let samples = scrape(&host).await;
    assert_eq!(started(&samples), 3.0);
    assert_eq!(retired(&samples, "max_requests"), 2.0);
    assert_eq!(idle(&samples), 1.0, "the third instance waits for more");

    // Without a reuse table, every request meets a fresh instance.
    for _ in 0..3 {
        assert_eq!(client.count("fresh").await, 1);
    }
    assert_eq!(
        sample(&scrape(&host).await, "component_instances_started_total", &[("component", "fresh")]),
        None,
        "no pool for a component that does not reuse"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_retires_the_instance_and_the_next_request_gets_a_fresh_one() {
    let host = start().await;
    let mut client = Client { host: &host, calls: 0.0 };
    assert_eq!(client.count("reused").await, 1);
    assert_eq!(client.count("reused").await, 2);
    let (status, _) = client.call("reused", "trap").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(client.count("reused").await, 1, "a fresh instance after the trap");
    let samples = scrape(&host).await;
    assert_eq!(retired(&samples, "failed"), 1.0);
    assert_eq!(outcome(&samples, "trap"), 1.0);
    assert_eq!(started(&samples), 2.0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_and_the_deadline_are_per_request_on_a_reused_instance() {
    let host = start().await;
    let mut client = Client { host: &host, calls: 0.0 };

    // Two calls that each take most of the fuel, on one instance.
    let spin = format!("count&spin={SPIN}");
    let (first, one) = client.call("reused", &spin).await;
    let fuel_of_one =
        sample(&scrape(&host).await, "component_fuel_consumed_total", &[("component", "reused")]).unwrap();
    assert!(
        fuel_of_one > FUEL as f64 / 2.0 && fuel_of_one < FUEL as f64,
        "the fixture must take between half and all of the fuel per call to show anything; took {fuel_of_one}"
    );
    let (second, two) = client.call("reused", &spin).await;
    assert_eq!((first, second), (StatusCode::OK, StatusCode::OK));
    assert_eq!((one.as_str(), two.as_str()), ("1", "2"), "both on one instance");
    let samples = scrape(&host).await;
    let fuel = sample(&samples, "component_fuel_consumed_total", &[("component", "reused")]).unwrap();
    assert!(fuel > FUEL as f64, "together they took {fuel}, more than one budget: the fuel was set again");
    assert_eq!(outcome(&samples, "ok"), 2.0);

    // A call over the budget is stopped; it was the instance's third, and
    // the instance retires with it.
    let (status, _) = client.call("reused", &format!("spin={}", SPIN * 4)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(outcome(&scrape(&host).await, "fuel_exhausted"), 1.0);
    assert_eq!(client.count("reused").await, 1);

    // The deadline (1 s) counts from each call: two calls of 0.6 s each
    // on one instance both finish.
    assert_eq!(client.call("reused", "count&linger_ms=600").await, (StatusCode::OK, "2".to_owned()));
    assert_eq!(client.call("reused", "count&linger_ms=600").await, (StatusCode::OK, "3".to_owned()));
    let samples = scrape(&host).await;
    assert_eq!(outcome(&samples, "timeout"), 0.0);
    assert_eq!(retired(&samples, "max_requests"), 1.0, "the third call retired it");

    // A call past its deadline is stopped and its instance retired.
    assert_eq!(client.count("reused").await, 1);
    client.call("reused", "linger_ms=5000").await;
    assert_eq!(outcome(&scrape(&host).await, "timeout"), 1.0);
    assert_eq!(client.count("reused").await, 1, "a fresh instance after the timeout");
    assert_eq!(retired(&scrape(&host).await, "failed"), 2.0, "the fuel and the deadline each retired one");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_retires_the_old_versions_instances() {
    let host = start().await;
    let mut client = Client { host: &host, calls: 0.0 };
    assert_eq!(client.count("reused").await, 1);
    assert_eq!(idle(&scrape(&host).await), 1.0);

    // A call in flight on the old version when the swap lands.
    let busy = tokio::spawn({
        let url = format!("{}/reused/x?count&linger_ms=800", host.url);
        async move { TestHost::client().get(url).send().await.unwrap().text().await.unwrap() }
    });
    common::eventually("the lingering call to run", Duration::from_secs(10), || async {
        sample(&scrape(&host).await, "admission_running", &[("component", "reused")]) == Some(1.0)
    })
    .await;
    let (status, report) = deploy(&host, "reused", variant(&component_bytes("hello-http"), "v2")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(busy.await.unwrap(), "2", "the busy call finished on its old instance");
    client.calls += 1.0;
    assert_eq!(client.count("reused").await, 1, "the new version starts its own instance");
    let samples = scrape(&host).await;
    assert_eq!(retired(&samples, "swapped"), 1.0, "the old version's instance, once its call ended");
    assert_eq!(idle(&samples), 1.0, "only the new version's instance is idle");

    // Rolled back: the instance of the version that was swapped out goes
    // at once, idle as it was.
    let (status, report) = host.admin(reqwest::Method::POST, "/admin/components/reused/rollback").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let samples = scrape(&host).await;
    assert_eq!(retired(&samples, "swapped"), 2.0);
    assert_eq!(idle(&samples), 0.0);
    assert_eq!(client.count("reused").await, 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_idle_past_its_time_is_dropped() {
    let host = start().await;
    let mut client = Client { host: &host, calls: 0.0 };
    assert_eq!(client.count("reused").await, 1);
    assert_eq!(client.count("reused").await, 2);
    host.clock.advance(59_000);
    assert_eq!(client.count("reused").await, 3, "still within its 60 s");
    assert_eq!(client.count("reused").await, 1, "the first retired after 3 requests");
    host.clock.advance(60_000);
    assert_eq!(client.count("reused").await, 1, "idle for 60 s: dropped, and a fresh one started");
    let samples = scrape(&host).await;
    assert_eq!(retired(&samples, "idle"), 1.0);
    assert_eq!(started(&samples), 3.0);
    host.stop().await;
}
