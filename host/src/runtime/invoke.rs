//! One invocation of a component: circuit breaker, fresh `Store`, limits,
//! fuel, deadline, call, metering, outcome, and the commit-or-rollback of
//! its unit of work.
//!
//! Handlers and connectors share [`Runtime::execute`]; the two entry points
//! differ only in what they pass in, how they read the result, and which
//! results count against the breaker. Nothing here compiles or links; the
//! registry did that. The outcome record is the single source for logs and
//! metrics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tracing::Instrument;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::Runtime;
use super::bindings::{sender, types};
use super::registry::{Deployed, Prepared};
use super::state::InvocationState;
use crate::config::World;
use crate::db::UnitOfWork;
use crate::resilience::{Permit, Slot};
use crate::telemetry::metrics::ADMISSION_REJECTED;

/// The body of a `wasi:http/proxy` component's response: streamed from the
/// guest while it runs.
pub type ProxyBody = HyperOutgoingBody;

/// Why a streamed request body could not be read; handed to the guest as
/// its `wasi:http` error code.
pub type ProxyBodyError = wasmtime_wasi_http::Error;

/// `Retry-After` for a full queue: long enough for a slot to free up,
/// short enough that a retry soon succeeds.
const ADMISSION_RETRY_AFTER_MS: i64 = 1_000;

/// A request as the host routes it to a handler.
#[derive(Debug, Clone, Default)]
pub struct HandlerRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// Route template captures.
    pub params: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct HandlerResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One delivery attempt of an outbox message, as handed to a connector.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub attempt: u32,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub metadata: Vec<(String, String)>,
}

/// What a connector made of a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered {
        provider_id: String,
    },
    /// Worth retrying later (provider 429/5xx, transport failure, trap, timeout).
    Retryable(String),
    /// Will never succeed (provider 4xx, forbidden host, bad message).
    Permanent(String),
    /// The connector's breaker is open: nothing was attempted.
    Rejected {
        retry_after_ms: i64,
    },
}

/// How an invocation ended; a bounded label set for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered with a status below 500, or delivered.
    Ok,
    /// Answered with a 5xx status, a connector error, or its work could not
    /// be committed.
    Error,
    /// Trapped: a panic, an invalid operation, or growing past its memory limit.
    Trap,
    /// Ran out of its fuel budget.
    FuelExhausted,
    /// Passed its wall-clock deadline.
    Timeout,
    /// Not run: the component's circuit breaker is open.
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 6] =
        [Outcome::Ok, Outcome::Error, Outcome::Trap, Outcome::FuelExhausted, Outcome::Timeout, Outcome::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Trap => "trap",
            Outcome::FuelExhausted => "fuel_exhausted",
            Outcome::Timeout => "timeout",
            Outcome::Rejected => "rejected",
        }
    }

    /// Outcomes that say the component itself is unhealthy.
    fn is_fault(self) -> bool {
        matches!(self, Outcome::Trap | Outcome::FuelExhausted | Outcome::Timeout)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one invocation cost and how it ended.
#[derive(Debug, Clone)]
pub struct OutcomeRecord {
    pub component: Arc<str>,
    pub version: Arc<str>,
    pub outcome: Outcome,
    pub latency: Duration,
    pub fuel_consumed: u64,
    /// Largest linear memory the instance grew to, in bytes.
    pub memory_peak: usize,
}

/// The result of a finished handler invocation: the component's own
/// response when it produced one whose work was committed, else `None`
/// with the reason logged.
#[derive(Debug)]
pub struct Invocation {
    pub response: Option<HandlerResponse>,
    pub record: OutcomeRecord,
    /// Set when the call was refused before running.
    pub rejection: Option<Rejection>,
}

/// Why a handler call was refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The `admission_rejected_total` reason: queue_full, queue_timeout, breaker_open.
    pub reason: &'static str,
    pub retry_after_ms: i64,
}

/// How a `wasi:http/proxy` invocation answered.
pub enum ProxyReply {
    /// The component's response, returned as soon as the guest set it. Its
    /// body streams while the guest still runs; the invocation is metered
    /// and recorded when the guest returns.
    Streaming { response: hyper::Response<ProxyBody>, version: Arc<str> },
    /// No response from the component: refused, failed before answering,
    /// or answered with an error code. Finished and recorded.
    Finished(Invocation),
}

