import { AGGS, RANGES, type TimeWindow } from "./range";

function toLocalInput(ms: number): string {
  const d = new Date(ms - new Date().getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

export function RangePicker({ value, onChange }: { value: TimeWindow; onChange: (w: TimeWindow) => void }) {
  return (
    <div className="row" role="group" aria-label="Time range">
      <div className="segmented">
        {RANGES.map((r) => (
          <button key={r.key} type="button" aria-pressed={value.range === r.key} onClick={() => onChange({ ...value, range: r.key })}>
            {r.label}
          </button>
        ))}
        <button
          type="button"
          aria-pressed={value.range === "custom"}
          onClick={() => onChange({ ...value, range: "custom", from: value.from ?? Date.now() - 86_400_000, to: value.to ?? Date.now() })}
        >
          Custom
        </button>
      </div>
      {value.range === "custom" && (
        <>
          <input
            type="datetime-local"
            aria-label="From"
            value={toLocalInput(value.from ?? Date.now() - 86_400_000)}
            onChange={(e) => e.target.value && onChange({ ...value, from: new Date(e.target.value).getTime() })}
          />
          <span className="muted">→</span>
          <input
            type="datetime-local"
            aria-label="To"
            value={toLocalInput(value.to ?? Date.now())}
            onChange={(e) => e.target.value && onChange({ ...value, to: new Date(e.target.value).getTime() })}
          />
        </>
      )}
      <label className="row small">
        <span className="muted">Aggregation</span>
        <select value={value.agg} onChange={(e) => onChange({ ...value, agg: e.target.value as TimeWindow["agg"] })} aria-label="Aggregation">
          {AGGS.map((a) => (
            <option key={a} value={a}>
              {a === "auto" ? "auto (avg)" : a}
            </option>
          ))}
        </select>
      </label>
    </div>
  );
}
