// Pure helpers of the energy pages: periods in the factory's time zone, stacked-bar
// data, totals, units per quantity and state-timeline bands. No I/O; unit-tested.
import type { ConsumptionItem, Consumption } from "./api";

// --- Time zones -------------------------------------------------------------------

interface LocalParts {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  /** 0 = Monday … 6 = Sunday. */
  weekday: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      weekday: "short",
    });
    formatters.set(tz, f);
  }
  return f;
}

const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/** The wall-clock reading of an instant in `tz`. */
export function localParts(ms: number, tz: string): LocalParts {
  const parts = formatter(tz).formatToParts(new Date(ms));
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? "0";
  return {
    year: Number(get("year")),
    month: Number(get("month")),
    day: Number(get("day")),
    hour: Number(get("hour")),
    minute: Number(get("minute")),
    weekday: WEEKDAYS.indexOf(get("weekday")),
  };
}

/** How far `tz`'s wall clock is ahead of UTC at the instant `ms` (whole minutes). */
function offsetMs(ms: number, tz: string): number {
  const p = localParts(ms, tz);
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute) - Math.floor(ms / 60_000) * 60_000;
}

/** The instant of a local wall-clock time in `tz` (a time in a spring-forward gap moves on by the gap). */
export function zonedTime(year: number, month: number, day: number, hour: number, minute: number, tz: string): number {
  const wall = Date.UTC(year, month - 1, day, hour, minute);
  let t = wall - offsetMs(wall, tz);
  t = wall - offsetMs(t, tz);
  return t;
}

/** Local midnight of the calendar day `days` after the local day of `ms`. */
function midnight(ms: number, tz: string, days = 0): number {
  const p = localParts(ms, tz);
  const d = new Date(Date.UTC(p.year, p.month - 1, p.day + days));
  return zonedTime(d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), 0, 0, tz);
}

export type PeriodKey = "today" | "yesterday" | "week" | "month" | "custom";
export const PERIODS: { key: PeriodKey; label: string }[] = [
  { key: "today", label: "Today" },
  { key: "yesterday", label: "Yesterday" },
  { key: "week", label: "This week" },
  { key: "month", label: "This month" },
  { key: "custom", label: "Custom" },
];

export type Bucket = "hour" | "day" | "week" | "month" | "shift";
export const BUCKETS: Bucket[] = ["hour", "day", "week", "month", "shift"];

/** A sensible bucket for a period. */
export function defaultBucket(period: PeriodKey): Bucket {
  return period === "today" || period === "yesterday" ? "hour" : "day";
}

const SLOT_MS = 15 * 60_000;

/**
 * The period's [from, to) in ms, in the factory's time zone. A period that reaches into
 * the future ends at `now` rounded up to the 15-minute grid the server computes on.
 * Custom: local dates `YYYY-MM-DD`, both days included.
 */
export function periodRange(period: PeriodKey, tz: string, now: number, custom?: { from: string; to: string }): [number, number] {
  const clamp = (from: number, to: number): [number, number] => [from, Math.min(to, Math.ceil(now / SLOT_MS) * SLOT_MS)];
  switch (period) {
    case "today":
      return clamp(midnight(now, tz), midnight(now, tz, 1));
    case "yesterday":
      return [midnight(now, tz, -1), midnight(now, tz)];
    case "week": {
      const p = localParts(now, tz);
      return clamp(midnight(now, tz, -p.weekday), midnight(now, tz, 7 - p.weekday));
    }
    case "month": {
      const p = localParts(now, tz);
      const next = p.month === 12 ? [p.year + 1, 1] : [p.year, p.month + 1];
      return clamp(zonedTime(p.year, p.month, 1, 0, 0, tz), zonedTime(next[0]!, next[1]!, 1, 0, 0, tz));
    }
    case "custom": {
      const [fy, fm, fd] = (custom?.from ?? "").split("-").map(Number);
      const [ty, tm, td] = (custom?.to ?? "").split("-").map(Number);
      if (!fy || !fm || !fd || !ty || !tm || !td) return [midnight(now, tz), midnight(now, tz, 1)];
      const to = new Date(Date.UTC(ty, tm - 1, td + 1));
      return [zonedTime(fy, fm, fd, 0, 0, tz), zonedTime(to.getUTCFullYear(), to.getUTCMonth() + 1, to.getUTCDate(), 0, 0, tz)];
    }
  }
}

