import { describe, expect, it } from "vitest";
import {
  OTHER,
  bucketLabel,
  flattenTree,
  niceTicks,
  parametersOf,
  periodRange,
  stackByDevice,
  stateBands,
  stateColor,
  subtree,
  timeInStates,
  totalsOf,
  unitAfterQuantityChange,
  unitsFor,
  zonedTime,
} from "./shape";

const Z = (iso: string) => Date.parse(iso);
const BERLIN = "Europe/Berlin";

describe("periods in the factory's time zone", () => {
  it("local times across both 2026 DST changes in Berlin", () => {
    expect(zonedTime(2026, 3, 29, 0, 0, BERLIN)).toBe(Z("2026-03-28T23:00:00Z"));
    expect(zonedTime(2026, 3, 29, 3, 0, BERLIN)).toBe(Z("2026-03-29T01:00:00Z"));
    expect(zonedTime(2026, 10, 25, 0, 0, BERLIN)).toBe(Z("2026-10-24T22:00:00Z"));
    expect(zonedTime(2026, 10, 26, 0, 0, BERLIN)).toBe(Z("2026-10-25T23:00:00Z"));
    expect(zonedTime(2026, 7, 1, 6, 15, "America/New_York")).toBe(Z("2026-07-01T10:15:00Z"));
  });

  it("today, yesterday, this week and this month on the spring-forward Sunday", () => {
    const now = Z("2026-03-29T12:05:00Z");
    // Today ends now, rounded up to the 15-minute grid.
    expect(periodRange("today", BERLIN, now)).toEqual([Z("2026-03-28T23:00:00Z"), Z("2026-03-29T12:15:00Z")]);
    expect(periodRange("yesterday", BERLIN, now)).toEqual([Z("2026-03-27T23:00:00Z"), Z("2026-03-28T23:00:00Z")]);
    // 29 March 2026 is a Sunday: the week started on Monday the 23rd.
    expect(periodRange("week", BERLIN, now)).toEqual([Z("2026-03-22T23:00:00Z"), Z("2026-03-29T12:15:00Z")]);
    expect(periodRange("month", BERLIN, now)).toEqual([Z("2026-02-28T23:00:00Z"), Z("2026-03-29T12:15:00Z")]);
  });

  it("the fall-back day has 25 hours; custom dates include both days", () => {
    const [from, to] = periodRange("yesterday", BERLIN, Z("2026-10-26T12:00:00Z"));
    expect([from, to]).toEqual([Z("2026-10-24T22:00:00Z"), Z("2026-10-25T23:00:00Z")]);
    expect((to - from) / 3_600_000).toBe(25);
    expect(periodRange("custom", BERLIN, Z("2026-12-01T00:00:00Z"), { from: "2026-10-25", to: "2026-10-26" })).toEqual([
      Z("2026-10-24T22:00:00Z"),
      Z("2026-10-26T23:00:00Z"),
    ]);
  });

  it("a finished month is not clamped; December rolls into January", () => {
    expect(periodRange("month", "UTC", Z("2026-12-31T23:59:00Z"))).toEqual([Z("2026-12-01T00:00:00Z"), Z("2027-01-01T00:00:00Z")]);
  });

  it("bucket labels read the factory's wall clock", () => {
    expect(bucketLabel(Z("2026-03-29T01:00:00Z"), "hour", BERLIN)).toBe("03:00");
    expect(bucketLabel(Z("2026-03-28T23:00:00Z"), "day", BERLIN)).toBe("Sun 29.03.");
    expect(bucketLabel(Z("2026-02-28T23:00:00Z"), "month", BERLIN)).toBe("2026-03");
  });
});

describe("stacked bars by device", () => {
  const items = [
    { start: "2026-03-01T00:00:00Z", end: "2026-03-01T01:00:00Z", kwh: 30, by_device: [{ device_id: "press-1", kwh: 10 }, { device_id: "oven-1", kwh: 20 }] },
    { start: "2026-03-01T01:00:00Z", end: "2026-03-01T02:00:00Z", kwh: 45, by_device: [{ device_id: "press-1", kwh: 40 }] },
    { start: "2026-03-01T02:00:00Z", end: "2026-03-01T03:00:00Z", kwh: 0, by_device: [] },
  ];

  it("one series per device, largest total first, zeros where a device has nothing", () => {
    const s = stackByDevice(items);
    // press-1: 50 kWh, oven-1: 20 kWh; 5 kWh of bucket 2 are not split by device.
    expect(s.series).toEqual(["press-1", "oven-1", OTHER]);
    expect(s.values).toEqual([
      [10, 40, 0],
      [20, 0, 0],
      [0, 5, 0],
    ]);
    expect(s.totals).toEqual([30, 45, 0]);
    expect(s.starts).toEqual([Z("2026-03-01T00:00:00Z"), Z("2026-03-01T01:00:00Z"), Z("2026-03-01T02:00:00Z")]);
    expect(s.ends[2]).toBe(Z("2026-03-01T03:00:00Z"));
  });

  it("no other series when the split adds up (within rounding)", () => {
    const s = stackByDevice([{ start: "2026-03-01T00:00:00Z", end: "2026-03-01T01:00:00Z", kwh: 0.3, by_device: [{ device_id: "a", kwh: 0.1 }, { device_id: "b", kwh: 0.2 }] }]);
    expect(s.series).toEqual(["b", "a"]);
    expect(stackByDevice([]).series).toEqual([]);
  });

  it("totals: cost and CO2 only when every bucket has them; idle share", () => {
    const t = totalsOf({
      items: [
        { start: "", end: "", kwh: 200, cost: 50, co2_kg: 76, idle_kwh: 20 },
        { start: "", end: "", kwh: 50, cost: 10, co2_kg: 19, idle_kwh: 30 },
      ],
    });
    expect(t).toEqual({ kwh: 250, cost: 60, co2Kg: 95, idleKwh: 50, idleShare: 0.2 });
    const noTariff = totalsOf({ items: [{ start: "", end: "", kwh: 10, cost: null, co2_kg: 3.8, idle_kwh: 0 }] });
    expect(noTariff.cost).toBeNull();
    expect(noTariff.co2Kg).toBe(3.8);
    expect(totalsOf({ items: [] })).toEqual({ kwh: 0, cost: null, co2Kg: null, idleKwh: 0, idleShare: null });
  });
});

