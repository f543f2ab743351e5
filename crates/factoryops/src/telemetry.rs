//! Picks and opens the telemetry store, and reports on it (readiness, metrics).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use factoryops_api::{DependencyState, ReadinessCheck};
use factoryops_platform::Config;
use factoryops_platform::metrics::Metrics;
use factoryops_tsdb::{
    EmbeddedConfig, EmbeddedStore, HeadLimit, InfluxConfig, InfluxStore, RetentionPolicy, SyncMode, TelemetryStore,
    TsdbError,
};
use factoryops_types::Clock;
use prometheus_client::metrics::gauge::Gauge;

/// Where the embedded engine keeps its files.
pub fn embedded_dir(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("tsdb")
}

fn days(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n * 86_400))
}

pub fn embedded_config(config: &Config) -> EmbeddedConfig {
    let mut embedded = EmbeddedConfig::new(embedded_dir(config));
    embedded.sync = match config.tsdb.sync.as_str() {
        "always" => SyncMode::Always,
        "interval" => SyncMode::Interval(config.tsdb.sync_interval_ms.max(1)),
        _ => SyncMode::Batch,
    };
    embedded.retention.default = RetentionPolicy {
        raw: days(config.tsdb.retention_raw_days),
        minute: days(config.tsdb.retention_minute_days),
        hour: days(config.tsdb.retention_hour_days),
    };
    for (factory, days_of) in &config.tsdb.retention_factories {
        if let Ok(id) = factoryops_types::FactoryId::parse(factory.as_str()) {
            let default = embedded.retention.default;
            let pick = |set: Option<u64>, fallback: Option<Duration>| set.map_or(fallback, days);
            embedded.retention.per_factory.insert(
                id,
                RetentionPolicy {
                    raw: pick(days_of.raw_days, default.raw),
                    minute: pick(days_of.minute_days, default.minute),
                    hour: pick(days_of.hour_days, default.hour),
                },
            );
        }
    }
    embedded.head_limit = HeadLimit { points: config.tsdb.head_limit_points, ..HeadLimit::default() };
    embedded
}

/// The store the configuration asks for, plus the embedded engine itself when that is it
/// (for stats).
pub struct OpenedStore {
    pub store: Arc<dyn TelemetryStore>,
    pub embedded: Option<Arc<EmbeddedStore>>,
    /// Readiness changes of a remote store (InfluxDB), to raise platform health events.
    pub health: Option<tokio::sync::watch::Receiver<factoryops_tsdb::StoreHealth>>,
}

/// Publishes a `platform.health` event whenever the remote store goes down or recovers
/// (the notifications component turns these into operator alerts).
pub fn announce_health(
    mut health: tokio::sync::watch::Receiver<factoryops_tsdb::StoreHealth>,
    bus: Arc<dyn factoryops_platform::bus::EventBus>,
    clock: Arc<dyn Clock>,
) {
    tokio::spawn(async move {
        while health.changed().await.is_ok() {
            let state = health.borrow_and_update().clone();
            let now = clock.now_ms();
            tracing::warn!(ready = state.ready, detail = %state.detail, "telemetry store health changed");
            let event = factoryops_platform::bus::Event {
                topic: factoryops_platform::bus::topics::PLATFORM_HEALTH.into(),
                factory_id: None,
                key: format!("tsdb-{now}"),
                at_ms: now,
                payload: serde_json::json!({
                    "component": "tsdb",
                    "status": if state.ready { "recovered" } else { "degraded" },
                    "detail": state.detail,
                    "stateful": true,
                }),
            };
            let _ = bus.publish(event).await;
        }
    });
}

pub async fn open(config: &Config, clock: Arc<dyn Clock>) -> Result<OpenedStore, TsdbError> {
    if let Some(url) = &config.tsdb_url {
        let influx = InfluxConfig::new(url.expose(), config.data_dir.join("influx-buffer"));
        let store = InfluxStore::open(influx).await?;
        return Ok(OpenedStore { health: Some(store.health_watch()), store: Arc::new(store), embedded: None });
    }
    let embedded_config = embedded_config(config);
    let embedded = tokio::task::spawn_blocking(move || EmbeddedStore::open(embedded_config, clock))
        .await
        .map_err(|e| TsdbError::Unavailable(e.to_string()))??;
    let embedded = Arc::new(embedded);
    Ok(OpenedStore { store: embedded.clone(), embedded: Some(embedded), health: None })
}

/// `/readyz` asks the store.
pub struct TelemetryReadiness(pub Arc<dyn TelemetryStore>);

#[async_trait]
impl ReadinessCheck for TelemetryReadiness {
    async fn check(&self) -> DependencyState {
        let health = self.0.health().await;
        if health.ready {
            DependencyState::up("tsdb", health.detail)
        } else {
            DependencyState::down("tsdb", health.detail)
        }
    }
}

/// Disk usage of the embedded engine as `factoryops_tsdb_*` gauges, refreshed in the background.
pub fn export_stats(metrics: &Metrics, store: Arc<EmbeddedStore>, shutdown: factoryops_platform::shutdown::Shutdown) {
    let gauges: Vec<(&str, &str, Gauge)> = vec![
        ("tsdb_series", "Series in the embedded store", Gauge::default()),
        ("tsdb_points", "Points stored (raw resolution, incl. the in-memory head)", Gauge::default()),
        ("tsdb_head_points", "Points in the in-memory head, not yet in part files", Gauge::default()),
        ("tsdb_raw_bytes", "Bytes on disk of raw part data", Gauge::default()),
        ("tsdb_rollup_bytes", "Bytes on disk of 1-minute and 1-hour rollups", Gauge::default()),
        ("tsdb_wal_bytes", "Bytes in the write-ahead log", Gauge::default()),
    ];
    for (name, help, gauge) in &gauges {
        metrics.register(name, help, gauge.clone());
    }
    tokio::spawn(async move {
        loop {
            let s = store.clone();
            if let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || s.stats()).await {
                let values = [
                    stats.series as u64,
                    stats.points,
                    stats.head_points,
                    stats.raw_bytes,
                    stats.minute_bytes + stats.hour_bytes,
                    stats.wal_bytes,
                ];
                for ((_, _, gauge), value) in gauges.iter().zip(values) {
                    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
                }
            }
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = tokio::time::sleep(Duration::from_secs(15)) => {}
            }
        }
    });
}
