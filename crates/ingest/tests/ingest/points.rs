//! Property test of the ingest path (ADR 0009): any interleaving of devices, connections,
//! HTTP batches and explicit timestamps → the stored points are exactly the acknowledged
//! points; an explicit `ts` sent again replaces the value (the newest acknowledged wins),
//! and a server stamp never lands on another point.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use factoryops_ingest::{IngestConfig, IngestOutcome, Ingestor, SchemaMemo};
use factoryops_testkit::{Backend, TestDatabase};
use factoryops_tsdb::{SeriesQuery, Value};
use factoryops_types::{Clock, DeviceId, FactoryId, PropertyName};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::common::{device, env};

const DEVICES: usize = 3;
const LANES: usize = 4;

/// One message: its device and, maybe, an explicit `ts` (an offset in a small range, so
/// the same `ts` repeats).
type Msg = (usize, Option<i64>);

#[derive(Debug, Clone)]
enum Op {
    /// One message over a connection-like lane (`submit_with` with the lane's memo).
    Single(Msg),
    /// An HTTP batch.
    Batch(Vec<Msg>),
}

fn msg() -> impl Strategy<Value = Msg> {
    (0..DEVICES, prop::option::weighted(0.3, 0i64..6))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => msg().prop_map(Op::Single),
        1 => prop::collection::vec(msg(), 1..25).prop_map(Op::Batch),
    ]
}

/// An acknowledged message: device, timestamp, value, whether the `ts` was explicit.
type Acked = (usize, i64, f64, bool);

/// Runs one lane's operations in order, like one connection or one HTTP client.
async fn run_lane(
    ingestor: Ingestor,
    clock: Arc<dyn Clock>,
    f: FactoryId,
    lane: usize,
    ops: Vec<Op>,
    base: i64,
) -> Vec<Acked> {
    let mut memo = SchemaMemo::default();
    let mut acked = Vec::new();
    // Values are unique over the test: lane × 1e6 + a counter.
    let mut next_value = lane as u64 * 1_000_000;
    for op in ops {
        let messages: Vec<Msg> = match &op {
            Op::Single(m) => vec![*m],
            Op::Batch(ms) => ms.clone(),
        };
        let mut values = Vec::new();
        let batch: Vec<(DeviceId, Vec<u8>)> = messages
            .iter()
            .map(|(dev, ts)| {
                next_value += 1;
                values.push(next_value as f64);
                // Explicit timestamps belong to one lane (lanes run concurrently, so only
                // within a lane is "the newest acknowledged write" defined).
                let text = match ts {
                    Some(k) => format!(r#"{{"v": {next_value}, "ts": {}}}"#, base + lane as i64 * 100 + k),
                    None => format!(r#"{{"v": {next_value}}}"#),
                };
                (device(&format!("d{dev}")), text.into_bytes())
            })
            .collect();
        let outcomes = match op {
            Op::Single(_) => {
                let (d, payload) = &batch[0];
                let submitted = ingestor.submit_with(&f, d, payload, clock.now_ms(), &mut memo).await.unwrap();
                vec![submitted.wait().await.unwrap()]
            }
            Op::Batch(_) => ingestor.ingest_batch(&f, &batch, clock.now_ms()).await.unwrap(),
        };
        for (((dev, ts), value), outcome) in messages.iter().zip(values).zip(outcomes) {
            let IngestOutcome::Stored(summary) = outcome else { panic!("{outcome:?}") };
            assert_eq!(summary.points, 1);
            acked.push((*dev, summary.ts_ms, value, ts.is_some()));
        }
    }
    acked
}

#[test]
fn stored_points_are_the_acknowledged_points() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some(db) = rt.block_on(TestDatabase::create(Backend::Sqlite)) else { return };
    let env = rt.block_on(env(&db, crate::common::StoreKind::Embedded, IngestConfig::default()));
    let mut runner = TestRunner::new(Config { cases: 64, failure_persistence: None, ..Config::default() });
    let strategy = prop::collection::vec((0..LANES, op()), 1..40);
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&strategy, |ops| {
            // A fresh factory per case: its series start empty.
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let f = FactoryId::parse(format!("case-{n}")).unwrap();
            let base = env.clock.now_ms() - 3_600_000;
            let acked: Vec<Acked> = rt.block_on(async {
                let mut lanes = Vec::new();
                for lane in 0..LANES {
                    let mine: Vec<Op> = ops.iter().filter(|(l, _)| *l == lane).map(|(_, op)| op.clone()).collect();
                    lanes.push(tokio::spawn(run_lane(
                        env.ingestor.clone(),
                        env.clock.clone(),
                        f.clone(),
                        lane,
                        mine,
                        base,
                    )));
                }
                let mut all = Vec::new();
                for lane in lanes {
                    all.extend(lane.await.unwrap());
                }
                all
            });
            // Expected: one point per (device, ts); explicit ones the lane's last write,
            // stamped ones each their own.
            let mut expected: Vec<BTreeMap<i64, f64>> = vec![BTreeMap::new(); DEVICES];
            let mut stamped: HashSet<(usize, i64)> = HashSet::new();
            let explicit: HashSet<(usize, i64)> = acked.iter().filter(|a| a.3).map(|a| (a.0, a.1)).collect();
            for (dev, ts, value, is_explicit) in &acked {
                if !is_explicit {
                    prop_assert!(stamped.insert((*dev, *ts)), "stamp {ts} of d{dev} given twice");
                    prop_assert!(!explicit.contains(&(*dev, *ts)), "stamp {ts} of d{dev} hit an explicit ts");
                }
                expected[*dev].insert(*ts, *value);
            }
            for (dev, want) in expected.iter().enumerate() {
                let query = SeriesQuery {
                    device: device(&format!("d{dev}")),
                    property: PropertyName::parse("v").unwrap(),
                    from_ms: 0,
                    to_ms: i64::MAX,
                    aggregation: None,
                    limit: None,
                };
                let stored: BTreeMap<i64, f64> = rt
                    .block_on(env.store.query(&f, &query))
                    .unwrap()
                    .into_iter()
                    .map(|s| (s.ts_ms, if let Value::Float(v) = s.value { v } else { f64::NAN }))
                    .collect();
                prop_assert_eq!(&stored, want, "d{}", dev);
            }
            Ok(())
        })
        .unwrap();
}
