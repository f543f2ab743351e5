//! A 30-day energy report for 100 devices, built and rendered to PDF, XLSX and JSON
//! (issue 20: ≤ 5 s each). Before the timed runs it renders each format once and prints
//! the process's peak resident memory during that render: the kernel's high-water mark
//! (`VmHWM`) is reset through `/proc/self/clear_refs` first, so the figure is this render's
//! peak, not the start-up's. Run: `cargo bench -p factoryops-reports --bench render`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use factoryops_reports::build::energy;
use factoryops_reports::{Format, render};

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// (peak RSS during `f` in KiB, RSS before in KiB); `None` off Linux.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, Option<(u64, u64)>) {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib("VmRSS:");
    let out = f();
    let peak = status_kib("VmHWM:");
    let mem = if reset { peak.zip(before) } else { None };
    (out, mem)
}

fn bench(c: &mut Criterion) {
    let input = common::energy_large(100, 30);
    let report = energy::build(&input).expect("report");
    for format in [Format::Pdf, Format::Xlsx, Format::Json] {
        let start = Instant::now();
        let (bytes, mem) = peak_during(|| render(&report, format).expect("render"));
        let took = start.elapsed();
        match mem {
            Some((peak, before)) => eprintln!(
                "energy 30 d × 100 devices {format:?}: {} bytes in {took:?}; peak RSS {:.1} MiB ({:.1} MiB above the {:.1} MiB before)",
                bytes.len(),
                peak as f64 / 1024.0,
                peak.saturating_sub(before) as f64 / 1024.0,
                before as f64 / 1024.0
            ),
            None => eprintln!("energy 30 d × 100 devices {format:?}: {} bytes in {took:?}", bytes.len()),
        }
    }

    let mut group = c.benchmark_group("energy_report_30d_100_devices");
    group.sample_size(10);
    group.bench_function("build", |b| b.iter(|| energy::build(black_box(&input)).expect("report")));
    group.bench_function("pdf", |b| b.iter(|| render(black_box(&report), Format::Pdf).expect("pdf")));
    group.bench_function("xlsx", |b| b.iter(|| render(black_box(&report), Format::Xlsx).expect("xlsx")));
    group.bench_function("json", |b| b.iter(|| render(black_box(&report), Format::Json).expect("json")));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
