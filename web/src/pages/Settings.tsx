import { useEffect, useMemo, useState, type ReactNode } from "react";
import { Navigate, NavLink, Route, Routes } from "react-router-dom";
import { ApiError, describe, fieldErrorMap } from "../api/problem";
import {
  DAYS,
  createGroup,
  deleteGroup,
  emissionKind,
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
import { Badge, Empty, FieldErrorText, Loading, SelectField, TextField, fmtTime, useAsync } from "../ui/common";
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

function VersionHistory<T extends { valid_from?: string | null; created_at?: string | null }>({
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
              <th>Stored</th>
              <th />
              <th />
            </tr>
          </thead>
          <tbody>
            {[...data.versions].reverse().map((v, i) => (
              <tr key={`${v.valid_from ?? ""}-${i}`}>
                <td>{v.valid_from ?? "since always"}</td>
                <td className="small">{summary(v)}</td>
                <td className="small nowrap">{v.created_at ? fmtTime(v.created_at) : "—"}</td>
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
      help="The factory-local date the new version applies from: today or later (past figures never change). Only the first version may leave it empty: in force since always."
      data-testid="valid-from"
    />
  );
}

// --- Tariff -----------------------------------------------------------------------

interface PeriodDraft {
  days: Day[];
  from: string;
  to: string;
  price: string;
  seasonFrom: string;
  seasonTo: string;
}

interface WindowDraft {
  days: Day[];
  from: string;
  to: string;
  months: string;
}

interface TariffDraft {
  currency: string;
  validFrom: string;
  periods: PeriodDraft[];
  fixed: string;
  holidays: string[];
  holidayAs: Day;
  /** none | simple (per kW of the month's highest interval) | detailed (basis, method, windows). */
  demandMode: "none" | "simple" | "detailed";
  demandPerKw: string;
  demandBasis: "month" | "day";
  demandMethod: "highest" | "mean_of_highest";
  demandCount: string;
  demandInterval: string;
  windows: WindowDraft[];
}

function tariffDraft(t: Tariff | null): TariffDraft {
  const spec = t?.demand_charge ?? null;
  return {
    currency: t?.currency ?? "EUR",
    validFrom: "",
    periods: (t?.periods ?? [{ days: [...DAYS], from: "00:00", to: "24:00", price_per_kwh: 0.25 }]).map((p) => ({
      days: p.days,
      from: p.from,
      to: p.to,
      price: String(p.price_per_kwh),
      seasonFrom: p.season?.from ?? "",
      seasonTo: p.season?.to ?? "",
    })),
    fixed: str(t?.fixed_per_month),
    holidays: t?.holidays ?? [],
    holidayAs: t?.holiday_as ?? "sun",
    demandMode: spec ? "detailed" : t?.demand_charge_per_kw ? "simple" : "none",
    demandPerKw: str(spec?.per_kw ?? t?.demand_charge_per_kw),
    demandBasis: spec?.basis ?? "month",
    demandMethod: spec?.method ?? "highest",
    demandCount: str(spec?.count ?? 3),
    demandInterval: str(t?.demand_interval_minutes),
    windows: (spec?.windows ?? []).map((w) => ({ days: w.days, from: w.from, to: w.to, months: (w.months ?? []).join(",") })),
  };
}

const months = (text: string): number[] | null => {
  const list = text
    .split(/[,\s]+/)
    .filter(Boolean)
    .map(Number);
  return list.length ? list : null;
};

function tariffBody(d: TariffDraft): Tariff {
  const body: Tariff = {
    currency: d.currency.trim(),
    periods: d.periods.map((p) => {
      const period: TariffPeriod = { days: p.days, from: p.from.trim(), to: p.to.trim(), price_per_kwh: num(p.price) ?? Number.NaN };
      if (p.seasonFrom.trim() || p.seasonTo.trim()) period.season = { from: p.seasonFrom.trim(), to: p.seasonTo.trim() };
      return period;
    }),
  };
  if (d.validFrom) body.valid_from = d.validFrom;
  if (d.holidays.length) {
    body.holidays = d.holidays;
    body.holiday_as = d.holidayAs;
  }
  if (d.demandMode === "simple") body.demand_charge_per_kw = num(d.demandPerKw) ?? Number.NaN;
  if (d.demandMode === "detailed") {
    body.demand_charge = { per_kw: num(d.demandPerKw) ?? Number.NaN, basis: d.demandBasis, method: d.demandMethod };
    if (d.demandMethod === "mean_of_highest") body.demand_charge.count = num(d.demandCount) ?? Number.NaN;
    if (d.windows.length) body.demand_charge.windows = d.windows.map((w) => ({ days: w.days, from: w.from.trim(), to: w.to.trim(), ...(months(w.months) ? { months: months(w.months) } : {}) }));
  }
  if (d.demandMode !== "none" && num(d.demandInterval) !== null) body.demand_interval_minutes = num(d.demandInterval);
  if (num(d.fixed) !== null) body.fixed_per_month = num(d.fixed);
  return body;
}

function tariffSummary(v: Tariff): string {
  const parts = v.periods.map((p) => `${p.days.join(",")} ${p.from}–${p.to}${p.season ? ` (${p.season.from}–${p.season.to})` : ""}: ${p.price_per_kwh} ${v.currency}/kWh`);
  if (v.demand_charge_per_kw) parts.push(`demand ${v.demand_charge_per_kw} ${v.currency}/kW`);
  if (v.demand_charge) parts.push(`demand ${v.demand_charge.per_kw} ${v.currency}/kW (${v.demand_charge.basis ?? "month"}, ${v.demand_charge.method ?? "highest"}${v.demand_charge.windows?.length ? ", in windows" : ""})`);
  if (v.fixed_per_month) parts.push(`fixed ${v.fixed_per_month} ${v.currency}/month`);
  if (v.holidays?.length) parts.push(`${v.holidays.length} holidays as ${v.holiday_as ?? "sun"}`);
  return parts.join(" · ");
}

function TariffSettings() {
  const { factory, can, timezone } = useFactory();
  const readOnly = !can("devices:write");
  const today = localDateString(Date.now(), timezone);
  const tariff = useAsync(() => getTariff(factory, today), [factory]);
  const [draft, setDraft] = useState<TariffDraft | null>(null);
  const save = useSave();
  useEffect(() => {
    if (tariff.data && !draft) setDraft({ ...tariffDraft(tariff.data.current), validFrom: tariff.data.versions.length ? today : "" });
  }, [tariff.data, draft]);
  if (tariff.error) return <div className="callout danger">{describe(tariff.error)}</div>;
  if (!tariff.data || !draft) return <Loading />;
  const e = save.errors;
  const setPeriod = (i: number, patch: Partial<PeriodDraft>) => setDraft({ ...draft, periods: draft.periods.map((p, j) => (j === i ? { ...p, ...patch } : p)) });
  const setWindow = (i: number, patch: Partial<WindowDraft>) => setDraft({ ...draft, windows: draft.windows.map((w, j) => (j === i ? { ...w, ...patch } : w)) });
  const fieldPaths = [
    "currency",
    "valid_from",
    "periods",
    "demand_charge_per_kw",
    "demand_charge",
    "demand_charge.per_kw",
    "demand_charge.count",
    "demand_charge.windows",
    "demand_charge.basis",
    "demand_charge.method",
    "demand_interval_minutes",
    "fixed_per_month",
    "holidays",
    "holiday_as",
  ];
  const shown = (k: string) =>
    fieldPaths.includes(k) ||
    /^periods\[\d+\](\.(days|from|to|price_per_kwh|season(\.from|\.to)?))?$/.test(k) ||
    /^holidays\[\d+\]$/.test(k) ||
    /^demand_charge\.windows\[\d+\](\.(days|from|to|months))?$/.test(k);
  const err = (...paths: string[]) => paths.map((p) => e[p]).find(Boolean);
  const current = tariff.data.current;
  return (
    <>
      <div className="card" data-testid="tariff-card">
        <div className="row" style={{ marginBottom: "0.5rem" }}>
          <h2 style={{ margin: 0 }}>Time-of-use tariff</h2>
          <span style={{ flex: 1 }} />
          {current ? (
            <span className="small muted" data-testid="tariff-in-force">
              In force: {current.version ? `version ${current.version}, ` : ""}
              {current.valid_from ? `since ${current.valid_from}` : "since always"} · {current.periods.length} period{current.periods.length === 1 ? "" : "s"} · {current.currency}
            </span>
          ) : (
            <Badge kind="warning">no tariff yet: costs are not computed</Badge>
          )}
        </div>
        <form
          className="settings-form"
          onSubmit={async (ev) => {
            ev.preventDefault();
            if (await save.run("Tariff", () => putTariff(factory, tariffBody(draft)))) {
              tariff.reload();
              setDraft({ ...draft, validFrom: today });
            }
          }}
        >
          <div className="form-grid">
            <TextField label="Currency" value={draft.currency} disabled={readOnly} maxLength={3} onChange={(ev) => setDraft({ ...draft, currency: ev.target.value.toUpperCase() })} error={e["currency"]} />
            <TextField label="Fixed fee per month" type="number" step="any" min="0" value={draft.fixed} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, fixed: ev.target.value })} error={e["fixed_per_month"]} />
            <ValidFrom value={draft.validFrom} onChange={(v) => setDraft({ ...draft, validFrom: v })} disabled={readOnly} error={e["valid_from"]} />
          </div>
          <h3>Energy prices</h3>
          <div className="table-wrap">
            <table data-testid="tariff-periods">
              <thead>
                <tr>
                  <th>Days</th>
                  <th>From</th>
                  <th>To</th>
                  <th>Price per kWh</th>
                  <th>Season (MM-DD, optional)</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {draft.periods.map((p, i) => (
                  <tr key={i} data-testid={`tariff-period-${i}`}>
                    <td>
                      <DayPicker value={p.days} onChange={(days) => setPeriod(i, { days })} disabled={readOnly} label={`Period ${i + 1} days`} />
                      <FieldErrorText error={err(`periods[${i}].days`, `periods[${i}]`)} />
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
                      <FieldErrorText error={e[`periods[${i}].price_per_kwh`]} />
                    </td>
                    <td>
                      <div className="row no-wrap">
                        <input className="narrow" style={{ width: "4.5rem" }} aria-label={`Period ${i + 1} season from`} value={p.seasonFrom} disabled={readOnly} placeholder="11-01" onChange={(ev) => setPeriod(i, { seasonFrom: ev.target.value })} />
                        <span className="muted">–</span>
                        <input className="narrow" style={{ width: "4.5rem" }} aria-label={`Period ${i + 1} season to`} value={p.seasonTo} disabled={readOnly} placeholder="03-31" onChange={(ev) => setPeriod(i, { seasonTo: ev.target.value })} />
                      </div>
                      <FieldErrorText error={err(`periods[${i}].season`, `periods[${i}].season.from`, `periods[${i}].season.to`)} />
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
            <button
              type="button"
              className="small"
              style={{ marginTop: "0.5rem" }}
              onClick={() => setDraft({ ...draft, periods: [...draft.periods, { days: ["mon", "tue", "wed", "thu", "fri"], from: "07:00", to: "19:00", price: "", seasonFrom: "", seasonTo: "" }] })}
              data-testid="add-period"
            >
              + Add period
            </button>
          )}

          <h3>Demand charge</h3>
          <div className="form-grid">
            <SelectField label="Demand charge" value={draft.demandMode} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, demandMode: ev.target.value as TariffDraft["demandMode"] })} data-testid="demand-mode">
              <option value="none">none</option>
              <option value="simple">per kW of the month's highest interval</option>
              <option value="detailed">detailed: basis, method, windows</option>
            </SelectField>
            {draft.demandMode !== "none" && (
              <>
                <TextField
                  label={`Price per kW${draft.currency ? ` (${draft.currency})` : ""}`}
                  type="number"
                  step="any"
                  min="0"
                  value={draft.demandPerKw}
                  disabled={readOnly}
                  onChange={(ev) => setDraft({ ...draft, demandPerKw: ev.target.value })}
                  error={err("demand_charge_per_kw", "demand_charge.per_kw", "demand_charge")}
                />
                <TextField
                  label="Demand interval (min)"
                  type="number"
                  step="15"
                  min="15"
                  max="60"
                  placeholder="15"
                  value={draft.demandInterval}
                  disabled={readOnly}
                  onChange={(ev) => setDraft({ ...draft, demandInterval: ev.target.value })}
                  error={e["demand_interval_minutes"]}
                />
              </>
            )}
            {draft.demandMode === "detailed" && (
              <>
                <SelectField label="Billed per" value={draft.demandBasis} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, demandBasis: ev.target.value as "month" | "day" })} error={e["demand_charge.basis"]}>
                  <option value="month">month</option>
                  <option value="day">day</option>
                </SelectField>
                <SelectField label="Basis" value={draft.demandMethod} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, demandMethod: ev.target.value as "highest" | "mean_of_highest" })} error={e["demand_charge.method"]}>
                  <option value="highest">the single highest interval</option>
                  <option value="mean_of_highest">the mean of the N highest</option>
                </SelectField>
                {draft.demandMethod === "mean_of_highest" && (
                  <TextField label="N" type="number" step="1" min="1" value={draft.demandCount} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, demandCount: ev.target.value })} error={e["demand_charge.count"]} />
                )}
              </>
            )}
          </div>
          {draft.demandMode === "detailed" && (
            <>
              <div className="small muted" style={{ margin: "0.5rem 0" }}>
                Counting windows: only intervals starting inside one count (e.g. weekdays 07:00–19:00 in months 11,12,1,2,3). None = every interval counts.
              </div>
              {draft.windows.map((w, i) => (
                <div className="row" key={i} style={{ marginBottom: "0.4rem" }}>
                  <DayPicker value={w.days} onChange={(days) => setWindow(i, { days })} disabled={readOnly} label={`Window ${i + 1} days`} />
                  <input className="narrow" aria-label={`Window ${i + 1} from`} value={w.from} disabled={readOnly} placeholder="07:00" onChange={(ev) => setWindow(i, { from: ev.target.value })} />
                  <span className="muted">–</span>
                  <input className="narrow" aria-label={`Window ${i + 1} to`} value={w.to} disabled={readOnly} placeholder="19:00" onChange={(ev) => setWindow(i, { to: ev.target.value })} />
                  <input aria-label={`Window ${i + 1} months`} value={w.months} disabled={readOnly} placeholder="months, e.g. 11,12,1,2,3" onChange={(ev) => setWindow(i, { months: ev.target.value })} />
                  {!readOnly && (
                    <button type="button" className="ghost small" onClick={() => setDraft({ ...draft, windows: draft.windows.filter((_, j) => j !== i) })}>
                      Remove
                    </button>
                  )}
                  <FieldErrorText error={err(`demand_charge.windows[${i}]`, `demand_charge.windows[${i}].days`, `demand_charge.windows[${i}].from`, `demand_charge.windows[${i}].to`, `demand_charge.windows[${i}].months`)} />
                </div>
              ))}
              <FieldErrorText error={e["demand_charge.windows"]} />
              {!readOnly && (
                <button type="button" className="small" onClick={() => setDraft({ ...draft, windows: [...draft.windows, { days: ["mon", "tue", "wed", "thu", "fri"], from: "07:00", to: "19:00", months: "" }] })}>
                  + Add window
                </button>
              )}
            </>
          )}

          <h3>Holidays</h3>
          {draft.holidays.length === 0 && <div className="small muted">No holidays: every date is priced as its weekday.</div>}
          {draft.holidays.length > 0 && (
            <div className="form-grid" style={{ marginBottom: "0.5rem" }}>
              <SelectField label="Holidays are priced as" value={draft.holidayAs} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, holidayAs: ev.target.value as Day })} error={e["holiday_as"]}>
                {DAYS.map((d) => (
                  <option key={d} value={d}>
                    {d}
                  </option>
                ))}
              </SelectField>
            </div>
          )}
          <div className="row">
            {draft.holidays.map((h, i) => (
              <span className="row" key={i}>
                <input type="date" aria-label={`Holiday ${i + 1}`} value={h} disabled={readOnly} onChange={(ev) => setDraft({ ...draft, holidays: draft.holidays.map((x, j) => (j === i ? ev.target.value : x)) })} />
                {!readOnly && (
                  <button type="button" className="ghost small" aria-label={`Remove holiday ${i + 1}`} onClick={() => setDraft({ ...draft, holidays: draft.holidays.filter((_, j) => j !== i) })}>
                    ✕
                  </button>
                )}
                <FieldErrorText error={e[`holidays[${i}]`]} />
              </span>
            ))}
          </div>
          <FieldErrorText error={e["holidays"]} />
          {!readOnly && (
            <button type="button" className="small" style={{ marginTop: "0.4rem" }} onClick={() => setDraft({ ...draft, holidays: [...draft.holidays, today] })}>
              + Add holiday
            </button>
          )}
          <div style={{ marginTop: "1rem" }}>
            <OtherErrors errors={e} shown={shown} />
            {save.problem && <div className="callout danger">{save.problem}</div>}
          </div>
          {!readOnly && (
            <div className="row end" style={{ marginTop: "0.75rem" }}>
              <button type="button" onClick={() => setDraft({ ...tariffDraft(tariff.data?.current ?? null), validFrom: tariff.data?.versions.length ? today : "" })}>
                Reset
              </button>
              <button className="primary" type="submit" disabled={save.saving} data-testid="save-tariff">
                {save.saving ? "Saving…" : "Save as new version"}
              </button>
            </div>
          )}
        </form>
      </div>
      <VersionHistory data={tariff.data} testId="tariff-versions" onEdit={readOnly ? undefined : (v) => setDraft({ ...tariffDraft(v), validFrom: today })} summary={tariffSummary} />
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
    if (shifts.data && !draft) setDraft({ validFrom: shifts.data.versions.length ? today : "", shifts: shifts.data.current?.shifts ?? [] });
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
          className="settings-form"
          onSubmit={async (ev) => {
            ev.preventDefault();
            const body: ShiftCalendar = { shifts: draft.shifts, ...(draft.validFrom ? { valid_from: draft.validFrom } : {}) };
            if (await save.run("Shifts", () => putShifts(factory, body))) {
              shifts.reload();
              setDraft({ ...draft, validFrom: today });
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
                      <DayPicker value={s.days ?? DAYS} onChange={(days) => set(i, { days })} disabled={readOnly} label={`Shift ${i + 1} days`} />
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
        onEdit={readOnly ? undefined : (v) => setDraft({ validFrom: today, shifts: v.shifts })}
        summary={(v) => v.shifts.map((s) => `${s.name} ${s.from}–${s.to}`).join(" · ") || "no shifts"}
      />
    </>
  );
}

// --- Emission factor --------------------------------------------------------------

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function emissionDraft(f: EmissionFactor | null): { kind: EmissionKind; constant: string; values: string[]; validFrom: string } {
  const kind = emissionKind(f);
  const values = kind === "hourly" ? f?.hourly : kind === "monthly" ? f?.monthly : null;
  return {
    kind,
    constant: str(f?.kg_per_kwh),
    values: Array.from({ length: kind === "hourly" ? 24 : 12 }, (_, i) => str(values?.[i])),
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
    if (factor.data && !draft) setDraft({ ...emissionDraft(factor.data.current), validFrom: factor.data.versions.length ? today : "" });
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
          className="settings-form"
          onSubmit={async (ev) => {
            ev.preventDefault();
            const values = draft.values.map((v) => num(v) ?? Number.NaN);
            const body: EmissionFactor =
              draft.kind === "constant" ? { kg_per_kwh: num(draft.constant) ?? Number.NaN } : draft.kind === "hourly" ? { hourly: values } : { monthly: values };
            if (draft.validFrom) body.valid_from = draft.validFrom;
            if (await save.run("Emission factor", () => putEmission(factory, body))) {
              factor.reload();
              setDraft({ ...draft, validFrom: today });
            }
          }}
        >
          <div className="form-grid">
            <SelectField
              label="Kind"
              value={draft.kind}
              disabled={readOnly}
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
                  error={e[`${draft.kind}[${i}]`]}
                />
              ))}
            </div>
          )}
          <FieldErrorText error={draft.kind === "constant" ? undefined : e[draft.kind]} />
          <OtherErrors errors={e} shown={(k) => ["kg_per_kwh", "valid_from", ...(draft.kind === "constant" ? [] : [draft.kind])].includes(k) || new RegExp(`^${draft.kind}\\[\\d+\\]$`).test(k)} />
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
        onEdit={readOnly ? undefined : (v) => setDraft({ ...emissionDraft(v), validFrom: today })}
        summary={(v) =>
          v.hourly ? `per hour: ${v.hourly.map((x) => fmtNumber(x, 3)).join(", ")}` : v.monthly ? `per month: ${v.monthly.map((x) => fmtNumber(x, 3)).join(", ")}` : `${fmtNumber(v.kg_per_kwh, 4)} kg/kWh`
        }
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
    for (const g of all) if (g.kind !== "tag") for (const d of g.devices) m.set(d, g.name);
    return m;
  }, [all]);
  /** A device sits in one hierarchy group: moving it here takes it out of the other one first. */
  async function releaseDevices(g: Group) {
    if (g.kind === "tag") return;
    for (const other of all) {
      if (other.kind === "tag" || other.id === g.id) continue;
      const keep = other.devices.filter((d) => !g.devices.includes(d));
      if (keep.length !== other.devices.length) await updateGroup(factory, other.id, { devices: keep });
    }
  }
  if (groups.error) return <div className="callout danger">{describe(groups.error)}</div>;
  if (!groups.data) return <Loading />;
  const row = (g: Group, depth: number) => (
    <div className="tree-row" key={g.id} data-testid={`group-${g.name}`}>
      <span className="indent" style={{ width: `${depth * 1.5}rem` }} />
      <strong>{g.kind === "tag" ? `#${g.name}` : g.name}</strong>
      {g.level && <Badge>{g.level}</Badge>}
      <span className="muted small">
        {g.devices.length} device{g.devices.length === 1 ? "" : "s"}
        {g.devices.length > 0 && `: ${g.devices.slice(0, 6).join(", ")}${g.devices.length > 6 ? ", …" : ""}`}
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
          initial={{ id: "", name: "", kind: creating.kind, parent_id: creating.parent, devices: [] }}
          onClose={() => setCreating(null)}
          onSave={async (g) => {
            await releaseDevices(g);
            await createGroup(factory, { name: g.name, kind: g.kind, ...(g.kind === "tag" ? {} : { parent_id: g.parent_id, level: g.level ?? null }), devices: g.devices });
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
            await releaseDevices(g);
            await updateGroup(factory, editing.id, { name: g.name, ...(g.kind === "tag" ? {} : { parent_id: g.parent_id, level: g.level ?? null }), devices: g.devices });
            setEditing(null);
            toast.show("success", `Group ${g.name} saved`);
            groups.reload();
          }}
        />
      )}
      {deleting && <DeleteGroupDialog group={deleting} hasChildren={all.some((x) => x.parent_id === deleting.id)} onClose={() => setDeleting(null)} onDeleted={() => groups.reload()} />}
    </div>
  );
}

