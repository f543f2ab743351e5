//! The rules component's repository: rule definitions, alerts and their history, on
//! SQLite or MySQL/MariaDB. Every function takes the factory scope first (except the
//! start-up loaders, which read all factories for the engine); another factory's rule or
//! alert is [`RulesError::NotFound`].

use std::collections::HashMap;
use std::sync::Arc;

use factoryops_db::{Database, DatabaseBackend, DbError, WriteTx, outbox};
use factoryops_notify::{AlertNotice, Audience, Notifier, Recipients};
use factoryops_platform::bus::{Event, EventBus, topics};
use factoryops_tsdb::Value;
use factoryops_types::{DeviceId, FactoryId, new_id};
use serde::Serialize;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::effects::{Effect, NotifyKind};
use crate::eval::RestoredAlert;
use crate::model::{RuleSpec, Severity, Targets};
use crate::{Page, RulesError, ser_opt_time, ser_time};

/// The alert's rule as a manual transition's notification needs it.
struct TransitionRule<'a> {
    device_id: &'a str,
    targets: &'a Targets,
}

/// The actor recorded for transitions the engine makes.
pub const ENGINE_ACTOR: &str = "rules-engine";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(AlertStatus::Open),
            "acknowledged" => Some(AlertStatus::Acknowledged),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// A stored rule: the API's rule shape plus id and times.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRule {
    pub id: String,
    #[serde(skip)]
    pub factory_id: FactoryId,
    #[serde(flatten)]
    pub spec: RuleSpec,
    #[serde(serialize_with = "ser_time")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_time")]
    pub updated_at: i64,
}

/// One status change of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertHistoryEntry {
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub status: AlertStatus,
    /// `user:{id}`, `key:{id}` or `rules-engine`.
    pub by: String,
    #[schema(required = true)]
    pub note: Option<String>,
    /// The alert's value at that moment.
    #[schema(schema_with = crate::model::nullable_value_schema, required = true)]
    pub value: Option<serde_json::Value>,
}

/// An alert as the API shows it (times as RFC 3339 in JSON, ms here).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(description = "An alert as the API shows it.")]
pub struct Alert {
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub device_id: String,
    pub status: AlertStatus,
    pub severity: Severity,
    pub message: String,
    /// The property of the leaf that made the condition true.
    #[schema(required = true)]
    pub property: Option<String>,
    /// The latest value of `property`.
    #[schema(schema_with = crate::model::nullable_value_schema, required = true)]
    pub value: Option<serde_json::Value>,
    /// The threshold as text (`80`, `5..50`, `outside 5..50`, `2/min`, `300s`).
    #[schema(required = true)]
    pub threshold: Option<String>,
    /// How often it was triggered (re-triggers while open count up).
    pub count: i64,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub opened_at: i64,
    #[serde(serialize_with = "ser_opt_time")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub acknowledged_at: Option<i64>,
    #[serde(serialize_with = "ser_opt_time")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub resolved_at: Option<i64>,
    /// Oldest first; only in `GET /alerts/{alert_id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<AlertHistoryEntry>>,
    /// The idempotency key (internal).
    #[serde(skip)]
    pub key: String,
}

/// Rule fields a response leaves out when they are unset (`skip_serializing_if` in [`RuleSpec`]).
const RULE_FIELDS_OMITTED_WHEN_UNSET: [&str; 2] = ["clear_for_seconds", "deadband"];

/// `StoredRule` serialises as the flattened [`RuleSpec`] plus `id`, `created_at` and
/// `updated_at`, with every default spelled out. Its schema is the rule body's, with those
/// three added, every always-present field required, and open to additions (a response may
/// gain fields; the request body stays closed).
impl PartialSchema for StoredRule {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut object)) = RuleSpec::schema() else {
            unreachable!("RuleSpec derives an object schema")
        };
        let time = || -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .into()
        };
        object.properties.insert("id".into(), ObjectBuilder::new().schema_type(Type::String).into());
        object.properties.insert("created_at".into(), time());
        object.properties.insert("updated_at".into(), time());
        object.required = std::iter::once("id".to_string())
            .chain(
                object
                    .properties
                    .keys()
                    .filter(|k| !matches!(k.as_str(), "id" | "created_at" | "updated_at"))
                    .filter(|k| !RULE_FIELDS_OMITTED_WHEN_UNSET.contains(&k.as_str()))
                    .cloned(),
            )
            .chain(["created_at".to_string(), "updated_at".to_string()])
            .collect();
        object.additional_properties = None;
        object.description =
            Some("A stored rule: the rule body with every default spelled out, plus `id` and times.".into());
        object.into()
    }
}

impl ToSchema for StoredRule {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <RuleSpec as ToSchema>::schemas(schemas);
    }
}

