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
    /// Several bad fields at once: 422 naming each.
    #[error("invalid fields: {}", .0.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "))]
    InvalidFields(Vec<(String, String)>),
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

pub(crate) use factoryops_types::{ser_opt_time, ser_time};

pub use factoryops_types::{is_e164, is_email};
