//! Seeded inputs with hand-computed figures (the comments give the sums), shared by the
//! tests and the bench.
#![allow(dead_code, clippy::unwrap_used)]

use chrono::TimeZone;
use chrono_tz::Europe::Berlin;
use factoryops_reports::build::alerts::{AlertHistoryRecord, AlertRecord, AlertsInput, NotificationRecord};
use factoryops_reports::build::analytics::{AnalyticsRunInput, DatasetInfo, Metric};
use factoryops_reports::build::energy::{BillInput, EnergyBucket, EnergyInput, EnergyTotal, GapInput, PeakEntry};
use factoryops_reports::build::health::{DeviceHealthInput, DeviceHealthRecord};
use factoryops_reports::{Chart, ChartKind, Column, Header, Series, Table, ValueType};

pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 3_600_000;

/// Local wall time in Berlin as epoch ms.
pub fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    Berlin.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("unambiguous local time").timestamp_millis()
}

pub fn header(from: i64, to: i64) -> Header {
    Header {
        factory_name: "Werk Süd".into(),
        time_zone: "Europe/Berlin".into(),
        from_ms: from,
        to_ms: to,
        // 2026-03-31 06:00 local (CEST): the job's clock.
        generated_at_ms: local(2026, 3, 31, 6, 0),
    }
}

fn day(d: u32, kwh: f64, idle: f64, cost: f64, co2: f64) -> EnergyBucket {
    let next = if d == 31 { local(2026, 4, 1, 0, 0) } else { local(2026, 3, d + 1, 0, 0) };
    EnergyBucket {
        start_ms: local(2026, 3, d, 0, 0),
        end_ms: next,
        shift: None,
        kwh,
        cost: Some(cost),
        co2_kg: Some(co2),
        idle_kwh: idle,
    }
}

fn shift(d: u32, name: &str, start_h: u32, kwh: f64) -> EnergyBucket {
    EnergyBucket {
        start_ms: local(2026, 3, d, start_h, 0),
        end_ms: local(2026, 3, d, start_h + 8, 0),
        shift: Some(name.into()),
        kwh,
        cost: Some(kwh * 0.2),
        co2_kg: Some(kwh * 0.4),
        idle_kwh: 20.0,
    }
}

fn total(id: &str, name: &str, group: Option<&str>, kwh: f64, idle: f64, cost: f64, co2: f64) -> EnergyTotal {
    EnergyTotal {
        id: id.into(),
        name: name.into(),
        group: group.map(Into::into),
        kwh,
        cost: Some(cost),
        co2_kg: Some(co2),
        idle_kwh: idle,
    }
}

