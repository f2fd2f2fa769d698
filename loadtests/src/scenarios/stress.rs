//! Stress: constant-rate steps, each higher than the last, until a step
//! breaks the thresholds (error rate, p99) or the host can no longer keep up
//! with the offered rate. The knee is the last rate that held. Each step
//! waits for its own requests to finish before it is judged, so a step's
//! numbers are its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::workload::{Mix, OrderTraffic};
use super::{Context, Findings, drive_open};
use crate::load::histogram;
use crate::load::open::RateProfile;
use crate::thresholds;

/// Length of one step.
const STEP: Duration = Duration::from_secs(10);
/// A step whose answers fall below this share of the offered rate is past
/// the knee even if its latency still looks fine (the host is shedding).
const MIN_THROUGHPUT_SHARE: f64 = 0.9;

pub async fn run(context: &Context) -> anyhow::Result<Findings> {
    let params = &context.params;
    let traffic = Arc::new(OrderTraffic::new(Mix::ORDERS_ONLY, params.seed));
    let increment = params.rate;
    let deadline = Instant::now() + params.duration;
    let mut steps = Vec::new();
    let mut knee: Option<f64> = None;
    let mut rate = params.rate;
    while Instant::now() + STEP <= deadline && !context.stop.is_stopped() {
        let from_us = context.recorder.offset_us(Instant::now());
        drive_open(context, Arc::clone(&traffic) as _, RateProfile::constant(rate, STEP)).await;
        let samples: Vec<_> = context.recorder.snapshot().into_iter().filter(|s| s.intended_us >= from_us).collect();
        let stats = histogram::stats(&samples);
        let errors = samples.iter().filter(|s| s.outcome.is_error()).count() as f64;
        let error_rate = if samples.is_empty() { 1.0 } else { errors / samples.len() as f64 };
        let achieved = (samples.len() as f64 - errors) / STEP.as_secs_f64();
        let held = error_rate <= params.thresholds.max_error_rate
            && stats.p99_ms <= params.thresholds.max_p99_ms
            && achieved >= rate * MIN_THROUGHPUT_SHARE;
        steps.push(json!({
            "rate": rate, "achieved_rps": (achieved * 10.0).round() / 10.0, "p50_ms": stats.p50_ms,
            "p99_ms": stats.p99_ms, "error_rate": error_rate, "held": held,
        }));
        if !held {
            break;
        }
        knee = Some(rate);
        rate += increment;
    }
    let mut findings = Findings {
        model: format!("open, steps of +{increment} rps every {}s", STEP.as_secs()),
        common_thresholds: false,
        ..Findings::default()
    };
    findings.details.insert("steps".into(), json!(steps));
    findings.details.insert("knee rps".into(), json!(knee));
    let broke = steps.last().and_then(|s| s["held"].as_bool()).is_some_and(|held| !held);
    findings.details.insert("thresholds broke".into(), json!(broke));
    findings.checks.push(thresholds::at_least("knee (last rate that held)", knee.unwrap_or(0.0), params.rate, " rps"));
    Ok(findings)
}
