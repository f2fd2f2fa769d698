//! The `wasi:http` call path: a standard HTTP component gets the request
//! with its body streaming in, and its response streams out while it runs,
//! with the same admission, breaker, limits and metering as a handler.
//!
//! Both versions of the interface take this path. A 0.2 component exports
//! `wasi:http/incoming-handler` and sets its response through an outparam;
//! a 0.3 component exports `wasi:http/handler`, an async function that
//! returns its response and may go on writing its body (or doing anything
//! else) in tasks of its own afterwards. Its call runs in the store's
//! concurrent event loop until every task of the guest has ended; the
//! deadline, fuel and memory limit cover all of it.
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
use std::time::{Duration, Instant};

use futures::future::Either;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::oneshot;
use tracing::Instrument;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::Runtime;
use super::admit::Rejection;
use super::invoke::Sandbox;
use super::invoke::{Call, Execution, IDEMPOTENCY_KEY, InvokeError, settle};
use super::outcome::{Cost, Outcome, OutcomeRecord};
use super::registry::{Deployed, Prepared};
use super::reuse::{Checkout, HttpInstance, Lease, Retired, Warm};
use super::shared::{Job, NewInstance, Respond, Served};
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
    inner: GuestBody,
    /// Tells the guest's task that the body was dropped early; `None` once
    /// the body has ended, or when the guest had already returned.
    client_gone: Option<oneshot::Sender<()>>,
}

/// The body a guest writes, as each version of `wasi:http` hands it over.
pub(crate) enum GuestBody {
    P2(HyperOutgoingBody),
    P3(WasiBody),
}

