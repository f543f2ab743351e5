//! The MQTT endpoint's resource guards, with raw sockets: a socket that never completes
//! its CONNECT (or its TLS handshake) is closed after `connect_timeout_ms`, and the
//! endpoint-wide in-flight window `max_inflight_total` bounds the messages read but not
//! yet acknowledged over all connections together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use factoryops_ingest::IngestConfig;
use factoryops_ingest::mqtt::{MqttConfig, MqttTlsConfig, telemetry_topic};
use factoryops_testkit::tls::TestCa;
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_tsdb::{Point, Sample, SeriesQuery, StoreHealth, TelemetryStore, TsdbError};
use factoryops_types::{DeviceId, FactoryId, PropertyName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Env, StoreKind, TestStore, device, env, factory, provision, server};

/// Bounds a failure only: every wait below ends on an event (a close, an ack).
const WAIT: Duration = Duration::from_secs(10);

/// Reads until the server closes the socket; panics if it stays open for `WAIT`.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(socket: &mut S, what: &str) -> Vec<u8> {
    let mut rest = Vec::new();
    match tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await {
        Ok(_) => rest,
        Err(_) => panic!("{what}: the server kept the socket open"),
    }
}

async fn wait_no_connections(env: &Env) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.ingestor.metrics().mqtt_connections.get() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "connections still counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Silent sockets, a CONNECT cut off after its fixed header, and a TLS socket that never
/// sends its ClientHello are all closed after `connect_timeout_ms` without an answer; a
/// client that does connect is served.
async fn sockets_without_connect_are_closed_after_the_timeout(db: TestDatabase) {
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), IngestConfig::default()).await;
    let f = factory("plant-a");
    let secret = provision(&env, &f, "press-1").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCa::new("MQTT test CA").issue(&[]);
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert_pem()).unwrap();
    std::fs::write(&key_path, cert.key_pem()).unwrap();
    let tls = MqttTlsConfig { addr: "127.0.0.1:0".into(), cert_path, key_path };
    let server = server(&env, MqttConfig { connect_timeout_ms: 200, tls: Some(tls), ..MqttConfig::default() }).await;

    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut partial = TcpStream::connect(server.local_addr()).await.unwrap();
    // CONNECT, remaining length 40, then nothing.
    partial.write_all(&[0x10, 40, 0, 4]).await.unwrap();
    let mut no_hello = TcpStream::connect(server.tls_local_addr().unwrap()).await.unwrap();
    assert_eq!(closed_by_server(&mut silent, "no CONNECT").await, b"");
    assert_eq!(closed_by_server(&mut partial, "half a CONNECT").await, b"");
    assert_eq!(closed_by_server(&mut no_hello, "no TLS handshake").await, b"");
    wait_no_connections(&env).await;

    // The timeout is for the CONNECT only: a connected client is not cut off by it.
    let mut ok = TcpStream::connect(server.local_addr()).await.unwrap();
    ok.write_all(&raw_connect("c1", "plant-a/press-1", &secret, 30)).await.unwrap();
    let mut connack = [0u8; 4];
    ok.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    let topic = telemetry_topic(&f, &device("press-1"));
    tokio::time::sleep(Duration::from_millis(400)).await; // past the CONNECT timeout
    ok.write_all(&raw_publish_qos1(&topic, 1, br#"{"n": 1}"#)).await.unwrap();
    let mut puback = [0u8; 4];
    tokio::time::timeout(WAIT, ok.read_exact(&mut puback)).await.unwrap().unwrap();
    assert_eq!(puback, [0x40, 2, 0, 1]);
    server.shutdown().await;
}

/// Records the size of each write; each write takes `delay`, so without the endpoint's
/// window every message of every connection would pile up into the next write.
#[derive(Default)]
struct BatchStore {
    inner: TestStore,
    largest: AtomicUsize,
    total: AtomicUsize,
}

#[async_trait]
impl TelemetryStore for BatchStore {
    async fn write(&self, factory: &FactoryId, points: &[Point]) -> Result<(), TsdbError> {
        self.largest.fetch_max(points.len(), Ordering::SeqCst);
        self.total.fetch_add(points.len(), Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.inner.write(factory, points).await
    }
    async fn query(&self, factory: &FactoryId, query: &SeriesQuery) -> Result<Vec<Sample>, TsdbError> {
        self.inner.query(factory, query).await
    }
    async fn latest(&self, factory: &FactoryId, device: &DeviceId) -> Result<Vec<(PropertyName, Sample)>, TsdbError> {
        self.inner.latest(factory, device).await
    }
    async fn health(&self) -> StoreHealth {
        self.inner.health().await
    }
    async fn flush(&self) -> Result<(), TsdbError> {
        Ok(())
    }
}

/// Three connections with a window of 64 each send 20 QoS 1 messages at once; the
/// endpoint admits at most `max_inflight_total` = 4 of them at a time. A write holds only
/// admitted, unacknowledged messages (one point each), so no write is larger than 4, and
/// every message is still acknowledged (the cap delays, it never drops).
async fn max_inflight_total_bounds_messages_across_connections(db: TestDatabase) {
    const CAP: usize = 4;
    const PER_CONN: u16 = 20;
    let store = Arc::new(BatchStore::default());
    let env = env(&db, StoreKind::Test(store.clone()), IngestConfig::default()).await;
    let f = factory("plant-a");
    let secret = provision(&env, &f, "press-1").await;
    let config = MqttConfig { receive_maximum: 64, max_inflight_total: CAP, ..MqttConfig::default() };
    let server = server(&env, config).await;
    let topic = telemetry_topic(&f, &device("press-1"));
    let mut sockets = Vec::new();
    for c in 0..3 {
        let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
        s.write_all(&raw_connect(&format!("c{c}"), "plant-a/press-1", &secret, 30)).await.unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        sockets.push(s);
    }
    let now = env.clock.now_ms();
    for (c, s) in sockets.iter_mut().enumerate() {
        let mut burst = Vec::new();
        for pkid in 1..=PER_CONN {
            let ts = now - 60_000 + (c as i64) * 1_000 + i64::from(pkid);
            burst.extend(raw_publish_qos1(&topic, pkid, format!(r#"{{"ts": {ts}, "c{c}": {pkid}}}"#).as_bytes()));
        }
        s.write_all(&burst).await.unwrap();
    }
    for s in &mut sockets {
        let mut acks = vec![0u8; 4 * usize::from(PER_CONN)];
        tokio::time::timeout(WAIT, s.read_exact(&mut acks)).await.unwrap().unwrap();
        let pkids: Vec<u16> = acks.chunks(4).map(|a| u16::from_be_bytes([a[2], a[3]])).collect();
        assert_eq!(pkids, (1..=PER_CONN).collect::<Vec<_>>(), "every message acked, in order");
    }
    assert_eq!(store.total.load(Ordering::SeqCst), 3 * usize::from(PER_CONN));
    let largest = store.largest.load(Ordering::SeqCst);
    assert!(largest <= CAP, "a write held {largest} messages: more than max_inflight_total = {CAP} were admitted");
    server.shutdown().await;
}

fn raw_publish_qos1(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x32, body.len() as u8];
    packet.extend(body);
    packet
}

/// A raw 3.1.1 CONNECT (clean session) with a client id, user name and password.
fn raw_connect(client_id: &str, user: &str, pass: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::new();
    let put = |b: &mut Vec<u8>, s: &[u8]| {
        b.extend_from_slice(&(s.len() as u16).to_be_bytes());
        b.extend_from_slice(s);
    };
    put(&mut body, b"MQTT");
    body.push(4);
    body.push(0xc2);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put(&mut body, client_id.as_bytes());
    put(&mut body, user.as_bytes());
    put(&mut body, pass.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

backend_matrix!(
    sockets_without_connect_are_closed_after_the_timeout,
    max_inflight_total_bounds_messages_across_connections,
);
