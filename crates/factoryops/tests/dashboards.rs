#![allow(clippy::unwrap_used)]
//! Dashboards as data through the real server (ADR 0022): create, share, a second user
//! sees the shared one but not the private one, only the owner or a super admin writes,
//! validation by field path, the factory default and each user's home dashboard.

mod common;

use common::TestApp;
use factoryops_testkit::{TestDatabase, backend_matrix};
use reqwest::Method;
use serde_json::{Value, json};

const F: &str = "plant-d";

fn path(rest: &str) -> String {
    format!("/api/v1/factories/{F}{rest}")
}

/// A factory with a super admin, two viewers and a device `press-1`; returns
/// (admin, alice, bob) tokens.
async fn setup(app: &TestApp) -> (String, String, String) {
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, F, "boss@plant-d.example", "boss-password-1").await;
    let (_, alice) = app.user_with(&admin, F, "alice@plant-d.example", "viewer", &[]).await;
    let (_, bob) = app.user_with(&admin, F, "bob@plant-d.example", "viewer", &[]).await;
    let (status, body) = app.post(&path("/devices"), Some(&admin), json!({"id": "press-1", "name": "Press 1"})).await;
    assert_eq!(status, 201, "{body}");
    (admin, alice, bob)
}

fn overview(shared: bool) -> Value {
    json!({"name": "Energy overview", "shared": shared, "widgets": [
        {"type": "value", "title": "Press power", "device_id": "press-1", "property": "power_kw",
         "layout": {"x": 0, "y": 0, "w": 3, "h": 2}},
        {"type": "chart", "title": "Power", "series": [{"device_id": "press-1", "property": "power_kw"}], "range": "24h"},
        {"type": "text", "title": "Note", "text": "Shift handover at 14:00"}
    ]})
}

