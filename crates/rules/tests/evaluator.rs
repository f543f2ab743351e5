#![allow(clippy::unwrap_used)]
//! The evaluator without I/O: operators, logic, durations, hysteresis, cooldown,
//! schedules across DST, stale data, reminders, replay.

use std::collections::HashSet;

use factoryops_rules::{
    CmpOp, Condition, Effect, Evaluator, NotifyKind, Observation, ResolveReason, RestoredAlert, RuleSpec, Scope,
    Severity, validate_rule,
};
use factoryops_tsdb::Value;
use factoryops_types::{DeviceId, FactoryId, PropertyName, parse_rfc3339_ms};
use proptest::prelude::*;
use serde_json::json;

fn factory() -> FactoryId {
    FactoryId::parse("plant-a").unwrap()
}

fn spec(body: serde_json::Value) -> RuleSpec {
    match validate_rule(&body, &HashSet::new()) {
        Ok(v) => v.spec,
        Err(e) => panic!("{e:?}"),
    }
}

fn base(condition: serde_json::Value) -> serde_json::Value {
    json!({
        "name": "r", "scope": {"devices": ["press-1"]}, "condition": condition,
        "severity": "warning", "notify": {"emails": ["ops@example.com"]}
    })
}

struct H {
    ev: Evaluator,
}

impl H {
    fn new(body: serde_json::Value) -> Self {
        let mut ev = Evaluator::new();
        ev.upsert_rule(&factory(), "rule-1", &spec(body), 0).unwrap();
        Self { ev }
    }

    fn send_to(&mut self, device: &str, ts: i64, values: &[(&str, Value)]) -> Vec<Effect> {
        let obs = Observation {
            factory_id: factory(),
            device_id: DeviceId::parse(device).unwrap(),
            device_type: Some("press".into()),
            ts_ms: ts,
            values: values.iter().map(|(p, v)| (PropertyName::parse(*p).unwrap(), *v)).collect(),
            event_key: format!("e{ts}"),
        };
        let mut out = Vec::new();
        self.ev.on_observation(&obs, &mut out);
        out
    }

    fn send(&mut self, ts: i64, values: &[(&str, Value)]) -> Vec<Effect> {
        self.send_to("press-1", ts, values)
    }

    fn tick(&mut self, now: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        self.ev.tick(now, &mut out);
        out
    }
}

fn f(v: f64) -> Value {
    Value::Float(v)
}

/// Short names of the effects: open, update, resolve, notify:<kind>.
fn kinds(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Open(_) => "open".to_string(),
            Effect::Update { count, .. } => format!("update:{count}"),
            Effect::Resolve { .. } => "resolve".to_string(),
            Effect::Notify(n) => format!("notify:{}", n.kind.as_str()),
        })
        .collect()
}

fn opens(effects: &[Effect]) -> usize {
    effects.iter().filter(|e| matches!(e, Effect::Open(_))).count()
}

#[test]
fn every_comparison_operator() {
    type Case<'a> = (&'a str, f64, &'a [(f64, bool)]);
    let cases: &[Case] = &[
        (">", 80.0, &[(80.5, true), (80.0, false), (10.0, false)]),
        (">=", 80.0, &[(80.0, true), (79.9, false)]),
        ("<", 10.0, &[(9.9, true), (10.0, false)]),
        ("<=", 10.0, &[(10.0, true), (10.1, false)]),
        ("==", 3.0, &[(3.0, true), (3.1, false)]),
        ("!=", 3.0, &[(3.1, true), (3.0, false)]),
    ];
    for (op, threshold, values) in cases {
        for (v, expect) in *values {
            let mut h = H::new(base(json!({"property": "temp_c", "op": op, "value": threshold})));
            let out = h.send(1_000, &[("temp_c", f(*v))]);
            assert_eq!(opens(&out) == 1, *expect, "{v} {op} {threshold}");
        }
    }
}

#[test]
fn booleans_and_ranges() {
    let mut h = H::new(base(json!({"property": "running", "op": "==", "value": true})));
    assert_eq!(opens(&h.send(1, &[("running", Value::Bool(false))])), 0);
    assert_eq!(opens(&h.send(2, &[("running", Value::Bool(true))])), 1);
    let mut h = H::new(base(json!({"property": "running", "op": "!=", "value": true})));
    assert_eq!(opens(&h.send(1, &[("running", Value::Bool(false))])), 1);
    // A number where a boolean is expected is "unknown": no change.
    let mut h = H::new(base(json!({"property": "running", "op": "==", "value": true})));
    assert!(h.send(1, &[("running", f(1.0))]).is_empty());

    for (op, v, expect) in [
        ("between", 5.0, true),
        ("between", 50.0, true),
        ("between", 4.99, false),
        ("between", 50.01, false),
        ("outside", 4.99, true),
        ("outside", 50.01, true),
        ("outside", 5.0, false),
        ("outside", 20.0, false),
    ] {
        let mut h = H::new(base(json!({"property": "power_kw", "op": op, "min": 5, "max": 50})));
        assert_eq!(opens(&h.send(1, &[("power_kw", f(v))])) == 1, expect, "{op} {v}");
    }
}

