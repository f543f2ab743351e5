//! Backtest: the same [`Evaluator`] over stored history, without side effects.
//!
//! Raw points of the rule's properties are read for every device in scope, merged in time
//! order (points of one device with the same timestamp form one observation, as they came
//! in one message), fed to a fresh evaluator (timers run between events exactly as live),
//! and timers up to `to` run at the end. Same input, same output.

use chrono_tz::Tz;
use factoryops_tsdb::{SeriesQuery, TelemetryStore, Value};
use factoryops_types::{DeviceId, FactoryId, PropertyName};
use serde::Serialize;

use crate::RulesError;
use crate::effects::{AlertLedger, AlertRecord};
use crate::eval::{Evaluator, Observation};
use crate::model::{Condition, RuleSpec, Scope};

/// Longest range a backtest may cover.
pub const MAX_BACKTEST_RANGE_MS: i64 = 366 * 86_400_000;
/// Most raw points a backtest reads unless configured otherwise
/// ([`crate::EngineConfig::max_backtest_points`], the `rules.max_backtest_points` key).
pub const DEFAULT_MAX_BACKTEST_POINTS: usize = 5_000_000;

/// A device of the factory and its type (from the device registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacktestDevice {
    pub device_id: DeviceId,
    pub device_type: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BacktestRequest {
    pub factory: FactoryId,
    /// The stored rule's id, or any label (e.g. `"draft"`) for a draft.
    pub rule_id: String,
    pub spec: RuleSpec,
    pub from_ms: i64,
    pub to_ms: i64,
    /// The factory's devices; the rule's scope picks from them (a `devices` scope also
    /// covers listed ids that are missing here).
    pub devices: Vec<BacktestDevice>,
    /// The factory's time zone (for `"timezone": "factory"` and `{time}`).
    pub timezone: Tz,
    /// The codes of the state labels the rule names ([`crate::states::resolve`]).
    pub state_codes: Vec<crate::states::StateCode>,
    /// Most raw points to read; a range holding more is refused (the points are held in memory).
    pub max_points: usize,
    /// The factory's energy configuration for `demand` and `idle` leaves ([`crate::EnergyConfig`]).
    pub energy: crate::energy::EnergyFacts,
    /// The closed periods `specific_energy` leaves judge within the range, with their
    /// figures ([`crate::SpecificEnergy`]), in time order: fed to the evaluator at their
    /// `at_ms`, between the observations, as live.
    pub periods: Vec<crate::energy::PeriodFigures>,
}

/// What a rule would have done over a time range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BacktestResult {
    /// The alerts it would have opened, in order.
    pub alerts: Vec<AlertRecord>,
    /// How many alerts it would have opened.
    pub opened: usize,
    /// How many of them would have resolved within the range.
    pub resolved: usize,
    /// Raw points read.
    pub points: usize,
    /// Observations fed to the evaluator.
    pub events: usize,
}

fn has_devicewide_stale(c: &Condition) -> bool {
    let mut found = false;
    c.visit_leaves(&mut |leaf| {
        if matches!(leaf, Condition::Stale { property: None, .. }) {
            found = true;
        }
    });
    found
}

