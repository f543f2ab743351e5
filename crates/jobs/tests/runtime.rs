//! The job runtime against real databases (SQLite and MariaDB).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use factoryops_db::Database;
use factoryops_jobs::{
    CancelOutcome, Job, JobContext, JobError, JobHandler, JobQueue, JobRuntime, JobView, Jobs, Output, RetryOutcome,
    RuntimeConfig, RuntimeHandle, Submit, Wake,
};
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_types::{FactoryId, ManualClock};
use tokio::sync::Notify;

const START: i64 = 1_800_000_000_000;

async fn open(db: &TestDatabase) -> Database {
    let database = Database::connect(&db.url).await.unwrap();
    database.migrate(&[&factoryops_db::MIGRATIONS]).await.unwrap();
    database
}

fn plant() -> FactoryId {
    FactoryId::parse("plant-1").unwrap()
}

fn config(owner: &str) -> RuntimeConfig {
    RuntimeConfig {
        owner: owner.into(),
        lease: Duration::from_secs(3),
        poll_interval: Duration::from_millis(50),
        backoff_base: Duration::from_secs(10),
        backoff_max: Duration::from_secs(600),
        ..RuntimeConfig::default()
    }
}

struct Fixture {
    jobs: Jobs,
    queue: JobQueue,
    clock: ManualClock,
    wake: Wake,
}

async fn fixture(db: &TestDatabase) -> Fixture {
    let queue = JobQueue::new(open(db).await);
    let clock = ManualClock::new(START);
    let wake = Wake::new();
    let jobs = Jobs::new(queue.clone(), Arc::new(clock.clone()), wake.clone());
    Fixture { jobs, queue, clock, wake }
}

impl Fixture {
    fn runtime(&self, owner: &str, kinds: &[(&str, Arc<dyn JobHandler>)]) -> RuntimeHandle {
        self.runtime_with(config(owner), kinds)
    }

    fn runtime_with(&self, config: RuntimeConfig, kinds: &[(&str, Arc<dyn JobHandler>)]) -> RuntimeHandle {
        let mut runtime = JobRuntime::new(self.queue.clone(), Arc::new(self.clock.clone()), config, self.wake.clone());
        for (kind, handler) in kinds {
            runtime.register(kind, handler.clone());
        }
        runtime.start()
    }

    async fn submit(&self, kind: &str, max_attempts: i64) -> JobView {
        let payload = serde_json::json!({ "dataset_id": "ds-1" });
        self.jobs.submit(&plant(), kind, payload, Submit { max_attempts, idempotency_key: None }).await.unwrap()
    }

