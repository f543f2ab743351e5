//! Vector charts: bars, stacked bars and lines drawn as paths on the page, with a value axis
//! of round ticks, a legend and category labels (turned when they would collide).

use super::{Align, GRID, INK, Layout, MUTED, Op, RULE, Rgb};
use crate::format;
use crate::model::{Chart, ChartKind};

const HEIGHT: f32 = 235.0;
const PALETTE: [Rgb; 8] = [
    Rgb(0x2E, 0x6D, 0xB4),
    Rgb(0xF2, 0x8E, 0x2B),
    Rgb(0x59, 0xA1, 0x4F),
    Rgb(0x9C, 0x75, 0x5F),
    Rgb(0x76, 0xB7, 0xB2),
    Rgb(0xED, 0xC9, 0x48),
    Rgb(0xB0, 0x7A, 0xA1),
    Rgb(0xE1, 0x57, 0x59),
];

/// Series whose name has a meaning get a colour that says it.
fn series_color(name: &str, i: usize) -> Rgb {
    match name {
        "critical" => Rgb(0xC6, 0x28, 0x28),
        "warning" => Rgb(0xF2, 0x9D, 0x1F),
        "info" => Rgb(0x5B, 0x8D, 0xC9),
        "Idle" => Rgb(0xF2, 0x8E, 0x2B),
        _ => PALETTE[i % PALETTE.len()],
    }
}

