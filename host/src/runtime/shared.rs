//! Instances of a `wasi:http` 0.3 component that serve several requests at
//! once (`reuse.max_concurrent` above 1).
//!
//! A 0.3 `handle` is an async function: while one request waits (on its
//! body, a timer, an outgoing request), the same instance can take the
//! next. Each such instance is a worker task that owns its store and keeps
//! the store's concurrent event loop running while it serves, taking the
//! requests the pool hands it, up to `max_concurrent` at a time and
//! `max_requests` in all.
//!
//! What stays each request's, and what the instance shares:
//! - Admission, the breaker, the outcome, latency and the metrics are each
//!   request's, as on any instance.
//! - Fuel is counted per store, so each request taken adds its budget to
//!   the store's fuel, which never holds more than the budgets of the
//!   requests in flight (one budget when none is). Fuel burned while
//!   several requests are in flight is charged to them in equal shares.
//! - Each request has its own deadline. One without a response, or whose
//!   body has not ended, by then fails as a timeout. Its task cannot be
//!   stopped alone, so its instance takes no more requests, and is stopped
//!   when the last deadline of the requests on it has passed. The epoch
//!   callback stops guest code at that last deadline too.
//! - The memory limit is the instance's.
//! - A trap, fuel running out or the instance's deadline fails every
//!   request on that instance, each counted by what happened, and retires
//!   it; requests on other instances go on.
//! - A client that goes away ends its request at once, as an error. The
//!   guest sees its response body dropped; the instance goes on serving.
//! - What the guest writes to stdout and stderr is logged as each request
//!   ends, under the id of the request taken most recently.
//!
//! A worker holds a place in the component's pool (`reuse.rs`) like any
//! kept instance. A request that finds no instance of its version with room
//! and no place for a new one runs on a fresh instance of its own.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use wasmtime::component::Accessor;
use wasmtime::{AsContextMut, Store, Trap};
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::outcome::{Cost, DeadlineExceeded, Outcome, classify};
use super::reuse::{Lease, Retired, WarmPool, sweep_while_alive};
use super::state::InvocationState;
use crate::clock::SharedClock;
use crate::config::ReuseConfig;

/// Takes a 0.3 guest's response as soon as `handle` returns it.
pub(crate) type Respond = Box<dyn FnOnce(hyper::Response<WasiBody>) + Send>;

/// One request for a shared instance.
pub(crate) struct Job {
    pub request_id: Arc<str>,
    pub request: hyper::Request<WasiBody>,
    pub respond: Respond,
    /// Resolves `Ok` when the client went away before the response body
    /// ended, and `Err` once it ended (or was dropped after its end).
    pub body_done: oneshot::Receiver<()>,
    /// Its fuel budget; `None` on an engine that meters none.
    pub fuel: Option<u64>,
    pub deadline: Instant,
    /// Where its end is told.
    pub served: oneshot::Sender<Served>,
}

/// How a request on a shared instance ended.
pub(crate) struct Served {
    /// `Ok(true)` when its client went away before its body ended.
    pub result: wasmtime::Result<bool>,
    pub cost: Cost,
    pub memory_exceeded: bool,
}

/// What a new instance is made from, when a request needs one.
pub(crate) struct NewInstance {
    pub store: wasmtime::Result<Store<InvocationState>>,
    pub pre: ServicePre<InvocationState>,
}

/// The shared instances of one component, all its 0.3 versions.
pub(crate) struct SharedPool {
    /// Counts the places workers hold, with the component's other kept
    /// instances, and their starts and retirements.
    places: Arc<WarmPool>,
    max_concurrent: usize,
    max_requests: u32,
    idle_timeout_ms: i64,
    clock: SharedClock,
    /// Workers that take requests.
    listed: Mutex<Vec<Listed>>,
}

struct Listed {
    version: u64,
    jobs: mpsc::UnboundedSender<Job>,
    load: Arc<Load>,
    /// Requests handed to it so far.
    taken: u32,
}

/// What a worker and its pool both see of it.
struct Load {
    /// Requests handed to it and not yet ended.
    in_flight: AtomicUsize,
    /// When it last had none in flight.
    idle_since_ms: AtomicI64,
    /// Why it was unlisted; `None` while listed.
    unlisted: Mutex<Option<Retired>>,
}

