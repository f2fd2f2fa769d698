//! The provider endpoints connectors deliver to: `POST /email`, `POST /sms`
//! and `POST /webhook/{*path}`. Each handler only checks the request's
//! shape; what to answer (faults, duplicates) is decided in one place,
//! [`Simulator::decide`], so all three channels behave alike.
//!
//! Payloads are parsed strictly (unknown fields are refused): the simulator
//! exists to catch connectors that drift from the providers' contracts.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Channel, Outcome, Simulator, error_response};

/// Header every delivery must carry; repeats of it are duplicates.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Optional header with the connector's attempt number, 1 for the first try.
const ATTEMPT: &str = "x-attempt";

/// `POST /email` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "parsed to hold connectors to the contract; only `to` is used")]
struct Email {
    to: String,
    subject: Option<String>,
    body: String,
    #[serde(default)]
    metadata: Vec<(String, String)>,
}

/// `POST /sms` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "parsed to hold connectors to the contract; only `to` is used")]
struct Sms {
    to: String,
    body: String,
}

/// The delivery endpoints.
pub(super) fn router(simulator: Arc<Simulator>) -> Router {
    Router::new()
        .route("/email", post(email))
        .route("/sms", post(sms))
        .route("/webhook/{*path}", post(webhook))
        .with_state(simulator)
}

async fn email(State(simulator): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    let recipient = parse::<Email>(&body).and_then(|email| non_empty_recipient(email.to));
    deliver(&simulator, Channel::Email, &headers, recipient).await
}

async fn sms(State(simulator): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    let recipient = parse::<Sms>(&body).and_then(|sms| non_empty_recipient(sms.to));
    deliver(&simulator, Channel::Sms, &headers, recipient).await
}

/// Any body and content type is accepted: a webhook receiver's format is the
/// subscriber's business, not the provider's.
async fn webhook(State(simulator): State<Arc<Simulator>>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    deliver(&simulator, Channel::Webhook, &headers, Ok(path)).await
}

/// Parses a JSON payload.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| format!("invalid JSON payload: {err}"))
}

/// A message nobody could receive is malformed, not a rejected recipient.
fn non_empty_recipient(to: String) -> Result<String, String> {
    if to.trim().is_empty() { Err("`to` must not be empty".to_owned()) } else { Ok(to) }
}

/// The common path of every delivery: wait out the configured latency, then
/// let the simulator decide and record, then answer.
async fn deliver(
    simulator: &Simulator,
    channel: Channel,
    headers: &HeaderMap,
    recipient: Result<String, String>,
) -> Response {
    // Slow providers are slow whatever they answer, so the delay comes first
    // and applies to errors too.
    let latency = simulator.arrive(recipient.as_deref().ok());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let key = idempotency_key(headers);
    let attempt = attempt(headers);
    let request = match (&key, &recipient, &attempt) {
        (Ok(key), Ok(recipient), Ok(_)) => Ok((key.as_str(), recipient.as_str())),
        (Err(problem), _, _) | (_, Err(problem), _) | (_, _, Err(problem)) => Err(problem.clone()),
    };
    let outcome = simulator.decide(channel, request);
    let attempt = attempt.ok().flatten();
    match outcome {
        Outcome::ChannelDown => {
            tracing::debug!(%channel, ?attempt, "channel down");
            error_response(StatusCode::SERVICE_UNAVAILABLE, format!("{channel} provider unavailable"))
        }
        Outcome::BadRequest(problem) => {
            tracing::debug!(%channel, %problem, "malformed delivery");
            error_response(StatusCode::BAD_REQUEST, problem)
        }
        Outcome::Rejected => {
            tracing::debug!(%channel, ?attempt, "recipient rejected");
            error_response(StatusCode::UNPROCESSABLE_ENTITY, "recipient rejected")
        }
        Outcome::Injected(status) => {
            tracing::debug!(%channel, %status, ?attempt, "injected failure");
            let mut response = error_response(status, "injected failure");
            if status == StatusCode::TOO_MANY_REQUESTS {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            response
        }
        Outcome::Delivered { provider_id, duplicate } => {
            tracing::debug!(%channel, %provider_id, duplicate, ?attempt, "delivered");
            // A first webhook delivery is queued for the subscriber (202); the
            // messaging providers accept synchronously (200). A repeat is a
            // lookup of the earlier result, hence 200 on every channel.
            let status = match (channel, duplicate) {
                (Channel::Webhook, false) => StatusCode::ACCEPTED,
                _ => StatusCode::OK,
            };
            (status, axum::Json(serde_json::json!({ "id": provider_id, "duplicate": duplicate }))).into_response()
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, String> {
    let value = headers.get(IDEMPOTENCY_KEY).ok_or("missing Idempotency-Key header")?;
    match value.to_str() {
        Ok(key) if !key.trim().is_empty() => Ok(key.to_owned()),
        _ => Err("Idempotency-Key must be non-empty visible ASCII".to_owned()),
    }
}

/// The attempt number, when the connector sent one. Only logged, but a
/// malformed one is refused so that a connector bug shows up in its tests.
fn attempt(headers: &HeaderMap) -> Result<Option<u32>, String> {
    let Some(value) = headers.get(ATTEMPT) else {
        return Ok(None);
    };
    match value.to_str().ok().and_then(|text| text.trim().parse::<u32>().ok()) {
        Some(attempt) if attempt >= 1 => Ok(Some(attempt)),
        _ => Err("x-attempt must be a positive integer".to_owned()),
    }
}
