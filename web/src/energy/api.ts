// The energy routes (issue 18): consumption, peak demand, ranking, the factory's energy
// settings (tariff, shifts, emission factor), device groups and a device's energy config.
// Shapes follow the API brief; the calls share the client's auth, refresh and problems.
import { rawJson } from "../api/client";

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

const base = (factory: string) => `/api/v1/factories/${encodeURIComponent(factory)}`;
const qs = (params: Record<string, string | number | undefined | null>) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") s.set(k, String(v));
  return s.toString();
};

/** Which series: a device or a group. */
export type Target = { device_id: string } | { group_id: string };

export function getConsumption(factory: string, target: Target, from: number, to: number, bucket: string): Promise<Consumption> {
  return rawJson("GET", `${base(factory)}/energy/consumption?${qs({ ...target, from: iso(from), to: iso(to), bucket })}`);
}

export function getPeakDemand(factory: string, target: Target, from: number, to: number, intervalMinutes = 15, period: "day" | "month" = "day"): Promise<PeakDemand> {
  return rawJson("GET", `${base(factory)}/energy/peak-demand?${qs({ ...target, from: iso(from), to: iso(to), interval_minutes: intervalMinutes, period })}`);
}

export function getRanking(factory: string, deviceType: string, from: number, to: number): Promise<Ranking> {
  return rawJson("GET", `${base(factory)}/energy/ranking?${qs({ device_type: deviceType, from: iso(from), to: iso(to) })}`);
}

/**
 * A versioned setting as the server sends it: `{current, versions}`, a list of versions,
 * or the single version in force.
 */
export function versionsOf<T extends { valid_from?: string | null }>(raw: unknown, today: string): Versioned<T & VersionMeta> {
  let list: unknown[];
  if (Array.isArray(raw)) list = raw;
  else if (raw && typeof raw === "object" && Array.isArray((raw as { versions?: unknown }).versions)) list = (raw as { versions: unknown[] }).versions;
  else if (raw && typeof raw === "object") list = [raw];
  else list = [];
  // A stored version may wrap the body: {version, valid_from, body, created_at, created_by}.
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

/** GET of a setting that may not be set yet (404 = none). */
async function getSetting<T extends { valid_from?: string | null }>(path: string, today: string): Promise<Versioned<T & VersionMeta>> {
  try {
    return versionsOf<T>(await rawJson<unknown>("GET", path), today);
  } catch (e) {
    if (e && typeof e === "object" && "status" in e && (e as { status: number }).status === 404) return { current: null, versions: [] };
    throw e;
  }
}

export const getTariff = (factory: string, today: string) => getSetting<Tariff>(`${base(factory)}/energy/tariff`, today);
export const putTariff = (factory: string, body: Tariff) => rawJson<unknown>("PUT", `${base(factory)}/energy/tariff`, body);
export const getShifts = (factory: string, today: string) => getSetting<ShiftCalendar>(`${base(factory)}/energy/shifts`, today);
export const putShifts = (factory: string, body: ShiftCalendar) => rawJson<unknown>("PUT", `${base(factory)}/energy/shifts`, body);
export const getEmission = (factory: string, today: string) => getSetting<EmissionFactor>(`${base(factory)}/energy/emission-factor`, today);
export const putEmission = (factory: string, body: EmissionFactor) => rawJson<unknown>("PUT", `${base(factory)}/energy/emission-factor`, body);

export async function listGroups(factory: string): Promise<Group[]> {
  const raw = await rawJson<{ items: Group[] } | Group[]>("GET", `${base(factory)}/groups`);
  return Array.isArray(raw) ? raw : raw.items;
}
export const createGroup = (factory: string, body: { name: string; kind: GroupKind; parent_id?: string | null; level?: string | null; devices?: string[] }) =>
  rawJson<Group>("POST", `${base(factory)}/groups`, body);
export const updateGroup = (factory: string, id: string, body: { name?: string; parent_id?: string | null; level?: string | null; devices?: string[] }) =>
  rawJson<Group>("PATCH", `${base(factory)}/groups/${encodeURIComponent(id)}`, body);
/** `cascade` also deletes the groups below (the server refuses otherwise while there are any). */
export const deleteGroup = (factory: string, id: string, cascade = false) =>
  rawJson<void>("DELETE", `${base(factory)}/groups/${encodeURIComponent(id)}${cascade ? "?cascade=true" : ""}`);

export const getDeviceEnergy = (factory: string, device: string) => rawJson<DeviceEnergyConfig>("GET", `${base(factory)}/energy/devices/${encodeURIComponent(device)}`);
export const putDeviceEnergy = (factory: string, device: string, body: { source_property: string | null; state_property: string | null; idle_below_kw: number | null; max_gap_minutes: number | null }) =>
  rawJson<DeviceEnergyConfig>("PUT", `${base(factory)}/energy/devices/${encodeURIComponent(device)}`, body);

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
