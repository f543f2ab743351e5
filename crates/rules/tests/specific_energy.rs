#![allow(clippy::unwrap_used)]
//! `specific_energy` leaves (ADR 0016): energy per unit produced of a closed local day or
//! shift above a fixed figure or a baseline's, judged when the period closes. The
//! evaluator with hand-computed figures, the validation paths, the backtest, and the
//! engine over a fake energy port on SQLite and MariaDB.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use factoryops_db::{Database, DbError};
use factoryops_rules::{
    AlertQuery, AlertStatus, BacktestDevice, BacktestRequest, BaselineTarget, Condition, Effect, EngineConfig,
    Evaluator, ExpectedPerUnit, PERIOD_SETTLE_MS, Period, PeriodFigures, RuleSpec, RulesEngine, RulesError,
    SpecificEnergy, SpecificFigures, SpecificKey, SpecificPeriod, validate_rule,
};
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_tsdb::{EmbeddedConfig, EmbeddedStore, Value};
use factoryops_types::{DeviceId, FactoryId, ManualClock, parse_rfc3339_ms};
use serde_json::json;

const DAY: i64 = 86_400_000;

fn factory() -> FactoryId {
    FactoryId::parse("plant-a").unwrap()
}

fn dev(d: &str) -> DeviceId {
    DeviceId::parse(d).unwrap()
}

/// 2026-03-02T00:00:00Z, a Monday.
fn t0() -> i64 {
    parse_rfc3339_ms("2026-03-02T00:00:00Z").unwrap()
}

fn body(condition: serde_json::Value, devices: &[&str]) -> serde_json::Value {
    json!({
        "name": "Energy per unit", "scope": {"devices": devices}, "condition": condition,
        "severity": "warning", "message": "{device} {value} kWh/unit ({threshold})"
    })
}

fn spec(condition: serde_json::Value) -> RuleSpec {
    match validate_rule(&body(condition, &["press-1", "press-2", "press-3"]), &HashSet::new()) {
        Ok(v) => v.spec,
        Err(e) => panic!("{e:?}"),
    }
}

fn fixed() -> serde_json::Value {
    json!({"op": "specific_energy", "period": "day", "kwh_per_unit": 1.5, "above_percent": 10})
}

fn figures(device: &str, kwh: f64, units: Option<f64>, expected_kwh: Option<f64>) -> SpecificFigures {
    SpecificFigures { device_id: dev(device), kwh, units, expected_kwh }
}

/// The local (UTC) day `n` after t0, judged 15 minutes after its end.
fn day(n: i64, baseline: Option<&str>, figures: Vec<SpecificFigures>) -> PeriodFigures {
    let (start, end) = (t0() + n * DAY, t0() + (n + 1) * DAY);
    PeriodFigures {
        key: SpecificKey { period: SpecificPeriod::Day, baseline_id: baseline.map(str::to_string) },
        period: Period { start_ms: start, end_ms: end, label: None },
        at_ms: end + PERIOD_SETTLE_MS,
        figures,
    }
}

