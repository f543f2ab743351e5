//! Turning one alert event into notification rows, inside the caller's transaction.
//!
//! Recipients are resolved here, at the moment of the alert: a rule's users become their
//! email address and (when their profile has a phone number) their WhatsApp number,
//! filtered by their preferences; free addresses and numbers on the rule are used as
//! they are. Users and factories come through the [`Directory`] port (identity owns
//! them); only this crate's own tables are touched inside the caller's transaction.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration as ChronoDuration, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use factoryops_db::{Database, WriteTx};
use factoryops_types::FactoryId;

use crate::NotifyError;
use crate::channel::ChannelKind;
use crate::store::{NewNotification, Preferences, insert, load_preferences, parse_hhmm};
use crate::templates::{AlertContent, render_alert};

/// How many times a message is tried before it becomes a dead letter.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 8;

/// Who a rule notifies (the rule's `notify` targets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipients {
    pub users: Vec<String>,
    pub emails: Vec<String>,
    pub whatsapp: Vec<String>,
}

impl Recipients {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.emails.is_empty() && self.whatsapp.is_empty()
    }
}

/// A factory as a message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactoryProfile {
    pub name: String,
    /// IANA name; UTC when unknown.
    pub timezone: String,
}

/// A user's contact details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub email: String,
    /// E.164, for WhatsApp.
    pub phone: Option<String>,
    pub active: bool,
}

/// Who people and factories are: the port identity implements (wired in `main`).
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    async fn factory(&self, factory: &FactoryId) -> Result<Option<FactoryProfile>, NotifyError>;
    async fn user(&self, factory: &FactoryId, user_id: &str) -> Result<Option<Contact>, NotifyError>;
}

/// A fixed directory (tools and tests).
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    pub factories: HashMap<String, FactoryProfile>,
    /// `(factory, user id)` → contact.
    pub users: HashMap<(String, String), Contact>,
}

#[async_trait]
impl Directory for StaticDirectory {
    async fn factory(&self, factory: &FactoryId) -> Result<Option<FactoryProfile>, NotifyError> {
        Ok(self.factories.get(factory.as_str()).cloned())
    }

    async fn user(&self, factory: &FactoryId, user_id: &str) -> Result<Option<Contact>, NotifyError> {
        Ok(self.users.get(&(factory.as_str().to_string(), user_id.to_string())).cloned())
    }
}

/// Writes notification rows for alert events: the directory plus the settings.
#[derive(Clone)]
pub struct Notifier {
    directory: Arc<dyn Directory>,
    options: EnqueueOptions,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(directory: Arc<dyn Directory>, options: EnqueueOptions) -> Self {
        Self { directory, options }
    }

    /// Whether `user_id` is a user of `factory` (enabled or not), for validating a rule's
    /// targets: another factory's user id must not be accepted only to be skipped at send time.
    pub async fn is_user(&self, factory: &FactoryId, user_id: &str) -> Result<bool, NotifyError> {
        Ok(self.directory.user(factory, user_id).await?.is_some())
    }

    /// Looks up what notices of `factory` need (call *before* opening the transaction).
    pub async fn audience(
        &self,
        factory: &FactoryId,
        user_ids: &[String],
        actor: Option<&str>,
    ) -> Result<Audience, NotifyError> {
        Audience::resolve(self.directory.as_ref(), factory, user_ids, actor).await
    }

    /// Inserts one row per (channel, recipient) in `tx`; returns how many rows were new.
    pub async fn enqueue_alert(
        &self,
        db: &Database,
        tx: &mut WriteTx,
        audience: &Audience,
        notice: &AlertNotice<'_>,
        now_ms: i64,
    ) -> Result<usize, NotifyError> {
        enqueue_alert(db, tx, audience, notice, &self.options, now_ms).await
    }
}

/// Everything notices of one factory need from the directory, looked up *before* the
/// caller's write transaction: the directory reads through the connection pool, and a
/// transaction waiting for a pooled connection it may itself be holding up is a deadlock.
#[derive(Debug, Clone)]
pub struct Audience {
    factory_name: String,
    timezone: Tz,
    contacts: HashMap<String, Contact>,
    /// `user:<id>` actor → the user's email.
    actors: HashMap<String, String>,
}

