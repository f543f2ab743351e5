import { useState, type FormEvent } from "react";
import { Link, Navigate, useNavigate, useSearchParams } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import { logout, sessionFromTokens, setSession } from "../api/session";
import type { Factory } from "../api/types";
import { Badge, Empty, Loading, TextField, fmtTime, useAsync } from "../ui/common";
import { Modal } from "../ui/Modal";
import { ThemeToggle } from "../ui/ThemeToggle";
import { useToast } from "../ui/toast";
import { useSession } from "../ui/useSession";

export function PlatformLogin() {
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const [username, setUsername] = useState("root");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const result = await unwrap(api.POST("/api/v1/platform/login", { body: { username, password } }));
      setSession(sessionFromTokens("root", result));
      navigate("/platform", { replace: true });
    } catch (err) {
      if (err instanceof ApiError) setError(err);
    } finally {
      setBusy(false);
    }
  }
  return (
    <div className="entry">
      <div className="card entry-card">
        <div className="row">
          <div className="brand">
            <span className="brand-mark" aria-hidden="true">
              FO
            </span>
            Platform
          </div>
          <span style={{ flex: 1 }} />
          <ThemeToggle />
        </div>
        <h1>Platform administration</h1>
        <p className="muted" style={{ marginTop: 0 }}>
          The platform root manages factories; it never sees factory data.
        </p>
        {params.get("expired") === "1" && (
          <div className="callout warn" role="status" style={{ marginBottom: "1rem" }}>
            Your session has expired. Please sign in again.
          </div>
        )}
        <form className="stack" onSubmit={submit}>
          <TextField label="Username" value={username} onChange={(e) => setUsername(e.target.value)} autoComplete="username" required />
          <TextField label="Password" type="password" value={password} onChange={(e) => setPassword(e.target.value)} autoComplete="current-password" required />
          {error && (
            <div className="callout danger" role="alert">
              {error.problem.detail}
            </div>
          )}
          <button className="primary" type="submit" disabled={busy || !password}>
            {busy ? "Signing in…" : "Sign in"}
          </button>
        </form>
        <div className="entry-foot">
          <Link to="/">Factory sign-in</Link>
        </div>
      </div>
    </div>
  );
}

const TIMEZONES: string[] = (() => {
  try {
    return (Intl as unknown as { supportedValuesOf: (k: string) => string[] }).supportedValuesOf("timeZone");
  } catch {
    return ["UTC", "Europe/Berlin", "Europe/London", "America/New_York", "Asia/Kolkata"];
  }
})();

