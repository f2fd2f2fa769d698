//! The host side of every interface a component imports.
//!
//! Each file implements one WIT interface on a small view of its own
//! ([`log::LogView`], [`keyvalue::KeyValueView`], …), reached through
//! `HasData` the way wasmtime-wasi-http reaches its `WasiHttpCtxView`: the
//! store's data hands out the views ([`Capabilities`]), and nothing here
//! knows that type. The runtime depends on this module, never the reverse.
//! Guest errors come back as WIT values; host failures (a broken database,
//! a bad resource handle) trap the guest and fail the invocation, which
//! rolls its unit of work back.

pub mod bindings;
pub mod config;
pub mod keyvalue;
pub mod log;
pub mod metrics;
pub mod outbox;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_io::IoView;

use crate::telemetry::metrics::Metrics;

/// Settings of a component that its capabilities consult on every call;
/// shared by all of its invocations.
#[derive(Debug)]
pub struct ComponentContext {
    pub name: Arc<str>,
    /// Values returned by the `config` interface.
    pub config: BTreeMap<String, String>,
    /// Connectors the outbox accepts messages for.
    pub connectors: Arc<BTreeSet<String>>,
    /// Authorities (`host:port`) outgoing HTTP may reach; empty for handlers.
    pub allowed_hosts: Arc<[String]>,
    /// Where the component's own metrics go.
    pub metrics: Arc<Metrics>,
}

/// The views a store's data hands to each capability.
pub trait Capabilities: Send + 'static {
    fn config(&mut self) -> config::ConfigView<'_>;
    fn keyvalue(&mut self) -> keyvalue::KeyValueView<'_>;
    fn log(&mut self) -> log::LogView<'_>;
    fn metrics(&mut self) -> metrics::MetricsView<'_>;
    fn outbox(&mut self) -> outbox::OutboxView<'_>;
}

/// Links everything the handler world imports, plus WASI for guests built
/// with a WASI-targeting toolchain.
pub fn add_handler_imports<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: Capabilities + WasiView + IoView,
{
    add_shared::<T>(linker)?;
    bindings::metrics::add_to_linker::<T, metrics::AppMetrics>(linker, T::metrics)?;
    bindings::outbox::add_to_linker::<T, outbox::Outbox>(linker, T::outbox)?;
    keyvalue::store::add_to_linker::<T, keyvalue::KeyValue>(linker, T::keyvalue)?;
    keyvalue::atomics::add_to_linker::<T, keyvalue::KeyValue>(linker, T::keyvalue)?;
    add_wasi(linker)
}

/// Links what the connector world imports: log, config, and outgoing HTTP
/// (with the WASI it builds on) through the host's outbound policy.
pub fn add_connector_imports<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: Capabilities + WasiView + IoView + WasiHttpView,
{
    add_shared::<T>(linker)?;
    add_wasi(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

/// Links what a `wasi:http` 0.2 component may import: the proxy world's
/// WASI and `wasi:http` (outgoing requests through the outbound policy),
/// plus Switchyard's own interfaces, which such a component may also use.
pub fn add_proxy_imports<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: Capabilities + WasiView + IoView + WasiHttpView,
{
    add_handler_imports(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

/// Links what a `wasi:http` 0.3 component may import, on the engine with
/// concurrency: everything a 0.2 one may, and WASI and `wasi:http` at 0.3.
/// A 0.3 component built against a preview1 libc keeps the adapter, which
/// imports WASI 0.2 beside the 0.3 interfaces, so both are linked together.
pub fn add_service_imports<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: Capabilities + WasiView + IoView + WasiHttpView,
{
    add_proxy_imports(linker)?;
    wasmtime_wasi::p3::add_to_linker(linker)?;
    wasmtime_wasi_http::p3::add_to_linker(linker)
}

/// The interfaces both worlds import: types, log and config.
fn add_shared<T: Capabilities>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::types::add_to_linker::<T, TypesOnly>(linker, |_| TypesOnly)?;
    bindings::log::add_to_linker::<T, log::Log>(linker, T::log)?;
    bindings::config::add_to_linker::<T, config::ConfigValues>(linker, T::config)
}

/// WASI, with `wasi:io` (streams, poll, errors) reaching only the resource
/// table. `wasmtime_wasi` links `wasi:io` through the whole WASI context,
/// which the host builds on first use; streams need none of it, and an HTTP
/// body is a stream, so a `wasi:http` component that never touches the rest
/// of WASI (stdout, clocks, random) costs no context at all.
fn add_wasi<T: WasiView + IoView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    linker.allow_shadowing(true);
    let linked = wasmtime_wasi_io::add_to_linker_async(linker);
    linker.allow_shadowing(false);
    linked
}

/// `switchyard:platform/types` declares types only: nothing to reach.
struct TypesOnly;

impl HasData for TypesOnly {
    type Data<'a> = TypesOnly;
}

impl bindings::types::Host for TypesOnly {}
