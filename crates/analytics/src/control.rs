//! Progress and cancellation, so the job runtime can report a run's progress and stop it.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::AnalysisError;

/// What a long analysis reports to and asks of whoever runs it. Analyses call
/// [`Control::checkpoint`] between bounded units of work, so a cancel takes effect within
/// one unit (one candidate, one fold, one block of points).
pub trait Control {
    /// Fraction done, 0.0–1.0, non-decreasing within one analysis.
    fn progress(&self, fraction: f64);
    /// True once the run should stop.
    fn cancelled(&self) -> bool;

    /// Reports progress and turns a cancel into [`AnalysisError::Cancelled`].
    fn checkpoint(&self, fraction: f64) -> Result<(), AnalysisError> {
        if self.cancelled() {
            return Err(AnalysisError::Cancelled);
        }
        self.progress(fraction.clamp(0.0, 1.0));
        Ok(())
    }
}

/// No reporting, never cancelled (tests, benches, small synchronous calls).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoControl;

impl Control for NoControl {
    fn progress(&self, _fraction: f64) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// A progress callback and a cancel flag, the shape the job runtime holds.
pub struct Callbacks<'a> {
    pub progress: &'a dyn Fn(f64),
    pub cancel: &'a AtomicBool,
}

impl Control for Callbacks<'_> {
    fn progress(&self, fraction: f64) {
        (self.progress)(fraction);
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Maps a sub-task's 0–1 progress into `[start, end]` of its parent's.
pub(crate) struct Scoped<'a> {
    pub inner: &'a dyn Control,
    pub start: f64,
    pub end: f64,
}

impl Control for Scoped<'_> {
    fn progress(&self, fraction: f64) {
        self.inner.progress(self.start + (self.end - self.start) * fraction.clamp(0.0, 1.0));
    }
    fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }
}
