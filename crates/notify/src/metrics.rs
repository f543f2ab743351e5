//! This crate's metrics on the shared registry (`factoryops_notifications_*`).

use factoryops_platform::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub channel: String,
    /// delivered, retry, dead.
    pub outcome: String,
}

#[derive(Clone)]
pub struct NotifyMetrics {
    pub attempts: Family<OutcomeLabels, Counter>,
    /// Seconds from enqueue to delivery.
    pub delivery_latency: Family<ChannelLabels, Histogram>,
    pub backlog: Family<ChannelLabels, Gauge>,
    /// 1 while the channel's circuit is open.
    pub circuit_open: Family<ChannelLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0])
}

impl NotifyMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::unregistered();
        metrics.register("notifications_attempts", "Delivery attempts, by channel and outcome", m.attempts.clone());
        metrics.register(
            "notifications_delivery_seconds",
            "From enqueue to the provider's acceptance",
            m.delivery_latency.clone(),
        );
        metrics.register("notifications_backlog", "Notifications waiting to be sent, by channel", m.backlog.clone());
        metrics.register(
            "notifications_circuit_open",
            "1 while a channel's circuit breaker is open",
            m.circuit_open.clone(),
        );
        m
    }

    pub fn unregistered() -> Self {
        Self {
            attempts: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            backlog: Family::default(),
            circuit_open: Family::default(),
        }
    }

    pub fn outcome(&self, channel: &str, outcome: &str) {
        self.attempts.get_or_create(&OutcomeLabels { channel: channel.into(), outcome: outcome.into() }).inc();
    }
}
