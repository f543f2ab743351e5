//! The rule model: what a rule says, as JSON (see README.md for the reference).
//!
//! Everything except the condition tree is plain serde. The condition tree has its own
//! parser ([`Condition::parse`]) so that a bad leaf is reported with its exact path
//! (`condition.all[1].any[0].op`) instead of serde's "did not match any variant".

use factoryops_tsdb::Value;
use factoryops_types::{DeviceId, PropertyName};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, json};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType,
    Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::validate::FieldError;

fn yes() -> bool {
    true
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A rule as the API receives and returns it (without id and timestamps).
///
/// Unknown fields are errors. See crates/rules/README.md for the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// 1–200 characters.
    pub name: String,
    /// Default `true`; `false` = not evaluated, its open alerts resolve.
    #[serde(default = "yes")]
    pub enabled: bool,
    pub scope: Scope,
    pub condition: Condition,
    /// The condition must hold continuously this long before the alert opens.
    #[serde(default)]
    pub for_seconds: u64,
    /// Hysteresis in time: with `auto_resolve`, the condition must stay false this long
    /// before the alert resolves.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clear_for_seconds: u64,
    /// Hysteresis in value: while an alert is firing, every numeric threshold is relaxed by
    /// this amount in the direction that keeps the condition true (`> 80` with deadband 2
    /// stays firing until the value is ≤ 78).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
    /// `null` (or absent) = always active.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    pub severity: Severity,
    /// Template; placeholders `{device} {property} {value} {threshold} {time} {rule}`.
    #[serde(default)]
    pub message: String,
    /// Minimum time between two notifications of this rule for the same device.
    #[serde(default)]
    pub cooldown_seconds: u64,
    /// Resolve the alert when the condition clears (after `clear_for_seconds`). Default `true`.
    #[serde(default = "yes")]
    pub auto_resolve: bool,
    #[serde(default)]
    pub notify: Notify,
}

impl RuleSpec {
    /// Every property the condition reads, in first-seen order, without duplicates.
    pub fn properties(&self) -> Vec<PropertyName> {
        let mut out = Vec::new();
        self.condition.visit_leaves(&mut |leaf| {
            if let Some(p) = leaf.property()
                && !out.contains(p)
            {
                out.push(p.clone());
            }
        });
        out
    }
}

/// Which devices a rule applies to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Scope {
    Devices { devices: Vec<DeviceId> },
    DeviceType { device_type: String },
    All { all: bool },
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        let shape = "must be one of {\"devices\": [...]}, {\"device_type\": \"...\"}, {\"all\": true}";
        let Some(object) = value.as_object().filter(|o| o.len() == 1) else {
            return Err(D::Error::custom(shape));
        };
        if let Some(devices) = object.get("devices") {
            let devices =
                Vec::<DeviceId>::deserialize(devices).map_err(|e| D::Error::custom(format!("devices: {e}")))?;
            Ok(Scope::Devices { devices })
        } else if let Some(t) = object.get("device_type") {
            let device_type = t.as_str().ok_or_else(|| D::Error::custom("device_type: must be a string"))?;
            Ok(Scope::DeviceType { device_type: device_type.to_string() })
        } else if let Some(all) = object.get("all") {
            let all = all.as_bool().ok_or_else(|| D::Error::custom("all: must be true"))?;
            Ok(Scope::All { all })
        } else {
            Err(D::Error::custom(shape))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Who is told. `users` are user ids of the factory; the notify component resolves them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub whatsapp: Vec<String>,
}

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.emails.is_empty() && self.whatsapp.is_empty()
    }
}

/// Notification targets plus reminders and escalation for unacknowledged alerts.
/// Responses always carry `users`, `emails` and `whatsapp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub whatsapp: Vec<String>,
    /// Re-notify an unacknowledged *critical* alert every N minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_every_minutes: Option<u64>,
    /// Notify `escalate_to` once the alert stayed unacknowledged this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after_minutes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<Targets>,
}

impl Notify {
    pub fn targets(&self) -> Targets {
        Targets { users: self.users.clone(), emails: self.emails.clone(), whatsapp: self.whatsapp.clone() }
    }
}

/// When a rule is active. Responses spell out every field except an empty `cron`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// `"factory"` (the factory's time zone, the default) or an IANA name such as `"Europe/Berlin"`.
    #[serde(default = "factory_tz")]
    pub timezone: String,
    /// Active days (`mon` … `sun`); empty = every day.
    #[serde(default)]
    pub days: Vec<Day>,
    /// Local time windows `{from: "HH:MM", to: "HH:MM"}`; `to` ≤ `from` crosses midnight
    /// (the part after midnight belongs to the day the window started). Empty = all day.
    #[serde(default)]
    pub windows: Vec<TimeWindow>,
    /// Cron expressions (5 fields, local time); when given, the rule is active only in
    /// minutes that match at least one of them (in addition to `days`/`windows`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron: Vec<String>,
    /// What happens to an open alert when the schedule ends.
    #[serde(default)]
    pub outside_schedule: OutsideSchedule,
}

