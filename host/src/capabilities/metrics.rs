//! `switchyard:platform/metrics`: a component's own counters and histograms,
//! exported with the `app_` prefix and its `component` label. Validation and
//! the per-component series cap live in `telemetry::metrics`.

use wasmtime::component::HasData;

use super::bindings::metrics::Host;
use crate::telemetry::metrics::{AppMetricKind, Metrics};

/// Where a component's own metrics go, under its name.
pub struct MetricsView<'a> {
    pub component: &'a str,
    pub metrics: &'a Metrics,
}

/// Links `switchyard:platform/metrics` to a [`MetricsView`].
pub struct AppMetrics;

impl HasData for AppMetrics {
    type Data<'a> = MetricsView<'a>;
}

impl Host for MetricsView<'_> {
    async fn counter_add(&mut self, name: String, value: u64, labels: Vec<(String, String)>) -> wasmtime::Result<()> {
        self.metrics.app_metric(self.component, AppMetricKind::Counter, &name, value as f64, &labels);
        Ok(())
    }

    async fn histogram_observe(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.metrics.app_metric(self.component, AppMetricKind::Histogram, &name, value, &labels);
        Ok(())
    }
}
