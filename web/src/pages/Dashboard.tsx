// The Dashboard page (ADR 0022): the user's home dashboard (or the factory default), any
// dashboard by its shareable URL (/dashboards/{id}?range=…&refresh=…), a new one
// (/dashboards/new), and the built-in overview while the factory has none.
import { useCallback, useEffect, useMemo, useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router-dom";
import { ApiError, describe } from "../api/problem";
import { createDashboard, deleteDashboard, getDashboard, getHome, listDashboards, replaceDashboard, setHome } from "../dashboards/api";
import { DashboardGrid, bodyHeight } from "../dashboards/Grid";
import {
  MAX_WIDGETS,
  REFRESH_CHOICES,
  WIDGET_RANGES,
  effectiveRange,
  firstFree,
  DEFAULT_SIZE,
  specOf,
  starterWidgets,
  viewFromSearch,
  widgetErrors,
  withLayouts,
  type Dashboard as DashboardT,
  type Widget,
  type WidgetLayout,
  type WidgetRange,
} from "../dashboards/model";
import { WidgetForm } from "../dashboards/WidgetForm";
import { WidgetView, clearWidgetCaches } from "../dashboards/widgets";
import { useFactory } from "../factory";
import { Modal } from "../ui/Modal";
import { Badge, CopyButton, Empty, FieldErrorText, Loading, TextField, useAsync } from "../ui/common";
import { useToast } from "../ui/toast";
import { Overview } from "./Overview";

export function Dashboard() {
  const { factory } = useFactory();
  const { dashboardId } = useParams();
  const isNew = dashboardId === "new";
  const home = useAsync((signal) => getHome(factory, signal), [factory]);
  const one = useAsync((signal) => (dashboardId && !isNew ? getDashboard(factory, dashboardId, signal) : Promise.resolve(null)), [factory, dashboardId]);
  const list = useAsync((signal) => listDashboards(factory, signal), [factory]);
  const reloadAll = useCallback(() => {
    home.reload();
    one.reload();
    list.reload();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  if (dashboardId && !isNew && one.error) {
    return (
      <Empty title={one.error instanceof ApiError && one.error.status === 404 ? "No such dashboard" : "Could not load the dashboard"} testId="dashboard-missing">
        {one.error instanceof ApiError && one.error.status === 404 ? "It was deleted, or it is private to someone else." : describe(one.error)}{" "}
        <Link to={`/f/${factory}`}>Back to your dashboard</Link>
      </Empty>
    );
  }
  const loading = dashboardId ? !isNew && !one.data : !home.data && !home.error;
  if (loading) return <Loading label="Loading the dashboard…" />;
  const dash = dashboardId ? (isNew ? null : one.data ?? null) : home.data?.dashboard ?? null;
  const homeId = home.data?.dashboard?.id ?? null;
  if (!dash && !isNew) {
    return <Overview actions={<DashboardPicker list={list.data ?? []} current={null} homeId={homeId} />} />;
  }
  return <DashboardView key={dash?.id ?? "new"} dash={dash} list={list.data ?? []} homeId={homeId} preferredId={home.data?.dashboard_id ?? null} onChanged={reloadAll} />;
}

function DashboardPicker({ list, current, homeId }: { list: DashboardT[]; current: string | null; homeId: string | null }) {
  const { factory } = useFactory();
  const navigate = useNavigate();
  return (
    <div className="actions">
      {list.length > 0 && (
        <select aria-label="Dashboard" data-testid="dashboard-picker" value={current ?? ""} onChange={(e) => navigate(e.target.value ? `/f/${factory}/dashboards/${e.target.value}` : `/f/${factory}`)}>
          {!current && <option value="">Choose a dashboard…</option>}
          {list.map((d) => (
            <option key={d.id} value={d.id}>
              {d.name}
              {d.id === homeId ? " (home)" : ""}
              {d.default ? " · factory default" : d.shared ? " · shared" : " · private"}
            </option>
          ))}
        </select>
      )}
      <Link className="button primary" to={`/f/${factory}/dashboards/new`} data-testid="create-dashboard">
        + Create dashboard
      </Link>
    </div>
  );
}

interface Draft {
  name: string;
  shared: boolean;
  default: boolean;
  widgets: (Widget & { layout: WidgetLayout })[];
}

function draftOf(d: DashboardT | null): Draft {
  return d
    ? { name: d.name, shared: d.shared, default: d.default, widgets: withLayouts(d.widgets) }
    : { name: "New dashboard", shared: false, default: false, widgets: withLayouts(starterWidgets()) };
}

function DashboardView({ dash, list, homeId, preferredId, onChanged }: { dash: DashboardT | null; list: DashboardT[]; homeId: string | null; preferredId: string | null; onChanged: () => void }) {
  const { factory, me, isSuperAdmin } = useFactory();
  const toast = useToast();
  const navigate = useNavigate();
  const [search, setSearch] = useSearchParams();
  const view = viewFromSearch(search);
  const canWrite = !dash || (me.kind === "user" && (isSuperAdmin || me.user?.id === dash.owner));
  const [editing, setEditing] = useState(!dash);
  const [draft, setDraft] = useState<Draft>(() => draftOf(dash));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [form, setForm] = useState<{ index: number | null } | null>(null);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [saving, setSaving] = useState(false);
  const [tick, setTick] = useState(0);

  useEffect(() => {
    if (!view.refresh) return;
    const t = setInterval(() => setTick((x) => x + 1), view.refresh * 1000);
    return () => clearInterval(t);
  }, [view.refresh]);

  const setView = (patch: { range?: WidgetRange | null; refresh?: number }) => {
    const next = new URLSearchParams(search);
    const range = patch.range !== undefined ? patch.range : view.range;
    const refresh = patch.refresh !== undefined ? patch.refresh : view.refresh;
    if (range) next.set("range", range);
    else next.delete("range");
    next.set("refresh", String(refresh));
    setSearch(next, { replace: true });
  };

  const shown = editing ? draft : draftOf(dash);
  const layouts = shown.widgets.map((w) => w.layout);
  // The link opens the same view: the dashboard-wide range and refresh travel with it.
  const query = search.toString();
  const shareUrl = dash ? `${window.location.origin}/f/${factory}/dashboards/${dash.id}${query ? `?${query}` : ""}` : "";

  const save = async () => {
    setSaving(true);
    setErrors({});
    try {
      const body = specOf(draft, isSuperAdmin);
      const saved = dash ? await replaceDashboard(factory, dash.id, body) : await createDashboard(factory, body);
      toast.show("success", dash ? "Dashboard saved" : "Dashboard created");
      setEditing(false);
      onChanged();
      if (!dash) navigate(`/f/${factory}/dashboards/${saved.id}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 422) setErrors(e.fieldErrors());
      toast.error(e, dash ? "Could not save the dashboard" : "Could not create the dashboard");
    } finally {
      setSaving(false);
    }
  };

  const remove = async () => {
    if (!dash) return;
    try {
      await deleteDashboard(factory, dash.id);
      toast.show("success", `Dashboard "${dash.name}" deleted`);
      onChanged();
      navigate(`/f/${factory}`);
    } catch (e) {
      toast.error(e, "Could not delete the dashboard");
    }
  };

  const makeHome = async (id: string | null) => {
    try {
      await setHome(factory, id);
      toast.show("success", id ? "This is now your home dashboard" : "Home dashboard cleared");
      onChanged();
    } catch (e) {
      toast.error(e, "Could not set your home dashboard");
    }
  };

  const applyWidget = (w: Widget) => {
    setDraft((d) => {
      const widgets = d.widgets.slice();
      if (form?.index != null) {
        const old = widgets[form.index]!;
        widgets[form.index] = { ...w, layout: old.layout };
      } else {
        const size = DEFAULT_SIZE[w.type];
        widgets.push({ ...w, layout: firstFree(d.widgets.map((x) => x.layout), size.w, size.h) });
      }
      return { ...d, widgets };
    });
    // The form's errors were for the old fields.
    if (form?.index != null) {
      const prefix = `widgets[${form.index}]`;
      setErrors((old) => Object.fromEntries(Object.entries(old).filter(([k]) => !k.startsWith(prefix))));
    }
    setForm(null);
  };

  const removeWidget = (i: number) => {
    setDraft((d) => ({ ...d, widgets: d.widgets.filter((_, j) => j !== i) }));
    // Paths of the widgets after it shift: the old errors no longer point at them.
    setErrors((old) => Object.fromEntries(Object.entries(old).filter(([k]) => !k.startsWith("widgets["))));
  };

  const isHome = dash && homeId === dash.id;
  const rangeLabel = useMemo(() => (view.range ? view.range : "each widget's own"), [view.range]);

  return (
    <>
      <div className="page-head dash-head">
        <div className="dash-title">
          {editing ? (
            <TextField label="Dashboard name" value={draft.name} error={errors.name} maxLength={100} onChange={(e) => setDraft({ ...draft, name: e.target.value })} data-testid="dashboard-name" />
          ) : (
            <>
              <h1 data-testid="dashboard-title">{dash?.name}</h1>
              <div className="sub row">
                {dash?.default && <Badge kind="info">factory default</Badge>}
                {isHome && <Badge kind="ok">your home</Badge>}
                <Badge>{dash?.shared ? "shared with the factory" : "private"}</Badge>
              </div>
            </>
          )}
        </div>
        {!editing && <DashboardPicker list={list} current={dash?.id ?? null} homeId={homeId} />}
      </div>

      <div className="toolbar row" data-testid="dashboard-toolbar">
        <div className="segmented" role="group" aria-label="Dashboard time range">
          <button type="button" aria-pressed={!view.range} onClick={() => setView({ range: null })} title="Each widget shows its own range">
            Widgets'
          </button>
          {WIDGET_RANGES.map((r) => (
            <button key={r} type="button" aria-pressed={view.range === r} onClick={() => setView({ range: r })}>
              {r}
            </button>
          ))}
        </div>
        <label className="row small">
          <span className="muted">Auto-refresh</span>
          <select aria-label="Auto-refresh" value={view.refresh} onChange={(e) => setView({ refresh: Number(e.target.value) })}>
            {REFRESH_CHOICES.map((c) => (
              <option key={c.seconds} value={c.seconds}>
                {c.label}
              </option>
            ))}
          </select>
        </label>
        <button
          type="button"
          className="small"
          onClick={() => {
            clearWidgetCaches();
            setTick((x) => x + 1);
          }}
        >
          ↻ Refresh
        </button>
        <span className="spacer" />
        {!editing && dash && (
          <>
            <CopyButton text={shareUrl} label="Copy link" />
            {me.kind === "user" &&
              (isHome && preferredId ? (
                <button type="button" className="small" onClick={() => makeHome(null)}>
                  Unset home
                </button>
              ) : !isHome || !preferredId ? (
                <button type="button" className="small" data-testid="set-home" onClick={() => makeHome(dash.id)}>
                  Set as my home
                </button>
              ) : null)}
            {canWrite && (
              <button
                type="button"
                className="small primary"
                data-testid="edit-dashboard"
                onClick={() => {
                  setDraft(draftOf(dash));
                  setErrors({});
                  setEditing(true);
                }}
              >
                Edit
              </button>
            )}
          </>
        )}
      </div>

      {editing && (
        <div className="card edit-bar" data-testid="edit-bar">
          <div className="row">
            <button type="button" className="small" data-testid="add-widget" disabled={draft.widgets.length >= MAX_WIDGETS} onClick={() => setForm({ index: null })}>
              + Add widget
            </button>
            <label className="check">
              <input type="checkbox" checked={draft.shared} onChange={(e) => setDraft({ ...draft, shared: e.target.checked })} data-testid="dashboard-shared" /> Shared with everyone in the
              factory
            </label>
            {isSuperAdmin && (
              <label className="check">
                <input type="checkbox" checked={draft.default} onChange={(e) => setDraft({ ...draft, default: e.target.checked, shared: e.target.checked || draft.shared })} /> Factory default
              </label>
            )}
            <FieldErrorText error={errors.shared ?? errors.default} />
            <span className="spacer" />
            {dash && (
              <button type="button" className="small danger" onClick={() => setConfirmDelete(true)}>
                Delete
              </button>
            )}
            <button
              type="button"
              className="small"
              onClick={() => {
                if (!dash) navigate(`/f/${factory}`);
                setEditing(false);
                setErrors({});
              }}
            >
              Cancel
            </button>
            <button type="button" className="small primary" data-testid="save-dashboard" disabled={saving} onClick={save}>
              {saving ? "Saving…" : dash ? "Save" : "Create"}
            </button>
          </div>
          <FieldErrorText error={errors.widgets} />
          <div className="muted small">Drag ⠿ to move a widget and its corner to resize it (or focus either and use the arrow keys).</div>
        </div>
      )}

      {shown.widgets.length === 0 ? (
        <Empty title="No widgets yet" testId="dashboard-empty">
          {editing ? "Add a widget to start." : canWrite ? "Edit the dashboard to add widgets." : "Its owner has not added any widgets."}
        </Empty>
      ) : (
        <DashboardGrid
          layouts={layouts}
          editing={editing}
          onLayout={(next) => setDraft((d) => ({ ...d, widgets: d.widgets.map((w, i) => ({ ...w, layout: next[i] ?? w.layout })) }))}
          titleOf={(i) => shown.widgets[i]?.title || "(untitled)"}
          testIdOf={(i) => `widget-card-${shown.widgets[i]?.type}`}
          actions={(i) =>
            editing ? (
              <span className="widget-actions">
                <button type="button" className="small ghost" aria-label={`Edit ${shown.widgets[i]?.title}`} onClick={() => setForm({ index: i })}>
                  Edit
                </button>
                <button type="button" className="small ghost danger" aria-label={`Remove ${shown.widgets[i]?.title}`} onClick={() => removeWidget(i)}>
                  ✕
                </button>
              </span>
            ) : null
          }
        >
          {(i) => {
            const w = shown.widgets[i]!;
            const mine = widgetErrors(errors, i);
            return (
              <>
                {editing && Object.keys(mine).length > 0 && (
                  <ul className="field-error widget-errors" role="alert">
                    {Object.entries(mine).map(([k, v]) => (
                      <li key={k}>
                        {k ? `${k}: ` : ""}
                        {v}
                      </li>
                    ))}
                  </ul>
                )}
                <WidgetView widget={w} range={effectiveRange(w, view.range)} tick={tick} height={bodyHeight(w.layout.h)} />
              </>
            );
          }}
        </DashboardGrid>
      )}
      {!editing && dash && (
        <p className="muted small" style={{ marginTop: "0.75rem" }}>
          Time range: {rangeLabel} · auto-refresh {REFRESH_CHOICES.find((c) => c.seconds === view.refresh)?.label.toLowerCase()} · updated {new Date(dash.updated_at).toLocaleString()}
        </p>
      )}

      {form && (
        <WidgetForm initial={form.index != null ? draft.widgets[form.index] ?? null : null} serverErrors={form.index != null ? widgetErrors(errors, form.index) : {}} onSave={applyWidget} onClose={() => setForm(null)} />
      )}
      {confirmDelete && dash && (
        <Modal title={`Delete "${dash.name}"?`} onClose={() => setConfirmDelete(false)}>
          <p>{dash.shared ? "Everyone in the factory loses this dashboard; those who made it their home go back to the factory default." : "This cannot be undone."}</p>
          <div className="row end">
            <button type="button" onClick={() => setConfirmDelete(false)}>
              Cancel
            </button>
            <button type="button" className="danger" data-testid="confirm-delete-dashboard" onClick={remove}>
              Delete dashboard
            </button>
          </div>
        </Modal>
      )}
    </>
  );
}
