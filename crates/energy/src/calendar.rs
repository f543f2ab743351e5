//! Buckets in the factory's time zone (hour, day, week, month, shift) and folding slots
//! into them.
//!
//! Every bucket boundary is an instant on the 15-minute slot grid, so a bucket is an exact
//! sum of whole slots. Days run from local midnight to local midnight (23 h or 25 h on the
//! DST change days), weeks are ISO weeks (Monday 00:00), months start on the 1st at 00:00,
//! hours are local hours (25 of them on the fall-back day in Europe/Berlin).

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::shifts::ShiftCalendar;
use crate::{InvalidSetting, LocalMinute, SLOT_MS, Slot};

/// The width of the buckets a consumption query folds slots into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
    Week,
    Month,
    Shift,
}

/// A bucket `[start_ms, end_ms)`; `label` is the shift name for shift buckets, `None` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start_ms: i64,
    pub end_ms: i64,
    pub label: Option<String>,
}

/// The sums of the slots starting inside a span.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Totals {
    pub kwh: f64,
    pub idle_kwh: f64,
    pub covered_ms: i64,
}

/// Checks that `[from_ms, to_ms)` is a range on the slot grid and returns its slot count.
pub fn slot_count(from_ms: i64, to_ms: i64) -> Result<usize, InvalidSetting> {
    if from_ms.rem_euclid(SLOT_MS) != 0 {
        return Err(InvalidSetting::new("from", "must be on the 15-minute grid"));
    }
    if to_ms.rem_euclid(SLOT_MS) != 0 {
        return Err(InvalidSetting::new("to", "must be on the 15-minute grid"));
    }
    if to_ms < from_ms {
        return Err(InvalidSetting::new("to", "must not be before from"));
    }
    usize::try_from((to_ms - from_ms) / SLOT_MS).map_err(|_| InvalidSetting::new("to", "range too long"))
}

/// The local date of an instant in `tz` (`None` only for instants outside chrono's range).
pub fn local_date(tz: Tz, ms: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).date_naive())
}

/// The instant (ms UTC) of the local wall time `at` on `date` in `tz` (`24:00` is the next
/// day's midnight). A wall time that does not exist (spring-forward gap) maps to the first
/// instant after the gap; an ambiguous one (fall-back) maps to its first occurrence.
pub fn local_instant(tz: Tz, date: NaiveDate, at: LocalMinute) -> i64 {
    let minutes = u32::from(at.minutes());
    let (date, minutes) = if minutes == 24 * 60 { (date.succ_opt().unwrap_or(date), 0) } else { (date, minutes) };
    let Some(time) = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0) else {
        return naive_utc_ms(date, 0);
    };
    let local = date.and_time(time);
    if let Some(t) = tz.from_local_datetime(&local).earliest() {
        return t.timestamp_millis();
    }
    // Inside a gap: the first wall time on the 15-minute grid that exists is the end of the
    // gap (transitions and offsets lie on the grid in every real zone), and its first
    // occurrence is the transition instant itself. Samoa skipped a whole day, hence 2 days.
    let mut probe = local;
    for _ in 0..(2 * 24 * 4) {
        probe += chrono::Duration::minutes(15);
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            return t.timestamp_millis();
        }
    }
    naive_utc_ms(date, minutes)
}

/// A wall time read as UTC: the last resort when a zone has no valid time for two days.
fn naive_utc_ms(date: NaiveDate, minutes: u32) -> i64 {
    date.and_time(NaiveTime::MIN).and_utc().timestamp_millis() + i64::from(minutes) * 60_000
}

