//! A run's results as data ([`Summary`], written as `summary.json` and read
//! back by `loadtest report`) and as a page people read (`summary.md`):
//! throughput, latency percentiles per endpoint and status, errors, the
//! scenario's own findings, host metrics and the pass/fail of each threshold.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::hostmetrics::HostMetrics;
use crate::load::histogram::{self, LatencyStats};
use crate::load::{Outcome, Sample};
use crate::thresholds::{self, Check};

/// A stretch of the run worth marking: a swap, an outage, a spike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub kind: String,
    /// Seconds since the run started.
    pub start_s: f64,
    pub end_s: f64,
}

impl Window {
    /// Whether a request that ran from `start_us` to `end_us` overlapped it.
    pub fn overlaps(&self, start_us: u64, end_us: u64) -> bool {
        let (from, to) = ((self.start_s * 1e6) as u64, (self.end_s * 1e6) as u64);
        start_us <= to && end_us >= from
    }
}

/// Latency of one endpoint answering with one status (or failing one way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub endpoint: String,
    /// A status code, or `transport` / `timeout` / `client-overload`.
    pub status: String,
    pub latency: LatencyStats,
}

/// Everything a run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    /// UTC, RFC 3339.
    pub started_at: String,
    /// How load was generated, e.g. `open, 50 rps` or `closed, 8 users`.
    pub model: String,
    /// From the first intended start to the last answer.
    pub duration_s: f64,
    pub requests: u64,
    pub achieved_rps: f64,
    pub errors: u64,
    pub error_rate: f64,
    /// Every request that got an answer or failed in transit.
    pub latency: LatencyStats,
    pub groups: Vec<Group>,
    /// Requests by status (or failure).
    pub statuses: BTreeMap<String, u64>,
    /// Answers by `x-switchyard-version`.
    pub versions: BTreeMap<String, u64>,
    pub windows: Vec<Window>,
    /// Scenario-specific findings (swaps, lost messages, the knee, RSS).
    pub details: BTreeMap<String, serde_json::Value>,
    pub host: HostMetrics,
    pub checks: Vec<Check>,
    pub passed: bool,
}

impl Summary {
    /// Summarises `samples`; `versions` is the recorder's version table.
    pub fn from_samples(
        scenario: &str,
        started_at: &str,
        model: &str,
        samples: &[Sample],
        versions: &[String],
    ) -> Summary {
        let requests = samples.len() as u64;
        let errors = samples.iter().filter(|s| s.outcome.is_error()).count() as u64;
        let first = samples.iter().map(|s| s.intended_us).min().unwrap_or(0);
        let last = samples.iter().map(Sample::completed_us).max().unwrap_or(0);
        let duration_s = last.saturating_sub(first) as f64 / 1e6;
        let answered = samples.iter().filter(|s| s.outcome != Outcome::Overload).count() as f64;

        let mut by_group: BTreeMap<(&str, Outcome), Vec<Sample>> = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        let mut version_counts = BTreeMap::new();
        for sample in samples {
            by_group.entry((sample.endpoint, sample.outcome)).or_default().push(*sample);
            *statuses.entry(sample.outcome.label()).or_insert(0) += 1;
            if let Some(version) = versions.get(usize::from(sample.version)).filter(|v| !v.is_empty()) {
                *version_counts.entry(version.clone()).or_insert(0) += 1;
            }
        }
        let groups = by_group
            .into_iter()
            .map(|((endpoint, outcome), samples)| Group {
                endpoint: endpoint.to_owned(),
                status: outcome.label(),
                latency: histogram::stats(&samples),
            })
            .collect();
        Summary {
            scenario: scenario.to_owned(),
            started_at: started_at.to_owned(),
            model: model.to_owned(),
            duration_s,
            requests,
            achieved_rps: if duration_s > 0.0 { answered / duration_s } else { 0.0 },
            errors,
            error_rate: if requests > 0 { errors as f64 / requests as f64 } else { 0.0 },
            latency: histogram::stats(samples),
            groups,
            statuses,
            versions: version_counts,
            windows: Vec::new(),
            details: BTreeMap::new(),
            host: HostMetrics::default(),
            checks: Vec::new(),
            passed: false,
        }
    }

    /// Adds checks and recomputes `passed`.
    pub fn set_checks(&mut self, checks: Vec<Check>) {
        self.passed = thresholds::all_passed(&checks);
        self.checks = checks;
    }