/// Runs `req.spec` over stored history. The rule is evaluated even if it is disabled.
pub async fn backtest(req: &BacktestRequest, store: &dyn TelemetryStore) -> Result<BacktestResult, RulesError> {
    if req.to_ms <= req.from_ms {
        return Err(RulesError::bad_request("to", "must be after from"));
    }
    if req.to_ms - req.from_ms > MAX_BACKTEST_RANGE_MS {
        return Err(RulesError::bad_request("to", "the range may span at most 366 days"));
    }
    let mut spec = req.spec.clone();
    spec.enabled = true;
    let devices: Vec<BacktestDevice> = match &spec.scope {
        Scope::Devices { devices } => devices
            .iter()
            .map(|d| BacktestDevice {
                device_id: d.clone(),
                device_type: req.devices.iter().find(|x| &x.device_id == d).and_then(|x| x.device_type.clone()),
            })
            .collect(),
        Scope::DeviceType { device_type } => {
            req.devices.iter().filter(|d| d.device_type.as_deref() == Some(device_type.as_str())).cloned().collect()
        }
        Scope::All { .. } => req.devices.clone(),
    };
    let max_points = req.max_points;
    let rule_props = spec.properties();
    let devicewide = has_devicewide_stale(&spec.condition);
    let mut uses_idle = false;
    spec.condition.visit_leaves(&mut |leaf| uses_idle |= matches!(leaf, Condition::Idle));
    // (ts, device index, property, value)
    let mut points: Vec<(i64, usize, PropertyName, Value)> = Vec::new();
    for (di, device) in devices.iter().enumerate() {
        let mut props = rule_props.clone();
        if devicewide {
            for (p, _) in store.latest(&req.factory, &device.device_id).await? {
                if !props.contains(&p) {
                    props.push(p);
                }
            }
        }
        if uses_idle {
            // The property that defines this device's idle time.
            for def in req.energy.idle.iter().filter(|d| d.device_id() == &device.device_id) {
                if !props.contains(def.property()) {
                    props.push(def.property().clone());
                }
            }
        }
        for property in props {
            let query = SeriesQuery {
                device: device.device_id.clone(),
                property: property.clone(),
                from_ms: req.from_ms,
                to_ms: req.to_ms,
                aggregation: None,
                // One more than the room left, to tell "exactly full" from "too many".
                limit: Some(max_points + 1 - points.len().min(max_points)),
            };
            let samples = store.query(&req.factory, &query).await?;
            points.extend(samples.into_iter().map(|s| (s.ts_ms, di, property.clone(), s.value)));
            if points.len() > max_points {
                return Err(RulesError::bad_request(
                    "to",
                    format!("the range holds more than {max_points} points; backtest a shorter range"),
                ));
            }
        }
    }
    // Stable: within one (ts, device) the properties keep the rule's order.
    points.sort_by_key(|(ts, di, _, _)| (*ts, *di));
    let total_points = points.len();

    let mut evaluator = Evaluator::new();
    evaluator.set_timezone(&req.factory, req.timezone);
    evaluator.set_state_codes(&req.factory, &req.state_codes);
    evaluator.set_energy_facts(&req.factory, &req.energy);
    evaluator
        .upsert_rule(&req.factory, &req.rule_id, &spec, req.from_ms)
        .map_err(|m| RulesError::Invalid(vec![crate::FieldError::new("rule", m)]))?;
    if !req.periods.is_empty() {
        // Scopes by device type need the types of devices no observation may show.
        for device in &devices {
            evaluator.set_device_type(&req.factory, &device.device_id, device.device_type.clone());
        }
    }
    let mut ledger = AlertLedger::default();
    let mut effects = Vec::new();
    let mut events = 0usize;
    let mut periods = req.periods.iter().filter(|p| p.at_ms <= req.to_ms).peekable();
    let mut iter = points.into_iter().peekable();
    while let Some((ts, di, property, value)) = iter.next() {
        while let Some(batch) = periods.next_if(|p| p.at_ms <= ts) {
            evaluator.on_period(&req.factory, batch, &mut effects);
            ledger.apply(&effects);
            effects.clear();
        }
        let mut values = vec![(property, value)];
        while let Some((_, _, p, v)) = iter.next_if(|(t, d, _, _)| *t == ts && *d == di) {
            values.push((p, v));
        }
        let device = &devices[di];
        let obs = Observation {
            factory_id: req.factory.clone(),
            device_id: device.device_id.clone(),
            device_type: device.device_type.clone(),
            ts_ms: ts,
            values,
            event_key: format!("backtest:{}:{ts}", device.device_id),
        };
        evaluator.on_observation(&obs, &mut effects);
        ledger.apply(&effects);
        effects.clear();
        events += 1;
    }
    for batch in periods {
        evaluator.on_period(&req.factory, batch, &mut effects);
        ledger.apply(&effects);
        effects.clear();
    }
    evaluator.tick(req.to_ms, &mut effects);
    ledger.apply(&effects);
    let opened = ledger.alerts.len();
    let resolved = ledger.alerts.iter().filter(|a| a.resolved_at.is_some()).count();
    Ok(BacktestResult { alerts: ledger.alerts, opened, resolved, points: total_points, events })
}
