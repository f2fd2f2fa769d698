//! What the HTTP layer answers before any component runs: unknown routes,
//! wrong methods, oversized bodies, health probes, request ids.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;
use serde_json::Value;

use common::{Backend, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_errors_and_limits() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();

    let response = client.get(format!("{}/nowhere", host.url)).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "no route for GET /nowhere");

    let response = client.delete(format!("{}/orders", host.url)).send().await.expect("DELETE");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The /orders route allows 8 KiB.
    let response = client
        .post(format!("{}/orders", host.url))
        .header("content-type", "application/json")
        .body(vec![b' '; 9000])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.expect("JSON");
    assert!(body["error"].as_str().expect("error").contains("8192"));

    // Still serving.
    let response = client.get(format!("{}/hello", host.url)).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_request_ids() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();

    for path in ["/health/live", "/health/ready"] {
        let response = client.get(format!("{}{path}", host.url)).send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }

    let generated = client.get(format!("{}/hello", host.url)).send().await.expect("GET");
    let id = generated.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert_eq!(id.len(), 32, "a generated id: {id}");

    let echoed = client.get(format!("{}/hello", host.url)).header("x-request-id", "abc-123").send().await.expect("GET");
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");

    let replaced =
        client.get(format!("{}/hello", host.url)).header("x-request-id", "bad id").send().await.expect("GET");
    assert_ne!(replaced.headers()["x-request-id"], "bad id");
    host.stop().await;
}
