//! The object store wiring (ADR 0018): the adapter `object_store_url` names, wrapped once
//! with metrics, and its health turned into `platform.health` events for the operators.

use std::sync::Arc;

use factoryops_objstore::health::StorageHealth;
use factoryops_objstore::metered::{Metered, ObjStoreMetrics};
use factoryops_objstore::{ObjectStore, ObjectStoreSettings};
use factoryops_platform::Config;
use factoryops_platform::bus::{Event, EventBus, topics};
use factoryops_platform::metrics::{DependencyLabels, Metrics};
use factoryops_types::Clock;
use tokio::sync::watch;

use crate::server::StartError;

pub fn open(config: &Config, metrics: &Metrics) -> Result<Arc<dyn ObjectStore>, StartError> {
    let settings = ObjectStoreSettings::from_config(config)?;
    let store = factoryops_objstore::open(&settings).map_err(|e| StartError::ObjectStore(e.to_string()))?;
    tracing::info!(backend = store.backend(), "object store");
    Ok(Arc::new(Metered::new(store, ObjStoreMetrics::register(metrics))))
}

/// Publishes a stateful `platform.health` event (component `object_store`) on every
/// change, and keeps `factoryops_dependency_up{dependency="object_store"}` current.
pub fn announce_health(
    mut health: watch::Receiver<StorageHealth>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    metrics: &Metrics,
) {
    let gauge = metrics.dependency_up.get_or_create(&DependencyLabels { dependency: "object_store".into() }).clone();
    let initial = health.borrow_and_update().clone();
    gauge.set(i64::from(initial.available));
    tokio::spawn(async move {
        // Down at start is a condition too: raise it now, not only on the next change.
        let mut pending = (!initial.available).then_some(initial);
        loop {
            let state = match pending.take() {
                Some(state) => state,
                None => {
                    if health.changed().await.is_err() {
                        return;
                    }
                    health.borrow_and_update().clone()
                }
            };
            gauge.set(i64::from(state.available));
            let now = clock.now_ms();
            let event = Event {
                topic: topics::PLATFORM_HEALTH.into(),
                factory_id: None,
                key: format!("object_store-{now}"),
                at_ms: now,
                payload: serde_json::json!({
                    "component": "object_store",
                    "status": if state.available { "recovered" } else { "degraded" },
                    "detail": if state.available {
                        "the object store answers again; datasets, runs and reports can start".to_string()
                    } else {
                        format!("{}; new datasets, runs and reports are refused (503) until it is back", state.detail)
                    },
                    "stateful": true,
                }),
            };
            if let Err(e) = bus.publish(event).await {
                tracing::warn!(error = %e, "cannot publish a health event");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use factoryops_platform::bus::MemoryBus;
    use factoryops_types::ManualClock;

    use super::*;

    #[tokio::test]
    async fn storage_changes_raise_and_clear_a_platform_health_condition() {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let mut events = bus.subscribe(topics::PLATFORM_HEALTH, 16);
        let metrics = Metrics::new();
        let down =
            StorageHealth { available: false, detail: "storage unavailable: S3 get: refused".into(), since_ms: 1 };
        let (tx, rx) = watch::channel(down);
        announce_health(rx, bus.clone(), Arc::new(ManualClock::new(5_000)), &metrics);
        // Down at start: raised at once.
        let raised = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap();
        let p = &raised.event.payload;
        assert_eq!(
            (p["component"].as_str(), p["status"].as_str(), p["stateful"].as_bool()),
            (Some("object_store"), Some("degraded"), Some(true))
        );
        assert!(p["detail"].as_str().unwrap().contains("refused"));
        assert!(metrics.render().contains("factoryops_dependency_up{dependency=\"object_store\"} 0"));
        tx.send(StorageHealth { available: true, detail: "ok".into(), since_ms: 2 }).unwrap();
        let cleared = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap();
        assert_eq!(cleared.event.payload["status"], "recovered");
        assert!(metrics.render().contains("factoryops_dependency_up{dependency=\"object_store\"} 1"));
    }
}
