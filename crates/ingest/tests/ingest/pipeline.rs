use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use factoryops_ingest::{IngestConfig, IngestError, IngestOutcome, RejectReason, SchemaMemo};
use factoryops_platform::bus::{EventBus, topics};
use factoryops_testkit::{TestDatabase, backend_matrix};
use factoryops_tsdb::Value;

use crate::common::{StoreKind, TestStore, device, env, factory, provision};

async fn stores_points_registers_properties_and_publishes(db: TestDatabase) {
    let env = env(&db, StoreKind::Embedded, IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("press-1");
    provision(&env, &f, "press-1").await;
    let mut events = env.bus.subscribe_telemetry(16);

    let now = env.clock.now_ms();
    let outcome = env
        .ingestor
        .ingest(&f, &d, br#"{"power_kw": 12.5, "running": true, "label": ["x"], "phase": {"l1": {"v": 231}}}"#, now)
        .await
        .unwrap();
    let IngestOutcome::Stored(summary) = outcome else { panic!("{outcome:?}") };
    assert_eq!(summary.points, 3);
    assert_eq!(summary.rejected.len(), 1);
    assert_eq!(summary.rejected[0].reason, RejectReason::Array);

    let latest = env.store.latest(&f, &d).await.unwrap();
    let names: Vec<&str> = latest.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["phase.l1.v", "power_kw", "running"]);
    assert_eq!(latest[1].1.value, Value::Float(12.5));
    // No `ts`: a server stamp at (or, right after start, up to the lead ahead of) the clock.
    assert_eq!(latest[1].1.ts_ms, summary.ts_ms);
    assert!(summary.ts_ms >= now && summary.ts_ms <= env.clock.now_ms() + 1_000, "{summary:?}");

    let props = env.ingestor.catalogue().list_for_device(&f, &d).await.unwrap();
    assert_eq!(props.len(), 3);

    let batch = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap();
    assert_eq!(batch.event.factory_id, f);
    let message = &batch.event.messages[0];
    assert_eq!((batch.event.messages.len(), message.device_id.as_str()), (1, "press-1"));
    assert_eq!((message.values.len(), message.ts_ms), (3, summary.ts_ms));
    assert!(!message.key.is_empty());

    let errors = env.ingestor.last_errors(&f, &d);
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].reason.as_str(), errors[0].property.as_deref()), ("array", Some("label")));
    assert!(env.ingestor.last_errors(&factory("plant-b"), &d).is_empty());

    // Redelivery of a message with its own ts: same event key.
    let payload = format!(r#"{{"ts": {now}, "power_kw": 1}}"#);
    env.ingestor.ingest(&f, &d, payload.as_bytes(), now + 10).await.unwrap();
    env.ingestor.ingest(&f, &d, payload.as_bytes(), now + 20).await.unwrap();
    let k1 = events.next().await.unwrap().event.messages[0].key.clone();
    let k2 = events.next().await.unwrap().event.messages[0].key.clone();
    assert_eq!(k1, k2);

    let text = env.metrics.render();
    assert!(text.contains("factoryops_ingest_points_total 5"), "{text}");
    assert!(text.contains(r#"factoryops_ingest_rejected_properties_total{reason="array"} 1"#), "{text}");

    env.ingestor.shutdown().await;
    let device = env.registry.get(&f, &d).await.unwrap().unwrap();
    assert_eq!(device.last_seen, Some(summary.ts_ms), "flushed on shutdown");
    assert!(matches!(env.ingestor.ingest(&f, &d, br#"{"a": 1}"#, now).await, Err(IngestError::ShuttingDown)));
}

/// `last_seen` is written in batches (devices every 30 s by default); until then reads
/// merge what is buffered, so a device that just sent is not shown as silent.
async fn last_seen_reads_include_what_is_not_written_yet(db: TestDatabase) {
    let env = env(&db, StoreKind::Embedded, IngestConfig::default()).await;
    let f = factory("plant-a");
    let d = device("press-1");
    provision(&env, &f, "press-1").await;
    let catalogue = env.ingestor.catalogue();
    let now = env.clock.now_ms();
    let first = format!(r#"{{"ts": {now}, "power_kw": 1, "temp_c": 20}}"#);
    env.ingestor.ingest(&f, &d, first.as_bytes(), now).await.unwrap();
    let second = format!(r#"{{"ts": {}, "power_kw": 2}}"#, now + 5_000);
    env.ingestor.ingest(&f, &d, second.as_bytes(), now).await.unwrap();
    assert_eq!(env.registry.get(&f, &d).await.unwrap().unwrap().last_seen, None, "not written yet");
    assert_eq!(catalogue.pending_device_last_seen(&f, &d), Some(now + 5_000));
    assert_eq!(catalogue.pending_device_last_seen(&factory("plant-b"), &d), None);
    let seen: Vec<(String, i64)> = catalogue
        .list_for_device(&f, &d)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name.into_string(), p.last_seen))
        .collect();
    assert_eq!(seen, [("power_kw".to_string(), now + 5_000), ("temp_c".to_string(), now)]);

    catalogue.flush_last_seen().await.unwrap();
    assert_eq!(env.registry.get(&f, &d).await.unwrap().unwrap().last_seen, Some(now + 5_000));
    assert_eq!(catalogue.pending_device_last_seen(&f, &d), None);
    assert!(catalogue.pending_properties_last_seen(&f, &d).is_empty());
    let power = catalogue.list_for_device(&f, &d).await.unwrap().remove(0);
    assert_eq!(power.last_seen, now + 5_000, "written");
    env.ingestor.shutdown().await;
}

async fn rejected_messages_are_recorded_not_errors(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    let env = env(&db, StoreKind::Test(store.clone()), IngestConfig::default()).await;
    let (f, d) = (factory("plant-a"), device("press-1"));
    provision(&env, &f, "press-1").await;
    for (payload, reason) in [(&b"[1,2]"[..], "not_an_object"), (b"not json", "invalid_json")] {
        let outcome = env.ingestor.ingest(&f, &d, payload, 1_000).await.unwrap();
        let IngestOutcome::MessageRejected(r) = outcome else { panic!() };
        assert_eq!(r.as_str(), reason);
    }
    let errors = env.ingestor.last_errors(&f, &d);
    assert_eq!(errors.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(), ["invalid_json", "not_an_object"]);
    let text = env.metrics.render();
    assert!(text.contains(r#"factoryops_ingest_rejected_messages_total{reason="invalid_json"} 1"#), "{text}");
    assert_eq!(store.writes.load(Ordering::SeqCst), 0);
}

async fn last_errors_are_bounded(db: TestDatabase) {
    let config = IngestConfig { last_errors_per_device: 5, ..IngestConfig::default() };
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), config).await;
    let (f, d) = (factory("plant-a"), device("press-1"));
    provision(&env, &f, "press-1").await;
    for i in 0..12 {
        env.ingestor.ingest(&f, &d, format!(r#"{{"ok": 1, "bad{i}": null}}"#).as_bytes(), i).await.unwrap();
    }
    let errors = env.ingestor.last_errors(&f, &d);
    assert_eq!(errors.len(), 5);
    assert_eq!(errors[0].property.as_deref(), Some("bad11"), "newest first");
}

async fn cardinality_guard_rejects_new_properties_only(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    let config = IngestConfig { max_properties_per_device: 2, ..IngestConfig::default() };
    let env = env(&db, StoreKind::Test(store.clone()), config).await;
    let (f, d) = (factory("plant-a"), device("press-1"));
    provision(&env, &f, "press-1").await;
    env.ingestor.ingest(&f, &d, br#"{"a": 1, "b": 2}"#, 1).await.unwrap();
    let IngestOutcome::Stored(s) = env.ingestor.ingest(&f, &d, br#"{"a": 3, "c": 4}"#, 2).await.unwrap() else {
        panic!()
    };
    assert_eq!(s.points, 1);
    assert_eq!(s.rejected[0].reason, RejectReason::CardinalityLimit);
    let latest = env.store.latest(&f, &d).await.unwrap();
    assert_eq!(latest.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(latest[0].1.value, Value::Float(3.0));
}

/// A connection's memo skips the catalogue for a repeat of a known property set, but a
/// message with a new property registers it, and a set the guard refused is never memoised.
async fn the_schema_memo_never_skips_a_new_property(db: TestDatabase) {
    let config = IngestConfig { max_properties_per_device: 3, ..IngestConfig::default() };
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), config).await;
    let (f, d) = (factory("plant-a"), device("press-1"));
    provision(&env, &f, "press-1").await;
    let mut memo = SchemaMemo::default();
    let mut send = async |payload: &str, at: i64| {
        let submitted = env.ingestor.submit_with(&f, &d, payload.as_bytes(), at, &mut memo).await.unwrap();
        match submitted.wait().await.unwrap() {
            IngestOutcome::Stored(summary) => summary,
            other => panic!("{other:?}"),
        }
    };
    send(r#"{"a": 1, "b": 2}"#, 1).await;
    send(r#"{"a": 1, "b": 2}"#, 2).await;
    let summary = send(r#"{"a": 1, "b": 2, "c": 3}"#, 3).await;
    assert!(summary.rejected.is_empty(), "{summary:?}");
    let summary = send(r#"{"a": 1, "b": 2, "c": 3, "d": 4}"#, 4).await;
    assert_eq!(summary.rejected.len(), 1, "the guard refuses d");
    let summary = send(r#"{"a": 1, "b": 2, "c": 3, "d": 4}"#, 5).await;
    assert_eq!(summary.rejected.len(), 1, "and keeps refusing it: a refused set is not memoised");
    let names: Vec<String> = env
        .ingestor
        .catalogue()
        .list_for_device(&f, &d)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name.as_str().to_owned())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
}

async fn store_failure_is_not_acknowledged(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    let env = env(&db, StoreKind::Test(store.clone()), IngestConfig::default()).await;
    let (f, d) = (factory("plant-a"), device("press-1"));
    provision(&env, &f, "press-1").await;
    let mut events = env.bus.subscribe_telemetry(4);
    store.fail.store(true, Ordering::SeqCst);
    let err = env.ingestor.ingest(&f, &d, br#"{"a": 1}"#, 1).await.unwrap_err();
    assert!(matches!(err, IngestError::Store(_)), "{err:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), events.next()).await.is_err(),
        "no event for a failed write"
    );
    store.fail.store(false, Ordering::SeqCst);
    env.ingestor.ingest(&f, &d, br#"{"a": 1}"#, 2).await.unwrap();
    assert!(events.next().await.is_some());
}

async fn registration_failure_is_an_error_with_a_health_event(db: TestDatabase) {
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), IngestConfig::default()).await;
    let (f, d) = (factory("plant-a"), device("press-1"));
    provision(&env, &f, "press-1").await;
    env.ingestor.ingest(&f, &d, br#"{"known": 1}"#, 1).await.unwrap();
    let mut health = env.bus.subscribe(topics::PLATFORM_HEALTH, 4);
    env.db.close().await;
    // Known properties come from the cache: still fine.
    env.ingestor.ingest(&f, &d, br#"{"known": 2}"#, 2).await.unwrap();
    let err = env.ingestor.ingest(&f, &d, br#"{"new_one": 1}"#, 3).await.unwrap_err();
    assert!(matches!(err, IngestError::Registration(_)), "{err:?}");
    let event = tokio::time::timeout(Duration::from_secs(5), health.next()).await.unwrap().unwrap();
    assert_eq!(event.event.payload["component"], "ingest");
    assert!(event.event.factory_id.is_none());
}

async fn concurrent_messages_share_writes(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    store.delay_ms.store(20, Ordering::SeqCst);
    let env = env(&db, StoreKind::Test(store.clone()), IngestConfig::default()).await;
    let f = factory("plant-a");
    for i in 0..10 {
        provision(&env, &f, &format!("d{i}")).await;
        // Register the property up front so the test measures the write path only.
        env.ingestor.ingest(&f, &device(&format!("d{i}")), br#"{"v": 0}"#, 0).await.unwrap();
    }
    let before = store.writes.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let ingestor = env.ingestor.clone();
        let (f, d) = (f.clone(), device(&format!("d{}", i % 10)));
        tasks.push(tokio::spawn(
            async move { ingestor.ingest(&f, &d, format!(r#"{{"v": {i}}}"#).as_bytes(), 1 + i).await },
        ));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap().unwrap(), IngestOutcome::Stored(_)));
    }
    let writes = store.writes.load(Ordering::SeqCst) - before;
    assert!(writes < 50, "100 concurrent messages took {writes} writes");
    let total: usize = store.points.lock().values().map(Vec::len).sum();
    assert_eq!(total, 110);
}

/// The property cache is bounded; an evicted device is reloaded from the database, so
/// the cardinality guard stays exact across evictions.
async fn the_property_cache_is_bounded_and_the_guard_survives_eviction(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    let config = IngestConfig { max_properties_per_device: 3, max_cached_properties: 10, ..IngestConfig::default() };
    let env = env(&db, StoreKind::Test(store.clone()), config).await;
    let f = factory("plant-a");
    for i in 0..8 {
        provision(&env, &f, &format!("dev-{i}")).await;
    }
    env.ingestor.ingest(&f, &device("dev-0"), br#"{"a": 1, "b": 2}"#, 1).await.unwrap();
    for i in 1..8 {
        env.ingestor.ingest(&f, &device(&format!("dev-{i}")), br#"{"a": 1, "b": 2}"#, 1).await.unwrap();
    }
    let (devices, properties) = env.ingestor.catalogue().cached();
    assert!(properties <= 10 && devices <= 5, "{devices} devices, {properties} properties cached");
    let text = env.metrics.render();
    let evictions = text
        .lines()
        .find_map(|l| l.strip_prefix("factoryops_ingest_property_cache_evictions_total "))
        .map(|v| v.trim().parse::<f64>().unwrap());
    assert!(evictions.is_some_and(|n| n > 0.0), "evictions counted: {evictions:?}\n{text}");
    // dev-0 was evicted: it has two properties in the DB, so one more fits, two do not.
    let IngestOutcome::Stored(s) = env.ingestor.ingest(&f, &device("dev-0"), br#"{"c": 3, "d": 4}"#, 2).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(s.points, 1);
    assert_eq!(s.rejected.len(), 1);
    assert_eq!(s.rejected[0].reason, RejectReason::CardinalityLimit);
    let names = env.ingestor.catalogue().list_for_device(&f, &device("dev-0")).await.unwrap();
    assert_eq!(names.len(), 3);
}

async fn error_lists_are_bounded_over_devices(db: TestDatabase) {
    let config = IngestConfig { max_error_lists: 10, ..IngestConfig::default() };
    let env = env(&db, StoreKind::Test(Arc::new(TestStore::default())), config).await;
    let f = factory("plant-a");
    for i in 0..25 {
        provision(&env, &f, &format!("dev-{i}")).await;
        env.ingestor.ingest(&f, &device(&format!("dev-{i}")), br#"{"ok": 1, "bad": null}"#, i).await.unwrap();
    }
    let kept = (0..25).filter(|i| !env.ingestor.last_errors(&f, &device(&format!("dev-{i}"))).is_empty()).count();
    assert!((1..=10).contains(&kept), "{kept} lists kept");
    assert!(!env.ingestor.last_errors(&f, &device("dev-24")).is_empty(), "the newest list is kept");
    assert!(env.ingestor.last_errors(&f, &device("dev-0")).is_empty(), "the oldest list is dropped");
}

/// HTTP ingestion's batch is one unit: 1,000 messages of one device without `ts` are
/// 1,000 points with distinct stamps, written in one store write; a message that is not a
/// JSON object is only its own result; a failed write stores nothing of the batch.
async fn a_batch_is_one_write_with_distinct_stamps(db: TestDatabase) {
    let store = Arc::new(TestStore::default());
    let env = env(&db, StoreKind::Test(store.clone()), IngestConfig::default()).await;
    let (f, d) = (factory("plant-a"), device("press-1"));
    provision(&env, &f, "press-1").await;
    provision(&env, &f, "press-2").await;
    let mut batch: Vec<_> = (0..1_000).map(|i| (d.clone(), format!(r#"{{"v": {i}}}"#).into_bytes())).collect();
    batch.insert(500, (device("press-2"), b"[1]".to_vec()));
    let now = env.clock.now_ms();
    let outcomes = env.ingestor.ingest_batch(&f, &batch, now).await.unwrap();
    assert_eq!(outcomes.len(), 1_001);
    assert!(matches!(&outcomes[500], IngestOutcome::MessageRejected(r) if r.as_str() == "not_an_object"));
    assert_eq!(store.writes.load(Ordering::SeqCst), 1, "one store write for the whole batch");
    let series = store.points.lock().values().next().cloned().unwrap();
    assert_eq!(series.len(), 1_000);
    assert!(series.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms), "distinct, in batch order");
    assert!(series.iter().enumerate().all(|(i, p)| p.value == Value::Float(i as f64)));

    store.fail.store(true, Ordering::SeqCst);
    let err = env.ingestor.ingest_batch(&f, &batch[..10], now).await.unwrap_err();
    assert!(matches!(err, IngestError::Store(_)), "{err:?}");
    assert_eq!(store.points.lock().values().map(Vec::len).sum::<usize>(), 1_000, "nothing of the failed batch");
}

backend_matrix!(
    a_batch_is_one_write_with_distinct_stamps,
    last_seen_reads_include_what_is_not_written_yet,
    the_property_cache_is_bounded_and_the_guard_survives_eviction,
    error_lists_are_bounded_over_devices,
    stores_points_registers_properties_and_publishes,
    rejected_messages_are_recorded_not_errors,
    last_errors_are_bounded,
    cardinality_guard_rejects_new_properties_only,
    the_schema_memo_never_skips_a_new_property,
    store_failure_is_not_acknowledged,
    registration_failure_is_an_error_with_a_health_event,
    concurrent_messages_share_writes,
);
