//! The Prometheus registry. One `Metrics` value per server instance (no global
//! recorder), so tests can run many servers in one process. Metric names live here.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    pub dependency: String,
}

/// Handles to every metric, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: Family<HttpLabels, Histogram>,
    pub http_in_flight: Gauge,
    pub dependency_up: Family<DependencyLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("factoryops");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", http_requests.clone());
        let http_request_duration = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_request_duration.clone(),
        );
        let http_in_flight = Gauge::default();
        registry.register("http_requests_in_flight", "HTTP requests being served", http_in_flight.clone());
        let dependency_up = Family::<DependencyLabels, Gauge>::default();
        registry.register("dependency_up", "1 when a dependency is healthy, 0 when degraded", dependency_up.clone());
        Self {
            registry: Arc::new(Mutex::new(registry)),
            http_requests,
            http_request_duration,
            http_in_flight,
            dependency_up,
        }
    }

    /// Buckets for the hot paths' internal latencies (group commit, rule evaluation, outbox
    /// relay), fine below 50 ms where the targets are (PUBACK and alert p99 ≤ 20 ms).
    pub fn latency_histogram() -> Histogram {
        Histogram::new([
            0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ])
    }

    /// Lets a component register its own metrics (names get the `factoryops_` prefix).
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.lock().register(name, help, metric);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry.lock()).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names() {
        let m = Metrics::new();
        m.http_requests
            .get_or_create(&HttpLabels { method: "GET".into(), route: "/healthz".into(), status: 200 })
            .inc();
        m.http_request_duration
            .get_or_create(&HttpLabels { method: "GET".into(), route: "/healthz".into(), status: 200 })
            .observe(0.002);
        let text = m.render();
        assert!(
            text.contains("factoryops_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("factoryops_http_request_duration_seconds"));
    }
}
