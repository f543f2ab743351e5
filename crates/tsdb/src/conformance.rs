//! Behaviour every [`TelemetryStore`] adapter must show. Each function checks one
//! behaviour with its own factory ids (so they can share one store) and panics with a
//! description on failure. Run them all with [`run_all`].
//!
//! Stores under test must be empty for the factories used here (`conf-*`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use factoryops_types::{DeviceId, FactoryId, PropertyName};

use futures::TryStreamExt as _;

use crate::{Agg, BulkBatch, BulkQuery, Point, Sample, SeriesQuery, TelemetryStore, TsdbError, Value};

/// A base timestamp well inside every adapter's supported range (2025-01-01T00:00:00Z).
pub const T0: i64 = 1_735_689_600_000;

pub fn factory(name: &str) -> FactoryId {
    FactoryId::parse(name).expect("valid factory id")
}

pub fn device(name: &str) -> DeviceId {
    DeviceId::parse(name).expect("valid device id")
}

pub fn property(name: &str) -> PropertyName {
    PropertyName::parse(name).expect("valid property name")
}

pub fn point(dev: &str, prop: &str, ts_ms: i64, value: Value) -> Point {
    Point { device: device(dev), property: property(prop), ts_ms, value }
}

pub fn raw_query(dev: &str, prop: &str, from_ms: i64, to_ms: i64) -> SeriesQuery {
    SeriesQuery { device: device(dev), property: property(prop), from_ms, to_ms, aggregation: None, limit: None }
}

pub fn agg_query(dev: &str, prop: &str, from_ms: i64, to_ms: i64, every: i64, agg: Agg) -> SeriesQuery {
    SeriesQuery { aggregation: Some((every, agg)), ..raw_query(dev, prop, from_ms, to_ms) }
}

fn f(ts_ms: i64, v: f64) -> Sample {
    Sample { ts_ms, value: Value::Float(v) }
}

pub async fn write_then_read_raw(store: &dyn TelemetryStore) {
    let fac = factory("conf-raw");
    let pts: Vec<Point> = (0..100).map(|i| point("m1", "power", T0 + i * 1000, Value::Float(i as f64 * 0.5))).collect();
    store.write(&fac, &pts).await.unwrap();
    let got = store.query(&fac, &raw_query("m1", "power", T0, T0 + 100_000)).await.unwrap();
    let want: Vec<Sample> = (0..100).map(|i| f(T0 + i * 1000, i as f64 * 0.5)).collect();
    assert_eq!(got, want, "raw read returns every written point in order");
    let limited = store
        .query(&fac, &SeriesQuery { limit: Some(10), ..raw_query("m1", "power", T0, T0 + 100_000) })
        .await
        .unwrap();
    assert_eq!(limited, want[..10].to_vec(), "limit keeps the earliest samples");
}

pub async fn range_boundaries(store: &dyn TelemetryStore) {
    let fac = factory("conf-bounds");
    let pts: Vec<Point> = (0..10).map(|i| point("m1", "v", T0 + i * 1000, Value::Float(i as f64))).collect();
    store.write(&fac, &pts).await.unwrap();
    let got = store.query(&fac, &raw_query("m1", "v", T0 + 2000, T0 + 5000)).await.unwrap();
    assert_eq!(got, vec![f(T0 + 2000, 2.0), f(T0 + 3000, 3.0), f(T0 + 4000, 4.0)], "from inclusive, to exclusive");
    let got = store.query(&fac, &raw_query("m1", "v", T0 + 2001, T0 + 3001)).await.unwrap();
    assert_eq!(got, vec![f(T0 + 3000, 3.0)]);
}

pub async fn empty_ranges(store: &dyn TelemetryStore) {
    let fac = factory("conf-empty");
    store.write(&fac, &[point("m1", "v", T0, Value::Float(1.0))]).await.unwrap();
    for q in [
        raw_query("m1", "v", T0 + 1, T0 + 1000),
        raw_query("m1", "v", T0, T0),
        raw_query("m1", "v", T0 + 10, T0),
        raw_query("m1", "nope", T0, T0 + 1000),
        raw_query("nope", "v", T0, T0 + 1000),
        agg_query("m1", "v", T0 + 1, T0 + 60_000, 1000, Agg::Count),
    ] {
        assert_eq!(store.query(&fac, &q).await.unwrap(), vec![], "{q:?} is empty");
    }
    let empty_write: &[Point] = &[];
    store.write(&fac, empty_write).await.unwrap();
}

