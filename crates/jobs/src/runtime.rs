//! The runtime: one claim loop per registered kind, bounded by that kind's concurrency;
//! each claimed job runs its handler in a task of its own next to a heartbeat that
//! extends the lease, writes progress and notices a cancel.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use factoryops_db::jobs::{Job, JobQueue};
use factoryops_types::Clock;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::{CpuPool, JobContext};
use crate::service::Wake;
use crate::{JobError, JobHandler};

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// This process's name on leases; unique per process.
    pub owner: String,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub default_concurrency: usize,
    /// Per-kind concurrency; 0 = this process does not run that kind.
    pub concurrency: BTreeMap<String, usize>,
    pub cpu_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            owner: format!("worker-{}", factoryops_types::new_id()),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(600),
            default_concurrency: 1,
            concurrency: BTreeMap::new(),
            cpu_threads: 1,
        }
    }
}

/// The delay before attempt `attempt + 1` after attempt `attempt` failed: `base · 2^(attempt−1)`,
/// capped at `max`. Deterministic (no jitter): retries are few and per job, not a herd.
pub fn backoff(base: Duration, max: Duration, attempt: i64) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    base.saturating_mul(2u32.saturating_pow(exponent)).min(max)
}

pub struct JobRuntime {
    queue: JobQueue,
    clock: Arc<dyn Clock>,
    config: RuntimeConfig,
    handlers: BTreeMap<String, Arc<dyn JobHandler>>,
    wake: Wake,
}

struct Inner {
    queue: JobQueue,
    clock: Arc<dyn Clock>,
    config: RuntimeConfig,
    cpu: CpuPool,
    stop_jobs: CancellationToken,
    /// Set by [`RuntimeHandle::abandon`]: the process "died", so nothing more is written.
    abandoned: AtomicBool,
    /// Handler tasks of running jobs, to abort what did not stop by the shutdown deadline.
    running: Mutex<HashMap<String, AbortHandle>>,
    /// Rung by submit, retry and cancel: a running job's heartbeat beats at once, so a
    /// cancel reaches it without waiting a third of the lease.
    wake: Wake,
}

impl JobRuntime {
    pub fn new(queue: JobQueue, clock: Arc<dyn Clock>, config: RuntimeConfig, wake: Wake) -> Self {
        Self { queue, clock, config, handlers: BTreeMap::new(), wake }
    }

    /// Registers the handler of `kind` (one per kind; a second registration replaces it).
    pub fn register(&mut self, kind: &str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind.to_string(), handler);
    }

    pub fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// Starts one claim loop per registered kind whose concurrency is above 0.
    pub fn start(self) -> RuntimeHandle {
        let stop_claiming = CancellationToken::new();
        let inner = Arc::new(Inner {
            queue: self.queue,
            clock: self.clock,
            cpu: CpuPool::new(self.config.cpu_threads),
            config: self.config,
            stop_jobs: CancellationToken::new(),
            abandoned: AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
            wake: self.wake.clone(),
        });
        let tracker = TaskTracker::new();
        let mut loops = Vec::new();
        for (kind, handler) in self.handlers {
            let limit = inner.config.concurrency.get(&kind).copied().unwrap_or(inner.config.default_concurrency);
            if limit == 0 {
                tracing::info!(kind, "job kind disabled in this process (jobs.concurrency = 0)");
                continue;
            }
            tracing::info!(kind, concurrency = limit, "job kind registered");
            loops.push(tokio::spawn(claim_loop(
                inner.clone(),
                kind,
                handler,
                Arc::new(Semaphore::new(limit)),
                self.wake.clone(),
                stop_claiming.clone(),
                tracker.clone(),
            )));
        }
        RuntimeHandle { inner, stop_claiming, loops, tracker }
    }
}

pub struct RuntimeHandle {
    inner: Arc<Inner>,
    stop_claiming: CancellationToken,
    loops: Vec<JoinHandle<()>>,
    tracker: TaskTracker,
}

impl RuntimeHandle {
    /// Ordered shutdown: stop claiming, tell running jobs to stop at their next checkpoint
    /// (they are released to the queue without spending the attempt), wait up to `grace`,
    /// then abort what still runs and release its lease. `true` when all stopped in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.stop_claiming.cancel();
        for task in self.loops {
            let _ = task.await;
        }
        self.inner.stop_jobs.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_ok() {
            return true;
        }
        let stuck: Vec<(String, AbortHandle)> = self.inner.running.lock().drain().collect();
        tracing::warn!(jobs = stuck.len(), "jobs did not reach a checkpoint in time; aborting and releasing them");
        for (_, handle) in &stuck {
            handle.abort();
        }
        // Each aborted job's task releases its lease as it ends.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        false
    }

    /// Stops everything at once and writes nothing more, as a killed process would
    /// (leases stay until they expire). For crash tests.
    pub fn abandon(self) {
        self.inner.abandoned.store(true, Ordering::SeqCst);
        self.stop_claiming.cancel();
        for task in &self.loops {
            task.abort();
        }
        for (_, handle) in self.inner.running.lock().drain() {
            handle.abort();
        }
    }

    /// Jobs running in this process now.
    pub fn running(&self) -> usize {
        self.inner.running.lock().len()
    }
}

