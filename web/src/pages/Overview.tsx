import { useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { Link } from "react-router-dom";
import { api, unwrap } from "../api/client";
import type { Alert, AlertEvent, TelemetryEvent } from "../api/types";
import { useFactory } from "../factory";
import { useStreamEvent } from "../stream";
import { Badge, Empty, Loading, fmtAgo, fmtValue, isOnline, useAsync } from "../ui/common";
import { ProviderHealthBanner } from "../ui/ProviderHealth";
import { EnergyTiles } from "./EnergyTiles";
import { listAlerts, loadAllDevices, loadPins, savePins, type Pin } from "./data";

const SEVERITIES = ["critical", "warning", "info"] as const;

/**
 * The built-in overview: what the Dashboard page shows while the factory has no dashboard
 * (ADR 0022: no home, no factory default). `actions` is the page's dashboard controls.
 */
export function Overview({ actions }: { actions?: ReactNode }) {
  const { factory, me } = useFactory();
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 10_000);
    return () => clearInterval(t);
  }, []);

  const devices = useAsync((signal) => loadAllDevices(factory, {}, signal), [factory]);
  const alerts = useAsync(
    async (signal) => {
      const [open, acked] = await Promise.all([
        listAlerts(factory, { status: "open", limit: 500 }, signal),
        listAlerts(factory, { status: "acknowledged", limit: 500 }, signal),
      ]);
      return [...open.items, ...acked.items];
    },
    [factory],
  );

  // Live: device last-seen, alerts.
  const lastSeen = useRef(new Map<string, number>());
  const [latest, setLatest] = useState(new Map<string, { value: unknown; ts: number }>());
  useStreamEvent<TelemetryEvent>("telemetry", (e) => {
    lastSeen.current.set(e.device_id, Date.now());
    setLatest((old) => {
      const next = new Map(old);
      for (const p of e.points) next.set(`${e.device_id}\u0000${p.property}`, { value: p.value, ts: p.ts_ms });
      return next;
    });
  });
  useStreamEvent<AlertEvent>("alert", () => alerts.reload());

  const counts = useMemo(() => {
    const list = devices.data ?? [];
    let online = 0;
    for (const d of list) {
      const live = lastSeen.current.get(d.id);
      if ((live && now - live < 5 * 60_000) || isOnline(d.last_seen, now)) online++;
    }
    return { total: list.length, online, offline: list.length - online };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [devices.data, now, latest]);

  const bySeverity = useMemo(() => {
    const m: Record<string, number> = { critical: 0, warning: 0, info: 0 };
    for (const a of alerts.data ?? []) if (a.status === "open") m[a.severity] = (m[a.severity] ?? 0) + 1;
    return m;
  }, [alerts.data]);

  return (
    <>
      <div className="page-head">
        <div>
          <h1>Dashboard</h1>
          <div className="sub">Welcome back, {me.user?.name ?? me.user?.email}. Live overview of your factory.</div>
        </div>
        {actions}
      </div>
      <ProviderHealthBanner />
      <div className="grid cols-3" data-testid="dashboard-stats">
        <div className="card stat">
          <span className="label">Devices online</span>
          <span className="value" data-testid="devices-online">
            {devices.data ? counts.online : "…"}
          </span>
          <span className="hint">of {devices.data ? counts.total : "…"} registered · seen in the last 5 min</span>
        </div>
        <div className="card stat">
          <span className="label">Devices offline</span>
          <span className="value">{devices.data ? counts.offline : "…"}</span>
          <span className="hint">
            <Link to={`/f/${factory}/devices`}>View devices →</Link>
          </span>
        </div>
        <div className="card stat">
          <span className="label">Open alerts</span>
          <div className="row" style={{ marginTop: "0.3rem" }} data-testid="open-alerts">
            {SEVERITIES.map((s) => (
              <Badge key={s} kind={s}>
                {bySeverity[s] ?? 0} {s}
              </Badge>
            ))}
          </div>
          <span className="hint">
            <Link to={`/f/${factory}/alerts?status=open`}>Open the inbox →</Link>
          </span>
        </div>
      </div>
      <EnergyTiles />
      <div className="grid side" style={{ marginTop: "1rem" }}>
        <div className="stack">
          <PinnedValues latestLive={latest} />
        </div>
        <div className="card">
          <div className="row">
            <h2 style={{ margin: 0 }}>Active alerts</h2>
            <span style={{ flex: 1 }} />
            <Link to={`/f/${factory}/alerts`} className="small">
              All alerts
            </Link>
          </div>
          {alerts.loading && !alerts.data ? (
            <Loading />
          ) : (alerts.data ?? []).length === 0 ? (
            <Empty icon="✓" title="No active alerts">
              All quiet.
            </Empty>
          ) : (
            <ul className="stack" style={{ listStyle: "none", padding: 0, margin: "0.75rem 0 0" }} data-testid="dashboard-alerts">
              {(alerts.data ?? []).slice(0, 8).map((a: Alert) => (
                <li key={a.id}>
                  <Link to={`/f/${factory}/alerts/${a.id}`} style={{ textDecoration: "none", color: "inherit" }}>
                    <div className="row">
                      <Badge kind={a.severity}>{a.severity}</Badge>
                      <Badge kind={a.status}>{a.status}</Badge>
                      <span className="muted small">{fmtAgo(a.opened_at)}</span>
                    </div>
                    <div style={{ marginTop: "0.2rem" }}>{a.message}</div>
                  </Link>
                </li>
              ))}
            </ul>
          )}
        </div>
      </div>
    </>
  );
}

