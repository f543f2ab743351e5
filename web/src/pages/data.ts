import { api, rawJson, unwrap } from "../api/client";
import type { Alert, DeviceView, Page } from "../api/types";

export interface DeviceFilter {
  text?: string;
  type?: string;
  status?: string;
}

/** Every device matching the filter, page by page (500 each); `onPage` sees progress. */
export async function loadAllDevices(
  factory: string,
  filter: DeviceFilter,
  signal: AbortSignal,
  onPage?: (soFar: DeviceView[], done: boolean) => void,
): Promise<DeviceView[]> {
  const all: DeviceView[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await unwrap(
      api.GET("/api/v1/factories/{factory_id}/devices", {
        params: {
          path: { factory_id: factory },
          query: {
            limit: 500,
            ...(cursor ? { cursor } : {}),
            ...(filter.text ? { text: filter.text } : {}),
            ...(filter.type ? { type: filter.type } : {}),
            ...(filter.status ? { status: filter.status } : {}),
          },
        },
        signal,
      }),
    );
    all.push(...page.items);
    cursor = page.next_cursor ?? undefined;
    onPage?.(all, !cursor);
    if (!cursor || signal.aborted) return all;
  }
}

export interface AlertFilter {
  status?: string;
  severity?: string;
  device_id?: string;
  rule_id?: string;
  limit?: number;
  cursor?: string;
}

export async function listAlerts(factory: string, filter: AlertFilter, signal?: AbortSignal): Promise<Page<Alert>> {
  const query: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(filter)) if (v !== undefined && v !== "") query[k] = v;
  const result = await unwrap(
    api.GET("/api/v1/factories/{factory_id}/alerts", {
      params: { path: { factory_id: factory }, query },
      ...(signal ? { signal } : {}),
    }),
  );
  return result as unknown as Page<Alert>;
}

export async function getAlert(factory: string, id: string, signal?: AbortSignal): Promise<Alert> {
  const result = await unwrap(
    api.GET("/api/v1/factories/{factory_id}/alerts/{alert_id}", { params: { path: { factory_id: factory, alert_id: id } }, ...(signal ? { signal } : {}) }),
  );
  return result as unknown as Alert;
}

export async function alertAction(factory: string, id: string, action: "acknowledge" | "resolve", note: string): Promise<Alert> {
  const body = { note: note.trim() ? note.trim() : null };
  const params = { path: { factory_id: factory, alert_id: id } };
  const result =
    action === "acknowledge"
      ? await unwrap(api.POST("/api/v1/factories/{factory_id}/alerts/{alert_id}/acknowledge", { params, body }))
      : await unwrap(api.POST("/api/v1/factories/{factory_id}/alerts/{alert_id}/resolve", { params, body }));
  return result as unknown as Alert;
}

export interface Pin {
  device: string;
  property: string;
}
const pinKey = (factory: string) => `factoryops.pins.${factory}`;
export function loadPins(factory: string): Pin[] {
  try {
    return JSON.parse(localStorage.getItem(pinKey(factory)) ?? "[]") as Pin[];
  } catch {
    return [];
  }
}
export function savePins(factory: string, pins: Pin[]) {
  localStorage.setItem(pinKey(factory), JSON.stringify(pins));
}

export { rawJson };
