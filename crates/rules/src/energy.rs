//! Rules on derived energy quantities (ADR 0016): the port through which the rules learn
//! the devices' energy configuration, and the demand accumulator the evaluator keeps per
//! (device, power property, interval); and the port through which `specific_energy`
//! leaves get a closed period's kWh, units and expected energy.
//!
//! The energy configuration (which property is a power property and in which unit, the
//! longest bridged gap, how a device's idle time is known) belongs to ingest (property
//! semantics) and to the energy component (device energy config), whose tables the rules
//! never read: the server wires them in behind [`EnergyConfig`].

use async_trait::async_trait;
use chrono::{DateTime, Timelike};
use chrono_tz::Tz;
use factoryops_db::DbError;
use factoryops_types::{DeviceId, FactoryId, PropertyName};

use crate::model::SpecificPeriod;

/// One device's power property: readings times `kw_per_unit` are kW (W → 0.001).
#[derive(Debug, Clone, PartialEq)]
pub struct PowerSource {
    pub device_id: DeviceId,
    pub property: PropertyName,
    pub kw_per_unit: f64,
    /// Two readings further apart than this are a gap: no energy between them (the
    /// device's `max_gap_minutes`, as in the energy computations).
    pub max_gap_ms: i64,
}

/// How one device's idle time is known (the energy component's device config).
#[derive(Debug, Clone, PartialEq)]
pub enum IdleDefinition {
    /// Idle while this state property shows one of these codes (idle, off, setup).
    State { device_id: DeviceId, property: PropertyName, codes: Vec<u32> },
    /// Idle while this power property (times `kw_per_unit`) is below `below_kw`.
    BelowKw { device_id: DeviceId, property: PropertyName, kw_per_unit: f64, below_kw: f64 },
}

impl IdleDefinition {
    pub fn device_id(&self) -> &DeviceId {
        match self {
            IdleDefinition::State { device_id, .. } | IdleDefinition::BelowKw { device_id, .. } => device_id,
        }
    }

    pub fn property(&self) -> &PropertyName {
        match self {
            IdleDefinition::State { property, .. } | IdleDefinition::BelowKw { property, .. } => property,
        }
    }
}

/// A factory's energy configuration as the rules need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyFacts {
    pub power: Vec<PowerSource>,
    pub idle: Vec<IdleDefinition>,
}

#[async_trait]
pub trait EnergyConfig: Send + Sync {
    /// Every power property of the factory's devices and every device's idle definition.
    async fn facts(&self, factory: &FactoryId) -> Result<EnergyFacts, DbError>;
}

/// Which closed periods a `specific_energy` leaf judges, and against what: the leaves of
/// one factory with the same key share one set of figures per closed period.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpecificKey {
    pub period: SpecificPeriod,
    /// The EnPI baseline whose expected energy the leaf compares with; `None` for a fixed
    /// `kwh_per_unit` (then only kWh and units are needed).
    pub baseline_id: Option<String>,
}

/// One closed period `[start_ms, end_ms)` (a local day or a shift occurrence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The shift's name for shifts.
    pub label: Option<String>,
}

/// One device's figures for a closed period, as the energy component computes them.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecificFigures {
    pub device_id: DeviceId,
    /// The device's energy in the period.
    pub kwh: f64,
    /// Units counted by its production count property; `None` without one.
    pub units: Option<f64>,
    /// The baseline's expected kWh for the period (`None` without a baseline, or when the
    /// baseline cannot tell: no energy data or a driver without data that day).
    pub expected_kwh: Option<f64>,
}

/// What a baseline is fitted for (the leaf judges one device's kWh per unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaselineTarget {
    Device(DeviceId),
    /// A group or the whole factory (`"group"` / `"factory"`).
    Other(String),
}

