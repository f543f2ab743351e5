//! The energy report. Its input mirrors what `factoryops-energy`'s service answers
//! (`Consumption` items by day and by shift, per-device and per-group totals, `PeakDemand`,
//! the tariff's `Bill`, gaps): the job that runs a report maps those into this struct, so
//! this crate needs neither the database nor the telemetry store to build (ADR 0021).

use std::collections::BTreeMap;

use super::{BuildError, Header, figure, section, sum_opt, time};
use crate::format;
use crate::model::{Cell, Chart, ChartKind, Column, Report, ReportKind, Series, Table, ValueType};

/// One bucket of a consumption answer (`ConsumptionItem`), device ids as text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnergyBucket {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The shift's name for shift buckets.
    pub shift: Option<String>,
    pub kwh: f64,
    /// `None` without a tariff in force.
    pub cost: Option<f64>,
    /// `None` without an emission factor in force.
    pub co2_kg: Option<f64>,
    pub idle_kwh: f64,
}

/// The whole period's figures of one device or group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnergyTotal {
    pub id: String,
    pub name: String,
    /// The device's group (devices only).
    pub group: Option<String>,
    pub kwh: f64,
    pub cost: Option<f64>,
    pub co2_kg: Option<f64>,
    pub idle_kwh: f64,
}

/// The peak of one local day (`PeakItem`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeakEntry {
    pub period_start_ms: i64,
    pub kw: f64,
    pub at_ms: i64,
    /// The devices drawing most in the peak interval, highest first.
    pub top_devices: Vec<(String, f64)>,
}

/// The tariff's bill of the whole period (`Bill`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BillInput {
    pub currency: String,
    pub energy_cost: f64,
    /// Σ of the demand charges of the billing periods.
    pub demand_charges: f64,
    pub fixed: f64,
    pub total: f64,
}

/// A stretch of one device without data (`DeviceGap`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GapInput {
    pub device: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnergyInput {
    pub header: Header,
    /// The tariff's currency (`Consumption::currency`).
    pub currency: Option<String>,
    /// Consumption of the selection bucketed by local day.
    pub days: Vec<EnergyBucket>,
    /// Consumption of the selection bucketed by shift.
    pub shifts: Vec<EnergyBucket>,
    pub devices: Vec<EnergyTotal>,
    pub groups: Vec<EnergyTotal>,
    /// Demand interval of `peaks`, minutes.
    pub peak_interval_minutes: u32,
    /// Daily peaks of the selection.
    pub peaks: Vec<PeakEntry>,
    pub bill: Option<BillInput>,
    pub gaps: Vec<GapInput>,
    /// Devices without an energy source: they count 0 kWh.
    pub without_source: Vec<String>,
}

/// Devices in the "by device" chart; the table has them all.
const CHART_DEVICES: usize = 15;

