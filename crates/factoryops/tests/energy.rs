#![allow(clippy::unwrap_used)]
//! Energy through the real server: device groups, the versioned settings, per-device
//! configuration, and consumption / cost / CO2 / peak demand over backfilled telemetry in
//! a factory in Europe/Berlin, checked against figures computed by hand.

mod common;
#[path = "../../tsdb/tests/support/influxd.rs"]
mod influxd;

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Europe::Berlin;
use common::TestApp;
use factoryops_platform::secret::SecretUrl;
use factoryops_testkit::{Backend, TestDatabase, backend_matrix};
use influxd::Influxd;
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
    let body = json!({"source_property": "power_kw", "idle_below_kw": 2.0, "max_gap_minutes": 20});
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
        (json!({"state_property": "not a name"}), "state_property"),
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

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// The UTC instant of a local wall time in Berlin.
fn berlin(date: NaiveDate, hour: u32, minute: u32) -> i64 {
    Berlin.from_local_datetime(&date.and_hms_opt(hour, minute, 0).unwrap()).earliest().unwrap().timestamp_millis()
}

/// A local day `days_ago` days before today (Berlin) that is not a DST change day, so the
/// hand-computed figures below hold for 24 hours.
fn plain_day(app: &TestApp, days_ago: u64) -> NaiveDate {
    let today = chrono::DateTime::from_timestamp_millis(app.clock_now()).unwrap().with_timezone(&Berlin).date_naive();
    let mut day = today.checked_sub_days(chrono::Days::new(days_ago)).unwrap();
    while berlin(day.succ_opt().unwrap(), 0, 0) - berlin(day, 0, 0) != 24 * HOUR {
        day = day.pred_opt().unwrap();
    }
    day
}

fn close(actual: &Value, expected: f64, what: &str) {
    let actual = actual.as_f64().unwrap_or_else(|| panic!("{what}: {actual} is not a number"));
    let tolerance = (expected.abs() * 0.001).max(1e-9);
    assert!((actual - expected).abs() <= tolerance, "{what}: {actual} vs hand-computed {expected}");
}

/// (hits, misses) of the energy slot cache from `/metrics`.
async fn cache_counts(app: &TestApp) -> (f64, f64) {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    (value("factoryops_energy_cache_hits_total"), value("factoryops_energy_cache_misses_total"))
}

/// Posts messages in batches of at most 1,000 (the HTTP batch limit).
async fn backfill(app: &TestApp, key: &str, messages: Vec<Value>) {
    for chunk in messages.chunks(1000) {
        let (status, body) = app.post(&path("/telemetry"), Some(key), json!({"messages": chunk})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["results"].as_array().unwrap().iter().all(|r| r["status"] == "stored"), "{body}");
    }
}

async fn annotate(app: &TestApp, admin: &str, device: &str, property: &str, semantics: Value) {
    let (status, body) = app
        .send(Method::PATCH, &path(&format!("/devices/{device}/properties/{property}")), Some(admin), Some(semantics))
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn telemetry_key(app: &TestApp, admin: &str) -> String {
    let (status, key) =
        app.post(&path("/api-keys"), Some(admin), json!({"name": "gateway", "permissions": ["telemetry:write"]})).await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_string()
}

/// The headline: 24 h of backfilled power with a 40-minute gap and a 15-minute burst, an
/// energy counter with a reset, a TOU tariff and an emission factor; hourly, daily and
/// shift buckets, cost, CO2 and peak demand against hand-computed figures.
async fn a_day_of_energy_matches_the_hand_computed_figures(db: TestDatabase) {
    day_of_energy(TestApp::spawn(db).await).await;
}

/// The same day on the InfluxDB backend: the service reads raw points through the port,
/// so the figures are identical (ADR 0015).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_energy_on_influxdb() {
    let Some(influx) = influxd::Influxd::start() else { return };
    let Some(db) = TestDatabase::create(factoryops_testkit::Backend::Sqlite).await else { return };
    let mut config = common::test_config(&db);
    config.tsdb_url = Some(factoryops_platform::secret::SecretUrl::new(influx.url("energy")));
    day_of_energy(TestApp::spawn_with(db, config).await).await;
}

