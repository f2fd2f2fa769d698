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
//!   loaded components, one invocation.
//! - [`capabilities`]: the host side of each interface components import.
//! - [`db`]: the sqlx pool (SQLite or PostgreSQL), migrations and queries.
//! - [`server`]: axum routes, health probes, request ids.
//! - [`error`]: the one error type HTTP handlers return.
//! - [`telemetry`]: logging setup.
//!
//! [`run`] serves a config on a listener until a shutdown future resolves,
//! so tests bind port 0 and stop the server cleanly.

pub mod capabilities;
pub mod config;
pub mod db;
pub mod error;
pub mod runtime;
pub mod server;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::db::Database;
use crate::runtime::Runtime;
use crate::server::AppState;

/// Connects the database and loads every component: everything that can
/// fail before the listener accepts a connection.
pub async fn prepare(config: &Config) -> anyhow::Result<AppState> {
    let db = Database::connect(&config.database.url, config.database.max_connections).await?;
    let runtime = Runtime::load(config, db.clone()).await?;
    Ok(AppState { runtime: Arc::new(runtime), db, started: Instant::now() })
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

/// Serves an already prepared state.
pub async fn serve(
    config: &Config,
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let db = state.db.clone();
    let app = server::app(config, state);
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(%addr, "serving");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("server failed")?;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}
