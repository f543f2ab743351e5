//! End-to-end latency: MQTT publish above a threshold → durable write → rules → alert
//! and notification rows in one transaction → worker → email accepted by a real SMTP
//! server (in process). Run with `cargo bench -p factoryops --bench alert_email`; prints
//! p50/p90/p99/max over `ALERT_EMAIL_CYCLES` (default 200) alert/resolve cycles.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestApp, mqtt, test_config};
use factoryops_platform::secret::SecretUrl;
use factoryops_testkit::smtp::SmtpSink;
use factoryops_testkit::{Backend, TestDatabase};
use serde_json::json;

const TOPIC: &str = "factories/plant-a/devices/press-1/telemetry";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn wait_count(smtp: &SmtpSink, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while smtp.received().len() < n {
        assert!(Instant::now() < deadline, "email {n} did not arrive");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn run() {
    let cycles: usize = std::env::var("ALERT_EMAIL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let smtp = SmtpSink::start();
    let mut config = test_config(&db);
    config.smtp_url = Some(SecretUrl::new(smtp.url()));
    config.smtp_from = Some("alerts@factoryops.test".into());
    config.log_level = "warn".into();
    let app = TestApp::spawn_with(db, config).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "P"})).await;
    let (_, creds) = app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;
    let rule = json!({
        "name": "hot", "scope": {"devices": ["press-1"]}, "condition": {"property": "temp_c", "op": ">", "value": 80},
        "severity": "critical", "auto_resolve": true, "cooldown_seconds": 0, "notify": {"emails": ["ops@example.com"]}
    });
    let (status, body) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), rule).await;
    assert_eq!(status, 201, "{body}");
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", creds["secret"].as_str().unwrap());
    mqtt::connack(&mut el).await.unwrap();

    let mut latencies = Vec::with_capacity(cycles);
    let mut emails = 0;
    for _ in 0..cycles {
        let started = Instant::now();
        let hot = json!({"temp_c": 90, "ts": app.clock_now()}).to_string();
        mqtt::publish_acked(&client, &mut el, TOPIC, &hot).await.unwrap();
        emails += 1;
        wait_count(&smtp, emails).await;
        latencies.push(smtp.received()[emails - 1].received_at.duration_since(started));
        tokio::time::sleep(Duration::from_millis(2)).await;
        let normal = json!({"temp_c": 20, "ts": app.clock_now()}).to_string();
        mqtt::publish_acked(&client, &mut el, TOPIC, &normal).await.unwrap();
        emails += 1; // the "resolved" email
        wait_count(&smtp, emails).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "publish → alert email accepted by SMTP, {cycles} cycles: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.9).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        pick(1.0).as_secs_f64() * 1e3,
    );
    let _ = app.stop().await;
}
