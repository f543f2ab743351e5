export type Point = [ms: number, value: number | null];
export interface SeriesData {
  label: string;
  unit?: string | null;
  points: Point[];
}

/** Joins several series on the union of their timestamps (uPlot's data shape, x in seconds). */
export function alignSeries(series: SeriesData[]): [number[], ...(number | null)[][]] {
  const xs = new Set<number>();
  for (const s of series) for (const [t] of s.points) xs.add(t);
  const sorted = [...xs].sort((a, b) => a - b);
  const index = new Map(sorted.map((t, i) => [t, i]));
  const ys = series.map((s) => {
    const column: (number | null)[] = new Array(sorted.length).fill(null);
    for (const [t, v] of s.points) column[index.get(t) ?? 0] = v;
    return column;
  });
  return [sorted.map((t) => t / 1000), ...ys];
}

/** CSV of aligned series: `time` (RFC 3339) then one column per series. */
export function toCsv(series: SeriesData[]): string {
  const [xs, ...ys] = alignSeries(series);
  const quote = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const header = ["time", ...series.map((s) => quote(s.unit ? `${s.label} (${s.unit})` : s.label))].join(",");
  const lines = xs.map((x, i) => [new Date(x * 1000).toISOString(), ...ys.map((col) => (col[i] ?? "") === "" ? "" : String(col[i]))].join(","));
  return [header, ...lines].join("\n") + "\n";
}

/** Numbers for charting: booleans become 0/1, anything else null. */
export function numeric(value: unknown): number | null {
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "boolean") return value ? 1 : 0;
  return null;
}