fn factory_tz() -> String {
    "factory".into()
}

/// A local wall-clock window; `to` ≤ `from` crosses midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// `HH:MM`.
    #[schema(example = "06:00")]
    pub from: String,
    /// `HH:MM` (`24:00` allowed).
    #[schema(example = "22:00")]
    pub to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// What happens to an open alert when the schedule ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutsideSchedule {
    /// Leave open alerts as they are (they resolve at the next in-schedule evaluation).
    #[default]
    Keep,
    /// Resolve open alerts when the schedule ends.
    Resolve,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            "==" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            _ => return None,
        })
    }
}

/// The unit a rate of change is expressed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RatePer {
    #[default]
    Second,
    Minute,
    Hour,
}

impl RatePer {
    pub fn as_str(self) -> &'static str {
        match self {
            RatePer::Second => "second",
            RatePer::Minute => "minute",
            RatePer::Hour => "hour",
        }
    }

    pub fn seconds(self) -> f64 {
        match self {
            RatePer::Second => 1.0,
            RatePer::Minute => 60.0,
            RatePer::Hour => 3600.0,
        }
    }
}

/// A condition tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// `{"property", "op": ">"|">="|"<"|"<="|"=="|"!=", "value": number|bool}`
    Compare {
        property: PropertyName,
        op: CmpOp,
        value: Value,
    },
    /// `{"property", "op": "=="|"!=", "value": "idle"}`: a state property's label (ADR
    /// 0014); `equal` is false for `!=`.
    State {
        property: PropertyName,
        equal: bool,
        label: String,
    },
    /// `{"property", "op": "between"|"outside", "min", "max"}` (bounds inclusive for between).
    Range {
        property: PropertyName,
        outside: bool,
        min: f64,
        max: f64,
    },
    /// `{"property", "op": "rate_of_change", "window_seconds", "compare", "value", "per"?}`:
    /// (newest − oldest sample inside the window) / elapsed time, in units per `per`.
    RateOfChange {
        property: PropertyName,
        window_seconds: u64,
        compare: CmpOp,
        value: f64,
        per: RatePer,
    },
    /// `{"op": "stale", "seconds", "property"?}`: no data (of that property, or of the device
    /// at all) for at least `seconds`.
    Stale {
        property: Option<PropertyName>,
        seconds: u64,
    },
    /// `{"property", "op": "demand", "interval_minutes"?, "when"?, "compare", "value"}`: the
    /// average power (kW) of a power property over a demand interval aligned to the local
    /// clock, as crates/energy computes peak demand (ADR 0016).
    Demand {
        property: PropertyName,
        interval_minutes: u32,
        when: DemandWhen,
        compare: CmpOp,
        value: f64,
    },
    /// `{"op": "idle"}`: the device is idle by its energy configuration (its state property
    /// shows idle/off/setup, or its power is below its idle threshold; ADR 0016).
    Idle,
    /// `{"op": "specific_energy", "period"?, "above_percent", "kwh_per_unit" | "baseline_id"}`:
    /// the kWh per unit produced of the latest closed local day or shift is above the
    /// expected kWh per unit by more than `above_percent` (ADR 0016).
    SpecificEnergy {
        period: SpecificPeriod,
        above_percent: f64,
        expected: ExpectedPerUnit,
    },
}

/// The closed period a `specific_energy` leaf judges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpecificPeriod {
    /// The local day (midnight to midnight in the factory's time zone).
    #[default]
    Day,
    /// A shift occurrence of the factory's shift calendar.
    Shift,
}

impl SpecificPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecificPeriod::Day => "day",
            SpecificPeriod::Shift => "shift",
        }
    }
}

/// What a `specific_energy` leaf expects per unit.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpectedPerUnit {
    /// A fixed figure in kWh per unit.
    KwhPerUnit(f64),
    /// An EnPI baseline's expected kWh for the period divided by the units produced.
    Baseline(String),
}

/// Which demand interval a `demand` leaf judges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DemandWhen {
    /// The last completed interval: the figure the grid bills.
    #[default]
    Completed,
    /// The running interval, its energy so far plus the latest power held to its end.
    Projected,
}

impl DemandWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            DemandWhen::Completed => "completed",
            DemandWhen::Projected => "projected",
        }
    }
}

/// Deepest nesting accepted (the JSON parser itself stops at 128).
pub const MAX_CONDITION_DEPTH: usize = 16;
/// Most leaves in one condition.
pub const MAX_CONDITION_LEAVES: usize = 256;