fn opened(effects: &[Effect]) -> Vec<(String, i64, f64, Option<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Open(o) => Some((
                o.alert.device_id.to_string(),
                o.at_ms,
                match o.value.unwrap() {
                    Value::Float(f) => f,
                    Value::Bool(_) => f64::NAN,
                },
                o.threshold.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn resolved(effects: &[Effect]) -> Vec<(String, i64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Resolve { alert, at_ms, .. } => Some((alert.device_id.to_string(), *at_ms)),
            _ => None,
        })
        .collect()
}

fn evaluator(condition: serde_json::Value) -> Evaluator {
    let mut ev = Evaluator::new();
    ev.upsert_rule(&factory(), "rule-1", &spec(condition), t0()).unwrap();
    ev
}

fn feed(ev: &mut Evaluator, batch: &PeriodFigures) -> Vec<Effect> {
    let mut out = Vec::new();
    ev.on_period(&factory(), batch, &mut out);
    out
}

/// 1.5 kWh/unit + 10 % = 1.65 kWh/unit. Day 0: press-1 180 kWh / 100 units = 1.8 (above:
/// opens), press-2 160 / 100 = 1.6 (below), press-3 has no production count (unknown).
/// Day 1: press-1 150 / 100 = 1.5 (resolves), press-2 170 / 100 = 1.7 (opens). Day 2:
/// press-2 produced nothing (unknown: its alert stays open).
#[test]
fn fixed_kwh_per_unit_above_and_below_and_unknown_without_units() {
    let mut ev = evaluator(fixed());
    let out = feed(
        &mut ev,
        &day(
            0,
            None,
            vec![
                figures("press-1", 180.0, Some(100.0), None),
                figures("press-2", 160.0, Some(100.0), None),
                figures("press-3", 500.0, None, None),
            ],
        ),
    );
    let at0 = t0() + DAY + PERIOD_SETTLE_MS;
    assert_eq!(opened(&out), [("press-1".to_string(), at0, 1.8, Some("+10% over 1.5 kWh/unit".to_string()))]);
    let message = out.iter().find_map(|e| match e {
        Effect::Open(o) => Some(o.message.clone()),
        _ => None,
    });
    assert_eq!(message.as_deref(), Some("press-1 1.8 kWh/unit (+10% over 1.5 kWh/unit)"));

    let out = feed(
        &mut ev,
        &day(1, None, vec![figures("press-1", 150.0, Some(100.0), None), figures("press-2", 170.0, Some(100.0), None)]),
    );
    let at1 = t0() + 2 * DAY + PERIOD_SETTLE_MS;
    assert_eq!(resolved(&out), [("press-1".to_string(), at1)]);
    let got = opened(&out);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.as_str(), got[0].1), ("press-2", at1));
    assert!((got[0].2 - 1.7).abs() < 1e-12, "{got:?}");

    // No units (0) and no figures at all are both unknown: nothing changes.
    let out = feed(&mut ev, &day(2, None, vec![figures("press-2", 90.0, Some(0.0), None)]));
    assert!(out.is_empty(), "{out:?}");
    let out = feed(&mut ev, &day(3, None, Vec::new()));
    assert!(out.is_empty(), "{out:?}");
}

/// Expected per unit from a baseline: expected kWh for the day / the same units.
/// 126 kWh / 10 units = 12.6 vs 100 / 10 = 10 × 1.1 = 11: above. 108 / 10 = 10.8: below.
/// A day the baseline cannot tell (no expected kWh) is unknown.
#[test]
fn baseline_expected_energy_per_unit() {
    let condition = json!({"op": "specific_energy", "baseline_id": "b-1", "above_percent": 10});
    let mut ev = evaluator(condition);
    let out = feed(&mut ev, &day(0, Some("b-1"), vec![figures("press-1", 126.0, Some(10.0), Some(100.0))]));
    let got = opened(&out);
    assert_eq!(got.len(), 1, "{out:?}");
    assert!((got[0].2 - 12.6).abs() < 1e-12);
    assert_eq!(got[0].3.as_deref(), Some("+10% over baseline b-1"));
    // Figures of the fixed key do not reach a baseline leaf.
    assert!(feed(&mut ev, &day(1, None, vec![figures("press-1", 1.0, Some(10.0), None)])).is_empty());
    assert!(feed(&mut ev, &day(1, Some("b-1"), vec![figures("press-1", 50.0, Some(10.0), None)])).is_empty());
    let out = feed(&mut ev, &day(2, Some("b-1"), vec![figures("press-1", 108.0, Some(10.0), Some(100.0))]));
    assert_eq!(resolved(&out), [("press-1".to_string(), t0() + 3 * DAY + PERIOD_SETTLE_MS)]);
}

/// Inside `not`, unknown stays unknown; `for_seconds` waits from the close as for any leaf.
#[test]
fn combinators_and_for_seconds() {
    let mut ev = Evaluator::new();
    let mut s = spec(json!({"not": fixed()}));
    s.for_seconds = 3600;
    ev.upsert_rule(&factory(), "rule-1", &s, t0()).unwrap();
    // press-1 at 1.2 kWh/unit: not above → the negation holds, pending for an hour.
    let out = feed(&mut ev, &day(0, None, vec![figures("press-1", 120.0, Some(100.0), None)]));
    assert!(out.is_empty());
    let mut out = Vec::new();
    ev.tick(t0() + DAY + PERIOD_SETTLE_MS + 3_600_000, &mut out);
    assert_eq!(opened(&out).len(), 1, "{out:?}");
    assert_eq!(opened(&out)[0].1, t0() + DAY + PERIOD_SETTLE_MS + 3_600_000);
}

