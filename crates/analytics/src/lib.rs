//! FactoryOps analytics, pure domain (issue 19, ADR 0020): no I/O, no clock, no routes.
//!
//! A run takes a [`Frame`] (from the dataset's Arrow batches), a validated [`RunRequest`]
//! (from the API's JSON), the factory's time zone and a [`Control`] (progress, cancel),
//! and returns a serialisable [`RunResult`]: the analysis output for charts, metrics,
//! plain-language findings and, for trained models, a [`ModelArtifact`] that the live
//! [`Scorer`] can score point by point. The same inputs give byte-identical JSON.

pub mod anomaly;
pub mod baseline;
pub mod changepoint;
pub mod cluster;
pub mod control;
pub mod copilot;
mod error;
pub mod forecast;
pub mod frame;
mod linalg;
pub mod model;
pub mod request;
pub mod result;
mod rng;
pub mod statistics;
mod stats;
pub mod ts;

use chrono_tz::Tz;

pub use control::{Callbacks, Control, NoControl};
pub use error::{AnalysisError, FieldError, FrameError, RequestError};
pub use frame::Frame;
pub use model::{ModelArtifact, Scorer};
pub use request::{Analysis, Goal, RequestKind, RunRequest, parse_request};
pub use result::{Finding, Output, RunResult};

use crate::control::Scoped;
use crate::model::{ARTIFACT_FORMAT, ModelParams};
use crate::result::metrics;

/// Runs one request on one frame. `tz` is the factory's time zone (calendar features,
/// daily profiles, off-hours). Progress goes 0 → 1 through `control`; a cancel stops the
/// run at its next checkpoint with [`AnalysisError::Cancelled`].
pub fn run(frame: &Frame, request: &RunRequest, tz: Tz, control: &dyn Control) -> Result<RunResult, AnalysisError> {
    control.checkpoint(0.0)?;
    let result = match &request.kind {
        RequestKind::Standard { analysis } => standard(frame, request, analysis, tz, control)?,
        RequestKind::Copilot { goal, budget_seconds } => {
            let (target, values) = resolve_target(frame, request.target.as_deref())?;
            let run = copilot::run(frame, target, values, *goal, *budget_seconds, tz, control)?;
            RunResult {
                mode: "copilot",
                analysis: match goal {
                    Goal::Forecast => "forecast",
                    Goal::Anomaly => "anomaly",
                    Goal::Baseline => "baseline",
                },
                target: Some(target.to_string()),
                metrics: run.metrics,
                findings: run.findings,
                output: Output::Copilot(Box::new(run.output)),
                model: Some(run.model),
                notes: run.notes,
            }
        }
    };
    control.checkpoint(1.0)?;
    Ok(result)
}

/// The target column: the one named, or the only column when none is named.
fn resolve_target<'f>(frame: &'f Frame, target: Option<&str>) -> Result<(&'f str, &'f [f64]), AnalysisError> {
    match target {
        Some(t) => frame
            .columns()
            .iter()
            .find(|c| c.name == t)
            .map(|c| (c.name.as_str(), c.values.as_slice()))
            .ok_or_else(|| AnalysisError::UnknownColumn(t.to_string())),
        None => match frame.columns() {
            [only] => Ok((only.name.as_str(), only.values.as_slice())),
            cols => Err(AnalysisError::TargetRequired(cols.len())),
        },
    }
}

