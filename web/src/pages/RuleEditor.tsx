import { useEffect, useMemo, useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { ApiError, errorsUnder } from "../api/problem";
import type { BacktestResult, Page, Rule, RuleBody, Schedule, Severity, User } from "../api/types";
import type { SeriesData } from "../chart/align";
import { loadSeries, type TimeWindow } from "../chart/range";
import { TimeChart, type Band } from "../chart/TimeChart";
import { useFactory } from "../factory";
import { ConditionEditor } from "../rules/ConditionEditor";
import { fromJson, newGroup, newLeaf, nodePaths, properties as conditionProperties, toJson, type CondNode } from "../rules/condition";
import { Badge, Empty, FieldErrorText, Loading, SelectField, TextField, fmtShort, fmtTime, isNotFound, useAsync } from "../ui/common";
import { Modal } from "../ui/Modal";
import { useToast } from "../ui/toast";
import { loadAllDevices } from "./data";
import { NotFound } from "./NotFound";

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

interface Draft {
  name: string;
  enabled: boolean;
  scopeKind: "devices" | "device_type" | "all";
  devices: string[];
  deviceType: string;
  condition: CondNode;
  forSeconds: string;
  clearForSeconds: string;
  deadband: string;
  scheduled: boolean;
  schedule: Schedule;
  severity: Severity;
  message: string;
  cooldownSeconds: string;
  autoResolve: boolean;
  users: string[];
  emails: string;
  whatsapp: string;
  remindMinutes: string;
  escalateMinutes: string;
  escalateUsers: string[];
  escalateEmails: string;
  escalateWhatsapp: string;
}

function emptyDraft(): Draft {
  return {
    name: "",
    enabled: true,
    scopeKind: "devices",
    devices: [],
    deviceType: "",
    condition: newGroup("all", [newLeaf()]),
    forSeconds: "0",
    clearForSeconds: "0",
    deadband: "",
    scheduled: false,
    schedule: { timezone: "factory", days: ["mon", "tue", "wed", "thu", "fri"], windows: [{ from: "06:00", to: "22:00" }] },
    severity: "warning",
    message: "",
    cooldownSeconds: "300",
    autoResolve: true,
    users: [],
    emails: "",
    whatsapp: "",
    remindMinutes: "",
    escalateMinutes: "",
    escalateUsers: [],
    escalateEmails: "",
    escalateWhatsapp: "",
  };
}

function fromRule(r: Rule): Draft {
  const s = r.scope as Record<string, unknown>;
  return {
    name: r.name,
    enabled: r.enabled,
    scopeKind: Array.isArray(s.devices) ? "devices" : typeof s.device_type === "string" ? "device_type" : "all",
    devices: Array.isArray(s.devices) ? (s.devices as string[]) : [],
    deviceType: typeof s.device_type === "string" ? s.device_type : "",
    condition: fromJson(r.condition),
    forSeconds: String(r.for_seconds ?? 0),
    clearForSeconds: String(r.clear_for_seconds ?? 0),
    deadband: r.deadband != null ? String(r.deadband) : "",
    scheduled: !!r.schedule,
    schedule: r.schedule ?? emptyDraft().schedule,
    severity: r.severity,
    message: r.message ?? "",
    cooldownSeconds: String(r.cooldown_seconds ?? 0),
    autoResolve: r.auto_resolve,
    users: r.notify?.users ?? [],
    emails: (r.notify?.emails ?? []).join(", "),
    whatsapp: (r.notify?.whatsapp ?? []).join(", "),
    remindMinutes: r.notify?.remind_every_minutes != null ? String(r.notify.remind_every_minutes) : "",
    escalateMinutes: r.notify?.escalate_after_minutes != null ? String(r.notify.escalate_after_minutes) : "",
    escalateUsers: r.notify?.escalate_to?.users ?? [],
    escalateEmails: (r.notify?.escalate_to?.emails ?? []).join(", "),
    escalateWhatsapp: (r.notify?.escalate_to?.whatsapp ?? []).join(", "),
  };
}

const list = (text: string) =>
  text
    .split(/[,\s]+/)
    .map((x) => x.trim())
    .filter(Boolean);
/** Phone numbers may be typed with spaces inside (the API then names the bad one), so only commas, semicolons and new lines separate them. */
const numbers = (text: string) =>
  text
    .split(/[,;\n]+/)
    .map((x) => x.trim())
    .filter(Boolean);
const int = (text: string) => (text.trim() === "" ? 0 : Number.isFinite(Number(text)) ? Number(text) : (text as unknown as number));

export function toBody(d: Draft): RuleBody {
  const body: RuleBody = {
    name: d.name,
    enabled: d.enabled,
    scope: d.scopeKind === "devices" ? { devices: d.devices } : d.scopeKind === "device_type" ? { device_type: d.deviceType } : { all: true },
    condition: toJson(d.condition),
    for_seconds: int(d.forSeconds),
    schedule: d.scheduled ? d.schedule : null,
    severity: d.severity,
    message: d.message,
    cooldown_seconds: int(d.cooldownSeconds),
    auto_resolve: d.autoResolve,
    notify: { users: d.users, emails: list(d.emails), whatsapp: numbers(d.whatsapp) },
  };
  if (d.remindMinutes.trim()) body.notify.remind_every_minutes = int(d.remindMinutes);
  if (d.escalateMinutes.trim()) {
    body.notify.escalate_after_minutes = int(d.escalateMinutes);
    body.notify.escalate_to = { users: d.escalateUsers, emails: list(d.escalateEmails), whatsapp: numbers(d.escalateWhatsapp) };
  }
  if (int(d.clearForSeconds)) body.clear_for_seconds = int(d.clearForSeconds);
  if (d.deadband.trim() !== "") body.deadband = int(d.deadband);
  return body;
}

export function RuleEditorPage() {
  const { ruleId } = useParams();
  const { factory } = useFactory();
  const rule = useAsync(
    async (signal) =>
      ruleId
        ? ((await unwrap(api.GET("/api/v1/factories/{factory_id}/rules/{rule_id}", { params: { path: { factory_id: factory, rule_id: ruleId } }, signal }))) as unknown as Rule)
        : null,
    [factory, ruleId],
  );
  if (isNotFound(rule.error)) return <NotFound />;
  if (rule.loading && rule.data === undefined) return <Loading />;
  return <RuleEditor key={ruleId ?? "new"} rule={rule.data ?? null} />;
}

function RuleEditor({ rule }: { rule: Rule | null }) {
  const { factory, can, timezone, isSuperAdmin } = useFactory();
  const canListUsers = isSuperAdmin || can("users:read");
  const toast = useToast();
  const navigate = useNavigate();
  const readOnly = !can("rules:write");
  const [draft, setDraft] = useState<Draft>(() => (rule ? fromRule(rule) : emptyDraft()));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [saving, setSaving] = useState(false);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const set = (patch: Partial<Draft>) => setDraft((d) => ({ ...d, ...patch }));

  const devices = useAsync((signal) => loadAllDevices(factory, {}, signal), [factory]);
  const catalogue = useAsync(
    (signal) => unwrap(api.GET("/api/v1/factories/{factory_id}/properties", { params: { path: { factory_id: factory }, query: { limit: 1000 } }, signal })),
    [factory],
  );
  const users = useAsync(
    async (signal) =>
      !canListUsers ? undefined : (await unwrap(api.GET("/api/v1/factories/{factory_id}/users", { params: { path: { factory_id: factory }, query: { limit: 500 } }, signal }))) as Page<User>,
    [factory, canListUsers],
  );
  const propertyNames = useMemo(() => [...new Set((catalogue.data?.items ?? []).map((p) => p.name))].sort(), [catalogue.data]);
  const types = useMemo(() => [...new Set((devices.data ?? []).map((d) => d.type).filter(Boolean))].sort(), [devices.data]);
  const paths = useMemo(() => nodePaths(draft.condition), [draft.condition]);

  async function save(e: FormEvent) {
    e.preventDefault();
    setSaving(true);
    setErrors({});
    try {
      const body = toBody(draft);
      const saved = (
        rule
          ? await unwrap(api.PUT("/api/v1/factories/{factory_id}/rules/{rule_id}", { params: { path: { factory_id: factory, rule_id: rule.id } }, body: body as never }))
          : await unwrap(api.POST("/api/v1/factories/{factory_id}/rules", { params: { path: { factory_id: factory } }, body: body as never }))
      ) as unknown as Rule;
      const warnings = saved.warnings ?? [];
      toast.show("success", `Rule “${saved.name}” saved`, warnings.length ? `Warnings: ${warnings.map((w) => w.message).join("; ")}` : undefined);
      navigate(`/f/${factory}/rules/${saved.id}`, { replace: true });
      if (rule) setDraft(fromRule(saved));
    } catch (err) {
      if (err instanceof ApiError && (err.status === 422 || err.status === 400) && (err.problem.errors?.length ?? 0) > 0) {
        setErrors(err.fieldErrors());
        toast.show("error", "The rule has errors", err.problem.detail);
      } else toast.error(err);
    } finally {
      setSaving(false);
    }
  }

  async function remove() {
    if (!rule) return;
    try {
      await unwrap(api.DELETE("/api/v1/factories/{factory_id}/rules/{rule_id}", { params: { path: { factory_id: factory, rule_id: rule.id } } }));
      toast.show("success", `Rule “${rule.name}” deleted`, "Its alerts are kept.");
      navigate(`/f/${factory}/rules`);
    } catch (e) {
      toast.error(e);
    }
  }

  const err = (field: string) => errors[field] ?? errorsUnder(errors, field)[0];
  const unmatched = Object.keys(errors).filter(
    (k) => !["name", "severity", "message", "for_seconds", "cooldown_seconds", "deadband", "clear_for_seconds"].includes(k) && !k.startsWith("condition") && !k.startsWith("scope") && !k.startsWith("schedule") && !k.startsWith("notify"),
  );

  return (
    <>
      <div className="page-head">
        <div>
          <div className="small muted">
            <Link to={`/f/${factory}/rules`}>Rules</Link> / {rule ? rule.name : "new"}
          </div>
          <h1>{rule ? rule.name : "New rule"}</h1>
          {rule && <div className="sub">Updated {fmtTime(rule.updated_at)}</div>}
        </div>
        <div className="actions">
          {rule && (
            <Link className="button" to={`/f/${factory}/alerts?rule_id=${rule.id}`}>
              Alerts of this rule
            </Link>
          )}
          {rule && !readOnly && (
            <button className="danger" onClick={() => setConfirmDelete(true)}>
              Delete
            </button>
          )}
        </div>
      </div>
      <div className="grid side">
        <form className="stack" onSubmit={save} noValidate aria-label="Rule">
          {unmatched.length > 0 && (
            <div className="callout danger" role="alert">
              {unmatched.map((k) => `${k}: ${errors[k]}`).join("; ")}
            </div>
          )}
          <fieldset disabled={readOnly}>
            <legend>Basics</legend>
            <div className="form-grid">
              <TextField className="wide" label="Name" value={draft.name} onChange={(e) => set({ name: e.target.value })} error={err("name")} required />
              <SelectField label="Severity" value={draft.severity} onChange={(e) => set({ severity: e.target.value as Severity })} error={err("severity")}>
                <option value="info">info</option>
                <option value="warning">warning</option>
                <option value="critical">critical</option>
              </SelectField>
              <label className="check" style={{ alignSelf: "end" }}>
                <input type="checkbox" checked={draft.enabled} onChange={(e) => set({ enabled: e.target.checked })} /> Enabled
              </label>
              <TextField
                className="wide"
                label="Message"
                value={draft.message}
                onChange={(e) => set({ message: e.target.value })}
                error={err("message")}
                placeholder="{device} {property} = {value} (limit {threshold})"
                help="Placeholders: {device} {property} {value} {threshold} {time} {rule}. Empty = a default message."
              />
            </div>
          </fieldset>

          <fieldset disabled={readOnly}>
            <legend>Scope</legend>
            <div className="row" role="radiogroup" aria-label="Scope">
              {(["devices", "device_type", "all"] as const).map((k) => (
                <label key={k} className="check">
                  <input type="radio" name="scope" checked={draft.scopeKind === k} onChange={() => set({ scopeKind: k })} />
                  {k === "devices" ? "Chosen devices" : k === "device_type" ? "A device type" : "All devices"}
                </label>
              ))}
            </div>
            <div style={{ marginTop: "0.6rem" }}>
              {draft.scopeKind === "devices" && (
                <DevicePicker ids={(devices.data ?? []).map((d) => d.id)} value={draft.devices} onChange={(v) => set({ devices: v })} />
              )}
              {draft.scopeKind === "device_type" && (
                <TextField label="Device type" list="device-types" value={draft.deviceType} onChange={(e) => set({ deviceType: e.target.value })} />
              )}
              <datalist id="device-types">
                {types.map((t) => (
                  <option key={t} value={t} />
                ))}
              </datalist>
              <FieldErrorText error={err("scope")} />
            </div>
          </fieldset>

          <fieldset>
            <legend>Condition</legend>
            <ConditionEditor root={draft.condition} onChange={(c) => set({ condition: c })} paths={paths} errors={errors} propertyList={propertyNames} readOnly={readOnly} />
            {errors.condition && <FieldErrorText error={errors.condition} />}
          </fieldset>

          <fieldset disabled={readOnly}>
            <legend>Timing</legend>
            <div className="form-grid">
              <TextField label="Hold for (s)" inputMode="numeric" value={draft.forSeconds} onChange={(e) => set({ forSeconds: e.target.value })} error={err("for_seconds")} help="Condition must hold this long" />
              <TextField label="Cooldown (s)" inputMode="numeric" value={draft.cooldownSeconds} onChange={(e) => set({ cooldownSeconds: e.target.value })} error={err("cooldown_seconds")} help="Between notifications" />
              <TextField label="Clear for (s)" inputMode="numeric" value={draft.clearForSeconds} onChange={(e) => set({ clearForSeconds: e.target.value })} error={err("clear_for_seconds")} help="False this long to resolve" />
              <TextField label="Deadband" inputMode="decimal" value={draft.deadband} onChange={(e) => set({ deadband: e.target.value })} error={err("deadband")} help="Value hysteresis (optional)" />
              <label className="check">
                <input type="checkbox" checked={draft.autoResolve} onChange={(e) => set({ autoResolve: e.target.checked })} /> Resolve automatically when the condition clears
              </label>
            </div>
          </fieldset>

          <fieldset disabled={readOnly}>
            <legend>Schedule</legend>
            <label className="check">
              <input type="checkbox" checked={draft.scheduled} onChange={(e) => set({ scheduled: e.target.checked })} /> Only on certain days and times
            </label>
            {draft.scheduled ? (
              <div className="stack" style={{ marginTop: "0.6rem" }}>
                <div className="small muted" data-testid="schedule-timezone">
                  Times are in {draft.schedule.timezone === "factory" ? `the factory's time zone (${timezone})` : draft.schedule.timezone}.
                </div>
                <div className="row" role="group" aria-label="Days">
                  {DAYS.map((day) => (
                    <label key={day} className="check">
                      <input
                        type="checkbox"
                        checked={draft.schedule.days.includes(day)}
                        onChange={(e) =>
                          set({ schedule: { ...draft.schedule, days: e.target.checked ? DAYS.filter((x) => x === day || draft.schedule.days.includes(x)) : draft.schedule.days.filter((x) => x !== day) } })
                        }
                      />
                      {day}
                    </label>
                  ))}
                </div>
                {draft.schedule.windows.map((w, i) => (
                  <div className="row" key={i}>
                    <label className="row small">
                      From <input type="time" value={w.from} onChange={(e) => set({ schedule: { ...draft.schedule, windows: draft.schedule.windows.map((x, j) => (j === i ? { ...x, from: e.target.value } : x)) } })} />
                    </label>
                    <label className="row small">
                      to <input type="time" value={w.to === "24:00" ? "23:59" : w.to} onChange={(e) => set({ schedule: { ...draft.schedule, windows: draft.schedule.windows.map((x, j) => (j === i ? { ...x, to: e.target.value } : x)) } })} />
                    </label>
                    <button type="button" className="ghost small" aria-label="Remove window" onClick={() => set({ schedule: { ...draft.schedule, windows: draft.schedule.windows.filter((_, j) => j !== i) } })}>
                      ✕
                    </button>
                    <FieldErrorText error={err(`schedule.windows[${i}]`)} />
                  </div>
                ))}
                <div className="row">
                  <button type="button" className="small" onClick={() => set({ schedule: { ...draft.schedule, windows: [...draft.schedule.windows, { from: "22:00", to: "06:00" }] } })}>
                    + Time window
                  </button>
                  <span className="small muted">A window whose end is before its start crosses midnight. No windows = all day.</span>
                </div>
                <FieldErrorText error={err("schedule")} />
              </div>
            ) : (
              <div className="small muted" style={{ marginTop: "0.4rem" }}>
                Always active. Factory time zone: {timezone}.
              </div>
            )}
          </fieldset>

          <fieldset disabled={readOnly}>
            <legend>Notify</legend>
            <div className="form-grid">
              <UserTargets
                label="Users"
                users={users.data?.items}
                value={draft.users}
                onChange={(v) => set({ users: v })}
                error={targetError(errors, "notify.users", draft.users)}
              />
              <TextField
                className="wide"
                label="Emails"
                value={draft.emails}
                onChange={(e) => set({ emails: e.target.value })}
                error={targetError(errors, "notify.emails", list(draft.emails))}
                placeholder="ops@example.com, …"
                data-testid="notify-emails"
              />
              <TextField
                className="wide"
                label="WhatsApp numbers"
                value={draft.whatsapp}
                onChange={(e) => set({ whatsapp: e.target.value })}
                error={targetError(errors, "notify.whatsapp", numbers(draft.whatsapp))}
                placeholder="+4915112345678, …"
                help="E.164: + country code and number, no spaces; separate several with commas"
                data-testid="notify-whatsapp"
              />
              <TextField
                label="Remind every (min)"
                inputMode="numeric"
                value={draft.remindMinutes}
                onChange={(e) => set({ remindMinutes: e.target.value })}
                error={err("notify.remind_every_minutes")}
                help="Critical alerts, until acknowledged"
              />
              <TextField
                label="Escalate after (min)"
                inputMode="numeric"
                value={draft.escalateMinutes}
                onChange={(e) => set({ escalateMinutes: e.target.value })}
                error={err("notify.escalate_after_minutes")}
                help="Unacknowledged this long → notify below"
              />
              {draft.escalateMinutes.trim() !== "" && (
                <>
                  {errors["notify.escalate_to"] && (
                    <div className="wide">
                      <FieldErrorText error={errors["notify.escalate_to"]} />
                    </div>
                  )}
                  <UserTargets
                    label="Escalate to users"
                    users={users.data?.items}
                    value={draft.escalateUsers}
                    onChange={(v) => set({ escalateUsers: v })}
                    error={targetError(errors, "notify.escalate_to.users", draft.escalateUsers)}
                  />
                  <TextField
                    className="wide"
                    label="Escalate to emails"
                    value={draft.escalateEmails}
                    onChange={(e) => set({ escalateEmails: e.target.value })}
                    error={targetError(errors, "notify.escalate_to.emails", list(draft.escalateEmails))}
                  />
                  <TextField
                    className="wide"
                    label="Escalate to WhatsApp"
                    value={draft.escalateWhatsapp}
                    onChange={(e) => set({ escalateWhatsapp: e.target.value })}
                    error={targetError(errors, "notify.escalate_to.whatsapp", numbers(draft.escalateWhatsapp))}
                  />
                </>
              )}
            </div>
          </fieldset>

          {!readOnly && (
            <div className="row end">
              <Link className="button" to={`/f/${factory}/rules`}>
                Cancel
              </Link>
              <button className="primary" type="submit" disabled={saving} data-testid="save-rule">
                {saving ? "Saving…" : rule ? "Save rule" : "Create rule"}
              </button>
            </div>
          )}
        </form>
        <div>
          <div style={{ position: "sticky", top: 70 }}>
            <Backtest draft={draft} onErrors={setErrors} knownDevices={(devices.data ?? []).map((d) => ({ id: d.id, type: d.type }))} />
          </div>
        </div>
      </div>
      {confirmDelete && rule && (
        <Modal title={`Delete “${rule.name}”?`} onClose={() => setConfirmDelete(false)}>
          <p>The rule stops evaluating and its open alerts are resolved. Its alert history is kept.</p>
          <div className="row end">
            <button onClick={() => setConfirmDelete(false)}>Cancel</button>
            <button className="danger" onClick={() => void remove()}>
              Delete rule
            </button>
          </div>
        </Modal>
      )}
    </>
  );
}

function DevicePicker({ ids, value, onChange }: { ids: string[]; value: string[]; onChange: (v: string[]) => void }) {
  const [text, setText] = useState("");
  const matches = text ? ids.filter((id) => id.includes(text) && !value.includes(id)).slice(0, 8) : [];
  return (
    <div className="stack">
      <div className="row">
        {value.map((id) => (
          <span key={id} className="badge">
            <span className="mono">{id}</span>
            <button type="button" className="ghost small" style={{ padding: 0 }} aria-label={`Remove ${id}`} onClick={() => onChange(value.filter((x) => x !== id))}>
              ✕
            </button>
          </span>
        ))}
        {value.length === 0 && <span className="muted small">No devices chosen yet.</span>}
      </div>
      <div className="row">
        <input
          aria-label="Add device"
          placeholder="Type a device id…"
          value={text}
          list="scope-devices"
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter") {
              e.preventDefault();
              const id = text.trim();
              if (id && !value.includes(id)) onChange([...value, id]);
              setText("");
            }
          }}
        />
        <button
          type="button"
          className="small"
          onClick={() => {
            const id = text.trim();
            if (id && !value.includes(id)) onChange([...value, id]);
            setText("");
          }}
        >
          Add
        </button>
        <datalist id="scope-devices">
          {matches.map((id) => (
            <option key={id} value={id} />
          ))}
        </datalist>
      </div>
    </div>
  );
}

