//! Layered configuration: defaults → optional TOML file → `FACTORYOPS_*` env vars.
//!
//! Top-level keys map one to one to env vars (`database_url` ↔ `FACTORYOPS_DATABASE_URL`);
//! nested keys use a double underscore (`auth.bcrypt_cost` ↔ `FACTORYOPS_AUTH__BCRYPT_COST`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::secret::{Secret, SecretUrl};

pub const ENV_PREFIX: &str = "FACTORYOPS_";
/// The env var naming the optional TOML file; not itself a config key.
pub const CONFIG_FILE_ENV: &str = "FACTORYOPS_CONFIG";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where embedded backends keep their files.
    pub data_dir: PathBuf,
    pub http_addr: String,
    pub mqtt_addr: String,
    /// MQTT over TLS; off unless set together with `mqtt_tls_cert` and `mqtt_tls_key`.
    pub mqtt_tls_addr: Option<String>,
    pub mqtt_tls_cert: Option<PathBuf>,
    pub mqtt_tls_key: Option<PathBuf>,
    /// `sqlite://…` or `mysql://…`; default: a SQLite file in the data dir.
    pub database_url: Option<SecretUrl>,
    /// `http(s)://…` for InfluxDB; default: the embedded engine in the data dir.
    pub tsdb_url: Option<SecretUrl>,
    /// The event bus; only the in-process one (`memory://`, the default) is built so far:
    /// `nats://…` is refused at start until its adapter exists.
    pub bus_url: Option<SecretUrl>,
    /// Datasets, models and reports (ADR 0018): unset = a directory `data_dir/objects`;
    /// `file:///path`; or `s3://bucket?endpoint=http://host:9000&region=us-east-1&path_style=true`
    /// with keys in `object_store.*`.
    pub object_store_url: Option<SecretUrl>,
    /// The platform root's first password; generated and printed once when unset.
    pub root_password: Option<Secret>,
    /// `smtp://user:pass@host:port?tls=none|starttls|tls[&ca_file=/path/ca.pem]`; `ca_file`
    /// trusts a private CA besides the public roots.
    pub smtp_url: Option<SecretUrl>,
    pub smtp_from: Option<String>,
    pub twilio_account_sid: Option<String>,
    pub twilio_auth_token: Option<Secret>,
    pub twilio_from: Option<String>,
    pub twilio_base_url: String,
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,factoryops_api=debug`.
    pub log_level: String,
    /// How long shutdown may take before remaining work is abandoned.
    pub shutdown_timeout_secs: u64,
    /// File descriptors kept free of client connections (database, WAL, TSDB part files);
    /// the connection caps are sized from the descriptor limit minus this (ADR 0011).
    pub fd_reserve: usize,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub tsdb: TsdbConfig,
    pub notify: NotifyConfig,
    pub ingest: IngestLimits,
    pub mqtt: MqttLimits,
    pub energy: EnergyConfig,
    pub rules: RulesLimits,
    pub object_store: ObjectStoreConfig,
    pub jobs: JobsConfig,
}

/// The object store's credentials and limits (`object_store_url` picks the adapter).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreConfig {
    /// S3 access key id and secret; both or neither (neither = the instance's credentials).
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Deadline of one store operation: a stopped server fails calls after this, never hangs them.
    pub timeout_secs: u64,
    /// How often storage health is probed (new work is refused while it is down).
    pub check_interval_secs: u64,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        Self { access_key_id: None, secret_access_key: None, timeout_secs: 10, check_interval_secs: 15 }
    }
}

/// The job runtime (crates/jobs, ADR 0018).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Jobs of one kind running at once in this process, by kind (e.g. `{ dataset_export = 2 }`);
    /// kinds not listed run `default_concurrency` at a time.
    pub concurrency: std::collections::BTreeMap<String, usize>,
    pub default_concurrency: usize,
    /// Threads for CPU-heavy job work at once; the rest of the machine stays with ingestion and rules.
    pub cpu_threads: usize,
    /// A running job's lease; a worker that dies loses its jobs after this.
    pub lease_secs: u64,
    /// How often an idle runtime looks for due jobs (new jobs of this process wake it at once).
    pub poll_interval_ms: u64,
    /// First retry delay of a failed attempt; doubles per attempt up to `backoff_max_secs`.
    pub backoff_base_secs: u64,
    pub backoff_max_secs: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            concurrency: std::collections::BTreeMap::new(),
            default_concurrency: 1,
            cpu_threads: 1,
            lease_secs: 60,
            poll_interval_ms: 1_000,
            backoff_base_secs: 10,
            backoff_max_secs: 600,
        }
    }
}

/// The energy computations (crates/energy, ADR 0015).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnergyConfig {
    /// Memory for the computed 15-minute slots of closed local days, per device (an LRU;
    /// a device-day takes about 3.3 KB, so the default holds ~80,000 device-days; priming
    /// at start fills 3/4 of it: five weeks of 1,000 devices with room to spare).
    pub cache_bytes: usize,
    /// How often the background pass stores the energy of closed local days (ADR 0017),
    /// so a month is read without raw points and outlives raw retention; 0 = never.
    pub persist_interval_secs: u64,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        Self { cache_bytes: 256 * 1024 * 1024, persist_interval_secs: 300 }
    }
}

/// Bounds of the rules engine's work on behalf of one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesLimits {
    /// Raw points one backtest may read into memory (tens of bytes each); a range holding
    /// more is refused with a 422 asking for a shorter range.
    pub max_backtest_points: usize,
}

impl Default for RulesLimits {
    fn default() -> Self {
        Self { max_backtest_points: 5_000_000 }
    }
}

/// What one telemetry message (MQTT or HTTP) and one device may carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestLimits {
    /// A larger message is rejected whole (recorded in the device's last errors).
    pub max_payload_bytes: usize,
    /// Accepted properties per message; further ones are rejected one by one.
    pub max_properties_per_message: usize,
    /// Object nesting below the top level: 1 allows `{"a": {"b": 1}}`.
    pub max_depth: usize,
    /// A device `ts` further than this ahead of the receive time refuses the message
    /// (`timestamp_in_future`).
    pub max_clock_skew_secs: u64,
    /// A device `ts` further than this behind the receive time refuses the message
    /// (`timestamp_too_old`). Unset: the time-series store's raw retention for the
    /// factory; set, it is still capped by it (a point the store would not keep as raw
    /// data is never acknowledged). See ADR 0010.
    pub max_backfill_secs: Option<u64>,
    /// Cardinality guard: distinct properties one device may ever register.
    pub max_properties_per_device: usize,
    /// Messages waiting for the durable write before senders wait (back-pressure).
    pub queue_capacity: usize,
    /// Length of each device's "last errors" list.
    pub last_errors_per_device: usize,
    /// Longest state label (a string value) in characters, at most 255; a longer or
    /// empty one is rejected (`state_too_long`). ADR 0014.
    pub max_state_label_chars: usize,
    /// Distinct state labels per (factory, property); a further new label is rejected
    /// (`state_cardinality`).
    pub max_state_labels: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_properties_per_message: 1_000,
            max_depth: 8,
            max_clock_skew_secs: 24 * 3600,
            max_backfill_secs: None,
            max_properties_per_device: 1_000,
            queue_capacity: 4_096,
            last_errors_per_device: 20,
            max_state_label_chars: 64,
            max_state_labels: 64,
        }
    }
}

/// The built-in MQTT endpoint's bounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttLimits {
    /// Largest accepted packet, fixed header included.
    pub max_packet_bytes: usize,
    /// Unacknowledged PUBLISHes per connection before its socket is no longer read.
    pub receive_maximum: u16,
    /// Unacknowledged PUBLISHes over all connections before sockets are no longer read.
    pub max_inflight_total: usize,
    /// Upper bound on a client's keep-alive (MQTT 5: announced as Server Keep Alive).
    pub max_keep_alive_secs: u16,
    /// Upper bound on an MQTT 5 session expiry interval.
    pub max_session_expiry_secs: u32,
    /// How long a 3.1.1 persistent session is kept after its connection ends.
    pub v311_session_expiry_secs: u32,
    /// Sessions kept for disconnected clients; beyond it those expiring soonest go.
    pub max_offline_sessions: usize,
    /// CONNECTs per second (sustained / burst) from one source IP and for the whole endpoint.
    pub connects_per_ip_per_sec: u32,
    pub connects_per_ip_burst: u32,
    pub connects_per_sec: u32,
    pub connects_burst: u32,
    /// Open MQTT connections (authenticated or not) before new ones are closed at once;
    /// unset: sized from the descriptor limit (ADR 0011).
    pub max_connections: Option<usize>,
}

impl Default for MqttLimits {
    fn default() -> Self {
        Self {
            max_packet_bytes: 256 * 1024,
            receive_maximum: 64,
            max_inflight_total: 16_384,
            max_keep_alive_secs: 3_600,
            max_session_expiry_secs: 7 * 24 * 3600,
            v311_session_expiry_secs: 24 * 3600,
            max_offline_sessions: 100_000,
            connects_per_ip_per_sec: 500,
            connects_per_ip_burst: 1_000,
            connects_per_sec: 2_000,
            connects_burst: 4_000,
            max_connections: None,
        }
    }
}

/// Notification delivery (the channels themselves are the top-level `smtp_*`/`twilio_*` keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Platform operators who receive platform-health messages (TSDB down, dead letters…).
    pub sysadmin_emails: Vec<String>,
    /// Operators' WhatsApp numbers (E.164) for the same messages.
    pub sysadmin_whatsapp: Vec<String>,
    /// The portal's public base URL, for links in emails (e.g. `https://ops.example.com`).
    pub public_url: Option<String>,
    /// Attempts before a message becomes a dead letter.
    pub max_attempts: i64,
    /// Messages in flight per channel.
    pub concurrency: usize,
    pub send_timeout_secs: u64,
    /// First retry delay; doubles per attempt (with jitter) up to `backoff_max_secs`.
    pub backoff_base_secs: u64,
    pub backoff_max_secs: u64,
    /// Consecutive failures that open a channel's circuit, and how long it stays open at first.
    pub breaker_failures: u32,
    pub breaker_open_secs: u64,
    /// How often operators are reminded of a health problem that lasts.
    pub health_repeat_minutes: u64,
    /// A problem that is only reported while it happens (ingestion) ends after this quiet time.
    pub health_clear_after_minutes: u64,
    /// Dead letters per hour that raise a platform-health message.
    pub dead_letter_alarm_per_hour: i64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            sysadmin_emails: Vec::new(),
            sysadmin_whatsapp: Vec::new(),
            public_url: None,
            max_attempts: 8,
            concurrency: 4,
            send_timeout_secs: 30,
            backoff_base_secs: 5,
            backoff_max_secs: 3600,
            breaker_failures: 5,
            breaker_open_secs: 30,
            health_repeat_minutes: 60,
            health_clear_after_minutes: 15,
            dead_letter_alarm_per_hour: 10,
        }
    }
}

