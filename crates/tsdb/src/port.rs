use async_trait::async_trait;
pub use factoryops_types::Value;
use factoryops_types::{DeviceId, FactoryId, PropertyName};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::bulk::{BulkBatch, BulkQuery, BulkStream, WindowPlanner};

/// One point of one series. The factory is given alongside the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub device: DeviceId,
    pub property: PropertyName,
    /// Unix milliseconds, UTC.
    pub ts_ms: i64,
    pub value: Value,
}

/// One value read back: a raw point or an aggregation bucket (whose `ts_ms` is the bucket start).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub ts_ms: i64,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    First,
    Last,
}

/// A read of one series over `[from_ms, to_ms)`. With `every_ms` and `agg` set it is
/// aggregated into buckets aligned to multiples of `every_ms` since the epoch (UTC);
/// empty buckets are omitted. `Count` yields the number of raw points as a float.
/// Booleans aggregate as 0/1 (avg of a boolean is the fraction of `true`); `first`/`last`
/// of a boolean series stay booleans.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    pub device: DeviceId,
    pub property: PropertyName,
    pub from_ms: i64,
    pub to_ms: i64,
    pub aggregation: Option<(i64, Agg)>,
    /// Upper bound on returned samples (raw reads); `None` = no bound.
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreHealth {
    /// `true` while writes are durable in the primary store.
    pub ready: bool,
    /// Human-readable state, e.g. "ok", "influxdb unreachable, buffering 1234 points on disk".
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// A point the store refuses (NaN/inf, timestamp out of range). Nothing of the batch was written.
    #[error("point {index} rejected: {reason}")]
    InvalidPoint { index: usize, reason: String },
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// The telemetry store port.
///
/// `write` returns only when the batch is durable under the store's configured sync mode
/// (or, for InfluxDB, accepted by InfluxDB or its durable local buffer). Within one
/// series, a later write with the same timestamp replaces the earlier value.
#[async_trait]
pub trait TelemetryStore: Send + Sync + 'static {
    async fn write(&self, factory: &FactoryId, points: &[Point]) -> Result<(), TsdbError>;

    /// Raw or aggregated samples of one series, ascending by time.
    async fn query(&self, factory: &FactoryId, query: &SeriesQuery) -> Result<Vec<Sample>, TsdbError>;

    /// The most recent sample of every property of a device, ordered by property name.
    async fn latest(&self, factory: &FactoryId, device: &DeviceId) -> Result<Vec<(PropertyName, Sample)>, TsdbError>;

    async fn health(&self) -> StoreHealth;

    /// Makes everything written so far durable and flushes in-memory state; called on shutdown.
    async fn flush(&self) -> Result<(), TsdbError>;

    /// Many series over one range as a stream of bounded batches (consecutive time
    /// windows, see [`BulkBatch`]), for exports of millions of values in bounded memory.
    /// This default reads each series of each window with [`TelemetryStore::query`];
    /// the adapters override it with one read per window.
    fn bulk_read<'a>(&'a self, factory: &FactoryId, query: BulkQuery) -> BulkStream<'a> {
        let factory = factory.clone();
        let planner = match WindowPlanner::new(&query) {
            Ok(p) => p,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        futures::stream::try_unfold(planner, move |mut planner| {
            let factory = factory.clone();
            let query = query.clone();
            async move {
                let Some((from_ms, to_ms)) = planner.next_window() else { return Ok::<_, TsdbError>(None) };
                let mut series = Vec::with_capacity(query.series.len());
                for (device, property) in &query.series {
                    let q = SeriesQuery {
                        device: device.clone(),
                        property: property.clone(),
                        from_ms,
                        to_ms,
                        aggregation: query.aggregation,
                        limit: None,
                    };
                    series.push(self.query(&factory, &q).await?);
                }
                let batch = BulkBatch { from_ms, to_ms, series };
                planner.observe(batch.values());
                Ok(Some((batch, planner)))
            }
        })
        .boxed()
    }

    /// How far before now a point of `factory` may be written and still be kept as a raw
    /// point (`None`: no bound the store knows of). Ingestion refuses older points instead
    /// of acknowledging a point the store would drop, or whose partition holds only
    /// rollups by now, which cannot absorb new raw points (ADR 0010).
    fn backfill_horizon(&self, _factory: &FactoryId) -> Option<std::time::Duration> {
        None
    }
}
