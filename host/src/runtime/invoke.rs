//! One invocation of a handler: fresh `Store`, limits, fuel, deadline, call,
//! metering, outcome, and the commit-or-rollback of its unit of work.
//!
//! Nothing here compiles or links; the registry did that. The outcome
//! record is the single source for logs now and metrics later.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::Runtime;
use super::bindings::types;
use super::registry::Deployed;
use super::state::InvocationState;

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

/// How an invocation ended; a bounded label set for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a status below 500.
    Ok,
    /// Answered with a 5xx status, or its work could not be committed.
    Error,
    /// Trapped: a panic, an invalid operation, or growing past its memory limit.
    Trap,
    /// Ran out of its fuel budget.
    FuelExhausted,
    /// Passed its wall-clock deadline.
    Timeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Trap => "trap",
            Outcome::FuelExhausted => "fuel_exhausted",
            Outcome::Timeout => "timeout",
        }
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

/// The result of a finished invocation: the component's own response when it
/// produced one whose work was committed, else `None` with the reason logged.
#[derive(Debug)]
pub struct Invocation {
    pub response: Option<HandlerResponse>,
    pub record: OutcomeRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("no component named {0:?} is loaded")]
    UnknownComponent(String),
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

impl Runtime {
    /// Runs `component`'s `handle` for one request.
    pub async fn invoke_handler(
        &self,
        component: &str,
        request_id: Arc<str>,
        request: HandlerRequest,
    ) -> Result<Invocation, InvokeError> {
        let deployed =
            self.registry.get(component).ok_or_else(|| InvokeError::UnknownComponent(component.to_owned()))?;
        Ok(self.invoke(&deployed, request_id, request).await)
    }

    async fn invoke(&self, deployed: &Deployed, request_id: Arc<str>, request: HandlerRequest) -> Invocation {
        let started = Instant::now();
        let limits = deployed.limits;
        let timeout = Duration::from_millis(limits.timeout_ms);
        let unit_of_work = self.db.unit_of_work(deployed.context.name.clone(), request_id.clone());
        let memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let state = InvocationState::new(deployed.context.clone(), request_id.clone(), unit_of_work, memory);

        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Every Store starts with no fuel and an expired epoch deadline.
        let fuel_set = store.set_fuel(limits.fuel);
        let deadline = started + timeout;
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                // Yield each tick so a busy guest shares its worker thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);

        let request = types::Request {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            params: request.params,
            body: request.body,
        };
        let call = async {
            fuel_set?;
            let handler = deployed.pre.instantiate_async(&mut store).await?;
            handler.switchyard_platform_incoming_handler().call_handle(&mut store, &request).await
        };
        // The epoch callback stops guest code at the deadline; this bound
        // also covers time spent waiting in host calls (a locked row, a
        // slow database).
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(wasmtime::Error::new(DeadlineExceeded)),
        };

        let fuel_consumed = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let state = store.into_data();
        let memory_peak = state.limiter.peak;
        let memory_exceeded = state.limiter.exceeded;
        let unit_of_work = state.into_unit_of_work();

        let (outcome, response) = match result {
            Ok(response) if !(100..=599).contains(&response.status) => {
                tracing::warn!(
                    component = &*deployed.context.name,
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
            Err(err) => {
                let outcome = classify(&err);
                tracing::warn!(
                    component = &*deployed.context.name,
                    version = &*deployed.version,
                    request_id = &*request_id,
                    outcome = outcome.as_str(),
                    // A guest refused memory usually aborts; this names the cause.
                    memory_limit_hit = memory_exceeded,
                    error = format!("{err:#}"),
                    "invocation failed"
                );
                (outcome, None)
            }
        };

        // The unit of work commits only for a response below 400.
        let (outcome, response) = match response {
            Some(response) if response.status < 400 => match unit_of_work.commit().await {
                Ok(()) => (outcome, Some(response)),
                Err(err) => {
                    tracing::error!(component = &*deployed.context.name, request_id = &*request_id, error = %err, "commit failed");
                    (Outcome::Error, None)
                }
            },
            response => {
                if let Err(err) = unit_of_work.rollback().await {
                    tracing::error!(component = &*deployed.context.name, request_id = &*request_id, error = %err, "rollback failed");
                }
                (outcome, response)
            }
        };

        let record = OutcomeRecord {
            component: deployed.context.name.clone(),
            version: deployed.version.clone(),
            outcome,
            latency: started.elapsed(),
            fuel_consumed,
            memory_peak,
        };
        tracing::info!(
            component = &*record.component,
            version = &*record.version,
            request_id = &*request_id,
            outcome = outcome.as_str(),
            status = response.as_ref().map(|r| r.status),
            latency_us = record.latency.as_micros() as u64,
            fuel = record.fuel_consumed,
            memory_peak = record.memory_peak,
            "invocation"
        );
        Invocation { response, record }
    }
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
