//! The reference order service, as a `switchyard:platform/handler` component.
//!
//! It takes orders, reserves stock and queues the customer's notifications,
//! all inside the one database transaction the host opens per invocation:
//! the host commits iff the returned status is below 400, so every error
//! path simply returns its status and the host undoes every write.
//!
//! - `lib.rs` (here): the generated bindings, the export and the routing.
//! - [`orders`]: `POST /orders` and `GET /orders/{id}`.
//! - [`inventory`]: `PUT /inventory/{sku}`, sku rules, stock reservation.
//! - [`idempotency`]: the `Idempotency-Key` claim and replay.
//! - [`notify`]: the email, SMS and webhook messages put in the outbox.
//! - [`store`]: the key-value bucket, its key names and error mapping.
//! - [`error`] and [`response`]: how failures and successes become responses.
//! - `fault`: deliberate faults, only in builds with a `fault-*` feature.
//!
//! The guest uses no WASI at all (no clocks, files or randomness), so it
//! builds for `wasm32-unknown-unknown` without an adapter.

mod error;
#[cfg(feature = "fault-injection")]
mod fault;
mod idempotency;
mod inventory;
mod notify;
mod orders;
mod response;
mod store;

wit_bindgen::generate!({ path: "../../wit", world: "switchyard:platform/handler", generate_all });

use error::ApiError;
use exports::switchyard::platform::incoming_handler::Guest;
use switchyard::platform::types::{Request, Response};

/// The routes this component serves. The host already routed by method and
/// path template, but the component checks again so a misconfigured route
/// gets a clear 404 or 405 instead of the wrong handler.
enum Route<'a> {
    Inventory { sku: &'a str },
    Orders,
    Order { id: &'a str },
}

impl<'a> Route<'a> {
    fn parse(request: &'a Request) -> Option<Self> {
        let path = request.path.strip_prefix('/').unwrap_or(&request.path);
        let path = path.strip_suffix('/').unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        // Prefer the host's decoded capture; fall back to the raw segment
        // so the component also works behind a catch-all route.
        match segments.as_slice() {
            ["inventory", sku] => Some(Route::Inventory { sku: param(request, "sku").unwrap_or(sku) }),
            ["orders"] => Some(Route::Orders),
            ["orders", id] => Some(Route::Order { id: param(request, "id").unwrap_or(id) }),
            _ => None,
        }
    }

    /// The one method each route accepts, for the 405 check and `allow`.
    fn method(&self) -> &'static str {
        match self {
            Route::Inventory { .. } => "PUT",
            Route::Orders => "POST",
            Route::Order { .. } => "GET",
        }
    }
}

fn param<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

struct OrderHandler;

impl Guest for OrderHandler {
    fn handle(request: Request) -> Response {
        #[cfg(feature = "fault-injection")]
        fault::inject(&request);
        dispatch(&request).unwrap_or_else(ApiError::into_response)
    }
}

fn dispatch(request: &Request) -> Result<Response, ApiError> {
    let route = Route::parse(request).ok_or_else(|| ApiError::NotFound("not found".into()))?;
    if request.method != route.method() {
        return Err(ApiError::MethodNotAllowed { allow: route.method() });
    }
    match route {
        Route::Inventory { sku } => inventory::put(sku, &request.body),
        Route::Orders => orders::create(request),
        Route::Order { id } => orders::get(id),
    }
}

export!(OrderHandler);
