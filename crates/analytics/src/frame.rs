//! The input of every analysis: sorted UTC millisecond time stamps and named f64 columns
//! (`device/property`), NaN for missing. Built directly or from Arrow record batches as
//! the dataset export writes them (a `ts` Timestamp(ms, UTC) column, one Float64 column
//! per `device/property`).

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike};
use chrono_tz::Tz;

use crate::FrameError;

/// The name of the time stamp column in dataset files.
pub const TS_COLUMN: &str = "ts";

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Frame {
    ts: Vec<i64>,
    columns: Vec<Column>,
}

impl Frame {
    /// Checks that time stamps strictly increase, that every column has one value per
    /// time stamp and that names are unique and non-empty.
    pub fn new(ts: Vec<i64>, columns: Vec<(String, Vec<f64>)>) -> Result<Self, FrameError> {
        if let Some(i) = ts.windows(2).position(|w| w[1] <= w[0]) {
            return Err(FrameError::Unsorted { index: i + 1 });
        }
        let mut out = Vec::with_capacity(columns.len());
        for (name, values) in columns {
            if name.is_empty() || name == TS_COLUMN || out.iter().any(|c: &Column| c.name == name) {
                return Err(FrameError::Name(name));
            }
            if values.len() != ts.len() {
                return Err(FrameError::Length { column: name, expected: ts.len(), got: values.len() });
            }
            out.push(Column { name, values });
        }
        Ok(Self { ts, columns: out })
    }

    /// Concatenates record batches of one schema: `ts` (a Timestamp of any unit, read as
    /// UTC ms) and numeric columns (Float64/Float32/Int64/Int32; null → NaN).
    pub fn from_record_batches(batches: &[RecordBatch]) -> Result<Self, FrameError> {
        let Some(first) = batches.first() else {
            return Ok(Self::default());
        };
        let schema = first.schema();
        let ts_idx = schema.fields().iter().position(|f| f.name() == TS_COLUMN).ok_or(FrameError::NoTimestamp)?;
        let names: Vec<String> =
            schema.fields().iter().enumerate().filter(|(i, _)| *i != ts_idx).map(|(_, f)| f.name().clone()).collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut ts = Vec::with_capacity(rows);
        let mut cols: Vec<Vec<f64>> = names.iter().map(|_| Vec::with_capacity(rows)).collect();
        for batch in batches {
            let s = batch.schema();
            if s.fields().len() != schema.fields().len()
                || s.fields().iter().zip(schema.fields().iter()).any(|(a, b)| a.name() != b.name())
            {
                return Err(FrameError::SchemaMismatch);
            }
            append_ts(batch.column(ts_idx).as_ref(), &mut ts)?;
            let mut c = 0;
            for (i, field) in s.fields().iter().enumerate() {
                if i == ts_idx {
                    continue;
                }
                append_values(field.name(), batch.column(i).as_ref(), &mut cols[c])?;
                c += 1;
            }
        }
        Self::new(ts, names.into_iter().zip(cols).collect())
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn ts(&self) -> &[i64] {
        &self.ts
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn column(&self, name: &str) -> Option<&[f64]> {
        self.columns.iter().find(|c| c.name == name).map(|c| c.values.as_slice())
    }

    /// The sampling interval: the median of the positive gaps between time stamps.
    pub fn step_ms(&self) -> Option<i64> {
        step_of(&self.ts)
    }
}

pub(crate) fn step_of(ts: &[i64]) -> Option<i64> {
    let mut gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 0).collect();
    if gaps.is_empty() {
        return None;
    }
    // The lower median, so two gaps give the smaller one.
    let mid = (gaps.len() - 1) / 2;
    let (_, m, _) = gaps.select_nth_unstable(mid);
    Some(*m)
}

fn append_ts(array: &dyn Array, out: &mut Vec<i64>) -> Result<(), FrameError> {
    let (factor_num, factor_den): (i64, i64) = match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => (1000, 1),
        DataType::Timestamp(TimeUnit::Millisecond, _) => (1, 1),
        DataType::Timestamp(TimeUnit::Microsecond, _) => (1, 1000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => (1, 1_000_000),
        other => {
            return Err(FrameError::Type {
                column: TS_COLUMN.into(),
                data_type: other.to_string(),
                expected: "Timestamp",
            });
        }
    };
    let raw: Vec<Option<i64>> = match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => array.as_primitive::<TimestampSecondType>().iter().collect(),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            array.as_primitive::<TimestampMillisecondType>().iter().collect()
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            array.as_primitive::<TimestampMicrosecondType>().iter().collect()
        }
        _ => array.as_primitive::<TimestampNanosecondType>().iter().collect(),
    };
    for (i, v) in raw.into_iter().enumerate() {
        let v = v.ok_or(FrameError::NullTimestamp(out.len() + i))?;
        out.push(v.saturating_mul(factor_num).div_euclid(factor_den));
    }
    Ok(())
}

