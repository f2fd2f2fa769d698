//! The scenarios `loadtest` runs: each is a load shape, a traffic mix,
//! default thresholds sized for a 2-core machine, and — for some — an action
//! taken while the load runs (redeploys, a provider outage) with checks of
//! its own. A scenario only drives load and reads the host's and simulator's
//! APIs; starting processes and writing results belong to the binary.
//!
//! - [`steady`]: smoke, warmup, baseline, mixed, spike, soak.
//! - [`stress`]: rate steps until the thresholds break.
//! - [`hotswap`]: load while the order handler is redeployed again and again.
//! - [`outage`]: load while the providers are down; every message delivered.
//! - [`canary`]: load while faulty and good builds are deployed as canaries.
//! - [`hostile`]: load while hostile clients attack the same host.

pub mod canary;
pub mod hostile;
pub mod hotswap;
pub mod outage;
pub mod steady;
pub mod stress;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::hostmetrics::RssStats;
use crate::load::open::{self, OpenConfig, RateProfile};
use crate::load::{Recorder, StopFlag, Target, Workload};
use crate::summary::Window;
use crate::thresholds::{Check, Thresholds};

/// A named scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// ~30 s of modest mixed traffic: the CI gate.
    Smoke,
    /// Closed model, a few users: warms the host before measuring by hand.
    Warmup,
    /// Open loop of orders at a steady rate.
    Baseline,
    /// Baseline, a ramp to several times it, and back.
    Spike,
    /// Rate steps up until thresholds break; reports the knee.
    Stress,
    /// 15 minutes steady: latency and memory drift.
    Soak,
    /// Baseline load while the order handler is redeployed every few seconds.
    Hotswap,
    /// Load while the providers are down, then up: no message lost.
    Outage,
    /// Orders, reads and inventory updates with sold-out contention.
    Mixed,
    /// Load while faulty and good builds are deployed as canaries.
    Canary,
    /// Load while slow, idle, malformed and leaving clients attack the host.
    Hostile,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Smoke => "smoke",
            Scenario::Warmup => "warmup",
            Scenario::Baseline => "baseline",
            Scenario::Spike => "spike",
            Scenario::Stress => "stress",
            Scenario::Soak => "soak",
            Scenario::Hotswap => "hotswap",
            Scenario::Outage => "outage",
            Scenario::Mixed => "mixed",
            Scenario::Canary => "canary",
            Scenario::Hostile => "hostile",
        }
    }

    /// Defaults, sized for a 2-core machine shared with the host.
    pub fn defaults(self) -> Defaults {
        let (secs, rate, users, max_error_rate, max_p99_ms) = match self {
            Scenario::Smoke => (30, 50.0, 8, 0.0, 500.0),
            Scenario::Warmup => (15, 0.0, 8, 0.0, 1000.0),
            Scenario::Baseline => (60, 300.0, 8, 0.0, 500.0),
            Scenario::Spike => (60, 100.0, 8, 0.01, 2000.0),
            // Stress's rate is the first step; its duration bounds all steps.
            Scenario::Stress => (120, 100.0, 8, 0.01, 500.0),
            Scenario::Soak => (900, 100.0, 8, 0.0, 500.0),
            Scenario::Hotswap => (60, 100.0, 8, 0.0, 2000.0),
            Scenario::Outage => (60, 50.0, 8, 0.0, 1000.0),
            Scenario::Mixed => (60, 150.0, 8, 0.0, 500.0),
            // Its duration bounds the five rollouts; it ends after the last.
            Scenario::Canary => (600, 200.0, 8, 0.0, 2000.0),
            // Long enough that the attack (the middle half) outlasts the
            // host's 30 s header read and request timeouts.
            Scenario::Hostile => (90, 100.0, 8, 0.0, 1000.0),
        };
        Defaults {
            duration: Duration::from_secs(secs),
            rate,
            users,
            thresholds: Thresholds { max_error_rate, max_p99_ms },
        }
    }
}