impl Load {
    fn unlisted(&self) -> MutexGuard<'_, Option<Retired>> {
        self.unlisted.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reason(&self) -> Option<Retired> {
        *self.unlisted()
    }

    /// Marks it unlisted for `reason`, unless it already was.
    fn mark(&self, reason: Retired) {
        self.unlisted().get_or_insert(reason);
    }
}

impl SharedPool {
    /// The shared instances of a component reusing instances as `reuse`
    /// says, holding places in `places`. Idle ones past their time are
    /// also swept in the background; the sweep ends with the pool.
    pub(crate) fn start(places: Arc<WarmPool>, reuse: &ReuseConfig, clock: SharedClock) -> Arc<SharedPool> {
        let pool = Arc::new(SharedPool {
            places,
            max_concurrent: usize::try_from(reuse.max_concurrent).unwrap_or(usize::MAX).max(1),
            max_requests: reuse.max_requests.max(1),
            idle_timeout_ms: i64::try_from(reuse.idle_timeout_ms).unwrap_or(i64::MAX),
            clock,
            listed: Mutex::new(Vec::new()),
        });
        sweep_while_alive(&pool, reuse.idle_timeout_ms, SharedPool::sweep);
        pool
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Listed>> {
        // A poisoned lock only means a thread panicked mid-update; the
        // list itself is always whole.
        self.listed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands `job` to an instance of `version` with room, or to a new one
    /// made by `instance` when the pool has a place for it; gives the job
    /// back when neither is possible.
    pub(crate) fn take(
        self: &Arc<Self>,
        version: u64,
        job: Job,
        instance: impl FnOnce() -> NewInstance,
    ) -> Result<(), Box<Job>> {
        let mut listed = self.lock();
        self.expire(&mut listed, self.clock.now_millis());
        let room = listed.iter().position(|worker| {
            worker.version == version && worker.load.in_flight.load(Ordering::Relaxed) < self.max_concurrent
        });
        if let Some(at) = room {
            let worker = &mut listed[at];
            worker.load.in_flight.fetch_add(1, Ordering::Relaxed);
            if let Err(refused) = worker.jobs.send(job) {
                // Its worker has ended without unlisting itself (it
                // panicked): it is dropped, and the job goes elsewhere.
                listed.remove(at);
                self.publish_idle(&listed);
                return Err(Box::new(refused.0));
            }
            worker.taken += 1;
            if worker.taken >= self.max_requests {
                listed.remove(at).load.mark(Retired::MaxRequests);
            }
            self.publish_idle(&listed);
            return Ok(());
        }
        let Some(lease) = self.places.lease() else { return Err(Box::new(job)) };
        let (sender, jobs) = mpsc::unbounded_channel();
        let load = Arc::new(Load {
            in_flight: AtomicUsize::new(1),
            idle_since_ms: AtomicI64::new(0),
            unlisted: Mutex::new(None),
        });
        if self.max_requests > 1 {
            listed.push(Listed { version, jobs: sender, load: load.clone(), taken: 1 });
        } else {
            load.mark(Retired::MaxRequests);
        }
        drop(listed);
        let NewInstance { store, pre } = instance();
        let worker = Worker { pool: self.clone(), load, jobs };
        tokio::spawn(worker.run(store, pre, lease, job).in_current_span());
        Ok(())
    }

    /// Takes the worker whose load is `load` off the list, if it is still
    /// on it, for `reason`: it gets no more requests and ends once those it
    /// has are done.
    fn unlist(&self, load: &Arc<Load>, reason: Retired) {
        let mut listed = self.lock();
        unlist_where(&mut listed, reason, |worker| Arc::ptr_eq(&worker.load, load));
        self.publish_idle(&listed);
    }

    /// Version `serial` no longer serves: its instances end once the
    /// requests they have are done.
    pub(crate) fn retire_version(&self, serial: u64) {
        let mut listed = self.lock();
        unlist_where(&mut listed, Retired::Swapped, |worker| worker.version == serial);
        self.publish_idle(&listed);
    }

    /// Unlists workers idle past their time.
    fn expire(&self, listed: &mut Vec<Listed>, now: i64) {
        unlist_where(listed, Retired::Idle, |worker| {
            worker.load.in_flight.load(Ordering::Relaxed) == 0
                && now - worker.load.idle_since_ms.load(Ordering::Relaxed) >= self.idle_timeout_ms
        });
    }

    fn sweep(&self) {
        let mut listed = self.lock();
        self.expire(&mut listed, self.clock.now_millis());
        self.publish_idle(&listed);
    }

    /// Counts the listed workers with nothing in flight as idle instances.
    fn publish_idle(&self, listed: &[Listed]) {
        let idle = listed.iter().filter(|worker| worker.load.in_flight.load(Ordering::Relaxed) == 0).count();
        self.places.set_shared_idle(idle);
    }
}

/// Takes the workers `which` picks off `listed`, marked with `reason`;
/// dropping a worker's sender closes its queue.
fn unlist_where(listed: &mut Vec<Listed>, reason: Retired, which: impl FnMut(&mut Listed) -> bool) {
    listed.extract_if(.., which).for_each(|worker| worker.load.mark(reason));
}

/// The task that owns one shared instance.
struct Worker {
    pool: Arc<SharedPool>,
    load: Arc<Load>,
    jobs: mpsc::UnboundedReceiver<Job>,
}

impl Worker {
    async fn run(
        mut self,
        store: wasmtime::Result<Store<InvocationState>>,
        pre: ServicePre<InvocationState>,
        lease: Lease,
        first: Job,
    ) {
        let started = match store {
            Ok(mut store) => match pre.instantiate_async(&mut store).await {
                Ok(service) => Ok((store, service)),
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        };
        let (mut store, service) = match started {
            Ok(started) => started,
            Err(err) => {
                let mut book = Book::new(None, first.deadline);
                book.enter(first);
                self.end(book, Some(err), None);
                lease.retire(Retired::Failed);
                return;
            }
        };
        // What instantiating cost is charged to the first request, as it
        // would be on an instance of its own.
        let left = store.get_fuel().ok();
        let opening = first.fuel.zip(left).map_or(0, |(budget, left)| budget.saturating_sub(left));
        let mut book = Book::new(left, first.deadline);
        book.opening = opening;
        let watch = Mutex::new(Some(first.deadline));
        let ended = {
            let (pool, load, jobs, book, watch) = (&self.pool, &self.load, &mut self.jobs, &mut book, &watch);
            let run = store.run_concurrent(async |accessor| {
                serve(Serving { accessor, service: &service, pool, load, book, watch }, jobs, first).await
            });
            watched(run, watch).await
        };
        let failure = match ended {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(err)) | Err(err)) => Some(err),
            Err(DeadlineExceeded) => Some(wasmtime::Error::new(DeadlineExceeded)),
        };
        let name = store.data().component.name.clone();
        if let Some(err) = &failure {
            tracing::warn!(
                component = &*name,
                requests = book.in_flight.len(),
                error = format!("{err:#}"),
                "shared instance failed; the requests on it fail"
            );
        }
        book.charge(store.get_fuel().ok());
        let state = store.data_mut();
        state.log_guest_output();
        let memory = (state.limiter.peak, state.limiter.exceeded);
        let reason = match failure {
            Some(_) => Retired::Failed,
            None => self.load.reason().unwrap_or(Retired::Failed),
        };
        self.end(book, failure, Some(memory));
        drop((store, service));
        lease.retire(reason);
    }

    /// Unlists this worker, and fails what it still has with copies of
    /// `failure`: the requests in flight, and any handed to it but not
    /// yet taken.
    fn end(mut self, mut book: Book, failure: Option<wasmtime::Error>, memory: Option<(usize, bool)>) {
        self.pool.unlist(&self.load, Retired::Failed);
        self.jobs.close();
        while let Ok(job) = self.jobs.try_recv() {
            book.enter(job);
        }
        let (memory_peak, memory_exceeded) = memory.unwrap_or_default();
        let failure = failure.unwrap_or_else(|| wasmtime::Error::msg("its instance ended before the request did"));
        for (_, entry) in std::mem::take(&mut book.in_flight) {
            let cost = Cost { fuel_consumed: entry.charged, memory_peak };
            let _ = entry.served.send(Served { result: Err(copy_failure(&failure)), cost, memory_exceeded });
        }
    }
}

/// The same failure again, for each request on the failed instance, so
/// each is counted by what happened.
fn copy_failure(err: &wasmtime::Error) -> wasmtime::Error {
    match classify(err) {
        Outcome::Timeout => wasmtime::Error::new(DeadlineExceeded),
        Outcome::FuelExhausted => wasmtime::Error::new(Trap::OutOfFuel),
        _ => wasmtime::Error::msg(format!("the shared instance failed: {err:#}")),
    }
}

/// The requests in flight on one instance, with what they have cost.
struct Book {
    in_flight: BTreeMap<u64, Entry>,
    next: u64,
    /// Fuel in the store when last read or set; `None` without metering.
    fuel_left: Option<u64>,
    /// The latest deadline of any request taken.
    last_deadline: Instant,
    /// Fuel burned before the first request was taken (instantiating).
    opening: u64,
}

struct Entry {
    served: oneshot::Sender<Served>,
    fuel: Option<u64>,
    /// Fuel charged to it so far.
    charged: u64,
    deadline: Instant,
}

impl Book {
    fn new(fuel_left: Option<u64>, deadline: Instant) -> Book {
        Book { in_flight: BTreeMap::new(), next: 0, fuel_left, last_deadline: deadline, opening: 0 }
    }

