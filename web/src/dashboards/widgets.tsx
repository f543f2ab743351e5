// The widget renderers. Each reads its data from the existing read routes (a dashboard
// stores only what to show) and reloads when the dashboard's refresh tick changes.
import { useMemo, useState } from "react";
import { Link } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { ApiError, describe } from "../api/problem";
import type { Alert, AlertEvent, PropertyView, TelemetryEvent } from "../api/types";
import { BarChart } from "../chart/BarChart";
import { TimeChart, PALETTE } from "../chart/TimeChart";
import { loadSeries } from "../chart/range";
import type { Point } from "../chart/align";
import { getConsumption, listGroups, type Scope } from "../energy/api";
import { bucketLabel, fmtNumber, subtree } from "../energy/shape";
import { useFactory } from "../factory";
import { listAlerts, loadAllDevices } from "../pages/data";
import { useStreamEvent } from "../stream";
import { Badge, Empty, fmtAgo, fmtValue, isOnline, useAsync } from "../ui/common";
import { arc, gaugeFraction, sparkPath } from "./draw";
import { RANGE_MS, energyBucket, energyFrom, type Widget, type WidgetRange } from "./model";

export interface WidgetViewProps {
  widget: Widget;
  /** The range this widget shows (the dashboard-wide choice or its own). */
  range: WidgetRange;
  /** Changes on every refresh of the dashboard. */
  tick: number;
  /** Pixels available for the widget's body. */
  height: number;
}

export function WidgetView(props: WidgetViewProps) {
  switch (props.widget.type) {
    case "value":
      return <ValueWidget {...props} />;
    case "gauge":
      return <GaugeWidget {...props} />;
    case "chart":
      return <ChartWidget {...props} />;
    case "energy_bars":
      return <EnergyBarsWidget {...props} />;
    case "alerts":
      return <AlertsWidget {...props} />;
    case "status_grid":
      return <StatusGridWidget {...props} />;
    case "text":
      return <div className="widget-text">{props.widget.text}</div>;
  }
}

// --- Shared loaders ---

// Units and names change rarely: one request per device per page view is plenty.
const propertyCache = new Map<string, Promise<PropertyView[]>>();
export function clearWidgetCaches() {
  propertyCache.clear();
}
export function deviceProperties(factory: string, device: string): Promise<PropertyView[]> {
  const key = `${factory}\u0000${device}`;
  let hit = propertyCache.get(key);
  if (!hit) {
    hit = unwrap(api.GET("/api/v1/factories/{factory_id}/devices/{device_id}/properties", { params: { path: { factory_id: factory, device_id: device } } }))
      .then((p) => p.items)
      .catch(() => []);
    propertyCache.set(key, hit);
  }
  return hit;
}
async function unitOf(factory: string, device: string, property: string): Promise<string | null> {
  const props = await deviceProperties(factory, device);
  return props.find((p) => p.name === property)?.unit ?? null;
}

interface Latest {
  value: unknown;
  ts: number;
}
async function latestOf(factory: string, device: string, property: string, signal: AbortSignal): Promise<Latest | null> {
  const r = await unwrap(api.GET("/api/v1/factories/{factory_id}/telemetry/latest", { params: { path: { factory_id: factory }, query: { device_id: device } }, signal }));
  const p = r.properties.find((x) => x.name === property);
  return p ? { value: p.value, ts: Date.parse(p.ts) } : null;
}

/** The latest value of one property, kept current by the live stream between refreshes. */
function useLatest(device: string, property: string, tick: number) {
  const { factory } = useFactory();
  const loaded = useAsync(
    async (signal) => {
      const [latest, unit] = await Promise.all([latestOf(factory, device, property, signal), unitOf(factory, device, property)]);
      return { latest, unit };
    },
    [factory, device, property, tick],
  );
  const [live, setLive] = useState<Latest | null>(null);
  useStreamEvent<TelemetryEvent>("telemetry", (e) => {
    if (e.device_id !== device) return;
    for (const p of e.points) if (p.property === property) setLive({ value: p.value, ts: p.ts_ms });
  });
  const stored = loaded.data?.latest ?? null;
  const current = live && (!stored || live.ts >= stored.ts) ? live : stored;
  return { current, unit: loaded.data?.unit ?? null, error: loaded.error, loading: loaded.loading && !loaded.data };
}

function WidgetError({ error }: { error: unknown }) {
  return (
    <div className="callout warn small" role="alert">
      {describe(error)}
    </div>
  );
}

// --- Value ---

