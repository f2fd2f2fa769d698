//! Backpressure: bounded admission per component (503 + Retry-After, other
//! components unaffected), per-key rate limits (401, 429 + Retry-After),
//! header limits (431), and a SIGTERM under load that loses no
//! acknowledged order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{Backend, TestHost, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_early_and_stays_with_its_component() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();
    // spin: 2 running + 2 queued at most; 12 arrive at once.
    let requests: Vec<_> = (0..12)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/spin?iterations=600000000", host.url);
            tokio::spawn(async move { client.get(url).send().await.unwrap() })
        })
        .collect();
    // Meanwhile another component answers normally.
    for _ in 0..5 {
        let hello = client.get(format!("{}/hello", host.url)).send().await.unwrap();
        assert_eq!(hello.status(), StatusCode::OK);
    }
    let mut ok = 0;
    let mut refused = 0;
    for request in requests {
        let response = request.await.unwrap();
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(response.headers()["retry-after"], "1");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok + refused, 12);
    assert!(ok >= 4, "slots and queue were used: {ok} served");
    assert!(refused >= 1, "the excess was refused: {refused}");
    let gate = host.runtime.admissions().find(|(name, _)| *name == "spin").unwrap().1.clone();
    assert!(gate.deepest_queue() <= 2, "the queue stayed bounded: {}", gate.deepest_queue());
    let metrics = client.get(format!("{}/metrics", host.url)).send().await.unwrap().text().await.unwrap();
    let refused_metric = metrics
        .lines()
        .find(|l| l.starts_with("admission_rejected_total{reason=\"queue_full\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(refused_metric, Some(refused as f64));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_limited_each_to_its_own_quota() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();
    let url = format!("{}/keyed/hello", host.url);
    let get = |key: Option<&'static str>| {
        let mut request = client.get(&url);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send()
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get(Some("nope")).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // alpha: burst of 3, then refused with a Retry-After from its limiter.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let response = get(Some("alpha-key")).await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(response.status());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 3, "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"), "1 per second: retry within a second");

    // beta is unaffected, also as a bearer token.
    let beta = client.get(&url).bearer_auth("beta-key").send().await.unwrap();
    assert_eq!(beta.status(), StatusCode::OK);
    // Keyless routes need no key.
    assert_eq!(client.get(format!("{}/hello", host.url)).send().await.unwrap().status(), StatusCode::OK);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();
    let mut many = client.get(format!("{}/hello", host.url));
    for i in 0..70 {
        many = many.header(format!("x-extra-{i}"), "1");
    }
    let response = many.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("at most 64 headers"));
    let big = client.get(format!("{}/hello", host.url)).header("x-big", "a".repeat(20_000)).send().await.unwrap();
    assert_eq!(big.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(client.get(format!("{}/hello", host.url)).send().await.unwrap().status(), StatusCode::OK);
    host.stop().await;
}

/// SIGTERM while orders stream in: the process drains and exits, and every
/// order it acknowledged is stored with its three outbox messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_order() {
    let dir = tempfile::tempdir().unwrap();
    let components = common::components_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let db_path = dir.path().join("switchyard.db");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"sqlite://{}\"\n\
         [components.order-handler]\npath = \"{}\"\n[connectors.email]\n[connectors.sms]\n[connectors.webhook]\n\
         [[routes]]\nmethod = \"PUT\"\npath = \"/inventory/{{sku}}\"\ncomponent = \"order-handler\"\n\
         [[routes]]\nmethod = \"POST\"\npath = \"/orders\"\ncomponent = \"order-handler\"\n",
        db_path.display(),
        components.join("order-handler.wasm").display()
    );
    let config_path = dir.path().join("switchyard.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = TestHost::client();
    eventually("the server is ready", Duration::from_secs(60), || async {
        client.get(format!("{url}/health/ready")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    client.put(format!("{url}/inventory/w")).json(&json!({ "stock": 100_000, "price_cents": 1 })).send().await.unwrap();

    let order = json!({ "customer": "A", "email": "a@example.com", "phone": "1", "items": [{ "sku": "w", "qty": 1 }] });
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            let url = format!("{url}/orders");
            let order = order.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for _ in 0..200 {
                    match client.post(&url).json(&order).send().await {
                        Ok(response) if response.status() == StatusCode::CREATED => {
                            let body: Value = response.json().await.unwrap();
                            acknowledged.push(body["id"].as_str().unwrap().to_owned());
                        }
                        // Refused or cut off while shutting down: not acknowledged.
                        _ => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    eventually("orders are flowing", Duration::from_secs(60), || async {
        client.get(format!("{url}/health")).send().await.is_ok_and(|r| r.status().is_success())
            && std::fs::metadata(&db_path).is_ok()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");

    let mut acknowledged = BTreeSet::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert!(!acknowledged.is_empty(), "orders were acknowledged before the signal");
    let pool =
        sqlx::sqlite::SqlitePoolOptions::new().connect(&format!("sqlite://{}", db_path.display())).await.unwrap();
    let stored: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT substr(key, 7) FROM kv WHERE component = 'order-handler' AND key LIKE 'order/%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let messages: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(&pool).await.unwrap();
    pool.close().await;
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but not stored: {missing:?}");
    assert_eq!(messages, 3 * stored.len() as i64, "every stored order has its three messages");
}