/** `YYYY-MM-DD` of the local day of `ms` in `tz`. */
export function localDateString(ms: number, tz: string): string {
  const p = localParts(ms, tz);
  return `${p.year}-${String(p.month).padStart(2, "0")}-${String(p.day).padStart(2, "0")}`;
}

/** A short label for a bucket start in the factory's zone. */
export function bucketLabel(ms: number, bucket: Bucket, tz: string): string {
  const p = localParts(ms, tz);
  const two = (n: number) => String(n).padStart(2, "0");
  switch (bucket) {
    case "hour":
      return `${two(p.hour)}:${two(p.minute)}`;
    case "shift":
      return `${two(p.day)}.${two(p.month)}. ${two(p.hour)}:${two(p.minute)}`;
    case "month":
      return `${p.year}-${two(p.month)}`;
    default:
      return `${WEEKDAYS[p.weekday] ?? ""} ${two(p.day)}.${two(p.month)}.`;
  }
}

// --- Consumption ------------------------------------------------------------------

export interface StackedBars {
  starts: number[];
  ends: number[];
  /** Series names: device ids by total energy (largest first), then `other`. */
  series: string[];
  /** values[series][bucket] in kWh. */
  values: number[][];
  totals: number[];
}

/** Energy the per-device split leaves unexplained is shown as `other`. */
export const OTHER = "other";
const EPS = 1e-9;

/** Stacked-bar data from consumption buckets: one series per device. */
export function stackByDevice(items: ConsumptionItem[]): StackedBars {
  const totalsByDevice = new Map<string, number>();
  for (const item of items) for (const d of item.by_device ?? []) totalsByDevice.set(d.device_id, (totalsByDevice.get(d.device_id) ?? 0) + d.kwh);
  const devices = [...totalsByDevice.keys()].sort((a, b) => (totalsByDevice.get(b) ?? 0) - (totalsByDevice.get(a) ?? 0) || a.localeCompare(b));
  const index = new Map(devices.map((d, i) => [d, i]));
  const values = devices.map(() => items.map(() => 0));
  const other = items.map(() => 0);
  items.forEach((item, b) => {
    let split = 0;
    for (const d of item.by_device ?? []) {
      const row = values[index.get(d.device_id) ?? 0];
      if (row) row[b] = (row[b] ?? 0) + d.kwh;
      split += d.kwh;
    }
    if (item.kwh - split > EPS * Math.max(1, Math.abs(item.kwh))) other[b] = item.kwh - split;
  });
  const series = [...devices];
  if (other.some((v) => v > 0)) {
    series.push(OTHER);
    values.push(other);
  }
  return {
    starts: items.map((i) => Date.parse(i.start)),
    ends: items.map((i) => Date.parse(i.end)),
    series,
    values,
    totals: items.map((i) => i.kwh),
  };
}

export interface Totals {
  kwh: number;
  /** Null when any bucket has no cost (no tariff in force). */
  cost: number | null;
  co2Kg: number | null;
  idleKwh: number;
  /** idle / total, 0..1; null without energy. */
  idleShare: number | null;
}

export function totalsOf(c: Pick<Consumption, "items">): Totals {
  let kwh = 0;
  let cost: number | null = 0;
  let co2: number | null = 0;
  let idle = 0;
  for (const i of c.items) {
    kwh += i.kwh;
    idle += i.idle_kwh ?? 0;
    cost = cost === null || i.cost === null || i.cost === undefined ? null : cost + i.cost;
    co2 = co2 === null || i.co2_kg === null || i.co2_kg === undefined ? null : co2 + i.co2_kg;
  }
  return { kwh, cost: c.items.length ? cost : null, co2Kg: c.items.length ? co2 : null, idleKwh: idle, idleShare: kwh > 0 ? idle / kwh : null };
}

