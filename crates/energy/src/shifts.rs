//! The factory's shift calendar: named shifts by local time and weekday, versioned with
//! validity dates, turned into concrete instants across midnight and DST.
//!
//! A shift belongs to the local date it starts on; a shift whose `to` is not after its
//! `from` (22:00–06:00) ends on the next day. Wall times are resolved by
//! [`local_instant`]: a time inside the spring-forward gap maps to the first instant after
//! the gap, an ambiguous fall-back time to its first occurrence. So in Europe/Berlin the
//! 22:00–06:00 shift starting 2026-03-28 lasts 7 h and the one starting 2026-10-24 lasts 9 h.

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize};

use crate::calendar::{local_date, local_instant};
use crate::{Day, InvalidSetting, LocalMinute};

/// The longest shift name accepted.
pub const MAX_NAME_CHARS: usize = 64;
/// The most shifts one plan may hold.
pub const MAX_SHIFTS: usize = 48;

const DAY_MINUTES: u32 = 24 * 60;
const WEEK_MINUTES: u32 = 7 * DAY_MINUTES;

/// One version of the shift plan: the body of `PUT /energy/shifts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftPlan {
    /// The first local date this version applies to; absent = since always.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "strict_date")]
    pub valid_from: Option<NaiveDate>,
    pub shifts: Vec<Shift>,
}

/// Reads `YYYY-MM-DD` exactly (chrono alone would also take `2026-3-2`).
fn strict_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
    let text = String::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("`{text}` is not a date YYYY-MM-DD"));
    if text.len() != 10 {
        return Err(bad());
    }
    NaiveDate::parse_from_str(&text, "%Y-%m-%d").map(Some).map_err(|_| bad())
}

/// A named shift from `from` to `to` local time on the listed start days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    pub name: String,
    pub from: LocalMinute,
    /// The end; not after `from` means the shift ends on the next day.
    pub to: LocalMinute,
    /// The days the shift starts on; absent = every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<Day>>,
}

impl Shift {
    /// The days the shift starts on (all seven when `days` is absent).
    pub fn start_days(&self) -> &[Day] {
        self.days.as_deref().unwrap_or(&Day::ALL)
    }

    /// Whether the shift runs past midnight into the next day.
    pub fn crosses_midnight(&self) -> bool {
        self.to <= self.from
    }

    /// Nominal length in minutes (without DST): 480 for 22:00–06:00.
    pub fn nominal_minutes(&self) -> u32 {
        let (from, to) = (u32::from(self.from.minutes()), u32::from(self.to.minutes()));
        if to > from { to - from } else { to + DAY_MINUTES - from }
    }
}

