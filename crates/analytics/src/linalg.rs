//! Least squares by normal equations and Cholesky, with a tiny ridge so that a
//! calendar dummy that never occurs (or two collinear drivers) still gives an answer.

/// Solves min ‖Xb − y‖² + λ‖b₁..‖² for row-major `x` (n × k); the intercept column 0 is
/// not penalised. `None` when the system cannot be solved even with the ridge.
pub fn least_squares(x: &[f64], k: usize, y: &[f64], ridge: f64) -> Option<Vec<f64>> {
    let n = y.len();
    if k == 0 || x.len() != n * k {
        return None;
    }
    let mut a = vec![0.0; k * k];
    let mut b = vec![0.0; k];
    for (row, &yi) in x.chunks_exact(k).zip(y) {
        for i in 0..k {
            let ri = row[i];
            if ri == 0.0 {
                continue;
            }
            b[i] += ri * yi;
            for j in i..k {
                a[i * k + j] += ri * row[j];
            }
        }
    }
    let trace: f64 = (0..k).map(|i| a[i * k + i]).sum::<f64>() / k as f64;
    // Scale-aware floor: 1e-10 of the mean diagonal keeps a zero column solvable
    // without moving well-posed solutions measurably.
    let floor = (trace * 1e-10).max(1e-12);
    for i in 0..k {
        for j in 0..i {
            a[i * k + j] = a[j * k + i];
        }
        if i > 0 {
            a[i * k + i] += ridge;
        }
        a[i * k + i] += floor;
    }
    cholesky_solve(&mut a, k, &mut b)?;
    Some(b)
}

fn cholesky_solve(a: &mut [f64], k: usize, b: &mut [f64]) -> Option<()> {
    for j in 0..k {
        let mut d = a[j * k + j];
        for p in 0..j {
            d -= a[j * k + p] * a[j * k + p];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j * k + j] = d;
        for i in j + 1..k {
            let mut s = a[i * k + j];
            for p in 0..j {
                s -= a[i * k + p] * a[j * k + p];
            }
            a[i * k + j] = s / d;
        }
    }
    for i in 0..k {
        let mut s = b[i];
        for p in 0..i {
            s -= a[i * k + p] * b[p];
        }
        b[i] = s / a[i * k + i];
    }
    for i in (0..k).rev() {
        let mut s = b[i];
        for p in i + 1..k {
            s -= a[p * k + i] * b[p];
        }
        b[i] = s / a[i * k + i];
    }
    Some(())
}

/// Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.024_25 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.024_25 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_plane() {
        // y = 2 + 3a − b, exact.
        let rows = [(1.0, 0.0), (0.0, 1.0), (2.0, 5.0), (3.0, 1.0), (4.0, 4.0)];
        let x: Vec<f64> = rows.iter().flat_map(|&(a, b)| [1.0, a, b]).collect();
        let y: Vec<f64> = rows.iter().map(|&(a, b)| 2.0 + 3.0 * a - b).collect();
        let c = least_squares(&x, 3, &y, 0.0).expect("solvable");
        assert!((c[0] - 2.0).abs() < 1e-6 && (c[1] - 3.0).abs() < 1e-6 && (c[2] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn normal_quantiles() {
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-6);
        assert!((normal_quantile(0.5)).abs() < 1e-12);
        assert!((normal_quantile(0.001) + 3.090_232).abs() < 1e-6);
    }
}
