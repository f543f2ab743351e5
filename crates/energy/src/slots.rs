//! Energy slots from raw samples: power (trapezoid rule), energy counters (differences
//! with reset and rollover detection), pulse counters (scaled to kWh first), idle energy,
//! and production units per slot.
//!
//! Samples are `(ms UTC, value)` in ascending time. The caller passes the samples of the
//! range plus its neighbours (a sample before `from` and one after `to`), so the edges can
//! be interpolated; how far it looks is its choice, `max_gap_ms` decides what is bridged.

use serde::{Deserialize, Serialize};

use crate::calendar::slot_count;
use crate::{Gap, InvalidSetting, SLOT_MS, Slot};

const MS_PER_HOUR: f64 = 3_600_000.0;

/// How a device's idle time is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Idle<'a> {
    /// Never idle.
    None,
    /// State points `(ms, idle)` in ascending time; a state holds until the next point,
    /// and before the first point the device counts as not idle.
    States(&'a [(i64, bool)]),
    /// Idle while the mean power of a segment (between two samples) is below this many kW.
    BelowKw(f64),
}

/// The slots of a range with the gaps found in it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlotRun {
    /// Every slot of `[from, to)` in order, slots without energy included.
    pub slots: Vec<Slot>,
    /// Stretches without a measured distribution, in order, adjacent ones merged.
    pub gaps: Vec<Gap>,
    /// Counters only: timestamps of samples where a reset was detected.
    pub resets: Vec<i64>,
}

/// How a production count property counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    /// A running total; units are the differences (a decrease is a reset).
    Cumulative,
    /// Each message carries the units made since the previous one.
    PerMessage,
}

/// kWh of `pulses` pulses at `wh_per_pulse` Wh each.
pub fn pulses_to_kwh(pulses: f64, wh_per_pulse: f64) -> f64 {
    pulses * wh_per_pulse / 1000.0
}

/// Slots of `[from_ms, to_ms)` from power samples in kW. Between two samples at most
/// `max_gap_ms` apart the power is linear and its integral is split exactly at slot
/// boundaries and state changes; a longer distance, and any stretch of the range without
/// a segment (before the first sample, after the last), is a gap with no energy. `from_ms`
/// and `to_ms` must be on the slot grid.
pub fn slots_from_power(
    samples: &[(i64, f64)],
    idle: &Idle,
    from_ms: i64,
    to_ms: i64,
    max_gap_ms: i64,
) -> Result<SlotRun, InvalidSetting> {
    let mut acc = Accumulator::new(idle, from_ms, to_ms)?;
    for (i, pair) in samples.windows(2).enumerate() {
        let ((t1, p1), (t2, p2)) = (pair[0], pair[1]);
        if t2 < t1 {
            return Err(InvalidSetting::new(format!("samples[{}]", i + 1), "samples must be in ascending time"));
        }
        if t2 <= from_ms || t2 == t1 || t2 - t1 > max_gap_ms {
            continue;
        }
        if t1 >= to_ms {
            break;
        }
        let idle_segment = match idle {
            Idle::BelowKw(threshold) => Some((p1 + p2) / 2.0 < *threshold),
            _ => None,
        };
        acc.add(t1, p1, t2, p2, true, idle_segment);
    }
    Ok(acc.finish())
}

/// Slots of `[from_ms, to_ms)` from a cumulative energy counter in kWh. The difference of
/// two samples is their energy: a decrease is a rollover when `rollover_kwh` is set (the
/// difference plus the rollover), otherwise a reset (the energy since the reset is the new
/// value; its time is listed in `resets`). Each difference is spread at constant power over
/// `(t1, t2]`. A difference across more than `max_gap_ms` is still counted (the meter
/// measured it) but the stretch is reported as a gap and not as covered time, because its
/// distribution in time is estimated. `from_ms` and `to_ms` must be on the slot grid.
pub fn slots_from_counter(
    samples: &[(i64, f64)],
    rollover_kwh: Option<f64>,
    idle: &Idle,
    from_ms: i64,
    to_ms: i64,
    max_gap_ms: i64,
) -> Result<SlotRun, InvalidSetting> {
    let mut acc = Accumulator::new(idle, from_ms, to_ms)?;
    for (i, pair) in samples.windows(2).enumerate() {
        let ((t1, v1), (t2, v2)) = (pair[0], pair[1]);
        if t2 < t1 {
            return Err(InvalidSetting::new(format!("samples[{}]", i + 1), "samples must be in ascending time"));
        }
        if t2 <= from_ms || t2 == t1 {
            continue;
        }
        if t1 >= to_ms {
            break;
        }
        let mut delta = v2 - v1;
        if delta < 0.0 {
            match rollover_kwh {
                Some(rollover) if delta + rollover >= 0.0 => delta += rollover,
                _ => {
                    acc.resets.push(t2);
                    delta = v2.max(0.0);
                }
            }
        }
        let kw = delta * MS_PER_HOUR / (t2 - t1) as f64;
        let idle_segment = match idle {
            Idle::BelowKw(threshold) => Some(kw < *threshold),
            _ => None,
        };
        acc.add(t1, kw, t2, kw, t2 - t1 <= max_gap_ms, idle_segment);
    }
    Ok(acc.finish())
}

