//! The embedded engine against the conformance suite, plus engine-specific behaviour:
//! flush/reopen, rollup equivalence, recovery from damaged WALs, retention, compaction,
//! back-pressure, stats and check.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use factoryops_tsdb::conformance::{self, T0, agg_query, device, factory, point, raw_query};
use factoryops_tsdb::{
    Agg, EmbeddedConfig, EmbeddedStore, HeadLimit, Point, RetentionPolicy, Sample, SeriesQuery, StoreHealth, SyncMode,
    TelemetryStore, TsdbError, Value,
};
use factoryops_types::{DeviceId, FactoryId, ManualClock, PropertyName, SystemClock};
use proptest::prelude::*;

fn config(dir: &std::path::Path) -> EmbeddedConfig {
    EmbeddedConfig::new(dir)
}

fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(config(dir), Arc::new(SystemClock)).unwrap()
}

/// Without background compaction, for tests that count part files.
fn open_manual(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig { background_compaction: false, ..config(dir) }, Arc::new(SystemClock)).unwrap()
}

/// Flushes after every write so reads go through part files, so the suite also covers
/// chunks and rollups. (Recovery by reopening is covered by the `*reopen*`, torn-WAL and
/// replay tests below, not by this wrapper.)
struct FlushEveryWrite(EmbeddedStore);

#[async_trait]
impl TelemetryStore for FlushEveryWrite {
    async fn write(&self, factory: &FactoryId, points: &[Point]) -> Result<(), TsdbError> {
        self.0.write(factory, points).await?;
        self.0.flush().await
    }
    async fn query(&self, factory: &FactoryId, query: &SeriesQuery) -> Result<Vec<Sample>, TsdbError> {
        self.0.query(factory, query).await
    }
    async fn latest(&self, factory: &FactoryId, device: &DeviceId) -> Result<Vec<(PropertyName, Sample)>, TsdbError> {
        self.0.latest(factory, device).await
    }
    async fn health(&self) -> StoreHealth {
        self.0.health().await
    }
    async fn flush(&self) -> Result<(), TsdbError> {
        self.0.flush().await
    }
}

#[tokio::test]
async fn conformance_head_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    conformance::run_all(&store).await;
    assert!(store.health().await.ready);
}

#[tokio::test]
async fn conformance_through_part_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlushEveryWrite(open(dir.path()));
    conformance::run_all(&store).await;
    assert!(store.0.stats().unwrap().part_files > 0);
    let report = store.0.check().unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test]
async fn conformance_sync_modes() {
    for sync in [SyncMode::Always, SyncMode::Interval(5)] {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig { sync, ..config(dir.path()) }, Arc::new(SystemClock)).unwrap();
        conformance::run_all(&store).await;
    }
}

#[tokio::test]
async fn data_survives_reopen_with_and_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    let fac = factory("plant-1");
    {
        let store = open(dir.path());
        let pts: Vec<Point> = (0..1000).map(|i| point("m1", "p", T0 + i * 1000, Value::Float(i as f64))).collect();
        store.write(&fac, &pts[..500]).await.unwrap();
        store.flush().await.unwrap();
        store.write(&fac, &pts[500..]).await.unwrap();
        // Dropped without flush: the second half lives only in the WAL.
    }
    let store = open(dir.path());
    let got = store.query(&fac, &raw_query("m1", "p", T0, T0 + 1_000_000)).await.unwrap();
    assert_eq!(got.len(), 1000);
    assert_eq!(got[999], Sample { ts_ms: T0 + 999_000, value: Value::Float(999.0) });
    let stats = store.stats().unwrap();
    assert_eq!(stats.series, 1);
    assert_eq!(stats.points, 1000);
    store.flush().await.unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(stats.head_points, 0);
    assert_eq!(stats.wal_bytes, 0, "flushed WAL segments are deleted: {stats:?}");
}

#[tokio::test]
async fn duplicates_across_parts_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_manual(dir.path());
    let fac = factory("f");
    store
        .write(&fac, &[point("d", "p", T0, Value::Float(1.0)), point("d", "p", T0 + 1000, Value::Float(1.0))])
        .await
        .unwrap();
    store.flush().await.unwrap();
    store.write(&fac, &[point("d", "p", T0, Value::Float(2.0))]).await.unwrap();
    let q = agg_query("d", "p", T0 - 60_000, T0 + 120_000, 60_000, Agg::Sum);
    assert_eq!(store.query(&fac, &q).await.unwrap(), vec![Sample { ts_ms: T0, value: Value::Float(3.0) }]);
    store.flush().await.unwrap();
    assert_eq!(store.query(&fac, &q).await.unwrap(), vec![Sample { ts_ms: T0, value: Value::Float(3.0) }]);
    assert_eq!(store.compact().unwrap(), 2);
    assert_eq!(store.query(&fac, &q).await.unwrap(), vec![Sample { ts_ms: T0, value: Value::Float(3.0) }]);
    assert_eq!(store.stats().unwrap().part_files, 1);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.query(&fac, &q).await.unwrap(), vec![Sample { ts_ms: T0, value: Value::Float(3.0) }]);
    assert_eq!(
        store.latest(&fac, &device("d")).await.unwrap()[0].1,
        Sample { ts_ms: T0 + 1000, value: Value::Float(1.0) }
    );
}

