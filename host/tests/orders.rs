//! The order flow end to end over HTTP, on SQLite and PostgreSQL: status
//! codes, idempotency, the unit of work, and concurrent reservations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

use switchyard::db::outbox::{NewMessage, Status};
use switchyard::db::{Backend, DbError};

use common::TestHost;

fn order(items: Value) -> Value {
    json!({ "customer": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000", "items": items })
}

async fn post_order(host: &TestHost, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = TestHost::client().post(format!("{}/orders", host.url)).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("POST order");
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn stock_of(host: &TestHost, sku: &str) -> u64 {
    let raw = host.db.kv_get("order-handler", "orders", &format!("inventory/{sku}")).await.expect("kv read");
    let value: Value = serde_json::from_slice(&raw.expect("inventory row")).expect("inventory JSON");
    value["stock"].as_u64().expect("stock")
}

async fn pending(host: &TestHost) -> i64 {
    host.db.outbox_count(Status::Pending).await.expect("count")
}

async fn order_flow(host: &TestHost) {
    host.put_inventory("widget", 10, 250).await;

    let (status, created) = post_order(host, &order(json!([{ "sku": "widget", "qty": 3 }])), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["total_cents"], 750);
    assert_eq!(created["status"], "accepted");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(stock_of(host, "widget").await, 7);

    let fetched = TestHost::client().get(format!("{}/orders/{id}", host.url)).send().await.expect("GET");
    assert_eq!(fetched.status(), StatusCode::OK);
    let fetched: Value = fetched.json().await.expect("order JSON");
    assert_eq!(fetched["id"], id.as_str());
    assert_eq!(fetched["items"][0]["sku"], "widget");
    assert_eq!(fetched["items"][0]["qty"], 3);
    assert_eq!(fetched["total_cents"], 750);

    let missing = TestHost::client().get(format!("{}/orders/ord_999999", host.url)).send().await.expect("GET");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Unknown sku and sold out change nothing.
    let (status, body) = post_order(host, &order(json!([{ "sku": "gadget", "qty": 1 }])), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = post_order(host, &order(json!([{ "sku": "widget", "qty": 8 }])), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(stock_of(host, "widget").await, 7);
    assert_eq!(pending(host).await, 3);
}
on_both_backends!(order_flow_works, order_flow);

async fn bad_input(host: &TestHost) {
    host.put_inventory("widget", 5, 100).await;
    let client = TestHost::client();
    let cases: Vec<(&str, String)> = vec![
        ("malformed JSON", "{\"customer\": ".to_owned()),
        ("wrong type", order(json!([{ "sku": "widget", "qty": "two" }])).to_string()),
        ("no items", order(json!([])).to_string()),
        ("zero quantity", order(json!([{ "sku": "widget", "qty": 0 }])).to_string()),
        (
            "bad email",
            json!({ "customer": "A", "email": "nope", "phone": "1", "items": [{ "sku": "widget", "qty": 1 }] })
                .to_string(),
        ),
        (
            "unknown field",
            json!({ "customer": "A", "email": "a@b.c", "phone": "1", "items": [], "extra": 1 }).to_string(),
        ),
    ];
    for (case, body) in cases {
        let response = client
            .post(format!("{}/orders", host.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        let body: Value = response.json().await.expect("JSON error body");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{case}: {body}");
    }
    let response = client
        .put(format!("{}/inventory/widget", host.url))
        .body("{\"stock\": -1, \"price_cents\": 5}")
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stock_of(host, "widget").await, 5);
    assert_eq!(pending(host).await, 0);
}
on_both_backends!(bad_input_gets_400_and_changes_nothing, bad_input);

async fn idempotency(host: &TestHost) {
    host.put_inventory("widget", 10, 100).await;
    let body = order(json!([{ "sku": "widget", "qty": 2 }]));
    let (first_status, first) = post_order(host, &body, Some("key-1")).await;
    assert_eq!(first_status, StatusCode::CREATED, "{first}");
    let (again_status, again) = post_order(host, &body, Some("key-1")).await;
    assert_eq!(again_status, StatusCode::CREATED, "{again}");
    assert_eq!(again, first, "a replay answers with the original order");
    assert_eq!(stock_of(host, "widget").await, 8, "the replay reserved nothing");
    assert_eq!(pending(host).await, 3, "the replay enqueued nothing");

    let other = order(json!([{ "sku": "widget", "qty": 1 }]));
    let (status, error) = post_order(host, &other, Some("key-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(stock_of(host, "widget").await, 8);

    // A different key is a different order.
    let (status, second) = post_order(host, &body, Some("key-2")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(second["id"], first["id"]);
}
on_both_backends!(idempotency_keys_replay_and_reject_mismatches, idempotency);

/// `increment` is one statement: a new counter, additions, and stored
/// values that are no counter or would overflow refused, with the
/// transaction still usable after each refusal.
async fn counters(host: &TestHost) {
    let mut unit = host.db.unit_of_work(Arc::from("counters"), Arc::from("r1"));
    assert_eq!(unit.kv_increment("b", "n", 5).await.unwrap(), 5);
    assert_eq!(unit.kv_increment("b", "n", 7).await.unwrap(), 12);
    unit.kv_set("b", "text", b"twelve").await.unwrap();
    assert!(matches!(unit.kv_increment("b", "text", 1).await, Err(DbError::NotACounter { .. })));
    unit.kv_set("b", "bytes", &[0xff, 0x00, 0xfe]).await.unwrap();
    assert!(matches!(unit.kv_increment("b", "bytes", 1).await, Err(DbError::NotACounter { .. })));
    // The largest counter: u64 on PostgreSQL, SQLite's signed integer there.
    let max = match host.db.backend() {
        Backend::Postgres => u64::MAX,
        Backend::Sqlite => i64::MAX as u64,
    };
    unit.kv_set("b", "full", max.to_string().as_bytes()).await.unwrap();
    assert!(matches!(unit.kv_increment("b", "full", 1).await, Err(DbError::Overflow { .. })));
    assert_eq!(unit.kv_increment("b", "full", 0).await.unwrap(), max);
    assert_eq!(unit.kv_increment("b", "n", 1).await.unwrap(), 13);
    unit.commit().await.unwrap();
    assert_eq!(host.db.kv_get("counters", "b", "n").await.unwrap(), Some(b"13".to_vec()));
    assert_eq!(host.db.kv_get("counters", "b", "text").await.unwrap(), Some(b"twelve".to_vec()));
}
on_both_backends!(increments_are_one_statement_and_refuse_what_is_no_counter, counters);

/// Messages are written in batches (by count and by size) in the unit's
/// transaction: all of them commit, or none.
async fn enqueue_batches(host: &TestHost) {
    let message = |i: usize, body: usize| NewMessage {
        recipient: format!("user{i}@example.com"),
        subject: None,
        body: "x".repeat(body),
        metadata: vec![("n".into(), i.to_string())],
    };
    for commit in [false, true] {
        let mut unit = host.db.unit_of_work(Arc::from("order-handler"), Arc::from("batches"));
        // 40 small ones (past a batch's count), then 3 of 30 KiB (past its size).
        for i in 0..40 {
            unit.enqueue("email", message(i, 10)).await.unwrap();
        }
        for i in 40..43 {
            unit.enqueue("email", message(i, 30 * 1024)).await.unwrap();
        }
        if commit {
            unit.commit().await.unwrap()
        } else {
            unit.rollback().await.unwrap()
        }
        assert_eq!(pending(host).await, if commit { 43 } else { 0 }, "commit: {commit}");
    }
    let stored = host.db.outbox_messages(Some("email"), 100).await.unwrap();
    let mut recipients: Vec<_> = stored.iter().map(|m| m.recipient.clone()).collect();
    recipients.sort();
    let mut expected: Vec<_> = (0..43).map(|i| format!("user{i}@example.com")).collect();
    expected.sort();
    assert_eq!(recipients, expected);
    assert!(stored.iter().all(|m| m.request_id == "batches"));
}
on_both_backends!(enqueued_messages_commit_in_batches_or_not_at_all, enqueue_batches);

/// A unit of work dropped mid-transaction, as when a request's client
/// leaves, keeps none of its writes and holds nothing the next one needs.
async fn dropped_unit(host: &TestHost) {
    let mut unit = host.db.unit_of_work(Arc::from("dropped"), Arc::from("r1"));
    unit.kv_set("b", "lost", b"1").await.unwrap();
    assert_eq!(unit.kv_increment("b", "n", 1).await.unwrap(), 1);
    drop(unit);
    let mut next = host.db.unit_of_work(Arc::from("dropped"), Arc::from("r2"));
    let write = tokio::time::timeout(std::time::Duration::from_secs(10), next.kv_increment("b", "n", 1));
    assert_eq!(write.await.expect("the dropped unit's write lock was released").unwrap(), 1);
    next.commit().await.unwrap();
    assert_eq!(host.db.kv_get("dropped", "b", "lost").await.unwrap(), None);
    assert_eq!(host.db.kv_get("dropped", "b", "n").await.unwrap(), Some(b"1".to_vec()));
}
on_both_backends!(a_dropped_unit_of_work_keeps_nothing_and_holds_nothing, dropped_unit);

async fn unit_of_work(host: &TestHost) {
    let client = TestHost::client();
    // The trap fixture writes a key and enqueues a message, then fails.
    for query in ["", "?status=500", "?status=409"] {
        let response = client.post(format!("{}/trap{query}", host.url)).send().await.expect("POST trap");
        assert!(response.status().is_client_error() || response.status().is_server_error(), "{query}");
        let written = host.db.kv_get("trap", "fixtures", "trap/last").await.expect("kv read");
        assert_eq!(written, None, "{query}: the key write was rolled back");
        assert_eq!(pending(host).await, 0, "{query}: the message was rolled back");
    }

    // A partially reserved order that ends in 409 leaves stock untouched.
    host.put_inventory("a-sku", 5, 100).await;
    host.put_inventory("b-sku", 1, 100).await;
    let (status, _) =
        post_order(host, &order(json!([{ "sku": "a-sku", "qty": 2 }, { "sku": "b-sku", "qty": 2 }])), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(stock_of(host, "a-sku").await, 5);
    assert_eq!(pending(host).await, 0);

    // A successful order leaves exactly its three messages.
    let (status, created) = post_order(host, &order(json!([{ "sku": "a-sku", "qty": 1 }])), None).await;
    assert_eq!(status, StatusCode::CREATED);
    let messages = host.db.outbox_messages(None, 100).await.expect("messages");
    assert_eq!(messages.len(), 3);
    let mut connectors: Vec<_> = messages.iter().map(|m| m.connector.as_str()).collect();
    connectors.sort();
    assert_eq!(connectors, ["email", "sms", "webhook"]);
    assert!(messages.iter().all(|m| m.status == "PENDING" && m.component == "order-handler"));
    let email = messages.iter().find(|m| m.connector == "email").expect("email");
    assert_eq!(email.recipient, "ada@example.com");
    let webhook = messages.iter().find(|m| m.connector == "webhook").expect("webhook");
    assert!(webhook.body.contains(created["id"].as_str().expect("id")));
}
on_both_backends!(failed_invocations_roll_back_everything, unit_of_work);

async fn concurrency(host: &TestHost) {
    host.put_inventory("hot", 20, 100).await;
    let client = TestHost::client();
    let requests = (0..50).map(|i| {
        let client = client.clone();
        let url = format!("{}/orders", host.url);
        let body = json!({ "customer": format!("c{i}"), "email": "c@example.com", "phone": "123", "items": [{ "sku": "hot", "qty": 1 }] });
        async move { client.post(url).json(&body).send().await.map(|r| r.status()) }
    });
    let statuses = futures::future::join_all(requests).await;
    let created = statuses.iter().filter(|s| matches!(s, Ok(StatusCode::CREATED))).count();
    let conflicts = statuses.iter().filter(|s| matches!(s, Ok(StatusCode::CONFLICT))).count();
    assert_eq!((created, conflicts), (20, 30), "{statuses:?}");
    assert_eq!(stock_of(host, "hot").await, 0);
    assert_eq!(pending(host).await, 60);
}
on_both_backends!(concurrent_orders_never_oversell, concurrency);
