//! Progressive delivery under load: steady orders while the order handler is
//! deployed as a canary (`PUT /admin/components/order-handler?canary=P`)
//! five times, one after the other, each deploy waiting for the rollout's
//! decision before the next:
//!
//! | build | what it does | expected |
//! |---|---|---|
//! | `trap` | traps on every request | rolled back |
//! | `trap-tenth` | traps on one request in ten | rolled back |
//! | `fuel` | burns about eight times the fuel | rolled back |
//! | `slow` | reads the database 2,000 times more per order | rolled back |
//! | `good` | the stable build with a custom section appended | promoted |
//!
//! The faulty builds are the order handler compiled with a fault feature
//! (`components/build.sh --faults`). Each deploy's report: time from the
//! deploy's answer to the decision (the decision's own timestamp), the
//! client requests that failed in that window, and the decision with its
//! reason, and the p99 of the stable version in that window; it must stay
//! within 1.2× of its p99 when no canary runs while the good build rolls
//! out (a faulty build may slow it until it is rolled back: the slow one
//! holds the database's write lock that both versions need).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::workload::{Mix, OrderTraffic};
use super::{Context, Findings, seconds_since_start};
use crate::load::open::{self, OpenConfig, RateProfile};
use crate::load::{Recorder, Sample, StopFlag, Target, histogram};
use crate::summary::Window;
use crate::thresholds;
use crate::variant;

const COMPONENT: &str = "order-handler";
/// Stable traffic before the first deploy, so both versions have figures
/// and the steady-state p99 has samples.
const WARMUP: Duration = Duration::from_secs(8);
/// Between a decision and the next deploy.
const GAP: Duration = Duration::from_secs(3);
/// The first seconds of the run (connections, caches) are no steady state.
const SETTLE: Duration = Duration::from_secs(3);
/// Traffic after the last decision.
const TAIL: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one rollout may take before the scenario aborts it: a good
/// build's whole step schedule, with every step extended, fits.
const DECISION_TIMEOUT: Duration = Duration::from_secs(240);

/// The goals of the issue, for `trap-tenth` and every faulty build.
const MAX_DECISION_S: f64 = 5.0;
const MAX_FAILED_SHARE: f64 = 0.02;
const MAX_STABLE_P99_RATIO: f64 = 1.2;

/// One build the scenario deploys.
struct Build {
    name: &'static str,
    bytes: Vec<u8>,
    /// The decision that ends its rollout: `rollback` or `promote`.
    expected: &'static str,
}

/// What became of one canary deploy.
#[derive(Debug, Default)]
struct Outcome {
    build: &'static str,
    expected: &'static str,
    version: String,
    decision: String,
    reason: String,
    detail: String,
    decision_s: f64,
    window: Option<Window>,
    error: Option<String>,
}

pub async fn run(context: &Context) -> anyhow::Result<Findings> {
    let params = &context.params;
    let token = context.admin_token.clone().context("canary needs the admin token (--admin-token with --target)")?;
    let builds = builds(&context.order_handler)?;
    let share = params.canary_share;

    // The traffic runs until the last decision, within the run's duration.
    let traffic_stop = StopFlag::new();
    let deployer = {
        let (target, recorder) = (Arc::clone(&context.target), Arc::clone(&context.recorder));
        let (stop, traffic_stop) = (context.stop.clone(), traffic_stop.clone());
        tokio::spawn(async move {
            tokio::time::sleep(WARMUP).await;
            let mut outcomes = Vec::new();
            for build in builds {
                if stop.is_stopped() {
                    break;
                }
                outcomes.push(roll_out(&target, &recorder, &token, share, &build, &stop).await);
                tokio::time::sleep(GAP).await;
            }
            tokio::time::sleep(TAIL).await;
            traffic_stop.stop();
            outcomes
        })
    };
    let relay = relay_stop(context.stop.clone(), traffic_stop.clone());
    let profile = RateProfile::constant(params.rate, params.duration);
    let max_requests = params.max_requests.unwrap_or_else(|| (profile.expected_requests() * 1.1) as u64 + 100);
    let traffic = Arc::new(OrderTraffic::new(Mix::ORDERS_ONLY, params.seed));
    let config = OpenConfig { profile, max_requests, max_in_flight: open::DEFAULT_MAX_IN_FLIGHT };
    open::run_open(Arc::clone(&context.target), traffic, Arc::clone(&context.recorder), config, traffic_stop.clone())
        .await;
    traffic_stop.stop();
    let outcomes = deployer.await.context("the deploy task failed")?;
    relay.abort();

    Ok(findings(context, share, &outcomes))
}

