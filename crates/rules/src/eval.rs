//! The evaluator: pure, deterministic, clock-injected (time only enters through event
//! timestamps and [`Evaluator::tick`]). See README.md "Evaluation semantics".
//!
//! Per factory it keeps an index property → rules (split by device, device type and
//! "all devices"), so an event touches only the rules that read one of its properties and
//! cover its device. Per (rule, device) a small state machine decides; timers (for-duration,
//! clear-for, stale data, reminders, escalation, schedule ends) live in a deadline heap
//! drained by `tick(now)` and before every event (up to the event's timestamp).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use chrono_tz::Tz;
use factoryops_tsdb::Value;
use factoryops_types::{DeviceId, FactoryId, PropertyName};

use crate::effects::{AlertRef, Effect, Notification, NotifyKind, OpenAlert, ResolveReason};
use crate::energy::{
    DemandAcc, EnergyFacts, IdleDefinition, PeriodFigures, SpecificFigures, SpecificKey, kwh_per_unit,
};
use crate::model::{
    CmpOp, Condition, DemandWhen, ExpectedPerUnit, OutsideSchedule, RuleSpec, Scope, Severity, Targets,
};
use crate::schedule::CompiledSchedule;

/// One telemetry message as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub factory_id: FactoryId,
    pub device_id: DeviceId,
    /// The device's type from the registry, for `{"device_type": …}` scopes.
    pub device_type: Option<String>,
    /// The message's timestamp (Unix ms, UTC): evaluation time for this event.
    pub ts_ms: i64,
    pub values: Vec<(PropertyName, Value)>,
    /// Identity of the event (bus key) for tracing; alert keys derive from (rule, device, ts).
    pub event_key: String,
}

impl Observation {
    /// The observation of one `telemetry` message as ingest publishes it on the bus;
    /// `device_type` comes from the device registry.
    pub fn from_message(
        factory_id: &FactoryId,
        message: &factoryops_platform::bus::TelemetryMessage,
        device_type: Option<String>,
    ) -> Observation {
        Observation {
            factory_id: factory_id.clone(),
            device_id: message.device_id.clone(),
            device_type,
            ts_ms: message.ts_ms,
            values: message.values.clone(),
            event_key: message.key.clone(),
        }
    }
}

/// An open alert loaded from the store on restart.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoredAlert {
    pub rule_id: String,
    pub device_id: DeviceId,
    pub key: String,
    pub opened_at: i64,
    pub count: i64,
    pub acknowledged: bool,
    pub escalated: bool,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvaluatorStats {
    pub factories: usize,
    pub rules: usize,
    pub states: usize,
    pub active_alerts: usize,
    pub timers: usize,
    /// Values ignored because they were older than the latest one of their series.
    pub out_of_order_points: u64,
}

/// A fast non-cryptographic hasher (FxHash) for the evaluator's internal maps: keys are
/// small integers and strings chosen by the factory itself, so hash flooding is not a concern
/// beyond one factory slowing itself down.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Most samples kept per (device, property) for rates of change.
pub const MAX_RATE_SAMPLES: usize = 4_096;

#[derive(Debug, Clone)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Cmp {
        prop: u32,
        op: CmpOp,
        value: Value,
    },
    /// A state leaf: the value is the label's code (`None`: the label has no code, so no
    /// value equals it).
    State {
        prop: u32,
        equal: bool,
        code: Option<u32>,
        label: String,
    },
    Range {
        prop: u32,
        outside: bool,
        min: f64,
        max: f64,
    },
    Rate {
        prop: u32,
        window_ms: i64,
        op: CmpOp,
        value: f64,
        per_s: f64,
    },
    Stale {
        prop: Option<u32>,
        ms: i64,
    },
    /// Average kW over a demand interval (ADR 0016).
    Demand {
        prop: u32,
        minutes: u32,
        projected: bool,
        op: CmpOp,
        value: f64,
    },
    /// The device is idle by its energy configuration.
    Idle,
    /// kWh per unit of the latest closed period above the expected figure (ADR 0016).
    Specific {
        /// Index into the factory's `specific_keys`.
        key: u32,
        /// The fixed expected kWh per unit; `None`: the baseline's (from the figures).
        fixed: Option<f64>,
        /// `1 + above_percent / 100`.
        factor: f64,
        /// The threshold as the alert shows it.
        text: String,
    },
}

/// A device's idle definition with interned properties.
#[derive(Debug, Clone)]
enum CIdle {
    State { prop: u32, codes: Vec<u32> },
    BelowKw { prop: u32, kw_per_unit: f64, below_kw: f64 },
}

#[derive(Debug, Clone)]
enum CScope {
    Devices(Vec<u32>),
    Type(String),
    All,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    id: String,
    name: String,
    severity: Severity,
    template: String,
    cond: Node,
    /// Properties whose new values trigger an evaluation.
    triggers: Vec<u32>,
    /// Any event of the device triggers (property-less `stale`).
    any_trigger: bool,
    /// Stale leaves: (property, ms).
    stale: Vec<(Option<u32>, i64)>,
    /// Completed-demand leaves: (property, interval minutes), for their closing timers.
    demand: Vec<(u32, u32)>,
    /// The `specific_energy` keys its leaves read (indexes into `specific_keys`).
    specific: Vec<u32>,
    scope: CScope,
    schedule: Option<CompiledSchedule>,
    for_ms: i64,
    clear_for_ms: i64,
    deadband: f64,
    cooldown_ms: i64,
    auto_resolve: bool,
    remind_ms: Option<i64>,
    escalate_ms: Option<i64>,
    targets: Targets,
    escalate_to: Targets,
}

#[derive(Debug, Clone)]
struct Active {
    key: String,
    opened_at: i64,
    count: i64,
    /// The condition is (still) considered true: firing or clearing.
    cond_true: bool,
    clearing_since: Option<i64>,
    acknowledged: bool,
    escalated: bool,
    next_reminder: Option<i64>,
    /// The "opened" notification was sent (so "resolved" is sent too).
    notified: bool,
}

#[derive(Debug, Clone, Default)]
enum Phase {
    #[default]
    Idle,
    Pending {
        since: i64,
    },
    Active(Box<Active>),
}

#[derive(Debug, Clone)]
struct RdState {
    phase: Phase,
    /// After a manual resolve the condition must be false once before a new alert opens.
    disarmed: bool,
    last_notified: Option<i64>,
    queued_at: Option<i64>,
    last_eval: i64,
}

impl Default for RdState {
    fn default() -> Self {
        Self { phase: Phase::Idle, disarmed: false, last_notified: None, queued_at: None, last_eval: i64::MIN }
    }
}

#[derive(Debug, Default)]
struct TriggerIndex {
    by_device: HashMap<u32, Vec<u32>>,
    by_type: HashMap<String, Vec<u32>>,
    all: Vec<u32>,
}

impl TriggerIndex {
    fn add(&mut self, scope: &CScope, slot: u32) {
        match scope {
            CScope::Devices(devs) => {
                for d in devs {
                    self.by_device.entry(*d).or_default().push(slot);
                }
            }
            CScope::Type(t) => self.by_type.entry(t.clone()).or_default().push(slot),
            CScope::All => self.all.push(slot),
        }
    }

