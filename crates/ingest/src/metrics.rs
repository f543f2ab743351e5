//! This crate's metrics, registered once on the shared registry. Names get the
//! `factoryops_` prefix, counters the `_total` suffix.

use factoryops_platform::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone)]
pub struct IngestMetrics {
    pub points: Counter,
    pub messages: Counter,
    pub rejected_properties: Family<ReasonLabels, Counter>,
    pub rejected_messages: Family<ReasonLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
    pub batch_points: Histogram,
    pub write_seconds: Histogram,
    /// From a QoS 1 PUBLISH entering the ingest pipeline to its PUBACK handed to the socket.
    pub mqtt_puback_seconds: Histogram,
    pub mqtt_connections: Gauge,
    pub mqtt_connects_refused: Family<ReasonLabels, Counter>,
    pub mqtt_acl_denied: Counter,
    pub mqtt_protocol_errors: Counter,
    pub mqtt_sessions_evicted: Family<ReasonLabels, Counter>,
    pub property_cache_evictions: Counter,
    /// Messages whose server-given timestamp waited for the clock (device > 1 message/ms).
    pub stamp_waits: Counter,
    /// Server-given timestamps issued beyond the lead bound because the wall clock went back.
    pub stamp_clock_steps: Counter,
}

impl IngestMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::unregistered();
        metrics.register("ingest_points", "Points durably stored", m.points.clone());
        metrics.register("ingest_messages", "Messages accepted (at least partly stored)", m.messages.clone());
        metrics.register(
            "ingest_rejected_properties",
            "Properties rejected inside otherwise accepted messages, by reason",
            m.rejected_properties.clone(),
        );
        metrics.register("ingest_rejected_messages", "Whole messages rejected, by reason", m.rejected_messages.clone());
        metrics.register(
            "ingest_failures",
            "Messages not acknowledged because of an internal failure, by stage",
            m.failures.clone(),
        );
        metrics.register("ingest_batch_points", "Points per group-committed store write", m.batch_points.clone());
        metrics.register(
            "ingest_write_seconds",
            "Duration of one group commit's durable store write",
            m.write_seconds.clone(),
        );
        metrics.register(
            "mqtt_puback_seconds",
            "From a QoS 1 PUBLISH entering the ingest pipeline to its PUBACK written (the server's share of the ack latency)",
            m.mqtt_puback_seconds.clone(),
        );
        metrics.register("mqtt_connections", "Open MQTT connections", m.mqtt_connections.clone());
        metrics.register("mqtt_connects_refused", "Refused MQTT CONNECTs, by reason", m.mqtt_connects_refused.clone());
        metrics.register("mqtt_acl_denied", "PUBLISHes refused by the topic ACL", m.mqtt_acl_denied.clone());
        metrics.register(
            "mqtt_protocol_errors",
            "Connections closed for a protocol violation",
            m.mqtt_protocol_errors.clone(),
        );
        metrics.register(
            "mqtt_sessions_evicted",
            "Sessions of disconnected clients removed, by reason (expired, capacity)",
            m.mqtt_sessions_evicted.clone(),
        );
        metrics.register(
            "ingest_property_cache_evictions",
            "Devices whose known properties were dropped from the in-memory cache (reloaded on demand)",
            m.property_cache_evictions.clone(),
        );
        metrics.register(
            "ingest_stamp_waits",
            "Messages without ts that waited for the clock: their device sent faster than one message per millisecond (ADR 0009)",
            m.stamp_waits.clone(),
        );
        metrics.register(
            "ingest_stamp_clock_steps",
            "Server-given timestamps issued more than the lead ahead of the clock because the wall clock went back",
            m.stamp_clock_steps.clone(),
        );
        m
    }

    /// Handles not attached to any registry (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            points: Counter::default(),
            messages: Counter::default(),
            rejected_properties: Family::default(),
            rejected_messages: Family::default(),
            failures: Family::default(),
            batch_points: Histogram::new([1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0]),
            write_seconds: Metrics::latency_histogram(),
            mqtt_puback_seconds: Metrics::latency_histogram(),
            mqtt_connections: Gauge::default(),
            mqtt_connects_refused: Family::default(),
            mqtt_acl_denied: Counter::default(),
            mqtt_protocol_errors: Counter::default(),
            mqtt_sessions_evicted: Family::default(),
            property_cache_evictions: Counter::default(),
            stamp_waits: Counter::default(),
            stamp_clock_steps: Counter::default(),
        }
    }

    pub(crate) fn reason(family: &Family<ReasonLabels, Counter>, reason: &str) {
        family.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }
}
