//! The `switchyard.toml` schema and its validation.
//!
//! Everything a running host needs to know about the app — where to listen,
//! which database, which components with which limits, which routes — is read
//! here, checked as a whole, and handed on as plain data. Validation happens
//! before anything binds a socket, so a bad file stops `serve` and `check`
//! with a message naming the file and the problem. This module knows nothing
//! of wasmtime, axum or SQL.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::resilience::BreakerConfig;

/// Component instances the engine's pool holds at once. Each in-flight
/// invocation holds one; the admission defaults divide them between
/// components, so they are sized here and the runtime builds its pool to it.
pub const POOL_INSTANCES: u32 = 512;

/// Connectors may reserve at most half the pool; handlers keep the rest.
const POOL_HALF: usize = POOL_INSTANCES as usize / 2;

/// The connector config key for the timeout of its HTTP calls (connect,
/// first byte, between bytes), in milliseconds; see `connector-kit`.
pub const TRANSPORT_TIMEOUT_KEY: &str = "timeout_ms";
/// A connector's transport timeout when it sets none: this share (%) of its
/// deadline, leaving the rest for the call around it.
const TRANSPORT_SHARE_OF_DEADLINE: u64 = 75;

/// Where `serve` listens unless the config or `SWITCHYARD_LISTEN` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The embedded default database: a SQLite file next to the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://switchyard.db";
/// Enough for a busy SQLite or a modest PostgreSQL share.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// Largest request body routed to a component unless a route says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Fuel per invocation: a few milliseconds of straight-line guest code.
pub const DEFAULT_FUEL: u64 = 50_000_000;
/// Wall-clock bound on one invocation, host calls included.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Linear memory one instance may grow to.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// Longest any `*_ms` setting may be: a week. No timeout, lease or step
/// needs longer, and a deadline of `now` plus anything larger risks
/// overflowing the clock: a panic on every request.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Defaults for every component; each component may override any of them.
    #[serde(default)]
    pub limits: Limits,
    /// Component name → where its wasm lives and how it runs.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentConfig>,
    /// Connector name → the component that delivers its messages. Handlers
    /// may enqueue only to connectors named here.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// How the dispatcher drains the outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub rate_limits: RateLimitConfig,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// How this replica finds the others sharing its database.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The directory relative paths are resolved against: the config file's.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Default request body limit; larger bodies get 413 before any
    /// component runs.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most request headers accepted (431 above).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Most bytes of request headers accepted, names and values (431 above).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Bound on a whole request at the HTTP layer (408 past it), above any
    /// component's own deadline.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long a request's line and headers may take to arrive, from the
    /// connection's start or the previous response; past it the connection
    /// is closed. Bounds slow headers and idle connections, which the
    /// request timeout cannot see: no request exists yet.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// On shutdown, how long in-flight requests may take to finish.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_headers: default_max_headers(),
            max_header_bytes: default_max_header_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            drain_timeout_ms: default_drain_timeout_ms(),
        }
    }
}

/// A request rate: sustained per second, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub per_second: u32,
    pub burst: u32,
}

/// Rate limits for routes that require an API key, and optionally per
/// client IP for routes that do not.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// The quota of keys that do not set their own.
    pub default: Quota,
    /// If set, keyless routes are limited per client IP.
    pub per_ip: Option<Quota>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { default: Quota { per_second: 100, burst: 200 }, per_ip: None }
    }
}

/// A caller allowed on routes with `api_key = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who the key belongs to; logged, never the key itself.
    pub name: String,
    /// The key, or the environment variable holding it (preferred: keeps
    /// secrets out of the file).
    pub key: Option<String>,
    pub key_env: Option<String>,
    /// Overrides `[rate_limits] default`.
    pub per_second: Option<u32>,
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` (created if missing) or `postgres://…`.
    #[serde(default = "default_database_url")]
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: default_database_url(), max_connections: DEFAULT_MAX_CONNECTIONS }
    }
}

/// Per-invocation resource limits. In the file every field is optional; a
/// component's table overrides the global `[limits]`, which overrides the
/// built-in defaults.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub fuel: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// Limits with every default filled in, as the runtime uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub fuel: u64,
    pub timeout_ms: u64,
    pub memory_bytes: u64,
}

impl Limits {
    /// `self` overriding `fallback`, then the built-in defaults.
    pub fn resolve(&self, fallback: &Limits) -> EffectiveLimits {
        EffectiveLimits {
            fuel: self.fuel.or(fallback.fuel).unwrap_or(DEFAULT_FUEL),
            timeout_ms: self.timeout_ms.or(fallback.timeout_ms).unwrap_or(DEFAULT_TIMEOUT_MS),
            memory_bytes: self.memory_bytes.or(fallback.memory_bytes).unwrap_or(DEFAULT_MEMORY_BYTES),
        }
    }
}

