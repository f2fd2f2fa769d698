//! Loaded components by name: compiled, linked and ready to instantiate.
//!
//! Lookups on the request path are lock-free (`ArcSwap` of an immutable map)
//! and hand out an `Arc<Deployed>`, so an invocation keeps the version it
//! started with even if the entry is replaced while it runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

use super::bindings::{ConnectorPre, HandlerPre};
use super::invoke::Outcome;
use super::state::{ComponentContext, InvocationState};
use crate::config::{EffectiveLimits, World};
use crate::db::Database;
use crate::telemetry::metrics::{ComponentMetrics, Metrics};

/// Hex digits of the content hash used as the version in logs, labels and
/// headers; the full hash is kept alongside.
const SHORT_VERSION_LEN: usize = 12;
/// Fuel and time a component's start-up (instantiation alone) may take when
/// it is smoke-tested at load.
const SMOKE_FUEL: u64 = 10_000_000;
const SMOKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A component ready to serve.
pub struct Deployed {
    pub(crate) context: Arc<ComponentContext>,
    /// Short content hash; names the exact code that served a request.
    pub(crate) version: Arc<str>,
    /// Full sha256 of the component bytes.
    pub(crate) digest: String,
    pub(crate) limits: EffectiveLimits,
    pub(crate) pre: Prepared,
    pub(crate) compile_ms: u64,
    /// Cached metric handles of this version.
    pub(crate) metrics: ComponentMetrics,
    /// Invocations of this version by outcome.
    counts: [AtomicU64; Outcome::ALL.len()],
    /// Index + 1 into `Outcome::ALL` of the latest outcome; 0 for none.
    last_outcome: AtomicU8,
}

impl Deployed {
    /// Counts an outcome and publishes its costs.
    pub(crate) fn count(&self, outcome: Outcome, latency: Duration, fuel: u64, memory_peak: usize) {
        let Some(i) = Outcome::ALL.iter().position(|o| *o == outcome) else { return };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.last_outcome.store(i as u8 + 1, Ordering::Relaxed);
        self.metrics.record(i, outcome != Outcome::Rejected, latency, fuel, memory_peak);
    }

    /// The most recent outcome, if any.
    fn last_outcome(&self) -> Option<Outcome> {
        let i = self.last_outcome.load(Ordering::Relaxed);
        Outcome::ALL.get(usize::from(i).checked_sub(1)?).copied()
    }
}

/// A pre-linked component, typed by its world.
pub(crate) enum Prepared {
    Handler(HandlerPre<InvocationState>),
    Connector(ConnectorPre<InvocationState>),
}

impl Prepared {
    pub(crate) fn world(&self) -> World {
        match self {
            Prepared::Handler(_) => World::Handler,
            Prepared::Connector(_) => World::Connector,
        }
    }

    fn instance_pre(&self) -> &wasmtime::component::InstancePre<InvocationState> {
        match self {
            Prepared::Handler(pre) => pre.instance_pre(),
            Prepared::Connector(pre) => pre.instance_pre(),
        }
    }
}

/// What callers outside the runtime may know about a loaded component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentInfo {
    pub name: String,
    pub world: &'static str,
    pub version: String,
    pub digest: String,
    /// Invocations of the active version by outcome.
    pub invocations: BTreeMap<&'static str, u64>,
    pub last_outcome: Option<&'static str>,
}

#[derive(Default)]
pub struct Registry {
    components: ArcSwap<HashMap<String, Arc<Deployed>>>,
}

impl Registry {
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Deployed>> {
        self.components.load().get(name).cloned()
    }