    /// The page written as `summary.md`.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "# Load test `{}`: {verdict}\n", self.scenario);
        let _ = writeln!(out, "- started: {}", self.started_at);
        let _ = writeln!(out, "- model: {}", self.model);
        let _ = writeln!(out, "- duration: {:.1} s", self.duration_s);
        let _ = writeln!(out, "- requests: {} ({:.1} rps achieved)", self.requests, self.achieved_rps);
        let _ = writeln!(
            out,
            "- errors (5xx, transport, timeout, overload): {} ({:.3}%)",
            self.errors,
            self.error_rate * 100.0
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "- latency: p50 {:.1} ms, p90 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.max_ms
        );

        out.push_str("\n## Thresholds\n\n| check | limit | actual | result |\n|---|---|---|---|\n");
        for check in &self.checks {
            let result = if check.passed { "pass" } else { "**FAIL**" };
            let _ = writeln!(out, "| {} | {} | {} | {result} |", check.name, check.limit, check.actual);
        }

        out.push_str("\n## Latency by endpoint and status (ms)\n\n");
        out.push_str(
            "| endpoint | status | count | p50 | p90 | p95 | p99 | max |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for group in &self.groups {
            let l = &group.latency;
            let count = self.statuses_count(group);
            let _ = writeln!(
                out,
                "| {} | {} | {count} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                group.endpoint, group.status, l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.max_ms
            );
        }

        if !self.details.is_empty() {
            out.push_str("\n## Scenario findings\n\n");
            for (key, value) in &self.details {
                match value.as_array().filter(|items| items.iter().all(serde_json::Value::is_object)) {
                    // A list of records (stress steps): one line each.
                    Some(items) if !items.is_empty() => {
                        let _ = writeln!(out, "- {key}:");
                        for item in items {
                            let fields: Vec<String> = item
                                .as_object()
                                .into_iter()
                                .flatten()
                                .map(|(k, v)| format!("{k} {}", compact(v)))
                                .collect();
                            let _ = writeln!(out, "  - {}", fields.join(", "));
                        }
                    }
                    _ => {
                        let _ = writeln!(out, "- {key}: {}", compact(value));
                    }
                }
            }
        }
        if !self.versions.is_empty() {
            out.push_str("\n## Answers by version\n\n");
            for (version, count) in &self.versions {
                let _ = writeln!(out, "- `{version}`: {count}");
            }
        }
        if !self.windows.is_empty() {
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for window in &self.windows {
                *kinds.entry(window.kind.as_str()).or_insert(0) += 1;
            }
            out.push_str("\n## Marked windows\n\n");
            for (kind, n) in kinds {
                let _ = writeln!(out, "- {kind}: {n}");
            }
        }

        out.push_str("\n## Host metrics (increase during the run; outbox as at the end)\n\n");
        let host = &self.host;
        let section = |out: &mut String, title: &str, values: &BTreeMap<String, f64>| {
            if values.is_empty() {
                let _ = writeln!(out, "- {title}: (none scraped)");
            } else {
                let list: Vec<String> = values.iter().map(|(k, v)| format!("{k} {}", thresholds::number(*v))).collect();
                let _ = writeln!(out, "- {title}: {}", list.join(", "));
            }
        };
        section(&mut out, "fuel consumed", &host.fuel_consumed);
        section(&mut out, "breaker trips", &host.breaker_trips);
        section(&mut out, "outbox messages", &host.outbox_messages);
        if let Some(rss) = host.rss_kib {
            let _ = writeln!(
                out,
                "- host RSS: start {:.1} MiB, end {:.1} MiB, max {:.1} MiB",
                rss.start as f64 / 1024.0,
                rss.end as f64 / 1024.0,
                rss.max as f64 / 1024.0
            );
        }
        out.push_str("\nChart: `latency.svg` (per second: `timeline.csv`). Logs: `host.log`, `simulator.log`.\n");
        out
    }

    fn statuses_count(&self, group: &Group) -> u64 {
        // Overload samples have no latency, so the histogram count misses them.
        if group.status == Outcome::Overload.label() {
            self.statuses.get(&group.status).copied().unwrap_or(0)
        } else {
            group.latency.count
        }
    }
}

/// JSON on one line, strings without quotes.
fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Latency of the samples that overlapped any window of `kind`, and of the
/// rest.
pub fn inside_outside(samples: &[Sample], windows: &[Window], kind: &str) -> (LatencyStats, LatencyStats) {
    let windows: Vec<&Window> = windows.iter().filter(|w| w.kind == kind).collect();
    let (inside, outside): (Vec<Sample>, Vec<Sample>) =
        samples.iter().partition(|s| windows.iter().any(|w| w.overlaps(s.intended_us, s.completed_us())));
    (histogram::stats(&inside), histogram::stats(&outside))
}

