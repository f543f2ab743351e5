import { describe, expect, it } from "vitest";
import type { Notification } from "../api/types";
import { providerHeadline, providerProblem } from "../ui/ProviderHealth";
import { toDraft, toPreferences } from "./MyNotifications";
import { mergeFresh } from "./Notifications";
import { targetError } from "./RuleEditor";

const n = (id: string, status: Notification["status"]): Notification => ({
  id,
  alert_id: null,
  kind: "opened",
  channel: "email",
  recipient: "ops@example.com",
  subject: "s",
  status,
  attempts: 0,
  max_attempts: 8,
  next_attempt_at: "2026-12-01T00:00:00Z",
  created_at: "2026-12-01T00:00:00Z",
  updated_at: "2026-12-01T00:00:00Z",
});

describe("mergeFresh", () => {
  it("updates rows in place and puts new ones on top", () => {
    const merged = mergeFresh([n("b", "pending"), n("a", "delivered")], [n("c", "pending"), n("b", "delivered")]);
    expect(merged.map((x) => `${x.id}:${x.status}`)).toEqual(["c:pending", "b:delivered", "a:delivered"]);
  });
});

describe("targetError", () => {
  it("names the entry the API refers to by index", () => {
    const errors = { "notify.whatsapp[1]": "must be a phone number in E.164 form", "notify.emails": "at most 50 entries" };
    expect(targetError(errors, "notify.whatsapp", ["+4915112345678", "0151 1234"])).toBe("“0151 1234” must be a phone number in E.164 form");
    expect(targetError(errors, "notify.emails", [])).toBe("at most 50 entries");
    expect(targetError(errors, "notify.users", [])).toBeUndefined();
    // escalate_to.whatsapp is not notify.whatsapp
    expect(targetError({ "notify.escalate_to.whatsapp[0]": "bad" }, "notify.whatsapp", ["x"])).toBeUndefined();
  });
});

describe("providerProblem", () => {
  it("reads the failing channels from the degraded notifications check", () => {
    const p = providerProblem([
      { name: "database", status: "up", detail: "sqlite" },
      { name: "notifications", status: "degraded", detail: "email provider failing (smtp: connection refused)" },
    ]);
    expect(p?.channels).toEqual(["email"]);
    expect(providerHeadline(p!)).toBe("Email provider failing — messages are queued");
    expect(providerProblem([{ name: "notifications", status: "up", detail: "email" }])).toBeNull();
    expect(providerHeadline(providerProblem([{ name: "notifications", status: "degraded", detail: "email provider failing (x); whatsapp provider failing (y)" }])!)).toBe(
      "Email and WhatsApp providers failing — messages are queued",
    );
  });
});

describe("preferences", () => {
  it("round-trips quiet hours and sends null without them", () => {
    const draft = toDraft({ email: true, whatsapp: false, quiet_hours: { from: "22:00", to: "06:00" } });
    expect(toPreferences(draft)).toEqual({ email: true, whatsapp: false, quiet_hours: { from: "22:00", to: "06:00" } });
    expect(toPreferences({ ...draft, quiet: false })).toEqual({ email: true, whatsapp: false, quiet_hours: null });
  });
});
