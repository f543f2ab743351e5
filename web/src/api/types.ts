// Shapes the OpenAPI document does not describe yet (rules and alerts are documented as
// JSON objects). The rest, notifications included, comes from schema.d.ts.
import type { components } from "./schema";

export type Schemas = components["schemas"];
export type DeviceView = Schemas["DeviceView"];
export type DevicePage = Schemas["DevicePage"];
export type PropertyView = Schemas["PropertyView"];
export type User = Schemas["User"];
export type Me = Schemas["Me"];
export type Factory = Schemas["Factory"];
export type Permission = Schemas["Permission"];
export type ApiKeyInfo = Schemas["ApiKeyInfo"];
export type CreatedApiKey = Schemas["CreatedApiKey"];
export type AuditEntry = Schemas["AuditEntry"];
export type DeviceCredentials = Schemas["DeviceCredentials"];
export type PayloadError = Schemas["PayloadError"];
export type Series = Schemas["Series"];
export type LoginResult = Schemas["LoginResult"];
export type TokenPair = Schemas["TokenPair"];
export type Notification = Schemas["Notification"];
export type NotificationPage = Schemas["NotificationPage"];
export type NotificationStatus = Schemas["NotificationStatus"];
export type ChannelKind = Schemas["ChannelKind"];
export type Preferences = Schemas["Preferences"];
export type QuietHours = Schemas["QuietHours"];
export type Readiness = Schemas["Readiness"];
export type DependencyState = Schemas["DependencyState"];

export const PERMISSIONS: Permission[] = [
  "data:read",
  "devices:write",
  "rules:write",
  "alerts:write",
  "analytics:run",
  "reports:generate",
  "users:read",
  "telemetry:write",
];

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

export type Severity = "info" | "warning" | "critical";
export type AlertStatus = "open" | "acknowledged" | "resolved";

export type CompareOp = ">" | ">=" | "<" | "<=" | "==" | "!=";
export type Leaf =
  | { property: string; op: CompareOp; value: number | boolean }
  | { property: string; op: "between" | "outside"; min: number; max: number }
  | { property: string; op: "rate_of_change"; window_seconds: number; compare: CompareOp; value: number; per?: "second" | "minute" | "hour" }
  | { property?: string; op: "stale"; seconds: number }
  | { property: string; op: "demand"; interval_minutes?: 15 | 30 | 45 | 60; when?: "completed" | "projected"; compare: CompareOp; value: number }
  | { op: "idle" }
  | ({ op: "specific_energy"; period?: "day" | "shift"; above_percent: number } & ({ kwh_per_unit: number } | { baseline_id: string }));
export type Condition = Leaf | { all: Condition[] } | { any: Condition[] } | { not: Condition };

export type Scope = { devices: string[] } | { device_type: string } | { all: true };

export interface Schedule {
  timezone: string;
  days: string[];
  windows: { from: string; to: string }[];
  cron?: string[];
  outside_schedule?: "keep" | "resolve";
}

export interface NotifyTargets {
  users: string[];
  emails: string[];
  whatsapp: string[];
  remind_every_minutes?: number | null;
  escalate_after_minutes?: number | null;
  escalate_to?: { users: string[]; emails: string[]; whatsapp: string[] } | null;
}

export interface RuleBody {
  name: string;
  enabled: boolean;
  scope: Scope;
  condition: Condition;
  for_seconds: number;
  clear_for_seconds?: number;
  deadband?: number | null;
  schedule: Schedule | null;
  severity: Severity;
  message: string;
  cooldown_seconds: number;
  auto_resolve: boolean;
  notify: NotifyTargets;
}

export interface Rule extends RuleBody {
  id: string;
  created_at: string;
  updated_at: string;
  warnings?: { field?: string; message: string }[];
}

export interface BacktestAlert {
  rule_id: string;
  device_id: string;
  severity: Severity;
  message: string;
  value: number | boolean | null;
  count: number;
  opened_at: string;
  resolved_at: string | null;
  resolve_reason: string | null;
  notifications: string[];
}

export interface BacktestResult {
  alerts: BacktestAlert[];
  opened: number;
  resolved: number;
  points: number;
  events: number;
}

export interface AlertHistoryEntry {
  at: string;
  status: AlertStatus;
  by: string;
  note: string | null;
  value: unknown;
}

export interface Alert {
  id: string;
  rule_id: string;
  rule_name: string;
  device_id: string;
  status: AlertStatus;
  severity: Severity;
  message: string;
  property: string | null;
  value: unknown;
  threshold: string | null;
  count: number;
  opened_at: string;
  acknowledged_at: string | null;
  resolved_at: string | null;
  history?: AlertHistoryEntry[];
}

/** A `telemetry` event of the live stream. */
export interface TelemetryEvent {
  factory_id: string;
  device_id: string;
  points: { property: string; ts_ms: number; value: number | boolean }[];
}

/** An `alert` event of the live stream (`alert.opened`, `alert.acknowledged`, …). */
export interface AlertEvent {
  type: string;
  alert_id?: string;
  rule_id?: string;
  device_id?: string;
  severity?: Severity;
  message?: string;
  status?: AlertStatus;
  [key: string]: unknown;
}
