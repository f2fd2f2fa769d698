//! Outbox rows: what handlers enqueue and what inspection reads back.
//!
//! Messages are inserted by [`super::UnitOfWork::enqueue`] inside the
//! handler's transaction; this module holds the row types and the queries
//! that read the table as a whole.

use serde::Serialize;
use sqlx::Row;

use super::{Database, DbError};

/// Deliveries settled per statement (two values each).
const SETTLE_CHUNK: usize = 100;

/// A message as a handler hands it over, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub metadata: Vec<(String, String)>,
}

impl NewMessage {
    /// Metadata is stored as a JSON array of pairs, keeping order and
    /// repeated keys.
    pub(super) fn metadata_json(&self) -> String {
        serde_json::to_string(&self.metadata).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// Lifecycle of an outbox message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Delivered,
    Dead,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Pending, Status::Delivered, Status::Dead];

    /// As stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Delivered => "DELIVERED",
            Status::Dead => "DEAD",
        }
    }

    /// As metric labels and JSON keys name it: `pending`, `delivered`, `dead`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }

    /// A status named in either case.
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str().eq_ignore_ascii_case(name))
    }
}

/// A stored message, as inspection shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: String,
    pub connector: String,
    pub component: String,
    pub request_id: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    /// When a pending message is next due (milliseconds, the dispatcher's clock).
    pub next_attempt_at: i64,
    /// Set while a dispatcher holds the message for delivery.
    pub lease_until: Option<i64>,
}

impl Database {
    /// Number of messages in `status`, across connectors.
    pub async fn outbox_count(&self, status: Status) -> Result<i64, DbError> {
        let n = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }

    /// Messages in creation order, optionally only one connector's.
    pub async fn outbox_messages(&self, connector: Option<&str>, limit: i64) -> Result<Vec<StoredMessage>, DbError> {
        let rows = sqlx::query_as(
            "SELECT id, connector, component, request_id, recipient, subject, body, status, attempts, created_at, \
             next_attempt_at, lease_until \
             FROM outbox WHERE (CAST($1 AS TEXT) IS NULL OR connector = $1) ORDER BY created_at, id LIMIT $2",
        )
        .bind(connector)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}

/// A message claimed for delivery by one dispatcher.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: String,
    pub request_id: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub metadata: Vec<(String, String)>,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: i64,
}

/// What became of a claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Delivered {
        id: String,
        receipt: String,
    },
    Retry {
        id: String,
        error: String,
        next_attempt_at: i64,
    },
    Dead {
        id: String,
        error: String,
    },
    /// Not attempted (the connector's breaker was open): the claim is
    /// dropped and the attempt count left alone.
    Release {
        id: String,
    },
}

/// Messages per connector and status, for gauges and inspection.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct StatusCount {
    pub connector: String,
    pub status: String,
    #[sqlx(rename = "n")]
    pub count: i64,
}

/// One connector's messages in one backlog status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Backlog {
    pub connector: String,
    pub status: String,
    #[sqlx(rename = "n")]
    pub count: i64,
    pub oldest: i64,
}

