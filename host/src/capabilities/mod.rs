//! The host side of every interface a component imports.
//!
//! Each file implements one WIT interface for [`InvocationState`]: guest
//! errors come back as WIT values, host failures (a broken database, a bad
//! resource handle) trap the guest and fail the invocation, which rolls its
//! unit of work back.

pub mod config;
pub mod keyvalue;
pub mod log;
pub mod metrics;
pub mod outbox;

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::bindings::{self, Handler, types};
use crate::runtime::state::InvocationState;

/// Links everything the handler world imports, plus WASI for guests built
/// with a WASI-targeting toolchain.
pub fn add_handler_imports(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    Handler::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    add_wasi(linker)
}

/// Links what the connector world imports: log, config, and outgoing HTTP
/// (with the WASI it builds on) through the host's outbound policy.
pub fn add_connector_imports(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    bindings::log::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    bindings::config::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    types::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    add_wasi(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    Ok(())
}

/// Links what a `wasi:http/proxy` component may import: the proxy world's
/// WASI and `wasi:http` (outgoing requests through the outbound policy),
/// plus Switchyard's own interfaces, which such a component may also use.
pub fn add_proxy_imports(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    add_handler_imports(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    Ok(())
}

/// WASI, with `wasi:io` (streams, poll, errors) reaching only the resource
/// table. `wasmtime_wasi` links `wasi:io` through the whole WASI context,
/// which the host builds on first use; streams need none of it, and an HTTP
/// body is a stream, so a `wasi:http` component that never touches the rest
/// of WASI (stdout, clocks, random) now costs no context at all.
fn add_wasi(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    linker.allow_shadowing(true);
    let linked = wasmtime_wasi_io::add_to_linker_async(linker);
    linker.allow_shadowing(false);
    linked
}

/// `types` declares no functions.
impl types::Host for InvocationState {}
