//! What the run learns from the host itself rather than from its answers:
//! the Prometheus `/metrics` text (fuel per component, breaker trips, outbox
//! messages), scraped before and after the load; the outbox counts of the
//! admin API (to wait for delivery to drain); and the host's resident memory
//! from `/proc/PID/status` (for soak drift).

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of Prometheus text exposition (comments and
/// unparsable lines are skipped: a scrape is informative, never fatal).
pub fn parse(text: &str) -> Vec<Series> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Series { name: name.to_owned(), labels, value })
}

/// Parses `a="x",b="y\"z"}` and returns the labels and the text after `}`.
fn parse_labels(text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            let (at, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break at,
                other => value.push(other),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = &after_key[end + 1..];
    }
}

/// The metrics a run reports, summed to the labels that matter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `component_fuel_consumed_total` by component.
    pub fuel_consumed: BTreeMap<String, f64>,
    /// `circuit_breaker_trips_total` by component.
    pub breaker_trips: BTreeMap<String, f64>,
    /// `outbox_messages` by `connector/status`.
    pub outbox_messages: BTreeMap<String, f64>,
}

impl Snapshot {
    /// Picks the run's metrics out of a `/metrics` text.
    pub fn from_text(text: &str) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for series in parse(text) {
            let label = |key: &str| series.labels.get(key).cloned().unwrap_or_default();
            match series.name.as_str() {
                "component_fuel_consumed_total" => {
                    *snapshot.fuel_consumed.entry(label("component")).or_default() += series.value;
                }
                "circuit_breaker_trips_total" => {
                    *snapshot.breaker_trips.entry(label("component")).or_default() += series.value;
                }
                "outbox_messages" => {
                    let key = format!("{}/{}", label("connector"), label("status"));
                    *snapshot.outbox_messages.entry(key).or_default() += series.value;
                }
                _ => {}
            }
        }
        snapshot
    }
}

/// Host metrics of a run: counters as the increase during it, gauges as
/// they stood at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostMetrics {
    pub fuel_consumed: BTreeMap<String, f64>,
    pub breaker_trips: BTreeMap<String, f64>,
    pub outbox_messages: BTreeMap<String, f64>,
    /// Resident memory of the host in KiB, when the run started it.
    pub rss_kib: Option<RssStats>,
}

/// Host RSS over the run, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RssStats {
    pub start: u64,
    pub end: u64,
    pub max: u64,
}

impl HostMetrics {
    /// Counter increases from `before` to `after`, gauges from `after`.
    pub fn between(before: &Snapshot, after: &Snapshot) -> HostMetrics {
        let increase = |b: &BTreeMap<String, f64>, a: &BTreeMap<String, f64>| {
            a.iter().map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0))).collect()
        };
        HostMetrics {
            fuel_consumed: increase(&before.fuel_consumed, &after.fuel_consumed),
            breaker_trips: increase(&before.breaker_trips, &after.breaker_trips),
            outbox_messages: after.outbox_messages.clone(),
            rss_kib: None,
        }
    }
}

/// `GET {base}/metrics`.
pub async fn scrape(client: &reqwest::Client, base_url: &str) -> anyhow::Result<Snapshot> {
    let text = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("cannot scrape /metrics")?
        .text()
        .await
        .context("cannot read /metrics")?;
    Ok(Snapshot::from_text(&text))
}

/// The host's resident set size in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One row of `GET /admin/outbox`'s counts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OutboxCount {
    pub connector: String,
    pub status: String,
    pub count: i64,
}

#[derive(Deserialize)]
struct OutboxAnswer {
    counts: Vec<OutboxCount>,
}

/// The outbox's message counts by connector and status, via the admin API.
pub async fn outbox_counts(client: &reqwest::Client, base_url: &str, token: &str) -> anyhow::Result<Vec<OutboxCount>> {
    let answer: OutboxAnswer = client
        .get(format!("{base_url}/admin/outbox?limit=1"))
        .bearer_auth(token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("GET /admin/outbox failed")?
        .json()
        .await
        .context("GET /admin/outbox answered unexpected JSON")?;
    Ok(answer.counts)
}

/// Total of `status` across connectors.
pub fn count_of(counts: &[OutboxCount], status: &str) -> i64 {
    counts.iter().filter(|c| c.status.eq_ignore_ascii_case(status)).map(|c| c.count).sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const TEXT: &str = r#"# HELP component_fuel_consumed_total Fuel consumed.
# TYPE component_fuel_consumed_total counter
component_fuel_consumed_total{component="order-handler"} 1500
component_fuel_consumed_total{component="connector-email"} 20
circuit_breaker_trips_total{component="connector-email"} 2
outbox_messages{connector="email",status="pending"} 3
outbox_messages{connector="email",status="delivered"} 40
http_request_duration_seconds_bucket{route="/orders/{id}",le="+Inf"} 7
weird{note="a \"quoted\", value"} 1
switchyard_ready 1
"#;

    #[test]
    fn parses_labels_values_and_escapes() {
        let series = parse(TEXT);
        assert_eq!(series.len(), 8);
        assert_eq!(series[5].labels["route"], "/orders/{id}");
        assert_eq!(series[5].labels["le"], "+Inf");
        assert_eq!(series[6].labels["note"], "a \"quoted\", value");
        assert_eq!(series[7].name, "switchyard_ready");
        assert_eq!(series[7].value, 1.0);
    }

    #[test]
    fn a_run_reports_counter_increases_and_final_gauges() {
        let before = Snapshot::from_text(
            "component_fuel_consumed_total{component=\"order-handler\"} 500\noutbox_messages{connector=\"email\",status=\"pending\"} 9\n",
        );
        let after = Snapshot::from_text(TEXT);
        let metrics = HostMetrics::between(&before, &after);
        assert_eq!(metrics.fuel_consumed["order-handler"], 1000.0);
        assert_eq!(metrics.fuel_consumed["connector-email"], 20.0);
        assert_eq!(metrics.breaker_trips["connector-email"], 2.0);
        assert_eq!(metrics.outbox_messages["email/pending"], 3.0);
        assert_eq!(metrics.outbox_messages["email/delivered"], 40.0);
    }

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tswitchyard\nVmPeak:\t 900 kB\nVmRSS:\t  123456 kB\nThreads: 9\n";
        assert_eq!(parse_vm_rss(status), Some(123_456));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }
}
