//! Time-of-use tariffs, versioned with validity dates, and the bill over energy slots:
//! energy cost slot by slot, demand (capacity) charges as grids bill them, and fixed fees.
//!
//! Local time decides everything a tariff says (weekday, time of day, season, holiday,
//! month), in the factory's time zone. A slot is priced by the local time of its start;
//! slots are 15 minutes wide and period boundaries lie on the 15-minute grid, so a slot
//! never straddles two periods.
//!
//! The API shape (`PUT /energy/tariff`), extended with seasons, holidays and a detailed
//! demand charge:
//!
//! ```json
//! {"currency": "EUR", "valid_from": "2027-01-01",
//!  "periods": [
//!    {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "19:00", "price_per_kwh": 0.30,
//!     "season": {"from": "11-01", "to": "03-31"}},
//!    …every day type × every date × every quarter hour exactly once…],
//!  "holidays": ["2027-12-25"], "holiday_as": "sun",
//!  "demand_charge": {"per_kw": 12.0, "basis": "month", "method": "mean_of_highest", "count": 3,
//!    "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "19:00",
//!                 "months": [11, 12, 1, 2, 3]}]},
//!  "demand_interval_minutes": 15,
//!  "fixed_per_month": 50.0}
//! ```
//!
//! Build a [`TariffHistory`] from the stored versions (it validates them), then price
//! slots with [`cost_of`] (a bucket's cost) or [`bill`] (energy + demand + fixed fees).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Day, InvalidSetting, LocalMinute, Slot};

/// One version of a factory's tariff: the API shape of `PUT /energy/tariff`.
///
/// `demand_charge_per_kw` alone is the short form of a demand charge on the single highest
/// demand interval of each local month, counted at any time; `demand_charge` is the
/// detailed form (basis, method, windows). Giving both is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tariff {
    /// ISO 4217 code, three uppercase letters.
    pub currency: String,
    /// The first local date this version is in force; absent = since always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    /// The energy prices: for every day type and every date of the year each local
    /// 15-minute slot is covered by exactly one period.
    pub periods: Vec<Period>,
    /// Local dates priced (and demand-windowed) as the day type `holiday_as`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<NaiveDate>,
    /// The day type of a holiday; default `sun`. Only with `holidays`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holiday_as: Option<Day>,
    /// Short form of a demand charge: per kW of the month's single highest interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_charge_per_kw: Option<f64>,
    /// Detailed form of a demand charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_charge: Option<DemandChargeSpec>,
    /// The demand interval in minutes (15, 30, 45 or 60; default 15), aligned to the local
    /// clock. Only with a demand charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_interval_minutes: Option<u32>,
    /// A fixed fee per local month, prorated by the part of the month billed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_per_month: Option<f64>,
}

/// A price for some day types, a time range of the day and optionally a season.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    pub days: Vec<Day>,
    /// Inclusive start, local time.
    pub from: LocalMinute,
    /// Exclusive end, local time, after `from` (`24:00` ends the day; a period does not
    /// cross midnight: write 22:00–24:00 and 00:00–06:00).
    pub to: LocalMinute,
    pub price_per_kwh: f64,
    /// Absent = all year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season: Option<Season>,
}

/// Dates of the year, both ends inclusive; `from` after `to` wraps the year
/// (`11-01`..`03-31` is November to March).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Season {
    pub from: MonthDay,
    pub to: MonthDay,
}

impl Season {
    pub fn contains(&self, day: MonthDay) -> bool {
        if self.from <= self.to { self.from <= day && day <= self.to } else { day >= self.from || day <= self.to }
    }
}

/// A date of the year, `MM-DD` (`02-29` is allowed; in other years it never occurs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MonthDay {
    month: u8,
    day: u8,
}

impl MonthDay {
    pub fn new(month: u32, day: u32) -> Option<Self> {
        // 2024 is a leap year, so 02-29 exists.
        NaiveDate::from_ymd_opt(2024, month, day).map(|_| MonthDay { month: month as u8, day: day as u8 })
    }

    pub fn of(date: NaiveDate) -> Self {
        MonthDay { month: date.month() as u8, day: date.day() as u8 }
    }

    pub fn month(self) -> u32 {
        u32::from(self.month)
    }

    pub fn day(self) -> u32 {
        u32::from(self.day)
    }
}

impl FromStr for MonthDay {
    type Err = InvalidSetting;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidSetting::new("", format!("`{text}` is not a date of the year MM-DD"));
        let (m, d) = text.split_once('-').ok_or_else(bad)?;
        if m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let m: u32 = m.parse().map_err(|_| bad())?;
        let d: u32 = d.parse().map_err(|_| bad())?;
        MonthDay::new(m, d).ok_or_else(bad)
    }
}

impl fmt::Display for MonthDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}-{:02}", self.month, self.day)
    }
}

impl Serialize for MonthDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MonthDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e: InvalidSetting| serde::de::Error::custom(e.message))
    }
}

/// The detailed demand (capacity) charge: `per_kw` times the basis kW of each billing
/// period (local day or month), the basis being the single highest demand interval or the
/// mean of the `count` highest, counting only intervals that start inside a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandChargeSpec {
    pub per_kw: f64,
    #[serde(default)]
    pub basis: DemandBasis,
    #[serde(default)]
    pub method: DemandMethod,
    /// How many highest intervals `mean_of_highest` averages (default 3). Only with
    /// `mean_of_highest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Absent = every interval counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<DemandWindow>>,
}

impl DemandChargeSpec {
    /// How many intervals make the basis: 1 for `highest`.
    pub fn effective_count(&self) -> usize {
        match self.method {
            DemandMethod::Highest => 1,
            DemandMethod::MeanOfHighest => self.count.unwrap_or(DEFAULT_MEAN_COUNT) as usize,
        }
    }
}

const DEFAULT_MEAN_COUNT: u32 = 3;
const MAX_MEAN_COUNT: u32 = 100;
/// The default demand interval, minutes.
pub const DEFAULT_DEMAND_INTERVAL_MINUTES: u32 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemandBasis {
    /// One charge per local calendar month.
    #[default]
    Month,
    /// One charge per local day.
    Day,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemandMethod {
    #[default]
    Highest,
    MeanOfHighest,
}

/// When demand intervals count: an interval counts when its local start lies on one of
/// `days`, in `[from, to)` and (if given) in one of `months` (1 = January).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandWindow {
    pub days: Vec<Day>,
    pub from: LocalMinute,
    pub to: LocalMinute,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub months: Option<Vec<u32>>,
}

impl DemandWindow {
    fn contains(&self, day: Day, minute: u16, month: u32) -> bool {
        self.days.contains(&day)
            && self.from.minutes() <= minute
            && minute < self.to.minutes()
            && self.months.as_ref().is_none_or(|months| months.contains(&month))
    }
}

