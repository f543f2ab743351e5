// Pure drawing helpers of the widgets (SVG paths), apart so they test without a DOM.
import type { Point } from "../chart/align";

/** An SVG path through the numeric points in a w × h box (null with fewer than two). */
export function sparkPath(points: Point[], w: number, h: number): string | null {
  const pts = points.filter((p): p is [number, number] => p[1] !== null);
  if (pts.length < 2) return null;
  const t0 = pts[0]![0];
  const t1 = pts[pts.length - 1]![0];
  let lo = Infinity;
  let hi = -Infinity;
  for (const [, v] of pts) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const span = hi - lo || 1;
  const x = (t: number) => (t1 === t0 ? 0 : ((t - t0) / (t1 - t0)) * w);
  const y = (v: number) => (hi === lo ? h / 2 : h - 1 - ((v - lo) / span) * (h - 2));
  return pts.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(2)},${y(v).toFixed(2)}`).join("");
}

/** Where `value` sits between min and max, clamped to 0–1 (null without a number). */
export function gaugeFraction(value: number | null, min: number, max: number): number | null {
  if (value === null || !Number.isFinite(value) || max <= min) return null;
  return Math.min(1, Math.max(0, (value - min) / (max - min)));
}

/** The arc from the left end of the half circle to fraction `f` of it. */
export function arc(f: number): string {
  const [cx, cy, r] = [60, 58, 48];
  const angle = Math.PI * (1 - f);
  const x = cx + r * Math.cos(angle);
  const y = cy - r * Math.sin(angle);
  return `M${cx - r},${cy} A${r},${r} 0 0 1 ${x.toFixed(2)},${y.toFixed(2)}`;
}

