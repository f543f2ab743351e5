#![allow(clippy::unwrap_used)]
//! A device's live MQTT connection is closed when the device is disabled or its secret is
//! rotated through the API, not only its next CONNECT refused.

mod common;

use std::time::Duration;

use common::{TestApp, mqtt};
use factoryops_testkit::{TestDatabase, backend_matrix};
use reqwest::Method;
use serde_json::{Value, json};

const TOPIC: &str = "factories/plant-a/devices/press-1/telemetry";

/// Polls the connected client until the server ends the connection; panics if it stays
/// open for 10 s (the only bound: the close is the event waited for).
async fn closed_by_server(el: &mut rumqttc::EventLoop) {
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if el.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the live connection stayed open");
}

async fn connected(app: &TestApp, secret: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", secret);
    assert_eq!(mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    let payload = json!({"temp_c": 20, "ts": app.clock_now()}).to_string();
    mqtt::publish_acked(&client, &mut el, TOPIC, &payload).await.unwrap();
    (client, el)
}

async fn live_connections_are_cut_on_rotation_and_disable(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "P"})).await;
    let (_, creds) = app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;

    let (_client, mut el) = connected(&app, creds["secret"].as_str().unwrap()).await;
    let (status, rotated): (u16, Value) =
        app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;
    assert_eq!(status, 201, "{rotated}");
    closed_by_server(&mut el).await;

    let (_client, mut el) = connected(&app, rotated["secret"].as_str().unwrap()).await;
    let (status, body) = app
        .send(
            Method::PATCH,
            "/api/v1/factories/plant-a/devices/press-1",
            Some(&admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    closed_by_server(&mut el).await;
    app.stop().await;
}

backend_matrix!(live_connections_are_cut_on_rotation_and_disable);