#[test]
fn api_example_multi_property_uses_latest_values() {
    let body = json!({
      "name": "Compressor overheating",
      "enabled": true,
      "scope": {"devices": ["press-1"]},
      "condition": {"all": [
        {"property": "temp_c", "op": ">", "value": 80},
        {"any": [{"property": "running", "op": "==", "value": true},
                 {"property": "power_kw", "op": "between", "min": 5, "max": 50}]}
      ]},
      "for_seconds": 0,
      "severity": "critical",
      "message": "{device} {property} = {value} (limit {threshold})",
      "cooldown_seconds": 300,
      "auto_resolve": true,
      "notify": {"users": ["u1"], "emails": ["ops@example.com"], "whatsapp": ["+4915112345678"]}
    });
    let mut h = H::new(body);
    // temp alone: `any` is unknown → all is unknown → nothing.
    assert!(h.send(1_000, &[("temp_c", f(85.0))]).is_empty());
    // running arrives in a later message: latest temp is still 85.
    let out = h.send(2_000, &[("running", Value::Bool(true))]);
    assert_eq!(kinds(&out), ["open", "notify:opened"]);
    let Effect::Open(o) = &out[0] else { panic!() };
    assert_eq!(o.message, "press-1 temp_c = 85 (limit 80)");
    assert_eq!(o.severity, Severity::Critical);
    assert_eq!(o.alert.key, "rule-1:press-1:2000");
    // temp back to normal → auto-resolve with a resolved notification.
    assert_eq!(kinds(&h.send(3_000, &[("temp_c", f(70.0))])), ["resolve", "notify:resolved"]);
    // Other devices are not in scope.
    assert!(h.send_to("press-2", 4_000, &[("temp_c", f(99.0)), ("running", Value::Bool(true))]).is_empty());
}

#[test]
fn for_duration_fires_from_the_timer_and_cancels_when_false() {
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["for_seconds"] = json!(60);
    let mut h = H::new(body);
    assert!(h.send(0, &[("temp_c", f(90.0))]).is_empty());
    assert!(h.tick(59_999).is_empty());
    let out = h.tick(60_000);
    assert_eq!(kinds(&out), ["open", "notify:opened"]);
    assert_eq!(out[0].at_ms(), 60_000, "fires at the due time");

    // Cancelled: false before the duration is over.
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["for_seconds"] = json!(60);
    let mut h = H::new(body);
    h.send(0, &[("temp_c", f(90.0))]);
    h.send(30_000, &[("temp_c", f(70.0))]);
    h.send(40_000, &[("temp_c", f(90.0))]);
    assert!(h.tick(60_000).is_empty(), "the clock restarted at 40 s");
    assert_eq!(opens(&h.tick(100_000)), 1);
}

/// State leaves compare the property's stored code with the label's code (set by the
/// engine from the ingest dictionary, ADR 0014); a label without a code matches nothing.
#[test]
fn state_labels_compare_by_code() {
    let state = PropertyName::parse("state").unwrap();
    let codes = |idle: Option<u32>| vec![(state.clone(), "idle".to_string(), idle)];
    let with = |body: serde_json::Value, idle: Option<u32>| {
        let mut ev = Evaluator::new();
        ev.set_state_codes(&factory(), &codes(idle));
        ev.upsert_rule(&factory(), "rule-1", &spec(body), 0).unwrap();
        H { ev }
    };
    // "idle" is code 1; running is 0.
    let mut body = base(json!({"property": "state", "op": "==", "value": "idle"}));
    body["for_seconds"] = json!(600);
    body["message"] = json!("{device} {value} ({threshold})");
    let mut h = with(body.clone(), Some(1));
    assert!(h.send(0, &[("state", f(0.0))]).is_empty());
    assert!(h.send(60_000, &[("state", f(1.0))]).is_empty(), "idle, pending");
    let out = h.tick(660_000);
    assert_eq!(kinds(&out), ["open", "notify:opened"], "idle for 10 min");
    let Effect::Open(open) = &out[0] else { panic!("{out:?}") };
    assert_eq!(open.message, "press-1 idle (idle)");
    assert_eq!(kinds(&h.send(700_000, &[("state", f(0.0))])), ["resolve", "notify:resolved"]);

    // `!=`: every other state holds.
    let mut h = with(base(json!({"property": "state", "op": "!=", "value": "idle"})), Some(1));
    assert!(h.send(0, &[("state", f(1.0))]).is_empty());
    assert_eq!(opens(&h.send(1_000, &[("state", f(2.0))])), 1);
    // Without a code, `==` matches no value and `!=` every value.
    let mut h = with(base(json!({"property": "state", "op": "==", "value": "idle"})), None);
    assert!(h.send(0, &[("state", f(1.0))]).is_empty());
    let mut h = with(base(json!({"property": "state", "op": "!=", "value": "idle"})), None);
    assert_eq!(opens(&h.send(0, &[("state", f(1.0))])), 1);

    // Only == and != take a label; the rule round-trips its JSON.
    let bad = validate_rule(&base(json!({"not": {"property": "state", "op": "<", "value": "idle"}})), &HashSet::new());
    let errors = bad.err().unwrap();
    assert_eq!(errors[0].field, "condition.not.value", "{errors:?}");
    assert!(validate_rule(&base(json!({"property": "state", "op": "==", "value": ""})), &HashSet::new()).is_err());
    let parsed = spec(base(json!({"property": "state", "op": "!=", "value": "setup"})));
    assert_eq!(parsed.condition, Condition::State { property: state.clone(), equal: false, label: "setup".into() });
    assert_eq!(parsed.condition.to_json(), json!({"property": "state", "op": "!=", "value": "setup"}));
}