export function PlatformConsole() {
  const session = useSession();
  const navigate = useNavigate();
  const toast = useToast();
  const list = useAsync((signal) => unwrap(api.GET("/api/v1/platform/factories", { signal })), []);
  const [creating, setCreating] = useState(false);
  const [admin, setAdmin] = useState<Factory | null>(null);
  const [editing, setEditing] = useState<Factory | null>(null);
  if (!session || session.kind !== "root") return <Navigate to="/platform/login" replace />;

  async function toggle(f: Factory) {
    try {
      const status = f.status === "active" ? "disabled" : "active";
      await unwrap(api.PATCH("/api/v1/platform/factories/{factory_id}", { params: { path: { factory_id: f.id } }, body: { status } }));
      toast.show("success", `${f.name} ${status === "active" ? "enabled" : "disabled"}`);
      list.reload();
    } catch (e) {
      toast.error(e);
    }
  }

  const items = list.data?.items ?? [];
  return (
    <div className="main" style={{ minHeight: "100%" }}>
      <header className="topbar">
        <div className="brand" style={{ padding: 0 }}>
          <span className="brand-mark" aria-hidden="true">
            FO
          </span>
          FactoryOps platform
        </div>
        <span className="spacer" />
        <ThemeToggle />
        <button
          className="small"
          onClick={async () => {
            await logout();
            navigate("/platform/login");
          }}
        >
          Sign out
        </button>
      </header>
      <main className="content" style={{ margin: "0 auto" }}>
        <div className="page-head">
          <div>
            <h1>Factories</h1>
            <div className="sub">Each factory is an isolated tenant with its own users, devices and data.</div>
          </div>
          <div className="actions">
            <button className="primary" onClick={() => setCreating(true)}>
              + New factory
            </button>
          </div>
        </div>
        <div className="card">
          {list.loading && !list.data ? (
            <Loading />
          ) : items.length === 0 ? (
            <Empty icon="⌂" title="No factories yet">
              <p>Create the first factory, then its super admin.</p>
            </Empty>
          ) : (
            <div className="table-wrap">
              <table data-testid="factories-table">
                <thead>
                  <tr>
                    <th>Factory</th>
                    <th>Id</th>
                    <th>Time zone</th>
                    <th>Status</th>
                    <th>Created</th>
                    <th className="right">Actions</th>
                  </tr>
                </thead>
                <tbody>
                  {items.map((f) => (
                    <tr key={f.id}>
                      <td>
                        <strong>{f.name}</strong>
                      </td>
                      <td className="mono">{f.id}</td>
                      <td>{f.timezone}</td>
                      <td>
                        <Badge kind={f.status === "active" ? "ok" : "dead"} dot>
                          {f.status}
                        </Badge>
                      </td>
                      <td className="muted">{fmtTime(f.created_at)}</td>
                      <td className="right">
                        <div className="row end">
                          <button className="small" onClick={() => setEditing(f)}>
                            Edit
                          </button>
                          <button className="small" onClick={() => setAdmin(f)}>
                            Create super admin
                          </button>
                          <button className={`small ${f.status === "active" ? "danger" : ""}`} onClick={() => toggle(f)}>
                            {f.status === "active" ? "Disable" : "Enable"}
                          </button>
                        </div>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </div>
      </main>
      {creating && (
        <FactoryForm
          onClose={() => setCreating(false)}
          onSaved={(f) => {
            setCreating(false);
            toast.show("success", `Factory ${f.name} created`, "Now create its first super admin.");
            list.reload();
            setAdmin(f);
          }}
        />
      )}
      {editing && (
        <FactoryForm
          factory={editing}
          onClose={() => setEditing(null)}
          onSaved={(f) => {
            setEditing(null);
            toast.show("success", `Factory ${f.name} saved`);
            list.reload();
          }}
        />
      )}
      {admin && <SuperAdminForm factory={admin} onClose={() => setAdmin(null)} />}
    </div>
  );
}

function FactoryForm({ factory, onClose, onSaved }: { factory?: Factory; onClose: () => void; onSaved: (f: Factory) => void }) {
  const [id, setId] = useState(factory?.id ?? "");
  const [name, setName] = useState(factory?.name ?? "");
  const [timezone, setTimezone] = useState(factory?.timezone ?? Intl.DateTimeFormat().resolvedOptions().timeZone ?? "UTC");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const toast = useToast();
  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setErrors({});
    try {
      const saved = factory
        ? await unwrap(api.PATCH("/api/v1/platform/factories/{factory_id}", { params: { path: { factory_id: factory.id } }, body: { name, timezone } }))
        : await unwrap(api.POST("/api/v1/platform/factories", { body: { id, name, timezone } }));
      onSaved(saved);
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) setErrors(err.fieldErrors());
      else toast.error(err);
    } finally {
      setBusy(false);
    }
  }
  return (
    <Modal title={factory ? `Edit ${factory.name}` : "New factory"} onClose={onClose}>
      <form className="stack" onSubmit={submit} noValidate>
        {!factory && (
          <TextField
            label="Id"
            value={id}
            onChange={(e) => setId(e.target.value)}
            error={errors.id}
            help="Lower-case slug, e.g. plant-1. Part of URLs and MQTT topics; cannot change."
            required
            pattern="[a-z0-9][a-z0-9\-]{0,62}"
          />
        )}
        <TextField label="Name" value={name} onChange={(e) => setName(e.target.value)} error={errors.name} required />
        <TextField label="Time zone" value={timezone} onChange={(e) => setTimezone(e.target.value)} error={errors.timezone} list="tz-list" help="IANA time zone; rule schedules and reports use it." />
        <datalist id="tz-list">
          {TIMEZONES.map((z) => (
            <option key={z} value={z} />
          ))}
        </datalist>
        <div className="row end">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button className="primary" type="submit" disabled={busy}>
            {factory ? "Save" : "Create factory"}
          </button>
        </div>
      </form>
    </Modal>
  );
}

function SuperAdminForm({ factory, onClose }: { factory: Factory; onClose: () => void }) {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const toast = useToast();
  async function submit(e: FormEvent) {
    e.preventDefault();
    setErrors({});
    try {
      await unwrap(
        api.POST("/api/v1/platform/factories/{factory_id}/super-admins", { params: { path: { factory_id: factory.id } }, body: { email, name, password } }),
      );
      toast.show("success", `Super admin ${email} created`, `They can now sign in to ${factory.name}.`);
      onClose();
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) setErrors(err.fieldErrors());
      else toast.error(err);
    }
  }
  return (
    <Modal title={`Super admin for ${factory.name}`} onClose={onClose}>
      <form className="stack" onSubmit={submit}>
        <TextField label="Email" type="email" value={email} onChange={(e) => setEmail(e.target.value)} error={errors.email} required />
        <TextField label="Name" value={name} onChange={(e) => setName(e.target.value)} error={errors.name} required />
        <TextField label="Initial password" type="password" value={password} onChange={(e) => setPassword(e.target.value)} error={errors.password} autoComplete="new-password" required />
        <div className="row end">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button className="primary" type="submit">
            Create super admin
          </button>
        </div>
      </form>
    </Modal>
  );
}

