//! The export: a streaming bulk read of the telemetry store turned into a wide Parquet
//! file (`ts` + one Float64 column per device/property, aligned on timestamps), written
//! incrementally on a blocking thread while the next window is read, hashed as it is
//! written.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use factoryops_tsdb::{BulkBatch, Sample, TelemetryStore, TsdbError};
use factoryops_types::FactoryId;
use futures::StreamExt as _;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use sha2::{Digest, Sha256};

use crate::query::DatasetQuery;

/// Written into the file's `created_by` instead of the library's default (which names
/// the parquet crate's version): the bytes of a dataset depend only on its data.
pub const CREATED_BY: &str = "factoryops-datasets";

/// Values per bulk-read window (all columns): bounds the memory of an export.
pub const DEFAULT_BATCH_VALUES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("telemetry store: {0}")]
    Store(#[from] TsdbError),
    #[error("the dataset would hold more than {limit} values; narrow the query or aggregate with `every`")]
    TooManyValues { limit: u64 },
    #[error("writing the parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("building the columns: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("export writer task failed: {0}")]
    Task(String),
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Timestamps (rows) in the file.
    pub rows: u64,
    /// Columns including `ts`.
    pub columns: u64,
    /// Non-null value cells.
    pub values: u64,
    /// Lower-case hex sha256 of the whole file.
    pub sha256: String,
    pub bytes: u64,
}

/// Progress of an export: the share of the time range read so far, 0.0–1.0.
pub type Progress<'a> = &'a mut (dyn FnMut(f64) + Send);

/// The Arrow schema of a query's file.
pub fn schema(query: &DatasetQuery) -> SchemaRef {
    let mut fields = vec![Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false)];
    fields.extend(query.column_names().into_iter().map(|name| Field::new(name, DataType::Float64, true)));
    Arc::new(Schema::new(fields))
}

/// Fixed writer settings: the same data gives the same bytes (no time or version in the
/// metadata), zstd level 3, row groups bounded in values so a wide dataset does not hold
/// a huge row group in memory.
pub fn writer_properties(columns: usize) -> WriterProperties {
    let rows = (4 * 1024 * 1024 / columns.max(1)).clamp(1024, 64 * 1024);
    WriterProperties::builder()
        .set_created_by(CREATED_BY.into())
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(rows))
        .build()
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rows of one window: the union of the series' timestamps, each series placed on it
/// (null where it has no sample at that timestamp).
fn align(schema: &SchemaRef, batch: &BulkBatch) -> Result<Option<RecordBatch>, ExportError> {
    let mut ts: Vec<i64> = batch.series.iter().flat_map(|s| s.iter().map(|x| x.ts_ms)).collect();
    if ts.is_empty() {
        return Ok(None);
    }
    ts.sort_unstable();
    ts.dedup();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.series.len() + 1);
    let mut tb = TimestampMillisecondBuilder::with_capacity(ts.len()).with_timezone("UTC");
    tb.append_slice(&ts);
    columns.push(Arc::new(tb.finish()));
    for series in &batch.series {
        columns.push(Arc::new(place(&ts, series)));
    }
    Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
}

fn place(ts: &[i64], series: &[Sample]) -> arrow_array::Float64Array {
    let mut b = Float64Builder::with_capacity(ts.len());
    let mut it = series.iter().peekable();
    for &t in ts {
        match it.peek() {
            Some(s) if s.ts_ms == t => {
                b.append_value(s.value.as_f64());
                it.next();
            }
            _ => b.append_null(),
        }
    }
    b.finish()
}

/// Exports `query` of `factory` as Parquet into `out`, reading `batch_values` values per
/// window, and returns what was written. `max_values` bounds the non-null cells (raw
/// queries cannot be checked before reading). `out` is written on a blocking thread;
/// only one window is held in memory besides the row group being encoded.
pub async fn export<W: Write + Send + 'static>(
    store: &dyn TelemetryStore,
    factory: &FactoryId,
    query: &DatasetQuery,
    max_values: u64,
    batch_values: usize,
    out: W,
    progress: Progress<'_>,
) -> Result<(ExportSummary, W), ExportError> {
    let schema = schema(query);
    let columns = schema.fields().len();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
    let writer_schema = Arc::clone(&schema);
    let writer = tokio::task::spawn_blocking(move || -> Result<(Hashing<W>, u64), ExportError> {
        let sink = Hashing { inner: out, hash: Sha256::new(), bytes: 0 };
        let mut w = ArrowWriter::try_new(sink, writer_schema, Some(writer_properties(columns)))?;
        let mut rows = 0u64;
        while let Some(batch) = rx.blocking_recv() {
            rows += batch.num_rows() as u64;
            w.write(&batch)?;
        }
        let mut sink = w.into_inner()?;
        sink.flush()?;
        Ok((sink, rows))
    });
    let read = async {
        let span = (query.to - query.from).max(1) as f64;
        let mut values = 0u64;
        let mut stream = store.bulk_read(factory, query.bulk_query(batch_values));
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            values += batch.values() as u64;
            if values > max_values {
                return Err(ExportError::TooManyValues { limit: max_values });
            }
            if let Some(rb) = align(&schema, &batch)? {
                // A closed channel means the writer failed; its error is reported below.
                if tx.send(rb).await.is_err() {
                    break;
                }
            }
            progress(((batch.to_ms - query.from) as f64 / span).clamp(0.0, 1.0));
        }
        Ok::<u64, ExportError>(values)
    };
    let read = read.await;
    drop(tx);
    let written = writer.await.map_err(|e| ExportError::Task(e.to_string()))?;
    let values = read?;
    let (sink, rows) = written?;
    let summary =
        ExportSummary { rows, columns: columns as u64, values, sha256: hex(&sink.hash.finalize()), bytes: sink.bytes };
    Ok((summary, sink.inner))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use factoryops_tsdb::Value;

    use super::*;

    #[test]
    fn alignment_puts_nulls_where_a_series_has_no_sample() {
        let q = DatasetQuery {
            devices: vec![factoryops_types::DeviceId::parse("d").unwrap()],
            properties: vec![
                factoryops_types::PropertyName::parse("a").unwrap(),
                factoryops_types::PropertyName::parse("b").unwrap(),
            ],
            from: 0,
            to: 100,
            every: None,
            agg: None,
        };
        let s = |t, v| Sample { ts_ms: t, value: v };
        let batch = BulkBatch {
            from_ms: 0,
            to_ms: 100,
            series: vec![
                vec![s(10, Value::Float(1.5)), s(30, Value::Float(-2.0))],
                vec![s(20, Value::Bool(true)), s(30, Value::Bool(false))],
            ],
        };
        let rb = align(&schema(&q), &batch).unwrap().unwrap();
        assert_eq!(rb.num_rows(), 3);
        let col = |i: usize| {
            rb.column(i).as_any().downcast_ref::<arrow_array::Float64Array>().unwrap().iter().collect::<Vec<_>>()
        };
        assert_eq!(col(1), vec![Some(1.5), None, Some(-2.0)]);
        assert_eq!(col(2), vec![None, Some(1.0), Some(0.0)], "booleans as 0/1");
        let empty = BulkBatch { from_ms: 0, to_ms: 100, series: vec![vec![], vec![]] };
        assert!(align(&schema(&q), &empty).unwrap().is_none());
    }
}
