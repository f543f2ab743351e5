//! The audit of failed logins, bounded. Anyone can fail a login, as often as the login
//! rate limits allow and with whatever text as the identifier, so these entries are the
//! one part of the audit log that strangers write. Two rules keep them harmless:
//! - an identifier that names no account is stored as `unknown:` and 16 hex digits of a
//!   keyed SHA-256, never verbatim: repeated attempts on the same name still correlate,
//!   but a 5,000-character "e-mail" (or a password typed into the e-mail field) does not
//!   land in the log;
//! - each factory (and the platform, which also collects logins to factories that do not
//!   exist) gets at most `per_minute` `login.failed` rows per minute; the rest are counted
//!   and written as one `login.failed_suppressed` row once the minute is over.

use std::collections::HashMap;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

const WINDOW_MS: i64 = 60_000;

/// How many failed logins of one window went unrecorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suppressed {
    pub factory: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub count: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    written: u32,
    suppressed: u64,
}

pub(crate) struct FailedLoginAudit {
    per_minute: u32,
    /// Derived from the JWT secret, so the hashes cannot be reversed by trying names
    /// without it.
    pepper: [u8; 32],
    /// Keyed by existing factory (`None`: the platform and unknown factories), so the map
    /// is bounded by the number of factories, not by what attackers send.
    windows: Mutex<HashMap<Option<String>, Window>>,
}

impl FailedLoginAudit {
    pub fn new(per_minute: u32, secret: &[u8]) -> Self {
        let mut pepper = Sha256::new();
        pepper.update(b"factoryops audit identifier\0");
        pepper.update(secret);
        Self { per_minute, pepper: pepper.finalize().into(), windows: Mutex::default() }
    }

    /// What the audit log shows for an identifier that names no account.
    pub fn unknown_identifier(&self, text: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(self.pepper);
        hash.update(text.as_bytes());
        let digest = hash.finalize();
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("unknown:{hex}")
    }

    /// Counts one failed login of `factory` at `now`: whether to write its row, and the
    /// summary of a closed window that is now due.
    pub fn admit(&self, factory: Option<&str>, now: i64) -> (bool, Option<Suppressed>) {
        let mut windows = self.windows.lock();
        let key = factory.map(str::to_string);
        let window = windows.entry(key.clone()).or_insert(Window { start: now, written: 0, suppressed: 0 });
        let due = roll(key, window, now);
        let write = window.written < self.per_minute;
        if write {
            window.written += 1;
        } else {
            window.suppressed += 1;
        }
        (write, due)
    }

    /// The summary of `factory`'s closed window, if one is due (read before the log is shown).
    pub fn due(&self, factory: Option<&str>, now: i64) -> Option<Suppressed> {
        let mut windows = self.windows.lock();
        let key = factory.map(str::to_string);
        let window = windows.get_mut(&key)?;
        roll(key, window, now)
    }
}

/// Starts a new window when `now` is past the current one, returning the old one's count.
fn roll(factory: Option<String>, window: &mut Window, now: i64) -> Option<Suppressed> {
    if now - window.start < WINDOW_MS {
        return None;
    }
    let old = std::mem::replace(window, Window { start: now, written: 0, suppressed: 0 });
    (old.suppressed > 0).then_some(Suppressed {
        factory,
        from_ms: old.start,
        to_ms: old.start + WINDOW_MS,
        count: old.suppressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_rows_a_minute_then_one_summary() {
        let audit = FailedLoginAudit::new(3, b"secret");
        let admitted: Vec<bool> = (0..10).map(|i| audit.admit(Some("plant-a"), 1_000 + i).0).collect();
        assert_eq!(admitted, [true, true, true, false, false, false, false, false, false, false]);
        // Another factory has its own budget.
        assert!(audit.admit(Some("plant-b"), 1_500).0);
        assert_eq!(audit.due(Some("plant-a"), 60_999), None, "the window is still open");
        let summary = audit.due(Some("plant-a"), 61_000).unwrap();
        assert_eq!(summary, Suppressed { factory: Some("plant-a".into()), from_ms: 1_000, to_ms: 61_000, count: 7 });
        assert_eq!(audit.due(Some("plant-a"), 61_001), None, "written once");
        let (write, due) = audit.admit(Some("plant-a"), 61_002);
        assert!(write);
        assert_eq!(due, None);
    }

    #[test]
    fn unknown_identifiers_are_short_keyed_hashes() {
        let audit = FailedLoginAudit::new(3, b"secret");
        let long = "x".repeat(5_000);
        let shown = audit.unknown_identifier(&long);
        assert_eq!(shown.len(), "unknown:".len() + 16);
        assert_eq!(shown, audit.unknown_identifier(&long), "the same name correlates");
        assert_ne!(shown, audit.unknown_identifier("y"));
        assert_ne!(shown, FailedLoginAudit::new(3, b"other").unknown_identifier(&long), "keyed");
    }
}
