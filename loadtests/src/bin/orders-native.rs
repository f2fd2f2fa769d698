//! `orders-native`: the reference app's order API as a plain axum + sqlx
//! service, with no wasm, no metering and no delivery. It exists only to be
//! measured against (`just bench-orders`, issue 20), so it is kept short.
//!
//! It answers like the order-handler component served by Switchyard: the
//! same routes, status codes and JSON bodies, and the same work in one
//! transaction per request — the idempotency claim, stock reservation, the
//! order row, its idempotency record and three outbox rows (email, SMS,
//! webhook) that nothing ever delivers. Its tables are its own, created at
//! start; SQLite or PostgreSQL, from `--database-url`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor as _, Row as _};
use tokio::sync::Mutex;

/// As the component's: the field limits it validates against.
const MAX_CUSTOMER_CHARS: usize = 200;
const MAX_EMAIL_CHARS: usize = 254;
const MAX_PHONE_CHARS: usize = 32;
const MAX_ITEMS: usize = 100;
const MAX_SKU_CHARS: usize = 64;
const MAX_KEY_CHARS: usize = 128;
const ACCEPTED: &str = "accepted";
/// As the host's pool for the reference app (`[database] max_connections`).
const MAX_CONNECTIONS: u32 = 16;

#[derive(Parser)]
#[command(name = "orders-native", version, about = "The order API without wasm: the baseline for `just bench-orders`")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8070")]
    listen: SocketAddr,
    /// `sqlite://FILE` or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://orders-native.db")]
    database_url: String,
}

#[derive(Clone)]
struct App {
    pool: AnyPool,
    /// SQLite allows one writer: writers queue here, as on the host, instead
    /// of racing for the file lock. `None` on PostgreSQL, where row locks do.
    write_gate: Option<Arc<Mutex<()>>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let app = App::connect(&cli.database_url).await?;
    let listener =
        tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("cannot listen on {}", cli.listen))?;
    axum::serve(listener, router(app)).await.context("server failed")
}

fn router(app: App) -> Router {
    Router::new()
        .route("/inventory/{sku}", put(put_inventory))
        .route("/orders", post(create_order))
        .route("/orders/{id}", get(get_order))
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .with_state(app)
}

impl App {
    async fn connect(url: &str) -> anyhow::Result<App> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") { format!("{url}?mode=rwc") } else { url.to_owned() };
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // The host's settings, so both pay the same for a commit.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(AnyConnectOptions::from_str(&url).context("invalid database url")?)
            .await
            .context("cannot connect to the database")?;
        let id_column = if sqlite { "INTEGER PRIMARY KEY" } else { "BIGSERIAL PRIMARY KEY" };
        for statement in [
            "CREATE TABLE IF NOT EXISTS inventory (sku TEXT PRIMARY KEY, stock BIGINT NOT NULL, price_cents BIGINT NOT NULL)"
                .to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS orders (id {id_column}, customer TEXT NOT NULL, email TEXT NOT NULL, \
                 phone TEXT NOT NULL, items TEXT NOT NULL, total_cents BIGINT NOT NULL, status TEXT NOT NULL)"
            ),
            "CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, body TEXT NOT NULL, order_id TEXT)".to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS outbox (id {id_column}, channel TEXT NOT NULL, recipient TEXT NOT NULL, \
                 subject TEXT, body TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending')"
            ),
        ] {
            sqlx::query(&statement).execute(&pool).await.context("cannot create the tables")?;
        }
        Ok(App { pool, write_gate: sqlite.then(|| Arc::new(Mutex::new(()))) })
    }

    async fn write_permit(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }
}

/// Every failure, as the component answers it: `{"error": message}`.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    /// Logged; the caller gets a generic body.
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Storage(err) => {
                tracing::error!("storage error: {err}");
                return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": "storage unavailable" })))
                    .into_response();
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

fn invalid(message: &str) -> ApiError {
    ApiError::BadRequest(format!("invalid order: {message}"))
}

/// Both the `PUT /inventory/{sku}` body and its answer's figures.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockLevel {
    stock: u64,
    price_cents: u64,
}

#[derive(Serialize)]
struct StockReply<'a> {
    sku: &'a str,
    stock: u64,
    price_cents: u64,
}

