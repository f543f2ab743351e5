//! Grid emission factors (kg CO2e per kWh), versioned with validity dates, and the CO2 of
//! energy slots. A slot takes the factor of its start's local hour / month under the
//! version in force on its local date.

use chrono::{Datelike, NaiveDate, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::tariff::{check_version_order, local_time, non_negative};
use crate::{InvalidSetting, Slot};

/// One version of a factory's emission factor (`PUT /energy/emission-factor`): exactly one
/// of `kg_per_kwh` (constant), `hourly` (24 values by local hour, 0 = 00:00–01:00) or
/// `monthly` (12 values, January first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmissionFactor {
    /// The first local date this version is in force; absent = since always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kg_per_kwh: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<Vec<f64>>,
}

impl EmissionFactor {
    /// Exactly one form; values finite and ≥ 0; 24 hourly or 12 monthly values. The error
    /// names the field (`hourly[5]`).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let forms = [self.kg_per_kwh.is_some(), self.hourly.is_some(), self.monthly.is_some()];
        match forms.iter().filter(|&&given| given).count() {
            0 => {
                return Err(InvalidSetting::new(
                    "kg_per_kwh",
                    "give one of `kg_per_kwh`, `hourly` (24 values) or `monthly` (12 values)",
                ));
            }
            1 => {}
            _ => {
                let second = if self.kg_per_kwh.is_some() && self.hourly.is_some() { "hourly" } else { "monthly" };
                return Err(InvalidSetting::new(second, "give only one of `kg_per_kwh`, `hourly` or `monthly`"));
            }
        }
        if let Some(value) = self.kg_per_kwh {
            non_negative(value, "kg_per_kwh")?;
        }
        if let Some(values) = &self.hourly {
            table(values, 24, "hourly", "local hour 0 … 23")?;
        }
        if let Some(values) = &self.monthly {
            table(values, 12, "monthly", "month, January first")?;
        }
        Ok(())
    }

    /// The factor (kg CO2e per kWh) of the slot starting at `slot_start_ms`, by the local
    /// hour / month of its start (NaN for a version that does not validate).
    pub fn factor_at(&self, tz: Tz, slot_start_ms: i64) -> f64 {
        let local = local_time(tz, slot_start_ms);
        let pick = |values: &Vec<f64>, index: u32| values.get(index as usize).copied().unwrap_or(f64::NAN);
        match (self.kg_per_kwh, &self.hourly, &self.monthly) {
            (Some(constant), None, None) => constant,
            (None, Some(hourly), None) => pick(hourly, local.hour()),
            (None, None, Some(monthly)) => pick(monthly, local.month0()),
            _ => f64::NAN,
        }
    }
}

fn table(values: &[f64], len: usize, field: &str, what: &str) -> Result<(), InvalidSetting> {
    if values.len() != len {
        return Err(InvalidSetting::new(field, format!("needs {len} values, one per {what}; got {}", values.len())));
    }
    for (i, &value) in values.iter().enumerate() {
        non_negative(value, &format!("{field}[{i}]"))?;
    }
    Ok(())
}

/// A factory's emission factor versions, oldest first. Built only through
/// [`EmissionHistory::new`], so it is never empty and every version validates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<EmissionFactor>", into = "Vec<EmissionFactor>")]
pub struct EmissionHistory {
    versions: Vec<EmissionFactor>,
}

impl TryFrom<Vec<EmissionFactor>> for EmissionHistory {
    type Error = InvalidSetting;

    fn try_from(versions: Vec<EmissionFactor>) -> Result<Self, Self::Error> {
        EmissionHistory::new(versions)
    }
}

impl From<EmissionHistory> for Vec<EmissionFactor> {
    fn from(history: EmissionHistory) -> Self {
        history.versions
    }
}