    fn remove(&mut self, scope: &CScope, slot: u32) {
        match scope {
            CScope::Devices(devs) => {
                for d in devs {
                    if let Some(list) = self.by_device.get_mut(d) {
                        list.retain(|s| *s != slot);
                        if list.is_empty() {
                            self.by_device.remove(d);
                        }
                    }
                }
            }
            CScope::Type(t) => {
                if let Some(list) = self.by_type.get_mut(t) {
                    list.retain(|s| *s != slot);
                    if list.is_empty() {
                        self.by_type.remove(t);
                    }
                }
            }
            CScope::All => self.all.retain(|s| *s != slot),
        }
    }

    fn collect(&self, dev: u32, device_type: Option<&str>, out: &mut Vec<u32>) {
        if let Some(list) = self.by_device.get(&dev) {
            out.extend_from_slice(list);
        }
        if let Some(t) = device_type
            && let Some(list) = self.by_type.get(t)
        {
            out.extend_from_slice(list);
        }
        out.extend_from_slice(&self.all);
    }
}

struct FactoryState {
    id: FactoryId,
    tz: Tz,
    rules: Vec<Option<CompiledRule>>,
    rule_slots: HashMap<String, u32>,
    props: HashMap<String, u32>,
    prop_names: Vec<PropertyName>,
    rate_window: Vec<i64>,
    index: Vec<TriggerIndex>,
    any_index: TriggerIndex,
    devices: HashMap<String, u32>,
    device_ids: Vec<DeviceId>,
    device_types: Vec<Option<String>>,
    last_seen: Vec<i64>,
    latest: HashMap<(u32, u32), (i64, Value)>,
    history: HashMap<(u32, u32), VecDeque<(i64, f64)>>,
    states: HashMap<(u32, u32), RdState>,
    heap: BinaryHeap<Reverse<(i64, u32, u32)>>,
    scratch: Vec<u32>,
    /// Values older than their series' latest, not evaluated (see `observe`).
    out_of_order: u64,
    /// (property, label) → code of the state labels rules compare with, set by the engine
    /// through [`Evaluator::set_state_codes`] before it compiles a rule.
    state_codes: HashMap<(String, String), u32>,
    /// Per property: the demand interval lengths (minutes) its leaves read.
    demand_minutes: Vec<Vec<u32>>,
    /// (device, property, minutes) → running demand.
    demand: HashMap<(u32, u32, u32), DemandAcc>,
    /// (device, property) → (kW per unit, longest bridged gap in ms) of power properties.
    power: HashMap<(u32, u32), (f64, i64)>,
    /// Device → how its idle time is known.
    idle: HashMap<u32, CIdle>,
    /// The (period, baseline) keys of `specific_energy` leaves, interned.
    specific_keys: Vec<SpecificKey>,
    /// (device, key) → the figures of the key's latest closed period.
    specific: HashMap<(u32, u32), SpecificFigures>,
}

/// Read-only view used while evaluating one (rule, device).
struct Ctx<'a> {
    latest: &'a HashMap<(u32, u32), (i64, Value)>,
    history: &'a HashMap<(u32, u32), VecDeque<(i64, f64)>>,
    prop_names: &'a [PropertyName],
    last_seen: i64,
    dev: u32,
    now: i64,
    tz: Tz,
    demand: &'a HashMap<(u32, u32, u32), DemandAcc>,
    power: &'a HashMap<(u32, u32), (f64, i64)>,
    idle: &'a HashMap<u32, CIdle>,
    specific: &'a HashMap<(u32, u32), SpecificFigures>,
}

/// What made the condition true: the leaf and the value it saw.
type Witness<'a> = Option<(&'a Node, Value)>;

/// The rule engine's brain. See the module docs.
pub struct Evaluator {
    factories: Vec<FactoryState>,
    by_id: HashMap<FactoryId, usize>,
}

impl Default for Evaluator {
    fn default() -> Self {
        Self::new()
    }
}

impl Evaluator {
    pub fn new() -> Self {
        Self { factories: Vec::new(), by_id: HashMap::default() }
    }

    fn factory_mut(&mut self, factory: &FactoryId) -> &mut FactoryState {
        let index = match self.by_id.get(factory) {
            Some(i) => *i,
            None => {
                let i = self.factories.len();
                self.factories.push(FactoryState::new(factory.clone()));
                self.by_id.insert(factory.clone(), i);
                i
            }
        };
        &mut self.factories[index]
    }

    /// The factory's time zone for `"timezone": "factory"` schedules and `{time}` (default UTC).
    pub fn set_timezone(&mut self, factory: &FactoryId, tz: Tz) {
        let fs = self.factory_mut(factory);
        if fs.tz != tz {
            // Demand intervals align to the local clock: running ones start over.
            fs.demand.clear();
        }
        fs.tz = tz;
    }

    /// The factory's energy configuration (power properties, idle definitions), replacing
    /// the previous one; `demand` and `idle` leaves read it. Running demand of a property
    /// that is no longer a power property (or changed unit) starts over.
    pub fn set_energy_facts(&mut self, factory: &FactoryId, facts: &EnergyFacts) {
        let fs = self.factory_mut(factory);
        let mut power = HashMap::default();
        for p in &facts.power {
            if !(p.kw_per_unit.is_finite() && p.max_gap_ms > 0) {
                continue;
            }
            let key = (fs.intern_device(&p.device_id), fs.intern_prop(&p.property));
            power.insert(key, (p.kw_per_unit, p.max_gap_ms));
        }
        fs.demand
            .retain(|(d, p, _), _| fs.power.get(&(*d, *p)) == power.get(&(*d, *p)) && power.contains_key(&(*d, *p)));
        fs.power = power;
        let mut idle = HashMap::default();
        for def in &facts.idle {
            let dev = fs.intern_device(def.device_id());
            let prop = fs.intern_prop(def.property());
            let compiled = match def {
                IdleDefinition::State { codes, .. } => CIdle::State { prop, codes: codes.clone() },
                IdleDefinition::BelowKw { kw_per_unit, below_kw, .. } => {
                    CIdle::BelowKw { prop, kw_per_unit: *kw_per_unit, below_kw: *below_kw }
                }
            };
            idle.insert(dev, compiled);
        }
        fs.idle = idle;
    }

    /// The `specific_energy` keys the factories' rules read, with the devices they cover:
    /// `None` when a rule with the key covers a device type or all devices.
    pub fn specific_keys(&self) -> Vec<(FactoryId, SpecificKey, Option<Vec<DeviceId>>)> {
        let mut out = Vec::new();
        for fs in &self.factories {
            let mut wanted: Vec<(u32, Option<Vec<u32>>)> = Vec::new();
            for rule in fs.rules.iter().flatten() {
                for &key in &rule.specific {
                    let devices = match &rule.scope {
                        CScope::Devices(ids) => Some(ids.clone()),
                        _ => None,
                    };
                    match wanted.iter_mut().find(|(k, _)| *k == key) {
                        None => wanted.push((key, devices)),
                        Some((_, seen)) => match (seen.as_mut(), devices) {
                            (Some(list), Some(more)) => list.extend(more),
                            _ => *seen = None,
                        },
                    }
                }
            }
            for (key, devices) in wanted {
                let devices = devices.map(|mut ids| {
                    ids.sort_unstable();
                    ids.dedup();
                    ids.iter().map(|d| fs.device_ids[*d as usize].clone()).collect()
                });
                out.push((fs.id.clone(), fs.specific_keys[key as usize].clone(), devices));
            }
        }
        out
    }

