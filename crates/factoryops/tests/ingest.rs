#![allow(clippy::unwrap_used)]
//! The path from a device to the API, through the real server and a real MQTT client.

mod common;

use common::{TestApp, mqtt};
use factoryops_testkit::{TestDatabase, backend_matrix};
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "super-secret-pw-1";

/// A factory with a super admin and one registered device with a secret.
async fn setup(app: &TestApp, factory: &str, device: &str) -> (String, Value) {
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, factory, &format!("boss@{factory}.example"), PW).await;
    let (status, body) = app
        .post(&format!("/api/v1/factories/{factory}/devices"), Some(&admin), json!({"id": device, "name": "Press 1", "type": "press", "location": "Hall 2", "metadata": {"vendor": "ACME"}}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, creds) =
        app.post(&format!("/api/v1/factories/{factory}/devices/{device}/credentials"), Some(&admin), json!({})).await;
    assert_eq!(status, 201, "{creds}");
    (admin, creds)
}

async fn mqtt_publish_reaches_the_api(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, creds) = setup(&app, "plant-a", "press-1").await;
    assert_eq!(creds["username"], "plant-a/press-1");
    assert_eq!(creds["mqtt"]["topic"], "factories/plant-a/devices/press-1/telemetry");
    assert_eq!(creds["mqtt"]["port"], app.mqtt_port);
    let secret = creds["secret"].as_str().unwrap();

    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", secret);
    assert_eq!(mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    let payload = r#"{"power_kw": 12.5, "running": true, "phase": {"l1": {"v": 231}}, "status": "ok", "tags": ["x"]}"#;
    mqtt::publish_acked(&client, &mut el, "factories/plant-a/devices/press-1/telemetry", payload).await.unwrap();

    // PUBACK means durable: the values are readable at once.
    let (status, latest) = app.get("/api/v1/factories/plant-a/telemetry/latest?device_id=press-1", Some(&admin)).await;
    assert_eq!(status, 200, "{latest}");
    let values: Vec<(String, Value)> = latest["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["value"].clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            ("phase.l1.v".into(), json!(231.0)),
            ("power_kw".into(), json!(12.5)),
            ("running".into(), json!(true)),
            ("status".into(), json!("ok"))
        ]
    );

    let (_, props) = app.get("/api/v1/factories/plant-a/devices/press-1/properties", Some(&admin)).await;
    let names: Vec<&str> = props["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["phase.l1.v", "power_kw", "running", "status"]);
    assert_eq!(props["items"][3]["value_type"], "state", "a string is a state label (ADR 0014)");
    let (status, p) = app
        .send(
            Method::PATCH,
            "/api/v1/factories/plant-a/devices/press-1/properties/power_kw",
            Some(&admin),
            Some(json!({"unit": "kW", "description": "active power"})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["unit"], "kW");
    let (_, catalogue) = app.get("/api/v1/factories/plant-a/properties", Some(&admin)).await;
    assert_eq!(catalogue["items"].as_array().unwrap().len(), 4);

    // The array property was rejected with its reason; the rest of the same message was kept.
    let (_, errors) = app.get("/api/v1/factories/plant-a/devices/press-1/errors", Some(&admin)).await;
    assert_eq!(errors["items"][0]["property"], "tags", "{errors}");

    let (status, series) =
        app.get("/api/v1/factories/plant-a/telemetry/series?device_id=press-1&property=power_kw", Some(&admin)).await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series["points"].as_array().unwrap().len(), 1);
    assert_eq!(series["points"][0]["value"], 12.5);
    let (status, agg) = app
        .get(
            "/api/v1/factories/plant-a/telemetry/series?device_id=press-1&property=power_kw&every=1m&agg=count",
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{agg}");
    assert_eq!(agg["points"][0]["value"], 1.0);
    let (status, bad) = app
        .get(
            "/api/v1/factories/plant-a/telemetry/series?device_id=press-1&property=power_kw&every=fortnight&agg=median",
            Some(&admin),
        )
        .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = bad["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["every", "agg"]);

    let (_, device) = app.get("/api/v1/factories/plant-a/devices/press-1", Some(&admin)).await;
    assert_eq!(device["has_secret"], true);
    // `last_seen` is written in batches; reads include what is not written yet.
    assert!(device["last_seen"].is_string(), "{device}");
    let (_, listed) = app.get("/api/v1/factories/plant-a/devices", Some(&admin)).await;
    assert_eq!(listed["items"][0]["last_seen"], device["last_seen"]);
    let (status, patched) = app
        .send(
            Method::PATCH,
            "/api/v1/factories/plant-a/devices/press-1",
            Some(&admin),
            Some(json!({"location": "hall 2"})),
        )
        .await;
    assert_eq!((status, &patched["last_seen"]), (200, &device["last_seen"]), "{patched}");
    assert!(!device.to_string().contains(secret), "the secret is never shown again");
    app.stop().await;
}

async fn mqtt_refuses_wrong_credentials_and_foreign_topics(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, creds) = setup(&app, "plant-a", "press-1").await;
    let secret = creds["secret"].as_str().unwrap();
    let (status, _) =
        app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-2", "name": "Press 2"})).await;
    assert_eq!(status, 201);

    let (_, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", "fod_wrong");
    assert_ne!(mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    let (_, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-2", secret);
    assert_ne!(
        mqtt::connack(&mut el).await.unwrap(),
        rumqttc::ConnectReturnCode::Success,
        "a secret belongs to one device"
    );

    // Publishing to another device's topic: refused (3.1.1 closes the connection), nothing stored.
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", secret);
    assert_eq!(mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    assert!(
        mqtt::publish_acked(&client, &mut el, "factories/plant-a/devices/press-2/telemetry", r#"{"x": 1}"#)
            .await
            .is_err()
    );
    let (_, latest) = app.get("/api/v1/factories/plant-a/telemetry/latest?device_id=press-2", Some(&admin)).await;
    assert_eq!(latest["properties"], json!([]));

    // Rotating the secret cuts the old one off.
    let (_, rotated) = app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;
    assert_ne!(rotated["secret"], creds["secret"]);
    let (_, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", secret);
    assert_ne!(mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    let (_, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", rotated["secret"].as_str().unwrap());
    assert_eq!(mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);

    // A disabled device cannot connect.
    let (status, _) = app
        .send(
            Method::PATCH,
            "/api/v1/factories/plant-a/devices/press-1",
            Some(&admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", rotated["secret"].as_str().unwrap());
    assert_ne!(mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    app.stop().await;
}

async fn http_ingestion_with_an_api_key(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, _) = setup(&app, "plant-a", "meter-1").await;
    let (_, key) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&admin),
            json!({"name": "gateway", "permissions": ["telemetry:write"]}),
        )
        .await;
    let key = key["key"].as_str().unwrap();
    let (_, reader) = app
        .post("/api/v1/factories/plant-a/api-keys", Some(&admin), json!({"name": "dash", "permissions": ["data:read"]}))
        .await;
    let reader = reader["key"].as_str().unwrap();

    let (status, body) = app
        .post(
            "/api/v1/factories/plant-a/telemetry",
            Some(key),
            json!({"device_id": "meter-1", "energy_kwh": 1000.25, "ts": app.clock_now() - 60_000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "stored");
    let (status, body) = app
        .post("/api/v1/factories/plant-a/telemetry", Some(key), json!({"messages": [{"device_id": "meter-1", "energy_kwh": 1001.5}, {"device_id": "meter-1", "energy_kwh": [1]}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["rejected"][0]["reason"], "array", "{body}");
    let (status, _) =
        app.post("/api/v1/factories/plant-a/telemetry", Some(key), json!({"device_id": "ghost", "x": 1})).await;
    assert_eq!(status, 404);
    let (status, body) = app.post("/api/v1/factories/plant-a/telemetry", Some(key), json!({"x": 1})).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "device_id");

    // Writers cannot read, readers cannot write.
    assert_eq!(app.get("/api/v1/factories/plant-a/telemetry/latest?device_id=meter-1", Some(key)).await.0, 403);
    assert_eq!(
        app.post("/api/v1/factories/plant-a/telemetry", Some(reader), json!({"device_id": "meter-1", "x": 1})).await.0,
        403
    );
    let (_, latest) = app.get("/api/v1/factories/plant-a/telemetry/latest?device_id=meter-1", Some(reader)).await;
    assert_eq!(latest["properties"][0]["value"], 1001.5);
    app.stop().await;
}

/// A telemetry-writing API key for `factory`.
async fn writer_key(app: &TestApp, admin: &str, factory: &str) -> String {
    let (status, key) = app
        .post(
            &format!("/api/v1/factories/{factory}/api-keys"),
            Some(admin),
            json!({"name": "gateway", "permissions": ["telemetry:write"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_string()
}

/// The raw points of one series around now (server stamps may be up to 1 s ahead).
async fn raw_points(app: &TestApp, token: &str, device: &str, property: &str) -> Vec<Value> {
    let now = app.clock_now();
    let from = factoryops_types::format_rfc3339_ms(now - 3_600_000);
    let to = factoryops_types::format_rfc3339_ms(now + 3_600_000);
    let (status, body) = app
        .get(
            &format!(
                "/api/v1/factories/plant-a/telemetry/series?device_id={device}&property={property}&from={from}&to={to}&limit=100000"
            ),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["points"].as_array().unwrap().clone()
}

/// An HTTP batch of 1,000 messages of one device without `ts`: 1,000 points. Before, the
/// whole batch shared one receive time, so the series kept about half of them (a batch
/// of 500 stored 294).
async fn an_http_batch_without_ts_is_every_point(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, _) = setup(&app, "plant-a", "meter-1").await;
    let key = writer_key(&app, &admin, "plant-a").await;
    let messages: Vec<Value> = (0..1_000).map(|i| json!({"device_id": "meter-1", "hb": i})).collect();
    let (status, body) =
        app.post("/api/v1/factories/plant-a/telemetry", Some(&key), json!({"messages": messages})).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1_000);
    assert!(results.iter().all(|r| r["status"] == "stored" && r["points"] == 1), "{body}");
    let points = raw_points(&app, &admin, "meter-1", "hb").await;
    assert_eq!(points.len(), 1_000, "every acknowledged message is a point");
    let values: Vec<f64> = points.iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(values, (0..1_000).map(f64::from).collect::<Vec<_>>(), "in batch order");
    app.stop().await;
}

/// A batch is validated whole before anything is written: a fourth message naming an
/// unknown device answers 404 naming `messages[3].device_id`, and nothing of the batch is
/// stored (before, the first three were, and a retry stored them twice).
async fn a_batch_with_a_bad_message_stores_nothing(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, _) = setup(&app, "plant-a", "meter-1").await;
    let (status, _) = app
        .post(
            "/api/v1/factories/plant-a/devices",
            Some(&admin),
            json!({"id": "meter-2", "name": "M2", "status": "disabled"}),
        )
        .await;
    assert_eq!(status, 201);
    let key = writer_key(&app, &admin, "plant-a").await;
    let batch = |last: Value| {
        json!({"messages": [
            {"device_id": "meter-1", "x": 1}, {"device_id": "meter-1", "x": 2}, {"device_id": "meter-1", "x": 3}, last
        ]})
    };
    let (status, body) =
        app.post("/api/v1/factories/plant-a/telemetry", Some(&key), batch(json!({"device_id": "ghost", "x": 4}))).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errors"][0]["field"], "messages[3].device_id", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("nothing was stored"), "{body}");
    let (status, body) = app
        .post("/api/v1/factories/plant-a/telemetry", Some(&key), batch(json!({"device_id": "meter-2", "x": 4})))
        .await;
    assert_eq!(status, 409, "a disabled device: {body}");
    assert_eq!(body["errors"][0]["field"], "messages[3].device_id", "{body}");
    let (status, body) = app.post("/api/v1/factories/plant-a/telemetry", Some(&key), batch(json!({"x": 4}))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "messages[3].device_id", "{body}");
    assert!(raw_points(&app, &admin, "meter-1", "x").await.is_empty(), "nothing of the refused batches");
    let (_, latest) = app.get("/api/v1/factories/plant-a/telemetry/latest?device_id=meter-1", Some(&admin)).await;
    assert_eq!(latest["properties"], json!([]), "{latest}");

    // The corrected batch is stored whole.
    let (status, body) = app
        .post("/api/v1/factories/plant-a/telemetry", Some(&key), batch(json!({"device_id": "meter-1", "x": 4})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(raw_points(&app, &admin, "meter-1", "x").await.len(), 4);
    app.stop().await;
}

async fn devices_are_listed_filtered_and_validated(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, _) = setup(&app, "plant-a", "press-1").await;
    let (_, viewer) = app.user_with(&admin, "plant-a", "v@a.example", "viewer", &[]).await;
    let (_, writer) = app.user_with(&admin, "plant-a", "w@a.example", "admin", &["devices:write"]).await;
    for i in 0..5 {
        let (status, _) = app
            .post(
                "/api/v1/factories/plant-a/devices",
                Some(&writer),
                json!({"id": format!("meter-{i}"), "name": format!("Meter {i}"), "type": "meter"}),
            )
            .await;
        assert_eq!(status, 201);
    }
    assert_eq!(
        app.post("/api/v1/factories/plant-a/devices", Some(&viewer), json!({"id": "nope", "name": "n"})).await.0,
        403
    );
    assert_eq!(
        app.post("/api/v1/factories/plant-a/devices", Some(&writer), json!({"id": "meter-1", "name": "dup"})).await.0,
        409
    );
    let (status, body) =
        app.post("/api/v1/factories/plant-a/devices", Some(&writer), json!({"id": "Bad Id!", "name": "x"})).await;
    assert_eq!(status, 422);
    assert_eq!(body["errors"][0]["field"], "id", "{body}");

    let (_, meters) = app.get("/api/v1/factories/plant-a/devices?type=meter&limit=2", Some(&viewer)).await;
    assert_eq!(meters["items"].as_array().unwrap().len(), 2);
    let cursor = meters["next_cursor"].as_str().unwrap();
    let (_, next) =
        app.get(&format!("/api/v1/factories/plant-a/devices?type=meter&limit=2&cursor={cursor}"), Some(&viewer)).await;
    assert_ne!(next["items"][0]["id"], meters["items"][0]["id"]);
    let (_, found) = app.get("/api/v1/factories/plant-a/devices?text=press", Some(&viewer)).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    let (status, _) = app.get("/api/v1/factories/plant-a/devices?status=sleeping", Some(&viewer)).await;
    assert_eq!(status, 422);
    assert_eq!(app.get("/api/v1/factories/plant-a/devices/ghost", Some(&viewer)).await.0, 404);
    app.stop().await;
}

async fn the_live_stream_pushes_this_factorys_telemetry(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, creds) = setup(&app, "plant-a", "press-1").await;
    let mut response =
        app.client.get(app.url("/api/v1/factories/plant-a/stream")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", creds["secret"].as_str().unwrap());
    mqtt::connack(&mut el).await.unwrap();
    mqtt::publish_acked(
        &client,
        &mut el,
        "factories/plant-a/devices/press-1/telemetry",
        r#"{"temp_c": 81, "state": "idle"}"#,
    )
    .await
    .unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !text.contains("temp_c") {
        let chunk =
            tokio::time::timeout_at(deadline, response.chunk()).await.expect("an event arrives").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: telemetry"), "{text}");
    assert!(text.contains("press-1"), "{text}");
    // A state property's value is its label, not the stored code (ADR 0014).
    assert!(text.contains(r#"{"property":"state","ts_ms""#) && text.contains(r#""value":"idle""#), "{text}");
    app.stop().await;
}

backend_matrix!(
    an_http_batch_without_ts_is_every_point,
    a_batch_with_a_bad_message_stores_nothing,
    mqtt_publish_reaches_the_api,
    mqtt_refuses_wrong_credentials_and_foreign_topics,
    http_ingestion_with_an_api_key,
    devices_are_listed_filtered_and_validated,
    the_live_stream_pushes_this_factorys_telemetry,
);
