//! The real `factoryops` binary as a child process, for crash and signal tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

pub struct Running {
    pub child: Child,
    /// `http://127.0.0.1:port`
    pub http: String,
    /// `127.0.0.1:port`
    pub http_addr: String,
    pub mqtt_port: u16,
    /// Every line the server wrote to stdout (its JSON log) so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// `factoryops serve` on free ports with `data_dir`, plus `env`; returns once it logged
    /// both addresses.
    pub fn start(data_dir: &Path, env: &[(&str, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_factoryops"));
        command.arg("serve");
        Self::start_command(command, data_dir, env)
    }

    /// Like [`Running::start`] with the descriptor limit set first (`ulimit -Sn soft -Hn hard`).
    pub fn start_with_fd_limit(data_dir: &Path, env: &[(&str, String)], soft: u64, hard: u64) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" serve"))
            .arg(env!("CARGO_BIN_EXE_factoryops"));
        Self::start_command(command, data_dir, env)
    }

    fn start_command(mut command: Command, data_dir: &Path, env: &[(&str, String)]) -> Self {
        command
            .env("FACTORYOPS_DATA_DIR", data_dir)
            .env("FACTORYOPS_HTTP_ADDR", "127.0.0.1:0")
            .env("FACTORYOPS_MQTT_ADDR", "127.0.0.1:0")
            .env("FACTORYOPS_LOG_FORMAT", "json")
            .env("FACTORYOPS_ROOT_PASSWORD", super::ROOT_PASSWORD)
            .env("FACTORYOPS_AUTH__BCRYPT_COST", "4")
            .env("FACTORYOPS_SHUTDOWN_TIMEOUT_SECS", "10")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    let message = event["message"].as_str().unwrap_or_default().to_string();
                    if message == "http listening" || message == "mqtt listening" {
                        let _ = tx.send((message, event["addr"].as_str().unwrap_or_default().to_string()));
                    }
                }
            }
        });
        let (mut http, mut mqtt) = (None, None);
        while http.is_none() || mqtt.is_none() {
            let (what, addr) = rx.recv_timeout(Duration::from_secs(30)).expect("the server logs its addresses");
            if what == "http listening" { http = Some(addr) } else { mqtt = Some(addr) }
        }
        let http_addr = http.unwrap();
        let mqtt_port = mqtt.unwrap().rsplit(':').next().unwrap().parse().unwrap();
        Self { child, http: format!("http://{http_addr}"), http_addr, mqtt_port, log }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = std::process::Command::new("kill").arg("-KILL").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }
}

/// POST that must succeed; the JSON answer.
pub async fn post(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// Factory `plant-a` with super admin `b@a.example` and device `press-1`; returns the
/// admin's access token and the device secret.
pub async fn provision(client: &reqwest::Client, server: &Running) -> (String, String) {
    let root = post(
        client,
        server.url("/api/v1/platform/login"),
        None,
        json!({"username": "root", "password": super::ROOT_PASSWORD}),
    )
    .await;
    let root = root["access_token"].as_str().unwrap().to_string();
    post(client, server.url("/api/v1/platform/factories"), Some(&root), json!({"id": "plant-a", "name": "A"})).await;
    post(
        client,
        server.url("/api/v1/platform/factories/plant-a/super-admins"),
        Some(&root),
        json!({"email": "b@a.example", "name": "B", "password": "boss-password-1"}),
    )
    .await;
    let admin = login(client, server).await;
    post(client, server.url("/api/v1/factories/plant-a/devices"), Some(&admin), json!({"id": "press-1", "name": "P"}))
        .await;
    let creds =
        post(client, server.url("/api/v1/factories/plant-a/devices/press-1/credentials"), Some(&admin), json!({}))
            .await;
    (admin, creds["secret"].as_str().unwrap().to_string())
}

pub async fn login(client: &reqwest::Client, server: &Running) -> String {
    let login = post(
        client,
        server.url("/api/v1/factories/plant-a/auth/login"),
        None,
        json!({"email": "b@a.example", "password": "boss-password-1"}),
    )
    .await;
    login["access_token"].as_str().unwrap().to_string()
}
