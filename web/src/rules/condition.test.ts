import { describe, expect, it } from "vitest";
import type { Condition } from "../api/types";
import { describeCondition, fromJson, newLeaf, nodePaths, properties, toJson, updateNode, type CondNode } from "./condition";

const example: Condition = {
  all: [
    { property: "temp_c", op: ">", value: 80 },
    {
      any: [
        { property: "running", op: "==", value: true },
        { property: "power_kw", op: "between", min: 5, max: 50 },
      ],
    },
    { not: { op: "stale", seconds: 300 } },
    { property: "temp_c", op: "rate_of_change", window_seconds: 60, compare: ">", value: 2, per: "minute" },
  ],
};

describe("energy leaves", () => {
  const energy: Condition = {
    any: [
      { property: "power_kw", op: "demand", interval_minutes: 15, when: "projected", compare: ">", value: 800 },
      { op: "idle" },
    ],
  };

  it("round-trips demand and idle", () => {
    expect(toJson(fromJson(energy))).toEqual(energy);
  });

  it("builds a demand leaf from the editor's defaults", () => {
    const leaf = { ...newLeaf("power_kw"), op: "demand" as const, value: "800" };
    expect(toJson(leaf)).toEqual({ property: "power_kw", op: "demand", interval_minutes: 15, when: "completed", compare: ">", value: 800 });
    expect(toJson({ ...leaf, op: "idle" })).toEqual({ op: "idle" });
  });

  it("round-trips specific energy with a fixed figure and with a baseline", () => {
    const specific: Condition = {
      all: [
        { op: "specific_energy", period: "day", above_percent: 10, kwh_per_unit: 1.5 },
        { op: "specific_energy", period: "day", above_percent: 5, baseline_id: "b-1" },
      ],
    };
    expect(toJson(fromJson(specific))).toEqual(specific);
    expect(describeCondition(specific)).toBe("kWh/unit of the last day > 1.5 kWh/unit + 10 % AND kWh/unit of the last day > baseline b-1 + 5 %");
    const leaf = { ...newLeaf(), op: "specific_energy" as const, kwhPerUnit: "2" };
    expect(toJson(leaf)).toEqual({ op: "specific_energy", period: "day", above_percent: 10, kwh_per_unit: 2 });
    expect(properties(leaf)).toEqual([]);
  });

  it("describes them", () => {
    expect(describeCondition(energy)).toBe("(projected 15-min demand of power_kw > 800 kW OR device idle)");
  });
});

describe("condition tree ↔ JSON", () => {
  it("round-trips the API's nested AND/OR shape", () => {
    expect(toJson(fromJson(example))).toEqual(example);
  });

  it("names nodes by the paths the API uses in 422 errors", () => {
    const tree = fromJson(example);
    const paths = [...nodePaths(tree).values()];
    expect(paths).toEqual([
      "condition",
      "condition.all[0]",
      "condition.all[1]",
      "condition.all[1].any[0]",
      "condition.all[1].any[1]",
      "condition.all[2]",
      "condition.all[2].not",
      "condition.all[3]",
    ]);
  });

  it("parses typed values: numbers, booleans, and leaves bad input for the server to name", () => {
    const leaf = { ...newLeaf("temp_c"), value: " 81.5 " };
    expect(toJson(leaf)).toEqual({ property: "temp_c", op: ">", value: 81.5 });
    expect(toJson({ ...leaf, op: "==", value: "TRUE" })).toEqual({ property: "temp_c", op: "==", value: true });
    expect(toJson({ ...leaf, value: "hot" })).toEqual({ property: "temp_c", op: ">", value: "hot" });
  });

  it("removes and replaces nodes", () => {
    const tree = fromJson(example) as CondNode & { kind: "all" };
    const removed = updateNode(tree, tree.children[1]!.id, null);
    expect(toJson(removed!)).toEqual({ all: [example.all[0], example.all[2], example.all[3]] } as unknown as Condition);
  });

  it("describes a condition in one line", () => {
    expect(describeCondition(example)).toBe(
      "temp_c > 80 AND (running == true OR power_kw between 5..50) AND NOT (device silent 300s) AND Δtemp_c > 2/minute",
    );
  });
});
