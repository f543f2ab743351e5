//! Changepoint detection by PELT (Killick et al. 2012) with a Gaussian cost: change in
//! mean (noise sigma estimated robustly from first differences) or in mean and variance.
//! Works on the observed (finite) values; indices are rows of the frame.

use serde::Serialize;

use crate::control::Control;
use crate::frame;
use crate::request::{ChangeCost, ChangepointParams};
use crate::result::{Finding, fmt_num, split_name, unit_of};
use crate::{AnalysisError, stats};

struct Cost {
    s1: Vec<f64>,
    s2: Vec<f64>,
    kind: ChangeCost,
    sigma2: f64,
}

impl Cost {
    fn new(x: &[f64], kind: ChangeCost) -> Self {
        let mut s1 = Vec::with_capacity(x.len() + 1);
        let mut s2 = Vec::with_capacity(x.len() + 1);
        s1.push(0.0);
        s2.push(0.0);
        for &v in x {
            s1.push(s1[s1.len() - 1] + v);
            s2.push(s2[s2.len() - 1] + v * v);
        }
        // Noise sigma from first differences (a level shift moves one difference only).
        let diffs: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
        let (_, s) = stats::robust_location_scale(&diffs);
        let sigma = s / std::f64::consts::SQRT_2;
        let var = stats::std(x).powi(2);
        let sigma2 = if sigma.is_finite() && sigma > 0.0 {
            sigma * sigma
        } else if var.is_finite() && var > 0.0 {
            var
        } else {
            1.0
        };
        Self { s1, s2, kind, sigma2 }
    }

    /// Cost of segment [a, b).
    fn cost(&self, a: usize, b: usize) -> f64 {
        let n = (b - a) as f64;
        let s = self.s1[b] - self.s1[a];
        let ss = self.s2[b] - self.s2[a];
        let sse = (ss - s * s / n).max(0.0);
        match self.kind {
            ChangeCost::Mean => sse / self.sigma2,
            // −2 log-likelihood up to constants; the variance floor keeps flat runs finite.
            ChangeCost::MeanVar => n * ((sse / n).max(self.sigma2 * 1e-3)).ln(),
        }
    }
}

