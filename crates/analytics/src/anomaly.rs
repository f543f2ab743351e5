//! Anomaly detection on one column: robust z-score (median/MAD), seasonal residuals
//! (MSTL-style decomposition, robust z of the remainder) and a seeded isolation forest
//! on (value, change from the previous value).

use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::frame;
use crate::request::{AnomalyMethod, AnomalyParams};
use crate::result::{Finding, fmt_num, opt, split_name, unit_of};
use crate::rng::SplitMix64;
use crate::{AnalysisError, stats, ts};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyPoint {
    pub ts: String,
    pub value: f64,
    /// Robust z (signed) or isolation score (0.5–1).
    pub score: f64,
    /// What the model expected at that time (median, or trend + seasons); none for the forest.
    pub expected: Option<f64>,
}

/// One chart bucket of the series (mean, min, max of the values and the largest |score|).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartBucket {
    pub ts: String,
    pub mean: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub max_abs_score: Option<f64>,
    pub anomalies: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyOutput {
    pub method: AnomalyMethod,
    pub threshold: f64,
    pub periods: Vec<usize>,
    pub points_scored: usize,
    pub anomaly_count: usize,
    /// The flagged points in time order; at most 1,000 (the strongest) when more.
    pub anomalies: Vec<AnomalyPoint>,
    /// The series in at most 2,000 buckets, anomalies counted per bucket.
    pub series: Vec<ChartBucket>,
}

/// The largest number of anomalies listed one by one.
pub const MAX_LISTED: usize = 1000;
const CHART_BUCKETS: usize = 2000;

/// Scores of every row (NaN where the value is missing) and the expected values.
pub(crate) struct Scored {
    pub scores: Vec<f64>,
    pub expected: Option<Vec<f64>>,
    pub periods: Vec<usize>,
    pub model: AnomalyModel,
}

/// The fitted detector, the parameters of a model artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum AnomalyModel {
    RobustZ {
        median: f64,
        scale: f64,
    },
    Seasonal {
        periods: Vec<usize>,
        profiles: Vec<Vec<f64>>,
        /// Time stamp of phase 0 of every profile and the grid step.
        anchor_ms: i64,
        step_ms: i64,
        /// Last trend value (the level the scorer starts from) and its smoothing.
        level: f64,
        level_alpha: f64,
        /// Robust location and scale of the remainder.
        median: f64,
        scale: f64,
    },
    IsolationForest(IsolationForest),
}

pub(crate) fn score(
    ts_ms: &[i64],
    values: &[f64],
    params: &AnomalyParams,
    control: &dyn Control,
) -> Result<Scored, AnalysisError> {
    let finite = values.iter().filter(|v| v.is_finite()).count();
    if finite < 3 {
        return Err(AnalysisError::InsufficientData(format!(
            "anomaly detection needs at least 3 values, the target has {finite}"
        )));
    }
    control.checkpoint(0.05)?;
    match params.method {
        AnomalyMethod::RobustZ => {
            let (median, scale) = stats::robust_location_scale(values);
            Ok(Scored {
                scores: values.iter().map(|v| z(*v, median, scale)).collect(),
                expected: Some(vec![median; values.len()]),
                periods: Vec::new(),
                model: AnomalyModel::RobustZ { median, scale },
            })
        }
        AnomalyMethod::Seasonal => {
            let reg = frame::regularize(ts_ms, values).ok_or_else(|| {
                AnalysisError::InsufficientData("the time stamps are too irregular for a seasonal model".into())
            })?;
            let periods = match &params.periods {
                Some(p) => p.clone(),
                None => ts::detect_periods(&reg.values, reg.step_ms),
            };
            control.checkpoint(0.3)?;
            let d = ts::decompose(&reg.values, &periods);
            control.checkpoint(0.7)?;
            let slot_of = |t: i64| ((t - reg.start_ms) as f64 / reg.step_ms as f64).round() as usize;
            // Location/scale of the remainder at observed points only (filled ones are smooth).
            let observed: Vec<f64> = ts_ms
                .iter()
                .zip(values)
                .filter(|(_, v)| v.is_finite())
                .map(|(t, _)| d.remainder[slot_of(*t).min(d.remainder.len() - 1)])
                .collect();
            let (median, scale) = stats::robust_location_scale(&observed);
            let mut scores = Vec::with_capacity(values.len());
            let mut expected = Vec::with_capacity(values.len());
            for (t, v) in ts_ms.iter().zip(values) {
                let s = slot_of(*t).min(d.remainder.len() - 1);
                let e = d.trend[s] + d.seasonal_at(s);
                expected.push(e);
                scores.push(if v.is_finite() { z(v - e, median, scale) } else { f64::NAN });
            }
            let level = d.trend.last().copied().unwrap_or(f64::NAN);
            Ok(Scored {
                scores,
                expected: Some(expected),
                periods: d.periods.clone(),
                model: AnomalyModel::Seasonal {
                    periods: d.periods,
                    profiles: d.profiles,
                    anchor_ms: reg.start_ms,
                    step_ms: reg.step_ms,
                    level,
                    level_alpha: 0.05,
                    median,
                    scale,
                },
            })
        }
        AnomalyMethod::IsolationForest => {
            let feats = if_features(values);
            let forest = IsolationForest::fit(&feats, params.trees, params.sample_size, params.seed, control)?;
            control.checkpoint(0.6)?;
            let scores = values
                .iter()
                .zip(&feats)
                .map(|(v, f)| if v.is_finite() { forest.score(f) } else { f64::NAN })
                .collect();
            Ok(Scored { scores, expected: None, periods: Vec::new(), model: AnomalyModel::IsolationForest(forest) })
        }
    }
}

