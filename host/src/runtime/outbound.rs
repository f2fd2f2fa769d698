//! Outgoing HTTP from connectors and wasi-http components: only to the
//! hosts a component is allowed, over kept-alive connections.
//!
//! A request to any other authority fails at once with wasi:http's
//! `HTTP-request-denied`, which connectors report as a permanent error, and
//! is logged here so the operator sees what was attempted.
//!
//! Plain `http` requests go through one pooled client per host process
//! (hyper-util's), so a delivery reuses the connection an earlier delivery
//! to the same provider left idle instead of opening its own: without it,
//! every outbox message cost a TCP handshake and a connection left in
//! TIME_WAIT. `https` requests take wasmtime-wasi-http's own path, one
//! connection each.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::capabilities::ComponentContext;

/// How long an idle pooled connection is kept; providers commonly close
/// theirs after 60 s or more.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per provider: the outbox's concurrency, for the
/// usual settings.
const POOL_MAX_IDLE_PER_HOST: usize = 32;
/// wasi:http's own default for a timeout a request leaves unset.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Kept-alive connections to the hosts components reach, shared by every
/// invocation of one host.
pub struct OutboundClient {
    pooled: Client<HttpConnector, WasiBody>,
}

impl OutboundClient {
    pub(crate) fn new() -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let pooled = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Arc::new(Self { pooled })
    }

    /// Sends one request: the response head within the connect and
    /// first-byte timeouts together, each body frame within the
    /// between-bytes one.
    async fn send(
        &self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<hyper::Response<WasiBody>, HttpError> {
        let timeout = |pick: fn(&RequestOptions) -> Option<Duration>| options.as_ref().and_then(pick);
        let head_within = timeout(|o| o.connect_timeout)
            .unwrap_or(DEFAULT_TIMEOUT)
            .saturating_add(timeout(|o| o.first_byte_timeout).unwrap_or(DEFAULT_TIMEOUT));
        let between_bytes = timeout(|o| o.between_bytes_timeout).unwrap_or(DEFAULT_TIMEOUT);
        let response = tokio::time::timeout(head_within, self.pooled.request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)?
            .map_err(error_of)?;
        Ok(response.map(|incoming| Paced::new(incoming, between_bytes).boxed_unsync()))
    }
}

/// What the guest is told of a request the pool could not complete.
fn error_of(err: hyper_util::client::legacy::Error) -> HttpError {
    if err.is_connect() {
        return HttpError::ConnectionRefused;
    }
    match std::error::Error::source(&err).and_then(|source| source.downcast_ref::<hyper::Error>()) {
        Some(hyper) if hyper.is_timeout() => HttpError::HttpResponseTimeout,
        Some(hyper) if hyper.is_parse() => HttpError::HttpProtocolError,
        Some(hyper) if hyper.is_incomplete_message() => HttpError::HttpResponseIncomplete,
        _ => HttpError::ConnectionTerminated,
    }
}

/// A response body whose every frame must arrive within `every` of the last.
struct Paced {
    incoming: Incoming,
    every: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Paced {
    fn new(incoming: Incoming, every: Duration) -> Self {
        Self { incoming, every, timer: Box::pin(tokio::time::sleep(every)) }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.every;
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(HttpError::from(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// The per-invocation hooks wasmtime-wasi-http consults for each request.
pub struct OutboundPolicy {
    /// Its name for the log line of a refused request, and its allowed
    /// authorities (`host:port`, or a host for any port).
    component: Arc<ComponentContext>,
    request_id: Arc<str>,
    client: Arc<OutboundClient>,
}

impl OutboundPolicy {
    pub(crate) fn new(component: Arc<ComponentContext>, request_id: Arc<str>, client: Arc<OutboundClient>) -> Self {
        Self { component, request_id, client }
    }

    /// The same component's policy for another call.
    pub(crate) fn renewed(&self, request_id: Arc<str>) -> Self {
        Self::new(self.component.clone(), request_id, self.client.clone())
    }

    fn allows(&self, uri: &hyper::Uri) -> bool {
        let Some(authority) = uri.authority() else { return false };
        let default_port = if uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS) { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority.host();
        self.component.allowed_hosts.iter().any(|allowed| match allowed.rsplit_once(':') {
            Some((allowed_host, allowed_port)) => {
                allowed_host.eq_ignore_ascii_case(host) && allowed_port.parse() == Ok(port)
            }
            None => allowed.eq_ignore_ascii_case(host),
        })
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (hyper::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        if !self.allows(request.uri()) {
            tracing::warn!(
                component = &*self.component.name,
                request_id = &*self.request_id,
                uri = %request.uri(),
                "outgoing request to a host not in allowed_hosts refused"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        if request.uri().scheme() != Some(&hyper::http::uri::Scheme::HTTP) {
            return Box::new(async move {
                let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
                Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
            });
        }
        let client = self.client.clone();
        Box::new(async move {
            let response = client.send(request, options).await?;
            // The pool drives the connection; nothing is left to await.
            let done = Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>;
            Ok((response, done))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> OutboundPolicy {
        let component = ComponentContext {
            name: Arc::from("c"),
            config: Default::default(),
            connectors: Default::default(),
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            metrics: crate::telemetry::metrics::Metrics::new(1),
        };
        OutboundPolicy::new(Arc::new(component), Arc::from("r"), OutboundClient::new())
    }

    #[test]
    fn only_listed_authorities_are_allowed() {
        let p = policy(&["127.0.0.1:9090", "api.example.com"]);
        assert!(p.allows(&"http://127.0.0.1:9090/email".parse().unwrap()));
        assert!(!p.allows(&"http://127.0.0.1:9091/email".parse().unwrap()), "other port");
        assert!(!p.allows(&"http://10.0.0.1:9090/".parse().unwrap()), "other host");
        assert!(p.allows(&"https://API.example.com/x".parse().unwrap()), "any port when none listed");
        assert!(!policy(&[]).allows(&"http://127.0.0.1:9090/".parse().unwrap()), "nothing by default");
    }
}