impl Condition {
    /// The property of a leaf (`None` for combinators and property-less `stale`).
    pub fn property(&self) -> Option<&PropertyName> {
        match self {
            Condition::Compare { property, .. }
            | Condition::State { property, .. }
            | Condition::Range { property, .. }
            | Condition::RateOfChange { property, .. } => Some(property),
            Condition::Stale { property, .. } => property.as_ref(),
            Condition::Demand { property, .. } => Some(property),
            _ => None,
        }
    }

    /// Whether any leaf needs the devices' energy configuration ([`crate::EnergyFacts`]).
    pub fn uses_energy(&self) -> bool {
        let mut found = false;
        self.visit_leaves(&mut |leaf| found |= matches!(leaf, Condition::Demand { .. } | Condition::Idle));
        found
    }

    /// The (period, baseline) keys of the `specific_energy` leaves, without duplicates.
    pub fn specific_keys(&self) -> Vec<crate::energy::SpecificKey> {
        let mut out = Vec::new();
        self.visit_leaves(&mut |leaf| {
            if let Condition::SpecificEnergy { period, expected, .. } = leaf {
                let key = crate::energy::SpecificKey {
                    period: *period,
                    baseline_id: match expected {
                        ExpectedPerUnit::Baseline(id) => Some(id.clone()),
                        ExpectedPerUnit::KwhPerUnit(_) => None,
                    },
                };
                if !out.contains(&key) {
                    out.push(key);
                }
            }
        });
        out
    }

    /// Calls `f` for every leaf with its path (`prefix` is the path of `self`).
    pub fn visit_leaves_with_path(&self, prefix: &str, f: &mut impl FnMut(&Condition, &str)) {
        match self {
            Condition::All(items) | Condition::Any(items) => {
                let name = if matches!(self, Condition::All(_)) { "all" } else { "any" };
                for (i, c) in items.iter().enumerate() {
                    c.visit_leaves_with_path(&format!("{}[{i}]", join(prefix, name)), f);
                }
            }
            Condition::Not(inner) => inner.visit_leaves_with_path(&join(prefix, "not"), f),
            leaf => f(leaf, prefix),
        }
    }

    /// Calls `f` for every leaf, depth first, left to right.
    pub fn visit_leaves(&self, f: &mut impl FnMut(&Condition)) {
        match self {
            Condition::All(items) | Condition::Any(items) => items.iter().for_each(|c| c.visit_leaves(f)),
            Condition::Not(inner) => inner.visit_leaves(f),
            leaf => f(leaf),
        }
    }