/** A number with a sensible count of decimals for energy figures. */
export function fmtNumber(v: number | null | undefined, decimals = 2): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  return v.toLocaleString(undefined, { minimumFractionDigits: 0, maximumFractionDigits: Math.abs(v) >= 1000 ? Math.min(decimals, 1) : decimals });
}

export function fmtMoney(v: number | null | undefined, currency: string | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  try {
    return v.toLocaleString(undefined, { style: "currency", currency: currency || "EUR", maximumFractionDigits: 2 });
  } catch {
    return `${v.toFixed(2)} ${currency ?? ""}`.trim();
  }
}

export function fmtDuration(ms: number): string {
  const minutes = Math.round(ms / 60_000);
  if (minutes < 60) return `${minutes} min`;
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  if (h < 48) return m ? `${h} h ${m} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return `${d} d ${h % 24} h`;
}

// --- Property semantics -----------------------------------------------------------

export const QUANTITIES = [
  "power",
  "energy_counter",
  "pulse_counter",
  "voltage",
  "current",
  "power_factor",
  "flow",
  "temperature",
  "production_count",
  "state",
] as const;
export type Quantity = (typeof QUANTITIES)[number];

export const QUANTITY_LABELS: Record<Quantity, string> = {
  power: "Power",
  energy_counter: "Energy counter",
  pulse_counter: "Pulse counter",
  voltage: "Voltage",
  current: "Current",
  power_factor: "Power factor",
  flow: "Flow",
  temperature: "Temperature",
  production_count: "Production count",
  state: "State",
};

/**
 * The units a quantity accepts (the server's list), `[]` for none, or `null` when any
 * text is allowed (production counts: pcs, bottles, …).
 */
export function unitsFor(q: Quantity): readonly string[] | null {
  switch (q) {
    case "power":
      return ["W", "kW", "MW"];
    case "energy_counter":
      return ["Wh", "kWh", "MWh"];
    case "pulse_counter":
      return ["pulses"];
    case "voltage":
      return ["V", "kV"];
    case "current":
      return ["A", "kA"];
    case "flow":
      return ["m3/h", "l/min", "l/s"];
    case "temperature":
      return ["°C", "°F", "K"];
    case "power_factor":
    case "state":
      return [];
    case "production_count":
      return null;
  }
}

/** Which parameters a quantity has besides its unit. */
export function parametersOf(q: Quantity | null): { rollover: boolean; whPerPulse: boolean; counting: boolean } {
  return {
    rollover: q === "energy_counter" || q === "pulse_counter",
    whPerPulse: q === "pulse_counter",
    counting: q === "production_count",
  };
}

/** The unit to preselect when the quantity changes: keep a fitting one, else the first. */
export function unitAfterQuantityChange(q: Quantity, unit: string | null): string | null {
  const units = unitsFor(q);
  if (units === null) return unit;
  if (units.length === 0) return null;
  return unit && units.includes(unit) ? unit : (units[0] ?? null);
}

// --- State timeline ---------------------------------------------------------------

export interface StatePoint {
  ts: number;
  value: unknown;
}

export interface StateBand {
  from: number;
  to: number;
  state: string;
}

/**
 * Coloured bands of a state property over [from, to): a state holds from its point until
 * the next point (the last one until `to`); equal neighbours merge; a non-string value
 * ends the band before it (unknown state, no band). A point before `from` gives the
 * state at `from`.
 */
export function stateBands(points: StatePoint[], from: number, to: number): StateBand[] {
  const sorted = [...points].sort((a, b) => a.ts - b.ts);
  const bands: StateBand[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const p = sorted[i]!;
    if (typeof p.value !== "string" || p.value === "") continue;
    const start = Math.max(p.ts, from);
    const end = Math.min(sorted[i + 1]?.ts ?? to, to);
    if (end <= start) continue;
    const last = bands[bands.length - 1];
    if (last && last.state === p.value && last.to === start) last.to = end;
    else bands.push({ from: start, to: end, state: p.value });
  }
  return bands;
}

/** Time in each state over the bands, largest first. */
export function timeInStates(bands: StateBand[]): { state: string; ms: number }[] {
  const m = new Map<string, number>();
  for (const b of bands) m.set(b.state, (m.get(b.state) ?? 0) + b.to - b.from);
  return [...m.entries()].map(([state, ms]) => ({ state, ms })).sort((a, b) => b.ms - a.ms || a.state.localeCompare(b.state));
}

const STATE_COLORS: Record<string, string> = {
  running: "#16a34a",
  run: "#16a34a",
  production: "#16a34a",
  idle: "#f59e0b",
  standby: "#f59e0b",
  setup: "#3b82f6",
  maintenance: "#8b5cf6",
  off: "#64748b",
  stopped: "#64748b",
  error: "#dc2626",
  fault: "#dc2626",
  alarm: "#dc2626",
};
const OTHER_STATE_COLORS = ["#0ea5e9", "#a855f7", "#14b8a6", "#ec4899", "#84cc16", "#6366f1"];

/** A stable colour per state: the usual names get their conventional colours. */
export function stateColor(state: string): string {
  const known = STATE_COLORS[state.toLowerCase()];
  if (known) return known;
  let h = 0;
  for (const ch of state) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return OTHER_STATE_COLORS[h % OTHER_STATE_COLORS.length]!;
}

// --- Groups -----------------------------------------------------------------------

export interface GroupLike {
  id: string;
  name: string;
  kind: string;
  parent_id: string | null;
}

/** The hierarchy depth-first (children by name), each with its depth; a group whose parent is missing is a root. */
export function flattenTree<G extends GroupLike>(groups: G[]): { group: G; depth: number }[] {
  const tree = groups.filter((g) => g.kind !== "tag");
  const ids = new Set(tree.map((g) => g.id));
  const children = new Map<string | null, G[]>();
  for (const g of tree) {
    const parent = g.parent_id && ids.has(g.parent_id) ? g.parent_id : null;
    children.set(parent, [...(children.get(parent) ?? []), g]);
  }
  const out: { group: G; depth: number }[] = [];
  const seen = new Set<string>();
  const walk = (parent: string | null, depth: number) => {
    for (const g of [...(children.get(parent) ?? [])].sort((a, b) => a.name.localeCompare(b.name))) {
      if (seen.has(g.id)) continue;
      seen.add(g.id);
      out.push({ group: g, depth });
      walk(g.id, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

/** A group and everything below it: the parents it cannot be moved under. */
export function subtree(groups: GroupLike[], id: string): Set<string> {
  const out = new Set([id]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const g of groups) {
      if (g.parent_id && out.has(g.parent_id) && !out.has(g.id)) {
        out.add(g.id);
        grew = true;
      }
    }
  }
  return out;
}

// --- Axes -------------------------------------------------------------------------

/** Round axis ticks from 0 to at least `max`. */
export function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0) || !Number.isFinite(max)) return [0, 1];
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const ticks: number[] = [];
  for (let v = 0; v < max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

const zonedFormats = new Map<string, Intl.DateTimeFormat>();
/** A date and time on the factory's wall clock (energy periods are the factory's days). */
export function fmtZoned(iso: string | number | null | undefined, tz: string): string {
  if (iso === null || iso === undefined) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  let f = zonedFormats.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat(undefined, { timeZone: tz, month: "short", day: "numeric", year: "numeric", hour: "2-digit", minute: "2-digit" });
    zonedFormats.set(tz, f);
  }
  return f.format(d);
}