function ValueWidget({ widget, range, tick }: WidgetViewProps) {
  const { factory } = useFactory();
  const device = widget.device_id ?? "";
  const property = widget.property ?? "";
  const { current, unit, error, loading } = useLatest(device, property, tick);
  const spark = useAsync((signal) => loadSeries(factory, device, property, { range, agg: "auto" }, signal), [factory, device, property, range, tick]);
  if (error) return <WidgetError error={error} />;
  return (
    <div className="widget-value">
      <div className="value num" data-testid="widget-value">
        {loading ? "…" : fmtValue(current?.value)}
        {unit && current ? <small> {unit}</small> : null}
      </div>
      <div className="muted small">
        <Link to={`/f/${factory}/devices/${encodeURIComponent(device)}`}>{device}</Link> · {property} · {current ? fmtAgo(new Date(current.ts).toISOString()) : "no data yet"}
      </div>
      <Sparkline points={spark.data?.points ?? []} label={`${property} over ${range}`} />
    </div>
  );
}

/** A line of the points, scaled to its own min and max. */
export function Sparkline({ points, label }: { points: Point[]; label: string }) {
  const path = useMemo(() => sparkPath(points, 100, 28), [points]);
  if (!path) return <div className="sparkline empty" aria-hidden="true" />;
  return (
    <svg className="sparkline" viewBox="0 0 100 28" preserveAspectRatio="none" role="img" aria-label={label}>
      <path d={path} fill="none" stroke={PALETTE[0]} strokeWidth="1.5" vectorEffect="non-scaling-stroke" />
    </svg>
  );
}

// --- Gauge ---

function GaugeWidget({ widget, tick, height }: WidgetViewProps) {
  const { factory } = useFactory();
  const device = widget.device_id ?? "";
  const property = widget.property ?? "";
  const min = widget.min ?? 0;
  const max = widget.max ?? 100;
  const { current, unit, error, loading } = useLatest(device, property, tick);
  if (error) return <WidgetError error={error} />;
  const v = typeof current?.value === "number" ? current.value : null;
  const f = gaugeFraction(v, min, max);
  const over = v !== null && v > max;
  const color = over ? "var(--danger)" : f !== null && f > 0.9 ? "var(--warning)" : "var(--accent)";
  const size = Math.max(60, Math.min(height - 40, 150));
  return (
    <div className="widget-gauge" data-testid="widget-gauge" data-fraction={f ?? ""}>
      <svg viewBox="0 0 120 74" style={{ height: size }} role="img" aria-label={`${property}: ${fmtValue(v, unit)} of ${fmtValue(max, unit)}`}>
        <path d={arc(1)} className="gauge-track" />
        {f !== null && f > 0 && <path d={arc(f)} style={{ stroke: color }} className="gauge-value" />}
        <text x="60" y="58" textAnchor="middle" className="gauge-number">
          {loading ? "…" : fmtValue(v)}
        </text>
        <text x="12" y="73" textAnchor="middle" className="gauge-limit">
          {fmtValue(min)}
        </text>
        <text x="108" y="73" textAnchor="middle" className="gauge-limit">
          {fmtValue(max)}
        </text>
      </svg>
      <div className="muted small">
        {unit ? `${unit} · ` : ""}
        <Link to={`/f/${factory}/devices/${encodeURIComponent(device)}`}>{device}</Link> · {property}
        {over && <Badge kind="critical">above {fmtValue(max, unit)}</Badge>}
      </div>
    </div>
  );
}

// --- Chart ---

function ChartWidget({ widget, range, tick, height }: WidgetViewProps) {
  const { factory } = useFactory();
  const series = widget.series ?? [];
  const key = series.map((s) => `${s.device_id}/${s.property}`).join(",");
  const loaded = useAsync(
    (signal) =>
      Promise.all(
        series.map(async (s) => {
          const [data, unit] = await Promise.all([loadSeries(factory, s.device_id, s.property, { range, agg: "auto" }, signal), unitOf(factory, s.device_id, s.property)]);
          return { label: `${s.device_id} · ${s.property}`, unit, points: data.points };
        }),
      ),
    [factory, key, range, tick],
  );
  const now = Date.now();
  const span = useMemo<[number, number]>(() => [now - RANGE_MS[range], now], [range, tick]); // eslint-disable-line react-hooks/exhaustive-deps
  if (loaded.error) return <WidgetError error={loaded.error} />;
  if (!loaded.data) return <div className="skeleton" style={{ height: Math.max(40, height - 30) }} />;
  return <TimeChart series={loaded.data} height={Math.max(80, height - 34)} range={span} axisPerUnit testId="widget-chart" />;
}

// --- Energy bars ---

