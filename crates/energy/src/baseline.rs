//! EnPI baselines in the style of ISO 50001 / ISO 50006: a linear regression of energy on
//! its drivers (production, degree days, operating hours) over a baseline period, its
//! quality (R², CV(RMSE)), and then expected vs actual energy, savings and CUSUM over a
//! reporting period. The least squares fit is `linregress`; the statistics we report are
//! computed here so their definitions are ours and documented.

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::Slot;
use crate::tariff::{day_start_ms, local_time};

/// Heating and cooling degree days of each day from its mean outdoor temperature (°C):
/// `hdd = max(0, base − t)`, `cdd = max(0, t − base)`, one base for both.
pub fn degree_days(daily_mean_temps: &[f64], base_c: f64) -> Vec<(f64, f64)> {
    daily_mean_temps.iter().map(|&t| ((base_c - t).max(0.0), (t - base_c).max(0.0))).collect()
}

/// The time-weighted mean of samples `(ms, value)` per local day, days in order.
///
/// Between two consecutive samples the value is interpolated linearly (trapezoid) and the
/// stretch is cut at local midnights, so each day's mean is its integral over the time it
/// is covered divided by that time. A day with a single sample and no stretch takes that
/// sample. Temperatures change slowly, so long stretches are interpolated too; the caller
/// decides whether a day with little data is usable.
pub fn daily_mean(samples: &[(i64, f64)], tz: Tz) -> Vec<(NaiveDate, f64)> {
    let mut sorted: Vec<(i64, f64)> = samples.iter().copied().filter(|s| s.1.is_finite()).collect();
    sorted.sort_by_key(|s| s.0);
    // Per day: (∫ value dt in value·ms, covered ms, Σ samples, sample count).
    let mut days: std::collections::BTreeMap<NaiveDate, (f64, f64, f64, usize)> = std::collections::BTreeMap::new();
    for &(ms, value) in &sorted {
        let entry = days.entry(local_time(tz, ms).date_naive()).or_insert((0.0, 0.0, 0.0, 0));
        entry.2 += value;
        entry.3 += 1;
    }
    for pair in sorted.windows(2) {
        let ((t1, v1), (t2, v2)) = (pair[0], pair[1]);
        if t2 <= t1 {
            continue;
        }
        let value_at = |t: i64| v1 + (v2 - v1) * (t - t1) as f64 / (t2 - t1) as f64;
        let mut a = t1;
        while a < t2 {
            let date = local_time(tz, a).date_naive();
            let next_midnight = date.succ_opt().map_or(t2, |next| day_start_ms(tz, next));
            let b = next_midnight.min(t2).max(a + 1);
            let entry = days.entry(date).or_insert((0.0, 0.0, 0.0, 0));
            entry.0 += (value_at(a) + value_at(b)) / 2.0 * (b - a) as f64;
            entry.1 += (b - a) as f64;
            a = b;
        }
    }
    days.into_iter()
        .map(|(date, (integral, covered, sum, count))| {
            let mean = if covered > 0.0 { integral / covered } else { sum / count.max(1) as f64 };
            (date, mean)
        })
        .collect()
}

/// Operating hours of a device's slots: a slot counts as a quarter hour of operation when
/// it has energy outside idle (`kwh − idle_kwh > 0`).
pub fn operating_hours(slots: &[Slot]) -> f64 {
    slots.iter().filter(|s| s.kwh - s.idle_kwh > 0.0).count() as f64 * 0.25
}

/// One observation: the energy `y` (e.g. kWh of a day) and its drivers `x`, in the order
/// of the driver names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub y: f64,
    pub x: Vec<f64>,
}

/// A fitted baseline: `expected = intercept + Σ coefficient × driver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub intercept: f64,
    /// (driver name, coefficient), in the order of the drivers.
    pub coefficients: Vec<(String, f64)>,
    /// `1 − SSE / SST` over the baseline rows.
    pub r2: f64,
    /// `sqrt(SSE / (n − p − 1)) / mean(y)`, p = number of drivers (ASHRAE Guideline 14).
    pub cv_rmse: f64,
    /// Rows in the baseline period.
    pub n: usize,
}

impl Model {
    /// The expected energy for the drivers `x` (in the order of the coefficients).
    pub fn expected(&self, x: &[f64]) -> Result<f64, BaselineError> {
        if x.len() != self.coefficients.len() {
            return Err(BaselineError::DriverCount { row: 0, got: x.len(), expected: self.coefficients.len() });
        }
        Ok(self.intercept + self.coefficients.iter().zip(x).map(|((_, c), v)| c * v).sum::<f64>())
    }
}

/// Expected vs actual energy of one reporting row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub expected: f64,
    pub actual: f64,
    /// `expected − actual`: positive = energy saved.
    pub savings: f64,
    /// Running `Σ (actual − expected)` up to and including this row: a falling line
    /// (negative values) = savings accumulating.
    pub cusum: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BaselineError {
    #[error("{rows} rows are too few for {drivers} drivers: at least {needed} are needed (drivers + 2)")]
    TooFewRows { rows: usize, drivers: usize, needed: usize },
    #[error("row {row} has {got} driver values, expected {expected}")]
    DriverCount { row: usize, got: usize, expected: usize },
    #[error("row {row} has a value that is not a finite number")]
    NotFinite { row: usize },
    #[error(
        "driver `{driver}` is constant or a linear combination of the other drivers in the baseline period, so its effect cannot be told apart: drop it or choose a longer period"
    )]
    Singular { driver: String },
    #[error("the energy is the same in every row of the baseline period: there is nothing to explain")]
    ConstantEnergy,
    #[error("the mean energy of the baseline period is not positive, so CV(RMSE) is undefined")]
    NonPositiveMean,
    #[error("the regression failed: {0}")]
    Fit(String),
}