    /// Books `job` in; returns its number and what its call needs.
    fn enter(&mut self, job: Job) -> (u64, Call) {
        let Job { request_id, request, respond, body_done, fuel, deadline, served } = job;
        let id = self.next;
        self.next += 1;
        self.last_deadline = self.last_deadline.max(deadline);
        let charged = std::mem::take(&mut self.opening);
        self.in_flight.insert(id, Entry { served, fuel, charged, deadline });
        (id, Call { request_id, request, respond, body_done, deadline })
    }

    /// Charges the fuel burned since the last reading (`left` now) to the
    /// requests in flight, in equal shares, the remainder to the oldest.
    fn charge(&mut self, left: Option<u64>) {
        let (Some(before), Some(left)) = (self.fuel_left, left) else { return };
        self.fuel_left = Some(left);
        let burned = before.saturating_sub(left);
        let count = self.in_flight.len() as u64;
        if count == 0 || burned == 0 {
            return;
        }
        let (share, rest) = (burned / count, burned % count);
        for (i, entry) in self.in_flight.values_mut().enumerate() {
            entry.charged += share + if i == 0 { rest } else { 0 };
        }
    }

    /// The fuel the store may hold: the budgets of the requests in flight,
    /// or `last` (the budget of the request that ended last) when none is.
    fn fuel_cap(&self, last: u64) -> u64 {
        let budgets: u64 = self.in_flight.values().filter_map(|entry| entry.fuel).sum();
        if self.in_flight.is_empty() { last } else { budgets }
    }