pub fn build(input: &EnergyInput) -> Result<Report, BuildError> {
    let tz = input.header.tz()?;
    let cur = input.currency.clone().or_else(|| input.bill.as_ref().map(|b| b.currency.clone())).unwrap_or_default();
    let kwh = ValueType::number("kWh", 1);
    let kw = ValueType::number("kW", 1);
    let money = ValueType::number(&cur, 2);
    let co2 = ValueType::number("kg CO2", 1);
    let share = ValueType::Percent { decimals: 1 };

    let total_kwh: f64 = input.days.iter().map(|b| b.kwh).sum();
    let total_idle: f64 = input.days.iter().map(|b| b.idle_kwh).sum();
    let total_cost = sum_opt(input.days.iter().map(|b| b.cost));
    let total_co2 = sum_opt(input.days.iter().map(|b| b.co2_kg));
    let peak = input.peaks.iter().max_by(|a, b| a.kw.total_cmp(&b.kw));
    let idle_share = (total_kwh > 0.0).then(|| total_idle / total_kwh);

    // Summary.
    let mut summary = section("Summary");
    summary.key_figures = vec![
        figure("Energy consumed", kwh.clone(), total_kwh.into()),
        figure("Peak demand", kw.clone(), Cell::num(peak.map(|p| p.kw))),
        figure("Peak demand at", ValueType::Datetime, peak.map_or(Cell::Empty, |p| time(tz, p.at_ms))),
        figure("Energy cost", money.clone(), Cell::num(total_cost)),
        figure("CO2 emitted", co2.clone(), Cell::num(total_co2)),
        figure("Idle energy", kwh.clone(), total_idle.into()),
        figure("Idle share", share.clone(), Cell::num(idle_share)),
    ];
    if let Some(bill) = &input.bill {
        summary.key_figures.push(figure("Bill total", ValueType::number(&bill.currency, 2), bill.total.into()));
    }
    summary.charts.push(Chart {
        title: "Energy per day".into(),
        kind: ChartKind::StackedBar,
        unit: "kWh".into(),
        categories: input.days.iter().map(|d| day_tick(tz, d.start_ms)).collect(),
        series: vec![
            Series { name: "Productive".into(), values: input.days.iter().map(|d| Some(d.kwh - d.idle_kwh)).collect() },
            Series { name: "Idle".into(), values: input.days.iter().map(|d| Some(d.idle_kwh)).collect() },
        ],
    });
    if total_cost.is_none() {
        summary.notes.push("No tariff was in force for this period: costs are not shown.".into());
    }
    if total_co2.is_none() {
        summary.notes.push("No emission factor was in force for this period: CO2 is not shown.".into());
    }
    if !input.without_source.is_empty() {
        summary.notes.push(format!(
            "{} device(s) have no energy source (power or counter property) and count 0 kWh: {}.",
            input.without_source.len(),
            input.without_source.join(", ")
        ));
    }
    if !input.gaps.is_empty() {
        summary.notes.push(format!(
            "{} data gap(s) in the period: energy during a gap is not counted (see Data gaps).",
            input.gaps.len()
        ));
    }

    // By day, with each day's peak.
    let peak_of_day: BTreeMap<i64, &PeakEntry> = input.peaks.iter().map(|p| (p.period_start_ms, p)).collect();
    let mut days = section("Energy by day");
    days.tables.push(Table {
        id: "By day".into(),
        title: "Energy by day".into(),
        columns: vec![
            Column::new("Day", ValueType::Text),
            Column::new("Energy", kwh.clone()),
            Column::new("Idle", kwh.clone()),
            Column::new("Cost", money.clone()),
            Column::new("CO2", co2.clone()),
            Column::new("Peak demand", kw.clone()),
        ],
        rows: input
            .days
            .iter()
            .map(|d| {
                vec![
                    Cell::text(day_label(tz, d.start_ms)),
                    d.kwh.into(),
                    d.idle_kwh.into(),
                    Cell::num(d.cost),
                    Cell::num(d.co2_kg),
                    Cell::num(peak_of_day.get(&d.start_ms).map(|p| p.kw)),
                ]
            })
            .collect(),
        total: Some(vec![
            Cell::text("Total"),
            total_kwh.into(),
            total_idle.into(),
            Cell::num(total_cost),
            Cell::num(total_co2),
            Cell::num(peak.map(|p| p.kw)),
        ]),
    });
    if !input.peaks.is_empty() {
        days.charts.push(Chart {
            title: format!("Daily peak demand ({}-minute average)", input.peak_interval_minutes),
            kind: ChartKind::Line,
            unit: "kW".into(),
            categories: input.peaks.iter().map(|p| day_tick(tz, p.period_start_ms)).collect(),
            series: vec![Series {
                name: "Peak demand".into(),
                values: input.peaks.iter().map(|p| Some(p.kw)).collect(),
            }],
        });
    }

    // By shift.
    let mut shifts = section("Energy by shift");
    if !input.shifts.is_empty() {
        shifts.tables.push(Table {
            id: "By shift".into(),
            title: "Energy by shift".into(),
            columns: vec![
                Column::new("Start", ValueType::Datetime),
                Column::new("Shift", ValueType::Text),
                Column::new("Energy", kwh.clone()),
                Column::new("Idle", kwh.clone()),
                Column::new("Cost", money.clone()),
                Column::new("CO2", co2.clone()),
            ],
            rows: input
                .shifts
                .iter()
                .map(|s| {
                    vec![
                        time(tz, s.start_ms),
                        Cell::text(s.shift.clone().unwrap_or_default()),
                        s.kwh.into(),
                        s.idle_kwh.into(),
                        Cell::num(s.cost),
                        Cell::num(s.co2_kg),
                    ]
                })
                .collect(),
            total: Some(vec![
                Cell::text("Total"),
                Cell::Empty,
                input.shifts.iter().map(|s| s.kwh).sum::<f64>().into(),
                input.shifts.iter().map(|s| s.idle_kwh).sum::<f64>().into(),
                Cell::num(sum_opt(input.shifts.iter().map(|s| s.cost))),
                Cell::num(sum_opt(input.shifts.iter().map(|s| s.co2_kg))),
            ]),
        });
        // Per shift name over the period, in the order the shifts first appear.
        let mut names: Vec<String> = Vec::new();
        let mut per: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for s in &input.shifts {
            let name = s.shift.clone().unwrap_or_default();
            if !per.contains_key(&name) {
                names.push(name.clone());
            }
            let e = per.entry(name).or_default();
            e.0 += s.kwh - s.idle_kwh;
            e.1 += s.idle_kwh;
        }
        shifts.charts.push(Chart {
            title: "Energy per shift".into(),
            kind: ChartKind::StackedBar,
            unit: "kWh".into(),
            categories: names.clone(),
            series: vec![
                Series { name: "Productive".into(), values: names.iter().map(|n| per.get(n).map(|e| e.0)).collect() },
                Series { name: "Idle".into(), values: names.iter().map(|n| per.get(n).map(|e| e.1)).collect() },
            ],
        });
    } else {
        shifts.notes.push("The factory has no shifts configured.".into());
    }

    // By device, largest first.
    let mut devices: Vec<&EnergyTotal> = input.devices.iter().collect();
    devices.sort_by(|a, b| b.kwh.total_cmp(&a.kwh).then_with(|| a.name.cmp(&b.name)));
    let mut by_device = section("Energy by device");
    by_device.tables.push(totals_table(
        "By device",
        "Energy by device",
        &devices,
        true,
        total_kwh,
        [&kwh, &share, &money, &co2],
    ));
    by_device.charts.push(Chart {
        title: if devices.len() > CHART_DEVICES {
            format!("Top {CHART_DEVICES} devices by energy")
        } else {
            "Energy by device".into()
        },
        kind: ChartKind::StackedBar,
        unit: "kWh".into(),
        categories: devices.iter().take(CHART_DEVICES).map(|d| d.name.clone()).collect(),
        series: vec![
            Series {
                name: "Productive".into(),
                values: devices.iter().take(CHART_DEVICES).map(|d| Some(d.kwh - d.idle_kwh)).collect(),
            },
            Series {
                name: "Idle".into(),
                values: devices.iter().take(CHART_DEVICES).map(|d| Some(d.idle_kwh)).collect(),
            },
        ],
    });

    let mut sections = vec![summary, days, shifts, by_device];
    if !input.groups.is_empty() {
        let mut groups: Vec<&EnergyTotal> = input.groups.iter().collect();
        groups.sort_by(|a, b| b.kwh.total_cmp(&a.kwh).then_with(|| a.name.cmp(&b.name)));
        let mut by_group = section("Energy by group");
        by_group.tables.push(totals_table(
            "By group",
            "Energy by group",
            &groups,
            false,
            total_kwh,
            [&kwh, &share, &money, &co2],
        ));
        by_group.notes.push("A group counts the devices of its subgroups too, so groups can overlap.".into());
        sections.push(by_group);
    }

    // Peaks with the devices behind them.
    if !input.peaks.is_empty() {
        let mut peaks = section("Peak demand");
        peaks.tables.push(Table {
            id: "Peaks".into(),
            title: format!("Daily peak demand ({}-minute average)", input.peak_interval_minutes),
            columns: vec![
                Column::new("Day", ValueType::Text),
                Column::new("Peak", kw.clone()),
                Column::new("Interval start", ValueType::Datetime),
                Column::new("Largest contributors", ValueType::Text),
            ],
            rows: input
                .peaks
                .iter()
                .map(|p| {
                    let top: Vec<String> = p
                        .top_devices
                        .iter()
                        .take(3)
                        .map(|(d, v)| format!("{} {} kW", name_of(input, d), format::number(*v, 1)))
                        .collect();
                    vec![
                        Cell::text(day_label(tz, p.period_start_ms)),
                        p.kw.into(),
                        time(tz, p.at_ms),
                        Cell::text(top.join(", ")),
                    ]
                })
                .collect(),
            total: None,
        });
        sections.push(peaks);
    }

    if let Some(bill) = &input.bill {
        let m = ValueType::number(&bill.currency, 2);
        let mut s = section("Bill");
        s.key_figures = vec![
            figure("Energy charges", m.clone(), bill.energy_cost.into()),
            figure("Demand charges", m.clone(), bill.demand_charges.into()),
            figure("Fixed fees", m.clone(), bill.fixed.into()),
            figure("Total", m, bill.total.into()),
        ];
        sections.push(s);
    }

    let mut quality = section("Data gaps");
    if input.gaps.is_empty() {
        quality.notes.push("No device had a data gap in the period.".into());
    } else {
        quality.tables.push(Table {
            id: "Gaps".into(),
            title: "Stretches without data".into(),
            columns: vec![
                Column::new("Device", ValueType::Text),
                Column::new("From", ValueType::Datetime),
                Column::new("To", ValueType::Datetime),
                Column::new("Duration", ValueType::number("h", 2)),
            ],
            rows: input
                .gaps
                .iter()
                .map(|g| {
                    vec![
                        Cell::text(name_of(input, &g.device)),
                        time(tz, g.from_ms),
                        time(tz, g.to_ms),
                        ((g.to_ms - g.from_ms) as f64 / 3_600_000.0).into(),
                    ]
                })
                .collect(),
            total: None,
        });
    }
    sections.push(quality);

    input.header.report(ReportKind::Energy, sections)
}

