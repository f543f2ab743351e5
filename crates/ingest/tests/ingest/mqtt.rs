use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use factoryops_ingest::mqtt::{MqttConfig, MqttServer, MqttTlsConfig, telemetry_topic};
use factoryops_ingest::{DeviceStatus, DeviceUpdate, IngestConfig};
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_tsdb::Value;
use factoryops_types::{DeviceId, FactoryId};
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason};
use rumqttc::{ConnectReturnCode, Event, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Env, StoreKind, TestStore, device, env, factory, provision, server};

const WAIT: Duration = Duration::from_secs(10);

fn v4_client(port: u16, client_id: &str, username: &str, secret: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_credentials(username, secret);
    opts.set_keep_alive(Duration::from_secs(30));
    rumqttc::AsyncClient::new(opts, 16)
}

fn v5_client(
    port: u16,
    client_id: &str,
    username: &str,
    secret: &str,
) -> (rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop) {
    let mut opts = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_credentials(username, secret);
    opts.set_keep_alive(Duration::from_secs(30));
    rumqttc::v5::AsyncClient::new(opts, 16)
}

/// Polls a 3.1.1 event loop until an incoming packet matches; `Err` when the connection ends first.
async fn next_v4(
    el: &mut rumqttc::EventLoop,
    want: impl Fn(&Packet) -> bool,
) -> Result<Packet, rumqttc::ConnectionError> {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(p) = el.poll().await?
                && want(&p)
            {
                return Ok(p);
            }
        }
    })
    .await
    .expect("timed out waiting for the broker")
}

async fn next_v5(
    el: &mut rumqttc::v5::EventLoop,
    want: impl Fn(&Packet5) -> bool,
) -> Result<Packet5, rumqttc::v5::ConnectionError> {
    tokio::time::timeout(WAIT, async {
        loop {
            if let rumqttc::v5::Event::Incoming(p) = el.poll().await?
                && want(&p)
            {
                return Ok(p);
            }
        }
    })
    .await
    .expect("timed out waiting for the broker")
}

/// rumqttc sends only while its event loop is polled: poll until the PUBLISH went out.
async fn sent_v4(el: &mut rumqttc::EventLoop) {
    tokio::time::timeout(WAIT, async {
        while !matches!(el.poll().await.unwrap(), Event::Outgoing(rumqttc::Outgoing::Publish(_))) {}
    })
    .await
    .unwrap();
}

async fn sent_v5(el: &mut rumqttc::v5::EventLoop) {
    tokio::time::timeout(WAIT, async {
        while !matches!(el.poll().await.unwrap(), rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Publish(_))) {}
    })
    .await
    .unwrap();
}

async fn latest(env: &Env, f: &FactoryId, d: &DeviceId) -> Vec<(String, Value)> {
    env.store.latest(f, d).await.unwrap().into_iter().map(|(n, s)| (n.into_string(), s.value)).collect()
}

