//! The delivery worker: leases due notifications per channel, sends them with bounded
//! concurrency and a timeout, retries transient failures with exponential backoff and
//! jitter, dead-letters permanent refusals and exhausted attempts, and guards each
//! provider with a circuit breaker. Rows are leased, so a crash mid-send means the row is
//! sent again after the lease expires: delivery is at least once, and email carries a
//! stable Message-ID (the notification id) so the rare duplicate can be recognised.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use factoryops_platform::bus::{Event, EventBus, topics};
use factoryops_platform::shutdown::Shutdown;
use factoryops_types::{Clock, new_id};
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::breaker::{BreakerState, CircuitBreaker, Permit};
use crate::channel::{Channel, ChannelKind, SendError};
use crate::metrics::{ChannelLabels, NotifyMetrics};
use crate::store::{Claimed, NotificationStore};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Messages in flight per channel.
    pub concurrency: usize,
    pub send_timeout: Duration,
    /// First retry delay; doubles per attempt up to `backoff_max` (with jitter).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Consecutive transient failures that open a channel's circuit.
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    pub breaker_max_open: Duration,
    /// How often due rows are looked for without a wake-up (retries, restarts).
    pub poll_interval: Duration,
    /// Dead letters per hour that raise a platform-health condition.
    pub dead_letter_alarm: i64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            send_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(30),
            breaker_max_open: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
            dead_letter_alarm: 10,
        }
    }
}

struct Slot {
    channel: Arc<dyn Channel>,
    breaker: CircuitBreaker,
    permits: Arc<Semaphore>,
}

/// A channel's state for `/readyz` and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub channel: ChannelKind,
    pub configured: bool,
    pub circuit_open: bool,
    pub last_error: String,
}

pub struct NotificationWorker {
    store: NotificationStore,
    slots: HashMap<ChannelKind, Slot>,
    config: WorkerConfig,
    clock: Arc<dyn Clock>,
    metrics: NotifyMetrics,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
}

/// Why a channel is missing, for the dead letter of a message nobody can send.
fn unconfigured_reason(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Email => "email is not configured: set FACTORYOPS_SMTP_URL and FACTORYOPS_SMTP_FROM",
        ChannelKind::Whatsapp => {
            "WhatsApp is not configured: set FACTORYOPS_TWILIO_ACCOUNT_SID, FACTORYOPS_TWILIO_AUTH_TOKEN and FACTORYOPS_TWILIO_FROM"
        }
    }
}

impl NotificationWorker {
    pub fn new(
        store: NotificationStore,
        channels: Vec<Arc<dyn Channel>>,
        config: WorkerConfig,
        clock: Arc<dyn Clock>,
        metrics: NotifyMetrics,
        bus: Arc<dyn EventBus>,
    ) -> Arc<Self> {
        let slots = channels
            .into_iter()
            .map(|channel| {
                let slot = Slot {
                    breaker: CircuitBreaker::new(config.breaker_failures, config.breaker_open, config.breaker_max_open),
                    permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
                    channel: channel.clone(),
                };
                (channel.kind(), slot)
            })
            .collect();
        Arc::new(Self { store, slots, config, clock, metrics, bus, wake: Arc::new(Notify::new()) })
    }

