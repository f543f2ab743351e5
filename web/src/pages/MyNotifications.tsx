import { useEffect, useState, type FormEvent } from "react";
import { Link } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import type { ChannelKind, Notification, Preferences } from "../api/types";
import { useFactory } from "../factory";
import { Badge, FieldErrorText, Loading, TextField, useAsync } from "../ui/common";
import { useToast } from "../ui/toast";
import { STATUS_LABEL, channelLabel } from "./Notifications";

interface Draft {
  email: boolean;
  whatsapp: boolean;
  quiet: boolean;
  from: string;
  to: string;
}

export function toDraft(p: Preferences): Draft {
  return {
    email: p.email ?? true,
    whatsapp: p.whatsapp ?? true,
    quiet: !!p.quiet_hours,
    from: p.quiet_hours?.from ?? "22:00",
    to: p.quiet_hours?.to ?? "06:00",
  };
}

export function toPreferences(d: Draft): Preferences {
  return { email: d.email, whatsapp: d.whatsapp, quiet_hours: d.quiet ? { from: d.from, to: d.to } : null };
}

/** "My notifications": the caller's channels and quiet hours; test messages for super admins. */
export function MyNotifications() {
  const { factory, me, timezone, isSuperAdmin } = useFactory();
  const toast = useToast();
  const prefs = useAsync(
    (signal) => unwrap(api.GET("/api/v1/factories/{factory_id}/notification-preferences", { params: { path: { factory_id: factory } }, signal })),
    [factory],
  );
  const [draft, setDraft] = useState<Draft | null>(null);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [saving, setSaving] = useState(false);
  useEffect(() => {
    if (prefs.data) setDraft(toDraft(prefs.data));
  }, [prefs.data]);
  const set = (patch: Partial<Draft>) => setDraft((d) => (d ? { ...d, ...patch } : d));
  const user = me.user;

  async function save(e: FormEvent) {
    e.preventDefault();
    if (!draft) return;
    setSaving(true);
    setErrors({});
    try {
      const saved = await unwrap(
        api.PUT("/api/v1/factories/{factory_id}/notification-preferences", { params: { path: { factory_id: factory } }, body: toPreferences(draft) }),
      );
      prefs.setData(saved);
      toast.show("success", "Notification preferences saved");
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && (err.problem.errors?.length ?? 0) > 0) setErrors(err.fieldErrors());
      else toast.error(err);
    } finally {
      setSaving(false);
    }
  }

  const forbidden = prefs.error instanceof ApiError && prefs.error.status === 403;
  return (
    <>
      <div className="page-head">
        <div>
          <h1>My notifications</h1>
          <div className="sub">How alerts reach you, {user?.name ?? "you"}. Rules decide which alerts; here you choose the channels and when to be left alone.</div>
        </div>
        <div className="actions">
          <Link className="button" to={`/f/${factory}/notifications`}>
            Delivery log
          </Link>
        </div>
      </div>
      <div className="grid side">
        <div className="card">
          <h2>Channels and quiet hours</h2>
          {forbidden ? (
            <div className="callout warn">{(prefs.error as ApiError).problem.detail}</div>
          ) : prefs.error ? (
            <div className="callout danger" role="alert">
              {prefs.error instanceof ApiError ? prefs.error.problem.detail : String(prefs.error)}
            </div>
          ) : !draft ? (
            <Loading />
          ) : (
            <form className="stack" onSubmit={save} noValidate data-testid="preferences-form">
              <div className="prefs-channels" role="group" aria-label="Channels">
                <div>
                  <label className="check">
                    <input type="checkbox" checked={draft.email} onChange={(e) => set({ email: e.target.checked })} data-testid="pref-email" />
                    Email
                  </label>
                  <div className="small muted mono">{user?.email}</div>
                  <FieldErrorText error={errors.email} />
                </div>
                <div>
                  <label className="check">
                    <input type="checkbox" checked={draft.whatsapp} onChange={(e) => set({ whatsapp: e.target.checked })} data-testid="pref-whatsapp" />
                    WhatsApp
                  </label>
                  <div className="small muted">
                    {user?.phone ? (
                      <span className="mono">{user.phone}</span>
                    ) : (
                      <>
                        No phone number on your profile
                        {isSuperAdmin ? (
                          <>
                            {" "}
                            — <Link to={`/f/${factory}/admin/users`}>add one</Link>
                          </>
                        ) : (
                          " — a super admin can add one"
                        )}
                      </>
                    )}
                  </div>
                  <FieldErrorText error={errors.whatsapp} />
                </div>
              </div>
              <div>
                <label className="check">
                  <input type="checkbox" checked={draft.quiet} onChange={(e) => set({ quiet: e.target.checked })} data-testid="pref-quiet" />
                  Quiet hours
                </label>
                <div className="small muted">
                  Non-critical messages wait until the quiet hours end; critical alerts always come through. Times are in the factory's time zone,{" "}
                  <strong data-testid="prefs-timezone">{timezone}</strong>.
                </div>
              </div>
              {draft.quiet && (
                <div className="quiet-hours">
                  <TextField label="From" type="time" value={draft.from} onChange={(e) => set({ from: e.target.value })} error={errors["quiet_hours.from"]} data-testid="quiet-from" />
                  <TextField label="To" type="time" value={draft.to} onChange={(e) => set({ to: e.target.value })} error={errors["quiet_hours.to"]} data-testid="quiet-to" />
                  <span className="small muted" style={{ paddingBottom: "0.5rem" }}>
                    {draft.from && draft.to && draft.from > draft.to ? "crosses midnight" : ""}
                  </span>
                </div>
              )}
              <FieldErrorText error={errors.quiet_hours} />
              <div className="row end">
                <button className="primary" type="submit" disabled={saving} data-testid="save-preferences">
                  {saving ? "Saving…" : "Save"}
                </button>
              </div>
            </form>
          )}
        </div>
        {isSuperAdmin && <TestMessages />}
      </div>
    </>
  );
}