#[test]
fn an_event_after_the_due_time_runs_the_timer_first() {
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["for_seconds"] = json!(10);
    let mut h = H::new(body);
    h.send(0, &[("temp_c", f(90.0))]);
    // No tick in between: the event at 15 s first fires the timer at 10 s, then resolves.
    let out = h.send(15_000, &[("temp_c", f(10.0))]);
    assert_eq!(kinds(&out), ["open", "notify:opened", "resolve", "notify:resolved"]);
    assert_eq!(out[0].at_ms(), 10_000);
}

#[test]
fn deadband_hysteresis() {
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["deadband"] = json!(2);
    let mut h = H::new(body);
    assert_eq!(opens(&h.send(1, &[("temp_c", f(81.0))])), 1);
    assert!(h.send(2, &[("temp_c", f(79.0))]).is_empty(), "79 > 78: still firing");
    assert_eq!(kinds(&h.send(3, &[("temp_c", f(78.0))])), ["resolve", "notify:resolved"]);
    // Not the relax direction: a `not` flips it.
    let mut body = base(json!({"not": {"property": "temp_c", "op": "<", "value": 80}}));
    body["deadband"] = json!(2);
    let mut h = H::new(body);
    assert_eq!(opens(&h.send(1, &[("temp_c", f(80.0))])), 1);
    assert!(h.send(2, &[("temp_c", f(79.0))]).is_empty(), "not(79 < 78) still true");
    assert_eq!(kinds(&h.send(3, &[("temp_c", f(77.9))]))[0], "resolve");
}

#[test]
fn clear_for_seconds_delays_the_resolve() {
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["clear_for_seconds"] = json!(30);
    let mut h = H::new(body);
    h.send(0, &[("temp_c", f(90.0))]);
    assert!(h.send(10_000, &[("temp_c", f(70.0))]).is_empty());
    assert!(h.send(20_000, &[("temp_c", f(95.0))]).is_empty(), "bounce: back to firing, no update");
    assert!(h.send(25_000, &[("temp_c", f(70.0))]).is_empty());
    assert!(h.tick(54_999).is_empty());
    let out = h.tick(55_000);
    assert_eq!(kinds(&out), ["resolve", "notify:resolved"]);
    assert_eq!(out[0].at_ms(), 55_000);
}

#[test]
fn cooldown_suppresses_repeat_notifications_not_alerts() {
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["cooldown_seconds"] = json!(300);
    let mut h = H::new(body);
    assert_eq!(kinds(&h.send(0, &[("temp_c", f(90.0))])), ["open", "notify:opened"]);
    assert_eq!(kinds(&h.send(10_000, &[("temp_c", f(70.0))])), ["resolve", "notify:resolved"]);
    assert_eq!(kinds(&h.send(20_000, &[("temp_c", f(90.0))])), ["open"], "inside the cooldown: no notification");
    assert_eq!(kinds(&h.send(30_000, &[("temp_c", f(70.0))])), ["resolve"], "its resolve is silent too");
    assert_eq!(kinds(&h.send(300_000, &[("temp_c", f(90.0))])), ["open", "notify:opened"]);
}

#[test]
fn without_auto_resolve_a_retrigger_updates_the_open_alert() {
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["auto_resolve"] = json!(false);
    let mut h = H::new(body);
    assert_eq!(opens(&h.send(0, &[("temp_c", f(90.0))])), 1);
    assert!(h.send(1_000, &[("temp_c", f(95.0))]).is_empty(), "still true: nothing new");
    assert!(h.send(2_000, &[("temp_c", f(70.0))]).is_empty(), "false: stays open");
    let out = h.send(3_000, &[("temp_c", f(99.0))]);
    assert_eq!(kinds(&out), ["update:2", "notify:retriggered"]);
    let Effect::Update { value, .. } = &out[0] else { panic!() };
    assert_eq!(*value, Some(f(99.0)));
}

