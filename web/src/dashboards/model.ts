// Dashboards as data (ADR 0022): the widget rules as the server checks them, and the
// pure layout helpers of the 12-column grid (placing, moving, resizing, pushing aside).
// The server stays the judge; these rules only let the form say what is missing before
// a round trip, and keep what is sent free of fields a widget type does not use.
import type { components } from "../api/schema";
import { localParts, zonedTime } from "../energy/shape";

type S = components["schemas"];
export type Dashboard = S["Dashboard"];
export type DashboardSpec = S["DashboardSpec"];
export type Widget = S["Widget"];
export type WidgetType = S["WidgetType"];
export type WidgetLayout = S["WidgetLayout"];
export type WidgetSeries = S["WidgetSeries"];

export const GRID_COLUMNS = 12;
export const MAX_HEIGHT = 12;
export const MAX_ROW = 1000;
export const MAX_WIDGETS = 40;
export const MAX_SERIES = 8;
export const MAX_TITLE = 100;
export const MAX_TEXT = 2000;
export const WIDGET_RANGES = ["1h", "6h", "24h", "7d", "30d"] as const;
export type WidgetRange = (typeof WIDGET_RANGES)[number];
export const DEFAULT_RANGE: WidgetRange = "24h";
export const RANGE_MS: Record<WidgetRange, number> = {
  "1h": 3_600_000,
  "6h": 6 * 3_600_000,
  "24h": 86_400_000,
  "7d": 7 * 86_400_000,
  "30d": 30 * 86_400_000,
};

export const WIDGET_TYPES: { type: WidgetType; label: string }[] = [
  { type: "value", label: "Value" },
  { type: "chart", label: "Time chart" },
  { type: "energy_bars", label: "Energy bars" },
  { type: "gauge", label: "Gauge" },
  { type: "alerts", label: "Open alerts" },
  { type: "status_grid", label: "Device status" },
  { type: "text", label: "Text" },
];

type Field = "device_id" | "group_id" | "property" | "series" | "range" | "min" | "max" | "text";
const FIELDS: Field[] = ["device_id", "group_id", "property", "series", "range", "min", "max", "text"];

/** Per type: the fields it requires and the optional ones it allows besides (ADR 0022's table). */
export const WIDGET_FIELDS: Record<WidgetType, { required: Field[]; optional: Field[] }> = {
  value: { required: ["device_id", "property"], optional: [] },
  gauge: { required: ["device_id", "property", "max"], optional: ["min"] },
  chart: { required: ["series"], optional: ["range"] },
  energy_bars: { required: [], optional: ["device_id", "group_id", "range"] },
  alerts: { required: [], optional: ["device_id"] },
  status_grid: { required: [], optional: ["group_id"] },
  text: { required: ["text"], optional: [] },
};

export function usesField(type: WidgetType, field: Field): boolean {
  const f = WIDGET_FIELDS[type];
  return f.required.includes(field) || f.optional.includes(field);
}

/** A new widget's size by type (columns × rows). */
export const DEFAULT_SIZE: Record<WidgetType, { w: number; h: number }> = {
  value: { w: 3, h: 2 },
  gauge: { w: 3, h: 3 },
  chart: { w: 6, h: 4 },
  energy_bars: { w: 6, h: 4 },
  alerts: { w: 4, h: 4 },
  status_grid: { w: 4, h: 3 },
  text: { w: 3, h: 2 },
};

const blank = (v: unknown) => v === undefined || v === null || (typeof v === "string" && v.trim() === "");

/**
 * The widget as the server wants it: only the fields its type uses, no empty strings or
 * nulls (a field a type does not use is refused, not ignored), strings trimmed.
 */