/// A merge copies a series found in one input part only (a device silent since) instead
/// of re-encoding it; raw reads and rollup-served aggregations are the same before and
/// after, and after a reopen, and `check` verifies the copied sections.
#[tokio::test]
async fn series_in_one_part_only_survive_a_merge() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_manual(dir.path());
    let fac = factory("f");
    let both: Vec<Point> = (0..120).map(|i| point("d", "both", T0 + i * 1000, Value::Float(i as f64))).collect();
    let silent: Vec<Point> =
        (0..120).map(|i| point("d", "silent", T0 + i * 1000, Value::Float(0.5 * i as f64))).collect();
    let flag: Vec<Point> = (0..120).map(|i| point("e", "on", T0 + i * 1000, Value::Bool(i % 3 == 0))).collect();
    store.write(&fac, &[both.clone(), silent, flag].concat()).await.unwrap();
    store.flush().await.unwrap();
    let later: Vec<Point> = (120..240).map(|i| point("d", "both", T0 + i * 1000, Value::Float(i as f64))).collect();
    store.write(&fac, &later).await.unwrap();
    store.flush().await.unwrap();
    let queries = [
        raw_query("d", "silent", T0, T0 + 300_000),
        agg_query("d", "silent", T0, T0 + 300_000, 60_000, Agg::Avg),
        agg_query("d", "silent", T0 - 3_600_000, T0 + 3_600_000, 3_600_000, Agg::Max),
        raw_query("e", "on", T0, T0 + 300_000),
        agg_query("e", "on", T0, T0 + 300_000, 60_000, Agg::Count),
        raw_query("d", "both", T0, T0 + 300_000),
        agg_query("d", "both", T0, T0 + 300_000, 60_000, Agg::Sum),
    ];
    let mut before = Vec::new();
    for q in &queries {
        before.push(store.query(&fac, q).await.unwrap());
    }
    assert_eq!(before[0].len(), 120);
    assert_eq!(before[5].len(), 240);
    assert_eq!(store.compact().unwrap(), 2);
    assert_eq!(store.stats().unwrap().part_files, 1);
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&store.query(&fac, q).await.unwrap(), expected, "{q:?}");
    }
    assert!(store.check().unwrap().ok());
    drop(store);
    let store = open(dir.path());
    for (q, expected) in queries.iter().zip(&before) {
        assert_eq!(&store.query(&fac, q).await.unwrap(), expected, "{q:?} after reopen");
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[derive(Debug, Clone)]
struct Op {
    points: Vec<(i64, Value)>,
    flush_after: bool,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let value = prop_oneof![
        4 => (-100_000i64..100_000).prop_map(|v| Value::Float(v as f64 / 100.0)),
        1 => (-1e9f64..1e9).prop_map(Value::Float),
        1 => any::<bool>().prop_map(Value::Bool),
    ];
    // Up to ~5 hours so data spans partitions, hours and minutes; many duplicates.
    let pt = (0i64..18_000, value).prop_map(|(s, v)| (T0 + s * 1000 + s % 7, v));
    proptest::collection::vec(
        (proptest::collection::vec(pt, 1..60), any::<bool>())
            .prop_map(|(points, flush_after)| Op { points, flush_after }),
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Rollup-served aggregations equal raw-computed ones exactly, and match a model.
    #[test]
    fn rollups_equal_raw(ops in ops(), from_off in 0i64..7_200_000, len in 1i64..20_000_000) {
        rt().block_on(async {
            let d1 = tempfile::tempdir().unwrap();
            let d2 = tempfile::tempdir().unwrap();
            let with = open(d1.path());
            let without = EmbeddedStore::open(EmbeddedConfig { use_rollups: false, ..config(d2.path()) }, Arc::new(SystemClock)).unwrap();
            let fac = factory("f");
            let mut model: BTreeMap<i64, Value> = BTreeMap::new();
            for op in &ops {
                let pts: Vec<Point> = op.points.iter().map(|&(t, v)| point("d", "p", t, v)).collect();
                for &(t, v) in &op.points { model.insert(t, v); }
                with.write(&fac, &pts).await.unwrap();
                without.write(&fac, &pts).await.unwrap();
                if op.flush_after {
                    with.flush().await.unwrap();
                    without.flush().await.unwrap();
                }
            }
            for (from, to) in [(T0 - 3_600_000, T0 + 86_400_000), (T0 + from_off, T0 + from_off + len)] {
                for every in [60_000, 120_000, 3_600_000, 7_200_000] {
                    for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Sum, Agg::Count, Agg::First, Agg::Last] {
                        let q = agg_query("d", "p", from, to, every, agg);
                        let a = with.query(&fac, &q).await.unwrap();
                        let b = without.query(&fac, &q).await.unwrap();
                        let bits = |s: &[Sample]| s.iter().map(|x| (x.ts_ms, match x.value { Value::Float(f) => f.to_bits(), Value::Bool(b) => u64::from(b) + 2 })).collect::<Vec<_>>();
                        prop_assert_eq!(bits(&a), bits(&b), "{:?} every {} over [{}, {})", agg, every, from, to);
                        if agg == Agg::Count {
                            let mut want: BTreeMap<i64, f64> = BTreeMap::new();
                            for (&t, _) in model.range(from..to) { *want.entry(t.div_euclid(every) * every).or_default() += 1.0; }
                            let want: Vec<Sample> = want.into_iter().map(|(ts_ms, c)| Sample { ts_ms, value: Value::Float(c) }).collect();
                            prop_assert_eq!(&a, &want);
                        }
                    }
                }
                let raw = with.query(&fac, &raw_query("d", "p", from, to)).await.unwrap();
                let want: Vec<Sample> = model.range(from..to).map(|(&ts_ms, &value)| Sample { ts_ms, value }).collect();
                prop_assert_eq!(raw, want);
            }
            Ok(())
        })?;
    }
}

fn wal_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    // Segments only: the preallocated spare beside them is not one.
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// Writes `n` single-record batches of 10 points each (batch i has values i*10..i*10+9).
async fn write_batches(dir: &std::path::Path, n: i64) {
    let store = open(dir);
    let fac = factory("f");
    for b in 0..n {
        let pts: Vec<Point> =
            (0..10).map(|i| point("d", "p", T0 + (b * 10 + i) * 1000, Value::Float((b * 10 + i) as f64))).collect();
        store.write(&fac, &pts).await.unwrap();
    }
}

/// Reads back and checks the result is exactly the first k whole batches.
async fn assert_prefix_of_batches(dir: &std::path::Path, n: i64) -> i64 {
    let store = open(dir);
    let got = store.query(&factory("f"), &raw_query("d", "p", T0, T0 + n * 10_000)).await.unwrap();
    assert_eq!(got.len() % 10, 0, "only whole batches survive");
    for (i, s) in got.iter().enumerate() {
        assert_eq!(*s, Sample { ts_ms: T0 + i as i64 * 1000, value: Value::Float(i as f64) });
    }
    got.len() as i64 / 10
}

#[tokio::test]
async fn torn_wal_tail_is_cut_and_earlier_records_survive() {
    let template = tempfile::tempdir().unwrap();
    write_batches(template.path(), 20).await;
    let wal = wal_files(template.path());
    assert_eq!(wal.len(), 1);
    let bytes = std::fs::read(&wal[0]).unwrap();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut rnd = move |m: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % m as u64) as usize
    };
    for round in 0..24 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("wal")).unwrap();
        std::fs::copy(template.path().join("series.idx"), dir.path().join("series.idx")).unwrap();
        let target = dir.path().join("wal").join(wal[0].file_name().unwrap());
        let mut damaged = bytes.clone();
        if round % 2 == 0 {
            damaged.truncate(rnd(bytes.len()));
        } else {
            let at = rnd(bytes.len());
            damaged[at] ^= 1 << rnd(8);
        }
        std::fs::write(&target, &damaged).unwrap();
        let survived = assert_prefix_of_batches(dir.path(), 20).await;
        // Everything before the damage is intact: each record is 8 + payload bytes.
        let per_record = bytes.len() / 20;
        let damage_at =
            if round % 2 == 0 { damaged.len() } else { damaged.iter().zip(&bytes).position(|(a, b)| a != b).unwrap() };
        assert_eq!(survived as usize, damage_at / per_record, "round {round}");
        // The damaged tail was cut, so a second open sees the same and new writes append cleanly.
        let store = open(dir.path());
        store.write(&factory("f"), &[point("d", "p", T0 - 1000, Value::Float(-1.0))]).await.unwrap();
        drop(store);
        let store = open(dir.path());
        let got = store.query(&factory("f"), &raw_query("d", "p", T0 - 1000, T0 + 200_000)).await.unwrap();
        assert_eq!(got.len() as i64, survived * 10 + 1);
    }
}