/// Filters of the alert inbox. Times are Unix ms; `from`/`to` bound `opened_at` (`[from, to)`).
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub status: Option<AlertStatus>,
    pub severity: Option<Severity>,
    pub device_id: Option<String>,
    pub rule_id: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub cursor: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<u32>,
}

/// What [`RulesStore::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplySummary {
    pub opened: usize,
    /// Opens skipped because the idempotency key already existed (a replayed event).
    pub duplicates: usize,
    pub updated: usize,
    pub resolved: usize,
    pub notifications: usize,
    /// Notification rows (channel × recipient) written with the alert changes.
    pub deliveries: usize,
}

#[derive(Clone, Debug)]
pub struct RulesStore {
    db: Database,
    notifier: Option<Notifier>,
    /// Set when the bus is in-process: alert events are published right after the commit
    /// instead of through the outbox and its relay (ADR 0008).
    direct: Option<DirectBus>,
    /// Alert id by (factory, idempotency key). The mapping never changes once an alert is
    /// committed, so this only saves the `SELECT id` of updates and resolves.
    alert_ids: Arc<parking_lot::Mutex<HashMap<(FactoryId, String), String>>>,
}

/// Most alert ids [`RulesStore`] remembers before it starts over (a miss costs one SELECT).
const ALERT_ID_CACHE: usize = 100_000;

#[derive(Clone)]
struct DirectBus(Arc<dyn EventBus>);

impl std::fmt::Debug for DirectBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectBus")
    }
}

/// The alert events of one transaction: appended to the outbox in it, or held until it
/// committed and then published (in-process bus).
struct Announcements<'s> {
    store: &'s RulesStore,
    held: Vec<Event>,
}

impl Announcements<'_> {
    async fn add(
        &mut self,
        tx: &mut WriteTx,
        factory: &FactoryId,
        key: String,
        payload: serde_json::Value,
        now_ms: i64,
    ) -> Result<(), RulesError> {
        if self.store.direct.is_some() {
            self.held.push(Event {
                topic: topics::ALERTS.to_string(),
                factory_id: Some(factory.clone()),
                key,
                at_ms: now_ms,
                payload,
            });
        } else {
            outbox::append(&self.store.db, tx, Some(factory), topics::ALERTS, &key, &payload, now_ms).await?;
        }
        Ok(())
    }

    /// After the commit: the held events, in order.
    async fn publish(self) {
        let Some(DirectBus(bus)) = &self.store.direct else { return };
        for event in self.held {
            if let Err(e) = bus.publish(event).await {
                tracing::warn!(error = %e, "alert event not published");
            }
        }
    }
}

/// The status an alert's history row records.
enum HistoryStatus {
    Is(AlertStatus),
    /// The alert's status after the change (a re-trigger keeps open or acknowledged).
    Current,
}

/// A history row written with the change it records, only when that change touched a row.
struct HistoryRow<'a> {
    factory: &'a FactoryId,
    alert_id: &'a str,
    at: i64,
    status: HistoryStatus,
    actor: &'a str,
    note: Option<String>,
    value: Option<String>,
}

const ALERT_COLUMNS: &str = "id, factory_id, rule_id, rule_name, device_id, status, severity, message, property, value, \
     threshold, count, opened_at, acknowledged_at, resolved_at, idempotency_key";

enum Bind {
    Text(String),
    Int(i64),
}

fn value_text(v: Option<Value>) -> Option<String> {
    v.and_then(|v| serde_json::to_string(&v).ok())
}

