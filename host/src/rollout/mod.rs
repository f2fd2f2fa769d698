//! Progressive delivery: canary deploys that the meters promote or roll
//! back by themselves, and a watch after every plain deploy.
//!
//! A canary deploy puts the new version beside the stable one with a share
//! of the invocations (sticky per `Idempotency-Key` or message id; see
//! `runtime::registry`). Each step of `[components.NAME.rollout] steps`
//! lasts `step_ms` on the injected clock; at its end the two versions'
//! figures over that step are judged ([`judge`]): a pass moves to the next
//! share, and passing the step before 100 % promotes the canary. A failure
//! rolls it back at once, at any tick, not only at a step's end. A step with
//! too few invocations is extended up to `max_extensions` times, then the
//! rollout is aborted as inconclusive. After a deploy without a canary the
//! new version is watched for `watch_ms`, judged against the previous
//! version's figures, and rolled back to it if it is worse. At a step's
//! end a canary is also rolled back when the stable version beside it did
//! worse than before the rollout (`stable_error_rate`, `stable_p99`): a
//! version that hogs what both share hurts both alike.
//!
//! Every decision is an audit row with the figures that decided it, a
//! `component_rollout_decisions_total` increment and a log line. A rollout
//! does not survive a restart: a canary is recorded as deployed only when it
//! is promoted, so a restarted host serves the stable version, and
//! [`Rollouts::recover`] writes the unfinished rollout's `abort` (reason
//! `restart`) to the audit log.

pub mod judge;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::config::{Config, RolloutConfig};
use crate::db::Database;
use crate::db::audit::AuditEntry;
use crate::db::locks::RolloutLocks;
use crate::runtime::{DeployError, DeployReport, Figures, FiguresWire, Runtime, SharedFigures, VersionFigures};
use crate::telemetry::metrics::{Metrics, ROLLOUT_DECISIONS, ROLLOUT_WEIGHT};
use judge::{Verdict, harms_stable, judge};

/// How often running rollouts are looked at.
pub const TICK: Duration = Duration::from_millis(250);
/// The actor of decisions the controller takes itself.
const CONTROLLER: &str = "rollout";

/// What a rollout is doing, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A canary serves its share beside the stable version.
    Canary,
    /// A plain deploy's new version is watched against the previous one.
    Watching,
    Promoted,
    RolledBack,
    Aborted,
}

impl State {
    fn running(self) -> bool {
        matches!(self, State::Canary | State::Watching)
    }
}

/// A decision and why; the labels of `component_rollout_decisions_total`.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// advance | promote | rollback | abort
    pub decision: &'static str,
    /// passed | error_rate | fuel | memory | p50 | p99 | stable_error_rate |
    /// stable_p99 | inconclusive | manual |
    /// superseded | restart | watch_passed | watch_inconclusive
    pub reason: &'static str,
    /// The figures that decided it, as a person reads them.
    pub detail: String,
    /// When, in milliseconds on the host's clock.
    pub at: i64,
}

/// A rollout as `GET /admin/components/{name}` and `/health` show it.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutStatus {
    pub state: State,
    /// The version being rolled out.
    pub version: String,
    /// The version it is judged against (the stable one, or the previous).
    pub stable: String,
    /// The new version's share of invocations, in %.
    pub weight: u8,
    /// Canary steps (shares in %) and the one running, from 1.
    pub steps: Vec<u8>,
    pub step: usize,
    /// Figures of the current step (or watch) so far.
    pub figures: StepFigures,
    pub last_decision: Option<Decision>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepFigures {
    pub stable: String,
    pub canary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("a rollout of {component} is running")]
    Running { component: String, status: Box<RolloutStatus> },
    #[error("no rollout of {0} is running")]
    NotRunning(String),
    #[error("another replica's controller runs the rollout of {0}; ask it, or the cluster")]
    Elsewhere(String),
}

/// Where a canary rollout stands, kept in its `canaries` row so another
/// replica can take it over. The step in progress starts again there.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    version: String,
    stable: String,
    weight: u8,
    steps: Vec<u8>,
    step: usize,
    extensions: u32,
    stable_before: FiguresWire,
}

