//! The device health report: how much of the period each device was online, when it was
//! last seen, how many payloads it sent and how many were refused, and its data gaps.

use super::{BuildError, Header, figure, section, time};
use crate::model::{Cell, Chart, ChartKind, Column, Report, ReportKind, Series, Table, ValueType};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceHealthRecord {
    pub id: String,
    pub name: String,
    /// Time online within the period (connected, or sending within its expected interval).
    pub online_ms: i64,
    pub last_seen_ms: Option<i64>,
    /// Payloads accepted in the period.
    pub messages: u64,
    /// Payloads refused (unparseable, invalid values) in the period.
    pub payload_errors: u64,
    /// Stretches without data `[from, to)` in the period.
    pub gaps: Vec<(i64, i64)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceHealthInput {
    pub header: Header,
    pub devices: Vec<DeviceHealthRecord>,
}

const CHART_DEVICES: usize = 20;

pub fn build(input: &DeviceHealthInput) -> Result<Report, BuildError> {
    let tz = input.header.tz()?;
    let period = (input.header.to_ms - input.header.from_ms).max(1) as f64;
    let pct = ValueType::Percent { decimals: 1 };
    let count = ValueType::number("", 0);
    let hours = ValueType::number("h", 2);

    let online = |d: &DeviceHealthRecord| (d.online_ms as f64 / period).clamp(0.0, 1.0);
    let gap_ms = |d: &DeviceHealthRecord| d.gaps.iter().map(|(a, b)| (b - a).max(0)).sum::<i64>();
    let error_rate = |d: &DeviceHealthRecord| {
        let total = d.messages + d.payload_errors;
        (total > 0).then(|| d.payload_errors as f64 / total as f64)
    };

    let mut devices: Vec<&DeviceHealthRecord> = input.devices.iter().collect();
    // Worst first: the reader looks for the devices that need attention.
    devices.sort_by(|a, b| online(a).total_cmp(&online(b)).then_with(|| a.name.cmp(&b.name)));

    let n = devices.len().max(1) as f64;
    let mean_online = devices.iter().map(|d| online(d)).sum::<f64>() / n;
    let messages: u64 = devices.iter().map(|d| d.messages).sum();
    let errors: u64 = devices.iter().map(|d| d.payload_errors).sum();
    let gaps: usize = devices.iter().map(|d| d.gaps.len()).sum();
    let never = devices.iter().filter(|d| d.last_seen_ms.is_none()).count();

    let mut summary = section("Summary");
    summary.key_figures = vec![
        figure("Devices", count.clone(), (devices.len() as f64).into()),
        figure("Mean online", pct.clone(), Cell::num((!devices.is_empty()).then_some(mean_online))),
        figure("Payloads accepted", count.clone(), (messages as f64).into()),
        figure("Payload errors", count.clone(), (errors as f64).into()),
        figure("Data gaps", count.clone(), (gaps as f64).into()),
        figure("Never seen", count.clone(), (never as f64).into()),
    ];
    summary.charts.push(Chart {
        title: format!("Online share, {} least available devices", devices.len().min(CHART_DEVICES)),
        kind: ChartKind::Bar,
        unit: "%".into(),
        categories: devices.iter().take(CHART_DEVICES).map(|d| d.name.clone()).collect(),
        series: vec![Series {
            name: "Online".into(),
            values: devices.iter().take(CHART_DEVICES).map(|d| Some(online(d) * 100.0)).collect(),
        }],
    });

    let mut table = section("Devices");
    table.tables.push(Table {
        id: "Devices".into(),
        title: "Device health".into(),
        columns: vec![
            Column::new("Device", ValueType::Text),
            Column::new("Online", pct.clone()),
            Column::new("Last seen", ValueType::Datetime),
            Column::new("Payloads", count.clone()),
            Column::new("Payload errors", count.clone()),
            // Error rates are small: two places.
            Column::new("Error rate", ValueType::Percent { decimals: 2 }),
            Column::new("Gaps", count.clone()),
            Column::new("Time in gaps", hours.clone()),
        ],
        rows: devices
            .iter()
            .map(|d| {
                vec![
                    Cell::text(d.name.clone()),
                    online(d).into(),
                    d.last_seen_ms.map_or(Cell::Empty, |t| time(tz, t)),
                    (d.messages as f64).into(),
                    (d.payload_errors as f64).into(),
                    Cell::num(error_rate(d)),
                    (d.gaps.len() as f64).into(),
                    (gap_ms(d) as f64 / 3_600_000.0).into(),
                ]
            })
            .collect(),
        total: Some(vec![
            Cell::text("All devices"),
            Cell::num((!devices.is_empty()).then_some(mean_online)),
            Cell::Empty,
            (messages as f64).into(),
            (errors as f64).into(),
            Cell::num((messages + errors > 0).then(|| errors as f64 / (messages + errors) as f64)),
            (gaps as f64).into(),
            (devices.iter().map(|d| gap_ms(d)).sum::<i64>() as f64 / 3_600_000.0).into(),
        ]),
    });
    table.notes.push("The total row's online share is the mean over devices.".into());

    let mut gap_section = section("Data gaps");
    let mut rows: Vec<(&str, i64, i64)> =
        devices.iter().flat_map(|d| d.gaps.iter().map(move |(a, b)| (d.name.as_str(), *a, *b))).collect();
    rows.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    if rows.is_empty() {
        gap_section.notes.push("No device had a data gap in the period.".into());
    } else {
        gap_section.tables.push(Table {
            id: "Gaps".into(),
            title: "Stretches without data".into(),
            columns: vec![
                Column::new("Device", ValueType::Text),
                Column::new("From", ValueType::Datetime),
                Column::new("To", ValueType::Datetime),
                Column::new("Duration", hours),
            ],
            rows: rows
                .iter()
                .map(|(d, a, b)| {
                    vec![Cell::text(*d), time(tz, *a), time(tz, *b), ((b - a) as f64 / 3_600_000.0).into()]
                })
                .collect(),
            total: None,
        });
    }

    input.header.report(ReportKind::DeviceHealth, vec![summary, table, gap_section])
}
