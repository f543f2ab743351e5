#![allow(clippy::unwrap_used)]
//! Rules on derived energy quantities (ADR 0016): demand over clock-aligned intervals
//! (completed and projected), idle by the device's energy configuration, their
//! validation, and the backtest over stored power. Numbers are computed by hand in the
//! comments.

use std::collections::HashSet;
use std::sync::Arc;

use factoryops_rules::{
    BacktestDevice, BacktestRequest, Condition, DemandWhen, Effect, EnergyFacts, Evaluator, IdleDefinition,
    Observation, PowerSource, RuleSpec, validate_rule,
};
use factoryops_tsdb::{EmbeddedConfig, EmbeddedStore, Point, TelemetryStore, Value};
use factoryops_types::{DeviceId, FactoryId, ManualClock, PropertyName, parse_rfc3339_ms};
use serde_json::json;

const MIN: i64 = 60_000;

fn factory() -> FactoryId {
    FactoryId::parse("plant-a").unwrap()
}

fn dev(d: &str) -> DeviceId {
    DeviceId::parse(d).unwrap()
}

fn prop(p: &str) -> PropertyName {
    PropertyName::parse(p).unwrap()
}

fn t0() -> i64 {
    parse_rfc3339_ms("2026-03-02T00:00:00Z").unwrap()
}

fn spec(condition: serde_json::Value, for_seconds: u64) -> RuleSpec {
    let body = json!({
        "name": "energy", "scope": {"devices": ["press-1", "press-2", "press-3"]}, "condition": condition,
        "for_seconds": for_seconds, "severity": "warning", "message": "{device} {value} ({threshold})",
        "notify": {"emails": ["ops@example.com"]}
    });
    match validate_rule(&body, &HashSet::new()) {
        Ok(v) => v.spec,
        Err(e) => panic!("{e:?}"),
    }
}

/// press-1 reports `power_w` in W and counts idle below 5 kW; press-2 has an idle state
/// (codes 1 = idle, 3 = off); press-3 has no energy configuration.
fn facts() -> EnergyFacts {
    EnergyFacts {
        power: vec![PowerSource {
            device_id: dev("press-1"),
            property: prop("power_w"),
            kw_per_unit: 0.001,
            max_gap_ms: 15 * MIN,
        }],
        idle: vec![
            IdleDefinition::BelowKw {
                device_id: dev("press-1"),
                property: prop("power_w"),
                kw_per_unit: 0.001,
                below_kw: 5.0,
            },
            IdleDefinition::State { device_id: dev("press-2"), property: prop("state"), codes: vec![1, 3] },
        ],
    }
}

struct H {
    ev: Evaluator,
}

impl H {
    fn new(condition: serde_json::Value, for_seconds: u64, tz: &str) -> Self {
        let mut ev = Evaluator::new();
        ev.set_timezone(&factory(), tz.parse().unwrap());
        ev.set_energy_facts(&factory(), &facts());
        ev.upsert_rule(&factory(), "rule-1", &spec(condition, for_seconds), 0).unwrap();
        Self { ev }
    }

    fn send(&mut self, device: &str, ts: i64, property: &str, value: f64) -> Vec<Effect> {
        let obs = Observation {
            factory_id: factory(),
            device_id: dev(device),
            device_type: None,
            ts_ms: ts,
            values: vec![(prop(property), Value::Float(value))],
            event_key: format!("e{ts}"),
        };
        let mut out = Vec::new();
        self.ev.on_observation(&obs, &mut out);
        out
    }

    fn tick(&mut self, now: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        self.ev.tick(now, &mut out);
        out
    }
}

/// The opened alert's (time, value), if any.
fn opened(effects: &[Effect]) -> Option<(i64, Value)> {
    effects.iter().find_map(|e| match e {
        Effect::Open(o) => Some((o.at_ms, o.value.unwrap())),
        _ => None,
    })
}

fn resolved_at(effects: &[Effect]) -> Option<i64> {
    effects.iter().find_map(|e| match e {
        Effect::Resolve { at_ms, .. } => Some(*at_ms),
        _ => None,
    })
}

