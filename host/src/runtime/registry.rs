//! Loaded components by name: compiled, linked and ready to instantiate.
//!
//! Lookups on the request path are lock-free (`ArcSwap` of an immutable map)
//! and hand out an `Arc<Deployed>`, so an invocation keeps the version it
//! started with even if the entry is replaced while it runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::Bytes;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::compiled::CompiledCache;
use super::engine::lower_priority;
use super::figures::VersionStats;
use super::outbound::OutboundClient;
use super::outcome::Outcome;
use super::reuse::{WarmPool, next_serial};
use super::shared::SharedPool;
use super::state::InvocationState;
use super::store::{Budget, new_store};
use crate::capabilities::ComponentContext;
use crate::capabilities::bindings::{ConnectorPre, HandlerPre};
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
    /// The engine it was compiled for; its stores are made on it.
    pub(crate) engine: Engine,
    pub(crate) compile_ms: u64,
    /// Whether its code came from the compiled-version cache.
    pub(crate) cached: bool,
    /// Cached metric handles of this version.
    pub(crate) metrics: ComponentMetrics,
    /// What this version has done: rollouts judge it by these.
    pub(crate) stats: VersionStats,
    /// Index + 1 into `Outcome::ALL` of the latest outcome; 0 for none.
    last_outcome: AtomicU8,
    /// This prepared version's number, unique in the process.
    pub(crate) serial: u64,
    /// The component's warm instances, when it reuses them.
    pub(crate) warm: Option<Arc<WarmPool>>,
    /// Its instances that serve several requests at once, when it reuses
    /// them with `max_concurrent` above 1 (0.3 versions only).
    pub(crate) shared: Option<Arc<SharedPool>>,
    /// Set when it stops serving: its instances are not kept after that.
    pub(crate) retired: AtomicBool,
}

impl Deployed {
    /// Counts an outcome and publishes its costs.
    pub(crate) fn count(&self, outcome: Outcome, latency: Duration, fuel: u64, memory_peak: usize) {
        let i = outcome.index();
        self.stats.record(outcome, latency, fuel, memory_peak);
        self.last_outcome.store(i as u8 + 1, Ordering::Relaxed);
        self.metrics.record(i, outcome != Outcome::Rejected, latency, fuel, memory_peak);
    }

    /// No longer serving: its idle instances go, and busy ones are not
    /// kept after their calls.
    fn retire(&self) {
        if let Some(shared) = &self.shared {
            shared.retire_version(self.serial);
        }
        match &self.warm {
            Some(pool) => pool.retire_version(self.serial, &self.retired),
            None => self.retired.store(true, Ordering::Relaxed),
        }
    }

    /// The most recent outcome, if any.
    fn last_outcome(&self) -> Option<Outcome> {
        let i = self.last_outcome.load(Ordering::Relaxed);
        Outcome::ALL.get(usize::from(i).checked_sub(1)?).copied()
    }

    /// Invocations of this version by outcome.
    fn invocations(&self) -> BTreeMap<&'static str, u64> {
        Outcome::ALL.iter().map(|outcome| (outcome.as_str(), self.stats.outcome_count(*outcome))).collect()
    }
}

/// A component's versions in service: the stable one, and beside it, while
/// a rollout runs, a canary that gets a share of the invocations.
#[derive(Clone)]
pub(crate) struct Serving {
    pub stable: Arc<Deployed>,
    pub canary: Option<Canary>,
}

#[derive(Clone)]
pub(crate) struct Canary {
    pub deployed: Arc<Deployed>,
    /// Share of invocations (1–99 %) it gets.
    pub weight: u8,
    /// Its bytes, stored as a deployment when it is promoted.
    pub bytes: Bytes,
}

impl Serving {
    fn versions(&self) -> impl Iterator<Item = &Arc<Deployed>> {
        std::iter::once(&self.stable).chain(self.canary.as_ref().map(|canary| &canary.deployed))
    }

    /// The version an invocation goes to: the canary for `weight` % of them,
    /// and always the same one for the same key.
    fn pick(&self, key: Option<&str>) -> &Arc<Deployed> {
        match &self.canary {
            Some(canary) if share_bucket(key) < canary.weight => &canary.deployed,
            _ => &self.stable,
        }
    }
}

