//! Provider outage under load: orders flow while the simulator refuses every
//! delivery (`POST /control/down`) for a stretch, then recovers. The order
//! API must not notice (the outbox holds the messages), and once the outbox
//! has drained every message must have arrived: each created order enqueues
//! three (email, SMS, webhook), so the simulator's unique receipts must equal
//! three times the orders created. Duplicates (a retry of a delivery whose
//! receipt was lost) are allowed and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::workload::{Mix, ORDERS, OrderTraffic};
use super::{Context, Findings, drive_open, seconds_since_start};
use crate::hostmetrics;
use crate::load::Outcome;
use crate::load::open::RateProfile;
use crate::summary::Window;
use crate::thresholds;

/// Messages each created order enqueues.
const MESSAGES_PER_ORDER: u64 = 3;
/// How often the drain wait polls the outbox.
const DRAIN_POLL: Duration = Duration::from_secs(1);

pub async fn run(context: &Context) -> anyhow::Result<Findings> {
    let params = &context.params;
    let token = context.admin_token.clone().context("outage needs the admin token (--admin-token with --target)")?;
    let control = context
        .control_url
        .clone()
        .context("outage needs the simulator's control API (--simulator-control with --target)")?;
    let client = context.target.client.clone();
    let base = context.target.base_url.clone();
    // The ledger must count only this run's deliveries.
    post(&client, &format!("{control}/control/reset"), None).await?;

    // Up for a quarter, down for the outage (a third by default), up again.
    let outage = params.outage.unwrap_or_else(|| params.duration / 3);
    let down_at = params.duration / 4;
    let controller = {
        let (client, control, recorder, stop) =
            (client.clone(), control.clone(), Arc::clone(&context.recorder), context.stop.clone());
        tokio::spawn(async move {
            tokio::time::sleep(down_at).await;
            if stop.is_stopped() {
                return Ok::<_, anyhow::Error>(None);
            }
            post(&client, &format!("{control}/control/down"), Some(json!({ "down": true }))).await?;
            let start_s = seconds_since_start(&recorder);
            tokio::time::sleep(outage).await;
            // Always bring the providers back, even when stopping early.
            post(&client, &format!("{control}/control/down"), Some(json!({ "down": false }))).await?;
            let end_s = seconds_since_start(&recorder);
            Ok(Some(Window { kind: "outage".into(), start_s, end_s }))
        })
    };

    let traffic = Arc::new(OrderTraffic::new(Mix::ORDERS_ONLY, params.seed));
    drive_open(context, traffic, RateProfile::constant(params.rate, params.duration)).await;
    let window = controller.await.context("the outage task failed")??;

    // Wait for the outbox to drain: nothing PENDING left.
    let drain_started = Instant::now();
    let mut counts = hostmetrics::outbox_counts(&client, &base, &token).await?;
    while hostmetrics::count_of(&counts, "PENDING") > 0 && drain_started.elapsed() < params.drain_timeout {
        tokio::time::sleep(DRAIN_POLL).await;
        counts = hostmetrics::outbox_counts(&client, &base, &token).await?;
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    let (pending, dead, delivered) = (
        hostmetrics::count_of(&counts, "PENDING"),
        hostmetrics::count_of(&counts, "DEAD"),
        hostmetrics::count_of(&counts, "DELIVERED"),
    );

    let received: serde_json::Value = client
        .get(format!("{control}/received"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("GET /received failed")?
        .json()
        .await
        .context("GET /received answered unexpected JSON")?;
    let unique = received["unique"].as_u64().unwrap_or(0);
    let duplicates = received["duplicates"].as_u64().unwrap_or(0);
    let created = context
        .recorder
        .snapshot()
        .iter()
        .filter(|s| s.endpoint == ORDERS && s.outcome == Outcome::Status(201))
        .count() as u64;
    let expected = created * MESSAGES_PER_ORDER;
    let lost = expected.saturating_sub(unique);

    let mut findings =
        Findings { model: format!("open, {} rps", params.rate), common_thresholds: true, ..Findings::default() };
    findings.details.insert("outage s".into(), json!(outage.as_secs_f64()));
    findings.details.insert("orders created".into(), json!(created));
    findings.details.insert("messages expected".into(), json!(expected));
    findings.details.insert("received unique".into(), json!(unique));
    findings.details.insert("lost".into(), json!(lost));
    findings.details.insert("duplicates".into(), json!(duplicates));
    findings.details.insert("received per channel".into(), received["channels"].clone());
    findings.details.insert("drain s".into(), json!((drain_s * 10.0).round() / 10.0));
    findings
        .details
        .insert("outbox after drain".into(), json!({ "pending": pending, "delivered": delivered, "dead": dead }));
    findings.checks.push(thresholds::at_least("orders created", created as f64, 1.0, ""));
    findings.checks.push(thresholds::at_most("lost messages", lost as f64, 0.0, ""));
    findings.checks.push(thresholds::at_most("pending after drain", pending as f64, 0.0, ""));
    findings.checks.push(thresholds::at_most("dead messages", dead as f64, 0.0, ""));
    findings.windows.extend(window);
    Ok(findings)
}

async fn post(client: &reqwest::Client, url: &str, body: Option<serde_json::Value>) -> anyhow::Result<()> {
    let mut request = client.post(url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.and_then(reqwest::Response::error_for_status).with_context(|| format!("POST {url} failed"))?;
    Ok(())
}
