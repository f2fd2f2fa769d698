//! What every request passes through before its route's handler, in one
//! layer: the request id and the span carrying it, the header limits (431),
//! the request deadline (408), the request id in every JSON error body, and
//! the HTTP metrics.
//!
//! One hand-written service rather than a stack of `from_fn` middleware:
//! each of those boxes its future and clones the rest of the stack for
//! every request. This one calls the route at once and wraps its future in
//! a single allocation.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use tracing::Instrument;

use super::http_metrics::{HttpMetrics, InFlight};
use super::limits::HeaderLimits;
use super::request_id::{self, RequestId};
use crate::error::{AppError, finish_body};

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Wraps every route (and the fallbacks) in [`Front`].
#[derive(Clone)]
pub struct FrontLayer {
    shared: Arc<Shared>,
}

struct Shared {
    metrics: Arc<HttpMetrics>,
    header_limits: HeaderLimits,
    /// Longest a request may take before it gets 408.
    timeout: Duration,
}

impl FrontLayer {
    pub fn new(metrics: Arc<HttpMetrics>, header_limits: HeaderLimits, timeout: Duration) -> FrontLayer {
        FrontLayer { shared: Arc::new(Shared { metrics, header_limits, timeout }) }
    }
}

impl<S> Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Front<S> {
        Front { inner, shared: self.shared.clone() }
    }
}

#[derive(Clone)]
pub struct Front<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Front<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let shared = self.shared.clone();
        let id = request_id::of(request.headers());
        let span =
            tracing::info_span!("request", request_id = &*id, method = %request.method(), path = request.uri().path());
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let in_flight = InFlight::start(&shared.metrics);
        let routed = match shared.header_limits.check(request.headers()) {
            Some(rejection) => Err(rejection),
            None => {
                request.extensions_mut().insert(RequestId(id.clone()));
                // The route is always ready (axum's routes are), and its
                // future owns what it needs, so it is made here and only
                // awaited below: the inner service is never cloned.
                Ok(span.in_scope(|| self.inner.call(request)))
            }
        };
        Box::pin(
            async move {
                let mut response = match routed {
                    Err(rejection) => rejection,
                    Ok(future) => match tokio::time::timeout(shared.timeout, future).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(infallible)) => match infallible {},
                        Err(_elapsed) => {
                            AppError::RequestTimeout { timeout_ms: shared.timeout.as_millis() }.into_response()
                        }
                    },
                };
                finish_body(&mut response, &id);
                drop(in_flight);
                let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
                shared.metrics.record(route, &method, response.status().as_u16(), started.elapsed().as_secs_f64());
                if let Ok(value) = HeaderValue::from_str(&id) {
                    response.headers_mut().insert(request_id::HEADER, value);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
