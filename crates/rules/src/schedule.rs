//! Schedules: active days, local time windows (also across midnight) and cron expressions,
//! all in the factory's (or an explicit IANA) time zone. Local time is derived from the UTC
//! instant with the tz database, so DST changes need no special case: a window
//! `06:00–22:00` is 06:00–22:00 on the wall clock on both sides of a change.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Weekday};
use chrono_tz::Tz;
use croner::Cron;

use crate::model::{Day, OutsideSchedule, Schedule};

/// A schedule ready for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledSchedule {
    /// `None` = the factory's time zone.
    tz: Option<Tz>,
    /// Bit per weekday (Mon = bit 0); 0 = every day.
    days: u8,
    /// Minutes since local midnight; `from >= to` crosses midnight.
    windows: Vec<(u32, u32)>,
    crons: Vec<Cron>,
    pub outside: OutsideSchedule,
    /// Active in every minute of a reference week (then no timer watches for its end).
    always: bool,
}

/// Parses `"HH:MM"` (00:00 … 24:00) into minutes since midnight.
pub fn parse_hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// Parses an IANA time zone name.
pub fn parse_tz(text: &str) -> Option<Tz> {
    Tz::from_str(text).ok()
}

/// Parses a 5-field cron expression (seconds are not used: schedules are per minute).
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    if text.split_whitespace().count() != 5 {
        return Err("must have 5 fields: minute hour day-of-month month day-of-week".into());
    }
    Cron::from_str(text).map_err(|e| e.to_string())
}

fn day_bit(day: Weekday) -> u8 {
    1 << day.num_days_from_monday()
}

fn day_of(d: Day) -> Weekday {
    match d {
        Day::Mon => Weekday::Mon,
        Day::Tue => Weekday::Tue,
        Day::Wed => Weekday::Wed,
        Day::Thu => Weekday::Thu,
        Day::Fri => Weekday::Fri,
        Day::Sat => Weekday::Sat,
        Day::Sun => Weekday::Sun,
    }
}

impl CompiledSchedule {
    /// Compiles a schedule; the error names the bad field (relative to `schedule`).
    pub fn compile(schedule: &Schedule) -> Result<Self, (String, String)> {
        let tz = if schedule.timezone == "factory" {
            None
        } else {
            Some(parse_tz(&schedule.timezone).ok_or_else(|| {
                ("timezone".to_string(), "must be \"factory\" or an IANA time zone such as Europe/Berlin".to_string())
            })?)
        };
        let days = schedule.days.iter().fold(0u8, |acc, d| acc | day_bit(day_of(*d)));
        let mut windows = Vec::with_capacity(schedule.windows.len());
        for (i, w) in schedule.windows.iter().enumerate() {
            let from = parse_hhmm(&w.from)
                .filter(|m| *m < 1440)
                .ok_or_else(|| (format!("windows[{i}].from"), "must be HH:MM (00:00–23:59)".to_string()))?;
            let to = parse_hhmm(&w.to)
                .ok_or_else(|| (format!("windows[{i}].to"), "must be HH:MM (00:00–24:00)".to_string()))?;
            windows.push((from, to));
        }
        let mut crons = Vec::with_capacity(schedule.cron.len());
        for (i, c) in schedule.cron.iter().enumerate() {
            crons.push(parse_cron(c).map_err(|e| (format!("cron[{i}]"), e))?);
        }
        let mut compiled = Self { tz, days, windows, crons, outside: schedule.outside_schedule, always: false };
        // 2026-01-05 is a Monday; one week of minutes in UTC (the offset does not change coverage).
        const WEEK_START_MS: i64 = 1_767_571_200_000;
        let all_days = compiled.days == 0 || compiled.days == 0x7f;
        compiled.always = if !all_days {
            false
        } else if compiled.windows.is_empty() && compiled.crons.is_empty() {
            true
        } else if compiled.outside == OutsideSchedule::Keep {
            // Only used to decide on an end-of-schedule timer, which "keep" never needs.
            false
        } else {
            (0..7 * 1440).all(|m| compiled.is_active_in(WEEK_START_MS + m * 60_000, chrono_tz::UTC, true))
        };
        Ok(compiled)
    }

    /// True when the schedule never ends (so an open alert needs no end-of-schedule timer).
    pub fn always_active(&self) -> bool {
        self.always
    }

    /// Whether the schedule is active at `ts_ms` (UTC), given the factory's time zone.
    pub fn is_active(&self, ts_ms: i64, factory_tz: Tz) -> bool {
        if self.always {
            return true;
        }
        self.is_active_in(ts_ms, factory_tz, false)
    }

