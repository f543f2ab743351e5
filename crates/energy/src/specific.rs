//! Specific energy (kWh per unit produced) and the ranking of devices by it.

/// kWh per unit; `None` when nothing was produced (units ≤ 0) or a figure is not finite.
pub fn specific_energy(kwh: f64, units: f64) -> Option<f64> {
    (units > 0.0 && units.is_finite() && kwh.is_finite()).then(|| kwh / units)
}

/// One device's place in a ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct RankItem<K> {
    pub key: K,
    pub kwh: f64,
    pub units: f64,
    pub kwh_per_unit: Option<f64>,
    /// 1 = least energy per unit; equal figures share a rank (1, 2, 2, 4). `None` without production.
    pub rank: Option<u32>,
}

/// Ranks `(key, kwh, units)` ascending by kWh per unit; devices without production come
/// last, unranked, in their input order (as do ties among ranked devices).
pub fn rank<K>(items: Vec<(K, f64, f64)>) -> Vec<RankItem<K>> {
    let mut out: Vec<RankItem<K>> = items
        .into_iter()
        .map(|(key, kwh, units)| RankItem { key, kwh, units, kwh_per_unit: specific_energy(kwh, units), rank: None })
        .collect();
    // Stable: `None` sorts after every figure, ties keep the input order.
    out.sort_by(|a, b| match (a.kwh_per_unit, b.kwh_per_unit) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let mut previous: Option<(f64, u32)> = None;
    for (i, item) in out.iter_mut().enumerate() {
        let Some(value) = item.kwh_per_unit else { break };
        let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let rank = match previous {
            Some((v, r)) if v == value => r,
            _ => position,
        };
        item.rank = Some(rank);
        previous = Some((value, rank));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_energy_needs_production() {
        // 120 kWh / 40 units = 3 kWh per unit.
        assert_eq!(specific_energy(120.0, 40.0), Some(3.0));
        assert_eq!(specific_energy(120.0, 0.0), None);
        assert_eq!(specific_energy(120.0, -1.0), None);
    }

    #[test]
    fn ranking_is_ascending_with_shared_ranks_and_unproductive_devices_last() {
        // a 100/50 = 2, b 90/30 = 3, c 50/0 = none, d 40/20 = 2 (ties with a), e 10/100 = 0.1.
        let ranked =
            rank(vec![("a", 100.0, 50.0), ("b", 90.0, 30.0), ("c", 50.0, 0.0), ("d", 40.0, 20.0), ("e", 10.0, 100.0)]);
        let got: Vec<(&str, Option<f64>, Option<u32>)> =
            ranked.iter().map(|r| (r.key, r.kwh_per_unit, r.rank)).collect();
        assert_eq!(
            got,
            vec![
                ("e", Some(0.1), Some(1)),
                ("a", Some(2.0), Some(2)),
                ("d", Some(2.0), Some(2)),
                ("b", Some(3.0), Some(4)),
                ("c", None, None),
            ]
        );
        assert_eq!((ranked[4].kwh, ranked[4].units), (50.0, 0.0));
    }
}
