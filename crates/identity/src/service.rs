use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use factoryops_db::Database;
use factoryops_types::{Clock, FactoryId};
use parking_lot::{Mutex, RwLock};
use sqlx::Row;

use crate::audit;
use crate::error::IdentityError;
use crate::failed_logins::FailedLoginAudit;
use crate::model::{Permission, Principal, Role, effective_permissions, split_permissions};
use crate::password;
use crate::ratelimit::RateLimiter;
use crate::tokens::{AccessClaims, JwtKeys, generate_secret, sha256_hex};

pub const ROOT_USERNAME: &str = "root";

/// How long a cached user/factory/API-key state is trusted before it is re-read. Short,
/// because disabling must take effect "at the next request" on every replica.
const GATE_TTL_MS: i64 = 2_000;

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub bcrypt_cost: u32,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    pub jwt_secret: Vec<u8>,
    /// Login attempts per (factory, e-mail) per window.
    pub login_attempts_per_account: u32,
    /// Login attempts per source IP per window.
    pub login_attempts_per_ip: u32,
    pub login_window_secs: i64,
    /// `login.failed` audit rows per factory per minute; the rest are counted in one
    /// `login.failed_suppressed` row (see `failed_logins.rs`).
    pub failed_login_audit_per_minute: u32,
}

impl IdentityConfig {
    pub fn new(jwt_secret: Vec<u8>, bcrypt_cost: u32) -> Self {
        Self {
            bcrypt_cost,
            access_ttl_secs: 900,
            refresh_ttl_secs: 30 * 24 * 3600,
            jwt_secret,
            login_attempts_per_account: 10,
            login_attempts_per_ip: 100,
            login_window_secs: 300,
            failed_login_audit_per_minute: 20,
        }
    }
}

/// Facts about the HTTP request that identity records (audit) or limits on.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub source_ip: Option<String>,
}

#[derive(Clone, Copy)]
struct UserGate {
    active: bool,
    valid_after_ms: i64,
    loaded_at: i64,
}

#[derive(Clone)]
struct KeyGate {
    key_id: String,
    factory_id: FactoryId,
    permissions: std::collections::BTreeSet<Permission>,
    expires_at: Option<i64>,
    revoked: bool,
    loaded_at: i64,
}

pub struct Identity {
    pub(crate) db: Database,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: IdentityConfig,
    pub(crate) keys: JwtKeys,
    /// Verified against on unknown users so every failed login costs one bcrypt.
    pub(crate) dummy_hash: String,
    pub(crate) account_limiter: RateLimiter,
    pub(crate) ip_limiter: RateLimiter,
    pub(crate) failed_logins: FailedLoginAudit,
    user_gates: RwLock<HashMap<String, UserGate>>,
    factory_gates: RwLock<HashMap<String, (bool, i64)>>,
    key_gates: RwLock<HashMap<String, KeyGate>>,
    /// Refresh-token families ended by logout or reuse, until their access tokens expire.
    revoked_sessions: Mutex<HashMap<String, i64>>,
}

