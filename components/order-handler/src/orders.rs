//! `POST /orders` (validate, claim the idempotency key, reserve stock,
//! store the order, queue its notifications) and `GET /orders/{id}`.
//!
//! Nothing here undoes a write: when a later step fails, the error status
//! makes the host roll back the whole invocation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::idempotency::{self, Claim};
use crate::inventory;
use crate::notify;
use crate::response;
use crate::store::{ORDER_SEQUENCE, Store, order_key};
use crate::switchyard::platform::log::{Level, log};
use crate::switchyard::platform::metrics::{counter_add, histogram_observe};
use crate::switchyard::platform::types::{Request, Response};

const MAX_CUSTOMER_CHARS: usize = 200;
/// The longest address RFC 5321 allows through.
const MAX_EMAIL_CHARS: usize = 254;
const MAX_PHONE_CHARS: usize = 32;
const MAX_ITEMS: usize = 100;
/// Orders never change status yet; it is stored so they can.
const ACCEPTED: &str = "accepted";

/// The `POST /orders` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    customer: String,
    email: String,
    phone: String,
    items: Vec<NewItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    sku: String,
    qty: u32,
}

/// The stored value of `order/{id}`, also the webhook body and the
/// `GET /orders/{id}` answer.
#[derive(Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub customer: String,
    pub email: String,
    pub phone: String,
    pub items: Vec<OrderLine>,
    pub total_cents: u64,
    pub status: String,
}

#[derive(Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    /// The summed quantity when the request named the sku more than once.
    pub qty: u64,
    /// The unit price at the time of the order.
    pub price_cents: u64,
}

/// The `201` body; a replay rebuilds it from the stored order.
#[derive(Serialize)]
struct Created<'a> {
    id: &'a str,
    total_cents: u64,
    status: &'a str,
}

pub fn create(request: &Request) -> Result<Response, ApiError> {
    let key = idempotency::key_from_headers(&request.headers)?;
    let body = std::str::from_utf8(&request.body)
        .map_err(|_| ApiError::BadRequest("invalid order: the body is not UTF-8".into()))?;
    let order: NewOrder =
        serde_json::from_str(body).map_err(|e| ApiError::BadRequest(format!("invalid order: {e}")))?;
    let lines = validate(&order)?;

    let store = Store::open()?;
    if let Some(key) = key
        && let Claim::Replay { order_id } = idempotency::claim(&store, key, body)?
    {
        return replay(&store, &order_id);
    }

    // `lines` is a BTreeMap, so rows are locked in sku order by every
    // request, which rules out deadlocks between two orders on PostgreSQL.
    let mut items = Vec::with_capacity(lines.len());
    let mut total_cents: u64 = 0;
    for (sku, qty) in lines {
        let price_cents = inventory::reserve(&store, sku, qty)?;
        total_cents = qty
            .checked_mul(price_cents)
            .and_then(|line_total| total_cents.checked_add(line_total))
            .ok_or_else(|| ApiError::BadRequest("invalid order: the total is too large".into()))?;
        items.push(OrderLine { sku: sku.to_owned(), qty, price_cents });
    }

    let id = format!("ord_{}", store.increment(ORDER_SEQUENCE, 1)?);
    let order = Order {
        id,
        customer: order.customer,
        email: order.email,
        phone: order.phone,
        items,
        total_cents,
        status: ACCEPTED.to_owned(),
    };
    // Serialized once: the same bytes are stored and sent to the webhook.
    let order_json =
        serde_json::to_string(&order).map_err(|e| ApiError::Storage(format!("encode order {}: {e}", order.id)))?;
    store.set_raw(&order_key(&order.id), order_json.as_bytes())?;
    if let Some(key) = key {
        idempotency::remember(&store, key, body, &order.id)?;
    }
    notify::order_accepted(&order, &order_json)?;

    log(Level::Info, &format!("order {} accepted: {} items, total {}", order.id, order.items.len(), order.total_cents));
    // Exported by the host as app_orders_created_total and app_order_value_cents.
    counter_add("orders_created_total", 1, &[]);
    histogram_observe("order_value_cents", order.total_cents as f64, &[]);
    Ok(created(&order.id, order.total_cents))
}

pub fn get(id: &str) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("order not found".into());
    // An id that could never have been issued is not worth a store lookup.
    if !is_plausible_id(id) {
        return Err(not_found());
    }
    let order = Store::open()?.get_raw(&order_key(id))?.ok_or_else(not_found)?;
    Ok(response::json_bytes(200, order))
}

/// Checks everything that needs no store access, and merges repeated skus
/// (summing their quantities) so each is reserved once.
fn validate(order: &NewOrder) -> Result<BTreeMap<&str, u64>, ApiError> {
    let invalid = |message: &str| ApiError::BadRequest(format!("invalid order: {message}"));

    if order.customer.trim().is_empty() {
        return Err(invalid("customer is required"));
    }
    if order.customer.chars().count() > MAX_CUSTOMER_CHARS {
        return Err(invalid(&format!("customer must be at most {MAX_CUSTOMER_CHARS} characters")));
    }
    if !is_plausible_email(&order.email) {
        return Err(invalid("email must look like name@domain"));
    }
    if !is_plausible_phone(&order.phone) {
        return Err(invalid(&format!(
            "phone must be 1 to {MAX_PHONE_CHARS} characters of digits, spaces, '+' and '-', with at least one digit"
        )));
    }
    if order.items.is_empty() {
        return Err(invalid("items must not be empty"));
    }
    if order.items.len() > MAX_ITEMS {
        return Err(invalid(&format!("at most {MAX_ITEMS} items per order")));
    }

    let mut lines: BTreeMap<&str, u64> = BTreeMap::new();
    for item in &order.items {
        inventory::check_sku(&item.sku)?;
        if item.qty == 0 {
            return Err(invalid(&format!("qty of {} must be at least 1", item.sku)));
        }
        // At most 100 u32 quantities cannot overflow a u64.
        *lines.entry(item.sku.as_str()).or_insert(0) += u64::from(item.qty);
    }
    Ok(lines)
}

/// Deliberately loose: the email connector is the real judge of an address.
fn is_plausible_email(email: &str) -> bool {
    let shape_ok = match email.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty(),
        None => false,
    };
    shape_ok && email.chars().count() <= MAX_EMAIL_CHARS && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_plausible_phone(phone: &str) -> bool {
    phone.len() <= MAX_PHONE_CHARS
        && phone.bytes().any(|b| b.is_ascii_digit())
        && phone.bytes().all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-'))
}

fn is_plausible_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The answer to the first request with an idempotency key, rebuilt from the
/// order it created.
fn replay(store: &Store, order_id: &str) -> Result<Response, ApiError> {
    let key = order_key(order_id);
    let Some(order) = store.get_json::<Order>(&key)? else {
        return Err(ApiError::Storage(format!("{key} is missing although an idempotency record names it")));
    };
    Ok(response::with_header(created(&order.id, order.total_cents), "idempotent-replayed", "true"))
}

fn created(id: &str, total_cents: u64) -> Response {
    let body = Created { id, total_cents, status: ACCEPTED };
    response::with_header(response::json(201, &body), "location", &format!("/orders/{id}"))
}
