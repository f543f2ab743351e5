#![allow(clippy::unwrap_used)]
//! Strict input and idempotent retries (ADR 0012), through the real server: unknown
//! fields in any request body are a 422 naming the field, `Idempotency-Key` replays a
//! POST's first answer, and a rule may only notify users of its own factory.

mod common;

use common::TestApp;
use factoryops_db::Database;
use factoryops_db::idempotency::{Claim, IdempotencyStore, KeyScope};
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_types::FactoryId;
use reqwest::Method;
use serde_json::{Value, json};

const FACTORY: &str = "plant-1";

/// Sends `body` with an `Idempotency-Key`; returns status, whether it was a replay, and the body.
async fn post_with_key(app: &TestApp, path: &str, token: &str, key: &str, body: &Value) -> (u16, bool, Value) {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    if status >= 400 {
        let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_string();
        assert!(content_type.starts_with("application/problem+json"), "{status} {content_type}");
    }
    let text = response.text().await.unwrap();
    (status, replayed, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Every operation of the OpenAPI document that takes a request body gets one with an
/// unknown field and must answer 422 naming it. A new route whose input type lacks
/// `#[serde(deny_unknown_fields)]` fails here without anyone adding a line.
async fn unknown_fields_are_rejected_on_every_route(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, FACTORY, "boss@plant-1.example", "boss-password-1").await;
    let document = serde_json::to_value(factoryops_api::openapi_document()).unwrap();
    let mut checked = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation.get("requestBody").is_none() {
                continue;
            }
            // The ingestion body is a device's payload: its extra keys are the metrics.
            if path == "/api/v1/factories/{factory_id}/telemetry" {
                continue;
            }
            let target = path
                .split('/')
                .map(|part| match part {
                    "{factory_id}" => FACTORY,
                    p if p.starts_with('{') => "x1",
                    p => p,
                })
                .collect::<Vec<_>>()
                .join("/");
            let token = if path.starts_with("/api/v1/platform/") { &root } else { &admin };
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, problem) =
                app.send(method.clone(), &target, Some(token), Some(json!({"zzz_unknown": 1}))).await;
            assert_eq!(status, 422, "{method} {path}: {problem}");
            let errors = problem["errors"].as_array().unwrap();
            assert!(
                errors.iter().any(|e| e["field"] == "zzz_unknown" && e["message"] == "unknown field"),
                "{method} {path}: the problem names the unknown field: {problem}"
            );
            checked.push(format!("{method} {path}"));
        }
    }
    assert!(checked.len() >= 25, "{} operations with a body checked: {checked:?}", checked.len());

    // Nested fields are named by their path, like every other validation problem.
    let (status, _) =
        app.post(&format!("/api/v1/factories/{FACTORY}/devices"), Some(&admin), json!({"id": "d1", "name": "D"})).await;
    assert_eq!(status, 201);
    let (status, problem) = app
        .send(
            Method::PATCH,
            &format!("/api/v1/factories/{FACTORY}/devices/d1"),
            Some(&admin),
            Some(json!({"name": "renamed", "nmae": "typo"})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"], json!([{"field": "nmae", "message": "unknown field"}]));
    let (_, device) = app.get(&format!("/api/v1/factories/{FACTORY}/devices/d1"), Some(&admin)).await;
    assert_eq!(device["name"], "D", "nothing of a refused PATCH is applied");
    let rule = json!({"name": "r", "scope": {"all": true}, "condition": {"property": "p", "op": ">", "value": 1},
                      "severity": "info", "notify": {"emails": ["ops@example.com"], "escalate_to": {"emails": [], "zzz": 1}}});
    let (status, problem) = app.post(&format!("/api/v1/factories/{FACTORY}/rules"), Some(&admin), rule).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "notify.escalate_to.zzz", "{problem}");
    let (status, problem) = app
        .send(
            Method::PUT,
            &format!("/api/v1/factories/{FACTORY}/notification-preferences"),
            Some(&admin),
            Some(json!({"email": true, "whatsapp": false, "quiet_hours": {"from": "22:00", "to": "06:00", "tz": "x"}})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "quiet_hours.tz", "{problem}");
    let dashboard = json!({"name": "d", "widgets": [{"type": "alerts", "title": "a"},
                           {"type": "alerts", "title": "b", "layout": {"x": 0, "y": 0, "w": 1, "h": 1, "zzz": 1}}]});
    let (status, problem) = app.post(&format!("/api/v1/factories/{FACTORY}/dashboards"), Some(&admin), dashboard).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "widgets[1].layout.zzz", "{problem}");
    app.stop().await;
}

