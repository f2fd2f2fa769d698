//! Crash consistency, on SQLite and PostgreSQL: the real `switchyard`
//! binary serves the reference app, its connectors delivering to an
//! in-process provider simulator, while clients post orders with
//! Idempotency-Keys, and is killed with SIGKILL three times mid-traffic.
//! Restarted on the same database each time, it must lose nothing and
//! double nothing: every key retried at the end maps to exactly one order,
//! replays return it, the stock and the outbox match the orders exactly, and
//! every message reaches the simulator's deduplicating sink once (transport
//! duplicates, a delivery retried after its receipt was lost, are counted).
//!
//! The kills come after fixed numbers of answered orders, not after times,
//! so where they land depends on the scheduler but their count does not. A
//! client whose request got no answer retries it with the same key, as a
//! client holding an Idempotency-Key may; then every key is posted once
//! more.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;
use switchyard_loadtests::simulator::Simulator;
use tokio::net::TcpListener;

use common::{Backend, create_postgres_database, delivery_toml, drop_postgres_database, postgres_url};

/// Orders, each under its own key.
const KEYS: usize = 240;
/// Clients posting at once.
const CLIENTS: usize = 8;
/// Answered orders after which the host is killed.
const KILL_AFTER: [u64; 3] = [40, 100, 160];
/// Stock of the one sku every order takes one of.
const STOCK: u64 = 100_000;
const SKU: &str = "crash-widget";
/// Bound on a host's start (it compiles its components).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on the outbox draining to the simulator at the end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The host process, killed and restarted on one database and port.
struct Host {
    child: Child,
    config: PathBuf,
    url: String,
}

