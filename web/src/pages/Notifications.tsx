import { useCallback, useEffect, useRef, useState } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import type { ChannelKind, Notification, NotificationStatus } from "../api/types";
import { useFactory } from "../factory";
import { Badge, Empty, Loading, fmtAgo, fmtShort, fmtTime } from "../ui/common";
import { useToast } from "../ui/toast";
import { ProviderHealthBanner } from "../ui/ProviderHealth";

const PAGE = 50;
/** While a shown row is pending or sending, the log refreshes this often. */
export const LIVE_REFRESH_MS = 3000;

export const STATUS_LABEL: Record<NotificationStatus, string> = {
  pending: "pending",
  sending: "sending",
  delivered: "delivered",
  dead: "dead letter",
};
const STATUS_BADGE: Record<NotificationStatus, string> = { pending: "warning", sending: "info", delivered: "ok", dead: "dead" };
const KIND_LABEL: Record<string, string> = {
  opened: "alert opened",
  retriggered: "re-triggered",
  reminder: "reminder",
  escalation: "escalation",
  acknowledged: "acknowledged",
  resolved: "resolved",
  test: "test message",
  health: "platform health",
};
export const channelLabel = (c: ChannelKind | string) => (c === "whatsapp" ? "WhatsApp" : "Email");
const isLive = (n: Notification) => n.status === "pending" || n.status === "sending";

export interface LogFilter {
  status?: NotificationStatus | undefined;
  channel?: ChannelKind | undefined;
  alertId?: string | undefined;
}

/** Merges a fresh first page into what is shown: updated rows in place, new rows on top. */
export function mergeFresh(shown: Notification[], fresh: Notification[]): Notification[] {
  const byId = new Map(fresh.map((n) => [n.id, n]));
  const known = new Set(shown.map((n) => n.id));
  const added = fresh.filter((n) => !known.has(n.id));
  return [...added, ...shown.map((n) => byId.get(n.id) ?? n)];
}

async function fetchPage(factory: string, filter: LogFilter, cursor: string | undefined, signal?: AbortSignal) {
  return unwrap(
    api.GET("/api/v1/factories/{factory_id}/notifications", {
      params: {
        path: { factory_id: factory },
        query: {
          limit: PAGE,
          ...(filter.status ? { status: filter.status } : {}),
          ...(filter.channel ? { channel: filter.channel } : {}),
          ...(filter.alertId ? { alert_id: filter.alertId } : {}),
          ...(cursor ? { cursor } : {}),
        },
      },
      ...(signal ? { signal } : {}),
    }),
  );
}

/**
 * The delivery log for a filter: first page, "Load more" via `next_cursor`, and a live
 * refresh every few seconds while any shown row is still pending or sending.
 */