/// The result of a connector invocation.
#[derive(Debug)]
pub struct DeliveryAttempt {
    pub delivery: Delivery,
    pub record: OutcomeRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("no component named {0:?} is loaded")]
    UnknownComponent(String),
    #[error("component {component:?} is a {actual} component, not a {expected}")]
    WrongWorld { component: String, expected: &'static str, actual: &'static str },
}

/// Returned by the epoch callback past the deadline, so a timeout can be
/// told apart from other traps.
#[derive(Debug)]
struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invocation exceeded its wall-clock deadline")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// What the guest is asked to do.
enum Call {
    Handle(types::Request),
    Send(types::Envelope),
}

/// What the guest returned.
enum Returned {
    Response(types::Response),
    Sent(Result<sender::Receipt, sender::SendError>),
}

/// A finished call, before its result is interpreted.
struct Execution<R> {
    result: wasmtime::Result<R>,
    unit_of_work: UnitOfWork,
    cost: Cost,
    memory_exceeded: bool,
}

/// What a call used.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    fuel_consumed: u64,
    /// Largest linear memory, in bytes.
    memory_peak: usize,
}

impl<R> Execution<R> {
    /// What the store says the call cost.
    fn collect(result: wasmtime::Result<R>, store: Store<InvocationState>, fuel_budget: Option<u64>) -> Self {
        let fuel_consumed = fuel_budget.map_or(0, |budget| budget.saturating_sub(store.get_fuel().unwrap_or(0)));
        let state = store.into_data();
        state.log_guest_output();
        Execution {
            result,
            cost: Cost { fuel_consumed, memory_peak: state.limiter.peak },
            memory_exceeded: state.limiter.exceeded,
            unit_of_work: state.into_unit_of_work(),
        }
    }
}

/// Admitted to run: the queue slot and breaker permit, held until the
/// invocation is recorded.
struct Admitted {
    _slot: Option<Slot>,
    permit: Option<Permit>,
}

impl Admitted {
    /// Tells the breaker how the call went.
    fn settle(self, outcome: Outcome) {
        if let Some(permit) = self.permit {
            permit.record(!outcome.is_fault());
        }
    }
}

impl Runtime {
    /// Runs `component`'s `handle` for one request.
    pub async fn invoke_handler(
        &self,
        component: &str,
        request_id: Arc<str>,
        request: HandlerRequest,
    ) -> Result<Invocation, InvokeError> {
        let deployed = self.lookup(component, World::Handler)?;
        let started = Instant::now();
        let admitted = match self.admit(&deployed, &request_id, started).await {
            Ok(admitted) => admitted,
            Err(refused) => return Ok(refused),
        };
        let call = Call::Handle(types::Request {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            params: request.params,
            body: request.body,
        });
        let execution = self.execute(&deployed, &request_id, call).await;
        let response = match execution.result {
            Ok(Returned::Response(response)) => Ok(response),
            Ok(Returned::Sent(_)) => Err(wasmtime::Error::msg("handler call returned a connector result")),
            Err(err) => Err(err),
        };
        let (outcome, response) = match response {
            Ok(response) if !(100..=599).contains(&response.status) => {
                tracing::warn!(
                    component,
                    request_id = &*request_id,
                    status = response.status,
                    "component returned an invalid status"
                );
                (Outcome::Error, None)
            }
            Ok(response) => {
                let response =
                    HandlerResponse { status: response.status, headers: response.headers, body: response.body };
                let outcome = if response.status >= 500 { Outcome::Error } else { Outcome::Ok };
                (outcome, Some(response))
            }
            Err(err) => (deployed.failed(&request_id, &err, execution.memory_exceeded), None),
        };

        // The unit of work commits only for a response below 400.
        let commit = response.as_ref().is_some_and(|r| r.status < 400);
        let (outcome, response) = match settle(execution.unit_of_work, commit, component, &request_id).await {
            Ok(()) => (outcome, response),
            Err(()) => (Outcome::Error, None),
        };
        admitted.settle(outcome);
        let status = response.as_ref().map(|r| r.status);
        let record = deployed.finish(&request_id, outcome, started, execution.cost, status);
        Ok(Invocation { response, record, rejection: None })
    }

