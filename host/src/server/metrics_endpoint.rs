//! `GET /metrics`: the Prometheus text exposition. Values that are cheaper
//! to read than to track — breaker states, outbox counts and ages, database
//! pool, pooling allocator, readiness — are sampled here, at scrape time.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;
use crate::db::outbox::Status;
use crate::telemetry::metrics::{
    ADMISSION_QUEUE_DEPTH, ADMISSION_RUNNING, BREAKER_STATE, BREAKER_TRIPS, DB_POOL_CONNECTIONS, DB_POOL_MAX,
    LOG_LINES_DROPPED, OUTBOX_MESSAGES, OUTBOX_OLDEST_PENDING, POOL_COMPONENT_INSTANCES, POOL_MEMORIES,
    POOL_RESIDENT_BYTES, POOL_WARM_MEMORIES, READY,
};

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    sample(&state).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.render())
}

/// Refreshes the sampled gauges.
pub async fn sample(state: &AppState) {
    let metrics = &state.metrics;
    for (component, breaker) in state.runtime.breakers() {
        metrics.gauge(BREAKER_STATE, &[("component", component)]).set(breaker.state() as u8 as f64);
        metrics.counter(BREAKER_TRIPS, &[("component", component)]).absolute(breaker.trips());
    }

    for (component, gate) in state.runtime.admissions() {
        metrics.gauge(ADMISSION_QUEUE_DEPTH, &[("component", component)]).set(gate.queue_depth() as f64);
        metrics.gauge(ADMISSION_RUNNING, &[("component", component)]).set(gate.running() as f64);
    }

    let (size, idle, max) = state.db.pool_usage();
    metrics.gauge(DB_POOL_CONNECTIONS, &[("state", "idle")]).set(f64::from(idle));
    metrics.gauge(DB_POOL_CONNECTIONS, &[("state", "in_use")]).set(f64::from(size.saturating_sub(idle)));
    metrics.gauge(DB_POOL_MAX, &[]).set(f64::from(max));

    if let Some(pool) = state.runtime.pool_usage() {
        metrics.gauge(POOL_COMPONENT_INSTANCES, &[]).set(pool.component_instances as f64);
        metrics.gauge(POOL_MEMORIES, &[]).set(pool.memories as f64);
        metrics.gauge(POOL_WARM_MEMORIES, &[]).set(pool.unused_warm_memories as f64);
        metrics.gauge(POOL_RESIDENT_BYTES, &[]).set(pool.unused_memory_bytes_resident as f64);
    }

    let ready = state.db.ping().await.is_ok();
    metrics.gauge(READY, &[]).set(if ready { 1.0 } else { 0.0 });
    metrics.counter(LOG_LINES_DROPPED, &[]).absolute(crate::telemetry::dropped_lines());
    if !ready {
        return;
    }
    match state.db.outbox_status_counts().await {
        Ok(counts) => {
            // Statuses with no rows read as zero, not as a stale value.
            for connector in state.runtime.connector_names() {
                for status in Status::ALL {
                    let n = counts
                        .iter()
                        .find(|c| c.connector == connector && c.status == status.as_str())
                        .map_or(0, |c| c.count);
                    metrics
                        .gauge(OUTBOX_MESSAGES, &[("connector", connector), ("status", status.label())])
                        .set(n as f64);
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot sample outbox counts"),
    }
    match state.db.outbox_oldest_pending().await {
        Ok(oldest) => {
            let now = state.clock.now_millis();
            for connector in state.runtime.connector_names() {
                let age = oldest.iter().find(|(c, _)| c == connector).map_or(0, |(_, created)| (now - created).max(0));
                metrics.gauge(OUTBOX_OLDEST_PENDING, &[("connector", connector)]).set(age as f64 / 1_000.0);
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot sample outbox ages"),
    }
}