fn standard(
    frame: &Frame,
    request: &RunRequest,
    analysis: &Analysis,
    tz: Tz,
    control: &dyn Control,
) -> Result<RunResult, AnalysisError> {
    let mut notes = Vec::new();
    let base = |analysis, target: Option<&str>, output, metrics, findings, model, notes| RunResult {
        mode: "standard",
        analysis,
        target: target.map(str::to_string),
        metrics,
        findings,
        output,
        model,
        notes,
    };
    match analysis {
        Analysis::Statistics => {
            if let Some(t) = request.target.as_deref()
                && frame.column(t).is_none()
            {
                return Err(AnalysisError::UnknownColumn(t.to_string()));
            }
            let out = statistics::run(frame);
            let findings = statistics::findings(frame, &out, tz);
            let m = metrics(&[("rows", frame.len() as f64), ("columns", frame.columns().len() as f64)]);
            Ok(base("statistics", request.target.as_deref(), Output::Statistics(out), m, findings, None, notes))
        }
        Analysis::Anomaly(params) => {
            let (target, values) = resolve_target(frame, request.target.as_deref())?;
            let scored = anomaly::score(frame.ts(), values, params, &Scoped { inner: control, start: 0.0, end: 0.9 })?;
            let out = anomaly::output(frame.ts(), values, &scored, params);
            let mut findings = anomaly::findings(target, &out);
            findings.extend(anomaly::excess_energy(target, values, &scored, params, frame.step_ms().unwrap_or(0)));
            let m = metrics(&[
                ("anomaly_count", out.anomaly_count as f64),
                ("points", out.points_scored as f64),
                ("anomaly_share_pct", 100.0 * out.anomaly_count as f64 / out.points_scored.max(1) as f64),
            ]);
            let mut hp = metrics(&[
                ("threshold", params.threshold),
                ("trees", params.trees as f64),
                ("sample_size", params.sample_size as f64),
                ("seed", params.seed as f64),
            ]);
            if params.method != request::AnomalyMethod::IsolationForest {
                hp.retain(|k, _| k == "threshold");
            }
            let model = ModelArtifact {
                format: ARTIFACT_FORMAT,
                target: target.to_string(),
                step_ms: frame.step_ms().unwrap_or(1),
                trained_until_ms: frame.ts().last().copied().unwrap_or(0),
                features: if params.method == request::AnomalyMethod::IsolationForest {
                    vec![target.to_string(), format!("{target}:change")]
                } else {
                    vec![target.to_string()]
                },
                hyperparameters: hp,
                metrics: m.clone(),
                params: ModelParams::Anomaly { detector: scored.model, threshold: params.threshold },
            };
            Ok(base("anomaly", Some(target), Output::Anomaly(out), m, findings, Some(model), notes))
        }
        Analysis::Forecast(params) => {
            let (target, values) = resolve_target(frame, request.target.as_deref())?;
            let reg = frame::regularize(frame.ts(), values).ok_or_else(|| {
                AnalysisError::InsufficientData(
                    "forecasting needs values on a regular time grid (at least 2 time stamps, gaps ≤ 4× the data)"
                        .into(),
                )
            })?;
            if reg.values.len() < 4 {
                return Err(AnalysisError::InsufficientData(format!(
                    "forecasting needs at least 4 points, the target has {}",
                    reg.values.len()
                )));
            }
            control.checkpoint(0.1)?;
            let periods = match &params.periods {
                Some(p) => p.clone(),
                None => ts::detect_periods(&reg.values, reg.step_ms),
            };
            let horizon = params.horizon.unwrap_or_else(|| forecast::default_horizon(reg.step_ms));
            control.checkpoint(0.3)?;
            let model = forecast::fit_classic(&reg.values, params.method, &periods)
                .ok_or_else(|| AnalysisError::InsufficientData("the model could not be fitted".into()))?;
            control.checkpoint(0.8)?;
            let hold = forecast::holdout_errors(&reg.values, params.method, &periods, horizon);
            let out = forecast::output(&reg, &model, periods.clone(), horizon, params.interval);
            let findings = forecast::findings(target, &reg, &out);
            let m = metrics(&[
                ("sigma", model.sigma()),
                ("holdout_mae", hold.map_or(f64::NAN, |e| e.mae)),
                ("holdout_rmse", hold.map_or(f64::NAN, |e| e.rmse)),
                ("holdout_mape_pct", hold.map_or(f64::NAN, |e| e.mape)),
                ("horizon", horizon as f64),
            ]);
            if reg.filled > 0 {
                notes.push(format!(
                    "{} missing grid points were filled by linear interpolation before fitting.",
                    reg.filled
                ));
            }
            if hold.is_none() {
                notes.push("Too little data for a holdout check (3 horizons needed).".into());
            }
            let model = ModelArtifact {
                format: ARTIFACT_FORMAT,
                target: target.to_string(),
                step_ms: reg.step_ms,
                trained_until_ms: reg.start_ms + (reg.values.len() as i64 - 1) * reg.step_ms,
                features: copilot::artifact_features(&model, target),
                hyperparameters: model.hyperparameters(),
                metrics: m.clone(),
                params: ModelParams::Forecast { model },
            };
            Ok(base("forecast", Some(target), Output::Forecast(out), m, findings, Some(model), notes))
        }
        Analysis::Baseline(params) => {
            let (target, values) = resolve_target(frame, request.target.as_deref())?;
            let drivers = match &params.drivers {
                Some(d) => {
                    for name in d {
                        if frame.column(name).is_none() || name == target {
                            return Err(AnalysisError::UnknownColumn(name.clone()));
                        }
                    }
                    d.clone()
                }
                None => baseline::correlated_columns(frame, target).into_iter().map(|c| c.0).collect(),
            };
            let design = baseline::BaselineDesign { drivers, calendar: params.calendar.clone() };
            let fit = baseline::fit(frame, values, design, tz, 0..frame.len())?;
            control.checkpoint(0.8)?;
            let out = baseline::output(frame, values, &fit, tz);
            let findings = baseline::findings(target, &fit);
            let m = baseline::metrics(&fit);
            let model = ModelArtifact {
                format: ARTIFACT_FORMAT,
                target: target.to_string(),
                step_ms: frame.step_ms().unwrap_or(0),
                trained_until_ms: frame.ts().last().copied().unwrap_or(0),
                features: fit.design.feature_names(),
                hyperparameters: Default::default(),
                metrics: m.clone(),
                params: ModelParams::Baseline {
                    design: fit.design.clone(),
                    coefficients: fit.coefficients.clone(),
                    tz: tz.name().to_string(),
                },
            };
            Ok(base("baseline", Some(target), Output::Baseline(out), m, findings, Some(model), notes))
        }
        Analysis::Clustering(params) => {
            let (target, values) = resolve_target(frame, request.target.as_deref())?;
            let out = cluster::run(frame, values, tz, params.k, params.seed, control)?;
            let findings = cluster::findings(target, &out);
            let m = metrics(&[("k", out.k as f64), ("silhouette", out.silhouette), ("days", out.days.len() as f64)]);
            Ok(base("clustering", Some(target), Output::Clustering(out), m, findings, None, notes))
        }
        Analysis::Changepoints(params) => {
            let (target, values) = resolve_target(frame, request.target.as_deref())?;
            let out = changepoint::run(frame.ts(), values, params, control)?;
            let findings = changepoint::findings(target, &out);
            let m = metrics(&[("changepoints", out.changepoints.len() as f64), ("penalty", out.penalty)]);
            Ok(base("changepoints", Some(target), Output::Changepoints(out), m, findings, None, notes))
        }
    }
}
