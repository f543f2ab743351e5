//! The event-bus port and its in-process implementation.
//!
//! Two kinds of subscribers: a *durable* one (rules, notifications) must see every
//! event, so a full queue slows the publisher (back-pressure, never a drop); a *lossy*
//! one (the portal's live stream) must never slow the publisher, so when its queue is
//! full it is closed with a reason and the client reconnects.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use factoryops_types::FactoryId;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Topics components publish on.
pub mod topics {
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
pub struct Delivery {
    pub event: Arc<Event>,
}

impl Delivery {
    pub async fn ack(self) {}
}

pub struct Subscription {
    rx: mpsc::Receiver<Arc<Event>>,
    closed_reason: Arc<Mutex<Option<String>>>,
}

impl Subscription {
    /// The next event, or `None` once the subscription is closed (see [`Subscription::closed_reason`]).
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await.map(|event| Delivery { event })
    }

    /// Why the bus closed this subscription, e.g. a lossy subscriber that fell behind.
    pub fn closed_reason(&self) -> Option<String> {
        self.closed_reason.lock().clone()
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
}

struct Subscriber {
    tx: mpsc::Sender<Arc<Event>>,
    lossy: bool,
    closed_reason: Arc<Mutex<Option<String>>>,
}

/// The all-in-one bus: bounded in-process queues.
#[derive(Default)]
pub struct MemoryBus {
    topics: RwLock<HashMap<String, Vec<Arc<Subscriber>>>>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, topic: &str, capacity: usize, lossy: bool) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let closed_reason = Arc::new(Mutex::new(None));
        let subscriber = Arc::new(Subscriber { tx, lossy, closed_reason: closed_reason.clone() });
        self.topics.write().entry(topic.to_string()).or_default().push(subscriber);
        Subscription { rx, closed_reason }
    }

    fn remove(&self, topic: &str, gone: &[Arc<Subscriber>]) {
        if gone.is_empty() {
            return;
        }
        if let Some(list) = self.topics.write().get_mut(topic) {
            list.retain(|s| !gone.iter().any(|g| Arc::ptr_eq(g, s)));
        }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, event: Event) -> Result<(), BusError> {
        let subscribers: Vec<Arc<Subscriber>> = self.topics.read().get(&event.topic).cloned().unwrap_or_default();
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
        self.remove(&event.topic, &gone);
        Ok(())
    }

    fn subscribe(&self, topic: &str, capacity: usize) -> Subscription {
        self.add(topic, capacity, false)
    }

    fn subscribe_lossy(&self, topic: &str, capacity: usize) -> Subscription {
        self.add(topic, capacity, true)
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
        assert!(bus.topics.read().get(topics::ALERTS).unwrap().is_empty());
    }
}
