//! Hot swap: deploy a new version of a component, or roll back to a stored
//! one, while traffic flows.
//!
//! A version is prepared completely — parsed, compiled off the async
//! threads with a bound, type-checked against its world, smoke-instantiated
//! — before the registry entry is swapped in one atomic step. Requests that
//! already hold the old version finish on it. Every attempt, accepted or not,
//! is audited and counted.

use hyper::body::Bytes;

use std::sync::Arc;

use super::Runtime;
use super::figures::{Figures, FiguresWire};
use super::registry::{self, Canary, PrepareError};
use crate::db::DbError;
use crate::db::audit::AuditEntry;
use crate::db::deployments::{DeploymentRow, NewDeployment};
use crate::db::replicas::CanaryRow;
use crate::telemetry::metrics::{DEPLOYMENTS, ROLLOUT_WEIGHT};

/// What an accepted deploy or rollback did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeployReport {
    pub name: String,
    /// Short content hash of the version now serving.
    pub version: String,
    /// Short content hash of the version it replaced (for a canary: the
    /// stable version beside it).
    pub previous: Option<String>,
    pub compile_ms: u64,
    /// Whether the version's compiled code was still in memory (a rollback,
    /// or a redeploy of a version seen before): no compilation then.
    pub cached: bool,
    /// What the replaced version had done, for the watch that follows a
    /// plain deploy.
    #[serde(skip)]
    pub previous_figures: Option<Figures>,
}

/// What a component's versions in service have done so far.
#[derive(Debug, Clone)]
pub struct VersionFigures {
    /// The stable version and its figures.
    pub stable: (String, Figures),
    /// The canary, its figures and its share (%), while one serves.
    pub canary: Option<(String, Figures, u8)>,
}

/// [`VersionFigures`] as a heartbeat carries them to the other replicas.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedFigures {
    pub stable: (String, FiguresWire),
    pub canary: Option<(String, FiguresWire)>,
}

impl VersionFigures {
    pub fn shared(&self) -> SharedFigures {
        SharedFigures {
            stable: (self.stable.0.clone(), self.stable.1.to_wire()),
            canary: self.canary.as_ref().map(|(version, figures, _)| (version.clone(), figures.to_wire())),
        }
    }

    /// Adds what another replica's same versions did.
    pub fn add(&mut self, peer: &SharedFigures) {
        if peer.stable.0 == self.stable.0
            && let Some(figures) = Figures::from_wire(&peer.stable.1)
        {
            self.stable.1 = self.stable.1.plus(&figures);
        }
        if let (Some((version, mine, _)), Some((theirs, wire))) = (self.canary.as_mut(), &peer.canary)
            && version == theirs
            && let Some(figures) = Figures::from_wire(wire)
        {
            *mine = mine.plus(&figures);
        }
    }
}

/// A component that serves another version than its latest deployment,
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Divergence {
    pub component: String,
    /// The short version the deploy history names.
    pub wanted: String,
    /// The short version this replica serves instead.
    pub serving: String,
    pub error: String,
}

/// What one reconcile did.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    /// Components swapped to their deployed version.
    pub swapped: Vec<String>,
    /// Components left on another version, and why.
    pub diverged: Vec<Divergence>,
}

