//! The append-only audit log, hash-chained.
//!
//! Each row's hash is sha256 over the previous row's hash and this row's
//! fields, so changing or deleting a row breaks every hash after it.
//! Appends are serialised (SQLite's write gate, a table lock on PostgreSQL)
//! so the chain never forks.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Backend, Database, DbError};

/// The hash the first row chains to.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited event, as written.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub actor: String,
    /// deploy | rollback | auth
    pub action: String,
    pub component: Option<String>,
    pub version: Option<String>,
    /// accepted | rejected | denied
    pub result: String,
    pub reason: Option<String>,
}

/// A stored row.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// Where a chain check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub problem: String,
}

fn row_hash(prev_hash: &str, seq: i64, at: i64, entry: &AuditEntry) -> String {
    let mut hasher = Sha256::new();
    // Length-prefixed fields: no two different rows hash the same input.
    for field in [
        prev_hash,
        &seq.to_string(),
        &at.to_string(),
        &entry.actor,
        &entry.action,
        entry.component.as_deref().unwrap_or("\u{0}"),
        entry.version.as_deref().unwrap_or("\u{0}"),
        &entry.result,
        entry.reason.as_deref().unwrap_or("\u{0}"),
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

impl Database {
    /// Appends an event to the chain.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), DbError> {
        let at = self.now_millis();
        let _gate = self.write_permit().await?;
        let mut tx = self.begin().await?;
        self.append_audit(&mut tx, at, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends `entry` inside `tx`, which the caller commits: an event and
    /// the change it records commit together. The caller holds the write
    /// permit.
    pub(crate) async fn append_audit(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        at: i64,
        entry: &AuditEntry,
    ) -> Result<(), DbError> {
        if self.backend() == Backend::Postgres {
            sqlx::query("LOCK TABLE audit_log IN EXCLUSIVE MODE").execute(&mut **tx).await?;
        }
        let last =
            sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut **tx).await?;
        let (seq, prev_hash) = match last {
            Some(row) => (row.try_get::<i64, _>("seq")? + 1, row.try_get::<String, _>("hash")?),
            None => (1, GENESIS.to_owned()),
        };
        let hash = row_hash(&prev_hash, seq, at, entry);
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, component, version, result, reason, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(seq)
        .bind(at)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(entry.component.as_deref())
        .bind(entry.version.as_deref())
        .bind(&entry.result)
        .bind(entry.reason.as_deref())
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Every row in order.
    pub async fn audit_rows(&self) -> Result<Vec<AuditRow>, DbError> {
        let rows = sqlx::query_as(
            "SELECT seq, at, actor, action, component, version, result, reason, prev_hash, hash FROM audit_log ORDER BY seq",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// The newest `limit` rows of deploys, rollbacks, canaries and rollout
    /// decisions, newest first: the deploy history the dashboard shows.
    pub async fn deploy_history(&self, limit: i64) -> Result<Vec<AuditRow>, DbError> {
        let rows = sqlx::query_as(
            "SELECT seq, at, actor, action, component, version, result, reason, prev_hash, hash FROM audit_log \
             WHERE action IN ('deploy', 'rollback', 'canary', 'rollout') ORDER BY seq DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Recomputes the chain; returns the rows checked or the first break.
    pub async fn audit_verify(&self) -> Result<Result<usize, ChainBreak>, DbError> {
        let rows = self.audit_rows().await?;
        let mut prev = GENESIS.to_owned();
        for (i, row) in rows.iter().enumerate() {
            if row.seq != i as i64 + 1 {
                return Ok(Err(ChainBreak {
                    seq: row.seq,
                    problem: format!("expected row {}, found {}", i + 1, row.seq),
                }));
            }
            if row.prev_hash != prev {
                return Ok(Err(ChainBreak { seq: row.seq, problem: "does not chain to the previous row".into() }));
            }
            if row_hash(&prev, row.seq, row.at, &row.entry) != row.hash {
                return Ok(Err(ChainBreak { seq: row.seq, problem: "contents do not match its hash".into() }));
            }
            prev = row.hash.clone();
        }
        Ok(Ok(rows.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_every_field_and_the_chain() {
        let entry =
            AuditEntry { actor: "a".into(), action: "deploy".into(), result: "accepted".into(), ..Default::default() };
        let base = row_hash(GENESIS, 1, 10, &entry);
        assert_ne!(base, row_hash("1", 1, 10, &entry));
        assert_ne!(base, row_hash(GENESIS, 2, 10, &entry));
        assert_ne!(base, row_hash(GENESIS, 1, 11, &entry));
        let changed = AuditEntry { reason: Some("x".into()), ..entry.clone() };
        assert_ne!(base, row_hash(GENESIS, 1, 10, &changed));
        // Field boundaries matter: ("ab","c") differs from ("a","bc").
        let a = AuditEntry { actor: "ab".into(), action: "c".into(), ..entry.clone() };
        let b = AuditEntry { actor: "a".into(), action: "bc".into(), ..entry };
        assert_ne!(row_hash(GENESIS, 1, 10, &a), row_hash(GENESIS, 1, 10, &b));
    }
}
