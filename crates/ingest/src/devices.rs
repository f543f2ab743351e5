//! The device registry: factory-scoped device metadata and MQTT credentials.
//!
//! Secrets are 32 random bytes, shown once, stored as a SHA-256 hash. A slow password
//! hash (bcrypt) buys nothing for a high-entropy random secret and would cost every
//! MQTT CONNECT ~100 ms; see the crate README.

use factoryops_db::Database;
use factoryops_types::{DeviceId, FactoryId};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

use crate::{Page, RepoError};

/// Prefix of every device secret, so leaked secrets are recognisable by scanners.
pub const SECRET_PREFIX: &str = "fod_";
const SECRET_BYTES: usize = 32;
pub const MAX_TEXT_LEN: usize = 255;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_PAGE: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Active,
    /// Cannot connect; existing data stays readable.
    Disabled,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Disabled => "disabled",
        }
    }

    fn parse(text: &str) -> Result<Self, RepoError> {
        match text {
            "active" => Ok(DeviceStatus::Active),
            "disabled" => Ok(DeviceStatus::Disabled),
            other => Err(RepoError::Db(factoryops_db::DbError::Malformed(format!("device status {other:?}")))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub factory_id: FactoryId,
    pub id: DeviceId,
    pub name: String,
    #[serde(rename = "type")]
    pub device_type: String,
    pub location: String,
    pub metadata: serde_json::Value,
    pub status: DeviceStatus,
    /// Whether a secret was issued (the secret itself is never readable).
    pub has_secret: bool,
    /// Unix ms of the latest stored point; lags by up to the catalogue's flush interval.
    pub last_seen: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    pub id: DeviceId,
    pub name: String,
    #[serde(rename = "type", default)]
    pub device_type: String,
    #[serde(default)]
    pub location: String,
    #[serde(default = "empty_object")]
    pub metadata: serde_json::Value,
    #[serde(default = "active")]
    pub status: DeviceStatus,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn active() -> DeviceStatus {
    DeviceStatus::Active
}

/// A partial update: `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceUpdate {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    pub location: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub status: Option<DeviceStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DeviceFilter {
    #[serde(rename = "type")]
    pub device_type: Option<String>,
    pub status: Option<DeviceStatus>,
    /// Case-insensitive substring of the id or the name.
    pub text: Option<String>,
    /// Page size, clamped to 1..=[`MAX_PAGE`]; default 100.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A freshly issued secret. This is the only time it is readable.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedSecret {
    pub device_id: DeviceId,
    /// `{factory_id}/{device_id}`, the MQTT username.
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("device_id", &self.device_id)
            .field("username", &self.username)
            .field("secret", &"********")
            .finish()
    }
}

/// Result of checking device credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Ok,
    /// Unknown device, no secret issued, or a wrong secret: deliberately indistinguishable.
    BadCredentials,
    /// Right secret, but the device is disabled.
    Disabled,
}

#[derive(Clone, Debug)]
pub struct DeviceRegistry {
    db: Database,
}

const COLUMNS: &str = "factory_id, device_id, name, device_type, location, metadata, status, secret_hash, last_seen, created_at, updated_at";

impl DeviceRegistry {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn create(&self, factory: &FactoryId, device: NewDevice, now_ms: i64) -> Result<Device, RepoError> {
        check_text("name", &device.name)?;
        check_text("type", &device.device_type)?;
        check_text("location", &device.location)?;
        let metadata = metadata_text(&device.metadata)?;
        let result = sqlx::query(
            "INSERT INTO ingest_devices (factory_id, device_id, name, device_type, location, metadata, status, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(factory.as_str())
        .bind(device.id.as_str())
        .bind(&device.name)
        .bind(&device.device_type)
        .bind(&device.location)
        .bind(metadata)
        .bind(device.status.as_str())
        .bind(now_ms)
        .bind(now_ms)
        .execute(self.db.pool())
        .await
        .map_err(factoryops_db::DbError::from);
        match result {
            Ok(_) => {}
            Err(e) if e.is_unique_violation() => return Err(RepoError::Conflict(format!("device {}", device.id))),
            Err(e) => return Err(e.into()),
        }
        self.get(factory, &device.id)
            .await?
            .ok_or_else(|| RepoError::Db(factoryops_db::DbError::Malformed("device vanished after insert".into())))
    }

