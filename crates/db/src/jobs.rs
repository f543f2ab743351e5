//! The durable job queue. Jobs live in the `jobs` table with status, attempts, a lease
//! and `run_after`; a worker claims a job by taking its lease, and a crashed worker's
//! lease simply expires so another worker picks the job up. Claiming is a conditional
//! UPDATE checked by its row count, which is atomic on both backends without
//! `SKIP LOCKED`.

use factoryops_types::{FactoryId, new_id};
use sqlx::{AssertSqlSafe, Row};

use crate::{Database, DbError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    /// Gave up after `max_attempts`; kept for inspection and manual retry.
    Dead,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
        }
    }

    fn parse(text: &str) -> Result<Self, DbError> {
        Ok(match text {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "dead" => JobStatus::Dead,
            other => return Err(DbError::Malformed(format!("job status {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub factory_id: Option<FactoryId>,
    pub kind: String,
    pub payload: serde_json::Value,
    pub status: JobStatus,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_after: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub last_error: Option<String>,
}

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub factory_id: Option<FactoryId>,
    pub kind: String,
    pub payload: serde_json::Value,
    pub run_after: i64,
    pub max_attempts: i64,
    /// A second enqueue with the same key returns the first job instead of a new one.
    pub idempotency_key: Option<String>,
}

#[derive(Clone, Debug)]
pub struct JobQueue {
    db: Database,
}

const COLUMNS: &str =
    "id, factory_id, kind, payload, status, attempts, max_attempts, run_after, lease_owner, lease_until, last_error";

impl JobQueue {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Adds a job; returns its id (the existing one when the idempotency key was seen before).
    pub async fn enqueue(&self, job: NewJob, now_ms: i64) -> Result<String, DbError> {
        if let Some(key) = &job.idempotency_key
            && let Some(id) = self.id_for_key(key).await?
        {
            return Ok(id);
        }
        let id = new_id();
        let result = sqlx::query(
            "INSERT INTO jobs (id, factory_id, kind, payload, status, attempts, max_attempts, run_after, idempotency_key, created_at, updated_at) \
             VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(job.factory_id.as_ref().map(|f| f.as_str().to_string()))
        .bind(&job.kind)
        .bind(job.payload.to_string())
        .bind(job.max_attempts.max(1))
        .bind(job.run_after)
        .bind(job.idempotency_key.clone())
        .bind(now_ms)
        .bind(now_ms)
        .execute(self.db.pool())
        .await
        .map_err(DbError::from);
        match result {
            Ok(_) => Ok(id),
            Err(e) if e.is_unique_violation() => match &job.idempotency_key {
                Some(key) => self.id_for_key(key).await?.ok_or(e),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn id_for_key(&self, key: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT id FROM jobs WHERE idempotency_key = ?")
            .bind(key)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Takes the lease on the next due job of one of `kinds`: a queued job whose
    /// `run_after` has passed, or a running job whose lease expired (its worker died).
    pub async fn claim(&self, kinds: &[&str], owner: &str, lease_ms: i64, now_ms: i64) -> Result<Option<Job>, DbError> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let placeholders = vec!["?"; kinds.len()].join(", ");
        let due = "((status = 'queued' AND run_after <= ?) OR (status = 'running' AND lease_until < ?))";
        let select =
            format!("SELECT id FROM jobs WHERE kind IN ({placeholders}) AND {due} ORDER BY run_after, id LIMIT 16");
        // Only placeholders are interpolated; values are bound.
        let mut query = sqlx::query(AssertSqlSafe(select));
        for kind in kinds {
            query = query.bind(*kind);
        }
        let candidates = query.bind(now_ms).bind(now_ms).fetch_all(self.db.pool()).await?;
        let update = format!(
            "UPDATE jobs SET status = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ? \
             WHERE id = ? AND {due}"
        );
        for row in candidates {
            let id: String = row.try_get(0)?;
            let taken = sqlx::query(AssertSqlSafe(update.clone()))
                .bind(owner)
                .bind(now_ms + lease_ms)
                .bind(now_ms)
                .bind(&id)
                .bind(now_ms)
                .bind(now_ms)
                .execute(self.db.pool())
                .await?
                .rows_affected()
                == 1;
            if taken {
                return self.get(&id).await;
            }
        }
        Ok(None)
    }

    /// Extends a lease the caller still holds; `false` when it was lost.
    pub async fn heartbeat(&self, id: &str, owner: &str, lease_ms: i64, now_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = ?, updated_at = ? WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a job the caller holds as done; `false` when its lease had been lost.
    pub async fn complete(&self, id: &str, owner: &str, now_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'succeeded', lease_owner = NULL, lease_until = NULL, last_error = NULL, updated_at = ? \
             WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt: back to the queue at `retry_at`, or dead after `max_attempts`.
    pub async fn fail(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        retry_at: i64,
        now_ms: i64,
    ) -> Result<Option<JobStatus>, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
             run_after = ?, lease_owner = NULL, lease_until = NULL, last_error = ?, updated_at = ? \
             WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(retry_at)
        .bind(error)
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(self.get(id).await?.map(|j| j.status))
    }

    /// Puts a dead job back in the queue with a fresh attempt budget.
    pub async fn retry_dead(&self, id: &str, now_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_after = ?, updated_at = ? WHERE id = ? AND status = 'dead'",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, DbError> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM jobs WHERE id = ?")))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }
}

fn job_from_row(row: &sqlx::any::AnyRow) -> Result<Job, DbError> {
    let factory: Option<String> = row.try_get("factory_id")?;
    let payload: String = row.try_get("payload")?;
    let status: String = row.try_get("status")?;
    Ok(Job {
        id: row.try_get("id")?,
        factory_id: factory
            .map(FactoryId::parse)
            .transpose()
            .map_err(|e| DbError::Malformed(format!("job factory_id: {e}")))?,
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload).map_err(|e| DbError::Malformed(format!("job payload: {e}")))?,
        status: JobStatus::parse(&status)?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_after: row.try_get("run_after")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        last_error: row.try_get("last_error")?,
    })
}
