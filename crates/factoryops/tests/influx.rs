#![allow(clippy::unwrap_used)]
//! The whole server on InfluxDB 1.x (`tsdb_url`), not only the adapter: a private `influxd`
//! on free ports (the tsdb tests' launcher), then MQTT and HTTP ingestion → rules → alert,
//! and the series and latest values read back through the API. Skips loudly without
//! `influxd`; fails under `CI=true` (testkit::unavailable).

mod common;
#[path = "../../tsdb/tests/support/influxd.rs"]
mod influxd;

use std::time::Duration;

use common::{TestApp, mqtt, test_config};
use factoryops_platform::secret::SecretUrl;
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_types::format_rfc3339_ms;
use influxd::Influxd;
use serde_json::{Value, json};

const TOPIC: &str = "factories/plant-a/devices/press-1/telemetry";

/// Waits until the alert inbox answers `query` with `n` alerts.
async fn wait_for_alerts(app: &TestApp, token: &str, query: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get(&format!("/api/v1/factories/plant-a/alerts{query}"), Some(token)).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if items.len() == n {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {n} alerts {query}: {items:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One InfluxQL query against the private `influxd`: the first series' values.
async fn influxql(server: &Influxd, q: &str) -> Vec<Value> {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("db", "factoryops")
        .append_pair("q", q)
        .append_pair("epoch", "ms")
        .finish();
    let body = factoryops_platform::http::client()
        .get(format!("http://127.0.0.1:{}/query?{query}", server.http_port))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    body["results"][0]["series"][0]["values"].as_array().cloned().unwrap_or_default()
}

async fn the_server_runs_on_influxdb(db: TestDatabase) {
    let Some(influx) = Influxd::start() else { return };
    let mut config = test_config(&db);
    config.tsdb_url = Some(SecretUrl::new(influx.url("factoryops")));
    let app = TestApp::spawn_with(db, config.clone()).await;
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "{ready}");

    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    let (status, body) = app
        .post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "P", "type": "press"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, creds) =
        app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;
    assert_eq!(status, 201, "{creds}");
    let (status, key) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&admin),
            json!({"name": "gateway", "permissions": ["telemetry:write"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_string();
    let rule = json!({
        "name": "Overheating",
        "enabled": true,
        "scope": {"devices": ["press-1"]},
        "condition": {"property": "temp_c", "op": ">", "value": 80},
        "severity": "critical",
        "message": "{device} {property} = {value}",
        "auto_resolve": true,
        "notify": {"emails": ["ops@example.com"]}
    });
    let (status, rule) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), rule).await;
    assert_eq!(status, 201, "{rule}");

    // HTTP: ten minutes of history, one reading a minute (the gateway's own timestamps).
    let now = app.clock_now();
    let t0 = now - now.rem_euclid(60_000) - 10 * 60_000;
    let history: Vec<(i64, f64)> = (0..10i64).map(|i| (t0 + i * 60_000, 40.0 + i as f64 * 0.5)).collect();
    let messages: Vec<Value> =
        history.iter().map(|(ts, v)| json!({"device_id": "press-1", "ts": ts, "temp_c": v})).collect();
    let (status, body) =
        app.post("/api/v1/factories/plant-a/telemetry", Some(&key), json!({"messages": messages})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["results"].as_array().unwrap().iter().all(|r| r["status"] == "stored"), "{body}");

    // MQTT: 90 °C opens the alert, 50 °C resolves it.
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", creds["secret"].as_str().unwrap());
    mqtt::connack(&mut el).await.unwrap();
    let (hot, cool) = (now + 1_000, now + 2_000);
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"ts": hot, "temp_c": 90.0}).to_string()).await.unwrap();
    let open = wait_for_alerts(&app, &admin, "?status=open", 1).await;
    assert_eq!(open[0]["opened_at"], format_rfc3339_ms(hot), "{}", open[0]);
    assert_eq!(open[0]["message"], "press-1 temp_c = 90", "{}", open[0]);
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"ts": cool, "temp_c": 50.0}).to_string()).await.unwrap();
    let resolved = wait_for_alerts(&app, &admin, "?status=resolved", 1).await;
    assert_eq!(resolved[0]["resolved_at"], format_rfc3339_ms(cool), "{}", resolved[0]);

    // Read back through the API: every point at its own timestamp, a 5-minute max, the latest value.
    let mut expected = history.clone();
    expected.extend([(hot, 90.0), (cool, 50.0)]);
    let (from, to) = (format_rfc3339_ms(t0), format_rfc3339_ms(cool + 1));
    let (status, body) = app
        .get(
            &format!(
                "/api/v1/factories/plant-a/telemetry/series?device_id=press-1&property=temp_c&from={from}&to={to}"
            ),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let points: Vec<(i64, f64)> = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (factoryops_types::parse_rfc3339_ms(p["ts"].as_str().unwrap()).unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(points, expected);
    let (status, body) = app
        .get(
            &format!(
                "/api/v1/factories/plant-a/telemetry/series?device_id=press-1&property=temp_c&from={from}&to={}&every=5m&agg=max",
                format_rfc3339_ms(t0 + 10 * 60_000)
            ),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // t0 is on a minute, not necessarily on 5 minutes: hand-computed bucket maxima.
    let mut buckets: std::collections::BTreeMap<i64, f64> = Default::default();
    for (ts, v) in &history {
        let b = buckets.entry(ts - ts.rem_euclid(300_000)).or_insert(f64::MIN);
        *b = b.max(*v);
    }
    let got: Vec<(i64, f64)> = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (factoryops_types::parse_rfc3339_ms(p["ts"].as_str().unwrap()).unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(got, buckets.into_iter().collect::<Vec<_>>(), "{body}");
    let (status, latest) = app.get("/api/v1/factories/plant-a/telemetry/latest?device_id=press-1", Some(&admin)).await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["properties"][0]["value"], 50.0, "{latest}");

    // The points are in InfluxDB, not in an embedded store.
    let count = influxql(&influx, "SELECT count(\"value\") FROM \"device_metrics\"").await;
    assert_eq!(count.first().map(|row| row[1].clone()), Some(json!(12)), "InfluxDB holds the 12 points: {count:?}");
    assert!(!config.data_dir.join("tsdb").exists(), "no embedded store was opened");
    app.stop().await;
}

backend_matrix!(the_server_runs_on_influxdb);
