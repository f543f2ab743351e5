//! Forecasting: ETS (Holt-Winters, one season), MSTL + ETS (several seasons), seasonal
//! naive, and (co-pilot) a ridge regression on calendar and lag features; prediction
//! intervals from the one-step residual sigma grown with the horizon.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::frame::{self, Regular};
use crate::linalg::{least_squares, normal_quantile};
use crate::request::ForecastMethod;
use crate::result::{Finding, fmt_num, opt, split_name, unit_of};
use crate::stats;
use crate::ts::{self, HwParams, HwState};

/// A fitted forecaster, serialisable as a model artifact's parameters. Steps are counted
/// from the point after the last training observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ForecastModel {
    Ets {
        params: HwParams,
        state: HwState,
        sigma: f64,
    },
    Mstl {
        periods: Vec<usize>,
        profiles: Vec<Vec<f64>>,
        /// Phase of the next point in each period.
        phases: Vec<usize>,
        params: HwParams,
        state: HwState,
        sigma: f64,
    },
    SeasonalNaive {
        period: usize,
        /// The last `period` observations, oldest first.
        last: Vec<f64>,
        sigma: f64,
    },
    Regression(Box<RegressionModel>),
}

/// Ridge regression on calendar dummies (factory time zone) and lags ≥ one season, so a
/// forecast up to one season ahead never needs a value it has not seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionModel {
    pub period: usize,
    pub features: Vec<String>,
    pub coefficients: Vec<f64>,
    pub ridge: f64,
    pub tz: String,
    pub step_ms: i64,
    /// Time stamp of the point after the last training observation.
    pub next_ts: i64,
    /// The last 2 × `period` observations, oldest first (the lags' source).
    pub recent: Vec<f64>,
    pub sigma: f64,
}

impl ForecastModel {
    pub fn family(&self) -> &'static str {
        match self {
            Self::Ets { params, .. } if params.period >= 2 => "holt_winters",
            Self::Ets { .. } => "ets",
            Self::Mstl { .. } => "mstl_ets",
            Self::SeasonalNaive { .. } => "seasonal_naive",
            Self::Regression(_) => "feature_regression",
        }
    }

    pub fn sigma(&self) -> f64 {
        match self {
            Self::Ets { sigma, .. } | Self::Mstl { sigma, .. } | Self::SeasonalNaive { sigma, .. } => *sigma,
            Self::Regression(r) => r.sigma,
        }
    }

    pub fn hyperparameters(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let mut hw = |p: &HwParams| {
            m.insert("alpha".into(), p.alpha);
            m.insert("beta".into(), p.beta);
            m.insert("phi".into(), p.phi);
            m.insert("gamma".into(), p.gamma);
            if p.period >= 2 {
                m.insert("period".into(), p.period as f64);
            }
        };
        match self {
            Self::Ets { params, .. } => hw(params),
            Self::Mstl { params, periods, .. } => {
                hw(params);
                for (i, p) in periods.iter().enumerate() {
                    m.insert(format!("period_{}", i + 1), *p as f64);
                }
            }
            Self::SeasonalNaive { period, .. } => {
                m.insert("period".into(), *period as f64);
            }
            Self::Regression(r) => {
                m.insert("ridge".into(), r.ridge);
                m.insert("period".into(), r.period as f64);
            }
        }
        m
    }

    /// Means and standard deviations for steps 1..=horizon.
    pub fn forecast(&self, horizon: usize) -> Vec<(f64, f64)> {
        match self {
            Self::Ets { params, state, sigma } => {
                state.forecast(params, horizon).into_iter().map(|(m, k)| (m, k * sigma)).collect()
            }
            Self::Mstl { periods, profiles, phases, params, state, sigma } => state
                .forecast(params, horizon)
                .into_iter()
                .enumerate()
                .map(|(h, (m, k))| {
                    let s: f64 =
                        periods.iter().zip(profiles).zip(phases).map(|((p, prof), ph)| prof[(ph + h) % p]).sum();
                    (m + s, k * sigma)
                })
                .collect(),
            Self::SeasonalNaive { period, last, sigma } => (0..horizon)
                .map(|h| {
                    let cycles = (h / period.max(&1)) as f64 + 1.0;
                    (last.get(h % period.max(&1)).copied().unwrap_or(f64::NAN), sigma * cycles.sqrt())
                })
                .collect(),
            Self::Regression(r) => r.forecast(horizon),
        }
    }
}

