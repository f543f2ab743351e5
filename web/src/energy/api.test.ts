import { describe, expect, it } from "vitest";
import { emissionKind, versionsOf, type Tariff } from "./api";

describe("versioned settings", () => {
  const t = (valid_from: string | null, price: number): Tariff => ({ currency: "EUR", valid_from, periods: [{ days: ["mon"], from: "00:00", to: "24:00", price_per_kwh: price }] });

  it("the version in force is the latest valid_from on or before today", () => {
    const v = versionsOf<Tariff>({ versions: [t("2026-12-15", 0.3), t(null, 0.2), t("2026-12-01", 0.25)] }, "2026-12-03");
    expect(v.versions.map((x) => x.valid_from)).toEqual([null, "2026-12-01", "2026-12-15"]);
    expect(v.current?.periods[0]?.price_per_kwh).toBe(0.25);
    expect(versionsOf<Tariff>({ versions: [t("2027-01-01", 0.3)] }, "2026-12-03").current).toBeNull();
  });

  it("accepts a list, a single version, or stored versions wrapping their body", () => {
    expect(versionsOf<Tariff>([t(null, 0.2)], "2026-12-03").current?.currency).toBe("EUR");
    expect(versionsOf<Tariff>(t(null, 0.2), "2026-12-03").versions).toHaveLength(1);
    const stored = versionsOf<Tariff>(
      { versions: [{ version: 2, valid_from: "2026-11-01", created_at: "2026-10-30T10:00:00Z", created_by: "u1", body: { currency: "CHF", periods: [] } }] },
      "2026-12-03",
    );
    expect(stored.current).toEqual({ version: 2, valid_from: "2026-11-01", created_at: "2026-10-30T10:00:00Z", created_by: "u1", currency: "CHF", periods: [] });
    expect(versionsOf<Tariff>(null, "2026-12-03")).toEqual({ current: null, versions: [] });
  });

  it("the emission factor's kind follows the field that is set", () => {
    expect(emissionKind({ kg_per_kwh: 0.38 })).toBe("constant");
    expect(emissionKind({ hourly: new Array(24).fill(0.3) })).toBe("hourly");
    expect(emissionKind({ monthly: new Array(12).fill(0.3) })).toBe("monthly");
    expect(emissionKind(null)).toBe("constant");
  });
});
