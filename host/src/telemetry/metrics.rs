//! Every metric the host exports, named in one place, with its buckets.
//!
//! Each [`Metrics`] owns its own Prometheus recorder rather than installing
//! a global one, so several hosts in one process (tests) never mix counts.
//! Hot paths record through cached handles ([`ComponentMetrics`]); values
//! that are cheaper to read than to track (breaker states, outbox counts,
//! pool sizes) are sampled when `/metrics` is scraped. Labels are bounded:
//! component, version, route template, method, status, outcome, connector,
//! reason — never ids, raw paths or customer data.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label, Recorder, with_local_recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::db::outbox::Status;

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "http_requests_in_flight";
pub const INVOCATIONS: &str = "component_invocations_total";
pub const INVOCATION_DURATION: &str = "component_invocation_duration_seconds";
pub const FUEL_CONSUMED: &str = "component_fuel_consumed_total";
pub const INVOCATION_RERUNS: &str = "component_invocation_reruns_total";
pub const FUEL_PER_INVOCATION: &str = "component_fuel_per_invocation";
pub const MEMORY_PEAK: &str = "component_memory_peak_bytes";
pub const BREAKER_STATE: &str = "circuit_breaker_state";
pub const BREAKER_TRIPS: &str = "circuit_breaker_trips_total";
pub const DEPLOYMENTS: &str = "component_deployments_total";
pub const VERSION_INFO: &str = "component_version_info";
pub const OUTBOX_MESSAGES: &str = "outbox_messages";
pub const OUTBOX_DELIVERIES: &str = "outbox_deliveries_total";
pub const OUTBOX_LAG: &str = "outbox_delivery_lag_seconds";
/// Dashboard streams closed because their client fell behind.
pub const DASHBOARD_STREAMS_DROPPED: &str = "dashboard_streams_dropped_total";
pub const OUTBOX_OLDEST_PENDING: &str = "outbox_oldest_pending_age_seconds";
pub const ADMISSION_REJECTED: &str = "admission_rejected_total";
pub const ADMISSION_QUEUE_DEPTH: &str = "admission_queue_depth";
pub const ADMISSION_RUNNING: &str = "admission_running";
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
pub const DB_POOL_MAX: &str = "db_pool_max_connections";
pub const READY: &str = "switchyard_ready";
pub const BUILD_INFO: &str = "switchyard_build_info";
pub const LOG_LINES_DROPPED: &str = "log_lines_dropped_total";
pub const CLUSTER_CONVERGED: &str = "cluster_converged";
pub const CLUSTER_REPLICAS: &str = "cluster_replicas";
pub const CLUSTER_FANOUT: &str = "cluster_fanout_total";
pub const ROLLOUT_WEIGHT: &str = "component_rollout_weight";
pub const ROLLOUT_DECISIONS: &str = "component_rollout_decisions_total";
pub const SERIES_DROPPED: &str = "component_metric_series_dropped_total";
pub const INSTANCES_STARTED: &str = "component_instances_started_total";
pub const INSTANCES_RETIRED: &str = "component_instances_retired_total";
pub const INSTANCES_IDLE: &str = "component_instances_idle";
pub const POOL_COMPONENT_INSTANCES: &str = "wasmtime_pool_component_instances";
pub const POOL_MEMORIES: &str = "wasmtime_pool_memories";
pub const POOL_WARM_MEMORIES: &str = "wasmtime_pool_unused_warm_memories";
pub const POOL_RESIDENT_BYTES: &str = "wasmtime_pool_unused_memory_bytes_resident";
/// Prefix of metrics components emit themselves.
pub const APP_PREFIX: &str = "app_";

/// Label values of the bounded label sets, registered at zero up front so
/// dashboards and `increase()` see a series before the first event.
/// `runtime::Outcome` and the dispatcher's delivery outcomes name themselves
/// by position in these lists.
pub const OUTCOMES: [&str; 6] = ["ok", "error", "trap", "fuel_exhausted", "timeout", "rejected"];
pub const DELIVERY_OUTCOMES: [&str; 4] = ["delivered", "retry", "dead", "skipped_open_breaker"];
pub const DEPLOY_RESULTS: [&str; 3] = ["accepted", "rejected", "rollback"];
/// Why a rollout rolls a version back; `rollout::judge::Reason` names itself by position here.
pub const ROLLBACK_REASONS: [&str; 7] =
    ["error_rate", "fuel", "memory", "p50", "p99", "stable_error_rate", "stable_p99"];
