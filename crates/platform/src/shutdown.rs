//! Ordered shutdown: stop intake, drain, flush, close — each phase within one overall deadline.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Fires once SIGINT or SIGTERM arrives (or `trigger` is called); cloned into every task
/// that must stop taking new work.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Triggers on the first SIGINT or SIGTERM.
    pub fn listen_for_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; stopping intake and draining");
            this.trigger();
        });
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Remaining time of a shutdown deadline, shared by the phases.
pub struct Deadline {
    until: tokio::time::Instant,
}

impl Deadline {
    pub fn after(total: Duration) -> Self {
        Self { until: tokio::time::Instant::now() + total }
    }

    pub fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(tokio::time::Instant::now())
    }

    /// Runs one phase; `false` when the deadline expired before it finished.
    pub async fn run<F: std::future::Future>(&self, phase: &str, work: F) -> bool {
        match tokio::time::timeout(self.remaining(), work).await {
            Ok(_) => {
                tracing::info!(phase, "shutdown phase done");
                true
            }
            Err(_) => {
                tracing::warn!(phase, "shutdown deadline reached; abandoning the rest of this phase");
                false
            }
        }
    }
}
