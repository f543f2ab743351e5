//! Every analysis on synthetic data whose answer is known by construction.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use chrono_tz::Tz;
use common::*;
use factoryops_analytics::model::ModelParams;
use factoryops_analytics::{AnalysisError, Callbacks, Frame, NoControl, Output, RunResult, Scorer, frame::fmt_ts, run};
use serde_json::json;

fn berlin() -> Tz {
    "Europe/Berlin".parse().expect("tz")
}

fn go(frame: &Frame, body: serde_json::Value) -> RunResult {
    run(frame, &req(body), berlin(), &NoControl).expect("run")
}

#[test]
fn robust_z_finds_the_injected_spike_at_its_timestamp() {
    let mut noise = Noise::new(7);
    let n = 2000;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY + i * 60_000).collect();
    let mut v: Vec<f64> = (0..n).map(|_| 20.0 + 0.5 * noise.normal()).collect();
    v[1234] = 35.0;
    let r = go(&frame1("press-1/power_kw", ts.clone(), v), json!({"mode": "standard", "analysis": "anomaly"}));
    let Output::Anomaly(out) = &r.output else { panic!("anomaly output") };
    assert_eq!(out.anomaly_count, 1, "{:?}", out.anomalies);
    assert_eq!(out.anomalies[0].ts, fmt_ts(ts[1234]));
    assert!(out.anomalies[0].score > 20.0);
    assert_eq!(r.findings[0].figures["count"], 1.0);
    // 35 kW against the median (≈ 20 kW) for one 1-minute step: ≈ 15/60 kWh.
    let e = r.findings.iter().find(|f| f.kind == "anomaly_energy").expect("energy finding");
    let median = out.anomalies[0].expected.expect("expected");
    assert!((e.figures["excess_kwh"] - (35.0 - median) / 60.0).abs() < 1e-12);
    assert!((median - 20.0).abs() < 0.1);
}

#[test]
fn seasonal_residuals_find_a_spike_a_plain_z_score_cannot() {
    // The spike (+8) stays inside the daily swing (±10): only the seasonal model sees it.
    let (ts, mut v) = daily_sine(14, 50.0, 10.0, 0.3, 3);
    let at = 7 * 96 + 30;
    v[at] += 8.0;
    let f = frame1("oven-1/temp_c", ts.clone(), v);
    let r = go(&f, json!({"mode": "standard", "analysis": "anomaly", "hyperparameters": {"method": "seasonal"}}));
    let Output::Anomaly(out) = &r.output else { panic!() };
    assert_eq!(out.periods, vec![96]);
    assert_eq!(out.anomaly_count, 1, "{:?}", out.anomalies);
    assert_eq!(out.anomalies[0].ts, fmt_ts(ts[at]));
    let plain = go(&f, json!({"mode": "standard", "analysis": "anomaly"}));
    let Output::Anomaly(p) = &plain.output else { panic!() };
    assert!(p.anomalies.iter().all(|a| a.ts != fmt_ts(ts[at])));
}

#[test]
fn isolation_forest_scores_the_spike_highest_and_is_seeded() {
    let mut noise = Noise::new(11);
    let n = 3000;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY + i * 60_000).collect();
    let mut v: Vec<f64> = (0..n).map(|_| 10.0 + noise.normal()).collect();
    v[2500] = 30.0;
    let f = frame1("pump-1/flow", ts.clone(), v);
    let body = json!({"mode": "standard", "analysis": "anomaly",
        "hyperparameters": {"method": "isolation_forest", "seed": 42, "threshold": 0.7}});
    let r = go(&f, body.clone());
    let Output::Anomaly(out) = &r.output else { panic!() };
    let top = out.anomalies.iter().max_by(|a, b| a.score.total_cmp(&b.score)).expect("flagged");
    assert_eq!(top.ts, fmt_ts(ts[2500]));
    let again = go(&f, body);
    assert_eq!(serde_json::to_vec(&r).expect("json"), serde_json::to_vec(&again).expect("json"));
}

