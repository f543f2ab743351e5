//! Events per second through the evaluator with 10k rules in one factory.
//!
//! 1,000 devices × 10 properties; 9,900 device-scoped rules (10 per device, single
//! comparisons and two-property `all`s, some with for_seconds/deadband), 100 device-type
//! rules; each event carries 3 properties of one device, ~2 % of values cross a threshold
//! so alerts open and resolve throughout.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use factoryops_rules::{Effect, Evaluator, Observation, RuleSpec, validate_rule};
use factoryops_tsdb::Value;
use factoryops_types::{DeviceId, FactoryId, PropertyName};
use serde_json::json;

const DEVICES: usize = 1_000;
const PROPS: usize = 10;

fn rule(i: usize) -> RuleSpec {
    let device = format!("dev-{}", i % DEVICES);
    let p = format!("p{}", (i / DEVICES) % PROPS);
    let q = format!("p{}", (i / DEVICES + 3) % PROPS);
    let scope = if i >= 9_900 { json!({"device_type": "press"}) } else { json!({"devices": [device]}) };
    let condition = match i % 4 {
        0 | 1 => json!({"property": p, "op": ">", "value": 98}),
        2 => json!({"all": [{"property": p, "op": ">", "value": 97}, {"property": q, "op": "<", "value": 50}]}),
        _ => {
            json!({"any": [{"property": p, "op": "outside", "min": 1, "max": 99}, {"not": {"property": q, "op": "<=", "value": 99}}]})
        }
    };
    let body = json!({
        "name": format!("rule {i}"), "scope": scope, "condition": condition, "severity": "warning",
        "for_seconds": if i.is_multiple_of(5) { 10 } else { 0 }, "deadband": if i.is_multiple_of(3) { 1.0 } else { 0.0 },
        "notify": {"emails": ["ops@example.com"]}
    });
    match validate_rule(&body, &Default::default()) {
        Ok(v) => v.spec,
        Err(e) => panic!("{e:?}"),
    }
}

/// `max_value`: values are drawn from 0..max_value (99.9: ~2 % cross a threshold; 90: none do).
fn setup(max_value: f64) -> (Evaluator, Vec<Observation>) {
    let factory = FactoryId::parse("plant-a").unwrap_or_else(|e| panic!("{e}"));
    let mut ev = Evaluator::new();
    for i in 0..10_000 {
        if let Err(e) = ev.upsert_rule(&factory, &format!("rule-{i:05}"), &rule(i), 0) {
            panic!("{e}");
        }
    }
    let props: Vec<PropertyName> =
        (0..PROPS).map(|p| PropertyName::parse(format!("p{p}")).unwrap_or_else(|e| panic!("{e}"))).collect();
    // Deterministic pseudo-random values (xorshift).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut events = Vec::with_capacity(20_000);
    for i in 0..20_000usize {
        let d = (next() as usize) % DEVICES;
        let values = (0..3)
            .map(|k| {
                let p = (next() as usize + k * 3) % PROPS;
                let v = (next() % 1000) as f64 / 1000.0 * max_value;
                (props[p].clone(), Value::Float(v))
            })
            .collect();
        events.push(Observation {
            factory_id: factory.clone(),
            device_id: DeviceId::parse(format!("dev-{d}")).unwrap_or_else(|e| panic!("{e}")),
            device_type: Some("press".into()),
            ts_ms: i as i64,
            values,
            event_key: String::new(),
        });
    }
    (ev, events)
}

fn run(c: &mut Criterion, name: &str, max_value: f64) {
    let (mut ev, mut events) = setup(max_value);
    let mut ts: i64 = 1_000_000;
    let mut out: Vec<Effect> = Vec::new();
    let mut group = c.benchmark_group("evaluator");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(20);
    group.bench_function(name, |b| {
        b.iter(|| {
            for e in events.iter_mut() {
                ts += 50; // 20 events/s of simulated time: for-duration timers keep firing
                e.ts_ms = ts;
                ev.on_observation(e, &mut out);
                out.clear();
            }
            black_box(&ev);
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    run(c, "10k_rules_3_props_per_event_2pct_crossing", 99.9);
    run(c, "10k_rules_3_props_per_event_no_crossing", 90.0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
