//! The co-pilot: for a goal (forecast, anomaly, baseline) and a target it engineers
//! features, evaluates a fixed list of candidate models by expanding-window time-series
//! cross-validation, and returns a leaderboard, the chosen model and why.
//!
//! Deterministic by construction: candidates run in a fixed order, every tie is broken by
//! that order, random parts are seeded, and the time budget is a *work* budget. Each
//! candidate's cost is computed before it runs from the series length and its grid
//! ([`WORK_UNITS_PER_SECOND`] converts `budget_seconds`); a candidate whose cost would
//! exceed what is left is skipped and listed as such. The clock is never read, so the same
//! frame and request give byte-identical results on any machine and under any load.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use serde::Serialize;

use crate::anomaly::{self, AnomalyModel};
use crate::baseline::{self, BaselineDesign};
use crate::control::{Control, Scoped};
use crate::forecast::{self, ForecastModel};
use crate::frame::{self, Frame, Regular};
use crate::model::{ARTIFACT_FORMAT, ModelArtifact, ModelParams, Scorer};
use crate::request::{AnomalyMethod, AnomalyParams, CalendarFeature, ForecastMethod, Goal};
use crate::result::{Finding, Output, fmt_num, metrics as metric_map, unit_of};
use crate::{AnalysisError, stats, ts};

