//! The HTTP face of the host: component routes from the config, health
//! endpoints, the admin API and the dashboard, and the middleware every
//! request passes through.
//!
//! Handlers here see plain runtime types (`HandlerRequest`, `Invocation`),
//! never wasmtime's.

mod admin;
mod components;
mod connections;
pub mod dashboard;
mod front;
mod health;
mod http_metrics;
mod limits;
mod metrics_endpoint;
mod request_id;
pub mod stats;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::{Method, Uri};

use crate::clock::SharedClock;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::db::Database;
use crate::error::AppError;
use crate::outbox::DeliveryTallies;
use crate::rollout::Rollouts;
use crate::runtime::Runtime;
use crate::telemetry::metrics::Metrics;
use stats::Stats;

pub use admin::{ACTOR_HEADER, AdminAuth, TOKEN_ENV as ADMIN_TOKEN_ENV};
pub use connections::{ConnectionLimits, serve_connections};
pub use limits::{API_KEY_HEADER, RateLimits};
pub use request_id::RequestId;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    /// Canary rollouts and the watch after plain deploys.
    pub rollouts: Arc<Rollouts>,
    pub db: Database,
    /// The time breakers, backoff and leases read.
    pub clock: SharedClock,
    pub admin: Arc<AdminAuth>,
    /// Largest component upload the admin API takes.
    pub max_upload_bytes: usize,
    pub metrics: Arc<Metrics>,
    /// API keys and rate limiters.
    pub rate_limits: Arc<RateLimits>,
    pub started: Instant,
    /// Delivery attempts per connector, readable (the dashboard's rates).
    pub deliveries: Arc<DeliveryTallies>,
    /// The per-second rings the dashboard reads.
    pub stats: Arc<Stats>,
    /// This replica among the others sharing the database.
    pub cluster: Arc<Cluster>,
}

/// The whole router: component routes, health, fallbacks and middleware.
pub fn app(config: &Config, state: AppState) -> Router {
    let components = components::router(config, &state);
    let header_limits =
        limits::HeaderLimits { max_headers: config.server.max_headers, max_bytes: config.server.max_header_bytes };
    let request_timeout = std::time::Duration::from_millis(config.server.request_timeout_ms);
    Router::new()
        .merge(components)
        .merge(health::router())
        .merge(dashboard::pages())
        .merge(admin::router(state.clone(), config.admin.max_upload_bytes))
        .merge(metrics_endpoint::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(front::FrontLayer::new(
            http_metrics::HttpMetrics::new(state.metrics.clone()),
            header_limits,
            request_timeout,
        ))
        .with_state(state)
}

/// Only `/metrics`, for a separate metrics listener.
pub fn metrics_app(state: AppState) -> Router {
    metrics_endpoint::router().with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> AppError {
    AppError::NoRoute { method: method.to_string(), path: uri.path().to_owned() }
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_owned() }
}
