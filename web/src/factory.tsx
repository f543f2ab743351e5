import { createContext, useContext } from "react";
import type { Me, Permission } from "./api/types";

export interface FactoryCtx {
  /** The factory of the URL (every API call uses it: the server enforces tenancy). */
  factory: string;
  me: Me;
  can: (permission: Permission) => boolean;
  isSuperAdmin: boolean;
  timezone: string;
}

export const FactoryContext = createContext<FactoryCtx | null>(null);

export function useFactory(): FactoryCtx {
  const ctx = useContext(FactoryContext);
  if (!ctx) throw new Error("useFactory outside a factory page");
  return ctx;
}

export function permissionsOf(me: Me): (p: Permission) => boolean {
  const set = new Set<string>(me.permissions);
  const superAdmin = me.role === "super_admin";
  return (p) => superAdmin || set.has(p);
}