/// A scenario's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub duration: Duration,
    /// Requests per second (open model).
    pub rate: f64,
    /// Virtual users (closed model).
    pub users: usize,
    pub thresholds: Thresholds,
}

/// The parameters of one run, defaults already merged with flags.
#[derive(Debug, Clone)]
pub struct Params {
    pub duration: Duration,
    pub rate: f64,
    pub users: usize,
    /// Explicit request bound; otherwise derived from the load shape.
    pub max_requests: Option<u64>,
    pub thresholds: Thresholds,
    /// Hot swap: time between redeploys; derived from the duration if unset.
    pub swap_interval: Option<Duration>,
    /// Hot swap: every swap deploys a new digest, compiled then.
    pub new_builds: bool,
    /// Outage: how long the providers stay down; a third of the run if unset.
    pub outage: Option<Duration>,
    /// Outage: how long to wait for the outbox to drain afterwards.
    pub drain_timeout: Duration,
    /// Seeds the traffic mix, so a run's requests can be replayed.
    pub seed: u64,
    /// Canary: the share (%) each canary deploy starts with.
    pub canary_share: u8,
}

/// What a scenario works with.
pub struct Context {
    pub target: Arc<Target>,
    pub recorder: Arc<Recorder>,
    pub stop: StopFlag,
    pub params: Params,
    /// The admin token, when the admin API is reachable.
    pub admin_token: Option<String>,
    /// The simulator's control API, when there is one to steer.
    pub control_url: Option<String>,
    /// The host's PID, when this run started it (for RSS).
    pub host_pid: Option<u32>,
    /// The order handler's component file (hot swap redeploys it).
    pub order_handler: PathBuf,
}

/// What a scenario reports beyond the recorded samples.
#[derive(Debug, Default)]
pub struct Findings {
    /// e.g. `open, 50 rps` or `closed, 8 users`.
    pub model: String,
    pub windows: Vec<Window>,
    pub details: BTreeMap<String, serde_json::Value>,
    /// Checks of the scenario's own, added to the common thresholds.
    pub checks: Vec<Check>,
    /// False when the common error-rate / p99 thresholds over the whole run
    /// do not apply (stress breaks them on purpose).
    pub common_thresholds: bool,
    pub rss: Option<RssStats>,
}

/// Runs `scenario`.
pub async fn run(scenario: Scenario, context: &Context) -> anyhow::Result<Findings> {
    workload::seed_inventory(&context.target).await?;
    match scenario {
        Scenario::Smoke => steady::smoke(context).await,
        Scenario::Warmup => steady::warmup(context).await,
        Scenario::Baseline => steady::baseline(context).await,
        Scenario::Mixed => steady::mixed(context).await,
        Scenario::Spike => steady::spike(context).await,
        Scenario::Soak => steady::soak(context).await,
        Scenario::Stress => stress::run(context).await,
        Scenario::Hotswap => hotswap::run(context).await,
        Scenario::Outage => outage::run(context).await,
        Scenario::Canary => canary::run(context).await,
        Scenario::Hostile => hostile::run(context).await,
    }
}

/// Runs `profile` open-loop with `workload`, bounded by the request limit
/// (explicit, or the profile's integral plus 10%).
pub(crate) async fn drive_open(context: &Context, workload: Arc<dyn Workload>, profile: RateProfile) -> u64 {
    let max_requests = context.params.max_requests.unwrap_or_else(|| (profile.expected_requests() * 1.1) as u64 + 100);
    let config = OpenConfig { profile, max_requests, max_in_flight: open::DEFAULT_MAX_IN_FLIGHT };
    let stats = open::run_open(
        Arc::clone(&context.target),
        workload,
        Arc::clone(&context.recorder),
        config,
        context.stop.clone(),
    )
    .await;
    stats.scheduled
}

/// Window start/end in seconds since the run started.
pub(crate) fn seconds_since_start(recorder: &Recorder) -> f64 {
    recorder.elapsed().as_secs_f64()
}
