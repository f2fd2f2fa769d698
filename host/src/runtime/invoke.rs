//! What every call path shares once admitted (`admit.rs`): a fresh store
//! with its limits, the call within its deadline, metering, and the
//! commit-or-rollback of the unit of work.
//!
//! Each world's path (`handler`, `connector`, `proxy`) implements [`Call`]
//! for its typed pre-instance and runs it through [`Sandbox::execute`], so a
//! world's export can only be called with that world's input. Nothing here
//! compiles or links; the registry did that. The outcome record is the
//! single source for logs and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::Runtime;
use super::outcome::{Cost, DeadlineExceeded, Outcome, OutcomeRecord, classify};
use super::registry::Deployed;
use super::state::InvocationState;
use super::store::{Budget, new_store, renew_store};
use crate::config::World;
use crate::db::UnitOfWork;

/// The log target of the line each invocation writes at debug:
/// `RUST_LOG=info,invocation=debug` turns the lines on.
pub const INVOCATION_TARGET: &str = "invocation";

/// The header that keeps a client's retries on one version during a rollout.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("no component named {0:?} is loaded")]
    UnknownComponent(String),
    #[error("component {component:?} is a {actual} component, not a {expected}")]
    WrongWorld { component: String, expected: &'static str, actual: &'static str },
}

/// A pre-instance of one world and how its export is called: the one thing
/// the call paths do differently inside a store.
pub(crate) trait Call {
    type Input: Send;
    type Output: Send;

    /// Instantiates and calls the export.
    fn call(
        &self,
        store: &mut Store<InvocationState>,
        input: Self::Input,
    ) -> impl Future<Output = wasmtime::Result<Self::Output>> + Send;
}

/// A store for one call, with the budget it was given: fresh, or a kept
/// one renewed (`reuse.rs`).
pub(crate) struct Sandbox {
    store: wasmtime::Result<Store<InvocationState>>,
    fuel: Option<u64>,
    timeout: Duration,
    /// Whether the store is handed back after a call that went well.
    keep: bool,
}

/// A finished call, before its result is interpreted.
pub(crate) struct Execution<R> {
    pub result: wasmtime::Result<R>,
    /// `None` only when no store could be made.
    pub unit_of_work: Option<UnitOfWork>,
    pub cost: Cost,
    pub memory_exceeded: bool,
    /// The store, after a call that went well, when it is kept for reuse.
    pub store: Option<Store<InvocationState>>,
}

impl Sandbox {
    /// The store, to set up what the call is given (or why there is none).
    pub(crate) fn store(&mut self) -> wasmtime::Result<&mut Store<InvocationState>> {
        self.store.as_mut().map_err(|err| wasmtime::Error::msg(format!("{err:#}")))
    }

    /// The store itself, for an instance that outlives one call.
    pub(crate) fn into_store(self) -> wasmtime::Result<Store<InvocationState>> {
        self.store
    }

    /// Hands the store back after a call that goes well, for reuse.
    pub(crate) fn keeping_store(self, keep: bool) -> Sandbox {
        Sandbox { keep, ..self }
    }

    /// Calls `pre`'s export within the deadline, then reads what it cost.
    pub(crate) async fn execute<P: Call>(self, pre: &P, input: P::Input) -> Execution<P::Output> {
        let mut store = match self.store {
            Ok(store) => store,
            Err(err) => {
                return Execution {
                    result: Err(err),
                    unit_of_work: None,
                    cost: Cost::default(),
                    memory_exceeded: false,
                    store: None,
                };
            }
        };
        let result = within_deadline(self.timeout, pre.call(&mut store, input)).await;
        let fuel_consumed = self.fuel.map_or(0, |budget| budget.saturating_sub(store.get_fuel().unwrap_or(0)));
        let state = store.data_mut();
        state.log_guest_output();
        let cost = Cost { fuel_consumed, memory_peak: state.limiter.peak };
        let memory_exceeded = state.limiter.exceeded;
        let (unit_of_work, store) = if self.keep && result.is_ok() {
            (state.take_unit_of_work(), Some(store))
        } else {
            (store.into_data().into_unit_of_work(), None)
        };
        Execution { result, cost, memory_exceeded, unit_of_work: Some(unit_of_work), store }
    }
}

impl Runtime {
    /// The version of `component` this call runs on: during a rollout the
    /// canary or the stable one, the same for the same `key`; and whether it
    /// is the canary, whose faults the rollout judges, not the breaker.
    pub(crate) fn lookup(&self, component: &str, key: Option<&str>) -> Result<(Arc<Deployed>, bool), InvokeError> {
        self.registry.route(component, key).ok_or_else(|| InvokeError::UnknownComponent(component.to_owned()))
    }

    /// A store for one call of `deployed`, its deadline counted from now.
    pub(crate) fn sandbox(&self, deployed: &Deployed, request_id: &Arc<str>) -> Sandbox {
        let fuel = self.fuel_metering.then_some(deployed.limits.fuel);
        let timeout = Duration::from_millis(deployed.limits.timeout_ms);
        let state = InvocationState::for_call(
            &self.db,
            &deployed.context,
            deployed.limits.memory_bytes,
            request_id,
            &self.outbound,
        );
        let store = new_store(&deployed.engine, state, Budget { fuel, deadline: Instant::now() + timeout });
        Sandbox { store, fuel, timeout, keep: false }
    }

    /// A kept store of `deployed`, renewed for one more call; kept again
    /// after it if the call goes well.
    pub(crate) fn resumed_sandbox(
        &self,
        deployed: &Deployed,
        request_id: &Arc<str>,
        store: Store<InvocationState>,
    ) -> Sandbox {
        let fuel = self.fuel_metering.then_some(deployed.limits.fuel);
        let timeout = Duration::from_millis(deployed.limits.timeout_ms);
        let store = renew_store(store, request_id, Budget { fuel, deadline: Instant::now() + timeout });
        Sandbox { store, fuel, timeout, keep: true }
    }
}

/// Bounds a call by the component's deadline. The epoch callback stops guest
/// code at the deadline; this also covers time spent waiting in host calls
/// (a locked row, a slow provider).
async fn within_deadline<R>(timeout: Duration, run: impl Future<Output = wasmtime::Result<R>>) -> wasmtime::Result<R> {
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(wasmtime::Error::new(DeadlineExceeded)),
    }
}

/// Commits or rolls back; `Err` when a commit failed (already logged).
pub(crate) async fn settle(
    unit_of_work: Option<UnitOfWork>,
    commit: bool,
    component: &str,
    request_id: &str,
) -> Result<(), ()> {
    let Some(unit_of_work) = unit_of_work else { return Ok(()) };
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

impl Deployed {
    /// The error for a call path of `expected` on this component.
    pub(crate) fn wrong_world(&self, expected: World) -> InvokeError {
        InvokeError::WrongWorld {
            component: self.context.name.to_string(),
            expected: expected.as_str(),
            actual: self.pre.world().as_str(),
        }
    }

    /// Classifies and logs a failed call.
    pub(crate) fn failed(&self, request_id: &str, err: &wasmtime::Error, memory_exceeded: bool) -> Outcome {
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

    /// Builds, logs and publishes the outcome record of a call.
    pub(crate) fn finish(
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
        // Off by default: the metrics carry the same outcome, and a line per
        // call cost 29 % of the CPU of a trivial request (docs/performance.md).
        // Failures are logged at warn with their error (`failed`).
        tracing::debug!(
            target: INVOCATION_TARGET,
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