    /// When the instance is stopped: the latest deadline in flight, or of
    /// any request taken when none is.
    fn deadline(&self) -> Instant {
        self.in_flight.values().map(|entry| entry.deadline).max().unwrap_or(self.last_deadline)
    }
}

/// What a request's call is given.
struct Call {
    request_id: Arc<str>,
    request: hyper::Request<WasiBody>,
    respond: Respond,
    body_done: oneshot::Receiver<()>,
    deadline: Instant,
}

/// What the event loop of one instance works with.
struct Serving<'a> {
    accessor: &'a Accessor<InvocationState>,
    service: &'a Service,
    pool: &'a SharedPool,
    load: &'a Arc<Load>,
    book: &'a mut Book,
    /// When the watchdog outside the event loop stops the instance; `None`
    /// while it is idle.
    watch: &'a Mutex<Option<Instant>>,
}

impl Serving<'_> {
    /// Books a request in, adds its fuel budget to the store's, and moves
    /// the instance's deadline.
    fn take(&mut self, job: Job) -> (u64, Call) {
        let (budget, request_id, deadline) = (job.fuel, job.request_id.clone(), job.deadline);
        let book = &mut *self.book;
        // What was burned before it came is not its to pay.
        self.accessor.with(|mut access| book.charge(access.as_context_mut().get_fuel().ok()));
        let (id, call) = book.enter(job);
        let deadline = book.deadline().max(deadline);
        self.accessor.with(|mut access| {
            let mut store = access.as_context_mut();
            store.data_mut().serving(&request_id, deadline);
            if let (Some(budget), Some(left)) = (budget, book.fuel_left) {
                let fuel = left.saturating_add(budget).min(book.fuel_cap(budget));
                if store.set_fuel(fuel).is_ok() {
                    book.fuel_left = Some(fuel);
                }
            }
        });
        self.set_watch(Some(deadline));
        (id, call)
    }

    /// Tells request `id`'s caller how it ended, with what it cost.
    fn finish(&mut self, id: u64, result: wasmtime::Result<bool>) {
        let book = &mut *self.book;
        let (memory_peak, memory_exceeded) = self.accessor.with(|mut access| {
            let mut store = access.as_context_mut();
            book.charge(store.get_fuel().ok());
            let state = store.data_mut();
            state.log_guest_output();
            (state.limiter.peak, state.limiter.exceeded)
        });
        let Some(entry) = book.in_flight.remove(&id) else { return };
        let deadline = book.deadline();
        self.accessor.with(|mut access| {
            let mut store = access.as_context_mut();
            store.data_mut().deadline = deadline;
            if let (Some(left), Some(budget)) = (book.fuel_left, entry.fuel) {
                let fuel = left.min(book.fuel_cap(budget));
                if fuel < left && store.set_fuel(fuel).is_ok() {
                    book.fuel_left = Some(fuel);
                }
            }
        });
        self.set_watch(Some(deadline));
        if matches!(&result, Err(err) if classify(err) == Outcome::Timeout) {
            // Its task may still run: no more requests on this instance.
            self.pool.unlist(self.load, Retired::Failed);
        }
        // Room is made before the caller hears, so its next request can
        // come back to this instance.
        if self.load.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.load.idle_since_ms.store(self.pool.clock.now_millis(), Ordering::Relaxed);
            self.pool.sweep();
        }
        let cost = Cost { fuel_consumed: entry.charged, memory_peak };
        let _ = entry.served.send(Served { result, cost, memory_exceeded });
    }

    fn set_watch(&self, deadline: Option<Instant>) {
        *self.watch.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = deadline;
    }
}