    /// Parses a condition, collecting every problem with its path (`prefix` is the path of `value`).
    pub fn parse(value: &serde_json::Value, prefix: &str) -> Result<Condition, Vec<FieldError>> {
        let mut errors = Vec::new();
        let parsed = parse_node(value, prefix, 0, &mut errors);
        match parsed {
            Some(c) if errors.is_empty() => Ok(c),
            _ => {
                if errors.is_empty() {
                    errors.push(FieldError::new(prefix, "is not a valid condition"));
                }
                Err(errors)
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Condition::All(items) => json!({ "all": items.iter().map(Condition::to_json).collect::<Vec<_>>() }),
            Condition::Any(items) => json!({ "any": items.iter().map(Condition::to_json).collect::<Vec<_>>() }),
            Condition::Not(inner) => json!({ "not": inner.to_json() }),
            Condition::Compare { property, op, value } => {
                json!({ "property": property, "op": op.as_str(), "value": literal(value) })
            }
            Condition::State { property, equal, label } => {
                json!({ "property": property, "op": if *equal { "==" } else { "!=" }, "value": label })
            }
            Condition::Range { property, outside, min, max } => json!({
                "property": property, "op": if *outside { "outside" } else { "between" }, "min": num(*min), "max": num(*max)
            }),
            Condition::RateOfChange { property, window_seconds, compare, value, per } => json!({
                "property": property, "op": "rate_of_change", "window_seconds": window_seconds,
                "compare": compare.as_str(), "value": num(*value), "per": per.as_str()
            }),
            Condition::Stale { property, seconds } => match property {
                Some(p) => json!({ "property": p, "op": "stale", "seconds": seconds }),
                None => json!({ "op": "stale", "seconds": seconds }),
            },
            Condition::Demand { property, interval_minutes, when, compare, value } => json!({
                "property": property, "op": "demand", "interval_minutes": interval_minutes, "when": when.as_str(),
                "compare": compare.as_str(), "value": num(*value)
            }),
            Condition::Idle => json!({ "op": "idle" }),
            Condition::SpecificEnergy { period, above_percent, expected } => match expected {
                ExpectedPerUnit::KwhPerUnit(k) => json!({
                    "op": "specific_energy", "period": period.as_str(), "above_percent": num(*above_percent),
                    "kwh_per_unit": num(*k)
                }),
                ExpectedPerUnit::Baseline(id) => json!({
                    "op": "specific_energy", "period": period.as_str(), "above_percent": num(*above_percent),
                    "baseline_id": id
                }),
            },
        }
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Condition::parse(&value, "").map_err(|errors| {
            let text = errors
                .iter()
                .map(|e| if e.field.is_empty() { e.message.clone() } else { format!("{}: {}", e.field, e.message) })
                .collect::<Vec<_>>()
                .join("; ");
            serde::de::Error::custom(text)
        })
    }
}

/// A number as JSON: integral values without a fraction (`80`, not `80.0`), as people write them.
fn num(f: f64) -> serde_json::Value {
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 { json!(f as i64) } else { json!(f) }
}

fn literal(v: &Value) -> serde_json::Value {
    match v {
        Value::Float(f) => num(*f),
        Value::Bool(b) => json!(b),
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") }
}

fn parse_node(value: &serde_json::Value, path: &str, depth: usize, errors: &mut Vec<FieldError>) -> Option<Condition> {
    if depth > MAX_CONDITION_DEPTH {
        errors.push(FieldError::new(path, format!("nesting deeper than {MAX_CONDITION_DEPTH} levels")));
        return None;
    }
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(path, "must be an object (a leaf or all/any/not)"));
        return None;
    };
    for combinator in ["all", "any"] {
        if let Some(items) = object.get(combinator) {
            let here = join(path, combinator);
            only_keys(object, &[combinator], path, errors);
            let Some(items) = items.as_array() else {
                errors.push(FieldError::new(&here, "must be an array of conditions"));
                return None;
            };
            if items.is_empty() {
                errors.push(FieldError::new(&here, "must contain at least one condition"));
                return None;
            }
            let mut parsed = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(c) = parse_node(item, &format!("{here}[{i}]"), depth + 1, errors) {
                    parsed.push(c);
                }
            }
            if parsed.len() != items.len() {
                return None;
            }
            return Some(if combinator == "all" { Condition::All(parsed) } else { Condition::Any(parsed) });
        }
    }
    if let Some(inner) = object.get("not") {
        only_keys(object, &["not"], path, errors);
        return parse_node(inner, &join(path, "not"), depth + 1, errors).map(|c| Condition::Not(Box::new(c)));
    }
    parse_leaf(object, path, errors)
}

fn only_keys(object: &Map<String, serde_json::Value>, allowed: &[&str], path: &str, errors: &mut Vec<FieldError>) {
    for key in object.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(FieldError::new(join(path, key), "unknown field"));
        }
    }
}

