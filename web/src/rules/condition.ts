// The condition editor's tree and its JSON (the API's rule `condition`), both ways.
import type { CompareOp, Condition } from "../api/types";

export const COMPARE_OPS: CompareOp[] = [">", ">=", "<", "<=", "==", "!="];
export const LEAF_OPS = [...COMPARE_OPS, "between", "outside", "rate_of_change", "stale", "demand", "idle", "specific_energy"] as const;
export type LeafOp = (typeof LEAF_OPS)[number];

export interface LeafNode {
  id: string;
  kind: "leaf";
  property: string;
  op: LeafOp;
  /** Text as typed: a number, or true/false. */
  value: string;
  min: string;
  max: string;
  windowSeconds: string;
  compare: CompareOp;
  per: "second" | "minute" | "hour";
  seconds: string;
  /** Demand interval in minutes (15, 30, 45, 60). */
  intervalMinutes: string;
  when: "completed" | "projected";
  /** specific_energy: the closed period judged. */
  period: "day" | "shift";
  /** specific_energy: compare with a fixed kWh per unit or with a baseline. */
  expected: "fixed" | "baseline";
  kwhPerUnit: string;
  baselineId: string;
  abovePercent: string;
}
export interface GroupNode {
  id: string;
  kind: "all" | "any";
  children: CondNode[];
}
export interface NotNode {
  id: string;
  kind: "not";
  child: CondNode;
}
export type CondNode = LeafNode | GroupNode | NotNode;

let seq = 0;
export const newId = () => `c${++seq}`;

export function newLeaf(property = ""): LeafNode {
  return { id: newId(), kind: "leaf", property, op: ">", value: "", min: "", max: "", windowSeconds: "60", compare: ">", per: "minute", seconds: "300", intervalMinutes: "15", when: "completed", period: "day", expected: "fixed", kwhPerUnit: "", baselineId: "", abovePercent: "10" };
}

export function newGroup(kind: "all" | "any" = "all", children: CondNode[] = [newLeaf()]): GroupNode {
  return { id: newId(), kind, children };
}

function num(text: string): number | string {
  const t = text.trim();
  if (t === "") return t;
  const n = Number(t);
  return Number.isFinite(n) ? n : t;
}

function scalar(text: string): number | boolean | string {
  const t = text.trim().toLowerCase();
  if (t === "true") return true;
  if (t === "false") return false;
  return num(text);
}

/** The API JSON. Values that do not parse are sent as typed, so the server names the field. */
export function toJson(node: CondNode): Condition {
  switch (node.kind) {
    case "all":
      return { all: node.children.map(toJson) };
    case "any":
      return { any: node.children.map(toJson) };
    case "not":
      return { not: toJson(node.child) };
    case "leaf": {
      const property = node.property.trim();
      switch (node.op) {
        case "between":
        case "outside":
          return { property, op: node.op, min: num(node.min), max: num(node.max) } as Condition;
        case "rate_of_change":
          return { property, op: "rate_of_change", window_seconds: num(node.windowSeconds), compare: node.compare, value: num(node.value), per: node.per } as Condition;
        case "stale":
          return (property ? { property, op: "stale", seconds: num(node.seconds) } : { op: "stale", seconds: num(node.seconds) }) as Condition;
        case "demand":
          return { property, op: "demand", interval_minutes: num(node.intervalMinutes), when: node.when, compare: node.compare, value: num(node.value) } as Condition;
        case "idle":
          return { op: "idle" };
        case "specific_energy":
          return (node.expected === "baseline"
            ? { op: "specific_energy", period: node.period, above_percent: num(node.abovePercent), baseline_id: node.baselineId.trim() }
            : { op: "specific_energy", period: node.period, above_percent: num(node.abovePercent), kwh_per_unit: num(node.kwhPerUnit) }) as Condition;
        default:
          return { property, op: node.op, value: scalar(node.value) } as Condition;
      }
    }
  }
}

const str = (v: unknown) => (v === undefined || v === null ? "" : String(v));

