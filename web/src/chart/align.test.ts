import { describe, expect, it } from "vitest";
import { alignSeries, numeric, toCsv } from "./align";
import { aggregation, autoEvery } from "./range";

describe("chart data", () => {
  it("aligns series on the union of their timestamps (seconds for uPlot)", () => {
    const [xs, a, b] = alignSeries([
      { label: "a", points: [[1000, 1], [3000, 3]] },
      { label: "b", points: [[2000, 20], [3000, 30]] },
    ]);
    expect(xs).toEqual([1, 2, 3]);
    expect(a).toEqual([1, null, 3]);
    expect(b).toEqual([null, 20, 30]);
  });

  it("exports CSV with units and quoting", () => {
    const csv = toCsv([
      { label: "press-1 · temp_c", unit: "°C", points: [[0, 41.5]] },
      { label: 'odd,"name"', points: [[1000, 1]] },
    ]);
    expect(csv).toBe('time,press-1 · temp_c (°C),"odd,""name"""\n1970-01-01T00:00:00.000Z,41.5,\n1970-01-01T00:00:01.000Z,,1\n');
  });

  it("charts booleans as 0/1 and drops the rest", () => {
    expect([numeric(true), numeric(false), numeric(2.5), numeric("x"), numeric(NaN)]).toEqual([1, 0, 2.5, null, null]);
  });

  it("picks raw points for short ranges and buckets for long ones", () => {
    expect(autoEvery(15 * 60_000)).toBeNull();
    expect(autoEvery(24 * 3_600_000)).toBe("5m");
    expect(autoEvery(365 * 86_400_000)).toBe("1d");
    expect(aggregation({ range: "1y", agg: "max" }, 365 * 86_400_000)).toEqual({ every: "1d", agg: "max" });
    expect(aggregation({ range: "15m", agg: "auto" }, 15 * 60_000)).toBeNull();
    expect(aggregation({ range: "15m", agg: "min" }, 15 * 60_000)).toEqual({ every: "30s", agg: "min" });
    expect(aggregation({ range: "1y", agg: "raw" }, 365 * 86_400_000)).toBeNull();
  });
});
