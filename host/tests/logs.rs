//! A request id travels: taken from `x-request-id`, returned on the
//! response, and present on the JSON log lines of the host, of the component
//! (its own `log` calls) and of the dispatcher delivering the messages the
//! request enqueued. Alone in its test binary: it installs the global
//! subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard::db::outbox::Status;
use switchyard::telemetry::{self, LogFormat};

use common::{Backend, Delivery, LogCapture as Capture, TestHost};

fn request_id_of(line: &Value) -> Option<&str> {
    line["request_id"].as_str().or_else(|| line["span"]["request_id"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_reaches_host_component_and_dispatcher_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    telemetry::init_with_writer(LogFormat::Json, move || writer.clone(), Some("info,invocation=debug"));

    let host = TestHost::start_with(Backend::Sqlite, Delivery::ON).await.expect("host");
    let client = TestHost::client();
    host.put_inventory("w", 1, 5).await;
    let order = json!({ "customer": "A", "email": "a@example.com", "phone": "1", "items": [{ "sku": "w", "qty": 1 }] });
    let response = client
        .post(format!("{}/orders", host.url))
        .header("x-request-id", "req-logs-42")
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], "req-logs-42");
    host.settle("delivered", || async { host.db.outbox_count(Status::Delivered).await.unwrap() == 3 }).await;
    host.stop().await;

    let lines: Vec<Value> =
        capture.json_lines().into_iter().filter(|l| request_id_of(l) == Some("req-logs-42")).collect();
    let host_line = lines.iter().any(|l| l["message"] == "invocation" && l["component"] == "order-handler");
    let component_line = lines
        .iter()
        .any(|l| l["target"] == "component" && l["message"].as_str().is_some_and(|m| m.contains("accepted")));
    let deliveries = lines.iter().filter(|l| l["message"] == "outbox delivery" && l["outcome"] == "delivered").count();
    let connector_lines =
        lines.iter().filter(|l| l["target"] == "component" && l["component"] != "order-handler").count();
    assert!(host_line, "host line with the request id: {lines:#?}");
    assert!(component_line, "component line with the request id: {lines:#?}");
    assert_eq!(deliveries, 3, "a dispatcher line per message: {lines:#?}");
    assert!(connector_lines >= 3, "connectors log under the request id too: {lines:#?}");
}
