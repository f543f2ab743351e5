//! Demand: the average power over fixed intervals aligned to the local clock, and its peak
//! per period (day or month) with the devices that contributed most.
//!
//! An interval starts at every grid instant whose local minutes since midnight divide by the
//! interval (15, 30, 45 or 60 minutes), so in Asia/Kolkata (+05:30) a 60-minute interval
//! starts at :30 UTC. Its average power is the kWh of the slots starting in it, summed over
//! devices, divided by its length in hours. Only whole intervals inside the range or period
//! count: a partial one at a clipped edge would not be an average over the interval.

use chrono::{DateTime, Timelike};
use chrono_tz::Tz;

use crate::calendar::{Span, slot_count};
use crate::{InvalidSetting, SLOT_MS, Slot};

/// The most contributing devices listed for a peak.
pub const TOP_DEVICES: usize = 5;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// The average power of one demand interval `[start_ms, end_ms)`, summed over devices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandInterval {
    pub start_ms: i64,
    pub end_ms: i64,
    pub kw: f64,
}

/// The peak of one period: the highest interval average `kw`, the interval's start `at_ms`
/// (the earliest on ties), and the devices with the highest average power in that
/// interval (descending, at most [`TOP_DEVICES`], only positive contributions).
#[derive(Debug, Clone, PartialEq)]
pub struct PeakItem<K> {
    pub period_start_ms: i64,
    pub kw: f64,
    pub at_ms: i64,
    pub top_devices: Vec<(K, f64)>,
}

/// Checks an interval length: a multiple of 15 minutes, at most 60.
pub fn check_interval(interval_minutes: u32) -> Result<i64, InvalidSetting> {
    if interval_minutes == 0 || interval_minutes > 60 || !interval_minutes.is_multiple_of(15) {
        return Err(InvalidSetting::new("interval_minutes", "must be 15, 30, 45 or 60"));
    }
    Ok(i64::from(interval_minutes) * 60_000)
}

/// The whole demand intervals `[start, end)` aligned to the local clock inside
/// `[from_ms, to_ms)` (both on the slot grid).
pub fn intervals(tz: Tz, interval_minutes: u32, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64)>, InvalidSetting> {
    check_interval(interval_minutes)?;
    slot_count(from_ms, to_ms)?;
    let aligned = |t: i64| {
        DateTime::from_timestamp_millis(t).map(|u| u.with_timezone(&tz)).is_some_and(|local| {
            (local.hour() * 60 + local.minute()).is_multiple_of(interval_minutes) && local.second() == 0
        })
    };
    let mut out = Vec::new();
    let mut start = None;
    let mut t = from_ms;
    while t <= to_ms {
        if aligned(t) {
            if let Some(s) = start {
                out.push((s, t));
            }
            start = Some(t);
        }
        t += SLOT_MS;
    }
    Ok(out)
}