    /// Runs a `wasi:http/proxy` component's `handle` for one request, with
    /// the same admission, breaker, limits and metering as a handler. The
    /// guest runs in its own task so its response can stream: the reply
    /// comes back when the guest sets the response, and the task records
    /// the invocation when the guest returns.
    pub async fn invoke_proxy<B>(
        &self,
        component: &str,
        request_id: Arc<str>,
        request: hyper::Request<B>,
    ) -> Result<ProxyReply, InvokeError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<ProxyBodyError>,
    {
        let deployed = self.lookup(component, World::WasiHttp)?;
        let started = Instant::now();
        let admitted = match self.admit(&deployed, &request_id, started).await {
            Ok(admitted) => admitted,
            Err(refused) => return Ok(ProxyReply::Finished(refused)),
        };
        let (mut store, fuel_set) = self.new_store(&deployed, &request_id, started);
        // The status the guest answered with, for the outcome; 0 until set.
        let status = Arc::new(AtomicU16::new(0));
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        let resources = fuel_set.and_then(|()| {
            let mut http = store.data_mut().http();
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
        let fuel_budget = self.fuel_metering.then_some(deployed.limits.fuel);
        // The guest runs in this task until it either returns or sets its
        // response and waits (on a full body pipe, a slow request body, a
        // timer). Most return at once, leaving a complete response; only a
        // guest still running when its response is ready moves to a task of
        // its own, so the response can stream while it goes on.
        let mut guest = Box::pin({
            let deployed = deployed.clone();
            let request_id = request_id.clone();
            async move {
                let run = async {
                    let (request, outparam) = resources?;
                    let Prepared::Proxy(pre) = &deployed.pre else {
                        return Err(wasmtime::Error::msg("call does not match the component's world"));
                    };
                    let proxy = pre.instantiate_async(&mut store).await?;
                    proxy.wasi_http_incoming_handler().call_handle(&mut store, request, outparam).await
                };
                let result = within_deadline(deployed.limits.timeout_ms, run).await;
                let execution = Execution::collect(result, store, fuel_budget);
                let status = status.load(Ordering::Relaxed);
                let outcome = match &execution.result {
                    Err(err) => deployed.failed(&request_id, err, execution.memory_exceeded),
                    Ok(()) if status == 0 => {
                        tracing::warn!(
                            component = &*deployed.context.name,
                            request_id = &*request_id,
                            "component returned without a response, or answered with an error code"
                        );
                        Outcome::Error
                    }
                    Ok(()) if status >= 500 => Outcome::Error,
                    Ok(()) => Outcome::Ok,
                };
                // Proxy components hold no Switchyard state; nothing to commit.
                let _ = settle(execution.unit_of_work, false, &deployed.context.name, &request_id).await;
                admitted.settle(outcome);
                let status = (status != 0).then_some(status);
                deployed.finish(&request_id, outcome, started, execution.cost, status)
            }
        });
        let version = deployed.version.clone();
        tokio::select! {
            biased;
            record = &mut guest => match receiver.try_recv() {
                Ok(Ok(response)) => Ok(ProxyReply::Streaming { response: response.map(gather_written), version }),
                // No response (the guest failed first) or an error code:
                // the guest's own record says which.
                _ => Ok(ProxyReply::Finished(Invocation { response: None, record, rejection: None })),
            },
            response = &mut receiver => match response {
                Ok(Ok(response)) => {
                    // Inline, the guest ran in the request's span; moved
                    // to a task of its own, it takes the span along.
                    tokio::spawn(guest.in_current_span());
                    Ok(ProxyReply::Streaming { response, version })
                }
                Ok(Err(_)) | Err(_) => {
                    let record = guest.await;
                    Ok(ProxyReply::Finished(Invocation { response: None, record, rejection: None }))
                }
            },
        }
    }

    /// Bounded admission, then the breaker; a refused call costs nothing
    /// more and comes back finished.
    async fn admit(&self, deployed: &Deployed, request_id: &str, started: Instant) -> Result<Admitted, Invocation> {
        let name = &*deployed.context.name;
        let slot = match self.admissions.get(name) {
            Some(gate) => match gate.admit().await {
                Ok(slot) => Some(slot),
                Err(refusal) => {
                    let rejection = Rejection { reason: refusal.as_str(), retry_after_ms: ADMISSION_RETRY_AFTER_MS };
                    return Err(self.refuse(deployed, request_id, started, rejection));
                }
            },
            None => None,
        };
        match self.breaker(name).map(|b| b.try_acquire()).transpose() {
            Ok(permit) => Ok(Admitted { _slot: slot, permit }),
            Err(rejected) => {
                let rejection = Rejection { reason: "breaker_open", retry_after_ms: rejected.retry_after_ms };
                Err(self.refuse(deployed, request_id, started, rejection))
            }
        }
    }

    fn refuse(&self, deployed: &Deployed, request_id: &str, started: Instant, rejection: Rejection) -> Invocation {
        self.metrics.counter(ADMISSION_REJECTED, &[("reason", rejection.reason)]).increment(1);
        let record = deployed.finish_unrun(request_id, Outcome::Rejected, started);
        Invocation { response: None, record, rejection: Some(rejection) }
    }

    /// Runs `component`'s `send` for one delivery attempt.
    pub async fn invoke_connector(
        &self,
        component: &str,
        request_id: Arc<str>,
        envelope: Envelope,
    ) -> Result<DeliveryAttempt, InvokeError> {
        let deployed = self.lookup(component, World::Connector)?;
        let started = Instant::now();
        let permit: Option<Permit> = match self.breaker(component).map(|b| b.try_acquire()).transpose() {
            Ok(permit) => permit,
            Err(rejected) => {
                let record = deployed.finish_unrun(&request_id, Outcome::Rejected, started);
                let delivery = Delivery::Rejected { retry_after_ms: rejected.retry_after_ms };
                return Ok(DeliveryAttempt { delivery, record });
            }
        };
        let call = Call::Send(types::Envelope {
            id: envelope.id,
            attempt: envelope.attempt,
            message: types::Message {
                recipient: envelope.recipient,
                subject: envelope.subject,
                body: envelope.body,
                metadata: envelope.metadata,
            },
        });
        let execution = self.execute(&deployed, &request_id, call).await;
        // Connectors keep no state here; nothing to commit.
        let _ = settle(execution.unit_of_work, false, component, &request_id).await;
        let (outcome, delivery) = match execution.result {
            Ok(Returned::Sent(Ok(receipt))) => (Outcome::Ok, Delivery::Delivered { provider_id: receipt.provider_id }),
            Ok(Returned::Sent(Err(sender::SendError::Retryable(reason)))) => {
                (Outcome::Error, Delivery::Retryable(reason))
            }
            Ok(Returned::Sent(Err(sender::SendError::Permanent(reason)))) => {
                (Outcome::Error, Delivery::Permanent(reason))
            }
            Ok(Returned::Response(_)) => (Outcome::Error, Delivery::Retryable("connector returned a response".into())),
            Err(err) => {
                let outcome = deployed.failed(&request_id, &err, execution.memory_exceeded);
                (outcome, Delivery::Retryable(format!("connector {outcome}")))
            }
        };
        if let Some(permit) = permit {
            // A provider that answers "permanently no" is healthy; one that
            // cannot be reached, or a connector that crashes, is not.
            permit.record(!matches!(delivery, Delivery::Retryable(_)));
        }
        let record = deployed.finish(&request_id, outcome, started, execution.cost, None);
        Ok(DeliveryAttempt { delivery, record })
    }

    fn lookup(&self, component: &str, world: World) -> Result<Arc<Deployed>, InvokeError> {
        let deployed =
            self.registry.get(component).ok_or_else(|| InvokeError::UnknownComponent(component.to_owned()))?;
        if deployed.pre.world() != world {
            return Err(InvokeError::WrongWorld {
                component: component.to_owned(),
                expected: world.as_str(),
                actual: deployed.pre.world().as_str(),
            });
        }
        Ok(deployed)
    }

    /// A fresh store for one invocation: memory limiter, fuel, and the
    /// deadline the epoch callback enforces. Setting the fuel fails only on
    /// an engine without fuel; the caller reports it as the call's error.
    fn new_store(
        &self,
        deployed: &Deployed,
        request_id: &Arc<str>,
        started: Instant,
    ) -> (Store<InvocationState>, wasmtime::Result<()>) {
        let limits = deployed.limits;
        let unit_of_work = self.db.unit_of_work(deployed.context.name.clone(), request_id.clone());
        let memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let state = InvocationState::new(deployed.context.clone(), request_id.clone(), unit_of_work, memory);

        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Every Store starts with no fuel and an expired epoch deadline.
        let fuel_set = if self.fuel_metering { store.set_fuel(limits.fuel) } else { Ok(()) };
        let deadline = started + Duration::from_millis(limits.timeout_ms);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                // Yield each tick so a busy guest shares its worker thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        (store, fuel_set)
    }

    /// Instantiates and calls, within the component's limits.
    async fn execute(&self, deployed: &Deployed, request_id: &Arc<str>, call: Call) -> Execution<Returned> {
        let (mut store, fuel_set) = self.new_store(deployed, request_id, Instant::now());
        let run = async {
            fuel_set?;
            match (&deployed.pre, call) {
                (Prepared::Handler(pre), Call::Handle(request)) => {
                    let handler = pre.instantiate_async(&mut store).await?;
                    let response =
                        handler.switchyard_platform_incoming_handler().call_handle(&mut store, &request).await?;
                    Ok(Returned::Response(response))
                }
                (Prepared::Connector(pre), Call::Send(envelope)) => {
                    let connector = pre.instantiate_async(&mut store).await?;
                    let sent = connector.switchyard_platform_sender().call_send(&mut store, &envelope).await?;
                    Ok(Returned::Sent(sent))
                }
                _ => Err(wasmtime::Error::msg("call does not match the component's world")),
            }
        };
        let result = within_deadline(deployed.limits.timeout_ms, run).await;
        Execution::collect(result, store, self.fuel_metering.then_some(deployed.limits.fuel))
    }
}

/// Bounds a call by the component's deadline. The epoch callback stops guest
/// code at the deadline; this also covers time spent waiting in host calls
/// (a locked row, a slow provider).
async fn within_deadline<R>(timeout_ms: u64, run: impl Future<Output = wasmtime::Result<R>>) -> wasmtime::Result<R> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), run).await {
        Ok(result) => result,
        Err(_) => Err(wasmtime::Error::new(DeadlineExceeded)),
    }
}