#[test]
fn rate_of_change() {
    let mut h = H::new(base(json!({
        "property": "temp_c", "op": "rate_of_change", "window_seconds": 60, "compare": ">", "value": 1, "per": "minute"
    })));
    assert!(h.send(0, &[("temp_c", f(20.0))]).is_empty(), "one sample: unknown");
    assert!(h.send(30_000, &[("temp_c", f(20.4))]).is_empty(), "0.8/min");
    assert_eq!(opens(&h.send(60_000, &[("temp_c", f(22.0))])), 1, "2/min over the window");
    // Per second (default): window 10 s.
    let mut h = H::new(base(json!({
        "property": "p", "op": "rate_of_change", "window_seconds": 10, "compare": "<", "value": -5
    })));
    h.send(0, &[("p", f(100.0))]);
    assert_eq!(opens(&h.send(5_000, &[("p", f(50.0))])), 1, "-10/s");
}

#[test]
fn stale_device_from_the_timer() {
    let clock = factoryops_types::ManualClock::new(1_000_000);
    use factoryops_types::Clock;
    let mut h = H::new(base(json!({"op": "stale", "seconds": 300})));
    assert!(h.send(clock.now_ms(), &[("anything", f(1.0))]).is_empty());
    clock.advance(299_999);
    assert!(h.tick(clock.now_ms()).is_empty());
    clock.advance(1);
    let out = h.tick(clock.now_ms());
    assert_eq!(kinds(&out), ["open", "notify:opened"]);
    let Effect::Open(o) = &out[0] else { panic!() };
    assert_eq!(o.threshold.as_deref(), Some("300s"));
    assert_eq!(o.value, Some(f(300.0)));
    // Data again → resolves.
    clock.advance(5_000);
    assert_eq!(kinds(&h.send(clock.now_ms(), &[("other", f(1.0))]))[0], "resolve");
    // Per property: only that property counts.
    let mut h = H::new(base(json!({"property": "temp_c", "op": "stale", "seconds": 60})));
    h.send(0, &[("temp_c", f(1.0))]);
    h.send(30_000, &[("power", f(1.0))]);
    assert_eq!(opens(&h.tick(60_000)), 1);
}

#[test]
fn stale_combined_with_a_value() {
    // Running but silent for 2 minutes.
    let mut h = H::new(base(json!({"all": [
        {"property": "running", "op": "==", "value": true},
        {"property": "temp_c", "op": "stale", "seconds": 120}
    ]})));
    h.send(0, &[("running", Value::Bool(true)), ("temp_c", f(20.0))]);
    h.send(60_000, &[("running", Value::Bool(true))]);
    assert_eq!(opens(&h.tick(120_000)), 1);
    let mut h = H::new(base(json!({"all": [
        {"property": "running", "op": "==", "value": true},
        {"property": "temp_c", "op": "stale", "seconds": 120}
    ]})));
    h.send(0, &[("running", Value::Bool(false)), ("temp_c", f(20.0))]);
    assert!(h.tick(500_000).is_empty(), "not running: no alert");
}

#[test]
fn reminders_and_escalation_until_acknowledged() {
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["severity"] = json!("critical");
    body["notify"] = json!({
        "emails": ["ops@example.com"], "remind_every_minutes": 5,
        "escalate_after_minutes": 12, "escalate_to": {"whatsapp": ["+4915112345678"]}
    });
    let mut h = H::new(body);
    let out = h.send(0, &[("temp_c", f(90.0))]);
    let Effect::Open(o) = &out[0] else { panic!() };
    let key = o.alert.key.clone();
    assert_eq!(kinds(&h.tick(299_999)), Vec::<String>::new());
    assert_eq!(kinds(&h.tick(300_000)), ["notify:reminder"]);
    assert_eq!(kinds(&h.tick(600_000)), ["notify:reminder"]);
    let out = h.tick(720_000);
    assert_eq!(kinds(&out), ["notify:escalation"]);
    let Effect::Notify(n) = &out[0] else { panic!() };
    assert_eq!(n.targets.whatsapp, ["+4915112345678"]);
    h.ev.alert_acknowledged(&factory(), "rule-1", &DeviceId::parse("press-1").unwrap(), &key);
    assert!(h.tick(3_600_000).is_empty(), "acknowledged: quiet");
}

#[test]
fn manual_resolve_waits_for_the_condition_to_clear() {
    let mut h = H::new(base(json!({"property": "temp_c", "op": ">", "value": 80})));
    let out = h.send(0, &[("temp_c", f(90.0))]);
    let key = out[0].alert().key.clone();
    h.ev.alert_resolved(&factory(), "rule-1", &DeviceId::parse("press-1").unwrap(), &key);
    assert!(h.send(1_000, &[("temp_c", f(95.0))]).is_empty(), "still hot: no new alert");
    assert!(h.send(2_000, &[("temp_c", f(70.0))]).is_empty());
    assert_eq!(opens(&h.send(3_000, &[("temp_c", f(95.0))])), 1);
}

