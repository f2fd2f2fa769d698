//! Replicas that act as one on a shared database.
//!
//! A deploy, rollback or promotion is stored once, in the deployment's own
//! transaction, and on PostgreSQL that transaction also notifies the
//! `switchyard_deployments` channel. Every replica listens ([`listen`]); a
//! notification makes it reconcile at once: compare each component's
//! serving version with its latest deployment, and swap in the stored bytes
//! (checked against their digest, compiled and smoke-instantiated here) as
//! a local deploy does. A periodic reconcile catches what a notification
//! missed (a reconnect, a restart), and is the only path on SQLite.
//!
//! Membership is the `replicas` table: each replica rewrites its row every
//! heartbeat with what it serves and what it could not converge on; any
//! replica can list the cluster from it ([`members`]). A replica that stops
//! heart-beating is shown as gone, then dropped.
//!
//! A commit with new outbox messages is announced on `switchyard_outbox`,
//! coalesced, so the dispatchers of every replica wake, not only its own.
//!
//! A replica whose config names other components or worlds than a live
//! replica's refuses to start ([`check_app`]): the fleet serves one app.

mod listen;
pub mod members;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;
use crate::config::{ClusterConfig, Config};
use crate::db::audit::AuditEntry;
use crate::db::replicas::ReplicaRow;
use crate::db::{Backend, Database, DbError};
use crate::runtime::{Divergence, Reconciled, Runtime, SharedFigures};
use crate::telemetry::metrics::{CLUSTER_CONVERGED, CLUSTER_FANOUT, CLUSTER_REPLICAS, ROLLOUT_DECISIONS};
use members::{Liveness, Member, Served};

/// Outbox announcements are sent at most this often; commits in between
/// share one.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);

/// This replica's view of the cluster: `GET /admin/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The replica that answered.
    pub replica: String,
    /// Each component's active version (short), by the deploy history.
    pub active: BTreeMap<String, String>,
    pub replicas: Vec<Member>,
}

/// Whether this replica serves what the deploy history names.
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    pub replica: String,
    pub converged: bool,
    /// Components serving another version: name, wanted, serving.
    pub behind: Vec<(String, String, String)>,
    /// What the last reconcile could not swap in, and why.
    pub diverged: Vec<Divergence>,
}

pub struct Cluster {
    id: String,
    address: String,
    started_at: i64,
    /// Component name → world, as this replica's config has them.
    components: BTreeMap<String, String>,
    settings: ClusterConfig,
    database_url: String,
    runtime: Arc<Runtime>,
    db: Database,
    clock: SharedClock,
    /// What the last reconcile left unconverged.
    diverged: Mutex<Vec<Divergence>>,
    reconcile_now: Notify,
}

/// The running tasks of [`Cluster::start`].
pub struct ClusterHandle {
    cluster: Arc<Cluster>,
    tasks: Vec<JoinHandle<()>>,
}

/// Component name → world of a config.
fn app_of(config: &Config) -> BTreeMap<String, String> {
    config.components.iter().map(|(name, c)| (name.clone(), c.world.as_str().to_owned())).collect()
}

/// Refuses to join a cluster whose live replicas configure another app
/// than `config`: another set of components, or other worlds. A replica's
/// own earlier row (same id, restarted) does not count.
pub async fn check_app(config: &Config, id: &str, db: &Database, now: i64) -> anyhow::Result<()> {
    let mine = app_of(config);
    let gone_after = i64::try_from(config.cluster.gone_after_ms).unwrap_or(i64::MAX);
    for row in db.replicas().await? {
        if row.id == id || now.saturating_sub(row.heartbeat_at) > gone_after {
            continue;
        }
        let theirs: BTreeMap<String, String> = serde_json::from_str(&row.components).unwrap_or_default();
        let differences = members::differences(&mine, &theirs);
        if !differences.is_empty() {
            bail!(
                "this replica's config differs from that of live replica {} ({}): {}; every replica sharing a \
                 database must configure the same components",
                row.id,
                row.address,
                differences.join("; ")
            );
        }
    }
    Ok(())
}

