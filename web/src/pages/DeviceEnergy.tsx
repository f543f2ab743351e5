// The device page's energy parts: property semantics (with the server's suggestion, applied
// only on a click), state properties as a timeline, and the device's energy config.
import { useEffect, useMemo, useState } from "react";
import { api, unwrap } from "../api/client";
import { ApiError, describe, fieldErrorMap } from "../api/problem";
import type { PropertyView } from "../api/types";
import { StateTimeline } from "../chart/StateTimeline";
import { RANGES, type RangeKey } from "../chart/range";
import { getDeviceEnergy, putDeviceEnergy } from "../energy/api";
import { QUANTITIES, QUANTITY_LABELS, parametersOf, stateBands, unitAfterQuantityChange, unitsFor, type Quantity } from "../energy/shape";
import { useFactory } from "../factory";
import { FieldErrorText, Loading, SelectField, TextField, useAsync } from "../ui/common";
import { Modal } from "../ui/Modal";
import { useToast } from "../ui/toast";

/** A property with the semantics fields the server adds (issue 18). */
export type SemanticProperty = PropertyView & {
  quantity?: string | null;
  rollover?: number | null;
  wh_per_pulse?: number | null;
  counting?: string | null;
  suggestion?: { quantity: string; unit?: string | null } | null;
};

export const isQuantity = (q: unknown): q is Quantity => typeof q === "string" && (QUANTITIES as readonly string[]).includes(q);

/** A state property: annotated as one, or holding strings. */
export function isStateProperty(p: SemanticProperty): boolean {
  return p.quantity === "state" || p.value_type === "string" || p.value_type === "state";
}

/** "power · kW", "pulse counter · 10 Wh/pulse", … */
export function semanticsText(p: SemanticProperty): string {
  if (!isQuantity(p.quantity)) return "";
  const parts = [QUANTITY_LABELS[p.quantity].toLowerCase()];
  if (p.unit && p.quantity !== "pulse_counter") parts.push(p.unit);
  if (p.wh_per_pulse) parts.push(`${p.wh_per_pulse} Wh/pulse`);
  if (p.rollover) parts.push(`rolls over at ${p.rollover.toLocaleString()}`);
  if (p.counting === "per_message") parts.push("per message");
  return parts.join(" · ");
}

async function patchProperty(factory: string, p: SemanticProperty, body: Record<string, unknown>) {
  return unwrap(
    api.PATCH("/api/v1/factories/{factory_id}/devices/{device_id}/properties/{name}", {
      params: { path: { factory_id: factory, device_id: p.device_id, name: p.name } },
      body,
    }),
  );
}

/** The suggestion as a one-click action; pulse counters need Wh per pulse, so they open the dialog instead. */
export function SuggestionButton({ p, onApplied, onOpen }: { p: SemanticProperty; onApplied: () => void; onOpen: (q: Quantity, unit: string | null) => void }) {
  const { factory } = useFactory();
  const toast = useToast();
  const s = p.suggestion;
  if (!s || !isQuantity(s.quantity) || p.quantity) return null;
  const q = s.quantity;
  const unit = s.unit ?? unitAfterQuantityChange(q, p.unit ?? null);
  const needsMore = q === "pulse_counter" || ((unitsFor(q)?.length ?? 0) > 0 && !unit);
  return (
    <span className="suggestion" data-testid={`suggestion-${p.name}`}>
      suggested: {QUANTITY_LABELS[q].toLowerCase()}
      {unit ? ` · ${unit}` : ""}
      <button
        type="button"
        className="small"
        onClick={async () => {
          if (needsMore) return onOpen(q, unit);
          try {
            await patchProperty(factory, p, { quantity: q, unit });
            toast.show("success", `${p.name}: ${QUANTITY_LABELS[q].toLowerCase()}${unit ? ` in ${unit}` : ""}`);
            onApplied();
          } catch (e) {
            if (e instanceof ApiError && e.status === 422) onOpen(q, unit);
            toast.error(e);
          }
        }}
      >
        Apply suggestion
      </button>
    </span>
  );
}

