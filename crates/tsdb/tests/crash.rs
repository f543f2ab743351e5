//! Crash test: a child process (this test binary, re-executed) writes batches and prints
//! the id of every acknowledged batch; the parent SIGKILLs it at random moments and then
//! checks that every acknowledged batch is fully readable. The child also flushes now and
//! then, so kills land inside flushes, WAL rotation and segment deletion too.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use factoryops_tsdb::conformance::{T0, factory, point, raw_query};
use factoryops_tsdb::{EmbeddedConfig, EmbeddedStore, HeadLimit, Point, SyncMode, TelemetryStore, Value};
use factoryops_types::SystemClock;

const DIR_VAR: &str = "FACTORYOPS_TSDB_CRASH_DIR";
const START_VAR: &str = "FACTORYOPS_TSDB_CRASH_START";
const DEVICES: u64 = 5;
const PER_BATCH: u64 = 50;

fn batch(b: u64) -> (String, Vec<Point>) {
    let dev = format!("d{}", b % DEVICES);
    let pts = (0..PER_BATCH)
        .map(|i| point(&dev, "p", T0 + (b * 100 + i) as i64, Value::Float((b * 100 + i) as f64 / 100.0)))
        .collect();
    (dev, pts)
}

/// The child side; a no-op unless started by `acknowledged_writes_survive_sigkill`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let start: u64 = std::env::var(START_VAR).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let config = EmbeddedConfig {
            sync: SyncMode::Batch,
            head_limit: HeadLimit { points: 20_000, ..HeadLimit::default() },
            ..EmbeddedConfig::new(&dir)
        };
        let store = Arc::new(EmbeddedStore::open(config, Arc::new(SystemClock)).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        for w in 0..3u64 {
            let store = Arc::clone(&store);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut k = 0u64;
                loop {
                    let b = start + w + 3 * k;
                    store.write(&factory("crash"), &batch(b).1).await.unwrap();
                    tx.send(b).unwrap();
                    if k % 17 == 16 {
                        store.flush().await.unwrap();
                    }
                    k += 1;
                }
            });
        }
        let mut out = std::io::stdout().lock();
        while let Some(b) = rx.recv().await {
            writeln!(out, "ACK {b}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashSet<u64> = HashSet::new();
    let mut next_start = 0u64;
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for cycle in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture"])
            .env(DIR_VAR, dir.path())
            .env(START_VAR, next_start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("ACK ").and_then(|s| s.parse::<u64>().ok()) {
                    ids.push(id);
                }
            }
            ids
        });
        std::thread::sleep(Duration::from_millis(100 + seed % 250));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let ids = reader.join().unwrap();
        let max = ids.iter().copied().max().unwrap_or(next_start);
        acked.extend(ids);
        // Ids from later cycles never collide with batches an earlier child may have written unacknowledged.
        next_start = max + 1000;

        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path()), Arc::new(SystemClock)).unwrap();
        rt.block_on(async {
            let mut present: HashSet<(u64, u64)> = HashSet::new();
            for d in 0..DEVICES {
                let got = store
                    .query(&factory("crash"), &raw_query(&format!("d{d}"), "p", T0, T0 + 1_000_000_000))
                    .await
                    .unwrap();
                for s in got {
                    let n = (s.ts_ms - T0) as u64;
                    assert_eq!(s.value, Value::Float(n as f64 / 100.0), "value intact");
                    present.insert((n / 100, n % 100));
                }
            }
            for &b in &acked {
                for i in 0..PER_BATCH {
                    assert!(present.contains(&(b, i)), "cycle {cycle}: acknowledged batch {b} point {i} lost");
                }
            }
        });
        assert!(store.check().unwrap().ok());
    }
    assert!(acked.len() > 100, "children acknowledged only {} batches", acked.len());
    eprintln!("{} acknowledged batches verified across 20 SIGKILLs in {:?}", acked.len(), started.elapsed());
}
