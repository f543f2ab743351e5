//! The in-memory head: recent points per series, in arrival order until read.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Value;

/// Estimated memory per head point (vector slot plus amortised growth and map overhead).
pub const BYTES_PER_POINT: usize = 40;

#[derive(Debug)]
pub struct SeriesHead {
    points: Vec<(i64, Value)>,
    /// Strictly ascending so far; out-of-order writes clear it and readers sort a copy.
    sorted: bool,
}

impl Default for SeriesHead {
    fn default() -> Self {
        Self { points: Vec::new(), sorted: true }
    }
}

/// Stable sort then keep the last write of each timestamp.
fn normalize(points: &mut Vec<(i64, Value)>) {
    points.sort_by_key(|p| p.0);
    let mut out: Vec<(i64, Value)> = Vec::with_capacity(points.len());
    for &(t, v) in points.iter() {
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = v,
            _ => out.push((t, v)),
        }
    }
    *points = out;
}

#[derive(Debug, Default)]
pub struct Head {
    series: HashMap<u32, SeriesHead>,
    len: usize,
}

impl Head {
    /// Returns whether the head grew (an in-order duplicate replaces in place).
    pub fn push(&mut self, series: u32, ts: i64, value: Value) -> bool {
        let s = self.series.entry(series).or_default();
        match s.points.last_mut() {
            Some(last) if last.0 == ts && s.sorted => {
                last.1 = value;
                return false;
            }
            Some(last) if last.0 > ts => s.sorted = false,
            _ => {}
        }
        s.points.push((ts, value));
        self.len += 1;
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sorted, de-duplicated points of `[from, to)`.
    pub fn range(&self, series: u32, from: i64, to: i64) -> Vec<(i64, Value)> {
        let Some(s) = self.series.get(&series) else {
            return Vec::new();
        };
        if s.sorted {
            let a = s.points.partition_point(|p| p.0 < from);
            let b = s.points.partition_point(|p| p.0 < to);
            s.points[a..b].to_vec()
        } else {
            let mut v: Vec<(i64, Value)> = s.points.iter().filter(|p| p.0 >= from && p.0 < to).copied().collect();
            normalize(&mut v);
            v
        }
    }

    pub fn max_ts(&self, series: u32) -> Option<i64> {
        let s = self.series.get(&series)?;
        if s.sorted { s.points.last().map(|p| p.0) } else { s.points.iter().map(|p| p.0).max() }
    }

    /// Series ids in ascending order.
    pub fn series_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.series.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// One series' points sorted and de-duplicated (a flush takes them one series at a
    /// time, so it never holds a second copy of the whole head).
    pub fn sorted_points(&self, series: u32) -> Vec<(i64, Value)> {
        let Some(s) = self.series.get(&series) else {
            return Vec::new();
        };
        let mut v = s.points.clone();
        if !s.sorted {
            normalize(&mut v);
        }
        v
    }
}

#[derive(Debug, Default)]
pub struct HeadState {
    pub active: Head,
    /// The head being written to parts, with the last WAL segment it covers.
    pub frozen: Option<(Arc<Head>, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_wins_in_and_out_of_order() {
        let mut h = Head::default();
        h.push(1, 10, Value::Float(1.0));
        h.push(1, 10, Value::Float(2.0));
        h.push(1, 5, Value::Float(3.0));
        h.push(1, 10, Value::Float(4.0));
        h.push(1, 5, Value::Float(5.0));
        assert_eq!(h.range(1, 0, 100), vec![(5, Value::Float(5.0)), (10, Value::Float(4.0))]);
        assert_eq!(h.max_ts(1), Some(10));
        assert_eq!(h.series_ids(), vec![1]);
        assert_eq!(h.sorted_points(1), vec![(5, Value::Float(5.0)), (10, Value::Float(4.0))]);
    }
}