#[test]
fn replayed_events_never_open_twice() {
    let body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    let mut h = H::new(body.clone());
    let first = h.send(5_000, &[("temp_c", f(90.0))]);
    assert_eq!(opens(&first), 1);
    assert!(h.send(5_000, &[("temp_c", f(90.0))]).is_empty(), "same event again");
    assert!(h.send(4_000, &[("temp_c", f(90.0))]).is_empty(), "an older event");
    // After a restart the open alert is restored; the replay changes nothing.
    let key = first[0].alert().key.clone();
    let mut ev = Evaluator::new();
    ev.upsert_rule(&factory(), "rule-1", &spec(body.clone()), 0).unwrap();
    assert!(ev.restore_alert(
        &factory(),
        &RestoredAlert {
            rule_id: "rule-1".into(),
            device_id: DeviceId::parse("press-1").unwrap(),
            key: key.clone(),
            opened_at: 5_000,
            count: 1,
            acknowledged: false,
            escalated: false,
        }
    ));
    let mut h2 = H { ev };
    assert!(h2.send(5_000, &[("temp_c", f(90.0))]).is_empty());
    // Without state, a replay derives the same key, so the store's unique key drops it.
    let mut h3 = H::new(body);
    let again = h3.send(5_000, &[("temp_c", f(90.0))]);
    assert_eq!(again[0].alert().key, key);
}

/// A point's identity is (series, timestamp): the same timestamp with another value is a
/// correction (the store keeps the last write), so the rules re-evaluate with it. Before,
/// the evaluator kept the first value and the alert below never opened while the store
/// showed 90.
#[test]
fn an_equal_timestamp_with_another_value_is_a_correction() {
    let mut h = H::new(base(json!({"property": "temp_c", "op": ">", "value": 80})));
    assert!(h.send(5_000, &[("temp_c", f(50.0))]).is_empty());
    let corrected = h.send(5_000, &[("temp_c", f(90.0))]);
    assert_eq!(kinds(&corrected), ["open", "notify:opened"]);
    let Effect::Open(open) = &corrected[0] else { panic!() };
    assert_eq!((open.value, open.at_ms), (Some(f(90.0)), 5_000));
    // The same value again is a redelivery: nothing new.
    assert!(h.send(5_000, &[("temp_c", f(90.0))]).is_empty());
    // Corrected back: the alert resolves at the point's time.
    let back = h.send(5_000, &[("temp_c", f(50.0))]);
    assert_eq!(kinds(&back), ["resolve", "notify:resolved"]);
    // Rates see the corrected sample, not both.
    let mut h = H::new(base(
        json!({"property": "t", "op": "rate_of_change", "window_seconds": 60, "compare": ">", "value": 1}),
    ));
    h.send(0, &[("t", f(0.0))]);
    assert!(h.send(10_000, &[("t", f(5.0))]).is_empty(), "0.5/s");
    assert_eq!(opens(&h.send(10_000, &[("t", f(50.0))])), 1, "corrected to 5/s");
}

/// Rules evaluate live data: a point older than the latest value of its (device, property)
/// — a backfill, a late retry — is not evaluated (live evaluation has moved past its time;
/// a backtest over the stored series sees it) and is counted.
#[test]
fn a_point_older_than_the_latest_is_counted_and_not_evaluated() {
    let mut h = H::new(base(json!({"property": "temp_c", "op": ">", "value": 80})));
    assert!(h.send(10_000, &[("temp_c", f(50.0))]).is_empty());
    assert!(h.send(4_000, &[("temp_c", f(99.0))]).is_empty(), "older: not evaluated");
    assert_eq!(h.ev.out_of_order_points(), 1);
    assert_eq!(h.ev.stats().out_of_order_points, 1);
    // A property the rules do not read is not counted; the next live value still counts.
    assert!(h.send(3_000, &[("other", f(1.0))]).is_empty());
    assert_eq!(h.ev.out_of_order_points(), 1);
    assert_eq!(opens(&h.send(11_000, &[("temp_c", f(81.0))])), 1);
}