/// 0–99: where an invocation falls in a split. A key always falls in the
/// same place, so a retry with the same `Idempotency-Key` (or message id)
/// meets the same version, and as the canary's share grows, keys only move
/// to it, never back. Without a key, a random place.
pub(crate) fn share_bucket(key: Option<&str>) -> u8 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    match key {
        Some(key) => {
            // SipHash with fixed keys: the same bucket in every process.
            let mut hasher = DefaultHasher::new();
            key.hash(&mut hasher);
            (hasher.finish() % 100) as u8
        }
        None => fastrand::u8(0..100),
    }
}

/// A pre-linked component, typed by its world.
pub(crate) enum Prepared {
    Handler(HandlerPre<InvocationState>),
    Connector(ConnectorPre<InvocationState>),
    /// A `wasi:http` component exporting `incoming-handler@0.2`.
    Proxy(ProxyPre<InvocationState>),
    /// A `wasi:http` component exporting `handler@0.3`.
    Service(ServicePre<InvocationState>),
}

/// The export a `wasi:http@0.2` component serves with.
pub const HTTP_P2_EXPORT: &str = "wasi:http/incoming-handler@0.2";
/// The export a `wasi:http@0.3` component serves with.
pub const HTTP_P3_EXPORT: &str = "wasi:http/handler@0.3";
/// The world a `wasi:http` 0.3 component implements.
const HTTP_P3_WORLD: &str = "wasi:http/service";

impl Prepared {
    pub(crate) fn world(&self) -> World {
        match self {
            Prepared::Handler(_) => World::Handler,
            Prepared::Connector(_) => World::Connector,
            Prepared::Proxy(_) | Prepared::Service(_) => World::WasiHttp,
        }
    }

    /// The export the component is called through: its world's, and for
    /// `wasi:http` which version of the interface.
    pub(crate) fn export(&self) -> &'static str {
        match self {
            Prepared::Handler(_) => "switchyard:platform/handler",
            Prepared::Connector(_) => "switchyard:platform/connector",
            Prepared::Proxy(_) => HTTP_P2_EXPORT,
            Prepared::Service(_) => HTTP_P3_EXPORT,
        }
    }

    fn instance_pre(&self) -> &wasmtime::component::InstancePre<InvocationState> {
        match self {
            Prepared::Handler(pre) => pre.instance_pre(),
            Prepared::Connector(pre) => pre.instance_pre(),
            Prepared::Proxy(pre) => pre.instance_pre(),
            Prepared::Service(pre) => pre.instance_pre(),
        }
    }

    /// Types `pre` by `world`; a `wasi:http` component by the version of
    /// the handler it exports.
    fn new(
        world: World,
        component: &Component,
        pre: wasmtime::component::InstancePre<InvocationState>,
    ) -> Result<Prepared, PrepareError> {
        let wrong = |detail: String| PrepareError::WrongWorld { world: world.wit_name(), detail };
        let typed = match world {
            World::Handler => HandlerPre::new(pre).map(Prepared::Handler),
            World::Connector => ConnectorPre::new(pre).map(Prepared::Connector),
            World::WasiHttp => {
                let engine = component.engine();
                let exports: Vec<String> =
                    component.component_type().exports(engine).map(|(name, _)| name.to_owned()).collect();
                let exports_one = |prefix: &str| exports.iter().any(|name| name.starts_with(prefix));
                if exports_one(HTTP_P3_EXPORT) {
                    ServicePre::new(pre).map(Prepared::Service)
                } else if exports_one(HTTP_P2_EXPORT) {
                    ProxyPre::new(pre).map(Prepared::Proxy)
                } else {
                    let exports = if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") };
                    return Err(wrong(format!(
                        "it exports neither {HTTP_P2_EXPORT}.x nor {HTTP_P3_EXPORT}.x, but {exports}"
                    )));
                }
            }
        };
        typed.map_err(|err| wrong(format!("{err:#}")))
    }
}