/// Waits until the device has at least `n` properties stored (QoS 0 has no ack to wait for).
async fn wait_for_points(env: &Env, f: &FactoryId, d: &DeviceId, n: usize) -> Vec<(String, Value)> {
    for _ in 0..200 {
        let points = latest(env, f, d).await;
        if points.len() >= n {
            return points;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("points never arrived: {:?}", latest(env, f, d).await);
}

async fn v311_publish_acl_and_sessions(db: TestDatabase) {
    let env = env(&db, StoreKind::Embedded, IngestConfig::default()).await;
    let f = factory("plant-a");
    let (d, other) = (device("press-1"), device("press-2"));
    let secret = provision(&env, &f, "press-1").await;
    provision(&env, &f, "press-2").await;
    let server = server(&env, MqttConfig::default()).await;
    let port = server.local_addr().port();

    let (client, mut el) = v4_client(port, "c1", "plant-a/press-1", &secret);
    let topic = telemetry_topic(&f, &d);
    client
        .publish(&topic, QoS::AtLeastOnce, false, r#"{"power_kw": 12.5, "running": true, "label": ["bad"]}"#)
        .await
        .unwrap();
    next_v4(&mut el, |p| matches!(p, Packet::PubAck(_))).await.unwrap();
    // Acked means durable: readable right away.
    let points = latest(&env, &f, &d).await;
    assert_eq!(points, vec![("power_kw".into(), Value::Float(12.5)), ("running".into(), Value::Bool(true))]);
    let props = env.ingestor.catalogue().list_for_device(&f, &d).await.unwrap();
    assert_eq!(props.len(), 2);
    let errors = env.ingestor.last_errors(&f, &d);
    assert_eq!(errors[0].property.as_deref(), Some("label"));

    client.publish(&topic, QoS::AtMostOnce, false, r#"{"qos0": 1}"#).await.unwrap();
    sent_v4(&mut el).await;
    wait_for_points(&env, &f, &d, 3).await;

    // Another device's topic: 3.1.1 has no negative PUBACK, so the connection is closed.
    client.publish(telemetry_topic(&f, &other), QoS::AtLeastOnce, false, r#"{"x": 1}"#).await.unwrap();
    assert!(next_v4(&mut el, |p| matches!(p, Packet::PubAck(_))).await.is_err());
    assert!(latest(&env, &f, &other).await.is_empty());
    assert_eq!(env.ingestor.metrics().mqtt_acl_denied.get(), 1);

    // Persistent session: remembered across connections.
    let (_c, mut el) = {
        let mut opts = rumqttc::MqttOptions::new("persistent", "127.0.0.1", port);
        opts.set_credentials("plant-a/press-1", secret.clone());
        opts.set_clean_session(false);
        rumqttc::AsyncClient::new(opts.clone(), 4)
    };
    let Packet::ConnAck(ack) = next_v4(&mut el, |p| matches!(p, Packet::ConnAck(_))).await.unwrap() else {
        unreachable!()
    };
    assert!(!ack.session_present);
    drop(el);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut opts = rumqttc::MqttOptions::new("persistent", "127.0.0.1", port);
    opts.set_credentials("plant-a/press-1", secret.clone());
    opts.set_clean_session(false);
    let (_c, mut el) = rumqttc::AsyncClient::new(opts, 4);
    let Packet::ConnAck(ack) = next_v4(&mut el, |p| matches!(p, Packet::ConnAck(_))).await.unwrap() else {
        unreachable!()
    };
    assert!(ack.session_present);

    server.shutdown().await;
}

async fn v5_publish_acl_and_reasons(db: TestDatabase) {
    let env = env(&db, StoreKind::Embedded, IngestConfig::default()).await;
    let (f, g) = (factory("plant-a"), factory("plant-b"));
    let d = device("press-1");
    let secret = provision(&env, &f, "press-1").await;
    provision(&env, &g, "press-1").await;
    let server = server(&env, MqttConfig::default()).await;
    let (client, mut el) = v5_client(server.local_addr().port(), "c5", "plant-a/press-1", &secret);

    client
        .publish(
            telemetry_topic(&f, &d),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            r#"{"a": 1, "b": [1], "c": {"d": false}}"#,
        )
        .await
        .unwrap();
    let Packet5::PubAck(ack) = next_v5(&mut el, |p| matches!(p, Packet5::PubAck(_))).await.unwrap() else {
        unreachable!()
    };
    assert_eq!(ack.reason, PubAckReason::Success);
    assert_eq!(latest(&env, &f, &d).await, vec![("a".into(), Value::Float(1.0)), ("c.d".into(), Value::Bool(false))]);

    // The same device id in another factory, and another device: refused with 0x87, connection stays.
    for topic in [telemetry_topic(&g, &d), "factories/plant-a/devices/press-2/telemetry".into(), "anything/else".into()]
    {
        client.publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, r#"{"x": 1}"#).await.unwrap();
        let Packet5::PubAck(ack) = next_v5(&mut el, |p| matches!(p, Packet5::PubAck(_))).await.unwrap() else {
            unreachable!()
        };
        assert_eq!(ack.reason, PubAckReason::NotAuthorized);
    }
    assert!(latest(&env, &g, &d).await.is_empty());
    assert_eq!(env.ingestor.metrics().mqtt_acl_denied.get(), 3);

    // Not a JSON object: acknowledged with "payload format invalid", reason recorded.
    client.publish(telemetry_topic(&f, &d), rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "[1, 2]").await.unwrap();
    let Packet5::PubAck(ack) = next_v5(&mut el, |p| matches!(p, Packet5::PubAck(_))).await.unwrap() else {
        unreachable!()
    };
    assert_eq!(ack.reason, PubAckReason::PayloadFormatInvalid);
    assert_eq!(env.ingestor.last_errors(&f, &d)[0].reason, "not_an_object");

    // A `ts` outside the window (older than the store's raw retention, or a day ahead): the
    // same, never stored at the receive time (ADR 0010).
    let now = env.clock.now_ms();
    for (ts, reason) in [(now - 40 * 86_400_000, "timestamp_too_old"), (now + 2 * 86_400_000, "timestamp_in_future")] {
        let payload = format!(r#"{{"ts": {ts}, "late": 1}}"#);
        client
            .publish(telemetry_topic(&f, &d), rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        let Packet5::PubAck(ack) = next_v5(&mut el, |p| matches!(p, Packet5::PubAck(_))).await.unwrap() else {
            unreachable!()
        };
        assert_eq!(ack.reason, PubAckReason::PayloadFormatInvalid);
        assert_eq!(env.ingestor.last_errors(&f, &d)[0].reason, reason);
    }

    // QoS 0 still works on the same connection.
    client
        .publish(telemetry_topic(&f, &d), rumqttc::v5::mqttbytes::QoS::AtMostOnce, false, r#"{"q0": 5}"#)
        .await
        .unwrap();
    sent_v5(&mut el).await;
    wait_for_points(&env, &f, &d, 3).await;
    server.shutdown().await;
}

async fn bad_credentials_are_refused(db: TestDatabase) {
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), IngestConfig::default()).await;
    let f = factory("plant-a");
    let secret = provision(&env, &f, "press-1").await;
    let disabled = provision(&env, &f, "press-2").await;
    env.registry
        .update(&f, &device("press-2"), DeviceUpdate { status: Some(DeviceStatus::Disabled), ..Default::default() }, 0)
        .await
        .unwrap();
    let server = server(&env, MqttConfig::default()).await;
    let port = server.local_addr().port();

    for (user, pass, code) in [
        ("plant-a/press-1", "fod_wrong", ConnectReturnCode::BadUserNamePassword),
        ("plant-b/press-1", secret.as_str(), ConnectReturnCode::BadUserNamePassword),
        ("press-1", secret.as_str(), ConnectReturnCode::BadUserNamePassword),
        ("plant-a/press-2", disabled.as_str(), ConnectReturnCode::NotAuthorized),
    ] {
        let (_c, mut el) = v4_client(port, "x", user, pass);
        match next_v4(&mut el, |_| true).await {
            Err(rumqttc::ConnectionError::ConnectionRefused(got)) => assert_eq!(got, code, "{user}"),
            other => panic!("{user}: expected refusal, got {other:?}"),
        }
    }
    let (_c, mut el) = v5_client(port, "y", "plant-a/press-1", "fod_wrong");
    match next_v5(&mut el, |_| true).await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::v5::mqttbytes::v5::ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    let (_c, mut el) = v5_client(port, "z", "plant-a/press-2", &disabled);
    match next_v5(&mut el, |_| true).await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::v5::mqttbytes::v5::ConnectReturnCode::NotAuthorized)
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    server.shutdown().await;
}

/// Where `mosquitto_pub` connects: the port and any extra options (TLS).
struct Target {
    port: u16,
    extra: Vec<String>,
}

/// Runs `mosquitto_pub`; `None` when it did not finish within `limit` (it is then killed).
async fn mosquitto_pub(
    target: &Target,
    version: &str,
    qos: u8,
    (user, secret): (&str, &str),
    topic: &str,
    payload: &str,
    limit: Duration,
) -> Option<bool> {
    let output = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &target.port.to_string(), "-V", version, "-q", &qos.to_string()])
        .args(&target.extra)
        .args(["-i", &format!("mp-{version}-{qos}"), "-u", user, "-P", secret, "-t", topic, "-m", payload])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, output).await.ok()?.expect("mosquitto_pub runs");
    Some(output.status.success())
}

async fn mosquitto_clients_both_versions(db: TestDatabase) {
    if which("mosquitto_pub").is_none() {
        factoryops_testkit::unavailable::<()>("mosquitto_pub", "apt-get install mosquitto-clients");
        return;
    }
    let env = env(&db, StoreKind::Embedded, IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("meter-1");
    let secret = provision(&env, &f, "meter-1").await;
    let server = server(&env, MqttConfig::default()).await;
    let port = Target { port: server.local_addr().port(), extra: Vec::new() };
    let port = &port;
    let topic = telemetry_topic(&f, &d);
    let mut expected = 0;
    for version in ["mqttv311", "mqttv5"] {
        for qos in [0u8, 1] {
            let name = format!("{}_q{qos}", version.replace("mqtt", ""));
            let payload = format!(r#"{{"{name}": {qos}}}"#);
            assert_eq!(
                mosquitto_pub(port, version, qos, ("plant-a/meter-1", &secret), &topic, &payload, WAIT).await,
                Some(true),
                "{name}"
            );
            expected += 1;
            wait_for_points(&env, &f, &d, expected).await;
        }
        let refused =
            mosquitto_pub(port, version, 1, ("plant-a/meter-1", "fod_nope"), &topic, r#"{"no": 1}"#, WAIT).await;
        assert_eq!(refused, Some(false), "{version}: wrong secret must fail");
    }
    // A foreign topic: refused (v5 PUBACK 0x87, 3.1.1 connection closed, after which
    // mosquitto_pub may keep reconnecting, hence the short limit); nothing stored there.
    let foreign = telemetry_topic(&f, &device("meter-2"));
    for version in ["mqttv5", "mqttv311"] {
        mosquitto_pub(port, version, 1, ("plant-a/meter-1", &secret), &foreign, r#"{"x": 1}"#, Duration::from_secs(2))
            .await;
    }
    assert!(latest(&env, &f, &device("meter-2")).await.is_empty());
    assert_eq!(latest(&env, &f, &d).await.len(), 4);
    server.shutdown().await;
}

async fn tls_listener(db: TestDatabase) {
    if which("mosquitto_pub").is_none() || which("openssl").is_none() {
        factoryops_testkit::unavailable::<()>("mosquitto_pub and openssl", "apt-get install mosquitto-clients openssl");
        return;
    }
    let env = env(&db, StoreKind::Embedded, IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("meter-1");
    let secret = provision(&env, &f, "meter-1").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let tls = MqttTlsConfig { addr: "127.0.0.1:0".into(), cert_path: cert.clone(), key_path: key };
    let server = server(&env, MqttConfig { tls: Some(tls), ..MqttConfig::default() }).await;
    let target = Target {
        port: server.tls_local_addr().unwrap().port(),
        extra: vec!["--cafile".into(), cert.display().to_string(), "--insecure".into()],
    };
    let topic = telemetry_topic(&f, &d);
    for version in ["mqttv311", "mqttv5"] {
        let ok = mosquitto_pub(&target, version, 1, ("plant-a/meter-1", &secret), &topic, r#"{"tls": 1}"#, WAIT).await;
        assert_eq!(ok, Some(true), "{version} over TLS");
        wait_for_points(&env, &f, &d, 1).await;
    }
    // Plain MQTT on the TLS port is not accepted.
    let plain = Target { port: target.port, extra: Vec::new() };
    let ok = mosquitto_pub(
        &plain,
        "mqttv311",
        1,
        ("plant-a/meter-1", &secret),
        &topic,
        r#"{"x": 1}"#,
        Duration::from_secs(3),
    )
    .await;
    assert_ne!(ok, Some(true));
    // A missing key file is a start-up error naming the file.
    let bad = MqttTlsConfig { addr: "127.0.0.1:0".into(), cert_path: cert, key_path: dir.path().join("missing.pem") };
    let err = MqttServer::bind(
        MqttConfig { addr: "127.0.0.1:0".into(), tls: Some(bad), ..MqttConfig::default() },
        env.registry.clone(),
        env.ingestor.clone(),
        env.clock.clone(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    server.shutdown().await;
}

async fn protocol_edges(db: TestDatabase) {
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), IngestConfig::default()).await;
    let f = factory("plant-a");
    let secret = provision(&env, &f, "press-1").await;
    let server = server(&env, MqttConfig { max_packet_bytes: 1024, ..MqttConfig::default() }).await;
    let port = server.local_addr().port();

    // SUBSCRIBE: devices only publish, every filter is refused.
    let (client, mut el) = v4_client(port, "sub", "plant-a/press-1", &secret);
    client.subscribe("factories/plant-a/#", QoS::AtLeastOnce).await.unwrap();
    let Packet::SubAck(ack) = next_v4(&mut el, |p| matches!(p, Packet::SubAck(_))).await.unwrap() else {
        unreachable!()
    };
    assert_eq!(ack.return_codes, vec![rumqttc::SubscribeReasonCode::Failure]);

    // The same client id again takes the session over; a v5 client is told why.
    let (_first, mut first) = v5_client(port, "same", "plant-a/press-1", &secret);
    next_v5(&mut first, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap();
    let (_second, mut second) = v5_client(port, "same", "plant-a/press-1", &secret);
    next_v5(&mut second, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap();
    match next_v5(&mut first, |p| matches!(p, Packet5::Disconnect(_))).await {
        Ok(Packet5::Disconnect(d)) => {
            assert_eq!(d.reason_code, rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::SessionTakenOver)
        }
        Err(rumqttc::v5::ConnectionError::MqttState(_)) => {}
        other => panic!("expected a takeover, got {other:?}"),
    }

    // Disabling a device closes its live connections (v5: DISCONNECT 0x87).
    let (_c, mut live) = v5_client(port, "live", "plant-a/press-1", &secret);
    next_v5(&mut live, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap();
    assert!(server.handle().disconnect_device(&f, &device("press-1")) >= 1);
    match next_v5(&mut live, |p| matches!(p, Packet5::Disconnect(_))).await {
        Ok(Packet5::Disconnect(d)) => {
            assert_eq!(d.reason_code, rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::NotAuthorized)
        }
        Err(rumqttc::v5::ConnectionError::MqttState(_)) => {}
        other => panic!("expected a disconnect, got {other:?}"),
    }

    // Unsupported protocol level (3 = MQTT 3.1): CONNACK 1, then closed.
    let mut socket = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let mut connect = raw_connect("plant-a/press-1", &secret, 30);
    connect[2..10].copy_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 3, 0xc2]);
    socket.write_all(&connect).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply, [0x20, 2, 0, 1]);

    // A packet larger than the maximum is refused from its header alone.
    let mut socket = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    socket.write_all(&raw_connect("plant-a/press-1", &secret, 30)).await.unwrap();
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.unwrap();
    socket.write_all(&[0x32, 0xff, 0xff, 0x03]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
    assert!(env.ingestor.metrics().mqtt_protocol_errors.get() >= 1);

    // Nothing but CONNECT is accepted first.
    let mut socket = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    socket.write_all(&[0xc0, 0]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
    server.shutdown().await;
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}

async fn qos2_and_store_failures_are_not_acked(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    let env = env(&db, StoreKind::Test(store.clone()), IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("press-1");
    let secret = provision(&env, &f, "press-1").await;
    let server = server(&env, MqttConfig::default()).await;
    let port = server.local_addr().port();
    let topic = telemetry_topic(&f, &d);

    let (client, mut el) = v4_client(port, "q2", "plant-a/press-1", &secret);
    client.publish(&topic, QoS::ExactlyOnce, false, r#"{"a": 1}"#).await.unwrap();
    assert!(next_v4(&mut el, |p| matches!(p, Packet::PubRec(_))).await.is_err(), "QoS 2 closes the connection");
    assert_eq!(store.writes.load(Ordering::SeqCst), 0);

    // Store down: no PUBACK, the connection is closed so the device redelivers.
    store.fail.store(true, Ordering::SeqCst);
    let (client, mut el) = v4_client(port, "down", "plant-a/press-1", &secret);
    client.publish(&topic, QoS::AtLeastOnce, false, r#"{"a": 1}"#).await.unwrap();
    assert!(next_v4(&mut el, |p| matches!(p, Packet::PubAck(_))).await.is_err());
    store.fail.store(false, Ordering::SeqCst);
    server.shutdown().await;
}

async fn backpressure_delays_but_never_drops(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    store.delay_ms.store(30, Ordering::SeqCst);
    let env = env(&db, StoreKind::Test(store.clone()), IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("press-1");
    let secret = provision(&env, &f, "press-1").await;
    let server = server(&env, MqttConfig { receive_maximum: 2, ..MqttConfig::default() }).await;
    let mut opts = rumqttc::MqttOptions::new("bp", "127.0.0.1", server.local_addr().port());
    opts.set_credentials("plant-a/press-1", secret);
    opts.set_inflight(20);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 64);
    let topic = telemetry_topic(&f, &d);
    let base = env.clock.now_ms() - 1_000;
    for i in 0..20 {
        client.publish(&topic, QoS::AtLeastOnce, false, format!(r#"{{"ts": {}, "n": {i}}}"#, base + i)).await.unwrap();
    }
    let mut acks = 0;
    while acks < 20 {
        next_v4(&mut el, |p| matches!(p, Packet::PubAck(_))).await.unwrap();
        acks += 1;
    }
    let points = store.points.lock().values().map(Vec::len).sum::<usize>();
    assert_eq!(points, 20);
    // In order: timestamps ascending as sent.
    let series = store.points.lock().values().next().cloned().unwrap();
    assert!(series.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
    server.shutdown().await;
}

/// Messages without `ts` arriving within one millisecond still get distinct, ascending
/// times: with equal ones the store keeps one point per property (newest wins) and the
/// rules see one observation, so a "high" then "low" pair would never raise an alert.
async fn receive_times_of_a_connection_are_distinct(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    let env = env(&db, StoreKind::Test(store.clone()), IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("press-1");
    let secret = provision(&env, &f, "press-1").await;
    let server = server(&env, MqttConfig::default()).await;
    let mut opts = rumqttc::MqttOptions::new("burst", "127.0.0.1", server.local_addr().port());
    opts.set_credentials("plant-a/press-1", secret);
    // Room for the whole burst: the event loop is polled only once every message is queued.
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 64);
    let topic = telemetry_topic(&f, &d);
    let before = env.clock.now_ms();
    for i in 0..40 {
        client.publish(&topic, QoS::AtLeastOnce, false, format!(r#"{{"n": {i}}}"#)).await.unwrap();
    }
    for _ in 0..40 {
        next_v4(&mut el, |p| matches!(p, Packet::PubAck(_))).await.unwrap();
    }
    let series = store.points.lock().values().next().cloned().unwrap();
    assert_eq!(series.len(), 40);
    assert!(series.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms), "{series:?}");
    assert!(series.iter().enumerate().all(|(i, p)| p.value == Value::Float(i as f64)));
    assert!(series[0].ts_ms >= before && series[39].ts_ms <= env.clock.now_ms() + 1_000);
    server.shutdown().await;
}

/// All raw points of one series (the embedded store keeps one per timestamp: newest wins).
async fn series(env: &Env, f: &FactoryId, d: &DeviceId, property: &str) -> Vec<factoryops_tsdb::Sample> {
    let query = factoryops_tsdb::SeriesQuery {
        device: d.clone(),
        property: factoryops_types::PropertyName::parse(property).unwrap(),
        from_ms: 0,
        to_ms: i64::MAX,
        aggregation: None,
        limit: None,
    };
    env.store.query(f, &query).await.unwrap()
}

/// Publishes `n` QoS 1 messages `{"<prop>": i, "k": 1}` (no `ts`) as fast as the
/// connection allows (100 in flight) and waits for every PUBACK.
async fn publish_burst(port: u16, client_id: &str, secret: &str, topic: String, prop: &'static str, values: Vec<u64>) {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_credentials("plant-a/press-1", secret);
    opts.set_inflight(100);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 256);
    let n = values.len();
    let publisher = tokio::spawn(async move {
        for i in values {
            client.publish(&topic, QoS::AtLeastOnce, false, format!(r#"{{"{prop}": {i}, "k": 1}}"#)).await.unwrap();
        }
        client
    });
    let mut acks = 0;
    while acks < n {
        let event = tokio::time::timeout(Duration::from_secs(60), el.poll()).await.unwrap().unwrap();
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acks += 1;
        }
    }
    drop(publisher.await.unwrap());
}

/// A device faster than one message per millisecond, without `ts`: every acknowledged
/// message is its own point. Before, a connection's stamps fell back to the clock's time
/// once they ran 1 s ahead, re-issuing used stamps (5,000 sent → ~1,200 stored).
async fn ten_thousand_fast_messages_are_ten_thousand_points(db: TestDatabase) {
    let env = env(&db, StoreKind::Embedded, IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("press-1");
    let secret = provision(&env, &f, "press-1").await;
    let server = server(&env, MqttConfig::default()).await;
    let started = std::time::Instant::now();
    publish_burst(server.local_addr().port(), "fast", &secret, telemetry_topic(&f, &d), "n", (0..10_000).collect())
        .await;
    let took = started.elapsed();
    for property in ["n", "k"] {
        let points = series(&env, &f, &d, property).await;
        assert_eq!(points.len(), 10_000, "{property}: every acknowledged message is a point");
    }
    let n = series(&env, &f, &d, "n").await;
    // In arrival order, each value once.
    assert!(n.iter().enumerate().all(|(i, p)| p.value == Value::Float(i as f64)), "values in order");
    // The lead stayed bounded: the last stamp is at most 1 s ahead of the clock.
    assert!(n[9_999].ts_ms <= env.clock.now_ms() + 1_000, "{} vs {}", n[9_999].ts_ms, env.clock.now_ms());
    let text = env.metrics.render();
    println!(
        "10,000 messages in {took:?}; {}",
        text.lines().filter(|l| l.contains("stamp_waits_total")).collect::<String>()
    );
    server.shutdown().await;
}

/// Two connections of the same device (e.g. a gateway with two clients), alternating,
/// without `ts`: stamps are per device, not per connection, so no point replaces another.
async fn two_connections_of_one_device_never_collide(db: TestDatabase) {
    let env = env(&db, StoreKind::Embedded, IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("press-1");
    let secret = provision(&env, &f, "press-1").await;
    let server = server(&env, MqttConfig::default()).await;
    let port = server.local_addr().port();
    let topic = telemetry_topic(&f, &d);
    let mut tasks = Vec::new();
    for c in 0..2u64 {
        let (secret, topic) = (secret.clone(), topic.clone());
        // Even values from one connection, odd from the other, at the same time.
        let values: Vec<u64> = (0..3_000).map(|i| i * 2 + c).collect();
        tasks.push(tokio::spawn(async move {
            publish_burst(port, &format!("conn-{c}"), &secret, topic, "v", values).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let points = series(&env, &f, &d, "v").await;
    assert_eq!(points.len(), 6_000, "every acknowledged message of both connections is a point");
    let mut values: Vec<i64> = points
        .iter()
        .map(|p| match p.value {
            Value::Float(v) => v as i64,
            Value::Bool(_) => -1,
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..6_000).collect::<Vec<_>>());
    server.shutdown().await;
}

async fn shutdown_acks_in_flight_messages(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    let env = env(&db, StoreKind::Test(store.clone()), IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("press-1");
    let secret = provision(&env, &f, "press-1").await;
    env.ingestor.ingest(&f, &d, br#"{"a": 0}"#, 0).await.unwrap();
    store.delay_ms.store(300, Ordering::SeqCst);
    let server = server(&env, MqttConfig::default()).await;
    // A raw client: rumqttc may surface the server's DISCONNECT before a PUBACK read in the same segment.
    let mut socket = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    socket.write_all(&raw_connect("plant-a/press-1", &secret, 30)).await.unwrap();
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    socket.write_all(&raw_publish_qos1(&telemetry_topic(&f, &d), 7, br#"{"a": 1}"#)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The write is still in progress (300 ms) when shutdown begins.
    let started = std::time::Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() >= Duration::from_millis(100), "shutdown waited for the in-flight write");
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest, [0x40, 2, 0, 7], "PUBACK, then the connection is closed");
    assert_eq!(store.points.lock().values().map(Vec::len).sum::<usize>(), 2);
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

/// A raw 3.1.1 CONNECT, to control keep-alive exactly.
fn raw_connect(user: &str, pass: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::new();
    let put = |b: &mut Vec<u8>, s: &[u8]| {
        b.extend_from_slice(&(s.len() as u16).to_be_bytes());
        b.extend_from_slice(s);
    };
    put(&mut body, b"MQTT");
    body.push(4);
    body.push(0xc2);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put(&mut body, b"raw");
    put(&mut body, user.as_bytes());
    put(&mut body, pass.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

async fn keep_alive_and_ping(db: TestDatabase) {
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), IngestConfig::default()).await;
    let f = factory("plant-a");
    let secret = provision(&env, &f, "press-1").await;
    let server = server(&env, MqttConfig::default()).await;
    let mut socket = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    socket.write_all(&raw_connect("plant-a/press-1", &secret, 1)).await.unwrap();
    let mut connack = [0u8; 4];
    socket.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    // The server's silence timer restarts when it reads the PINGREQ, after `started`, so
    // it cannot close before 1.5 × keep-alive from here; that it closes at all is bounded
    // by `WAIT` only (no upper bound a slow machine could miss).
    let started = std::time::Instant::now();
    socket.write_all(&[0xc0, 0]).await.unwrap();
    let mut pingresp = [0u8; 2];
    socket.read_exact(&mut pingresp).await.unwrap();
    assert_eq!(pingresp, [0xd0, 0]);
    // Silence for more than 1.5 × keep-alive: the server closes the connection.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1_500), "closed early: {waited:?}");
    server.shutdown().await;
}

/// CONNECT rate limits refuse before verifying anything, with 5.0's "connection rate
/// exceeded" / 3.1.1's "server unavailable", count it, and let the client in later.
async fn connect_rate_limits_refuse_and_recover(db: TestDatabase) {
    use factoryops_ingest::mqtt::ConnectLimits;
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), IngestConfig::default()).await;
    let f = factory("plant-a");
    let secret = provision(&env, &f, "press-1").await;
    let limits = ConnectLimits { per_ip_per_sec: 1, per_ip_burst: 2, global_per_sec: 0, ..ConnectLimits::default() };
    let server = server(&env, MqttConfig { connect_limits: limits, ..MqttConfig::default() }).await;
    let port = server.local_addr().port();

    for id in ["a", "b"] {
        let (_c, mut el) = v4_client(port, id, "plant-a/press-1", &secret);
        next_v4(&mut el, |p| matches!(p, Packet::ConnAck(_))).await.unwrap();
    }
    let (_c, mut el) = v4_client(port, "c", "plant-a/press-1", &secret);
    match next_v4(&mut el, |_| true).await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::ServiceUnavailable)
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    let (_c, mut el) = v5_client(port, "d", "plant-a/press-1", &secret);
    match next_v5(&mut el, |_| true).await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::v5::mqttbytes::v5::ConnectReturnCode::ConnectionRateExceeded)
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    let text = env.metrics.render();
    assert!(text.contains(r#"factoryops_mqtt_connects_refused_total{reason="rate_limited_ip"} 2"#), "{text}");
    // One token per second: a second later the device gets in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_c, mut el) = v5_client(port, "e", "plant-a/press-1", &secret);
    next_v5(&mut el, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap();

    // The global limit spans every source.
    let limits = ConnectLimits { per_ip_per_sec: 0, global_per_sec: 1, global_burst: 1, ..ConnectLimits::default() };
    let global = self::server(&env, MqttConfig { connect_limits: limits, ..MqttConfig::default() }).await;
    let port = global.local_addr().port();
    let (_c, mut el) = v4_client(port, "g1", "plant-a/press-1", &secret);
    next_v4(&mut el, |p| matches!(p, Packet::ConnAck(_))).await.unwrap();
    let (_c, mut el) = v4_client(port, "g2", "plant-a/press-1", &secret);
    assert!(matches!(next_v4(&mut el, |_| true).await, Err(rumqttc::ConnectionError::ConnectionRefused(_))));
    let text = env.metrics.render();
    assert!(text.contains(r#"factoryops_mqtt_connects_refused_total{reason="rate_limited_global"} 1"#), "{text}");
    global.shutdown().await;
    server.shutdown().await;
}

/// MQTT 5 session expiry is honoured and the offline session table is bounded.
async fn session_expiry_and_offline_bound(db: TestDatabase) {
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), IngestConfig::default()).await;
    let f = factory("plant-a");
    let secret = provision(&env, &f, "press-1").await;
    let server =
        server(&env, MqttConfig { max_offline_sessions: 2, session_sweep_secs: 1, ..MqttConfig::default() }).await;
    let port = server.local_addr().port();
    let connect = |id: &str, expiry: u32, clean: bool| {
        let mut opts = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_credentials("plant-a/press-1", secret.clone());
        opts.set_clean_start(clean);
        opts.set_session_expiry_interval(Some(expiry));
        rumqttc::v5::AsyncClient::new(opts, 16)
    };
    let session_present = |p: Packet5| match p {
        Packet5::ConnAck(ack) => ack.session_present,
        other => panic!("{other:?}"),
    };
    // Sessions with an expiry of 1 s (short) and 60 s (long).
    for (id, expiry) in [("short", 1), ("long", 60)] {
        let (c, mut el) = connect(id, expiry, false);
        next_v5(&mut el, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap();
        c.disconnect().await.unwrap();
        while el.poll().await.is_ok() {}
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_c, mut el) = connect("long", 60, false);
    assert!(session_present(next_v5(&mut el, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap()), "resumed");
    drop(el);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_c, mut el) = connect("short", 1, false);
    assert!(!session_present(next_v5(&mut el, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap()), "expired");
    drop(el);
    // Three more offline sessions than the bound of two: the earliest-expiring go.
    for (id, expiry) in [("s1", 100), ("s2", 200), ("s3", 300)] {
        let (c, mut el) = connect(id, expiry, false);
        next_v5(&mut el, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap();
        c.disconnect().await.unwrap();
        while el.poll().await.is_ok() {}
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let text = env.metrics.render();
    assert!(text.contains(r#"factoryops_mqtt_sessions_evicted_total{reason="capacity"}"#), "{text}");
    let (_c, mut el) = connect("s3", 300, false);
    assert!(session_present(next_v5(&mut el, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap()), "kept");
    let (_c, mut el2) = connect("s1", 100, false);
    assert!(!session_present(next_v5(&mut el2, |p| matches!(p, Packet5::ConnAck(_))).await.unwrap()), "evicted");
    server.shutdown().await;
}

backend_matrix!(
    receive_times_of_a_connection_are_distinct,
    ten_thousand_fast_messages_are_ten_thousand_points,
    two_connections_of_one_device_never_collide,
    connect_rate_limits_refuse_and_recover,
    session_expiry_and_offline_bound,
    v311_publish_acl_and_sessions,
    v5_publish_acl_and_reasons,
    bad_credentials_are_refused,
    mosquitto_clients_both_versions,
    qos2_and_store_failures_are_not_acked,
    backpressure_delays_but_never_drops,
    shutdown_acks_in_flight_messages,
    keep_alive_and_ping,
    tls_listener,
    protocol_edges,
);

/// Not a benchmark (debug build, client and server on the same runtime): a smoke check
/// that acks pipeline and the group commit batches across connections. Run with
/// `cargo nextest run -p factoryops-ingest --run-ignored only throughput_smoke --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_smoke() {
    let Some(db) = TestDatabase::create(factoryops_testkit::Backend::Sqlite).await else { return };
    let env = env(&db, StoreKind::Embedded, IngestConfig::default()).await;
    let f = factory("plant-a");
    let (connections, messages) = (50usize, 400usize);
    let server = server(&env, MqttConfig::default()).await;
    let port = server.local_addr().port();
    let mut secrets = Vec::new();
    for c in 0..connections {
        secrets.push(provision(&env, &f, &format!("d{c}")).await);
    }
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (c, secret) in secrets.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut opts = rumqttc::MqttOptions::new(format!("c{c}"), "127.0.0.1", port);
            opts.set_credentials(format!("plant-a/d{c}"), secret);
            opts.set_inflight(64);
            let (client, mut el) = rumqttc::AsyncClient::new(opts, 128);
            let topic = format!("factories/plant-a/devices/d{c}/telemetry");
            let publisher = tokio::spawn(async move {
                for i in 0..messages {
                    let payload =
                        format!(r#"{{"p0":{i},"p1":1,"p2":2,"p3":3,"p4":4,"p5":5,"p6":6,"p7":7,"p8":8,"p9":true}}"#);
                    client.publish(&topic, QoS::AtLeastOnce, false, payload).await.unwrap();
                }
                client
            });
            let mut acks = 0;
            while acks < messages {
                if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.unwrap() {
                    acks += 1;
                }
            }
            drop(publisher.await.unwrap());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = (connections * messages) as f64;
    println!(
        "{total} msgs ({} points) in {elapsed:.2}s: {:.0} msg/s, {:.0} points/s",
        total * 10.0,
        total / elapsed,
        total * 10.0 / elapsed
    );
    println!("{}", env.metrics.render().lines().filter(|l| l.contains("batch_points")).collect::<Vec<_>>().join("\n"));
    server.shutdown().await;
}