#[tokio::test]
async fn corrupt_part_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.write(&factory("f"), &[point("d", "p", T0, Value::Float(1.0))]).await.unwrap();
        store.flush().await.unwrap();
    }
    let part = std::fs::read_dir(dir.path().join("parts")).unwrap().next().unwrap().unwrap().path();
    let orig = std::fs::read(&part).unwrap();
    for at in 0..orig.len() {
        let mut bad = orig.clone();
        bad[at] ^= 0x40;
        std::fs::write(&part, &bad).unwrap();
        match EmbeddedStore::open(config(dir.path()), Arc::new(SystemClock)) {
            Err(TsdbError::Corrupt(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(store) => {
                // Damage inside a data section: open succeeds, reads and check report it.
                let r = store.query(&factory("f"), &raw_query("d", "p", T0, T0 + 1)).await;
                let report = store.check().unwrap();
                assert!(r.is_err() || !report.ok(), "flip at {at} went unnoticed");
            }
        }
    }
}

#[tokio::test]
async fn retention_per_resolution_and_factory() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut cfg = config(dir.path());
    cfg.retention.per_factory.insert(
        factory("short"),
        RetentionPolicy {
            raw: Some(Duration::from_secs(3600)),
            minute: Some(Duration::from_secs(86_400)),
            hour: Some(Duration::from_secs(7 * 86_400)),
        },
    );
    let store = EmbeddedStore::open(cfg, Arc::new(clock.clone())).unwrap();
    for f in ["short", "long"] {
        let pts: Vec<Point> = (0..3600).map(|i| point("d", "p", T0 + i * 1000, Value::Float(1.0))).collect();
        store.write(&factory(f), &pts).await.unwrap();
    }
    store.flush().await.unwrap();
    let raw = |f: &'static str| {
        let store = &store;
        async move { store.query(&factory(f), &raw_query("d", "p", T0, T0 + 3_600_000)).await.unwrap().len() }
    };
    let per = |f: &'static str, every: i64| {
        let store = &store;
        async move { store.query(&factory(f), &agg_query("d", "p", T0, T0 + 3_600_000, every, Agg::Count)).await.unwrap() }
    };
    clock.advance(3 * 3_600_000);
    store.apply_retention().unwrap();
    assert_eq!(raw("short").await, 0, "raw expired for the short-retention factory");
    assert_eq!(raw("long").await, 3600);
    assert_eq!(per("short", 60_000).await.len(), 60, "minute rollups outlive raw data");
    assert_eq!(per("short", 60_000).await[0].value, Value::Float(60.0));
    clock.advance(2 * 86_400_000);
    store.apply_retention().unwrap();
    assert_eq!(per("short", 60_000).await, vec![], "minute rollups gone, raw gone: nothing at 1-minute resolution");
    assert_eq!(per("short", 3_600_000).await, vec![Sample { ts_ms: T0, value: Value::Float(3600.0) }]);
    clock.advance(40 * 86_400_000);
    store.apply_retention().unwrap();
    assert_eq!(per("short", 3_600_000).await, vec![]);
    assert_eq!(raw("long").await, 0, "default raw retention is 30 days");
    assert_eq!(per("long", 3_600_000).await, vec![Sample { ts_ms: T0, value: Value::Float(3600.0) }]);
    let report = store.check().unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_waits_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        head_limit: HeadLimit { points: 2_000, ..HeadLimit::default() },
        flush_interval: Duration::from_secs(3600),
        ..config(dir.path())
    };
    let store = Arc::new(EmbeddedStore::open(cfg, Arc::new(SystemClock)).unwrap());
    let mut tasks = Vec::new();
    for w in 0..4i64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for b in 0..25i64 {
                let pts: Vec<Point> = (0..200)
                    .map(|i| point(&format!("d{w}"), "p", T0 + (b * 200 + i) * 1000, Value::Float(i as f64)))
                    .collect();
                store.write(&factory("f"), &pts).await.unwrap();
                assert!(store.stats().unwrap().head_points <= 2_000 + 4 * 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for w in 0..4 {
        let got = store.query(&factory("f"), &raw_query(&format!("d{w}"), "p", T0, T0 + 10_000_000)).await.unwrap();
        assert_eq!(got.len(), 5000);
    }
    assert!(store.stats().unwrap().part_files > 0, "the flusher ran because of back-pressure");
}

#[tokio::test]
async fn second_open_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    assert!(matches!(EmbeddedStore::open(config(dir.path()), Arc::new(SystemClock)), Err(TsdbError::Unavailable(_))));
}