/// Three local days across the spring DST change (29 March 2026 has 23 hours).
/// Totals: 3,600.6 kWh; idle 350.1 kWh (9.7 %); cost 720.15 EUR; CO2 1,440.3 kg;
/// peak 102.4 kW on 30 March at 14:30; bill 1,056.15 EUR.
pub fn energy() -> EnergyInput {
    EnergyInput {
        header: header(local(2026, 3, 28, 0, 0), local(2026, 3, 31, 0, 0)),
        currency: Some("EUR".into()),
        days: vec![
            day(28, 1200.4, 100.2, 240.10, 480.2),
            day(29, 1100.0, 150.0, 220.00, 440.0),
            day(30, 1300.2, 99.9, 260.05, 520.1),
        ],
        // Early + Late: 2,680 kWh, idle 120 kWh.
        shifts: vec![
            shift(28, "Early", 6, 500.0),
            shift(28, "Late", 14, 400.0),
            shift(29, "Early", 6, 450.0),
            shift(29, "Late", 14, 380.0),
            shift(30, "Early", 6, 520.0),
            shift(30, "Late", 14, 430.0),
        ],
        devices: vec![
            total("press-2", "Press 2", Some("Presses"), 1000.2, 100.1, 200.04, 400.1),
            total("press-1", "Press 1", Some("Presses"), 1800.3, 200.0, 360.07, 720.1),
            total("comp-1", "Compressor", Some("Utilities"), 800.1, 50.0, 160.04, 320.1),
        ],
        groups: vec![
            total("presses", "Presses", None, 2800.5, 300.1, 560.11, 1120.2),
            total("utilities", "Utilities", None, 800.1, 50.0, 160.04, 320.1),
        ],
        peak_interval_minutes: 15,
        peaks: vec![
            PeakEntry {
                period_start_ms: local(2026, 3, 28, 0, 0),
                kw: 95.5,
                at_ms: local(2026, 3, 28, 10, 15),
                top_devices: vec![("press-1".into(), 60.0), ("comp-1".into(), 20.5)],
            },
            PeakEntry {
                period_start_ms: local(2026, 3, 29, 0, 0),
                kw: 88.0,
                at_ms: local(2026, 3, 29, 11, 0),
                top_devices: vec![("press-1".into(), 50.0)],
            },
            PeakEntry {
                period_start_ms: local(2026, 3, 30, 0, 0),
                kw: 102.4,
                at_ms: local(2026, 3, 30, 14, 30),
                top_devices: vec![("press-1".into(), 70.0), ("press-2".into(), 25.0)],
            },
        ],
        bill: Some(BillInput {
            currency: "EUR".into(),
            energy_cost: 720.15,
            demand_charges: 306.0,
            fixed: 30.0,
            total: 1056.15,
        }),
        // 2.5 h without data on the short day.
        gaps: vec![GapInput {
            device: "press-2".into(),
            from_ms: local(2026, 3, 29, 10, 0),
            to_ms: local(2026, 3, 29, 12, 30),
        }],
        without_source: vec!["meter-x".into()],
    }
}

/// `devices` devices over `days` local days from 1 March 2026, every day and shift filled:
/// the bench's input and a layout test of long tables.
pub fn energy_large(devices: usize, days: u32) -> EnergyInput {
    let from = local(2026, 3, 1, 0, 0);
    // Local midnights (the 29 March day is 23 hours long).
    let start = |d: u32| {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() + chrono::Days::new(u64::from(d));
        Berlin.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap()).single().unwrap().timestamp_millis()
    };
    let mut input = EnergyInput {
        header: header(from, start(days)),
        currency: Some("EUR".into()),
        peak_interval_minutes: 15,
        ..Default::default()
    };
    for d in 0..days {
        let kwh = 10_000.0 + f64::from(d % 7) * 500.0;
        input.days.push(EnergyBucket {
            start_ms: start(d),
            end_ms: start(d + 1),
            shift: None,
            kwh,
            cost: Some(kwh * 0.21),
            co2_kg: Some(kwh * 0.38),
            idle_kwh: kwh * 0.08,
        });
        for (k, name) in ["Night", "Early", "Late"].iter().enumerate() {
            input.shifts.push(EnergyBucket {
                start_ms: start(d) + k as i64 * 8 * HOUR,
                end_ms: start(d) + (k as i64 + 1) * 8 * HOUR,
                shift: Some((*name).into()),
                kwh: kwh / 3.0,
                cost: Some(kwh * 0.07),
                co2_kg: Some(kwh * 0.38 / 3.0),
                idle_kwh: kwh * 0.08 / 3.0,
            });
        }
        input.peaks.push(PeakEntry {
            period_start_ms: start(d),
            kw: 700.0 + f64::from(d % 5) * 20.0,
            at_ms: start(d) + 10 * HOUR,
            top_devices: (0..3).map(|i| (format!("dev-{i:03}"), 40.0 - f64::from(i))).collect(),
        });
    }
    let total: f64 = input.days.iter().map(|d| d.kwh).sum();
    for i in 0..devices {
        let share = total / devices as f64;
        input.devices.push(EnergyTotal {
            id: format!("dev-{i:03}"),
            name: format!("Machine {i:03} hall {}", i % 4 + 1),
            group: Some(format!("Hall {}", i % 4 + 1)),
            kwh: share * (0.5 + (i % 10) as f64 / 9.0),
            cost: Some(share * 0.21),
            co2_kg: Some(share * 0.38),
            idle_kwh: share * 0.08,
        });
        if i % 10 == 0 {
            input.gaps.push(GapInput {
                device: format!("dev-{i:03}"),
                from_ms: start(2) + 3 * HOUR,
                to_ms: start(2) + 5 * HOUR,
            });
        }
    }
    for g in 1..=4 {
        input.groups.push(EnergyTotal {
            id: format!("hall-{g}"),
            name: format!("Hall {g}"),
            group: None,
            kwh: total / 4.0,
            cost: Some(total / 4.0 * 0.21),
            co2_kg: Some(total / 4.0 * 0.38),
            idle_kwh: total / 4.0 * 0.08,
        });
    }
    input
}

