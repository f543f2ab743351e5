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
    #[error(
        "at least one driver is needed: without drivers the regression has only an intercept, the mean energy, which explains nothing (add production, degree days or operating hours)"
    )]
    NoDrivers,
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
    if p == 0 {
        return Err(BaselineError::NoDrivers);
    }
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use chrono_tz::Europe::Berlin;

    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() < tolerance
    }

    #[test]
    fn degree_days_around_the_base() {
        // base 18 °C: 10 °C → 8 heating; 18 °C → none; 25 °C → 7 cooling
        assert_eq!(degree_days(&[10.0, 18.0, 25.0], 18.0), vec![(8.0, 0.0), (0.0, 0.0), (0.0, 7.0)]);
    }

    #[test]
    fn daily_means_are_time_weighted_per_local_day() {
        let ms = |d: u32, h: u32| Berlin.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap().timestamp_millis();
        let samples = [(ms(2, 18), 12.0), (ms(2, 6), 0.0), (ms(3, 6), 0.0)];
        // 11-02: 06–18 rises 0 → 12 (mean 6, 12 h: ∫ = 72); 18–24 falls 12 → 6 at midnight
        // (mean 9, 6 h: ∫ = 54) → 126 / 18 h = 7.0.
        // 11-03: 00–06 falls 6 → 0 (mean 3).
        let means = daily_mean(&samples, Berlin);
        let date = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        assert_eq!(means.len(), 2);
        assert_eq!(means[0].0, date(2));
        assert!(close(means[0].1, 7.0, 1e-9));
        assert_eq!(means[1].0, date(3));
        assert!(close(means[1].1, 3.0, 1e-9));
        // A lone sample is its day's mean.
        assert_eq!(daily_mean(&[(ms(5, 12), 4.5)], Berlin), vec![(date(5), 4.5)]);
    }

    #[test]
    fn operating_hours_count_quarter_hours_with_energy_outside_idle() {
        let slot = |kwh: f64, idle_kwh: f64| Slot { start_ms: 0, kwh, idle_kwh, covered_ms: 0 };
        // Two running quarter hours = 0.5 h; an all-idle one and an empty one do not count.
        assert_eq!(operating_hours(&[slot(2.0, 0.5), slot(1.0, 0.0), slot(0.3, 0.3), slot(0.0, 0.0)]), 0.5);
    }

    /// No drivers leave only the intercept: refused with a reason, not linregress's error.
    #[test]
    fn a_fit_without_drivers_is_refused() {
        let rows: Vec<Row> = [100.0, 120.0, 90.0].iter().map(|&y| Row { y, x: Vec::new() }).collect();
        assert_eq!(fit::<&str>(&rows, &[]), Err(BaselineError::NoDrivers));
    }

    #[test]
    fn the_regression_recovers_known_coefficients() {
        // y = 100 + 2·x1 + 0.5·x2 exactly.
        let x1 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let x2 = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        let rows: Vec<Row> =
            x1.iter().zip(x2).map(|(&a, b)| Row { y: 100.0 + 2.0 * a + 0.5 * b, x: vec![a, b] }).collect();
        let model = fit(&rows, &["production", "hdd"]).unwrap();
        assert!(close(model.intercept, 100.0, 1e-9));
        assert_eq!(model.coefficients[0].0, "production");
        assert!(close(model.coefficients[0].1, 2.0, 1e-9));
        assert_eq!(model.coefficients[1].0, "hdd");
        assert!(close(model.coefficients[1].1, 0.5, 1e-9));
        assert!(close(model.r2, 1.0, 1e-12));
        assert!(close(model.cv_rmse, 0.0, 1e-9));
        assert_eq!(model.n, 8);
    }

    #[test]
    fn r2_and_cv_rmse_of_noisy_data() {
        // x = 1, 2, 3, 4; y = 3, 5, 4, 8. mean x = 2.5, mean y = 5.
        // Sxx = 2.25 + 0.25 + 0.25 + 2.25 = 5; Sxy = (−1.5)(−2) + (−0.5)(0) + (0.5)(−1) + (1.5)(3) = 7
        // b = 7 / 5 = 1.4; a = 5 − 1.4 · 2.5 = 1.5
        // ŷ = 2.9, 4.3, 5.7, 7.1; residuals 0.1, 0.7, −1.7, 0.9
        // SSE = 0.01 + 0.49 + 2.89 + 0.81 = 4.2; SST = 4 + 0 + 1 + 9 = 14
        // R² = 1 − 4.2 / 14 = 0.7; CV(RMSE) = sqrt(4.2 / (4 − 1 − 1)) / 5 = sqrt(2.1) / 5
        let rows: Vec<Row> =
            [(1.0, 3.0), (2.0, 5.0), (3.0, 4.0), (4.0, 8.0)].iter().map(|&(x, y)| Row { y, x: vec![x] }).collect();
        let model = fit(&rows, &["x"]).unwrap();
        assert!(close(model.intercept, 1.5, 1e-9));
        assert!(close(model.coefficients[0].1, 1.4, 1e-9));
        assert!(close(model.r2, 0.7, 1e-9));
        assert!(close(model.cv_rmse, 2.1f64.sqrt() / 5.0, 1e-9));
        assert!(close(model.cv_rmse, 0.289_827_534_923_788_9, 1e-9));
    }

    #[test]
    fn unusable_baselines_are_refused() {
        let row = |y: f64, x: &[f64]| Row { y, x: x.to_vec() };
        // 2 drivers need 4 rows.
        let three = [row(1.0, &[1.0, 2.0]), row(2.0, &[2.0, 1.0]), row(3.0, &[3.0, 5.0])];
        assert_eq!(fit(&three, &["a", "b"]), Err(BaselineError::TooFewRows { rows: 3, drivers: 2, needed: 4 }));
        // b = 2·a: collinear.
        let collinear: Vec<Row> = (1..=6).map(f64::from).map(|a| row(a * a, &[a, 2.0 * a])).collect();
        assert_eq!(fit(&collinear, &["a", "b"]), Err(BaselineError::Singular { driver: "b".into() }));
        // A constant driver is collinear with the intercept.
        let constant: Vec<Row> = (1..=6).map(f64::from).map(|a| row(a * a, &[7.0, a])).collect();
        assert_eq!(fit(&constant, &["shifts", "a"]), Err(BaselineError::Singular { driver: "shifts".into() }));
        let flat: Vec<Row> = (1..=6).map(|i| row(5.0, &[f64::from(i)])).collect();
        assert_eq!(fit(&flat, &["a"]), Err(BaselineError::ConstantEnergy));
        let ragged = [row(1.0, &[1.0]), row(2.0, &[2.0, 3.0]), row(3.0, &[3.0])];
        assert_eq!(fit(&ragged, &["a"]), Err(BaselineError::DriverCount { row: 1, got: 2, expected: 1 }));
        let nan = [row(1.0, &[1.0]), row(f64::NAN, &[2.0]), row(3.0, &[3.0])];
        assert_eq!(fit(&nan, &["a"]), Err(BaselineError::NotFinite { row: 1 }));
    }

    #[test]
    fn cusum_of_a_step_change() {
        // Baseline: days 1–10, energy = 100 + 2 · production exactly.
        let production = |day: u32| f64::from(10 + (day * 7) % 5);
        let expected = |day: u32| 100.0 + 2.0 * production(day);
        let baseline: Vec<Row> = (1..=10).map(|d| Row { y: expected(d), x: vec![production(d)] }).collect();
        let model = fit(&baseline, &["production"]).unwrap();
        // Reporting: days 1–20; from day 11 the actual energy drops by 10 a day.
        let reporting: Vec<Row> = (1..=20)
            .map(|d| Row { y: expected(d) - if d >= 11 { 10.0 } else { 0.0 }, x: vec![production(d)] })
            .collect();
        let points = evaluate(&model, &reporting).unwrap();
        for (i, point) in points.iter().enumerate() {
            let day = i as u32 + 1;
            // cusum: 0 for days 1–10, then −10, −20, … −100 on day 20; savings 0 then 10.
            let cusum = if day <= 10 { 0.0 } else { -10.0 * f64::from(day - 10) };
            let savings = if day <= 10 { 0.0 } else { 10.0 };
            assert!(close(point.expected, expected(day), 1e-9), "day {day}");
            assert_eq!(point.actual, reporting[i].y, "day {day}");
            assert!(close(point.cusum, cusum, 1e-8), "day {day}: {}", point.cusum);
            assert!(close(point.savings, savings, 1e-9), "day {day}");
        }
        let wrong = [Row { y: 1.0, x: vec![] }];
        assert_eq!(evaluate(&model, &wrong), Err(BaselineError::DriverCount { row: 0, got: 0, expected: 1 }));
    }
}