/// Why a reused instance was retired; `runtime::reuse::Retired` names itself by position here.
pub const RETIRE_REASONS: [&str; 7] = ["max_requests", "failed", "stopped", "swapped", "idle", "output", "evicted"];
/// Why a request was refused before reaching its component.
pub const ADMISSION_REASONS: [&str; 5] = ["queue_full", "queue_timeout", "breaker_open", "rate_limited", "unknown_key"];

/// Seconds: 50 µs (a warm trivial call) to 10 s (a deadline).
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Delivery lag: from a millisecond to an hour-long outage.
const LAG_BUCKETS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// Fuel per call: a trivial guest burns thousands, a budget is 10⁷–10⁹.
const FUEL_BUCKETS: &[f64] = &[1e3, 5e3, 1e4, 5e4, 1e5, 5e5, 1e6, 5e6, 1e7, 5e7, 1e8, 1e9];
/// Components' own histograms: a wide decade-and-a-half ladder.
const APP_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1e3, 5e3, 1e4, 5e4, 1e5, 5e5, 1e6, 5e6, 1e7];

/// Distinct series one component may create through the `metrics` interface.
pub const DEFAULT_SERIES_CAP: usize = 200;
/// Labels a component may attach to one of its metrics (plus `component`).
pub const MAX_APP_LABELS: usize = 3;

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Series components have created through the `metrics` interface.
    app_series: Mutex<AppSeries>,
    series_cap: usize,
    /// When false every handle is a no-op: the cost of metrics can be
    /// measured by turning them off.
    enabled: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Handles for one component version, resolved once at load.
#[derive(Clone)]
pub struct ComponentMetrics {
    invocations: [Counter; 6],
    duration: Histogram,
    fuel: Counter,
    fuel_per_invocation: Histogram,
    memory_peak: Gauge,
    /// Highest peak seen, so the gauge only ever rises.
    peak_seen: Arc<AtomicU64>,
}

impl ComponentMetrics {
    /// Counts one invocation; `ran` is false when it was refused before
    /// running, and then has no cost to record.
    pub fn record(&self, outcome_index: usize, ran: bool, latency: Duration, fuel: u64, memory_peak: usize) {
        if let Some(counter) = self.invocations.get(outcome_index) {
            counter.increment(1);
        }
        if !ran {
            return;
        }
        self.duration.record(latency.as_secs_f64());
        self.fuel.increment(fuel);
        self.fuel_per_invocation.record(fuel as f64);
        let peak = memory_peak as u64;
        if self.peak_seen.fetch_max(peak, Ordering::Relaxed) < peak {
            self.memory_peak.set(peak as f64);
        }
    }
}

impl Metrics {
    pub fn new(series_cap: usize) -> Arc<Metrics> {
        Self::with_enabled(series_cap, true)
    }

    /// Metrics that record nothing and render an empty exposition.
    pub fn disabled() -> Arc<Metrics> {
        Self::with_enabled(0, false)
    }