impl EmissionHistory {
    /// Validates every version (errors are prefixed `versions[i].`) and their order: only
    /// the first may lack `valid_from`; later ones have strictly increasing dates.
    pub fn new(versions: Vec<EmissionFactor>) -> Result<Self, InvalidSetting> {
        for (i, version) in versions.iter().enumerate() {
            version.validate().map_err(|e| InvalidSetting::new(format!("versions[{i}].{}", e.field), e.message))?;
        }
        check_version_order(versions.iter().map(|v| v.valid_from))?;
        Ok(EmissionHistory { versions })
    }

    /// One version in force since always.
    pub fn single(factor: EmissionFactor) -> Result<Self, InvalidSetting> {
        EmissionHistory::new(vec![factor])
    }

    pub fn versions(&self) -> &[EmissionFactor] {
        &self.versions
    }

    /// The version in force on a local date (latest `valid_from` ≤ the date; dates before
    /// the first version's `valid_from` fall to the first version).
    pub fn in_force(&self, local_date: NaiveDate) -> &EmissionFactor {
        let index = self.versions.iter().rposition(|v| v.valid_from.is_none_or(|from| from <= local_date)).unwrap_or(0);
        // `new` refuses an empty history, so index 0 exists.
        &self.versions[index]
    }

    /// The factor of the slot starting at `slot_start_ms` under the version in force on
    /// its local date.
    pub fn factor_at(&self, tz: Tz, slot_start_ms: i64) -> f64 {
        self.in_force(local_time(tz, slot_start_ms).date_naive()).factor_at(tz, slot_start_ms)
    }
}

