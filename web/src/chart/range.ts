import { api, unwrap } from "../api/client";
import type { Series } from "../api/types";
import { numeric, type Point } from "./align";

export const RANGES = [
  { key: "15m", label: "15 min", ms: 15 * 60_000 },
  { key: "1h", label: "1 h", ms: 3_600_000 },
  { key: "6h", label: "6 h", ms: 6 * 3_600_000 },
  { key: "24h", label: "24 h", ms: 86_400_000 },
  { key: "7d", label: "7 d", ms: 7 * 86_400_000 },
  { key: "30d", label: "30 d", ms: 30 * 86_400_000 },
  { key: "1y", label: "1 y", ms: 365 * 86_400_000 },
] as const;
export type RangeKey = (typeof RANGES)[number]["key"] | "custom";

export const AGGS = ["auto", "raw", "avg", "min", "max", "sum", "count", "first", "last"] as const;
export type AggChoice = (typeof AGGS)[number];

export interface TimeWindow {
  range: RangeKey;
  /** For `custom`: ms. */
  from?: number;
  to?: number;
  agg: AggChoice;
}

/** The window's [from, to) in ms at `now`. */
export function resolveWindow(w: TimeWindow, now = Date.now()): [number, number] {
  if (w.range === "custom") return [w.from ?? now - 3_600_000, w.to ?? now];
  const r = RANGES.find((x) => x.key === w.range) ?? RANGES[1];
  return [now - r.ms, now];
}

/** A bucket that keeps a chart near a few hundred points; null = raw points. */
export function autoEvery(spanMs: number): string | null {
  if (spanMs <= 3 * 3_600_000) return null;
  if (spanMs <= 12 * 3_600_000) return "1m";
  if (spanMs <= 2 * 86_400_000) return "5m";
  if (spanMs <= 8 * 86_400_000) return "30m";
  if (spanMs <= 40 * 86_400_000) return "2h";
  if (spanMs <= 120 * 86_400_000) return "6h";
  return "1d";
}

/** `every`/`agg` for the API from the user's choice. */
export function aggregation(w: TimeWindow, spanMs: number): { every: string; agg: string } | null {
  if (w.agg === "raw") return null;
  const every = autoEvery(spanMs) ?? (w.agg === "auto" ? null : spanMs <= 3_600_000 ? "30s" : "1m");
  if (!every) return null;
  return { every, agg: w.agg === "auto" ? "avg" : w.agg };
}

export async function loadSeries(
  factory: string,
  device: string,
  property: string,
  w: TimeWindow,
  signal?: AbortSignal,
): Promise<{ points: Point[]; every: string | null; agg: string | null }> {
  const [from, to] = resolveWindow(w);
  const a = aggregation(w, to - from);
  const series: Series = await unwrap(
    api.GET("/api/v1/factories/{factory_id}/telemetry/series", {
      params: {
        path: { factory_id: factory },
        query: {
          device_id: device,
          property,
          from: new Date(from).toISOString(),
          to: new Date(to).toISOString(),
          ...(a ? { every: a.every, agg: a.agg } : { limit: 20_000 }),
        },
      },
      ...(signal ? { signal } : {}),
    }),
  );
  return { points: series.points.map((p) => [Date.parse(p.ts), numeric(p.value)]), every: series.every ?? null, agg: series.agg ?? null };
}
