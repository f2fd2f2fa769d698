//! The `wasi:http/proxy` world's call path: a standard HTTP component gets
//! the request with its body streaming in, and its response streams out
//! while it runs, with the same admission, breaker, limits and metering as
//! a handler.
//!
//! A guest that is still running when its response goes out moves to a task
//! of its own. If the client goes away before the body is done, the body is
//! dropped and the guest is stopped at once, as Spin's `AbortOnDropBody`
//! does, instead of holding its admission slot and pool instance until its
//! deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::oneshot;
use tracing::Instrument;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use super::Runtime;
use super::admit::Rejection;
use super::invoke::Sandbox;
use super::invoke::{Call, IDEMPOTENCY_KEY, InvokeError, settle};
use super::outcome::{Cost, Outcome, OutcomeRecord};
use super::registry::{Deployed, Prepared};
use super::reuse::{Checkout, Lease, Retired, Warm};
use super::state::InvocationState;
use crate::config::World;

/// How a `wasi:http/proxy` invocation answered.
pub enum ProxyReply {
    /// The component's response, returned as soon as the guest set it. Its
    /// body streams while the guest still runs; the invocation is metered
    /// and recorded when the guest returns.
    Streaming { response: hyper::Response<ProxyBody>, version: Arc<str> },
    /// No response from the component: refused, failed before answering,
    /// or answered with an error code. Finished and recorded.
    Finished { record: OutcomeRecord, rejection: Option<Rejection> },
}

/// Why a streamed request body could not be read; the guest sees it as the
/// matching `wasi:http` error code.
#[derive(Debug)]
pub enum RequestBodyError {
    /// Longer than the route allows.
    TooLarge,
    /// The client's body failed (a reset connection, a malformed chunk).
    Failed(String),
}

impl From<RequestBodyError> for wasmtime_wasi_http::Error {
    fn from(err: RequestBodyError) -> Self {
        match err {
            RequestBodyError::TooLarge => wasmtime_wasi_http::Error::HttpRequestBodySize(None),
            RequestBodyError::Failed(reason) => wasmtime_wasi_http::Error::InternalError(Some(reason)),
        }
    }
}

/// The guest's error while writing its response body.
#[derive(Debug, thiserror::Error)]
#[error("the component's response body failed: {0}")]
pub struct ProxyBodyError(String);

/// A component's response body. Dropped before its end (the client went
/// away), it stops the guest that is still writing it.
pub struct ProxyBody {
    inner: HyperOutgoingBody,
    /// Tells the guest's task that the body was dropped early; `None` once
    /// the body has ended, or when the guest had already returned.
    client_gone: Option<oneshot::Sender<()>>,
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = ProxyBodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Ended: dropping the sender unsent tells the guest all is well.
            self.client_gone = None;
        }
        polled.map(|frame| frame.map(|frame| frame.map_err(|err| ProxyBodyError(err.to_string()))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(client_gone) = self.client_gone.take()
            && !self.inner.is_end_stream()
        {
            let _ = client_gone.send(());
        }
    }
}

/// What the proxy export is called with: the request and the outparam its
/// response goes to, already in the store's table (or why they are not).
pub(crate) type ProxyCall = wasmtime::Result<(Resource<HostIncomingRequest>, Resource<HostResponseOutparam>)>;

/// Called with the request, on a kept instance when there is one (else it
/// instantiates); returns the instance, for reuse.
impl Call for ProxyPre<InvocationState> {
    type Input = (ProxyCall, Option<Proxy>);
    type Output = Proxy;

    async fn call(&self, store: &mut Store<InvocationState>, (call, kept): Self::Input) -> wasmtime::Result<Proxy> {
        let (request, outparam) = call?;
        let proxy = match kept {
            Some(proxy) => proxy,
            None => self.instantiate_async(&mut *store).await?,
        };
        proxy.wasi_http_incoming_handler().call_handle(&mut *store, request, outparam).await?;
        Ok(proxy)
    }
}

