//! Each fixture guest ends the way its contract says, is reported with the
//! right outcome, gets a generic 5xx over HTTP, and leaves the host serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;
use switchyard::runtime::{HandlerRequest, Outcome};

use common::{Backend, TestHost};

fn get(path: &str) -> HandlerRequest {
    HandlerRequest { method: "GET".into(), path: path.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_report_their_outcomes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let state = switchyard::prepare(&common::test_config(&url)).await.expect("prepare");
    let runtime = &state.runtime;

    let cases = [
        ("hello", get("/hello"), Outcome::Ok, Some(200)),
        ("trap", HandlerRequest { method: "POST".into(), ..get("/trap") }, Outcome::Trap, None),
        (
            "trap",
            HandlerRequest { method: "POST".into(), query: "status=503".into(), ..get("/trap") },
            Outcome::Error,
            Some(503),
        ),
        ("loop-forever", get("/loop"), Outcome::FuelExhausted, None),
        ("memory-hog", get("/memory"), Outcome::Trap, None),
        ("slow", get("/slow"), Outcome::Timeout, None),
    ];
    for (component, request, expected, status) in cases {
        let invocation = runtime.invoke_handler(component, Arc::from("test"), request).await.expect("invoke");
        assert_eq!(invocation.record.outcome, expected, "{component}");
        assert_eq!(invocation.response.as_ref().map(|r| r.status), status, "{component}");
        assert_eq!(&*invocation.record.component, component);
        assert_eq!(invocation.record.version.len(), 12, "short content hash");
        assert!(invocation.record.fuel_consumed > 0, "{component} consumed fuel");
        if component == "loop-forever" {
            assert_eq!(invocation.record.fuel_consumed, 5_000_000, "the whole budget was spent");
        }
        if component == "memory-hog" {
            assert!(invocation.record.memory_peak <= 4 * 1024 * 1024, "peak within the limit");
            assert!(invocation.record.memory_peak >= 2 * 1024 * 1024, "it did grow towards the limit");
        }
        // The next request is served normally.
        let next = runtime.invoke_handler("hello", Arc::from("test"), get("/hello")).await.expect("invoke");
        assert_eq!(next.record.outcome, Outcome::Ok);
    }
    state.db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_generic_5xx_over_http() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();
    for (method, path, status) in [
        ("POST", "/trap", StatusCode::INTERNAL_SERVER_ERROR),
        ("GET", "/loop", StatusCode::INTERNAL_SERVER_ERROR),
        ("GET", "/memory", StatusCode::INTERNAL_SERVER_ERROR),
        ("GET", "/slow", StatusCode::GATEWAY_TIMEOUT),
    ] {
        let response = client
            .request(method.parse().expect("method"), format!("{}{path}", host.url))
            .header("x-request-id", "req-fixture-1")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.headers()["x-request-id"], "req-fixture-1");
        assert!(response.headers().contains_key("x-switchyard-version"), "{path}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["request_id"], "req-fixture-1");
        let error = body["error"].as_str().expect("error message");
        assert!(!error.contains("wasm") && !error.contains("panic"), "{path}: details stay in the logs: {error}");

        let hello = client.get(format!("{}/hello", host.url)).send().await.expect("hello");
        assert_eq!(hello.status(), StatusCode::OK);
        assert_eq!(hello.text().await.expect("body"), "hello");
    }
    host.stop().await;
}