/// The embedded time-series engine (used when `tsdb_url` is unset).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TsdbConfig {
    /// `batch` (group commit: one fsync per batch of writers, before they are acknowledged),
    /// `always` (one fsync per write) or `interval` (fsync every `sync_interval_ms`).
    pub sync: String,
    pub sync_interval_ms: u64,
    /// Days each resolution is kept; 0 = forever.
    pub retention_raw_days: u64,
    pub retention_minute_days: u64,
    pub retention_hour_days: u64,
    /// Bound on unflushed points in memory; above it writers wait for the flusher.
    pub head_limit_points: usize,
    /// Per-factory retention overrides, e.g. `[tsdb.retention_factories.plant-1] raw_days = 90`.
    pub retention_factories: std::collections::BTreeMap<String, RetentionDays>,
}

/// Days each resolution is kept for one factory; unset fields use the defaults, 0 = forever.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDays {
    pub raw_days: Option<u64>,
    pub minute_days: Option<u64>,
    pub hour_days: Option<u64>,
}

impl Default for TsdbConfig {
    fn default() -> Self {
        Self {
            sync: "batch".into(),
            sync_interval_ms: 1000,
            retention_raw_days: 30,
            retention_minute_days: 365,
            retention_hour_days: 0,
            head_limit_points: 2_000_000,
            retention_factories: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    /// Time a connection has to deliver a complete request head, counted from its accept
    /// or from the end of its previous response (so it also bounds an idle keep-alive
    /// connection); beyond it the connection is closed.
    pub header_read_timeout_secs: u64,
    /// A connection on which no byte moved in either direction for this long is closed
    /// (a client that stopped reading a response, an upload that stalled).
    pub idle_timeout_secs: u64,
    /// Open HTTP connections before new ones are refused with 503; unset: sized from the
    /// descriptor limit (ADR 0011).
    pub max_connections: Option<usize>,
    /// Open HTTP connections from one client IP before its new ones are refused with 503;
    /// unset: a quarter of `max_connections`, at most 1024. Behind a reverse proxy every
    /// client shares the proxy's IP: raise it there.
    pub max_connections_per_ip: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC key for access tokens; generated and kept in the data dir when unset.
    pub jwt_secret: Option<Secret>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub bcrypt_cost: u32,
    /// Whether `GET /api/v1/factories` lists factories for the login dropdown.
    pub public_factory_list: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            http_addr: "0.0.0.0:8080".into(),
            mqtt_addr: "0.0.0.0:1883".into(),
            mqtt_tls_addr: None,
            mqtt_tls_cert: None,
            mqtt_tls_key: None,
            database_url: None,
            tsdb_url: None,
            bus_url: None,
            object_store_url: None,
            root_password: None,
            smtp_url: None,
            smtp_from: None,
            twilio_account_sid: None,
            twilio_auth_token: None,
            twilio_from: None,
            twilio_base_url: "https://api.twilio.com".into(),
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            shutdown_timeout_secs: 30,
            fd_reserve: 1_024,
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            tsdb: TsdbConfig::default(),
            notify: NotifyConfig::default(),
            ingest: IngestLimits::default(),
            mqtt: MqttLimits::default(),
            energy: EnergyConfig::default(),
            rules: RulesLimits::default(),
            object_store: ObjectStoreConfig::default(),
            jobs: JobsConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: None,
            max_connections_per_ip: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            bcrypt_cost: 12,
            public_factory_list: true,
        }
    }
}

