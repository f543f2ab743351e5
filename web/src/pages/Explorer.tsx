import { useEffect, useMemo, useState } from "react";
import { api, unwrap } from "../api/client";
import type { PropertyView } from "../api/types";
import { toCsv, type Point, type SeriesData } from "../chart/align";
import { RangePicker } from "../chart/RangePicker";
import { loadSeries, resolveWindow, type TimeWindow } from "../chart/range";
import { TimeChart } from "../chart/TimeChart";
import { useFactory } from "../factory";
import { Empty, Loading, useAsync } from "../ui/common";
import { useToast } from "../ui/toast";

interface Pick {
  device: string;
  property: string;
}
const keyOf = (p: Pick) => `${p.device} · ${p.property}`;

/** Every property of the factory (the catalogue, paginated). */
async function loadCatalogue(factory: string, signal: AbortSignal): Promise<PropertyView[]> {
  const all: PropertyView[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 50; i++) {
    const page = await unwrap(
      api.GET("/api/v1/factories/{factory_id}/properties", { params: { path: { factory_id: factory }, query: { limit: 1000, ...(cursor ? { cursor } : {}) } }, signal }),
    );
    all.push(...page.items);
    cursor = page.next_cursor ?? undefined;
    if (!cursor) break;
  }
  return all;
}

export function Explorer() {
  const { factory } = useFactory();
  const toast = useToast();
  const catalogue = useAsync((signal) => loadCatalogue(factory, signal), [factory]);
  const [device, setDevice] = useState("");
  const [property, setProperty] = useState("");
  const [picks, setPicks] = useState<Pick[]>([]);
  const [win, setWin] = useState<TimeWindow>({ range: "24h", agg: "auto" });
  const [data, setData] = useState<Map<string, Point[]>>(new Map());
  const [loading, setLoading] = useState(false);

  const items = catalogue.data ?? [];
  const devices = useMemo(() => [...new Set(items.map((p) => p.device_id))].sort(), [items]);
  const props = useMemo(() => items.filter((p) => p.device_id === device && p.value_type !== "string"), [items, device]);
  useEffect(() => {
    if (!device && devices.length) setDevice(devices[0]!);
  }, [devices, device]);
  useEffect(() => {
    if (props.length && !props.some((p) => p.name === property)) setProperty(props[0]!.name);
  }, [props, property]);

  useEffect(() => {
    const controller = new AbortController();
    if (picks.length === 0) {
      setData(new Map());
      return;
    }
    setLoading(true);
    Promise.all(picks.map((p) => loadSeries(factory, p.device, p.property, win, controller.signal).then((r) => [keyOf(p), r.points] as const)))
      .then((rows) => !controller.signal.aborted && setData(new Map(rows)))
      .catch((e: unknown) => !controller.signal.aborted && toast.error(e))
      .finally(() => !controller.signal.aborted && setLoading(false));
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [factory, picks, win.range, win.from, win.to, win.agg]);

  const series: SeriesData[] = useMemo(
    () =>
      picks.map((p) => ({
        label: keyOf(p),
        unit: items.find((x) => x.device_id === p.device && x.name === p.property)?.unit ?? null,
        points: data.get(keyOf(p)) ?? [],
      })),
    [picks, data, items],
  );
  const range = useMemo(() => resolveWindow(win), [win, data]); // eslint-disable-line react-hooks/exhaustive-deps

  function exportCsv() {
    const blob = new Blob([toCsv(series)], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${factory}-telemetry-${new Date().toISOString().slice(0, 19).replace(/:/g, "")}.csv`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  return (
    <>
      <div className="page-head">
        <div>
          <h1>Explorer</h1>
          <div className="sub">Chart properties of several devices together and export them as CSV.</div>
        </div>
        <div className="actions">
          <button onClick={exportCsv} disabled={series.every((s) => s.points.length === 0)} data-testid="export-csv">
            ⤓ Export CSV
          </button>
        </div>
      </div>
      <div className="card">
        {catalogue.loading && !catalogue.data ? (
          <Loading />
        ) : items.length === 0 ? (
          <Empty icon="∿" title="No properties yet">
            Properties appear when devices publish telemetry.
          </Empty>
        ) : (
          <div className="stack">
            <form
              className="row"
              onSubmit={(e) => {
                e.preventDefault();
                if (device && property && !picks.some((p) => p.device === device && p.property === property)) setPicks([...picks, { device, property }]);
              }}
            >
              <label className="row small">
                <span className="muted">Device</span>
                <select value={device} onChange={(e) => setDevice(e.target.value)} aria-label="Device">
                  {devices.map((d) => (
                    <option key={d}>{d}</option>
                  ))}
                </select>
              </label>
              <label className="row small">
                <span className="muted">Property</span>
                <select value={property} onChange={(e) => setProperty(e.target.value)} aria-label="Property">
                  {props.map((p) => (
                    <option key={p.name} value={p.name}>
                      {p.name}
                      {p.unit ? ` (${p.unit})` : ""}
                    </option>
                  ))}
                </select>
              </label>
              <button type="submit" className="primary" disabled={!device || !property}>
                + Add to chart
              </button>
            </form>
            {picks.length > 0 && (
              <div className="row">
                {picks.map((p) => (
                  <span key={keyOf(p)} className="badge">
                    {keyOf(p)}
                    <button className="ghost small" style={{ padding: 0 }} aria-label={`Remove ${keyOf(p)}`} onClick={() => setPicks(picks.filter((x) => x !== p))}>
                      ✕
                    </button>
                  </span>
                ))}
              </div>
            )}
            <RangePicker value={win} onChange={setWin} />
            {picks.length === 0 ? (
              <Empty icon="∿" title="Pick properties to compare">
                Add a property of any device; add more to overlay them.
              </Empty>
            ) : (
              <>
                {loading && <Loading label="Loading series…" />}
                <TimeChart series={series} range={range} height={380} testId="explorer-chart" />
              </>
            )}
          </div>
        )}
      </div>
    </>
  );
}