impl Identity {
    pub async fn new(db: Database, clock: Arc<dyn Clock>, config: IdentityConfig) -> Result<Self, IdentityError> {
        if config.jwt_secret.len() < 32 {
            return Err(IdentityError::Internal("the JWT secret must be at least 32 bytes".into()));
        }
        let dummy_hash = password::hash(&generate_secret(""), config.bcrypt_cost).await?;
        let window_ms = config.login_window_secs * 1000;
        Ok(Self {
            keys: JwtKeys::new(&config.jwt_secret),
            account_limiter: RateLimiter::new(config.login_attempts_per_account, window_ms),
            ip_limiter: RateLimiter::new(config.login_attempts_per_ip, window_ms),
            failed_logins: FailedLoginAudit::new(config.failed_login_audit_per_minute, &config.jwt_secret),
            db,
            clock,
            config,
            dummy_hash,
            user_gates: RwLock::default(),
            factory_gates: RwLock::default(),
            key_gates: RwLock::default(),
            revoked_sessions: Mutex::default(),
        })
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Creates the platform root on first start. Returns the password when it was
    /// generated (the caller prints it once); `None` when root already existed or the
    /// configured password was used.
    pub async fn bootstrap_root(&self, configured: Option<&str>) -> Result<Option<String>, IdentityError> {
        let exists = sqlx::query("SELECT username FROM platform_root WHERE username = ?")
            .bind(ROOT_USERNAME)
            .fetch_optional(self.db.pool())
            .await?
            .is_some();
        if exists {
            return Ok(None);
        }
        let (password, generated) = match configured {
            Some(p) => {
                password::check_policy("root_password", p, None)?;
                (p.to_string(), false)
            }
            None => (generate_secret("")[..24].to_string(), true),
        };
        let hash = password::hash(&password, self.config.bcrypt_cost).await?;
        let now = self.now();
        let sql = format!(
            "{} INTO platform_root (username, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?)",
            self.db.dialect().insert_ignore()
        );
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ROOT_USERNAME)
            .bind(hash)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Another replica starting at the same moment may have won; only the winner audits.
        if inserted == 1 {
            audit::record(
                &mut *tx,
                None,
                "system",
                "root.bootstrapped",
                Some(ROOT_USERNAME),
                None,
                serde_json::json!({}),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok((generated && inserted == 1).then_some(password))
    }

    /// Turns a bearer credential (an access token or an `fo_` API key) into a principal.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, IdentityError> {
        const REJECTED: IdentityError = IdentityError::Unauthorized("missing, invalid or expired credentials");
        if bearer.starts_with(crate::api_keys::KEY_PREFIX) {
            return self.authenticate_api_key(bearer).await;
        }
        let claims = self.keys.verify(bearer).ok_or(REJECTED)?;
        let now = self.now();
        if claims.exp * 1000 <= now {
            return Err(IdentityError::Unauthorized("access token expired; refresh it"));
        }
        if self.session_revoked(&claims.sid, now) {
            return Err(REJECTED);
        }
        if claims.role == "root" {
            return if claims.factory_id.is_none() && claims.sub == ROOT_USERNAME {
                Ok(Principal::Root)
            } else {
                Err(REJECTED)
            };
        }
        let factory_id = claims.factory_id.as_deref().and_then(|f| FactoryId::parse(f).ok()).ok_or(REJECTED)?;
        let role = Role::parse(&claims.role).ok_or(REJECTED)?;
        if !self.factory_active(factory_id.as_str(), now).await? {
            return Err(REJECTED);
        }
        let gate = self.user_gate(&claims.sub, now).await?.ok_or(REJECTED)?;
        // Seconds, like `iat`: a token minted in the same second as a change survives it;
        // disabling is checked separately and takes effect at once.
        if !gate.active || claims.iat < gate.valid_after_ms.div_euclid(1000) {
            return Err(REJECTED);
        }
        let flags = claims.perms.iter().filter_map(|p| Permission::parse(p)).collect();
        Ok(Principal::User { user_id: claims.sub, factory_id, role, permissions: effective_permissions(role, &flags) })
    }

    async fn authenticate_api_key(&self, key: &str) -> Result<Principal, IdentityError> {
        const REJECTED: IdentityError = IdentityError::Unauthorized("missing, invalid or expired credentials");
        let now = self.now();
        let hash = sha256_hex(key);
        let cached = self.key_gates.read().get(&hash).filter(|g| now - g.loaded_at < GATE_TTL_MS).cloned();
        let gate = match cached {
            Some(gate) => gate,
            None => {
                let row = sqlx::query(
                    "SELECT id, factory_id, permissions, expires_at, revoked_at FROM api_keys WHERE key_hash = ?",
                )
                .bind(&hash)
                .fetch_optional(self.db.pool())
                .await?
                .ok_or(REJECTED)?;
                let factory: String = row.try_get("factory_id")?;
                let gate = KeyGate {
                    key_id: row.try_get("id")?,
                    factory_id: FactoryId::parse(factory).map_err(|_| REJECTED)?,
                    permissions: split_permissions(&row.try_get::<String, _>("permissions")?),
                    expires_at: row.try_get("expires_at")?,
                    revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
                    loaded_at: now,
                };
                // Recorded when the cache refreshes, not on every request.
                sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(&gate.key_id)
                    .execute(self.db.pool())
                    .await?;
                self.key_gates.write().insert(hash, gate.clone());
                gate
            }
        };
        if gate.revoked || gate.expires_at.is_some_and(|e| e <= now) {
            return Err(REJECTED);
        }
        if !self.factory_active(gate.factory_id.as_str(), now).await? {
            return Err(REJECTED);
        }
        Ok(Principal::ApiKey { key_id: gate.key_id, factory_id: gate.factory_id, permissions: gate.permissions })
    }

    pub(crate) async fn factory_active(&self, factory_id: &str, now: i64) -> Result<bool, IdentityError> {
        if let Some((active, loaded)) = self.factory_gates.read().get(factory_id).copied()
            && now - loaded < GATE_TTL_MS
        {
            return Ok(active);
        }
        let active = sqlx::query("SELECT status FROM factories WHERE id = ?")
            .bind(factory_id)
            .fetch_optional(self.db.pool())
            .await?
            .map(|r| r.try_get::<String, _>("status"))
            .transpose()?
            .is_some_and(|s| s == "active");
        self.factory_gates.write().insert(factory_id.to_string(), (active, now));
        Ok(active)
    }

    async fn user_gate(&self, user_id: &str, now: i64) -> Result<Option<UserGate>, IdentityError> {
        if let Some(gate) = self.user_gates.read().get(user_id).copied()
            && now - gate.loaded_at < GATE_TTL_MS
        {
            return Ok(Some(gate));
        }
        let row = sqlx::query("SELECT status, tokens_valid_after FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let gate = UserGate {
            active: row.try_get::<String, _>("status")? == "active",
            valid_after_ms: row.try_get("tokens_valid_after")?,
            loaded_at: now,
        };
        self.user_gates.write().insert(user_id.to_string(), gate);
        Ok(Some(gate))
    }

    /// Forgets cached state so a change made in this process applies to the next request.
    pub(crate) fn forget_user(&self, user_id: &str) {
        self.user_gates.write().remove(user_id);
    }

    pub(crate) fn forget_factory(&self, factory_id: &str) {
        self.factory_gates.write().remove(factory_id);
    }

    pub(crate) fn forget_api_keys(&self) {
        self.key_gates.write().clear();
    }

    pub(crate) fn revoke_session(&self, sid: &str, now: i64) {
        let mut revoked = self.revoked_sessions.lock();
        let horizon = now + self.config.access_ttl_secs * 1000;
        revoked.retain(|_, until| *until > now);
        revoked.insert(sid.to_string(), horizon);
    }

    fn session_revoked(&self, sid: &str, now: i64) -> bool {
        self.revoked_sessions.lock().get(sid).is_some_and(|until| *until > now)
    }

    pub(crate) fn sign_access(
        &self,
        subject: &str,
        factory: Option<&FactoryId>,
        role: &str,
        perms: Vec<String>,
        sid: &str,
    ) -> Result<(String, i64), IdentityError> {
        let now_s = self.now().div_euclid(1000);
        let claims = AccessClaims {
            sub: subject.to_string(),
            factory_id: factory.map(|f| f.as_str().to_string()),
            role: role.to_string(),
            perms,
            exp: now_s + self.config.access_ttl_secs,
            iat: now_s,
            jti: factoryops_types::new_id(),
            sid: sid.to_string(),
        };
        let token = self.keys.sign(&claims).map_err(|e| IdentityError::Internal(e.to_string()))?;
        Ok((token, self.config.access_ttl_secs))
    }

    /// Verifies an access token's signature and expiry only (the benchmark's unit of work).
    pub fn verify_access_token(&self, token: &str) -> Option<AccessClaims> {
        self.keys.verify(token).filter(|c| c.exp * 1000 > self.now())
    }
}

/// Reads the JWT secret from `dir/jwt.key`, creating it (mode 0600) on first start.
pub fn jwt_secret_from_data_dir(dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = dir.join("jwt.key");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is too short; delete it to have a new one generated", path.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            let secret = generate_secret("");
            write_private(&path, &secret)?;
            Ok(secret.into_bytes())
        }
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}