/// Now in UTC as (`YYYYMMDD-HHMMSS` for directory names, RFC 3339).
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    utc_from_unix(secs)
}

/// `secs` since the Unix epoch as (`YYYYMMDD-HHMMSS`, RFC 3339).
pub fn utc_from_unix(secs: u64) -> (String, String) {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (format!("{y:04}{mo:02}{d:02}-{h:02}{m:02}{s:02}"), format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::thresholds::Thresholds;

    fn sample(endpoint: &'static str, status: Outcome, intended_ms: u64, latency_ms: u64) -> Sample {
        Sample { endpoint, outcome: status, intended_us: intended_ms * 1000, latency_us: latency_ms * 1000, version: 1 }
    }

    fn summary() -> Summary {
        let samples = vec![
            sample("POST /orders", Outcome::Status(201), 0, 10),
            sample("POST /orders", Outcome::Status(201), 500, 20),
            sample("POST /orders", Outcome::Status(409), 600, 5),
            sample("GET /orders/{id}", Outcome::Status(200), 700, 3),
            sample("GET /orders/{id}", Outcome::Transport, 900, 100),
        ];
        let versions = vec![String::new(), "3f1c0a9e12ab".to_owned()];
        let mut summary = Summary::from_samples("smoke", "2026-01-01T00:00:00Z", "open, 5 rps", &samples, &versions);
        let thresholds = Thresholds { max_error_rate: 0.0, max_p99_ms: 500.0 };
        summary.set_checks(thresholds.evaluate(summary.requests, summary.errors, summary.latency.p99_ms));
        summary
    }

    #[test]
    fn counts_errors_statuses_and_groups() {
        let summary = summary();
        assert_eq!(summary.requests, 5);
        assert_eq!(summary.errors, 1);
        assert!((summary.duration_s - 1.0).abs() < 1e-9);
        assert_eq!(summary.statuses["201"], 2);
        assert_eq!(summary.statuses["transport"], 1);
        assert_eq!(summary.versions["3f1c0a9e12ab"], 5);
        let groups: Vec<(&str, &str)> =
            summary.groups.iter().map(|g| (g.endpoint.as_str(), g.status.as_str())).collect();
        assert_eq!(
            groups,
            [
                ("GET /orders/{id}", "200"),
                ("GET /orders/{id}", "transport"),
                ("POST /orders", "201"),
                ("POST /orders", "409")
            ]
        );
        assert!(!summary.passed, "one transport error breaks a zero-error budget");
    }

    #[test]
    fn markdown_shows_the_verdict_the_failed_check_and_each_group() {
        let text = summary().to_markdown();
        assert!(text.starts_with("# Load test `smoke`: FAIL"), "{text}");
        assert!(text.contains("| error rate | <= 0.00% | 20.00% (1 of 5) | **FAIL** |"), "{text}");
        assert!(text.contains("| POST /orders | 409 | 1 |"), "{text}");
        assert!(text.contains("| POST /orders | 201 | 2 | 10.0 |"), "{text}");
    }

    #[test]
    fn lists_of_records_get_a_line_each() {
        let mut summary = summary();
        summary
            .details
            .insert("steps".into(), serde_json::json!([{ "rate": 100, "held": true }, { "rate": 200, "held": false }]));
        summary.details.insert("knee rps".into(), serde_json::json!(100.0));
        let text = summary.to_markdown();
        assert!(text.contains("- steps:\n  - held true, rate 100\n  - held false, rate 200\n"), "{text}");
        assert!(text.contains("- knee rps: 100.0"), "{text}");
    }

    #[test]
    fn round_trips_through_json() {
        let summary = summary();
        let json = serde_json::to_string(&summary).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn splits_latency_inside_and_outside_windows() {
        let samples = vec![
            sample("POST /orders", Outcome::Status(201), 0, 10),
            sample("POST /orders", Outcome::Status(201), 1000, 300),
            sample("POST /orders", Outcome::Status(201), 3000, 10),
        ];
        let windows = vec![Window { kind: "swap".into(), start_s: 1.2, end_s: 1.5 }];
        let (inside, outside) = inside_outside(&samples, &windows, "swap");
        assert_eq!(inside.count, 1);
        assert!((inside.max_ms - 300.0).abs() < 0.5);
        assert_eq!(outside.count, 2);
    }

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc_from_unix(0), ("19700101-000000".to_owned(), "1970-01-01T00:00:00Z".to_owned()));
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(utc_from_unix(1_709_210_096).1, "2024-02-29T12:34:56Z");
    }
}
