// The energy routes (issue 18): consumption, peak demand, ranking, the factory's energy
// settings (tariff, shifts, emission factor), device groups and a device's energy config,
// through the typed client (docs/openapi.json). The versioned settings are JSON objects in
// the document, so their shapes are written out here (the energy crate's serde shapes).
import { api, unwrap } from "../api/client";

export interface DeviceKwh {
  device_id: string;
  kwh: number;
}

export interface ConsumptionItem {
  start: string;
  end: string;
  kwh: number;
  cost?: number | null;
  co2_kg?: number | null;
  idle_kwh?: number | null;
  by_device?: DeviceKwh[];
  /** Shift buckets carry the shift's name. */
  shift?: string | null;
}

export interface EnergyGap {
  device_id: string;
  from: string;
  to: string;
}

export interface DemandChargeLine {
  period_start: string;
  period_end: string;
  basis_kw: number;
  charge: number;
}

/** The tariff's bill of the whole range. */
export interface Charges {
  energy_cost: number;
  demand: DemandChargeLine[];
  fixed: number;
  total: number;
}

export interface Consumption {
  unit: string;
  currency?: string | null;
  items: ConsumptionItem[];
  gaps: EnergyGap[];
  /** Only with a tariff. */
  charges?: Charges | null;
  /** Devices with no property annotated as power or an energy/pulse counter: 0 kWh, all gap. */
  devices_without_source?: string[];
}

export interface PeakItem {
  period_start: string;
  kw: number;
  at: string | null;
  top_devices: { device_id: string; kw: number }[];
}

export interface PeakDemand {
  interval_minutes?: number;
  items: PeakItem[];
  gaps?: EnergyGap[];
}

export interface RankingItem {
  device_id: string;
  /** 1 = least energy per unit; null without production. */
  rank?: number | null;
  kwh: number;
  units: number;
  kwh_per_unit: number | null;
  production_property?: string | null;
}

export interface Ranking {
  device_type?: string;
  unit?: string | null;
  items: RankingItem[];
}

export type Day = "mon" | "tue" | "wed" | "thu" | "fri" | "sat" | "sun";
export const DAYS: Day[] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

export interface TariffPeriod {
  days: Day[];
  from: string;
  to: string;
  price_per_kwh: number;
  /** `{from: "MM-DD", to: "MM-DD"}`, may wrap the year end. */
  season?: { from: string; to: string } | null;
}

export interface DemandWindow {
  days: Day[];
  from: string;
  to: string;
  /** 1 = January; absent = every month. */
  months?: number[] | null;
}

/** The detailed demand charge: per kW of the monthly (or daily) basis, counted in windows. */
export interface DemandChargeSpec {
  per_kw: number;
  basis?: "month" | "day";
  method?: "highest" | "mean_of_highest";
  count?: number | null;
  windows?: DemandWindow[] | null;
}

export interface Tariff {
  currency: string;
  valid_from?: string | null;
  periods: TariffPeriod[];
  /** Local dates priced as `holiday_as`. */
  holidays?: string[];
  holiday_as?: Day | null;
  /** The simple demand charge: per kW of the month's single highest interval. */
  demand_charge_per_kw?: number | null;
  demand_charge?: DemandChargeSpec | null;
  demand_interval_minutes?: number | null;
  fixed_per_month?: number | null;
}

export interface Shift {
  name: string;
  from: string;
  to: string;
  /** Absent = every day. */
  days?: Day[] | null;
}

export interface ShiftCalendar {
  valid_from?: string | null;
  shifts: Shift[];
}

export type EmissionKind = "constant" | "hourly" | "monthly";
/** Exactly one of the three: a constant, 24 hourly values (local hour 0 … 23) or 12 monthly ones. */
export interface EmissionFactor {
  valid_from?: string | null;
  kg_per_kwh?: number | null;
  hourly?: number[] | null;
  monthly?: number[] | null;
}

export function emissionKind(f: EmissionFactor | null): EmissionKind {
  return f?.hourly ? "hourly" : f?.monthly ? "monthly" : "constant";
}

/** Who stored a version and when, when the server says. */
export interface VersionMeta {
  version?: number;
  created_at?: string;
  created_by?: string;
}

export interface Versioned<T> {
  /** The version in force today (null when none is set). */
  current: T | null;
  /** Every version, oldest first. */
  versions: T[];
}

export type GroupKind = "hierarchy" | "tag";
export interface Group {
  id: string;
  name: string;
  kind: GroupKind;
  parent_id: string | null;
  /** `site`, `area`, `line`, `machine` or free text. */
  level?: string | null;
  /** The devices on this group itself (energy with `group_id` adds those of the groups below). */
  devices: string[];
}

export interface DeviceEnergyConfig {
  source_property: string | null;
  state_property: string | null;
  idle_below_kw: number | null;
  max_gap_minutes?: number | null;
  updated_at?: string | null;
}

const path = (factory: string) => ({ factory_id: factory });
const iso = (ms: number) => new Date(ms).toISOString();

/** Which series: a device or a group. */
export type Target = { device_id: string } | { group_id: string };
/** A target, or `{}`: every device of the factory with an energy source. */
export type Scope = Target | Record<string, never>;

export async function getConsumption(factory: string, target: Scope, from: number, to: number, bucket: string): Promise<Consumption> {
  const data = await unwrap(
    api.GET("/api/v1/factories/{factory_id}/energy/consumption", { params: { path: path(factory), query: { ...target, from: iso(from), to: iso(to), bucket } } }),
  );
  return data as Consumption;
}

