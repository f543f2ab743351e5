#![allow(clippy::unwrap_used)]
//! The HTTP edge under slow and greedy clients (ADR 0011): half-open connections are
//! closed after the header-read timeout while health, the API and MQTT keep answering;
//! connection caps per client IP and in total answer 503; the binary raises its descriptor
//! limit and survives a flood beyond it; refusals are logged rate-limited and clipped.
//! The edge does not depend on the database backend, so these run on SQLite only.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::binary::{Running, provision};
use common::{TestApp, mqtt, test_config};
use factoryops_platform::Config;
use factoryops_testkit::{Backend, TestDatabase};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";

/// A connection from a chosen loopback address (127.0.0.0/8 is all loopback on Linux).
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until the server closes (EOF or reset) and returns what was read, or `None`
/// when the connection is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| out)
}

/// A complete `GET` on a fresh connection from `source`; the raw response.
async fn raw_get(addr: SocketAddr, source: [u8; 4], path: &str) -> String {
    let mut stream = connect_from(source, addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    String::from_utf8_lossy(&read_until_closed(&mut stream, Duration::from_secs(10)).await.unwrap()).into_owned()
}

fn http_addr(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// A value of `/metrics`: the line that starts with `series` (name plus labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics(app: &TestApp) -> String {
    app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

async fn sqlite_app(edit: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let mut config = test_config(&db);
    edit(&mut config);
    TestApp::spawn_with(db, config).await
}

/// Factory `plant-a`, its super admin and device `press-1`: (admin token, device secret).
async fn provision_app(app: &TestApp) -> (String, String) {
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    let (status, body) =
        app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "P"})).await;
    assert_eq!(status, 201, "{body}");
    let (status, creds) =
        app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;
    assert_eq!(status, 201, "{creds}");
    (admin, creds["secret"].as_str().unwrap().to_string())
}

