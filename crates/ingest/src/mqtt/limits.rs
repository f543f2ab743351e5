//! CONNECT rate limits: token buckets per source IP and for the whole endpoint.
//!
//! A reconnect storm (a factory's network coming back, a misbehaving fleet) must not turn
//! into a storm of secret verifications and database reads. A refused CONNECT is answered
//! with CONNACK "connection rate exceeded" (5.0, 0x9F) or "server unavailable" (3.1.1,
//! 0x03) before anything is verified; well-behaved clients back off and retry.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Rates are CONNECTs per second; a burst is how many may arrive at once after a quiet
/// period. A rate of 0 turns that limit off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectLimits {
    pub per_ip_per_sec: u32,
    pub per_ip_burst: u32,
    pub global_per_sec: u32,
    pub global_burst: u32,
    /// Source IPs tracked at once; idle (full) buckets are forgotten first.
    pub max_tracked_ips: usize,
}

impl Default for ConnectLimits {
    fn default() -> Self {
        // Generous: one gateway IP may front a whole factory, and a fleet of 10k devices
        // must be able to (re)connect within tens of seconds.
        Self {
            per_ip_per_sec: 500,
            per_ip_burst: 1_000,
            global_per_sec: 2_000,
            global_burst: 4_000,
            max_tracked_ips: 100_000,
        }
    }
}

/// Which limit refused a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerIp,
    Global,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::PerIp => "rate_limited_ip",
            Refused::Global => "rate_limited_global",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    fn full(burst: u32, now_ms: i64) -> Self {
        Self { tokens: f64::from(burst.max(1)), at_ms: now_ms }
    }

    fn refill(&mut self, rate: u32, burst: u32, now_ms: i64) {
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst.max(1)));
        self.at_ms = now_ms.max(self.at_ms);
    }

    fn is_full(&self, burst: u32) -> bool {
        self.tokens >= f64::from(burst.max(1))
    }
}

pub struct ConnectLimiter {
    limits: ConnectLimits,
    state: Mutex<State>,
}

struct State {
    global: Bucket,
    per_ip: HashMap<IpAddr, Bucket>,
}

impl ConnectLimiter {
    pub fn new(limits: ConnectLimits, now_ms: i64) -> Self {
        let global = Bucket::full(limits.global_burst, now_ms);
        Self { limits, state: Mutex::new(State { global, per_ip: HashMap::new() }) }
    }

    /// Takes a token from the IP's bucket and the global one, or neither.
    pub fn check(&self, ip: IpAddr, now_ms: i64) -> Result<(), Refused> {
        let l = &self.limits;
        let mut state = self.state.lock();
        let State { global, per_ip } = &mut *state;
        if l.per_ip_per_sec > 0 && !per_ip.contains_key(&ip) && per_ip.len() >= l.max_tracked_ips.max(1) {
            // Forget buckets that are full again: they hold no information.
            per_ip.retain(|_, b| {
                b.refill(l.per_ip_per_sec, l.per_ip_burst, now_ms);
                !b.is_full(l.per_ip_burst)
            });
            if per_ip.len() >= l.max_tracked_ips.max(1) {
                // Every tracked IP is busy: treat the newcomer under the global limit only.
                tracing::debug!(%ip, "CONNECT limiter: too many source IPs tracked");
            }
        }
        let ip_bucket = if l.per_ip_per_sec > 0 {
            let tracked = per_ip.len() < l.max_tracked_ips.max(1) || per_ip.contains_key(&ip);
            if tracked {
                let bucket = per_ip.entry(ip).or_insert_with(|| Bucket::full(l.per_ip_burst, now_ms));
                bucket.refill(l.per_ip_per_sec, l.per_ip_burst, now_ms);
                if bucket.tokens < 1.0 {
                    return Err(Refused::PerIp);
                }
                Some(bucket)
            } else {
                None
            }
        } else {
            None
        };
        if l.global_per_sec > 0 {
            global.refill(l.global_per_sec, l.global_burst, now_ms);
            if global.tokens < 1.0 {
                return Err(Refused::Global);
            }
            global.tokens -= 1.0;
        }
        if let Some(bucket) = ip_bucket {
            bucket.tokens -= 1.0;
        }
        Ok(())
    }

    /// Source IPs currently tracked (for tests and metrics).
    pub fn tracked_ips(&self) -> usize {
        self.state.lock().per_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn limits(per_ip: u32, ip_burst: u32, global: u32, global_burst: u32) -> ConnectLimits {
        ConnectLimits {
            per_ip_per_sec: per_ip,
            per_ip_burst: ip_burst,
            global_per_sec: global,
            global_burst,
            max_tracked_ips: 4,
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_applies_per_ip() {
        let limiter = ConnectLimiter::new(limits(10, 3, 0, 0), 0);
        for _ in 0..3 {
            assert_eq!(limiter.check(ip(1), 0), Ok(()));
        }
        assert_eq!(limiter.check(ip(1), 0), Err(Refused::PerIp));
        // Another source is not affected.
        assert_eq!(limiter.check(ip(2), 0), Ok(()));
        // 100 ms at 10/s = one more token.
        assert_eq!(limiter.check(ip(1), 100), Ok(()));
        assert_eq!(limiter.check(ip(1), 100), Err(Refused::PerIp));
    }

    #[test]
    fn the_global_limit_spans_all_sources_and_a_refusal_costs_no_token() {
        let limiter = ConnectLimiter::new(limits(100, 100, 10, 2), 0);
        assert_eq!(limiter.check(ip(1), 0), Ok(()));
        assert_eq!(limiter.check(ip(2), 0), Ok(()));
        assert_eq!(limiter.check(ip(3), 0), Err(Refused::Global));
        assert_eq!(limiter.check(ip(3), 100), Ok(()));
        // IP 3's refused attempt did not take from its own bucket either.
        let limiter = ConnectLimiter::new(limits(10, 1, 10, 1), 0);
        assert_eq!(limiter.check(ip(1), 0), Ok(()));
        assert_eq!(limiter.check(ip(2), 0), Err(Refused::Global));
        assert_eq!(limiter.check(ip(2), 100), Ok(()), "ip 2 still has its burst token");
    }

    #[test]
    fn zero_disables_a_limit() {
        let limiter = ConnectLimiter::new(limits(0, 0, 0, 0), 0);
        for _ in 0..10_000 {
            assert_eq!(limiter.check(ip(1), 0), Ok(()));
        }
        assert_eq!(limiter.tracked_ips(), 0);
    }

    #[test]
    fn tracked_ips_are_bounded_and_idle_ones_forgotten() {
        let limiter = ConnectLimiter::new(limits(10, 1, 0, 0), 0);
        for i in 0..4 {
            assert_eq!(limiter.check(ip(i), 0), Ok(()));
        }
        assert_eq!(limiter.tracked_ips(), 4);
        // All four are still empty: a fifth source is not tracked (only the global limit).
        assert_eq!(limiter.check(ip(9), 0), Ok(()));
        assert_eq!(limiter.tracked_ips(), 4);
        // A second later their buckets are full again and are forgotten.
        assert_eq!(limiter.check(ip(9), 1_000), Ok(()));
        assert_eq!(limiter.tracked_ips(), 1);
    }
}