/// The builds in the order they are deployed; the fault builds sit in
/// `faults/` beside the order handler.
fn builds(order_handler: &std::path::Path) -> anyhow::Result<Vec<Build>> {
    let original = std::fs::read(order_handler).with_context(|| format!("cannot read {}", order_handler.display()))?;
    let dir = order_handler.parent().unwrap_or(std::path::Path::new(".")).join("faults");
    let mut builds = Vec::new();
    for name in ["trap", "trap-tenth", "fuel", "slow"] {
        let path = dir.join(format!("order-handler-{name}.wasm"));
        let bytes = std::fs::read(&path).with_context(|| {
            format!("cannot read {} (build the fault builds: components/build.sh --faults)", path.display())
        })?;
        builds.push(Build { name, bytes, expected: "rollback" });
    }
    let good = variant::with_custom_section(&original, "switchyard-loadtest", b"canary: good build");
    builds.push(Build { name: "good", bytes: good, expected: "promote" });
    Ok(builds)
}

/// Stops the traffic when the whole run is stopped (Ctrl-C, the hard cap).
fn relay_stop(run: StopFlag, traffic: StopFlag) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !run.is_stopped() && !traffic.is_stopped() {
            tokio::time::sleep(POLL).await;
        }
        traffic.stop();
    })
}

/// Deploys `build` as a canary and waits for the rollout's decision.
async fn roll_out(
    target: &Target,
    recorder: &Recorder,
    token: &str,
    share: u8,
    build: &Build,
    stop: &StopFlag,
) -> Outcome {
    let mut outcome = Outcome { build: build.name, expected: build.expected, ..Outcome::default() };
    let url = format!("{}/admin/components/{COMPONENT}", target.base_url);
    let deployed = target
        .client
        .put(format!("{url}?canary={share}"))
        .bearer_auth(token)
        .header("x-switchyard-actor", "loadtest")
        .body(build.bytes.clone())
        .timeout(DEPLOY_TIMEOUT)
        .send()
        .await;
    let report: Value = match deployed {
        Ok(response) if response.status().is_success() => response.json().await.unwrap_or_default(),
        Ok(response) => {
            let status = response.status();
            outcome.error = Some(format!("deploy answered {status}: {}", response.text().await.unwrap_or_default()));
            return outcome;
        }
        Err(err) => {
            outcome.error = Some(format!("deploy failed: {err}"));
            return outcome;
        }
    };
    let (start_s, start_ms) = (seconds_since_start(recorder), unix_ms());
    outcome.version = report["version"].as_str().unwrap_or_default().to_owned();

    let deadline = Instant::now() + DECISION_TIMEOUT;
    let rollout = loop {
        let status = get_rollout(target, &url, token).await;
        let ours = status.as_ref().is_some_and(|s| s["version"] == outcome.version.as_str());
        if let Some(status) = status.filter(|s| ours && s["state"] != "canary") {
            break Some(status);
        }
        if Instant::now() > deadline || stop.is_stopped() {
            break None;
        }
        tokio::time::sleep(POLL).await;
    };
    let Some(rollout) = rollout else {
        // Never leave a canary serving past the scenario.
        let _ = target.client.post(format!("{url}/rollout/abort")).bearer_auth(token).send().await;
        outcome.error = Some(format!("no decision within {}s; aborted", DECISION_TIMEOUT.as_secs()));
        return outcome;
    };
    let decision = &rollout["last_decision"];
    outcome.decision = decision["decision"].as_str().unwrap_or_default().to_owned();
    outcome.reason = decision["reason"].as_str().unwrap_or_default().to_owned();
    outcome.detail = decision["detail"].as_str().unwrap_or_default().to_owned();
    let decided_ms = decision["at"].as_i64().unwrap_or(start_ms);
    outcome.decision_s = (decided_ms - start_ms).max(0) as f64 / 1000.0;
    outcome.window = Some(Window { kind: "rollout".into(), start_s, end_s: start_s + outcome.decision_s });
    outcome
}

