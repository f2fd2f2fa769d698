//! The provider simulator: an in-process stand-in for the email, SMS and
//! webhook providers that the connector components deliver to. Tests and load
//! scenarios switch faults on and off (failure rates, outages, slow answers,
//! rejected recipients), and the simulator keeps a ledger of what arrived, so
//! a test can prove that every notification was delivered exactly once.
//!
//! It owns its two listeners and nothing else. It knows nothing about the
//! host, its outbox or its database: all it sees is HTTP. Deliveries and the
//! control API use separate sockets, so a simulated outage, which really
//! closes the delivery socket, never cuts off whoever is steering it.
//!
//! - `delivery`: the provider endpoints and the order in which faults apply.
//! - `control`: the HTTP control API, a thin layer over [`Simulator`]'s methods.
//! - `socket`: the delivery listener, which can be closed and re-bound while serving.

mod control;
mod delivery;
mod socket;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Status a failing provider answers with when the caller names none: the
/// retryable "try again later" every connector has to cope with.
pub const DEFAULT_FAIL_STATUS: u16 = 503;

/// A provider the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// `POST /email`.
    Email,
    /// `POST /sms`.
    Sms,
    /// `POST /webhook/{*path}`.
    Webhook,
}

impl Channel {
    /// Every channel, in the order the ledger reports them.
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Webhook];

    /// The name used in JSON, URLs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Webhook => "webhook",
        }
    }

    /// Position in the per-channel arrays below.
    fn index(self) -> usize {
        match self {
            Channel::Email => 0,
            Channel::Sms => 1,
            Channel::Webhook => 2,
        }
    }

    /// Prefix of the provider ids this channel hands out, so an id in a log
    /// says which provider issued it.
    fn id_prefix(self) -> &'static str {
        match self {
            Channel::Email => "em",
            Channel::Sms => "sms",
            Channel::Webhook => "wh",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control request the simulator refused. The same checks guard the HTTP
/// control API and the in-process methods, so both behave alike.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A failure rate outside `0.0..=1.0` (or not a number).
    #[error("rate must be a number from 0.0 to 1.0, got {0}")]
    InvalidRate(f64),
    /// A failure status that is not an HTTP error status.
    #[error("status must be an error status from 400 to 599, got {0}")]
    InvalidStatus(u16),
    /// An empty pattern would match every recipient, which is almost
    /// certainly a mistake; "reject everything" is a fail rate of 1.0.
    #[error("the reject pattern must not be empty; send null to stop rejecting")]
    EmptyPattern,
    /// Bringing deliveries back up failed to bind the original address again,
    /// typically because another process took the port during the outage.
    #[error("cannot re-bind the delivery listener on {addr}")]
    Rebind {
        /// The address deliveries were served on before the outage.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

/// A snapshot of what the simulator has received since it started or was
/// last reset. Deserializable too, so clients of `GET /received` can share it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// Distinct idempotency keys delivered successfully, over all channels.
    pub unique: u64,
    /// Successful requests that repeated an already-delivered key.
    pub duplicates: u64,
    /// Every delivery request that reached a handler, counted on arrival,
    /// so requests still in flight (sleeping out a latency) are included.
    pub requests: u64,
    /// Requests answered with an error status (injected or not).
    pub failed: u64,
    /// The same `unique`/`duplicates` split per channel.
    pub channels: ReceivedChannels,
}

/// Per-channel part of [`Received`]; named fields so the JSON reads
/// `channels.email.unique`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedChannels {
    /// `POST /email`.
    pub email: ChannelReceived,
    /// `POST /sms`.
    pub sms: ChannelReceived,
    /// `POST /webhook/{*path}`.
    pub webhook: ChannelReceived,
}

impl ReceivedChannels {
    /// The counts of one channel.
    pub fn get(&self, channel: Channel) -> &ChannelReceived {
        match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
            Channel::Webhook => &self.webhook,
        }
    }
}

/// Deliveries of one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReceived {
    /// Distinct idempotency keys delivered successfully.
    pub unique: u64,
    /// Successful requests that repeated an already-delivered key.
    pub duplicates: u64,
}

