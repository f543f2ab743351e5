#![allow(clippy::unwrap_used)]
//! Rules and alerts end to end: MQTT publish → rule → alert → API and live stream.

mod common;

use std::time::Duration;

use common::{TestApp, mqtt};
use factoryops_testkit::{TestDatabase, backend_matrix};
use serde_json::{Value, json};

const TOPIC: &str = "factories/plant-a/devices/press-1/telemetry";

fn overheat_rule() -> Value {
    json!({
        "name": "Compressor overheating",
        "enabled": true,
        "scope": {"devices": ["press-1"]},
        "condition": {"property": "temp_c", "op": ">", "value": 80},
        "severity": "critical",
        "message": "{device} {property} = {value} (limit {threshold})",
        "cooldown_seconds": 300,
        "auto_resolve": true,
        "notify": {"emails": ["ops@example.com"]}
    })
}

/// Validates `instance` against `#/components/schemas/{name}` of the generated OpenAPI
/// document (JSON Schema 2020-12, formats checked), so the documented shapes stay the real ones.
fn assert_schema(name: &str, instance: &Value) {
    let document = serde_json::to_value(factoryops_api::openapi_document()).unwrap();
    assert!(document["components"]["schemas"].get(name).is_some(), "no schema {name}");
    let schema = json!({"$ref": format!("#/components/schemas/{name}"), "components": document["components"]});
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{name} does not match its schema: {errors:#?}\n{instance:#}");
}

fn assert_not_schema(name: &str, instance: &Value) {
    let document = serde_json::to_value(factoryops_api::openapi_document()).unwrap();
    let schema = json!({"$ref": format!("#/components/schemas/{name}"), "components": document["components"]});
    let validator = jsonschema::options().with_draft(jsonschema::Draft::Draft202012).build(&schema).unwrap();
    assert!(!validator.is_valid(instance), "{name} should reject {instance:#}");
}

async fn alerts(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/api/v1/factories/plant-a/alerts{query}"), Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// Rules run asynchronously after the PUBACK: wait until the inbox shows what we expect.
async fn wait_for(app: &TestApp, token: &str, query: &str, predicate: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let items = alerts(app, token, query).await;
        if predicate(&items) {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for alerts {query}: {items:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn alerts_open_resolve_and_never_duplicate(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "P", "type": "press"}))
        .await;
    let (_, creds) = app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;

    assert_schema("RuleSpec", &overheat_rule());
    let (status, rule) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), overheat_rule()).await;
    assert_eq!(status, 201, "{rule}");
    assert!(rule["warnings"].to_string().contains("temp_c"), "unknown property warned: {rule}");
    assert_schema("RuleWithWarnings", &rule);
    let rule_id = rule["id"].as_str().unwrap().to_string();

    let mut stream =
        app.client.get(app.url("/api/v1/factories/plant-a/stream")).bearer_auth(&admin).send().await.unwrap();
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", creds["secret"].as_str().unwrap());
    mqtt::connack(&mut el).await.unwrap();
    let t0 = app.clock_now();

    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 85, "ts": t0}).to_string()).await.unwrap();
    let open = wait_for(&app, &admin, "?status=open", |a| a.len() == 1).await;
    assert_eq!(open[0]["severity"], "critical");
    assert_eq!(open[0]["device_id"], "press-1");
    assert_eq!(open[0]["rule_id"], rule_id.as_str());
    assert!(open[0]["message"].as_str().unwrap().contains("press-1 temp_c = 85"), "{}", open[0]);

    // The alert arrives on the live stream.
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("event: alert") {
        let chunk =
            tokio::time::timeout_at(deadline, stream.chunk()).await.expect("alert on the stream").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }

    // Still above: the same episode, no second alert. Back to normal: auto-resolved. The
    // device's messages are evaluated in order, so once the resolve shows, the 88 was
    // evaluated too (no fixed sleep to wait for it).
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 88, "ts": t0 + 1000}).to_string()).await.unwrap();
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 70, "ts": t0 + 2000}).to_string()).await.unwrap();
    let resolved = wait_for(&app, &admin, "?status=resolved", |a| a.len() == 1).await;
    assert_eq!(alerts(&app, &admin, "").await.len(), 1, "still above is the same episode");
    let first_id = resolved[0]["id"].as_str().unwrap().to_string();

    // Replaying the event that opened it opens nothing new; the next excursion, evaluated
    // after it, shows when it was.
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 85, "ts": t0}).to_string()).await.unwrap();

    // A new excursion: acknowledge and resolve by hand, with notes in the history.
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 95, "ts": t0 + 3000}).to_string()).await.unwrap();
    let open = wait_for(&app, &admin, "?status=open", |a| a.len() == 1).await;
    assert_eq!(alerts(&app, &admin, "").await.len(), 2, "a replayed event never duplicates an alert");
    let id = open[0]["id"].as_str().unwrap();
    assert_ne!(id, first_id);
    let (status, acked) = app
        .post(&format!("/api/v1/factories/plant-a/alerts/{id}/acknowledge"), Some(&admin), json!({"note": "on it"}))
        .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["status"], "acknowledged");
    assert_schema("Alert", &acked);
    let (status, done) = app
        .post(
            &format!("/api/v1/factories/plant-a/alerts/{id}/resolve"),
            Some(&admin),
            json!({"note": "valve replaced"}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let (_, full) = app.get(&format!("/api/v1/factories/plant-a/alerts/{id}"), Some(&admin)).await;
    let notes: Vec<&str> = full["history"].as_array().unwrap().iter().filter_map(|h| h["note"].as_str()).collect();
    assert!(notes.contains(&"on it") && notes.contains(&"valve replaced"), "{full}");
    assert_schema("Alert", &full);
    let (status, inbox) = app.get("/api/v1/factories/plant-a/alerts", Some(&admin)).await;
    assert_eq!(status, 200, "{inbox}");
    assert_schema("AlertPage", &inbox);
    let (status, _) =
        app.post(&format!("/api/v1/factories/plant-a/alerts/{id}/acknowledge"), Some(&admin), json!({})).await;
    assert_eq!(status, 409, "a resolved alert cannot be acknowledged");

    // Every change is in the audit log, with who did it.
    for (action, target) in [
        ("rule.created", rule_id.as_str()),
        ("alert.acknowledged", id),
        ("alert.resolved", id),
        ("device.created", "press-1"),
        ("device.credentials_rotated", "press-1"),
    ] {
        let (status, audit) = app.get(&format!("/api/v1/factories/plant-a/audit?action={action}"), Some(&admin)).await;
        assert_eq!(status, 200);
        let items = audit["items"].as_array().unwrap();
        assert!(
            items.iter().any(|e| e["target"] == target && e["actor"].as_str().unwrap().starts_with("user:")),
            "{action}: {audit}"
        );
    }

    // Backtest over the same history reports what the live engine did.
    let from = factoryops_types::format_rfc3339_ms(t0 - 1000);
    let to = factoryops_types::format_rfc3339_ms(t0 + 10_000);
    let (status, backtest) = app
        .post(
            &format!("/api/v1/factories/plant-a/rules/{rule_id}/backtest"),
            Some(&admin),
            json!({"from": from, "to": to}),
        )
        .await;
    assert_eq!(status, 200, "{backtest}");
    assert!(backtest.to_string().contains("press-1"), "{backtest}");
    assert!(backtest["resolved"].as_u64().unwrap() >= 1, "{backtest}");
    assert_schema("BacktestResult", &backtest);
    app.stop().await;
}

async fn rule_permissions_and_validation(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    let (_, devices_only) = app.user_with(&admin, "plant-a", "d@a.example", "admin", &["devices:write"]).await;
    let (_, rules_admin) = app.user_with(&admin, "plant-a", "r@a.example", "admin", &["rules:write"]).await;
    let (_, viewer) = app.user_with(&admin, "plant-a", "v@a.example", "viewer", &[]).await;

    assert_eq!(app.post("/api/v1/factories/plant-a/rules", Some(&devices_only), overheat_rule()).await.0, 403);
    assert_eq!(app.post("/api/v1/factories/plant-a/rules", Some(&viewer), overheat_rule()).await.0, 403);
    let (status, rule) = app.post("/api/v1/factories/plant-a/rules", Some(&rules_admin), overheat_rule()).await;
    assert_eq!(status, 201);
    let (status, list) = app.get("/api/v1/factories/plant-a/rules", Some(&viewer)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let mut bad = overheat_rule();
    bad["condition"] = json!({"all": [{"property": "temp_c", "op": ">", "value": 80}, {"any": [{"property": "x", "op": "≈", "value": 1}]}]});
    let (status, problem) = app.post("/api/v1/factories/plant-a/rules", Some(&rules_admin), bad).await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "condition.all[1].any[0].op", "{problem}");

    let id = rule["id"].as_str().unwrap();
    assert_eq!(
        app.send(reqwest::Method::DELETE, &format!("/api/v1/factories/plant-a/rules/{id}"), Some(&viewer), None)
            .await
            .0,
        403
    );
    assert_eq!(
        app.send(reqwest::Method::DELETE, &format!("/api/v1/factories/plant-a/rules/{id}"), Some(&rules_admin), None)
            .await
            .0,
        204
    );
    assert_eq!(app.get(&format!("/api/v1/factories/plant-a/rules/{id}"), Some(&viewer)).await.0, 404);
    let (status, _) = app.get("/api/v1/factories/plant-a/alerts?status=sleeping", Some(&viewer)).await;
    assert_eq!(status, 422);
    app.stop().await;
}

/// Events the engine never saw (here: the rules component was not running, as after a
/// crash between the durable write and the evaluation) are caught up from the latest
/// stored values at start; silent devices get their staleness timers back.
async fn a_restart_catches_up_missed_evaluations_and_stale_devices(db: TestDatabase) {
    let config = common::test_config(&db);
    let no_rules: factoryops::Components = "api,ingest".parse().unwrap();
    let app = TestApp::spawn_components(db, config.clone(), no_rules).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "P"})).await;
    app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-2", "name": "Q"})).await;
    let (_, creds) = app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;
    let (status, _) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), overheat_rule()).await;
    assert_eq!(status, 201);
    let stale = json!({"name": "Silent", "scope": {"devices": ["press-1"]}, "condition": {"op": "stale", "seconds": 2},
                       "severity": "warning"});
    let (status, body) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), stale).await;
    assert_eq!(status, 201, "{body}");
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", creds["secret"].as_str().unwrap());
    mqtt::connack(&mut el).await.unwrap();
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 91, "ts": app.clock_now()}).to_string())
        .await
        .unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts(&app, &admin, "").await.is_empty(), "no rules ran");
    let db = app.stop().await;

    let app = TestApp::spawn_with(db, config).await;
    let admin =
        app.login("plant-a", "boss@a.example", "boss-password-1").await["access_token"].as_str().unwrap().to_string();
    let items = wait_for(&app, &admin, "", |a| a.len() == 2).await;
    let mut names: Vec<&str> = items.iter().map(|a| a["rule_name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["Compressor overheating", "Silent"], "the missed excursion and the silent device");
    let _ = app.stop().await;
}

/// Every rule shape (all leaf kinds, combinators, schedule, escalation) matches the documented
/// schemas, as a request and as returned; shapes the API rejects are rejected by the schema too.
async fn rule_shapes_match_the_openapi_document(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    let rich = json!({
        "name": "Everything",
        "scope": {"device_type": "press"},
        "condition": {"all": [
            {"property": "temp_c", "op": ">=", "value": 80.5},
            {"any": [
                {"property": "running", "op": "==", "value": true},
                {"property": "power_kw", "op": "outside", "min": 5, "max": 50},
                {"not": {"property": "temp_c", "op": "rate_of_change", "window_seconds": 60, "compare": ">", "value": 2, "per": "minute"}}
            ]},
            {"property": "temp_c", "op": "rate_of_change", "window_seconds": 30, "compare": "<", "value": 1},
            {"any": [{"property": "temp_c", "op": "stale", "seconds": 300}, {"op": "stale", "seconds": 600}]}
        ]},
        "for_seconds": 10,
        "clear_for_seconds": 5,
        "deadband": 1.5,
        "schedule": {"timezone": "Europe/Berlin", "days": ["mon", "fri"],
                     "windows": [{"from": "22:00", "to": "06:00"}], "cron": ["* 6-21 * * 1-5"], "outside_schedule": "resolve"},
        "severity": "warning",
        "cooldown_seconds": 60,
        "notify": {"users": [], "emails": ["ops@example.com"], "remind_every_minutes": 15,
                   "escalate_after_minutes": 30, "escalate_to": {"emails": ["boss@example.com"]}}
    });
    assert_schema("RuleSpec", &rich);
    let (status, created) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), rich.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_schema("RuleWithWarnings", &created);
    let id = created["id"].as_str().unwrap();
    let (status, stored) = app.get(&format!("/api/v1/factories/plant-a/rules/{id}"), Some(&admin)).await;
    assert_eq!(status, 200, "{stored}");
    assert_schema("StoredRule", &stored);
    let mut minimal = json!({"name": "Minimal", "scope": {"all": true}, "severity": "info",
                             "condition": {"property": "temp_c", "op": "between", "min": 1, "max": 2}});
    assert_schema("RuleSpec", &minimal);
    let (status, replaced) = app
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/factories/plant-a/rules/{id}"),
            Some(&admin),
            Some(minimal.clone()),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_schema("RuleWithWarnings", &replaced);
    let (status, list) = app.get("/api/v1/factories/plant-a/rules", Some(&admin)).await;
    assert_eq!(status, 200, "{list}");
    assert_schema("RulePage", &list);

    let draft = json!({"rule": rich, "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"});
    assert_schema("DraftBacktest", &draft);
    let (status, result) = app.post("/api/v1/factories/plant-a/rules/backtest", Some(&admin), draft).await;
    assert_eq!(status, 200, "{result}");
    assert_schema("BacktestResult", &result);
    assert_schema("BacktestRange", &json!({"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}));
    assert_schema("AlertNote", &json!({"note": "on it"}));
    assert_schema("AlertNote", &json!({}));

    // What the API rejects, the schema rejects.
    for (field, bad) in [
        ("condition", json!({"property": "x", "op": "≈", "value": 1})),
        ("condition", json!({"property": "x", "op": "between", "min": 1})),
        ("condition", json!({"all": []})),
        ("condition", json!({"property": "x", "op": ">", "value": 1, "extra": 1})),
        ("scope", json!({"all": false})),
        ("scope", json!({"devices": ["a"], "all": true})),
        ("severity", json!("fatal")),
        ("surprise", json!(1)),
    ] {
        let mut body = minimal.clone();
        body[field] = bad;
        assert_not_schema("RuleSpec", &body);
        let (status, problem) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), body.clone()).await;
        assert_eq!(status, 422, "the API rejects {body}: {problem}");
    }
    minimal["schedule"] = json!(null);
    assert_schema("RuleSpec", &minimal);
    app.stop().await;
}

/// Disabling a rule resolves its open alerts at once (reason "rule removed or changed"),
/// and the rule is no longer evaluated: a breach while it is off opens nothing. Enabled
/// again, it evaluates from scratch.
async fn disabling_a_rule_resolves_its_alerts_and_stops_evaluation(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "P", "type": "press"}))
        .await;
    let (_, creds) = app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;
    let (status, rule) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), overheat_rule()).await;
    assert_eq!(status, 201, "{rule}");
    let rule_id = rule["id"].as_str().unwrap().to_string();
    // A second rule on another property marks when a message has been evaluated.
    let marker = json!({"name": "Marker", "scope": {"devices": ["press-1"]},
                        "condition": {"property": "marker", "op": ">", "value": 0}, "severity": "info"});
    let (status, body) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), marker).await;
    assert_eq!(status, 201, "{body}");
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", creds["secret"].as_str().unwrap());
    mqtt::connack(&mut el).await.unwrap();
    let t0 = app.clock_now();
    let overheating = |a: &Value| a["rule_id"] == rule_id.as_str();

    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 85, "ts": t0}).to_string()).await.unwrap();
    let open = wait_for(&app, &admin, "?status=open", |a| a.len() == 1).await;
    let alert_id = open[0]["id"].as_str().unwrap().to_string();

    let rule_url = format!("/api/v1/factories/plant-a/rules/{rule_id}");
    let mut off = overheat_rule();
    off["enabled"] = json!(false);
    let (status, body) = app.send(reqwest::Method::PUT, &rule_url, Some(&admin), Some(off)).await;
    assert_eq!(status, 200, "{body}");
    let resolved = wait_for(&app, &admin, "?status=resolved", |a| a.len() == 1).await;
    assert_eq!(resolved[0]["id"], alert_id.as_str());
    let (_, full) = app.get(&format!("/api/v1/factories/plant-a/alerts/{alert_id}"), Some(&admin)).await;
    assert!(full.to_string().contains("rule removed or changed"), "the reason is recorded: {full}");

    // Off: a breach opens nothing. The marker alert shows the message was evaluated.
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 95, "marker": 1, "ts": t0 + 1000}).to_string())
        .await
        .unwrap();
    let open = wait_for(&app, &admin, "?status=open", |a| a.iter().any(|x| x["rule_name"] == "Marker")).await;
    assert!(!open.iter().any(overheating), "a disabled rule opened an alert: {open:?}");

    // On again: the next breach opens a new alert.
    let (status, body) = app.send(reqwest::Method::PUT, &rule_url, Some(&admin), Some(overheat_rule())).await;
    assert_eq!(status, 200, "{body}");
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 96, "ts": t0 + 2000}).to_string()).await.unwrap();
    let open = wait_for(&app, &admin, "?status=open", |a| a.iter().any(overheating)).await;
    assert_ne!(open.iter().find(|a| overheating(a)).unwrap()["id"], alert_id.as_str());
    app.stop().await;
}