fn kw(v: Value) -> f64 {
    match v {
        Value::Float(f) => f,
        Value::Bool(_) => panic!("not a number"),
    }
}

/// Readings of press-1 (W), minutes after t0: 600, 900, 1000, 1000 kW at 0, 5, 10, 15;
/// 700 kW at 20 and 25; then silence.
const SERIES: [(i64, f64); 6] =
    [(0, 600_000.0), (5, 900_000.0), (10, 1_000_000.0), (15, 1_000_000.0), (20, 700_000.0), (25, 700_000.0)];

#[test]
fn completed_demand_opens_when_the_interval_closes_and_resolves_on_a_timer() {
    let t0 = t0();
    let mut h = H::new(
        json!({"property": "power_w", "op": "demand", "interval_minutes": 15, "compare": ">", "value": 800}),
        0,
        "UTC",
    );
    let mut effects = Vec::new();
    for (minute, w) in &SERIES[..3] {
        effects.extend(h.send("press-1", t0 + minute * MIN, "power_w", *w));
    }
    assert!(effects.is_empty(), "no interval is complete yet: {effects:?}");
    // [00:00, 00:15): (600+900)/2·5/60 + (900+1000)/2·5/60 + (1000+1000)/2·5/60
    // = 62.5 + 79.1667 + 83.3333 = 225 kWh over 0.25 h = 900 kW, complete at the 00:15 reading.
    let out = h.send("press-1", t0 + 15 * MIN, "power_w", 1_000_000.0);
    let (at, value) = opened(&out).unwrap();
    assert_eq!(at, t0 + 15 * MIN);
    assert!((kw(value) - 900.0).abs() < 1e-9, "{value:?}");
    let Effect::Open(open) = &out[0] else { panic!() };
    assert_eq!(open.threshold.as_deref(), Some("800 kW"));
    assert_eq!(open.property.as_deref(), Some("power_w"));
    // [00:15, 00:30): (1000+700)/2·5/60 + 700·5/60 = 70.8333 + 58.3333 = 129.1667 kWh, then
    // silence: the 00:25 reading could be bridged until 00:40 (15-minute gap), so the
    // interval is complete only after that, without any further reading: 516.667 kW.
    assert!(h.send("press-1", t0 + 20 * MIN, "power_w", 700_000.0).is_empty());
    assert!(h.send("press-1", t0 + 25 * MIN, "power_w", 700_000.0).is_empty());
    assert!(h.tick(t0 + 40 * MIN).is_empty(), "a reading at 00:40 would still count");
    let out = h.tick(t0 + 41 * MIN);
    assert_eq!(resolved_at(&out), Some(t0 + 40 * MIN + 1));
    let Some(Effect::Resolve { value: Some(value), .. }) = out.first() else { panic!("{out:?}") };
    assert!((kw(*value) - 516.666_666_666_7).abs() < 1e-6, "{value:?}");
}

#[test]
fn projected_demand_warns_before_the_peak_is_set() {
    let t0 = t0();
    let mut h = H::new(
        json!({"property": "power_w", "op": "demand", "when": "projected", "compare": ">", "value": 800}),
        0,
        "UTC",
    );
    // 00:00: 600 kW held for 15 minutes = 150 kWh → 600 kW.
    assert!(h.send("press-1", t0, "power_w", 600_000.0).is_empty());
    // 00:05: 62.5 kWh so far + 900 kW · 10 min = 150 kWh → 212.5 kWh / 0.25 h = 850 kW.
    let (at, value) = opened(&h.send("press-1", t0 + 5 * MIN, "power_w", 900_000.0)).unwrap();
    assert_eq!(at, t0 + 5 * MIN);
    assert!((kw(value) - 850.0).abs() < 1e-9, "{value:?}");
    assert!(h.send("press-1", t0 + 10 * MIN, "power_w", 1_000_000.0).is_empty());
    // 00:15 starts a new interval: 1000 kW held = 1000 kW, still above.
    assert!(h.send("press-1", t0 + 15 * MIN, "power_w", 1_000_000.0).is_empty());
    // 00:20: 70.8333 kWh + 700 kW · 10 min = 116.6667 → 187.5 kWh / 0.25 h = 750 kW.
    assert_eq!(resolved_at(&h.send("press-1", t0 + 20 * MIN, "power_w", 700_000.0)), Some(t0 + 20 * MIN));
}