    fn with_enabled(series_cap: usize, enabled: bool) -> Arc<Metrics> {
        let builder = PrometheusBuilder::new();
        let builder = [
            (Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS),
            (Matcher::Full(OUTBOX_LAG.into()), LAG_BUCKETS),
            (Matcher::Full(FUEL_PER_INVOCATION.into()), FUEL_BUCKETS),
            (Matcher::Prefix(APP_PREFIX.into()), APP_BUCKETS),
        ]
        .into_iter()
        .fold(builder, |builder, (matcher, buckets)| match builder.set_buckets_for_metric(matcher, buckets) {
            Ok(builder) => builder,
            // Only empty bucket lists are refused; ours are constants.
            Err(_) => PrometheusBuilder::new(),
        });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        with_local_recorder(&recorder, describe);
        let metrics =
            Arc::new(Metrics { recorder, handle, app_series: Mutex::new(AppSeries::default()), series_cap, enabled });
        metrics.gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]).set(1.0);
        for reason in ADMISSION_REASONS {
            metrics.counter(ADMISSION_REJECTED, &[("reason", reason)]).increment(0);
        }
        metrics.gauge(HTTP_IN_FLIGHT, &[]).set(0.0);
        metrics
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram samples into their buckets; run periodically so an
    /// unscraped host does not accumulate samples.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        if !self.enabled {
            return Counter::noop();
        }
        let labels = owned(labels);
        with_local_recorder(&self.recorder, || metrics::counter!(name, labels))
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        if !self.enabled {
            return Gauge::noop();
        }
        let labels = owned(labels);
        with_local_recorder(&self.recorder, || metrics::gauge!(name, labels))
    }

    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        if !self.enabled {
            return Histogram::noop();
        }
        let labels = owned(labels);
        with_local_recorder(&self.recorder, || metrics::histogram!(name, labels))
    }

    /// Registers a component version: its handles, its zeroed outcome
    /// series, and its `component_version_info` (with the export it is
    /// called through, which for `wasi:http` names the interface's version).
    pub fn component(&self, component: &str, version: &str, export: &str) -> ComponentMetrics {
        let invocations = OUTCOMES.map(|outcome| {
            self.counter(INVOCATIONS, &[("component", component), ("version", version), ("outcome", outcome)])
        });
        for result in DEPLOY_RESULTS {
            self.counter(DEPLOYMENTS, &[("component", component), ("result", result)]).increment(0);
        }
        self.counter(SERIES_DROPPED, &[("component", component)]).increment(0);
        self.version_info(component, version, export, true);
        ComponentMetrics {
            invocations,
            duration: self.histogram(INVOCATION_DURATION, &[("component", component)]),
            fuel: self.counter(FUEL_CONSUMED, &[("component", component)]),
            fuel_per_invocation: self.histogram(FUEL_PER_INVOCATION, &[("component", component)]),
            memory_peak: self.gauge(MEMORY_PEAK, &[("component", component)]),
            peak_seen: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `component_version_info` of a version: 1 while it serves, else 0.
    pub fn version_info(&self, component: &str, version: &str, export: &str, serving: bool) {
        let labels = [("component", component), ("version", version), ("export", export)];
        self.gauge(VERSION_INFO, &labels).set(if serving { 1.0 } else { 0.0 });
    }

    /// A version serving all of a component's invocations, and zeroed
    /// rollback series, so the rollout panels and alert see a series
    /// before the first rollout.
    pub fn sole_version(&self, component: &str, version: &str) {
        self.gauge(ROLLOUT_WEIGHT, &[("component", component), ("version", version)]).set(100.0);
        for reason in ROLLBACK_REASONS {
            let labels = [("component", component), ("decision", "rollback"), ("reason", reason)];
            self.counter(ROLLOUT_DECISIONS, &labels).increment(0);
        }
    }

    /// Zeroed series for a connector's statuses and delivery outcomes.
    pub fn connector(&self, connector: &str) {
        for status in Status::ALL {
            self.gauge(OUTBOX_MESSAGES, &[("connector", connector), ("status", status.label())]).set(0.0);
        }
        for outcome in DELIVERY_OUTCOMES {
            self.counter(OUTBOX_DELIVERIES, &[("connector", connector), ("outcome", outcome)]).increment(0);
        }
        self.gauge(OUTBOX_OLDEST_PENDING, &[("connector", connector)]).set(0.0);
    }

    /// A component-emitted counter increment or histogram observation.
    /// Invalid names or labels, and series past the component's cap, are
    /// dropped and counted.
    pub fn app_metric(
        &self,
        component: &str,
        kind: AppMetricKind,
        name: &str,
        value: f64,
        labels: &[(String, String)],
    ) {
        if !self.enabled {
            return;
        }
        if !valid_name(name)
            || labels.len() > MAX_APP_LABELS
            || labels.iter().any(|(k, _)| !valid_label(k) || RESERVED_LABELS.contains(&k.as_str()))
            || !value.is_finite()
        {
            self.counter(SERIES_DROPPED, &[("component", component)]).increment(1);
            return;
        }
        let full_name = format!("{APP_PREFIX}{name}");
        let mut key = full_name.clone();
        for (k, v) in labels {
            key.push_str(&format!("\u{1f}{k}={v}"));
        }
        let (admitted, new_name) = {
            let mut series = self.app_series.lock().unwrap_or_else(|p| p.into_inner());
            // One name is one kind for the whole host: a scraper refuses an
            // exposition that declares a name twice, and every other
            // metric with it.
            let known_kind = series.kinds.get(&full_name).copied();
            let known = series.by_component.entry(component.to_owned()).or_default();
            let admitted = known_kind.is_none_or(|known_kind| known_kind == kind)
                && (known.contains(&key) || (known.len() < self.series_cap && known.insert(key)));
            // Only admitted names are remembered, so a component past its
            // cap cannot grow this map either.
            if admitted && known_kind.is_none() {
                series.kinds.insert(full_name.clone(), kind);
            }
            (admitted, known_kind.is_none())
        };
        if !admitted {
            self.counter(SERIES_DROPPED, &[("component", component)]).increment(1);
            return;
        }
        if new_name {
            let help = metrics::SharedString::from("Emitted by the component.");
            match kind {
                AppMetricKind::Counter => self.recorder.describe_counter(full_name.clone().into(), None, help),
                AppMetricKind::Histogram => self.recorder.describe_histogram(full_name.clone().into(), None, help),
            }
        }
        let mut all: Vec<Label> = vec![Label::new("component", component.to_owned())];
        all.extend(labels.iter().map(|(k, v)| Label::new(k.clone(), v.clone())));
        let key = metrics::Key::from_parts(full_name, all);
        let metadata = metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        match kind {
            AppMetricKind::Counter => self.recorder.register_counter(&key, &metadata).increment(value as u64),
            AppMetricKind::Histogram => self.recorder.register_histogram(&key, &metadata).record(value),
        }
    }
}

#[derive(Default)]
struct AppSeries {
    /// Series keys (name and labels) per component, for the cap.
    by_component: HashMap<String, HashSet<String>>,
    /// The kind of every name emitted so far (and so described).
    kinds: HashMap<String, AppMetricKind>,
}

/// HELP text of every host metric.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route template, method and status.");
    describe_histogram!(HTTP_DURATION, "HTTP request latency by route template and method, in seconds.");
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being served.");
    describe_counter!(INVOCATIONS, "Component invocations by version and outcome.");
    describe_counter!(LOG_LINES_DROPPED, "Log lines dropped because the output could not keep up.");
    describe_counter!(DASHBOARD_STREAMS_DROPPED, "Dashboard streams closed because their client fell behind.");
    describe_gauge!(ROLLOUT_WEIGHT, "Share (%) of a component's invocations each version gets during a rollout.");
    describe_counter!(
        ROLLOUT_DECISIONS,
        "Rollout decisions by decision (advance, promote, rollback, abort) and reason."
    );
    describe_histogram!(INVOCATION_DURATION, "Component invocation latency (instantiate and call), in seconds.");
    describe_counter!(FUEL_CONSUMED, "Fuel consumed by a component's invocations.");
    describe_counter!(
        INVOCATION_RERUNS,
        "Invocations run again because what they read changed before their first write."
    );
    describe_histogram!(FUEL_PER_INVOCATION, "Fuel consumed per invocation.");
    describe_gauge!(MEMORY_PEAK, "Largest linear memory an instance of the component grew to, in bytes.");
    describe_gauge!(BREAKER_STATE, "Circuit breaker state: 0 closed, 1 open, 2 half-open.");
    describe_counter!(BREAKER_TRIPS, "Times the component's circuit breaker opened.");
    describe_counter!(DEPLOYMENTS, "Deployment attempts by result.");
    describe_gauge!(VERSION_INFO, "1 for the version of each component that is serving.");
    describe_gauge!(OUTBOX_MESSAGES, "Outbox messages by connector and status.");
    describe_counter!(OUTBOX_DELIVERIES, "Outbox delivery attempts by connector and outcome.");
    describe_histogram!(OUTBOX_LAG, "Time from enqueue to delivery, in seconds.");
    describe_gauge!(OUTBOX_OLDEST_PENDING, "Age of the oldest pending message per connector, in seconds.");
    describe_counter!(ADMISSION_REJECTED, "Requests refused before reaching their component, by reason.");
    describe_gauge!(ADMISSION_QUEUE_DEPTH, "Requests waiting for an invocation slot, per component.");
    describe_gauge!(ADMISSION_RUNNING, "Invocations holding a slot, per component.");
    describe_gauge!(DB_POOL_CONNECTIONS, "Database pool connections by state.");
    describe_gauge!(DB_POOL_MAX, "Configured maximum database pool size.");
    describe_gauge!(READY, "1 when the host is ready to serve (database reachable).");
    describe_gauge!(BUILD_INFO, "Build of the running host.");
    describe_gauge!(CLUSTER_CONVERGED, "1 when this replica could swap in every component's deployed version.");
    describe_gauge!(CLUSTER_REPLICAS, "Replicas in the replicas table by state (live, gone), as this one reads it.");
    describe_counter!(
        CLUSTER_FANOUT,
        "Versions another replica deployed, swapped in here (swapped) or refused here (failed)."
    );
    describe_counter!(SERIES_DROPPED, "Component-emitted metric samples dropped (invalid, or over the series cap).");
    describe_counter!(INSTANCES_STARTED, "Instances started to be reused, per component that reuses them.");
    describe_counter!(INSTANCES_RETIRED, "Reused instances retired, by reason.");
    describe_gauge!(INSTANCES_IDLE, "Reused instances waiting idle for a request.");
    describe_gauge!(POOL_COMPONENT_INSTANCES, "Component instances allocated from the pooling allocator.");
    describe_gauge!(POOL_MEMORIES, "Linear memories allocated from the pooling allocator.");
    describe_gauge!(POOL_WARM_MEMORIES, "Unused pool memory slots kept warm.");
    describe_gauge!(POOL_RESIDENT_BYTES, "Bytes kept resident in unused pool memory slots.");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppMetricKind {
    Counter,
    Histogram,
}

fn owned(labels: &[(&'static str, &str)]) -> Vec<Label> {
    labels.iter().map(|(k, v)| Label::new(*k, (*v).to_owned())).collect()
}

/// Prometheus metric name syntax, lower case, without our prefix.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 100
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Labels a component may not set: `component` is the host's, and
/// Prometheus gives `le` to histogram buckets and `quantile` to summaries;
/// a histogram with its own `le` repeats the label, which fails the scrape.
const RESERVED_LABELS: [&str; 3] = ["component", "le", "quantile"];

fn valid_label(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 50
        && !name.starts_with("__")
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_metrics_are_prefixed_labelled_and_capped() {
        let metrics = Metrics::new(2);
        let labels = vec![("channel".to_owned(), "web".to_owned())];
        metrics.app_metric("shop", AppMetricKind::Counter, "orders_total", 2.0, &labels);
        metrics.app_metric("shop", AppMetricKind::Counter, "orders_total", 3.0, &labels);
        metrics.app_metric("shop", AppMetricKind::Histogram, "order_value", 250.0, &[]);
        // Third distinct series: over the cap of 2.
        metrics.app_metric("shop", AppMetricKind::Counter, "refunds_total", 1.0, &[]);
        // Invalid: bad name, reserved label, too many labels.
        metrics.app_metric("shop", AppMetricKind::Counter, "Bad-Name", 1.0, &[]);
        metrics.app_metric("shop", AppMetricKind::Counter, "x", 1.0, &[("component".into(), "spoof".into())]);
        metrics.app_metric("shop", AppMetricKind::Histogram, "y", 1.0, &[("le".into(), "0.5".into())]);
        let four: Vec<_> = (0..4).map(|i| (format!("l{i}"), "v".to_owned())).collect();
        metrics.app_metric("shop", AppMetricKind::Counter, "x", 1.0, &four);

        let text = metrics.render();
        assert!(text.contains(r#"app_orders_total{component="shop",channel="web"} 5"#), "{text}");
        assert!(text.contains(r#"app_order_value_count{component="shop"} 1"#), "{text}");
        assert!(!text.contains("app_refunds_total"), "{text}");
        assert!(!text.contains("app_y"), "{text}");
        assert!(text.contains(r#"component_metric_series_dropped_total{component="shop"} 5"#), "{text}");
    }

    #[test]
    fn a_name_keeps_the_kind_it_was_first_emitted_as() {
        let metrics = Metrics::new(8);
        metrics.app_metric("shop", AppMetricKind::Counter, "latency", 1.0, &[]);
        metrics.app_metric("shop", AppMetricKind::Histogram, "latency", 0.5, &[]);
        metrics.app_metric("till", AppMetricKind::Histogram, "latency", 0.5, &[]);
        let text = metrics.render();
        assert_eq!(text.matches("# TYPE app_latency ").count(), 1, "{text}");
        assert!(text.contains(r#"app_latency{component="shop"} 1"#), "{text}");
        assert!(text.contains(r#"component_metric_series_dropped_total{component="shop"} 1"#), "{text}");
        assert!(text.contains(r#"component_metric_series_dropped_total{component="till"} 1"#), "{text}");
    }

    #[test]
    fn names_and_labels_follow_prometheus_syntax() {
        assert!(valid_name("orders_created_total"));
        assert!(!valid_name("9lives"));
        assert!(!valid_name("has-dash"));
        assert!(!valid_name(""));
        assert!(valid_label("status_class"));
        assert!(!valid_label("__reserved"));
        assert!(!valid_label("Upper"));
    }
}
