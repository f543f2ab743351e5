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
