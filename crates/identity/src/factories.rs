//! Factories: created and managed by the platform root.

use factoryops_types::{FactoryId, format_rfc3339_ms};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use crate::audit;
use crate::error::IdentityError;
use crate::model::{Principal, check_name, parse_timezone};
use crate::service::{Identity, RequestContext};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FactoryStatus {
    Active,
    Disabled,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Factory {
    pub id: String,
    pub name: String,
    /// IANA time zone; schedules and reports use it.
    pub timezone: String,
    pub status: FactoryStatus,
    pub created_at: String,
    pub updated_at: String,
}

/// What the login dropdown shows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PublicFactory {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFactory {
    /// Slug `[a-z0-9][a-z0-9-]{0,62}`; part of MQTT topics and URLs; cannot change.
    pub id: String,
    pub name: String,
    /// IANA time zone, default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FactoryUpdate {
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub status: Option<FactoryStatus>,
}

fn factory_from_row(row: &sqlx::any::AnyRow) -> Result<Factory, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Factory {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        timezone: row.try_get("timezone")?,
        status: if status == "active" { FactoryStatus::Active } else { FactoryStatus::Disabled },
        created_at: format_rfc3339_ms(row.try_get("created_at")?),
        updated_at: format_rfc3339_ms(row.try_get("updated_at")?),
    })
}

const COLUMNS: &str = "id, name, timezone, status, created_at, updated_at";

impl Identity {
    pub async fn create_factory(&self, new: NewFactory, ctx: &RequestContext) -> Result<Factory, IdentityError> {
        let mut issues = Vec::new();
        let id =
            FactoryId::parse(new.id.clone()).map_err(|e| issues.push(crate::FieldIssue::new("id", e.to_string()))).ok();
        let name = check_name("name", &new.name).map_err(|e| collect(&mut issues, e)).ok();
        let timezone = parse_timezone("timezone", new.timezone.as_deref().unwrap_or("UTC"))
            .map_err(|e| collect(&mut issues, e))
            .ok();
        let (Some(id), Some(name), Some(timezone)) = (id, name, timezone) else {
            return Err(IdentityError::Invalid(issues));
        };
        let now = self.now();
        // The factory and its audit entry commit together (a factory nobody audited, or an
        // entry for a factory that does not exist, cannot be left behind).
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO factories (id, name, timezone, status, created_at, updated_at) VALUES (?, ?, ?, 'active', ?, ?)",
        )
        .bind(id.as_str())
        .bind(&name)
        .bind(&timezone)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(IdentityError::from);
        match inserted {
            Err(IdentityError::Db(e)) if e.is_unique_violation() => {
                return Err(IdentityError::Conflict(format!("factory `{id}` already exists")));
            }
            other => other?,
        };
        audit::record(
            &mut *tx,
            Some(&id),
            "root",
            "factory.created",
            Some(id.as_str()),
            ctx.source_ip.as_deref(),
            serde_json::json!({ "name": name, "timezone": timezone }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.forget_factory(id.as_str());
        self.factory(&id).await?.ok_or(IdentityError::NotFound("factory"))
    }

    pub async fn factory(&self, id: &FactoryId) -> Result<Option<Factory>, IdentityError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM factories WHERE id = ?")))
            .bind(id.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.as_ref().map(factory_from_row).transpose()?)
    }

    /// Every factory, for the platform root.
    pub async fn list_factories(&self) -> Result<Vec<Factory>, IdentityError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM factories ORDER BY id")))
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(factory_from_row).collect::<Result<_, _>>()?)
    }

    /// Active factories' ids and names, for the login dropdown.
    pub async fn public_factories(&self) -> Result<Vec<PublicFactory>, IdentityError> {
        let rows = sqlx::query("SELECT id, name FROM factories WHERE status = 'active' ORDER BY name, id")
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok(PublicFactory { id: r.try_get("id")?, name: r.try_get("name")? }))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    pub async fn update_factory(
        &self,
        id: &FactoryId,
        update: FactoryUpdate,
        ctx: &RequestContext,
    ) -> Result<Factory, IdentityError> {
        let mut current = self.factory(id).await?.ok_or(IdentityError::NotFound("factory"))?;
        let mut issues = Vec::new();
        if let Some(name) = &update.name {
            match check_name("name", name) {
                Ok(n) => current.name = n,
                Err(e) => collect(&mut issues, e),
            }
        }
        if let Some(tz) = &update.timezone {
            match parse_timezone("timezone", tz) {
                Ok(t) => current.timezone = t,
                Err(e) => collect(&mut issues, e),
            }
        }
        if !issues.is_empty() {
            return Err(IdentityError::Invalid(issues));
        }
        let status = update.status.unwrap_or(current.status);
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE factories SET name = ?, timezone = ?, status = ?, updated_at = ? WHERE id = ?")
            .bind(&current.name)
            .bind(&current.timezone)
            .bind(match status {
                FactoryStatus::Active => "active",
                FactoryStatus::Disabled => "disabled",
            })
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let action = match (current.status, status) {
            (FactoryStatus::Active, FactoryStatus::Disabled) => "factory.disabled",
            (FactoryStatus::Disabled, FactoryStatus::Active) => "factory.enabled",
            _ => "factory.updated",
        };
        audit::record(
            &mut *tx,
            Some(id),
            &Principal::Root.actor(),
            action,
            Some(id.as_str()),
            ctx.source_ip.as_deref(),
            serde_json::json!({ "name": current.name, "timezone": current.timezone }),
            now,
        )
        .await?;
        tx.commit().await?;
        self.forget_factory(id.as_str());
        self.factory(id).await?.ok_or(IdentityError::NotFound("factory"))
    }
}

pub(crate) fn collect(issues: &mut Vec<crate::FieldIssue>, error: IdentityError) {
    match error {
        IdentityError::Invalid(mut more) => issues.append(&mut more),
        other => issues.push(crate::FieldIssue::new("body", other.to_string())),
    }
}