/// What callers outside the runtime may know about a loaded component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentInfo {
    pub name: String,
    pub world: &'static str,
    /// The export it is called through; for `wasi:http`, which version.
    pub export: &'static str,
    pub version: String,
    pub digest: String,
    /// Invocations of the active version by outcome.
    pub invocations: BTreeMap<&'static str, u64>,
    pub last_outcome: Option<&'static str>,
    /// The version serving a share beside it while a rollout runs.
    pub canary: Option<CanaryInfo>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CanaryInfo {
    pub version: String,
    /// Its share of invocations, in %.
    pub weight: u8,
    pub invocations: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
pub struct Registry {
    components: ArcSwap<HashMap<String, Serving>>,
}

impl Registry {
    /// The stable version of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Deployed>> {
        self.components.load().get(name).map(|serving| serving.stable.clone())
    }

    /// The version one invocation of `name` runs on (see [`share_bucket`]),
    /// and whether it is the canary.
    pub(crate) fn route(&self, name: &str, key: Option<&str>) -> Option<(Arc<Deployed>, bool)> {
        self.components.load().get(name).map(|serving| {
            let picked = serving.pick(key);
            (picked.clone(), !Arc::ptr_eq(picked, &serving.stable))
        })
    }

    pub(crate) fn serving(&self, name: &str) -> Option<Serving> {
        self.components.load().get(name).cloned()
    }

    /// Makes `deployed` the only version of its component.
    pub(crate) fn insert(&self, deployed: Deployed) {
        self.set_stable(Arc::new(deployed));
    }

    /// Makes `stable` the only version of its component (a promoted canary).
    pub(crate) fn set_stable(&self, stable: Arc<Deployed>) {
        self.update(&stable.context.name.clone(), |_| Some(Serving { stable: stable.clone(), canary: None }));
    }

    /// Puts a canary beside the stable version; false if `name` is not loaded.
    pub(crate) fn set_canary(&self, name: &str, canary: Canary) -> bool {
        self.update(name, |serving| Some(Serving { stable: serving?.stable.clone(), canary: Some(canary.clone()) }))
    }

    /// Changes the canary's share; false without a canary.
    pub(crate) fn set_weight(&self, name: &str, weight: u8) -> bool {
        self.update(name, |serving| {
            let serving = serving?;
            let canary = serving.canary.as_ref()?;
            Some(Serving { stable: serving.stable.clone(), canary: Some(Canary { weight, ..canary.clone() }) })
        })
    }

    /// Removes the canary; the stable version serves everything again.
    pub(crate) fn drop_canary(&self, name: &str) -> bool {
        self.update(name, |serving| {
            let serving = serving?;
            serving.canary.as_ref()?;
            Some(Serving { stable: serving.stable.clone(), canary: None })
        })
    }

    /// Applies `change` to `name`'s entry in one atomic step; false (and no
    /// change) when it returns `None`.
    /// Versions the change takes out of service are retired.
    fn update(&self, name: &str, change: impl Fn(Option<&Serving>) -> Option<Serving>) -> bool {
        // The closure may run more than once; its last run is the change made.
        let mut changed = None;
        self.components.rcu(|current| {
            let mut next = HashMap::clone(current);
            changed = change(current.get(name)).map(|serving| {
                next.insert(name.to_owned(), serving.clone());
                (current.get(name).cloned(), serving)
            });
            next
        });
        let Some((before, after)) = changed else { return false };
        for gone in before.iter().flat_map(Serving::versions).filter(|v| !after.versions().any(|a| Arc::ptr_eq(a, v))) {
            gone.retire();
        }
        true
    }

    pub fn contains(&self, name: &str) -> bool {
        self.components.load().contains_key(name)
    }

    pub fn list(&self) -> Vec<ComponentInfo> {
        let mut list: Vec<_> = self
            .components
            .load()
            .values()
            .map(|Serving { stable: d, canary }| ComponentInfo {
                name: d.context.name.to_string(),
                world: d.pre.world().as_str(),
                export: d.pre.export(),
                version: d.version.to_string(),
                digest: d.digest.clone(),
                invocations: d.invocations(),
                last_outcome: d.last_outcome().map(Outcome::as_str),
                canary: canary.as_ref().map(|c| CanaryInfo {
                    version: c.deployed.version.to_string(),
                    weight: c.weight,
                    invocations: c.deployed.invocations(),
                }),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}

/// How a component runs, whatever bytes it is given: kept per component so
/// a deploy can prepare a new version with the same settings.
#[derive(Clone)]
pub(crate) struct Source {
    pub name: String,
    pub world: World,
    pub limits: EffectiveLimits,
    pub config: BTreeMap<String, String>,
    pub connectors: Arc<BTreeSet<String>>,
    pub allowed_hosts: Vec<String>,
    pub metrics: Arc<Metrics>,
    /// The component's warm instances, when it reuses them.
    pub warm: Option<Arc<WarmPool>>,
    /// Its shared instances, when one may serve several requests at once.
    pub shared: Option<Arc<SharedPool>>,
}

/// Why bytes could not become a running component. Each is the uploader's
/// problem, not the host's, and says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("not a WebAssembly binary (precompiled .cwasm artifacts are never accepted)")]
    NotWasm,
    #[error("a core WebAssembly module, not a component: wrap it with `wasm-tools component new`")]
    CoreModule,
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("compiling took longer than {0} s")]
    CompileTimeout(u64),
    #[error("does not implement the world {world}: {detail}")]
    WrongWorld { world: &'static str, detail: String },
    #[error("fails to start: {0}")]
    Start(String),
}

/// The leading bytes of a component binary, and of a core module.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
/// Bound on compiling one upload; Cranelift cannot be interrupted, but the
/// deploy stops waiting and says so.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether a component's own exports (not those of components nested in
/// it) include `wasi:http/handler@0.3.x`: read before compiling, to pick
/// the engine. Bytes that do not parse are left to the compiler to refuse.
fn exports_http_p3(bytes: &[u8]) -> bool {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload {
            Err(_) => return false,
            Ok(Payload::ModuleSection { .. } | Payload::ComponentSection { .. }) => depth += 1,
            Ok(Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(Payload::ComponentExportSection(exports)) if depth == 0 => {
                if exports.into_iter().flatten().any(|export| export.name.name.starts_with(HTTP_P3_EXPORT)) {
                    return true;
                }
            }
            Ok(_) => {}
        }
    }
    false
}

/// The sha256 of component bytes, in hex: a version's identity.
pub(crate) fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What compiling a version needs: the engine, the linker of the
/// component's world, and whether stores meter fuel; for a `wasi:http`
/// component, also the engine with concurrency and its linker, for a
/// version that exports the 0.3 handler.
pub(crate) struct Compiler<'a> {
    pub engine: &'a Engine,
    pub cache: &'a Arc<CompiledCache>,
    pub linker: &'a Linker<InvocationState>,
    pub concurrent: Option<(&'a Engine, &'a Linker<InvocationState>)>,
    pub db: &'a Database,
    pub fuel_metering: bool,
}

/// Compiles, links (with the linker of the component's world) and
/// smoke-instantiates one version of a component.
/// The bytes are shared, not copied: the caller keeps them to store.
pub(crate) async fn prepare(compiler: Compiler<'_>, source: &Source, bytes: Bytes) -> Result<Deployed, PrepareError> {
    let Compiler { engine, cache, linker, concurrent, db, fuel_metering } = compiler;
    match bytes.get(..8) {
        Some(header) if header == COMPONENT_HEADER => {}
        Some(header) if header == CORE_MODULE_HEADER => return Err(PrepareError::CoreModule),
        _ => return Err(PrepareError::NotWasm),
    }
    let p3 = exports_http_p3(&bytes);
    let (engine, linker) = match (concurrent, p3) {
        (Some(target), true) if source.world == World::WasiHttp => target,
        (_, true) if source.world != World::WasiHttp => {
            let detail = format!("it exports {HTTP_P3_EXPORT}.x, as a wasi-http component does");
            return Err(PrepareError::WrongWorld { world: source.world.wit_name(), detail });
        }
        _ => (engine, linker),
    };
    let started = Instant::now();
    // Hashing a large upload is CPU work too: it runs beside the compile,
    // off the async threads, on a thread of its own at the compile threads'
    // low priority (tokio's blocking threads serve other work afterwards).
    let (done, compile) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("switchyard-compile".into()).spawn({
        let (engine, cache) = (engine.clone(), cache.clone());
        move || {
            lower_priority();
            let digest = digest(&bytes);
            // Cached code is used only on the engine it was compiled for:
            // the same bytes deployed to a component of another world are
            // checked against that world on its own engine.
            let compiled = match cache.get(&digest).filter(|c| Engine::same(c.engine(), &engine)) {
                Some(compiled) => (digest, Ok(compiled), true),
                // `from_binary` only accepts wasm, never precompiled native code.
                None => {
                    let compiled = Component::from_binary(&engine, &bytes);
                    (digest, compiled, false)
                }
            };
            // The deploy may have stopped waiting.
            let _ = done.send(compiled);
        }
    });
    if let Err(err) = spawned {
        return Err(PrepareError::Compile(format!("cannot start a compile thread: {err}")));
    }
    let (digest, compiled, cached) = match tokio::time::timeout(COMPILE_TIMEOUT, compile).await {
        Err(_) => return Err(PrepareError::CompileTimeout(COMPILE_TIMEOUT.as_secs())),
        Ok(Err(_)) => return Err(PrepareError::Compile("the compile thread failed".to_owned())),
        Ok(Ok((_, Err(err), _))) => return Err(PrepareError::Compile(format!("{err:#}"))),
        Ok(Ok((digest, Ok(compiled), cached))) => (digest, compiled, cached),
    };
    let compile_ms = started.elapsed().as_millis() as u64;

    let world = source.world;
    // A 0.3 component is checked against the 0.3 world, and says so.
    let wit_name = if p3 { HTTP_P3_WORLD } else { world.wit_name() };
    let pre = linker
        .instantiate_pre(&compiled)
        .map_err(|err| PrepareError::WrongWorld { world: wit_name, detail: format!("{err:#}") })
        .and_then(|pre| Prepared::new(world, &compiled, pre))?;

    let context = Arc::new(ComponentContext {
        name: Arc::from(source.name.as_str()),
        config: source.config.clone(),
        connectors: source.connectors.clone(),
        allowed_hosts: source.allowed_hosts.clone().into(),
        metrics: source.metrics.clone(),
    });
    let version: Arc<str> = Arc::from(&digest[..SHORT_VERSION_LEN]);
    let deployed = Deployed {
        context,
        metrics: source.metrics.component(&source.name, &version, pre.export()),
        version,
        digest,
        limits: source.limits,
        pre,
        engine: engine.clone(),
        compile_ms,
        cached,
        stats: VersionStats::default(),
        last_outcome: AtomicU8::new(0),
        serial: next_serial(),
        warm: source.warm.clone(),
        shared: source.shared.clone(),
        retired: AtomicBool::new(false),
    };
    smoke_instantiate(engine, db, fuel_metering, &deployed)
        .await
        .map_err(|err| PrepareError::Start(format!("{err:#}")))?;
    cache.insert(&deployed.digest, compiled);
    Ok(deployed)
}

/// Instantiates once without calling anything, so a component whose start
/// traps or exceeds its limits is refused at load instead of on every request.
async fn smoke_instantiate(
    engine: &Engine,
    db: &Database,
    fuel_metering: bool,
    deployed: &Deployed,
) -> anyhow::Result<()> {
    let request_id = Arc::from("smoke-test");
    // Nothing is sent while instantiating: a client of its own will do.
    let outbound = OutboundClient::new();
    let state = InvocationState::for_call(db, &deployed.context, deployed.limits.memory_bytes, &request_id, &outbound);
    let budget = Budget { fuel: fuel_metering.then_some(SMOKE_FUEL), deadline: Instant::now() + SMOKE_TIMEOUT };
    let mut store = new_store(engine, state, budget)?;
    deployed.pre.instance_pre().instantiate_async(&mut store).await?;
    store.into_data().into_unit_of_work().rollback().await?;
    Ok(())
}
