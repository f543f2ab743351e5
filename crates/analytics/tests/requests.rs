//! Request validation: every bad field with its path; unknown fields refused.

use factoryops_analytics::request::{Analysis, AnomalyMethod, RequestKind};
use factoryops_analytics::{FieldError, Goal, parse_request};
use serde_json::json;

fn errors(v: serde_json::Value) -> Vec<(String, String)> {
    parse_request(&v)
        .expect_err("invalid")
        .errors
        .into_iter()
        .map(|FieldError { path, message }| (path, message))
        .collect()
}

#[test]
fn standard_request_with_defaults() {
    let r = parse_request(&json!({"mode": "standard", "analysis": "anomaly", "dataset_id": "ds-1",
        "target": "press-1/power_kw"}))
    .expect("valid");
    assert_eq!(r.dataset_id.as_deref(), Some("ds-1"));
    let RequestKind::Standard { analysis: Analysis::Anomaly(p) } = r.kind else { panic!() };
    assert_eq!(p.method, AnomalyMethod::RobustZ);
    assert_eq!(p.threshold, 3.5);
}

#[test]
fn copilot_request_with_default_budget() {
    let r = parse_request(&json!({"mode": "copilot", "goal": "forecast"})).expect("valid");
    assert_eq!(r.kind, RequestKind::Copilot { goal: Goal::Forecast, budget_seconds: 60 });
}

#[test]
fn every_bad_field_is_reported_with_its_path() {
    let e = errors(json!({"mode": "standard", "analysis": "anomaly", "colour": "red",
        "hyperparameters": {"method": "magic", "threshold": -1, "periods": [1, "x"], "extra": true}}));
    assert_eq!(
        e,
        vec![
            ("colour".into(), "unknown field".into()),
            ("hyperparameters.extra".into(), "unknown field".into()),
            ("hyperparameters.method".into(), "expected one of: robust_z, seasonal, isolation_forest".into()),
            ("hyperparameters.threshold".into(), "must be between 0.5 and 100".into()),
            ("hyperparameters.periods.0".into(), "must be a whole number between 2 and 100000".into()),
            ("hyperparameters.periods.1".into(), "expected a whole number".into()),
        ]
    );
}

#[test]
fn mode_specific_fields() {
    assert_eq!(
        errors(json!({"mode": "copilot", "goal": "dance", "budget_seconds": 0, "hyperparameters": {}})),
        vec![
            ("hyperparameters".into(), "unknown field".into()),
            ("goal".into(), "expected one of: forecast, anomaly, baseline".into()),
            ("budget_seconds".into(), "must be a whole number between 1 and 3600".into()),
        ]
    );
    assert_eq!(
        errors(json!({"analysis": "forecast"})),
        vec![("mode".into(), "required; one of: standard, copilot".into())]
    );
    assert_eq!(
        errors(json!({"mode": "standard", "analysis": "statistics", "hyperparameters": {"k": 2}})),
        vec![("hyperparameters.k".into(), "unknown field".into())]
    );
    assert_eq!(
        errors(json!({"mode": "standard", "analysis": "baseline", "target": "",
            "hyperparameters": {"calendar": ["hour", "month"], "drivers": "x"}})),
        vec![
            ("target".into(), "must not be empty".into()),
            ("hyperparameters.drivers".into(), "expected an array of strings".into()),
            ("hyperparameters.calendar.1".into(), "expected one of: hour, weekday".into()),
        ]
    );
    assert_eq!(errors(json!([1]))[0].1, "expected a JSON object");
}

#[test]
fn a_parsed_request_serialises_back_to_the_api_shape() {
    let body = json!({"mode": "standard", "analysis": "clustering", "dataset_id": "ds-1",
        "target": "m/power_kw", "hyperparameters": {"k": 3}});
    let r = parse_request(&body).expect("valid");
    assert_eq!(
        serde_json::to_value(&r).expect("json"),
        json!({"mode": "standard", "analysis": "clustering", "dataset_id": "ds-1",
            "target": "m/power_kw", "hyperparameters": {"k": 3, "seed": 0}})
    );
    let r = parse_request(&json!({"mode": "copilot", "goal": "baseline"})).expect("valid");
    assert_eq!(
        serde_json::to_value(&r).expect("json"),
        json!({"mode": "copilot", "goal": "baseline", "budget_seconds": 60})
    );
    let r = parse_request(&json!({"mode": "standard", "analysis": "statistics"})).expect("valid");
    assert_eq!(serde_json::to_value(&r).expect("json"), json!({"mode": "standard", "analysis": "statistics"}));
}