/// The keys the engine asks the energy port for, with the devices the rules cover.
#[test]
fn specific_keys_name_the_devices_in_scope() {
    let mut ev = evaluator(fixed());
    let shift = json!({"op": "specific_energy", "period": "shift", "kwh_per_unit": 2, "above_percent": 0});
    let all = validate_rule(
        &json!({"name": "all", "scope": {"device_type": "press"}, "condition": shift, "severity": "info"}),
        &HashSet::new(),
    )
    .unwrap();
    ev.upsert_rule(&factory(), "rule-2", &all.spec, t0()).unwrap();
    let keys = ev.specific_keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].1, SpecificKey { period: SpecificPeriod::Day, baseline_id: None });
    assert_eq!(keys[0].2, Some(vec![dev("press-1"), dev("press-2"), dev("press-3")]));
    assert_eq!(keys[1].1, SpecificKey { period: SpecificPeriod::Shift, baseline_id: None });
    assert_eq!(keys[1].2, None);
    // A device-type scope covers a device whose type is known: 2.2 kWh/unit > 2 × 1.0.
    ev.set_device_type(&factory(), &dev("press-9"), Some("press".into()));
    let mut batch = day(0, None, vec![figures("press-9", 220.0, Some(100.0), None)]);
    batch.key.period = SpecificPeriod::Shift;
    assert_eq!(opened(&feed(&mut ev, &batch)).len(), 1);
}

#[test]
fn specific_energy_leaves_are_validated_with_field_paths() {
    let errors = |condition: serde_json::Value| -> Vec<(String, String)> {
        let body = json!({"name": "r", "scope": {"all": true}, "condition": condition, "severity": "info"});
        validate_rule(&body, &HashSet::new()).unwrap_err().into_iter().map(|e| (e.field, e.message)).collect()
    };
    let e = errors(json!({"all": [{"property": "temp", "op": ">", "value": 1},
        {"op": "specific_energy", "above_percent": 10, "kwh_per_unit": 1.5, "baseline_id": "b-1"}]}));
    assert_eq!(
        e,
        [("condition.all[1].baseline_id".to_string(), "give either kwh_per_unit or baseline_id, not both".to_string())]
    );
    let e = errors(json!({"op": "specific_energy", "above_percent": 10}));
    assert_eq!(e, [("condition.kwh_per_unit".to_string(), "is required (or baseline_id)".to_string())]);
    let e = errors(
        json!({"not": {"op": "specific_energy", "period": "week", "above_percent": -1, "kwh_per_unit": 0, "units": "pcs"}}),
    );
    let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["condition.not.units", "condition.not.period", "condition.not.above_percent", "condition.not.kwh_per_unit"]
    );
    let e = errors(json!({"op": "specific_energy", "kwh_per_unit": 1.5}));
    assert_eq!(e, [("condition.above_percent".to_string(), "is required".to_string())]);
    let e = errors(json!({"op": "specific_energy", "period": "shift", "baseline_id": "b-1", "above_percent": 5}));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, "condition.period");
    let e = errors(json!({"op": "specific_energy", "baseline_id": "", "above_percent": 5}));
    assert_eq!(e[0].0, "condition.baseline_id");

    // The default period is spelled out in responses; the JSON round-trips.
    let parsed = spec(json!({"op": "specific_energy", "kwh_per_unit": 1.5, "above_percent": 10}));
    assert_eq!(
        parsed.condition,
        Condition::SpecificEnergy {
            period: SpecificPeriod::Day,
            above_percent: 10.0,
            expected: ExpectedPerUnit::KwhPerUnit(1.5)
        }
    );
    assert_eq!(parsed.condition.to_json(), fixed());
    let baseline = json!({"op": "specific_energy", "period": "day", "above_percent": 12.5, "baseline_id": "b-1"});
    assert_eq!(spec(baseline.clone()).condition.to_json(), baseline);
}