struct Rollout {
    status: RolloutStatus,
    /// A watch judges against these (the previous version's life); a canary
    /// step against the stable version's figures since the step began.
    baseline: Figures,
    /// The new version's figures when the step (or watch) began.
    start: Figures,
    /// A canary's stable version until the rollout began: what it is like
    /// with no canary beside it.
    stable_before: Figures,
    step_started_at: i64,
    extensions: u32,
    config: RolloutConfig,
}

/// Every component's rollout: the running ones and how the last one ended.
pub struct Rollouts {
    runtime: Arc<Runtime>,
    db: Database,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    configs: HashMap<String, RolloutConfig>,
    /// One async lock: a tick, a deploy and a manual decision never
    /// interleave for the same component.
    rollouts: tokio::sync::Mutex<HashMap<String, Rollout>>,
    /// This replica's id, and how long another may be silent and still
    /// count: the figures of every live replica's versions are judged.
    replica: String,
    gone_after_ms: i64,
    /// The cluster-wide locks of the canary rollouts judged here.
    locks: RolloutLocks,
}

impl Rollouts {
    /// `replica` is this replica's id: canaries it deploys name it as their
    /// controller.
    pub fn new(config: &Config, runtime: Arc<Runtime>, db: Database, clock: SharedClock, replica: String) -> Rollouts {
        let configs = config.components.iter().map(|(name, c)| (name.clone(), c.rollout.clone())).collect();
        let metrics = runtime.metrics().clone();
        Rollouts {
            runtime,
            db,
            clock,
            metrics,
            configs,
            locks: RolloutLocks::new(&config.database.url, &replica),
            replica,
            gone_after_ms: i64::try_from(config.cluster.gone_after_ms).unwrap_or(i64::MAX),
            rollouts: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Deploys `bytes` as `name`: as a canary with `canary` % of the
    /// invocations, or at once (then watched). A plain deploy during a
    /// rollout aborts it first; a canary during one is refused.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Bytes,
        actor: &str,
        canary: Option<u8>,
    ) -> Result<DeployReport, RolloutError> {
        let mut rollouts = self.rollouts.lock().await;
        if let Some(weight) = canary {
            if let Some(running) = rollouts.get(name).filter(|r| r.status.state.running()) {
                return Err(RolloutError::Running {
                    component: name.to_owned(),
                    status: Box::new(running.status.clone()),
                });
            }
            // One controller per rollout in the whole cluster: whoever
            // holds the component's lock.
            if !self.locks.try_lock(name).await.map_err(DeployError::Storage)? {
                return Err(RolloutError::Elsewhere(name.to_owned()));
            }
            let report = match self.runtime.deploy_canary(name, bytes, actor, weight, &self.replica).await {
                Ok(report) => report,
                Err(err) => {
                    self.locks.unlock(name).await;
                    return Err(err.into());
                }
            };
            let config = self.config(name);
            let steps: Vec<u8> =
                std::iter::once(weight).chain(config.steps.iter().copied().filter(|s| *s > weight)).collect();
            let stable = report.previous.clone().unwrap_or_default();
            let rollout = self.begin(name, State::Canary, &report.version, &stable, weight, steps, config).await;
            self.weights(name, &rollout.status);
            self.save(name, &rollout).await;
            rollouts.insert(name.to_owned(), rollout);
            return Ok(report);
        }
        self.supersede(&mut rollouts, name, actor).await;
        let report = self.runtime.deploy(name, bytes, actor).await?;
        let config = self.config(name);
        if let (Some(previous), Some(baseline)) = (&report.previous, &report.previous_figures)
            && config.watch_ms > 0
            && *previous != report.version
        {
            let mut rollout =
                self.begin(name, State::Watching, &report.version, previous, 100, vec![100], config).await;
            rollout.baseline = baseline.clone();
            rollouts.insert(name.to_owned(), rollout);
        }
        Ok(report)
    }

    /// Rolls `name` back (see `Runtime::rollback`), aborting a running
    /// rollout first.
    pub async fn rollback(&self, name: &str, version: Option<&str>, actor: &str) -> Result<DeployReport, RolloutError> {
        let mut rollouts = self.rollouts.lock().await;
        self.supersede(&mut rollouts, name, actor).await;
        Ok(self.runtime.rollback(name, version, actor).await?)
    }

    /// Promotes the running canary now (or ends a watch, keeping the new version).
    pub async fn promote(&self, name: &str, actor: &str) -> Result<RolloutStatus, RolloutError> {
        let mut rollouts = self.rollouts.lock().await;
        let rollout = running(&mut rollouts, name)?;
        if rollout.status.state == State::Canary {
            self.runtime.promote_canary(name, actor).await?;
        }
        self.decide(name, rollout, State::Promoted, "promote", "manual", actor).await;
        Ok(rollout.status.clone())
    }

    /// Aborts the running canary (the stable version serves everything), or
    /// ends a watch and keeps the new version.
    pub async fn abort(&self, name: &str, actor: &str) -> Result<RolloutStatus, RolloutError> {
        let mut rollouts = self.rollouts.lock().await;
        let rollout = running(&mut rollouts, name)?;
        if rollout.status.state == State::Canary {
            self.runtime.drop_canary(name).await?;
        }
        self.decide(name, rollout, State::Aborted, "abort", "manual", actor).await;
        Ok(rollout.status.clone())
    }

    /// The running or last rollout of `name`, with its current figures.
    pub async fn status(&self, name: &str) -> Option<RolloutStatus> {
        let mut rollouts = self.rollouts.lock().await;
        let rollout = rollouts.get_mut(name)?;
        if rollout.status.state.running()
            && let Some((stable, canary)) = self.windows(name, rollout).await
        {
            rollout.status.figures = StepFigures { stable: stable.summary(), canary: canary.summary() };
        }
        Some(rollout.status.clone())
    }

    /// Every component's rollout state, for `/health`.
    pub async fn states(&self) -> HashMap<String, (State, u8)> {
        let rollouts = self.rollouts.lock().await;
        rollouts.iter().map(|(name, r)| (name.clone(), (r.status.state, r.status.weight))).collect()
    }

    /// Looks at every running rollout once: rolls back a failing version,
    /// and at a step's end advances, promotes, extends or aborts.
    pub async fn tick(&self) {
        let now = self.clock.now_millis();
        let mut rollouts = self.rollouts.lock().await;
        self.take_over(&mut rollouts, now).await;
        for (name, rollout) in rollouts.iter_mut().filter(|(_, r)| r.status.state.running()) {
            let Some((stable, candidate)) = self.windows(name, rollout).await else {
                self.decide(name, rollout, State::Aborted, "abort", "superseded", CONTROLLER).await;
                continue;
            };
            rollout.status.figures = StepFigures { stable: stable.summary(), canary: candidate.summary() };
            let step_over = now >= rollout.step_started_at + rollout.config.step_ms as i64;
            let mut verdict = judge(&stable, &candidate, &rollout.config, step_over);
            // Harm to the stable version is judged on a whole step.
            if rollout.status.state == State::Canary
                && step_over
                && verdict == Verdict::Pass
                && let Some(reason) = harms_stable(&rollout.stable_before, &stable, &rollout.config)
            {
                verdict = Verdict::Fail(reason);
            }
            match (rollout.status.state, verdict) {
                (State::Canary, Verdict::Fail(reason)) => {
                    if let Err(err) = self.runtime.drop_canary(name).await {
                        tracing::error!(component = name, error = %err, "cannot roll the canary back");
                        continue;
                    }
                    self.decide(name, rollout, State::RolledBack, "rollback", reason.as_str(), CONTROLLER).await;
                }
                (State::Watching, Verdict::Fail(reason)) => {
                    let previous = rollout.status.stable.clone();
                    if let Err(err) = self.runtime.rollback(name, Some(&previous), CONTROLLER).await {
                        tracing::error!(component = name, error = %err, "cannot roll back to the previous version");
                        continue;
                    }
                    // Its faults opened the breaker, if anything did; the
                    // version that serves now has not failed.
                    if let Some(breaker) = self.runtime.breaker(name) {
                        breaker.reset();
                    }
                    self.decide(name, rollout, State::RolledBack, "rollback", reason.as_str(), CONTROLLER).await;
                }
                (_, _) if !step_over => {}
                (State::Watching, verdict) => {
                    let reason = if verdict == Verdict::Pass { "watch_passed" } else { "watch_inconclusive" };
                    self.decide(name, rollout, State::Promoted, "promote", reason, CONTROLLER).await;
                }
                (_, Verdict::Pass) => self.advance(name, rollout, now).await,
                (_, _) if rollout.extensions < rollout.config.max_extensions => {
                    rollout.extensions += 1;
                    rollout.step_started_at = now;
                    self.save(name, rollout).await;
                    tracing::info!(
                        component = name,
                        step = rollout.status.step,
                        extensions = rollout.extensions,
                        "rollout step extended: too few invocations"
                    );
                }
                (_, _) => {
                    if let Err(err) = self.runtime.drop_canary(name).await {
                        tracing::error!(component = name, error = %err, "cannot abort the canary");
                        continue;
                    }
                    self.decide(name, rollout, State::Aborted, "abort", "inconclusive", CONTROLLER).await;
                }
            }
        }
    }

    /// Gives up the rollouts whose lock another replica holds now, and takes
    /// over each canary whose controller's lock is free (it died): the
    /// canary's share stays, its current step starts again here, and the
    /// audit log records the takeover.
    async fn take_over(&self, rollouts: &mut HashMap<String, Rollout>, now: i64) {
        for name in self.locks.lost().await {
            tracing::warn!(component = name, "another replica controls this rollout now; no longer judging it here");
            rollouts.remove(&name);
        }
        let Ok(canaries) = self.db.canaries().await else { return };
        for row in canaries.into_iter().filter(|row| row.controller != self.replica) {
            let name = row.component.as_str();
            let Ok(record) = serde_json::from_str::<Record>(&row.rollout) else { continue };
            // Only once this replica serves that canary (its reconcile
            // added it), or the takeover would judge nothing.
            let serves = self.runtime.figures(name).and_then(|f| f.canary).is_some_and(|c| c.0 == record.version);
            if !serves || !matches!(self.locks.try_lock(name).await, Ok(true)) {
                continue;
            }
            if !self.db.adopt_canary(name, &row.controller, &self.replica).await.unwrap_or(false) {
                self.locks.unlock(name).await;
                continue;
            }
            let config = self.config(name);
            let figures = self.figures(name).await;
            let (baseline, start) = match figures {
                Some(f) => (f.stable.1, f.canary.map(|c| c.1).unwrap_or_default()),
                None => Default::default(),
            };
            let status = RolloutStatus {
                state: State::Canary,
                version: record.version.clone(),
                stable: record.stable.clone(),
                weight: record.weight,
                steps: record.steps.clone(),
                step: record.step,
                figures: StepFigures { stable: String::new(), canary: String::new() },
                last_decision: None,
            };
            let rollout = Rollout {
                status,
                baseline,
                start,
                stable_before: Figures::from_wire(&record.stable_before).unwrap_or_default(),
                step_started_at: now,
                extensions: record.extensions,
                config,
            };
            let detail = format!(
                "controller_gone: replica {} stopped; step {} ({} %) starts again on replica {}",
                row.controller, record.step, record.weight, self.replica
            );
            tracing::warn!(component = name, version = record.version, detail, "rollout taken over");
            self.audit(name, Some(record.version.clone()), "adopt", detail, CONTROLLER).await;
            self.weights(name, &rollout.status);
            rollouts.insert(name.to_owned(), rollout);
        }
    }

    /// Records where a canary rollout stands, for a takeover.
    async fn save(&self, name: &str, rollout: &Rollout) {
        if rollout.status.state != State::Canary {
            return;
        }
        let record = Record {
            version: rollout.status.version.clone(),
            stable: rollout.status.stable.clone(),
            weight: rollout.status.weight,
            steps: rollout.status.steps.clone(),
            step: rollout.status.step,
            extensions: rollout.extensions,
            stable_before: rollout.stable_before.to_wire(),
        };
        let Ok(text) = serde_json::to_string(&record) else { return };
        if let Err(err) = self.db.save_rollout(name, &text).await {
            tracing::warn!(component = name, error = %err, "cannot record where the rollout stands");
        }
    }

    /// Ticks every [`TICK`] until the task is aborted.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let rollouts = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                rollouts.tick().await;
            }
        })
    }

    /// Audits the abort of rollouts a previous run left unfinished: their
    /// canaries were never recorded as deployed, so the stable versions
    /// serve.
    ///
    /// A canary another live replica controls (it holds the lock) is
    /// that replica's, and not cut off; one nobody controls is ended here.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let mut elsewhere = std::collections::HashSet::new();
        for canary in self.db.canaries().await? {
            if self.locks.try_lock(&canary.component).await? {
                self.db.clear_canary(&canary.component).await?;
                self.locks.unlock(&canary.component).await;
            } else {
                elsewhere.insert(canary.component);
            }
        }
        let rows = self.db.audit_rows().await?;
        let mut last: HashMap<String, &AuditEntry> = HashMap::new();
        for row in rows.iter().filter(|row| matches!(row.entry.action.as_str(), "canary" | "rollout")) {
            if let Some(component) = &row.entry.component {
                last.insert(component.clone(), &row.entry);
            }
        }
        for (component, entry) in last.into_iter().filter(|(component, _)| !elsewhere.contains(component)) {
            let started = entry.action == "canary" && entry.result == "accepted";
            if started || (entry.action == "rollout" && matches!(entry.result.as_str(), "advance" | "adopt")) {
                tracing::warn!(
                    component,
                    version = entry.version,
                    "a rollout was cut off by a restart; the stable version serves"
                );
                self.metrics
                    .counter(
                        ROLLOUT_DECISIONS,
                        &[("component", &component), ("decision", "abort"), ("reason", "restart")],
                    )
                    .increment(1);
                self.audit(
                    &component,
                    entry.version.clone(),
                    "abort",
                    "restart: the stable version serves".to_owned(),
                    CONTROLLER,
                )
                .await;
            }
        }
        Ok(())
    }

    fn config(&self, name: &str) -> RolloutConfig {
        self.configs.get(name).cloned().unwrap_or_default()
    }

    #[allow(clippy::too_many_arguments)]
    async fn begin(
        &self,
        name: &str,
        state: State,
        version: &str,
        stable: &str,
        weight: u8,
        steps: Vec<u8>,
        config: RolloutConfig,
    ) -> Rollout {
        let now = self.clock.now_millis();
        let figures = self.figures(name).await;
        let (baseline, start) = match &figures {
            Some(f) => (f.stable.1.clone(), f.canary.as_ref().map(|c| c.1.clone()).unwrap_or_default()),
            None => Default::default(),
        };
        // A watched version is the stable one now; it starts from nothing.
        let start = if state == State::Watching { Figures::default() } else { start };
        let status = RolloutStatus {
            state,
            version: version.to_owned(),
            stable: stable.to_owned(),
            weight,
            steps,
            step: 1,
            figures: StepFigures { stable: String::new(), canary: String::new() },
            last_decision: None,
        };
        Rollout {
            status,
            stable_before: baseline.clone(),
            baseline,
            start,
            step_started_at: now,
            extensions: 0,
            config,
        }
    }

    /// The two versions' figures over the current step (or watch); `None`
    /// when the versions in service are no longer the rollout's.
    async fn windows(&self, name: &str, rollout: &Rollout) -> Option<(Figures, Figures)> {
        let figures = self.figures(name).await?;
        match rollout.status.state {
            State::Canary => {
                let (version, canary, _) = figures.canary?;
                (version == rollout.status.version)
                    .then(|| (figures.stable.1.since(&rollout.baseline), canary.since(&rollout.start)))
            }
            _ => (figures.stable.0 == rollout.status.version)
                .then(|| (rollout.baseline.clone(), figures.stable.1.since(&rollout.start))),
        }
    }

    /// What `name`'s versions did on every live replica: this one's figures
    /// now, plus each other's as its last heartbeat carried them.
    async fn figures(&self, name: &str) -> Option<VersionFigures> {
        let mut figures = self.runtime.figures(name)?;
        let rows = match self.db.replicas().await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(component = name, error = %err, "judging on this replica's figures alone");
                return Some(figures);
            }
        };
        let now = self.clock.now_millis();
        for row in rows.iter().filter(|row| row.id != self.replica && now - row.heartbeat_at <= self.gone_after_ms) {
            if let Ok(mut peers) = serde_json::from_str::<HashMap<String, SharedFigures>>(&row.figures)
                && let Some(peer) = peers.remove(name)
            {
                figures.add(&peer);
            }
        }
        Some(figures)
    }

    /// The next step, or promotion after the step before 100 %.
    async fn advance(&self, name: &str, rollout: &mut Rollout, now: i64) {
        let next = rollout.status.steps.get(rollout.status.step).copied().unwrap_or(100);
        if next >= 100 {
            if let Err(err) = self.runtime.promote_canary(name, CONTROLLER).await {
                tracing::error!(component = name, error = %err, "cannot promote the canary");
                return;
            }
            self.decide(name, rollout, State::Promoted, "promote", "passed", CONTROLLER).await;
            return;
        }
        if let Err(err) = self.runtime.set_canary_weight(name, next).await {
            tracing::error!(component = name, error = %err, "cannot change the canary's share");
            return;
        }
        self.decide(name, rollout, State::Canary, "advance", "passed", CONTROLLER).await;
        rollout.status.weight = next;
        rollout.status.step += 1;
        rollout.step_started_at = now;
        rollout.extensions = 0;
        if let Some(figures) = self.figures(name).await {
            rollout.baseline = figures.stable.1;
            rollout.start = figures.canary.map(|c| c.1).unwrap_or_default();
        }
        self.save(name, rollout).await;
        self.weights(name, &rollout.status);
    }

    /// Records a decision: the rollout's state, an audit row with the
    /// figures, a metric and a log line.
    async fn decide(
        &self,
        name: &str,
        rollout: &mut Rollout,
        state: State,
        decision: &'static str,
        reason: &'static str,
        actor: &str,
    ) {
        let detail = match self.windows(name, rollout).await {
            Some((stable, candidate)) => {
                format!(
                    "step {} ({} %): new {}; stable {}",
                    rollout.status.step,
                    rollout.status.weight,
                    candidate.summary(),
                    stable.summary()
                )
            }
            None => {
                format!("step {} ({} %): {}", rollout.status.step, rollout.status.weight, rollout.status.figures.canary)
            }
        };
        let was_canary = rollout.status.state == State::Canary;
        rollout.status.state = state;
        if was_canary && !state.running() {
            self.locks.unlock(name).await;
        }
        if !state.running() {
            rollout.status.weight = if state == State::Promoted { 100 } else { 0 };
        }
        self.metrics
            .counter(ROLLOUT_DECISIONS, &[("component", name), ("decision", decision), ("reason", reason)])
            .increment(1);
        tracing::info!(
            component = name,
            version = rollout.status.version,
            decision,
            reason,
            detail,
            actor,
            "rollout decision"
        );
        self.audit(name, Some(rollout.status.version.clone()), decision, format!("{reason}: {detail}"), actor).await;
        rollout.status.last_decision = Some(Decision { decision, reason, detail, at: self.clock.now_millis() });
        self.weights(name, &rollout.status);
    }

    /// A running canary of `name` is aborted, because something replaces
    /// it; a watch simply ends (the deploy that replaces it is audited).
    async fn supersede(&self, rollouts: &mut HashMap<String, Rollout>, name: &str, actor: &str) {
        let Some(rollout) = rollouts.get_mut(name).filter(|r| r.status.state.running()) else { return };
        if rollout.status.state == State::Watching {
            rollouts.remove(name);
            return;
        }
        if let Err(err) = self.runtime.drop_canary(name).await {
            tracing::error!(component = name, error = %err, "cannot drop the canary");
        }
        self.decide(name, rollout, State::Aborted, "abort", "superseded", actor).await;
    }

    /// `component_rollout_weight` of the two versions.
    fn weights(&self, name: &str, status: &RolloutStatus) {
        let weight = f64::from(status.weight);
        self.metrics.gauge(ROLLOUT_WEIGHT, &[("component", name), ("version", &status.version)]).set(weight);
        if status.stable != status.version {
            self.metrics.gauge(ROLLOUT_WEIGHT, &[("component", name), ("version", &status.stable)]).set(100.0 - weight);
        }
    }

    async fn audit(&self, component: &str, version: Option<String>, decision: &str, reason: String, actor: &str) {
        let entry = AuditEntry {
            actor: actor.to_owned(),
            action: "rollout".to_owned(),
            component: Some(component.to_owned()),
            version,
            result: decision.to_owned(),
            reason: Some(reason),
        };
        if let Err(err) = self.db.audit(&entry).await {
            tracing::error!(error = %err, component, "cannot write the audit log");
        }
    }
}

fn running<'a>(rollouts: &'a mut HashMap<String, Rollout>, name: &str) -> Result<&'a mut Rollout, RolloutError> {
    rollouts.get_mut(name).filter(|r| r.status.state.running()).ok_or_else(|| RolloutError::NotRunning(name.to_owned()))
}
