//! Routes from `[[routes]]` to handler and `wasi:http/proxy` components.
//!
//! Each route becomes an axum route with its method and path template. For a
//! handler the request is copied into a `HandlerRequest`; a proxy component
//! gets the request itself with its body streaming in, and its response
//! body streams out. Either way the response (or a generic error) goes back
//! with the version that served it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawPathParams, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, any, on};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{AppState, RequestId};
use crate::config::{Config, World};
use crate::error::AppError;
use crate::runtime::{
    HandlerRequest, HandlerResponse, Invocation, Outcome, OutcomeRecord, ProxyReply, Rejection, RequestBodyError,
};

/// Names the exact component build that produced a response.
pub const VERSION_HEADER: &str = "x-switchyard-version";

/// Headers a component may not set: they belong to the connection, and the
/// server computes them itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Which component a route serves, and its body limit.
#[derive(Debug)]
struct Target {
    component: String,
    max_body_bytes: usize,
}

pub fn router(config: &Config, state: &AppState) -> Router<AppState> {
    // axum wants every method of one path on one MethodRouter.
    let mut paths: BTreeMap<&str, MethodRouter<AppState>> = BTreeMap::new();
    for route in &config.routes {
        let target = Arc::new(Target {
            component: route.component.clone(),
            max_body_bytes: route.max_body_bytes.unwrap_or(config.server.max_body_bytes),
        });
        let proxy = config.components.get(&route.component).is_some_and(|c| c.world == World::WasiHttp);
        let handler = if proxy {
            // The target travels with the handler, and the body limit is
            // enforced on the stream itself: no per-route layers to pass.
            on_method(&route.method, move |State(state), Extension(RequestId(request_id)), request| {
                serve_proxy(state, target.clone(), request_id, request)
            })
        } else {
            on_method(&route.method, serve)
                .layer::<_, Infallible>(Extension(target.clone()))
                .layer::<_, Infallible>(DefaultBodyLimit::max(target.max_body_bytes))
        };
        // Keyless routes without per-IP limits skip the limiter entirely.
        let handler = if state.rate_limits.applies(route.api_key) {
            let limits = (state.metrics.clone(), state.rate_limits.clone(), route.api_key);
            handler.layer::<_, Infallible>(axum::middleware::from_fn_with_state(limits, super::limits::rate_limit))
        } else {
            handler
        };
        let entry = paths.remove(route.path.as_str()).unwrap_or_default();
        paths.insert(&route.path, entry.merge(handler));
    }
    paths.into_iter().fold(Router::new(), |router, (path, methods)| router.route(path, methods))
}

/// `handler` for the route's method, or for any method (`*`).
fn on_method<H, T>(method: &str, handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    match method {
        "*" => any(handler),
        method => on(method_filter(method), handler),
    }
}

fn method_filter(method: &str) -> MethodFilter {
    match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        "DELETE" => MethodFilter::DELETE,
        "HEAD" => MethodFilter::HEAD,
        // Config validation admits only the methods above and OPTIONS.
        _ => MethodFilter::OPTIONS,
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    State(state): State<AppState>,
    Extension(target): Extension<Arc<Target>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    params: RawPathParams,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit: target.max_body_bytes },
        _ => AppError::BadRequest(rejection.body_text()),
    })?;
    let request = HandlerRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: headers
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
            .collect(),
        params: params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        body: body.to_vec(),
    };
    let invocation = state
        .runtime
        .invoke_handler(&target.component, request_id.clone(), request)
        .await
        .map_err(|err| AppError::Internal(err.into()))?;
    Ok(respond(invocation))
}

/// Hands the request, body still streaming in, to a `wasi:http/proxy`
/// component and streams its response back.
async fn serve_proxy(
    state: AppState,
    target: Arc<Target>,
    request_id: Arc<str>,
    request: Request,
) -> Result<Response, AppError> {
    let limit = target.max_body_bytes;
    let declared = request.headers().get(axum::http::header::CONTENT_LENGTH);
    if declared.and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).is_some_and(|n| n > limit as u64) {
        return Err(AppError::PayloadTooLarge { limit });
    }
    // A body without a length is cut off at the limit; the guest sees a
    // body-size error on its stream.
    let request = request.map(|body| Limited::new(body, limit).map_err(body_error));
    let reply = state
        .runtime
        .invoke_proxy(&target.component, request_id.clone(), request)
        .await
        .map_err(|err| AppError::Internal(err.into()))?;
    match reply {
        ProxyReply::Streaming { response, version } => {
            let mut response = response.map(axum::body::Body::new);
            if let Ok(version) = HeaderValue::from_str(&version) {
                response.headers_mut().insert(VERSION_HEADER, version);
            }
            Ok(response)
        }
        ProxyReply::Finished { record, rejection } => Ok(with_version(unanswered(&record, rejection), &record)),
    }
}

fn body_error(err: axum::BoxError) -> RequestBodyError {
    if err.is::<LengthLimitError>() { RequestBodyError::TooLarge } else { RequestBodyError::Failed(err.to_string()) }
}

fn respond(invocation: Invocation) -> Response {
    let Invocation { response, record, rejection } = invocation;
    let response = match response {
        Some(response) => into_http(response),
        None => unanswered(&record, rejection),
    };
    with_version(response, &record)
}

/// The answer for a call that produced no response of its own: refused,
/// timed out, or failed.
fn unanswered(record: &OutcomeRecord, rejection: Option<Rejection>) -> Response {
    match record.outcome {
        Outcome::Rejected => {
            // Whole seconds, rounded up: `Retry-After: 0` would invite a
            // retry storm against an open breaker or a full queue.
            let retry_after_ms = rejection.map_or(1_000, |r| u64::try_from(r.retry_after_ms).unwrap_or(1_000));
            AppError::Overloaded { retry_after_secs: retry_after_ms.div_ceil(1_000).max(1) }.into_response()
        }
        Outcome::Timeout => AppError::ComponentTimedOut.into_response(),
        _ => AppError::ComponentFailed.into_response(),
    }
}

/// Names the version that answered.
fn with_version(mut response: Response, record: &OutcomeRecord) -> Response {
    if let Ok(version) = HeaderValue::from_str(&record.version) {
        response.headers_mut().insert(VERSION_HEADER, version);
    }
    response
}

fn into_http(response: HandlerResponse) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut http = (status, response.body).into_response();
    let headers = http.headers_mut();
    // The body conversion set an octet-stream type; the component's own
    // content-type (if any) replaces it.
    headers.remove(axum::http::header::CONTENT_TYPE);
    for (name, value) in response.headers {
        let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) else {
            tracing::debug!(header = name, "dropping invalid header from component");
            continue;
        };
        if HOP_BY_HOP.contains(&name.as_str()) || name.as_str() == VERSION_HEADER {
            continue;
        }
        headers.append(name, value);
    }
    http
}