fn totals_table(
    id: &str,
    title: &str,
    items: &[&EnergyTotal],
    with_group: bool,
    total_kwh: f64,
    [kwh, share, money, co2]: [&ValueType; 4],
) -> Table {
    let mut columns = vec![Column::new(if with_group { "Device" } else { "Group" }, ValueType::Text)];
    if with_group {
        columns.push(Column::new("Group", ValueType::Text));
    }
    columns.extend([
        Column::new("Energy", kwh.clone()),
        Column::new("Share", share.clone()),
        Column::new("Idle", kwh.clone()),
        Column::new("Cost", money.clone()),
        Column::new("CO2", co2.clone()),
    ]);
    let rows = items
        .iter()
        .map(|t| {
            let mut row = vec![Cell::text(t.name.clone())];
            if with_group {
                row.push(t.group.clone().map_or(Cell::Empty, Cell::Text));
            }
            row.extend([
                t.kwh.into(),
                Cell::num((total_kwh > 0.0).then(|| t.kwh / total_kwh)),
                t.idle_kwh.into(),
                Cell::num(t.cost),
                Cell::num(t.co2_kg),
            ]);
            row
        })
        .collect();
    // Groups overlap, so only the device table has a total that means something.
    let total = with_group.then(|| {
        vec![
            Cell::text("Total"),
            Cell::Empty,
            items.iter().map(|t| t.kwh).sum::<f64>().into(),
            Cell::num((total_kwh > 0.0).then(|| items.iter().map(|t| t.kwh).sum::<f64>() / total_kwh)),
            items.iter().map(|t| t.idle_kwh).sum::<f64>().into(),
            Cell::num(sum_opt(items.iter().map(|t| t.cost))),
            Cell::num(sum_opt(items.iter().map(|t| t.co2_kg))),
        ]
    });
    Table { id: id.into(), title: title.into(), columns, rows, total }
}

fn name_of(input: &EnergyInput, device: &str) -> String {
    input.devices.iter().find(|d| d.id == device).map_or_else(|| device.to_owned(), |d| d.name.clone())
}

/// A local day as `2026-03-02 Mon`.
fn day_label(tz: chrono_tz::Tz, start_ms: i64) -> String {
    format::to_local(tz, start_ms).format("%Y-%m-%d %a").to_string()
}

/// A local day as a chart's axis shows it: `02 Mar` (30 of them must fit under a chart).
fn day_tick(tz: chrono_tz::Tz, start_ms: i64) -> String {
    format::to_local(tz, start_ms).format("%d %b").to_string()
}