/// The event loop's work: takes requests as they come and calls `handle`
/// for each, ending when the instance is unlisted and has nothing left to
/// do, every task of the guest included.
async fn serve(mut serving: Serving<'_>, jobs: &mut mpsc::UnboundedReceiver<Job>, first: Job) -> wasmtime::Result<()> {
    let (accessor, service) = (serving.accessor, serving.service);
    let mut running = FuturesUnordered::new();
    let (id, call) = serving.take(first);
    running.push(call_handle(accessor, service, id, call));
    let mut open = true;
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(Some((id, result))) = running.poll_next_unpin(cx) {
                serving.finish(id, result);
                continue;
            }
            if open {
                match jobs.poll_recv(cx) {
                    Poll::Ready(Some(job)) => {
                        let (id, call) = serving.take(job);
                        running.push(call_handle(accessor, service, id, call));
                        continue;
                    }
                    Poll::Ready(None) => open = false,
                    Poll::Pending => {}
                }
            }
            if !running.is_empty() {
                return Poll::Pending;
            }
            if accessor.poll_no_interesting_tasks(cx).is_pending() {
                // Work the guest does after its responses ends by the
                // last deadline.
                serving.set_watch(Some(serving.book.deadline()));
                return Poll::Pending;
            }
            if !open {
                return Poll::Ready(Ok(()));
            }
            serving.set_watch(None);
            return Poll::Pending;
        }
    })
    .await
}