impl RegressionModel {
    pub fn tz(&self) -> Tz {
        self.tz.parse().unwrap_or(Tz::UTC)
    }

    /// The prediction for the point at `ts` right after `hist` (the newest value last).
    pub fn predict_next(&self, hist: &[f64], ts: i64) -> f64 {
        match regression_row(hist, hist.len(), self.period, ts, self.tz(), &self.features) {
            Some(r) => r.iter().zip(&self.coefficients).map(|(a, b)| a * b).sum(),
            None => f64::NAN,
        }
    }

    fn forecast(&self, horizon: usize) -> Vec<(f64, f64)> {
        let tz = self.tz();
        let mut out = Vec::with_capacity(horizon);
        // History extended with the forecasts themselves past one season (lags need them).
        let mut hist = self.recent.clone();
        for h in 0..horizon {
            let ts = self.next_ts + h as i64 * self.step_ms;
            let row = regression_row(&hist, hist.len(), self.period, ts, tz, &self.features);
            let mean = match row {
                Some(r) => r.iter().zip(&self.coefficients).map(|(a, b)| a * b).sum(),
                None => f64::NAN,
            };
            let cycles = (h / self.period.max(1)) as f64 + 1.0;
            out.push((mean, self.sigma * cycles.sqrt()));
            hist.push(mean);
        }
        out
    }
}

/// Feature names of the co-pilot's regression for a season `period`.
pub fn regression_features(period: usize, with_weekly: bool) -> Vec<String> {
    let mut f = vec!["intercept".to_string()];
    f.extend((1..24).map(|h| format!("hour_{h:02}")));
    f.extend(["tue", "wed", "thu", "fri", "sat", "sun"].iter().map(|d| format!("weekday_{d}")));
    f.push(format!("lag_{period}"));
    f.push(format!("rolling_mean_{period}_lag_{period}"));
    if with_weekly {
        f.push(format!("lag_{}", 7 * period));
    }
    f
}

/// The feature row of the point at index `t` of `hist` (which may be one past its end).
fn regression_row(hist: &[f64], t: usize, period: usize, ts: i64, tz: Tz, features: &[String]) -> Option<Vec<f64>> {
    let weekly = features.len() > 32;
    let need = if weekly { 7 * period } else { 2 * period };
    if t < need || period == 0 {
        return None;
    }
    let c = frame::calendar(ts, tz);
    let mut row = vec![0.0; features.len()];
    row[0] = 1.0;
    if c.hour >= 1 {
        row[c.hour as usize] = 1.0;
    }
    if c.weekday >= 1 {
        row[23 + c.weekday as usize] = 1.0;
    }
    row[30] = hist[t - period];
    let window = &hist[t - 2 * period + 1..=t - period];
    row[31] = window.iter().sum::<f64>() / period as f64;
    if weekly {
        row[32] = hist[t - 7 * period];
    }
    Some(row)
}

