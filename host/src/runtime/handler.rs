//! The `handler` world's call path: one request in, one response out, and
//! the unit of work committed only for a response below 400.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;

use super::Runtime;
use super::admit::Rejection;
use super::invoke::{Call, IDEMPOTENCY_KEY, InvokeError, settle};
use super::outcome::{Outcome, OutcomeRecord};
use super::registry::Prepared;
use super::state::InvocationState;
use crate::capabilities::bindings::{HandlerPre, types};
use crate::config::World;
use crate::telemetry::metrics::INVOCATION_RERUNS;

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

/// Called with the request shared, so a run again needs no copy of it.
impl Call for HandlerPre<InvocationState> {
    type Input = Arc<types::Request>;
    type Output = types::Response;

    async fn call(
        &self,
        store: &mut Store<InvocationState>,
        request: Arc<types::Request>,
    ) -> wasmtime::Result<types::Response> {
        let handler = self.instantiate_async(&mut *store).await?;
        handler.switchyard_platform_incoming_handler().call_handle(&mut *store, &request).await
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
        let key = request.headers.iter().find(|(name, _)| name == IDEMPOTENCY_KEY).map(|(_, value)| value.as_str());
        let (deployed, canary) = self.lookup(component, key)?;
        let Prepared::Handler(pre) = &deployed.pre else { return Err(deployed.wrong_world(World::Handler)) };
        let started = Instant::now();
        let admitted = match self.admit(&deployed, &request_id, started).await {
            Ok(admitted) => admitted,
            Err((record, rejection)) => return Ok(Invocation { response: None, record, rejection: Some(rejection) }),
        };
        let request = Arc::new(types::Request {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            params: request.params,
            body: request.body,
        });
        // A safe method reads first: no write permit or row locks unless it
        // writes (`db/unit_of_work.rs`).
        let read_first = self.read_first && matches!(request.method.as_str(), "GET" | "HEAD");
        let again = read_first.then(|| Arc::clone(&request));
        let mut sandbox = self.sandbox(&deployed, &request_id);
        if read_first && let Ok(store) = sandbox.store() {
            let state = store.data_mut();
            state.unit_of_work = state.unit_of_work.renewed(request_id.clone()).reading_first();
        }
        let mut execution = sandbox.execute(pre, request).await;
        if let Some(request) = again
            && execution.unit_of_work.as_ref().is_some_and(|unit| unit.conflicted())
        {
            // What it read changed before its first write: its work is
            // discarded, and it runs again as a writer from the start.
            let _ = settle(execution.unit_of_work.take(), false, component, &request_id).await;
            self.metrics.counter(INVOCATION_RERUNS, &[("component", component)]).increment(1);
            tracing::debug!(component, request_id = &*request_id, "what it read changed before it wrote; run again");
            let first = execution.cost;
            execution = self.sandbox(&deployed, &request_id).execute(pre, request).await;
            execution.cost.fuel_consumed += first.fuel_consumed;
            execution.cost.memory_peak = execution.cost.memory_peak.max(first.memory_peak);
        }
        let (outcome, response) = match execution.result {
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
        admitted.settle(canary || !outcome.is_fault());
        let status = response.as_ref().map(|r| r.status);
        let record = deployed.finish(&request_id, outcome, started, execution.cost, status);
        Ok(Invocation { response, record, rejection: None })
    }
}
