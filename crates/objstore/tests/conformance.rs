//! One conformance suite for every adapter: the local directory and S3 (a real `s3s-fs`
//! server), each behind the metrics wrapper as the server uses them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use factoryops_objstore::health::StorageMonitor;
use factoryops_objstore::local::LocalStore;
use factoryops_objstore::metered::{Metered, ObjStoreMetrics};
use factoryops_objstore::s3::{S3Options, S3Store};
use factoryops_objstore::{Area, ObjectKey, ObjectPrefix, ObjectStore, PutOutcome, StoreError};
use factoryops_platform::metrics::Metrics;
use factoryops_testkit::s3::{ACCESS_KEY, BUCKET, REGION, S3Server, SECRET_KEY};
use factoryops_types::{FactoryId, SystemClock};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

fn plant(name: &str) -> FactoryId {
    FactoryId::parse(name).unwrap()
}

fn key(factory: &str, area: Area, name: &str) -> ObjectKey {
    ObjectKey::new(&plant(factory), area, name).unwrap()
}

fn s3_options(server: &S3Server, timeout: Duration) -> S3Options {
    S3Options {
        bucket: BUCKET.into(),
        endpoint: Some(server.endpoint()),
        region: REGION.into(),
        path_style: true,
        allow_http: true,
        credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
        timeout,
    }
}

fn metered(inner: Arc<dyn ObjectStore>) -> (Arc<dyn ObjectStore>, Metrics) {
    let metrics = Metrics::new();
    (Arc::new(Metered::new(inner, ObjStoreMetrics::register(&metrics))), metrics)
}

