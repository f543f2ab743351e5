import { createContext, useCallback, useContext, useMemo, useRef, useState, type ReactNode } from "react";
import { Link } from "react-router-dom";
import { ApiError, describe } from "../api/problem";

export type ToastKind = "info" | "success" | "error" | "alert";
interface Toast {
  id: number;
  kind: ToastKind;
  title: string;
  detail?: string;
  link?: ToastLink;
}
export interface ToastLink {
  to: string;
  label: string;
}
interface ToastApi {
  show: (kind: ToastKind, title: string, detail?: string, link?: ToastLink) => void;
  /** An error toast with the problem's `detail`. */
  error: (error: unknown, title?: string) => void;
}

const ToastContext = createContext<ToastApi>({ show: () => undefined, error: () => undefined });

export function ToastProvider({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const next = useRef(1);
  const dismiss = useCallback((id: number) => setToasts((t) => t.filter((x) => x.id !== id)), []);
  const show = useCallback(
    (kind: ToastKind, title: string, detail?: string, link?: ToastLink) => {
      const id = next.current++;
      setToasts((t) => [...t.slice(-2), { id, kind, title, ...(detail ? { detail } : {}), ...(link ? { link } : {}) }]);
      setTimeout(() => dismiss(id), kind === "error" || link ? 9000 : 5000);
    },
    [dismiss],
  );
  const error = useCallback(
    (e: unknown, title?: string) => {
      if (e instanceof DOMException && e.name === "AbortError") return;
      const t = title ?? (e instanceof ApiError ? e.problem.title : "Something went wrong");
      show("error", t, describe(e));
    },
    [show],
  );
  const api = useMemo(() => ({ show, error }), [show, error]);
  return (
    <ToastContext.Provider value={api}>
      {children}
      <div className="toasts" role="region" aria-label="Notifications" aria-live="polite">
        {toasts.map((t) => (
          <div key={t.id} className={`toast ${t.kind}`} role={t.kind === "error" ? "alert" : "status"} data-testid={`toast-${t.kind}`}>
            <div className="body">
              <div className="title">{t.title}</div>
              {t.detail && <div className="detail">{t.detail}</div>}
              {t.link && (
                <Link className="detail" to={t.link.to} onClick={() => dismiss(t.id)}>
                  {t.link.label}
                </Link>
              )}
            </div>
            <button className="ghost small" aria-label="Dismiss" onClick={() => dismiss(t.id)}>
              ✕
            </button>
          </div>
        ))}
      </div>
    </ToastContext.Provider>
  );
}

export function useToast(): ToastApi {
  return useContext(ToastContext);
}