#[test]
fn seasonal_series_is_forecast_within_three_percent_mape() {
    // 20 days to learn from, the 21st day to check: MAPE ≤ 3 % and ≥ 85 % of the
    // actuals inside the 95 % band (noise sigma 1 on a 40–60 swing).
    let (ts, v) = daily_sine(21, 50.0, 10.0, 1.0, 5);
    let train = 20 * 96;
    let f = frame1("hall/power_kw", ts[..train].to_vec(), v[..train].to_vec());
    let r = go(&f, json!({"mode": "standard", "analysis": "forecast", "hyperparameters": {"horizon": 96}}));
    let Output::Forecast(out) = &r.output else { panic!() };
    assert_eq!(out.periods, vec![96]);
    assert_eq!(out.forecast.len(), 96);
    assert_eq!(out.forecast[0].ts, fmt_ts(ts[train]));
    let mut ape = 0.0;
    let mut inside = 0;
    for (p, actual) in out.forecast.iter().zip(&v[train..]) {
        let m = p.mean.expect("mean");
        ape += ((actual - m) / actual).abs();
        if p.lower.expect("lower") <= *actual && *actual <= p.upper.expect("upper") {
            inside += 1;
        }
    }
    let mape = 100.0 * ape / 96.0;
    assert!(mape <= 3.0, "MAPE {mape}");
    assert!(inside >= 82, "{inside} of 96 inside the band");
    assert!(r.metrics["holdout_mape_pct"] <= 3.0);
    assert!(r.findings.iter().any(|f| f.kind == "forecast_level"));
}

#[test]
fn mstl_handles_two_seasons() {
    // Daily swing plus a weekday/weekend step: both seasons detected, MAPE ≤ 5 %.
    let mut noise = Noise::new(9);
    let n = 28 * 96;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY + i * MIN15).collect();
    let value = |i: usize, e: f64| {
        let weekend = (i / 96) % 7 >= 5;
        (if weekend { 30.0 } else { 60.0 }) + 8.0 * (i as f64 * std::f64::consts::TAU / 96.0).sin() + e
    };
    let v: Vec<f64> = (0..n).map(|i| value(i, 0.8 * noise.normal())).collect();
    let train = 27 * 96; // ends on a Sunday; the Monday after is forecast
    let f = frame1("line/power_kw", ts[..train].to_vec(), v[..train].to_vec());
    let r = go(
        &f,
        json!({"mode": "standard", "analysis": "forecast", "hyperparameters": {"horizon": 96, "method": "mstl"}}),
    );
    let Output::Forecast(out) = &r.output else { panic!() };
    assert_eq!(out.periods, vec![96, 672]);
    assert_eq!(out.family, "mstl_ets");
    let pred: Vec<f64> = out.forecast.iter().map(|p| p.mean.expect("mean")).collect();
    let mape = 100.0 * pred.iter().zip(&v[train..]).map(|(p, a)| ((a - p) / a).abs()).sum::<f64>() / 96.0;
    assert!(mape <= 5.0, "MAPE {mape}");
}

#[test]
fn known_linear_baseline_is_recovered() {
    // power = 5 + 2·production − 3·temp + 10 during 08:00–17:59 Berlin time, tiny noise.
    let mut noise = Noise::new(13);
    let n = 24 * 30;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY + i * HOUR).collect();
    let prod: Vec<f64> = (0..n).map(|_| 100.0 * noise.uniform()).collect();
    let temp: Vec<f64> = (0..n).map(|_| 10.0 + 10.0 * noise.uniform()).collect();
    let tz = berlin();
    let power: Vec<f64> = (0..n)
        .map(|i| {
            let h = factoryops_analytics::frame::calendar(ts[i], tz).hour;
            5.0 + 2.0 * prod[i] - 3.0 * temp[i] + if (8..18).contains(&h) { 10.0 } else { 0.0 } + 0.01 * noise.normal()
        })
        .collect();
    let f = Frame::new(
        ts,
        vec![("m1/power_kw".into(), power), ("m1/production".into(), prod), ("site/temp_c".into(), temp)],
    )
    .expect("frame");
    let r = go(
        &f,
        json!({"mode": "standard", "analysis": "baseline", "target": "m1/power_kw",
               "hyperparameters": {"drivers": ["m1/production", "site/temp_c"], "calendar": ["hour"]}}),
    );
    let Output::Baseline(out) = &r.output else { panic!() };
    let coef = |name: &str| out.coefficients.iter().find(|c| c.feature == name).map(|c| c.value).expect("coefficient");
    assert!((coef("intercept") - 5.0).abs() < 0.01, "{}", coef("intercept"));
    assert!((coef("m1/production") - 2.0).abs() < 1e-3);
    assert!((coef("site/temp_c") + 3.0).abs() < 1e-3);
    assert!((coef("hour_09") - 10.0).abs() < 0.01);
    assert!(coef("hour_20").abs() < 0.01);
    assert!(r.metrics["r2"] > 0.9999);
    assert!(r.metrics["cv_rmse_pct"] < 0.1);
}