fn value_json(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn rule_from_row(row: &AnyRow) -> Result<StoredRule, RulesError> {
    let factory: String = row.try_get("factory_id")?;
    let definition: String = row.try_get("definition")?;
    let mut spec: RuleSpec =
        serde_json::from_str(&definition).map_err(|e| RulesError::Malformed(format!("rule definition: {e}")))?;
    let enabled: i64 = row.try_get("enabled")?;
    spec.enabled = enabled != 0;
    Ok(StoredRule {
        id: row.try_get("id")?,
        factory_id: FactoryId::parse(factory).map_err(|e| RulesError::Malformed(format!("rule factory_id: {e}")))?,
        spec,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn alert_from_row(row: &AnyRow) -> Result<Alert, RulesError> {
    let status: String = row.try_get("status")?;
    let severity: String = row.try_get("severity")?;
    Ok(Alert {
        id: row.try_get("id")?,
        rule_id: row.try_get("rule_id")?,
        rule_name: row.try_get("rule_name")?,
        device_id: row.try_get("device_id")?,
        status: AlertStatus::parse(&status).ok_or_else(|| RulesError::Malformed(format!("alert status {status:?}")))?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| RulesError::Malformed(format!("alert severity {severity:?}")))?,
        message: row.try_get("message")?,
        property: row.try_get("property")?,
        value: value_json(row.try_get("value")?),
        threshold: row.try_get("threshold")?,
        count: row.try_get("count")?,
        opened_at: row.try_get("opened_at")?,
        acknowledged_at: row.try_get("acknowledged_at")?,
        resolved_at: row.try_get("resolved_at")?,
        history: None,
        key: row.try_get("idempotency_key")?,
    })
}

fn clamp_limit(limit: Option<u32>) -> i64 {
    i64::from(limit.unwrap_or(50).clamp(1, 500))
}

fn page<T>(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id)
    } else {
        None
    };
    Page { items, next_cursor }
}

fn alert_event(
    kind: &str,
    alert_id: &str,
    alert: &crate::effects::AlertRef,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut payload = json!({
        "type": kind,
        "alert_id": alert_id,
        "rule_id": alert.rule_id,
        "device_id": alert.device_id,
    });
    if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    payload
}

impl RulesStore {
    pub fn new(db: Database) -> Self {
        Self { db, notifier: None, direct: None, alert_ids: Arc::default() }
    }

    /// Publishes alert events on `bus` right after each commit when it is in-process
    /// ([`EventBus::in_process`]); otherwise they go through the outbox.
    pub fn with_bus(mut self, bus: Option<Arc<dyn EventBus>>) -> Self {
        self.direct = bus.filter(|b| b.in_process()).map(DirectBus);
        self
    }

    /// Writes notification rows (email, WhatsApp) with each alert change.
    pub fn with_notifier(mut self, notifier: Option<Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    // ---- rules ----

    pub async fn create_rule(
        &self,
        factory: &FactoryId,
        spec: &RuleSpec,
        now_ms: i64,
    ) -> Result<StoredRule, RulesError> {
        let id = new_id();
        let definition = serde_json::to_string(spec).map_err(|e| RulesError::Malformed(e.to_string()))?;
        sqlx::query(
            "INSERT INTO rules (id, factory_id, name, enabled, definition, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(factory.as_str())
        .bind(&spec.name)
        .bind(i64::from(spec.enabled))
        .bind(definition)
        .bind(now_ms)
        .bind(now_ms)
        .execute(self.db.pool())
        .await?;
        Ok(StoredRule { id, factory_id: factory.clone(), spec: spec.clone(), created_at: now_ms, updated_at: now_ms })
    }

    pub async fn update_rule(
        &self,
        factory: &FactoryId,
        id: &str,
        spec: &RuleSpec,
        now_ms: i64,
    ) -> Result<StoredRule, RulesError> {
        let definition = serde_json::to_string(spec).map_err(|e| RulesError::Malformed(e.to_string()))?;
        sqlx::query(
            "UPDATE rules SET name = ?, enabled = ?, definition = ?, updated_at = ? WHERE factory_id = ? AND id = ?",
        )
        .bind(&spec.name)
        .bind(i64::from(spec.enabled))
        .bind(definition)
        .bind(now_ms)
        .bind(factory.as_str())
        .bind(id)
        .execute(self.db.pool())
        .await?;
        // MySQL reports 0 rows for an unchanged row, so "missing" is decided by reading it back.
        self.get_rule(factory, id).await
    }

    pub async fn get_rule(&self, factory: &FactoryId, id: &str) -> Result<StoredRule, RulesError> {
        let row = sqlx::query("SELECT * FROM rules WHERE factory_id = ? AND id = ?")
            .bind(factory.as_str())
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or(RulesError::NotFound)?;
        rule_from_row(&row)
    }

    /// A factory's rules ordered by id (creation order), `limit` 1..=500 (default 50).
    pub async fn list_rules(
        &self,
        factory: &FactoryId,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<StoredRule>, RulesError> {
        let limit = clamp_limit(limit);
        let rows = sqlx::query("SELECT * FROM rules WHERE factory_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(factory.as_str())
            .bind(cursor.unwrap_or(""))
            .bind(limit + 1)
            .fetch_all(self.db.pool())
            .await?;
        let items = rows.iter().map(rule_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit, |r| r.id.clone()))
    }

    /// Deletes a rule definition; its alerts stay (they keep `rule_id` and `rule_name`).
    pub async fn delete_rule(&self, factory: &FactoryId, id: &str) -> Result<(), RulesError> {
        let done = sqlx::query("DELETE FROM rules WHERE factory_id = ? AND id = ?")
            .bind(factory.as_str())
            .bind(id)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 { Err(RulesError::NotFound) } else { Ok(()) }
    }

    /// Every rule of every factory, for the engine's start (not for the API).
    pub async fn all_rules(&self) -> Result<Vec<StoredRule>, RulesError> {
        let rows = sqlx::query("SELECT * FROM rules ORDER BY factory_id, id").fetch_all(self.db.pool()).await?;
        rows.iter().map(rule_from_row).collect()
    }

    // ---- alerts ----

    /// The alert inbox, newest first, with cursor pagination.
    pub async fn list_alerts(&self, factory: &FactoryId, query: &AlertQuery) -> Result<Page<Alert>, RulesError> {
        let limit = clamp_limit(query.limit);
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE factory_id = ?");
        let mut binds = vec![Bind::Text(factory.as_str().to_string())];
        if let Some(s) = query.status {
            sql.push_str(" AND status = ?");
            binds.push(Bind::Text(s.as_str().into()));
        }
        if let Some(s) = query.severity {
            sql.push_str(" AND severity = ?");
            binds.push(Bind::Text(s.as_str().into()));
        }
        if let Some(d) = &query.device_id {
            sql.push_str(" AND device_id = ?");
            binds.push(Bind::Text(d.clone()));
        }
        if let Some(r) = &query.rule_id {
            sql.push_str(" AND rule_id = ?");
            binds.push(Bind::Text(r.clone()));
        }
        if let Some(f) = query.from {
            sql.push_str(" AND opened_at >= ?");
            binds.push(Bind::Int(f));
        }
        if let Some(t) = query.to {
            sql.push_str(" AND opened_at < ?");
            binds.push(Bind::Int(t));
        }
        if let Some(c) = &query.cursor {
            sql.push_str(" AND id < ?");
            binds.push(Bind::Text(c.clone()));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        binds.push(Bind::Int(limit + 1));
        // Only fixed clauses and placeholders were appended; every value is bound.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = match b {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        let items = rows.iter().map(alert_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit, |a| a.id.clone()))
    }

    /// One alert with its history (oldest first).
    pub async fn get_alert(&self, factory: &FactoryId, id: &str) -> Result<Alert, RulesError> {
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE factory_id = ? AND id = ?")))
                .bind(factory.as_str())
                .bind(id)
                .fetch_optional(self.db.pool())
                .await?
                .ok_or(RulesError::NotFound)?;
        let mut alert = alert_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT at, status, actor, note, value FROM alert_history WHERE factory_id = ? AND alert_id = ? ORDER BY seq",
        )
        .bind(factory.as_str())
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        let mut history = Vec::with_capacity(rows.len());
        for r in rows {
            let status: String = r.try_get("status")?;
            history.push(AlertHistoryEntry {
                at: r.try_get("at")?,
                status: AlertStatus::parse(&status)
                    .ok_or_else(|| RulesError::Malformed(format!("history status {status:?}")))?,
                by: r.try_get("actor")?,
                note: r.try_get("note")?,
                value: value_json(r.try_get("value")?),
            });
        }
        alert.history = Some(history);
        Ok(alert)
    }

    /// open → acknowledged. `Conflict` when the alert is not open.
    pub async fn acknowledge(
        &self,
        factory: &FactoryId,
        id: &str,
        actor: &str,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<Alert, RulesError> {
        self.transition(factory, id, AlertStatus::Acknowledged, actor, note, now_ms).await
    }

    /// open | acknowledged → resolved. `Conflict` when already resolved.
    pub async fn resolve(
        &self,
        factory: &FactoryId,
        id: &str,
        actor: &str,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<Alert, RulesError> {
        self.transition(factory, id, AlertStatus::Resolved, actor, note, now_ms).await
    }

    async fn transition(
        &self,
        factory: &FactoryId,
        id: &str,
        to: AlertStatus,
        actor: &str,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<Alert, RulesError> {
        let audience = self.transition_audience(factory, id, actor).await?;
        let mut tx = self.db.begin_write().await?;
        let row = sqlx::query("SELECT status, value, rule_id, device_id FROM alerts WHERE factory_id = ? AND id = ?")
            .bind(factory.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(RulesError::NotFound);
        };
        let status: String = row.try_get("status")?;
        let value: Option<String> = row.try_get("value")?;
        let (sql, from) = match to {
            AlertStatus::Acknowledged => (
                "UPDATE alerts SET status = 'acknowledged', acknowledged_at = ?, acknowledged_by = ?, updated_at = ? \
                 WHERE factory_id = ? AND id = ? AND status = 'open'",
                "open",
            ),
            _ => (
                "UPDATE alerts SET status = 'resolved', resolved_at = ?, resolved_by = ?, updated_at = ? \
                 WHERE factory_id = ? AND id = ? AND status <> 'resolved'",
                "open or acknowledged",
            ),
        };
        let history = HistoryRow {
            factory,
            alert_id: id,
            at: now_ms,
            status: HistoryStatus::Is(to),
            actor,
            note: note.map(str::to_string),
            value: value.clone(),
        };
        let changed = self
            .change_with_history(&mut tx, sql, &history, |q| {
                q.bind(now_ms)
                    .bind(actor.to_string())
                    .bind(now_ms)
                    .bind(factory.as_str().to_string())
                    .bind(id.to_string())
            })
            .await?;
        if !changed {
            tx.rollback().await?;
            return Err(RulesError::Conflict(format!("the alert is {status}, not {from}")));
        }
        let rule_id: String = row.try_get("rule_id")?;
        let device_id: String = row.try_get("device_id")?;
        let payload = json!({
            "type": format!("alert.{}", to.as_str()),
            "alert_id": id, "rule_id": rule_id, "device_id": device_id,
            "status": to.as_str(), "by": actor, "note": note, "at": factoryops_types::format_rfc3339_ms(now_ms),
        });
        let event_key = format!("alert:{id}:{}", to.as_str());
        let mut events = Announcements { store: self, held: Vec::new() };
        events.add(&mut tx, factory, event_key.clone(), payload, now_ms).await?;
        if let Some((targets, audience)) = &audience {
            let rule = TransitionRule { device_id: &device_id, targets };
            self.notify_transition(&mut tx, factory, id, &rule, audience, to, actor, note, value, &event_key, now_ms)
                .await?;
        }
        tx.commit().await?;
        events.publish().await;
        self.get_alert(factory, id).await
    }

    /// The rule's targets and their directory entries for a manual transition, looked up
    /// before the transaction (`None`: nobody to tell).
    async fn transition_audience(
        &self,
        factory: &FactoryId,
        alert_id: &str,
        actor: &str,
    ) -> Result<Option<(Targets, Audience)>, RulesError> {
        let Some(notifier) = &self.notifier else { return Ok(None) };
        let row = sqlx::query("SELECT rule_id FROM alerts WHERE factory_id = ? AND id = ?")
            .bind(factory.as_str())
            .bind(alert_id)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let rule_id: String = row.try_get("rule_id")?;
        let targets = match self.get_rule(factory, &rule_id).await {
            Ok(rule) => rule.spec.notify.targets(),
            Err(RulesError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if targets.is_empty() {
            return Ok(None);
        }
        let audience = notifier.audience(factory, &targets.users, Some(actor)).await?;
        Ok(Some((targets, audience)))
    }

    /// People who were told about the alert hear that someone acknowledged or resolved it:
    /// the rule's targets (not the escalation list), in the same transaction.
    #[allow(clippy::too_many_arguments)]
    async fn notify_transition(
        &self,
        tx: &mut WriteTx,
        factory: &FactoryId,
        id: &str,
        rule: &TransitionRule<'_>,
        audience: &Audience,
        to: AlertStatus,
        actor: &str,
        note: Option<&str>,
        value: Option<String>,
        event_key: &str,
        now_ms: i64,
    ) -> Result<(), RulesError> {
        let Some(notifier) = &self.notifier else { return Ok(()) };
        let alert = sqlx::query("SELECT rule_name, severity, message FROM alerts WHERE factory_id = ? AND id = ?")
            .bind(factory.as_str())
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
        let (rule_name, severity, message): (String, String, String) =
            (alert.try_get("rule_name")?, alert.try_get("severity")?, alert.try_get("message")?);
        let recipients = Recipients {
            users: rule.targets.users.clone(),
            emails: rule.targets.emails.clone(),
            whatsapp: rule.targets.whatsapp.clone(),
        };
        let notice = AlertNotice {
            factory_id: factory,
            alert_id: id,
            event_key,
            kind: to.as_str(),
            rule_name: &rule_name,
            device_id: rule.device_id,
            severity: &severity,
            message: &message,
            value,
            at_ms: now_ms,
            by: Some(actor),
            note,
            recipients: &recipients,
        };
        notifier.enqueue_alert(&self.db, tx, audience, &notice, now_ms).await?;
        Ok(())
    }

    /// The directory lookups the batch's notifications need, done before its transaction.
    async fn audiences(&self, effects: &[Effect]) -> Result<HashMap<FactoryId, Audience>, RulesError> {
        let mut audiences = HashMap::new();
        let Some(notifier) = &self.notifier else { return Ok(audiences) };
        let mut users: HashMap<&FactoryId, Vec<String>> = HashMap::new();
        for effect in effects {
            if let Effect::Notify(n) = effect {
                users.entry(&n.alert.factory_id).or_default().extend(n.targets.users.iter().cloned());
            }
        }
        for (factory, ids) in users {
            audiences.insert(factory.clone(), notifier.audience(factory, &ids, None).await?);
        }
        Ok(audiences)
    }

    /// The last cooldown-bound notification per (factory, rule, device) since `since_ms`,
    /// so a restarted engine keeps honouring cooldowns.
    pub async fn last_notifications(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(FactoryId, String, DeviceId, i64)>, RulesError> {
        let rows = sqlx::query(
            "SELECT factory_id, rule_id, device_id, MAX(last_notified_at) AS at FROM alerts \
             WHERE last_notified_at >= ? GROUP BY factory_id, rule_id, device_id",
        )
        .bind(since_ms)
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let factory: String = r.try_get("factory_id")?;
            let device: String = r.try_get("device_id")?;
            let (Ok(factory), Ok(device)) = (FactoryId::parse(factory), DeviceId::parse(device)) else { continue };
            out.push((factory, r.try_get("rule_id")?, device, r.try_get("at")?));
        }
        Ok(out)
    }

    /// Open and acknowledged alerts of every factory, for rebuilding the evaluator on start.
    pub async fn open_alerts(&self) -> Result<Vec<(FactoryId, RestoredAlert)>, RulesError> {
        let rows = sqlx::query(
            "SELECT factory_id, rule_id, device_id, status, idempotency_key, opened_at, count, escalated_at \
             FROM alerts WHERE status <> 'resolved' ORDER BY factory_id, id",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let factory: String = r.try_get("factory_id")?;
            let device: String = r.try_get("device_id")?;
            let status: String = r.try_get("status")?;
            let escalated: Option<i64> = r.try_get("escalated_at")?;
            let (Ok(factory), Ok(device_id)) = (FactoryId::parse(factory), DeviceId::parse(device)) else {
                continue;
            };
            out.push((
                factory,
                RestoredAlert {
                    rule_id: r.try_get("rule_id")?,
                    device_id,
                    key: r.try_get("idempotency_key")?,
                    opened_at: r.try_get("opened_at")?,
                    count: r.try_get("count")?,
                    acknowledged: status == "acknowledged",
                    escalated: escalated.is_some(),
                },
            ));
        }
        Ok(out)
    }

    /// Applies evaluator effects in one transaction, each state change with its event on
    /// the `alerts` topic (outbox, or published after the commit on an in-process bus). An
    /// open whose key exists already (a replayed event) is skipped together with its
    /// notification.
    pub async fn apply(&self, effects: &[Effect], now_ms: i64) -> Result<ApplySummary, RulesError> {
        let mut summary = ApplySummary::default();
        if effects.is_empty() {
            return Ok(summary);
        }
        let audiences = self.audiences(effects).await?;
        let mut tx = self.db.begin_write().await?;
        let mut events = Announcements { store: self, held: Vec::new() };
        // (factory, key) → (alert id, inserted by this batch)
        let mut ids: HashMap<(FactoryId, String), Option<String>> = HashMap::new();
        let mut opened = Vec::new();
        let insert = format!(
            "{} INTO alerts (id, factory_id, rule_id, rule_name, device_id, status, severity, message, property, value, \
             threshold, count, opened_at, updated_at, idempotency_key) VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, 1, ?, ?, ?)",
            self.db.dialect().insert_ignore()
        );
        for effect in effects {
            let alert = effect.alert();
            let factory = &alert.factory_id;
            match effect {
                Effect::Open(o) => {
                    let id = new_id();
                    let history = HistoryRow {
                        factory,
                        alert_id: &id,
                        at: o.at_ms,
                        status: HistoryStatus::Is(AlertStatus::Open),
                        actor: ENGINE_ACTOR,
                        note: None,
                        value: value_text(o.value),
                    };
                    let inserted = self
                        .change_with_history(&mut tx, &insert, &history, |q| {
                            q.bind(id.clone())
                                .bind(factory.as_str().to_string())
                                .bind(alert.rule_id.clone())
                                .bind(o.rule_name.clone())
                                .bind(alert.device_id.as_str().to_string())
                                .bind(o.severity.as_str())
                                .bind(o.message.clone())
                                .bind(o.property.clone())
                                .bind(value_text(o.value))
                                .bind(o.threshold.clone())
                                .bind(o.at_ms)
                                .bind(now_ms)
                                .bind(alert.key.clone())
                        })
                        .await?;
                    let map_key = (factory.clone(), alert.key.clone());
                    if !inserted {
                        summary.duplicates += 1;
                        ids.insert(map_key, None);
                        continue;
                    }
                    summary.opened += 1;
                    let payload = alert_event(
                        "alert.opened",
                        &id,
                        alert,
                        json!({
                            "status": "open", "severity": o.severity, "message": o.message, "property": o.property,
                            "value": o.value, "threshold": o.threshold, "count": 1,
                            "opened_at": factoryops_types::format_rfc3339_ms(o.at_ms),
                        }),
                    );
                    events.add(&mut tx, factory, format!("alert:{id}:opened"), payload, now_ms).await?;
                    opened.push((map_key.clone(), id.clone()));
                    ids.insert(map_key, Some(id));
                }
                Effect::Update { count, value, message, at_ms, .. } => {
                    let Some(id) = self.lookup(&mut tx, &mut ids, factory, &alert.key).await? else { continue };
                    let note = format!("re-triggered (count {count})");
                    let history = HistoryRow {
                        factory,
                        alert_id: &id,
                        at: *at_ms,
                        status: HistoryStatus::Current,
                        actor: ENGINE_ACTOR,
                        note: Some(note),
                        value: value_text(*value),
                    };
                    let updated = self
                        .change_with_history(
                            &mut tx,
                            "UPDATE alerts SET count = ?, value = ?, message = ?, updated_at = ? \
                             WHERE factory_id = ? AND id = ? AND status <> 'resolved'",
                            &history,
                            |q| {
                                q.bind(*count)
                                    .bind(value_text(*value))
                                    .bind(message.clone())
                                    .bind(now_ms)
                                    .bind(factory.as_str().to_string())
                                    .bind(id.clone())
                            },
                        )
                        .await?;
                    if !updated {
                        continue;
                    }
                    summary.updated += 1;
                    let payload = alert_event(
                        "alert.updated",
                        &id,
                        alert,
                        json!({ "count": count, "value": value, "message": message,
                                "at": factoryops_types::format_rfc3339_ms(*at_ms) }),
                    );
                    events.add(&mut tx, factory, format!("alert:{id}:updated:{count}"), payload, now_ms).await?;
                }
                Effect::Resolve { value, reason, at_ms, .. } => {
                    let Some(id) = self.lookup(&mut tx, &mut ids, factory, &alert.key).await? else { continue };
                    let history = HistoryRow {
                        factory,
                        alert_id: &id,
                        at: *at_ms,
                        status: HistoryStatus::Is(AlertStatus::Resolved),
                        actor: ENGINE_ACTOR,
                        note: Some(reason.as_str().to_string()),
                        value: value_text(*value),
                    };
                    let resolved = self
                        .change_with_history(
                            &mut tx,
                            "UPDATE alerts SET status = 'resolved', resolved_at = ?, resolved_by = ?, \
                             value = COALESCE(?, value), updated_at = ? WHERE factory_id = ? AND id = ? AND status <> 'resolved'",
                            &history,
                            |q| {
                                q.bind(*at_ms)
                                    .bind(ENGINE_ACTOR)
                                    .bind(value_text(*value))
                                    .bind(now_ms)
                                    .bind(factory.as_str().to_string())
                                    .bind(id.clone())
                            },
                        )
                        .await?;
                    if !resolved {
                        continue;
                    }
                    summary.resolved += 1;
                    let payload = alert_event(
                        "alert.resolved",
                        &id,
                        alert,
                        json!({ "status": "resolved", "reason": reason, "value": value,
                                "resolved_at": factoryops_types::format_rfc3339_ms(*at_ms) }),
                    );
                    events.add(&mut tx, factory, format!("alert:{id}:resolved"), payload, now_ms).await?;
                }
                Effect::Notify(n) => {
                    let Some(id) = self.lookup(&mut tx, &mut ids, factory, &alert.key).await? else { continue };
                    if matches!(n.kind, NotifyKind::Opened | NotifyKind::Retriggered) {
                        sqlx::query("UPDATE alerts SET last_notified_at = ? WHERE factory_id = ? AND id = ?")
                            .bind(n.at_ms)
                            .bind(factory.as_str())
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    if n.kind == NotifyKind::Escalation {
                        sqlx::query("UPDATE alerts SET escalated_at = ? WHERE factory_id = ? AND id = ? AND escalated_at IS NULL")
                            .bind(n.at_ms)
                            .bind(factory.as_str())
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    summary.notifications += 1;
                    let payload = alert_event(
                        "notification",
                        &id,
                        alert,
                        json!({
                            "kind": n.kind, "targets": n.targets, "severity": n.severity, "message": n.message,
                            "at": factoryops_types::format_rfc3339_ms(n.at_ms),
                        }),
                    );
                    let event_key = format!("notify:{id}:{}:{}", n.kind.as_str(), n.at_ms);
                    events.add(&mut tx, factory, event_key.clone(), payload, now_ms).await?;
                    // Notification rows need the alert's name and value; without a notifier, skip the read.
                    if let (Some(notifier), Some(audience)) = (&self.notifier, audiences.get(factory)) {
                        let row = sqlx::query("SELECT rule_name, value FROM alerts WHERE factory_id = ? AND id = ?")
                            .bind(factory.as_str())
                            .bind(&id)
                            .fetch_one(&mut *tx)
                            .await?;
                        let rule_name: String = row.try_get("rule_name")?;
                        let recipients = Recipients {
                            users: n.targets.users.clone(),
                            emails: n.targets.emails.clone(),
                            whatsapp: n.targets.whatsapp.clone(),
                        };
                        let notice = AlertNotice {
                            factory_id: factory,
                            alert_id: &id,
                            event_key: &event_key,
                            kind: n.kind.as_str(),
                            rule_name: &rule_name,
                            device_id: alert.device_id.as_str(),
                            severity: n.severity.as_str(),
                            message: &n.message,
                            value: row.try_get("value")?,
                            at_ms: n.at_ms,
                            by: None,
                            note: None,
                            recipients: &recipients,
                        };
                        summary.deliveries +=
                            notifier.enqueue_alert(&self.db, &mut tx, audience, &notice, now_ms).await?;
                    }
                }
            }
        }
        tx.commit().await?;
        {
            let mut cache = self.alert_ids.lock();
            if cache.len() + opened.len() > ALERT_ID_CACHE {
                cache.clear();
            }
            cache.extend(opened);
        }
        events.publish().await;
        Ok(summary)
    }

    /// Runs `change` (an insert or update of one alert row, its parameters bound by `bind`)
    /// and, only when it touched the row, writes `history`; true when it did. On SQLite
    /// both statements go in one round trip (`changes()` gates the history row): alert
    /// commits sit on the publish → alert path, and each round trip to the database
    /// thread can queue for a CPU.
    async fn change_with_history<'q>(
        &self,
        tx: &mut WriteTx,
        change: &str,
        history: &HistoryRow<'_>,
        bind: impl FnOnce(
            sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
        ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<bool, RulesError> {
        let (status, from) = match history.status {
            HistoryStatus::Is(status) => (format!("'{}'", status.as_str()), ""),
            HistoryStatus::Current => ("status".to_string(), " FROM alerts WHERE factory_id = ? AND id = ?"),
        };
        let bind_history = |q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>| {
            let q = q
                .bind(history.factory.as_str().to_string())
                .bind(history.alert_id.to_string())
                .bind(history.at)
                .bind(history.actor.to_string())
                .bind(history.note.clone())
                .bind(history.value.clone());
            match history.status {
                HistoryStatus::Is(_) => q,
                HistoryStatus::Current => {
                    q.bind(history.factory.as_str().to_string()).bind(history.alert_id.to_string())
                }
            }
        };
        let insert_history = format!(
            "INSERT INTO alert_history (factory_id, alert_id, at, status, actor, note, value) \
             SELECT ?, ?, ?, {status}, ?, ?, ?{from}"
        );
        match self.db.backend() {
            DatabaseBackend::Sqlite => {
                let gate = if from.is_empty() { " WHERE changes() = 1" } else { " AND changes() = 1" };
                // Only the history's status column and fixed clauses are interpolated; values are bound.
                let sql = format!("{change}; {insert_history}{gate}");
                let done = bind_history(bind(sqlx::query(AssertSqlSafe(sql)))).execute(&mut **tx).await?;
                Ok(done.rows_affected() > 0)
            }
            DatabaseBackend::MySql => {
                let done = bind(sqlx::query(AssertSqlSafe(change.to_string()))).execute(&mut **tx).await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                bind_history(sqlx::query(AssertSqlSafe(insert_history))).execute(&mut **tx).await?;
                Ok(true)
            }
        }
    }

    /// The alert id for a key; `None` when the key's open was a duplicate in this batch or is unknown.
    async fn lookup(
        &self,
        tx: &mut WriteTx,
        ids: &mut HashMap<(FactoryId, String), Option<String>>,
        factory: &FactoryId,
        key: &str,
    ) -> Result<Option<String>, RulesError> {
        let map_key = (factory.clone(), key.to_string());
        if let Some(found) = ids.get(&map_key) {
            return Ok(found.clone());
        }
        if let Some(id) = self.alert_ids.lock().get(&map_key) {
            return Ok(Some(id.clone()));
        }
        let row = sqlx::query("SELECT id FROM alerts WHERE factory_id = ? AND idempotency_key = ?")
            .bind(factory.as_str())
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        let id = row.map(|r| r.try_get::<String, _>("id")).transpose()?;
        ids.insert(map_key, id.clone());
        Ok(id)
    }
}

impl From<sqlx::Error> for RulesError {
    fn from(e: sqlx::Error) -> Self {
        RulesError::Db(DbError::Sqlx(e))
    }
}
