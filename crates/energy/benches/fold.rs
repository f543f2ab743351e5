//! The pure hot paths of the energy queries: folding a month of 15-minute slots of 1,000
//! devices into daily buckets, the peak demand of a month for 100 devices, and turning a
//! month of 10-second power samples of one device into slots.
//!
//! The consumption answer of a month of daily energy for 1,000 devices from cached days
//! (issue 18) is timed twice: as it was (every device's days copied into one vector,
//! summed slot by slot into the group total, then folded per bucket for the total and per
//! device) and as it is (the same sums in place over the cached days, a device's day
//! bucket read from the day's totals); the two give the same bits.

use std::hint::black_box;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use criterion::{Criterion, criterion_group, criterion_main};
use factoryops_energy::cache::CachedDay;
use factoryops_energy::calendar::{
    Bucket, DayPart, Span, Totals, fold, fold_parts_kwh, fold_spans, spans, sum_parts, totals,
};
use factoryops_energy::peak::demand;
use factoryops_energy::slots::{Idle, slots_from_power};
use factoryops_energy::{SLOT_MS, Slot};

/// March 2026 in Berlin (local midnights; 743 h with the DST change).
fn month() -> (i64, i64) {
    let ms = |m, d| Utc.with_ymd_and_hms(2026, m, d, 0, 0, 0).single().map_or(0, |t| t.timestamp_millis());
    (ms(2, 28) + 23 * 3_600_000, ms(3, 31) + 22 * 3_600_000)
}

fn device_slots(device: usize, from: i64, to: i64) -> Vec<Slot> {
    (0..(to - from) / SLOT_MS)
        .map(|i| Slot {
            start_ms: from + i * SLOT_MS,
            kwh: ((i as usize * 7 + device * 13) % 100) as f64 * 0.1,
            idle_kwh: 0.0,
            covered_ms: SLOT_MS,
        })
        .collect()
}

/// What the consumption fold returns: per bucket the group's totals and each device's kWh.
type Answer = Vec<(Totals, Vec<f64>)>;

/// Before: the days copied into a vector per device, the copies summed slot by slot, every
/// bucket folded over the total and over each device's copy.
fn fold_copies(cached: &[Vec<(Arc<CachedDay>, Totals)>], buckets: &[Span], from: i64, to: i64) -> Answer {
    let per_device: Vec<Vec<Slot>> = cached
        .iter()
        .map(|days| {
            let mut slots = Vec::with_capacity(usize::try_from((to - from) / SLOT_MS).unwrap_or(0));
            for (day, _) in days {
                slots.extend(day.slots.iter().filter(|s| s.start_ms >= from && s.start_ms < to));
            }
            slots
        })
        .collect();
    let mut total: Vec<Slot> =
        (0..(to - from) / SLOT_MS).map(|i| Slot { start_ms: from + i * SLOT_MS, ..Slot::default() }).collect();
    for slots in &per_device {
        for slot in slots {
            let Ok(i) = usize::try_from((slot.start_ms - from) / SLOT_MS) else { continue };
            if let Some(t) = total.get_mut(i) {
                t.kwh += slot.kwh;
                t.idle_kwh += slot.idle_kwh;
                t.covered_ms += slot.covered_ms;
            }
        }
    }
    buckets.iter().map(|span| (fold(&total, span), per_device.iter().map(|s| fold(s, span).kwh).collect())).collect()
}

/// After: the same sums over the cached days in place; `with_total` false is a warm
/// request whose group total comes from the service's group-day memo.
fn fold_in_place(
    cached: &[Vec<(Arc<CachedDay>, Totals)>],
    buckets: &[Span],
    from: i64,
    to: i64,
    memo: Option<&[Slot]>,
) -> Answer {
    let views: Vec<Vec<DayPart<'_>>> = cached
        .iter()
        .map(|days| days.iter().map(|(day, t)| DayPart { slots: &day.slots, totals: Some(*t) }).collect())
        .collect();
    let summed;
    let total = match memo {
        Some(total) => total,
        None => {
            summed = sum_parts(&views, from, to);
            &summed
        }
    };
    let by_device: Vec<Vec<f64>> = views.iter().map(|parts| fold_parts_kwh(parts, buckets)).collect();
    buckets.iter().enumerate().map(|(i, span)| (fold(total, span), by_device.iter().map(|k| k[i]).collect())).collect()
}

