//! Policies that protect components and their callers: bounded admission
//! and the circuit breaker, one of each per component. Time is injected (see [`crate::clock`]) so every
//! transition is testable without sleeping.

pub mod admission;
pub mod breaker;

pub use admission::{Admission, Refusal, Slot};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit, Rejected};