impl GuestBody {
    fn is_end_stream(&self) -> bool {
        match self {
            GuestBody::P2(body) => body.is_end_stream(),
            GuestBody::P3(body) => body.is_end_stream(),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = ProxyBodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        fn failed(err: impl std::fmt::Display) -> ProxyBodyError {
            ProxyBodyError(err.to_string())
        }
        let polled = match &mut self.inner {
            GuestBody::P2(body) => Pin::new(body).poll_frame(cx).map(|f| f.map(|f| f.map_err(failed))),
            GuestBody::P3(body) => Pin::new(body).poll_frame(cx).map(|f| f.map(|f| f.map_err(failed))),
        };
        if let Poll::Ready(None) = polled {
            // Ended: dropping the sender unsent tells the guest all is well.
            self.client_gone = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            GuestBody::P2(body) => body.size_hint(),
            GuestBody::P3(body) => body.size_hint(),
        }
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

/// The guest's response, headers set and body to come, sent from inside
/// its call as soon as it has one.
type Answer = hyper::Response<GuestBody>;

/// What the 0.2 export is called with: the request and the outparam its
/// response goes to, already in the store's table (or why they are not).
pub(crate) type ProxyCall = wasmtime::Result<(Resource<HostIncomingRequest>, Resource<HostResponseOutparam>)>;

/// Called with the request, on a kept instance when there is one (else it
/// instantiates); returns the instance, for reuse.
impl Call for ProxyPre<InvocationState> {
    type Input = (ProxyCall, Option<HttpInstance>);
    type Output = HttpInstance;

    async fn call(
        &self,
        store: &mut Store<InvocationState>,
        (call, kept): Self::Input,
    ) -> wasmtime::Result<HttpInstance> {
        let (request, outparam) = call?;
        let proxy = match kept {
            Some(HttpInstance::P2(proxy)) => proxy,
            _ => self.instantiate_async(&mut *store).await?,
        };
        proxy.wasi_http_incoming_handler().call_handle(&mut *store, request, outparam).await?;
        Ok(HttpInstance::P2(proxy))
    }
}

/// What the 0.3 export is called with.
pub(crate) struct ServiceCall {
    request: hyper::Request<WasiBody>,
    /// Where the response goes; dropped uncalled when there is none.
    respond: Respond,
}

/// Calls `handle` in the store's event loop, sends the response it returns,
/// then keeps the loop running until every task of the guest has ended: the
/// body it goes on writing, and anything else it spawned.
impl Call for ServicePre<InvocationState> {
    type Input = (ServiceCall, Option<HttpInstance>);
    type Output = HttpInstance;

    async fn call(
        &self,
        store: &mut Store<InvocationState>,
        (call, kept): Self::Input,
    ) -> wasmtime::Result<HttpInstance> {
        let service = match kept {
            Some(HttpInstance::P3(service)) => service,
            _ => self.instantiate_async(&mut *store).await?,
        };
        let ServiceCall { request, respond } = call;
        let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(store.data_mut().http().hooks, request);
        let name = store.data().component.name.clone();
        let request_id = store.data().request_id.clone();
        store
            .run_concurrent(async |accessor| -> wasmtime::Result<()> {
                match service.handle(accessor, request).await? {
                    Ok(response) => respond(accessor.with(|mut store| response.into_http(&mut store, request_io))?),
                    Err(code) => {
                        tracing::warn!(
                            component = &*name,
                            request_id = &*request_id,
                            error = ?code,
                            "component answered with an error code"
                        );
                    }
                }
                std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                Ok(())
            })
            .await??;
        Ok(HttpInstance::P3(service))
    }
}

/// How a guest's part in one request ended, whatever instance it ran on.
struct Finished {
    result: wasmtime::Result<()>,
    cost: Cost,
    memory_exceeded: bool,
    /// Its client went away before the response body ended.
    client_left: bool,
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
    ) -> (Sandbox, Option<HttpInstance>, Option<Lease>) {
        let Some(pool) = &deployed.warm else { return (self.sandbox(deployed, request_id), None, None) };
        match pool.take(deployed.serial) {
            Checkout::Warm(Warm { store, instance, lease }) => {
                (self.resumed_sandbox(deployed, request_id, store), Some(instance), Some(lease))
            }
            Checkout::Fresh(lease) => {
                let sandbox = self.sandbox(deployed, request_id).keeping_store(lease.is_some());
                (sandbox, None, lease)
            }
        }
    }

    /// Runs a 0.3 call: on a shared instance when the component has them
    /// and one has room (or a new one can start), else as a 0.2 call is run.
    fn run_service(
        &self,
        deployed: &Arc<Deployed>,
        pre: &ServicePre<InvocationState>,
        request_id: &Arc<str>,
        call: ServiceCall,
        gone: oneshot::Receiver<()>,
    ) -> impl Future<Output = Finished> + Send + 'static {
        let (pooled, call, gone) = match &deployed.shared {
            None => (true, call, gone),
            Some(shared) => {
                let (served, outcome) = oneshot::channel();
                let timeout = Duration::from_millis(deployed.limits.timeout_ms);
                let job = Job {
                    request_id: request_id.clone(),
                    request: call.request,
                    respond: call.respond,
                    body_done: gone,
                    fuel: self.fuel_metering.then_some(deployed.limits.fuel),
                    deadline: Instant::now() + timeout,
                    served,
                };
                let new_instance =
                    || NewInstance { store: self.sandbox(deployed, request_id).into_store(), pre: pre.clone() };
                match shared.take(deployed.serial, job, new_instance) {
                    Ok(()) => return Either::Right(finished_on_shared(outcome)),
                    // No instance with room and no place for one: an
                    // instance of its own, dropped afterwards.
                    Err(job) => {
                        let Job { request, respond, body_done, .. } = *job;
                        (false, ServiceCall { request, respond }, body_done)
                    }
                }
            }
        };
        Either::Left(self.own_instance(deployed, request_id, pooled, pre.clone(), gone, |_, kept| (call, kept)))
    }

    /// Runs one call on an instance of its own: a kept one of its version
    /// or a new one, kept afterwards, when `pooled`; else a new one,
    /// dropped afterwards. `input` makes the call's input in its store.
    fn own_instance<P>(
        &self,
        deployed: &Arc<Deployed>,
        request_id: &Arc<str>,
        pooled: bool,
        pre: P,
        gone: oneshot::Receiver<()>,
        input: impl FnOnce(&mut Sandbox, Option<HttpInstance>) -> P::Input,
    ) -> impl Future<Output = Finished> + Send + 'static
    where
        P: Call<Output = HttpInstance> + Send + Sync + 'static,
    {
        let (mut sandbox, kept, lease) = match pooled {
            true => self.proxy_sandbox(deployed, request_id),
            false => (self.sandbox(deployed, request_id), None, None),
        };
        let input = input(&mut sandbox, kept);
        run_alone(deployed.clone(), request_id.clone(), sandbox, pre, input, lease, gone)
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
        if deployed.pre.world() != World::WasiHttp {
            return Err(deployed.wrong_world(World::WasiHttp));
        }
        let started = Instant::now();
        let admitted = match self.admit(&deployed, &request_id, started).await {
            Ok(admitted) => admitted,
            Err((record, rejection)) => return Ok(ProxyReply::Finished { record, rejection: Some(rejection) }),
        };
        // The status the guest answered with, for the outcome; 0 until set.
        let status = Arc::new(AtomicU16::new(0));
        let (sender, mut receiver) = oneshot::channel::<Answer>();
        // Sent by the response body when it is dropped before its end.
        let (client_gone, gone) = oneshot::channel::<()>();
        let request = request.map(|body| body.map_err(|err| wasmtime_wasi_http::Error::from(err.into())));
        let run = match &deployed.pre {
            Prepared::Service(pre) => {
                let respond: Respond = {
                    let status = status.clone();
                    Box::new(move |response| {
                        status.store(response.status().as_u16(), Ordering::Relaxed);
                        // The caller may have gone; the guest need not know.
                        let _ = sender.send(response.map(GuestBody::P3));
                    })
                };
                let call = ServiceCall { request: request.map(BodyExt::boxed_unsync), respond };
                Either::Left(self.run_service(&deployed, pre, &request_id, call, gone))
            }
            Prepared::Proxy(pre) => {
                let call = |sandbox: &mut Sandbox, kept| {
                    let call = sandbox.store().and_then(|store| {
                        let mut http = store.data_mut().http();
                        let request = http.new_incoming_request(Scheme::Http, request)?;
                        let outparam = http.new_response_outparam_from_callback({
                            let status = status.clone();
                            move |response| {
                                if let Ok(response) = response {
                                    status.store(response.status().as_u16(), Ordering::Relaxed);
                                    // The caller may have gone; the guest need not know.
                                    let _ = sender.send(response.map(GuestBody::P2));
                                }
                            }
                        })?;
                        Ok((request, outparam))
                    });
                    (call, kept)
                };
                Either::Right(self.own_instance(&deployed, &request_id, true, pre.clone(), gone, call))
            }
            Prepared::Handler(_) | Prepared::Connector(_) => return Err(deployed.wrong_world(World::WasiHttp)),
        };
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
                let finished = run.await;
                let status = status.load(Ordering::Relaxed);
                let outcome = match &finished.result {
                    _ if finished.client_left => {
                        tracing::info!(
                            component = name,
                            request_id = &*request_id,
                            "client went away before the response body ended; its request stopped"
                        );
                        Outcome::Error
                    }
                    Err(err) => deployed.failed(&request_id, err, finished.memory_exceeded),
                    Ok(()) if status == 0 => {
                        tracing::warn!(
                            component = name,
                            request_id = &*request_id,
                            "component returned without a response, or answered with an error code"
                        );
                        Outcome::Error
                    }
                    Ok(()) if status >= 500 => Outcome::Error,
                    Ok(()) => Outcome::Ok,
                };
                // A client that left says nothing about the component.
                admitted.settle(finished.client_left || canary || !outcome.is_fault());
                let status = (status != 0).then_some(status);
                deployed.finish(&request_id, outcome, started, finished.cost, status)
            }
        });
        let version = deployed.version.clone();
        tokio::select! {
            biased;
            record = &mut guest => match receiver.try_recv() {
                Ok(response) => {
                    let response = response.map(|body| {
                        let inner = match body {
                            GuestBody::P2(body) => GuestBody::P2(gather_written(body)),
                            GuestBody::P3(body) => GuestBody::P3(gather_written(body)),
                        };
                        ProxyBody { inner, client_gone: None }
                    });
                    Ok(ProxyReply::Streaming { response, version })
                }
                // No response (the guest failed first, or answered with
                // an error code): the guest's own record says which.
                Err(_) => Ok(ProxyReply::Finished { record, rejection: None }),
            },
            response = &mut receiver => match response {
                Ok(response) => {
                    // Inline, the guest ran in the request's span; moved
                    // to a task of its own, it takes the span along.
                    tokio::spawn(guest.in_current_span());
                    let response = response.map(|inner| ProxyBody { inner, client_gone: Some(client_gone) });
                    Ok(ProxyReply::Streaming { response, version })
                }
                Err(_) => {
                    let record = guest.await;
                    Ok(ProxyReply::Finished { record, rejection: None })
                }
            },
        }
    }
}