/// The WIT world a component implements; decides how it is linked and called.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// `switchyard:platform/handler`: typed request in, response out.
    #[default]
    Handler,
    /// `switchyard:platform/connector`: delivers outbox messages over HTTP.
    Connector,
    /// The standard `wasi:http/proxy` world: streamed request in, streamed
    /// response out, as `wasmtime serve` runs it.
    WasiHttp,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Handler => "handler",
            World::Connector => "connector",
            World::WasiHttp => "wasi-http",
        }
    }

    /// The WIT world's full name.
    pub fn wit_name(self) -> &'static str {
        match self {
            World::Handler => "switchyard:platform/handler",
            World::Connector => "switchyard:platform/connector",
            World::WasiHttp => "wasi:http/proxy",
        }
    }

    /// Whether routes may point at components of this world.
    pub fn serves_routes(self) -> bool {
        matches!(self, World::Handler | World::WasiHttp)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Path to the `.wasm` component, relative to the config file.
    pub path: PathBuf,
    #[serde(default)]
    pub world: World,
    #[serde(default)]
    pub limits: Limits,
    /// Values the component reads through the `config` interface.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Connectors only: the `host:port` authorities its outgoing HTTP
    /// requests may reach; anything else is refused.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// The component's circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Handlers only: how many invocations run and wait at once.
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// How a canary of this component is stepped and judged, and how long a
    /// plain deploy is watched.
    #[serde(default)]
    pub rollout: RolloutConfig,
    /// `wasi-http` components only: keep instances warm between requests
    /// instead of a fresh one per request (the default, without this table).
    #[serde(default)]
    pub reuse: Option<ReuseConfig>,
}

/// `[components.NAME.reuse]`: one instance serves several requests, one
/// after another (or, for a 0.3 component, several at once). Fuel, the
/// deadline and the outcome stay per request; the memory limit applies to
/// the instance; a failed request retires it. What one request leaves in
/// the instance's memory, the next one sees.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReuseConfig {
    /// Requests one instance serves before it is retired.
    pub max_requests: u32,
    /// Requests one instance serves at once (`runtime/shared.rs`). A
    /// `wasi:http` 0.2 guest's `handle` runs to its end before its instance
    /// can take the next request, so for 0.2 versions this is 1 whatever
    /// it says, as in `wasmtime serve`.
    pub max_concurrent: u32,
    /// How long an instance waits idle for a request before it is dropped.
    pub idle_timeout_ms: u64,
}

impl Default for ReuseConfig {
    /// `wasmtime serve`'s defaults for instances that are reused.
    fn default() -> Self {
        ReuseConfig { max_requests: 128, max_concurrent: 1, idle_timeout_ms: 1_000 }
    }
}

/// `[components.NAME.rollout]`: the steps of a canary and the thresholds
/// that judge each one (see `rollout/`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Canary shares (%) after the deploy's own, increasing and ending at
    /// 100; reaching 100 promotes the canary.
    pub steps: Vec<u8>,
    /// How long each step lasts before it is judged.
    pub step_ms: u64,
    /// Invocations each version needs in a step before the step can pass.
    pub min_invocations: u64,
    /// Times a step with too few invocations is extended by `step_ms`
    /// before the rollout is aborted as inconclusive.
    pub max_extensions: u32,
    /// How far the canary's error share may exceed the stable's (0.05 = five
    /// points), judged on a 99 % lower bound of the canary's share.
    pub max_error_rate_increase: f64,
    /// Largest canary/stable ratio of p99 latency, mean fuel per invocation
    /// and peak memory.
    pub max_p99_ratio: f64,
    pub max_fuel_ratio: f64,
    pub max_memory_ratio: f64,
    /// After a deploy without a canary, how long the new version is judged
    /// against the previous one's figures; 0 turns the watch off.
    pub watch_ms: u64,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            steps: vec![25, 50, 100],
            step_ms: 30_000,
            min_invocations: 50,
            max_extensions: 3,
            max_error_rate_increase: 0.05,
            max_p99_ratio: 1.5,
            max_fuel_ratio: 2.0,
            max_memory_ratio: 2.0,
            watch_ms: 30_000,
        }
    }
}

impl RolloutConfig {
    /// The first problem, naming its key.
    fn validate(&self) -> Result<(), String> {
        if self.steps.last() != Some(&100) {
            return Err("rollout.steps must end at 100".to_owned());
        }
        if self.steps.windows(2).any(|pair| pair[0] >= pair[1]) || self.steps.first() == Some(&0) {
            return Err("rollout.steps must increase, from 1 to 100".to_owned());
        }
        if self.step_ms == 0 || self.min_invocations == 0 {
            return Err("rollout.step_ms and rollout.min_invocations must be positive".to_owned());
        }
        if !(self.max_error_rate_increase > 0.0 && self.max_error_rate_increase < 1.0) {
            return Err("rollout.max_error_rate_increase must be between 0 and 1".to_owned());
        }
        for (key, ratio) in [
            ("max_p99_ratio", self.max_p99_ratio),
            ("max_fuel_ratio", self.max_fuel_ratio),
            ("max_memory_ratio", self.max_memory_ratio),
        ] {
            if !(ratio > 1.0 && ratio.is_finite()) {
                return Err(format!("rollout.{key} must be above 1, not {ratio}"));
            }
        }
        Ok(())
    }
}

/// Bounded admission of a handler; unset values are derived from the
/// pooling allocator's instance count (see [`Config::admission_for`]).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Invocations running at once.
    pub max_concurrency: Option<usize>,
    /// Requests waiting for a slot; beyond it, 503 at once.
    pub max_queue: Option<usize>,
    /// Longest a request waits for a slot.
    pub queue_timeout_ms: Option<u64>,
}

/// Admission settings with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveAdmission {
    pub max_concurrency: usize,
    pub max_queue: usize,
    pub queue_timeout_ms: u64,
}

/// Most concurrent invocations a handler gets by default.
const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// Default queue length, as a multiple of the concurrency.
const DEFAULT_QUEUE_FACTOR: usize = 4;

/// A named destination for outbox messages and how they are delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The component (world `connector`) that delivers the messages. Without
    /// one, messages are stored PENDING until a connector is configured.
    pub component: Option<String>,
    /// Attempts before a message is declared DEAD.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay ceiling; doubles per attempt (full jitter).
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Largest retry delay ceiling.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            component: None,
            max_attempts: default_max_attempts(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
        }
    }
}

