//! The delivery listener, which can be closed and re-bound while serving, so
//! that an outage looks like one from the outside: connections are refused,
//! not answered with errors.
//!
//! The listener sits in a slot behind a std mutex rather than inside the
//! accept loop, because [`DeliverySocket::set_down`] is synchronous and must
//! have closed the socket by the time it returns: a test that takes the
//! provider down and connects on the next line has to be refused, not race
//! the accept loop. The loop borrows the listener only for the instant of a
//! `poll_accept`. This module serves connections; it does not look at
//! requests.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::{ControlError, lock};

/// Pending-connection queue of a re-bound listener, the same as tokio's
/// `TcpListener::bind`: a load test opens connections in bursts, and a short
/// queue would turn them into SYN retries that look like provider latency.
const BACKLOG: u32 = 1024;
/// Pause after a failed `accept`. Errors such as running out of file
/// descriptors persist for a while, and retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long shutdown waits for in-flight deliveries, which may be sleeping
/// out a configured latency, before it gives up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The delivery listener slot, shared between the accept loop and the
/// control side.
#[derive(Default)]
pub(super) struct DeliverySocket {
    slot: Mutex<Slot>,
    /// Delivery connections accepted so far.
    accepted: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Slot {
    /// Where deliveries are served; kept while down so that coming back up
    /// binds the same address, which clients already know.
    addr: Option<SocketAddr>,
    /// `None` while down (or before `serve`): dropping it is what closes the
    /// socket.
    listener: Option<TcpListener>,
    /// Wanted state, which may be set before `serve` installs a listener.
    down: bool,
    /// Counts outages, so the accept loop notices one even if the listener
    /// was already back up when it next looked, and still closes the
    /// connections accepted before it.
    outages: u64,
    /// The accept loop's waker. The loop waits on the listener, and a
    /// listener dropped by `set_down` never wakes it, so `set_down` does.
    waker: Option<Waker>,
    /// Registering a new listener needs a tokio runtime, and `set_down` may
    /// be called from a thread outside it. `None` outside `serve`.
    runtime: Option<Handle>,
}

/// What the accept loop has to react to.
enum Event {
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    WentDown,
}

impl DeliverySocket {
    /// Delivery connections accepted so far.
    pub(super) fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where deliveries are served, once `serve` has started.
    pub(super) fn addr(&self) -> Option<SocketAddr> {
        lock(&self.slot).addr
    }

    /// Takes over `listener` for the accept loop. Must be called from within
    /// the runtime that will serve it.
    pub(super) fn install(&self, listener: TcpListener) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let mut slot = lock(&self.slot);
        slot.addr = Some(addr);
        slot.runtime = Some(Handle::current());
        // A `set_down(true)` that came before `serve` still counts.
        if !slot.down {
            slot.listener = Some(listener);
        }
        Ok(addr)
    }

    /// Closes the listener (`true`) or binds its address again (`false`).
    /// Before `serve` it only records the wish.
    pub(super) fn set_down(&self, down: bool) -> Result<(), ControlError> {
        let mut slot = lock(&self.slot);
        if down {
            if slot.listener.take().is_some() {
                slot.outages += 1;
            }
        } else if slot.listener.is_none()
            && let (Some(addr), Some(runtime)) = (slot.addr, slot.runtime.as_ref())
        {
            let listener = rebind(addr, runtime).map_err(|source| ControlError::Rebind { addr, source })?;
            slot.listener = Some(listener);
        }
        slot.down = down;
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Accepts and serves delivery connections until `stop` turns true, then
    /// closes the listener and gives in-flight requests [`DRAIN_TIMEOUT`] to
    /// finish.
    pub(super) async fn run(&self, router: Router, mut stop: watch::Receiver<bool>) {
        // One graceful-shutdown group per period of being up: an outage
        // closes that period's connections (idle ones at once, busy ones once
        // their request is answered), like a provider whose load balancer
        // was pulled.
        let mut connections = GracefulShutdown::new();
        let mut seen_outages = lock(&self.slot).outages;
        loop {
            let event = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                event = poll_fn(|cx| self.poll_event(&mut seen_outages, cx)) => event,
            };
            match event {
                Event::WentDown => {
                    let closing = std::mem::replace(&mut connections, GracefulShutdown::new());
                    tokio::spawn(closing.shutdown());
                }
                Event::Accepted(Ok((stream, peer))) => {
                    self.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let service = TowerToHyperService::new(router.clone());
                    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    let connection = connections.watch(connection);
                    tokio::spawn(async move {
                        if let Err(err) = connection.await {
                            tracing::debug!(%peer, %err, "delivery connection ended with an error");
                        }
                    });
                }
                Event::Accepted(Err(err)) => {
                    tracing::warn!(%err, "cannot accept a delivery connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
        self.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, connections.shutdown()).await.is_err() {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "delivery connections still busy at shutdown; dropping them");
        }
    }

    fn poll_event(&self, seen_outages: &mut u64, cx: &mut Context<'_>) -> Poll<Event> {
        let mut slot = lock(&self.slot);
        if slot.outages != *seen_outages {
            *seen_outages = slot.outages;
            return Poll::Ready(Event::WentDown);
        }
        if let Some(listener) = &slot.listener
            && let Poll::Ready(accepted) = listener.poll_accept(cx)
        {
            return Poll::Ready(Event::Accepted(accepted));
        }
        match &mut slot.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Stops listening for good: later `set_down` calls only record the wish,
    /// since no runtime may be left to register a listener with.
    fn close(&self) {
        let mut slot = lock(&self.slot);
        slot.listener = None;
        slot.runtime = None;
        slot.waker = None;
    }
}

/// Binds `addr` again. `SO_REUSEADDR` lets the port be taken back while the
/// connections of the previous listener linger in `TIME_WAIT`.
fn rebind(addr: SocketAddr, runtime: &Handle) -> io::Result<TcpListener> {
    let _entered = runtime.enter();
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
