//! Store-and-forward delivery through the real connector components to the
//! real provider simulator, on SQLite and PostgreSQL: outages and recovery,
//! poison messages, isolation between connectors, crash recovery through
//! leases, several dispatchers on one database, and the admin API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use switchyard::clock::Clock;
use switchyard::db::outbox::{NewMessage, Status};
use switchyard::outbox::{DeliveryTallies, Dispatcher};
use switchyard::resilience::BreakerState;
use switchyard_loadtests::simulator::Channel;

use common::{Backend, Delivery, TestHost, eventually};

/// Generous bound on background work; never reached when things work.
const LIMIT: Duration = Duration::from_secs(60);

async fn place_orders(host: &TestHost, n: usize, email: &str) {
    let client = TestHost::client();
    for i in 0..n {
        let body = json!({ "customer": format!("c{i}"), "email": email, "phone": "555 0100", "items": [{ "sku": "w", "qty": 1 }] });
        let response = client.post(format!("{}/orders", host.url)).json(&body).send().await.expect("POST");
        assert_eq!(response.status(), StatusCode::CREATED);
    }
}

async fn count(host: &TestHost, status: Status) -> i64 {
    host.db.outbox_count(status).await.expect("count")
}

async fn count_for(host: &TestHost, connector: &str, status: &str) -> i64 {
    host.db
        .outbox_status_counts()
        .await
        .expect("counts")
        .into_iter()
        .find(|c| c.connector == connector && c.status == status)
        .map_or(0, |c| c.count)
}

/// Invocations that actually ran the component (not refused by its breaker).
fn ran(host: &TestHost, component: &str) -> u64 {
    let info = host.runtime.registry().list().into_iter().find(|c| c.name == component).expect("component");
    info.invocations.iter().filter(|(outcome, _)| **outcome != "rejected").map(|(_, n)| n).sum()
}

async fn delivers_every_message(host: &TestHost) {
    let simulator = host.simulator.as_ref().expect("simulator");
    host.put_inventory("w", 100, 100).await;
    place_orders(host, 5, "ada@example.com").await;
    host.settle("15 messages delivered", || async { count(host, Status::Delivered).await == 15 }).await;
    let received = simulator.received();
    assert_eq!(received.unique, 15);
    for channel in [Channel::Email, Channel::Sms, Channel::Webhook] {
        assert_eq!(received.channels.get(channel).unique, 5, "{channel}");
    }
    // Every stored id reached the provider as its idempotency key.
    let mut ids: Vec<String> =
        host.db.outbox_messages(Some("email"), 100).await.unwrap().into_iter().map(|m| m.id).collect();
    ids.sort();
    assert_eq!(simulator.received_ids(Channel::Email), ids);
}
on_both_backends!(every_message_is_delivered, delivers_every_message, Delivery::ON);

/// One delivery at a time per connector, so the breaker's threshold can be
/// counted exactly.
const SERIAL: Delivery = Delivery::Simulator { dispatch: true, concurrency: 1 };

/// Deliveries reuse kept-alive connections to the provider: with one
/// delivery at a time per connector, three connectors need about three
/// connections for thirty messages, not thirty.
async fn deliveries_reuse_connections(host: &TestHost) {
    let simulator = host.simulator.as_ref().expect("simulator");
    host.put_inventory("w", 100, 100).await;
    place_orders(host, 10, "ada@example.com").await;
    host.settle("30 messages delivered", || async { count(host, Status::Delivered).await == 30 }).await;
    assert_eq!(simulator.received().unique, 30);
    let connections = simulator.connections_accepted();
    assert!((1..=6).contains(&connections), "{connections} connections for 30 deliveries");
}
on_both_backends!(deliveries_reuse_kept_alive_connections, deliveries_reuse_connections, SERIAL);

