//! What a handler gets: its factory, progress/log reporting, cancellation and the CPU pool.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use factoryops_db::jobs::{LOG_LINE_CHARS, LOG_LINES};
use factoryops_types::FactoryId;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::JobError;

/// Runs CPU-heavy job work on tokio's blocking threads, at most `threads` at a time: the
/// async workers that carry ingestion, rules and HTTP never run job computations, and
/// jobs together never occupy more than `threads` cores (default 1 of the machine's).
#[derive(Debug, Clone)]
pub struct CpuPool {
    permits: Arc<Semaphore>,
}

impl CpuPool {
    pub fn new(threads: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(threads.max(1))) }
    }

    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, JobError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| JobError::Interrupted)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| JobError::Permanent(format!("job computation failed: {e}")))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    pub progress: f64,
    pub log: VecDeque<String>,
    pub dirty: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub factory: Option<FactoryId>,
    /// Cancelled by a user's cancel, or when the lease was lost.
    pub cancel: CancellationToken,
    /// Cancelled when the process shuts down.
    pub stop: CancellationToken,
    pub cancel_requested: AtomicBool,
    pub lease_lost: AtomicBool,
    pub report: Mutex<Report>,
    pub reported: Notify,
    pub cpu: CpuPool,
}

/// Handed to [`crate::JobHandler::run`]; cheap to clone (into CPU closures too).
#[derive(Debug, Clone)]
pub struct JobContext {
    pub(crate) shared: Arc<Shared>,
}

impl JobContext {
    pub(crate) fn new(factory: Option<FactoryId>, stop: CancellationToken, cpu: CpuPool) -> Self {
        Self {
            shared: Arc::new(Shared {
                factory,
                cancel: CancellationToken::new(),
                stop,
                cancel_requested: AtomicBool::new(false),
                lease_lost: AtomicBool::new(false),
                report: Mutex::new(Report::default()),
                reported: Notify::new(),
                cpu,
            }),
        }
    }

    /// The factory the job belongs to (`None` for platform jobs).
    pub fn factory_id(&self) -> Option<&FactoryId> {
        self.shared.factory.as_ref()
    }

    /// Reports progress, 0.0–1.0 (written to the job shortly after, not on every call).
    pub fn progress(&self, fraction: f64) {
        let mut report = self.shared.report.lock();
        report.progress = fraction.clamp(0.0, 1.0);
        report.dirty = true;
        drop(report);
        self.shared.reported.notify_one();
    }

    /// Adds a line to the job's short log (the newest lines are kept).
    pub fn log(&self, line: impl Into<String>) {
        let line: String = line.into().chars().take(LOG_LINE_CHARS).collect();
        let mut report = self.shared.report.lock();
        if report.log.len() == LOG_LINES {
            report.log.pop_front();
        }
        report.log.push_back(line);
        report.dirty = true;
        drop(report);
        self.shared.reported.notify_one();
    }

    /// Whether the job should stop (cancelled, lease lost, or shutdown).
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancel.is_cancelled() || self.shared.stop.is_cancelled()
    }

    /// Call between steps: `Err(Cancelled)` after a cancel, `Err(Interrupted)` when the
    /// process shuts down; return the error as is and the runtime does the rest.
    pub fn checkpoint(&self) -> Result<(), JobError> {
        if self.shared.cancel.is_cancelled() {
            Err(JobError::Cancelled)
        } else if self.shared.stop.is_cancelled() {
            Err(JobError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Resolves when the job should stop (for `select!` around long awaits).
    pub async fn stopped(&self) {
        tokio::select! {
            _ = self.shared.cancel.cancelled() => {}
            _ = self.shared.stop.cancelled() => {}
        }
    }

    /// Runs CPU-heavy work on the bounded pool (see [`CpuPool`]). Long computations
    /// should call [`JobContext::checkpoint`] on a clone of this context between steps.
    pub async fn cpu<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, JobError> {
        self.shared.cpu.run(work).await
    }

    pub(crate) fn take_report(&self) -> Option<(f64, Vec<String>)> {
        let mut report = self.shared.report.lock();
        if !report.dirty {
            return None;
        }
        report.dirty = false;
        Some((report.progress, report.log.iter().cloned().collect()))
    }

    pub(crate) fn request_cancel(&self) {
        self.shared.cancel_requested.store(true, Ordering::SeqCst);
        self.shared.cancel.cancel();
    }

    pub(crate) fn lose_lease(&self) {
        self.shared.lease_lost.store(true, Ordering::SeqCst);
        self.shared.cancel.cancel();
    }

    pub(crate) fn lease_lost(&self) -> bool {
        self.shared.lease_lost.load(Ordering::SeqCst)
    }
}
