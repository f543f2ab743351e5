//! Logins, refresh-token rotation with reuse detection, logout.

use factoryops_types::{FactoryId, new_id};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use crate::audit;
use crate::error::IdentityError;
use crate::model::effective_permissions;
use crate::password;
use crate::service::{Identity, ROOT_USERNAME, RequestContext};
use crate::tokens::{generate_secret, sha256_hex};
use crate::users::User;

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
        let (Some(factory), Some((user_id, _, true)), true) = (factory.clone(), candidate, password_ok) else {
            let known_factory = match &factory {
                Some(f) => self.factory(f).await?.map(|_| f.clone()),
                None => None,
            };
            audit::record(
                &self.db,
                known_factory.as_ref(),
                "anonymous",
                "login.failed",
                Some(&email_key),
                ctx.source_ip.as_deref(),
                serde_json::json!({}),
                now,
            )
            .await?;
            return Err(INVALID_LOGIN);
        };
        self.account_limiter.reset(&format!("{factory_id}\n{email_key}"));
        let user = self.user(&factory, &user_id).await?.ok_or(INVALID_LOGIN)?;
        let tokens = self.issue_user_session(&factory, &user, None).await?;
        audit::record(
            &self.db,
            Some(&factory),
            &format!("user:{user_id}"),
            "login.succeeded",
            Some(&user_id),
            ctx.source_ip.as_deref(),
            serde_json::json!({}),
            now,
        )
        .await?;
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
            audit::record(
                &self.db,
                None,
                "anonymous",
                "root.login_failed",
                Some(username),
                ctx.source_ip.as_deref(),
                serde_json::json!({}),
                now,
            )
            .await?;
            return Err(INVALID_LOGIN);
        }
        self.account_limiter.reset(&format!("platform\n{username}"));
        let tokens = self.issue_session(ROOT_USERNAME, None, "root", Vec::new(), None).await?;
        audit::record(
            &self.db,
            None,
            "root",
            "root.login",
            Some(ROOT_USERNAME),
            ctx.source_ip.as_deref(),
            serde_json::json!({}),
            now,
        )
        .await?;
        Ok(LoginResult { tokens, user: None })
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
        sqlx::query("UPDATE platform_root SET password_hash = ?, updated_at = ? WHERE username = ?")
            .bind(hash)
            .bind(now)
            .bind(ROOT_USERNAME)
            .execute(self.db.pool())
            .await?;
        self.revoke_user_sessions(ROOT_USERNAME).await?;
        audit::record(
            &self.db,
            None,
            "root",
            "root.password_changed",
            Some(ROOT_USERNAME),
            ctx.source_ip.as_deref(),
            serde_json::json!({}),
            now,
        )
        .await
    }

    async fn issue_user_session(
        &self,
        factory: &FactoryId,
        user: &User,
        family: Option<&str>,
    ) -> Result<TokenPair, IdentityError> {
        let flags = user.permissions.iter().copied().collect();
        let perms = effective_permissions(user.role, &flags).iter().map(|p| p.as_str().to_string()).collect();
        self.issue_session(&user.id, Some(factory), user.role.as_str(), perms, family).await
    }

    async fn issue_session(
        &self,
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
        .execute(self.db.pool())
        .await?;
        let (access_token, expires_in) = self.sign_access(subject, factory, role, perms, &family_id)?;
        Ok(TokenPair { access_token, refresh_token: refresh, token_type: "Bearer".into(), expires_in })
    }

    async fn find_refresh(&self, token: &str) -> Result<Option<RefreshRow>, IdentityError> {
        let row = sqlx::query(
            "SELECT id, family_id, factory_id, subject, status, expires_at FROM refresh_tokens WHERE token_hash = ?",
        )
        .bind(sha256_hex(token))
        .fetch_optional(self.db.pool())
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

    async fn revoke_family(&self, family_id: &str) -> Result<(), IdentityError> {
        sqlx::query("UPDATE refresh_tokens SET status = 'revoked' WHERE family_id = ? AND status <> 'revoked'")
            .bind(family_id)
            .execute(self.db.pool())
            .await?;
        self.revoke_session(family_id, self.now());
        Ok(())
    }

    /// Rotates a refresh token. Presenting an already rotated token means it was stolen
    /// or replayed: the whole family is revoked and the reuse audited.
    /// `factory` is `None` for the platform root.
    pub async fn refresh(
        &self,
        factory: Option<&FactoryId>,
        token: &str,
        ctx: &RequestContext,
    ) -> Result<TokenPair, IdentityError> {
        let row = self.find_refresh(token).await?.ok_or(INVALID_REFRESH)?;
        if row.factory_id.as_deref() != factory.map(FactoryId::as_str) {
            return Err(INVALID_REFRESH);
        }
        let now = self.now();
        if row.status == "rotated" {
            return Err(self.reuse_detected(&row, factory, ctx).await?);
        }
        if row.status != "active" || row.expires_at <= now {
            return Err(INVALID_REFRESH);
        }
        let claimed =
            sqlx::query("UPDATE refresh_tokens SET status = 'rotated', used_at = ? WHERE id = ? AND status = 'active'")
                .bind(now)
                .bind(&row.id)
                .execute(self.db.pool())
                .await?
                .rows_affected();
        if claimed != 1 {
            // Two concurrent uses of one token: one of them is not the owner.
            return Err(self.reuse_detected(&row, factory, ctx).await?);
        }
        match factory {
            None => self.issue_session(ROOT_USERNAME, None, "root", Vec::new(), Some(&row.family_id)).await,
            Some(factory) => {
                let user = self.user(factory, &row.subject).await?.ok_or(INVALID_REFRESH)?;
                if user.status != crate::users::UserStatus::Active
                    || !self.factory_active(factory.as_str(), now).await?
                {
                    self.revoke_family(&row.family_id).await?;
                    return Err(INVALID_REFRESH);
                }
                self.issue_user_session(factory, &user, Some(&row.family_id)).await
            }
        }
    }

    async fn reuse_detected(
        &self,
        row: &RefreshRow,
        factory: Option<&FactoryId>,
        ctx: &RequestContext,
    ) -> Result<IdentityError, IdentityError> {
        self.revoke_family(&row.family_id).await?;
        let actor = if factory.is_some() { format!("user:{}", row.subject) } else { "root".into() };
        audit::record(
            &self.db,
            factory,
            &actor,
            "token.reuse_detected",
            Some(&row.subject),
            ctx.source_ip.as_deref(),
            serde_json::json!({ "family_id": row.family_id }),
            self.now(),
        )
        .await?;
        tracing::warn!(subject = %row.subject, "refresh token reuse detected; session family revoked");
        Ok(INVALID_REFRESH)
    }

    /// Ends the session the refresh token belongs to. Unknown tokens are ignored.
    pub async fn logout(
        &self,
        factory: Option<&FactoryId>,
        token: &str,
        ctx: &RequestContext,
    ) -> Result<(), IdentityError> {
        let Some(row) = self.find_refresh(token).await? else { return Ok(()) };
        if row.factory_id.as_deref() != factory.map(FactoryId::as_str) {
            return Ok(());
        }
        self.revoke_family(&row.family_id).await?;
        let actor = if factory.is_some() { format!("user:{}", row.subject) } else { "root".into() };
        audit::record(
            &self.db,
            factory,
            &actor,
            "logout",
            Some(&row.subject),
            ctx.source_ip.as_deref(),
            serde_json::json!({}),
            self.now(),
        )
        .await
    }
}
