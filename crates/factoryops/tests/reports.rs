#![allow(clippy::unwrap_used)]
//! Reports through the real server (ADR 0024): a backfilled day of power in Europe/Berlin
//! is reported as PDF, XLSX and JSON; the files are polled for, downloaded (content type,
//! attachment name, sha256 = ETag) and read back — `pdftotext` for the PDF, calamine for
//! the workbook, the OpenAPI schema for the JSON — with the hand-computed kWh; an alerts
//! report; permissions, validation, 409 before ready, 503 while the store is down.

mod common;

use std::io::Cursor;
use std::time::Duration;

use calamine::{Data, Reader, Xlsx};
use chrono::{NaiveDate, TimeZone};
use chrono_tz::Europe::Berlin;
use common::{TestApp, test_config};
use factoryops::Components;
use factoryops_platform::secret::Secret;
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_types::format_rfc3339_ms;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PW: &str = "super-secret-pw-1";
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const REPORTS: &str = "/api/v1/factories/plant-a/reports";

/// press-1: 100 kW all day, 160 kW from 10:00 to 11:00 (samples every minute, the
/// trapezoid adds half a minute of the 60 kW step at each edge): 2400 + 59 + 0.5 + 0.5
/// = 2460 kWh. press-2: 50 kW all day = 1200 kWh. Together 3660 kWh.
const PRESS_1_KWH: f64 = 2460.0;
const PRESS_2_KWH: f64 = 1200.0;
const TOTAL_KWH: f64 = PRESS_1_KWH + PRESS_2_KWH;

fn berlin(date: NaiveDate, hour: u32, minute: u32) -> i64 {
    Berlin.from_local_datetime(&date.and_hms_opt(hour, minute, 0).unwrap()).earliest().unwrap().timestamp_millis()
}

/// A local day two or more days back that has 24 hours (no DST change).
fn plain_day(app: &TestApp) -> NaiveDate {
    let today = chrono::DateTime::from_timestamp_millis(app.clock_now()).unwrap().with_timezone(&Berlin).date_naive();
    let mut day = today.checked_sub_days(chrono::Days::new(2)).unwrap();
    while berlin(day.succ_opt().unwrap(), 0, 0) - berlin(day, 0, 0) != 24 * HOUR {
        day = day.pred_opt().unwrap();
    }
    day
}

struct Fixture {
    admin: String,
    viewer: String,
    day: NaiveDate,
    from: String,
    to: String,
}

