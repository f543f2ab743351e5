//! Property semantics: what a property measures (its quantity) and in which unit, so
//! energy figures can be computed from it. Pure: validation, unit conversion and
//! name-based suggestions (offered to people, never applied on their own).

use serde::{Deserialize, Serialize};

/// What a property measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    Power,
    /// A cumulative energy meter reading; may reset, or roll over at `rollover`.
    EnergyCounter,
    /// A cumulative count of meter pulses, each worth `wh_per_pulse` Wh.
    PulseCounter,
    Voltage,
    Current,
    PowerFactor,
    Flow,
    Temperature,
    /// Produced units, cumulative or per message (`counting`).
    ProductionCount,
    /// A machine state label (`running`, `idle`, …): only for properties with string values.
    State,
}

impl Quantity {
    pub const ALL: [Quantity; 10] = [
        Quantity::Power,
        Quantity::EnergyCounter,
        Quantity::PulseCounter,
        Quantity::Voltage,
        Quantity::Current,
        Quantity::PowerFactor,
        Quantity::Flow,
        Quantity::Temperature,
        Quantity::ProductionCount,
        Quantity::State,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Quantity::Power => "power",
            Quantity::EnergyCounter => "energy_counter",
            Quantity::PulseCounter => "pulse_counter",
            Quantity::Voltage => "voltage",
            Quantity::Current => "current",
            Quantity::PowerFactor => "power_factor",
            Quantity::Flow => "flow",
            Quantity::Temperature => "temperature",
            Quantity::ProductionCount => "production_count",
            Quantity::State => "state",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Quantity::ALL.into_iter().find(|q| q.as_str() == text)
    }

    /// The units this quantity accepts, or `None` when any unit text is allowed
    /// (production counts: `pcs`, `bottles`, …). An empty list means "no unit".
    pub fn units(self) -> Option<&'static [&'static str]> {
        Some(match self {
            Quantity::Power => &["W", "kW", "MW"],
            Quantity::EnergyCounter => &["Wh", "kWh", "MWh"],
            Quantity::PulseCounter => &["pulses"],
            Quantity::Voltage => &["V", "kV"],
            Quantity::Current => &["A", "kA"],
            Quantity::Flow => &["m3/h", "l/min", "l/s"],
            Quantity::Temperature => &["°C", "°F", "K"],
            Quantity::PowerFactor | Quantity::State => &[],
            Quantity::ProductionCount => return None,
        })
    }

    /// Whether a unit must be given (the numbers mean nothing without one).
    fn unit_required(self) -> bool {
        matches!(
            self,
            Quantity::Power
                | Quantity::EnergyCounter
                | Quantity::Voltage
                | Quantity::Current
                | Quantity::Flow
                | Quantity::Temperature
        )
    }

    /// Cumulative meters, which may roll over at a fixed width.
    pub fn is_counter(self) -> bool {
        matches!(self, Quantity::EnergyCounter | Quantity::PulseCounter)
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a production count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    /// A running total (differences between readings are the production).
    #[default]
    Cumulative,
    /// Each message carries the units produced since the previous one.
    PerMessage,
}

impl Counting {
    pub fn as_str(self) -> &'static str {
        match self {
            Counting::Cumulative => "cumulative",
            Counting::PerMessage => "per_message",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "cumulative" => Some(Counting::Cumulative),
            "per_message" => Some(Counting::PerMessage),
            _ => None,
        }
    }
}

/// A property's semantics: its quantity, unit and the quantity's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Semantics {
    pub quantity: Quantity,
    pub unit: Option<String>,
    /// Energy and pulse counters: the value at which the meter wraps to 0
    /// (e.g. 4294967296 for a 32-bit register).
    pub rollover: Option<f64>,
    /// Pulse counters: the energy of one pulse in Wh.
    pub wh_per_pulse: Option<f64>,
    /// Production counts; `None` there means cumulative.
    pub counting: Option<Counting>,
}

