import { Link } from "react-router-dom";
import { getConsumption, getPeakDemand } from "../energy/api";
import { fmtMoney, fmtNumber, fmtZoned, periodRange, totalsOf } from "../energy/shape";
import { useFactory } from "../factory";
import { ApiError, describe } from "../api/problem";
import { useAsync } from "../ui/common";

const SLOT_MS = 15 * 60_000;

/**
 * The dashboard's energy tiles for the whole factory: the energy queries without a device
 * or group cover every device with an energy source.
 */
export function EnergyTiles() {
  const { factory, timezone } = useFactory();
  const figures = useAsync(async () => {
    const now = Date.now();
    const target = {};
    const [dayFrom, dayTo] = periodRange("today", timezone, now);
    const [monthFrom, monthTo] = periodRange("month", timezone, now);
    // The last complete 15-minute interval: its average power is the current demand.
    const slotEnd = Math.floor(now / SLOT_MS) * SLOT_MS;
    const [today, month, current] = await Promise.all([
      getConsumption(factory, target, dayFrom, dayTo, "day"),
      getPeakDemand(factory, target, monthFrom, monthTo, 15, "month"),
      getPeakDemand(factory, target, slotEnd - SLOT_MS, slotEnd),
    ]);
    const peak = month.items.reduce<(typeof month.items)[number] | null>((best, i) => (!best || i.kw > best.kw ? i : best), null);
    // No device has an annotated power or counter property: nothing to sum yet.
    const sources = today.items.some((i) => (i.by_device?.length ?? 0) > 0);
    return { sources, today: totalsOf(today), currency: today.currency ?? null, peak, current: current.items[0]?.kw ?? 0 };
  }, [factory, timezone]);
  const link = `/f/${factory}/energy`;
  // A server without the energy routes: no tiles.
  if (figures.error instanceof ApiError && figures.error.status === 404) return null;
  if (figures.error) {
    return (
      <div className="callout warn small" style={{ marginTop: "1rem" }} data-testid="energy-tiles-error">
        Energy: {describe(figures.error)}
      </div>
    );
  }
  const d = figures.data;
  if (d && !d.sources) {
    return (
      <div className="callout small" style={{ marginTop: "1rem" }} data-testid="energy-tiles-empty">
        Energy tiles need a device with an energy source: annotate a power or energy counter property on its <Link to={`/f/${factory}/devices`}>device page</Link>.
      </div>
    );
  }
  const share = d && "peak" in d && d.peak && d.peak.kw > 0 ? Math.min(100, (d.current / d.peak.kw) * 100) : null;
  return (
    <div className="grid cols-3" style={{ marginTop: "1rem" }} data-testid="energy-tiles">
      <div className="card stat">
        <span className="label">Energy today · whole factory</span>
        <span className="value num" data-testid="tile-kwh">
          {d && "today" in d ? fmtNumber(d.today?.kwh) : "…"} <small>kWh</small>
        </span>
        <span className="hint">
          <Link to={link}>Open energy →</Link>
        </span>
      </div>
      <div className="card stat">
        <span className="label">Cost today</span>
        <span className="value num" data-testid="tile-cost">
          {d && "today" in d ? fmtMoney(d.today?.cost, d.currency) : "…"}
        </span>
        <span className="hint">{d && "today" in d && d.today?.cost === null ? <Link to={`/f/${factory}/settings/tariff`}>Set a tariff →</Link> : "at the tariff in force"}</span>
      </div>
      <div className="card stat">
        <span className="label">Demand now vs this month's peak</span>
        <span className="value num" data-testid="tile-demand">
          {d && "current" in d ? fmtNumber(d.current, 1) : "…"} <small>/ {d && "peak" in d ? fmtNumber(d.peak?.kw ?? null, 1) : "…"} kW</small>
        </span>
        <div style={{ height: 6, background: "var(--border)", borderRadius: 3, overflow: "hidden" }} aria-hidden="true">
          <div style={{ width: `${share ?? 0}%`, height: "100%", background: share !== null && share > 90 ? "var(--danger)" : "var(--accent)" }} />
        </div>
        <span className="hint">last 15-min average; peak {d && "peak" in d && d.peak?.at ? fmtZoned(d.peak.at, timezone) : "—"}</span>
      </div>
    </div>
  );
}