async fn setup(app: &TestApp) -> Fixture {
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@plant-a.example", PW).await;
    let (_, viewer) = app.user_with(&admin, "plant-a", "viewer@plant-a.example", "viewer", &[]).await;
    for (id, name) in [("press-1", "Press 1"), ("press-2", "Press 2")] {
        let (status, body) =
            app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": id, "name": name})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, key) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&admin),
            json!({"name": "gateway", "permissions": ["telemetry:write"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_string();
    let day = plain_day(app);
    let (d0, d1) = (berlin(day, 0, 0), berlin(day.succ_opt().unwrap(), 0, 0));
    let (burst_from, burst_to) = (berlin(day, 10, 0), berlin(day, 11, 0));
    let mut messages = Vec::new();
    let mut t = d0;
    while t <= d1 {
        let kw = if t >= burst_from && t < burst_to { 160.0 } else { 100.0 };
        messages.push(json!({"device_id": "press-1", "ts": t, "power_kw": kw}));
        messages.push(json!({"device_id": "press-2", "ts": t, "power_kw": 50.0}));
        t += MIN;
    }
    for chunk in messages.chunks(1000) {
        let (status, body) =
            app.post("/api/v1/factories/plant-a/telemetry", Some(&key), json!({"messages": chunk})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["results"].as_array().unwrap().iter().all(|r| r["status"] == "stored"), "{body}");
    }
    for device in ["press-1", "press-2"] {
        let (status, body) = app
            .send(
                Method::PATCH,
                &format!("/api/v1/factories/plant-a/devices/{device}/properties/power_kw"),
                Some(&admin),
                Some(json!({"quantity": "power", "unit": "kW"})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    Fixture { admin, viewer, day, from: format_rfc3339_ms(d0), to: format_rfc3339_ms(d1) }
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

async fn generate(app: &TestApp, f: &Fixture, body: Value) -> Value {
    let (status, created) = app.post(REPORTS, Some(&f.admin), body.clone()).await;
    assert_eq!(status, 202, "{created}");
    for key in ["id", "status", "progress", "attempts", "created_at", "kind", "format", "from", "to"] {
        assert!(created.get(key).is_some(), "job shape has {key}: {created}");
    }
    assert_eq!(created["format"], body["format"]);
    let id = created["id"].as_str().unwrap();
    let done = finished(app, &f.viewer, &format!("{REPORTS}/{id}")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["progress"], 1.0);
    done
}

/// Downloads a succeeded report and checks the headers against its job.
async fn download(app: &TestApp, f: &Fixture, report: &Value, content_type: &str) -> Vec<u8> {
    let id = report["id"].as_str().unwrap();
    let sha = report["sha256"].as_str().unwrap();
    let url = app.url(&format!("{REPORTS}/{id}/download"));
    let response = app.client.get(&url).bearer_auth(&f.viewer).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], content_type);
    assert_eq!(headers["etag"].to_str().unwrap(), format!("\"{sha}\""));
    let filename = report["filename"].as_str().unwrap();
    assert_eq!(headers["content-disposition"].to_str().unwrap(), format!("attachment; filename=\"{filename}\""));
    let bytes = response.bytes().await.unwrap().to_vec();
    assert_eq!(bytes.len() as u64, report["size"].as_u64().unwrap());
    let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, sha, "the file's sha256 is the job's and the ETag");
    let response =
        app.client.get(&url).bearer_auth(&f.viewer).header("if-none-match", format!("\"{sha}\"")).send().await.unwrap();
    assert_eq!(response.status(), 304);
    bytes
}

fn pdf_text(bytes: &[u8], name: &str) -> Option<String> {
    if std::process::Command::new("pdftotext").arg("-v").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "pdftotext (poppler-utils) is missing in CI");
        eprintln!("SKIPPED: pdftotext not installed");
        return None;
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-api");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("pdftotext").arg("-layout").arg(&path).arg("-").output().unwrap();
    assert!(out.status.success(), "pdftotext: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Checks a downloaded JSON report against the `Report` schema of the served OpenAPI
/// document (the schema its download response names).
fn assert_matches_schema(doc: &Value) {
    let openapi = serde_json::to_value(factoryops_api::openapi_document()).unwrap();
    let download = &openapi["paths"]["/api/v1/factories/{factory_id}/reports/{report_id}/download"]["get"];
    let schema = &download["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(schema["$ref"], "#/components/schemas/Report", "{schema}");
    let schema = json!({"$ref": "#/components/schemas/Report", "components": openapi["components"]});
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

fn float(d: Option<&Data>) -> f64 {
    match d {
        Some(Data::Float(v)) => *v,
        other => panic!("expected a number, got {other:?}"),
    }
}

/// The row of `sheet` whose first cell is `label`.
fn row_of(sheet: &calamine::Range<Data>, label: &str) -> u32 {
    (0..sheet.height() as u32)
        .find(|r| matches!(sheet.get_value((*r, 0)), Some(Data::String(s)) if s == label))
        .unwrap_or_else(|| panic!("no row {label:?}"))
}

async fn energy_reports_in_every_format(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let f = setup(&app).await;
    let request = |format: &str| json!({"kind": "energy", "format": format, "from": f.from, "to": f.to});
    let date = f.day.format("%Y-%m-%d").to_string();
    let next = f.day.succ_opt().unwrap().format("%Y-%m-%d").to_string();

    // Only `reports:generate` generates; a viewer reads.
    let (status, problem) = app.post(REPORTS, Some(&f.viewer), request("pdf")).await;
    assert_eq!(status, 403, "{problem}");

    // PDF: the totals as the PDF prints them (kWh with one decimal, grouped).
    let pdf = generate(&app, &f, request("pdf")).await;
    assert_eq!((pdf["kind"].as_str(), pdf["format"].as_str()), (Some("energy"), Some("pdf")));
    assert_eq!(pdf["filename"], format!("energy-report_factory-plant-a_{date}_{next}.pdf"));
    let bytes = download(&app, &f, &pdf, "application/pdf").await;
    assert!(bytes.starts_with(b"%PDF-"));
    if let Some(text) = pdf_text(&bytes, pdf["filename"].as_str().unwrap()) {
        // The 15-minute peak: 160 + 50 kW, in the interval starting 10:00 local.
        let peak_at = format!("{date} 10:00");
        for expected in [
            "Energy report",
            "Factory plant-a",
            "Europe/Berlin",
            "3,660.0",
            "2,460.0",
            "1,200.0",
            "Press 1",
            "210.0 kW",
            peak_at.as_str(),
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
    }

    // XLSX: numbers typed as numbers.
    let xlsx = generate(&app, &f, request("xlsx")).await;
    let bytes = download(&app, &f, &xlsx, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet").await;
    let mut wb = Xlsx::new(Cursor::new(bytes)).unwrap();
    let days = wb.worksheet_range("By day").unwrap();
    assert!(
        matches!(days.get_value((1, 0)), Some(Data::String(s)) if s.starts_with(&date)),
        "{:?}",
        days.get_value((1, 0))
    );
    assert!((float(days.get_value((1, 1))) - TOTAL_KWH).abs() < 1e-6);
    assert!((float(days.get_value((row_of(&days, "Total"), 1))) - TOTAL_KWH).abs() < 1e-6);
    let devices = wb.worksheet_range("By device").unwrap();
    assert!((float(devices.get_value((row_of(&devices, "Press 1"), 2))) - PRESS_1_KWH).abs() < 1e-6);
    assert!((float(devices.get_value((row_of(&devices, "Press 2"), 2))) - PRESS_2_KWH).abs() < 1e-6);

    // JSON, for one device: the document model.
    let mut one = request("json");
    one["devices"] = json!(["press-2"]);
    let json_report = generate(&app, &f, one).await;
    assert_eq!(json_report["devices"], json!(["press-2"]));
    let bytes = download(&app, &f, &json_report, "application/json").await;
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_matches_schema(&doc);
    assert_eq!(doc["kind"], "energy");
    assert_eq!(doc["time_zone"], "Europe/Berlin");
    let consumed = &doc["sections"][0]["key_figures"][0];
    assert_eq!(consumed["label"], "Energy consumed");
    assert!((consumed["value"].as_f64().unwrap() - PRESS_2_KWH).abs() < 1e-6, "{consumed}");

    // The list, newest first; an ended report is neither cancelled nor retried.
    let (status, list) = app.get(REPORTS, Some(&f.viewer)).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{list}");
    assert_eq!(ids[0], json_report["id"].as_str().unwrap());
    let pdf_id = pdf["id"].as_str().unwrap();
    let (status, problem) = app.post(&format!("{REPORTS}/{pdf_id}/cancel"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["report_status"], "succeeded");
    let (status, problem) = app.post(&format!("{REPORTS}/{pdf_id}/retry"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 409, "{problem}");
    let (status, _) = app.get(&format!("{REPORTS}/nope"), Some(&f.viewer)).await;
    assert_eq!(status, 404);

    // Validation: every invalid field with its path.
    let (status, problem) = app
        .post(
            REPORTS,
            Some(&f.admin),
            json!({"kind": "weekly", "format": "docx", "from": "yesterday", "to": f.to, "devices": ["press-1", "ghost", "press-1"]}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["kind", "format", "from", "devices[1]", "devices[2]"], "{problem}");
    assert_eq!(problem["errors"][0]["message"], "must be one of energy, alerts", "{problem}");
    let (status, problem) =
        app.post(REPORTS, Some(&f.admin), json!({"kind": "energy", "format": "pdf", "from": f.to, "to": f.from})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "to", "{problem}");
    let (status, problem) = app
        .post(
            REPORTS,
            Some(&f.admin),
            json!({"kind": "energy", "format": "pdf", "from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "to", "{problem}");
    let mut unknown = request("pdf");
    unknown["email"] = json!("boss@plant-a.example");
    let (status, problem) = app.post(REPORTS, Some(&f.admin), unknown).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
    let mut empty = request("pdf");
    empty["devices"] = json!([]);
    let (status, problem) = app.post(REPORTS, Some(&f.admin), empty).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "devices", "{problem}");
    app.stop().await;
}

/// Without the reports component the job stays queued: the report is listed, its
/// download is a 409 naming the status; cancel ends it, retry queues it again.
async fn a_report_that_is_not_ready(db: TestDatabase) {
    let config = test_config(&db);
    let components: Components = "api,ingest,rules,notify".parse().unwrap();
    let app = TestApp::spawn_components(db, config, components).await;
    let f = setup(&app).await;
    let (status, created) = app
        .post(REPORTS, Some(&f.admin), json!({"kind": "energy", "format": "xlsx", "from": f.from, "to": f.to}))
        .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["status"], "queued");
    assert!(created.get("sha256").is_none(), "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, problem) = app.get(&format!("{REPORTS}/{id}/download"), Some(&f.viewer)).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["report_status"], "queued");
    let (status, _) = app.post(&format!("{REPORTS}/{id}/cancel"), Some(&f.viewer), json!({})).await;
    assert_eq!(status, 403);
    let (status, cancelled) = app.post(&format!("{REPORTS}/{id}/cancel"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 202, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, problem) = app.get(&format!("{REPORTS}/{id}/download"), Some(&f.viewer)).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["report_status"], "cancelled");
    let (status, retried) = app.post(&format!("{REPORTS}/{id}/retry"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(retried["status"], "queued");
    // An unknown id is a 404, not a 409.
    let (status, _) = app.get(&format!("{REPORTS}/nope/download"), Some(&f.viewer)).await;
    assert_eq!(status, 404);
    app.stop().await;
}

/// An alert opened by a rule and acknowledged, reported as JSON and PDF: one alert of
/// the rule and device, its notification, the rule's name in the PDF.
async fn an_alerts_report(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let f = setup(&app).await;
    let rule = json!({"name": "High power", "scope": {"devices": ["press-1"]},
        "condition": {"property": "power_kw", "op": ">", "value": 10}, "severity": "critical",
        "notify": {"emails": ["ops@plant-a.example"]}});
    let (status, rule) = app.post("/api/v1/factories/plant-a/rules", Some(&f.admin), rule).await;
    assert_eq!(status, 201, "{rule}");
    let (status, key) = app
        .post(
            "/api/v1/factories/plant-a/api-keys",
            Some(&f.admin),
            json!({"name": "live", "permissions": ["telemetry:write"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, body) = app
        .post(
            "/api/v1/factories/plant-a/telemetry",
            Some(key["key"].as_str().unwrap()),
            json!({"device_id": "press-1", "power_kw": 42.0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut alert_id = String::new();
    for _ in 0..200 {
        let (_, alerts) = app.get("/api/v1/factories/plant-a/alerts", Some(&f.admin)).await;
        if let Some(id) = alerts["items"][0]["id"].as_str() {
            alert_id = id.to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alert_id.is_empty(), "the alert opened");
    let (status, body) =
        app.post(&format!("/api/v1/factories/plant-a/alerts/{alert_id}/acknowledge"), Some(&f.admin), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let now = app.clock_now();
    let (from, to) = (format_rfc3339_ms(now - HOUR), format_rfc3339_ms(now + HOUR));

    let report = generate(&app, &f, json!({"kind": "alerts", "format": "json", "from": from, "to": to})).await;
    let bytes = download(&app, &f, &report, "application/json").await;
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_matches_schema(&doc);
    assert_eq!(doc["kind"], "alerts");
    let figures = doc["sections"][0]["key_figures"].as_array().unwrap();
    let figure = |label: &str| figures.iter().find(|k| k["label"] == label).unwrap()["value"].clone();
    assert_eq!(figure("Alerts opened"), 1.0, "{doc}");
    assert_eq!(figure("Critical alerts"), 1.0);
    assert_eq!(figure("Still unresolved"), 1.0);
    assert!(figure("Mean time to acknowledge (MTTA)").is_number(), "acknowledged: {doc}");

    // Another device's alerts only: none.
    let other =
        generate(&app, &f, json!({"kind": "alerts", "format": "json", "from": from, "to": to, "devices": ["press-2"]}))
            .await;
    let doc: Value = serde_json::from_slice(&download(&app, &f, &other, "application/json").await).unwrap();
    let figures = doc["sections"][0]["key_figures"].as_array().unwrap();
    assert_eq!(figures.iter().find(|k| k["label"] == "Alerts opened").unwrap()["value"], 0.0, "{doc}");

    let pdf = generate(&app, &f, json!({"kind": "alerts", "format": "pdf", "from": from, "to": to})).await;
    assert!(pdf["filename"].as_str().unwrap().starts_with("alerts-report_factory-plant-a_"), "{pdf}");
    let bytes = download(&app, &f, &pdf, "application/pdf").await;
    if let Some(text) = pdf_text(&bytes, pdf["filename"].as_str().unwrap()) {
        for expected in ["Alerts report", "High power", "Press 1"] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
    }
    app.stop().await;
}

/// Object store down (an S3 endpoint nobody listens on): a valid report request is a 503
/// naming storage, an invalid one still a 422; the list still answers.
async fn storage_down_refuses_new_reports(db: TestDatabase) {
    let mut config = test_config(&db);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    config.object_store_url = Some(factoryops_platform::secret::SecretUrl::new(format!(
        "s3://reports?endpoint=http://127.0.0.1:{port}&region=us-east-1"
    )));
    config.object_store.access_key_id = Some(Secret::new("test"));
    config.object_store.secret_access_key = Some(Secret::new("test-secret"));
    let app = TestApp::spawn_with(db, config).await;
    let f = setup(&app).await;
    let (status, problem) =
        app.post(REPORTS, Some(&f.admin), json!({"kind": "energy", "format": "pdf", "from": f.from, "to": f.to})).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:factoryops:problem:storage-unavailable");
    assert_eq!(problem["dependency"], "object_store");
    let (status, problem) =
        app.post(REPORTS, Some(&f.admin), json!({"kind": "energy", "format": "odt", "from": f.from, "to": f.to})).await;
    assert_eq!(status, 422, "{problem}");
    let (status, list) = app.get(REPORTS, Some(&f.viewer)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"], json!([]));
    app.stop().await;
}

backend_matrix!(
    energy_reports_in_every_format,
    an_alerts_report,
    a_report_that_is_not_ready,
    storage_down_refuses_new_reports
);
