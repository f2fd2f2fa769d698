//! The admin API: outbox inspection and requeueing, behind a bearer token.
//!
//! The token comes from `SWITCHYARD_ADMIN_TOKEN` and is compared in
//! constant time. With no token configured every admin route refuses, unless
//! the operator explicitly runs with `--insecure-admin` for local
//! development.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::error::AppError;

/// Environment variable holding the admin bearer token.
pub const TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";
/// Most rows one inspection returns.
const MAX_ROWS: i64 = 500;

/// Who may call the admin API.
#[derive(Debug, Clone, Default)]
pub struct AdminAuth {
    token: Option<String>,
    /// Development only: admit every caller when no token is set.
    insecure: bool,
}

impl AdminAuth {
    pub fn new(token: Option<String>, insecure: bool) -> Self {
        Self { token: token.filter(|t| !t.is_empty()), insecure }
    }

    pub fn from_env() -> Self {
        Self::new(std::env::var(TOKEN_ENV).ok(), false)
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else { return self.insecure };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        constant_time_eq(presented.as_bytes(), expected.as_bytes())
    }
}

/// Compares digests, so neither the contents nor the length of the token
/// show in the timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/outbox", get(outbox))
        .route("/admin/outbox/{id}/retry", post(retry))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.admin.admits(request.headers()) {
        return next.run(request).await;
    }
    tracing::warn!(path = request.uri().path(), "admin request refused: missing or wrong token");
    let mut response =
        (StatusCode::UNAUTHORIZED, Json(json!({ "error": "admin token missing or invalid" }))).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    status: Option<String>,
    connector: Option<String>,
    limit: Option<i64>,
}

/// Counts by connector and status, and the most recent matching rows.
async fn outbox(State(state): State<AppState>, Query(query): Query<OutboxQuery>) -> Result<Json<Value>, AppError> {
    let status = match query.status.as_deref().map(str::to_ascii_uppercase) {
        None => None,
        Some(s) if ["PENDING", "DELIVERED", "DEAD"].contains(&s.as_str()) => Some(s),
        Some(s) => return Err(AppError::BadRequest(format!("unknown status {s:?}: use pending, delivered or dead"))),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_ROWS);
    let counts = state.db.outbox_status_counts().await.map_err(anyhow::Error::from)?;
    let messages = state
        .db
        .outbox_recent(status.as_deref(), query.connector.as_deref(), limit)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(Json(json!({ "counts": counts, "messages": messages })))
}

/// Requeues a DEAD message for immediate delivery.
async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, AppError> {
    let now = state.clock.now_millis();
    if state.db.outbox_retry_dead(&id, now).await.map_err(anyhow::Error::from)? {
        state.db.signal_outbox();
        tracing::info!(message_id = id, "dead message requeued");
        Ok(Json(json!({ "id": id, "status": "PENDING" })))
    } else {
        Err(AppError::NotFound(format!("no dead message {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    #[test]
    fn tokens_are_required_unless_insecure() {
        let auth = AdminAuth::new(Some("s3cret".into()), false);
        assert!(auth.admits(&bearer("s3cret")));
        assert!(!auth.admits(&bearer("s3cre")));
        assert!(!auth.admits(&HeaderMap::new()));
        assert!(!AdminAuth::new(None, false).admits(&bearer("anything")), "no token configured: refuse");
        assert!(AdminAuth::new(None, true).admits(&HeaderMap::new()), "explicit development mode");
        assert!(!AdminAuth::new(Some(String::new()), false).admits(&bearer("")), "empty token is no token");
    }
}