#[test]
fn changepoints_at_the_right_index() {
    let mut noise = Noise::new(17);
    let v: Vec<f64> = (0..1000)
        .map(|i| {
            let level = if i < 300 {
                10.0
            } else if i < 700 {
                16.0
            } else {
                12.0
            };
            level + noise.normal()
        })
        .collect();
    let ts: Vec<i64> = (0..1000).map(|i| MONDAY + i * MIN15).collect();
    let r = go(&frame1("comp-2/power_kw", ts.clone(), v), json!({"mode": "standard", "analysis": "changepoints"}));
    let Output::Changepoints(out) = &r.output else { panic!() };
    let idx: Vec<usize> = out.changepoints.iter().map(|c| c.index).collect();
    assert_eq!(idx, vec![300, 700]);
    assert_eq!(out.changepoints[0].ts, fmt_ts(ts[300]));
    let f = &r.findings[0];
    assert_eq!(f.kind, "level_shift");
    assert!((f.figures["kwh_per_day"] - 24.0 * out.changepoints[0].change).abs() < 1e-9);
}

#[test]
fn clusters_match_the_generating_profiles() {
    // Weekdays: 20 kW at night, 80 kW 07:00–18:59; weekends flat 15 kW (local time).
    let tz = berlin();
    let mut noise = Noise::new(19);
    let n = 28 * 96;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY - HOUR + i * MIN15).collect();
    let v: Vec<f64> = ts
        .iter()
        .map(|t| {
            let c = factoryops_analytics::frame::calendar(*t, tz);
            let base = if c.weekday >= 5 {
                15.0
            } else if (7..19).contains(&c.hour) {
                80.0
            } else {
                20.0
            };
            base + noise.normal()
        })
        .collect();
    let r = go(
        &frame1("comp-2/power_kw", ts, v),
        json!({"mode": "standard", "analysis": "clustering", "hyperparameters": {"seed": 1}}),
    );
    let Output::Clustering(out) = &r.output else { panic!() };
    assert_eq!(out.k, 2);
    assert_eq!(out.k_chosen_by, "silhouette");
    let weekday = &out.clusters[0];
    let weekend = &out.clusters[1];
    assert_eq!(weekday.weekday_days, [4, 4, 4, 4, 4, 0, 0]);
    assert_eq!(weekend.weekday_days, [0, 0, 0, 0, 0, 4, 4]);
    assert!((weekday.profile[10] - 80.0).abs() < 1.5);
    assert!((weekday.profile[3] - 20.0).abs() < 1.5);
    assert!(weekend.profile.iter().all(|v| (v - 15.0).abs() < 1.5));
    assert!(out.days.iter().all(|d| (d.cluster == 2) == (d.weekday == "Sat" || d.weekday == "Sun")));
}

