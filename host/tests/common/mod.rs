//! Test harness: starts the host in-process on port 0 with the real built
//! components and a real database — a fresh SQLite file, or a fresh
//! PostgreSQL database when `DATABASE_URL` points at a server.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::clock::Clock as _;
use switchyard::clock::ManualClock;
use switchyard::config::Config;
use switchyard::db::Database;
use switchyard::runtime::Runtime;
use switchyard::server::AdminAuth;
use switchyard::server::stats::Stats;
use switchyard_loadtests::simulator::Simulator;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The admin token test hosts accept.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How a test host delivers its outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// No connector components: messages stay PENDING.
    None,
    /// Connector components deliver to an in-process provider simulator.
    Simulator { dispatch: bool, concurrency: u32 },
    /// As `ON`, but the connectors' `allowed_hosts` omit the simulator.
    Forbidden,
}

impl Delivery {
    pub const ON: Delivery = Delivery::Simulator { dispatch: true, concurrency: 16 };
}

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where `just components` puts the built guests.
pub fn components_dir() -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../components/build"));
    assert!(
        dir.join("order-handler.wasm").is_file(),
        "built components not found in {}; run `just components` first",
        dir.display()
    );
    dir
}

/// The PostgreSQL server URL from `DATABASE_URL`, if it names one.
pub fn postgres_url() -> Option<String> {
    std::env::var("DATABASE_URL").ok().filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"))
}

/// The reference app plus every fixture, with limits that make each fixture
/// end the way its contract says.
pub fn test_config(database_url: &str) -> Config {
    config_with(database_url, "")
}

/// Connector components delivering to a simulator at `provider`.
pub fn delivery_config(database_url: &str, provider: &str, allowed: &str, dispatch: bool, concurrency: u32) -> Config {
    parse_config(&delivery_toml(database_url, provider, allowed, dispatch, concurrency))
}

/// The text of [`delivery_config`], with absolute component paths, for a
/// host started from a file.
pub fn delivery_toml(database_url: &str, provider: &str, allowed: &str, dispatch: bool, concurrency: u32) -> String {
    let mut extra = format!(
        r#"
        [outbox]
        dispatch = {dispatch}
        concurrency = {concurrency}
        batch_size = 64
        lease_ms = 60_000
        poll_interval_ms = 50
        "#
    );
    extra.push_str(&connectors_toml(
        "",
        provider,
        allowed,
        "max_attempts = 4\nbackoff_base_ms = 1_000\nbackoff_max_ms = 60_000",
    ));
    config_text(database_url, &extra)
}

/// The three connector components (their files under `dir`, or relative
/// when `dir` is empty) delivering to a simulator at `provider`, each with
/// its `[connectors.NAME]` carrying `retry` (its retry keys).
pub fn connectors_toml(dir: &str, provider: &str, allowed: &str, retry: &str) -> String {
    let dir = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    let mut text = String::new();
    for (channel, path) in [("email", "/email"), ("sms", "/sms"), ("webhook", "/webhook")] {
        text.push_str(&format!(
            r#"
            [components.connector-{channel}]
            path = "{dir}connector-{channel}.wasm"
            world = "connector"
            allowed_hosts = ["{allowed}"]
            config = {{ url = "http://{provider}{path}", timeout_ms = "2000" }}
            [connectors.{channel}]
            component = "connector-{channel}"
            {retry}
            "#
        ));
    }
    text
}

/// An order of one unit of `sku`, for the customer `key`.
pub fn order_json(key: &str, sku: &str) -> serde_json::Value {
    serde_json::json!({
        "customer": key,
        "email": format!("{key}@example.com"),
        "phone": "+15550100",
        "items": [{ "sku": sku, "qty": 1 }],
    })
}

/// Posts `key`'s order of one `sku`: its id and whether it was a replay,
/// when created or replayed; `None` for no answer or a 5xx (a client error
/// for a well-formed order fails the test).
pub async fn post_order(client: &reqwest::Client, url: &str, key: &str, sku: &str) -> Option<(String, bool)> {
    let response = client
        .post(format!("{url}/orders"))
        .header("idempotency-key", key)
        .json(&order_json(key, sku))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .ok()?;
    let status = response.status();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body: serde_json::Value = response.json().await.ok()?;
    match status {
        reqwest::StatusCode::CREATED | reqwest::StatusCode::OK => Some((body["id"].as_str()?.to_owned(), replayed)),
        other => {
            assert!(other.is_server_error(), "a client error for a well-formed order: {other} {body}");
            None
        }
    }
}