#[allow(clippy::too_many_arguments)]
fn alert(
    id: &str,
    rule: (&str, &str),
    device: (&str, &str),
    severity: &str,
    opened: i64,
    ack_min: Option<i64>,
    resolve_min: Option<i64>,
    count: i64,
) -> AlertRecord {
    let mut history = vec![AlertHistoryRecord { at_ms: opened, status: "open".into(), by: "rules-engine".into() }];
    if let Some(m) = ack_min {
        history.push(AlertHistoryRecord {
            at_ms: opened + m * MIN,
            status: "acknowledged".into(),
            by: "user:u1".into(),
        });
    }
    if let Some(m) = resolve_min {
        history.push(AlertHistoryRecord {
            at_ms: opened + m * MIN,
            status: "resolved".into(),
            by: "rules-engine".into(),
        });
    }
    AlertRecord {
        id: id.into(),
        rule_id: rule.0.into(),
        rule_name: rule.1.into(),
        device_id: device.0.into(),
        device_name: Some(device.1.into()),
        severity: severity.into(),
        status: if resolve_min.is_some() {
            "resolved"
        } else if ack_min.is_some() {
            "acknowledged"
        } else {
            "open"
        }
        .into(),
        count,
        opened_at_ms: opened,
        acknowledged_at_ms: ack_min.map(|m| opened + m * MIN),
        resolved_at_ms: resolve_min.map(|m| opened + m * MIN),
        history,
    }
}

/// 1–8 March 2026. Five alerts (2 critical, 2 unresolved), 8 triggers; acknowledged after
/// 10, 20 and 30 min (MTTA 20.0 min), resolved after 60, 90 and 30 min (MTTR 60.0 min).
/// Press 1: 3 alerts, MTTA 10.0, MTTR 45.0. Notifications: email 3 of 4 delivered
/// (75.0 %, 2.25 attempts, 4.0 s), WhatsApp 1 of 2 (50.0 %); 66.7 % overall.
pub fn alerts() -> AlertsInput {
    let overtemp = ("r1", "Overtemperature");
    let pressure = ("r2", "Low pressure");
    let door = ("r3", "Door open");
    let p1 = ("press-1", "Press 1");
    let p2 = ("press-2", "Press 2");
    let comp = ("comp-1", "Compressor");
    let mut a2 = alert("a2", overtemp, p2, "critical", local(2026, 3, 2, 10, 0), Some(20), Some(90), 1);
    // Listed without history: the record's own times count.
    a2.history.clear();
    let n = |id: &str, channel: &str, status: &str, attempts: i64, created: i64, delivered_after_s: Option<i64>| {
        NotificationRecord {
            id: id.into(),
            alert_id: Some("a1".into()),
            channel: channel.into(),
            status: status.into(),
            attempts,
            created_at_ms: created,
            delivered_at_ms: delivered_after_s.map(|s| created + s * 1000),
        }
    };
    let t = local(2026, 3, 1, 9, 0);
    AlertsInput {
        header: header(local(2026, 3, 1, 0, 0), local(2026, 3, 8, 0, 0)),
        alerts: vec![
            alert("a1", overtemp, p1, "critical", t, Some(10), Some(60), 3),
            a2,
            alert("a3", pressure, comp, "warning", local(2026, 3, 3, 8, 0), Some(30), None, 2),
            alert("a4", pressure, p1, "warning", local(2026, 3, 4, 12, 0), None, Some(30), 1),
            alert("a5", door, p1, "info", local(2026, 3, 5, 7, 45), None, None, 1),
        ],
        notifications: vec![
            n("n1", "email", "delivered", 1, t, Some(2)),
            n("n2", "email", "delivered", 1, t, Some(4)),
            n("n3", "email", "delivered", 2, t, Some(6)),
            n("n4", "email", "dead", 5, t, None),
            n("n5", "whatsapp", "delivered", 1, t, Some(3)),
            n("n6", "whatsapp", "pending", 0, t, None),
        ],
    }
}

