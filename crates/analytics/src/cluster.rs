//! Load-profile clustering: each complete local day (24 hourly means in the factory's time
//! zone) is a point; seeded k-means++ with 10 restarts; k given or chosen by silhouette.

use chrono::{Duration, NaiveDate};
use chrono_tz::Tz;
use serde::Serialize;

use crate::AnalysisError;
use crate::control::Control;
use crate::frame::{self, Frame};
use crate::result::{Finding, fmt_num, split_name, unit_of};
use crate::rng::SplitMix64;

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const RESTARTS: usize = 10;
const MAX_ITER: usize = 100;
/// Largest k tried when choosing it.
pub const MAX_AUTO_K: usize = 8;

/// Local days with all 24 hours observed: (day number, weekday, 24 hourly means).
/// A 23-hour DST day lacks an hour and is left out; a 25-hour day averages its repeated hour.
pub fn daily_profiles(ts: &[i64], values: &[f64], tz: Tz) -> Vec<(i64, u32, [f64; 24])> {
    let mut out = Vec::new();
    let mut current: Option<(i64, u32)> = None;
    let mut sums = [0.0; 24];
    let mut counts = [0u32; 24];
    let flush = |day: Option<(i64, u32)>, sums: &[f64; 24], counts: &[u32; 24], out: &mut Vec<_>| {
        if let Some((d, wd)) = day
            && counts.iter().all(|c| *c > 0)
        {
            let mut p = [0.0; 24];
            for h in 0..24 {
                p[h] = sums[h] / f64::from(counts[h]);
            }
            out.push((d, wd, p));
        }
    };
    for (t, v) in ts.iter().zip(values) {
        if !v.is_finite() {
            continue;
        }
        let c = frame::calendar(*t, tz);
        if current.map(|x| x.0) != Some(c.day) {
            flush(current, &sums, &counts, &mut out);
            current = Some((c.day, c.weekday));
            sums = [0.0; 24];
            counts = [0; 24];
        }
        sums[c.hour as usize] += v;
        counts[c.hour as usize] += 1;
    }
    flush(current, &sums, &counts, &mut out);
    out
}

