//! The one `Store` constructor.
//!
//! Every wasmtime `Store` starts with no fuel and an expired epoch deadline.
//! Each store made here gets, before anything runs in it, the memory
//! limiter of its invocation, its fuel budget and a wall-clock deadline
//! that the epoch ticker enforces, yielding to other tasks at each tick.

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
    store.limiter(|state| &mut state.limiter);
    if let Some(fuel) = budget.fuel {
        store.set_fuel(fuel)?;
    }
    let deadline = budget.deadline;
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::new(DeadlineExceeded))
        } else {
            // Yield each tick so a busy guest shares its worker thread.
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
    Ok(store)
}