export function SemanticsDialog({ p, initial, onClose, onSaved }: { p: SemanticProperty; initial?: { quantity: Quantity; unit: string | null }; onClose: () => void; onSaved: () => void }) {
  const { factory } = useFactory();
  const toast = useToast();
  const [quantity, setQuantity] = useState<Quantity | "">(initial?.quantity ?? (isQuantity(p.quantity) ? p.quantity : ""));
  const [unit, setUnit] = useState<string>(initial ? (initial.unit ?? "") : (p.unit ?? ""));
  const [rollover, setRollover] = useState(p.rollover ? String(p.rollover) : "");
  const [whPerPulse, setWhPerPulse] = useState(p.wh_per_pulse ? String(p.wh_per_pulse) : "");
  const [counting, setCounting] = useState(p.counting ?? "cumulative");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<string | null>(null);
  const units = quantity ? unitsFor(quantity) : null;
  const params = parametersOf(quantity || null);
  const state = isStateProperty(p);
  return (
    <Modal title={`What ${p.name} measures`} onClose={onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          const body: Record<string, unknown> = { quantity: quantity || null, unit: unit.trim() ? unit.trim() : null };
          if (params.rollover) body["rollover"] = rollover.trim() ? Number(rollover) : null;
          if (params.whPerPulse) body["wh_per_pulse"] = whPerPulse.trim() ? Number(whPerPulse) : null;
          if (params.counting) body["counting"] = counting;
          try {
            await patchProperty(factory, p, body);
            toast.show("success", `Semantics of ${p.name} saved`);
            onSaved();
          } catch (err) {
            if (err instanceof ApiError && err.status === 422 && (err.problem.errors ?? []).length) setErrors(fieldErrorMap(err.problem.errors ?? []));
            else setProblem(describe(err));
          }
        }}
      >
        <div className="form-grid">
          <SelectField
            label="Quantity"
            value={quantity}
            error={errors["quantity"]}
            onChange={(e) => {
              const q = e.target.value as Quantity | "";
              setQuantity(q);
              setUnit(q ? (unitAfterQuantityChange(q, unit || null) ?? "") : unit);
            }}
            data-testid="semantics-quantity"
          >
            <option value="">— not annotated —</option>
            {QUANTITIES.filter((q) => (state ? q === "state" : q !== "state")).map((q) => (
              <option key={q} value={q}>
                {QUANTITY_LABELS[q]}
              </option>
            ))}
          </SelectField>
          {state && quantity === "" ? null : quantity === "" || units === null ? (
            <TextField label="Unit" value={unit} onChange={(e) => setUnit(e.target.value)} error={errors["unit"]} placeholder={quantity === "production_count" ? "pcs, bottles, …" : "free text"} />
          ) : units.length > 0 ? (
            <SelectField label="Unit" value={unit} onChange={(e) => setUnit(e.target.value)} error={errors["unit"]} data-testid="semantics-unit">
              {units.map((u) => (
                <option key={u}>{u}</option>
              ))}
            </SelectField>
          ) : (
            <div className="field">
              <label>Unit</label>
              <span className="muted small">none for {QUANTITY_LABELS[quantity].toLowerCase()}</span>
              <FieldErrorText error={errors["unit"]} />
            </div>
          )}
          {params.whPerPulse && (
            <TextField label="Wh per pulse" type="number" step="any" min="0" required value={whPerPulse} onChange={(e) => setWhPerPulse(e.target.value)} error={errors["wh_per_pulse"]} />
          )}
          {params.rollover && (
            <TextField
              label="Rolls over at (optional)"
              type="number"
              step="any"
              min="0"
              value={rollover}
              onChange={(e) => setRollover(e.target.value)}
              error={errors["rollover"]}
              help="The value at which the meter wraps to 0, e.g. 4294967296 for a 32-bit register. Without it a drop is a reset."
            />
          )}
          {params.counting && (
            <SelectField label="Counting" value={counting} onChange={(e) => setCounting(e.target.value)} error={errors["counting"]}>
              <option value="cumulative">cumulative (a running total)</option>
              <option value="per_message">per message (units since the last one)</option>
            </SelectField>
          )}
        </div>
        {Object.entries(errors)
          .filter(([k]) => !["quantity", "unit", "rollover", "wh_per_pulse", "counting"].includes(k))
          .map(([k, v]) => (
            <div key={k} className="field-error">
              {k}: {v}
            </div>
          ))}
        {problem && <div className="callout danger">{problem}</div>}
        <div className="row end">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button className="primary" type="submit" data-testid="save-semantics">
            Save
          </button>
        </div>
      </form>
    </Modal>
  );
}

/** Every state property of the device as a timeline of coloured bands. */
export function StatesCard({ deviceId, properties }: { deviceId: string; properties: SemanticProperty[] }) {
  const { factory } = useFactory();
  const states = properties.filter(isStateProperty);
  const [range, setRange] = useState<Exclude<RangeKey, "custom">>("24h");
  const [now, setNow] = useState(Date.now());
  useEffect(() => setNow(Date.now()), [range]);
  const span = RANGES.find((r) => r.key === range)?.ms ?? 86_400_000;
  const from = now - span;
  const series = useAsync(
    async (signal) =>
      Promise.all(
        states.map((p) =>
          unwrap(
            api.GET("/api/v1/factories/{factory_id}/telemetry/series", {
              params: { path: { factory_id: factory }, query: { device_id: deviceId, property: p.name, from: new Date(from).toISOString(), to: new Date(now).toISOString(), limit: 20_000 } },
              signal,
            }),
          ).then((s) => ({ name: p.name, bands: stateBands(s.points.map((x) => ({ ts: Date.parse(x.ts), value: x.value })), from, now) })),
        ),
      ),
    [factory, deviceId, states.map((p) => p.name).join(","), from, now],
  );
  if (states.length === 0) return null;
  return (
    <div className="card" style={{ marginTop: "1rem" }}>
      <div className="row" style={{ marginBottom: "0.5rem" }}>
        <h2 style={{ margin: 0 }}>States</h2>
        <span style={{ flex: 1 }} />
        <div className="segmented" role="group" aria-label="State range">
          {RANGES.filter((r) => r.key !== "15m").map((r) => (
            <button key={r.key} type="button" aria-label={`States over ${r.label}`} aria-pressed={range === r.key} onClick={() => setRange(r.key)}>
              {r.label}
            </button>
          ))}
        </div>
      </div>
      {series.error ? (
        <div className="callout danger">{describe(series.error)}</div>
      ) : !series.data ? (
        <Loading />
      ) : (
        <div className="stack">
          {series.data.map((s) => (
            <div key={s.name}>
              <div className="mono small" style={{ marginBottom: "0.2rem" }}>
                {s.name}
              </div>
              {s.bands.length === 0 ? <div className="muted small">No state reported in this range.</div> : <StateTimeline bands={s.bands} from={from} to={now} testId={`state-timeline-${s.name}`} />}
            </div>
          ))}
        </div>
      )}
    </div>
  );
}

