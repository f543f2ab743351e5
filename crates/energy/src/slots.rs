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

#[cfg(test)]
mod tests {
    use super::*;

    /// Minutes after the epoch (a grid instant) in ms.
    fn m(minutes: i64) -> i64 {
        minutes * 60_000
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn kwh(run: &SlotRun) -> Vec<f64> {
        run.slots.iter().map(|s| (s.kwh * 1e9).round() / 1e9).collect()
    }

    fn idle(run: &SlotRun) -> Vec<f64> {
        run.slots.iter().map(|s| (s.idle_kwh * 1e9).round() / 1e9).collect()
    }

    #[test]
    fn a_ramp_is_split_at_the_slot_boundary_by_its_integral() {
        // 0 kW at 00:00 → 100 kW at 00:30: (0 + 100) / 2 × 0.5 h = 25 kWh in all. At 00:15
        // the power is 50 kW: slot 1 (0 + 50) / 2 × 0.25 = 6.25, slot 2 (50 + 100) / 2 × 0.25
        // = 18.75 (a time share of the mean would wrongly give 12.5 each).
        let run = slots_from_power(&[(m(0), 0.0), (m(30), 100.0)], &Idle::None, m(0), m(30), m(30)).unwrap();
        assert_eq!(kwh(&run), vec![6.25, 18.75]);
        assert!(run.gaps.is_empty());
        assert_eq!(run.slots[0].covered_ms, m(15));
        assert_eq!(run.slots[1].start_ms, m(15));
        assert_eq!(run.slots[0].idle_kwh, 0.0);
    }

    #[test]
    fn a_distance_beyond_max_gap_is_a_reported_gap_without_energy() {
        // 10 kW 00:00–00:10: 10 × 10/60 = 1.666… kWh in slot 0. 00:10 → 00:40 is 30 min
        // > 15: gap. 20 kW 00:40–00:50: 5 min in slot 2 and 5 min in slot 3, 20 × 5/60 =
        // 1.666… each. Nothing after 00:50: gap to the end of the range.
        let samples = [(m(0), 10.0), (m(10), 10.0), (m(40), 20.0), (m(50), 20.0)];
        let run = slots_from_power(&samples, &Idle::None, m(0), m(60), m(15)).unwrap();
        let third = 5.0 / 3.0;
        assert!(run.slots.iter().zip([third, 0.0, third, third]).all(|(s, e)| close(s.kwh, e)), "{run:?}");
        let covered: Vec<i64> = run.slots.iter().map(|s| s.covered_ms).collect();
        assert_eq!(covered, vec![m(10), 0, m(5), m(5)]);
        assert_eq!(run.gaps, vec![Gap { from_ms: m(10), to_ms: m(40) }, Gap { from_ms: m(50), to_ms: m(60) }]);
    }

    #[test]
    fn range_edges_interpolate_from_neighbours_within_max_gap() {
        // 0 kW at −00:10, 30 kW at 00:05 (15 min apart): at 00:00 the power is 30 × 10/15 =
        // 20 kW; 00:00–00:05 gives (20 + 30) / 2 × 5/60 = 2.083… kWh; then no sample: gap.
        let run = slots_from_power(&[(m(-10), 0.0), (m(5), 30.0)], &Idle::None, m(0), m(15), m(15)).unwrap();
        assert!(close(run.slots[0].kwh, 25.0 / 12.0));
        assert_eq!(run.gaps, vec![Gap { from_ms: m(5), to_ms: m(15) }]);
        // The first sample after `from` and a long distance after it merge into one gap:
        // nothing before 00:20, 00:20 → 00:50 is too long, 00:50 → 01:00 is bridged
        // (10 kW × 10/60 = 1.666… kWh in slot 3).
        let samples = [(m(20), 10.0), (m(50), 10.0), (m(60), 10.0)];
        let run = slots_from_power(&samples, &Idle::None, m(0), m(60), m(15)).unwrap();
        assert_eq!(run.gaps, vec![Gap { from_ms: m(0), to_ms: m(50) }]);
        assert!(close(run.slots[3].kwh, 10.0 / 6.0));
        // No samples at all: the whole range is one gap, every slot present and zero.
        let run = slots_from_power(&[], &Idle::None, m(0), m(45), m(15)).unwrap();
        assert_eq!(run.slots.len(), 3);
        assert_eq!(run.gaps, vec![Gap { from_ms: m(0), to_ms: m(45) }]);
    }

    #[test]
    fn idle_states_split_a_segment_exactly() {
        // 0 kW at 00:00 → 60 kW at 00:15, idle from 00:05 to 00:10. Power at 00:05 is 20 kW,
        // at 00:10 40 kW: idle (20 + 40) / 2 × 5/60 = 2.5 kWh of (0 + 60) / 2 × 0.25 = 7.5.
        let states = [(m(0), false), (m(5), true), (m(10), false)];
        let run = slots_from_power(&[(m(0), 0.0), (m(15), 60.0)], &Idle::States(&states), m(0), m(15), m(15)).unwrap();
        assert_eq!((kwh(&run), idle(&run)), (vec![7.5], vec![2.5]));
        // Before the first state point the device is not idle: idle only from 00:10, where
        // the power is 40 kW → (40 + 60) / 2 × 5/60 = 4.1666… kWh.
        let run = slots_from_power(&[(m(0), 0.0), (m(15), 60.0)], &Idle::States(&[(m(10), true)]), m(0), m(15), m(15))
            .unwrap();
        assert!(close(run.slots[0].idle_kwh, 25.0 / 6.0));
        let unsorted = [(m(10), true), (m(5), false)];
        assert_eq!(slots_from_power(&[], &Idle::States(&unsorted), m(0), m(15), m(15)).unwrap_err().field, "states[1]");
    }

    #[test]
    fn idle_below_a_power_threshold_takes_whole_segments() {
        // Threshold 5 kW. 2 → 4 kW (mean 3, idle): (2 + 4) / 2 × 0.25 = 0.75 kWh, all idle.
        // 4 → 10 kW (mean 7, not idle): (4 + 10) / 2 × 0.25 = 1.75 kWh.
        let samples = [(m(0), 2.0), (m(15), 4.0), (m(30), 10.0)];
        let run = slots_from_power(&samples, &Idle::BelowKw(5.0), m(0), m(30), m(15)).unwrap();
        assert_eq!((kwh(&run), idle(&run)), (vec![0.75, 1.75], vec![0.75, 0.0]));
    }

    #[test]
    fn counters_spread_differences_and_detect_a_reset() {
        // 100 → 110 (slot 0: 10 kWh), 110 → 5 is a reset (slot 1: 5 kWh since the reset),
        // 5 → 15 (slot 2: 10 kWh).
        let samples = [(m(0), 100.0), (m(15), 110.0), (m(30), 5.0), (m(45), 15.0)];
        let run = slots_from_counter(&samples, None, &Idle::None, m(0), m(45), m(15)).unwrap();
        assert_eq!(kwh(&run), vec![10.0, 5.0, 10.0]);
        assert_eq!(run.resets, vec![m(30)]);
        assert!(run.gaps.is_empty());
        // 3 kWh over 00:10 → 00:20 is 18 kW: 1.5 kWh in each slot.
        let run = slots_from_counter(&[(m(10), 0.0), (m(20), 3.0)], None, &Idle::None, m(0), m(30), m(15)).unwrap();
        assert_eq!(kwh(&run), vec![1.5, 1.5]);
        assert_eq!(run.gaps, vec![Gap { from_ms: m(0), to_ms: m(10) }, Gap { from_ms: m(20), to_ms: m(30) }]);
    }

    #[test]
    fn a_counter_difference_over_a_long_stretch_counts_but_is_a_gap() {
        // 4 kWh over an hour with max_gap 15 min: 1 kWh per slot, no covered time, one gap.
        let run = slots_from_counter(&[(m(0), 0.0), (m(60), 4.0)], None, &Idle::None, m(0), m(60), m(15)).unwrap();
        assert_eq!(kwh(&run), vec![1.0; 4]);
        assert!(run.slots.iter().all(|s| s.covered_ms == 0));
        assert_eq!(run.gaps, vec![Gap { from_ms: m(0), to_ms: m(60) }]);
    }

    #[test]
    fn a_32_bit_counter_rolls_over() {
        // A 32-bit Wh register wraps at 4 294 967 296 Wh = 4 294 967.296 kWh.
        // 4 294 967.000 → 0.704: 0.704 − 4 294 967.000 + 4 294 967.296 = 1.000 kWh.
        let samples = [(m(0), 4_294_967.0), (m(15), 0.704)];
        let run = slots_from_counter(&samples, Some(4_294_967.296), &Idle::None, m(0), m(15), m(15)).unwrap();
        assert!((run.slots[0].kwh - 1.0).abs() < 1e-6, "{run:?}");
        assert!(run.resets.is_empty());
        // Without a rollover width the same drop is a reset: 0.704 kWh since it.
        let run = slots_from_counter(&samples, None, &Idle::None, m(0), m(15), m(15)).unwrap();
        assert!(close(run.slots[0].kwh, 0.704));
        assert_eq!(run.resets, vec![m(15)]);
    }

    #[test]
    fn pulses_become_kwh() {
        // 1 500 pulses × 0.5 Wh = 750 Wh = 0.75 kWh; 10 000 × 1 Wh = 10 kWh.
        assert!(close(pulses_to_kwh(1500.0, 0.5), 0.75));
        assert!(close(pulses_to_kwh(10_000.0, 1.0), 10.0));
        // A pulse counter scaled then integrated: 0 → 4 000 pulses at 0.25 Wh = 1 kWh.
        let samples: Vec<(i64, f64)> =
            [(m(0), 0.0), (m(15), 4000.0)].map(|(t, p)| (t, pulses_to_kwh(p, 0.25))).to_vec();
        let run = slots_from_counter(&samples, None, &Idle::None, m(0), m(15), m(15)).unwrap();
        assert!(close(run.slots[0].kwh, 1.0));
    }

    #[test]
    fn counters_attribute_idle_by_state_and_by_mean_power() {
        // 2 kWh over 00:00–00:15 (8 kW constant), idle from 00:05: 2 × 10/15 = 1.333… idle.
        let run =
            slots_from_counter(&[(m(0), 0.0), (m(15), 2.0)], None, &Idle::States(&[(m(5), true)]), m(0), m(15), m(15))
                .unwrap();
        assert!(close(run.slots[0].idle_kwh, 4.0 / 3.0));
        // 0.5 kWh in 15 min = 2 kW < 3 kW threshold: all idle.
        let run =
            slots_from_counter(&[(m(0), 0.0), (m(15), 0.5)], None, &Idle::BelowKw(3.0), m(0), m(15), m(15)).unwrap();
        assert!(close(run.slots[0].idle_kwh, 0.5));
    }

    #[test]
    fn units_per_slot_by_counting_mode() {
        // Cumulative: 100 → 104 at 00:05 (slot 0: 4), 104 → 110 at 00:20 and a reset to 2
        // at 00:25 (slot 1: 6 + 2 = 8), 2 → 5 at 00:40 (slot 2: 3).
        let samples = [(m(-5), 100.0), (m(5), 104.0), (m(20), 110.0), (m(25), 2.0), (m(40), 5.0)];
        assert_eq!(units_per_slot(&samples, Counting::Cumulative, m(0), m(45)).unwrap(), vec![4.0, 8.0, 3.0]);
        // Per message: 1 + 2 in slot 0, 3 in slot 1, the sample at 00:45 is outside.
        let samples = [(m(1), 1.0), (m(14), 2.0), (m(16), 3.0), (m(45), 9.0)];
        assert_eq!(units_per_slot(&samples, Counting::PerMessage, m(0), m(45)).unwrap(), vec![3.0, 3.0, 0.0]);
        assert_eq!(serde_json::from_str::<Counting>("\"per_message\"").unwrap(), Counting::PerMessage);
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(slots_from_power(&[], &Idle::None, m(1), m(15), m(15)).unwrap_err().field, "from");
        assert_eq!(slots_from_power(&[], &Idle::None, m(0), m(16), m(15)).unwrap_err().field, "to");
        let descending = [(m(5), 1.0), (m(0), 1.0)];
        assert_eq!(slots_from_power(&descending, &Idle::None, m(0), m(15), m(15)).unwrap_err().field, "samples[1]");
        assert_eq!(
            slots_from_counter(&descending, None, &Idle::None, m(0), m(15), m(15)).unwrap_err().field,
            "samples[1]"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Sample times from `from` to `to` with steps of 1 ms … `max_gap`.
    fn times(from: i64, to: i64, steps: &[i64]) -> Vec<i64> {
        let mut out = vec![from];
        let mut t = from;
        for step in steps.iter().cycle() {
            t += step;
            if t >= to {
                break;
            }
            out.push(t);
        }
        out.push(to);
        out
    }

    proptest! {
        #[test]
        fn constant_power_over_a_covered_range_is_power_times_hours(
            kw in 0.0f64..5000.0,
            slots in 1i64..200,
            steps in prop::collection::vec(1i64..=SLOT_MS, 1..50),
        ) {
            let to = slots * SLOT_MS;
            let samples: Vec<(i64, f64)> = times(0, to, &steps).into_iter().map(|t| (t, kw)).collect();
            let run = slots_from_power(&samples, &Idle::None, 0, to, SLOT_MS).unwrap();
            prop_assert!(run.gaps.is_empty());
            for slot in &run.slots {
                prop_assert!((slot.kwh - kw * 0.25).abs() < 1e-9 * kw.max(1.0));
                prop_assert_eq!(slot.covered_ms, SLOT_MS);
            }
        }

        #[test]
        fn the_sum_of_slots_is_the_trapezoid_integral(
            powers in prop::collection::vec(-100.0f64..1000.0, 2..300),
            steps in prop::collection::vec(1i64..=2 * SLOT_MS, 1..50),
            max_gap in SLOT_MS / 2..2 * SLOT_MS,
        ) {
            let to = 96 * SLOT_MS;
            let samples: Vec<(i64, f64)> =
                times(0, to, &steps).into_iter().zip(powers.iter().cycle()).map(|(t, p)| (t, *p)).collect();
            let expected: f64 = samples
                .windows(2)
                .filter(|w| w[1].0 - w[0].0 <= max_gap)
                .map(|w| (w[0].1 + w[1].1) / 2.0 * (w[1].0 - w[0].0) as f64 / 3_600_000.0)
                .sum();
            let run = slots_from_power(&samples, &Idle::None, 0, to, max_gap).unwrap();
            let total: f64 = run.slots.iter().map(|s| s.kwh).sum();
            prop_assert!((total - expected).abs() < 1e-6, "{} vs {}", total, expected);
            let gap_ms: i64 = run.gaps.iter().map(|g| g.to_ms - g.from_ms).sum();
            let covered_ms: i64 = run.slots.iter().map(|s| s.covered_ms).sum();
            prop_assert_eq!(gap_ms + covered_ms, to);
        }
    }
}
