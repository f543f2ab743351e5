// The dashboard routes (ADR 0022) through the typed client.
import { api, unwrap } from "../api/client";
import type { components } from "../api/schema";
import type { Dashboard, DashboardSpec } from "./model";

export type DashboardHome = components["schemas"]["DashboardHome"];

const path = (factory: string) => ({ factory_id: factory });
const one = (factory: string, id: string) => ({ factory_id: factory, dashboard_id: id });

export async function listDashboards(factory: string, signal?: AbortSignal): Promise<Dashboard[]> {
  const page = await unwrap(api.GET("/api/v1/factories/{factory_id}/dashboards", { params: { path: path(factory) }, ...(signal ? { signal } : {}) }));
  return page.items;
}

export const getDashboard = (factory: string, id: string, signal?: AbortSignal): Promise<Dashboard> =>
  unwrap(api.GET("/api/v1/factories/{factory_id}/dashboards/{dashboard_id}", { params: { path: one(factory, id) }, ...(signal ? { signal } : {}) }));

export const createDashboard = (factory: string, body: DashboardSpec): Promise<Dashboard> =>
  unwrap(api.POST("/api/v1/factories/{factory_id}/dashboards", { params: { path: path(factory) }, body }));

export const replaceDashboard = (factory: string, id: string, body: DashboardSpec): Promise<Dashboard> =>
  unwrap(api.PUT("/api/v1/factories/{factory_id}/dashboards/{dashboard_id}", { params: { path: one(factory, id) }, body }));

export async function deleteDashboard(factory: string, id: string): Promise<void> {
  await unwrap(api.DELETE("/api/v1/factories/{factory_id}/dashboards/{dashboard_id}", { params: { path: one(factory, id) } }));
}

export const getHome = (factory: string, signal?: AbortSignal): Promise<DashboardHome> =>
  unwrap(api.GET("/api/v1/factories/{factory_id}/dashboards/home", { params: { path: path(factory) }, ...(signal ? { signal } : {}) }));

export const setHome = (factory: string, id: string | null): Promise<DashboardHome> =>
  unwrap(api.PUT("/api/v1/factories/{factory_id}/dashboards/home", { params: { path: path(factory) }, body: { dashboard_id: id } }));