    /// The device, or `None` when it does not exist in this factory.
    pub async fn get(&self, factory: &FactoryId, device: &DeviceId) -> Result<Option<Device>, RepoError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM ingest_devices WHERE factory_id = ? AND device_id = ?"
        )))
        .bind(factory.as_str())
        .bind(device.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|r| device_from_row(&r)).transpose()
    }

    /// Devices ordered by id, filtered, one page at a time.
    pub async fn list(&self, factory: &FactoryId, filter: &DeviceFilter) -> Result<Page<Device>, RepoError> {
        let limit = filter.limit.unwrap_or(100).clamp(1, MAX_PAGE);
        let mut sql = format!("SELECT {COLUMNS} FROM ingest_devices WHERE factory_id = ?");
        let mut binds: Vec<String> = vec![factory.as_str().to_string()];
        if let Some(t) = &filter.device_type {
            sql.push_str(" AND device_type = ?");
            binds.push(t.clone());
        }
        if let Some(s) = filter.status {
            sql.push_str(" AND status = ?");
            binds.push(s.as_str().to_string());
        }
        if let Some(text) = filter.text.as_deref().filter(|t| !t.is_empty()) {
            // `!` as the escape character: a backslash means different things in the two dialects.
            sql.push_str(" AND (LOWER(device_id) LIKE ? ESCAPE '!' OR LOWER(name) LIKE ? ESCAPE '!')");
            let pattern = format!("%{}%", escape_like(&text.to_lowercase()));
            binds.push(pattern.clone());
            binds.push(pattern);
        }
        if let Some(cursor) = &filter.cursor {
            sql.push_str(" AND device_id > ?");
            binds.push(cursor.clone());
        }
        sql.push_str(&format!(" ORDER BY device_id LIMIT {}", limit + 1));
        // Only fixed fragments and a number are interpolated; values are bound.
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let mut items = rows.iter().map(device_from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| d.id.as_str().to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Applies a partial update; `None` when the device does not exist in this factory.
    pub async fn update(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        update: DeviceUpdate,
        now_ms: i64,
    ) -> Result<Option<Device>, RepoError> {
        let Some(mut current) = self.get(factory, device).await? else {
            return Ok(None);
        };
        if let Some(name) = update.name {
            check_text("name", &name)?;
            current.name = name;
        }
        if let Some(t) = update.device_type {
            check_text("type", &t)?;
            current.device_type = t;
        }
        if let Some(l) = update.location {
            check_text("location", &l)?;
            current.location = l;
        }
        if let Some(m) = update.metadata {
            current.metadata = m;
        }
        if let Some(s) = update.status {
            current.status = s;
        }
        let metadata = metadata_text(&current.metadata)?;
        sqlx::query(
            "UPDATE ingest_devices SET name = ?, device_type = ?, location = ?, metadata = ?, status = ?, updated_at = ? \
             WHERE factory_id = ? AND device_id = ?",
        )
        .bind(&current.name)
        .bind(&current.device_type)
        .bind(&current.location)
        .bind(metadata)
        .bind(current.status.as_str())
        .bind(now_ms)
        .bind(factory.as_str())
        .bind(device.as_str())
        .execute(self.db.pool())
        .await?;
        self.get(factory, device).await
    }

    /// Issues a new secret (replacing any previous one, which stops working at once).
    /// `None` when the device does not exist in this factory.
    pub async fn issue_secret(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        now_ms: i64,
    ) -> Result<Option<IssuedSecret>, RepoError> {
        let mut raw = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut raw);
        let secret = format!("{SECRET_PREFIX}{}", hex(&raw));
        let done = sqlx::query(
            "UPDATE ingest_devices SET secret_hash = ?, secret_set_at = ?, updated_at = ? WHERE factory_id = ? AND device_id = ?",
        )
        .bind(hex(&hash_secret(&secret)))
        .bind(now_ms)
        .bind(now_ms)
        .bind(factory.as_str())
        .bind(device.as_str())
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(Some(IssuedSecret { device_id: device.clone(), username: format!("{factory}/{device}"), secret }))
    }

    /// Checks a device's credentials (one DB read; callers cache per connection).
    pub async fn verify(
        &self,
        factory: &FactoryId,
        device: &DeviceId,
        secret: &[u8],
    ) -> Result<Verification, RepoError> {
        let row = sqlx::query("SELECT secret_hash, status FROM ingest_devices WHERE factory_id = ? AND device_id = ?")
            .bind(factory.as_str())
            .bind(device.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        // Hash even when the device is unknown so both paths cost the same.
        let presented = hash_secret_bytes(secret);
        let Some(row) = row else {
            return Ok(Verification::BadCredentials);
        };
        let stored: Option<String> = row.try_get("secret_hash")?;
        let status: String = row.try_get("status")?;
        let Some(stored) = stored.and_then(|h| unhex(&h)) else {
            return Ok(Verification::BadCredentials);
        };
        if !constant_time_eq(&stored, &presented) {
            return Ok(Verification::BadCredentials);
        }
        Ok(match DeviceStatus::parse(&status)? {
            DeviceStatus::Active => Verification::Ok,
            DeviceStatus::Disabled => Verification::Disabled,
        })
    }
}

fn check_text(field: &'static str, text: &str) -> Result<(), RepoError> {
    if text.chars().count() > MAX_TEXT_LEN {
        return Err(RepoError::Invalid { field, message: format!("at most {MAX_TEXT_LEN} characters") });
    }
    if text.chars().any(char::is_control) {
        return Err(RepoError::Invalid { field, message: "must not contain control characters".into() });
    }
    Ok(())
}

fn metadata_text(metadata: &serde_json::Value) -> Result<String, RepoError> {
    if !metadata.is_object() {
        return Err(RepoError::Invalid { field: "metadata", message: "must be a JSON object".into() });
    }
    let text = metadata.to_string();
    if text.len() > MAX_METADATA_BYTES {
        return Err(RepoError::Invalid { field: "metadata", message: format!("at most {MAX_METADATA_BYTES} bytes") });
    }
    Ok(text)
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

fn device_from_row(row: &sqlx::any::AnyRow) -> Result<Device, RepoError> {
    let malformed = |what: String| RepoError::Db(factoryops_db::DbError::Malformed(what));
    let factory: String = row.try_get("factory_id")?;
    let id: String = row.try_get("device_id")?;
    let metadata: String = row.try_get("metadata")?;
    let status: String = row.try_get("status")?;
    let secret_hash: Option<String> = row.try_get("secret_hash")?;
    Ok(Device {
        factory_id: FactoryId::parse(factory).map_err(|e| malformed(format!("factory id: {e}")))?,
        id: DeviceId::parse(id).map_err(|e| malformed(format!("device id: {e}")))?,
        name: row.try_get("name")?,
        device_type: row.try_get("device_type")?,
        location: row.try_get("location")?,
        metadata: serde_json::from_str(&metadata).map_err(|e| malformed(format!("metadata: {e}")))?,
        status: DeviceStatus::parse(&status)?,
        has_secret: secret_hash.is_some(),
        last_seen: row.try_get("last_seen")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn hash_secret(secret: &str) -> [u8; 32] {
    hash_secret_bytes(secret.as_bytes())
}

fn hash_secret_bytes(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Compares without an early exit, so the time taken does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), bytes);
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("a%b_c!"), "a!%b!_c!!");
    }

    #[test]
    fn issued_secret_debug_is_masked() {
        let s = IssuedSecret {
            device_id: DeviceId::parse("d1").unwrap(),
            username: "f/d1".into(),
            secret: "fod_topsecret".into(),
        };
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
