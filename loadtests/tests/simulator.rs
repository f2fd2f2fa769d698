//! The provider simulator's contract, over real sockets on 127.0.0.1: what
//! each delivery is answered with under each fault, what the ledger counts,
//! and that an outage really refuses connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard_loadtests::simulator::{Channel, Received, Simulator};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A simulator served on ephemeral ports, stopped when the test drops it.
struct Running {
    simulator: Arc<Simulator>,
    delivery: SocketAddr,
    control: SocketAddr,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    async fn start(seed: u64) -> Running {
        let simulator = Arc::new(Simulator::with_seed(seed));
        let delivery_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let delivery = delivery_listener.local_addr().unwrap();
        let control = control_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&simulator).serve(delivery_listener, control_listener, async move {
            let _ = stopped.await;
        }));
        // No pooling: each request opens its own connection, so an outage is
        // observed by the very next request rather than by a reused one.
        let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
        Running { simulator, delivery, control, client, stop: Some(stop), task: Some(task) }
    }

    async fn email(&self, key: Option<&str>, to: &str) -> reqwest::Result<reqwest::Response> {
        let body = json!({"to": to, "subject": "Order confirmed", "body": "Thanks!", "metadata": [["order", "o-1"]]});
        self.deliver("/email", key, body).await
    }

    async fn sms(&self, key: Option<&str>, to: &str) -> reqwest::Result<reqwest::Response> {
        self.deliver("/sms", key, json!({"to": to, "body": "Your order shipped"})).await
    }

    async fn webhook(&self, key: Option<&str>, path: &str) -> reqwest::Result<reqwest::Response> {
        let mut request = self
            .client
            .post(format!("http://{}/webhook/{path}", self.delivery))
            .header("content-type", "application/xml")
            .body("<order id=\"o-1\"/>");
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await
    }

    async fn deliver(&self, path: &str, key: Option<&str>, body: Value) -> reqwest::Result<reqwest::Response> {
        let mut request =
            self.client.post(format!("http://{}{path}", self.delivery)).header("x-attempt", "1").json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await
    }

    async fn control(&self, path: &str, body: Value) -> reqwest::Response {
        self.client.post(format!("http://{}{path}", self.control)).json(&body).send().await.unwrap()
    }

    async fn received_over_http(&self) -> Received {
        let response = self.client.get(format!("http://{}/received", self.control)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_delivery_on_each_channel_succeeds_and_is_counted() {
    let sim = Running::start(1).await;

    let email = sim.email(Some("order-1:email"), "ada@example.com").await.unwrap();
    assert_eq!(email.status(), StatusCode::OK);
    let email = json_of(email).await;
    assert!(email["id"].as_str().unwrap().starts_with("em_"), "{email}");
    assert_eq!(email["duplicate"], false);

    let sms = sim.sms(Some("order-1:sms"), "+15550100").await.unwrap();
    assert_eq!(sms.status(), StatusCode::OK);
    assert!(json_of(sms).await["id"].as_str().unwrap().starts_with("sms_"));

    let webhook = sim.webhook(Some("order-1:webhook"), "hooks/orders").await.unwrap();
    assert_eq!(webhook.status(), StatusCode::ACCEPTED);
    assert!(json_of(webhook).await["id"].as_str().unwrap().starts_with("wh_"));

    let received = sim.simulator.received();
    assert_eq!((received.unique, received.duplicates, received.requests, received.failed), (3, 0, 3, 0));
    for channel in Channel::ALL {
        assert_eq!(received.channels.get(channel).unique, 1, "{channel}");
    }
    assert_eq!(sim.received_over_http().await, received);

    let ids = sim.client.get(format!("http://{}/received/ids?channel=sms", sim.control)).send().await.unwrap();
    assert_eq!(json_of(ids).await, json!({"ids": ["order-1:sms"]}));
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_same_id_and_counts_a_duplicate() {
    let sim = Running::start(2).await;

    let first = json_of(sim.email(Some("k-1"), "ada@example.com").await.unwrap()).await;
    let again = sim.email(Some("k-1"), "ada@example.com").await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again = json_of(again).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);

    // A repeated webhook is answered 200, not 202: it was not queued again.
    assert_eq!(sim.webhook(Some("k-1"), "a").await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(sim.webhook(Some("k-1"), "a").await.unwrap().status(), StatusCode::OK);

    let received = sim.simulator.received();
    assert_eq!((received.unique, received.duplicates), (2, 2));
    assert_eq!((received.channels.email.unique, received.channels.email.duplicates), (1, 1));
    assert_eq!(received.channels.sms.unique, 0);
    assert_eq!(sim.simulator.received_ids(Channel::Email), vec!["k-1".to_owned()]);
}

#[tokio::test]
async fn a_delivery_without_an_idempotency_key_is_a_bad_request() {
    let sim = Running::start(3).await;

    for response in [
        sim.email(None, "ada@example.com").await.unwrap(),
        sim.sms(None, "+15550100").await.unwrap(),
        sim.webhook(None, "hooks").await.unwrap(),
    ] {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(json_of(response).await["error"].as_str().unwrap().contains("Idempotency-Key"));
    }
    let malformed = sim.deliver("/sms", Some("k"), json!({"to": "+15550100"})).await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    let received = sim.simulator.received();
    assert_eq!((received.unique, received.requests, received.failed), (0, 4, 4));
}

#[tokio::test]
async fn fail_mode_fails_the_configured_share_of_requests() {
    let sim = Running::start(4).await;

    sim.simulator.set_fail(None, 1.0, 503).unwrap();
    for i in 0..10 {
        let response = sim.email(Some(&format!("all-{i}")), "ada@example.com").await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(sim.simulator.received().unique, 0);
    assert_eq!(sim.simulator.received().failed, 10);

    // Through the control API this time; rate 0 switches failures off.
    assert_eq!(sim.control("/control/fail", json!({"channel": null, "rate": 0.0})).await.status(), 204);
    for i in 0..10 {
        let response = sim.sms(Some(&format!("none-{i}")), "+15550100").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(sim.simulator.received().unique, 10);
}

#[tokio::test]
async fn a_seeded_half_failure_rate_fails_some_requests_but_not_all() {
    let sim = Running::start(5).await;
    sim.simulator.set_fail(Some(Channel::Webhook), 0.5, 500).unwrap();

    let mut failed = 0;
    for i in 0..200 {
        let status = sim.webhook(Some(&format!("half-{i}")), "hooks").await.unwrap().status();
        match status {
            StatusCode::INTERNAL_SERVER_ERROR => failed += 1,
            StatusCode::ACCEPTED => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(0 < failed && failed < 200, "{failed} of 200 failed");
    assert_eq!(sim.simulator.received().channels.webhook.unique, 200 - failed);
    // The other channels were not configured to fail.
    assert_eq!(sim.email(Some("e"), "ada@example.com").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn an_injected_429_asks_the_caller_to_retry_after_a_second() {
    let sim = Running::start(6).await;
    sim.simulator.set_fail(Some(Channel::Sms), 1.0, 429).unwrap();

    let response = sim.sms(Some("k"), "+15550100").await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test]
async fn invalid_control_requests_are_refused() {
    let sim = Running::start(7).await;

    for body in [
        json!({"rate": 1.5}),
        json!({"rate": -0.1}),
        json!({"rate": 0.5, "status": 200}),
        json!({"rate": 0.5, "channel": "pigeon"}),
        json!({"rate": "half"}),
        json!({"rate": 0.5, "unknown": true}),
    ] {
        let response = sim.control("/control/fail", body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(json_of(response).await["error"].is_string(), "{body}");
    }
    assert_eq!(sim.control("/control/reject", json!({"pattern": ""})).await.status(), StatusCode::BAD_REQUEST);
    assert!(sim.simulator.set_fail(None, f64::NAN, 503).is_err());

    // Nothing was switched on by the refused requests.
    assert_eq!(sim.email(Some("k"), "ada@example.com").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_reject_pattern_refuses_matching_recipients_only() {
    let sim = Running::start(8).await;
    assert_eq!(sim.control("/control/reject", json!({"pattern": "@bounce."})).await.status(), 204);

    let rejected = sim.email(Some("k-1"), "nobody@bounce.example").await.unwrap();
    assert_eq!(rejected.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(rejected).await, json!({"error": "recipient rejected"}));
    assert_eq!(sim.email(Some("k-2"), "ada@example.com").await.unwrap().status(), StatusCode::OK);

    // For a webhook the recipient is its path.
    sim.simulator.reject_recipients(Some("gone".to_owned())).unwrap();
    assert_eq!(sim.webhook(Some("k-3"), "hooks/gone").await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(sim.webhook(Some("k-4"), "hooks/live").await.unwrap().status(), StatusCode::ACCEPTED);

    sim.simulator.reject_recipients(None).unwrap();
    assert_eq!(sim.webhook(Some("k-3"), "hooks/gone").await.unwrap().status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_channel_down_answers_503_while_the_others_deliver() {
    let sim = Running::start(9).await;
    assert_eq!(sim.control("/control/down", json!({"down": true, "channel": "sms"})).await.status(), 204);

    assert_eq!(sim.sms(Some("k"), "+15550100").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.email(Some("k"), "ada@example.com").await.unwrap().status(), StatusCode::OK);
    assert_eq!(sim.webhook(Some("k"), "hooks").await.unwrap().status(), StatusCode::ACCEPTED);

    sim.simulator.set_channel_down(Channel::Sms, false);
    assert_eq!(sim.sms(Some("k"), "+15550100").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn going_down_refuses_connections_until_it_is_up_again_on_the_same_port() {
    let sim = Running::start(10).await;
    assert_eq!(sim.email(Some("before"), "ada@example.com").await.unwrap().status(), StatusCode::OK);

    sim.simulator.set_down(true).unwrap();
    let refused = sim.email(Some("during"), "ada@example.com").await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    // The control API is on its own socket and keeps answering.
    let health = sim.client.get(format!("http://{}/health", sim.control)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(sim.simulator.delivery_addr(), Some(sim.delivery));

    sim.simulator.set_down(false).unwrap();
    assert_eq!(sim.email(Some("after"), "ada@example.com").await.unwrap().status(), StatusCode::OK);

    // The same through the control API.
    assert_eq!(sim.control("/control/down", json!({"down": true})).await.status(), 204);
    assert!(sim.sms(Some("during"), "+15550100").await.unwrap_err().is_connect());
    assert_eq!(sim.received_over_http().await.unique, 2);
    assert_eq!(sim.control("/control/down", json!({"down": false})).await.status(), 204);
    assert_eq!(sim.sms(Some("after"), "+15550100").await.unwrap().status(), StatusCode::OK);

    assert_eq!(sim.simulator.received_ids(Channel::Email), vec!["after".to_owned(), "before".to_owned()]);
}

#[tokio::test]
async fn a_request_in_flight_when_deliveries_go_down_is_still_answered() {
    let sim = Running::start(11).await;
    sim.simulator.set_latency(300);
    let client = sim.client.clone();
    let url = format!("http://{}/sms", sim.delivery);
    let in_flight = tokio::spawn(async move {
        client.post(url).header("Idempotency-Key", "slow").json(&json!({"to": "+15550100", "body": "hi"})).send().await
    });
    // Requests are counted on arrival, before the latency is slept out.
    while sim.simulator.received().requests == 0 {
        assert!(!in_flight.is_finished(), "the request ended before it was counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.simulator.set_down(true).unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap().status(), StatusCode::OK);
    assert!(sim.sms(Some("refused"), "+15550100").await.unwrap_err().is_connect());
}

#[tokio::test]
async fn added_latency_delays_the_answer() {
    let sim = Running::start(12).await;
    assert_eq!(sim.control("/control/slow", json!({"latency_ms": 100})).await.status(), 204);

    let started = Instant::now();
    assert_eq!(sim.email(Some("k"), "ada@example.com").await.unwrap().status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(100), "answered after {:?}", started.elapsed());
}

#[tokio::test]
async fn reset_forgets_deliveries_and_switches_every_fault_off() {
    let sim = Running::start(13).await;
    assert_eq!(sim.email(Some("k"), "ada@example.com").await.unwrap().status(), StatusCode::OK);
    sim.simulator.set_fail(None, 1.0, 500).unwrap();
    sim.simulator.set_channel_down(Channel::Sms, true);
    sim.simulator.reject_recipients(Some("ada".to_owned())).unwrap();
    sim.simulator.set_down(true).unwrap();

    assert_eq!(sim.control("/control/reset", json!({})).await.status(), 204);
    assert_eq!(sim.simulator.received(), Received::default());
    let again = sim.email(Some("k"), "ada@example.com").await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(json_of(again).await["duplicate"], false);
    assert_eq!(sim.sms(Some("k"), "+15550100").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn serve_returns_once_shutdown_resolves() {
    let sim = Running::start(14).await;
    let (delivery, control) = (sim.delivery, sim.control);
    tokio::time::timeout(Duration::from_secs(10), sim.stop()).await.unwrap().unwrap();
    // Both sockets are closed.
    assert!(tokio::net::TcpStream::connect(delivery).await.is_err());
    assert!(tokio::net::TcpStream::connect(control).await.is_err());
}
