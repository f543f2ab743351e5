import { useEffect, useMemo, useState } from "react";
import { TimeChart } from "../chart/TimeChart";
import { useFactory } from "../factory";
import { useStreamRate } from "../stream";
import { Empty, isOnline, useAsync } from "../ui/common";
import { loadAllDevices } from "./data";
import { isOperator } from "./roles";


/**
 * Ingestion figures for admins (they were the old dashboard's IT tiles). The rate is what
 * the live stream delivers to this tab: it starts at zero when the page opens.
 */
export function Operations() {
  const { factory, me } = useFactory();
  const buckets = useStreamRate();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setTick((x) => x + 1), 2000);
    return () => clearInterval(t);
  }, []);
  const devices = useAsync((signal) => loadAllDevices(factory, {}, signal), [factory]);
  const rate = useMemo(() => {
    const nowSec = Math.floor(Date.now() / 1000);
    const points: [number, number][] = [];
    let lastMinute = 0;
    for (let s = nowSec - 120; s < nowSec; s += 5) {
      let sum = 0;
      for (let i = 0; i < 5; i++) sum += buckets.get(s + i) ?? 0;
      points.push([s * 1000, sum / 5]);
    }
    for (let s = nowSec - 60; s < nowSec; s++) lastMinute += buckets.get(s) ?? 0;
    return { points, perMinute: lastMinute };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [tick]);
  if (!isOperator(me.role)) return <Empty title="Operations is for admins">Ask a super admin of this factory.</Empty>;
  const now = Date.now();
  const online = (devices.data ?? []).filter((d) => isOnline(d.last_seen, now)).length;
  return (
    <>
      <div className="page-head">
        <div>
          <h1>Operations</h1>
          <div className="sub">Ingestion as this browser tab receives it from the live stream (counted since the page opened).</div>
        </div>
      </div>
      <div className="grid cols-3" data-testid="operations-stats">
        <div className="card stat">
          <span className="label">Points in the last minute</span>
          <span className="value num" data-testid="ingestion-rate">
            {rate.perMinute.toLocaleString()}
          </span>
          <span className="hint">live stream, this tab</span>
        </div>
        <div className="card stat">
          <span className="label">Devices online</span>
          <span className="value num">{devices.data ? online : "…"}</span>
          <span className="hint">of {devices.data ? devices.data.length : "…"} registered · seen in the last 5 min</span>
        </div>
        <div className="card stat">
          <span className="label">Stream</span>
          <span className="value num">{rate.points.some(([, v]) => v > 0) ? "receiving" : "idle"}</span>
          <span className="hint">over the last two minutes</span>
        </div>
      </div>
      <div className="card" style={{ marginTop: "1rem" }}>
        <h2>Ingestion (points/s, live)</h2>
        <TimeChart series={[{ label: "points/s", points: rate.points }]} height={220} testId="ingestion-chart" />
      </div>
    </>
  );
}