fn config_with(database_url: &str, extra: &str) -> Config {
    parse_config(&config_text(database_url, extra))
}

fn parse_config(text: &str) -> Config {
    match Config::parse(text, components_dir()) {
        Ok(config) => config,
        Err(err) => panic!("test config is invalid: {err:#}"),
    }
}

/// The test config's text: the reference app, every fixture and `extra`,
/// its component paths absolute.
fn config_text(database_url: &str, extra: &str) -> String {
    let dir = components_dir();
    let connectors =
        if extra.contains("[connectors.") { "" } else { "[connectors.email]\n[connectors.sms]\n[connectors.webhook]" };
    let text = format!(
        r#"
        [database]
        url = "{database_url}"
        max_connections = 8

        [limits]
        fuel = 50_000_000
        timeout_ms = 10_000
        memory_bytes = 16_777_216

        [components.order-handler]
        path = "order-handler.wasm"
        [components.hello]
        path = "hello.wasm"
        [components.trap]
        path = "trap.wasm"
        [components.loop-forever]
        path = "loop-forever.wasm"
        limits = {{ fuel = 5_000_000 }}
        [components.memory-hog]
        path = "memory-hog.wasm"
        limits = {{ memory_bytes = 4_194_304 }}
        [components.slow]
        path = "slow.wasm"
        limits = {{ fuel = 1_000_000_000_000_000, timeout_ms = 300 }}
        # The slow guest under a long deadline: keeps a request in flight.
        [components.spin]
        path = "slow.wasm"
        limits = {{ fuel = 1_000_000_000_000_000, timeout_ms = 60_000 }}
        admission = {{ max_concurrency = 2, max_queue = 2, queue_timeout_ms = 60_000 }}

        [[api_keys]]
        name = "alpha"
        key = "alpha-key"
        per_second = 1
        burst = 3
        [[api_keys]]
        name = "beta"
        key = "beta-key"

        [admin]
        max_upload_bytes = 1_048_576
        keep_versions = 3

        {connectors}
        {extra}

        [[routes]]
        method = "PUT"
        path = "/inventory/{{sku}}"
        component = "order-handler"
        [[routes]]
        method = "POST"
        path = "/orders"
        component = "order-handler"
        max_body_bytes = 8192
        [[routes]]
        method = "GET"
        path = "/orders/{{id}}"
        component = "order-handler"
        [[routes]]
        method = "GET"
        path = "/hello"
        component = "hello"
        [[routes]]
        method = "POST"
        path = "/trap"
        component = "trap"
        [[routes]]
        method = "GET"
        path = "/loop"
        component = "loop-forever"
        [[routes]]
        method = "GET"
        path = "/memory"
        component = "memory-hog"
        [[routes]]
        method = "GET"
        path = "/slow"
        component = "slow"
        [[routes]]
        method = "GET"
        path = "/spin"
        component = "spin"
        [[routes]]
        method = "GET"
        path = "/keyed/hello"
        component = "hello"
        api_key = true
        "#
    );
    // Component files (never route paths) are made absolute.
    text.lines()
        .map(|line| match line.trim().strip_prefix("path = \"") {
            Some(file) if file.ends_with(".wasm\"") => format!("path = \"{}/{file}", dir.display()),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running host and a handle on its database.
pub struct TestHost {
    pub url: String,
    pub db: Database,
    pub config: Config,
    pub runtime: Arc<Runtime>,
    /// The dashboard's rings (`sample` takes a point now).
    pub stats: Arc<Stats>,
    /// Drives breakers, backoff and leases.
    pub clock: ManualClock,
    /// The provider the connectors deliver to, when delivery is on.
    pub simulator: Option<Arc<Simulator>>,
    simulator_stop: Option<oneshot::Sender<()>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// Keeps the SQLite file alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
    /// A PostgreSQL database created for this test and dropped after it.
    pg_database: Option<(String, String)>,
}

impl TestHost {
    /// Starts a host on `backend`; `None` when the backend is unavailable
    /// (PostgreSQL without `DATABASE_URL`), after saying so.
    pub async fn start(backend: Backend) -> Option<TestHost> {
        Self::start_with(backend, Delivery::None).await
    }

    /// Starts a host whose outbox is delivered as `delivery` says.
    pub async fn start_with(backend: Backend, delivery: Delivery) -> Option<TestHost> {
        Self::start_configured(backend, delivery, "").await
    }

    /// Starts a host whose config adds `extra` TOML (components, routes,
    /// sections) to the test config.
    pub async fn start_with_toml(backend: Backend, extra: &str) -> Option<TestHost> {
        Self::start_configured(backend, Delivery::None, extra).await
    }

    async fn start_configured(backend: Backend, delivery: Delivery, extra: &str) -> Option<TestHost> {
        assert!(extra.is_empty() || delivery == Delivery::None, "extra TOML is only combined with Delivery::None");
        let (database_url, dir, pg_database) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("switchyard.db").display());
                (url, Some(dir), None)
            }
            Backend::Postgres => {
                let Some(server) = postgres_url() else {
                    eprintln!("skipping PostgreSQL variant: DATABASE_URL is not a postgres:// URL");
                    return None;
                };
                let (url, name) = create_postgres_database(&server).await;
                (url, None, Some((server, name)))
            }
        };
        let (config, simulator, simulator_stop) = match delivery {
            Delivery::None => (config_with(&database_url, extra), None, None),
            Delivery::Simulator { .. } | Delivery::Forbidden => {
                let simulator = Arc::new(Simulator::with_seed(7));
                let deliveries = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let control = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let provider = deliveries.local_addr().expect("addr").to_string();
                let (stop, stopped) = oneshot::channel::<()>();
                tokio::spawn(simulator.clone().serve(deliveries, control, async {
                    let _ = stopped.await;
                }));
                let config = match delivery {
                    Delivery::Simulator { dispatch, concurrency } => {
                        delivery_config(&database_url, &provider, &provider, dispatch, concurrency)
                    }
                    _ => delivery_config(&database_url, &provider, "127.0.0.1:1", true, 16),
                };
                (config, Some(simulator), Some(stop))
            }
        };
        let clock = ManualClock::starting_now();
        let (url, db, runtime, stats, shutdown, task) = serve(&config, &clock).await;
        Some(TestHost {
            url,
            db,
            config,
            runtime,
            stats,
            clock,
            simulator,
            simulator_stop,
            shutdown: Some(shutdown),
            task: Some(task),
            _dir: dir,
            pg_database,
        })
    }

    /// Stops the server and starts a new one on the same database, as a
    /// process restart would.
    pub async fn restart(mut self) -> TestHost {
        self.stop_server().await;
        let (url, db, runtime, stats, shutdown, task) = serve(&self.config, &self.clock).await;
        self.url = url;
        self.db = db;
        self.runtime = runtime;
        self.stats = stats;
        self.shutdown = Some(shutdown);
        self.task = Some(task);
        self
    }

    async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran cleanly");
        }
        self.db.close().await;
    }
}

