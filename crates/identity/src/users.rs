//! Factory users: super admins, admins with permission flags, viewers.

use std::collections::BTreeSet;

use factoryops_db::WriteTx;
use factoryops_types::{FactoryId, format_rfc3339_ms, new_id};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use crate::Page;
use crate::audit::{self, page_cursor};
use crate::error::{FieldIssue, IdentityError};
use crate::factories::collect;
use crate::model::{
    Email, Permission, Principal, Role, check_name, check_phone, join_permissions, parse_permissions, split_permissions,
};
use crate::password;
use crate::service::{Identity, RequestContext};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Disabled,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub factory_id: String,
    pub email: String,
    pub name: String,
    /// E.164, for WhatsApp notifications.
    pub phone: Option<String>,
    pub role: Role,
    /// The explicit flags (an admin's grants). Super admins hold every permission.
    pub permissions: Vec<Permission>,
    pub status: UserStatus,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    /// `super_admin`, `admin` or `viewer`.
    pub role: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    pub password: String,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    pub name: Option<String>,
    pub role: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub status: Option<UserStatus>,
    /// Set to a number, or to `""` to remove it.
    pub phone: Option<String>,
}

const COLUMNS: &str = "id, factory_id, email, name, phone, role, permissions, status, created_at, updated_at";

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    let role: String = row.try_get("role")?;
    let status: String = row.try_get("status")?;
    Ok(User {
        id: row.try_get("id")?,
        factory_id: row.try_get("factory_id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        phone: row.try_get("phone")?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        permissions: split_permissions(&row.try_get::<String, _>("permissions")?).into_iter().collect(),
        status: if status == "active" { UserStatus::Active } else { UserStatus::Disabled },
        created_at: format_rfc3339_ms(row.try_get("created_at")?),
        updated_at: format_rfc3339_ms(row.try_get("updated_at")?),
    })
}

fn parse_role(field: &str, text: &str) -> Result<Role, IdentityError> {
    Role::parse(text).ok_or_else(|| IdentityError::invalid(field, "must be one of super_admin, admin, viewer"))
}

/// Flags a role may carry: an admin's chosen subset; none for viewers and super admins.
fn flags_for(role: Role, names: &[String]) -> Result<BTreeSet<Permission>, IdentityError> {
    let flags = parse_permissions("permissions", names).map_err(|i| IdentityError::Invalid(vec![i]))?;
    match role {
        Role::Admin => Ok(flags),
        Role::Viewer if !flags.is_empty() => {
            Err(IdentityError::invalid("permissions", "a viewer has no permission flags"))
        }
        // A super admin holds every permission; stored flags would only confuse.
        Role::Viewer | Role::SuperAdmin => Ok(BTreeSet::new()),
    }
}

