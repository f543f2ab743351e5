//! Feeds telemetry events from the bus into the rules engine.

use std::collections::HashMap;
use std::sync::Arc;

use factoryops_ingest::DeviceRegistry;
use factoryops_platform::bus::{EventBus, topics};
use factoryops_platform::shutdown::Shutdown;
use factoryops_rules::{Observation, RulesEngine};
use factoryops_types::{Clock, DeviceId, FactoryId};

/// How long a device's type is trusted before it is read again (scopes by device type).
const DEVICE_TYPE_TTL_MS: i64 = 30_000;

struct CachedType {
    device_type: Option<String>,
    read_at: i64,
    refreshing: bool,
}

/// The device's type; `Err` when it could not be read (a cached value is then kept).
async fn device_type_of(
    devices: &DeviceRegistry,
    (factory, device): &(FactoryId, DeviceId),
) -> Result<Option<String>, ()> {
    match devices.get(factory, device).await {
        Ok(Some(d)) if !d.device_type.is_empty() => Ok(Some(d.device_type)),
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, factory_id = %factory, device_id = %device, "cannot read the device type");
            Err(())
        }
    }
}

/// A durable subscriber: a slow evaluator slows ingestion's publishing, it never loses events.
pub fn spawn_consumer(
    engine: Arc<RulesEngine>,
    bus: Arc<dyn EventBus>,
    devices: DeviceRegistry,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let mut subscription = bus.subscribe(topics::TELEMETRY, 4096);
    tokio::spawn(async move {
        // Device types are read once per device, then refreshed in the background when
        // stale: with 10k devices first seen together, refreshing inline made the consumer
        // stall for seconds every TTL (10k sequential queries), and ingestion with it.
        let types: Arc<parking_lot::Mutex<HashMap<(FactoryId, DeviceId), CachedType>>> = Arc::default();
        loop {
            let delivery = tokio::select! {
                d = subscription.next() => d,
                _ = shutdown.triggered() => return,
            };
            let Some(delivery) = delivery else { return };
            let event = &delivery.event;
            let device = event.payload["device_id"].as_str().and_then(|d| DeviceId::parse(d).ok());
            let device_type = match (&event.factory_id, device) {
                (Some(factory), Some(device)) => {
                    let now = clock.now_ms();
                    let key = (factory.clone(), device);
                    let cached = types.lock().get_mut(&key).map(|c| {
                        let stale = now - c.read_at >= DEVICE_TYPE_TTL_MS && !c.refreshing;
                        c.refreshing |= stale;
                        (c.device_type.clone(), stale)
                    });
                    match cached {
                        Some((t, stale)) => {
                            if stale {
                                let (types, devices, clock) = (types.clone(), devices.clone(), clock.clone());
                                tokio::spawn(async move {
                                    let read = device_type_of(&devices, &key).await;
                                    let mut types = types.lock();
                                    if let Some(cached) = types.get_mut(&key) {
                                        // On a failed read keep the old type and retry after the TTL.
                                        if let Ok(t) = read {
                                            cached.device_type = t;
                                        }
                                        cached.read_at = clock.now_ms();
                                        cached.refreshing = false;
                                    }
                                });
                            }
                            t
                        }
                        None => {
                            let t = device_type_of(&devices, &key).await.unwrap_or(None);
                            let mut types = types.lock();
                            if types.len() > 100_000 {
                                types.clear();
                            }
                            types.insert(key, CachedType { device_type: t.clone(), read_at: now, refreshing: false });
                            t
                        }
                    }
                }
                _ => None,
            };
            for observation in Observation::from_telemetry_event(event, device_type) {
                if let Err(e) = engine.feed(&observation).await {
                    tracing::error!(error = %e, factory_id = %observation.factory_id, "rule evaluation failed");
                }
            }
            delivery.ack().await;
        }
    })
}