/// 3,000 half-open connections (half sent a request head without its blank line, half
/// nothing) are held, `/healthz`, an authenticated call and an MQTT CONNECT answer
/// meanwhile, and the server closes every one of them after the header-read timeout.
/// Before: they stayed open for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_after_the_header_timeout_while_everything_else_answers() {
    // Client and server sockets share this process's descriptors: 6,000 and more.
    factoryops_platform::fdlimit::raise_nofile_limit().unwrap();
    const HALF_OPEN: usize = 3_000;
    let header_timeout = Duration::from_secs(5);
    let app = sqlite_app(|c| {
        c.http.header_read_timeout_secs = header_timeout.as_secs();
        c.http.max_connections = Some(HALF_OPEN + 100);
        c.http.max_connections_per_ip = Some(HALF_OPEN + 100);
    })
    .await;
    let (admin, secret) = provision_app(&app).await;
    let addr = http_addr(&app);

    let started = Instant::now();
    let mut held = Vec::with_capacity(HALF_OPEN);
    for i in 0..HALF_OPEN {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            stream.write_all(PARTIAL_HEAD).await.unwrap();
        }
        held.push(stream);
    }
    let opened = started.elapsed();

    let answering = Instant::now();
    let (status, body) = app.get("/healthz", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, me) = app.get("/api/v1/me", Some(&admin)).await;
    assert_eq!(status, 200, "{me}");
    let (_client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", &secret);
    assert_eq!(mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    let answered = answering.elapsed();
    let open_now = metric(&metrics(&app).await, "factoryops_http_connections").unwrap();
    println!("opened {HALF_OPEN} in {opened:?}; health, API and MQTT answered in {answered:?}; {open_now} open");
    if started.elapsed() < header_timeout {
        assert!(open_now >= HALF_OPEN as f64, "the half-open connections were held: {open_now}");
    }

    // Every one is closed by the server after the header timeout (and not much later).
    let deadline = started + header_timeout + Duration::from_secs(10);
    for (i, stream) in held.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            read_until_closed(stream, left).await.is_some(),
            "connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    let closed_after = started.elapsed();
    assert!(closed_after >= header_timeout, "closed before the timeout: {closed_after:?}");
    println!("all closed after {closed_after:?}");
    let text = metrics(&app).await;
    let timed_out = metric(&text, r#"factoryops_http_connections_timed_out_total{reason="header_read"}"#).unwrap();
    assert!(timed_out >= HALF_OPEN as f64, "{text}");
    assert!(metric(&text, "factoryops_http_connections").unwrap() < 10.0, "{text}");
    app.stop().await;
}

/// One client IP gets at most its share; beyond it a 503 problem with `Retry-After`
/// before the close. Other clients still get in until the total cap, which answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_and_total_caps_get_a_503_problem() {
    let app = sqlite_app(|c| {
        c.http.max_connections = Some(6);
        c.http.max_connections_per_ip = Some(3);
    })
    .await;
    let addr = http_addr(&app);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from([127, 0, 0, 2], addr).await);
    }
    let mut over = connect_from([127, 0, 0, 2], addr).await;
    let response = read_until_closed(&mut over, Duration::from_secs(5)).await.expect("refused and closed at once");
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("content-type: application/problem+json"), "{head}");
    assert!(head.contains("retry-after: 5"), "{head}");
    let problem: Value = serde_json::from_str(body).unwrap();
    assert_eq!(problem["type"], "urn:factoryops:problem:too-many-connections");
    assert!(problem["detail"].as_str().unwrap().contains("this client"), "{problem}");

    // Another client is not affected…
    let ok = raw_get(addr, [127, 0, 0, 3], "/healthz").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // …until the total cap: 3 + 3 open, the next one from anywhere is refused.
    for _ in 0..3 {
        held.push(connect_from([127, 0, 0, 3], addr).await);
    }
    let refused = raw_get(addr, [127, 0, 0, 4], "/healthz").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many open connections; retry later"), "{refused}");

    // Closing frees the places; the refusals were counted by reason.
    drop(held);
    let text = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(response) = app.client.get(app.url("/metrics")).send().await
            && response.status() == 200
        {
            break response.text().await.unwrap();
        }
    };
    assert_eq!(metric(&text, r#"factoryops_http_connections_refused_total{reason="per_ip"}"#), Some(1.0), "{text}");
    assert_eq!(metric(&text, r#"factoryops_http_connections_refused_total{reason="total"}"#), Some(1.0), "{text}");
    app.stop().await;
}

/// A connection on which nothing moves is closed after the idle timeout even while the
/// header timeout has not passed; a keep-alive connection waiting for its next request
/// is closed after the header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_keep_alive_connections_are_closed() {
    let app = sqlite_app(|c| {
        c.http.header_read_timeout_secs = 30;
        c.http.idle_timeout_secs = 1;
    })
    .await;
    let mut stalled = TcpStream::connect(http_addr(&app)).await.unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    assert!(read_until_closed(&mut stalled, Duration::from_secs(10)).await.is_some());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    let text = metrics(&app).await;
    assert_eq!(metric(&text, r#"factoryops_http_connections_timed_out_total{reason="idle"}"#), Some(1.0), "{text}");
    app.stop().await;

    let app = sqlite_app(|c| c.http.header_read_timeout_secs = 1).await;
    let mut keep_alive = TcpStream::connect(http_addr(&app)).await.unwrap();
    keep_alive.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = keep_alive.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let answered = Instant::now();
    assert!(read_until_closed(&mut keep_alive, Duration::from_secs(10)).await.is_some());
    let took = answered.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    app.stop().await;
}

fn log_lines(server: &Running, message: &str) -> Vec<Value> {
    let log = server.log.lock().unwrap();
    log.iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"].as_str().is_some_and(|m| m.starts_with(message)))
        .collect()
}

/// The real binary under a low descriptor limit (hard 1,024, soft 256): it raises the soft
/// limit, sizes its caps from it, and a flood of 3,000 half-open connections from one
/// client leaves `/healthz`, the API and MQTT CONNECT working; the refusals are logged a
/// few times, not 3,000. Before: the flood took every descriptor (EMFILE for everyone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_raises_its_descriptor_limit_and_survives_a_flood_beyond_it() {
    factoryops_platform::fdlimit::raise_nofile_limit().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [("FACTORYOPS_HTTP__HEADER_READ_TIMEOUT_SECS", "2".to_string())];
    let mut server = Running::start_with_fd_limit(dir.path(), &env, 256, 1_024);
    let raised = log_lines(&server, "file descriptor limit raised");
    assert_eq!((raised[0]["from"].as_u64(), raised[0]["to"].as_u64()), (Some(256), Some(1_024)), "{raised:?}");
    let caps = log_lines(&server, "connection caps");
    assert_eq!(caps[0]["fd_limit"], 1_024, "{caps:?}");
    assert_eq!(caps[0]["http_max_connections"], 128, "{caps:?}");
    assert_eq!(caps[0]["http_max_connections_per_ip"], 32, "{caps:?}");

    let http = factoryops_platform::http::client();
    let (admin, secret) = provision(&http, &server).await;
    let addr: SocketAddr = server.http_addr.parse().unwrap();
    let started = Instant::now();
    let mut flood = Vec::with_capacity(3_000);
    for i in 0..3_000 {
        let mut stream = connect_from([127, 0, 0, 2], addr).await;
        if i % 2 == 0 {
            // The server may already have refused and closed it.
            let _ = stream.write_all(PARTIAL_HEAD).await;
        }
        flood.push(stream);
    }
    println!("flood of {} opened in {:?}", flood.len(), started.elapsed());

    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let me = http.get(server.url("/api/v1/me")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let (_client, mut el) = mqtt::client(server.mqtt_port, "plant-a/press-1", &secret);
    assert_eq!(mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);

    // Refused ones are closed at once, the 32 admitted ones after the header timeout.
    let deadline = started + Duration::from_secs(15);
    for stream in &mut flood {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(read_until_closed(stream, left).await.is_some(), "still open after {:?}", started.elapsed());
    }
    let metrics = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    // At most 32 at a time were admitted (more only if early ones timed out meanwhile).
    let refused = metric(&metrics, r#"factoryops_http_connections_refused_total{reason="per_ip"}"#).unwrap();
    assert!((2_000.0..=(3_000 - 32) as f64).contains(&refused), "{metrics}");
    let lines = log_lines(&server, "HTTP connection refused");
    assert!(!lines.is_empty() && lines.len() <= 10, "{} refusal lines", lines.len());
    assert!(log_lines(&server, "HTTP accept failed").is_empty());
    server.kill();
}

/// A device publishing to a refused topic of 60 kB, 1,000 times: the log grows by a few
/// kB (clipped topic, rate-limited lines), not by the 58.7 MB it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_with_huge_topics_do_not_flood_the_log() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Running::start(dir.path(), &[]);
    let http = factoryops_platform::http::client();
    let (_, secret) = provision(&http, &server).await;
    let before: usize = server.log.lock().unwrap().iter().map(|l| l.len() + 1).sum();

    let mut options = rumqttc::v5::MqttOptions::new("huge-topics", "127.0.0.1", server.mqtt_port);
    options.set_credentials("plant-a/press-1", &secret);
    options.set_max_packet_size(Some(1 << 20));
    let (client, mut el) = rumqttc::v5::AsyncClient::new(options, 64);
    let topic = format!("factories/plant-a/devices/press-1/{}", "x".repeat(60_000));
    let publisher = tokio::spawn(async move {
        for _ in 0..1_000 {
            client.publish(topic.clone(), QoS::AtLeastOnce, false, r#"{"x": 1}"#).await.unwrap();
        }
        client
    });
    let mut refused = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while refused < 1_000 {
            if let rumqttc::v5::Event::Incoming(Packet::PubAck(ack)) = el.poll().await.unwrap() {
                assert_eq!(ack.reason, rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized);
                refused += 1;
            }
        }
    })
    .await
    .unwrap();
    drop(publisher.await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after: usize = server.log.lock().unwrap().iter().map(|l| l.len() + 1).sum();
    let grown = after - before;
    println!("1,000 refused 60 kB topics grew the log by {grown} bytes");
    assert!(grown < 20_000, "the log grew by {grown} bytes");
    let lines = log_lines(&server, "PUBLISH outside the device's topic refused");
    assert!(!lines.is_empty() && lines.len() <= 10, "{} lines", lines.len());
    let topic = lines[0]["topic"].as_str().unwrap();
    assert!(topic.ends_with("…(60034 bytes)") && topic.len() < 200, "{topic}");
    server.kill();
}

/// A config naming an adapter this binary does not have stops the binary at start, with
/// the key in the message (before: silently ignored); so does an object store URL of a
/// scheme no adapter serves (s3:// and file:// are built in since ADR 0018).
#[test]
fn the_binary_refuses_to_start_with_an_adapter_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, code, says) in [
        ("FACTORYOPS_BUS_URL", "nats://127.0.0.1:4222", 2, "is not built into this binary yet"),
        ("FACTORYOPS_OBJECT_STORE_URL", "gs://bucket", 2, "gs:// is not a known adapter"),
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_factoryops"))
            .arg("serve")
            .env("FACTORYOPS_DATA_DIR", dir.path())
            .env("FACTORYOPS_HTTP_ADDR", "127.0.0.1:0")
            .env("FACTORYOPS_MQTT_ADDR", "127.0.0.1:0")
            .env(var, value)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(code), "{var}={value} must stop the binary at start");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let key = var.trim_start_matches("FACTORYOPS_").to_lowercase();
        assert!((stderr.contains(var) || stderr.contains(&key)) && stderr.contains(says), "{stderr}");
    }
}