async fn day_of_energy(app: TestApp) {
    let (admin, viewer) = setup(&app, &["press-1", "meter-1"]).await;
    let key = telemetry_key(&app, &admin).await;
    let d = plain_day(&app, 2);
    let (d0, d1) = (berlin(d, 0, 0), berlin(d.succ_opt().unwrap(), 0, 0));
    let at = |hour: u32, minute: u32| berlin(d, hour, minute);

    // press-1: power every minute from 00:00 to 24:00 at 100 kW, except 400 kW from 10:00
    // to 10:14 and no samples from 14:01 to 14:39 (a 40-minute gap after 14:00).
    let mut messages = Vec::new();
    let mut t = d0;
    while t <= d1 {
        let in_gap = t > at(14, 0) && t < at(14, 40);
        if !in_gap {
            let kw = if t >= at(10, 0) && t < at(10, 15) { 400.0 } else { 100.0 };
            messages.push(json!({"device_id": "press-1", "ts": t, "power_kw": kw}));
        }
        t += MIN;
    }
    // meter-1: an energy counter in kWh every 15 minutes, +10 kWh each (40 kW), starting
    // at 1000; at 12:00 it was reset and reads 5 (so the 11:45–12:00 interval counts 5).
    let mut k = 0;
    let mut t = d0;
    while t <= d1 {
        let value = if t < at(12, 0) { 1000.0 + 10.0 * f64::from(k) } else { 5.0 + 10.0 * f64::from(k - 48) };
        messages.push(json!({"device_id": "meter-1", "ts": t, "energy_kwh": value}));
        t += 15 * MIN;
        k += 1;
    }
    backfill(&app, &key, messages).await;
    annotate(&app, &admin, "press-1", "power_kw", json!({"quantity": "power", "unit": "kW"})).await;
    annotate(&app, &admin, "meter-1", "energy_kwh", json!({"quantity": "energy_counter", "unit": "kWh"})).await;
    for (setting, body) in [
        ("/energy/tariff", tou_tariff()),
        ("/energy/emission-factor", json!({"kg_per_kwh": 0.4})),
        (
            "/energy/shifts",
            json!({"shifts": [{"name": "early", "from": "06:00", "to": "14:00"}, {"name": "late", "from": "14:00", "to": "22:00"}, {"name": "night", "from": "22:00", "to": "06:00"}]}),
        ),
    ] {
        let (status, body) = app.send(Method::PUT, &path(setting), Some(&admin), Some(body)).await;
        assert_eq!(status, 200, "{setting}: {body}");
    }
    let (status, group) =
        app.post(&path("/groups"), Some(&admin), json!({"name": "Hall", "devices": ["press-1", "meter-1"]})).await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["id"].as_str().unwrap().to_string();
    let range =
        format!("from={}&to={}", factoryops_types::format_rfc3339_ms(d0), factoryops_types::format_rfc3339_ms(d1));

    // press-1, by hand: 24 h × 100 kW = 2400 kWh; the gap 14:00–14:40 loses 40 min × 100 kW
    // = 66.667 kWh; the burst: slot 09:45 holds 14 min at 100 kW + the ramp 09:59→10:00
    // (100→400, mean 250 kW for 1 min) = 23.333 + 4.1667 = 27.5 kWh (+2.5), slot 10:00
    // holds 14 min at 400 kW + the ramp 10:14→10:15 = 93.333 + 4.1667 = 97.5 kWh (+72.5).
    // Day: 2400 − 66.667 + 75 = 2408.333 kWh. Night (00–06, 22–24: 8 h) 800 kWh at 0.20,
    // day 1608.333 kWh at 0.30: 160 + 482.5 = 642.5 EUR.
    // meter-1: 96 intervals × 10 kWh, the reset interval counts 5: 955 kWh; night 320 kWh
    // at 0.20 = 64, day 640 − 5 = 635 kWh at 0.30 = 190.5: 254.5 EUR.
    let press_day = 2400.0 - 200.0 / 3.0 + 75.0;
    let (status, day) =
        app.get(&path(&format!("/energy/consumption?group_id={group_id}&{range}&bucket=day")), Some(&viewer)).await;
    assert_eq!(status, 200, "{day}");
    assert_eq!((day["unit"].as_str(), day["currency"].as_str()), (Some("kWh"), Some("EUR")));
    let items = day["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{day}");
    close(&items[0]["kwh"], press_day + 955.0, "day kWh");
    close(&items[0]["cost"], 642.5 + 254.5, "day cost");
    close(&items[0]["co2_kg"], (press_day + 955.0) * 0.4, "day CO2");
    assert_eq!(items[0]["idle_kwh"], 0.0);
    let by_device = &items[0]["by_device"];
    assert_eq!(by_device[0]["device_id"], "meter-1");
    close(&by_device[0]["kwh"], 955.0, "meter-1");
    close(&by_device[1]["kwh"], press_day, "press-1");
    assert_eq!((items[0]["start"].as_i64(), items[0]["start"].as_str().map(str::len)), (None, Some(24)));
    // The gap with its bounds; the counter has none (its samples are 15 min apart).
    assert_eq!(
        day["gaps"],
        json!([{"device_id": "press-1", "from": factoryops_types::format_rfc3339_ms(at(14, 0)),
                "to": factoryops_types::format_rfc3339_ms(at(14, 40))}])
    );
    // The bill: no demand charge in this tariff, no fixed fee.
    close(&day["charges"]["energy_cost"], 897.0, "charges.energy_cost");
    close(&day["charges"]["total"], 897.0, "charges.total");

    // Hours: 09:00 = 3 × 25 + 27.5 (press) + 40 (meter) = 142.5 kWh; 10:00 = 97.5 + 3 × 25
    // + 40 = 212.5 kWh at 0.30 = 63.75 EUR; 11:00 = 100 + 35 (the reset) = 135; 14:00 =
    // 20 min × 100 kW + 40 = 73.333; 03:00 = 100 + 40 = 140 at 0.20 = 28 EUR.
    let (status, hours) =
        app.get(&path(&format!("/energy/consumption?group_id={group_id}&{range}&bucket=hour")), Some(&viewer)).await;
    assert_eq!(status, 200, "{hours}");
    let hours = hours["items"].as_array().unwrap().clone();
    assert_eq!(hours.len(), 24);
    for (hour, kwh) in [(9, 142.5), (10, 212.5), (11, 135.0), (14, 100.0 / 3.0 + 40.0), (3, 140.0)] {
        let item = &hours[hour];
        assert_eq!(item["start"], factoryops_types::format_rfc3339_ms(at(hour as u32, 0)));
        close(&item["kwh"], kwh, &format!("hour {hour}"));
    }
    close(&hours[10]["cost"], 63.75, "hour 10 cost");
    close(&hours[3]["cost"], 28.0, "hour 3 cost");
    let hourly_total: f64 = hours.iter().map(|h| h["kwh"].as_f64().unwrap()).sum();
    close(&json!(hourly_total), press_day + 955.0, "the hours add up to the day");

    // Shifts across midnight, clipped to the day: night 00–06, early 06–14, late 14–22,
    // night 22–24. press: 600, 800 + 75, 800 − 66.667, 200; meter: 240, 315, 320, 80.
    let (status, shifts) =
        app.get(&path(&format!("/energy/consumption?group_id={group_id}&{range}&bucket=shift")), Some(&viewer)).await;
    assert_eq!(status, 200, "{shifts}");
    let shifts = shifts["items"].as_array().unwrap().clone();
    let names: Vec<&str> = shifts.iter().map(|s| s["shift"].as_str().unwrap()).collect();
    assert_eq!(names, ["night", "early", "late", "night"]);
    for (item, kwh) in shifts.iter().zip([840.0, 1190.0, 800.0 - 200.0 / 3.0 + 320.0, 280.0]) {
        close(&item["kwh"], kwh, &format!("shift {}", item["shift"]));
    }
    assert_eq!(shifts[3]["end"], factoryops_types::format_rfc3339_ms(d1));

    // Peak demand: the 10:00–10:15 interval holds 97.5 + 10 kWh → 430 kW (press 390, meter 40).
    let (status, peak) =
        app.get(&path(&format!("/energy/peak-demand?group_id={group_id}&{range}")), Some(&viewer)).await;
    assert_eq!(status, 200, "{peak}");
    let items = peak["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{peak}");
    close(&items[0]["kw"], 430.0, "peak kW");
    assert_eq!(items[0]["at"], factoryops_types::format_rfc3339_ms(at(10, 0)));
    assert_eq!(items[0]["period_start"], factoryops_types::format_rfc3339_ms(d0));
    assert_eq!(items[0]["top_devices"][0]["device_id"], "press-1");
    close(&items[0]["top_devices"][0]["kw"], 390.0, "press-1 at the peak");
    close(&items[0]["top_devices"][1]["kw"], 40.0, "meter-1 at the peak");
    // One hour intervals: 10:00–11:00 = 212.5 kWh → 212.5 kW.
    let (_, hourly_peak) = app
        .get(
            &path(&format!("/energy/peak-demand?device_id=press-1&{range}&interval_minutes=60&period=month")),
            Some(&viewer),
        )
        .await;
    close(&hourly_peak["items"][0]["kw"], 172.5, "press-1 hourly peak");

    // The day is closed: computed once per device, then served from memory.
    let (hits, misses) = cache_counts(&app).await;
    assert_eq!(misses, 2.0, "each device's day was computed once");
    // Hour, shift and group peak: 2 devices each; press-1's hourly peak: 1.
    assert_eq!(hits, 7.0, "the hour, shift and peak queries read the cached days");
    // A late correction filling the
    // gap (samples 10 minutes apart) drops the cached day and the next answer includes it.
    let fill: Vec<Value> =
        [10, 20, 30].iter().map(|m| json!({"device_id": "press-1", "ts": at(14, *m), "power_kw": 100.0})).collect();
    backfill(&app, &key, fill).await;
    let device_day = path(&format!("/energy/consumption?device_id=press-1&{range}&bucket=day"));
    let mut filled = Value::Null;
    for _ in 0..50 {
        filled = app.get(&device_day, Some(&viewer)).await.1;
        if filled["gaps"] == json!([]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(filled["gaps"], json!([]), "{filled}");
    close(&filled["items"][0]["kwh"], 2475.0, "press-1 after the correction");

    // Neither `device_id` nor `group_id`: the whole factory, every device with an energy
    // source (both here), in the same shapes.
    let (status, factory_day) = app.get(&path(&format!("/energy/consumption?{range}&bucket=day")), Some(&viewer)).await;
    assert_eq!(status, 200, "{factory_day}");
    close(&factory_day["items"][0]["kwh"], 2475.0 + 955.0, "factory day");
    let devices: Vec<&str> = factory_day["items"][0]["by_device"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["meter-1", "press-1"]);
    let (status, factory_peak) = app.get(&path(&format!("/energy/peak-demand?{range}")), Some(&viewer)).await;
    assert_eq!(status, 200, "{factory_peak}");
    close(&factory_peak["items"][0]["kw"], 430.0, "factory peak kW");
    assert_eq!(factory_peak["items"][0]["at"], factoryops_types::format_rfc3339_ms(at(10, 0)));

    // Validation names the parameter; another device or group is a 404.
    for (query, field) in [
        (format!("device_id=press-1&group_id={group_id}&{range}&bucket=day"), "group_id"),
        (format!("device_id=press-1&{range}&bucket=fortnight"), "bucket"),
        ("device_id=press-1&from=yesterday&to=2026-01-01T00:00:00Z&bucket=day".to_string(), "from"),
        ("device_id=press-1&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z&bucket=day".to_string(), "from"),
        ("device_id=press-1&from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&bucket=day".to_string(), "to"),
    ] {
        let (status, problem) = app.get(&path(&format!("/energy/consumption?{query}")), Some(&viewer)).await;
        assert_eq!(status, 422, "{query}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let (status, problem) = app
        .get(&path(&format!("/energy/peak-demand?device_id=press-1&{range}&interval_minutes=20")), Some(&viewer))
        .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "interval_minutes");
    for query in [format!("device_id=ghost&{range}&bucket=day"), format!("group_id=nope&{range}&bucket=day")] {
        let (status, _) = app.get(&path(&format!("/energy/consumption?{query}")), Some(&viewer)).await;
        assert_eq!(status, 404, "{query}");
    }
    app.stop().await;
}

/// Three days of buffered power readings arriving in one burst: each day's energy is right.
async fn a_three_day_backfill_in_one_burst(db: TestDatabase) {
    three_day_backfill(TestApp::spawn(db).await).await;
}

async fn three_day_backfill(app: TestApp) {
    let (admin, viewer) = setup(&app, &["gw-2"]).await;
    let key = telemetry_key(&app, &admin).await;
    let last = plain_day(&app, 2);
    let first = last.checked_sub_days(chrono::Days::new(2)).unwrap();
    let middle = first.succ_opt().unwrap();
    let (from, to) = (berlin(first, 0, 0), berlin(last.succ_opt().unwrap(), 0, 0));
    // The gateway's second buffer: the middle day's 10:00–12:00 arrives in a later burst.
    let (hole_from, hole_to) = (berlin(middle, 10, 0), berlin(middle, 12, 0));
    let in_hole = |t: i64| t > hole_from && t < hole_to;
    // 50 kW every 5 minutes over the three days: one batch of 842 messages.
    let messages: Vec<Value> = (0..=(to - from) / (5 * MIN))
        .map(|i| from + i * 5 * MIN)
        .filter(|t| !in_hole(*t))
        .map(|t| json!({"device_id": "gw-2", "ts": t, "power_w": 50_000.0}))
        .collect();
    assert!(messages.len() <= 1000);
    backfill(&app, &key, messages).await;
    // In watts: the unit converts.
    annotate(&app, &admin, "gw-2", "power_w", json!({"quantity": "power", "unit": "W"})).await;
    let range =
        format!("from={}&to={}", factoryops_types::format_rfc3339_ms(from), factoryops_types::format_rfc3339_ms(to));
    let days_path = path(&format!("/energy/consumption?device_id=gw-2&{range}&bucket=day"));
    // 50 kW × the local day's hours (24, or 23 / 25 on a DST change day), minus the hole.
    let day_kwh = |date: NaiveDate, missing_hours: f64| {
        let hours = (berlin(date.succ_opt().unwrap(), 0, 0) - berlin(date, 0, 0)) as f64 / HOUR as f64;
        50.0 * (hours - missing_hours)
    };
    let (status, days) = app.get(&days_path, Some(&viewer)).await;
    assert_eq!(status, 200, "{days}");
    let items = days["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{days}");
    let mut date = first;
    for item in items {
        let missing = if date == middle { 2.0 } else { 0.0 };
        close(&item["kwh"], day_kwh(date, missing), &format!("{date}"));
        assert_eq!(item["start"], factoryops_types::format_rfc3339_ms(berlin(date, 0, 0)));
        assert_eq!(item["cost"], Value::Null, "no tariff: no cost");
        date = date.succ_opt().unwrap();
    }
    assert_eq!(days["currency"], Value::Null);
    assert_eq!(
        days["gaps"],
        json!([{"device_id": "gw-2", "from": factoryops_types::format_rfc3339_ms(hole_from),
                "to": factoryops_types::format_rfc3339_ms(hole_to)}])
    );
    assert!(days.get("charges").is_none());
    // Below a 60 kW idle threshold every kWh is idle energy; the new configuration drops
    // the device's cached days, so the answer changes at once.
    let (status, _) =
        app.send(Method::PUT, &path("/energy/devices/gw-2"), Some(&admin), Some(json!({"idle_below_kw": 60.0}))).await;
    assert_eq!(status, 200);
    let (_, idle) =
        app.get(&path(&format!("/energy/consumption?device_id=gw-2&{range}&bucket=day")), Some(&viewer)).await;
    for (item, before) in idle["items"].as_array().unwrap().iter().zip(items) {
        close(&item["idle_kwh"], before["kwh"].as_f64().unwrap(), "idle below the threshold");
    }
    // A week bucket sums them (the range is clipped to the three days).
    let (_, week) =
        app.get(&path(&format!("/energy/consumption?device_id=gw-2&{range}&bucket=week")), Some(&viewer)).await;
    let total: f64 = week["items"].as_array().unwrap().iter().map(|i| i["kwh"].as_f64().unwrap()).sum();
    close(&json!(total), 50.0 * ((to - from) as f64 / HOUR as f64 - 2.0), "weeks");
    let (_, misses) = cache_counts(&app).await;
    assert_eq!(misses, 6.0, "each closed day computed once, and again after the configuration change");

    // The second burst lands in the cached middle day: the bus drops that day (ADR 0015
    // §6) and the next answer has the whole day, while the other two stay cached.
    let refill: Vec<Value> =
        (1..24).map(|i| json!({"device_id": "gw-2", "ts": hole_from + i * 5 * MIN, "power_w": 50_000.0})).collect();
    backfill(&app, &key, refill).await;
    let mut days = Value::Null;
    for _ in 0..50 {
        days = app.get(&days_path, Some(&viewer)).await.1;
        if days["gaps"] == json!([]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(days["gaps"], json!([]), "{days}");
    let mut date = first;
    for item in days["items"].as_array().unwrap() {
        close(&item["kwh"], day_kwh(date, 0.0), &format!("{date} after the second burst"));
        date = date.succ_opt().unwrap();
    }
    let (_, misses) = cache_counts(&app).await;
    assert_eq!(misses, 7.0, "only the middle day was computed again");

    // Idle by the machine's state instead: running from the first midnight, idle from the
    // middle day's. A state holds until the next one, so the last day, which has no state
    // point of its own, is idle all day too.
    let states = vec![
        json!({"device_id": "gw-2", "ts": from, "state": "running"}),
        json!({"device_id": "gw-2", "ts": berlin(middle, 0, 0), "state": "idle"}),
    ];
    backfill(&app, &key, states).await;
    let (status, body) = app
        .send(Method::PUT, &path("/energy/devices/gw-2"), Some(&admin), Some(json!({"state_property": "state"})))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, by_state) = app.get(&days_path, Some(&viewer)).await;
    let by_state = by_state["items"].as_array().unwrap().clone();
    assert_eq!(by_state[0]["idle_kwh"], 0.0, "running: {by_state:?}");
    close(&by_state[1]["idle_kwh"], day_kwh(middle, 0.0), "idle on the middle day");
    close(&by_state[2]["idle_kwh"], day_kwh(last, 0.0), "still idle on the last day");
    // A late "running" at the middle day's noon changes that day and the next one (its
    // state at midnight), both cached by now: the bus drops them.
    backfill(&app, &key, vec![json!({"device_id": "gw-2", "ts": berlin(middle, 12, 0), "state": "running"})]).await;
    let morning = 50.0 * (berlin(middle, 12, 0) - berlin(middle, 0, 0)) as f64 / HOUR as f64;
    let mut items = Vec::new();
    for _ in 0..50 {
        items = app.get(&days_path, Some(&viewer)).await.1["items"].as_array().unwrap().clone();
        if items[2]["idle_kwh"] == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(items[0]["idle_kwh"], 0.0);
    close(&items[1]["idle_kwh"], morning, "idle until noon");
    assert_eq!(items[2]["idle_kwh"], 0.0, "running since the middle day's noon: {items:?}");
    app.stop().await;
}

/// Presses ranked by kWh per unit produced; the one without a production count comes last.
async fn presses_ranked_by_specific_energy(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, viewer) = setup(&app, &[]).await;
    for device in ["p1", "p2", "p3"] {
        let (status, body) =
            app.post(&path("/devices"), Some(&admin), json!({"id": device, "name": device, "type": "press"})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) =
        app.post(&path("/devices"), Some(&admin), json!({"id": "oven", "name": "oven", "type": "oven"})).await;
    assert_eq!(status, 201);
    let key = telemetry_key(&app, &admin).await;
    let d = plain_day(&app, 2);
    let (from, to) = (berlin(d, 8, 0), berlin(d, 10, 0));
    let mut messages = Vec::new();
    // Every press draws 100 kW from 08:00 to 10:00: 200 kWh each.
    for device in ["p1", "p2", "p3"] {
        let mut t = from;
        while t <= to {
            messages.push(json!({"device_id": device, "ts": t, "power_kw": 100.0}));
            t += 5 * MIN;
        }
    }
    // Cumulative counts: the reading before the range, then +50 and +50 (p1: 100 units →
    // 2 kWh/unit) or +25 and +25 (p2: 50 units → 4 kWh/unit).
    for (device, step) in [("p1", 50.0), ("p2", 25.0)] {
        for (t, n) in [(from - 15 * MIN, 0.0), (from + HOUR, 1.0), (from + 105 * MIN, 2.0)] {
            messages.push(json!({"device_id": device, "ts": t, "parts": 1000.0 + n * step}));
        }
    }
    backfill(&app, &key, messages).await;
    for device in ["p1", "p2", "p3"] {
        annotate(&app, &admin, device, "power_kw", json!({"quantity": "power", "unit": "kW"})).await;
    }
    for device in ["p1", "p2"] {
        annotate(&app, &admin, device, "parts", json!({"quantity": "production_count", "unit": "pcs"})).await;
    }
    let query = format!(
        "/energy/ranking?device_type=press&from={}&to={}",
        factoryops_types::format_rfc3339_ms(from),
        factoryops_types::format_rfc3339_ms(to)
    );
    let (status, ranking) = app.get(&path(&query), Some(&viewer)).await;
    assert_eq!(status, 200, "{ranking}");
    let items = ranking["items"].as_array().unwrap();
    let order: Vec<&str> = items.iter().map(|i| i["device_id"].as_str().unwrap()).collect();
    assert_eq!(order, ["p1", "p2", "p3"], "{ranking}");
    close(&items[0]["kwh"], 200.0, "p1 kWh");
    close(&items[0]["units"], 100.0, "p1 units");
    close(&items[0]["kwh_per_unit"], 2.0, "p1 kWh/unit");
    close(&items[1]["kwh_per_unit"], 4.0, "p2 kWh/unit");
    assert_eq!((items[0]["rank"].as_u64(), items[1]["rank"].as_u64()), (Some(1), Some(2)));
    assert_eq!((items[2]["rank"].clone(), items[2]["production_property"].clone()), (Value::Null, Value::Null));
    assert_eq!(items[0]["production_property"], "parts");
    let (status, problem) = app.get(&path("/energy/ranking?device_type=press"), Some(&viewer)).await;
    assert_eq!(status, 422, "{problem}");
    app.stop().await;
}

/// An EnPI baseline: daily kWh = 100 + 2 × units over 8 days is recovered exactly; then 2
/// reporting days use 10 % less than expected: savings and the CUSUM follow.
async fn a_baseline_recovers_its_coefficients_and_tracks_savings(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, viewer) = setup(&app, &["line-1"]).await;
    let key = telemetry_key(&app, &admin).await;
    let last = plain_day(&app, 2);
    let first = last.checked_sub_days(chrono::Days::new(9)).unwrap();
    let units = [10.0, 20.0, 15.0, 30.0, 25.0, 5.0, 40.0, 35.0, 20.0, 10.0];
    let mut messages = Vec::new();
    let (mut reading, mut count) = (0.0, 1000.0);
    messages.push(json!({"device_id": "line-1", "ts": berlin(first, 0, 0) - HOUR, "parts": count}));
    let mut date = first;
    for (i, u) in units.iter().enumerate() {
        // The energy counter rises evenly through the day by the day's kWh (every 15 min).
        let kwh = (100.0 + 2.0 * u) * if i >= 8 { 0.9 } else { 1.0 };
        let (d0, d1) = (berlin(date, 0, 0), berlin(date.succ_opt().unwrap(), 0, 0));
        let slots = (d1 - d0) / (15 * MIN);
        for s in 0..slots {
            messages.push(json!({"device_id": "line-1", "ts": d0 + s * 15 * MIN, "energy_kwh": reading}));
            reading += kwh / slots as f64;
        }
        count += u;
        messages.push(json!({"device_id": "line-1", "ts": berlin(date, 12, 0), "parts": count}));
        date = date.succ_opt().unwrap();
    }
    messages.push(json!({"device_id": "line-1", "ts": berlin(date, 0, 0), "energy_kwh": reading}));
    backfill(&app, &key, messages).await;
    annotate(&app, &admin, "line-1", "energy_kwh", json!({"quantity": "energy_counter", "unit": "kWh"})).await;
    annotate(&app, &admin, "line-1", "parts", json!({"quantity": "production_count", "unit": "pcs"})).await;

    let report_from = first.checked_add_days(chrono::Days::new(8)).unwrap();
    let body = json!({"name": "Line 1 EnPI", "device_id": "line-1",
        "drivers": [{"kind": "production", "device_id": "line-1", "property": "parts"}],
        "baseline_from": first.to_string(), "baseline_to": report_from.to_string()});
    let (status, _) = app.post(&path("/energy/baselines"), Some(&viewer), body.clone()).await;
    assert_eq!(status, 403, "analytics:run is needed");
    let (status, baseline) = app.post(&path("/energy/baselines"), Some(&admin), body.clone()).await;
    assert_eq!(status, 201, "{baseline}");
    assert_eq!((baseline["version"].as_i64(), baseline["model"]["n"].as_u64()), (Some(1), Some(8)));
    close(&baseline["model"]["intercept"], 100.0, "intercept");
    close(&baseline["model"]["coefficients"][0]["coefficient"], 2.0, "kWh per unit");
    assert_eq!(baseline["model"]["coefficients"][0]["driver"], "production:line-1/parts");
    close(&baseline["model"]["r2"], 1.0, "R²");
    // A new fit of the same name and target is the next version.
    let (status, again) = app.post(&path("/energy/baselines"), Some(&admin), body).await;
    assert_eq!((status, again["version"].as_i64()), (201, Some(2)), "{again}");

    // Reporting days 8 and 9: expected 140 and 120 kWh, actual 126 and 108.
    let id = baseline["id"].as_str().unwrap();
    let to = report_from.checked_add_days(chrono::Days::new(2)).unwrap();
    let (status, report) =
        app.get(&path(&format!("/energy/baselines/{id}?from={report_from}&to={to}")), Some(&viewer)).await;
    assert_eq!(status, 200, "{report}");
    let series = report["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{report}");
    assert_eq!(series[0]["date"], report_from.to_string());
    for (point, (expected, actual, cusum)) in series.iter().zip([(140.0, 126.0, -14.0), (120.0, 108.0, -26.0)]) {
        close(&point["expected"], expected, "expected");
        close(&point["actual"], actual, "actual");
        close(&point["savings"], expected - actual, "savings");
        close(&point["cusum"], cusum, "CUSUM");
    }
    let (_, list) = app.get(&path("/energy/baselines"), Some(&viewer)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    // Too few days for the drivers: a 422 naming what to change.
    let (status, problem) = app
        .post(
            &path("/energy/baselines"),
            Some(&admin),
            json!({"name": "short", "device_id": "line-1", "drivers": [{"kind": "operating_hours"}, {"kind": "production", "device_id": "line-1", "property": "parts"}],
                   "baseline_from": first.to_string(), "baseline_to": first.succ_opt().unwrap().to_string()}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    // No drivers: an intercept-only regression is refused on `drivers` with a reason.
    let (status, problem) = app
        .post(
            &path("/energy/baselines"),
            Some(&admin),
            json!({"name": "flat", "device_id": "line-1", "drivers": [],
                   "baseline_from": first.to_string(), "baseline_to": report_from.to_string()}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "drivers", "{problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("at least one driver"), "{problem}");
    let (status, _) = app.get(&path("/energy/baselines/nope"), Some(&viewer)).await;
    assert_eq!(status, 404);
    app.stop().await;
}

/// Polls the alerts of one rule until `predicate` holds (rules run after the write).
async fn wait_for_alerts(
    app: &TestApp,
    token: &str,
    rule_id: &str,
    predicate: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (status, body) = app.get(&path("/alerts?limit=100"), Some(token)).await;
        assert_eq!(status, 200, "{body}");
        let items: Vec<Value> =
            body["items"].as_array().unwrap().iter().filter(|a| a["rule_id"] == rule_id).cloned().collect();
        if predicate(&items) {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for alerts of {rule_id}: {items:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Rules on derived energy quantities through the real server (ADR 0016): backfilled
/// power in W fires "15-min demand above 800 kW" with the hand-computed kW (the same
/// figure `/energy/peak-demand` reports), and "idle longer than 30 min" holds both for a
/// device idle below a power threshold and for one with an idle state.
async fn energy_rules_fire_on_backfilled_telemetry(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, viewer) = setup(&app, &["press-1", "press-2"]).await;
    let key = telemetry_key(&app, &admin).await;
    let d = plain_day(&app, 2);
    let at = |hour: u32, minute: u32| berlin(d, hour, minute);
    // First readings make the properties known, so they can be annotated and configured.
    backfill(
        &app,
        &key,
        vec![
            json!({"device_id": "press-1", "ts": at(9, 0), "power_w": 0.0}),
            json!({"device_id": "press-2", "ts": at(9, 0), "state": "running"}),
        ],
    )
    .await;
    annotate(&app, &admin, "press-1", "power_w", json!({"quantity": "power", "unit": "W"})).await;
    for (device, config) in
        [("press-1", json!({"idle_below_kw": 5.0})), ("press-2", json!({"state_property": "state"}))]
    {
        let (status, body) =
            app.send(Method::PUT, &path(&format!("/energy/devices/{device}")), Some(&admin), Some(config)).await;
        assert_eq!(status, 200, "{body}");
    }
    let rule = |name: &str, devices: &[&str], condition: Value, for_seconds: u64| {
        json!({"name": name, "scope": {"devices": devices}, "condition": condition, "for_seconds": for_seconds,
               "severity": "warning", "message": "{device} {value} ({threshold})"})
    };
    let mut ids = Vec::new();
    for body in [
        rule(
            "15-min demand above 800 kW",
            &["press-1"],
            json!({"property": "power_w", "op": "demand", "interval_minutes": 15, "compare": ">", "value": 800}),
            0,
        ),
        rule("Idle longer than 30 min", &["press-1", "press-2"], json!({"op": "idle"}), 1800),
        rule("State idle for 30 min", &["press-2"], json!({"property": "state", "op": "==", "value": "idle"}), 1800),
    ] {
        let (status, created) = app.post(&path("/rules"), Some(&admin), body).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["warnings"], json!([]), "{created}");
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    let (status, problem) = app
        .post(
            &path("/rules"),
            Some(&admin),
            rule("bad", &["press-1"], json!({"any": [{"op": "demand", "property": "power_w", "compare": ">", "value": 1, "interval_minutes": 10}]}), 0),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "condition.any[0].interval_minutes", "{problem}");

    // press-1: 1000 kW (in W) every minute 10:00–10:14, 200 kW 10:15–10:30, 3 kW at 10:31.
    // press-2: idle from 10:00.
    let mut messages = Vec::new();
    for minute in 0..=30 {
        let w = if minute < 15 { 1_000_000.0 } else { 200_000.0 };
        messages.push(json!({"device_id": "press-1", "ts": at(10, minute), "power_w": w}));
    }
    messages.push(json!({"device_id": "press-1", "ts": at(10, 31), "power_w": 3_000.0}));
    messages.push(json!({"device_id": "press-2", "ts": at(10, 0), "state": "idle"}));
    backfill(&app, &key, messages).await;

    // [10:00, 10:15): 1000 kW for 14 minutes = 233.333 kWh, 10:14–10:15 (1000+200)/2 · 1/60
    // = 10 kWh: 243.333 kWh / 0.25 h = 973.333 kW (09:00–10:00 is a gap: no energy).
    // It opens at the 10:15 reading; [10:15, 10:30) at 200 kW resolves it at 10:30.
    let demand = wait_for_alerts(&app, &viewer, &ids[0], |a| a.len() == 1 && a[0]["status"] == "resolved").await;
    assert_eq!(demand[0]["device_id"], "press-1");
    assert_eq!(demand[0]["threshold"], "800 kW");
    let opened = factoryops_types::parse_rfc3339_ms(demand[0]["opened_at"].as_str().unwrap()).unwrap();
    let resolved = factoryops_types::parse_rfc3339_ms(demand[0]["resolved_at"].as_str().unwrap()).unwrap();
    assert_eq!((opened, resolved), (at(10, 15), at(10, 30)));
    let (_, full) = app.get(&path(&format!("/alerts/{}", demand[0]["id"].as_str().unwrap())), Some(&viewer)).await;
    close(&full["history"][0]["value"], 243.333_333_333 / 0.25, "the alert's demand");
    let query = format!(
        "/energy/peak-demand?device_id=press-1&interval_minutes=15&from={}&to={}",
        factoryops_types::format_rfc3339_ms(berlin(d, 0, 0)),
        factoryops_types::format_rfc3339_ms(berlin(d.succ_opt().unwrap(), 0, 0))
    );
    let (status, peak) = app.get(&path(&query), Some(&viewer)).await;
    assert_eq!(status, 200, "{peak}");
    close(&peak["items"][0]["kw"], 243.333_333_333 / 0.25, "the peak demand of the day");

    // Idle: press-2 from 10:00 (state) opens at 10:30; press-1 below 5 kW from 10:31
    // opens at 11:01 (its timers are long due: the readings are two days old).
    let idle = wait_for_alerts(&app, &viewer, &ids[1], |a| a.len() == 2).await;
    let mut opened: Vec<(String, i64)> = idle
        .iter()
        .map(|a| {
            let at = factoryops_types::parse_rfc3339_ms(a["opened_at"].as_str().unwrap()).unwrap();
            (a["device_id"].as_str().unwrap().to_string(), at)
        })
        .collect();
    opened.sort();
    assert_eq!(opened, [("press-1".to_string(), at(11, 1)), ("press-2".to_string(), at(10, 30))]);
    let state = wait_for_alerts(&app, &viewer, &ids[2], |a| a.len() == 1).await;
    assert_eq!(factoryops_types::parse_rfc3339_ms(state[0]["opened_at"].as_str().unwrap()).unwrap(), at(10, 30));
    assert!(state[0]["message"].as_str().unwrap().starts_with("press-2 idle"), "{}", state[0]);
    app.stop().await;
}

/// Energy per unit above a fixed figure through the real server (ADR 0016): a backfilled
/// closed day of press-1 in Berlin, 100 kW from 08:00 to 10:00 (200 kWh) and a cumulative
/// count rising by 100 units, is 2 kWh/unit. A rule expecting 1.5 kWh/unit and 10 % more
/// (1.65) opens when saved (the day is closed), at the day's end plus 15 minutes with the
/// actual kWh per unit; one expecting 2 kWh/unit and 10 % more (2.2) stays quiet; the
/// backtest over the day finds the same alert.
async fn specific_energy_rule_fires_after_the_day_closes(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, viewer) = setup(&app, &["press-1"]).await;
    let key = telemetry_key(&app, &admin).await;
    // The latest local day closed 15 minutes ago (any day length: the energy below lies
    // between 08:00 and 10:00).
    let judged = app.clock_now() - 15 * MIN;
    let d = chrono::DateTime::from_timestamp_millis(judged)
        .unwrap()
        .with_timezone(&Berlin)
        .date_naive()
        .pred_opt()
        .unwrap();
    let at = |hour: u32, minute: u32| berlin(d, hour, minute);
    let mut messages = Vec::new();
    let mut t = at(8, 0);
    while t <= at(10, 0) {
        messages.push(json!({"device_id": "press-1", "ts": t, "power_kw": 100.0}));
        t += 5 * MIN;
    }
    // The first reading of the day counts nothing (the count before it is unknown); then
    // +50 and +50: 100 units.
    for (t, count) in [(at(7, 45), 1000.0), (at(9, 0), 1050.0), (at(9, 45), 1100.0)] {
        messages.push(json!({"device_id": "press-1", "ts": t, "parts": count}));
    }
    backfill(&app, &key, messages).await;
    annotate(&app, &admin, "press-1", "power_kw", json!({"quantity": "power", "unit": "kW"})).await;
    annotate(&app, &admin, "press-1", "parts", json!({"quantity": "production_count", "unit": "pcs"})).await;

    let rule = |name: &str, condition: Value| {
        json!({"name": name, "scope": {"devices": ["press-1"]}, "condition": condition,
               "severity": "warning", "message": "{device} {value} kWh/unit ({threshold})"})
    };
    // Strict input: exactly one of kwh_per_unit and baseline_id, a baseline that exists.
    let (status, problem) = app
        .post(
            &path("/rules"),
            Some(&admin),
            rule("bad", json!({"all": [{"op": "specific_energy", "kwh_per_unit": 1.5, "baseline_id": "b", "above_percent": 10}]})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "condition.all[0].baseline_id", "{problem}");
    let (status, problem) = app
        .post(
            &path("/rules"),
            Some(&admin),
            rule("bad", json!({"op": "specific_energy", "baseline_id": "nope", "above_percent": 10})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "condition.baseline_id", "{problem}");
    assert_eq!(problem["errors"][0]["message"], "no such baseline", "{problem}");

    let mut ids = Vec::new();
    for (name, per_unit) in [("Energy per unit above 1.5 + 10 %", 1.5), ("Energy per unit above 2 + 10 %", 2.0)] {
        let condition = json!({"op": "specific_energy", "kwh_per_unit": per_unit, "above_percent": 10});
        let (status, created) = app.post(&path("/rules"), Some(&admin), rule(name, condition)).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["warnings"], json!([]), "{created}");
        assert_eq!(created["condition"]["period"], "day", "the default is spelled out: {created}");
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    let alerts = wait_for_alerts(&app, &viewer, &ids[0], |a| a.len() == 1).await;
    let closed_at = berlin(d.succ_opt().unwrap(), 0, 0) + 15 * MIN;
    assert_eq!(alerts[0]["device_id"], "press-1");
    assert_eq!(alerts[0]["status"], "open");
    assert_eq!(factoryops_types::parse_rfc3339_ms(alerts[0]["opened_at"].as_str().unwrap()).unwrap(), closed_at);
    close(&alerts[0]["value"], 2.0, "kWh per unit");
    assert_eq!(alerts[0]["threshold"], "+10% over 1.5 kWh/unit");
    assert_eq!(alerts[0]["message"], "press-1 2 kWh/unit (+10% over 1.5 kWh/unit)");
    // 2 kWh/unit is not above 2.2: nothing (judged in the same request that saved it).
    let (_, all) = app.get(&path("/alerts?limit=100"), Some(&viewer)).await;
    assert!(all["items"].as_array().unwrap().iter().all(|a| a["rule_id"] != ids[1].as_str()), "{all}");

    let (status, result) = app
        .post(
            &path(&format!("/rules/{}/backtest", ids[0])),
            Some(&viewer),
            json!({"from": factoryops_types::format_rfc3339_ms(berlin(d, 0, 0)),
                   "to": factoryops_types::format_rfc3339_ms(closed_at + MIN)}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["opened"], 1, "{result}");
    assert_eq!(
        factoryops_types::parse_rfc3339_ms(result["alerts"][0]["opened_at"].as_str().unwrap()).unwrap(),
        closed_at
    );
    app.stop().await;
}

/// "Energy per unit above baseline by 10 %" through the real server: a device baseline of
/// daily kWh = 100 + 2 × units fitted over 8 days; the latest closed day makes 20 units
/// with 20 % more energy than expected (168 kWh for 140): 8.4 kWh/unit against 140 / 20 =
/// 7 kWh/unit, above 7 × 1.1 = 7.7 but not above 7 × 1.25 = 8.75.
async fn baseline_energy_per_unit_rule_fires_after_the_day_closes(db: TestDatabase) {
    let app = TestApp::spawn(db).await;
    let (admin, viewer) = setup(&app, &["line-1"]).await;
    let key = telemetry_key(&app, &admin).await;
    let judged = app.clock_now() - 15 * MIN;
    let last = chrono::DateTime::from_timestamp_millis(judged)
        .unwrap()
        .with_timezone(&Berlin)
        .date_naive()
        .pred_opt()
        .unwrap();
    let first = last.checked_sub_days(chrono::Days::new(8)).unwrap();
    let units = [10.0, 20.0, 15.0, 30.0, 25.0, 5.0, 40.0, 35.0, 20.0];
    let mut messages = Vec::new();
    let (mut reading, mut count) = (0.0, 1000.0);
    messages.push(json!({"device_id": "line-1", "ts": berlin(first, 0, 0) - HOUR, "parts": count}));
    let mut date = first;
    for (i, u) in units.iter().enumerate() {
        // The energy counter rises evenly through the day by the day's kWh (every 15 min).
        let kwh = (100.0 + 2.0 * u) * if i == 8 { 1.2 } else { 1.0 };
        let (d0, d1) = (berlin(date, 0, 0), berlin(date.succ_opt().unwrap(), 0, 0));
        let slots = (d1 - d0) / (15 * MIN);
        for s in 0..slots {
            messages.push(json!({"device_id": "line-1", "ts": d0 + s * 15 * MIN, "energy_kwh": reading}));
            reading += kwh / slots as f64;
        }
        count += u;
        messages.push(json!({"device_id": "line-1", "ts": berlin(date, 12, 0), "parts": count}));
        date = date.succ_opt().unwrap();
    }
    messages.push(json!({"device_id": "line-1", "ts": berlin(date, 0, 0), "energy_kwh": reading}));
    backfill(&app, &key, messages).await;
    annotate(&app, &admin, "line-1", "energy_kwh", json!({"quantity": "energy_counter", "unit": "kWh"})).await;
    annotate(&app, &admin, "line-1", "parts", json!({"quantity": "production_count", "unit": "pcs"})).await;
    let body = json!({"name": "Line 1 EnPI", "device_id": "line-1",
        "drivers": [{"kind": "production", "device_id": "line-1", "property": "parts"}],
        "baseline_from": first.to_string(), "baseline_to": last.to_string()});
    let (status, baseline) = app.post(&path("/energy/baselines"), Some(&admin), body).await;
    assert_eq!(status, 201, "{baseline}");
    close(&baseline["model"]["intercept"], 100.0, "intercept");
    let id = baseline["id"].as_str().unwrap();

    let mut ids = Vec::new();
    for percent in [10, 25] {
        let (status, created) = app
            .post(
                &path("/rules"),
                Some(&admin),
                json!({"name": format!("Energy per unit above baseline by {percent} %"), "scope": {"devices": ["line-1"]},
                       "condition": {"op": "specific_energy", "baseline_id": id, "above_percent": percent},
                       "severity": "warning"}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["warnings"], json!([]), "{created}");
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    let alerts = wait_for_alerts(&app, &viewer, &ids[0], |a| a.len() == 1).await;
    let closed_at = berlin(last.succ_opt().unwrap(), 0, 0) + 15 * MIN;
    assert_eq!(factoryops_types::parse_rfc3339_ms(alerts[0]["opened_at"].as_str().unwrap()).unwrap(), closed_at);
    close(&alerts[0]["value"], 8.4, "kWh per unit");
    assert_eq!(alerts[0]["threshold"], format!("+10% over baseline {id}"));
    let (_, all) = app.get(&path("/alerts?limit=100"), Some(&viewer)).await;
    assert!(all["items"].as_array().unwrap().iter().all(|a| a["rule_id"] != ids[1].as_str()), "{all}");
    // A baseline is daily: not for shifts.
    let (status, problem) = app
        .post(
            &path("/rules"),
            Some(&admin),
            json!({"name": "shift", "scope": {"devices": ["line-1"]}, "severity": "info",
                   "condition": {"op": "specific_energy", "period": "shift", "baseline_id": id, "above_percent": 10}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "condition.period", "{problem}");
    app.stop().await;
}

backend_matrix!(
    baseline_energy_per_unit_rule_fires_after_the_day_closes,
    specific_energy_rule_fires_after_the_day_closes,
    energy_rules_fire_on_backfilled_telemetry,
    a_baseline_recovers_its_coefficients_and_tracks_savings,
    presses_ranked_by_specific_energy,
    groups_through_the_api,
    device_energy_config,
    versioned_settings,
    a_day_of_energy_matches_the_hand_computed_figures,
    a_three_day_backfill_in_one_burst
);

/// The server on InfluxDB (its own `influxd`, `tsdb_url`): the same hand-computed figures
/// (the day itself: `a_day_of_energy_on_influxdb`).
/// Missing `influxd` skips loudly, and fails under `CI=true`.
async fn on_influxdb() -> Option<(TestApp, Influxd)> {
    let influxd = Influxd::start()?;
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let mut config = common::test_config(&db);
    config.tsdb_url = Some(SecretUrl::new(influxd.url("factoryops")));
    Some((TestApp::spawn_with(db, config).await, influxd))
}

mod influxdb {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_three_day_backfill_in_one_burst() {
        let Some((app, _influxd)) = super::on_influxdb().await else { return };
        super::three_day_backfill(app).await;
    }
}
