//! Builds the notification channels from the configuration and runs the worker and the
//! operators' health notifier.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use factoryops_api::{DependencyState, ReadinessCheck};
use factoryops_identity::{Identity, UserStatus};
use factoryops_notify::email::{SmtpChannel, SmtpSettings};
use factoryops_notify::enqueue::EnqueueOptions;
use factoryops_notify::health::HealthConfig;
use factoryops_notify::whatsapp::{TwilioChannel, TwilioSettings};
use factoryops_notify::worker::{NotificationWorker, WorkerConfig};
use factoryops_notify::{Channel, Contact, Directory, FactoryProfile, Notifier, NotifyError};
use factoryops_platform::Config;
use factoryops_types::FactoryId;

#[derive(Debug, thiserror::Error)]
pub enum NotifySetupError {
    #[error("{0}")]
    Smtp(#[from] factoryops_notify::email::SmtpConfigError),
    #[error("{0}")]
    Twilio(#[from] factoryops_notify::whatsapp::TwilioConfigError),
}

/// The channels the configuration enables (none configured is allowed: messages to an
/// unconfigured channel become dead letters naming the setting to add).
pub fn channels(config: &Config) -> Result<Vec<Arc<dyn Channel>>, NotifySetupError> {
    let timeout = Duration::from_secs(config.notify.send_timeout_secs);
    let mut channels: Vec<Arc<dyn Channel>> = Vec::new();
    if let (Some(url), Some(from)) = (&config.smtp_url, &config.smtp_from) {
        let settings = SmtpSettings::parse(url.expose(), from, timeout)?;
        tracing::info!(host = %settings.host, port = settings.port, tls = ?settings.tls, "email notifications over SMTP");
        channels.push(Arc::new(SmtpChannel::new(&settings)?));
    }
    if let (Some(sid), Some(token), Some(from)) =
        (&config.twilio_account_sid, &config.twilio_auth_token, &config.twilio_from)
    {
        let settings = TwilioSettings {
            base_url: config.twilio_base_url.clone(),
            account_sid: sid.clone(),
            auth_token: token.expose().to_string(),
            from: from.clone(),
            timeout,
        };
        tracing::info!(base_url = %settings.base_url, "WhatsApp notifications over Twilio");
        channels.push(Arc::new(TwilioChannel::new(&settings)?));
    }
    Ok(channels)
}

pub fn worker_config(config: &Config) -> WorkerConfig {
    let n = &config.notify;
    WorkerConfig {
        concurrency: n.concurrency,
        send_timeout: Duration::from_secs(n.send_timeout_secs),
        backoff_base: Duration::from_secs(n.backoff_base_secs.max(1)),
        backoff_max: Duration::from_secs(n.backoff_max_secs.max(1)),
        breaker_failures: n.breaker_failures,
        breaker_open: Duration::from_secs(n.breaker_open_secs.max(1)),
        breaker_max_open: Duration::from_secs(n.breaker_open_secs.max(1) * 20),
        dead_letter_alarm: n.dead_letter_alarm_per_hour,
        ..WorkerConfig::default()
    }
}

pub fn health_config(config: &Config) -> HealthConfig {
    let n = &config.notify;
    HealthConfig {
        emails: n.sysadmin_emails.clone(),
        whatsapp: n.sysadmin_whatsapp.clone(),
        repeat_every: Duration::from_secs(n.health_repeat_minutes.max(1) * 60),
        clear_after: Duration::from_secs(n.health_clear_after_minutes.max(1) * 60),
        max_attempts: n.max_attempts,
    }
}

/// What the rules store uses to write notification rows with each alert change.
pub fn notifier(config: &Config, identity: Arc<Identity>) -> Notifier {
    let options =
        EnqueueOptions { max_attempts: config.notify.max_attempts, public_url: config.notify.public_url.clone() };
    Notifier::new(Arc::new(IdentityDirectory(identity)), options)
}

/// Users and factories for notifications, from identity.
struct IdentityDirectory(Arc<Identity>);

fn directory_error(e: factoryops_identity::IdentityError) -> NotifyError {
    NotifyError::Malformed(format!("identity: {e}"))
}

#[async_trait]
impl Directory for IdentityDirectory {
    async fn factory(&self, factory: &FactoryId) -> Result<Option<FactoryProfile>, NotifyError> {
        let found = self.0.factory(factory).await.map_err(directory_error)?;
        Ok(found.map(|f| FactoryProfile { name: f.name, timezone: f.timezone }))
    }

    async fn user(&self, factory: &FactoryId, user_id: &str) -> Result<Option<Contact>, NotifyError> {
        let found = self.0.user(factory, user_id).await.map_err(directory_error)?;
        Ok(found.map(|u| Contact { email: u.email, phone: u.phone, active: u.status == UserStatus::Active }))
    }
}

/// `/readyz`: a channel whose circuit is open is *degraded* (messages wait in the outbox),
/// not down.
pub struct NotifyReadiness(pub Arc<NotificationWorker>);

#[async_trait]
impl ReadinessCheck for NotifyReadiness {
    async fn check(&self) -> DependencyState {
        let states = self.0.channel_states();
        let open: Vec<String> = states
            .iter()
            .filter(|s| s.circuit_open)
            .map(|s| format!("{} provider failing ({})", s.channel.as_str(), s.last_error))
            .collect();
        if !open.is_empty() {
            return DependencyState::degraded("notifications", open.join("; "));
        }
        let configured: Vec<&str> = states.iter().filter(|s| s.configured).map(|s| s.channel.as_str()).collect();
        if configured.is_empty() {
            DependencyState::up("notifications", "no channel configured")
        } else {
            DependencyState::up("notifications", configured.join(", "))
        }
    }
}