describe("units per quantity", () => {
  it("the server's unit lists", () => {
    expect(unitsFor("power")).toEqual(["W", "kW", "MW"]);
    expect(unitsFor("energy_counter")).toEqual(["Wh", "kWh", "MWh"]);
    expect(unitsFor("pulse_counter")).toEqual(["pulses"]);
    expect(unitsFor("temperature")).toEqual(["°C", "°F", "K"]);
    expect(unitsFor("power_factor")).toEqual([]);
    expect(unitsFor("state")).toEqual([]);
    expect(unitsFor("production_count")).toBeNull();
  });

  it("changing the quantity keeps a fitting unit, else takes the first, else none", () => {
    expect(unitAfterQuantityChange("power", "kW")).toBe("kW");
    expect(unitAfterQuantityChange("power", "kWh")).toBe("W");
    expect(unitAfterQuantityChange("energy_counter", null)).toBe("Wh");
    expect(unitAfterQuantityChange("power_factor", "kW")).toBeNull();
    expect(unitAfterQuantityChange("production_count", "bottles")).toBe("bottles");
  });

  it("parameters: rollover for counters, Wh per pulse for pulses, counting for production", () => {
    expect(parametersOf("energy_counter")).toEqual({ rollover: true, whPerPulse: false, counting: false });
    expect(parametersOf("pulse_counter")).toEqual({ rollover: true, whPerPulse: true, counting: false });
    expect(parametersOf("power")).toEqual({ rollover: false, whPerPulse: false, counting: false });
    expect(parametersOf("production_count").counting).toBe(true);
    expect(parametersOf(null).rollover).toBe(false);
  });
});

describe("state timeline bands", () => {
  const m = (min: number) => min * 60_000;

  it("a state holds until the next point; equal neighbours merge; the last holds to the end", () => {
    const bands = stateBands(
      [
        { ts: m(10), value: "running" },
        { ts: m(20), value: "running" },
        { ts: m(30), value: "idle" },
        { ts: m(45), value: "off" },
      ],
      m(0),
      m(60),
    );
    expect(bands).toEqual([
      { from: m(10), to: m(30), state: "running" },
      { from: m(30), to: m(45), state: "idle" },
      { from: m(45), to: m(60), state: "off" },
    ]);
    expect(timeInStates(bands)).toEqual([
      { state: "running", ms: m(20) },
      { state: "idle", ms: m(15) },
      { state: "off", ms: m(15) },
    ]);
  });

  it("clips to the range, sorts, and leaves no band for unknown values", () => {
    const bands = stateBands(
      [
        { ts: m(50), value: "setup" },
        { ts: m(-5), value: "idle" },
        { ts: m(20), value: null },
        { ts: m(30), value: "idle" },
        { ts: m(70), value: "running" },
      ],
      m(0),
      m(60),
    );
    expect(bands).toEqual([
      { from: m(0), to: m(20), state: "idle" },
      { from: m(30), to: m(50), state: "idle" },
      { from: m(50), to: m(60), state: "setup" },
    ]);
    expect(stateBands([], 0, 1)).toEqual([]);
  });

  it("conventional colours for the usual states, a stable one for the rest", () => {
    expect(stateColor("running")).toBe("#16a34a");
    expect(stateColor("IDLE")).toBe("#f59e0b");
    expect(stateColor("warming")).toBe(stateColor("warming"));
  });
});

describe("groups and axes", () => {
  const g = (id: string, name: string, parent: string | null, kind = "hierarchy") => ({ id, name, kind, parent_id: parent });
  const groups = [g("l2", "Line 2", "hall"), g("site", "Site", null), g("hall", "Hall A", "site"), g("l1", "Line 1", "hall"), g("t", "compressors", null, "tag"), g("x", "Orphan", "gone")];

  it("the hierarchy depth-first by name; tags left out; a missing parent makes a root", () => {
    expect(flattenTree(groups).map((r) => `${r.depth}:${r.group.name}`)).toEqual(["0:Orphan", "0:Site", "1:Hall A", "2:Line 1", "2:Line 2"]);
  });

  it("a group cannot move under itself or below it", () => {
    expect([...subtree(groups, "hall")].sort()).toEqual(["hall", "l1", "l2"]);
    expect([...subtree(groups, "l1")]).toEqual(["l1"]);
  });

  it("nice ticks cover the maximum", () => {
    expect(niceTicks(100)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(niceTicks(7.3)).toEqual([0, 2, 4, 6, 8]);
    expect(niceTicks(0)).toEqual([0, 1]);
    expect(niceTicks(1234)).toEqual([0, 250, 500, 750, 1000, 1250]);
  });
});
