//! The append-only audit log: who did what to what, when, from where.

use factoryops_types::{FactoryId, format_rfc3339_ms, new_id};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};
use utoipa::{IntoParams, ToSchema};

use crate::Page;
use crate::error::IdentityError;
use crate::service::Identity;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub factory_id: Option<String>,
    /// RFC 3339 UTC.
    pub at: String,
    /// `root`, `user:<id>`, `api_key:<id>`, `anonymous` or `system`.
    pub actor: String,
    /// e.g. `login.succeeded`, `login.failed`, `token.reuse_detected`, `user.created`.
    pub action: String,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Filters for `GET /audit`; newest first.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    /// RFC 3339, inclusive.
    pub from: Option<String>,
    /// RFC 3339, exclusive.
    pub to: Option<String>,
    /// 1–500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// What another component (rules, devices, notifications) writes to the audit log.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub factory: &'a FactoryId,
    /// The principal's actor string (`user:<id>`, `api_key:<id>`).
    pub actor: String,
    /// e.g. `rule.created`, `device.updated`, `notification.retry`.
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    pub detail: serde_json::Value,
}

impl Identity {
    /// Appends an entry on behalf of another component.
    pub async fn record_audit(&self, entry: AuditRecord<'_>) -> Result<(), IdentityError> {
        record(
            self.db.pool(),
            Some(entry.factory),
            &entry.actor,
            entry.action,
            entry.target,
            entry.source_ip,
            entry.detail,
            self.now(),
        )
        .await
    }
}

/// Appends one entry through `exec`: the pool for an entry on its own, or the caller's
/// write transaction ([`factoryops_db::WriteTx`]) for an entry that belongs to a change,
/// so the change and its entry commit together or not at all.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record<'c>(
    exec: impl sqlx::Executor<'c, Database = sqlx::Any>,
    factory: Option<&FactoryId>,
    actor: &str,
    action: &str,
    target: Option<&str>,
    source_ip: Option<&str>,
    detail: serde_json::Value,
    now_ms: i64,
) -> Result<(), IdentityError> {
    sqlx::query(
        "INSERT INTO audit_log (id, factory_id, at, actor, action, target, source_ip, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new_id())
    .bind(factory.map(|f| f.as_str().to_string()))
    .bind(now_ms)
    .bind(actor)
    .bind(action)
    .bind(target.map(str::to_string))
    .bind(source_ip.map(str::to_string))
    .bind(detail.to_string())
    .execute(exec)
    .await?;
    Ok(())
}

impl Identity {
    /// A factory's audit log, filtered, newest first.
    pub async fn audit_log(&self, factory: &FactoryId, query: &AuditQuery) -> Result<Page<AuditEntry>, IdentityError> {
        self.flush_suppressed_logins(factory).await?;
        let limit = i64::from(query.limit.unwrap_or(50).clamp(1, 500));
        let mut sql = String::from(
            "SELECT id, factory_id, at, actor, action, target, source_ip, detail FROM audit_log WHERE factory_id = ?",
        );
        let mut binds: Vec<Bind> = vec![Bind::Text(factory.as_str().to_string())];
        if let Some(action) = &query.action {
            sql.push_str(" AND action = ?");
            binds.push(Bind::Text(action.clone()));
        }
        if let Some(actor) = &query.actor {
            sql.push_str(" AND actor = ?");
            binds.push(Bind::Text(actor.clone()));
        }
        if let Some(target) = &query.target {
            sql.push_str(" AND target = ?");
            binds.push(Bind::Text(target.clone()));
        }
        if let Some(from) = &query.from {
            let ms = factoryops_types::parse_rfc3339_ms(from)
                .ok_or_else(|| IdentityError::invalid("from", "must be an RFC 3339 time"))?;
            sql.push_str(" AND at >= ?");
            binds.push(Bind::Int(ms));
        }
        if let Some(to) = &query.to {
            let ms = factoryops_types::parse_rfc3339_ms(to)
                .ok_or_else(|| IdentityError::invalid("to", "must be an RFC 3339 time"))?;
            sql.push_str(" AND at < ?");
            binds.push(Bind::Int(ms));
        }
        if let Some(cursor) = &query.cursor {
            sql.push_str(" AND id < ?");
            binds.push(Bind::Text(cursor.clone()));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        binds.push(Bind::Int(limit + 1));
        // Only fixed clauses and placeholders are appended above; values are bound.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for bind in binds {
            q = match bind {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        let mut items = rows
            .iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    factory_id: row.try_get("factory_id")?,
                    at: format_rfc3339_ms(row.try_get("at")?),
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    source_ip: row.try_get("source_ip")?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let next_cursor = page_cursor(&mut items, limit, |e| e.id.clone());
        Ok(Page { items, next_cursor })
    }
}

pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// Trims the look-ahead row and returns the cursor for the next page.
pub(crate) fn page_cursor<T>(items: &mut Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() > limit {
        items.truncate(limit);
        items.last().map(id)
    } else {
        None
    }
}
