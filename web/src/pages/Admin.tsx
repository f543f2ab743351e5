import { useState, type FormEvent } from "react";
import { Navigate, NavLink, Route, Routes } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import { PERMISSIONS, type AuditEntry, type CreatedApiKey, type Permission, type User } from "../api/types";
import { useFactory } from "../factory";
import { Badge, CopyButton, Empty, Loading, SelectField, TextField, fmtAgo, fmtTime, useAsync } from "../ui/common";
import { Modal } from "../ui/Modal";
import { useToast } from "../ui/toast";
import { NotFound } from "./NotFound";

export function Admin() {
  const { factory, isSuperAdmin, can } = useFactory();
  if (!isSuperAdmin && !can("users:read")) return <NotFound />;
  const base = `/f/${factory}/admin`;
  return (
    <>
      <div className="page-head">
        <div>
          <h1>Administration</h1>
          <div className="sub">People, machine credentials and the audit trail of this factory.</div>
        </div>
      </div>
      <nav className="tabs" aria-label="Administration">
        <NavLink to={`${base}/users`}>Users</NavLink>
        {isSuperAdmin && <NavLink to={`${base}/api-keys`}>API keys</NavLink>}
        {isSuperAdmin && <NavLink to={`${base}/audit`}>Audit log</NavLink>}
      </nav>
      <Routes>
        <Route path="users" element={<Users />} />
        <Route path="api-keys" element={isSuperAdmin ? <ApiKeys /> : <NotFound />} />
        <Route path="audit" element={isSuperAdmin ? <Audit /> : <NotFound />} />
        <Route path="*" element={<Navigate to={`${base}/users`} replace />} />
      </Routes>
    </>
  );
}

function PermissionChecks({ value, onChange, disabled }: { value: string[]; onChange: (v: Permission[]) => void; disabled?: boolean }) {
  return (
    <div className="row" role="group" aria-label="Permissions">
      {PERMISSIONS.map((p) => (
        <label key={p} className="check">
          <input
            type="checkbox"
            disabled={disabled}
            checked={value.includes(p)}
            onChange={(e) => onChange((e.target.checked ? [...value, p] : value.filter((x) => x !== p)) as Permission[])}
          />
          <span className="mono small">{p}</span>
        </label>
      ))}
    </div>
  );
}

