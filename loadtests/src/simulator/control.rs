//! The HTTP control API: faults on and off, the ledger, health. Each route
//! is a thin JSON wrapper over the [`Simulator`] method of the same meaning,
//! so in-process tests and scripts driving the binary see the same rules.
//! Setters answer 204; bad input answers 400 with `{"error": "…"}`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{Channel, ControlError, DEFAULT_FAIL_STATUS, Simulator, error_response};

/// The control routes.
pub(super) fn router(simulator: Arc<Simulator>) -> Router {
    Router::new()
        .route("/control/fail", post(fail))
        .route("/control/down", post(down))
        .route("/control/slow", post(slow))
        .route("/control/reject", post(reject))
        .route("/control/reset", post(reset))
        .route("/received", get(received))
        .route("/received/ids", get(received_ids))
        .route("/health", get(|| async { StatusCode::OK }))
        .with_state(simulator)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    /// Every channel when absent or null.
    #[serde(default)]
    channel: Option<Channel>,
    rate: f64,
    #[serde(default = "default_fail_status")]
    status: u16,
}

fn default_fail_status() -> u16 {
    DEFAULT_FAIL_STATUS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownRequest {
    down: bool,
    /// The whole delivery listener when absent or null.
    #[serde(default)]
    channel: Option<Channel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowRequest {
    latency_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectRequest {
    pattern: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsQuery {
    channel: Channel,
}

/// Why a control request failed, as the caller gets to see it.
enum ApiError {
    BadRequest(String),
    Control(ControlError),
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        ApiError::Control(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(message) => error_response(StatusCode::BAD_REQUEST, message),
            ApiError::Control(err @ ControlError::Rebind { .. }) => {
                // The socket error is for the operator's log, not the caller.
                tracing::error!(error = %anyhow::Error::from(err), "control request failed");
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "cannot bring deliveries back up")
            }
            ApiError::Control(err) => error_response(StatusCode::BAD_REQUEST, err.to_string()),
        }
    }
}

async fn fail(
    State(simulator): State<Arc<Simulator>>,
    request: Result<Json<FailRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(request) = request?;
    simulator.set_fail(request.channel, request.rate, request.status)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn down(
    State(simulator): State<Arc<Simulator>>,
    request: Result<Json<DownRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(request) = request?;
    match request.channel {
        Some(channel) => simulator.set_channel_down(channel, request.down),
        None => simulator.set_down(request.down)?,
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn slow(
    State(simulator): State<Arc<Simulator>>,
    request: Result<Json<SlowRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(request) = request?;
    simulator.set_latency(request.latency_ms);
    Ok(StatusCode::NO_CONTENT)
}

async fn reject(
    State(simulator): State<Arc<Simulator>>,
    request: Result<Json<RejectRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(request) = request?;
    simulator.reject_recipients(request.pattern)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reset(State(simulator): State<Arc<Simulator>>) -> Result<StatusCode, ApiError> {
    simulator.reset()?;
    Ok(StatusCode::NO_CONTENT)
}

async fn received(State(simulator): State<Arc<Simulator>>) -> Json<super::Received> {
    Json(simulator.received())
}

async fn received_ids(
    State(simulator): State<Arc<Simulator>>,
    query: Result<Query<IdsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query?;
    Ok(Json(serde_json::json!({ "ids": simulator.received_ids(query.channel) })))
}
