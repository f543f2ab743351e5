//! The durable job queue. Jobs live in the `jobs` table with status, attempts, a lease
//! and `run_after`; a worker claims a job by taking its lease, and a crashed worker's
//! lease simply expires so another worker picks the job up. Claiming is a conditional
//! UPDATE checked by its row count, which is atomic on both backends without
//! `SKIP LOCKED`.
//!
//! Statuses are the API's: `queued → running → succeeded | failed | cancelled`. A running
//! job whose lease expired is claimed again while it has attempts left; [`JobQueue::sweep`]
//! ends the others (out of attempts → `failed` with the reason; cancel requested →
//! `cancelled`), so no job stays `running` after its worker died. The runtime that drives
//! handlers is `factoryops-jobs`.

use factoryops_types::{FactoryId, new_id};
use sqlx::{AssertSqlSafe, Row};

use crate::{Database, DbError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    /// Gave up (a permanent error, or out of attempts); kept for inspection and manual retry.
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }

    fn parse(text: &str) -> Result<Self, DbError> {
        Ok(match text {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            other => return Err(DbError::Malformed(format!("job status {other:?}"))),
        })
    }
}

/// Lines kept in a job's log (the newest), and the longest line.
pub const LOG_LINES: usize = 50;
pub const LOG_LINE_CHARS: usize = 500;

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
    /// The last attempt's error (the reason of a `failed` job).
    pub last_error: Option<String>,
    /// 0.0–1.0.
    pub progress: f64,
    pub cancel_requested: bool,
    pub created_at: i64,
    /// When the current (or last) attempt started.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// What the handler returned on success.
    pub output: Option<serde_json::Value>,
    /// The newest log lines of the handler (at most [`LOG_LINES`]).
    pub log: Vec<String>,
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

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// `false`: the lease was lost (expired and taken, or the job ended); stop working on it.
    pub held: bool,
    pub cancel_requested: bool,
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued and is now cancelled.
    Cancelled,
    /// It is running; its handler is told and stops at its next checkpoint.
    Requested,
    /// It had already ended with this status.
    AlreadyFinished(JobStatus),
}

/// What the sweep ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    pub failed: Vec<String>,
    pub cancelled: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct JobQueue {
    db: Database,
}

const COLUMNS: &str = "id, factory_id, kind, payload, status, attempts, max_attempts, run_after, lease_owner, \
     lease_until, last_error, progress_ppm, cancel_requested, created_at, started_at, finished_at, output, log";

/// The reason a job got when its last worker died with no attempts left.
pub const LEASE_EXPIRED_REASON: &str =
    "its worker stopped (crash or kill) during the last attempt and no attempts are left";

