#![allow(clippy::unwrap_used)]
//! Validation: field paths for a 422, warnings, the API example, round trips.

use std::collections::HashSet;

use factoryops_rules::{FieldError, RuleSpec, validate_rule};
use proptest::prelude::*;
use serde_json::json;

fn api_example() -> serde_json::Value {
    json!({
      "name": "Compressor overheating",
      "enabled": true,
      "scope": {"devices": ["press-1"]},
      "condition": {"all": [
        {"property": "temp_c", "op": ">", "value": 80},
        {"any": [{"property": "running", "op": "==", "value": true},
                 {"property": "power_kw", "op": "between", "min": 5, "max": 50}]}
      ]},
      "for_seconds": 0,
      "schedule": {"timezone": "factory", "days": ["mon", "tue", "wed", "thu", "fri"],
                   "windows": [{"from": "06:00", "to": "22:00"}]},
      "severity": "critical",
      "message": "{device} {property} = {value} (limit {threshold})",
      "cooldown_seconds": 300,
      "auto_resolve": true,
      "notify": {"users": ["<user id>"], "emails": ["ops@example.com"], "whatsapp": ["+4915112345678"]}
    })
}

fn errors(body: serde_json::Value) -> Vec<FieldError> {
    match validate_rule(&body, &HashSet::new()) {
        Ok(_) => panic!("expected errors for {body}"),
        Err(e) => e,
    }
}

fn fields(body: serde_json::Value) -> Vec<String> {
    errors(body).into_iter().map(|e| e.field).collect()
}

#[test]
fn the_api_example_is_valid_and_round_trips() {
    let known: HashSet<String> = ["temp_c", "running", "power_kw"].map(String::from).into();
    let valid = validate_rule(&api_example(), &known).unwrap();
    assert!(valid.warnings.is_empty(), "{:?}", valid.warnings);
    let json = serde_json::to_value(&valid.spec).unwrap();
    for key in ["name", "enabled", "scope", "condition", "for_seconds", "severity", "message", "cooldown_seconds"] {
        assert_eq!(json[key], api_example()[key], "{key}");
    }
    for key in ["timezone", "days", "windows"] {
        assert_eq!(json["schedule"][key], api_example()["schedule"][key], "schedule.{key}");
    }
    assert_eq!(json["schedule"]["outside_schedule"], "keep", "defaults are spelled out");
    let back: RuleSpec = serde_json::from_value(json).unwrap();
    assert_eq!(back, valid.spec);
}

#[test]
fn unknown_properties_are_warnings() {
    let valid = validate_rule(&api_example(), &HashSet::from(["temp_c".to_string()])).unwrap();
    let fields: Vec<_> = valid.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(fields, ["condition.all[1].any[0].property", "condition.all[1].any[1].property"]);
}

