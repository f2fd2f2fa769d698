//! `/dashboard`: a page embedded in the binary (`host/assets/dashboard/`),
//! and the data it reads, behind the admin token:
//!
//! - `GET /admin/stats`: a JSON snapshot, each component's last five
//!   minutes of per-second points included;
//! - `GET /admin/stats/stream`: server-sent events, one `stats` event a
//!   second with the same snapshot minus the series (the page appends each
//!   event's `last` point to what it fetched).
//!
//! The shape is documented in the README ("Dashboard"). The page itself and
//! its scripts are public: they hold no data, and ask for the token before
//! they fetch any.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::server::stats::{INTERVAL, RING_SECONDS};
use crate::telemetry::metrics::DASHBOARD_STREAMS_DROPPED;

/// Audit rows shown as the deploy history.
const HISTORY_ROWS: i64 = 25;

/// The page's files: name, content type, bytes.
const ASSETS: [(&str, &str, &str); 6] = [
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../assets/dashboard/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../assets/dashboard/app.css")),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard/vendor/uPlot.iife.min.js"),
    ),
    ("uPlot.min.css", "text/css; charset=utf-8", include_str!("../../assets/dashboard/vendor/uPlot.min.css")),
    ("uPlot.LICENSE", "text/plain; charset=utf-8", include_str!("../../assets/dashboard/vendor/LICENSE")),
    ("index.html", "text/html; charset=utf-8", include_str!("../../assets/dashboard/index.html")),
];

/// Scripts and styles only from the host itself: the page works offline
/// and runs nothing it did not ship.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The public part: the page and its files.
pub fn pages() -> Router<AppState> {
    Router::new().route("/dashboard", get(index)).route("/dashboard/{file}", get(asset))
}

/// The data, for the admin router (behind the token).
pub fn data() -> Router<AppState> {
    Router::new().route("/admin/stats", get(stats)).route("/admin/stats/stream", get(stream))
}

async fn index() -> Response {
    serve_asset("index.html")
}

async fn asset(Path(file): Path<String>) -> Response {
    serve_asset(&file)
}

fn serve_asset(name: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(file, _, _)| *file == name) else {
        return (StatusCode::NOT_FOUND, "no such dashboard file").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    response
}

async fn stats(State(state): State<AppState>) -> Json<Value> {
    Json(snapshot(&state, true).await)
}

/// One `stats` event now, then one per published snapshot.
async fn stream(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first: Arc<str> = snapshot(&state, false).await.to_string().into();
    let dropped = state.metrics.counter(DASHBOARD_STREAMS_DROPPED, &[]);
    let events = events(first, state.stats.subscribe(), dropped);
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `first`, then every snapshot `receiver` gets. A client that falls
/// [`STREAM_BUFFER`](crate::server::stats::STREAM_BUFFER) snapshots
/// behind ends its stream, counted in `dropped`: what a stalled client holds
/// is that bounded buffer, never more.
fn events(
    first: Arc<str>,
    receiver: broadcast::Receiver<Arc<str>>,
    dropped: metrics::Counter,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((Some(first), receiver), move |(first, mut receiver)| {
        let dropped = dropped.clone();
        async move {
            let data = match first {
                Some(data) => data,
                None => match receiver.recv().await {
                    Ok(data) => data,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "dashboard stream fell behind; closed");
                        dropped.increment(1);
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(Event::default().event("stats").data(&*data)), (None, receiver)))
        }
    })
}

/// Samples the rings every second and, while a stream is open, publishes
/// the snapshot every stream sends.
pub fn start(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            state.stats.sample();
            if state.stats.watchers() > 0 {
                let data: Arc<str> = snapshot(&state, false).await.to_string().into();
                state.stats.publish(data);
            }
        }
    })
}

/// The snapshot `/admin/stats` answers; `series` adds each component's
/// ring. A part the database cannot give is `null`, with the error in
/// `problems`: the rest still comes.
pub async fn snapshot(state: &AppState, series: bool) -> Value {
    let mut problems = Vec::new();
    let mut components = Vec::new();
    for info in state.runtime.registry().list() {
        let breaker = state.runtime.breaker(&info.name);
        let admission = state.runtime.admissions().find(|(name, _)| *name == info.name).map(|(_, gate)| gate);
        let rollout = state.rollouts.status(&info.name).await;
        let mut component = json!({
            "name": info.name,
            "world": info.world,
            "version": info.version,
            "canary": info.canary.as_ref().map(|c| json!({ "version": c.version, "weight": c.weight })),
            "rollout": rollout,
            "breaker": breaker.map(|b| json!({ "state": b.state().as_str(), "trips": b.trips() })),
            "admission": admission.map(|gate| json!({ "running": gate.running(), "queued": gate.queue_depth() })),
            "last": state.stats.last(&info.name),
        });
        if series {
            component["series"] = json!(state.stats.series(&info.name));
        }
        components.push(component);
    }

    let now = state.clock.now_millis();
    let outbox = match state.db.outbox_backlog().await {
        Ok(backlog) => {
            let connectors: Vec<Value> = state
                .runtime
                .connector_names()
                .map(|connector| {
                    let of = |status: &str| backlog.iter().find(|b| b.connector == connector && b.status == status);
                    json!({
                        "connector": connector,
                        "pending": of("PENDING").map_or(0, |b| b.count),
                        "dead": of("DEAD").map_or(0, |b| b.count),
                        "delivered_per_s": state.stats.delivery_rate(connector),
                        "oldest_pending_age_ms": of("PENDING").map(|b| (now - b.oldest).max(0)),
                    })
                })
                .collect();
            json!(connectors)
        }
        Err(err) => {
            problems.push(format!("outbox: {err}"));
            Value::Null
        }
    };
    let deploys = match state.db.deploy_history(HISTORY_ROWS).await {
        Ok(rows) => json!(
            rows.into_iter()
                .map(|row| json!({
                    "at": row.at,
                    "actor": row.entry.actor,
                    "action": row.entry.action,
                    "component": row.entry.component,
                    "version": row.entry.version,
                    "result": row.entry.result,
                    "reason": row.entry.reason,
                }))
                .collect::<Vec<_>>()
        ),
        Err(err) => {
            problems.push(format!("deploy history: {err}"));
            Value::Null
        }
    };
    let (points, bytes) = state.stats.footprint();
    json!({
        "at": now,
        "interval_ms": INTERVAL.as_millis() as u64,
        "components": components,
        "outbox": outbox,
        "deploys": deploys,
        "ring": { "seconds": RING_SECONDS, "points": points, "bytes": bytes },
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use futures::StreamExt as _;

    use super::*;
    use crate::server::stats::STREAM_BUFFER;

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_once_the_buffer_is_full() {
        let (feed, receiver) = broadcast::channel::<Arc<str>>(STREAM_BUFFER);
        let metrics = crate::telemetry::metrics::Metrics::new(100);
        let dropped = metrics.counter(DASHBOARD_STREAMS_DROPPED, &[]);
        let mut events = Box::pin(events("first".into(), receiver, dropped));
        assert!(events.next().await.is_some(), "the snapshot of the moment comes at once");
        // A reader that keeps up gets every snapshot.
        feed.send("second".into()).unwrap();
        assert!(events.next().await.is_some());
        // One that falls behind by more than the buffer is closed.
        for i in 0..=STREAM_BUFFER {
            feed.send(format!("{i}").into()).unwrap();
        }
        assert!(events.next().await.is_none(), "a stream that fell behind ends");
        assert!(metrics.render().contains("dashboard_streams_dropped_total 1"), "{}", metrics.render());
    }
}
