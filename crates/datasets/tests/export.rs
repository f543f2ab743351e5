//! Exports from the embedded telemetry store, read back with the parquet crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arrow_array::{Array, Float64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, TimeUnit};
use factoryops_datasets::{DatasetQuery, DatasetRequest, ExportError, ExportSummary, Limits, export, validate};
use factoryops_tsdb::conformance::{T0, factory, point};
use factoryops_tsdb::{EmbeddedConfig, EmbeddedStore, TelemetryStore, Value};
use factoryops_types::SystemClock;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

fn query(json: serde_json::Value) -> DatasetQuery {
    let req: DatasetRequest = serde_json::from_value(json).unwrap();
    validate(&req, &Limits::default()).unwrap()
}

async fn run(store: &dyn TelemetryStore, q: &DatasetQuery, batch_values: usize) -> (ExportSummary, Vec<u8>, Vec<f64>) {
    let mut seen = Vec::new();
    let mut progress = |p: f64| seen.push(p);
    let (summary, bytes) =
        export(store, &factory("plant-1"), q, 1_000_000, batch_values, Vec::new(), &mut progress).await.unwrap();
    (summary, bytes, seen)
}

/// Column names, timestamps, value columns, key-value metadata.
type ReadBack = (Vec<String>, Vec<i64>, Vec<Vec<Option<f64>>>, Vec<(String, String)>);

