//! The `notifications` table: the outbox the worker drains and the delivery log the API
//! shows, plus per-user preferences. Every factory-facing function takes the factory
//! scope; another factory's notification is [`NotifyError::NotFound`]. Platform-health
//! rows have no factory and are visible to none.

use factoryops_db::{Database, DatabaseBackend};
use factoryops_types::{FactoryId, new_id};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use utoipa::ToSchema;

use crate::channel::{ChannelKind, Outgoing};
use crate::{NotifyError, Page, ser_opt_time, ser_time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    /// Waiting for its first attempt or for the next retry (`next_attempt_at`).
    Pending,
    /// Leased by a worker; a crashed worker's lease expires and the row is sent again.
    Sending,
    Delivered,
    /// Gave up (permanent refusal or too many attempts); `POST …/retry` re-queues it.
    Dead,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Sending => "sending",
            NotificationStatus::Delivered => "delivered",
            NotificationStatus::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(NotificationStatus::Pending),
            "sending" => Some(NotificationStatus::Sending),
            "delivered" => Some(NotificationStatus::Delivered),
            "dead" => Some(NotificationStatus::Dead),
            _ => None,
        }
    }
}

/// One delivery as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Notification {
    pub id: String,
    pub alert_id: Option<String>,
    /// opened, retriggered, reminder, escalation, acknowledged, resolved, test, health.
    pub kind: String,
    pub severity: Option<String>,
    pub channel: ChannelKind,
    pub recipient: String,
    pub user_id: Option<String>,
    pub subject: String,
    pub status: NotificationStatus,
    pub attempts: i64,
    pub max_attempts: i64,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub provider_id: Option<String>,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    #[serde(serialize_with = "ser_opt_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<i64>,
    #[serde(skip)]
    #[schema(ignore)]
    pub factory_id: Option<String>,
}

/// A row to insert. `dedupe_key` names the event; together with channel and recipient
/// it makes the row unique.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub factory_id: Option<String>,
    pub alert_id: Option<String>,
    pub kind: String,
    pub severity: Option<String>,
    pub channel: ChannelKind,
    pub recipient: String,
    pub user_id: Option<String>,
    pub sender_name: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    pub event_key: String,
    pub max_attempts: i64,
    /// Not before this instant (quiet hours defer non-critical messages).
    pub not_before: i64,
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct NotificationQuery {
    pub status: Option<NotificationStatus>,
    pub channel: Option<ChannelKind>,
    pub alert_id: Option<String>,
    pub cursor: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<u32>,
}

/// A user's channel preferences; quiet hours are `HH:MM` in the factory's time zone and
/// hold back non-critical messages until they end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    pub email: bool,
    pub whatsapp: bool,
    /// `null`: no quiet hours.
    pub quiet_hours: Option<QuietHours>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// `HH:MM`, 24 h, factory time zone.
    pub from: String,
    pub to: String,
}

impl Default for Preferences {
    fn default() -> Self {
        Self { email: true, whatsapp: true, quiet_hours: None }
    }
}

/// A leased row, ready to send.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub message: Outgoing,
    pub channel: ChannelKind,
    pub attempts: i64,
    pub max_attempts: i64,
    pub factory_id: Option<String>,
    pub created_at: i64,
}

const COLUMNS: &str = "id, factory_id, alert_id, kind, severity, channel, recipient, user_id, subject, status, attempts, \
     max_attempts, next_attempt_at, last_error, provider_id, created_at, updated_at, delivered_at";