/// Admin API settings (the token comes from the environment, never a file).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Largest component upload; bigger bodies get 413 while streaming.
    pub max_upload_bytes: usize,
    /// Versions kept per component for rollback.
    pub keep_versions: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { max_upload_bytes: 50 * 1024 * 1024, keep_versions: 5 }
    }
}

/// Prometheus metrics settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` on this address too (for example to keep it off a
    /// public port); it is always served on the main listener.
    pub listen: Option<SocketAddr>,
    /// Distinct series one component may create through the `metrics`
    /// interface; more are dropped and counted.
    pub series_cap: usize,
    /// Record metrics at all; off only to measure what they cost.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: None, series_cap: crate::telemetry::metrics::DEFAULT_SERIES_CAP, enabled: true }
    }
}

/// Engine-wide settings of the WebAssembly runtime.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Meter and enforce fuel. Off, guest code runs without the fuel checks
    /// (only deadlines and memory limits bound it) and reports no fuel; only
    /// to measure what metering costs.
    pub fuel_metering: bool,
    /// GET and HEAD invocations of handlers begin as read transactions,
    /// becoming writers at their first write (`db/unit_of_work.rs`). Off,
    /// every invocation begins as a writer; only to measure what reading
    /// first saves.
    pub read_first: bool,
    /// Nice value (0–19) of the threads that compile a deploy: above
    /// serving's 0, a compile takes only the CPU serving leaves; 0 compiles
    /// at serving's priority (faster deploys, slower requests meanwhile).
    pub compile_niceness: i32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { fuel_metering: true, read_first: true, compile_niceness: 10 }
    }
}

/// Dispatcher settings, shared by all connectors.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Whether this process delivers messages. Replicas that only serve
    /// requests can leave delivery to others sharing the database.
    pub dispatch: bool,
    /// Messages claimed per round trip to the database.
    pub batch_size: u32,
    /// Deliveries in flight at once per connector.
    pub concurrency: u32,
    /// How long a claim is exclusive; a worker that dies holding messages
    /// loses them to another after this.
    pub lease_ms: u64,
    /// How often an idle dispatcher looks for due messages (it is also woken
    /// whenever a handler commits new ones).
    pub poll_interval_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { dispatch: true, batch_size: 64, concurrency: 16, lease_ms: 60_000, poll_interval_ms: 1_000 }
    }
}