#[tokio::test]
async fn check_dir_verifies_without_opening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let pts: Vec<Point> = (0..500).map(|i| point("d", "p", T0 + i * 1000, Value::Float(i as f64 / 4.0))).collect();
    store.write(&factory("f"), &pts).await.unwrap();
    store.flush().await.unwrap();
    store.write(&factory("f"), &pts[..10]).await.unwrap();
    // Works beside the open store (no lock needed).
    let report = factoryops_tsdb::check_dir(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(report.sections_checked >= 3 && report.wal_records_checked >= 1, "{report:?}");
    drop(store);
    let part = std::fs::read_dir(dir.path().join("parts")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[5] ^= 0xff; // inside the first raw chunk
    std::fs::write(&part, &bytes).unwrap();
    let report = factoryops_tsdb::check_dir(dir.path()).unwrap();
    assert!(!report.ok());
    assert!(report.problems[0].contains("checksum"), "{report:?}");
}

/// Compaction removes one member of a multi-partition flush group; reopening must not
/// mistake the group for an interrupted flush.
#[tokio::test]
async fn compaction_of_part_of_a_flush_group_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let fac = factory("f");
    let three_hours = 3 * 3_600_000;
    {
        let store = open_manual(dir.path());
        store
            .write(
                &fac,
                &[point("d", "p", T0, Value::Float(1.0)), point("d", "p", T0 + three_hours, Value::Float(2.0))],
            )
            .await
            .unwrap();
        store.flush().await.unwrap();
        store.write(&fac, &[point("d", "p", T0 + 1000, Value::Float(3.0))]).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.stats().unwrap().part_files, 3);
        assert_eq!(store.compact().unwrap(), 2);
    }
    let store = open(dir.path());
    let got = store.query(&fac, &raw_query("d", "p", T0, T0 + 4 * 3_600_000)).await.unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
}

/// A flush interrupted between its part files: the written members are discarded and
/// the WAL is replayed, so nothing is lost or doubled.
#[tokio::test]
async fn interrupted_flush_group_is_discarded_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let fac = factory("f");
    let three_hours = 3 * 3_600_000;
    let keep = tempfile::tempdir().unwrap();
    {
        let store = open_manual(dir.path());
        store.write(&fac, &[point("d", "p", T0, Value::Float(1.0))]).await.unwrap();
        store.flush().await.unwrap();
        store
            .write(
                &fac,
                &[point("d", "p", T0 + 1000, Value::Float(2.0)), point("d", "p", T0 + three_hours, Value::Float(3.0))],
            )
            .await
            .unwrap();
        // Keep a copy of the WAL as it was before the flush deletes it.
        for e in std::fs::read_dir(dir.path().join("wal")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), keep.path().join(e.file_name())).unwrap();
        }
        store.flush().await.unwrap();
    }
    // Simulate the crash: WAL back, and only the first member of the second group present.
    for e in std::fs::read_dir(keep.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("wal").join(e.file_name())).unwrap();
    }
    let mut parts: Vec<_> = std::fs::read_dir(dir.path().join("parts")).unwrap().map(|e| e.unwrap().path()).collect();
    parts.sort();
    assert_eq!(parts.len(), 3);
    std::fs::remove_file(&parts[2]).unwrap();
    let store = open(dir.path());
    let got = store.query(&fac, &raw_query("d", "p", T0, T0 + 4 * 3_600_000)).await.unwrap();
    assert_eq!(
        got.iter().map(|s| s.value).collect::<Vec<_>>(),
        vec![Value::Float(1.0), Value::Float(2.0), Value::Float(3.0)]
    );
    assert_eq!(store.stats().unwrap().part_files, 1, "the partial group was discarded");
}

