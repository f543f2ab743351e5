import { lazy, Suspense, useEffect, useMemo, useState, type ReactNode } from "react";
import { BrowserRouter, Navigate, NavLink, Outlet, Route, Routes, useLocation, useNavigate, useParams } from "react-router-dom";
import { api, unwrap } from "./api/client";
import { logout, onSessionChange, sessionEndReason } from "./api/session";
import { useSession } from "./ui/useSession";
import { FactoryContext, permissionsOf, useFactory, type FactoryCtx } from "./factory";
import { StreamProvider, useStreamStatus } from "./stream";
import { Loading, useAsync } from "./ui/common";
import { ToastProvider } from "./ui/toast";
import { ThemeToggle } from "./ui/ThemeToggle";
import { PasswordDialog } from "./ui/PasswordDialog";
import { EntryPage } from "./pages/Entry";
import { NotFound } from "./pages/NotFound";
import { isOperator } from "./pages/roles";

const PlatformLogin = lazy(() => import("./pages/Platform").then((m) => ({ default: m.PlatformLogin })));
const PlatformConsole = lazy(() => import("./pages/Platform").then((m) => ({ default: m.PlatformConsole })));
const Dashboard = lazy(() => import("./pages/Dashboard").then((m) => ({ default: m.Dashboard })));
const Operations = lazy(() => import("./pages/Operations").then((m) => ({ default: m.Operations })));
const Devices = lazy(() => import("./pages/Devices").then((m) => ({ default: m.Devices })));
const DeviceDetail = lazy(() => import("./pages/DeviceDetail").then((m) => ({ default: m.DeviceDetail })));
const Explorer = lazy(() => import("./pages/Explorer").then((m) => ({ default: m.Explorer })));
const Rules = lazy(() => import("./pages/Rules").then((m) => ({ default: m.Rules })));
const RuleEditorPage = lazy(() => import("./pages/RuleEditor").then((m) => ({ default: m.RuleEditorPage })));
const Alerts = lazy(() => import("./pages/Alerts").then((m) => ({ default: m.Alerts })));
const AlertDetail = lazy(() => import("./pages/Alerts").then((m) => ({ default: m.AlertDetail })));
const Notifications = lazy(() => import("./pages/Notifications").then((m) => ({ default: m.Notifications })));
const MyNotifications = lazy(() => import("./pages/MyNotifications").then((m) => ({ default: m.MyNotifications })));
const Energy = lazy(() => import("./pages/Energy").then((m) => ({ default: m.Energy })));
const Settings = lazy(() => import("./pages/Settings").then((m) => ({ default: m.Settings })));
const Admin = lazy(() => import("./pages/Admin").then((m) => ({ default: m.Admin })));

export function App() {
  return (
    <BrowserRouter>
      <ToastProvider>
        <SessionWatcher />
        <Suspense fallback={<Loading />}>
          <Routes>
            <Route path="/" element={<EntryPage />} />
            <Route path="/platform/login" element={<PlatformLogin />} />
            <Route path="/platform" element={<PlatformConsole />} />
            <Route path="/f/:factory" element={<FactoryLayout />}>
              <Route index element={<Dashboard />} />
              <Route path="dashboards/:dashboardId" element={<Dashboard />} />
              <Route path="operations" element={<Operations />} />
              <Route path="devices" element={<Devices />} />
              <Route path="devices/:deviceId" element={<DeviceDetail />} />
              <Route path="explorer" element={<Explorer />} />
              <Route path="rules" element={<Rules />} />
              <Route path="rules/new" element={<RuleEditorPage />} />
              <Route path="rules/:ruleId" element={<RuleEditorPage />} />
              <Route path="alerts" element={<Alerts />} />
              <Route path="alerts/:alertId" element={<AlertDetail />} />
              <Route path="notifications" element={<Notifications />} />
              <Route path="settings/notifications" element={<MyNotifications />} />
              <Route path="energy" element={<Energy />} />
              <Route path="settings/*" element={<Settings />} />
              <Route path="admin/*" element={<Admin />} />
              <Route path="*" element={<NotFound />} />
            </Route>
            <Route path="*" element={<NotFound standalone />} />
          </Routes>
        </Suspense>
      </ToastProvider>
    </BrowserRouter>
  );
}

/** Sends the user to the entry page when the session expires (refresh failed). */
function SessionWatcher() {
  const navigate = useNavigate();
  const location = useLocation();
  useEffect(
    () =>
      onSessionChange((session, reason) => {
        if (session || reason !== "expired") return;
        const factory = /^\/f\/([^/]+)/.exec(location.pathname)?.[1];
        if (location.pathname.startsWith("/platform")) navigate("/platform/login?expired=1");
        else navigate(`/?expired=1${factory ? `&factory=${factory}` : ""}&next=${encodeURIComponent(location.pathname + location.search)}`);
      }),
    [navigate, location],
  );
  return null;
}