/// Replicas sharing one database: membership and deploy fan-out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This replica's id in the `replicas` table; `SWITCHYARD_REPLICA_ID`
    /// overrides it. Unset, a random one is drawn at start.
    pub replica_id: Option<String>,
    /// The address operators and other replicas reach this one at;
    /// `SWITCHYARD_ADVERTISE` overrides it. Unset, `[server] listen`.
    pub advertise: Option<String>,
    /// How often this replica records that it is alive, and what it serves.
    pub heartbeat_ms: u64,
    /// How often it compares what it serves with the deploy history, in
    /// case a notification was missed. PostgreSQL notifies every replica of
    /// each deploy at once; on SQLite this poll is the only path.
    pub reconcile_ms: u64,
    /// A replica silent this long is shown as gone.
    pub gone_after_ms: u64,
    /// And silent this long, it is dropped from the table.
    pub drop_after_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            replica_id: None,
            advertise: None,
            heartbeat_ms: 1_000,
            reconcile_ms: 5_000,
            gone_after_ms: 10_000,
            drop_after_ms: 600_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method, upper case: GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS,
    /// or `*` for any method.
    pub method: String,
    /// Path template: `/orders`, `/orders/{id}`, or `/files/{*rest}` for
    /// everything below `/files/`.
    pub path: String,
    /// The component that serves it.
    pub component: String,
    /// Overrides `[server] max_body_bytes` for this route.
    pub max_body_bytes: Option<usize>,
    /// Callers must present a configured API key (`x-api-key` or bearer);
    /// each key is rate limited to its quota.
    #[serde(default)]
    pub api_key: bool,
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*"];

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_database_url() -> String {
    DEFAULT_DATABASE_URL.to_owned()
}
fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_headers() -> usize {
    64
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
/// hyper's documented default, which `axum::serve` never applied.
fn default_header_read_timeout_ms() -> u64 {
    30_000
}
fn default_drain_timeout_ms() -> u64 {
    30_000
}
fn default_max_attempts() -> u32 {
    8
}
fn default_backoff_base_ms() -> u64 {
    1_000
}
fn default_backoff_max_ms() -> u64 {
    300_000
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, base_dir).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates config text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: PathBuf) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text)?;
        config.base_dir = base_dir;
        config.validate()?;
        config.derive_transport_timeouts();
        Ok(config)
    }

    /// A connector without its own `timeout_ms` gets one from its deadline,
    /// so its HTTP calls give up (a retryable provider error) before the
    /// component is stopped (a timeout, counted against its breaker).
    fn derive_transport_timeouts(&mut self) {
        let limits = self.limits;
        for component in self.components.values_mut().filter(|c| c.world == World::Connector) {
            let deadline = component.limits.resolve(&limits).timeout_ms;
            component
                .config
                .entry(TRANSPORT_TIMEOUT_KEY.to_owned())
                .or_insert_with(|| (deadline * TRANSPORT_SHARE_OF_DEADLINE / 100).max(1).to_string());
        }
    }

    /// Every millisecond setting, named as in the file.
    fn durations(&self) -> Vec<(String, u64)> {
        let server = &self.server;
        let mut all = vec![
            ("[server] request_timeout_ms".to_owned(), server.request_timeout_ms),
            ("[server] header_read_timeout_ms".to_owned(), server.header_read_timeout_ms),
            ("[server] drain_timeout_ms".to_owned(), server.drain_timeout_ms),
            ("[outbox] lease_ms".to_owned(), self.outbox.lease_ms),
            ("[outbox] poll_interval_ms".to_owned(), self.outbox.poll_interval_ms),
            ("[cluster] heartbeat_ms".to_owned(), self.cluster.heartbeat_ms),
            ("[cluster] reconcile_ms".to_owned(), self.cluster.reconcile_ms),
            ("[cluster] gone_after_ms".to_owned(), self.cluster.gone_after_ms),
            ("[cluster] drop_after_ms".to_owned(), self.cluster.drop_after_ms),
        ];
        let signed = |ms: i64| u64::try_from(ms).unwrap_or(u64::MAX);
        for (name, component) in &self.components {
            let at = |key: &str| format!("component {name}: {key}");
            all.push((at("timeout_ms"), self.limits_for(component).timeout_ms));
            all.push((at("admission.queue_timeout_ms"), self.admission_for(component).queue_timeout_ms));
            all.push((at("breaker.window_ms"), signed(component.breaker.window_ms)));
            all.push((at("breaker.open_for_ms"), signed(component.breaker.open_for_ms)));
            all.push((at("rollout.step_ms"), component.rollout.step_ms));
            all.push((at("rollout.watch_ms"), component.rollout.watch_ms));
            if let Some(reuse) = &component.reuse {
                all.push((at("reuse.idle_timeout_ms"), reuse.idle_timeout_ms));
            }
        }
        for (name, connector) in &self.connectors {
            all.push((format!("connector {name}: backoff_base_ms"), connector.backoff_base_ms));
            all.push((format!("connector {name}: backoff_max_ms"), connector.backoff_max_ms));
        }
        all
    }

    /// The effective limits of one component.
    pub fn limits_for(&self, component: &ComponentConfig) -> EffectiveLimits {
        component.limits.resolve(&self.limits)
    }

    /// Pool instances reserved for connector deliveries: each connector
    /// worker runs at most `[outbox] concurrency` at once.
    fn connector_instances(&self) -> usize {
        let workers = self.connectors.values().filter(|c| c.component.is_some()).count();
        workers * self.outbox.concurrency as usize
    }

    /// A handler's admission bounds. By default the pool instances left
    /// after connectors are shared evenly among handlers (at most 64 each),
    /// so admitted invocations can never exhaust the pooling allocator.
    pub fn admission_for(&self, component: &ComponentConfig) -> EffectiveAdmission {
        let handlers = self.components.values().filter(|c| c.world.serves_routes()).count().max(1);
        let free = POOL_INSTANCES as usize - self.connector_instances().min(POOL_HALF);
        let fair_share = (free / handlers).clamp(1, DEFAULT_MAX_CONCURRENCY);
        let max_concurrency = component.admission.max_concurrency.unwrap_or(fair_share);
        EffectiveAdmission {
            max_concurrency,
            max_queue: component.admission.max_queue.unwrap_or(max_concurrency * DEFAULT_QUEUE_FACTOR),
            queue_timeout_ms: component.admission.queue_timeout_ms.unwrap_or(self.limits_for(component).timeout_ms),
        }
    }

    /// The absolute (or cwd-relative) path of a component's wasm file.
    pub fn component_path(&self, component: &ComponentConfig) -> PathBuf {
        self.base_dir.join(&component.path)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.database.max_connections == 0 {
            bail!("[database] max_connections must be at least 1");
        }
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            bail!("[database] url must start with sqlite: or postgres://");
        }
        for (name, component) in &self.components {
            validate_name("component", name)?;
            let limits = self.limits_for(component);
            if limits.fuel == 0 || limits.timeout_ms == 0 || limits.memory_bytes < 64 * 1024 {
                bail!("component {name}: fuel and timeout_ms must be positive and memory_bytes at least 64 KiB");
            }
            for key in component.config.keys() {
                if key.is_empty() {
                    bail!("component {name}: config keys must not be empty");
                }
            }
            if component.world == World::Handler && !component.allowed_hosts.is_empty() {
                bail!("component {name}: allowed_hosts applies to connector and wasi-http components only");
            }
            if let Err(problem) = component.breaker.validate() {
                bail!("component {name}: {problem}");
            }
            if let Err(problem) = component.rollout.validate() {
                bail!("component {name}: {problem}");
            }
            if let Some(reuse) = &component.reuse {
                if component.world != World::WasiHttp {
                    bail!(
                        "component {name}: reuse applies to wasi-http components only; a {} component gets a \
                         fresh instance per invocation, which its unit of work depends on",
                        component.world.as_str()
                    );
                }
                if reuse.max_requests == 0 || reuse.max_concurrent == 0 || reuse.idle_timeout_ms == 0 {
                    bail!("component {name}: reuse.max_requests, max_concurrent and idle_timeout_ms must be positive");
                }
            }
            if component.world == World::Connector
                && let Some(value) = component.config.get(TRANSPORT_TIMEOUT_KEY)
            {
                match value.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 && ms < limits.timeout_ms => {}
                    Ok(ms) if ms > 0 => bail!(
                        "component {name}: config.{TRANSPORT_TIMEOUT_KEY} ({ms} ms) must be below its deadline, \
                         timeout_ms = {} ms: a slow provider would end as a component timeout, not a retryable \
                         provider error",
                        limits.timeout_ms
                    ),
                    _ => bail!(
                        "component {name}: config.{TRANSPORT_TIMEOUT_KEY} must be a positive number of milliseconds, not {value:?}"
                    ),
                }
            }
        }
        for (name, connector) in &self.connectors {
            validate_name("connector", name)?;
            if let Some(component) = &connector.component {
                match self.components.get(component) {
                    None => bail!("connector {name}: unknown component {component:?}"),
                    Some(c) if c.world != World::Connector => {
                        bail!("connector {name}: component {component:?} is not of world \"connector\"")
                    }
                    Some(_) => {}
                }
            }
            if connector.max_attempts == 0 || connector.backoff_base_ms == 0 {
                bail!("connector {name}: max_attempts and backoff_base_ms must be positive");
            }
            if connector.backoff_max_ms < connector.backoff_base_ms {
                bail!("connector {name}: backoff_max_ms must be at least backoff_base_ms");
            }
        }
        if self.admin.keep_versions < 2 || self.admin.max_upload_bytes == 0 {
            bail!(
                "[admin] keep_versions must be at least 2 (the active one and one to roll back to) and max_upload_bytes positive"
            );
        }
        if !(0..=19).contains(&self.runtime.compile_niceness) {
            bail!("[runtime] compile_niceness must be between 0 and 19, not {}", self.runtime.compile_niceness);
        }
        let quotas = std::iter::once(self.rate_limits.default).chain(self.rate_limits.per_ip);
        if quotas.into_iter().any(|q| q.per_second == 0 || q.burst == 0) {
            bail!("[rate_limits] per_second and burst must be positive");
        }
        let mut key_names = HashSet::new();
        for key in &self.api_keys {
            if !key_names.insert(key.name.as_str()) {
                bail!("api key {:?} is configured twice", key.name);
            }
            if key.key.is_some() == key.key_env.is_some() {
                bail!("api key {:?}: set exactly one of key or key_env", key.name);
            }
            if key.per_second == Some(0) || key.burst == Some(0) {
                bail!("api key {:?}: per_second and burst must be positive", key.name);
            }
        }
        let server = &self.server;
        if server.max_headers == 0
            || server.max_header_bytes == 0
            || server.request_timeout_ms == 0
            || server.header_read_timeout_ms == 0
        {
            bail!(
                "[server] max_headers, max_header_bytes, request_timeout_ms and header_read_timeout_ms must be positive"
            );
        }
        for (setting, ms) in self.durations() {
            if ms > MAX_DURATION_MS {
                bail!("{setting} = {ms} is longer than a week; at most {MAX_DURATION_MS} ms");
            }
        }
        let pool = POOL_INSTANCES as usize;
        let mut instances = self.connector_instances();
        for (name, component) in self.components.iter().filter(|(_, c)| c.world.serves_routes()) {
            let admission = self.admission_for(component);
            if admission.max_concurrency == 0 {
                bail!("component {name}: admission max_concurrency must be at least 1");
            }
            instances += admission.max_concurrency;
        }
        if instances > pool {
            bail!(
                "handlers' max_concurrency plus connector deliveries ({instances}) exceed the {pool} instances \
                 the pooling allocator holds; lower [components.*.admission] max_concurrency or [outbox] concurrency"
            );
        }
        let cluster = &self.cluster;
        if cluster.heartbeat_ms == 0 || cluster.reconcile_ms == 0 {
            bail!("[cluster] heartbeat_ms and reconcile_ms must be positive");
        }
        if cluster.gone_after_ms <= cluster.heartbeat_ms || cluster.drop_after_ms < cluster.gone_after_ms {
            bail!(
                "[cluster] gone_after_ms must exceed heartbeat_ms (a live replica would flap), and drop_after_ms \
                 must be at least gone_after_ms"
            );
        }
        if let Some(id) = &cluster.replica_id {
            validate_replica_id(id)?;
        }
        let outbox = &self.outbox;
        if outbox.batch_size == 0 || outbox.concurrency == 0 || outbox.lease_ms == 0 || outbox.poll_interval_ms == 0 {
            bail!("[outbox] batch_size, concurrency, lease_ms and poll_interval_ms must be positive");
        }
        let mut seen = HashSet::new();
        for route in &self.routes {
            let method = route.method.as_str();
            if !METHODS.contains(&method) {
                bail!("route {method} {}: method must be one of {}", route.path, METHODS.join(", "));
            }
            validate_route_path(&route.path)?;
            match self.components.get(&route.component) {
                None => bail!("route {method} {}: unknown component {:?}", route.path, route.component),
                Some(c) if !c.world.serves_routes() => bail!(
                    "route {method} {}: component {:?} is not of world \"handler\" or \"wasi-http\"",
                    route.path,
                    route.component
                ),
                Some(_) => {}
            }
            // `/a/{x}` and `/a/{y}` are the same route to a router, and `*`
            // overlaps every method.
            let shape = route_shape(&route.path);
            let taken = seen.contains(&(method, shape.clone()))
                || seen.contains(&("*", shape.clone()))
                || (method == "*" && seen.iter().any(|(_, s)| *s == shape));
            seen.insert((method, shape));
            if taken {
                bail!("duplicate route {method} {}", route.path);
            }
        }
        validate_route_table(&self.routes)?;
        Ok(())
    }
}