    /// A closed period's figures for one `specific_energy` key (from the energy component,
    /// via the engine): they replace the key's previous figures (a device without new
    /// figures becomes unknown), then every rule reading the key is evaluated at
    /// `batch.at_ms` for the devices it covers. Timers due before run first.
    pub fn on_period(&mut self, factory: &FactoryId, batch: &PeriodFigures, out: &mut Vec<Effect>) {
        let Some(&i) = self.by_id.get(factory) else { return };
        let fs = &mut self.factories[i];
        if fs.rule_slots.is_empty() {
            return;
        }
        fs.advance(batch.at_ms, out);
        let key = fs.intern_specific(&batch.key);
        let mut devs: Vec<u32> = fs.specific.keys().filter(|(_, k)| *k == key).map(|(d, _)| *d).collect();
        fs.specific.retain(|(_, k), _| *k != key);
        for figures in &batch.figures {
            let dev = fs.intern_device(&figures.device_id);
            fs.specific.insert((dev, key), figures.clone());
            devs.push(dev);
        }
        devs.sort_unstable();
        devs.dedup();
        let slots: Vec<u32> = fs
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_some_and(|r| r.specific.contains(&key)))
            .filter_map(|(slot, _)| u32::try_from(slot).ok())
            .collect();
        for slot in slots {
            for &dev in &devs {
                if fs.covers(slot, dev) {
                    fs.evaluate(slot, dev, batch.at_ms, out);
                }
            }
        }
    }

    /// A device's type (for `{"device_type": …}` scopes) before any of its telemetry is
    /// seen: the backtest knows it from the registry.
    pub fn set_device_type(&mut self, factory: &FactoryId, device: &DeviceId, device_type: Option<String>) {
        let fs = self.factory_mut(factory);
        let dev = fs.intern_device(device);
        if device_type.is_some() {
            fs.device_types[dev as usize] = device_type;
        }
    }

    /// The codes of state labels (from the ingest dictionary, via the engine); a rule
    /// compiled afterwards compares with them. Call before [`Evaluator::upsert_rule`].
    pub fn set_state_codes(&mut self, factory: &FactoryId, codes: &[crate::states::StateCode]) {
        let fs = self.factory_mut(factory);
        for (property, label, code) in codes {
            if let Some(code) = code {
                fs.state_codes.insert((property.as_str().to_string(), label.clone()), *code);
            }
        }
    }

    /// Adds or replaces a rule; returns effects (resolves) when it was disabled or stopped
    /// covering a device with an open alert. The spec must have passed validation; `Err`
    /// names what could not be compiled otherwise.
    pub fn upsert_rule(
        &mut self,
        factory: &FactoryId,
        rule_id: &str,
        spec: &RuleSpec,
        now_ms: i64,
    ) -> Result<Vec<Effect>, String> {
        let fs = self.factory_mut(factory);
        let mut out = Vec::new();
        if !spec.enabled {
            fs.remove_rule(rule_id, now_ms, &mut out);
            return Ok(out);
        }
        let rule = fs.compile(rule_id, spec)?;
        let slot = match fs.rule_slots.get(rule_id) {
            Some(&slot) => {
                if let Some(old) = fs.rules.get(slot as usize).and_then(Option::as_ref) {
                    let old = old.clone();
                    fs.unindex(&old, slot);
                }
                fs.rules[slot as usize] = Some(rule);
                slot
            }
            None => {
                let slot = u32::try_from(fs.rules.len()).map_err(|_| "too many rules".to_string())?;
                fs.rules.push(Some(rule));
                fs.rule_slots.insert(rule_id.to_string(), slot);
                slot
            }
        };
        fs.index_rule(slot);
        // Devices the rule no longer covers lose their state (open alerts resolve).
        let mut gone: Vec<u32> =
            fs.states.keys().filter(|(s, d)| *s == slot && !fs.covers(slot, *d)).map(|(_, d)| *d).collect();
        gone.sort_unstable();
        for dev in gone {
            fs.drop_state(slot, dev, now_ms, &mut out);
        }
        Ok(out)
    }

    /// Removes a rule; its open alerts resolve (reason `rule_removed`).
    pub fn remove_rule(&mut self, factory: &FactoryId, rule_id: &str, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(&i) = self.by_id.get(factory) {
            self.factories[i].remove_rule(rule_id, now_ms, &mut out);
        }
        out
    }

    /// Puts an open alert (from the store) back into its (rule, device) state.
    /// Returns `false` when the rule is unknown or disabled.
    pub fn restore_alert(&mut self, factory: &FactoryId, alert: &RestoredAlert) -> bool {
        let Some(&i) = self.by_id.get(factory) else { return false };
        let fs = &mut self.factories[i];
        let Some(&slot) = fs.rule_slots.get(&alert.rule_id) else { return false };
        let Some((severity, remind_ms)) = fs.rules[slot as usize].as_ref().map(|r| (r.severity, r.remind_ms)) else {
            return false;
        };
        let dev = fs.intern_device(&alert.device_id);
        let next_reminder = match (severity, remind_ms) {
            (Severity::Critical, Some(r)) if !alert.acknowledged => Some(alert.opened_at.saturating_add(r)),
            _ => None,
        };
        let state = fs.states.entry((slot, dev)).or_default();
        state.phase = Phase::Active(Box::new(Active {
            key: alert.key.clone(),
            opened_at: alert.opened_at,
            count: alert.count,
            cond_true: true,
            clearing_since: None,
            acknowledged: alert.acknowledged,
            escalated: alert.escalated,
            next_reminder,
            notified: true,
        }));
        state.last_eval = state.last_eval.max(alert.opened_at);
        fs.reschedule(slot, dev);
        true
    }

    /// The (rule, device) last notified at `at_ms` (before a restart): its cooldown holds.
    pub fn restore_last_notified(&mut self, factory: &FactoryId, rule_id: &str, device: &DeviceId, at_ms: i64) {
        let Some(&i) = self.by_id.get(factory) else { return };
        let fs = &mut self.factories[i];
        let Some(&slot) = fs.rule_slots.get(rule_id) else { return };
        let dev = fs.intern_device(device);
        let state = fs.states.entry((slot, dev)).or_default();
        state.last_notified = Some(state.last_notified.map_or(at_ms, |t| t.max(at_ms)));
    }

    /// An alert was acknowledged through the API: reminders and escalation stop.
    pub fn alert_acknowledged(&mut self, factory: &FactoryId, rule_id: &str, device: &DeviceId, key: &str) {
        if let Some(state) = self.state_mut(factory, rule_id, device)
            && let Phase::Active(a) = &mut state.phase
            && a.key == key
        {
            a.acknowledged = true;
            a.next_reminder = None;
        }
    }

    /// An alert was resolved through the API: the state goes idle, and a new alert opens
    /// only after the condition was false at least once.
    pub fn alert_resolved(&mut self, factory: &FactoryId, rule_id: &str, device: &DeviceId, key: &str) {
        if let Some(state) = self.state_mut(factory, rule_id, device)
            && let Phase::Active(a) = &state.phase
            && a.key == key
        {
            state.phase = Phase::Idle;
            state.disarmed = true;
        }
    }

    fn state_mut(&mut self, factory: &FactoryId, rule_id: &str, device: &DeviceId) -> Option<&mut RdState> {
        let fs = &mut self.factories[*self.by_id.get(factory)?];
        let slot = *fs.rule_slots.get(rule_id)?;
        let dev = *fs.devices.get(device.as_str())?;
        fs.states.get_mut(&(slot, dev))
    }

    /// Evaluates one telemetry message. Timers due at or before its timestamp run first.
    pub fn on_observation(&mut self, obs: &Observation, out: &mut Vec<Effect>) {
        let Some(&i) = self.by_id.get(&obs.factory_id) else { return };
        let fs = &mut self.factories[i];
        if fs.rule_slots.is_empty() {
            return;
        }
        fs.advance(obs.ts_ms, out);
        fs.observe(obs, out);
    }

    /// Runs every timer due at or before `now_ms` (for-duration, clear-for, stale data,
    /// reminders, escalation, schedule ends). Timers fire at their due time, not at `now_ms`.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        for fs in &mut self.factories {
            fs.advance(now_ms, out);
        }
    }

    /// The earliest pending timer (possibly already obsolete), for sleeping until it.
    pub fn next_deadline(&self) -> Option<i64> {
        self.factories.iter().filter_map(|f| f.heap.peek().map(|Reverse((at, _, _))| *at)).min()
    }

    pub fn stats(&self) -> EvaluatorStats {
        let mut s = EvaluatorStats { factories: self.factories.len(), ..Default::default() };
        for f in &self.factories {
            s.rules += f.rule_slots.len();
            s.states += f.states.len();
            s.active_alerts += f.states.values().filter(|st| matches!(st.phase, Phase::Active(_))).count();
            s.timers += f.heap.len();
            s.out_of_order_points += f.out_of_order;
        }
        s
    }

    /// Values ignored so far because they were older than the latest value of their
    /// series (cheap: one addition per factory; for metrics).
    pub fn out_of_order_points(&self) -> u64 {
        self.factories.iter().map(|f| f.out_of_order).sum()
    }
}