fn append_values(name: &str, array: &dyn Array, out: &mut Vec<f64>) -> Result<(), FrameError> {
    match array.data_type() {
        DataType::Float64 => out.extend(array.as_primitive::<Float64Type>().iter().map(|v| v.unwrap_or(f64::NAN))),
        DataType::Float32 => {
            out.extend(array.as_primitive::<Float32Type>().iter().map(|v| v.map_or(f64::NAN, f64::from)))
        }
        DataType::Int64 => {
            out.extend(array.as_primitive::<Int64Type>().iter().map(|v| v.map_or(f64::NAN, |x| x as f64)))
        }
        DataType::Int32 => out.extend(array.as_primitive::<Int32Type>().iter().map(|v| v.map_or(f64::NAN, f64::from))),
        other => {
            return Err(FrameError::Type { column: name.into(), data_type: other.to_string(), expected: "Float64" });
        }
    }
    Ok(())
}

/// RFC 3339 UTC with milliseconds, the API's time format.
pub fn fmt_ts(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true)).unwrap_or_default()
}

/// Local calendar position of a UTC instant in the factory's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    /// 0–23, local wall-clock hour.
    pub hour: u32,
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u32,
    /// Local date as days since 1970-01-01 (groups points into local days).
    pub day: i64,
}

pub fn calendar(ms: i64, tz: Tz) -> Calendar {
    let Some(utc) = DateTime::from_timestamp_millis(ms) else {
        return Calendar { hour: 0, weekday: 0, day: 0 };
    };
    let local = utc.with_timezone(&tz);
    let date = local.date_naive();
    Calendar {
        hour: local.hour(),
        weekday: local.weekday().num_days_from_monday(),
        day: i64::from(date.num_days_from_ce()) - 719_163,
    }
}

/// A regular series on a fixed grid, made from one column: the analyses that need equal
/// spacing (forecasting, seasonal decomposition, changepoints) work on this.
#[derive(Debug, Clone)]
pub struct Regular {
    pub start_ms: i64,
    pub step_ms: i64,
    /// Values on the grid; gaps linearly interpolated (edges: nearest value).
    pub values: Vec<f64>,
    /// How many grid slots had no observation and were filled.
    pub filled: usize,
}

/// Largest grid this crate builds: 4 × the rows + 1,000, so a frame with odd spacing
/// cannot blow memory up.
pub(crate) fn regularize(ts: &[i64], values: &[f64]) -> Option<Regular> {
    let step = step_of(ts)?;
    let (first, last) = (*ts.first()?, *ts.last()?);
    let slots = usize::try_from((last - first) / step).ok()? + 1;
    if slots > ts.len().saturating_mul(4).saturating_add(1000) {
        return None;
    }
    let mut grid = vec![f64::NAN; slots];
    for (&t, &v) in ts.iter().zip(values) {
        let slot = ((t - first) as f64 / step as f64).round() as usize;
        if slot < slots && v.is_finite() {
            grid[slot] = v;
        }
    }
    let missing = grid.iter().filter(|v| !v.is_finite()).count();
    if missing == slots {
        return None;
    }
    interpolate(&mut grid);
    Some(Regular { start_ms: first, step_ms: step, values: grid, filled: missing })
}

