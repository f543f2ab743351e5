import { useEffect, useMemo, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import type { DeviceCredentials, PropertyView, TelemetryEvent } from "../api/types";
import { numeric, type Point, type SeriesData } from "../chart/align";
import { RangePicker } from "../chart/RangePicker";
import { aggregation, loadSeries, resolveWindow, type TimeWindow } from "../chart/range";
import { TimeChart } from "../chart/TimeChart";
import { useFactory } from "../factory";
import { useStreamEvent } from "../stream";
import { Badge, CopyButton, Empty, Loading, fmtAgo, fmtTime, fmtValue, isNotFound, isOnline, useAsync } from "../ui/common";
import { Modal } from "../ui/Modal";
import { useToast } from "../ui/toast";
import { loadPins, savePins } from "./data";
import { DeviceForm } from "./Devices";
import { NotFound } from "./NotFound";
import { EnergyConfigCard, SemanticsDialog, StatesCard, SuggestionButton, isQuantity, isStateProperty, semanticsText, type SemanticProperty } from "./DeviceEnergy";
import type { Quantity } from "../energy/shape";

export function DeviceDetail() {
  const { deviceId = "" } = useParams();
  const { factory, can } = useFactory();
  const toast = useToast();
  const device = useAsync(
    (signal) => unwrap(api.GET("/api/v1/factories/{factory_id}/devices/{device_id}", { params: { path: { factory_id: factory, device_id: deviceId } }, signal })),
    [factory, deviceId],
  );
  const properties = useAsync(
    (signal) =>
      unwrap(api.GET("/api/v1/factories/{factory_id}/devices/{device_id}/properties", { params: { path: { factory_id: factory, device_id: deviceId } }, signal })),
    [factory, deviceId],
  );
  const latest = useAsync(
    (signal) => unwrap(api.GET("/api/v1/factories/{factory_id}/telemetry/latest", { params: { path: { factory_id: factory }, query: { device_id: deviceId } }, signal })),
    [factory, deviceId],
  );
  const errors = useAsync(
    (signal) => unwrap(api.GET("/api/v1/factories/{factory_id}/devices/{device_id}/errors", { params: { path: { factory_id: factory, device_id: deviceId } }, signal })),
    [factory, deviceId],
  );
  const [editing, setEditing] = useState(false);
  const [credentials, setCredentials] = useState<DeviceCredentials | null>(null);
  const [confirmRotate, setConfirmRotate] = useState(false);
  const [liveValues, setLiveValues] = useState(new Map<string, { value: unknown; ts: number }>());

  useStreamEvent<TelemetryEvent>("telemetry", (e) => {
    if (e.device_id !== deviceId) return;
    setLiveValues((old) => {
      const next = new Map(old);
      for (const p of e.points) next.set(p.property, { value: p.value, ts: p.ts_ms });
      return next;
    });
    if (e.points.some((p) => !properties.data?.items.some((x) => x.name === p.property))) properties.reload();
  });

  if (isNotFound(device.error)) return <NotFound />;
  if (!device.data) return device.error ? <div className="callout danger">{String((device.error as Error).message)}</div> : <Loading />;
  const d = device.data;
  // `last_seen` is flushed every few seconds; the newest telemetry is fresher.
  const newest = Math.max(
    d.last_seen ? Date.parse(d.last_seen) : 0,
    ...(latest.data?.properties ?? []).map((p) => Date.parse(p.ts)),
    ...[...liveValues.values()].map((v) => (liveValues.size ? Date.now() : v.ts)),
  );
  const lastSeen = newest > 0 ? new Date(newest).toISOString() : null;
  const on = isOnline(lastSeen);

  async function rotate() {
    setConfirmRotate(false);
    try {
      const issued = await unwrap(
        api.POST("/api/v1/factories/{factory_id}/devices/{device_id}/credentials", { params: { path: { factory_id: factory, device_id: deviceId } } }),
      );
      setCredentials(issued);
      device.reload();
    } catch (e) {
      toast.error(e);
    }
  }

  const latestMap = new Map<string, { value: unknown; ts: number }>();
  for (const p of latest.data?.properties ?? []) latestMap.set(p.name, { value: p.value, ts: Date.parse(p.ts) });
  for (const [k, v] of liveValues) latestMap.set(k, v);

  return (
    <>
      <div className="page-head">
        <div>
          <div className="small muted">
            <Link to={`/f/${factory}/devices`}>Devices</Link> / <span className="mono">{d.id}</span>
          </div>
          <h1 data-testid="device-title">{d.name}</h1>
          <div className="row">
            {d.status === "disabled" ? <Badge>disabled</Badge> : <Badge kind={on ? "online" : ""} dot>{on ? "online" : "offline"}</Badge>}
            {d.type && <Badge>{d.type}</Badge>}
            <span className="muted small">last seen {fmtAgo(lastSeen)}</span>
            <Badge kind={d.has_secret ? "ok" : "warning"}>{d.has_secret ? "has MQTT secret" : "no MQTT secret yet"}</Badge>
          </div>
        </div>
        <div className="actions">
          {can("devices:write") && (
            <>
              <button onClick={() => setEditing(true)} data-testid="edit-device">
                Edit
              </button>
              <button className="primary" onClick={() => (d.has_secret ? setConfirmRotate(true) : void rotate())} data-testid="rotate-secret">
                {d.has_secret ? "Rotate secret" : "Issue MQTT secret"}
              </button>
            </>
          )}
        </div>
      </div>

      <div className="grid side">
        <DeviceChart deviceId={deviceId} properties={properties.data?.items ?? []} />
        <div className="card">
          <h2>Details</h2>
          <dl className="stack small" style={{ margin: 0 }}>
            <div>
              <dt className="muted">Location</dt>
              <dd style={{ margin: 0 }}>{d.location || "—"}</dd>
            </div>
            <div>
              <dt className="muted">Registered</dt>
              <dd style={{ margin: 0 }}>{fmtTime(d.created_at)}</dd>
            </div>
            <div>
              <dt className="muted">MQTT username</dt>
              <dd style={{ margin: 0 }} className="mono">
                {factory}/{d.id}
              </dd>
            </div>
            <div>
              <dt className="muted">Topic</dt>
              <dd style={{ margin: 0 }} className="mono">
                factories/{factory}/devices/{d.id}/telemetry
              </dd>
            </div>
            <div>
              <dt className="muted">Metadata</dt>
              <dd style={{ margin: 0 }}>
                <pre className="code">{JSON.stringify(d.metadata ?? {}, null, 2)}</pre>
              </dd>
            </div>
          </dl>
        </div>
      </div>

      <div className="grid cols-2" style={{ marginTop: "1rem" }}>
        <PropertiesCard items={properties.data?.items ?? []} loading={properties.loading && !properties.data} latest={latestMap} onSaved={properties.reload} />
        <div className="card">
          <h2>Last payload errors</h2>
          {errors.loading && !errors.data ? (
            <Loading />
          ) : (errors.data?.items ?? []).length === 0 ? (
            <Empty icon="✓" title="No rejected payloads">
              Messages or properties the server rejects show up here with the reason.
            </Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th>When</th>
                    <th>Reason</th>
                    <th>Property</th>
                    <th>Detail</th>
                  </tr>
                </thead>
                <tbody>
                  {errors.data!.items.map((e, i) => (
                    <tr key={i}>
                      <td className="small">{fmtTime(e.at)}</td>
                      <td>
                        <Badge kind="warning">{e.reason}</Badge>
                      </td>
                      <td className="mono">{e.property ?? "—"}</td>
                      <td className="small">{e.detail}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </div>
      </div>

      <StatesCard deviceId={deviceId} properties={properties.data?.items ?? []} />
      <EnergyConfigCard deviceId={deviceId} properties={properties.data?.items ?? []} />

      {editing && (
        <DeviceForm
          device={d}
          onClose={() => setEditing(false)}
          onSaved={(saved) => {
            setEditing(false);
            device.setData(saved);
            toast.show("success", "Device saved");
          }}
        />
      )}
      {confirmRotate && (
        <Modal title="Rotate the MQTT secret?" onClose={() => setConfirmRotate(false)}>
          <p>The current secret stops working at once and the device's open connections are closed. The new secret is shown only once.</p>
          <div className="row end">
            <button onClick={() => setConfirmRotate(false)}>Cancel</button>
            <button className="primary" onClick={() => void rotate()} data-testid="confirm-rotate">
              Rotate secret
            </button>
          </div>
        </Modal>
      )}
      {credentials && <CredentialsModal credentials={credentials} onClose={() => setCredentials(null)} />}
    </>
  );
}

function CredentialsModal({ credentials, onClose }: { credentials: DeviceCredentials; onClose: () => void }) {
  const host = window.location.hostname || "localhost";
  const example = `mosquitto_pub -h ${host} -p ${credentials.mqtt.port} -q 1 \\
  -u '${credentials.username}' -P '${credentials.secret}' \\
  -t '${credentials.mqtt.topic}' \\
  -m '{"power_kw": 12.5, "temp_c": 41.2}'`;
  return (
    <Modal title="MQTT credentials" onClose={onClose} wide>
      <div className="callout warn" style={{ marginBottom: "1rem" }}>
        Copy the secret now: it is shown only once. Rotating again issues a new one.
      </div>
      <div className="stack">
        <div>
          <div className="small muted">Username</div>
          <div className="row">
            <code className="secret" style={{ flex: 1 }}>
              {credentials.username}
            </code>
            <CopyButton text={credentials.username} />
          </div>
        </div>
        <div>
          <div className="small muted">Secret</div>
          <div className="row">
            <code className="secret" style={{ flex: 1 }} data-testid="device-secret">
              {credentials.secret}
            </code>
            <CopyButton text={credentials.secret} label="Copy secret" />
          </div>
        </div>
        <div>
          <div className="small muted">
            Broker {host}:{credentials.mqtt.port} · topic <code>{credentials.mqtt.topic}</code> · QoS 0 or 1
          </div>
        </div>
        <div>
          <div className="row small muted" style={{ marginBottom: "0.3rem" }}>
            Example publish
            <span style={{ flex: 1 }} />
            <CopyButton text={example} />
          </div>
          <pre className="code" data-testid="mqtt-example">
            {example}
          </pre>
        </div>
      </div>
      <div className="row end">
        <button className="primary" onClick={onClose}>
          I have stored the secret
        </button>
      </div>
    </Modal>
  );
}

function PropertiesCard({
  items,
  loading,
  latest,
  onSaved,
}: {
  items: SemanticProperty[];
  loading: boolean;
  latest: Map<string, { value: unknown; ts: number }>;
  onSaved: () => void;
}) {
  const { factory, can } = useFactory();
  const toast = useToast();
  const [units, setUnits] = useState<Record<string, string>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [pins, setPins] = useState(() => loadPins(factory));
  const [semantics, setSemantics] = useState<{ p: SemanticProperty; initial?: { quantity: Quantity; unit: string | null } } | null>(null);
  async function saveUnit(p: PropertyView) {
    const unit = units[p.name] ?? p.unit ?? "";
    try {
      await unwrap(
        api.PATCH("/api/v1/factories/{factory_id}/devices/{device_id}/properties/{name}", {
          params: { path: { factory_id: factory, device_id: p.device_id, name: p.name } },
          body: { unit: unit.trim() ? unit.trim() : null },
        }),
      );
      setErrors((e) => ({ ...e, [p.name]: "" }));
      toast.show("success", `Unit of ${p.name} saved`);
      onSaved();
    } catch (e) {
      if (e instanceof ApiError && e.status === 422) setErrors((x) => ({ ...x, [p.name]: e.problem.detail }));
      else toast.error(e);
    }
  }
  const togglePin = (p: PropertyView) => {
    const has = pins.some((x) => x.device === p.device_id && x.property === p.name);
    const next = has ? pins.filter((x) => !(x.device === p.device_id && x.property === p.name)) : [...pins, { device: p.device_id, property: p.name }];
    setPins(next);
    savePins(factory, next);
  };
  return (
    <div className="card">
      <h2>Properties</h2>
      {loading ? (
        <Loading />
      ) : items.length === 0 ? (
        <Empty icon="∿" title="No properties yet">
          Properties are discovered automatically from the first messages the device publishes.
        </Empty>
      ) : (
        <div className="table-wrap">
          <table data-testid="properties-table">
            <thead>
              <tr>
                <th>Property</th>
                <th>Latest</th>
                <th>Unit</th>
                <th>Measures</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {items.map((p) => {
                const l = latest.get(p.name);
                const pinned = pins.some((x) => x.device === p.device_id && x.property === p.name);
                return (
                  <tr key={p.name}>
                    <td>
                      <span className="mono">{p.name}</span>
                      <div className="small muted">{p.value_type}</div>
                    </td>
                    <td className="num">
                      {fmtValue(l?.value, p.unit)}
                      <div className="small muted">{l ? fmtAgo(new Date(l.ts).toISOString()) : ""}</div>
                    </td>
                    <td>
                      {/* States have no unit: no free-text box for them, annotated or discovered. */}
                      {can("devices:write") && !isQuantity((p as SemanticProperty).quantity) && !isStateProperty(p as SemanticProperty) ? (
                        <form
                          className="row"
                          onSubmit={(e) => {
                            e.preventDefault();
                            void saveUnit(p);
                          }}
                        >
                          <input
                            aria-label={`Unit of ${p.name}`}
                            style={{ width: "6rem" }}
                            value={units[p.name] ?? p.unit ?? ""}
                            onChange={(e) => setUnits((u) => ({ ...u, [p.name]: e.target.value }))}
                            aria-invalid={errors[p.name] ? true : undefined}
                            placeholder="e.g. kW"
                          />
                          {(units[p.name] ?? p.unit ?? "") !== (p.unit ?? "") && (
                            <button className="small" type="submit">
                              Save
                            </button>
                          )}
                          {errors[p.name] && <span className="field-error">{errors[p.name]}</span>}
                        </form>
                      ) : (
                        p.unit ?? <span className="muted">—</span>
                      )}
                    </td>
                    <td>
                      {semanticsText(p) ? <span className="small">{semanticsText(p)}</span> : <span className="muted small">not annotated</span>}
                      {can("devices:write") && (
                        <div className="row" style={{ marginTop: "0.2rem" }}>
                          <button className="ghost small" onClick={() => setSemantics({ p })} aria-label={`Semantics of ${p.name}`}>
                            {semanticsText(p) ? "Change" : "Annotate"}
                          </button>
                          <SuggestionButton p={p} onApplied={onSaved} onOpen={(quantity, unit) => setSemantics({ p, initial: { quantity, unit } })} />
                        </div>
                      )}
                    </td>
                    <td className="right">
                      <button className="ghost small" onClick={() => togglePin(p)} aria-pressed={pinned} title="Pin to dashboard">
                        {pinned ? "★ Pinned" : "Pin"}
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {semantics && (
        <SemanticsDialog
          p={semantics.p}
          {...(semantics.initial ? { initial: semantics.initial } : {})}
          onClose={() => setSemantics(null)}
          onSaved={() => {
            setSemantics(null);
            onSaved();
          }}
        />
      )}
    </div>
  );
}

function DeviceChart({ deviceId, properties }: { deviceId: string; properties: PropertyView[] }) {
  const { factory } = useFactory();
  const toast = useToast();
  const numericProps = properties.filter((p) => p.value_type === "number" || p.value_type === "boolean");
  const [chosen, setChosen] = useState<string[]>([]);
  const [win, setWin] = useState<TimeWindow>({ range: "15m", agg: "auto" });
  const [series, setSeries] = useState<Map<string, Point[]>>(new Map());
  const [loading, setLoading] = useState(false);
  const [nowTick, setNowTick] = useState(Date.now());

  // Default: the first two properties.
  useEffect(() => {
    if (chosen.length === 0 && numericProps.length > 0) setChosen(numericProps.slice(0, 2).map((p) => p.name));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [numericProps.length]);

  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    Promise.all(chosen.map((p) => loadSeries(factory, deviceId, p, win, controller.signal).then((r) => [p, r.points] as const)))
      .then((rows) => !controller.signal.aborted && setSeries(new Map(rows)))
      .catch((e: unknown) => !controller.signal.aborted && toast.error(e))
      .finally(() => !controller.signal.aborted && setLoading(false));
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [factory, deviceId, chosen.join(","), win.range, win.from, win.to, win.agg]);

  const [from, to] = resolveWindow(win, nowTick);
  const live = win.range !== "custom" && aggregation(win, to - from) === null;
  // Keep the window sliding for "last …" ranges.
  useEffect(() => {
    if (win.range === "custom") return;
    const t = setInterval(() => setNowTick(Date.now()), 5000);
    return () => clearInterval(t);
  }, [win.range]);

  useStreamEvent<TelemetryEvent>("telemetry", (e) => {
    if (!live || e.device_id !== deviceId) return;
    setSeries((old) => {
      const next = new Map(old);
      for (const p of e.points) {
        if (!chosen.includes(p.property)) continue;
        next.set(p.property, [...(next.get(p.property) ?? []), [p.ts_ms, numeric(p.value)]]);
      }
      return next;
    });
    setNowTick(Date.now());
  });

  const data: SeriesData[] = useMemo(
    () => chosen.map((name) => ({ label: name, unit: properties.find((p) => p.name === name)?.unit ?? null, points: series.get(name) ?? [] })),
    [chosen, series, properties],
  );
  const range = useMemo<[number, number]>(() => [from, to], [from, to]);
  const total = data.reduce((n, s) => n + s.points.length, 0);

  return (
    <div className="card">
      <div className="row" style={{ marginBottom: "0.5rem" }}>
        <h2 style={{ margin: 0 }}>Telemetry</h2>
        {live && (
          <Badge kind="ok" dot>
            live
          </Badge>
        )}
        {loading && <span className="spinner" aria-label="Loading" />}
      </div>
      <RangePicker value={win} onChange={setWin} />
      {numericProps.length > 0 && (
        <div className="row" style={{ margin: "0.6rem 0" }} role="group" aria-label="Properties to chart">
          {numericProps.map((p) => (
            <label key={p.name} className="check">
              <input
                type="checkbox"
                checked={chosen.includes(p.name)}
                onChange={(e) => setChosen((c) => (e.target.checked ? [...c, p.name] : c.filter((x) => x !== p.name)))}
              />
              <span className="mono">{p.name}</span>
            </label>
          ))}
        </div>
      )}
      {numericProps.length === 0 ? (
        <Empty icon="∿" title="No data yet">
          The chart appears once the device has published.
        </Empty>
      ) : (
        <>
          <TimeChart series={data} range={range} testId="device-chart" height={280} />
          {total === 0 && !loading && <div className="muted small">No points in this range.</div>}
        </>
      )}
    </div>
  );
}
