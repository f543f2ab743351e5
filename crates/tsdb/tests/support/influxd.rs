//! Starts a private `influxd` (InfluxDB 1.x) on free ports with a temporary directory.
//! Shared by the InfluxDB tests and the side-by-side benchmark.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Influxd {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub rpc_port: u16,
    extra_config: String,
    /// Appended to the `[http]` section.
    http_config: String,
    child: Option<Child>,
}

/// The `influxd` binary, if installed.
pub fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("INFLUXD") {
        // An explicit path wins; a missing one means "not installed" (to test the skip).
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    ["/usr/bin/influxd", "/usr/local/bin/influxd"].iter().map(PathBuf::from).find(|p| p.exists()).or_else(|| {
        let out = Command::new("sh").args(["-c", "command -v influxd"]).output().ok()?;
        let s = String::from_utf8(out.stdout).ok()?;
        let s = s.trim();
        (!s.is_empty()).then(|| PathBuf::from(s))
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Influxd {
    /// Starts `influxd`, or returns `None` (skip with a loud message; panics under `CI=true`).
    pub fn start() -> Option<Influxd> {
        Self::start_with("")
    }

    /// `extra_config` is appended to the `[data]` section.
    pub fn start_with(extra_config: &str) -> Option<Influxd> {
        if binary().is_none() {
            return factoryops_testkit::unavailable(
                "InfluxDB",
                "`influxd` not found; `apt-get install influxdb` (scripts/test-deps.sh)",
            );
        }
        let mut d = Influxd {
            dir: tempfile::tempdir().unwrap(),
            http_port: free_port(),
            rpc_port: free_port(),
            extra_config: extra_config.to_string(),
            http_config: String::new(),
            child: None,
        };
        d.spawn();
        Some(d)
    }

    /// With authentication on (`[http] auth-enabled`) and one admin user.
    pub async fn start_with_auth(user: &str, password: &str) -> Option<Influxd> {
        let mut d = Self::start_with("")?;
        d.kill();
        d.http_config = "  auth-enabled = true".into();
        d.spawn();
        // With no user yet, InfluxDB 1.x accepts exactly this statement without credentials.
        let q = format!("CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES");
        let r = factoryops_platform::http::client()
            .post(format!("http://127.0.0.1:{}/query", d.http_port))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(url::form_urlencoded::Serializer::new(String::new()).append_pair("q", &q).finish())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        Some(d)
    }

    pub fn url(&self, db: &str) -> String {
        format!("http://127.0.0.1:{}/?db={db}", self.http_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.dir.path().join("wal")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn write_config(&self) -> PathBuf {
        let root = self.dir.path();
        let cfg = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"

[meta]
  dir = "{root}/meta"

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
{extra}

[coordinator]
  log-queries-after = "0s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
  max-row-limit = 0
{http_extra}

[continuous_queries]
  enabled = false
"#,
            rpc = self.rpc_port,
            http = self.http_port,
            root = root.display(),
            extra = self.extra_config,
            http_extra = self.http_config,
        );
        let path = root.join("influxdb.conf");
        std::fs::write(&path, cfg).unwrap();
        path
    }

    /// (Re)starts the process on the same ports and directories and waits for `/ping`.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let cfg = self.write_config();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("influxd.log")).unwrap();
        let child = Command::new(binary().unwrap())
            .arg("-config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start influxd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ping(self.http_port) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("influxd exited with {status}; log:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "influxd did not answer /ping within 60 s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /ping` answers 204.
pub fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /ping HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).unwrap_or(0);
    std::str::from_utf8(&buf[..n]).is_ok_and(|r| r.starts_with("HTTP/1.0 204") || r.starts_with("HTTP/1.1 204"))
}

/// Total size of the files under `dir`.
pub fn du(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.filter_map(Result::ok)
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() { du(&e.path()) } else { m.len() }
        })
        .sum()
}

/// user + system CPU seconds of a process, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the comm: state is index 0, utime is field 14 overall → index 11.
    (ticks(11) + ticks(12)) / 100.0
}