/// Paths the host serves itself (`server/`: health, metrics, dashboard,
/// admin API). A route may not take one, nor a path the router could not
/// tell apart from one; each router in `server/` that adds a path adds it
/// here too.
pub const HOST_PATHS: &[&str] = &[
    "/admin/cluster",
    "/admin/components",
    "/admin/components/{name}",
    "/admin/components/{name}/rollback",
    "/admin/components/{name}/rollout",
    "/admin/components/{name}/rollout/abort",
    "/admin/components/{name}/rollout/promote",
    "/admin/outbox",
    "/admin/outbox/{id}/retry",
    "/admin/stats",
    "/admin/stats/stream",
    "/dashboard",
    "/dashboard/{file}",
    "/health",
    "/health/live",
    "/health/ready",
    "/metrics",
];

/// Refuses route paths that conflict with each other or with the host's own
/// paths in a way the router cannot resolve (`/a/{x}` beside `/a/{*rest}`,
/// or a route on `/metrics`): axum would panic on them at startup.
fn validate_route_table(routes: &[RouteConfig]) -> anyhow::Result<()> {
    let mut router = matchit::Router::new();
    for path in HOST_PATHS {
        router.insert(*path, ()).map_err(|err| anyhow::anyhow!("host path {path}: {err}"))?;
    }
    let mut seen = HashSet::new();
    for route in routes.iter().filter(|route| seen.insert(route.path.as_str())) {
        if HOST_PATHS.contains(&route.path.as_str()) {
            bail!("route {} {}: the host serves this path itself", route.method, route.path);
        }
        if let Err(err) = router.insert(route.path.as_str(), ()) {
            bail!("route {} {}: {err}", route.method, route.path);
        }
    }
    Ok(())
}

