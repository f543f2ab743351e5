// The signed-in session: tokens in localStorage (so a reload keeps you signed in),
// silent refresh before expiry and on a 401, serialised — refresh tokens rotate and
// presenting an old one revokes the whole session family, so two refreshes must
// never race, neither within a tab nor across tabs (Web Locks where available).

import { ApiError, problemFromResponse } from "./problem";
import type { TokenPair, User } from "./types";

export interface Session {
  kind: "user" | "root";
  /** The factory of a user session. */
  factory?: string;
  access: string;
  refresh: string;
  /** ms since epoch when the access token expires. */
  expiresAt: number;
  user?: User | null;
}

const KEY = "factoryops.session";
type Listener = (session: Session | null, reason?: "expired" | "logout") => void;
const listeners = new Set<Listener>();

let current: Session | null = load();
let refreshing: Promise<Session | null> | null = null;
let timer: ReturnType<typeof setTimeout> | undefined;

function load(): Session | null {
  try {
    const raw = globalThis.localStorage?.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

function store(session: Session | null) {
  try {
    if (session) localStorage.setItem(KEY, JSON.stringify(session));
    else localStorage.removeItem(KEY);
  } catch {
    /* private mode: keep it in memory */
  }
}

export function getSession(): Session | null {
  return current;
}

export function onSessionChange(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

let endReason: "expired" | "logout" | undefined;
/** Why the last session ended (for the sign-in page's "session expired" note). */
export function sessionEndReason(): "expired" | "logout" | undefined {
  return endReason;
}

export function setSession(session: Session | null, reason?: "expired" | "logout") {
  endReason = session ? undefined : reason;
  current = session;
  store(session);
  schedule();
  for (const l of listeners) l(session, reason);
}

export function sessionFromTokens(kind: Session["kind"], tokens: TokenPair, factory?: string, user?: User | null): Session {
  return {
    kind,
    ...(factory ? { factory } : {}),
    access: tokens.access_token,
    refresh: tokens.refresh_token,
    expiresAt: Date.now() + tokens.expires_in * 1000,
    ...(user !== undefined ? { user } : {}),
  };
}

/** Refreshes a minute before the access token expires. */
function schedule() {
  if (timer) clearTimeout(timer);
  timer = undefined;
  if (!current || typeof window === "undefined") return;
  const due = Math.max(5_000, current.expiresAt - Date.now() - 60_000);
  timer = setTimeout(() => void refresh().catch(() => undefined), due);
}
schedule();

// Another tab signed in, refreshed or signed out: follow it.
if (typeof window !== "undefined") {
  window.addEventListener("storage", (e) => {
    if (e.key !== KEY) return;
    current = load();
    schedule();
    for (const l of listeners) l(current);
  });
}

function refreshUrl(s: Session): string {
  return s.kind === "root"
    ? "/api/v1/platform/refresh"
    : `/api/v1/factories/${encodeURIComponent(s.factory ?? "")}/auth/refresh`;
}

/** One refresh at a time; concurrent callers share it. Resolves to null when the session is gone. */
export function refresh(): Promise<Session | null> {
  if (!refreshing) {
    refreshing = withLock(doRefresh).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function withLock<T>(fn: () => Promise<T>): Promise<T> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (locks?.request) return locks.request("factoryops.refresh", () => fn()) as Promise<T>;
  return fn();
}

async function doRefresh(): Promise<Session | null> {
  const before = current;
  // Another tab may have rotated the token while we waited for the lock.
  const latest = load();
  if (!latest) {
    if (before) setSession(null, "expired");
    return null;
  }
  if (before && latest.refresh !== before.refresh && latest.expiresAt - Date.now() > 60_000) {
    current = latest;
    schedule();
    return latest;
  }
  let response: Response;
  try {
    response = await fetch(refreshUrl(latest), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: latest.refresh }),
    });
  } catch {
    // Offline for a moment: keep the session, try again later.
    return latest;
  }
  if (!response.ok) {
    if (response.status === 401 || response.status === 403 || response.status === 404) {
      setSession(null, "expired");
      return null;
    }
    throw new ApiError(await problemFromResponse(response));
  }
  const tokens = (await response.json()) as TokenPair;
  const next = sessionFromTokens(latest.kind, tokens, latest.factory, latest.user);
  setSession(next);
  return next;
}

/** Sends a request with the access token; on a 401, refreshes once and retries. */
export async function authFetch(input: string, init: RequestInit = {}, retry = true): Promise<Response> {
  let session = current;
  if (session && session.expiresAt - Date.now() < 10_000) session = await refresh();
  const headers = new Headers(init.headers);
  if (session) headers.set("authorization", `Bearer ${session.access}`);
  const response = await fetch(input, { ...init, headers });
  if (response.status === 401 && retry && session) {
    const renewed = await refresh();
    if (renewed) return authFetch(input, init, false);
  }
  return response;
}

export async function logout(): Promise<void> {
  const s = current;
  setSession(null, "logout");
  if (s?.kind === "user" && s.factory) {
    await fetch(`/api/v1/factories/${encodeURIComponent(s.factory)}/auth/logout`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${s.access}` },
      body: JSON.stringify({ refresh_token: s.refresh }),
    }).catch(() => undefined);
  }
}
