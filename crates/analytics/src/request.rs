//! Run requests as API.md has them, parsed from JSON with every bad field reported
//! (path + message) and unknown fields refused:
//! `{mode: "standard", analysis, dataset_id?, target?, hyperparameters?}` or
//! `{mode: "copilot", goal, dataset_id?, target?, budget_seconds?}`.
//! `dataset_id` is carried for the route (which requires it); this crate never reads it.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{FieldError, RequestError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(flatten)]
    pub kind: RequestKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RequestKind {
    Standard {
        #[serde(flatten)]
        analysis: Analysis,
    },
    Copilot {
        goal: Goal,
        budget_seconds: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "analysis", content = "hyperparameters", rename_all = "snake_case")]
pub enum Analysis {
    Anomaly(AnomalyParams),
    Forecast(ForecastParams),
    Baseline(BaselineParams),
    Clustering(ClusteringParams),
    Changepoints(ChangepointParams),
    Statistics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    Forecast,
    Anomaly,
    Baseline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyMethod {
    RobustZ,
    Seasonal,
    IsolationForest,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyParams {
    pub method: AnomalyMethod,
    /// |robust z| above which a point is flagged; for the isolation forest the score (0.5–1).
    pub threshold: f64,
    /// Season lengths in points for `seasonal`; detected (daily, weekly) when absent.
    pub periods: Option<Vec<usize>>,
    pub trees: usize,
    pub sample_size: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastMethod {
    Auto,
    Ets,
    Mstl,
    SeasonalNaive,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastParams {
    pub method: ForecastMethod,
    /// Points ahead; one day of points when absent.
    pub horizon: Option<usize>,
    /// Coverage of the prediction interval, e.g. 0.95.
    pub interval: f64,
    pub periods: Option<Vec<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalendarFeature {
    Hour,
    Weekday,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineParams {
    /// Driver columns; the columns correlated with the target (|r| ≥ 0.3, at most 5) when absent.
    pub drivers: Option<Vec<String>>,
    pub calendar: Vec<CalendarFeature>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusteringParams {
    /// Number of clusters; chosen by silhouette over 2–8 when absent.
    pub k: Option<usize>,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCost {
    Mean,
    MeanVar,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangepointParams {
    pub cost: ChangeCost,
    /// PELT penalty; 3·ln(n) on the noise-normalised cost when absent.
    pub penalty: Option<f64>,
    pub min_size: usize,
}

pub const DEFAULT_BUDGET_SECONDS: u32 = 60;
pub const MAX_BUDGET_SECONDS: u32 = 3600;

/// Parses a request body (already JSON) into a [`RunRequest`].
pub fn parse_request(value: &Value) -> Result<RunRequest, RequestError> {
    let mut errs = Vec::new();
    let Some(map) = value.as_object() else {
        return Err(RequestError {
            errors: vec![FieldError { path: String::new(), message: "expected a JSON object".into() }],
        });
    };
    let dataset_id = string(map, "dataset_id", "", &mut errs);
    let target = string(map, "target", "", &mut errs);
    if let Some(t) = &target
        && t.is_empty()
    {
        err(&mut errs, "target", "must not be empty");
    }
    let mode = choice(map, "mode", "", &["standard", "copilot"], true, &mut errs);
    let kind = match mode {
        Some("standard") => {
            unknown(map, &["mode", "analysis", "dataset_id", "target", "hyperparameters"], "", &mut errs);
            standard(map, &mut errs).map(|analysis| RequestKind::Standard { analysis })
        }
        Some("copilot") => {
            unknown(map, &["mode", "goal", "dataset_id", "target", "budget_seconds"], "", &mut errs);
            let goal =
                choice(map, "goal", "", &["forecast", "anomaly", "baseline"], true, &mut errs).map(|g| match g {
                    "forecast" => Goal::Forecast,
                    "anomaly" => Goal::Anomaly,
                    _ => Goal::Baseline,
                });
            let budget = uint(map, "budget_seconds", "", 1, MAX_BUDGET_SECONDS as u64, &mut errs)
                .map_or(DEFAULT_BUDGET_SECONDS, |b| b as u32);
            goal.map(|goal| RequestKind::Copilot { goal, budget_seconds: budget })
        }
        _ => None,
    };
    match kind {
        Some(kind) if errs.is_empty() => Ok(RunRequest { dataset_id, target, kind }),
        _ => Err(RequestError { errors: errs }),
    }
}

fn standard(map: &Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<Analysis> {
    let analysis = choice(
        map,
        "analysis",
        "",
        &["anomaly", "forecast", "baseline", "clustering", "changepoints", "statistics"],
        true,
        errs,
    )?;
    let empty = Map::new();
    let hp = match map.get("hyperparameters") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            err(errs, "hyperparameters", "expected an object");
            &empty
        }
    };
    let p = "hyperparameters";
    Some(match analysis {
        "anomaly" => {
            unknown(hp, &["method", "threshold", "periods", "trees", "sample_size", "seed"], p, errs);
            let method = match choice(hp, "method", p, &["robust_z", "seasonal", "isolation_forest"], false, errs) {
                Some("seasonal") => AnomalyMethod::Seasonal,
                Some("isolation_forest") => AnomalyMethod::IsolationForest,
                _ => AnomalyMethod::RobustZ,
            };
            let threshold = if method == AnomalyMethod::IsolationForest {
                number(hp, "threshold", p, 0.5, 1.0, errs).unwrap_or(0.65)
            } else {
                number(hp, "threshold", p, 0.5, 100.0, errs).unwrap_or(3.5)
            };
            Analysis::Anomaly(AnomalyParams {
                method,
                threshold,
                periods: periods(hp, p, errs),
                trees: uint(hp, "trees", p, 1, 1000, errs).map_or(100, |v| v as usize),
                sample_size: uint(hp, "sample_size", p, 16, 4096, errs).map_or(256, |v| v as usize),
                seed: uint(hp, "seed", p, 0, u64::MAX, errs).unwrap_or(0),
            })
        }
        "forecast" => {
            unknown(hp, &["method", "horizon", "interval", "periods"], p, errs);
            let method = match choice(hp, "method", p, &["auto", "ets", "mstl", "seasonal_naive"], false, errs) {
                Some("ets") => ForecastMethod::Ets,
                Some("mstl") => ForecastMethod::Mstl,
                Some("seasonal_naive") => ForecastMethod::SeasonalNaive,
                _ => ForecastMethod::Auto,
            };
            Analysis::Forecast(ForecastParams {
                method,
                horizon: uint(hp, "horizon", p, 1, 100_000, errs).map(|v| v as usize),
                interval: number(hp, "interval", p, 0.5, 0.999, errs).unwrap_or(0.95),
                periods: periods(hp, p, errs),
            })
        }
        "baseline" => {
            unknown(hp, &["drivers", "calendar"], p, errs);
            let drivers = strings(hp, "drivers", p, errs);
            let calendar = match strings(hp, "calendar", p, errs) {
                None => vec![CalendarFeature::Hour, CalendarFeature::Weekday],
                Some(list) => {
                    let mut out = Vec::new();
                    for (i, c) in list.iter().enumerate() {
                        match c.as_str() {
                            "hour" => out.push(CalendarFeature::Hour),
                            "weekday" => out.push(CalendarFeature::Weekday),
                            _ => err(errs, &format!("{p}.calendar.{i}"), "expected one of: hour, weekday"),
                        }
                    }
                    out.sort();
                    out.dedup();
                    out
                }
            };
            Analysis::Baseline(BaselineParams { drivers, calendar })
        }
        "clustering" => {
            unknown(hp, &["k", "seed"], p, errs);
            Analysis::Clustering(ClusteringParams {
                k: uint(hp, "k", p, 2, 12, errs).map(|v| v as usize),
                seed: uint(hp, "seed", p, 0, u64::MAX, errs).unwrap_or(0),
            })
        }
        "changepoints" => {
            unknown(hp, &["cost", "penalty", "min_size"], p, errs);
            let cost = match choice(hp, "cost", p, &["mean", "meanvar"], false, errs) {
                Some("meanvar") => ChangeCost::MeanVar,
                _ => ChangeCost::Mean,
            };
            Analysis::Changepoints(ChangepointParams {
                cost,
                penalty: number(hp, "penalty", p, 1e-9, 1e12, errs),
                min_size: uint(hp, "min_size", p, 2, 100_000, errs).map_or(2, |v| v as usize),
            })
        }
        _ => {
            unknown(hp, &[], p, errs);
            Analysis::Statistics
        }
    })
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") }
}

fn err(errs: &mut Vec<FieldError>, path: &str, message: &str) {
    errs.push(FieldError { path: path.to_string(), message: message.to_string() });
}

fn unknown(map: &Map<String, Value>, allowed: &[&str], prefix: &str, errs: &mut Vec<FieldError>) {
    // In the map's order (by key, or as written if serde_json's preserve_order is on): stable for one body.
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            err(errs, &join(prefix, key), "unknown field");
        }
    }
}

fn string(map: &Map<String, Value>, key: &str, prefix: &str, errs: &mut Vec<FieldError>) -> Option<String> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            err(errs, &join(prefix, key), "expected a string");
            None
        }
    }
}

fn choice(
    map: &Map<String, Value>,
    key: &str,
    prefix: &str,
    choices: &[&'static str],
    required: bool,
    errs: &mut Vec<FieldError>,
) -> Option<&'static str> {
    let path = join(prefix, key);
    match map.get(key) {
        None | Some(Value::Null) => {
            if required {
                err(errs, &path, &format!("required; one of: {}", choices.join(", ")));
            }
            None
        }
        Some(Value::String(s)) => {
            let found = choices.iter().find(|c| **c == s.as_str()).copied();
            if found.is_none() {
                err(errs, &path, &format!("expected one of: {}", choices.join(", ")));
            }
            found
        }
        Some(_) => {
            err(errs, &path, "expected a string");
            None
        }
    }
}

fn number(
    map: &Map<String, Value>,
    key: &str,
    prefix: &str,
    min: f64,
    max: f64,
    errs: &mut Vec<FieldError>,
) -> Option<f64> {
    let path = join(prefix, key);
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v >= min && v <= max => Some(v),
            _ => {
                err(errs, &path, &format!("must be between {min} and {max}"));
                None
            }
        },
        Some(_) => {
            err(errs, &path, "expected a number");
            None
        }
    }
}

fn uint(
    map: &Map<String, Value>,
    key: &str,
    prefix: &str,
    min: u64,
    max: u64,
    errs: &mut Vec<FieldError>,
) -> Option<u64> {
    uint_value(map.get(key), &join(prefix, key), min, max, errs)
}

fn uint_value(v: Option<&Value>, path: &str, min: u64, max: u64, errs: &mut Vec<FieldError>) -> Option<u64> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v >= min && v <= max => Some(v),
            _ => {
                err(errs, path, &format!("must be a whole number between {min} and {max}"));
                None
            }
        },
        Some(_) => {
            err(errs, path, "expected a whole number");
            None
        }
    }
}

fn strings(map: &Map<String, Value>, key: &str, prefix: &str, errs: &mut Vec<FieldError>) -> Option<Vec<String>> {
    let path = join(prefix, key);
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if !s.is_empty() => out.push(s.clone()),
                    _ => err(errs, &format!("{path}.{i}"), "expected a non-empty string"),
                }
            }
            Some(out)
        }
        Some(_) => {
            err(errs, &path, "expected an array of strings");
            None
        }
    }
}

fn periods(map: &Map<String, Value>, prefix: &str, errs: &mut Vec<FieldError>) -> Option<Vec<usize>> {
    let path = join(prefix, "periods");
    match map.get("periods") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.len() <= 3 => {
            let mut out: Vec<usize> = items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| uint_value(Some(v), &format!("{path}.{i}"), 2, 100_000, errs).map(|v| v as usize))
                .collect();
            out.sort_unstable();
            out.dedup();
            Some(out)
        }
        Some(_) => {
            err(errs, &path, "expected an array of at most 3 season lengths");
            None
        }
    }
}
