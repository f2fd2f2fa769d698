//! `orders-native` answers the order-handler component's contract, so
//! `just bench-orders` compares like with like: an order is 201, its replay
//! with the same Idempotency-Key names the same order, the last unit of stock
//! goes to exactly one of two racing orders and the other is 409, an unknown
//! sku is 404, and `GET /orders/{id}` is 200 or 404. On a fresh SQLite file,
//! and on a fresh PostgreSQL database when `DATABASE_URL` names a server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long the binary may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary on a free loopback port, killed by its PID when dropped.
struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(database_url: &str) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_orders-native"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--database-url", database_url])
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while server.client.get(format!("{}/orders/ord_0", server.base)).send().await.is_err() {
            assert!(Instant::now() < deadline, "orders-native did not answer within {START_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    async fn stock(&self, sku: &str, stock: u64) -> StatusCode {
        let body = json!({ "stock": stock, "price_cents": 250 });
        self.client.put(format!("{}/inventory/{sku}", self.base)).json(&body).send().await.unwrap().status()
    }

    async fn order(&self, key: &str, sku: &str) -> (StatusCode, Value) {
        let body = json!({
            "customer": "Ada", "email": "ada@example.com", "phone": "+44 20 7946 0000",
            "items": [{ "sku": sku, "qty": 1 }],
        });
        let response = self
            .client
            .post(format!("{}/orders", self.base))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn get(&self, id: &str) -> (StatusCode, Value) {
        let response = self.client.get(format!("{}/orders/{id}", self.base)).send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn answers_the_contract(database_url: &str) {
    let server = Server::start(database_url).await;
    assert_eq!(server.stock("widget", 100).await, StatusCode::OK);

    let (status, created) = server.order("key-1", "widget").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["total_cents"], 250);
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, replay) = server.order("key-1", "widget").await;
    assert_eq!((status, &replay["id"]), (StatusCode::CREATED, &created["id"]), "a replay names the same order");

    let (status, order) = server.get(&id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["items"], json!([{ "sku": "widget", "qty": 1, "price_cents": 250 }]));
    assert_eq!(server.get("ord_999999").await.0, StatusCode::NOT_FOUND);

    assert_eq!(server.order("key-2", "no-such-sku").await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.stock("last-one", 1).await, StatusCode::OK);
    let (a, b) = tokio::join!(server.order("race-a", "last-one"), server.order("race-b", "last-one"));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT], "the last unit goes to one order");
}

#[tokio::test]
async fn answers_the_order_contract_on_sqlite() {
    let path = std::env::temp_dir().join(format!("orders-native-{}.db", uuid::Uuid::new_v4().simple()));
    answers_the_contract(&format!("sqlite://{}", path.display())).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn answers_the_order_contract_on_postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL unset: skipping PostgreSQL");
        return;
    };
    if !url.starts_with("postgres") {
        return;
    }
    let admin = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    let name = format!("orders_native_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
    answers_the_contract(&format!("{base}/{name}")).await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await;
}
