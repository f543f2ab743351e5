import { describe, expect, it } from "vitest";
import { arc, gaugeFraction, sparkPath } from "./draw";
import {
  cellsMoved,
  clampLayout,
  cleanWidget,
  compact,
  effectiveRange,
  energyBucket,
  energyFrom,
  firstFree,
  nudge,
  overlaps,
  placeAt,
  readingOrder,
  specOf,
  validateWidget,
  viewFromSearch,
  widgetErrors,
  withLayouts,
  type Widget,
  type WidgetLayout,
} from "./model";

describe("widget rules (ADR 0022)", () => {
  it("keeps only the fields a type uses, without blanks, nulls or padding", () => {
    const w: Widget = { type: "value", title: " Press power ", device_id: " press-1 ", property: "power_kw", range: "7d", group_id: "", min: null, text: "x" };
    expect(cleanWidget(w)).toEqual({ type: "value", title: "Press power", device_id: "press-1", property: "power_kw" });
    const chart: Widget = { type: "chart", title: "c", series: [{ device_id: "a", property: "p" }, { device_id: "", property: "" }], range: "", device_id: "stale" };
    expect(cleanWidget(chart)).toEqual({ type: "chart", title: "c", series: [{ device_id: "a", property: "p" }] });
    const gauge: Widget = { type: "gauge", title: "g", device_id: "m", property: "kw", max: 250, min: 0, layout: { x: 0, y: 0, w: 3, h: 3 } };
    expect(cleanWidget(gauge)).toEqual(gauge);
  });

  it("names what is missing or wrong by field, like the server's paths", () => {
    expect(validateWidget({ type: "value", title: "" })).toEqual({ title: expect.any(String), device_id: "required", property: "required" });
    expect(validateWidget({ type: "gauge", title: "Demand", device_id: "m", property: "kw", max: 0 })).toEqual({ max: expect.stringContaining("greater") });
    expect(validateWidget({ type: "gauge", title: "Demand", device_id: "m", property: "kw", min: 10, max: 5 }).max).toBeDefined();
    expect(validateWidget({ type: "gauge", title: "Demand", device_id: "m", property: "kw", max: 250 })).toEqual({});
    expect(validateWidget({ type: "chart", title: "c", series: [{ device_id: "a", property: "" }] })).toEqual({ "series[0].property": "required" });
    expect(validateWidget({ type: "chart", title: "c" })).toEqual({ series: "required" });
    expect(validateWidget({ type: "energy_bars", title: "e", device_id: "a", group_id: "g" }).group_id).toBeDefined();
    expect(validateWidget({ type: "energy_bars", title: "e", range: "2d" }).range).toBeDefined();
    expect(validateWidget({ type: "text", title: "t", text: "x".repeat(2001) }).text).toBeDefined();
    expect(validateWidget({ type: "alerts", title: "a", layout: { x: 10, y: 0, w: 4, h: 3 } })).toEqual({ "layout.x": expect.any(String) });
    expect(validateWidget({ type: "alerts", title: "a", layout: { x: 0, y: 0, w: 4, h: 13 } })).toEqual({ "layout.h": expect.any(String) });
  });

  it("picks a widget's server errors out of the dashboard's", () => {
    const errors = { name: "must not be empty", "widgets[1].device_id": "no such device", "widgets[1].series[0].property": "1 to 200 characters", "widgets[10].title": "x", "widgets[1]": "whole" };
    expect(widgetErrors(errors, 1)).toEqual({ device_id: "no such device", "series[0].property": "1 to 200 characters", "": "whole" });
    expect(widgetErrors(errors, 0)).toEqual({});
  });

  it("builds the request body with a layout for every widget", () => {
    const body = specOf({ name: " Energy ", shared: true, default: true, widgets: [{ type: "text", title: "Note", text: "hi", device_id: "" }] }, false);
    expect(body).toEqual({ name: "Energy", shared: true, widgets: [{ type: "text", title: "Note", text: "hi", layout: { x: 0, y: 0, w: 3, h: 2 } }] });
    expect(specOf({ name: "E", shared: true, default: true, widgets: [] }, true).default).toBe(true);
  });
});

