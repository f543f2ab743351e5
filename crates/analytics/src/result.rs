//! What a run returns: one serialisable [`RunResult`] per analysis. Maps are `BTreeMap`s
//! and lists have a fixed order, so the same input serialises to the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::ModelArtifact;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// `standard` or `copilot`.
    pub mode: &'static str,
    /// The analysis that ran (`anomaly`, `forecast`, …).
    pub analysis: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Headline figures (finite numbers only).
    pub metrics: BTreeMap<String, f64>,
    /// Plain-language findings computed from the output, each with its numbers.
    pub findings: Vec<Finding>,
    pub output: Output,
    /// The trained model, for the registry (anomaly and forecast models, baselines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelArtifact>,
    /// Things the analysis could not do or assumed (e.g. gaps filled), in plain words.
    pub notes: Vec<String>,
}

/// A plain-language, actionable observation. `figures` holds every number the text uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable machine kind, e.g. `off_hours_load`, `anomalies`, `level_shift`.
    pub kind: &'static str,
    pub text: String,
    pub figures: BTreeMap<String, f64>,
}

impl Finding {
    pub(crate) fn new(kind: &'static str, text: String, figures: &[(&str, f64)]) -> Self {
        Self {
            kind,
            text,
            figures: figures.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| ((*k).to_string(), *v)).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    Anomaly(crate::anomaly::AnomalyOutput),
    Forecast(crate::forecast::ForecastOutput),
    Baseline(crate::baseline::BaselineOutput),
    Clustering(crate::cluster::ClusteringOutput),
    Changepoints(crate::changepoint::ChangepointOutput),
    Statistics(crate::statistics::StatisticsOutput),
    Copilot(Box<crate::copilot::CopilotOutput>),
}

/// Inserts finite metrics only (JSON has no NaN).
pub(crate) fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| ((*k).to_string(), *v)).collect()
}

/// A finite number or JSON null.
pub(crate) fn opt(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Formats a number for findings: thousands separators, `decimals` places.
pub(crate) fn fmt_num(x: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut grouped = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    let sign = if x < 0.0 && s.chars().any(|c| c != '0' && c != '.') { "-" } else { "" };
    if frac.is_empty() { format!("{sign}{grouped}") } else { format!("{sign}{grouped}.{frac}") }
}

/// `device/property` → (`device`, `property`) for findings' wording.
pub(crate) fn split_name(column: &str) -> (&str, &str) {
    column.split_once('/').unwrap_or(("", column))
}

/// A unit guessed from a property name's suffix (`power_kw` → kW), for findings only.
pub(crate) fn unit_of(column: &str) -> &'static str {
    let p = split_name(column).1.to_ascii_lowercase();
    for (suffix, unit) in [
        ("_kwh", " kWh"),
        ("_kw", " kW"),
        ("_w", " W"),
        ("_c", " °C"),
        ("_bar", " bar"),
        ("_a", " A"),
        ("_v", " V"),
        ("_pct", " %"),
    ] {
        if p.ends_with(suffix) {
            return unit;
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(fmt_num(1900.4, 0), "1,900");
        assert_eq!(fmt_num(-1234567.891, 2), "-1,234,567.89");
        assert_eq!(fmt_num(18.0, 1), "18.0");
        assert_eq!(fmt_num(-0.001, 1), "0.0");
    }
}