/// The simulated providers: fault settings, the delivery ledger and the
/// delivery socket, shared by every connection and by whoever steers it.
pub struct Simulator {
    /// Faults, dice and ledger share one lock so that a reset can never
    /// interleave with a half-recorded delivery. Nothing awaits while holding
    /// it, so a std mutex is enough.
    state: Mutex<State>,
    /// Kept apart from `state` because taking deliveries down has to close
    /// the socket on the spot, from whichever thread asks.
    socket: socket::DeliverySocket,
    /// Seed the dice started from; `reset` returns to it, so a scenario that
    /// resets between phases replays identically.
    seed: u64,
}

/// Everything a delivery reads or writes.
struct State {
    faults: Faults,
    /// Decides which requests a fail rate hits; seeded so tests are repeatable.
    dice: fastrand::Rng,
    ledger: Ledger,
}

/// The faults currently switched on.
#[derive(Default)]
struct Faults {
    /// Indexed by [`Channel::index`]; `set_fail(None, …)` writes all three.
    fail: [FailMode; 3],
    /// Channels answering 503 to everything, indexed by [`Channel::index`].
    channel_down: [bool; 3],
    /// Added before every delivery answer.
    latency: Duration,
    /// Recipients containing this are refused permanently.
    reject: Option<String>,
    /// Deliveries to recipients containing this wait this long more.
    slow: Option<(String, Duration)>,
}

#[derive(Clone, Copy)]
struct FailMode {
    /// Probability of failing a request; 0 switches the mode off.
    rate: f64,
    status: StatusCode,
}

impl Default for FailMode {
    fn default() -> Self {
        FailMode { rate: 0.0, status: StatusCode::SERVICE_UNAVAILABLE }
    }
}

#[derive(Default)]
struct Ledger {
    /// Indexed by [`Channel::index`].
    channels: [ChannelLedger; 3],
    requests: u64,
    failed: u64,
}

#[derive(Default)]
struct ChannelLedger {
    /// Idempotency key → the provider id first issued for it, so a repeat is
    /// answered with the same id like a real idempotent API would. A
    /// `BTreeMap` so the keys list comes out sorted.
    deliveries: BTreeMap<String, String>,
    duplicates: u64,
}

/// What the simulator decided to answer one delivery with.
enum Outcome {
    ChannelDown,
    BadRequest(String),
    Rejected,
    Injected(StatusCode),
    Delivered { provider_id: String, duplicate: bool },
}

impl Simulator {
    /// A simulator with no faults and a random seed (see [`Simulator::seed`]).
    pub fn new() -> Simulator {
        Simulator::with_seed(fastrand::u64(..))
    }

    /// A simulator whose fail-rate dice are seeded, so the same requests
    /// fail on every run.
    pub fn with_seed(seed: u64) -> Simulator {
        Simulator {
            state: Mutex::new(State {
                faults: Faults::default(),
                dice: fastrand::Rng::with_seed(seed),
                ledger: Ledger::default(),
            }),
            socket: socket::DeliverySocket::default(),
            seed,
        }
    }

    /// The seed of the fail-rate dice, to log so a run can be replayed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Where deliveries are served (also while they are down), once
    /// [`Simulator::serve`] has started.
    pub fn delivery_addr(&self) -> Option<SocketAddr> {
        self.socket.addr()
    }

