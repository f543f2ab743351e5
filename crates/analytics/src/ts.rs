//! Time-series building blocks on a regular grid: additive Holt-Winters / ETS(A,Ad,A)
//! fitted by a fixed parameter grid, an MSTL-style decomposition (moving-average trend,
//! per-phase median seasonal profiles, iterated over several periods), calendar
//! seasonality detection and the forecasting models built from them.
//!
//! Every routine is deterministic (fixed grids, no random starts) and its work is a
//! known function of the series length, which the co-pilot's budget relies on.

use serde::{Deserialize, Serialize};

use crate::stats;

pub const DAY_MS: i64 = 86_400_000;

/// Smoothing parameters of ETS(A,Ad,A) in error-correction form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HwParams {
    pub alpha: f64,
    /// 0 = no trend.
    pub beta: f64,
    /// Trend damping, 1 = undamped.
    pub phi: f64,
    /// 0 = no season.
    pub gamma: f64,
    /// Season length in points (0 = none).
    pub period: usize,
}

/// The state after the last observation; `pos` is the season slot of the next point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HwState {
    pub level: f64,
    pub trend: f64,
    pub season: Vec<f64>,
    pub pos: usize,
}

impl HwState {
    /// The starting state the fit uses: the first season's mean and offsets.
    pub fn init(y: &[f64], p: &HwParams) -> Self {
        let m = p.period;
        if m >= 2 && y.len() >= 2 * m {
            let first = stats::mean(&y[..m]);
            let second = stats::mean(&y[m..2 * m]);
            Self {
                level: first,
                trend: if p.beta > 0.0 { (second - first) / m as f64 } else { 0.0 },
                season: y[..m].iter().map(|v| v - first).collect(),
                pos: 0,
            }
        } else {
            let k = y.len().min(10);
            let trend = if p.beta > 0.0 && k >= 2 { (y[k - 1] - y[0]) / (k - 1) as f64 } else { 0.0 };
            Self { level: y.first().copied().unwrap_or(0.0), trend, season: Vec::new(), pos: 0 }
        }
    }

    /// The one-step forecast for the next point.
    pub fn predict(&self, p: &HwParams) -> f64 {
        self.level + p.phi * self.trend + self.season.get(self.pos).copied().unwrap_or(0.0)
    }

    /// Takes one observation; returns its one-step error.
    pub fn update(&mut self, p: &HwParams, y: f64) -> f64 {
        let e = y - self.predict(p);
        self.level += p.phi * self.trend + p.alpha * e;
        self.trend = p.phi * self.trend + p.beta * e;
        if let Some(s) = self.season.get_mut(self.pos) {
            *s += p.gamma * e;
        }
        self.advance_slot();
        e
    }

    /// Moves over a point with no observation (its forecast is taken as observed).
    pub fn skip(&mut self, p: &HwParams) {
        self.level += p.phi * self.trend;
        self.trend *= p.phi;
        self.advance_slot();
    }

    fn advance_slot(&mut self) {
        if !self.season.is_empty() {
            self.pos = (self.pos + 1) % self.season.len();
        }
    }

    /// Mean and the standard deviation multiplier for h = 1..=horizon.
    pub fn forecast(&self, p: &HwParams, horizon: usize) -> Vec<(f64, f64)> {
        let m = self.season.len();
        let mut out = Vec::with_capacity(horizon);
        let (mut phi_sum, mut phi_pow) = (0.0, 1.0);
        let mut var: f64 = 1.0;
        for h in 1..=horizon {
            phi_pow *= p.phi;
            phi_sum += phi_pow;
            let s = if m > 0 { self.season[(self.pos + h - 1) % m] } else { 0.0 };
            out.push((self.level + phi_sum * self.trend + s, var.sqrt()));
            // c_j for the next step: α + βφ_j + γ·[j mod m = 0] (Hyndman et al., ETS(A,Ad,A)).
            let season_hit = if m > 0 && h % m == 0 { p.gamma } else { 0.0 };
            let c = p.alpha + p.beta * phi_sum + season_hit;
            var += c * c;
        }
        out
    }
}

/// A fitted ETS: parameters, end state, residual sigma, in-sample one-step errors.
#[derive(Debug, Clone, PartialEq)]
pub struct HwFit {
    pub params: HwParams,
    pub state: HwState,
    pub sigma: f64,
    pub aic: f64,
}

const ALPHAS: [f64; 7] = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9];
const BETAS: [f64; 3] = [0.01, 0.05, 0.1];
const PHIS: [f64; 2] = [0.9, 0.98];
const GAMMAS: [f64; 4] = [0.05, 0.1, 0.2, 0.3];

