//! The event-bus port and its in-process implementation.
//!
//! Two kinds of subscribers: a *durable* one (rules, notifications) must see every
//! event, so a full queue slows the publisher (back-pressure, never a drop); a *lossy*
//! one (the portal's live stream) must never slow the publisher, so when its queue is
//! full it is closed with a reason and the client reconnects.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use factoryops_types::{DeviceId, FactoryId, PropertyName, Value};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Topics components publish on.
pub mod topics {
    /// Carried by the typed lane ([`super::EventBus::publish_telemetry`] /
    /// [`super::EventBus::subscribe_telemetry`]): an `Event` published under this name
    /// reaches only generic subscribers, never the rules or the live stream.
    pub const TELEMETRY: &str = "telemetry";
    pub const ALERTS: &str = "alerts";
    pub const PLATFORM_HEALTH: &str = "platform.health";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub topic: String,
    /// `None` only for platform-level events (health), never for tenant data.
    pub factory_id: Option<FactoryId>,
    /// Stable identity of the event, so consumers can de-duplicate redeliveries.
    pub key: String,
    pub at_ms: i64,
    pub payload: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("event bus closed")]
    Closed,
}

/// One received event. Call [`Delivery::ack`] once it is handled; unacknowledged
/// events are redelivered by durable bus backends.
pub struct Delivery<T = Event> {
    pub event: Arc<T>,
}

impl<T> Delivery<T> {
    pub async fn ack(self) {}
}

pub struct Subscription<T = Event> {
    rx: mpsc::Receiver<Arc<T>>,
    closed_reason: Arc<Mutex<Option<String>>>,
}

impl<T> Subscription<T> {
    /// The next event, or `None` once the subscription is closed (see [`Subscription::closed_reason`]).
    pub async fn next(&mut self) -> Option<Delivery<T>> {
        self.rx.recv().await.map(|event| Delivery { event })
    }

    /// Why the bus closed this subscription, e.g. a lossy subscriber that fell behind.
    pub fn closed_reason(&self) -> Option<String> {
        self.closed_reason.lock().clone()
    }
}

/// The durable values of device messages, as ingestion publishes them after the write:
/// one batch per group commit and factory. Typed rather than JSON because it is the hot
/// path (every message); [`TelemetryMessage::to_json`] gives the documented JSON shape
/// for the edges (live stream, a networked bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryBatch {
    pub factory_id: FactoryId,
    /// When the batch became durable.
    pub at_ms: i64,
    pub messages: Vec<TelemetryMessage>,
}

/// One device message's accepted values; they share the message's timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryMessage {
    pub device_id: DeviceId,
    pub ts_ms: i64,
    /// Stable identity of the message: a redelivery has the same key.
    pub key: String,
    pub values: Vec<(PropertyName, Value)>,
    /// The labels of the state properties among `values` (stored as codes, ADR 0014);
    /// empty for a message without states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(PropertyName, String)>,
}