export function cleanWidget(w: Widget): Widget {
  const out: Widget = { type: w.type, title: w.title.trim() };
  for (const f of FIELDS) {
    if (!usesField(w.type, f)) continue;
    const v = w[f];
    if (blank(v)) continue;
    if (f === "series") {
      const series = (v as WidgetSeries[]).map((s) => ({ device_id: s.device_id.trim(), property: s.property.trim() })).filter((s) => s.device_id || s.property);
      if (series.length) out.series = series;
    } else if (f === "min" || f === "max") {
      if (typeof v === "number" && Number.isFinite(v)) out[f] = v;
    } else if (f === "text") {
      out.text = v as string;
    } else {
      out[f] = (v as string).trim();
    }
  }
  if (w.layout) out.layout = { ...w.layout };
  return out;
}

/** What is wrong with a widget, keyed by field (`device_id`, `series[1].property`, `layout.w`); empty when fine. */
export function validateWidget(w: Widget): Record<string, string> {
  const errors: Record<string, string> = {};
  const c = cleanWidget(w);
  if (!c.title) errors.title = "a title helps the people who read the dashboard";
  else if ([...c.title].length > MAX_TITLE) errors.title = `at most ${MAX_TITLE} characters`;
  for (const f of WIDGET_FIELDS[w.type].required) {
    if (c[f] === undefined) errors[f] = "required";
  }
  if (c.series) {
    if (c.series.length > MAX_SERIES) errors.series = `1 to ${MAX_SERIES} series`;
    c.series.forEach((s, i) => {
      if (!s.device_id) errors[`series[${i}].device_id`] = "required";
      if (!s.property) errors[`series[${i}].property`] = "required";
    });
  }
  if (w.type === "energy_bars" && c.device_id && c.group_id) errors.group_id = "give either a device or a group, not both";
  if (c.range && !(WIDGET_RANGES as readonly string[]).includes(c.range)) errors.range = `one of ${WIDGET_RANGES.join(", ")}`;
  if (typeof c.max === "number" && c.max <= (c.min ?? 0)) errors.max = "must be greater than the minimum (default 0)";
  if (c.text && [...c.text].length > MAX_TEXT) errors.text = `at most ${MAX_TEXT} characters`;
  if (c.layout) Object.assign(errors, layoutErrors(c.layout));
  return errors;
}

export function layoutErrors(l: WidgetLayout): Record<string, string> {
  const errors: Record<string, string> = {};
  if (l.w < 1 || l.w > GRID_COLUMNS) errors["layout.w"] = `1 to ${GRID_COLUMNS} columns`;
  else if (l.x < 0 || l.x + l.w > GRID_COLUMNS) errors["layout.x"] = `x + w at most ${GRID_COLUMNS}`;
  if (l.h < 1 || l.h > MAX_HEIGHT) errors["layout.h"] = `1 to ${MAX_HEIGHT} rows`;
  if (l.y < 0 || l.y > MAX_ROW) errors["layout.y"] = `0 to ${MAX_ROW}`;
  return errors;
}

/**
 * The server's field errors of widget `index` (`widgets[2].series[0].device_id` →
 * `series[0].device_id`), so the form can show them next to its fields.
 */
export function widgetErrors(errors: Record<string, string>, index: number): Record<string, string> {
  const prefix = `widgets[${index}]`;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(errors)) {
    if (k === prefix) out[""] = v;
    else if (k.startsWith(`${prefix}.`)) out[k.slice(prefix.length + 1)] = v;
  }
  return out;
}

// --- Layout ---

export function overlaps(a: WidgetLayout, b: WidgetLayout): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

/** Keeps a layout on the grid: width 1–12, x + w ≤ 12, height 1–12, y ≥ 0. */
export function clampLayout(l: WidgetLayout): WidgetLayout {
  const w = Math.min(GRID_COLUMNS, Math.max(1, Math.round(l.w)));
  const h = Math.min(MAX_HEIGHT, Math.max(1, Math.round(l.h)));
  const x = Math.min(GRID_COLUMNS - w, Math.max(0, Math.round(l.x)));
  const y = Math.min(MAX_ROW, Math.max(0, Math.round(l.y)));
  return { x, y, w, h };
}