fn property_field(
    object: &Map<String, serde_json::Value>,
    path: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<Option<PropertyName>> {
    let here = join(path, "property");
    match object.get("property") {
        None | Some(serde_json::Value::Null) if !required => Some(None),
        None | Some(serde_json::Value::Null) => {
            errors.push(FieldError::new(here, "is required"));
            None
        }
        Some(serde_json::Value::String(s)) => match PropertyName::parse(s.as_str()) {
            Ok(p) => Some(Some(p)),
            Err(e) => {
                errors.push(FieldError::new(here, e.to_string()));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(here, "must be a string"));
            None
        }
    }
}

fn number_field(
    object: &Map<String, serde_json::Value>,
    key: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<f64> {
    let here = join(path, key);
    match object.get(key) {
        None => {
            errors.push(FieldError::new(here, "is required"));
            None
        }
        Some(v) => match v.as_f64().filter(|f| f.is_finite()) {
            Some(f) => Some(f),
            None => {
                errors.push(FieldError::new(here, "must be a finite number"));
                None
            }
        },
    }
}

fn seconds_field(
    object: &Map<String, serde_json::Value>,
    key: &str,
    path: &str,
    max: u64,
    errors: &mut Vec<FieldError>,
) -> Option<u64> {
    let here = join(path, key);
    match object.get(key).map(|v| v.as_u64()) {
        None => {
            errors.push(FieldError::new(here, "is required"));
            None
        }
        Some(Some(s)) if (1..=max).contains(&s) => Some(s),
        Some(_) => {
            errors.push(FieldError::new(here, format!("must be an integer from 1 to {max}")));
            None
        }
    }
}

/// The demand interval when a `demand` leaf names none (the grid's usual 15 minutes).
pub const DEFAULT_DEMAND_MINUTES: u32 = 15;

fn compare_field(object: &Map<String, serde_json::Value>, path: &str, errors: &mut Vec<FieldError>) -> Option<CmpOp> {
    match object.get("compare").and_then(|c| c.as_str()).and_then(CmpOp::parse) {
        Some(c) => Some(c),
        None => {
            errors.push(FieldError::new(join(path, "compare"), "must be one of >, >=, <, <=, ==, !="));
            None
        }
    }
}

/// Longest state label a rule may name (the most ingestion can be configured to accept).
pub const MAX_STATE_LABEL_CHARS: usize = 255;
/// Longest `window_seconds` of a rate of change (1 day).
pub const MAX_RATE_WINDOW_SECONDS: u64 = 86_400;
/// Longest `seconds` of a stale condition (30 days).
pub const MAX_STALE_SECONDS: u64 = 30 * 86_400;

fn parse_leaf(object: &Map<String, serde_json::Value>, path: &str, errors: &mut Vec<FieldError>) -> Option<Condition> {
    let op_path = join(path, "op");
    let op = match object.get("op") {
        Some(serde_json::Value::String(op)) => op.as_str(),
        Some(_) => {
            errors.push(FieldError::new(op_path, "must be a string"));
            return None;
        }
        None => {
            errors.push(FieldError::new(op_path, "is required (or use a combinator: all, any, not)"));
            return None;
        }
    };
    let before = errors.len();
    let leaf = if let Some(cmp) = CmpOp::parse(op) {
        only_keys(object, &["property", "op", "value"], path, errors);
        let property = property_field(object, path, true, errors).flatten();
        let value_path = join(path, "value");
        if let Some(serde_json::Value::String(label)) = object.get("value") {
            let equal = match cmp {
                CmpOp::Eq => true,
                CmpOp::Ne => false,
                _ => {
                    errors.push(FieldError::new(
                        &value_path,
                        format!("a state label can only be compared with == or != (not {op})"),
                    ));
                    return None;
                }
            };
            if label.is_empty() || label.chars().count() > MAX_STATE_LABEL_CHARS {
                errors.push(FieldError::new(
                    &value_path,
                    format!("a state label has 1 to {MAX_STATE_LABEL_CHARS} characters"),
                ));
                return None;
            }
            if errors.len() > before {
                return None;
            }
            return property.map(|property| Condition::State { property, equal, label: label.clone() });
        }
        let value = match object.get("value") {
            Some(serde_json::Value::Bool(b)) => {
                if !matches!(cmp, CmpOp::Eq | CmpOp::Ne) {
                    errors.push(FieldError::new(
                        &value_path,
                        format!("a boolean can only be compared with == or != (not {op})"),
                    ));
                }
                Some(Value::Bool(*b))
            }
            Some(v) => match v.as_f64().filter(|f| f.is_finite()) {
                Some(f) => Some(Value::Float(f)),
                None => {
                    errors.push(FieldError::new(&value_path, "must be a finite number, a boolean or a state label"));
                    None
                }
            },
            None => {
                errors.push(FieldError::new(&value_path, "is required"));
                None
            }
        };
        match (property, value) {
            (Some(property), Some(value)) => Some(Condition::Compare { property, op: cmp, value }),
            _ => None,
        }
    } else {
        match op {
            "between" | "outside" => {
                only_keys(object, &["property", "op", "min", "max"], path, errors);
                let property = property_field(object, path, true, errors).flatten();
                let min = number_field(object, "min", path, errors);
                let max = number_field(object, "max", path, errors);
                if let (Some(lo), Some(hi)) = (min, max)
                    && lo > hi
                {
                    errors.push(FieldError::new(join(path, "max"), "must be greater than or equal to min"));
                }
                match (property, min, max) {
                    (Some(property), Some(min), Some(max)) => {
                        Some(Condition::Range { property, outside: op == "outside", min, max })
                    }
                    _ => None,
                }
            }
            "rate_of_change" => {
                only_keys(object, &["property", "op", "window_seconds", "compare", "value", "per"], path, errors);
                let property = property_field(object, path, true, errors).flatten();
                let window = seconds_field(object, "window_seconds", path, MAX_RATE_WINDOW_SECONDS, errors);
                let compare = compare_field(object, path, errors);
                let value = number_field(object, "value", path, errors);
                let per = match object.get("per") {
                    None | Some(serde_json::Value::Null) => Some(RatePer::Second),
                    Some(p) => match p.as_str() {
                        Some("second") => Some(RatePer::Second),
                        Some("minute") => Some(RatePer::Minute),
                        Some("hour") => Some(RatePer::Hour),
                        _ => {
                            errors.push(FieldError::new(join(path, "per"), "must be second, minute or hour"));
                            None
                        }
                    },
                };
                match (property, window, compare, value, per) {
                    (Some(property), Some(window_seconds), Some(compare), Some(value), Some(per)) => {
                        Some(Condition::RateOfChange { property, window_seconds, compare, value, per })
                    }
                    _ => None,
                }
            }
            "stale" => {
                only_keys(object, &["property", "op", "seconds"], path, errors);
                let property = property_field(object, path, false, errors);
                let seconds = seconds_field(object, "seconds", path, MAX_STALE_SECONDS, errors);
                match (property, seconds) {
                    (Some(property), Some(seconds)) => Some(Condition::Stale { property, seconds }),
                    _ => None,
                }
            }
            "demand" => {
                only_keys(object, &["property", "op", "interval_minutes", "when", "compare", "value"], path, errors);
                let property = property_field(object, path, true, errors).flatten();
                let interval_minutes = match object.get("interval_minutes") {
                    None | Some(serde_json::Value::Null) => Some(DEFAULT_DEMAND_MINUTES),
                    Some(v) => match v.as_u64() {
                        Some(m @ (15 | 30 | 45 | 60)) => Some(m as u32),
                        _ => {
                            errors.push(FieldError::new(join(path, "interval_minutes"), "must be 15, 30, 45 or 60"));
                            None
                        }
                    },
                };
                let when = match object.get("when") {
                    None | Some(serde_json::Value::Null) => Some(DemandWhen::Completed),
                    Some(w) => match w.as_str() {
                        Some("completed") => Some(DemandWhen::Completed),
                        Some("projected") => Some(DemandWhen::Projected),
                        _ => {
                            errors.push(FieldError::new(join(path, "when"), "must be completed or projected"));
                            None
                        }
                    },
                };
                let compare = compare_field(object, path, errors);
                let value = number_field(object, "value", path, errors);
                match (property, interval_minutes, when, compare, value) {
                    (Some(property), Some(interval_minutes), Some(when), Some(compare), Some(value)) => {
                        Some(Condition::Demand { property, interval_minutes, when, compare, value })
                    }
                    _ => None,
                }
            }
            "idle" => {
                only_keys(object, &["op"], path, errors);
                Some(Condition::Idle)
            }
            "specific_energy" => parse_specific_energy(object, path, errors),
            _ => {
                errors.push(FieldError::new(
                    op_path,
                    "must be one of >, >=, <, <=, ==, !=, between, outside, rate_of_change, stale, demand, idle, specific_energy",
                ));
                None
            }
        }
    };
    if errors.len() > before { None } else { leaf }
}

/// Largest `above_percent` of a `specific_energy` leaf.
pub const MAX_ABOVE_PERCENT: f64 = 1000.0;
/// Longest `baseline_id` (ids are generated; this only bounds what is stored).
pub const MAX_BASELINE_ID_CHARS: usize = 100;

fn parse_specific_energy(
    object: &Map<String, serde_json::Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Condition> {
    only_keys(object, &["op", "period", "above_percent", "kwh_per_unit", "baseline_id"], path, errors);
    let period = match object.get("period") {
        None | Some(serde_json::Value::Null) => Some(SpecificPeriod::Day),
        Some(p) => match p.as_str() {
            Some("day") => Some(SpecificPeriod::Day),
            Some("shift") => Some(SpecificPeriod::Shift),
            _ => {
                errors.push(FieldError::new(join(path, "period"), "must be day or shift"));
                None
            }
        },
    };
    let above_percent = number_field(object, "above_percent", path, errors).and_then(|p| {
        if (0.0..=MAX_ABOVE_PERCENT).contains(&p) {
            Some(p)
        } else {
            errors.push(FieldError::new(join(path, "above_percent"), format!("must be from 0 to {MAX_ABOVE_PERCENT}")));
            None
        }
    });
    let fixed = object.get("kwh_per_unit").filter(|v| !v.is_null());
    let baseline = object.get("baseline_id").filter(|v| !v.is_null());
    let expected = match (fixed, baseline) {
        (Some(_), Some(_)) => {
            errors
                .push(FieldError::new(join(path, "baseline_id"), "give either kwh_per_unit or baseline_id, not both"));
            None
        }
        (None, None) => {
            errors.push(FieldError::new(join(path, "kwh_per_unit"), "is required (or baseline_id)"));
            None
        }
        (Some(v), None) => match v.as_f64().filter(|f| f.is_finite() && *f > 0.0) {
            Some(k) => Some(ExpectedPerUnit::KwhPerUnit(k)),
            None => {
                errors.push(FieldError::new(join(path, "kwh_per_unit"), "must be a finite number above 0"));
                None
            }
        },
        (None, Some(v)) => match v.as_str() {
            Some(id) if !id.is_empty() && id.chars().count() <= MAX_BASELINE_ID_CHARS => {
                Some(ExpectedPerUnit::Baseline(id.to_string()))
            }
            _ => {
                errors.push(FieldError::new(
                    join(path, "baseline_id"),
                    format!("must be a baseline id (1 to {MAX_BASELINE_ID_CHARS} characters)"),
                ));
                None
            }
        },
    };
    // A baseline is a regression of *daily* energy: its intercept is per day, so it says
    // nothing about a shift.
    if period == Some(SpecificPeriod::Shift) && matches!(expected, Some(ExpectedPerUnit::Baseline(_))) {
        errors.push(FieldError::new(
            join(path, "period"),
            "must be day with baseline_id (baselines are fitted on daily energy); use kwh_per_unit for shifts",
        ));
        return None;
    }
    match (period, above_percent, expected) {
        (Some(period), Some(above_percent), Some(expected)) => {
            Some(Condition::SpecificEnergy { period, above_percent, expected })
        }
        _ => None,
    }
}

// ---- OpenAPI schemas of the hand-parsed shapes (scope, condition, telemetry values) ----
//
// `Scope` and `Condition` have their own deserializers, so their schemas are written here
// to match them (and `Condition::to_json`) exactly.

/// A closed object: exactly these properties, `required` of them mandatory.
fn closed_object(properties: Vec<(&str, RefOr<Schema>)>, required: &[&str]) -> ObjectBuilder {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for (name, schema) in properties {
        object = object.property(name, schema);
    }
    for name in required {
        object = object.required(*name);
    }
    object
}

fn string_enum(values: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())).into()
}

fn integer(min: u64, max: u64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
        .into()
}

fn number() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Number).format(Some(SchemaFormat::KnownFormat(KnownFormat::Double))).into()
}

