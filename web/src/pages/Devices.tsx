import { useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";
import { useVirtualizer } from "@tanstack/react-virtual";
import { api, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import type { DeviceView } from "../api/types";
import { useFactory } from "../factory";
import { Badge, Empty, TextArea, TextField, fmtAgo, isOnline } from "../ui/common";
import { Modal } from "../ui/Modal";
import { useToast } from "../ui/toast";
import { loadAllDevices } from "./data";

const ROW = 44;

export function Devices() {
  const { factory, can } = useFactory();
  const [params, setParams] = useSearchParams();
  const text = params.get("q") ?? "";
  const type = params.get("type") ?? "";
  const status = params.get("status") ?? "";
  const online = params.get("online") ?? "";
  const [search, setSearch] = useState(text);
  const [devices, setDevices] = useState<DeviceView[]>([]);
  const [done, setDone] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [creating, setCreating] = useState(false);
  const [reload, setReload] = useState(0);
  const toast = useToast();
  const navigate = useNavigate();

  // Debounced search box → URL (so filters survive reloads and can be shared).
  useEffect(() => {
    const t = setTimeout(() => {
      if (search !== text) setParams((p) => (search ? p.set("q", search) : p.delete("q"), p), { replace: true });
    }, 250);
    return () => clearTimeout(t);
  }, [search, text, setParams]);

  useEffect(() => {
    const controller = new AbortController();
    setDone(false);
    setError(null);
    const started = performance.now();
    let first = true;
    loadAllDevices(factory, { text, type, status }, controller.signal, (soFar, finished) => {
      setDevices([...soFar]);
      if (first) {
        first = false;
        performance.mark("devices-first-page");
      }
      if (finished) {
        setDone(true);
        (window as unknown as { __devicesLoadedMs?: number }).__devicesLoadedMs = performance.now() - started;
      }
    }).catch((e: unknown) => {
      if (!controller.signal.aborted) {
        setError(e);
        setDone(true);
      }
    });
    return () => controller.abort();
  }, [factory, text, type, status, reload]);

  const shown = useMemo(() => {
    if (!online) return devices;
    const now = Date.now();
    return devices.filter((d) => isOnline(d.last_seen, now) === (online === "online"));
  }, [devices, online]);
  const types = useMemo(() => [...new Set(devices.map((d) => d.type).filter(Boolean))].sort(), [devices]);

  const scroller = useRef<HTMLDivElement>(null);
  const virtualizer = useVirtualizer({ count: shown.length, getScrollElement: () => scroller.current, estimateSize: () => ROW, overscan: 12 });
  const setFilter = (key: string, value: string) => setParams((p) => (value ? p.set(key, value) : p.delete(key), p), { replace: true });

  return (
    <>
      <div className="page-head">
        <div>
          <h1>Devices</h1>
          <div className="sub" data-testid="device-count">
            {shown.length.toLocaleString()} {shown.length === 1 ? "device" : "devices"}
            {!done && " · loading…"}
          </div>
        </div>
        <div className="actions">
          {can("devices:write") && (
            <button className="primary" onClick={() => setCreating(true)} data-testid="register-device">
              + Register device
            </button>
          )}
        </div>
      </div>
      <div className="card" style={{ padding: "0.75rem", marginBottom: "0.75rem" }}>
        <div className="row">
          <input
            type="search"
            placeholder="Search id or name…"
            aria-label="Search devices"
            value={search}
            onChange={(e) => setSearch(e.target.value)}
            style={{ flex: "1 1 220px" }}
          />
          <select aria-label="Device type" value={type} onChange={(e) => setFilter("type", e.target.value)}>
            <option value="">All types</option>
            {types.map((t) => (
              <option key={t}>{t}</option>
            ))}
            {type && !types.includes(type) && <option>{type}</option>}
          </select>
          <select aria-label="Status" value={status} onChange={(e) => setFilter("status", e.target.value)}>
            <option value="">Active and disabled</option>
            <option value="active">Active</option>
            <option value="disabled">Disabled</option>
          </select>
          <select aria-label="Connectivity" value={online} onChange={(e) => setFilter("online", e.target.value)}>
            <option value="">Online and offline</option>
            <option value="online">Online</option>
            <option value="offline">Offline</option>
          </select>
        </div>
      </div>
      {error ? (
        <div className="callout danger" role="alert">
          {error instanceof ApiError ? error.problem.detail : String(error)}
        </div>
      ) : done && shown.length === 0 ? (
        <div className="card">
          <Empty icon="▤" title={text || type || status || online ? "No devices match" : "No devices yet"}>
            {can("devices:write") && !text ? <p>Register a device, then give it MQTT credentials.</p> : <p>Try another search or filter.</p>}
          </Empty>
        </div>
      ) : (
        <div className="vtable" role="table" aria-label="Devices" aria-rowcount={shown.length}>
          <div className="vhead" role="row">
            <div role="columnheader">Id</div>
            <div role="columnheader">Name</div>
            <div role="columnheader">Type</div>
            <div role="columnheader" className="hide-sm">
              Location
            </div>
            <div role="columnheader">Status</div>
            <div role="columnheader" className="hide-sm">
              Last seen
            </div>
          </div>
          <div className="vbody" ref={scroller} data-testid="device-list">
            <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
              {virtualizer.getVirtualItems().map((row) => {
                const d = shown[row.index]!;
                const on = isOnline(d.last_seen);
                return (
                  <Link
                    key={d.id}
                    to={`/f/${factory}/devices/${encodeURIComponent(d.id)}`}
                    className="vrow"
                    role="row"
                    data-testid="device-row"
                    style={{ top: row.start, height: ROW }}
                  >
                    <div className="mono" role="cell">
                      {d.id}
                    </div>
                    <div role="cell">{d.name}</div>
                    <div role="cell">{d.type || <span className="muted">—</span>}</div>
                    <div role="cell" className="hide-sm">
                      {d.location || <span className="muted">—</span>}
                    </div>
                    <div role="cell">
                      {d.status === "disabled" ? (
                        <Badge>disabled</Badge>
                      ) : (
                        <Badge kind={on ? "online" : ""} dot>
                          {on ? "online" : "offline"}
                        </Badge>
                      )}
                    </div>
                    <div role="cell" className="hide-sm muted">
                      {fmtAgo(d.last_seen)}
                    </div>
                  </Link>
                );
              })}
            </div>
          </div>
        </div>
      )}
      {creating && (
        <DeviceForm
          onClose={() => setCreating(false)}
          onSaved={(d) => {
            setCreating(false);
            toast.show("success", `Device ${d.id} registered`, "Issue its MQTT credentials next.");
            setReload((r) => r + 1);
            navigate(`/f/${factory}/devices/${encodeURIComponent(d.id)}`);
          }}
        />
      )}
    </>
  );
}

export function DeviceForm({ device, onClose, onSaved }: { device?: DeviceView; onClose: () => void; onSaved: (d: DeviceView) => void }) {
  const { factory } = useFactory();
  const toast = useToast();
  const [id, setId] = useState(device?.id ?? "");
  const [name, setName] = useState(device?.name ?? "");
  const [type, setType] = useState(device?.type ?? "");
  const [location, setLocation] = useState(device?.location ?? "");
  const [status, setStatus] = useState(device?.status ?? "active");
  const [metadata, setMetadata] = useState(device ? JSON.stringify(device.metadata ?? {}, null, 2) : "{}");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  async function submit(e: FormEvent) {
    e.preventDefault();
    let meta: Record<string, unknown>;
    try {
      meta = metadata.trim() ? (JSON.parse(metadata) as Record<string, unknown>) : {};
      if (typeof meta !== "object" || Array.isArray(meta) || meta === null) throw new Error("not an object");
    } catch {
      setErrors({ metadata: "must be a JSON object, e.g. {\"line\": \"A\"}" });
      return;
    }
    setBusy(true);
    setErrors({});
    try {
      const body = { name, type, location, metadata: meta, ...(device ? { status } : { id }) };
      const saved = device
        ? await unwrap(api.PATCH("/api/v1/factories/{factory_id}/devices/{device_id}", { params: { path: { factory_id: factory, device_id: device.id } }, body }))
        : await unwrap(api.POST("/api/v1/factories/{factory_id}/devices", { params: { path: { factory_id: factory } }, body }));
      onSaved(saved);
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) setErrors(err.fieldErrors());
      else toast.error(err);
    } finally {
      setBusy(false);
    }
  }
  return (
    <Modal title={device ? `Edit ${device.id}` : "Register device"} onClose={onClose}>
      <form className="form-grid" onSubmit={submit}>
        {!device && (
          <TextField label="Id" value={id} onChange={(e) => setId(e.target.value)} error={errors.id} help="Slug: a–z, 0–9, - and _" required />
        )}
        <TextField label="Name" value={name} onChange={(e) => setName(e.target.value)} error={errors.name} required />
        <TextField label="Type" value={type} onChange={(e) => setType(e.target.value)} error={errors.type} help="e.g. press, compressor, meter" />
        <TextField label="Location" value={location} onChange={(e) => setLocation(e.target.value)} error={errors.location} />
        {device && (
          <label className="field">
            Status
            <select value={status} onChange={(e) => setStatus(e.target.value)}>
              <option value="active">active</option>
              <option value="disabled">disabled (closes its MQTT connections)</option>
            </select>
          </label>
        )}
        <TextArea className="wide" label="Metadata (JSON)" value={metadata} onChange={(e) => setMetadata(e.target.value)} error={errors.metadata} rows={4} />
        <div className="row end wide">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button className="primary" type="submit" disabled={busy}>
            {device ? "Save" : "Register"}
          </button>
        </div>
      </form>
    </Modal>
  );
}