fn z(v: f64, median: f64, scale: f64) -> f64 {
    if !v.is_finite() {
        return f64::NAN;
    }
    if scale > 0.0 { (v - median) / scale } else { 0.0 }
}

/// (value, change from the previous finite value); NaN rows get (NaN, 0).
pub(crate) fn if_features(values: &[f64]) -> Vec<[f64; 2]> {
    let mut prev = f64::NAN;
    values
        .iter()
        .map(|&v| {
            let d = if v.is_finite() && prev.is_finite() { v - prev } else { 0.0 };
            if v.is_finite() {
                prev = v;
            }
            [v, d]
        })
        .collect()
}

pub(crate) fn is_flagged(method: AnomalyMethod, score: f64, threshold: f64) -> bool {
    match method {
        AnomalyMethod::IsolationForest => score >= threshold,
        _ => score.abs() >= threshold,
    }
}

pub(crate) fn output(frame_ts: &[i64], values: &[f64], scored: &Scored, params: &AnomalyParams) -> AnomalyOutput {
    let flagged: Vec<usize> =
        (0..values.len()).filter(|&i| is_flagged(params.method, scored.scores[i], params.threshold)).collect();
    let mut listed = flagged.clone();
    if listed.len() > MAX_LISTED {
        listed.sort_by(|&a, &b| scored.scores[b].abs().total_cmp(&scored.scores[a].abs()).then(a.cmp(&b)));
        listed.truncate(MAX_LISTED);
        listed.sort_unstable();
    }
    let anomalies = listed
        .iter()
        .map(|&i| AnomalyPoint {
            ts: frame::fmt_ts(frame_ts[i]),
            value: values[i],
            score: scored.scores[i],
            expected: scored.expected.as_ref().and_then(|e| opt(e[i])),
        })
        .collect();
    let per = values.len().div_ceil(CHART_BUCKETS).max(1);
    let series = (0..values.len())
        .step_by(per)
        .map(|start| {
            let end = (start + per).min(values.len());
            let chunk = &values[start..end];
            let fin = stats::finite(chunk);
            let max_abs =
                scored.scores[start..end].iter().filter(|s| s.is_finite()).map(|s| s.abs()).fold(f64::NAN, f64::max);
            ChartBucket {
                ts: frame::fmt_ts(frame_ts[start]),
                mean: opt(stats::mean(chunk)),
                min: opt(fin.iter().copied().fold(f64::NAN, f64::min)),
                max: opt(fin.iter().copied().fold(f64::NAN, f64::max)),
                max_abs_score: opt(max_abs),
                anomalies: (start..end)
                    .filter(|&i| is_flagged(params.method, scored.scores[i], params.threshold))
                    .count(),
            }
        })
        .collect();
    AnomalyOutput {
        method: params.method,
        threshold: params.threshold,
        periods: scored.periods.clone(),
        points_scored: scored.scores.iter().filter(|s| s.is_finite()).count(),
        anomaly_count: flagged.len(),
        anomalies,
        series,
    }
}

