//! File descriptors: the process's limit and how it is shared out.
//!
//! Every socket is a descriptor, and so are the database, the WAL and the TSDB part files.
//! When half-open HTTP connections took them all, `accept` failed with EMFILE for MQTT and
//! `/healthz` alike. So the soft limit is raised to the hard limit at start, a reserve is
//! kept for files and the database, and the rest is shared between the HTTP and MQTT
//! listeners as connection caps, each refusing beyond its share (ADR 0011).

use crate::config::Config;

/// The soft `RLIMIT_NOFILE` before and after [`raise_nofile_limit`], and the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft descriptor limit to the hard limit (the most an unprivileged process
/// may have). Called once by the binary at start.
pub fn raise_nofile_limit() -> std::io::Result<FdLimit> {
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    let soft = rlimit::increase_nofile_limit(hard)?;
    Ok(FdLimit { before, soft, hard })
}

/// The soft descriptor limit in force now; `None` where it cannot be read.
pub fn nofile_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// Beyond this the arithmetic stops mattering (an unlimited or huge limit).
const LIMIT_CEILING: u64 = 1 << 24;
/// HTTP serves people and integrations, not fleets: more would only cost memory.
const HTTP_AUTO_CEILING: usize = 16_384;
/// One source IP's default share of the HTTP cap, at most.
const HTTP_PER_IP_AUTO_CEILING: usize = 1_024;

/// Connection caps derived from the descriptor limit, unless configured explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBudget {
    pub fd_limit: u64,
    /// Descriptors kept for files, the database and everything else that is not a client socket.
    pub reserve: usize,
    pub http_max: usize,
    pub http_max_per_ip: usize,
    pub mqtt_max: usize,
}

impl ConnectionBudget {
    /// The caps for a process whose soft limit is `fd_limit`: the reserve (`fd_reserve`,
    /// at most half the limit) stays free; of the rest HTTP gets a quarter (at most
    /// 16,384) and MQTT the remainder; one client IP gets a quarter of HTTP's (at most
    /// 1,024). Explicit `http.max_connections`, `http.max_connections_per_ip` and
    /// `mqtt.max_connections` win.
    pub fn new(fd_limit: u64, config: &Config) -> Self {
        let limit = usize::try_from(fd_limit.min(LIMIT_CEILING)).unwrap_or(usize::MAX);
        let reserve = config.fd_reserve.min(limit / 2);
        let usable = limit - reserve;
        let http_auto = (usable / 4).clamp(1, HTTP_AUTO_CEILING);
        let http_max = config.http.max_connections.unwrap_or(http_auto);
        let http_max_per_ip =
            config.http.max_connections_per_ip.unwrap_or_else(|| (http_max / 4).clamp(1, HTTP_PER_IP_AUTO_CEILING));
        let mqtt_max = config.mqtt.max_connections.unwrap_or_else(|| usable.saturating_sub(http_auto).max(1));
        Self { fd_limit, reserve, http_max, http_max_per_ip, mqtt_max }
    }

    /// Whether the caps leave the reserve free (explicit caps may not).
    pub fn leaves_reserve(&self) -> bool {
        let limit = usize::try_from(self.fd_limit.min(LIMIT_CEILING)).unwrap_or(usize::MAX);
        self.http_max.saturating_add(self.mqtt_max).saturating_add(self.reserve) <= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_the_reserve_and_split_the_rest() {
        let config = Config::default();
        let b = ConnectionBudget::new(20_000, &config);
        assert_eq!(b.reserve, config.fd_reserve);
        assert_eq!(b.http_max, (20_000 - config.fd_reserve) / 4);
        assert_eq!(b.http_max + b.mqtt_max + b.reserve, 20_000);
        assert_eq!(b.http_max_per_ip, 1_024);
        assert!(b.leaves_reserve());

        // A small limit: half stays in reserve.
        let b = ConnectionBudget::new(1_024, &config);
        assert_eq!((b.reserve, b.http_max, b.http_max_per_ip, b.mqtt_max), (512, 128, 32, 384));

        // A huge one: HTTP stays bounded.
        let b = ConnectionBudget::new(u64::MAX, &config);
        assert_eq!(b.http_max, 16_384);
        assert!(b.mqtt_max > 1_000_000);
    }

    #[test]
    fn explicit_caps_win_and_are_checked_against_the_limit() {
        let mut config = Config::default();
        config.http.max_connections = Some(50);
        config.http.max_connections_per_ip = Some(5);
        config.mqtt.max_connections = Some(100);
        let b = ConnectionBudget::new(20_000, &config);
        assert_eq!((b.http_max, b.http_max_per_ip, b.mqtt_max), (50, 5, 100));
        assert!(b.leaves_reserve());
        config.http.max_connections = Some(30_000);
        assert!(!ConnectionBudget::new(20_000, &config).leaves_reserve());
    }

    #[test]
    fn the_limit_is_readable_and_raising_it_reaches_the_hard_limit() {
        let limit = raise_nofile_limit().unwrap();
        assert!(limit.soft >= limit.before);
        #[cfg(target_os = "linux")]
        assert_eq!(limit.soft, limit.hard);
        assert_eq!(nofile_limit(), Some(limit.soft));
    }
}
