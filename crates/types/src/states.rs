//! Time in state: how long a state property (`running`, `idle`, …) held each of its values.
//! Pure; shared by the telemetry API (`agg` over a state property) and the energy
//! computations (idle energy).
//!
//! A state holds from its point until the next point of the series; the last one holds
//! until the end of the range, which is never later than "now" (a state is not assumed
//! into the future).

/// One stretch of time in one state: `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateInterval<S> {
    pub from_ms: i64,
    pub to_ms: i64,
    pub state: S,
}

/// The intervals of `points` (sorted by time; any outside `[from_ms, end)` are ignored)
/// over `[from_ms, min(to_ms, now_ms))`. `initial` is the state in force at `from_ms`
/// (the last point before it), if known; without it, the range starts at the first point.
/// Adjacent intervals of the same state are merged.
pub fn state_intervals<S: Copy + PartialEq>(
    initial: Option<S>,
    points: &[(i64, S)],
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> Vec<StateInterval<S>> {
    let end = to_ms.min(now_ms);
    let mut out: Vec<StateInterval<S>> = Vec::new();
    let mut current: Option<(i64, S)> = initial.map(|s| (from_ms, s));
    let close = |out: &mut Vec<StateInterval<S>>, from: i64, to: i64, state: S| {
        if to <= from {
            return;
        }
        match out.last_mut() {
            Some(last) if last.state == state && last.to_ms == from => last.to_ms = to,
            _ => out.push(StateInterval { from_ms: from, to_ms: to, state }),
        }
    };
    for &(ts, state) in points {
        if ts < from_ms || ts >= end {
            continue;
        }
        if let Some((since, held)) = current {
            close(&mut out, since, ts, held);
        }
        current = Some((ts, state));
    }
    if let Some((since, held)) = current {
        close(&mut out, since, end, held);
    }
    out
}

/// Seconds in each state per bucket of `every_ms`, buckets aligned to the Unix epoch (as
/// the store aligns its aggregation buckets) and clipped to `[from_ms, min(to_ms, now_ms))`.
/// Each bucket lists its states in the order they first occur in it; buckets without a
/// known state are left out.
pub fn time_in_state<S: Copy + PartialEq>(
    initial: Option<S>,
    points: &[(i64, S)],
    from_ms: i64,
    to_ms: i64,
    every_ms: i64,
    now_ms: i64,
) -> Vec<(i64, Vec<(S, f64)>)> {
    let every = every_ms.max(1);
    let mut out: Vec<(i64, Vec<(S, f64)>)> = Vec::new();
    for interval in state_intervals(initial, points, from_ms, to_ms, now_ms) {
        let mut t = interval.from_ms;
        while t < interval.to_ms {
            let bucket = t.div_euclid(every) * every;
            let upto = interval.to_ms.min(bucket.saturating_add(every));
            let secs = (upto - t) as f64 / 1000.0;
            if out.last().is_none_or(|(b, _)| *b != bucket) {
                out.push((bucket, Vec::new()));
            }
            if let Some((_, states)) = out.last_mut() {
                match states.iter_mut().find(|(s, _)| *s == interval.state) {
                    Some((_, total)) => *total += secs,
                    None => states.push((interval.state, secs)),
                }
            }
            t = upto;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const M: i64 = 60_000;

    #[test]
    fn a_state_holds_until_the_next_point_and_the_last_until_the_end() {
        // 10:00 running, 10:20 idle, 10:50 running; range 10:00–11:00.
        let points = [(10 * H, "running"), (10 * H + 20 * M, "idle"), (10 * H + 50 * M, "running")];
        let got = state_intervals(None, &points, 10 * H, 11 * H, i64::MAX);
        assert_eq!(
            got,
            [
                StateInterval { from_ms: 10 * H, to_ms: 10 * H + 20 * M, state: "running" },
                StateInterval { from_ms: 10 * H + 20 * M, to_ms: 10 * H + 50 * M, state: "idle" },
                StateInterval { from_ms: 10 * H + 50 * M, to_ms: 11 * H, state: "running" },
            ]
        );
    }

    #[test]
    fn the_initial_state_fills_the_start_and_repeats_merge() {
        // Idle before the range; 10:30 idle again (merged), 10:45 running; now is 10:55.
        let points = [(10 * H + 30 * M, "idle"), (10 * H + 45 * M, "running")];
        let got = state_intervals(Some("idle"), &points, 10 * H, 11 * H, 10 * H + 55 * M);
        assert_eq!(
            got,
            [
                StateInterval { from_ms: 10 * H, to_ms: 10 * H + 45 * M, state: "idle" },
                StateInterval { from_ms: 10 * H + 45 * M, to_ms: 10 * H + 55 * M, state: "running" },
            ]
        );
        // Without an initial state the range starts at the first point.
        let got = state_intervals(None, &points, 10 * H, 11 * H, i64::MAX);
        assert_eq!(got[0], StateInterval { from_ms: 10 * H + 30 * M, to_ms: 10 * H + 45 * M, state: "idle" });
        // Nothing known, nothing returned; now before the range start, nothing either.
        assert!(state_intervals::<&str>(None, &[], 0, H, i64::MAX).is_empty());
        assert!(state_intervals(Some("idle"), &[], 10 * H, 11 * H, 9 * H).is_empty());
    }

    #[test]
    fn seconds_per_hour_bucket() {
        // 09:40 running (before the range: the initial state), 10:15 idle, 10:45 running,
        // 11:30 off; range 10:00–12:00, 1 h buckets, now 11:40.
        // 10–11: running 15 min + 15 min = 1800 s, idle 30 min = 1800 s.
        // 11–12: running 30 min = 1800 s, off 10 min (until now) = 600 s.
        let points = [(10 * H + 15 * M, "idle"), (10 * H + 45 * M, "running"), (11 * H + 30 * M, "off")];
        let got = time_in_state(Some("running"), &points, 10 * H, 12 * H, H, 11 * H + 40 * M);
        assert_eq!(
            got,
            [
                (10 * H, vec![("running", 1800.0), ("idle", 1800.0)]),
                (11 * H, vec![("running", 1800.0), ("off", 600.0)]),
            ]
        );
    }

    #[test]
    fn buckets_are_epoch_aligned_and_clipped_to_the_range() {
        // Range 10:10–10:50 with 30 min buckets: 10:00 bucket (10:10–10:30 = 1200 s) and
        // 10:30 bucket (10:30–10:50 = 1200 s); one state spanning both.
        let got = time_in_state(Some(1u32), &[], 10 * H + 10 * M, 10 * H + 50 * M, 30 * M, i64::MAX);
        assert_eq!(got, [(10 * H, vec![(1, 1200.0)]), (10 * H + 30 * M, vec![(1, 1200.0)])]);
        // A long state over a day of hours: 24 buckets of 3600 s each.
        let day = time_in_state(Some(0u32), &[], 0, 24 * H, H, i64::MAX);
        assert_eq!(day.len(), 24);
        assert!(day.iter().all(|(_, s)| s == &vec![(0, 3600.0)]));
        // Points outside the range are ignored.
        let got = time_in_state(None, &[(5 * H, 7u32), (12 * H, 8)], 10 * H, 11 * H, H, i64::MAX);
        assert!(got.is_empty());
    }
}
