//! The routes' side of jobs: submit, read, cancel and retry, always within one factory.

use std::sync::Arc;

use factoryops_db::DbError;
use factoryops_db::jobs::{CancelOutcome, Job, JobQueue, NewJob};
use factoryops_types::{Clock, FactoryId, ser_opt_time, ser_time};
use serde::Serialize;
use tokio::sync::watch;

/// Wakes the runtime's claim loops when a job is submitted in this process (other
/// processes' jobs are found by polling).
#[derive(Debug, Clone)]
pub struct Wake(Arc<watch::Sender<u64>>);

impl Default for Wake {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl Wake {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Options of a submission.
#[derive(Debug, Clone)]
pub struct Submit {
    pub max_attempts: i64,
    /// The same key again returns the first job (a retried POST creates nothing new).
    pub idempotency_key: Option<String>,
}

impl Default for Submit {
    fn default() -> Self {
        Self { max_attempts: 3, idempotency_key: None }
    }
}

/// A job as the API shows it (the job part of datasets, runs and reports).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    pub id: String,
    pub kind: String,
    /// queued, running, succeeded, failed, cancelled.
    pub status: &'static str,
    /// 0.0–1.0.
    pub progress: f64,
    pub attempts: i64,
    pub max_attempts: i64,
    /// Why the last attempt failed (the reason of a `failed` job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Asked to stop; it ends `cancelled` at its next checkpoint.
    pub cancel_requested: bool,
    #[serde(serialize_with = "ser_time")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_opt_time")]
    pub started_at: Option<i64>,
    #[serde(serialize_with = "ser_opt_time")]
    pub finished_at: Option<i64>,
    /// The handler's newest log lines.
    pub logs: Vec<String>,
    #[serde(skip)]
    pub payload: serde_json::Value,
    #[serde(skip)]
    pub output: Option<serde_json::Value>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        Self {
            status: job.status.as_str(),
            error: if job.status == factoryops_db::jobs::JobStatus::Succeeded { None } else { job.last_error },
            id: job.id,
            kind: job.kind,
            progress: job.progress,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            cancel_requested: job.cancel_requested,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            logs: job.log,
            payload: job.payload,
            output: job.output,
        }
    }
}

// A retry answers once per request: boxing the view would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RetryOutcome {
    Queued(JobView),
    /// Only failed and cancelled jobs are retried; it is in this status.
    NotRetryable(&'static str),
    NotFound,
}

/// Submit and follow jobs, scoped by factory: another factory's job is never found.
#[derive(Clone)]
pub struct Jobs {
    queue: JobQueue,
    clock: Arc<dyn Clock>,
    wake: Wake,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

impl Jobs {
    pub fn new(queue: JobQueue, clock: Arc<dyn Clock>, wake: Wake) -> Self {
        Self { queue, clock, wake }
    }

    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    /// Queues a job of `kind` for `factory` and wakes this process's runtime.
    pub async fn submit(
        &self,
        factory: &FactoryId,
        kind: &str,
        payload: serde_json::Value,
        options: Submit,
    ) -> Result<JobView, DbError> {
        let now = self.clock.now_ms();
        let job = NewJob {
            factory_id: Some(factory.clone()),
            kind: kind.to_string(),
            payload,
            run_after: now,
            max_attempts: options.max_attempts,
            idempotency_key: options.idempotency_key.map(|k| format!("{}:{kind}:{k}", factory.as_str())),
        };
        let id = self.queue.enqueue(job, now).await?;
        self.wake.notify();
        self.queue
            .get_in(factory, &id)
            .await?
            .map(JobView::from)
            .ok_or_else(|| DbError::Malformed(format!("job {id} vanished after enqueue")))
    }

    pub async fn get(&self, factory: &FactoryId, id: &str) -> Result<Option<JobView>, DbError> {
        Ok(self.queue.get_in(factory, id).await?.map(JobView::from))
    }

    /// One factory's jobs of one kind, newest first.
    pub async fn list(&self, factory: &FactoryId, kind: &str, limit: i64) -> Result<Vec<JobView>, DbError> {
        Ok(self.queue.list_in(factory, kind, limit).await?.into_iter().map(JobView::from).collect())
    }

    /// Cancels a queued job at once or asks a running one to stop; `None` when the
    /// factory has no such job.
    pub async fn cancel(&self, factory: &FactoryId, id: &str) -> Result<Option<CancelOutcome>, DbError> {
        if self.queue.get_in(factory, id).await?.is_none() {
            return Ok(None);
        }
        let outcome = self.queue.cancel(id, self.clock.now_ms()).await?;
        if outcome == Some(CancelOutcome::Requested) {
            self.wake.notify();
        }
        Ok(outcome)
    }

    /// Queues a failed or cancelled job again with its payload and a fresh attempt budget.
    pub async fn retry(&self, factory: &FactoryId, id: &str) -> Result<RetryOutcome, DbError> {
        let Some(job) = self.queue.get_in(factory, id).await? else { return Ok(RetryOutcome::NotFound) };
        if !self.queue.retry(id, self.clock.now_ms()).await? {
            return Ok(RetryOutcome::NotRetryable(job.status.as_str()));
        }
        self.wake.notify();
        match self.queue.get_in(factory, id).await? {
            Some(job) => Ok(RetryOutcome::Queued(job.into())),
            None => Ok(RetryOutcome::NotFound),
        }
    }
}
