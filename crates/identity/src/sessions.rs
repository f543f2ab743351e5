//! Logins, refresh-token rotation with reuse detection, logout.

use factoryops_db::WriteTx;
use factoryops_types::{FactoryId, format_rfc3339_ms, new_id};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use crate::audit;
use crate::error::IdentityError;
use crate::model::effective_permissions;
use crate::password;
use crate::service::{Identity, ROOT_USERNAME, RequestContext};
use crate::tokens::{generate_secret, sha256_hex};
use crate::users::{User, UserStatus, load_user, revoke_sessions};

const INVALID_LOGIN: IdentityError = IdentityError::Unauthorized("invalid credentials");
const INVALID_REFRESH: IdentityError = IdentityError::Unauthorized("invalid or expired refresh token; log in again");
const REFRESH_PREFIX: &str = "fort_";

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    /// Opaque; single use: each refresh returns a new one.
    pub refresh_token: String,
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoginResult {
    #[serde(flatten)]
    pub tokens: TokenPair,
    /// The signed-in user; absent for the platform root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

struct RefreshRow {
    id: String,
    family_id: String,
    factory_id: Option<String>,
    subject: String,
    status: String,
    expires_at: i64,
}

impl Identity {
    fn check_rate(&self, account_key: &str, ctx: &RequestContext) -> Result<(), IdentityError> {
        let now = self.now();
        if let Some(ip) = &ctx.source_ip {
            self.ip_limiter.attempt(ip, now).map_err(|s| IdentityError::RateLimited { retry_after_secs: s })?;
        }
        self.account_limiter.attempt(account_key, now).map_err(|s| IdentityError::RateLimited { retry_after_secs: s })
    }

    /// Factory-scoped login. A wrong factory, an unknown e-mail, a disabled account and a
    /// wrong password all cost one bcrypt and give the same answer.
    pub async fn login(
        &self,
        factory_id: &str,
        email: &str,
        password_text: &str,
        ctx: &RequestContext,
    ) -> Result<LoginResult, IdentityError> {
        let email_key = email.trim().to_lowercase();
        self.check_rate(&format!("{factory_id}\n{email_key}"), ctx)?;
        let factory = FactoryId::parse(factory_id).ok();
        let row = match &factory {
            Some(f) => {
                sqlx::query(
                    "SELECT u.id, u.password_hash, u.status, f.status AS factory_status FROM users u \
                 JOIN factories f ON f.id = u.factory_id WHERE u.factory_id = ? AND u.email_key = ?",
                )
                .bind(f.as_str())
                .bind(&email_key)
                .fetch_optional(self.db.pool())
                .await?
            }
            None => None,
        };
        let candidate = match &row {
            Some(r) => {
                let active = r.try_get::<String, _>("status")? == "active"
                    && r.try_get::<String, _>("factory_status")? == "active";
                Some((r.try_get::<String, _>("id")?, r.try_get::<String, _>("password_hash")?, active))
            }
            None => None,
        };
        let hash = candidate.as_ref().map_or(self.dummy_hash.as_str(), |(_, h, _)| h.as_str());
        let password_ok = password::verify(password_text, hash).await;
        let now = self.now();
        let known_account = candidate.is_some();
        let (Some(factory), Some((user_id, _, true)), true) = (factory.clone(), candidate, password_ok) else {
            let known_factory = match &factory {
                Some(f) => self.factory(f).await?.map(|_| f.clone()),
                None => None,
            };
            let shown = if known_account { email_key } else { self.failed_logins.unknown_identifier(&email_key) };
            self.audit_failed_login(known_factory.as_ref(), "login.failed", &shown, ctx).await?;
            return Err(INVALID_LOGIN);
        };
        self.account_limiter.reset(&format!("{factory_id}\n{email_key}"));
        let user = self.user(&factory, &user_id).await?.ok_or(INVALID_LOGIN)?;
        // The session and the audit entry that records it commit together.
        let mut tx = self.db.begin_write().await?;
        let tokens = self.issue_user_session(&mut tx, &factory, &user, None).await?;
        audit::record(
            &mut *tx,
            Some(&factory),
            &format!("user:{user_id}"),
            "login.succeeded",
            Some(&user_id),
            ctx.source_ip.as_deref(),
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(LoginResult { tokens, user: Some(user) })
    }

    /// The platform root's login.
    pub async fn platform_login(
        &self,
        username: &str,
        password_text: &str,
        ctx: &RequestContext,
    ) -> Result<LoginResult, IdentityError> {
        self.check_rate(&format!("platform\n{username}"), ctx)?;
        let row = sqlx::query("SELECT password_hash FROM platform_root WHERE username = ?")
            .bind(username)
            .fetch_optional(self.db.pool())
            .await?;
        let stored = row.map(|r| r.try_get::<String, _>("password_hash")).transpose()?;
        let ok =
            password::verify(password_text, stored.as_deref().unwrap_or(&self.dummy_hash)).await && stored.is_some();
        let now = self.now();
        if !ok {
            let shown =
                if stored.is_some() { username.to_string() } else { self.failed_logins.unknown_identifier(username) };
            self.audit_failed_login(None, "root.login_failed", &shown, ctx).await?;
            return Err(INVALID_LOGIN);
        }
        self.account_limiter.reset(&format!("platform\n{username}"));
        let mut tx = self.db.begin_write().await?;
        let tokens = self.issue_session(&mut tx, ROOT_USERNAME, None, "root", Vec::new(), None).await?;
        audit::record(
            &mut *tx,
            None,
            "root",
            "root.login",
            Some(ROOT_USERNAME),
            ctx.source_ip.as_deref(),
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(LoginResult { tokens, user: None })
    }

    /// Records a failed login within the per-factory budget (see `failed_logins.rs`),
    /// first writing the count of the previous minute's suppressed ones when it is due.
    async fn audit_failed_login(
        &self,
        factory: Option<&FactoryId>,
        action: &str,
        identifier: &str,
        ctx: &RequestContext,
    ) -> Result<(), IdentityError> {
        let now = self.now();
        let (write, due) = self.failed_logins.admit(factory.map(FactoryId::as_str), now);
        if let Some(due) = due {
            self.record_suppressed(factory, &due, now).await?;
        }
        if write {
            audit::record(
                self.db.pool(),
                factory,
                "anonymous",
                action,
                Some(identifier),
                ctx.source_ip.as_deref(),
                serde_json::json!({}),
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// Writes the suppressed failed logins of `factory`'s last closed minute, if any are due
    /// (before the audit log is read, so a flood that stopped still shows its count).
    pub(crate) async fn flush_suppressed_logins(&self, factory: &FactoryId) -> Result<(), IdentityError> {
        let now = self.now();
        match self.failed_logins.due(Some(factory.as_str()), now) {
            Some(due) => self.record_suppressed(Some(factory), &due, now).await,
            None => Ok(()),
        }
    }

    async fn record_suppressed(
        &self,
        factory: Option<&FactoryId>,
        due: &crate::failed_logins::Suppressed,
        now: i64,
    ) -> Result<(), IdentityError> {
        audit::record(
            self.db.pool(),
            factory,
            "system",
            "login.failed_suppressed",
            None,
            None,
            serde_json::json!({
                "count": due.count,
                "from": format_rfc3339_ms(due.from_ms),
                "to": format_rfc3339_ms(due.to_ms),
            }),
            now,
        )
        .await
    }

    /// The root changes its own password.
    pub async fn change_root_password(
        &self,
        current: &str,
        new: &str,
        ctx: &RequestContext,
    ) -> Result<(), IdentityError> {
        let row = sqlx::query("SELECT password_hash FROM platform_root WHERE username = ?")
            .bind(ROOT_USERNAME)
            .fetch_one(self.db.pool())
            .await?;
        if !password::verify(current, &row.try_get::<String, _>("password_hash")?).await {
            return Err(IdentityError::invalid("current_password", "is not the current password"));
        }
        password::check_policy("new_password", new, None)?;
        let hash = password::hash(new, self.config.bcrypt_cost).await?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE platform_root SET password_hash = ?, updated_at = ? WHERE username = ?")
            .bind(hash)
            .bind(now)
            .bind(ROOT_USERNAME)
            .execute(&mut *tx)
            .await?;
        revoke_sessions(&mut tx, ROOT_USERNAME).await?;
        audit::record(
            &mut *tx,
            None,
            "root",
            "root.password_changed",
            Some(ROOT_USERNAME),
            ctx.source_ip.as_deref(),
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn issue_user_session(
        &self,
        tx: &mut WriteTx,
        factory: &FactoryId,
        user: &User,
        family: Option<&str>,
    ) -> Result<TokenPair, IdentityError> {
        let flags = user.permissions.iter().copied().collect();
        let perms = effective_permissions(user.role, &flags).iter().map(|p| p.as_str().to_string()).collect();
        self.issue_session(tx, &user.id, Some(factory), user.role.as_str(), perms, family).await
    }

    /// Stores a new refresh token in `tx` and signs its access token; the tokens are only
    /// good once the caller commits.
    async fn issue_session(
        &self,
        tx: &mut WriteTx,
        subject: &str,
        factory: Option<&FactoryId>,
        role: &str,
        perms: Vec<String>,
        family: Option<&str>,
    ) -> Result<TokenPair, IdentityError> {
        let family_id = family.map_or_else(new_id, str::to_string);
        let refresh = generate_secret(REFRESH_PREFIX);
        let now = self.now();
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family_id, factory_id, subject, token_hash, status, expires_at, created_at) \
             VALUES (?, ?, ?, ?, ?, 'active', ?, ?)",
        )
        .bind(new_id())
        .bind(&family_id)
        .bind(factory.map(|f| f.as_str().to_string()))
        .bind(subject)
        .bind(sha256_hex(&refresh))
        .bind(now + self.config.refresh_ttl_secs * 1000)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        let (access_token, expires_in) = self.sign_access(subject, factory, role, perms, &family_id)?;
        Ok(TokenPair { access_token, refresh_token: refresh, token_type: "Bearer".into(), expires_in })
    }

    async fn find_refresh(tx: &mut WriteTx, token: &str) -> Result<Option<RefreshRow>, IdentityError> {
        let row = sqlx::query(
            "SELECT id, family_id, factory_id, subject, status, expires_at FROM refresh_tokens WHERE token_hash = ?",
        )
        .bind(sha256_hex(token))
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row
            .map(|r| -> Result<RefreshRow, sqlx::Error> {
                Ok(RefreshRow {
                    id: r.try_get("id")?,
                    family_id: r.try_get("family_id")?,
                    factory_id: r.try_get("factory_id")?,
                    subject: r.try_get("subject")?,
                    status: r.try_get("status")?,
                    expires_at: r.try_get("expires_at")?,
                })
            })
            .transpose()?)
    }

    /// Whether `token` is a refresh token of `factory` (`None`: the root), read through the
    /// pool: anyone can send refresh and logout requests, so unknown and foreign tokens are
    /// answered without taking the write turn. The transaction reads the token again.
    async fn refresh_token_in_scope(&self, factory: Option<&FactoryId>, token: &str) -> Result<bool, IdentityError> {
        let row = sqlx::query("SELECT factory_id FROM refresh_tokens WHERE token_hash = ?")
            .bind(sha256_hex(token))
            .fetch_optional(self.db.pool())
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<String>, _>("factory_id")?.as_deref() == factory.map(FactoryId::as_str),
            None => false,
        })
    }

    /// Revokes a refresh-token family in `tx`; after the commit the caller ends its access
    /// tokens with [`Identity::revoke_session`].
    async fn revoke_family(tx: &mut WriteTx, family_id: &str) -> Result<(), IdentityError> {
        sqlx::query("UPDATE refresh_tokens SET status = 'revoked' WHERE family_id = ? AND status <> 'revoked'")
            .bind(family_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Rotates a refresh token: the old token's claim and the new token are one
    /// transaction, which also reads the old token, so of two concurrent uses of one token
    /// the second always sees it rotated. Presenting an already rotated token means it was
    /// stolen or replayed: the whole family (including a token the other use just got) is
    /// revoked and the reuse audited. `factory` is `None` for the platform root.
    pub async fn refresh(
        &self,
        factory: Option<&FactoryId>,
        token: &str,
        ctx: &RequestContext,
    ) -> Result<TokenPair, IdentityError> {
        if !self.refresh_token_in_scope(factory, token).await? {
            return Err(INVALID_REFRESH);
        }
        let mut tx = self.db.begin_write().await?;
        let row = Self::find_refresh(&mut tx, token).await?.ok_or(INVALID_REFRESH)?;
        if row.factory_id.as_deref() != factory.map(FactoryId::as_str) {
            return Err(INVALID_REFRESH);
        }
        let now = self.now();
        if row.status == "rotated" {
            return Err(self.reuse_detected(tx, &row, factory, ctx).await?);
        }
        if row.status != "active" || row.expires_at <= now {
            return Err(INVALID_REFRESH);
        }
        let claimed =
            sqlx::query("UPDATE refresh_tokens SET status = 'rotated', used_at = ? WHERE id = ? AND status = 'active'")
                .bind(now)
                .bind(&row.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if claimed != 1 {
            // Two concurrent uses of one token (MySQL: the other committed first): one of
            // them is not the owner.
            return Err(self.reuse_detected(tx, &row, factory, ctx).await?);
        }
        let tokens = match factory {
            None => self.issue_session(&mut tx, ROOT_USERNAME, None, "root", Vec::new(), Some(&row.family_id)).await?,
            Some(factory) => {
                let user = load_user(&mut *tx, factory, &row.subject).await?.ok_or(INVALID_REFRESH)?;
                let factory_active = sqlx::query("SELECT status FROM factories WHERE id = ?")
                    .bind(factory.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get::<String, _>("status"))
                    .transpose()?
                    .is_some_and(|s| s == "active");
                if user.status != UserStatus::Active || !factory_active {
                    Self::revoke_family(&mut tx, &row.family_id).await?;
                    tx.commit().await?;
                    self.revoke_session(&row.family_id, now);
                    return Err(INVALID_REFRESH);
                }
                self.issue_user_session(&mut tx, factory, &user, Some(&row.family_id)).await?
            }
        };
        tx.commit().await?;
        Ok(tokens)
    }

    /// Revokes the family and audits the reuse in `tx`, commits, and returns the error to answer.
    async fn reuse_detected(
        &self,
        mut tx: WriteTx,
        row: &RefreshRow,
        factory: Option<&FactoryId>,
        ctx: &RequestContext,
    ) -> Result<IdentityError, IdentityError> {
        let now = self.now();
        Self::revoke_family(&mut tx, &row.family_id).await?;
        let actor = if factory.is_some() { format!("user:{}", row.subject) } else { "root".into() };
        audit::record(
            &mut *tx,
            factory,
            &actor,
            "token.reuse_detected",
            Some(&row.subject),
            ctx.source_ip.as_deref(),
            serde_json::json!({ "family_id": row.family_id }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.revoke_session(&row.family_id, now);
        tracing::warn!(subject = %row.subject, "refresh token reuse detected; session family revoked");
        Ok(INVALID_REFRESH)
    }

    /// Ends the session the refresh token belongs to. Unknown tokens, and tokens of
    /// another factory (or of the root at a factory's logout), are ignored: logout answers
    /// the same for them (RFC 7009 §2.2), so it cannot be used to probe for tokens, and
    /// it never ends a session it was not given in its own scope.
    pub async fn logout(
        &self,
        factory: Option<&FactoryId>,
        token: &str,
        ctx: &RequestContext,
    ) -> Result<(), IdentityError> {
        if !self.refresh_token_in_scope(factory, token).await? {
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        let Some(row) = Self::find_refresh(&mut tx, token).await? else { return Ok(()) };
        if row.factory_id.as_deref() != factory.map(FactoryId::as_str) {
            return Ok(());
        }
        let now = self.now();
        Self::revoke_family(&mut tx, &row.family_id).await?;
        let actor = if factory.is_some() { format!("user:{}", row.subject) } else { "root".into() };
        audit::record(
            &mut *tx,
            factory,
            &actor,
            "logout",
            Some(&row.subject),
            ctx.source_ip.as_deref(),
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.revoke_session(&row.family_id, now);
        Ok(())
    }
}
