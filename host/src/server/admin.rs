//! The admin API — component deploys, rollbacks and listings, outbox
//! inspection and requeueing — behind a bearer token.
//!
//! The token comes from `SWITCHYARD_ADMIN_TOKEN` and is compared in
//! constant time. With no token configured every admin route refuses, unless
//! the operator explicitly runs with `--insecure-admin` for local
//! development.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::db::audit::AuditEntry;
use crate::db::outbox::Status;
use crate::error::AppError;
use crate::rollout::RolloutError;
use crate::runtime::{DeployError, PrepareError};

/// Names the person or system behind an admin call, for the audit log.
pub const ACTOR_HEADER: &str = "x-switchyard-actor";
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

pub fn router(state: AppState, max_upload_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/admin/outbox", get(outbox))
        .route("/admin/outbox/{id}/retry", post(retry))
        .route("/admin/cluster", get(cluster))
        .route("/admin/components", get(list_components))
        .route("/admin/components/{name}", get(component).put(deploy).layer(DefaultBodyLimit::max(max_upload_bytes)))
        .route("/admin/components/{name}/rollback", post(rollback))
        .route("/admin/components/{name}/rollout", get(rollout_status))
        .route("/admin/components/{name}/rollout/promote", post(promote))
        .route("/admin/components/{name}/rollout/abort", post(abort))
        .merge(super::dashboard::data())
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// Who the caller says they are, for the audit log; the token proves only
/// that they may act.
fn actor(headers: &HeaderMap) -> String {
    headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .unwrap_or("admin")
        .to_owned()
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.admin.admits(request.headers()) {
        return next.run(request).await;
    }
    tracing::warn!(path = request.uri().path(), "admin request refused: missing or wrong token");
    let reason = if request.headers().contains_key(header::AUTHORIZATION) { "wrong token" } else { "missing token" };
    let entry = AuditEntry {
        actor: actor(request.headers()),
        action: "auth".into(),
        component: None,
        version: None,
        result: "denied".into(),
        reason: Some(format!("{reason}: {} {}", request.method(), request.uri().path())),
    };
    if let Err(err) = state.db.audit(&entry).await {
        tracing::error!(error = %err, "cannot write the audit log");
    }
    AppError::Unauthorized { message: "admin token missing or invalid", bearer: true }.into_response()
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
    let status = match query.status.as_deref() {
        None => None,
        Some(name) => match Status::parse(name) {
            Some(status) => Some(status.as_str()),
            None => {
                let known: Vec<&str> = Status::ALL.iter().map(|s| s.label()).collect();
                return Err(AppError::BadRequest(format!("unknown status {name:?}: use {}", known.join(", "))));
            }
        },
    };
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_ROWS);
    let counts = state.db.outbox_status_counts().await.map_err(anyhow::Error::from)?;
    let messages =
        state.db.outbox_recent(status, query.connector.as_deref(), limit).await.map_err(anyhow::Error::from)?;
    Ok(Json(json!({ "counts": counts, "messages": messages })))
}

/// Requeues a DEAD message for immediate delivery.
async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, AppError> {
    let now = state.clock.now_millis();
    if state.db.outbox_retry_dead(&id, now).await.map_err(anyhow::Error::from)? {
        state.db.signal_outbox();
        tracing::info!(message_id = id, "dead message requeued");
        Ok(Json(json!({ "id": id, "status": Status::Pending })))
    } else {
        Err(AppError::NotFound(format!("no dead message {id}")))
    }
}

/// Every loaded component with its active version.
/// Every replica sharing the database: address, heartbeat age, live or
/// gone, what it serves and whether that is what was deployed.
async fn cluster(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let view = state.cluster.view().await.map_err(anyhow::Error::from)?;
    Ok(Json(json!(view)))
}

/// What each live replica serves of `name`, and whether it is `version`
/// (what the deploy history names), with why not when it could not swap.
async fn replicas_of(state: &AppState, name: &str, version: &str) -> Value {
    let Ok(view) = state.cluster.view().await else { return Value::Null };
    let wanted = view.active.get(name).map_or(version, String::as_str);
    let replicas: Vec<Value> = view
        .replicas
        .iter()
        .filter(|member| member.state == crate::cluster::members::Liveness::Live)
        .map(|member| {
            let serving = member.serving.get(name).map(|served| served.version.as_str());
            let error = member.diverged.iter().find(|d| d.component == name).map(|d| d.error.as_str());
            json!({ "id": member.id, "version": serving, "converged": serving == Some(wanted), "error": error })
        })
        .collect();
    json!(replicas)
}