/// A component's active version and what it can roll back to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentDetails {
    pub name: String,
    pub world: &'static str,
    /// The export it is called through; for `wasi:http`, which version.
    pub export: &'static str,
    pub version: String,
    pub digest: String,
    pub deployed_at: Option<i64>,
    pub deployed_by: Option<String>,
    /// Deploy history, newest first.
    pub history: Vec<DeploymentRow>,
    /// Stored versions (full digests) available for rollback.
    pub stored_versions: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no component named {0:?} is configured")]
    UnknownComponent(String),
    #[error(transparent)]
    Rejected(#[from] PrepareError),
    #[error("no stored version of {component} matches {version:?}")]
    UnknownVersion { component: String, version: String },
    #[error("{0} has no previous version to roll back to")]
    NoPrevious(String),
    #[error("{component} already serves version {version}; a canary must be another build")]
    SameVersion { component: String, version: String },
    #[error("{0} has no canary")]
    NoCanary(String),
    #[error("storage failed: {0}")]
    Storage(#[from] DbError),
    #[error("the stored bytes of {component} version {digest} do not hash to it; refusing to serve them")]
    Corrupt { component: String, digest: String },
}

impl Runtime {
    /// Prepares `bytes` as the new version of `name` and swaps it in.
    pub async fn deploy(&self, name: &str, bytes: Bytes, actor: &str) -> Result<DeployReport, DeployError> {
        let _one_at_a_time = self.deploy_lock.lock().await;
        let size = bytes.len();
        let result = self.prepare_and_swap(name, bytes, actor, "deploy").await;
        self.audit_attempt("deploy", name, actor, &result, Some(size), Written::WithDeployment).await;
        result
    }

    /// Swaps `name` back to `version` (a full or short digest), or to the
    /// version before the active one.
    pub async fn rollback(&self, name: &str, version: Option<&str>, actor: &str) -> Result<DeployReport, DeployError> {
        let _one_at_a_time = self.deploy_lock.lock().await;
        let result = async {
            let active = self.registry.get(name).ok_or_else(|| DeployError::UnknownComponent(name.to_owned()))?;
            let target = match version {
                Some(version) => version.to_owned(),
                None => self
                    .db
                    .deployments(name, 100)
                    .await?
                    .into_iter()
                    .map(|row| row.digest)
                    .find(|digest| *digest != active.digest)
                    .ok_or_else(|| DeployError::NoPrevious(name.to_owned()))?,
            };
            let bytes = self
                .stored_version(name, &target)
                .await?
                .ok_or_else(|| DeployError::UnknownVersion { component: name.to_owned(), version: target.clone() })?;
            self.prepare_and_swap(name, bytes, actor, "rollback").await
        }
        .await;
        self.audit_attempt("rollback", name, actor, &result, None, Written::WithDeployment).await;
        result
    }

    /// The stored bytes of `name`'s version `digest_prefix`, checked against
    /// their digest: the database is trusted to keep them, not to keep them
    /// intact.
    pub(crate) async fn stored_version(&self, name: &str, digest_prefix: &str) -> Result<Option<Bytes>, DeployError> {
        let Some((digest, bytes)) = self.db.component_version(name, digest_prefix).await? else { return Ok(None) };
        if registry::digest(&bytes) != digest {
            return Err(DeployError::Corrupt { component: name.to_owned(), digest });
        }
        Ok(Some(Bytes::from(bytes)))
    }

    async fn prepare_and_swap(
        &self,
        name: &str,
        bytes: Bytes,
        actor: &str,
        action: &str,
    ) -> Result<DeployReport, DeployError> {
        let source = self.sources.get(name).ok_or_else(|| DeployError::UnknownComponent(name.to_owned()))?;
        let compiler = self.compiler(source.world);
        let deployed = registry::prepare(compiler, source, bytes.clone()).await?;
        // Stored before it serves: a restart or another replica must find
        // the bytes of whatever is active. Its audit row commits with it.
        let reason = (action == "deploy").then(|| format!("{} bytes", bytes.len()));
        let entry = accepted(action, name, actor, &deployed.version, reason);
        let deployment = NewDeployment { component: name, digest: &deployed.digest, bytes: &bytes, action, actor };
        self.db.record_deployment(&deployment, self.keep_versions, Some(&entry)).await?;
        Ok(self.swap_in(deployed, actor, action))
    }

    /// The atomic step of a deploy, rollback or fan-out: `deployed` serves
    /// new requests from here on; the version it replaces finishes what it
    /// has started.
    fn swap_in(&self, deployed: registry::Deployed, actor: &str, action: &str) -> DeployReport {
        let name = deployed.context.name.clone();
        let name = &*name;
        let report = DeployReport {
            name: name.to_owned(),
            version: deployed.version.to_string(),
            previous: None,
            compile_ms: deployed.compile_ms,
            cached: deployed.cached,
            previous_figures: None,
        };
        let digest = deployed.digest.clone();
        let export = deployed.pre.export();
        let previous = self.registry.get(name);
        self.registry.insert(deployed);
        if let Some(previous) = previous.as_ref().filter(|p| p.digest != digest) {
            self.metrics.version_info(name, &previous.version, previous.pre.export(), false);
            self.metrics.gauge(ROLLOUT_WEIGHT, &[("component", name), ("version", &previous.version)]).set(0.0);
        }
        self.metrics.version_info(name, &report.version, export, true);
        self.metrics.sole_version(name, &report.version);
        let report = DeployReport {
            previous_figures: previous.as_ref().map(|p| p.stats.snapshot()),
            previous: previous.map(|p| p.version.to_string()),
            ..report
        };
        tracing::info!(
            component = name,
            version = report.version,
            previous = report.previous,
            compile_ms = report.compile_ms,
            actor,
            action,
            "component swapped"
        );
        report
    }

    /// Brings every component to the version the deploy history names as
    /// active (its latest row), as another replica's deploy or rollback
    /// left it. Returns the components still serving something else, each
    /// with the reason; a version that cannot be prepared here leaves the
    /// current one serving.
    ///
    /// Canaries likewise: each row of `canaries` serves, with its share,
    /// beside the stable version. A canary whose controller is `me` is left
    /// to that controller; its row is cleared when this replica no longer
    /// serves it (a clear that failed before).
    pub async fn reconcile(&self, me: &str) -> Result<Reconciled, DbError> {
        let active = self.db.active_versions().await?;
        let mut reconciled = Reconciled::default();
        for (name, digest) in active {
            let Some(serving) = self.registry.get(&name) else { continue };
            if serving.digest == digest {
                continue;
            }
            match self.converge(&name).await {
                Ok(true) => reconciled.swapped.push(name),
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(component = name, version = &digest[..12], error = %err, "cannot serve the deployed version");
                    reconciled.diverged.push(Divergence {
                        component: name.clone(),
                        wanted: digest[..12].to_owned(),
                        serving: self.registry.get(&name).map(|d| d.version.to_string()).unwrap_or_default(),
                        error: err.to_string(),
                    });
                }
            }
        }
        // After the stable versions: a promoted canary is then stable.
        self.reconcile_canaries(me, &mut reconciled).await?;
        Ok(reconciled)
    }

    async fn reconcile_canaries(&self, me: &str, reconciled: &mut Reconciled) -> Result<(), DbError> {
        let _one_at_a_time = self.deploy_lock.lock().await;
        let rows = self.db.canaries().await?;
        for name in self.sources.keys() {
            let Some(serving) = self.registry.serving(name) else { continue };
            let local = serving.canary.as_ref().map(|c| (c.deployed.digest.as_str(), c.weight));
            match rows.iter().find(|row| row.component == *name) {
                Some(row) if row.controller == me && local.is_none_or(|(digest, _)| digest != row.digest) => {
                    self.db.clear_canary(name).await?;
                }
                Some(row) if row.controller == me => {}
                Some(row) if row.digest == serving.stable.digest => {}
                Some(row) => {
                    let weight = u8::try_from(row.weight.clamp(0, 100)).unwrap_or(0);
                    match local {
                        Some((digest, have)) if digest == row.digest => {
                            if have != weight {
                                self.registry.set_weight(name, weight);
                            }
                        }
                        _ => match self.prepare_canary(name, &row.digest).await {
                            Ok((deployed, bytes)) => {
                                tracing::info!(component = name, version = &*deployed.version, weight, "canary joined");
                                self.registry.set_canary(name, Canary { deployed: Arc::new(deployed), weight, bytes });
                                reconciled.swapped.push(name.clone());
                            }
                            Err(err) => reconciled.diverged.push(Divergence {
                                component: name.clone(),
                                wanted: format!("canary {}", &row.digest[..12.min(row.digest.len())]),
                                serving: serving.stable.version.to_string(),
                                error: err.to_string(),
                            }),
                        },
                    }
                }
                None if local.is_some() => {
                    tracing::info!(component = name, "canary ended elsewhere");
                    self.registry.drop_canary(name);
                    reconciled.swapped.push(name.clone());
                }
                None => {}
            }
        }
        Ok(())
    }

    async fn prepare_canary(&self, name: &str, digest: &str) -> Result<(registry::Deployed, Bytes), DeployError> {
        let bytes = self
            .stored_version(name, digest)
            .await?
            .ok_or_else(|| DeployError::UnknownVersion { component: name.to_owned(), version: digest.to_owned() })?;
        let source = self.sources.get(name).ok_or_else(|| DeployError::UnknownComponent(name.to_owned()))?;
        let deployed = registry::prepare(self.compiler(source.world), source, bytes.clone()).await?;
        Ok((deployed, bytes))
    }

    /// Swaps `name` to its latest deployment, read again under the deploy
    /// lock: a local deploy may have moved it on meanwhile. False when it
    /// already serves it.
    async fn converge(&self, name: &str) -> Result<bool, DeployError> {
        let _one_at_a_time = self.deploy_lock.lock().await;
        let Some(latest) = self.db.deployments(name, 1).await?.into_iter().next() else { return Ok(false) };
        let serving = self.registry.get(name).ok_or_else(|| DeployError::UnknownComponent(name.to_owned()))?;
        if serving.digest == latest.digest {
            return Ok(false);
        }
        let bytes = self.stored_version(name, &latest.digest).await?.ok_or_else(|| DeployError::UnknownVersion {
            component: name.to_owned(),
            version: latest.digest.clone(),
        })?;
        let source = self.sources.get(name).ok_or_else(|| DeployError::UnknownComponent(name.to_owned()))?;
        let deployed = registry::prepare(self.compiler(source.world), source, bytes).await?;
        self.swap_in(deployed, &latest.actor, "fan-out");
        Ok(true)
    }

    /// Prepares `bytes` as a canary of `name`, beside its stable version,
    /// with `weight` % of the invocations. It is not recorded as deployed
    /// until promoted, so a restart serves the stable version.
    /// `controller` is the replica whose rollout controller judges it; every
    /// other replica serves it too, with the same share.
    pub async fn deploy_canary(
        &self,
        name: &str,
        bytes: Bytes,
        actor: &str,
        weight: u8,
        controller: &str,
    ) -> Result<DeployReport, DeployError> {
        let _one_at_a_time = self.deploy_lock.lock().await;
        let size = bytes.len();
        let result = async {
            let source = self.sources.get(name).ok_or_else(|| DeployError::UnknownComponent(name.to_owned()))?;
            let stable = self.registry.get(name).ok_or_else(|| DeployError::UnknownComponent(name.to_owned()))?;
            let deployed = registry::prepare(self.compiler(source.world), source, bytes.clone()).await?;
            if deployed.digest == stable.digest {
                let version = stable.version.to_string();
                return Err(DeployError::SameVersion { component: name.to_owned(), version });
            }
            let report = DeployReport {
                name: name.to_owned(),
                version: deployed.version.to_string(),
                previous: Some(stable.version.to_string()),
                compile_ms: deployed.compile_ms,
                cached: deployed.cached,
                previous_figures: None,
            };
            let row = CanaryRow {
                component: name.to_owned(),
                digest: deployed.digest.clone(),
                weight: i64::from(weight),
                controller: controller.to_owned(),
                updated_at: self.db.now_millis(),
                rollout: "{}".to_owned(),
            };
            self.db.put_canary(&row, &bytes).await?;
            self.registry.set_canary(name, Canary { deployed: Arc::new(deployed), weight, bytes });
            tracing::info!(
                component = name,
                version = report.version,
                stable = report.previous,
                weight,
                actor,
                "canary deployed"
            );
            Ok(report)
        }
        .await;
        self.audit_attempt("canary", name, actor, &result, Some(size), Written::NotYet).await;
        result
    }

    /// Gives the canary of `name` `weight` % of the invocations, on every
    /// replica.
    pub async fn set_canary_weight(&self, name: &str, weight: u8) -> Result<(), DeployError> {
        let _one_at_a_time = self.deploy_lock.lock().await;
        if self.registry.serving(name).and_then(|s| s.canary).is_none() {
            return Err(DeployError::NoCanary(name.to_owned()));
        }
        self.db.set_canary_weight(name, weight).await?;
        self.registry.set_weight(name, weight);
        Ok(())
    }

    /// Makes the canary the stable version, recorded as deployed.
    pub async fn promote_canary(&self, name: &str, actor: &str) -> Result<DeployReport, DeployError> {
        let _one_at_a_time = self.deploy_lock.lock().await;
        let serving = self.registry.serving(name).ok_or_else(|| DeployError::UnknownComponent(name.to_owned()))?;
        let canary = serving.canary.ok_or_else(|| DeployError::NoCanary(name.to_owned()))?;
        let deployed = canary.deployed;
        let deployment =
            NewDeployment { component: name, digest: &deployed.digest, bytes: &canary.bytes, action: "promote", actor };
        self.db.record_deployment(&deployment, self.keep_versions, None).await?;
        self.registry.set_stable(deployed.clone());
        let old = &serving.stable;
        self.metrics.version_info(name, &old.version, old.pre.export(), false);
        self.metrics.version_info(name, &deployed.version, deployed.pre.export(), true);
        tracing::info!(
            component = name,
            version = &*deployed.version,
            previous = &*old.version,
            actor,
            "canary promoted"
        );
        Ok(DeployReport {
            name: name.to_owned(),
            version: deployed.version.to_string(),
            previous: Some(old.version.to_string()),
            compile_ms: deployed.compile_ms,
            cached: deployed.cached,
            previous_figures: Some(old.stats.snapshot()),
        })
    }

    /// Removes the canary of `name`: the stable version serves everything.
    pub async fn drop_canary(&self, name: &str) -> Result<String, DeployError> {
        let _one_at_a_time = self.deploy_lock.lock().await;
        let serving = self.registry.serving(name).ok_or_else(|| DeployError::UnknownComponent(name.to_owned()))?;
        let canary = serving.canary.ok_or_else(|| DeployError::NoCanary(name.to_owned()))?;
        // Out of service here first, whether or not the others can be told:
        // this replica's own canary is not re-added from a stale row.
        self.registry.drop_canary(name);
        let version = canary.deployed.version.to_string();
        self.db.clear_canary(name).await?;
        self.metrics.version_info(name, &version, canary.deployed.pre.export(), false);
        Ok(version)
    }

    /// The figures of `name`'s stable version and of its canary, if any.
    pub fn figures(&self, name: &str) -> Option<VersionFigures> {
        let serving = self.registry.serving(name)?;
        Some(VersionFigures {
            stable: (serving.stable.version.to_string(), serving.stable.stats.snapshot()),
            canary: serving.canary.map(|c| (c.deployed.version.to_string(), c.deployed.stats.snapshot(), c.weight)),
        })
    }

    /// Counts the attempt and audits it, unless an accepted one's row was
    /// already written with its deployment.
    async fn audit_attempt(
        &self,
        action: &str,
        name: &str,
        actor: &str,
        result: &Result<DeployReport, DeployError>,
        size: Option<usize>,
        written: Written,
    ) {
        let label = match (action, result.is_ok()) {
            ("rollback", true) => "rollback",
            (_, true) => "accepted",
            (_, false) => "rejected",
        };
        if self.sources.contains_key(name) {
            self.metrics.counter(DEPLOYMENTS, &[("component", name), ("result", label)]).increment(1);
        }
        let entry = match result {
            Ok(_) if written == Written::WithDeployment => return,
            Ok(report) => accepted(action, name, actor, &report.version, size.map(|s| format!("{s} bytes"))),
            Err(err) => {
                tracing::warn!(component = name, actor, action, error = %err, "deploy refused");
                AuditEntry {
                    actor: actor.to_owned(),
                    action: action.to_owned(),
                    component: Some(name.to_owned()),
                    version: None,
                    result: "rejected".to_owned(),
                    reason: Some(err.to_string()),
                }
            }
        };
        if let Err(err) = self.db.audit(&entry).await {
            tracing::error!(error = %err, component = name, action, "cannot write the audit log");
        }
    }

    /// The active version of a component, its history and stored versions.
    pub async fn component_details(&self, name: &str) -> Result<Option<ComponentDetails>, DbError> {
        let Some(active) = self.registry.get(name) else { return Ok(None) };
        let history = self.db.deployments(name, 20).await?;
        let current = history.iter().find(|row| row.digest == active.digest);
        Ok(Some(ComponentDetails {
            name: name.to_owned(),
            world: active.pre.world().as_str(),
            export: active.pre.export(),
            version: active.version.to_string(),
            digest: active.digest.clone(),
            deployed_at: current.map(|row| row.deployed_at),
            deployed_by: current.map(|row| row.actor.clone()),
            stored_versions: self.db.stored_versions(name).await?,
            history,
        }))
    }
}

/// Where an accepted attempt's audit row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// In the deployment's own transaction (deploys, rollbacks).
    WithDeployment,
    /// Not yet: the attempt writes it (a canary is no deployment).
    NotYet,
}

/// The audit row of an accepted deploy, rollback or canary.
fn accepted(action: &str, name: &str, actor: &str, version: &str, reason: Option<String>) -> AuditEntry {
    AuditEntry {
        actor: actor.to_owned(),
        action: action.to_owned(),
        component: Some(name.to_owned()),
        version: Some(version.to_owned()),
        result: "accepted".to_owned(),
        reason,
    }
}
