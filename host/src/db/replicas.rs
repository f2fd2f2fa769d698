//! Membership of the replicas sharing this database, the versions the
//! deploy history names as active, and PostgreSQL's notifications between
//! replicas.

use std::collections::BTreeMap;

use super::{Backend, Database, DbError};

/// Channel a committed deploy, rollback or promotion is announced on; the
/// payload is the component's name.
pub const DEPLOYMENTS_CHANNEL: &str = "switchyard_deployments";
/// Channel a commit with new outbox messages is announced on; the payload
/// is the committing replica's id.
pub const OUTBOX_CHANNEL: &str = "switchyard_outbox";

/// `pg_notify` called where its `void` result is no column sqlx must decode.
pub(crate) const NOTIFY: &str = "SELECT 1 FROM pg_notify($1, $2)";

/// One replica's row, as its last heartbeat wrote it. The JSON columns are
/// kept as text: only the cluster module reads them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReplicaRow {
    pub id: String,
    pub address: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub components: String,
    pub serving: String,
    pub diverged: String,
    pub figures: String,
}

/// A canary serving on every replica.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CanaryRow {
    pub component: String,
    /// Full digest of its bytes, stored in `component_versions`.
    pub digest: String,
    /// Its share of invocations, in %.
    pub weight: i64,
    /// The replica whose controller runs the rollout.
    pub controller: String,
    pub updated_at: i64,
    /// Where the rollout stands, as its controller last wrote it (JSON).
    pub rollout: String,
}

impl Database {
    /// Writes this replica's row, creating it on the first heartbeat.
    pub async fn heartbeat(&self, row: &ReplicaRow) -> Result<(), DbError> {
        let _gate = self.write_permit().await?;
        sqlx::query(
            "INSERT INTO replicas (id, address, started_at, heartbeat_at, components, serving, diverged, figures) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at, components = excluded.components, serving = excluded.serving, \
             diverged = excluded.diverged, figures = excluded.figures",
        )
        .bind(&row.id)
        .bind(&row.address)
        .bind(row.started_at)
        .bind(row.heartbeat_at)
        .bind(&row.components)
        .bind(&row.serving)
        .bind(&row.diverged)
        .bind(&row.figures)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every replica row, oldest first.
    pub async fn replicas(&self) -> Result<Vec<ReplicaRow>, DbError> {
        let rows = sqlx::query_as(
            "SELECT id, address, started_at, heartbeat_at, components, serving, diverged, figures FROM replicas \
             ORDER BY started_at, id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Deletes the rows of replicas silent since before `cutoff` (ms); how
    /// many went.
    pub async fn drop_silent_replicas(&self, cutoff: i64) -> Result<u64, DbError> {
        let _gate = self.write_permit().await?;
        let done =
            sqlx::query("DELETE FROM replicas WHERE heartbeat_at < $1").bind(cutoff).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    /// Deletes one replica's row (it stopped cleanly).
    pub async fn leave(&self, id: &str) -> Result<(), DbError> {
        let _gate = self.write_permit().await?;
        sqlx::query("DELETE FROM replicas WHERE id = $1").bind(id).execute(self.pool()).await?;
        Ok(())
    }

    /// Each component's active version by the deploy history: the digest of
    /// its latest deployment.
    pub async fn active_versions(&self) -> Result<BTreeMap<String, String>, DbError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT d.component, d.digest FROM deployments d WHERE NOT EXISTS (\
             SELECT 1 FROM deployments later WHERE later.component = d.component \
             AND (later.deployed_at > d.deployed_at OR (later.deployed_at = d.deployed_at AND later.id > d.id)))",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Stores a canary's bytes (idempotent) and makes it `component`'s
    /// canary on every replica, with `weight` %.
    pub async fn put_canary(&self, row: &CanaryRow, bytes: &[u8]) -> Result<(), DbError> {
        let _gate = self.write_permit().await?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO component_versions (component, digest, bytes, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (component, digest) DO NOTHING",
        )
        .bind(&row.component)
        .bind(&row.digest)
        .bind(bytes.to_vec())
        .bind(row.updated_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO canaries (component, digest, weight, controller, updated_at, rollout) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (component) DO UPDATE SET digest = excluded.digest, weight = excluded.weight, \
             controller = excluded.controller, updated_at = excluded.updated_at, rollout = excluded.rollout",
        )
        .bind(&row.component)
        .bind(&row.digest)
        .bind(row.weight)
        .bind(&row.controller)
        .bind(row.updated_at)
        .bind(&row.rollout)
        .execute(&mut *tx)
        .await?;
        self.notify_deployments(&mut tx, &row.component).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes the canary's share on every replica; false without a canary.
    pub async fn set_canary_weight(&self, component: &str, weight: u8) -> Result<bool, DbError> {
        let _gate = self.write_permit().await?;
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE canaries SET weight = $1, updated_at = $2 WHERE component = $3")
            .bind(i64::from(weight))
            .bind(self.now_millis())
            .bind(component)
            .execute(&mut *tx)
            .await?;
        self.notify_deployments(&mut tx, component).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ends `component`'s canary on every replica.
    pub async fn clear_canary(&self, component: &str) -> Result<(), DbError> {
        let _gate = self.write_permit().await?;
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM canaries WHERE component = $1").bind(component).execute(&mut *tx).await?;
        self.notify_deployments(&mut tx, component).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records where `component`'s rollout stands.
    pub async fn save_rollout(&self, component: &str, rollout: &str) -> Result<(), DbError> {
        let _gate = self.write_permit().await?;
        sqlx::query("UPDATE canaries SET rollout = $1, updated_at = $2 WHERE component = $3")
            .bind(rollout)
            .bind(self.now_millis())
            .bind(component)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Makes `controller` the controller of `component`'s canary, if
    /// `previous` still is; false when another replica was quicker.
    pub async fn adopt_canary(&self, component: &str, previous: &str, controller: &str) -> Result<bool, DbError> {
        let _gate = self.write_permit().await?;
        let done = sqlx::query(
            "UPDATE canaries SET controller = $1, updated_at = $2 WHERE component = $3 AND controller = $4",
        )
        .bind(controller)
        .bind(self.now_millis())
        .bind(component)
        .bind(previous)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every canary, by component.
    pub async fn canaries(&self) -> Result<Vec<CanaryRow>, DbError> {
        let rows = sqlx::query_as("SELECT component, digest, weight, controller, updated_at, rollout FROM canaries")
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// On PostgreSQL, tells every listening replica, when `tx` commits,
    /// that `component`'s versions changed.
    pub(crate) async fn notify_deployments(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        component: &str,
    ) -> Result<(), DbError> {
        if self.backend == Backend::Postgres {
            sqlx::query(NOTIFY).bind(DEPLOYMENTS_CHANNEL).bind(component).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Tells every listening replica that new outbox messages committed;
    /// nothing on SQLite, where one process delivers.
    pub async fn announce_outbox(&self, replica: &str) -> Result<(), DbError> {
        if self.backend == Backend::Postgres {
            sqlx::query(NOTIFY).bind(OUTBOX_CHANNEL).bind(replica).execute(self.pool()).await?;
        }
        Ok(())
    }
}
