import { useEffect, useRef, useState } from "react";
import { niceTicks } from "../energy/shape";
import { PALETTE } from "./TimeChart";

export interface BarSeries {
  name: string;
  values: number[];
  color?: string;
}

interface Props {
  /** One label per bar (x axis). */
  labels: string[];
  /** Stacked from the bottom in this order. */
  series: BarSeries[];
  unit: string;
  height?: number;
  testId?: string;
  /** A tooltip line per bar, e.g. its time span. */
  titles?: string[];
}

/** Stacked bars in SVG: themed by the page's CSS variables, one <title> tooltip per segment. */
export function BarChart({ labels, series, unit, height = 280, testId, titles }: Props) {
  const el = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(600);
  useEffect(() => {
    if (!el.current) return;
    setWidth(el.current.clientWidth || 600);
    const observer = new ResizeObserver(() => el.current && setWidth(el.current.clientWidth || 600));
    observer.observe(el.current);
    return () => observer.disconnect();
  }, []);
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + Math.max(0, s.values[i] ?? 0), 0));
  const ticks = niceTicks(Math.max(0, ...totals));
  const top = ticks[ticks.length - 1] ?? 1;
  const pad = { left: 60, right: 12, top: 10, bottom: 28 };
  const plotW = Math.max(10, width - pad.left - pad.right);
  const plotH = height - pad.top - pad.bottom;
  const slot = labels.length ? plotW / labels.length : plotW;
  const barW = Math.max(2, Math.min(48, slot * 0.7));
  const y = (v: number) => pad.top + plotH - (v / top) * plotH;
  // Thin the x labels so they do not overlap (about 70 px each).
  const every = Math.max(1, Math.ceil(70 / slot));
  const colorOf = (s: BarSeries, i: number) => s.color ?? PALETTE[i % PALETTE.length]!;
  return (
    <div>
      <div ref={el} className="chart" data-testid={testId} data-bars={labels.length} style={{ minHeight: height }}>
        <svg width={width} height={height} role="img" aria-label={`Stacked bars in ${unit}`} className="bars">
          {ticks.map((t) => (
            <g key={t}>
              <line x1={pad.left} x2={pad.left + plotW} y1={y(t)} y2={y(t)} className="grid-line" />
              <text x={pad.left - 6} y={y(t) + 4} textAnchor="end" className="axis-text">
                {t.toLocaleString()}
              </text>
            </g>
          ))}
          <text x={12} y={pad.top + plotH / 2} className="axis-text" transform={`rotate(-90 12 ${pad.top + plotH / 2})`} textAnchor="middle">
            {unit}
          </text>
          {labels.map((label, i) => {
            const x = pad.left + i * slot + (slot - barW) / 2;
            let acc = 0;
            return (
              <g key={i} data-total={totals[i]}>
                {series.map((s, si) => {
                  const v = Math.max(0, s.values[i] ?? 0);
                  if (v === 0) return null;
                  const y0 = y(acc);
                  acc += v;
                  const y1 = y(acc);
                  return (
                    <rect key={s.name} x={x} y={y1} width={barW} height={Math.max(0.5, y0 - y1)} fill={colorOf(s, si)}>
                      <title>{`${titles?.[i] ?? label} · ${s.name}: ${v.toLocaleString(undefined, { maximumFractionDigits: 3 })} ${unit} (total ${(totals[i] ?? 0).toLocaleString(undefined, { maximumFractionDigits: 3 })} ${unit})`}</title>
                    </rect>
                  );
                })}
                {i % every === 0 && (
                  <text x={x + barW / 2} y={height - 8} textAnchor="middle" className="axis-text">
                    {label}
                  </text>
                )}
              </g>
            );
          })}
          <line x1={pad.left} x2={pad.left + plotW} y1={y(0)} y2={y(0)} className="axis-line" />
        </svg>
      </div>
      <div className="chart-legend">
        {series.map((s, i) => (
          <span key={s.name}>
            <span className="sw" style={{ background: colorOf(s, i) }} />
            {s.name}
          </span>
        ))}
      </div>
    </div>
  );
}