impl Audience {
    pub async fn resolve(
        directory: &dyn Directory,
        factory: &FactoryId,
        user_ids: &[String],
        actor: Option<&str>,
    ) -> Result<Self, NotifyError> {
        let profile = directory.factory(factory).await?;
        let mut audience = Audience {
            factory_name: profile.as_ref().map_or_else(|| factory.to_string(), |p| p.name.clone()),
            timezone: profile.and_then(|p| p.timezone.parse().ok()).unwrap_or(chrono_tz::UTC),
            contacts: HashMap::new(),
            actors: HashMap::new(),
        };
        for user_id in user_ids {
            if audience.contacts.contains_key(user_id) {
                continue;
            }
            match directory.user(factory, user_id).await? {
                Some(contact) => {
                    audience.contacts.insert(user_id.clone(), contact);
                }
                None => tracing::warn!(factory_id = %factory, user_id, "rule notifies an unknown user; skipped"),
            }
        }
        if let Some(actor) = actor
            && let Some(user_id) = actor.strip_prefix("user:")
            && let Some(contact) = directory.user(factory, user_id).await?
        {
            audience.actors.insert(actor.to_string(), contact.email);
        }
        Ok(audience)
    }

    fn actor(&self, actor: &str) -> String {
        self.actors.get(actor).cloned().unwrap_or_else(|| actor.to_string())
    }
}

/// Settings that shape every enqueued row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueOptions {
    pub max_attempts: i64,
    /// The portal's public base URL (e.g. `https://ops.example.com`), for links in emails.
    pub public_url: Option<String>,
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        Self { max_attempts: DEFAULT_MAX_ATTEMPTS, public_url: None }
    }
}

/// One alert event to notify about.
#[derive(Debug, Clone)]
pub struct AlertNotice<'a> {
    pub factory_id: &'a FactoryId,
    pub alert_id: &'a str,
    /// Unique per event (e.g. `notify:{alert}:opened:{at}`): a replay inserts nothing new.
    pub event_key: &'a str,
    /// opened, retriggered, reminder, escalation, acknowledged, resolved.
    pub kind: &'a str,
    pub rule_name: &'a str,
    pub device_id: &'a str,
    pub severity: &'a str,
    pub message: &'a str,
    pub value: Option<String>,
    pub at_ms: i64,
    pub by: Option<&'a str>,
    pub note: Option<&'a str>,
    pub recipients: &'a Recipients,
}

/// Inserts one row per (channel, recipient) for the notice, with the audience resolved
/// beforehand; returns how many rows were new.
pub async fn enqueue_alert(
    db: &Database,
    tx: &mut WriteTx,
    audience: &Audience,
    notice: &AlertNotice<'_>,
    options: &EnqueueOptions,
    now_ms: i64,
) -> Result<usize, NotifyError> {
    if notice.recipients.is_empty() {
        return Ok(0);
    }
    let factory = notice.factory_id.as_str();
    let factory_name = audience.factory_name.clone();
    let tz = audience.timezone;
    let link =
        options.public_url.as_ref().map(|base| format!("{}/alerts/{}", base.trim_end_matches('/'), notice.alert_id));
    let by = notice.by.map(|actor| audience.actor(actor));
    let rendered = render_alert(&AlertContent {
        kind: notice.kind,
        factory_name: &factory_name,
        rule_name: notice.rule_name,
        device_id: notice.device_id,
        severity: notice.severity,
        message: notice.message,
        value: notice.value.as_deref(),
        at_ms: notice.at_ms,
        timezone: tz,
        by: by.as_deref(),
        note: notice.note,
        link,
    });
    let critical = notice.severity == "critical";
    let row = |channel: ChannelKind, recipient: &str, user_id: Option<&str>, not_before: i64| NewNotification {
        factory_id: Some(factory.to_string()),
        alert_id: Some(notice.alert_id.to_string()),
        kind: notice.kind.to_string(),
        severity: Some(notice.severity.to_string()),
        channel,
        recipient: recipient.to_string(),
        user_id: user_id.map(str::to_string),
        sender_name: factory_name.clone(),
        subject: rendered.subject.clone(),
        body_text: if channel == ChannelKind::Email { rendered.text.clone() } else { rendered.short.clone() },
        body_html: (channel == ChannelKind::Email).then(|| rendered.html.clone()),
        event_key: notice.event_key.to_string(),
        max_attempts: options.max_attempts,
        not_before,
    };
    let mut rows = Vec::new();
    for user_id in &notice.recipients.users {
        let Some(contact) = audience.contacts.get(user_id) else { continue };
        if !contact.active {
            continue;
        }
        let prefs = load_preferences(tx, factory, user_id).await?;
        let not_before = if critical { now_ms } else { quiet_until(&prefs, tz, now_ms).unwrap_or(now_ms) };
        if prefs.email && crate::is_email(&contact.email) {
            rows.push(row(ChannelKind::Email, &contact.email, Some(user_id), not_before));
        }
        if let Some(phone) = contact.phone.as_ref().filter(|p| prefs.whatsapp && crate::is_e164(p)) {
            rows.push(row(ChannelKind::Whatsapp, phone, Some(user_id), not_before));
        }
    }
    for email in &notice.recipients.emails {
        if crate::is_email(email) {
            rows.push(row(ChannelKind::Email, email, None, now_ms));
        } else {
            tracing::warn!(factory_id = factory, "rule has an invalid email target; skipped");
        }
    }
    for number in &notice.recipients.whatsapp {
        if crate::is_e164(number) {
            rows.push(row(ChannelKind::Whatsapp, number, None, now_ms));
        } else {
            tracing::warn!(factory_id = factory, "rule has an invalid WhatsApp number; skipped");
        }
    }
    let mut inserted = 0;
    for r in &rows {
        if insert(tx, db.backend(), r, now_ms).await? {
            inserted += 1;
        }
    }
    Ok(inserted)
}