describe("grid layout", () => {
  const l = (x: number, y: number, w: number, h: number): WidgetLayout => ({ x, y, w, h });

  it("detects overlaps (touching edges do not overlap)", () => {
    expect(overlaps(l(0, 0, 3, 2), l(2, 1, 3, 2))).toBe(true);
    expect(overlaps(l(0, 0, 3, 2), l(3, 0, 3, 2))).toBe(false);
    expect(overlaps(l(0, 0, 3, 2), l(0, 2, 3, 2))).toBe(false);
  });

  it("clamps a layout onto the 12 columns", () => {
    expect(clampLayout(l(11, -2, 4, 0))).toEqual(l(8, 0, 4, 1));
    expect(clampLayout(l(-1, 3.4, 20, 14))).toEqual(l(0, 3, 12, 12));
  });

  it("finds the first free spot, reading order", () => {
    expect(firstFree([], 4, 2)).toEqual(l(0, 0, 4, 2));
    expect(firstFree([l(0, 0, 4, 2)], 4, 2)).toEqual(l(4, 0, 4, 2));
    expect(firstFree([l(0, 0, 10, 2)], 4, 2)).toEqual(l(0, 2, 4, 2));
    expect(firstFree([l(0, 0, 6, 1), l(6, 1, 6, 1)], 6, 1)).toEqual(l(6, 0, 6, 1));
  });

  it("lays out widgets stored without a layout after those with one", () => {
    const out = withLayouts([{ type: "value", title: "a" }, { type: "chart", title: "b", series: [], layout: l(0, 0, 6, 4) }, { type: "value", title: "c" }]);
    expect(out.map((w) => w.layout)).toEqual([l(6, 0, 3, 2), l(0, 0, 6, 4), l(9, 0, 3, 2)]);
  });

  it("closes gaps by floating widgets up, in reading order", () => {
    expect(compact([l(0, 3, 6, 2), l(6, 5, 6, 2), l(0, 6, 12, 1)])).toEqual([l(0, 0, 6, 2), l(6, 0, 6, 2), l(0, 2, 12, 1)]);
    expect(compact([l(0, 0, 4, 2), l(0, 4, 4, 2), l(4, 1, 4, 1)])).toEqual([l(0, 0, 4, 2), l(0, 2, 4, 2), l(4, 0, 4, 1)]);
  });

  it("pushes what a moved widget covers down, and nothing overlaps", () => {
    const before = [l(0, 0, 6, 2), l(6, 0, 6, 2), l(0, 2, 12, 3)];
    const after = placeAt(before, 2, l(0, 0, 12, 3));
    expect(after[2]).toEqual(l(0, 0, 12, 3));
    expect(after[0]).toEqual(l(0, 3, 6, 2));
    expect(after[1]).toEqual(l(6, 3, 6, 2));
    for (let i = 0; i < after.length; i++) for (let j = i + 1; j < after.length; j++) expect(overlaps(after[i]!, after[j]!)).toBe(false);
  });

  it("cascades pushes and keeps widgets that are not in the way", () => {
    const before = [l(0, 0, 4, 2), l(0, 2, 4, 2), l(0, 4, 4, 2), l(8, 0, 4, 6)];
    const after = placeAt(before, 3, l(0, 0, 4, 1));
    expect(after).toEqual([l(0, 1, 4, 2), l(0, 3, 4, 2), l(0, 5, 4, 2), l(0, 0, 4, 1)]);
    // Dropped below everything: it floats back up to the first row that has room.
    expect(placeAt([l(0, 0, 6, 2), l(6, 0, 6, 2)], 1, l(6, 9, 6, 2))).toEqual([l(0, 0, 6, 2), l(6, 0, 6, 2)]);
    expect(placeAt([l(0, 0, 6, 2), l(6, 0, 6, 2)], 1, l(3, 9, 6, 2))).toEqual([l(0, 0, 6, 2), l(3, 2, 6, 2)]);
    // Resizing past the right edge is clamped, not refused.
    expect(placeAt([l(8, 0, 4, 2)], 0, l(8, 0, 7, 2))[0]).toEqual(l(5, 0, 7, 2));
  });

  it("lets a widget pass the one it touches by keyboard (a swap), and rise into the room it leaves", () => {
    const column = [l(0, 0, 4, 2), l(0, 2, 4, 3), l(4, 0, 8, 5)];
    const down = nudge(column, 0, 0, 1);
    expect(down).toEqual([l(0, 3, 4, 2), l(0, 0, 4, 3), l(4, 0, 8, 5)]);
    expect(nudge(down, 0, 0, -1)).toEqual(column);
    // Nothing below: a step down has nowhere to stay, the widget rises back.
    expect(nudge([l(0, 0, 4, 2)], 0, 0, 1)).toEqual([l(0, 0, 4, 2)]);
    // Sideways into a neighbour: it takes the place and the neighbour goes below.
    expect(nudge([l(0, 0, 4, 2), l(4, 0, 4, 2)], 0, 1, 0)).toEqual([l(1, 0, 4, 2), l(4, 2, 4, 2)]);
    // Dropped far below: it rises to the first row with room.
    expect(placeAt([l(0, 0, 4, 2), l(4, 0, 4, 2)], 1, l(0, 9, 4, 2))).toEqual([l(0, 0, 4, 2), l(0, 2, 4, 2)]);
  });

  it("orders widgets for a narrow screen by row, then column", () => {
    expect(readingOrder([l(6, 0, 6, 2), l(0, 2, 12, 2), l(0, 0, 6, 2)])).toEqual([2, 0, 1]);
  });

  it("turns a pointer delta into whole cells", () => {
    expect(cellsMoved(130, -40, 100, 84)).toEqual({ dx: 1, dy: 0 });
    expect(cellsMoved(-160, 130, 100, 84)).toEqual({ dx: -2, dy: 2 });
  });
});