impl Runtime {
    /// The sandbox of one `wasi:http` call, and the instance and lease it
    /// runs with: a warm instance of its version when the component reuses
    /// instances and one is idle; else a new one, kept afterwards when the
    /// pool has room.
    pub(crate) fn proxy_sandbox(
        &self,
        deployed: &Deployed,
        request_id: &Arc<str>,
    ) -> (Sandbox, Option<Proxy>, Option<Lease>) {
        let Some(pool) = &deployed.warm else { return (self.sandbox(deployed, request_id), None, None) };
        match pool.take(deployed.serial) {
            Checkout::Warm(Warm { store, proxy, lease }) => {
                (self.resumed_sandbox(deployed, request_id, store), Some(proxy), Some(lease))
            }
            Checkout::Fresh(lease) => {
                let sandbox = self.sandbox(deployed, request_id).keeping_store(lease.is_some());
                (sandbox, None, lease)
            }
        }
    }

    /// Runs a `wasi:http/proxy` component's `handle` for one request. The
    /// reply comes back when the guest sets its response; the invocation
    /// is recorded when the guest returns.
    pub async fn invoke_proxy<B>(
        &self,
        component: &str,
        request_id: Arc<str>,
        request: hyper::Request<B>,
    ) -> Result<ProxyReply, InvokeError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<RequestBodyError>,
    {
        let key = request.headers().get(IDEMPOTENCY_KEY).and_then(|value| value.to_str().ok());
        let (deployed, canary) = self.lookup(component, key)?;
        let Prepared::Proxy(pre) = &deployed.pre else { return Err(deployed.wrong_world(World::WasiHttp)) };
        let pre = pre.clone();
        let started = Instant::now();
        let admitted = match self.admit(&deployed, &request_id, started).await {
            Ok(admitted) => admitted,
            Err((record, rejection)) => return Ok(ProxyReply::Finished { record, rejection: Some(rejection) }),
        };
        let (mut sandbox, kept, lease) = self.proxy_sandbox(&deployed, &request_id);
        // The status the guest answered with, for the outcome; 0 until set.
        let status = Arc::new(AtomicU16::new(0));
        let (sender, mut receiver) = oneshot::channel();
        let call = sandbox.store().and_then(|store| {
            let mut http = store.data_mut().http();
            let request = request.map(|body| body.map_err(|err| wasmtime_wasi_http::Error::from(err.into())));
            let request = http.new_incoming_request(Scheme::Http, request)?;
            let outparam = http.new_response_outparam_from_callback({
                let status = status.clone();
                move |response| {
                    if let Ok(response) = &response {
                        status.store(response.status().as_u16(), Ordering::Relaxed);
                    }
                    // The caller may have gone; the guest need not know.
                    let _ = sender.send(response);
                }
            })?;
            Ok((request, outparam))
        });
        let (client_gone, gone) = oneshot::channel::<()>();
        // The guest runs in this task until it either returns or sets its
        // response and waits (on a full body pipe, a slow request body, a
        // timer). Most return at once, leaving a complete response; only a
        // guest still running when its response is ready moves to a task of
        // its own, so the response can stream while it goes on.
        let mut guest = Box::pin({
            let deployed = deployed.clone();
            let request_id = request_id.clone();
            async move {
                let name = &*deployed.context.name;
                let execution = tokio::select! {
                    execution = sandbox.execute(&pre, (call, kept)) => execution,
                    Ok(()) = gone => {
                        tracing::info!(component = name, request_id = &*request_id, "client went away; guest stopped");
                        if let Some(lease) = lease {
                            lease.retire(Retired::Stopped);
                        }
                        admitted.settle(true);
                        let status = Some(status.load(Ordering::Relaxed)).filter(|s| *s != 0);
                        return deployed.finish(&request_id, Outcome::Error, started, Cost::default(), status);
                    }
                };
                let status = status.load(Ordering::Relaxed);
                let outcome = match &execution.result {
                    Err(err) => deployed.failed(&request_id, err, execution.memory_exceeded),
                    Ok(_) if status == 0 => {
                        tracing::warn!(
                            component = name,
                            request_id = &*request_id,
                            "component returned without a response, or answered with an error code"
                        );
                        Outcome::Error
                    }
                    Ok(_) if status >= 500 => Outcome::Error,
                    Ok(_) => Outcome::Ok,
                };
                // Proxy components hold no Switchyard state; nothing to commit.
                let _ = settle(execution.unit_of_work, false, name, &request_id).await;
                // Kept only after a call that went well; else the lease, dropped
                // here, retires the instance.
                if let (Ok(proxy), Some(store), Some(lease), Some(pool)) =
                    (execution.result, execution.store, lease, &deployed.warm)
                {
                    pool.give_back(deployed.serial, &deployed.retired, Warm { store, proxy, lease });
                }
                admitted.settle(canary || !outcome.is_fault());
                let status = (status != 0).then_some(status);
                deployed.finish(&request_id, outcome, started, execution.cost, status)
            }
        });
        let version = deployed.version.clone();
        tokio::select! {
            biased;
            record = &mut guest => match receiver.try_recv() {
                Ok(Ok(response)) => {
                    let response = response.map(|body| ProxyBody { inner: gather_written(body), client_gone: None });
                    Ok(ProxyReply::Streaming { response, version })
                }
                // No response (the guest failed first) or an error code:
                // the guest's own record says which.
                _ => Ok(ProxyReply::Finished { record, rejection: None }),
            },
            response = &mut receiver => match response {
                Ok(Ok(response)) => {
                    // Inline, the guest ran in the request's span; moved
                    // to a task of its own, it takes the span along.
                    tokio::spawn(guest.in_current_span());
                    let response = response.map(|inner| ProxyBody { inner, client_gone: Some(client_gone) });
                    Ok(ProxyReply::Streaming { response, version })
                }
                Ok(Err(_)) | Err(_) => {
                    let record = guest.await;
                    Ok(ProxyReply::Finished { record, rejection: None })
                }
            },
        }
    }
}