#[test]
fn weekend_load_finding_carries_its_numbers() {
    // compressor-2: 18 kW at weekends, 60 kW on weekday working hours, 10 kW weekday nights.
    let tz = berlin();
    let n = 28 * 24;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY - HOUR + i * HOUR).collect();
    let v: Vec<f64> = ts
        .iter()
        .map(|t| {
            let c = factoryops_analytics::frame::calendar(*t, tz);
            if c.weekday >= 5 {
                18.0
            } else if c.hour >= 22 || c.hour < 6 {
                10.0
            } else {
                60.0
            }
        })
        .collect();
    let r = go(&frame1("compressor-2/power_kw", ts, v), json!({"mode": "standard", "analysis": "statistics"}));
    let f = r.findings.iter().find(|f| f.kind == "weekend_load").expect("finding");
    assert_eq!(f.figures["mean_kw"], 18.0);
    let expected = 18.0 * 730.5 * 2.0 / 7.0;
    assert!((f.figures["kwh_per_month"] - expected).abs() < 1e-9);
    assert!(f.text.starts_with("compressor-2 draws 18.0 kW on average at weekends"), "{}", f.text);
    assert!(f.text.contains("3,757 kWh per month"), "{}", f.text);
    // 10 kW at night is only 17 % of 60 kW: below the 20 % bar, no finding.
    assert!(r.findings.iter().all(|f| f.kind != "night_load"));
}

#[test]
fn copilot_runs_are_byte_identical_and_explain_the_choice() {
    let (ts, v) = daily_sine(30, 50.0, 10.0, 1.0, 23);
    let f = frame1("hall/power_kw", ts, v);
    let body = json!({"mode": "copilot", "goal": "forecast", "target": "hall/power_kw"});
    let a = serde_json::to_vec(&go(&f, body.clone())).expect("json");
    let b = serde_json::to_vec(&go(&f, body)).expect("json");
    assert_eq!(a, b);
    let r: serde_json::Value = serde_json::from_slice(&a).expect("json");
    let out = &r["output"];
    assert_eq!(out["kind"], "copilot");
    let board = out["leaderboard"].as_array().expect("board");
    assert!(board.len() >= 6, "{board:?}");
    assert_eq!(board.iter().filter(|e| e["rank"] == 1).count(), 1);
    let chosen = out["chosen"].as_str().expect("chosen");
    // On a pure daily sine, a seasonal model must win over the non-seasonal ETS.
    assert_ne!(chosen, "ets(non-seasonal)");
    let explanation = out["explanation"].as_str().expect("text");
    assert!(explanation.contains("Detected a daily season (96 points)"), "{explanation}");
    assert!(explanation.contains(chosen), "{explanation}");
    assert_eq!(r["model"]["params"]["kind"], "forecast");
}

#[test]
fn copilot_budget_is_a_deterministic_work_budget() {
    // 30 days at 1 min: the seasonal grid alone costs more than 1 s of work units.
    let mut noise = Noise::new(29);
    let n = 30 * 1440;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY + i * 60_000).collect();
    let v: Vec<f64> =
        (0..n).map(|i| 50.0 + 10.0 * (i as f64 * std::f64::consts::TAU / 1440.0).sin() + noise.normal()).collect();
    let f = frame1("hall/power_kw", ts, v);
    let r = go(&f, json!({"mode": "copilot", "goal": "forecast", "budget_seconds": 1}));
    let Output::Copilot(out) = &r.output else { panic!() };
    assert!(out.work_units_used <= out.budget_work_units);
    assert!(out.leaderboard.iter().any(|e| e.status == "skipped_budget"));
    assert!(out.explanation.contains("Skipped for the budget of 1 s"), "{}", out.explanation);
}

