//! No analysis panics on odd frames: empty, one row, all NaN, constant, irregular.

use factoryops_analytics::{Frame, NoControl, parse_request, run};
use proptest::prelude::*;
use serde_json::json;

fn bodies() -> Vec<serde_json::Value> {
    let mut b = vec![
        json!({"mode": "standard", "analysis": "statistics"}),
        json!({"mode": "standard", "analysis": "anomaly"}),
        json!({"mode": "standard", "analysis": "anomaly", "hyperparameters": {"method": "seasonal"}}),
        json!({"mode": "standard", "analysis": "anomaly", "hyperparameters": {"method": "isolation_forest", "trees": 5}}),
        json!({"mode": "standard", "analysis": "forecast"}),
        json!({"mode": "standard", "analysis": "forecast", "hyperparameters": {"method": "mstl", "periods": [2, 3]}}),
        json!({"mode": "standard", "analysis": "forecast", "hyperparameters": {"method": "seasonal_naive", "periods": [4]}}),
        json!({"mode": "standard", "analysis": "baseline"}),
        json!({"mode": "standard", "analysis": "clustering"}),
        json!({"mode": "standard", "analysis": "changepoints", "hyperparameters": {"cost": "meanvar"}}),
        json!({"mode": "standard", "analysis": "changepoints"}),
    ];
    for goal in ["forecast", "anomaly", "baseline"] {
        b.push(json!({"mode": "copilot", "goal": goal, "budget_seconds": 1}));
    }
    b
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -1e6f64..1e6,
        1 => Just(f64::NAN),
        1 => Just(0.0),
        1 => Just(5.0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_panic(gaps in prop::collection::vec(1i64..5_000_000, 0..300), vals in prop::collection::vec(value(), 300)) {
        let mut t = 1_793_577_600_000i64;
        let ts: Vec<i64> = gaps.iter().map(|g| { t += g; t }).collect();
        let n = ts.len();
        let second: Vec<f64> = vals[..n].iter().rev().map(|v| v * 0.5 + 1.0).collect();
        let frame = Frame::new(ts, vec![("m/power_kw".into(), vals[..n].to_vec()), ("m/rate".into(), second)]).expect("frame");
        for mut body in bodies() {
            body["target"] = json!("m/power_kw");
            let req = parse_request(&body).expect("valid");
            if let Ok(r) = run(&frame, &req, chrono_tz::Tz::UTC, &NoControl) {
                serde_json::to_vec(&r).expect("serialisable");
            }
        }
    }
}

#[test]
fn fixed_odd_frames() {
    let frames = vec![
        Frame::new(vec![], vec![("m/x".into(), vec![])]).expect("empty"),
        Frame::new(vec![0], vec![("m/x".into(), vec![1.0])]).expect("one row"),
        Frame::new((0..500).collect(), vec![("m/x".into(), vec![f64::NAN; 500])]).expect("all NaN"),
        Frame::new((0..500).map(|i| i * 900_000).collect(), vec![("m/x".into(), vec![7.0; 500])]).expect("constant"),
        Frame::new(vec![0, 1, 1_000_000_000_000], vec![("m/x".into(), vec![1.0, 2.0, 3.0])]).expect("irregular"),
    ];
    for frame in &frames {
        for body in bodies() {
            let req = parse_request(&body).expect("valid");
            if let Ok(r) = run(frame, &req, chrono_tz::Tz::UTC, &NoControl) {
                serde_json::to_vec(&r).expect("serialisable");
            }
        }
    }
}
