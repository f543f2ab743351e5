import { useMemo, useState } from "react";
import { Link } from "react-router-dom";
import { BarChart } from "../chart/BarChart";
import { PALETTE } from "../chart/TimeChart";
import { getConsumption, getPeakDemand, getRanking, listGroups, type Charges, type Group, type Target } from "../energy/api";
import {
  BUCKETS,
  OTHER,
  PERIODS,
  bucketLabel,
  defaultBucket,
  flattenTree,
  fmtDuration,
  fmtMoney,
  fmtNumber,
  fmtZoned,
  localDateString,
  periodRange,
  stackByDevice,
  totalsOf,
  type Bucket,
  type PeriodKey,
} from "../energy/shape";
import { useFactory } from "../factory";
import { describe } from "../api/problem";
import { Empty, Loading, SelectField, useAsync } from "../ui/common";
import { loadAllDevices } from "./data";
import { BaselinesCard } from "./Baselines";

/** `d:<device>` or `g:<group>`. */
function parseTarget(value: string): Target | null {
  if (value.startsWith("d:")) return { device_id: value.slice(2) };
  if (value.startsWith("g:")) return { group_id: value.slice(2) };
  return null;
}

export function Energy() {
  const { factory, timezone } = useFactory();
  const devices = useAsync((signal) => loadAllDevices(factory, {}, signal), [factory]);
  const groups = useAsync(() => listGroups(factory).catch(() => [] as Group[]), [factory]);
  const [chosen, setChosen] = useState<string>("");
  const [period, setPeriod] = useState<PeriodKey>("today");
  const [bucket, setBucket] = useState<Bucket>("hour");
  const [now, setNow] = useState(() => Date.now());
  const [custom, setCustom] = useState(() => ({ from: localDateString(Date.now() - 6 * 86_400_000, timezone), to: localDateString(Date.now(), timezone) }));

  const tree = useMemo(() => flattenTree(groups.data ?? []), [groups.data]);
  const tags = (groups.data ?? []).filter((g) => g.kind === "tag");
  // The whole factory by default: the first root of the hierarchy, else the first device.
  const fallback = tree[0] ? `g:${tree[0].group.id}` : devices.data?.[0] ? `d:${devices.data[0].id}` : "";
  const targetValue = chosen || fallback;
  const target = parseTarget(targetValue);
  const [from, to] = periodRange(period, timezone, now, custom);
  const names = useMemo(() => new Map((devices.data ?? []).map((d) => [d.id, d.name])), [devices.data]);
  const label = (id: string) => (id === OTHER ? "other (not split by device)" : names.get(id) && names.get(id) !== id ? `${names.get(id)} (${id})` : id);

  const consumption = useAsync(
    async () => (target ? getConsumption(factory, target, from, to, bucket) : null),
    [factory, targetValue, from, to, bucket],
  );
  const [peakPeriod, setPeakPeriod] = useState<"day" | "month">("day");
  const [interval, setDemandInterval] = useState(15);
  const peak = useAsync(async () => (target ? getPeakDemand(factory, target, from, to, interval, peakPeriod) : null), [factory, targetValue, from, to, interval, peakPeriod]);

  const stacked = useMemo(() => stackByDevice(consumption.data?.items ?? []), [consumption.data]);
  const totals = consumption.data ? totalsOf(consumption.data) : null;
  const currency = consumption.data?.currency ?? null;
  const loadingAny = consumption.loading || peak.loading;

  return (
    <>
      <div className="page-head">
        <div>
          <h1>Energy</h1>
          <div className="sub">Consumption, cost, CO₂, idle energy and peak demand in the factory's time zone ({timezone}).</div>
        </div>
        <div className="actions">
          {loadingAny && <span className="spinner" aria-label="Loading" />}
          <button onClick={() => setNow(Date.now())} data-testid="energy-refresh">
            Refresh
          </button>
        </div>
      </div>

      <div className="card" style={{ marginBottom: "1rem" }}>
        <div className="row" style={{ alignItems: "flex-end", gap: "1rem" }}>
          <SelectField label="Device or group" value={targetValue} onChange={(e) => setChosen(e.target.value)} data-testid="energy-target">
            {!targetValue && <option value="">No devices yet</option>}
            {tree.length > 0 && (
              <optgroup label="Hierarchy">
                {tree.map(({ group, depth }) => (
                  <option key={group.id} value={`g:${group.id}`}>
                    {"\u00a0\u00a0".repeat(depth)}
                    {group.name}
                  </option>
                ))}
              </optgroup>
            )}
            {tags.length > 0 && (
              <optgroup label="Tags">
                {tags.map((g) => (
                  <option key={g.id} value={`g:${g.id}`}>
                    #{g.name}
                  </option>
                ))}
              </optgroup>
            )}
            {(devices.data ?? []).length > 0 && (
              <optgroup label="Devices">
                {(devices.data ?? []).map((d) => (
                  <option key={d.id} value={`d:${d.id}`}>
                    {d.name !== d.id ? `${d.name} (${d.id})` : d.id}
                  </option>
                ))}
              </optgroup>
            )}
          </SelectField>
          <div className="field">
            <label>Period</label>
            <div className="segmented" role="group" aria-label="Period">
              {PERIODS.map((p) => (
                <button
                  key={p.key}
                  type="button"
                  aria-pressed={period === p.key}
                  onClick={() => {
                    setPeriod(p.key);
                    setBucket(defaultBucket(p.key));
                    setNow(Date.now());
                  }}
                >
                  {p.label}
                </button>
              ))}
            </div>
          </div>
          {period === "custom" && (
            <>
              <div className="field">
                <label htmlFor="energy-from">From</label>
                <input id="energy-from" type="date" value={custom.from} onChange={(e) => e.target.value && setCustom((c) => ({ ...c, from: e.target.value }))} />
              </div>
              <div className="field">
                <label htmlFor="energy-to">To (inclusive)</label>
                <input id="energy-to" type="date" value={custom.to} onChange={(e) => e.target.value && setCustom((c) => ({ ...c, to: e.target.value }))} />
              </div>
            </>
          )}
          <SelectField label="Bucket" value={bucket} onChange={(e) => setBucket(e.target.value as Bucket)} data-testid="energy-bucket">
            {BUCKETS.map((b) => (
              <option key={b} value={b}>
                {b}
              </option>
            ))}
          </SelectField>
        </div>
        <div className="small muted" style={{ marginTop: "0.5rem" }} data-testid="energy-range" data-from={from} data-to={to} data-target={targetValue} data-bucket={bucket}>
          {fmtZoned(from, timezone)} → {fmtZoned(to, timezone)}
        </div>
      </div>

      {!target ? (
        <Empty icon="ϟ" title="Nothing to show yet">
          Register devices (and annotate a power or energy property on the device page) to see their energy here.
        </Empty>
      ) : consumption.error ? (
        <div className="callout danger" data-testid="energy-error">
          {describe(consumption.error)}
        </div>
      ) : !consumption.data ? (
        <Loading />
      ) : (
        <>
          {(consumption.data.devices_without_source ?? []).length > 0 && (
            <div className="callout warn small" style={{ marginBottom: "1rem" }} data-testid="energy-without-source">
              No energy source on {(consumption.data.devices_without_source ?? []).map(label).join(", ")}: they count 0 kWh here. Annotate a power, energy counter or pulse counter
              property on the device page.
            </div>
          )}
          <div className="grid cols-4" data-testid="energy-totals">
            <div className="card stat">
              <span className="label">Energy</span>
              <span className="value num" data-testid="total-kwh" data-value={totals?.kwh}>
                {fmtNumber(totals?.kwh)} <small>{consumption.data.unit}</small>
              </span>
              <span className="hint">{consumption.data.items.length} buckets of one {bucket}</span>
            </div>
            <div className="card stat">
              <span className="label">Cost</span>
              <span className="value num" data-testid="total-cost" data-value={totals?.cost ?? ""}>
                {fmtMoney(totals?.cost, currency)}
              </span>
              <span className="hint" data-testid="bill-total" data-value={consumption.data.charges?.total ?? ""}>
                {totals?.cost === null || totals?.cost === undefined ? (
                  <Link to={`/f/${factory}/settings/tariff`}>No tariff in force — set one</Link>
                ) : consumption.data.charges && consumption.data.charges.total !== consumption.data.charges.energy_cost ? (
                  `energy only; with demand charges and fixed fees ${fmtMoney(consumption.data.charges.total, currency)}`
                ) : (
                  "energy at the tariff in force"
                )}
              </span>
            </div>
            <div className="card stat">
              <span className="label">CO₂e</span>
              <span className="value num" data-testid="total-co2" data-value={totals?.co2Kg ?? ""}>
                {fmtNumber(totals?.co2Kg)} <small>kg</small>
              </span>
              <span className="hint">{totals?.co2Kg === null ? <Link to={`/f/${factory}/settings/emission`}>No emission factor — set one</Link> : "grid emission factor"}</span>
            </div>
            <div className="card stat">
              <span className="label">Idle energy</span>
              <span className="value num" data-testid="total-idle" data-value={totals?.idleKwh}>
                {fmtNumber(totals?.idleKwh)} <small>{consumption.data.unit}</small>
              </span>
              <span className="hint" data-testid="idle-share">
                {totals?.idleShare === null || totals?.idleShare === undefined ? "no energy in this period" : `${fmtNumber(totals.idleShare * 100, 1)} % of the energy`}
              </span>
            </div>
          </div>

          <div className="card" style={{ marginTop: "1rem" }}>
            <h2>Consumption by device</h2>
            {stacked.starts.length === 0 ? (
              <Empty icon="ϟ" title="No buckets in this period" />
            ) : (
              <BarChart
                testId="energy-bars"
                unit={consumption.data.unit}
                labels={stacked.starts.map((s, i) => (bucket === "shift" && consumption.data?.items[i]?.shift ? `${consumption.data.items[i]?.shift}` : bucketLabel(s, bucket, timezone)))}
                titles={stacked.starts.map((s, i) => `${fmtZoned(s, timezone)} – ${fmtZoned(stacked.ends[i] ?? s, timezone)}`)}
                series={stacked.series.map((name, i) => ({ name: label(name), values: stacked.values[i] ?? [], color: name === OTHER ? "#94a3b8" : PALETTE[i % PALETTE.length]! }))}
              />
            )}
            {consumption.data.charges && <BillTable charges={consumption.data.charges} currency={currency} />}
            <details style={{ marginTop: "0.5rem" }}>
              <summary className="small muted">Table</summary>
              <div className="table-wrap">
                <table data-testid="energy-table">
                  <thead>
                    <tr>
                      <th>Start</th>
                      <th className="right">kWh</th>
                      <th className="right">Cost</th>
                      <th className="right">CO₂e kg</th>
                      <th className="right">Idle kWh</th>
                    </tr>
                  </thead>
                  <tbody>
                    {consumption.data.items.map((i) => (
                      <tr key={i.start}>
                        <td className="small">
                          {fmtZoned(i.start, timezone)}
                          {i.shift ? ` · ${i.shift}` : ""}
                        </td>
                        <td className="num right">{fmtNumber(i.kwh, 3)}</td>
                        <td className="num right">{fmtMoney(i.cost, currency)}</td>
                        <td className="num right">{fmtNumber(i.co2_kg, 3)}</td>
                        <td className="num right">{fmtNumber(i.idle_kwh, 3)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            </details>
          </div>

          <div className="grid cols-2" style={{ marginTop: "1rem" }}>
            <div className="card">
              <h2>Data gaps</h2>
              {consumption.data.gaps.length === 0 ? (
                <Empty icon="✓" title="No gaps" testId="energy-no-gaps">
                  Every device reported often enough: nothing was estimated or left out.
                </Empty>
              ) : (
                <>
                  <div className="callout warn small" style={{ marginBottom: "0.5rem" }} data-testid="energy-gaps-note">
                    {consumption.data.gaps.length} gap{consumption.data.gaps.length === 1 ? "" : "s"} (
                    {fmtDuration(consumption.data.gaps.reduce((s, g) => s + Date.parse(g.to) - Date.parse(g.from), 0))} in all): power is not bridged across a gap, so the energy above
                    leaves it out; counter energy across a gap is counted but its time split is estimated.
                  </div>
                  <div className="table-wrap">
                    <table data-testid="energy-gaps">
                      <thead>
                        <tr>
                          <th>Device</th>
                          <th>From</th>
                          <th>To</th>
                          <th className="right">Duration</th>
                        </tr>
                      </thead>
                      <tbody>
                        {consumption.data.gaps.map((g) => (
                          <tr key={`${g.device_id}-${g.from}`}>
                            <td>
                              <Link to={`/f/${factory}/devices/${g.device_id}`}>{label(g.device_id)}</Link>
                            </td>
                            <td className="small">{fmtZoned(g.from, timezone)}</td>
                            <td className="small">{fmtZoned(g.to, timezone)}</td>
                            <td className="num right">{fmtDuration(Date.parse(g.to) - Date.parse(g.from))}</td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                </>
              )}
            </div>
            <div className="card">
              <div className="row" style={{ marginBottom: "0.5rem" }}>
                <h2 style={{ margin: 0 }}>Peak demand</h2>
                <span style={{ flex: 1 }} />
                <select aria-label="Peak per" value={peakPeriod} onChange={(e) => setPeakPeriod(e.target.value as "day" | "month")}>
                  <option value="day">per day</option>
                  <option value="month">per month</option>
                </select>
                <select aria-label="Demand interval" value={interval} onChange={(e) => setDemandInterval(Number(e.target.value))}>
                  {[15, 30, 45, 60].map((m) => (
                    <option key={m} value={m}>
                      {m} min
                    </option>
                  ))}
                </select>
              </div>
              {peak.error ? (
                <div className="callout danger">{describe(peak.error)}</div>
              ) : !peak.data ? (
                <Loading />
              ) : peak.data.items.length === 0 ? (
                <Empty icon="▲" title="No demand in this period" />
              ) : (
                <div className="table-wrap">
                  <table data-testid="peak-table">
                    <thead>
                      <tr>
                        <th>Period</th>
                        <th className="right">Peak kW</th>
                        <th>When</th>
                        <th>Contributing devices</th>
                      </tr>
                    </thead>
                    <tbody>
                      {peak.data.items.map((p) => (
                        <tr key={p.period_start}>
                          <td className="small">{bucketLabel(Date.parse(p.period_start), peakPeriod, timezone)}</td>
                          <td className="num right" data-testid="peak-kw" data-value={p.kw}>
                            {fmtNumber(p.kw, 2)}
                          </td>
                          <td className="small">{fmtZoned(p.at, timezone)}</td>
                          <td className="small">
                            {p.top_devices.map((d) => (
                              <div key={d.device_id}>
                                {label(d.device_id)} <span className="muted num">{fmtNumber(d.kw, 2)} kW</span>
                              </div>
                            ))}
                          </td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                  <div className="small muted">Highest {peak.data.interval_minutes ?? interval}-minute average power per {peakPeriod}, intervals aligned to the factory's clock.</div>
                </div>
              )}
            </div>
          </div>
        </>
      )}
      {target && <BaselinesCard target={target} from={from} to={to} label={label} />}
      <RankingCard types={[...new Set((devices.data ?? []).map((d) => d.type).filter((t): t is string => !!t))].sort()} from={from} to={to} label={label} />
    </>
  );
}

function RankingCard({ types, from, to, label }: { types: string[]; from: number; to: number; label: (id: string) => string }) {
  const { factory } = useFactory();
  const [type, setType] = useState("");
  const chosen = type || types[0] || "";
  const ranking = useAsync(async () => (chosen ? getRanking(factory, chosen, from, to) : null), [factory, chosen, from, to]);
  const items = (ranking.data?.items ?? []).filter((i) => i.kwh_per_unit !== null && i.units > 0);
  if (types.length === 0) return null;
  return (
    <div className="card" style={{ marginTop: "1rem" }}>
      <div className="row">
        <h2 style={{ margin: 0 }}>Specific energy ranking</h2>
        <span style={{ flex: 1 }} />
        <label className="row small">
          <span className="muted">Device type</span>
          <select value={chosen} onChange={(e) => setType(e.target.value)} aria-label="Device type">
            {types.map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
        </label>
      </div>
      {ranking.error ? (
        <div className="callout danger">{describe(ranking.error)}</div>
      ) : !ranking.data ? (
        <Loading />
      ) : items.length === 0 ? (
        <Empty icon="⚖" title="No production data for this type">
          Annotate a production count property on the devices of type “{chosen}” to compare their energy per unit.
        </Empty>
      ) : (
        <div className="table-wrap">
          <table data-testid="ranking-table">
            <thead>
              <tr>
                <th>#</th>
                <th>Device</th>
                <th className="right">kWh</th>
                <th className="right">Units</th>
                <th className="right">kWh per unit</th>
              </tr>
            </thead>
            <tbody>
              {items.map((i, n) => (
                <tr key={i.device_id}>
                  <td>{i.rank ?? n + 1}</td>
                  <td>{label(i.device_id)}</td>
                  <td className="num right">{fmtNumber(i.kwh, 3)}</td>
                  <td className="num right">{fmtNumber(i.units, 0)}</td>
                  <td className="num right">{fmtNumber(i.kwh_per_unit, 4)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

function BillTable({ charges, currency }: { charges: Charges; currency: string | null }) {
  const { timezone } = useFactory();
  return (
    <div className="table-wrap" style={{ marginTop: "0.75rem" }}>
      <table data-testid="energy-bill">
        <thead>
          <tr>
            <th>Bill of the period</th>
            <th className="right">Amount</th>
          </tr>
        </thead>
        <tbody>
          <tr>
            <td>Energy</td>
            <td className="num right">{fmtMoney(charges.energy_cost, currency)}</td>
          </tr>
          {charges.demand.map((d) => (
            <tr key={d.period_start}>
              <td>
                Demand charge {bucketLabel(Date.parse(d.period_start), Date.parse(d.period_end) - Date.parse(d.period_start) > 2 * 86_400_000 ? "month" : "day", timezone)} · basis {fmtNumber(d.basis_kw, 2)} kW
              </td>
              <td className="num right">{fmtMoney(d.charge, currency)}</td>
            </tr>
          ))}
          {charges.fixed > 0 && (
            <tr>
              <td>Fixed fees</td>
              <td className="num right">{fmtMoney(charges.fixed, currency)}</td>
            </tr>
          )}
          <tr>
            <td>
              <strong>Total</strong>
            </td>
            <td className="num right">
              <strong>{fmtMoney(charges.total, currency)}</strong>
            </td>
          </tr>
        </tbody>
      </table>
    </div>
  );
}
