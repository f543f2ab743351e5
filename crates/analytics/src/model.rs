//! Model artifacts for the registry and the incremental scorer for live scoring.
//!
//! An artifact is plain JSON (serde): family, parameters, end state, features,
//! hyperparameters and metrics. [`Scorer`] turns an anomaly or forecast artifact into a
//! per-point scorer whose work and memory per point are bounded by the model (at most
//! one season of state), never by the history seen.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::AnalysisError;
use crate::anomaly::{AnomalyModel, IsolationForest};
use crate::baseline::BaselineDesign;
use crate::forecast::{ForecastModel, RegressionModel};
use crate::ts::{HwParams, HwState};

/// Version of the artifact layout; bumped when a field changes meaning.
pub const ARTIFACT_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    pub format: u32,
    /// The column the model was trained on (`device/property`).
    pub target: String,
    pub step_ms: i64,
    /// Time stamp of the last training observation.
    pub trained_until_ms: i64,
    pub features: Vec<String>,
    pub hyperparameters: BTreeMap<String, f64>,
    pub metrics: BTreeMap<String, f64>,
    pub params: ModelParams,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelParams {
    Anomaly { detector: AnomalyModel, threshold: f64 },
    Forecast { model: ForecastModel },
    Baseline { design: BaselineDesign, coefficients: Vec<f64>, tz: String },
}

impl ModelArtifact {
    pub fn kind(&self) -> &'static str {
        match self.params {
            ModelParams::Anomaly { .. } => "anomaly",
            ModelParams::Forecast { .. } => "forecast",
            ModelParams::Baseline { .. } => "baseline",
        }
    }

    pub fn family(&self) -> &'static str {
        match &self.params {
            ModelParams::Anomaly { detector, .. } => match detector {
                AnomalyModel::RobustZ { .. } => "robust_z",
                AnomalyModel::Seasonal { .. } => "seasonal_residual",
                AnomalyModel::IsolationForest(_) => "isolation_forest",
            },
            ModelParams::Forecast { model } => model.family(),
            ModelParams::Baseline { .. } => "linear_baseline",
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, AnalysisError> {
        serde_json::from_slice(bytes).map_err(|e| AnalysisError::Unscorable(e.to_string()))
    }
}

/// Scores one point at a time. Anomaly models give their anomaly score (robust z, or the
/// isolation score); forecast models give the deviation from the one-step forecast in
/// sigmas. A point at or before the previous one is scored against the current state
/// without changing it (late data never rewinds the model).
#[derive(Debug, Clone)]
pub struct Scorer {
    kind: Kind,
    step_ms: i64,
    /// Time stamp the next grid point is expected at (forecast models).
    next_ts: i64,
}

#[derive(Debug, Clone)]
enum Kind {
    RobustZ {
        median: f64,
        scale: f64,
    },
    Seasonal {
        periods: Vec<usize>,
        profiles: Vec<Vec<f64>>,
        anchor_ms: i64,
        level: f64,
        alpha: f64,
        median: f64,
        scale: f64,
        threshold: f64,
    },
    Forest {
        forest: Box<IsolationForest>,
        prev: f64,
    },
    Ets {
        params: HwParams,
        state: HwState,
        sigma: f64,
        /// Seasonal offsets added on top (MSTL), with the phase of the next point.
        periods: Vec<usize>,
        profiles: Vec<Vec<f64>>,
        phases: Vec<usize>,
    },
    Naive {
        ring: Vec<f64>,
        pos: usize,
        sigma: f64,
    },
    Regression {
        model: Box<RegressionModel>,
        hist: VecDeque<f64>,
    },
}

/// Grid points a gap is walked through one by one before the rest is skipped in O(1).
const MAX_WALK: usize = 10_080;

impl Scorer {
    pub fn new(artifact: &ModelArtifact) -> Result<Self, AnalysisError> {
        let step_ms = artifact.step_ms.max(1);
        let next_ts = artifact.trained_until_ms.saturating_add(step_ms);
        let kind = match &artifact.params {
            ModelParams::Anomaly { detector, threshold } => match detector {
                AnomalyModel::RobustZ { median, scale } => Kind::RobustZ { median: *median, scale: *scale },
                AnomalyModel::Seasonal { periods, profiles, anchor_ms, level, level_alpha, median, scale, .. } => {
                    Kind::Seasonal {
                        periods: periods.clone(),
                        profiles: profiles.clone(),
                        anchor_ms: *anchor_ms,
                        level: *level,
                        alpha: *level_alpha,
                        median: *median,
                        scale: *scale,
                        threshold: *threshold,
                    }
                }
                AnomalyModel::IsolationForest(f) => Kind::Forest { forest: Box::new(f.clone()), prev: f64::NAN },
            },
            ModelParams::Forecast { model } => match model {
                ForecastModel::Ets { params, state, sigma } => Kind::Ets {
                    params: *params,
                    state: state.clone(),
                    sigma: *sigma,
                    periods: Vec::new(),
                    profiles: Vec::new(),
                    phases: Vec::new(),
                },
                ForecastModel::Mstl { periods, profiles, phases, params, state, sigma } => Kind::Ets {
                    params: *params,
                    state: state.clone(),
                    sigma: *sigma,
                    periods: periods.clone(),
                    profiles: profiles.clone(),
                    phases: phases.clone(),
                },
                ForecastModel::SeasonalNaive { last, sigma, .. } => {
                    Kind::Naive { ring: last.clone(), pos: 0, sigma: *sigma }
                }
                ForecastModel::Regression(r) => {
                    Kind::Regression { hist: r.recent.iter().copied().collect(), model: r.clone() }
                }
            },
            ModelParams::Baseline { .. } => {
                return Err(AnalysisError::Unscorable(
                    "a baseline is applied to a period, not scored point by point".into(),
                ));
            }
        };
        Ok(Self { kind, step_ms, next_ts })
    }