describe("time, refresh and drawing", () => {
  it("lets the dashboard's range win over a widget's own", () => {
    expect(effectiveRange({ range: "7d" }, null)).toBe("7d");
    expect(effectiveRange({ range: "7d" }, "1h")).toBe("1h");
    expect(effectiveRange({}, null)).toBe("24h");
    expect(effectiveRange({ range: "bogus" }, null)).toBe("24h");
    expect(energyBucket("24h")).toBe("hour");
    expect(energyBucket("7d")).toBe("day");
    // Berlin is UTC+1 in December: 10:37 UTC → 11:37 local; 24 h before, at the local hour: 10:00 UTC.
    const now = Date.UTC(2026, 11, 3, 10, 37);
    expect(new Date(energyFrom("24h", now, "Europe/Berlin")).toISOString()).toBe("2026-12-02T10:00:00.000Z");
    expect(new Date(energyFrom("7d", now, "Europe/Berlin")).toISOString()).toBe("2026-11-25T23:00:00.000Z");
    expect(new Date(energyFrom("1h", now, "Asia/Kolkata")).toISOString()).toBe("2026-12-03T09:30:00.000Z");
  });

  it("reads the shared URL's view, ignoring what is not a choice", () => {
    expect(viewFromSearch(new URLSearchParams("range=7d&refresh=30"))).toEqual({ range: "7d", refresh: 30 });
    expect(viewFromSearch(new URLSearchParams("range=2y&refresh=7"))).toEqual({ range: null, refresh: 60 });
    expect(viewFromSearch(new URLSearchParams("refresh=0"))).toEqual({ range: null, refresh: 0 });
    expect(viewFromSearch(new URLSearchParams(""))).toEqual({ range: null, refresh: 60 });
  });

  it("draws a sparkline scaled to its own min and max, skipping gaps", () => {
    expect(sparkPath([[0, 1]], 100, 28)).toBeNull();
    expect(sparkPath([[0, 0], [500, null], [1000, 10]], 100, 28)).toBe("M0.00,27.00L100.00,1.00");
    expect(sparkPath([[0, 5], [1000, 5]], 100, 28)).toBe("M0.00,14.00L100.00,14.00");
  });

  it("places a value on the gauge between min and max", () => {
    expect(gaugeFraction(50, 0, 200)).toBe(0.25);
    expect(gaugeFraction(300, 0, 200)).toBe(1);
    expect(gaugeFraction(-5, 0, 200)).toBe(0);
    expect(gaugeFraction(null, 0, 200)).toBeNull();
    expect(gaugeFraction(5, 10, 10)).toBeNull();
    expect(arc(1)).toBe("M12,58 A48,48 0 0 1 108.00,58.00");
  });
});
