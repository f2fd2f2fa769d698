//! One invocation's transaction.
//!
//! A handler's key-value writes and outbox messages commit together or not
//! at all. The transaction begins lazily, at the component's first state
//! access, so components that keep no state never take a connection; the
//! invoker commits it when the component answered below 400 and drops it
//! (rolling back) otherwise.
//!
//! Outbox messages are written in batches, one multi-row `INSERT` each: at
//! commit, or sooner when enough are waiting. The guest cannot read them
//! back, so holding them costs nothing but the memory, which is bounded;
//! writing them one statement each cost a round trip to the database
//! (for SQLite, to its connection's thread) per message.

use std::sync::Arc;

use sqlx::{Any, Transaction};
use tokio::sync::OwnedSemaphorePermit;

use super::outbox::NewMessage;
use super::{Backend, Database, DbError};

/// Keys per `list-keys` page.
const LIST_PAGE: i64 = 100;
/// Messages waiting to be written are written once they hold this many
/// bytes (recipient, subject, body and metadata)...
const BATCH_BYTES: usize = 64 * 1024;
/// ... or number this many, so one statement has at most 32 × 9 values.
const BATCH_MESSAGES: usize = 32;
/// Values bound per outbox row.
const OUTBOX_COLUMNS: usize = 9;

/// An enqueued message not yet written.
struct Waiting {
    id: String,
    connector: String,
    message: NewMessage,
    metadata: String,
    at: i64,
}

pub struct UnitOfWork {
    db: Database,
    /// Every key and message is namespaced by the component that wrote it.
    component: Arc<str>,
    /// Kept on outbox rows so delivery logs can be tied to the request.
    request_id: Arc<str>,
    tx: Option<Transaction<'static, Any>>,
    /// Held for the life of a SQLite transaction: see `Database::write_gate`.
    _write_permit: Option<OwnedSemaphorePermit>,
    /// Messages enqueued so far; a commit after any wakes the dispatchers.
    enqueued: u32,
    /// Enqueued messages not yet written, and their size.
    waiting: Vec<Waiting>,
    waiting_bytes: usize,
}

impl UnitOfWork {
    pub(super) fn new(db: Database, component: Arc<str>, request_id: Arc<str>) -> Self {
        Self {
            db,
            component,
            request_id,
            tx: None,
            _write_permit: None,
            enqueued: 0,
            waiting: Vec::new(),
            waiting_bytes: 0,
        }
    }

    /// A new, unbegun unit of work of the same component, for `request_id`.
    pub fn renewed(&self, request_id: Arc<str>) -> Self {
        Self::new(self.db.clone(), self.component.clone(), request_id)
    }