impl Database {
    /// Leases up to `limit` due PENDING messages of `connector` to `owner`
    /// until `lease_until`. On PostgreSQL, concurrent claimers skip each
    /// other's rows (`FOR UPDATE SKIP LOCKED`); on SQLite claims are
    /// serialised by the write gate.
    pub async fn outbox_claim(
        &self,
        connector: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>, DbError> {
        let skip_locked = match self.backend() {
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET lease_owner = $1, lease_until = $2, updated_at = $3 \
             WHERE id IN (SELECT id FROM outbox WHERE status = 'PENDING' AND connector = $4 \
               AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until <= $3) \
               ORDER BY next_attempt_at, id LIMIT $5{skip_locked}) \
             RETURNING id, request_id, recipient, subject, body, metadata, attempts, created_at"
        );
        let _gate = self.write_permit().await?;
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(connector)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.into_iter()
            .map(|row| {
                let metadata: String = row.try_get("metadata")?;
                Ok(ClaimedMessage {
                    id: row.try_get("id")?,
                    request_id: row.try_get("request_id")?,
                    recipient: row.try_get("recipient")?,
                    subject: row.try_get("subject")?,
                    body: row.try_get("body")?,
                    metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                    attempts: row.try_get("attempts")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Records the fate of claimed messages in one transaction. A row whose
    /// lease was meanwhile taken by another owner is left to that owner.
    pub async fn outbox_settle(&self, owner: &str, now: i64, settlements: &[Settlement]) -> Result<(), DbError> {
        if settlements.is_empty() {
            return Ok(());
        }
        let _gate = self.write_permit().await?;
        let mut tx = self.begin().await?;
        // Deliveries, nearly every settlement, in one statement per chunk.
        let delivered: Vec<(&str, &str)> = settlements
            .iter()
            .filter_map(|s| match s {
                Settlement::Delivered { id, receipt } => Some((id.as_str(), receipt.as_str())),
                _ => None,
            })
            .collect();
        for chunk in delivered.chunks(SETTLE_CHUNK) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, ${})", 3 + 2 * i, 4 + 2 * i)).collect();
            let sql = format!(
                "WITH settled (id, receipt) AS (VALUES {}) \
                 UPDATE outbox SET status = 'DELIVERED', attempts = attempts + 1, \
                 receipt = (SELECT receipt FROM settled WHERE settled.id = outbox.id), last_error = NULL, \
                 delivered_at = $1, updated_at = $1, lease_owner = NULL, lease_until = NULL \
                 WHERE lease_owner = $2 AND id IN (SELECT id FROM settled)",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(now).bind(owner);
            for (id, receipt) in chunk {
                query = query.bind(*id).bind(*receipt);
            }
            query.execute(&mut *tx).await?;
        }
        for settlement in settlements {
            let query = match settlement {
                Settlement::Delivered { .. } => continue,
                Settlement::Retry { id, error, next_attempt_at } => sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $3, next_attempt_at = $4, \
                     updated_at = $5, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2",
                )
                .bind(id)
                .bind(owner)
                .bind(error)
                .bind(*next_attempt_at)
                .bind(now),
                Settlement::Dead { id, error } => sqlx::query(
                    "UPDATE outbox SET status = 'DEAD', attempts = attempts + 1, last_error = $3, \
                     updated_at = $4, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2",
                )
                .bind(id)
                .bind(owner)
                .bind(error)
                .bind(now),
                Settlement::Release { id } => sqlx::query(
                    "UPDATE outbox SET lease_owner = NULL, lease_until = NULL, updated_at = $3 \
                     WHERE id = $1 AND lease_owner = $2",
                )
                .bind(id)
                .bind(owner)
                .bind(now),
            };
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Puts a DEAD message back in the queue, due now. `false` if there is
    /// no DEAD message with that id.
    pub async fn outbox_retry_dead(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let _gate = self.write_permit().await?;
        let done = sqlx::query(
            "UPDATE outbox SET status = 'PENDING', attempts = 0, next_attempt_at = $2, updated_at = $2, \
             lease_owner = NULL, lease_until = NULL WHERE id = $1 AND status = 'DEAD'",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Message counts by connector and status.
    pub async fn outbox_status_counts(&self) -> Result<Vec<StatusCount>, DbError> {
        let rows = sqlx::query_as(
            "SELECT connector, status, COUNT(*) AS n FROM outbox GROUP BY connector, status ORDER BY connector, status",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// PENDING and DEAD messages per connector, with the creation time of
    /// the oldest of each: the backlog, read through the `outbox_due` index,
    /// so its cost follows the backlog and not the delivered history.
    pub async fn outbox_backlog(&self) -> Result<Vec<Backlog>, DbError> {
        let rows = sqlx::query_as(
            "SELECT connector, status, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox \
             WHERE status IN ('PENDING', 'DEAD') GROUP BY connector, status",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Creation time of the oldest PENDING message, per connector that has one.
    pub async fn outbox_oldest_pending(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT connector, MIN(created_at) AS oldest FROM outbox WHERE status = 'PENDING' GROUP BY connector",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| Ok((row.try_get("connector")?, row.try_get("oldest")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Recent messages, newest first, filtered by status and connector.
    pub async fn outbox_recent(
        &self,
        status: Option<&str>,
        connector: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, DbError> {
        let rows = sqlx::query_as(
            "SELECT id, connector, component, request_id, recipient, subject, body, status, attempts, created_at, \
             next_attempt_at, lease_until \
             FROM outbox WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) AND (CAST($2 AS TEXT) IS NULL OR connector = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(status)
        .bind(connector)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