/// The buckets of `[from_ms, to_ms)` in `tz`, clipped to the range, in order. `from_ms` and
/// `to_ms` must be on the slot grid. Shift buckets need the factory's shift calendar; they
/// cover only the times inside a shift (the rest of the day belongs to no shift bucket).
pub fn spans(
    tz: Tz,
    from_ms: i64,
    to_ms: i64,
    bucket: Bucket,
    shifts: Option<&ShiftCalendar>,
) -> Result<Vec<Span>, InvalidSetting> {
    slot_count(from_ms, to_ms)?;
    if from_ms == to_ms {
        return Ok(Vec::new());
    }
    let boundaries = match bucket {
        Bucket::Hour => hour_boundaries(tz, from_ms, to_ms),
        Bucket::Day | Bucket::Week | Bucket::Month => date_boundaries(tz, from_ms, to_ms, bucket)?,
        Bucket::Shift => {
            let calendar = shifts.ok_or_else(|| InvalidSetting::new("bucket", "the factory has no shift calendar"))?;
            return Ok(calendar
                .spans(tz, from_ms, to_ms)
                .into_iter()
                .map(|s| Span { start_ms: s.start_ms, end_ms: s.end_ms, label: Some(s.name) })
                .collect());
        }
    };
    let mut out = Vec::with_capacity(boundaries.len() + 1);
    let mut start = from_ms;
    for b in boundaries.into_iter().chain(std::iter::once(to_ms)) {
        if b > start {
            out.push(Span { start_ms: start, end_ms: b, label: None });
            start = b;
        }
    }
    Ok(out)
}

/// Grid instants strictly inside the range where a local hour begins. Walking the grid
/// (rather than adding hours) gets the 23- and 25-hour days and half-hour zones right.
fn hour_boundaries(tz: Tz, from_ms: i64, to_ms: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = from_ms + SLOT_MS;
    while t < to_ms {
        if let Some(local) = DateTime::from_timestamp_millis(t).map(|u| u.with_timezone(&tz))
            && local.minute() == 0
            && local.second() == 0
        {
            out.push(t);
        }
        t += SLOT_MS;
    }
    out
}

/// Local midnights strictly inside the range that start a day, an ISO week or a month.
fn date_boundaries(tz: Tz, from_ms: i64, to_ms: i64, bucket: Bucket) -> Result<Vec<i64>, InvalidSetting> {
    let mut date = local_date(tz, from_ms).ok_or_else(|| InvalidSetting::new("from", "out of range"))?;
    let mut out = Vec::new();
    loop {
        let next = match bucket {
            Bucket::Week => date.checked_add_days(Days::new(u64::from(7 - date.weekday().num_days_from_monday()))),
            Bucket::Month => date.with_day(1).and_then(|d| d.checked_add_months(Months::new(1))),
            _ => date.succ_opt(),
        }
        .ok_or_else(|| InvalidSetting::new("to", "out of range"))?;
        let at = local_instant(tz, next, LocalMinute::MIDNIGHT);
        if at >= to_ms {
            return Ok(out);
        }
        // Every real zone's midnight is on the grid; a historic local mean time is not.
        if at.rem_euclid(SLOT_MS) != 0 {
            return Err(InvalidSetting::new(
                "tz",
                format!("local midnight of {next} in {tz} is not on the 15-minute grid"),
            ));
        }
        if at > from_ms {
            out.push(at);
        }
        date = next;
    }
}

/// The totals of the slots (sorted by start) that start inside `span`.
pub fn fold(slots: &[Slot], span: &Span) -> Totals {
    let first = slots.partition_point(|s| s.start_ms < span.start_ms);
    let count = slots[first..].partition_point(|s| s.start_ms < span.end_ms);
    let mut totals = Totals::default();
    for slot in &slots[first..first + count] {
        totals.kwh += slot.kwh;
        totals.idle_kwh += slot.idle_kwh;
        totals.covered_ms += slot.covered_ms;
    }
    totals
}

/// [`fold`] for many spans at once (one result per span, in the spans' order). Sorted,
/// non-overlapping spans (what [`spans`] returns) take one pass over the slots.
pub fn fold_spans(slots: &[Slot], spans: &[Span]) -> Vec<Totals> {
    if !spans.windows(2).all(|w| w[0].end_ms <= w[1].start_ms) {
        return spans.iter().map(|span| fold(slots, span)).collect();
    }
    // One binary search, then a linear walk: a search per span would miss the cache on
    // every probe, which costs more than the sums themselves.
    let mut ix = spans.first().map_or(0, |first| slots.partition_point(|s| s.start_ms < first.start_ms));
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        while ix < slots.len() && slots[ix].start_ms < span.start_ms {
            ix += 1;
        }
        let mut totals = Totals::default();
        while ix < slots.len() && slots[ix].start_ms < span.end_ms {
            let slot = &slots[ix];
            totals.kwh += slot.kwh;
            totals.idle_kwh += slot.idle_kwh;
            totals.covered_ms += slot.covered_ms;
            ix += 1;
        }
        out.push(totals);
    }
    out
}