/** The first free spot (top to bottom, left to right) for a w × h widget among `taken`. */
export function firstFree(taken: WidgetLayout[], w: number, h: number): WidgetLayout {
  const width = Math.min(GRID_COLUMNS, Math.max(1, w));
  for (let y = 0; y <= MAX_ROW; y++) {
    for (let x = 0; x + width <= GRID_COLUMNS; x++) {
      const spot = { x, y, w: width, h };
      if (!taken.some((t) => overlaps(t, spot))) return spot;
    }
  }
  return { x: 0, y: bottom(taken), w: width, h };
}

/** The first row below every layout. */
export function bottom(layouts: WidgetLayout[]): number {
  return layouts.reduce((m, l) => Math.max(m, l.y + l.h), 0);
}

/** Every widget with a layout: those without one (an API client may omit it) go to the first free spot. */
export function withLayouts(widgets: Widget[]): (Widget & { layout: WidgetLayout })[] {
  const taken: WidgetLayout[] = widgets.flatMap((w) => (w.layout ? [w.layout] : []));
  return widgets.map((w) => {
    if (w.layout) return w as Widget & { layout: WidgetLayout };
    const size = DEFAULT_SIZE[w.type];
    const layout = firstFree(taken, size.w, size.h);
    taken.push(layout);
    return { ...w, layout };
  });
}

/**
 * Puts widget `index` at `target` and pushes the widgets it now covers down, in reading
 * order, until nothing overlaps (what a user expects when dropping onto a full row). Then
 * the gaps close: the others rise first, around the moved widget where it was put (so a
 * widget can pass the one below it), then the moved one rises too.
 */
export function placeAt(layouts: WidgetLayout[], index: number, target: WidgetLayout): WidgetLayout[] {
  const moved = clampLayout(target);
  const placed: WidgetLayout[] = [moved];
  const result = layouts.slice();
  result[index] = moved;
  const order = layouts
    .map((l, i) => ({ l, i }))
    .filter(({ i }) => i !== index)
    .sort((a, b) => a.l.y - b.l.y || a.l.x - b.l.x);
  for (const { l, i } of order) {
    let next = { ...l };
    for (;;) {
      const hit = placed.find((p) => overlaps(p, next));
      if (!hit) break;
      next = { ...next, y: hit.y + hit.h };
    }
    placed.push(next);
    result[i] = next;
  }
  const settled = compact(result, index);
  settled[index] = rise(moved, settled.filter((_, i) => i !== index));
  return settled;
}

/** The highest row at or above `l.y` where `l` overlaps none of `placed`. */
function rise(l: WidgetLayout, placed: WidgetLayout[]): WidgetLayout {
  for (let y = 0; y < l.y; y++) {
    const up = { ...l, y };
    if (!placed.some((p) => overlaps(p, up))) return up;
  }
  return l;
}

/**
 * Lets every widget rise to the highest free row, in reading order (the grid has no holes
 * a user has to tidy by hand); `fixed` names one that stays put. Keeps a layout without
 * overlaps free of them.
 */
export function compact(layouts: WidgetLayout[], fixed?: number): WidgetLayout[] {
  const result = layouts.slice();
  const placed: WidgetLayout[] = fixed !== undefined && layouts[fixed] ? [layouts[fixed]] : [];
  for (const i of readingOrder(layouts)) {
    if (i === fixed) continue;
    const next = rise(layouts[i]!, placed);
    placed.push(next);
    result[i] = next;
  }
  return result;
}

/**
 * One keyboard step: left/right by a column; up/down past the widget it touches in that
 * direction (so two widgets swap), else by a row.
 */
export function nudge(layouts: WidgetLayout[], index: number, dx: number, dy: number): WidgetLayout[] {
  const l = layouts[index]!;
  const sharesColumns = (o: WidgetLayout) => o.x < l.x + l.w && l.x < o.x + o.w;
  const others = layouts.filter((o, i) => i !== index && sharesColumns(o));
  let y = l.y + dy;
  if (dy > 0) {
    const below = others.filter((o) => o.y === l.y + l.h);
    if (below.length) y = l.y + Math.max(...below.map((o) => o.h));
  } else if (dy < 0) {
    const above = others.filter((o) => o.y + o.h === l.y);
    if (above.length) y = Math.min(...above.map((o) => o.y));
  }
  return placeAt(layouts, index, { ...l, x: l.x + dx, y });
}

