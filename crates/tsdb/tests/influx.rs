//! The InfluxDB adapter against a real `influxd` started by the test (see tests/support).
//! Skips loudly when `influxd` is not installed; fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use factoryops_tsdb::conformance::{self, T0, factory, point, raw_query};
use factoryops_tsdb::influx::protocol;
use factoryops_tsdb::{InfluxConfig, InfluxStore, Sample, TelemetryStore, TsdbError, Value};
use support::influxd::Influxd;

fn config(url: &str, buffer: &std::path::Path) -> InfluxConfig {
    let mut c = InfluxConfig::new(url, buffer);
    c.retry_window = Duration::from_millis(300);
    c.max_backoff = Duration::from_millis(300);
    c.request_timeout = Duration::from_secs(5);
    c
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_influxdb() {
    let Some(server) = Influxd::start() else { return };
    let buf = tempfile::tempdir().unwrap();
    let store = InfluxStore::open(config(&server.url("conformance"), buf.path())).await.unwrap();
    assert!(store.health().await.ready);
    conformance::run_all(&store).await;
    assert_eq!(store.buffered_points(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_latest_and_escaping() {
    let Some(server) = Influxd::start() else { return };
    let buf = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.url("paging"), buf.path());
    cfg.query_page = 7;
    cfg.batch_points = 13;
    let store = InfluxStore::open(cfg).await.unwrap();
    let fac = factory("plant-1");
    let pts: Vec<_> = (0..100).map(|i| point("m-1", "a.b:c_d-e", T0 + i, Value::Float(i as f64 / 3.0))).collect();
    store.write(&fac, &pts).await.unwrap();
    let got = store.query(&fac, &raw_query("m-1", "a.b:c_d-e", T0, T0 + 1000)).await.unwrap();
    let want: Vec<Sample> = pts.iter().map(|p| Sample { ts_ms: p.ts_ms, value: p.value }).collect();
    assert_eq!(got, want, "paged raw read, exact floats");
    let q = factoryops_tsdb::SeriesQuery { limit: Some(20), ..raw_query("m-1", "a.b:c_d-e", T0, T0 + 1000) };
    assert_eq!(store.query(&fac, &q).await.unwrap(), want[..20].to_vec());
    // Far timestamps and extreme floats survive.
    let far = [(-1_000_000_000_000, 1e300), (4_102_444_800_000, -5e-300), (0, -0.0)];
    let pts: Vec<_> = far.iter().map(|&(t, v)| point("m-2", "x", t, Value::Float(v))).collect();
    store.write(&fac, &pts).await.unwrap();
    let got = store.query(&fac, &raw_query("m-2", "x", i64::MIN, i64::MAX)).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], Sample { ts_ms: -1_000_000_000_000, value: Value::Float(1e300) });
    assert_eq!(got[2], Sample { ts_ms: 4_102_444_800_000, value: Value::Float(-5e-300) });
    let latest = store.latest(&fac, &conformance::device("m-2")).await.unwrap();
    assert_eq!(latest[0].1.ts_ms, 4_102_444_800_000, "latest sees future timestamps");
    // Out of InfluxDB's range: rejected with a reason.
    let r = store.write(&fac, &[point("m-2", "x", 9_300_000_000_000, Value::Float(1.0))]).await;
    assert!(matches!(r, Err(TsdbError::InvalidPoint { index: 0, .. })), "{r:?}");

    // Hostile tag values (the platform's ids cannot hold these, but the encoding must):
    // written with the adapter's line encoder and read back with its literal quoting.
    let nasty = ["it's", "back\\slash", "trail\\", "com,ma", "sp ace", "eq=ual", "dq\"uote", "50%", "\\'\\,", "x=\\ y"];
    let mut lines = String::new();
    for (i, n) in nasty.iter().enumerate() {
        protocol::push_line(&mut lines, "nasty", n, n, T0 + i as i64, Value::Float(i as f64));
    }
    let client = factoryops_platform::http::client();
    let r = client
        .post(format!("http://127.0.0.1:{}/write?db=paging&precision=ms", server.http_port))
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    for (i, n) in nasty.iter().enumerate() {
        let q = format!(
            "SELECT \"value\" FROM device_metrics WHERE {} AND time >= 0ms",
            protocol::series_where("nasty", n, n)
        );
        let r = client
            .post(format!("http://127.0.0.1:{}/query", server.http_port))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("db", "paging"), ("epoch", "ms"), ("q", &q)]))
            .send()
            .await
            .unwrap();
        let body = r.bytes().await.unwrap();
        let res = protocol::parse_response(&body).unwrap();
        let rows = &res[0].series.first().unwrap_or_else(|| panic!("{n:?} not found: {q}")).values;
        assert_eq!(rows.len(), 1, "{n:?}");
        assert_eq!(protocol::cell_f64(&rows[0], 1).unwrap(), Some(i as f64), "{n:?}");
        // Tags come back in stored form and decode to the original.
        let q = format!(
            "SHOW TAG VALUES FROM device_metrics WITH KEY = \"device_id\" WHERE \"factory_id\" = 'nasty' AND \"property_name\" = {}",
            protocol::tag_literal(n)
        );
        let r = client
            .post(format!("http://127.0.0.1:{}/query", server.http_port))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("db", "paging"), ("q", &q)]))
            .send()
            .await
            .unwrap();
        let res = protocol::parse_response(&r.bytes().await.unwrap()).unwrap();
        let v = res[0].series[0].values[0][1].as_str().unwrap().to_string();
        assert_eq!(protocol::decode_tag(&v), *n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_type_conflict_is_not_retried() {
    let Some(server) = Influxd::start() else { return };
    let buf = tempfile::tempdir().unwrap();
    let store = InfluxStore::open(config(&server.url("conflict"), buf.path())).await.unwrap();
    // Someone else wrote `value` as a string into this shard.
    let r = factoryops_platform::http::client()
        .post(format!("http://127.0.0.1:{}/write?db=conflict&precision=ms", server.http_port))
        .body(format!("device_metrics,device_id=m1,factory_id=f,property_name=p value=\"text\" {T0}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = store.write(&factory("f"), &[point("m1", "p", T0 + 1, Value::Float(1.0))]).await;
    match r {
        Err(TsdbError::Unavailable(reason)) => assert!(reason.contains("field type conflict"), "{reason}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // A retried write ends, after the retry window, in the buffer: none there means it was
    // refused at once (no wall-clock bound, which a slow debug build could miss).
    assert_eq!(store.buffered_points(), 0, "not retried, not buffered");
    assert!(store.health().await.ready);
}

/// Writes continue while InfluxDB is SIGKILLed (from another task, so requests are in
/// flight) and restarted on the same data dir; every acknowledged point is there exactly
/// once, in order, and health reports the outage and the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_mid_stream_loses_nothing() {
    let Some(mut server) = Influxd::start() else { return };
    let buf = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(InfluxStore::open(config(&server.url("outage"), buf.path())).await.unwrap());
    let mut health = store.health_watch();
    assert!(health.borrow_and_update().ready);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let fac = factory("plant-1");
            let mut acked = Vec::new();
            let mut seq = 0i64;
            let mut not_ready_seen = false;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let pts: Vec<_> = (0..50)
                    .map(|_| {
                        seq += 1;
                        point("m1", "counter", T0 + seq * 10, Value::Float(seq as f64))
                    })
                    .collect();
                store.write(&fac, &pts).await.unwrap();
                acked.extend(pts.iter().map(|p| (p.ts_ms, p.value)));
                let h = store.health().await;
                if !h.ready {
                    assert!(h.detail.contains("unreachable since") && h.detail.contains("points on disk"), "{h:?}");
                    not_ready_seen = true;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (acked, not_ready_seen)
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill();
    tokio::time::timeout(Duration::from_secs(10), health.wait_for(|h| !h.ready)).await.unwrap().unwrap();
    let during = store.buffered_points();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(store.buffered_points() > during, "writes continue into the buffer while influxdb is down");
    server.spawn();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, not_ready_seen) = writer.await.unwrap();
    assert!(not_ready_seen);
    assert!(store.wait_drained(Duration::from_secs(60)).await, "buffer replayed after the restart");
    assert!(store.health().await.ready);
    tokio::time::timeout(Duration::from_secs(5), health.wait_for(|h| h.ready)).await.unwrap().unwrap();
    let fac = factory("plant-1");
    let got = store.query(&fac, &raw_query("m1", "counter", T0, i64::MAX)).await.unwrap();
    let got: Vec<(i64, Value)> = got.into_iter().map(|s| (s.ts_ms, s.value)).collect();
    eprintln!("{} points acknowledged, {during}+ buffered during the outage", acked.len());
    assert!(acked.len() > 1000);
    assert_eq!(got.len(), acked.len(), "every acknowledged point exactly once");
    assert_eq!(got, acked, "in order, with the written values");
}

/// Batches buffered while InfluxDB is unreachable survive a restart of the store and are
/// replayed when it comes up; a full buffer makes writers wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_survives_store_restart_and_applies_back_pressure() {
    let Some(mut server) = Influxd::start() else { return };
    server.kill();
    let buf = tempfile::tempdir().unwrap();
    let url = server.url("restart");
    let fac = factory("plant-1");
    let mut cfg = config(&url, buf.path());
    cfg.retry_window = Duration::from_millis(50);
    cfg.buffer_max_bytes = 20_000;
    cfg.buffer_file_bytes = 4_000;
    {
        let store = InfluxStore::open(cfg.clone()).await.unwrap();
        assert!(store.health().await.ready, "nothing buffered yet");
        for i in 0..5 {
            let pts: Vec<_> = (0..20).map(|j| point("m1", "v", T0 + i * 100 + j, Value::Bool(j % 2 == 0))).collect();
            store.write(&fac, &pts).await.unwrap();
        }
        assert_eq!(store.buffered_points(), 100);
        assert!(!store.health().await.ready);
    }
    let store = std::sync::Arc::new(InfluxStore::open(cfg).await.unwrap());
    assert_eq!(store.buffered_points(), 100, "reloaded from disk");
    assert!(!store.health().await.ready);
    // Fill the buffer: the writer blocks until InfluxDB is back.
    let writer = {
        let store = store.clone();
        let fac = fac.clone();
        tokio::spawn(async move {
            for i in 5..200 {
                let pts: Vec<_> =
                    (0..20).map(|j| point("m1", "v", T0 + i * 100 + j, Value::Bool(j % 2 == 0))).collect();
                store.write(&fac, &pts).await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!writer.is_finished(), "writer waits on the full buffer");
    let held = store.buffered_points();
    assert!(held < 4000, "bounded: {held}");
    server.spawn();
    tokio::time::timeout(Duration::from_secs(60), writer).await.unwrap().unwrap();
    assert!(store.wait_drained(Duration::from_secs(60)).await);
    let got = store.query(&fac, &raw_query("m1", "v", T0, T0 + 100_000)).await.unwrap();
    assert_eq!(got.len(), 4000);
    assert!(got.iter().enumerate().all(|(k, s)| s.value == Value::Bool(k % 2 == 0)), "booleans stay booleans");
}

/// Authentication on: basic auth from the URL's user info or `u`/`p` works; wrong
/// credentials (401) are not the data's fault, so writes are kept in the buffer, the store
/// is not ready with a reason that names the credentials, queries are `Unavailable` (not
/// the caller's invalid query); once the credentials are right the buffer drains.
/// (InfluxDB 1.6 has no `Authorization: Token`; the header form is unit-tested.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_a_401_keeps_the_data_until_the_credentials_work() {
    let Some(server) = Influxd::start_with_auth("admin", "right-pass").await else { return };
    let port = server.http_port;
    let fac = factory("f");
    for (i, url) in [
        format!("http://admin:right-pass@127.0.0.1:{port}/?db=authdb"),
        format!("http://127.0.0.1:{port}/?db=authdb&u=admin&p=right-pass"),
    ]
    .iter()
    .enumerate()
    {
        let buf = tempfile::tempdir().unwrap();
        let store = InfluxStore::open(config(url, buf.path())).await.unwrap();
        let ts = T0 + i as i64;
        store.write(&fac, &[point("m1", "p", ts, Value::Float(1.0))]).await.unwrap();
        assert_eq!(store.buffered_points(), 0, "written directly");
        let got = store.query(&fac, &raw_query("m1", "p", ts, ts + 1)).await.unwrap();
        assert_eq!(got, vec![Sample { ts_ms: ts, value: Value::Float(1.0) }]);
    }

    let buf = tempfile::tempdir().unwrap();
    let url = format!("http://admin:wrong-pass@127.0.0.1:{port}/?db=authdb");
    let store = InfluxStore::open(config(&url, buf.path())).await.unwrap();
    store.write(&fac, &[point("m2", "p", T0, Value::Float(2.0))]).await.unwrap();
    assert_eq!(store.buffered_points(), 1, "kept in the buffer, not refused");
    let health = store.health().await;
    assert!(!health.ready, "{health:?}");
    assert!(health.detail.contains("401") && health.detail.contains("tsdb_url"), "{health:?}");
    match store.query(&fac, &raw_query("m2", "p", T0, T0 + 1)).await {
        Err(TsdbError::Unavailable(reason)) => assert!(reason.contains("401"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The operator fixes it (here: InfluxDB's side); the buffer drains on its own.
    let r = factoryops_platform::http::client()
        .post(format!("http://127.0.0.1:{port}/query"))
        .basic_auth("admin", Some("right-pass"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("q", "SET PASSWORD FOR \"admin\" = 'wrong-pass'")]))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(store.wait_drained(Duration::from_secs(30)).await, "the buffer drained");
    let got = store.query(&fac, &raw_query("m2", "p", T0, T0 + 1)).await.unwrap();
    assert_eq!(got, vec![Sample { ts_ms: T0, value: Value::Float(2.0) }]);
    assert!(store.health().await.ready);
}

/// A 3-day backlog (ADR 0010) written in one burst, newest first, while InfluxDB is down:
/// buffered, replayed with the original timestamps, and the daily and hourly aggregates
/// are the hand-computed ones. The default retention policy (`autogen`, infinite) sets no
/// backfill horizon; a finite one sets its duration less one shard group, and a point
/// older than the policy is refused by InfluxDB (ingestion refuses it first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_keeps_its_timestamps_and_the_retention_policy_bounds_backfill() {
    use factoryops_tsdb::Agg;
    use factoryops_tsdb::conformance::agg_query;
    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;
    let Some(mut server) = Influxd::start() else { return };
    let buf = tempfile::tempdir().unwrap();
    let fac = factory("plant-1");
    let store = InfluxStore::open(config(&server.url("backfill"), buf.path())).await.unwrap();
    assert_eq!(store.backfill_horizon(&fac), None, "autogen keeps data forever");

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let from = now - now.rem_euclid(DAY) - 3 * DAY;
    let backlog: Vec<(i64, f64)> =
        (0..432).map(|i: i64| (from + i * 10 * 60_000, ((i * 7) % 13) as f64 * 0.25)).collect();
    server.kill();
    let pts: Vec<_> = backlog.iter().rev().map(|&(t, v)| point("gw-1", "power_kw", t, Value::Float(v))).collect();
    store.write(&fac, &pts).await.unwrap();
    assert_eq!(store.buffered_points(), 432, "buffered while InfluxDB is down");
    server.spawn();
    assert!(store.wait_drained(Duration::from_secs(30)).await, "replayed");

    let raw = store.query(&fac, &raw_query("gw-1", "power_kw", from, from + 3 * DAY)).await.unwrap();
    let want: Vec<Sample> = backlog.iter().map(|&(t, v)| Sample { ts_ms: t, value: Value::Float(v) }).collect();
    assert_eq!(raw, want, "every point at its own timestamp");
    for every in [DAY, HOUR] {
        let mut sums: std::collections::BTreeMap<i64, (f64, f64)> = Default::default();
        for &(t, v) in &backlog {
            let e = sums.entry(t - t.rem_euclid(every)).or_default();
            e.0 += v;
            e.1 += 1.0;
        }
        let get = async |agg| store.query(&fac, &agg_query("gw-1", "power_kw", from, from + 3 * DAY, every, agg)).await;
        let (sum, count) = (get(Agg::Sum).await.unwrap(), get(Agg::Count).await.unwrap());
        let want_sum: Vec<Sample> =
            sums.iter().map(|(&t, &(s, _))| Sample { ts_ms: t, value: Value::Float(s) }).collect();
        let want_count: Vec<Sample> =
            sums.iter().map(|(&t, &(_, c))| Sample { ts_ms: t, value: Value::Float(c) }).collect();
        assert_eq!((sum, count), (want_sum, want_count), "buckets of {every} ms");
    }

    // A database whose default policy keeps one day, in shard groups of one hour.
    let client = factoryops_platform::http::client();
    let r = client
        .post(format!("http://127.0.0.1:{}/query", server.http_port))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("q", "CREATE DATABASE \"short\" WITH DURATION 1d SHARD DURATION 1h NAME \"day\"")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let buf = tempfile::tempdir().unwrap();
    let short = InfluxStore::open(config(&server.url("short"), buf.path())).await.unwrap();
    assert_eq!(short.backfill_horizon(&fac), Some(Duration::from_secs(23 * 3600)));
    short.write(&fac, &[point("gw-1", "p", now - 22 * HOUR, Value::Float(1.0))]).await.unwrap();
    let r = short.write(&fac, &[point("gw-1", "p", now - 25 * HOUR, Value::Float(1.0))]).await;
    match r {
        Err(TsdbError::Unavailable(reason)) => assert!(reason.contains("retention policy"), "{reason}"),
        other => panic!("InfluxDB drops points beyond its retention policy: {other:?}"),
    }
    // Named in the URL, a policy other than the default is the one read.
    let r = client
        .post(format!("http://127.0.0.1:{}/query", server.http_port))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[(
            "q",
            "CREATE RETENTION POLICY \"week\" ON \"short\" DURATION 7d REPLICATION 1 SHARD DURATION 1h",
        )]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let buf = tempfile::tempdir().unwrap();
    let week = InfluxStore::open(config(&format!("{}&rp=week", server.url("short")), buf.path())).await.unwrap();
    assert_eq!(week.backfill_horizon(&fac), Some(Duration::from_secs(7 * 86_400 - 3600)));
    week.write(&fac, &[point("gw-1", "p", now - 25 * HOUR, Value::Float(1.0))]).await.unwrap();
}