/// Small WAL segments: writes roll over to new segments; a reopen replays all of them and
/// flushes as it goes when the head bound is reached, so recovery memory stays bounded.
#[tokio::test]
async fn wal_segments_roll_by_size_and_replay_flushes_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let fac = factory("f");
    let cfg = || EmbeddedConfig {
        wal_segment_bytes: 4096,
        head_limit: HeadLimit { points: 100_000, ..HeadLimit::default() },
        flush_interval: Duration::from_secs(3600),
        ..config(dir.path())
    };
    {
        let store = EmbeddedStore::open(cfg(), Arc::new(SystemClock)).unwrap();
        for b in 0..20 {
            let pts: Vec<Point> =
                (0..100).map(|i| point("d", "p", T0 + (b * 100 + i) * 1000, Value::Float(i as f64))).collect();
            store.write(&fac, &pts).await.unwrap();
        }
        assert!(store.stats().unwrap().wal_segments > 3);
    }
    let store = EmbeddedStore::open(
        EmbeddedConfig { head_limit: HeadLimit { points: 500, ..HeadLimit::default() }, ..cfg() },
        Arc::new(SystemClock),
    )
    .unwrap();
    let st = store.stats().unwrap();
    assert!(st.part_files > 0 && st.head_points < 2000, "replay flushed: {st:?}");
    let got = store.query(&fac, &raw_query("d", "p", T0, T0 + 10_000_000)).await.unwrap();
    assert_eq!(got.len(), 2000);
}

/// Segments after the first are preallocated (zero-filled ahead of time, so an fsync
/// commits data only): the zeroed tail ends the replay cleanly, every point comes back
/// and `check` reports nothing.
#[tokio::test]
async fn preallocated_segments_replay_to_their_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let fac = factory("f");
    let cfg = || EmbeddedConfig {
        wal_segment_bytes: 64 << 10,
        flush_interval: Duration::from_secs(3600),
        ..config(dir.path())
    };
    {
        let store = EmbeddedStore::open(cfg(), Arc::new(SystemClock)).unwrap();
        for b in 0..200 {
            let pts: Vec<Point> =
                (0..100).map(|i| point("d", "p", T0 + (b * 100 + i) * 1000, Value::Float(i as f64))).collect();
            store.write(&fac, &pts).await.unwrap();
            if b == 0 {
                // Let the first spare be made, so the next segment is a preallocated one.
                for _ in 0..500 {
                    if dir.path().join("wal/spare.ready").exists() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    let zero_tailed = wal_files(dir.path())
        .iter()
        .filter(|p| std::fs::read(p).unwrap().iter().rev().take(16).all(|&b| b == 0))
        .count();
    assert!(zero_tailed > 0, "some segment was preallocated: {:?}", wal_files(dir.path()));
    let store = EmbeddedStore::open(cfg(), Arc::new(SystemClock)).unwrap();
    let got = store.query(&fac, &raw_query("d", "p", T0, T0 + 100_000_000)).await.unwrap();
    assert_eq!(got.len(), 20_000);
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Part files written by the engine before the compact in-memory directory (commit
/// 6c9b278, `tests/data/v1-store`: two flushes, newest-wins overwrites across parts, two
/// partitions) still open and read the same, before and after compaction.
#[tokio::test]
async fn part_files_from_before_the_compact_directory_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-store");
    std::fs::create_dir_all(dir.path().join("parts")).unwrap();
    std::fs::copy(fixture.join("series.idx"), dir.path().join("series.idx")).unwrap();
    for e in std::fs::read_dir(fixture.join("parts")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("parts").join(e.file_name())).unwrap();
    }
    let store = open(dir.path());
    let fac = factory("plant");
    let mut want: Vec<Sample> = (0..600)
        .map(|i| Sample { ts_ms: T0 + i * 10_000, value: Value::Float(if i < 10 { -1.0 } else { i as f64 / 4.0 }) })
        .collect();
    want.push(Sample { ts_ms: T0 + 3 * 3_600_000, value: Value::Float(7.5) });
    let stats = store.stats().unwrap();
    assert_eq!(stats.part_files, 3);
    assert_eq!(stats.points, 3 * 600 + 1 + 10 + 1);
    for round in 0..2 {
        let got = store.query(&fac, &raw_query("m1", "power", T0, T0 + 4 * 3_600_000)).await.unwrap();
        assert_eq!(got, want, "round {round}");
        let energy = store.query(&fac, &raw_query("m1", "energy", T0, T0 + 4 * 3_600_000)).await.unwrap();
        assert_eq!(energy.len(), 600);
        assert_eq!(energy[599].value, Value::Float(599.0 / 4.0));
        let latest = store.latest(&fac, &device("m2")).await.unwrap();
        assert_eq!(latest[0].1, Sample { ts_ms: T0 + 5, value: Value::Bool(true) });
        let report = store.check().unwrap();
        assert!(report.ok(), "{report:?}");
        if round == 0 {
            assert!(store.compact().unwrap() >= 2);
        }
    }
}

/// Many flushes into one open partition: background compaction keeps its part count
/// within `max_parts_per_partition`, and every point stays readable with the newest write
/// winning, also while merges race with flushes (a thread merges continuously, so flushes
/// allocate their sequence numbers while merges are in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_flushes_into_an_open_partition_stay_bounded_and_newest_wins() {
    let dir = tempfile::tempdir().unwrap();
    // The clock stays inside the partition [T0, T0 + 2 h), so it never closes.
    let clock = ManualClock::new(T0 + 3_600_000);
    let cfg = EmbeddedConfig { flush_interval: Duration::from_secs(3600), ..config(dir.path()) };
    let store = Arc::new(EmbeddedStore::open(cfg, Arc::new(clock)).unwrap());
    let fac = factory("f");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let merger = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut merged = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                merged += store.compact_tiered().unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            merged
        })
    };
    let mut model: BTreeMap<(i64, i64), Value> = BTreeMap::new();
    let check = |store: Arc<EmbeddedStore>, model: BTreeMap<(i64, i64), Value>| async move {
        for s in 0..10 {
            let got = store.query(&factory("f"), &raw_query(&format!("d{s}"), "p", T0, T0 + 3_600_000)).await.unwrap();
            let want: Vec<Sample> = model
                .range((s, i64::MIN)..(s + 1, i64::MIN))
                .map(|(&(_, ts_ms), &value)| Sample { ts_ms, value })
                .collect();
            assert_eq!(got, want, "series d{s}");
        }
    };
    let (mut most, rounds) = (0, 120i64);
    for round in 0..rounds {
        // Per series: 30 new points and 5 rewrites of timestamps from earlier rounds.
        let mut pts = Vec::new();
        for s in 0..10i64 {
            for i in 0..30 {
                pts.push((s, T0 + (round * 30 + i) * 1000, Value::Float((round * 1000 + i + s) as f64)));
            }
            for k in 0..5 {
                let at = (round * 7 + k * 13 + s) % ((round + 1) * 30);
                pts.push((s, T0 + at * 1000, Value::Float(-((round * 100 + k) as f64))));
            }
        }
        let batch: Vec<Point> = pts.iter().map(|&(s, t, v)| point(&format!("d{s}"), "p", t, v)).collect();
        store.write(&fac, &batch).await.unwrap();
        model.extend(pts.into_iter().map(|(s, t, v)| ((s, t), v)));
        store.flush().await.unwrap();
        // What the compactor thread does after each flush; after it the policy holds.
        store.compact_tiered().unwrap();
        let parts = store.stats().unwrap().part_files;
        assert!(parts <= 8, "round {round}: {parts} parts");
        most = most.max(parts);
        if round % 30 == 29 {
            check(Arc::clone(&store), model.clone()).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let merged_by_thread = merger.join().unwrap();
    check(Arc::clone(&store), model.clone()).await;
    let stats = store.stats().unwrap();
    eprintln!(
        "{rounds} flushes: at most {most} parts, {} at the end; thread merged {merged_by_thread}",
        stats.part_files
    );
    assert!(store.check().unwrap().ok());
    drop(store);
    let store = Arc::new(open_manual(dir.path()));
    check(Arc::clone(&store), model).await;
}

/// A merge that crashed after renaming its part but before deleting its inputs, and one
/// that crashed before the rename: both reopen to exactly one copy of the data, newest
/// write winning.
#[tokio::test]
async fn crash_between_writing_a_merged_part_and_deleting_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let fac = factory("f");
    let parts_dir = dir.path().join("parts");
    let part_files = || {
        let mut v: Vec<_> = std::fs::read_dir(&parts_dir).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    };
    {
        let store = open_manual(dir.path());
        for round in 0..3i64 {
            let mut pts: Vec<Point> =
                (0..100).map(|i| point("d", "p", T0 + i * 1000, Value::Float((round * 1000 + i) as f64))).collect();
            pts.push(point("d", "p", T0 + (100 + round) * 1000, Value::Float(-1.0)));
            store.write(&fac, &pts).await.unwrap();
            store.flush().await.unwrap();
        }
        for p in part_files() {
            std::fs::copy(&p, saved.path().join(p.file_name().unwrap())).unwrap();
        }
        assert_eq!(store.compact().unwrap(), 3);
    }
    let merged = part_files();
    assert_eq!(merged.len(), 1);
    let restore_inputs = || {
        for e in std::fs::read_dir(saved.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), parts_dir.join(e.file_name())).unwrap();
        }
    };
    let verify = |store: EmbeddedStore, want_parts: usize| async move {
        let got = store.query(&factory("f"), &raw_query("d", "p", T0, T0 + 1_000_000)).await.unwrap();
        assert_eq!(got.len(), 103);
        assert!(got[..100].iter().enumerate().all(|(i, s)| s.value == Value::Float((2000 + i) as f64)), "newest wins");
        assert_eq!(store.stats().unwrap().part_files, want_parts);
        let report = store.check().unwrap();
        assert!(report.ok(), "{report:?}");
    };
    // Crash after the rename, before the inputs were deleted: the inputs go on reopen.
    restore_inputs();
    assert_eq!(part_files().len(), 4);
    verify(open_manual(dir.path()), 1).await;
    assert_eq!(part_files(), merged, "inputs listed in `replaces` were deleted");
    // Crash before the rename: the temp file goes, the inputs stay.
    let tmp = merged[0].with_extension("part.tmp");
    std::fs::rename(&merged[0], &tmp).unwrap();
    restore_inputs();
    verify(open_manual(dir.path()), 3).await;
    assert!(!tmp.exists());
}