/// kg CO2e of slots: Σ kWh × the factor of each slot.
pub fn co2_kg(history: &EmissionHistory, tz: Tz, slots: &[Slot]) -> f64 {
    slots.iter().map(|slot| slot.kwh * history.factor_at(tz, slot.start_ms)).sum()
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDateTime, TimeZone};
    use chrono_tz::Europe::Berlin;

    use super::*;
    use crate::SLOT_MS;

    fn utc(text: &str) -> i64 {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap().and_utc().timestamp_millis()
    }

    fn slot(start_ms: i64, kwh: f64) -> Slot {
        Slot { start_ms, kwh, idle_kwh: 0.0, covered_ms: SLOT_MS }
    }

    fn history(json: serde_json::Value) -> EmissionHistory {
        let factor: EmissionFactor = serde_json::from_value(json).unwrap();
        EmissionHistory::single(factor).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_constant_factor() {
        let history = history(serde_json::json!({"kg_per_kwh": 0.4}));
        // (10 + 5) kWh · 0.4 = 6.0 kg
        let slots = [slot(utc("2026-10-25 00:00"), 10.0), slot(utc("2026-10-25 01:00"), 5.0)];
        assert!(close(co2_kg(&history, Berlin, &slots), 6.0));
    }

    #[test]
    fn an_hourly_factor_follows_the_local_hour_across_the_end_of_dst() {
        // hourly[h] = h / 100 kg/kWh.
        let hourly: Vec<f64> = (0..24).map(|h| f64::from(h) / 100.0).collect();
        let history = history(serde_json::json!({"hourly": hourly}));
        // On 2026-10-25 Berlin goes from CEST (+2) back to CET (+1) at 01:00 UTC, so the
        // local hour 02 happens twice.
        let slots = [
            slot(utc("2026-10-24 23:30"), 10.0), // 01:30 CEST: hour 1 → 10 · 0.01 = 0.1
            slot(utc("2026-10-25 00:00"), 10.0), // 02:00 CEST: hour 2 → 10 · 0.02 = 0.2
            slot(utc("2026-10-25 01:00"), 10.0), // 02:00 CET:  hour 2 → 10 · 0.02 = 0.2
            slot(utc("2026-10-25 02:00"), 10.0), // 03:00 CET:  hour 3 → 10 · 0.03 = 0.3
        ];
        // 0.1 + 0.2 + 0.2 + 0.3 = 0.8
        assert!(close(co2_kg(&history, Berlin, &slots), 0.8));
        assert!(close(history.factor_at(Berlin, utc("2026-10-25 00:45")), 0.02));
        assert!(close(history.factor_at(Berlin, utc("2026-10-25 01:45")), 0.02));
    }

    #[test]
    fn a_monthly_factor_follows_the_local_month() {
        // monthly[m] = (m + 1) / 10: October 1.0, November 1.1.
        let monthly: Vec<f64> = (0..12).map(|m| f64::from(m + 1) / 10.0).collect();
        let history = history(serde_json::json!({"monthly": monthly}));
        let slots = [
            slot(utc("2026-10-31 22:45"), 2.0), // 23:45 CET on 10-31: October → 2 · 1.0 = 2.0
            slot(utc("2026-10-31 23:30"), 2.0), // 00:30 CET on 11-01: November → 2 · 1.1 = 2.2
        ];
        // 2.0 + 2.2 = 4.2
        assert!(close(co2_kg(&history, Berlin, &slots), 4.2));
    }

    #[test]
    fn a_new_version_does_not_change_the_past() {
        let first: EmissionFactor = serde_json::from_value(serde_json::json!({"kg_per_kwh": 0.4})).unwrap();
        let second: EmissionFactor =
            serde_json::from_value(serde_json::json!({"valid_from": "2026-11-15", "kg_per_kwh": 0.2})).unwrap();
        let history = EmissionHistory::new(vec![first, second]).unwrap();
        let before = Berlin.with_ymd_and_hms(2026, 11, 14, 23, 45, 0).unwrap().timestamp_millis();
        let after = Berlin.with_ymd_and_hms(2026, 11, 15, 0, 0, 0).unwrap().timestamp_millis();
        // 10 · 0.4 + 10 · 0.2 = 6.0
        assert!(close(co2_kg(&history, Berlin, &[slot(before, 10.0), slot(after, 10.0)]), 6.0));
    }

    #[test]
    fn validation_names_the_field() {
        let check = |json: serde_json::Value| {
            serde_json::from_value::<EmissionFactor>(json).unwrap().validate().map_err(|e| e.field)
        };
        assert_eq!(check(serde_json::json!({"kg_per_kwh": 0.38})), Ok(()));
        assert_eq!(check(serde_json::json!({})), Err("kg_per_kwh".into()));
        assert_eq!(check(serde_json::json!({"kg_per_kwh": 0.38, "hourly": vec![0.1; 24]})), Err("hourly".into()));
        assert_eq!(check(serde_json::json!({"kg_per_kwh": 0.38, "monthly": vec![0.1; 12]})), Err("monthly".into()));
        assert_eq!(check(serde_json::json!({"hourly": vec![0.1; 23]})), Err("hourly".into()));
        assert_eq!(check(serde_json::json!({"monthly": vec![0.1; 24]})), Err("monthly".into()));
        assert_eq!(check(serde_json::json!({"kg_per_kwh": -0.1})), Err("kg_per_kwh".into()));
        let mut hourly = vec![0.1; 24];
        hourly[5] = -1.0;
        assert_eq!(check(serde_json::json!({"hourly": hourly})), Err("hourly[5]".into()));
        let not_finite =
            EmissionFactor { valid_from: None, kg_per_kwh: None, hourly: None, monthly: Some(vec![f64::NAN; 12]) };
        assert_eq!(not_finite.validate().unwrap_err().field, "monthly[0]");
        assert!(serde_json::from_value::<EmissionFactor>(serde_json::json!({"kg_per_kwh": 0.1, "unit": "g"})).is_err());
        // Histories: order and prefixed fields.
        let dated = |date: &str| EmissionFactor {
            valid_from: Some(date.parse().unwrap()),
            kg_per_kwh: Some(0.1),
            hourly: None,
            monthly: None,
        };
        let error = EmissionHistory::new(vec![dated("2026-02-01"), dated("2026-01-01")]).unwrap_err();
        assert_eq!(error.field, "versions[1].valid_from");
        let error = EmissionHistory::new(vec![not_finite]).unwrap_err();
        assert_eq!(error.field, "versions[0].monthly[0]");
    }
}
