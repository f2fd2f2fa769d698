//! Policies that protect components and their callers: the per-component
//! circuit breaker. Time is injected (see [`crate::clock`]) so every
//! transition is testable without sleeping.

pub mod breaker;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit, Rejected};