function PinnedValues({ latestLive }: { latestLive: Map<string, { value: unknown; ts: number }> }) {
  const { factory } = useFactory();
  const [pins, setPins] = useState<Pin[]>(() => loadPins(factory));
  const devices = [...new Set(pins.map((p) => p.device))];
  const latest = useAsync(
    async (signal) => {
      const results = await Promise.all(
        devices.map((d) =>
          unwrap(api.GET("/api/v1/factories/{factory_id}/telemetry/latest", { params: { path: { factory_id: factory }, query: { device_id: d } }, signal })).catch(
            () => null,
          ),
        ),
      );
      const map = new Map<string, { value: unknown; ts: number }>();
      for (const r of results) if (r) for (const p of r.properties) map.set(`${r.device_id}\u0000${p.name}`, { value: p.value, ts: Date.parse(p.ts) });
      return map;
    },
    [factory, devices.join(",")],
  );
  return (
    <div className="card">
      <h2>Pinned values</h2>
      {pins.length === 0 ? (
        <Empty icon="★" title="Nothing pinned yet">
          Pin properties from a device's page to watch their latest values here.
        </Empty>
      ) : (
        <div className="grid cols-3" data-testid="pinned-values">
          {pins.map((p) => {
            const key = `${p.device}\u0000${p.property}`;
            const stored = latest.data?.get(key);
            const live = latestLive.get(key);
            const v = live && (!stored || live.ts >= stored.ts) ? live : stored;
            return (
              <div className="stat" key={key} style={{ border: "1px solid var(--border)", borderRadius: 8, padding: "0.6rem" }}>
                <span className="label">
                  <Link to={`/f/${factory}/devices/${p.device}`}>{p.device}</Link> · {p.property}
                </span>
                <span className="value" style={{ fontSize: "1.4rem" }}>
                  {fmtValue(v?.value)}
                </span>
                <span className="hint row">
                  {v ? fmtAgo(new Date(v.ts).toISOString()) : "no data"}
                  <span style={{ flex: 1 }} />
                  <button
                    className="ghost small"
                    aria-label={`Unpin ${p.device} ${p.property}`}
                    onClick={() => {
                      const next = pins.filter((x) => x !== p);
                      setPins(next);
                      savePins(factory, next);
                    }}
                  >
                    Unpin
                  </button>
                </span>
              </div>
            );
          })}
        </div>
      )}
    </div>
  );
}
