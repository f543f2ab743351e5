//! The in-process harness: the real server on port 0 with a fresh data dir and
//! database per test (SQLite file or a throw-away MariaDB database).
#![allow(dead_code, clippy::unwrap_used)]

pub mod binary;

use std::sync::Arc;

use factoryops::{Components, Server, start};
use factoryops_platform::Config;
use factoryops_platform::secret::{Secret, SecretUrl};
use factoryops_testkit::TestDatabase;
use factoryops_types::OffsetClock;
use serde_json::Value;

pub const ROOT_PASSWORD: &str = "root-password-for-tests";

pub struct TestApp {
    pub base: String,
    /// The server's clock: real time plus an offset the test may advance.
    pub clock: OffsetClock,
    /// The built-in MQTT endpoint's port.
    pub mqtt_port: u16,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    server: Option<Server>,
}

/// A config for a test server: everything on loopback port 0, data in the test's temp dir.
pub fn test_config(db: &TestDatabase) -> Config {
    let mut config = Config {
        data_dir: db.dir.path().join("data"),
        http_addr: "127.0.0.1:0".into(),
        mqtt_addr: "127.0.0.1:0".into(),
        database_url: Some(SecretUrl::new(db.url.clone())),
        root_password: Some(Secret::new(ROOT_PASSWORD)),
        shutdown_timeout_secs: 10,
        ..Config::default()
    };
    // The minimum cost keeps tests fast; the default (12) is covered by the benchmark.
    config.auth.bcrypt_cost = 4;
    config
}

impl TestApp {
    pub async fn spawn(db: TestDatabase) -> Self {
        let config = test_config(&db);
        Self::spawn_with(db, config).await
    }

    pub async fn spawn_with(db: TestDatabase, config: Config) -> Self {
        Self::spawn_components(db, config, Components::all()).await
    }

    pub async fn spawn_components(db: TestDatabase, config: Config, components: Components) -> Self {
        let clock = OffsetClock::new();
        let server = start(config, components, Arc::new(clock.clone())).await.expect("server starts");
        let addr = server.http_addr().expect("http is bound");
        let mqtt_port = server.mqtt_addr().expect("mqtt is bound").port();
        Self {
            base: format!("http://{addr}"),
            clock,
            mqtt_port,
            client: factoryops_platform::http::client(),
            db,
            server: Some(server),
        }
    }

    pub fn clock_now(&self) -> i64 {
        use factoryops_types::Clock;
        self.clock.now_ms()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body)).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let problem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("application/problem+json"));
        let text = response.text().await.expect("body read");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            assert!(problem, "error responses are problem+json: {status} {json}");
        }
        (status, json)
    }

    /// Stops the server the way SIGTERM does and waits for the ordered shutdown.
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(server) = self.server.take() {
            assert!(server.shutdown().await, "shutdown finished within the deadline");
        }
        self.db
    }
}

/// A loopback TCP proxy a test can cut, to make a real dependency unreachable.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    cut: tokio_util_like::Cut,
}

impl TcpProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = tokio_util_like::Cut::default();
        let accept_cut = cut.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => return },
                    _ = accept_cut.wait() => return,
                };
                let conn_cut = accept_cut.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = conn_cut.wait() => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.fire();
    }
}

mod tokio_util_like {
    use std::sync::Arc;

    #[derive(Clone, Default)]
    pub struct Cut(Arc<tokio::sync::Notify>, Arc<std::sync::atomic::AtomicBool>);

    impl Cut {
        pub fn fire(&self) {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            self.0.notify_waiters();
        }

        pub async fn wait(&self) {
            loop {
                let notified = self.0.notified();
                if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        }
    }
}

/// Fixtures for identity-aware tests.
impl TestApp {
    pub async fn root_token(&self) -> String {
        let (status, body) = self
            .post("/api/v1/platform/login", None, serde_json::json!({"username": "root", "password": ROOT_PASSWORD}))
            .await;
        assert_eq!(status, 200, "root login: {body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Creates a factory and its super admin; returns the super admin's access token.
    pub async fn factory_with_admin(&self, root: &str, factory: &str, email: &str, password: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/platform/factories",
                Some(root),
                serde_json::json!({"id": factory, "name": format!("Factory {factory}"), "timezone": "Europe/Berlin"}),
            )
            .await;
        assert_eq!(status, 201, "create factory: {body}");
        let (status, body) = self
            .post(
                &format!("/api/v1/platform/factories/{factory}/super-admins"),
                Some(root),
                serde_json::json!({"email": email, "name": "Super Admin", "password": password}),
            )
            .await;
        assert_eq!(status, 201, "create super admin: {body}");
        self.login(factory, email, password).await["access_token"].as_str().unwrap().to_string()
    }

    /// Logs in and returns the whole login response (asserting success).
    pub async fn login(&self, factory: &str, email: &str, password: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/v1/factories/{factory}/auth/login"),
                None,
                serde_json::json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "login {email}@{factory}: {body}");
        body
    }

    /// Creates a user in `factory` as its super admin; returns (user id, access token).
    pub async fn user_with(
        &self,
        admin: &str,
        factory: &str,
        email: &str,
        role: &str,
        permissions: &[&str],
    ) -> (String, String) {
        let password = "user-password-123";
        let (status, body) = self
            .post(
                &format!("/api/v1/factories/{factory}/users"),
                Some(admin),
                serde_json::json!({"email": email, "name": email, "role": role, "permissions": permissions, "password": password}),
            )
            .await;
        assert_eq!(status, 201, "create user: {body}");
        let id = body["id"].as_str().unwrap().to_string();
        let token = self.login(factory, email, password).await["access_token"].as_str().unwrap().to_string();
        (id, token)
    }
}

/// MQTT helpers with a real client (rumqttc, MQTT 3.1.1).
pub mod mqtt {
    use std::time::Duration;

    use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS};

    const WAIT: Duration = Duration::from_secs(10);

    pub fn client(port: u16, username: &str, secret: &str) -> (AsyncClient, EventLoop) {
        let mut opts = MqttOptions::new(format!("test-{}", uuid_like()), "127.0.0.1", port);
        opts.set_credentials(username, secret);
        opts.set_keep_alive(Duration::from_secs(30));
        AsyncClient::new(opts, 16)
    }

    fn uuid_like() -> u64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }

    /// Polls until the CONNACK; its return code.
    pub async fn connack(el: &mut EventLoop) -> Result<ConnectReturnCode, String> {
        tokio::time::timeout(WAIT, async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack.code),
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Ok(code),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no CONNACK".to_string())?
    }

    /// Publishes with QoS 1 and waits for the PUBACK; `Err` when the connection ends first.
    pub async fn publish_acked(
        client: &AsyncClient,
        el: &mut EventLoop,
        topic: &str,
        payload: &str,
    ) -> Result<(), String> {
        client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.map_err(|e| e.to_string())?;
        tokio::time::timeout(WAIT, async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no PUBACK".to_string())?
    }
}
