//! The `Idempotency-Key` header: a retried `POST /orders` gets the original
//! answer instead of a second order.
//!
//! The claim must be race-free on PostgreSQL, where a `get` of a missing row
//! locks nothing. So the first step is always an `increment` of
//! `idempotency-claim/{key}`: that upsert locks the row, which serialises
//! concurrent requests with the same key until the first one's transaction
//! ends. A result of 1 means no committed request used the key; if the first
//! one failed, the host rolled its claim back too, and the count is 1 again.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::store::{Store, idempotency_claim_key, idempotency_key};

const HEADER: &str = "idempotency-key";
const MAX_KEY_CHARS: usize = 128;

/// The stored value of `idempotency/{key}`.
#[derive(Serialize, Deserialize)]
struct Record {
    /// The raw request body, compared byte for byte: a key may only be
    /// reused for the very same request.
    body: String,
    /// The order the first request created, to rebuild its answer.
    order_id: String,
}

pub enum Claim {
    /// No committed request used the key: go ahead and create the order.
    First,
    /// The same request already succeeded: answer as it did.
    Replay { order_id: String },
}

/// The key, if the request carries one; header names are case-insensitive.
pub fn key_from_headers(headers: &[(String, String)]) -> Result<Option<&str>, ApiError> {
    let mut values = headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case(HEADER)).map(|(_, v)| v.as_str());
    let Some(key) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest("more than one Idempotency-Key header".into()));
    }
    let valid = (1..=MAX_KEY_CHARS).contains(&key.len()) && key.bytes().all(|b| (b' '..=b'~').contains(&b));
    if valid {
        Ok(Some(key))
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid Idempotency-Key: expected 1 to {MAX_KEY_CHARS} printable ASCII characters"
        )))
    }
}

/// Claims `key` for a request with `body`; must run before any other write
/// of the invocation.
pub fn claim(store: &Store, key: &str, body: &str) -> Result<Claim, ApiError> {
    if store.increment(&idempotency_claim_key(key), 1)? == 1 {
        return Ok(Claim::First);
    }
    // A count above 1 was committed together with the record below, so a
    // missing record means the store is inconsistent.
    let record_key = idempotency_key(key);
    let Some(record) = store.get_json::<Record>(&record_key)? else {
        return Err(ApiError::Storage(format!("{record_key} is missing although the key was claimed before")));
    };
    if record.body == body {
        Ok(Claim::Replay { order_id: record.order_id })
    } else {
        Err(ApiError::Unprocessable("Idempotency-Key reused with a different request body".into()))
    }
}

/// Records the outcome of the first request with `key`.
pub fn remember(store: &Store, key: &str, body: &str, order_id: &str) -> Result<(), ApiError> {
    store.set_json(&idempotency_key(key), &Record { body: body.to_owned(), order_id: order_id.to_owned() })
}