impl Host {
    async fn start(config: &Path, url: &str) -> Host {
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .env("SWITCHYARD_ADMIN_TOKEN", common::ADMIN_TOKEN)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start switchyard");
        let mut host = Host { child, config: config.to_owned(), url: url.to_owned() };
        host.wait_ready().await;
        host
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let ready = format!("{}/health/ready", self.url);
        loop {
            assert!(self.child.try_wait().unwrap().is_none(), "the host exited while starting");
            if let Ok(response) = reqwest::get(&ready).await
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(Instant::now() < deadline, "the host did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, then a new process on the same database and port.
    async fn crash_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        *self = Host::start(&self.config.clone(), &self.url.clone()).await;
    }
}

/// Stops the host whether the test ends or fails.
impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the clients saw, per key: every order id an answer named.
#[derive(Default)]
struct Seen {
    ids: BTreeMap<String, BTreeSet<String>>,
    /// Requests that got no answer (the host died under them, or was not
    /// back yet) or a 5xx, each retried.
    unanswered: u64,
}

/// A client retries a request that got no answer this often, this long apart,
/// as a client holding an Idempotency-Key may.
const RETRIES: u32 = 2_000;
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Posts `key`'s order; the order id if it was created or replayed.
async fn post(client: &reqwest::Client, url: &str, key: &str) -> Option<(String, bool)> {
    common::post_order(client, url, key, SKU).await
}

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(pool).await.unwrap().try_get::<i64, _>(0).unwrap()
}

async fn crash_test(backend: Backend) {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let (database_url, pg) = match backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.path().join("crash.db").display()), None),
        Backend::Postgres => {
            let Some(server) = postgres_url() else {
                eprintln!("skipping PostgreSQL variant: DATABASE_URL is not a postgres:// URL");
                return;
            };
            let (url, name) = create_postgres_database(&server).await;
            (url, Some((server, name)))
        }
    };

    let simulator = Arc::new(Simulator::with_seed(11));
    let deliveries = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = deliveries.local_addr().unwrap().to_string();
    tokio::spawn(simulator.clone().serve(deliveries, control, std::future::pending()));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("switchyard.toml");
    let text = delivery_toml(&database_url, &provider, &provider, true, 16);
    std::fs::write(&config, format!("{text}\n[server]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let mut host = Host::start(&config, &url).await;

    let client = reqwest::Client::new();
    let stocked = client
        .put(format!("{url}/inventory/{SKU}"))
        .json(&json!({ "stock": STOCK, "price_cents": 250 }))
        .send()
        .await
        .unwrap();
    assert_eq!(stocked.status(), StatusCode::OK);

    // Clients post every key once while the host is killed under them.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let answered = Arc::new(AtomicU64::new(0));
    let keys: Vec<String> = (0..KEYS).map(|i| format!("crash-{i:04}")).collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, url, seen, answered) = (client.clone(), url.clone(), seen.clone(), answered.clone());
            let mine: Vec<String> = keys.iter().skip(c).step_by(CLIENTS).cloned().collect();
            tokio::spawn(async move {
                for key in mine {
                    for _ in 0..RETRIES {
                        if let Some((id, _)) = post(&client, &url, &key).await {
                            seen.lock().unwrap().ids.entry(key.clone()).or_default().insert(id);
                            answered.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        seen.lock().unwrap().unanswered += 1;
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            })
        })
        .collect();
    let mut kills = 0;
    for after in KILL_AFTER {
        let deadline = Instant::now() + Duration::from_secs(120);
        while answered.load(Ordering::Relaxed) < after {
            assert!(Instant::now() < deadline, "orders stopped being answered before kill {}", kills + 1);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        host.crash_and_restart().await;
        kills += 1;
    }
    for client in clients {
        client.await.unwrap();
    }

    // Every key once more, on a host that stays up: each gets its order.
    let mut replays = 0;
    for key in &keys {
        let (id, replayed) = post(&client, &url, key).await.unwrap_or_else(|| panic!("{key}: no answer on retry"));
        replays += u64::from(replayed);
        seen.lock().unwrap().ids.entry(key.clone()).or_default().insert(id);
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let doubled: Vec<_> = seen.ids.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(doubled.is_empty(), "keys answered with more than one order: {doubled:?}");
    assert_eq!(seen.ids.len(), KEYS, "every key has its order");
    for ids in seen.ids.values() {
        let id = ids.first().unwrap();
        let response = client.get(format!("{url}/orders/{id}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "order {id} was answered but is gone");
    }

    // The database holds exactly those orders, their stock and their messages.
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&database_url).await.unwrap();
    let orders = count(&pool, "SELECT COUNT(*) FROM kv WHERE component = 'order-handler' AND key LIKE 'order/%'").await;
    assert_eq!(orders, KEYS as i64, "one order row per key");
    let level =
        sqlx::query(&format!("SELECT value FROM kv WHERE component = 'order-handler' AND key = 'inventory/{SKU}'"))
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get::<Vec<u8>, _>(0)
            .unwrap();
    let level: Value = serde_json::from_slice(&level).unwrap();
    assert_eq!(level["stock"], STOCK - KEYS as u64, "one unit of stock per order");
    let messages = count(&pool, "SELECT COUNT(*) FROM outbox").await;
    assert_eq!(messages, 3 * KEYS as i64, "three messages per order");

    // Every message reaches the provider once.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while count(&pool, "SELECT COUNT(*) FROM outbox WHERE status = 'DELIVERED'").await < messages {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = count(&pool, "SELECT COUNT(*) FROM outbox WHERE status = 'DEAD'").await;
    assert_eq!(dead, 0);
    pool.close().await;
    let received = simulator.received();
    assert_eq!(received.unique, 3 * KEYS as u64, "each message delivered once, in effect");
    eprintln!(
        "crash consistency ({backend:?}): {kills} kills, {KEYS} keys, {orders} orders, 0 lost, 0 doubled; \
         {} requests unanswered during kills, {replays} of {KEYS} final retries replayed, {} messages, \
         {} transport duplicates",
        seen.unanswered, received.unique, received.duplicates
    );

    drop(host);
    if let Some((server, name)) = pg {
        drop_postgres_database(&server, &name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_sqlite() {
    crash_test(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_postgres() {
    crash_test(Backend::Postgres).await;
}