fn read_back(bytes: Vec<u8>) -> ReadBack {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
    let meta = builder.metadata().file_metadata();
    let kv: Vec<(String, String)> = meta
        .key_value_metadata()
        .map(|kv| kv.iter().map(|e| (e.key.clone(), e.value.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    assert_eq!(meta.created_by(), Some("factoryops-datasets"));
    let schema = builder.schema().clone();
    assert_eq!(schema.field(0).data_type(), &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())));
    assert!(!schema.field(0).is_nullable());
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let batches: Vec<RecordBatch> = builder.build().unwrap().collect::<Result<_, _>>().unwrap();
    let mut ts = Vec::new();
    let mut cols = vec![Vec::new(); names.len() - 1];
    for b in batches {
        let t = b.column(0).as_any().downcast_ref::<TimestampMillisecondArray>().unwrap();
        ts.extend(t.values().iter().copied());
        for (i, c) in cols.iter_mut().enumerate() {
            let a = b.column(i + 1).as_any().downcast_ref::<Float64Array>().unwrap();
            assert_eq!(a.data_type(), &DataType::Float64);
            c.extend(a.iter());
        }
    }
    (names, ts, cols, kv)
}

fn store(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(dir), Arc::new(SystemClock)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_export_reads_back_exactly_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let fac = factory("plant-1");
    // press-1/power every 10 s, press-1/running every 20 s (boolean), press-2/power at odd
    // offsets; one point outside the range and one of another factory.
    let mut pts: Vec<_> =
        (0..360).map(|i| point("press-1", "power", T0 + i * 10_000, Value::Float(i as f64 / 8.0))).collect();
    pts.extend((0..180).map(|i| point("press-1", "running", T0 + i * 20_000, Value::Bool(i % 2 == 0))));
    pts.extend((0..6).map(|i| point("press-2", "power", T0 + 5_000 + i * 600_000, Value::Float(-1.25 * i as f64))));
    pts.push(point("press-1", "power", T0 + 3_600_000, Value::Float(1e9)));
    store.write(&fac, &pts).await.unwrap();
    store.write(&factory("plant-2"), &[point("press-1", "power", T0 + 1, Value::Float(7.0))]).await.unwrap();
    store.flush().await.unwrap();

    let q = query(serde_json::json!({"devices": ["press-1", "press-2"], "properties": ["power", "running"],
        "from": "2025-01-01T00:00:00Z", "to": "2025-01-01T01:00:00Z"}));
    // Small windows: many batches, so alignment across window bounds is exercised.
    let (summary, bytes, progress) = run(&store, &q, 50).await;
    assert_eq!(summary.sha256, format!("{:x}", Sha256::digest(&bytes)), "sha256 of the file as written");
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!((summary.rows, summary.columns, summary.values), (360 + 6, 5, 360 + 180 + 6));
    assert!(!progress.is_empty() && progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&1.0));

    let (names, ts, cols, kv) = read_back(bytes.clone());
    assert_eq!(names, vec!["ts", "press-1/power", "press-1/running", "press-2/power", "press-2/running"]);
    let keys: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["ARROW:schema"], "no creation time or other varying metadata");
    let mut want_ts: Vec<i64> = (0..360).map(|i| T0 + i * 10_000).collect();
    want_ts.extend((0..6).map(|i| T0 + 5_000 + i * 600_000));
    want_ts.sort_unstable();
    assert_eq!(ts, want_ts);
    for (row, &t) in ts.iter().enumerate() {
        let dt = t - T0;
        let power = (dt % 10_000 == 0).then(|| (dt / 10_000) as f64 / 8.0);
        let running = (dt % 20_000 == 0).then_some(if (dt / 20_000) % 2 == 0 { 1.0 } else { 0.0 });
        let p2 = (dt % 600_000 == 5_000).then_some(-1.25 * (dt / 600_000) as f64);
        assert_eq!(cols[0][row], power, "press-1/power at row {row}");
        assert_eq!(cols[1][row], running, "press-1/running at row {row}");
        assert_eq!(cols[2][row], p2, "press-2/power at row {row}");
        assert_eq!(cols[3][row], None, "press-2/running has no data");
    }

    // The same query again, with other windows too: the same bytes.
    let (again, bytes2, _) = run(&store, &q, 50).await;
    assert_eq!(again, summary);
    assert_eq!(bytes2, bytes);
    let (other_windows, _, _) = run(&store, &q, 100_000).await;
    assert_eq!(other_windows.sha256, summary.sha256, "window size does not change the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_export_has_hand_computed_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let fac = factory("plant-1");
    // 1-minute points 0..120 over two hours: hourly avg of 0..59 = 29.5 and of 60..119 = 89.5.
    let pts: Vec<_> = (0..120).map(|i| point("m", "kw", T0 + i * 60_000, Value::Float(i as f64))).collect();
    store.write(&fac, &pts).await.unwrap();
    let q = query(serde_json::json!({"devices": ["m"], "properties": ["kw"],
        "from": "2025-01-01T00:00:00Z", "to": "2025-01-01T03:00:00Z", "every": "1h", "agg": "avg"}));
    let (summary, bytes, _) = run(&store, &q, 1).await;
    assert_eq!((summary.rows, summary.columns, summary.values), (2, 2, 2));
    let (_, ts, cols, _) = read_back(bytes);
    assert_eq!(ts, vec![T0, T0 + 3_600_000]);
    assert_eq!(cols[0], vec![Some(29.5), Some(89.5)]);
    let q = DatasetQuery { agg: Some(factoryops_tsdb::Agg::Count), ..q };
    let (_, bytes, _) = run(&store, &q, 1).await;
    assert_eq!(read_back(bytes).2[0], vec![Some(60.0), Some(60.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_over_the_value_limit_fails_and_an_empty_one_is_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let fac = factory("plant-1");
    let pts: Vec<_> = (0..100).map(|i| point("m", "kw", T0 + i * 1000, Value::Float(i as f64))).collect();
    store.write(&fac, &pts).await.unwrap();
    let q = query(serde_json::json!({"devices": ["m"], "properties": ["kw"],
        "from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z"}));
    let r = export(&store, &fac, &q, 99, 10, Vec::new(), &mut |_| {}).await;
    assert!(matches!(r, Err(ExportError::TooManyValues { limit: 99 })), "{r:?}");
    let (ok, _) = export(&store, &fac, &q, 100, 10, Vec::new(), &mut |_| {}).await.unwrap();
    assert_eq!(ok.values, 100);
    let empty = DatasetQuery { devices: vec![factoryops_types::DeviceId::parse("nobody").unwrap()], ..q };
    let (summary, bytes) = export(&store, &fac, &empty, 10, 10, Vec::new(), &mut |_| {}).await.unwrap();
    assert_eq!((summary.rows, summary.columns, summary.values), (0, 2, 0));
    let (names, ts, _, _) = read_back(bytes);
    assert_eq!((names.len(), ts.len()), (2, 0));
}