impl Tariff {
    /// Checks everything serde cannot: see the field docs. The error names the field by
    /// its JSON path (`periods[2].to`).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(InvalidSetting::new(
                "currency",
                "must be an ISO 4217 code of three uppercase letters, e.g. EUR",
            ));
        }
        if self.periods.is_empty() {
            return Err(InvalidSetting::new("periods", "at least one period is needed"));
        }
        for (i, period) in self.periods.iter().enumerate() {
            if period.days.is_empty() {
                return Err(InvalidSetting::new(format!("periods[{i}].days"), "name at least one day"));
            }
            if period.from >= period.to {
                return Err(InvalidSetting::new(
                    format!("periods[{i}].to"),
                    "must be after `from` (a period does not cross midnight: write 22:00–24:00 and 00:00–06:00)",
                ));
            }
            non_negative(period.price_per_kwh, &format!("periods[{i}].price_per_kwh"))?;
        }
        if self.holiday_as.is_some() && self.holidays.is_empty() {
            return Err(InvalidSetting::new("holiday_as", "only with `holidays`"));
        }
        if let Some(per_kw) = self.demand_charge_per_kw {
            non_negative(per_kw, "demand_charge_per_kw")?;
        }
        if let Some(spec) = &self.demand_charge {
            if self.demand_charge_per_kw.is_some() {
                return Err(InvalidSetting::new(
                    "demand_charge",
                    "give either `demand_charge_per_kw` (monthly single highest) or `demand_charge`, not both",
                ));
            }
            validate_demand_charge(spec)?;
        }
        if let Some(minutes) = self.demand_interval_minutes {
            if self.effective_demand_charge().is_none() {
                return Err(InvalidSetting::new("demand_interval_minutes", "only with a demand charge"));
            }
            if !matches!(minutes, 15 | 30 | 45 | 60) {
                return Err(InvalidSetting::new("demand_interval_minutes", "must be 15, 30, 45 or 60"));
            }
        }
        self.validate_coverage()
    }

    /// Every day type × every date of the year (when a period has a season) × every local
    /// 15-minute slot is covered by exactly one period; the first hole or overlap in time
    /// order is reported.
    fn validate_coverage(&self) -> Result<(), InvalidSetting> {
        let seasonal = self.periods.iter().any(|p| p.season.is_some());
        // Every date of a leap year, so 02-29 is checked too; without seasons one stands
        // for all.
        let dates: Vec<MonthDay> = if seasonal {
            NaiveDate::from_ymd_opt(2024, 1, 1)
                .map(|first| first.iter_days().take(366).map(MonthDay::of).collect())
                .unwrap_or_default()
        } else {
            MonthDay::new(1, 1).into_iter().collect()
        };
        const SLOTS: usize = 24 * 4;
        for day in Day::ALL {
            for &date in &dates {
                // Per slot of the day: how many periods cover it and the first two.
                let mut cover: Vec<(usize, usize, usize)> = vec![(0, 0, 0); SLOTS];
                for (i, period) in self.periods.iter().enumerate() {
                    if !period.days.contains(&day) || !period.season.is_none_or(|s| s.contains(date)) {
                        continue;
                    }
                    let from = usize::from(period.from.minutes() / 15);
                    let to = usize::from(period.to.minutes() / 15);
                    for slot in &mut cover[from..to] {
                        match slot.0 {
                            0 => slot.1 = i,
                            1 => slot.2 = i,
                            _ => {}
                        }
                        slot.0 += 1;
                    }
                }
                let on = if seasonal { format!(" on {date}") } else { String::new() };
                for (index, &(count, first, second)) in cover.iter().enumerate() {
                    let at = LocalMinute::from_minutes(index as u16 * 15).map(|m| m.to_string()).unwrap_or_default();
                    let day_name = day_name(day);
                    if count == 0 {
                        return Err(InvalidSetting::new(
                            "periods",
                            format!(
                                "{day_name} {at}{on} is covered by no period: every 15 minutes of every day need a price"
                            ),
                        ));
                    }
                    if count > 1 {
                        return Err(InvalidSetting::new(
                            format!("periods[{second}]"),
                            format!("{day_name} {at}{on} is covered by both periods[{first}] and periods[{second}]"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The day type a local date is priced as (a holiday counts as `holiday_as`).
    pub fn day_type(&self, date: NaiveDate) -> Day {
        if self.holidays.contains(&date) { self.holiday_as.unwrap_or(Day::Sun) } else { Day::of(date.weekday()) }
    }

    /// The period pricing a local date and minute of the day (0..1440); `None` only for a
    /// tariff that does not validate.
    pub fn period_at(&self, date: NaiveDate, minute: u16) -> Option<&Period> {
        let day = self.day_type(date);
        let month_day = MonthDay::of(date);
        self.periods.iter().find(|p| {
            p.days.contains(&day)
                && p.from.minutes() <= minute
                && minute < p.to.minutes()
                && p.season.is_none_or(|s| s.contains(month_day))
        })
    }

    /// The price per kWh of the slot starting at `slot_start_ms` under this version (NaN
    /// for a tariff that does not validate, rather than a plausible wrong number).
    pub fn price_at(&self, tz: Tz, slot_start_ms: i64) -> f64 {
        let local = local_time(tz, slot_start_ms);
        self.period_at(local.date_naive(), minute_of_day(&local)).map_or(f64::NAN, |p| p.price_per_kwh)
    }

    /// The demand charge of this version in its detailed form (the short form
    /// `demand_charge_per_kw` is a monthly single highest counted at any time).
    pub fn effective_demand_charge(&self) -> Option<DemandChargeSpec> {
        match (&self.demand_charge, self.demand_charge_per_kw) {
            (Some(spec), _) => Some(spec.clone()),
            (None, Some(per_kw)) => Some(DemandChargeSpec {
                per_kw,
                basis: DemandBasis::Month,
                method: DemandMethod::Highest,
                count: None,
                windows: None,
            }),
            (None, None) => None,
        }
    }

    /// The demand interval in minutes (default 15).
    pub fn demand_interval_minutes(&self) -> u32 {
        self.demand_interval_minutes.unwrap_or(DEFAULT_DEMAND_INTERVAL_MINUTES)
    }
}

fn day_name(day: Day) -> &'static str {
    match day {
        Day::Mon => "mon",
        Day::Tue => "tue",
        Day::Wed => "wed",
        Day::Thu => "thu",
        Day::Fri => "fri",
        Day::Sat => "sat",
        Day::Sun => "sun",
    }
}

fn validate_demand_charge(spec: &DemandChargeSpec) -> Result<(), InvalidSetting> {
    non_negative(spec.per_kw, "demand_charge.per_kw")?;
    match (spec.method, spec.count) {
        (DemandMethod::Highest, Some(_)) => {
            return Err(InvalidSetting::new("demand_charge.count", "only with method `mean_of_highest`"));
        }
        (DemandMethod::MeanOfHighest, Some(count)) if count == 0 || count > MAX_MEAN_COUNT => {
            return Err(InvalidSetting::new("demand_charge.count", format!("must be 1 … {MAX_MEAN_COUNT}")));
        }
        _ => {}
    }
    if let Some(windows) = &spec.windows {
        if windows.is_empty() {
            return Err(InvalidSetting::new("demand_charge.windows", "omit `windows` to count every interval"));
        }
        for (i, window) in windows.iter().enumerate() {
            if window.days.is_empty() {
                return Err(InvalidSetting::new(format!("demand_charge.windows[{i}].days"), "name at least one day"));
            }
            if window.from >= window.to {
                return Err(InvalidSetting::new(
                    format!("demand_charge.windows[{i}].to"),
                    "must be after `from` (a window does not cross midnight: write two windows)",
                ));
            }
            if let Some(months) = &window.months {
                if months.is_empty() {
                    return Err(InvalidSetting::new(
                        format!("demand_charge.windows[{i}].months"),
                        "name at least one month, or omit `months` for all year",
                    ));
                }
                if let Some(j) = months.iter().position(|m| !(1..=12).contains(m)) {
                    return Err(InvalidSetting::new(
                        format!("demand_charge.windows[{i}].months[{j}]"),
                        "a month is 1 (January) … 12 (December)",
                    ));
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn non_negative(value: f64, field: &str) -> Result<(), InvalidSetting> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(InvalidSetting::new(field, "must be a finite number ≥ 0"))
    }
}

/// A factory's tariff versions, oldest first. Built only through [`TariffHistory::new`],
/// so it is never empty and every version validates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Tariff>", into = "Vec<Tariff>")]
pub struct TariffHistory {
    versions: Vec<Tariff>,
}

impl TryFrom<Vec<Tariff>> for TariffHistory {
    type Error = InvalidSetting;

    fn try_from(versions: Vec<Tariff>) -> Result<Self, Self::Error> {
        TariffHistory::new(versions)
    }
}

impl From<TariffHistory> for Vec<Tariff> {
    fn from(history: TariffHistory) -> Self {
        history.versions
    }
}

impl TariffHistory {
    /// Validates every version (errors are prefixed `versions[i].`) and their order: only
    /// the first may lack `valid_from`; later ones have strictly increasing dates.
    pub fn new(versions: Vec<Tariff>) -> Result<Self, InvalidSetting> {
        for (i, version) in versions.iter().enumerate() {
            version.validate().map_err(|e| prefixed(i, e))?;
        }
        check_version_order(versions.iter().map(|v| v.valid_from))?;
        Ok(TariffHistory { versions })
    }

    /// One version in force since always.
    pub fn single(tariff: Tariff) -> Result<Self, InvalidSetting> {
        TariffHistory::new(vec![tariff])
    }

    pub fn versions(&self) -> &[Tariff] {
        &self.versions
    }

    /// The version in force on a local date: the one with the latest `valid_from` ≤ the
    /// date. Dates before the first version's `valid_from` fall to the first version, so a
    /// history always answers.
    pub fn in_force(&self, local_date: NaiveDate) -> &Tariff {
        let index = self.versions.iter().rposition(|v| v.valid_from.is_none_or(|from| from <= local_date)).unwrap_or(0);
        // `new` refuses an empty history, so index 0 exists.
        &self.versions[index]
    }

    /// The price per kWh of the slot starting at `slot_start_ms`, under the version in
    /// force on the slot's local date.
    pub fn price_at(&self, tz: Tz, slot_start_ms: i64) -> f64 {
        let local = local_time(tz, slot_start_ms);
        self.in_force(local.date_naive())
            .period_at(local.date_naive(), minute_of_day(&local))
            .map_or(f64::NAN, |p| p.price_per_kwh)
    }
}

fn prefixed(index: usize, error: InvalidSetting) -> InvalidSetting {
    let field = if error.field.is_empty() {
        format!("versions[{index}]")
    } else {
        format!("versions[{index}].{}", error.field)
    };
    InvalidSetting::new(field, error.message)
}

/// Shared by the tariff and emission histories: non-empty, only the first version may
/// lack `valid_from`, later dates strictly increase.
pub(crate) fn check_version_order(valid_froms: impl Iterator<Item = Option<NaiveDate>>) -> Result<(), InvalidSetting> {
    let mut previous: Option<NaiveDate> = None;
    let mut count = 0;
    for (i, valid_from) in valid_froms.enumerate() {
        count += 1;
        match (i, valid_from) {
            (0, from) => previous = from,
            (_, None) => {
                return Err(InvalidSetting::new(
                    format!("versions[{i}].valid_from"),
                    "only the first version may omit `valid_from`",
                ));
            }
            (_, Some(from)) => {
                if previous.is_some_and(|p| from <= p) {
                    return Err(InvalidSetting::new(
                        format!("versions[{i}].valid_from"),
                        "must be after the previous version's `valid_from`",
                    ));
                }
                previous = Some(from);
            }
        }
    }
    if count == 0 {
        return Err(InvalidSetting::new("versions", "at least one version is needed"));
    }
    Ok(())
}

/// The bill of a range: energy cost, demand charges and fixed fees.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bill {
    /// The currency of the version in force at the end of the range.
    pub currency: String,
    pub energy_cost: f64,
    /// One entry per billing period (local day or month) with a demand charge that
    /// overlaps the range.
    pub demand: Vec<DemandCharge>,
    pub fixed: f64,
    /// `energy_cost + Σ demand.charge + fixed`.
    pub total: f64,
}

/// The demand charge of one billing period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemandCharge {
    /// Local start of the billing period (day or month).
    pub period_start_ms: i64,
    /// Local end of the billing period (exclusive).
    pub period_end_ms: i64,
    /// The kW the charge is computed on: the highest counted interval, or the mean of the
    /// `count` highest (of all there are, when fewer intervals counted).
    pub basis_kw: f64,
    /// The intervals making the basis: (interval start, average kW), highest first.
    pub peaks: Vec<(i64, f64)>,
    /// `basis_kw × per_kw`.
    pub charge: f64,
}

/// Energy cost of slots, slot by slot under the version in force on each slot's local
/// date: so a consumption bucket's cost is `cost_of` its slots.
pub fn cost_of(history: &TariffHistory, tz: Tz, slots: &[Slot]) -> f64 {
    slots.iter().map(|slot| slot.kwh * history.price_at(tz, slot.start_ms)).sum()
}

/// The bill of `[from_ms, to_ms)` over `total`, the slots summed over the devices of the
/// query (slots whose start lies outside the range are ignored).
///
/// - Energy: [`cost_of`] the slots in range.
/// - Demand: each demand interval's average kW (intervals aligned to the local clock,
///   `demand_interval_minutes` wide) counts when its start lies in a window. A monthly
///   charge belongs to a local month and is decided by the version in force on the 1st of
///   that month; when that version has no monthly charge, each local day is a period,
///   charged when the version in force on that day has a daily charge. A monthly charge
///   introduced mid-month therefore starts with the next month. Charges are not prorated
///   (grids bill the whole peak): a range covering part of a period shows the peak of the
///   part covered.
/// - Fixed: `fixed_per_month` of the version in force on each local day × that day's share
///   of its local month (real durations, so DST days weigh 23 or 25 hours), summed over
///   the part of each day inside the range. A whole month sums to exactly the fee.
/// - Currency: the version in force at the last instant of the range (`to` is exclusive;
///   a version starting exactly at `to` prices nothing in it).
pub fn bill(history: &TariffHistory, tz: Tz, total: &[Slot], from_ms: i64, to_ms: i64) -> Bill {
    let in_range: Vec<Slot> = total.iter().copied().filter(|s| s.start_ms >= from_ms && s.start_ms < to_ms).collect();
    let last_instant = if to_ms > from_ms { to_ms - 1 } else { from_ms };
    let currency = history.in_force(local_time(tz, last_instant).date_naive()).currency.clone();
    if to_ms <= from_ms {
        return Bill { currency, energy_cost: 0.0, demand: Vec::new(), fixed: 0.0, total: 0.0 };
    }
    let energy_cost = cost_of(history, tz, &in_range);
    let demand: Vec<DemandCharge> = billing_periods(history, tz, from_ms, to_ms)
        .into_iter()
        .map(|period| demand_charge(&period, tz, &in_range, from_ms, to_ms))
        .collect();
    let fixed = fixed_fees(history, tz, from_ms, to_ms);
    let total = energy_cost + demand.iter().map(|d| d.charge).sum::<f64>() + fixed;
    Bill { currency, energy_cost, demand, fixed, total }
}

/// A billing period with the version deciding its demand charge.
struct BillingPeriod<'a> {
    start_ms: i64,
    end_ms: i64,
    tariff: &'a Tariff,
    spec: DemandChargeSpec,
}

fn billing_periods(history: &TariffHistory, tz: Tz, from_ms: i64, to_ms: i64) -> Vec<BillingPeriod<'_>> {
    let first_day = local_time(tz, from_ms).date_naive();
    let last_day = local_time(tz, to_ms - 1).date_naive();
    let mut periods = Vec::new();
    let mut month = first_of_month(first_day);
    while month <= last_day {
        let next_month = next_month(month);
        if next_month <= month {
            break;
        }
        let month_tariff = history.in_force(month);
        match month_tariff.effective_demand_charge() {
            Some(spec) if spec.basis == DemandBasis::Month => periods.push(BillingPeriod {
                start_ms: day_start_ms(tz, month),
                end_ms: day_start_ms(tz, next_month),
                tariff: month_tariff,
                spec,
            }),
            _ => {
                let mut day = month.max(first_day);
                while day < next_month && day <= last_day {
                    let tariff = history.in_force(day);
                    let Some(next_day) = day.succ_opt() else { break };
                    if let Some(spec) = tariff.effective_demand_charge().filter(|s| s.basis == DemandBasis::Day) {
                        periods.push(BillingPeriod {
                            start_ms: day_start_ms(tz, day),
                            end_ms: day_start_ms(tz, next_day),
                            tariff,
                            spec,
                        });
                    }
                    day = next_day;
                }
            }
        }
        month = next_month;
    }
    periods
}

fn demand_charge(period: &BillingPeriod<'_>, tz: Tz, slots: &[Slot], from_ms: i64, to_ms: i64) -> DemandCharge {
    let interval_minutes = period.tariff.demand_interval_minutes();
    let start = period.start_ms.max(from_ms);
    let end = period.end_ms.min(to_ms);
    // kWh per demand interval, keyed by the interval's start.
    let mut intervals: BTreeMap<i64, f64> = BTreeMap::new();
    for slot in slots.iter().filter(|s| s.start_ms >= start && s.start_ms < end) {
        let local = local_time(tz, slot.start_ms);
        let into_interval = u32::from(minute_of_day(&local)) % interval_minutes;
        let interval_start = slot.start_ms - i64::from(into_interval) * 60_000;
        *intervals.entry(interval_start).or_insert(0.0) += slot.kwh;
    }
    let hours = f64::from(interval_minutes) / 60.0;
    let mut counted: Vec<(i64, f64)> = intervals
        .into_iter()
        .filter(|&(at, _)| interval_counts(period.tariff, &period.spec, tz, at))
        .map(|(at, kwh)| (at, kwh / hours))
        .collect();
    counted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    counted.truncate(period.spec.effective_count());
    let basis_kw =
        if counted.is_empty() { 0.0 } else { counted.iter().map(|p| p.1).sum::<f64>() / counted.len() as f64 };
    DemandCharge {
        period_start_ms: period.start_ms,
        period_end_ms: period.end_ms,
        basis_kw,
        peaks: counted,
        charge: basis_kw * period.spec.per_kw,
    }
}

/// Whether the demand interval starting at `at_ms` counts: always without windows, else
/// when its local start lies in a window (a holiday counts as its `holiday_as` day).
fn interval_counts(tariff: &Tariff, spec: &DemandChargeSpec, tz: Tz, at_ms: i64) -> bool {
    let Some(windows) = &spec.windows else {
        return true;
    };
    let local = local_time(tz, at_ms);
    let date = local.date_naive();
    let day = tariff.day_type(date);
    let minute = minute_of_day(&local);
    windows.iter().any(|w| w.contains(day, minute, date.month()))
}

fn fixed_fees(history: &TariffHistory, tz: Tz, from_ms: i64, to_ms: i64) -> f64 {
    let mut day = local_time(tz, from_ms).date_naive();
    let last_day = local_time(tz, to_ms - 1).date_naive();
    let mut fee = 0.0;
    while day <= last_day {
        let Some(next_day) = day.succ_opt() else { break };
        if let Some(per_month) = history.in_force(day).fixed_per_month {
            let month = first_of_month(day);
            let month_ms = day_start_ms(tz, next_month(month)) - day_start_ms(tz, month);
            let day_from = day_start_ms(tz, day).max(from_ms);
            let day_to = day_start_ms(tz, next_day).min(to_ms);
            if day_to > day_from && month_ms > 0 {
                fee += per_month * (day_to - day_from) as f64 / month_ms as f64;
            }
        }
        day = next_day;
    }
    fee
}

// Local-time helpers shared by the modules of this crate's money side (tariff, emission).

/// The local time of an instant. Instants outside chrono's range (±262,000 years) cannot
/// come from telemetry; they are clamped rather than failing.
pub(crate) fn local_time(tz: Tz, ms: i64) -> DateTime<Tz> {
    let utc = DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    utc.with_timezone(&tz)
}

/// Minutes since local midnight (wall clock).
pub(crate) fn minute_of_day(local: &DateTime<Tz>) -> u16 {
    (local.hour() * 60 + local.minute()) as u16
}

/// The first instant of a local date: its midnight, or the first wall-clock time that
/// exists when a DST change skips midnight (some zones switch at 00:00).
pub(crate) fn day_start_ms(tz: Tz, date: NaiveDate) -> i64 {
    let midnight = date.and_time(NaiveTime::MIN);
    for quarter in 0..=16 {
        let Some(wall) = midnight.checked_add_signed(Duration::minutes(quarter * 15)) else { break };
        if let Some(start) = tz.from_local_datetime(&wall).earliest() {
            return start.timestamp_millis();
        }
    }
    midnight.and_utc().timestamp_millis()
}

pub(crate) fn first_of_month(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

pub(crate) fn next_month(first: NaiveDate) -> NaiveDate {
    first.checked_add_months(chrono::Months::new(1)).unwrap_or(NaiveDate::MAX)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;
    use chrono_tz::Europe::Berlin;

    use super::*;
    use crate::SLOT_MS;

    /// Berlin wall-clock time "YYYY-MM-DD HH:MM" → UTC ms (unambiguous times only).
    fn at(local: &str) -> i64 {
        let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M").unwrap();
        Berlin.from_local_datetime(&naive).single().unwrap().timestamp_millis()
    }

    fn slot(local: &str, kwh: f64) -> Slot {
        Slot { start_ms: at(local), kwh, idle_kwh: 0.0, covered_ms: SLOT_MS }
    }

    fn tariff(json: serde_json::Value) -> Tariff {
        let tariff: Tariff = serde_json::from_value(json).unwrap();
        tariff.validate().unwrap();
        tariff
    }

    fn history(versions: Vec<Tariff>) -> TariffHistory {
        TariffHistory::new(versions).unwrap()
    }

    fn invalid(json: serde_json::Value) -> InvalidSetting {
        serde_json::from_value::<Tariff>(json).unwrap().validate().unwrap_err()
    }

    const ALL_DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    fn flat(price: f64) -> serde_json::Value {
        serde_json::json!({"currency": "EUR", "periods": [
            {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "price_per_kwh": price}]})
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn the_api_shape_reads_and_writes_back() {
        let json = serde_json::json!({"currency": "EUR", "valid_from": "2026-01-01", "periods": [
            {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "price_per_kwh": 0.25}],
            "demand_charge_per_kw": 12.0, "fixed_per_month": 50.0});
        let tariff = tariff(json.clone());
        assert_eq!(serde_json::to_value(&tariff).unwrap(), json);
        let unknown = serde_json::json!({"currency": "EUR", "periods": [], "price": 1});
        assert!(serde_json::from_value::<Tariff>(unknown).is_err());
    }

    #[test]
    fn time_of_use_cost_across_the_07_00_boundary() {
        let history = history(vec![tariff(serde_json::json!({"currency": "EUR", "periods": [
            {"days": ALL_DAYS, "from": "00:00", "to": "07:00", "price_per_kwh": 0.20},
            {"days": ALL_DAYS, "from": "07:00", "to": "24:00", "price_per_kwh": 0.30}]}))]);
        let slots = [
            slot("2026-11-02 06:30", 1.0),
            slot("2026-11-02 06:45", 2.0),
            slot("2026-11-02 07:00", 3.0),
            slot("2026-11-02 07:15", 4.0),
        ];
        // 1·0.20 + 2·0.20 + 3·0.30 + 4·0.30 = 0.2 + 0.4 + 0.9 + 1.2 = 2.7
        assert!(close(cost_of(&history, Berlin, &slots), 2.7));
        // Only the two slots before 07:00: 0.2 + 0.4 = 0.6
        assert!(close(cost_of(&history, Berlin, &slots[..2]), 0.6));
    }

    #[test]
    fn time_of_use_follows_local_time_across_both_dst_changes() {
        let history = history(vec![tariff(serde_json::json!({"currency": "EUR", "periods": [
            {"days": ALL_DAYS, "from": "00:00", "to": "07:00", "price_per_kwh": 0.20},
            {"days": ALL_DAYS, "from": "07:00", "to": "24:00", "price_per_kwh": 0.30}]}))]);
        let utc =
            |text: &str| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap().and_utc().timestamp_millis();
        // 2026-03-29 (CEST, +2 from 01:00 UTC): 04:45 UTC = 06:45 local, 05:00 UTC = 07:00.
        assert!(close(history.price_at(Berlin, utc("2026-03-29 04:45")), 0.20));
        assert!(close(history.price_at(Berlin, utc("2026-03-29 05:00")), 0.30));
        // 2026-10-25 (CET, +1 from 01:00 UTC): 05:45 UTC = 06:45 local, 06:00 UTC = 07:00.
        assert!(close(history.price_at(Berlin, utc("2026-10-25 05:45")), 0.20));
        assert!(close(history.price_at(Berlin, utc("2026-10-25 06:00")), 0.30));
    }

    #[test]
    fn hourly_demand_intervals_keep_the_repeated_hour_apart() {
        let mut json = flat(0.0);
        json["demand_charge"] = serde_json::json!({"per_kw": 1.0, "basis": "day"});
        json["demand_interval_minutes"] = serde_json::json!(60);
        let history = history(vec![tariff(json)]);
        // 2026-10-25: local 02:00–03:00 happens twice, as CEST (00:00–01:00 UTC) and as CET
        // (01:00–02:00 UTC). 1 kWh per slot in the first, 2 kWh in the second: 4 kW and 8 kW,
        // not one 12 kW hour.
        let hour = |first_utc_ms: i64, kwh: f64| -> Vec<Slot> {
            (0..4)
                .map(|i| Slot { start_ms: first_utc_ms + i * SLOT_MS, kwh, idle_kwh: 0.0, covered_ms: SLOT_MS })
                .collect()
        };
        let cest = Berlin.with_ymd_and_hms(2026, 10, 25, 0, 0, 0).unwrap().timestamp_millis() + 2 * 3_600_000;
        let cet = cest + 3_600_000;
        let slots = [hour(cest, 1.0), hour(cet, 2.0)].concat();
        let bill = bill(&history, Berlin, &slots, at("2026-10-25 00:00"), at("2026-10-26 00:00"));
        assert_eq!(bill.demand.len(), 1);
        assert_eq!(bill.demand[0].peaks, vec![(cet, 8.0)]);
        // The local day is 25 hours long.
        assert_eq!(bill.demand[0].period_end_ms - bill.demand[0].period_start_ms, 25 * 3_600_000);
    }

    #[test]
    fn a_holiday_is_priced_as_a_sunday() {
        let history = history(vec![tariff(serde_json::json!({"currency": "EUR", "periods": [
            {"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "from": "00:00", "to": "24:00", "price_per_kwh": 0.30},
            {"days": ["sun"], "from": "00:00", "to": "24:00", "price_per_kwh": 0.10}],
            "holidays": ["2026-12-25"], "holiday_as": "sun"}))]);
        // Friday 2026-12-24 is a weekday: 10 kWh · 0.30 = 3.0
        assert!(close(cost_of(&history, Berlin, &[slot("2026-12-24 10:00", 10.0)]), 3.0));
        // Friday 2026-12-25 is a holiday priced as Sunday: 10 kWh · 0.10 = 1.0
        assert!(close(cost_of(&history, Berlin, &[slot("2026-12-25 10:00", 10.0)]), 1.0));
        // Without `holiday_as` a holiday is a Sunday too.
        let mut default_sunday = history.versions()[0].clone();
        default_sunday.holiday_as = None;
        let default_sunday = TariffHistory::single(default_sunday).unwrap();
        assert!(close(default_sunday.price_at(Berlin, at("2026-12-25 23:45")), 0.10));
    }

    #[test]
    fn a_tariff_change_mid_month_leaves_the_earlier_days_unchanged() {
        let before = tariff(flat(0.20));
        let mut after = tariff(flat(0.30));
        after.valid_from = NaiveDate::from_ymd_opt(2026, 11, 15);
        let slots = [slot("2026-11-10 10:00", 10.0), slot("2026-11-14 23:45", 10.0)];
        let old = history(vec![before.clone()]);
        let new = history(vec![before, after]);
        // Before the change: 10·0.20 + 10·0.20 = 4.0, with or without the new version.
        assert!(close(cost_of(&old, Berlin, &slots), 4.0));
        assert!(close(cost_of(&new, Berlin, &slots), 4.0));
        // 2026-11-15 00:00 in Berlin is 2026-11-14 23:00 UTC: the local date decides, 0.30.
        assert!(close(new.price_at(Berlin, at("2026-11-15 00:00")), 0.30));
        // A whole-month bill: 4.0 + 10·0.30 (11-20) = 7.0
        let month = [&slots[..], &[slot("2026-11-20 10:00", 10.0)]].concat();
        let bill = bill(&new, Berlin, &month, at("2026-11-01 00:00"), at("2026-12-01 00:00"));
        assert!(close(bill.energy_cost, 7.0));
        assert!(close(bill.total, 7.0));
        assert!(bill.demand.is_empty());
    }

    #[test]
    fn seasons_wrap_the_year() {
        let history = history(vec![tariff(serde_json::json!({"currency": "EUR", "periods": [
            {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "price_per_kwh": 0.30,
             "season": {"from": "11-01", "to": "03-31"}},
            {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "price_per_kwh": 0.20,
             "season": {"from": "04-01", "to": "10-31"}}]}))]);
        for (local, price) in [
            ("2026-12-31 23:45", 0.30),
            ("2027-01-01 00:00", 0.30),
            ("2028-02-29 12:00", 0.30),
            ("2026-03-31 23:45", 0.30),
            ("2026-04-01 00:00", 0.20),
            ("2026-10-31 23:45", 0.20),
            ("2026-11-01 00:00", 0.30),
        ] {
            assert!(close(history.price_at(Berlin, at(local)), price), "{local}");
        }
        // A summer that starts a day late leaves 04-01 without a price.
        let error = invalid(serde_json::json!({"currency": "EUR", "periods": [
            {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "price_per_kwh": 0.30,
             "season": {"from": "11-01", "to": "03-31"}},
            {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "price_per_kwh": 0.20,
             "season": {"from": "04-02", "to": "10-31"}}]}));
        assert_eq!(error.field, "periods");
        assert_eq!(
            error.message,
            "mon 00:00 on 04-01 is covered by no period: every 15 minutes of every day need a price"
        );
        // Overlapping seasons on 03-31.
        let error = invalid(serde_json::json!({"currency": "EUR", "periods": [
            {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "price_per_kwh": 0.30,
             "season": {"from": "11-01", "to": "03-31"}},
            {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "price_per_kwh": 0.20,
             "season": {"from": "03-31", "to": "10-31"}}]}));
        assert_eq!(error.field, "periods[1]");
        assert_eq!(error.message, "mon 00:00 on 03-31 is covered by both periods[0] and periods[1]");
        assert!(serde_json::from_value::<Season>(serde_json::json!({"from": "02-30", "to": "03-01"})).is_err());
    }

    #[test]
    fn coverage_and_field_errors_name_the_field() {
        let period = |days: &[&str], from: &str, to: &str, price: f64| serde_json::json!({"days": days, "from": from, "to": to, "price_per_kwh": price});
        let cases = [
            // A hole at 07:00–07:15.
            (
                vec![period(&ALL_DAYS, "00:00", "07:00", 0.2), period(&ALL_DAYS, "07:15", "24:00", 0.3)],
                "periods",
                "mon 07:00 is covered by no period: every 15 minutes of every day need a price",
            ),
            // 07:00–08:00 covered twice.
            (vec![period(&ALL_DAYS, "00:00", "08:00", 0.2), period(&ALL_DAYS, "07:00", "24:00", 0.3)], "periods", ""),
            // No Sunday.
            (
                vec![period(&ALL_DAYS[..6], "00:00", "24:00", 0.2)],
                "periods",
                "sun 00:00 is covered by no period: every 15 minutes of every day need a price",
            ),
            // A period crossing midnight.
            (
                vec![period(&ALL_DAYS, "06:00", "22:00", 0.3), period(&ALL_DAYS, "22:00", "06:00", 0.2)],
                "periods[1].to",
                "must be after `from` (a period does not cross midnight: write 22:00–24:00 and 00:00–06:00)",
            ),
            (
                vec![period(&ALL_DAYS, "00:00", "24:00", -0.1)],
                "periods[0].price_per_kwh",
                "must be a finite number ≥ 0",
            ),
            (vec![period(&[], "00:00", "24:00", 0.1)], "periods[0].days", "name at least one day"),
        ];
        for (periods, field, message) in cases {
            let error = invalid(serde_json::json!({"currency": "EUR", "periods": periods}));
            if message.is_empty() {
                // The overlap: reported on the second period, at the first doubly covered time.
                assert_eq!(error.field, "periods[1]");
                assert_eq!(error.message, "mon 07:00 is covered by both periods[0] and periods[1]");
            } else {
                assert_eq!((error.field.as_str(), error.message.as_str()), (field, message));
            }
        }
        let with = |extra: serde_json::Value| {
            let mut json = flat(0.2);
            json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            json
        };
        for (extra, field) in [
            (serde_json::json!({"currency": "eur"}), "currency"),
            (serde_json::json!({"currency": "EURO"}), "currency"),
            (serde_json::json!({"demand_charge_per_kw": 12.0, "demand_charge": {"per_kw": 12.0}}), "demand_charge"),
            (serde_json::json!({"demand_charge_per_kw": -1.0}), "demand_charge_per_kw"),
            (
                serde_json::json!({"demand_charge_per_kw": 1.0, "demand_interval_minutes": 20}),
                "demand_interval_minutes",
            ),
            (serde_json::json!({"demand_interval_minutes": 30}), "demand_interval_minutes"),
            (serde_json::json!({"holiday_as": "sun"}), "holiday_as"),
            (serde_json::json!({"demand_charge": {"per_kw": 1.0, "count": 3}}), "demand_charge.count"),
            (
                serde_json::json!({"demand_charge": {"per_kw": 1.0, "method": "mean_of_highest", "count": 0}}),
                "demand_charge.count",
            ),
            (serde_json::json!({"demand_charge": {"per_kw": 1.0, "windows": []}}), "demand_charge.windows"),
            (
                serde_json::json!({"demand_charge": {"per_kw": 1.0, "windows": [
                    {"days": ["mon"], "from": "19:00", "to": "07:00"}]}}),
                "demand_charge.windows[0].to",
            ),
            (
                serde_json::json!({"demand_charge": {"per_kw": 1.0, "windows": [
                    {"days": ["mon"], "from": "07:00", "to": "19:00", "months": [11, 13]}]}}),
                "demand_charge.windows[0].months[1]",
            ),
        ] {
            assert_eq!(invalid(with(extra.clone())).field, field, "{extra}");
        }
        // Times off the 15-minute grid are refused while reading.
        let off_grid = serde_json::json!({"currency": "EUR", "periods": [
            {"days": ALL_DAYS, "from": "00:00", "to": "07:10", "price_per_kwh": 0.2}]});
        assert!(serde_json::from_value::<Tariff>(off_grid).is_err());
    }

    #[test]
    fn versions_must_be_in_order() {
        let mut second = tariff(flat(0.3));
        second.valid_from = NaiveDate::from_ymd_opt(2026, 1, 1);
        let mut third = tariff(flat(0.4));
        third.valid_from = NaiveDate::from_ymd_opt(2026, 1, 1);
        let error = TariffHistory::new(vec![tariff(flat(0.2)), second.clone(), third]).unwrap_err();
        assert_eq!(error.field, "versions[2].valid_from");
        let error = TariffHistory::new(vec![second.clone(), tariff(flat(0.2))]).unwrap_err();
        assert_eq!(error.field, "versions[1].valid_from");
        assert_eq!(TariffHistory::new(Vec::new()).unwrap_err().field, "versions");
        let mut bad = tariff(flat(0.2));
        bad.currency = "x".into();
        assert_eq!(TariffHistory::new(vec![bad]).unwrap_err().field, "versions[0].currency");
        // Before the first version's date the first version answers.
        let history = history(vec![second]);
        assert!(close(history.price_at(Berlin, at("2025-06-01 12:00")), 0.3));
    }

    /// Monthly, weekdays 07:00–19:00, mean of the 3 highest 15-minute intervals, 10 €/kW.
    fn windowed(months: Option<Vec<u32>>) -> TariffHistory {
        let mut json = serde_json::json!({"currency": "EUR", "periods": [
            {"days": ALL_DAYS, "from": "00:00", "to": "24:00", "price_per_kwh": 0.10}],
            "demand_charge": {"per_kw": 10.0, "basis": "month", "method": "mean_of_highest", "count": 3,
                "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "19:00"}]}});
        if let Some(months) = months {
            json["demand_charge"]["windows"][0]["months"] = serde_json::json!(months);
        }
        history(vec![tariff(json)])
    }

    #[test]
    fn a_demand_charge_counts_only_in_its_window_as_the_mean_of_the_3_highest() {
        // kW of a 15-minute interval = kWh / 0.25 h.
        let slots = [
            slot("2026-11-02 10:00", 25.0), // Mon, in the window: 100 kW
            slot("2026-11-03 12:00", 20.0), // Tue, in: 80 kW
            slot("2026-11-04 18:45", 15.0), // Wed, last interval of the window: 60 kW
            slot("2026-11-05 08:00", 10.0), // Thu, in: 40 kW, only the 4th highest
            slot("2026-11-02 19:00", 50.0), // Mon, at the window's end (excluded): 200 kW
            slot("2026-11-07 10:00", 75.0), // Sat, not a window day: 300 kW
            slot("2026-11-03 06:45", 45.0), // Tue, before 07:00: 180 kW
        ];
        let bill = bill(&windowed(None), Berlin, &slots, at("2026-11-01 00:00"), at("2026-12-01 00:00"));
        assert_eq!(bill.demand.len(), 1);
        let demand = &bill.demand[0];
        assert_eq!((demand.period_start_ms, demand.period_end_ms), (at("2026-11-01 00:00"), at("2026-12-01 00:00")));
        // (100 + 80 + 60) / 3 = 80 kW; the higher 300, 200 and 180 kW lie outside the window.
        assert!(close(demand.basis_kw, 80.0));
        assert_eq!(
            demand.peaks,
            vec![(at("2026-11-02 10:00"), 100.0), (at("2026-11-03 12:00"), 80.0), (at("2026-11-04 18:45"), 60.0)]
        );
        // 80 kW · 10 €/kW = 800 €
        assert!(close(demand.charge, 800.0));
        // Energy: (25 + 20 + 15 + 10 + 50 + 75 + 45) kWh · 0.10 = 240 · 0.10 = 24 €; total 824 €.
        assert!(close(bill.energy_cost, 24.0));
        assert!(close(bill.total, 824.0));
        assert_eq!(bill.currency, "EUR");

        // A window for November–March only counts November; December–March excludes it.
        let winter = bill_of(&windowed(Some(vec![11, 12, 1, 2, 3])), &slots);
        assert!(close(winter.demand[0].basis_kw, 80.0));
        let no_november = bill_of(&windowed(Some(vec![12, 1, 2, 3])), &slots);
        assert!(close(no_november.demand[0].basis_kw, 0.0));
        assert!(no_november.demand[0].peaks.is_empty());
    }

    fn bill_of(history: &TariffHistory, slots: &[Slot]) -> Bill {
        bill(history, Berlin, slots, at("2026-11-01 00:00"), at("2026-12-01 00:00"))
    }

    #[test]
    fn a_holiday_is_outside_a_weekday_window() {
        let mut tariff = windowed(None).versions()[0].clone();
        tariff.holidays = vec![NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()];
        let history = TariffHistory::single(tariff).unwrap();
        // Monday 11-02 is a holiday (a Sunday): its 100 kW no longer counts; (80 + 60) / 2 = 70 kW.
        let slots = [slot("2026-11-02 10:00", 25.0), slot("2026-11-03 12:00", 20.0), slot("2026-11-04 18:45", 15.0)];
        assert!(close(bill_of(&history, &slots).demand[0].basis_kw, 70.0));
    }

    #[test]
    fn the_short_form_is_the_monthly_single_highest_at_any_time() {
        let mut json = flat(0.0);
        json["demand_charge_per_kw"] = serde_json::json!(12.0);
        let history = history(vec![tariff(json)]);
        let slots = [slot("2026-11-07 03:00", 30.0), slot("2026-11-02 10:00", 25.0)];
        let bill = bill_of(&history, &slots);
        // 30 kWh / 0.25 h = 120 kW on a Saturday night; 120 · 12 = 1440
        assert_eq!(bill.demand[0].peaks, vec![(at("2026-11-07 03:00"), 120.0)]);
        assert!(close(bill.demand[0].charge, 1440.0));
    }

    #[test]
    fn the_version_in_force_at_the_start_of_the_month_decides_its_demand_charge() {
        let mut first = flat(0.0);
        first["demand_charge_per_kw"] = serde_json::json!(10.0);
        let mut second = first.clone();
        second["valid_from"] = serde_json::json!("2026-11-15");
        second["demand_charge_per_kw"] = serde_json::json!(20.0);
        let history = history(vec![tariff(first), tariff(second)]);
        // A 100 kW peak on 11-20 (25 kWh / 0.25 h) in November: the version of 11-01 bills
        // it, 100 · 10 = 1000 (not 100 · 20).
        let november = bill_of(&history, &[slot("2026-11-20 10:00", 25.0)]);
        assert!(close(november.demand[0].charge, 1000.0));
        // In December the new version is in force on the 1st: 100 · 20 = 2000.
        let december =
            bill(&history, Berlin, &[slot("2026-12-02 10:00", 25.0)], at("2026-12-01 00:00"), at("2027-01-01 00:00"));
        assert!(close(december.demand[0].charge, 2000.0));
    }

    #[test]
    fn a_daily_demand_charge_bills_each_local_day() {
        let mut json = flat(0.0);
        json["demand_charge"] = serde_json::json!({"per_kw": 2.0, "basis": "day"});
        let slots = [
            slot("2026-11-02 10:00", 5.0), // 20 kW
            slot("2026-11-02 10:15", 3.0), // 12 kW
            slot("2026-11-03 00:00", 1.0), // 4 kW, the next local day (2026-11-02 23:00 UTC)
        ];
        let (from, to) = (at("2026-11-02 00:00"), at("2026-11-04 00:00"));
        let daily = bill(&history(vec![tariff(json.clone())]), Berlin, &slots, from, to);
        let days: Vec<(i64, f64, f64)> =
            daily.demand.iter().map(|d| (d.period_start_ms, d.basis_kw, d.charge)).collect();
        // 11-02: 20 kW · 2 = 40; 11-03: 4 kW · 2 = 8
        assert_eq!(days, vec![(at("2026-11-02 00:00"), 20.0, 40.0), (at("2026-11-03 00:00"), 4.0, 8.0)]);
        assert!(close(daily.total, 48.0));

        // 30-minute intervals: 10:00–10:30 holds 5 + 3 = 8 kWh / 0.5 h = 16 kW → 32;
        // 00:00–00:30 on 11-03 holds 1 kWh / 0.5 h = 2 kW → 4.
        json["demand_interval_minutes"] = serde_json::json!(30);
        let bill = bill(&history(vec![tariff(json)]), Berlin, &slots, from, to);
        let charges: Vec<f64> = bill.demand.iter().map(|d| d.charge).collect();
        assert_eq!(charges, vec![32.0, 4.0]);
        assert_eq!(bill.demand[0].peaks, vec![(at("2026-11-02 10:00"), 16.0)]);
    }

    #[test]
    fn the_fixed_fee_is_prorated_by_the_part_of_the_month() {
        let mut json = flat(0.0);
        json["fixed_per_month"] = serde_json::json!(60.0);
        let history = history(vec![tariff(json)]);
        // November has 30 days: 15/30 · 60 = 30
        let half = bill(&history, Berlin, &[], at("2026-11-01 00:00"), at("2026-11-16 00:00"));
        assert!(close(half.fixed, 30.0));
        assert!(close(half.total, 30.0));
        // October 2026 in Berlin has 745 hours (DST ends on the 25th): the month is exactly 60,
        // and the 25-hour day 10-25 is 25/745 · 60 = 2.0134228187919465.
        let october = bill(&history, Berlin, &[], at("2026-10-01 00:00"), at("2026-11-01 00:00"));
        assert!(close(october.fixed, 60.0));
        let long_day = bill(&history, Berlin, &[], at("2026-10-25 00:00"), at("2026-10-26 00:00"));
        assert!(close(long_day.fixed, 25.0 / 745.0 * 60.0));
        // Two months half covered: 10-16 … 11-16 = 16/31 · 60 + 15/30 · 60 (October by hours:
        // 16 days · 24 h + 1 = 385 h of 745) = 385/745 · 60 + 30
        let across = bill(&history, Berlin, &[], at("2026-10-16 00:00"), at("2026-11-16 00:00"));
        assert!(close(across.fixed, 385.0 / 745.0 * 60.0 + 30.0));
    }

    #[test]
    fn the_currency_is_that_of_the_version_in_force_at_the_end() {
        let mut chf = tariff(flat(0.3));
        chf.currency = "CHF".into();
        chf.valid_from = NaiveDate::from_ymd_opt(2026, 12, 1);
        let history = history(vec![tariff(flat(0.2)), chf]);
        assert_eq!(bill(&history, Berlin, &[], at("2026-11-01 00:00"), at("2026-12-01 00:00")).currency, "EUR");
        assert_eq!(bill(&history, Berlin, &[], at("2026-11-01 00:00"), at("2026-12-01 00:15")).currency, "CHF");
    }
}
