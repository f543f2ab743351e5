//! The live scorer of every scorable family: normal points score low, a spike high,
//! gaps and late points are handled, and the state stays bounded.

mod common;

use std::collections::BTreeMap;

use common::*;
use factoryops_analytics::forecast::{self, ForecastModel};
use factoryops_analytics::frame::Regular;
use factoryops_analytics::model::{ARTIFACT_FORMAT, ModelParams};
use factoryops_analytics::request::ForecastMethod;
use factoryops_analytics::{ModelArtifact, NoControl, Scorer, run};
use serde_json::json;

fn artifact(model: ForecastModel, train_end_ms: i64) -> ModelArtifact {
    ModelArtifact {
        format: ARTIFACT_FORMAT,
        target: "hall/power_kw".into(),
        step_ms: MIN15,
        trained_until_ms: train_end_ms,
        features: vec![],
        hyperparameters: BTreeMap::new(),
        metrics: BTreeMap::new(),
        params: ModelParams::Forecast { model },
    }
}

/// Scores the day after training with a 2-hour gap and a late point in it, then a spike.
fn check(a: &ModelArtifact, ts: &[i64], v: &[f64], train: usize, what: &str) {
    let a = ModelArtifact::from_json(&a.to_json()).expect("round trip");
    let mut s = Scorer::new(&a).expect("scorer");
    let mut worst: f64 = 0.0;
    for i in train..train + 60 {
        if (train + 20..train + 28).contains(&i) {
            continue; // a 2-hour gap
        }
        let z = s.score(ts[i], v[i]);
        assert!(z.is_finite(), "{what}: NaN at {i}");
        worst = worst.max(z.abs());
    }
    assert!(worst < 5.0, "{what}: normal points scored up to {worst}");
    // A late point does not move the state: scoring it twice gives the same answer.
    let late = s.score(ts[train + 10], v[train + 10]);
    assert_eq!(late.to_bits(), s.score(ts[train + 10], v[train + 10]).to_bits(), "{what}");
    let spike = s.score(ts[train + 60], v[train + 60] + 20.0);
    assert!(spike > 6.0, "{what}: spike scored {spike}");
}

#[test]
fn every_forecast_family_scores_live() {
    let (ts, v) = daily_sine(22, 50.0, 10.0, 1.0, 51);
    let train = 21 * 96;
    let end = ts[train - 1];
    for (method, periods) in [
        (ForecastMethod::Ets, vec![]),
        (ForecastMethod::Ets, vec![96]),
        (ForecastMethod::Mstl, vec![96]),
        (ForecastMethod::SeasonalNaive, vec![96]),
    ] {
        let m = forecast::fit_classic(&v[..train], method, &periods).expect("fit");
        if method == ForecastMethod::Ets && periods.is_empty() {
            continue; // a non-seasonal level cannot follow a ±10 daily swing within 5 sigma
        }
        check(&artifact(m, end), &ts, &v, train, &format!("{method:?} {periods:?}"));
    }
    let reg = Regular { start_ms: ts[0], step_ms: MIN15, values: v[..train].to_vec(), filled: 0 };
    for weekly in [false, true] {
        let r = forecast::fit_regression(&reg, 96, 1.0, chrono_tz::Tz::UTC, weekly).expect("fit");
        check(
            &artifact(ForecastModel::Regression(Box::new(r)), end),
            &ts,
            &v,
            train,
            &format!("regression weekly={weekly}"),
        );
    }
}

#[test]
fn isolation_forest_and_robust_z_score_live() {
    let mut noise = Noise::new(53);
    let n = 4000;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY + i * 60_000).collect();
    let v: Vec<f64> = (0..n).map(|_| 10.0 + noise.normal()).collect();
    let f = frame1("pump-1/flow", ts[..3000].to_vec(), v[..3000].to_vec());
    for (method, normal_max, spike_min) in [("isolation_forest", 0.75, 0.7), ("robust_z", 5.0, 10.0)] {
        let r = run(
            &f,
            &req(json!({"mode": "standard", "analysis": "anomaly", "hyperparameters": {"method": method}})),
            chrono_tz::Tz::UTC,
            &NoControl,
        )
        .expect("run");
        let mut s = Scorer::new(&r.model.expect("model")).expect("scorer");
        for i in 3000..3500 {
            let z = s.score(ts[i], v[i]);
            assert!(z.abs() < normal_max, "{method}: {z} at {i}");
        }
        let spike = s.score(ts[3500], 40.0);
        assert!(spike > spike_min, "{method}: {spike}");
        assert!(s.score(ts[3501], f64::NAN).is_nan());
    }
}

#[test]
fn a_baseline_is_not_scored_point_by_point() {
    let (ts, v) = daily_sine(8, 50.0, 10.0, 1.0, 57);
    let r = run(
        &frame1("hall/power_kw", ts, v),
        &req(json!({"mode": "standard", "analysis": "baseline"})),
        chrono_tz::Tz::UTC,
        &NoControl,
    )
    .expect("run");
    assert!(Scorer::new(&r.model.expect("model")).is_err());
}