/// Asia/Kolkata is UTC+05:30: hour intervals run from :30 to :30 UTC, as in the energy
/// computations' peak demand. The same readings judged in UTC hours fire nothing.
#[test]
fn hour_intervals_follow_the_local_clock_in_kolkata() {
    let t0 = t0(); // 05:30 in Kolkata
    let condition =
        json!({"property": "power_w", "op": "demand", "interval_minutes": 60, "compare": ">", "value": 800});
    let mut kolkata = H::new(condition.clone(), 0, "Asia/Kolkata");
    let mut utc = H::new(condition, 0, "UTC");
    let mut fired = Vec::new();
    // 1000 kW every 15 minutes from 23:30 to 00:30 UTC (05:00 to 06:00 local).
    for q in -2..=2 {
        let ts = t0 + q * 15 * MIN;
        fired.extend(kolkata.send("press-1", ts, "power_w", 1_000_000.0));
        assert!(utc.send("press-1", ts, "power_w", 1_000_000.0).is_empty(), "at {q}");
    }
    // Local [05:00, 06:00) = UTC [23:30, 00:30): 1000 kW for the whole hour.
    let (at, value) = opened(&fired).unwrap();
    assert_eq!(at, t0 + 30 * MIN);
    assert!((kw(value) - 1000.0).abs() < 1e-9);
    // In UTC, [23:00, 00:00) held 30 minutes of 1000 kW: 500 kW. [00:00, 01:00) is running.
    assert!(utc.tick(t0 + 40 * MIN).is_empty());
}

/// Without a power annotation (press-3), the leaf is unknown: nothing opens or resolves.
#[test]
fn demand_of_a_property_not_annotated_as_power_is_unknown() {
    let t0 = t0();
    let mut h = H::new(json!({"property": "power_w", "op": "demand", "compare": ">", "value": 0}), 0, "UTC");
    for q in 0..4 {
        assert!(h.send("press-3", t0 + q * 15 * MIN, "power_w", 1_000_000.0).is_empty());
    }
    assert!(h.tick(t0 + 120 * MIN).is_empty());
}

/// "Idle longer than 30 minutes" for a device idle below a power threshold and for one
/// with an idle state; a device without an idle definition is unknown.
#[test]
fn idle_for_thirty_minutes_by_threshold_and_by_state() {
    let t0 = t0();
    let mut h = H::new(json!({"op": "idle"}), 1800, "UTC");
    // press-1: 20 kW is running, 3 kW (3000 W) is below its 5 kW threshold.
    assert!(h.send("press-1", t0, "power_w", 20_000.0).is_empty());
    assert!(h.send("press-1", t0 + MIN, "power_w", 3_000.0).is_empty());
    // press-2: state code 3 (off) counts as idle.
    assert!(h.send("press-2", t0 + 2 * MIN, "state", 3.0).is_empty());
    // press-3: no idle definition.
    assert!(h.send("press-3", t0 + 2 * MIN, "power_w", 0.0).is_empty());
    assert!(h.tick(t0 + 30 * MIN).is_empty());
    let out = h.tick(t0 + 31 * MIN);
    let (at, value) = opened(&out).unwrap();
    assert_eq!(at, t0 + 31 * MIN, "press-1: 30 minutes after 00:01");
    assert!((kw(value) - 3.0).abs() < 1e-9);
    let out = h.tick(t0 + 32 * MIN);
    assert_eq!(opened(&out).map(|(at, _)| at), Some(t0 + 32 * MIN), "press-2");
    assert!(h.tick(t0 + 120 * MIN).is_empty(), "press-3 never");
    // Running again resolves.
    assert_eq!(resolved_at(&h.send("press-2", t0 + 121 * MIN, "state", 0.0)), Some(t0 + 121 * MIN));
}