/// The sums of all `slots`, added in order from zero: exactly what [`fold`] gives for a
/// span holding all of them (kept per cached day, so a day bucket needs no slot).
pub fn totals(slots: &[Slot]) -> Totals {
    let mut totals = Totals::default();
    for slot in slots {
        totals.kwh += slot.kwh;
        totals.idle_kwh += slot.idle_kwh;
        totals.covered_ms += slot.covered_ms;
    }
    totals
}

/// One device's slots of one local day inside a query's range, borrowed from where they
/// are kept (the cache of closed days): the query folds over them in place instead of
/// copying a month of slots per device.
#[derive(Debug, Clone, Copy)]
pub struct DayPart<'a> {
    /// Sorted by start, contiguous on the grid.
    pub slots: &'a [Slot],
    /// `totals(slots)` when known (a whole cached day); lets a span that starts with this
    /// part skip its slots.
    pub totals: Option<Totals>,
}

/// The slots of `[from_ms, to_ms)` summed slot by slot over the devices (in the devices'
/// order) from their day parts: bit for bit what summing the devices' concatenated slots
/// gives, without the concatenation.
pub fn sum_parts(devices: &[Vec<DayPart<'_>>], from_ms: i64, to_ms: i64) -> Vec<Slot> {
    let mut total: Vec<Slot> =
        (0..(to_ms - from_ms) / SLOT_MS).map(|i| Slot { start_ms: from_ms + i * SLOT_MS, ..Slot::default() }).collect();
    for parts in devices {
        add_parts(&mut total, parts, from_ms);
    }
    total
}

/// Adds one device's parts into `total` (slots of `[from_ms, …)`), slot by slot.
pub fn add_parts(total: &mut [Slot], parts: &[DayPart<'_>], from_ms: i64) {
    for part in parts {
        for slot in part.slots {
            let Ok(i) = usize::try_from((slot.start_ms - from_ms) / SLOT_MS) else { continue };
            if let Some(t) = total.get_mut(i) {
                t.kwh += slot.kwh;
                t.idle_kwh += slot.idle_kwh;
                t.covered_ms += slot.covered_ms;
            }
        }
    }
}

/// The kWh of one device per span from its day parts (in time order): bit for bit
/// [`fold`] over the concatenated slots, since every sum still adds the same slots in the
/// same order from zero. A span whose first slots are a whole part with known totals
/// starts from those totals instead of adding the part's slots again, so a day bucket
/// over cached days costs one addition per device and day.
pub fn fold_parts_kwh(parts: &[DayPart<'_>], spans: &[Span]) -> Vec<f64> {
    spans
        .iter()
        .map(|span| {
            // The first part that may hold a slot of the span.
            let first = parts.partition_point(|p| p.slots.last().is_none_or(|s| s.start_ms < span.start_ms));
            let mut kwh = 0.0;
            let mut started = false;
            for part in &parts[first..] {
                let Some(head) = part.slots.first() else { continue };
                if head.start_ms >= span.end_ms {
                    break;
                }
                let whole_inside =
                    head.start_ms >= span.start_ms && part.slots.last().is_some_and(|s| s.start_ms < span.end_ms);
                match part.totals {
                    Some(t) if whole_inside && !started => kwh = t.kwh,
                    _ => {
                        let a = part.slots.partition_point(|s| s.start_ms < span.start_ms);
                        let n = part.slots[a..].partition_point(|s| s.start_ms < span.end_ms);
                        for slot in &part.slots[a..a + n] {
                            kwh += slot.kwh;
                        }
                    }
                }
                started = true;
            }
            kwh
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};
    use chrono_tz::{Asia::Kolkata, Europe::Berlin};

    use super::*;
    use crate::shifts::ShiftPlan;

    const HOUR: i64 = 3_600_000;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap().timestamp_millis()
    }

    fn hours(spans: &[Span]) -> Vec<i64> {
        spans.iter().map(|s| (s.end_ms - s.start_ms) / HOUR).collect()
    }

    #[test]
    fn local_instants_resolve_gaps_forward_and_ambiguity_to_the_first_occurrence() {
        let date = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        let at = |s: &str| s.parse::<LocalMinute>().unwrap();
        // 02:30 does not exist on 2026-03-29 (02:00 CET → 03:00 CEST at 01:00Z): the first
        // instant after the gap is 01:00Z.
        assert_eq!(local_instant(Berlin, date(3, 29), at("02:30")), utc(2026, 3, 29, 1, 0));
        // 02:30 happens twice on 2026-10-25: first at 00:30Z (CEST), again at 01:30Z (CET).
        assert_eq!(local_instant(Berlin, date(10, 25), at("02:30")), utc(2026, 10, 25, 0, 30));
        // 24:00 is the next day's midnight: 2026-03-29 24:00 CEST = 03-29 22:00Z.
        assert_eq!(local_instant(Berlin, date(3, 29), at("24:00")), utc(2026, 3, 29, 22, 0));
    }

    #[test]
    fn days_across_both_2026_dst_changes_in_berlin_last_23_and_25_hours() {
        // Local midnights 03-28 = 03-27 23:00Z … 03-31 = 03-30 22:00Z: 24 h, 23 h, 24 h.
        let spring = spans(Berlin, utc(2026, 3, 27, 23, 0), utc(2026, 3, 30, 22, 0), Bucket::Day, None).unwrap();
        assert_eq!(hours(&spring), vec![24, 23, 24]);
        assert_eq!(spring[1].start_ms, utc(2026, 3, 28, 23, 0));
        assert_eq!(spring[2].start_ms, utc(2026, 3, 29, 22, 0));
        // 10-24 = 10-23 22:00Z … 10-27 = 10-26 23:00Z: 24 h, 25 h, 24 h.
        let fall = spans(Berlin, utc(2026, 10, 23, 22, 0), utc(2026, 10, 26, 23, 0), Bucket::Day, None).unwrap();
        assert_eq!(hours(&fall), vec![24, 25, 24]);
        assert!(fall.iter().all(|s| s.label.is_none()));
    }

    #[test]
    fn local_hours_number_23_and_25_on_the_dst_days() {
        let spring = spans(Berlin, utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 22, 0), Bucket::Hour, None).unwrap();
        assert_eq!(spring.len(), 23);
        assert!(spring.iter().all(|s| s.end_ms - s.start_ms == HOUR));
        let fall = spans(Berlin, utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 23, 0), Bucket::Hour, None).unwrap();
        assert_eq!(fall.len(), 25);
        // The two 02:00 local hours: 00:00Z (CEST) and 01:00Z (CET).
        assert_eq!(fall[2].start_ms, utc(2026, 10, 25, 0, 0));
        assert_eq!(fall[3].start_ms, utc(2026, 10, 25, 1, 0));
    }

    #[test]
    fn hours_in_a_half_hour_zone_start_at_half_past_utc_and_clip_to_the_range() {
        // Kolkata +05:30: 00:00Z is 05:30 local; local hours begin at 00:30Z, 01:30Z, 02:30Z.
        let s = spans(Kolkata, utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 3, 0), Bucket::Hour, None).unwrap();
        let starts: Vec<i64> = s.iter().map(|s| s.start_ms).collect();
        assert_eq!(
            starts,
            vec![utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1, 30), utc(2026, 1, 1, 2, 30)]
        );
        assert_eq!(s[3].end_ms, utc(2026, 1, 1, 3, 0));
    }

    #[test]
    fn weeks_start_on_iso_mondays_and_months_on_the_first() {
        // 2026-03-01 is a Sunday. Berlin local midnights: 03-01 = 02-28 23:00Z; Mondays 03-02,
        // 09, 16, 23 (CET, 23:00Z the day before) and 03-30 (CEST, 03-29 22:00Z); end 03-31.
        let w = spans(Berlin, utc(2026, 2, 28, 23, 0), utc(2026, 3, 30, 22, 0), Bucket::Week, None).unwrap();
        // 24 h (Sunday), 4 full weeks of 168 h except the DST week 03-23 … 03-30: 167 h, then 24 h.
        assert_eq!(hours(&w), vec![24, 168, 168, 168, 167, 24]);
        assert_eq!(w[1].start_ms, utc(2026, 3, 1, 23, 0));
        // Months from 02-15 to 04-15 local: Feb 14 days (336 h), March 31 × 24 − 1 = 743 h,
        // April 14 days (336 h).
        let m = spans(Berlin, utc(2026, 2, 14, 23, 0), utc(2026, 4, 14, 22, 0), Bucket::Month, None).unwrap();
        assert_eq!(hours(&m), vec![336, 743, 336]);
        assert_eq!(m[1].start_ms, utc(2026, 2, 28, 23, 0));
        assert_eq!(m[2].start_ms, utc(2026, 3, 31, 22, 0));
    }

    #[test]
    fn shift_buckets_carry_the_shift_name_and_need_a_calendar() {
        let plan: ShiftPlan = serde_json::from_str(
            r#"{"shifts": [{"name": "early", "from": "06:00", "to": "14:00"}, {"name": "night", "from": "22:00", "to": "06:00"}]}"#,
        )
        .unwrap();
        let calendar = ShiftCalendar::new(vec![plan]).unwrap();
        // 2026-01-05 local day (CET): night from 01-04 runs to 05:00Z, early 05:00Z–13:00Z,
        // night from 21:00Z to the end of the range.
        let s = spans(Berlin, utc(2026, 1, 4, 23, 0), utc(2026, 1, 5, 23, 0), Bucket::Shift, Some(&calendar)).unwrap();
        let got: Vec<(i64, i64, Option<&str>)> = s.iter().map(|s| (s.start_ms, s.end_ms, s.label.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                (utc(2026, 1, 4, 23, 0), utc(2026, 1, 5, 5, 0), Some("night")),
                (utc(2026, 1, 5, 5, 0), utc(2026, 1, 5, 13, 0), Some("early")),
                (utc(2026, 1, 5, 21, 0), utc(2026, 1, 5, 23, 0), Some("night")),
            ]
        );
        let err = spans(Berlin, 0, SLOT_MS, Bucket::Shift, None).unwrap_err();
        assert_eq!(err.field, "bucket");
    }

    #[test]
    fn ranges_off_the_grid_are_refused() {
        assert_eq!(spans(Berlin, 60_000, SLOT_MS * 4, Bucket::Day, None).unwrap_err().field, "from");
        assert_eq!(spans(Berlin, 0, SLOT_MS * 4 + 1, Bucket::Day, None).unwrap_err().field, "to");
        assert_eq!(spans(Berlin, SLOT_MS, 0, Bucket::Day, None).unwrap_err().field, "to");
        assert!(spans(Berlin, SLOT_MS, SLOT_MS, Bucket::Day, None).unwrap().is_empty());
        assert_eq!(serde_json::from_str::<Bucket>("\"shift\"").unwrap(), Bucket::Shift);
    }

    #[test]
    fn folding_sums_the_slots_starting_in_a_span() {
        // Slots at 0, 15, 30, 45 min with 1, 2, 3, 4 kWh (idle 0.5 each, 900 000 ms covered).
        let slots: Vec<Slot> = (0..4)
            .map(|i| Slot { start_ms: i * SLOT_MS, kwh: (i + 1) as f64, idle_kwh: 0.5, covered_ms: SLOT_MS })
            .collect();
        let span = Span { start_ms: SLOT_MS, end_ms: 3 * SLOT_MS, label: None };
        // Slots 15 and 30: 2 + 3 = 5 kWh, idle 1.0, 2 × 900 000 ms.
        assert_eq!(fold(&slots, &span), Totals { kwh: 5.0, idle_kwh: 1.0, covered_ms: 2 * SLOT_MS });
        // Overlapping spans are folded one by one: the whole hour is 1 + 2 + 3 + 4 = 10.
        let all = fold_spans(&slots, &[span.clone(), Span { start_ms: 0, end_ms: 4 * SLOT_MS, label: None }]);
        assert_eq!((all[0].kwh, all[1].kwh), (5.0, 10.0));
        // Sorted spans with a hole (as shifts leave) take the single pass: slot 0 → 1 kWh,
        // slot 1 lies in no span, slots 2 and 3 → 3 + 4 = 7 kWh.
        let sorted = [
            Span { start_ms: 0, end_ms: SLOT_MS, label: None },
            Span { start_ms: 2 * SLOT_MS, end_ms: 5 * SLOT_MS, label: None },
        ];
        let got: Vec<f64> = fold_spans(&slots, &sorted).iter().map(|t| t.kwh).collect();
        assert_eq!(got, vec![1.0, 7.0]);
        assert_eq!(fold(&slots, &sorted[1]).kwh, 7.0);
    }
}

