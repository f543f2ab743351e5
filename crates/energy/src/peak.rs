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