async fn list_components(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "components": state.runtime.registry().list() }))
}

/// A component's active version, when and by whom it was deployed, its
/// history and the stored versions it can roll back to.
async fn component(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, AppError> {
    match state.runtime.component_details(&name).await.map_err(anyhow::Error::from)? {
        Some(details) => {
            let mut body = json!(details);
            body["rollout"] = json!(state.rollouts.status(&name).await);
            body["replicas"] = replicas_of(&state, &name, &details.version).await;
            Ok(Json(body))
        }
        None => Err(AppError::NotFound(format!("no component named {name}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployQuery {
    /// The new version's first share (%) as a canary; none deploys at once.
    canary: Option<String>,
}

/// `?canary=P`: an integer share from 1 to 99.
fn canary_share(query: Result<Query<DeployQuery>, QueryRejection>) -> Result<Option<u8>, AppError> {
    let Query(query) = query.map_err(|rejection| AppError::BadRequest(rejection.body_text()))?;
    match query.canary.as_deref() {
        None => Ok(None),
        Some(text) => match text.parse::<u8>() {
            Ok(share @ 1..=99) => Ok(Some(share)),
            _ => Err(AppError::BadRequest(format!(
                "canary must be an integer from 1 to 99 (the new version's first share in %), not {text:?}"
            ))),
        },
    }
}

/// Uploads a new version: body = the component's bytes; `?canary=P` starts
/// a canary rollout with P % of the invocations.
async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<DeployQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let actor = actor(&headers);
    let upload = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit: state.max_upload_bytes },
        _ => AppError::BadRequest(rejection.body_text()),
    });
    let (canary, bytes) = match (canary_share(query), upload) {
        (Ok(canary), Ok(bytes)) => (canary, bytes),
        (Err(err), _) | (_, Err(err)) => {
            let entry = AuditEntry {
                actor,
                action: "deploy".into(),
                component: Some(name),
                version: None,
                result: "rejected".into(),
                reason: Some(err.to_string()),
            };
            if let Err(audit_err) = state.db.audit(&entry).await {
                tracing::error!(error = %audit_err, "cannot write the audit log");
            }
            return Err(err);
        }
    };
    let report = state.rollouts.deploy(&name, bytes, &actor, canary).await.map_err(rollout_error)?;
    Ok(Json(json!(report)))
}

/// The running (or last) rollout of a component.
async fn rollout_status(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, AppError> {
    if !state.runtime.registry().contains(&name) {
        return Err(AppError::NotFound(format!("no component named {name}")));
    }
    Ok(Json(json!({ "rollout": state.rollouts.status(&name).await })))
}

/// Promotes the running canary now.
async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let status = state.rollouts.promote(&name, &actor(&headers)).await.map_err(rollout_error)?;
    Ok(Json(json!({ "rollout": status })))
}

/// Aborts the running canary: the stable version serves everything.
async fn abort(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let status = state.rollouts.abort(&name, &actor(&headers)).await.map_err(rollout_error)?;
    Ok(Json(json!({ "rollout": status })))
}

fn rollout_error(err: RolloutError) -> AppError {
    match err {
        RolloutError::Deploy(err) => deploy_error(err),
        RolloutError::Running { ref status, .. } => {
            AppError::RolloutConflict { message: err.to_string(), rollout: Some(json!(status)) }
        }
        RolloutError::NotRunning(_) | RolloutError::Elsewhere(_) => {
            AppError::RolloutConflict { message: err.to_string(), rollout: None }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackQuery {
    version: Option<String>,
}

/// Back to the previous version, or to `?version=`.
async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<RollbackQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let report =
        state.rollouts.rollback(&name, query.version.as_deref(), &actor(&headers)).await.map_err(rollout_error)?;
    Ok(Json(json!(report)))
}

/// Rejections say why: these messages are for the operator who uploaded.
fn deploy_error(err: DeployError) -> AppError {
    match err {
        DeployError::UnknownComponent(_) | DeployError::UnknownVersion { .. } => AppError::NotFound(err.to_string()),
        DeployError::NoPrevious(_) | DeployError::SameVersion { .. } | DeployError::NoCanary(_) => {
            AppError::Conflict(err.to_string())
        }
        DeployError::Rejected(PrepareError::NotWasm | PrepareError::CoreModule) => {
            AppError::BadRequest(err.to_string())
        }
        DeployError::Rejected(_) => AppError::Unprocessable(err.to_string()),
        DeployError::Storage(_) | DeployError::Corrupt { .. } => AppError::Internal(err.into()),
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
