//! Hot swap under load: open-loop orders while the order handler is
//! redeployed through `PUT /admin/components/order-handler` every few
//! seconds, alternating two versions (the original bytes, and the same bytes
//! with a custom section appended, which changes the content hash and
//! nothing else). It proves that no request fails across the swaps, that
//! both versions served traffic, and compares p99 of requests that
//! overlapped a swap with the rest. With `--new-builds` every swap deploys
//! a digest never seen before (a custom section numbered by the swap), so
//! each one compiles: with the code unchanged, Cranelift's incremental cache
//! serves every function, which is what a rebuild without code changes (or
//! a `--watch` save) costs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::workload::{Mix, OrderTraffic};
use super::{Context, Findings, drive_open, seconds_since_start};
use crate::load::open::RateProfile;
use crate::summary::{self, Window};
use crate::thresholds;
use crate::variant;

/// Swaps a run must make to count as proof.
pub const MIN_SWAPS: usize = 20;
/// Gap between swaps when neither flag nor duration says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// A deploy compiles the component; on a busy 2-core machine that can take
/// seconds, but never this long.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(context: &Context) -> anyhow::Result<Findings> {
    let params = &context.params;
    let token = context.admin_token.clone().context("hotswap needs the admin token (--admin-token with --target)")?;
    let original = std::fs::read(&context.order_handler)
        .with_context(|| format!("cannot read {}", context.order_handler.display()))?;
    let variant = variant::with_custom_section(&original, "switchyard-loadtest", b"hotswap variant");
    // Enough swaps in the run: at most DEFAULT_INTERVAL apart, and closer
    // when the run is short, leaving a little room at either end.
    let interval =
        params.swap_interval.unwrap_or_else(|| DEFAULT_INTERVAL.min(params.duration.div_f64((MIN_SWAPS + 4) as f64)));

    let new_builds = params.new_builds;
    let swapper = {
        let target = Arc::clone(&context.target);
        let recorder = Arc::clone(&context.recorder);
        let stop = context.stop.clone();
        let until = Instant::now() + params.duration.saturating_sub(interval / 2);
        tokio::spawn(async move {
            let url = format!("{}/admin/components/order-handler", target.base_url);
            let (mut windows, mut failures) = (Vec::new(), Vec::new());
            let mut next_is_variant = true;
            // A fixed grid, so the time a deploy takes does not stretch the
            // cadence (and the swap count) of the run.
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if Instant::now() >= until || stop.is_stopped() {
                    break;
                }
                let bytes = if new_builds {
                    let tag = format!("hotswap build {}", windows.len() + 1);
                    variant::with_custom_section(&original, "switchyard-loadtest", tag.as_bytes())
                } else if next_is_variant {
                    variant.clone()
                } else {
                    original.clone()
                };
                let start_s = seconds_since_start(&recorder);
                let result = target
                    .client
                    .put(&url)
                    .bearer_auth(&token)
                    .header("x-switchyard-actor", "loadtest")
                    .body(bytes)
                    .timeout(DEPLOY_TIMEOUT)
                    .send()
                    .await;
                let end_s = seconds_since_start(&recorder);
                match result {
                    Ok(response) if response.status().is_success() => {}
                    Ok(response) => {
                        let status = response.status();
                        let body = response.text().await.unwrap_or_default();
                        failures.push(format!("{status}: {body}"));
                    }
                    Err(err) => failures.push(err.to_string()),
                }
                windows.push(Window { kind: "swap".into(), start_s, end_s });
                next_is_variant = !next_is_variant;
            }
            (windows, failures)
        })
    };

    let traffic = Arc::new(OrderTraffic::new(Mix::ORDERS_ONLY, params.seed));
    drive_open(context, traffic, RateProfile::constant(params.rate, params.duration)).await;
    let (windows, failures) = swapper.await.context("the swap task failed")?;

    let samples = context.recorder.snapshot();
    let (inside, outside) = summary::inside_outside(&samples, &windows, "swap");
    let versions = samples.iter().map(|s| s.version).filter(|v| *v != 0).collect::<std::collections::BTreeSet<_>>();
    let durations: Vec<f64> = windows.iter().map(|w| (w.end_s - w.start_s) * 1000.0).collect();
    let mean_swap_ms = if durations.is_empty() { 0.0 } else { durations.iter().sum::<f64>() / durations.len() as f64 };

    let mut findings =
        Findings { model: format!("open, {} rps", params.rate), common_thresholds: true, ..Findings::default() };
    findings.details.insert("swaps".into(), json!(windows.len()));
    findings.details.insert("swap interval ms".into(), json!(interval.as_millis()));
    findings.details.insert("failed swaps".into(), json!(failures));
    findings.details.insert("mean swap ms".into(), json!(mean_swap_ms.round()));
    findings.details.insert("median swap ms".into(), json!(median(&durations).round()));
    findings.details.insert("every swap a new build".into(), json!(new_builds));
    findings.details.insert("versions served".into(), json!(versions.len()));
    findings.details.insert("requests overlapping a swap".into(), json!(inside.count));
    findings.details.insert("p99 inside swap windows ms".into(), json!(inside.p99_ms));
    findings.details.insert("p99 outside swap windows ms".into(), json!(outside.p99_ms));
    findings.checks.push(thresholds::at_least("swaps", windows.len() as f64, MIN_SWAPS as f64, ""));
    findings.checks.push(thresholds::at_most("failed swaps", failures.len() as f64, 0.0, ""));
    findings.checks.push(thresholds::at_least("versions that served requests", versions.len() as f64, 2.0, ""));
    findings.windows = windows;
    Ok(findings)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}