/** Reading order (row, then column): how the widgets stack on a narrow screen. */
export function readingOrder(layouts: WidgetLayout[]): number[] {
  return layouts
    .map((l, i) => ({ l, i }))
    .sort((a, b) => a.l.y - b.l.y || a.l.x - b.l.x)
    .map(({ i }) => i);
}

/** Grid cells moved by a pointer delta, given one column's width and one row's height (gaps included). */
export function cellsMoved(dxPx: number, dyPx: number, colPx: number, rowPx: number): { dx: number; dy: number } {
  // `+ 0` turns Math.round's -0 into 0.
  return { dx: Math.round(dxPx / Math.max(1, colPx)) + 0, dy: Math.round(dyPx / Math.max(1, rowPx)) + 0 };
}

// --- Time ---

/** The range a widget shows: the dashboard-wide choice when set, else its own, else 24 h. */
export function effectiveRange(widget: Pick<Widget, "range">, dashboardRange: WidgetRange | null): WidgetRange {
  if (dashboardRange) return dashboardRange;
  return (WIDGET_RANGES as readonly string[]).includes(widget.range ?? "") ? (widget.range as WidgetRange) : DEFAULT_RANGE;
}

/** The energy bucket for a span: hours up to two days, else days. */
export function energyBucket(range: WidgetRange): "hour" | "day" {
  return RANGE_MS[range] <= 2 * 86_400_000 ? "hour" : "day";
}

/**
 * Where energy bars start: the start of the local hour (or day) `range` before `now`, so
 * the first bar is a whole bucket and the last one is the running one.
 */
export function energyFrom(range: WidgetRange, now: number, tz: string): number {
  const p = localParts(now - RANGE_MS[range], tz);
  return energyBucket(range) === "hour" ? zonedTime(p.year, p.month, p.day, p.hour, 0, tz) : zonedTime(p.year, p.month, p.day, 0, 0, tz);
}

export const REFRESH_CHOICES = [
  { seconds: 0, label: "Off" },
  { seconds: 30, label: "30 s" },
  { seconds: 60, label: "1 min" },
  { seconds: 300, label: "5 min" },
] as const;

/** Reads `?range=` and `?refresh=` of a shared URL, ignoring what is not a choice. */
export function viewFromSearch(search: URLSearchParams): { range: WidgetRange | null; refresh: number } {
  const r = search.get("range");
  const range = (WIDGET_RANGES as readonly string[]).includes(r ?? "") ? (r as WidgetRange) : null;
  // Absent: every minute (a dashboard on a wall should not go stale); `0` turns it off.
  const raw = search.get("refresh");
  const s = raw === null || raw.trim() === "" ? NaN : Number(raw);
  const refresh = REFRESH_CHOICES.some((c) => c.seconds === s) ? s : 60;
  return { range, refresh };
}

/** A fresh dashboard's starting widgets: the factory at a glance, as the built-in overview shows it. */
export function starterWidgets(): Widget[] {
  return [
    { type: "status_grid", title: "Devices", layout: { x: 0, y: 0, w: 4, h: 3 } },
    { type: "energy_bars", title: "Energy, whole factory", range: "24h", layout: { x: 4, y: 0, w: 8, h: 4 } },
    { type: "alerts", title: "Open alerts", layout: { x: 0, y: 3, w: 4, h: 4 } },
  ];
}

/** The body for POST/PUT from a dashboard being edited. */
export function specOf(d: { name: string; shared: boolean; default?: boolean; widgets: Widget[] }, includeDefault: boolean): DashboardSpec {
  return {
    name: d.name.trim(),
    shared: d.shared,
    ...(includeDefault && d.default !== undefined ? { default: d.default } : {}),
    widgets: withLayouts(d.widgets).map(cleanWidget),
  };
}