/// This replica's id: the configured one, else a random one.
pub fn replica_id(config: &ClusterConfig) -> String {
    config.replica_id.clone().unwrap_or_else(|| format!("replica-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
}

impl Cluster {
    pub fn new(config: &Config, id: String, runtime: Arc<Runtime>, db: Database, clock: SharedClock) -> Cluster {
        let address = config.cluster.advertise.clone().unwrap_or_else(|| config.server.listen.to_string());
        let metrics = runtime.metrics();
        for state in ["live", "gone"] {
            metrics.gauge(CLUSTER_REPLICAS, &[("state", state)]).set(0.0);
        }
        for result in ["swapped", "failed"] {
            metrics.counter(CLUSTER_FANOUT, &[("result", result)]).increment(0);
        }
        metrics.gauge(CLUSTER_CONVERGED, &[]).set(1.0);
        Cluster {
            id,
            address,
            started_at: clock.now_millis(),
            components: app_of(config),
            settings: config.cluster.clone(),
            database_url: config.database.url.clone(),
            runtime,
            db,
            clock,
            diverged: Mutex::new(Vec::new()),
            reconcile_now: Notify::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Heart-beats, reconciles, and on PostgreSQL listens and announces,
    /// until the handle is stopped.
    pub fn start(self: &Arc<Self>) -> ClusterHandle {
        let mut tasks = vec![tokio::spawn(self.clone().heartbeats()), tokio::spawn(self.clone().reconciles())];
        if self.db.backend() == Backend::Postgres {
            tasks.push(tokio::spawn(listen::run(self.clone())));
            tasks.push(tokio::spawn(self.clone().announcements()));
        }
        ClusterHandle { cluster: self.clone(), tasks }
    }

    /// Makes the reconcile task run now instead of at its next period.
    fn reconcile_soon(&self) {
        self.reconcile_now.notify_one();
    }

    /// Brings this replica to the deploy history's versions once.
    pub async fn reconcile(&self) -> Result<(), DbError> {
        self.end_orphaned_canaries().await?;
        let Reconciled { swapped, diverged } = self.runtime.reconcile(&self.id).await?;
        let metrics = self.runtime.metrics();
        metrics.counter(CLUSTER_FANOUT, &[("result", "swapped")]).increment(swapped.len() as u64);
        metrics.counter(CLUSTER_FANOUT, &[("result", "failed")]).increment(diverged.len() as u64);
        metrics.gauge(CLUSTER_CONVERGED, &[]).set(if diverged.is_empty() { 1.0 } else { 0.0 });
        *self.diverged.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = diverged;
        Ok(())
    }

    /// Ends the canaries whose controller stopped heart-beating and that no
    /// other replica took over (their rows unchanged for twice
    /// `gone_after_ms`): nobody judges them, so the stable version serves
    /// everything. The end is audited as an abort.
    async fn end_orphaned_canaries(&self) -> Result<(), DbError> {
        let canaries = self.db.canaries().await?;
        if canaries.iter().all(|c| c.controller == self.id) {
            return Ok(());
        }
        let view = self.view().await?;
        for canary in canaries.iter().filter(|c| c.controller != self.id) {
            let live = view.replicas.iter().any(|m| m.id == canary.controller && m.state == Liveness::Live);
            let grace = i64::try_from(self.settings.gone_after_ms).unwrap_or(i64::MAX).saturating_mul(2);
            if live || self.clock.now_millis().saturating_sub(canary.updated_at) < grace {
                continue;
            }
            tracing::warn!(
                component = canary.component,
                controller = canary.controller,
                "the replica judging this canary stopped heart-beating and nobody took it over; the stable version serves"
            );
            self.db.clear_canary(&canary.component).await?;
            let entry = AuditEntry {
                actor: self.id.clone(),
                action: "rollout".to_owned(),
                component: Some(canary.component.clone()),
                version: Some(canary.digest[..12.min(canary.digest.len())].to_owned()),
                result: "abort".to_owned(),
                reason: Some(format!("controller_gone: replica {} stopped heart-beating", canary.controller)),
            };
            self.db.audit(&entry).await?;
            self.runtime
                .metrics()
                .counter(
                    ROLLOUT_DECISIONS,
                    &[("component", &canary.component), ("decision", "abort"), ("reason", "controller_gone")],
                )
                .increment(1);
        }
        Ok(())
    }

    async fn reconciles(self: Arc<Self>) {
        let period = Duration::from_millis(self.settings.reconcile_ms);
        loop {
            tokio::select! {
                () = self.reconcile_now.notified() => {}
                () = tokio::time::sleep(period) => {}
            }
            if let Err(err) = self.reconcile().await {
                tracing::warn!(error = %err, "cannot compare the served versions with the deploy history");
            }
        }
    }

    /// What this replica serves, as its heartbeat records it.
    fn serving(&self) -> BTreeMap<String, Served> {
        self.runtime
            .registry()
            .list()
            .into_iter()
            .map(|c| {
                let breaker = self.runtime.breaker(&c.name).map_or("closed", |b| b.state().as_str()).to_owned();
                let canary = c.canary.map(|canary| (canary.version, canary.weight));
                (c.name, Served { version: c.version, canary, breaker })
            })
            .collect()
    }

    /// What the versions of each component with a canary did here, for the
    /// controller judging it on another replica.
    fn canary_figures(&self) -> BTreeMap<String, SharedFigures> {
        self.runtime
            .registry()
            .list()
            .into_iter()
            .filter(|c| c.canary.is_some())
            .filter_map(|c| Some((c.name.clone(), self.runtime.figures(&c.name)?.shared())))
            .collect()
    }

    /// Writes this replica's row; drops replicas silent for too long.
    pub async fn heartbeat(&self) -> Result<(), DbError> {
        let now = self.clock.now_millis();
        let diverged = self.diverged.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let row = ReplicaRow {
            id: self.id.clone(),
            address: self.address.clone(),
            started_at: self.started_at,
            heartbeat_at: now,
            components: serde_json::to_string(&self.components).unwrap_or_default(),
            serving: serde_json::to_string(&self.serving()).unwrap_or_default(),
            diverged: serde_json::to_string(&diverged).unwrap_or_default(),
            figures: serde_json::to_string(&self.canary_figures()).unwrap_or_default(),
        };
        self.db.heartbeat(&row).await?;
        let drop_after = i64::try_from(self.settings.drop_after_ms).unwrap_or(i64::MAX);
        let dropped = self.db.drop_silent_replicas(now.saturating_sub(drop_after)).await?;
        if dropped > 0 {
            tracing::info!(dropped, "dropped replicas that stopped heart-beating");
        }
        Ok(())
    }

    async fn heartbeats(self: Arc<Self>) {
        let period = Duration::from_millis(self.settings.heartbeat_ms);
        loop {
            match self.heartbeat().await {
                Ok(()) => self.count_members().await,
                Err(err) => tracing::warn!(error = %err, "cannot record this replica's heartbeat"),
            }
            tokio::time::sleep(period).await;
        }
    }

    async fn count_members(&self) {
        let Ok(view) = self.view().await else { return };
        let metrics = self.runtime.metrics();
        for (state, label) in [(Liveness::Live, "live"), (Liveness::Gone, "gone")] {
            let count = view.replicas.iter().filter(|m| m.state == state).count();
            metrics.gauge(CLUSTER_REPLICAS, &[("state", label)]).set(count as f64);
        }
    }

    /// Tells the other replicas' dispatchers about messages committed here.
    async fn announcements(self: Arc<Self>) {
        let mut changes = self.db.outbox_changes();
        while changes.changed().await.is_ok() {
            if self.db.take_outbox_committed()
                && let Err(err) = self.db.announce_outbox(&self.id).await
            {
                tracing::warn!(error = %err, "cannot announce new outbox messages to the other replicas");
            }
            tokio::time::sleep(ANNOUNCE_EVERY).await;
        }
    }

    /// Every replica in the table, read against the active versions.
    pub async fn view(&self) -> Result<ClusterView, DbError> {
        let rows = self.db.replicas().await?;
        let active = self.db.active_versions().await?;
        let replicas = members::members(&rows, &active, self.clock.now_millis(), self.settings.gone_after_ms);
        let active =
            active.into_iter().map(|(name, digest)| (name, digest[..12.min(digest.len())].to_owned())).collect();
        Ok(ClusterView { replica: self.id.clone(), active, replicas })
    }

    /// Whether this replica serves every component's active version now.
    pub async fn convergence(&self) -> Result<Convergence, DbError> {
        let active = self.db.active_versions().await?;
        let behind = members::unconverged(&self.serving(), &active);
        let diverged = self.diverged.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Ok(Convergence { replica: self.id.clone(), converged: behind.is_empty(), behind, diverged })
    }
}

impl ClusterHandle {
    /// Stops the tasks and removes this replica's row: it left, it did not die.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(err) = self.cluster.db.leave(&self.cluster.id).await {
            tracing::warn!(error = %err, "cannot remove this replica from the replicas table");
        }
    }
}