/// Retention that rewrites only the older of two parts of a partition (only it holds the
/// short-retention factory's series) must not rank its data after the newer part: an
/// overwrite of the same (series, ts) in the newer part still wins, also after reopening
/// and after a crash that rewrote only the newer part of the partition.
#[tokio::test]
async fn retention_rewrite_keeps_newest_wins_order_within_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut cfg = EmbeddedConfig { background_compaction: false, ..config(dir.path()) };
    let short = RetentionPolicy { raw: Some(Duration::from_secs(3600)), minute: None, hour: None };
    cfg.retention.per_factory.insert(factory("short"), short);
    let parts_dir = dir.path().join("parts");
    let part_files = || {
        let mut v: Vec<_> = std::fs::read_dir(&parts_dir).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    };
    {
        let store = EmbeddedStore::open(cfg.clone(), Arc::new(clock.clone())).unwrap();
        store.write(&factory("keep"), &[point("d", "p", T0 + 1000, Value::Float(1.0))]).await.unwrap();
        store.write(&factory("short"), &[point("d", "p", T0 + 1000, Value::Float(9.0))]).await.unwrap();
        store.flush().await.unwrap();
        store.write(&factory("keep"), &[point("d", "p", T0 + 1000, Value::Float(2.0))]).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.stats().unwrap().part_files, 2);
        for p in part_files() {
            std::fs::copy(&p, saved.path().join(p.file_name().unwrap())).unwrap();
        }
        clock.advance(3 * 3_600_000);
        assert!(store.apply_retention().unwrap() >= 1);
        let short_raw = store.query(&factory("short"), &raw_query("d", "p", T0, T0 + 10_000)).await.unwrap();
        assert_eq!(short_raw, vec![], "raw expired for the short-retention factory");
        let got = store.query(&factory("keep"), &raw_query("d", "p", T0, T0 + 10_000)).await.unwrap();
        assert_eq!(got, vec![Sample { ts_ms: T0 + 1000, value: Value::Float(2.0) }], "the newer write wins");
        assert_eq!(store.apply_retention().unwrap(), 0, "nothing left to drop");
    }
    let store = EmbeddedStore::open(cfg.clone(), Arc::new(clock.clone())).unwrap();
    let got = store.query(&factory("keep"), &raw_query("d", "p", T0, T0 + 10_000)).await.unwrap();
    assert_eq!(got, vec![Sample { ts_ms: T0 + 1000, value: Value::Float(2.0) }], "after reopen");
    drop(store);

    // A crash after the newer part was rewritten, before the older one was: the older
    // input is back and its rewritten copy gone (the newer input, replaced, stays gone).
    let rewritten = part_files();
    assert_eq!(rewritten.len(), 2);
    let inputs: Vec<_> = {
        let mut v: Vec<_> = std::fs::read_dir(saved.path()).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    };
    std::fs::remove_file(&rewritten[0]).unwrap();
    std::fs::copy(&inputs[0], parts_dir.join(inputs[0].file_name().unwrap())).unwrap();
    let store = EmbeddedStore::open(cfg, Arc::new(clock)).unwrap();
    let got = store.query(&factory("keep"), &raw_query("d", "p", T0, T0 + 10_000)).await.unwrap();
    assert_eq!(got, vec![Sample { ts_ms: T0 + 1000, value: Value::Float(2.0) }], "after the crash");
    assert!(store.apply_retention().unwrap() >= 1, "the next run finishes the job");
    let got = store.query(&factory("keep"), &raw_query("d", "p", T0, T0 + 10_000)).await.unwrap();
    assert_eq!(got, vec![Sample { ts_ms: T0 + 1000, value: Value::Float(2.0) }]);
    let report = store.check().unwrap();
    assert!(report.ok(), "{report:?}");
}

