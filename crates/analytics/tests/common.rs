//! Synthetic data for the known-answer tests and benches.
#![allow(dead_code)]

use factoryops_analytics::{Frame, RunRequest, parse_request};

pub const MIN15: i64 = 900_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 86_400_000;
/// 2026-11-02T00:00:00Z, a Monday.
pub const MONDAY: i64 = 1_793_577_600_000;

/// Deterministic noise: a small LCG mapped to roughly N(0, 1) (sum of 4 uniforms).
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1))
    }
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        // Irwin–Hall with 4 terms: mean 2, variance 4/12.
        let s: f64 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) / (4.0f64 / 12.0).sqrt()
    }
}

/// A daily sine around `base` with amplitude `amp`, 15-min steps, plus N(0, sigma) noise.
pub fn daily_sine(days: usize, base: f64, amp: f64, sigma: f64, seed: u64) -> (Vec<i64>, Vec<f64>) {
    let mut noise = Noise::new(seed);
    let n = days * 96;
    let ts: Vec<i64> = (0..n as i64).map(|i| MONDAY + i * MIN15).collect();
    let v =
        (0..n).map(|i| base + amp * (i as f64 * std::f64::consts::TAU / 96.0).sin() + sigma * noise.normal()).collect();
    (ts, v)
}

pub fn frame1(name: &str, ts: Vec<i64>, v: Vec<f64>) -> Frame {
    Frame::new(ts, vec![(name.to_string(), v)]).expect("frame")
}

pub fn req(json: serde_json::Value) -> RunRequest {
    parse_request(&json).expect("valid request")
}