    async fn wait(&self, id: &str, what: &str, done: impl Fn(&JobView) -> bool) -> JobView {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let job = self.jobs.get(&plant(), id).await.unwrap().unwrap();
            if done(&job) {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {job:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reports progress, then waits for the test to let it finish.
struct Gated {
    gate: Arc<Notify>,
}

#[async_trait]
impl JobHandler for Gated {
    async fn run(&self, job: &Job, ctx: JobContext) -> Result<Output, JobError> {
        assert_eq!(ctx.factory_id(), Some(&plant()));
        ctx.log(format!("exporting {}", job.payload["dataset_id"]));
        ctx.progress(0.5);
        // CPU work runs on the bounded pool.
        let sum = ctx.cpu(|| (1..=100u64).sum::<u64>()).await?;
        tokio::select! {
            _ = self.gate.notified() => {}
            _ = ctx.stopped() => ctx.checkpoint()?,
        }
        Ok(Some(serde_json::json!({ "rows": sum })))
    }
}

/// Works in steps, checking for cancel between them, until cancelled.
struct Endless;

#[async_trait]
impl JobHandler for Endless {
    async fn run(&self, _job: &Job, ctx: JobContext) -> Result<Output, JobError> {
        loop {
            ctx.checkpoint()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn progress_log_and_output_are_recorded(db: TestDatabase) {
    let f = fixture(&db).await;
    let gate = Arc::new(Notify::new());
    let runtime = f.runtime("w1", &[("export", Arc::new(Gated { gate: gate.clone() }))]);
    let job = f.submit("export", 3).await;
    // The runtime may have claimed it already (a submission wakes it at once).
    assert!(matches!(job.status, "queued" | "running") && job.progress == 0.0, "{job:?}");
    let running = f.wait(&job.id, "progress 0.5", |j| j.status == "running" && j.progress == 0.5).await;
    assert_eq!(running.logs, ["exporting \"ds-1\""]);
    assert_eq!((running.attempts, running.started_at), (1, Some(START)));
    // The JSON shape of the API.
    let json = serde_json::to_value(&running).unwrap();
    assert_eq!(json["status"], "running");
    assert_eq!(json["created_at"], "2027-01-15T08:00:00.000Z");
    assert!(json.get("error").is_none() && json.get("payload").is_none());
    gate.notify_one();
    let done = f.wait(&job.id, "success", |j| j.status == "succeeded").await;
    assert_eq!((done.progress, done.output.clone()), (1.0, Some(serde_json::json!({ "rows": 5050 }))));
    assert_eq!(done.finished_at, Some(START));
    // Another factory never sees it.
    assert!(f.jobs.get(&FactoryId::parse("plant-2").unwrap(), &job.id).await.unwrap().is_none());
    assert!(runtime.shutdown(Duration::from_secs(5)).await);
}

async fn cancel_queued_at_once_and_running_at_a_checkpoint(db: TestDatabase) {
    let f = fixture(&db).await;
    // No runtime yet: the job stays queued and a cancel ends it at once.
    let queued = f.submit("endless", 3).await;
    assert_eq!(f.jobs.cancel(&plant(), &queued.id).await.unwrap(), Some(CancelOutcome::Cancelled));
    assert_eq!(f.jobs.get(&plant(), &queued.id).await.unwrap().unwrap().status, "cancelled");
    assert_eq!(f.jobs.cancel(&FactoryId::parse("plant-2").unwrap(), &queued.id).await.unwrap(), None);

    let runtime = f.runtime("w1", &[("endless", Arc::new(Endless))]);
    let running = f.submit("endless", 3).await;
    f.wait(&running.id, "running", |j| j.status == "running").await;
    assert_eq!(f.jobs.cancel(&plant(), &running.id).await.unwrap(), Some(CancelOutcome::Requested));
    let cancelled = f.wait(&running.id, "cancelled", |j| j.status == "cancelled").await;
    assert!(cancelled.cancel_requested && cancelled.finished_at.is_some());
    // The cancelled queued job never ran.
    assert_eq!(f.jobs.get(&plant(), &queued.id).await.unwrap().unwrap().attempts, 0);
    // A cancelled job can be retried with its payload.
    let RetryOutcome::Queued(again) = f.jobs.retry(&plant(), &running.id).await.unwrap() else { panic!() };
    assert_eq!((again.status, again.payload.clone()), ("queued", serde_json::json!({ "dataset_id": "ds-1" })));
    f.wait(&running.id, "running again", |j| j.status == "running").await;
    f.jobs.cancel(&plant(), &running.id).await.unwrap();
    f.wait(&running.id, "cancelled again", |j| j.status == "cancelled").await;
    assert!(runtime.shutdown(Duration::from_secs(5)).await);
}

/// A cancel reaches a running job in this process at once, not at the next regular beat
/// (a third of the lease: 200 s here, ten times the wait's deadline).
async fn a_cancel_reaches_a_running_job_before_its_next_beat(db: TestDatabase) {
    let f = fixture(&db).await;
    let runtime = f.runtime_with(
        RuntimeConfig { lease: Duration::from_secs(600), ..config("w1") },
        &[("endless", Arc::new(Endless))],
    );
    let running = f.submit("endless", 3).await;
    f.wait(&running.id, "running", |j| j.status == "running").await;
    assert_eq!(f.jobs.cancel(&plant(), &running.id).await.unwrap(), Some(CancelOutcome::Requested));
    f.wait(&running.id, "cancelled", |j| j.status == "cancelled").await;
    assert!(runtime.shutdown(Duration::from_secs(5)).await);
}

/// Fails retryably `failures` times, then succeeds; a permanent error on `permanent`.
struct Flaky {
    failures: usize,
    calls: AtomicUsize,
}

#[async_trait]
impl JobHandler for Flaky {
    async fn run(&self, job: &Job, _ctx: JobContext) -> Result<Output, JobError> {
        if job.payload["permanent"] == true {
            return Err(JobError::permanent("unknown analysis \"magic\""));
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.failures {
            return Err(JobError::retryable(format!("storage unavailable (call {call})")));
        }
        Ok(None)
    }
}

async fn retryable_errors_back_off_exponentially_and_permanent_ones_fail(db: TestDatabase) {
    let f = fixture(&db).await;
    let handler = Arc::new(Flaky { failures: 2, calls: AtomicUsize::new(0) });
    let runtime = f.runtime("w1", &[("flaky", handler.clone())]);
    let job = f.submit("flaky", 5).await;
    let first = f.wait(&job.id, "first failure", |j| j.status == "queued" && j.attempts == 1).await;
    assert_eq!(first.error.as_deref(), Some("storage unavailable (call 0)"));
    let row = f.queue.get(&job.id).await.unwrap().unwrap();
    assert_eq!(row.run_after, START + 10_000, "base backoff");
    // Not due yet: the runtime leaves it alone however often it looks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    f.clock.advance(10_000);
    f.wait(&job.id, "second failure", |j| j.status == "queued" && j.attempts == 2).await;
    assert_eq!(f.queue.get(&job.id).await.unwrap().unwrap().run_after, START + 10_000 + 20_000, "doubled");
    f.clock.advance(20_000);
    let done = f.wait(&job.id, "success", |j| j.status == "succeeded").await;
    assert_eq!((done.attempts, done.error.clone()), (3, None));

    let bad =
        f.jobs.submit(&plant(), "flaky", serde_json::json!({ "permanent": true }), Submit::default()).await.unwrap();
    let failed = f.wait(&bad.id, "failed", |j| j.status == "failed").await;
    assert_eq!((failed.attempts, failed.error.as_deref()), (1, Some("unknown analysis \"magic\"")));
    // A manual retry keeps the payload (and so fails the same way).
    assert!(matches!(f.jobs.retry(&plant(), &bad.id).await.unwrap(), RetryOutcome::Queued(_)));
    assert_eq!(f.jobs.retry(&plant(), &job.id).await.unwrap(), RetryOutcome::NotRetryable("succeeded"));
    assert!(runtime.shutdown(Duration::from_secs(5)).await);
}

/// Never finishes on its own (stands for a long computation in a process that gets killed).
struct Hangs;

#[async_trait]
impl JobHandler for Hangs {
    async fn run(&self, _job: &Job, _ctx: JobContext) -> Result<Output, JobError> {
        std::future::pending::<()>().await;
        Ok(None)
    }
}

struct Succeeds;

#[async_trait]
impl JobHandler for Succeeds {
    async fn run(&self, _job: &Job, _ctx: JobContext) -> Result<Output, JobError> {
        Ok(Some(serde_json::json!("done")))
    }
}

async fn a_crashed_workers_job_is_resumed_or_failed_never_stuck(db: TestDatabase) {
    let f = fixture(&db).await;
    let crashed = f.runtime("crashed", &[("export", Arc::new(Hangs))]);
    let resumable = f.submit("export", 3).await;
    let last_chance = f.submit("export", 1).await;
    f.wait(&resumable.id, "running", |j| j.status == "running").await;
    crashed.abandon();
    // The other job may not have started before the "crash"; start it on a doomed worker too.
    if f.jobs.get(&plant(), &last_chance.id).await.unwrap().unwrap().status == "queued" {
        let doomed = f.runtime("doomed", &[("export", Arc::new(Hangs))]);
        f.wait(&last_chance.id, "running", |j| j.status == "running").await;
        doomed.abandon();
    }

    let survivor = f.runtime("survivor", &[("export", Arc::new(Succeeds))]);
    // Leases still valid: the survivor must not take the jobs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.jobs.get(&plant(), &resumable.id).await.unwrap().unwrap().status, "running");
    f.clock.advance(3_001);
    let resumed = f.wait(&resumable.id, "resumed", |j| j.status == "succeeded").await;
    assert_eq!(resumed.attempts, 2);
    let failed = f.wait(&last_chance.id, "failed", |j| j.status == "failed").await;
    assert!(failed.error.unwrap().contains("worker stopped"));
    assert!(survivor.shutdown(Duration::from_secs(5)).await);
}

/// Counts how many run at once.
struct Counting {
    active: AtomicUsize,
    peak: AtomicUsize,
}

#[async_trait]
impl JobHandler for Counting {
    async fn run(&self, _job: &Job, _ctx: JobContext) -> Result<Output, JobError> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        Ok(None)
    }
}

async fn concurrency_is_limited_per_kind(db: TestDatabase) {
    let f = fixture(&db).await;
    let slow = Arc::new(Counting { active: AtomicUsize::new(0), peak: AtomicUsize::new(0) });
    let other = Arc::new(Counting { active: AtomicUsize::new(0), peak: AtomicUsize::new(0) });
    let mut config = config("w1");
    config.concurrency = BTreeMap::from([("slow".to_string(), 2)]);
    let runtime = f.runtime_with(config, &[("slow", slow.clone()), ("other", other.clone())]);
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(f.submit("slow", 1).await.id);
    }
    for _ in 0..3 {
        ids.push(f.submit("other", 1).await.id);
    }
    for id in &ids {
        f.wait(id, "success", |j| j.status == "succeeded").await;
    }
    assert_eq!(slow.peak.load(Ordering::SeqCst), 2, "jobs.concurrency.slow = 2");
    assert_eq!(other.peak.load(Ordering::SeqCst), 1, "jobs.default_concurrency = 1");
    assert!(runtime.shutdown(Duration::from_secs(5)).await);
}

async fn shutdown_gives_running_jobs_back_without_spending_an_attempt(db: TestDatabase) {
    let f = fixture(&db).await;
    let runtime = f.runtime("w1", &[("export", Arc::new(Gated { gate: Arc::new(Notify::new()) }))]);
    let job = f.submit("export", 1).await;
    f.wait(&job.id, "running", |j| j.status == "running").await;
    assert!(runtime.shutdown(Duration::from_secs(5)).await, "the handler stopped at its checkpoint");
    let released = f.jobs.get(&plant(), &job.id).await.unwrap().unwrap();
    assert_eq!((released.status, released.attempts), ("queued", 0));
    // The next process runs it, with its one attempt intact.
    let next = f.runtime("w2", &[("export", Arc::new(Succeeds))]);
    f.wait(&job.id, "success", |j| j.status == "succeeded").await;
    assert!(next.shutdown(Duration::from_secs(5)).await);
}

backend_matrix!(
    a_cancel_reaches_a_running_job_before_its_next_beat,
    progress_log_and_output_are_recorded,
    cancel_queued_at_once_and_running_at_a_checkpoint,
    retryable_errors_back_off_exponentially_and_permanent_ones_fail,
    a_crashed_workers_job_is_resumed_or_failed_never_stuck,
    concurrency_is_limited_per_kind,
    shutdown_gives_running_jobs_back_without_spending_an_attempt,
);
