import { useEffect, useState, type FormEvent } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";
import { api, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import { getSession, sessionFromTokens, setSession } from "../api/session";
import { SelectField, TextField, useAsync } from "../ui/common";
import { ThemeToggle } from "../ui/ThemeToggle";

const LAST_FACTORY = "factoryops.lastFactory";

export function EntryPage() {
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const factories = useAsync((signal) => unwrap(api.GET("/api/v1/factories", { signal })), []);
  const [factory, setFactory] = useState(params.get("factory") ?? localStorage.getItem(LAST_FACTORY) ?? "");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const expired = params.get("expired") === "1";

  // Already signed in: go straight to the console.
  useEffect(() => {
    const s = getSession();
    if (s?.kind === "user" && s.factory && !expired) navigate(`/f/${s.factory}`, { replace: true });
  }, [navigate, expired]);

  const items = factories.data?.items ?? [];
  useEffect(() => {
    if (!factory && items.length > 0) setFactory(items[0]!.id);
  }, [items, factory]);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const result = await unwrap(
        api.POST("/api/v1/factories/{factory_id}/auth/login", { params: { path: { factory_id: factory } }, body: { email, password } }),
      );
      setSession(sessionFromTokens("user", result, factory, result.user ?? null));
      localStorage.setItem(LAST_FACTORY, factory);
      const next = params.get("next");
      navigate(next && next.startsWith(`/f/${factory}`) ? next : `/f/${factory}`, { replace: true });
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError({ type: "about:blank", title: "Error", status: 0, detail: String(err) }));
    } finally {
      setBusy(false);
    }
  }

  const fields = error?.fieldErrors() ?? {};
  const listDisabled = factories.error instanceof ApiError && factories.error.status === 404;
  return (
    <div className="entry">
      <div className="card entry-card">
        <div className="row">
          <div className="brand">
            <span className="brand-mark" aria-hidden="true">
              FO
            </span>
            FactoryOps
          </div>
          <span style={{ flex: 1 }} />
          <ThemeToggle />
        </div>
        <h1>Sign in</h1>
        <p className="muted" style={{ marginTop: 0 }}>
          Choose your factory and sign in with your work account.
        </p>
        {expired && (
          <div className="callout warn" role="status" style={{ marginBottom: "1rem" }}>
            Your session has expired. Please sign in again.
          </div>
        )}
        <form className="stack" onSubmit={submit} noValidate>
          {listDisabled || (factories.data && items.length === 0) ? (
            <TextField label="Factory id" value={factory} onChange={(e) => setFactory(e.target.value.trim())} required autoComplete="organization" />
          ) : (
            <SelectField
              label="Factory"
              value={factory}
              onChange={(e) => setFactory(e.target.value)}
              disabled={factories.loading && !factories.data}
              required
              data-testid="factory-select"
            >
              {factories.loading && !factories.data && <option>Loading factories…</option>}
              {items.length === 0 && !factories.loading && <option value="">No factories yet</option>}
              {items.map((f) => (
                <option key={f.id} value={f.id}>
                  {f.name} ({f.id})
                </option>
              ))}
            </SelectField>
          )}
          <TextField label="Email" type="email" autoComplete="username" value={email} onChange={(e) => setEmail(e.target.value)} error={fields.email} required />
          <TextField
            label="Password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            error={fields.password}
            required
          />
          {error && !Object.keys(fields).length && (
            <div className="callout danger" role="alert" data-testid="login-error">
              {error.problem.detail || error.problem.title}
            </div>
          )}
          <button className="primary" type="submit" disabled={busy || !factory || !email || !password}>
            {busy ? "Signing in…" : "Sign in"}
          </button>
        </form>
        <div className="entry-foot">
          <Link to="/platform/login">Platform administration</Link>
          <a href="/api/docs">API docs</a>
        </div>
      </div>
    </div>
  );
}
