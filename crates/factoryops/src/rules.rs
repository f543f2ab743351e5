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
        let mut types: HashMap<(FactoryId, DeviceId), (Option<String>, i64)> = HashMap::new();
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
                    match types.get(&key) {
                        Some((t, at)) if now - at < DEVICE_TYPE_TTL_MS => t.clone(),
                        _ => {
                            let t = match devices.get(&key.0, &key.1).await {
                                Ok(Some(d)) if !d.device_type.is_empty() => Some(d.device_type),
                                _ => None,
                            };
                            if types.len() > 100_000 {
                                types.clear();
                            }
                            types.insert(key, (t.clone(), now));
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