async fn outage_and_recovery(host: &TestHost) {
    let simulator = host.simulator.as_ref().expect("simulator");
    host.put_inventory("w", 1_000, 100).await;
    simulator.set_down(true).expect("down");
    place_orders(host, 200, "ada@example.com").await;
    assert_eq!(count(host, Status::Pending).await, 600);

    let connectors = ["connector-email", "connector-sms", "connector-webhook"];
    for component in connectors {
        let breaker = host.runtime.breaker(component).expect("breaker").clone();
        eventually("the breaker opens", LIMIT, || {
            let breaker = breaker.clone();
            async move { breaker.state() == BreakerState::Open }
        })
        .await;
        // Exactly the configured consecutive failures were attempted.
        assert_eq!(ran(host, component), 5, "{component}");
    }
    // While open: more wake-ups, no invocations, nothing marked.
    for _ in 0..5 {
        host.db.signal_outbox();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for component in connectors {
        assert_eq!(ran(host, component), 5, "{component} was not invoked while open");
    }
    assert_eq!(count(host, Status::Pending).await, 600);
    assert_eq!(count(host, Status::Dead).await, 0);
    // Summed, not counted per message: full jitter may make a failed
    // message due again at once, and the clock here does not move.
    let attempts: i64 = host.db.outbox_messages(None, 1_000).await.unwrap().iter().map(|m| m.attempts).sum();
    assert_eq!(attempts, 15, "attempts counted only for the calls made");

    // The provider returns; the breakers probe after open_for and close.
    simulator.set_down(false).expect("up");
    host.clock.advance(120_000);
    host.db.signal_outbox();
    host.settle("all 600 delivered", || async { count(host, Status::Delivered).await == 600 }).await;
    for component in connectors {
        assert_eq!(host.runtime.breaker(component).unwrap().state(), BreakerState::Closed);
    }
    let received = simulator.received();
    assert_eq!(received.unique, 600, "every message reached the provider");
    eprintln!("outage: duplicates seen by the provider: {}", received.duplicates);
}
on_both_backends!(outage_trips_breakers_and_recovery_delivers_all, outage_and_recovery, SERIAL);

async fn poison_message(host: &TestHost) {
    let simulator = host.simulator.as_ref().expect("simulator");
    simulator.reject_recipients(Some("poison".into())).expect("reject");
    host.put_inventory("w", 100, 100).await;
    place_orders(host, 3, "ok@example.com").await;
    place_orders(host, 1, "poison@example.com").await;
    place_orders(host, 3, "ok@example.com").await;
    host.settle("all settled", || async {
        count(host, Status::Delivered).await + count(host, Status::Dead).await == 21
    })
    .await;
    assert_eq!(count(host, Status::Dead).await, 1);
    let dead = host.db.outbox_recent(Some("DEAD"), None, 10).await.unwrap();
    assert_eq!(dead[0].recipient, "poison@example.com");
    assert_eq!(dead[0].attempts, 1, "a permanent error is not retried");
    assert_eq!(count_for(host, "email", "DELIVERED").await, 6, "later messages were not blocked");

    // The admin API shows it and requeues it; delivered once the provider relents.
    let client = TestHost::client();
    let unauthorized = client.get(format!("{}/admin/outbox", host.url)).send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let (_, listed) = host.admin(reqwest::Method::GET, "/admin/outbox?status=dead").await;
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1);
    assert!(listed["counts"].as_array().unwrap().iter().any(|c| c["status"] == "DEAD" && c["count"] == 1));
    simulator.reject_recipients(None).expect("accept");
    let (retried, _) = host.admin(reqwest::Method::POST, &format!("/admin/outbox/{}/retry", dead[0].id)).await;
    assert_eq!(retried, StatusCode::OK);
    host.settle("the requeued message is delivered", || async { count(host, Status::Delivered).await == 21 }).await;
    let (again, _) = host.admin(reqwest::Method::POST, &format!("/admin/outbox/{}/retry", dead[0].id)).await;
    assert_eq!(again, StatusCode::NOT_FOUND, "only DEAD messages can be requeued");
}
on_both_backends!(poison_message_goes_dead_without_blocking_others, poison_message, Delivery::ON);