impl FactoryState {
    fn new(id: FactoryId) -> Self {
        Self {
            id,
            tz: chrono_tz::UTC,
            rules: Vec::new(),
            rule_slots: HashMap::default(),
            props: HashMap::default(),
            prop_names: Vec::new(),
            rate_window: Vec::new(),
            index: Vec::new(),
            any_index: TriggerIndex::default(),
            devices: HashMap::default(),
            device_ids: Vec::new(),
            device_types: Vec::new(),
            last_seen: Vec::new(),
            latest: HashMap::default(),
            history: HashMap::default(),
            states: HashMap::default(),
            heap: BinaryHeap::new(),
            scratch: Vec::new(),
            out_of_order: 0,
            state_codes: HashMap::default(),
            demand_minutes: Vec::new(),
            demand: HashMap::default(),
            power: HashMap::default(),
            idle: HashMap::default(),
            specific_keys: Vec::new(),
            specific: HashMap::default(),
        }
    }

    fn intern_specific(&mut self, key: &SpecificKey) -> u32 {
        if let Some(i) = self.specific_keys.iter().position(|k| k == key) {
            return i as u32;
        }
        self.specific_keys.push(key.clone());
        (self.specific_keys.len() - 1) as u32
    }

    fn intern_prop(&mut self, p: &PropertyName) -> u32 {
        if let Some(&i) = self.props.get(p.as_str()) {
            return i;
        }
        let i = self.prop_names.len() as u32;
        self.props.insert(p.as_str().to_string(), i);
        self.prop_names.push(p.clone());
        self.rate_window.push(0);
        self.demand_minutes.push(Vec::new());
        self.index.push(TriggerIndex::default());
        i
    }

    fn intern_device(&mut self, d: &DeviceId) -> u32 {
        if let Some(&i) = self.devices.get(d.as_str()) {
            return i;
        }
        let i = self.device_ids.len() as u32;
        self.devices.insert(d.as_str().to_string(), i);
        self.device_ids.push(d.clone());
        self.device_types.push(None);
        self.last_seen.push(i64::MIN);
        i
    }

    fn compile(&mut self, rule_id: &str, spec: &RuleSpec) -> Result<CompiledRule, String> {
        let schedule = match &spec.schedule {
            Some(s) => Some(CompiledSchedule::compile(s).map_err(|(f, m)| format!("schedule.{f}: {m}"))?),
            None => None,
        };
        let scope = match &spec.scope {
            Scope::Devices { devices } => {
                let mut ids: Vec<u32> = devices.iter().map(|d| self.intern_device(d)).collect();
                ids.sort_unstable();
                ids.dedup();
                CScope::Devices(ids)
            }
            Scope::DeviceType { device_type } => CScope::Type(device_type.clone()),
            Scope::All { .. } => CScope::All,
        };
        let mut stale = Vec::new();
        let cond = self.compile_node(&spec.condition, &mut stale);
        let mut demand = Vec::new();
        let mut idle = false;
        collect_energy(&cond, &mut demand, &mut idle);
        let mut specific = Vec::new();
        collect_specific(&cond, &mut specific);
        let mut triggers = Vec::new();
        for p in spec.properties() {
            let id = self.intern_prop(&p);
            if !triggers.contains(&id) {
                triggers.push(id);
            }
        }
        // An idle leaf reads whichever property defines the device's idle time.
        let any_trigger = idle || stale.iter().any(|(p, _)| p.is_none());
        let secs = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        Ok(CompiledRule {
            id: rule_id.to_string(),
            name: spec.name.clone(),
            severity: spec.severity,
            template: if spec.message.is_empty() {
                "{rule}: {device} {property} = {value} (threshold {threshold})".to_string()
            } else {
                spec.message.clone()
            },
            cond,
            triggers,
            any_trigger,
            stale,
            demand,
            specific,
            scope,
            schedule,
            for_ms: secs(spec.for_seconds),
            clear_for_ms: secs(spec.clear_for_seconds),
            deadband: spec.deadband.filter(|d| d.is_finite() && *d > 0.0).unwrap_or(0.0),
            cooldown_ms: secs(spec.cooldown_seconds),
            auto_resolve: spec.auto_resolve,
            remind_ms: spec.notify.remind_every_minutes.filter(|m| *m > 0).map(|m| secs(m.saturating_mul(60))),
            escalate_ms: spec.notify.escalate_after_minutes.filter(|m| *m > 0).map(|m| secs(m.saturating_mul(60))),
            targets: spec.notify.targets(),
            escalate_to: spec.notify.escalate_to.clone().unwrap_or_default(),
        })
    }