#[test]
fn schedule_across_berlin_dst_and_outside_schedule_resolve() {
    let ms = |t: &str| parse_rfc3339_ms(t).unwrap();
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["schedule"] = json!({"timezone": "factory", "days": ["sun"], "windows": [{"from": "06:00", "to": "22:00"}],
                              "outside_schedule": "resolve"});
    let mut h = H::new(body);
    h.ev.set_timezone(&factory(), chrono_tz::Europe::Berlin);
    // 2026-03-29 (spring forward): 05:30 CEST = 03:30 UTC is outside.
    assert!(h.send(ms("2026-03-29T03:30:00Z"), &[("temp_c", f(90.0))]).is_empty());
    h.send(ms("2026-03-29T03:40:00Z"), &[("temp_c", f(70.0))]);
    assert_eq!(opens(&h.send(ms("2026-03-29T04:00:00Z"), &[("temp_c", f(90.0))])), 1, "06:00 CEST");
    // The window ends at 22:00 CEST = 20:00 UTC: resolved by the timer on that minute.
    assert!(h.tick(ms("2026-03-29T19:59:00Z")).is_empty());
    let out = h.tick(ms("2026-03-29T20:00:30Z"));
    assert_eq!(kinds(&out)[0], "resolve");
    let Effect::Resolve { reason, at_ms, .. } = &out[0] else { panic!() };
    assert_eq!(*reason, ResolveReason::OutsideSchedule);
    assert_eq!(*at_ms, ms("2026-03-29T20:00:00Z"));
    // 2026-10-25 (fall back): 06:00 CET = 05:00 UTC.
    h.send(ms("2026-10-25T04:30:00Z"), &[("temp_c", f(70.0))]);
    assert!(h.send(ms("2026-10-25T04:59:00Z"), &[("temp_c", f(90.0))]).is_empty(), "05:59 CET");
    assert_eq!(opens(&h.send(ms("2026-10-25T05:00:00Z"), &[("temp_c", f(91.0))])), 1);
}

#[test]
fn schedule_across_new_york_dst() {
    let ms = |t: &str| parse_rfc3339_ms(t).unwrap();
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["schedule"] = json!({"timezone": "America/New_York", "windows": [{"from": "22:00", "to": "02:30"}]});
    let mut h = H::new(body);
    // Mar 7 22:00 EST = Mar 8 03:00 UTC; the window runs over the change to 02:30 local,
    // which does not exist on Mar 8 (02:00 → 03:00): it ends at 03:00 EDT = 07:00 UTC.
    assert!(h.send(ms("2026-03-08T02:59:00Z"), &[("temp_c", f(90.0))]).is_empty());
    h.send(ms("2026-03-08T02:59:30Z"), &[("temp_c", f(70.0))]);
    assert_eq!(opens(&h.send(ms("2026-03-08T03:00:00Z"), &[("temp_c", f(90.0))])), 1);
    h.send(ms("2026-03-08T03:01:00Z"), &[("temp_c", f(70.0))]);
    assert!(h.send(ms("2026-03-08T07:00:00Z"), &[("temp_c", f(90.0))]).is_empty(), "03:00 EDT: outside");
    // Nov 1: 01:00–02:00 happens twice; 02:30 EST = 07:30 UTC ends the window.
    h.send(ms("2026-11-01T07:00:00Z"), &[("temp_c", f(70.0))]);
    assert_eq!(opens(&h.send(ms("2026-11-01T07:29:00Z"), &[("temp_c", f(90.0))])), 1, "02:29 EST");
    h.send(ms("2026-11-01T07:29:30Z"), &[("temp_c", f(70.0))]);
    assert!(h.send(ms("2026-11-01T07:30:00Z"), &[("temp_c", f(90.0))]).is_empty());
}

#[test]
fn factories_are_isolated_and_rules_change_live() {
    let mut h = H::new(base(json!({"property": "temp_c", "op": ">", "value": 80})));
    let other = Observation {
        factory_id: FactoryId::parse("plant-b").unwrap(),
        device_id: DeviceId::parse("press-1").unwrap(),
        device_type: None,
        ts_ms: 1,
        values: vec![(PropertyName::parse("temp_c").unwrap(), f(99.0))],
        event_key: "x".into(),
    };
    let mut out = Vec::new();
    h.ev.on_observation(&other, &mut out);
    assert!(out.is_empty(), "factory B's event never reaches factory A's rule");

    assert_eq!(opens(&h.send(10, &[("temp_c", f(90.0))])), 1);
    // Narrow the scope to another device: the open alert resolves.
    let mut moved = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    moved["scope"] = json!({"device_type": "pump"});
    let effects = h.ev.upsert_rule(&factory(), "rule-1", &spec(moved), 20).unwrap();
    assert_eq!(kinds(&effects), ["resolve"]);
    assert!(h.send(30, &[("temp_c", f(95.0))]).is_empty(), "press is not a pump");
    let mut all = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    all["scope"] = json!({"all": true});
    h.ev.upsert_rule(&factory(), "rule-1", &spec(all), 40).unwrap();
    assert_eq!(opens(&h.send(50, &[("temp_c", f(96.0))])), 1);
    let effects = h.ev.remove_rule(&factory(), "rule-1", 60);
    assert_eq!(kinds(&effects), ["resolve"]);
    let Effect::Resolve { reason, .. } = &effects[0] else { panic!() };
    assert_eq!(*reason, ResolveReason::RuleRemoved);
    assert!(h.send(70, &[("temp_c", f(99.0))]).is_empty());
    assert_eq!(h.ev.stats().rules, 0);
}

#[test]
fn device_type_scope() {
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["scope"] = json!({"device_type": "press"});
    let mut h = H::new(body);
    assert_eq!(opens(&h.send_to("any-press", 1, &[("temp_c", f(81.0))])), 1);
}

// ---- property tests ----

