import { stateColor, timeInStates, fmtDuration, type StateBand } from "../energy/shape";

/** A state property as coloured bands over [from, to), with the time in each state. */
export function StateTimeline({ bands, from, to, testId }: { bands: StateBand[]; from: number; to: number; testId?: string }) {
  const span = Math.max(1, to - from);
  const fmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  return (
    <div data-testid={testId} data-bands={bands.length}>
      <div className="state-track" role="img" aria-label="State timeline">
        {bands.map((b) => (
          <div
            key={`${b.from}-${b.state}`}
            className="band"
            data-state={b.state}
            style={{ left: `${((b.from - from) / span) * 100}%`, width: `${Math.max(0.2, ((b.to - b.from) / span) * 100)}%`, background: stateColor(b.state) }}
            title={`${b.state}: ${fmt.format(b.from)} – ${fmt.format(b.to)} (${fmtDuration(b.to - b.from)})`}
          />
        ))}
      </div>
      <div className="state-axis">
        <span>{fmt.format(from)}</span>
        <span>{fmt.format(from + span / 2)}</span>
        <span>{fmt.format(to)}</span>
      </div>
      <div className="chart-legend">
        {timeInStates(bands).map((s) => (
          <span key={s.state}>
            <span className="sw" style={{ background: stateColor(s.state) }} />
            {s.state} · {fmtDuration(s.ms)}
          </span>
        ))}
      </div>
    </div>
  );
}
