import { useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { rawJson } from "../api/client";
import { ApiError } from "../api/problem";
import type { Notification, Page } from "../api/types";
import { useFactory } from "../factory";
import { Badge, Empty, Loading, fmtAgo, fmtTime, useAsync } from "../ui/common";
import { useToast } from "../ui/toast";

// GET /notifications?status= and POST /notifications/{id}/retry come with the notify
// component; until the server has them (404), the page says so.
export function Notifications() {
  const { factory, can } = useFactory();
  const toast = useToast();
  const [params, setParams] = useSearchParams();
  const status = params.get("status") ?? "";
  const [retrying, setRetrying] = useState<string | null>(null);
  const log = useAsync(
    () => rawJson<Page<Notification>>("GET", `/api/v1/factories/${encodeURIComponent(factory)}/notifications?limit=200${status ? `&status=${encodeURIComponent(status)}` : ""}`),
    [factory, status],
  );
  const unavailable = log.error instanceof ApiError && (log.error.status === 404 || log.error.status === 405);

  async function retry(n: Notification) {
    setRetrying(n.id);
    try {
      await rawJson("POST", `/api/v1/factories/${encodeURIComponent(factory)}/notifications/${encodeURIComponent(n.id)}/retry`);
      toast.show("success", "Retry scheduled", `${n.channel} to ${n.recipient}`);
      log.reload();
    } catch (e) {
      toast.error(e);
    } finally {
      setRetrying(null);
    }
  }
  const items = log.data?.items ?? [];
  return (
    <>
      <div className="page-head">
        <div>
          <h1>Notifications</h1>
          <div className="sub">Every email and WhatsApp message sent for alerts, with dead letters to retry.</div>
        </div>
        <div className="actions">
          <select aria-label="Delivery status" value={status} onChange={(e) => setParams((p) => (e.target.value ? p.set("status", e.target.value) : p.delete("status"), p))}>
            <option value="">All deliveries</option>
            <option value="pending">Pending</option>
            <option value="delivered">Delivered</option>
            <option value="dead">Dead letters</option>
          </select>
        </div>
      </div>
      <div className="card">
        {unavailable ? (
          <Empty icon="✉" title="Notification log not available yet" testId="notifications-unavailable">
            <p>This server does not provide the delivery log yet. Alerts are still recorded in the <Link to={`/f/${factory}/alerts`}>alert inbox</Link>.</p>
          </Empty>
        ) : log.loading && !log.data ? (
          <Loading />
        ) : log.error ? (
          <div className="callout danger" role="alert">
            {log.error instanceof ApiError ? log.error.problem.detail : String(log.error)}
          </div>
        ) : items.length === 0 ? (
          <Empty icon="✉" title={status === "dead" ? "No dead letters" : "No notifications yet"}>
            Notifications are sent when rules with targets open alerts.
          </Empty>
        ) : (
          <div className="table-wrap">
            <table data-testid="notifications-table">
              <thead>
                <tr>
                  <th>Status</th>
                  <th>Channel</th>
                  <th>Recipient</th>
                  <th>Message</th>
                  <th>Attempts</th>
                  <th>Created</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {items.map((n) => (
                  <tr key={n.id}>
                    <td>
                      <Badge kind={n.status} dot>
                        {n.status}
                      </Badge>
                    </td>
                    <td>{n.channel === "whatsapp" ? "WhatsApp" : "Email"}</td>
                    <td className="mono small">{n.recipient}</td>
                    <td>
                      {n.subject ?? n.kind}
                      {n.alert_id && (
                        <div className="small">
                          <Link to={`/f/${factory}/alerts/${n.alert_id}`}>alert</Link> · {n.kind}
                        </div>
                      )}
                      {n.last_error && <div className="small field-error">{n.last_error}</div>}
                    </td>
                    <td className="num">{n.attempts}</td>
                    <td className="small" title={fmtTime(n.created_at)}>
                      {fmtAgo(n.created_at)}
                      {n.delivered_at && <div className="muted">delivered {fmtAgo(n.delivered_at)}</div>}
                    </td>
                    <td className="right">
                      {n.status === "dead" && can("alerts:write") && (
                        <button className="small" disabled={retrying === n.id} onClick={() => void retry(n)}>
                          Retry
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>
    </>
  );
}