/// A transient provider failure schedules a retry on the injected clock;
/// waiting with `settle` moves that clock, so the retry happens and the wait
/// ends on the delivery itself (a plain poll would wait out its bound).
async fn transient_failure(host: &TestHost) {
    let simulator = host.simulator.as_ref().expect("simulator");
    simulator.set_fail(Some(Channel::Email), 1.0, 503).expect("fail");
    host.put_inventory("w", 10, 100).await;
    place_orders(host, 2, "ada@example.com").await;
    eventually("both emails failed once", LIMIT, || async {
        let emails = host.db.outbox_messages(Some("email"), 10).await.unwrap();
        emails.len() == 2 && emails.iter().all(|m| m.attempts >= 1 && m.status == "PENDING" && m.lease_until.is_none())
    })
    .await;
    simulator.set_fail(None, 0.0, 503).expect("recover");
    host.settle("all six delivered", || async { count(host, Status::Delivered).await == 6 }).await;
    let emails = host.db.outbox_messages(Some("email"), 10).await.unwrap();
    assert!(emails.iter().all(|m| m.attempts >= 2), "each email was delivered on a retry: {emails:?}");
}
on_both_backends!(a_transient_failure_is_retried_after_its_backoff, transient_failure, Delivery::ON);

async fn isolation(host: &TestHost) {
    let simulator = host.simulator.as_ref().expect("simulator");
    simulator.set_channel_down(Channel::Sms, true);
    host.put_inventory("w", 100, 100).await;
    place_orders(host, 10, "ada@example.com").await;
    host.settle("email and webhook delivered", || async {
        count_for(host, "email", "DELIVERED").await == 10 && count_for(host, "webhook", "DELIVERED").await == 10
    })
    .await;
    // The wait moved the clock, so SMS may have spent its attempts: pending or dead, never delivered.
    assert_eq!(count_for(host, "sms", "PENDING").await + count_for(host, "sms", "DEAD").await, 10);
    assert_eq!(count_for(host, "sms", "DELIVERED").await, 0);
    assert_eq!(host.runtime.breaker("connector-email").unwrap().state(), BreakerState::Closed);
}
on_both_backends!(one_connector_down_does_not_hold_up_others, isolation, Delivery::ON);

/// Hosts that store messages but leave delivery to dispatchers the test starts.
const MANUAL: Delivery = Delivery::Simulator { dispatch: false, concurrency: 16 };

async fn enqueue(host: &TestHost, n: usize) {
    let mut unit = host.db.unit_of_work(Arc::from("order-handler"), Arc::from("test-request"));
    for i in 0..n {
        let message = NewMessage {
            recipient: format!("user{i}@example.com"),
            subject: Some("hello".into()),
            body: "hi".into(),
            metadata: vec![],
        };
        unit.enqueue("email", message).await.expect("enqueue");
    }
    unit.commit().await.expect("commit");
}

