//! Standard `wasi:http/proxy` components behind routes, against the real
//! `hello-http` fixture: any-method catch-all routes, bodies streamed both
//! ways, outcomes and fuel in the metrics, the body limit enforced before the
//! guest runs, deploys refused across worlds, and serving without fuel
//! metering.
//!
//! A proxy component's response is returned while its guest still runs, and
//! the invocation is recorded when the guest returns — possibly after the
//! client has the whole body. Metric assertions therefore first wait, with
//! `common::eventually`, for the expected number of invocations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;
use serde_json::Value;

use common::{Backend, HELLO_HTTP, TestHost, component_bytes, deploy, sample as value};
use common::{
    active_version_of as version_of, all_invocations_of as all_invocations, invocations_of as invocations, patterned,
    scrape_metrics as scrape, settled_invocations as settled,
};

async fn start(extra: &str) -> TestHost {
    TestHost::start_with_toml(Backend::Sqlite, extra).await.expect("sqlite host")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_all_route_serves_any_method() {
    let host = start(HELLO_HTTP).await;
    let client = TestHost::client();
    let version = version_of(&host, "hello-http");
    assert_eq!(version.len(), 12, "short content hash");

    let response = client.get(format!("{}/http/any/deeper/path", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.headers()["x-switchyard-version"], version.as_str());
    assert!(response.headers().contains_key("x-request-id"));
    // When the guest has returned before the response leaves, its body goes
    // out whole, with its length; otherwise it streams. Which comes first is
    // the scheduler's choice, so only the length, if sent, is checked.
    if let Some(length) = response.headers().get("content-length") {
        assert_eq!(length, "5");
    } else {
        assert_eq!(response.headers()["transfer-encoding"], "chunked");
    }
    assert_eq!(response.text().await.unwrap(), "hello");

    // `*` routes every method to the component.
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let response = client
            .request(method.parse().unwrap(), format!("{}/http/x", host.url))
            .body("ignored")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(response.text().await.unwrap(), "hello", "{method}");
    }

    let samples = settled(&host, "hello-http", 5.0).await;
    assert_eq!(invocations(&host, &samples, "hello-http", "ok"), 5.0);
    assert_eq!(
        value(&samples, "http_requests_total", &[("route", "/http/{*rest}"), ("method", "GET"), ("status", "200")]),
        Some(1.0),
        "labelled by the route template, not the raw path"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_streams_bodies_both_ways() {
    let host = start(HELLO_HTTP).await;
    let client = TestHost::client();
    // Larger than the guest's 64 KiB read and host buffers, and not a
    // multiple of its 4 KiB write chunks.
    for body in [b"a small body".to_vec(), patterned(300 * 1024 + 17)] {
        let response = client.post(format!("{}/http/echo?echo", host.url)).body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{} bytes", body.len());
        let echoed = response.bytes().await.unwrap();
        assert_eq!(echoed.len(), body.len());
        assert!(echoed == body, "{} bytes came back changed", body.len());
    }
    // An empty body echoes as empty.
    let response = client.post(format!("{}/http/echo?echo", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());

    let samples = settled(&host, "hello-http", 3.0).await;
    assert_eq!(invocations(&host, &samples, "hello-http", "ok"), 3.0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_decides_the_outcome_and_fuel_is_recorded() {
    let host = start(HELLO_HTTP).await;
    let client = TestHost::client();
    let before = scrape(&host).await;
    let fuel_before = value(&before, "component_fuel_consumed_total", &[("component", "hello-http")]);
    assert_eq!(fuel_before.unwrap_or(0.0), 0.0, "no calls yet");

    for status in [503, 404] {
        let response = client.get(format!("{}/http/s?status={status}", host.url)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "the guest's status is passed through");
        assert_eq!(response.headers()["x-switchyard-version"], version_of(&host, "hello-http").as_str());
        assert_eq!(response.text().await.unwrap(), "hello", "the guest's own body, not a generic error");
    }

    let samples = settled(&host, "hello-http", 2.0).await;
    assert_eq!(invocations(&host, &samples, "hello-http", "error"), 1.0, "a 5xx is an error");
    assert_eq!(invocations(&host, &samples, "hello-http", "ok"), 1.0, "a 4xx is the caller's problem");
    assert_eq!(all_invocations(&host, &samples, "hello-http"), 2.0);
    let fuel = value(&samples, "component_fuel_consumed_total", &[("component", "hello-http")]).unwrap();
    assert!(fuel > 0.0, "fuel consumed: {fuel}");
    assert_eq!(
        value(&samples, "component_fuel_per_invocation_count", &[("component", "hello-http")]),
        Some(2.0),
        "one observation per call"
    );
    assert_eq!(value(&samples, "component_fuel_per_invocation_sum", &[("component", "hello-http")]), Some(fuel));
    assert_eq!(
        value(&samples, "component_invocation_duration_seconds_count", &[("component", "hello-http")]),
        Some(2.0)
    );
    assert!(value(&samples, "component_memory_peak_bytes", &[("component", "hello-http")]).unwrap() > 0.0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_oversized_body_is_refused_before_the_guest_runs() {
    let host = start(HELLO_HTTP).await;
    let client = TestHost::client();
    let small = patterned(1024);

    // At the limit: served.
    let response = client.post(format!("{}/small?echo", host.url)).body(small.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), small);
    let samples = settled(&host, "hello-http", 1.0).await;
    assert_eq!(all_invocations(&host, &samples, "hello-http"), 1.0);

    // One byte over, with a Content-Length: refused by the host.
    let response = client.post(format!("{}/small?echo", host.url)).body(patterned(1025)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!response.headers().contains_key("x-switchyard-version"), "no component answered");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("1024"), "{body}");

    // A later call is the second invocation: the refused one never ran.
    let response = client.post(format!("{}/small?echo", host.url)).body(small.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let samples = settled(&host, "hello-http", 2.0).await;
    assert_eq!(all_invocations(&host, &samples, "hello-http"), 2.0);
    assert_eq!(invocations(&host, &samples, "hello-http", "ok"), 2.0);
    assert_eq!(
        value(&samples, "http_requests_total", &[("route", "/small"), ("method", "POST"), ("status", "413")]),
        Some(1.0)
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_across_worlds_are_refused() {
    let host = start(HELLO_HTTP).await;
    let client = TestHost::client();
    let hello = version_of(&host, "hello");
    let hello_http = version_of(&host, "hello-http");

    let (status, body) = deploy(&host, "hello", component_bytes("hello-http")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("does not implement the world switchyard:platform/handler"), "{error}");

    let (status, body) = deploy(&host, "hello-http", component_bytes("hello")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("does not implement the world wasi:http/proxy"), "{error}");

    // Both keep their versions and keep serving.
    assert_eq!(version_of(&host, "hello"), hello);
    assert_eq!(version_of(&host, "hello-http"), hello_http);
    let response = client.get(format!("{}/hello", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-switchyard-version"], hello.as_str());
    let response = client.get(format!("{}/http/x", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-switchyard-version"], hello_http.as_str());
    assert_eq!(response.text().await.unwrap(), "hello");

    let samples = scrape(&host).await;
    assert_eq!(
        value(&samples, "component_deployments_total", &[("component", "hello"), ("result", "rejected")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "component_deployments_total", &[("component", "hello-http"), ("result", "rejected")]),
        Some(1.0)
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fuel_metering_serves_and_records_no_fuel() {
    let host = start(&format!("[runtime]\nfuel_metering = false\n{HELLO_HTTP}")).await;
    let client = TestHost::client();

    let response = client.get(format!("{}/http/x", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "hello");
    let body = patterned(100 * 1024);
    let response = client.post(format!("{}/http/x?echo", host.url)).body(body.clone()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap() == body);
    // Typed handlers run unmetered too.
    let response = client.get(format!("{}/hello", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let samples = settled(&host, "hello-http", 2.0).await;
    assert_eq!(invocations(&host, &samples, "hello-http", "ok"), 2.0);
    for component in ["hello-http", "hello"] {
        assert_eq!(
            value(&samples, "component_fuel_consumed_total", &[("component", component)]),
            Some(0.0),
            "{component}: unmetered calls report no fuel"
        );
    }
    assert_eq!(value(&samples, "component_fuel_per_invocation_count", &[("component", "hello-http")]), Some(2.0));
    host.stop().await;
}

/// hello-http under a deadline far longer than the test, for a guest that
/// keeps running after its response has gone out.
const LINGERING: &str = r#"
    [components.hello-http]
    path = "hello-http.wasm"
    world = "wasi-http"
    limits = { timeout_ms = 600_000 }

    [[routes]]
    method = "*"
    path = "/http/{*rest}"
    component = "hello-http"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_whose_client_goes_away_is_stopped() {
    let host = start(LINGERING).await;
    common::assert_stopped_when_the_client_leaves(&host, "/http/x", "hello-http").await;
    host.stop().await;
}