fn cmp_ops() -> impl Strategy<Value = CmpOp> {
    prop_oneof![Just(CmpOp::Gt), Just(CmpOp::Ge), Just(CmpOp::Lt), Just(CmpOp::Le), Just(CmpOp::Eq), Just(CmpOp::Ne)]
}

fn reference_cmp(x: f64, op: CmpOp, t: f64) -> bool {
    match op {
        CmpOp::Gt => x > t,
        CmpOp::Ge => x >= t,
        CmpOp::Lt => x < t,
        CmpOp::Le => x <= t,
        CmpOp::Eq => x == t,
        CmpOp::Ne => x != t,
    }
}

/// A random condition tree over properties p0..p3 with small integer thresholds.
fn tree() -> impl Strategy<Value = Condition> {
    let leaf = prop_oneof![
        (0..4u8, cmp_ops(), -3i32..3).prop_map(|(p, op, t)| Condition::Compare {
            property: PropertyName::parse(format!("p{p}")).unwrap(),
            op,
            value: Value::Float(f64::from(t)),
        }),
        (0..4u8, -3i32..3, 0i32..3, any::<bool>()).prop_map(|(p, lo, w, outside)| Condition::Range {
            property: PropertyName::parse(format!("p{p}")).unwrap(),
            outside,
            min: f64::from(lo),
            max: f64::from(lo + w),
        }),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Condition::All),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Condition::Any),
            inner.prop_map(|c| Condition::Not(Box::new(c))),
        ]
    })
}

fn reference(c: &Condition, values: &[f64; 4]) -> bool {
    let v = |p: &PropertyName| values[usize::from(p.as_str().as_bytes()[1] - b'0')];
    match c {
        Condition::All(items) => items.iter().all(|c| reference(c, values)),
        Condition::Any(items) => items.iter().any(|c| reference(c, values)),
        Condition::Not(inner) => !reference(inner, values),
        Condition::Compare { property, op, value } => reference_cmp(v(property), *op, value.as_f64()),
        Condition::Range { property, outside, min, max } => {
            let x = v(property);
            if *outside { x < *min || x > *max } else { x >= *min && x <= *max }
        }
        _ => unreachable!(),
    }
}

fn rule_with(condition: Condition) -> RuleSpec {
    let mut s = spec(base(json!({"property": "p0", "op": ">", "value": 0})));
    s.condition = condition;
    s.scope = Scope::All { all: true };
    s
}

proptest! {
    #[test]
    fn comparisons_match_the_reference(x in -1e6f64..1e6, t in -1e6f64..1e6, op in cmp_ops(), same in any::<bool>()) {
        let t = if same { x } else { t };
        let mut ev = Evaluator::new();
        let s = rule_with(Condition::Compare { property: PropertyName::parse("p0").unwrap(), op, value: Value::Float(t) });
        ev.upsert_rule(&factory(), "r", &s, 0).unwrap();
        let mut h = H { ev };
        let out = h.send(1, &[("p0", f(x))]);
        prop_assert_eq!(opens(&out) == 1, reference_cmp(x, op, t));
    }

    #[test]
    fn nested_logic_matches_the_reference(c in tree(), values in prop::array::uniform4(-4i32..4)) {
        let values = values.map(f64::from);
        let expect = reference(&c, &values);
        let mut ev = Evaluator::new();
        ev.upsert_rule(&factory(), "r", &rule_with(c), 0).unwrap();
        let mut h = H { ev };
        let out = h.send(1, &[("p0", f(values[0])), ("p1", f(values[1])), ("p2", f(values[2])), ("p3", f(values[3]))]);
        prop_assert_eq!(opens(&out) == 1, expect);
    }

    /// Any sequence of values: at most one alert open at a time, every resolve follows an
    /// open, and replaying the whole sequence changes nothing.
    #[test]
    fn lifecycle_is_consistent_and_replay_is_a_no_op(
        values in prop::collection::vec(0.0f64..100.0, 1..60),
        for_s in 0u64..3, clear_s in 0u64..3, deadband in 0.0f64..5.0,
    ) {
        let mut body = base(json!({"property": "temp_c", "op": ">", "value": 50}));
        body["for_seconds"] = json!(for_s);
        body["clear_for_seconds"] = json!(clear_s);
        body["deadband"] = json!(deadband);
        let mut h = H::new(body);
        let mut all = Vec::new();
        for (i, v) in values.iter().enumerate() {
            all.extend(h.send(i as i64 * 1_000, &[("temp_c", f(*v))]));
        }
        all.extend(h.tick(values.len() as i64 * 1_000 + 10_000));
        let mut open = false;
        for e in &all {
            match e {
                Effect::Open(_) => { prop_assert!(!open); open = true; }
                Effect::Resolve { .. } => { prop_assert!(open); open = false; }
                Effect::Notify(n) if n.kind == NotifyKind::Opened => prop_assert!(open),
                _ => {}
            }
        }
        for (i, v) in values.iter().enumerate() {
            prop_assert!(h.send(i as i64 * 1_000, &[("temp_c", f(*v))]).is_empty());
        }
    }
}