fn bits(answer: &Answer) -> Vec<(u64, u64, Vec<u64>)> {
    answer
        .iter()
        .map(|(t, d)| (t.kwh.to_bits(), t.idle_kwh.to_bits(), d.iter().map(|k| k.to_bits()).collect()))
        .collect()
}

fn consumption_benches(c: &mut Criterion) {
    let (from, to) = month();
    let days = spans(Berlin, from, to, Bucket::Day, None).unwrap_or_default();
    // A month of 1,000 devices as the cache holds it: one shared day per device and day,
    // with the day's totals.
    let cached: Vec<Vec<(Arc<CachedDay>, Totals)>> = (0..1_000)
        .map(|d| {
            let slots = device_slots(d, from, to);
            days.iter()
                .map(|day| {
                    let mine: Vec<Slot> = slots
                        .iter()
                        .filter(|s| s.start_ms >= day.start_ms && s.start_ms < day.end_ms)
                        .copied()
                        .collect();
                    let t = totals(&mine);
                    (Arc::new(CachedDay { slots: mine, gaps: Vec::new() }), t)
                })
                .collect()
        })
        .collect();
    let before = fold_copies(&cached, &days, from, to);
    assert_eq!(bits(&before), bits(&fold_in_place(&cached, &days, from, to, None)), "in place must give the same bits");
    let weeks = spans(Berlin, from, to, Bucket::Week, None).unwrap_or_default();
    assert_eq!(bits(&fold_copies(&cached, &weeks, from, to)), bits(&fold_in_place(&cached, &weeks, from, to, None)));
    let mut total: Vec<Slot> =
        (0..(to - from) / SLOT_MS).map(|i| Slot { start_ms: from + i * SLOT_MS, ..Slot::default() }).collect();
    for days in &cached {
        for (day, _) in days {
            for s in &day.slots {
                let t = &mut total[usize::try_from((s.start_ms - from) / SLOT_MS).unwrap_or(0)];
                t.kwh += s.kwh;
                t.idle_kwh += s.idle_kwh;
                t.covered_ms += s.covered_ms;
            }
        }
    }

    let mut group = c.benchmark_group("month of daily energy, 1,000 devices, from cached days");
    group.sample_size(20);
    group.bench_function("before: copies per device, folded twice", |b| {
        b.iter(|| black_box(fold_copies(&cached, &days, from, to).len()))
    });
    group.bench_function("after: in place, group total summed", |b| {
        b.iter(|| black_box(fold_in_place(&cached, &days, from, to, None).len()))
    });
    group.bench_function("after: in place, group total from the memo", |b| {
        b.iter(|| black_box(fold_in_place(&cached, &days, from, to, Some(&total)).len()))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let (from, to) = month();
    let devices: Vec<Vec<Slot>> = (0..1_000).map(|d| device_slots(d, from, to)).collect();
    let days = spans(Berlin, from, to, Bucket::Day, None).unwrap_or_default();
    c.bench_function("fold a month of slots of 1,000 devices into days", |b| {
        b.iter(|| {
            let totals: f64 =
                devices.iter().map(|slots| fold_spans(slots, &days).iter().map(|t| t.kwh).sum::<f64>()).sum();
            black_box(totals)
        })
    });

    // The floor: one pass over the same 95 MB of slots (32 bytes each) summing kWh only.
    c.bench_function("sum the kWh of the same slots (memory floor)", |b| {
        b.iter(|| black_box(devices.iter().map(|slots| slots.iter().map(|s| s.kwh).sum::<f64>()).sum::<f64>()))
    });

    let months = spans(Berlin, from, to, Bucket::Month, None).unwrap_or_default();
    let hundred: Vec<(usize, &[Slot])> = devices.iter().take(100).enumerate().map(|(i, s)| (i, s.as_slice())).collect();
    c.bench_function("peak demand of a month for 100 devices", |b| {
        b.iter(|| black_box(demand(&hundred, Berlin, 15, &months).map(|p| p.len())))
    });

    let samples: Vec<(i64, f64)> = (0..(to - from) / 10_000).map(|i| (from + i * 10_000, (i % 600) as f64)).collect();
    let states: Vec<(i64, bool)> = (0..(to - from) / 3_600_000).map(|h| (from + h * 3_600_000, h % 3 == 0)).collect();
    c.bench_function("slots of a month of 10 s power samples", |b| {
        b.iter(|| {
            black_box(slots_from_power(&samples, &Idle::States(&states), from, to, SLOT_MS).map(|r| r.slots.len()))
        })
    });
}

criterion_group!(energy, consumption_benches, benches);
criterion_main!(energy);
