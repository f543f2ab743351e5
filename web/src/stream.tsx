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
}

const StreamContext = createContext<StreamApi>({ status: "offline", subscribe: () => () => undefined });

export function StreamProvider({ factory, children }: { factory: string; children: ReactNode }) {
  const [status, setStatus] = useState<StreamStatus>("connecting");
  const handlers = useRef(new Map<string, Set<Handler>>());
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