pub async fn aggregates(store: &dyn TelemetryStore) {
    let fac = factory("conf-agg");
    // Two 10-second buckets: [T0, T0+10s) holds 1,2,3,4 and [T0+10s, T0+20s) holds 10, -2.
    let data = [(0, 1.0), (2000, 4.0), (5000, 2.0), (9999, 3.0), (10_000, 10.0), (15_000, -2.0)];
    let pts: Vec<Point> = data.iter().map(|&(dt, v)| point("m1", "v", T0 + dt, Value::Float(v))).collect();
    store.write(&fac, &pts).await.unwrap();
    let cases = [
        (Agg::Avg, [2.5, 4.0]),
        (Agg::Min, [1.0, -2.0]),
        (Agg::Max, [4.0, 10.0]),
        (Agg::Sum, [10.0, 8.0]),
        (Agg::Count, [4.0, 2.0]),
        (Agg::First, [1.0, 10.0]),
        (Agg::Last, [3.0, -2.0]),
    ];
    for (agg, [a, b]) in cases {
        let got = store.query(&fac, &agg_query("m1", "v", T0, T0 + 60_000, 10_000, agg)).await.unwrap();
        assert_eq!(got, vec![f(T0, a), f(T0 + 10_000, b)], "{agg:?} per 10 s bucket");
    }
    // Buckets are epoch-aligned, not aligned to `from`; the range still filters points.
    let got = store.query(&fac, &agg_query("m1", "v", T0 + 2000, T0 + 12_000, 10_000, Agg::Count)).await.unwrap();
    assert_eq!(got, vec![f(T0, 3.0), f(T0 + 10_000, 1.0)], "epoch-aligned buckets, range-filtered points");
    // Empty buckets are omitted.
    let got = store.query(&fac, &agg_query("m1", "v", T0, T0 + 60_000, 5000, Agg::Count)).await.unwrap();
    assert_eq!(got, vec![f(T0, 2.0), f(T0 + 5000, 2.0), f(T0 + 10_000, 1.0), f(T0 + 15_000, 1.0)]);
}

pub async fn booleans(store: &dyn TelemetryStore) {
    let fac = factory("conf-bool");
    let vals = [true, false, true, true];
    let pts: Vec<Point> =
        vals.iter().enumerate().map(|(i, &b)| point("m1", "running", T0 + i as i64 * 1000, Value::Bool(b))).collect();
    store.write(&fac, &pts).await.unwrap();
    let got = store.query(&fac, &raw_query("m1", "running", T0, T0 + 10_000)).await.unwrap();
    let want: Vec<Sample> =
        vals.iter().enumerate().map(|(i, &b)| Sample { ts_ms: T0 + i as i64 * 1000, value: Value::Bool(b) }).collect();
    assert_eq!(got, want, "booleans read back as booleans");
    let q = |agg| agg_query("m1", "running", T0, T0 + 10_000, 10_000, agg);
    assert_eq!(store.query(&fac, &q(Agg::Avg)).await.unwrap(), vec![f(T0, 0.75)], "avg = fraction true");
    assert_eq!(store.query(&fac, &q(Agg::Sum)).await.unwrap(), vec![f(T0, 3.0)]);
    assert_eq!(store.query(&fac, &q(Agg::Count)).await.unwrap(), vec![f(T0, 4.0)]);
    assert_eq!(store.query(&fac, &q(Agg::Min)).await.unwrap(), vec![f(T0, 0.0)]);
    assert_eq!(store.query(&fac, &q(Agg::Max)).await.unwrap(), vec![f(T0, 1.0)]);
    assert_eq!(
        store.query(&fac, &q(Agg::First)).await.unwrap(),
        vec![Sample { ts_ms: T0, value: Value::Bool(true) }],
        "first of booleans stays boolean"
    );
    assert_eq!(
        store.query(&fac, &q(Agg::Last)).await.unwrap(),
        vec![Sample { ts_ms: T0, value: Value::Bool(true) }],
        "last of booleans stays boolean"
    );
}

pub async fn non_finite_rejected(store: &dyn TelemetryStore) {
    let fac = factory("conf-nan");
    for (bad, name) in [(f64::NAN, "NaN"), (f64::INFINITY, "+inf"), (f64::NEG_INFINITY, "-inf")] {
        let pts = vec![point("m1", "v", T0, Value::Float(1.0)), point("m1", "v", T0 + 1000, Value::Float(bad))];
        match store.write(&fac, &pts).await {
            Err(TsdbError::InvalidPoint { index, reason }) => {
                assert_eq!(index, 1, "{name}: index of the bad point");
                assert!(!reason.is_empty(), "{name}: a reason is given");
            }
            other => panic!("{name} must be rejected with InvalidPoint, got {other:?}"),
        }
    }
    let got = store.query(&fac, &raw_query("m1", "v", T0 - 1000, T0 + 10_000)).await.unwrap();
    assert_eq!(got, vec![], "nothing of a rejected batch is written");
}

