//! A real S3-compatible server for the tests: `s3s-fs` (installed by scripts/test-deps.sh),
//! started on a free port over a temporary directory, with credentials and one bucket.
//! It can be stopped and restarted on the same port and data, to test storage outages.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const ACCESS_KEY: &str = "factoryops-test";
pub const SECRET_KEY: &str = "factoryops-test-secret";
pub const BUCKET: &str = "factoryops";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    pub dir: TempDir,
}

/// The `s3s-fs` binary, if installed.
pub fn binary() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let candidates = home.into_iter().map(|h| h.join("bin/s3s-fs")).chain([PathBuf::from("/usr/local/bin/s3s-fs")]);
    candidates.into_iter().find(|p| p.exists()).or_else(|| {
        let out = Command::new("sh").args(["-c", "command -v s3s-fs"]).output().ok()?;
        let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!path.is_empty()).then(|| PathBuf::from(path))
    })
}

impl S3Server {
    /// Starts a server with an empty bucket; `None` when `s3s-fs` is missing (skip with a
    /// loud message; panics under `CI=true`).
    pub async fn start() -> Option<Self> {
        let Some(binary) = binary() else {
            return crate::unavailable("s3s-fs", "binary not found; `make test` installs it");
        };
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("cannot create a temp dir: {e}"),
        };
        if let Err(e) = std::fs::create_dir_all(dir.path().join(BUCKET)) {
            panic!("cannot create the bucket directory: {e}");
        }
        let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => panic!("no free port: {e}"),
        };
        let mut server = Self { binary, child: None, port, dir };
        server.restart().await;
        Some(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `object_store_url` that reaches this server (keys go in `object_store.*`).
    pub fn url(&self) -> String {
        format!("s3://{BUCKET}?endpoint={}&region={REGION}&path_style=true", self.endpoint())
    }

    /// Kills the server (as a crash would); the data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and data, and waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let child = Command::new(&self.binary)
                .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(e) => panic!("cannot start {}: {e}", self.binary.display()),
            };
            // Up when it accepts a connection; exited early = the port is not free yet.
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("s3s-fs did not start on port {} within 20 s", self.port);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
