//! The one `Store` constructor.
//!
//! Every wasmtime `Store` starts with no fuel and an expired epoch deadline.
//! Each store made here gets, before anything runs in it, the memory
//! limiter of its invocation, its fuel budget and a wall-clock deadline
//! that the epoch ticker enforces, yielding to other tasks at each tick.
//! A store kept for reuse gets a new budget before each call ([`renew_store`]).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Engine, Store, UpdateDeadline};

use super::outcome::DeadlineExceeded;
use super::state::InvocationState;

/// What one store may spend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Fuel for the call; `None` on an engine that meters none.
    pub fuel: Option<u64>,
    /// When the epoch callback stops the guest.
    pub deadline: Instant,
}

/// A store for `state`, limited and budgeted. Setting the fuel fails only
/// on an engine without fuel, which the runtime never gives a budget.
pub(crate) fn new_store(
    engine: &Engine,
    state: InvocationState,
    budget: Budget,
) -> wasmtime::Result<Store<InvocationState>> {
    let mut store = Store::new(engine, state);
    store.data_mut().deadline = budget.deadline;
    store.limiter(|state| &mut state.limiter);
    store.epoch_deadline_callback(|store| {
        if Instant::now() >= store.data().deadline {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            // Yield each tick so a busy guest shares its worker thread.
            Ok(UpdateDeadline::Yield(1))
        }
    });
    budget_store(store, budget.fuel)
}

/// A kept store, ready for the call of `request_id` with a budget of its
/// own: fuel is set afresh, not topped up, and the deadline counts from now.
pub(crate) fn renew_store(
    mut store: Store<InvocationState>,
    request_id: &Arc<str>,
    budget: Budget,
) -> wasmtime::Result<Store<InvocationState>> {
    store.data_mut().next_call(request_id, budget.deadline);
    budget_store(store, budget.fuel)
}

fn budget_store(mut store: Store<InvocationState>, fuel: Option<u64>) -> wasmtime::Result<Store<InvocationState>> {
    if let Some(fuel) = fuel {
        store.set_fuel(fuel)?;
    }
    store.set_epoch_deadline(1);
    Ok(store)
}
