//! The wasmtime `Engine`: compilation settings, the pooling allocator, fuel,
//! and the epoch ticker that turns wall-clock deadlines into interrupts.
//!
//! One engine serves every component but `wasi:http` 0.3 ones, which run on
//! a second one with the component model's concurrency ([`Concurrency`]).
//! Their settings are fixed at startup; per-component limits are applied
//! per `Store` in `invoke`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use super::compiled::{COMPILED_FUNCTION_BYTES, CompiledFunctions};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Every tick, running guest code checks its
/// deadline and yields to the async executor, so a busy guest delays other
/// tasks on its worker thread by at most about this long.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

pub use crate::config::POOL_INSTANCES;

/// Bytes of each linear memory reset in place, rather than released with
/// `madvise`, when its pool slot is reused. With `PAGEMAP_SCAN` (Linux 6.7+)
/// only the pages the last instance dirtied are reset, so a small guest's
/// slot is cleaned with a few `memset`s and no system call; without it this
/// much is `memset` every time. 2 MiB covers a typical Rust guest (1 MiB of
/// stack plus its heap).
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 2 << 20;
/// Same for tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Which of the two engines: the one every handler, connector and
/// `wasi:http` 0.2 component runs on, or the one with the component
/// model's concurrency, for `wasi:http` 0.3 components.
///
/// They are kept apart because concurrency support is not free for the
/// others: with it, wasmtime runs every call, async export or not, through
/// the store's concurrent event loop, which cost a 0.2 hello-http request
/// about a third more CPU (`docs/performance.md`, "`wasi:http` 0.3").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Off,
    On,
}

/// Builds an engine. `max_memory_bytes` is the largest memory limit of any
/// component; pool slots are sized to it. Without `fuel_metering` compiled
/// code carries no fuel checks.
pub fn build(max_memory_bytes: u64, fuel_metering: bool, concurrency: Concurrency) -> anyhow::Result<Engine> {
    let config = config(max_memory_bytes, fuel_metering, concurrency)?;
    Engine::new(&config).map_err(anyhow::Error::from).context("cannot create the wasmtime engine")
}

/// An engine's settings, for [`build`] (and for benchmarks that vary one).
pub fn config(max_memory_bytes: u64, fuel_metering: bool, concurrency: Concurrency) -> anyhow::Result<Config> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_INSTANCES)
        // A component built with the WASI adapter has several core
        // instances and tables; leave room for them.
        .total_core_instances(POOL_INSTANCES * 4)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 4)
        .total_stacks(POOL_INSTANCES)
        .max_memory_size(usize::try_from(max_memory_bytes).context("memory limit too large")?)
        .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    let concurrent = concurrency == Concurrency::On;
    config
        .wasm_component_model(true)
        // `stream`, `future` and async exports (`wasi:http@0.3` components)
        // on the concurrent engine only; the crate feature would otherwise
        // turn concurrency on for both.
        .concurrency_support(concurrent)
        .wasm_component_model_async(concurrent)
        .consume_fuel(fuel_metering)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // Bounds checks in the compiled code instead of guard pages and
        // signal handlers. With guard pages, a guest that grows its memory
        // costs an `mprotect` to grow and another to shrink the slot back
        // when it is reused, each a TLB shootdown across every thread of the
        // process; per request that costs far more than the checks do.
        .signals_based_traps(false)
        .memory_guard_size(0)
        .guard_before_linear_memory(false)
        // A new build compiles only the functions it changed.
        .enable_incremental_compilation(Arc::new(CompiledFunctions::new(COMPILED_FUNCTION_BYTES)))?;
    Ok(config)
}

/// Nice value of the threads that compile components (`[runtime]
/// compile_niceness`): above the serving threads' 0, a deploy's compile
/// takes the cores serving leaves idle, and requests during a swap wait
/// less for it. Set once, before the first compile.
static COMPILE_NICENESS: AtomicI32 = AtomicI32::new(0);

/// Gives the calling thread the compile threads' nice value. On Linux each
/// thread has its own; elsewhere this does nothing.
pub(crate) fn lower_priority() {
    let niceness = COMPILE_NICENESS.load(Ordering::Relaxed);
    #[cfg(target_os = "linux")]
    if niceness != 0
        && let Err(err) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), niceness)
    {
        tracing::debug!(error = %err, "cannot lower the priority of a compile thread");
    }
}

/// Starts rayon's global pool, where Cranelift compiles a component's
/// functions in parallel, with its threads at `niceness`. Only the first
/// call in a process starts the pool; later ones find it running (tests run
/// several hosts in one process).
pub fn start_compile_threads(niceness: i32) {
    COMPILE_NICENESS.store(niceness, Ordering::Relaxed);
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("switchyard-compile-{i}"))
        .start_handler(|_| lower_priority())
        .build_global();
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a dedicated thread,
/// so deadlines hold even when every async worker is busy running guests.
/// Stops when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> anyhow::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        // A weak handle: the ticker must not keep the engine alive.
        let engine = engine.weak();
        let thread = std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