type Served = (String, Database, Arc<Runtime>, Arc<Stats>, oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>);

async fn serve(config: &Config, clock: &ManualClock) -> Served {
    let mut state = switchyard::prepare_with_clock(config, Arc::new(clock.clone())).await.expect("host prepares");
    state.admin = Arc::new(AdminAuth::new(Some(ADMIN_TOKEN.to_owned()), false));
    let db = state.db.clone();
    let runtime = state.runtime.clone();
    let stats = state.stats.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel();
    let serve_config = config.clone();
    let task = tokio::spawn(async move {
        switchyard::serve(&serve_config, state, listener, async {
            let _ = rx.await;
        })
        .await
    });
    (url, db, runtime, stats, tx, task)
}

impl TestHost {
    /// Sets a product's stock and price through the order handler.
    pub async fn put_inventory(&self, sku: &str, stock: u64, price_cents: u64) {
        let response = Self::client()
            .put(format!("{}/inventory/{sku}", self.url))
            .json(&serde_json::json!({ "stock": stock, "price_cents": price_cents }))
            .send()
            .await
            .expect("PUT inventory");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{}", response.text().await.unwrap_or_default());
    }

    /// Calls the admin API with the test token; the status and JSON body.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let response = Self::client()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request");
        let status = response.status();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The name of this test's PostgreSQL database, if it has one.
    pub fn pg_database_name(&self) -> Option<String> {
        self.pg_database.as_ref().map(|(_, name)| name.clone())
    }

