//! Platform-health messages to the operators. Components publish `platform.health`
//! events (`{component, status: degraded|recovered, detail, stateful?}`); this turns them
//! into conditions: a message when one is raised, a reminder at a slow interval while it
//! lasts, and a "recovered" message when it ends. A *stateful* source (the TSDB adapter,
//! the notification channels) ends a condition with a `recovered` event; for the others
//! (ingestion, which reports while failures happen) a condition ends when no report came
//! for `clear_after`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use factoryops_platform::bus::{EventBus, topics};
use factoryops_platform::shutdown::Shutdown;
use factoryops_types::Clock;
use tokio::sync::Notify;

use crate::channel::ChannelKind;
use crate::store::{NewNotification, NotificationStore};
use crate::templates::render_health;

#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Operators' email addresses.
    pub emails: Vec<String>,
    /// Operators' WhatsApp numbers (E.164).
    pub whatsapp: Vec<String>,
    pub repeat_every: Duration,
    pub clear_after: Duration,
    pub max_attempts: i64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            emails: Vec::new(),
            whatsapp: Vec::new(),
            repeat_every: Duration::from_secs(3600),
            clear_after: Duration::from_secs(900),
            max_attempts: crate::enqueue::DEFAULT_MAX_ATTEMPTS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    since_ms: i64,
    last_report_ms: i64,
    last_sent_ms: i64,
    repeats: u32,
    detail: String,
    stateful: bool,
}

/// What the tracker decided to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMessage {
    pub component: String,
    /// degraded, repeated, recovered.
    pub status: &'static str,
    pub detail: String,
    pub since_ms: i64,
    /// Unique per message, so a restart or replay does not send it twice.
    pub key: String,
}

/// The pure state machine (tested without a bus or database).
#[derive(Debug, Default)]
pub struct HealthTracker {
    conditions: HashMap<String, Condition>,
}

impl HealthTracker {
    pub fn on_event(
        &mut self,
        component: &str,
        status: &str,
        detail: &str,
        stateful: bool,
        now_ms: i64,
    ) -> Option<HealthMessage> {
        if status == "recovered" {
            let c = self.conditions.remove(component)?;
            return Some(HealthMessage {
                component: component.into(),
                status: "recovered",
                detail: detail.into(),
                since_ms: c.since_ms,
                key: format!("health:{component}:{}:recovered", c.since_ms),
            });
        }
        if let Some(c) = self.conditions.get_mut(component) {
            c.last_report_ms = now_ms;
            c.detail = detail.into();
            c.stateful |= stateful;
            return None;
        }
        self.conditions.insert(
            component.into(),
            Condition {
                since_ms: now_ms,
                last_report_ms: now_ms,
                last_sent_ms: now_ms,
                repeats: 0,
                detail: detail.into(),
                stateful,
            },
        );
        Some(HealthMessage {
            component: component.into(),
            status: "degraded",
            detail: detail.into(),
            since_ms: now_ms,
            key: format!("health:{component}:{now_ms}:raised"),
        })
    }

    /// Reminders for conditions that last, and the end of quiet stateless ones.
    pub fn on_tick(&mut self, now_ms: i64, repeat_every_ms: i64, clear_after_ms: i64) -> Vec<HealthMessage> {
        let mut out = Vec::new();
        let mut cleared = Vec::new();
        for (component, c) in &mut self.conditions {
            if !c.stateful && now_ms - c.last_report_ms >= clear_after_ms {
                cleared.push(component.clone());
                out.push(HealthMessage {
                    component: component.clone(),
                    status: "recovered",
                    detail: format!("no new reports for {} minutes", clear_after_ms / 60_000),
                    since_ms: c.since_ms,
                    key: format!("health:{component}:{}:recovered", c.since_ms),
                });
            } else if now_ms - c.last_sent_ms >= repeat_every_ms {
                c.last_sent_ms = now_ms;
                c.repeats += 1;
                out.push(HealthMessage {
                    component: component.clone(),
                    status: "repeated",
                    detail: c.detail.clone(),
                    since_ms: c.since_ms,
                    key: format!("health:{component}:{}:repeat:{}", c.since_ms, c.repeats),
                });
            }
        }
        for component in cleared {
            self.conditions.remove(&component);
        }
        out.sort_by(|a, b| a.component.cmp(&b.component));
        out
    }

    pub fn open_conditions(&self) -> usize {
        self.conditions.len()
    }
}

pub struct HealthNotifier {
    store: NotificationStore,
    config: HealthConfig,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
}

impl HealthNotifier {
    pub fn new(store: NotificationStore, config: HealthConfig, clock: Arc<dyn Clock>, wake: Arc<Notify>) -> Self {
        Self { store, config, clock, wake }
    }