/// The parameter grid searched for a season length (0 = non-seasonal), trend and none.
pub fn hw_grid(period: usize) -> Vec<HwParams> {
    let mut out = Vec::new();
    let gammas: &[f64] = if period >= 2 { &GAMMAS } else { &[0.0] };
    for &alpha in &ALPHAS {
        for &gamma in gammas {
            if gamma > 1.0 - alpha {
                continue;
            }
            out.push(HwParams { alpha, beta: 0.0, phi: 1.0, gamma, period });
            for &beta in &BETAS {
                if beta > alpha {
                    continue;
                }
                for &phi in &PHIS {
                    out.push(HwParams { alpha, beta, phi, gamma, period });
                }
            }
        }
    }
    out
}

/// Runs one parameter set over `y`; errors of the first season (or 2 points) are burn-in.
pub fn hw_run(y: &[f64], p: &HwParams) -> (HwState, f64, usize) {
    let mut state = HwState::init(y, p);
    let burn = if p.period >= 2 { p.period } else { 2 };
    let (mut sse, mut n) = (0.0, 0usize);
    for (t, &v) in y.iter().enumerate() {
        let e = state.update(p, v);
        if t >= burn {
            sse += e * e;
            n += 1;
        }
    }
    (state, sse, n)
}

/// Fits ETS by the fixed grid, keeping the lowest AIC. Work: `y.len() × hw_grid(period).len()`.
pub fn hw_fit(y: &[f64], period: usize) -> Option<HwFit> {
    let period = if period >= 2 && y.len() >= 2 * period { period } else { 0 };
    let mut best: Option<HwFit> = None;
    for p in hw_grid(period) {
        let (state, sse, n) = hw_run(y, &p);
        if n < 2 || !sse.is_finite() {
            continue;
        }
        let k = 1.0 + f64::from(u8::from(p.beta > 0.0)) * 2.0 + f64::from(u8::from(p.gamma > 0.0));
        let mse = (sse / n as f64).max(1e-300);
        let aic = n as f64 * mse.ln() + 2.0 * k;
        if best.as_ref().is_none_or(|b| aic < b.aic) {
            best = Some(HwFit { params: p, state, sigma: mse.sqrt(), aic });
        }
    }
    best
}

/// Centred moving average over one season (2×p for even p), truncated at the edges.
pub fn moving_average(y: &[f64], p: usize) -> Vec<f64> {
    let n = y.len();
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for &v in y {
        let last = prefix.last().copied().unwrap_or(0.0);
        prefix.push(last + v);
    }
    let h = p / 2;
    let even = p.is_multiple_of(2) && p > 0;
    (0..n)
        .map(|t| {
            let lo = t.saturating_sub(h);
            let hi = (t + h).min(n - 1);
            let mut sum = prefix[hi + 1] - prefix[lo];
            let mut w = (hi - lo + 1) as f64;
            if even {
                if t >= h {
                    sum -= 0.5 * y[t - h];
                    w -= 0.5;
                }
                if t + h < n {
                    sum -= 0.5 * y[t + h];
                    w -= 0.5;
                }
            }
            sum / w
        })
        .collect()
}

/// Seasonal profiles (one per period, centred on 0), the trend and the remainder.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    pub periods: Vec<usize>,
    pub profiles: Vec<Vec<f64>>,
    pub trend: Vec<f64>,
    pub remainder: Vec<f64>,
}

impl Decomposition {
    pub fn seasonal_at(&self, t: usize) -> f64 {
        self.periods.iter().zip(&self.profiles).map(|(p, prof)| prof[t % p]).sum()
    }
}

/// MSTL-style decomposition; `periods` ascending, each ≥ 2 and ≤ n/2 (others are dropped).
/// Profiles are per-phase medians of the detrended series (robust to the anomalies we look
/// for), refined over two passes as MSTL does with STL.
pub fn decompose(y: &[f64], periods: &[usize]) -> Decomposition {
    let n = y.len();
    let periods: Vec<usize> = periods.iter().copied().filter(|&p| p >= 2 && p * 2 <= n).collect();
    let mut profiles: Vec<Vec<f64>> = periods.iter().map(|&p| vec![0.0; p]).collect();
    let mut work = vec![0.0; n];
    for _pass in 0..2 {
        for k in 0..periods.len() {
            let p = periods[k];
            for (t, w) in work.iter_mut().enumerate() {
                let others: f64 = periods
                    .iter()
                    .zip(&profiles)
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .map(|(_, (q, prof))| prof[t % q])
                    .sum();
                *w = y[t] - others;
            }
            let trend = moving_average(&work, p);
            let mut buckets: Vec<Vec<f64>> = (0..p).map(|_| Vec::with_capacity(n / p + 1)).collect();
            for t in 0..n {
                buckets[t % p].push(work[t] - trend[t]);
            }
            let mut prof: Vec<f64> = buckets.iter_mut().map(|b| stats::median_in_place(b)).collect();
            let m = prof.iter().sum::<f64>() / p as f64;
            prof.iter_mut().for_each(|v| *v -= m);
            profiles[k] = prof;
        }
    }
    let adjusted: Vec<f64> =
        (0..n).map(|t| y[t] - periods.iter().zip(&profiles).map(|(p, prof)| prof[t % p]).sum::<f64>()).collect();
    let window = periods.last().copied().unwrap_or(0);
    let trend = if window >= 2 { moving_average(&adjusted, window) } else { adjusted.clone() };
    let remainder = adjusted.iter().zip(&trend).map(|(a, t)| a - t).collect();
    Decomposition { periods, profiles, trend, remainder }
}