    pub fn client() -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
    }

    /// Stops the server and drops a per-test PostgreSQL database.
    pub async fn stop(mut self) {
        self.stop_server().await;
        if let Some(stop) = self.simulator_stop.take() {
            let _ = stop.send(());
        }
        if let Some((server, name)) = self.pg_database.take() {
            drop_postgres_database(&server, &name).await;
        }
    }
}

/// An executable on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// How far [`TestHost::settle`] moves the injected clock while no delivery
/// is in flight: far below the 60 s lease, so a claim taken between the look
/// and the move cannot expire.
const SETTLE_STEP_MS: i64 = 1_000;

impl TestHost {
    /// Waits until `done` holds, for outbox work. A delivery that fails
    /// transiently on a loaded machine (a provider call over its timeout) is
    /// retried after a backoff on the injected clock, and an opened breaker
    /// waits on that clock too; nothing else moves it. So whenever no message
    /// is leased, the clock moves on a step and the dispatcher is woken, and
    /// the wait ends on the event itself, never on a guess at how long the
    /// machine needs. The wall-clock bound only catches a real hang.
    pub async fn settle<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done().await {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            let now = self.clock.now_millis();
            let messages = self.db.outbox_messages(None, 100_000).await.expect("outbox messages");
            if !messages.iter().any(|m| m.lease_until.is_some_and(|until| until > now)) {
                self.clock.advance(SETTLE_STEP_MS);
                self.db.signal_outbox();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `check` until it returns true, failing after `limit`. For
/// conditions that become true through background work (the dispatcher);
/// nothing here asserts on time.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_pool(server: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(server).await.expect("connect to PostgreSQL")
}

/// A fresh database on the PostgreSQL server at `server`: its URL and name.
pub async fn create_postgres_database(server: &str) -> (String, String) {
    let name = format!("switchyard_test_{}", uuid::Uuid::new_v4().simple());
    let pool = admin_pool(server).await;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create test database");
    pool.close().await;
    // Replace the database path of the server URL, keeping any query.
    let (base, query) = server.split_once('?').map(|(b, q)| (b, Some(q))).unwrap_or((server, None));
    let prefix = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    let url = match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    };
    (url, name)
}

/// Drops a database [`create_postgres_database`] made.
pub async fn drop_postgres_database(server: &str, name: &str) {
    let pool = admin_pool(server).await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await;
    pool.close().await;
}

/// Declares `#[tokio::test]`s running `$body(host)` on SQLite and on
/// PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:path) => {
        $crate::on_both_backends!($name, $body, common::Delivery::None);
    };
    ($name:ident, $body:path, $delivery:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let host = common::TestHost::start_with(common::Backend::Sqlite, $delivery).await.expect("sqlite host");
                $body(&host).await;
                host.stop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(host) = common::TestHost::start_with(common::Backend::Postgres, $delivery).await else {
                    return;
                };
                $body(&host).await;
                host.stop().await;
            }
        }
    };
}

/// One sample of the exposition: name and labels → value.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Every sample of a Prometheus exposition; a line that does not parse fails the test.
pub fn parse_metrics(text: &str) -> Samples {
    let series = switchyard_loadtests::hostmetrics::parse(text);
    let lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
    assert_eq!(series.len(), lines, "every sample line parses");
    series.into_iter().map(|s| ((s.name, s.labels), s.value)).collect()
}

pub fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.get(&(name.to_owned(), labels)).copied()
}