impl TelemetryMessage {
    /// `{"factory_id", "device_id", "points": [{"property", "ts_ms", "value"}]}`; a state
    /// property's `value` is its label.
    pub fn to_json(&self, factory: &FactoryId) -> serde_json::Value {
        use serde_json::Value as Json;
        let points: Vec<Json> = self
            .values
            .iter()
            .map(|(name, value)| {
                let mut point = serde_json::Map::new();
                point.insert("property".to_owned(), Json::String(name.as_str().to_owned()));
                point.insert("ts_ms".to_owned(), Json::from(self.ts_ms));
                let label = self.labels.iter().find(|(n, _)| n == name).map(|(_, l)| l.as_str());
                let value = match (label, value) {
                    (Some(label), _) => Json::String(label.to_owned()),
                    (None, Value::Float(f)) => Json::from(*f),
                    (None, Value::Bool(b)) => Json::Bool(*b),
                };
                point.insert("value".to_owned(), value);
                Json::Object(point)
            })
            .collect();
        let mut payload = serde_json::Map::new();
        payload.insert("factory_id".to_owned(), Json::String(factory.as_str().to_owned()));
        payload.insert("device_id".to_owned(), Json::String(self.device_id.as_str().to_owned()));
        payload.insert("points".to_owned(), Json::Array(points));
        Json::Object(payload)
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes to every subscriber of the event's topic; waits while a durable
    /// subscriber's queue is full.
    async fn publish(&self, event: Event) -> Result<(), BusError>;

    /// A subscriber that sees every event; `capacity` bounds its queue.
    fn subscribe(&self, topic: &str, capacity: usize) -> Subscription;

    /// A subscriber that never slows publishers; closed with a reason when it falls behind.
    fn subscribe_lossy(&self, topic: &str, capacity: usize) -> Subscription;

    /// Publishes on the `telemetry` topic; waits while a durable subscriber's queue is full.
    async fn publish_telemetry(&self, batch: TelemetryBatch) -> Result<(), BusError>;

    /// A `telemetry` subscriber that sees every batch; `capacity` counts batches.
    fn subscribe_telemetry(&self, capacity: usize) -> Subscription<TelemetryBatch>;

    /// A `telemetry` subscriber that never slows ingestion.
    fn subscribe_telemetry_lossy(&self, capacity: usize) -> Subscription<TelemetryBatch>;

    /// True when every subscriber lives in this process (the in-process bus). A component
    /// may then publish right after its commit instead of through the transactional
    /// outbox: a crash between commit and publish loses only an event whose subscribers
    /// die in the same crash. A bus that crosses processes keeps the outbox.
    fn in_process(&self) -> bool {
        false
    }
}

struct Subscriber<T> {
    tx: mpsc::Sender<Arc<T>>,
    lossy: bool,
    closed_reason: Arc<Mutex<Option<String>>>,
}

/// The subscribers of one topic.
struct Fanout<T> {
    subscribers: RwLock<Vec<Arc<Subscriber<T>>>>,
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Self { subscribers: RwLock::new(Vec::new()) }
    }
}

impl<T: Send + Sync> Fanout<T> {
    fn add(&self, capacity: usize, lossy: bool) -> Subscription<T> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let closed_reason = Arc::new(Mutex::new(None));
        self.subscribers.write().push(Arc::new(Subscriber { tx, lossy, closed_reason: closed_reason.clone() }));
        Subscription { rx, closed_reason }
    }

    async fn publish(&self, event: T) {
        let subscribers: Vec<Arc<Subscriber<T>>> = self.subscribers.read().clone();
        let event = Arc::new(event);
        let mut gone = Vec::new();
        for subscriber in subscribers {
            if subscriber.lossy {
                match subscriber.tx.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        *subscriber.closed_reason.lock() = Some("subscriber fell behind; its queue was full".into());
                        gone.push(subscriber);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => gone.push(subscriber),
                }
            } else if subscriber.tx.send(event.clone()).await.is_err() {
                gone.push(subscriber);
            }
        }
        if !gone.is_empty() {
            self.subscribers.write().retain(|s| !gone.iter().any(|g| Arc::ptr_eq(g, s)));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.subscribers.read().len()
    }
}

