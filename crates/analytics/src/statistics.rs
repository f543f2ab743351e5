//! Descriptive statistics per column, the correlation matrix, and the findings an energy
//! manager acts on: off-hours load of power columns, strongly coupled columns, gaps.

use chrono_tz::Tz;
use serde::Serialize;

use crate::frame::{self, Frame};
use crate::result::{Finding, fmt_num, opt, split_name, unit_of};
use crate::stats;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnStats {
    pub column: String,
    pub count: usize,
    pub missing: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub p05: Option<f64>,
    pub p25: Option<f64>,
    pub median: Option<f64>,
    pub p75: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatisticsOutput {
    pub rows: usize,
    pub from: Option<String>,
    pub to: Option<String>,
    pub columns: Vec<ColumnStats>,
    /// Column names in matrix order.
    pub correlation_columns: Vec<String>,
    /// Pearson r over pairwise-complete rows; null where undefined.
    pub correlations: Vec<Vec<Option<f64>>>,
}

pub(crate) fn run(frame: &Frame) -> StatisticsOutput {
    let columns = frame
        .columns()
        .iter()
        .map(|c| {
            let s = stats::sorted(&c.values);
            let q = |p| opt(stats::quantile_sorted(&s, p));
            ColumnStats {
                column: c.name.clone(),
                count: s.len(),
                missing: c.values.len() - s.len(),
                mean: opt(stats::mean(&s)),
                std: opt(stats::std(&s)),
                min: s.first().copied(),
                p05: q(0.05),
                p25: q(0.25),
                median: q(0.5),
                p75: q(0.75),
                p95: q(0.95),
                max: s.last().copied(),
            }
        })
        .collect();
    let cols = frame.columns();
    let correlations = cols
        .iter()
        .map(|a| {
            cols.iter()
                .map(|b| {
                    if a.name == b.name {
                        opt(if stats::std(&a.values) > 0.0 { 1.0 } else { f64::NAN })
                    } else {
                        opt(stats::pearson(&a.values, &b.values))
                    }
                })
                .collect()
        })
        .collect();
    StatisticsOutput {
        rows: frame.len(),
        from: frame.ts().first().map(|t| frame::fmt_ts(*t)),
        to: frame.ts().last().map(|t| frame::fmt_ts(*t)),
        columns,
        correlation_columns: cols.iter().map(|c| c.name.clone()).collect(),
        correlations,
    }
}

/// Hours of an average month (365.25 / 12 days) that are weekend, or weekday night.
pub const WEEKEND_HOURS_PER_MONTH: f64 = 730.5 * 2.0 / 7.0;
pub const WEEKDAY_NIGHT_HOURS_PER_MONTH: f64 = 730.5 * 5.0 / 7.0 * 8.0 / 24.0;
/// Off-hours load worth a finding: at least this share of the working-hours load.
pub const OFF_HOURS_SHARE: f64 = 0.2;
/// Points needed in each period before its mean is reported.
const MIN_POINTS: usize = 12;

/// Mean of a power column at weekends, weekday nights (22:00–06:00) and weekday working
/// hours, local time.
pub fn off_hours(frame: &Frame, values: &[f64], tz: Tz) -> Option<(f64, f64, f64)> {
    let (mut we, mut ni, mut wo) = ((0.0, 0usize), (0.0, 0usize), (0.0, 0usize));
    for (t, v) in frame.ts().iter().zip(values) {
        if !v.is_finite() {
            continue;
        }
        let c = frame::calendar(*t, tz);
        let slot = if c.weekday >= 5 {
            &mut we
        } else if c.hour >= 22 || c.hour < 6 {
            &mut ni
        } else {
            &mut wo
        };
        slot.0 += v;
        slot.1 += 1;
    }
    let m = |s: (f64, usize)| if s.1 >= MIN_POINTS { s.0 / s.1 as f64 } else { f64::NAN };
    Some((m(we), m(ni), m(wo)))
}

pub(crate) fn findings(frame: &Frame, out: &StatisticsOutput, tz: Tz) -> Vec<Finding> {
    let mut f = Vec::new();
    for c in frame.columns() {
        if unit_of(&c.name) != " kW" {
            continue;
        }
        let (device, property) = split_name(&c.name);
        let who = if device.is_empty() { property.to_string() } else { device.to_string() };
        let Some((weekend, night, work)) = off_hours(frame, &c.values, tz) else { continue };
        for (label, mean, hours, kind) in [
            ("at weekends (Sat–Sun)", weekend, WEEKEND_HOURS_PER_MONTH, "weekend_load"),
            ("at night on weekdays (22:00–06:00)", night, WEEKDAY_NIGHT_HOURS_PER_MONTH, "night_load"),
        ] {
            if mean.is_finite() && work.is_finite() && work > 0.0 && mean > 0.0 && mean >= OFF_HOURS_SHARE * work {
                let kwh = mean * hours;
                f.push(Finding::new(
                    kind,
                    format!(
                        "{who} draws {} kW on average {label}, {}% of its working-hours load ({} kW): {} kWh per month. Check what runs then.",
                        fmt_num(mean, 1),
                        fmt_num(100.0 * mean / work, 0),
                        fmt_num(work, 1),
                        fmt_num(kwh, 0)
                    ),
                    &[
                        ("mean_kw", mean),
                        ("working_hours_kw", work),
                        ("hours_per_month", hours),
                        ("kwh_per_month", kwh),
                    ],
                ));
            }
        }
    }
    let names = &out.correlation_columns;
    for i in 0..names.len() {
        for j in i + 1..names.len() {
            if let Some(r) = out.correlations[i][j]
                && r.abs() >= 0.8
            {
                f.push(Finding::new(
                    "coupled_columns",
                    format!(
                        "{} and {} move {} (r = {}): one can stand in for the other as a driver.",
                        names[i],
                        names[j],
                        if r > 0.0 { "together" } else { "in opposite directions" },
                        fmt_num(r, 2)
                    ),
                    &[("r", r)],
                ));
            }
        }
    }
    for c in &out.columns {
        let total = c.count + c.missing;
        if total > 0 && c.missing * 10 >= total && c.missing > 0 {
            let pct = 100.0 * c.missing as f64 / total as f64;
            f.push(Finding::new(
                "gaps",
                format!(
                    "{} is missing {}% of its values ({} of {}): check the device's connection.",
                    c.column,
                    fmt_num(pct, 1),
                    c.missing,
                    total
                ),
                &[("missing_pct", pct), ("missing", c.missing as f64)],
            ));
        }
    }
    f
}
