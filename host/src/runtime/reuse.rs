//! Opt-in instance reuse for `wasi:http` components
//! (`[components.NAME.reuse]`).
//!
//! Without it every request gets a fresh instance. With it, a request takes
//! an idle instance of its own version when there is one and gives it back
//! when its guest returns, until the instance has served `max_requests`.
//! Fuel, the deadline and the outcome stay per request
//! (`store::renew_store`); the memory limit applies to the instance.
//!
//! An instance is retired, never given back, when its call failed (a trap,
//! fuel, the deadline: wasmtime refuses to enter a trapped instance again,
//! and the state of one stopped mid-call is anyone's guess), when its client
//! went away mid-call, when its version is swapped out, when it has idled
//! past `idle_timeout_ms`, or when its guest has used most of what it may
//! write to stdout and stderr.
//!
//! One pool serves all versions of a component (the stable one and a
//! canary) and holds at most the component's admission concurrency of
//! instances, busy or idle, so warm instances never take the pooling
//! allocator's slots from the invocations that need them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p3::bindings::Service;

use super::state::InvocationState;
use crate::clock::SharedClock;
use crate::config::ReuseConfig;
use crate::telemetry::metrics::{INSTANCES_IDLE, INSTANCES_RETIRED, INSTANCES_STARTED, Metrics, RETIRE_REASONS};
use metrics::{Counter, Gauge};
use wasmtime::Store;

/// Why an instance stopped serving; named by position in [`RETIRE_REASONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retired {
    /// It served `max_requests`.
    MaxRequests,
    /// Its call trapped, ran out of fuel or time, or could not start.
    Failed,
    /// Its client went away while it ran, and it was stopped.
    Stopped,
    /// Its version no longer serves.
    Swapped,
    /// It waited longer than `idle_timeout_ms`.
    Idle,
    /// Its guest wrote most of what it may to stdout or stderr.
    Output,
    /// Another version of the component needed its place.
    Evicted,
}

// One label per reason, the last reason last.
const _: () = assert!(Retired::Evicted as usize + 1 == RETIRE_REASONS.len());

impl Retired {
    /// Its place in [`RETIRE_REASONS`]: variants are declared in that order.
    fn index(self) -> usize {
        self as usize
    }
}

