//! One invocation's transaction.
//!
//! A handler's key-value writes and outbox messages commit together or not
//! at all. The transaction begins lazily, at the component's first state
//! access, so components that keep no state never take a connection; the
//! invoker commits it when the component answered below 400 and drops it
//! (rolling back) otherwise.
//!
//! A unit of work made to read first ([`UnitOfWork::reading_first`], for
//! requests whose method is safe: GET, HEAD) begins as a plain read
//! transaction, without SQLite's write permit and without PostgreSQL's row
//! locks, so reads run beside writers instead of queueing behind them. At
//! its first write it becomes a write transaction: it takes the permit (or
//! the locks) then, reads again what it read, and goes on only if all of it
//! is unchanged, as if every read had happened at that moment. If anything
//! changed, the write fails with [`DbError::Conflict`] and the unit of work
//! is marked [`UnitOfWork::conflicted`]; the invoker then runs the request
//! again as a writer from the start.
//!
//! Outbox messages are written in batches, one multi-row `INSERT` each: at
//! commit, or sooner when enough are waiting. The guest cannot read them
//! back, so holding them costs nothing but the memory, which is bounded;
//! writing them one statement each cost a round trip to the database
//! per message.
//!
//! On SQLite a unit of work runs its statements on the calling thread, on
//! a connection of its own (`local`); on PostgreSQL, in a sqlx transaction.

use std::sync::Arc;

use rusqlite::ToSql;
use sqlx::{Any, Transaction};
use tokio::sync::OwnedSemaphorePermit;

use super::local::Session;
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

const GET: &str = "SELECT value FROM kv WHERE component = $1 AND bucket = $2 AND key = $3";
const SET: &str = "INSERT INTO kv (component, bucket, key, value) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (component, bucket, key) DO UPDATE SET value = excluded.value";
const DELETE: &str = "DELETE FROM kv WHERE component = $1 AND bucket = $2 AND key = $3";
const EXISTS: &str = "SELECT COUNT(*) FROM kv WHERE component = $1 AND bucket = $2 AND key = $3";
const KEYS: &str = "SELECT key FROM kv WHERE component = $1 AND bucket = $2 ORDER BY key LIMIT $3 OFFSET $4";
/// A counter is 1–20 ASCII digits whose value, as NUMERIC (exact at that
/// length), stays at most u64::MAX after the addition. `encode(…,
/// 'escape')` reads any bytes as text without failing, and CASE keeps the
/// cast from running on anything else: a failed statement would abort the
/// whole transaction.
const INCREMENT_POSTGRES: &str = "INSERT INTO kv (component, bucket, key, value) \
     VALUES ($1, $2, $3, convert_to($4, 'UTF8')) \
     ON CONFLICT (component, bucket, key) DO UPDATE \
     SET value = convert_to((encode(kv.value, 'escape')::numeric + $4::numeric)::text, 'UTF8') \
     WHERE CASE WHEN encode(kv.value, 'escape') ~ '^[0-9]{1,20}$' \
     THEN encode(kv.value, 'escape')::numeric + $4::numeric <= 18446744073709551615 ELSE false END \
     RETURNING convert_from(value, 'UTF8')";
/// SQLite's integers are signed 64-bit, so a counter there stops at
/// i64::MAX: 1–19 digits, compared as text at 19 (equal lengths of digits
/// order as numbers), with room for `delta`.
const INCREMENT_SQLITE: &str = "INSERT INTO kv (component, bucket, key, value) \
     VALUES ($1, $2, $3, CAST(CAST($4 AS TEXT) AS BLOB)) \
     ON CONFLICT (component, bucket, key) DO UPDATE \
     SET value = CAST(CAST(CAST(CAST(kv.value AS TEXT) AS INTEGER) + $4 AS TEXT) AS BLOB) \
     WHERE length(kv.value) BETWEEN 1 AND 19 AND CAST(kv.value AS TEXT) NOT GLOB '*[^0-9]*' \
     AND (length(kv.value) < 19 OR CAST(kv.value AS TEXT) <= '9223372036854775807') \
     AND CAST(CAST(kv.value AS TEXT) AS INTEGER) <= 9223372036854775807 - $4 \
     RETURNING CAST(value AS TEXT)";

