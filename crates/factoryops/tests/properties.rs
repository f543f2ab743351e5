#![allow(clippy::unwrap_used)]
//! Property semantics (quantity, unit, counter parameters) and state properties, through
//! the real server.

mod common;

use common::TestApp;
use factoryops_testkit::{TestDatabase, backend_matrix};
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "super-secret-pw-1";

/// A factory with a super admin, a device and a `telemetry:write` API key.
async fn setup(app: &TestApp, factory: &str, device: &str) -> (String, String) {
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, factory, &format!("boss@{factory}.example"), PW).await;
    let (status, body) = app
        .post(&format!("/api/v1/factories/{factory}/devices"), Some(&admin), json!({"id": device, "name": "Meter"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, key) = app
        .post(
            &format!("/api/v1/factories/{factory}/api-keys"),
            Some(&admin),
            json!({"name": "gateway", "permissions": ["telemetry:write"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    (admin, key["key"].as_str().unwrap().to_string())
}

async fn ingest(app: &TestApp, factory: &str, key: &str, message: Value) -> Value {
    let (status, body) = app.post(&format!("/api/v1/factories/{factory}/telemetry"), Some(key), message).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn patch(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    app.send(Method::PATCH, path, Some(token), Some(body)).await
}

fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect()
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["items"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()
}

async fn semantics_round_trip_validation_and_suggestions(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, key) = setup(&app, "plant-a", "meter-1").await;
    ingest(
        &app,
        "plant-a",
        &key,
        json!({"device_id": "meter-1", "power_kw": 12.5, "kwh_total": 1000.0, "parts": 3, "running": true, "rpm": 1450}),
    )
    .await;
    let base = "/api/v1/factories/plant-a/devices/meter-1/properties";

    // Unannotated properties carry a suggestion from their name (never applied) and null semantics.
    let (status, listed) = app.get(base, Some(&admin)).await;
    assert_eq!(status, 200, "{listed}");
    let power = by_name(&listed, "power_kw");
    assert_eq!(power["quantity"], Value::Null);
    assert_eq!(power["rollover"], Value::Null);
    assert_eq!(power["wh_per_pulse"], Value::Null);
    assert_eq!(power["counting"], Value::Null);
    assert_eq!(power["suggestion"], json!({"quantity": "power", "unit": "kW"}));
    assert_eq!(by_name(&listed, "kwh_total")["suggestion"], json!({"quantity": "energy_counter", "unit": "kWh"}));
    assert_eq!(by_name(&listed, "parts")["suggestion"], json!({"quantity": "production_count", "unit": "pcs"}));
    assert_eq!(by_name(&listed, "rpm")["suggestion"], Value::Null);
    assert_eq!(by_name(&listed, "power_kw")["value_type"], "number");

    // Round trip: the counter with its 32-bit rollover.
    let (status, counter) = patch(
        &app,
        &admin,
        &format!("{base}/kwh_total"),
        json!({"quantity": "energy_counter", "unit": "kWh", "rollover": 4294967296u64, "description": "main meter"}),
    )
    .await;
    assert_eq!(status, 200, "{counter}");
    assert_eq!(counter["quantity"], "energy_counter");
    assert_eq!(counter["unit"], "kWh");
    assert_eq!(counter["rollover"], 4294967296.0);
    assert_eq!(counter["description"], "main meter");
    assert_eq!(counter["suggestion"], Value::Null, "no suggestion once a quantity is set");
    let (status, parts) =
        patch(&app, &admin, &format!("{base}/parts"), json!({"quantity": "production_count", "unit": "pcs"})).await;
    assert_eq!((status, &parts["counting"]), (200, &json!("cumulative")), "{parts}");
    let (status, parts) = patch(
        &app,
        &admin,
        &format!("{base}/parts"),
        json!({"quantity": "production_count", "counting": "per_message"}),
    )
    .await;
    assert_eq!((status, &parts["counting"]), (200, &json!("per_message")), "{parts}");
    let (_, catalogue) = app.get("/api/v1/factories/plant-a/properties", Some(&admin)).await;
    let counter = by_name(&catalogue, "kwh_total");
    assert_eq!((&counter["quantity"], &counter["rollover"]), (&json!("energy_counter"), &json!(4294967296.0)));

    // A unit that is not the quantity's: 422 naming `unit`; a rollover on power names `rollover`.
    let (status, problem) =
        patch(&app, &admin, &format!("{base}/power_kw"), json!({"quantity": "power", "unit": "kWh"})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["unit"]);
    let (status, problem) =
        patch(&app, &admin, &format!("{base}/power_kw"), json!({"quantity": "power", "unit": "kW", "rollover": 65536}))
            .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["rollover"]);
    let (status, problem) =
        patch(&app, &admin, &format!("{base}/power_kw"), json!({"quantity": "pulse_counter", "unit": "pulses"})).await;
    assert_eq!((status, fields(&problem)), (422, vec!["wh_per_pulse"]), "{problem}");
    let (status, problem) = patch(&app, &admin, &format!("{base}/power_kw"), json!({"quantity": "watts"})).await;
    assert_eq!((status, fields(&problem)), (422, vec!["quantity"]), "{problem}");
    let (status, problem) =
        patch(&app, &admin, &format!("{base}/power_kw"), json!({"quantity": "power", "unit": "kW", "colour": "red"}))
            .await;
    assert_eq!(status, 422, "unknown fields are refused: {problem}");
    assert!(problem["detail"].as_str().unwrap().contains("colour"), "{problem}");
    // `state` only for state properties; numbers on a boolean property measure nothing.
    let (status, problem) = patch(&app, &admin, &format!("{base}/rpm"), json!({"quantity": "state"})).await;
    assert_eq!((status, fields(&problem)), (422, vec!["quantity"]), "{problem}");
    let (status, problem) =
        patch(&app, &admin, &format!("{base}/running"), json!({"quantity": "power", "unit": "kW"})).await;
    assert_eq!((status, fields(&problem)), (422, vec!["quantity"]), "{problem}");
    // Nothing of the refused edits was kept.
    let (_, power) = app.get(base, Some(&admin)).await;
    assert_eq!(by_name(&power, "power_kw")["quantity"], Value::Null);

    // Pulses, and a unit without a quantity stays free text as before.
    let (status, pulses) = patch(
        &app,
        &admin,
        &format!("{base}/power_kw"),
        json!({"quantity": "pulse_counter", "unit": "pulses", "wh_per_pulse": 10}),
    )
    .await;
    assert_eq!((status, &pulses["wh_per_pulse"]), (200, &json!(10.0)), "{pulses}");
    let (status, cleared) = patch(&app, &admin, &format!("{base}/power_kw"), json!({"quantity": null})).await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!((&cleared["quantity"], &cleared["wh_per_pulse"]), (&Value::Null, &Value::Null));
    assert_eq!(cleared["suggestion"]["quantity"], "power");
    let (status, free) = patch(&app, &admin, &format!("{base}/rpm"), json!({"unit": "1/min"})).await;
    assert_eq!((status, &free["unit"], &free["quantity"]), (200, &json!("1/min"), &Value::Null), "{free}");

    // Another factory's property is a 404, as is an unknown one.
    let root = app.root_token().await;
    let other = app.factory_with_admin(&root, "plant-b", "boss@plant-b.example", PW).await;
    let (status, _) = patch(
        &app,
        &other,
        "/api/v1/factories/plant-a/devices/meter-1/properties/power_kw",
        json!({"quantity": "power", "unit": "kW"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = patch(&app, &admin, &format!("{base}/nope"), json!({"quantity": "power", "unit": "kW"})).await;
    assert_eq!(status, 404);
    app.stop().await;
}

backend_matrix!(semantics_round_trip_validation_and_suggestions);