impl Deployed {
    /// Classifies and logs a failed call.
    fn failed(&self, request_id: &str, err: &wasmtime::Error, memory_exceeded: bool) -> Outcome {
        let outcome = classify(err);
        tracing::warn!(
            component = &*self.context.name,
            version = &*self.version,
            request_id,
            outcome = outcome.as_str(),
            // A guest refused memory usually aborts; this names the cause.
            memory_limit_hit = memory_exceeded,
            error = format!("{err:#}"),
            "invocation failed"
        );
        outcome
    }

    /// Records a call that never ran.
    fn finish_unrun(&self, request_id: &str, outcome: Outcome, started: Instant) -> OutcomeRecord {
        self.finish(request_id, outcome, started, Cost::default(), None)
    }

    /// Builds, logs and publishes the outcome record of a call.
    fn finish(
        &self,
        request_id: &str,
        outcome: Outcome,
        started: Instant,
        cost: Cost,
        status: Option<u16>,
    ) -> OutcomeRecord {
        let Cost { fuel_consumed, memory_peak } = cost;
        let record = OutcomeRecord {
            component: self.context.name.clone(),
            version: self.version.clone(),
            outcome,
            latency: started.elapsed(),
            fuel_consumed,
            memory_peak,
        };
        self.count(outcome, record.latency, fuel_consumed, memory_peak);
        tracing::info!(
            component = &*record.component,
            version = &*record.version,
            request_id,
            outcome = outcome.as_str(),
            status,
            latency_us = record.latency.as_micros() as u64,
            fuel = record.fuel_consumed,
            memory_peak = record.memory_peak,
            "invocation"
        );
        record
    }
}

