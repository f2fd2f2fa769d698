//! What a `Store` carries through one invocation.
//!
//! Each invocation gets a fresh [`InvocationState`]: the component's identity
//! and settings, the request id for logs, its unit of work, the resources the
//! guest opened, and the memory limiter that also measures peak memory. A
//! reused instance (`reuse.rs`) keeps its state, and [`InvocationState::next_call`]
//! renews what belongs to one call.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::outbound::{OutboundClient, OutboundPolicy};
use crate::capabilities::config::ConfigView;
use crate::capabilities::keyvalue::KeyValueView;
use crate::capabilities::log::LogView;
use crate::capabilities::metrics::MetricsView;
use crate::capabilities::outbox::OutboxView;
use crate::capabilities::{Capabilities, ComponentContext};
use crate::db::{Database, UnitOfWork};

pub struct InvocationState {
    pub(crate) component: Arc<ComponentContext>,
    /// Attached to every log line the guest writes.
    pub(crate) request_id: Arc<str>,
    /// Lines the guest has logged in this call.
    log_lines: u32,
    /// The invocation's transaction; committed or rolled back by `invoke`.
    pub(crate) unit_of_work: UnitOfWork,
    /// Guest-held resources such as open key-value buckets.
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// When the epoch callback stops the current call.
    pub(crate) deadline: Instant,
    /// Built on first use: guests compiled against WASI (the standard
    /// `wasm32-wasip2` route) import it, ours do not, and an unused context
    /// would cost every request an OS random seed.
    wasi: Option<WasiCtx>,
    /// What the guest wrote to stdout and stderr, logged when it returns.
    output: Option<GuestOutput>,
    /// Outgoing HTTP state; only connectors import `wasi:http`.
    http: WasiHttpCtx,
    /// Decides which outgoing requests leave the host.
    outbound: OutboundPolicy,
}

impl InvocationState {
    /// The state of one call of `component`, with a unit of work of its own
    /// and linear memory capped at `memory_bytes`.
    pub(crate) fn for_call(
        db: &Database,
        component: &Arc<ComponentContext>,
        memory_bytes: u64,
        request_id: &Arc<str>,
        outbound: &Arc<OutboundClient>,
    ) -> Self {
        let unit_of_work = db.unit_of_work(component.name.clone(), request_id.clone());
        let memory_limit = usize::try_from(memory_bytes).unwrap_or(usize::MAX);
        let (component, request_id) = (component.clone(), request_id.clone());
        Self {
            unit_of_work,
            log_lines: 0,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            // Already passed until `store::new_store` sets the call's own.
            deadline: Instant::now(),
            wasi: None,
            output: None,
            http: WasiHttpCtx::new(),
            outbound: OutboundPolicy::new(component.clone(), request_id.clone(), outbound.clone()),
            component,
            request_id,
        }
    }

    pub(crate) fn into_unit_of_work(self) -> UnitOfWork {
        self.unit_of_work
    }

    /// The finished call's unit of work, leaving an unused one in its place
    /// for the store to keep.
    pub(crate) fn take_unit_of_work(&mut self) -> UnitOfWork {
        let unused = self.unit_of_work.renewed(self.request_id.clone());
        std::mem::replace(&mut self.unit_of_work, unused)
    }

    /// Makes a kept store's state that of a new call: its request id, a
    /// unit of work of its own, its deadline, and no memory refusal yet.
    /// Memory, the guest's resources and its WASI context stay.
    pub(crate) fn next_call(&mut self, request_id: &Arc<str>, deadline: Instant) {
        self.request_id = request_id.clone();
        self.unit_of_work = self.unit_of_work.renewed(request_id.clone());
        self.outbound = self.outbound.renewed(request_id.clone());
        self.limiter.exceeded = false;
        self.log_lines = 0;
        self.deadline = deadline;
    }

