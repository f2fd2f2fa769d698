//! Switchyard: a serverless-style host for WebAssembly components.
//!
//! Operators configure components and routes in `switchyard.toml`; the host
//! compiles each component once, routes HTTP requests to it, and runs every
//! request in a fresh, metered sandbox whose state changes commit as one
//! database transaction.
//!
//! Crate map:
//! - [`config`]: the `switchyard.toml` schema and its validation.
//! - [`runtime`]: the only module that drives wasmtime — engine, registry of
//!   loaded components, one invocation, hot swap and rollback.
//! - [`capabilities`]: the host side of each interface components import.
//! - [`outbox`]: the dispatcher that delivers outbox messages through
//!   connector components, with retries, leases and dead letters.
//! - [`resilience`]: per-component circuit breakers.
//! - [`cluster`]: replicas sharing one database: membership, and deploys
//!   fanned out to every replica.
//! - [`clock`]: injectable time for breakers, backoff and leases.
//! - [`db`]: the sqlx pool (SQLite or PostgreSQL), migrations and queries.
//! - [`server`]: axum routes, health probes, request ids.
//! - [`error`]: the one error type HTTP handlers return.
//! - [`telemetry`]: logging setup and every Prometheus metric.
//! - [`watch`]: `serve --watch`, redeploying components whose files change.
//!
//! [`run`] serves a config on a listener until a shutdown future resolves,
//! so tests bind port 0 and stop the server cleanly.

pub mod capabilities;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod outbox;
pub mod resilience;
pub mod rollout;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clock::{SharedClock, SystemClock};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::db::Database;
use crate::outbox::{DeliveryTallies, Dispatcher};
use crate::rollout::Rollouts;
use crate::runtime::Runtime;
use crate::server::stats::Stats;
use crate::server::{AdminAuth, AppState, RateLimits};
use crate::telemetry::metrics::Metrics;

/// How often histogram samples are folded when nobody scrapes.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects the database and loads every component: everything that can
/// fail before the listener accepts a connection.
pub async fn prepare(config: &Config) -> anyhow::Result<AppState> {
    prepare_with_clock(config, Arc::new(SystemClock)).await
}

/// [`prepare`] with the clock breakers, backoff and leases read.
pub async fn prepare_with_clock(config: &Config, clock: SharedClock) -> anyhow::Result<AppState> {
    let db = Database::connect(&config.database.url, config.database.max_connections, clock.clone()).await?;
    let replica = cluster::replica_id(&config.cluster);
    cluster::check_app(config, &replica, &db, clock.now_millis()).await?;
    let metrics = if config.metrics.enabled { Metrics::new(config.metrics.series_cap) } else { Metrics::disabled() };
    for connector in config.connectors.keys() {
        metrics.connector(connector);
    }
    let runtime = Arc::new(Runtime::load(config, db.clone(), clock.clone(), metrics.clone()).await?);
    let rollouts = Arc::new(Rollouts::new(config, runtime.clone(), db.clone(), clock.clone(), replica.clone()));
    rollouts.recover().await.context("cannot read unfinished rollouts from the audit log")?;
    let deliveries = Arc::new(DeliveryTallies::new(config));
    let stats = Arc::new(Stats::new(runtime.clone(), deliveries.clone(), clock.clone()));
    let cluster = Arc::new(Cluster::new(config, replica, runtime.clone(), db.clone(), clock.clone()));
    Ok(AppState {
        cluster,
        deliveries,
        stats,
        runtime,
        rollouts,
        db,
        metrics,
        clock,
        admin: Arc::new(AdminAuth::from_env()),
        max_upload_bytes: config.admin.max_upload_bytes,
        rate_limits: Arc::new(RateLimits::from_config(config)?),
        started: Instant::now(),
    })
}

/// Serves `config` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = prepare(&config).await?;
    serve(&config, state, listener, shutdown).await
}

/// Serves an already prepared state, with the outbox dispatcher running
/// beside the server. On shutdown the server drains first, then the
/// dispatcher finishes its current batches.
pub async fn serve(
    config: &Config,
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let db = state.db.clone();
    // Histogram samples are folded into buckets on each scrape; this keeps
    // an unscraped host from accumulating them.
    let upkeep = tokio::spawn({
        let metrics = state.metrics.clone();
        async move {
            let mut tick = tokio::time::interval(METRICS_UPKEEP);
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        }
    });
    let rollouts = state.rollouts.start();
    let cluster = state.cluster.start();
    let dashboard = server::dashboard::start(state.clone());
    let dispatcher = config.outbox.dispatch.then(|| {
        Dispatcher::start(config, state.runtime.clone(), db.clone(), state.clock.clone(), state.deliveries.clone())
    });
    let metrics_listener = match config.metrics.listen {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.with_context(|| format!("cannot listen for metrics on {addr}"))?)
        }
        None => None,
    };
    let limits = server::ConnectionLimits::from_config(&config.server);
    let metrics_server = metrics_listener.map(|listener| {
        let app = server::metrics_app(state.clone());
        tokio::spawn(server::serve_connections(listener, app, limits, std::future::pending()))
    });
    let app = server::app(config, state);
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%addr, "serving");
    // Stop accepting on shutdown; in-flight requests get the drain timeout
    // to finish. Their transactions commit or roll back as usual, so even
    // a cut-off request loses nothing that was acknowledged.
    let drain = std::time::Duration::from_millis(config.server.drain_timeout_ms);
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = draining_tx.send(());
    };
    let server = server::serve_connections(listener, app, limits, shutdown);
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => {}
        () = async { let _ = draining_rx.await; tokio::time::sleep(drain).await } => {
            tracing::warn!(drain_timeout_ms = config.server.drain_timeout_ms, "drain timeout passed; closing remaining connections");
        }
    }
    if let Some(dispatcher) = dispatcher {
        dispatcher.stop().await;
    }
    upkeep.abort();
    rollouts.abort();
    cluster.stop().await;
    dashboard.abort();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}
