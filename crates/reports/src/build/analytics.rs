//! The analytics run report. The analytics component is written beside this crate, so the
//! input is generic: what a run is (inputs, dataset, model), what it measured, the charts
//! and tables of its result and the findings in words.

use super::{BuildError, Header, figure, section};
use crate::model::{Cell, Chart, Column, Report, ReportKind, Table, ValueType};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetInfo {
    pub id: String,
    pub name: String,
    /// sha256 of the dataset's Parquet file (its manifest's `sha256`).
    pub sha256: String,
    pub rows: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: Option<String>,
    pub decimals: u8,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnalyticsRunInput {
    pub header: Header,
    pub run_id: String,
    /// e.g. anomaly detection, forecast, regression.
    pub mode: String,
    pub model_name: String,
    pub model_version: String,
    pub dataset: DatasetInfo,
    /// The run's parameters as (name, value) text.
    pub inputs: Vec<(String, String)>,
    pub metrics: Vec<Metric>,
    pub charts: Vec<Chart>,
    pub tables: Vec<Table>,
    pub findings: Vec<String>,
}

pub fn build(input: &AnalyticsRunInput) -> Result<Report, BuildError> {
    input.header.tz()?;
    let mut run = section("Run");
    run.key_figures = vec![
        figure("Run", ValueType::Text, Cell::text(input.run_id.clone())),
        figure("Mode", ValueType::Text, Cell::text(input.mode.clone())),
        figure("Model", ValueType::Text, Cell::text(format!("{} {}", input.model_name, input.model_version))),
        figure("Dataset", ValueType::Text, Cell::text(input.dataset.name.clone())),
    ];
    if let Some(rows) = input.dataset.rows {
        run.key_figures.push(figure("Dataset rows", ValueType::number("", 0), (rows as f64).into()));
    }
    let mut inputs = vec![
        vec![Cell::text("dataset"), Cell::text(input.dataset.name.clone())],
        vec![Cell::text("dataset id"), Cell::text(input.dataset.id.clone())],
        vec![Cell::text("dataset sha256"), Cell::text(input.dataset.sha256.clone())],
        vec![Cell::text("model"), Cell::text(input.model_name.clone())],
        vec![Cell::text("model version"), Cell::text(input.model_version.clone())],
    ];
    inputs.extend(input.inputs.iter().map(|(k, v)| vec![Cell::text(k.clone()), Cell::text(v.clone())]));
    run.tables.push(Table {
        id: "Inputs".into(),
        title: "Inputs".into(),
        columns: vec![Column::new("Input", ValueType::Text), Column::new("Value", ValueType::Text)],
        rows: inputs,
        total: None,
    });

    let mut metrics = section("Metrics");
    metrics.key_figures = input
        .metrics
        .iter()
        .map(|m| figure(&m.name, ValueType::Number { unit: m.unit.clone(), decimals: m.decimals }, m.value.into()))
        .collect();
    // The key figures are the metrics; the workbook's summary sheet lists them as numbers.
    if input.metrics.is_empty() {
        metrics.notes.push("The run reported no metrics.".into());
    }

    let mut results = section("Results");
    results.charts = input.charts.clone();
    results.tables = input.tables.clone();
    results.notes = input.findings.clone();
    if input.findings.is_empty() {
        results.notes.push("The run reported no findings.".into());
    }

    input.header.report(ReportKind::AnalyticsRun, vec![run, metrics, results])
}