    /// Makes a shared instance's state (`shared.rs`) name `request_id`, the
    /// request it took last, in its log lines and outgoing requests, and
    /// stop guest code at `deadline`, the latest of its requests'.
    pub(crate) fn serving(&mut self, request_id: &Arc<str>, deadline: Instant) {
        self.request_id = request_id.clone();
        self.outbound = self.outbound.renewed(request_id.clone());
        self.deadline = deadline;
    }

    /// Logs what the guest wrote to stdout and stderr since the last time,
    /// a line at a time, under the component's name and the request id.
    pub(crate) fn log_guest_output(&mut self) {
        let Some(output) = &mut self.output else { return };
        let (component, request_id) = (&*self.component.name, &*self.request_id);
        let [stdout_logged, stderr_logged] = &mut output.logged;
        for (stream, pipe, logged) in
            [("stdout", &output.stdout, stdout_logged), ("stderr", &output.stderr, stderr_logged)]
        {
            let contents = pipe.contents();
            let new = contents.get(*logged..).unwrap_or_default();
            *logged = contents.len();
            for line in String::from_utf8_lossy(new).lines().filter(|line| !line.is_empty()) {
                tracing::info!(target: "component", component, request_id, stream, "{line}");
            }
        }
    }

    /// Whether the guest has used over half of what it may write to stdout
    /// or stderr: a reused instance is then retired, so the next call can
    /// still write.
    pub(crate) fn output_mostly_used(&self) -> bool {
        self.output.as_ref().is_some_and(|output| output.logged.iter().any(|&n| n > GUEST_OUTPUT_BYTES / 2))
    }
}

/// Most bytes a guest may write to stdout (and again to stderr) in one
/// invocation; past it the stream reports closed, so logging stays bounded.
const GUEST_OUTPUT_BYTES: usize = 64 * 1024;

/// A guest's stdout and stderr, kept in memory for the invocation (or, on
/// a reused instance, for its life).
struct GuestOutput {
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// Bytes of each already logged.
    logged: [usize; 2],
}

/// Each capability sees only the part of the invocation it serves.
impl Capabilities for InvocationState {
    fn config(&mut self) -> ConfigView<'_> {
        ConfigView { values: &self.component.config }
    }

    fn keyvalue(&mut self) -> KeyValueView<'_> {
        KeyValueView { table: &mut self.table, unit_of_work: &mut self.unit_of_work }
    }

    fn log(&mut self) -> LogView<'_> {
        LogView { component: &self.component.name, request_id: &self.request_id, lines: &mut self.log_lines }
    }

    fn metrics(&mut self) -> MetricsView<'_> {
        MetricsView { component: &self.component.name, metrics: &self.component.metrics }
    }

    fn outbox(&mut self) -> OutboxView<'_> {
        OutboxView {
            component: &self.component.name,
            request_id: &self.request_id,
            connectors: &self.component.connectors,
            unit_of_work: &mut self.unit_of_work,
        }
    }
}

impl wasmtime_wasi_io::IoView for InvocationState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // No environment, arguments, preopened directories or network: a
        // handler talks to the world only through Switchyard's interfaces.
        // Its stdout and stderr become log lines.
        let output = &mut self.output;
        let ctx = self.wasi.get_or_insert_with(|| {
            let stdout = MemoryOutputPipe::new(GUEST_OUTPUT_BYTES);
            let stderr = MemoryOutputPipe::new(GUEST_OUTPUT_BYTES);
            let ctx = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
            *output = Some(GuestOutput { stdout, stderr, logged: [0, 0] });
            ctx
        });
        WasiCtxView { ctx, table: &mut self.table }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

/// Caps linear memory growth and records the peak, so the invoker can tell
/// a memory-limit trap from any other and report peak memory per call.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: usize,
    pub(crate) peak: usize,
    /// Set when a grow request was refused for exceeding `limit`.
    pub(crate) exceeded: bool,
}

impl MemoryLimiter {
    fn new(limit: usize) -> Self {
        Self { limit, peak: 0, exceeded: false }
    }
}

/// Tables and instances are bounded by the pooling allocator; only memory
/// needs a per-component limit.
impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}
