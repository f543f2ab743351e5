//! The embedded engine and InfluxDB 1.x side by side, in one run on one machine.
//! `cargo bench -p factoryops-tsdb --bench influx [ingest|size|query]`.
//! Starts a private `influxd` (tests/support/influxd.rs); exits with a message if absent.
//! Env: BENCH_INFLUX_POINTS (ingest points per engine, default 3M), BENCH_DIR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/influxd.rs"]
mod influxd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use factoryops_tsdb::conformance::{T0, agg_query, factory, point};
use factoryops_tsdb::{
    Agg, EmbeddedConfig, EmbeddedStore, InfluxConfig, InfluxStore, Point, SyncMode, TelemetryStore, Value,
};
use factoryops_types::SystemClock;
use influxd::{Influxd, cpu_seconds, du};

fn self_cpu() -> f64 {
    cpu_seconds("self")
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
    fn gauss(&mut self) -> f64 {
        (0..4).map(|_| (self.next() % 10_000) as f64 / 10_000.0).sum::<f64>() * 1.732 - 3.464
    }
}

/// The same realistic energy signal as benches/tsdb.rs.
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
    let dir = base.join(format!("factoryops-influx-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

async fn influx_store(server: &Influxd, db: &str, dir: &std::path::Path) -> InfluxStore {
    let mut c = InfluxConfig::new(server.url(db), dir.join(format!("buffer-{db}")));
    c.request_timeout = Duration::from_secs(60);
    InfluxStore::open(c).await.unwrap()
}

/// 10k series (1000 devices × 10 properties), 4 writers × 2,500 series, 1 Hz round-robin,
/// batches cycling 1k / 2.5k / 5k points; prebuilt.
fn plans(total: usize) -> Vec<Vec<Vec<Point>>> {
    let writers = 4usize;
    let per_writer = total / writers;
    let props: Vec<String> = (0..10).map(|p| format!("phase.p{p}")).collect();
    let mut plans = Vec::new();
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
    plans
}

async fn run_writers(store: Arc<dyn TelemetryStore>, plans: Vec<Vec<Vec<Point>>>) {
    let fac = factory("bench");
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
}

fn ingest(server: &Influxd) {
    let total = env_or("BENCH_INFLUX_POINTS", 3_000_000) as usize;
    let dir = bench_dir("ingest");
    let rt = rt();
    let n_points: usize = plans(total).iter().flatten().map(Vec::len).sum();

    // Embedded, sync=batch.
    let store = Arc::new(
        EmbeddedStore::open(
            EmbeddedConfig { sync: SyncMode::Batch, ..EmbeddedConfig::new(dir.join("embedded")) },
            Arc::new(SystemClock),
        )
        .unwrap(),
    );
    let p = plans(total);
    let (c0, t0) = (self_cpu(), Instant::now());
    rt.block_on(run_writers(store.clone(), p));
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), self_cpu() - c0);
    println!(
        "ingest embedded (sync=batch): {n_points} points, 10k series, 4 writers: {wall:.2} s, {:.0} points/s, {cpu:.2} CPU-s, {:.0} points per CPU-second (load {})",
        n_points as f64 / wall,
        n_points as f64 / cpu.max(0.01),
        uptime()
    );
    drop(store);

    // InfluxDB via the adapter (gzip line protocol, precision ms).
    let pid = server.pid().unwrap().to_string();
    let store: Arc<dyn TelemetryStore> = Arc::new(rt.block_on(influx_store(server, "ingest", &dir)));
    let p = plans(total);
    let (c0, i0, t0) = (self_cpu(), cpu_seconds(&pid), Instant::now());
    rt.block_on(run_writers(store.clone(), p));
    let wall = t0.elapsed().as_secs_f64();
    let (gen_cpu, influx_cpu) = (self_cpu() - c0, cpu_seconds(&pid) - i0);
    println!(
        "ingest influxdb: {n_points} points, 10k series, 4 writers: {wall:.2} s, {:.0} points/s; influxd {influx_cpu:.2} CPU-s ({:.2} cores), {:.0} points per influxd CPU-second; client side (line protocol + gzip + HTTP) {gen_cpu:.2} CPU-s; {:.0} points per CPU-second both together (load {})",
        n_points as f64 / wall,
        influx_cpu / wall,
        n_points as f64 / influx_cpu.max(0.01),
        n_points as f64 / (influx_cpu + gen_cpu).max(0.01),
        uptime()
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

const SERIES: usize = 40;
const DAY: usize = 86_400;

fn day_points(s: usize) -> Vec<Point> {
    let kind = s % 2;
    let prop = if kind == 0 { "power.kw" } else { "energy.kwh" };
    energy_series(kind, s as u64 * 7919, DAY)
        .into_iter()
        .map(|(t, v)| point(&format!("meter-{}", s / 2), prop, t, Value::Float(v)))
        .collect()
}

fn size_and_query(server: &Influxd, do_query: bool) {
    let dir = bench_dir("size");
    let rt = rt();
    let fac = factory("bench");
    let embedded = EmbeddedStore::open(EmbeddedConfig::new(dir.join("embedded")), Arc::new(SystemClock)).unwrap();
    let influx = rt.block_on(influx_store(server, "size", &dir));
    rt.block_on(async {
        for s in 0..SERIES {
            let pts = day_points(s);
            for chunk in pts.chunks(5000) {
                embedded.write(&fac, chunk).await.unwrap();
                influx.write(&fac, chunk).await.unwrap();
            }
        }
        embedded.flush().await.unwrap();
    });
    let total = (SERIES * DAY) as f64;
    let st = embedded.stats().unwrap();
    let emb_bytes = st.raw_bytes + st.minute_bytes + st.hour_bytes + st.footer_bytes + st.index_bytes + st.wal_bytes;
    println!(
        "size embedded: {} points: raw {:.3} B/pt, total on disk (raw + rollups + footers + index + wal) {:.3} B/pt",
        st.points,
        st.raw_bytes as f64 / total,
        emb_bytes as f64 / total
    );
    // InfluxDB: wait until the cache is snapshotted and the TSM files fully compacted
    // (the bench config makes both happen after seconds of write-idleness).
    let data = server.data_dir().join("size");
    let wal = server.wal_dir().join("size");
    let t0 = Instant::now();
    let mut last = (0, 0);
    let mut stable = 0;
    while t0.elapsed() < Duration::from_secs(180) {
        std::thread::sleep(Duration::from_secs(2));
        let now = (du(&data), du(&wal));
        let tsm_files = count_ext(&data, "tsm");
        if now == last && now.1 < 1024 && tsm_files <= 1 {
            stable += 1;
            if stable >= 3 {
                break;
            }
        } else {
            stable = 0;
        }
        last = now;
    }
    let (d, w) = (du(&data), du(&wal));
    println!(
        "size influxdb: {} points after {:.0} s idle (snapshot + full compaction; {} .tsm file(s)): data dir {:.3} B/pt (tsm {:.3} B/pt), wal {} B; load {}",
        SERIES * DAY,
        t0.elapsed().as_secs_f64(),
        count_ext(&data, "tsm"),
        d as f64 / total,
        size_ext(&data, "tsm") as f64 / total,
        w,
        uptime()
    );
    // Where the bytes are: apparent size vs allocated blocks (the series file's segments
    // are preallocated and sparse).
    let mut groups: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
    for (path, len) in walk(&data) {
        let key = if path.components().any(|c| c.as_os_str() == "_series") {
            "_series (series file)".to_string()
        } else {
            path.extension().map_or_else(|| "other".into(), |e| format!(".{}", e.to_string_lossy()))
        };
        let blocks = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&path).map_or(0, |m| m.blocks() * 512)
        };
        let g = groups.entry(key).or_default();
        g.0 += len;
        g.1 += blocks;
    }
    for (k, (len, blocks)) in &groups {
        println!(
            "size influxdb: {k}: apparent {:.3} B/pt, allocated {:.3} B/pt",
            *len as f64 / total,
            *blocks as f64 / total
        );
    }
    if do_query {
        let q = agg_query("meter-0", "power.kw", T0, T0 + 86_400_000, 60_000, Agg::Avg);
        let stores: [(&str, &dyn TelemetryStore, usize); 2] =
            [("embedded", &embedded, 1000), ("influxdb", &influx, 300)];
        for (name, store, n) in stores {
            let pid = server.pid().unwrap().to_string();
            let (i0, c0) = (cpu_seconds(&pid), self_cpu());
            let mut times = Vec::new();
            rt.block_on(async {
                for i in 0..n + 10 {
                    let t = Instant::now();
                    let r = store.query(&fac, &q).await.unwrap();
                    if i >= 10 {
                        times.push(t.elapsed());
                    } else {
                        assert_eq!(r.len(), 1440, "{name}: one bucket per minute");
                    }
                }
            });
            times.sort();
            let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
            println!(
                "query {name}: 24 h at 1-min avg over 86,400 points, {n} sequential queries via the port: p50 {:?}, p99 {:?}; CPU per query: client {:.2} ms, influxd {:.2} ms (load {})",
                pct(0.5),
                pct(0.99),
                (self_cpu() - c0) * 1000.0 / (n + 10) as f64,
                (cpu_seconds(&pid) - i0) * 1000.0 / (n + 10) as f64,
                uptime()
            );
        }
    }
    drop(influx);
    drop(embedded);
    let _ = std::fs::remove_dir_all(&dir);
}

fn count_ext(dir: &std::path::Path, ext: &str) -> usize {
    walk(dir).iter().filter(|(p, _)| p.extension().is_some_and(|e| e == ext)).count()
}

fn size_ext(dir: &std::path::Path, ext: &str) -> u64 {
    walk(dir).iter().filter(|(p, _)| p.extension().is_some_and(|e| e == ext)).map(|(_, l)| l).sum()
}

fn walk(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.filter_map(Result::ok) {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push((e.path(), m.len()));
        }
    }
    out
}

fn main() {
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    // Snapshot the cache and fully compact shards after a few idle seconds, so "bytes on
    // disk after flush" can be measured within the run.
    let extra = "  cache-snapshot-write-cold-duration = \"2s\"\n  compact-full-write-cold-duration = \"5s\"";
    let Some(server) = Influxd::start_with(extra) else {
        eprintln!("influxd not installed: nothing to compare against");
        return;
    };
    let version = std::process::Command::new(influxd::binary().unwrap())
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("{version}; load at start {}", uptime());
    if run("ingest") {
        ingest(&server);
    }
    if run("size") || run("query") {
        size_and_query(&server, run("query"));
    }
    println!("load at end {}", uptime());
}