/// The demand series of `[from_ms, to_ms)`: one item per whole aligned interval, summed
/// over all devices (each device's slots sorted by start). Used for "current demand".
pub fn interval_series<K>(
    devices: &[(K, &[Slot])],
    tz: Tz,
    interval_minutes: u32,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<DemandInterval>, InvalidSetting> {
    let bounds = intervals(tz, interval_minutes, from_ms, to_ms)?;
    let (kwh, _) = sum_intervals(devices, &bounds);
    Ok(bounds
        .iter()
        .zip(kwh)
        .map(|(&(s, e), kwh)| DemandInterval { start_ms: s, end_ms: e, kw: kw(kwh, s, e) })
        .collect())
}

/// The peak demand of each period (e.g. day or month spans from
/// [`crate::calendar::spans`]), in the periods' order. A period without data (no slot of
/// any device with covered time or energy) has no item rather than a claimed 0 kW.
pub fn demand<K: Clone>(
    devices: &[(K, &[Slot])],
    tz: Tz,
    interval_minutes: u32,
    periods: &[Span],
) -> Result<Vec<PeakItem<K>>, InvalidSetting> {
    let mut out = Vec::with_capacity(periods.len());
    for period in periods {
        let bounds = intervals(tz, interval_minutes, period.start_ms, period.end_ms)?;
        let (kwh, has_data) = sum_intervals(devices, &bounds);
        if !has_data {
            continue;
        }
        let mut best: Option<(usize, f64)> = None;
        for (i, (&(s, e), &kwh)) in bounds.iter().zip(&kwh).enumerate() {
            let value = kw(kwh, s, e);
            if best.is_none_or(|(_, b)| value > b) {
                best = Some((i, value));
            }
        }
        let Some((i, peak_kw)) = best else { continue };
        let (at, end) = bounds[i];
        let mut top: Vec<(K, f64)> = devices
            .iter()
            .map(|(key, slots)| (key.clone(), kw(window_kwh(slots, at, end), at, end)))
            .filter(|(_, kw)| *kw > 0.0)
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        top.truncate(TOP_DEVICES);
        out.push(PeakItem { period_start_ms: period.start_ms, kw: peak_kw, at_ms: at, top_devices: top });
    }
    Ok(out)
}

fn kw(kwh: f64, start_ms: i64, end_ms: i64) -> f64 {
    kwh / ((end_ms - start_ms) as f64 / MS_PER_HOUR)
}

/// The kWh of the slots starting in `[start_ms, end_ms)`.
fn window_kwh(slots: &[Slot], start_ms: i64, end_ms: i64) -> f64 {
    let first = slots.partition_point(|s| s.start_ms < start_ms);
    slots[first..].iter().take_while(|s| s.start_ms < end_ms).map(|s| s.kwh).sum()
}

/// kWh per interval over all devices, and whether any slot in them has data.
fn sum_intervals<K>(devices: &[(K, &[Slot])], bounds: &[(i64, i64)]) -> (Vec<f64>, bool) {
    let mut kwh = vec![0.0; bounds.len()];
    let mut has_data = false;
    let (Some(&(start, _)), Some(&(_, end))) = (bounds.first(), bounds.last()) else {
        return (kwh, false);
    };
    for (_, slots) in devices {
        let first = slots.partition_point(|s| s.start_ms < start);
        let mut ix = 0;
        for slot in slots[first..].iter().take_while(|s| s.start_ms < end) {
            while bounds[ix].1 <= slot.start_ms {
                ix += 1;
            }
            kwh[ix] += slot.kwh;
            has_data |= slot.covered_ms > 0 || slot.kwh != 0.0;
        }
    }
    (kwh, has_data)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use chrono_tz::{Asia::Kolkata, Europe::Berlin};

    use super::*;
    use crate::calendar::{Bucket, spans};

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap().timestamp_millis()
    }

    /// Slots of `[from, to)` with `base` kWh each plus `extra` kWh in the slots listed.
    fn series(from: i64, to: i64, base: f64, extra: &[(i64, f64)]) -> Vec<Slot> {
        (0..(to - from) / SLOT_MS)
            .map(|i| {
                let start_ms = from + i * SLOT_MS;
                let bump: f64 = extra.iter().filter(|(t, _)| *t == start_ms).map(|(_, e)| e).sum();
                Slot { start_ms, kwh: base + bump, idle_kwh: 0.0, covered_ms: SLOT_MS }
            })
            .collect()
    }

    #[test]
    fn the_peak_of_a_day_with_its_top_devices() {
        // Berlin 2026-01-05 (CET): the local day is 01-04 23:00Z … 01-05 23:00Z.
        let (day0, day1) = (utc(2026, 1, 4, 23, 0), utc(2026, 1, 5, 23, 0));
        let eight = utc(2026, 1, 5, 7, 0); // 08:00 local
        let nine = utc(2026, 1, 5, 8, 0); // 09:00 local
        // a: 2.5 kWh every slot (10 kW). b: 25 kWh in the 08:00 slot (100 kW). c: 5 kWh at
        // 08:00 (20 kW) and 7.5 kWh at 09:00 (30 kW).
        let a = series(day0, day1, 2.5, &[]);
        let b = series(day0, day1, 0.0, &[(eight, 25.0)]);
        let c = series(day0, day1, 0.0, &[(eight, 5.0), (nine, 7.5)]);
        let devices: Vec<(&str, &[Slot])> = vec![("a", &a), ("b", &b), ("c", &c)];
        let days = spans(Berlin, day0, day1, Bucket::Day, None).unwrap();
        // 15 min: 08:00 holds (2.5 + 25 + 5) / 0.25 h = 130 kW: b 100, c 20, a 10.
        let peaks = demand(&devices, Berlin, 15, &days).unwrap();
        assert_eq!(peaks.len(), 1);
        assert_eq!((peaks[0].period_start_ms, peaks[0].kw, peaks[0].at_ms), (day0, 130.0, eight));
        assert_eq!(peaks[0].top_devices, vec![("b", 100.0), ("c", 20.0), ("a", 10.0)]);
        // 60 min: 08:00–09:00 holds 4 × 2.5 + 25 + 5 = 40 kWh → 40 kW (b 25, a 10, c 5);
        // 09:00–10:00 only 10 + 7.5 = 17.5 kW.
        let peaks = demand(&devices, Berlin, 60, &days).unwrap();
        assert_eq!((peaks[0].kw, peaks[0].at_ms), (40.0, eight));
        assert_eq!(peaks[0].top_devices, vec![("b", 25.0), ("a", 10.0), ("c", 5.0)]);
    }

    #[test]
    fn monthly_peaks_pick_the_highest_day_and_skip_periods_without_data() {
        // January and February 2026 in Berlin; data only from 01-30 to 02-01 local.
        let from = utc(2025, 12, 31, 23, 0);
        let to = utc(2026, 2, 28, 23, 0);
        let data_from = utc(2026, 1, 29, 23, 0);
        let data_to = utc(2026, 1, 31, 23, 0);
        // 1 kWh per slot (4 kW) with 3 kWh more (16 kW in all) on 01-31 12:00Z and 2 kWh
        // more (12 kW) on 01-30 12:00Z: the January peak is 16 kW on 01-31.
        let slots = series(data_from, data_to, 1.0, &[(utc(2026, 1, 31, 12, 0), 3.0), (utc(2026, 1, 30, 12, 0), 2.0)]);
        let devices = [(1u32, slots.as_slice())];
        let months = spans(Berlin, from, to, Bucket::Month, None).unwrap();
        let peaks = demand(&devices, Berlin, 15, &months).unwrap();
        // February has no data: no item rather than 0 kW.
        assert_eq!(peaks.len(), 1);
        assert_eq!((peaks[0].period_start_ms, peaks[0].kw, peaks[0].at_ms), (from, 16.0, utc(2026, 1, 31, 12, 0)));
        assert_eq!(peaks[0].top_devices, vec![(1, 16.0)]);
    }

    #[test]
    fn intervals_align_to_the_local_clock_in_kolkata() {
        // Kolkata +05:30. From 00:15Z (05:45 local) to 02:30Z (08:00 local).
        let (from, to) = (utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 2, 30));
        // 30 min: local 06:00, 06:30, … = 00:30Z, 01:00Z, …; the partial 05:45–06:00 is left out.
        let got = intervals(Kolkata, 30, from, to).unwrap();
        assert_eq!(got.first(), Some(&(utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1, 0))));
        assert_eq!(got.len(), 4);
        // 60 min: local hours 06:00 and 07:00 = 00:30Z and 01:30Z; 02:30Z ends the last.
        let got = intervals(Kolkata, 60, from, to).unwrap();
        assert_eq!(got, vec![(utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1, 30)), (utc(2026, 1, 1, 1, 30), to)]);
        // 45 min: local minutes divisible by 45 are 06:00 and 06:45, 07:30 = 00:30Z, 01:15Z, 02:00Z.
        let got = intervals(Kolkata, 45, from, to).unwrap();
        assert_eq!(
            got,
            vec![(utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1, 15)), (utc(2026, 1, 1, 1, 15), utc(2026, 1, 1, 2, 0))]
        );
        // The series: 1 kWh per slot of one device, 2 kWh per slot of another = 12 kW.
        let one = series(from, to, 1.0, &[]);
        let two = series(from, to, 2.0, &[]);
        let s = interval_series(&[("x", one.as_slice()), ("y", two.as_slice())], Kolkata, 30, from, to).unwrap();
        assert_eq!(s.len(), 4);
        assert!(s.iter().all(|i| (i.kw - 12.0).abs() < 1e-12));
        assert_eq!(s[0].start_ms, utc(2026, 1, 1, 0, 30));
    }

    #[test]
    fn the_fall_back_day_has_25_hourly_intervals_and_bad_lengths_are_refused() {
        let got = intervals(Berlin, 60, utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 23, 0)).unwrap();
        assert_eq!(got.len(), 25);
        for bad in [0, 10, 20, 75, 90] {
            assert_eq!(intervals(Berlin, bad, 0, SLOT_MS).unwrap_err().field, "interval_minutes");
        }
    }
}