/// A unit of work's transaction: on SQLite a connection driven on the
/// calling thread, on PostgreSQL a pooled sqlx one.
enum Tx {
    Local(Session),
    Pooled(Transaction<'static, Any>),
}

impl Tx {
    async fn rollback(self) -> Result<(), DbError> {
        match self {
            // Dropping the session rolls it back.
            Tx::Local(session) => drop(session),
            Tx::Pooled(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

/// An enqueued message not yet written.
struct Waiting {
    id: String,
    connector: String,
    message: NewMessage,
    metadata: String,
    at: i64,
}

/// A read made before the first write, to be made again when it comes.
#[derive(Debug, PartialEq)]
enum Read {
    Get { bucket: String, key: String, value: Option<Vec<u8>> },
    Exists { bucket: String, key: String, found: bool },
    Keys { bucket: String, cursor: u64, keys: Vec<String> },
}

pub struct UnitOfWork {
    db: Database,
    /// Every key and message is namespaced by the component that wrote it.
    component: Arc<str>,
    /// Kept on outbox rows so delivery logs can be tied to the request.
    request_id: Arc<str>,
    /// Dropped before the permit below: fields drop in order.
    tx: Option<Tx>,
    /// Whether `tx` may write (else it is a read transaction).
    writing: bool,
    /// Whether it begins as a read transaction.
    read_first: bool,
    /// What the read transaction read, checked again at the first write.
    reads: Vec<Read>,
    /// Set when what it read had changed by its first write.
    conflicted: bool,
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
            writing: false,
            read_first: false,
            reads: Vec::new(),
            conflicted: false,
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

    /// Makes it begin as a read transaction (see the module's doc).
    pub fn reading_first(mut self) -> Self {
        self.read_first = true;
        self
    }

    /// Whether what it read had changed by its first write: its work must
    /// be discarded and done again.
    pub fn conflicted(&self) -> bool {
        self.conflicted
    }

    /// The transaction, for a read: begun as a read transaction when the
    /// unit of work reads first, else as a write transaction.
    async fn read_tx(&mut self) -> Result<&mut Tx, DbError> {
        if self.tx.is_none() {
            if self.read_first {
                // Deferred on SQLite: no lock until something is read, and
                // then a snapshot that writers do not wait for.
                self.tx = Some(match &self.db.local {
                    Some(local) => Tx::Local(local.begin(false)?),
                    None => Tx::Pooled(self.db.begin().await?),
                });
            } else {
                self.begin_writing().await?;
            }
        }
        self.current()
    }

    /// The transaction, for a write: a read transaction becomes a write
    /// transaction first, as long as what it read is unchanged.
    async fn write_tx(&mut self) -> Result<&mut Tx, DbError> {
        if self.conflicted {
            return Err(DbError::Conflict);
        }
        if !self.writing {
            if let Some(read) = self.tx.take() {
                read.rollback().await?;
            }
            self.begin_writing().await?;
            for read in std::mem::take(&mut self.reads) {
                if self.read_again(&read).await? != read {
                    self.conflicted = true;
                    return Err(DbError::Conflict);
                }
            }
        }
        self.current()
    }

    async fn begin_writing(&mut self) -> Result<(), DbError> {
        self._write_permit = self.db.write_permit().await?;
        let tx = match &self.db.local {
            // IMMEDIATE takes the write lock up front: a deferred
            // transaction that reads and then writes can fail with
            // SQLITE_BUSY instead of waiting.
            Some(local) => Tx::Local(local.begin(true)?),
            None => Tx::Pooled(self.db.begin().await?),
        };
        self.tx = Some(tx);
        self.writing = true;
        Ok(())
    }

    fn current(&mut self) -> Result<&mut Tx, DbError> {
        match self.tx.as_mut() {
            Some(tx) => Ok(tx),
            None => Err(DbError::Sqlx(sqlx::Error::PoolClosed)),
        }
    }

    /// Makes `read` again in the write transaction, locking what it reads.
    async fn read_again(&mut self, read: &Read) -> Result<Read, DbError> {
        Ok(match read {
            Read::Get { bucket, key, .. } => {
                Read::Get { bucket: bucket.clone(), key: key.clone(), value: self.get(bucket, key).await? }
            }
            Read::Exists { bucket, key, .. } => {
                Read::Exists { bucket: bucket.clone(), key: key.clone(), found: self.exists(bucket, key).await? }
            }
            Read::Keys { bucket, cursor, .. } => {
                Read::Keys { bucket: bucket.clone(), cursor: *cursor, keys: self.keys(bucket, *cursor).await? }
            }
        })
    }

    /// `FOR UPDATE` on PostgreSQL: a read inside a unit of work is usually
    /// followed by a write of the same key (stock reservation), and the row
    /// lock keeps concurrent invocations from both reading the old value.
    /// SQLite transactions are already serialised. A read transaction locks
    /// nothing: its reads are checked again when it first writes.
    fn lock_clause(&self) -> &'static str {
        match self.db.backend {
            // Decided before the transaction begins: a unit of work that
            // does not read first begins as a writer.
            Backend::Postgres if self.writing || !self.read_first => " FOR UPDATE",
            Backend::Postgres | Backend::Sqlite => "",
        }
    }

    /// Keeps `read` to check again at the first write, while reading first.
    fn remember(&mut self, read: Read) {
        if !self.writing {
            self.reads.push(read);
        }
    }

    pub async fn kv_get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let value = self.get(bucket, key).await?;
        self.remember(Read::Get { bucket: bucket.to_owned(), key: key.to_owned(), value: value.clone() });
        Ok(value)
    }

    async fn get(&mut self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let sql = format!("{GET}{}", self.lock_clause());
        let component = self.component.clone();
        Ok(match self.read_tx().await? {
            Tx::Local(session) => session.optional(&sql, &[&&*component, &bucket, &key])?,
            Tx::Pooled(tx) => {
                sqlx::query_scalar(&sql).bind(&*component).bind(bucket).bind(key).fetch_optional(&mut **tx).await?
            }
        })
    }

    pub async fn kv_set(&mut self, bucket: &str, key: &str, value: &[u8]) -> Result<(), DbError> {
        let component = self.component.clone();
        match self.write_tx().await? {
            Tx::Local(session) => {
                session.execute(SET, &[&&*component, &bucket, &key, &value])?;
            }
            Tx::Pooled(tx) => {
                sqlx::query(SET).bind(&*component).bind(bucket).bind(key).bind(value).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    pub async fn kv_delete(&mut self, bucket: &str, key: &str) -> Result<(), DbError> {
        let component = self.component.clone();
        match self.write_tx().await? {
            Tx::Local(session) => {
                session.execute(DELETE, &[&&*component, &bucket, &key])?;
            }
            Tx::Pooled(tx) => {
                sqlx::query(DELETE).bind(&*component).bind(bucket).bind(key).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    pub async fn kv_exists(&mut self, bucket: &str, key: &str) -> Result<bool, DbError> {
        let found = self.exists(bucket, key).await?;
        self.remember(Read::Exists { bucket: bucket.to_owned(), key: key.to_owned(), found });
        Ok(found)
    }

    async fn exists(&mut self, bucket: &str, key: &str) -> Result<bool, DbError> {
        let component = self.component.clone();
        let found: Option<i64> = match self.read_tx().await? {
            Tx::Local(session) => session.optional(EXISTS, &[&&*component, &bucket, &key])?,
            Tx::Pooled(tx) => {
                sqlx::query_scalar(EXISTS).bind(&*component).bind(bucket).bind(key).fetch_optional(&mut **tx).await?
            }
        };
        Ok(found.unwrap_or(0) > 0)
    }

    /// One page of keys in key order, and the cursor of the next page.
    pub async fn kv_list_keys(&mut self, bucket: &str, cursor: u64) -> Result<(Vec<String>, Option<u64>), DbError> {
        let mut keys = self.keys(bucket, cursor).await?;
        self.remember(Read::Keys { bucket: bucket.to_owned(), cursor, keys: keys.clone() });
        let page = LIST_PAGE as usize;
        if keys.len() > page {
            keys.truncate(page);
            Ok((keys, Some(cursor + LIST_PAGE as u64)))
        } else {
            Ok((keys, None))
        }
    }

    /// A page of keys from `cursor`, and the first key of the next page.
    async fn keys(&mut self, bucket: &str, cursor: u64) -> Result<Vec<String>, DbError> {
        let component = self.component.clone();
        let offset = i64::try_from(cursor).unwrap_or(i64::MAX);
        Ok(match self.read_tx().await? {
            Tx::Local(session) => session.column(KEYS, &[&&*component, &bucket, &(LIST_PAGE + 1), &offset])?,
            Tx::Pooled(tx) => {
                sqlx::query_scalar(KEYS)
                    .bind(&*component)
                    .bind(bucket)
                    .bind(LIST_PAGE + 1)
                    .bind(offset)
                    .fetch_all(&mut **tx)
                    .await?
            }
        })
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
        let tx = self.write_tx().await?;
        let (next, current): (Option<String>, Option<Vec<u8>>) = match tx {
            Tx::Local(session) => {
                let Ok(delta) = i64::try_from(delta) else {
                    return Err(DbError::Overflow { key: key.to_owned() });
                };
                match session.optional(INCREMENT_SQLITE, &[&&*component, &bucket, &key, &delta])? {
                    Some(next) => (Some(next), None),
                    None => (None, session.optional(GET, &[&&*component, &bucket, &key])?),
                }
            }
            Tx::Pooled(tx) => {
                let next = sqlx::query_scalar(INCREMENT_POSTGRES)
                    .bind(&*component)
                    .bind(bucket)
                    .bind(key)
                    .bind(delta.to_string())
                    .fetch_optional(&mut **tx)
                    .await?;
                match next {
                    Some(next) => (Some(next), None),
                    None => {
                        let current = sqlx::query_scalar(GET)
                            .bind(&*component)
                            .bind(bucket)
                            .bind(key)
                            .fetch_optional(&mut **tx)
                            .await?;
                        (None, current)
                    }
                }
            }
        };
        if let Some(next) = next {
            return next.parse().map_err(|_| DbError::NotACounter { key: key.to_owned() });
        }
        // Not updated: the stored value is no counter, or the sum would not fit.
        match current.as_deref().and_then(|value| std::str::from_utf8(value).ok()).and_then(|s| s.parse::<u64>().ok()) {
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
        match self.write_tx().await? {
            Tx::Local(session) => {
                let (component, request_id): (&str, &str) = (&component, &request_id);
                let mut params: Vec<&dyn ToSql> = Vec::with_capacity(rows.len() * OUTBOX_COLUMNS);
                for row in &rows {
                    params.extend_from_slice(&[
                        &row.id,
                        &row.connector,
                        &component,
                        &request_id,
                        &row.message.recipient,
                        &row.message.subject,
                        &row.message.body,
                        &row.metadata,
                        &row.at,
                    ]);
                }
                session.execute(&sql, &params)?;
            }
            Tx::Pooled(tx) => {
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
                query.execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// Makes every write of the invocation durable.
    pub async fn commit(mut self) -> Result<(), DbError> {
        self.write_waiting().await?;
        if self.conflicted {
            return Err(DbError::Conflict);
        }
        if let Some(tx) = self.tx.take() {
            // A read transaction has nothing to make durable.
            if !self.writing {
                return tx.rollback().await;
            }
            match tx {
                Tx::Local(session) => session.commit()?,
                Tx::Pooled(tx) => tx.commit().await?,
            }
            if self.enqueued > 0 {
                self.db.signal_outbox();
            }
        }
        Ok(())
    }

    /// Discards every write of the invocation.
    pub async fn rollback(mut self) -> Result<(), DbError> {
        match self.tx.take() {
            Some(tx) => tx.rollback().await,
            None => Ok(()),
        }
    }
}