/// One invalid field of a [`Semantics`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SemanticsError {
    /// The request field it came from: `unit`, `rollover`, `wh_per_pulse`, `counting`.
    pub field: &'static str,
    pub message: String,
}

impl Semantics {
    /// Just a quantity and a unit.
    pub fn new(quantity: Quantity, unit: Option<&str>) -> Self {
        Self { quantity, unit: unit.map(str::to_string), rollover: None, wh_per_pulse: None, counting: None }
    }

    /// Every problem, each naming its field; empty means valid.
    pub fn validate(&self) -> Result<(), Vec<SemanticsError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &'static str, message: String| errors.push(SemanticsError { field, message });
        let q = self.quantity;
        let unit = self.unit.as_deref().filter(|u| !u.is_empty());
        match (q.units(), unit) {
            (None, Some(u)) if u.chars().count() > MAX_UNIT_CHARS => {
                bad("unit", format!("at most {MAX_UNIT_CHARS} characters"));
            }
            (None, _) => {}
            (Some([]), Some(u)) => bad("unit", format!("{q} takes no unit, got `{u}`")),
            (Some(units), Some(u)) if !units.contains(&u) => {
                bad("unit", format!("`{u}` is not a unit of {q}; use one of {}", units.join(", ")));
            }
            (Some(units), None) if q.unit_required() => {
                bad("unit", format!("{q} needs a unit: one of {}", units.join(", ")));
            }
            _ => {}
        }
        match self.rollover {
            Some(_) if !q.is_counter() => {
                bad("rollover", format!("only energy_counter and pulse_counter roll over, not {q}"));
            }
            Some(r) if !(r.is_finite() && r > 0.0) => bad("rollover", "must be a number above 0".into()),
            _ => {}
        }
        match self.wh_per_pulse {
            None if q == Quantity::PulseCounter => bad("wh_per_pulse", "is required for a pulse_counter".into()),
            Some(_) if q != Quantity::PulseCounter => {
                bad("wh_per_pulse", format!("only a pulse_counter has Wh per pulse, not {q}"));
            }
            Some(w) if !(w.is_finite() && w > 0.0) => bad("wh_per_pulse", "must be a number above 0".into()),
            _ => {}
        }
        if self.counting.is_some() && q != Quantity::ProductionCount {
            bad("counting", format!("only a production_count has a counting mode, not {q}"));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// A production count's counting mode (cumulative unless said otherwise).
    pub fn counting(&self) -> Option<Counting> {
        (self.quantity == Quantity::ProductionCount).then(|| self.counting.unwrap_or_default())
    }

    /// A power reading in kW; `None` unless this is a power property with a power unit.
    pub fn kw(&self, value: f64) -> Option<f64> {
        if self.quantity != Quantity::Power {
            return None;
        }
        to_kw(value, self.unit.as_deref()?)
    }

    /// A meter reading in kWh: energy counters by their unit, pulse counters by
    /// `wh_per_pulse`; `None` for anything else.
    pub fn kwh(&self, value: f64) -> Option<f64> {
        match self.quantity {
            Quantity::EnergyCounter => to_kwh(value, self.unit.as_deref()?),
            Quantity::PulseCounter => self.wh_per_pulse.map(|wh| value * wh / 1000.0),
            _ => None,
        }
    }
}

/// Units of production counts are free text, bounded like any unit.
const MAX_UNIT_CHARS: usize = 64;

/// A power value in kW, or `None` for a unit that is not a power unit.
pub fn to_kw(value: f64, unit: &str) -> Option<f64> {
    match unit {
        "W" => Some(value / 1000.0),
        "kW" => Some(value),
        "MW" => Some(value * 1000.0),
        _ => None,
    }
}

/// An energy value in kWh, or `None` for a unit that is not an energy unit.
pub fn to_kwh(value: f64, unit: &str) -> Option<f64> {
    match unit {
        "Wh" => Some(value / 1000.0),
        "kWh" => Some(value),
        "MWh" => Some(value * 1000.0),
        _ => None,
    }
}

/// A quantity (and unit, when the name says it) suggested by a property's name, e.g.
/// `power_kw` → power in kW. Only a suggestion: a person confirms it.
pub fn suggest(name: &str) -> Option<(Quantity, Option<&'static str>)> {
    let lower = name.to_ascii_lowercase();
    // The last segment of a flattened name (`phase.l1.v` → `v`) carries the meaning.
    let leaf = lower.rsplit('.').next().unwrap_or(&lower);
    let words: Vec<&str> = leaf.split(['_', '-']).filter(|w| !w.is_empty()).collect();
    let has = |w: &str| words.contains(&w);
    let last = words.last().copied().unwrap_or("");

    // Energy before power: `energy_kwh`, `kwh_total`, `active_energy_wh`.
    for (unit_word, unit) in [("kwh", "kWh"), ("mwh", "MWh"), ("wh", "Wh")] {
        if has(unit_word) {
            return Some((Quantity::EnergyCounter, Some(unit)));
        }
    }
    if has("energy") {
        return Some((Quantity::EnergyCounter, None));
    }
    if has("pulses") || has("pulse") {
        return Some((Quantity::PulseCounter, Some("pulses")));
    }
    if has("pf") || (has("power") && has("factor")) || has("cosphi") || leaf == "cos_phi" {
        return Some((Quantity::PowerFactor, None));
    }
    for (unit_word, unit) in [("kw", "kW"), ("mw", "MW")] {
        if has(unit_word) {
            return Some((Quantity::Power, Some(unit)));
        }
    }
    if has("power") || (words.first() == Some(&"p") && words.len() > 1) {
        let unit = match last {
            "w" => Some("W"),
            _ => None,
        };
        return Some((Quantity::Power, unit));
    }
    if has("voltage") || last == "v" || last == "kv" {
        return Some((Quantity::Voltage, Some(if last == "kv" { "kV" } else { "V" })));
    }
    if has("current") || last == "a" || last == "amps" {
        return Some((Quantity::Current, Some("A")));
    }
    if has("temp") || has("temperature") {
        let unit = match last {
            "f" => "°F",
            "k" => "K",
            _ => "°C",
        };
        return Some((Quantity::Temperature, Some(unit)));
    }
    if has("flow") {
        let unit = match leaf {
            l if l.ends_with("m3h") || l.ends_with("m3_h") => Some("m3/h"),
            l if l.ends_with("lpm") || l.ends_with("l_min") => Some("l/min"),
            _ => None,
        };
        return Some((Quantity::Flow, unit));
    }
    if has("state") || has("status") || has("mode") {
        return Some((Quantity::State, None));
    }
    if has("count") || has("parts") || has("production") || has("pieces") || has("pcs") || has("produced") {
        return Some((Quantity::ProductionCount, Some("pcs")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &Semantics) -> Vec<&'static str> {
        s.validate().err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn quantities_serialise_in_snake_case() {
        for q in Quantity::ALL {
            let json = serde_json::to_value(q).unwrap_or_default();
            assert_eq!(json, serde_json::json!(q.as_str()));
            assert_eq!(Quantity::parse(q.as_str()), Some(q));
        }
        assert_eq!(Quantity::parse("Power"), None);
        assert_eq!(serde_json::to_value(Counting::PerMessage).unwrap_or_default(), "per_message");
    }

    #[test]
    fn units_must_belong_to_the_quantity() {
        assert!(Semantics::new(Quantity::Power, Some("kW")).validate().is_ok());
        assert!(Semantics::new(Quantity::Power, Some("MW")).validate().is_ok());
        assert_eq!(fields(&Semantics::new(Quantity::Power, Some("kWh"))), ["unit"]);
        assert_eq!(fields(&Semantics::new(Quantity::Power, None)), ["unit"]);
        assert_eq!(fields(&Semantics::new(Quantity::EnergyCounter, Some("kW"))), ["unit"]);
        assert!(Semantics::new(Quantity::EnergyCounter, Some("Wh")).validate().is_ok());
        assert!(Semantics::new(Quantity::Voltage, Some("kV")).validate().is_ok());
        assert!(Semantics::new(Quantity::Current, Some("A")).validate().is_ok());
        assert!(Semantics::new(Quantity::Flow, Some("l/min")).validate().is_ok());
        assert!(Semantics::new(Quantity::Temperature, Some("°C")).validate().is_ok());
        assert_eq!(fields(&Semantics::new(Quantity::Temperature, Some("C"))), ["unit"]);
        // Power factor and state take no unit; "" counts as none.
        assert!(Semantics::new(Quantity::PowerFactor, None).validate().is_ok());
        assert!(Semantics::new(Quantity::PowerFactor, Some("")).validate().is_ok());
        assert_eq!(fields(&Semantics::new(Quantity::PowerFactor, Some("%"))), ["unit"]);
        assert!(Semantics::new(Quantity::State, None).validate().is_ok());
        assert_eq!(fields(&Semantics::new(Quantity::State, Some("kW"))), ["unit"]);
        // Production counts take any unit text, or none.
        assert!(Semantics::new(Quantity::ProductionCount, Some("bottles")).validate().is_ok());
        assert!(Semantics::new(Quantity::ProductionCount, None).validate().is_ok());
        assert_eq!(fields(&Semantics::new(Quantity::ProductionCount, Some(&"x".repeat(65)))), ["unit"]);
    }

    #[test]
    fn rollover_only_on_counters_and_positive() {
        let mut s = Semantics::new(Quantity::EnergyCounter, Some("kWh"));
        s.rollover = Some(4_294_967_296.0);
        assert!(s.validate().is_ok());
        s.rollover = Some(0.0);
        assert_eq!(fields(&s), ["rollover"]);
        s.rollover = Some(f64::NAN);
        assert_eq!(fields(&s), ["rollover"]);
        let mut p = Semantics::new(Quantity::Power, Some("kW"));
        p.rollover = Some(65536.0);
        assert_eq!(fields(&p), ["rollover"]);
    }

    #[test]
    fn pulse_counters_need_wh_per_pulse() {
        let mut s = Semantics::new(Quantity::PulseCounter, Some("pulses"));
        assert_eq!(fields(&s), ["wh_per_pulse"]);
        s.wh_per_pulse = Some(-1.0);
        assert_eq!(fields(&s), ["wh_per_pulse"]);
        s.wh_per_pulse = Some(10.0);
        s.rollover = Some(65536.0);
        assert!(s.validate().is_ok());
        // 1234 pulses of 10 Wh = 12.34 kWh.
        assert_eq!(s.kwh(1234.0), Some(12.34));
        // The unit may be left out; another unit is wrong.
        s.unit = None;
        assert!(s.validate().is_ok());
        s.unit = Some("Wh".into());
        assert_eq!(fields(&s), ["unit"]);
        let mut e = Semantics::new(Quantity::EnergyCounter, Some("kWh"));
        e.wh_per_pulse = Some(1.0);
        assert_eq!(fields(&e), ["wh_per_pulse"]);
    }

    #[test]
    fn counting_only_for_production_counts_default_cumulative() {
        let mut s = Semantics::new(Quantity::ProductionCount, Some("pcs"));
        assert_eq!(s.counting(), Some(Counting::Cumulative));
        s.counting = Some(Counting::PerMessage);
        assert!(s.validate().is_ok());
        assert_eq!(s.counting(), Some(Counting::PerMessage));
        let mut p = Semantics::new(Quantity::Power, Some("W"));
        p.counting = Some(Counting::Cumulative);
        assert_eq!(fields(&p), ["counting"]);
        assert_eq!(p.counting(), None);
    }

    #[test]
    fn several_errors_are_reported_together() {
        let s = Semantics {
            quantity: Quantity::Voltage,
            unit: Some("W".into()),
            rollover: Some(10.0),
            wh_per_pulse: Some(1.0),
            counting: Some(Counting::PerMessage),
        };
        assert_eq!(fields(&s), ["unit", "rollover", "wh_per_pulse", "counting"]);
    }

    #[test]
    fn conversions() {
        assert_eq!(to_kw(1500.0, "W"), Some(1.5));
        assert_eq!(to_kw(1.5, "kW"), Some(1.5));
        assert_eq!(to_kw(0.25, "MW"), Some(250.0));
        assert_eq!(to_kw(1.0, "kWh"), None);
        assert_eq!(to_kwh(2500.0, "Wh"), Some(2.5));
        assert_eq!(to_kwh(2.5, "kWh"), Some(2.5));
        assert_eq!(to_kwh(0.002, "MWh"), Some(2.0));
        assert_eq!(to_kwh(1.0, "kW"), None);
        assert_eq!(Semantics::new(Quantity::Power, Some("W")).kw(800.0), Some(0.8));
        assert_eq!(Semantics::new(Quantity::Voltage, Some("V")).kw(230.0), None);
        assert_eq!(Semantics::new(Quantity::EnergyCounter, Some("MWh")).kwh(1.5), Some(1500.0));
        assert_eq!(Semantics::new(Quantity::Power, Some("kW")).kwh(1.5), None);
    }

    #[test]
    fn suggestions_from_common_names() {
        use Quantity::*;
        type Case<'a> = (&'a str, Option<(Quantity, Option<&'a str>)>);
        let cases: &[Case] = &[
            ("power_kw", Some((Power, Some("kW")))),
            ("active_power", Some((Power, None))),
            ("power_w", Some((Power, Some("W")))),
            ("p_kw", Some((Power, Some("kW")))),
            ("total_power_mw", Some((Power, Some("MW")))),
            ("energy_kwh", Some((EnergyCounter, Some("kWh")))),
            ("kwh_total", Some((EnergyCounter, Some("kWh")))),
            ("energy_wh", Some((EnergyCounter, Some("Wh")))),
            ("active_energy", Some((EnergyCounter, None))),
            ("meter.pulses", Some((PulseCounter, Some("pulses")))),
            ("voltage", Some((Voltage, Some("V")))),
            ("phase.l1.v", Some((Voltage, Some("V")))),
            ("l1_v", Some((Voltage, Some("V")))),
            ("current", Some((Current, Some("A")))),
            ("l2_a", Some((Current, Some("A")))),
            ("pf", Some((PowerFactor, None))),
            ("power_factor", Some((PowerFactor, None))),
            ("temp_c", Some((Temperature, Some("°C")))),
            ("temperature", Some((Temperature, Some("°C")))),
            ("oil_temp_f", Some((Temperature, Some("°F")))),
            ("flow_m3h", Some((Flow, Some("m3/h")))),
            ("state", Some((State, None))),
            ("machine_status", Some((State, None))),
            ("count", Some((ProductionCount, Some("pcs")))),
            ("parts", Some((ProductionCount, Some("pcs")))),
            ("production_total", Some((ProductionCount, Some("pcs")))),
            ("Power_KW", Some((Power, Some("kW")))),
            ("running", None),
            ("rpm", None),
            ("pressure_bar", None),
        ];
        for (name, expected) in cases {
            assert_eq!(suggest(name), *expected, "{name}");
        }
        // Every suggestion with a unit is itself valid, except pulse counters (which
        // also need Wh per pulse, which a name cannot tell).
        for (name, expected) in cases {
            if let Some((q, Some(u))) = expected
                && *q != PulseCounter
            {
                assert!(Semantics::new(*q, Some(u)).validate().is_ok(), "{name}");
            }
        }
    }
}