async fn get_rollout(target: &Target, url: &str, token: &str) -> Option<Value> {
    let response = target.client.get(format!("{url}/rollout")).bearer_auth(token).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    Some(body["rollout"].clone()).filter(|r| !r.is_null())
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The report: a record per deploy, the stable version's p99 with and
/// without a canary beside it, and the checks.
fn findings(context: &Context, share: u8, outcomes: &[Outcome]) -> Findings {
    let samples = context.recorder.snapshot();
    let versions = context.recorder.versions();
    let version_of = |sample: &Sample| versions.get(usize::from(sample.version)).map_or("", String::as_str);
    let canaries: Vec<&str> = outcomes.iter().map(|o| o.version.as_str()).collect();
    let windows: Vec<Window> = outcomes.iter().filter_map(|o| o.window.clone()).collect();
    let in_windows = |s: &Sample| windows.iter().any(|w| w.overlaps(s.intended_us, s.completed_us()));
    // The version that was stable throughout: served, and never a canary.
    let stable = |s: &Sample| s.version != 0 && !canaries.contains(&version_of(s));
    let settled = crate::load::micros(SETTLE);
    let steady = histogram::stats(samples.iter().filter(|s| stable(s) && !in_windows(s) && s.intended_us >= settled));
    let ratio = |p99_ms: f64| if steady.p99_ms > 0.0 { (p99_ms / steady.p99_ms * 100.0).round() / 100.0 } else { 0.0 };

    let mut findings = Findings {
        model: format!("open, {} rps", context.params.rate),
        common_thresholds: false,
        ..Findings::default()
    };
    let mut records = Vec::new();
    for outcome in outcomes {
        let inside: Vec<&Sample> = outcome.window.as_ref().map_or_else(Vec::new, |w| {
            samples.iter().filter(|s| w.overlaps(s.intended_us, s.completed_us())).collect()
        });
        let failed = inside.iter().filter(|s| s.outcome.is_error()).count();
        let canary_served = inside.iter().filter(|s| version_of(s) == outcome.version).count();
        let failed_share = if inside.is_empty() { 0.0 } else { failed as f64 / inside.len() as f64 };
        let stable_p99 = histogram::stats(inside.iter().copied().filter(|s| stable(s))).p99_ms;
        let mut record = json!({
            "build": outcome.build,
            "version": outcome.version,
            "decision": outcome.decision,
            "reason": outcome.reason,
            "time to decision s": outcome.decision_s,
            "requests in rollout": inside.len(),
            "served by canary": canary_served,
            "failed": failed,
            "failed %": (failed_share * 10_000.0).round() / 100.0,
            "stable p99 ms": stable_p99,
            "detail": outcome.detail,
        });
        if let Some(error) = &outcome.error {
            record["error"] = json!(error);
        }
        records.push(record);
        let label = format!("{}: decision", outcome.build);
        let decided = if outcome.error.is_some() { "none".to_owned() } else { outcome.decision.clone() };
        findings.checks.push(thresholds::Check {
            passed: decided == outcome.expected,
            name: label,
            limit: outcome.expected.to_owned(),
            actual: format!("{decided} ({})", outcome.reason),
        });
        if outcome.expected == "rollback" {
            let name = format!("{}: time to decision", outcome.build);
            findings.checks.push(thresholds::at_most(&name, outcome.decision_s, MAX_DECISION_S, " s"));
        }
        if outcome.expected == "promote" {
            // A canary that is no worse must not slow the version beside it.
            let name = format!("{}: stable p99 during its rollout / steady", outcome.build);
            findings.checks.push(thresholds::at_most(&name, ratio(stable_p99), MAX_STABLE_P99_RATIO, "×"));
        }
        if outcome.build == "trap-tenth" {
            let name = "trap-tenth: failed requests in its rollout";
            findings.checks.push(thresholds::at_most(name, failed_share * 100.0, MAX_FAILED_SHARE * 100.0, "%"));
        }
    }
    findings.checks.push(thresholds::at_least("deploys decided", outcomes.len() as f64, 5.0, ""));

    // No failure may come from outside the faulty canaries: not the stable
    // version, not the good build, not a request that got no answer.
    let faulty: Vec<&str> = outcomes.iter().filter(|o| o.expected == "rollback").map(|o| o.version.as_str()).collect();
    let others_failed = samples.iter().filter(|s| s.outcome.is_error() && !faulty.contains(&version_of(s))).count();
    let name = "failed requests not served by a faulty canary";
    findings.checks.push(thresholds::at_most(name, others_failed as f64, 0.0, ""));
    let during = histogram::stats(samples.iter().filter(|s| stable(s) && in_windows(s)));
    findings.details.insert("canary share %".into(), json!(share));
    findings.details.insert("deploys".into(), Value::Array(records));
    findings.details.insert("stable p99 during canaries ms".into(), json!(during.p99_ms));
    findings.details.insert("stable p99 steady ms".into(), json!(steady.p99_ms));
    findings.details.insert("stable p99 during canaries / steady".into(), json!(ratio(during.p99_ms)));
    findings.windows = windows;
    findings
}
