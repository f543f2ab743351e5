//! Storage health: a monitor probes [`ObjectStore::check`] periodically and publishes a
//! typed [`StorageHealth`] on a watch channel. Routes that would start work needing the
//! store (datasets, runs, reports) ask [`StorageStatus::ensure_available`] and answer 503
//! while it is down (HLD §10.5); the server turns the changes into `platform.health`
//! events for the operators. Telemetry and rules never look at it.

use std::sync::Arc;
use std::time::Duration;

use factoryops_types::Clock;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{ObjectStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageHealth {
    pub available: bool,
    /// Why it is down (the probe's error), or `ok`.
    pub detail: String,
    /// When this state began (ms since the epoch).
    pub since_ms: i64,
}

/// The current storage state, cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct StorageStatus {
    rx: watch::Receiver<StorageHealth>,
    recheck: Arc<Notify>,
}

impl StorageStatus {
    /// A status that never changes (tests, tools that run without a monitor).
    pub fn fixed(health: StorageHealth) -> Self {
        let (tx, rx) = watch::channel(health);
        // The receiver keeps answering the last value after the sender is gone.
        drop(tx);
        Self { rx, recheck: Arc::new(Notify::new()) }
    }

    pub fn current(&self) -> StorageHealth {
        self.rx.borrow().clone()
    }

    pub fn is_available(&self) -> bool {
        self.rx.borrow().available
    }

    /// `Err(StoreError::Unavailable)` naming the cause while storage is down.
    pub fn ensure_available(&self) -> Result<(), StoreError> {
        let health = self.rx.borrow();
        if health.available { Ok(()) } else { Err(StoreError::Unavailable(health.detail.clone())) }
    }

    /// Changes as they happen (the first `changed()` waits for the next one).
    pub fn subscribe(&self) -> watch::Receiver<StorageHealth> {
        self.rx.clone()
    }

    /// Asks the monitor to probe now (a caller just saw an operation fail, or wants to
    /// know whether storage is back before the next interval).
    pub fn recheck(&self) {
        self.recheck.notify_one();
    }
}

pub struct StorageMonitor;

impl StorageMonitor {
    /// Probes once (so the state is known before the first request) and then every
    /// `interval` until `stop` is cancelled.
    pub async fn start(
        store: Arc<dyn ObjectStore>,
        interval: Duration,
        clock: Arc<dyn Clock>,
        stop: CancellationToken,
    ) -> (StorageStatus, JoinHandle<()>) {
        let first = probe(store.as_ref(), clock.now_ms()).await;
        if !first.available {
            tracing::warn!(backend = store.backend(), detail = %first.detail, "object store unavailable at start");
        }
        let (tx, rx) = watch::channel(first);
        let recheck = Arc::new(Notify::new());
        let wake = recheck.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                    _ = wake.notified() => {}
                }
                let next = probe(store.as_ref(), clock.now_ms()).await;
                tx.send_if_modified(|current| {
                    if current.available == next.available {
                        // Same state: keep its start, refresh the reason.
                        current.detail = next.detail.clone();
                        return false;
                    }
                    tracing::warn!(available = next.available, detail = %next.detail, "object store health changed");
                    *current = next;
                    true
                });
            }
        });
        (StorageStatus { rx, recheck }, task)
    }
}

async fn probe(store: &dyn ObjectStore, now_ms: i64) -> StorageHealth {
    match store.check().await {
        Ok(()) => StorageHealth { available: true, detail: "ok".into(), since_ms: now_ms },
        Err(e) => StorageHealth { available: false, detail: e.to_string(), since_ms: now_ms },
    }
}