/// Everything an adapter must do the same way.
async fn conformance(store: Arc<dyn ObjectStore>, metrics: &Metrics, scratch: &std::path::Path) {
    store.check().await.unwrap();
    let dataset = key("plant-1", Area::Datasets, "ab/cd1234.parquet");

    // Missing objects.
    assert!(matches!(store.get(&dataset).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.head(&dataset).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.open(&dataset).await, Err(StoreError::NotFound(_))));
    store.delete(&dataset).await.unwrap();

    // Create once; the same bytes again is an idempotent success, other bytes a conflict.
    let body = Bytes::from_static(b"PAR1 rows and columns PAR1");
    assert_eq!(store.put(&dataset, body.clone()).await.unwrap(), PutOutcome::Created);
    assert_eq!(store.put(&dataset, body.clone()).await.unwrap(), PutOutcome::AlreadyPresent);
    assert!(matches!(store.put(&dataset, Bytes::from_static(b"tampered")).await, Err(StoreError::Exists(_))));
    assert_eq!(store.get(&dataset).await.unwrap(), body, "never overwritten");
    assert_eq!(store.head(&dataset).await.unwrap().size, body.len() as u64);

    // Streaming read.
    let reader = store.open(&dataset).await.unwrap();
    assert_eq!(reader.size, body.len() as u64);
    let chunks: Vec<Bytes> = reader.stream.map(Result::unwrap).collect().await;
    assert_eq!(chunks.concat(), body.to_vec());

    // A large file, put from disk and read back as a stream (S3: a multipart upload).
    let big_path = scratch.join("big.bin");
    let big: Vec<u8> = (0..17 * 1024 * 1024 + 123).map(|i: usize| (i * 31 % 251) as u8).collect();
    std::fs::write(&big_path, &big).unwrap();
    let model = key("plant-1", Area::Models, "forecast/v1/model.bin");
    assert_eq!(store.put_file(&model, &big_path).await.unwrap(), PutOutcome::Created);
    assert_eq!(store.put_file(&model, &big_path).await.unwrap(), PutOutcome::AlreadyPresent);
    let reader = store.open(&model).await.unwrap();
    assert_eq!(reader.size, big.len() as u64);
    let mut read = Vec::with_capacity(big.len());
    let mut stream = reader.stream;
    while let Some(chunk) = stream.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert!(read == big, "the streamed bytes are the file's");
    let small_path = scratch.join("small.bin");
    std::fs::write(&small_path, b"other").unwrap();
    assert!(matches!(store.put_file(&model, &small_path).await, Err(StoreError::Exists(_))));

    // Listing stays inside one factory and area, sorted, with the name prefix applied.
    for (factory, area, name) in [
        ("plant-1", Area::Analytics, "runs/42/result.json"),
        ("plant-1", Area::Analytics, "runs/41/result.json"),
        ("plant-1", Area::Analytics, "runs/5/result.json"),
        ("plant-2", Area::Analytics, "runs/42/result.json"),
        ("plant-1", Area::Reports, "runs/42/report.pdf"),
    ] {
        store.put(&key(factory, area, name), Bytes::from(name.to_string())).await.unwrap();
    }
    let prefix = ObjectPrefix::with_name_prefix(&plant("plant-1"), Area::Analytics, "runs/4").unwrap();
    let names: Vec<String> = store.list(&prefix).await.unwrap().into_iter().map(|m| m.key.name().to_string()).collect();
    assert_eq!(names, ["runs/41/result.json", "runs/42/result.json"]);
    let all = store.list(&ObjectPrefix::area(&plant("plant-1"), Area::Analytics)).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|m| m.key.factory().as_str() == "plant-1" && m.size > 0));
    assert!(store.list(&ObjectPrefix::area(&plant("plant-9"), Area::Datasets)).await.unwrap().is_empty());

    // Delete (retention) removes it; a second delete is fine.
    store.delete(&dataset).await.unwrap();
    store.delete(&dataset).await.unwrap();
    assert!(matches!(store.get(&dataset).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.put(&dataset, Bytes::from_static(b"new")).await.unwrap(), PutOutcome::Created);

    let text = metrics.render();
    let backend = store.backend();
    for needle in [
        format!("factoryops_objstore_operation_duration_seconds_count{{backend=\"{backend}\",op=\"put\"}}"),
        format!("factoryops_objstore_errors_total{{backend=\"{backend}\",op=\"put\",kind=\"exists\"}} 1"),
        format!("factoryops_objstore_bytes_total{{backend=\"{backend}\",direction=\"written\"}}"),
        format!("factoryops_objstore_bytes_total{{backend=\"{backend}\",direction=\"read\"}}"),
    ] {
        assert!(text.contains(&needle), "{needle} missing in:\n{text}");
    }
    // Not-found answers are normal outcomes, not errors.
    assert!(!text.contains("kind=\"not_found\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = metered(Arc::new(LocalStore::new(dir.path().join("objects"))));
    conformance(store, &metrics, dir.path()).await;
    // Temp files never linger after puts.
    let tmp = dir.path().join("objects/.tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_conforms() {
    let Some(server) = S3Server::start().await else { return };
    let scratch = tempfile::tempdir().unwrap();
    let (store, metrics) = metered(Arc::new(S3Store::new(s3_options(&server, Duration::from_secs(10))).unwrap()));
    conformance(store, &metrics, scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_wrong_credentials_or_bucket_is_unavailable() {
    let Some(server) = S3Server::start().await else { return };
    let mut options = s3_options(&server, Duration::from_secs(5));
    options.credentials = Some((ACCESS_KEY.into(), "wrong".into()));
    let store = S3Store::new(options.clone()).unwrap();
    assert!(matches!(store.check().await, Err(StoreError::Unavailable(_))));
    options.credentials = Some((ACCESS_KEY.into(), SECRET_KEY.into()));
    options.bucket = "no-such-bucket".into();
    let e = S3Store::new(options).unwrap().check().await.unwrap_err();
    assert!(e.to_string().contains("no-such-bucket"), "{e}");
}

/// Stop the server: operations fail fast with a clear "storage unavailable", the monitor
/// reports it; restart: the same store works again and the monitor reports recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_fails_fast_and_recovers() {
    let Some(mut server) = S3Server::start().await else { return };
    let timeout = Duration::from_secs(3);
    let (store, _metrics) = metered(Arc::new(S3Store::new(s3_options(&server, timeout)).unwrap()));
    let report = key("plant-1", Area::Reports, "energy/2026-11.pdf");
    store.put(&report, Bytes::from_static(b"%PDF-1.7")).await.unwrap();

    let stop = CancellationToken::new();
    let (status, monitor) =
        StorageMonitor::start(store.clone(), Duration::from_secs(3600), Arc::new(SystemClock), stop.clone()).await;
    assert!(status.is_available());
    let mut changes = status.subscribe();

    server.stop();
    let started = Instant::now();
    let e = store.get(&report).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().starts_with("storage unavailable"), "{e}");
    assert!(e.is_retryable());
    assert!(took < timeout + Duration::from_secs(2), "failed after {took:?}");
    let e = store.put(&key("plant-1", Area::Reports, "x.pdf"), Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");

    status.recheck();
    tokio::time::timeout(Duration::from_secs(15), changes.changed()).await.unwrap().unwrap();
    let down = status.current();
    assert!(!down.available);
    assert!(status.ensure_available().unwrap_err().to_string().contains("storage unavailable"));

    server.restart().await;
    status.recheck();
    tokio::time::timeout(Duration::from_secs(15), changes.changed()).await.unwrap().unwrap();
    assert!(status.is_available(), "{:?}", status.current());
    assert_eq!(store.get(&report).await.unwrap(), Bytes::from_static(b"%PDF-1.7"));
    stop.cancel();
    monitor.await.unwrap();
}
