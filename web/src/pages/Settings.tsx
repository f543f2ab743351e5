import { useEffect, useMemo, useState, type ReactNode } from "react";
import { Navigate, NavLink, Route, Routes } from "react-router-dom";
import { ApiError, describe, fieldErrorMap } from "../api/problem";
import {
  DAYS,
  createGroup,
  deleteGroup,
  getEmission,
  getShifts,
  getTariff,
  listGroups,
  putEmission,
  putShifts,
  putTariff,
  updateGroup,
  type Day,
  type EmissionFactor,
  type EmissionKind,
  type Group,
  type GroupKind,
  type Shift,
  type ShiftCalendar,
  type Tariff,
  type TariffPeriod,
  type Versioned,
} from "../energy/api";
import { flattenTree, fmtNumber, localDateString, subtree } from "../energy/shape";
import { useFactory } from "../factory";
import { Badge, Empty, FieldErrorText, Loading, SelectField, TextField, useAsync } from "../ui/common";
import { Modal } from "../ui/Modal";
import { useToast } from "../ui/toast";
import { loadAllDevices } from "./data";

/** The factory's energy settings: tariff, shifts, emission factor and device groups. */
export function Settings() {
  const { factory, can } = useFactory();
  const base = `/f/${factory}/settings`;
  return (
    <>
      <div className="page-head">
        <div>
          <h1>Factory settings</h1>
          <div className="sub">
            Tariff, shifts, emission factor and device groups: what the energy figures are computed with.
            {!can("devices:write") && " You can read them; changing them needs devices:write."}
          </div>
        </div>
      </div>
      <nav className="tabs" aria-label="Factory settings">
        <NavLink to={`${base}/tariff`}>Tariff</NavLink>
        <NavLink to={`${base}/shifts`}>Shifts</NavLink>
        <NavLink to={`${base}/emission`}>Emission factor</NavLink>
        <NavLink to={`${base}/groups`}>Groups</NavLink>
      </nav>
      <Routes>
        <Route path="tariff" element={<TariffSettings />} />
        <Route path="shifts" element={<ShiftSettings />} />
        <Route path="emission" element={<EmissionSettings />} />
        <Route path="groups" element={<GroupSettings />} />
        <Route path="*" element={<Navigate to={`${base}/tariff`} replace />} />
      </Routes>
    </>
  );
}

const DAY_LABEL: Record<Day, string> = { mon: "Mo", tue: "Tu", wed: "We", thu: "Th", fri: "Fr", sat: "Sa", sun: "Su" };

function DayPicker({ value, onChange, disabled, label }: { value: Day[]; onChange: (d: Day[]) => void; disabled: boolean; label: string }) {
  return (
    <div className="segmented" role="group" aria-label={label}>
      {DAYS.map((d) => (
        <button
          key={d}
          type="button"
          disabled={disabled}
          aria-pressed={value.includes(d)}
          aria-label={`${label} ${d}`}
          onClick={() => onChange(value.includes(d) ? value.filter((x) => x !== d) : DAYS.filter((x) => x === d || value.includes(x)))}
        >
          {DAY_LABEL[d]}
        </button>
      ))}
    </div>
  );
}

/** Number input text → number, or null when empty. */
const num = (text: string): number | null => (text.trim() === "" ? null : Number(text));
const str = (v: number | null | undefined) => (v === null || v === undefined ? "" : String(v));

/** Save with field errors: a 422's errors by path, anything else as a callout. */
function useSave() {
  const toast = useToast();
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);
  async function run(what: string, fn: () => Promise<unknown>): Promise<boolean> {
    setSaving(true);
    setProblem(null);
    try {
      await fn();
      setErrors({});
      toast.show("success", `${what} saved`);
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 422) {
        const map = fieldErrorMap(e.problem.errors ?? []);
        setErrors(map);
        setProblem(Object.keys(map).length ? null : describe(e));
        if (!Object.keys(map).length) toast.error(e);
      } else {
        setErrors({});
        setProblem(describe(e));
      }
      return false;
    } finally {
      setSaving(false);
    }
  }
  return { errors, problem, saving, run };
}

/** Errors whose path is not shown at a field, so nothing is lost. */
function OtherErrors({ errors, shown }: { errors: Record<string, string>; shown: (path: string) => boolean }) {
  const rest = Object.entries(errors).filter(([k]) => !shown(k));
  if (!rest.length) return null;
  return (
    <div className="callout danger" role="alert">
      {rest.map(([k, v]) => (
        <div key={k}>
          <span className="mono">{k}</span>: {v}
        </div>
      ))}
    </div>
  );
}

