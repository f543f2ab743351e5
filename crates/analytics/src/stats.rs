//! Small numeric helpers. NaN means missing everywhere; helpers skip it.

/// The finite values of `xs`.
pub fn finite(xs: &[f64]) -> Vec<f64> {
    xs.iter().copied().filter(|x| x.is_finite()).collect()
}

pub fn mean(xs: &[f64]) -> f64 {
    let mut s = 0.0;
    let mut n = 0usize;
    for &x in xs {
        if x.is_finite() {
            s += x;
            n += 1;
        }
    }
    if n == 0 { f64::NAN } else { s / n as f64 }
}

/// Sample standard deviation of the finite values.
pub fn std(xs: &[f64]) -> f64 {
    let m = mean(xs);
    let mut s = 0.0;
    let mut n = 0usize;
    for &x in xs {
        if x.is_finite() {
            s += (x - m) * (x - m);
            n += 1;
        }
    }
    if n < 2 { f64::NAN } else { (s / (n - 1) as f64).sqrt() }
}

/// Sorts finite values ascending.
pub fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = finite(xs);
    v.sort_by(f64::total_cmp);
    v
}

/// Quantile with linear interpolation (type 7) of an ascending slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Median of finite values; reorders `v`.
pub fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    let mid = n / 2;
    let (lower, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        let lo = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + m) / 2.0
    }
}

/// Median and the scale of the median absolute deviation (MAD / 0.6745, a robust sigma).
/// When the MAD is zero (over half the values equal) it falls back to the mean absolute
/// deviation × 1.2533, which estimates sigma for normal data too.
pub fn robust_location_scale(xs: &[f64]) -> (f64, f64) {
    let mut v = finite(xs);
    let med = median_in_place(&mut v);
    if !med.is_finite() {
        return (f64::NAN, f64::NAN);
    }
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    let mad = median_in_place(&mut dev);
    if mad > 0.0 {
        return (med, mad / 0.674_489_75);
    }
    let mean_ad = dev.iter().sum::<f64>() / dev.len() as f64;
    (med, mean_ad * 1.253_314_137)
}

/// Pearson correlation over the rows where both are finite; NaN with < 3 rows or no variance.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (mut n, mut sa, mut sb) = (0usize, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        if x.is_finite() && y.is_finite() {
            n += 1;
            sa += x;
            sb += y;
        }
    }
    if n < 3 {
        return f64::NAN;
    }
    let (ma, mb) = (sa / n as f64, sb / n as f64);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        if x.is_finite() && y.is_finite() {
            cov += (x - ma) * (y - mb);
            va += (x - ma) * (x - ma);
            vb += (y - mb) * (y - mb);
        }
    }
    if va <= 0.0 || vb <= 0.0 {
        return f64::NAN;
    }
    (cov / (va.sqrt() * vb.sqrt())).clamp(-1.0, 1.0)
}

/// Error metrics of a forecast against actuals (finite pairs only).
#[derive(Debug, Clone, Copy, Default)]
pub struct Errors {
    pub mae: f64,
    pub rmse: f64,
    /// Mean absolute percentage error in %, over actuals that are not ~0.
    pub mape: f64,
}

pub fn errors(actual: &[f64], predicted: &[f64]) -> Errors {
    let (mut ae, mut se, mut pe, mut n, mut np) = (0.0, 0.0, 0.0, 0usize, 0usize);
    for (&a, &p) in actual.iter().zip(predicted) {
        if a.is_finite() && p.is_finite() {
            let e = a - p;
            ae += e.abs();
            se += e * e;
            n += 1;
            if a.abs() > 1e-9 {
                pe += (e / a).abs();
                np += 1;
            }
        }
    }
    if n == 0 {
        return Errors { mae: f64::NAN, rmse: f64::NAN, mape: f64::NAN };
    }
    Errors {
        mae: ae / n as f64,
        rmse: (se / n as f64).sqrt(),
        mape: if np == 0 { f64::NAN } else { 100.0 * pe / np as f64 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_figures() {
        assert_eq!(median_in_place(&mut finite(&[3.0, 1.0, 2.0, f64::NAN])), 2.0);
        assert_eq!(median_in_place(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), 2.0);
        // MAD of 1..=5 around 3 is 1 → sigma 1/0.6745.
        let (m, s) = robust_location_scale(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(m, 3.0);
        assert!((s - 1.482_602).abs() < 1e-5);
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 0.997_949).abs() < 1e-5);
        let e = errors(&[10.0, 20.0], &[11.0, 18.0]);
        assert_eq!(e.mae, 1.5);
        assert!((e.mape - 10.0).abs() < 1e-12);
    }
}
