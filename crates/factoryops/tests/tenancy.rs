#![allow(clippy::unwrap_used)]
//! The cross-tenant matrix: for every factory-scoped route, factory A's principals
//! addressing factory B (in the path, or B's ids under A's path) get 404 — exactly as
//! for a missing resource — and B's data is unchanged.
//!
//! Adding a route = adding one `Case` line to `matrix()`. Placeholders (in the path,
//! the query and the body): `{user}` a user id of B, `{key}` an API key id of B,
//! `{device}` a device id of B, `{rule}` a rule id of B, `{alert}` an alert id of B,
//! `{notification}` a notification id of B, `{group}` a device group of B, `{dataset}` a
//! dataset of B, `{run}` an analytics run of B, `{model}` a model name of B, `{report}` a
//! report of B.

mod common;

use common::TestApp;
use factoryops_testkit::{TestDatabase, backend_matrix};
use reqwest::Method;
use serde_json::{Value, json};

struct Case {
    method: Method,
    path: &'static str,
    body: Option<Value>,
}

fn case(method: Method, path: &'static str, body: Option<Value>) -> Case {
    Case { method, path, body }
}

fn matrix() -> Vec<Case> {
    use Method as M;
    vec![
        case(M::GET, "/users", None),
        case(
            M::POST,
            "/users",
            Some(
                json!({"email": "intruder@x.example", "name": "I", "role": "super_admin", "password": "intruder-pw-1"}),
            ),
        ),
        case(M::GET, "/users/{user}", None),
        case(M::PATCH, "/users/{user}", Some(json!({"name": "hijacked", "role": "viewer"}))),
        case(M::DELETE, "/users/{user}", None),
        case(M::POST, "/users/{user}/password", Some(json!({"password": "hijacked-pw-1"}))),
        case(M::GET, "/api-keys", None),
        case(M::POST, "/api-keys", Some(json!({"name": "intruder", "permissions": ["data:read"]}))),
        case(M::DELETE, "/api-keys/{key}", None),
        case(M::GET, "/audit", None),
        case(
            M::POST,
            "/auth/password",
            Some(json!({"current_password": "user-password-123", "new_password": "hijacked-pw-1"})),
        ),
        case(M::GET, "/devices", None),
        case(M::POST, "/devices", Some(json!({"id": "intruder-dev", "name": "I"}))),
        case(M::GET, "/devices/{device}", None),
        case(M::PATCH, "/devices/{device}", Some(json!({"name": "hijacked", "status": "disabled"}))),
        case(M::POST, "/devices/{device}/credentials", Some(json!({}))),
        case(M::GET, "/devices/{device}/properties", None),
        case(M::PATCH, "/devices/{device}/properties/power_kw", Some(json!({"unit": "hijacked"}))),
        case(M::GET, "/devices/{device}/errors", None),
        case(M::GET, "/properties", None),
        case(M::GET, "/telemetry/latest?device_id={device}", None),
        case(M::GET, "/telemetry/series?device_id={device}&property=power_kw", None),
        case(M::POST, "/telemetry", Some(json!({"device_id": "{device}", "power_kw": -1}))),
        case(M::GET, "/stream", None),
        case(M::GET, "/rules", None),
        case(
            M::POST,
            "/rules",
            Some(
                json!({"name": "intruder", "scope": {"devices": ["{device}"]}, "condition": {"property": "power_kw", "op": ">", "value": 0}, "severity": "info"}),
            ),
        ),
        case(M::GET, "/rules/{rule}", None),
        case(
            M::PUT,
            "/rules/{rule}",
            Some(
                json!({"name": "hijacked", "scope": {"all": true}, "condition": {"property": "power_kw", "op": ">", "value": 0}, "severity": "info"}),
            ),
        ),
        case(M::DELETE, "/rules/{rule}", None),
        case(
            M::POST,
            "/rules/{rule}/backtest",
            Some(json!({"from": "2026-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"})),
        ),
        case(
            M::POST,
            "/rules/backtest",
            Some(
                json!({"rule": {"name": "d", "scope": {"devices": ["{device}"]}, "condition": {"property": "power_kw", "op": ">", "value": 0}, "severity": "info"}, "from": "2026-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}),
            ),
        ),
        case(M::GET, "/alerts", None),
        case(M::GET, "/alerts/{alert}", None),
        case(M::POST, "/alerts/{alert}/acknowledge", Some(json!({"note": "hijacked"}))),
        case(M::POST, "/alerts/{alert}/resolve", Some(json!({"note": "hijacked"}))),
        case(M::GET, "/notifications", None),
        case(M::GET, "/notifications/{notification}", None),
        case(M::POST, "/notifications/{notification}/retry", Some(json!({}))),
        case(M::POST, "/notifications/test", Some(json!({"channel": "email", "to": "intruder@evil.example"}))),
        case(M::GET, "/notification-preferences", None),
        case(M::PUT, "/notification-preferences", Some(json!({"email": false, "whatsapp": false}))),
        case(M::GET, "/dashboards", None),
        case(
            M::POST,
            "/dashboards",
            Some(json!({"name": "intruder", "widgets": [{"type": "alerts", "title": "x", "device_id": "{device}"}]})),
        ),
        case(M::GET, "/dashboards/home", None),
        case(M::PUT, "/dashboards/home", Some(json!({"dashboard_id": "{dashboard}"}))),
        case(M::GET, "/dashboards/{dashboard}", None),
        case(M::PUT, "/dashboards/{dashboard}", Some(json!({"name": "hijacked", "shared": true}))),
        case(M::DELETE, "/dashboards/{dashboard}", None),
        case(M::GET, "/groups", None),
        case(M::POST, "/groups", Some(json!({"name": "intruder", "devices": ["{device}"]}))),
        case(M::GET, "/groups/{group}", None),
        case(M::PATCH, "/groups/{group}", Some(json!({"name": "hijacked", "devices": []}))),
        case(M::DELETE, "/groups/{group}?cascade=true", None),
        case(M::GET, "/energy/devices/{device}", None),
        case(M::PUT, "/energy/devices/{device}", Some(json!({"idle_below_kw": 99.0}))),
        case(M::GET, "/energy/tariff", None),
        case(
            M::PUT,
            "/energy/tariff",
            Some(
                json!({"currency": "EUR", "periods": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": "00:00", "to": "24:00", "price_per_kwh": 9.0}]}),
            ),
        ),
        case(M::GET, "/energy/shifts", None),
        case(M::PUT, "/energy/shifts", Some(json!({"shifts": [{"name": "x", "from": "00:00", "to": "12:00"}]}))),
        case(M::GET, "/energy/emission-factor", None),
        case(M::PUT, "/energy/emission-factor", Some(json!({"kg_per_kwh": 9.0}))),
        case(
            M::GET,
            "/energy/consumption?device_id={device}&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&bucket=day",
            None,
        ),
        case(
            M::GET,
            "/energy/consumption?group_id={group}&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&bucket=hour",
            None,
        ),
        case(M::GET, "/energy/peak-demand?device_id={device}&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", None),
        case(M::GET, "/energy/peak-demand?group_id={group}&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", None),
        case(M::GET, "/energy/consumption?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&bucket=day", None),
        case(M::GET, "/energy/peak-demand?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", None),
        case(M::GET, "/energy/ranking?device_type=press&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", None),
        case(M::GET, "/energy/baselines", None),
        case(
            M::POST,
            "/energy/baselines",
            Some(
                json!({"name": "intruder", "device_id": "{device}", "drivers": [{"kind": "operating_hours"}], "baseline_from": "2026-01-01", "baseline_to": "2026-02-01"}),
            ),
        ),
        case(M::GET, "/energy/baselines/{baseline}", None),
        case(M::GET, "/datasets", None),
        case(
            M::POST,
            "/datasets",
            Some(
                json!({"devices": ["{device}"], "properties": ["power_kw"], "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}),
            ),
        ),
        case(M::GET, "/datasets/{dataset}", None),
        case(M::GET, "/datasets/{dataset}/download", None),
        case(M::GET, "/analytics/runs", None),
        case(
            M::POST,
            "/analytics/runs",
            Some(json!({"mode": "standard", "analysis": "statistics", "dataset_id": "{dataset}"})),
        ),
        case(M::GET, "/analytics/runs/{run}", None),
        case(M::POST, "/analytics/runs/{run}/cancel", Some(json!({}))),
        case(M::POST, "/analytics/runs/{run}/retry", Some(json!({}))),
        case(M::GET, "/models", None),
        case(M::GET, "/models/{model}/versions", None),
        case(M::GET, "/reports", None),
        case(
            M::POST,
            "/reports",
            Some(
                json!({"kind": "energy", "format": "pdf", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "devices": ["{device}"]}),
            ),
        ),
        case(M::GET, "/reports/{report}", None),
        case(M::GET, "/reports/{report}/download", None),
        case(M::POST, "/reports/{report}/cancel", Some(json!({}))),
        case(M::POST, "/reports/{report}/retry", Some(json!({}))),
    ]
}

struct Tenant {
    report_id: String,
    dataset_id: String,
    run_id: String,
    model: String,
    dashboard_id: String,
    group_id: String,
    baseline_id: String,
    rule_id: String,
    alert_id: String,
    notification_id: String,
    device: String,
    secret: String,
    admin: String,
    user_id: String,
    key_id: String,
    key: String,
    viewer: String,
}

async fn tenant(app: &TestApp, root: &str, factory: &str) -> Tenant {
    let admin = app.factory_with_admin(root, factory, &format!("boss@{factory}.example"), "boss-password-1").await;
    let (user_id, _) =
        app.user_with(&admin, factory, &format!("worker@{factory}.example"), "admin", &["devices:write"]).await;
    let (_, viewer) = app.user_with(&admin, factory, &format!("viewer@{factory}.example"), "viewer", &[]).await;
    let all: Vec<&str> = factoryops_identity::Permission::ALL.iter().map(|p| p.as_str()).collect();
    let (status, key) = app
        .post(
            &format!("/api/v1/factories/{factory}/api-keys"),
            Some(&admin),
            json!({"name": "machine", "permissions": all}),
        )
        .await;
    assert_eq!(status, 201);
    let device = format!("press-{}", &factory[factory.len() - 1..]);
    let (status, _) = app
        .post(&format!("/api/v1/factories/{factory}/devices"), Some(&admin), json!({"id": device, "name": "Press"}))
        .await;
    assert_eq!(status, 201);
    let (_, creds) =
        app.post(&format!("/api/v1/factories/{factory}/devices/{device}/credentials"), Some(&admin), json!({})).await;
    let rule = json!({"name": "high power", "scope": {"devices": [device]}, "condition": {"property": "power_kw", "op": ">", "value": 10}, "severity": "warning", "auto_resolve": true, "notify": {"emails": [format!("ops@{factory}.example")]}});
    let (status, rule) = app.post(&format!("/api/v1/factories/{factory}/rules"), Some(&admin), rule).await;
    assert_eq!(status, 201, "{rule}");
    let (status, _) = app
        .post(
            &format!("/api/v1/factories/{factory}/telemetry"),
            Some(key["key"].as_str().unwrap()),
            json!({"device_id": device, "power_kw": 42.0}),
        )
        .await;
    assert_eq!(status, 200);
    let mut alert_id = String::new();
    for _ in 0..200 {
        let (_, alerts) = app.get(&format!("/api/v1/factories/{factory}/alerts"), Some(&admin)).await;
        if let Some(id) = alerts["items"][0]["id"].as_str() {
            alert_id = id.to_string();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!alert_id.is_empty(), "the fixture's alert opened");
    // No SMTP server is configured here: the alert's email becomes a dead letter.
    let mut notification_id = String::new();
    for _ in 0..200 {
        let (_, log) = app.get(&format!("/api/v1/factories/{factory}/notifications?status=dead"), Some(&admin)).await;
        if let Some(id) = log["items"][0]["id"].as_str() {
            notification_id = id.to_string();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!notification_id.is_empty(), "the fixture's notification was dead-lettered");
    let (status, group) = app
        .post(
            &format!("/api/v1/factories/{factory}/groups"),
            Some(&admin),
            json!({"name": "Hall 1", "level": "area", "devices": [device]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let (status, config) = app
        .send(
            Method::PUT,
            &format!("/api/v1/factories/{factory}/energy/devices/{device}"),
            Some(&admin),
            Some(json!({"source_property": "power_kw", "idle_below_kw": 1.5})),
        )
        .await;
    assert_eq!(status, 200, "{config}");
    // A baseline: fitting one needs days of data, so it is written through the store.
    let baseline_id = baseline_fixture(app, factory, &device).await;
    let (status, dashboard) = app
        .post(
            &format!("/api/v1/factories/{factory}/dashboards"),
            Some(&admin),
            json!({"name": "Hall 1", "shared": true, "default": true, "widgets": [
                {"type": "value", "title": "Power", "device_id": device, "property": "power_kw"},
                {"type": "energy_bars", "title": "Hall", "group_id": group["id"]}]}),
        )
        .await;
    assert_eq!(status, 201, "{dashboard}");
    let (dataset_id, run_id, model) = analytics_fixture(app, factory, &admin, &device).await;
    let report_id = report_fixture(app, factory, &admin, &device).await;
    Tenant {
        report_id,
        dataset_id,
        run_id,
        model,
        dashboard_id: dashboard["id"].as_str().unwrap().into(),
        baseline_id,
        group_id: group["id"].as_str().unwrap().into(),
        rule_id: rule["id"].as_str().unwrap().into(),
        alert_id,
        notification_id,
        device,
        secret: creds["secret"].as_str().unwrap().into(),
        admin,
        user_id,
        key_id: key["id"].as_str().unwrap().into(),
        key: key["key"].as_str().unwrap().into(),
        viewer,
    }
}

/// A succeeded dataset of the device's points over the last hours, a finished (standard
/// anomaly) run on it, and the model that run registered (or a name nobody has).
async fn analytics_fixture(app: &TestApp, factory: &str, admin: &str, device: &str) -> (String, String, String) {
    let now = app.clock_now();
    let (status, dataset) = app
        .post(
            &format!("/api/v1/factories/{factory}/datasets"),
            Some(admin),
            json!({"devices": [device], "properties": ["power_kw"],
                "from": factoryops_types::format_rfc3339_ms(now - 3_600_000),
                "to": factoryops_types::format_rfc3339_ms(now + 60_000)}),
        )
        .await;
    assert_eq!(status, 202, "{dataset}");
    let dataset_id = dataset["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/factories/{factory}/datasets/{dataset_id}");
    let dataset = finished(app, admin, &path).await;
    assert_eq!(dataset["status"], "succeeded", "{dataset}");
    let (status, run) = app
        .post(
            &format!("/api/v1/factories/{factory}/analytics/runs"),
            Some(admin),
            json!({"mode": "standard", "analysis": "statistics", "dataset_id": dataset_id}),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    let run = finished(app, admin, &format!("/api/v1/factories/{factory}/analytics/runs/{run_id}")).await;
    let model = run["model"]["name"].as_str().unwrap_or("statistics-none").to_string();
    (dataset_id, run_id, model)
}

/// A succeeded JSON energy report of the device over the last hours.
async fn report_fixture(app: &TestApp, factory: &str, admin: &str, device: &str) -> String {
    let now = app.clock_now();
    let (status, report) = app
        .post(
            &format!("/api/v1/factories/{factory}/reports"),
            Some(admin),
            json!({"kind": "energy", "format": "json", "devices": [device],
                "from": factoryops_types::format_rfc3339_ms(now - 3_600_000),
                "to": factoryops_types::format_rfc3339_ms(now + 60_000)}),
        )
        .await;
    assert_eq!(status, 202, "{report}");
    let id = report["id"].as_str().unwrap().to_string();
    let report = finished(app, admin, &format!("/api/v1/factories/{factory}/reports/{id}")).await;
    assert_eq!(report["status"], "succeeded", "{report}");
    id
}

/// Polls a job until it leaves queued/running.
async fn finished(app: &TestApp, token: &str, path: &str) -> Value {
    for _ in 0..300 {
        let (status, body) = app.get(path, Some(token)).await;
        assert_eq!(status, 200, "{body}");
        if !matches!(body["status"].as_str(), Some("queued" | "running")) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{path} did not finish");
}

/// A stored baseline of the factory's device, written through the energy store (fitting
/// needs days of data the fixture does not have).
async fn baseline_fixture(app: &TestApp, factory: &str, device: &str) -> String {
    let db = factoryops_db::Database::connect(&app.db.url).await.unwrap();
    let store = factoryops_energy::store::EnergyStore::new(db);
    let baseline = factoryops_energy::store::Baseline {
        id: String::new(),
        name: "fixture".into(),
        version: 0,
        target_kind: "device".into(),
        target_id: device.into(),
        drivers: vec![factoryops_energy::store::Driver::OperatingHours],
        period_from: "2026-01-01".parse().unwrap(),
        period_to: "2026-02-01".parse().unwrap(),
        model: factoryops_energy::baseline::Model {
            intercept: 1.0,
            coefficients: vec![("operating_hours".into(), 2.0)],
            r2: 0.9,
            cv_rmse: 0.1,
            n: 31,
        },
        created_at: 0,
        created_by: "fixture".into(),
    };
    let factory = factoryops_types::FactoryId::parse(factory).unwrap();
    store.create_baseline(&factory, baseline).await.unwrap().id
}

async fn snapshot(app: &TestApp, factory: &str, t: &Tenant) -> Value {
    let users = app.get(&format!("/api/v1/factories/{factory}/users"), Some(&t.admin)).await.1;
    let keys = app.get(&format!("/api/v1/factories/{factory}/api-keys"), Some(&t.admin)).await.1;
    // last_used_at moves whenever a key is used; everything else must stay put.
    let keys: Vec<Value> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| json!([k["id"], k["name"], k["permissions"], k["revoked_at"]]))
        .collect();
    let devices = app.get(&format!("/api/v1/factories/{factory}/devices"), Some(&t.admin)).await.1;
    let props = app.get(&format!("/api/v1/factories/{factory}/properties"), Some(&t.admin)).await.1;
    let latest = app
        .get(&format!("/api/v1/factories/{factory}/telemetry/latest?device_id={}", t.device), Some(&t.admin))
        .await
        .1;
    let rules = app.get(&format!("/api/v1/factories/{factory}/rules"), Some(&t.admin)).await.1;
    let alerts = app.get(&format!("/api/v1/factories/{factory}/alerts"), Some(&t.admin)).await.1;
    let notifications = app.get(&format!("/api/v1/factories/{factory}/notifications"), Some(&t.admin)).await.1;
    let prefs = app.get(&format!("/api/v1/factories/{factory}/notification-preferences"), Some(&t.admin)).await.1;
    let groups = app.get(&format!("/api/v1/factories/{factory}/groups"), Some(&t.admin)).await.1;
    let energy_config =
        app.get(&format!("/api/v1/factories/{factory}/energy/devices/{}", t.device), Some(&t.admin)).await.1;
    let tariff = app.get(&format!("/api/v1/factories/{factory}/energy/tariff"), Some(&t.admin)).await.1;
    let shifts = app.get(&format!("/api/v1/factories/{factory}/energy/shifts"), Some(&t.admin)).await.1;
    let factor = app.get(&format!("/api/v1/factories/{factory}/energy/emission-factor"), Some(&t.admin)).await.1;
    let baselines = app.get(&format!("/api/v1/factories/{factory}/energy/baselines"), Some(&t.admin)).await.1;
    let dashboards = app.get(&format!("/api/v1/factories/{factory}/dashboards"), Some(&t.admin)).await.1;
    let datasets = app.get(&format!("/api/v1/factories/{factory}/datasets"), Some(&t.admin)).await.1;
    let runs = app.get(&format!("/api/v1/factories/{factory}/analytics/runs"), Some(&t.admin)).await.1;
    let models = app.get(&format!("/api/v1/factories/{factory}/models"), Some(&t.admin)).await.1;
    let reports = app.get(&format!("/api/v1/factories/{factory}/reports"), Some(&t.admin)).await.1;
    json!({ "reports": reports["items"], "datasets": datasets["items"], "runs": runs["items"], "models": models["items"], "users": users["items"], "keys": keys, "devices": devices["items"], "properties": props["items"], "latest": latest,
            "rules": rules["items"], "alerts": alerts["items"], "notifications": notifications["items"], "prefs": prefs,
            "groups": groups["items"], "energy_config": energy_config, "tariff": tariff, "shifts": shifts, "factor": factor,
            "baselines": baselines, "dashboards": dashboards["items"] })
}

async fn factory_a_never_reaches_factory_b(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let a = tenant(&app, &root, "plant-a").await;
    let b = tenant(&app, &root, "plant-b").await;
    let before = snapshot(&app, "plant-b", &b).await;

    let principals = [("A super admin", &a.admin), ("A viewer", &a.viewer), ("A API key", &a.key)];
    let mut checked = 0;
    for case in matrix() {
        let fill = |text: &str| {
            text.replace("{user}", &b.user_id)
                .replace("{key}", &b.key_id)
                .replace("{device}", &b.device)
                .replace("{rule}", &b.rule_id)
                .replace("{alert}", &b.alert_id)
                .replace("{notification}", &b.notification_id)
                .replace("{group}", &b.group_id)
                .replace("{dashboard}", &b.dashboard_id)
                .replace("{baseline}", &b.baseline_id)
                .replace("{dataset}", &b.dataset_id)
                .replace("{run}", &b.run_id)
                .replace("{model}", &b.model)
                .replace("{report}", &b.report_id)
        };
        let with_b_ids = fill(case.path);
        let body = case.body.as_ref().map(|v| serde_json::from_str::<Value>(&fill(&v.to_string())).unwrap());
        let mut targets = vec![format!("/api/v1/factories/plant-b{with_b_ids}")];
        if case.path.contains('{') {
            // B's ids under A's own factory path.
            targets.push(format!("/api/v1/factories/plant-a{with_b_ids}"));
        }
        for target in &targets {
            for (who, token) in &principals {
                let expected_own_path = target.starts_with("/api/v1/factories/plant-a");
                let (status, body) = app.send(case.method.clone(), target, Some(token), body.clone()).await;
                // Under A's own path a permission failure may answer 403 first; never 2xx.
                let ok = status == 404 || (expected_own_path && status == 403);
                assert!(ok, "{who} {} {target} -> {status} {body}", case.method);
                assert_eq!(body["status"], status);
                checked += 1;
            }
        }
    }
    assert!(checked >= 100, "matrix ran {checked} requests");

    // Ids in the query: A's audit filtered by B's user shows nothing of B.
    let (status, audit) =
        app.get(&format!("/api/v1/factories/plant-a/audit?target={}", b.user_id), Some(&a.admin)).await;
    assert_eq!(status, 200);
    assert_eq!(audit["items"], json!([]));
    let (status, log) =
        app.get(&format!("/api/v1/factories/plant-a/notifications?alert_id={}", b.alert_id), Some(&a.admin)).await;
    assert_eq!(status, 200);
    assert_eq!(log["items"], json!([]));

    // Dashboards: B's device, group and dashboard ids in A's own bodies look missing (422),
    // and A's home never resolves to B's default.
    let widgets = [
        json!({"type": "value", "title": "x", "device_id": b.device, "property": "power_kw"}),
        json!({"type": "status_grid", "title": "x", "group_id": b.group_id}),
    ];
    for widget in widgets {
        let (status, problem) = app
            .post("/api/v1/factories/plant-a/dashboards", Some(&a.admin), json!({"name": "x", "widgets": [widget]}))
            .await;
        assert_eq!(status, 422, "{problem}");
        assert!(problem["errors"][0]["message"].as_str().unwrap().starts_with("no such"), "{problem}");
    }
    let (status, problem) = app
        .send(
            Method::PUT,
            "/api/v1/factories/plant-a/dashboards/home",
            Some(&a.viewer),
            Some(json!({"dashboard_id": b.dashboard_id})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (_, home) = app.get("/api/v1/factories/plant-a/dashboards/home", Some(&a.viewer)).await;
    assert_eq!(home["dashboard"]["id"], a.dashboard_id.as_str());

    // Analytics: B's device and dataset in A's own bodies look missing (422).
    let (status, problem) = app
        .post(
            "/api/v1/factories/plant-a/datasets",
            Some(&a.admin),
            json!({"devices": [b.device], "properties": ["power_kw"], "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "devices[0]", "{problem}");
    let (status, problem) = app
        .post(
            "/api/v1/factories/plant-a/analytics/runs",
            Some(&a.admin),
            json!({"mode": "standard", "analysis": "statistics", "dataset_id": b.dataset_id}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "dataset_id", "{problem}");

    // Reports: B's device in A's own request looks missing (422).
    let (status, problem) = app
        .post(
            "/api/v1/factories/plant-a/reports",
            Some(&a.admin),
            json!({"kind": "energy", "format": "pdf", "devices": [b.device], "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "devices[0]", "{problem}");

    // MQTT: A's device cannot log in as B's, nor publish into B's topic.
    let (_, mut el) = common::mqtt::client(app.mqtt_port, &format!("plant-b/{}", b.device), &a.secret);
    assert_ne!(common::mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    let (_, mut el) = common::mqtt::client(app.mqtt_port, &format!("plant-a/{}", b.device), &b.secret);
    assert_ne!(common::mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    let (client, mut el) = common::mqtt::client(app.mqtt_port, &format!("plant-a/{}", a.device), &a.secret);
    assert_eq!(common::mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    let foreign = format!("factories/plant-b/devices/{}/telemetry", b.device);
    assert!(common::mqtt::publish_acked(&client, &mut el, &foreign, r#"{"power_kw": -1}"#).await.is_err());

    // B is untouched and still works: its device still connects with its own secret.
    let (_, mut el) = common::mqtt::client(app.mqtt_port, &format!("plant-b/{}", b.device), &b.secret);
    assert_eq!(common::mqtt::connack(&mut el).await.unwrap(), rumqttc::ConnectReturnCode::Success);
    assert_eq!(snapshot(&app, "plant-b", &b).await, before);
    app.login("plant-b", "worker@plant-b.example", "user-password-123").await;
    assert_eq!(app.get("/api/v1/me", Some(&b.key)).await.0, 200);

    // Credentials never cross: A's users cannot log in to B, A's refresh tokens do not refresh B.
    let (status, _) = app
        .post(
            "/api/v1/factories/plant-b/auth/login",
            None,
            json!({"email": "boss@plant-a.example", "password": "boss-password-1"}),
        )
        .await;
    assert_eq!(status, 401);
    let a_login = app.login("plant-a", "boss@plant-a.example", "boss-password-1").await;
    let (status, _) = app
        .post("/api/v1/factories/plant-b/auth/refresh", None, json!({"refresh_token": a_login["refresh_token"]}))
        .await;
    assert_eq!(status, 401);

    // Idempotency keys are scoped by factory and principal: B's stored response is never
    // replayed to A, whichever factory A's path names, and A's own request runs for A.
    let body = json!({"id": "idem-dev", "name": "Idempotent"});
    let (status, replayed, b_created) = post_keyed(&app, "plant-b", &b.admin, &body).await;
    assert_eq!((status, replayed), (201, false), "{b_created}");
    for (who, token) in &principals {
        let (status, replayed, answer) = post_keyed(&app, "plant-b", token, &body).await;
        assert!(status == 404 && !replayed, "{who} with B's key on B's path -> {status} {answer}");
    }
    let (status, replayed, a_created) = post_keyed(&app, "plant-a", &a.admin, &body).await;
    assert_eq!((status, replayed), (201, false), "A's request ran for A: {a_created}");
    let (status, replayed, again) = post_keyed(&app, "plant-b", &b.admin, &body).await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, b_created);
    app.stop().await;
}

/// POSTs a device with the `Idempotency-Key` both factories use.
async fn post_keyed(app: &TestApp, factory: &str, token: &str, body: &Value) -> (u16, bool, Value) {
    let response = app
        .client
        .post(app.url(&format!("/api/v1/factories/{factory}/devices")))
        .bearer_auth(token)
        .header("idempotency-key", "same-key-in-both-factories")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    (status, replayed, response.json().await.unwrap())
}

backend_matrix!(factory_a_never_reaches_factory_b);
