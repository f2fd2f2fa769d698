//! The `orders` key-value bucket: every key name this component uses, and
//! the mapping of `wasi:keyvalue` failures onto [`ApiError::Storage`].
//!
//! Values are JSON. On the host each call runs inside the invocation's
//! transaction; on PostgreSQL `get` locks the row it reads and `increment`
//! upserts (and so locks) its row, which the callers rely on for ordering.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::wasi::keyvalue::atomics;
use crate::wasi::keyvalue::store::{self as kv, Bucket};

const BUCKET: &str = "orders";

/// The counter behind order ids (`ord_1`, `ord_2`, …).
pub const ORDER_SEQUENCE: &str = "order-seq";

/// Stock and price of one sku: `{"stock", "price_cents"}`.
pub fn inventory_key(sku: &str) -> String {
    format!("inventory/{sku}")
}

/// One accepted order, as `GET /orders/{id}` returns it.
pub fn order_key(id: &str) -> String {
    format!("order/{id}")
}

/// Counter incremented first by every request carrying the idempotency key.
pub fn idempotency_claim_key(key: &str) -> String {
    format!("idempotency-claim/{key}")
}

/// What the first successful request with the key sent and created.
pub fn idempotency_key(key: &str) -> String {
    format!("idempotency/{key}")
}

pub struct Store {
    bucket: Bucket,
}

impl Store {
    pub fn open() -> Result<Self, ApiError> {
        let bucket = kv::open(BUCKET).map_err(|e| storage("open bucket", BUCKET, &e))?;
        Ok(Store { bucket })
    }

    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        self.bucket.get(key).map_err(|e| storage("get", key, &e))
    }

    /// A stored value that no longer parses is a storage fault, not the
    /// caller's: only this component writes these keys.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ApiError::Storage(format!("value of {key} is not valid: {e}"))),
        }
    }

    pub fn set_raw(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        self.bucket.set(key, value).map_err(|e| storage("set", key, &e))
    }

    pub fn set_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ApiError::Storage(format!("encode {key}: {e}")))?;
        self.set_raw(key, &bytes)
    }

    /// Adds `delta` and returns the new value; a missing key counts from 0.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, ApiError> {
        atomics::increment(&self.bucket, key, delta).map_err(|e| storage("increment", key, &e))
    }
}

fn storage(operation: &str, key: &str, error: &kv::Error) -> ApiError {
    let reason = match error {
        kv::Error::NoSuchStore => "no such store".to_owned(),
        kv::Error::AccessDenied => "access denied".to_owned(),
        kv::Error::Other(detail) => detail.clone(),
    };
    ApiError::Storage(format!("{operation} {key}: {reason}"))
}