async fn put_inventory(State(app): State<App>, Path(sku): Path<String>, body: String) -> Result<Response, ApiError> {
    check_sku(&sku)?;
    let level: StockLevel =
        serde_json::from_str(&body).map_err(|e| ApiError::BadRequest(format!("invalid inventory body: {e}")))?;
    let (stock, price_cents) = (to_i64(level.stock)?, to_i64(level.price_cents)?);
    let _permit = app.write_permit().await;
    sqlx::query(
        "INSERT INTO inventory (sku, stock, price_cents) VALUES ($1, $2, $3) \
         ON CONFLICT (sku) DO UPDATE SET stock = excluded.stock, price_cents = excluded.price_cents",
    )
    .bind(&sku)
    .bind(stock)
    .bind(price_cents)
    .execute(&app.pool)
    .await?;
    let reply = StockReply { sku: &sku, stock: level.stock, price_cents: level.price_cents };
    Ok((StatusCode::OK, Json(reply)).into_response())
}

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

/// `GET /orders/{id}`'s answer and the webhook's body, as the component's.
#[derive(Serialize)]
struct Order {
    id: String,
    customer: String,
    email: String,
    phone: String,
    items: Vec<OrderLine>,
    total_cents: u64,
    status: String,
}

#[derive(Serialize, Deserialize)]
struct OrderLine {
    sku: String,
    qty: u64,
    price_cents: u64,
}