    fn compile_node(&mut self, c: &Condition, stale: &mut Vec<(Option<u32>, i64)>) -> Node {
        match c {
            Condition::All(items) => Node::All(items.iter().map(|c| self.compile_node(c, stale)).collect()),
            Condition::Any(items) => Node::Any(items.iter().map(|c| self.compile_node(c, stale)).collect()),
            Condition::Not(inner) => Node::Not(Box::new(self.compile_node(inner, stale))),
            Condition::Compare { property, op, value } => {
                Node::Cmp { prop: self.intern_prop(property), op: *op, value: *value }
            }
            Condition::State { property, equal, label } => {
                let code = self.state_codes.get(&(property.as_str().to_string(), label.clone())).copied();
                Node::State { prop: self.intern_prop(property), equal: *equal, code, label: label.clone() }
            }
            Condition::Range { property, outside, min, max } => {
                Node::Range { prop: self.intern_prop(property), outside: *outside, min: *min, max: *max }
            }
            Condition::RateOfChange { property, window_seconds, compare, value, per } => {
                let prop = self.intern_prop(property);
                let window_ms = i64::try_from(window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
                let w = &mut self.rate_window[prop as usize];
                *w = (*w).max(window_ms);
                Node::Rate { prop, window_ms, op: *compare, value: *value, per_s: per.seconds() }
            }
            Condition::Stale { property, seconds } => {
                let prop = property.as_ref().map(|p| self.intern_prop(p));
                let ms = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
                stale.push((prop, ms));
                Node::Stale { prop, ms }
            }
            Condition::Demand { property, interval_minutes, when, compare, value } => {
                let prop = self.intern_prop(property);
                let list = &mut self.demand_minutes[prop as usize];
                if !list.contains(interval_minutes) {
                    list.push(*interval_minutes);
                }
                Node::Demand {
                    prop,
                    minutes: *interval_minutes,
                    projected: *when == DemandWhen::Projected,
                    op: *compare,
                    value: *value,
                }
            }
            Condition::Idle => Node::Idle,
            Condition::SpecificEnergy { period, above_percent, expected } => {
                let (baseline_id, fixed, text) = match expected {
                    ExpectedPerUnit::KwhPerUnit(k) => (None, Some(*k), format!("+{above_percent}% over {k} kWh/unit")),
                    ExpectedPerUnit::Baseline(id) => {
                        (Some(id.clone()), None, format!("+{above_percent}% over baseline {id}"))
                    }
                };
                let key = self.intern_specific(&SpecificKey { period: *period, baseline_id });
                Node::Specific { key, fixed, factor: 1.0 + above_percent / 100.0, text }
            }
        }
    }

    fn index_rule(&mut self, slot: u32) {
        let Some(rule) = self.rules[slot as usize].as_ref() else { return };
        for &p in &rule.triggers {
            self.index[p as usize].add(&rule.scope, slot);
        }
        if rule.any_trigger {
            self.any_index.add(&rule.scope, slot);
        }
    }

    fn unindex(&mut self, rule: &CompiledRule, slot: u32) {
        for &p in &rule.triggers {
            self.index[p as usize].remove(&rule.scope, slot);
        }
        if rule.any_trigger {
            self.any_index.remove(&rule.scope, slot);
        }
    }

    fn covers(&self, slot: u32, dev: u32) -> bool {
        match self.rules.get(slot as usize).and_then(Option::as_ref).map(|r| &r.scope) {
            Some(CScope::Devices(devs)) => devs.binary_search(&dev).is_ok(),
            Some(CScope::Type(t)) => self.device_types.get(dev as usize).and_then(Option::as_deref) == Some(t.as_str()),
            Some(CScope::All) => true,
            None => false,
        }
    }

    fn remove_rule(&mut self, rule_id: &str, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(slot) = self.rule_slots.get(rule_id).copied() else { return };
        let mut devs: Vec<u32> = self.states.keys().filter(|(s, _)| *s == slot).map(|(_, d)| *d).collect();
        devs.sort_unstable();
        for dev in devs {
            self.drop_state(slot, dev, now_ms, out);
        }
        if let Some(rule) = self.rules[slot as usize].take() {
            self.unindex(&rule, slot);
        }
        self.rule_slots.remove(rule_id);
    }

    /// Removes a (rule, device) state, resolving its open alert.
    fn drop_state(&mut self, slot: u32, dev: u32, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(state) = self.states.remove(&(slot, dev)) else { return };
        if let (Phase::Active(a), Some(rule)) = (state.phase, self.rules[slot as usize].as_ref()) {
            let alert = AlertRef {
                factory_id: self.id.clone(),
                rule_id: rule.id.clone(),
                device_id: self.device_ids[dev as usize].clone(),
                key: a.key.clone(),
            };
            out.push(Effect::Resolve {
                alert,
                value: None,
                reason: ResolveReason::RuleRemoved,
                at_ms: now_ms.max(state.last_eval),
            });
        }
    }

    /// Runs timers due at or before `limit`.
    fn advance(&mut self, limit: i64, out: &mut Vec<Effect>) {
        while let Some(&Reverse((at, slot, dev))) = self.heap.peek() {
            if at > limit {
                break;
            }
            self.heap.pop();
            let current = self.states.get_mut(&(slot, dev)).map(|s| {
                let ok = s.queued_at == Some(at);
                if ok {
                    s.queued_at = None;
                }
                ok
            });
            if current == Some(true) {
                self.evaluate(slot, dev, at, out);
            }
        }
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Effect>) {
        let dev = self.intern_device(&obs.device_id);
        let d = dev as usize;
        if let Some(t) = &obs.device_type
            && self.device_types[d].as_deref() != Some(t.as_str())
        {
            self.device_types[d] = Some(t.clone());
        }
        let ts = obs.ts_ms;
        let device_newer = ts > self.last_seen[d];
        if device_newer {
            self.last_seen[d] = ts;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let device_type = self.device_types[d].as_deref();
        for (name, value) in &obs.values {
            let Some(&p) = self.props.get(name.as_str()) else { continue };
            // A point's identity is (series, timestamp) (ADR 0009): a newer timestamp is
            // the next value; the same timestamp with another value is a correction and
            // replaces it (the store keeps the last write too), so the rules re-evaluate
            // with it; the same value again is a redelivery and changes nothing. An older
            // point is history (a backfill, a late retry): live evaluation has moved past
            // it, so it is counted and ignored; a backtest over the stored series sees it.
            match self.latest.get(&(dev, p)) {
                Some((t, _)) if ts < *t => {
                    self.out_of_order += 1;
                    continue;
                }
                Some((t, v)) if ts == *t && v == value => continue,
                _ => {}
            }
            self.latest.insert((dev, p), (ts, *value));
            let window = self.rate_window[p as usize];
            if window > 0 {
                let h = self.history.entry((dev, p)).or_default();
                if h.back().is_some_and(|(t, _)| *t == ts) {
                    h.pop_back();
                }
                if let Value::Float(f) = value {
                    h.push_back((ts, *f));
                }
                let start = ts.saturating_sub(window);
                while h.front().is_some_and(|(t, _)| *t < start) || h.len() > MAX_RATE_SAMPLES {
                    h.pop_front();
                }
            }
            if !self.demand_minutes[p as usize].is_empty()
                && let (Some(&(kw_per_unit, max_gap)), Value::Float(x)) = (self.power.get(&(dev, p)), value)
            {
                let kw = x * kw_per_unit;
                for &minutes in &self.demand_minutes[p as usize] {
                    match self.demand.get_mut(&(dev, p, minutes)) {
                        Some(acc) => acc.push(self.tz, max_gap, ts, kw),
                        None => {
                            self.demand.insert((dev, p, minutes), DemandAcc::new(self.tz, minutes, ts, kw));
                        }
                    }
                }
            }
            self.index[p as usize].collect(dev, device_type, &mut scratch);
        }
        if device_newer {
            self.any_index.collect(dev, device_type, &mut scratch);
        }
        if scratch.len() > 1 {
            scratch.sort_unstable();
            scratch.dedup();
        }
        for &slot in &scratch {
            self.evaluate(slot, dev, ts, out);
        }
        self.scratch = scratch;
    }

    /// Evaluates one (rule, device) at `at` and reschedules its timer.
    fn evaluate(&mut self, slot: u32, dev: u32, at: i64, out: &mut Vec<Effect>) {
        let Self {
            rules,
            states,
            latest,
            history,
            prop_names,
            last_seen,
            device_ids,
            id,
            tz,
            heap,
            demand,
            power,
            idle,
            specific,
            ..
        } = self;
        let Some(rule) = rules.get(slot as usize).and_then(Option::as_ref) else { return };
        let state = states.entry((slot, dev)).or_default();
        let now = at.max(state.last_eval);
        state.last_eval = now;
        let cx = Ctx {
            latest,
            history,
            prop_names,
            last_seen: last_seen.get(dev as usize).copied().unwrap_or(i64::MIN),
            dev,
            now,
            tz: *tz,
            demand,
            power,
            idle,
            specific,
        };
        let device = &device_ids[dev as usize];
        step(rule, state, &cx, id, device, *tz, out);
        if let Some(due) = next_due(rule, state, &cx)
            && state.queued_at.is_none_or(|q| due < q)
        {
            state.queued_at = Some(due);
            heap.push(Reverse((due, slot, dev)));
        }
    }

    fn reschedule(&mut self, slot: u32, dev: u32) {
        let Self {
            rules, states, latest, history, prop_names, last_seen, heap, tz, demand, power, idle, specific, ..
        } = self;
        let (Some(rule), Some(state)) =
            (rules.get(slot as usize).and_then(Option::as_ref), states.get_mut(&(slot, dev)))
        else {
            return;
        };
        let cx = Ctx {
            latest,
            history,
            prop_names,
            last_seen: last_seen.get(dev as usize).copied().unwrap_or(i64::MIN),
            dev,
            now: state.last_eval,
            tz: *tz,
            demand,
            power,
            idle,
            specific,
        };
        if let Some(due) = next_due(rule, state, &cx)
            && state.queued_at.is_none_or(|q| due < q)
        {
            state.queued_at = Some(due);
            heap.push(Reverse((due, slot, dev)));
        }
    }
}

fn compare(v: Value, op: CmpOp, lit: Value, relax: f64) -> Option<bool> {
    match (v, lit) {
        (Value::Float(x), Value::Float(t)) => Some(match op {
            CmpOp::Gt => x > t - relax,
            CmpOp::Ge => x >= t - relax,
            CmpOp::Lt => x < t + relax,
            CmpOp::Le => x <= t + relax,
            CmpOp::Eq => x == t,
            CmpOp::Ne => x != t,
        }),
        (Value::Bool(a), Value::Bool(b)) => match op {
            CmpOp::Eq => Some(a == b),
            CmpOp::Ne => Some(a != b),
            _ => None,
        },
        _ => None,
    }
}

fn rate(cx: &Ctx<'_>, prop: u32, window_ms: i64, per_s: f64) -> Option<f64> {
    let h = cx.history.get(&(cx.dev, prop))?;
    let &(t1, v1) = h.back()?;
    let start = t1.saturating_sub(window_ms);
    let i = h.partition_point(|(t, _)| *t < start);
    let &(t0, v0) = h.get(i)?;
    if t1 <= t0 {
        return None;
    }
    let r = (v1 - v0) / (t1.saturating_sub(t0) as f64 / 1000.0) * per_s;
    r.is_finite().then_some(r)
}

/// Kleene three-valued evaluation; `relax` widens thresholds toward "true" (deadband).
fn eval<'a>(n: &'a Node, cx: &Ctx<'_>, relax: f64, w: &mut Witness<'a>) -> Option<bool> {
    match n {
        Node::All(items) => {
            let mut unknown = false;
            for c in items {
                match eval(c, cx, relax, w) {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            if unknown { None } else { Some(true) }
        }
        Node::Any(items) => {
            let mut unknown = false;
            for c in items {
                match eval(c, cx, relax, w) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            if unknown { None } else { Some(false) }
        }
        Node::Not(inner) => eval(inner, cx, -relax, w).map(|b| !b),
        Node::Cmp { prop, op, value } => {
            let (_, v) = cx.latest.get(&(cx.dev, *prop))?;
            let r = compare(*v, *op, *value, relax)?;
            if r && w.is_none() {
                *w = Some((n, *v));
            }
            Some(r)
        }
        Node::State { prop, equal, code, .. } => {
            let (_, v) = cx.latest.get(&(cx.dev, *prop))?;
            let Value::Float(x) = *v else { return None };
            let r = code.is_some_and(|c| x == f64::from(c)) == *equal;
            if r && w.is_none() {
                *w = Some((n, *v));
            }
            Some(r)
        }
        Node::Range { prop, outside, min, max } => {
            let (_, v) = cx.latest.get(&(cx.dev, *prop))?;
            let Value::Float(x) = *v else { return None };
            let r = if *outside { x < min + relax || x > max - relax } else { x >= min - relax && x <= max + relax };
            if r && w.is_none() {
                *w = Some((n, *v));
            }
            Some(r)
        }
        Node::Rate { prop, window_ms, op, value, per_s } => {
            let r = rate(cx, *prop, *window_ms, *per_s)?;
            let b = compare(Value::Float(r), *op, Value::Float(*value), relax)?;
            if b && w.is_none() {
                *w = Some((n, Value::Float(r)));
            }
            Some(b)
        }
        Node::Stale { prop, ms } => {
            let last = match prop {
                Some(p) => cx.latest.get(&(cx.dev, *p))?.0,
                None if cx.last_seen == i64::MIN => return None,
                None => cx.last_seen,
            };
            let silent = cx.now.saturating_sub(last);
            let b = silent >= *ms;
            if b && w.is_none() {
                *w = Some((n, Value::Float(silent as f64 / 1000.0)));
            }
            Some(b)
        }
        Node::Demand { prop, minutes, projected, op, value } => {
            let kw = demand_kw(cx, *prop, *minutes, *projected)?;
            let b = compare(Value::Float(kw), *op, Value::Float(*value), relax)?;
            if b && w.is_none() {
                *w = Some((n, Value::Float(kw)));
            }
            Some(b)
        }
        Node::Idle => {
            let (b, seen) = match cx.idle.get(&cx.dev)? {
                CIdle::State { prop, codes } => {
                    let (_, v) = cx.latest.get(&(cx.dev, *prop))?;
                    let Value::Float(x) = *v else { return None };
                    (codes.iter().any(|c| f64::from(*c) == x), Value::Bool(true))
                }
                CIdle::BelowKw { prop, kw_per_unit, below_kw } => {
                    let (_, v) = cx.latest.get(&(cx.dev, *prop))?;
                    let Value::Float(x) = *v else { return None };
                    let kw = x * kw_per_unit;
                    (kw < *below_kw, Value::Float(kw))
                }
            };
            if b && w.is_none() {
                *w = Some((n, seen));
            }
            Some(b)
        }
        Node::Specific { key, fixed, factor, .. } => {
            let (actual, expected) = kwh_per_unit(cx.specific.get(&(cx.dev, *key))?, *fixed)?;
            let b = actual > expected * factor - relax;
            if b && w.is_none() {
                *w = Some((n, Value::Float(actual)));
            }
            Some(b)
        }
    }
}

/// The `specific_energy` keys a condition reads.
fn collect_specific(n: &Node, out: &mut Vec<u32>) {
    match n {
        Node::All(items) | Node::Any(items) => items.iter().for_each(|c| collect_specific(c, out)),
        Node::Not(inner) => collect_specific(inner, out),
        Node::Specific { key, .. } if !out.contains(key) => out.push(*key),
        _ => {}
    }
}

/// A demand leaf's kW at `cx.now` (`None`: not a power property here, or no data).
fn demand_kw(cx: &Ctx<'_>, prop: u32, minutes: u32, projected: bool) -> Option<f64> {
    let &(_, max_gap) = cx.power.get(&(cx.dev, prop))?;
    let acc = cx.demand.get(&(cx.dev, prop, minutes))?;
    if projected { acc.projected(max_gap, cx.now) } else { acc.completed(cx.tz, max_gap, cx.now).map(|(_, kw)| kw) }
}

/// The completed-demand leaves (for their closing timers) and whether an idle leaf exists.
fn collect_energy(n: &Node, demand: &mut Vec<(u32, u32)>, idle: &mut bool) {
    match n {
        Node::All(items) | Node::Any(items) => items.iter().for_each(|c| collect_energy(c, demand, idle)),
        Node::Not(inner) => collect_energy(inner, demand, idle),
        Node::Demand { prop, minutes, projected: false, .. } if !demand.contains(&(*prop, *minutes)) => {
            demand.push((*prop, *minutes));
        }
        Node::Idle => *idle = true,
        _ => {}
    }
}

fn first_leaf(n: &Node) -> Option<&Node> {
    match n {
        Node::All(items) | Node::Any(items) => items.iter().find_map(first_leaf),
        Node::Not(inner) => first_leaf(inner),
        leaf => Some(leaf),
    }
}

fn leaf_prop(n: &Node) -> Option<u32> {
    match n {
        Node::Cmp { prop, .. }
        | Node::State { prop, .. }
        | Node::Range { prop, .. }
        | Node::Rate { prop, .. }
        | Node::Demand { prop, .. } => Some(*prop),
        Node::Stale { prop, .. } => *prop,
        _ => None,
    }
}

fn fmt_value(v: Value) -> String {
    match v {
        Value::Float(f) => format!("{f}"),
        Value::Bool(b) => b.to_string(),
    }
}

fn threshold_text(n: &Node) -> Option<String> {
    Some(match n {
        Node::Cmp { value, .. } => fmt_value(*value),
        Node::State { equal: true, label, .. } => label.clone(),
        Node::State { equal: false, label, .. } => format!("not {label}"),
        Node::Range { outside: false, min, max, .. } => format!("{min}..{max}"),
        Node::Range { outside: true, min, max, .. } => format!("outside {min}..{max}"),
        Node::Rate { value, per_s, .. } => {
            let unit = if *per_s >= 3600.0 {
                "h"
            } else if *per_s >= 60.0 {
                "min"
            } else {
                "s"
            };
            format!("{value}/{unit}")
        }
        Node::Stale { ms, .. } => format!("{}s", ms / 1000),
        Node::Demand { value, .. } => format!("{value} kW"),
        Node::Idle => "idle".to_string(),
        Node::Specific { text, .. } => text.clone(),
        _ => return None,
    })
}

/// The explanation of the current state: property, value, threshold.
struct Explain {
    property: Option<String>,
    value: Option<Value>,
    threshold: Option<String>,
    /// The value as a state label, when the leaf is `state == label` and holds.
    label: Option<String>,
}

fn explain(rule: &CompiledRule, cx: &Ctx<'_>, witness: Witness<'_>) -> Explain {
    let (leaf, value) = match witness {
        Some((leaf, v)) => (Some(leaf), Some(v)),
        None => {
            let leaf = first_leaf(&rule.cond);
            let value = match leaf {
                // A demand leaf is explained by its kW, not by the latest raw reading.
                Some(Node::Demand { prop, minutes, projected, .. }) => {
                    demand_kw(cx, *prop, *minutes, *projected).map(Value::Float)
                }
                // A specific-energy leaf is explained by the period's kWh per unit.
                Some(Node::Specific { key, fixed, .. }) => cx
                    .specific
                    .get(&(cx.dev, *key))
                    .and_then(|f| kwh_per_unit(f, *fixed))
                    .map(|(actual, _)| Value::Float(actual)),
                _ => leaf.and_then(leaf_prop).and_then(|p| cx.latest.get(&(cx.dev, p))).map(|(_, v)| *v),
            };
            (leaf, value)
        }
    };
    let label = match (leaf, value) {
        (Some(Node::State { equal: true, code: Some(c), label, .. }), Some(Value::Float(x))) if x == f64::from(*c) => {
            Some(label.clone())
        }
        _ => None,
    };
    Explain {
        label,
        property: leaf.and_then(leaf_prop).and_then(|p| cx.prop_names.get(p as usize)).map(|p| p.as_str().to_string()),
        value,
        threshold: leaf.and_then(threshold_text),
    }
}

fn render(rule: &CompiledRule, device: &DeviceId, ex: &Explain, at: i64, tz: Tz) -> String {
    let mut out = String::with_capacity(rule.template.len() + 32);
    let mut rest = rule.template.as_str();
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        match name {
            "device" => out.push_str(device.as_str()),
            "property" => out.push_str(ex.property.as_deref().unwrap_or("-")),
            "value" => match &ex.label {
                Some(label) => out.push_str(label),
                None => out.push_str(&ex.value.map(fmt_value).unwrap_or_else(|| "-".into())),
            },
            "threshold" => out.push_str(ex.threshold.as_deref().unwrap_or("-")),
            "rule" => out.push_str(&rule.name),
            "time" => match chrono::DateTime::from_timestamp_millis(at) {
                Some(t) => out.push_str(&t.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                None => out.push('-'),
            },
            _ => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The state machine for one (rule, device) at `cx.now`.
fn step(
    rule: &CompiledRule,
    st: &mut RdState,
    cx: &Ctx<'_>,
    factory: &FactoryId,
    device: &DeviceId,
    tz: Tz,
    out: &mut Vec<Effect>,
) {
    let now = cx.now;
    let alert_ref = |key: &str| AlertRef {
        factory_id: factory.clone(),
        rule_id: rule.id.clone(),
        device_id: device.clone(),
        key: key.to_string(),
    };
    let in_schedule = rule.schedule.as_ref().is_none_or(|s| s.is_active(now, tz));
    if !in_schedule {
        let mut to_resolve = None;
        match &st.phase {
            Phase::Pending { .. } => st.phase = Phase::Idle,
            Phase::Active(a) if rule.schedule.as_ref().is_some_and(|s| s.outside == OutsideSchedule::Resolve) => {
                to_resolve = Some((a.key.clone(), a.notified));
            }
            _ => {}
        }
        if let Some((key, notified)) = to_resolve {
            let ex = explain(rule, cx, None);
            resolve(
                rule,
                st,
                key,
                notified,
                ex.value,
                ResolveReason::OutsideSchedule,
                now,
                &alert_ref,
                tz,
                device,
                out,
            );
        }
    } else {
        let relax = match &st.phase {
            Phase::Active(a) if a.cond_true => rule.deadband,
            _ => 0.0,
        };
        let mut witness: Witness<'_> = None;
        let cond = eval(&rule.cond, cx, relax, &mut witness);
        match cond {
            None => {}
            Some(true) => match &mut st.phase {
                Phase::Idle => {
                    if st.disarmed {
                        // Manually resolved while still true: wait for the condition to clear first.
                    } else if rule.for_ms == 0 {
                        let ex = explain(rule, cx, witness);
                        open(rule, st, ex, now, &alert_ref, device, tz, out);
                    } else {
                        st.phase = Phase::Pending { since: now };
                    }
                }
                Phase::Pending { since } => {
                    if now.saturating_sub(*since) >= rule.for_ms {
                        let ex = explain(rule, cx, witness);
                        open(rule, st, ex, now, &alert_ref, device, tz, out);
                    }
                }
                Phase::Active(a) => {
                    a.clearing_since = None;
                    if !a.cond_true {
                        a.cond_true = true;
                        a.count += 1;
                        let ex = explain(rule, cx, witness);
                        let message = render(rule, device, &ex, now, tz);
                        out.push(Effect::Update {
                            alert: alert_ref(&a.key),
                            count: a.count,
                            value: ex.value,
                            message: message.clone(),
                            at_ms: now,
                        });
                        if st.last_notified.is_none_or(|t| now.saturating_sub(t) >= rule.cooldown_ms) {
                            st.last_notified = Some(now);
                            a.notified = true;
                            if !rule.targets.is_empty() {
                                out.push(Effect::Notify(Notification {
                                    alert: alert_ref(&a.key),
                                    kind: NotifyKind::Retriggered,
                                    targets: rule.targets.clone(),
                                    severity: rule.severity,
                                    message,
                                    at_ms: now,
                                }));
                            }
                        }
                    }
                }
            },
            Some(false) => {
                st.disarmed = false;
                match &mut st.phase {
                    Phase::Idle => {}
                    Phase::Pending { .. } => st.phase = Phase::Idle,
                    Phase::Active(a) => {
                        if a.cond_true {
                            if !rule.auto_resolve {
                                a.cond_true = false;
                            } else {
                                let since = *a.clearing_since.get_or_insert(now);
                                if now.saturating_sub(since) >= rule.clear_for_ms {
                                    let (key, notified) = (a.key.clone(), a.notified);
                                    let ex = explain(rule, cx, None);
                                    resolve(
                                        rule,
                                        st,
                                        key,
                                        notified,
                                        ex.value,
                                        ResolveReason::Cleared,
                                        now,
                                        &alert_ref,
                                        tz,
                                        device,
                                        out,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // Reminders and escalation of unacknowledged alerts.
    if let Phase::Active(a) = &mut st.phase
        && !a.acknowledged
    {
        let mut due_kinds = Vec::new();
        if let (Some(next), Some(every)) = (a.next_reminder, rule.remind_ms)
            && next <= now
        {
            let every = every.max(1);
            let periods = now.saturating_sub(next) / every + 1;
            a.next_reminder = Some(next.saturating_add(periods.saturating_mul(every)));
            due_kinds.push(NotifyKind::Reminder);
        }
        if let Some(after) = rule.escalate_ms
            && !a.escalated
            && a.opened_at.saturating_add(after) <= now
        {
            a.escalated = true;
            due_kinds.push(NotifyKind::Escalation);
        }
        if !due_kinds.is_empty() {
            let ex = explain(rule, cx, None);
            let message = render(rule, device, &ex, now, tz);
            for kind in due_kinds {
                let targets = if kind == NotifyKind::Escalation { &rule.escalate_to } else { &rule.targets };
                if !targets.is_empty() {
                    out.push(Effect::Notify(Notification {
                        alert: alert_ref(&a.key),
                        kind,
                        targets: targets.clone(),
                        severity: rule.severity,
                        message: message.clone(),
                        at_ms: now,
                    }));
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn open(
    rule: &CompiledRule,
    st: &mut RdState,
    ex: Explain,
    now: i64,
    alert_ref: &impl Fn(&str) -> AlertRef,
    device: &DeviceId,
    tz: Tz,
    out: &mut Vec<Effect>,
) {
    let key = format!("{}:{}:{}", rule.id, device, now);
    let message = render(rule, device, &ex, now, tz);
    let alert = alert_ref(&key);
    out.push(Effect::Open(OpenAlert {
        alert: alert.clone(),
        rule_name: rule.name.clone(),
        severity: rule.severity,
        message: message.clone(),
        property: ex.property,
        value: ex.value,
        threshold: ex.threshold,
        at_ms: now,
    }));
    let notify = st.last_notified.is_none_or(|t| now.saturating_sub(t) >= rule.cooldown_ms);
    if notify {
        st.last_notified = Some(now);
        if !rule.targets.is_empty() {
            out.push(Effect::Notify(Notification {
                alert,
                kind: NotifyKind::Opened,
                targets: rule.targets.clone(),
                severity: rule.severity,
                message,
                at_ms: now,
            }));
        }
    }
    let next_reminder = match (rule.severity, rule.remind_ms) {
        (Severity::Critical, Some(r)) => Some(now.saturating_add(r)),
        _ => None,
    };
    st.phase = Phase::Active(Box::new(Active {
        key,
        opened_at: now,
        count: 1,
        cond_true: true,
        clearing_since: None,
        acknowledged: false,
        escalated: false,
        next_reminder,
        notified: notify,
    }));
}

#[allow(clippy::too_many_arguments)]
fn resolve(
    rule: &CompiledRule,
    st: &mut RdState,
    key: String,
    notified: bool,
    value: Option<Value>,
    reason: ResolveReason,
    now: i64,
    alert_ref: &impl Fn(&str) -> AlertRef,
    tz: Tz,
    device: &DeviceId,
    out: &mut Vec<Effect>,
) {
    out.push(Effect::Resolve { alert: alert_ref(&key), value, reason, at_ms: now });
    if notified && !rule.targets.is_empty() {
        let ex = Explain { property: None, value, threshold: None, label: None };
        out.push(Effect::Notify(Notification {
            alert: alert_ref(&key),
            kind: NotifyKind::Resolved,
            targets: rule.targets.clone(),
            severity: rule.severity,
            message: format!("resolved ({}): {}", reason.as_str(), render(rule, device, &ex, now, tz)),
            at_ms: now,
        }));
    }
    st.phase = Phase::Idle;
}

/// The next time this (rule, device) must be looked at without an event, strictly after now.
fn next_due(rule: &CompiledRule, st: &RdState, cx: &Ctx<'_>) -> Option<i64> {
    let now = cx.now;
    let mut due: Option<i64> = None;
    let mut consider = |t: i64| {
        if t > now {
            due = Some(due.map_or(t, |d| d.min(t)));
        }
    };
    match &st.phase {
        Phase::Idle => {}
        Phase::Pending { since } => consider(since.saturating_add(rule.for_ms)),
        Phase::Active(a) => {
            if let Some(since) = a.clearing_since {
                consider(since.saturating_add(rule.clear_for_ms));
            }
            if !a.acknowledged {
                if let Some(n) = a.next_reminder {
                    consider(n);
                }
                if let Some(after) = rule.escalate_ms
                    && !a.escalated
                {
                    consider(a.opened_at.saturating_add(after));
                }
            }
            if rule.schedule.as_ref().is_some_and(|s| s.outside == OutsideSchedule::Resolve && !s.always_active()) {
                // Schedules change state on minute boundaries.
                consider((now.div_euclid(60_000) + 1).saturating_mul(60_000));
            }
        }
    }
    for (prop, ms) in &rule.stale {
        let last = match prop {
            Some(p) => cx.latest.get(&(cx.dev, *p)).map(|(t, _)| *t),
            None => (cx.last_seen != i64::MIN).then_some(cx.last_seen),
        };
        if let Some(last) = last {
            consider(last.saturating_add(*ms));
        }
    }
    for &(prop, minutes) in &rule.demand {
        if let (Some(&(_, max_gap)), Some(acc)) =
            (cx.power.get(&(cx.dev, prop)), cx.demand.get(&(cx.dev, prop, minutes)))
            && let Some(t) = acc.next_change(cx.tz, max_gap, now)
        {
            consider(t);
        }
    }
    due
}