/** The editor tree of an API condition (unknown shapes become an empty leaf). */
export function fromJson(c: Condition | null | undefined): CondNode {
  if (!c || typeof c !== "object") return newLeaf();
  if ("all" in c && Array.isArray(c.all)) return { id: newId(), kind: "all", children: c.all.map(fromJson) };
  if ("any" in c && Array.isArray(c.any)) return { id: newId(), kind: "any", children: c.any.map(fromJson) };
  if ("not" in c) return { id: newId(), kind: "not", child: fromJson(c.not) };
  const leaf = newLeaf();
  const l = c as Record<string, unknown>;
  leaf.property = str(l.property);
  leaf.op = (LEAF_OPS as readonly string[]).includes(str(l.op)) ? (l.op as LeafOp) : ">";
  leaf.value = str(l.value);
  leaf.min = str(l.min);
  leaf.max = str(l.max);
  if (l.window_seconds !== undefined) leaf.windowSeconds = str(l.window_seconds);
  if (typeof l.compare === "string") leaf.compare = l.compare as CompareOp;
  if (l.per === "second" || l.per === "minute" || l.per === "hour") leaf.per = l.per;
  if (l.seconds !== undefined) leaf.seconds = str(l.seconds);
  if (l.interval_minutes !== undefined) leaf.intervalMinutes = str(l.interval_minutes);
  if (l.when === "completed" || l.when === "projected") leaf.when = l.when;
  if (l.period === "day" || l.period === "shift") leaf.period = l.period;
  if (l.above_percent !== undefined) leaf.abovePercent = str(l.above_percent);
  if (l.kwh_per_unit !== undefined) leaf.kwhPerUnit = str(l.kwh_per_unit);
  if (l.baseline_id !== undefined) {
    leaf.expected = "baseline";
    leaf.baselineId = str(l.baseline_id);
  }
  return leaf;
}

/** Each node's path as the API names fields in 422 errors (`condition.all[1].any[0]`). */
export function nodePaths(node: CondNode, base = "condition", out = new Map<string, string>()): Map<string, string> {
  out.set(node.id, base);
  if (node.kind === "all" || node.kind === "any") node.children.forEach((ch, i) => nodePaths(ch, `${base}.${node.kind}[${i}]`, out));
  if (node.kind === "not") nodePaths(node.child, `${base}.not`, out);
  return out;
}

/** Replaces the node with this id (or removes it with `null`). */
export function updateNode(root: CondNode, id: string, next: CondNode | null): CondNode | null {
  if (root.id === id) return next;
  if (root.kind === "all" || root.kind === "any") {
    const children = root.children.map((c) => updateNode(c, id, next)).filter((c): c is CondNode => c !== null);
    return { ...root, children };
  }
  if (root.kind === "not") {
    const child = updateNode(root.child, id, next);
    return child ? { ...root, child } : null;
  }
  return root;
}

/** Property names the condition reads. */
export function properties(node: CondNode): string[] {
  if (node.kind === "leaf") return node.op !== "idle" && node.op !== "specific_energy" && node.property.trim() ? [node.property.trim()] : [];
  if (node.kind === "not") return properties(node.child);
  return [...new Set(node.children.flatMap(properties))];
}

/** A one-line human reading of a condition. */
export function describeCondition(c: Condition): string {
  if ("all" in c) return c.all.map(describeCondition).join(" AND ");
  if ("any" in c) return `(${c.any.map(describeCondition).join(" OR ")})`;
  if ("not" in c) return `NOT (${describeCondition(c.not)})`;
  const l = c as Record<string, unknown>;
  switch (l.op) {
    case "between":
      return `${str(l.property)} between ${str(l.min)}..${str(l.max)}`;
    case "outside":
      return `${str(l.property)} outside ${str(l.min)}..${str(l.max)}`;
    case "rate_of_change":
      return `Δ${str(l.property)} ${str(l.compare)} ${str(l.value)}/${str(l.per ?? "second")}`;
    case "stale":
      return `${l.property ? str(l.property) : "device"} silent ${str(l.seconds)}s`;
    case "demand":
      return `${l.when === "projected" ? "projected " : ""}${str(l.interval_minutes ?? 15)}-min demand of ${str(l.property)} ${str(l.compare)} ${str(l.value)} kW`;
    case "idle":
      return "device idle";
    case "specific_energy":
      return `kWh/unit of the last ${str(l.period ?? "day")} > ${l.baseline_id !== undefined ? `baseline ${str(l.baseline_id)}` : `${str(l.kwh_per_unit)} kWh/unit`} + ${str(l.above_percent)} %`;
    default:
      return `${str(l.property)} ${str(l.op)} ${str(l.value)}`;
  }
}
