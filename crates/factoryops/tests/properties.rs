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

const M: i64 = 60_000;
const H: i64 = 3_600_000;

/// State strings through HTTP ingestion: discovered as `state`, stored as codes, read
/// back as labels; time in state per hour (hand-computed); the bounds and the type guards
/// rejecting only the offending property; a rule `state == "idle"` for 10 minutes opens
/// an alert live and in its backtest.
async fn state_properties_end_to_end(db: TestDatabase) {
    let mut config = common::test_config(&db);
    config.ingest.max_state_labels = 4;
    config.ingest.max_state_label_chars = 12;
    let app = TestApp::spawn_with(db, config).await;
    let (admin, key) = setup(&app, "plant-a", "meter-1").await;
    let f = "/api/v1/factories/plant-a";

    // The rule exists before any data: its label is registered and counts once data arrives.
    let rule = json!({"name": "idle too long", "scope": {"all": true},
        "condition": {"property": "state", "op": "==", "value": "idle"},
        "for_seconds": 600, "severity": "warning", "message": "{device} is {value} ({threshold})"});
    let (status, created) = app.post(&format!("{f}/rules"), Some(&admin), rule).await;
    assert_eq!(status, 201, "{created}");
    let rule_id = created["id"].as_str().unwrap().to_string();
    let (status, problem) = app
        .post(
            &format!("{f}/rules"),
            Some(&admin),
            json!({"name": "bad", "scope": {"all": true}, "severity": "info",
            "condition": {"all": [{"property": "state", "op": ">", "value": "idle"}]}}),
        )
        .await;
    assert_eq!((status, fields(&problem)), (422, vec!["condition.all[0].value"]), "{problem}");

    // T: a whole hour, 3 h ago. 09:50 running (before the range), 10:15 idle, 10:45 running, 11:30 off.
    let t = (app.clock_now() / H) * H - 3 * H;
    for (ts, state, power) in [
        (t - 10 * M, "running", 50.0),
        (t + 15 * M, "idle", 5.0),
        (t + 45 * M, "running", 52.0),
        (t + 90 * M, "off", 0.0),
    ] {
        let body =
            ingest(&app, "plant-a", &key, json!({"device_id": "meter-1", "ts": ts, "state": state, "power_kw": power}))
                .await;
        assert_eq!(
            (body["results"][0]["points"].as_u64(), &body["results"][0]["rejected"]),
            (Some(2), &json!([])),
            "{body}"
        );
    }
    let (_, props) = app.get(&format!("{f}/devices/meter-1/properties"), Some(&admin)).await;
    assert_eq!(by_name(&props, "state")["value_type"], "state");
    assert_eq!(by_name(&props, "state")["suggestion"], json!({"quantity": "state", "unit": null}));
    let (status, annotated) =
        patch(&app, &admin, &format!("{f}/devices/meter-1/properties/state"), json!({"quantity": "state"})).await;
    assert_eq!((status, &annotated["quantity"]), (200, &json!("state")), "{annotated}");
    let (status, problem) = patch(
        &app,
        &admin,
        &format!("{f}/devices/meter-1/properties/state"),
        json!({"quantity": "power", "unit": "kW"}),
    )
    .await;
    assert_eq!((status, fields(&problem)), (422, vec!["quantity"]), "{problem}");

    // Reads show labels.
    let (status, latest) = app.get(&format!("{f}/telemetry/latest?device_id=meter-1"), Some(&admin)).await;
    assert_eq!(status, 200, "{latest}");
    let state = latest["properties"].as_array().unwrap().iter().find(|p| p["name"] == "state").unwrap();
    assert_eq!(state["value"], "off", "{latest}");
    let range = |from: i64, to: i64| {
        format!("from={}&to={}", factoryops_types::format_rfc3339_ms(from), factoryops_types::format_rfc3339_ms(to))
    };
    let (status, raw) = app
        .get(
            &format!("{f}/telemetry/series?device_id=meter-1&property=state&{}", range(t - H, t + 2 * H)),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{raw}");
    let labels: Vec<&str> = raw["points"].as_array().unwrap().iter().map(|p| p["value"].as_str().unwrap()).collect();
    assert_eq!(labels, ["running", "idle", "running", "off"]);

    // Time in state, 1 h buckets over 10:00–12:00 (09:50's running holds into 10:00):
    // 10–11: running 10:00–10:15 + 10:45–11:00 = 1800 s, idle 10:15–10:45 = 1800 s;
    // 11–12: running 11:00–11:30 = 1800 s, off 11:30–12:00 = 1800 s.
    let (status, tis) = app
        .get(
            &format!("{f}/telemetry/series?device_id=meter-1&property=state&every=1h&agg=avg&{}", range(t, t + 2 * H)),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{tis}");
    assert_eq!(
        tis["points"],
        json!([
            {"ts": factoryops_types::format_rfc3339_ms(t), "value": {"running": 1800.0, "idle": 1800.0}},
            {"ts": factoryops_types::format_rfc3339_ms(t + H), "value": {"running": 1800.0, "off": 1800.0}},
        ]),
        "{tis}"
    );
    // 15 min buckets over 10:00–10:30: running 900 s; then idle 900 s.
    let (_, quarter) = app
        .get(
            &format!(
                "{f}/telemetry/series?device_id=meter-1&property=state&every=15m&agg=count&{}",
                range(t, t + 30 * M)
            ),
            Some(&admin),
        )
        .await;
    assert_eq!(quarter["points"][0]["value"], json!({"running": 900.0}), "{quarter}");
    assert_eq!(quarter["points"][1]["value"], json!({"idle": 900.0}), "{quarter}");
    // The last state holds until now, never beyond: 11:30 off until `to` in the future is cut at now.
    let now = app.clock_now();
    let (_, open) = app
        .get(
            &format!(
                "{f}/telemetry/series?device_id=meter-1&property=state&every=1d&agg=last&{}",
                range(t + 90 * M, now + 10 * H)
            ),
            Some(&admin),
        )
        .await;
    let off: f64 = open["points"].as_array().unwrap().iter().map(|p| p["value"]["off"].as_f64().unwrap()).sum();
    let expected = (app.clock_now() - (t + 90 * M)) as f64 / 1000.0;
    assert!(off <= expected + 0.001 && off >= expected - 5.0, "{off} vs {expected}: {open}");

    // Bounds and guards: only the offending property is rejected, the rest is stored.
    let body = ingest(&app, "plant-a", &key, json!({"device_id": "meter-1", "state": "setup", "power_kw": 1.0})).await;
    assert_eq!(body["results"][0]["points"], 2, "the 4th label fits: {body}");
    for (message, reason) in [
        (json!({"device_id": "meter-1", "state": "fault", "power_kw": 2.0}), "state_cardinality"),
        (json!({"device_id": "meter-1", "state": "a-very-long-state", "power_kw": 3.0}), "state_too_long"),
        (json!({"device_id": "meter-1", "state": 3, "power_kw": 4.0}), "not_a_state"),
        (json!({"device_id": "meter-1", "state": "idle", "power_kw": "high"}), "string"),
    ] {
        let body = ingest(&app, "plant-a", &key, message).await;
        let result = &body["results"][0];
        assert_eq!(result["points"], 1, "{body}");
        assert_eq!(result["rejected"][0]["reason"], reason, "{body}");
    }
    let (_, errors) = app.get(&format!("{f}/devices/meter-1/errors"), Some(&admin)).await;
    let reasons: Vec<&str> =
        errors["items"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["string", "not_a_state", "state_too_long", "state_cardinality"], "{errors}");
    let (_, power) = app.get(&format!("{f}/telemetry/latest?device_id=meter-1"), Some(&admin)).await;
    let power_kw = power["properties"].as_array().unwrap().iter().find(|p| p["name"] == "power_kw").unwrap();
    assert_eq!(power_kw["value"], 4.0, "{power}");

    // The rule: idle from 10:15 for 30 min → an alert opened at 10:25 (10 min), resolved at 10:45.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let alert = loop {
        let (_, list) = app.get(&format!("{f}/alerts?rule_id={rule_id}"), Some(&admin)).await;
        if let Some(alert) = list["items"].as_array().and_then(|a| a.first()).cloned() {
            break alert;
        }
        assert!(tokio::time::Instant::now() < deadline, "no alert: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(alert["opened_at"], factoryops_types::format_rfc3339_ms(t + 25 * M), "{alert}");
    assert_eq!(alert["message"], "meter-1 is idle (idle)", "{alert}");
    let (status, backtest) = app
        .post(&format!("{f}/rules/{rule_id}/backtest"), Some(&admin), json!({"from": factoryops_types::format_rfc3339_ms(t - H), "to": factoryops_types::format_rfc3339_ms(t + 3 * H)}))
        .await;
    assert_eq!(status, 200, "{backtest}");
    assert_eq!(backtest["opened"], 1, "{backtest}");
    assert_eq!(backtest["alerts"][0]["opened_at"], factoryops_types::format_rfc3339_ms(t + 25 * M), "{backtest}");
    assert_eq!(backtest["resolved"], 1, "{backtest}");
    app.stop().await;
}

backend_matrix!(semantics_round_trip_validation_and_suggestions, state_properties_end_to_end);