async fn create_order(State(app): State<App>, headers: HeaderMap, body: String) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let order: NewOrder = serde_json::from_str(&body).map_err(|e| invalid(&e.to_string()))?;
    let lines = validate(&order)?;

    let _permit = app.write_permit().await;
    let mut tx = app.pool.begin().await?;
    if let Some(key) = key {
        // The insert waits on a concurrent one with the same key, so only
        // one of them creates the order.
        let claimed = sqlx::query("INSERT INTO idempotency (key, body) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(&body)
            .execute(&mut *tx)
            .await?;
        if claimed.rows_affected() == 0 {
            let record = sqlx::query("SELECT body, order_id FROM idempotency WHERE key = $1")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
            if record.try_get::<String, _>("body")? != body {
                return Err(ApiError::Unprocessable("Idempotency-Key reused with a different request body".into()));
            }
            let id: String = record.try_get("order_id")?;
            // Committed with the record, so a missing order is a storage fault.
            let order = load_order(&mut tx, &id).await?.ok_or(ApiError::Storage(sqlx::Error::RowNotFound))?;
            return Ok(created(&order.id, order.total_cents, true));
        }
    }

    // In sku order, so two orders never lock rows in opposite orders.
    let mut items = Vec::with_capacity(lines.len());
    let mut total_cents: u64 = 0;
    for (sku, qty) in lines {
        let reserved =
            sqlx::query("UPDATE inventory SET stock = stock - $1 WHERE sku = $2 AND stock >= $3 RETURNING price_cents")
                .bind(to_i64(qty)?)
                .bind(sku)
                .bind(to_i64(qty)?)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = reserved else {
            let known =
                sqlx::query("SELECT 1 FROM inventory WHERE sku = $1").bind(sku).fetch_optional(&mut *tx).await?;
            return Err(match known {
                Some(_) => ApiError::Conflict(format!("sold out: {sku}")),
                None => ApiError::NotFound(format!("unknown sku: {sku}")),
            });
        };
        let price_cents = row.try_get::<i64, _>("price_cents")?.unsigned_abs();
        total_cents = qty
            .checked_mul(price_cents)
            .and_then(|line| total_cents.checked_add(line))
            .ok_or_else(|| invalid("the total is too large"))?;
        items.push(OrderLine { sku: sku.to_owned(), qty, price_cents });
    }

    let items_json = serde_json::to_string(&items).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let row = sqlx::query(
        "INSERT INTO orders (customer, email, phone, items, total_cents, status) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&order.customer)
    .bind(&order.email)
    .bind(&order.phone)
    .bind(&items_json)
    .bind(to_i64(total_cents)?)
    .bind(ACCEPTED)
    .fetch_one(&mut *tx)
    .await?;
    let id = format!("ord_{}", row.try_get::<i64, _>("id")?);
    if let Some(key) = key {
        sqlx::query("UPDATE idempotency SET order_id = $1 WHERE key = $2")
            .bind(&id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    let order = Order {
        id,
        customer: order.customer,
        email: order.email,
        phone: order.phone,
        items,
        total_cents,
        status: ACCEPTED.to_owned(),
    };
    enqueue_notifications(&mut tx, &order).await?;
    tx.commit().await?;
    Ok(created(&order.id, order.total_cents, false))
}

/// The component's three messages, in one statement.
async fn enqueue_notifications(tx: &mut sqlx::Transaction<'_, sqlx::Any>, order: &Order) -> Result<(), ApiError> {
    let total = format!("{}.{:02}", order.total_cents / 100, order.total_cents % 100);
    let email = format!(
        "Hello {},\n\nthank you for your order {}. It is confirmed, total {total}.\n",
        order.customer, order.id
    );
    let webhook = serde_json::to_string(order).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO outbox (channel, recipient, subject, body) VALUES \
         ('email', $1, $2, $3), ('sms', $4, NULL, $5), ('webhook', '/fulfilment', NULL, $6)",
    )
    .bind(&order.email)
    .bind(format!("Order {} confirmed", order.id))
    .bind(email)
    .bind(&order.phone)
    .bind(format!("Order {} confirmed, total {total}.", order.id))
    .bind(webhook)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn get_order(State(app): State<App>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let mut conn = app.pool.acquire().await?;
    let order = load_order(&mut conn, &id).await?.ok_or_else(|| ApiError::NotFound("order not found".into()))?;
    Ok((StatusCode::OK, Json(order)).into_response())
}

async fn load_order(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Option<Order>, ApiError> {
    let Some(number) = id.strip_prefix("ord_").and_then(|n| n.parse::<i64>().ok()) else {
        return Ok(None);
    };
    let row = sqlx::query("SELECT customer, email, phone, items, total_cents, status FROM orders WHERE id = $1")
        .bind(number)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let items: String = row.try_get("items")?;
    Ok(Some(Order {
        id: id.to_owned(),
        customer: row.try_get("customer")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        items: serde_json::from_str(&items).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        total_cents: row.try_get::<i64, _>("total_cents")?.unsigned_abs(),
        status: row.try_get("status")?,
    }))
}

/// The `201` body, fields in the component's order.
#[derive(Serialize)]
struct Created<'a> {
    id: &'a str,
    total_cents: u64,
    status: &'a str,
}

fn created(id: &str, total_cents: u64, replayed: bool) -> Response {
    let location = [(header::LOCATION, format!("/orders/{id}"))];
    let mut response =
        (StatusCode::CREATED, location, Json(Created { id, total_cents, status: ACCEPTED })).into_response();
    if replayed {
        response.headers_mut().insert(HeaderName::from_static("idempotent-replayed"), HeaderValue::from_static("true"));
    }
    response
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest("more than one Idempotency-Key header".into()));
    }
    match value.to_str() {
        Ok(key) if (1..=MAX_KEY_CHARS).contains(&key.len()) && key.bytes().all(|b| (b' '..=b'~').contains(&b)) => {
            Ok(Some(key))
        }
        _ => Err(ApiError::BadRequest(format!(
            "invalid Idempotency-Key: expected 1 to {MAX_KEY_CHARS} printable ASCII characters"
        ))),
    }
}

/// The component's checks, and its merging of repeated skus.
fn validate(order: &NewOrder) -> Result<BTreeMap<&str, u64>, ApiError> {
    if order.customer.trim().is_empty() {
        return Err(invalid("customer is required"));
    }
    if order.customer.chars().count() > MAX_CUSTOMER_CHARS {
        return Err(invalid(&format!("customer must be at most {MAX_CUSTOMER_CHARS} characters")));
    }
    let email_shape =
        order.email.rsplit_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if !email_shape
        || order.email.chars().count() > MAX_EMAIL_CHARS
        || order.email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("email must look like name@domain"));
    }
    let phone = order.phone.as_bytes();
    if phone.len() > MAX_PHONE_CHARS
        || !phone.iter().any(u8::is_ascii_digit)
        || !phone.iter().all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-'))
    {
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
        check_sku(&item.sku)?;
        if item.qty == 0 {
            return Err(invalid(&format!("qty of {} must be at least 1", item.sku)));
        }
        *lines.entry(item.sku.as_str()).or_insert(0) += u64::from(item.qty);
    }
    Ok(lines)
}

fn check_sku(sku: &str) -> Result<(), ApiError> {
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

/// The columns are signed; figures beyond them are refused, not wrapped.
fn to_i64(value: u64) -> Result<i64, ApiError> {
    i64::try_from(value).map_err(|_| ApiError::BadRequest(format!("{value} is too large")))
}
