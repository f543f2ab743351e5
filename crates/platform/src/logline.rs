//! Keeping what clients send out of the log in bulk.
//!
//! A refused client may repeat itself thousands of times a second with 60 kB topics or
//! paths; logging each refusal verbatim let one device grow the log by 58 MB. Two small
//! tools, used at every refusal site: [`clip`] prints a client-supplied string as a short
//! prefix plus its length, and [`LogLimiter`] lets the first few events of a kind per
//! interval through and counts the rest into the next line that is logged.

use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How much of a client-supplied string a log line shows.
pub const CLIP_CHARS: usize = 64;

/// A client-supplied string for a log line: at most [`CLIP_CHARS`] characters, control
/// characters escaped, and when cut the original length in bytes, e.g.
/// `factories/a/devices/x/xxxxx…(60000 bytes)`.
pub fn clip(text: &str) -> Clipped<'_> {
    Clipped { text, max_chars: CLIP_CHARS }
}

/// Like [`clip`] with an explicit length.
pub fn clip_to(text: &str, max_chars: usize) -> Clipped<'_> {
    Clipped { text, max_chars }
}

/// See [`clip`]; formats lazily, so a suppressed line costs nothing.
#[derive(Clone, Copy)]
pub struct Clipped<'a> {
    text: &'a str,
    max_chars: usize,
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.text.char_indices();
        let mut cut = None;
        for (n, (at, c)) in chars.by_ref().enumerate() {
            if n == self.max_chars {
                cut = Some(at);
                break;
            }
            // Control characters could forge log lines (newlines) or terminal escapes.
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if cut.is_some() {
            write!(f, "…({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Rate limit for one kind of log line: the first `burst` events per `interval` are
/// logged, later ones only counted. [`LogLimiter::admit`] says whether to log this one
/// and how many were suppressed since the last logged line, so every suppressed event
/// still shows up as a count. One value per kind of line, owned by whoever logs it.
pub struct LogLimiter {
    burst: u32,
    interval: Duration,
    state: Mutex<LimiterState>,
}

struct LimiterState {
    window_start: Option<Instant>,
    logged_in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(burst: u32, interval: Duration) -> Self {
        Self {
            burst,
            interval,
            state: Mutex::new(LimiterState { window_start: None, logged_in_window: 0, suppressed: 0 }),
        }
    }

    /// The default for refusals: 10 lines per minute and kind.
    pub fn per_minute(burst: u32) -> Self {
        Self::new(burst, Duration::from_secs(60))
    }

    /// `Some(suppressed)` when this event should be logged (with the number of events of
    /// this kind left out since the last logged one); `None` when it is only counted.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`LogLimiter::admit`] at a given instant, for tests.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        let expired = state.window_start.is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if expired {
            state.window_start = Some(now);
            state.logged_in_window = 0;
        }
        if state.logged_in_window < self.burst {
            state.logged_in_window += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::per_minute(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_kept_and_long_ones_cut_with_their_length() {
        assert_eq!(clip("factories/a/devices/b/telemetry").to_string(), "factories/a/devices/b/telemetry");
        let topic = format!("factories/a/{}", "x".repeat(60_000));
        let line = clip(&topic).to_string();
        assert!(line.starts_with("factories/a/xxx"), "{line}");
        assert!(line.ends_with("…(60012 bytes)"), "{line}");
        assert_eq!(line.chars().count(), CLIP_CHARS + "…(60012 bytes)".chars().count());
        // Exactly at the limit: not cut.
        let exact = "y".repeat(CLIP_CHARS);
        assert_eq!(clip(&exact).to_string(), exact);
        assert_eq!(clip_to("abcdef", 3).to_string(), "abc…(6 bytes)");
    }

    #[test]
    fn multibyte_text_is_cut_on_a_character_boundary_and_control_characters_escaped() {
        let text = "ä".repeat(100);
        let line = clip_to(&text, 5).to_string();
        assert_eq!(line, "äääää…(200 bytes)");
        assert_eq!(clip("a\nforged line\u{1b}[31m").to_string(), "a\\nforged line\\u{1b}[31m");
        assert_eq!(format!("{:?}", clip_to("abcd", 2)), "\"ab…(4 bytes)\"");
    }

    #[test]
    fn the_limiter_logs_a_burst_then_counts_and_reports_the_count() {
        let limiter = LogLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limiter.admit_at(t0), Some(0));
        assert_eq!(limiter.admit_at(t0), Some(0));
        assert_eq!(limiter.admit_at(t0), Some(0));
        for _ in 0..1_000 {
            assert_eq!(limiter.admit_at(t0 + Duration::from_secs(1)), None);
        }
        // The next window logs again and the first line carries the count.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(limiter.admit_at(t1), Some(1_000));
        assert_eq!(limiter.admit_at(t1), Some(0));
    }
}