async fn create_share_and_a_second_user_sees_it(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, alice, bob) = setup(&app).await;
    let me: Value = app.get("/api/v1/me", Some(&alice)).await.1;

    let (status, d) = app.post(&path("/dashboards"), Some(&alice), overview(false)).await;
    assert_eq!(status, 201, "{d}");
    for key in ["id", "owner", "name", "shared", "default", "widgets", "created_at", "updated_at"] {
        assert!(d.get(key).is_some(), "{key} in {d}");
    }
    assert_eq!(d["owner"], me["user"]["id"], "{me}");
    assert_eq!(d["shared"], false);
    assert_eq!(d["default"], false);
    // The widgets come back exactly as sent (no nulls for absent fields).
    assert_eq!(d["widgets"], overview(false)["widgets"]);
    let id = d["id"].as_str().unwrap().to_string();

    // Private: bob and even the super admin answer 404, as for a missing dashboard.
    for token in [&bob, &admin] {
        let (status, problem) = app.get(&path(&format!("/dashboards/{id}")), Some(token)).await;
        assert_eq!(status, 404, "{problem}");
        let (status, problem) =
            app.send(Method::PUT, &path(&format!("/dashboards/{id}")), Some(token), Some(overview(true))).await;
        assert_eq!(status, 404, "{problem}");
        let (_, list) = app.get(&path("/dashboards"), Some(token)).await;
        assert_eq!(list["items"], json!([]), "{list}");
    }
    let (_, list) = app.get(&path("/dashboards"), Some(&alice)).await;
    assert_eq!(list["items"][0]["id"], id.as_str());

    // Shared: bob sees it, cannot change or delete it (403); the super admin can.
    let (status, shared) =
        app.send(Method::PUT, &path(&format!("/dashboards/{id}")), Some(&alice), Some(overview(true))).await;
    assert_eq!(status, 200, "{shared}");
    assert_eq!(shared["shared"], true);
    assert_eq!(shared["created_at"], d["created_at"]);
    let (status, seen) = app.get(&path(&format!("/dashboards/{id}")), Some(&bob)).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen, shared);
    let (_, list) = app.get(&path("/dashboards"), Some(&bob)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (status, problem) =
        app.send(Method::PUT, &path(&format!("/dashboards/{id}")), Some(&bob), Some(overview(true))).await;
    assert_eq!(status, 403, "{problem}");
    let (status, problem) = app.send(Method::DELETE, &path(&format!("/dashboards/{id}")), Some(&bob), None).await;
    assert_eq!(status, 403, "{problem}");
    let mut renamed = overview(true);
    renamed["name"] = json!("Renamed by the boss");
    let (status, body) = app.send(Method::PUT, &path(&format!("/dashboards/{id}")), Some(&admin), Some(renamed)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Renamed by the boss");
    assert_eq!(body["owner"], me["user"]["id"], "a super admin's edit keeps the owner");

    // The owner deletes it: gone for everyone.
    let (status, _) = app.send(Method::DELETE, &path(&format!("/dashboards/{id}")), Some(&alice), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&path(&format!("/dashboards/{id}")), Some(&bob)).await;
    assert_eq!(status, 404);
    let (status, _) = app.send(Method::DELETE, &path(&format!("/dashboards/{id}")), Some(&alice), None).await;
    assert_eq!(status, 404);
}

async fn validation_names_the_field(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (_, alice, _) = setup(&app).await;
    let cases = [
        (json!({"name": "x", "colour": "red"}), "colour"),
        (json!({"name": "x", "widgets": [{"type": "text", "title": "t", "text": "a", "font": 1}]}), "widgets[0].font"),
        (json!({"name": "x", "widgets": [{"type": "pie", "title": "t"}]}), "widgets[0].type"),
        (json!({"widgets": []}), "name"),
        (json!({"name": ""}), "name"),
        (
            json!({"name": "x", "widgets": [{"type": "value", "title": "t", "device_id": "press-1"}]}),
            "widgets[0].property",
        ),
        (
            json!({"name": "x", "widgets": [{"type": "alerts", "title": "a"}, {"type": "text", "title": "t", "text": "x".repeat(2001)}]}),
            "widgets[1].text",
        ),
        (
            json!({"name": "x", "widgets": [{"type": "value", "title": "t", "device_id": "ghost", "property": "p"}]}),
            "widgets[0].device_id",
        ),
        (
            json!({"name": "x", "widgets": [{"type": "chart", "title": "t", "series": [{"device_id": "press-1", "property": "p"}, {"device_id": "ghost", "property": "p"}]}]}),
            "widgets[0].series[1].device_id",
        ),
        (
            json!({"name": "x", "widgets": [{"type": "status_grid", "title": "t", "group_id": "nope"}]}),
            "widgets[0].group_id",
        ),
        (
            json!({"name": "x", "widgets": [{"type": "alerts", "title": "t", "layout": {"x": 10, "y": 0, "w": 4, "h": 2}}]}),
            "widgets[0].layout.x",
        ),
        (
            json!({"name": "x", "widgets": [{"type": "alerts", "title": "t", "layout": {"x": 0, "y": 0, "w": 4}}]}),
            "widgets[0].layout.h",
        ),
        (json!({"name": "x", "default": true, "shared": false}), "shared"),
    ];
    for (body, field) in cases {
        let (status, problem) = app.post(&path("/dashboards"), Some(&alice), body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let widgets: Vec<Value> = (0..41).map(|_| json!({"type": "alerts", "title": "a"})).collect();
    let (status, problem) =
        app.post(&path("/dashboards"), Some(&alice), json!({"name": "x", "widgets": widgets})).await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "widgets");
    let (status, _) =
        app.post(&path("/dashboards"), Some(&alice), json!({"name": "y", "widgets": widgets[..40]})).await;
    assert_eq!(status, 201);
}

async fn factory_default_and_home(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, alice, bob) = setup(&app).await;
    // Nothing yet: the portal shows its built-in overview.
    let (status, home) = app.get(&path("/dashboards/home"), Some(&bob)).await;
    assert_eq!(status, 200, "{home}");
    assert_eq!(home, json!({"dashboard_id": null, "dashboard": null}));

    // Only a super admin sets the factory default.
    let mut body = overview(true);
    body["default"] = json!(true);
    let (status, problem) = app.post(&path("/dashboards"), Some(&alice), body.clone()).await;
    assert_eq!(status, 403, "{problem}");
    let (status, first) = app.post(&path("/dashboards"), Some(&admin), body.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["default"], true);
    let (_, home) = app.get(&path("/dashboards/home"), Some(&bob)).await;
    assert_eq!(home["dashboard"]["id"], first["id"]);

    // A second default displaces the first; a PUT without `default` keeps the flag.
    body["name"] = json!("Second");
    let (_, second) = app.post(&path("/dashboards"), Some(&admin), body).await;
    let (_, first_now) = app.get(&path(&format!("/dashboards/{}", first["id"].as_str().unwrap())), Some(&bob)).await;
    assert_eq!(first_now["default"], false);
    let mut keep = overview(true);
    keep["name"] = json!("Second, renamed");
    let (status, kept) = app
        .send(Method::PUT, &path(&format!("/dashboards/{}", second["id"].as_str().unwrap())), Some(&admin), Some(keep))
        .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["default"], true);

    // Bob's own preference wins over the factory default; another user's private
    // dashboard cannot be chosen; deleting the preferred one falls back to the default.
    let (_, private) = app.post(&path("/dashboards"), Some(&alice), overview(false)).await;
    let (status, problem) = app
        .send(Method::PUT, &path("/dashboards/home"), Some(&bob), Some(json!({"dashboard_id": private["id"]})))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "dashboard_id");
    let (_, mine) = app.post(&path("/dashboards"), Some(&bob), overview(false)).await;
    let (status, home) =
        app.send(Method::PUT, &path("/dashboards/home"), Some(&bob), Some(json!({"dashboard_id": mine["id"]}))).await;
    assert_eq!(status, 200, "{home}");
    assert_eq!(home["dashboard_id"], mine["id"]);
    assert_eq!(home["dashboard"]["id"], mine["id"]);
    let (_, home) = app.get(&path("/dashboards/home"), Some(&alice)).await;
    assert_eq!(home["dashboard"]["id"], second["id"], "alice still gets the factory default");
    let (status, _) = app
        .send(Method::DELETE, &path(&format!("/dashboards/{}", mine["id"].as_str().unwrap())), Some(&bob), None)
        .await;
    assert_eq!(status, 204);
    let (_, home) = app.get(&path("/dashboards/home"), Some(&bob)).await;
    assert_eq!(home["dashboard_id"], Value::Null);
    assert_eq!(home["dashboard"]["id"], second["id"]);
}

async fn api_keys_read_shared_dashboards_and_write_none(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, alice, _) = setup(&app).await;
    let (_, shared) = app.post(&path("/dashboards"), Some(&alice), overview(true)).await;
    let (_, private) = app.post(&path("/dashboards"), Some(&alice), overview(false)).await;
    let (status, key) =
        app.post(&path("/api-keys"), Some(&admin), json!({"name": "wallboard", "permissions": ["data:read"]})).await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap();
    let (_, list) = app.get(&path("/dashboards"), Some(key)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["id"], shared["id"]);
    let (status, _) = app.get(&path(&format!("/dashboards/{}", private["id"].as_str().unwrap())), Some(key)).await;
    assert_eq!(status, 404);
    let (status, problem) = app.post(&path("/dashboards"), Some(key), overview(true)).await;
    assert_eq!(status, 403, "{problem}");
}

backend_matrix!(
    create_share_and_a_second_user_sees_it,
    validation_names_the_field,
    factory_default_and_home,
    api_keys_read_shared_dashboards_and_write_none,
);
