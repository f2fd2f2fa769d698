//! Stored component versions and the deploy history that says which one is
//! active. Bytes live in the database so every replica (and every restart)
//! can load exactly what was accepted.

use sqlx::Row;

use super::audit::AuditEntry;
use super::{Database, DbError};

/// One accepted deploy or rollback.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeploymentRow {
    pub digest: String,
    pub action: String,
    pub actor: String,
    pub deployed_at: i64,
}

/// A version being recorded as deployed.
#[derive(Debug, Clone, Copy)]
pub struct NewDeployment<'a> {
    pub component: &'a str,
    /// Full sha256 of `bytes`.
    pub digest: &'a str,
    pub bytes: &'a [u8],
    /// config | deploy | rollback | promote
    pub action: &'a str,
    pub actor: &'a str,
}

impl Database {
    /// Stores a version (idempotent), records it as deployed, and prunes
    /// stored versions beyond the `keep` most recently deployed ones; with
    /// `audit`, appends that event in the same transaction (one write, and
    /// no deployment without its audit row).
    pub async fn record_deployment(
        &self,
        deployment: &NewDeployment<'_>,
        keep: usize,
        audit: Option<&AuditEntry>,
    ) -> Result<(), DbError> {
        let NewDeployment { component, digest, bytes, action, actor } = *deployment;
        let now = self.now_millis();
        let _gate = self.write_permit().await?;
        let mut tx = self.begin().await?;
        if let Some(entry) = audit {
            self.append_audit(&mut tx, now, entry).await?;
        }
        sqlx::query(
            "INSERT INTO component_versions (component, digest, bytes, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (component, digest) DO NOTHING",
        )
        .bind(component)
        .bind(digest)
        .bind(bytes.to_vec())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO deployments (id, component, digest, action, actor, deployed_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(component)
        .bind(digest)
        .bind(action)
        .bind(actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Keep the versions of the latest `keep` deployments.
        let recent: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM deployments WHERE component = $1 ORDER BY deployed_at DESC, id DESC",
        )
        .bind(component)
        .fetch_all(&mut *tx)
        .await?;
        let mut kept: Vec<String> = Vec::new();
        for digest in recent {
            if !kept.contains(&digest) && kept.len() < keep {
                kept.push(digest);
            }
        }
        // And a canary's, which other replicas load from here.
        let canary: Option<String> = sqlx::query_scalar("SELECT digest FROM canaries WHERE component = $1")
            .bind(component)
            .fetch_optional(&mut *tx)
            .await?;
        kept.extend(canary);
        let stored: Vec<String> = sqlx::query_scalar("SELECT digest FROM component_versions WHERE component = $1")
            .bind(component)
            .fetch_all(&mut *tx)
            .await?;
        for digest in stored.iter().filter(|d| !kept.contains(d)) {
            sqlx::query("DELETE FROM component_versions WHERE component = $1 AND digest = $2")
                .bind(component)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
        }
        // A promoted canary is a canary no longer.
        if action == "promote" {
            sqlx::query("DELETE FROM canaries WHERE component = $1").bind(component).execute(&mut *tx).await?;
        }
        // Delivered to every listening replica when (and only if) this commits.
        self.notify_deployments(&mut tx, component).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deploy history of a component, newest first.
    pub async fn deployments(&self, component: &str, limit: i64) -> Result<Vec<DeploymentRow>, DbError> {
        let rows = sqlx::query_as(
            "SELECT digest, action, actor, deployed_at FROM deployments WHERE component = $1 \
             ORDER BY deployed_at DESC, id DESC LIMIT $2",
        )
        .bind(component)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// The bytes of a stored version, by full digest or a unique prefix.
    pub async fn component_version(
        &self,
        component: &str,
        digest_prefix: &str,
    ) -> Result<Option<(String, Vec<u8>)>, DbError> {
        let pattern = format!("{}%", digest_prefix.replace(['%', '_'], ""));
        let rows = sqlx::query("SELECT digest, bytes FROM component_versions WHERE component = $1 AND digest LIKE $2")
            .bind(component)
            .bind(pattern)
            .fetch_all(self.pool())
            .await?;
        if rows.len() != 1 {
            return Ok(None);
        }
        let row = &rows[0];
        Ok(Some((row.try_get("digest")?, row.try_get("bytes")?)))
    }

    /// Digests stored for a component (rollback candidates).
    pub async fn stored_versions(&self, component: &str) -> Result<Vec<String>, DbError> {
        let digests =
            sqlx::query_scalar("SELECT digest FROM component_versions WHERE component = $1 ORDER BY created_at DESC")
                .bind(component)
                .fetch_all(self.pool())
                .await?;
        Ok(digests)
    }
}