    /// Subscribes to `platform.health` (durably: an operator message is not dropped) and
    /// runs until shutdown.
    pub fn spawn(self, bus: &Arc<dyn EventBus>, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let mut subscription = bus.subscribe(topics::PLATFORM_HEALTH, 256);
        if self.config.emails.is_empty() && self.config.whatsapp.is_empty() {
            tracing::warn!(
                "no platform operators configured (notify.sysadmin_emails): platform health problems are only logged"
            );
        }
        tokio::spawn(async move {
            let mut tracker = HealthTracker::default();
            let repeat = i64::try_from(self.config.repeat_every.as_millis()).unwrap_or(3_600_000);
            let clear = i64::try_from(self.config.clear_after.as_millis()).unwrap_or(900_000);
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                let messages = tokio::select! {
                    delivery = subscription.next() => {
                        let Some(delivery) = delivery else { return };
                        let p = &delivery.event.payload;
                        let component = p["component"].as_str().unwrap_or("unknown").to_string();
                        let status = p["status"].as_str().unwrap_or("degraded").to_string();
                        let detail = p["detail"].as_str().unwrap_or_default().to_string();
                        let stateful = p["stateful"].as_bool().unwrap_or(false);
                        let now = self.clock.now_ms();
                        tracing::warn!(component, status, detail, "platform health");
                        let out = tracker.on_event(&component, &status, &detail, stateful, now).into_iter().collect();
                        delivery.ack().await;
                        out
                    }
                    _ = tick.tick() => tracker.on_tick(self.clock.now_ms(), repeat, clear),
                    _ = shutdown.triggered() => return,
                };
                for message in messages {
                    self.send(&message).await;
                }
            }
        })
    }

    async fn send(&self, m: &HealthMessage) {
        let now = self.clock.now_ms();
        let rendered = render_health(&m.component, m.status, &m.detail, m.since_ms, now);
        let row = |channel: ChannelKind, recipient: &String| NewNotification {
            factory_id: None,
            alert_id: None,
            kind: "health".into(),
            severity: Some(if m.status == "recovered" { "info" } else { "critical" }.into()),
            channel,
            recipient: recipient.clone(),
            user_id: None,
            sender_name: "FactoryOps platform".into(),
            subject: rendered.subject.clone(),
            body_text: if channel == ChannelKind::Email { rendered.text.clone() } else { rendered.short.clone() },
            body_html: (channel == ChannelKind::Email).then(|| rendered.html.clone()),
            event_key: m.key.clone(),
            max_attempts: self.config.max_attempts,
            not_before: now,
        };
        let rows: Vec<NewNotification> = self
            .config
            .emails
            .iter()
            .map(|e| row(ChannelKind::Email, e))
            .chain(self.config.whatsapp.iter().map(|w| row(ChannelKind::Whatsapp, w)))
            .collect();
        if rows.is_empty() {
            return;
        }
        match self.store.insert_all(&rows, now).await {
            Ok(_) => self.wake.notify_one(),
            Err(e) => {
                tracing::error!(error = %e, component = %m.component, "cannot queue the operators' health message")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_once_repeats_slowly_and_recovers() {
        let mut t = HealthTracker::default();
        let raised = t.on_event("tsdb", "degraded", "down", true, 1_000).unwrap();
        assert_eq!((raised.status, raised.since_ms), ("degraded", 1_000));
        assert_eq!(t.on_event("tsdb", "degraded", "still down", true, 2_000), None, "raised once");
        assert!(t.on_tick(30_000, 60_000, 10_000).is_empty(), "stateful: no implicit end, no repeat yet");
        let repeats = t.on_tick(61_000, 60_000, 10_000);
        assert_eq!(repeats.len(), 1);
        assert_eq!((repeats[0].status, repeats[0].detail.as_str()), ("repeated", "still down"));
        assert!(t.on_tick(62_000, 60_000, 10_000).is_empty());
        let recovered = t.on_event("tsdb", "recovered", "ok", true, 70_000).unwrap();
        assert_eq!((recovered.status, recovered.since_ms), ("recovered", 1_000));
        assert_eq!(t.open_conditions(), 0);
        assert_eq!(t.on_event("tsdb", "recovered", "ok", true, 71_000), None, "nothing to recover");
    }

    #[test]
    fn stateless_conditions_end_after_a_quiet_period() {
        let mut t = HealthTracker::default();
        t.on_event("ingest", "degraded", "property registration failed", false, 0);
        t.on_event("ingest", "degraded", "again", false, 5_000);
        assert!(t.on_tick(10_000, 60_000, 10_000).is_empty(), "a report 5 s ago");
        let out = t.on_tick(15_000, 60_000, 10_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, "recovered");
        assert_eq!(t.open_conditions(), 0);
    }

    #[test]
    fn keys_are_unique_per_message() {
        let mut t = HealthTracker::default();
        let a = t.on_event("x", "degraded", "", true, 0).unwrap().key;
        let b = t.on_tick(100, 50, 1_000)[0].key.clone();
        let c = t.on_tick(200, 50, 1_000)[0].key.clone();
        let d = t.on_event("x", "recovered", "", true, 300).unwrap().key;
        let keys = std::collections::HashSet::from([a, b, c, d]);
        assert_eq!(keys.len(), 4);
    }
}