/// The energy component's figures for `specific_energy` leaves (ADR 0016): closed
/// periods, kWh, production units and baselines' expected energy. The server implements
/// it over the energy service; the rules never read its tables.
#[async_trait]
pub trait SpecificEnergy: Send + Sync {
    /// The complete periods of `period` that end in `(after_ms, until_ms]`, in order
    /// (none for shifts when the factory has no shift calendar).
    async fn periods(
        &self,
        factory: &FactoryId,
        period: SpecificPeriod,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<Period>, DbError>;

    /// The figures of `devices` (`None`: every device with a production count property)
    /// over a closed period; with `baseline_id`, only the baseline's device, with the
    /// baseline's expected kWh.
    async fn figures(
        &self,
        factory: &FactoryId,
        period: &Period,
        devices: Option<&[DeviceId]>,
        baseline_id: Option<&str>,
    ) -> Result<Vec<SpecificFigures>, DbError>;

    /// What a baseline of the factory is fitted for; `None` when there is no such baseline.
    async fn baseline_target(&self, factory: &FactoryId, baseline_id: &str) -> Result<Option<BaselineTarget>, DbError>;
}

/// A period is judged this long after it ends: a reading up to the default maximum gap
/// (15 minutes) after the end still counts into its last slot.
pub const PERIOD_SETTLE_MS: i64 = 15 * 60_000;

/// The figures of one closed period for one leaf key, judged at `at_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodFigures {
    pub key: SpecificKey,
    pub period: Period,
    /// When the period is judged: its end plus [`PERIOD_SETTLE_MS`].
    pub at_ms: i64,
    pub figures: Vec<SpecificFigures>,
}

/// The `specific_energy` verdict from a period's figures: `Some((actual kWh per unit,
/// expected kWh per unit))`, `None` (unknown) when nothing was produced or nothing is
/// expected. Expected per unit is the fixed figure, or the baseline's expected kWh for the
/// period divided by the same units.
pub fn kwh_per_unit(figures: &SpecificFigures, fixed: Option<f64>) -> Option<(f64, f64)> {
    let units = figures.units.filter(|u| *u > 0.0 && u.is_finite())?;
    let actual = figures.kwh / units;
    let expected = match fixed {
        Some(per_unit) => per_unit,
        None => figures.expected_kwh? / units,
    };
    (actual.is_finite() && expected.is_finite()).then_some((actual, expected))
}

const QUARTER_MS: i64 = 15 * 60_000;
const MS_PER_HOUR: f64 = 3_600_000.0;

/// Whether `t` (on the 15-minute grid) starts a demand interval: its local minutes since
/// midnight divide by the interval, exactly the test of crates/energy's `peak::intervals`
/// (so in Asia/Kolkata, +05:30, an hour interval starts at :30 UTC).
fn aligned(tz: Tz, minutes: u32, t: i64) -> bool {
    DateTime::from_timestamp_millis(t)
        .map(|u| u.with_timezone(&tz))
        .is_some_and(|local| (local.hour() * 60 + local.minute()).is_multiple_of(minutes) && local.second() == 0)
}

/// The demand interval `[start, end)` containing `t`.
pub fn interval_at(tz: Tz, minutes: u32, t: i64) -> (i64, i64) {
    let mut start = t.div_euclid(QUARTER_MS) * QUARTER_MS;
    // Every real offset is a multiple of 15 minutes, so a start is at most a few quarters
    // back (45-minute intervals restart at midnight); the bound only guards odd zones.
    for _ in 0..8 {
        if aligned(tz, minutes, start) {
            break;
        }
        start -= QUARTER_MS;
    }
    let mut end = start + QUARTER_MS;
    for _ in 0..8 {
        if aligned(tz, minutes, end) {
            break;
        }
        end += QUARTER_MS;
    }
    (start, end)
}

/// The running demand of one (device, power property, interval length): the energy of the
/// current interval so far (trapezoids between readings at most `max_gap_ms` apart, split
/// exactly at the interval boundary, as crates/energy's slots) and the interval before it.
#[derive(Debug, Clone, PartialEq)]
pub struct DemandAcc {
    minutes: u32,
    start: i64,
    end: i64,
    kwh: f64,
    /// The latest reading (ms, kW).
    last: (i64, f64),
    /// The interval just before the current one and its average kW (0 when it had no data).
    previous: Option<(i64, f64)>,
}

impl DemandAcc {
    /// Starts at the first reading (the interval it falls in has no energy before it).
    pub fn new(tz: Tz, minutes: u32, t: i64, kw: f64) -> Self {
        let (start, end) = interval_at(tz, minutes, t);
        Self { minutes, start, end, kwh: 0.0, last: (t, kw), previous: None }
    }

    fn avg_kw(kwh: f64, start: i64, end: i64) -> f64 {
        kwh * MS_PER_HOUR / (end - start) as f64
    }