    pub(crate) fn insert(&self, deployed: Deployed) {
        let deployed = Arc::new(deployed);
        self.components.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(deployed.context.name.to_string(), deployed.clone());
            next
        });
    }

    pub fn contains(&self, name: &str) -> bool {
        self.components.load().contains_key(name)
    }

    pub fn list(&self) -> Vec<ComponentInfo> {
        let mut list: Vec<_> = self
            .components
            .load()
            .values()
            .map(|d| ComponentInfo {
                name: d.context.name.to_string(),
                world: d.pre.world().as_str(),
                version: d.version.to_string(),
                digest: d.digest.clone(),
                invocations: Outcome::ALL
                    .iter()
                    .zip(&d.counts)
                    .map(|(outcome, n)| (outcome.as_str(), n.load(Ordering::Relaxed)))
                    .collect(),
                last_outcome: d.last_outcome().map(Outcome::as_str),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}

/// Where a component comes from and how it is to run.
pub(crate) struct Source {
    pub name: String,
    pub world: World,
    pub path: PathBuf,
    pub limits: EffectiveLimits,
    pub config: BTreeMap<String, String>,
    pub connectors: Arc<BTreeSet<String>>,
    pub allowed_hosts: Vec<String>,
    pub metrics: Arc<Metrics>,
}

/// Reads, compiles, links (with the linker of the component's world) and
/// smoke-instantiates one component.
pub(crate) async fn prepare(
    engine: &Engine,
    linker: &Linker<InvocationState>,
    db: &Database,
    source: Source,
) -> anyhow::Result<Deployed> {
    let name = source.name.clone();
    let path = source.path.clone();
    let bytes =
        tokio::fs::read(&path).await.with_context(|| format!("component {name}: cannot read {}", path.display()))?;
    let digest = hex(&Sha256::digest(&bytes));
    let started = Instant::now();
    let compiled = tokio::task::spawn_blocking({
        let engine = engine.clone();
        move || Component::from_binary(&engine, &bytes)
    })
    .await
    .context("compiler task panicked")?
    .map_err(anyhow::Error::from)
    .with_context(|| format!("component {name}: {} is not a valid WebAssembly component", path.display()))?;
    let compile_ms = started.elapsed().as_millis() as u64;

    let world = source.world;
    let pre = linker
        .instantiate_pre(&compiled)
        .and_then(|pre| match world {
            World::Handler => HandlerPre::new(pre).map(Prepared::Handler),
            World::Connector => ConnectorPre::new(pre).map(Prepared::Connector),
        })
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "component {name}: {} does not implement the world switchyard:platform/{}",
                path.display(),
                world.as_str()
            )
        })?;

    let context = Arc::new(ComponentContext {
        name: Arc::from(source.name.as_str()),
        config: source.config,
        connectors: source.connectors,
        allowed_hosts: source.allowed_hosts.into(),
        metrics: source.metrics.clone(),
    });
    let version: Arc<str> = Arc::from(&digest[..SHORT_VERSION_LEN]);
    let deployed = Deployed {
        context,
        metrics: source.metrics.component(&name, &version),
        version,
        digest,
        limits: source.limits,
        pre,
        compile_ms,
        counts: Default::default(),
        last_outcome: AtomicU8::new(0),
    };
    smoke_instantiate(engine, db, &deployed)
        .await
        .with_context(|| format!("component {name}: {} fails to start", path.display()))?;
    Ok(deployed)
}

/// Instantiates once without calling anything, so a component whose start
/// traps or exceeds its limits is refused at load instead of on every request.
async fn smoke_instantiate(engine: &Engine, db: &Database, deployed: &Deployed) -> anyhow::Result<()> {
    let unit_of_work = db.unit_of_work(deployed.context.name.clone(), Arc::from("smoke-test"));
    let memory = usize::try_from(deployed.limits.memory_bytes).unwrap_or(usize::MAX);
    let state = InvocationState::new(deployed.context.clone(), Arc::from("smoke-test"), unit_of_work, memory);
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_fuel(SMOKE_FUEL)?;
    let deadline = Instant::now() + SMOKE_TIMEOUT;
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(wasmtime::Error::msg("start-up exceeded its deadline"))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
    deployed.pre.instance_pre().instantiate_async(&mut store).await?;
    store.into_data().into_unit_of_work().rollback().await?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
