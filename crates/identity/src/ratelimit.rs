//! Fixed-window attempt counters for logins, on the injected clock so tests can move time.

use std::collections::HashMap;

use parking_lot::Mutex;

pub(crate) struct RateLimiter {
    limit: u32,
    window_ms: i64,
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window_ms: i64) -> Self {
        Self { limit, window_ms, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one attempt; `Err(seconds)` when the key is over its limit for this window.
    pub fn attempt(&self, key: &str, now_ms: i64) -> Result<(), u64> {
        let mut windows = self.windows.lock();
        if windows.len() > 100_000 {
            // Bound memory under a spray of distinct keys: forget windows that have ended.
            windows.retain(|_, (start, _)| now_ms - *start < self.window_ms);
        }
        let entry = windows.entry(key.to_string()).or_insert((now_ms, 0));
        if now_ms - entry.0 >= self.window_ms {
            *entry = (now_ms, 0);
        }
        if entry.1 >= self.limit {
            let remaining_ms = entry.0 + self.window_ms - now_ms;
            return Err(u64::try_from((remaining_ms + 999) / 1000).unwrap_or(1).max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    pub fn reset(&self, key: &str) {
        self.windows.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_window() {
        let rl = RateLimiter::new(2, 60_000);
        assert!(rl.attempt("a", 0).is_ok());
        assert!(rl.attempt("a", 1).is_ok());
        assert_eq!(rl.attempt("a", 30_000), Err(30));
        assert!(rl.attempt("b", 30_000).is_ok());
        assert!(rl.attempt("a", 60_000).is_ok());
        rl.reset("a");
        assert!(rl.attempt("a", 60_001).is_ok());
    }
}
