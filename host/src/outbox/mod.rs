//! Store-and-forward delivery of outbox messages.
//!
//! Handlers enqueue messages inside their transaction (see
//! `capabilities::outbox`); the [`dispatcher`] claims due messages with a
//! lease, hands each to its connector component through the same invoke path
//! as handlers, and records delivery, a retry with backoff, or a dead letter.
//! This module decides *what* happens to a message; SQL lives in `db::outbox`.

pub mod backoff;
pub mod dispatcher;

pub use dispatcher::{Dispatcher, DispatcherHandle};
