//! The pure hot paths of the energy queries: folding a month of 15-minute slots of 1,000
//! devices into daily buckets, the peak demand of a month for 100 devices, and turning a
//! month of 10-second power samples of one device into slots.

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use criterion::{Criterion, criterion_group, criterion_main};
use factoryops_energy::calendar::{Bucket, fold_spans, spans};
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

criterion_group!(energy, benches);
criterion_main!(energy);