const BACKTEST_RANGES = [
  { key: "1h", label: "1 h", ms: 3_600_000 },
  { key: "24h", label: "24 h", ms: 86_400_000 },
  { key: "7d", label: "7 d", ms: 7 * 86_400_000 },
  { key: "30d", label: "30 d", ms: 30 * 86_400_000 },
];

/** The part of the backtest range that has data or alerts (history is often shorter than the range). */
function fitRange(result: { from: number; to: number; series: SeriesData[]; r: BacktestResult }): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of result.series)
    for (const [t] of s.points) {
      lo = Math.min(lo, t);
      hi = Math.max(hi, t);
    }
  for (const a of result.r.alerts) {
    lo = Math.min(lo, Date.parse(a.opened_at));
    hi = Math.max(hi, a.resolved_at ? Date.parse(a.resolved_at) : result.to);
  }
  if (!Number.isFinite(lo)) return [result.from, result.to];
  const pad = Math.max(30_000, (hi - lo) * 0.05);
  return [Math.max(result.from, lo - pad), Math.min(result.to, hi + pad)];
}

function Backtest({ draft, onErrors, knownDevices }: { draft: Draft; onErrors: (e: Record<string, string>) => void; knownDevices: { id: string; type: string }[] }) {
  const { factory } = useFactory();
  const toast = useToast();
  const [rangeKey, setRangeKey] = useState("24h");
  const [running, setRunning] = useState(false);
  const [result, setResult] = useState<{ r: BacktestResult; from: number; to: number; series: SeriesData[]; device: string | null } | null>(null);
  useEffect(() => setResult(null), [rangeKey]);

  async function run() {
    const range = BACKTEST_RANGES.find((r) => r.key === rangeKey) ?? BACKTEST_RANGES[1]!;
    const to = Date.now();
    const from = to - range.ms;
    setRunning(true);
    try {
      const body = toBody(draft);
      const r = (await unwrap(
        api.POST("/api/v1/factories/{factory_id}/rules/backtest", {
          params: { path: { factory_id: factory } },
          body: { rule: body as never, from: new Date(from).toISOString(), to: new Date(to).toISOString() },
        }),
      )) as unknown as BacktestResult;
      onErrors({});
      // Chart the first device with would-be alerts (else the first in scope) and the condition's properties.
      const inScope =
        draft.scopeKind === "devices" ? draft.devices : draft.scopeKind === "device_type" ? knownDevices.filter((d) => d.type === draft.deviceType).map((d) => d.id) : knownDevices.map((d) => d.id);
      const device = r.alerts[0]?.device_id ?? inScope[0] ?? null;
      const props = conditionProperties(draft.condition).slice(0, 4);
      const win: TimeWindow = { range: "custom", from, to, agg: range.ms > 3 * 3_600_000 ? "max" : "raw" };
      const series = device
        ? await Promise.all(props.map(async (p) => ({ label: `${device} · ${p}`, points: (await loadSeries(factory, device, p, win).catch(() => ({ points: [] }))).points })))
        : [];
      setResult({ r, from, to, series, device });
    } catch (e) {
      if (e instanceof ApiError && (e.problem.errors?.length ?? 0) > 0) {
        const mapped: Record<string, string> = {};
        for (const [k, v] of Object.entries(e.fieldErrors())) mapped[k.replace(/^rule\./, "")] = v;
        onErrors(mapped);
      }
      toast.error(e, "Backtest failed");
    } finally {
      setRunning(false);
    }
  }

  const fitted = useMemo(() => (result ? fitRange(result) : null), [result]);
  const bands: Band[] = useMemo(
    () =>
      (result?.r.alerts ?? [])
        .filter((a) => a.device_id === result?.device)
        .map((a) => ({ from: Date.parse(a.opened_at), to: a.resolved_at ? Date.parse(a.resolved_at) : null })),
    [result],
  );

  return (
    <div className="card" data-testid="backtest">
      <h2>Backtest preview</h2>
      <p className="small muted" style={{ marginTop: 0 }}>
        Runs this draft over stored history — nothing is saved, nobody is notified.
      </p>
      <div className="row">
        <div className="segmented" role="group" aria-label="Backtest range">
          {BACKTEST_RANGES.map((r) => (
            <button key={r.key} type="button" aria-pressed={rangeKey === r.key} onClick={() => setRangeKey(r.key)}>
              {r.label}
            </button>
          ))}
        </div>
        <button className="primary" type="button" onClick={() => void run()} disabled={running} data-testid="run-backtest">
          {running ? "Running…" : "Run backtest"}
        </button>
      </div>
      {running && <Loading label="Replaying history…" />}
      {result && !running && (
        <div className="stack" style={{ marginTop: "0.75rem" }} data-testid="backtest-result">
          <div className="row">
            <Badge kind={result.r.opened ? "warning" : "ok"}>
              {result.r.opened} would-be {result.r.opened === 1 ? "alert" : "alerts"}
            </Badge>
            <span className="small muted">
              {result.r.resolved} resolved · {result.r.points.toLocaleString()} points · {result.r.events.toLocaleString()} events
            </span>
          </div>
          {result.series.length > 0 ? (
            <TimeChart series={result.series} bands={bands} range={fitted ?? undefined} height={220} testId="backtest-chart" />
          ) : (
            <Empty icon="∿" title="Nothing to draw">
              Choose devices and properties with stored data.
            </Empty>
          )}
          {result.r.alerts.length > 0 && (
            <div className="table-wrap" style={{ maxHeight: 240, overflowY: "auto" }}>
              <table>
                <thead>
                  <tr>
                    <th>Device</th>
                    <th>Opened</th>
                    <th>Resolved</th>
                    <th>Last value</th>
                  </tr>
                </thead>
                <tbody>
                  {result.r.alerts.slice(0, 200).map((a, i) => (
                    <tr key={i}>
                      <td className="mono small">{a.device_id}</td>
                      <td className="small">{fmtShort(a.opened_at)}</td>
                      <td className="small">{a.resolved_at ? fmtShort(a.resolved_at) : <Badge kind="open">still open</Badge>}</td>
                      <td className="small num">{a.value === null ? "—" : String(a.value)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </div>
      )}
    </div>
  );
}

/**
 * The API names bad targets by index (`notify.emails[1]`); show which entry it was.
 * Errors on the list itself (`notify.emails`: too many) come first.
 */
export function targetError(errors: Record<string, string>, field: string, values: string[]): string | undefined {
  const out: string[] = [];
  if (errors[field]) out.push(errors[field]);
  for (const [k, v] of Object.entries(errors)) {
    const m = k.startsWith(field) ? /^\[(\d+)\]$/.exec(k.slice(field.length)) : null;
    if (!m) continue;
    const value = values[Number(m[1])];
    out.push(value !== undefined ? `“${value}” ${v}` : `entry ${Number(m[1]) + 1}: ${v}`);
  }
  return out.length ? out.join("; ") : undefined;
}

/** Users as checkboxes when the caller may list them (ids the list does not know stay, marked); else free ids. */
function UserTargets({ label, users, value, onChange, error }: { label: string; users: User[] | undefined; value: string[]; onChange: (v: string[]) => void; error?: string | undefined }) {
  if (!users) {
    return (
      <TextField
        className="wide"
        label={`${label} (ids)`}
        value={value.join(", ")}
        onChange={(e) => onChange(list(e.target.value))}
        error={error}
        help="You cannot list users; ask an administrator for their ids."
      />
    );
  }
  const known = new Set(users.map((u) => u.id));
  const unknown = value.filter((id) => !known.has(id));
  return (
    <div className="wide" role="group" aria-label={label}>
      <div className="small" style={{ fontWeight: 550, marginBottom: "0.25rem" }}>
        {label}
      </div>
      <div className="row">
        {users.map((u) => (
          <label key={u.id} className="check" title={[u.email, u.phone].filter(Boolean).join(" · ")}>
            <input type="checkbox" checked={value.includes(u.id)} onChange={(e) => onChange(e.target.checked ? [...value, u.id] : value.filter((x) => x !== u.id))} />
            {u.name}
            {u.status !== "active" && <span className="muted small"> (disabled)</span>}
          </label>
        ))}
        {unknown.map((id) => (
          <label key={id} className="check" title="Not a user of this factory (any more)">
            <input type="checkbox" checked onChange={() => onChange(value.filter((x) => x !== id))} />
            <span className="mono small">{id}</span> <span className="muted small">(unknown)</span>
          </label>
        ))}
      </div>
      <FieldErrorText error={error} />
    </div>
  );
}
