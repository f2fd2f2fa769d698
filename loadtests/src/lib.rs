//! Switchyard's load-testing kit. The crate is a library so the host's
//! integration tests can start the same pieces in-process that `just
//! loadtest` runs as binaries.
//!
//! - [`simulator`]: plays the email, SMS and webhook providers the connector
//!   components deliver to, with switchable faults (failure rates, outages,
//!   slow answers, rejected recipients) and a ledger of what arrived. Served
//!   standalone by the `provider-simulator` binary.

pub mod simulator;
