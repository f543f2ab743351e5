//! Issue 19 targets: anomaly detection over 1 M points (≤ 30 s) and a co-pilot forecast
//! on 30 days at 15 min (within its 60 s budget). Run: `cargo bench -p factoryops-analytics`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use factoryops_analytics::{Frame, NoControl, Scorer, parse_request, run};
use serde_json::json;

const MONDAY: i64 = 1_793_577_600_000;

fn series(n: usize, step_ms: i64, per_day: f64) -> Frame {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY + i * step_ms).collect();
    let v: Vec<f64> = (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let noise = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let spike = if i % 100_003 == 5_000 { 40.0 } else { 0.0 };
            50.0 + 10.0 * (i as f64 * std::f64::consts::TAU / per_day).sin() + 2.0 * noise + spike
        })
        .collect();
    Frame::new(ts, vec![("hall/power_kw".into(), v)]).expect("frame")
}

fn anomaly(c: &mut Criterion) {
    let frame = series(1_000_000, 60_000, 1440.0);
    let mut g = c.benchmark_group("anomaly_1m_points");
    g.sample_size(10);
    for method in ["robust_z", "seasonal", "isolation_forest"] {
        let req = parse_request(&json!({"mode": "standard", "analysis": "anomaly",
            "hyperparameters": {"method": method}}))
        .expect("request");
        g.bench_function(method, |b| {
            b.iter(|| black_box(run(&frame, &req, chrono_tz::Tz::UTC, &NoControl).expect("run")))
        });
    }
    g.finish();
}

fn copilot(c: &mut Criterion) {
    let frame = series(30 * 96, 900_000, 96.0);
    let req = parse_request(&json!({"mode": "copilot", "goal": "forecast"})).expect("request");
    let mut g = c.benchmark_group("copilot_forecast_30d_15min");
    g.sample_size(10);
    g.bench_function("budget_60s", |b| {
        b.iter(|| black_box(run(&frame, &req, chrono_tz::Tz::UTC, &NoControl).expect("run")))
    });
    g.finish();
}

fn scoring(c: &mut Criterion) {
    // Live scoring cost per point of a Holt-Winters model (daily season, 15 min).
    let frame = series(30 * 96, 900_000, 96.0);
    let req = parse_request(&json!({"mode": "standard", "analysis": "forecast",
        "hyperparameters": {"method": "ets"}}))
    .expect("request");
    let artifact = run(&frame, &req, chrono_tz::Tz::UTC, &NoControl).expect("run").model.expect("model");
    let mut g = c.benchmark_group("live_scoring");
    g.bench_function("holt_winters_10k_points", |b| {
        b.iter(|| {
            let mut s = Scorer::new(&artifact).expect("scorer");
            let mut acc = 0.0;
            for i in 0..10_000i64 {
                acc += s.score(MONDAY + (30 * 96 + i) * 900_000, 50.0 + (i % 7) as f64);
            }
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, anomaly, copilot, scoring);
criterion_main!(benches);
