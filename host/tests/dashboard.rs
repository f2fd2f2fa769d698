//! The dashboard's data: `/admin/stats` and its stream, from the host's own
//! counters, behind the admin token; and the page, public and self-contained.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, Backend, TestHost};
use reqwest::StatusCode;
use serde_json::Value;

async fn hello(host: &TestHost, times: usize) {
    let client = reqwest::Client::new();
    for _ in 0..times {
        let response = client.get(format!("{}/hello", host.url)).send().await.expect("hello");
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// The fixture with a custom section appended: a new version, same code.
fn rebuilt(name: &str) -> Vec<u8> {
    switchyard_loadtests::variant::with_custom_section(&common::component_bytes(name), "dashboard-test", b"v2")
}

fn component<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["components"].as_array().expect("components").iter().find(|c| c["name"] == name).expect("listed")
}

#[tokio::test]
async fn every_call_is_counted_in_one_second_and_the_snapshot_names_every_component() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    hello(&host, 7).await;
    host.stats.sample();
    hello(&host, 5).await;
    host.stats.sample();

    let (status, stats) = host.admin(reqwest::Method::GET, "/admin/stats").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> =
        stats["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for name in host.runtime.component_names() {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let hello = component(&stats, "hello");
    assert_eq!(hello["world"], "handler");
    assert_eq!(hello["version"].as_str().unwrap().len(), 12);
    assert_eq!(hello["breaker"]["state"], "closed");
    // However the seconds fell (the host samples too), each call is in one.
    let series = hello["series"].as_array().unwrap();
    let calls: u64 = series.iter().map(|p| p["calls"].as_u64().unwrap()).sum();
    assert_eq!(calls, 12, "{series:?}");
    let ok: u64 = series.iter().map(|p| p["outcomes"]["ok"].as_u64().unwrap_or(0)).sum();
    assert_eq!(ok, 12);
    assert!(series.iter().any(|p| p["p99_ms"].as_f64().unwrap() > 0.0));
    assert!(series.iter().all(|p| p["errors"] == 0));
    // The outbox of every connector, and the ring's cost.
    let connectors: Vec<&str> =
        stats["outbox"].as_array().unwrap().iter().map(|o| o["connector"].as_str().unwrap()).collect();
    assert_eq!(connectors.len(), host.config.connectors.len());
    assert!(stats["ring"]["points"].as_u64().unwrap() >= 2);
    assert_eq!(stats["problems"].as_array().unwrap().len(), 0);
}

/// A trap, an order's three pending messages and a deploy, as the
/// snapshot shows them (the outbox and history queries, on both backends).
async fn a_trap_an_order_and_a_deploy_show_up(host: &TestHost) {
    let client = reqwest::Client::new();
    let response = client.post(format!("{}/trap", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    host.put_inventory("widget", 10, 250).await;
    let order = serde_json::json!({
        "customer": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000",
        "items": [{ "sku": "widget", "qty": 1 }],
    });
    let response = client.post(format!("{}/orders", host.url)).json(&order).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    host.stats.sample();
    let (status, _) = common::deploy(host, "hello", rebuilt("hello")).await;
    assert_eq!(status, StatusCode::OK);
    host.clock.advance(1_500);

    let (status, stats) = host.admin(reqwest::Method::GET, "/admin/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let traps: u64 = component(&stats, "trap")["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["outcomes"]["trap"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(traps, 1);
    let history = stats["deploys"].as_array().unwrap_or_else(|| panic!("{}", stats["problems"]));
    assert_eq!(history[0]["component"], "hello");
    assert_eq!(history[0]["action"], "deploy");
    assert_eq!(history[0]["result"], "accepted");
    assert_eq!(history[0]["actor"], "test-suite");
    for outbox in stats["outbox"].as_array().unwrap() {
        assert_eq!(outbox["pending"], 1, "{outbox}");
        assert_eq!(outbox["dead"], 0, "{outbox}");
        assert!(outbox["oldest_pending_age_ms"].as_i64().unwrap() >= 1_500, "{outbox}");
    }
    assert_eq!(stats["problems"].as_array().unwrap().len(), 0, "{stats}");
}
on_both_backends!(a_trap_an_order_and_a_deploy_show_up_in_the_snapshot, a_trap_an_order_and_a_deploy_show_up);

#[tokio::test]
async fn the_data_needs_the_token_and_the_page_does_not() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = reqwest::Client::new();
    for path in ["/admin/stats", "/admin/stats/stream"] {
        let none = client.get(format!("{}{path}", host.url)).send().await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{path}");
        let wrong = client.get(format!("{}{path}", host.url)).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let page = client.get(format!("{}/dashboard", host.url)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    // Everything the page loads comes from the host.
    for src in html.split("src=\"").skip(1).chain(html.split("href=\"").skip(1)) {
        let target = src.split('"').next().unwrap();
        assert!(target.starts_with("/dashboard/"), "{target} is not served by the host");
        let asset = client.get(format!("{}{target}", host.url)).send().await.unwrap();
        assert_eq!(asset.status(), StatusCode::OK, "{target}");
    }
    let missing = client.get(format!("{}/dashboard/nothing.js", host.url)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_stream_sends_a_snapshot_at_once_then_every_second() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    hello(&host, 3).await;
    let mut response = reqwest::Client::new()
        .get(format!("{}/admin/stats/stream", host.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    // Two events: the one sent at once and the next published one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while text.matches("event: stats").count() < 2 {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await.expect("a second event in time");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("the stream stays open")));
    }
    let first = text.split("data: ").nth(1).unwrap().split("\n\n").next().unwrap();
    let snapshot: Value = serde_json::from_str(first).unwrap();
    assert!(component(&snapshot, "hello").get("series").is_none(), "the stream sends no series");
    assert!(component(&snapshot, "hello")["version"].is_string());
}
