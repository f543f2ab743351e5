//! WhatsApp through the Twilio Messages API:
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded
//! `To=whatsapp:+…`, `From=whatsapp:+…`, `Body`, HTTP basic auth with SID and token.
//! 201 is delivered (to Twilio); 429 and 5xx are transient; any other 4xx is permanent
//! and dead-letters the message with Twilio's code and message.

use std::time::Duration;

use async_trait::async_trait;

use crate::channel::{Channel, ChannelKind, Outgoing, SendError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioSettings {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// The sender, `whatsapp:+…` (a bare `+…` number gets the prefix).
    pub from: String,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("twilio settings: {0}")]
pub struct TwilioConfigError(pub String);

pub struct TwilioChannel {
    http: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: String,
    from: String,
}

/// `+4915…` → `whatsapp:+4915…`; an existing prefix is kept.
pub fn whatsapp_address(number: &str) -> String {
    if number.starts_with("whatsapp:") { number.to_string() } else { format!("whatsapp:{number}") }
}

impl TwilioChannel {
    pub fn new(settings: &TwilioSettings) -> Result<Self, TwilioConfigError> {
        let from = whatsapp_address(settings.from.trim());
        if !crate::is_e164(from.trim_start_matches("whatsapp:")) {
            return Err(TwilioConfigError(format!(
                "twilio_from {:?}: expected whatsapp:+<E.164 number>",
                settings.from
            )));
        }
        if settings.account_sid.is_empty() || settings.auth_token.is_empty() {
            return Err(TwilioConfigError("twilio_account_sid and twilio_auth_token are required".into()));
        }
        let base = url::Url::parse(&settings.base_url)
            .map_err(|e| TwilioConfigError(format!("twilio_base_url {:?}: {e}", settings.base_url)))?;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            base.as_str().trim_end_matches('/'),
            settings.account_sid
        );
        let http = factoryops_platform::http::client_builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| TwilioConfigError(format!("http client: {e}")))?;
        Ok(Self { http, url, account_sid: settings.account_sid.clone(), auth_token: settings.auth_token.clone(), from })
    }
}

#[async_trait]
impl Channel for TwilioChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Whatsapp
    }

    async fn send(&self, message: &Outgoing) -> Result<String, SendError> {
        if !crate::is_e164(message.recipient.trim_start_matches("whatsapp:")) {
            return Err(SendError::Permanent(format!("not an E.164 number: {:?}", message.recipient)));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("To", &whatsapp_address(&message.recipient))
            .append_pair("From", &self.from)
            .append_pair("Body", &message.body_text)
            .finish();
        let response = self
            .http
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("twilio unreachable: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            return Ok(json["sid"].as_str().unwrap_or("accepted").to_string());
        }
        let reason = match (json["code"].as_i64(), json["message"].as_str()) {
            (Some(code), Some(msg)) => format!("twilio {} (error {code}): {msg}", status.as_u16()),
            (None, Some(msg)) => format!("twilio {}: {msg}", status.as_u16()),
            _ => format!("twilio {}: {}", status.as_u16(), text.chars().take(200).collect::<String>()),
        };
        if status.as_u16() == 429 || status.is_server_error() {
            Err(SendError::Transient(reason))
        } else {
            Err(SendError::Permanent(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TwilioSettings {
        TwilioSettings {
            base_url: "http://127.0.0.1:9/".into(),
            account_sid: "AC123".into(),
            auth_token: "tok".into(),
            from: "+14155238886".into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn builds_the_messages_url_and_prefixes_the_sender() {
        let c = TwilioChannel::new(&settings()).unwrap();
        assert_eq!(c.url, "http://127.0.0.1:9/2010-04-01/Accounts/AC123/Messages.json");
        assert_eq!(c.from, "whatsapp:+14155238886");
        assert_eq!(whatsapp_address("whatsapp:+1"), "whatsapp:+1");
    }

    #[test]
    fn refuses_bad_settings() {
        let mut s = settings();
        s.from = "14155238886".into();
        assert!(TwilioChannel::new(&s).is_err());
        let mut s = settings();
        s.auth_token.clear();
        assert!(TwilioChannel::new(&s).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_transient() {
        let c = TwilioChannel::new(&settings()).unwrap();
        let m = Outgoing {
            id: "n1".into(),
            recipient: "+4915112345678".into(),
            sender_name: "F".into(),
            subject: "s".into(),
            body_text: "b".into(),
            body_html: None,
        };
        assert!(matches!(c.send(&m).await, Err(SendError::Transient(_))));
        let bad = Outgoing { recipient: "0151".into(), ..m };
        assert!(matches!(c.send(&bad).await, Err(SendError::Permanent(_))));
    }
}
