#![allow(clippy::unwrap_used)]
//! Datasets, analytics runs and the model registry through the real server (ADR 0023):
//! backfilled telemetry is exported into a Parquet file that reads back with the same
//! values and sha256; anomaly, forecast and co-pilot runs on it succeed with a result; a
//! failed run is retried on the same dataset; permissions, validation and the 503 while
//! the object store is down.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestApp, test_config};
use factoryops::Components;
use factoryops_platform::secret::Secret;
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_types::format_rfc3339_ms;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PW: &str = "super-secret-pw-1";
const STEP: i64 = 15 * 60_000;
const DAY: i64 = 86_400_000;
/// Three days at 15 min.
const POINTS: i64 = 288;
/// The injected anomaly's position.
const SPIKE: i64 = 150;

struct Fixture {
    admin: String,
    viewer: String,
    key: String,
    from: i64,
    to: i64,
    /// (ts, power_kw, temp_c)
    points: Vec<(i64, f64, f64)>,
}

/// A daily power profile with a little deterministic noise and one spike; temperature
/// only on even steps (so the file has nulls).
fn power(i: i64, ts: i64) -> f64 {
    let hour = (ts.rem_euclid(DAY)) as f64 / 3_600_000.0;
    let base = 50.0 + 20.0 * (std::f64::consts::TAU * hour / 24.0).sin() + ((i * 7) % 5) as f64 * 0.25;
    if i == SPIKE { base + 200.0 } else { base }
}

async fn setup(app: &TestApp) -> Fixture {
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@plant-a.example", PW).await;
    let (_, viewer) = app.user_with(&admin, "plant-a", "viewer@plant-a.example", "viewer", &[]).await;
    let (status, body) =
        app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "Press"})).await;
    assert_eq!(status, 201, "{body}");
    let (status, key) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&admin),
            json!({"name": "gateway", "permissions": ["telemetry:write", "data:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_string();
    let now = app.clock_now();
    let from = now - now.rem_euclid(STEP) - 3 * DAY - STEP;
    let points: Vec<(i64, f64, f64)> = (0..POINTS)
        .map(|i| {
            let ts = from + i * STEP;
            (ts, power(i, ts), if i % 2 == 0 { 20.0 + (i % 11) as f64 * 0.5 } else { f64::NAN })
        })
        .collect();
    for chunk in points.chunks(250) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|(ts, p, t)| {
                if t.is_nan() {
                    json!({"device_id": "press-1", "ts": ts, "power_kw": p})
                } else {
                    json!({"device_id": "press-1", "ts": ts, "power_kw": p, "temp_c": t})
                }
            })
            .collect();
        let (status, body) =
            app.post("/api/v1/factories/plant-a/telemetry", Some(&key), json!({"messages": messages})).await;
        assert_eq!(status, 200, "{body}");
        for result in body["results"].as_array().unwrap() {
            assert_eq!(result["status"], "stored", "{result}");
        }
    }
    Fixture { admin, viewer, key, from, to: from + POINTS * STEP, points }
}

/// Polls a job until it leaves queued/running.
async fn finished(app: &TestApp, token: &str, path: &str) -> Value {
    for _ in 0..600 {
        let (status, body) = app.get(path, Some(token)).await;
        assert_eq!(status, 200, "{path}: {body}");
        if !matches!(body["status"].as_str(), Some("queued" | "running")) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} did not finish");
}

fn assert_job_shape(job: &Value) {
    for key in ["id", "status", "progress", "attempts", "created_at"] {
        assert!(job.get(key).is_some(), "job shape has {key}: {job}");
    }
    let p = job["progress"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{job}");
}

async fn export(app: &TestApp, f: &Fixture, body: Value) -> Value {
    let (status, created) = app.post("/api/v1/factories/plant-a/datasets", Some(&f.admin), body).await;
    assert_eq!(status, 202, "{created}");
    assert_job_shape(&created);
    assert!(matches!(created["status"].as_str(), Some("queued" | "running" | "succeeded")), "{created}");
    let id = created["id"].as_str().unwrap();
    finished(app, &f.admin, &format!("/api/v1/factories/plant-a/datasets/{id}")).await
}

async fn run(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, created) = app.post("/api/v1/factories/plant-a/analytics/runs", Some(token), body).await;
    assert_eq!(status, 202, "{created}");
    assert_job_shape(&created);
    let id = created["id"].as_str().unwrap();
    finished(app, token, &format!("/api/v1/factories/plant-a/analytics/runs/{id}")).await
}