fn validate_name(kind: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        bail!("{kind} name {name:?} must be 1-64 characters of a-z, 0-9, '-' or '_'");
    }
    Ok(())
}

/// A replica id: 1–128 characters of letters, digits, '.', '-' or '_' (a
/// Kubernetes pod name is one).
pub fn validate_replica_id(id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        bail!("replica id {id:?} must be 1-128 characters of letters, digits, '.', '-' or '_'");
    }
    Ok(())
}

fn validate_route_path(path: &str) -> anyhow::Result<()> {
    if !path.starts_with('/') {
        bail!("route path {path:?} must start with '/'");
    }
    let mut params = HashSet::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        if let Some(inner) = segment.strip_prefix('{') {
            let Some(name) = inner.strip_suffix('}') else {
                bail!("route path {path:?}: a parameter must be a whole segment like {{id}}");
            };
            let name = match name.strip_prefix('*') {
                Some(_) if i + 1 != segments.len() => {
                    bail!("route path {path:?}: a catch-all {{*name}} must be the last segment")
                }
                Some(rest) => rest,
                None => name,
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                bail!("route path {path:?}: parameter names are letters, digits and '_'");
            }
            if !params.insert(name) {
                bail!("route path {path:?}: parameter {{{name}}} appears twice");
            }
        } else if segment.contains(['{', '}', '*']) {
            bail!("route path {path:?}: '{{', '}}' and '*' only appear in whole-segment parameters");
        }
    }
    Ok(())
}