pub async fn out_of_order_writes(store: &dyn TelemetryStore) {
    let fac = factory("conf-ooo");
    let order = [5, 1, 9, 3, 7, 0, 8, 2, 6, 4];
    for &i in &order {
        store.write(&fac, &[point("m1", "v", T0 + i * 1000, Value::Float(i as f64))]).await.unwrap();
    }
    let got = store.query(&fac, &raw_query("m1", "v", T0, T0 + 60_000)).await.unwrap();
    let want: Vec<Sample> = (0..10).map(|i| f(T0 + i * 1000, i as f64)).collect();
    assert_eq!(got, want, "out-of-order writes are returned ascending");
}

pub async fn duplicate_timestamps_last_write_wins(store: &dyn TelemetryStore) {
    let fac = factory("conf-dup");
    store
        .write(&fac, &[point("m1", "v", T0, Value::Float(1.0)), point("m1", "v", T0, Value::Float(2.0))])
        .await
        .unwrap();
    store.write(&fac, &[point("m1", "v", T0 + 1000, Value::Float(5.0))]).await.unwrap();
    store.write(&fac, &[point("m1", "v", T0, Value::Float(3.0))]).await.unwrap();
    let got = store.query(&fac, &raw_query("m1", "v", T0, T0 + 10_000)).await.unwrap();
    assert_eq!(got, vec![f(T0, 3.0), f(T0 + 1000, 5.0)], "later write of the same timestamp replaces");
    let got = store.query(&fac, &agg_query("m1", "v", T0, T0 + 10_000, 10_000, Agg::Count)).await.unwrap();
    assert_eq!(got, vec![f(T0, 2.0)], "replaced points are not counted twice");
}

pub async fn latest_per_device(store: &dyn TelemetryStore) {
    let fac = factory("conf-latest");
    store
        .write(
            &fac,
            &[
                point("m1", "power", T0 + 5000, Value::Float(5.0)),
                point("m1", "power", T0 + 1000, Value::Float(1.0)),
                point("m1", "alarm", T0, Value::Bool(false)),
                point("m1", "alarm", T0 + 2000, Value::Bool(true)),
                point("m2", "power", T0 + 9000, Value::Float(9.0)),
            ],
        )
        .await
        .unwrap();
    let got = store.latest(&fac, &device("m1")).await.unwrap();
    assert_eq!(
        got,
        vec![
            (property("alarm"), Sample { ts_ms: T0 + 2000, value: Value::Bool(true) }),
            (property("power"), f(T0 + 5000, 5.0)),
        ],
        "latest per property, ordered by property name"
    );
    assert_eq!(store.latest(&fac, &device("none")).await.unwrap(), vec![]);
}

pub async fn factory_isolation(store: &dyn TelemetryStore) {
    let a = factory("conf-iso-a");
    let b = factory("conf-iso-b");
    store.write(&a, &[point("m1", "v", T0, Value::Float(1.0))]).await.unwrap();
    assert_eq!(store.query(&b, &raw_query("m1", "v", T0, T0 + 1000)).await.unwrap(), vec![], "B sees nothing of A");
    assert_eq!(store.latest(&b, &device("m1")).await.unwrap(), vec![]);
    assert_eq!(
        store.query(&b, &agg_query("m1", "v", T0, T0 + 1000, 1000, Agg::Count)).await.unwrap(),
        vec![],
        "B aggregates nothing of A"
    );
    store.write(&b, &[point("m1", "v", T0, Value::Float(2.0))]).await.unwrap();
    assert_eq!(store.query(&a, &raw_query("m1", "v", T0, T0 + 1000)).await.unwrap(), vec![f(T0, 1.0)]);
    assert_eq!(store.query(&b, &raw_query("m1", "v", T0, T0 + 1000)).await.unwrap(), vec![f(T0, 2.0)]);
}

pub async fn invalid_aggregation_interval(store: &dyn TelemetryStore) {
    let fac = factory("conf-badq");
    store.write(&fac, &[point("m1", "v", T0, Value::Float(1.0))]).await.unwrap();
    for every in [0, -1000] {
        let r = store.query(&fac, &agg_query("m1", "v", T0, T0 + 1000, every, Agg::Avg)).await;
        assert!(matches!(r, Err(TsdbError::InvalidQuery(_))), "every={every} is rejected: {r:?}");
    }
}