    /// Adds a reading newer than the latest one (older or equal ones are ignored: live
    /// evaluation does not go back in time; a backtest sees the stored series).
    pub fn push(&mut self, tz: Tz, max_gap_ms: i64, t: i64, kw: f64) {
        let (t1, p1) = self.last;
        if t <= t1 {
            return;
        }
        self.last = (t, kw);
        if t - t1 > max_gap_ms {
            // A gap: no energy between the readings.
            if t >= self.end {
                let (start, end) = interval_at(tz, self.minutes, t);
                self.previous = if start == self.end {
                    Some((self.start, Self::avg_kw(self.kwh, self.start, self.end)))
                } else {
                    Some((interval_at(tz, self.minutes, start - 1).0, 0.0))
                };
                (self.start, self.end, self.kwh) = (start, end, 0.0);
            }
            return;
        }
        let at = |x: i64| p1 + (kw - p1) * (x - t1) as f64 / (t - t1) as f64;
        let mut a = t1;
        loop {
            let b = t.min(self.end);
            if b > a {
                self.kwh += (at(a) + at(b)) / 2.0 * (b - a) as f64 / MS_PER_HOUR;
            }
            if self.end > t {
                break;
            }
            // The reading at or after the end closes the interval.
            self.previous = Some((self.start, Self::avg_kw(self.kwh, self.start, self.end)));
            let (start, end) = interval_at(tz, self.minutes, self.end);
            (self.start, self.end, self.kwh) = (start, end, 0.0);
            a = b;
        }
    }

    /// When the current interval is complete without another reading: at its end, or,
    /// when the latest reading could still be bridged past it, once the gap is certain.
    fn closes_at(&self, max_gap_ms: i64) -> i64 {
        // A reading exactly `max_gap_ms` after the latest is still bridged (as in the
        // energy slots), so the gap is certain only a millisecond later.
        self.end.max(self.last.0.saturating_add(max_gap_ms).saturating_add(1))
    }

    /// The average kW of the latest interval complete at `now`, with its start.
    pub fn completed(&self, tz: Tz, max_gap_ms: i64, now: i64) -> Option<(i64, f64)> {
        if now < self.closes_at(max_gap_ms) {
            return self.previous;
        }
        let (containing, _) = interval_at(tz, self.minutes, now);
        if containing <= self.end {
            Some((self.start, Self::avg_kw(self.kwh, self.start, self.end)))
        } else {
            // Whole intervals without any reading have passed since: no energy in them.
            Some((interval_at(tz, self.minutes, containing - 1).0, 0.0))
        }
    }

    /// The running interval's projected average kW at `now`: its energy so far plus the
    /// latest reading held to its end. `None` when the latest reading is older than the
    /// longest bridged gap or the interval is over (nothing current to project from).
    pub fn projected(&self, max_gap_ms: i64, now: i64) -> Option<f64> {
        let (t, kw) = self.last;
        if now.saturating_sub(t) > max_gap_ms || now >= self.end {
            return None;
        }
        let kwh = self.kwh + kw * (self.end - t) as f64 / MS_PER_HOUR;
        Some(Self::avg_kw(kwh, self.start, self.end))
    }