fn ppm(progress: f64) -> i64 {
    // Clamped, so a handler's rounding never shows 101 % or a negative value.
    (progress.clamp(0.0, 1.0) * 1_000_000.0).round() as i64
}

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
    /// `run_after` has passed, or a running job whose lease expired (its worker died)
    /// with attempts left and no cancel requested (those are for [`JobQueue::sweep`]).
    pub async fn claim(&self, kinds: &[&str], owner: &str, lease_ms: i64, now_ms: i64) -> Result<Option<Job>, DbError> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let placeholders = vec!["?"; kinds.len()].join(", ");
        let due = "((status = 'queued' AND run_after <= ?) OR \
                   (status = 'running' AND lease_until < ? AND attempts < max_attempts AND cancel_requested = 0))";
        let select =
            format!("SELECT id FROM jobs WHERE kind IN ({placeholders}) AND {due} ORDER BY run_after, id LIMIT 16");
        // Only placeholders are interpolated; values are bound.
        let mut query = sqlx::query(AssertSqlSafe(select));
        for kind in kinds {
            query = query.bind(*kind);
        }
        let candidates = query.bind(now_ms).bind(now_ms).fetch_all(self.db.pool()).await?;
        let update = format!(
            "UPDATE jobs SET status = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1, \
             started_at = ?, finished_at = NULL, updated_at = ? WHERE id = ? AND {due}"
        );
        for row in candidates {
            let id: String = row.try_get(0)?;
            let taken = sqlx::query(AssertSqlSafe(update.clone()))
                .bind(owner)
                .bind(now_ms + lease_ms)
                .bind(now_ms)
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

    /// Ends running jobs whose worker died and that must not run again: out of attempts
    /// → `failed` with [`LEASE_EXPIRED_REASON`]; cancel requested → `cancelled`.
    pub async fn sweep(&self, kinds: &[&str], now_ms: i64) -> Result<Sweep, DbError> {
        let mut sweep = Sweep::default();
        if kinds.is_empty() {
            return Ok(sweep);
        }
        let placeholders = vec!["?"; kinds.len()].join(", ");
        let select = format!(
            "SELECT id, cancel_requested FROM jobs WHERE kind IN ({placeholders}) AND status = 'running' \
             AND lease_until < ? AND (attempts >= max_attempts OR cancel_requested = 1)"
        );
        let mut query = sqlx::query(AssertSqlSafe(select));
        for kind in kinds {
            query = query.bind(*kind);
        }
        for row in query.bind(now_ms).fetch_all(self.db.pool()).await? {
            let id: String = row.try_get(0)?;
            let cancel: i64 = row.try_get(1)?;
            let (status, error) =
                if cancel == 1 { ("cancelled", None) } else { ("failed", Some(LEASE_EXPIRED_REASON)) };
            let done = sqlx::query(
                "UPDATE jobs SET status = ?, last_error = COALESCE(?, last_error), lease_owner = NULL, lease_until = NULL, \
                 finished_at = ?, updated_at = ? WHERE id = ? AND status = 'running' AND lease_until < ?",
            )
            .bind(status)
            .bind(error)
            .bind(now_ms)
            .bind(now_ms)
            .bind(&id)
            .bind(now_ms)
            .execute(self.db.pool())
            .await?;
            if done.rows_affected() == 1 {
                if cancel == 1 { sweep.cancelled.push(id) } else { sweep.failed.push(id) }
            }
        }
        Ok(sweep)
    }

    /// Extends a lease the caller still holds and reports whether a cancel was requested.
    pub async fn heartbeat(&self, id: &str, owner: &str, lease_ms: i64, now_ms: i64) -> Result<Heartbeat, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = ?, updated_at = ? WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() != 1 {
            return Ok(Heartbeat { held: false, cancel_requested: false });
        }
        let row =
            sqlx::query("SELECT cancel_requested FROM jobs WHERE id = ?").bind(id).fetch_one(self.db.pool()).await?;
        Ok(Heartbeat { held: true, cancel_requested: row.try_get::<i64, _>(0)? == 1 })
    }

    /// Records progress (0.0–1.0) and the handler's newest log lines for a job the caller holds.
    pub async fn report(
        &self,
        id: &str,
        owner: &str,
        progress: f64,
        log: &[String],
        now_ms: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET progress_ppm = ?, log = ?, updated_at = ? WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(ppm(progress))
        .bind(encode_log(log))
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a job the caller holds as done; `false` when its lease had been lost.
    pub async fn complete(
        &self,
        id: &str,
        owner: &str,
        output: Option<&serde_json::Value>,
        now_ms: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'succeeded', progress_ppm = 1000000, output = ?, lease_owner = NULL, lease_until = NULL, \
             last_error = NULL, finished_at = ?, updated_at = ? WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(output.map(serde_json::Value::to_string))
        .bind(now_ms)
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt: back to the queue at `retry_at` while attempts are left,
    /// or `failed` (at once when `retry_at` is `None`: a permanent error).
    pub async fn fail(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        retry_at: Option<i64>,
        now_ms: i64,
    ) -> Result<Option<JobStatus>, DbError> {
        let permanent = i64::from(retry_at.is_none());
        let done = sqlx::query(
            "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts OR ? = 1 THEN 'failed' ELSE 'queued' END, \
             finished_at = CASE WHEN attempts >= max_attempts OR ? = 1 THEN ? ELSE NULL END, \
             run_after = ?, lease_owner = NULL, lease_until = NULL, last_error = ?, updated_at = ? \
             WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(permanent)
        .bind(permanent)
        .bind(now_ms)
        .bind(retry_at.unwrap_or(now_ms))
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

    /// Gives a job back without counting the attempt (shutdown: it runs again soon, here
    /// or on another worker).
    pub async fn release(&self, id: &str, owner: &str, now_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
             run_after = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? \
             WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A running job the caller holds stopped because it was cancelled.
    pub async fn mark_cancelled(&self, id: &str, owner: &str, now_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', lease_owner = NULL, lease_until = NULL, finished_at = ?, updated_at = ? \
             WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancels a queued job at once, or asks a running one to stop.
    pub async fn cancel(&self, id: &str, now_ms: i64) -> Result<Option<CancelOutcome>, DbError> {
        let queued = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = ?, updated_at = ? \
             WHERE id = ? AND status = 'queued'",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        if queued.rows_affected() == 1 {
            return Ok(Some(CancelOutcome::Cancelled));
        }
        let running =
            sqlx::query("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND status = 'running'")
                .bind(now_ms)
                .bind(id)
                .execute(self.db.pool())
                .await?;
        if running.rows_affected() == 1 {
            return Ok(Some(CancelOutcome::Requested));
        }
        Ok(self.get(id).await?.map(|job| CancelOutcome::AlreadyFinished(job.status)))
    }

    /// Puts a failed or cancelled job back in the queue with a fresh attempt budget and
    /// the same payload (and so the same dataset); `false` when it is in another status.
    pub async fn retry(&self, id: &str, now_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, cancel_requested = 0, progress_ppm = 0, run_after = ?, \
             started_at = NULL, finished_at = NULL, output = NULL, updated_at = ? \
             WHERE id = ? AND status IN ('failed', 'cancelled')",
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

    /// A job of one factory: another factory's job is `None`, like a missing one.
    pub async fn get_in(&self, factory: &FactoryId, id: &str) -> Result<Option<Job>, DbError> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM jobs WHERE id = ? AND factory_id = ?")))
            .bind(id)
            .bind(factory.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    /// One factory's jobs of one kind, newest first.
    pub async fn list_in(&self, factory: &FactoryId, kind: &str, limit: i64) -> Result<Vec<Job>, DbError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE factory_id = ? AND kind = ? ORDER BY created_at DESC, id DESC LIMIT ?"
        )))
        .bind(factory.as_str())
        .bind(kind)
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(job_from_row).collect()
    }
}

fn encode_log(lines: &[String]) -> String {
    let start = lines.len().saturating_sub(LOG_LINES);
    let kept: Vec<String> = lines[start..].iter().map(|l| l.chars().take(LOG_LINE_CHARS).collect()).collect();
    serde_json::Value::from(kept).to_string()
}

fn job_from_row(row: &sqlx::any::AnyRow) -> Result<Job, DbError> {
    let factory: Option<String> = row.try_get("factory_id")?;
    let payload: String = row.try_get("payload")?;
    let status: String = row.try_get("status")?;
    let output: Option<String> = row.try_get("output")?;
    let log: Option<String> = row.try_get("log")?;
    let malformed = |what: &str, e: serde_json::Error| DbError::Malformed(format!("job {what}: {e}"));
    Ok(Job {
        id: row.try_get("id")?,
        factory_id: factory
            .map(FactoryId::parse)
            .transpose()
            .map_err(|e| DbError::Malformed(format!("job factory_id: {e}")))?,
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload).map_err(|e| malformed("payload", e))?,
        status: JobStatus::parse(&status)?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_after: row.try_get("run_after")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        last_error: row.try_get("last_error")?,
        progress: row.try_get::<i64, _>("progress_ppm")? as f64 / 1_000_000.0,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? == 1,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        output: output.map(|o| serde_json::from_str(&o)).transpose().map_err(|e| malformed("output", e))?,
        log: log.map(|l| serde_json::from_str(&l)).transpose().map_err(|e| malformed("log", e))?.unwrap_or_default(),
    })
}