/// When `now` falls in the user's quiet hours, the instant they end; otherwise `None`.
/// Windows may cross midnight (`22:00`–`06:00`); an end that falls into a DST gap moves
/// to the first valid instant after it.
pub fn quiet_until(prefs: &Preferences, tz: Tz, now_ms: i64) -> Option<i64> {
    let quiet = prefs.quiet_hours.as_ref()?;
    let (from, to) = (parse_hhmm(&quiet.from)?, parse_hhmm(&quiet.to)?);
    if from == to {
        return None;
    }
    let local = tz.timestamp_millis_opt(now_ms).single()?;
    let minute = local.hour() * 60 + local.minute();
    let inside = if from < to { minute >= from && minute < to } else { minute >= from || minute < to };
    if !inside {
        return None;
    }
    let end_date = if minute < to { local.date_naive() } else { local.date_naive() + ChronoDuration::days(1) };
    let end_time = NaiveTime::from_hms_opt(to / 60, to % 60, 0)?;
    let mut naive = end_date.and_time(end_time);
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&naive).earliest() {
            return Some(t.timestamp_millis());
        }
        naive += ChronoDuration::minutes(30);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::QuietHours;

    fn prefs(from: &str, to: &str) -> Preferences {
        Preferences { quiet_hours: Some(QuietHours { from: from.into(), to: to.into() }), ..Preferences::default() }
    }

    fn ms(rfc: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc).map(|t| t.timestamp_millis()).unwrap_or_default()
    }

    #[test]
    fn quiet_hours_across_midnight_end_the_next_morning_in_the_factory_zone() {
        let tz = chrono_tz::Europe::Berlin;
        // 23:30 in Berlin (CET, UTC+1) → quiet until 06:00 local = 05:00 UTC next day.
        let end = quiet_until(&prefs("22:00", "06:00"), tz, ms("2026-01-10T22:30:00Z"));
        assert_eq!(end, Some(ms("2026-01-11T05:00:00Z")));
        // 03:00 local → same day 06:00.
        assert_eq!(
            quiet_until(&prefs("22:00", "06:00"), tz, ms("2026-01-11T02:00:00Z")),
            Some(ms("2026-01-11T05:00:00Z"))
        );
        // 12:00 local → not quiet.
        assert_eq!(quiet_until(&prefs("22:00", "06:00"), tz, ms("2026-01-11T11:00:00Z")), None);
    }

    #[test]
    fn quiet_hours_respect_dst() {
        // The night of 2026-03-29 Berlin springs forward at 02:00; 06:00 local is then UTC+2.
        let tz = chrono_tz::Europe::Berlin;
        let end = quiet_until(&prefs("22:00", "06:00"), tz, ms("2026-03-28T23:00:00Z"));
        assert_eq!(end, Some(ms("2026-03-29T04:00:00Z")));
        // A window ending inside the gap (02:30 does not exist) ends at the first valid instant.
        let end = quiet_until(&prefs("01:00", "02:30"), tz, ms("2026-03-29T00:30:00Z"));
        assert_eq!(end, Some(ms("2026-03-29T01:00:00Z")));
    }

    #[test]
    fn no_window_means_no_delay() {
        assert_eq!(quiet_until(&Preferences::default(), chrono_tz::UTC, 0), None);
        assert_eq!(quiet_until(&prefs("08:00", "08:00"), chrono_tz::UTC, 0), None);
    }
}