#[test]
fn copilot_anomaly_and_baseline_goals() {
    let (ts, mut v) = daily_sine(21, 50.0, 10.0, 0.5, 31);
    let at = 15 * 96 + 40;
    v[at] += 10.0;
    let f = frame1("oven-1/power_kw", ts.clone(), v.clone());
    let r = go(&f, json!({"mode": "copilot", "goal": "anomaly"}));
    let Output::Copilot(out) = &r.output else { panic!() };
    let Output::Anomaly(a) = &out.result else { panic!() };
    assert!(a.anomalies.iter().any(|p| p.ts == fmt_ts(ts[at])), "{:?} {}", a.anomalies, out.chosen);
    assert_ne!(out.chosen, "robust_z");

    let prod: Vec<f64> = v.iter().map(|x| (x - 5.0) / 2.0).collect();
    let f2 = Frame::new(ts, vec![("oven-1/power_kw".into(), v), ("oven-1/production".into(), prod)]).expect("frame");
    let r = go(&f2, json!({"mode": "copilot", "goal": "baseline", "target": "oven-1/power_kw"}));
    let Output::Copilot(out) = &r.output else { panic!() };
    assert!(out.chosen.starts_with("drivers(oven-1/production)"), "{}", out.chosen);
    assert!(r.metrics["r2"] > 0.999);
}

#[test]
fn forecast_model_scores_live_points_in_sigmas() {
    let (ts, v) = daily_sine(15, 50.0, 10.0, 1.0, 37);
    let train = 14 * 96;
    let f = frame1("hall/power_kw", ts[..train].to_vec(), v[..train].to_vec());
    let r = go(&f, json!({"mode": "standard", "analysis": "forecast", "hyperparameters": {"method": "ets"}}));
    let artifact = r.model.expect("model");
    assert!(matches!(artifact.params, ModelParams::Forecast { .. }));
    // Round trip through JSON, as the registry stores it.
    let artifact = factoryops_analytics::ModelArtifact::from_json(&artifact.to_json()).expect("artifact");
    let mut scorer = Scorer::new(&artifact).expect("scorer");
    let mut max_normal: f64 = 0.0;
    for i in train..train + 40 {
        max_normal = max_normal.max(scorer.score(ts[i], v[i]).abs());
    }
    assert!(max_normal < 4.5, "{max_normal}");
    let spike = scorer.score(ts[train + 40], v[train + 40] + 15.0);
    assert!(spike > 8.0, "{spike}");
}

#[test]
fn anomaly_model_scores_live_points() {
    let (ts, v) = daily_sine(10, 50.0, 10.0, 0.3, 41);
    let train = 9 * 96;
    let f = frame1("oven-1/temp_c", ts[..train].to_vec(), v[..train].to_vec());
    let r = go(&f, json!({"mode": "standard", "analysis": "anomaly", "hyperparameters": {"method": "seasonal"}}));
    let mut scorer = Scorer::new(&r.model.expect("model")).expect("scorer");
    for i in train..train + 50 {
        assert!(scorer.score(ts[i], v[i]).abs() < 5.0);
    }
    assert!(scorer.score(ts[train + 50], v[train + 50] + 8.0) > 10.0);
}

#[test]
fn cancel_stops_the_run_and_progress_only_grows() {
    let (ts, v) = daily_sine(30, 50.0, 10.0, 1.0, 43);
    let f = frame1("hall/power_kw", ts, v);
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |p: f64| seen.lock().expect("lock").push(p);
    let cancel = AtomicBool::new(false);
    let ctl = Callbacks { progress: &progress, cancel: &cancel };
    let body = req(json!({"mode": "copilot", "goal": "forecast"}));
    run(&f, &body, berlin(), &ctl).expect("run");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
    assert_eq!(seen.last().copied(), Some(1.0));
    cancel.store(true, Ordering::Relaxed);
    assert_eq!(run(&f, &body, berlin(), &ctl), Err(AnalysisError::Cancelled));
}

#[test]
fn target_must_exist_and_be_named_when_ambiguous() {
    let f = Frame::new(vec![0, 1000], vec![("a".into(), vec![1.0, 2.0]), ("b".into(), vec![1.0, 2.0])]).expect("frame");
    let body = req(json!({"mode": "standard", "analysis": "anomaly"}));
    assert_eq!(run(&f, &body, berlin(), &NoControl), Err(AnalysisError::TargetRequired(2)));
    let body = req(json!({"mode": "standard", "analysis": "anomaly", "target": "c"}));
    assert_eq!(run(&f, &body, berlin(), &NoControl), Err(AnalysisError::UnknownColumn("c".into())));
}