/** Super admins: "send me a test email / WhatsApp", followed until delivered or dead. */
function TestMessages() {
  const { factory, me } = useFactory();
  const toast = useToast();
  const [busy, setBusy] = useState<ChannelKind | null>(null);
  const [errors, setErrors] = useState<Partial<Record<ChannelKind, string>>>({});
  const [sent, setSent] = useState<Notification[]>([]);
  const pending = sent.filter((n) => n.status === "pending" || n.status === "sending").map((n) => n.id);
  const pendingKey = pending.join(",");
  useEffect(() => {
    if (!pendingKey) return;
    const t = setInterval(async () => {
      for (const id of pendingKey.split(",")) {
        try {
          const n = await unwrap(api.GET("/api/v1/factories/{factory_id}/notifications/{notification_id}", { params: { path: { factory_id: factory, notification_id: id } } }));
          setSent((all) => all.map((x) => (x.id === n.id ? n : x)));
        } catch {
          /* shown in the log */
        }
      }
    }, 2000);
    return () => clearInterval(t);
  }, [pendingKey, factory]);

  async function send(channel: ChannelKind) {
    setBusy(channel);
    setErrors((e) => ({ ...e, [channel]: undefined }));
    try {
      const n = await unwrap(api.POST("/api/v1/factories/{factory_id}/notifications/test", { params: { path: { factory_id: factory } }, body: { channel } }));
      setSent((all) => [n, ...all].slice(0, 4));
      toast.show("success", `Test ${channel === "email" ? "email" : "WhatsApp message"} queued`, `to ${n.recipient}`, {
        to: `/f/${factory}/notifications`,
        label: "Open the delivery log",
      });
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) setErrors((e) => ({ ...e, [channel]: err.fieldErrors().to ?? err.problem.detail }));
      else toast.error(err);
    } finally {
      setBusy(null);
    }
  }
  return (
    <div className="card">
      <h2>Test messages</h2>
      <p className="small muted" style={{ marginTop: 0 }}>
        Checks the provider settings end to end: a message goes to your own address ({me.user?.email}
        {me.user?.phone ? ` / ${me.user.phone}` : ""}) through the outbox like any alert.
      </p>
      <div className="stack">
        <div>
          <button onClick={() => void send("email")} disabled={busy !== null} data-testid="test-email">
            Send me a test email
          </button>
          <FieldErrorText error={errors.email} />
        </div>
        <div>
          <button onClick={() => void send("whatsapp")} disabled={busy !== null} data-testid="test-whatsapp">
            Send me a test WhatsApp
          </button>
          <FieldErrorText error={errors.whatsapp} />
        </div>
      </div>
      {sent.length > 0 && (
        <ul className="stack small" style={{ listStyle: "none", padding: 0, marginBottom: 0 }} data-testid="test-results">
          {sent.map((n) => (
            <li key={n.id} data-testid="test-result" data-status={n.status}>
              <Badge kind={n.status === "delivered" ? "ok" : n.status === "dead" ? "dead" : "warning"} dot>
                {STATUS_LABEL[n.status]}
              </Badge>{" "}
              {channelLabel(n.channel)} to <span className="mono">{n.recipient}</span>
              {n.last_error && <div className="field-error">{n.last_error}</div>}
            </li>
          ))}
        </ul>
      )}
      <p className="small" style={{ marginBottom: 0 }}>
        <Link to={`/f/${factory}/notifications`}>
          All deliveries
        </Link>
      </p>
    </div>
  );
}