/// A retried POST with the same key gets the first answer (status and body) without
/// running again. On the code before ADR 0012 the retried device POST got 409 and the
/// retried telemetry POST stored its points twice.
async fn idempotent_retries_replay_the_first_response(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, FACTORY, "boss@plant-1.example", "boss-password-1").await;
    let devices = format!("/api/v1/factories/{FACTORY}/devices");
    let body = json!({"id": "press-1", "name": "Press 1", "type": "press"});

    let (status, replayed, first) = post_with_key(&app, &devices, &admin, "create-press-1", &body).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = post_with_key(&app, &devices, &admin, "create-press-1", &body).await;
    assert_eq!((status, replayed), (201, true), "the retry is answered from the stored response: {again}");
    assert_eq!(again, first);
    // Without a key a repeated POST is a new request, as before.
    assert_eq!(app.post(&devices, Some(&admin), body.clone()).await.0, 409);

    // The same key with another body is a client error, not a replay.
    let other = json!({"id": "press-2", "name": "Press 2"});
    let (status, _, problem) = post_with_key(&app, &devices, &admin, "create-press-1", &other).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["type"], "urn:factoryops:problem:idempotency-key-reused");
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(app.get(&format!("{devices}/press-2"), Some(&admin)).await.0, 404, "the mismatched request did not run");

    // A failed request is not stored: the client fixes the body and retries with its key.
    let bad = json!({"id": "Not A Slug", "name": "x"});
    assert_eq!(post_with_key(&app, &devices, &admin, "create-press-3", &bad).await.0, 422);
    let fixed = json!({"id": "press-3", "name": "Press 3"});
    let (status, replayed, _) = post_with_key(&app, &devices, &admin, "create-press-3", &fixed).await;
    assert_eq!((status, replayed), (201, false));

    // A key is not a global name: another user of the same factory has its own.
    let (_, other_admin) = app.user_with(&admin, FACTORY, "second@plant-1.example", "super_admin", &[]).await;
    let (status, replayed, problem) = post_with_key(&app, &devices, &other_admin, "create-press-1", &body).await;
    assert_eq!((status, replayed), (409, false), "executed for the other user: {problem}");

    // Telemetry: a retried batch is stored once.
    let (status, key) = app
        .post(
            &format!("/api/v1/factories/{FACTORY}/api-keys"),
            Some(&admin),
            json!({"name": "gateway", "permissions": ["telemetry:write", "data:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let api_key = key["key"].as_str().unwrap();
    let telemetry = format!("/api/v1/factories/{FACTORY}/telemetry");
    let batch =
        json!({"messages": [{"device_id": "press-1", "idem_kw": 1.5}, {"device_id": "press-1", "idem_kw": 2.5}]});
    let (status, replayed, first) = post_with_key(&app, &telemetry, api_key, "batch-0001", &batch).await;
    assert_eq!((status, replayed), (200, false), "{first}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (status, replayed, again) = post_with_key(&app, &telemetry, api_key, "batch-0001", &batch).await;
    assert_eq!((status, replayed), (200, true), "{again}");
    assert_eq!(again, first);
    let (status, series) = app
        .get(&format!("/api/v1/factories/{FACTORY}/telemetry/series?device_id=press-1&property=idem_kw"), Some(api_key))
        .await;
    assert_eq!(status, 200, "{series}");
    let values: Vec<f64> = series["points"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(values.len(), 2, "the retried batch was not stored again: {series}");

    // A request still running under the key: 409 with Retry-After; once it ended, the retry runs.
    let database = Database::connect(&app.db.url).await.unwrap();
    let store = IdempotencyStore::new(database);
    let pending = json!({"id": "press-4", "name": "Press 4"});
    let hash = factoryops_api::idempotency::request_hash(&Method::POST, &devices, &bytes_of(&pending));
    let admin_id = app.get("/api/v1/me", Some(&admin)).await.1["user"]["id"].as_str().unwrap().to_string();
    let scope = KeyScope {
        factory: Some(FactoryId::parse(FACTORY).unwrap()),
        principal: format!("user:{admin_id}"),
        key: "create-press-4".into(),
    };
    assert_eq!(store.claim(&scope, &hash, app.clock_now(), 60_000).await.unwrap(), Claim::Claimed);
    let response = app
        .client
        .post(app.url(&devices))
        .bearer_auth(&admin)
        .header("idempotency-key", "create-press-4")
        .json(&pending)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:factoryops:problem:idempotency-in-progress");
    store.release(&scope).await.unwrap();
    let (status, replayed, _) = post_with_key(&app, &devices, &admin, "create-press-4", &pending).await;
    assert_eq!((status, replayed), (201, false));

    // 24 h later the key is forgotten: the same request runs again (and now conflicts).
    app.clock.advance(24 * 3_600_000 + 1_000);
    let login = app.login(FACTORY, "boss@plant-1.example", "boss-password-1").await;
    let admin = login["access_token"].as_str().unwrap();
    let (status, replayed, _) = post_with_key(&app, &devices, admin, "create-press-1", &body).await;
    assert_eq!((status, replayed), (409, false));
    app.stop().await;
}

/// The bytes reqwest sends for `.json(value)`.
fn bytes_of(value: &Value) -> axum::body::Bytes {
    axum::body::Bytes::from(serde_json::to_vec(value).unwrap())
}

/// A rule may notify only users of its own factory; before, another factory's user id was
/// accepted (201) and silently skipped at send time.
async fn rules_notify_only_users_of_their_factory(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let root = app.root_token().await;
    let admin_a = app.factory_with_admin(&root, "plant-a", "boss@plant-a.example", "boss-password-1").await;
    let admin_b = app.factory_with_admin(&root, "plant-b", "boss@plant-b.example", "boss-password-1").await;
    let (user_a, _) = app.user_with(&admin_a, "plant-a", "worker@plant-a.example", "viewer", &[]).await;
    let (user_b, _) = app.user_with(&admin_b, "plant-b", "worker@plant-b.example", "viewer", &[]).await;
    let rules = "/api/v1/factories/plant-a/rules";
    let rule = |users: Vec<&str>, escalate: Vec<&str>| {
        json!({"name": "hot", "scope": {"all": true}, "condition": {"property": "temp_c", "op": ">", "value": 80},
               "severity": "critical", "notify": {"users": users, "escalate_after_minutes": 30,
               "escalate_to": {"users": escalate}}})
    };

    let (status, problem) = app.post(rules, Some(&admin_a), rule(vec![&user_a, &user_b], vec![&user_a])).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"], json!([{"field": "notify.users[1]", "message": "is not a user of this factory"}]));
    let (status, problem) = app.post(rules, Some(&admin_a), rule(vec![&user_a], vec!["no-such-user"])).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "notify.escalate_to.users[0]");

    let (status, created) = app.post(rules, Some(&admin_a), rule(vec![&user_a], vec![&user_a])).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, problem) =
        app.send(Method::PUT, &format!("{rules}/{id}"), Some(&admin_a), Some(rule(vec![&user_b], vec![&user_a]))).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "notify.users[0]");
    let (_, stored) = app.get(&format!("{rules}/{id}"), Some(&admin_a)).await;
    assert_eq!(stored["notify"]["users"], json!([user_a]), "the refused update changed nothing");
    app.stop().await;
}

backend_matrix!(
    unknown_fields_are_rejected_on_every_route,
    idempotent_retries_replay_the_first_response,
    rules_notify_only_users_of_their_factory,
);
