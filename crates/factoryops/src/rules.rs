//! Feeds telemetry events from the bus into the rules engine, after re-evaluating the
//! latest stored values once at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use factoryops_ingest::{DeviceFilter, DeviceRegistry};
use factoryops_platform::bus::{EventBus, topics};
use factoryops_platform::shutdown::Shutdown;
use factoryops_rules::{Observation, RulesEngine};
use factoryops_tsdb::TelemetryStore;
use factoryops_types::{Clock, DeviceId, FactoryId, PropertyName};

/// How long a device's type is trusted before it is read again (scopes by device type).
const DEVICE_TYPE_TTL_MS: i64 = 30_000;

/// Devices seen within this window get their latest values re-evaluated after a restart.
const REPLAY_WINDOW_MS: i64 = 7 * 86_400_000;

/// What the consumer evaluates once before the live events: the latest stored values.
pub struct Replay {
    pub factories: Vec<FactoryId>,
    pub store: Arc<dyn TelemetryStore>,
}

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
/// It subscribes first, then replays, so nothing published meanwhile is missed.
pub fn spawn_consumer(
    engine: Arc<RulesEngine>,
    bus: Arc<dyn EventBus>,
    devices: DeviceRegistry,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
    replay: Replay,
) -> tokio::task::JoinHandle<()> {
    let mut subscription = bus.subscribe(topics::TELEMETRY, 4096);
    tokio::spawn(async move {
        let replayed = replay_latest(&engine, &devices, &replay, clock.now_ms()).await;
        tracing::info!(observations = replayed, "rules: latest values re-evaluated after start");
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

/// The in-process bus is not durable: an event between a point's durable write and its
/// evaluation is lost when the process dies, and a restarted engine has no timers for
/// silent devices. So on start every device seen within [`REPLAY_WINDOW_MS`] has its latest
/// stored values evaluated once, oldest timestamp first. Alert keys derive from
/// (rule, device, timestamp), so re-evaluating a point that was already evaluated opens
/// nothing new; a missed "back to normal" resolves the alert; silent devices get their
/// staleness timers back.
async fn replay_latest(engine: &RulesEngine, devices: &DeviceRegistry, replay: &Replay, now_ms: i64) -> usize {
    let mut fed = 0;
    for factory in &replay.factories {
        let mut cursor: Option<String> = None;
        loop {
            let filter = DeviceFilter { limit: Some(500), cursor: cursor.clone(), ..DeviceFilter::default() };
            let page = match devices.list(factory, &filter).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(factory_id = %factory, error = %e, "rules replay: cannot list devices");
                    break;
                }
            };
            for device in &page.items {
                // `last_seen` lags by a few seconds (and is lost on a crash), so only a
                // known-old device is skipped.
                if device.last_seen.is_some_and(|seen| now_ms - seen > REPLAY_WINDOW_MS) {
                    continue;
                }
                let latest = match replay.store.latest(factory, &device.id).await {
                    Ok(latest) => latest,
                    Err(e) => {
                        tracing::warn!(factory_id = %factory, device_id = %device.id, error = %e, "rules replay: no latest values");
                        continue;
                    }
                };
                let mut by_ts: BTreeMap<i64, Vec<(PropertyName, factoryops_tsdb::Value)>> = BTreeMap::new();
                for (name, sample) in latest {
                    by_ts.entry(sample.ts_ms).or_default().push((name, sample.value));
                }
                let device_type = (!device.device_type.is_empty()).then(|| device.device_type.clone());
                for (ts_ms, values) in by_ts {
                    let observation = Observation {
                        factory_id: factory.clone(),
                        device_id: device.id.clone(),
                        device_type: device_type.clone(),
                        ts_ms,
                        values,
                        event_key: format!("replay:{}:{ts_ms}", device.id),
                    };
                    match engine.feed(&observation).await {
                        Ok(_) => fed += 1,
                        Err(e) => tracing::error!(factory_id = %factory, error = %e, "rules replay: evaluation failed"),
                    }
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    fed
}