/// Fills NaN runs linearly between neighbours, and at the edges with the nearest value.
pub(crate) fn interpolate(v: &mut [f64]) {
    let mut prev: Option<usize> = None;
    let mut i = 0;
    while i < v.len() {
        if v[i].is_finite() {
            if let Some(p) = prev
                && i > p + 1
            {
                let (a, b) = (v[p], v[i]);
                let span = (i - p) as f64;
                for (k, slot) in v.iter_mut().enumerate().take(i).skip(p + 1) {
                    *slot = a + (b - a) * (k - p) as f64 / span;
                }
            } else if prev.is_none() {
                let b = v[i];
                for slot in v.iter_mut().take(i) {
                    *slot = b;
                }
            }
            prev = Some(i);
        }
        i += 1;
    }
    if let Some(p) = prev {
        let a = v[p];
        for slot in v.iter_mut().skip(p + 1) {
            *slot = a;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, TimestampMillisecondArray};
    use arrow_schema::{Field, Schema};

    use super::*;

    #[test]
    fn from_arrow_batches() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("press-1/power_kw", DataType::Float64, true),
        ]));
        let b1 = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![0, 1000]).with_timezone("UTC")),
                Arc::new(Float64Array::from(vec![Some(1.0), None])),
            ],
        )
        .expect("batch");
        let b2 = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMillisecondArray::from(vec![2000]).with_timezone("UTC")),
                Arc::new(Float64Array::from(vec![Some(3.0)])),
            ],
        )
        .expect("batch");
        let f = Frame::from_record_batches(&[b1, b2]).expect("frame");
        assert_eq!(f.ts(), &[0, 1000, 2000]);
        let c = f.column("press-1/power_kw").expect("column");
        assert_eq!(c[0], 1.0);
        assert!(c[1].is_nan());
        assert_eq!(f.step_ms(), Some(1000));
    }

    #[test]
    fn refuses_text_columns_and_a_missing_ts() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), false),
            Field::new("m/state", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow_array::TimestampSecondArray::from(vec![1])),
                Arc::new(arrow_array::StringArray::from(vec!["idle"])),
            ],
        )
        .expect("batch");
        assert!(
            matches!(Frame::from_record_batches(&[b]), Err(FrameError::Type { column, .. }) if column == "m/state")
        );
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(vec![1.0]))]).expect("batch");
        assert_eq!(Frame::from_record_batches(&[b]), Err(FrameError::NoTimestamp));
    }

    #[test]
    fn refuses_unsorted_and_ragged() {
        assert_eq!(Frame::new(vec![0, 0], vec![]), Err(FrameError::Unsorted { index: 1 }));
        assert!(matches!(Frame::new(vec![0, 1], vec![("a".into(), vec![1.0])]), Err(FrameError::Length { .. })));
    }

    #[test]
    fn regular_grid_interpolates() {
        let r = regularize(&[0, 10, 40], &[1.0, f64::NAN, 4.0]).expect("grid");
        assert_eq!(r.values, vec![1.0, 1.75, 2.5, 3.25, 4.0]);
        assert_eq!(r.filled, 3);
    }

    #[test]
    fn calendar_in_factory_zone() {
        // 2026-03-29 00:30 UTC is 01:30 CET (Sunday); 01:30 UTC is 03:30 CEST after the jump.
        let tz: Tz = "Europe/Berlin".parse().expect("tz");
        let t = 1_774_744_200_000; // 2026-03-29T00:30:00Z
        let c = calendar(t, tz);
        assert_eq!((c.hour, c.weekday), (1, 6));
        assert_eq!(calendar(t + 3_600_000, tz).hour, 3);
    }
}