/// One request's call: `handle`, its response sent on, then its body to
/// its end, all within its deadline. `Ok(true)` when its client went away
/// first.
async fn call_handle(
    accessor: &Accessor<InvocationState>,
    service: &Service,
    id: u64,
    call: Call,
) -> (u64, wasmtime::Result<bool>) {
    let Call { request_id, request, respond, body_done, deadline } = call;
    let work = async {
        let (request, request_io) = accessor.with(|mut access| {
            let mut store = access.as_context_mut();
            let (request, request_io) =
                wasmtime_wasi_http::p3::Request::from_http(store.data_mut().http().hooks, request);
            // Boxed, it no longer names the borrow of the store.
            let request_io: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(request_io);
            (request, request_io)
        });
        match service.handle(accessor, request).await? {
            Ok(response) => {
                let response = accessor.with(|mut access| response.into_http(&mut access, request_io))?;
                respond(response);
                Ok(body_done.await.is_ok())
            }
            Err(code) => {
                let name = accessor.with(|mut access| access.as_context_mut().data().component.name.clone());
                tracing::warn!(
                    component = &*name,
                    request_id = &*request_id,
                    error = ?code,
                    "component answered with an error code"
                );
                Ok(false)
            }
        }
    };
    let result = match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(result) => result,
        Err(_) => Err(wasmtime::Error::new(DeadlineExceeded)),
    };
    (id, result)
}

/// Runs an instance's event loop `run`, stopping it when the deadline in
/// `watch` passes: guest code is stopped by the epoch callback, but a guest
/// that only waits is not, and a busy one can keep the loop from its own
/// timers.
async fn watched<R>(run: impl Future<Output = R>, watch: &Mutex<Option<Instant>>) -> Result<R, DeadlineExceeded> {
    let mut run = pin!(run);
    let mut timer: Option<(Instant, std::pin::Pin<Box<tokio::time::Sleep>>)> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = run.as_mut().poll(cx) {
            return Poll::Ready(Ok(value));
        }
        let deadline = *watch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(deadline) = deadline else {
            timer = None;
            return Poll::Pending;
        };
        let sleep = match &mut timer {
            Some((armed, sleep)) if *armed == deadline => sleep,
            _ => &mut timer.insert((deadline, Box::pin(tokio::time::sleep_until(deadline.into())))).1,
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(DeadlineExceeded)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn entry(fuel: Option<u64>, deadline: Instant) -> Entry {
        Entry { served: oneshot::channel().0, fuel, charged: 0, deadline }
    }

    #[test]
    fn burned_fuel_is_shared_by_the_requests_in_flight() {
        let now = Instant::now();
        let mut book = Book::new(Some(1_000), now);
        book.charge(Some(900));
        assert!(book.in_flight.is_empty(), "nothing in flight pays for what was burned before");
        for id in 0..3 {
            book.in_flight.insert(id, entry(Some(500), now));
        }
        book.charge(Some(800));
        let charged: Vec<u64> = book.in_flight.values().map(|e| e.charged).collect();
        assert_eq!(charged, [34, 33, 33], "equal shares, the remainder to the oldest");
        assert_eq!(book.fuel_left, Some(800));
        book.charge(None);
        assert_eq!(book.fuel_left, Some(800), "a store without fuel reads leave the book as it was");
    }

    #[test]
    fn the_store_holds_the_budgets_in_flight_and_the_latest_deadline() {
        let now = Instant::now();
        let mut book = Book::new(Some(0), now);
        assert_eq!(book.fuel_cap(500), 500, "one budget when nothing is in flight");
        book.in_flight.insert(0, entry(Some(500), now + Duration::from_millis(10)));
        book.in_flight.insert(1, entry(Some(300), now + Duration::from_millis(30)));
        assert_eq!(book.fuel_cap(500), 800);
        assert_eq!(book.deadline(), now + Duration::from_millis(30));
        book.last_deadline = now + Duration::from_millis(40);
        book.in_flight.clear();
        assert_eq!(book.deadline(), now + Duration::from_millis(40), "the last taken, once none is in flight");
    }

    #[test]
    fn each_request_on_a_failed_instance_is_counted_by_what_happened() {
        for (err, outcome) in [
            (wasmtime::Error::new(DeadlineExceeded), Outcome::Timeout),
            (wasmtime::Error::new(Trap::OutOfFuel), Outcome::FuelExhausted),
            (wasmtime::Error::new(Trap::UnreachableCodeReached), Outcome::Trap),
        ] {
            assert_eq!(classify(&copy_failure(&err)), outcome, "{err:#}");
        }
    }
}