export async function getPeakDemand(factory: string, target: Scope, from: number, to: number, intervalMinutes = 15, period: "day" | "month" = "day"): Promise<PeakDemand> {
  const data = await unwrap(
    api.GET("/api/v1/factories/{factory_id}/energy/peak-demand", {
      params: { path: path(factory), query: { ...target, from: iso(from), to: iso(to), interval_minutes: intervalMinutes, period } },
    }),
  );
  return data as PeakDemand;
}

export async function getRanking(factory: string, deviceType: string, from: number, to: number): Promise<Ranking> {
  const data = await unwrap(api.GET("/api/v1/factories/{factory_id}/energy/ranking", { params: { path: path(factory), query: { device_type: deviceType, from: iso(from), to: iso(to) } } }));
  return data as Ranking;
}

/**
 * A versioned setting as the server sends it: `{…in force, versions}` (each version
 * flattened), a list of versions, or versions wrapping their `body`.
 */
export function versionsOf<T extends { valid_from?: string | null }>(raw: unknown, today: string): Versioned<T & VersionMeta> {
  let list: unknown[];
  if (Array.isArray(raw)) list = raw;
  else if (raw && typeof raw === "object" && Array.isArray((raw as { versions?: unknown }).versions)) list = (raw as { versions: unknown[] }).versions;
  else if (raw && typeof raw === "object") list = [raw];
  else list = [];
  let versions = list.map((v) => {
    const o = (v ?? {}) as Record<string, unknown>;
    if (!o["body"] || typeof o["body"] !== "object") return o as unknown as T & VersionMeta;
    const { body, ...meta } = o;
    return { ...(body as object), ...meta } as unknown as T & VersionMeta;
  });
  versions = [...versions].sort((a, b) => (a.valid_from ?? "").localeCompare(b.valid_from ?? ""));
  const inForce = versions.filter((v) => (v.valid_from ?? "") <= today);
  return { current: inForce[inForce.length - 1] ?? null, versions };
}

export const getTariff = async (factory: string, today: string) =>
  versionsOf<Tariff>(await unwrap(api.GET("/api/v1/factories/{factory_id}/energy/tariff", { params: { path: path(factory) } })), today);
export const putTariff = (factory: string, body: Tariff) =>
  unwrap(api.PUT("/api/v1/factories/{factory_id}/energy/tariff", { params: { path: path(factory) }, body: body as unknown as Record<string, unknown> }));
export const getShifts = async (factory: string, today: string) =>
  versionsOf<ShiftCalendar>(await unwrap(api.GET("/api/v1/factories/{factory_id}/energy/shifts", { params: { path: path(factory) } })), today);
export const putShifts = (factory: string, body: ShiftCalendar) =>
  unwrap(api.PUT("/api/v1/factories/{factory_id}/energy/shifts", { params: { path: path(factory) }, body: body as unknown as Record<string, unknown> }));
export const getEmission = async (factory: string, today: string) =>
  versionsOf<EmissionFactor>(await unwrap(api.GET("/api/v1/factories/{factory_id}/energy/emission-factor", { params: { path: path(factory) } })), today);
export const putEmission = (factory: string, body: EmissionFactor) =>
  unwrap(api.PUT("/api/v1/factories/{factory_id}/energy/emission-factor", { params: { path: path(factory) }, body: body as unknown as Record<string, unknown> }));

export async function listGroups(factory: string): Promise<Group[]> {
  const data = await unwrap(api.GET("/api/v1/factories/{factory_id}/groups", { params: { path: path(factory) } }));
  return data.items as Group[];
}
export async function createGroup(factory: string, body: { name: string; kind: GroupKind; parent_id?: string | null; level?: string | null; devices?: string[] }): Promise<Group> {
  return (await unwrap(api.POST("/api/v1/factories/{factory_id}/groups", { params: { path: path(factory) }, body }))) as Group;
}
export async function updateGroup(factory: string, id: string, body: { name?: string; parent_id?: string | null; level?: string | null; devices?: string[] }): Promise<Group> {
  return (await unwrap(api.PATCH("/api/v1/factories/{factory_id}/groups/{group_id}", { params: { path: { factory_id: factory, group_id: id } }, body }))) as Group;
}
/** `cascade` also deletes the groups below (the server refuses otherwise while there are any). */
export async function deleteGroup(factory: string, id: string, cascade = false): Promise<void> {
  await unwrap(api.DELETE("/api/v1/factories/{factory_id}/groups/{group_id}", { params: { path: { factory_id: factory, group_id: id }, query: cascade ? { cascade: true } : {} } }));
}

export const getDeviceEnergy = (factory: string, device: string): Promise<DeviceEnergyConfig> =>
  unwrap(api.GET("/api/v1/factories/{factory_id}/energy/devices/{device_id}", { params: { path: { factory_id: factory, device_id: device } } }));
export const putDeviceEnergy = (factory: string, device: string, body: { source_property: string | null; state_property: string | null; idle_below_kw: number | null; max_gap_minutes: number | null }): Promise<DeviceEnergyConfig> =>
  unwrap(api.PUT("/api/v1/factories/{factory_id}/energy/devices/{device_id}", { params: { path: { factory_id: factory, device_id: device } }, body }));