    /// Serves deliveries on `delivery` and the control API on `control` until
    /// `shutdown` resolves, then lets in-flight requests finish. Call it once
    /// per simulator.
    pub async fn serve(
        self: Arc<Self>,
        delivery: TcpListener,
        control: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let delivery_addr = self.socket.install(delivery).context("cannot read the delivery listener's address")?;
        let control_addr = control.local_addr().context("cannot read the control listener's address")?;
        tracing::info!(%delivery_addr, %control_addr, seed = self.seed, "provider simulator listening");

        // Both servers stop on the same signal; a watch channel lets each of
        // them wait on it without sharing the caller's future.
        let (stop_tx, stop_rx) = watch::channel(false);
        let trigger = {
            let mut stopped_elsewhere = stop_rx.clone();
            let stop_tx = &stop_tx;
            async move {
                tokio::select! {
                    () = shutdown => {}
                    _ = stopped_elsewhere.wait_for(|stop| *stop) => {}
                }
                stop_tx.send_replace(true);
            }
        };
        let control_server = {
            let stop_tx = &stop_tx;
            let stop_rx = stop_rx.clone();
            let router = control::router(Arc::clone(&self));
            async move {
                let result = axum::serve(control, router).with_graceful_shutdown(stopped(stop_rx)).await;
                // A simulator nobody can steer any more is no use to a test:
                // take deliveries down with the control API.
                stop_tx.send_replace(true);
                result
            }
        };
        let deliveries = self.socket.run(delivery::router(Arc::clone(&self)), stop_rx);
        let (control_result, (), ()) = tokio::join!(control_server, deliveries, trigger);
        control_result.context("control API failed")?;
        tracing::info!("provider simulator stopped");
        Ok(())
    }

