//! Scenarios that are only a load shape: a steady open-loop rate (smoke,
//! baseline, mixed, soak), a closed-model warm-up, and a spike. Soak also
//! samples the host's memory to show drift over time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::workload::{Mix, OrderTraffic};
use super::{Context, Findings, drive_open};
use crate::hostmetrics::{self, RssStats};
use crate::load::closed::{self, ClosedConfig};
use crate::load::histogram;
use crate::load::open::RateProfile;
use crate::summary::{self, Window};
use crate::thresholds;

/// How often soak reads the host's RSS.
const RSS_INTERVAL: Duration = Duration::from_secs(5);

fn open_model(rate: f64) -> String {
    format!("open, {rate} rps")
}

async fn steady(context: &Context, mix: Mix) -> Findings {
    let params = &context.params;
    let traffic = Arc::new(OrderTraffic::new(mix, params.seed));
    drive_open(context, traffic, RateProfile::constant(params.rate, params.duration)).await;
    Findings { model: open_model(params.rate), common_thresholds: true, ..Findings::default() }
}

/// Modest mixed traffic; the CI gate.
pub async fn smoke(context: &Context) -> anyhow::Result<Findings> {
    Ok(steady(context, Mix::REALISTIC).await)
}

/// Orders only, at the baseline rate.
pub async fn baseline(context: &Context) -> anyhow::Result<Findings> {
    Ok(steady(context, Mix::ORDERS_ONLY).await)
}

/// Orders, reads and inventory updates with sold-out contention. Each status
/// is its own group in the summary, so successful writes (201) and
/// rejections (409, 404) have separate latencies; the counts are repeated in
/// the findings.
pub async fn mixed(context: &Context) -> anyhow::Result<Findings> {
    let mut findings = steady(context, Mix::REALISTIC).await;
    let samples = context.recorder.snapshot();
    let count = |endpoint: &str, status: u16| {
        samples.iter().filter(|s| s.endpoint == endpoint && s.outcome == crate::load::Outcome::Status(status)).count()
    };
    use super::workload::{INVENTORY, ORDERS, READS};
    findings.details.insert(
        "orders".into(),
        json!({ "201": count(ORDERS, 201), "409": count(ORDERS, 409), "404": count(ORDERS, 404) }),
    );
    findings.details.insert("reads".into(), json!({ "200": count(READS, 200), "404": count(READS, 404) }));
    findings.details.insert("inventory updates".into(), json!({ "200": count(INVENTORY, 200) }));
    Ok(findings)
}

/// Closed model: `users` virtual users as fast as the host answers.
pub async fn warmup(context: &Context) -> anyhow::Result<Findings> {
    let params = &context.params;
    let traffic = Arc::new(OrderTraffic::new(Mix::REALISTIC, params.seed));
    let config = ClosedConfig {
        users: params.users,
        duration: params.duration,
        max_requests: params.max_requests.unwrap_or(1_000_000),
        think_time: Duration::ZERO,
    };
    closed::run_closed(
        Arc::clone(&context.target),
        traffic,
        Arc::clone(&context.recorder),
        config,
        context.stop.clone(),
    )
    .await;
    Ok(Findings { model: format!("closed, {} users", params.users), common_thresholds: true, ..Findings::default() })
}

/// Shape of a spike run, as fractions of the duration: steady, ramp up,
/// hold, ramp down, steady.
const SPIKE_SHAPE: [f64; 5] = [0.25, 0.1, 0.2, 0.1, 0.35];
/// How far above the base rate the spike goes.
const SPIKE_FACTOR: f64 = 4.0;

/// Base rate, a ramp to [`SPIKE_FACTOR`] × it, and back.
pub async fn spike(context: &Context) -> anyhow::Result<Findings> {
    let params = &context.params;
    let (base, peak) = (params.rate, params.rate * SPIKE_FACTOR);
    let part = |i: usize| params.duration.mul_f64(SPIKE_SHAPE[i]);
    let profile = RateProfile::constant(base, part(0))
        .then_ramp(base, peak, part(1))
        .then_constant(peak, part(2))
        .then_ramp(peak, base, part(3))
        .then_constant(base, part(4));
    let offset = super::seconds_since_start(&context.recorder);
    let window = Window {
        kind: "spike".into(),
        start_s: offset + part(0).as_secs_f64(),
        end_s: offset + (part(0) + part(1) + part(2) + part(3)).as_secs_f64(),
    };
    let traffic = Arc::new(OrderTraffic::new(Mix::ORDERS_ONLY, params.seed));
    drive_open(context, traffic, profile).await;
    let samples = context.recorder.snapshot();
    let windows = vec![window];
    let (inside, outside) = summary::inside_outside(&samples, &windows, "spike");
    let mut findings = Findings {
        model: format!("open, {base} → {peak} → {base} rps"),
        windows,
        common_thresholds: true,
        ..Findings::default()
    };
    findings.details.insert("p99 during spike ms".into(), json!(inside.p99_ms));
    findings.details.insert("p99 outside spike ms".into(), json!(outside.p99_ms));
    Ok(findings)
}

/// Steady mixed traffic for a long time, sampling host RSS; reports memory
/// growth and the drift of p99 from the first to the last tenth of the run.
pub async fn soak(context: &Context) -> anyhow::Result<Findings> {
    let params = &context.params;
    let rss_task = context.host_pid.map(|pid| {
        let stop = context.stop.clone();
        let until = Instant::now() + params.duration;
        tokio::spawn(async move {
            let mut readings = Vec::new();
            while Instant::now() < until && !stop.is_stopped() {
                if let Some(kib) = hostmetrics::rss_kib(pid) {
                    readings.push(kib);
                }
                tokio::time::sleep(RSS_INTERVAL).await;
            }
            readings.extend(hostmetrics::rss_kib(pid));
            readings
        })
    });
    let mut findings = steady(context, Mix::REALISTIC).await;
    if let Some(task) = rss_task {
        let readings = task.await.unwrap_or_default();
        if let (Some(first), Some(last)) = (readings.first(), readings.last()) {
            // Compare against the reading a tenth into the run: the first
            // seconds include pools and caches filling, which is not drift.
            let settled = readings.get(readings.len() / 10).copied().unwrap_or(*first).max(1);
            let growth = (*last as f64 / settled as f64 - 1.0) * 100.0;
            let rss = RssStats { start: *first, end: *last, max: readings.iter().copied().max().unwrap_or(*last) };
            findings.rss = Some(rss);
            findings.details.insert("rss growth after settling %".into(), json!((growth * 10.0).round() / 10.0));
            findings.checks.push(thresholds::at_most("host RSS growth after settling", growth, 50.0, " %"));
        }
    }
    let samples = context.recorder.snapshot();
    let end = samples.iter().map(|s| s.intended_us).max().unwrap_or(0);
    let tenth = end / 10;
    let first: Vec<_> = samples.iter().filter(|s| s.intended_us < tenth).copied().collect();
    let last: Vec<_> = samples.iter().filter(|s| s.intended_us >= end.saturating_sub(tenth)).copied().collect();
    let (first, last) = (histogram::stats(&first), histogram::stats(&last));
    findings.details.insert("p99 first tenth ms".into(), json!(first.p99_ms));
    findings.details.insert("p99 last tenth ms".into(), json!(last.p99_ms));
    Ok(findings)
}
