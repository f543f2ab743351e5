//! The MQTT endpoint against sockets that never speak (ADR 0011): they are closed after
//! `connect_timeout_ms`, and beyond `max_connections` new sockets are closed at once
//! while connected devices keep publishing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use factoryops_ingest::IngestConfig;
use factoryops_ingest::mqtt::{MqttConfig, MqttServer, telemetry_topic};
use factoryops_testkit::{Backend, TestDatabase};
use rumqttc::{Event, Packet, QoS};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::common::{StoreKind, TestStore, device, env, factory, provision};

/// Waits until the server closes the socket; how long that took, or `None` past `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_time_out_and_the_connection_cap_holds() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), IngestConfig::default()).await;
    let f = factory("plant-a");
    let secret = provision(&env, &f, "press-1").await;
    let config = MqttConfig {
        addr: "127.0.0.1:0".into(),
        connect_timeout_ms: 1_500,
        max_connections: 20,
        ..MqttConfig::default()
    };
    let server = MqttServer::bind(config, env.registry.clone(), env.ingestor.clone(), env.clock.clone()).await.unwrap();
    let addr = server.local_addr();

    // A device connects first and keeps working throughout.
    let mut opts = rumqttc::MqttOptions::new("device", "127.0.0.1", addr.port());
    opts.set_credentials("plant-a/press-1", &secret);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 16);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = el.poll().await.unwrap() {
            break;
        }
    }
    // 19 silent sockets fill the cap of 20; the 21st is closed at once.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..19 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut over = TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut over, Duration::from_secs(1)).await.expect("over the cap: closed at once");
    assert!(took < Duration::from_millis(500), "{took:?}");
    let text = env.metrics.render();
    assert!(text.contains(r#"factoryops_mqtt_connects_refused_total{reason="max_connections"} 1"#), "{text}");

    client.publish(telemetry_topic(&f, &device("press-1")), QoS::AtLeastOnce, false, r#"{"a": 1}"#).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("the connected device is still served");

    // The silent ones are closed after connect_timeout_ms, which frees the places.
    for stream in &mut silent {
        closed_within(stream, Duration::from_secs(10)).await.expect("closed after the CONNECT timeout");
    }
    let waited = opened.elapsed();
    assert!(waited >= Duration::from_millis(1_400) && waited < Duration::from_secs(5), "{waited:?}");
    let mut opts = rumqttc::MqttOptions::new("again", "127.0.0.1", addr.port());
    opts.set_credentials("plant-a/press-1", &secret);
    let (_again, mut el2) = rumqttc::AsyncClient::new(opts, 16);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = el2.poll().await.unwrap() {
            break;
        }
    }
    drop(client);
    server.shutdown().await;
}