/// Changepoints as positions in `x` where a new segment starts, ascending.
pub fn pelt(
    x: &[f64],
    kind: ChangeCost,
    penalty: f64,
    min_size: usize,
    control: &dyn Control,
) -> Result<Vec<usize>, AnalysisError> {
    let n = x.len();
    let min_size = min_size.max(if kind == ChangeCost::MeanVar { 3 } else { 1 });
    if n < 2 * min_size {
        return Ok(Vec::new());
    }
    let cost = Cost::new(x, kind);
    let mut f = vec![f64::INFINITY; n + 1];
    let mut last = vec![0usize; n + 1];
    f[0] = -penalty;
    let mut candidates: Vec<usize> = vec![0];
    for t in min_size..=n {
        if t % 65_536 == 0 {
            control.checkpoint(0.1 + 0.8 * t as f64 / n as f64)?;
        }
        if t >= 2 * min_size {
            candidates.push(t - min_size);
        }
        let mut best = (f64::INFINITY, 0usize);
        for &s in &candidates {
            if t - s < min_size {
                continue;
            }
            let v = f[s] + cost.cost(s, t) + penalty;
            if v < best.0 {
                best = (v, s);
            }
        }
        f[t] = best.0;
        last[t] = best.1;
        let ft = f[t];
        candidates.retain(|&s| t - s < min_size || f[s] + cost.cost(s, t) <= ft);
    }
    let mut cps = Vec::new();
    let mut t = n;
    while t > 0 {
        let s = last[t];
        if s > 0 {
            cps.push(s);
        }
        t = s;
    }
    cps.reverse();
    Ok(cps)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changepoint {
    /// Row of the frame where the new segment starts.
    pub index: usize,
    pub ts: String,
    pub mean_before: f64,
    pub mean_after: f64,
    pub change: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub start_index: usize,
    pub end_index: usize,
    pub start: String,
    pub end: String,
    pub points: usize,
    pub mean: f64,
    pub std: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangepointOutput {
    pub cost: ChangeCost,
    pub penalty: f64,
    pub changepoints: Vec<Changepoint>,
    pub segments: Vec<Segment>,
}

pub(crate) fn run(
    ts: &[i64],
    values: &[f64],
    params: &ChangepointParams,
    control: &dyn Control,
) -> Result<ChangepointOutput, AnalysisError> {
    let rows: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_finite()).collect();
    if rows.len() < 2 * params.min_size.max(2) {
        return Err(AnalysisError::InsufficientData(format!(
            "changepoint detection needs at least {} values, the target has {}",
            2 * params.min_size.max(2),
            rows.len()
        )));
    }
    let x: Vec<f64> = rows.iter().map(|&i| values[i]).collect();
    let ln_n = (x.len() as f64).ln();
    let penalty = params.penalty.unwrap_or(match params.cost {
        ChangeCost::Mean => 3.0 * ln_n,
        ChangeCost::MeanVar => 4.0 * ln_n,
    });
    let cps = pelt(&x, params.cost, penalty, params.min_size, control)?;
    let mut bounds = vec![0];
    bounds.extend(cps.iter().copied());
    bounds.push(x.len());
    let segments: Vec<Segment> = bounds
        .windows(2)
        .map(|w| {
            let seg = &x[w[0]..w[1]];
            Segment {
                start_index: rows[w[0]],
                end_index: rows[w[1] - 1],
                start: frame::fmt_ts(ts[rows[w[0]]]),
                end: frame::fmt_ts(ts[rows[w[1] - 1]]),
                points: seg.len(),
                mean: stats::mean(seg),
                std: crate::result::opt(stats::std(seg)),
            }
        })
        .collect();
    let changepoints = segments
        .windows(2)
        .map(|w| Changepoint {
            index: w[1].start_index,
            ts: w[1].start.clone(),
            mean_before: w[0].mean,
            mean_after: w[1].mean,
            change: w[1].mean - w[0].mean,
        })
        .collect();
    Ok(ChangepointOutput { cost: params.cost, penalty, changepoints, segments })
}

pub(crate) fn findings(column: &str, out: &ChangepointOutput) -> Vec<Finding> {
    let unit = unit_of(column);
    let (device, property) = split_name(column);
    let who = if device.is_empty() { property.to_string() } else { format!("{device} {property}") };
    if out.changepoints.is_empty() {
        return vec![Finding::new(
            "no_level_shift",
            format!("{who} kept one level over the whole period (no changepoint)."),
            &[("changepoints", 0.0)],
        )];
    }
    let mut biggest: Vec<&Changepoint> = out.changepoints.iter().collect();
    biggest.sort_by(|a, b| b.change.abs().total_cmp(&a.change.abs()).then(a.index.cmp(&b.index)));
    biggest.truncate(3);
    biggest.sort_by_key(|c| c.index);
    biggest
        .into_iter()
        .map(|c| {
            let pct = if c.mean_before.abs() > 1e-9 { 100.0 * c.change / c.mean_before.abs() } else { f64::NAN };
            let mut text = format!(
                "From {}, {who} {} from {}{unit} to {}{unit}",
                c.ts,
                if c.change >= 0.0 { "rose" } else { "fell" },
                fmt_num(c.mean_before, 2),
                fmt_num(c.mean_after, 2)
            );
            if pct.is_finite() {
                text.push_str(&format!(" ({}{}%)", if pct >= 0.0 { "+" } else { "" }, fmt_num(pct, 1)));
            }
            let mut figures = vec![
                ("index", c.index as f64),
                ("mean_before", c.mean_before),
                ("mean_after", c.mean_after),
                ("change_pct", pct),
            ];
            if unit == " kW" {
                let per_day = c.change * 24.0;
                text.push_str(&format!(
                    ": {} kWh per day {} if it persists.",
                    fmt_num(per_day.abs(), 0),
                    if per_day >= 0.0 { "more" } else { "less" }
                ));
                figures.push(("kwh_per_day", per_day));
            } else {
                text.push_str(". Check what changed at that time.");
            }
            Finding::new("level_shift", text, &figures)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::NoControl;

    #[test]
    fn finds_a_step() {
        let x: Vec<f64> =
            (0..200).map(|i| if i < 120 { 10.0 } else { 14.0 } + ((i * 37 % 11) as f64 - 5.0) * 0.1).collect();
        let cps = pelt(&x, ChangeCost::Mean, 3.0 * (200f64).ln(), 2, &NoControl).expect("pelt");
        assert_eq!(cps, vec![120]);
    }
}