function Users() {
  const { factory, isSuperAdmin, me } = useFactory();
  const toast = useToast();
  const users = useAsync((signal) => unwrap(api.GET("/api/v1/factories/{factory_id}/users", { params: { path: { factory_id: factory }, query: { limit: 500 } }, signal })), [factory]);
  const [editing, setEditing] = useState<User | "new" | null>(null);
  const items = users.data?.items ?? [];
  async function toggle(u: User) {
    try {
      await unwrap(
        api.PATCH("/api/v1/factories/{factory_id}/users/{user_id}", {
          params: { path: { factory_id: factory, user_id: u.id } },
          body: { status: u.status === "active" ? "disabled" : "active" },
        }),
      );
      toast.show("success", `${u.name} ${u.status === "active" ? "disabled" : "enabled"}`);
      users.reload();
    } catch (e) {
      toast.error(e);
    }
  }
  return (
    <div className="card">
      <div className="row" style={{ marginBottom: "0.75rem" }}>
        <h2 style={{ margin: 0 }}>Users</h2>
        <span style={{ flex: 1 }} />
        {isSuperAdmin && (
          <button className="primary" onClick={() => setEditing("new")} data-testid="new-user">
            + New user
          </button>
        )}
      </div>
      {users.loading && !users.data ? (
        <Loading />
      ) : items.length === 0 ? (
        <Empty title="No users" />
      ) : (
        <div className="table-wrap">
          <table data-testid="users-table">
            <thead>
              <tr>
                <th>User</th>
                <th>Role</th>
                <th>Permissions</th>
                <th>Status</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {items.map((u) => (
                <tr key={u.id}>
                  <td>
                    <strong>{u.name}</strong>
                    <div className="small muted">{u.email}</div>
                    {u.phone && (
                      <div className="small muted mono" title="WhatsApp">
                        {u.phone}
                      </div>
                    )}
                  </td>
                  <td>
                    <Badge kind={u.role === "super_admin" ? "info" : ""}>{u.role.replace("_", " ")}</Badge>
                  </td>
                  <td className="small mono">{u.role === "super_admin" ? "all" : u.permissions.join(", ") || "read only"}</td>
                  <td>
                    <Badge kind={u.status === "active" ? "ok" : "dead"} dot>
                      {u.status}
                    </Badge>
                  </td>
                  <td className="right">
                    {isSuperAdmin && (
                      <div className="row end">
                        <button className="small" onClick={() => setEditing(u)} aria-label={`Edit ${u.name}`}>
                          Edit
                        </button>
                        {u.id !== me.user?.id && (
                          <button className={`small ${u.status === "active" ? "danger" : ""}`} onClick={() => void toggle(u)}>
                            {u.status === "active" ? "Disable" : "Enable"}
                          </button>
                        )}
                      </div>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {editing && (
        <UserForm
          user={editing === "new" ? null : editing}
          onClose={() => setEditing(null)}
          onSaved={(u) => {
            setEditing(null);
            toast.show("success", `User ${u.email} saved`);
            users.reload();
          }}
        />
      )}
    </div>
  );
}

function UserForm({ user, onClose, onSaved }: { user: User | null; onClose: () => void; onSaved: (u: User) => void }) {
  const { factory, me } = useFactory();
  const self = !!user && user.id === me.user?.id;
  const toast = useToast();
  const [email, setEmail] = useState(user?.email ?? "");
  const [name, setName] = useState(user?.name ?? "");
  const [role, setRole] = useState<string>(user?.role ?? "admin");
  const [permissions, setPermissions] = useState<Permission[]>(user?.permissions ?? ["devices:write"]);
  const [phone, setPhone] = useState(user?.phone ?? "");
  const [password, setPassword] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  async function submit(e: FormEvent) {
    e.preventDefault();
    setErrors({});
    const perms = role === "admin" ? permissions : [];
    try {
      if (user && password) {
        await unwrap(
          api.POST("/api/v1/factories/{factory_id}/users/{user_id}/password", {
            params: { path: { factory_id: factory, user_id: user.id } },
            body: { password },
          }),
        );
      }
      const saved = user
        ? await unwrap(
            api.PATCH("/api/v1/factories/{factory_id}/users/{user_id}", {
              params: { path: { factory_id: factory, user_id: user.id } },
              // Own account: name and phone only (a super admin does not demote themself by accident).
              // An empty phone removes the number.
              body: self ? { name, phone: phone.trim() } : { name, role, permissions: perms, phone: phone.trim() },
            }),
          )
        : await unwrap(
            api.POST("/api/v1/factories/{factory_id}/users", {
              params: { path: { factory_id: factory } },
              body: { email, name, role, permissions: perms, password, ...(phone.trim() ? { phone: phone.trim() } : {}) },
            }),
          );
      onSaved(saved);
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && (err.problem.errors?.length ?? 0) > 0) setErrors(err.fieldErrors());
      else toast.error(err);
    }
  }
  return (
    <Modal title={user ? `Edit ${user.name}` : "New user"} onClose={onClose}>
      <form className="form-grid" onSubmit={submit} noValidate>
        {!user && <TextField label="Email" type="email" value={email} onChange={(e) => setEmail(e.target.value)} error={errors.email} required />}
        <TextField label="Name" value={name} onChange={(e) => setName(e.target.value)} error={errors.name} required />
        <SelectField label="Role" value={role} onChange={(e) => setRole(e.target.value)} error={errors.role} disabled={self} help={self ? "Your own role is changed by another super admin." : undefined}>
          <option value="viewer">viewer (read only)</option>
          <option value="admin">admin (with permissions)</option>
          <option value="super_admin">super admin (everything)</option>
        </SelectField>
        <TextField
          label="Phone (WhatsApp)"
          type="tel"
          autoComplete="tel"
          value={phone}
          onChange={(e) => setPhone(e.target.value)}
          error={errors.phone}
          placeholder="+4915112345678"
          help="E.164: + country code and number, no spaces or leading 0. Empty: no WhatsApp."
        />
        <TextField
          label={user ? "New password (optional)" : "Initial password"}
          type="password"
          autoComplete="new-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          error={errors.password}
          required={!user}
          help={user ? "Sets a new password and signs the user out everywhere." : undefined}
        />
        {role === "admin" && !self && (
          <div className="wide">
            <div className="small" style={{ fontWeight: 550, marginBottom: "0.3rem" }}>
              Permissions
            </div>
            <PermissionChecks value={permissions} onChange={setPermissions} />
            {errors.permissions && <div className="field-error">{errors.permissions}</div>}
          </div>
        )}
        <div className="row end wide">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button className="primary" type="submit" data-testid="save-user">
            {user ? "Save" : "Create user"}
          </button>
        </div>
      </form>
    </Modal>
  );
}

function ApiKeys() {
  const { factory } = useFactory();
  const toast = useToast();
  const keys = useAsync((signal) => unwrap(api.GET("/api/v1/factories/{factory_id}/api-keys", { params: { path: { factory_id: factory }, query: { limit: 500 } }, signal })), [factory]);
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<CreatedApiKey | null>(null);
  const [name, setName] = useState("");
  const [permissions, setPermissions] = useState<Permission[]>(["telemetry:write"]);
  const [expires, setExpires] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  async function create(e: FormEvent) {
    e.preventDefault();
    setErrors({});
    try {
      const key = await unwrap(
        api.POST("/api/v1/factories/{factory_id}/api-keys", {
          params: { path: { factory_id: factory } },
          body: { name, permissions, ...(expires ? { expires_at: new Date(expires).toISOString() } : {}) },
        }),
      );
      setCreating(false);
      setCreated(key);
      setName("");
      keys.reload();
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && (err.problem.errors?.length ?? 0) > 0) setErrors(err.fieldErrors());
      else toast.error(err);
    }
  }
  async function revoke(id: string) {
    try {
      await unwrap(api.DELETE("/api/v1/factories/{factory_id}/api-keys/{key_id}", { params: { path: { factory_id: factory, key_id: id } } }));
      toast.show("success", "API key revoked");
      keys.reload();
    } catch (e) {
      toast.error(e);
    }
  }
  const items = keys.data?.items ?? [];
  return (
    <div className="card">
      <div className="row" style={{ marginBottom: "0.75rem" }}>
        <h2 style={{ margin: 0 }}>API keys</h2>
        <span style={{ flex: 1 }} />
        <button className="primary" onClick={() => setCreating(true)}>
          + New API key
        </button>
      </div>
      {keys.loading && !keys.data ? (
        <Loading />
      ) : items.length === 0 ? (
        <Empty icon="⚷" title="No API keys">
          API keys let machines read data or push telemetry over HTTP.
        </Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th>Name</th>
                <th>Key</th>
                <th>Permissions</th>
                <th>Last used</th>
                <th>Expires</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {items.map((k) => (
                <tr key={k.id}>
                  <td>
                    <strong>{k.name}</strong>
                    {k.revoked_at && (
                      <>
                        {" "}
                        <Badge kind="dead">revoked</Badge>
                      </>
                    )}
                  </td>
                  <td className="mono small">{k.prefix}…</td>
                  <td className="mono small">{k.permissions.join(", ")}</td>
                  <td className="small">{fmtAgo(k.last_used_at)}</td>
                  <td className="small">{k.expires_at ? fmtTime(k.expires_at) : "never"}</td>
                  <td className="right">
                    {!k.revoked_at && (
                      <button className="small danger" onClick={() => void revoke(k.id)}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {creating && (
        <Modal title="New API key" onClose={() => setCreating(false)}>
          <form className="stack" onSubmit={create}>
            <TextField label="Name" value={name} onChange={(e) => setName(e.target.value)} error={errors.name} required placeholder="e.g. SCADA gateway" />
            <div>
              <div className="small" style={{ fontWeight: 550, marginBottom: "0.3rem" }}>
                Permissions
              </div>
              <PermissionChecks value={permissions} onChange={setPermissions} />
              {errors.permissions && <div className="field-error">{errors.permissions}</div>}
            </div>
            <TextField label="Expires (optional)" type="datetime-local" value={expires} onChange={(e) => setExpires(e.target.value)} error={errors.expires_at} />
            <div className="row end">
              <button type="button" onClick={() => setCreating(false)}>
                Cancel
              </button>
              <button className="primary" type="submit">
                Create key
              </button>
            </div>
          </form>
        </Modal>
      )}
      {created && (
        <Modal title="API key created" onClose={() => setCreated(null)}>
          <div className="callout warn" style={{ marginBottom: "1rem" }}>
            Copy the key now: it is shown only once.
          </div>
          <div className="row">
            <code className="secret" style={{ flex: 1 }}>
              {created.key}
            </code>
            <CopyButton text={created.key} />
          </div>
          <p className="small muted">Use it as <code>Authorization: Bearer {created.prefix}…</code></p>
          <div className="row end">
            <button className="primary" onClick={() => setCreated(null)}>
              Done
            </button>
          </div>
        </Modal>
      )}
    </div>
  );
}

function Audit() {
  const { factory } = useFactory();
  const toast = useToast();
  const [action, setAction] = useState("");
  const [actor, setActor] = useState("");
  const [applied, setApplied] = useState({ action: "", actor: "" });
  const [extra, setExtra] = useState<AuditEntry[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const log = useAsync(
    async (signal) => {
      const page = await unwrap(
        api.GET("/api/v1/factories/{factory_id}/audit", {
          params: { path: { factory_id: factory }, query: { limit: 100, ...(applied.action ? { action: applied.action } : {}), ...(applied.actor ? { actor: applied.actor } : {}) } },
          signal,
        }),
      );
      setExtra([]);
      setCursor(page.next_cursor ?? null);
      return page.items;
    },
    [factory, applied.action, applied.actor],
  );
  async function more() {
    if (!cursor) return;
    try {
      const page = await unwrap(
        api.GET("/api/v1/factories/{factory_id}/audit", {
          params: { path: { factory_id: factory }, query: { limit: 100, cursor, ...(applied.action ? { action: applied.action } : {}), ...(applied.actor ? { actor: applied.actor } : {}) } },
        }),
      );
      setExtra((x) => [...x, ...page.items]);
      setCursor(page.next_cursor ?? null);
    } catch (e) {
      toast.error(e);
    }
  }
  const items = [...(log.data ?? []), ...extra];
  const users = useAsync((signal) => unwrap(api.GET("/api/v1/factories/{factory_id}/users", { params: { path: { factory_id: factory }, query: { limit: 500 } }, signal })), [factory]);
  const names = new Map((users.data?.items ?? []).map((u) => [u.id, u.name] as const));
  /** `user:<id>` → the user's name; ids as targets too. */
  const who = (text: string | null | undefined) => {
    if (!text) return "—";
    const id = text.startsWith("user:") ? text.slice(5) : text;
    const name = names.get(id);
    return name ? <span title={text}>{name}</span> : text;
  };
  return (
    <div className="card">
      <form
        className="row"
        style={{ marginBottom: "0.75rem" }}
        onSubmit={(e) => {
          e.preventDefault();
          setApplied({ action, actor });
        }}
      >
        <h2 style={{ margin: 0 }}>Audit log</h2>
        <span style={{ flex: 1 }} />
        <input aria-label="Action" placeholder="action, e.g. login.failed" value={action} onChange={(e) => setAction(e.target.value)} />
        <input aria-label="Actor" placeholder="actor, e.g. user:…" value={actor} onChange={(e) => setActor(e.target.value)} />
        <button type="submit">Filter</button>
      </form>
      {log.loading && !log.data ? (
        <Loading />
      ) : items.length === 0 ? (
        <Empty icon="☰" title="No entries" />
      ) : (
        <div className="table-wrap">
          <table data-testid="audit-table">
            <thead>
              <tr>
                <th>When</th>
                <th>Action</th>
                <th>Actor</th>
                <th>Target</th>
                <th>Detail</th>
              </tr>
            </thead>
            <tbody>
              {items.map((a) => (
                <tr key={a.id}>
                  <td className="small">{fmtTime(a.at)}</td>
                  <td>
                    <Badge kind={a.action.includes("failed") || a.action.includes("reuse") ? "warning" : ""}>{a.action}</Badge>
                  </td>
                  <td className="small">{who(a.actor)}</td>
                  <td className="small">{who(a.target)}</td>
                  <td className="mono small" style={{ maxWidth: 360, overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" }} title={JSON.stringify(a.detail)}>
                    {JSON.stringify(a.detail)}
                    {a.source_ip ? ` · ${a.source_ip}` : ""}
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
  );
}