/// The unique key of a row: a hash, so it fits an index on every backend.
pub(crate) fn dedupe_key(factory: Option<&str>, event_key: &str, channel: ChannelKind, recipient: &str) -> String {
    let mut h = Sha256::new();
    for part in [factory.unwrap_or("-"), event_key, channel.as_str(), &recipient.to_ascii_lowercase()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn from_row(row: &AnyRow) -> Result<Notification, NotifyError> {
    let channel: String = row.try_get("channel")?;
    let status: String = row.try_get("status")?;
    Ok(Notification {
        id: row.try_get("id")?,
        factory_id: row.try_get("factory_id")?,
        alert_id: row.try_get("alert_id")?,
        kind: row.try_get("kind")?,
        severity: row.try_get("severity")?,
        channel: ChannelKind::parse(&channel).ok_or_else(|| NotifyError::Malformed(format!("channel {channel:?}")))?,
        recipient: row.try_get("recipient")?,
        user_id: row.try_get("user_id")?,
        subject: row.try_get("subject")?,
        status: NotificationStatus::parse(&status)
            .ok_or_else(|| NotifyError::Malformed(format!("status {status:?}")))?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        provider_id: row.try_get("provider_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

/// Inserts a row unless its dedupe key exists; `true` when it was inserted.
pub(crate) async fn insert(
    conn: &mut sqlx::AnyConnection,
    backend: DatabaseBackend,
    n: &NewNotification,
    now_ms: i64,
) -> Result<bool, NotifyError> {
    let ignore = match backend {
        DatabaseBackend::Sqlite => "INSERT OR IGNORE",
        DatabaseBackend::MySql => "INSERT IGNORE",
    };
    let sql = format!(
        "{ignore} INTO notifications (id, factory_id, alert_id, kind, severity, channel, recipient, user_id, sender_name, \
         subject, body_text, body_html, dedupe_key, status, attempts, max_attempts, next_attempt_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)"
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(new_id())
        .bind(n.factory_id.clone())
        .bind(n.alert_id.clone())
        .bind(&n.kind)
        .bind(n.severity.clone())
        .bind(n.channel.as_str())
        .bind(&n.recipient)
        .bind(n.user_id.clone())
        .bind(&n.sender_name)
        .bind(&n.subject)
        .bind(&n.body_text)
        .bind(n.body_html.clone())
        .bind(dedupe_key(n.factory_id.as_deref(), &n.event_key, n.channel, &n.recipient))
        .bind(n.max_attempts.max(1))
        .bind(n.not_before.max(now_ms))
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

#[derive(Clone, Debug)]
pub struct NotificationStore {
    db: Database,
}

impl NotificationStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Inserts rows outside any other transaction (health and test messages); returns the
    /// ids of the rows that were new.
    pub async fn insert_all(&self, rows: &[NewNotification], now_ms: i64) -> Result<Vec<String>, NotifyError> {
        let mut conn = self.db.pool().acquire().await?;
        let mut ids = Vec::new();
        for row in rows {
            if insert(&mut conn, self.db.backend(), row, now_ms).await? {
                let key = dedupe_key(row.factory_id.as_deref(), &row.event_key, row.channel, &row.recipient);
                let found = sqlx::query("SELECT id FROM notifications WHERE dedupe_key = ?")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
                ids.push(found.try_get("id")?);
            }
        }
        Ok(ids)
    }

    pub async fn list(
        &self,
        factory: &FactoryId,
        query: &NotificationQuery,
    ) -> Result<Page<Notification>, NotifyError> {
        let limit = i64::from(query.limit.unwrap_or(50).clamp(1, 500));
        let mut sql = format!("SELECT {COLUMNS} FROM notifications WHERE factory_id = ?");
        let mut binds = vec![factory.as_str().to_string()];
        if let Some(s) = query.status {
            sql.push_str(" AND status = ?");
            binds.push(s.as_str().into());
        }
        if let Some(c) = query.channel {
            sql.push_str(" AND channel = ?");
            binds.push(c.as_str().into());
        }
        if let Some(a) = &query.alert_id {
            sql.push_str(" AND alert_id = ?");
            binds.push(a.clone());
        }
        if let Some(c) = &query.cursor {
            sql.push_str(" AND id < ?");
            binds.push(c.clone());
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        // Only fixed clauses and placeholders were appended; every value is bound.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.bind(limit + 1).fetch_all(self.db.pool()).await?;
        let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
            items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            items.last().map(|n| n.id.clone())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    pub async fn get(&self, factory: &FactoryId, id: &str) -> Result<Notification, NotifyError> {
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM notifications WHERE factory_id = ? AND id = ?")))
                .bind(factory.as_str())
                .bind(id)
                .fetch_optional(self.db.pool())
                .await?;
        row.as_ref().map(from_row).transpose()?.ok_or(NotifyError::NotFound)
    }

    /// Any row by id, whatever its factory (tests and operators).
    pub async fn get_any(&self, id: &str) -> Result<Notification, NotifyError> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM notifications WHERE id = ?")))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(from_row).transpose()?.ok_or(NotifyError::NotFound)
    }

    /// Re-queues a dead letter with a fresh attempt budget. `Conflict` unless it is dead.
    pub async fn retry(&self, factory: &FactoryId, id: &str, now_ms: i64) -> Result<Notification, NotifyError> {
        let current = self.get(factory, id).await?;
        if current.status != NotificationStatus::Dead {
            return Err(NotifyError::Conflict(format!(
                "only dead letters can be retried; this notification is {}",
                current.status.as_str()
            )));
        }
        let done = sqlx::query(
            "UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = ?, lease_until = NULL, \
             updated_at = ? WHERE factory_id = ? AND id = ? AND status = 'dead'",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(factory.as_str())
        .bind(id)
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(NotifyError::Conflict("the notification changed meanwhile; try again".into()));
        }
        // What the retry did, not a re-read: a worker may claim the row the moment it is pending.
        Ok(Notification {
            status: NotificationStatus::Pending,
            attempts: 0,
            next_attempt_at: now_ms,
            updated_at: now_ms,
            ..current
        })
    }

    /// Leases up to `limit` due rows of one channel: pending rows whose time has come, and
    /// rows whose sender died (lease expired). Claiming is a conditional UPDATE checked
    /// by its row count, atomic on both backends without `SKIP LOCKED`.
    pub async fn claim(
        &self,
        channel: ChannelKind,
        limit: usize,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Claimed>, NotifyError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let due = "((status = 'pending' AND next_attempt_at <= ?) OR (status = 'sending' AND lease_until < ?))";
        let candidates = sqlx::query(AssertSqlSafe(format!(
            "SELECT id FROM notifications WHERE channel = ? AND {due} ORDER BY next_attempt_at, id LIMIT ?"
        )))
        .bind(channel.as_str())
        .bind(now_ms)
        .bind(now_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        let mut claimed = Vec::new();
        for row in candidates {
            let id: String = row.try_get("id")?;
            let taken = sqlx::query(AssertSqlSafe(format!(
                "UPDATE notifications SET status = 'sending', lease_until = ?, attempts = attempts + 1, updated_at = ? \
                 WHERE id = ? AND {due}"
            )))
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(&id)
            .bind(now_ms)
            .bind(now_ms)
            .execute(self.db.pool())
            .await?;
            if taken.rows_affected() == 0 {
                continue;
            }
            let row = sqlx::query(
                "SELECT id, factory_id, recipient, sender_name, subject, body_text, body_html, attempts, max_attempts, \
                 created_at FROM notifications WHERE id = ?",
            )
            .bind(&id)
            .fetch_one(self.db.pool())
            .await?;
            claimed.push(Claimed {
                message: Outgoing {
                    id: row.try_get("id")?,
                    recipient: row.try_get("recipient")?,
                    sender_name: row.try_get("sender_name")?,
                    subject: row.try_get("subject")?,
                    body_text: row.try_get("body_text")?,
                    body_html: row.try_get("body_html")?,
                },
                channel,
                attempts: row.try_get("attempts")?,
                max_attempts: row.try_get("max_attempts")?,
                factory_id: row.try_get("factory_id")?,
                created_at: row.try_get("created_at")?,
            });
        }
        Ok(claimed)
    }

    pub async fn mark_delivered(&self, id: &str, provider_id: &str, now_ms: i64) -> Result<(), NotifyError> {
        sqlx::query(
            "UPDATE notifications SET status = 'delivered', delivered_at = ?, provider_id = ?, lease_until = NULL, \
             last_error = NULL, updated_at = ? WHERE id = ? AND status = 'sending'",
        )
        .bind(now_ms)
        .bind(provider_id)
        .bind(now_ms)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Back to pending until `retry_at`, keeping the error for the delivery log. With
    /// `count_attempt` false the attempt is given back (a failed circuit-breaker probe:
    /// while a provider is down, messages wait instead of using up their attempts).
    pub async fn mark_retry(
        &self,
        id: &str,
        error: &str,
        retry_at: i64,
        count_attempt: bool,
        now_ms: i64,
    ) -> Result<(), NotifyError> {
        sqlx::query(
            "UPDATE notifications SET status = 'pending', next_attempt_at = ?, last_error = ?, lease_until = NULL, \
             attempts = CASE WHEN ? = 0 AND attempts > 0 THEN attempts - 1 ELSE attempts END, \
             updated_at = ? WHERE id = ? AND status = 'sending'",
        )
        .bind(retry_at)
        .bind(truncate_error(error))
        .bind(i64::from(count_attempt))
        .bind(now_ms)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn mark_dead(&self, id: &str, error: &str, now_ms: i64) -> Result<(), NotifyError> {
        sqlx::query(
            "UPDATE notifications SET status = 'dead', last_error = ?, lease_until = NULL, updated_at = ? \
             WHERE id = ? AND status IN ('sending', 'pending')",
        )
        .bind(truncate_error(error))
        .bind(now_ms)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Gives a leased row back untouched (shutdown, or the channel's circuit opened
    /// while it waited): the attempt does not count.
    pub async fn release(&self, id: &str, now_ms: i64) -> Result<(), NotifyError> {
        sqlx::query(
            "UPDATE notifications SET status = 'pending', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
             lease_until = NULL, updated_at = ? WHERE id = ? AND status = 'sending'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Dead letters that died since `since_ms` (all factories), for the operators' alarm.
    pub async fn dead_since(&self, since_ms: i64) -> Result<i64, NotifyError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM notifications WHERE status = 'dead' AND updated_at >= ?")
            .bind(since_ms)
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Rows waiting (pending or leased) per channel, for the metrics gauge.
    pub async fn backlog(&self, channel: ChannelKind) -> Result<i64, NotifyError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM notifications WHERE channel = ? AND status IN ('pending', 'sending')",
        )
        .bind(channel.as_str())
        .fetch_one(self.db.pool())
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The earliest `next_attempt_at` of a pending row, so the worker can sleep until then.
    pub async fn next_due(&self) -> Result<Option<i64>, NotifyError> {
        let row = sqlx::query("SELECT MIN(next_attempt_at) AS t FROM notifications WHERE status = 'pending'")
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get("t")?)
    }

    // ---- preferences ----

    pub async fn preferences(&self, factory: &FactoryId, user_id: &str) -> Result<Preferences, NotifyError> {
        let mut conn = self.db.pool().acquire().await?;
        load_preferences(&mut conn, factory.as_str(), user_id).await
    }

    pub async fn set_preferences(
        &self,
        factory: &FactoryId,
        user_id: &str,
        prefs: &Preferences,
        now_ms: i64,
    ) -> Result<Preferences, NotifyError> {
        if let Some(q) = &prefs.quiet_hours {
            let bad: Vec<(String, String)> = [("quiet_hours.from", &q.from), ("quiet_hours.to", &q.to)]
                .into_iter()
                .filter(|(_, value)| parse_hhmm(value).is_none())
                .map(|(field, _)| (field.to_string(), "expected HH:MM (24 h)".to_string()))
                .collect();
            if !bad.is_empty() {
                return Err(NotifyError::InvalidFields(bad));
            }
        }
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM notification_preferences WHERE factory_id = ? AND user_id = ?")
            .bind(factory.as_str())
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO notification_preferences (factory_id, user_id, email_enabled, whatsapp_enabled, quiet_from, \
             quiet_to, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(factory.as_str())
        .bind(user_id)
        .bind(i64::from(prefs.email))
        .bind(i64::from(prefs.whatsapp))
        .bind(prefs.quiet_hours.as_ref().map(|q| q.from.clone()))
        .bind(prefs.quiet_hours.as_ref().map(|q| q.to.clone()))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.preferences(factory, user_id).await
    }
}

pub(crate) async fn load_preferences(
    conn: &mut sqlx::AnyConnection,
    factory: &str,
    user_id: &str,
) -> Result<Preferences, NotifyError> {
    let row = sqlx::query(
        "SELECT email_enabled, whatsapp_enabled, quiet_from, quiet_to FROM notification_preferences \
         WHERE factory_id = ? AND user_id = ?",
    )
    .bind(factory)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Preferences::default()) };
    let email: i64 = row.try_get("email_enabled")?;
    let whatsapp: i64 = row.try_get("whatsapp_enabled")?;
    let from: Option<String> = row.try_get("quiet_from")?;
    let to: Option<String> = row.try_get("quiet_to")?;
    Ok(Preferences {
        email: email != 0,
        whatsapp: whatsapp != 0,
        quiet_hours: match (from, to) {
            (Some(from), Some(to)) => Some(QuietHours { from, to }),
            _ => None,
        },
    })
}

/// `HH:MM` → minutes after midnight.
pub fn parse_hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn truncate_error(error: &str) -> String {
    error.chars().take(1000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keys_ignore_recipient_case_and_separate_parts() {
        let a = dedupe_key(Some("f"), "k", ChannelKind::Email, "Ops@Example.com");
        let b = dedupe_key(Some("f"), "k", ChannelKind::Email, "ops@example.com");
        assert_eq!(a, b);
        assert_ne!(a, dedupe_key(Some("f"), "k", ChannelKind::Whatsapp, "ops@example.com"));
        assert_ne!(
            dedupe_key(Some("ab"), "c", ChannelKind::Email, "x"),
            dedupe_key(Some("a"), "bc", ChannelKind::Email, "x")
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn hhmm_parses_24_hour_times() {
        assert_eq!(parse_hhmm("00:00"), Some(0));
        assert_eq!(parse_hhmm("22:30"), Some(1350));
        assert_eq!(parse_hhmm("24:00"), None);
        assert_eq!(parse_hhmm("7:00"), None);
    }
}
