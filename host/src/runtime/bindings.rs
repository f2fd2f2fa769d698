//! The `bindgen!` output for Switchyard's worlds.
//!
//! Generated types stay inside `runtime/` and `capabilities/`; everything
//! else sees the plain Rust types of `runtime::invoke`.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "switchyard:platform/handler",
        // Every host function may wait on the database, and a host bug
        // should trap the guest rather than take the process down.
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": crate::capabilities::keyvalue::Bucket,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => crate::capabilities::keyvalue::KvError,
        },
    });
}

pub use generated::switchyard::platform::{config, log, outbox, types};
pub use generated::wasi::keyvalue::{atomics, store};
pub use generated::{Handler, HandlerPre};
