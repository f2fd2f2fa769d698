//! The module that drives wasmtime, with `capabilities/` (which implements
//! the imports).
//!
//! [`Runtime`] owns the engine, the epoch ticker, the linkers and the
//! registry of loaded components. It compiles and links every component
//! once, at load time; a call then only instantiates a pre-linked component
//! in a fresh `Store` (`store.rs`) and calls it through the path of its
//! world (`handler.rs`, `connector.rs`, `proxy.rs`, sharing `invoke.rs`).
//! A `wasi-http` component may instead keep its instances between requests
//! (`reuse.rs`), with fuel, deadline and outcome still per request.
//! Callers see plain request, response, body and outcome types; no wasmtime
//! type leaves this module.

mod admit;
mod compiled;
mod connector;
mod deploy;
pub mod engine;
mod figures;
mod handler;
mod invoke;
mod outbound;
mod outcome;
mod proxy;
pub mod registry;
mod reuse;
mod shared;
pub(crate) mod state;
mod store;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::capabilities;
use crate::clock::SharedClock;
use crate::config::{Config, World};
use crate::db::Database;
use crate::db::deployments::NewDeployment;
use crate::resilience::{Admission, CircuitBreaker};
use crate::telemetry::metrics::Metrics;

pub use admit::Rejection;
pub use connector::{Delivery, DeliveryAttempt, Envelope};
pub use deploy::{ComponentDetails, DeployError, DeployReport, Divergence, Reconciled, SharedFigures, VersionFigures};
pub use figures::{Figures, FiguresWire, VersionStats};
pub use handler::{HandlerRequest, HandlerResponse, Invocation};
pub use invoke::{IDEMPOTENCY_KEY, INVOCATION_TARGET, InvokeError};
pub use outcome::{Outcome, OutcomeRecord};
pub use proxy::{ProxyBody, ProxyBodyError, ProxyReply, RequestBodyError};
pub use registry::{CanaryInfo, ComponentInfo, PrepareError, Registry};

/// A snapshot of the pooling allocator, for gauges.
#[derive(Debug, Clone, Copy)]
pub struct PoolUsage {
    pub component_instances: u64,
    pub memories: u64,
    pub unused_warm_memories: u64,
    pub unused_memory_bytes_resident: u64,
}
use state::InvocationState;

pub struct Runtime {
    engine: Engine,
    /// Stops with the runtime; deadlines depend on it.
    _ticker: engine::EpochTicker,
    /// Resolve each world's imports; built once, reused by every
    /// `instantiate_pre`.
    handler_linker: Linker<InvocationState>,
    connector_linker: Linker<InvocationState>,
    proxy_linker: Linker<InvocationState>,
    /// The engine `wasi:http` 0.3 versions run on; only when the config has
    /// a `wasi-http` component, the one kind that can be 0.3.
    concurrent: Option<ConcurrentEngine>,
    registry: Registry,
    /// Compiled code of recent versions, for fast rollbacks and redeploys.
    compiled: Arc<compiled::CompiledCache>,
    /// Whether stores get fuel (`[runtime] fuel_metering`).
    fuel_metering: bool,
    /// Whether GET and HEAD invocations read first (`[runtime] read_first`).
    read_first: bool,
    /// One per component, kept across versions: a new build of a failing
    /// component does not reset what its callers have seen.
    breakers: HashMap<String, Arc<CircuitBreaker>>,
    db: Database,
    metrics: Arc<Metrics>,
    /// How each configured component runs, for preparing new versions.
    sources: HashMap<String, registry::Source>,
    /// One deploy or rollback at a time, so "previous" is well defined.
    deploy_lock: tokio::sync::Mutex<()>,
    /// Stored versions kept per component.
    keep_versions: usize,
    /// Configured connector names, for per-connector gauges.
    connectors: Arc<BTreeSet<String>>,
    /// Bounded admission, one per handler.
    admissions: HashMap<String, Arc<Admission>>,
    /// Kept-alive connections for components' outgoing HTTP.
    outbound: Arc<outbound::OutboundClient>,
}

/// The engine with the component model's concurrency (see
/// [`engine::Concurrency`]), its epoch ticker, and the linker of
/// `wasi:http` 0.3 components on it.
struct ConcurrentEngine {
    engine: Engine,
    linker: Linker<InvocationState>,
    _ticker: engine::EpochTicker,
}