/// Fits the regression on a regular series; `with_weekly` adds the one-week lag.
pub fn fit_regression(reg: &Regular, period: usize, ridge: f64, tz: Tz, with_weekly: bool) -> Option<RegressionModel> {
    let features = regression_features(period, with_weekly);
    let k = features.len();
    let y = &reg.values;
    let mut x = Vec::new();
    let mut target = Vec::new();
    for t in 0..y.len() {
        let ts = reg.start_ms + t as i64 * reg.step_ms;
        if let Some(row) = regression_row(y, t, period, ts, tz, &features) {
            x.extend(row);
            target.push(y[t]);
        }
    }
    if target.len() < 2 * k {
        return None;
    }
    let coefficients = least_squares(&x, k, &target, ridge)?;
    let sse: f64 = x
        .chunks_exact(k)
        .zip(&target)
        .map(|(r, yv)| {
            let p: f64 = r.iter().zip(&coefficients).map(|(a, b)| a * b).sum();
            (yv - p) * (yv - p)
        })
        .sum();
    let keep = (2 * period).max(if with_weekly { 7 * period } else { 0 });
    Some(RegressionModel {
        period,
        features,
        coefficients,
        ridge,
        tz: tz.name().to_string(),
        step_ms: reg.step_ms,
        next_ts: reg.start_ms + y.len() as i64 * reg.step_ms,
        recent: y[y.len().saturating_sub(keep)..].to_vec(),
        sigma: (sse / (target.len() - k).max(1) as f64).sqrt(),
    })
}