/// The backtest feeds the periods' figures between the observations at their close.
#[tokio::test]
async fn backtest_judges_each_closed_period() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(t0() + 10 * DAY));
    let tsdb = EmbeddedStore::open(EmbeddedConfig::new(dir.path()), clock).unwrap();
    let request = BacktestRequest {
        factory: factory(),
        rule_id: "draft".into(),
        spec: spec(fixed()),
        from_ms: t0(),
        to_ms: t0() + 3 * DAY,
        devices: vec![BacktestDevice { device_id: dev("press-1"), device_type: None }],
        timezone: chrono_tz::UTC,
        state_codes: Vec::new(),
        max_points: 1_000,
        energy: Default::default(),
        periods: vec![
            day(0, None, vec![figures("press-1", 180.0, Some(100.0), None)]),
            day(1, None, vec![figures("press-1", 150.0, Some(100.0), None)]),
            // Judged after `to`: left out.
            day(2, None, vec![figures("press-1", 180.0, Some(100.0), None)]),
        ],
    };
    let result = factoryops_rules::backtest(&request, &tsdb).await.unwrap();
    assert_eq!((result.opened, result.resolved), (1, 1));
    assert_eq!(result.alerts[0].opened_at, t0() + DAY + PERIOD_SETTLE_MS);
    assert_eq!(result.alerts[0].resolved_at, Some(t0() + 2 * DAY + PERIOD_SETTLE_MS));
}

