//! The export benchmark of issue 19: 10 devices × 10 properties × 30 days at 1 min
//! (4.32 M values) from the embedded store into a Parquet file; the target is ≤ 10 s.
//! A plain binary (one long run, not a sampling loop):
//! `cargo bench -p factoryops-datasets --bench export`. Env: BENCH_DAYS (default 30), BENCH_DIR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use factoryops_datasets::{DEFAULT_BATCH_VALUES, DatasetRequest, Limits, export, validate};
use factoryops_tsdb::conformance::{T0, factory, point};
use factoryops_tsdb::{EmbeddedConfig, EmbeddedStore, TelemetryStore, Value};
use factoryops_types::{SystemClock, format_rfc3339_ms};

/// User + system CPU seconds of this process, from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let days: i64 = std::env::var("BENCH_DAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let base = std::env::var("BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("tsdb")), Arc::new(SystemClock)).unwrap();
        let fac = factory("bench");
        let minutes = days * 1440;
        let t = Instant::now();
        // Power-like signals with 2 decimals, one write per device and day.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for day in 0..days {
            for d in 0..10 {
                let mut pts = Vec::with_capacity(1440 * 10);
                for m in day * 1440..(day + 1) * 1440 {
                    for p in 0..10 {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let v = ((40.0 + p as f64 * 5.0 + (state % 2000) as f64 / 100.0) * 100.0).round() / 100.0;
                        pts.push(point(&format!("dev-{d}"), &format!("prop-{p}"), T0 + m * 60_000, Value::Float(v)));
                    }
                }
                store.write(&fac, &pts).await.unwrap();
            }
        }
        store.flush().await.unwrap();
        println!("loaded {} values in {:.1} s", minutes * 100, t.elapsed().as_secs_f64());

        let req = DatasetRequest {
            devices: (0..10).map(|d| format!("dev-{d}")).collect(),
            properties: (0..10).map(|p| format!("prop-{p}")).collect(),
            from: format_rfc3339_ms(T0),
            to: format_rfc3339_ms(T0 + minutes * 60_000),
            every: None,
            agg: None,
        };
        let q = validate(&req, &Limits::default()).unwrap();
        let path = dir.path().join("out.parquet");
        let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        let cpu0 = cpu_seconds();
        let t = Instant::now();
        let (s, _) = export(&store, &fac, &q, u64::MAX, DEFAULT_BATCH_VALUES, file, &mut |_| {}).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        assert_eq!(s.values, (minutes * 100) as u64);
        println!(
            "export: {} values, {} rows × {} columns, {:.1} MB, {:.2} s wall, {:.2} s CPU, {:.2} M values/s, sha256 {}",
            s.values,
            s.rows,
            s.columns,
            s.bytes as f64 / 1e6,
            secs,
            cpu,
            s.values as f64 / secs / 1e6,
            s.sha256
        );
    });
}