    fn is_active_in(&self, ts_ms: i64, factory_tz: Tz, force_tz: bool) -> bool {
        let tz = if force_tz { factory_tz } else { self.tz.unwrap_or(factory_tz) };
        let Some(utc) = DateTime::from_timestamp_millis(ts_ms) else {
            return false;
        };
        let local = utc.with_timezone(&tz);
        let today = local.weekday();
        let minute = local.hour() * 60 + local.minute();
        let day_ok = |d: Weekday| self.days == 0 || self.days & day_bit(d) != 0;
        let in_window = if self.windows.is_empty() {
            day_ok(today)
        } else {
            self.windows.iter().any(|&(from, to)| {
                if from < to {
                    minute >= from && minute < to && day_ok(today)
                } else {
                    (minute >= from && day_ok(today)) || (minute < to && day_ok(today.pred()))
                }
            })
        };
        if !in_window {
            return false;
        }
        if self.crons.is_empty() {
            return true;
        }
        let Some(minute_start) = local.with_second(0).and_then(|t| t.with_nanosecond(0)) else {
            return false;
        };
        self.crons.iter().any(|c| c.is_time_matching(&minute_start).unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TimeWindow;

    fn sched(tz: &str, days: Vec<Day>, windows: &[(&str, &str)], cron: &[&str]) -> CompiledSchedule {
        sched_with(tz, days, windows, cron, OutsideSchedule::Keep)
    }

    fn sched_with(
        tz: &str,
        days: Vec<Day>,
        windows: &[(&str, &str)],
        cron: &[&str],
        outside_schedule: OutsideSchedule,
    ) -> CompiledSchedule {
        let s = Schedule {
            timezone: tz.into(),
            days,
            windows: windows.iter().map(|(f, t)| TimeWindow { from: (*f).into(), to: (*t).into() }).collect(),
            cron: cron.iter().map(|c| (*c).to_string()).collect(),
            outside_schedule,
        };
        match CompiledSchedule::compile(&s) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn ms(text: &str) -> i64 {
        factoryops_types::parse_rfc3339_ms(text).unwrap_or_else(|| panic!("bad time {text}"))
    }

    #[test]
    fn hhmm() {
        assert_eq!(parse_hhmm("06:30"), Some(390));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("24:01"), None);
        assert_eq!(parse_hhmm("6:30"), None);
        assert_eq!(parse_hhmm("06:60"), None);
        assert_eq!(parse_hhmm("ab:cd"), None);
    }

    #[test]
    fn berlin_spring_forward_2026() {
        // 2026-03-29: 02:00 CET → 03:00 CEST. Window 06:00–22:00 local.
        let s = sched("Europe/Berlin", vec![], &[("06:00", "22:00")], &[]);
        let utc = chrono_tz::UTC;
        // Saturday before: 06:00 CET = 05:00 UTC.
        assert!(!s.is_active(ms("2026-03-28T04:59:00Z"), utc));
        assert!(s.is_active(ms("2026-03-28T05:00:00Z"), utc));
        // Sunday (after the change): 06:00 CEST = 04:00 UTC.
        assert!(!s.is_active(ms("2026-03-29T03:59:00Z"), utc));
        assert!(s.is_active(ms("2026-03-29T04:00:00Z"), utc));
        assert!(s.is_active(ms("2026-03-29T19:59:00Z"), utc));
        assert!(!s.is_active(ms("2026-03-29T20:00:00Z"), utc));
    }

    #[test]
    fn berlin_fall_back_2026_and_factory_zone() {
        // 2026-10-25: 03:00 CEST → 02:00 CET. Use the factory zone.
        let s = sched("factory", vec![Day::Sun], &[("06:00", "22:00")], &[]);
        let berlin = chrono_tz::Europe::Berlin;
        assert!(!s.is_active(ms("2026-10-25T04:59:00Z"), berlin));
        assert!(s.is_active(ms("2026-10-25T05:00:00Z"), berlin)); // 06:00 CET
        assert!(s.is_active(ms("2026-10-25T20:59:00Z"), berlin));
        assert!(!s.is_active(ms("2026-10-25T21:00:00Z"), berlin)); // 22:00 CET
        // The day before (Saturday) is not in `days`.
        assert!(!s.is_active(ms("2026-10-24T10:00:00Z"), berlin));
    }

    #[test]
    fn berlin_window_inside_the_repeated_hour() {
        // 02:00–03:00 local happens twice on 2026-10-25: 00:00–01:00 UTC (CEST) and 01:00–02:00 UTC (CET).
        let s = sched("Europe/Berlin", vec![], &[("02:00", "03:00")], &[]);
        let utc = chrono_tz::UTC;
        assert!(s.is_active(ms("2026-10-25T00:30:00Z"), utc));
        assert!(s.is_active(ms("2026-10-25T01:30:00Z"), utc));
        assert!(!s.is_active(ms("2026-10-25T02:30:00Z"), utc));
        // And not at all on 2026-03-29 (skipped hour).
        for minute in (0..24 * 60).step_by(15) {
            let t = ms("2026-03-29T00:00:00Z") + minute * 60_000;
            if s.is_active(t, utc) {
                panic!("active at {}", factoryops_types::format_rfc3339_ms(t));
            }
        }
    }

    #[test]
    fn new_york_2026_transitions() {
        let s = sched("America/New_York", vec![], &[("08:00", "17:00")], &[]);
        let utc = chrono_tz::UTC;
        // Mar 8: EST (−5) → EDT (−4) at 02:00. 08:00 EDT = 12:00 UTC.
        assert!(!s.is_active(ms("2026-03-07T12:30:00Z"), utc)); // 07:30 EST
        assert!(s.is_active(ms("2026-03-07T13:00:00Z"), utc)); // 08:00 EST
        assert!(!s.is_active(ms("2026-03-08T11:59:00Z"), utc));
        assert!(s.is_active(ms("2026-03-08T12:00:00Z"), utc)); // 08:00 EDT
        assert!(!s.is_active(ms("2026-03-08T21:00:00Z"), utc)); // 17:00 EDT
        // Nov 1: EDT → EST. 08:00 EST = 13:00 UTC.
        assert!(s.is_active(ms("2026-10-31T12:00:00Z"), utc)); // 08:00 EDT
        assert!(!s.is_active(ms("2026-11-01T12:30:00Z"), utc)); // 07:30 EST
        assert!(s.is_active(ms("2026-11-01T13:00:00Z"), utc));
        assert!(s.is_active(ms("2026-11-01T21:59:00Z"), utc)); // 16:59 EST
        assert!(!s.is_active(ms("2026-11-01T22:00:00Z"), utc));
    }

    #[test]
    fn overnight_window_belongs_to_its_start_day() {
        // Friday 22:00 → Saturday 06:00 in Berlin, only Fridays.
        let s = sched("Europe/Berlin", vec![Day::Fri], &[("22:00", "06:00")], &[]);
        let utc = chrono_tz::UTC;
        assert!(s.is_active(ms("2026-11-27T21:30:00Z"), utc)); // Fri 22:30 CET
        assert!(s.is_active(ms("2026-11-28T04:59:00Z"), utc)); // Sat 05:59 CET
        assert!(!s.is_active(ms("2026-11-28T05:00:00Z"), utc)); // Sat 06:00
        assert!(!s.is_active(ms("2026-11-28T21:30:00Z"), utc)); // Sat 22:30: Saturday is not a start day
        assert!(!s.is_active(ms("2026-11-27T04:00:00Z"), utc)); // Fri 05:00 belongs to Thursday's window
    }

    #[test]
    fn cron_in_local_time_across_dst() {
        // Weekdays 07:00–07:59 local (New York).
        let s = sched("America/New_York", vec![], &[], &["* 7 * * 1-5"]);
        let utc = chrono_tz::UTC;
        assert!(s.is_active(ms("2026-03-06T12:15:00Z"), utc)); // Fri 07:15 EST
        assert!(s.is_active(ms("2026-03-09T11:15:30Z"), utc)); // Mon 07:15 EDT
        assert!(!s.is_active(ms("2026-03-09T12:15:00Z"), utc)); // Mon 08:15 EDT
        assert!(!s.is_active(ms("2026-03-08T11:15:00Z"), utc)); // Sunday
    }

    #[test]
    fn always_active_schedules_are_recognised() {
        assert!(sched("factory", vec![], &[], &[]).always_active());
        let r = OutsideSchedule::Resolve;
        assert!(sched_with("Europe/Berlin", vec![], &[("00:00", "24:00")], &["* * * * *"], r).always_active());
        assert!(sched_with("UTC", vec![], &[("06:00", "22:00"), ("22:00", "06:00")], &[], r).always_active());
        assert!(!sched("factory", vec![Day::Mon], &[], &[]).always_active());
        assert!(!sched("factory", vec![], &[("06:00", "22:00")], &[]).always_active());
        assert!(!sched("factory", vec![], &[], &["* 6 * * *"]).always_active());
    }

    #[test]
    fn bad_input_is_reported() {
        let mut s = Schedule {
            timezone: "Mars/Olympus".into(),
            days: vec![],
            windows: vec![],
            cron: vec![],
            outside_schedule: OutsideSchedule::Keep,
        };
        assert_eq!(CompiledSchedule::compile(&s).err().map(|e| e.0), Some("timezone".to_string()));
        s.timezone = "UTC".into();
        s.windows = vec![TimeWindow { from: "25:00".into(), to: "01:00".into() }];
        assert_eq!(CompiledSchedule::compile(&s).err().map(|e| e.0), Some("windows[0].from".to_string()));
        s.windows = vec![];
        s.cron = vec!["not a cron".into()];
        assert_eq!(CompiledSchedule::compile(&s).err().map(|e| e.0), Some("cron[0]".to_string()));
    }
}