    /// Makes `rate` of the requests to `channel` (every channel when `None`)
    /// fail with `status`, before they are recorded. A rate of 0 switches the
    /// failures off. A 429 carries `Retry-After: 1`.
    pub fn set_fail(&self, channel: Option<Channel>, rate: f64, status: u16) -> Result<(), ControlError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ControlError::InvalidRate(rate));
        }
        let status = match StatusCode::from_u16(status) {
            Ok(code) if code.is_client_error() || code.is_server_error() => code,
            _ => return Err(ControlError::InvalidStatus(status)),
        };
        let mode = FailMode { rate, status };
        let mut state = self.lock();
        match channel {
            Some(channel) => state.faults.fail[channel.index()] = mode,
            None => state.faults.fail = [mode; 3],
        }
        tracing::info!(channel = channel.map(Channel::as_str).unwrap_or("all"), rate, %status, "fail mode set");
        Ok(())
    }

    /// Takes the whole delivery listener down (`true`): the socket is closed,
    /// so new connections are refused, idle ones are closed and in-flight
    /// requests finish. `false` binds the same address again. The control API
    /// is not affected.
    pub fn set_down(&self, down: bool) -> Result<(), ControlError> {
        self.socket.set_down(down)?;
        tracing::info!(down, "delivery listener {}", if down { "down" } else { "up" });
        Ok(())
    }

    /// Makes one channel answer 503 to everything, whatever else is set.
    pub fn set_channel_down(&self, channel: Channel, down: bool) {
        self.lock().faults.channel_down[channel.index()] = down;
        tracing::info!(%channel, down, "channel {}", if down { "down" } else { "up" });
    }

    /// Delays every delivery answer by `ms` milliseconds; 0 removes the delay.
    pub fn set_latency(&self, ms: u64) {
        self.lock().faults.latency = Duration::from_millis(ms);
        tracing::info!(latency_ms = ms, "latency set");
    }

    /// Delays, by `ms` milliseconds more than the latency, deliveries whose
    /// recipient contains `pattern`: one slow message among fast ones.
    /// `None` stops it.
    pub fn slow_recipients(&self, slow: Option<(String, u64)>) -> Result<(), ControlError> {
        if slow.as_ref().is_some_and(|(pattern, _)| pattern.is_empty()) {
            return Err(ControlError::EmptyPattern);
        }
        tracing::info!(pattern = slow.as_ref().map_or("", |(p, _)| p.as_str()), "slow pattern set");
        self.lock().faults.slow = slow.map(|(pattern, ms)| (pattern, Duration::from_millis(ms)));
        Ok(())
    }

    /// Refuses, with a permanent 422, deliveries whose recipient contains
    /// `pattern` (the `to` of email and SMS, the path of a webhook). `None`
    /// stops rejecting.
    pub fn reject_recipients(&self, pattern: Option<String>) -> Result<(), ControlError> {
        if pattern.as_deref() == Some("") {
            return Err(ControlError::EmptyPattern);
        }
        tracing::info!(pattern = pattern.as_deref().unwrap_or(""), "reject pattern set");
        self.lock().faults.reject = pattern;
        Ok(())
    }

    /// Delivery connections accepted so far: with clients that keep
    /// connections alive, far fewer than deliveries.
    pub fn connections_accepted(&self) -> u64 {
        self.socket.accepted()
    }

    /// A snapshot of the ledger.
    pub fn received(&self) -> Received {
        let state = self.lock();
        let ledger = &state.ledger;
        let channel = |channel: Channel| {
            let entry = &ledger.channels[channel.index()];
            ChannelReceived { unique: entry.deliveries.len() as u64, duplicates: entry.duplicates }
        };
        let channels = ReceivedChannels {
            email: channel(Channel::Email),
            sms: channel(Channel::Sms),
            webhook: channel(Channel::Webhook),
        };
        Received {
            unique: Channel::ALL.iter().map(|c| channels.get(*c).unique).sum(),
            duplicates: Channel::ALL.iter().map(|c| channels.get(*c).duplicates).sum(),
            requests: ledger.requests,
            failed: ledger.failed,
            channels,
        }
    }

    /// The idempotency keys delivered on `channel`, sorted.
    pub fn received_ids(&self, channel: Channel) -> Vec<String> {
        self.lock().ledger.channels[channel.index()].deliveries.keys().cloned().collect()
    }

    /// Back to a fresh simulator: ledger emptied, every fault off, dice
    /// re-seeded, deliveries up again.
    pub fn reset(&self) -> Result<(), ControlError> {
        {
            let mut state = self.lock();
            *state = State {
                faults: Faults::default(),
                dice: fastrand::Rng::with_seed(self.seed),
                ledger: Ledger::default(),
            };
        }
        self.socket.set_down(false)?;
        tracing::info!("simulator reset");
        Ok(())
    }

    /// Counts a delivery request as it arrives, before any latency, so a
    /// snapshot shows requests still in flight, and returns the latency to
    /// add for `recipient`, which is then slept out without the lock.
    fn arrive(&self, recipient: Option<&str>) -> Duration {
        let mut state = self.lock();
        state.ledger.requests += 1;
        let slow = match (&state.faults.slow, recipient) {
            (Some((pattern, extra)), Some(recipient)) if recipient.contains(pattern.as_str()) => *extra,
            _ => Duration::ZERO,
        };
        state.faults.latency + slow
    }

    /// Decides and records the answer to one delivery, in the documented
    /// order: channel down, malformed request, rejected recipient, injected
    /// failure, then success or duplicate.
    fn decide(&self, channel: Channel, request: Result<(&str, &str), String>) -> Outcome {
        let mut state = self.lock();
        let State { faults, dice, ledger } = &mut *state;
        let index = channel.index();
        let fail = faults.fail[index];
        let outcome = match request {
            _ if faults.channel_down[index] => Outcome::ChannelDown,
            Err(problem) => Outcome::BadRequest(problem),
            Ok((_, recipient)) if faults.reject.as_deref().is_some_and(|pattern| recipient.contains(pattern)) => {
                Outcome::Rejected
            }
            Ok(_) if fail.rate > 0.0 && dice.f64() < fail.rate => Outcome::Injected(fail.status),
            Ok((key, _)) => {
                let entry = &mut ledger.channels[index];
                match entry.deliveries.get(key) {
                    Some(provider_id) => {
                        entry.duplicates += 1;
                        Outcome::Delivered { provider_id: provider_id.clone(), duplicate: true }
                    }
                    None => {
                        let provider_id = format!("{}_{}", channel.id_prefix(), uuid::Uuid::new_v4().simple());
                        entry.deliveries.insert(key.to_owned(), provider_id.clone());
                        Outcome::Delivered { provider_id, duplicate: false }
                    }
                }
            }
        };
        if !matches!(outcome, Outcome::Delivered { .. }) {
            ledger.failed += 1;
        }
        outcome
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and every update leaves the
        // state consistent, so a poisoned lock is still safe to use.
        lock(&self.state)
    }
}

impl Default for Simulator {
    fn default() -> Self {
        Simulator::new()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves once `stop` turns true, or when its sender is gone, which also
/// means nobody will ever keep the server running.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The one error body both APIs use: `{"error": "…"}`.
fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}
