//! Outbox rows: what handlers enqueue and what inspection reads back.
//!
//! Messages are inserted by [`super::UnitOfWork::enqueue`] inside the
//! handler's transaction; this module holds the row types and the queries
//! that read the table as a whole.

use serde::Serialize;
use sqlx::Row;

use super::{Database, DbError};

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
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Delivered => "DELIVERED",
            Status::Dead => "DEAD",
        }
    }
}

/// A stored message, as inspection shows it.
#[derive(Debug, Clone, Serialize)]
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
        let rows = sqlx::query(
            "SELECT id, connector, component, request_id, recipient, subject, body, status, attempts, created_at \
             FROM outbox WHERE (CAST($1 AS TEXT) IS NULL OR connector = $1) ORDER BY created_at, id LIMIT $2",
        )
        .bind(connector)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(StoredMessage {
                    id: row.try_get("id")?,
                    connector: row.try_get("connector")?,
                    component: row.try_get("component")?,
                    request_id: row.try_get("request_id")?,
                    recipient: row.try_get("recipient")?,
                    subject: row.try_get("subject")?,
                    body: row.try_get("body")?,
                    status: row.try_get("status")?,
                    attempts: row.try_get::<i64, _>("attempts")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}