#[test]
fn energy_leaves_are_validated_with_field_paths() {
    let errors = |condition: serde_json::Value| -> Vec<(String, String)> {
        let body = json!({"name": "r", "scope": {"all": true}, "condition": condition, "severity": "info"});
        validate_rule(&body, &HashSet::new()).unwrap_err().into_iter().map(|e| (e.field, e.message)).collect()
    };
    let e =
        errors(json!({"all": [{"property": "p", "op": "demand", "interval_minutes": 20, "compare": ">", "value": 1}]}));
    assert_eq!(e, [("condition.all[0].interval_minutes".to_string(), "must be 15, 30, 45 or 60".to_string())]);
    let e = errors(json!({"property": "p", "op": "demand", "when": "soon", "compare": "~", "value": "x", "per": 1}));
    let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["condition.per", "condition.when", "condition.compare", "condition.value"]);
    let e = errors(json!({"op": "demand", "compare": ">", "value": 1}));
    assert_eq!(e[0].0, "condition.property");
    let e = errors(json!({"not": {"op": "idle", "seconds": 5}}));
    assert_eq!(e, [("condition.not.seconds".to_string(), "unknown field".to_string())]);

    // Defaults are spelled out in responses; the JSON round-trips.
    let parsed = spec(json!({"property": "power_kw", "op": "demand", "compare": ">=", "value": 800}), 0);
    assert_eq!(
        parsed.condition,
        Condition::Demand {
            property: prop("power_kw"),
            interval_minutes: 15,
            when: DemandWhen::Completed,
            compare: factoryops_rules::CmpOp::Ge,
            value: 800.0
        }
    );
    let full = json!({"property": "power_kw", "op": "demand", "interval_minutes": 15, "when": "completed", "compare": ">=", "value": 800});
    assert_eq!(parsed.condition.to_json(), full);
    assert_eq!(spec(json!({"op": "idle"}), 1800).condition.to_json(), json!({"op": "idle"}));
}

/// The backtest replays stored power through the same evaluator: the alert opens when
/// [00:00, 00:15) completes at 900 kW and resolves when the silence closes [00:15, 00:30).
#[tokio::test]
async fn backtest_of_a_demand_rule_over_stored_power() {
    let t0 = t0();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(t0 + 86_400_000));
    let tsdb = EmbeddedStore::open(EmbeddedConfig::new(dir.path()), clock).unwrap();
    let points: Vec<Point> = SERIES
        .iter()
        .map(|(minute, w)| Point {
            device: dev("press-1"),
            property: prop("power_w"),
            ts_ms: t0 + minute * MIN,
            value: Value::Float(*w),
        })
        .collect();
    tsdb.write(&factory(), &points).await.unwrap();
    let request = BacktestRequest {
        factory: factory(),
        rule_id: "draft".into(),
        spec: spec(
            json!({"property": "power_w", "op": "demand", "interval_minutes": 15, "compare": ">", "value": 800}),
            0,
        ),
        from_ms: t0 - 60 * MIN,
        to_ms: t0 + 120 * MIN,
        devices: vec![BacktestDevice { device_id: dev("press-1"), device_type: None }],
        timezone: chrono_tz::UTC,
        state_codes: Vec::new(),
        max_points: 1_000,
        energy: facts(),
        periods: Vec::new(),
    };
    let result = factoryops_rules::backtest(&request, &tsdb).await.unwrap();
    assert_eq!((result.opened, result.resolved, result.points), (1, 1, 6));
    let alert = &result.alerts[0];
    assert_eq!(alert.opened_at, t0 + 15 * MIN);
    assert_eq!(alert.resolved_at, Some(t0 + 40 * MIN + 1));
    assert!((kw(alert.value.unwrap()) - 516.666_666_666_7).abs() < 1e-6, "the value at resolution");
}