fn dist2(a: &[f64; 24], b: &[f64; 24]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Lloyd's k-means from a k-means++ start; returns (centroids, labels, inertia).
pub fn kmeans(points: &[[f64; 24]], k: usize, rng: &mut SplitMix64) -> (Vec<[f64; 24]>, Vec<usize>, f64) {
    let n = points.len();
    let mut centroids = vec![points[rng.below(n)]];
    let mut d2: Vec<f64> = points.iter().map(|p| dist2(p, &centroids[0])).collect();
    while centroids.len() < k {
        let total: f64 = d2.iter().sum();
        let next = if total <= 0.0 {
            rng.below(n)
        } else {
            let mut r = rng.next_f64() * total;
            let mut pick = n - 1;
            for (i, d) in d2.iter().enumerate() {
                if r < *d {
                    pick = i;
                    break;
                }
                r -= d;
            }
            pick
        };
        centroids.push(points[next]);
        for (i, p) in points.iter().enumerate() {
            d2[i] = d2[i].min(dist2(p, &points[next]));
        }
    }
    let mut labels = vec![0usize; n];
    for _ in 0..MAX_ITER {
        let mut changed = false;
        for (i, p) in points.iter().enumerate() {
            let best = nearest(p, &centroids);
            if best != labels[i] {
                labels[i] = best;
                changed = true;
            }
        }
        let mut sums = vec![[0.0; 24]; k];
        let mut counts = vec![0usize; k];
        for (p, &l) in points.iter().zip(&labels) {
            counts[l] += 1;
            for h in 0..24 {
                sums[l][h] += p[h];
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for h in 0..24 {
                    centroids[c][h] = sums[c][h] / counts[c] as f64;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let inertia = points.iter().zip(&labels).map(|(p, &l)| dist2(p, &centroids[l])).sum();
    (centroids, labels, inertia)
}

fn nearest(p: &[f64; 24], centroids: &[[f64; 24]]) -> usize {
    let mut best = (0, f64::INFINITY);
    for (c, q) in centroids.iter().enumerate() {
        let d = dist2(p, q);
        if d < best.1 {
            best = (c, d);
        }
    }
    best.0
}

/// Mean silhouette (Euclidean); 0 for a single cluster.
pub fn silhouette(points: &[[f64; 24]], labels: &[usize], k: usize) -> f64 {
    let n = points.len();
    if k < 2 || n < 3 {
        return 0.0;
    }
    let mut total = 0.0;
    for i in 0..n {
        let mut sum = vec![0.0; k];
        let mut cnt = vec![0usize; k];
        for j in 0..n {
            if i != j {
                sum[labels[j]] += dist2(&points[i], &points[j]).sqrt();
                cnt[labels[j]] += 1;
            }
        }
        let own = labels[i];
        if cnt[own] == 0 {
            continue; // a singleton's silhouette is 0
        }
        let a = sum[own] / cnt[own] as f64;
        let b =
            (0..k).filter(|&c| c != own && cnt[c] > 0).map(|c| sum[c] / cnt[c] as f64).fold(f64::INFINITY, f64::min);
        if b.is_finite() && a.max(b) > 0.0 {
            total += (b - a) / a.max(b);
        }
    }
    total / n as f64
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterProfile {
    /// 1-based, largest cluster first.
    pub cluster: usize,
    pub days: usize,
    /// Mean value per local hour 0–23.
    pub profile: Vec<f64>,
    pub mean: f64,
    /// Days of this cluster per weekday, Monday first.
    pub weekday_days: [usize; 7],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayAssignment {
    pub date: String,
    pub weekday: &'static str,
    pub cluster: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusteringOutput {
    pub k: usize,
    pub k_chosen_by: &'static str,
    pub silhouette: f64,
    /// Silhouette of each k tried (k, score) when k was chosen.
    pub silhouettes: Vec<(usize, f64)>,
    pub clusters: Vec<ClusterProfile>,
    pub days: Vec<DayAssignment>,
}

pub(crate) fn run(
    frame: &Frame,
    values: &[f64],
    tz: Tz,
    k: Option<usize>,
    seed: u64,
    control: &dyn Control,
) -> Result<ClusteringOutput, AnalysisError> {
    let days = daily_profiles(frame.ts(), values, tz);
    let points: Vec<[f64; 24]> = days.iter().map(|d| d.2).collect();
    let min_days = k.map_or(4, |k| k + 1);
    if points.len() < min_days {
        return Err(AnalysisError::InsufficientData(format!(
            "clustering needs at least {min_days} complete local days (24 hours each), found {}",
            points.len()
        )));
    }
    let ks: Vec<usize> = match k {
        Some(k) => vec![k],
        None => (2..=MAX_AUTO_K.min(points.len() - 1)).collect(),
    };
    let mut best: Option<Clustering> = None;
    let mut silhouettes = Vec::new();
    for (i, &kk) in ks.iter().enumerate() {
        control.checkpoint(i as f64 / ks.len() as f64)?;
        // One generator per k, so a result does not depend on which other k were tried.
        let mut rng = SplitMix64::new(seed ^ (kk as u64).wrapping_mul(0x9E37_79B9));
        let mut run_best: Option<(Vec<[f64; 24]>, Vec<usize>, f64)> = None;
        for _ in 0..RESTARTS {
            let (c, l, inertia) = kmeans(&points, kk, &mut rng);
            if run_best.as_ref().is_none_or(|b| inertia < b.2) {
                run_best = Some((c, l, inertia));
            }
        }
        let Some((c, l, _)) = run_best else { continue };
        let s = silhouette(&points, &l, kk);
        silhouettes.push((kk, s));
        if best.as_ref().is_none_or(|b| s > b.1 + 1e-12) {
            best = Some((kk, s, c, l));
        }
    }
    let Some((k_final, sil, centroids, labels)) = best else {
        return Err(AnalysisError::InsufficientData("no clustering could be made".into()));
    };
    // Relabel: largest cluster first, ties by higher mean, then by old label.
    let mut order: Vec<usize> = (0..k_final).collect();
    let size = |c: usize| labels.iter().filter(|&&l| l == c).count();
    let mean = |c: usize| centroids[c].iter().sum::<f64>() / 24.0;
    order.sort_by(|&a, &b| size(b).cmp(&size(a)).then(mean(b).total_cmp(&mean(a))).then(a.cmp(&b)));
    let mut rank = vec![0usize; k_final];
    for (new, &old) in order.iter().enumerate() {
        rank[old] = new + 1;
    }
    let clusters = order
        .iter()
        .map(|&old| {
            let mut weekday_days = [0usize; 7];
            for (d, &l) in days.iter().zip(&labels) {
                if l == old {
                    weekday_days[d.1 as usize] += 1;
                }
            }
            ClusterProfile {
                cluster: rank[old],
                days: size(old),
                profile: centroids[old].to_vec(),
                mean: mean(old),
                weekday_days,
            }
        })
        .collect();
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let assignments = days
        .iter()
        .zip(&labels)
        .map(|(d, &l)| DayAssignment {
            date: (epoch + Duration::days(d.0)).format("%Y-%m-%d").to_string(),
            weekday: WEEKDAYS[d.1 as usize],
            cluster: rank[l],
        })
        .collect();
    Ok(ClusteringOutput {
        k: k_final,
        k_chosen_by: if k.is_some() { "given" } else { "silhouette" },
        silhouette: sil,
        silhouettes: if k.is_some() { Vec::new() } else { silhouettes },
        clusters,
        days: assignments,
    })
}

/// k, silhouette, centroids, labels.
type Clustering = (usize, f64, Vec<[f64; 24]>, Vec<usize>);

fn weekday_summary(w: &[usize; 7]) -> String {
    let total: usize = w.iter().sum();
    let weekend = w[5] + w[6];
    if total > 0 && weekend * 2 > total {
        "mostly Sat–Sun".into()
    } else if total > 0 && weekend * 5 < total {
        "mostly Mon–Fri".into()
    } else {
        "mixed weekdays".into()
    }
}

pub(crate) fn findings(column: &str, out: &ClusteringOutput) -> Vec<Finding> {
    let unit = unit_of(column);
    let (device, property) = split_name(column);
    let who = if device.is_empty() { property.to_string() } else { format!("{device} {property}") };
    let mut f: Vec<Finding> = out
        .clusters
        .iter()
        .map(|c| {
            let (peak_h, peak) = c
                .profile
                .iter()
                .copied()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |a, (h, v)| if v > a.1 { (h, v) } else { a });
            Finding::new(
                "day_type",
                format!(
                    "Day type {} ({} days, {}): {who} averages {}{unit}, peaking at {:02}:00 with {}{unit}.",
                    c.cluster,
                    c.days,
                    weekday_summary(&c.weekday_days),
                    fmt_num(c.mean, 2),
                    peak_h,
                    fmt_num(peak, 2)
                ),
                &[
                    ("cluster", c.cluster as f64),
                    ("days", c.days as f64),
                    ("mean", c.mean),
                    ("peak_hour", peak_h as f64),
                    ("peak", peak),
                ],
            )
        })
        .collect();
    // For power columns, the energy of each day type: Σ hourly means × 1 h.
    if unit == " kW" && out.clusters.len() >= 2 {
        let hi = &out.clusters.iter().max_by(|a, b| a.mean.total_cmp(&b.mean).then(b.cluster.cmp(&a.cluster)));
        let lo = &out.clusters.iter().min_by(|a, b| a.mean.total_cmp(&b.mean).then(a.cluster.cmp(&b.cluster)));
        if let (Some(hi), Some(lo)) = (hi, lo) {
            let (eh, el) = (hi.mean * 24.0, lo.mean * 24.0);
            f.push(Finding::new(
                "day_type_energy",
                format!(
                    "A day of type {} uses {} kWh, a day of type {} {} kWh. On the low days the base load is still {} kW at its lowest hour.",
                    hi.cluster,
                    fmt_num(eh, 0),
                    lo.cluster,
                    fmt_num(el, 0),
                    fmt_num(lo.profile.iter().copied().fold(f64::INFINITY, f64::min), 1)
                ),
                &[("high_day_kwh", eh), ("low_day_kwh", el)],
            ));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_23_hour_dst_day_is_left_out() {
        // 2026-03-28..30 in Berlin, hourly: the 29th has no 02:00 and is not a profile.
        let tz: Tz = "Europe/Berlin".parse().expect("tz");
        let start = 1_774_652_400_000; // 2026-03-27T23:00:00Z = 28th 00:00 local
        let ts: Vec<i64> = (0..71).map(|i| start + i * 3_600_000).collect();
        let v = vec![1.0; ts.len()];
        let days: Vec<i64> = daily_profiles(&ts, &v, tz).iter().map(|d| d.0).collect();
        // Days since the epoch of 2026-03-28 and 2026-03-30.
        assert_eq!(days, vec![20_540, 20_542]);
    }
}
