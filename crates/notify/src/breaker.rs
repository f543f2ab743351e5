//! A circuit breaker per channel: after `failure_threshold` consecutive transient
//! failures the channel is *open* (nothing is sent, messages stay queued) for a cool-down
//! that doubles on every failed probe up to `max_open`; then one probe is let through
//! (*half-open*) and a success closes the circuit again.

use std::time::Duration;

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until_ms: i64 },
    HalfOpen,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    base_open: Duration,
    max_open: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    /// How many times in a row the circuit opened (the cool-down doubles with it).
    trips: u32,
    last_error: String,
    /// A probe is in flight while half-open.
    probing: bool,
}

/// What the worker may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send as much as concurrency allows.
    Flow,
    /// Send exactly one message to probe the provider.
    Probe,
    /// Send nothing.
    Blocked,
}

impl CircuitBreaker {
    pub fn new(failure_threshold: u32, base_open: Duration, max_open: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            base_open,
            max_open: max_open.max(base_open),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                trips: 0,
                last_error: String::new(),
                probing: false,
            }),
        }
    }

    pub fn permit(&self, now_ms: i64) -> Permit {
        let mut inner = self.inner.lock();
        match inner.state {
            BreakerState::Closed => Permit::Flow,
            BreakerState::Open { until_ms } if now_ms < until_ms => Permit::Blocked,
            BreakerState::Open { .. } | BreakerState::HalfOpen => {
                inner.state = BreakerState::HalfOpen;
                if inner.probing {
                    Permit::Blocked
                } else {
                    inner.probing = true;
                    Permit::Probe
                }
            }
        }
    }

    /// The provider answered (delivered, or refused for good: it is up either way).
    pub fn record_success(&self) -> bool {
        let mut inner = self.inner.lock();
        let was_open = inner.state != BreakerState::Closed;
        inner.state = BreakerState::Closed;
        inner.consecutive_failures = 0;
        inner.trips = 0;
        inner.probing = false;
        was_open
    }

    /// A transient failure; returns `true` when this failure opened the circuit.
    pub fn record_failure(&self, now_ms: i64, error: &str) -> bool {
        let mut inner = self.inner.lock();
        inner.last_error = error.to_string();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let trip = match inner.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => inner.consecutive_failures >= self.failure_threshold,
            BreakerState::Open { .. } => false,
        };
        if !trip {
            return false;
        }
        let factor = 2u32.saturating_pow(inner.trips.min(16));
        let open_for = self.base_open.saturating_mul(factor).min(self.max_open);
        inner.trips = inner.trips.saturating_add(1);
        inner.probing = false;
        let was_closed = inner.state == BreakerState::Closed;
        inner.state = BreakerState::Open { until_ms: now_ms + i64::try_from(open_for.as_millis()).unwrap_or(i64::MAX) };
        was_closed
    }

    /// A probe ended without an answer either way (e.g. shutdown): let another probe go.
    pub fn release_probe(&self) {
        self.inner.lock().probing = false;
    }

    pub fn state(&self) -> BreakerState {
        self.inner.lock().state
    }

    pub fn is_closed(&self) -> bool {
        self.state() == BreakerState::Closed
    }

    pub fn last_error(&self) -> String {
        self.inner.lock().last_error.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(3, Duration::from_secs(10), Duration::from_secs(60))
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cool_down() {
        let b = breaker();
        assert_eq!(b.permit(0), Permit::Flow);
        assert!(!b.record_failure(0, "down"));
        assert!(!b.record_failure(1, "down"));
        assert!(b.record_failure(2, "down"), "the third failure opens");
        assert_eq!(b.permit(5_000), Permit::Blocked);
        assert_eq!(b.permit(10_002), Permit::Probe);
        assert_eq!(b.permit(10_003), Permit::Blocked, "one probe at a time");
        assert!(b.record_success(), "the probe closes it");
        assert_eq!(b.permit(10_004), Permit::Flow);
    }

    #[test]
    fn a_failed_probe_doubles_the_cool_down_up_to_the_cap() {
        let b = breaker();
        for t in 0..3 {
            b.record_failure(t, "down");
        }
        assert_eq!(b.permit(10_002), Permit::Probe);
        b.record_failure(10_002, "still down");
        assert_eq!(b.state(), BreakerState::Open { until_ms: 30_002 });
        assert_eq!(b.permit(30_002), Permit::Probe);
        b.record_failure(30_002, "still down");
        assert_eq!(b.state(), BreakerState::Open { until_ms: 70_002 });
        assert_eq!(b.permit(70_002), Permit::Probe);
        b.record_failure(70_002, "still down");
        assert_eq!(b.state(), BreakerState::Open { until_ms: 130_002 }, "capped at 60 s");
        assert_eq!(b.last_error(), "still down");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker();
        b.record_failure(0, "x");
        b.record_failure(1, "x");
        b.record_success();
        assert!(!b.record_failure(2, "x"));
        assert!(b.is_closed());
    }
}