    async fn tx(&mut self) -> Result<&mut Transaction<'static, Any>, DbError> {
        if self.tx.is_none() {
            self._write_permit = self.db.write_permit().await?;
            let tx = match self.db.backend {
                // IMMEDIATE takes the write lock up front: a deferred
                // transaction that reads and then writes can fail with
                // SQLITE_BUSY instead of waiting.
                Backend::Sqlite => self.db.begin(Some("BEGIN IMMEDIATE")).await?,
                Backend::Postgres => self.db.begin(None).await?,
            };
            self.tx = Some(tx);
        }
        match self.tx.as_mut() {
            Some(tx) => Ok(tx),
            None => Err(DbError::Sqlx(sqlx::Error::PoolClosed)),
        }
    }

    /// `FOR UPDATE` on PostgreSQL: a read inside a unit of work is usually
    /// followed by a write of the same key (stock reservation), and the row
    /// lock keeps concurrent invocations from both reading the old value.
    /// SQLite transactions are already serialised.
    fn lock_clause(&self) -> &'static str {
        match self.db.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    pub async fn kv_get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let sql =
            format!("SELECT value FROM kv WHERE component = $1 AND bucket = $2 AND key = $3{}", self.lock_clause());
        let component = self.component.clone();
        let tx = self.tx().await?;
        let value = sqlx::query_scalar::<_, Vec<u8>>(&sql)
            .bind(&*component)
            .bind(bucket)
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(value)
    }

    pub async fn kv_set(&mut self, bucket: &str, key: &str, value: &[u8]) -> Result<(), DbError> {
        let component = self.component.clone();
        let tx = self.tx().await?;
        sqlx::query(
            "INSERT INTO kv (component, bucket, key, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (component, bucket, key) DO UPDATE SET value = excluded.value",
        )
        .bind(&*component)
        .bind(bucket)
        .bind(key)
        .bind(value.to_vec())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn kv_delete(&mut self, bucket: &str, key: &str) -> Result<(), DbError> {
        let component = self.component.clone();
        let tx = self.tx().await?;
        sqlx::query("DELETE FROM kv WHERE component = $1 AND bucket = $2 AND key = $3")
            .bind(&*component)
            .bind(bucket)
            .bind(key)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn kv_exists(&mut self, bucket: &str, key: &str) -> Result<bool, DbError> {
        let component = self.component.clone();
        let tx = self.tx().await?;
        let found =
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM kv WHERE component = $1 AND bucket = $2 AND key = $3")
                .bind(&*component)
                .bind(bucket)
                .bind(key)
                .fetch_one(&mut **tx)
                .await?;
        Ok(found > 0)
    }

    /// One page of keys in key order, and the cursor of the next page.
    pub async fn kv_list_keys(&mut self, bucket: &str, cursor: u64) -> Result<(Vec<String>, Option<u64>), DbError> {
        let component = self.component.clone();
        let offset = i64::try_from(cursor).unwrap_or(i64::MAX);
        let tx = self.tx().await?;
        let keys = sqlx::query_scalar::<_, String>(
            "SELECT key FROM kv WHERE component = $1 AND bucket = $2 ORDER BY key LIMIT $3 OFFSET $4",
        )
        .bind(&*component)
        .bind(bucket)
        .bind(LIST_PAGE + 1)
        .bind(offset)
        .fetch_all(&mut **tx)
        .await?;
        let page = LIST_PAGE as usize;
        if keys.len() > page {
            let mut keys = keys;
            keys.truncate(page);
            Ok((keys, Some(cursor + LIST_PAGE as u64)))
        } else {
            Ok((keys, None))
        }
    }

    /// Adds `delta` to the decimal counter under `key` (missing = 0) and
    /// returns the new value, in one statement: an insert that, for a key
    /// already there, adds to the stored value instead. On PostgreSQL the
    /// conflicting insert waits for a concurrent one's outcome and then
    /// updates the row it committed, so two invocations never see the same
    /// count; SQLite's transactions are serialised anyway. The value is
    /// only updated while it is a decimal counter that `delta` does not
    /// take past `u64::MAX`, checked in SQL; when it is not, nothing is
    /// returned, and a read says which.
    pub async fn kv_increment(&mut self, bucket: &str, key: &str, delta: u64) -> Result<u64, DbError> {
        let component = self.component.clone();
        let sql = match self.db.backend {
            // A counter is 1–20 ASCII digits whose value, as NUMERIC (exact
            // at that length), stays at most u64::MAX after the addition.
            // `encode(…, 'escape')` reads any bytes as text without failing,
            // and CASE keeps the cast from running on anything else: a
            // failed statement would abort the whole transaction.
            Backend::Postgres => {
                "INSERT INTO kv (component, bucket, key, value) VALUES ($1, $2, $3, convert_to($4, 'UTF8')) \
                 ON CONFLICT (component, bucket, key) DO UPDATE \
                 SET value = convert_to((encode(kv.value, 'escape')::numeric + $4::numeric)::text, 'UTF8') \
                 WHERE CASE WHEN encode(kv.value, 'escape') ~ '^[0-9]{1,20}$' \
                 THEN encode(kv.value, 'escape')::numeric + $4::numeric <= 18446744073709551615 ELSE false END \
                 RETURNING convert_from(value, 'UTF8')"
            }
            // SQLite's integers are signed 64-bit, so a counter there stops
            // at i64::MAX: 1–19 digits, compared as text at 19 (equal
            // lengths of digits order as numbers), with room for `delta`.
            Backend::Sqlite => {
                "INSERT INTO kv (component, bucket, key, value) VALUES ($1, $2, $3, CAST(CAST($4 AS TEXT) AS BLOB)) \
                 ON CONFLICT (component, bucket, key) DO UPDATE \
                 SET value = CAST(CAST(CAST(CAST(kv.value AS TEXT) AS INTEGER) + $4 AS TEXT) AS BLOB) \
                 WHERE length(kv.value) BETWEEN 1 AND 19 AND CAST(kv.value AS TEXT) NOT GLOB '*[^0-9]*' \
                 AND (length(kv.value) < 19 OR CAST(kv.value AS TEXT) <= '9223372036854775807') \
                 AND CAST(CAST(kv.value AS TEXT) AS INTEGER) <= 9223372036854775807 - $4 \
                 RETURNING CAST(value AS TEXT)"
            }
        };
        let delta_value = delta.to_string();
        let backend = self.db.backend;
        let tx = self.tx().await?;
        let query = sqlx::query_scalar::<_, String>(sql).bind(&*component).bind(bucket).bind(key);
        let query = match backend {
            Backend::Postgres => query.bind(delta_value),
            Backend::Sqlite => match i64::try_from(delta) {
                Ok(delta) => query.bind(delta),
                Err(_) => return Err(DbError::Overflow { key: key.to_owned() }),
            },
        };
        if let Some(next) = query.fetch_optional(&mut **tx).await? {
            return next.parse().map_err(|_| DbError::NotACounter { key: key.to_owned() });
        }
        // Not updated: the stored value is no counter, or the sum would not fit.
        let current =
            sqlx::query_scalar::<_, Vec<u8>>("SELECT value FROM kv WHERE component = $1 AND bucket = $2 AND key = $3")
                .bind(&*component)
                .bind(bucket)
                .bind(key)
                .fetch_one(&mut **tx)
                .await?;
        match std::str::from_utf8(&current).ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(_) => Err(DbError::Overflow { key: key.to_owned() }),
            None => Err(DbError::NotACounter { key: key.to_owned() }),
        }
    }

    /// Messages this unit of work has enqueued.
    pub fn enqueued(&self) -> u32 {
        self.enqueued
    }

    /// Stores a PENDING outbox message and returns its id. The row is
    /// written with the next batch (see the module's doc), in this
    /// transaction either way.
    pub async fn enqueue(&mut self, connector: &str, message: NewMessage) -> Result<String, DbError> {
        let id = uuid::Uuid::now_v7().to_string();
        let metadata = message.metadata_json();
        self.waiting_bytes += message.recipient.len()
            + message.subject.as_ref().map_or(0, String::len)
            + message.body.len()
            + metadata.len();
        self.waiting.push(Waiting {
            id: id.clone(),
            connector: connector.to_owned(),
            message,
            metadata,
            at: self.db.now_millis(),
        });
        self.enqueued += 1;
        if self.waiting_bytes >= BATCH_BYTES || self.waiting.len() >= BATCH_MESSAGES {
            self.write_waiting().await?;
        }
        Ok(id)
    }

    /// Writes the waiting messages in one statement.
    async fn write_waiting(&mut self) -> Result<(), DbError> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.waiting);
        self.waiting_bytes = 0;
        let (component, request_id) = (self.component.clone(), self.request_id.clone());
        let mut sql = String::from(
            "INSERT INTO outbox (id, connector, component, request_id, recipient, subject, body, metadata, \
             status, attempts, next_attempt_at, created_at, updated_at) VALUES ",
        );
        for row in 0..rows.len() {
            // $1…$8 of this row, then its timestamp ($9) three times.
            let n = |column: usize| format!("${}", row * OUTBOX_COLUMNS + column);
            let values: Vec<String> = (1..OUTBOX_COLUMNS).map(n).collect();
            let at = n(OUTBOX_COLUMNS);
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("({}, 'PENDING', 0, {at}, {at}, {at})", values.join(", ")));
        }
        let mut query = sqlx::query(&sql);
        for row in &rows {
            query = query
                .bind(&row.id)
                .bind(&row.connector)
                .bind(&*component)
                .bind(&*request_id)
                .bind(&row.message.recipient)
                .bind(row.message.subject.as_deref())
                .bind(&row.message.body)
                .bind(&row.metadata)
                .bind(row.at);
        }
        let tx = self.tx().await?;
        query.execute(&mut **tx).await?;
        Ok(())
    }

    /// Makes every write of the invocation durable.
    pub async fn commit(mut self) -> Result<(), DbError> {
        self.write_waiting().await?;
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
            if self.enqueued > 0 {
                self.db.signal_outbox();
            }
        }
        Ok(())
    }

    /// Discards every write of the invocation.
    pub async fn rollback(mut self) -> Result<(), DbError> {
        if let Some(tx) = self.tx.take() {
            tx.rollback().await?;
        }
        Ok(())
    }
}
