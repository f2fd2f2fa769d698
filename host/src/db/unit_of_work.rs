//! One invocation's transaction.
//!
//! A handler's key-value writes and outbox messages commit together or not
//! at all. The transaction begins lazily, at the component's first state
//! access, so components that keep no state never take a connection; the
//! invoker commits it when the component answered below 400 and drops it
//! (rolling back) otherwise.

use std::sync::Arc;

use sqlx::{Any, Transaction};
use tokio::sync::OwnedSemaphorePermit;

use super::outbox::NewMessage;
use super::{Backend, Database, DbError};

/// Keys per `list-keys` page.
const LIST_PAGE: i64 = 100;

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
}

impl UnitOfWork {
    pub(super) fn new(db: Database, component: Arc<str>, request_id: Arc<str>) -> Self {
        Self { db, component, request_id, tx: None, _write_permit: None, enqueued: 0 }
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
    /// returns the new value.
    pub async fn kv_increment(&mut self, bucket: &str, key: &str, delta: u64) -> Result<u64, DbError> {
        let component = self.component.clone();
        let lock = self.lock_clause();
        let tx = self.tx().await?;
        // Insert-if-missing first: on PostgreSQL a concurrent transaction
        // inserting the same key makes this wait for its outcome, and the
        // row then exists for `FOR UPDATE` to lock. Two invocations can
        // therefore never both see the same count.
        sqlx::query(
            "INSERT INTO kv (component, bucket, key, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (component, bucket, key) DO NOTHING",
        )
        .bind(&*component)
        .bind(bucket)
        .bind(key)
        .bind(b"0".to_vec())
        .execute(&mut **tx)
        .await?;
        let current = sqlx::query_scalar::<_, Vec<u8>>(&format!(
            "SELECT value FROM kv WHERE component = $1 AND bucket = $2 AND key = $3{lock}"
        ))
        .bind(&*component)
        .bind(bucket)
        .bind(key)
        .fetch_one(&mut **tx)
        .await?;
        let current: u64 = std::str::from_utf8(&current)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| DbError::NotACounter { key: key.to_owned() })?;
        let next = current.checked_add(delta).ok_or_else(|| DbError::Overflow { key: key.to_owned() })?;
        sqlx::query("UPDATE kv SET value = $4 WHERE component = $1 AND bucket = $2 AND key = $3")
            .bind(&*component)
            .bind(bucket)
            .bind(key)
            .bind(next.to_string().into_bytes())
            .execute(&mut **tx)
            .await?;
        Ok(next)
    }

    /// Messages this unit of work has enqueued.
    pub fn enqueued(&self) -> u32 {
        self.enqueued
    }

    /// Stores a PENDING outbox message and returns its id.
    pub async fn enqueue(&mut self, connector: &str, message: &NewMessage) -> Result<String, DbError> {
        let id = uuid::Uuid::now_v7().to_string();
        let component = self.component.clone();
        let request_id = self.request_id.clone();
        let now = self.db.now_millis();
        let tx = self.tx().await?;
        sqlx::query(
            "INSERT INTO outbox (id, connector, component, request_id, recipient, subject, body, metadata, \
             status, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', 0, $9, $9, $9)",
        )
        .bind(&id)
        .bind(connector)
        .bind(&*component)
        .bind(&*request_id)
        .bind(&message.recipient)
        .bind(message.subject.as_deref())
        .bind(&message.body)
        .bind(message.metadata_json())
        .bind(now)
        .execute(&mut **tx)
        .await?;
        self.enqueued += 1;
        Ok(id)
    }

    /// Makes every write of the invocation durable.
    pub async fn commit(mut self) -> Result<(), DbError> {
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