    /// The next instant at which [`DemandAcc::completed`] can change without a reading.
    pub fn next_change(&self, tz: Tz, max_gap_ms: i64, now: i64) -> Option<i64> {
        let close = self.closes_at(max_gap_ms);
        if now < close {
            return Some(close);
        }
        let (containing, end) = interval_at(tz, self.minutes, now);
        // After the interval that follows the last one with data, every later one is 0 kW.
        (containing <= self.end).then_some(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    // 2026-03-02T00:00:00Z
    const T0: i64 = 1_772_409_600_000;

    fn utc() -> Tz {
        chrono_tz::UTC
    }

    #[test]
    fn intervals_align_to_local_quarter_hours() {
        assert_eq!(interval_at(utc(), 15, T0 + 7 * MIN), (T0, T0 + 15 * MIN));
        assert_eq!(interval_at(utc(), 60, T0 + 59 * MIN), (T0, T0 + 60 * MIN));
        // Kolkata is +05:30: its local hours start at :30 UTC, its quarters on UTC quarters.
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        assert_eq!(interval_at(kolkata, 60, T0 + 10 * MIN), (T0 - 30 * MIN, T0 + 30 * MIN));
        assert_eq!(interval_at(kolkata, 15, T0 + 10 * MIN), (T0, T0 + 15 * MIN));
        assert_eq!(interval_at(kolkata, 30, T0 + 10 * MIN), (T0, T0 + 30 * MIN));
        // Berlin (+01:00): whole-hour offsets keep UTC hours.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(interval_at(berlin, 60, T0 + 10 * MIN), (T0, T0 + 60 * MIN));
    }

    #[test]
    fn demand_of_an_interval_with_a_gap() {
        // 15-minute intervals, readings bridged up to 5 minutes.
        let gap = 5 * MIN;
        let mut acc = DemandAcc::new(utc(), 15, T0, 600.0);
        // 0–4 min ramp 600 → 1000 kW: (600 + 1000) / 2 × 4/60 h = 53.3333 kWh.
        acc.push(utc(), gap, T0 + 4 * MIN, 1000.0);
        // 4–10 min: 6 minutes apart, more than the gap: no energy.
        acc.push(utc(), gap, T0 + 10 * MIN, 1000.0);
        // 10–18 min at 1000 kW, split at 15: 1000 × 5/60 = 83.3333 kWh in the first interval.
        acc.push(utc(), gap, T0 + 14 * MIN, 1000.0);
        acc.push(utc(), gap, T0 + 18 * MIN, 1000.0);
        // (53.3333 + 83.3333) kWh / 0.25 h = 546.6667 kW.
        let (start, kw) = acc.completed(utc(), gap, T0 + 18 * MIN).unwrap();
        assert_eq!(start, T0);
        assert!((kw - 546.666_666_7).abs() < 1e-6, "{kw}");
        // The running interval [15, 30): 50 kWh so far + 1000 kW × 12 min = 250 kWh / 0.25 h.
        let projected = acc.projected(gap, T0 + 18 * MIN).unwrap();
        assert!((projected - 1000.0).abs() < 1e-9, "{projected}");
    }

    #[test]
    fn an_interval_closes_without_another_reading() {
        let gap = 15 * MIN;
        let mut acc = DemandAcc::new(utc(), 15, T0, 800.0);
        acc.push(utc(), gap, T0 + 10 * MIN, 800.0);
        // Before the end nothing is complete; at 15 min the reading at 10 could still be
        // bridged (up to 25 min inclusive): the interval closes right after.
        assert_eq!(acc.completed(utc(), gap, T0 + 14 * MIN), None);
        assert_eq!(acc.next_change(utc(), gap, T0 + 14 * MIN), Some(T0 + 25 * MIN + 1));
        assert_eq!(acc.completed(utc(), gap, T0 + 25 * MIN), None);
        // 800 kW × 10 min = 133.3333 kWh / 0.25 h = 533.3333 kW.
        let (start, kw) = acc.completed(utc(), gap, T0 + 25 * MIN + 1).unwrap();
        assert_eq!(start, T0);
        assert!((kw - 533.333_333_3).abs() < 1e-6, "{kw}");
        assert_eq!(acc.next_change(utc(), gap, T0 + 25 * MIN + 1), Some(T0 + 30 * MIN));
        // The interval after it had no reading at all: 0 kW.
        assert_eq!(acc.completed(utc(), gap, T0 + 30 * MIN), Some((T0 + 15 * MIN, 0.0)));
        assert_eq!(acc.next_change(utc(), gap, T0 + 30 * MIN), None);
        // No projection from a reading older than the gap.
        assert_eq!(acc.projected(gap, T0 + 26 * MIN), None);
    }

    #[test]
    fn a_reading_after_a_long_silence_starts_over() {
        let gap = 15 * MIN;
        let mut acc = DemandAcc::new(utc(), 15, T0, 900.0);
        acc.push(utc(), gap, T0 + 15 * MIN, 900.0);
        // [0, 15) at 900 kW complete at the reading on its end.
        assert_eq!(acc.completed(utc(), gap, T0 + 15 * MIN), Some((T0, 900.0)));
        acc.push(utc(), gap, T0 + 62 * MIN, 100.0);
        // [45, 60) had no data.
        assert_eq!(acc.completed(utc(), gap, T0 + 62 * MIN), Some((T0 + 45 * MIN, 0.0)));
    }
}