/** Which property the device's energy comes from, its state property and idle threshold. */
export function EnergyConfigCard({ deviceId, properties }: { deviceId: string; properties: SemanticProperty[] }) {
  const { factory, can } = useFactory();
  const toast = useToast();
  const readOnly = !can("devices:write");
  const config = useAsync(async () => {
    try {
      return await getDeviceEnergy(factory, deviceId);
    } catch (e) {
      // A server without the energy routes: no card.
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }
  }, [factory, deviceId]);
  const [draft, setDraft] = useState<{ source: string; state: string; idle: string; maxGap: string } | null>(null);
  const [errors, setErrors] = useState<Record<string, string>>({});
  useEffect(() => {
    if (config.data)
      setDraft({
        source: config.data.source_property ?? "",
        state: config.data.state_property ?? "",
        idle: config.data.idle_below_kw === null || config.data.idle_below_kw === undefined ? "" : String(config.data.idle_below_kw),
        maxGap: config.data.max_gap_minutes ? String(config.data.max_gap_minutes) : "",
      });
  }, [config.data]);
  const sources = useMemo(() => properties.filter((p) => p.quantity === "power" || p.quantity === "energy_counter" || p.quantity === "pulse_counter"), [properties]);
  const states = properties.filter(isStateProperty);
  if (config.data === null) return null;
  return (
    <div className="card" style={{ marginTop: "1rem" }} data-testid="energy-config">
      <h2>Energy</h2>
      {config.error ? (
        <div className="callout danger">{describe(config.error)}</div>
      ) : !draft ? (
        <Loading />
      ) : (
        <form
          onSubmit={async (e) => {
            e.preventDefault();
            const body = {
              source_property: draft.source || null,
              state_property: draft.state || null,
              idle_below_kw: draft.idle.trim() ? Number(draft.idle) : null,
              max_gap_minutes: draft.maxGap.trim() ? Number(draft.maxGap) : null,
            };
            try {
              config.setData(await putDeviceEnergy(factory, deviceId, body));
              setErrors({});
              toast.show("success", "Energy settings saved");
            } catch (err) {
              if (err instanceof ApiError && err.status === 422) setErrors(fieldErrorMap(err.problem.errors ?? []));
              toast.error(err);
            }
          }}
        >
          <div className="form-grid">
            <SelectField label="Energy from" value={draft.source} disabled={readOnly} onChange={(e) => setDraft({ ...draft, source: e.target.value })} error={errors["source_property"]}>
              <option value="">{sources.length ? "— automatic —" : "— annotate a power or energy property first —"}</option>
              {sources.map((p) => (
                <option key={p.name} value={p.name}>
                  {p.name} ({semanticsText(p)})
                </option>
              ))}
            </SelectField>
            <SelectField label="State property" value={draft.state} disabled={readOnly} onChange={(e) => setDraft({ ...draft, state: e.target.value })} error={errors["state_property"]}>
              <option value="">— none (idle by power threshold) —</option>
              {states.map((p) => (
                <option key={p.name} value={p.name}>
                  {p.name}
                </option>
              ))}
            </SelectField>
            <TextField
              label="Idle below (kW)"
              type="number"
              step="any"
              min="0"
              value={draft.idle}
              disabled={readOnly}
              onChange={(e) => setDraft({ ...draft, idle: e.target.value })}
              error={errors["idle_below_kw"]}
              help="Without a state property, a stretch whose mean power is below this counts as idle."
            />
            <TextField
              label="Longest bridged gap (min)"
              type="number"
              step="1"
              min="1"
              max="1440"
              placeholder="15"
              value={draft.maxGap}
              disabled={readOnly}
              onChange={(e) => setDraft({ ...draft, maxGap: e.target.value })}
              error={errors["max_gap_minutes"]}
              help="Power samples further apart than this are a gap: reported, never bridged."
            />
          </div>
          {!readOnly && (
            <div className="row end">
              <button className="primary" type="submit" data-testid="save-energy-config">
                Save
              </button>
            </div>
          )}
        </form>
      )}
    </div>
  );
}

