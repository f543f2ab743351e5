//! What the evaluator decides. The evaluator does no I/O; the store applies these
//! (transactionally, with outbox events) and the backtest collects them in memory.

use factoryops_tsdb::Value;
use factoryops_types::{DeviceId, FactoryId};
use serde::Serialize;

use crate::model::{Severity, Targets};

/// Identifies one alert: its idempotency key is unique per factory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRef {
    pub factory_id: FactoryId,
    pub rule_id: String,
    pub device_id: DeviceId,
    /// `{rule_id}:{device_id}:{ts_ms}` of the evaluation that opened the alert.
    pub key: String,
}

/// Why an alert resolved by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResolveReason {
    /// The condition cleared (auto-resolve).
    Cleared,
    /// The schedule ended (`outside_schedule: "resolve"`).
    OutsideSchedule,
    /// The rule was deleted, disabled, or no longer covers the device.
    RuleRemoved,
}

impl ResolveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolveReason::Cleared => "condition cleared",
            ResolveReason::OutsideSchedule => "outside schedule",
            ResolveReason::RuleRemoved => "rule removed or changed",
        }
    }
}

/// The occasion of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    Opened,
    /// The condition became true again while the alert was still open.
    Retriggered,
    Reminder,
    Escalation,
    Resolved,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Opened => "opened",
            NotifyKind::Retriggered => "retriggered",
            NotifyKind::Reminder => "reminder",
            NotifyKind::Escalation => "escalation",
            NotifyKind::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenAlert {
    pub alert: AlertRef,
    pub rule_name: String,
    pub severity: Severity,
    pub message: String,
    /// The value of the leaf that made the condition true (or of the first leaf).
    pub property: Option<String>,
    pub value: Option<Value>,
    pub threshold: Option<String>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub alert: AlertRef,
    pub kind: NotifyKind,
    pub targets: Targets,
    pub severity: Severity,
    pub message: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    Open(OpenAlert),
    /// Re-triggered while open: new last value and count.
    Update {
        alert: AlertRef,
        count: i64,
        value: Option<Value>,
        message: String,
        at_ms: i64,
    },
    Resolve {
        alert: AlertRef,
        value: Option<Value>,
        reason: ResolveReason,
        at_ms: i64,
    },
    Notify(Notification),
}

impl Effect {
    pub fn alert(&self) -> &AlertRef {
        match self {
            Effect::Open(o) => &o.alert,
            Effect::Update { alert, .. } | Effect::Resolve { alert, .. } => alert,
            Effect::Notify(n) => &n.alert,
        }
    }

    pub fn at_ms(&self) -> i64 {
        match self {
            Effect::Open(o) => o.at_ms,
            Effect::Update { at_ms, .. } | Effect::Resolve { at_ms, .. } => *at_ms,
            Effect::Notify(n) => n.at_ms,
        }
    }
}

/// One alert as the backtest (or any in-memory consumer of effects) sees it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AlertRecord {
    pub rule_id: String,
    #[schema(value_type = String)]
    pub device_id: DeviceId,
    /// `{rule_id}:{device_id}:{ts_ms}` of the evaluation that opened the alert.
    pub key: String,
    pub severity: Severity,
    pub message: String,
    #[schema(schema_with = crate::model::nullable_value_schema, required = true)]
    pub value: Option<Value>,
    pub count: i64,
    #[serde(serialize_with = "crate::ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub opened_at: i64,
    #[serde(serialize_with = "crate::ser_opt_time")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub resolved_at: Option<i64>,
    #[schema(required = true)]
    pub resolve_reason: Option<ResolveReason>,
    /// Notifications that would have been sent for this alert, by kind.
    pub notifications: Vec<NotifyKind>,
}

/// Folds effects into alert records, in order. Effects for unknown keys are ignored.
#[derive(Debug, Default, Clone)]
pub struct AlertLedger {
    pub alerts: Vec<AlertRecord>,
}

impl AlertLedger {
    pub fn apply(&mut self, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::Open(o) => {
                    if self.alerts.iter().any(|a| a.key == o.alert.key && a.rule_id == o.alert.rule_id) {
                        continue;
                    }
                    self.alerts.push(AlertRecord {
                        rule_id: o.alert.rule_id.clone(),
                        device_id: o.alert.device_id.clone(),
                        key: o.alert.key.clone(),
                        severity: o.severity,
                        message: o.message.clone(),
                        value: o.value,
                        count: 1,
                        opened_at: o.at_ms,
                        resolved_at: None,
                        resolve_reason: None,
                        notifications: Vec::new(),
                    })
                }
                Effect::Update { alert, count, value, message, .. } => {
                    if let Some(a) = self.find(alert) {
                        a.count = *count;
                        a.value = *value;
                        a.message = message.clone();
                    }
                }
                Effect::Resolve { alert, value, reason, at_ms } => {
                    if let Some(a) = self.find(alert)
                        && a.resolved_at.is_none()
                    {
                        a.resolved_at = Some(*at_ms);
                        a.resolve_reason = Some(*reason);
                        if value.is_some() {
                            a.value = *value;
                        }
                    }
                }
                Effect::Notify(n) => {
                    if let Some(a) = self.find(&n.alert) {
                        a.notifications.push(n.kind);
                    }
                }
            }
        }
    }

    fn find(&mut self, alert: &AlertRef) -> Option<&mut AlertRecord> {
        self.alerts.iter_mut().rev().find(|a| a.key == alert.key)
    }
}
