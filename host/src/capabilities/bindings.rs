//! The `bindgen!` output for Switchyard's worlds, beside the capabilities
//! that implement their imports.
//!
//! Generated types stay inside `capabilities/` and `runtime/`; everything
//! else sees the plain Rust types the runtime's call paths define.

mod handler {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "switchyard:platform/handler",
        // Every host function may wait on the database, and a host bug
        // should trap the guest rather than take the process down.
        imports: { default: async | trappable },
        exports: { default: async },
        // wasi:keyvalue is generated beside its implementation.
        with: {
            "wasi:keyvalue/store": crate::capabilities::keyvalue::store,
            "wasi:keyvalue/atomics": crate::capabilities::keyvalue::atomics,
        },
    });
}

mod connector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "switchyard:platform/connector",
        imports: { default: async | trappable },
        exports: { default: async },
        // Shared interfaces are generated once, above, or by the WASI crates.
        with: {
            "switchyard:platform/types": super::handler::switchyard::platform::types,
            "switchyard:platform/log": super::handler::switchyard::platform::log,
            "switchyard:platform/config": super::handler::switchyard::platform::config,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub use connector::exports::switchyard::platform::sender;
pub use connector::{Connector, ConnectorPre};
pub use handler::switchyard::platform::{config, log, metrics, outbox, types};
pub use handler::{Handler, HandlerPre};
