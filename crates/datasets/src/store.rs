//! Dataset records (I/O) on SQLite and MySQL through `factoryops-db`: the job state of
//! an export and, once it succeeded, its manifest. Every function takes the factory scope
//! first; another factory's dataset is simply not found.
//!
//! References: an analytics run or a model version that uses a dataset records it with
//! [`DatasetStore::add_reference`]. [`DatasetStore::expire`] (the explicit retention
//! policy) never removes a referenced dataset, and a file is deleted only when no
//! remaining record names its sha256.

use factoryops_db::{Database, DbError};
use factoryops_types::FactoryId;
use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use crate::export::ExportSummary;
use crate::manifest::Manifest;
use crate::query::DatasetQuery;

/// The tables `datasets` and `dataset_references`.
pub static MIGRATIONS: factoryops_db::Migrations = factoryops_db::Migrations {
    component: "datasets",
    sqlite: sqlx::migrate!("migrations/sqlite"),
    mysql: sqlx::migrate!("migrations/mysql"),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Result<Self, DbError> {
        Ok(match text {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            other => return Err(DbError::Malformed(format!("dataset status {other:?}"))),
        })
    }
}

/// One dataset: the job fields of API.md plus, once succeeded, the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub id: String,
    pub factory_id: FactoryId,
    pub status: Status,
    pub progress: f64,
    pub attempts: i64,
    pub error: Option<String>,
    pub query: DatasetQuery,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// Set when `status` is `succeeded`.
    pub manifest: Option<Manifest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub dataset_id: String,
    pub sha256: Option<String>,
    /// No other record of the factory names this file: the caller deletes the object.
    pub delete_file: bool,
}

#[derive(Clone, Debug)]
pub struct DatasetStore {
    db: Database,
}

const COLUMNS: &str = "dataset_id, factory_id, status, progress, attempts, error, query_json, sha256, row_count, \
     column_count, value_count, byte_count, created_by, created_at, updated_at, finished_at";

fn row_to_dataset(row: &sqlx::any::AnyRow) -> Result<Dataset, DbError> {
    let factory: String = row.try_get("factory_id")?;
    let factory_id = FactoryId::parse(&factory).map_err(|e| DbError::Malformed(format!("factory id: {e}")))?;
    let query: String = row.try_get("query_json")?;
    let query: DatasetQuery =
        serde_json::from_str(&query).map_err(|e| DbError::Malformed(format!("dataset query: {e}")))?;
    let status = Status::parse(&row.try_get::<String, _>("status")?)?;
    let created_by: String = row.try_get("created_by")?;
    let created_at: i64 = row.try_get("created_at")?;
    let sha256: Option<String> = row.try_get("sha256")?;
    let manifest = match (status, sha256) {
        (Status::Succeeded, Some(sha256)) => {
            let summary = ExportSummary {
                rows: row.try_get::<i64, _>("row_count")? as u64,
                columns: row.try_get::<i64, _>("column_count")? as u64,
                values: row.try_get::<i64, _>("value_count")? as u64,
                sha256,
                bytes: row.try_get::<i64, _>("byte_count")? as u64,
            };
            Some(Manifest::new(factory_id.clone(), query.clone(), &summary, created_by.clone(), created_at))
        }
        _ => None,
    };
    Ok(Dataset {
        id: row.try_get("dataset_id")?,
        factory_id,
        status,
        progress: row.try_get("progress")?,
        attempts: row.try_get("attempts")?,
        error: row.try_get("error")?,
        query,
        created_by,
        created_at,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        manifest,
    })
}

impl DatasetStore {
    pub fn new(db: Database) -> Self {
        DatasetStore { db }
    }

