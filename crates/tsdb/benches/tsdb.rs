//! Benchmarks of the embedded engine; a plain binary (criterion's sampling is a poor fit
//! for throughput and recovery runs). `cargo bench -p factoryops-tsdb --bench tsdb`.
//! Env: BENCH_INGEST_POINTS (default 10M), BENCH_WAL_MB (default 1024), BENCH_DIR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use factoryops_tsdb::conformance::{T0, agg_query, factory, point};
use factoryops_tsdb::{Agg, EmbeddedConfig, EmbeddedStore, HeadLimit, Point, SyncMode, TelemetryStore, Value};
use factoryops_types::SystemClock;

/// User + system CPU seconds of this process, from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command name: state is index 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly normal, mean 0, sd ~1 (sum of uniforms).
    fn gauss(&mut self) -> f64 {
        (0..4).map(|_| (self.next() % 10_000) as f64 / 10_000.0).sum::<f64>() * 1.732 - 3.464
    }
}

/// A realistic energy signal: noisy power in kW with 2 decimals, or a monotonic kWh
/// counter with 2 decimals, at 1 Hz with a few ms of timestamp jitter.
fn energy_series(kind: usize, seed: u64, n: usize) -> Vec<(i64, f64)> {
    let mut rng = Rng(seed | 1);
    let mut counter = 10_000.0 + (seed % 1000) as f64;
    let mut level: f64 = 40.0 + (seed % 50) as f64;
    (0..n)
        .map(|i| {
            let ts = T0 + i as i64 * 1000 + (rng.next() % 11) as i64 - 5;
            let v = if kind == 0 {
                level = (level + rng.gauss() * 0.2).clamp(5.0, 150.0);
                ((level + rng.gauss() * 0.8) * 100.0).round() / 100.0
            } else {
                counter += level / 3600.0;
                (counter * 100.0).round() / 100.0
            };
            (ts, v)
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn bench_dir(name: &str) -> std::path::PathBuf {
    let base = std::env::var("BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let dir = base.join(format!("factoryops-tsdb-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ingest() {
    let total = env_or("BENCH_INGEST_POINTS", 10_000_000) as usize;
    let dir = bench_dir("ingest");
    let rt = rt();
    let config = EmbeddedConfig { sync: SyncMode::Batch, ..EmbeddedConfig::new(&dir) };
    let store = Arc::new(EmbeddedStore::open(config, Arc::new(SystemClock)).unwrap());
    // 10k series: 1000 devices × 10 properties; each of the 4 writers owns 2,500 series
    // and sends them round-robin at 1 Hz, cut into batches of 1k, 2.5k and 5k points.
    // Batches are prebuilt so only the store is timed.
    let writers = 4usize;
    let per_writer = total / writers;
    let props: Vec<String> = (0..10).map(|p| format!("phase.p{p}")).collect();
    let mut plans: Vec<Vec<Vec<Point>>> = Vec::new();
    for w in 0..writers {
        let mut rng = Rng(w as u64 + 7);
        let mut stream = (0..per_writer).map(|k| {
            let s = w * 2500 + k % 2500;
            let ts = T0 + (k / 2500) as i64 * 1000;
            let v = ((rng.next() % 100_000) as f64) / 100.0;
            point(&format!("dev-{}", s / 10), &props[s % 10], ts, Value::Float(v))
        });
        let mut bs = Vec::new();
        for size in [1000usize, 2500, 5000].into_iter().cycle() {
            let b: Vec<Point> = stream.by_ref().take(size).collect();
            if b.is_empty() {
                break;
            }
            bs.push(b);
        }
        plans.push(bs);
    }
    let n_points: usize = plans.iter().flatten().map(Vec::len).sum();
    let n_batches: usize = plans.iter().map(Vec::len).sum();
    let fac = factory("bench");
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for plan in plans {
            let store = Arc::clone(&store);
            let fac = fac.clone();
            tasks.push(tokio::spawn(async move {
                for pts in plan {
                    store.write(&fac, &pts).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "ingest: {n_points} points in {n_batches} batches of 1k/2.5k/5k from {writers} concurrent writers, 10k series, sync=batch: {:.2} s wall, {:.0} points/s, {:.2} CPU-s, {:.0} points per CPU-second",
        wall,
        n_points as f64 / wall,
        cpu,
        n_points as f64 / cpu.max(0.01)
    );
    let t1 = Instant::now();
    let c1 = cpu_seconds();
    rt.block_on(store.flush()).unwrap();
    println!(
        "ingest: flush of the remaining head: {:.2} s wall, {:.2} CPU-s; stats {:?}",
        t1.elapsed().as_secs_f64(),
        cpu_seconds() - c1,
        store.stats().unwrap()
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn size_and_query() {
    let dir = bench_dir("size");
    let rt = rt();
    let store = EmbeddedStore::open(EmbeddedConfig::new(&dir), Arc::new(SystemClock)).unwrap();
    let fac = factory("bench");
    let series = 40usize;
    let day = 86_400usize;
    rt.block_on(async {
        for s in 0..series {
            let kind = s % 2;
            let prop = if kind == 0 { "power.kw" } else { "energy.kwh" };
            let data = energy_series(kind, s as u64 * 7919, day);
            for chunk in data.chunks(5000) {
                let pts: Vec<Point> =
                    chunk.iter().map(|&(t, v)| point(&format!("meter-{}", s / 2), prop, t, Value::Float(v))).collect();
                store.write(&fac, &pts).await.unwrap();
            }
        }
        store.flush().await.unwrap();
    });
    let st = store.stats().unwrap();
    let pts = st.points as f64;
    println!(
        "size: {} points ({} series × 1 day at 1 Hz, half noisy 2-decimal power, half 2-decimal counters): raw chunks {:.3} B/pt, +1-min rollups {:.3} B/pt, +1-h rollups {:.3} B/pt, footers {:.4} B/pt; total {:.3} B/pt",
        st.points,
        series,
        st.raw_bytes as f64 / pts,
        st.minute_bytes as f64 / pts,
        st.hour_bytes as f64 / pts,
        st.footer_bytes as f64 / pts,
        (st.raw_bytes + st.minute_bytes + st.hour_bytes + st.footer_bytes) as f64 / pts
    );
    // Per kind: compress one series of each kind alone.
    for (kind, name) in [(0, "power"), (1, "counter")] {
        let data = energy_series(kind, 42, day);
        for n in [7200usize, day] {
            let pts: Vec<(i64, Value)> = data[..n].iter().map(|&(t, v)| (t, Value::Float(v))).collect();
            let enc = factoryops_tsdb::embedded::encode_chunk(&pts);
            // Constant values cost ~nothing, which isolates the timestamp stream.
            let ts_only: Vec<(i64, Value)> = pts.iter().map(|&(t, _)| (t, Value::Float(0.0))).collect();
            let ts = factoryops_tsdb::embedded::encode_chunk(&ts_only).len() as f64 / n as f64;
            let total = enc.len() as f64 / n as f64;
            println!(
                "size: {name} alone, one chunk of {n} points: {total:.3} B/pt (timestamps {ts:.3}, values {:.3})",
                total - ts
            );
        }
    }

    for (label, every, agg) in [("24 h at 1-min avg", 60_000, Agg::Avg), ("24 h at 1-h max", 3_600_000, Agg::Max)] {
        let q = agg_query("meter-0", "power.kw", T0, T0 + 86_400_000, every, agg);
        let mut times = Vec::new();
        rt.block_on(async {
            for i in 0..1000 {
                let t = Instant::now();
                let r = store.query(&fac, &q).await.unwrap();
                times.push(t.elapsed());
                if i == 0 {
                    assert!(r.len() as i64 >= 86_400_000 / every - 1, "{} buckets", r.len());
                }
            }
        });
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!("query: {label}, 86,400 points: p50 {:?}, p99 {:?}", pct(0.5), pct(0.99));
    }
    // The same from raw data only (what the head path or a rollup-less engine costs).
    drop(store);
    let store =
        EmbeddedStore::open(EmbeddedConfig { use_rollups: false, ..EmbeddedConfig::new(&dir) }, Arc::new(SystemClock))
            .unwrap();
    let q = agg_query("meter-0", "power.kw", T0, T0 + 86_400_000, 60_000, Agg::Avg);
    let mut times = Vec::new();
    rt.block_on(async {
        for _ in 0..200 {
            let t = Instant::now();
            store.query(&fac, &q).await.unwrap();
            times.push(t.elapsed());
        }
    });
    times.sort();
    println!("query: 24 h at 1-min avg without rollups (decode raw): p50 {:?}, p99 {:?}", times[100], times[197]);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn recovery() {
    let target_mb = env_or("BENCH_WAL_MB", 1024);
    let dir = bench_dir("recovery");
    let rt = rt();
    // Head big enough that the whole WAL stays unflushed, as after a kill before any flush.
    let config = || EmbeddedConfig {
        sync: SyncMode::Interval(1000),
        head_limit: HeadLimit { points: 200_000_000, bytes: 16 << 30 },
        flush_interval: Duration::from_secs(86_400),
        ..EmbeddedConfig::new(&dir)
    };
    let store = EmbeddedStore::open(config(), Arc::new(SystemClock)).unwrap();
    let fac = factory("bench");
    let t0 = Instant::now();
    let mut written = 0u64;
    rt.block_on(async {
        let mut round = 0i64;
        loop {
            for d in 0..100 {
                let pts: Vec<Point> = (0..5000)
                    .map(|i| {
                        point(
                            &format!("dev-{d}"),
                            "power",
                            T0 + round * 5_000_000 + i * 1000,
                            Value::Float((i % 977) as f64 / 100.0),
                        )
                    })
                    .collect();
                store.write(&fac, &pts).await.unwrap();
                written += 5000;
            }
            round += 1;
            if store.stats().unwrap().wal_bytes >= target_mb << 20 {
                break;
            }
        }
    });
    let wal = store.stats().unwrap().wal_bytes;
    println!(
        "recovery: wrote {written} points, WAL {:.0} MiB in {:.1} s",
        wal as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64()
    );
    // Dropping without flush leaves exactly what a SIGKILL after the last ack leaves.
    drop(store);
    let t = Instant::now();
    let store = EmbeddedStore::open(config(), Arc::new(SystemClock)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let st = store.stats().unwrap();
    assert_eq!(st.points, written);
    println!(
        "recovery: open + replay of {:.0} MiB WAL ({written} points) took {secs:.2} s ({:.0} MiB/s)",
        wal as f64 / (1 << 20) as f64,
        wal as f64 / (1 << 20) as f64 / secs
    );
    drop(store);
    // Again with the default head bound (20 M points): replay flushes parts as it goes.
    let t = Instant::now();
    let c = cpu_seconds();
    let store = EmbeddedStore::open(
        EmbeddedConfig { sync: SyncMode::Interval(1000), ..EmbeddedConfig::new(&dir) },
        Arc::new(SystemClock),
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let st = store.stats().unwrap();
    assert_eq!(st.points, written);
    println!(
        "recovery: same WAL with the default head bound (replay flushes {} part files on the way): {secs:.2} s, {:.2} CPU-s",
        st.part_files,
        cpu_seconds() - c
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |n: &str| only.as_deref().is_none_or(|o| n.contains(o));
    if want("ingest") {
        ingest();
    }
    if want("size") || want("query") {
        size_and_query();
    }
    if want("recovery") {
        recovery();
    }
}