/// Fits `y = intercept + Σ bᵢ·xᵢ` by ordinary least squares over the baseline rows.
///
/// Refuses fewer rows than drivers + 2 (at least one residual degree of freedom for
/// CV(RMSE)), a driver that is constant or collinear with the others (a singular design:
/// the coefficients would be arbitrary), a constant energy (R² undefined) and a mean
/// energy ≤ 0 (CV(RMSE) undefined).
pub fn fit<S: AsRef<str>>(rows: &[Row], driver_names: &[S]) -> Result<Model, BaselineError> {
    let p = driver_names.len();
    let n = rows.len();
    if n < p + 2 {
        return Err(BaselineError::TooFewRows { rows: n, drivers: p, needed: p + 2 });
    }
    for (row, r) in rows.iter().enumerate() {
        if r.x.len() != p {
            return Err(BaselineError::DriverCount { row, got: r.x.len(), expected: p });
        }
        if !r.y.is_finite() || r.x.iter().any(|v| !v.is_finite()) {
            return Err(BaselineError::NotFinite { row });
        }
    }
    if let Some(column) = dependent_column(rows, p) {
        let driver = driver_names.get(column).map(|d| d.as_ref().to_owned()).unwrap_or_default();
        return Err(BaselineError::Singular { driver });
    }
    let mean_y = rows.iter().map(|r| r.y).sum::<f64>() / n as f64;
    let sst: f64 = rows.iter().map(|r| (r.y - mean_y).powi(2)).sum();
    if sst == 0.0 {
        return Err(BaselineError::ConstantEnergy);
    }
    if mean_y <= 0.0 {
        return Err(BaselineError::NonPositiveMean);
    }
    // Row-major [y, 1, x1, …, xp], as linregress's low-level fit expects.
    let mut data = Vec::with_capacity(n * (p + 2));
    for r in rows {
        data.push(r.y);
        data.push(1.0);
        data.extend_from_slice(&r.x);
    }
    // Without statistics: linregress's p-values fail on an exact fit, and we compute the
    // statistics we report ourselves.
    let parameters = linregress::fit_low_level_regression_model_without_statistics(&data, n, p + 2)
        .map_err(|e| BaselineError::Fit(e.to_string()))?;
    let (intercept, slopes) = match parameters.split_first() {
        Some((intercept, slopes)) if slopes.len() == p => (*intercept, slopes),
        _ => return Err(BaselineError::Fit(format!("{} parameters for {p} drivers", parameters.len()))),
    };
    let mut model = Model {
        intercept,
        coefficients: driver_names.iter().map(|d| d.as_ref().to_owned()).zip(slopes.iter().copied()).collect(),
        r2: 0.0,
        cv_rmse: 0.0,
        n,
    };
    let mut sse = 0.0;
    for r in rows {
        sse += (r.y - model.expected(&r.x)?).powi(2);
    }
    model.r2 = 1.0 - sse / sst;
    model.cv_rmse = (sse / (n - p - 1) as f64).sqrt() / mean_y;
    Ok(model)
}

/// The index of the first driver that is (numerically) a linear combination of the
/// intercept and the drivers before it, by modified Gram–Schmidt on the design columns.
fn dependent_column(rows: &[Row], p: usize) -> Option<usize> {
    // Relative to the column's own norm, so scale does not matter.
    const TOLERANCE: f64 = 1e-10;
    let n = rows.len();
    let mut basis: Vec<Vec<f64>> = vec![vec![1.0 / (n as f64).sqrt(); n]];
    for j in 0..p {
        let mut column: Vec<f64> = rows.iter().map(|r| r.x[j]).collect();
        let norm = column.iter().map(|v| v * v).sum::<f64>().sqrt();
        for q in &basis {
            let dot: f64 = q.iter().zip(&column).map(|(a, b)| a * b).sum();
            for (c, qv) in column.iter_mut().zip(q) {
                *c -= dot * qv;
            }
        }
        let rest = column.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 || rest <= TOLERANCE * norm {
            return Some(j);
        }
        basis.push(column.iter().map(|v| v / rest).collect());
    }
    None
}

/// Expected vs actual over reporting rows, with savings and the CUSUM of
/// `actual − expected`.
pub fn evaluate(model: &Model, rows: &[Row]) -> Result<Vec<Point>, BaselineError> {
    let mut cusum = 0.0;
    let mut points = Vec::with_capacity(rows.len());
    for (row, r) in rows.iter().enumerate() {
        let expected = model.expected(&r.x).map_err(|e| match e {
            BaselineError::DriverCount { got, expected, .. } => BaselineError::DriverCount { row, got, expected },
            other => other,
        })?;
        cusum += r.y - expected;
        points.push(Point { expected, actual: r.y, savings: expected - r.y, cusum });
    }
    Ok(points)
}