/// Numbers each prepared version, so an idle instance goes only to calls of
/// the very version it was made from (a redeploy of the same bytes is a
/// new version to the pool).
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_serial() -> u64 {
    NEXT_SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// The warm instances of one component.
pub(crate) struct WarmPool {
    max_requests: u32,
    idle_timeout_ms: i64,
    /// Most instances alive at once, busy or idle.
    capacity: usize,
    clock: SharedClock,
    /// Instances alive, busy or idle; each [`Lease`] counts once.
    alive: AtomicUsize,
    idle: Mutex<Vec<Idle>>,
    /// Instances serving several requests at once (`shared.rs`) that have
    /// none in flight, counted idle beside the kept ones.
    shared_idle: AtomicUsize,
    started: Counter,
    retired: [Counter; RETIRE_REASONS.len()],
    idle_gauge: Gauge,
}

struct Idle {
    version: u64,
    since_ms: i64,
    instance: Warm,
}

/// An instance of a `wasi:http` component, bound to its export: kept
/// between calls when the component reuses instances.
pub(crate) enum HttpInstance {
    /// Exports `wasi:http/incoming-handler@0.2`.
    P2(Proxy),
    /// Exports `wasi:http/handler@0.3`.
    P3(Service),
}

/// An instance kept between calls: its store and its bound exports. The
/// store is dropped before the lease, so the pool never counts fewer
/// instances than exist.
pub(crate) struct Warm {
    pub store: Store<InvocationState>,
    pub instance: HttpInstance,
    pub lease: Lease,
}

/// The right to keep one instance, held by it from its start to its
/// retirement. Dropped, it gives its place back and counts why.
pub(crate) struct Lease {
    pool: Arc<WarmPool>,
    /// Calls it has taken, the current one included.
    served: u32,
    /// Why it retires when dropped; a lease dropped unexamined means its
    /// call did not end well.
    reason: Retired,
    /// Whether its place was already given back (to make room at once).
    released: bool,
}

impl Warm {
    /// Retires the instance for `reason`, its store first.
    fn retire(self, reason: Retired) {
        let Warm { store, instance, lease } = self;
        drop((store, instance));
        lease.retire(reason);
    }
}

impl Lease {
    /// Retires the instance, whose store is already gone, for `reason`.
    pub(crate) fn retire(mut self, reason: Retired) {
        self.reason = reason;
    }

    fn release(&mut self) {
        if !std::mem::replace(&mut self.released, true) {
            self.pool.alive.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
        self.pool.retired[self.reason.index()].increment(1);
    }
}

/// What a call of a reusing component runs on.
pub(crate) enum Checkout {
    /// An idle instance of its version.
    Warm(Warm),
    /// A new instance, kept afterwards when the lease is there (the pool
    /// had room), else dropped as without reuse.
    Fresh(Option<Lease>),
}

impl WarmPool {
    /// The pool of `component`, holding at most `capacity` instances. Idle
    /// ones past their time are also swept in the background, so memory is
    /// given back when traffic stops; the sweep ends with the pool.
    pub(crate) fn start(
        component: &str,
        reuse: &ReuseConfig,
        capacity: usize,
        clock: SharedClock,
        metrics: &Metrics,
    ) -> Arc<WarmPool> {
        let labels = [("component", component)];
        let pool = Arc::new(WarmPool {
            max_requests: reuse.max_requests,
            idle_timeout_ms: i64::try_from(reuse.idle_timeout_ms).unwrap_or(i64::MAX),
            capacity: capacity.max(1),
            clock,
            alive: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            shared_idle: AtomicUsize::new(0),
            started: metrics.counter(INSTANCES_STARTED, &labels),
            retired: RETIRE_REASONS
                .map(|reason| metrics.counter(INSTANCES_RETIRED, &[("component", component), ("reason", reason)])),
            idle_gauge: metrics.gauge(INSTANCES_IDLE, &labels),
        });
        pool.started.increment(0);
        pool.retired.iter().for_each(|counter| counter.increment(0));
        pool.idle_gauge.set(0.0);
        sweep_while_alive(&pool, reuse.idle_timeout_ms, WarmPool::sweep);
        pool
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        // A poisoned lock only means a thread panicked mid-update; the
        // list itself is always whole.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle instance of `version`, the most recently used first; or a
    /// place for a new one.
    pub(crate) fn take(self: &Arc<Self>, version: u64) -> Checkout {
        let now = self.clock.now_millis();
        let mut retiring = Vec::new();
        let checkout = {
            let mut idle = self.lock();
            self.expire(&mut idle, now, &mut retiring);
            let checkout = match idle.iter().rposition(|i| i.version == version) {
                Some(at) => {
                    let mut warm = idle.remove(at).instance;
                    warm.lease.served += 1;
                    Checkout::Warm(warm)
                }
                None => {
                    if self.alive.load(Ordering::Relaxed) >= self.capacity && !idle.is_empty() {
                        // Full, with another version's instance idle: the
                        // oldest gives way.
                        let mut evicted = idle.remove(0).instance;
                        evicted.lease.reason = Retired::Evicted;
                        evicted.lease.release();
                        retiring.push(evicted);
                    }
                    Checkout::Fresh(self.lease())
                }
            };
            self.publish_idle(idle.len());
            checkout
        };
        // Dropped outside the lock: a store's drop returns its slot to the
        // pooling allocator, and a lease's drop counts the retirement.
        drop(retiring);
        checkout
    }

    /// Publishes how many instances are idle, `kept` of them here.
    fn publish_idle(&self, kept: usize) {
        self.idle_gauge.set((kept + self.shared_idle.load(Ordering::Relaxed)) as f64);
    }

    /// Sets how many shared instances have no request in flight.
    pub(crate) fn set_shared_idle(&self, count: usize) {
        self.shared_idle.store(count, Ordering::Relaxed);
        let kept = self.lock().len();
        self.publish_idle(kept);
    }

    /// A place for a new instance, if the pool has one.
    pub(crate) fn lease(self: &Arc<Self>) -> Option<Lease> {
        let taken = self
            .alive
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |alive| (alive < self.capacity).then_some(alive + 1));
        taken.ok()?;
        self.started.increment(1);
        Some(Lease { pool: self.clone(), served: 1, reason: Retired::Failed, released: false })
    }

    /// Keeps an instance of version `serial` whose call went well, unless it
    /// has served its share, its version was swapped out (`retired`), or its
    /// guest has written most of what it may.
    pub(crate) fn give_back(&self, serial: u64, retired: &AtomicBool, warm: Warm) {
        let reason = if warm.lease.served >= self.max_requests {
            Some(Retired::MaxRequests)
        } else if warm.store.data().output_mostly_used() {
            Some(Retired::Output)
        } else {
            None
        };
        if let Some(reason) = reason {
            warm.retire(reason);
            return;
        }
        let since_ms = self.clock.now_millis();
        let mut idle = self.lock();
        // Checked under the lock `retire_version` takes, so an instance is
        // never left idle for a version that no longer serves.
        if retired.load(Ordering::Relaxed) {
            drop(idle);
            warm.retire(Retired::Swapped);
            return;
        }
        idle.push(Idle { version: serial, since_ms, instance: warm });
        self.publish_idle(idle.len());
    }

    /// Marks version `serial` as no longer serving (`retired`) and drops its
    /// idle instances; busy ones retire when their calls end.
    pub(crate) fn retire_version(&self, serial: u64, retired: &AtomicBool) {
        let swapped: Vec<Idle> = {
            let mut idle = self.lock();
            retired.store(true, Ordering::Relaxed);
            let (swapped, kept) = std::mem::take(&mut *idle).into_iter().partition(|i| i.version == serial);
            *idle = kept;
            self.publish_idle(idle.len());
            swapped
        };
        for idle in swapped {
            idle.instance.retire(Retired::Swapped);
        }
    }

    /// Drops idle instances past their time.
    fn sweep(&self) {
        let mut retiring = Vec::new();
        {
            let mut idle = self.lock();
            self.expire(&mut idle, self.clock.now_millis(), &mut retiring);
            self.publish_idle(idle.len());
        }
        drop(retiring);
    }

    /// Moves idle instances past their time from `idle` to `retiring`.
    fn expire(&self, idle: &mut Vec<Idle>, now: i64, retiring: &mut Vec<Warm>) {
        // Oldest first: instances are given back in time order.
        let expired = idle.iter().take_while(|i| now - i.since_ms >= self.idle_timeout_ms).count();
        retiring.extend(idle.drain(..expired).map(|mut i| {
            i.instance.lease.reason = Retired::Idle;
            i.instance
        }));
    }
}

/// Runs `sweep` on `pool` in the background, twice per `idle_timeout_ms`
/// (within 10 ms and 1 s), until the pool is dropped.
pub(crate) fn sweep_while_alive<P: Send + Sync + 'static>(pool: &Arc<P>, idle_timeout_ms: u64, sweep: fn(&P)) {
    let period = Duration::from_millis((idle_timeout_ms / 2).clamp(10, 1_000));
    let pool = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match pool.upgrade() {
                Some(pool) => sweep(&pool),
                None => return,
            }
        }
    });
}
