//! Regression baseline: target ~ drivers + hour-of-day + day-of-week (factory time zone),
//! ordinary least squares; R², CV(RMSE) and NMBE as ASHRAE Guideline 14 defines them.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::frame::{self, Frame};
use crate::linalg::least_squares;
use crate::request::CalendarFeature;
use crate::result::{Finding, fmt_num, opt, split_name, unit_of};
use crate::{AnalysisError, stats};

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A design matrix (row-major), its targets, and the frame row of each.
pub(crate) type Design = (Vec<f64>, Vec<f64>, Vec<usize>);

/// The design of a baseline: which drivers and calendar dummies, in column order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineDesign {
    pub drivers: Vec<String>,
    pub calendar: Vec<CalendarFeature>,
}

impl BaselineDesign {
    pub fn feature_names(&self) -> Vec<String> {
        let mut f = vec!["intercept".to_string()];
        f.extend(self.drivers.iter().cloned());
        if self.calendar.contains(&CalendarFeature::Hour) {
            f.extend((1..24).map(|h| format!("hour_{h:02}")));
        }
        if self.calendar.contains(&CalendarFeature::Weekday) {
            f.extend(WEEKDAYS[1..].iter().map(|d| format!("weekday_{d}")));
        }
        f
    }

    /// The rows (row-major design matrix) and targets where everything is finite, and
    /// the frame row index of each.
    pub(crate) fn matrix(
        &self,
        frame: &Frame,
        target: &[f64],
        tz: Tz,
        rows: std::ops::Range<usize>,
    ) -> Result<Design, AnalysisError> {
        let drivers: Vec<&[f64]> = self
            .drivers
            .iter()
            .map(|d| frame.column(d).ok_or_else(|| AnalysisError::UnknownColumn(d.clone())))
            .collect::<Result<_, _>>()?;
        let k = self.feature_names().len();
        let hour = self.calendar.contains(&CalendarFeature::Hour);
        let weekday = self.calendar.contains(&CalendarFeature::Weekday);
        let (mut x, mut y, mut idx) = (Vec::new(), Vec::new(), Vec::new());
        for i in rows {
            if !target[i].is_finite() || drivers.iter().any(|d| !d[i].is_finite()) {
                continue;
            }
            let start = x.len();
            x.resize(start + k, 0.0);
            let row = &mut x[start..];
            row[0] = 1.0;
            for (j, d) in drivers.iter().enumerate() {
                row[1 + j] = d[i];
            }
            let mut at = 1 + drivers.len();
            let c = frame::calendar(frame.ts()[i], tz);
            if hour {
                if c.hour >= 1 {
                    row[at + c.hour as usize - 1] = 1.0;
                }
                at += 23;
            }
            if weekday && c.weekday >= 1 {
                row[at + c.weekday as usize - 1] = 1.0;
            }
            y.push(target[i]);
            idx.push(i);
        }
        Ok((x, y, idx))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BaselineFit {
    pub design: BaselineDesign,
    pub coefficients: Vec<f64>,
    pub stats: FitStats,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitStats {
    pub n: usize,
    pub r2: f64,
    pub adj_r2: f64,
    /// %, sqrt(SSE / (n − p)) / mean(y).
    pub cv_rmse: f64,
    /// %, Σ(y − ŷ) / ((n − p) · mean(y)).
    pub nmbe: f64,
    pub rmse: f64,
}

pub(crate) fn predict_rows(x: &[f64], k: usize, coef: &[f64]) -> Vec<f64> {
    x.chunks_exact(k).map(|r| r.iter().zip(coef).map(|(a, b)| a * b).sum()).collect()
}

pub(crate) fn fit_stats(y: &[f64], pred: &[f64], p: usize) -> FitStats {
    let n = y.len();
    let mean = stats::mean(y);
    let sst: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
    let sse: f64 = y.iter().zip(pred).map(|(a, b)| (a - b) * (a - b)).sum();
    let bias: f64 = y.iter().zip(pred).map(|(a, b)| a - b).sum();
    let dof = n.saturating_sub(p).max(1) as f64;
    let r2 = if sst > 0.0 { 1.0 - sse / sst } else { f64::NAN };
    FitStats {
        n,
        r2,
        adj_r2: if n > p && sst > 0.0 { 1.0 - (sse / dof) / (sst / (n - 1) as f64) } else { f64::NAN },
        cv_rmse: if mean.abs() > 1e-12 { 100.0 * (sse / dof).sqrt() / mean } else { f64::NAN },
        nmbe: if mean.abs() > 1e-12 { 100.0 * bias / (dof * mean) } else { f64::NAN },
        rmse: (sse / n.max(1) as f64).sqrt(),
    }
}

/// Fits a design on `rows` of the frame.
pub fn fit(
    frame: &Frame,
    target: &[f64],
    design: BaselineDesign,
    tz: Tz,
    rows: std::ops::Range<usize>,
) -> Result<BaselineFit, AnalysisError> {
    let k = design.feature_names().len();
    let (x, y, _) = design.matrix(frame, target, tz, rows)?;
    if y.len() < k + 2 {
        return Err(AnalysisError::InsufficientData(format!(
            "a baseline with {k} features needs at least {} complete rows, found {}",
            k + 2,
            y.len()
        )));
    }
    let coefficients = least_squares(&x, k, &y, 0.0)
        .ok_or_else(|| AnalysisError::InsufficientData("the drivers are collinear or constant".into()))?;
    let pred = predict_rows(&x, k, &coefficients);
    let stats = fit_stats(&y, &pred, k);
    Ok(BaselineFit { design, coefficients, stats })
}

/// Other columns correlated with the target (|r| ≥ 0.3), strongest first, at most 5.
pub fn correlated_columns(frame: &Frame, target: &str) -> Vec<(String, f64)> {
    let Some(t) = frame.column(target) else {
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = frame
        .columns()
        .iter()
        .filter(|c| c.name != target)
        .map(|c| (c.name.clone(), stats::pearson(t, &c.values)))
        .filter(|(_, r)| r.is_finite() && r.abs() >= 0.3)
        .collect();
    out.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    out.truncate(5);
    out
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coefficient {
    pub feature: String,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpectedActual {
    pub ts: String,
    pub actual: Option<f64>,
    pub expected: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineOutput {
    pub drivers: Vec<String>,
    pub calendar: Vec<CalendarFeature>,
    pub coefficients: Vec<Coefficient>,
    pub rows_used: usize,
    pub r2: Option<f64>,
    pub adj_r2: Option<f64>,
    pub cv_rmse_pct: Option<f64>,
    pub nmbe_pct: Option<f64>,
    /// Expected vs actual in at most 2,000 buckets (means per bucket).
    pub series: Vec<ExpectedActual>,
}

const CHART_BUCKETS: usize = 2000;

pub(crate) fn output(frame: &Frame, target: &[f64], fit: &BaselineFit, tz: Tz) -> BaselineOutput {
    let names = fit.design.feature_names();
    let k = names.len();
    let (x, y, idx) = fit.design.matrix(frame, target, tz, 0..frame.len()).unwrap_or_default();
    let pred = predict_rows(&x, k, &fit.coefficients);
    let per = y.len().div_ceil(CHART_BUCKETS).max(1);
    let series = (0..y.len())
        .step_by(per)
        .map(|s| {
            let e = (s + per).min(y.len());
            ExpectedActual {
                ts: frame::fmt_ts(frame.ts()[idx[s]]),
                actual: opt(stats::mean(&y[s..e])),
                expected: opt(stats::mean(&pred[s..e])),
            }
        })
        .collect();
    BaselineOutput {
        drivers: fit.design.drivers.clone(),
        calendar: fit.design.calendar.clone(),
        coefficients: names
            .into_iter()
            .zip(&fit.coefficients)
            .map(|(feature, v)| Coefficient { feature, value: *v })
            .collect(),
        rows_used: fit.stats.n,
        r2: opt(fit.stats.r2),
        adj_r2: opt(fit.stats.adj_r2),
        cv_rmse_pct: opt(fit.stats.cv_rmse),
        nmbe_pct: opt(fit.stats.nmbe),
        series,
    }
}

pub(crate) fn metrics(fit: &BaselineFit) -> BTreeMap<String, f64> {
    crate::result::metrics(&[
        ("r2", fit.stats.r2),
        ("adj_r2", fit.stats.adj_r2),
        ("cv_rmse_pct", fit.stats.cv_rmse),
        ("nmbe_pct", fit.stats.nmbe),
        ("rmse", fit.stats.rmse),
        ("rows", fit.stats.n as f64),
    ])
}

pub(crate) fn findings(target: &str, fit: &BaselineFit) -> Vec<Finding> {
    let mut f = Vec::new();
    let (device, property) = split_name(target);
    let who = if device.is_empty() { property.to_string() } else { format!("{device} {property}") };
    let unit = unit_of(target);
    let s = fit.stats;
    if s.r2.is_finite() && s.cv_rmse.is_finite() {
        // ASHRAE Guideline 14: CV(RMSE) ≤ 30 % (hourly) and |NMBE| ≤ 10 % for a usable baseline.
        let usable = s.cv_rmse <= 30.0 && s.nmbe.abs() <= 10.0;
        f.push(Finding::new(
            "baseline_quality",
            format!(
                "The baseline explains {}% of the variation of {who} (R² {}); CV(RMSE) {}%{}",
                fmt_num(100.0 * s.r2, 1),
                fmt_num(s.r2, 3),
                fmt_num(s.cv_rmse, 1),
                if usable {
                    ", within ASHRAE Guideline 14 (≤ 30%): it can be used to measure savings."
                } else {
                    ", above ASHRAE Guideline 14's 30%: add drivers before measuring savings with it."
                }
            ),
            &[("r2", s.r2), ("cv_rmse_pct", s.cv_rmse), ("nmbe_pct", s.nmbe)],
        ));
    }
    for (j, d) in fit.design.drivers.iter().enumerate() {
        let b = fit.coefficients[1 + j];
        f.push(Finding::new(
            "driver_effect",
            format!("Each +1 of {d} goes with {}{}{unit} of {who}.", if b >= 0.0 { "+" } else { "" }, fmt_num(b, 3)),
            &[("coefficient", b)],
        ));
    }
    if fit.design.calendar.contains(&CalendarFeature::Hour) {
        let at = 1 + fit.design.drivers.len();
        let mut hours: Vec<(usize, f64)> = vec![(0, 0.0)];
        hours.extend((1..24).map(|h| (h, fit.coefficients[at + h - 1])));
        let hi = hours.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let lo = hours.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        if let (Some(hi), Some(lo)) = (hi, lo)
            && hi.1 - lo.1 > 0.0
        {
            f.push(Finding::new(
                "hour_effect",
                format!(
                    "Other things equal, {who} is highest at {:02}:00 and lowest at {:02}:00 (local time), {}{unit} apart.",
                    hi.0,
                    lo.0,
                    fmt_num(hi.1 - lo.1, 2)
                ),
                &[
                    ("peak_hour", hi.0 as f64),
                    ("low_hour", lo.0 as f64),
                    ("difference", hi.1 - lo.1),
                ],
            ));
        }
    }
    f
}