function VersionHistory<T extends { valid_from?: string | null }>({
  data,
  summary,
  onEdit,
  testId,
}: {
  data: Versioned<T>;
  summary: (v: T) => ReactNode;
  onEdit?: ((v: T) => void) | undefined;
  testId: string;
}) {
  if (data.versions.length === 0) return null;
  return (
    <div className="card" style={{ marginTop: "1rem" }}>
      <h2>Versions</h2>
      <div className="table-wrap">
        <table data-testid={testId}>
          <thead>
            <tr>
              <th>Valid from</th>
              <th>Summary</th>
              <th />
              <th />
            </tr>
          </thead>
          <tbody>
            {[...data.versions].reverse().map((v, i) => (
              <tr key={`${v.valid_from ?? ""}-${i}`}>
                <td>{v.valid_from ?? "since always"}</td>
                <td className="small">{summary(v)}</td>
                <td>{v === data.current && <Badge kind="ok">in force</Badge>}</td>
                <td className="right">
                  {onEdit && (
                    <button className="ghost small" onClick={() => onEdit(v)}>
                      Start from this
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="small muted">A new version applies from its date on; earlier days keep the figures of the version that was in force then.</div>
    </div>
  );
}

function ValidFrom({ value, onChange, disabled, error }: { value: string; onChange: (v: string) => void; disabled: boolean; error?: string | undefined }) {
  return (
    <TextField
      label="Valid from"
      type="date"
      value={value}
      disabled={disabled}
      onChange={(e) => onChange(e.target.value)}
      error={error}
      help="The local date the new version applies from; empty for the first version (since always)."
      data-testid="valid-from"
    />
  );
}

// --- Tariff -----------------------------------------------------------------------

interface TariffDraft {
  currency: string;
  validFrom: string;
  periods: { days: Day[]; from: string; to: string; price: string; season?: unknown }[];
  demandCharge: string;
  fixed: string;
  holidays: { date: string; as: Day }[];
}

function tariffDraft(t: Tariff | null): TariffDraft {
  return {
    currency: t?.currency ?? "EUR",
    validFrom: "",
    periods: (t?.periods ?? [{ days: [...DAYS], from: "00:00", to: "24:00", price_per_kwh: 0.25 }]).map((p) => ({
      days: p.days,
      from: p.from,
      to: p.to,
      price: String(p.price_per_kwh),
      ...(p.season !== undefined && p.season !== null ? { season: p.season } : {}),
    })),
    demandCharge: str(t?.demand_charge_per_kw),
    fixed: str(t?.fixed_per_month),
    holidays: t?.holidays ?? [],
  };
}

function tariffBody(d: TariffDraft): Tariff {
  const body: Tariff = {
    currency: d.currency.trim(),
    periods: d.periods.map((p) => {
      const period: TariffPeriod = { days: p.days, from: p.from.trim(), to: p.to.trim(), price_per_kwh: num(p.price) ?? Number.NaN };
      if (p.season !== undefined) period.season = p.season;
      return period;
    }),
  };
  if (d.validFrom) body.valid_from = d.validFrom;
  if (num(d.demandCharge) !== null) body.demand_charge_per_kw = num(d.demandCharge);
  if (num(d.fixed) !== null) body.fixed_per_month = num(d.fixed);
  if (d.holidays.length) body.holidays = d.holidays;
  return body;
}

function TariffSettings() {
  const { factory, can, timezone } = useFactory();
  const readOnly = !can("devices:write");
  const today = localDateString(Date.now(), timezone);
  const tariff = useAsync(() => getTariff(factory, today), [factory]);
  const [draft, setDraft] = useState<TariffDraft | null>(null);
  const save = useSave();
  useEffect(() => {
    if (tariff.data && !draft) setDraft(tariffDraft(tariff.data.current));
  }, [tariff.data, draft]);
  if (tariff.error) return <div className="callout danger">{describe(tariff.error)}</div>;
  if (!tariff.data || !draft) return <Loading />;
  const e = save.errors;
  const setPeriod = (i: number, patch: Partial<TariffDraft["periods"][number]>) => setDraft({ ...draft, periods: draft.periods.map((p, j) => (j === i ? { ...p, ...patch } : p)) });
  const shown = (k: string) => ["currency", "valid_from", "demand_charge_per_kw", "fixed_per_month"].includes(k) || /^periods\[\d+\]\.(days|from|to|price_per_kwh)/.test(k) || /^holidays\[\d+\]/.test(k);
  const current = tariff.data.current;
  return (
    <>
      <div className="card" data-testid="tariff-card">
        <div className="row" style={{ marginBottom: "0.5rem" }}>
          <h2 style={{ margin: 0 }}>Time-of-use tariff</h2>
          <span style={{ flex: 1 }} />
          {current ? (
            <span className="small muted" data-testid="tariff-in-force">
              In force: {current.valid_from ? `since ${current.valid_from}` : "since always"} · {current.periods.length} period{current.periods.length === 1 ? "" : "s"} · {current.currency}
            </span>
          ) : (
            <Badge kind="warning">no tariff yet: costs are not computed</Badge>
          )}
        </div>
        <form
          onSubmit={async (ev) => {
            ev.preventDefault();
            if (await save.run("Tariff", () => putTariff(factory, tariffBody(draft)))) {
              tariff.reload();
              setDraft({ ...draft, validFrom: "" });
            }
          }}
        >
          <div className="form-grid">
            <TextField label="Currency" value={draft.currency} disabled={readOnly} maxLength={3} onChange={(ev) => setDraft({ ...draft, currency: ev.target.value.toUpperCase() })} error={e["currency"]} />
            <TextField
              label="Demand charge per kW (monthly peak)"
              type="number"
              step="any"
              min="0"
              value={draft.demandCharge}
              disabled={readOnly}
              onChange={(ev) => setDraft({ ...draft, demandCharge: ev.target.value })}
              error={e["demand_charge_per_kw"]}
            />
            <TextField label="Fixed fee per month" type="number" step="any" min="0" value={draft.fixed} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, fixed: ev.target.value })} error={e["fixed_per_month"]} />
            <ValidFrom value={draft.validFrom} onChange={(v) => setDraft({ ...draft, validFrom: v })} disabled={readOnly} error={e["valid_from"]} />
          </div>
          <h3>Periods</h3>
          <div className="table-wrap">
            <table data-testid="tariff-periods">
              <thead>
                <tr>
                  <th>Days</th>
                  <th>From</th>
                  <th>To</th>
                  <th>Price per kWh</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {draft.periods.map((p, i) => (
                  <tr key={i} data-testid={`tariff-period-${i}`}>
                    <td>
                      <DayPicker value={p.days} onChange={(days) => setPeriod(i, { days })} disabled={readOnly} label={`Period ${i + 1} days`} />
                      <FieldErrorText error={e[`periods[${i}].days`]} />
                      {p.season !== undefined && <div className="small muted">seasonal (kept as set through the API)</div>}
                    </td>
                    <td>
                      <input className="narrow" aria-label={`Period ${i + 1} from`} value={p.from} disabled={readOnly} placeholder="HH:MM" onChange={(ev) => setPeriod(i, { from: ev.target.value })} aria-invalid={e[`periods[${i}].from`] ? true : undefined} />
                      <FieldErrorText error={e[`periods[${i}].from`]} />
                    </td>
                    <td>
                      <input className="narrow" aria-label={`Period ${i + 1} to`} value={p.to} disabled={readOnly} placeholder="HH:MM or 24:00" onChange={(ev) => setPeriod(i, { to: ev.target.value })} aria-invalid={e[`periods[${i}].to`] ? true : undefined} />
                      <FieldErrorText error={e[`periods[${i}].to`]} />
                    </td>
                    <td>
                      <input
                        className="narrow"
                        type="number"
                        step="any"
                        min="0"
                        aria-label={`Period ${i + 1} price per kWh`}
                        value={p.price}
                        disabled={readOnly}
                        onChange={(ev) => setPeriod(i, { price: ev.target.value })}
                        aria-invalid={e[`periods[${i}].price_per_kwh`] ? true : undefined}
                      />
                      <FieldErrorText error={e[`periods[${i}].price_per_kwh`] ?? e[`periods[${i}]`]} />
                    </td>
                    <td className="right">
                      {!readOnly && (
                        <button type="button" className="ghost small" aria-label={`Remove period ${i + 1}`} onClick={() => setDraft({ ...draft, periods: draft.periods.filter((_, j) => j !== i) })}>
                          Remove
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <FieldErrorText error={e["periods"]} />
          {!readOnly && (
            <button type="button" className="small" style={{ marginTop: "0.5rem" }} onClick={() => setDraft({ ...draft, periods: [...draft.periods, { days: ["mon", "tue", "wed", "thu", "fri"], from: "07:00", to: "19:00", price: "" }] })} data-testid="add-period">
              + Add period
            </button>
          )}
          <h3>Holidays</h3>
          {draft.holidays.length === 0 && <div className="small muted">No holidays: every date is priced as its weekday.</div>}
          {draft.holidays.map((h, i) => (
            <div className="row" key={i} style={{ marginBottom: "0.3rem" }}>
              <input type="date" aria-label={`Holiday ${i + 1} date`} value={h.date} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, holidays: draft.holidays.map((x, j) => (j === i ? { ...x, date: ev.target.value } : x)) })} />
              <span className="muted small">priced as</span>
              <select aria-label={`Holiday ${i + 1} priced as`} value={h.as} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, holidays: draft.holidays.map((x, j) => (j === i ? { ...x, as: ev.target.value as Day } : x)) })}>
                {DAYS.map((d) => (
                  <option key={d} value={d}>
                    {d}
                  </option>
                ))}
              </select>
              {!readOnly && (
                <button type="button" className="ghost small" onClick={() => setDraft({ ...draft, holidays: draft.holidays.filter((_, j) => j !== i) })}>
                  Remove
                </button>
              )}
              <FieldErrorText error={e[`holidays[${i}].date`] ?? e[`holidays[${i}]`] ?? e[`holidays[${i}].as`]} />
            </div>
          ))}
          {!readOnly && (
            <button type="button" className="small" onClick={() => setDraft({ ...draft, holidays: [...draft.holidays, { date: today, as: "sun" }] })}>
              + Add holiday
            </button>
          )}
          <div style={{ marginTop: "1rem" }}>
            <OtherErrors errors={e} shown={shown} />
            {save.problem && <div className="callout danger">{save.problem}</div>}
          </div>
          {!readOnly && (
            <div className="row end" style={{ marginTop: "0.75rem" }}>
              <button type="button" onClick={() => setDraft(tariffDraft(tariff.data?.current ?? null))}>
                Reset
              </button>
              <button className="primary" type="submit" disabled={save.saving} data-testid="save-tariff">
                {save.saving ? "Saving…" : "Save as new version"}
              </button>
            </div>
          )}
        </form>
      </div>
      <VersionHistory
        data={tariff.data}
        testId="tariff-versions"
        onEdit={readOnly ? undefined : (v) => setDraft(tariffDraft(v))}
        summary={(v) => (
          <>
            {v.periods.map((p) => `${p.days.join(",")} ${p.from}–${p.to} ${p.price_per_kwh} ${v.currency}/kWh`).join(" · ")}
            {v.demand_charge_per_kw ? ` · demand ${v.demand_charge_per_kw}/kW` : ""}
            {v.fixed_per_month ? ` · fixed ${v.fixed_per_month}/month` : ""}
          </>
        )}
      />
    </>
  );
}

// --- Shifts -----------------------------------------------------------------------

function ShiftSettings() {
  const { factory, can, timezone } = useFactory();
  const readOnly = !can("devices:write");
  const today = localDateString(Date.now(), timezone);
  const shifts = useAsync(() => getShifts(factory, today), [factory]);
  const [draft, setDraft] = useState<{ validFrom: string; shifts: Shift[] } | null>(null);
  const save = useSave();
  useEffect(() => {
    if (shifts.data && !draft) setDraft({ validFrom: "", shifts: shifts.data.current?.shifts ?? [] });
  }, [shifts.data, draft]);
  if (shifts.error) return <div className="callout danger">{describe(shifts.error)}</div>;
  if (!shifts.data || !draft) return <Loading />;
  const e = save.errors;
  const set = (i: number, patch: Partial<Shift>) => setDraft({ ...draft, shifts: draft.shifts.map((s, j) => (j === i ? { ...s, ...patch } : s)) });
  return (
    <>
      <div className="card">
        <h2>Shift calendar</h2>
        <p className="small muted">Shifts may cross midnight (22:00 → 06:00 belongs to the day it starts). Times are on the 15-minute grid, in {timezone}.</p>
        <form
          onSubmit={async (ev) => {
            ev.preventDefault();
            const body: ShiftCalendar = { shifts: draft.shifts, ...(draft.validFrom ? { valid_from: draft.validFrom } : {}) };
            if (await save.run("Shifts", () => putShifts(factory, body))) {
              shifts.reload();
              setDraft({ ...draft, validFrom: "" });
            }
          }}
        >
          <div className="table-wrap">
            <table data-testid="shifts-table">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>From</th>
                  <th>To</th>
                  <th>Days</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {draft.shifts.map((s, i) => (
                  <tr key={i}>
                    <td>
                      <input aria-label={`Shift ${i + 1} name`} value={s.name} disabled={readOnly} onChange={(ev) => set(i, { name: ev.target.value })} />
                      <FieldErrorText error={e[`shifts[${i}].name`] ?? e[`shifts[${i}]`]} />
                    </td>
                    <td>
                      <input className="narrow" aria-label={`Shift ${i + 1} from`} value={s.from} disabled={readOnly} placeholder="HH:MM" onChange={(ev) => set(i, { from: ev.target.value })} />
                      <FieldErrorText error={e[`shifts[${i}].from`]} />
                    </td>
                    <td>
                      <input className="narrow" aria-label={`Shift ${i + 1} to`} value={s.to} disabled={readOnly} placeholder="HH:MM" onChange={(ev) => set(i, { to: ev.target.value })} />
                      <FieldErrorText error={e[`shifts[${i}].to`]} />
                    </td>
                    <td>
                      <DayPicker value={s.days} onChange={(days) => set(i, { days })} disabled={readOnly} label={`Shift ${i + 1} days`} />
                      <FieldErrorText error={e[`shifts[${i}].days`]} />
                    </td>
                    <td className="right">
                      {!readOnly && (
                        <button type="button" className="ghost small" onClick={() => setDraft({ ...draft, shifts: draft.shifts.filter((_, j) => j !== i) })}>
                          Remove
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {draft.shifts.length === 0 && <div className="small muted">No shifts: the shift bucket has nothing to fold into.</div>}
          {!readOnly && (
            <div className="row" style={{ marginTop: "0.5rem" }}>
              <button type="button" className="small" onClick={() => setDraft({ ...draft, shifts: [...draft.shifts, { name: "", from: "06:00", to: "14:00", days: ["mon", "tue", "wed", "thu", "fri"] }] })}>
                + Add shift
              </button>
              {draft.shifts.length === 0 && (
                <button
                  type="button"
                  className="small"
                  onClick={() =>
                    setDraft({
                      ...draft,
                      shifts: [
                        { name: "Early", from: "06:00", to: "14:00", days: [...DAYS] },
                        { name: "Late", from: "14:00", to: "22:00", days: [...DAYS] },
                        { name: "Night", from: "22:00", to: "06:00", days: [...DAYS] },
                      ],
                    })
                  }
                >
                  Three shifts (06–14, 14–22, 22–06)
                </button>
              )}
            </div>
          )}
          <div className="form-grid" style={{ marginTop: "1rem" }}>
            <ValidFrom value={draft.validFrom} onChange={(v) => setDraft({ ...draft, validFrom: v })} disabled={readOnly} error={e["valid_from"]} />
          </div>
          <OtherErrors errors={e} shown={(k) => k === "valid_from" || /^shifts\[\d+\]/.test(k)} />
          {save.problem && <div className="callout danger">{save.problem}</div>}
          {!readOnly && (
            <div className="row end">
              <button className="primary" type="submit" disabled={save.saving} data-testid="save-shifts">
                {save.saving ? "Saving…" : "Save as new version"}
              </button>
            </div>
          )}
        </form>
      </div>
      <VersionHistory
        data={shifts.data}
        testId="shift-versions"
        onEdit={readOnly ? undefined : (v) => setDraft({ validFrom: "", shifts: v.shifts })}
        summary={(v) => v.shifts.map((s) => `${s.name} ${s.from}–${s.to}`).join(" · ") || "no shifts"}
      />
    </>
  );
}

// --- Emission factor --------------------------------------------------------------

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function emissionDraft(f: EmissionFactor | null): { kind: EmissionKind; constant: string; values: string[]; validFrom: string } {
  const kind = f?.kind ?? "constant";
  const n = kind === "hourly" ? 24 : 12;
  return {
    kind,
    constant: str(f?.kg_per_kwh),
    values: Array.from({ length: n }, (_, i) => str(f?.values?.[i])),
    validFrom: "",
  };
}

function EmissionSettings() {
  const { factory, can, timezone } = useFactory();
  const readOnly = !can("devices:write");
  const today = localDateString(Date.now(), timezone);
  const factor = useAsync(() => getEmission(factory, today), [factory]);
  const [draft, setDraft] = useState<ReturnType<typeof emissionDraft> | null>(null);
  const save = useSave();
  useEffect(() => {
    if (factor.data && !draft) setDraft(emissionDraft(factor.data.current));
  }, [factor.data, draft]);
  if (factor.error) return <div className="callout danger">{describe(factor.error)}</div>;
  if (!factor.data || !draft) return <Loading />;
  const e = save.errors;
  const labels = draft.kind === "hourly" ? Array.from({ length: 24 }, (_, h) => `${String(h).padStart(2, "0")}:00`) : MONTHS;
  return (
    <>
      <div className="card">
        <h2>Grid emission factor</h2>
        <form
          onSubmit={async (ev) => {
            ev.preventDefault();
            const body: EmissionFactor =
              draft.kind === "constant"
                ? { kind: "constant", kg_per_kwh: num(draft.constant) ?? Number.NaN }
                : { kind: draft.kind, values: draft.values.map((v) => num(v) ?? Number.NaN) };
            if (draft.validFrom) body.valid_from = draft.validFrom;
            if (await save.run("Emission factor", () => putEmission(factory, body))) {
              factor.reload();
              setDraft({ ...draft, validFrom: "" });
            }
          }}
        >
          <div className="form-grid">
            <SelectField
              label="Kind"
              value={draft.kind}
              disabled={readOnly}
              error={e["kind"]}
              onChange={(ev) => {
                const kind = ev.target.value as EmissionKind;
                setDraft({ ...draft, kind, values: Array.from({ length: kind === "hourly" ? 24 : 12 }, (_, i) => draft.values[i] ?? "") });
              }}
            >
              <option value="constant">constant</option>
              <option value="hourly">per hour of the day</option>
              <option value="monthly">per month</option>
            </SelectField>
            {draft.kind === "constant" && (
              <TextField label="kg CO₂e per kWh" type="number" step="any" min="0" value={draft.constant} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, constant: ev.target.value })} error={e["kg_per_kwh"]} />
            )}
            <ValidFrom value={draft.validFrom} onChange={(v) => setDraft({ ...draft, validFrom: v })} disabled={readOnly} error={e["valid_from"]} />
          </div>
          {draft.kind !== "constant" && (
            <div className="form-grid" style={{ gridTemplateColumns: "repeat(auto-fill, minmax(110px, 1fr))", marginTop: "0.75rem" }}>
              {labels.map((l, i) => (
                <TextField
                  key={l}
                  label={`${l} (kg/kWh)`}
                  type="number"
                  step="any"
                  min="0"
                  value={draft.values[i] ?? ""}
                  disabled={readOnly}
                  onChange={(ev) => setDraft({ ...draft, values: draft.values.map((v, j) => (j === i ? ev.target.value : v)) })}
                  error={e[`values[${i}]`]}
                />
              ))}
            </div>
          )}
          <FieldErrorText error={e["values"]} />
          <OtherErrors errors={e} shown={(k) => ["kind", "kg_per_kwh", "valid_from", "values"].includes(k) || /^values\[\d+\]$/.test(k)} />
          {save.problem && <div className="callout danger">{save.problem}</div>}
          {!readOnly && (
            <div className="row end" style={{ marginTop: "0.75rem" }}>
              <button className="primary" type="submit" disabled={save.saving} data-testid="save-emission">
                {save.saving ? "Saving…" : "Save as new version"}
              </button>
            </div>
          )}
        </form>
      </div>
      <VersionHistory
        data={factor.data}
        testId="emission-versions"
        onEdit={readOnly ? undefined : (v) => setDraft(emissionDraft(v))}
        summary={(v) => (v.kind === "constant" ? `${fmtNumber(v.kg_per_kwh, 4)} kg/kWh` : `${v.kind}: ${(v.values ?? []).map((x) => fmtNumber(x, 3)).join(", ")}`)}
      />
    </>
  );
}

// --- Groups -----------------------------------------------------------------------

function GroupSettings() {
  const { factory, can } = useFactory();
  const readOnly = !can("devices:write");
  const toast = useToast();
  const groups = useAsync(() => listGroups(factory), [factory]);
  const devices = useAsync((signal) => loadAllDevices(factory, {}, signal), [factory]);
  const [creating, setCreating] = useState<{ kind: GroupKind; parent: string | null } | null>(null);
  const [editing, setEditing] = useState<Group | null>(null);
  const [deleting, setDeleting] = useState<Group | null>(null);
  const all = groups.data ?? [];
  const tree = useMemo(() => flattenTree(all), [all]);
  const tags = all.filter((g) => g.kind === "tag");
  const placed = useMemo(() => {
    const m = new Map<string, string>();
    for (const g of all) if (g.kind !== "tag") for (const d of g.device_ids) m.set(d, g.name);
    return m;
  }, [all]);
  if (groups.error) return <div className="callout danger">{describe(groups.error)}</div>;
  if (!groups.data) return <Loading />;
  const row = (g: Group, depth: number) => (
    <div className="tree-row" key={g.id} data-testid={`group-${g.name}`}>
      <span className="indent" style={{ width: `${depth * 1.5}rem` }} />
      <strong>{g.kind === "tag" ? `#${g.name}` : g.name}</strong>
      <span className="muted small">
        {g.device_ids.length} device{g.device_ids.length === 1 ? "" : "s"}
        {g.device_ids.length > 0 && `: ${g.device_ids.slice(0, 6).join(", ")}${g.device_ids.length > 6 ? ", …" : ""}`}
      </span>
      <span style={{ flex: 1 }} />
      {!readOnly && (
        <>
          {g.kind !== "tag" && (
            <button className="ghost small" onClick={() => setCreating({ kind: "hierarchy", parent: g.id })}>
              + Child
            </button>
          )}
          <button className="ghost small" onClick={() => setEditing(g)} aria-label={`Edit ${g.name}`}>
            Edit
          </button>
          <button className="ghost small" onClick={() => setDeleting(g)} aria-label={`Delete ${g.name}`}>
            Delete
          </button>
        </>
      )}
    </div>
  );
  return (
    <div className="grid cols-2">
      <div className="card">
        <div className="row" style={{ marginBottom: "0.5rem" }}>
          <h2 style={{ margin: 0 }}>Hierarchy</h2>
          <span style={{ flex: 1 }} />
          {!readOnly && (
            <button className="small" onClick={() => setCreating({ kind: "hierarchy", parent: null })} data-testid="new-group">
              + Root group
            </button>
          )}
        </div>
        <p className="small muted">Site → area → line → machine, any depth. A device sits in one place of the hierarchy; consumption rolls up to every group above it.</p>
        {tree.length === 0 ? (
          <Empty icon="⌂" title="No hierarchy yet">
            Create a root group (the site) to roll up the whole factory.
          </Empty>
        ) : (
          <div data-testid="group-tree">{tree.map(({ group, depth }) => row(group, depth))}</div>
        )}
      </div>
      <div className="card">
        <div className="row" style={{ marginBottom: "0.5rem" }}>
          <h2 style={{ margin: 0 }}>Tags</h2>
          <span style={{ flex: 1 }} />
          {!readOnly && (
            <button className="small" onClick={() => setCreating({ kind: "tag", parent: null })}>
              + Tag
            </button>
          )}
        </div>
        <p className="small muted">Ad-hoc groups (e.g. “compressors”): a device may carry any number of tags.</p>
        {tags.length === 0 ? <Empty icon="#" title="No tags yet" /> : tags.map((g) => row(g, 0))}
      </div>
      {creating && (
        <GroupDialog
          title={creating.kind === "tag" ? "New tag" : creating.parent ? `New group under ${all.find((g) => g.id === creating.parent)?.name ?? ""}` : "New root group"}
          groups={all}
          devices={(devices.data ?? []).map((d) => ({ id: d.id, name: d.name }))}
          placed={placed}
          initial={{ id: "", name: "", kind: creating.kind, parent_id: creating.parent, device_ids: [] }}
          onClose={() => setCreating(null)}
          onSave={async (g) => {
            await createGroup(factory, { name: g.name, kind: g.kind, parent_id: g.parent_id, device_ids: g.device_ids });
            setCreating(null);
            toast.show("success", `Group ${g.name} created`);
            groups.reload();
          }}
        />
      )}
      {editing && (
        <GroupDialog
          title={`Edit ${editing.name}`}
          groups={all}
          devices={(devices.data ?? []).map((d) => ({ id: d.id, name: d.name }))}
          placed={placed}
          initial={editing}
          onClose={() => setEditing(null)}
          onSave={async (g) => {
            await updateGroup(factory, editing.id, { name: g.name, ...(g.kind === "tag" ? {} : { parent_id: g.parent_id }), device_ids: g.device_ids });
            setEditing(null);
            toast.show("success", `Group ${g.name} saved`);
            groups.reload();
          }}
        />
      )}
      {deleting && (
        <Modal title={`Delete ${deleting.name}?`} onClose={() => setDeleting(null)}>
          <p>The group goes; its devices stay. {deleting.kind !== "tag" && "Its child groups move up to its parent — or the server refuses while it has children, and says so."}</p>
          <div className="row end">
            <button onClick={() => setDeleting(null)}>Cancel</button>
            <button
              className="danger"
              onClick={async () => {
                try {
                  await deleteGroup(factory, deleting.id);
                  toast.show("success", `Group ${deleting.name} deleted`);
                  groups.reload();
                } catch (err) {
                  toast.error(err);
                }
                setDeleting(null);
              }}
            >
              Delete
            </button>
          </div>
        </Modal>
      )}
    </div>
  );
}

function GroupDialog({
  title,
  groups,
  devices,
  placed,
  initial,
  onClose,
  onSave,
}: {
  title: string;
  groups: Group[];
  devices: { id: string; name: string }[];
  placed: Map<string, string>;
  initial: Group;
  onClose: () => void;
  onSave: (g: Group) => Promise<void>;
}) {
  const [g, setG] = useState<Group>(initial);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | null>(null);
  const [filter, setFilter] = useState("");
  const blocked = initial.id ? subtree(groups, initial.id) : new Set<string>();
  const parents = flattenTree(groups).filter(({ group }) => !blocked.has(group.id));
  const shownDevices = devices.filter((d) => !filter || d.id.includes(filter) || d.name.toLowerCase().includes(filter.toLowerCase()));
  return (
    <Modal title={title} onClose={onClose} wide>
      <form
        onSubmit={async (ev) => {
          ev.preventDefault();
          try {
            await onSave(g);
          } catch (err) {
            if (err instanceof ApiError && err.status === 422) setErrors(fieldErrorMap(err.problem.errors ?? []));
            setProblem(describe(err));
          }
        }}
      >
        <div className="form-grid">
          <TextField label="Name" value={g.name} onChange={(ev) => setG({ ...g, name: ev.target.value })} error={errors["name"]} required />
          {g.kind !== "tag" && (
            <SelectField label="Parent" value={g.parent_id ?? ""} onChange={(ev) => setG({ ...g, parent_id: ev.target.value || null })} error={errors["parent_id"]}>
              <option value="">— none (a root) —</option>
              {parents.map(({ group, depth }) => (
                <option key={group.id} value={group.id}>
                  {"\u00a0\u00a0".repeat(depth)}
                  {group.name}
                </option>
              ))}
            </SelectField>
          )}
        </div>
        <h3>Devices</h3>
        <input placeholder="Filter devices" value={filter} onChange={(ev) => setFilter(ev.target.value)} aria-label="Filter devices" />
        <div className="stack" style={{ maxHeight: 260, overflow: "auto", marginTop: "0.5rem" }} role="group" aria-label="Devices in the group">
          {shownDevices.slice(0, 500).map((d) => {
            const elsewhere = g.kind !== "tag" ? placed.get(d.id) : undefined;
            const checked = g.device_ids.includes(d.id);
            return (
              <label key={d.id} className="check">
                <input type="checkbox" checked={checked} onChange={(ev) => setG({ ...g, device_ids: ev.target.checked ? [...g.device_ids, d.id] : g.device_ids.filter((x) => x !== d.id) })} />
                <span>
                  {d.name} <span className="mono small muted">{d.id}</span>
                  {elsewhere && !checked && elsewhere !== initial.name && <span className="small muted"> · now in {elsewhere} (moves here)</span>}
                </span>
              </label>
            );
          })}
        </div>
        <FieldErrorText error={errors["device_ids"]} />
        {problem && (
          <div className="callout danger" style={{ marginTop: "0.5rem" }}>
            {problem}
          </div>
        )}
        <div className="row end">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button className="primary" type="submit" data-testid="save-group">
            Save
          </button>
        </div>
      </form>
    </Modal>
  );
}