impl ConcurrentEngine {
    fn start(max_memory_bytes: u64, fuel_metering: bool) -> anyhow::Result<ConcurrentEngine> {
        let engine = engine::build(max_memory_bytes, fuel_metering, engine::Concurrency::On)?;
        let _ticker = engine::EpochTicker::start(&engine)?;
        let mut linker = Linker::new(&engine);
        capabilities::add_service_imports(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link host interfaces")?;
        Ok(ConcurrentEngine { engine, linker, _ticker })
    }
}

impl Runtime {
    /// Builds the engine and loads every configured component. Fails, naming
    /// the component and file, if one cannot be read, compiled or linked.
    pub async fn load(
        config: &Config,
        db: Database,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Runtime> {
        let max_memory = config.components.values().map(|c| config.limits_for(c).memory_bytes).max();
        let fuel_metering = config.runtime.fuel_metering;
        let max_memory = max_memory.unwrap_or(crate::config::DEFAULT_MEMORY_BYTES);
        let engine = engine::build(max_memory, fuel_metering, engine::Concurrency::Off)?;
        let concurrent = match config.components.values().any(|c| c.world == World::WasiHttp) {
            true => Some(ConcurrentEngine::start(max_memory, fuel_metering)?),
            false => None,
        };
        engine::start_compile_threads(config.runtime.compile_niceness);
        let ticker = engine::EpochTicker::start(&engine)?;
        let mut handler_linker = Linker::new(&engine);
        capabilities::add_handler_imports(&mut handler_linker)
            .map_err(anyhow::Error::from)
            .context("cannot link host interfaces")?;
        let mut connector_linker = Linker::new(&engine);
        capabilities::add_connector_imports(&mut connector_linker)
            .map_err(anyhow::Error::from)
            .context("cannot link host interfaces")?;
        let mut proxy_linker = Linker::new(&engine);
        capabilities::add_proxy_imports(&mut proxy_linker)
            .map_err(anyhow::Error::from)
            .context("cannot link host interfaces")?;
        let connectors: Arc<BTreeSet<String>> = Arc::new(config.connectors.keys().cloned().collect());
        let breakers = config
            .components
            .iter()
            .map(|(name, c)| (name.clone(), CircuitBreaker::new(Arc::from(name.as_str()), c.breaker, clock.clone())))
            .collect();
        let sources = config
            .components
            .iter()
            .map(|(name, component)| {
                let reuse = component.reuse.filter(|_| component.world == World::WasiHttp);
                let warm = reuse.map(|reuse| {
                    let capacity = config.admission_for(component).max_concurrency;
                    reuse::WarmPool::start(name, &reuse, capacity, clock.clone(), &metrics)
                });
                let shared = reuse
                    .zip(warm.clone())
                    .filter(|(reuse, _)| reuse.max_concurrent > 1)
                    .map(|(reuse, places)| shared::SharedPool::start(places, &reuse, clock.clone()));
                let source = registry::Source {
                    name: name.clone(),
                    world: component.world,
                    limits: config.limits_for(component),
                    config: component.config.clone(),
                    connectors: connectors.clone(),
                    allowed_hosts: component.allowed_hosts.clone(),
                    metrics: metrics.clone(),
                    warm,
                    shared,
                };
                (name.clone(), source)
            })
            .collect();
        let runtime = Runtime {
            engine,
            compiled: Arc::new(compiled::CompiledCache::new(compiled::COMPILED_VERSIONS)),
            sources,
            deploy_lock: tokio::sync::Mutex::new(()),
            keep_versions: config.admin.keep_versions,
            _ticker: ticker,
            handler_linker,
            connector_linker,
            proxy_linker,
            concurrent,
            fuel_metering,
            read_first: config.runtime.read_first,
            registry: Registry::default(),
            outbound: outbound::OutboundClient::new(),
            breakers,
            connectors: connectors.clone(),
            db,
            admissions: config
                .components
                .iter()
                .filter(|(_, c)| c.world.serves_routes())
                .map(|(name, c)| {
                    let a = config.admission_for(c);
                    let timeout = std::time::Duration::from_millis(a.queue_timeout_ms);
                    (name.clone(), Arc::new(Admission::new(a.max_concurrency, a.max_queue, timeout)))
                })
                .collect(),
            metrics,
        };
        runtime.load_components(config).await?;
        Ok(runtime)
    }

    /// Loads every component: the version last deployed through the admin
    /// API when there is one (it outlives restarts), else the config file's,
    /// which is then recorded as the first deployment.
    async fn load_components(&self, config: &Config) -> anyhow::Result<()> {
        // Compile concurrently: Cranelift work runs on blocking threads and
        // each component is independent.
        let mut tasks = tokio::task::JoinSet::new();
        for (name, component) in &config.components {
            let path = config.component_path(component);
            let file_bytes = tokio::fs::read(&path)
                .await
                .with_context(|| format!("component {name}: cannot read {}", path.display()))?;
            let file_digest = registry::digest(&file_bytes);
            let last = self.db.deployments(name, 1).await?.into_iter().next();
            let (bytes, origin) = match last {
                Some(last) if last.digest != file_digest => {
                    let stored = match self.stored_version(name, &last.digest).await {
                        Err(DeployError::Corrupt { digest, .. }) => {
                            tracing::error!(
                                component = name,
                                version = &digest[..12],
                                "the last deployed version's stored bytes do not match their digest; serving the \
                                 config file's version instead"
                            );
                            None
                        }
                        stored => stored?,
                    };
                    match stored {
                        Some(stored) => {
                            tracing::info!(
                                component = name,
                                version = &last.digest[..12],
                                file_version = &file_digest[..12],
                                "serving the last deployed version, not the config file's"
                            );
                            (Vec::from(stored), format!("stored version {}", &last.digest[..12]))
                        }
                        None => (file_bytes, path.display().to_string()),
                    }
                }
                Some(_) => (file_bytes, path.display().to_string()),
                None => {
                    self.db
                        .record_deployment(
                            &NewDeployment {
                                component: name,
                                digest: &file_digest,
                                bytes: &file_bytes,
                                action: "config",
                                actor: "config",
                            },
                            self.keep_versions,
                            None,
                        )
                        .await?;
                    (file_bytes, path.display().to_string())
                }
            };
            let source = self.sources.get(name).cloned().context("component without a source")?;
            let engine = self.engine.clone();
            let linker = self.linker(component.world).clone();
            let concurrent = self.concurrent.as_ref().map(|c| (c.engine.clone(), c.linker.clone()));
            let db = self.db.clone();
            let cache = self.compiled.clone();
            let fuel_metering = self.fuel_metering;
            tasks.spawn(async move {
                let name = source.name.clone();
                let compiler = registry::Compiler {
                    engine: &engine,
                    cache: &cache,
                    linker: &linker,
                    concurrent: concurrent.as_ref().map(|(engine, linker)| (engine, linker)),
                    db: &db,
                    fuel_metering,
                };
                registry::prepare(compiler, &source, bytes.into())
                    .await
                    .map_err(|err| anyhow::anyhow!("component {name}: {origin}: {err}"))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let deployed = joined.context("component loader panicked")??;
            tracing::info!(
                component = &*deployed.context.name,
                version = &*deployed.version,
                compile_ms = deployed.compile_ms,
                "component loaded"
            );
            self.metrics.sole_version(&deployed.context.name, &deployed.version);
            self.registry.insert(deployed);
        }
        Ok(())
    }

    fn compiler(&self, world: World) -> registry::Compiler<'_> {
        registry::Compiler {
            engine: &self.engine,
            cache: &self.compiled,
            linker: self.linker(world),
            concurrent: self.concurrent.as_ref().map(|c| (&c.engine, &c.linker)),
            db: &self.db,
            fuel_metering: self.fuel_metering,
        }
    }

    fn linker(&self, world: World) -> &Linker<InvocationState> {
        match world {
            World::Handler => &self.handler_linker,
            World::Connector => &self.connector_linker,
            World::WasiHttp => &self.proxy_linker,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Where invocation and component metrics are recorded.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Names of the configured components (one breaker each).
    pub fn component_names(&self) -> impl Iterator<Item = &str> {
        self.breakers.keys().map(String::as_str)
    }

    /// Names of the configured connectors.
    pub fn connector_names(&self) -> impl Iterator<Item = &str> {
        self.connectors.iter().map(String::as_str)
    }

    /// Every breaker, by component name.
    pub fn breakers(&self) -> impl Iterator<Item = (&str, &Arc<CircuitBreaker>)> {
        self.breakers.iter().map(|(name, breaker)| (name.as_str(), breaker))
    }

    /// Instances and memory held by the pooling allocator.
    pub fn pool_usage(&self) -> Option<PoolUsage> {
        let pool = self.engine.pooling_allocator_metrics()?;
        Some(PoolUsage {
            component_instances: pool.component_instances(),
            memories: pool.memories() as u64,
            unused_warm_memories: u64::from(pool.unused_warm_memories()),
            unused_memory_bytes_resident: pool.unused_memory_bytes_resident() as u64,
        })
    }

    /// Every handler's admission gate, by component name.
    pub fn admissions(&self) -> impl Iterator<Item = (&str, &Arc<Admission>)> {
        self.admissions.iter().map(|(name, gate)| (name.as_str(), gate))
    }

    /// The circuit breaker of a component.
    pub fn breaker(&self, component: &str) -> Option<&Arc<CircuitBreaker>> {
        self.breakers.get(component)
    }
}