/// A configuration problem, reported as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key} (env {env}): {message}")]
pub struct ConfigError {
    pub key: String,
    pub env: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self { key: key.to_string(), env: env_name(key), message: message.into() }
    }
}

fn is_e164(text: &str) -> bool {
    text.strip_prefix('+').is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The env var that sets a config key: `auth.bcrypt_cost` → `FACTORYOPS_AUTH__BCRYPT_COST`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Which database the URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseBackend {
    Sqlite,
    MySql,
}

impl Config {
    /// Loads defaults, then the TOML file (if any), then `FACTORYOPS_*` env vars, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError {
                    key: "config file".into(),
                    env: CONFIG_FILE_ENV.into(),
                    message: format!("{} does not exist or is not a file", path.display()),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        let env: Vec<(String, String)> =
            env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != CONFIG_FILE_ENV).collect();
        figment = figment.merge(Serialized::defaults(env_map(&env)?));
        let config: Config = figment.extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("http_addr", &self.http_addr)?;
        parse_addr("mqtt_addr", &self.mqtt_addr)?;
        if let Some(addr) = &self.mqtt_tls_addr {
            parse_addr("mqtt_tls_addr", addr)?;
            if self.mqtt_tls_cert.is_none() || self.mqtt_tls_key.is_none() {
                return Err(ConfigError::new("mqtt_tls_addr", "needs mqtt_tls_cert and mqtt_tls_key (PEM files)"));
            }
        }
        self.database_backend()?;
        if let Some(url) = &self.tsdb_url {
            check_scheme("tsdb_url", url, &["http", "https"])?;
        }
        if let Some(url) = &self.bus_url {
            check_adapter("bus_url", url, &["memory"], &["nats"])?;
        }
        if let Some(url) = &self.object_store_url {
            check_adapter("object_store_url", url, &["s3", "file"], &[])?;
        }
        if let Some(url) = &self.smtp_url {
            check_scheme("smtp_url", url, &["smtp", "smtps"])?;
        }
        if let Some(from) = &self.twilio_from
            && !from.starts_with("whatsapp:+")
        {
            return Err(ConfigError::new("twilio_from", "must look like whatsapp:+15551234567"));
        }
        url::Url::parse(&self.twilio_base_url)
            .map_err(|e| ConfigError::new("twilio_base_url", format!("not a URL: {e}")))?;
        if self.smtp_url.is_some() && self.smtp_from.is_none() {
            return Err(ConfigError::new("smtp_from", "is required with smtp_url (the sender address)"));
        }
        let twilio = [self.twilio_account_sid.is_some(), self.twilio_auth_token.is_some(), self.twilio_from.is_some()];
        if twilio.contains(&true) && twilio.contains(&false) {
            return Err(ConfigError::new(
                "twilio_account_sid",
                "WhatsApp needs twilio_account_sid, twilio_auth_token and twilio_from together",
            ));
        }
        if self.ingest.max_state_label_chars > 255 {
            return Err(ConfigError::new("ingest.max_state_label_chars", "must be at most 255"));
        }
        let positive: [(&str, u64); 20] = [
            ("http.header_read_timeout_secs", self.http.header_read_timeout_secs),
            ("http.idle_timeout_secs", self.http.idle_timeout_secs),
            ("http.request_timeout_secs", self.http.request_timeout_secs),
            ("ingest.max_payload_bytes", self.ingest.max_payload_bytes as u64),
            ("ingest.max_properties_per_message", self.ingest.max_properties_per_message as u64),
            ("ingest.max_properties_per_device", self.ingest.max_properties_per_device as u64),
            ("ingest.queue_capacity", self.ingest.queue_capacity as u64),
            ("ingest.last_errors_per_device", self.ingest.last_errors_per_device as u64),
            ("ingest.max_state_label_chars", self.ingest.max_state_label_chars as u64),
            ("ingest.max_state_labels", self.ingest.max_state_labels as u64),
            ("mqtt.max_packet_bytes", self.mqtt.max_packet_bytes as u64),
            ("mqtt.receive_maximum", u64::from(self.mqtt.receive_maximum)),
            ("mqtt.max_inflight_total", self.mqtt.max_inflight_total as u64),
            ("mqtt.max_keep_alive_secs", u64::from(self.mqtt.max_keep_alive_secs)),
            ("mqtt.max_offline_sessions", self.mqtt.max_offline_sessions as u64),
            ("mqtt.connects_per_ip_per_sec", u64::from(self.mqtt.connects_per_ip_per_sec)),
            ("mqtt.connects_per_ip_burst", u64::from(self.mqtt.connects_per_ip_burst)),
            ("mqtt.connects_per_sec", u64::from(self.mqtt.connects_per_sec)),
            ("mqtt.connects_burst", u64::from(self.mqtt.connects_burst)),
            ("rules.max_backtest_points", self.rules.max_backtest_points as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::new(key, "must be at least 1"));
        }
        let caps = [
            ("http.max_connections", self.http.max_connections),
            ("http.max_connections_per_ip", self.http.max_connections_per_ip),
            ("mqtt.max_connections", self.mqtt.max_connections),
        ];
        if let Some((key, _)) = caps.iter().find(|(_, value)| *value == Some(0)) {
            return Err(ConfigError::new(
                key,
                "must be at least 1 (leave it unset to size it from the descriptor limit)",
            ));
        }
        if self.mqtt.max_packet_bytes < self.ingest.max_payload_bytes {
            return Err(ConfigError::new(
                "mqtt.max_packet_bytes",
                "must be at least ingest.max_payload_bytes (a PUBLISH carries the payload plus its topic)",
            ));
        }
        if self.notify.max_attempts < 1 {
            return Err(ConfigError::new("notify.max_attempts", "must be at least 1"));
        }
        if self.notify.concurrency == 0 {
            return Err(ConfigError::new("notify.concurrency", "must be at least 1"));
        }
        if self.notify.send_timeout_secs == 0 {
            return Err(ConfigError::new("notify.send_timeout_secs", "must be at least 1"));
        }
        if let Some(bad) = self.notify.sysadmin_emails.iter().find(|e| !e.contains('@')) {
            return Err(ConfigError::new("notify.sysadmin_emails", format!("{bad:?} is not an email address")));
        }
        if let Some(bad) = self.notify.sysadmin_whatsapp.iter().find(|n| !is_e164(n)) {
            return Err(ConfigError::new("notify.sysadmin_whatsapp", format!("{bad:?} is not an E.164 number")));
        }
        if !(4..=31).contains(&self.auth.bcrypt_cost) {
            return Err(ConfigError::new("auth.bcrypt_cost", "must be between 4 and 31 (production: at least 10)"));
        }
        if !(60..=900).contains(&self.auth.access_token_ttl_secs) {
            return Err(ConfigError::new("auth.access_token_ttl_secs", "must be between 60 and 900 seconds"));
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.expose().len() < 32
        {
            return Err(ConfigError::new("auth.jwt_secret", "must be at least 32 characters"));
        }
        if !["batch", "always", "interval"].contains(&self.tsdb.sync.as_str()) {
            return Err(ConfigError::new("tsdb.sync", "must be batch, always or interval"));
        }
        if let Some(bad) =
            self.tsdb.retention_factories.keys().find(|f| factoryops_types::FactoryId::parse(f.as_str()).is_err())
        {
            return Err(ConfigError::new("tsdb.retention_factories", format!("`{bad}` is not a factory id")));
        }
        if self.tsdb.head_limit_points < 10_000 {
            return Err(ConfigError::new("tsdb.head_limit_points", "must be at least 10000"));
        }
        if self.http.body_limit_bytes < 1024 {
            return Err(ConfigError::new("http.body_limit_bytes", "must be at least 1024"));
        }
        if self.object_store.timeout_secs == 0 || self.object_store.check_interval_secs == 0 {
            return Err(ConfigError::new("object_store.timeout_secs", "timeouts and intervals must be at least 1"));
        }
        if self.jobs.default_concurrency == 0 || self.jobs.cpu_threads == 0 {
            return Err(ConfigError::new(
                "jobs.cpu_threads",
                "jobs.default_concurrency and jobs.cpu_threads must be at least 1",
            ));
        }
        if self.jobs.lease_secs < 3 || self.jobs.poll_interval_ms == 0 || self.jobs.backoff_base_secs == 0 {
            return Err(ConfigError::new(
                "jobs.lease_secs",
                "must be at least 3 (heartbeats run at a third of it); poll and backoff at least 1",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| ConfigError::new("log_level", format!("not a valid filter: {e}")))?;
        Ok(())
    }

    pub fn http_socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("http_addr", &self.http_addr)
    }

    pub fn database_backend(&self) -> Result<DatabaseBackend, ConfigError> {
        match &self.database_url {
            None => Ok(DatabaseBackend::Sqlite),
            Some(url) => match url.expose().split_once(':').map(|(scheme, _)| scheme) {
                Some("sqlite") => Ok(DatabaseBackend::Sqlite),
                Some("mysql" | "mariadb") => Ok(DatabaseBackend::MySql),
                _ => Err(ConfigError::new(
                    "database_url",
                    "must start with sqlite:// or mysql:// (MariaDB uses mysql://)",
                )),
            },
        }
    }

    /// The database URL to connect to: the configured one or the SQLite file in the data dir.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().replacen("mariadb://", "mysql://", 1),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("factoryops.db").display()),
        }
    }

    /// The effective configuration as TOML with every secret masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!(
                "`{value}` is not a socket address (expected ip:port, e.g. 0.0.0.0:8080; port 0 picks a free port)"
            ),
        )
    })
}

