//! Dashboards on SQLite or MySQL. Widgets are stored as one JSON document per dashboard:
//! they are always read and written whole, and validated before they get here.

use factoryops_db::{Database, DbError};
use factoryops_types::{FactoryId, new_id};
use sqlx::{AssertSqlSafe, Row};

use crate::{Dashboard, DashboardSpec, Widget};

/// At most this many dashboards per owner: a runaway client must not fill the table.
pub const MAX_PER_OWNER: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(DbError::Sqlx(e))
    }
}

const COLUMNS: &str = "dashboard_id, owner, name, shared, is_default, widgets, created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Dashboard, StoreError> {
    let widgets: String = row.try_get("widgets")?;
    let widgets: Vec<Widget> = serde_json::from_str(&widgets)
        .map_err(|e| StoreError::Db(DbError::Malformed(format!("dashboard widgets: {e}"))))?;
    Ok(Dashboard {
        id: row.try_get("dashboard_id")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        shared: row.try_get::<i64, _>("shared")? != 0,
        default: row.try_get::<i64, _>("is_default")? != 0,
        widgets,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn widgets_json(spec: &DashboardSpec) -> String {
    // Serialising plain data cannot fail.
    serde_json::to_string(&spec.widgets).unwrap_or_else(|_| "[]".into())
}

#[derive(Clone, Debug)]
pub struct DashboardStore {
    db: Database,
}

impl DashboardStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The dashboards `user` may read (their own and the shared ones; shared only for
    /// `None`, an API key), by name.
    pub async fn list_visible(&self, factory: &FactoryId, user: Option<&str>) -> Result<Vec<Dashboard>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM dashboards WHERE factory_id = ? AND (shared = 1 OR owner = ?) \
             ORDER BY name, dashboard_id"
        )))
        .bind(factory.as_str())
        .bind(user.unwrap_or(""))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Any dashboard of the factory; the caller applies the access rules.
    pub async fn get(&self, factory: &FactoryId, id: &str) -> Result<Option<Dashboard>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM dashboards WHERE factory_id = ? AND dashboard_id = ?"
        )))
        .bind(factory.as_str())
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The factory's default dashboard, if one is set.
    pub async fn factory_default(&self, factory: &FactoryId) -> Result<Option<Dashboard>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM dashboards WHERE factory_id = ? AND is_default = 1 ORDER BY dashboard_id"
        )))
        .bind(factory.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Creates a dashboard owned by `owner`. A new default displaces the old one.
    pub async fn create(
        &self,
        factory: &FactoryId,
        owner: &str,
        spec: &DashboardSpec,
        now_ms: i64,
    ) -> Result<Dashboard, StoreError> {
        let id = new_id();
        let default = spec.default.unwrap_or(false);
        let mut tx = self.db.begin_write().await?;
        let lock = self.db.dialect().lock_rows();
        let count: i64 = sqlx::query(AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM dashboards WHERE factory_id = ? AND owner = ?{lock}"
        )))
        .bind(factory.as_str())
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if count >= MAX_PER_OWNER {
            return Err(StoreError::Conflict(format!("a user has at most {MAX_PER_OWNER} dashboards")));
        }
        if default {
            clear_default(&mut tx, factory).await?;
        }
        sqlx::query(
            "INSERT INTO dashboards (factory_id, dashboard_id, owner, name, shared, is_default, widgets, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(factory.as_str())
        .bind(&id)
        .bind(owner)
        .bind(spec.name.trim())
        .bind(i64::from(spec.shared))
        .bind(i64::from(default))
        .bind(widgets_json(spec))
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get(factory, &id).await?.ok_or(StoreError::NotFound)
    }

    /// Replaces a dashboard's name, sharing, default flag and widgets (the caller checked
    /// the access rules). An absent `default` keeps the stored one.
    pub async fn replace(
        &self,
        factory: &FactoryId,
        id: &str,
        spec: &DashboardSpec,
        now_ms: i64,
    ) -> Result<Dashboard, StoreError> {
        let mut tx = self.db.begin_write().await?;
        if spec.default == Some(true) {
            clear_default(&mut tx, factory).await?;
        }
        let default = match spec.default {
            Some(d) => i64::from(d),
            None => -1,
        };
        // `-1` keeps the stored flag: one statement, no read-modify-write race.
        let done = sqlx::query(
            "UPDATE dashboards SET name = ?, shared = ?, \
             is_default = CASE WHEN ? < 0 THEN is_default ELSE ? END, widgets = ?, updated_at = ? \
             WHERE factory_id = ? AND dashboard_id = ?",
        )
        .bind(spec.name.trim())
        .bind(i64::from(spec.shared))
        .bind(default)
        .bind(default)
        .bind(widgets_json(spec))
        .bind(now_ms)
        .bind(factory.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        self.get(factory, id).await?.ok_or(StoreError::NotFound)
    }

    /// Deletes a dashboard and the preferences that pointed at it.
    pub async fn delete(&self, factory: &FactoryId, id: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query("DELETE FROM dashboards WHERE factory_id = ? AND dashboard_id = ?")
            .bind(factory.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM dashboard_preferences WHERE factory_id = ? AND dashboard_id = ?")
            .bind(factory.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user's preferred dashboard id, if set.
    pub async fn preference(&self, factory: &FactoryId, user: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT dashboard_id FROM dashboard_preferences WHERE factory_id = ? AND user_id = ?")
            .bind(factory.as_str())
            .bind(user)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get("dashboard_id")).transpose()?)
    }

    /// Sets (or with `None` clears) the user's preferred dashboard; the caller checked
    /// that the user can read it.
    pub async fn set_preference(
        &self,
        factory: &FactoryId,
        user: &str,
        dashboard: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM dashboard_preferences WHERE factory_id = ? AND user_id = ?")
            .bind(factory.as_str())
            .bind(user)
            .execute(&mut *tx)
            .await?;
        if let Some(id) = dashboard {
            sqlx::query("INSERT INTO dashboard_preferences (factory_id, user_id, dashboard_id) VALUES (?, ?, ?)")
                .bind(factory.as_str())
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn clear_default(tx: &mut factoryops_db::WriteTx, factory: &FactoryId) -> Result<(), StoreError> {
    sqlx::query("UPDATE dashboards SET is_default = 0 WHERE factory_id = ? AND is_default = 1")
        .bind(factory.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
