//! Switchyard's load-testing kit. The crate is a library so the host's
//! integration tests can start the same pieces in-process that `just
//! loadtest` runs as binaries.
//!
//! - [`simulator`]: plays the email, SMS and webhook providers the connector
//!   components deliver to, with switchable faults (failure rates, outages,
//!   slow answers, rejected recipients) and a ledger of what arrived. Served
//!   standalone by the `provider-simulator` binary.
//! - [`load`]: the load generator: open model (fixed arrival rate, latency
//!   from each request's intended start) and closed model (N users), with
//!   HDR-histogram percentiles. [`scenarios`] drive it against the reference
//!   app; the `loadtest` binary runs them.
//! - [`harness`] starts and stops the host and the simulator for a run, on
//!   a config [`hostconfig`] derives from `switchyard.toml`.
//! - [`summary`], [`plot`] and [`report`] write a run's results;
//!   [`thresholds`] decide whether it passed; [`hostmetrics`] reads the
//!   host's metrics, outbox counts and memory; [`variant`] builds the second
//!   version the hot-swap scenario deploys.

pub mod harness;
pub mod hostconfig;
pub mod hostmetrics;
pub mod load;
pub mod plot;
pub mod report;
pub mod scenarios;
pub mod simulator;
pub mod summary;
pub mod techreport;
pub mod thresholds;
pub mod variant;