    /// Nudge the worker after committing new rows (otherwise it finds them on its next poll).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn store(&self) -> &NotificationStore {
        &self.store
    }

    pub fn channel_states(&self) -> Vec<ChannelState> {
        ChannelKind::ALL
            .into_iter()
            .map(|kind| match self.slots.get(&kind) {
                Some(slot) => ChannelState {
                    channel: kind,
                    configured: true,
                    circuit_open: !slot.breaker.is_closed(),
                    last_error: slot.breaker.last_error(),
                },
                None => {
                    ChannelState { channel: kind, configured: false, circuit_open: false, last_error: String::new() }
                }
            })
            .collect()
    }

    /// Runs until shutdown, then waits for the sends in flight (each bounded by its timeout).
    pub fn spawn(self: &Arc<Self>, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let worker = Arc::clone(self);
        tokio::spawn(async move { worker.run(shutdown).await })
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut alarm = DeadLetterAlarm::default();
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let now = self.clock.now_ms();
            for kind in ChannelKind::ALL {
                if let Err(e) = self.dispatch(kind, now, &mut in_flight).await {
                    tracing::warn!(channel = kind.as_str(), error = %e, "notifications: cannot claim due messages");
                }
            }
            if alarm.due(now) {
                self.check_dead_letters(&mut alarm, now).await;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = shutdown.triggered() => break,
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    async fn dispatch(
        self: &Arc<Self>,
        kind: ChannelKind,
        now: i64,
        in_flight: &mut JoinSet<()>,
    ) -> Result<(), crate::NotifyError> {
        let lease_ms =
            i64::try_from((self.config.send_timeout + Duration::from_secs(30)).as_millis()).unwrap_or(60_000);
        let Some(slot) = self.slots.get(&kind) else {
            for claimed in self.store.claim(kind, 64, lease_ms, now).await? {
                self.store.mark_dead(&claimed.message.id, unconfigured_reason(kind), now).await?;
                self.metrics.outcome(kind.as_str(), "dead");
            }
            return Ok(());
        };
        let permit = slot.breaker.permit(now);
        self.metrics
            .circuit_open
            .get_or_create(&ChannelLabels { channel: kind.as_str().into() })
            .set(i64::from(permit == Permit::Blocked || slot.breaker.state() != BreakerState::Closed));
        let free = slot.permits.available_permits();
        let want = match permit {
            Permit::Flow => free,
            Permit::Probe => free.min(1),
            Permit::Blocked => 0,
        };
        if want == 0 {
            if permit == Permit::Probe {
                slot.breaker.release_probe();
            }
            return Ok(());
        }
        let claimed = self.store.claim(kind, want, lease_ms, now).await?;
        if claimed.is_empty() && permit == Permit::Probe {
            slot.breaker.release_probe();
        }
        for item in claimed {
            let Ok(permit_guard) = slot.permits.clone().try_acquire_owned() else {
                self.store.release(&item.message.id, now).await?;
                continue;
            };
            let worker = Arc::clone(self);
            let probe = permit == Permit::Probe;
            in_flight.spawn(async move {
                worker.send_one(item, probe).await;
                drop(permit_guard);
            });
        }
        Ok(())
    }

    async fn send_one(&self, item: Claimed, probe: bool) {
        let Some(slot) = self.slots.get(&item.channel) else { return };
        let channel = item.channel.as_str();
        let id = item.message.id.clone();
        let outcome = match tokio::time::timeout(self.config.send_timeout, slot.channel.send(&item.message)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Transient(format!("no answer within {:?}", self.config.send_timeout))),
        };
        let now = self.clock.now_ms();
        let result = match outcome {
            Ok(provider_id) => {
                if slot.breaker.record_success() {
                    self.health(channel, "recovered", "the provider answers again");
                }
                self.metrics.outcome(channel, "delivered");
                let seconds = (now - item.created_at).max(0) as f64 / 1000.0;
                self.metrics
                    .delivery_latency
                    .get_or_create(&ChannelLabels { channel: channel.into() })
                    .observe(seconds);
                tracing::info!(notification_id = %id, channel, "notification delivered");
                self.store.mark_delivered(&id, &provider_id, now).await
            }
            Err(SendError::Permanent(reason)) => {
                // The provider answered: it is up, the message is what it refused.
                if slot.breaker.record_success() {
                    self.health(channel, "recovered", "the provider answers again");
                }
                self.metrics.outcome(channel, "dead");
                tracing::warn!(notification_id = %id, channel, %reason, "notification refused for good; dead letter");
                self.store.mark_dead(&id, &reason, now).await
            }
            Err(SendError::Transient(reason)) => {
                if slot.breaker.record_failure(now, &reason) {
                    tracing::error!(channel, %reason, "notifications: provider failing; circuit open, messages stay queued");
                    self.health(channel, "degraded", &format!("provider failing, messages queued: {reason}"));
                }
                if !probe && item.attempts >= item.max_attempts {
                    self.metrics.outcome(channel, "dead");
                    let why = format!("gave up after {} attempts: {reason}", item.attempts);
                    tracing::warn!(notification_id = %id, channel, %why, "notification dead letter");
                    self.store.mark_dead(&id, &why, now).await
                } else {
                    self.metrics.outcome(channel, "retry");
                    let retry_at = now + backoff_ms(&self.config, item.attempts);
                    tracing::info!(notification_id = %id, channel, %reason, retry_at, "notification will be retried");
                    self.store.mark_retry(&id, &reason, retry_at, !probe, now).await
                }
            }
        };
        if let Err(e) = result {
            // The lease expires and the message is sent again: at least once.
            tracing::error!(notification_id = %id, error = %e, "cannot record the delivery outcome");
        }
    }

    async fn check_dead_letters(&self, alarm: &mut DeadLetterAlarm, now: i64) {
        alarm.checked_at = now;
        match self.store.dead_since(now - 3_600_000).await {
            Ok(n) if n >= self.config.dead_letter_alarm && !alarm.raised => {
                alarm.raised = true;
                self.health(
                    "dead-letters",
                    "degraded",
                    &format!("{n} notifications became dead letters in the last hour"),
                );
            }
            Ok(n) if n < self.config.dead_letter_alarm && alarm.raised => {
                alarm.raised = false;
                self.health("dead-letters", "recovered", "dead letters are back below the alarm level");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot count dead letters"),
        }
        for kind in ChannelKind::ALL {
            if let Ok(n) = self.store.backlog(kind).await {
                self.metrics.backlog.get_or_create(&ChannelLabels { channel: kind.as_str().into() }).set(n);
            }
        }
    }

    /// A `platform.health` event (stateful: a "recovered" event ends it).
    fn health(&self, what: &str, status: &str, detail: &str) {
        let event = Event {
            topic: topics::PLATFORM_HEALTH.into(),
            factory_id: None,
            key: new_id(),
            at_ms: self.clock.now_ms(),
            payload: serde_json::json!({
                "component": format!("notifications.{what}"), "status": status, "detail": detail, "stateful": true,
            }),
        };
        let bus = self.bus.clone();
        tokio::spawn(async move {
            if let Err(e) = bus.publish(event).await {
                tracing::warn!(error = %e, "cannot publish a health event");
            }
        });
    }
}

#[derive(Default)]
struct DeadLetterAlarm {
    checked_at: i64,
    raised: bool,
}

impl DeadLetterAlarm {
    fn due(&self, now: i64) -> bool {
        now - self.checked_at >= 30_000
    }
}

/// `base · 2^(attempt-1)`, capped, then a random point in its upper half (jitter spreads
/// retries of many messages that failed together).
pub fn backoff_ms(config: &WorkerConfig, attempt: i64) -> i64 {
    let base = i64::try_from(config.backoff_base.as_millis()).unwrap_or(5_000).max(1);
    let max = i64::try_from(config.backoff_max.as_millis()).unwrap_or(3_600_000).max(base);
    let exp = u32::try_from((attempt - 1).clamp(0, 30)).unwrap_or(30);
    let full = base.saturating_mul(1i64 << exp).min(max);
    let half = full / 2;
    half + rand::rng().random_range(0..=half.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let config = WorkerConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ..WorkerConfig::default()
        };
        for _ in 0..100 {
            let first = backoff_ms(&config, 1);
            assert!((500..=1000).contains(&first), "{first}");
            let fourth = backoff_ms(&config, 4);
            assert!((4000..=8000).contains(&fourth), "{fourth}");
            let late = backoff_ms(&config, 40);
            assert!((30_000..=60_000).contains(&late), "{late}");
        }
    }
}