/// Autocorrelation at `lag` after removing a moving-average trend of the same length.
pub fn seasonal_acf(y: &[f64], lag: usize) -> f64 {
    if lag == 0 || y.len() < 2 * lag + 2 {
        return f64::NAN;
    }
    let trend = moving_average(y, lag);
    let d: Vec<f64> = y.iter().zip(&trend).map(|(a, b)| a - b).collect();
    let m = d.iter().sum::<f64>() / d.len() as f64;
    let var: f64 = d.iter().map(|v| (v - m) * (v - m)).sum();
    if var <= 1e-12 * d.len() as f64 {
        return f64::NAN;
    }
    let cov: f64 = (lag..d.len()).map(|t| (d[t] - m) * (d[t - lag] - m)).sum();
    cov / var
}

/// Autocorrelation above which a calendar season counts as present.
pub const SEASON_ACF: f64 = 0.3;

/// One calendar season tested on a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeasonTest {
    pub period: usize,
    /// Detrended autocorrelation at the period (NaN when the series is too short).
    pub acf: f64,
    pub found: bool,
}

/// Daily and weekly seasons in points, kept when the series is long enough (3 days /
/// 3 weeks) and the detrended autocorrelation at that lag is ≥ 0.3; the weekly one is
/// tested after the daily profile is removed, since every weekly lag is also a daily one.
pub fn season_tests(y: &[f64], step_ms: i64) -> Vec<SeasonTest> {
    let mut out = Vec::new();
    if step_ms <= 0 || DAY_MS % step_ms != 0 {
        return out;
    }
    let daily = (DAY_MS / step_ms) as usize;
    if daily < 2 {
        return out;
    }
    let acf = if y.len() >= 3 * daily { seasonal_acf(y, daily) } else { f64::NAN };
    let daily_found = acf >= SEASON_ACF;
    out.push(SeasonTest { period: daily, acf, found: daily_found });
    let weekly = 7 * daily;
    let acf = if y.len() >= 3 * weekly {
        if daily_found {
            let d = decompose(y, &[daily]);
            let rest: Vec<f64> = (0..y.len()).map(|t| y[t] - d.seasonal_at(t)).collect();
            seasonal_acf(&rest, weekly)
        } else {
            seasonal_acf(y, weekly)
        }
    } else {
        f64::NAN
    };
    out.push(SeasonTest { period: weekly, acf, found: acf >= SEASON_ACF });
    out
}

/// The periods [`season_tests`] found, ascending.
pub fn detect_periods(y: &[f64], step_ms: i64) -> Vec<usize> {
    season_tests(y, step_ms).into_iter().filter(|t| t.found).map(|t| t.period).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_of_a_line_is_the_line() {
        let y: Vec<f64> = (0..20).map(f64::from).collect();
        let ma = moving_average(&y, 4);
        for (t, v) in ma.iter().enumerate().skip(2).take(15) {
            assert!((v - t as f64).abs() < 1e-12);
        }
    }

    #[test]
    fn holt_winters_follows_a_pure_season() {
        let y: Vec<f64> = (0..96).map(|t| 10.0 + [0.0, 5.0, 0.0, -5.0][t % 4]).collect();
        let fit = hw_fit(&y, 4).expect("fit");
        let f = fit.state.forecast(&fit.params, 4);
        for (h, (m, _)) in f.iter().enumerate() {
            assert!((m - (10.0 + [0.0, 5.0, 0.0, -5.0][(96 + h) % 4])).abs() < 1e-6);
        }
    }

    #[test]
    fn detects_the_daily_season() {
        let y: Vec<f64> = (0..24 * 14).map(|t| (t as f64 * std::f64::consts::TAU / 24.0).sin()).collect();
        assert_eq!(detect_periods(&y, 3_600_000), vec![24]);
    }
}