/// Production units per slot of `[from_ms, to_ms)`. Cumulative counts: the difference of
/// two consecutive samples (a decrease is a reset: the new value counts) belongs to the
/// slot of the later sample, so pass the last sample before `from` too. Per-message
/// counts: each sample's value belongs to its slot. `from_ms`/`to_ms` on the slot grid.
pub fn units_per_slot(
    samples: &[(i64, f64)],
    counting: Counting,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<f64>, InvalidSetting> {
    let mut units = vec![0.0; slot_count(from_ms, to_ms)?];
    let slot_of = |t: i64| ((t - from_ms) / SLOT_MS) as usize;
    let in_range = |t: i64| t >= from_ms && t < to_ms;
    match counting {
        Counting::Cumulative => {
            for (i, pair) in samples.windows(2).enumerate() {
                let ((t1, v1), (t2, v2)) = (pair[0], pair[1]);
                if t2 < t1 {
                    return Err(InvalidSetting::new(
                        format!("samples[{}]", i + 1),
                        "samples must be in ascending time",
                    ));
                }
                if in_range(t2) {
                    units[slot_of(t2)] += if v2 >= v1 { v2 - v1 } else { v2.max(0.0) };
                }
            }
        }
        Counting::PerMessage => {
            for &(t, v) in samples.iter().filter(|(t, _)| in_range(*t)) {
                units[slot_of(t)] += v;
            }
        }
    }
    Ok(units)
}

/// Spreads segments into slots, splitting at slot boundaries and state changes, and
/// derives the gaps as the parts of the range no covered segment reaches.
struct Accumulator<'a> {
    from_ms: i64,
    to_ms: i64,
    slots: Vec<Slot>,
    gaps: Vec<Gap>,
    resets: Vec<i64>,
    /// Everything before this instant is covered or already reported as a gap.
    covered_to: i64,
    states: &'a [(i64, bool)],
    /// The number of state points at or before the current position.
    state_ix: usize,
}

impl<'a> Accumulator<'a> {
    fn new(idle: &Idle<'a>, from_ms: i64, to_ms: i64) -> Result<Self, InvalidSetting> {
        let n = slot_count(from_ms, to_ms)?;
        let states = match idle {
            Idle::States(states) => *states,
            _ => &[],
        };
        if let Some(i) = states.windows(2).position(|w| w[1].0 < w[0].0) {
            return Err(InvalidSetting::new(format!("states[{}]", i + 1), "states must be in ascending time"));
        }
        let slots = (0..n).map(|i| Slot { start_ms: from_ms + i as i64 * SLOT_MS, ..Slot::default() }).collect();
        Ok(Self {
            from_ms,
            to_ms,
            slots,
            gaps: Vec::new(),
            resets: Vec::new(),
            covered_to: from_ms,
            states,
            state_ix: 0,
        })
    }

    /// Adds the segment from `(t1, p1)` to `(t2, p2)` (kW, linear in between) where it lies
    /// inside the range. `idle_segment` is `Some` when the whole segment's idleness is
    /// known (threshold); `None` reads the state points.
    fn add(&mut self, t1: i64, p1: f64, t2: i64, p2: f64, covered: bool, idle_segment: Option<bool>) {
        let (a, b) = (t1.max(self.from_ms), t2.min(self.to_ms));
        if a >= b {
            return;
        }
        if covered {
            if a > self.covered_to {
                self.push_gap(self.covered_to, a);
            }
            self.covered_to = self.covered_to.max(b);
        }
        let slope = (p2 - p1) / (t2 - t1) as f64;
        let power_at = |t: i64| p1 + slope * (t - t1) as f64;
        let mut x = a;
        let mut px = power_at(a);
        while x < b {
            let ix = ((x - self.from_ms) / SLOT_MS) as usize;
            let slot_end = self.from_ms + (ix as i64 + 1) * SLOT_MS;
            let mut next = b.min(slot_end);
            let idle = match idle_segment {
                Some(idle) => idle,
                None => {
                    while self.state_ix < self.states.len() && self.states[self.state_ix].0 <= x {
                        self.state_ix += 1;
                    }
                    if let Some(&(change, _)) = self.states.get(self.state_ix) {
                        next = next.min(change);
                    }
                    self.state_ix > 0 && self.states[self.state_ix - 1].1
                }
            };
            let pn = if next == t2 { p2 } else { power_at(next) };
            let kwh = (px + pn) / 2.0 * (next - x) as f64 / MS_PER_HOUR;
            let slot = &mut self.slots[ix];
            slot.kwh += kwh;
            if idle {
                slot.idle_kwh += kwh;
            }
            if covered {
                slot.covered_ms += next - x;
            }
            x = next;
            px = pn;
        }
    }

    fn push_gap(&mut self, from_ms: i64, to_ms: i64) {
        match self.gaps.last_mut() {
            Some(last) if last.to_ms >= from_ms => last.to_ms = last.to_ms.max(to_ms),
            _ => self.gaps.push(Gap { from_ms, to_ms }),
        }
    }

    fn finish(mut self) -> SlotRun {
        if self.covered_to < self.to_ms {
            self.push_gap(self.covered_to, self.to_ms);
        }
        SlotRun { slots: self.slots, gaps: self.gaps, resets: self.resets }
    }
}