/// The body of a guest that has returned: every frame it wrote is already
/// buffered, so it is gathered into one piece, and the response goes out
/// with a `Content-Length` instead of chunks. A body that still has to wait
/// (a guest that handed it to a task of its own) or has trailers keeps
/// streaming, starting with the frames already taken.
fn gather_written(mut body: HyperOutgoingBody) -> HyperOutgoingBody {
    use futures::StreamExt;
    use std::task::Waker;

    let mut taken = Vec::new();
    let mut context = Context::from_waker(Waker::noop());
    loop {
        match Pin::new(&mut body).poll_frame(&mut context) {
            Poll::Ready(Some(Ok(frame))) if frame.is_data() => taken.push(Ok(frame)),
            Poll::Ready(None) => {
                let mut chunks = taken.into_iter().flatten().filter_map(|frame| frame.into_data().ok());
                let whole = match (chunks.next(), chunks.next()) {
                    (None, _) => Bytes::new(),
                    (Some(only), None) => only,
                    (Some(first), Some(second)) => {
                        let mut whole = [first, second].concat();
                        chunks.for_each(|chunk| whole.extend_from_slice(&chunk));
                        Bytes::from(whole)
                    }
                };
                return http_body_util::Full::new(whole).map_err(|never| match never {}).boxed_unsync();
            }
            // Trailers or an error: pass them on, then whatever follows.
            Poll::Ready(Some(item)) => {
                taken.push(item);
                break;
            }
            Poll::Pending => break,
        }
    }
    let rest = http_body_util::BodyStream::new(body);
    http_body_util::StreamBody::new(futures::stream::iter(taken).chain(rest)).boxed_unsync()
}