/// One day, 1 March 2026. Press 1 online 95.0 %, 1,000 payloads, 10 errors (0.99 %), 1 h
/// gap; Press 2 online 50.0 %, gaps 2 h + 0.5 h; Sensor X never seen. Mean online 48.3 %.
pub fn health() -> DeviceHealthInput {
    let from = local(2026, 3, 1, 0, 0);
    DeviceHealthInput {
        header: header(from, local(2026, 3, 2, 0, 0)),
        devices: vec![
            DeviceHealthRecord {
                id: "press-1".into(),
                name: "Press 1".into(),
                online_ms: 24 * HOUR * 95 / 100,
                last_seen_ms: Some(local(2026, 3, 1, 23, 59)),
                messages: 1000,
                payload_errors: 10,
                gaps: vec![(from + 3 * HOUR, from + 4 * HOUR)],
            },
            DeviceHealthRecord {
                id: "press-2".into(),
                name: "Press 2".into(),
                online_ms: 12 * HOUR,
                last_seen_ms: Some(local(2026, 3, 1, 18, 30)),
                messages: 500,
                payload_errors: 0,
                gaps: vec![(from + 6 * HOUR, from + 8 * HOUR), (from + 20 * HOUR, from + 20 * HOUR + 30 * MIN)],
            },
            DeviceHealthRecord { id: "sensor-x".into(), name: "Sensor X".into(), ..Default::default() },
        ],
    }
}

pub const DATASET_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

pub fn analytics() -> AnalyticsRunInput {
    let days: Vec<String> = (1..=7).map(|d| format!("2026-03-0{d}")).collect();
    AnalyticsRunInput {
        header: header(local(2026, 3, 1, 0, 0), local(2026, 3, 8, 0, 0)),
        run_id: "run-0193".into(),
        mode: "anomaly detection".into(),
        model_name: "isolation-forest".into(),
        model_version: "3".into(),
        dataset: DatasetInfo {
            id: "ds-17".into(),
            name: "Press vibration, March week 1".into(),
            sha256: DATASET_SHA256.into(),
            rows: Some(120_960),
        },
        inputs: vec![("contamination".into(), "0.01".into()), ("features".into(), "vibration_rms, temperature".into())],
        metrics: vec![
            Metric { name: "Precision".into(), value: 0.9312, unit: None, decimals: 3 },
            Metric { name: "Recall".into(), value: 0.8875, unit: None, decimals: 3 },
            Metric { name: "Anomalies found".into(), value: 14.0, unit: None, decimals: 0 },
        ],
        charts: vec![Chart {
            title: "Anomalies per day".into(),
            kind: ChartKind::Bar,
            unit: "anomalies".into(),
            categories: days.clone(),
            series: vec![Series {
                name: "Anomalies".into(),
                values: vec![Some(1.0), Some(0.0), Some(5.0), Some(2.0), Some(3.0), Some(1.0), Some(2.0)],
            }],
        }],
        tables: vec![Table {
            id: "Anomalies".into(),
            title: "Anomalies per day".into(),
            columns: vec![Column::new("Day", ValueType::Text), Column::new("Anomalies", ValueType::number("", 0))],
            rows: days
                .iter()
                .zip([1.0, 0.0, 5.0, 2.0, 3.0, 1.0, 2.0])
                .map(|(d, v)| vec![factoryops_reports::Cell::text(d.clone()), v.into()])
                .collect(),
            total: Some(vec![factoryops_reports::Cell::text("Total"), 14.0.into()]),
        }],
        findings: vec!["Press 2 vibrates above its baseline on 3 March from 14:00 to 16:00.".into()],
    }
}