function FactoryLayout() {
  const { factory = "" } = useParams();
  const session = useSession();
  const location = useLocation();
  const me = useAsync((signal) => unwrap(api.GET("/api/v1/me", { signal })), [session?.access === undefined, session?.factory]);
  if (!session) {
    const expired = sessionEndReason() === "expired" ? "expired=1&" : "";
    return <Navigate to={`/?${expired}factory=${encodeURIComponent(factory)}&next=${encodeURIComponent(location.pathname)}`} replace />;
  }
  if (session.kind === "root") return <Navigate to="/platform" replace />;
  if (!me.data) return me.error ? <NotFound standalone /> : <Loading label="Loading your factory…" />;
  const ownFactory = me.data.factory?.id ?? session.factory ?? "";
  const ctx: FactoryCtx = {
    factory,
    me: me.data,
    can: permissionsOf(me.data),
    isSuperAdmin: me.data.role === "super_admin",
    timezone: me.data.factory?.timezone ?? "UTC",
  };
  return (
    <FactoryContext.Provider value={ctx}>
      <StreamProvider factory={ownFactory}>
        <Shell home={ownFactory} factoryName={me.data.factory?.name ?? ownFactory}>
          {/* Another factory's URL: exactly like a missing page (the API would answer 404 too). */}
          {factory !== ownFactory ? <NotFound /> : <Outlet />}
        </Shell>
      </StreamProvider>
    </FactoryContext.Provider>
  );
}

function LiveIndicator() {
  const status = useStreamStatus();
  const cls = status === "live" ? "on" : status === "offline" ? "off" : "";
  return (
    <span className={`live ${cls}`} data-testid="live-status" data-status={status} title="Live updates from the server">
      <span className="dot" aria-hidden="true" />
      {status === "live" ? "Live" : status === "connecting" ? "Connecting…" : "Offline"}
    </span>
  );
}

function Shell({ home, factoryName, children }: { home: string; factoryName: string; children: ReactNode }) {
  const { me, isSuperAdmin, can, timezone } = useFactory();
  const [open, setOpen] = useState(false);
  const [changingPassword, setChangingPassword] = useState(false);
  const location = useLocation();
  const navigate = useNavigate();
  useEffect(() => setOpen(false), [location.pathname]);
  const base = `/f/${home}`;
  const links = useMemo(
    () => [
      { to: base, label: "Dashboard", icon: "◧", end: true },
      { to: `${base}/devices`, label: "Devices", icon: "▤" },
      { to: `${base}/explorer`, label: "Explorer", icon: "∿" },
      { to: `${base}/rules`, label: "Rules", icon: "⚙" },
      { to: `${base}/alerts`, label: "Alerts", icon: "⚠" },
      { to: `${base}/notifications`, label: "Notifications", icon: "✉" },
      { to: `${base}/energy`, label: "Energy", icon: "ϟ" },
      { to: `${base}/settings`, label: "Factory settings", icon: "⚒" },
    ],
    [base],
  );
  return (
    <div className={`shell ${open ? "nav-open" : ""}`}>
      <aside className="sidebar" aria-label="Main navigation">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true">
            FO
          </span>
          FactoryOps
        </div>
        <div className="factory-chip" data-testid="factory-name">
          {factoryName}
          <small>
            {home} · {timezone}
          </small>
        </div>
        <nav className="nav">
          {links.map((l) => (
            <NavLink key={l.to} to={l.to} end={l.end ?? false}>
              <span className="nav-icon" aria-hidden="true">
                {l.icon}
              </span>
              {l.label}
            </NavLink>
          ))}
          {(isSuperAdmin || can("users:read") || isOperator(me.role)) && (
            <>
              <div className="nav-section">Administration</div>
              {(isSuperAdmin || can("users:read")) && (
                <NavLink to={`${base}/admin/users`}>
                  <span className="nav-icon" aria-hidden="true">
                    ☺
                  </span>
                  Users
                </NavLink>
              )}
              {isOperator(me.role) && (
                <NavLink to={`${base}/operations`}>
                  <span className="nav-icon" aria-hidden="true">
                    ↯
                  </span>
                  Operations
                </NavLink>
              )}
              {isSuperAdmin && (
                <>
                  <NavLink to={`${base}/admin/api-keys`}>
                    <span className="nav-icon" aria-hidden="true">
                      ⚷
                    </span>
                    API keys
                  </NavLink>
                  <NavLink to={`${base}/admin/audit`}>
                    <span className="nav-icon" aria-hidden="true">
                      ☰
                    </span>
                    Audit log
                  </NavLink>
                </>
              )}
            </>
          )}
        </nav>
        <div className="sidebar-foot">
          <div>
            <strong data-testid="user-name">{me.user?.name ?? me.user?.email}</strong>
            <div className="muted small">{me.role.replace("_", " ")}</div>
          </div>
          <div className="row" style={{ gap: "0.4rem" }}>
            {me.kind === "user" && (
              <NavLink className="button small" to={`${base}/settings/notifications`} data-testid="my-notifications">
                My notifications
              </NavLink>
            )}
            <button className="small" onClick={() => setChangingPassword(true)}>
              Change password
            </button>
          </div>
        </div>
      </aside>
      <div className="main">
        <header className="topbar">
          <button className="ghost menu-button icon-button" aria-label="Open navigation" aria-expanded={open} onClick={() => setOpen(!open)}>
            ☰
          </button>
          <span className="spacer" />
          <LiveIndicator />
          <ThemeToggle />
          <button
            className="small"
            onClick={async () => {
              await logout();
              navigate(`/?factory=${home}`);
            }}
          >
            Sign out
          </button>
        </header>
        <main className="content" id="main">
          <Suspense fallback={<Loading />}>{children}</Suspense>
        </main>
        {changingPassword && <PasswordDialog factory={home} onClose={() => setChangingPassword(false)} />}
      </div>
    </div>
  );
}