    /// The score of `value` observed at `ts` (UTC ms); NaN for a missing value.
    pub fn score(&mut self, ts: i64, value: f64) -> f64 {
        if !value.is_finite() {
            return f64::NAN;
        }
        let step = self.step_ms;
        match &mut self.kind {
            Kind::RobustZ { median, scale } => ratio(value - *median, *scale),
            Kind::Seasonal { periods, profiles, anchor_ms, level, alpha, median, scale, threshold } => {
                let slot = (ts - *anchor_ms).div_euclid(step) as usize;
                let season: f64 = periods.iter().zip(profiles.iter()).map(|(p, prof)| prof[slot % p]).sum();
                let z = ratio(value - *level - season - *median, *scale);
                // The level follows slow drift, but not the anomalies it should flag.
                if z.abs() < *threshold {
                    *level += *alpha * (value - season - *level);
                }
                z
            }
            Kind::Forest { forest, prev } => {
                let d = if prev.is_finite() { value - *prev } else { 0.0 };
                *prev = value;
                forest.score(&[value, d])
            }
            Kind::Ets { params, state, sigma, periods, profiles, phases } => {
                let ahead = steps_ahead(ts, self.next_ts, step);
                let Some(ahead) = ahead else {
                    let s = seasonal_sum(periods, profiles, phases, 0);
                    return ratio(value - state.predict(params) - s, *sigma);
                };
                let walk = ahead.min(MAX_WALK);
                for _ in 0..walk {
                    state.skip(params);
                    advance(phases, periods, 1);
                }
                let rest = ahead - walk;
                if rest > 0 {
                    // Long gap: move the season slots without walking every point.
                    if !state.season.is_empty() {
                        state.pos = (state.pos + rest) % state.season.len();
                    }
                    advance(phases, periods, rest);
                }
                let s = seasonal_sum(periods, profiles, phases, 0);
                let e = value - s - state.predict(params);
                state.update(params, value - s);
                advance(phases, periods, 1);
                self.next_ts = self.next_ts.saturating_add((ahead as i64 + 1).saturating_mul(step));
                ratio(e, *sigma)
            }
            Kind::Naive { ring, pos, sigma } => {
                let m = ring.len().max(1);
                let Some(ahead) = steps_ahead(ts, self.next_ts, step) else {
                    return ratio(value - ring.get(*pos).copied().unwrap_or(value), *sigma);
                };
                *pos = (*pos + ahead) % m;
                let expected = ring.get(*pos).copied().unwrap_or(value);
                if let Some(slot) = ring.get_mut(*pos) {
                    *slot = value;
                }
                *pos = (*pos + 1) % m;
                self.next_ts = self.next_ts.saturating_add((ahead as i64 + 1).saturating_mul(step));
                ratio(value - expected, *sigma)
            }
            Kind::Regression { model, hist } => {
                let Some(ahead) = steps_ahead(ts, self.next_ts, step) else {
                    return f64::NAN;
                };
                let cap = model.recent.len().max(1);
                // Points of a gap are filled with the model's own forecasts.
                for h in 0..ahead.min(cap) {
                    let ts_h = self.next_ts + h as i64 * step;
                    let p = model.predict_next(hist.make_contiguous(), ts_h);
                    hist.push_back(p);
                    if hist.len() > cap {
                        hist.pop_front();
                    }
                }
                let expected = model.predict_next(hist.make_contiguous(), ts);
                hist.push_back(value);
                if hist.len() > cap {
                    hist.pop_front();
                }
                self.next_ts = self.next_ts.saturating_add((ahead as i64 + 1).saturating_mul(step));
                ratio(value - expected, model.sigma)
            }
        }
    }
}

/// Grid points between the expected next time stamp and `ts`; None for late data.
fn steps_ahead(ts: i64, next_ts: i64, step: i64) -> Option<usize> {
    if ts < next_ts - step / 2 {
        return None;
    }
    Some(((ts - next_ts + step / 2).div_euclid(step)).max(0) as usize)
}

fn advance(phases: &mut [usize], periods: &[usize], by: usize) {
    for (ph, p) in phases.iter_mut().zip(periods) {
        *ph = (*ph + by) % p;
    }
}

fn seasonal_sum(periods: &[usize], profiles: &[Vec<f64>], phases: &[usize], h: usize) -> f64 {
    periods.iter().zip(profiles).zip(phases).map(|((p, prof), ph)| prof[(ph + h) % p]).sum()
}

fn ratio(x: f64, scale: f64) -> f64 {
    if scale > 0.0 && scale.is_finite() {
        x / scale
    } else if x == 0.0 {
        0.0
    } else {
        f64::NAN
    }
}