async fn claim_loop(
    inner: Arc<Inner>,
    kind: String,
    handler: Arc<dyn JobHandler>,
    slots: Arc<Semaphore>,
    wake: Wake,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut woken = wake.subscribe();
    let lease_ms = i64::try_from(inner.config.lease.as_millis()).unwrap_or(60_000);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot { Ok(slot) => slot, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        let now = inner.clock.now_ms();
        // Jobs whose worker died with no attempts left (or a cancel pending) end here.
        match inner.queue.sweep(&[kind.as_str()], now).await {
            Ok(sweep) => {
                for id in &sweep.failed {
                    tracing::warn!(kind, job = %id, "job failed: its worker stopped during the last attempt");
                }
            }
            Err(e) => tracing::warn!(kind, error = %e, "job sweep failed"),
        }
        let claimed = inner.queue.claim(&[kind.as_str()], &inner.config.owner, lease_ms, now).await;
        match claimed {
            Ok(Some(job)) => {
                tracing::info!(kind, job = %job.id, attempt = job.attempts, "job started");
                tracker.spawn(run_job(inner.clone(), handler.clone(), job, slot));
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(kind, error = %e, "cannot claim jobs"),
        }
        drop(slot);
        tokio::select! {
            _ = tokio::time::sleep(inner.config.poll_interval) => {}
            _ = woken.changed() => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn run_job(inner: Arc<Inner>, handler: Arc<dyn JobHandler>, job: Job, _slot: tokio::sync::OwnedSemaphorePermit) {
    let ctx = JobContext::new(job.factory_id.clone(), inner.stop_jobs.child_token(), inner.cpu.clone());
    let id = job.id.clone();
    let attempt = job.attempts;
    let heartbeat = tokio::spawn(heartbeat(inner.clone(), id.clone(), ctx.clone()));
    let task = {
        let ctx = ctx.clone();
        tokio::spawn(async move { handler.run(&job, ctx).await })
    };
    inner.running.lock().insert(id.clone(), task.abort_handle());
    let result = match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(JobError::Permanent("the job handler panicked".into())),
        // Aborted at the shutdown deadline.
        Err(_) => Err(JobError::Interrupted),
    };
    heartbeat.abort();
    inner.running.lock().remove(&id);
    if inner.abandoned.load(Ordering::SeqCst) {
        return;
    }
    if ctx.lease_lost() {
        tracing::warn!(job = %id, "job lease lost (another worker took it over); this attempt's result is dropped");
        return;
    }
    let (queue, owner, now) = (&inner.queue, inner.config.owner.as_str(), inner.clock.now_ms());
    if let Some((progress, log)) = ctx.take_report()
        && let Err(e) = queue.report(&id, owner, progress, &log, now).await
    {
        tracing::warn!(job = %id, error = %e, "cannot record job progress");
    }
    let written = match &result {
        Ok(output) => queue.complete(&id, owner, output.as_ref(), now).await,
        Err(JobError::Cancelled) => queue.mark_cancelled(&id, owner, now).await,
        Err(JobError::Interrupted) => queue.release(&id, owner, now).await,
        Err(JobError::Retryable(error)) => {
            let delay = backoff(inner.config.backoff_base, inner.config.backoff_max, attempt);
            let retry_at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4);
            queue.fail(&id, owner, error, Some(retry_at), now).await.map(|s| s.is_some())
        }
        Err(JobError::Permanent(error)) => queue.fail(&id, owner, error, None, now).await.map(|s| s.is_some()),
    };
    match (written, &result) {
        (Ok(true), Ok(_)) => tracing::info!(job = %id, "job succeeded"),
        (Ok(true), Err(e)) => tracing::info!(job = %id, error = %e, "job attempt ended"),
        (Ok(false), _) => tracing::warn!(job = %id, "job lease lost before its result was recorded"),
        (Err(e), _) => tracing::error!(job = %id, error = %e, "cannot record the job's result; its lease will expire"),
    }
}

/// Extends the lease at a third of its length, writes progress soon after it changes,
/// and passes a cancel request or a lost lease to the handler.
async fn heartbeat(inner: Arc<Inner>, id: String, ctx: JobContext) {
    let lease_ms = i64::try_from(inner.config.lease.as_millis()).unwrap_or(60_000);
    let every = inner.config.lease / 3;
    let mut next_beat = tokio::time::Instant::now() + every;
    let mut woken = inner.wake.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_beat) => {}
            _ = ctx.shared.reported.notified() => {
                // Progress changes come in bursts: write at most a few times a second.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(()) = woken.changed() => next_beat = tokio::time::Instant::now(),
        }
        if inner.abandoned.load(Ordering::SeqCst) {
            return;
        }
        let (owner, now) = (inner.config.owner.as_str(), inner.clock.now_ms());
        if let Some((progress, log)) = ctx.take_report()
            && let Err(e) = inner.queue.report(&id, owner, progress, &log, now).await
        {
            tracing::warn!(job = %id, error = %e, "cannot record job progress");
        }
        if tokio::time::Instant::now() < next_beat {
            continue;
        }
        next_beat = tokio::time::Instant::now() + every;
        match inner.queue.heartbeat(&id, owner, lease_ms, now).await {
            Ok(beat) if !beat.held => {
                ctx.lose_lease();
                return;
            }
            Ok(beat) if beat.cancel_requested => ctx.request_cancel(),
            Ok(_) => {}
            // A database hiccup: the lease has two more beats before it expires.
            Err(e) => tracing::warn!(job = %id, error = %e, "job heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(600));
        let delays: Vec<u64> = (1..=8).map(|a| backoff(base, max, a).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(backoff(base, max, 0).as_secs(), 10);
        assert_eq!(backoff(base, max, i64::MAX).as_secs(), 600);
    }
}
