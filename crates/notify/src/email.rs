//! Email over SMTP (lettre): `smtp://user:pass@host:port?tls=none|starttls|tls[&ca_file=/path.pem]`.
//! A 5xx answer is permanent (dead letter with the server's reason: a wrong password is
//! `535`); 4xx answers, refused connections, timeouts and TLS failures (a certificate
//! that does not verify) are transient (retry, circuit breaker, `/readyz` degraded), so
//! messages wait while the operator fixes the server's certificate or `ca_file`.
//! Certificates verify against the public web PKI roots plus, with `ca_file`, the PEM
//! certificates in that file (a private CA).

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::channel::{Channel, ChannelKind, Outgoing, SendError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Tls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of extra trusted CA certificates (`ca_file=` in the URL), for a server
    /// whose certificate a private CA signed.
    pub ca_file: Option<std::path::PathBuf>,
    /// The envelope and header sender address; the display name is the factory's.
    pub from: Address,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("smtp settings: {0}")]
pub struct SmtpConfigError(pub String);

impl SmtpSettings {
    /// Parses `smtp://[user:pass@]host[:port][?tls=none|starttls|tls][&ca_file=path]` and the sender
    /// (`alerts@example.com` or `Name <alerts@example.com>`). `tls` defaults to `starttls`;
    /// the port to 25 (none), 587 (starttls) or 465 (tls).
    pub fn parse(url: &str, from: &str, timeout: Duration) -> Result<Self, SmtpConfigError> {
        let u = url::Url::parse(url).map_err(|e| SmtpConfigError(format!("smtp_url: {e}")))?;
        if !matches!(u.scheme(), "smtp" | "smtps") {
            return Err(SmtpConfigError("smtp_url: expected smtp://host:port?tls=none|starttls|tls".into()));
        }
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| SmtpConfigError("smtp_url: no host".into()))?;
        let mut tls = if u.scheme() == "smtps" { SmtpTls::Tls } else { SmtpTls::StartTls };
        let mut ca_file = None;
        for (k, v) in u.query_pairs() {
            if k == "ca_file" {
                ca_file = Some(std::path::PathBuf::from(&*v));
            } else if k == "tls" {
                tls = match &*v {
                    "none" => SmtpTls::None,
                    "starttls" => SmtpTls::StartTls,
                    "tls" => SmtpTls::Tls,
                    other => {
                        return Err(SmtpConfigError(format!("smtp_url: tls={other}: expected none, starttls or tls")));
                    }
                };
            }
        }
        let port = u.port().unwrap_or(match tls {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        });
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let username = (!u.username().is_empty()).then(|| decode(u.username()));
        let password = u.password().map(decode);
        let from = from
            .parse::<Mailbox>()
            .map(|m| m.email)
            .map_err(|e| SmtpConfigError(format!("smtp_from {from:?}: {e}")))?;
        if ca_file.is_some() && tls == SmtpTls::None {
            return Err(SmtpConfigError("smtp_url: ca_file needs tls=starttls or tls".into()));
        }
        Ok(Self { host: host.to_string(), port, tls, username, password, ca_file, from, timeout })
    }
}

pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Address,
}

impl SmtpChannel {
    pub fn new(settings: &SmtpSettings) -> Result<Self, SmtpConfigError> {
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str()).port(settings.port);
        // Read once here: a missing or malformed CA file stops the start, not every send.
        let ca = match &settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| SmtpConfigError(format!("smtp_url: ca_file {}: {e}", path.display())))?;
                // lettre accepts a file without any certificate as an empty list.
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    let path = path.display();
                    return Err(SmtpConfigError(format!("smtp_url: ca_file {path}: no PEM certificate in it")));
                }
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| SmtpConfigError(format!("smtp_url: ca_file {}: {e}", path.display())))?;
                Some(cert)
            }
            None => None,
        };
        let params = move || {
            let mut builder = TlsParameters::builder(settings.host.clone());
            if let Some(ca) = ca {
                builder = builder.add_root_certificate(ca);
            }
            builder.build().map_err(|e| SmtpConfigError(format!("smtp tls: {e}")))
        };
        builder = match settings.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::StartTls => builder.tls(Tls::Required(params()?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(params()?)),
        };
        if let (Some(user), Some(pass)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        let transport = builder.timeout(Some(settings.timeout)).build();
        Ok(Self { transport, from: settings.from.clone() })
    }

    fn message(&self, m: &Outgoing) -> Result<Message, SendError> {
        let to: Mailbox = m
            .recipient
            .parse()
            .map_err(|e| SendError::Permanent(format!("invalid recipient address {:?}: {e}", m.recipient)))?;
        let from = Mailbox::new(Some(m.sender_name.clone()), self.from.clone());
        let domain = self.from.domain().to_string();
        let builder = Message::builder()
            .from(from)
            .to(to)
            .subject(m.subject.clone())
            .message_id(Some(format!("<{}@{domain}>", m.id)));
        let built = match &m.body_html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(m.body_text.clone(), html.clone())),
            None => builder.singlepart(SinglePart::plain(m.body_text.clone())),
        };
        built.map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
    }
}

#[async_trait]
impl Channel for SmtpChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, message: &Outgoing) -> Result<String, SendError> {
        let email = self.message(message)?;
        match self.transport.send(email).await {
            Ok(response) => {
                let text: Vec<&str> = response.message().collect();
                Ok(format!("{} {}", response.code(), text.join(" ")).trim().to_string())
            }
            Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("smtp refused: {e}"))),
            Err(e) => Err(SendError::Transient(format!("smtp: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_tls_modes_credentials_and_default_ports() {
        let t = Duration::from_secs(5);
        let s =
            SmtpSettings::parse("smtp://user%40x:p%3Ass@mail.example.com?tls=none", "alerts@example.com", t).unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("mail.example.com", 25, SmtpTls::None));
        assert_eq!(s.username.as_deref(), Some("user@x"));
        assert_eq!(s.password.as_deref(), Some("p:ss"));
        let s = SmtpSettings::parse("smtp://h:2525", "FactoryOps <a@example.com>", t).unwrap();
        assert_eq!((s.port, s.tls), (2525, SmtpTls::StartTls));
        assert_eq!(s.from.to_string(), "a@example.com");
        assert_eq!(SmtpSettings::parse("smtp://h?tls=tls", "a@example.com", t).unwrap().port, 465);
        assert!(SmtpSettings::parse("smtp://h?tls=maybe", "a@example.com", t).is_err());
        let s = SmtpSettings::parse("smtp://h?ca_file=%2Fetc%2Fca.pem&tls=tls", "a@example.com", t).unwrap();
        assert_eq!(s.ca_file.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert!(SmtpSettings::parse("smtp://h?tls=none&ca_file=/ca.pem", "a@example.com", t).is_err());
        assert!(SmtpSettings::parse("http://h", "a@example.com", t).is_err());
        assert!(SmtpSettings::parse("smtp://h", "not an address", t).is_err());
    }
}
