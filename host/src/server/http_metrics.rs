//! Request metrics: count, duration and in-flight gauge, labelled by the
//! matched route *template* (never the raw path), method and status.
//!
//! Handles are looked up once per (route, method, status) and cached, so a
//! request records through atomics without building label sets or touching
//! the registry.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::Method;
use metrics::{Counter, Gauge, Histogram};

use crate::telemetry::metrics::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS, Metrics};

/// The handles of one route and method, by status.
#[derive(Default)]
struct RouteHandles {
    duration: Option<Histogram>,
    requests: HashMap<u16, Counter>,
}

/// Cached request metric handles. Route templates come from the config and
/// methods and statuses are bounded, so the cache is too.
pub struct HttpMetrics {
    metrics: Arc<Metrics>,
    in_flight: Gauge,
    /// Route template → method → handles.
    routes: RwLock<HashMap<String, HashMap<Method, RouteHandles>>>,
}

impl HttpMetrics {
    pub fn new(metrics: Arc<Metrics>) -> Arc<HttpMetrics> {
        Arc::new(HttpMetrics { in_flight: metrics.gauge(HTTP_IN_FLIGHT, &[]), metrics, routes: RwLock::default() })
    }

    pub fn record(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        // The common case: both handles are cached; a shared read lock.
        if let Ok(routes) = self.routes.read()
            && let Some(handles) = routes.get(route).and_then(|methods| methods.get(method))
            && let (Some(duration), Some(requests)) = (&handles.duration, handles.requests.get(&status))
        {
            duration.record(seconds);
            requests.increment(1);
            return;
        }
        let Ok(mut routes) = self.routes.write() else { return };
        let handles = routes.entry(route.to_owned()).or_default().entry(method.clone()).or_default();
        let labels = [("route", route), ("method", method.as_str())];
        let duration = handles.duration.get_or_insert_with(|| self.metrics.histogram(HTTP_DURATION, &labels));
        duration.record(seconds);
        handles
            .requests
            .entry(status)
            .or_insert_with(|| {
                let status = status.to_string();
                self.metrics.counter(HTTP_REQUESTS, &[labels[0], labels[1], ("status", &status)])
            })
            .increment(1);
    }
}

/// Counts a request in flight until dropped, so a request whose future is
/// dropped (a timeout, a closed connection) still leaves the gauge.
pub struct InFlight(Gauge);

impl InFlight {
    pub fn start(http: &HttpMetrics) -> InFlight {
        http.in_flight.increment(1.0);
        InFlight(http.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