#[test]
fn observations_from_the_ingest_telemetry_message() {
    let message = factoryops_platform::bus::TelemetryMessage {
        device_id: DeviceId::parse("press-1").unwrap(),
        ts_ms: 1000,
        key: "k1".into(),
        values: vec![
            (PropertyName::parse("temp_c").unwrap(), f(81.5)),
            (PropertyName::parse("running").unwrap(), Value::Bool(true)),
        ],
        labels: Vec::new(),
    };
    let obs = Observation::from_message(&factory(), &message, Some("press".into()));
    assert_eq!((obs.factory_id, obs.device_id.as_str(), obs.ts_ms), (factory(), "press-1", 1000));
    assert_eq!(obs.values, message.values);
    assert_eq!((obs.event_key.as_str(), obs.device_type.as_deref()), ("k1", Some("press")));
}

proptest! {
    /// Stale detection driven by ticks: every silence of at least `seconds` opens exactly one
    /// alert, at last-seen + seconds, and the next message resolves it.
    #[test]
    fn stale_opens_once_per_long_silence(gaps in prop::collection::vec(1i64..200, 1..30), tick_every in 1i64..40) {
        let mut h = H::new(base(json!({"op": "stale", "seconds": 60})));
        let mut ts = 0i64;
        let mut now = 0i64;
        let mut effects = h.send(ts, &[("x", f(1.0))]);
        let mut expected = Vec::new();
        for gap in &gaps {
            let next = ts + gap * 1_000;
            if gap * 1_000 >= 60_000 {
                expected.push(ts + 60_000);
            }
            while now + tick_every * 1_000 < next {
                now += tick_every * 1_000;
                effects.extend(h.tick(now));
            }
            effects.extend(h.send(next, &[("x", f(1.0))]));
            ts = next;
        }
        let opened: Vec<i64> = effects.iter().filter_map(|e| match e { Effect::Open(o) => Some(o.at_ms), _ => None }).collect();
        prop_assert_eq!(&opened, &expected);
        let resolves = effects.iter().filter(|e| matches!(e, Effect::Resolve { .. })).count();
        prop_assert_eq!(resolves, expected.len());
    }
}

proptest! {
    /// No input panics the evaluator: extreme timestamps and values, every leaf kind, a
    /// schedule with cron, reminders, ticks anywhere.
    #[test]
    fn never_panics(
        events in prop::collection::vec((any::<i64>(), 0usize..3, prop_oneof![any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::Float), any::<bool>().prop_map(Value::Bool)]), 1..40),
        ticks in prop::collection::vec(any::<i64>(), 0..5),
    ) {
        let mut body = base(json!({"any": [
            {"property": "a", "op": ">", "value": 1e300},
            {"property": "b", "op": "outside", "min": -1, "max": 1},
            {"property": "a", "op": "rate_of_change", "window_seconds": 86400, "compare": "<", "value": -1},
            {"not": {"property": "c", "op": "stale", "seconds": 2592000}},
            {"op": "stale", "seconds": 1}
        ]}));
        body["for_seconds"] = json!(604800);
        body["clear_for_seconds"] = json!(1);
        body["deadband"] = json!(1e308);
        body["severity"] = json!("critical");
        body["notify"] = json!({"emails": ["a@b.co"], "remind_every_minutes": 1, "escalate_after_minutes": 1,
                                "escalate_to": {"emails": ["c@d.co"]}});
        body["schedule"] = json!({"timezone": "Europe/Berlin", "windows": [{"from": "23:00", "to": "01:00"}],
                                  "cron": ["* * * * *"], "outside_schedule": "resolve"});
        let mut h = H::new(body);
        for (ts, p, v) in events {
            let _ = h.send(ts, &[(["a", "b", "c"][p], v)]);
        }
        for t in ticks {
            let _ = h.tick(t);
        }
    }
}

#[test]
fn far_future_timestamps_do_not_hang_the_timers() {
    let mut body = base(json!({"property": "temp_c", "op": ">", "value": 80}));
    body["severity"] = json!("critical");
    body["notify"] = json!({"emails": ["a@b.co"], "remind_every_minutes": 1});
    body["schedule"] = json!({"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "outside_schedule": "resolve"});
    let mut h = H::new(body);
    let monday = parse_rfc3339_ms("2026-11-23T10:00:00Z").unwrap();
    assert_eq!(opens(&h.send(monday, &[("temp_c", f(90.0))])), 1);
    let start = std::time::Instant::now();
    let out = h.tick(i64::MAX);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // Reminders are not replayed one by one, and the Sunday resolves the alert.
    assert!(kinds(&out).contains(&"resolve".to_string()), "{:?}", kinds(&out));
    assert!(out.len() < 10_000);
    assert!(h.tick(i64::MAX).is_empty());
}
