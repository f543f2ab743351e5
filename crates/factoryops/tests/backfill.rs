#![allow(clippy::unwrap_used)]
//! Store-and-forward backfill through the real server (ADR 0010): a gateway's backlog keeps
//! its own timestamps and the rollups over it are right, also once the store flushed and
//! compacted those partitions; a `ts` outside the window refuses the message (never
//! restamps it), is recorded, and the device's good messages still flow.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{TestApp, mqtt, test_config};
use factoryops_platform::Config;
use factoryops_platform::config::RetentionDays;
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_types::format_rfc3339_ms;
use serde_json::{Value, json};

const PW: &str = "super-secret-pw-1";
const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
const STEP: i64 = 10 * 60_000;

/// A factory with a super admin, a device with an MQTT secret and a `telemetry:write` key.
/// Returns (admin token, API key, device secret).
async fn setup(app: &TestApp, factory: &str, device: &str) -> (String, String, String) {
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, factory, &format!("boss@{factory}.example"), PW).await;
    let (status, body) = app
        .post(&format!("/api/v1/factories/{factory}/devices"), Some(&admin), json!({"id": device, "name": "Gateway"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, creds) =
        app.post(&format!("/api/v1/factories/{factory}/devices/{device}/credentials"), Some(&admin), json!({})).await;
    assert_eq!(status, 201, "{creds}");
    let (status, key) = app
        .post(
            &format!("/api/v1/factories/{factory}/api-keys"),
            Some(&admin),
            json!({"name": "gateway", "permissions": ["telemetry:write"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    (admin, key["key"].as_str().unwrap().to_string(), creds["secret"].as_str().unwrap().to_string())
}

/// The backlog's reading number `i`: multiples of 0.25, so every sum is exact in f64 and
/// the expected figures can be compared for equality.
fn reading(i: i64) -> f64 {
    ((i * 7) % 13) as f64 * 0.25
}

/// Hand-computed (sum, count, min, max) per bucket of `every` ms.
fn expected(points: &[(i64, f64)], every: i64) -> BTreeMap<i64, (f64, f64, f64, f64)> {
    let mut out: BTreeMap<i64, (f64, f64, f64, f64)> = BTreeMap::new();
    for &(ts, v) in points {
        let e = out.entry(ts - ts.rem_euclid(every)).or_insert((0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        e.0 += v;
        e.1 += 1.0;
        e.2 = e.2.min(v);
        e.3 = e.3.max(v);
    }
    out
}

async fn series(app: &TestApp, token: &str, from: i64, to: i64, every_agg: Option<(&str, &str)>) -> Vec<(i64, f64)> {
    let mut path = format!(
        "/api/v1/factories/plant-a/telemetry/series?device_id=gw-1&property=power_kw&from={}&to={}&limit=100000",
        format_rfc3339_ms(from),
        format_rfc3339_ms(to)
    );
    if let Some((every, agg)) = every_agg {
        path.push_str(&format!("&every={every}&agg={agg}"));
    }
    let (status, body) = app.get(&path, Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ts = factoryops_types::parse_rfc3339_ms(p["ts"].as_str().unwrap()).unwrap();
            (ts, p["value"].as_f64().unwrap())
        })
        .collect()
}

/// Raw points and the daily and hourly sum/count/avg/min/max over `[from, to)` match
/// what the backlog says, figure by figure.
async fn assert_figures(app: &TestApp, token: &str, from: i64, to: i64, points: &[(i64, f64)], when: &str) {
    let raw = series(app, token, from, to, None).await;
    assert_eq!(raw, points, "{when}: every point at its own timestamp");
    for (every, every_ms) in [("1d", DAY), ("1h", HOUR)] {
        let want = expected(points, every_ms);
        let buckets = |agg| async move { series(app, token, from, to, Some((every, agg))).await };
        let (sum, count, avg, min, max) = (
            buckets("sum").await,
            buckets("count").await,
            buckets("avg").await,
            buckets("min").await,
            buckets("max").await,
        );
        let starts: Vec<i64> = want.keys().copied().collect();
        for (agg, got) in [("sum", &sum), ("count", &count), ("avg", &avg), ("min", &min), ("max", &max)] {
            assert_eq!(got.iter().map(|(t, _)| *t).collect::<Vec<_>>(), starts, "{when}: {every} {agg} buckets");
        }
        for (i, (start, (s, c, lo, hi))) in want.iter().enumerate() {
            let at = format!("{when}: {every} bucket {}", format_rfc3339_ms(*start));
            assert_eq!(sum[i].1, *s, "{at} sum");
            assert_eq!(count[i].1, *c, "{at} count");
            assert!((avg[i].1 - s / c).abs() < 1e-9, "{at} avg {} != {}", avg[i].1, s / c);
            assert_eq!((min[i].1, max[i].1), (*lo, *hi), "{at} min/max");
        }
    }
}

/// POSTs the messages in batches of 500 (the burst); every one must be stored.
async fn upload(app: &TestApp, key: &str, points: &[(i64, f64)]) {
    for chunk in points.chunks(500) {
        let messages: Vec<Value> =
            chunk.iter().map(|(ts, v)| json!({"device_id": "gw-1", "ts": ts, "power_kw": v})).collect();
        let (status, body) =
            app.post("/api/v1/factories/plant-a/telemetry", Some(key), json!({"messages": messages})).await;
        assert_eq!(status, 200, "{body}");
        for result in body["results"].as_array().unwrap() {
            assert_eq!(result["status"], "stored", "{result}");
        }
    }
}

/// Closes the server (its shutdown flushes the head into part files), merges every
/// partition into one part with the store opened directly, and starts the server again.
async fn flush_and_compact(app: TestApp, config: &Config) -> TestApp {
    let db = app.stop().await;
    let store = factoryops_tsdb::EmbeddedStore::open(
        factoryops::telemetry::embedded_config(config),
        Arc::new(factoryops_types::SystemClock),
    )
    .unwrap();
    assert!(store.stats().unwrap().part_files > 0, "the backlog is in part files");
    assert_eq!(store.stats().unwrap().head_points, 0);
    store.compact().unwrap();
    drop(store);
    TestApp::spawn_with(db, config.clone()).await
}

/// Fails on the code before ADR 0010: every `ts` more than 24 h old became the receive
/// time, so the backlog was one burst of points "now".
async fn a_three_day_backlog_keeps_its_timestamps_and_rollups(db: TestDatabase) {
    let config = test_config(&db);
    let app = TestApp::spawn_with(db, config.clone()).await;
    let (admin, key, _) = setup(&app, "plant-a", "gw-1").await;
    let now = app.clock_now();
    // Readings every 10 minutes from midnight UTC three days ago until today's midnight.
    let from = now - now.rem_euclid(DAY) - 3 * DAY;
    let to = from + 3 * DAY;
    let backlog: Vec<(i64, f64)> = (0..(3 * DAY / STEP)).map(|i| (from + i * STEP, reading(i))).collect();
    assert_eq!(backlog.len(), 432);

    // Two uploads of the outage (the gateway's two buffers): the even readings first, then,
    // after the store flushed and compacted those partitions, the odd ones in one burst.
    let (even, odd): (Vec<_>, Vec<_>) = backlog.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let even: Vec<(i64, f64)> = even.into_iter().map(|(_, p)| *p).collect();
    let odd: Vec<(i64, f64)> = odd.into_iter().map(|(_, p)| *p).collect();
    upload(&app, &key, &even).await;
    assert_figures(&app, &admin, from, to, &even, "first upload, in the head").await;
    // The access token outlives the restart (the signing key is kept in the data dir).
    let app = flush_and_compact(app, &config).await;
    assert_figures(&app, &admin, from, to, &even, "first upload, compacted").await;

    upload(&app, &key, &odd).await;
    assert_figures(&app, &admin, from, to, &backlog, "second upload over compacted partitions").await;
    let app = flush_and_compact(app, &config).await;
    assert_figures(&app, &admin, from, to, &backlog, "both uploads, compacted").await;
    // Nothing landed "now".
    assert!(series(&app, &admin, to, app.clock_now() + 1, None).await.is_empty());
    app.stop().await;
}

/// Fails on the code before ADR 0010: a `ts` outside the skew window was replaced by the
/// receive time and stored.
async fn timestamps_outside_the_window_are_refused_and_recorded(db: TestDatabase) {
    let mut config = test_config(&db);
    config.ingest.max_backfill_secs = Some(2 * 86_400);
    config.ingest.max_clock_skew_secs = 3_600;
    let app = TestApp::spawn_with(db, config).await;
    let (admin, key, secret) = setup(&app, "plant-a", "gw-1").await;
    let now = app.clock_now();
    let message = |ts: i64, v: f64| json!({"device_id": "gw-1", "ts": ts, "power_kw": v});
    let batch = vec![
        message(now - 47 * HOUR, 1.0),
        message(now - 49 * HOUR, 2.0),
        message(now - HOUR, 3.0),
        message(now + 2 * HOUR, 4.0),
        json!({"device_id": "gw-1", "ts": "last tuesday", "power_kw": 5.0}),
        message(now - 1_000, 6.0),
    ];
    let (status, body) = app.post("/api/v1/factories/plant-a/telemetry", Some(&key), json!({"messages": batch})).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<&str> = results.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["stored", "rejected", "stored", "rejected", "rejected", "stored"], "{body}");
    assert_eq!(results[1]["rejected"][0]["reason"], "timestamp_too_old", "{body}");
    assert_eq!(results[1]["rejected"][0]["ts_ms"], now - 49 * HOUR, "{body}");
    assert!(results[1]["rejected"][0]["earliest_ms"].as_i64().unwrap() >= now - 48 * HOUR, "{body}");
    assert_eq!(results[3]["rejected"][0]["reason"], "timestamp_in_future", "{body}");
    assert_eq!(results[4]["rejected"][0]["reason"], "invalid_timestamp", "{body}");

    // Over MQTT the refused message is acknowledged too (redelivery cannot fix it), and the
    // device's next message is stored.
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/gw-1", &secret);
    mqtt::connack(&mut el).await.unwrap();
    let topic = "factories/plant-a/devices/gw-1/telemetry";
    mqtt::publish_acked(&client, &mut el, topic, &json!({"ts": now - 3 * DAY, "power_kw": 7.0}).to_string())
        .await
        .unwrap();
    mqtt::publish_acked(&client, &mut el, topic, &json!({"ts": now - 2 * HOUR, "power_kw": 8.0}).to_string())
        .await
        .unwrap();

    // Only the good messages are stored, each at its own time; nothing at the receive time.
    let stored = series(&app, &admin, now - 3 * DAY - HOUR, now + 3 * HOUR, None).await;
    assert_eq!(stored, [(now - 47 * HOUR, 1.0), (now - 2 * HOUR, 8.0), (now - HOUR, 3.0), (now - 1_000, 6.0)]);

    // Recorded: the device's last errors (newest first) and the metrics by reason.
    let (status, errors) = app.get("/api/v1/factories/plant-a/devices/gw-1/errors", Some(&admin)).await;
    assert_eq!(status, 200, "{errors}");
    let reasons: Vec<&str> =
        errors["items"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["timestamp_too_old", "invalid_timestamp", "timestamp_in_future", "timestamp_too_old"]);
    let detail = errors["items"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("older than the backfill window"), "{detail}");
    assert!(detail.contains(&format_rfc3339_ms(now - 3 * DAY)), "the detail names the time: {detail}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (reason, n) in [("timestamp_too_old", 2), ("timestamp_in_future", 1), ("invalid_timestamp", 1)] {
        let line = format!(r#"factoryops_ingest_rejected_messages_total{{reason="{reason}"}} {n}"#);
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    app.stop().await;
}

/// Without `ingest.max_backfill_secs` the window is the factory's raw retention (less one
/// 2-h partition), per-factory overrides included: a point the store would not keep as a
/// raw point is refused rather than acknowledged.
async fn the_default_window_is_the_factorys_raw_retention(db: TestDatabase) {
    let mut config = test_config(&db);
    config.tsdb.retention_raw_days = 5;
    config.tsdb.retention_factories.insert("plant-b".into(), RetentionDays { raw_days: Some(1), ..Default::default() });
    // A configured window beyond the retention is capped by it.
    config.ingest.max_backfill_secs = Some(30 * 86_400);
    let app = TestApp::spawn_with(db, config).await;
    let (_, key_a, _) = setup(&app, "plant-a", "gw-1").await;
    let root = app.root_token().await;
    let admin_b = app.factory_with_admin(&root, "plant-b", "boss@plant-b.example", PW).await;
    let (status, body) =
        app.post("/api/v1/factories/plant-b/devices", Some(&admin_b), json!({"id": "gw-1", "name": "Gateway"})).await;
    assert_eq!(status, 201, "{body}");
    let (_, key_b) = app
        .post(
            "/api/v1/factories/plant-b/api-keys",
            Some(&admin_b),
            json!({"name": "gw", "permissions": ["telemetry:write"]}),
        )
        .await;
    let key_b = key_b["key"].as_str().unwrap();
    let now = app.clock_now();
    let status_of = |factory: &'static str, key: String, ts: i64| {
        let app = &app;
        async move {
            let (status, body) = app
                .post(
                    &format!("/api/v1/factories/{factory}/telemetry"),
                    Some(&key),
                    json!({"device_id": "gw-1", "ts": ts, "power_kw": 1}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let result = &body["results"][0];
            (result["status"].as_str().unwrap().to_string(), result["rejected"][0]["reason"].clone())
        }
    };
    let stored = ("stored".to_string(), Value::Null);
    let too_old = ("rejected".to_string(), json!("timestamp_too_old"));
    assert_eq!(status_of("plant-a", key_a.clone(), now - 4 * DAY).await, stored);
    assert_eq!(status_of("plant-a", key_a.clone(), now - 5 * DAY + HOUR).await, too_old, "within the last partition");
    assert_eq!(status_of("plant-a", key_a, now - 6 * DAY).await, too_old);
    assert_eq!(status_of("plant-b", key_b.to_string(), now - 21 * HOUR).await, stored);
    assert_eq!(status_of("plant-b", key_b.to_string(), now - 23 * HOUR).await, too_old);
    app.stop().await;
}

backend_matrix!(
    a_three_day_backlog_keeps_its_timestamps_and_rollups,
    timestamps_outside_the_window_are_refused_and_recorded,
    the_default_window_is_the_factorys_raw_retention,
);