    /// Records a new dataset as `queued`.
    pub async fn create(
        &self,
        factory: &FactoryId,
        id: &str,
        query: &DatasetQuery,
        created_by: &str,
        now_ms: i64,
    ) -> Result<Dataset, DbError> {
        let text = serde_json::to_string(query).map_err(|e| DbError::Malformed(e.to_string()))?;
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO datasets (factory_id, dataset_id, status, progress, attempts, query_json, created_by, created_at, updated_at) \
             VALUES (?, ?, 'queued', 0.0, 0, ?, ?, ?, ?)",
        )
        .bind(factory.as_str())
        .bind(id)
        .bind(&text)
        .bind(created_by)
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get(factory, id).await?.ok_or_else(|| DbError::Malformed("dataset vanished after insert".into()))
    }

    pub async fn get(&self, factory: &FactoryId, id: &str) -> Result<Option<Dataset>, DbError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE factory_id = ? AND dataset_id = ?"
        )))
        .bind(factory.as_str())
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(row_to_dataset).transpose()
    }

    /// The factory's datasets, newest first, at most `limit`.
    pub async fn list(&self, factory: &FactoryId, limit: i64) -> Result<Vec<Dataset>, DbError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM datasets WHERE factory_id = ? ORDER BY created_at DESC, dataset_id DESC LIMIT ?"
        )))
        .bind(factory.as_str())
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(row_to_dataset).collect()
    }

    /// An attempt starts: `running`, one more attempt, progress 0, no error.
    pub async fn start_attempt(&self, factory: &FactoryId, id: &str, now_ms: i64) -> Result<bool, DbError> {
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "UPDATE datasets SET status = 'running', attempts = attempts + 1, progress = 0.0, error = NULL, updated_at = ? \
             WHERE factory_id = ? AND dataset_id = ? AND status IN ('queued', 'running', 'failed')",
        )
        .bind(now_ms).bind(factory.as_str()).bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
        tx.commit().await?;
        Ok(done)
    }

    pub async fn set_progress(
        &self,
        factory: &FactoryId,
        id: &str,
        progress: f64,
        now_ms: i64,
    ) -> Result<bool, DbError> {
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "UPDATE datasets SET progress = ?, updated_at = ? WHERE factory_id = ? AND dataset_id = ? AND status = 'running'",
        )
        .bind(progress.clamp(0.0, 1.0)).bind(now_ms).bind(factory.as_str()).bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
        tx.commit().await?;
        Ok(done)
    }

    /// The export finished and its file is stored: the manifest's figures are recorded.
    pub async fn succeed(
        &self,
        factory: &FactoryId,
        id: &str,
        summary: &ExportSummary,
        now_ms: i64,
    ) -> Result<bool, DbError> {
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "UPDATE datasets SET status = 'succeeded', progress = 1.0, error = NULL, sha256 = ?, row_count = ?, \
             column_count = ?, value_count = ?, byte_count = ?, updated_at = ?, finished_at = ? \
             WHERE factory_id = ? AND dataset_id = ? AND status = 'running'",
        )
        .bind(summary.sha256.clone())
        .bind(summary.rows as i64)
        .bind(summary.columns as i64)
        .bind(summary.values as i64)
        .bind(summary.bytes as i64)
        .bind(now_ms)
        .bind(now_ms)
        .bind(factory.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(done)
    }

    /// The attempt failed. `retrying`: the job runtime tries again (status back to
    /// `queued`, the error kept for the client); otherwise the dataset is `failed`.
    pub async fn fail(
        &self,
        factory: &FactoryId,
        id: &str,
        error: &str,
        retrying: bool,
        now_ms: i64,
    ) -> Result<bool, DbError> {
        let status = if retrying { "queued" } else { "failed" };
        let mut tx = self.db.begin_write().await?;
        let done = sqlx::query(
            "UPDATE datasets SET status = ?, error = ?, updated_at = ?, finished_at = ? \
             WHERE factory_id = ? AND dataset_id = ? AND status IN ('queued', 'running')",
        )
        .bind(status)
        .bind(error.to_owned())
        .bind(now_ms)
        .bind((!retrying).then_some(now_ms))
        .bind(factory.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(done)
    }

    /// Records that a run or model (`kind`, `ref_id`) uses the dataset; idempotent.
    pub async fn add_reference(
        &self,
        factory: &FactoryId,
        dataset_id: &str,
        kind: &str,
        ref_id: &str,
        now_ms: i64,
    ) -> Result<(), DbError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(AssertSqlSafe(format!(
            "{} INTO dataset_references (factory_id, dataset_id, ref_kind, ref_id, created_at) VALUES (?, ?, ?, ?, ?)",
            self.db.dialect().insert_ignore()
        )))
        .bind(factory.as_str())
        .bind(dataset_id)
        .bind(kind)
        .bind(ref_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub async fn remove_reference(
        &self,
        factory: &FactoryId,
        dataset_id: &str,
        kind: &str,
        ref_id: &str,
    ) -> Result<(), DbError> {
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "DELETE FROM dataset_references WHERE factory_id = ? AND dataset_id = ? AND ref_kind = ? AND ref_id = ?",
        )
        .bind(factory.as_str())
        .bind(dataset_id)
        .bind(kind)
        .bind(ref_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// `kind:ref_id` of everything that uses the dataset.
    pub async fn referenced_by(&self, factory: &FactoryId, dataset_id: &str) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query(
            "SELECT ref_kind, ref_id FROM dataset_references WHERE factory_id = ? AND dataset_id = ? ORDER BY ref_kind, ref_id",
        )
        .bind(factory.as_str())
        .bind(dataset_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(format!("{}:{}", r.try_get::<String, _>("ref_kind")?, r.try_get::<String, _>("ref_id")?)))
            .collect()
    }

    /// The retention policy: removes the factory's finished datasets created before
    /// `created_before` that nothing references, and says which files are no longer
    /// named by any record. Running or queued datasets are never touched.
    pub async fn expire(&self, factory: &FactoryId, created_before: i64) -> Result<Vec<Expired>, DbError> {
        let mut tx = self.db.begin_write().await?;
        let lock = self.db.dialect().lock_rows();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.dataset_id, d.sha256 FROM datasets d WHERE d.factory_id = ? AND d.created_at < ? \
             AND d.status IN ('succeeded', 'failed', 'cancelled') \
             AND NOT EXISTS (SELECT 1 FROM dataset_references r WHERE r.factory_id = d.factory_id AND r.dataset_id = d.dataset_id) \
             ORDER BY d.dataset_id{lock}"
        )))
        .bind(factory.as_str())
        .bind(created_before)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("dataset_id")?;
            let sha256: Option<String> = r.try_get("sha256")?;
            sqlx::query("DELETE FROM datasets WHERE factory_id = ? AND dataset_id = ?")
                .bind(factory.as_str())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            out.push(Expired { dataset_id: id, sha256, delete_file: false });
        }
        for e in &mut out {
            if let Some(sha) = &e.sha256 {
                let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM datasets WHERE factory_id = ? AND sha256 = ?")
                    .bind(factory.as_str())
                    .bind(sha)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                e.delete_file = left == 0;
            }
        }
        // Two expired records of the same file: only the first deletes it.
        let mut seen = std::collections::HashSet::new();
        for e in &mut out {
            if let Some(sha) = &e.sha256
                && !seen.insert(sha.clone())
            {
                e.delete_file = false;
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}