/// Collects a bulk read, checking that its windows are consecutive and cover the range.
pub async fn collect_bulk(store: &dyn TelemetryStore, fac: &FactoryId, q: &BulkQuery) -> Vec<Vec<Sample>> {
    let batches: Vec<BulkBatch> = store.bulk_read(fac, q.clone()).try_collect().await.unwrap();
    let mut at = q.from_ms;
    let mut out = vec![Vec::new(); q.series.len()];
    for b in batches {
        // A bucket starts at an epoch multiple, so the first one may start before `from`.
        assert_eq!(b.from_ms, at, "windows are consecutive");
        assert!(b.to_ms > b.from_ms, "windows are not empty");
        assert_eq!(b.series.len(), q.series.len(), "one entry per series");
        for (o, s) in out.iter_mut().zip(b.series) {
            assert!(s.iter().all(|x| x.ts_ms < b.to_ms), "samples (or bucket starts) before the window end");
            o.extend(s);
        }
        at = b.to_ms;
    }
    assert_eq!(at, q.from_ms.max(q.to_ms), "windows cover the range");
    out
}

pub async fn bulk_reads(store: &dyn TelemetryStore) {
    let fac = factory("conf-bulk");
    let mut pts: Vec<Point> = (0..100).map(|i| point("m1", "a", T0 + i * 1000, Value::Float(i as f64 * 0.5))).collect();
    pts.extend((0..50).map(|i| point("m1", "b", T0 + i * 2000, Value::Bool(i % 3 == 0))));
    pts.extend((0..10).map(|i| point("m2", "a", T0 + 500 + i * 10_000, Value::Float(-(i as f64)))));
    store.write(&fac, &pts).await.unwrap();
    store.write(&factory("conf-bulk-other"), &[point("m1", "a", T0, Value::Float(99.0))]).await.unwrap();
    let series = vec![
        (device("m1"), property("a")),
        (device("m1"), property("b")),
        (device("m2"), property("a")),
        (device("m3"), property("a")),
    ];
    let raw =
        BulkQuery { series: series.clone(), from_ms: T0, to_ms: T0 + 100_000, aggregation: None, batch_values: 20 };
    let got = collect_bulk(store, &fac, &raw).await;
    let want_a: Vec<Sample> = (0..100).map(|i| f(T0 + i * 1000, i as f64 * 0.5)).collect();
    let want_b: Vec<Sample> =
        (0..50).map(|i| Sample { ts_ms: T0 + i * 2000, value: Value::Bool(i % 3 == 0) }).collect();
    let want_m2: Vec<Sample> = (0..10).map(|i| f(T0 + 500 + i * 10_000, -(i as f64))).collect();
    assert_eq!(got, vec![want_a, want_b, want_m2, vec![]], "raw bulk read returns every point of every series");
    // Aggregated: 4 series and 8 values per batch = windows of 2 buckets; same as one query per series.
    for agg in [Agg::Avg, Agg::Count, Agg::Last] {
        let q = BulkQuery { aggregation: Some((10_000, agg)), batch_values: 8, from_ms: T0 + 3000, ..raw.clone() };
        let got = collect_bulk(store, &fac, &q).await;
        for (i, (d, p)) in series.iter().enumerate() {
            let one = SeriesQuery {
                device: d.clone(),
                property: p.clone(),
                from_ms: q.from_ms,
                to_ms: q.to_ms,
                aggregation: q.aggregation,
                limit: None,
            };
            assert_eq!(got[i], store.query(&fac, &one).await.unwrap(), "{agg:?} of {d}/{p} as a single query");
        }
        if agg == Agg::Avg {
            // Hand-computed: m1/a in [T0+3s, T0+10s) holds 1.5..4.5 (avg 3.0); [T0+10s, T0+20s) holds 5.0..9.5.
            assert_eq!(&got[0][..2], &[f(T0, 3.0), f(T0 + 10_000, 7.25)]);
            assert_eq!(got[0].len(), 10);
        }
    }
    // Another factory's series with the same names are not read.
    let other = collect_bulk(store, &factory("conf-bulk-other"), &raw).await;
    assert_eq!(other, vec![vec![f(T0, 99.0)], vec![], vec![], vec![]]);
    // An empty range yields nothing; a bad interval fails the stream.
    assert_eq!(collect_bulk(store, &fac, &BulkQuery { to_ms: T0, ..raw.clone() }).await, vec![vec![]; 4]);
    let bad = BulkQuery { aggregation: Some((0, Agg::Avg)), ..raw.clone() };
    let r: Result<Vec<BulkBatch>, TsdbError> = store.bulk_read(&fac, bad).try_collect().await;
    assert!(matches!(r, Err(TsdbError::InvalidQuery(_))), "{r:?}");
}

/// Runs every check against one store.
pub async fn run_all(store: &dyn TelemetryStore) {
    write_then_read_raw(store).await;
    range_boundaries(store).await;
    empty_ranges(store).await;
    aggregates(store).await;
    booleans(store).await;
    non_finite_rejected(store).await;
    out_of_order_writes(store).await;
    duplicate_timestamps_last_write_wins(store).await;
    latest_per_device(store).await;
    factory_isolation(store).await;
    invalid_aggregation_interval(store).await;
    bulk_reads(store).await;
}