function useNotificationLog(factory: string, filter: LogFilter) {
  const [items, setItems] = useState<Notification[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loadingMore, setLoadingMore] = useState(false);
  const key = `${factory}|${filter.status ?? ""}|${filter.channel ?? ""}|${filter.alertId ?? ""}`;
  const keyRef = useRef(key);
  keyRef.current = key;
  const filterRef = useRef(filter);
  filterRef.current = filter;
  const itemsRef = useRef(items);
  itemsRef.current = items;

  useEffect(() => {
    const controller = new AbortController();
    setItems(null);
    setCursor(null);
    setError(null);
    fetchPage(factory, filterRef.current, undefined, controller.signal)
      .then((page) => {
        setItems(page.items);
        setCursor(page.next_cursor ?? null);
      })
      .catch((e: unknown) => {
        if (!controller.signal.aborted) setError(e);
      });
    return () => controller.abort();
  }, [factory, key]);

  const refresh = useCallback(async () => {
    const at = keyRef.current;
    try {
      const page = await fetchPage(factory, filterRef.current, undefined);
      if (keyRef.current !== at) return;
      // Rows on their way that the first page no longer has (further down, or they left
      // the status filter, e.g. a retried dead letter): ask for each.
      const inPage = new Set(page.items.map((n) => n.id));
      const stragglers = (itemsRef.current ?? []).filter((n) => isLive(n) && !inPage.has(n.id)).slice(0, 20);
      const updated = await Promise.all(
        stragglers.map((n) =>
          unwrap(api.GET("/api/v1/factories/{factory_id}/notifications/{notification_id}", { params: { path: { factory_id: factory, notification_id: n.id } } })).catch(() => n),
        ),
      );
      if (keyRef.current !== at) return;
      const byId = new Map(updated.map((n) => [n.id, n]));
      setItems((shown) => (shown ? mergeFresh(shown.map((n) => byId.get(n.id) ?? n), page.items) : page.items));
      setCursor((c) => c ?? page.next_cursor ?? null);
      setError(null);
    } catch (e) {
      if (keyRef.current === at) setError(e);
    }
  }, [factory]);

  const replace = useCallback((n: Notification) => setItems((shown) => (shown ? shown.map((x) => (x.id === n.id ? n : x)) : shown)), []);

  async function loadMore() {
    if (!cursor) return;
    setLoadingMore(true);
    const at = keyRef.current;
    try {
      const page = await fetchPage(factory, filterRef.current, cursor);
      if (keyRef.current !== at) return;
      setItems((shown) => {
        const known = new Set((shown ?? []).map((n) => n.id));
        return [...(shown ?? []), ...page.items.filter((n) => !known.has(n.id))];
      });
      setCursor(page.next_cursor ?? null);
    } catch (e) {
      setError(e);
    } finally {
      setLoadingMore(false);
    }
  }

  // Live while something is on its way.
  const live = (items ?? []).some(isLive);
  useEffect(() => {
    if (!live) return;
    const t = setInterval(() => void refresh(), LIVE_REFRESH_MS);
    return () => clearInterval(t);
  }, [live, refresh]);

  return { items, error, cursor, loadingMore, loadMore, refresh, replace, live };
}