fn check_scheme(key: &str, url: &SecretUrl, allowed: &[&str]) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url.expose()).map_err(|e| ConfigError::new(key, format!("not a URL ({e})")))?;
    if allowed.contains(&parsed.scheme()) {
        Ok(())
    } else {
        Err(ConfigError::new(key, format!("scheme must be one of {}", allowed.join(", "))))
    }
}

/// A URL naming an adapter: `built` schemes are in this binary; `planned` ones are known
/// but not built yet, and fail here instead of being silently ignored.
fn check_adapter(key: &str, url: &SecretUrl, built: &[&str], planned: &[&str]) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url.expose()).map_err(|e| ConfigError::new(key, format!("not a URL ({e})")))?;
    let scheme = parsed.scheme();
    if built.contains(&scheme) {
        return Ok(());
    }
    let supported = if built.is_empty() {
        "this build has none: leave it unset".to_string()
    } else {
        format!(
            "this build supports {} (or leave it unset)",
            built.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(", ")
        )
    };
    let what = if planned.contains(&scheme) { "is not built into this binary yet" } else { "is not a known adapter" };
    Err(ConfigError::new(key, format!("{scheme}:// {what}; {supported}")))
}

/// Turns `FACTORYOPS_AUTH__BCRYPT_COST=10` into `{"auth": {"bcrypt_cost": "10"}}`. Values stay
/// strings except where they parse as TOML scalars, so `figment` coerces them like its own Env.
fn env_map(env: &[(String, String)]) -> Result<figment::value::Dict, ConfigError> {
    use figment::value::{Dict, Value};
    let mut root = Dict::new();
    for (name, raw) in env {
        let path: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError {
                key: name.clone(),
                env: name.clone(),
                message: "is not a valid config variable name".into(),
            });
        }
        let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
        let mut dict = &mut root;
        for part in &path[..path.len() - 1] {
            let entry = dict.entry(part.clone()).or_insert_with(|| Value::from(Dict::new()));
            match entry {
                Value::Dict(_, inner) => dict = inner,
                _ => {
                    return Err(ConfigError {
                        key: path.join("."),
                        env: name.clone(),
                        message: "conflicts with another variable".into(),
                    });
                }
            }
        }
        dict.insert(path[path.len() - 1].clone(), value);
    }
    Ok(root)
}