fn property_name() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A property name as the device sends it (e.g. `temp_c`)."))
        .into()
}

const COMPARE_OPS: [&str; 6] = [">", ">=", "<", "<=", "==", "!="];

/// A telemetry value (`number | boolean`), for `#[schema(schema_with = ...)]`.
pub fn value_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Number, Type::Boolean]))
        .description(Some("A telemetry value: a finite number or a boolean."))
        .into()
}

/// A telemetry value or `null`, for `#[schema(schema_with = ...)]`.
pub fn nullable_value_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Number, Type::Boolean, Type::Null]))
        .description(Some("A telemetry value (a finite number or a boolean), or null."))
        .into()
}

impl PartialSchema for Scope {
    fn schema() -> RefOr<Schema> {
        let devices = closed_object(
            vec![(
                "devices",
                ArrayBuilder::new()
                    .items(ObjectBuilder::new().schema_type(Type::String))
                    .min_items(Some(1))
                    .description(Some("Device ids (at most 10 000)."))
                    .into(),
            )],
            &["devices"],
        )
        .title(Some("devices"));
        let device_type = closed_object(
            vec![("device_type", ObjectBuilder::new().schema_type(Type::String).into())],
            &["device_type"],
        )
        .title(Some("device_type"));
        let all = closed_object(
            vec![("all", ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([true])).into())],
            &["all"],
        )
        .title(Some("all"));
        OneOfBuilder::new()
            .description(Some(
                "Which devices a rule applies to: `{\"devices\": [...]}`, `{\"device_type\": \"...\"}` or `{\"all\": true}`.",
            ))
            .item(devices)
            .item(device_type)
            .item(all)
            .into()
    }
}