pub(crate) fn findings(column: &str, out: &AnomalyOutput) -> Vec<Finding> {
    let mut f = Vec::new();
    let (device, property) = split_name(column);
    let who = if device.is_empty() { property.to_string() } else { format!("{device} {property}") };
    let unit = unit_of(column);
    let share = 100.0 * out.anomaly_count as f64 / out.points_scored.max(1) as f64;
    if out.anomaly_count == 0 {
        f.push(Finding::new(
            "anomalies",
            format!(
                "No anomalies in {who}: all {} values are within the threshold ({}).",
                fmt_num(out.points_scored as f64, 0),
                fmt_num(out.threshold, 2)
            ),
            &[("count", 0.0), ("points", out.points_scored as f64)],
        ));
        return f;
    }
    f.push(Finding::new(
        "anomalies",
        format!(
            "{} {} in {who} ({}% of {} values).",
            fmt_num(out.anomaly_count as f64, 0),
            if out.anomaly_count == 1 { "anomaly" } else { "anomalies" },
            fmt_num(share, 2),
            fmt_num(out.points_scored as f64, 0)
        ),
        &[("count", out.anomaly_count as f64), ("points", out.points_scored as f64), ("share_pct", share)],
    ));
    if let Some(top) = out.anomalies.iter().max_by(|a, b| a.score.abs().total_cmp(&b.score.abs()).then(b.ts.cmp(&a.ts)))
    {
        let text = match top.expected {
            Some(e) => format!(
                "The strongest is at {}: {}{unit} where {}{unit} was expected (score {}). Check what happened at that time.",
                top.ts,
                fmt_num(top.value, 2),
                fmt_num(e, 2),
                fmt_num(top.score, 1)
            ),
            None => format!(
                "The strongest is at {}: {}{unit} (isolation score {}). Check what happened at that time.",
                top.ts,
                fmt_num(top.value, 2),
                fmt_num(top.score, 3)
            ),
        };
        f.push(Finding::new(
            "strongest_anomaly",
            text,
            &[("value", top.value), ("expected", top.expected.unwrap_or(f64::NAN)), ("score", top.score)],
        ));
    }
    f
}

/// Isolation forest (Liu, Ting, Zhou 2008) on two features, seeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    pub sample_size: usize,
    pub trees: Vec<Vec<IfNode>>,
}

/// A node: `feature` < 0 marks a leaf, whose `value` is c(size), the average path length
/// still to go for the samples it holds (precomputed: a logarithm per leaf visit was a
/// third of the scoring time over 1 M points).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IfNode {
    pub feature: i8,
    pub value: f64,
    pub left: u32,
    pub right: u32,
}

/// Average path length of an unsuccessful search in a binary tree of n points.
fn c_factor(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n < 2.5 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_9) - 2.0 * (n - 1.0) / n
    }
}

impl IsolationForest {
    pub fn fit(
        feats: &[[f64; 2]],
        trees: usize,
        sample_size: usize,
        seed: u64,
        control: &dyn Control,
    ) -> Result<Self, AnalysisError> {
        let rows: Vec<usize> = (0..feats.len()).filter(|&i| feats[i][0].is_finite()).collect();
        let psi = sample_size.min(rows.len()).max(2);
        let depth_limit = (psi as f64).log2().ceil() as usize;
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::with_capacity(trees);
        for t in 0..trees {
            if t % 16 == 0 {
                control.checkpoint(0.05 + 0.5 * t as f64 / trees as f64)?;
            }
            // Sample without replacement (partial Fisher-Yates over a copy of indices).
            let mut pool = rows.clone();
            let take = psi.min(pool.len());
            for i in 0..take {
                let j = i + rng.below(pool.len() - i);
                pool.swap(i, j);
            }
            pool.truncate(take);
            let mut nodes = Vec::new();
            build(feats, &mut pool, 0, depth_limit, &mut rng, &mut nodes);
            out.push(nodes);
        }
        Ok(Self { sample_size: psi, trees: out })
    }