#[cfg(test)]
mod in_place {
    use proptest::prelude::*;

    use super::*;

    /// A device's slots cut into day parts of the given lengths (some with totals).
    fn cut<'a>(slots: &'a [Slot], lengths: &[usize], with_totals: bool) -> Vec<DayPart<'a>> {
        let mut parts = Vec::new();
        let mut at = 0;
        for (i, n) in lengths.iter().cycle().enumerate() {
            if at >= slots.len() {
                break;
            }
            let end = (at + n).min(slots.len());
            let part = &slots[at..end];
            parts.push(DayPart { slots: part, totals: (with_totals && i % 3 != 1).then(|| totals(part)) });
            at = end;
        }
        parts
    }

    proptest! {
        #[test]
        fn folding_in_place_is_bit_for_bit_the_fold_of_the_copies(
            kwh in prop::collection::vec(prop::collection::vec(-5.0f64..1e4, 40), 1..6),
            lengths in prop::collection::vec(1usize..12, 1..5),
            bounds in prop::collection::vec(0i64..40, 1..8),
        ) {
            let devices: Vec<Vec<Slot>> = kwh
                .iter()
                .map(|d| {
                    d.iter()
                        .enumerate()
                        .map(|(i, k)| Slot { start_ms: i as i64 * SLOT_MS, kwh: *k / 3.0, idle_kwh: *k / 7.0, covered_ms: i as i64 })
                        .collect()
                })
                .collect();
            let mut cuts: Vec<i64> = bounds.iter().map(|b| b * SLOT_MS).collect();
            cuts.push(0);
            cuts.push(40 * SLOT_MS);
            cuts.sort_unstable();
            cuts.dedup();
            let spans: Vec<Span> =
                cuts.windows(2).map(|w| Span { start_ms: w[0], end_ms: w[1], label: None }).collect();
            let parts: Vec<Vec<DayPart<'_>>> = devices.iter().map(|d| cut(d, &lengths, true)).collect();
            // The old way: the copies summed slot by slot, every span folded per device.
            let mut expected = vec![Slot::default(); 40];
            for (i, e) in expected.iter_mut().enumerate() {
                e.start_ms = i as i64 * SLOT_MS;
            }
            for d in &devices {
                for (e, s) in expected.iter_mut().zip(d) {
                    e.kwh += s.kwh;
                    e.idle_kwh += s.idle_kwh;
                    e.covered_ms += s.covered_ms;
                }
            }
            let total = sum_parts(&parts, 0, 40 * SLOT_MS);
            prop_assert_eq!(
                total.iter().map(|s| (s.kwh.to_bits(), s.idle_kwh.to_bits(), s.covered_ms)).collect::<Vec<_>>(),
                expected.iter().map(|s| (s.kwh.to_bits(), s.idle_kwh.to_bits(), s.covered_ms)).collect::<Vec<_>>()
            );
            for (d, p) in devices.iter().zip(&parts) {
                let got: Vec<u64> = fold_parts_kwh(p, &spans).iter().map(|k| k.to_bits()).collect();
                let want: Vec<u64> = spans.iter().map(|s| fold(d, s).kwh.to_bits()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn a_day_bucket_over_whole_days_reads_only_their_totals() {
        // Two days of four slots; the parts carry totals that differ from their slots, so
        // the answer shows which were read: a span over exactly the first day takes its
        // totals; a span starting mid-day adds slots.
        let slots: Vec<Slot> = (0..8).map(|i| Slot { start_ms: i * SLOT_MS, kwh: 1.0, ..Slot::default() }).collect();
        let marked = Totals { kwh: 100.0, ..Totals::default() };
        let parts = [
            DayPart { slots: &slots[..4], totals: Some(marked) },
            DayPart { slots: &slots[4..], totals: Some(marked) },
        ];
        let span = |a: i64, b: i64| Span { start_ms: a * SLOT_MS, end_ms: b * SLOT_MS, label: None };
        assert_eq!(fold_parts_kwh(&parts, &[span(0, 4), span(4, 8)]), vec![100.0, 100.0]);
        // The whole range: the first day's totals, then the second day's slots one by one.
        assert_eq!(fold_parts_kwh(&parts, &[span(0, 8)]), vec![104.0]);
        assert_eq!(fold_parts_kwh(&parts, &[span(1, 8), span(8, 9)]), vec![7.0, 0.0]);
    }
}