/// A backtest may span at most 366 days: exactly 366 runs, one millisecond more is a 422
/// validation problem naming `to`.
async fn backtest_range_is_bounded_to_366_days(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    let (status, rule) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), overheat_rule()).await;
    assert_eq!(status, 201, "{rule}");
    let url = format!("/api/v1/factories/plant-a/rules/{}/backtest", rule["id"].as_str().unwrap());
    let to = app.clock_now();
    let day = 86_400_000i64;
    let range = |from: i64| json!({"from": factoryops_types::format_rfc3339_ms(from), "to": factoryops_types::format_rfc3339_ms(to)});
    let (status, body) = app.post(&url, Some(&admin), range(to - 366 * day)).await;
    assert_eq!(status, 200, "366 days: {body}");
    let (status, body) = app.post(&url, Some(&admin), range(to - 366 * day - 1)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "to", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("366 days"), "{body}");
    app.stop().await;
}

/// A backtest reads at most `rules.max_backtest_points` raw points (5 M by default; the
/// same code path with a small limit here). Two presses send 500 points each: with a limit
/// of 999 the backtest is a 422 on `to` naming the limit, with 1,000 it runs and each press
/// opens and resolves one alert (the two 90 °C readings at 100 and 101 s).
async fn backtest_points_are_bounded_by_the_configured_limit(db: TestDatabase) {
    let mut config = common::test_config(&db);
    config.rules.max_backtest_points = 999;
    let app = TestApp::spawn_with(db, config.clone()).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    for id in ["press-1", "press-2"] {
        let (status, body) = app
            .post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": id, "name": id, "type": "press"}))
            .await;
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
    let mut rule_body = overheat_rule();
    rule_body["scope"] = json!({"device_type": "press"});
    let (status, rule) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), rule_body).await;
    assert_eq!(status, 201, "{rule}");

    let t0 = app.clock_now() - 3_600_000;
    for id in ["press-1", "press-2"] {
        let messages: Vec<Value> = (0..500i64)
            .map(|i| {
                let temp = if i == 100 || i == 101 { 90.0 } else { 20.0 };
                json!({"device_id": id, "ts": t0 + i * 1_000, "temp_c": temp})
            })
            .collect();
        let (status, body) =
            app.post("/api/v1/factories/plant-a/telemetry", Some(&key), json!({"messages": messages})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["results"].as_array().unwrap().iter().all(|r| r["status"] == "stored"), "{body}");
    }
    let url = format!("/api/v1/factories/plant-a/rules/{}/backtest", rule["id"].as_str().unwrap());
    let range = json!({
        "from": factoryops_types::format_rfc3339_ms(t0),
        "to": factoryops_types::format_rfc3339_ms(t0 + 500_000),
    });

    let (status, body) = app.post(&url, Some(&admin), range.clone()).await;
    assert_eq!(status, 422, "1,000 points over a limit of 999: {body}");
    assert_eq!(body["errors"][0]["field"], "to", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("more than 999 points"), "the problem names the limit: {body}");

    // The access token outlives the restart (the signing key is kept in the data dir).
    let db = app.stop().await;
    config.rules.max_backtest_points = 1_000;
    let app = TestApp::spawn_with(db, config).await;
    let (status, body) = app.post(&url, Some(&admin), range).await;
    assert_eq!(status, 200, "1,000 points within a limit of 1,000: {body}");
    assert_eq!(body["points"], 1_000, "{body}");
    assert_eq!(body["events"], 1_000, "{body}");
    assert_eq!((body["opened"].as_u64(), body["resolved"].as_u64()), (Some(2), Some(2)), "{body}");
    let opened: Vec<&str> =
        body["alerts"].as_array().unwrap().iter().map(|a| a["opened_at"].as_str().unwrap()).collect();
    let at = factoryops_types::format_rfc3339_ms(t0 + 100_000);
    assert_eq!(opened, [at.as_str(), at.as_str()], "{body}");
    app.stop().await;
}

