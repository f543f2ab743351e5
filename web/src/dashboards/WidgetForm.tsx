// Add or change one widget: the fields its type uses, with the form's own checks and the
// server's 422 field errors (paths under `widgets[i]`) next to the fields they name.
import { useEffect, useId, useState } from "react";
import type { PropertyView } from "../api/types";
import { listGroups } from "../energy/api";
import { useFactory } from "../factory";
import { loadAllDevices } from "../pages/data";
import { Modal } from "../ui/Modal";
import { FieldErrorText, SelectField, TextArea, TextField, useAsync } from "../ui/common";
import { DEFAULT_SIZE, MAX_SERIES, WIDGET_RANGES, WIDGET_TYPES, cleanWidget, usesField, validateWidget, type Widget, type WidgetType } from "./model";
import { deviceProperties } from "./widgets";

interface Props {
  initial: Widget | null;
  /** The server's errors for this widget, keyed relative to it (`device_id`, `series[0].property`). */
  serverErrors: Record<string, string>;
  onSave: (w: Widget) => void;
  onClose: () => void;
}

/** Device ids for the type-ahead; a big factory lists the first few thousand. */
const DEVICE_SUGGESTIONS = 2000;

export function WidgetForm({ initial, serverErrors, onSave, onClose }: Props) {
  const { factory } = useFactory();
  const [w, setW] = useState<Widget>(initial ?? { type: "value", title: "" });
  const [errors, setErrors] = useState<Record<string, string>>(serverErrors);
  const devices = useAsync((signal) => loadAllDevices(factory, {}, signal).then((d) => d.slice(0, DEVICE_SUGGESTIONS)), [factory]);
  const groups = useAsync(() => listGroups(factory).catch(() => []), [factory]);
  const deviceList = useId();
  const set = (patch: Partial<Widget>) => {
    setW((old) => ({ ...old, ...patch }));
    // A changed field's error is stale.
    setErrors((old) => {
      const next = { ...old };
      for (const k of Object.keys(patch)) for (const e of Object.keys(next)) if (e === k || e.startsWith(`${k}[`) || e.startsWith(`${k}.`)) delete next[e];
      return next;
    });
  };
  const uses = (f: Parameters<typeof usesField>[1]) => usesField(w.type, f);
  const series = w.series ?? [];
  const submit = () => {
    const found = validateWidget(w);
    if (Object.keys(found).length) {
      setErrors(found);
      return;
    }
    onSave(cleanWidget(w));
  };
  const num = (s: string) => (s.trim() === "" ? null : Number(s));

  return (
    <Modal title={initial ? `Widget: ${initial.title}` : "Add widget"} onClose={onClose} wide>
      <form
        className="form-grid"
        data-testid="widget-form"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <datalist id={deviceList}>
          {(devices.data ?? []).map((d) => (
            <option key={d.id} value={d.id}>
              {d.name}
            </option>
          ))}
        </datalist>
        <SelectField
          label="Type"
          value={w.type}
          error={errors.type}
          onChange={(e) => {
            const type = e.target.value as WidgetType;
            set({ type, ...(type === "chart" && !w.series?.length ? { series: [{ device_id: w.device_id ?? "", property: w.property ?? "" }] } : {}) });
          }}
        >
          {WIDGET_TYPES.map((t) => (
            <option key={t.type} value={t.type}>
              {t.label}
            </option>
          ))}
        </SelectField>
        <TextField label="Title" value={w.title} error={errors.title} maxLength={100} onChange={(e) => set({ title: e.target.value })} />
        {uses("device_id") && (
          <TextField
            label={w.type === "value" || w.type === "gauge" ? "Device" : "Device (optional)"}
            list={deviceList}
            value={w.device_id ?? ""}
            error={errors.device_id}
            placeholder="device id"
            onChange={(e) => set({ device_id: e.target.value })}
          />
        )}
        {uses("property") && <PropertyInput device={w.device_id ?? ""} value={w.property ?? ""} error={errors.property} onChange={(property) => set({ property })} />}
        {uses("group_id") && (
          <SelectField label="Group (optional)" value={w.group_id ?? ""} error={errors.group_id} onChange={(e) => set({ group_id: e.target.value })}>
            <option value="">{w.type === "energy_bars" ? "— whole factory (or the device) —" : "— every device —"}</option>
            {(groups.data ?? []).map((g) => (
              <option key={g.id} value={g.id}>
                {g.name}
              </option>
            ))}
          </SelectField>
        )}
        {uses("range") && (
          <SelectField label="Time range" value={w.range ?? ""} error={errors.range} help="The dashboard's range, when chosen, wins." onChange={(e) => set({ range: e.target.value })}>
            <option value="">24h (default)</option>
            {WIDGET_RANGES.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </SelectField>
        )}
        {uses("min") && <TextField label="Minimum" type="number" step="any" value={w.min ?? ""} error={errors.min} placeholder="0" onChange={(e) => set({ min: num(e.target.value) })} />}
        {uses("max") && (
          <TextField label="Maximum (limit)" type="number" step="any" value={w.max ?? ""} error={errors.max} help="e.g. the contracted demand" onChange={(e) => set({ max: num(e.target.value) })} />
        )}
        {uses("text") && <TextArea className="wide" label="Text" value={w.text ?? ""} error={errors.text} maxLength={2000} onChange={(e) => set({ text: e.target.value })} />}
        {uses("series") && (
          <fieldset className="wide" data-testid="series-editor">
            <legend>Series</legend>
            <div className="stack">
              {series.map((s, i) => (
                <div className="row series-row" key={i}>
                  <TextField
                    label={`Series ${i + 1} device`}
                    list={deviceList}
                    value={s.device_id}
                    error={errors[`series[${i}].device_id`]}
                    onChange={(e) => set({ series: series.map((x, j) => (j === i ? { ...x, device_id: e.target.value } : x)) })}
                  />
                  <PropertyInput
                    label={`Series ${i + 1} property`}
                    device={s.device_id}
                    value={s.property}
                    error={errors[`series[${i}].property`]}
                    onChange={(property) => set({ series: series.map((x, j) => (j === i ? { ...x, property } : x)) })}
                  />
                  <button type="button" className="small ghost" aria-label={`Remove series ${i + 1}`} onClick={() => set({ series: series.filter((_, j) => j !== i) })}>
                    ✕
                  </button>
                </div>
              ))}
              <div className="row">
                <button type="button" className="small" disabled={series.length >= MAX_SERIES} onClick={() => set({ series: [...series, { device_id: series[series.length - 1]?.device_id ?? "", property: "" }] })}>
                  + Add series
                </button>
                <FieldErrorText error={errors.series} />
              </div>
            </div>
          </fieldset>
        )}
        {Object.entries(errors)
          .filter(([k]) => k === "" || k.startsWith("layout"))
          .map(([k, v]) => (
            <div className="wide field-error" role="alert" key={k}>
              {k ? `${k}: ` : ""}
              {v}
            </div>
          ))}
        <div className="wide row end">
          <span className="muted small" style={{ marginRight: "auto" }}>
            {initial?.layout ? "" : `Placed in the first free spot, ${DEFAULT_SIZE[w.type].w} × ${DEFAULT_SIZE[w.type].h} cells; drag to move and resize.`}
          </span>
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" data-testid="save-widget">
            {initial ? "Apply" : "Add widget"}
          </button>
        </div>
      </form>
    </Modal>
  );
}

function PropertyInput({ device, value, error, onChange, label = "Property" }: { device: string; value: string; error?: string | undefined; onChange: (v: string) => void; label?: string }) {
  const { factory } = useFactory();
  const list = useId();
  const [props, setProps] = useState<PropertyView[]>([]);
  useEffect(() => {
    let live = true;
    // Wait for the typing to pause: each half-typed id would be a request.
    const t = setTimeout(() => {
      if (!device.trim()) setProps([]);
      else void deviceProperties(factory, device.trim()).then((p) => live && setProps(p));
    }, 300);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [factory, device]);
  return (
    <>
      <TextField label={label} list={list} value={value} error={error} placeholder="property" onChange={(e) => onChange(e.target.value)} />
      <datalist id={list}>
        {props.map((p) => (
          <option key={p.name} value={p.name}>
            {p.unit ?? ""}
          </option>
        ))}
      </datalist>
    </>
  );
}
