//! Health: liveness, readiness, and a JSON summary for people and tools.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use crate::db::outbox::Status;

pub fn router() -> Router<AppState> {
    Router::new().route("/health/live", get(live)).route("/health/ready", get(ready)).route("/health", get(summary))
}

/// The process is up and serving HTTP.
async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// Ready to serve: the database answers and every configured component is
/// loaded (they are before the listener opens, but a readiness probe should
/// not rely on that).
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let missing: Vec<&str> =
        state.runtime.component_names().filter(|name| !state.runtime.registry().contains(name)).collect();
    let database = state.db.ping().await;
    match (&database, missing.is_empty()) {
        (Ok(()), true) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        _ => {
            if let Err(err) = &database {
                tracing::warn!(error = %err, "readiness check failed: database");
            }
            let body = json!({
                "status": "unavailable",
                "database": database.is_ok(),
                "components_not_loaded": missing,
            });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}

/// Uptime, build, each component's version, breaker and last outcome,
/// database latency and outbox backlog.
async fn summary(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let started = Instant::now();
    let database = state.db.ping().await;
    let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let rollouts = state.rollouts.states().await;
    let components: Vec<Value> = state
        .runtime
        .registry()
        .list()
        .into_iter()
        .map(|c| {
            let breaker = state.runtime.breaker(&c.name).map(|b| b.state().as_str());
            let rollout = rollouts.get(&c.name).map(|(state, weight)| json!({ "state": state, "weight": weight }));
            json!({
                "name": c.name,
                "world": c.world,
                "version": c.version,
                "breaker": breaker,
                "last_outcome": c.last_outcome,
                "canary": c.canary.as_ref().map(|canary| json!({ "version": canary.version, "weight": canary.weight })),
                "rollout": rollout,
            })
        })
        .collect();
    let outbox = match state.db.outbox_status_counts().await {
        Ok(counts) => {
            let total =
                |status: Status| counts.iter().filter(|c| c.status == status.as_str()).map(|c| c.count).sum::<i64>();
            Value::Object(
                Status::ALL.into_iter().map(|status| (status.label().to_owned(), json!(total(status)))).collect(),
            )
        }
        Err(_) => Value::Null,
    };
    let cluster = match state.cluster.convergence().await {
        Ok(convergence) => json!(convergence),
        Err(_) => json!({ "replica": state.cluster.id(), "converged": null }),
    };
    let healthy = database.is_ok();
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "database": { "reachable": healthy, "backend": format!("{:?}", state.db.backend()).to_lowercase(), "latency_ms": latency_ms },
        "components": components,
        "outbox": outbox,
        "cluster": cluster,
    });
    (status, Json(body))
}