/// A device that sends the same explicit `ts` twice corrects the value: the store keeps
/// the last write and the rules evaluate it. Before, the store showed 90 while the rules
/// had only evaluated the first value (50), so the alert never opened.
async fn a_repeated_ts_is_a_correction_for_store_and_rules(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, "plant-a", "boss@a.example", "boss-password-1").await;
    app.post("/api/v1/factories/plant-a/devices", Some(&admin), json!({"id": "press-1", "name": "P", "type": "press"}))
        .await;
    let (_, creds) = app.post("/api/v1/factories/plant-a/devices/press-1/credentials", Some(&admin), json!({})).await;
    let (status, rule) = app.post("/api/v1/factories/plant-a/rules", Some(&admin), overheat_rule()).await;
    assert_eq!(status, 201, "{rule}");
    let (client, mut el) = mqtt::client(app.mqtt_port, "plant-a/press-1", creds["secret"].as_str().unwrap());
    mqtt::connack(&mut el).await.unwrap();
    let t0 = app.clock_now();
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 50, "ts": t0}).to_string()).await.unwrap();
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 90, "ts": t0}).to_string()).await.unwrap();
    let (_, latest) = app.get("/api/v1/factories/plant-a/telemetry/latest?device_id=press-1", Some(&admin)).await;
    assert_eq!(latest["properties"][0]["value"], 90.0, "the store keeps the correction: {latest}");
    let open = wait_for(&app, &admin, "?status=open", |a| a.len() == 1).await;
    assert!(open[0]["message"].as_str().unwrap().contains("temp_c = 90"), "{}", open[0]);
    assert_eq!(open[0]["opened_at"], factoryops_types::format_rfc3339_ms(t0));
    // Corrected back to normal: the rules follow again and resolve it.
    mqtt::publish_acked(&client, &mut el, TOPIC, &json!({"temp_c": 50, "ts": t0}).to_string()).await.unwrap();
    wait_for(&app, &admin, "?status=resolved", |a| a.len() == 1).await;
    app.stop().await;
}

backend_matrix!(
    a_repeated_ts_is_a_correction_for_store_and_rules,
    backtest_points_are_bounded_by_the_configured_limit,
    backtest_range_is_bounded_to_366_days,
    disabling_a_rule_resolves_its_alerts_and_stops_evaluation,
    a_restart_catches_up_missed_evaluations_and_stale_devices,
    alerts_open_resolve_and_never_duplicate,
    rule_permissions_and_validation,
    rule_shapes_match_the_openapi_document
);
