//! `PUT /inventory/{sku}`, the sku rules shared with orders, and stock
//! reservation.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::response;
use crate::store::{Store, inventory_key};
use crate::switchyard::platform::types::Response;

const MAX_SKU_CHARS: usize = 64;

/// Both the `PUT` body and the stored value of `inventory/{sku}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockLevel {
    pub stock: u64,
    pub price_cents: u64,
}

#[derive(Serialize)]
struct StockReply<'a> {
    sku: &'a str,
    stock: u64,
    price_cents: u64,
}

/// Skus become part of key names and URLs, so they are kept to a small,
/// unambiguous alphabet.
pub fn check_sku(sku: &str) -> Result<(), ApiError> {
    let valid = (1..=MAX_SKU_CHARS).contains(&sku.len())
        && sku.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid sku: expected 1 to {MAX_SKU_CHARS} characters of A-Z, a-z, 0-9, '_', '.', '-'"
        )))
    }
}

/// Sets the stock and price of `sku`, creating it if needed.
pub fn put(sku: &str, body: &[u8]) -> Result<Response, ApiError> {
    check_sku(sku)?;
    let level: StockLevel =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid inventory body: {e}")))?;
    Store::open()?.set_json(&inventory_key(sku), &level)?;
    Ok(response::json(200, &StockReply { sku, stock: level.stock, price_cents: level.price_cents }))
}

/// Takes `qty` units of `sku` out of stock and returns its unit price.
///
/// The `get` locks the inventory row on PostgreSQL until the invocation
/// ends, so two orders cannot both take the last unit.
pub fn reserve(store: &Store, sku: &str, qty: u64) -> Result<u64, ApiError> {
    let key = inventory_key(sku);
    let Some(level) = store.get_json::<StockLevel>(&key)? else {
        return Err(ApiError::NotFound(format!("unknown sku: {sku}")));
    };
    let Some(stock) = level.stock.checked_sub(qty) else {
        return Err(ApiError::Conflict(format!("sold out: {sku}")));
    };
    store.set_json(&key, &StockLevel { stock, price_cents: level.price_cents })?;
    Ok(level.price_cents)
}