#[test]
fn errors_name_the_exact_field() {
    let mut body = api_example();
    body["condition"]["all"][1]["any"][0]["op"] = json!("~=");
    assert_eq!(fields(body), ["condition.all[1].any[0].op"]);

    let mut body = api_example();
    body["condition"]["all"][1]["any"][1]["max"] = json!(1);
    assert_eq!(fields(body), ["condition.all[1].any[1].max"]);

    let mut body = api_example();
    body["condition"]["all"][0]["value"] = json!(true);
    assert_eq!(fields(body), ["condition.all[0].value"], "a boolean with >");

    let mut body = api_example();
    body["condition"]["all"][0]["property"] = json!("bad name");
    assert_eq!(fields(body), ["condition.all[0].property"]);

    let mut body = api_example();
    body["condition"] = json!({"all": []});
    assert_eq!(fields(body), ["condition.all"]);

    let mut body = api_example();
    body["condition"] = json!({"op": "stale", "seconds": 0});
    assert_eq!(fields(body), ["condition.seconds"]);

    let mut body = api_example();
    body["condition"] = json!({"property": "x", "op": "rate_of_change", "window_seconds": 60, "compare": ">", "value": 1, "per": "day"});
    assert_eq!(fields(body), ["condition.per"]);

    let mut body = api_example();
    body["schedule"]["windows"][0]["to"] = json!("25:00");
    assert_eq!(fields(body), ["schedule.windows[0].to"]);

    let mut body = api_example();
    body["schedule"]["timezone"] = json!("Europe/Nowhere");
    assert_eq!(fields(body), ["schedule.timezone"]);

    let mut body = api_example();
    body["schedule"]["cron"] = json!(["61 * * * *"]);
    assert_eq!(fields(body), ["schedule.cron[0]"]);

    let mut body = api_example();
    body["severity"] = json!("fatal");
    assert_eq!(fields(body), ["severity"]);

    let mut body = api_example();
    body.as_object_mut().unwrap().remove("severity");
    assert_eq!(fields(body), ["severity"]);

    let mut body = api_example();
    body["colour"] = json!("red");
    assert_eq!(fields(body), ["colour"]);

    let mut body = api_example();
    body["message"] = json!("{device} is {temperature}");
    assert_eq!(fields(body), ["message"]);

    let mut body = api_example();
    body["notify"]["emails"] = json!(["not-an-email"]);
    body["notify"]["whatsapp"] = json!(["0151"]);
    assert_eq!(fields(body), ["notify.emails[0]", "notify.whatsapp[0]"]);

    let mut body = api_example();
    body["notify"]["escalate_after_minutes"] = json!(10);
    assert_eq!(fields(body), ["notify.escalate_to"]);

    let mut body = api_example();
    body["scope"] = json!({"all": false});
    assert_eq!(fields(body), ["scope.all"]);

    let mut body = api_example();
    body["scope"] = json!({"devices": ["Bad Device"]});
    assert_eq!(fields(body), ["scope"]);

    let mut body = api_example();
    body["name"] = json!("  ");
    assert_eq!(fields(body), ["name"]);

    assert_eq!(fields(json!([1, 2])), [""]);
}

#[test]
fn several_condition_errors_are_reported_together() {
    let mut body = api_example();
    body["condition"] =
        json!({"any": [{"op": ">", "value": 1}, {"property": "x", "op": "between", "min": "a", "max": 2}, 7]});
    assert_eq!(fields(body), ["condition.any[0].property", "condition.any[1].min", "condition.any[2]"]);
}

#[test]
fn every_leaf_kind_round_trips() {
    let mut body = api_example();
    body["condition"] = json!({"any": [
        {"not": {"property": "a", "op": "outside", "min": 1.5, "max": 2.5}},
        {"property": "b", "op": "rate_of_change", "window_seconds": 60, "compare": ">=", "value": 5, "per": "minute"},
        {"op": "stale", "seconds": 300},
        {"property": "c", "op": "stale", "seconds": 60},
        {"property": "d", "op": "!=", "value": false}
    ]});
    body["clear_for_seconds"] = json!(30);
    body["deadband"] = json!(0.5);
    body["schedule"] = json!({"timezone": "America/New_York", "days": ["sat"], "windows": [{"from": "22:00", "to": "06:00"}],
                              "cron": ["*/5 * * * *"], "outside_schedule": "resolve"});
    body["notify"] = json!({"users": ["u"], "remind_every_minutes": 15, "escalate_after_minutes": 30,
                            "escalate_to": {"emails": ["boss@example.com"]}});
    let spec = validate_rule(&body, &HashSet::new()).unwrap().spec;
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["condition"], body["condition"]);
    assert_eq!(json["schedule"], body["schedule"]);
    assert_eq!(json["notify"]["escalate_to"]["emails"], body["notify"]["escalate_to"]["emails"]);
    assert_eq!(json["notify"]["remind_every_minutes"], 15);
    assert_eq!(validate_rule(&json, &HashSet::new()).unwrap().spec, spec);
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i32>().prop_map(|i| json!(i)),
        "[a-z<>=!_ ]{0,8}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(5, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("all".to_string()),
                        Just("any".to_string()),
                        Just("not".to_string()),
                        Just("op".to_string()),
                        Just("property".to_string()),
                        Just("value".to_string()),
                        Just("min".to_string()),
                        Just("max".to_string()),
                        Just("seconds".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Any JSON as a condition: an error list or a rule, never a panic; valid ones round-trip.
    #[test]
    fn arbitrary_conditions_never_panic(condition in arb_json()) {
        let mut body = api_example();
        body["condition"] = condition;
        if let Ok(valid) = validate_rule(&body, &HashSet::new()) {
            let json = serde_json::to_value(&valid.spec).unwrap();
            prop_assert_eq!(validate_rule(&json, &HashSet::new()).unwrap().spec, valid.spec);
        }
    }
}
