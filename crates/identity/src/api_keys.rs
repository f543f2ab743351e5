//! API keys: factory-scoped machine credentials with a permission subset.

use factoryops_types::{FactoryId, format_rfc3339_ms, new_id, parse_rfc3339_ms};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use crate::Page;
use crate::audit::{self, page_cursor};
use crate::error::IdentityError;
use crate::factories::collect;
use crate::model::{Permission, Principal, check_name, join_permissions, parse_permissions, split_permissions};
use crate::service::{Identity, RequestContext};
use crate::tokens::{generate_secret, sha256_hex};

pub(crate) const KEY_PREFIX: &str = "fo_";

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it; the key itself is never shown again.
    pub prefix: String,
    pub permissions: Vec<Permission>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    /// e.g. `["telemetry:write"]`, `["data:read"]`.
    pub permissions: Vec<String>,
    /// RFC 3339; omitted = never expires.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// Shown once: use as `Authorization: Bearer fo_…`.
    pub key: String,
}

const COLUMNS: &str = "id, name, key_prefix, permissions, expires_at, revoked_at, created_by, created_at, last_used_at";

fn key_from_row(row: &sqlx::any::AnyRow) -> Result<ApiKeyInfo, sqlx::Error> {
    let time = |col: &str| -> Result<Option<String>, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(col)?.map(format_rfc3339_ms))
    };
    Ok(ApiKeyInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("key_prefix")?,
        permissions: split_permissions(&row.try_get::<String, _>("permissions")?).into_iter().collect(),
        expires_at: time("expires_at")?,
        revoked_at: time("revoked_at")?,
        created_by: row.try_get("created_by")?,
        created_at: format_rfc3339_ms(row.try_get("created_at")?),
        last_used_at: time("last_used_at")?,
    })
}

impl Identity {
    pub async fn create_api_key(
        &self,
        factory: &FactoryId,
        actor: &Principal,
        new: NewApiKey,
        ctx: &RequestContext,
    ) -> Result<CreatedApiKey, IdentityError> {
        let mut issues = Vec::new();
        let name = check_name("name", &new.name).map_err(|e| collect(&mut issues, e)).ok();
        let permissions = parse_permissions("permissions", &new.permissions).map_err(|i| issues.push(i)).ok();
        if permissions.as_ref().is_some_and(|p| p.is_empty()) {
            issues.push(crate::FieldIssue::new("permissions", "name at least one permission"));
        }
        let now = self.now();
        let expires_at = match &new.expires_at {
            Some(text) => match parse_rfc3339_ms(text) {
                Some(ms) if ms > now => Some(ms),
                Some(_) => {
                    issues.push(crate::FieldIssue::new("expires_at", "must be in the future"));
                    None
                }
                None => {
                    issues.push(crate::FieldIssue::new("expires_at", "must be an RFC 3339 time"));
                    None
                }
            },
            None => None,
        };
        let (Some(name), Some(permissions), true) = (name, permissions, issues.is_empty()) else {
            return Err(IdentityError::Invalid(issues));
        };
        let key = generate_secret(KEY_PREFIX);
        let id = new_id();
        // The key and its audit entry commit together: no credential exists unaudited.
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, factory_id, name, key_prefix, key_hash, permissions, expires_at, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(factory.as_str())
        .bind(&name)
        .bind(&key[..11])
        .bind(sha256_hex(&key))
        .bind(join_permissions(&permissions))
        .bind(expires_at)
        .bind(actor.actor())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut *tx,
            Some(factory),
            &actor.actor(),
            "api_key.created",
            Some(&id),
            ctx.source_ip.as_deref(),
            serde_json::json!({ "name": name, "permissions": join_permissions(&permissions) }),
            now,
        )
        .await?;
        tx.commit().await?;
        let info = self.api_key(factory, &id).await?.ok_or(IdentityError::NotFound("api key"))?;
        Ok(CreatedApiKey { info, key })
    }

    pub async fn api_key(&self, factory: &FactoryId, id: &str) -> Result<Option<ApiKeyInfo>, IdentityError> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys WHERE factory_id = ? AND id = ?")))
                .bind(factory.as_str())
                .bind(id)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(row.as_ref().map(key_from_row).transpose()?)
    }

    pub async fn list_api_keys(
        &self,
        factory: &FactoryId,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<ApiKeyInfo>, IdentityError> {
        let limit = i64::from(limit.unwrap_or(100).clamp(1, 500));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_keys WHERE factory_id = ? AND id > ? ORDER BY id LIMIT ?"
        )))
        .bind(factory.as_str())
        .bind(cursor.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(self.db.pool())
        .await?;
        let mut items = rows.iter().map(key_from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = page_cursor(&mut items, limit, |k| k.id.clone());
        Ok(Page { items, next_cursor })
    }

    pub async fn revoke_api_key(
        &self,
        factory: &FactoryId,
        actor: &Principal,
        id: &str,
        ctx: &RequestContext,
    ) -> Result<(), IdentityError> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE factory_id = ? AND id = ? AND revoked_at IS NULL")
                .bind(now)
                .bind(factory.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if done == 0 {
            let exists = sqlx::query("SELECT id FROM api_keys WHERE factory_id = ? AND id = ?")
                .bind(factory.as_str())
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !exists {
                return Err(IdentityError::NotFound("api key"));
            }
        }
        audit::record(
            &mut *tx,
            Some(factory),
            &actor.actor(),
            "api_key.revoked",
            Some(id),
            ctx.source_ip.as_deref(),
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.forget_api_keys();
        Ok(())
    }
}
