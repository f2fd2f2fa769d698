//! Request metrics: count, duration and in-flight gauge, labelled by the
//! matched route *template* (never the raw path), method and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::telemetry::metrics::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS};

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let in_flight = state.metrics.gauge(HTTP_IN_FLIGHT, &[]);
    in_flight.increment(1.0);
    let response = next.run(request).await;
    in_flight.decrement(1.0);
    let status = response.status().as_u16().to_string();
    state.metrics.counter(HTTP_REQUESTS, &[("route", &route), ("method", &method), ("status", &status)]).increment(1);
    state
        .metrics
        .histogram(HTTP_DURATION, &[("route", &route), ("method", &method)])
        .record(started.elapsed().as_secs_f64());
    response
}