/// Fits one of the classic families on a regular series. Work ≈ n × grid size.
pub fn fit_classic(y: &[f64], method: ForecastMethod, periods: &[usize]) -> Option<ForecastModel> {
    let usable: Vec<usize> = periods.iter().copied().filter(|&p| p >= 2 && 2 * p <= y.len()).collect();
    let method = match method {
        ForecastMethod::Auto if usable.len() >= 2 => ForecastMethod::Mstl,
        ForecastMethod::Auto => ForecastMethod::Ets,
        m => m,
    };
    match method {
        ForecastMethod::Ets | ForecastMethod::Auto => {
            let fit = ts::hw_fit(y, usable.first().copied().unwrap_or(0))?;
            Some(ForecastModel::Ets { params: fit.params, state: fit.state, sigma: fit.sigma })
        }
        ForecastMethod::Mstl => {
            if usable.is_empty() {
                return fit_classic(y, ForecastMethod::Ets, &[]);
            }
            let d = ts::decompose(y, &usable);
            let adjusted: Vec<f64> = (0..y.len()).map(|t| y[t] - d.seasonal_at(t)).collect();
            let fit = ts::hw_fit(&adjusted, 0)?;
            Some(ForecastModel::Mstl {
                phases: d.periods.iter().map(|p| y.len() % p).collect(),
                periods: d.periods,
                profiles: d.profiles,
                params: fit.params,
                state: fit.state,
                sigma: fit.sigma,
            })
        }
        ForecastMethod::SeasonalNaive => {
            let p = usable.first().copied().unwrap_or(1);
            if y.len() <= p {
                return None;
            }
            let diffs: Vec<f64> = (p..y.len()).map(|t| y[t] - y[t - p]).collect();
            let sigma = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
            Some(ForecastModel::SeasonalNaive { period: p, last: y[y.len() - p..].to_vec(), sigma })
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    pub ts: String,
    pub value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastPoint {
    pub ts: String,
    pub mean: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastOutput {
    pub family: &'static str,
    pub hyperparameters: BTreeMap<String, f64>,
    /// Season lengths in points that were detected (or given).
    pub periods: Vec<usize>,
    pub step_ms: i64,
    pub interval: f64,
    /// The last observations before the forecast (at most 2,000), for the chart.
    pub history: Vec<SeriesPoint>,
    pub forecast: Vec<ForecastPoint>,
}

/// Points of recent history sent along for the chart.
const HISTORY_POINTS: usize = 2000;

pub(crate) fn output(
    reg: &Regular,
    model: &ForecastModel,
    periods: Vec<usize>,
    horizon: usize,
    interval: f64,
) -> ForecastOutput {
    let z = normal_quantile(0.5 + interval / 2.0);
    let n = reg.values.len();
    let history = (n.saturating_sub(HISTORY_POINTS)..n)
        .map(|t| SeriesPoint { ts: frame::fmt_ts(reg.start_ms + t as i64 * reg.step_ms), value: opt(reg.values[t]) })
        .collect();
    let forecast = model
        .forecast(horizon)
        .into_iter()
        .enumerate()
        .map(|(h, (m, sd))| ForecastPoint {
            ts: frame::fmt_ts(reg.start_ms + (n + h) as i64 * reg.step_ms),
            mean: opt(m),
            lower: opt(m - z * sd),
            upper: opt(m + z * sd),
        })
        .collect();
    ForecastOutput {
        family: model.family(),
        hyperparameters: model.hyperparameters(),
        periods,
        step_ms: reg.step_ms,
        interval,
        history,
        forecast,
    }
}

/// One-step in-sample errors of a model family, by refitting is not needed: the ETS
/// families report their sigma; this computes MAE/RMSE over a final holdout instead.
pub(crate) fn holdout_errors(
    y: &[f64],
    method: ForecastMethod,
    periods: &[usize],
    horizon: usize,
) -> Option<stats::Errors> {
    if y.len() < 3 * horizon {
        return None;
    }
    let split = y.len() - horizon;
    let model = fit_classic(&y[..split], method, periods)?;
    let pred: Vec<f64> = model.forecast(horizon).into_iter().map(|p| p.0).collect();
    Some(stats::errors(&y[split..], &pred))
}

pub(crate) fn default_horizon(step_ms: i64) -> usize {
    ((ts::DAY_MS / step_ms.max(1)) as usize).clamp(1, 10_000)
}

pub(crate) fn findings(column: &str, reg: &Regular, out: &ForecastOutput) -> Vec<Finding> {
    let mut f = Vec::new();
    let h = out.forecast.len();
    let n = reg.values.len();
    if h == 0 || n < h {
        return f;
    }
    let means: Vec<f64> = out.forecast.iter().filter_map(|p| p.mean).collect();
    let fmean = stats::mean(&means);
    let recent = stats::mean(&reg.values[n - h..]);
    let hours = h as f64 * reg.step_ms as f64 / 3_600_000.0;
    let unit = unit_of(column);
    let (device, property) = split_name(column);
    let who = if device.is_empty() { property.to_string() } else { format!("{device} {property}") };
    if fmean.is_finite() && recent.is_finite() {
        let change = if recent.abs() > 1e-9 { 100.0 * (fmean - recent) / recent.abs() } else { f64::NAN };
        let text = if change.is_finite() {
            format!(
                "{who} is forecast to average {}{unit} over the next {} h, {}% {} the last {} h ({}{unit}).",
                fmt_num(fmean, 2),
                fmt_num(hours, 1),
                fmt_num(change.abs(), 1),
                if change >= 0.0 { "above" } else { "below" },
                fmt_num(hours, 1),
                fmt_num(recent, 2)
            )
        } else {
            format!("{who} is forecast to average {}{unit} over the next {} h.", fmt_num(fmean, 2), fmt_num(hours, 1))
        };
        f.push(Finding::new(
            "forecast_level",
            text,
            &[("forecast_mean", fmean), ("recent_mean", recent), ("change_pct", change), ("horizon_hours", hours)],
        ));
    }
    if let Some((i, peak)) = out
        .forecast
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.mean.map(|m| (i, m)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    {
        f.push(Finding::new(
            "forecast_peak",
            format!("The highest expected value is {}{unit} at {}.", fmt_num(peak, 2), out.forecast[i].ts),
            &[("peak", peak), ("step", (i + 1) as f64)],
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        let y = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0];
        let m = fit_classic(&y, ForecastMethod::SeasonalNaive, &[3]).expect("model");
        let f: Vec<f64> = m.forecast(4).into_iter().map(|p| p.0).collect();
        assert_eq!(f, vec![1.0, 2.0, 3.0, 1.0]);
        assert_eq!(m.sigma(), 0.0);
    }
}