/// The all-in-one bus: bounded in-process queues.
#[derive(Default)]
pub struct MemoryBus {
    topics: RwLock<HashMap<String, Arc<Fanout<Event>>>>,
    telemetry: Fanout<TelemetryBatch>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn topic(&self, topic: &str) -> Arc<Fanout<Event>> {
        if let Some(fanout) = self.topics.read().get(topic) {
            return fanout.clone();
        }
        self.topics.write().entry(topic.to_string()).or_default().clone()
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    fn in_process(&self) -> bool {
        true
    }

    async fn publish(&self, event: Event) -> Result<(), BusError> {
        let fanout = self.topics.read().get(&event.topic).cloned();
        if let Some(fanout) = fanout {
            fanout.publish(event).await;
        }
        Ok(())
    }

    fn subscribe(&self, topic: &str, capacity: usize) -> Subscription {
        self.topic(topic).add(capacity, false)
    }

    fn subscribe_lossy(&self, topic: &str, capacity: usize) -> Subscription {
        self.topic(topic).add(capacity, true)
    }

    async fn publish_telemetry(&self, batch: TelemetryBatch) -> Result<(), BusError> {
        self.telemetry.publish(batch).await;
        Ok(())
    }

    fn subscribe_telemetry(&self, capacity: usize) -> Subscription<TelemetryBatch> {
        self.telemetry.add(capacity, false)
    }

    fn subscribe_telemetry_lossy(&self, capacity: usize) -> Subscription<TelemetryBatch> {
        self.telemetry.add(capacity, true)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(n: u32) -> Event {
        Event {
            topic: topics::TELEMETRY.into(),
            factory_id: Some(FactoryId::parse("f1").unwrap()),
            key: n.to_string(),
            at_ms: 0,
            payload: serde_json::json!({ "n": n }),
        }
    }

    #[tokio::test]
    async fn durable_subscriber_sees_everything_and_pushes_back() {
        let bus = Arc::new(MemoryBus::new());
        let mut sub = bus.subscribe(topics::TELEMETRY, 2);
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for n in 0..10 {
                    bus.publish(event(n)).await.unwrap();
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!publisher.is_finished(), "publisher must wait for the slow subscriber");
        for n in 0..10 {
            let d = sub.next().await.unwrap();
            assert_eq!(d.event.key, n.to_string());
            d.ack().await;
        }
        publisher.await.unwrap();
    }

    #[tokio::test]
    async fn lossy_subscriber_is_closed_not_waited_for() {
        let bus = MemoryBus::new();
        let mut live = bus.subscribe_lossy(topics::TELEMETRY, 2);
        for n in 0..5 {
            bus.publish(event(n)).await.unwrap();
        }
        assert!(live.next().await.is_some());
        assert!(live.next().await.is_some());
        assert!(live.next().await.is_none());
        assert!(live.closed_reason().unwrap().contains("fell behind"));
    }

    #[tokio::test]
    async fn dropped_subscribers_are_forgotten() {
        let bus = MemoryBus::new();
        drop(bus.subscribe(topics::ALERTS, 1));
        bus.publish(Event { topic: topics::ALERTS.into(), ..event(1) }).await.unwrap();
        assert_eq!(bus.topics.read().get(topics::ALERTS).unwrap().len(), 0);
        drop(bus.subscribe_telemetry(1));
        bus.publish_telemetry(batch(1)).await.unwrap();
        assert_eq!(bus.telemetry.len(), 0);
    }

    fn batch(n: i64) -> TelemetryBatch {
        TelemetryBatch {
            factory_id: FactoryId::parse("f1").unwrap(),
            at_ms: n,
            messages: vec![TelemetryMessage {
                device_id: DeviceId::parse("d1").unwrap(),
                ts_ms: n,
                key: n.to_string(),
                values: vec![(PropertyName::parse("p").unwrap(), Value::Float(n as f64))],
                labels: Vec::new(),
            }],
        }
    }

    #[tokio::test]
    async fn telemetry_has_durable_and_lossy_subscribers() {
        let bus = MemoryBus::new();
        let mut durable = bus.subscribe_telemetry(8);
        let mut live = bus.subscribe_telemetry_lossy(1);
        bus.publish_telemetry(batch(1)).await.unwrap();
        bus.publish_telemetry(batch(2)).await.unwrap();
        assert_eq!(durable.next().await.unwrap().event.at_ms, 1);
        assert_eq!(durable.next().await.unwrap().event.at_ms, 2);
        assert_eq!(live.next().await.unwrap().event.at_ms, 1);
        assert!(live.next().await.is_none());
        assert!(live.closed_reason().unwrap().contains("fell behind"));
    }

    #[test]
    fn a_telemetry_message_keeps_its_documented_json_shape() {
        let message = TelemetryMessage {
            device_id: DeviceId::parse("press-1").unwrap(),
            ts_ms: 1_000,
            key: "k".into(),
            values: vec![
                (PropertyName::parse("power_kw").unwrap(), Value::Float(12.5)),
                (PropertyName::parse("running").unwrap(), Value::Bool(true)),
                (PropertyName::parse("count").unwrap(), Value::Float(3.0)),
                (PropertyName::parse("state").unwrap(), Value::Float(1.0)),
            ],
            labels: vec![(PropertyName::parse("state").unwrap(), "idle".into())],
        };
        let expected = serde_json::json!({
            "factory_id": "plant-a",
            "device_id": "press-1",
            "points": [
                {"property": "power_kw", "ts_ms": 1_000, "value": 12.5},
                {"property": "running", "ts_ms": 1_000, "value": true},
                {"property": "count", "ts_ms": 1_000, "value": 3.0},
                {"property": "state", "ts_ms": 1_000, "value": "idle"},
            ],
        });
        let json = message.to_json(&FactoryId::parse("plant-a").unwrap());
        assert_eq!(json, expected);
        assert_eq!(json.to_string(), expected.to_string());
    }
}
