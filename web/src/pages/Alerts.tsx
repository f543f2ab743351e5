import { useEffect, useState, type FormEvent } from "react";
import { Link, useParams, useSearchParams } from "react-router-dom";
import type { Alert, AlertEvent } from "../api/types";
import { useFactory } from "../factory";
import { useStreamEvent } from "../stream";
import { Badge, Empty, Loading, TextArea, fmtAgo, fmtTime, fmtValue, isNotFound, useAsync } from "../ui/common";
import { Modal } from "../ui/Modal";
import { useToast } from "../ui/toast";
import { alertAction, getAlert, listAlerts } from "./data";
import { NotFound } from "./NotFound";
import { NotificationLog } from "./Notifications";

export function Alerts() {
  const { factory, can } = useFactory();
  const toast = useToast();
  const [params, setParams] = useSearchParams();
  const filter = {
    status: params.get("status") ?? "",
    severity: params.get("severity") ?? "",
    device_id: params.get("device_id") ?? "",
    rule_id: params.get("rule_id") ?? "",
  };
  const [items, setItems] = useState<Alert[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [fresh, setFresh] = useState<Set<string>>(new Set());
  const [acting, setActing] = useState<{ alert: Alert; action: "acknowledge" | "resolve" } | null>(null);
  const [tick, setTick] = useState(0);
  const key = JSON.stringify(filter);

  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    listAlerts(factory, { ...filter, limit: 100 }, controller.signal)
      .then((page) => {
        setItems((old) => {
          const known = new Set(old.map((a) => a.id));
          if (old.length) setFresh(new Set(page.items.filter((a) => !known.has(a.id)).map((a) => a.id)));
          return page.items;
        });
        setCursor(page.next_cursor ?? null);
      })
      .catch((e: unknown) => toast.error(e))
      .finally(() => !controller.signal.aborted && setLoading(false));
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [factory, key, tick]);

  useStreamEvent<AlertEvent>("alert", (e) => {
    if (e.type === "alert.opened") toast.show("alert", `New ${e.severity ?? ""} alert`, e.message ?? e.device_id);
    if (e.type?.startsWith("alert.")) setTick((t) => t + 1);
  });

  async function more() {
    if (!cursor) return;
    try {
      const page = await listAlerts(factory, { ...filter, limit: 100, cursor });
      setItems((old) => [...old, ...page.items]);
      setCursor(page.next_cursor ?? null);
    } catch (e) {
      toast.error(e);
    }
  }

  const setFilter = (k: string, v: string) => setParams((p) => (v ? p.set(k, v) : p.delete(k), p), { replace: true });
  return (
    <>
      <div className="page-head">
        <div>
          <h1>Alerts</h1>
          <div className="sub">New alerts arrive live.</div>
        </div>
      </div>
      <div className="card" style={{ padding: "0.75rem", marginBottom: "0.75rem" }}>
        <div className="row">
          <select aria-label="Status" value={filter.status} onChange={(e) => setFilter("status", e.target.value)}>
            <option value="">Any status</option>
            <option value="open">Open</option>
            <option value="acknowledged">Acknowledged</option>
            <option value="resolved">Resolved</option>
          </select>
          <select aria-label="Severity" value={filter.severity} onChange={(e) => setFilter("severity", e.target.value)}>
            <option value="">Any severity</option>
            <option value="critical">Critical</option>
            <option value="warning">Warning</option>
            <option value="info">Info</option>
          </select>
          <input aria-label="Device" placeholder="Device id" defaultValue={filter.device_id} onKeyDown={(e) => e.key === "Enter" && setFilter("device_id", e.currentTarget.value.trim())} onBlur={(e) => setFilter("device_id", e.target.value.trim())} />
          {filter.rule_id && (
            <span className="badge">
              rule {filter.rule_id.slice(0, 8)}…
              <button className="ghost small" style={{ padding: 0 }} aria-label="Clear rule filter" onClick={() => setFilter("rule_id", "")}>
                ✕
              </button>
            </span>
          )}
        </div>
      </div>
      <div className="card">
        {loading && items.length === 0 ? (
          <Loading />
        ) : items.length === 0 ? (
          <Empty icon="✓" title="No alerts">
            Nothing matches these filters.
          </Empty>
        ) : (
          <div className="table-wrap">
            <table data-testid="alerts-table">
              <thead>
                <tr>
                  <th>Severity</th>
                  <th>Alert</th>
                  <th>Device</th>
                  <th>Status</th>
                  <th>Opened</th>
                  <th className="right">{can("alerts:write") ? "Actions" : ""}</th>
                </tr>
              </thead>
              <tbody>
                {items.map((a) => (
                  <tr key={a.id} className={fresh.has(a.id) ? "flash" : ""} data-testid="alert-row" data-status={a.status}>
                    <td>
                      <Badge kind={a.severity}>{a.severity}</Badge>
                    </td>
                    <td>
                      <Link to={`/f/${factory}/alerts/${a.id}`}>{a.message}</Link>
                      <div className="small muted">
                        {a.rule_name}
                        {a.count > 1 ? ` · ×${a.count}` : ""}
                      </div>
                    </td>
                    <td className="mono small">
                      <Link to={`/f/${factory}/devices/${a.device_id}`}>{a.device_id}</Link>
                    </td>
                    <td>
                      <Badge kind={a.status} dot>
                        {a.status}
                      </Badge>
                    </td>
                    <td className="small" title={fmtTime(a.opened_at)}>
                      {fmtAgo(a.opened_at)}
                    </td>
                    <td className="right">
                      {can("alerts:write") && (
                        <div className="row end">
                          {a.status === "open" && (
                            <button className="small" onClick={() => setActing({ alert: a, action: "acknowledge" })}>
                              Acknowledge
                            </button>
                          )}
                          {a.status !== "resolved" && (
                            <button className="small" onClick={() => setActing({ alert: a, action: "resolve" })}>
                              Resolve
                            </button>
                          )}
                        </div>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            {cursor && (
              <div className="row end" style={{ marginTop: "0.75rem" }}>
                <button onClick={() => void more()}>Load more</button>
              </div>
            )}
          </div>
        )}
      </div>
      {acting && (
        <ActionDialog
          alert={acting.alert}
          action={acting.action}
          onClose={() => setActing(null)}
          onDone={() => {
            setActing(null);
            setTick((t) => t + 1);
          }}
        />
      )}
    </>
  );
}

function ActionDialog({ alert, action, onClose, onDone }: { alert: Alert; action: "acknowledge" | "resolve"; onClose: () => void; onDone: (a: Alert) => void }) {
  const { factory } = useFactory();
  const toast = useToast();
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    try {
      const updated = await alertAction(factory, alert.id, action, note);
      toast.show("success", action === "acknowledge" ? "Alert acknowledged" : "Alert resolved");
      onDone(updated);
    } catch (err) {
      toast.error(err);
    } finally {
      setBusy(false);
    }
  }
  return (
    <Modal title={action === "acknowledge" ? "Acknowledge alert" : "Resolve alert"} onClose={onClose}>
      <p className="muted" style={{ marginTop: 0 }}>
        {alert.message}
      </p>
      <form className="stack" onSubmit={submit}>
        <TextArea label="Note (optional)" value={note} onChange={(e) => setNote(e.target.value)} rows={3} placeholder="What was done, who is on it…" />
        <div className="row end">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button className="primary" type="submit" disabled={busy} data-testid="confirm-alert-action">
            {action === "acknowledge" ? "Acknowledge" : "Resolve"}
          </button>
        </div>
      </form>
    </Modal>
  );
}

export function AlertDetail() {
  const { alertId = "" } = useParams();
  const { factory, can } = useFactory();
  const alert = useAsync((signal) => getAlert(factory, alertId, signal), [factory, alertId]);
  const [acting, setActing] = useState<"acknowledge" | "resolve" | null>(null);
  useStreamEvent<AlertEvent>("alert", (e) => {
    if (e.alert_id === alertId) alert.reload();
  });
  if (isNotFound(alert.error)) return <NotFound />;
  if (!alert.data) return <Loading />;
  const a = alert.data;
  return (
    <>
      <div className="page-head">
        <div>
          <div className="small muted">
            <Link to={`/f/${factory}/alerts`}>Alerts</Link> / {a.id.slice(0, 8)}…
          </div>
          <h1>{a.message}</h1>
          <div className="row">
            <Badge kind={a.severity}>{a.severity}</Badge>
            <Badge kind={a.status} dot>
              <span data-testid="alert-status">{a.status}</span>
            </Badge>
            <span className="small muted">
              rule <Link to={`/f/${factory}/rules/${a.rule_id}`}>{a.rule_name}</Link> · device{" "}
              <Link to={`/f/${factory}/devices/${a.device_id}`} className="mono">
                {a.device_id}
              </Link>
            </span>
          </div>
        </div>
        <div className="actions">
          {can("alerts:write") && a.status === "open" && (
            <button className="primary" onClick={() => setActing("acknowledge")} data-testid="acknowledge">
              Acknowledge
            </button>
          )}
          {can("alerts:write") && a.status !== "resolved" && (
            <button onClick={() => setActing("resolve")} data-testid="resolve">
              Resolve
            </button>
          )}
        </div>
      </div>
      <div className="grid side">
        <div className="card">
          <h2>History</h2>
          {(a.history ?? []).length === 0 ? (
            <Empty title="No history" />
          ) : (
            <ol className="timeline" data-testid="alert-history">
              {(a.history ?? []).map((h, i) => (
                <li key={i} className={h.status}>
                  <div className="row">
                    <Badge kind={h.status}>{h.status}</Badge>
                    <span className="small muted">{fmtTime(h.at)}</span>
                  </div>
                  <div className="small" style={{ marginTop: "0.2rem" }}>
                    by <span className="mono">{h.by}</span>
                    {h.value !== null && h.value !== undefined && <> · value {fmtValue(h.value)}</>}
                  </div>
                  {h.note && <div style={{ marginTop: "0.2rem" }}>“{h.note}”</div>}
                </li>
              ))}
            </ol>
          )}
        </div>
        <div className="card">
          <h2>Details</h2>
          <dl className="stack small" style={{ margin: 0 }}>
            <div>
              <dt className="muted">Property</dt>
              <dd style={{ margin: 0 }} className="mono">
                {a.property ?? "—"}
              </dd>
            </div>
            <div>
              <dt className="muted">Value / threshold</dt>
              <dd style={{ margin: 0 }}>
                {fmtValue(a.value)} / {a.threshold ?? "—"}
              </dd>
            </div>
            <div>
              <dt className="muted">Triggered</dt>
              <dd style={{ margin: 0 }}>{a.count} ×</dd>
            </div>
            <div>
              <dt className="muted">Opened</dt>
              <dd style={{ margin: 0 }}>{fmtTime(a.opened_at)}</dd>
            </div>
            <div>
              <dt className="muted">Acknowledged</dt>
              <dd style={{ margin: 0 }}>{fmtTime(a.acknowledged_at)}</dd>
            </div>
            <div>
              <dt className="muted">Resolved</dt>
              <dd style={{ margin: 0 }}>{fmtTime(a.resolved_at)}</dd>
            </div>
          </dl>
        </div>
      </div>
      <div className="card" style={{ marginTop: "1rem" }}>
        <div className="row" style={{ marginBottom: "0.5rem" }}>
          <h2 style={{ margin: 0 }}>Notifications</h2>
          <span style={{ flex: 1 }} />
          <Link className="small" to={`/f/${factory}/notifications?alert_id=${encodeURIComponent(a.id)}`}>
            In the delivery log
          </Link>
        </div>
        <NotificationLog filter={{ alertId: a.id }} compact refreshKey={`${a.status}|${a.count}`} />
      </div>
      {acting && (
        <ActionDialog
          alert={a}
          action={acting}
          onClose={() => setActing(null)}
          onDone={(updated) => {
            setActing(null);
            alert.setData(updated.history ? updated : { ...updated, history: a.history ?? [] });
            alert.reload();
          }}
        />
      )}
    </>
  );
}
