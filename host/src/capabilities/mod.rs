//! The host side of every interface a component imports.
//!
//! Each file implements one WIT interface for [`InvocationState`]: guest
//! errors come back as WIT values, host failures (a broken database, a bad
//! resource handle) trap the guest and fail the invocation, which rolls its
//! unit of work back.

pub mod config;
pub mod keyvalue;
pub mod log;
pub mod outbox;

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::bindings::{Handler, types};
use crate::runtime::state::InvocationState;

/// Links everything the handler world imports, plus WASI for guests built
/// with a WASI-targeting toolchain.
pub fn add_handler_imports(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    Handler::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    Ok(())
}

/// `types` declares no functions.
impl types::Host for InvocationState {}
