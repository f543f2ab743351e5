// EnPI baselines (ISO 50001 style) on the Energy page: the fitted model of the chosen device
// or group, expected vs actual energy per day and the CUSUM of the reporting period, and a
// form to fit a new baseline (`analytics:run`).
import { useState } from "react";
import { rawJson } from "../api/client";
import { ApiError, describe, fieldErrorMap } from "../api/problem";
import type { Target } from "../energy/api";
import { fmtNumber, localDateString, zonedTime } from "../energy/shape";
import { TimeChart } from "../chart/TimeChart";
import { useFactory } from "../factory";
import { Empty, FieldErrorText, Loading, SelectField, TextField, useAsync } from "../ui/common";
import { Modal } from "../ui/Modal";
import { useToast } from "../ui/toast";

export type DriverBody =
  | { kind: "production"; device_id: string; property: string }
  | { kind: "heating_degree_days" | "cooling_degree_days"; device_id: string; property: string; base_c: number }
  | { kind: "operating_hours" };

export interface Baseline {
  id: string;
  name: string;
  version: number;
  device_id: string | null;
  group_id: string | null;
  drivers: DriverBody[];
  baseline_from: string;
  baseline_to: string;
  model: { intercept: number; coefficients: { driver: string; coefficient: number }[]; r2: number; cv_rmse: number; n: number };
  created_at: string;
  created_by: string;
}

export interface BaselineReport extends Baseline {
  from: string;
  to: string;
  series: { date: string; expected: number; actual: number; savings: number; cusum: number }[];
}

const base = (factory: string) => `/api/v1/factories/${encodeURIComponent(factory)}/energy/baselines`;

const DRIVER_LABELS: Record<DriverBody["kind"], string> = {
  production: "units produced",
  heating_degree_days: "heating degree days",
  cooling_degree_days: "cooling degree days",
  operating_hours: "operating hours",
};

/** Baselines of the Energy page's device or group, over the page's period (local dates). */
export function BaselinesCard({ target, from, to, label }: { target: Target; from: number; to: number; label: (id: string) => string }) {
  const { factory, timezone, can } = useFactory();
  const [chosen, setChosen] = useState("");
  const [creating, setCreating] = useState(false);
  const list = useAsync(async () => (await rawJson<{ items: Baseline[] }>("GET", base(factory))).items, [factory]);
  const mine = (list.data ?? []).filter((b) => ("device_id" in target ? b.device_id === target.device_id : b.group_id === target.group_id));
  const latest = [...mine].sort((a, b) => b.created_at.localeCompare(a.created_at));
  const id = mine.some((b) => b.id === chosen) ? chosen : (latest[0]?.id ?? "");
  const fromDate = localDateString(from, timezone);
  // The period's end is exclusive: the local day it falls in counts only if it has begun.
  const toDate = localDateString(to - 1, timezone);
  const toExclusive = (() => {
    const [y, m, d] = toDate.split("-").map(Number);
    return localDateString(zonedTime(y!, m!, d! + 1, 12, 0, timezone), timezone);
  })();
  const report = useAsync(
    async () => (id ? rawJson<BaselineReport>("GET", `${base(factory)}/${encodeURIComponent(id)}?from=${fromDate}&to=${toExclusive}`) : null),
    [factory, id, fromDate, toExclusive],
  );
  const r = report.data;
  const day = (date: string) => {
    const [y, m, d] = date.split("-").map(Number);
    return zonedTime(y!, m!, d!, 0, 0, timezone);
  };
  const savings = r ? r.series.reduce((s, p) => s + p.savings, 0) : 0;
  return (
    <div className="card" style={{ marginTop: "1rem" }} data-testid="baselines">
      <div className="row" style={{ marginBottom: "0.5rem" }}>
        <h2 style={{ margin: 0 }}>EnPI baseline</h2>
        <span style={{ flex: 1 }} />
        {mine.length > 0 && (
          <select aria-label="Baseline" value={id} onChange={(e) => setChosen(e.target.value)}>
            {latest.map((b) => (
              <option key={b.id} value={b.id}>
                {b.name} v{b.version} ({b.baseline_from} – {b.baseline_to})
              </option>
            ))}
          </select>
        )}
        {can("analytics:run") && (
          <button className="small" onClick={() => setCreating(true)} data-testid="new-baseline">
            + Fit a baseline
          </button>
        )}
      </div>
      {list.error ? (
        <div className="callout danger">{describe(list.error)}</div>
      ) : !list.data ? (
        <Loading />
      ) : mine.length === 0 ? (
        <Empty icon="∑" title="No baseline for this device or group">
          Fit daily energy against its drivers (production, degree days, operating hours) over a reference period; then see expected vs actual and the CUSUM of savings.
        </Empty>
      ) : report.error ? (
        <div className="callout danger">{describe(report.error)}</div>
      ) : !r ? (
        <Loading />
      ) : (
        <>
          <dl className="kv" data-testid="baseline-model">
            <dt>Model</dt>
            <dd className="mono small">
              kWh/day = {fmtNumber(r.model.intercept, 3)}
              {r.model.coefficients.map((c) => ` ${c.coefficient < 0 ? "−" : "+"} ${fmtNumber(Math.abs(c.coefficient), 4)} × ${c.driver}`).join("")}
            </dd>
            <dt>Fit</dt>
            <dd>
              R² {fmtNumber(r.model.r2, 3)} · CV(RMSE) {fmtNumber(r.model.cv_rmse * 100, 1)} % · {r.model.n} days ({r.baseline_from} – {r.baseline_to})
            </dd>
            <dt>Drivers</dt>
            <dd>{r.drivers.map((d) => DRIVER_LABELS[d.kind] + ("device_id" in d ? ` (${label(d.device_id)} · ${d.property}${"base_c" in d ? `, base ${d.base_c} °C` : ""})` : "")).join("; ") || "none"}</dd>
            <dt>Savings</dt>
            <dd data-testid="baseline-savings">
              {fmtNumber(savings, 2)} kWh over {r.series.length} days ({r.from} – {r.to})
            </dd>
          </dl>
          {r.series.length === 0 ? (
            <div className="muted small">No days of this period are past yet.</div>
          ) : (
            <div className="grid cols-2" style={{ marginTop: "0.75rem" }}>
              <div>
                <h3>Expected vs actual (kWh per day)</h3>
                <TimeChart
                  height={220}
                  testId="baseline-chart"
                  series={[
                    { label: "expected", unit: "kWh", points: r.series.map((p) => [day(p.date), p.expected]) },
                    { label: "actual", unit: "kWh", points: r.series.map((p) => [day(p.date), p.actual]) },
                  ]}
                />
              </div>
              <div>
                <h3>CUSUM (kWh; falling = saving)</h3>
                <TimeChart height={220} testId="cusum-chart" series={[{ label: "CUSUM", unit: "kWh", points: r.series.map((p) => [day(p.date), p.cusum]) }]} />
              </div>
            </div>
          )}
        </>
      )}
      {creating && (
        <BaselineDialog
          target={target}
          onClose={() => setCreating(false)}
          onCreated={(b) => {
            setCreating(false);
            setChosen(b.id);
            list.reload();
          }}
        />
      )}
    </div>
  );
}

