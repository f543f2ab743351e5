//! Bucket accumulators shared by raw aggregation and rollups.
//!
//! Sums are exact (Shewchuk partials, rounded once at the end as Python's `fsum` does),
//! so a bucket's sum does not depend on how points were grouped into rollups, chunks or
//! the head: rollup-served and raw-served aggregations are bit-identical.

use crate::{Agg, Sample, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExactSum {
    partials: Vec<f64>,
}

impl ExactSum {
    pub fn from_partials(partials: Vec<f64>) -> Self {
        Self { partials }
    }

    pub fn partials(&self) -> &[f64] {
        &self.partials
    }

    pub fn add(&mut self, value: f64) {
        let mut x = value;
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    pub fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
    }

    /// The correctly rounded value of the exact sum.
    pub fn value(&self) -> f64 {
        let p = &self.partials;
        let mut n = p.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Round half-even correction: the remaining partials decide ties.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }
}

/// Everything any [`Agg`] needs for one bucket; mergeable in any grouping.
#[derive(Debug, Clone, PartialEq)]
pub struct Acc {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: ExactSum,
    pub first: (i64, Value),
    pub last: (i64, Value),
}

impl Acc {
    pub fn new(ts: i64, value: Value) -> Self {
        let f = value.as_f64();
        let mut sum = ExactSum::default();
        sum.add(f);
        Self { count: 1, min: f, max: f, sum, first: (ts, value), last: (ts, value) }
    }

    pub fn push(&mut self, ts: i64, value: Value) {
        let f = value.as_f64();
        self.count += 1;
        self.min = self.min.min(f);
        self.max = self.max.max(f);
        self.sum.add(f);
        if ts < self.first.0 {
            self.first = (ts, value);
        }
        if ts >= self.last.0 {
            self.last = (ts, value);
        }
    }

    pub fn merge(&mut self, other: &Acc) {
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum.merge(&other.sum);
        if other.first.0 < self.first.0 {
            self.first = other.first;
        }
        if other.last.0 >= self.last.0 {
            self.last = other.last;
        }
    }

    pub fn result(&self, agg: Agg) -> Value {
        match agg {
            Agg::Avg => Value::Float(self.sum.value() / self.count as f64),
            Agg::Min => Value::Float(self.min),
            Agg::Max => Value::Float(self.max),
            Agg::Sum => Value::Float(self.sum.value()),
            Agg::Count => Value::Float(self.count as f64),
            Agg::First => self.first.1,
            Agg::Last => self.last.1,
        }
    }
}

/// Epoch-aligned bucket start (floor division, also for negative timestamps).
pub fn bucket_start(ts: i64, every: i64) -> i64 {
    ts.div_euclid(every) * every
}

/// Buckets keyed by start; a sorted map keeps output ascending.
#[derive(Default)]
pub struct Buckets {
    pub map: std::collections::BTreeMap<i64, Acc>,
}

impl Buckets {
    pub fn push(&mut self, every: i64, ts: i64, value: Value) {
        let b = bucket_start(ts, every);
        // Points mostly arrive in time order: the newest bucket is the likely target.
        if let Some(mut last) = self.map.last_entry()
            && *last.key() == b
        {
            last.get_mut().push(ts, value);
            return;
        }
        match self.map.get_mut(&b) {
            Some(acc) => acc.push(ts, value),
            None => {
                self.map.insert(b, Acc::new(ts, value));
            }
        }
    }

    pub fn merge_acc(&mut self, every: i64, start: i64, acc: Acc) {
        let b = bucket_start(start, every);
        match self.map.get_mut(&b) {
            Some(a) => a.merge(&acc),
            None => {
                self.map.insert(b, acc);
            }
        }
    }

    pub fn into_samples(self, agg: Agg) -> Vec<Sample> {
        self.map.into_iter().map(|(ts_ms, acc)| Sample { ts_ms, value: acc.result(agg) }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn exact_sum_is_grouping_independent(vals in proptest::collection::vec(-1e12f64..1e12, 1..200), split in 0usize..200) {
            let mut seq = ExactSum::default();
            for &v in &vals { seq.add(v); }
            let split = split.min(vals.len());
            let mut a = ExactSum::default();
            let mut b = ExactSum::default();
            for &v in &vals[..split] { a.add(v); }
            for &v in vals[split..].iter().rev() { b.add(v); }
            a.merge(&b);
            prop_assert_eq!(seq.value().to_bits(), a.value().to_bits());
        }
    }

    #[test]
    fn classic_cancellation() {
        let mut s = ExactSum::default();
        for v in [1e100, 1.0, -1e100] {
            s.add(v);
        }
        assert_eq!(s.value(), 1.0);
    }
}