/// Work units (one point through one model configuration) counted as one second. Measured
/// in release on the project's 2-core machine under load (BENCHMARKS.md, "Analytics
/// (issue 19)"): about 1 ns per unit (50.6 M units in 54 ms). 100 million per second keeps
/// a tenfold margin, so a budget in seconds bounds the real time on a busy machine too.
pub const WORK_UNITS_PER_SECOND: u64 = 100_000_000;
/// Cross-validation folds (expanding window).
pub const FOLDS: usize = 3;
/// |score| above which the co-pilot's anomaly model flags a point.
pub const ANOMALY_THRESHOLD: f64 = 3.5;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineeredFeature {
    pub name: String,
    pub kind: &'static str,
    /// Whether a candidate model uses it, and why not when not.
    pub used: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaderboardEntry {
    /// 1 = chosen; none when not evaluated.
    pub rank: Option<usize>,
    pub candidate: String,
    pub family: &'static str,
    pub hyperparameters: BTreeMap<String, f64>,
    /// `evaluated`, `skipped_budget` or `not_applicable`.
    pub status: &'static str,
    /// Cross-validated figures (means over folds).
    pub cv: BTreeMap<String, f64>,
    pub work_units: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Validation {
    pub scheme: &'static str,
    pub folds: usize,
    /// Points (forecast, anomaly) or rows (baseline) in each test window.
    pub test_size: usize,
    /// The figure candidates are ranked by (lower is better).
    pub metric: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopilotOutput {
    pub goal: Goal,
    pub budget_seconds: u32,
    pub budget_work_units: u64,
    pub work_units_used: u64,
    pub validation: Validation,
    pub features: Vec<EngineeredFeature>,
    pub leaderboard: Vec<LeaderboardEntry>,
    pub chosen: String,
    pub explanation: String,
    /// The chosen model's result on the whole dataset, as its standard analysis shows it.
    pub result: Output,
}

/// What a co-pilot run returns to `lib.rs`.
pub(crate) struct CopilotRun {
    pub output: CopilotOutput,
    pub metrics: BTreeMap<String, f64>,
    pub findings: Vec<Finding>,
    pub model: ModelArtifact,
    pub notes: Vec<String>,
}

struct Budget {
    total: u64,
    used: u64,
}

impl Budget {
    fn take(&mut self, cost: u64) -> bool {
        if self.used.saturating_add(cost) > self.total {
            return false;
        }
        self.used += cost;
        true
    }
}

/// Expanding-window folds over `n` points: (train_end, test_end) pairs.
fn folds(n: usize, test: usize) -> Vec<(usize, usize)> {
    (0..FOLDS)
        .rev()
        .filter_map(|k| {
            let test_end = n.checked_sub(k * test)?;
            let train_end = test_end.checked_sub(test)?;
            (train_end >= 2 * test).then_some((train_end, test_end))
        })
        .collect()
}

fn who(column: &str) -> String {
    column.replace('/', " ")
}

pub(crate) fn run(
    frame: &Frame,
    target: &str,
    values: &[f64],
    goal: Goal,
    budget_seconds: u32,
    tz: Tz,
    control: &dyn Control,
) -> Result<CopilotRun, AnalysisError> {
    let budget = Budget { total: u64::from(budget_seconds) * WORK_UNITS_PER_SECOND, used: 0 };
    match goal {
        Goal::Forecast => forecast_goal(frame, target, values, tz, budget, budget_seconds, control),
        Goal::Anomaly => anomaly_goal(frame, target, values, tz, budget, budget_seconds, control),
        Goal::Baseline => baseline_goal(frame, target, values, tz, budget, budget_seconds, control),
    }
}

/// A forecasting candidate: how to fit it on a prefix of the regular series.
#[derive(Clone)]
enum Fc {
    Classic(ForecastMethod, Vec<usize>),
    Regression { period: usize, ridge: f64, weekly: bool },
}

struct Candidate<T> {
    id: String,
    family: &'static str,
    spec: T,
    hyperparameters: BTreeMap<String, f64>,
    /// Work per point of training data.
    unit_cost: u64,
}

fn fit_fc(spec: &Fc, reg: &Regular, end: usize, tz: Tz) -> Option<ForecastModel> {
    let y = &reg.values[..end];
    match spec {
        Fc::Classic(m, p) => forecast::fit_classic(y, *m, p),
        Fc::Regression { period, ridge, weekly } => {
            let sub = Regular { start_ms: reg.start_ms, step_ms: reg.step_ms, values: y.to_vec(), filled: 0 };
            forecast::fit_regression(&sub, *period, *ridge, tz, *weekly).map(|r| ForecastModel::Regression(Box::new(r)))
        }
    }
}

fn season_features(tests: &[ts::SeasonTest]) -> Vec<EngineeredFeature> {
    tests
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = if i == 0 { "daily season" } else { "weekly season (after the daily one is removed)" };
            EngineeredFeature {
                name: format!("season_{}", t.period),
                kind: "seasonality",
                used: t.found,
                detail: if t.acf.is_finite() {
                    format!(
                        "{name} of {} points: autocorrelation {} ({} the {} needed)",
                        t.period,
                        fmt_num(t.acf, 2),
                        if t.found { "reaches" } else { "below" },
                        ts::SEASON_ACF
                    )
                } else {
                    format!("{name} of {} points: not enough data to test (3 seasons needed)", t.period)
                },
            }
        })
        .collect()
}

fn correlated_features(frame: &Frame, target: &str, used: bool, why_not: &str) -> Vec<EngineeredFeature> {
    baseline::correlated_columns(frame, target)
        .into_iter()
        .map(|(name, r)| EngineeredFeature {
            detail: if used {
                format!("correlated with the target, r = {}", fmt_num(r, 2))
            } else {
                format!("correlated with the target, r = {}; {why_not}", fmt_num(r, 2))
            },
            name,
            kind: "correlated_property",
            used,
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn forecast_goal(
    frame: &Frame,
    target: &str,
    values: &[f64],
    tz: Tz,
    mut budget: Budget,
    budget_seconds: u32,
    control: &dyn Control,
) -> Result<CopilotRun, AnalysisError> {
    let reg = frame::regularize(frame.ts(), values)
        .ok_or_else(|| AnalysisError::InsufficientData("the target has no values on a regular time grid".into()))?;
    let n = reg.values.len();
    let horizon = forecast::default_horizon(reg.step_ms).min(n / (FOLDS + 2)).max(1);
    let fold_list = folds(n, horizon);
    if fold_list.is_empty() || n < 10 {
        return Err(AnalysisError::InsufficientData(format!(
            "the co-pilot forecast needs at least {} points for {FOLDS}-fold validation, the target has {n}",
            (FOLDS + 2) * horizon.max(2)
        )));
    }
    let tests = ts::season_tests(&reg.values, reg.step_ms);
    let periods: Vec<usize> = tests.iter().filter(|t| t.found).map(|t| t.period).collect();
    let daily = periods.first().copied();
    let train_points: u64 = fold_list.iter().map(|f| f.0 as u64).sum::<u64>() + n as u64;

    let mut cands: Vec<Candidate<Fc>> = Vec::new();
    let hp = |pairs: &[(&str, f64)]| metric_map(pairs);
    cands.push(Candidate {
        id: format!("seasonal_naive(period={})", daily.unwrap_or(1)),
        family: "seasonal_naive",
        spec: Fc::Classic(ForecastMethod::SeasonalNaive, daily.into_iter().collect()),
        hyperparameters: hp(&[("period", daily.unwrap_or(1) as f64)]),
        unit_cost: 1,
    });
    cands.push(Candidate {
        id: "ets(non-seasonal)".into(),
        family: "ets",
        spec: Fc::Classic(ForecastMethod::Ets, Vec::new()),
        hyperparameters: BTreeMap::new(),
        unit_cost: ts::hw_grid(0).len() as u64,
    });
    if let Some(p) = daily {
        cands.push(Candidate {
            id: format!("holt_winters(period={p})"),
            family: "holt_winters",
            spec: Fc::Classic(ForecastMethod::Ets, vec![p]),
            hyperparameters: hp(&[("period", p as f64)]),
            unit_cost: ts::hw_grid(p).len() as u64,
        });
        cands.push(Candidate {
            id: format!("mstl_ets(periods={})", periods.iter().map(ToString::to_string).collect::<Vec<_>>().join("+")),
            family: "mstl_ets",
            spec: Fc::Classic(ForecastMethod::Mstl, periods.clone()),
            hyperparameters: periods
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("period_{}", i + 1), *p as f64))
                .collect(),
            unit_cost: ts::hw_grid(0).len() as u64 + 8 * periods.len() as u64,
        });
        let k = forecast::regression_features(p, false).len() as u64;
        for ridge in [1.0, 100.0] {
            for weekly in [false, true] {
                cands.push(Candidate {
                    id: format!("feature_regression(ridge={ridge}{})", if weekly { ", weekly lag" } else { "" }),
                    family: "feature_regression",
                    spec: Fc::Regression { period: p, ridge, weekly },
                    hyperparameters: hp(&[
                        ("ridge", ridge),
                        ("period", p as f64),
                        ("weekly_lag", f64::from(u8::from(weekly))),
                    ]),
                    unit_cost: (k + 1) * (k + 1),
                });
            }
        }
    }

    let mut board = Vec::new();
    let mut scored: Vec<(usize, f64)> = Vec::new();
    for (ci, c) in cands.iter().enumerate() {
        control.checkpoint(0.05 + 0.8 * ci as f64 / cands.len() as f64)?;
        let cost = c.unit_cost * train_points;
        let mut entry = LeaderboardEntry {
            rank: None,
            candidate: c.id.clone(),
            family: c.family,
            hyperparameters: c.hyperparameters.clone(),
            status: "evaluated",
            cv: BTreeMap::new(),
            work_units: cost,
            reason: None,
        };
        if !budget.take(cost) {
            entry.status = "skipped_budget";
            entry.reason = Some(format!(
                "needs {} work units, {} left of the budget",
                fmt_num(cost as f64, 0),
                fmt_num((budget.total - budget.used) as f64, 0)
            ));
            board.push(entry);
            continue;
        }
        let mut errs = Vec::new();
        for &(train_end, test_end) in &fold_list {
            let Some(model) = fit_fc(&c.spec, &reg, train_end, tz) else {
                break;
            };
            let pred: Vec<f64> = model.forecast(test_end - train_end).into_iter().map(|p| p.0).collect();
            errs.push(stats::errors(&reg.values[train_end..test_end], &pred));
        }
        if errs.len() < fold_list.len() || errs.iter().any(|e| !e.mae.is_finite()) {
            entry.status = "not_applicable";
            entry.reason = Some("could not be fitted on every training window (too little data)".into());
            board.push(entry);
            continue;
        }
        let mae = errs.iter().map(|e| e.mae).sum::<f64>() / errs.len() as f64;
        let rmse = errs.iter().map(|e| e.rmse).sum::<f64>() / errs.len() as f64;
        let mape = errs.iter().map(|e| e.mape).sum::<f64>() / errs.len() as f64;
        entry.cv = metric_map(&[("mae", mae), ("rmse", rmse), ("mape_pct", mape)]);
        scored.push((board.len(), mae));
        board.push(entry);
    }
    let (ranked, chosen_idx) = rank(&mut board, &mut scored)?;
    let chosen = &cands[cand_index(&cands, &board[chosen_idx].candidate)];
    control.checkpoint(0.9)?;
    let model = fit_fc(&chosen.spec, &reg, n, tz)
        .ok_or_else(|| AnalysisError::InsufficientData("the chosen model could not be refitted".into()))?;
    let out = forecast::output(&reg, &model, periods.clone(), horizon, 0.95);
    let cv = board[chosen_idx].cv.clone();

    let mut features = season_features(&tests);
    if let Some(p) = daily {
        let reg_used = chosen.family == "feature_regression";
        for (name, detail) in [
            ("hour_of_day".to_string(), format!("local hour in {}, 23 dummies", tz.name())),
            ("day_of_week".to_string(), "local weekday, 6 dummies".to_string()),
            (format!("lag_{p}"), "the value one day earlier".to_string()),
            (format!("rolling_mean_{p}_lag_{p}"), "mean of the day before, known a day ahead".to_string()),
            (format!("lag_{}", 7 * p), "the value one week earlier".to_string()),
        ] {
            features.push(EngineeredFeature { name, kind: "regression_feature", used: reg_used, detail });
        }
    }
    features.extend(correlated_features(
        frame,
        target,
        false,
        "not used: its future values are unknown when forecasting",
    ));

    let explanation = explain(
        &format!(
            "Goal: forecast {} {} points ({} h) ahead.",
            who(target),
            horizon,
            fmt_num(horizon as f64 * reg.step_ms as f64 / 3_600_000.0, 1)
        ),
        &periods_text(&periods, reg.step_ms),
        &board,
        &ranked,
        "mean absolute error",
        unit_of(target),
        &budget,
        budget_seconds,
        fold_list.len(),
        horizon,
        "points",
    );
    let unit = unit_of(target);
    let mut findings = vec![Finding::new(
        "copilot_choice",
        format!(
            "Chosen model: {}, cross-validated error {}{unit} (MAE).",
            board[chosen_idx].candidate,
            fmt_num(cv.get("mae").copied().unwrap_or(f64::NAN), 3)
        ),
        &[("cv_mae", cv.get("mae").copied().unwrap_or(f64::NAN))],
    )];
    findings.extend(forecast::findings(target, &reg, &out));
    let mut metrics = cv.iter().map(|(k, v)| (format!("cv_{k}"), *v)).collect::<BTreeMap<_, _>>();
    metrics.insert("sigma".into(), model.sigma());
    metrics.retain(|_, v| v.is_finite());
    let model_artifact = ModelArtifact {
        format: ARTIFACT_FORMAT,
        target: target.to_string(),
        step_ms: reg.step_ms,
        trained_until_ms: reg.start_ms + (n as i64 - 1) * reg.step_ms,
        features: artifact_features(&model, target),
        hyperparameters: model.hyperparameters(),
        metrics: metrics.clone(),
        params: ModelParams::Forecast { model },
    };
    let mut notes = Vec::new();
    if reg.filled > 0 {
        notes.push(format!("{} missing grid points were filled by linear interpolation before fitting.", reg.filled));
    }
    Ok(CopilotRun {
        output: CopilotOutput {
            goal: Goal::Forecast,
            budget_seconds,
            budget_work_units: budget.total,
            work_units_used: budget.used,
            validation: Validation {
                scheme: "expanding_window",
                folds: fold_list.len(),
                test_size: horizon,
                metric: "mae",
            },
            features,
            leaderboard: board,
            chosen: chosen.id.clone(),
            explanation,
            result: Output::Forecast(out),
        },
        metrics,
        findings,
        model: model_artifact,
        notes,
    })
}

pub(crate) fn artifact_features(model: &ForecastModel, target: &str) -> Vec<String> {
    match model {
        ForecastModel::Regression(r) => r.features.clone(),
        ForecastModel::Mstl { periods, .. } => {
            std::iter::once(target.to_string()).chain(periods.iter().map(|p| format!("season_{p}"))).collect()
        }
        ForecastModel::Ets { params, .. } if params.period >= 2 => {
            vec![target.to_string(), format!("season_{}", params.period)]
        }
        _ => vec![target.to_string()],
    }
}

fn cand_index<T>(cands: &[Candidate<T>], id: &str) -> usize {
    cands.iter().position(|c| c.id == id).unwrap_or(0)
}

/// Ranks evaluated entries by their metric (ties: candidate order) and returns the ranked
/// board positions and the winner's position.
fn rank(board: &mut [LeaderboardEntry], scored: &mut [(usize, f64)]) -> Result<(Vec<usize>, usize), AnalysisError> {
    scored.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    for (r, (i, _)) in scored.iter().enumerate() {
        board[*i].rank = Some(r + 1);
    }
    let ranked: Vec<usize> = scored.iter().map(|s| s.0).collect();
    let first = *ranked.first().ok_or_else(|| {
        AnalysisError::InsufficientData("no candidate could be evaluated within the budget and the data".into())
    })?;
    Ok((ranked, first))
}

fn periods_text(periods: &[usize], step_ms: i64) -> String {
    if periods.is_empty() {
        return "No daily or weekly season was found, so seasonal models were not candidates.".into();
    }
    let names: Vec<String> = periods
        .iter()
        .map(|p| {
            let hours = *p as f64 * step_ms as f64 / 3_600_000.0;
            if (hours - 24.0).abs() < 1e-9 {
                format!("a daily season ({p} points)")
            } else if (hours - 168.0).abs() < 1e-9 {
                format!("a weekly season ({p} points)")
            } else {
                format!("a season of {p} points")
            }
        })
        .collect();
    format!("Detected {}.", names.join(" and "))
}

#[allow(clippy::too_many_arguments)]
fn explain(
    goal: &str,
    seasons: &str,
    board: &[LeaderboardEntry],
    ranked: &[usize],
    metric_name: &str,
    unit: &str,
    budget: &Budget,
    budget_seconds: u32,
    folds: usize,
    test: usize,
    test_unit: &str,
) -> String {
    let metric_key = if metric_name.starts_with("mean absolute") { "mae" } else { "cv_rmse_pct" };
    let unit = if metric_key == "mae" { unit } else { "%" };
    let best = &board[ranked[0]];
    let best_v = best.cv.get(metric_key).copied().unwrap_or(f64::NAN);
    let intro = if seasons.is_empty() { goal.to_string() } else { format!("{goal} {seasons}") };
    let mut s = format!(
        "{intro} Compared {} candidate models by expanding-window cross-validation over {folds} folds (each trains on everything before its test window of {test} {test_unit}). ",
        board.iter().filter(|e| e.status == "evaluated").count()
    );
    s.push_str(&format!(
        "Chose {} ({}) because it had the lowest {metric_name}: {}{unit}",
        best.candidate,
        best.family,
        fmt_num(best_v, 3)
    ));
    if let Some(&second) = ranked.get(1) {
        let e = &board[second];
        let v = e.cv.get(metric_key).copied().unwrap_or(f64::NAN);
        if v.is_finite() && v > 0.0 {
            s.push_str(&format!(
                ", {}% lower than the runner-up {} ({}{unit})",
                fmt_num(100.0 * (v - best_v) / v, 1),
                e.candidate,
                fmt_num(v, 3)
            ));
        }
    }
    s.push('.');
    let skipped: Vec<&str> =
        board.iter().filter(|e| e.status == "skipped_budget").map(|e| e.candidate.as_str()).collect();
    if !skipped.is_empty() {
        s.push_str(&format!(
            " Skipped for the budget of {budget_seconds} s ({} work units): {}.",
            fmt_num(budget.total as f64, 0),
            skipped.join(", ")
        ));
    }
    let na: Vec<&str> = board.iter().filter(|e| e.status == "not_applicable").map(|e| e.candidate.as_str()).collect();
    if !na.is_empty() {
        s.push_str(&format!(" Not applicable to this data: {}.", na.join(", ")));
    }
    s
}

/// Anomaly candidates are models of the expected value; each is trained on a prefix and
/// then run as the live scorer would run over the next window, and ranked by the mean
/// absolute deviation of held-out points from what it expected — the tighter, the more
/// sensitive the detector at the same false-alarm rate. The isolation forest has no
/// expected value to validate, so it is not a co-pilot candidate (standard mode has it).
#[allow(clippy::too_many_arguments)]
fn anomaly_goal(
    frame: &Frame,
    target: &str,
    values: &[f64],
    tz: Tz,
    mut budget: Budget,
    budget_seconds: u32,
    control: &dyn Control,
) -> Result<CopilotRun, AnalysisError> {
    let _ = tz;
    let reg = frame::regularize(frame.ts(), values)
        .ok_or_else(|| AnalysisError::InsufficientData("the target has no values on a regular time grid".into()))?;
    let n = reg.values.len();
    let test = (n / (FOLDS + 2)).clamp(1, forecast::default_horizon(reg.step_ms).max(1) * 7);
    let fold_list = folds(n, test);
    if fold_list.is_empty() || n < 10 {
        return Err(AnalysisError::InsufficientData(format!(
            "the co-pilot anomaly model needs at least {} points, the target has {n}",
            10.max((FOLDS + 2) * 2)
        )));
    }
    let tests = ts::season_tests(&reg.values, reg.step_ms);
    let periods: Vec<usize> = tests.iter().filter(|t| t.found).map(|t| t.period).collect();
    let train_points: u64 = fold_list.iter().map(|f| f.0 as u64).sum::<u64>() + n as u64;
    #[derive(Clone)]
    enum An {
        RobustZ,
        Seasonal(Vec<usize>),
        OneStep(usize),
    }
    let mut cands: Vec<Candidate<An>> = vec![Candidate {
        id: "robust_z".into(),
        family: "robust_z",
        spec: An::RobustZ,
        hyperparameters: metric_map(&[("threshold", ANOMALY_THRESHOLD)]),
        unit_cost: 2,
    }];
    if !periods.is_empty() {
        cands.push(Candidate {
            id: format!(
                "seasonal_residual(periods={})",
                periods.iter().map(ToString::to_string).collect::<Vec<_>>().join("+")
            ),
            family: "seasonal_residual",
            spec: An::Seasonal(periods.clone()),
            hyperparameters: metric_map(&[("threshold", ANOMALY_THRESHOLD)]),
            unit_cost: 8 * periods.len() as u64,
        });
    }
    cands.push(Candidate {
        id: "ets_one_step".into(),
        family: "ets",
        spec: An::OneStep(0),
        hyperparameters: metric_map(&[("threshold", ANOMALY_THRESHOLD)]),
        unit_cost: ts::hw_grid(0).len() as u64,
    });
    if let Some(&p) = periods.first() {
        cands.push(Candidate {
            id: format!("holt_winters_one_step(period={p})"),
            family: "holt_winters",
            spec: An::OneStep(p),
            hyperparameters: metric_map(&[("threshold", ANOMALY_THRESHOLD), ("period", p as f64)]),
            unit_cost: ts::hw_grid(p).len() as u64,
        });
    }
    let step = reg.step_ms;
    let ts_of = |t: usize| reg.start_ms + t as i64 * step;
    let build = |spec: &An, end: usize| -> Option<(ModelArtifact, f64)> {
        let y = &reg.values[..end];
        let ts_all: Vec<i64> = (0..end).map(ts_of).collect();
        let (params, scale) = match spec {
            An::RobustZ | An::Seasonal(_) => {
                let p = AnomalyParams {
                    method: if matches!(spec, An::RobustZ) { AnomalyMethod::RobustZ } else { AnomalyMethod::Seasonal },
                    threshold: ANOMALY_THRESHOLD,
                    periods: match spec {
                        An::Seasonal(p) => Some(p.clone()),
                        _ => None,
                    },
                    trees: 0,
                    sample_size: 16,
                    seed: 0,
                };
                let s = anomaly::score(&ts_all, y, &p, &crate::control::NoControl).ok()?;
                let scale = match &s.model {
                    AnomalyModel::RobustZ { scale, .. } | AnomalyModel::Seasonal { scale, .. } => *scale,
                    AnomalyModel::IsolationForest(_) => f64::NAN,
                };
                (ModelParams::Anomaly { detector: s.model, threshold: ANOMALY_THRESHOLD }, scale)
            }
            An::OneStep(p) => {
                let m = forecast::fit_classic(
                    y,
                    ForecastMethod::Ets,
                    &[*p].into_iter().filter(|p| *p >= 2).collect::<Vec<_>>(),
                )?;
                let sigma = m.sigma();
                (ModelParams::Forecast { model: m }, sigma)
            }
        };
        Some((
            ModelArtifact {
                format: ARTIFACT_FORMAT,
                target: target.to_string(),
                step_ms: step,
                trained_until_ms: ts_of(end - 1),
                features: vec![target.to_string()],
                hyperparameters: BTreeMap::new(),
                metrics: BTreeMap::new(),
                params,
            },
            scale,
        ))
    };
    let mut board = Vec::new();
    let mut scored = Vec::new();
    for (ci, c) in cands.iter().enumerate() {
        control.checkpoint(0.05 + 0.8 * ci as f64 / cands.len() as f64)?;
        let cost = c.unit_cost * train_points;
        let mut entry = LeaderboardEntry {
            rank: None,
            candidate: c.id.clone(),
            family: c.family,
            hyperparameters: c.hyperparameters.clone(),
            status: "evaluated",
            cv: BTreeMap::new(),
            work_units: cost,
            reason: None,
        };
        if !budget.take(cost) {
            entry.status = "skipped_budget";
            entry.reason = Some(format!("needs {} work units", fmt_num(cost as f64, 0)));
            board.push(entry);
            continue;
        }
        let mut maes = Vec::new();
        let mut flagged = 0usize;
        let mut tested = 0usize;
        for &(train_end, test_end) in &fold_list {
            let Some((artifact, scale)) = build(&c.spec, train_end) else { break };
            let Ok(mut scorer) = Scorer::new(&artifact) else { break };
            let mut abs = Vec::new();
            for t in train_end..test_end {
                let z = scorer.score(ts_of(t), reg.values[t]);
                if z.is_finite() {
                    abs.push(z.abs() * scale);
                    tested += 1;
                    if z.abs() >= ANOMALY_THRESHOLD {
                        flagged += 1;
                    }
                }
            }
            maes.push(stats::mean(&abs));
        }
        if maes.len() < fold_list.len() || maes.iter().any(|m| !m.is_finite()) {
            entry.status = "not_applicable";
            entry.reason = Some("could not be fitted on every training window".into());
            board.push(entry);
            continue;
        }
        let mae = maes.iter().sum::<f64>() / maes.len() as f64;
        let rate = 100.0 * flagged as f64 / tested.max(1) as f64;
        entry.cv = metric_map(&[("mae", mae), ("flag_rate_pct", rate)]);
        scored.push((board.len(), mae));
        board.push(entry);
    }
    let (ranked, chosen_idx) = rank(&mut board, &mut scored)?;
    let chosen = &cands[cand_index(&cands, &board[chosen_idx].candidate)];
    control.checkpoint(0.9)?;
    // The chosen model on the whole series: its standard output and its artifact.
    let (output, artifact) = match &chosen.spec {
        An::RobustZ | An::Seasonal(_) => {
            let params = AnomalyParams {
                method: if matches!(chosen.spec, An::RobustZ) {
                    AnomalyMethod::RobustZ
                } else {
                    AnomalyMethod::Seasonal
                },
                threshold: ANOMALY_THRESHOLD,
                periods: Some(periods.clone()),
                trees: 0,
                sample_size: 16,
                seed: 0,
            };
            let s = anomaly::score(frame.ts(), values, &params, &Scoped { inner: control, start: 0.9, end: 0.97 })?;
            let out = anomaly::output(frame.ts(), values, &s, &params);
            let artifact = ModelArtifact {
                format: ARTIFACT_FORMAT,
                target: target.to_string(),
                step_ms: step,
                trained_until_ms: frame.ts().last().copied().unwrap_or(0),
                features: vec![target.to_string()],
                hyperparameters: chosen.hyperparameters.clone(),
                metrics: BTreeMap::new(),
                params: ModelParams::Anomaly { detector: s.model.clone(), threshold: ANOMALY_THRESHOLD },
            };
            (out, artifact)
        }
        An::OneStep(p) => {
            let ps: Vec<usize> = [*p].into_iter().filter(|p| *p >= 2).collect();
            let model = forecast::fit_classic(&reg.values, ForecastMethod::Ets, &ps)
                .ok_or_else(|| AnalysisError::InsufficientData("the chosen model could not be refitted".into()))?;
            let out = one_step_output(frame, values, &reg, &model);
            let artifact = ModelArtifact {
                format: ARTIFACT_FORMAT,
                target: target.to_string(),
                step_ms: step,
                trained_until_ms: reg.start_ms + (n as i64 - 1) * step,
                features: artifact_features(&model, target),
                hyperparameters: model.hyperparameters(),
                metrics: BTreeMap::new(),
                params: ModelParams::Forecast { model },
            };
            (out, artifact)
        }
    };
    let cv = board[chosen_idx].cv.clone();
    let mut metrics = cv.iter().map(|(k, v)| (format!("cv_{k}"), *v)).collect::<BTreeMap<_, _>>();
    metrics.insert("anomaly_count".into(), output.anomaly_count as f64);
    metrics.insert("points".into(), output.points_scored as f64);
    let mut artifact = artifact;
    artifact.metrics = metrics.clone();
    let mut features = season_features(&tests);
    features.push(EngineeredFeature {
        name: "change_from_previous".into(),
        kind: "difference",
        used: false,
        detail: "used by the isolation forest of standard mode only".into(),
    });
    features.extend(correlated_features(frame, target, false, "not used: the detectors model the target alone"));
    let explanation = explain(
        &format!("Goal: detect anomalies in {}; a point is flagged at |score| ≥ {ANOMALY_THRESHOLD}.", who(target)),
        &periods_text(&periods, step),
        &board,
        &ranked,
        "mean absolute deviation of held-out points from the expected value",
        unit_of(target),
        &budget,
        budget_seconds,
        fold_list.len(),
        test,
        "points",
    );
    let explanation = format!(
        "{explanation} The isolation forest was not a candidate: it has no expected value to validate on held-out data (it is available in standard mode)."
    );
    let mut findings = vec![Finding::new(
        "copilot_choice",
        format!(
            "Chosen detector: {}, held-out deviation {}{} on average.",
            board[chosen_idx].candidate,
            fmt_num(cv.get("mae").copied().unwrap_or(f64::NAN), 3),
            unit_of(target)
        ),
        &[("cv_mae", cv.get("mae").copied().unwrap_or(f64::NAN))],
    )];
    findings.extend(anomaly::findings(target, &output));
    Ok(CopilotRun {
        output: CopilotOutput {
            goal: Goal::Anomaly,
            budget_seconds,
            budget_work_units: budget.total,
            work_units_used: budget.used,
            validation: Validation {
                scheme: "expanding_window",
                folds: fold_list.len(),
                test_size: test,
                metric: "mae",
            },
            features,
            leaderboard: board,
            chosen: chosen.id.clone(),
            explanation,
            result: Output::Anomaly(output),
        },
        metrics,
        findings,
        model: artifact,
        notes: Vec::new(),
    })
}

/// In-sample one-step scores of an ETS model as an anomaly output.
fn one_step_output(frame: &Frame, values: &[f64], reg: &Regular, model: &ForecastModel) -> anomaly::AnomalyOutput {
    let (params, sigma) = match model {
        ForecastModel::Ets { params, sigma, .. } => (*params, *sigma),
        _ => (ts::HwParams { alpha: 0.5, beta: 0.0, phi: 1.0, gamma: 0.0, period: 0 }, 1.0),
    };
    let mut state_scores = vec![f64::NAN; reg.values.len()];
    let mut expected_grid = vec![f64::NAN; reg.values.len()];
    let burn = if params.period >= 2 { params.period } else { 2 };
    let mut state = ts::HwState::init(&reg.values, &params);
    for (t, &v) in reg.values.iter().enumerate() {
        let p = state.predict(&params);
        expected_grid[t] = p;
        let e = state.update(&params, v);
        if t >= burn {
            state_scores[t] = if sigma > 0.0 { e / sigma } else { 0.0 };
        }
    }
    let slot = |t: i64| (((t - reg.start_ms) as f64 / reg.step_ms as f64).round() as usize).min(reg.values.len() - 1);
    let scores: Vec<f64> = frame
        .ts()
        .iter()
        .zip(values)
        .map(|(t, v)| if v.is_finite() { state_scores[slot(*t)] } else { f64::NAN })
        .collect();
    let expected: Vec<f64> = frame.ts().iter().map(|t| expected_grid[slot(*t)]).collect();
    let scored = anomaly::Scored {
        scores,
        expected: Some(expected),
        periods: if params.period >= 2 { vec![params.period] } else { Vec::new() },
        model: AnomalyModel::RobustZ { median: 0.0, scale: sigma },
    };
    let params = AnomalyParams {
        method: AnomalyMethod::RobustZ,
        threshold: ANOMALY_THRESHOLD,
        periods: None,
        trees: 0,
        sample_size: 16,
        seed: 0,
    };
    anomaly::output(frame.ts(), values, &scored, &params)
}

#[allow(clippy::too_many_arguments)]
fn baseline_goal(
    frame: &Frame,
    target: &str,
    values: &[f64],
    tz: Tz,
    mut budget: Budget,
    budget_seconds: u32,
    control: &dyn Control,
) -> Result<CopilotRun, AnalysisError> {
    let correlated = baseline::correlated_columns(frame, target);
    let drivers: Vec<String> = correlated.iter().map(|c| c.0.clone()).collect();
    let n = frame.len();
    let test = n / (FOLDS + 3);
    let fold_list: Vec<(usize, usize)> = if test == 0 { Vec::new() } else { folds(n, test) };
    if fold_list.is_empty() {
        return Err(AnalysisError::InsufficientData(format!(
            "the co-pilot baseline needs more rows for {FOLDS}-fold validation, the dataset has {n}"
        )));
    }
    let hw = vec![CalendarFeature::Hour, CalendarFeature::Weekday];
    let mut designs: Vec<(String, BaselineDesign)> = vec![
        ("calendar(hour)".into(), BaselineDesign { drivers: vec![], calendar: vec![CalendarFeature::Hour] }),
        ("calendar(hour, weekday)".into(), BaselineDesign { drivers: vec![], calendar: hw.clone() }),
    ];
    if !drivers.is_empty() {
        let d = drivers.join(", ");
        designs.push((format!("drivers({d})"), BaselineDesign { drivers: drivers.clone(), calendar: vec![] }));
        designs.push((
            format!("drivers({d}) + hour"),
            BaselineDesign { drivers: drivers.clone(), calendar: vec![CalendarFeature::Hour] },
        ));
        designs.push((
            format!("drivers({d}) + weekday"),
            BaselineDesign { drivers: drivers.clone(), calendar: vec![CalendarFeature::Weekday] },
        ));
        designs.push((
            format!("drivers({d}) + hour + weekday"),
            BaselineDesign { drivers: drivers.clone(), calendar: hw.clone() },
        ));
        if drivers.len() > 1 {
            designs.push((
                format!("drivers({}) + hour + weekday", drivers[0]),
                BaselineDesign { drivers: vec![drivers[0].clone()], calendar: hw },
            ));
        }
    }
    let train_rows: u64 = fold_list.iter().map(|f| f.0 as u64).sum::<u64>() + n as u64;
    let mut board = Vec::new();
    let mut scored = Vec::new();
    for (ci, (id, design)) in designs.iter().enumerate() {
        control.checkpoint(0.05 + 0.8 * ci as f64 / designs.len() as f64)?;
        let k = design.feature_names().len() as u64;
        let cost = k * k * train_rows;
        let mut entry = LeaderboardEntry {
            rank: None,
            candidate: id.clone(),
            family: "linear_baseline",
            hyperparameters: metric_map(&[("features", k as f64)]),
            status: "evaluated",
            cv: BTreeMap::new(),
            work_units: cost,
            reason: None,
        };
        if !budget.take(cost) {
            entry.status = "skipped_budget";
            entry.reason = Some(format!("needs {} work units", fmt_num(cost as f64, 0)));
            board.push(entry);
            continue;
        }
        let mut cvs = Vec::new();
        let mut r2s = Vec::new();
        for &(train_end, test_end) in &fold_list {
            let Ok(fit) = baseline::fit(frame, values, design.clone(), tz, 0..train_end) else { break };
            let Ok((x, y, _)) = design.matrix(frame, values, tz, train_end..test_end) else { break };
            if y.is_empty() {
                break;
            }
            let pred = baseline::predict_rows(&x, k as usize, &fit.coefficients);
            // Out of sample: degrees of freedom are the test rows themselves.
            let st = baseline::fit_stats(&y, &pred, 0);
            cvs.push(st.cv_rmse);
            r2s.push(st.r2);
        }
        if cvs.len() < fold_list.len() || cvs.iter().any(|v| !v.is_finite()) {
            entry.status = "not_applicable";
            entry.reason = Some("could not be fitted on every training window (too few complete rows)".into());
            board.push(entry);
            continue;
        }
        let cv = cvs.iter().sum::<f64>() / cvs.len() as f64;
        let r2 = r2s.iter().sum::<f64>() / r2s.len() as f64;
        entry.cv = metric_map(&[("cv_rmse_pct", cv), ("r2", r2)]);
        scored.push((board.len(), cv));
        board.push(entry);
    }
    let (ranked, chosen_idx) = rank(&mut board, &mut scored)?;
    let design = designs[designs.iter().position(|d| d.0 == board[chosen_idx].candidate).unwrap_or(0)].1.clone();
    control.checkpoint(0.9)?;
    let fit = baseline::fit(frame, values, design, tz, 0..n)?;
    let out = baseline::output(frame, values, &fit, tz);
    let mut metrics = baseline::metrics(&fit);
    for (k, v) in &board[chosen_idx].cv {
        metrics.insert(format!("cv_{k}"), *v);
    }
    let artifact = ModelArtifact {
        format: ARTIFACT_FORMAT,
        target: target.to_string(),
        step_ms: frame.step_ms().unwrap_or(0),
        trained_until_ms: frame.ts().last().copied().unwrap_or(0),
        features: fit.design.feature_names(),
        hyperparameters: BTreeMap::new(),
        metrics: metrics.clone(),
        params: ModelParams::Baseline {
            design: fit.design.clone(),
            coefficients: fit.coefficients.clone(),
            tz: tz.name().to_string(),
        },
    };
    let mut features = vec![
        EngineeredFeature {
            name: "hour_of_day".into(),
            kind: "calendar",
            used: fit.design.calendar.contains(&CalendarFeature::Hour),
            detail: format!("local hour in {}, 23 dummies", tz.name()),
        },
        EngineeredFeature {
            name: "day_of_week".into(),
            kind: "calendar",
            used: fit.design.calendar.contains(&CalendarFeature::Weekday),
            detail: "local weekday, 6 dummies (no holiday calendar)".into(),
        },
    ];
    features.extend(correlated.iter().map(|(name, r)| EngineeredFeature {
        name: name.clone(),
        kind: "correlated_property",
        used: fit.design.drivers.contains(name),
        detail: format!("correlated with the target, r = {}", fmt_num(*r, 2)),
    }));
    let explanation = explain(
        &format!(
            "Goal: a baseline of {} from drivers and the calendar. Candidate drivers are the other properties correlated with it (|r| ≥ 0.3, at most 5): {}.",
            who(target),
            if drivers.is_empty() { "none".to_string() } else { drivers.join(", ") }
        ),
        "",
        &board,
        &ranked,
        "out-of-sample CV(RMSE)",
        "",
        &budget,
        budget_seconds,
        fold_list.len(),
        test,
        "rows",
    );
    let mut findings = vec![Finding::new(
        "copilot_choice",
        format!(
            "Chosen baseline: {}, out-of-sample CV(RMSE) {}%.",
            board[chosen_idx].candidate,
            fmt_num(board[chosen_idx].cv.get("cv_rmse_pct").copied().unwrap_or(f64::NAN), 1)
        ),
        &[("cv_rmse_pct", board[chosen_idx].cv.get("cv_rmse_pct").copied().unwrap_or(f64::NAN))],
    )];
    findings.extend(baseline::findings(target, &fit));
    Ok(CopilotRun {
        output: CopilotOutput {
            goal: Goal::Baseline,
            budget_seconds,
            budget_work_units: budget.total,
            work_units_used: budget.used,
            validation: Validation {
                scheme: "expanding_window",
                folds: fold_list.len(),
                test_size: test,
                metric: "cv_rmse_pct",
            },
            features,
            leaderboard: board,
            chosen: board_id(&designs, &fit.design),
            explanation,
            result: Output::Baseline(out),
        },
        metrics,
        findings,
        model: artifact,
        notes: Vec::new(),
    })
}

fn board_id(designs: &[(String, BaselineDesign)], d: &BaselineDesign) -> String {
    designs.iter().find(|x| &x.1 == d).map(|x| x.0.clone()).unwrap_or_default()
}
