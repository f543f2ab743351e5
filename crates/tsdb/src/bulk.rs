//! Streaming bulk reads: many series over one range, returned as consecutive time windows
//! so that exporting millions of values holds only one window in memory.

use factoryops_types::{DeviceId, PropertyName};
use futures::stream::BoxStream;

use crate::{Agg, Sample, TsdbError};

/// A read of many series over `[from_ms, to_ms)`, raw or aggregated with the same
/// semantics as [`crate::SeriesQuery`] (epoch-aligned UTC buckets, empty buckets omitted).
#[derive(Debug, Clone, PartialEq)]
pub struct BulkQuery {
    pub series: Vec<(DeviceId, PropertyName)>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub aggregation: Option<(i64, Agg)>,
    /// Target number of values in one batch, over all series. Aggregated reads hold it
    /// exactly (at least one bucket per window); raw reads adapt the window to the data
    /// density seen so far, so a batch is near the target unless density jumps.
    pub batch_values: usize,
}

/// The samples of every series of a [`BulkQuery`] within `[from_ms, to_ms)`, in the
/// query's series order, each ascending by time. Batches are consecutive and do not
/// overlap; together they cover the query range. A window without data is still
/// yielded (with empty series), so a consumer can report progress.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkBatch {
    pub from_ms: i64,
    pub to_ms: i64,
    pub series: Vec<Vec<Sample>>,
}

impl BulkBatch {
    pub fn values(&self) -> usize {
        self.series.iter().map(Vec::len).sum()
    }
}

pub type BulkStream<'a> = BoxStream<'a, Result<BulkBatch, TsdbError>>;

/// Starting window of a raw read, before any density is known.
const RAW_START_SPAN_MS: i64 = 3_600_000;
/// Smallest raw window: below it a dense burst is read whole rather than in slivers.
const RAW_MIN_SPAN_MS: i64 = 1_000;

/// Plans the windows of a bulk read. Aggregated reads use fixed windows whose bounds
/// fall on bucket boundaries, so that no bucket is split between two batches; raw reads
/// resize the next window from the values the last one held.
#[derive(Debug, Clone)]
pub struct WindowPlanner {
    next_from: i64,
    to: i64,
    every: Option<i64>,
    span: i64,
    target: usize,
    last: Option<(i64, i64)>,
}

impl WindowPlanner {
    /// Checks the query (`every` must be positive) and plans its windows.
    pub fn new(q: &BulkQuery) -> Result<Self, TsdbError> {
        let series = q.series.len().max(1) as i64;
        let target_per_series = (q.batch_values.max(1) as i64 / series).max(1);
        let (every, span) = match q.aggregation {
            Some((every, _)) if every <= 0 => {
                return Err(TsdbError::InvalidQuery(format!("aggregation interval must be positive, got {every} ms")));
            }
            Some((every, _)) => (Some(every), every.saturating_mul(target_per_series)),
            None => (None, RAW_START_SPAN_MS),
        };
        Ok(WindowPlanner { next_from: q.from_ms, to: q.to_ms, every, span, target: q.batch_values.max(1), last: None })
    }

    /// The next window, `None` when the range is covered.
    pub fn next_window(&mut self) -> Option<(i64, i64)> {
        if self.next_from >= self.to {
            return None;
        }
        let from = self.next_from;
        let mut end = from.saturating_add(self.span);
        if let Some(every) = self.every {
            // Bucket-aligned: the end is the start of a bucket (epoch multiples).
            let aligned = from.div_euclid(every).saturating_mul(every).saturating_add(self.span);
            end = if aligned > from { aligned } else { from.saturating_add(every) };
        }
        let end = end.min(self.to);
        self.next_from = end;
        self.last = Some((from, end));
        Some((from, end))
    }

    /// Feeds back the values the last window held (all series); raw reads resize the
    /// next window toward the target, by at most a factor of 4 either way.
    pub fn observe(&mut self, values: usize) {
        let (Some((a, b)), None) = (self.last, self.every) else { return };
        let span = b.saturating_sub(a).max(1) as f64;
        let wanted = span * self.target as f64 / values.max(1) as f64;
        let next = wanted.clamp(span / 4.0, span * 4.0);
        self.span = (next.min(i64::MAX as f64) as i64).max(RAW_MIN_SPAN_MS);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(from: i64, to: i64, aggregation: Option<(i64, Agg)>, series: usize, batch: usize) -> BulkQuery {
        let s = (DeviceId::parse("d").unwrap(), PropertyName::parse("p").unwrap());
        BulkQuery { series: vec![s; series], from_ms: from, to_ms: to, aggregation, batch_values: batch }
    }

    fn all(p: &mut WindowPlanner) -> Vec<(i64, i64)> {
        std::iter::from_fn(|| p.next_window()).collect()
    }

    #[test]
    fn aggregated_windows_fall_on_bucket_boundaries() {
        // 10 series, 50 values per batch: 5 buckets of 60 s per window; `from` is mid-bucket.
        let mut p = WindowPlanner::new(&q(30_000, 700_000, Some((60_000, Agg::Avg)), 10, 50)).unwrap();
        assert_eq!(all(&mut p), vec![(30_000, 300_000), (300_000, 600_000), (600_000, 700_000)]);
        // A batch smaller than the series count still advances one bucket at a time.
        let mut p = WindowPlanner::new(&q(-90_000, 60_000, Some((60_000, Agg::Sum)), 10, 3)).unwrap();
        assert_eq!(all(&mut p), vec![(-90_000, -60_000), (-60_000, 0), (0, 60_000)]);
        assert!(WindowPlanner::new(&q(0, 1, Some((0, Agg::Avg)), 1, 1)).is_err());
        assert!(WindowPlanner::new(&q(0, 1, Some((-5, Agg::Avg)), 1, 1)).is_err());
    }

    #[test]
    fn raw_windows_adapt_to_density() {
        let day = 86_400_000;
        let mut p = WindowPlanner::new(&q(0, 10 * day, None, 4, 1000)).unwrap();
        assert_eq!(p.next_window(), Some((0, 3_600_000)));
        p.observe(0); // empty: grow by 4
        assert_eq!(p.next_window(), Some((3_600_000, 3_600_000 + 14_400_000)));
        p.observe(2000); // twice the target: halve
        assert_eq!(p.next_window(), Some((18_000_000, 18_000_000 + 7_200_000)));
        p.observe(1_000_000); // far over: shrink by at most 4
        assert_eq!(p.next_window(), Some((25_200_000, 25_200_000 + 1_800_000)));
        let rest = all(&mut p);
        assert_eq!(rest.last().unwrap().1, 10 * day, "the last window ends at `to`");
        assert!(rest.windows(2).all(|w| w[0].1 == w[1].0), "consecutive");
    }

    #[test]
    fn empty_and_extreme_ranges() {
        assert_eq!(all(&mut WindowPlanner::new(&q(5, 5, None, 1, 10)).unwrap()), vec![]);
        assert_eq!(all(&mut WindowPlanner::new(&q(9, 5, None, 1, 10)).unwrap()), vec![]);
        let mut p = WindowPlanner::new(&q(i64::MAX - 10, i64::MAX, Some((i64::MAX / 2, Agg::Count)), 1, 10)).unwrap();
        assert_eq!(all(&mut p), vec![(i64::MAX - 10, i64::MAX)]);
        let mut p = WindowPlanner::new(&q(i64::MIN, i64::MIN + 10, None, 1, 10)).unwrap();
        assert_eq!(all(&mut p), vec![(i64::MIN, i64::MIN + 10)]);
    }
}