/// Parts with the same series set share one id array, whether flushed, reopened, merged or
/// rewritten by retention: `directory_bytes` counts it once (4 B per series for the whole
/// store, not per part).
#[tokio::test]
async fn parts_with_the_same_series_share_one_directory_array() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let cfg = EmbeddedConfig { background_compaction: false, ..config(dir.path()) };
    const SERIES: usize = 500;
    const PARTITIONS: i64 = 12;
    async fn write_partition(store: &EmbeddedStore, k: i64, value: f64) {
        let pts: Vec<Point> =
            (0..SERIES).map(|s| point(&format!("d{s}"), "p", T0 + k * 7_200_000 + 1000, Value::Float(value))).collect();
        store.write(&factory("f"), &pts).await.unwrap();
    }
    let expect_shared = |store: &EmbeddedStore, parts: usize| {
        let stats = store.stats().unwrap();
        assert_eq!(stats.part_files, parts);
        assert_eq!(stats.directory_arrays, 1, "{stats:?}");
        assert_eq!(stats.directory_bytes, 4 * SERIES as u64, "one array of 4 B per series for {parts} parts");
    };
    {
        let store = EmbeddedStore::open(cfg.clone(), Arc::new(clock.clone())).unwrap();
        for k in 0..PARTITIONS {
            write_partition(&store, k, 1.0).await;
            store.flush().await.unwrap();
        }
        expect_shared(&store, PARTITIONS as usize);
        // A second flush into the last partition; merged, the part keeps the same set.
        write_partition(&store, PARTITIONS - 1, 2.0).await;
        store.flush().await.unwrap();
        expect_shared(&store, PARTITIONS as usize + 1);
        assert_eq!(store.compact().unwrap(), 2);
        expect_shared(&store, PARTITIONS as usize);
    }
    let store = EmbeddedStore::open(cfg, Arc::new(clock.clone())).unwrap();
    expect_shared(&store, PARTITIONS as usize);
    // Raw data of every partition expires: the rewritten parts still share one array.
    clock.advance(40 * 86_400_000);
    assert_eq!(store.apply_retention().unwrap(), PARTITIONS as usize);
    expect_shared(&store, PARTITIONS as usize);
    let stats = store.stats().unwrap();
    assert_eq!((stats.raw_bytes, stats.points), (0, 0));
    let report = store.check().unwrap();
    assert!(report.ok(), "{report:?}");
}