fn from_figment(error: figment::Error) -> ConfigError {
    let key = if error.path.is_empty() { "config".to_string() } else { error.path.join(".") };
    let message = match &error.kind {
        figment::error::Kind::UnknownField(field, _) => {
            let full = if error.path.is_empty() { field.clone() } else { format!("{key}.{field}") };
            return ConfigError::new(&full, "is not a known configuration key");
        }
        kind => kind.to_string(),
    };
    ConfigError::new(&key, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.http_addr, "0.0.0.0:8080");
        assert_eq!(c.database_backend().unwrap(), DatabaseBackend::Sqlite);
        assert!(c.effective_database_url().starts_with("sqlite://"));
    }

    #[test]
    fn max_backfill_is_unset_by_default_and_settable_by_env() {
        assert_eq!(Config::load_from(None, env(&[])).unwrap().ingest.max_backfill_secs, None);
        let c = Config::load_from(None, env(&[("FACTORYOPS_INGEST__MAX_BACKFILL_SECS", "259200")])).unwrap();
        assert_eq!(c.ingest.max_backfill_secs, Some(259_200));
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fo.toml");
        std::fs::write(&file, "http_addr = \"127.0.0.1:9000\"\nlog_level = \"debug\"\n[auth]\nbcrypt_cost = 10\n")
            .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[("FACTORYOPS_HTTP_ADDR", "127.0.0.1:0"), ("FACTORYOPS_AUTH__BCRYPT_COST", "11"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:0");
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.auth.bcrypt_cost, 11);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::load_from(None, env(&[("FACTORYOPS_HTTP_ADDR", "nonsense")])).unwrap_err();
        let line = e.to_string();
        assert!(line.contains("http_addr") && line.contains("FACTORYOPS_HTTP_ADDR"), "{line}");

        let e = Config::load_from(None, env(&[("FACTORYOPS_AUTH__BCRYPT_COST", "many")])).unwrap_err();
        assert!(e.to_string().contains("auth.bcrypt_cost"), "{e}");

        let e = Config::load_from(None, env(&[("FACTORYOPS_DATABASE_URL", "postgres://x")])).unwrap_err();
        assert!(e.to_string().contains("database_url"), "{e}");

        let e = Config::load_from(None, env(&[("FACTORYOPS_DATABSE_URL", "mysql://x")])).unwrap_err();
        assert!(e.to_string().contains("databse_url") && e.to_string().contains("not a known"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn ingest_and_mqtt_limits_are_configurable_and_checked() {
        let c = Config::load_from(
            None,
            env(&[
                ("FACTORYOPS_INGEST__MAX_PAYLOAD_BYTES", "2048"),
                ("FACTORYOPS_INGEST__MAX_PROPERTIES_PER_DEVICE", "50"),
                ("FACTORYOPS_MQTT__RECEIVE_MAXIMUM", "16"),
                ("FACTORYOPS_MQTT__CONNECTS_PER_IP_PER_SEC", "5"),
            ]),
        )
        .unwrap();
        assert_eq!((c.ingest.max_payload_bytes, c.ingest.max_properties_per_device), (2048, 50));
        assert_eq!((c.mqtt.receive_maximum, c.mqtt.connects_per_ip_per_sec), (16, 5));

        let e = Config::load_from(None, env(&[("FACTORYOPS_MQTT__RECEIVE_MAXIMUM", "0")])).unwrap_err();
        assert!(e.to_string().contains("mqtt.receive_maximum"), "{e}");
        let e = Config::load_from(None, env(&[("FACTORYOPS_INGEST__MAX_PAYLOAD_BYTES", "1000000")])).unwrap_err();
        assert!(e.to_string().contains("mqtt.max_packet_bytes"), "{e}");
    }

    #[test]
    fn adapters_this_binary_lacks_fail_at_start_with_the_key() {
        for (var, value, key) in [
            ("FACTORYOPS_BUS_URL", "nats://127.0.0.1:4222", "bus_url"),
            ("FACTORYOPS_BUS_URL", "kafka://broker:9092", "bus_url"),
            ("FACTORYOPS_OBJECT_STORE_URL", "gs://bucket", "object_store_url"),
            ("FACTORYOPS_TSDB_URL", "timescale://db", "tsdb_url"),
            ("FACTORYOPS_DATABASE_URL", "postgres://db/factoryops", "database_url"),
        ] {
            let e = Config::load_from(None, env(&[(var, value)])).unwrap_err();
            assert_eq!(e.key, key, "{value}: {e}");
            assert_eq!(e.env, var);
        }
        let e = Config::load_from(None, env(&[("FACTORYOPS_BUS_URL", "nats://127.0.0.1:4222")])).unwrap_err();
        assert!(e.to_string().contains("nats:// is not built into this binary yet"), "{e}");
        assert!(e.to_string().contains("memory://"), "{e}");
        // What is built passes: the in-process bus named explicitly, InfluxDB, MariaDB, S3 and a directory.
        let c = Config::load_from(
            None,
            env(&[
                ("FACTORYOPS_BUS_URL", "memory://"),
                ("FACTORYOPS_TSDB_URL", "http://127.0.0.1:8086?db=x"),
                ("FACTORYOPS_DATABASE_URL", "mariadb://root@127.0.0.1/x"),
                ("FACTORYOPS_OBJECT_STORE_URL", "s3://bucket?endpoint=http://minio:9000"),
            ]),
        );
        assert!(c.is_ok(), "{:?}", c.err());
        let c = Config::load_from(None, env(&[("FACTORYOPS_OBJECT_STORE_URL", "file:///var/lib/factoryops/objects")]));
        assert!(c.is_ok(), "{:?}", c.err());
    }

    #[test]
    fn http_edge_keys_are_configurable_and_checked() {
        let c = Config::load_from(
            None,
            env(&[
                ("FACTORYOPS_HTTP__HEADER_READ_TIMEOUT_SECS", "2"),
                ("FACTORYOPS_HTTP__IDLE_TIMEOUT_SECS", "5"),
                ("FACTORYOPS_HTTP__MAX_CONNECTIONS", "100"),
                ("FACTORYOPS_HTTP__MAX_CONNECTIONS_PER_IP", "10"),
                ("FACTORYOPS_MQTT__MAX_CONNECTIONS", "200"),
                ("FACTORYOPS_FD_RESERVE", "64"),
            ]),
        )
        .unwrap();
        assert_eq!((c.http.header_read_timeout_secs, c.http.idle_timeout_secs), (2, 5));
        assert_eq!((c.http.max_connections, c.http.max_connections_per_ip), (Some(100), Some(10)));
        assert_eq!((c.mqtt.max_connections, c.fd_reserve), (Some(200), 64));
        let defaults = Config::default();
        assert_eq!((defaults.http.header_read_timeout_secs, defaults.http.idle_timeout_secs), (10, 60));
        assert_eq!((defaults.http.max_connections, defaults.mqtt.max_connections), (None, None));
        for var in ["FACTORYOPS_HTTP__HEADER_READ_TIMEOUT_SECS", "FACTORYOPS_HTTP__MAX_CONNECTIONS_PER_IP"] {
            let e = Config::load_from(None, env(&[(var, "0")])).unwrap_err();
            assert_eq!(e.env, var, "{e}");
        }
    }

    #[test]
    fn numeric_looking_secrets_stay_strings() {
        let c = Config::load_from(
            None,
            env(&[("FACTORYOPS_ROOT_PASSWORD", "1234567890"), ("FACTORYOPS_AUTH__PUBLIC_FACTORY_LIST", "false")]),
        )
        .unwrap();
        assert_eq!(c.root_password.unwrap().expose(), "1234567890");
        assert!(!c.auth.public_factory_list);
    }

    #[test]
    fn per_factory_retention_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fo.toml");
        std::fs::write(&file, "[tsdb.retention_factories.plant-1]\nraw_days = 90\n").unwrap();
        let c = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(c.tsdb.retention_factories["plant-1"].raw_days, Some(90));
        std::fs::write(&file, "[tsdb.retention_factories.\"Not A Slug\"]\nraw_days = 1\n").unwrap();
        assert!(Config::load_from(Some(&file), env(&[])).unwrap_err().to_string().contains("retention_factories"));
    }

    #[test]
    fn config_file_env_is_not_a_key() {
        Config::load_from(None, env(&[(CONFIG_FILE_ENV, "/nowhere")])).unwrap();
    }

    #[test]
    fn masked_output_hides_secrets() {
        let c = Config::load_from(
            None,
            env(&[
                ("FACTORYOPS_ROOT_PASSWORD", "topsecretroot"),
                ("FACTORYOPS_DATABASE_URL", "mysql://root:dbpass@127.0.0.1/test"),
                ("FACTORYOPS_TWILIO_AUTH_TOKEN", "twiliotoken"),
                ("FACTORYOPS_SMTP_URL", "smtp://u:smtppass@mail:25?tls=none"),
                ("FACTORYOPS_SMTP_FROM", "alerts@example.com"),
                ("FACTORYOPS_TWILIO_ACCOUNT_SID", "AC1"),
                ("FACTORYOPS_TWILIO_FROM", "whatsapp:+14155238886"),
                ("FACTORYOPS_OBJECT_STORE__ACCESS_KEY_ID", "s3keyid"),
                ("FACTORYOPS_OBJECT_STORE__SECRET_ACCESS_KEY", "s3secretkey"),
            ]),
        )
        .unwrap();
        let out = c.to_masked_toml();
        for secret in ["topsecretroot", "dbpass", "twiliotoken", "smtppass", "s3keyid", "s3secretkey"] {
            assert!(!out.contains(secret), "{secret} leaked in:\n{out}");
        }
        assert!(!format!("{c:?}").contains("dbpass"));
    }

    #[test]
    fn channel_settings_come_in_complete_sets() {
        let half_smtp = Config::load_from(None, env(&[("FACTORYOPS_SMTP_URL", "smtp://mail:25")]));
        assert_eq!(half_smtp.unwrap_err().key, "smtp_from");
        let half_twilio = Config::load_from(None, env(&[("FACTORYOPS_TWILIO_ACCOUNT_SID", "AC1")]));
        assert_eq!(half_twilio.unwrap_err().key, "twilio_account_sid");
        let bad_ops = Config::load_from(None, env(&[("FACTORYOPS_NOTIFY__SYSADMIN_WHATSAPP", "[\"0151\"]")]));
        assert_eq!(bad_ops.unwrap_err().key, "notify.sysadmin_whatsapp");
        let ops = Config::load_from(None, env(&[("FACTORYOPS_NOTIFY__SYSADMIN_EMAILS", "[\"oncall@example.com\"]")]));
        assert_eq!(ops.unwrap().notify.sysadmin_emails, ["oncall@example.com"]);
    }
}