export function NotificationLog({ filter, compact = false, refreshKey }: { filter: LogFilter; compact?: boolean; refreshKey?: unknown }) {
  const { factory, can } = useFactory();
  const toast = useToast();
  const log = useNotificationLog(factory, filter);
  const [retrying, setRetrying] = useState<string | null>(null);
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    void log.refresh();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [refreshKey]);

  async function retry(n: Notification) {
    setRetrying(n.id);
    try {
      const queued = await unwrap(
        api.POST("/api/v1/factories/{factory_id}/notifications/{notification_id}/retry", { params: { path: { factory_id: factory, notification_id: n.id } } }),
      );
      log.replace(queued);
      toast.show("success", "Retry scheduled", `${channelLabel(n.channel)} to ${n.recipient}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) void log.refresh();
      toast.error(e);
    } finally {
      setRetrying(null);
    }
  }

  if (log.error && !log.items) {
    return (
      <div className="callout danger" role="alert">
        {log.error instanceof ApiError ? log.error.problem.detail : String(log.error)}
      </div>
    );
  }
  if (!log.items) return <Loading />;
  const items = log.items;
  if (items.length === 0) {
    return (
      <Empty icon="✉" title={filter.status === "dead" ? "No dead letters" : filter.alertId ? "No notifications for this alert" : "No notifications yet"}>
        {filter.alertId ? "The rule has no targets, or they were filtered out by their preferences." : "Notifications are sent when rules with targets open alerts."}
      </Empty>
    );
  }
  const canRetry = can("alerts:write");
  return (
    <>
      <div className="table-wrap">
        <table data-testid="notifications-table" data-live={log.live ? "1" : "0"}>
          <thead>
            <tr>
              <th>Status</th>
              <th>Channel · recipient</th>
              <th>Message</th>
              <th className="num">Attempts</th>
              <th>{compact ? "When" : "Created · delivered"}</th>
              {canRetry && <th />}
            </tr>
          </thead>
          <tbody>
            {items.map((n) => (
              <tr key={n.id} data-testid="notification-row" data-status={n.status} data-channel={n.channel} data-kind={n.kind}>
                <td>
                  <Badge kind={STATUS_BADGE[n.status]} dot>
                    {STATUS_LABEL[n.status]}
                  </Badge>
                  {n.status === "pending" && (
                    <div className="small muted" title={fmtTime(n.next_attempt_at)}>
                      {new Date(n.next_attempt_at).getTime() > Date.now() + 1000 ? `next try ${fmtShort(n.next_attempt_at)}` : "due now"}
                    </div>
                  )}
                </td>
                <td>
                  <div className="small" style={{ fontWeight: 550 }}>
                    {channelLabel(n.channel)}
                  </div>
                  <div className="mono small nowrap" data-testid="notification-recipient">
                    {n.recipient}
                  </div>
                </td>
                <td style={{ maxWidth: "32rem" }}>
                  <div>{n.subject}</div>
                  <div className="small muted">
                    {KIND_LABEL[n.kind] ?? n.kind}
                    {n.severity && <> · {n.severity}</>}
                    {n.alert_id && !compact && (
                      <>
                        {" · "}
                        <Link to={`/f/${factory}/alerts/${n.alert_id}`} data-testid="notification-alert-link">
                          alert
                        </Link>
                      </>
                    )}
                  </div>
                  {n.last_error && (
                    <div className="small field-error" data-testid="notification-error" title={n.last_error}>
                      {n.last_error}
                    </div>
                  )}
                </td>
                <td className="num" title={`${n.attempts} of at most ${n.max_attempts} attempts`}>
                  {n.attempts}/{n.max_attempts}
                </td>
                <td className="small" title={fmtTime(n.created_at)}>
                  {fmtAgo(n.created_at)}
                  {n.delivered_at && (
                    <div className="muted nowrap" title={fmtTime(n.delivered_at)}>
                      delivered {fmtShort(n.delivered_at)}
                    </div>
                  )}
                </td>
                {canRetry && (
                  <td className="right">
                    {n.status === "dead" && (
                      <button className="small" disabled={retrying === n.id} onClick={() => void retry(n)} data-testid="retry-notification">
                        Retry
                      </button>
                    )}
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="row" style={{ marginTop: "0.75rem" }}>
        <span className="small muted" data-testid="notifications-count">
          {items.length} shown{log.live ? " · refreshing while deliveries are under way" : ""}
        </span>
        <span style={{ flex: 1 }} />
        {log.cursor && (
          <button className="small" onClick={() => void log.loadMore()} disabled={log.loadingMore} data-testid="notifications-more">
            {log.loadingMore ? "Loading…" : "Load more"}
          </button>
        )}
      </div>
    </>
  );
}

export function Notifications() {
  const { factory } = useFactory();
  const [params, setParams] = useSearchParams();
  const status = (params.get("status") ?? "") as NotificationStatus | "";
  const channel = (params.get("channel") ?? "") as ChannelKind | "";
  const alertId = params.get("alert_id") ?? "";
  const setParam = (name: string, value: string) =>
    setParams(
      (p) => {
        if (value) p.set(name, value);
        else p.delete(name);
        return p;
      },
      { replace: true },
    );
  return (
    <>
      <div className="page-head">
        <div>
          <h1>Notifications</h1>
          <div className="sub">Every email and WhatsApp message sent for this factory's alerts, with dead letters to retry.</div>
        </div>
        <div className="actions">
          <select aria-label="Delivery status" value={status} onChange={(e) => setParam("status", e.target.value)} data-testid="filter-status">
            <option value="">All statuses</option>
            <option value="pending">Pending</option>
            <option value="sending">Sending</option>
            <option value="delivered">Delivered</option>
            <option value="dead">Dead letters</option>
          </select>
          <select aria-label="Channel" value={channel} onChange={(e) => setParam("channel", e.target.value)} data-testid="filter-channel">
            <option value="">All channels</option>
            <option value="email">Email</option>
            <option value="whatsapp">WhatsApp</option>
          </select>
          <Link className="button" to={`/f/${factory}/settings/notifications`}>
            My notifications
          </Link>
        </div>
      </div>
      <ProviderHealthBanner />
      {alertId && (
        <div className="callout" style={{ marginBottom: "0.75rem" }}>
          Only the notifications of <Link to={`/f/${factory}/alerts/${alertId}`}>alert {alertId.slice(0, 8)}…</Link> ·{" "}
          <button className="link" onClick={() => setParam("alert_id", "")}>
            show all
          </button>
        </div>
      )}
      <div className="card">
        <NotificationLog filter={{ status: status || undefined, channel: channel || undefined, alertId: alertId || undefined }} />
      </div>
    </>
  );
}