/// The energy component as a fake: UTC days, figures per day start, three baselines.
#[derive(Default)]
struct FakeEnergy {
    days: parking_lot::Mutex<HashMap<i64, Vec<SpecificFigures>>>,
    figure_reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl SpecificEnergy for FakeEnergy {
    async fn periods(
        &self,
        _factory: &FactoryId,
        period: SpecificPeriod,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<Period>, DbError> {
        if period == SpecificPeriod::Shift {
            return Ok(Vec::new());
        }
        let mut start = after_ms.div_euclid(DAY) * DAY;
        let mut out = Vec::new();
        while start + DAY <= until_ms {
            if start + DAY > after_ms {
                out.push(Period { start_ms: start, end_ms: start + DAY, label: None });
            }
            start += DAY;
        }
        Ok(out)
    }

    async fn figures(
        &self,
        _factory: &FactoryId,
        period: &Period,
        devices: Option<&[DeviceId]>,
        _baseline_id: Option<&str>,
    ) -> Result<Vec<SpecificFigures>, DbError> {
        self.figure_reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let all = self.days.lock().get(&period.start_ms).cloned().unwrap_or_default();
        Ok(all.into_iter().filter(|f| devices.is_none_or(|d| d.contains(&f.device_id))).collect())
    }

    async fn baseline_target(&self, _factory: &FactoryId, id: &str) -> Result<Option<BaselineTarget>, DbError> {
        Ok(match id {
            "b-press" => Some(BaselineTarget::Device(dev("press-1"))),
            "b-line" => Some(BaselineTarget::Other("group".into())),
            _ => None,
        })
    }
}

/// The engine judges the latest closed day as soon as the rule is saved, not again until
/// the next day closes, refuses baselines that cannot be judged per device, and
/// backtests over the same port.
async fn engine_judges_closed_days_through_the_port(db: TestDatabase) {
    let database = Database::connect(&db.url).await.unwrap();
    database.migrate(&[&factoryops_db::MIGRATIONS, &factoryops_rules::MIGRATIONS]).await.unwrap();
    let d0 = t0();
    let energy = Arc::new(FakeEnergy::default());
    energy.days.lock().insert(d0, vec![figures("press-1", 120.0, Some(100.0), None)]);
    energy.days.lock().insert(d0 + DAY, vec![figures("press-1", 180.0, Some(100.0), None)]);
    // Day 1 closed at d0 + 2 days; 20 minutes later it is judged.
    let clock = ManualClock::new(d0 + 2 * DAY + 20 * 60_000);
    let config = EngineConfig {
        timer_grace_ms: 0,
        specific_energy: Some(energy.clone() as Arc<dyn SpecificEnergy>),
        ..EngineConfig::default()
    };
    let engine = RulesEngine::start(database.clone(), Arc::new(clock.clone()), config).await.unwrap();
    let f = factory();

    let bad = json!({"any": [{"op": "specific_energy", "baseline_id": "nope", "above_percent": 5},
                             {"op": "specific_energy", "baseline_id": "b-line", "above_percent": 5}]});
    match engine.create_rule(&f, &body(bad, &["press-1"]), &HashSet::new()).await {
        Err(RulesError::Invalid(errors)) => {
            let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, ["condition.any[0].baseline_id", "condition.any[1].baseline_id"], "{errors:?}");
            assert_eq!(errors[0].message, "no such baseline");
        }
        other => panic!("{other:?}"),
    }
    let warned = engine
        .create_rule(
            &f,
            &body(
                json!({"op": "specific_energy", "baseline_id": "b-press", "above_percent": 5}),
                &["press-1", "press-2"],
            ),
            &HashSet::new(),
        )
        .await
        .unwrap();
    assert_eq!(warned.warnings.len(), 1, "{:?}", warned.warnings);
    assert_eq!(warned.warnings[0].field, "condition.baseline_id");
    engine.delete_rule(&f, &warned.rule.id).await.unwrap();

    let created = engine.create_rule(&f, &body(fixed(), &["press-1"]), &HashSet::new()).await.unwrap();
    assert!(created.warnings.is_empty(), "{:?}", created.warnings);
    let query = AlertQuery { rule_id: Some(created.rule.id.clone()), ..AlertQuery::default() };
    let alerts = engine.store().list_alerts(&f, &query).await.unwrap().items;
    assert_eq!(alerts.len(), 1, "judged when saved");
    assert_eq!(alerts[0].opened_at, d0 + 2 * DAY + PERIOD_SETTLE_MS);
    assert_eq!(alerts[0].value, Some(json!(1.8)));
    assert_eq!(alerts[0].threshold.as_deref(), Some("+10% over 1.5 kWh/unit"));
    assert_eq!(alerts[0].property, None);

    // Nothing new closed: no figures are read.
    let reads = energy.figure_reads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(engine.judge_periods(None).await.unwrap(), 0);
    assert_eq!(energy.figure_reads.load(std::sync::atomic::Ordering::SeqCst), reads);
    // Day 2 at 1.5 kWh/unit closes: the alert resolves when it is judged.
    energy.days.lock().insert(d0 + 2 * DAY, vec![figures("press-1", 150.0, Some(100.0), None)]);
    clock.set(d0 + 3 * DAY + 16 * 60_000);
    assert_eq!(engine.judge_periods(None).await.unwrap(), 1);
    let alerts = engine.store().list_alerts(&f, &query).await.unwrap().items;
    assert_eq!(alerts[0].status, AlertStatus::Resolved);
    assert_eq!(alerts[0].resolved_at, Some(d0 + 3 * DAY + PERIOD_SETTLE_MS));

    // The backtest over the same days: day 0 below, day 1 above, day 2 below.
    let dir = tempfile::tempdir().unwrap();
    let tsdb = EmbeddedStore::open(EmbeddedConfig::new(dir.path()), Arc::new(clock.clone())).unwrap();
    let devices = vec![BacktestDevice { device_id: dev("press-1"), device_type: None }];
    let result =
        engine.backtest(&f, Some(&created.rule.id), None, d0, d0 + 3 * DAY + PERIOD_SETTLE_MS, &tsdb, devices).await;
    let result = result.unwrap();
    assert_eq!((result.opened, result.resolved), (1, 1), "{result:?}");
    assert_eq!(result.alerts[0].opened_at, d0 + 2 * DAY + PERIOD_SETTLE_MS);
    assert_eq!(result.alerts[0].resolved_at, Some(d0 + 3 * DAY + PERIOD_SETTLE_MS));
}

backend_matrix!(engine_judges_closed_days_through_the_port);