async fn crash_recovery(host: &TestHost) {
    let simulator = host.simulator.as_ref().expect("simulator");
    enqueue(host, 3).await;
    // A worker claims the messages and dies without settling them.
    let now = host.clock.now_millis();
    let claimed = host.db.outbox_claim("email", "dead-worker", now, now + 60_000, 64).await.unwrap();
    assert_eq!(claimed.len(), 3);

    let dispatcher = Dispatcher::start(
        &host.config,
        host.runtime.clone(),
        host.db.clone(),
        Arc::new(host.clock.clone()),
        Arc::new(DeliveryTallies::new(&host.config)),
    );
    for _ in 0..3 {
        host.db.signal_outbox();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(count(host, Status::Delivered).await, 0, "the lease holds while it lasts");
    assert_eq!(simulator.received().unique, 0);

    host.clock.advance(60_000);
    host.db.signal_outbox();
    host.settle("expired claims are delivered", || async { count(host, Status::Delivered).await == 3 }).await;
    assert_eq!(simulator.received().channels.get(Channel::Email).unique, 3);
    dispatcher.stop().await;
}
on_both_backends!(expired_leases_are_claimed_again, crash_recovery, MANUAL);

async fn many_dispatchers(host: &TestHost) {
    let simulator = host.simulator.as_ref().expect("simulator");
    enqueue(host, 1_000).await;
    let dispatchers: Vec<_> = (0..4)
        .map(|_| {
            Dispatcher::start(
                &host.config,
                host.runtime.clone(),
                host.db.clone(),
                Arc::new(host.clock.clone()),
                Arc::new(DeliveryTallies::new(&host.config)),
            )
        })
        .collect();
    host.db.signal_outbox();
    host.settle("1000 delivered", || async { count(host, Status::Delivered).await == 1_000 }).await;
    let received = simulator.received();
    assert_eq!(received.unique, 1_000);
    assert_eq!(received.duplicates, 0, "no message was claimed by two dispatchers within its lease");
    let messages = host.db.outbox_messages(Some("email"), 2_000).await.unwrap();
    assert!(messages.iter().all(|m| m.attempts == 1));
    for dispatcher in dispatchers {
        dispatcher.stop().await;
    }
}
on_both_backends!(four_dispatchers_deliver_each_message_once, many_dispatchers, MANUAL);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_allowed_hosts_are_refused_as_permanent() {
    let host = TestHost::start_with(Backend::Sqlite, Delivery::Forbidden).await.expect("host");
    host.put_inventory("w", 10, 100).await;
    place_orders(&host, 1, "ada@example.com").await;
    host.settle("all three dead", || async { count(&host, Status::Dead).await == 3 }).await;
    assert_eq!(host.simulator.as_ref().unwrap().received().requests, 0, "nothing left the host");
    let dead = host.db.outbox_recent(Some("DEAD"), None, 10).await.unwrap();
    assert!(dead.iter().all(|m| m.attempts == 1), "refused at once, not retried");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_breaker_answers_503_without_instantiating() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();
    for _ in 0..5 {
        let response = client.post(format!("{}/trap", host.url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let refused = client.post(format!("{}/trap?status=200", host.url)).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "10");
    assert_eq!(ran(&host, "trap"), 5, "the open breaker did not instantiate");
    // Other components are unaffected.
    assert_eq!(client.get(format!("{}/hello", host.url)).send().await.unwrap().status(), StatusCode::OK);

    host.clock.advance(10_000);
    let probe = client.post(format!("{}/trap?status=200", host.url)).send().await.unwrap();
    assert_eq!(probe.status(), StatusCode::OK, "a successful probe closes the breaker");
    assert_eq!(host.runtime.breaker("trap").unwrap().state(), BreakerState::Closed);
    host.stop().await;
}

/// Four deliveries at a time, so one slow delivery would hold up a batch.
const FOUR_AT_ONCE: Delivery = Delivery::Simulator { dispatch: true, concurrency: 4 };

/// A slow delivery holds back only itself: the messages claimed with it are
/// delivered and settled while it is still on its way.
async fn slow_delivery(host: &TestHost) {
    let simulator = host.simulator.as_ref().expect("simulator");
    // Slow, but within the connectors' 2 s transport timeout.
    simulator.slow_recipients(Some(("slow@".into(), 1_500))).expect("slow");
    let mut unit = host.db.unit_of_work(Arc::from("order-handler"), Arc::from("test-request"));
    for i in 0..31 {
        let recipient = if i == 0 { "slow@example.com".to_owned() } else { format!("fast{i}@example.com") };
        let message = NewMessage { recipient, subject: Some("hello".into()), body: "hi".into(), metadata: vec![] };
        unit.enqueue("email", message).await.expect("enqueue");
    }
    unit.commit().await.expect("commit");
    let delivered = || async {
        let rows = host.db.outbox_recent(Some("DELIVERED"), Some("email"), 100).await.expect("outbox");
        let slow = rows.iter().any(|m| m.recipient.starts_with("slow@"));
        (rows.len() - usize::from(slow), slow)
    };
    common::eventually(
        "the fast messages delivered while the slow one is on its way",
        Duration::from_secs(10),
        || async { delivered().await == (30, false) },
    )
    .await;
    host.settle("the slow message delivered too", || async { delivered().await == (30, true) }).await;
}
on_both_backends!(a_slow_delivery_holds_back_only_itself, slow_delivery, FOUR_AT_ONCE);