/// Commits or rolls back; `Err` when a commit failed (already logged).
async fn settle(unit_of_work: UnitOfWork, commit: bool, component: &str, request_id: &str) -> Result<(), ()> {
    if commit {
        unit_of_work.commit().await.map_err(|err| {
            tracing::error!(component, request_id, error = %err, "commit failed");
        })
    } else {
        if let Err(err) = unit_of_work.rollback().await {
            tracing::error!(component, request_id, error = %err, "rollback failed");
        }
        Ok(())
    }
}

/// The body of a guest that has returned: every frame it wrote is already
/// buffered, so it is gathered into one piece, and the response goes out
/// with a `Content-Length` instead of chunks. A body that still has to wait
/// (a guest that handed it to a task of its own) or has trailers keeps
/// streaming, starting with the frames already taken.
fn gather_written(mut body: ProxyBody) -> ProxyBody {
    use futures::StreamExt;
    use http_body_util::BodyExt;
    use hyper::body::Body;
    use std::task::{Context, Poll, Waker};

    let mut taken = Vec::new();
    let mut context = Context::from_waker(Waker::noop());
    loop {
        match std::pin::Pin::new(&mut body).poll_frame(&mut context) {
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

/// Sorts a failed call into an outcome.
fn classify(err: &wasmtime::Error) -> Outcome {
    if err.chain().any(|e| e.is::<DeadlineExceeded>()) {
        return Outcome::Timeout;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::FuelExhausted,
        Some(Trap::Interrupt) => Outcome::Timeout,
        _ => Outcome::Trap,
    }
}