/// A shift occurrence: `name` on the local `date` it starts, `[start_ms, end_ms)` clipped
/// to the queried range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftSpan {
    pub name: String,
    pub date: NaiveDate,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl ShiftPlan {
    /// Checks names (non-empty, unique, at most [`MAX_NAME_CHARS`]), times (`from` ≠ `to`,
    /// `from` before 24:00), days (non-empty, no repeats) and that no two shifts overlap in
    /// time, across midnight and the end of the week included. Errors name the field, e.g.
    /// `shifts[1].to`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.shifts.len() > MAX_SHIFTS {
            return Err(InvalidSetting::new("shifts", format!("at most {MAX_SHIFTS} shifts")));
        }
        for (i, shift) in self.shifts.iter().enumerate() {
            let field = |name: &str| format!("shifts[{i}].{name}");
            let name = shift.name.trim();
            if name.is_empty() {
                return Err(InvalidSetting::new(field("name"), "must not be empty"));
            }
            if name != shift.name {
                return Err(InvalidSetting::new(field("name"), "must not start or end with white space"));
            }
            if shift.name.chars().count() > MAX_NAME_CHARS {
                return Err(InvalidSetting::new(field("name"), format!("at most {MAX_NAME_CHARS} characters")));
            }
            if let Some(first) = self.shifts[..i].iter().position(|s| s.name == shift.name) {
                return Err(InvalidSetting::new(
                    field("name"),
                    format!("`{}` is already the name of shifts[{first}]", shift.name),
                ));
            }
            if shift.from == LocalMinute::END_OF_DAY {
                return Err(InvalidSetting::new(field("from"), "a shift cannot start at 24:00; use 00:00"));
            }
            if shift.from == shift.to {
                return Err(InvalidSetting::new(field("to"), "must differ from `from`"));
            }
            if let Some(days) = &shift.days {
                if days.is_empty() {
                    return Err(InvalidSetting::new(field("days"), "must list at least one day (or be left out)"));
                }
                for (d, day) in days.iter().enumerate() {
                    if days[..d].contains(day) {
                        return Err(InvalidSetting::new(format!("shifts[{i}].days[{d}]"), "day listed twice"));
                    }
                }
            }
        }
        self.check_overlaps()
    }

    /// Refuses two shifts running at the same time, on a circular week of minutes.
    fn check_overlaps(&self) -> Result<(), InvalidSetting> {
        for (j, later) in self.shifts.iter().enumerate() {
            for earlier in &self.shifts[..j] {
                for &day_j in later.start_days() {
                    for &day_i in earlier.start_days() {
                        let (a0, a1) = week_interval(earlier, day_i);
                        let (b0, b1) = week_interval(later, day_j);
                        // Compare with `a` shifted by a week either way so wrap-around meets.
                        for offset in [0, WEEK_MINUTES, 2 * WEEK_MINUTES] {
                            let (b0, b1) = (b0 + WEEK_MINUTES, b1 + WEEK_MINUTES);
                            let (a0, a1) = (a0 + offset, a1 + offset);
                            if a0 < b1 && b0 < a1 {
                                let part = if b0 >= a0 { "from" } else { "to" };
                                return Err(InvalidSetting::new(
                                    format!("shifts[{j}].{part}"),
                                    format!(
                                        "`{}` on {} overlaps `{}` on {}",
                                        later.name,
                                        day_name(day_j),
                                        earlier.name,
                                        day_name(day_i)
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Minutes since Monday 00:00 of one occurrence: `[start, end)`, end may pass the week.
fn week_interval(shift: &Shift, day: Day) -> (u32, u32) {
    let start = day_index(day) * DAY_MINUTES + u32::from(shift.from.minutes());
    (start, start + shift.nominal_minutes())
}

fn day_index(day: Day) -> u32 {
    Day::ALL.iter().position(|d| *d == day).map_or(0, |i| i as u32)
}

fn day_name(day: Day) -> &'static str {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][day_index(day) as usize]
}

/// The factory's shift plan versions, sorted by `valid_from` (only the first may have none).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShiftCalendar {
    pub versions: Vec<ShiftPlan>,
}

impl ShiftCalendar {
    /// Validates every version and sorts them; refuses two versions with the same
    /// `valid_from` (fields are prefixed `versions[i].`).
    pub fn new(mut versions: Vec<ShiftPlan>) -> Result<Self, InvalidSetting> {
        for (i, plan) in versions.iter().enumerate() {
            plan.validate().map_err(|e| InvalidSetting::new(format!("versions[{i}].{}", e.field), e.message))?;
        }
        versions.sort_by_key(|p| p.valid_from);
        for pair in versions.windows(2) {
            if pair[0].valid_from == pair[1].valid_from {
                return Err(InvalidSetting::new(
                    "valid_from",
                    match pair[0].valid_from {
                        Some(d) => format!("two versions valid from {d}"),
                        None => "two versions without valid_from".to_owned(),
                    },
                ));
            }
        }
        Ok(Self { versions })
    }

    /// The version in force on a local date: the latest `valid_from` ≤ `date` (a version
    /// without `valid_from` counts as since always). `None` before the first version.
    pub fn version_on(&self, date: NaiveDate) -> Option<&ShiftPlan> {
        self.versions.iter().filter(|p| p.valid_from.is_none_or(|from| from <= date)).max_by_key(|p| p.valid_from)
    }

    /// The shift occurrences overlapping `[from_ms, to_ms)`, clipped to it and sorted by
    /// start. The version is the one in force on the shift's local start date; an
    /// occurrence that DST shrinks to nothing is left out.
    pub fn spans(&self, tz: Tz, from_ms: i64, to_ms: i64) -> Vec<ShiftSpan> {
        let mut out = Vec::new();
        if to_ms <= from_ms {
            return out;
        }
        let (Some(first), Some(last)) = (local_date(tz, from_ms), local_date(tz, to_ms - 1)) else {
            return out;
        };
        // A shift that started the day before may still be running at `from`.
        let mut date = first.pred_opt().unwrap_or(first);
        while date <= last {
            if let Some(plan) = self.version_on(date) {
                let day = Day::of(date.weekday());
                for shift in plan.shifts.iter().filter(|s| s.start_days().contains(&day)) {
                    let start = local_instant(tz, date, shift.from);
                    let end_date = if shift.crosses_midnight() { date.succ_opt().unwrap_or(date) } else { date };
                    let end = local_instant(tz, end_date, shift.to);
                    let (start_ms, end_ms) = (start.max(from_ms), end.min(to_ms));
                    if start_ms < end_ms {
                        out.push(ShiftSpan { name: shift.name.clone(), date, start_ms, end_ms });
                    }
                }
            }
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        out.sort_by_key(|s| s.start_ms);
        out
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use chrono_tz::Europe::Berlin;

    use super::*;

    const HOUR: i64 = 3_600_000;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap().timestamp_millis()
    }

    fn plan(json: &str) -> ShiftPlan {
        serde_json::from_str(json).unwrap()
    }

    fn three_shifts() -> ShiftPlan {
        plan(
            r#"{"shifts": [
                {"name": "early", "from": "06:00", "to": "14:00"},
                {"name": "late", "from": "14:00", "to": "22:00"},
                {"name": "night", "from": "22:00", "to": "06:00"}]}"#,
        )
    }

    fn field(json: &str) -> String {
        plan(json).validate().unwrap_err().field
    }

    #[test]
    fn the_put_body_parses_strictly_and_round_trips() {
        let p = plan(
            r#"{"valid_from": "2026-03-02", "shifts": [{"name": "early", "from": "06:00", "to": "14:00", "days": ["mon", "tue"]}]}"#,
        );
        assert_eq!(p.valid_from, NaiveDate::from_ymd_opt(2026, 3, 2));
        assert_eq!(p.shifts[0].start_days(), &[Day::Mon, Day::Tue]);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::to_value(plan(&serde_json::to_string(&p).unwrap())).unwrap()
        );
        for bad in [
            r#"{"shifts": [], "extra": 1}"#,
            r#"{"shifts": [{"name": "a", "from": "06:00", "to": "14:00", "colour": "red"}]}"#,
            r#"{"shifts": [{"name": "a", "from": "06:10", "to": "14:00"}]}"#,
            r#"{"shifts": [{"name": "a", "from": "06:00", "to": "14:00", "days": ["monday"]}]}"#,
            r#"{"valid_from": "2026-3-2", "shifts": []}"#,
        ] {
            assert!(serde_json::from_str::<ShiftPlan>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(three_shifts().validate().is_ok());
        assert_eq!(field(r#"{"shifts": [{"name": " ", "from": "06:00", "to": "14:00"}]}"#), "shifts[0].name");
        assert_eq!(
            field(
                r#"{"shifts": [{"name": "a", "from": "06:00", "to": "14:00"}, {"name": "a", "from": "14:00", "to": "22:00"}]}"#
            ),
            "shifts[1].name"
        );
        assert_eq!(field(r#"{"shifts": [{"name": "a", "from": "06:00", "to": "06:00"}]}"#), "shifts[0].to");
        assert_eq!(field(r#"{"shifts": [{"name": "a", "from": "24:00", "to": "06:00"}]}"#), "shifts[0].from");
        assert_eq!(
            field(r#"{"shifts": [{"name": "a", "from": "06:00", "to": "14:00", "days": []}]}"#),
            "shifts[0].days"
        );
        assert_eq!(
            field(r#"{"shifts": [{"name": "a", "from": "06:00", "to": "14:00", "days": ["mon", "mon"]}]}"#),
            "shifts[0].days[1]"
        );
        // 13:00 lies inside early (06–14): the later shift's `from` is the culprit.
        assert_eq!(
            field(
                r#"{"shifts": [{"name": "early", "from": "06:00", "to": "14:00"}, {"name": "b", "from": "13:00", "to": "20:00"}]}"#
            ),
            "shifts[1].from"
        );
        // b (03:00–07:00) ends inside early (06–14).
        assert_eq!(
            field(
                r#"{"shifts": [{"name": "early", "from": "06:00", "to": "14:00"}, {"name": "b", "from": "03:00", "to": "07:00"}]}"#
            ),
            "shifts[1].to"
        );
        // Night 22–06 starting Sunday runs into Monday 05:00 of the next week.
        assert_eq!(
            field(
                r#"{"shifts": [{"name": "night", "from": "22:00", "to": "06:00", "days": ["sun"]},
                               {"name": "early", "from": "05:00", "to": "13:00", "days": ["mon"]}]}"#
            ),
            "shifts[1].from"
        );
        // The same shifts on days that do not meet are fine.
        assert!(
            plan(
                r#"{"shifts": [{"name": "night", "from": "22:00", "to": "06:00", "days": ["fri"]},
                               {"name": "early", "from": "05:00", "to": "13:00", "days": ["mon"]}]}"#
            )
            .validate()
            .is_ok()
        );
        // A whole-day shift is allowed.
        assert!(plan(r#"{"shifts": [{"name": "all", "from": "00:00", "to": "24:00"}]}"#).validate().is_ok());
    }

    #[test]
    fn a_night_shift_crosses_midnight_on_an_ordinary_day() {
        let calendar = ShiftCalendar::new(vec![three_shifts()]).unwrap();
        // 2026-01-05 22:00 CET = 21:00Z → 01-06 06:00 CET = 05:00Z: 8 h.
        let s = calendar.spans(Berlin, utc(2026, 1, 5, 20, 0), utc(2026, 1, 6, 6, 0));
        let night = s.iter().find(|s| s.name == "night").unwrap();
        assert_eq!((night.start_ms, night.end_ms), (utc(2026, 1, 5, 21, 0), utc(2026, 1, 6, 5, 0)));
        assert_eq!(night.date, NaiveDate::from_ymd_opt(2026, 1, 5).unwrap());
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["late", "night", "early"]);
    }

    #[test]
    fn night_shifts_over_the_2026_dst_changes_last_7_and_9_hours() {
        let calendar = ShiftCalendar::new(vec![three_shifts()]).unwrap();
        let night_from = |y, m, d| {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let s = calendar.spans(Berlin, utc(y, m, d, 0, 0) - 2 * 86_400_000, utc(y, m, d, 0, 0) + 3 * 86_400_000);
            s.into_iter().find(|s| s.name == "night" && s.date == date).unwrap()
        };
        // 03-28 22:00 CET = 21:00Z → 03-29 06:00 CEST = 04:00Z: 7 h.
        let spring = night_from(2026, 3, 28);
        assert_eq!((spring.start_ms, spring.end_ms), (utc(2026, 3, 28, 21, 0), utc(2026, 3, 29, 4, 0)));
        assert_eq!(spring.end_ms - spring.start_ms, 7 * HOUR);
        // 10-24 22:00 CEST = 20:00Z → 10-25 06:00 CET = 05:00Z: 9 h.
        let fall = night_from(2026, 10, 24);
        assert_eq!((fall.start_ms, fall.end_ms), (utc(2026, 10, 24, 20, 0), utc(2026, 10, 25, 5, 0)));
        assert_eq!(fall.end_ms - fall.start_ms, 9 * HOUR);
        // The day shifts on the change days keep 8 h: early 03-29 06:00 CEST = 04:00Z … 12:00Z.
        let early: Vec<ShiftSpan> = calendar
            .spans(Berlin, utc(2026, 3, 29, 0, 0), utc(2026, 3, 30, 0, 0))
            .into_iter()
            .filter(|s| s.name == "early")
            .collect();
        assert_eq!((early[0].start_ms, early[0].end_ms), (utc(2026, 3, 29, 4, 0), utc(2026, 3, 29, 12, 0)));
    }

    #[test]
    fn shifts_starting_in_the_gap_or_the_repeated_hour() {
        let calendar =
            ShiftCalendar::new(vec![plan(r#"{"shifts": [{"name": "odd", "from": "02:30", "to": "10:00"}]}"#)]).unwrap();
        let on = |m, d| {
            let s = calendar.spans(Berlin, utc(2026, m, d, 0, 0) - 86_400_000, utc(2026, m, d, 0, 0) + 86_400_000);
            let date = NaiveDate::from_ymd_opt(2026, m, d).unwrap();
            s.into_iter().find(|s| s.date == date).map(|s| (s.start_ms, s.end_ms)).unwrap()
        };
        // 02:30 does not exist on 03-29: start at the first instant after the gap, 01:00Z
        // (03:00 CEST); end 10:00 CEST = 08:00Z; 7 h.
        assert_eq!(on(3, 29), (utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 8, 0)));
        // 02:30 happens twice on 10-25: first occurrence 00:30Z (CEST); end 10:00 CET = 09:00Z.
        assert_eq!(on(10, 25), (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 9, 0)));
    }

    #[test]
    fn versions_apply_by_the_local_start_date_and_spans_clip() {
        let calendar = ShiftCalendar::new(vec![
            plan(r#"{"valid_from": "2026-03-02", "shifts": [{"name": "early", "from": "07:00", "to": "15:00"}]}"#),
            plan(r#"{"shifts": [{"name": "early", "from": "06:00", "to": "14:00"}]}"#),
        ])
        .unwrap();
        assert_eq!(calendar.versions[0].valid_from, None);
        // 03-01 06:00 CET = 05:00Z (old version); 03-02 07:00 CET = 06:00Z (new version).
        // The range starts at 03-01 09:00Z, so the first is clipped to 09:00Z … 13:00Z.
        let s = calendar.spans(Berlin, utc(2026, 3, 1, 9, 0), utc(2026, 3, 3, 0, 0));
        let got: Vec<(i64, i64)> = s.iter().map(|s| (s.start_ms, s.end_ms)).collect();
        assert_eq!(
            got,
            vec![(utc(2026, 3, 1, 9, 0), utc(2026, 3, 1, 13, 0)), (utc(2026, 3, 2, 6, 0), utc(2026, 3, 2, 14, 0))]
        );
        // Two versions without a date, or with the same date, are refused; so is a bad version.
        let undated = || plan(r#"{"shifts": []}"#);
        assert_eq!(ShiftCalendar::new(vec![undated(), undated()]).unwrap_err().field, "valid_from");
        let bad = plan(r#"{"shifts": [{"name": "", "from": "06:00", "to": "14:00"}]}"#);
        assert_eq!(ShiftCalendar::new(vec![undated(), bad]).unwrap_err().field, "versions[1].shifts[0].name");
        // Before the first dated version there are no shifts.
        let later_only = ShiftCalendar::new(vec![plan(
            r#"{"valid_from": "2026-03-02", "shifts": [{"name": "early", "from": "07:00", "to": "15:00"}]}"#,
        )])
        .unwrap();
        assert!(later_only.spans(Berlin, utc(2026, 3, 1, 0, 0), utc(2026, 3, 1, 23, 0)).is_empty());
    }
}
