// One live connection per factory page tree: GET /stream read through fetch (it needs
// the Authorization header), parsed as SSE and fanned out to subscribers.
import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { SseParser, type SseMessage } from "./api/sse";
import { authFetch } from "./api/session";

type Handler = (data: unknown, message: SseMessage) => void;
export type StreamStatus = "connecting" | "live" | "offline";

interface StreamApi {
  status: StreamStatus;
  subscribe: (event: string, handler: Handler) => () => void;
  /** Telemetry points received per second (epoch second → points), the last 5 minutes. */
  pointsPerSecond: Map<number, number>;
}

const StreamContext = createContext<StreamApi>({ status: "offline", subscribe: () => () => undefined, pointsPerSecond: new Map() });

export function StreamProvider({ factory, children }: { factory: string; children: ReactNode }) {
  const [status, setStatus] = useState<StreamStatus>("connecting");
  const handlers = useRef(new Map<string, Set<Handler>>());
  const rate = useRef(new Map<number, number>());
  useEffect(() => {
    let stopped = false;
    let controller: AbortController | null = null;
    let attempt = 0;
    const dispatch = (message: SseMessage) => {
      let data: unknown = message.data;
      try {
        data = JSON.parse(message.data);
      } catch {
        /* plain text (e.g. the `error` event's reason) */
      }
      if (message.event === "telemetry" && data && typeof data === "object" && Array.isArray((data as { points?: unknown[] }).points)) {
        const sec = Math.floor(Date.now() / 1000);
        rate.current.set(sec, (rate.current.get(sec) ?? 0) + (data as { points: unknown[] }).points.length);
        if (rate.current.size > 400) for (const k of rate.current.keys()) if (k < sec - 300) rate.current.delete(k);
      }
      for (const h of handlers.current.get(message.event) ?? []) h(data, message);
      for (const h of handlers.current.get("*") ?? []) h(data, message);
    };
    const connect = async () => {
      while (!stopped) {
        controller = new AbortController();
        setStatus("connecting");
        try {
          const response = await authFetch(`/api/v1/factories/${encodeURIComponent(factory)}/stream`, {
            headers: { accept: "text/event-stream" },
            signal: controller.signal,
          });
          if (response.status === 404 || response.status === 403) {
            setStatus("offline");
            return; // not this principal's factory: nothing to stream
          }
          if (!response.ok || !response.body) throw new Error(`stream: ${response.status}`);
          setStatus("live");
          attempt = 0;
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          const parser = new SseParser(dispatch);
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            parser.push(value);
          }
        } catch {
          if (stopped) return;
        }
        if (stopped) return;
        setStatus("offline");
        attempt += 1;
        await new Promise((r) => setTimeout(r, Math.min(15_000, 500 * 2 ** Math.min(attempt, 5))));
      }
    };
    void connect();
    return () => {
      stopped = true;
      controller?.abort();
    };
  }, [factory]);
  const api = useRef<StreamApi>({
    status,
    pointsPerSecond: rate.current,
    subscribe: (event, handler) => {
      const set = handlers.current.get(event) ?? new Set();
      set.add(handler);
      handlers.current.set(event, set);
      return () => set.delete(handler);
    },
  });
  api.current = { ...api.current, status };
  return <StreamContext.Provider value={api.current}>{children}</StreamContext.Provider>;
}

/** Points per second seen on the live stream (kept while the factory's pages are open). */
export function useStreamRate(): Map<number, number> {
  return useContext(StreamContext).pointsPerSecond;
}

export function useStreamStatus(): StreamStatus {
  return useContext(StreamContext).status;
}

/** Calls `handler` for each event of this name (`telemetry`, `alert`); latest handler wins. */
export function useStreamEvent<T = unknown>(event: string, handler: (data: T) => void) {
  const { subscribe } = useContext(StreamContext);
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => subscribe(event, (d) => ref.current(d as T)), [event, subscribe]);
}