/// Polls `health` until `ready` equals `want` (the background flusher changes it on its
/// own thread); the deadline only bounds a failure.
async fn wait_ready(store: &EmbeddedStore, want: bool) -> StoreHealth {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let h = store.health().await;
        if h.ready == want || std::time::Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A failed WAL fsync refuses the write and makes the store not ready; the next good
/// fsync makes it ready again. Same for a failed flush (explicit, and the background
/// flusher's), and both faults at once are both named.
#[tokio::test]
async fn failed_fsync_or_flush_is_not_ready_until_the_fault_clears() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig { flush_interval: Duration::from_millis(20), ..config(dir.path()) };
    let faults = cfg.faults.clone();
    let store = EmbeddedStore::open(cfg, Arc::new(SystemClock)).unwrap();
    let fac = factory("f");
    let p = |i: i64| [point("d", "p", T0 + i * 1000, Value::Float(i as f64))];
    store.write(&fac, &p(0)).await.unwrap();
    assert!(store.health().await.ready);

    faults.fail_wal_sync(true);
    let err = store.write(&fac, &p(1)).await.unwrap_err();
    assert!(err.to_string().contains("WAL fsync failed"), "{err}");
    let h = store.health().await;
    assert!(!h.ready && h.detail.contains("WAL fsync failed: injected WAL fsync failure"), "{h:?}");
    faults.fail_wal_sync(false);
    store.write(&fac, &p(2)).await.unwrap();
    // The background flusher's WAL rotation fsyncs too, so it may have failed meanwhile;
    // its next flush succeeds on its own.
    let h = wait_ready(&store, true).await;
    assert_eq!(h, StoreHealth { ready: true, detail: "ok".into() }, "ready again");

    faults.fail_flush(true);
    store.write(&fac, &p(3)).await.unwrap();
    assert!(store.flush().await.is_err());
    let h = wait_ready(&store, false).await;
    assert!(!h.ready && h.detail.contains("flush failed") && h.detail.contains("injected flush failure"), "{h:?}");
    faults.fail_wal_sync(true);
    assert!(store.write(&fac, &p(4)).await.is_err());
    let h = store.health().await;
    assert!(h.detail.contains("WAL fsync") && h.detail.contains("flush failed"), "both named: {h:?}");
    faults.fail_wal_sync(false);
    store.write(&fac, &p(5)).await.unwrap();
    let h = store.health().await;
    assert!(!h.ready && !h.detail.contains("WAL"), "the flush still fails: {h:?}");
    // The background flusher retries on its own and clears the fault when it succeeds.
    faults.fail_flush(false);
    let h = wait_ready(&store, true).await;
    assert!(h.ready, "{h:?}");
    assert!(store.stats().unwrap().part_files > 0, "the head was flushed");
    let got = store.query(&fac, &raw_query("d", "p", T0, T0 + 10_000)).await.unwrap();
    let ts: Vec<i64> = got.iter().map(|s| (s.ts_ms - T0) / 1000).collect();
    // Refused writes 1 and 4 may be present (appended before the fsync failed): at least once.
    assert!([0, 2, 3, 5].iter().all(|i| ts.contains(i)), "{ts:?}");
}

/// A WAL append that fails halfway (a full disk) leaves part of a record in the segment;
/// the replay stops at it, so the writes acknowledged after the fault cleared must not
/// be appended behind it: they survive a crash (no flush) and a reopen.
#[tokio::test]
async fn writes_after_a_torn_append_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let faults = cfg.faults.clone();
    let store = EmbeddedStore::open(cfg, Arc::new(SystemClock)).unwrap();
    let fac = factory("f");
    let batch = |b: i64| -> Vec<Point> {
        (0..10).map(|i| point("d", "p", T0 + (b * 10 + i) * 1000, Value::Float((b * 10 + i) as f64))).collect()
    };
    store.write(&fac, &batch(0)).await.unwrap();
    faults.fail_wal_append(true);
    let err = store.write(&fac, &batch(1)).await.unwrap_err();
    assert!(err.to_string().contains("WAL append failed"), "{err}");
    assert!(!store.health().await.ready);
    faults.fail_wal_append(false);
    for b in 2..5 {
        store.write(&fac, &batch(b)).await.unwrap();
    }
    assert!(store.health().await.ready);
    drop(store); // no flush: everything is in the WAL only
    let store = open(dir.path());
    let got = store.query(&fac, &raw_query("d", "p", T0, T0 + 100_000)).await.unwrap();
    let values: Vec<i64> = got.iter().map(|s| (s.ts_ms - T0) / 1000).collect();
    let acked: Vec<i64> = [0, 2, 3, 4].iter().flat_map(|b| b * 10..b * 10 + 10).collect();
    assert_eq!(values, acked, "every acknowledged batch, not the torn one");
}

/// The background maintenance applies retention and merges closed partitions on its own
/// schedule (`maintenance_interval`), on the injected clock: nobody calls
/// `apply_retention()` or `compact()` here.
#[tokio::test]
async fn maintenance_runs_retention_and_compaction_on_its_own_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 3_600_000);
    let mut cfg = EmbeddedConfig {
        maintenance_interval: Duration::from_millis(50),
        background_compaction: false,
        ..config(dir.path())
    };
    cfg.retention.default.raw = Some(Duration::from_secs(86_400));
    let store = EmbeddedStore::open(cfg, Arc::new(clock.clone())).unwrap();
    let fac = factory("f");
    // Three flushes into the same (closed) partition: three parts until a merge.
    for b in 0..3 {
        let pts: Vec<Point> = (0..60).map(|i| point("d", "p", T0 + b * 60_000 + i * 1000, Value::Float(1.0))).collect();
        store.write(&fac, &pts).await.unwrap();
        store.flush().await.unwrap();
    }
    // The clock is well past the partition's end (2-h blocks): it is closed, so the
    // maintenance merges its parts.
    clock.advance(5 * 3_600_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.stats().unwrap().part_files != 1 {
        assert!(std::time::Instant::now() < deadline, "maintenance did not merge the closed partition");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.query(&fac, &raw_query("d", "p", T0, T0 + 3_600_000)).await.unwrap().len(), 180);
    // Two days later raw data is past its one-day retention.
    clock.advance(2 * 86_400_000);
    while !store.query(&fac, &raw_query("d", "p", T0, T0 + 3_600_000)).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "maintenance did not apply retention");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let minutes = store.query(&fac, &agg_query("d", "p", T0, T0 + 3_600_000, 60_000, Agg::Count)).await.unwrap();
    assert_eq!(minutes.len(), 3, "rollups outlive raw data");
}
