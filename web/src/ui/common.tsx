import { useCallback, useEffect, useRef, useState, type ReactNode, type InputHTMLAttributes, type SelectHTMLAttributes, type TextareaHTMLAttributes } from "react";
import { ApiError } from "../api/problem";

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <div className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" /> {label}
    </div>
  );
}

export function Empty({ icon = "∅", title, children, testId }: { icon?: string; title: string; children?: ReactNode; testId?: string }) {
  return (
    <div className="empty" data-testid={testId}>
      <div className="big" aria-hidden="true">{icon}</div>
      <strong>{title}</strong>
      {children}
    </div>
  );
}

export function Badge({ kind, children, dot }: { kind?: string; children: ReactNode; dot?: boolean }) {
  return (
    <span className={`badge ${kind ?? ""}`}>
      {dot && <span className="dot" aria-hidden="true" />}
      {children}
    </span>
  );
}

let fieldIds = 0;
function useFieldId(id?: string) {
  const ref = useRef(id ?? `f${++fieldIds}`);
  return ref.current;
}

interface FieldProps {
  label: string;
  error?: string | undefined;
  help?: ReactNode;
  className?: string;
}

function describedBy(id: string, help: unknown, error: unknown): string | undefined {
  const ids = [help ? `${id}-help` : "", error ? `${id}-err` : ""].filter(Boolean);
  return ids.length ? ids.join(" ") : undefined;
}

function FieldFrame({ id, label, error, help, className, children }: FieldProps & { id: string; children: ReactNode }) {
  return (
    <div className={`field ${className ?? ""}`}>
      <label htmlFor={id}>{label}</label>
      {children}
      {help && (
        <span className="help" id={`${id}-help`}>
          {help}
        </span>
      )}
      {error && (
        <span className="field-error" id={`${id}-err`} role="alert">
          {error}
        </span>
      )}
    </div>
  );
}

export function TextField({ label, error, help, className, ...input }: FieldProps & InputHTMLAttributes<HTMLInputElement>) {
  const id = useFieldId(input.id);
  return (
    <FieldFrame id={id} label={label} error={error} help={help} className={className}>
      <input id={id} aria-invalid={error ? true : undefined} aria-describedby={describedBy(id, help, error)} {...input} />
    </FieldFrame>
  );
}

export function SelectField({ label, error, help, className, children, ...select }: FieldProps & SelectHTMLAttributes<HTMLSelectElement>) {
  const id = useFieldId(select.id);
  return (
    <FieldFrame id={id} label={label} error={error} help={help} className={className}>
      <select id={id} aria-invalid={error ? true : undefined} aria-describedby={describedBy(id, help, error)} {...select}>
        {children}
      </select>
    </FieldFrame>
  );
}

export function TextArea({ label, error, help, className, ...area }: FieldProps & TextareaHTMLAttributes<HTMLTextAreaElement>) {
  const id = useFieldId(area.id);
  return (
    <FieldFrame id={id} label={label} error={error} help={help} className={className}>
      <textarea id={id} aria-invalid={error ? true : undefined} aria-describedby={describedBy(id, help, error)} {...area} />
    </FieldFrame>
  );
}

export function FieldErrorText({ error }: { error?: string | undefined }) {
  return error ? (
    <span className="field-error" role="alert">
      {error}
    </span>
  ) : null;
}

export interface AsyncState<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
  setData: (update: T | ((old: T | undefined) => T)) => void;
}

/** Runs `load` when `deps` change; keeps the previous data while reloading. */
export function useAsync<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): AsyncState<T> {
  const [data, setDataState] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    load(controller.signal)
      .then((d) => {
        if (!controller.signal.aborted) {
          setDataState(d);
          setError(null);
        }
      })
      .catch((e: unknown) => {
        if (!controller.signal.aborted) setError(e);
      })
      .finally(() => {
        if (!controller.signal.aborted) setLoading(false);
      });
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const setData = useCallback((update: T | ((old: T | undefined) => T)) => {
    setDataState((old) => (typeof update === "function" ? (update as (o: T | undefined) => T)(old) : update));
  }, []);
  return { data, error, loading, reload, setData };
}

export function isNotFound(error: unknown): boolean {
  return error instanceof ApiError && error.status === 404;
}

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      type="button"
      className="small"
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(text);
        } catch {
          // Non-secure contexts (plain http on the shop floor LAN) have no clipboard API.
          const area = document.createElement("textarea");
          area.value = text;
          document.body.appendChild(area);
          area.select();
          document.execCommand("copy");
          area.remove();
        }
        setCopied(true);
        setTimeout(() => setCopied(false), 1500);
      }}
    >
      {copied ? "Copied ✓" : label}
    </button>
  );
}

// Formatting
const dtf = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : dtf.format(d);
}
const shortSameDay = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const shortOtherDay = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
/** Compact: the time for today, else day and time. */
export function fmtShort(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toDateString() === new Date().toDateString() ? shortSameDay.format(d) : shortOtherDay.format(d);
}
export function fmtAgo(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "never";
  const s = Math.round((now - new Date(iso).getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
export function fmtValue(v: unknown, unit?: string | null): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    const text = Math.abs(v) >= 1000 || Number.isInteger(v) ? v.toLocaleString(undefined, { maximumFractionDigits: 2 }) : v.toPrecision(4).replace(/\.?0+$/, "");
    return unit ? `${text} ${unit}` : text;
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  return JSON.stringify(v);
}

/** A device is online when it sent something within this window. */
export const ONLINE_WINDOW_MS = 5 * 60 * 1000;
export function isOnline(lastSeen: string | null | undefined, now = Date.now()): boolean {
  return !!lastSeen && now - new Date(lastSeen).getTime() < ONLINE_WINDOW_MS;
}
