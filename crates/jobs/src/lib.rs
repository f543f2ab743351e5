//! The job runtime (ADR 0018): long work (dataset exports, analytics runs, reports) runs
//! as jobs of the durable queue in `factoryops_db::jobs`, driven here.
//!
//! - A component implements [`JobHandler`] for its job kind and registers it with the
//!   [`JobRuntime`]; routes submit and follow jobs through [`Jobs`] (factory-scoped).
//! - The handler gets a [`JobContext`]: progress and log reporting, a cancellation check
//!   for cooperative cancel and shutdown ([`JobContext::checkpoint`]), the job's factory,
//!   and [`JobContext::cpu`], which runs CPU-heavy work on a bounded pool so jobs never
//!   take the cores ingestion and rules need.
//! - The runtime claims due jobs per kind up to that kind's concurrency, extends leases
//!   by heartbeat while a handler runs, retries retryable errors with exponential backoff
//!   up to `max_attempts`, fails permanent ones at once, and on shutdown stops claiming
//!   and lets running jobs reach a checkpoint (or releases their leases).

mod context;
mod runtime;
mod service;

use async_trait::async_trait;
pub use context::{CpuPool, JobContext};
pub use factoryops_db::jobs::{CancelOutcome, Job, JobQueue, JobStatus};
pub use runtime::{JobRuntime, RuntimeConfig, RuntimeHandle, backoff};
pub use service::{JobView, Jobs, RetryOutcome, Submit, Wake};

/// Why an attempt did not succeed; the runtime decides what happens next from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt later (storage down, a timeout): retried with backoff while
    /// attempts are left.
    #[error("{0}")]
    Retryable(String),
    /// Another attempt would fail the same way (bad parameters, missing dataset): failed now.
    #[error("{0}")]
    Permanent(String),
    /// The job was cancelled ([`JobContext::checkpoint`] returns this).
    #[error("cancelled")]
    Cancelled,
    /// The process is shutting down; the job is given back to the queue unharmed.
    #[error("interrupted by shutdown")]
    Interrupted,
}

impl JobError {
    pub fn retryable(error: impl std::fmt::Display) -> Self {
        JobError::Retryable(error.to_string())
    }

    pub fn permanent(error: impl std::fmt::Display) -> Self {
        JobError::Permanent(error.to_string())
    }
}

/// What a handler returns on success: stored as the job's output (small JSON; large
/// results belong in the object store, referenced from here).
pub type Output = Option<serde_json::Value>;

/// The work of one job kind.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, job: &Job, ctx: JobContext) -> Result<Output, JobError>;
}