async fn export_download_and_runs(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let f = setup(&app).await;
    let query = json!({"devices": ["press-1"], "properties": ["power_kw", "temp_c"],
        "from": format_rfc3339_ms(f.from), "to": format_rfc3339_ms(f.to)});

    // Permission, validation with field paths, unknown fields, another factory's device.
    let (status, problem) = app.post("/api/v1/factories/plant-a/datasets", Some(&f.viewer), query.clone()).await;
    assert_eq!(status, 403, "{problem}");
    let (status, problem) = app
        .post(
            "/api/v1/factories/plant-a/datasets",
            Some(&f.admin),
            json!({"devices": ["press-1", "bad id!"], "properties": [], "from": "yesterday", "to": "2026-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["devices[1]", "properties", "from"], "{problem}");
    let mut unknown = query.clone();
    unknown["format"] = json!("csv");
    let (status, problem) = app.post("/api/v1/factories/plant-a/datasets", Some(&f.admin), unknown).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "format", "{problem}");
    let mut missing = query.clone();
    missing["devices"] = json!(["press-9"]);
    let (status, problem) = app.post("/api/v1/factories/plant-a/datasets", Some(&f.admin), missing).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "devices[0]", "{problem}");

    // Export and poll.
    let dataset = export(&app, &f, query.clone()).await;
    assert_eq!(dataset["status"], "succeeded", "{dataset}");
    assert_eq!(dataset["progress"], 1.0);
    assert_eq!(dataset["attempts"], 1);
    let manifest = &dataset["manifest"];
    assert_eq!(manifest["rows"], POINTS, "{manifest}");
    assert_eq!(manifest["columns"], 3);
    assert_eq!(manifest["values"], POINTS + POINTS / 2);
    assert_eq!(manifest["format"], "parquet");
    assert_eq!(manifest["factory_id"], "plant-a");
    assert_eq!(manifest["query"]["devices"], json!(["press-1"]));
    let sha = manifest["sha256"].as_str().unwrap().to_string();
    let id = dataset["id"].as_str().unwrap().to_string();
    let (status, list) = app.get("/api/v1/factories/plant-a/datasets", Some(&f.viewer)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["manifest"]["sha256"], sha.as_str());

    // Download: the immutable file, its sha256 as ETag; read back with the parquet crate.
    let url = app.url(&format!("/api/v1/factories/plant-a/datasets/{id}/download"));
    let response = app.client.get(&url).bearer_auth(&f.viewer).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/vnd.apache.parquet");
    assert_eq!(response.headers()["etag"].to_str().unwrap(), format!("\"{sha}\""));
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, manifest["bytes"].as_u64().unwrap());
    let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, sha, "the file's sha256 is the manifest's");
    check_file(bytes, &f.points);
    let response =
        app.client.get(&url).bearer_auth(&f.viewer).header("if-none-match", format!("\"{sha}\"")).send().await.unwrap();
    assert_eq!(response.status(), 304, "a client holding this sha256 has the file");

    // The same query again gives the same bytes (deterministic export).
    let again = export(&app, &f, query.clone()).await;
    assert_eq!(again["manifest"]["sha256"], sha.as_str());

    // Runs: validation first.
    let (status, problem) = app
        .post(
            "/api/v1/factories/plant-a/analytics/runs",
            Some(&f.viewer),
            json!({"mode": "standard", "analysis": "statistics", "dataset_id": id}),
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    for (body, field) in [
        (json!({"mode": "standard", "analysis": "magic", "dataset_id": id}), "analysis"),
        (
            json!({"mode": "standard", "analysis": "anomaly", "dataset_id": "nope", "target": "press-1/power_kw"}),
            "dataset_id",
        ),
        (json!({"mode": "standard", "analysis": "anomaly", "target": "press-1/power_kw"}), "dataset_id"),
        (json!({"mode": "standard", "analysis": "anomaly", "dataset_id": id, "target": "press-2/power_kw"}), "target"),
        (
            json!({"mode": "standard", "analysis": "anomaly", "dataset_id": id, "hyperparameters": {"threshold": -1}}),
            "hyperparameters.threshold",
        ),
        (json!({"mode": "standard", "analysis": "anomaly", "dataset_id": id, "extra": 1}), "extra"),
    ] {
        let (status, problem) =
            app.post("/api/v1/factories/plant-a/analytics/runs", Some(&f.admin), body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&field), "{body}: {problem}");
    }

    // An anomaly run finds the injected spike at its timestamp.
    let anomaly = run(
        &app,
        &f.admin,
        json!({"mode": "standard", "analysis": "anomaly", "dataset_id": id, "target": "press-1/power_kw",
            "hyperparameters": {"method": "robust_z"}}),
    )
    .await;
    assert_eq!(anomaly["status"], "succeeded", "{}", anomaly["error"]);
    assert_eq!(anomaly["dataset_sha256"], sha.as_str());
    let result = &anomaly["result"];
    assert_eq!(result["analysis"], "anomaly", "{result}");
    let spike_ts = format_rfc3339_ms(f.from + SPIKE * STEP);
    let flagged: Vec<&str> =
        result["output"]["anomalies"].as_array().unwrap().iter().map(|a| a["ts"].as_str().unwrap()).collect();
    assert!(flagged.contains(&spike_ts.as_str()), "spike at {spike_ts} in {flagged:?}");
    assert!(anomaly["metrics"].is_object(), "{anomaly}");

    // A forecast run returns a forecast with bands.
    let forecast = run(
        &app,
        &f.admin,
        json!({"mode": "standard", "analysis": "forecast", "dataset_id": id, "target": "press-1/power_kw",
            "hyperparameters": {"horizon": 96}}),
    )
    .await;
    assert_eq!(forecast["status"], "succeeded", "{}", forecast["error"]);
    let points = forecast["result"]["output"]["forecast"].as_array().unwrap();
    assert_eq!(points.len(), 96);
    assert!(points.iter().all(|p| p["lower"].as_f64().unwrap() <= p["upper"].as_f64().unwrap()));

    // A co-pilot run registers its model as the next version of the name the forecast
    // run's model took (version 1), on this dataset's sha256.
    let copilot = run(
        &app,
        &f.admin,
        json!({"mode": "copilot", "goal": "forecast", "dataset_id": id, "target": "press-1/power_kw", "budget_seconds": 5}),
    )
    .await;
    assert_eq!(copilot["status"], "succeeded", "{}", copilot["error"]);
    assert_eq!(copilot["result"]["mode"], "copilot");
    assert!(copilot["result"]["output"]["explanation"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(forecast["model"], json!({"name": "forecast-press-1.power_kw", "version": 1}));
    assert_eq!(copilot["model"], json!({"name": "forecast-press-1.power_kw", "version": 2}));
    let (status, models) = app.get("/api/v1/factories/plant-a/models", Some(&f.viewer)).await;
    assert_eq!(status, 200, "{models}");
    assert!(
        models["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "forecast-press-1.power_kw" && m["latest_version"] == 2),
        "{models}"
    );
    let (status, versions) =
        app.get("/api/v1/factories/plant-a/models/forecast-press-1.power_kw/versions", Some(&f.viewer)).await;
    assert_eq!(status, 200, "{versions}");
    let items = versions["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|v| v["version"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(items[0]["run_id"], forecast["id"]);
    assert_eq!(items[1]["run_id"], copilot["id"]);
    assert!(items.iter().all(|v| v["dataset_ref"] == sha.as_str() && v["dataset_id"] == id.as_str()));
    assert!(items[1]["artifact"]["params"].is_object(), "the artifact the live scorer loads");
    let (status, _) = app.get("/api/v1/factories/plant-a/models/nope/versions", Some(&f.viewer)).await;
    assert_eq!(status, 404);

    // The list shows runs without their results; a finished run is neither cancelled nor retried.
    let (status, runs) = app.get("/api/v1/factories/plant-a/analytics/runs", Some(&f.viewer)).await;
    assert_eq!(status, 200);
    assert_eq!(runs["items"].as_array().unwrap().len(), 3);
    assert!(runs["items"][0].get("result").is_none());
    let anomaly_id = anomaly["id"].as_str().unwrap();
    for action in ["cancel", "retry"] {
        let (status, problem) = app
            .post(&format!("/api/v1/factories/plant-a/analytics/runs/{anomaly_id}/{action}"), Some(&f.admin), json!({}))
            .await;
        assert_eq!(status, 409, "{action}: {problem}");
    }

    // A run that fails (one hour of data has no complete day to cluster) is retried on the
    // same dataset.
    let short = export(
        &app,
        &f,
        json!({"devices": ["press-1"], "properties": ["power_kw"],
            "from": format_rfc3339_ms(f.from), "to": format_rfc3339_ms(f.from + 4 * STEP)}),
    )
    .await;
    assert_eq!(short["status"], "succeeded", "{short}");
    let failed =
        run(&app, &f.admin, json!({"mode": "standard", "analysis": "clustering", "dataset_id": short["id"]})).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    assert!(failed.get("result").is_none());
    let failed_id = failed["id"].as_str().unwrap();
    let (status, retried) = app
        .post(&format!("/api/v1/factories/plant-a/analytics/runs/{failed_id}/retry"), Some(&f.admin), json!({}))
        .await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(retried["dataset_sha256"], short["manifest"]["sha256"], "the same dataset");
    let again = finished(&app, &f.admin, &format!("/api/v1/factories/plant-a/analytics/runs/{failed_id}")).await;
    assert_eq!(again["status"], "failed", "{again}");
    assert_eq!(again["dataset_id"], short["id"]);

    // Runs and model versions hold their dataset against retention.
    let db = factoryops_db::Database::connect(&app.db.url).await.unwrap();
    let store = factoryops_datasets::store::DatasetStore::new(db);
    let factory = factoryops_types::FactoryId::parse("plant-a").unwrap();
    let refs = store.referenced_by(&factory, &id).await.unwrap();
    for run in [&anomaly, &forecast, &copilot] {
        assert!(refs.contains(&format!("analytics_run:{}", run["id"].as_str().unwrap())), "{refs:?}");
    }
    assert!(refs.contains(&"model_version:forecast-press-1.power_kw/v2".to_string()), "{refs:?}");
    let expired = store.expire(&factory, i64::MAX).await.unwrap();
    assert!(expired.iter().all(|e| e.dataset_id != id && e.dataset_id != short["id"]), "{expired:?}");

    // A run id is not a dataset and the reverse.
    let (status, _) = app.get(&format!("/api/v1/factories/plant-a/datasets/{anomaly_id}"), Some(&f.viewer)).await;
    assert_eq!(status, 404);
    let (status, _) = app.get(&format!("/api/v1/factories/plant-a/analytics/runs/{id}"), Some(&f.viewer)).await;
    assert_eq!(status, 404);

    // Telemetry is unaffected by all this; the key still writes.
    let (status, _) = app
        .post("/api/v1/factories/plant-a/telemetry", Some(&f.key), json!({"device_id": "press-1", "power_kw": 1.0}))
        .await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// The file's `ts` and value columns are exactly the points sent (null where a property
/// had no sample).
fn check_file(bytes: Bytes, points: &[(i64, f64, f64)]) {
    use arrow_array::{Array, Float64Array, TimestampMillisecondArray};
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, vec!["ts", "press-1/power_kw", "press-1/temp_c"]);
    let mut rows = Vec::new();
    for batch in reader.build().unwrap() {
        let batch = batch.unwrap();
        let ts = batch.column(0).as_any().downcast_ref::<TimestampMillisecondArray>().unwrap();
        let power = batch.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
        let temp = batch.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..batch.num_rows() {
            let t = if temp.is_null(i) { f64::NAN } else { temp.value(i) };
            rows.push((ts.value(i), power.value(i), t));
        }
    }
    assert_eq!(rows.len(), points.len());
    for (got, want) in rows.iter().zip(points) {
        assert_eq!((got.0, got.1), (want.0, want.1));
        assert!(got.2 == want.2 || (got.2.is_nan() && want.2.is_nan()), "{got:?} vs {want:?}");
    }
}

/// Without the analytics component the export stays queued: the dataset is listed, its
/// download is a 409 naming the status, a run on it is refused on `dataset_id`.
async fn a_dataset_that_is_not_ready(db: TestDatabase) {
    let config = test_config(&db);
    let components: Components = "api,ingest,rules,notify".parse().unwrap();
    let app = TestApp::spawn_components(db, config, components).await;
    let f = setup(&app).await;
    let (status, created) = app
        .post(
            "/api/v1/factories/plant-a/datasets",
            Some(&f.admin),
            json!({"devices": ["press-1"], "properties": ["power_kw"], "from": format_rfc3339_ms(f.from),
                "to": format_rfc3339_ms(f.to), "every": "1h", "agg": "avg"}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["query"]["every"], "1h");
    let id = created["id"].as_str().unwrap();
    let (status, problem) =
        app.get(&format!("/api/v1/factories/plant-a/datasets/{id}/download"), Some(&f.viewer)).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["dataset_status"], "queued");
    let (status, problem) = app
        .post(
            "/api/v1/factories/plant-a/analytics/runs",
            Some(&f.admin),
            json!({"mode": "standard", "analysis": "statistics", "dataset_id": id}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "dataset_id");
    let (status, _) = app.get("/api/v1/factories/plant-a/datasets/nope/download", Some(&f.viewer)).await;
    assert_eq!(status, 404);
    app.stop().await;
}

/// With no process running analytics runs (`jobs.concurrency.analytics_run = 0`) a run
/// stays queued: cancel ends it at once, a second cancel is a 409, a retry queues it
/// again on the same dataset.
async fn a_queued_run_is_cancelled_and_retried(db: TestDatabase) {
    let mut config = test_config(&db);
    config.jobs.concurrency.insert("analytics_run".into(), 0);
    let app = TestApp::spawn_with(db, config).await;
    let f = setup(&app).await;
    let dataset = export(
        &app,
        &f,
        json!({"devices": ["press-1"], "properties": ["power_kw"], "from": format_rfc3339_ms(f.from),
            "to": format_rfc3339_ms(f.to), "every": "1h", "agg": "avg"}),
    )
    .await;
    assert_eq!(dataset["status"], "succeeded", "{dataset}");
    // 72 h not on hour bounds: the first and the last hour bucket are partial, 73 rows.
    let partial = usize::from(f.from % 3_600_000 != 0);
    assert_eq!(dataset["manifest"]["rows"].as_u64().unwrap() as usize, 72 + partial, "{dataset}");
    let (status, created) = app
        .post(
            "/api/v1/factories/plant-a/analytics/runs",
            Some(&f.admin),
            json!({"mode": "standard", "analysis": "statistics", "dataset_id": dataset["id"]}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["status"], "queued");
    let run = created["id"].as_str().unwrap();
    let path = format!("/api/v1/factories/plant-a/analytics/runs/{run}");
    let (status, problem) = app.post(&format!("{path}/retry"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 409, "a queued run is not retried: {problem}");
    let (status, problem) = app.post(&format!("{path}/cancel"), Some(&f.viewer), json!({})).await;
    assert_eq!(status, 403, "{problem}");
    let (status, cancelled) = app.post(&format!("{path}/cancel"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 202, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, problem) = app.post(&format!("{path}/cancel"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["run_status"], "cancelled");
    let (status, retried) = app.post(&format!("{path}/retry"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(retried["status"], "queued");
    assert_eq!(retried["dataset_sha256"], dataset["manifest"]["sha256"]);
    app.stop().await;
}

/// A running run stops at its next checkpoint when cancelled: ten days at 1 min through an
/// isolation forest of 1,000 trees keeps the CPU pool busy long enough to ask. The
/// runtime passes a cancel to the handler at its next heartbeat (lease / 3): a 3 s lease
/// here, so within about a second.
async fn a_running_run_is_cancelled_at_a_checkpoint(db: TestDatabase) {
    let mut config = test_config(&db);
    config.jobs.lease_secs = 3;
    let app = TestApp::spawn_with(db, config).await;
    let f = setup(&app).await;
    const MINUTE: i64 = 60_000;
    let to = f.from;
    let from = to - 10 * DAY;
    let points: Vec<Value> = (0..(to - from) / MINUTE)
        .map(|i| json!({"device_id": "press-1", "ts": from + i * MINUTE, "power_kw": power(i, from + i * MINUTE)}))
        .collect();
    for chunk in points.chunks(500) {
        let (status, body) =
            app.post("/api/v1/factories/plant-a/telemetry", Some(&f.key), json!({"messages": chunk})).await;
        assert_eq!(status, 200, "{body}");
    }
    let dataset = export(
        &app,
        &f,
        json!({"devices": ["press-1"], "properties": ["power_kw"], "from": format_rfc3339_ms(from), "to": format_rfc3339_ms(to)}),
    )
    .await;
    assert_eq!(dataset["manifest"]["rows"], 14_400, "{dataset}");
    let (status, created) = app
        .post(
            "/api/v1/factories/plant-a/analytics/runs",
            Some(&f.admin),
            json!({"mode": "standard", "analysis": "anomaly", "dataset_id": dataset["id"],
                "hyperparameters": {"method": "isolation_forest", "trees": 1000, "sample_size": 4096}}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let path = format!("/api/v1/factories/plant-a/analytics/runs/{}", created["id"].as_str().unwrap());
    let mut running = false;
    for _ in 0..200 {
        let (_, run) = app.get(&path, Some(&f.admin)).await;
        if run["status"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(running, "the run started");
    let asked = std::time::Instant::now();
    let (status, cancelling) = app.post(&format!("{path}/cancel"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 202, "{cancelling}");
    assert_eq!(cancelling["cancel_requested"], true, "{cancelling}");
    let done = finished(&app, &f.admin, &path).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(done.get("result").is_none());
    let took = asked.elapsed();
    println!("cancelled {} ms after the request", took.as_millis());
    assert!(took < Duration::from_secs(10), "stopped at a checkpoint, not at the end: {took:?}");
    app.stop().await;
}

/// Object store down (an S3 endpoint nobody listens on): new datasets are refused with a
/// 503 naming storage; telemetry carries on.
async fn storage_down_refuses_new_work(db: TestDatabase) {
    let mut config = test_config(&db);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    config.object_store_url = Some(factoryops_platform::secret::SecretUrl::new(format!(
        "s3://datasets?endpoint=http://127.0.0.1:{port}&region=us-east-1"
    )));
    config.object_store.access_key_id = Some(Secret::new("test"));
    config.object_store.secret_access_key = Some(Secret::new("test-secret"));
    let app = TestApp::spawn_with(db, config).await;
    let f = setup(&app).await;
    let (status, problem) = app
        .post(
            "/api/v1/factories/plant-a/datasets",
            Some(&f.admin),
            json!({"devices": ["press-1"], "properties": ["power_kw"], "from": format_rfc3339_ms(f.from),
                "to": format_rfc3339_ms(f.to)}),
        )
        .await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:factoryops:problem:storage-unavailable");
    assert_eq!(problem["dependency"], "object_store");
    let (status, _) = app.get("/api/v1/factories/plant-a/datasets", Some(&f.viewer)).await;
    assert_eq!(status, 200, "reads of records still answer");
    let (status, _) = app
        .send(
            Method::POST,
            "/api/v1/factories/plant-a/telemetry",
            Some(&f.key),
            Some(json!({"device_id": "press-1", "power_kw": 1.0})),
        )
        .await;
    assert_eq!(status, 200, "telemetry carries on");
    app.stop().await;
}

/// The outage drill against a real S3 server (s3s-fs): the dataset is exported to
/// S3; the server is killed; a run accepted just before anyone noticed fails with a
/// storage error after its retries, telemetry carries on, new runs are refused with a
/// 503 once the monitor saw it; the server comes back and a retry of the failed run
/// succeeds on the same dataset sha256.
async fn an_s3_outage_fails_a_run_and_its_retry_succeeds(db: TestDatabase) {
    let Some(mut s3) = factoryops_testkit::s3::S3Server::start().await else { return };
    let mut config = test_config(&db);
    config.object_store_url = Some(factoryops_platform::secret::SecretUrl::new(s3.url()));
    config.object_store.access_key_id = Some(Secret::new(factoryops_testkit::s3::ACCESS_KEY));
    config.object_store.secret_access_key = Some(Secret::new(factoryops_testkit::s3::SECRET_KEY));
    config.object_store.timeout_secs = 2;
    config.object_store.check_interval_secs = 3;
    config.jobs.backoff_base_secs = 1;
    config.jobs.backoff_max_secs = 1;
    let app = TestApp::spawn_with(db, config).await;
    let f = setup(&app).await;
    let dataset = export(
        &app,
        &f,
        json!({"devices": ["press-1"], "properties": ["power_kw"], "from": format_rfc3339_ms(f.from),
            "to": format_rfc3339_ms(f.to)}),
    )
    .await;
    assert_eq!(dataset["status"], "succeeded", "{dataset}");
    let sha = dataset["manifest"]["sha256"].as_str().unwrap().to_string();
    let run_body = json!({"mode": "standard", "analysis": "anomaly", "dataset_id": dataset["id"]});

    s3.stop();
    let started = std::time::Instant::now();
    let (status, created) =
        app.post("/api/v1/factories/plant-a/analytics/runs", Some(&f.admin), run_body.clone()).await;
    assert_eq!(status, 202, "accepted before the monitor's next probe: {created}");
    let (status, _) = app
        .post("/api/v1/factories/plant-a/telemetry", Some(&f.key), json!({"device_id": "press-1", "power_kw": 1.0}))
        .await;
    assert_eq!(status, 200, "telemetry carries on while the object store is down");
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/factories/plant-a/analytics/runs/{id}");
    let failed = finished(&app, &f.admin, &path).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 3, "retried with backoff: {failed}");
    assert!(failed["error"].as_str().unwrap().contains("storage unavailable"), "{failed}");
    println!("run failed after {} ms of outage", started.elapsed().as_millis());

    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, problem) = app.post("/api/v1/factories/plant-a/analytics/runs", Some(&f.admin), run_body).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:factoryops:problem:storage-unavailable");
    let (status, problem) = app.post(&format!("{path}/retry"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 503, "no retry while storage is down: {problem}");

    s3.restart().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, retried) = app.post(&format!("{path}/retry"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 202, "{retried}");
    let done = finished(&app, &f.admin, &path).await;
    assert_eq!(done["status"], "succeeded", "{}", done["error"]);
    assert_eq!(done["dataset_sha256"], sha.as_str(), "the same dataset");
    assert_eq!(done["result"]["analysis"], "anomaly");
    app.stop().await;
}

backend_matrix!(
    an_s3_outage_fails_a_run_and_its_retry_succeeds,
    export_download_and_runs,
    a_dataset_that_is_not_ready,
    a_queued_run_is_cancelled_and_retried,
    a_running_run_is_cancelled_at_a_checkpoint,
    storage_down_refuses_new_work
);
