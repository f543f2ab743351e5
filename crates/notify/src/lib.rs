//! Notifications: alerts and platform-health conditions reach people asynchronously and
//! reliably.
//!
//! - [`Notifier::enqueue_alert`] writes one row per (event, channel, recipient) into the
//!   `notifications` table *inside the caller's transaction* (the rules store calls it
//!   while it commits the alert change), so a committed alert always has its
//!   notifications and a replayed event never adds a second row for the same key.
//! - [`worker::NotificationWorker`] leases due rows, sends them through a [`channel::Channel`]
//!   (email over SMTP, WhatsApp over Twilio) with per-channel concurrency, timeouts,
//!   exponential backoff with jitter and a circuit breaker, and dead-letters what keeps
//!   failing or is refused for good.
//! - [`health::HealthNotifier`] turns `platform.health` events into messages to the
//!   configured operators: raised once, repeated slowly while it lasts, "recovered" at the end.

pub mod breaker;
pub mod channel;
pub mod email;
pub mod enqueue;
pub mod health;
pub mod metrics;
pub mod store;
pub mod templates;
pub mod whatsapp;
pub mod worker;

pub use channel::{Channel, ChannelKind, Outgoing, SendError};
pub use enqueue::{
    AlertNotice, Audience, Contact, Directory, FactoryProfile, Notifier, Recipients, StaticDirectory, enqueue_alert,
};
pub use store::{Notification, NotificationQuery, NotificationStatus, NotificationStore, Preferences};

pub static MIGRATIONS: factoryops_db::Migrations = factoryops_db::Migrations {
    component: "notify",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    mysql: sqlx::migrate!("migrations/mysql"),
};

/// A page of a list: `next_cursor` is set when more items follow.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("not found")]
    NotFound,
    /// The request is valid JSON but not acceptable: 409.
    #[error("{0}")]
    Conflict(String),
    /// A bad field: 422 naming it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("database: {0}")]
    Database(#[from] factoryops_db::DbError),
    #[error("stored data is malformed: {0}")]
    Malformed(String),
}

impl NotifyError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        NotifyError::Invalid { field: field.to_string(), message: message.into() }
    }
}

impl From<sqlx::Error> for NotifyError {
    fn from(e: sqlx::Error) -> Self {
        NotifyError::Database(factoryops_db::DbError::from(e))
    }
}

pub(crate) fn ser_time<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&factoryops_types::format_rfc3339_ms(*ms))
}

pub(crate) fn ser_opt_time<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&factoryops_types::format_rfc3339_ms(*ms)),
        None => s.serialize_none(),
    }
}

/// An E.164 number: `+` then 8 to 15 digits, the first not 0.
pub fn is_e164(text: &str) -> bool {
    let Some(digits) = text.strip_prefix('+') else { return false };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// A deliberately plain address check: one `@`, a dot in the domain, no spaces or
/// control characters, at most 254 bytes. The SMTP server has the last word.
pub fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && text.len() <= 254
        && !text.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_e164() {
        assert!(is_e164("+4915112345678"));
        assert!(is_e164("+12025550123"));
        assert!(!is_e164("4915112345678"));
        assert!(!is_e164("+0151"));
        assert!(!is_e164("+49 151 12345678"));
        assert!(!is_e164("+1234567890123456"));
    }

    #[test]
    fn email_addresses_are_plain() {
        assert!(is_email("ops@example.com"));
        assert!(!is_email("ops@localhost"));
        assert!(!is_email("a b@example.com"));
        assert!(!is_email("a@b@example.com"));
        assert!(!is_email("<x>@example.com"));
        assert!(!is_email("Ops <ops@example.com>"));
    }
}