/// A built component's bytes.
pub fn component_bytes(name: &str) -> Vec<u8> {
    std::fs::read(components_dir().join(format!("{name}.wasm"))).unwrap()
}

/// The same component with a custom section appended: identical behaviour,
/// a different content hash — a second version to swap to.
pub fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    switchyard_loadtests::variant::with_custom_section(bytes, "switchyard-test-variant", tag.as_bytes())
}

/// `PUT /admin/components/{name}` as the test suite; status and JSON body.
pub async fn deploy(host: &TestHost, name: &str, bytes: Vec<u8>) -> (reqwest::StatusCode, serde_json::Value) {
    let response = TestHost::client()
        .put(format!("{}/admin/components/{name}", host.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-switchyard-actor", "test-suite")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// Collects every log line in memory.
#[allow(unused_imports)] // only the log tests read logs
pub use switchyard::telemetry::Captured as LogCapture;

/// `hello-http` behind an any-method catch-all, and behind a POST route
/// with a small body limit.
pub const HELLO_HTTP: &str = r#"
    [components.hello-http]
    path = "hello-http.wasm"
    world = "wasi-http"

    [[routes]]
    method = "*"
    path = "/http/{*rest}"
    component = "hello-http"
    [[routes]]
    method = "POST"
    path = "/small"
    component = "hello-http"
    max_body_bytes = 1024
"#;

/// The active version of `component`.
pub fn active_version_of(host: &TestHost, component: &str) -> String {
    host.runtime.registry().list().into_iter().find(|c| c.name == component).unwrap().version
}

/// One scrape of the host's `/metrics`.
pub async fn scrape_metrics(host: &TestHost) -> Samples {
    let response = TestHost::client().get(format!("{}/metrics", host.url)).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    parse_metrics(&response.text().await.unwrap())
}

/// `component_invocations_total` of `component`'s active version by outcome.
pub fn invocations_of(host: &TestHost, samples: &Samples, component: &str, outcome: &str) -> f64 {
    let version = active_version_of(host, component);
    sample(
        samples,
        "component_invocations_total",
        &[("component", component), ("version", &version), ("outcome", outcome)],
    )
    .unwrap_or_else(|| panic!("no invocation series for {component}/{outcome}"))
}

/// Invocations of `component`'s active version across every outcome.
pub fn all_invocations_of(host: &TestHost, samples: &Samples, component: &str) -> f64 {
    switchyard::runtime::Outcome::ALL
        .iter()
        .map(|outcome| invocations_of(host, samples, component, outcome.as_str()))
        .sum()
}

/// Scrapes once `component` has `n` recorded invocations in all. A
/// `wasi:http` invocation is recorded when its guest ends, possibly after
/// the client has the whole body.
pub async fn settled_invocations(host: &TestHost, component: &str, n: f64) -> Samples {
    eventually(&format!("{n} recorded invocations of {component}"), Duration::from_secs(10), || async {
        all_invocations_of(host, &scrape_metrics(host).await, component) >= n
    })
    .await;
    scrape_metrics(host).await
}

/// `n` bytes of a pattern that does not repeat at chunk boundaries.
pub fn patterned(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Asks `path` (a `wasi:http` route of `component`) for a body the guest
/// keeps open for ten minutes (`?linger_ms=600000`), leaves once "hello" has
/// arrived, and checks that the guest was stopped and recorded at once, not
/// at its deadline, and that its admission slot is free.
pub async fn assert_stopped_when_the_client_leaves(host: &TestHost, path: &str, component: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = host.url.trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!("GET {path}?linger_ms=600000 HTTP/1.1\r\nhost: {address}\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("hello") {
        let mut chunk = [0u8; 1024];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before the body: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    drop(client);

    let samples = settled_invocations(host, component, 1.0).await;
    assert_eq!(invocations_of(host, &samples, component, "error"), 1.0, "recorded as an error");
    assert_eq!(invocations_of(host, &samples, component, "timeout"), 0.0, "not left to time out");
    let gate = host.runtime.admissions().find(|(name, _)| *name == component).map(|(_, gate)| gate.clone());
    assert_eq!(gate.expect("admission gate").running(), 0, "the admission slot is released");
}
