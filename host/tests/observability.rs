//! Metrics, health and readiness, against the real components: exact
//! counters after a known sequence of requests, the exposition passing
//! `promtool check metrics`, component-emitted metrics, and readiness
//! following the database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{Backend, Samples, TestHost, parse_metrics as parse, sample as value};

async fn scrape(host: &TestHost) -> (String, Samples) {
    let response = TestHost::client().get(format!("{}/metrics", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

fn version_of(host: &TestHost, component: &str) -> String {
    host.runtime.registry().list().into_iter().find(|c| c.name == component).unwrap().version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_a_known_sequence() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();
    for _ in 0..3 {
        assert_eq!(client.get(format!("{}/hello", host.url)).send().await.unwrap().status(), StatusCode::OK);
    }
    let error = client.post(format!("{}/trap?status=500", host.url)).send().await.unwrap();
    assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    client.post(format!("{}/trap", host.url)).send().await.unwrap();
    client.get(format!("{}/loop", host.url)).send().await.unwrap();
    host.put_inventory("w", 5, 1_250).await;
    let order = json!({ "customer": "A", "email": "a@example.com", "phone": "1", "items": [{ "sku": "w", "qty": 2 }] });
    let created = client.post(format!("{}/orders", host.url)).json(&order).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    let (_, samples) = scrape(&host).await;
    let invocations = |component: &str, outcome: &str| {
        let version = version_of(&host, component);
        value(
            &samples,
            "component_invocations_total",
            &[("component", component), ("version", &version), ("outcome", outcome)],
        )
    };
    assert_eq!(invocations("hello", "ok"), Some(3.0));
    assert_eq!(invocations("hello", "trap"), Some(0.0), "every outcome series exists from the start");
    assert_eq!(invocations("trap", "error"), Some(1.0));
    assert_eq!(invocations("trap", "trap"), Some(1.0));
    assert_eq!(invocations("loop-forever", "fuel_exhausted"), Some(1.0));
    assert_eq!(invocations("order-handler", "ok"), Some(2.0));

    let fuel = |component| value(&samples, "component_fuel_consumed_total", &[("component", component)]);
    assert_eq!(fuel("loop-forever"), Some(5_000_000.0), "the whole budget");
    assert!(fuel("hello").unwrap() > 0.0);
    assert_eq!(
        value(&samples, "component_fuel_per_invocation_count", &[("component", "hello")]),
        Some(3.0),
        "one observation per call"
    );
    assert_eq!(value(&samples, "component_invocation_duration_seconds_count", &[("component", "trap")]), Some(2.0));
    assert!(value(&samples, "component_memory_peak_bytes", &[("component", "order-handler")]).unwrap() > 0.0);
    assert_eq!(
        value(
            &samples,
            "component_version_info",
            &[
                ("component", "hello"),
                ("version", &version_of(&host, "hello")),
                ("export", "switchyard:platform/handler")
            ]
        ),
        Some(1.0)
    );

    assert_eq!(
        value(&samples, "http_requests_total", &[("route", "/hello"), ("method", "GET"), ("status", "200")]),
        Some(3.0)
    );
    assert_eq!(
        value(&samples, "http_requests_total", &[("route", "/orders"), ("method", "POST"), ("status", "201")]),
        Some(1.0)
    );
    assert_eq!(value(&samples, "circuit_breaker_state", &[("component", "trap")]), Some(0.0));
    assert_eq!(value(&samples, "switchyard_ready", &[]), Some(1.0));
    assert_eq!(value(&samples, "outbox_messages", &[("connector", "email"), ("status", "pending")]), Some(1.0));

    // Emitted by the order handler itself.
    assert_eq!(value(&samples, "app_orders_created_total", &[("component", "order-handler")]), Some(1.0));
    assert_eq!(value(&samples, "app_order_value_cents_sum", &[("component", "order-handler")]), Some(2_500.0));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_passes_promtool() {
    let Some(promtool) = common::find_program("promtool") else {
        assert!(std::env::var_os("CI").is_none(), "promtool must be installed in CI");
        eprintln!("skipping: promtool not installed (Debian package prometheus)");
        return;
    };
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    TestHost::client().get(format!("{}/hello", host.url)).send().await.unwrap();
    TestHost::client().get(format!("{}/nowhere", host.url)).send().await.unwrap();
    let (text, _) = scrape(&host).await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_summarises_components_and_outbox() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();
    client.post(format!("{}/trap", host.url)).send().await.unwrap();
    let health: Value = client.get(format!("{}/health", host.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"]["reachable"], true);
    assert_eq!(health["outbox"]["pending"], 0);
    let trap = health["components"].as_array().unwrap().iter().find(|c| c["name"] == "trap").unwrap();
    assert_eq!(trap["last_outcome"], "trap");
    assert_eq!(trap["breaker"], "closed");
    assert_eq!(trap["version"], version_of(&host, "trap"));
    host.stop().await;
}

/// Readiness follows the database: PostgreSQL refuses connections for a
/// while, then takes them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database() {
    let Some(host) = TestHost::start(Backend::Postgres).await else { return };
    let client = TestHost::client();
    let ready = || async { client.get(format!("{}/health/ready", host.url)).send().await.unwrap().status() };
    assert_eq!(ready().await, StatusCode::OK);

    let database = host.pg_database_name().expect("per-test database");
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&common::postgres_url().unwrap())
        .await
        .unwrap();
    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false")).execute(&admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&admin)
        .await
        .unwrap();
    common::eventually("readiness fails", std::time::Duration::from_secs(30), || async {
        ready().await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (_, samples) = scrape(&host).await;
    assert_eq!(value(&samples, "switchyard_ready", &[]), Some(0.0));

    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true")).execute(&admin).await.unwrap();
    common::eventually("readiness recovers", std::time::Duration::from_secs(30), || async {
        ready().await == StatusCode::OK
    })
    .await;
    admin.close().await;
    host.stop().await;
}