/// A round step for about `target` ticks up to `max`.
fn nice_step(max: f64, target: f64) -> f64 {
    let raw = (max / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

pub(super) fn draw(l: &mut Layout, chart: &Chart, x0: f32, width: f32) {
    let n = chart.categories.len();
    l.ensure(HEIGHT + 10.0);
    let top = l.y + 8.0;
    l.text(x0, top + 10.0, 10.5, true, INK, Align::Left, &chart.title);
    if n == 0 || chart.series.is_empty() {
        l.text(x0, top + 30.0, 9.0, false, MUTED, Align::Left, "No data in the period.");
        l.y = top + 40.0;
        return;
    }

    // Legend on the title's line, right-aligned.
    if chart.series.len() > 1 {
        let mut x = x0 + width;
        for (i, s) in chart.series.iter().enumerate().rev() {
            let w = l.metrics.width(&s.name, 8.0, false);
            x -= w;
            l.text(x, top + 10.0, 8.0, false, INK, Align::Left, &s.name);
            x -= 12.0;
            l.rect(x, top + 3.0, 8.0, 8.0, series_color(&s.name, i));
            x -= 12.0;
        }
    }

    // The value range: stacked bars stack positive values.
    let stacked = chart.kind == ChartKind::StackedBar;
    let values = |c: usize| chart.series.iter().filter_map(move |s| s.values.get(c).copied().flatten());
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for c in 0..n {
        if stacked {
            hi = hi.max(values(c).filter(|v| *v > 0.0).sum());
            lo = lo.min(values(c).filter(|v| *v < 0.0).sum());
        } else {
            for v in values(c) {
                hi = hi.max(v);
                lo = lo.min(v);
            }
        }
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    // Counts get whole ticks: no axis of alerts reads 0.2, 0.4, …
    let integral = chart.series.iter().flat_map(|s| s.values.iter().flatten()).all(|v| v.fract() == 0.0);
    let step = nice_step(hi - lo, 5.0);
    let step = if integral { step.max(1.0).round() } else { step };
    let lo = (lo / step).floor() * step;
    let hi = (hi / step).ceil() * step;
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as u8 };

    let ticks: Vec<f64> = (0..=((hi - lo) / step).round() as i64).map(|k| lo + k as f64 * step).collect();
    let tick_w =
        ticks.iter().map(|t| l.metrics.width(&format::number(*t, decimals), 7.5, false)).fold(0.0f32, f32::max);

    // Category labels: horizontal when they fit their slot, else turned 45°.
    let axis_left = x0 + tick_w + 8.0;
    let plot_w = x0 + width - axis_left - 4.0;
    let slot = plot_w / n as f32;
    let label_w = chart.categories.iter().map(|c| l.metrics.width(c, 7.5, false)).fold(0.0f32, f32::max);
    let turned = label_w > slot - 4.0;
    // Every k-th label when even turned ones would overlap.
    let every = if turned { ((9.0 / slot).ceil() as usize).max(1) } else { 1 };
    let label_h = if turned { (label_w.min(90.0)) * 0.72 + 8.0 } else { 14.0 };

    let plot_top = top + 34.0;
    let plot_bottom = top + HEIGHT - label_h - 4.0;
    let plot_h = plot_bottom - plot_top;
    let y_of = |v: f64| plot_bottom - ((v - lo) / (hi - lo)) as f32 * plot_h;

    l.text(axis_left - 6.0, plot_top - 8.0, 7.5, true, MUTED, Align::Right, &chart.unit);
    for t in &ticks {
        let y = y_of(*t);
        l.line(axis_left, y, axis_left + plot_w, y, 0.5, if *t == 0.0 { RULE } else { GRID });
        l.text(axis_left - 5.0, y + 2.6, 7.5, false, MUTED, Align::Right, &format::number(*t, decimals));
    }

    match chart.kind {
        ChartKind::Bar => {
            let k = chart.series.len() as f32;
            // Bars no wider than 56 pt however few categories there are.
            let group = (slot * 0.72).min(56.0 * chart.series.len() as f32);
            let bw = group / k;
            for (si, s) in chart.series.iter().enumerate() {
                let color = series_color(&s.name, si);
                for (c, v) in s.values.iter().enumerate().take(n) {
                    if let Some(v) = v {
                        let x = axis_left + c as f32 * slot + (slot - group) / 2.0 + si as f32 * bw;
                        let (a, b) = (y_of(0.0f64.max(lo)), y_of(*v));
                        l.rect(x, a.min(b), (bw - 0.6).max(0.4), (a - b).abs(), color);
                    }
                }
            }
        }
        ChartKind::StackedBar => {
            let bw = (slot * 0.62).min(56.0);
            for c in 0..n {
                let (mut up, mut down) = (0.0f64, 0.0f64);
                let x = axis_left + c as f32 * slot + (slot - bw) / 2.0;
                for (si, s) in chart.series.iter().enumerate() {
                    let Some(Some(v)) = s.values.get(c) else { continue };
                    let (from, to) = if *v >= 0.0 {
                        up += v;
                        (up - v, up)
                    } else {
                        down += v;
                        (down - v, down)
                    };
                    let (a, b) = (y_of(from), y_of(to));
                    l.rect(x, a.min(b), bw, (a - b).abs(), series_color(&s.name, si));
                }
            }
        }
        ChartKind::Line => {
            for (si, s) in chart.series.iter().enumerate() {
                let color = series_color(&s.name, si);
                let mut run: Vec<(f32, f32)> = Vec::new();
                let mut runs = Vec::new();
                for (c, v) in s.values.iter().enumerate().take(n) {
                    let x = axis_left + (c as f32 + 0.5) * slot;
                    match v {
                        Some(v) => run.push((x, y_of(*v))),
                        // A hole breaks the line: no value is invented.
                        None => runs.push(std::mem::take(&mut run)),
                    }
                }
                runs.push(run);
                for r in runs.into_iter().filter(|r| !r.is_empty()) {
                    if n <= 62 {
                        for (x, y) in &r {
                            l.rect(x - 1.8, y - 1.8, 3.6, 3.6, color);
                        }
                    }
                    if r.len() > 1 {
                        l.push(Op::Line { points: r, width: 1.6, color });
                    }
                }
            }
        }
    }
    l.line(axis_left, plot_bottom, axis_left + plot_w, plot_bottom, 0.8, MUTED);

    for (c, label) in chart.categories.iter().enumerate() {
        if c % every != 0 {
            continue;
        }
        let x = axis_left + (c as f32 + 0.5) * slot;
        l.line(x, plot_bottom, x, plot_bottom + 3.0, 0.5, MUTED);
        if turned {
            let text = l.metrics.fit(label, 7.5, false, 90.0);
            l.push(Op::Text {
                x: x + 2.5,
                y: plot_bottom + 8.0,
                size: 7.5,
                bold: false,
                color: INK,
                align: Align::Right,
                rotate: -45.0,
                text,
            });
        } else {
            l.text(x, plot_bottom + 12.0, 7.5, false, INK, Align::Center, label);
        }
    }
    l.y = top + HEIGHT;
}

#[cfg(test)]
mod tests {
    use super::nice_step;

    #[test]
    fn steps_are_round() {
        for (max, step) in [(1234.0, 250.0), (7.0, 2.0), (0.9, 0.2), (100.0, 20.0)] {
            assert!((nice_step(max, 5.0) - step).abs() < 1e-9, "{max}: {}", nice_step(max, 5.0));
        }
    }
}
