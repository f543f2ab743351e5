import { useEffect, useMemo, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { alignSeries, type SeriesData } from "./align";
import { currentTheme } from "../ui/theme";

export const PALETTE = ["#0ea5e9", "#f97316", "#10b981", "#a855f7", "#ef4444", "#eab308", "#14b8a6", "#6366f1", "#ec4899", "#84cc16"];

export interface Band {
  from: number;
  to: number | null;
  color?: string;
  label?: string;
}

interface Props {
  series: SeriesData[];
  /** Shaded time ranges (ms), e.g. the alerts a backtest would have opened. */
  bands?: Band[];
  height?: number;
  /** x range in ms; defaults to the data. */
  range?: [number, number];
  testId?: string;
  /** One y scale and axis per unit (left, right, then alternating); otherwise one shared axis. */
  axisPerUnit?: boolean;
}

/** The distinct units of the series, in order of first appearance (no unit counts as one). */
export function unitsOf(series: SeriesData[]): string[] {
  return [...new Set(series.map((s) => s.unit ?? ""))];
}

function themeColors() {
  const css = getComputedStyle(document.documentElement);
  return { text: css.getPropertyValue("--muted").trim() || "#666", grid: css.getPropertyValue("--border").trim() || "#ddd" };
}

export function TimeChart({ series, bands = [], height = 300, range, testId, axisPerUnit = false }: Props) {
  const el = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const bandsRef = useRef(bands);
  bandsRef.current = bands;
  const [theme, setTheme] = useState(currentTheme());
  const data = useMemo(() => alignSeries(series), [series]);
  const units = axisPerUnit ? unitsOf(series) : [];
  const shape = series.map((s) => (axisPerUnit ? `${s.label}\u0000${s.unit ?? ""}` : s.label)).join("|");
  const points = data[0].length;

  useEffect(() => {
    const onTheme = () => setTheme(currentTheme());
    window.addEventListener("factoryops-theme", onTheme);
    return () => window.removeEventListener("factoryops-theme", onTheme);
  }, []);

  // (Re)create the plot when the set of series, the theme or the height changes.
  useEffect(() => {
    if (!el.current) return;
    const colors = themeColors();
    const axis = { stroke: colors.text, grid: { stroke: colors.grid, width: 1 }, ticks: { stroke: colors.grid, width: 1 } };
    const opts: uPlot.Options = {
      width: el.current.clientWidth || 600,
      height,
      legend: { show: false },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      axes: axisPerUnit
        ? [
            { ...axis, space: 90 },
            ...units.map((unit, i) => ({
              ...axis,
              scale: `u:${unit}`,
              side: i % 2 === 0 ? 3 : 1,
              size: 60,
              label: unit || undefined,
              labelSize: unit ? 18 : 0,
              // Only the first axis draws grid lines: two grids that disagree are noise.
              grid: { ...axis.grid, show: i === 0 },
            })),
          ]
        : [{ ...axis, space: 90 }, { ...axis, size: 60 }],
      series: [
        {},
        ...series.map((s, i) => ({
          ...(axisPerUnit ? { scale: `u:${s.unit ?? ""}` } : {}),
          label: s.label,
          stroke: PALETTE[i % PALETTE.length],
          width: 1.6,
          spanGaps: true,
          points: { show: points < 60, size: 5 },
        })),
      ],
      hooks: {
        drawClear: [
          (u: uPlot) => {
            const ctx = u.ctx;
            ctx.save();
            for (const b of bandsRef.current) {
              const x0 = u.valToPos(b.from / 1000, "x", true);
              const x1 = u.valToPos((b.to ?? (u.scales.x?.max ?? 0) * 1000) / 1000, "x", true);
              ctx.fillStyle = b.color ?? "rgba(239, 68, 68, 0.16)";
              ctx.fillRect(Math.max(u.bbox.left, x0), u.bbox.top, Math.max(2, Math.min(u.bbox.left + u.bbox.width, x1) - Math.max(u.bbox.left, x0)), u.bbox.height);
              ctx.fillStyle = "rgba(239, 68, 68, 0.9)";
              ctx.fillRect(x0, u.bbox.top, 2, u.bbox.height);
            }
            ctx.restore();
          },
        ],
      },
    };
    const u = new uPlot(opts, data as uPlot.AlignedData, el.current);
    plot.current = u;
    (el.current as HTMLDivElement & { uplot?: uPlot }).uplot = u;
    const resize = new ResizeObserver(() => {
      if (el.current) u.setSize({ width: el.current.clientWidth, height });
    });
    resize.observe(el.current);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape, theme, height, points < 60]);

  // New data (live points, a new range): just swap it in.
  useEffect(() => {
    const u = plot.current;
    if (!u) return;
    u.setData(data as uPlot.AlignedData, !range);
    if (range) u.setScale("x", { min: range[0] / 1000, max: range[1] / 1000 });
  }, [data, range, bands]);

  return (
    <div>
      <div className="chart" ref={el} data-testid={testId} data-points={points} data-axes={axisPerUnit ? units.length : 1} style={{ minHeight: height }} />
      <div className="chart-legend">
        {series.map((s, i) => (
          <span key={s.label}>
            <span className="sw" style={{ background: PALETTE[i % PALETTE.length] }} />
            {s.label}
            {s.unit ? ` (${s.unit})` : ""} · {s.points.length} pts
          </span>
        ))}
        {bands.length > 0 && (
          <span>
            <span className="sw" style={{ background: "rgba(239, 68, 68, 0.5)" }} />
            would-be alerts: {bands.length}
          </span>
        )}
      </div>
    </div>
  );
}
