//! `switchyard:platform/metrics`: a component's own counters and histograms,
//! exported with the `app_` prefix and its `component` label. Validation and
//! the per-component series cap live in `telemetry::metrics`.

use crate::runtime::bindings::metrics::Host;
use crate::runtime::state::InvocationState;
use crate::telemetry::metrics::AppMetricKind;

impl Host for InvocationState {
    async fn counter_add(&mut self, name: String, value: u64, labels: Vec<(String, String)>) -> wasmtime::Result<()> {
        let component = &self.component;
        component.metrics.app_metric(&component.name, AppMetricKind::Counter, &name, value as f64, &labels);
        Ok(())
    }

    async fn histogram_observe(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let component = &self.component;
        component.metrics.app_metric(&component.name, AppMetricKind::Histogram, &name, value, &labels);
        Ok(())
    }
}