function BaselineDialog({ target, onClose, onCreated }: { target: Target; onClose: () => void; onCreated: (b: Baseline) => void }) {
  const { factory, timezone } = useFactory();
  const toast = useToast();
  const today = localDateString(Date.now(), timezone);
  const [name, setName] = useState("");
  const [fromDate, setFromDate] = useState(localDateString(Date.now() - 30 * 86_400_000, timezone));
  const [toDate, setToDate] = useState(today);
  const [drivers, setDrivers] = useState<DriverBody[]>([{ kind: "operating_hours" }]);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | null>(null);
  const set = (i: number, d: DriverBody) => setDrivers(drivers.map((x, j) => (j === i ? d : x)));
  return (
    <Modal title="Fit a baseline" onClose={onClose} wide>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          try {
            const b = await rawJson<Baseline>("POST", base(factory), { name, ...target, drivers, baseline_from: fromDate, baseline_to: toDate });
            toast.show("success", `Baseline ${b.name} v${b.version}: R² ${fmtNumber(b.model.r2, 3)}`);
            onCreated(b);
          } catch (err) {
            if (err instanceof ApiError && err.status === 422 && (err.problem.errors ?? []).length) setErrors(fieldErrorMap(err.problem.errors ?? []));
            setProblem(describe(err));
          }
        }}
      >
        <div className="form-grid">
          <TextField label="Name" value={name} onChange={(e) => setName(e.target.value)} error={errors["name"]} required />
          <TextField label="Baseline from" type="date" value={fromDate} onChange={(e) => setFromDate(e.target.value)} error={errors["baseline_from"]} />
          <TextField label="Baseline to (exclusive)" type="date" value={toDate} onChange={(e) => setToDate(e.target.value)} error={errors["baseline_to"]} />
        </div>
        <h3 style={{ marginTop: "1rem" }}>Drivers</h3>
        {drivers.map((d, i) => (
          <div className="row" key={i} style={{ marginBottom: "0.4rem", alignItems: "flex-end" }}>
            <SelectField
              label={`Driver ${i + 1}`}
              value={d.kind}
              onChange={(e) => {
                const kind = e.target.value as DriverBody["kind"];
                const prev = "device_id" in d ? { device_id: d.device_id, property: d.property } : { device_id: "", property: "" };
                set(i, kind === "operating_hours" ? { kind } : kind === "production" ? { kind, ...prev } : { kind, ...prev, base_c: "base_c" in d ? d.base_c : 15 });
              }}
            >
              {(Object.keys(DRIVER_LABELS) as DriverBody["kind"][]).map((k) => (
                <option key={k} value={k}>
                  {DRIVER_LABELS[k]}
                </option>
              ))}
            </SelectField>
            {"device_id" in d && (
              <>
                <TextField label="Device" value={d.device_id} onChange={(e) => set(i, { ...d, device_id: e.target.value })} error={errors[`drivers[${i}].device_id`]} />
                <TextField label="Property" value={d.property} onChange={(e) => set(i, { ...d, property: e.target.value })} error={errors[`drivers[${i}].property`]} />
              </>
            )}
            {"base_c" in d && <TextField label="Base °C" type="number" step="any" value={String(d.base_c)} onChange={(e) => set(i, { ...d, base_c: Number(e.target.value) })} />}
            <button type="button" className="ghost small" onClick={() => setDrivers(drivers.filter((_, j) => j !== i))}>
              Remove
            </button>
            <FieldErrorText error={errors[`drivers[${i}]`]} />
          </div>
        ))}
        <FieldErrorText error={errors["drivers"]} />
        <button type="button" className="small" onClick={() => setDrivers([...drivers, { kind: "production", device_id: "", property: "" }])}>
          + Add driver
        </button>
        {problem && (
          <div className="callout danger" style={{ marginTop: "0.5rem" }}>
            {problem}
          </div>
        )}
        <div className="row end">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button className="primary" type="submit" data-testid="save-baseline">
            Fit
          </button>
        </div>
      </form>
    </Modal>
  );
}