    /// 2^(−E[h(x)] / c(ψ)): near 1 anomalous, ≤ 0.5 normal.
    pub fn score(&self, x: &[f64; 2]) -> f64 {
        if self.trees.is_empty() {
            return f64::NAN;
        }
        let mut total = 0.0;
        for tree in &self.trees {
            let mut i = 0usize;
            let mut depth = 0.0;
            while let Some(node) = tree.get(i) {
                if node.feature < 0 {
                    total += depth + node.value;
                    break;
                }
                let v = x[node.feature as usize];
                i = if v < node.value { node.left as usize } else { node.right as usize };
                depth += 1.0;
            }
        }
        let mean = total / self.trees.len() as f64;
        2f64.powf(-mean / c_factor(self.sample_size as f64).max(1e-9))
    }
}

fn build(
    feats: &[[f64; 2]],
    rows: &mut [usize],
    depth: usize,
    limit: usize,
    rng: &mut SplitMix64,
    nodes: &mut Vec<IfNode>,
) -> u32 {
    let id = nodes.len() as u32;
    let leaf = IfNode { feature: -1, value: c_factor(rows.len() as f64), left: 0, right: 0 };
    nodes.push(leaf);
    if rows.len() <= 1 || depth >= limit {
        return id;
    }
    let mut ranges = [(f64::INFINITY, f64::NEG_INFINITY); 2];
    for &r in rows.iter() {
        for (k, range) in ranges.iter_mut().enumerate() {
            range.0 = range.0.min(feats[r][k]);
            range.1 = range.1.max(feats[r][k]);
        }
    }
    let candidates: Vec<usize> = (0..2).filter(|&k| ranges[k].1 > ranges[k].0).collect();
    if candidates.is_empty() {
        return id;
    }
    let k = candidates[rng.below(candidates.len())];
    let (lo, hi) = ranges[k];
    let split = lo + rng.next_f64() * (hi - lo);
    // Partition in place: rows with feature < split first.
    let mut m = 0;
    for i in 0..rows.len() {
        if feats[rows[i]][k] < split {
            rows.swap(i, m);
            m += 1;
        }
    }
    if m == 0 || m == rows.len() {
        return id;
    }
    let (left_rows, right_rows) = rows.split_at_mut(m);
    let left = build(feats, left_rows, depth + 1, limit, rng, nodes);
    let right = build(feats, right_rows, depth + 1, limit, rng, nodes);
    nodes[id as usize] = IfNode { feature: k as i8, value: split, left, right };
    id
}

/// For a power column (`_kw`): the energy the flagged points drew above what was
/// expected, each point standing for one sampling step.
pub(crate) fn excess_energy(
    column: &str,
    values: &[f64],
    scored: &Scored,
    params: &AnomalyParams,
    step_ms: i64,
) -> Option<Finding> {
    let expected = scored.expected.as_ref()?;
    if unit_of(column) != " kW" || step_ms <= 0 {
        return None;
    }
    let hours = step_ms as f64 / 3_600_000.0;
    let (mut kwh, mut points) = (0.0, 0usize);
    for i in 0..values.len() {
        if is_flagged(params.method, scored.scores[i], params.threshold) && values[i] > expected[i] {
            kwh += (values[i] - expected[i]) * hours;
            points += 1;
        }
    }
    (points > 0).then(|| {
        Finding::new(
            "anomaly_energy",
            format!(
                "The {} anomalous {} above expectation drew {} kWh more than expected ({} min per point).",
                points,
                if points == 1 { "point" } else { "points" },
                fmt_num(kwh, 2),
                fmt_num(hours * 60.0, 1)
            ),
            &[("excess_kwh", kwh), ("points", points as f64), ("step_hours", hours)],
        )
    })
}