/// The path with parameter names erased, so routes that a router cannot
/// tell apart compare equal.
fn route_shape(path: &str) -> String {
    path.split('/')
        .map(|s| match s {
            _ if s.starts_with("{*") => "{*}",
            _ if s.starts_with('{') => "{}",
            _ => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [components.app]
        path = "app.wasm"
        [[routes]]
        method = "GET"
        path = "/items/{id}"
        component = "app"
    "#;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, PathBuf::from("/srv/app"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.database.url, DEFAULT_DATABASE_URL);
        let app = &config.components["app"];
        assert_eq!(
            config.limits_for(app),
            EffectiveLimits { fuel: DEFAULT_FUEL, timeout_ms: DEFAULT_TIMEOUT_MS, memory_bytes: DEFAULT_MEMORY_BYTES }
        );
        assert_eq!(config.component_path(app), PathBuf::from("/srv/app/app.wasm"));
    }

    #[test]
    fn component_limits_override_global_ones() {
        let text = format!("[limits]\nfuel = 10\ntimeout_ms = 7\n{MINIMAL}\n[components.app.limits]\nfuel = 99\n");
        // The component table was already opened in MINIMAL; TOML allows the
        // sub-table to follow.
        let config = parse(&text).unwrap();
        let limits = config.limits_for(&config.components["app"]);
        assert_eq!((limits.fuel, limits.timeout_ms), (99, 7));
    }

    #[test]
    fn durations_longer_than_a_week_are_refused_by_name() {
        let week = MAX_DURATION_MS;
        for (extra, setting) in [
            (format!("[components.app.limits]\ntimeout_ms = {}\n", u64::MAX), "component app: timeout_ms"),
            (format!("[components.app.rollout]\nstep_ms = {}\n", week + 1), "component app: rollout.step_ms"),
            (format!("[outbox]\nlease_ms = {}\n", u64::MAX), "[outbox] lease_ms"),
        ] {
            let err = parse(&format!("{MINIMAL}\n{extra}")).unwrap_err();
            assert!(err.to_string().starts_with(&format!("{setting} = ")), "{err}");
        }
        let text = format!("{MINIMAL}\n[components.app.limits]\ntimeout_ms = {week}\n");
        assert_eq!(parse(&text).map(|c| c.limits_for(&c.components["app"]).timeout_ms).ok(), Some(week));
    }

    #[test]
    fn cluster_settings_are_checked() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!((config.cluster.heartbeat_ms, config.cluster.replica_id), (1_000, None));
        for (extra, problem) in [
            ("[cluster]\nheartbeat_ms = 0\n", "must be positive"),
            ("[cluster]\nheartbeat_ms = 5000\ngone_after_ms = 5000\n", "must exceed heartbeat_ms"),
            ("[cluster]\ngone_after_ms = 20000\ndrop_after_ms = 19999\n", "at least gone_after_ms"),
            ("[cluster]\nreplica_id = \"a b\"\n", "replica id \"a b\""),
        ] {
            let err = parse(&format!("{MINIMAL}\n{extra}")).unwrap_err();
            assert!(err.to_string().contains(problem), "{extra}: {err}");
        }
        let text =
            format!("{MINIMAL}\n[cluster]\nreplica_id = \"switchyard-7d9f-x2\"\nadvertise = \"10.0.0.5:8080\"\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.cluster.replica_id.as_deref(), Some("switchyard-7d9f-x2"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `lisen`"), "{err:#}");
    }

    #[test]
    fn duplicate_routes_are_rejected_even_with_other_param_names() {
        let text = format!("{MINIMAL}\n[[routes]]\nmethod = \"GET\"\npath = \"/items/{{key}}\"\ncomponent = \"app\"\n");
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("duplicate route GET /items/{key}"), "{err}");
    }

    #[test]
    fn routes_must_name_a_known_handler() {
        let err = parse("[[routes]]\nmethod = \"GET\"\npath = \"/\"\ncomponent = \"nope\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown component \"nope\""), "{err}");
    }

    #[test]
    fn bad_methods_and_paths_are_rejected() {
        for (method, path, needle) in [
            ("FETCH", "/a", "method must be one of"),
            ("GET", "a", "must start with '/'"),
            ("GET", "/a/{id", "whole segment"),
            ("GET", "/a/{id}/{id}", "appears twice"),
            ("GET", "/a/x{id}", "whole-segment parameters"),
        ] {
            let text =
                format!("{MINIMAL}\n[[routes]]\nmethod = \"{method}\"\npath = \"{path}\"\ncomponent = \"app\"\n");
            let err = parse(&text).unwrap_err();
            assert!(err.to_string().contains(needle), "{method} {path}: {err}");
        }
    }

    #[test]
    fn rollout_config_is_checked_naming_the_key() {
        let with = |rollout: &str| parse(&format!("{MINIMAL}\n[components.app.rollout]\n{rollout}\n"));
        for (rollout, expected) in [
            ("steps = [50, 25, 100]", "rollout.steps must increase"),
            ("steps = [25, 50]", "rollout.steps must end at 100"),
            ("max_p99_ratio = 1.0", "rollout.max_p99_ratio must be above 1"),
            ("max_fuel_ratio = 0.5", "rollout.max_fuel_ratio must be above 1"),
            ("max_error_rate_increase = 0", "rollout.max_error_rate_increase must be between 0 and 1"),
            ("min_invocations = 0", "rollout.step_ms and rollout.min_invocations must be positive"),
            ("canary = 5", "unknown field"),
        ] {
            let err = with(rollout).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{rollout}: {err:#}");
        }
        let config = with("steps = [10, 100]\nstep_ms = 5_000").unwrap();
        assert_eq!(config.components["app"].rollout.steps, [10, 100]);
        assert_eq!(config.components["app"].rollout.min_invocations, 50, "unset keys keep their defaults");
    }

    #[test]
    fn routes_the_router_cannot_tell_apart_are_refused() {
        let with = |routes: &[(&str, &str)]| {
            let mut text = "[components.app]\npath = \"app.wasm\"\n".to_owned();
            for (method, path) in routes {
                text.push_str(&format!("[[routes]]\nmethod = \"{method}\"\npath = \"{path}\"\ncomponent = \"app\"\n"));
            }
            parse(&text)
        };
        for (routes, expected) in [
            (&[("GET", "/metrics")][..], "the host serves this path itself"),
            (&[("POST", "/admin/outbox")][..], "the host serves this path itself"),
            (&[("GET", "/health/ready")][..], "the host serves this path itself"),
            (&[("GET", "/a/{x}"), ("GET", "/a/{*rest}")][..], "conflict"),
            (&[("GET", "/dashboard/{*rest}")][..], "conflict"),
        ] {
            let err = with(routes).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{routes:?}: {err:#}");
        }
        for routes in [
            &[("*", "/{*path}")][..],
            &[("GET", "/a/{x}"), ("GET", "/a/b")][..],
            &[("GET", "/admin/{x}")][..],
            &[("GET", "/items/{id}"), ("PUT", "/items/{id}")][..],
        ] {
            with(routes).unwrap_or_else(|err| panic!("{routes:?}: {err:#}"));
        }
    }

    #[test]
    fn compile_niceness_is_a_nice_value() {
        assert_eq!(parse(MINIMAL).unwrap().runtime.compile_niceness, 10);
        let with = |n: i32| parse(&format!("{MINIMAL}\n[runtime]\ncompile_niceness = {n}\n"));
        assert_eq!(with(0).unwrap().runtime.compile_niceness, 0);
        for n in [-1, 20] {
            let err = with(n).unwrap_err();
            assert!(err.to_string().contains("compile_niceness must be between 0 and 19"), "{n}: {err}");
        }
    }

    #[test]
    fn reuse_is_for_wasi_http_components_and_fills_its_defaults() {
        let err = parse(&format!("{MINIMAL}\n[components.app.reuse]\nmax_requests = 8\n")).unwrap_err();
        assert!(format!("{err:#}").contains("reuse applies to wasi-http components only"), "{err:#}");
        let http = |reuse: &str| {
            parse(&format!(
                "[components.web]\npath = \"web.wasm\"\nworld = \"wasi-http\"\n[components.web.reuse]\n{reuse}\n\
                 [[routes]]\nmethod = \"*\"\npath = \"/{{*rest}}\"\ncomponent = \"web\"\n"
            ))
        };
        let config = http("max_requests = 8").unwrap();
        let reuse = config.components["web"].reuse.unwrap();
        assert_eq!(reuse, ReuseConfig { max_requests: 8, ..ReuseConfig::default() });
        assert_eq!((reuse.max_concurrent, reuse.idle_timeout_ms), (1, 1_000));
        for (reuse, expected) in [
            ("max_requests = 0", "must be positive"),
            ("idle_timeout_ms = 0", "must be positive"),
            ("keep = true", "unknown field"),
        ] {
            let err = http(reuse).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{reuse}: {err:#}");
        }
        assert_eq!(parse(MINIMAL).unwrap().components["app"].reuse, None, "off unless configured");
    }

    #[test]
    fn a_connector_transport_timeout_stays_below_its_deadline() {
        let connector = |config: &str| {
            format!(
                "{MINIMAL}\n[components.mailer]\npath = \"mailer.wasm\"\nworld = \"connector\"\n\
                 limits = {{ timeout_ms = 2_000 }}\nconfig = {{ url = \"http://127.0.0.1:9/\"{config} }}\n"
            )
        };
        let err = parse(&connector(", timeout_ms = \"5000\"")).unwrap_err();
        assert!(err.to_string().contains("config.timeout_ms (5000 ms) must be below its deadline"), "{err}");
        let err = parse(&connector(", timeout_ms = \"soon\"")).unwrap_err();
        assert!(err.to_string().contains("config.timeout_ms must be a positive number"), "{err}");
        let kept = parse(&connector(", timeout_ms = \"1200\"")).unwrap();
        assert_eq!(kept.components["mailer"].config["timeout_ms"], "1200");
        // None set: three quarters of the deadline.
        let derived = parse(&connector("")).unwrap();
        assert_eq!(derived.components["mailer"].config["timeout_ms"], "1500");
        // Handlers are not given one.
        assert!(!derived.components["app"].config.contains_key("timeout_ms"));
    }

    #[test]
    fn connectors_must_point_at_connector_components() {
        let text = format!("{MINIMAL}\n[connectors.email]\ncomponent = \"app\"\n");
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("is not of world \"connector\""), "{err}");
        let text = format!("{MINIMAL}\n[components.app.breaker]\nfailure_threshold = 1\n");
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("between 3 and 10"), "{err}");
    }

    /// MINIMAL plus a `wasi-http` component `proxy` and `routes`, each
    /// `(method, path, component)`.
    fn with_routes(routes: &[(&str, &str, &str)]) -> String {
        let mut text = format!("{MINIMAL}\n[components.proxy]\npath = \"proxy.wasm\"\nworld = \"wasi-http\"\n");
        for (method, path, component) in routes {
            text.push_str(&format!(
                "[[routes]]\nmethod = \"{method}\"\npath = \"{path}\"\ncomponent = \"{component}\"\n"
            ));
        }
        text
    }

    #[test]
    fn wasi_http_components_take_any_method_catch_all_routes() {
        let config = parse(&with_routes(&[("*", "/http/{*rest}", "proxy"), ("GET", "/pages/{id}", "proxy")])).unwrap();
        assert_eq!(config.components["proxy"].world, World::WasiHttp);
        assert_eq!(config.routes.len(), 3);
    }

    #[test]
    fn routes_must_not_point_at_connectors() {
        let text = format!(
            "{}[components.mailer]\npath = \"mailer.wasm\"\nworld = \"connector\"\n",
            with_routes(&[("POST", "/mail", "mailer")])
        );
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("component \"mailer\" is not of world \"handler\" or \"wasi-http\""), "{err}");
    }

    #[test]
    fn any_method_collides_with_every_method_on_its_path() {
        for routes in [
            [("*", "/any", "proxy"), ("GET", "/any", "app")],
            [("GET", "/any", "app"), ("*", "/any", "proxy")],
            [("*", "/any", "proxy"), ("*", "/any", "proxy")],
            [("*", "/f/{*rest}", "proxy"), ("POST", "/f/{*other}", "proxy")],
        ] {
            let err = parse(&with_routes(&routes)).unwrap_err();
            assert!(err.to_string().contains("duplicate route"), "{routes:?}: {err}");
        }
        // Other paths do not collide.
        parse(&with_routes(&[("*", "/any", "proxy"), ("GET", "/other", "app")])).unwrap();
    }

    #[test]
    fn catch_all_must_be_the_last_segment() {
        for path in ["/a/{*rest}/b", "/{*rest}/b"] {
            let err = parse(&with_routes(&[("*", path, "proxy")])).unwrap_err();
            assert!(err.to_string().contains("catch-all {*name} must be the last segment"), "{path}: {err}");
        }
        let err = parse(&with_routes(&[("*", "/a/{*}", "proxy")])).unwrap_err();
        assert!(err.to_string().contains("parameter names are letters"), "{err}");
    }

    #[test]
    fn connector_names_are_checked() {
        let err = parse(&format!("{MINIMAL}\n[connectors.\"E Mail\"]\n")).unwrap_err();
        assert!(err.to_string().contains("connector name \"E Mail\""), "{err}");
    }
}