impl ToSchema for Scope {}

/// The named parts of the condition tree: (schema name, schema).
fn condition_parts() -> Vec<(&'static str, RefOr<Schema>)> {
    let condition = || RefOr::Ref(Ref::from_schema_name("Condition"));
    let list = |name: &str, what: &str| -> RefOr<Schema> {
        closed_object(vec![(name, ArrayBuilder::new().items(condition()).min_items(Some(1)).into())], &[name])
            .description(Some(what))
            .into()
    };
    vec![
        (
            "CompareCondition",
            closed_object(
                vec![
                    ("property", property_name()),
                    ("op", string_enum(&COMPARE_OPS)),
                    (
                        "value",
                        ObjectBuilder::new()
                            .schema_type(SchemaType::Array(vec![Type::Number, Type::Boolean, Type::String]))
                            .description(Some(
                                "A number; a boolean or a state label (a string, for state properties) only with `==` / `!=`.",
                            ))
                            .into(),
                    ),
                ],
                &["property", "op", "value"],
            )
            .description(Some("The latest value of `property` compared with `value`."))
            .into(),
        ),
        (
            "RangeCondition",
            closed_object(
                vec![
                    ("property", property_name()),
                    ("op", string_enum(&["between", "outside"])),
                    ("min", number()),
                    ("max", number()),
                ],
                &["property", "op", "min", "max"],
            )
            .description(Some("`between`: min ≤ value ≤ max; `outside`: value < min or value > max (min ≤ max)."))
            .into(),
        ),
        (
            "RateOfChangeCondition",
            closed_object(
                vec![
                    ("property", property_name()),
                    ("op", string_enum(&["rate_of_change"])),
                    ("window_seconds", integer(1, MAX_RATE_WINDOW_SECONDS)),
                    ("compare", string_enum(&COMPARE_OPS)),
                    ("value", number()),
                    (
                        "per",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(["second", "minute", "hour"]))
                            .description(Some("Default `second`."))
                            .into(),
                    ),
                ],
                &["property", "op", "window_seconds", "compare", "value"],
            )
            .description(Some(
                "(newest − oldest sample within the last `window_seconds`) / elapsed time, in units per `per`, \
                 compared with `compare` / `value`. Responses always carry `per`.",
            ))
            .into(),
        ),
        (
            "StaleCondition",
            closed_object(
                vec![
                    (
                        "property",
                        ObjectBuilder::new()
                            .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
                            .description(Some("Absent or null: no message at all from the device."))
                            .into(),
                    ),
                    ("op", string_enum(&["stale"])),
                    ("seconds", integer(1, MAX_STALE_SECONDS)),
                ],
                &["op", "seconds"],
            )
            .description(Some("No data (of `property`, or of the device at all) for at least `seconds`."))
            .into(),
        ),
        (
            "DemandCondition",
            closed_object(
                vec![
                    ("property", property_name()),
                    ("op", string_enum(&["demand"])),
                    (
                        "interval_minutes",
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .enum_values(Some([15, 30, 45, 60]))
                            .description(Some("The demand interval, aligned to the factory's local clock. Default 15."))
                            .into(),
                    ),
                    (
                        "when",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(["completed", "projected"]))
                            .description(Some(
                                "`completed` (default): the last completed interval, as billed; `projected`: the \
                                 running interval's energy so far plus the latest power held to its end.",
                            ))
                            .into(),
                    ),
                    ("compare", string_enum(&COMPARE_OPS)),
                    ("value", number()),
                ],
                &["property", "op", "compare", "value"],
            )
            .description(Some(
                "The average power in kW of a power property (annotated quantity `power`, converted from its unit) \
                 over a demand interval, compared with `compare` / `value`. Responses always carry \
                 `interval_minutes` and `when`.",
            ))
            .into(),
        ),
        (
            "IdleCondition",
            closed_object(vec![("op", string_enum(&["idle"]))], &["op"])
                .description(Some(
                    "The device is idle by its energy configuration: its state property shows idle, off or setup, \
                     or its power is below its `idle_below_kw`.",
                ))
                .into(),
        ),
        (
            "SpecificEnergyCondition",
            closed_object(
                vec![
                    ("op", string_enum(&["specific_energy"])),
                    (
                        "period",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(["day", "shift"]))
                            .description(Some(
                                "The closed period judged: the factory's local day (default) or a shift of its \
                                 shift calendar. With `baseline_id` only `day`.",
                            ))
                            .into(),
                    ),
                    (
                        "above_percent",
                        ObjectBuilder::new()
                            .schema_type(Type::Number)
                            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
                            .minimum(Some(0.0))
                            .maximum(Some(MAX_ABOVE_PERCENT))
                            .description(Some("True when actual kWh per unit > expected × (1 + above_percent / 100)."))
                            .into(),
                    ),
                    (
                        "kwh_per_unit",
                        ObjectBuilder::new()
                            .schema_type(Type::Number)
                            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
                            .exclusive_minimum(Some(0.0))
                            .description(Some("The expected kWh per unit (exactly one of this and `baseline_id`)."))
                            .into(),
                    ),
                    (
                        "baseline_id",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .max_length(Some(MAX_BASELINE_ID_CHARS))
                            .description(Some(
                                "A device baseline (`/energy/baselines`): expected kWh per unit = its expected kWh \
                                 for the day / the units produced (exactly one of this and `kwh_per_unit`).",
                            ))
                            .into(),
                    ),
                ],
                &["op", "above_percent"],
            )
            .description(Some(
                "Energy per unit produced above its expected figure: for the latest closed local day or shift, \
                 actual kWh per unit = the device's kWh / the units of its production count property. Judged when \
                 the period closes (15 minutes after its end); no units produced = unknown. Responses always carry \
                 `period`.",
            ))
            .into(),
        ),
        ("AllCondition", list("all", "True when every condition is true.")),
        ("AnyCondition", list("any", "True when at least one condition is true.")),
        ("NotCondition", closed_object(vec![("not", condition())], &["not"]).description(Some("The negation.")).into()),
    ]
}

impl PartialSchema for Condition {
    fn schema() -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new().description(Some(
            "A condition: a leaf (compare, range, rate of change, stale, demand, idle, specific energy) or a combinator (`all`, `any`, `not`); \
             non-empty lists, nesting depth ≤ 16, ≤ 256 leaves.",
        ));
        for (name, _) in condition_parts() {
            one_of = one_of.item(Ref::from_schema_name(name));
        }
        one_of.into()
    }
}

impl ToSchema for Condition {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.extend(condition_parts().into_iter().map(|(name, schema)| (name.to_string(), schema)));
    }
}