function DeleteGroupDialog({ group, hasChildren, onClose, onDeleted }: { group: Group; hasChildren: boolean; onClose: () => void; onDeleted: () => void }) {
  const { factory } = useFactory();
  const toast = useToast();
  const [cascade, setCascade] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  return (
    <Modal title={`Delete ${group.name}?`} onClose={onClose}>
      <p>The group goes; its devices stay (they are no longer in it).</p>
      {hasChildren && (
        <label className="check">
          <input type="checkbox" checked={cascade} onChange={(e) => setCascade(e.target.checked)} />
          Also delete every group below it (without this, a group with children is not deleted)
        </label>
      )}
      {problem && <div className="callout danger">{problem}</div>}
      <div className="row end">
        <button onClick={onClose}>Cancel</button>
        <button
          className="danger"
          data-testid="confirm-delete-group"
          onClick={async () => {
            try {
              await deleteGroup(factory, group.id, cascade);
              toast.show("success", `Group ${group.name} deleted`);
              onDeleted();
              onClose();
            } catch (err) {
              setProblem(describe(err));
            }
          }}
        >
          Delete
        </button>
      </div>
    </Modal>
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
            <TextField label="Level" list="group-levels" value={g.level ?? ""} onChange={(ev) => setG({ ...g, level: ev.target.value || null })} error={errors["level"]} placeholder="site, area, line, machine…" />
          )}
          <datalist id="group-levels">
            <option value="site" />
            <option value="area" />
            <option value="line" />
            <option value="machine" />
          </datalist>
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
            const checked = g.devices.includes(d.id);
            return (
              <label key={d.id} className="check">
                <input type="checkbox" checked={checked} onChange={(ev) => setG({ ...g, devices: ev.target.checked ? [...g.devices, d.id] : g.devices.filter((x) => x !== d.id) })} />
                <span>
                  {d.name} <span className="mono small muted">{d.id}</span>
                  {elsewhere && !checked && elsewhere !== initial.name && <span className="small muted"> · now in {elsewhere} (moves here)</span>}
                </span>
              </label>
            );
          })}
        </div>
        <FieldErrorText error={errors["devices"]} />
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