impl Identity {
    /// Creates a user in `factory`; `actor` is who does it (root for the first super admin).
    pub async fn create_user(
        &self,
        factory: &FactoryId,
        actor: &Principal,
        new: NewUser,
        ctx: &RequestContext,
    ) -> Result<User, IdentityError> {
        let mut issues = Vec::new();
        let email = Email::parse("email", &new.email).map_err(|e| collect(&mut issues, e)).ok();
        let name = check_name("name", &new.name).map_err(|e| collect(&mut issues, e)).ok();
        let role = parse_role("role", &new.role).map_err(|e| collect(&mut issues, e)).ok();
        let flags = role.and_then(|r| flags_for(r, &new.permissions).map_err(|e| collect(&mut issues, e)).ok());
        if let Err(e) = password::check_policy("password", &new.password, email.as_ref().map(Email::as_str)) {
            collect(&mut issues, e);
        }
        let phone = match new.phone.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => check_phone("phone", p).map_err(|e| collect(&mut issues, e)).ok(),
            None => None,
        };
        let (Some(email), Some(name), Some(role), Some(flags)) = (email, name, role, flags) else {
            return Err(IdentityError::Invalid(issues));
        };
        if !issues.is_empty() {
            return Err(IdentityError::Invalid(issues));
        }
        if self.factory(factory).await?.is_none() {
            return Err(IdentityError::NotFound("factory"));
        }
        let hash = password::hash(&new.password, self.config.bcrypt_cost).await?;
        let id = new_id();
        let now = self.now();
        // The user and the audit entry that says who created them commit together.
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, factory_id, email, email_key, name, phone, role, permissions, password_hash, status, tokens_valid_after, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', 0, ?, ?)",
        )
        .bind(&id)
        .bind(factory.as_str())
        .bind(email.as_str())
        .bind(email.key())
        .bind(&name)
        .bind(phone)
        .bind(role.as_str())
        .bind(join_permissions(&flags))
        .bind(hash)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(IdentityError::from);
        match inserted {
            Err(IdentityError::Db(e)) if e.is_unique_violation() => {
                return Err(IdentityError::Invalid(vec![FieldIssue::new(
                    "email",
                    "a user with this e-mail exists in this factory",
                )]));
            }
            other => other?,
        };
        let action = if matches!(actor, Principal::Root) { "super_admin.created" } else { "user.created" };
        audit::record(
            &mut *tx,
            Some(factory),
            &actor.actor(),
            action,
            Some(&id),
            ctx.source_ip.as_deref(),
            serde_json::json!({ "email": email.as_str(), "role": role.as_str(), "permissions": join_permissions(&flags) }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.user(factory, &id).await?.ok_or(IdentityError::NotFound("user"))
    }

    pub async fn user(&self, factory: &FactoryId, user_id: &str) -> Result<Option<User>, IdentityError> {
        load_user(self.db.pool(), factory, user_id).await
    }

    pub async fn list_users(
        &self,
        factory: &FactoryId,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<User>, IdentityError> {
        let limit = i64::from(limit.unwrap_or(100).clamp(1, 500));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE factory_id = ? AND id > ? ORDER BY id LIMIT ?"
        )))
        .bind(factory.as_str())
        .bind(cursor.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(self.db.pool())
        .await?;
        let mut items = rows.iter().map(user_from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = page_cursor(&mut items, limit, |u| u.id.clone());
        Ok(Page { items, next_cursor })
    }

    pub async fn update_user(
        &self,
        factory: &FactoryId,
        actor: &Principal,
        user_id: &str,
        update: UserUpdate,
        ctx: &RequestContext,
    ) -> Result<User, IdentityError> {
        let current = self.user(factory, user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        let mut issues = Vec::new();
        let name = match &update.name {
            Some(n) => check_name("name", n).map_err(|e| collect(&mut issues, e)).ok(),
            None => Some(current.name.clone()),
        };
        let role = match &update.role {
            Some(r) => parse_role("role", r).map_err(|e| collect(&mut issues, e)).ok(),
            None => Some(current.role),
        };
        let names: Vec<String> = match &update.permissions {
            Some(p) => p.clone(),
            None => current.permissions.iter().map(|p| p.as_str().to_string()).collect(),
        };
        let flags = role.and_then(|r| flags_for(r, &names).map_err(|e| collect(&mut issues, e)).ok());
        let phone = match update.phone.as_deref() {
            Some("") => Some(None),
            Some(p) => check_phone("phone", p).map_err(|e| collect(&mut issues, e)).ok().map(Some),
            None => Some(current.phone.clone()),
        };
        let (Some(name), Some(role), Some(flags), Some(phone)) = (name, role, flags, phone) else {
            return Err(IdentityError::Invalid(issues));
        };
        let status = update.status.unwrap_or(current.status);
        let loses_super_admin = current.role == Role::SuperAdmin
            && current.status == UserStatus::Active
            && (role != Role::SuperAdmin || status != UserStatus::Active);
        let access_changed = role != current.role
            || flags.iter().copied().collect::<Vec<_>>() != current.permissions
            || status != current.status;
        let now = self.now();
        // The change, the end of a disabled user's sessions and the audit entry commit
        // together; the last-super-admin check counts inside the same transaction, so two
        // concurrent demotions cannot both pass it.
        let mut tx = self.db.begin_write().await?;
        if loses_super_admin && self.active_super_admins(&mut tx, factory).await? <= 1 {
            return Err(IdentityError::Conflict(
                "the factory's last active super admin cannot be demoted or disabled".into(),
            ));
        }
        let changed = sqlx::query(
            "UPDATE users SET name = ?, role = ?, permissions = ?, status = ?, phone = ?, updated_at = ?, \
             tokens_valid_after = CASE WHEN ? THEN ? ELSE tokens_valid_after END WHERE factory_id = ? AND id = ?",
        )
        .bind(&name)
        .bind(role.as_str())
        .bind(join_permissions(&flags))
        .bind(if status == UserStatus::Active { "active" } else { "disabled" })
        .bind(phone)
        .bind(now)
        .bind(i64::from(access_changed))
        .bind(now)
        .bind(factory.as_str())
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(IdentityError::NotFound("user"));
        }
        if status == UserStatus::Disabled {
            revoke_sessions(&mut tx, user_id).await?;
        }
        let action = if status == UserStatus::Disabled && current.status == UserStatus::Active {
            "user.disabled"
        } else {
            "user.updated"
        };
        audit::record(
            &mut *tx,
            Some(factory),
            &actor.actor(),
            action,
            Some(user_id),
            ctx.source_ip.as_deref(),
            serde_json::json!({ "role": role.as_str(), "permissions": join_permissions(&flags), "status": status }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.forget_user(user_id);
        self.user(factory, user_id).await?.ok_or(IdentityError::NotFound("user"))
    }

    async fn active_super_admins(&self, tx: &mut WriteTx, factory: &FactoryId) -> Result<i64, IdentityError> {
        let sql = format!(
            "SELECT id FROM users WHERE factory_id = ? AND role = 'super_admin' AND status = 'active'{}",
            self.db.dialect().lock_rows()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(factory.as_str()).fetch_all(&mut **tx).await?;
        Ok(i64::try_from(rows.len()).unwrap_or(i64::MAX))
    }

    /// A super admin sets a new password for a user; every session of that user ends.
    pub async fn reset_password(
        &self,
        factory: &FactoryId,
        actor: &Principal,
        user_id: &str,
        new_password: &str,
        ctx: &RequestContext,
    ) -> Result<(), IdentityError> {
        let user = self.user(factory, user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        password::check_policy("password", new_password, Some(&user.email))?;
        let audit = PasswordAudit { actor: actor.actor(), action: "user.password_reset", ctx };
        self.store_password(factory, user_id, new_password, audit).await
    }

    /// The signed-in user changes their own password, proving the current one.
    pub async fn change_password(
        &self,
        factory: &FactoryId,
        user_id: &str,
        current_password: &str,
        new_password: &str,
        ctx: &RequestContext,
    ) -> Result<(), IdentityError> {
        let row = sqlx::query("SELECT email, password_hash FROM users WHERE factory_id = ? AND id = ?")
            .bind(factory.as_str())
            .bind(user_id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or(IdentityError::NotFound("user"))?;
        let email: String = row.try_get("email")?;
        let hash: String = row.try_get("password_hash")?;
        if !password::verify(current_password, &hash).await {
            return Err(IdentityError::invalid("current_password", "is not the current password"));
        }
        password::check_policy("new_password", new_password, Some(&email))?;
        if new_password == current_password {
            return Err(IdentityError::invalid("new_password", "must differ from the current password"));
        }
        let audit = PasswordAudit { actor: format!("user:{user_id}"), action: "user.password_changed", ctx };
        self.store_password(factory, user_id, new_password, audit).await
    }

    /// Stores the new password, ends every session of the user and writes the audit entry,
    /// in one transaction: a password that changed while the old sessions live on (or the
    /// reverse) cannot be left behind.
    async fn store_password(
        &self,
        factory: &FactoryId,
        user_id: &str,
        new_password: &str,
        audit: PasswordAudit<'_>,
    ) -> Result<(), IdentityError> {
        let hash = password::hash(new_password, self.config.bcrypt_cost).await?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE users SET password_hash = ?, tokens_valid_after = ?, updated_at = ? WHERE factory_id = ? AND id = ?",
        )
        .bind(hash)
        .bind(now)
        .bind(now)
        .bind(factory.as_str())
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(IdentityError::NotFound("user"));
        }
        revoke_sessions(&mut tx, user_id).await?;
        audit::record(
            &mut *tx,
            Some(factory),
            &audit.actor,
            audit.action,
            Some(user_id),
            audit.ctx.source_ip.as_deref(),
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.forget_user(user_id);
        Ok(())
    }
}

/// Who changes a password, for the audit entry written with it.
struct PasswordAudit<'a> {
    actor: String,
    action: &'static str,
    ctx: &'a RequestContext,
}

/// One user of `factory`, read through `exec` (the pool, or a write transaction that
/// decides on what it reads).
pub(crate) async fn load_user<'c>(
    exec: impl sqlx::Executor<'c, Database = sqlx::Any>,
    factory: &FactoryId,
    user_id: &str,
) -> Result<Option<User>, IdentityError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE factory_id = ? AND id = ?")))
        .bind(factory.as_str())
        .bind(user_id)
        .fetch_optional(exec)
        .await?;
    Ok(row.as_ref().map(user_from_row).transpose()?)
}

/// Ends every refresh-token family of `subject` (a user id or the root) inside `tx`.
pub(crate) async fn revoke_sessions(tx: &mut WriteTx, subject: &str) -> Result<(), IdentityError> {
    sqlx::query("UPDATE refresh_tokens SET status = 'revoked' WHERE subject = ? AND status = 'active'")
        .bind(subject)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
