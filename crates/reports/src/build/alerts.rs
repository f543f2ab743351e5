//! The alerts report. Its input is the alert store's records (`factoryops_rules::store::Alert`
//! with its history) and the notification log's rows (`factoryops_notify::store::Notification`),
//! reduced to the fields a report reads.

use std::collections::BTreeMap;

use super::{BuildError, Header, figure, section};
use crate::format;
use crate::model::{Cell, Chart, ChartKind, Column, Report, ReportKind, Series, Table, ValueType};

/// One entry of an alert's history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertHistoryRecord {
    pub at_ms: i64,
    /// open | acknowledged | resolved
    pub status: String,
    /// `user:{id}`, `key:{id}` or `rules-engine`.
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertRecord {
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub device_id: String,
    /// The device's display name, when the job knows it.
    pub device_name: Option<String>,
    /// info | warning | critical
    pub severity: String,
    /// open | acknowledged | resolved
    pub status: String,
    /// Triggers while open (re-triggers count up).
    pub count: i64,
    pub opened_at_ms: i64,
    pub acknowledged_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    /// Oldest first.
    pub history: Vec<AlertHistoryRecord>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NotificationRecord {
    pub id: String,
    pub alert_id: Option<String>,
    /// email | whatsapp
    pub channel: String,
    /// pending | sending | delivered | dead
    pub status: String,
    pub attempts: i64,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertsInput {
    pub header: Header,
    /// Alerts opened in the period.
    pub alerts: Vec<AlertRecord>,
    /// Notifications created in the period.
    pub notifications: Vec<NotificationRecord>,
}

const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];
/// Rows of the offenders table.
const TOP: usize = 10;

impl AlertRecord {
    /// When the alert was first acknowledged: the history's first `acknowledged` entry, or
    /// the record's own field for alerts listed without history.
    fn acknowledged(&self) -> Option<i64> {
        self.history.iter().find(|h| h.status == "acknowledged").map(|h| h.at_ms).or(self.acknowledged_at_ms)
    }

    fn resolved(&self) -> Option<i64> {
        self.history.iter().rev().find(|h| h.status == "resolved").map(|h| h.at_ms).or(self.resolved_at_ms)
    }

    fn device(&self) -> String {
        self.device_name.clone().unwrap_or_else(|| self.device_id.clone())
    }
}

/// Counts and mean times of a set of alerts.
#[derive(Default)]
struct Tally {
    alerts: u64,
    triggers: i64,
    ack_ms: Vec<i64>,
    resolve_ms: Vec<i64>,
    critical: u64,
}

impl Tally {
    fn add(&mut self, a: &AlertRecord) {
        self.alerts += 1;
        self.triggers += a.count.max(1);
        if a.severity == "critical" {
            self.critical += 1;
        }
        if let Some(t) = a.acknowledged() {
            self.ack_ms.push((t - a.opened_at_ms).max(0));
        }
        if let Some(t) = a.resolved() {
            self.resolve_ms.push((t - a.opened_at_ms).max(0));
        }
    }
}

fn mean_minutes(v: &[i64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<i64>() as f64 / v.len() as f64 / 60_000.0)
}

pub fn build(input: &AlertsInput) -> Result<Report, BuildError> {
    let tz = input.header.tz()?;
    let count = ValueType::number("", 0);
    let minutes = ValueType::number("min", 1);

    let mut all = Tally::default();
    let mut by_severity: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut by_rule: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    let mut by_device: BTreeMap<String, Tally> = BTreeMap::new();
    for a in &input.alerts {
        all.add(a);
        by_severity.entry(a.severity.as_str()).or_default().add(a);
        by_rule.entry((a.rule_name.as_str(), a.rule_id.as_str())).or_default().add(a);
        by_device.entry(a.device()).or_default().add(a);
    }
    let still_open = input.alerts.iter().filter(|a| a.resolved().is_none()).count();

    let mut summary = section("Summary");
    summary.key_figures = vec![
        figure("Alerts opened", count.clone(), (all.alerts as f64).into()),
        figure("Critical alerts", count.clone(), (all.critical as f64).into()),
        figure("Still unresolved", count.clone(), (still_open as f64).into()),
        figure("Mean time to acknowledge (MTTA)", minutes.clone(), Cell::num(mean_minutes(&all.ack_ms))),
        figure("Mean time to resolve (MTTR)", minutes.clone(), Cell::num(mean_minutes(&all.resolve_ms))),
    ];
    summary.notes.push(
        "MTTA and MTTR are measured from opening; alerts not yet acknowledged or resolved are not in them.".into(),
    );

    let columns = |first: &str| {
        vec![
            Column::new(first, ValueType::Text),
            Column::new("Alerts", count.clone()),
            Column::new("Triggers", count.clone()),
            Column::new("MTTA", minutes.clone()),
            Column::new("MTTR", minutes.clone()),
        ]
    };
    let row = |label: String, t: &Tally| {
        vec![
            Cell::text(label),
            (t.alerts as f64).into(),
            (t.triggers as f64).into(),
            Cell::num(mean_minutes(&t.ack_ms)),
            Cell::num(mean_minutes(&t.resolve_ms)),
        ]
    };
    let total = row("Total".into(), &all);

    let mut severity = section("By severity");
    let order = |s: &str| SEVERITIES.iter().position(|x| *x == s).unwrap_or(SEVERITIES.len());
    let mut sev: Vec<(&str, &Tally)> = by_severity.iter().map(|(k, v)| (*k, v)).collect();
    sev.sort_by_key(|(k, _)| (order(k), *k));
    severity.tables.push(Table {
        id: "By severity".into(),
        title: "Alerts by severity".into(),
        columns: columns("Severity"),
        rows: sev.iter().map(|(k, t)| row((*k).to_owned(), t)).collect(),
        total: Some(total.clone()),
    });

    let mut rule = section("By rule");
    let mut rules: Vec<(&(&str, &str), &Tally)> = by_rule.iter().collect();
    rules.sort_by(|a, b| b.1.alerts.cmp(&a.1.alerts).then_with(|| a.0.cmp(b.0)));
    rule.tables.push(Table {
        id: "By rule".into(),
        title: "Alerts by rule".into(),
        columns: columns("Rule"),
        rows: rules.iter().map(|((name, _), t)| row((*name).to_owned(), t)).collect(),
        total: Some(total.clone()),
    });

    let mut device = section("By device");
    let mut devices: Vec<(&String, &Tally)> = by_device.iter().collect();
    devices.sort_by(|a, b| b.1.alerts.cmp(&a.1.alerts).then_with(|| a.0.cmp(b.0)));
    device.tables.push(Table {
        id: "By device".into(),
        title: "Alerts by device".into(),
        columns: columns("Device"),
        rows: devices.iter().map(|(d, t)| row((*d).clone(), t)).collect(),
        total: Some(total),
    });
    // Top offenders: the devices with most alerts, split by severity.
    let top: Vec<&(&String, &Tally)> = devices.iter().take(TOP).collect();
    let mut per_sev: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in &input.alerts {
        let name = a.device_name.as_deref().unwrap_or(&a.device_id);
        *per_sev.entry((name, a.severity.as_str())).or_default() += 1;
    }
    device.charts.push(Chart {
        title: format!("Top {} devices by alerts", top.len()),
        kind: ChartKind::StackedBar,
        unit: "alerts".into(),
        categories: top.iter().map(|(d, _)| (*d).clone()).collect(),
        series: SEVERITIES
            .iter()
            .map(|s| Series {
                name: (*s).to_owned(),
                values: top.iter().map(|(d, _)| Some(*per_sev.get(&(d.as_str(), *s)).unwrap_or(&0) as f64)).collect(),
            })
            .collect(),
    });

    // Alerts per local day.
    let mut per_day: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    // Every local day of the period, quiet ones too (days are 23 or 25 hours at DST changes).
    let mut day = format::to_local(tz, input.header.from_ms).date_naive();
    let last = format::to_local(tz, input.header.to_ms - 1).date_naive();
    while day <= last {
        per_day.insert(day.format("%Y-%m-%d").to_string(), [0; 3]);
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    for a in &input.alerts {
        let key = format::to_local(tz, a.opened_at_ms).format("%Y-%m-%d").to_string();
        let e = per_day.entry(key).or_default();
        e[order(&a.severity).min(2)] += 1;
    }
    summary.charts.push(Chart {
        title: "Alerts opened per day".into(),
        kind: ChartKind::StackedBar,
        unit: "alerts".into(),
        categories: per_day.keys().cloned().collect(),
        series: SEVERITIES
            .iter()
            .enumerate()
            .map(|(i, s)| Series {
                name: (*s).to_owned(),
                values: per_day.values().map(|v| Some(v[i] as f64)).collect(),
            })
            .collect(),
    });

    // Notification delivery per channel.
    let mut notify = section("Notification delivery");
    let mut per_channel: BTreeMap<&str, [f64; 6]> = BTreeMap::new();
    for n in &input.notifications {
        let e = per_channel.entry(n.channel.as_str()).or_default();
        e[0] += 1.0;
        match n.status.as_str() {
            "delivered" => e[1] += 1.0,
            "dead" => e[2] += 1.0,
            _ => e[3] += 1.0,
        }
        e[4] += n.attempts as f64;
        if let Some(d) = n.delivered_at_ms {
            e[5] += (d - n.created_at_ms).max(0) as f64 / 1000.0;
        }
    }
    let delivered: f64 = per_channel.values().map(|v| v[1]).sum();
    let sent: f64 = per_channel.values().map(|v| v[0]).sum();
    notify.key_figures = vec![
        figure("Notifications", count.clone(), sent.into()),
        figure("Delivered", ValueType::Percent { decimals: 1 }, Cell::num((sent > 0.0).then(|| delivered / sent))),
    ];
    let rate = |v: &[f64; 6]| Cell::num((v[0] > 0.0).then(|| v[1] / v[0]));
    let stat_row = |label: &str, v: &[f64; 6]| {
        vec![
            Cell::text(label),
            v[0].into(),
            v[1].into(),
            v[2].into(),
            v[3].into(),
            rate(v),
            Cell::num((v[0] > 0.0).then(|| v[4] / v[0])),
            Cell::num((v[1] > 0.0).then(|| v[5] / v[1])),
        ]
    };
    let mut sum = [0.0; 6];
    for v in per_channel.values() {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    notify.tables.push(Table {
        id: "Notifications".into(),
        title: "Notification delivery by channel".into(),
        columns: vec![
            Column::new("Channel", ValueType::Text),
            Column::new("Sent", count.clone()),
            Column::new("Delivered", count.clone()),
            Column::new("Failed", count.clone()),
            Column::new("Pending", count.clone()),
            Column::new("Delivery rate", ValueType::Percent { decimals: 1 }),
            Column::new("Attempts per message", ValueType::number("", 2)),
            Column::new("Mean delivery time", ValueType::number("s", 1)),
        ],
        rows: per_channel.iter().map(|(c, v)| stat_row(c, v)).collect(),
        total: Some(stat_row("Total", &sum)),
    });
    if input.notifications.is_empty() {
        notify.notes.push("No notification was sent in the period.".into());
    }

    input.header.report(ReportKind::Alerts, vec![summary, severity, rule, device, notify])
}
