//! The port every delivery channel implements, and what it is given.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Email,
    Whatsapp,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 2] = [ChannelKind::Email, ChannelKind::Whatsapp];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Whatsapp => "whatsapp",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "email" => Some(ChannelKind::Email),
            "whatsapp" => Some(ChannelKind::Whatsapp),
            _ => None,
        }
    }
}

/// One message as a channel sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The notification's id: a stable Message-ID for email, so a receiver can drop the
    /// rare duplicate after a crash between the provider's acceptance and our bookkeeping.
    pub id: String,
    pub recipient: String,
    /// The display name of the sender (the factory's name, or "FactoryOps" for operators).
    pub sender_name: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
}

/// Why a send failed, which decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Will not work by retrying (bad address, refused for good): dead letter now.
    #[error("{0}")]
    Permanent(String),
    /// May work later (provider down, rate limited, timeout): retry with backoff, and
    /// count towards the channel's circuit breaker.
    #[error("{0}")]
    Transient(String),
}

#[async_trait]
pub trait Channel: Send + Sync + 'static {
    fn kind(&self) -> ChannelKind;

    /// Sends one message; returns the provider's id for it (Twilio's message SID,
    /// the SMTP server's queue answer).
    async fn send(&self, message: &Outgoing) -> Result<String, SendError>;
}