function EnergyBarsWidget({ widget, range, tick, height }: WidgetViewProps) {
  const { factory, timezone } = useFactory();
  const bucket = energyBucket(range);
  const scope: Scope = widget.device_id ? { device_id: widget.device_id } : widget.group_id ? { group_id: widget.group_id } : {};
  const loaded = useAsync(
    async () => {
      const to = Date.now();
      return getConsumption(factory, scope, energyFrom(range, to, timezone), to, bucket);
    },
    [factory, timezone, widget.device_id, widget.group_id, range, tick],
  );
  if (loaded.error instanceof ApiError && loaded.error.status === 404) return <Empty title="No energy data">This server has no energy routes.</Empty>;
  if (loaded.error) return <WidgetError error={loaded.error} />;
  const c = loaded.data;
  if (!c) return <div className="skeleton" style={{ height: Math.max(40, height - 30) }} />;
  const total = c.items.reduce((s, i) => s + i.kwh, 0);
  return (
    <div>
      <div className="muted small">
        {fmtNumber(total)} {c.unit} in {range}
        {!widget.device_id && !widget.group_id ? " · whole factory" : ""}
      </div>
      <BarChart
        labels={c.items.map((i) => bucketLabel(Date.parse(i.start), bucket, timezone))}
        series={[{ name: c.unit, values: c.items.map((i) => i.kwh) }]}
        unit={c.unit}
        height={Math.max(80, height - 44)}
        testId="widget-energy"
      />
    </div>
  );
}

// --- Alerts ---

function AlertsWidget({ widget, tick }: WidgetViewProps) {
  const { factory } = useFactory();
  const alerts = useAsync((signal) => listAlerts(factory, { status: "open", limit: 50, ...(widget.device_id ? { device_id: widget.device_id } : {}) }, signal), [factory, widget.device_id, tick]);
  useStreamEvent<AlertEvent>("alert", () => alerts.reload());
  if (alerts.error) return <WidgetError error={alerts.error} />;
  const items: Alert[] = alerts.data?.items ?? [];
  if (!alerts.data) return <div className="skeleton" />;
  if (items.length === 0)
    return (
      <Empty icon="✓" title="No open alerts">
        All quiet{widget.device_id ? ` on ${widget.device_id}` : ""}.
      </Empty>
    );
  return (
    <ul className="widget-list" data-testid="widget-alerts">
      {items.map((a) => (
        <li key={a.id}>
          <Link to={`/f/${factory}/alerts/${a.id}`}>
            <Badge kind={a.severity}>{a.severity}</Badge> <span className="muted small">{fmtAgo(a.opened_at)}</span>
            <div>{a.message}</div>
          </Link>
        </li>
      ))}
    </ul>
  );
}

// --- Status grid ---

const STATUS_TILES = 120;

function StatusGridWidget({ widget, tick }: WidgetViewProps) {
  const { factory } = useFactory();
  const loaded = useAsync(
    async (signal) => {
      const devices = await loadAllDevices(factory, {}, signal);
      if (!widget.group_id) return devices;
      const groups = await listGroups(factory);
      const ids = subtree(groups, widget.group_id);
      const members = new Set(groups.filter((g) => ids.has(g.id)).flatMap((g) => g.devices));
      return devices.filter((d) => members.has(d.id));
    },
    [factory, widget.group_id, tick],
  );
  if (loaded.error) return <WidgetError error={loaded.error} />;
  if (!loaded.data) return <div className="skeleton" />;
  const now = Date.now();
  const list = loaded.data.map((d) => ({ d, online: isOnline(d.last_seen, now) })).sort((a, b) => Number(a.online) - Number(b.online) || a.d.id.localeCompare(b.d.id, undefined, { numeric: true }));
  const online = list.filter((x) => x.online).length;
  return (
    <div data-testid="widget-status">
      <div className="row small">
        <Badge kind="online" dot>
          {online} online
        </Badge>
        <Badge kind={list.length - online ? "open" : ""} dot>
          {list.length - online} offline
        </Badge>
      </div>
      <div className="status-tiles">
        {list.slice(0, STATUS_TILES).map(({ d, online }) => (
          <Link key={d.id} to={`/f/${factory}/devices/${encodeURIComponent(d.id)}`} className={`status-tile ${online ? "on" : "off"}`} title={`${d.name || d.id}: ${online ? "online" : `offline, last seen ${fmtAgo(d.last_seen)}`}`}>
            {d.name || d.id}
          </Link>
        ))}
        {list.length > STATUS_TILES && <span className="muted small">+{list.length - STATUS_TILES} more</span>}
      </div>
    </div>
  );
}
