//! The dashboards and alert rules against a real Prometheus scraping a real
//! host: traffic through every component (orders, fixtures, a connector
//! outage that trips breakers, a deploy), then every PromQL expression of
//! both dashboards and the alert rules must return data — per component
//! where the panel repeats per component — and the breaker-open alert must
//! be pending or firing during the outage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{ADMIN_TOKEN, Backend, Delivery, TestHost, eventually};

/// Bound on waiting for Prometheus to have scraped and evaluated.
const LIMIT: Duration = Duration::from_secs(90);

/// The Prometheus server this test started; stopped by its PID on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_prometheus(binary: &Path, target: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let rules = repo().join("monitoring/prometheus/alerts.yml").canonicalize().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: ['{target}']\n",
        rules.display()
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
}

async fn query(prometheus: &Prometheus, expr: &str) -> Vec<Value> {
    let Ok(response) =
        TestHost::client().get(format!("{}/api/v1/query", prometheus.url)).query(&[("query", expr)]).send().await
    else {
        return Vec::new();
    };
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Some traffic for every handler route, so rates are non-zero.
async fn traffic(host: &TestHost, orders: usize) {
    let client = TestHost::client();
    let order = json!({ "customer": "A", "email": "a@example.com", "phone": "1", "items": [{ "sku": "w", "qty": 1 }] });
    for _ in 0..orders {
        let response = client.post(format!("{}/orders", host.url)).json(&order).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    for (method, path) in [
        ("GET", "/hello"),
        ("GET", "/orders/ord_1"),
        ("POST", "/trap"),
        ("POST", "/trap?status=500"),
        ("GET", "/loop"),
        ("GET", "/memory"),
        ("GET", "/slow"),
        ("GET", "/spin?iterations=1000"),
    ] {
        client.request(method.parse().unwrap(), format!("{}{path}", host.url)).send().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_have_data_in_a_real_prometheus() {
    let Some(binary) = common::find_program("prometheus") else {
        assert!(std::env::var_os("CI").is_none(), "prometheus must be installed in CI");
        eprintln!("skipping: prometheus not installed (Debian package prometheus)");
        return;
    };
    let host = TestHost::start_with(Backend::Sqlite, Delivery::ON).await.expect("host");
    let target = host.url.trim_start_matches("http://").to_owned();
    let prometheus = start_prometheus(&binary, &target);
    let client = TestHost::client();
    host.put_inventory("w", 100_000, 300).await;

    eventually("prometheus scrapes the host", LIMIT, || async {
        query(&prometheus, "up{job=\"switchyard\"} == 1").await.len() == 1
    })
    .await;

    // A deploy, for the deploy markers and deployment counters.
    let hello = std::fs::read(common::components_dir().join("hello.wasm")).unwrap();
    let mut variant = hello.clone();
    variant.extend_from_slice(&[0x00, 0x05, 0x03, b'd', b'e', b'v', b'2']);
    let deployed = client
        .put(format!("{}/admin/components/hello", host.url))
        .bearer_auth(ADMIN_TOKEN)
        .body(variant)
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), StatusCode::OK);

    // Normal traffic, then a provider outage: deliveries fail, the
    // connector breakers open, messages pile up.
    traffic(&host, 10).await;
    eventually("deliveries happen", LIMIT, || async {
        host.db.outbox_count(switchyard::db::outbox::Status::Delivered).await.unwrap() >= 30
    })
    .await;
    host.simulator.as_ref().unwrap().set_down(true).unwrap();
    traffic(&host, 10).await;
    eventually("a connector breaker opens", LIMIT, || async {
        host.runtime.breaker("connector-email").unwrap().state() == switchyard::resilience::BreakerState::Open
    })
    .await;

    // Keep traffic going while Prometheus collects two windows of samples.
    eventually("rates are visible", LIMIT, || async {
        traffic(&host, 2).await;
        !query(&prometheus, "rate(component_invocations_total{component=\"hello\"}[1m]) > 0").await.is_empty()
            && !query(&prometheus, "outbox_messages{status=\"pending\"} > 0").await.is_empty()
    })
    .await;

    eventually("the breaker-open alert is pending or firing", LIMIT, || async {
        let Ok(response) = client.get(format!("{}/api/v1/alerts", prometheus.url)).send().await else { return false };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        body["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "CircuitBreakerOpen"
                    && a["labels"]["component"].as_str().is_some_and(|c| c.starts_with("connector-"))
                    && (a["state"] == "pending" || a["state"] == "firing")
            })
        })
    })
    .await;

    let components: Vec<String> = host.runtime.registry().list().into_iter().map(|c| c.name).collect();
    let output = tokio::task::spawn_blocking({
        let url = prometheus.url.clone();
        let components = components.join(",");
        move || {
            Command::new("python3")
                .arg(repo().join("monitoring/check-dashboards.py"))
                .args([
                    "--prometheus",
                    &url,
                    "--components",
                    &components,
                    "--check-per-component",
                    "--require-annotations",
                ])
                .output()
                .expect("run check-dashboards.py")
        }
    })
    .await
    .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "panels or alert selectors without data:\n{report}");
    eprintln!("{report}");
    drop(prometheus);
    host.stop().await;
}