/// How a request handed to a shared instance ended, once it has.
async fn finished_on_shared(outcome: oneshot::Receiver<Served>) -> Finished {
    match outcome.await {
        Ok(Served { result, cost, memory_exceeded }) => {
            Finished { client_left: matches!(result, Ok(true)), result: result.map(drop), cost, memory_exceeded }
        }
        Err(_) => Finished {
            result: Err(wasmtime::Error::msg("its shared instance ended without an answer")),
            cost: Cost::default(),
            memory_exceeded: false,
            client_left: false,
        },
    }
}

/// Runs one call on an instance of its own (fresh, or kept and idle until
/// now), which goes back to the pool after a call that went well. A client
/// that goes away before the response body ends stops the guest at once.
async fn run_alone<P: Call<Output = HttpInstance>>(
    deployed: Arc<Deployed>,
    request_id: Arc<str>,
    sandbox: Sandbox,
    pre: P,
    input: P::Input,
    lease: Option<Lease>,
    gone: oneshot::Receiver<()>,
) -> Finished {
    let execution = tokio::select! {
        execution = sandbox.execute(&pre, input) => execution,
        Ok(()) = gone => {
            if let Some(lease) = lease {
                lease.retire(Retired::Stopped);
            }
            let result = Ok(());
            return Finished { result, cost: Cost::default(), memory_exceeded: false, client_left: true };
        }
    };
    // Proxy components hold no Switchyard state; nothing to commit.
    let _ = settle(execution.unit_of_work, false, &deployed.context.name, &request_id).await;
    let Execution { result, cost, memory_exceeded, store, .. } = execution;
    let result = match result {
        // Kept only after a call that went well; else the lease, dropped
        // here, retires the instance.
        Ok(instance) => {
            if let (Some(store), Some(lease), Some(pool)) = (store, lease, &deployed.warm) {
                pool.give_back(deployed.serial, &deployed.retired, Warm { store, instance, lease });
            }
            Ok(())
        }
        Err(err) => Err(err),
    };
    Finished { result, cost, memory_exceeded, client_left: false }
}

/// The body of a guest that has returned: every frame it wrote is already
/// buffered, so it is gathered into one piece, and the response goes out
/// with a `Content-Length` instead of chunks. A body that still has to wait
/// (a guest that handed it to a task of its own) or has trailers keeps
/// streaming, starting with the frames already taken.
fn gather_written<E: Send + 'static>(mut body: UnsyncBoxBody<Bytes, E>) -> UnsyncBoxBody<Bytes, E> {
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
